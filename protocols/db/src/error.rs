//! This crate's errors. None holds a credential; server text is cut short.

use std::time::Duration;

use zt_guac::Status;

/// The most characters of server text an error keeps.
const MAX_TEXT: usize = 512;

/// Why a console could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server could not be reached.
    #[error("cannot reach the database server: {0}")]
    Unreachable(String),
    /// The connection and login did not finish within `timeout`.
    #[error("the database login took longer than {0:?}")]
    Timeout(Duration),
    /// The server refused the credentials (or the database).
    #[error("the database server refused the login: {0}")]
    LoginRefused(String),
    /// The server's certificate is not among the session's pins (nothing was sent).
    #[error("the database server's certificate {0} does not match the pinned certificate")]
    CertificateRefused(String),
    /// The session requires TLS and the server does not offer it (nothing was sent).
    #[error("the database server does not offer TLS, which the session requires")]
    TlsUnavailable,
    /// The server failed otherwise.
    #[error("database server error: {0}")]
    Server(String),
}

impl Error {
    /// The Guacamole status the client hears.
    pub fn status(&self) -> Status {
        match self {
            Self::Unreachable(_) => Status::UPSTREAM_NOT_FOUND,
            Self::Timeout(_) => Status::UPSTREAM_TIMEOUT,
            Self::LoginRefused(_) => Status::CLIENT_UNAUTHORIZED,
            Self::CertificateRefused(_) => Status::UPSTREAM_UNAVAILABLE,
            Self::TlsUnavailable | Self::Server(_) => Status::UPSTREAM_ERROR,
        }
    }

    /// What the user is told, in words (no server text).
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "The database server cannot be reached",
            Self::Timeout(_) => "The database server did not answer in time",
            Self::LoginRefused(_) => "The database server refused the login",
            Self::CertificateRefused(_) => {
                "The database server's certificate does not match the pinned certificate"
            }
            Self::TlsUnavailable => "The database server does not offer TLS",
            Self::Server(_) => "Database server error",
        }
    }

    /// The error with its server text cut short (for logs and audit details).
    #[must_use]
    pub fn shortened(self) -> Self {
        let cut = |text: String| -> String {
            if text.chars().count() > MAX_TEXT {
                text.chars().take(MAX_TEXT).collect::<String>() + "…"
            } else {
                text
            }
        };
        match self {
            Self::Unreachable(t) => Self::Unreachable(cut(t)),
            Self::LoginRefused(t) => Self::LoginRefused(cut(t)),
            Self::Server(t) => Self::Server(cut(t)),
            other => other,
        }
    }
}
