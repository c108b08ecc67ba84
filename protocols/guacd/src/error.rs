//! [`Error`]: why a connection to guacd could not be set up, saying which side failed.

use std::fmt;
use std::io;

use zt_guac::{DecodeError, ParseError, Status};

/// Why the connection to guacd or its handshake failed.
///
/// Every variant says which side is at fault, so the proxy can end the session with the
/// right origin (`target` for everything guacd did, `local` for configuration) and report
/// guacd's status code. No variant carries a connection parameter value, and text from guacd
/// ([`Error::Guacd::message`]) is kept out of `Display`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing accepts connections at guacd's address (connection refused). guacd is down
    /// or the address in the configuration is wrong.
    #[error("guacd refused the connection")]
    Refused(#[source] io::Error),

    /// guacd's address could not be reached (no route, host down, …).
    #[error("guacd is unreachable")]
    Unreachable(#[source] io::Error),

    /// guacd did not complete `phase` before the deadline. guacd is overloaded or something
    /// that is not guacd listens at its address.
    #[error("timed out waiting for guacd ({phase})")]
    TimedOut {
        /// What was being waited for.
        phase: Phase,
    },

    /// guacd closed the connection before `ready`. guacd closes without a word when it does
    /// not support the selected protocol, does not know the connection id, or rejects the
    /// handshake; its own log says which.
    #[error("guacd closed the connection during the handshake ({phase})")]
    Closed {
        /// What was being waited for.
        phase: Phase,
    },

    /// guacd sent `error` during the handshake. The status decides what the user is told.
    #[error("guacd reported error status {status}")]
    Guacd {
        /// Status code from guacd.
        status: Status,
        /// guacd's message, untrusted text: control characters replaced, at most
        /// [`MAX_GUACD_MESSAGE_CHARS`](crate::MAX_GUACD_MESSAGE_CHARS) characters. Never
        /// contains a connection parameter ztproxy sent (guacd does not echo them).
        message: String,
    },

    /// guacd sent something the handshake does not allow.
    #[error("guacd violated the protocol: {0}")]
    PeerMisbehaved(PeerMisbehaved),

    /// Reading from or writing to guacd failed after the connection was established.
    #[error("i/o error on the guacd connection")]
    Io(#[source] io::Error),

    /// A connection parameter of the session is longer than guacd accepts in one element
    /// (configuration or gateway side). The name is the session's key, never the value.
    #[error("connection parameter `{name}` is longer than guacd accepts")]
    ParameterTooLong {
        /// Parameter name.
        name: String,
    },

    /// The `connect` instruction built from the session's parameters would exceed guacd's
    /// instruction size limit (configuration or gateway side).
    #[error("connection parameters exceed guacd's instruction size limit")]
    ConnectTooLarge,

    /// The user's display settings ([`ClientInfo`](crate::ClientInfo)) do not fit guacd's
    /// limits (too many or too long mimetypes, time zone or name).
    #[error("client display settings exceed guacd's limits")]
    ClientInfoTooLarge,

    /// The handshake was driven after it had failed or finished (a bug in the caller).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Error {
    /// guacd's status code, when guacd reported one.
    pub fn status(&self) -> Option<Status> {
        match self {
            Self::Guacd { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether guacd (or whatever listens at its address) is at fault, as opposed to the
    /// local configuration or the caller.
    pub fn is_guacd_side(&self) -> bool {
        !matches!(
            self,
            Self::ParameterTooLong { .. }
                | Self::ConnectTooLarge
                | Self::ClientInfoTooLarge
                | Self::Internal(_)
        )
    }
}

impl From<PeerMisbehaved> for Error {
    fn from(value: PeerMisbehaved) -> Self {
        Self::PeerMisbehaved(value)
    }
}

/// What ztproxy was waiting for when the handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// The TCP connection to guacd.
    Connect,
    /// guacd's `args`, the answer to `select`.
    Args,
    /// guacd's `ready`, the answer to `connect`.
    Ready,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "tcp connect",
            Self::Args => "args",
            Self::Ready => "ready",
        })
    }
}

/// Exact protocol violations by guacd during the handshake. No text from the wire: tests
/// assert the variant and metrics may use it as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// The byte stream is not valid Guacamole protocol, or breaks the size limits (an `args`
    /// with 10,000 elements is [`DecodeError::TooManyElements`]).
    #[error("{0}")]
    Decode(DecodeError),

    /// A well-framed instruction has malformed arguments (`error` without a numeric status,
    /// `ready` without an id).
    #[error("{0}")]
    Malformed(ParseError),

    /// An instruction that has no place at this point of the handshake. `opcode` is set when
    /// it is one `zt-guac` knows (never text from the wire).
    #[error("unexpected `{}` instruction during the handshake", opcode.unwrap_or("unknown"))]
    Unexpected {
        /// The opcode, when it is a known one.
        opcode: Option<&'static str>,
    },

    /// The first element of `args` starts with `VERSION_` but is not `VERSION_X_Y_Z`.
    #[error("malformed protocol version in `args`")]
    BadVersion,

    /// `args` lists more parameters than
    /// [`HandshakeSettings::max_args`](crate::HandshakeSettings::max_args).
    #[error("`args` lists more parameters than the limit")]
    TooManyArgs,

    /// `ready` carries an empty connection id.
    #[error("`ready` without a connection id")]
    EmptyConnectionId,
}
