//! Why a Kubernetes connection could not be made or ended abnormally. No error holds a
//! credential; the API server's own words (its Status message, a TLS alert) are kept,
//! sanitised, because they are what the user needs to hear ("pods \"x\" not found").

use std::time::Duration;

use zt_guac::Status;

use crate::channel::FrameError;
use crate::request::RequestError;

/// A failed Kubernetes connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API server could not be reached (name, refused, unreachable).
    #[error("cannot reach the Kubernetes API server: {0}")]
    Unreachable(std::io::ErrorKind),

    /// The connection, TLS and the upgrade did not finish in time.
    #[error("the Kubernetes API server did not answer within {0:?}")]
    Timeout(Duration),

    /// The API server's certificate did not pass (`ca-cert`, the name).
    #[error("the Kubernetes API server's certificate was refused: {0}")]
    ServerCertificate(String),

    /// The API server ended the TLS handshake (a client certificate it does not trust, no
    /// common protocol version).
    #[error("the Kubernetes API server refused the TLS connection: {0}")]
    TlsRefused(String),

    /// The API server answered the exec or attach with an error (401, 403, 404, 400).
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        code: u16,
        /// The server's reason, in words ([`crate::status::refusal`]).
        message: String,
    },

    /// The process could not run, or the server ended it with a failure other than an exit
    /// code (`InternalError`: the container is not running, …).
    #[error("the Kubernetes API server reports {reason}: {message}")]
    Failed {
        /// The Status's reason.
        reason: String,
        /// Its message, sanitised.
        message: String,
    },

    /// The upgrade's answer or a message broke the protocol.
    #[error("the Kubernetes API server broke the protocol: {0}")]
    Protocol(String),

    /// A name or the command cannot be sent (checked when the settings are read).
    #[error(transparent)]
    Request(#[from] RequestError),

    /// The connection failed while the session ran.
    #[error("the Kubernetes connection failed: {0}")]
    Io(String),
}

impl From<FrameError> for Error {
    fn from(error: FrameError) -> Self {
        Self::Protocol(error.to_string())
    }
}

impl Error {
    /// The Guacamole status the client hears.
    pub fn status(&self) -> Status {
        match self {
            Self::Unreachable(_) => Status::UPSTREAM_NOT_FOUND,
            Self::Timeout(_) => Status::UPSTREAM_TIMEOUT,
            Self::ServerCertificate(_) | Self::TlsRefused(_) | Self::Protocol(_) | Self::Io(_) => {
                Status::UPSTREAM_ERROR
            }
            Self::Refused { code: 401, .. } => Status::CLIENT_UNAUTHORIZED,
            Self::Refused { code: 403, .. } => Status::CLIENT_FORBIDDEN,
            Self::Refused { code: 404, .. } => Status::RESOURCE_NOT_FOUND,
            Self::Refused { .. } | Self::Request(_) => Status::CLIENT_BAD_REQUEST,
            Self::Failed { .. } => Status::UPSTREAM_ERROR,
        }
    }

    /// What the user is told: the error itself, which holds no credential.
    pub fn client_message(&self) -> String {
        self.to_string()
    }
}
