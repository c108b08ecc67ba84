//! Sessions: the registry, and the one task that owns each session.
//!
//! # Lifecycle
//!
//! ```text
//!  POST /v1/sessions ──► Pending ──(client connects)──► Connected ──┐
//!                           │                                      │
//!                           └──── connect timeout, revocation, ────┴──► Ending ──► gone
//!                                 idle timeout, max duration,
//!                                 client gone, shutdown
//! ```
//!
//! [`create`] validates limits, sets up the transport (answers the WebRTC offer, or issues a
//! QUIC token), registers a [`SessionHandle`] and spawns the session task. The task owns the
//! transport; the control API and the transports talk to it only through the handle (end
//! requests) and channels (new data channels and streams). Each tunnelled TCP connection is
//! a relay task tracked by the session. When the session ends — for whatever reason — the
//! task cancels every relay (target sockets are reset), closes the peer connection or QUIC
//! connection (the client's channels close), waits briefly for the relays, removes the
//! session from the registry, and emits `session_ended` with the byte counts. Only then does
//! `DELETE /v1/sessions/{id}` answer, so a revoked session is gone from `GET /v1/sessions`
//! by the time the gateway hears back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use quinn::Connection;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::PeerConnection;
use zt_api::audit::AuditEvent;
use zt_api::control::{
    ApiError, Conversation, CreateSessionResponse, EndReason, EndedSession, ErrorCode, Origin,
    SdpType, SessionDescription, SessionInfo, SessionSpec, SessionState, Target, Transport,
};
use zt_api::tunnel::{ChannelControl, TunnelErrorCode};

use crate::server::Shared;
use crate::transport::quic::QuicEvent;
use crate::transport::stream::Stream;
use crate::transport::webrtc::{AnswerError, CONTROL_CHANNEL_LABEL, Peer, PeerEvent};
use crate::tunnel::{self, Meter};

/// How long teardown waits for relays to finish after cancelling them.
pub const RELAY_GRACE: Duration = Duration::from_secs(2);
/// How long teardown spends telling a WebRTC client why its session ended.
pub const END_NOTICE_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a session's end waits for its Guacamole connection to tell the client.
pub const CONNECTION_END_GRACE: Duration = Duration::from_secs(1);
/// Refused connections reported individually per session; later ones are only counted
/// (a client opening thousands of channels must not flush the audit ring).
pub const REFUSALS_AUDITED: u64 = 10;

/// Live counters of one session, shared with its relays.
#[derive(Debug)]
pub struct SessionStats {
    started: Instant,
    /// Bytes relayed to the target.
    pub bytes_to_target: AtomicU64,
    /// Bytes relayed to the client.
    pub bytes_to_client: AtomicU64,
    /// Tunnelled connections open now.
    pub connections_active: AtomicU64,
    /// Tunnelled connections opened so far.
    pub connections_total: AtomicU64,
    /// Connections refused so far.
    pub connections_refused: AtomicU64,
    last_activity_ms: AtomicU64,
}

impl SessionStats {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            bytes_to_target: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            connections_active: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            last_activity_ms: AtomicU64::new(0),
        }
    }

    /// Records activity now (resets the idle timer).
    pub fn touch(&self) {
        self.last_activity_ms.store(
            crate::util::millis(self.started.elapsed()),
            Ordering::Relaxed,
        );
    }

    fn last_activity(&self) -> Instant {
        self.started + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }
}

/// What was fixed when the session was created.
#[derive(Debug, Clone)]
pub struct SessionMeta {
    /// Transport.
    pub transport: Transport,
    /// Conversation.
    pub conversation: Conversation,
    /// Protocol label.
    pub protocol: String,
    /// The only target.
    pub target: Target,
    /// Resource id (audit).
    pub resource_id: Option<String>,
    /// User (audit).
    pub user: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Effective idle timeout.
    pub idle_timeout: Duration,
    /// Effective maximum duration.
    pub max_duration: Duration,
    /// Effective connection limit.
    pub max_connections: u64,
    /// How a connection reaches its target (`None` for tunnels).
    pub route: Option<zt_api::control::Route>,
}

/// What a connection session needs once its Guacamole channel arrives. Held by the session
/// task only: the backend carries the session's credentials.
pub struct ConnectionSetup {
    backend: Box<dyn crate::connection::backend::Backend>,
    settings: zt_connection::Settings,
    recording: Option<(
        zt_api::control::RecordingRequest,
        Arc<crate::config::RecordingsSettings>,
    )>,
}

const STATE_PENDING: u8 = 0;
const STATE_CONNECTED: u8 = 1;
const STATE_ENDING: u8 = 2;

/// The registry's handle on a session. Ending it through [`SessionHandle::end`] is the only
/// way to stop a session from outside its task.
pub struct SessionHandle {
    /// Session id.
    pub id: String,
    /// Fixed facts.
    pub meta: SessionMeta,
    /// Counters.
    pub stats: Arc<SessionStats>,
    state: AtomicU8,
    connected_at: OnceLock<String>,
    end: CancellationToken,
    end_reason: Mutex<Option<EndReason>>,
    ended: watch::Receiver<Option<EndedSession>>,
    peer: Option<Arc<dyn PeerConnection>>,
    recordings: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.id)
            .field("meta", &self.meta)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SessionHandle {
    /// Asks the session to end for `reason` (the first reason given wins).
    pub fn end(&self, reason: EndReason) {
        {
            let mut slot = self.end_reason.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(reason);
            }
        }
        self.end.cancel();
    }

    /// Waits until the session has ended and returns its summary.
    pub async fn wait_ended(&self) -> Option<EndedSession> {
        let mut ended = self.ended.clone();
        ended
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|summary| summary.clone())
    }

    /// The WebRTC peer connection, for trickled candidates.
    pub fn peer(&self) -> Option<&Arc<dyn PeerConnection>> {
        self.peer.as_ref()
    }

    /// The API view of the session.
    pub fn info(&self) -> SessionInfo {
        let state = match self.state.load(Ordering::Relaxed) {
            STATE_PENDING => SessionState::Pending,
            STATE_CONNECTED => SessionState::Connected,
            _ => SessionState::Ending,
        };
        SessionInfo {
            id: self.id.clone(),
            state,
            transport: self.meta.transport,
            conversation: self.meta.conversation,
            protocol: self.meta.protocol.clone(),
            target: self.meta.target.clone(),
            resource_id: self.meta.resource_id.clone(),
            created_at: self.meta.created_at.clone(),
            connected_at: self.connected_at.get().cloned(),
            bytes_to_target: self.stats.bytes_to_target.load(Ordering::Relaxed),
            bytes_to_client: self.stats.bytes_to_client.load(Ordering::Relaxed),
            connections_active: self.stats.connections_active.load(Ordering::Relaxed),
            connections_total: self.stats.connections_total.load(Ordering::Relaxed),
            idle_timeout_secs: self.meta.idle_timeout.as_secs(),
            max_duration_secs: self.meta.max_duration.as_secs(),
            recordings: self
                .recordings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn reason(&self) -> EndReason {
        self.end_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(EndReason::Revoked)
    }
}

/// Live sessions by id.
#[derive(Debug)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Arc<SessionHandle>>>,
    max: usize,
}

impl Registry {
    /// An empty registry holding at most `max` sessions.
    pub fn new(max: usize) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SessionHandle>>> {
        // Updates are single inserts and removes: a poisoned map is intact.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether another session fits.
    pub fn has_room(&self) -> bool {
        self.lock().len() < self.max
    }

    fn insert(&self, handle: Arc<SessionHandle>) -> bool {
        let mut sessions = self.lock();
        if sessions.len() >= self.max {
            return false;
        }
        sessions.insert(handle.id.clone(), handle);
        true
    }

    /// The session with `id`.
    pub fn get(&self, id: &str) -> Option<Arc<SessionHandle>> {
        self.lock().get(id).cloned()
    }

    /// Every live session, oldest first.
    pub fn list(&self) -> Vec<Arc<SessionHandle>> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by_key(|h| h.stats.started);
        all
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Ends every session (shutdown).
    pub fn end_all(&self, reason: EndReason) {
        for handle in self.list() {
            handle.end(reason);
        }
    }
}

/// The transport a session task owns.
enum SessionTransport {
    Webrtc {
        peer: Peer,
        control: Option<Arc<dyn DataChannel>>,
    },
    Quic {
        events: mpsc::Receiver<QuicEvent>,
        key: [u8; 32],
        conn: Option<Connection>,
    },
}

/// Creates a session from a validated request.
pub async fn create(
    shared: &Arc<Shared>,
    spec: SessionSpec,
) -> Result<CreateSessionResponse, ApiError> {
    let connection = match spec.conversation {
        Conversation::Tunnel => None,
        Conversation::Connection => Some(connection_setup(shared, &spec)?),
    };
    if !shared.registry.has_room() {
        shared.metrics.error(Origin::Local, "too_many_sessions");
        return Err(ApiError::new(
            ErrorCode::TooManySessions,
            "the session limit is reached",
        ));
    }
    let config = &shared.settings.sessions;
    let meta = SessionMeta {
        transport: spec.transport,
        conversation: spec.conversation,
        protocol: spec.protocol,
        target: spec.target,
        resource_id: spec.resource_id,
        user: spec.user,
        created_at: crate::util::now_rfc3339(),
        idle_timeout: spec
            .limits
            .idle_timeout
            .unwrap_or(config.idle_timeout)
            .min(config.max_idle_timeout),
        max_duration: spec
            .limits
            .max_duration
            .unwrap_or(config.max_duration)
            .min(config.max_duration),
        max_connections: u64::from(
            spec.limits
                .max_connections
                .unwrap_or(config.max_connections_per_session)
                .min(config.max_connections_per_session),
        ),
        route: spec.route,
    };
    let id = hex::encode(
        crate::util::random_bytes::<16>()
            .map_err(|_| ApiError::new(ErrorCode::Internal, "no randomness available"))?,
    );

    let mut response = CreateSessionResponse {
        id: id.clone(),
        transport: meta.transport,
        answer: None,
        sealed_answer: None,
        quic: None,
    };
    let (transport, peer) = match meta.transport {
        Transport::Webrtc => {
            let settings = shared.webrtc.as_ref().ok_or_else(|| {
                ApiError::new(ErrorCode::Unsupported, "WebRTC is disabled on this proxy")
                    .with_field("transport")
            })?;
            let offer = spec.offer_sdp.unwrap_or_default();
            let (peer, answer_sdp) = Peer::answer(settings, offer).await.map_err(|e| match e {
                AnswerError::BadOffer(message) => {
                    shared.metrics.error(Origin::Client, "bad_offer");
                    ApiError::new(ErrorCode::BadOffer, message).with_field("offer")
                }
                AnswerError::Local(message) => {
                    shared.metrics.error(Origin::Local, "webrtc");
                    tracing::error!(error = %message, "cannot answer offer");
                    ApiError::new(ErrorCode::Internal, "the WebRTC stack failed")
                }
            })?;
            let answer = SessionDescription {
                kind: SdpType::Answer,
                sdp: answer_sdp,
            };
            match spec.answer_key {
                Some(key) => {
                    let json = serde_json::to_vec(&answer).map_err(|_| {
                        ApiError::new(ErrorCode::Internal, "cannot encode the answer")
                    })?;
                    response.sealed_answer = Some(key.seal(&json).map_err(|_| {
                        ApiError::new(ErrorCode::Internal, "cannot seal the answer")
                    })?);
                }
                None => response.answer = Some(answer),
            }
            let pc = peer.pc.clone();
            (
                SessionTransport::Webrtc {
                    peer,
                    control: None,
                },
                Some(pc),
            )
        }
        Transport::Quic => {
            let server = shared.quic.as_ref().ok_or_else(|| {
                ApiError::new(ErrorCode::Unsupported, "QUIC is disabled on this proxy")
                    .with_field("transport")
            })?;
            let (info, key, events) = server
                .register(&id)
                .map_err(|_| ApiError::new(ErrorCode::Internal, "no randomness available"))?;
            response.quic = Some(info);
            (
                SessionTransport::Quic {
                    events,
                    key,
                    conn: None,
                },
                None,
            )
        }
    };

    let (ended_tx, ended) = watch::channel(None);
    let handle = Arc::new(SessionHandle {
        id: id.clone(),
        meta,
        stats: Arc::new(SessionStats::new()),
        state: AtomicU8::new(STATE_PENDING),
        connected_at: OnceLock::new(),
        // Not a child of the shutdown token: shutdown ends sessions through `end_all`, so
        // each records `shutdown` as its reason.
        end: CancellationToken::new(),
        end_reason: Mutex::new(None),
        ended,
        peer,
        recordings: Arc::default(),
    });
    if !shared.registry.insert(handle.clone()) {
        close_transport(shared, transport, EndReason::Error).await;
        shared.metrics.error(Origin::Local, "too_many_sessions");
        return Err(ApiError::new(
            ErrorCode::TooManySessions,
            "the session limit is reached",
        ));
    }

    shared
        .metrics
        .session_created(handle.meta.transport, handle.meta.conversation);
    shared.metrics.sessions_active.inc();
    shared.audit.emit(AuditEvent::SessionCreated {
        session: id.clone(),
        transport: handle.meta.transport,
        conversation: handle.meta.conversation,
        protocol: handle.meta.protocol.clone(),
        target: handle.meta.target.clone(),
        resource_id: handle.meta.resource_id.clone(),
        user: handle.meta.user.clone(),
    });
    let span = tracing::info_span!(
        "session",
        id = %id,
        transport = handle.meta.transport.as_str(),
        proto = %handle.meta.protocol
    );
    shared
        .tasks
        .spawn(run(shared.clone(), handle, transport, connection, ended_tx).instrument(span));
    Ok(response)
}

/// Checks that this proxy can serve a connection session, and prepares it.
fn connection_setup(shared: &Shared, spec: &SessionSpec) -> Result<ConnectionSetup, ApiError> {
    let Some(parameters) = &spec.connection else {
        return Err(ApiError::new(
            ErrorCode::Internal,
            "a connection session without a protocol",
        ));
    };
    let backend = shared.backends.make(
        spec.route,
        &crate::connection::backend::BackendRequest {
            parameters,
            target: &spec.target,
            settings: &shared.settings,
        },
    )?;
    let policy = zt_connection::policy::ConnectionPolicy::from_parameters(parameters.values())
        .map_err(|e| ApiError::invalid_field(format!("parameters.{}", e.name), e.problem))?;
    let mut settings = zt_connection::Settings::new(String::new(), policy);
    if let Some(guacd) = &shared.settings.guacd {
        settings.handshake_timeout = guacd.handshake_timeout;
        settings.sync.grace = guacd.sync_grace;
    }
    let recording = match &spec.recording {
        Some(request) if request.graphical || request.typescript => {
            if request.typescript {
                return Err(ApiError::new(
                    ErrorCode::Unsupported,
                    "typescript recordings need a native terminal connection; guacd connections \
                     are recorded graphically",
                )
                .with_field("recording.typescript"));
            }
            let settings = shared.settings.recordings.clone().ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unsupported,
                    "this proxy has no recording directory configured ([recordings])",
                )
                .with_field("recording")
            })?;
            Some((request.clone(), settings))
        }
        _ => None,
    };
    Ok(ConnectionSetup {
        backend,
        settings,
        recording,
    })
}

struct Ending {
    reason: EndReason,
    origin: Option<Origin>,
    detail: Option<String>,
}

impl Ending {
    fn new(reason: EndReason, origin: Option<Origin>) -> Self {
        Self {
            reason,
            origin,
            detail: None,
        }
    }
}

async fn run(
    shared: Arc<Shared>,
    handle: Arc<SessionHandle>,
    mut transport: SessionTransport,
    connection: Option<ConnectionSetup>,
    ended_tx: watch::Sender<Option<EndedSession>>,
) {
    tracing::info!(target = %handle.meta.target, "session created");
    let relays = TaskTracker::new();
    let relay_cancel = CancellationToken::new();
    let mut connection = ConnectionSlot::new(connection);
    let ending = drive(
        &shared,
        &handle,
        &mut transport,
        &mut connection,
        &relays,
        &relay_cancel,
    )
    .await;

    handle.state.store(STATE_ENDING, Ordering::Relaxed);
    relay_cancel.cancel();
    // A running Guacamole connection tells its client why (`error`, `disconnect`) before the
    // transport goes: closing a QUIC connection discards what is still unsent.
    if let ConnectionSlot::Running(_) = &connection {
        let _ = tokio::time::timeout(CONNECTION_END_GRACE, connection.ended()).await;
    }
    close_transport(&shared, transport, ending.reason).await;
    relays.close();
    if tokio::time::timeout(RELAY_GRACE, relays.wait())
        .await
        .is_err()
    {
        tracing::warn!("relays did not finish within the grace period");
    }
    shared.registry.remove(&handle.id);
    shared.metrics.sessions_active.dec();
    shared.metrics.session_ended(ending.reason);

    let stats = &handle.stats;
    let summary = EndedSession {
        id: handle.id.clone(),
        reason: ending.reason,
        bytes_to_target: stats.bytes_to_target.load(Ordering::Relaxed),
        bytes_to_client: stats.bytes_to_client.load(Ordering::Relaxed),
        duration_ms: crate::util::millis(stats.started.elapsed()),
    };
    shared.audit.emit(AuditEvent::SessionEnded {
        session: handle.id.clone(),
        reason: ending.reason,
        origin: ending.origin,
        detail: ending.detail.clone(),
        bytes_to_target: summary.bytes_to_target,
        bytes_to_client: summary.bytes_to_client,
        connections_total: stats.connections_total.load(Ordering::Relaxed),
        connections_refused: stats.connections_refused.load(Ordering::Relaxed),
        duration_ms: summary.duration_ms,
    });
    tracing::info!(
        reason = ending.reason.as_str(),
        bytes_to_target = summary.bytes_to_target,
        bytes_to_client = summary.bytes_to_client,
        "session ended"
    );
    let _ = ended_tx.send(Some(summary));
}

async fn close_transport(shared: &Shared, transport: SessionTransport, reason: EndReason) {
    match transport {
        SessionTransport::Webrtc { peer, control } => {
            if let Some(control) = control {
                // Tell the client why, then close. Bounded: revocation must stay prompt.
                let notice = ChannelControl::SessionEnded { reason }.to_text();
                let _ = tokio::time::timeout(END_NOTICE_TIMEOUT, async {
                    if control.send_text(&notice).await.is_ok() {
                        tunnel::wait_acked(&control).await;
                    }
                })
                .await;
            }
            let _ = peer.pc.close().await;
        }
        SessionTransport::Quic { key, conn, .. } => {
            if let Some(server) = &shared.quic {
                server.unregister(&key);
            }
            if let Some(conn) = conn {
                conn.close(
                    quinn::VarInt::from_u32(zt_api::tunnel::QUIC_CLOSE_SESSION_ENDED),
                    reason.as_str().as_bytes(),
                );
            }
        }
    }
}

enum Incoming {
    Connected,
    Disconnected,
    ClientGone,
    DataChannel(Arc<dyn DataChannel>),
    QuicConnected(Connection),
    QuicStream(quinn::SendStream, quinn::RecvStream),
}

async fn next_incoming(transport: &mut SessionTransport) -> Incoming {
    match transport {
        SessionTransport::Webrtc { peer, .. } => match peer.events.recv().await {
            Some(PeerEvent::Connected) => Incoming::Connected,
            Some(PeerEvent::Disconnected) => Incoming::Disconnected,
            Some(PeerEvent::DataChannel(dc)) => Incoming::DataChannel(dc),
            Some(PeerEvent::Failed | PeerEvent::Closed) | None => Incoming::ClientGone,
        },
        SessionTransport::Quic { events, conn, .. } => {
            let closed = async {
                match conn {
                    Some(conn) => {
                        conn.closed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.recv() => match event {
                    Some(QuicEvent::Connected(conn)) => Incoming::QuicConnected(conn),
                    Some(QuicEvent::Stream(stream)) => {
                        let (send, recv) = *stream;
                        Incoming::QuicStream(send, recv)
                    }
                    None => Incoming::ClientGone,
                },
                () = closed => Incoming::ClientGone,
            }
        }
    }
}

/// The Guacamole connection of a connection session: not started, running, or over.
enum ConnectionSlot {
    /// A tunnel session: no connection.
    None,
    /// Waiting for the client's Guacamole channel.
    Waiting(Box<ConnectionSetup>),
    /// Running; its end arrives here.
    Running(tokio::sync::oneshot::Receiver<crate::connection::ConnectionEnd>),
    /// It ended (its end was taken).
    Finished,
}

impl ConnectionSlot {
    fn new(setup: Option<ConnectionSetup>) -> Self {
        match setup {
            Some(setup) => Self::Waiting(Box::new(setup)),
            None => Self::None,
        }
    }

    fn is_connection(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// Takes the setup if the connection has not started yet.
    fn start(
        &mut self,
        done: tokio::sync::oneshot::Receiver<crate::connection::ConnectionEnd>,
    ) -> Option<ConnectionSetup> {
        match std::mem::replace(self, Self::Running(done)) {
            Self::Waiting(setup) => Some(*setup),
            other => {
                *self = other;
                None
            }
        }
    }

    async fn ended(&mut self) -> Ending {
        match self {
            Self::Running(done) => {
                let end = done.await;
                *self = Self::Finished;
                match end {
                    Ok(end) => Ending {
                        reason: end.reason,
                        origin: end.origin,
                        detail: end.detail,
                    },
                    Err(_) => Ending::new(EndReason::Error, Some(Origin::Local)),
                }
            }
            _ => std::future::pending().await,
        }
    }
}

/// Runs the session until something ends it.
async fn drive(
    shared: &Arc<Shared>,
    handle: &Arc<SessionHandle>,
    transport: &mut SessionTransport,
    connection: &mut ConnectionSlot,
    relays: &TaskTracker,
    relay_cancel: &CancellationToken,
) -> Ending {
    let started = handle.stats.started;
    let connect_deadline = started + shared.settings.sessions.connect_timeout;
    let max_deadline = started + handle.meta.max_duration;
    let mut connected = false;
    loop {
        let deadline = if connected {
            (handle.stats.last_activity() + handle.meta.idle_timeout).min(max_deadline)
        } else {
            connect_deadline.min(max_deadline)
        };
        let incoming = tokio::select! {
            biased;
            () = handle.end.cancelled() => {
                return Ending::new(handle.reason(), None);
            }
            incoming = next_incoming(transport) => incoming,
            ending = connection.ended() => return ending,
            () = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                if now >= max_deadline {
                    return Ending::new(EndReason::MaxDuration, None);
                }
                if !connected && now >= connect_deadline {
                    return Ending::new(EndReason::ConnectTimeout, Some(Origin::Client));
                }
                if connected && now >= handle.stats.last_activity() + handle.meta.idle_timeout {
                    return Ending::new(EndReason::IdleTimeout, None);
                }
                continue;
            }
        };
        match incoming {
            Incoming::Connected => {
                if !connected {
                    connected = true;
                    mark_connected(shared, handle);
                }
            }
            Incoming::Disconnected => {
                tracing::debug!("peer connection disconnected; waiting for ICE to recover");
            }
            Incoming::ClientGone => {
                return Ending::new(EndReason::ClientClosed, Some(Origin::Client));
            }
            Incoming::QuicConnected(conn) => {
                if let SessionTransport::Quic { conn: slot, .. } = transport {
                    *slot = Some(conn);
                }
                if !connected {
                    connected = true;
                    mark_connected(shared, handle);
                }
            }
            Incoming::DataChannel(dc) => {
                let SessionTransport::Webrtc { peer, control } = transport else {
                    continue;
                };
                peer.kick.done();
                let is_control = dc.label().await.is_ok_and(|l| l == CONTROL_CHANNEL_LABEL);
                if is_control && control.is_none() {
                    // Held so the channel stays registered and carries the end notice; its
                    // events are drained so its queue never fills.
                    *control = Some(dc.clone());
                    let cancel = relay_cancel.clone();
                    relays.spawn(async move {
                        tokio::select! {
                            () = cancel.cancelled() => {}
                            () = async { while dc.poll().await.is_some() {} } => {}
                        }
                    });
                    continue;
                }
                incoming_stream(
                    shared,
                    handle,
                    connection,
                    relays,
                    relay_cancel,
                    Stream::Channel(dc),
                )
                .await;
            }
            Incoming::QuicStream(send, recv) => {
                incoming_stream(
                    shared,
                    handle,
                    connection,
                    relays,
                    relay_cancel,
                    Stream::Quic(send, recv),
                )
                .await;
            }
        }
    }
}

/// A stream the client opened: the connection session's Guacamole channel, or a tunnelled
/// TCP connection if the session has room for one.
async fn incoming_stream(
    shared: &Arc<Shared>,
    handle: &Arc<SessionHandle>,
    connection: &mut ConnectionSlot,
    relays: &TaskTracker,
    relay_cancel: &CancellationToken,
    mut stream: Stream,
) {
    if connection.is_connection() {
        // A QUIC stream hears it is accepted; a data channel needs nothing.
        if stream.accept().await.is_ok() {
            start_connection(shared, handle, connection, relays, relay_cancel, stream);
        }
        return;
    }
    if let Some(conn_no) = admit(shared, handle) {
        let span = tracing::debug_span!("conn", n = conn_no);
        relays.spawn(
            relay_tunnel(
                shared.clone(),
                handle.clone(),
                stream,
                conn_no,
                relay_cancel.clone(),
            )
            .instrument(span),
        );
    } else {
        tokio::spawn(stream.refuse(
            TunnelErrorCode::TooManyConnections,
            "the session has as many connections open as it may".into(),
        ));
    }
}

/// Starts the session's Guacamole connection on its first channel; refuses later ones (a
/// connection session carries one conversation).
fn start_connection(
    shared: &Arc<Shared>,
    handle: &Arc<SessionHandle>,
    connection: &mut ConnectionSlot,
    relays: &TaskTracker,
    relay_cancel: &CancellationToken,
    stream: Stream,
) {
    let (reader, mut writer) = stream.split();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let Some(setup) = connection.start(done_rx) else {
        refused(
            shared,
            handle,
            TunnelErrorCode::TooManyConnections,
            Origin::Client,
        );
        tokio::spawn(async move { writer.close().await });
        return;
    };
    let Some(conn_no) = admit(shared, handle) else {
        return;
    };
    opened(shared, handle, conn_no);
    let mut settings = setup.settings;
    settings.session = handle.id.clone();
    let context = crate::connection::ConnectionContext {
        settings,
        protocol: handle.meta.protocol.clone(),
        resource_id: handle.meta.resource_id.clone().unwrap_or_default(),
        recording: setup.recording,
        services: crate::connection::Services {
            audit: shared.audit.clone(),
            metrics: shared.metrics.clone(),
            stats: handle.stats.clone(),
            recordings: handle.recordings.clone(),
        },
        cancel: relay_cancel.clone(),
    };
    let backend = setup.backend;
    let shared = shared.clone();
    let handle = handle.clone();
    let span = tracing::debug_span!("guacamole");
    relays.spawn(
        async move {
            let _slot = Slot {
                shared: &shared,
                handle: &handle,
            };
            let reason_of = handle.clone();
            let end = crate::connection::run(context, reader, writer, backend, move || {
                reason_of.reason()
            })
            .await;
            if let Some(summary) = &end.recording {
                let (status, error, events) = match &summary.result {
                    Ok(events) => ("finalised", None, *events),
                    Err(error) => ("failed", Some(error.clone()), 0),
                };
                shared.audit.emit(AuditEvent::RecordingEnded {
                    session: handle.id.clone(),
                    recording: summary.file_name.clone(),
                    status: status.into(),
                    error,
                    events,
                    dropped_events: summary.dropped_events,
                });
            }
            shared.audit.emit(AuditEvent::ConnectionClosed {
                session: handle.id.clone(),
                connection: conn_no,
                bytes_to_target: handle.stats.bytes_to_target.load(Ordering::Relaxed),
                bytes_to_client: handle.stats.bytes_to_client.load(Ordering::Relaxed),
            });
            let _ = done_tx.send(end);
        }
        .instrument(span),
    );
}

fn mark_connected(shared: &Shared, handle: &SessionHandle) {
    handle.state.store(STATE_CONNECTED, Ordering::Relaxed);
    let _ = handle.connected_at.set(crate::util::now_rfc3339());
    handle.stats.touch();
    tracing::info!("client connected");
    shared.audit.emit(AuditEvent::SessionConnected {
        session: handle.id.clone(),
    });
}

/// Admits a new tunnelled connection if the session has room; returns its number.
fn admit(shared: &Shared, handle: &SessionHandle) -> Option<u64> {
    let stats = &handle.stats;
    if stats.connections_active.load(Ordering::Relaxed) >= handle.meta.max_connections {
        refused(
            shared,
            handle,
            TunnelErrorCode::TooManyConnections,
            Origin::Client,
        );
        return None;
    }
    stats.connections_active.fetch_add(1, Ordering::Relaxed);
    shared.metrics.connections_total.inc();
    shared.metrics.connections_active.inc();
    stats.touch();
    Some(stats.connections_total.fetch_add(1, Ordering::Relaxed) + 1)
}

fn refused(shared: &Shared, handle: &SessionHandle, code: TunnelErrorCode, origin: Origin) {
    shared.metrics.error(origin, code.as_str());
    let n = handle
        .stats
        .connections_refused
        .fetch_add(1, Ordering::Relaxed)
        + 1;
    if n <= REFUSALS_AUDITED {
        shared.audit.emit(AuditEvent::ConnectionRefused {
            session: handle.id.clone(),
            code,
            origin,
        });
    }
}

/// Releases a connection slot when the relay ends, however it ends.
struct Slot<'a> {
    shared: &'a Shared,
    handle: &'a SessionHandle,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.handle
            .stats
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
        self.shared.metrics.connections_active.dec();
    }
}

struct SessionMeter<'a> {
    shared: &'a Shared,
    stats: &'a SessionStats,
}

impl Meter for SessionMeter<'_> {
    fn sent(&self, n: usize) {
        self.stats
            .bytes_to_client
            .fetch_add(n as u64, Ordering::Relaxed);
        self.shared.metrics.bytes_to_client.inc_by(n as u64);
        self.stats.touch();
    }

    fn received(&self, n: usize) {
        self.stats
            .bytes_to_target
            .fetch_add(n as u64, Ordering::Relaxed);
        self.shared.metrics.bytes_to_target.inc_by(n as u64);
        self.stats.touch();
    }
}

/// One tunnelled TCP connection: the target is connected, then bytes flow until both sides
/// end (or the session does).
async fn relay_tunnel(
    shared: Arc<Shared>,
    handle: Arc<SessionHandle>,
    mut stream: Stream,
    conn_no: u64,
    cancel: CancellationToken,
) {
    let _slot = Slot {
        shared: &shared,
        handle: &handle,
    };
    if !stream.wait_open().await {
        return;
    }
    let tcp = match tunnel::connect_target(
        &handle.meta.target,
        shared.settings.tunnel.target_connect_timeout,
    )
    .await
    {
        Ok(tcp) => tcp,
        Err(failure) => {
            tracing::info!(code = failure.code.as_str(), "target connection failed");
            refused(&shared, &handle, failure.code, Origin::Target);
            stream.refuse(failure.code, failure.message).await;
            return;
        }
    };
    if stream.accept().await.is_err() {
        return;
    }
    opened(&shared, &handle, conn_no);
    let meter = SessionMeter {
        shared: &shared,
        stats: &handle.stats,
    };
    let (totals, result) = tunnel::relay(
        stream,
        tcp,
        shared.settings.tunnel.chunk_bytes,
        &meter,
        &cancel,
        tunnel::CloseRole::Acceptor,
    )
    .await;
    closed(&shared, &handle, conn_no, totals, result);
}

fn opened(shared: &Shared, handle: &SessionHandle, conn_no: u64) {
    tracing::debug!("connected to target");
    shared.audit.emit(AuditEvent::ConnectionOpened {
        session: handle.id.clone(),
        connection: conn_no,
    });
}

fn closed(
    shared: &Shared,
    handle: &SessionHandle,
    conn_no: u64,
    totals: tunnel::RelayTotals,
    result: Result<(), tunnel::RelayError>,
) {
    match &result {
        Ok(()) => tracing::debug!("connection closed"),
        Err(tunnel::RelayError::Cancelled) => tracing::debug!("connection closed by session end"),
        Err(error) => {
            tracing::debug!(%error, "connection ended abnormally");
            let origin = match error {
                tunnel::RelayError::Socket(_) => Origin::Target,
                _ => Origin::Client,
            };
            shared.metrics.error(origin, "connection_aborted");
        }
    }
    shared.audit.emit(AuditEvent::ConnectionClosed {
        session: handle.id.clone(),
        connection: conn_no,
        bytes_to_target: totals.from_peer,
        bytes_to_client: totals.to_peer,
    });
}
