//! Live sharing: viewers of a running connection.
//!
//! A connection session's owner may be joined by viewers (`POST /v1/sessions/{id}/viewers`),
//! each on a transport of its own. The owner's [connection](super) hands what its client
//! receives to the session's [`Share`], the way it hands it to the graphical recording: in
//! batches of the backend's instructions. The share's worker (a thread of its own, so the
//! owner's relay never decodes an image or encodes a screen) feeds a display model
//! ([`zt_display::DeferredDisplay`]) and forwards each batch to every attached viewer.
//!
//! A viewer joins in order with the output: at the end of the first frame (`sync`) the
//! worker handles after the join, with no image half-streamed, it snapshots the model — the
//! screen the owner saw at that `sync` — and attaches the viewer. The snapshot's key frame
//! is encoded on a blocking thread (the worker goes on meanwhile) and reaches the viewer
//! ahead of the live output from that point. So a viewer draws what the owner draws, one
//! batch (at most 20 ms of output) later.
//!
//! What reaches a viewer, and what does not:
//!
//! * drawing, `sync`, `mouse` (the pointer), `name` and image streams: always;
//! * the clipboard the target sets: only for a viewer given `clipboard`;
//! * file, pipe, audio and video streams, `ack`s (they answer the owner's own streams),
//!   `required` prompts and the target's `error`/`disconnect` (a viewer hears its own
//!   farewell): never.
//!
//! A viewer's `key` and `mouse` reach the target only when it was given `input`; then they
//! pass the owner's policy filter ([`zt_connection::Connection::handle_shared_input`]).
//! Everything else a viewer sends (`size`, `sync`, `clipboard`, streams) is dropped: the
//! owner's window size wins and the owner's client keeps the target's pace.
//!
//! Back-pressure: a viewer never slows the owner. Each viewer has a queue bounded in bytes
//! ([`VIEWER_QUEUE_BYTES`] beyond the key frame it joined with and what piled up while that
//! was encoded, at most [`PENDING_QUEUE_BYTES`]); a viewer whose queue would overflow when
//! output arrives has stopped keeping up and is dropped (it hears why).
//! Its transport holds some more (a QUIC stream's window and send buffer, a data channel's
//! buffered amount), so a stalled viewer costs at most those plus the queue. The worker itself is fed like the recording's:
//! when it falls behind, the owner's relay waits for room, so the session runs at the speed
//! its screen can be modelled.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zt_api::audit::AuditEvent;
use zt_api::control::{EndReason, Origin};
use zt_connection::handshake::{ClientHandshake, Step};
use zt_guac::{Decoder, Instruction, Limits, opcode};

use super::recording::{NoteSink, TypescriptNotes};
use crate::audit::AuditLog;
use crate::metrics::Metrics;
use crate::session::SessionStats;
use crate::transport::stream::{StreamReader, StreamWriter};

/// Batches of the owner's output queued for the share's worker.
pub const OUTPUT_QUEUE: usize = 32;
/// Output queued for one viewer, in bytes, beyond what piled up while its key frame was
/// encoded: a viewer that lets more pile up is dropped.
pub const VIEWER_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Output queued for a viewer while its key frame is encoded (it cannot take any yet).
pub const PENDING_QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Input messages of viewers queued for the owner's connection.
pub const INPUT_QUEUE: usize = 64;
/// Viewers a session may have at once.
pub const MAX_VIEWERS: usize = 16;
/// How long a viewer's client may take to complete its handshake.
pub const VIEWER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Keys a viewer may hold down at once (released on the target when it leaves).
const MAX_PRESSED: usize = 64;
/// How long a viewer that ends gets to hear why.
const FAREWELL_GRACE: Duration = Duration::from_millis(500);

/// The sharing side of one connection session. The session's handle holds it (viewers find
/// it there), the owner's connection feeds it.
pub struct Share {
    jobs: mpsc::Sender<Job>,
    input: mpsc::Sender<Bytes>,
    input_rx: Mutex<Option<mpsc::Receiver<Bytes>>>,
    notes: Mutex<Vec<Notes>>,
    closed: CancellationToken,
    /// Viewers whose joining has been noted and whose leaving has not yet.
    present: tokio::sync::watch::Sender<usize>,
    /// Why the owner's connection ended, once it has.
    ended: Mutex<Option<(EndReason, Option<Origin>)>>,
    /// Set when the display model failed: no viewer can be shown the screen any more.
    unshareable: Arc<AtomicBool>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("closed", &self.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// A recording of the owner's session that notes who watched.
#[derive(Clone)]
pub enum Notes {
    /// The graphical recording.
    Graphical(NoteSink),
    /// A native terminal's typescript.
    Typescript(TypescriptNotes),
}

enum Job {
    /// The backend's instructions the owner's client received.
    Output(Vec<Instruction>),
    /// A viewer joins.
    Join(Joining),
    /// The owner's connection is over.
    Close,
}

/// A viewer waiting to be attached.
struct Joining {
    queue: ViewerQueue,
    /// Where its key frame goes (ahead of the queue).
    frame: tokio::sync::oneshot::Sender<Vec<Bytes>>,
    clipboard: bool,
}

/// The worker's end of a viewer's queue.
struct ViewerQueue {
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes queued (the viewer's end subtracts what it takes).
    queued: Arc<AtomicUsize>,
    /// Cancelled when the viewer is dropped for not keeping up.
    dropped: CancellationToken,
    /// The bound beyond [`VIEWER_QUEUE_BYTES`]: [`PENDING_QUEUE_BYTES`] until the viewer's
    /// end has its key frame, then what had piled up by then.
    allowance: Arc<AtomicUsize>,
}

impl ViewerQueue {
    /// Queues `messages`; `false` when the viewer is gone or has fallen too far behind (it
    /// is then dropped: `dropped` tells it why its queue closed).
    fn deliver(&self, messages: Vec<Bytes>) -> bool {
        let len: usize = messages.iter().map(Bytes::len).sum();
        let bound = VIEWER_QUEUE_BYTES + self.allowance.load(Ordering::Relaxed);
        if self.queued.load(Ordering::Relaxed) + len > bound {
            self.dropped.cancel();
            return false;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        messages
            .into_iter()
            .all(|message| self.tx.send(message).is_ok())
    }
}

/// What a joined viewer receives: its key frame, then its queue, and why it closed.
pub struct Ticket {
    frame: tokio::sync::oneshot::Receiver<Vec<Bytes>>,
    queue: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
    allowance: Arc<AtomicUsize>,
    dropped: CancellationToken,
}

impl Share {
    /// A share with its worker running; `None` when no thread can be started. Called within
    /// the daemon's runtime (key frames are encoded on its blocking pool).
    pub fn start() -> Option<Arc<Self>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let unshareable = Arc::new(AtomicBool::new(false));
        let (jobs, rx) = mpsc::channel(OUTPUT_QUEUE);
        let (input, input_rx) = mpsc::channel(INPUT_QUEUE);
        let worker = Worker {
            runtime,
            unshareable: unshareable.clone(),
            display: Some(zt_display::DeferredDisplay::new(
                zt_display::Display::new(zt_display::DisplayLimits::default()),
                zt_display::DEFAULT_BUDGET,
            )),
            viewers: Vec::new(),
            joining: Vec::new(),
            at_frame_end: true,
        };
        std::thread::Builder::new()
            .name("zt-share".into())
            .spawn(move || worker.run(rx))
            .map_err(|error| tracing::warn!(%error, "no thread for live sharing"))
            .ok()?;
        Some(Arc::new(Self {
            jobs,
            input,
            input_rx: Mutex::new(Some(input_rx)),
            notes: Mutex::new(Vec::new()),
            closed: CancellationToken::new(),
            present: tokio::sync::watch::Sender::new(0),
            ended: Mutex::new(None),
            unshareable,
        }))
    }

    /// Hands the owner's output to the worker (waits while it is behind).
    pub(super) async fn output(&self, instructions: Vec<Instruction>) {
        if !instructions.is_empty() {
            let _ = self.jobs.send(Job::Output(instructions)).await;
        }
    }

    /// The viewers' input, for the owner's connection (taken once).
    pub(super) fn take_input(&self) -> Option<mpsc::Receiver<Bytes>> {
        self.input_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Where viewers' joins and departures are noted: the owner's recordings.
    pub(super) fn add_notes(&self, notes: Notes) {
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(notes);
    }

    /// The owner's connection is over: its viewers' queues close, the worker stops.
    /// The viewers still present hear it and leave; their departures are noted before this
    /// returns (bounded), so the owner's recording holds them.
    pub async fn close(&self, reason: EndReason, origin: Option<Origin>) {
        self.ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert((reason, origin));
        self.closed.cancel();
        let _ = self.jobs.send(Job::Close).await;
        self.viewers_left().await;
    }

    /// Waits (at most half a second) until every viewer that joined has noted its
    /// departure: a session that ends its viewers waits for this before its connection and
    /// recordings end.
    pub async fn viewers_left(&self) {
        let mut present = self.present.subscribe();
        let _ = tokio::time::timeout(FAREWELL_GRACE, present.wait_for(|n| *n == 0)).await;
    }

    /// Whether viewers can still be shown the screen.
    pub fn is_shareable(&self) -> bool {
        !self.unshareable.load(Ordering::Relaxed)
    }

    /// Whether the owner's connection is over.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled() || self.jobs.is_closed()
    }

    /// A viewer's end when the owner's connection ended: the owner's reason.
    fn end(&self) -> ViewerEnd {
        let ended = *self.ended.lock().unwrap_or_else(|e| e.into_inner());
        let (reason, origin) = ended.unwrap_or((EndReason::TargetClosed, Some(Origin::Target)));
        ViewerEnd::new(reason, origin, "the session's connection ended".to_owned())
    }

    fn note(&self, event: &AuditEvent) {
        for notes in &*self.notes.lock().unwrap_or_else(|e| e.into_inner()) {
            match notes {
                Notes::Graphical(sink) => sink.note(event),
                Notes::Typescript(sink) => sink.note(event),
            }
        }
    }

    async fn join(&self, clipboard: bool) -> Option<Ticket> {
        if self.is_closed() {
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = ViewerQueue {
            tx,
            queued: Arc::default(),
            dropped: CancellationToken::new(),
            allowance: Arc::new(AtomicUsize::new(PENDING_QUEUE_BYTES)),
        };
        let (frame, frame_rx) = tokio::sync::oneshot::channel();
        let ticket = Ticket {
            frame: frame_rx,
            queue: rx,
            queued: queue.queued.clone(),
            allowance: queue.allowance.clone(),
            dropped: queue.dropped.clone(),
        };
        self.jobs
            .send(Job::Join(Joining {
                queue,
                frame,
                clipboard,
            }))
            .await
            .ok()?;
        Some(ticket)
    }
}

/// The share's thread.
struct Worker {
    /// Where key frames are encoded (its blocking pool).
    runtime: tokio::runtime::Handle,
    /// Set when the model fails.
    unshareable: Arc<AtomicBool>,
    display: Option<zt_display::DeferredDisplay>,
    viewers: Vec<Attached>,
    joining: Vec<Joining>,
    /// Whether the output so far ends with a frame (`sync`): viewers join at a frame's end,
    /// so the screen they are shown is one the owner saw.
    at_frame_end: bool,
}

struct Attached {
    queue: ViewerQueue,
    filter: ViewerFilter,
}

impl Worker {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.blocking_recv() {
            match job {
                Job::Output(instructions) => self.output(&instructions),
                Job::Join(joining) => {
                    self.joining.push(joining);
                    if self.at_frame_end {
                        self.admit();
                    }
                }
                Job::Close => return,
            }
        }
    }

    /// A batch of the owner's output. Viewers waiting to join are attached at its last frame
    /// end (`sync`): what precedes it is in their key frame, what follows reaches them live.
    fn output(&mut self, instructions: &[Instruction]) {
        let frame_end = if self.joining.is_empty() {
            None
        } else {
            instructions.iter().rposition(|i| i.is(opcode::SYNC))
        };
        match frame_end {
            Some(at) => {
                let (frame, rest) = instructions.split_at(at + 1);
                self.forward(frame);
                self.admit();
                self.forward(rest);
            }
            None => self.forward(instructions),
        }
        if let Some(last) = instructions.last() {
            self.at_frame_end = last.is(opcode::SYNC);
        }
    }

    /// Output to the viewers attached, and into the model.
    fn forward(&mut self, instructions: &[Instruction]) {
        if instructions.is_empty() {
            return;
        }
        self.viewers.retain_mut(|viewer| {
            let messages = pack(
                instructions
                    .iter()
                    .filter(|i| viewer.filter.pass(i))
                    .map(Instruction::raw),
            );
            viewer.queue.deliver(messages)
        });
        if let Some(display) = &mut self.display {
            for instruction in instructions {
                display.handle(instruction);
            }
        }
    }

    /// Attaches the viewers waiting, with the screen of now (the end of a frame), unless an
    /// image is being streamed (its blobs would reach them without its start).
    fn admit(&mut self) {
        let Some(display) = &mut self.display else {
            // The model degraded: nobody can be shown the screen (the joining hear why).
            self.joining.clear();
            return;
        };
        if display.image_streaming() {
            return;
        }
        display.flush();
        let model = display.display();
        if model.is_degraded() {
            // As the recording's model: once its pixels cannot be trusted, no key frame is.
            tracing::warn!("the shared display model degraded; no more viewers can join");
            self.unshareable.store(true, Ordering::Relaxed);
            self.display = None;
            return self.admit();
        }
        if !model.key_frame_ready() && model.size() != (0, 0) {
            // Not at a point a key frame can be taken: the next frame's end.
            return;
        }
        // Taking the snapshot is cheap; encoding it is not, and happens on a blocking
        // thread while the output goes on: what follows reaches the viewers' queues meanwhile,
        // and their key frames go ahead of it.
        // Nothing drawn yet: the viewer starts from an empty screen, as the owner did.
        let snapshot = (model.size() != (0, 0)).then(|| model.snapshot());
        let mut frames = Vec::new();
        for joining in self.joining.drain(..) {
            frames.push(joining.frame);
            self.viewers.push(Attached {
                queue: joining.queue,
                filter: ViewerFilter::new(joining.clipboard),
            });
        }
        let encode = move || {
            let frame = snapshot.map_or_else(Vec::new, |s| key_frame_messages(&s.encode()));
            for to in frames {
                let _ = to.send(frame.clone());
            }
        };
        // Dropped unfinished only when the runtime shuts down: the viewers end then anyway.
        drop(self.runtime.spawn_blocking(encode));
    }
}

/// Whole instructions cut into messages of at most [`zt_connection::MAX_MESSAGE`] bytes (a
/// larger instruction goes alone).
fn pack<'a>(instructions: impl Iterator<Item = &'a Bytes>) -> Vec<Bytes> {
    let mut messages = Vec::new();
    let mut current = BytesMut::new();
    for raw in instructions {
        if !current.is_empty() && current.len() + raw.len() > zt_connection::MAX_MESSAGE {
            messages.push(current.split().freeze());
        }
        current.extend_from_slice(raw);
    }
    if !current.is_empty() {
        messages.push(current.freeze());
    }
    messages
}

/// An encoded key frame as messages.
fn key_frame_messages(frame: &[u8]) -> Vec<Bytes> {
    let mut decoder = Decoder::new(Limits::default());
    decoder.feed(frame);
    let mut raws = Vec::new();
    while let Ok(Some(instruction)) = decoder.poll_instruction() {
        raws.push(instruction.into_raw());
    }
    pack(raws.iter())
}

/// What of the owner's output one viewer receives.
#[derive(Debug)]
struct ViewerFilter {
    clipboard: bool,
    /// Streams whose blobs reach the viewer.
    streams: HashSet<String>,
}

impl ViewerFilter {
    fn new(clipboard: bool) -> Self {
        Self {
            clipboard,
            streams: HashSet::new(),
        }
    }

    fn pass(&mut self, instruction: &Instruction) -> bool {
        let stream = || instruction.arg(0).unwrap_or_default().to_owned();
        match instruction.opcode() {
            opcode::IMG => {
                self.streams.insert(stream());
                true
            }
            opcode::CLIPBOARD if self.clipboard => {
                self.streams.insert(stream());
                true
            }
            opcode::BLOB => self
                .streams
                .contains(instruction.arg(0).unwrap_or_default()),
            opcode::END => self.streams.remove(instruction.arg(0).unwrap_or_default()),
            opcode::CLIPBOARD
            | opcode::AUDIO
            | opcode::VIDEO
            | opcode::FILE
            | opcode::PIPE
            | opcode::ARGV
            | opcode::ACK
            | opcode::BODY
            | opcode::FILESYSTEM
            | opcode::UNDEFINE
            | opcode::REQUIRED
            | opcode::ERROR
            | opcode::DISCONNECT
            | opcode::READY
            | opcode::ARGS
            | "msg" => false,
            _ => true,
        }
    }
}

/// Everything a viewer's connection needs.
pub struct ViewerContext {
    /// The session watched.
    pub session: String,
    /// The viewer's id.
    pub viewer: String,
    /// Who watches.
    pub user: String,
    /// Whether its input reaches the target.
    pub input: bool,
    /// Whether it receives the clipboard.
    pub clipboard: bool,
    /// The watched session's share.
    pub share: Arc<Share>,
    /// Audit log.
    pub audit: Arc<AuditLog>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The viewer's own counters (and idle clock).
    pub stats: Arc<SessionStats>,
    /// Cancelled when the viewer's session ends.
    pub cancel: CancellationToken,
}

/// How a viewer's connection ended.
#[derive(Debug, Clone)]
pub struct ViewerEnd {
    /// Why.
    pub reason: EndReason,
    /// Who caused it.
    pub origin: Option<Origin>,
    /// A secret-free detail.
    pub detail: Option<String>,
    /// What the viewer's client is told, when not what an owner would be.
    told: Option<(&'static str, zt_guac::Status)>,
}

impl ViewerEnd {
    fn new(reason: EndReason, origin: Option<Origin>, detail: impl Into<Option<String>>) -> Self {
        Self {
            reason,
            origin,
            detail: detail.into(),
            told: None,
        }
    }
}

/// Runs a viewer's Guacamole connection until it ends: its client's handshake, the screen
/// of the moment, the live output; its input to the owner's connection when it may type.
/// `end_reason` tells, when the viewer's session is cancelled from outside, why.
pub async fn run_viewer(
    ctx: ViewerContext,
    mut reader: StreamReader,
    mut writer: StreamWriter,
    end_reason: impl Fn() -> EndReason,
) -> ViewerEnd {
    let handshake = tokio::select! {
        () = ctx.cancel.cancelled() => Err(ViewerEnd::new(end_reason(), None, None)),
        done = tokio::time::timeout(
            VIEWER_HANDSHAKE_TIMEOUT,
            viewer_handshake(&mut reader, &mut writer),
        ) => done.unwrap_or_else(|_| Err(ViewerEnd::new(
            EndReason::Error,
            Some(Origin::Client),
            "client handshake timed out".to_owned(),
        ))),
    };
    if let Err(end) = handshake {
        return farewell(writer, end).await;
    }
    let Some(ticket) = ctx.share.join(ctx.clipboard).await else {
        let end = ViewerEnd::new(
            EndReason::TargetClosed,
            Some(Origin::Target),
            "the session's connection is over".to_owned(),
        );
        return farewell(writer, end).await;
    };
    let mut ready = BytesMut::new();
    zt_guac::encode(opcode::READY, &[format!("${}", ctx.viewer)], &mut ready);
    if writer.send(ready.freeze()).await.is_err() {
        return ViewerEnd::new(EndReason::ClientClosed, Some(Origin::Client), None);
    }
    let joined = AuditEvent::ViewerJoined {
        session: ctx.session.clone(),
        viewer: ctx.viewer.clone(),
        user: ctx.user.clone(),
        input: ctx.input,
        clipboard: ctx.clipboard,
    };
    ctx.share.note(&joined);
    ctx.share.present.send_modify(|n| *n += 1);
    ctx.audit.emit(joined);
    tracing::info!(viewer = %ctx.viewer, input = ctx.input, "viewer joined");

    let counts = Arc::new(ViewerCounts::default());
    let stop = CancellationToken::new();
    let mut sender = tokio::spawn(send_output(
        writer,
        (ticket.frame, ticket.queue, ticket.queued, ticket.allowance),
        stop.clone(),
        counts.clone(),
        ctx.stats.clone(),
        ctx.metrics.clone(),
    ));
    let mut decoder = Decoder::new(Limits::default());
    let mut pressed = HashSet::new();
    // The output task's writer, once it has finished (it is awaited only once).
    let mut finished: Option<Option<StreamWriter>> = None;
    let end = loop {
        tokio::select! {
            () = ctx.cancel.cancelled() => break ViewerEnd::new(end_reason(), None, None),
            () = ctx.share.closed.cancelled() => break ctx.share.end(),
            () = ticket.dropped.cancelled() => {
                ctx.metrics.error(Origin::Client, "viewer_too_slow");
                break ViewerEnd {
                    told: Some(("Viewer too slow", zt_guac::Status::CLIENT_TIMEOUT)),
                    ..ViewerEnd::new(
                        EndReason::Error,
                        Some(Origin::Client),
                        "the viewer did not keep up with the session".to_owned(),
                    )
                };
            }
            done = &mut sender => {
                finished = Some(done.ok());
                break if ctx.share.is_closed() {
                    ctx.share.end()
                } else if ctx.share.unshareable.load(Ordering::Relaxed) {
                    ViewerEnd::new(
                        EndReason::Error,
                        Some(Origin::Local),
                        "the session's screen cannot be shown (its display model failed)"
                            .to_owned(),
                    )
                } else {
                    ViewerEnd::new(EndReason::ClientClosed, Some(Origin::Client), None)
                };
            }
            message = reader.recv() => {
                let Ok(Some(bytes)) = message else {
                    break ViewerEnd::new(EndReason::ClientClosed, Some(Origin::Client), None);
                };
                ctx.stats.touch();
                match viewer_input(&mut decoder, &bytes, &ctx, &counts, &mut pressed) {
                    Ok(None) => {}
                    // The owner's connection takes it, unless it is over or the viewer ends.
                    Ok(Some(input)) => tokio::select! {
                        sent = ctx.share.input.send(input) => if sent.is_err() {
                            break ctx.share.end();
                        },
                        () = ctx.cancel.cancelled() => {
                            break ViewerEnd::new(end_reason(), None, None);
                        }
                        () = ctx.share.closed.cancelled() => break ctx.share.end(),
                    },
                    Err(end) => break end,
                }
            }
        }
    };
    stop.cancel();
    // Keys the viewer still holds are released on the target.
    if !pressed.is_empty() {
        let mut release = BytesMut::new();
        for keysym in &pressed {
            zt_guac::encode(opcode::KEY, &[keysym.as_str(), "0"], &mut release);
        }
        let _ = ctx.share.input.try_send(release.freeze());
    }
    let left = AuditEvent::ViewerLeft {
        session: ctx.session.clone(),
        viewer: ctx.viewer.clone(),
        user: ctx.user.clone(),
        reason: end.reason,
        detail: end.detail.clone(),
        bytes_to_client: counts.bytes.load(Ordering::Relaxed),
        inputs_forwarded: counts.forwarded.load(Ordering::Relaxed),
        inputs_dropped: counts.dropped.load(Ordering::Relaxed),
    };
    ctx.share.note(&left);
    ctx.share.present.send_modify(|n| *n = n.saturating_sub(1));
    ctx.audit.emit(left);
    tracing::info!(viewer = %ctx.viewer, reason = end.reason.as_str(), "viewer left");
    let writer = match finished {
        Some(writer) => writer,
        None => tokio::time::timeout(FAREWELL_GRACE, sender)
            .await
            .ok()
            .and_then(Result::ok),
    };
    match writer {
        Some(writer) => farewell(writer, end).await,
        // Its channel is stuck: nothing more reaches the client.
        None => end,
    }
}

#[derive(Debug, Default)]
struct ViewerCounts {
    bytes: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// The viewer's client's handshake, answered as the owner's is (guacd's server side).
async fn viewer_handshake(
    reader: &mut StreamReader,
    writer: &mut StreamWriter,
) -> Result<(), ViewerEnd> {
    let violation = |detail: String| ViewerEnd::new(EndReason::Error, Some(Origin::Client), detail);
    let mut decoder = Decoder::new(Limits::default());
    let mut handshake = ClientHandshake::new();
    loop {
        let Ok(Some(bytes)) = reader.recv().await else {
            return Err(ViewerEnd::new(
                EndReason::ClientClosed,
                Some(Origin::Client),
                None,
            ));
        };
        decoder.feed(&bytes);
        loop {
            let instruction = match decoder.poll_instruction() {
                Ok(Some(instruction)) => instruction,
                Ok(None) => break,
                Err(error) => return Err(violation(format!("malformed instruction: {error}"))),
            };
            match handshake.handle(&instruction) {
                Ok(Step::Reply(reply)) => {
                    if writer.send(Bytes::from(reply)).await.is_err() {
                        return Err(ViewerEnd::new(
                            EndReason::ClientClosed,
                            Some(Origin::Client),
                            None,
                        ));
                    }
                }
                Ok(Step::Continue) => {}
                // What the client sends after `connect` (its first `sync`s) is dropped.
                Ok(Step::Done(_)) => return Ok(()),
                Err(error) => return Err(violation(format!("handshake: {error}"))),
            }
        }
    }
}

/// The viewer's input that may reach the target (`key` and `mouse` of a viewer given
/// `input`), as whole instructions.
fn viewer_input(
    decoder: &mut Decoder,
    bytes: &[u8],
    ctx: &ViewerContext,
    counts: &ViewerCounts,
    pressed: &mut HashSet<String>,
) -> Result<Option<Bytes>, ViewerEnd> {
    decoder.feed(bytes);
    let mut forward = BytesMut::new();
    loop {
        let instruction = match decoder.poll_instruction() {
            Ok(Some(instruction)) => instruction,
            Ok(None) => break,
            Err(error) => {
                ctx.metrics.error(Origin::Client, "guacamole_protocol");
                return Err(ViewerEnd::new(
                    EndReason::Error,
                    Some(Origin::Client),
                    format!("viewer sent a malformed instruction: {error}"),
                ));
            }
        };
        if instruction.is(opcode::DISCONNECT) {
            return Err(ViewerEnd::new(
                EndReason::ClientClosed,
                Some(Origin::Client),
                None,
            ));
        }
        if instruction.is(opcode::KEY) || instruction.is(opcode::MOUSE) {
            if ctx.input {
                counts.forwarded.fetch_add(1, Ordering::Relaxed);
                forward.extend_from_slice(instruction.raw());
                if let (true, Some(keysym)) = (instruction.is(opcode::KEY), instruction.arg(0)) {
                    if instruction.arg(1) == Some("1") {
                        // Bounded: a client pressing ever more keys is a protocol error.
                        if pressed.len() < MAX_PRESSED {
                            pressed.insert(keysym.to_owned());
                        }
                    } else {
                        pressed.remove(keysym);
                    }
                }
            } else {
                counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok((!forward.is_empty()).then(|| forward.freeze()))
}

/// Moves the viewer's queue to its client until the queue closes (the owner's connection
/// ended, or the viewer was dropped), the client's channel fails, or `stop`.
async fn send_output(
    mut writer: StreamWriter,
    (frame, mut queue, queued, allowance): (
        tokio::sync::oneshot::Receiver<Vec<Bytes>>,
        mpsc::UnboundedReceiver<Bytes>,
        Arc<AtomicUsize>,
        Arc<AtomicUsize>,
    ),
    stop: CancellationToken,
    counts: Arc<ViewerCounts>,
    stats: Arc<SessionStats>,
    metrics: Arc<Metrics>,
) -> StreamWriter {
    // The screen of the moment the viewer joined, first.
    let frame = tokio::select! {
        () = stop.cancelled() => return writer,
        frame = frame => frame,
    };
    let Ok(frame) = frame else {
        return writer;
    };
    // What piled up while the key frame was encoded is not the viewer's fault.
    allowance.store(queued.load(Ordering::Relaxed), Ordering::Relaxed);
    // A write is never interrupted (a QUIC write cut short would leave half an instruction
    // before the farewell): `stop` is looked at between messages.
    for message in frame {
        if stop.is_cancelled() {
            return writer;
        }
        let n = message.len() as u64;
        if writer.send(message).await.is_err() {
            return writer;
        }
        counts.bytes.fetch_add(n, Ordering::Relaxed);
        stats.count_to_client(&metrics, n);
    }
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return writer,
            message = queue.recv() => message,
        };
        let Some(message) = message else {
            return writer;
        };
        let now = queued
            .fetch_sub(message.len(), Ordering::Relaxed)
            .saturating_sub(message.len());
        // The backlog of the key frame's encoding drains: the bound tightens with it.
        allowance.fetch_min(now, Ordering::Relaxed);
        let n = message.len() as u64;
        if writer.send(message).await.is_err() {
            return writer;
        }
        counts.bytes.fetch_add(n, Ordering::Relaxed);
        stats.count_to_client(&metrics, n);
        stats.touch();
    }
}

/// Tells the viewer's client why it ends (bounded), and closes its channel.
async fn farewell(mut writer: StreamWriter, end: ViewerEnd) -> ViewerEnd {
    let mut told = zt_connection::ConnectionEnd::new(end.reason, end.origin, end.detail.clone());
    if let Some((message, status)) = end.told {
        told.status = Some(status);
        told = told.with_message(Some(message.to_owned()));
    }
    let bytes = zt_connection::farewell(&told);
    let _ = tokio::time::timeout(FAREWELL_GRACE, async {
        let _ = writer.send(bytes).await;
        writer.close().await;
    })
    .await;
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instruction(op: &str, args: &[&str]) -> Instruction {
        Instruction::new(op, args)
    }

    #[test]
    fn a_viewer_sees_drawing_and_images_but_not_the_owners_streams() {
        let mut filter = ViewerFilter::new(false);
        assert!(filter.pass(&instruction("size", &["0", "640", "480"])));
        assert!(filter.pass(&instruction(
            "img",
            &["3", "14", "0", "image/png", "0", "0"]
        )));
        assert!(filter.pass(&instruction("blob", &["3", "AAAA"])));
        assert!(!filter.pass(&instruction("clipboard", &["4", "text/plain"])));
        assert!(!filter.pass(&instruction("blob", &["4", "c2VjcmV0"])));
        assert!(!filter.pass(&instruction("end", &["4"])));
        assert!(filter.pass(&instruction("end", &["3"])));
        // The stream is over: a late blob on its index is not the image's.
        assert!(!filter.pass(&instruction("blob", &["3", "AAAA"])));
        assert!(!filter.pass(&instruction("file", &["5", "application/pdf", "x.pdf"])));
        assert!(!filter.pass(&instruction("ack", &["6", "OK", "0"])));
        assert!(!filter.pass(&instruction("audio", &["7", "audio/L16"])));
        assert!(!filter.pass(&instruction("disconnect", &[])));
        assert!(filter.pass(&instruction("sync", &["1234"])));
        assert!(filter.pass(&instruction("mouse", &["10", "20"])));
    }

    #[test]
    fn a_viewer_given_the_clipboard_receives_it() {
        let mut filter = ViewerFilter::new(true);
        assert!(filter.pass(&instruction("clipboard", &["4", "text/plain"])));
        assert!(filter.pass(&instruction("blob", &["4", "aGVsbG8="])));
        assert!(filter.pass(&instruction("end", &["4"])));
    }

    #[test]
    fn messages_hold_whole_instructions_within_the_limit() {
        let raws: Vec<Bytes> = (0..100)
            .map(|_| Bytes::from(vec![b'x'; 1000]))
            .chain(std::iter::once(Bytes::from(vec![b'y'; 70_000])))
            .collect();
        let messages = pack(raws.iter());
        let total: usize = messages.iter().map(Bytes::len).sum();
        assert_eq!(total, 170_000);
        assert!(
            messages[..messages.len() - 1]
                .iter()
                .all(|m| m.len() <= zt_connection::MAX_MESSAGE && m.len() % 1000 == 0)
        );
        assert_eq!(messages.last().map(Bytes::len), Some(70_000));
    }

    #[test]
    fn a_viewer_that_stops_reading_is_dropped_and_told_why() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let queue = ViewerQueue {
            tx,
            queued: Arc::default(),
            dropped: CancellationToken::new(),
            allowance: Arc::new(AtomicUsize::new(PENDING_QUEUE_BYTES)),
        };
        // While the key frame is encoded, up to 16 MiB more may pile up.
        let big = || vec![Bytes::from(vec![0; PENDING_QUEUE_BYTES])];
        assert!(queue.deliver(big()));
        // The viewer's end took its key frame with 16 MiB waiting: 4 MiB more, no further.
        queue
            .allowance
            .store(PENDING_QUEUE_BYTES, Ordering::Relaxed);
        let half = || vec![Bytes::from(vec![0; VIEWER_QUEUE_BYTES / 2])];
        assert!(queue.deliver(half()));
        assert!(queue.deliver(half()));
        assert!(!queue.dropped.is_cancelled());
        assert!(!queue.deliver(vec![Bytes::from_static(b"1")]));
        assert!(queue.dropped.is_cancelled());
    }
}
