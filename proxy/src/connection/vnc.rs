//! The native VNC backend: ztproxy is the RFB client ([`zt_vnc`]) and draws the desktop into
//! the connection's pipe, so a VNC session needs no guacd.
//!
//! [`VncFactory`] reads the session's parameters (guacd 1.6's names) when the session is
//! created, so a malformed one is a 400 naming it. [`VncBackend::open`] then, once the
//! client's display is known:
//!
//! 1. connects and logs in within 15 s (`autoretry` retries an unreachable server): a wrong
//!    password ends the session before the display starts, with `vnc_login_failed` and
//!    guacd's status; the password never reaches the client or a log;
//! 2. runs [`zt_vnc::session::run`] in a task at the far end of a pipe, which ends when the
//!    server closes, the client leaves, the server breaks the protocol or a bound (an `error`
//!    to the client), or the session ends (the RFB connection closes at once); then
//!    `vnc_disconnected` with the byte and frame counts.
//!
//! Policy: the connection's filter enforces `disable-copy`, `disable-paste`, `read-only` and
//! `clipboard-buffer-size` on the Guacamole side and audits the transfers; the engine applies
//! the same settings on the RFB side. The graphical recording is the connection's, as for
//! every backend.

use tracing::Instrument;
use zt_api::audit::AuditEvent;
use zt_api::control::{ApiError, Target};
use zt_guacd::ClientInfo;
use zt_vnc::session::{ConnectError, EndedBy, Notice};
use zt_vnc::settings::VncSettings;

use super::backend::{
    Backend, BackendError, BackendFactory, BackendRequest, BackendStream, OpenContext,
};
use super::recording::RecordingSummary;

/// Bytes the pipe between the connection and the engine holds each way.
const PIPE: usize = 256 * 1024;

/// Makes [`VncBackend`]s.
pub struct VncFactory;

impl BackendFactory for VncFactory {
    fn make(&self, request: &BackendRequest<'_>) -> Result<Box<dyn Backend>, ApiError> {
        let values = request.parameters.values();
        let settings = VncSettings::from_parameters(|name| {
            values.get(name).map(|v| v.expose_secret().as_str())
        })
        .map_err(|e| ApiError::invalid_field(format!("parameters.{}", e.name), e.reason))?;
        Ok(Box::new(VncBackend {
            settings,
            target: request.target.clone(),
        }))
    }
}

/// One session's VNC connection. Holds the session's password until it opens.
pub struct VncBackend {
    settings: VncSettings,
    target: Target,
}

#[async_trait::async_trait]
impl Backend for VncBackend {
    fn name(&self) -> &'static str {
        "vnc"
    }

    fn protocol_metric(&self) -> &'static str {
        "vnc_protocol"
    }

    async fn open(
        &mut self,
        display: &ClientInfo,
        context: &OpenContext,
    ) -> Result<BackendStream, BackendError> {
        let connection =
            match zt_vnc::session::connect(&self.target.host, self.target.port, &self.settings)
                .await
            {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, "the VNC connection could not be made");
                    if let ConnectError::Rfb(
                        rfb @ (zt_vnc::Error::Refused(_)
                        | zt_vnc::Error::PasswordRequired
                        | zt_vnc::Error::NoSecurity(_)),
                    ) = &error
                    {
                        context.services.audit.emit(AuditEvent::VncLoginFailed {
                            session: context.session.clone(),
                            detail: rfb.to_string(),
                        });
                    }
                    return Err(BackendError::login(
                        &error,
                        error.status(),
                        error.client_message(),
                    ));
                }
            };
        tracing::info!(
            width = connection.width,
            height = connection.height,
            "connected to the VNC target"
        );
        context.services.audit.emit(AuditEvent::VncConnected {
            session: context.session.clone(),
            security: if self.settings.password.is_some() {
                "vnc"
            } else {
                "none"
            }
            .to_owned(),
            width: connection.width.into(),
            height: connection.height.into(),
        });
        let jpeg = display.image_mimetypes.iter().any(|m| m == "image/jpeg");
        let (ours, engine) = tokio::io::duplex(PIPE);
        let finished = tokio::spawn(
            drive(
                connection,
                engine,
                self.settings.clone(),
                jpeg,
                context.clone(),
            )
            .instrument(tracing::Span::current()),
        );
        let (reader, writer) = tokio::io::split(ours);
        Ok(BackendStream {
            reader: Box::new(reader),
            writer: Box::new(writer),
            leftover: bytes::Bytes::new(),
            id: format!("vnc {}:{}", self.target.host, self.target.port),
            finished: Some(finished),
        })
    }
}

/// The engine's task: the session until it ends, then its audit event.
async fn drive(
    connection: zt_vnc::session::Connection,
    pipe: tokio::io::DuplexStream,
    settings: VncSettings,
    jpeg: bool,
    context: OpenContext,
) -> Vec<RecordingSummary> {
    let notice = |notice: Notice| match notice {
        Notice::ResizeRefused(status) => {
            tracing::info!(status, "the VNC server refused the client's size");
        }
        Notice::Resized(width, height) => tracing::debug!(width, height, "desktop resized"),
        _ => {}
    };
    let end = zt_vnc::session::run(
        connection,
        pipe,
        settings,
        jpeg,
        notice,
        context.cancel.clone(),
    )
    .await;
    let (reason, detail) = match &end.ended_by {
        EndedBy::Target => ("target_closed", None),
        EndedBy::Client => ("client_closed", None),
        EndedBy::Stopped => ("stopped", None),
        EndedBy::Failed(error) => ("error", Some(error.to_string())),
        _ => ("error", None),
    };
    if detail.is_some() {
        context
            .services
            .metrics
            .error(zt_api::control::Origin::Target, "vnc_protocol");
    }
    tracing::info!(
        reason,
        frames = end.frames,
        bytes_from_target = end.bytes_from_target,
        bytes_to_target = end.bytes_to_target,
        "vnc connection ended"
    );
    context.services.audit.emit(AuditEvent::VncDisconnected {
        session: context.session.clone(),
        reason: reason.to_owned(),
        detail,
        bytes_from_target: end.bytes_from_target,
        bytes_to_target: end.bytes_to_target,
        frames: end.frames,
    });
    Vec::new()
}
