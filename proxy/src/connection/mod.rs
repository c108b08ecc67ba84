//! Interactive connections: the tokio driver of a Guacamole connection between a user's
//! client and a [`backend`].
//!
//! One connection per session, on the session's first Guacamole channel (a data channel or a
//! QUIC stream). Everything a connection decides is in the sans-IO core
//! ([`zt_connection::Connection`]): the client's handshake, the policy filter, the `sync`
//! keep-alive, output batching and flow control, and the farewell. This driver only moves
//! bytes and timers, the way quinn's driver moves quinn-proto's:
//!
//! 1. the client's messages go into the core, the core's messages to the client (through a
//!    writer task, so a slow client never stops the backend's side);
//! 2. when the core reports the client's display settings, the driver starts the graphical
//!    [`recording`] and opens the [`backend`] (guacd, or a native engine), then tells the
//!    core, which sends `ready`;
//! 3. the backend's bytes are read straight into the core's decoder while the core wants
//!    them (it stops when the client is behind), the core's bytes for the backend go to it
//!    through a second writer task;
//! 4. the core's recording batches go to the recording's worker (waiting while it is behind,
//!    so the session runs at the speed it can be recorded), its filter events to the audit
//!    log, its byte counts to the session's counters.
//! 5. the same batches go to the session's [`share`] (live sharing), whose worker keeps the
//!    screen for viewers joining and forwards the output to those watching; the input of
//!    viewers allowed to type comes back from it into the core.
//!
//! The connection ends when either side disconnects or closes, when the backend reports an
//! `error` (its status goes to the client and into the audit event; the origin is the
//! target), on a protocol violation by either side, when the session ends (revocation,
//! timeouts: the client gets an `error` with a Guacamole status and a `disconnect`, recorded
//! like the rest of its output), or when recording fails and the policy is to fail closed.

pub mod backend;
pub mod database;
pub mod k8s;
pub mod rbi;
pub mod recording;
pub mod share;
pub mod ssh;
pub mod telnet;
mod terminal;
pub mod vnc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zt_api::audit::AuditEvent;
use zt_api::control::{EndReason, Origin, RecordingRequest};
use zt_connection::filter::FilterEvent;
use zt_connection::{Connection, Event, Record};
use zt_guacd::ClientInfo;

use crate::audit::AuditLog;
use crate::config::RecordingsSettings;
use crate::metrics::Metrics;
use crate::session::SessionStats;
use crate::transport::stream::{StreamReader, StreamWriter};
use backend::{Backend, BackendStream};
use recording::GraphicalRecording;

/// Bytes read from the backend at a time.
const READ_BUF: usize = 64 * 1024;
/// Messages queued for either writer.
const WRITE_QUEUE: usize = 16;
/// How long the client gets, once the connection has ended, for what was due and the
/// farewell.
const FAREWELL_GRACE: Duration = Duration::from_millis(500);
/// How long the writers get to finish after that.
const WRITER_GRACE: Duration = Duration::from_secs(2);
/// How long a native engine gets, once its pipe is closed, to leave its target and finalise
/// its recordings.
const ENGINE_GRACE: Duration = Duration::from_secs(3);

/// The session's services a connection reports to.
#[derive(Clone)]
pub struct Services {
    /// Audit log.
    pub audit: Arc<AuditLog>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Byte counters and the idle clock of the session.
    pub stats: Arc<SessionStats>,
    /// Recording file names, shown in `GET /v1/sessions`.
    pub recordings: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Services {
    /// Lists a recording that started for the session and audits it (`kind`: `graphical`
    /// or `typescript`).
    pub fn recording_started(&self, session: &str, file_name: &str, kind: &str) {
        self.recordings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(file_name.to_owned());
        self.audit.emit(AuditEvent::RecordingStarted {
            session: session.to_owned(),
            recording: file_name.to_owned(),
            kind: kind.to_owned(),
        });
    }
}

/// Everything a connection needs from its session.
pub struct ConnectionContext {
    /// The core's settings: the session id (for `ready`), the policy, the timings.
    pub settings: zt_connection::Settings,
    /// The session's protocol, for the recording's header.
    pub protocol: String,
    /// The vault resource id (bound into the recording's key derivation).
    pub resource_id: String,
    /// The recording the session asked for, and the settings to write it with.
    pub recording: Option<(RecordingRequest, Arc<RecordingsSettings>)>,
    /// What the connection reports to.
    pub services: Services,
    /// Cancelled when the session ends.
    pub cancel: CancellationToken,
    /// Ends the whole session for a reason (given to native backends).
    pub end_session: Arc<dyn Fn(EndReason) + Send + Sync>,
    /// The session's live sharing, when viewers may join ([`share`]).
    pub share: Option<Arc<share::Share>>,
}

/// How a connection ended.
#[derive(Debug, Clone)]
pub struct ConnectionEnd {
    /// Why.
    pub reason: EndReason,
    /// Who caused it, when an error ended it.
    pub origin: Option<Origin>,
    /// A secret-free detail (a Guacamole status, a violation).
    pub detail: Option<String>,
    /// The recordings: the graphical one, and the backend's typescript.
    pub recordings: Vec<recording::RecordingSummary>,
}

/// Runs one connection until it ends. `end_reason` tells, when the session is cancelled from
/// outside, why (so the client hears the right status).
pub async fn run(
    mut ctx: ConnectionContext,
    mut reader: StreamReader,
    writer: StreamWriter,
    mut backend: Box<dyn Backend>,
    end_reason: impl Fn() -> EndReason,
) -> ConnectionEnd {
    ctx.settings.backend = backend.name();
    ctx.settings.backend_metric = backend.protocol_metric();
    let core = Connection::new(ctx.settings.clone(), Instant::now());
    let (to_client, client_writer) = spawn_client_writer(writer);
    let shared_input = ctx.share.as_ref().and_then(|share| share.take_input());
    let mut driver = Driver {
        core,
        shared_input,
        ctx,
        recording: None,
        fail_closed: true,
        to_client,
        backend: None,
    };
    let end = loop {
        if let Some(end) = driver.process(backend.as_mut(), &end_reason).await {
            break end;
        }
        driver.wait(&mut reader, &end_reason).await;
    };
    driver.teardown(end, client_writer).await
}

struct Driver {
    core: Connection,
    /// Input of the viewers allowed to type.
    shared_input: Option<mpsc::Receiver<Bytes>>,
    ctx: ConnectionContext,
    recording: Option<GraphicalRecording>,
    fail_closed: bool,
    to_client: mpsc::Sender<Bytes>,
    backend: Option<BackendLink>,
}

/// An open backend: its reading half, the queue to its writer task, and its engine's task.
struct BackendLink {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    closed: bool,
    to_backend: mpsc::Sender<Bytes>,
    writer: tokio::task::JoinHandle<()>,
    finished: Option<tokio::task::JoinHandle<Vec<recording::RecordingSummary>>>,
}

/// What woke the driver.
enum Wake<P> {
    Cancelled,
    Permit(Option<P>),
    BackendRead(bool),
    Client(Option<Bytes>),
    SharedInput(Option<Bytes>),
    Timer,
}

impl Driver {
    /// Acts on everything the core has for the driver; the end, once the core is closed.
    async fn process(
        &mut self,
        backend: &mut dyn Backend,
        end_reason: &impl Fn() -> EndReason,
    ) -> Option<zt_connection::ConnectionEnd> {
        let mut ended = None;
        loop {
            let mut progressed = false;
            while let Some(event) = self.core.poll_event() {
                progressed = true;
                match event {
                    Event::HandshakeComplete(display) => {
                        self.open(backend, display, end_reason).await;
                    }
                    Event::TargetUp => tracing::info!("target reached through {}", backend.name()),
                    Event::KeepAlive { lag } => tracing::debug!(
                        lag_ms = crate::util::millis(lag),
                        "answered the backend's sync for a slow client"
                    ),
                    Event::Filter(event) => self.audit_filter(event),
                    Event::Ended(end) => ended = Some(end),
                    _ => {}
                }
            }
            while let Some(record) = self.core.poll_record() {
                progressed = true;
                self.record(record).await;
            }
            if let Some(bytes) = self.core.poll_backend_transmit() {
                progressed = true;
                let to_backend = self.backend.as_ref().map(|link| link.to_backend.clone());
                send_backend(to_backend, self.core.is_closed(), bytes).await;
            }
            self.count();
            self.check_recording();
            if !progressed {
                return ended;
            }
        }
    }

    /// Waits for one thing to happen and hands it to the core.
    async fn wait(&mut self, reader: &mut StreamReader, end_reason: &impl Fn() -> EndReason) {
        let timeout = self.core.poll_timeout();
        let wants_backend = self.core.wants_backend_input();
        let has_transmit = self.core.has_transmit();
        let wake = {
            let read_backend = async {
                match &mut self.backend {
                    Some(link) if wants_backend && !link.closed => {
                        // Straight into the decoder: the instructions it returns share these
                        // bytes.
                        let read = link
                            .reader
                            .read_buf(self.core.backend_buffer(READ_BUF))
                            .await;
                        matches!(read, Ok(n) if n > 0)
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.ctx.cancel.cancelled() => Wake::Cancelled,
                permit = self.to_client.reserve(), if has_transmit => Wake::Permit(permit.ok()),
                open = read_backend => Wake::BackendRead(open),
                message = reader.recv() => Wake::Client(message.ok().flatten()),
                input = recv_shared(&mut self.shared_input) => Wake::SharedInput(input),
                () = sleep_until(timeout) => Wake::Timer,
            }
        };
        let now = Instant::now();
        match wake {
            Wake::Cancelled => self.core.close(end_reason()),
            Wake::Permit(Some(permit)) => {
                if let Some(message) = self.core.poll_transmit(now) {
                    permit.send(message);
                }
            }
            // The client's channel is gone: nothing more reaches it.
            Wake::Permit(None) | Wake::Client(None) => self.core.handle_client_closed(),
            Wake::BackendRead(true) => {
                self.core.handle_backend_read(now);
                self.ctx.services.stats.touch();
            }
            Wake::BackendRead(false) => {
                if let Some(link) = &mut self.backend {
                    link.closed = true;
                }
                self.core.handle_backend_closed(now);
            }
            Wake::Client(Some(bytes)) => {
                self.core.handle_client(now, &bytes);
                self.ctx.services.stats.touch();
            }
            Wake::SharedInput(Some(bytes)) => {
                self.core.handle_shared_input(now, &bytes);
                self.ctx.services.stats.touch();
            }
            Wake::SharedInput(None) => self.shared_input = None,
            Wake::Timer => self.core.handle_timeout(now),
        }
    }

    /// The client's handshake is done: the recording starts, then the backend opens.
    async fn open(
        &mut self,
        backend: &mut dyn Backend,
        display: ClientInfo,
        end_reason: &impl Fn() -> EndReason,
    ) {
        if let Err(end) = self.start_recording(&display).await {
            return self.core.abort(end);
        }
        if let Some(share) = &self.ctx.share {
            if self.recording.is_none() {
                // The share is fed what the recording would be.
                self.core.start_recording(false);
            }
            if let Some(notes) = self.recording.as_ref().and_then(GraphicalRecording::notes) {
                share.add_notes(share::Notes::Graphical(notes));
            }
        }
        let context = self.open_context();
        let opened = tokio::select! {
            () = self.ctx.cancel.cancelled() => return self.core.close(end_reason()),
            opened = backend.open(&display, &context) => opened,
        };
        match opened {
            Ok(stream) => {
                tracing::debug!(connection = %stream.id, "{} ready", backend.name());
                self.attach(stream);
                self.core.backend_ready(Instant::now());
            }
            Err(error) => {
                backend::count_open_failure(&self.ctx.services.metrics, backend.name());
                self.core.abort(match error.local {
                    Some(reason) => {
                        zt_connection::ConnectionEnd::new(reason, Some(Origin::Local), error.detail)
                    }
                    None => zt_connection::ConnectionEnd::backend_error(error.detail, error.status)
                        .with_message(error.message),
                });
            }
        }
    }

    /// What a backend is opened with.
    fn open_context(&self) -> backend::OpenContext {
        let ctx = &self.ctx;
        backend::OpenContext {
            session: ctx.settings.session.clone(),
            resource_id: ctx.resource_id.clone(),
            protocol: ctx.protocol.clone(),
            services: ctx.services.clone(),
            typescript: ctx
                .recording
                .clone()
                .filter(|(request, _)| request.typescript),
            record_input: ctx.settings.policy.record_input,
            fail_closed: self.fail_closed,
            cancel: ctx.cancel.clone(),
            end_session: ctx.end_session.clone(),
            notes: self.recording.as_ref().and_then(GraphicalRecording::notes),
            share: ctx.share.clone(),
        }
    }

    fn attach(&mut self, stream: BackendStream) {
        let BackendStream {
            reader,
            mut writer,
            leftover,
            finished,
            ..
        } = stream;
        let (to_backend, mut queue) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(bytes) = queue.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        });
        if !leftover.is_empty() {
            self.core.handle_backend(Instant::now(), &leftover);
        }
        self.backend = Some(BackendLink {
            reader,
            closed: false,
            to_backend,
            writer,
            finished,
        });
    }

    async fn start_recording(
        &mut self,
        display: &ClientInfo,
    ) -> Result<(), zt_connection::ConnectionEnd> {
        let Some((request, settings)) = self.ctx.recording.clone() else {
            return Ok(());
        };
        self.fail_closed = request.fail_closed.unwrap_or(settings.fail_closed);
        if !request.graphical {
            return Ok(());
        }
        let services = &self.ctx.services;
        let plan = recording::RecordingPlan {
            settings: &settings,
            request: &request,
            session: &self.ctx.settings.session,
            resource_id: &self.ctx.resource_id,
            protocol: &self.ctx.protocol,
            size: (display.width, display.height),
            include_input: self.ctx.settings.policy.record_input,
        };
        let started = GraphicalRecording::start(plan, Arc::clone(&services.audit)).await;
        match started {
            Ok(recording) => {
                services.recording_started(
                    &self.ctx.settings.session,
                    recording.file_name(),
                    "graphical",
                );
                self.core.start_recording(recording.includes_input());
                self.recording = Some(recording);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "recording could not start");
                services.metrics.error(Origin::Local, "recording");
                if self.fail_closed {
                    Err(zt_connection::ConnectionEnd::new(
                        EndReason::RecordingFailed,
                        Some(Origin::Local),
                        "recording could not start".to_owned(),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn record(&mut self, record: Record) {
        if let (Some(share), Record::Output { instructions, .. }) = (&self.ctx.share, &record) {
            share.output(instructions.clone()).await;
        }
        let Some(recording) = &mut self.recording else {
            return;
        };
        match record {
            Record::Output {
                instructions,
                messages,
            } => recording.output(instructions, messages).await,
            Record::Input(input) => {
                recording.input(&input);
                recording.flush_input().await;
            }
        }
    }

    fn count(&mut self) {
        let counts = self.core.take_counts();
        let Services { stats, metrics, .. } = &self.ctx.services;
        if counts.to_client > 0 {
            stats.count_to_client(metrics, counts.to_client);
        }
        if counts.to_target > 0 {
            stats.count_to_target(metrics, counts.to_target);
        }
    }

    /// A recording that failed ends the connection when its policy is to fail closed.
    fn check_recording(&mut self) {
        if self.core.is_closed() || !self.fail_closed {
            return;
        }
        if let Some(failure) = self
            .recording
            .as_ref()
            .and_then(GraphicalRecording::failure)
        {
            self.core.abort(zt_connection::ConnectionEnd::new(
                EndReason::RecordingFailed,
                Some(Origin::Local),
                format!("recording failed: {failure}"),
            ));
        }
    }

    fn audit_filter(&self, event: FilterEvent) {
        let session = self.ctx.settings.session.clone();
        let event = match event {
            FilterEvent::Transferred {
                direction,
                kind,
                mimetype,
                name,
                size,
                sha256,
                truncated,
            } => AuditEvent::Transfer {
                session,
                direction: direction.as_str().into(),
                kind: kind.as_str().into(),
                mimetype,
                name,
                path: None,
                size,
                sha256: hex::encode(sha256),
                truncated,
            },
            FilterEvent::Refused {
                direction,
                what,
                name,
            } => {
                self.ctx
                    .services
                    .metrics
                    .error(Origin::Client, "policy_refused");
                AuditEvent::PolicyRefused {
                    session,
                    direction: direction.as_str().into(),
                    action: what.as_str().into(),
                    name,
                    // Refused by the session's policy switches (as SFTP's own refusals say).
                    reason: matches!(
                        what,
                        zt_connection::filter::Refused::Upload
                            | zt_connection::filter::Refused::Download
                    )
                    .then(|| "policy".to_owned()),
                }
            }
        };
        self.ctx.services.audit.emit(event);
    }

    /// The client gets what was already due and why the connection ends (bounded), both
    /// writers finish, the recording is finalised.
    async fn teardown(
        mut self,
        end: zt_connection::ConnectionEnd,
        client_writer: tokio::task::JoinHandle<StreamWriter>,
    ) -> ConnectionEnd {
        if let (Some(metric), Some(origin)) = (end.metric, end.origin) {
            self.ctx.services.metrics.error(origin, metric);
        }
        let core = &mut self.core;
        let to_client = self.to_client;
        let _ = tokio::time::timeout(FAREWELL_GRACE, async {
            while let Some(message) = core.poll_transmit(Instant::now()) {
                if to_client.send(message).await.is_err() {
                    break;
                }
            }
        })
        .await;
        drop(to_client);
        if let Some(share) = &self.ctx.share {
            share.close(end.reason, end.origin).await;
        }
        let mut recordings = Vec::new();
        if let Some(link) = self.backend {
            drop(link.to_backend);
            drop(link.reader);
            let _ = tokio::time::timeout(WRITER_GRACE, link.writer).await;
            if let Some(engine) = link.finished {
                match tokio::time::timeout(ENGINE_GRACE, engine).await {
                    Ok(Ok(written)) => recordings.extend(written),
                    _ => tracing::warn!("the backend's engine did not finish in time"),
                }
            }
        }
        if let Ok(Ok(mut writer)) = tokio::time::timeout(WRITER_GRACE, client_writer).await {
            writer.close().await;
        }
        if let Some(recording) = self.recording {
            recordings.insert(0, recording.finish().await);
        }
        ConnectionEnd {
            reason: end.reason,
            origin: end.origin,
            detail: end.detail,
            recordings,
        }
    }
}

async fn send_backend(to_backend: Option<mpsc::Sender<Bytes>>, last: bool, bytes: Bytes) {
    let Some(to_backend) = to_backend else {
        return;
    };
    if last {
        // The last words (a `disconnect`) never wait for a backend that stopped reading.
        let _ = to_backend.try_send(bytes);
    } else {
        let _ = to_backend.send(bytes).await;
    }
}

/// The client's writer task: a slow client never stops the backend's side.
fn spawn_client_writer(
    writer: StreamWriter,
) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<StreamWriter>) {
    let (to_client, mut queue) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let task = tokio::spawn(async move {
        let mut writer = writer;
        while let Some(bytes) = queue.recv().await {
            if writer.send(bytes).await.is_err() {
                return writer;
            }
        }
        writer
    });
    (to_client, task)
}

/// The next input of a viewer allowed to type; pending without any.
async fn recv_shared(input: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match input {
        Some(input) => input.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
