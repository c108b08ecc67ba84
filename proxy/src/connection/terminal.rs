//! What the terminal backends (native SSH, Telnet, Kubernetes, the database consoles) share:
//! the running session's observer — its typescript recording, its graphical recording's
//! notes and the audit log — and its start ([`start_engine`]: the typescript, the pipe, the
//! engine's task).

use std::future::Future;
use std::sync::Arc;

use zt_api::audit::AuditEvent;
use zt_api::control::{EndReason, RecordingRequest};
use zt_guacd::ClientInfo;
use zt_terminal::Terminal;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backend::{BackendError, BackendStream, OpenContext};
use super::recording::{NoteSink, RecordingPlan, RecordingSummary, TypescriptRecording};
use crate::audit::AuditLog;
use crate::config::RecordingsSettings;

/// A terminal sized for the client's display.
pub(super) fn for_display(
    settings: &zt_terminal::TerminalSettings,
    display: &ClientInfo,
) -> Terminal {
    Terminal::new(
        settings.clone(),
        display.width,
        display.height,
        display.dpi,
        std::time::Instant::now(),
    )
}

/// What a running terminal session reports to: the typescript, and the audit log for refused
/// copies and pastes (allowed ones cross the connection's filter, which audits them).
pub(super) struct SessionObserver {
    pub(super) typescript: Option<TypescriptRecording>,
    notes: Option<NoteSink>,
    pub(super) audit: Arc<AuditLog>,
    pub(super) session: String,
}

impl SessionObserver {
    /// The observer of `context`'s session, writing `typescript` if it has one.
    pub(super) fn new(context: &OpenContext, typescript: Option<TypescriptRecording>) -> Self {
        Self {
            typescript,
            notes: context.notes.clone(),
            audit: context.services.audit.clone(),
            session: context.session.clone(),
        }
    }

    /// Finalises the typescript, if there is one: the session's recordings to report.
    pub(super) async fn finish(mut self) -> Vec<RecordingSummary> {
        match self.typescript.take() {
            Some(typescript) => vec![typescript.finish().await],
            None => Vec::new(),
        }
    }

    /// Audits `event`, and notes it in the session's recordings (a reviewer sees it where it
    /// happened).
    pub(super) fn record(&mut self, event: AuditEvent) {
        if let Some(typescript) = &mut self.typescript {
            typescript.note(&event);
        }
        if let Some(notes) = &self.notes {
            notes.note(&event);
        }
        self.audit.emit(event);
    }
}

impl zt_terminal::Observer for SessionObserver {
    fn output(&mut self, bytes: &[u8]) {
        if let Some(typescript) = &mut self.typescript {
            typescript.output(bytes);
        }
    }

    fn input(&mut self, bytes: &[u8]) {
        if let Some(typescript) = &mut self.typescript {
            typescript.input(bytes);
        }
    }

    fn resize(&mut self, cols: u16, rows: u16) {
        if let Some(typescript) = &mut self.typescript {
            typescript.resize(cols, rows);
        }
    }

    fn terminal(&mut self, event: &zt_terminal::Event) {
        let (direction, action) = match event {
            zt_terminal::Event::CopyRefused => ("to_client", "copy"),
            zt_terminal::Event::PasteRefused => ("to_target", "paste"),
            _ => return,
        };
        self.audit.emit(AuditEvent::PolicyRefused {
            session: self.session.clone(),
            direction: direction.to_owned(),
            action: action.to_owned(),
            name: None,
            reason: None,
        });
    }
}

/// Bytes the pipe between the connection and a terminal engine holds each way.
const PIPE: usize = 64 * 1024;

/// Starts a connected terminal session: the typescript the session asked for (`cols` ×
/// `rows`), its observer, and `drive` in a task of its own at the far end of a pipe. The
/// near end is the connection's backend stream, named `id`.
pub(super) async fn start_engine<F, Fut>(
    context: &OpenContext,
    (cols, rows): (u16, u16),
    id: String,
    drive: F,
) -> Result<BackendStream, BackendError>
where
    F: FnOnce(tokio::io::DuplexStream, SessionObserver, CancellationToken) -> Fut,
    Fut: Future<Output = Vec<RecordingSummary>> + Send + 'static,
{
    let typescript = match &context.typescript {
        Some((request, settings)) => {
            start_typescript(context, request, settings, cols, rows).await?
        }
        None => None,
    };
    let observer = SessionObserver::new(context, typescript);
    let (ours, engine) = tokio::io::duplex(PIPE);
    let finished = tokio::spawn(
        drive(engine, observer, context.cancel.clone()).instrument(tracing::Span::current()),
    );
    let (reader, writer) = tokio::io::split(ours);
    Ok(BackendStream {
        reader: Box::new(reader),
        writer: Box::new(writer),
        leftover: bytes::Bytes::new(),
        id,
        finished: Some(finished),
    })
}

/// Starts the session's typescript; `None` when it cannot start and the policy lets the
/// session go on without it.
pub(super) async fn start_typescript(
    context: &OpenContext,
    request: &RecordingRequest,
    settings: &Arc<RecordingsSettings>,
    cols: u16,
    rows: u16,
) -> Result<Option<TypescriptRecording>, BackendError> {
    let plan = RecordingPlan {
        settings,
        request,
        session: &context.session,
        resource_id: &context.resource_id,
        protocol: &context.protocol,
        size: (u32::from(cols), u32::from(rows)),
        include_input: context.record_input,
    };
    let fail_closed = context.fail_closed;
    let end_session = context.end_session.clone();
    let started = TypescriptRecording::start(plan, move |failure| {
        tracing::warn!(%failure, "typescript recording failed");
        if fail_closed {
            end_session(EndReason::RecordingFailed);
        }
    })
    .await;
    let services = &context.services;
    match started {
        Ok(typescript) => {
            services.recording_started(&context.session, typescript.file_name(), "typescript");
            if let Some(share) = &context.share {
                share.add_notes(super::share::Notes::Typescript(typescript.notes()));
            }
            Ok(Some(typescript))
        }
        Err(error) => {
            tracing::warn!(%error, "typescript recording could not start");
            services
                .metrics
                .error(zt_api::control::Origin::Local, "recording");
            if fail_closed {
                Err(BackendError {
                    detail: "typescript recording could not start".to_owned(),
                    status: None,
                    message: None,
                    local: Some(EndReason::RecordingFailed),
                })
            } else {
                Ok(None)
            }
        }
    }
}
