//! The graphical recording of a connection: what the user saw, as the recorder's graphical
//! writer stores it, with key frames for seeking.
//!
//! Every message ztproxy sends to the client (after filtering, and with ztproxy's own
//! replies such as the `ack` of a refused stream, or the `error` and `disconnect` that end a
//! revoked or timed-out session — the recording holds what the client received, nothing
//! more) is recorded, and, with `recording-include-keys`, the client's
//! `key` and `mouse` input too, as guacd records them.
//!
//! The work happens on a thread of the recording's own, so the relay never decodes an image
//! or encodes a key frame: the relay collects output (up to 256 KiB or 20 ms of it) and
//! hands it to the worker over a bounded queue ([`JOB_QUEUE`] batches): the client's
//! messages themselves (shared buffers, not copies) and the target's instructions in them.
//! The worker appends the messages to the recorder's writer and feeds a display model that
//! follows the output. The model
//! ([`zt_display::DeferredDisplay`]) holds up to [`MODEL_BUDGET`] bytes of output back and
//! drops the images (and copies) that are painted over before anything shows them, so it
//! decodes little more than what the key frames show. When the writer says a key frame is
//! due (at least every five seconds of activity) and the model is at an instruction boundary
//! with no image stream open, the worker brings the model up to date, encodes a key frame
//! from it and appends it right there, so it sits exactly where its snapshot was taken.
//!
//! Two kinds of back-pressure, deliberately different:
//!
//! * **CPU**: when the worker falls behind (decoding images is the dearest part), the relay
//!   waits for room in the queue, so guacd is read more slowly. Nothing is lost; the session
//!   runs at the speed it can be recorded.
//! * **Disk**: the writer's queue is never waited on for long. When the disk stalls, the
//!   worker waits at most [`DISK_PATIENCE`] per batch, then lets the writer record a gap.
//!   A failing writer (disk full, I/O error) is reported through
//!   [`GraphicalRecording::failure`]; the connection ends the session when its policy is to
//!   fail closed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use zt_api::audit::AuditEvent;
use zt_api::control::RecordingRequest;
use zt_guac::Instruction;
use zt_recorder::{
    AppendError, Event, RecordingKind, RecordingWriter, ResourceSecret, Size, TryAppendError,
    WriterConfig, WriterFailure,
};

use crate::audit::AuditLog;
use crate::config::RecordingsSettings;

/// Batches of instructions queued for the recording worker.
pub const JOB_QUEUE: usize = 32;
/// Output the display model holds back to find what nobody will see (bounded memory per
/// recording; key frames flush it, so it fills only when more than this arrives between two
/// key frames). The queue must hold two or three times what a screen shows: on the guacd
/// peer's bulk stream (1920 × 1080, a quarter of the tiles incompressible) 16 MiB still
/// decoded most images and ran at 155 MB/s, 64 MiB at 350 MB/s (`bench/RESULTS.md`).
pub const MODEL_BUDGET: usize = zt_display::DEFAULT_BUDGET;
/// Longest the worker waits for room in the writer's queue before the writer records a gap.
pub const DISK_PATIENCE: Duration = Duration::from_millis(250);

/// Why a recording could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The request's keys are unusable.
    #[error("recording keys: {0}")]
    Keys(String),
    /// The file could not be created.
    #[error("cannot create the recording: {0}")]
    Create(String),
}

/// A graphical recording in progress.
pub struct GraphicalRecording {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<std::thread::JoinHandle<Worker>>,
    failure: Arc<Mutex<Option<WriterFailure>>>,
    file_name: String,
    include_input: bool,
    /// Client input waiting for the next hand-over (kept in order with the output).
    pending_input: Vec<u8>,
}

enum Job {
    /// The instructions for the model, and the messages that carried them to the client,
    /// when they were handed over (the time they are recorded at, and what the writer's
    /// flush deadline counts from).
    Output(Instant, Vec<Instruction>, Vec<Bytes>),
    Input(Instant, Vec<u8>),
    /// A fact for the recording (a file transfer's audit event).
    Note(Instant, Bytes),
}

/// Where a backend's engine notes facts into the session's graphical recording (file
/// transfers: the audit event, never the content). It never blocks and never keeps the
/// recording open: a note that finds the queue full or the recording finished is dropped.
#[derive(Clone)]
pub struct NoteSink(mpsc::WeakSender<Job>);

impl NoteSink {
    /// Notes `event`.
    pub fn note(&self, event: &AuditEvent) {
        if let (Some(jobs), Ok(json)) = (self.0.upgrade(), serde_json::to_vec(event)) {
            let _ = jobs.try_send(Job::Note(Instant::now(), json.into()));
        }
    }
}

/// The recording thread's state.
struct Worker {
    writer: RecordingWriter,
    display: Option<zt_display::DeferredDisplay>,
    dropped: u64,
    /// Told when the display model degrades.
    audit: Arc<AuditLog>,
    session: String,
    file_name: String,
    started: Instant,
}

/// The outcome of a recording, for the audit log.
#[derive(Debug, Clone)]
pub struct RecordingSummary {
    /// File name.
    pub file_name: String,
    /// Finalised, or the failure.
    pub result: Result<u64, String>,
    /// Events lost (queue full).
    pub dropped_events: u64,
}

/// What a recording is started for.
#[derive(Debug, Clone, Copy)]
pub struct RecordingPlan<'a> {
    /// The recordings' configuration (directory, keys, identity).
    pub settings: &'a RecordingsSettings,
    /// What the session asked for.
    pub request: &'a RecordingRequest,
    /// The session's id.
    pub session: &'a str,
    /// The vault resource (bound into the key derivation).
    pub resource_id: &'a str,
    /// The protocol, for the header.
    pub protocol: &'a str,
    /// The client's display size.
    pub size: (u32, u32),
    /// Whether the client's input is recorded too.
    pub include_input: bool,
}

impl GraphicalRecording {
    /// Creates the recording file (blocking work runs on a blocking thread); `audit` hears
    /// when its display model degrades.
    pub async fn start(plan: RecordingPlan<'_>, audit: Arc<AuditLog>) -> Result<Self, StartError> {
        let mut config = writer_config(&plan, RecordingKind::Graphical)?;
        let failure = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&failure);
        config.on_failure = Some(Box::new(move |f: &WriterFailure| {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(f.clone());
        }));
        let session = plan.session;
        let include_input = plan.include_input;
        let file_name = format!("{session}.graphical.ztrec");
        let writer = create_writer(plan.settings, &file_name, config).await?;
        let (jobs, rx) = mpsc::channel(JOB_QUEUE);
        let worker = Worker {
            writer,
            display: Some(zt_display::DeferredDisplay::new(
                zt_display::Display::new(zt_display::DisplayLimits::default()),
                MODEL_BUDGET,
            )),
            dropped: 0,
            audit,
            session: session.to_owned(),
            file_name: file_name.clone(),
            started: Instant::now(),
        };
        let worker = std::thread::Builder::new()
            .name("zt-recording".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| StartError::Create(format!("recording thread: {e}")))?;
        Ok(Self {
            jobs: Some(jobs),
            worker: Some(worker),
            failure,
            file_name,
            include_input,
            pending_input: Vec::new(),
        })
    }

    /// The recording's file name.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// Whether the client's input is recorded too.
    pub fn includes_input(&self) -> bool {
        self.include_input
    }

    /// A sink for facts from the backend's engine.
    pub fn notes(&self) -> Option<NoteSink> {
        self.jobs.as_ref().map(|jobs| NoteSink(jobs.downgrade()))
    }

    /// The writer's failure, if it failed.
    pub fn failure(&self) -> Option<WriterFailure> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the `messages` sent to the client, after any input noted before them, and
    /// shows the display model the `instructions` in them that came from the target. Waits
    /// while the worker is behind (see the module docs).
    pub async fn output(&mut self, instructions: Vec<Instruction>, messages: Vec<Bytes>) {
        self.flush_input().await;
        if !messages.is_empty() {
            self.send(Job::Output(Instant::now(), instructions, messages))
                .await;
        }
    }

    /// Notes the client's input (only with `recording-include-keys`); it is handed over
    /// with the next [`Self::output`] or [`Self::flush_input`].
    pub fn input(&mut self, bytes: &[u8]) {
        if self.include_input {
            self.pending_input.extend_from_slice(bytes);
        }
    }

    /// Hands over the input noted so far.
    pub async fn flush_input(&mut self) {
        if !self.pending_input.is_empty() {
            let input = std::mem::take(&mut self.pending_input);
            self.send(Job::Input(Instant::now(), input)).await;
        }
    }

    async fn send(&mut self, job: Job) {
        if let Some(jobs) = &self.jobs
            && jobs.send(job).await.is_err()
        {
            // The worker is gone (it only stops when the writer failed, which `failure`
            // reports): nothing more can be recorded.
            self.jobs = None;
        }
    }

    /// Finalises the recording (blocking work runs on a blocking thread).
    pub async fn finish(mut self) -> RecordingSummary {
        self.flush_input().await;
        drop(self.jobs.take());
        let file_name = self.file_name.clone();
        let Some(worker) = self.worker.take() else {
            return RecordingSummary {
                file_name,
                result: Err("recording worker missing".to_owned()),
                dropped_events: 0,
            };
        };
        match tokio::task::spawn_blocking(move || worker.join()).await {
            Ok(Ok(worker)) => finish_writer(file_name, worker.writer, worker.dropped).await,
            _ => RecordingSummary {
                file_name,
                result: Err("recording worker panicked".to_owned()),
                dropped_events: 0,
            },
        }
    }
}

impl Worker {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) -> Self {
        while let Some(job) = jobs.blocking_recv() {
            match job {
                Job::Output(at, instructions, messages) => {
                    self.output(at, &instructions, messages);
                }
                Job::Input(at, bytes) => self.append(at, Event::Instructions(bytes.into())),
                Job::Note(at, bytes) => self.append(at, Event::Note(bytes)),
            }
            if matches!(self.writer.status(), zt_recorder::WriterStatus::Failed(_)) {
                break;
            }
        }
        self
    }

    fn output(&mut self, at: Instant, instructions: &[Instruction], messages: Vec<Bytes>) {
        for message in messages {
            self.append(at, Event::Instructions(message));
        }
        let Some(display) = &mut self.display else {
            return;
        };
        for instruction in instructions {
            display.handle(instruction);
        }
        // Showing the model everything is only worth it when a key frame can be taken.
        if !self.writer.keyframe_due() || display.image_streaming() {
            return;
        }
        display.flush();
        let model = display.display();
        if model.is_degraded() {
            let reason = model
                .degradation()
                .map_or_else(|| "unknown".to_owned(), |error| error.to_string());
            let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            tracing::warn!(
                recording = %self.file_name,
                %reason,
                at_ms,
                "display model degraded; the recording continues without key frames"
            );
            self.audit.emit(AuditEvent::RecordingDegraded {
                session: self.session.clone(),
                recording: self.file_name.clone(),
                reason,
                at_ms,
            });
            self.display = None;
            return;
        }
        // A key frame before the server sized the display would redraw nothing, and players
        // need layer 0's size before the pointer it carries.
        if model.key_frame_ready() && model.size() != (0, 0) {
            let frame = model.snapshot().encode();
            if !frame.is_empty() {
                self.append(at, Event::KeyFrame(frame.into()));
            }
        }
    }

    /// Appends, waiting up to [`DISK_PATIENCE`] for room in the writer's queue; after that
    /// the writer records the loss as a gap.
    fn append(&mut self, at: Instant, event: Event) {
        let deadline = Instant::now() + DISK_PATIENCE;
        let at = self.writer.time_of(at);
        let mut event = event;
        loop {
            match self.writer.try_append_at(at, event) {
                Ok(()) => return,
                Err(TryAppendError::Full(back)) if Instant::now() < deadline => {
                    event = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TryAppendError::Full(back)) => {
                    if let Err(AppendError::QueueFull) = self.writer.append_at(at, back) {
                        self.dropped += 1;
                    }
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, "recording append failed");
                    return;
                }
            }
        }
    }
}

/// A typescript recording of a native terminal connection: what the target printed (and,
/// with `recording-include-keys`, what was typed) and the terminal's resizes, with timing, as
/// the recorder's typescript writer stores it.
///
/// Appends never wait: the writer's queue (8 MiB) absorbs bursts, and what it cannot take is
/// recorded as a gap, so a stalled disk never stalls the session. A failing writer calls the
/// `on_failure` given to [`TypescriptRecording::start`] once.
pub struct TypescriptRecording {
    /// Shared only with [`TypescriptNotes`], which hold it weakly.
    writer: Arc<RecordingWriter>,
    file_name: String,
    include_input: bool,
    dropped: u64,
}

impl TypescriptRecording {
    /// Creates the recording file; `plan.size` is the terminal's columns and rows.
    pub async fn start(
        plan: RecordingPlan<'_>,
        on_failure: impl Fn(&WriterFailure) + Send + 'static,
    ) -> Result<Self, StartError> {
        let mut config = writer_config(&plan, RecordingKind::Typescript)?;
        config.on_failure = Some(Box::new(on_failure));
        let file_name = format!("{}.typescript.ztrec", plan.session);
        let writer = create_writer(plan.settings, &file_name, config).await?;
        Ok(Self {
            writer: Arc::new(writer),
            file_name,
            include_input: plan.include_input,
            dropped: 0,
        })
    }

    /// The recording's file name.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// Bytes the target printed.
    pub fn output(&mut self, bytes: &[u8]) {
        self.append(Event::Output(bytes.to_vec()));
    }

    /// Bytes typed into the terminal (kept only with `recording-include-keys`).
    pub fn input(&mut self, bytes: &[u8]) {
        if self.include_input {
            self.append(Event::Input(bytes.to_vec()));
        }
    }

    /// A fact the audit log also holds (a file transfer), as its JSON.
    pub fn note(&mut self, event: &AuditEvent) {
        if let Ok(json) = serde_json::to_vec(event) {
            self.append(Event::Note(json.into()));
        }
    }

    /// The terminal's new size in cells.
    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.append(Event::Resize(Size {
            width: cols,
            height: rows,
        }));
    }

    fn append(&mut self, event: Event) {
        if let Err(AppendError::QueueFull) = self.writer.append(event) {
            self.dropped += 1;
        }
    }

    /// Where facts are noted from outside the engine that writes the typescript (a viewer
    /// joining the session).
    pub fn notes(&self) -> TypescriptNotes {
        TypescriptNotes(Arc::downgrade(&self.writer))
    }

    /// Finalises the recording (blocking work runs on a blocking thread).
    pub async fn finish(self) -> RecordingSummary {
        // A note being appended holds the writer for that append only (it never blocks).
        let mut writer = self.writer;
        let writer = loop {
            match Arc::try_unwrap(writer) {
                Ok(writer) => break writer,
                Err(shared) => {
                    writer = shared;
                    tokio::task::yield_now().await;
                }
            }
        };
        finish_writer(self.file_name, writer, self.dropped).await
    }
}

/// Where facts are noted into a typescript from outside its engine. It never blocks and
/// never keeps the recording open: a note that finds the recording finished (or its queue
/// full) is dropped.
#[derive(Clone)]
pub struct TypescriptNotes(std::sync::Weak<RecordingWriter>);

impl TypescriptNotes {
    /// Notes `event`.
    pub fn note(&self, event: &AuditEvent) {
        if let (Some(writer), Ok(json)) = (self.0.upgrade(), serde_json::to_vec(event)) {
            let _ = writer.append(Event::Note(json.into()));
        }
    }
}

/// The writer's configuration for a recording of `kind` as `plan` describes it.
fn writer_config(
    plan: &RecordingPlan<'_>,
    kind: RecordingKind,
) -> Result<WriterConfig, StartError> {
    let RecordingPlan {
        settings,
        request,
        session,
        resource_id,
        protocol,
        size,
        include_input,
    } = *plan;
    let mut config = WriterConfig::new(kind, session, resource_id, protocol);
    if let Some(secret) = &request.resource_secret {
        let secret = ResourceSecret::from_base64(secret.expose_secret())
            .map_err(|e| StartError::Keys(e.to_string()))?;
        config.resource_secret = Some(Arc::new(secret));
    }
    config.recipients = settings.recipients.clone();
    for text in &request.recipients {
        config.recipients.push(
            zt_recorder::RecipientPublicKey::from_text(text)
                .map_err(|e| StartError::Keys(e.to_string()))?,
        );
    }
    config.identity = settings.identity.clone();
    config.include_input = include_input;
    config.size = Size {
        width: u16::try_from(size.0).unwrap_or(u16::MAX),
        height: u16::try_from(size.1).unwrap_or(u16::MAX),
    };
    Ok(config)
}

/// Creates `file_name` in the recordings' directory (on a blocking thread).
async fn create_writer(
    settings: &RecordingsSettings,
    file_name: &str,
    config: WriterConfig,
) -> Result<RecordingWriter, StartError> {
    let path: PathBuf = settings.directory.join(file_name);
    let directory = settings.directory.clone();
    tokio::task::spawn_blocking(move || {
        create_private_dir(&directory)?;
        RecordingWriter::create(&path, config).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| StartError::Create(e.to_string()))?
    .map_err(StartError::Create)
}

/// Finalises `writer` (on a blocking thread).
async fn finish_writer(
    file_name: String,
    writer: RecordingWriter,
    dropped: u64,
) -> RecordingSummary {
    let result = tokio::task::spawn_blocking(move || {
        writer
            .finish()
            .map(|stats| stats.events)
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    RecordingSummary {
        file_name,
        result,
        dropped_events: dropped,
    }
}

fn create_private_dir(directory: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if directory.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(directory)
        .map_err(|e| format!("{}: {e}", directory.display()))
}
