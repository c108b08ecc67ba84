//! Interactive connections: the Guacamole conversation between a user's client and a target,
//! through guacd.
//!
//! One connection per session, on the session's first Guacamole channel (a data channel or a
//! QUIC stream):
//!
//! 1. **Client handshake** ([`handshake`]): ztproxy answers the client as guacd would and
//!    takes only its display settings.
//! 2. **guacd handshake** ([`zt_guacd`]): ztproxy connects to the configured guacd, selects the
//!    session's protocol and sends the session's parameters (credentials, policy, and the
//!    session's target as `hostname`/`port`) in guacd's `args` order, then relays guacd's
//!    `ready` to the client. guacd sends `ready` before it reaches the target; its first
//!    `sync` says the target is up.
//! 3. **Relay**: instructions flow both ways through the policy [`filter`], the output is teed
//!    to the graphical [`recording`], and guacd's `sync`s are answered by ztproxy when the
//!    client is slow (guacd drops clients silent for 15 s).
//!
//! The connection ends when either side disconnects or closes, when guacd reports an `error`
//! (its status goes to the client and into the audit event; the origin is the target), on a
//! protocol violation by either side, when the session ends (revocation, timeouts: the client
//! gets an `error` with a Guacamole status and a `disconnect`, recorded like the rest of its
//! output), or when recording fails and the policy is to fail closed.

pub mod client_io;
pub mod filter;
pub mod handshake;
pub mod recording;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zt_api::Secret;
use zt_api::audit::AuditEvent;
use zt_api::control::{EndReason, Origin, Target};
use zt_guac::{Decoder, Instruction, Limits, Status, opcode};
use zt_guacd::{ClientInfo, ClientSync, SyncSettings, SyncTracker};

use crate::audit::AuditLog;
use crate::config::{GuacdSettings, RecordingsSettings};
use crate::metrics::Metrics;
use crate::policy::ConnectionPolicy;
use client_io::{ClientReader, ClientWriter, MAX_MESSAGE};
use filter::{Filter, FilterEvent, Verdict};
use handshake::{ClientHandshake, Step};
use recording::GraphicalRecording;

/// Bytes read from guacd at a time.
const READ_BUF: usize = 64 * 1024;
/// Output for the client held before ztproxy stops reading guacd (flow control).
const CLIENT_HIGH_WATER: usize = 256 * 1024;
/// Messages queued for either writer.
const WRITE_QUEUE: usize = 16;
/// Output collected before it is handed to the recording's worker: one hand-off (and
/// wake-up of the worker and of the writer) per this much, not per read from guacd.
const RECORD_BATCH: usize = 256 * 1024;
/// Longest that output waits, collected, for a hand-off to the recording's worker.
const RECORD_DELAY: Duration = Duration::from_millis(20);

/// Everything a connection needs from its session.
pub struct ConnectionContext {
    /// Session id (for audit and `ready`).
    pub session: String,
    /// The session's target (sent to guacd as `hostname`/`port`).
    pub target: Target,
    /// Protocol for guacd (`rdp`, `vnc`, `ssh`, `telnet`).
    pub protocol: String,
    /// The session's parameters (credentials and policy), passed to guacd.
    pub parameters: BTreeMap<String, Secret<String>>,
    /// The policy ztproxy enforces.
    pub policy: ConnectionPolicy,
    /// guacd settings.
    pub guacd: GuacdSettings,
    /// The recording the session asked for, and the settings to write it with.
    pub recording_plan: Option<(zt_api::control::RecordingRequest, Arc<RecordingsSettings>)>,
    /// The vault resource id (bound into the recording's key derivation).
    pub resource_id: String,
    /// Audit log.
    pub audit: Arc<AuditLog>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Byte counters and the idle clock of the session.
    pub stats: Arc<crate::session::SessionStats>,
    /// Recording file names, shown in `GET /v1/sessions`.
    pub recordings: Arc<std::sync::Mutex<Vec<String>>>,
    /// Cancelled when the session ends.
    pub cancel: CancellationToken,
    recording: Option<GraphicalRecording>,
    recording_fail_closed: bool,
}

impl ConnectionContext {
    /// A context; the recording (if planned) starts after the client's handshake.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        session: String,
        target: Target,
        protocol: String,
        parameters: BTreeMap<String, Secret<String>>,
        policy: ConnectionPolicy,
        guacd: GuacdSettings,
        recording_plan: Option<(zt_api::control::RecordingRequest, Arc<RecordingsSettings>)>,
        resource_id: String,
        audit: Arc<AuditLog>,
        metrics: Arc<Metrics>,
        stats: Arc<crate::session::SessionStats>,
        recordings: Arc<std::sync::Mutex<Vec<String>>>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            session,
            target,
            protocol,
            parameters,
            policy,
            guacd,
            recording_plan,
            resource_id,
            audit,
            metrics,
            stats,
            recordings,
            cancel,
            recording: None,
            recording_fail_closed: true,
        }
    }
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
    /// The recording, when there was one.
    pub recording: Option<recording::RecordingSummary>,
    /// The client already heard why (guacd's own `error` or `disconnect` was relayed), or
    /// its channel is gone.
    told_client: bool,
    /// guacd's status, when guacd reported the error (the client hears it).
    guacd_status: Option<Status>,
}

impl ConnectionEnd {
    fn new(reason: EndReason, origin: Option<Origin>, detail: impl Into<Option<String>>) -> Self {
        Self {
            reason,
            origin,
            detail: detail.into(),
            recording: None,
            told_client: false,
            guacd_status: None,
        }
    }

    fn told(mut self) -> Self {
        self.told_client = true;
        self
    }
}

/// Runs one connection until it ends. `end_reason` tells, when the session is cancelled from
/// outside, why (so the client hears the right status).
pub async fn run(
    mut ctx: ConnectionContext,
    mut reader: ClientReader,
    mut writer: ClientWriter,
    end_reason: impl Fn() -> EndReason,
) -> ConnectionEnd {
    let mut from_client = Decoder::new(Limits::default());
    let cancel = ctx.cancel.clone();
    let outcome = async {
        // 1. The client's handshake.
        let display = match tokio::time::timeout(
            ctx.guacd.handshake_timeout,
            client_handshake(&mut reader, &mut writer, &mut from_client),
        )
        .await
        {
            Ok(Ok(display)) => display,
            Ok(Err(end)) => return Err(end),
            Err(_) => {
                return Err(ConnectionEnd::new(
                    EndReason::Error,
                    Some(Origin::Client),
                    "client handshake timed out".to_owned(),
                ));
            }
        };

        // The recording starts with the conversation proper.
        start_recording(&mut ctx, &display).await?;

        // 2. guacd.
        let guacd = connect_guacd(&ctx, &display).await?;
        let mut ready = BytesMut::new();
        zt_guac::encode(opcode::READY, &[format!("${}", ctx.session)], &mut ready);
        writer
            .send(ready.freeze())
            .await
            .map_err(|_| ConnectionEnd::new(EndReason::ClientClosed, Some(Origin::Client), None))?;
        tracing::debug!(connection = %guacd.connection_id, "guacd ready");
        Ok(guacd)
    };
    let guacd = tokio::select! {
        result = outcome => result,
        () = cancel.cancelled() => Err(ConnectionEnd::new(end_reason(), None, None)),
    };
    let guacd = match guacd {
        Ok(guacd) => guacd,
        Err(end) => {
            // What the client is told is recorded too, when the recording has started (the
            // display model ignores `error` and `disconnect`, so it gets no instructions).
            let farewell = farewell(&end);
            if let Some(recording) = &mut ctx.recording {
                recording.output(Vec::new(), vec![farewell.clone()]).await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), writer.send(farewell)).await;
            writer.close().await;
            return finish_recording(ctx.recording.take(), end).await;
        }
    };

    // 3. Relay.
    let end = relay(&mut ctx, guacd, reader, writer, from_client, &end_reason).await;
    finish_recording(ctx.recording.take(), end).await
}

async fn start_recording(
    ctx: &mut ConnectionContext,
    display: &handshake::ClientDisplay,
) -> Result<(), ConnectionEnd> {
    let Some((request, settings)) = ctx.recording_plan.take() else {
        return Ok(());
    };
    ctx.recording_fail_closed = request.fail_closed.unwrap_or(settings.fail_closed);
    if !request.graphical {
        return Ok(());
    }
    match GraphicalRecording::start(
        &settings,
        &request,
        &ctx.session,
        &ctx.resource_id,
        &ctx.protocol,
        (display.width, display.height),
        ctx.policy.record_input,
        Arc::clone(&ctx.audit),
    )
    .await
    {
        Ok(recording) => {
            let file_name = recording.file_name().to_owned();
            ctx.recordings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(file_name.clone());
            ctx.audit.emit(AuditEvent::RecordingStarted {
                session: ctx.session.clone(),
                recording: file_name,
                kind: "graphical".into(),
            });
            ctx.recording = Some(recording);
            Ok(())
        }
        Err(error) => {
            tracing::warn!(%error, "recording could not start");
            ctx.metrics.error(Origin::Local, "recording");
            if ctx.recording_fail_closed {
                Err(ConnectionEnd::new(
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

async fn finish_recording(
    recording: Option<GraphicalRecording>,
    mut end: ConnectionEnd,
) -> ConnectionEnd {
    if let Some(recording) = recording {
        end.recording = Some(recording.finish().await);
    }
    end
}

async fn client_handshake(
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    decoder: &mut Decoder,
) -> Result<handshake::ClientDisplay, ConnectionEnd> {
    let mut handshake = ClientHandshake::new();
    let violation = |detail: &str| {
        ConnectionEnd::new(EndReason::Error, Some(Origin::Client), detail.to_owned())
    };
    loop {
        while let Some(instruction) = decoder
            .poll_instruction()
            .map_err(|e| violation(&format!("malformed instruction: {e}")))?
        {
            match handshake.handle(&instruction) {
                Ok(Step::Reply(bytes)) => writer.send(Bytes::from(bytes)).await.map_err(|_| {
                    ConnectionEnd::new(EndReason::ClientClosed, Some(Origin::Client), None)
                })?,
                Ok(Step::Continue) => {}
                Ok(Step::Done(display)) => return Ok(display),
                Err(error) => return Err(violation(&format!("handshake: {error}"))),
            }
        }
        match reader.recv().await {
            Ok(Some(bytes)) => decoder.feed(&bytes),
            _ => {
                return Err(ConnectionEnd::new(
                    EndReason::ClientClosed,
                    Some(Origin::Client),
                    None,
                ));
            }
        }
    }
}

async fn connect_guacd(
    ctx: &ConnectionContext,
    display: &handshake::ClientDisplay,
) -> Result<zt_guacd::GuacdConnection, ConnectionEnd> {
    let upstream =
        |detail: String| ConnectionEnd::new(EndReason::Error, Some(Origin::Target), detail);
    let addr = tokio::net::lookup_host(ctx.guacd.address.as_str())
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            upstream(format!(
                "guacd address {} does not resolve",
                ctx.guacd.address
            ))
        })?;
    let mut info = ClientInfo::new(display.width, display.height, display.dpi.unwrap_or(96));
    info.audio_mimetypes = display.audio.clone();
    info.video_mimetypes = display.video.clone();
    if !display.image.is_empty() {
        info.image_mimetypes = display.image.clone();
    }
    info.timezone = display.timezone.clone();
    info.name = display.name.clone();
    // The session's parameters, and its target as the only hostname and port.
    let mut parameters = ctx.parameters.clone();
    parameters.insert("hostname".into(), Secret::new(ctx.target.host.clone()));
    parameters.insert("port".into(), Secret::new(ctx.target.port.to_string()));
    zt_guacd::connect(
        addr,
        &ctx.protocol,
        &parameters,
        info,
        ctx.guacd.connect_timeout,
    )
    .await
    .map_err(|error| {
        ctx.metrics.error(Origin::Target, "guacd");
        match error.status() {
            Some(status) => {
                let mut end = upstream(format!("guacd: {error} (status {})", status_text(status)));
                end.guacd_status = Some(status);
                end
            }
            None => upstream(format!("guacd: {error}")),
        }
    })
}

fn status_text(status: Status) -> String {
    match status.name() {
        Some(name) => format!("0x{:04X} {name}", status.code()),
        None => format!("0x{:04X}", status.code()),
    }
}

/// The `error` (unless the end is a plain disconnect) and `disconnect` that tell the client
/// why the connection ends.
fn farewell(end: &ConnectionEnd) -> Bytes {
    let (message, status) = match (end.reason, end.origin) {
        (EndReason::Revoked, _) => ("Session revoked", Status::SESSION_CLOSED),
        (EndReason::IdleTimeout, _) => ("Session idle for too long", Status::SESSION_TIMEOUT),
        (EndReason::MaxDuration, _) => ("Session time limit reached", Status::SESSION_TIMEOUT),
        (EndReason::Shutdown, _) => ("ztproxy is shutting down", Status::SERVER_BUSY),
        (EndReason::RecordingFailed, _) => ("Recording failed", Status::SERVER_ERROR),
        (EndReason::ClientClosed | EndReason::TargetClosed, _) => ("Disconnected", Status::SUCCESS),
        (_, Some(Origin::Client)) => ("Protocol error", Status::CLIENT_BAD_REQUEST),
        (_, Some(Origin::Target)) => (
            "Remote desktop server error",
            end.guacd_status.unwrap_or(Status::UPSTREAM_ERROR),
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

async fn relay(
    ctx: &mut ConnectionContext,
    guacd: zt_guacd::GuacdConnection,
    mut reader: ClientReader,
    writer: ClientWriter,
    mut from_client: Decoder,
    end_reason: &impl Fn() -> EndReason,
) -> ConnectionEnd {
    let mut filter = Filter::new(ctx.policy.clone());
    let mut sync = SyncTracker::new({
        let mut settings = SyncSettings::default();
        settings.grace = ctx.guacd.sync_grace;
        settings
    });
    let mut from_guacd = Decoder::new(Limits::default());
    from_guacd.feed(&guacd.leftover);
    let (mut guacd_read, mut guacd_write) = guacd.stream.into_split();

    // Writers: each side gets its own task so a slow side never stops the other.
    let (to_guacd, mut to_guacd_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let guacd_writer = tokio::spawn(async move {
        while let Some(bytes) = to_guacd_rx.recv().await {
            if guacd_write.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = guacd_write.shutdown().await;
    });
    let (to_client, mut to_client_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let client_writer = tokio::spawn(async move {
        let mut writer = writer;
        while let Some(bytes) = to_client_rx.recv().await {
            if writer.send(bytes).await.is_err() {
                return writer;
            }
        }
        writer
    });

    // Output for the client, split into messages of whole instructions.
    let mut out_client = MessageBatcher::new(ctx.recording.is_some());
    let mut recorded = Recorded::default();
    let mut target_up = false;
    let mut guacd_eof = false;

    let end = 'relay: loop {
        // Everything guacd sent that is already decoded, as far as the client can take.
        if out_client.pending_bytes() < CLIENT_HIGH_WATER {
            loop {
                let instruction = match from_guacd.poll_instruction() {
                    Ok(Some(instruction)) => instruction,
                    Ok(None) => break,
                    Err(error) => {
                        tracing::info!(%error, "guacd broke the protocol");
                        ctx.metrics.error(Origin::Target, "guacd_protocol");
                        break 'relay ConnectionEnd::new(
                            EndReason::Error,
                            Some(Origin::Target),
                            format!("guacd protocol violation: {error}"),
                        );
                    }
                };
                let now = Instant::now();
                if instruction.is(opcode::SYNC) {
                    if let Some(timestamp) = instruction.arg(0).and_then(|t| t.parse::<u64>().ok())
                    {
                        sync.server_sync(timestamp, now);
                        if !target_up {
                            target_up = true;
                            tracing::info!("target reached through guacd");
                        }
                    }
                } else if instruction.is(opcode::ERROR) {
                    let status = instruction
                        .arg(1)
                        .and_then(|s| s.parse::<u32>().ok())
                        .map(Status::new)
                        .unwrap_or(Status::SERVER_ERROR);
                    // The client hears guacd's own error, then the disconnect.
                    out_client.push(instruction.raw());
                    record_output(ctx, &mut recorded, instruction);
                    out_client.push_bytes(&disconnect_bytes());
                    if let Ok(Some(disconnect)) = decode_one(&disconnect_bytes()) {
                        record_output(ctx, &mut recorded, disconnect);
                    }
                    flush_recording(ctx, &mut recorded, &mut out_client).await;
                    break 'relay ConnectionEnd::new(
                        EndReason::Error,
                        Some(Origin::Target),
                        format!("guacd error, status {}", status_text(status)),
                    )
                    .told();
                } else if instruction.is(opcode::DISCONNECT) {
                    out_client.push(instruction.raw());
                    record_output(ctx, &mut recorded, instruction);
                    flush_recording(ctx, &mut recorded, &mut out_client).await;
                    break 'relay ConnectionEnd::new(EndReason::TargetClosed, None, None).told();
                }
                match filter.from_server(&instruction) {
                    Verdict::Forward => {
                        ctx.stats.bytes_to_client.fetch_add(
                            instruction.len() as u64,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        ctx.metrics.bytes_to_client.inc_by(instruction.len() as u64);
                        out_client.push(instruction.raw());
                        record_output(ctx, &mut recorded, instruction);
                    }
                    Verdict::Replace(bytes) => {
                        out_client.push_bytes(&bytes);
                        if let Ok(Some(replacement)) = decode_one(&bytes) {
                            record_output(ctx, &mut recorded, replacement);
                        }
                    }
                    Verdict::Drop => {}
                }
                if let Some(reply) = filter.take_to_server() {
                    let _ = to_guacd.send(reply).await;
                    sync.sent_to_guacd(now);
                }
                audit_filter(ctx, &mut filter);
                if out_client.pending_bytes() >= CLIENT_HIGH_WATER {
                    break;
                }
            }
            if out_client.unrecorded_bytes() >= RECORD_BATCH {
                flush_recording(ctx, &mut recorded, &mut out_client).await;
            } else {
                recorded.arm(&out_client);
            }
            ctx.stats.touch();
        }
        if let Some(failure) = ctx.recording.as_ref().and_then(GraphicalRecording::failure)
            && ctx.recording_fail_closed
        {
            break ConnectionEnd::new(
                EndReason::RecordingFailed,
                Some(Origin::Local),
                format!("recording failed: {failure}"),
            );
        }
        if guacd_eof && from_guacd.buffered_len() == 0 {
            break ConnectionEnd::new(EndReason::TargetClosed, Some(Origin::Target), None);
        }

        let keepalive_at = sync.poll_timeout();
        tokio::select! {
            () = ctx.cancel.cancelled() => {
                break ConnectionEnd::new(end_reason(), None, None);
            }
            permit = to_client.reserve(), if out_client.has_message() => {
                if let (Ok(permit), Some(message)) = (permit, out_client.next_message()) {
                    permit.send(message);
                } else {
                    // The client's channel is gone: nothing more reaches it.
                    break ConnectionEnd::new(EndReason::ClientClosed, Some(Origin::Client), None).told();
                }
            }
            // Straight into the decoder: the instructions it returns share these bytes.
            read = guacd_read.read_buf(from_guacd.read_buffer(READ_BUF)), if !guacd_eof && out_client.pending_bytes() < CLIENT_HIGH_WATER => {
                if matches!(read, Ok(0) | Err(_)) {
                    guacd_eof = true;
                }
            }
            message = reader.recv() => {
                let Ok(Some(bytes)) = message else {
                    let _ = to_guacd.send(disconnect_bytes()).await;
                    // The client's channel is closed: nothing more reaches it.
                    break ConnectionEnd::new(EndReason::ClientClosed, Some(Origin::Client), None).told();
                };
                from_client.feed(&bytes);
                if ctx.recording.as_ref().is_some_and(GraphicalRecording::includes_input) {
                    // The output so far goes first, so the input sits where it arrived.
                    flush_recording(ctx, &mut recorded, &mut out_client).await;
                }
                let input = client_input(ctx, &mut from_client, &mut filter, &mut sync, &mut out_client);
                if let Some(recording) = &mut ctx.recording {
                    recording.flush_input().await;
                }
                // Replies ztproxy sent the client itself (acks of refused streams) are recorded too.
                recorded.arm(&out_client);
                match input {
                    Ok(ClientInput::Forward(forward)) => {
                        if !forward.is_empty() {
                            let _ = to_guacd.send(forward).await;
                            sync.sent_to_guacd(Instant::now());
                        }
                    }
                    Ok(ClientInput::Disconnect(forward)) => {
                        let mut forward = forward.to_vec();
                        forward.extend_from_slice(&disconnect_bytes());
                        let _ = to_guacd.send(Bytes::from(forward)).await;
                        break ConnectionEnd::new(EndReason::ClientClosed, Some(Origin::Client), None);
                    }
                    Err(detail) => {
                        let _ = to_guacd.send(disconnect_bytes()).await;
                        break ConnectionEnd::new(EndReason::Error, Some(Origin::Client), detail);
                    }
                }
            }
            () = sleep_until(recorded.due), if recorded.due.is_some() => {
                flush_recording(ctx, &mut recorded, &mut out_client).await;
            }
            () = sleep_until(keepalive_at) => {
                let now = Instant::now();
                if let Some(timestamp) = sync.poll_keepalive(now) {
                    let mut out = BytesMut::new();
                    zt_guac::encode(opcode::SYNC, &[timestamp.to_string()], &mut out);
                    let _ = to_guacd.send(out.freeze()).await;
                    sync.sent_to_guacd(now);
                    tracing::debug!(lag_ms = crate::util::millis(sync.lag(now)), "answered guacd's sync for a slow client");
                }
                if sync.poll_nop(now) {
                    let mut out = BytesMut::new();
                    zt_guac::encode(opcode::NOP, &[] as &[&str], &mut out);
                    let _ = to_guacd.send(out.freeze()).await;
                    sync.sent_to_guacd(now);
                }
            }
        }
    };
    // Why the connection ends goes to the client after what was already due, and into the
    // recording (which takes the client's messages) like everything else the client is sent.
    if !end.told_client {
        out_client.push_bytes(&farewell(&end));
    }
    flush_recording(ctx, &mut recorded, &mut out_client).await;
    teardown(
        ctx,
        end,
        to_guacd,
        to_client,
        guacd_writer,
        client_writer,
        out_client,
    )
    .await
}

enum ClientInput {
    Forward(Bytes),
    Disconnect(Bytes),
}

/// Processes everything decoded from the client: returns the bytes for guacd.
fn client_input(
    ctx: &mut ConnectionContext,
    decoder: &mut Decoder,
    filter: &mut Filter,
    sync: &mut SyncTracker,
    out_client: &mut MessageBatcher,
) -> Result<ClientInput, String> {
    let mut forward = BytesMut::new();
    let now = Instant::now();
    loop {
        let instruction = match decoder.poll_instruction() {
            Ok(Some(instruction)) => instruction,
            Ok(None) => break,
            Err(error) => {
                ctx.metrics.error(Origin::Client, "guacamole_protocol");
                return Err(format!("client sent a malformed instruction: {error}"));
            }
        };
        if instruction.is(opcode::SYNC) {
            let Some(timestamp) = instruction.arg(0).and_then(|t| t.parse::<u64>().ok()) else {
                continue;
            };
            if sync.client_sync(timestamp, now) == ClientSync::Forward {
                forward.extend_from_slice(instruction.raw());
            }
            continue;
        }
        if instruction.is(opcode::DISCONNECT) {
            return Ok(ClientInput::Disconnect(forward.freeze()));
        }
        match filter.from_client(&instruction) {
            Verdict::Forward => {
                if let Some(recording) = &mut ctx.recording
                    && (instruction.is(opcode::KEY) || instruction.is(opcode::MOUSE))
                {
                    recording.input(instruction.raw());
                }
                forward.extend_from_slice(instruction.raw());
            }
            Verdict::Replace(bytes) => forward.extend_from_slice(&bytes),
            Verdict::Drop => {}
        }
        if let Some(reply) = filter.take_to_client() {
            out_client.push_bytes(&reply);
        }
        audit_filter(ctx, filter);
    }
    ctx.stats
        .bytes_to_target
        .fetch_add(forward.len() as u64, std::sync::atomic::Ordering::Relaxed);
    ctx.metrics.bytes_to_target.inc_by(forward.len() as u64);
    ctx.stats.touch();
    Ok(ClientInput::Forward(forward.freeze()))
}

/// Output sent to the client and not yet handed to the recording: the instructions for the
/// display model (the bytes are the client's messages, kept by the [`MessageBatcher`]).
#[derive(Default)]
struct Recorded {
    instructions: Vec<Instruction>,
    /// When they are handed over at the latest.
    due: Option<Instant>,
}

impl Recorded {
    /// Sets the hand-over time if output waits for one.
    fn arm(&mut self, out: &MessageBatcher) {
        if self.due.is_none() && out.unrecorded_bytes() > 0 {
            self.due = Some(Instant::now() + RECORD_DELAY);
        }
    }
}

fn record_output(ctx: &ConnectionContext, recorded: &mut Recorded, instruction: Instruction) {
    if ctx.recording.is_some() {
        recorded.instructions.push(instruction);
    }
}

/// Hands what was sent to the client to the recording (waits while its worker is behind):
/// the client's messages as they are, with the instructions in them for the display model.
async fn flush_recording(
    ctx: &mut ConnectionContext,
    recorded: &mut Recorded,
    out: &mut MessageBatcher,
) {
    recorded.due = None;
    let messages = out.take_recorded();
    if let Some(recording) = &mut ctx.recording
        && !messages.is_empty()
    {
        recording
            .output(std::mem::take(&mut recorded.instructions), messages)
            .await;
    }
    recorded.instructions.clear();
}

fn audit_filter(ctx: &ConnectionContext, filter: &mut Filter) {
    while let Some(event) = filter.poll_event() {
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
                session: ctx.session.clone(),
                direction: direction.as_str().into(),
                kind: kind.as_str().into(),
                mimetype,
                name,
                size,
                sha256: hex::encode(sha256),
                truncated,
            },
            FilterEvent::Refused {
                direction,
                what,
                name,
            } => {
                ctx.metrics.error(Origin::Client, "policy_refused");
                AuditEvent::PolicyRefused {
                    session: ctx.session.clone(),
                    direction: direction.as_str().into(),
                    action: what.as_str().into(),
                    name,
                }
            }
        };
        ctx.audit.emit(event);
    }
}

#[allow(clippy::too_many_arguments)]
async fn teardown(
    ctx: &ConnectionContext,
    end: ConnectionEnd,
    to_guacd: mpsc::Sender<Bytes>,
    to_client: mpsc::Sender<Bytes>,
    guacd_writer: tokio::task::JoinHandle<()>,
    client_writer: tokio::task::JoinHandle<ClientWriter>,
    mut out_client: MessageBatcher,
) -> ConnectionEnd {
    // guacd hears the user leave.
    if end.origin != Some(Origin::Target) && end.reason != EndReason::TargetClosed {
        let _ = to_guacd.try_send(disconnect_bytes());
    }
    drop(to_guacd);
    // The client gets what was already due, then why the session ends.
    let grace = Duration::from_millis(500);
    let _ = tokio::time::timeout(grace, async {
        while let Some(message) = out_client.next_message() {
            if to_client.send(message).await.is_err() {
                break;
            }
        }
    })
    .await;
    drop(to_client);
    let _ = tokio::time::timeout(Duration::from_secs(2), guacd_writer).await;
    if let Ok(Ok(mut writer)) = tokio::time::timeout(Duration::from_secs(2), client_writer).await {
        writer.close().await;
    }
    let _ = ctx;
    end
}

fn disconnect_bytes() -> Bytes {
    let mut out = BytesMut::new();
    zt_guac::encode(opcode::DISCONNECT, &[] as &[&str], &mut out);
    out.freeze()
}

fn decode_one(bytes: &[u8]) -> Result<Option<Instruction>, zt_guac::DecodeError> {
    let mut decoder = Decoder::new(Limits::default());
    decoder.feed(bytes);
    decoder.poll_instruction()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Client output, cut into messages of whole instructions of at most [`MAX_MESSAGE`] bytes.
///
/// When the session is recorded, the batcher also keeps each finished message (shared, not
/// copied) until the recording takes it: the recording holds exactly the bytes the client
/// was sent.
#[derive(Debug, Default)]
struct MessageBatcher {
    full: std::collections::VecDeque<Bytes>,
    current: BytesMut,
    pending: usize,
    recording: bool,
    /// Finished messages the recording has not taken yet.
    recorded: Vec<Bytes>,
}

impl MessageBatcher {
    fn new(recording: bool) -> Self {
        Self {
            recording,
            ..Self::default()
        }
    }

    /// Ends the message being filled (if any) and queues it for sending, and for the
    /// recording.
    fn close_current(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let message = self.current.split().freeze();
        if self.recording {
            self.recorded.push(message.clone());
        }
        self.full.push_back(message);
    }

    /// Bytes sent, or about to be, that the recording has not taken yet.
    fn unrecorded_bytes(&self) -> usize {
        if !self.recording {
            return 0;
        }
        self.current.len() + self.recorded.iter().map(Bytes::len).sum::<usize>()
    }

    /// Every message so far, for the recording, ending the one being filled.
    fn take_recorded(&mut self) -> Vec<Bytes> {
        if self.recording {
            self.close_current();
        }
        std::mem::take(&mut self.recorded)
    }

    fn push(&mut self, instruction: &Bytes) {
        self.push_bytes(instruction);
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        if self.current.len() + bytes.len() > MAX_MESSAGE {
            self.close_current();
        }
        if self.current.is_empty() {
            // Room for a whole message at once, instead of growing (and copying) it.
            self.current.reserve(bytes.len().max(MAX_MESSAGE));
        }
        self.current.extend_from_slice(bytes);
        self.pending += bytes.len();
    }

    fn has_message(&self) -> bool {
        !self.full.is_empty() || !self.current.is_empty()
    }

    fn next_message(&mut self) -> Option<Bytes> {
        if self.full.is_empty() {
            self.close_current();
        }
        let message = self.full.pop_front()?;
        self.pending -= message.len();
        Some(message)
    }

    fn pending_bytes(&self) -> usize {
        self.pending
    }
}
