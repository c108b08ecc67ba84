//! The connection state machine: [`Connection`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use zt_api::control::{EndReason, Origin};
use zt_guac::{Decoder, Instruction, Limits, Status, opcode};
use zt_guacd::{ClientInfo, ClientSync, SyncSettings, SyncTracker};

use crate::batch::MessageBatcher;
use crate::end::{ConnectionEnd, disconnect_bytes, farewell, status_text};
use crate::filter::{Filter, FilterEvent, Verdict};
use crate::handshake::{ClientHandshake, Step};
use crate::policy::ConnectionPolicy;

/// Largest message sent to the client (below the SCTP maximum of 64 KiB, so a data channel
/// carries it whole).
pub const MAX_MESSAGE: usize = 60 * 1024;
/// Default [`Settings::client_high_water`].
pub const CLIENT_HIGH_WATER: usize = 256 * 1024;
/// Default [`Settings::record_batch`].
pub const RECORD_BATCH: usize = 256 * 1024;
/// Default [`Settings::record_delay`].
pub const RECORD_DELAY: Duration = Duration::from_millis(20);
/// Default [`Settings::handshake_timeout`].
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// What a [`Connection`] is set up with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The session's id: the client's `ready` carries it.
    pub session: String,
    /// The policy the [`Filter`] enforces.
    pub policy: ConnectionPolicy,
    /// How long the client may take from its first byte to `connect`.
    pub handshake_timeout: Duration,
    /// When the backend's `sync`s are answered for a slow client, and `nop`s sent.
    pub sync: SyncSettings,
    /// Limits on the instructions of both sides.
    pub limits: Limits,
    /// Largest message handed to the client.
    pub max_message: usize,
    /// Output queued for the client above which the backend is not read (flow control).
    pub client_high_water: usize,
    /// Output collected before it is handed to the recording.
    pub record_batch: usize,
    /// Longest that output waits, collected, for a hand-over to the recording.
    pub record_delay: Duration,
    /// The backend's name in details (`guacd`, `terminal`).
    pub backend: &'static str,
    /// The error counter for the backend's protocol violations (`guacd_protocol`).
    pub backend_metric: &'static str,
    /// The backend audits file transfers itself ([`Filter::with_backend_audits_files`]).
    pub backend_audits_files: bool,
}

impl Settings {
    /// The defaults for `session`, enforcing `policy`, with guacd as the backend.
    pub fn new(session: impl Into<String>, policy: ConnectionPolicy) -> Self {
        Self {
            session: session.into(),
            policy,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            sync: SyncSettings::default(),
            limits: Limits::default(),
            max_message: MAX_MESSAGE,
            client_high_water: CLIENT_HIGH_WATER,
            record_batch: RECORD_BATCH,
            record_delay: RECORD_DELAY,
            backend: "guacd",
            backend_metric: "guacd_protocol",
            backend_audits_files: false,
        }
    }
}

/// What the driver hears from a [`Connection`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The client's handshake is complete. Start the recording
    /// ([`Connection::start_recording`]), open the backend for this display, then call
    /// [`Connection::backend_ready`] (or [`Connection::abort`] if it fails).
    HandshakeComplete(ClientInfo),
    /// The backend's first `sync`: the target is up.
    TargetUp,
    /// The client left a `sync` unanswered; ztproxy answered it for the client.
    KeepAlive {
        /// How far the client is behind.
        lag: Duration,
    },
    /// The filter allowed a transfer or refused something (for the audit log).
    Filter(FilterEvent),
    /// The connection is over; nothing else follows. Send what
    /// [`poll_transmit`](Connection::poll_transmit) and
    /// [`poll_backend_transmit`](Connection::poll_backend_transmit) still give (bounded),
    /// hand over the last [`Record`]s, then close both sides.
    Ended(ConnectionEnd),
}

/// What goes into the graphical recording, in order.
#[derive(Debug)]
pub enum Record {
    /// Messages sent to the client, exactly as sent, and the instructions in them that
    /// come from the backend (for the recording's display model).
    Output {
        /// Instructions for the display model.
        instructions: Vec<Instruction>,
        /// The client's messages.
        messages: Vec<Bytes>,
    },
    /// The client's `key` and `mouse` input (with `recording-include-keys`).
    Input(Bytes),
}

/// Bytes relayed since the last [`Connection::take_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Backend instructions forwarded to the client.
    pub to_client: u64,
    /// Client input forwarded to the backend.
    pub to_target: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's `connect`.
    Handshake { deadline: Option<Instant> },
    /// The driver opens the backend.
    Opening,
    /// Instructions flow both ways.
    Relay,
    /// Over.
    Closed,
}

/// One Guacamole connection between a user's client and a backend, without I/O.
///
/// The driver feeds it the client's bytes ([`handle_client`](Self::handle_client)), the
/// backend's bytes ([`handle_backend`](Self::handle_backend), or straight into
/// [`backend_buffer`](Self::backend_buffer)), and the time
/// ([`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout)); it
/// sends what [`poll_transmit`](Self::poll_transmit) gives to the client and what
/// [`poll_backend_transmit`](Self::poll_backend_transmit) gives to the backend, hands
/// [`poll_record`](Self::poll_record) to the recording, and acts on
/// [`poll_event`](Self::poll_event). It reads the backend only while
/// [`wants_backend_input`](Self::wants_backend_input).
///
/// The connection owns the client's handshake (as guacd's server side), the policy
/// [`Filter`], the `sync` keep-alive of a slow client ([`SyncTracker`]), the cutting of
/// output into the client's messages and into the recording's batches, and the farewell
/// (`error` and `disconnect`) that tells the client why it ends.
#[derive(Debug)]
pub struct Connection {
    settings: Settings,
    phase: Phase,
    handshake: ClientHandshake,
    from_client: Decoder,
    from_backend: Decoder,
    backend_closed: bool,
    filter: Filter,
    sync: SyncTracker,
    target_up: bool,
    out: MessageBatcher,
    to_backend: BytesMut,
    /// `Some(include_input)` once the recording has started.
    recording: Option<bool>,
    /// Instructions in output not yet handed to the recording.
    recorded: Vec<Instruction>,
    /// When they are handed over at the latest.
    record_due: Option<Instant>,
    records: VecDeque<Record>,
    events: VecDeque<Event>,
    counts: Counts,
}

impl Connection {
    /// A connection waiting for the client's handshake, which must complete within
    /// [`Settings::handshake_timeout`] of `now`.
    pub fn new(settings: Settings, now: Instant) -> Self {
        let mut sync = settings.sync;
        sync.max_pending = sync.max_pending.max(1);
        Self {
            phase: Phase::Handshake {
                deadline: now.checked_add(settings.handshake_timeout),
            },
            handshake: ClientHandshake::new(),
            from_client: Decoder::new(settings.limits),
            from_backend: Decoder::new(settings.limits),
            backend_closed: false,
            filter: Filter::new(settings.policy.clone())
                .with_backend_audits_files(settings.backend_audits_files),
            sync: SyncTracker::new(sync),
            target_up: false,
            out: MessageBatcher::new(settings.max_message),
            to_backend: BytesMut::new(),
            recording: None,
            recorded: Vec::new(),
            record_due: None,
            records: VecDeque::new(),
            events: VecDeque::new(),
            counts: Counts::default(),
            settings,
        }
    }

    // ---- inputs ----

    /// Bytes from the client (a message or a chunk; instructions may span them).
    pub fn handle_client(&mut self, now: Instant, bytes: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        self.from_client.feed(bytes);
        match self.phase {
            Phase::Handshake { .. } => self.client_handshake(),
            Phase::Relay => self.client_input(now),
            Phase::Opening | Phase::Closed => {}
        }
    }

    /// The client's channel closed.
    pub fn handle_client_closed(&mut self) {
        self.end(ConnectionEnd::new(EndReason::ClientClosed, Some(Origin::Client), None).told());
    }

    /// Room for at least `additional` bytes from the backend, read straight into the
    /// decoder (the instructions it returns share these bytes); then call
    /// [`handle_backend_read`](Self::handle_backend_read).
    pub fn backend_buffer(&mut self, additional: usize) -> &mut impl bytes::BufMut {
        self.from_backend.read_buffer(additional)
    }

    /// Bytes were read into [`backend_buffer`](Self::backend_buffer).
    pub fn handle_backend_read(&mut self, now: Instant) {
        self.pump(now);
    }

    /// Bytes from the backend: whole or partial Guacamole instructions.
    pub fn handle_backend(&mut self, now: Instant, bytes: &[u8]) {
        self.from_backend.feed(bytes);
        self.pump(now);
    }

    /// The backend closed its side (what it sent before still reaches the client).
    pub fn handle_backend_closed(&mut self, now: Instant) {
        self.backend_closed = true;
        self.pump(now);
    }

    /// The recording has started: from now on output is handed to it in batches, and with
    /// `include_input` the client's `key` and `mouse` input too.
    pub fn start_recording(&mut self, include_input: bool) {
        if self.phase == Phase::Closed {
            return;
        }
        self.out.record();
        self.recording = Some(include_input);
    }

    /// The backend is open: the client gets `ready`, and instructions flow both ways.
    pub fn backend_ready(&mut self, now: Instant) {
        if self.phase != Phase::Opening {
            return;
        }
        let mut ready = BytesMut::new();
        zt_guac::encode(
            opcode::READY,
            &[format!("${}", self.settings.session)],
            &mut ready,
        );
        self.out.push_unrecorded(ready.freeze());
        self.phase = Phase::Relay;
        // What the client sent after its `connect`, then what the backend sent after its
        // handshake.
        self.client_input(now);
        self.pump(now);
    }

    /// Ends the connection from outside: the session ended (revocation, a timeout,
    /// shutdown), the backend could not be opened, the recording failed.
    pub fn abort(&mut self, end: ConnectionEnd) {
        self.end(end);
    }

    /// Ends the connection because the session ended for `reason`.
    pub fn close(&mut self, reason: EndReason) {
        self.end(ConnectionEnd::new(reason, None, None));
    }

    /// Input of a viewer allowed to type (live sharing): whole `key` and `mouse`
    /// instructions. They pass the policy filter as the owner's do (a read-only session
    /// drops them) and are recorded with `recording-include-keys`; anything else is ignored.
    /// A viewer never resizes the display, answers `sync`s or opens streams.
    pub fn handle_shared_input(&mut self, now: Instant, bytes: &[u8]) {
        if self.phase != Phase::Relay {
            return;
        }
        let include_input = self.recording == Some(true);
        if include_input {
            self.flush_output();
        }
        let mut decoder = Decoder::new(self.settings.limits);
        decoder.feed(bytes);
        let mut forward = BytesMut::new();
        while let Ok(Some(instruction)) = decoder.poll_instruction() {
            if !(instruction.is(opcode::KEY) || instruction.is(opcode::MOUSE)) {
                continue;
            }
            if matches!(
                self.filter.from_client(&instruction),
                Verdict::Forward | Verdict::ForwardUnrecorded
            ) {
                forward.extend_from_slice(instruction.raw());
            }
        }
        if forward.is_empty() {
            return;
        }
        self.counts.to_target += forward.len() as u64;
        self.to_backend.extend_from_slice(&forward);
        self.sync.sent_to_guacd(now);
        if include_input {
            self.records.push_back(Record::Input(forward.freeze()));
        }
    }

    /// Handles the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Handshake {
                deadline: Some(deadline),
            } if now >= deadline => {
                self.end(ConnectionEnd::new(
                    EndReason::Error,
                    Some(Origin::Client),
                    "client handshake timed out".to_owned(),
                ));
            }
            Phase::Relay => {
                if self.record_due.is_some_and(|due| now >= due) {
                    self.flush_output();
                }
                if let Some(timestamp) = self.sync.poll_keepalive(now) {
                    zt_guac::encode(opcode::SYNC, &[timestamp.to_string()], &mut self.to_backend);
                    self.sync.sent_to_guacd(now);
                    self.events.push_back(Event::KeepAlive {
                        lag: self.sync.lag(now),
                    });
                }
                if self.sync.poll_nop(now) {
                    zt_guac::encode(opcode::NOP, &[] as &[&str], &mut self.to_backend);
                    self.sync.sent_to_guacd(now);
                }
            }
            _ => {}
        }
    }

    // ---- outputs ----

    /// The next message for the client. Taking it makes room: backend input held back by
    /// flow control is processed.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        let message = self.out.next_message()?;
        if self.phase == Phase::Relay && self.from_backend.buffered_len() > 0 {
            self.pump(now);
        }
        Some(message)
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has a message.
    pub fn has_transmit(&self) -> bool {
        self.out.has_message()
    }

    /// Bytes for the backend: whole instructions.
    pub fn poll_backend_transmit(&mut self) -> Option<Bytes> {
        (!self.to_backend.is_empty()).then(|| self.to_backend.split().freeze())
    }

    /// The next batch for the recording. The driver hands each over before it reads more
    /// from the backend, so a recording that falls behind slows the backend down.
    pub fn poll_record(&mut self) -> Option<Record> {
        self.records.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Handshake { deadline } => deadline,
            Phase::Relay => match (self.record_due, self.sync.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            Phase::Opening | Phase::Closed => None,
        }
    }

    /// Whether the driver should read the backend now.
    pub fn wants_backend_input(&self) -> bool {
        self.phase == Phase::Relay
            && !self.backend_closed
            && self.out.pending_bytes() < self.settings.client_high_water
    }

    /// Bytes relayed since the last call.
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }

    /// Whether the connection has ended ([`Event::Ended`] was queued).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Output queued for the client, in bytes.
    pub fn pending_client_bytes(&self) -> usize {
        self.out.pending_bytes()
    }

    // ---- internals ----

    fn client_handshake(&mut self) {
        let violation =
            |detail: String| ConnectionEnd::new(EndReason::Error, Some(Origin::Client), detail);
        loop {
            let instruction = match self.from_client.poll_instruction() {
                Ok(Some(instruction)) => instruction,
                Ok(None) => return,
                Err(error) => {
                    return self.end(violation(format!("malformed instruction: {error}")));
                }
            };
            match self.handshake.handle(&instruction) {
                Ok(Step::Reply(bytes)) => self.out.push_unrecorded(Bytes::from(bytes)),
                Ok(Step::Continue) => {}
                Ok(Step::Done(display)) => {
                    self.phase = Phase::Opening;
                    self.events.push_back(Event::HandshakeComplete(display));
                    return;
                }
                Err(error) => return self.end(violation(format!("handshake: {error}"))),
            }
        }
    }

    /// Everything decoded from the client, through the filter to the backend.
    fn client_input(&mut self, now: Instant) {
        let include_input = self.recording == Some(true);
        if include_input {
            // The output so far goes first, so the input sits where it arrived.
            self.flush_output();
        }
        let mut forward = BytesMut::new();
        let mut input = BytesMut::new();
        let mut end = None;
        loop {
            let instruction = match self.from_client.poll_instruction() {
                Ok(Some(instruction)) => instruction,
                Ok(None) => break,
                Err(error) => {
                    end = Some(
                        ConnectionEnd::new(
                            EndReason::Error,
                            Some(Origin::Client),
                            format!("client sent a malformed instruction: {error}"),
                        )
                        .counted("guacamole_protocol"),
                    );
                    break;
                }
            };
            if instruction.is(opcode::SYNC) {
                let Some(timestamp) = instruction.arg(0).and_then(|t| t.parse::<u64>().ok()) else {
                    continue;
                };
                if self.sync.client_sync(timestamp, now) == ClientSync::Forward {
                    forward.extend_from_slice(instruction.raw());
                }
                continue;
            }
            if instruction.is(opcode::DISCONNECT) {
                end = Some(ConnectionEnd::new(
                    EndReason::ClientClosed,
                    Some(Origin::Client),
                    None,
                ));
                break;
            }
            match self.filter.from_client(&instruction) {
                Verdict::Forward | Verdict::ForwardUnrecorded => {
                    if include_input
                        && (instruction.is(opcode::KEY) || instruction.is(opcode::MOUSE))
                    {
                        input.extend_from_slice(instruction.raw());
                    }
                    forward.extend_from_slice(instruction.raw());
                }
                Verdict::Replace(bytes) => forward.extend_from_slice(&bytes),
                Verdict::Drop => {}
            }
            if let Some(reply) = self.filter.take_to_client() {
                self.out.push(&reply);
            }
            self.take_filter_events();
        }
        self.counts.to_target += forward.len() as u64;
        if !forward.is_empty() {
            self.to_backend.extend_from_slice(&forward);
            self.sync.sent_to_guacd(now);
        }
        if !input.is_empty() {
            self.records.push_back(Record::Input(input.freeze()));
        }
        match end {
            Some(end) => self.end(end),
            // Replies ztproxy sent the client itself (acks of refused streams) are recorded.
            None => self.arm_record(now),
        }
    }

    /// Everything the backend sent that is decoded, as far as the client can take.
    fn pump(&mut self, now: Instant) {
        if self.phase != Phase::Relay {
            return;
        }
        while self.out.pending_bytes() < self.settings.client_high_water {
            let instruction = match self.from_backend.poll_instruction() {
                Ok(Some(instruction)) => instruction,
                Ok(None) => break,
                Err(error) => {
                    let end = ConnectionEnd::new(
                        EndReason::Error,
                        Some(Origin::Target),
                        format!("{} protocol violation: {error}", self.settings.backend),
                    )
                    .counted(self.settings.backend_metric);
                    return self.end(end);
                }
            };
            if !self.backend_instruction(now, instruction) {
                return;
            }
        }
        if self.out.unrecorded_bytes() >= self.settings.record_batch {
            self.flush_output();
        } else {
            self.arm_record(now);
        }
        if self.backend_closed && self.from_backend.buffered_len() == 0 {
            self.end(ConnectionEnd::new(
                EndReason::TargetClosed,
                Some(Origin::Target),
                None,
            ));
        }
    }

    /// One instruction from the backend; `false` when it ended the connection.
    fn backend_instruction(&mut self, now: Instant, instruction: Instruction) -> bool {
        if instruction.is(opcode::SYNC) {
            if let Some(timestamp) = instruction.arg(0).and_then(|t| t.parse::<u64>().ok()) {
                self.sync.server_sync(timestamp, now);
                if !self.target_up {
                    self.target_up = true;
                    self.events.push_back(Event::TargetUp);
                }
            }
        } else if instruction.is(opcode::ERROR) {
            let status = instruction
                .arg(1)
                .and_then(|s| s.parse::<u32>().ok())
                .map_or(Status::SERVER_ERROR, Status::new);
            // The client hears the backend's own error, then the disconnect.
            self.out.push(instruction.raw());
            self.record(instruction);
            let disconnect = disconnect_bytes();
            self.out.push(&disconnect);
            if let Some(disconnect) = decode_one(&disconnect) {
                self.record(disconnect);
            }
            let detail = format!(
                "{} error, status {}",
                self.settings.backend,
                status_text(status)
            );
            self.end(ConnectionEnd::backend_error(detail, Some(status)).told());
            return false;
        } else if instruction.is(opcode::DISCONNECT) {
            self.out.push(instruction.raw());
            self.record(instruction);
            self.end(ConnectionEnd::new(EndReason::TargetClosed, None, None).told());
            return false;
        }
        match self.filter.from_server(&instruction) {
            Verdict::Forward => {
                self.counts.to_client += instruction.len() as u64;
                self.out.push(instruction.raw());
                self.record(instruction);
            }
            Verdict::ForwardUnrecorded => {
                self.counts.to_client += instruction.len() as u64;
                self.out.push_private(instruction.raw());
            }
            Verdict::Replace(bytes) => {
                self.out.push(&bytes);
                if let Some(replacement) = decode_one(&bytes) {
                    self.record(replacement);
                }
            }
            Verdict::Drop => {}
        }
        if let Some(reply) = self.filter.take_to_server() {
            self.to_backend.extend_from_slice(&reply);
            self.sync.sent_to_guacd(now);
        }
        self.take_filter_events();
        true
    }

    fn take_filter_events(&mut self) {
        while let Some(event) = self.filter.poll_event() {
            self.events.push_back(Event::Filter(event));
        }
    }

    fn record(&mut self, instruction: Instruction) {
        if self.recording.is_some() {
            self.recorded.push(instruction);
        }
    }

    /// Sets the hand-over time if output waits for one.
    fn arm_record(&mut self, now: Instant) {
        if self.record_due.is_none() && self.out.unrecorded_bytes() > 0 {
            self.record_due = now.checked_add(self.settings.record_delay);
        }
    }

    /// Hands what was sent to the client to the recording: the client's messages as they
    /// are, with the instructions in them for the display model.
    fn flush_output(&mut self) {
        self.record_due = None;
        let messages = self.out.take_recorded();
        let instructions = std::mem::take(&mut self.recorded);
        if self.recording.is_some() && !messages.is_empty() {
            self.records.push_back(Record::Output {
                instructions,
                messages,
            });
        }
    }

    fn end(&mut self, end: ConnectionEnd) {
        if self.phase == Phase::Closed {
            return;
        }
        // The backend hears the user leave, unless the backend ended it.
        if self.phase == Phase::Relay
            && end.origin != Some(Origin::Target)
            && end.reason != EndReason::TargetClosed
        {
            self.to_backend.extend_from_slice(&disconnect_bytes());
        }
        // Why the connection ends goes to the client after what was already due, and into
        // the recording like everything else the client is sent.
        if !end.told_client {
            self.out.push(&farewell(&end));
        }
        self.flush_output();
        self.phase = Phase::Closed;
        self.events.push_back(Event::Ended(end));
    }
}

fn decode_one(bytes: &[u8]) -> Option<Instruction> {
    let mut decoder = Decoder::new(Limits::default());
    decoder.feed(bytes);
    decoder.poll_instruction().ok().flatten()
}
