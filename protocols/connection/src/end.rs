//! How a connection ends ([`ConnectionEnd`]) and what the client is told ([`farewell`]).

use bytes::{Bytes, BytesMut};
use zt_api::control::{EndReason, Origin};
use zt_guac::{Status, opcode};

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionEnd {
    /// Why.
    pub reason: EndReason,
    /// Who caused it, when an error ended it.
    pub origin: Option<Origin>,
    /// A secret-free detail (a Guacamole status, a violation).
    pub detail: Option<String>,
    /// The error counter this end adds to (`guacamole_protocol`, `guacd_protocol`, …), with
    /// [`origin`](Self::origin).
    pub metric: Option<&'static str>,
    /// The status the client hears, when not the farewell's default: the backend's, when
    /// it reported the error, or the client's fault in particular (a viewer too slow).
    pub status: Option<Status>,
    /// The client already heard why (the backend's own `error` or `disconnect` was
    /// relayed), or its channel is gone.
    pub told_client: bool,
    /// What the client is told in words, when the backend said (a native backend's "SSH
    /// authentication failed") or the client's fault has a name ("Viewer too slow"); the
    /// farewell's default otherwise.
    pub message: Option<String>,
}

impl ConnectionEnd {
    /// An end for `reason`, caused by `origin`.
    pub fn new(
        reason: EndReason,
        origin: Option<Origin>,
        detail: impl Into<Option<String>>,
    ) -> Self {
        Self {
            reason,
            origin,
            detail: detail.into(),
            metric: None,
            status: None,
            told_client: false,
            message: None,
        }
    }

    /// An error caused by the backend (guacd, a native engine) or the target behind it.
    pub fn backend_error(detail: String, status: Option<Status>) -> Self {
        let mut end = Self::new(EndReason::Error, Some(Origin::Target), detail);
        end.status = status;
        end
    }

    /// Counts this end under `metric`.
    #[must_use]
    pub fn counted(mut self, metric: &'static str) -> Self {
        self.metric = Some(metric);
        self
    }

    /// Tells the client `message` (secret-free words) instead of the farewell's default.
    #[must_use]
    pub fn with_message(mut self, message: Option<String>) -> Self {
        self.message = message;
        self
    }

    /// The client already knows.
    #[must_use]
    pub fn told(mut self) -> Self {
        self.told_client = true;
        self
    }
}

/// The `error` (unless the end is a plain disconnect) and `disconnect` that tell the client
/// why the connection ends.
pub fn farewell(end: &ConnectionEnd) -> Bytes {
    let (message, status) = match (end.reason, end.origin) {
        (EndReason::Revoked, _) => ("Session revoked", Status::SESSION_CLOSED),
        (EndReason::IdleTimeout, _) => ("Session idle for too long", Status::SESSION_TIMEOUT),
        (EndReason::MaxDuration, _) => ("Session time limit reached", Status::SESSION_TIMEOUT),
        (EndReason::Shutdown, _) => ("ztproxy is shutting down", Status::SERVER_BUSY),
        (EndReason::RecordingFailed, _) => ("Recording failed", Status::SERVER_ERROR),
        (EndReason::ClientClosed | EndReason::TargetClosed, _) => ("Disconnected", Status::SUCCESS),
        (_, Some(Origin::Client)) => (
            end.message.as_deref().unwrap_or("Protocol error"),
            end.status.unwrap_or(Status::CLIENT_BAD_REQUEST),
        ),
        (_, Some(Origin::Target)) => (
            end.message
                .as_deref()
                .unwrap_or("Remote desktop server error"),
            end.status.unwrap_or(Status::UPSTREAM_ERROR),
        ),
        _ => ("Internal error", Status::SERVER_ERROR),
    };
    let mut out = BytesMut::new();
    if !status.is_success() {
        zt_guac::encode(
            opcode::ERROR,
            &[message, &status.code().to_string()],
            &mut out,
        );
    }
    zt_guac::encode(opcode::DISCONNECT, &[] as &[&str], &mut out);
    out.freeze()
}

/// A status as people read it: `0x0203 UPSTREAM_ERROR`.
pub fn status_text(status: Status) -> String {
    match status.name() {
        Some(name) => format!("0x{:04X} {name}", status.code()),
        None => format!("0x{:04X}", status.code()),
    }
}

pub(crate) fn disconnect_bytes() -> Bytes {
    Bytes::from_static(b"10.disconnect;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_fault_is_told_in_its_own_words_when_it_has_them() {
        let plain = ConnectionEnd::new(EndReason::Error, Some(Origin::Client), None);
        assert_eq!(
            &farewell(&plain)[..],
            b"5.error,14.Protocol error,3.768;10.disconnect;"
        );
        let mut slow = plain.with_message(Some("Viewer too slow".to_owned()));
        slow.status = Some(Status::CLIENT_TIMEOUT);
        assert_eq!(
            &farewell(&slow)[..],
            b"5.error,15.Viewer too slow,3.776;10.disconnect;"
        );
    }
}
