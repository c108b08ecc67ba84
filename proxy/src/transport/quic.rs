//! The QUIC transport (quinn): one UDP endpoint for the daemon, one QUIC connection per
//! session, one bidirectional stream per tunnelled TCP connection.
//!
//! ztproxy's certificate is self-signed and generated at start-up; clients pin its SHA-256
//! (returned when the session is created) instead of trusting a CA. A connection is
//! anonymous until its authentication stream (the client's first unidirectional stream)
//! presents a session's one-time token (framing in [`zt_api::tunnel`]); from then on it
//! belongs to that session, every stream must present the same token, and no other
//! connection can use the token. A connection that does
//! not authenticate within `quic.auth_timeout` is closed.
//!
//! Unauthenticated connections (handshaking, or waiting for their token) are capped at
//! `quic.max_unauthenticated`, because each costs about 50 KiB until it authenticates or
//! times out. Once a quarter of the cap is waiting, a client must first prove its address
//! with a stateless QUIC Retry, so spoofed floods cost nothing; at half the cap, the oldest
//! waiting connection is closed to make room (once it had half a second to present its
//! token); and while waiting and closing connections
//! (quinn keeps a closed connection's state for three probe timeouts) fill the cap, new
//! handshakes are refused statelessly, and clients retry them ([`QuicClient::connect`]). A
//! real client authenticates within a round trip of its handshake, so it gets in during a
//! flood, and a flood cannot hold more than the cap. Keep-alives (`quic.keep_alive`) and the idle timeout (`quic.idle_timeout`,
//! the smaller of both ends' applies) bound how long either end takes to notice the other is
//! gone.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zt_api::audit::AuditEvent;
use zt_api::control::{Origin, QuicEndpoint};
use zt_api::tunnel::{
    self, PREAMBLE_LEN, QUIC_ALPN, QUIC_CLOSE_INVALID_TOKEN, QUIC_CLOSE_PROTOCOL_VIOLATION,
    QUIC_CLOSE_SESSION_ENDED, QuicToken, StreamStatus, TunnelErrorCode,
};

use crate::audit::AuditLog;
use crate::config::QuicSettings;
use crate::metrics::Metrics;
use crate::transport::runtime::set_socket_buffers;
use crate::transport::udp::{self, ZtUdpSocket};

/// Streams a session may have waiting to be picked up by its task.
pub const QUIC_EVENT_CAPACITY: usize = 256;
/// Per-stream receive window: the most one stream buffers for a slow socket.
pub const STREAM_RECEIVE_WINDOW: u32 = 4 * 1024 * 1024;
/// Per-connection receive window: the most one session buffers across its streams.
pub const CONNECTION_RECEIVE_WINDOW: u32 = 32 * 1024 * 1024;
/// Per-connection send window.
pub const SEND_WINDOW: u64 = 8 * 1024 * 1024;
/// Default keep-alive interval, so NATs keep the path open and a dead peer is noticed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Default idle timeout: a connection silent for this long is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an unauthenticated connection is safe from eviction (see
/// `QuicServer::admit_unauthenticated`).
const TOKEN_GRACE: Duration = Duration::from_millis(500);
/// How often a client tries a handshake that ztproxy refuses (see [`QuicClient::connect`]).
const CONNECT_ATTEMPTS: u32 = 25;
/// Close code and reason for an unauthenticated connection closed to make room.
const EVICTED_REASON: &[u8] = b"too many unauthenticated connections";

/// What the QUIC endpoint hands to a session's task.
pub enum QuicEvent {
    /// The session's client connected and authenticated.
    Connected(Connection),
    /// A new stream with a valid preamble: one tunnelled TCP connection. Boxed: the
    /// channel that carries these allocates room for 32 events per session up front, and
    /// an idle session should not pay 32 streams' worth of it.
    Stream(Box<(SendStream, RecvStream)>),
}

/// The daemon's QUIC endpoint.
pub struct QuicServer {
    endpoint: Endpoint,
    /// For clients on loopback: datagrams of [`udp::LOOPBACK_MAX_DATAGRAM`] from the start.
    loopback_config: Arc<quinn::ServerConfig>,
    cert_sha256: String,
    server_name: String,
    advertise: String,
    auth_timeout: Duration,
    max_streams: u32,
    tokens: Mutex<HashMap<[u8; 32], TokenEntry>>,
    max_unauthenticated: usize,
    unauthenticated: Mutex<Unauthenticated>,
    /// Connections that presented a valid token and are not closed yet.
    authenticated: std::sync::atomic::AtomicUsize,
    /// Refusals, logged once a minute with their count.
    refusals: crate::util::LogThrottle,
}

/// Counts one authenticated connection while it lives.
struct AuthenticatedGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for AuthenticatedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Connections that have not presented a token yet, oldest first.
#[derive(Default)]
struct Unauthenticated {
    next_id: u64,
    queue: std::collections::VecDeque<(u64, Instant, CancellationToken)>,
}

/// One unauthenticated connection's place in [`Unauthenticated`]; leaves it when dropped.
struct UnauthenticatedSlot<'a> {
    server: &'a QuicServer,
    id: u64,
    evicted: CancellationToken,
}

impl Drop for UnauthenticatedSlot<'_> {
    fn drop(&mut self) {
        let mut pending = self.server.lock_unauthenticated();
        if let Some(at) = pending.queue.iter().position(|(id, _, _)| *id == self.id) {
            pending.queue.remove(at);
        }
    }
}

struct TokenEntry {
    token: QuicToken,
    session: String,
    events: mpsc::Sender<QuicEvent>,
    used: bool,
}

/// Errors setting up the endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicSetupError {
    /// Certificate generation or TLS configuration failed.
    #[error("QUIC TLS set-up failed: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind QUIC endpoint on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl QuicServer {
    /// Binds the endpoint.
    pub fn bind(settings: &QuicSettings, max_streams: u32) -> Result<Arc<Self>, QuicSetupError> {
        let certified = rcgen::generate_simple_self_signed(vec![settings.server_name.clone()])
            .map_err(|e| QuicSetupError::Tls(e.to_string()))?;
        let cert_der = CertificateDer::from(certified.cert.der().to_vec());
        let cert_sha256 = hex::encode(Sha256::digest(&cert_der));
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicSetupError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key)
        .map_err(|e| QuicSetupError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![QUIC_ALPN.to_vec()];
        let crypto =
            QuicServerConfig::try_from(tls).map_err(|e| QuicSetupError::Tls(e.to_string()))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let liveness = Liveness {
            keep_alive: settings.keep_alive,
            idle_timeout: settings.idle_timeout,
        };
        server_config.transport_config(Arc::new(transport_config(max_streams, false, liveness)));
        // Handshakes not yet taken from the endpoint (each holds its first datagrams).
        server_config.max_incoming(settings.max_unauthenticated.saturating_mul(4));
        let mut loopback_config = server_config.clone();
        loopback_config.transport_config(Arc::new(transport_config(max_streams, true, liveness)));

        let socket = bind_udp(settings.listen, settings.socket_buffer_bytes).map_err(|source| {
            QuicSetupError::Bind {
                addr: settings.listen,
                source,
            }
        })?;
        let local = socket.local_addr().map_err(|source| QuicSetupError::Bind {
            addr: settings.listen,
            source,
        })?;
        let endpoint =
            new_endpoint(Some(server_config), socket).map_err(|source| QuicSetupError::Bind {
                addr: settings.listen,
                source,
            })?;
        Ok(Arc::new(Self {
            endpoint,
            loopback_config: Arc::new(loopback_config),
            cert_sha256,
            server_name: settings.server_name.clone(),
            advertise: settings
                .advertise
                .clone()
                .unwrap_or_else(|| local.to_string()),
            auth_timeout: settings.auth_timeout,
            max_streams,
            tokens: Mutex::new(HashMap::new()),
            max_unauthenticated: settings.max_unauthenticated,
            unauthenticated: Mutex::new(Unauthenticated::default()),
            authenticated: std::sync::atomic::AtomicUsize::new(0),
            refusals: crate::util::LogThrottle::new(Duration::from_secs(60)),
        }))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Creates a one-time token for `session`. Returns what to give the client and where
    /// the session's events arrive.
    pub fn register(
        &self,
        session: &str,
    ) -> io::Result<(QuicEndpoint, [u8; 32], mpsc::Receiver<QuicEvent>)> {
        let token = QuicToken::from_bytes(crate::util::random_bytes()?);
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let (events_tx, events) = mpsc::channel(QUIC_EVENT_CAPACITY);
        let info = QuicEndpoint {
            endpoint: self.advertise.clone(),
            server_name: self.server_name.clone(),
            cert_sha256: self.cert_sha256.clone(),
            token: token.to_base64().into(),
        };
        self.lock().insert(
            key,
            TokenEntry {
                token,
                session: session.to_owned(),
                events: events_tx,
                used: false,
            },
        );
        Ok((info, key, events))
    }

    /// Forgets a session's token (the session ended).
    pub fn unregister(&self, key: &[u8; 32]) {
        self.lock().remove(key);
    }

    /// Accepts connections until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        audit: Arc<AuditLog>,
        metrics: Arc<Metrics>,
    ) {
        loop {
            let incoming = tokio::select! {
                () = shutdown.cancelled() => break,
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => incoming,
                    None => break,
                },
            };
            let pending = self.lock_unauthenticated().queue.len();
            // Connections not (or no longer) authenticated: handshaking, waiting for a token,
            // or closed and draining (quinn keeps a closed connection's state for three
            // probe timeouts).
            let unauthenticated = self.endpoint.open_connections().saturating_sub(
                self.authenticated
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
            if unauthenticated >= self.max_unauthenticated {
                // Stateless; the client retries (see `QuicClient::connect`).
                incoming.refuse();
                self.note_refused(&metrics);
                continue;
            }
            if pending >= self.max_unauthenticated / 4
                && !incoming.remote_address_validated()
                && incoming.may_retry()
            {
                // Under load, only clients that can receive at their address get state.
                let _ = incoming.retry();
                continue;
            }
            let Some((id, evicted)) = self.admit_unauthenticated(&metrics) else {
                incoming.refuse();
                self.note_refused(&metrics);
                continue;
            };
            let server = self.clone();
            let audit = audit.clone();
            let metrics = metrics.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let slot = UnauthenticatedSlot {
                    server: &server,
                    id,
                    evicted,
                };
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = server.handle_connection(incoming, slot, &audit, &metrics) => {}
                }
            });
        }
        self.endpoint.close(
            VarInt::from_u32(QUIC_CLOSE_SESSION_ENDED),
            b"ztproxy shutting down",
        );
    }

    /// Takes a place among the unauthenticated connections. When half the budget waits, the
    /// oldest is closed to make room, but only once it has had [`TOKEN_GRACE`] (a real
    /// client's token arrives within a round trip of its handshake); if none has, there is
    /// no room.
    fn admit_unauthenticated(&self, metrics: &Metrics) -> Option<(u64, CancellationToken)> {
        let mut pending = self.lock_unauthenticated();
        while pending.queue.len() >= (self.max_unauthenticated / 2).max(1) {
            match pending.queue.front() {
                Some((_, admitted, _)) if admitted.elapsed() >= TOKEN_GRACE => {}
                _ => return None,
            }
            if let Some((_, _, oldest)) = pending.queue.pop_front() {
                oldest.cancel();
                metrics.error(Origin::Client, "quic_unauthenticated_evicted");
            }
        }
        let id = pending.next_id;
        pending.next_id += 1;
        let evicted = CancellationToken::new();
        pending
            .queue
            .push_back((id, Instant::now(), evicted.clone()));
        Some((id, evicted))
    }

    /// Counts a refused handshake; logs at most one line a minute with the count.
    fn note_refused(&self, metrics: &Metrics) {
        metrics.error(Origin::Client, "quic_unauthenticated_refused");
        if let Some(refused) = self.refusals.note(1) {
            tracing::warn!(
                refused,
                max = self.max_unauthenticated,
                "too many unauthenticated QUIC connections; refusing handshakes"
            );
        }
    }

    fn lock_unauthenticated(&self) -> std::sync::MutexGuard<'_, Unauthenticated> {
        // Every update is a single push, pop or removal: a poisoned queue is intact.
        self.unauthenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    async fn handle_connection(
        &self,
        incoming: quinn::Incoming,
        slot: UnauthenticatedSlot<'_>,
        audit: &AuditLog,
        metrics: &Metrics,
    ) {
        let deadline = Instant::now() + self.auth_timeout;
        let Some(conn) = self.handshake(incoming, &slot, deadline, metrics).await else {
            return;
        };
        let Some(token) = authenticate(&conn, slot, deadline, audit, metrics).await else {
            return;
        };
        let (session, events) = match self.claim(&token) {
            Ok(claimed) => claimed,
            Err(reason) => {
                deny(
                    &conn,
                    audit,
                    metrics,
                    reason,
                    "invalid or already used token",
                );
                return;
            }
        };
        tracing::debug!(session = %session, remote = %crate::util::Redacted(conn.remote_address()), "QUIC client authenticated");
        self.authenticated
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _authenticated = AuthenticatedGuard(&self.authenticated);
        if events
            .send(QuicEvent::Connected(conn.clone()))
            .await
            .is_err()
        {
            conn.close(VarInt::from_u32(QUIC_CLOSE_SESSION_ENDED), b"session ended");
            return;
        }
        self.serve_streams(&conn, &token, &events, audit, metrics)
            .await;
    }

    /// The TLS handshake, within the deadline, unless the connection is evicted first.
    async fn handshake(
        &self,
        incoming: quinn::Incoming,
        slot: &UnauthenticatedSlot<'_>,
        deadline: Instant,
        metrics: &Metrics,
    ) -> Option<Connection> {
        let remote = incoming.remote_address();
        let connecting = if remote.ip().to_canonical().is_loopback() {
            incoming.accept_with(self.loopback_config.clone())
        } else {
            incoming.accept()
        };
        // Dropping `Connecting` (on timeout or eviction) closes the connection.
        let handshake = match connecting {
            Ok(connecting) => tokio::select! {
                () = slot.evicted.cancelled() => return None,
                handshake = tokio::time::timeout_at(deadline.into(), connecting) => handshake,
            },
            Err(error) => Ok(Err(error)),
        };
        match handshake {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(error)) => {
                tracing::debug!(remote = %crate::util::Redacted(remote), %error, "QUIC handshake failed");
                metrics.error(Origin::Client, "quic_handshake");
                None
            }
            Err(_) => {
                metrics.error(Origin::Client, "quic_handshake_timeout");
                None
            }
        }
    }

    /// Claims the session `token` was issued for (once).
    fn claim(&self, token: &QuicToken) -> Result<(String, mpsc::Sender<QuicEvent>), &'static str> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut tokens = self.lock();
        match tokens.get_mut(&key) {
            Some(entry) if entry.token.ct_eq(token) && !entry.used => {
                entry.used = true;
                Ok((entry.session.clone(), entry.events.clone()))
            }
            Some(_) => Err("token_reused"),
            None => Err("wrong_token"),
        }
    }

    /// Every later stream must carry the same token; the session task takes them in turn.
    async fn serve_streams(
        &self,
        conn: &Connection,
        token: &QuicToken,
        events: &mpsc::Sender<QuicEvent>,
        audit: &AuditLog,
        metrics: &Metrics,
    ) {
        loop {
            let Ok((send, mut recv)) = conn.accept_bi().await else {
                return;
            };
            let preamble = tokio::time::timeout(self.auth_timeout, read_preamble(&mut recv)).await;
            match preamble {
                Ok(Ok(presented)) if presented.ct_eq(token) => {
                    if events
                        .send(QuicEvent::Stream(Box::new((send, recv))))
                        .await
                        .is_err()
                    {
                        conn.close(VarInt::from_u32(QUIC_CLOSE_SESSION_ENDED), b"session ended");
                        return;
                    }
                }
                Ok(Ok(_)) => {
                    deny(
                        conn,
                        audit,
                        metrics,
                        "wrong_token",
                        "stream token does not match",
                    );
                    return;
                }
                _ => {
                    metrics.error(Origin::Client, "bad_preamble");
                    conn.close(
                        VarInt::from_u32(QUIC_CLOSE_PROTOCOL_VIOLATION),
                        b"stream does not start with a token",
                    );
                    return;
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], TokenEntry>> {
        // Every update is a single insert, remove or flag write: a poisoned map is intact.
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream limit per connection.
    pub fn max_streams(&self) -> u32 {
        self.max_streams
    }
}

fn deny(conn: &Connection, audit: &AuditLog, metrics: &Metrics, reason: &str, message: &str) {
    metrics.error(Origin::Client, "quic_access_denied");
    audit.emit(AuditEvent::AccessDenied {
        resource: "quic".into(),
        reason: reason.into(),
    });
    conn.close(
        VarInt::from_u32(QUIC_CLOSE_INVALID_TOKEN),
        message.as_bytes(),
    );
}

/// Authentication: the client's first unidirectional stream carries the token, within the
/// deadline (the connection leaves the unauthenticated budget either way).
async fn authenticate(
    conn: &Connection,
    slot: UnauthenticatedSlot<'_>,
    deadline: Instant,
    audit: &AuditLog,
    metrics: &Metrics,
) -> Option<QuicToken> {
    let preamble = tokio::select! {
        () = slot.evicted.cancelled() => {
            conn.close(VarInt::from_u32(QUIC_CLOSE_INVALID_TOKEN), EVICTED_REASON);
            return None;
        }
        preamble = tokio::time::timeout_at(deadline.into(), async {
            let mut recv = conn.accept_uni().await.ok()?;
            Some(read_preamble(&mut recv).await)
        }) => preamble,
    };
    drop(slot);
    match preamble {
        Ok(Some(Ok(token))) => Some(token),
        Ok(Some(Err(_))) => {
            deny(
                conn,
                audit,
                metrics,
                "bad_preamble",
                "stream does not start with a token",
            );
            None
        }
        Ok(None) => None,
        Err(_) => {
            deny(
                conn,
                audit,
                metrics,
                "missing_token",
                "no token presented in time",
            );
            None
        }
    }
}

async fn read_preamble(recv: &mut RecvStream) -> Result<QuicToken, tunnel::FramingError> {
    let mut preamble = [0u8; PREAMBLE_LEN];
    recv.read_exact(&mut preamble)
        .await
        .map_err(|_| tunnel::FramingError::BadPreamble)?;
    tunnel::parse_preamble(&preamble)
}

/// How one end notices the other is gone.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Idle timeout (the smaller of both ends' applies).
    pub idle_timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            keep_alive: KEEP_ALIVE,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// The transport settings; `loopback` for a peer on this host, where datagrams of 64 KiB pass
/// (see [`udp`]).
fn transport_config(
    max_streams: u32,
    loopback: bool,
    liveness: Liveness,
) -> quinn::TransportConfig {
    let mut config = quinn::TransportConfig::default();
    config
        .max_concurrent_bidi_streams(VarInt::from_u32(max_streams))
        // One unidirectional stream per connection: the authentication stream.
        .max_concurrent_uni_streams(VarInt::from_u32(1))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW))
        .send_window(SEND_WINDOW)
        .keep_alive_interval(Some(liveness.keep_alive));
    if loopback {
        // Loopback carries the largest datagrams from the start, so nothing is probed
        // (see `udp` for why that matters to an idle session's memory). Discovery stays on
        // with the same bound: after a black hole it finds its way back up from quinn's
        // minimum.
        config.initial_mtu(udp::LOOPBACK_MAX_DATAGRAM);
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(udp::LOOPBACK_MAX_DATAGRAM);
        config.mtu_discovery_config(Some(mtu));
        // quinn's initial congestion window (~14 KB) is smaller than one such datagram. Ten
        // datagrams of the path's size, as RFC 9002 advises.
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window(10 * u64::from(udp::LOOPBACK_MAX_DATAGRAM));
        config.congestion_controller_factory(Arc::new(cubic));
    }
    if let Ok(idle) = liveness.idle_timeout.try_into() {
        config.max_idle_timeout(Some(idle));
    }
    config
}

/// An endpoint on `socket` through [`ZtUdpSocket`], accepting datagrams up to
/// [`udp::MAX_RECEIVE_PAYLOAD`].
fn new_endpoint(
    server_config: Option<quinn::ServerConfig>,
    socket: std::net::UdpSocket,
) -> io::Result<Endpoint> {
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    let socket = ZtUdpSocket::new(runtime.wrap_udp_socket(socket)?);
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(udp::MAX_RECEIVE_PAYLOAD)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Endpoint::new_with_abstract_socket(config, server_config, socket, runtime)
}

fn bind_udp(addr: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    set_socket_buffers(&socket2::SockRef::from(&socket), buffer);
    Ok(socket)
}

/// Writes a status at the start of a stream.
pub async fn write_status(
    send: &mut SendStream,
    status: &StreamStatus,
) -> Result<(), quinn::WriteError> {
    send.write_all(&status.encode()).await
}

/// Refuses a stream with `code`, finishing it.
pub async fn refuse_stream(mut send: SendStream, code: TunnelErrorCode, message: String) {
    let _ = write_status(&mut send, &StreamStatus::Failed { code, message }).await;
    let _ = send.finish();
    // Wait until the peer has the status (or gives up), so dropping the stream cannot
    // discard it.
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
}

/// Why a client could not connect or open a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicClientError {
    /// The endpoint info is unusable.
    #[error("bad QUIC endpoint info: {0}")]
    BadEndpoint(String),
    /// Connecting failed.
    #[error("QUIC connection failed: {0}")]
    Connect(String),
    /// ztproxy refused the stream.
    #[error("ztproxy refused the connection ({code}): {message}")]
    Refused {
        /// Why.
        code: TunnelErrorCode,
        /// For people.
        message: String,
    },
    /// The stream failed.
    #[error("QUIC stream failed: {0}")]
    Stream(String),
}

/// The client end of a QUIC session (the `connect` CLI, tests, benchmarks).
pub struct QuicClient {
    endpoint: Endpoint,
    conn: Connection,
    token: QuicToken,
}

impl QuicClient {
    /// Connects to ztproxy and pins its certificate.
    pub async fn connect(
        info: &QuicEndpoint,
        socket_buffer_bytes: usize,
    ) -> Result<Self, QuicClientError> {
        let pinned: [u8; 32] = hex::decode(&info.cert_sha256)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| {
                QuicClientError::BadEndpoint("cert_sha256 is not 32 hex bytes".into())
            })?;
        let token = QuicToken::from_base64(info.token.expose_secret())
            .map_err(|e| QuicClientError::BadEndpoint(e.to_string()))?;
        let addr: SocketAddr = tokio::net::lookup_host(&info.endpoint)
            .await
            .map_err(|e| QuicClientError::BadEndpoint(format!("{}: {e}", info.endpoint)))?
            .next()
            .ok_or_else(|| {
                QuicClientError::BadEndpoint(format!("{} has no address", info.endpoint))
            })?;
        let endpoint = client_endpoint(addr, pinned, socket_buffer_bytes)?;
        // ztproxy refuses handshakes while unauthenticated connections fill its budget (a
        // flood): try again, backing off, for about ten seconds.
        let mut backoff = Duration::from_millis(20);
        let mut attempts = 0;
        let conn = loop {
            let attempt = endpoint
                .connect(addr, &info.server_name)
                .map_err(|e| QuicClientError::Connect(e.to_string()))?
                .await;
            match attempt {
                Ok(conn) => break conn,
                Err(quinn::ConnectionError::ConnectionClosed(close))
                    if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED
                        && attempts < CONNECT_ATTEMPTS =>
                {
                    attempts += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(error) => return Err(QuicClientError::Connect(error.to_string())),
            }
        };
        // Authenticate the connection: the token on the first unidirectional stream.
        let mut auth = conn
            .open_uni()
            .await
            .map_err(|e| QuicClientError::Connect(e.to_string()))?;
        auth.write_all(&tunnel::encode_preamble(&token))
            .await
            .map_err(|e| QuicClientError::Connect(e.to_string()))?;
        let _ = auth.finish();
        Ok(Self {
            endpoint,
            conn,
            token,
        })
    }

    /// Opens a stream to the session's target; returns once ztproxy has connected to it.
    pub async fn open(&self) -> Result<(SendStream, RecvStream), QuicClientError> {
        let (mut send, mut recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| QuicClientError::Stream(e.to_string()))?;
        send.write_all(&tunnel::encode_preamble(&self.token))
            .await
            .map_err(|e| QuicClientError::Stream(e.to_string()))?;
        let mut buf = Vec::with_capacity(8);
        loop {
            if let Some((status, _)) =
                StreamStatus::decode(&buf).map_err(|e| QuicClientError::Stream(e.to_string()))?
            {
                return match status {
                    StreamStatus::Connected => Ok((send, recv)),
                    StreamStatus::Failed { code, message } => {
                        Err(QuicClientError::Refused { code, message })
                    }
                };
            }
            // The status is at most 3 + MAX_ERROR_MESSAGE_LEN bytes and payload only follows
            // `Connected`, whose status is one byte: reading one byte at a time never takes
            // payload.
            let mut byte = [0u8; 1];
            match recv.read(&mut byte).await {
                Ok(Some(1)) => buf.extend_from_slice(&byte),
                Ok(_) => {
                    return Err(QuicClientError::Stream(
                        "stream ended before ztproxy's status".into(),
                    ));
                }
                Err(e) => return Err(QuicClientError::Stream(e.to_string())),
            }
        }
    }

    /// The connection, for waiting on its closure.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Why ztproxy ended the session, once the connection is closed with
    /// [`QUIC_CLOSE_SESSION_ENDED`].
    pub fn end_reason(&self) -> Option<zt_api::control::EndReason> {
        match self.conn.close_reason()? {
            quinn::ConnectionError::ApplicationClosed(close)
                if close.error_code == VarInt::from_u32(QUIC_CLOSE_SESSION_ENDED) =>
            {
                let reason = std::str::from_utf8(&close.reason).ok()?;
                serde_json::from_value(serde_json::Value::String(reason.to_owned())).ok()
            }
            _ => None,
        }
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(VarInt::from_u32(0), b"client done");
        self.endpoint.close(VarInt::from_u32(0), b"client done");
    }
}

/// A client endpoint for connecting to `server` (for its address family), trusting only the
/// certificate whose SHA-256 is `pinned`.
pub fn client_endpoint(
    server: SocketAddr,
    pinned: [u8; 32],
    socket_buffer_bytes: usize,
) -> Result<Endpoint, QuicClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicClientError::Connect(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertVerifier { pinned, provider }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![QUIC_ALPN.to_vec()];
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|e| QuicClientError::Connect(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(
        0,
        server.ip().to_canonical().is_loopback(),
        Liveness::default(),
    )));
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket =
        bind_udp(bind, socket_buffer_bytes).map_err(|e| QuicClientError::Connect(e.to_string()))?;
    let mut endpoint =
        new_endpoint(None, socket).map_err(|e| QuicClientError::Connect(e.to_string()))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Accepts exactly the server certificate whose SHA-256 is pinned, and checks that the
/// handshake is signed by its key.
#[derive(Debug)]
struct PinnedCertVerifier {
    pinned: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity).into();
        if bool::from(digest.ct_eq(&self.pinned)) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // TLS 1.2 is not offered; QUIC requires TLS 1.3.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
