//! The native SSH backend: ztproxy logs in to the target itself ([`zt_ssh`]) and draws the
//! terminal ([`zt_terminal`]) into the connection's pipe, so an SSH session needs no guacd.
//!
//! [`SshFactory`] reads the session's parameters (guacd 1.6's names) when the session is
//! created, so a malformed one is a 400 naming it. [`SshBackend::open`] then, once the
//! client's display is known:
//!
//! 1. sizes a terminal for the display, and logs in with a pty of that size (the host key is
//!    decided before anything else: a mismatch, or an unpinned key under the default policy,
//!    ends the session with `ssh_host_key_refused` and no credential sent; a refused login
//!    ends it with `ssh_auth_failed`);
//! 2. reports `ssh_connected` (fingerprint, whether it was pinned, the method);
//! 3. starts the typescript recording the session asked for;
//! 4. runs [`zt_ssh::run`] in a task at the far end of a pipe, until the target closes, the
//!    client leaves or the session ends (revocation cancels it at once, and it disconnects
//!    from the target); then reports `ssh_disconnected` with the byte counts and finalises
//!    the typescript.

use zt_api::audit::AuditEvent;
use zt_api::control::{ApiError, Target};
use zt_guacd::ClientInfo;
use zt_ssh::sftp::{FileDirection, FileEvent};
use zt_ssh::{EndedBy, SshSettings, UnpinnedPolicy};
use zt_terminal::Terminal;

use super::backend::{
    Backend, BackendError, BackendFactory, BackendRequest, BackendStream, OpenContext,
};
use super::recording::RecordingSummary;
use super::terminal::{SessionObserver, for_display, start_engine};
use crate::audit::AuditLog;

/// Makes [`SshBackend`]s.
pub struct SshFactory;

impl BackendFactory for SshFactory {
    fn make(&self, request: &BackendRequest<'_>) -> Result<Box<dyn Backend>, ApiError> {
        let values = request.parameters.values();
        let settings = SshSettings::from_parameters(|name| {
            values.get(name).map(|v| v.expose_secret().as_str())
        })
        .map_err(|e| ApiError::invalid_field(format!("parameters.{}", e.name), e.reason))?;
        let unpinned = if request.settings.ssh.danger_accept_unpinned_host_keys {
            UnpinnedPolicy::Accept
        } else {
            UnpinnedPolicy::Refuse
        };
        Ok(Box::new(SshBackend {
            settings,
            target: request.target.clone(),
            unpinned,
        }))
    }
}

/// One session's SSH connection. Holds the session's credentials until it opens.
pub struct SshBackend {
    settings: SshSettings,
    target: Target,
    unpinned: UnpinnedPolicy,
}

#[async_trait::async_trait]
impl Backend for SshBackend {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn protocol_metric(&self) -> &'static str {
        "ssh_protocol"
    }

    fn records_typescript(&self) -> bool {
        true
    }

    fn audits_file_transfers(&self) -> bool {
        self.settings.sftp.is_some()
    }

    async fn open(
        &mut self,
        display: &ClientInfo,
        context: &OpenContext,
    ) -> Result<BackendStream, BackendError> {
        let terminal = for_display(&self.settings.terminal, display);
        let geometry = terminal.geometry();
        let mut options = zt_ssh::LoginOptions::new(
            self.unpinned,
            geometry.cols,
            geometry.rows,
            geometry.width,
            geometry.height,
        );
        options.client_timezone.clone_from(&display.timezone);
        let audit = &context.services.audit;
        let session = context.session.clone();
        let connection = match zt_ssh::login(
            &self.target.host,
            self.target.port,
            &self.settings,
            &options,
        )
        .await
        {
            Ok(connection) => connection,
            Err(error) => {
                audit_refusal(audit, &session, &error);
                return Err(BackendError::login(
                    &error,
                    error.status(),
                    error.client_message(),
                ));
            }
        };
        let info = &connection.info;
        tracing::info!(
            fingerprint = %info.fingerprint,
            pinned = info.pinned,
            method = info.method.as_str(),
            "logged in to the ssh target"
        );
        audit.emit(AuditEvent::SshConnected {
            session: session.clone(),
            host_key_fingerprint: info.fingerprint.clone(),
            host_key_algorithm: info.algorithm.clone(),
            host_key_pinned: info.pinned,
            auth_method: info.method.as_str().to_owned(),
        });
        start_engine(
            context,
            (geometry.cols, geometry.rows),
            format!("ssh {}", info.fingerprint),
            move |pipe, observer, stop| drive(connection, terminal, pipe, observer, stop),
        )
        .await
    }
}

/// The engine's task: the session until it ends, then its audit event and recording.
async fn drive(
    connection: zt_ssh::SshConnection,
    terminal: Terminal,
    pipe: tokio::io::DuplexStream,
    mut observer: SessionObserver,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<RecordingSummary> {
    let end = zt_ssh::run(connection, terminal, pipe, &mut observer, stop).await;
    let (reason, detail) = match &end.ended_by {
        EndedBy::Target => ("target_closed", None),
        EndedBy::Client => ("client_closed", None),
        EndedBy::Stopped => ("stopped", None),
        EndedBy::Failed(error) => ("error", Some(error.to_string())),
        _ => ("error", None),
    };
    tracing::info!(
        reason,
        exit_status = end.exit_status,
        bytes_from_target = end.bytes_from_target,
        bytes_to_target = end.bytes_to_target,
        "ssh connection ended"
    );
    observer.audit.emit(AuditEvent::SshDisconnected {
        session: observer.session.clone(),
        reason: reason.to_owned(),
        exit_status: end.exit_status,
        detail,
        bytes_from_target: end.bytes_from_target,
        bytes_to_target: end.bytes_to_target,
    });
    observer.finish().await
}

/// Audits why a login was refused, when it is a security decision.
fn audit_refusal(audit: &AuditLog, session: &str, error: &zt_ssh::Error) {
    let event = match error {
        zt_ssh::Error::HostKeyMismatch {
            presented,
            algorithm,
        }
        | zt_ssh::Error::HostKeyUnpinned {
            presented,
            algorithm,
        } => AuditEvent::SshHostKeyRefused {
            session: session.to_owned(),
            reason: if matches!(error, zt_ssh::Error::HostKeyMismatch { .. }) {
                "mismatch"
            } else {
                "unpinned"
            }
            .to_owned(),
            host_key_fingerprint: presented.clone(),
            host_key_algorithm: algorithm.clone(),
        },
        zt_ssh::Error::AuthenticationFailed { tried } => AuditEvent::SshAuthFailed {
            session: session.to_owned(),
            methods: tried.iter().map(|m| (*m).to_owned()).collect(),
        },
        _ => return,
    };
    tracing::warn!(%error, "ssh login refused");
    audit.emit(event);
}

impl zt_ssh::Observer for SessionObserver {
    fn file(&mut self, event: &FileEvent) {
        let session = self.session.clone();
        let audit = match event {
            FileEvent::Ready { .. } => None,
            FileEvent::Unavailable { reason } => {
                tracing::warn!(reason, "sftp is not available in this session");
                None
            }
            FileEvent::Transferred {
                direction,
                path,
                size,
                sha256,
            } => Some(AuditEvent::Transfer {
                session,
                direction: direction.as_str().to_owned(),
                kind: "file".to_owned(),
                mimetype: "application/octet-stream".to_owned(),
                name: path.rsplit('/').next().map(str::to_owned),
                path: Some(path.clone()),
                size: *size,
                sha256: hex::encode(sha256),
                truncated: false,
            }),
            FileEvent::Incomplete {
                direction,
                path,
                size,
                reason,
            } => Some(AuditEvent::TransferIncomplete {
                session,
                direction: direction.as_str().to_owned(),
                path: path.clone(),
                size: *size,
                reason: reason.clone(),
            }),
            FileEvent::Refused {
                direction,
                path,
                refusal,
            } => Some(AuditEvent::PolicyRefused {
                session,
                direction: direction.as_str().to_owned(),
                action: match direction {
                    FileDirection::Upload => "upload",
                    FileDirection::Download => "download",
                }
                .to_owned(),
                name: Some(path.clone()),
                reason: Some(refusal.as_str().to_owned()),
            }),
            _ => None,
        };
        if let Some(event) = audit {
            self.record(event);
        }
    }
}
