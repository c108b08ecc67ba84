//! This crate's errors. None holds the password or more than a bounded piece of the
//! server's text.

/// The most characters of a server's failure reason an error keeps.
pub const MAX_REASON: usize = 256;

/// Why a VNC connection could not be made, or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server does not speak RFB (its first 12 bytes are not a version).
    #[error("the server does not speak RFB")]
    NotRfb,
    /// The server offers no security type the session allows.
    #[error("the VNC server offers no security type the session allows (offered: {0:?})")]
    NoSecurity(Vec<u8>),
    /// The server wants a password and the session has none.
    #[error("the VNC server asks for a password and the session has none")]
    PasswordRequired,
    /// The server refused the connection or the password.
    #[error("the VNC server refused the login: {0}")]
    Refused(String),
    /// The server broke a bound or the protocol.
    #[error("the VNC server sent {0}")]
    Protocol(String),
}

impl Error {
    /// A refusal with the server's reason, cut short and without control characters.
    pub(crate) fn refused(reason: &[u8]) -> Self {
        let text: String = reason
            .iter()
            .map(|&b| char::from(b))
            .filter(|c| !c.is_control())
            .take(MAX_REASON)
            .collect();
        Self::Refused(if text.is_empty() {
            "no reason given".to_owned()
        } else {
            text
        })
    }

    pub(crate) fn protocol(what: impl Into<String>) -> Self {
        Self::Protocol(what.into())
    }
}
