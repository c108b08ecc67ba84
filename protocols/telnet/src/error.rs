//! This crate's errors. None holds a credential or text from the target.

use std::time::Duration;

use zt_guac::Status;

/// Why a Telnet connection could not be made, or ended abnormally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The target could not be reached (name, refused, unreachable).
    #[error("cannot reach the telnet server: {0}")]
    Unreachable(std::io::ErrorKind),

    /// The connection, or the login, did not finish within the `timeout` parameter.
    #[error("the telnet login took longer than {0:?}")]
    Timeout(Duration),

    /// `login-failure-regex` matched the server's output.
    #[error("the telnet server refused the login (login-failure-regex matched)")]
    LoginRefused,

    /// The connection to the target failed while the session ran.
    #[error("the telnet connection failed: {0}")]
    Io(std::io::ErrorKind),
}

impl Error {
    /// The Guacamole status the client hears (guacd's for the same failure).
    pub fn status(&self) -> Status {
        match self {
            Self::Unreachable(_) => Status::UPSTREAM_NOT_FOUND,
            Self::Timeout(_) => Status::UPSTREAM_TIMEOUT,
            Self::LoginRefused => Status::CLIENT_UNAUTHORIZED,
            Self::Io(_) => Status::UPSTREAM_ERROR,
        }
    }

    /// What the user is told, in words (no server text).
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "The Telnet server cannot be reached",
            Self::Timeout(_) => "The Telnet login did not finish in time",
            Self::LoginRefused => "Telnet login failed",
            Self::Io(_) => "Telnet connection error",
        }
    }
}
