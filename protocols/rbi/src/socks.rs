//! The part of SOCKS 5 (RFC 1928) that Chromium speaks to a `socks5://` proxy: the greeting
//! with "no authentication", then one CONNECT, by name or by address (sans-IO).
//!
//! The browser's connections pass [`crate::gate`] this way, which answers with
//! [`reply`]. Everything else in the protocol (authentication, BIND, UDP) is refused.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest greeting: version, count, 255 methods.
pub const MAX_GREETING: usize = 2 + 255;
/// The longest request: header, a 255-byte name, the port.
pub const MAX_REQUEST: usize = 4 + 1 + 255 + 2;

/// Why a greeting or request is refused; [`Refused::reply`] is the code the client hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not SOCKS 5.
    #[error("not a SOCKS 5 message")]
    Version,
    /// The client offers no method this side accepts ("no authentication").
    #[error("no acceptable authentication method")]
    NoMethod,
    /// A command other than CONNECT.
    #[error("a SOCKS command other than CONNECT")]
    Command,
    /// An unknown address type, or a name that is not UTF-8 or empty.
    #[error("an unknown or malformed SOCKS address")]
    Address,
}

impl Refused {
    /// The reply code (RFC 1928 §6) for a refused request.
    pub fn reply(self) -> u8 {
        match self {
            Self::Version | Self::NoMethod => GENERAL_FAILURE,
            Self::Command => COMMAND_NOT_SUPPORTED,
            Self::Address => ADDRESS_NOT_SUPPORTED,
        }
    }
}

/// Reply codes.
pub const SUCCEEDED: u8 = 0;
/// A general failure (also: too many connections).
pub const GENERAL_FAILURE: u8 = 1;
/// The policy refuses the destination.
pub const NOT_ALLOWED: u8 = 2;
/// The destination's name did not resolve, or no address answered in time.
pub const HOST_UNREACHABLE: u8 = 4;
/// The destination refused the connection.
pub const CONNECTION_REFUSED: u8 = 5;
/// Not CONNECT.
pub const COMMAND_NOT_SUPPORTED: u8 = 7;
/// An address type this side does not know.
pub const ADDRESS_NOT_SUPPORTED: u8 = 8;

/// The answer to an acceptable greeting: SOCKS 5, no authentication.
pub const METHOD_ACCEPTED: [u8; 2] = [5, 0];
/// The answer to a greeting without "no authentication".
pub const NO_ACCEPTABLE_METHOD: [u8; 2] = [5, 0xff];

/// Reads a greeting from the start of `buf`: `Ok(None)` while incomplete, else the bytes it
/// took.
pub fn greeting(buf: &[u8]) -> Result<Option<usize>, Refused> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != 5 {
        return Err(Refused::Version);
    }
    let Some(&count) = buf.get(1) else {
        return Ok(None);
    };
    let end = 2 + usize::from(count);
    let Some(methods) = buf.get(2..end) else {
        return Ok(None);
    };
    if methods.contains(&0) {
        Ok(Some(end))
    } else {
        Err(Refused::NoMethod)
    }
}

/// Where a CONNECT asks to go: the host as text (a name, an IPv4 address, or an IPv6
/// address in brackets, as URLs write them) and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The host.
    pub host: String,
    /// The port.
    pub port: u16,
}

/// Reads a request from the start of `buf`: `Ok(None)` while incomplete, else the
/// destination and the bytes it took.
pub fn request(buf: &[u8]) -> Result<Option<(Destination, usize)>, Refused> {
    let Some(header) = buf.get(..4) else {
        if buf.first().is_some_and(|&v| v != 5) {
            return Err(Refused::Version);
        }
        return Ok(None);
    };
    if header[0] != 5 {
        return Err(Refused::Version);
    }
    if header[1] != 1 {
        return Err(Refused::Command);
    }
    let (host, at) = match header[3] {
        1 => {
            let Some(octets) = buf.get(4..8) else {
                return Ok(None);
            };
            let octets: [u8; 4] = octets.try_into().map_err(|_| Refused::Address)?;
            (Ipv4Addr::from(octets).to_string(), 8)
        }
        4 => {
            let Some(octets) = buf.get(4..20) else {
                return Ok(None);
            };
            let octets: [u8; 16] = octets.try_into().map_err(|_| Refused::Address)?;
            (format!("[{}]", Ipv6Addr::from(octets)), 20)
        }
        3 => {
            let Some(&len) = buf.get(4) else {
                return Ok(None);
            };
            let end = 5 + usize::from(len);
            let Some(name) = buf.get(5..end) else {
                return Ok(None);
            };
            let name = std::str::from_utf8(name).map_err(|_| Refused::Address)?;
            if name.is_empty() {
                return Err(Refused::Address);
            }
            (name.to_owned(), end)
        }
        _ => return Err(Refused::Address),
    };
    let Some(port) = buf.get(at..at + 2) else {
        return Ok(None);
    };
    let port = u16::from_be_bytes([port[0], port[1]]);
    Ok(Some((Destination { host, port }, at + 2)))
}

/// The reply to a request: `code`, with an unspecified bound address.
pub fn reply(code: u8) -> [u8; 10] {
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_need_no_authentication_among_their_methods() {
        assert_eq!(greeting(&[]), Ok(None));
        assert_eq!(greeting(&[5]), Ok(None));
        assert_eq!(greeting(&[5, 2, 0]), Ok(None));
        assert_eq!(greeting(&[5, 2, 2, 0, 9]), Ok(Some(4)));
        assert_eq!(greeting(&[5, 1, 2]), Err(Refused::NoMethod));
        assert_eq!(greeting(&[4, 1, 0]), Err(Refused::Version));
        assert_eq!(greeting(&[5, 0]), Err(Refused::NoMethod));
    }

    #[test]
    fn requests_name_a_host_by_name_or_address() {
        let by_name = [
            5, 1, 0, 3, 11, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'c', b'o', b'm', 1,
            187,
        ];
        for cut in 0..by_name.len() {
            assert_eq!(request(&by_name[..cut]), Ok(None), "{cut} bytes");
        }
        let destination = Destination {
            host: "example.com".into(),
            port: 443,
        };
        assert_eq!(request(&by_name), Ok(Some((destination, by_name.len()))));
        assert_eq!(
            request(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 80, 99]),
            Ok(Some((
                Destination {
                    host: "127.0.0.1".into(),
                    port: 80
                },
                10
            )))
        );
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend(Ipv6Addr::LOCALHOST.octets());
        v6.extend(8080u16.to_be_bytes());
        assert_eq!(
            request(&v6).map(|r| r.map(|(d, _)| d.host)),
            Ok(Some("[::1]".into()))
        );
    }

    #[test]
    fn other_commands_and_address_types_are_refused_with_their_codes() {
        assert_eq!(
            request(&[5, 2, 0, 1, 1, 1, 1, 1, 0, 1]),
            Err(Refused::Command)
        );
        assert_eq!(request(&[5, 3, 0, 1]), Err(Refused::Command));
        assert_eq!(request(&[5, 1, 0, 9, 0, 0]), Err(Refused::Address));
        assert_eq!(request(&[5, 1, 0, 3, 0, 0, 80]), Err(Refused::Address));
        assert_eq!(
            request(&[5, 1, 0, 3, 2, 0xff, 0xfe, 0, 80]),
            Err(Refused::Address)
        );
        assert_eq!(request(&[4]), Err(Refused::Version));
        assert_eq!(Refused::Command.reply(), COMMAND_NOT_SUPPORTED);
        assert_eq!(reply(NOT_ALLOWED)[1], NOT_ALLOWED);
    }
}
