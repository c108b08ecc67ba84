//! The recording writer the proxy uses: a non-blocking handle in front of a dedicated thread
//! that encrypts and writes.
//!
//! ```text
//!  session task ──append()──▶ bounded queue ──▶ writer thread: encode ─ seal ─ write ─ fsync
//!   (never blocks)          (events + bytes)         │ flush partial chunk ≤ 1 s after data
//!        ▲                                           │ finalise when the handle is finished
//!        └── Err(QueueFull / Failed) ◀── status ◀────┘ failure callback, once
//! ```
//!
//! `append` only checks the event and tries to put it on a bounded queue: it never touches
//! the disk and never waits. When the queue is full (the disk is slower than the session) the
//! event is dropped, `append` returns [`AppendError::QueueFull`], and a gap marker with the
//! number of dropped events and bytes is recorded before the next event that fits, so the
//! recording itself says where it is incomplete. `try_append` instead hands the event back.
//! When writing fails (disk full, I/O error) the thread stops, calls the failure callback
//! once, and every later `append` returns [`AppendError::Failed`]. The proxy decides from
//! either signal whether to end the session (fail closed) or carry on.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::encoder::{EncodeError, RecordingEncoder, RecordingStats, check_event};
use crate::error::{AppendError, CreateError, TryAppendError, WriterFailure};
use crate::format::{
    DEFAULT_CHUNK_SIZE, Event, FieldError, HeaderDigest, HeaderFields, KEYFRAME_INTERVAL,
    MAX_KEY_WRAPS, RecordingId, RecordingKind, Size,
};
use crate::keys::{
    IdentityKey, RecipientPublicKey, RecordingKey, ResourceSecret, WrapError, wrap_for_recipient,
    wrap_for_resource,
};

/// Called once, on the writer thread, when the writer fails. Keep it short and
/// non-blocking (set a flag, send on a channel, notify a task).
pub type FailureCallback = Box<dyn Fn(&WriterFailure) + Send + 'static>;

/// Everything needed to start a recording.
#[non_exhaustive]
pub struct WriterConfig {
    /// Typescript or graphical.
    pub kind: RecordingKind,
    /// The proxy's session id (at most 255 bytes).
    pub session_id: String,
    /// The resource id; bound into the resource key derivation (at most 255 bytes).
    pub resource_id: String,
    /// The session's protocol (at most 255 bytes).
    pub protocol: String,
    /// Initial terminal size (typescript) or display size (graphical); zero if unknown.
    pub size: Size,
    /// Record [`Event::Input`] (`recording-include-keys`); off by default.
    pub include_input: bool,
    /// Wall-clock start written into the header.
    pub start_time: SystemTime,
    /// Wrap the recording key under this resource secret.
    pub resource_secret: Option<Arc<ResourceSecret>>,
    /// Also wrap the recording key to these auditors' X25519 keys.
    pub recipients: Vec<RecipientPublicKey>,
    /// Sign the manifest with this identity key.
    pub identity: Option<Arc<IdentityKey>>,
    /// Largest chunk plaintext, [`crate::format::MIN_CHUNK_SIZE`] to
    /// [`crate::format::MAX_CHUNK_SIZE`].
    pub chunk_size: u32,
    /// Longest time buffered events wait before they are sealed and written (at most 1 s).
    pub flush_interval: Duration,
    /// Most events waiting in the queue.
    pub queue_events: usize,
    /// Most payload bytes waiting in the queue (one larger event is accepted when the queue
    /// is empty).
    pub queue_bytes: usize,
    /// `fdatasync` after each timed flush and at the end, so a power loss (not only a crash)
    /// loses at most the last flush interval.
    pub sync_on_flush: bool,
    /// Told when the writer fails.
    pub on_failure: Option<FailureCallback>,
}

impl WriterConfig {
    /// A configuration with the defaults: 64 KiB chunks, flush every second, a queue of
    /// [`DEFAULT_QUEUE_EVENTS`] events and [`DEFAULT_QUEUE_BYTES`] bytes, sync on flush, no
    /// input, no keys (set at least `resource_secret` or `recipients`).
    pub fn new(
        kind: RecordingKind,
        session_id: impl Into<String>,
        resource_id: impl Into<String>,
        protocol: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            session_id: session_id.into(),
            resource_id: resource_id.into(),
            protocol: protocol.into(),
            size: Size::default(),
            include_input: false,
            start_time: SystemTime::now(),
            resource_secret: None,
            recipients: Vec::new(),
            identity: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            flush_interval: MAX_FLUSH_INTERVAL,
            queue_events: DEFAULT_QUEUE_EVENTS,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            sync_on_flush: true,
            on_failure: None,
        }
    }
}

impl std::fmt::Debug for WriterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterConfig")
            .field("kind", &self.kind)
            .field("session_id", &self.session_id)
            .field("resource_id", &self.resource_id)
            .field("protocol", &self.protocol)
            .field("include_input", &self.include_input)
            .field("resource_secret", &self.resource_secret.is_some())
            .field("recipients", &self.recipients)
            .field("identity", &self.identity.is_some())
            .field("chunk_size", &self.chunk_size)
            .field("flush_interval", &self.flush_interval)
            .finish_non_exhaustive()
    }
}

/// The state [`RecordingWriter::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterStatus {
    /// Recording.
    Recording,
    /// The writer stopped; nothing more is recorded.
    Failed(WriterFailure),
}

/// A recording being written. Not `Clone`: finishing it finalises the file.
///
/// Dropping the handle without [`RecordingWriter::finish`] also finalises the recording,
/// on the writer thread, without waiting for it.
pub struct RecordingWriter {
    tx: Option<SyncSender<Queued>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<RecordingStats, WriterFailure>>>,
    started: Instant,
    kind: RecordingKind,
    includes_input: bool,
    queue_bytes: usize,
    recording_id: RecordingId,
    last_key_frame_us: AtomicU64,
    changed_since_key_frame: AtomicBool,
}

struct Queued {
    at_us: u64,
    event: Event,
    bytes: usize,
}

#[derive(Default)]
struct Shared {
    failure: Mutex<Option<WriterFailure>>,
    failed: AtomicBool,
    queued_bytes: AtomicUsize,
    dropped_events: AtomicU64,
    dropped_bytes: AtomicU64,
}

impl Shared {
    fn failure(&self) -> Option<WriterFailure> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_failure(&self, failure: WriterFailure) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure);
        self.failed.store(true, Ordering::Release);
    }

    fn note_dropped(&self, bytes: usize) {
        self.dropped_events.fetch_add(1, Ordering::Relaxed);
        self.dropped_bytes
            .fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

impl RecordingWriter {
    /// Creates the recording file at `path` (it must not exist; mode 0600), writes the
    /// header and starts the writer thread. This does blocking I/O once; call it where
    /// blocking is acceptable (from an async runtime, inside `spawn_blocking`).
    pub fn create(path: impl AsRef<Path>, config: WriterConfig) -> Result<Self, CreateError> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path)?;
        Self::start(Sink::File(FileSink::new(file)), config)
    }

    /// Like [`Self::create`], writing to any sink (a pipe, a socket, a test double).
    pub fn with_writer(
        out: impl Write + Send + 'static,
        config: WriterConfig,
    ) -> Result<Self, CreateError> {
        Self::start(Sink::Other(Box::new(out)), config)
    }

    fn start(mut sink: Sink, mut config: WriterConfig) -> Result<Self, CreateError> {
        if config.flush_interval.is_zero() || config.flush_interval > MAX_FLUSH_INTERVAL {
            return Err(CreateError::BadFlushInterval);
        }
        let key = RecordingKey::generate().map_err(|_| CreateError::NoRandomness)?;
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|_| CreateError::NoRandomness)?;
        let fields = HeaderFields {
            recording_id: RecordingId(id),
            kind: config.kind,
            includes_input: config.include_input && config.kind == RecordingKind::Typescript,
            start_unix_micros: config
                .start_time
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            chunk_size: config.chunk_size,
            size: config.size,
            session_id: config.session_id.clone(),
            resource_id: config.resource_id.clone(),
            protocol: config.protocol.clone(),
            identity: config.identity.as_ref().map(|k| k.public_key().to_bytes()),
        };
        let (prefix, context) = fields.encode_prefix().map_err(field_error)?;
        let mut wraps = Vec::new();
        if let Some(secret) = &config.resource_secret {
            wraps.push(
                wrap_for_resource(&key, secret, &config.resource_id, &context)
                    .map_err(|_| CreateError::NoRandomness)?,
            );
        }
        for recipient in &config.recipients {
            if wraps.len() == MAX_KEY_WRAPS {
                return Err(CreateError::TooManyKeyWraps);
            }
            wraps.push(
                wrap_for_recipient(&key, recipient, &context).map_err(|e| match e {
                    WrapError::BadRecipient => CreateError::BadRecipient,
                    WrapError::NoRandomness => CreateError::NoRandomness,
                })?,
            );
        }
        if wraps.is_empty() {
            return Err(CreateError::NoKeyWrap);
        }
        let header = HeaderFields::encode(&prefix, &wraps).map_err(field_error)?;
        let digest = HeaderDigest(Sha256::digest(&header).into());
        sink.write_all(&header)?;
        sink.flush()?;
        let encoder = RecordingEncoder::new(
            &key,
            digest,
            fields.kind,
            fields.includes_input,
            fields.chunk_size,
            u64::try_from(header.len()).unwrap_or(u64::MAX),
        );
        // The sealer holds its own key schedule (zeroised when the writer ends); the raw
        // key is not needed past this point.
        drop(key);

        let (tx, rx) = mpsc::sync_channel(config.queue_events.max(1));
        let shared = Arc::new(Shared::default());
        let started = Instant::now();
        let driver = Driver {
            started,
            rx,
            sink,
            encoder,
            identity: config.identity.take(),
            shared: Arc::clone(&shared),
            flush_interval: config.flush_interval,
            sync: config.sync_on_flush,
        };
        let on_failure = config.on_failure.take();
        let thread = std::thread::Builder::new()
            .name("zt-recorder".into())
            .spawn(move || driver.run(on_failure))?;
        Ok(Self {
            tx: Some(tx),
            shared,
            thread: Some(thread),
            started,
            kind: fields.kind,
            includes_input: fields.includes_input,
            queue_bytes: config.queue_bytes,
            recording_id: fields.recording_id,
            last_key_frame_us: AtomicU64::new(0),
            changed_since_key_frame: AtomicBool::new(false),
        })
    }

    /// The time since the recording's start of `instant` (zero for an instant before it),
    /// for [`Self::append_at`] with the time something happened rather than now.
    pub fn time_of(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.started)
    }

    /// The id written into the header.
    pub fn recording_id(&self) -> RecordingId {
        self.recording_id
    }

    /// Records `event` now. Never blocks. On a full queue the event is dropped (and a gap
    /// marker recorded later); see the module docs.
    pub fn append(&self, event: Event) -> Result<(), AppendError> {
        self.append_at(self.started.elapsed(), event)
    }

    /// Records `event` at `at` after the start of the recording (times that go backwards
    /// are raised to the previous event's time). Never blocks.
    pub fn append_at(&self, at: Duration, event: Event) -> Result<(), AppendError> {
        match self.try_append_at(at, event) {
            Ok(()) => Ok(()),
            Err(TryAppendError::Full(event)) => {
                self.shared.note_dropped(event.payload_len());
                Err(AppendError::QueueFull)
            }
            Err(TryAppendError::Rejected(e)) => Err(e),
        }
    }

    /// Like [`Self::append`], but a full queue hands the event back and records nothing as
    /// lost, for callers that can wait and retry.
    pub fn try_append(&self, event: Event) -> Result<(), TryAppendError> {
        self.try_append_at(self.started.elapsed(), event)
    }

    /// Like [`Self::append_at`], but a full queue hands the event back.
    pub fn try_append_at(&self, at: Duration, event: Event) -> Result<(), TryAppendError> {
        if matches!(event, Event::Gap { .. }) {
            return Err(AppendError::WrongKind { kind: self.kind }.into());
        }
        check_event(self.kind, self.includes_input, &event).map_err(|e| match e {
            EncodeError::InputNotRecorded => AppendError::InputNotRecorded,
            EncodeError::EventTooLarge => AppendError::EventTooLarge {
                len: event.payload_len(),
            },
            _ => AppendError::WrongKind { kind: self.kind },
        })?;
        if let Some(failure) = self.shared.failure() {
            return Err(AppendError::Failed(failure).into());
        }
        let at_us = u64::try_from(at.as_micros()).unwrap_or(u64::MAX);
        // A pending gap marker goes first, so it sits where the loss happened.
        if !self.send_gap(at_us) {
            return Err(TryAppendError::Full(event));
        }
        let bytes = event.payload_len();
        let queued = self.shared.queued_bytes.load(Ordering::Relaxed);
        if queued > 0 && queued.saturating_add(bytes) > self.queue_bytes {
            return Err(TryAppendError::Full(event));
        }
        let is_key_frame = matches!(event, Event::KeyFrame(_));
        match self.send(Queued {
            at_us,
            event,
            bytes,
        }) {
            Ok(()) => {
                if is_key_frame {
                    self.last_key_frame_us.fetch_max(at_us, Ordering::Relaxed);
                    self.changed_since_key_frame.store(false, Ordering::Relaxed);
                } else {
                    self.changed_since_key_frame.store(true, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(TrySendError::Full(q)) => Err(TryAppendError::Full(q.event)),
            Err(TrySendError::Disconnected(_)) => Err(AppendError::Failed(
                self.shared.failure().unwrap_or(WriterFailure::WriterGone),
            )
            .into()),
        }
    }

    fn send(&self, item: Queued) -> Result<(), TrySendError<Queued>> {
        let Some(tx) = &self.tx else {
            return Err(TrySendError::Disconnected(item));
        };
        let bytes = item.bytes;
        self.shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        tx.try_send(item).inspect_err(|_| {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        })
    }

    /// Queues the gap marker for events dropped so far; false if it does not fit either.
    fn send_gap(&self, at_us: u64) -> bool {
        let events = self.shared.dropped_events.swap(0, Ordering::Relaxed);
        let bytes = self.shared.dropped_bytes.swap(0, Ordering::Relaxed);
        if events == 0 && bytes == 0 {
            return true;
        }
        let gap = Queued {
            at_us,
            event: Event::Gap { events, bytes },
            bytes: 0,
        };
        if self.send(gap).is_ok() {
            return true;
        }
        self.shared
            .dropped_events
            .fetch_add(events, Ordering::Relaxed);
        self.shared
            .dropped_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        false
    }

    /// For graphical recordings: whether the display has changed and the last key frame
    /// (or the start) is at least [`KEYFRAME_INTERVAL`] old, so the proxy should append a
    /// [`Event::KeyFrame`] now.
    pub fn keyframe_due(&self) -> bool {
        self.keyframe_due_at(self.started.elapsed())
    }

    /// [`Self::keyframe_due`] at a given time since the start (for callers using
    /// [`Self::append_at`]).
    pub fn keyframe_due_at(&self, at: Duration) -> bool {
        let at_us = u64::try_from(at.as_micros()).unwrap_or(u64::MAX);
        let interval = u64::try_from(KEYFRAME_INTERVAL.as_micros()).unwrap_or(u64::MAX);
        self.kind == RecordingKind::Graphical
            && self.changed_since_key_frame.load(Ordering::Relaxed)
            && at_us.saturating_sub(self.last_key_frame_us.load(Ordering::Relaxed)) >= interval
    }

    /// Whether the writer is still recording. Polling this is the alternative to the
    /// failure callback.
    pub fn status(&self) -> WriterStatus {
        match self.shared.failure() {
            None => WriterStatus::Recording,
            Some(f) => WriterStatus::Failed(f),
        }
    }

    /// Events dropped on a full queue and not yet recorded as a gap.
    pub fn pending_dropped_events(&self) -> u64 {
        self.shared.dropped_events.load(Ordering::Relaxed)
    }

    /// Finalises the recording (remaining events, final chunk with the seek index, signed
    /// manifest) and waits for the writer thread. Blocks on disk I/O: from an async
    /// runtime call it inside `spawn_blocking`.
    pub fn finish(mut self) -> Result<RecordingStats, WriterFailure> {
        self.tx = None;
        let Some(thread) = self.thread.take() else {
            return Err(WriterFailure::WriterGone);
        };
        thread.join().unwrap_or(Err(WriterFailure::WriterGone))
    }
}

impl Drop for RecordingWriter {
    fn drop(&mut self) {
        // Closing the queue tells the thread to drain it and finalise; it runs on detached.
        self.tx = None;
    }
}

impl std::fmt::Debug for RecordingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingWriter")
            .field("recording_id", &self.recording_id)
            .field("kind", &self.kind)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

enum Sink {
    File(FileSink),
    Other(Box<dyn Write + Send>),
}

impl Sink {
    fn has_staged(&self) -> bool {
        match self {
            Self::File(f) => f.has_staged(),
            Self::Other(_) => false,
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Self::File(f) => f.sync(),
            Self::Other(w) => w.flush(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::File(f) => f.write(buf),
            Self::Other(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::File(f) => f.flush(),
            Self::Other(w) => w.flush(),
        }
    }
}

/// A recording file. Nothing reads a recording back while it is being written, so its bytes
/// should not pass through, or stay in, the page cache: on a virtual machine filling fresh
/// page-cache pages costs more CPU than sealing the data.
///
/// Where the file system allows it (Linux, `O_DIRECT`), the sink collects the bytes in an
/// aligned *stage* in memory and writes whole [`DIRECT_ALIGN`] blocks straight to the
/// device. The stage starts at [`STAGE_MIN`] and doubles each time it fills, up to
/// [`STAGE_MAX`], so a quiet terminal session keeps a small buffer and a busy graphical one
/// writes a mebibyte at a time. A [`Write::flush`] (the writer's timed flush, at least once
/// a second, and the end of the recording) writes the whole blocks direct and the partial
/// last block through the page cache; the next direct write of that block overwrites it.
/// So, as before, a crash loses at most what arrived since the last timed flush.
///
/// Otherwise (another system, a file system that refuses `O_DIRECT`, or a direct write
/// that fails with `EINVAL`) the bytes go through the page cache *drop-behind*: every
/// [`DROP_BEHIND`] bytes the sink advises the kernel that it no longer needs the last two
/// such stretches (`POSIX_FADV_DONTNEED`), which starts writeback of the newer one and
/// frees the older one. Either way, after each sync everything synced is dropped from the
/// cache, so a recording keeps at most a few MiB there and pushes no other file's pages
/// out.
struct FileSink {
    file: File,
    /// Bytes accepted: the logical end of the file.
    written: u64,
    /// Everything below this was synced and dropped from the page cache.
    dropped: u64,
    mode: Mode,
}

enum Mode {
    /// `O_DIRECT` writes from an aligned stage.
    Direct(Stage),
    /// Page-cache writes, dropped behind; the ends of the last two stretches advised.
    Buffered { marks: [u64; 2] },
}

/// Bytes waiting for a direct write, in a window of memory aligned to [`DIRECT_ALIGN`]
/// (found with `align_offset` in a slightly larger vector, so without `unsafe`).
struct Stage {
    raw: Vec<u8>,
    /// Where the aligned window starts in `raw`.
    start: usize,
    /// The window's size, a multiple of [`DIRECT_ALIGN`].
    cap: usize,
    /// Bytes staged at the start of the window.
    len: usize,
    /// How many of them are in the file already (the partial block a flush wrote).
    in_file: usize,
    /// The file offset of the window's first byte, a multiple of [`DIRECT_ALIGN`].
    base: u64,
}

impl Stage {
    fn new(cap: usize, base: u64) -> Option<Self> {
        let raw = vec![0; cap + DIRECT_ALIGN];
        // `align_offset` may decline (usize::MAX); then there is no direct mode.
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN);
        (start < DIRECT_ALIGN).then_some(Self {
            raw,
            start,
            cap,
            len: 0,
            in_file: 0,
            base,
        })
    }

    /// The first `len` staged bytes.
    fn bytes(&self, len: usize) -> &[u8] {
        self.raw
            .get(self.start..self.start + len)
            .unwrap_or_default()
    }

    /// Stages as much of `buf` as fits; the count taken.
    fn push(&mut self, buf: &[u8]) -> usize {
        let n = buf.len().min(self.cap - self.len);
        let at = self.start + self.len;
        match (self.raw.get_mut(at..at + n), buf.get(..n)) {
            (Some(to), Some(from)) => {
                to.copy_from_slice(from);
                self.len += n;
                n
            }
            // Not reached: `len <= cap` and the window lies inside `raw`.
            _ => 0,
        }
    }

    /// Forgets the first `done` bytes (a multiple of [`DIRECT_ALIGN`]), written out.
    fn advance(&mut self, done: usize) {
        self.raw
            .copy_within(self.start + done..self.start + self.len, self.start);
        self.len -= done;
        self.in_file = self.in_file.saturating_sub(done);
        self.base += u64::try_from(done).unwrap_or(u64::MAX);
    }
}

impl FileSink {
    fn new(file: File) -> Self {
        let mode = match Stage::new(STAGE_MIN, 0) {
            Some(stage) if set_direct(&file, true).is_ok() => Mode::Direct(stage),
            _ => Mode::Buffered { marks: [0; 2] },
        };
        Self {
            file,
            written: 0,
            dropped: 0,
            mode,
        }
    }

    /// A sink that never tries `O_DIRECT` (tests of the fallback).
    #[cfg(test)]
    fn buffered(file: File) -> Self {
        Self {
            file,
            written: 0,
            dropped: 0,
            mode: Mode::Buffered { marks: [0; 2] },
        }
    }

    /// Whether bytes wait in memory, not yet in the file, for the next flush.
    fn has_staged(&self) -> bool {
        matches!(&self.mode, Mode::Direct(stage) if stage.len > stage.in_file)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        drop_pages(&self.file, self.dropped, self.written);
        self.dropped = self.written;
        Ok(())
    }

    /// Switches to page-cache writes for the rest of the file (everything staged is in the
    /// file already), dropping behind from the current end.
    fn write_buffered_from_here(&mut self) {
        self.mode = Mode::Buffered {
            marks: [self.written; 2],
        };
    }

    /// Writes the first `len` staged bytes (whole blocks) direct, or, if the file system
    /// refuses, switches to buffered writing and writes everything staged that way.
    fn write_stage(&mut self, len: usize) -> io::Result<()> {
        let Mode::Direct(stage) = &mut self.mode else {
            return Ok(());
        };
        match self.file.write_all_at(stage.bytes(len), stage.base) {
            Ok(()) => {
                stage.advance(len);
                Ok(())
            }
            Err(e) if refused(&e) => {
                tracing::debug!("the file system refused a direct write; writing buffered");
                set_direct(&self.file, false)?;
                self.file.write_all_at(stage.bytes(stage.len), stage.base)?;
                self.write_buffered_from_here();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.mode {
            Mode::Direct(stage) => {
                let n = stage.push(buf);
                if stage.len == stage.cap {
                    let cap = stage.cap;
                    let end = stage.base + u64::try_from(cap).unwrap_or(0);
                    self.write_stage(cap)?;
                    if let Mode::Direct(stage) = &mut self.mode
                        && cap < STAGE_MAX
                        && let Some(larger) = Stage::new(cap * 2, end)
                    {
                        *stage = larger;
                    }
                }
                n
            }
            Mode::Buffered { .. } => self.file.write_at(buf, self.written)?,
        };
        self.written = self
            .written
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        if let Mode::Buffered { marks } = &mut self.mode {
            let [older, newer] = *marks;
            if self.written.saturating_sub(newer) >= DROP_BEHIND {
                drop_pages(&self.file, older.max(self.dropped), self.written);
                *marks = [newer, self.written];
            }
        }
        Ok(n)
    }

    /// Writes everything staged: whole blocks direct, the partial last block through the
    /// page cache (it stays staged, and the next direct write rewrites its block).
    fn flush(&mut self) -> io::Result<()> {
        let Mode::Direct(stage) = &self.mode else {
            return Ok(());
        };
        let (len, blocks) = (stage.len, stage.len / DIRECT_ALIGN * DIRECT_ALIGN);
        if blocks > 0 {
            self.write_stage(blocks)?;
        }
        let Mode::Direct(stage) = &mut self.mode else {
            return Ok(());
        };
        // A partial block not yet in the file (a second flush with nothing new writes nothing).
        if len > blocks && stage.len > stage.in_file {
            set_direct(&self.file, false)?;
            self.file.write_all_at(stage.bytes(stage.len), stage.base)?;
            stage.in_file = stage.len;
            if set_direct(&self.file, true).is_err() {
                self.write_buffered_from_here();
            }
        }
        Ok(())
    }
}

/// Whether `e` is `EINVAL`: what a file system answers to a direct write it cannot do.
fn refused(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    return rustix::io::Errno::from_io_error(e) == Some(rustix::io::Errno::INVAL);
    #[cfg(not(target_os = "linux"))]
    return false;
}

/// Turns `O_DIRECT` on or off for `file` (Linux); elsewhere, fails.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
        let flags = fcntl_getfl(file)?;
        let flags = if on {
            flags | OFlags::DIRECT
        } else {
            flags - OFlags::DIRECT
        };
        Ok(fcntl_setfl(file, flags)?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, on);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Tells the kernel that the pages of `file` in `from..to` are not needed: dirty ones start
/// writeback, clean ones are freed. Advice only, so an error (a file system without it) is
/// ignored.
fn drop_pages(file: &File, from: u64, to: u64) {
    #[cfg(target_os = "linux")]
    if let Some(len) = std::num::NonZeroU64::new(to.saturating_sub(from)) {
        let _ = rustix::fs::fadvise(file, from, Some(len), rustix::fs::Advice::DontNeed);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, to);
}

struct Driver {
    /// The writer's time zero, which event times count from.
    started: Instant,
    rx: Receiver<Queued>,
    sink: Sink,
    encoder: RecordingEncoder,
    identity: Option<Arc<IdentityKey>>,
    shared: Arc<Shared>,
    flush_interval: Duration,
    sync: bool,
}

impl Driver {
    fn run(mut self, on_failure: Option<FailureCallback>) -> Result<RecordingStats, WriterFailure> {
        let result = self.drive();
        if let Err(failure) = &result {
            tracing::debug!(?failure, "recording writer failed");
            self.shared.set_failure(failure.clone());
            if let Some(callback) = on_failure {
                callback(failure);
            }
        }
        result
    }

    fn drive(&mut self) -> Result<RecordingStats, WriterFailure> {
        // When buffered events must be on disk by.
        let mut deadline: Option<Instant> = None;
        let mut last_flush = Instant::now();
        loop {
            let item = match deadline {
                None => self.rx.recv().ok(),
                Some(d) => match self
                    .rx
                    .recv_timeout(d.saturating_duration_since(Instant::now()))
                {
                    Ok(item) => Some(item),
                    Err(RecvTimeoutError::Timeout) => {
                        self.flush()?;
                        last_flush = Instant::now();
                        deadline = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                },
            };
            // A closed queue (finish or drop) means: finalise.
            let Some(item) = item else { break };
            self.shared
                .queued_bytes
                .fetch_sub(item.bytes, Ordering::Relaxed);
            match self
                .encoder
                .handle_event(item.at_us, &item.event, &mut self.sink)
            {
                Ok(()) => {}
                Err(EncodeError::Io(e)) => return Err(e.into()),
                Err(EncodeError::Seal(_)) => return Err(WriterFailure::ChunkLimit),
                // Checked before queueing; not reachable, and not worth failing a session.
                Err(e) => tracing::debug!(error = %e, "dropped an invalid event"),
            }
            let now = Instant::now();
            if !self.encoder.has_buffered() && !self.sink.has_staged() {
                deadline = None;
            } else if deadline.is_none() {
                deadline = Some(self.flush_deadline(item.at_us, now, last_flush));
            }
            if deadline.is_some_and(|d| now >= d) {
                self.flush()?;
                last_flush = Instant::now();
                deadline = None;
            }
        }
        let stats = self
            .encoder
            .finish(self.identity.as_deref(), &mut self.sink)
            .map_err(encode_failure)?;
        self.sink.sync()?;
        Ok(stats)
    }

    /// When the oldest buffered event, which happened at `at_us`, must be on disk: a flush
    /// interval after it happened (not after it reached this thread, which may be later
    /// under load), less [`FLUSH_MARGIN`] for the flush itself. Never later than a flush
    /// interval from now (event times a caller chose may lie ahead) and never sooner than
    /// [`MIN_FLUSH_SPACING`] after the last flush (nor do old event times flush every event).
    fn flush_deadline(&self, at_us: u64, now: Instant, last_flush: Instant) -> Instant {
        let budget = self.flush_interval.saturating_sub(FLUSH_MARGIN);
        let happened = self
            .started
            .checked_add(Duration::from_micros(at_us))
            .unwrap_or(now);
        let due = happened
            .checked_add(budget)
            .unwrap_or(now)
            .min(now + budget);
        due.max(last_flush + MIN_FLUSH_SPACING.min(budget))
    }

    fn flush(&mut self) -> Result<(), WriterFailure> {
        self.encoder.flush(&mut self.sink).map_err(encode_failure)?;
        if self.sync {
            self.sink.sync()?;
        }
        Ok(())
    }
}

fn encode_failure(e: EncodeError) -> WriterFailure {
    match e {
        EncodeError::Io(e) => e.into(),
        EncodeError::Seal(_) => WriterFailure::ChunkLimit,
        _ => WriterFailure::WriterGone,
    }
}

fn field_error(e: FieldError) -> CreateError {
    match e {
        FieldError::TooLong(field) => CreateError::FieldTooLong(field),
        FieldError::ChunkSize => CreateError::BadChunkSize,
        FieldError::WrapCount => CreateError::TooManyKeyWraps,
    }
}

/// Longest allowed flush interval, and the default: the design promises that a crash loses
/// at most the last second.
pub const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// What a timed flush leaves itself to seal, write and sync before the flush interval since
/// the oldest buffered event has passed.
const FLUSH_MARGIN: Duration = Duration::from_millis(200);
/// Timed flushes are at least this far apart.
const MIN_FLUSH_SPACING: Duration = Duration::from_millis(100);
/// How often, in bytes written, a recording file drops the pages behind it from the page
/// cache (see `FileSink`).
const DROP_BEHIND: u64 = 4 * 1024 * 1024;
/// The alignment of direct writes: memory, file offset and length (the largest logical
/// block size in common use).
const DIRECT_ALIGN: usize = 4096;
/// The first stage of a recording file written direct (see `FileSink`).
const STAGE_MIN: usize = 64 * 1024;
/// The largest stage: the memory a busy recording holds for its direct writes.
const STAGE_MAX: usize = 1024 * 1024;

/// Default queue length in events. At typical terminal rates (a few hundred events a
/// second) this is several seconds of slack for a stalled disk.
pub const DEFAULT_QUEUE_EVENTS: usize = 4096;
/// Default queue size in payload bytes; bounds the memory a stalled disk can pin per
/// recording.
pub const DEFAULT_QUEUE_BYTES: usize = 8 * 1024 * 1024;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;

    /// Writes a pattern in uneven pieces with flushes and syncs between them, the way the
    /// encoder does, and checks the file holds exactly the bytes, in order.
    fn write_pattern(sink: &mut FileSink, path: &Path) {
        let pattern: Vec<u8> = (0..5_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut rest = &pattern[..];
        let mut step = 1usize;
        let mut piece = 0;
        while !rest.is_empty() {
            step = (step * 7 + 13) % 200_000;
            let n = step.min(rest.len());
            sink.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
            piece += 1;
            match piece % 11 {
                3 => sink.flush().unwrap(),
                7 => {
                    sink.flush().unwrap();
                    sink.sync().unwrap();
                    // Everything accepted so far is in the file after a flush.
                    let len = std::fs::metadata(path).unwrap().len();
                    assert_eq!(len, sink.written, "file length after a flush");
                }
                _ => {}
            }
        }
        sink.flush().unwrap();
        sink.sync().unwrap();
        assert!(!sink.has_staged());
        assert!(std::fs::read(path).unwrap() == pattern, "file differs");
    }

    fn create(dir: &Path, name: &str) -> (File, std::path::PathBuf) {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        (file, path)
    }

    #[test]
    fn staged_direct_writes_keep_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (file, path) = create(dir.path(), "direct");
        let mut sink = FileSink::new(file);
        let direct = matches!(sink.mode, Mode::Direct(_));
        write_pattern(&mut sink, &path);
        if direct {
            // Still direct (the file system took the writes), with the stage grown.
            let Mode::Direct(stage) = &sink.mode else {
                panic!("fell back to buffered writes on a file system that took O_DIRECT")
            };
            assert_eq!(stage.cap, STAGE_MAX);
        } else {
            eprintln!("note: {} refuses O_DIRECT here", dir.path().display());
        }
    }

    #[test]
    fn buffered_writes_keep_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (file, path) = create(dir.path(), "buffered");
        write_pattern(&mut FileSink::buffered(file), &path);
    }

    #[test]
    fn a_stage_is_aligned() {
        for cap in [STAGE_MIN, STAGE_MAX] {
            let mut stage = Stage::new(cap, 0).unwrap();
            assert_eq!(stage.bytes(0).as_ptr() as usize % DIRECT_ALIGN, 0);
            // The whole aligned window lies inside the allocation: it takes `cap` bytes,
            // and no more, and gives them all back.
            assert_eq!(stage.push(&vec![7; cap + 1]), cap);
            assert_eq!(stage.bytes(cap).len(), cap);
            assert!(stage.bytes(cap).iter().all(|&b| b == 7));
        }
    }
}
