//! This crate's errors. None holds a credential or key material; text from the target (an
//! algorithm list) is cut short.

use zt_guac::Status;

/// A connection parameter that cannot be used: the terminal's type, which every protocol that
/// draws through it shares. Names the parameter, never its value.
pub use zt_terminal::SettingsError;

/// Why an SSH connection could not be made, or ended abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The target could not be reached (name, refused, unreachable). Target's side.
    #[error("cannot reach the ssh server: {0}")]
    Unreachable(std::io::ErrorKind),

    /// The login did not finish within the `timeout` parameter. Target's side.
    #[error("the ssh login took longer than {0:?}")]
    Timeout(std::time::Duration),

    /// The target's host key is not the pinned one: possibly a machine in the middle.
    /// The session ends before authentication, so no credential was sent.
    #[error("the ssh server's host key {presented} does not match the pinned key")]
    HostKeyMismatch {
        /// The presented key's fingerprint (`SHA256:…`).
        presented: String,
        /// Its algorithm (`ssh-ed25519`).
        algorithm: String,
    },

    /// The target has no pinned key and the policy is to refuse such targets.
    #[error("the ssh server's host key {presented} is not pinned and unpinned keys are refused")]
    HostKeyUnpinned {
        /// The presented key's fingerprint.
        presented: String,
        /// Its algorithm.
        algorithm: String,
    },

    /// No method with the session's credentials was accepted.
    #[error("ssh authentication failed (tried {})", .tried.join(", "))]
    AuthenticationFailed {
        /// The methods tried, in order (`publickey`, `password`, `keyboard-interactive`).
        tried: Vec<&'static str>,
    },

    /// `private-key` could not be read (malformed, unsupported, or `passphrase` wrong).
    #[error("the private key cannot be used: {0}")]
    PrivateKey(&'static str),

    /// The server refused the pty, the shell or the command.
    #[error("the ssh server refused the {0}")]
    ChannelRefused(&'static str),

    /// The SSH protocol failed (the server's fault or the network's).
    #[error("ssh protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// The Guacamole status the client hears, as guacd reports the same failure.
    pub fn status(&self) -> Status {
        match self {
            Self::Unreachable(_) => Status::UPSTREAM_NOT_FOUND,
            Self::Timeout(_) => Status::UPSTREAM_TIMEOUT,
            Self::HostKeyMismatch { .. } | Self::HostKeyUnpinned { .. } => {
                Status::UPSTREAM_UNAVAILABLE
            }
            Self::AuthenticationFailed { .. } | Self::PrivateKey(_) => Status::CLIENT_UNAUTHORIZED,
            Self::ChannelRefused(_) | Self::Protocol(_) => Status::UPSTREAM_ERROR,
        }
    }

    /// What the user is told, in words (no fingerprint, no server text).
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "The SSH server cannot be reached",
            Self::Timeout(_) => "The SSH server did not answer in time",
            Self::HostKeyMismatch { .. } => {
                "The SSH server's host key does not match the pinned key"
            }
            Self::HostKeyUnpinned { .. } => "The SSH server's host key is not pinned",
            Self::AuthenticationFailed { .. } => "SSH authentication failed",
            Self::PrivateKey(_) => "The SSH private key cannot be used",
            Self::ChannelRefused(_) => "The SSH server refused the terminal",
            Self::Protocol(_) => "SSH connection error",
        }
    }

    pub(crate) fn protocol(error: &russh::Error) -> Self {
        // russh's messages name what failed, never key material or data; an algorithm
        // negotiation failure lists the server's names, cut short here.
        let mut text = error.to_string();
        if text.len() > MAX_PROTOCOL_TEXT {
            let mut end = MAX_PROTOCOL_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        Self::Protocol(text)
    }
}

/// The most of a protocol error's text kept.
const MAX_PROTOCOL_TEXT: usize = 200;
