//! [`Status`]: the protocol's numeric status codes, carried by `ack` and `error`.

use std::fmt;

/// A Guacamole status code, as carried by `ack` and `error` (in decimal on the wire).
///
/// The named constants are the codes of the protocol reference
/// (<https://guacamole.apache.org/doc/gug/protocol-reference.html#status-codes>); any other
/// code is kept as is, so a newer peer's codes pass through.
///
/// ```
/// use zt_guac::Status;
/// assert_eq!(Status::UPSTREAM_NOT_FOUND.code(), 519);
/// assert_eq!(Status::new(771), Status::CLIENT_FORBIDDEN);
/// assert_eq!(Status::CLIENT_FORBIDDEN.to_string(), "CLIENT_FORBIDDEN (771)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(u32);

impl Status {
    /// The operation succeeded.
    pub const SUCCESS: Self = Self(0x0000);
    /// The requested operation is unsupported.
    pub const UNSUPPORTED: Self = Self(0x0100);
    /// An internal error occurred, and the operation could not be performed.
    pub const SERVER_ERROR: Self = Self(0x0200);
    /// The operation could not be performed because the server is busy.
    pub const SERVER_BUSY: Self = Self(0x0201);
    /// The upstream server (usually the remote desktop server) is not responding.
    pub const UPSTREAM_TIMEOUT: Self = Self(0x0202);
    /// The upstream server encountered an error.
    pub const UPSTREAM_ERROR: Self = Self(0x0203);
    /// An associated resource, such as a file or stream, could not be found.
    pub const RESOURCE_NOT_FOUND: Self = Self(0x0204);
    /// A resource is already in use or locked.
    pub const RESOURCE_CONFLICT: Self = Self(0x0205);
    /// The associated resource has been closed.
    pub const RESOURCE_CLOSED: Self = Self(0x0206);
    /// The upstream server does not appear to exist, or cannot be reached.
    pub const UPSTREAM_NOT_FOUND: Self = Self(0x0207);
    /// The upstream server is refusing to service connections.
    pub const UPSTREAM_UNAVAILABLE: Self = Self(0x0208);
    /// The session within the upstream server conflicts with another session.
    pub const SESSION_CONFLICT: Self = Self(0x0209);
    /// The session within the upstream server ended because it appeared inactive.
    pub const SESSION_TIMEOUT: Self = Self(0x020A);
    /// The session within the upstream server has been forcibly closed.
    pub const SESSION_CLOSED: Self = Self(0x020B);
    /// The parameters of the request are illegal or otherwise invalid.
    pub const CLIENT_BAD_REQUEST: Self = Self(0x0300);
    /// Permission was denied because the user is not logged in.
    pub const CLIENT_UNAUTHORIZED: Self = Self(0x0301);
    /// Permission was denied, and logging in will not solve the problem.
    pub const CLIENT_FORBIDDEN: Self = Self(0x0303);
    /// The client is taking too long to respond.
    pub const CLIENT_TIMEOUT: Self = Self(0x0308);
    /// The client has sent more data than the protocol allows.
    pub const CLIENT_OVERRUN: Self = Self(0x030D);
    /// The client has sent data of an unexpected or illegal type.
    pub const CLIENT_BAD_TYPE: Self = Self(0x030F);
    /// The client is already using too many resources.
    pub const CLIENT_TOO_MANY: Self = Self(0x031D);

    /// The status with numeric `code`.
    pub const fn new(code: u32) -> Self {
        Self(code)
    }

    /// The numeric code, as sent on the wire.
    pub const fn code(self) -> u32 {
        self.0
    }

    /// Whether this is [`Status::SUCCESS`]. Any other status in an `ack` ends the stream.
    pub const fn is_success(self) -> bool {
        self.0 == 0
    }

    /// The reference name of a standard code (`"UPSTREAM_NOT_FOUND"`), `None` for others.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::SUCCESS => "SUCCESS",
            Self::UNSUPPORTED => "UNSUPPORTED",
            Self::SERVER_ERROR => "SERVER_ERROR",
            Self::SERVER_BUSY => "SERVER_BUSY",
            Self::UPSTREAM_TIMEOUT => "UPSTREAM_TIMEOUT",
            Self::UPSTREAM_ERROR => "UPSTREAM_ERROR",
            Self::RESOURCE_NOT_FOUND => "RESOURCE_NOT_FOUND",
            Self::RESOURCE_CONFLICT => "RESOURCE_CONFLICT",
            Self::RESOURCE_CLOSED => "RESOURCE_CLOSED",
            Self::UPSTREAM_NOT_FOUND => "UPSTREAM_NOT_FOUND",
            Self::UPSTREAM_UNAVAILABLE => "UPSTREAM_UNAVAILABLE",
            Self::SESSION_CONFLICT => "SESSION_CONFLICT",
            Self::SESSION_TIMEOUT => "SESSION_TIMEOUT",
            Self::SESSION_CLOSED => "SESSION_CLOSED",
            Self::CLIENT_BAD_REQUEST => "CLIENT_BAD_REQUEST",
            Self::CLIENT_UNAUTHORIZED => "CLIENT_UNAUTHORIZED",
            Self::CLIENT_FORBIDDEN => "CLIENT_FORBIDDEN",
            Self::CLIENT_TIMEOUT => "CLIENT_TIMEOUT",
            Self::CLIENT_OVERRUN => "CLIENT_OVERRUN",
            Self::CLIENT_BAD_TYPE => "CLIENT_BAD_TYPE",
            Self::CLIENT_TOO_MANY => "CLIENT_TOO_MANY",
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "status {}", self.0),
        }
    }
}

impl From<u32> for Status {
    fn from(code: u32) -> Self {
        Self(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_protocol_reference_in_decimal() {
        let table = [
            (Status::SUCCESS, 0),
            (Status::UNSUPPORTED, 256),
            (Status::SERVER_ERROR, 512),
            (Status::SERVER_BUSY, 513),
            (Status::UPSTREAM_TIMEOUT, 514),
            (Status::UPSTREAM_ERROR, 515),
            (Status::RESOURCE_NOT_FOUND, 516),
            (Status::RESOURCE_CONFLICT, 517),
            (Status::RESOURCE_CLOSED, 518),
            (Status::UPSTREAM_NOT_FOUND, 519),
            (Status::UPSTREAM_UNAVAILABLE, 520),
            (Status::SESSION_CONFLICT, 521),
            (Status::SESSION_TIMEOUT, 522),
            (Status::SESSION_CLOSED, 523),
            (Status::CLIENT_BAD_REQUEST, 768),
            (Status::CLIENT_UNAUTHORIZED, 769),
            (Status::CLIENT_FORBIDDEN, 771),
            (Status::CLIENT_TIMEOUT, 776),
            (Status::CLIENT_OVERRUN, 781),
            (Status::CLIENT_BAD_TYPE, 783),
            (Status::CLIENT_TOO_MANY, 797),
        ];
        for (status, code) in table {
            assert_eq!(status.code(), code);
            assert!(status.name().is_some());
            assert_eq!(status.is_success(), code == 0);
        }
        assert_eq!(Status::new(12345).name(), None);
        assert_eq!(Status::new(12345).to_string(), "status 12345");
        assert_eq!(Status::SESSION_CLOSED.to_string(), "SESSION_CLOSED (523)");
    }
}
