//! The remote browser backend: a headless Chromium per session ([`zt_rbi`]) whose screen
//! goes to the user's client as Guacamole images, so a web application is reached without
//! the user's browser ever loading it.
//!
//! [`RbiFactory`] reads the session's parameters (Keeper's `http` names) when the session is
//! created, so a malformed one is a 400 naming it, and takes one of `[rbi] max_browsers`
//! permits: a session beyond the limit is refused with `too_many_sessions` there and then.
//! [`RbiBackend::open`], once the client's display is known:
//!
//! 1. starts Chromium with a fresh profile, its URL policy in force before any request;
//! 2. audits `browser_started`, then runs [`zt_rbi::run`] in a task at the far end of a
//!    pipe: every top-level navigation is audited (`browser_navigated`), every request the
//!    policy refuses is a `policy_refused` (`navigation` or `resource`) and never leaves the
//!    machine;
//! 3. when the session ends, for whatever reason, the browser's process group and profile
//!    are removed, then `browser_ended` with the figures; the permit goes back.

use std::sync::Arc;

use tracing::Instrument;
use zt_api::audit::AuditEvent;
use zt_api::control::{ApiError, ErrorCode};
use zt_guacd::ClientInfo;
use zt_rbi::files::DownloadRefusal;
use zt_rbi::policy::{Kind, Refusal};
use zt_rbi::{EndedBy, RbiSettings};

use super::backend::{
    Backend, BackendError, BackendFactory, BackendRequest, BackendStream, OpenContext,
};
use super::recording::RecordingSummary;
use crate::audit::AuditLog;
use crate::config::RbiConfig;

/// Bytes the pipe between the connection and the engine holds each way.
const PIPE: usize = 256 * 1024;

/// Makes [`RbiBackend`]s.
pub struct RbiFactory;

impl BackendFactory for RbiFactory {
    fn make(&self, request: &BackendRequest<'_>) -> Result<Box<dyn Backend>, ApiError> {
        let values = request.parameters.values();
        let settings = RbiSettings::from_parameters(
            |name| values.get(name).map(|v| v.expose_secret().as_str()),
            &request.target.host,
            request.target.port,
        )
        .map_err(|e| ApiError::invalid_field(format!("parameters.{}", e.name), e.reason))?;
        let rbi = &request.settings.rbi;
        let permit = rbi.browsers.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                ErrorCode::TooManySessions,
                format!(
                    "{} remote browsers are running, the most [rbi] max_browsers allows",
                    rbi.config.max_browsers
                ),
            )
        })?;
        Ok(Box::new(RbiBackend {
            settings,
            config: rbi.config.clone(),
            read_only: request.parameters.flag("read-only"),
            permit: Some(permit),
        }))
    }
}

/// One session's remote browser, with its permit.
pub struct RbiBackend {
    settings: RbiSettings,
    config: RbiConfig,
    read_only: bool,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

#[async_trait::async_trait]
impl Backend for RbiBackend {
    fn name(&self) -> &'static str {
        "rbi"
    }

    fn protocol_metric(&self) -> &'static str {
        "http_protocol"
    }

    /// Files cross only where `allow-download` / `allow-upload` allow (both off by default):
    /// the filter refuses and audits the rest, and audits allowed ones with their SHA-256.
    fn restrict_policy(&self, policy: &mut zt_connection::policy::ConnectionPolicy) {
        policy.disable_download |= !self.settings.allow_download;
        policy.disable_upload |= !self.settings.allow_upload || self.read_only;
    }

    async fn open(
        &mut self,
        display: &ClientInfo,
        context: &OpenContext,
    ) -> Result<BackendStream, BackendError> {
        let width = u16::try_from(display.width).unwrap_or(u16::MAX);
        let height = u16::try_from(display.height).unwrap_or(u16::MAX);
        let connection = zt_rbi::open(
            &self.config.chromium,
            self.config.profile_directory.as_deref(),
            self.config.caps(),
            &self.settings,
            width,
            height,
        )
        .await
        .map_err(|error| {
            tracing::warn!(%error, "the remote browser could not start");
            BackendError::login(&error, error.status(), error.client_message())
        })?;
        tracing::info!(pid = connection.chromium().pid(), "remote browser started");
        context.services.audit.emit(AuditEvent::BrowserStarted {
            session: context.session.clone(),
            url: zt_rbi::audited_url(self.settings.start.as_str()),
        });
        let mut observer = Audit {
            audit: context.services.audit.clone(),
            session: context.session.clone(),
            notes: context.notes.clone(),
        };
        let jpeg = display.image_mimetypes.iter().any(|m| m == "image/jpeg");
        let (ours, engine) = tokio::io::duplex(PIPE);
        let stop = context.cancel.clone();
        let read_only = self.read_only;
        let permit = self.permit.take();
        let finished = tokio::spawn(
            async move {
                let end =
                    zt_rbi::run(connection, engine, &mut observer, stop, jpeg, read_only).await;
                drop(permit);
                let (reason, detail) = match &end.ended_by {
                    EndedBy::Client => ("client_closed", None),
                    EndedBy::Stopped => ("stopped", None),
                    EndedBy::Failed(error) => {
                        tracing::warn!(%error, "the remote browser failed");
                        ("error", Some(error.to_string()))
                    }
                    _ => ("error", None),
                };
                tracing::info!(
                    reason,
                    frames = end.frames,
                    navigations = end.navigations,
                    refused = end.refused,
                    "remote browser ended"
                );
                observer.audit.emit(AuditEvent::BrowserEnded {
                    session: observer.session.clone(),
                    reason: reason.to_owned(),
                    detail,
                    frames: end.frames,
                    navigations: end.navigations,
                    refused: end.refused,
                });
                Vec::<RecordingSummary>::new()
            }
            .instrument(tracing::Span::current()),
        );
        let (reader, writer) = tokio::io::split(ours);
        Ok(BackendStream {
            reader: Box::new(reader),
            writer: Box::new(writer),
            leftover: bytes::Bytes::new(),
            id: format!("rbi {}", zt_rbi::audited_url(self.settings.start.as_str())),
            finished: Some(finished),
        })
    }
}

/// Audits what the browser reports, and notes it in the graphical recording.
struct Audit {
    audit: Arc<AuditLog>,
    session: String,
    notes: Option<super::recording::NoteSink>,
}

impl Audit {
    fn emit(&self, event: AuditEvent) {
        if let Some(notes) = &self.notes {
            notes.note(&event);
        }
        self.audit.emit(event);
    }
}

impl zt_rbi::Observer for Audit {
    fn navigated(&mut self, url: &str) {
        self.emit(AuditEvent::BrowserNavigated {
            session: self.session.clone(),
            url: url.to_owned(),
        });
    }

    fn download_refused(&mut self, _url: &str, filename: &str, reason: DownloadRefusal) {
        self.emit(AuditEvent::PolicyRefused {
            session: self.session.clone(),
            direction: "to_client".to_owned(),
            action: "download".to_owned(),
            name: Some(filename.to_owned()),
            reason: Some(reason.as_str().to_owned()),
        });
    }

    fn autofilled(&mut self, url: &str, fields: u32, submitted: bool) {
        self.emit(AuditEvent::BrowserAutofilled {
            session: self.session.clone(),
            url: url.to_owned(),
            fields,
            submitted,
        });
    }

    fn connection_refused(&mut self, host: &str, port: u16) {
        self.emit(AuditEvent::PolicyRefused {
            session: self.session.clone(),
            direction: "to_target".to_owned(),
            action: "connection".to_owned(),
            name: Some(format!("{host}:{port}")),
            reason: Some("endpoint_not_allowed".to_owned()),
        });
    }

    fn refused(&mut self, kind: Kind, url: &str, reason: Refusal) {
        self.emit(AuditEvent::PolicyRefused {
            session: self.session.clone(),
            direction: "to_target".to_owned(),
            action: kind.to_string(),
            name: Some(url.to_owned()),
            reason: Some(reason.as_str().to_owned()),
        });
    }
}
