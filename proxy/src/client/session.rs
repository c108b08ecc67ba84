//! The client end of a session, tunnel or connection, as the desktop app or a vault runs it:
//! `ztproxy connect tunnel`, the tests' clients and the benchmarks.
//!
//! [`ClientSession`] creates the session through the control API (playing the gateway's part
//! too) and joins it over WebRTC or QUIC. For a tunnel, [`serve`] carries every connection
//! accepted on a local TCP listener over its own data channel or QUIC stream to ztproxy,
//! which connects it to the session's target.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use zt_api::Secret;
use zt_api::control::{
    Conversation, CreateSessionRequest, CreateSessionResponse, CreateViewerRequest, EndReason,
    LimitsRequest, SdpType, SessionDescription, SignallingRequest, Target, Transport,
};
use zt_api::seal::{self, SealKey, SignallingDirection};
use zt_api::tunnel::{ChannelControl, DATA_CHANNEL_PROTOCOL};

use crate::client::api::{ApiClient, ClientError};
use crate::transport::quic::{QuicClient, QuicClientError};
use crate::transport::stream::Stream;
use crate::transport::webrtc::{CONTROL_CHANNEL_LABEL, Peer, PeerEvent, PeerSettings};
use crate::tunnel::{self, NoMeter, RelayError};

/// Label of tunnel data channels.
pub const TUNNEL_CHANNEL_LABEL: &str = "tunnel";
/// Chunk size the client reads from local sockets.
pub const CLIENT_CHUNK: usize = 63 * 1024;
/// Attempts to open a data channel (see [`ClientSession::open`]).
pub const OPEN_ATTEMPTS: usize = 20;

/// What to connect to and how.
#[derive(Debug, Clone)]
pub struct TunnelOptions {
    /// WebRTC or QUIC.
    pub transport: Transport,
    /// The target (as the gateway would choose it).
    pub target: Target,
    /// Protocol label.
    pub protocol: Option<String>,
    /// Sealed signalling: resource id and base64 traffic secret.
    pub signalling: Option<(String, Secret<String>)>,
    /// Session limits to ask for.
    pub limits: LimitsRequest,
    /// Resource id for audit.
    pub resource_id: Option<String>,
    /// Peer-connection settings (WebRTC).
    pub peer: PeerSettings,
    /// How long to wait for the transport to connect.
    pub connect_timeout: Duration,
}

/// Why a tunnel could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// The control API refused or failed.
    #[error("cannot create the session: {0}")]
    Api(#[from] ClientError),
    /// The sealed signalling keys are unusable or the answer did not open.
    #[error("sealed signalling: {0}")]
    Seal(String),
    /// The WebRTC stack failed.
    #[error("WebRTC: {0}")]
    Webrtc(String),
    /// The QUIC connection failed.
    #[error(transparent)]
    Quic(#[from] QuicClientError),
    /// The transport did not connect in time.
    #[error("the connection to ztproxy was not established within {0:?}")]
    Timeout(Duration),
    /// The session ended.
    #[error("the session ended")]
    SessionEnded,
    /// ztproxy ended the session and said why.
    #[error("the session ended ({})", .0.as_str())]
    SessionEndedBecause(EndReason),
}

/// A client session, connected.
pub struct ClientSession {
    transport: ClientTransport,
    ended: CancellationToken,
    end_reason: Arc<std::sync::Mutex<Option<EndReason>>>,
}

enum ClientTransport {
    Webrtc {
        peer: Peer,
        // Kept open for the session's life.
        _control: Arc<dyn DataChannel>,
    },
    Quic(QuicClient),
}

/// A stream to the target, opened through ztproxy.
pub type ClientStream = Stream;

impl ClientSession {
    /// Creates the session through `api` and connects to ztproxy. Returns the session id too.
    pub async fn connect(
        api: &ApiClient,
        options: &TunnelOptions,
    ) -> Result<(Self, String), TunnelError> {
        let request = CreateSessionRequest {
            transport: options.transport,
            conversation: Conversation::Tunnel,
            protocol: options.protocol.clone(),
            target: options.target.clone(),
            offer: None,
            sealed_offer: None,
            signalling: None,
            parameters: Default::default(),
            limits: options.limits.clone(),
            route: None,
            recording: None,
            resource_id: options.resource_id.clone(),
            user: None,
        };
        Self::connect_with(api, request, options).await
    }

    /// Creates the session described by `request` (its transport decides how to connect;
    /// the offer is filled in here) and connects, with `options`' peer settings, signalling
    /// keys and timeout. This is how a gateway-and-client pair creates a connection session.
    pub async fn connect_with(
        api: &ApiClient,
        request: CreateSessionRequest,
        options: &TunnelOptions,
    ) -> Result<(Self, String), TunnelError> {
        Self::create(api, Creation::Session(Box::new(request)), options).await
    }

    /// Joins the running connection session `session` as a viewer described by `request`
    /// (its transport decides how to connect; the offer is filled in here), with `options`'
    /// peer settings, signalling keys and timeout. Returns the viewer's id.
    pub async fn join(
        api: &ApiClient,
        session: &str,
        request: CreateViewerRequest,
        options: &TunnelOptions,
    ) -> Result<(Self, String), TunnelError> {
        let creation = Creation::Viewer {
            session: session.to_owned(),
            request: Box::new(request),
        };
        Self::create(api, creation, options).await
    }

    async fn create(
        api: &ApiClient,
        creation: Creation,
        options: &TunnelOptions,
    ) -> Result<(Self, String), TunnelError> {
        match creation.transport() {
            Transport::Quic => Self::connect_quic(api, creation, options).await,
            Transport::Webrtc => Self::connect_webrtc(api, creation, options).await,
        }
    }

    async fn connect_quic(
        api: &ApiClient,
        request: Creation,
        options: &TunnelOptions,
    ) -> Result<(Self, String), TunnelError> {
        let response = request.send(api).await?;
        let info = response
            .quic
            .ok_or_else(|| TunnelError::Seal("no QUIC endpoint in the answer".into()))?;
        let client = tokio::time::timeout(
            options.connect_timeout,
            QuicClient::connect(&info, options.peer.socket_buffer_bytes),
        )
        .await
        .map_err(|_| TunnelError::Timeout(options.connect_timeout))??;
        let ended = CancellationToken::new();
        let conn = client.connection().clone();
        let signal = ended.clone();
        tokio::spawn(async move {
            conn.closed().await;
            signal.cancel();
        });
        let session = Self {
            transport: ClientTransport::Quic(client),
            ended,
            end_reason: Arc::default(),
        };
        Ok((session, response.id))
    }

    async fn connect_webrtc(
        api: &ApiClient,
        mut request: Creation,
        options: &TunnelOptions,
    ) -> Result<(Self, String), TunnelError> {
        let mut peer = Peer::build(&options.peer)
            .await
            .map_err(|e| TunnelError::Webrtc(e.to_string()))?;
        let control = peer
            .pc
            .create_data_channel(CONTROL_CHANNEL_LABEL, None)
            .await
            .map_err(|e| TunnelError::Webrtc(e.to_string()))?;
        let offer_sdp = peer
            .offer(options.peer.gather_timeout)
            .await
            .map_err(|e| TunnelError::Webrtc(e.to_string()))?;
        let (offer, sealed_offer, signalling) = request.offer_fields();
        let answer_key = put_offer_into(
            (offer, sealed_offer, signalling),
            offer_sdp,
            options.signalling.as_ref(),
        )?;
        let response = match request.send(api).await {
            Ok(response) => response,
            Err(e) => {
                let _ = peer.pc.close().await;
                return Err(e.into());
            }
        };
        let answer_sdp = open_answer(answer_key, response.answer, response.sealed_answer)?;
        peer.accept_answer(answer_sdp)
            .await
            .map_err(|e| TunnelError::Webrtc(e.to_string()))?;
        wait_connected(&mut peer, options.connect_timeout).await?;
        if !tunnel::wait_open(&control, options.connect_timeout).await {
            return Err(TunnelError::SessionEnded);
        }
        peer.kick.done();
        let (ended, end_reason) = watch_end(&mut peer, &control);
        let session = Self {
            transport: ClientTransport::Webrtc {
                peer,
                _control: control,
            },
            ended,
            end_reason,
        };
        Ok((session, response.id))
    }

    /// Opens a stream to the target.
    pub async fn open(&self) -> Result<ClientStream, TunnelError> {
        if self.ended.is_cancelled() {
            return Err(TunnelError::SessionEnded);
        }
        match &self.transport {
            ClientTransport::Webrtc { peer, .. } => {
                // webrtc 0.21 frees a closed channel's stream id as soon as it sends the
                // stream reset, before SCTP has finished the reset, and hands the id to the next
                // channel, whose open then fails. Such a channel closes at once; a retry after
                // the reset has completed (a round trip later) succeeds.
                let mut delay = Duration::from_millis(2);
                for _ in 0..OPEN_ATTEMPTS {
                    let dc = peer
                        .pc
                        .create_data_channel(
                            TUNNEL_CHANNEL_LABEL,
                            Some(RTCDataChannelInit {
                                ordered: true,
                                max_packet_life_time: None,
                                max_retransmits: None,
                                protocol: DATA_CHANNEL_PROTOCOL.to_owned(),
                                negotiated: None,
                            }),
                        )
                        .await
                        .map_err(|e| TunnelError::Webrtc(e.to_string()))?;
                    if tunnel::wait_open(&dc, tunnel::OPEN_TIMEOUT).await {
                        return Ok(ClientStream::Channel(dc));
                    }
                    if self.ended.is_cancelled() {
                        break;
                    }
                    tracing::debug!("data channel did not open; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
                Err(TunnelError::SessionEnded)
            }
            ClientTransport::Quic(client) => {
                let (send, recv) = client.open().await?;
                Ok(ClientStream::Quic(send, recv))
            }
        }
    }

    /// Resolves when the session ends (ztproxy closed it or the connection was lost).
    pub async fn closed(&self) {
        self.ended.cancelled().await;
    }

    /// The QUIC connection's path statistics (round-trip time, congestion window, path MTU,
    /// losses); `None` over WebRTC.
    pub fn quic_path_stats(&self) -> Option<quinn::PathStats> {
        match &self.transport {
            ClientTransport::Webrtc { .. } => None,
            ClientTransport::Quic(client) => Some(client.connection().stats().path),
        }
    }

    /// Why ztproxy ended the session, when it said so.
    pub fn end_reason(&self) -> Option<EndReason> {
        match &self.transport {
            ClientTransport::Webrtc { .. } => {
                *self.end_reason.lock().unwrap_or_else(|e| e.into_inner())
            }
            ClientTransport::Quic(client) => client.end_reason(),
        }
    }

    /// Closes the session's transport.
    pub async fn close(&self) {
        match &self.transport {
            ClientTransport::Webrtc { peer, .. } => {
                let _ = peer.pc.close().await;
            }
            ClientTransport::Quic(client) => client.close(),
        }
    }
}

/// What a client asks ztproxy to create: a session, or a viewer of a running one.
enum Creation {
    Session(Box<CreateSessionRequest>),
    Viewer {
        session: String,
        request: Box<CreateViewerRequest>,
    },
}

/// A request's offer, sealed offer and signalling keys.
type OfferFields<'a> = (
    &'a mut Option<SessionDescription>,
    &'a mut Option<String>,
    &'a mut Option<SignallingRequest>,
);

impl Creation {
    fn transport(&self) -> Transport {
        match self {
            Self::Session(request) => request.transport,
            Self::Viewer { request, .. } => request.transport,
        }
    }

    fn offer_fields(&mut self) -> OfferFields<'_> {
        match self {
            Self::Session(r) => (&mut r.offer, &mut r.sealed_offer, &mut r.signalling),
            Self::Viewer { request: r, .. } => {
                (&mut r.offer, &mut r.sealed_offer, &mut r.signalling)
            }
        }
    }

    async fn send(&self, api: &ApiClient) -> Result<CreateSessionResponse, ClientError> {
        match self {
            Self::Session(request) => api.create_session(request).await,
            Self::Viewer { session, request } => api.create_viewer(session, request).await,
        }
    }
}

/// Puts the offer into the request, sealed when `signalling` says so; returns the key the
/// answer will be sealed under.
pub(crate) fn put_offer(
    request: &mut CreateSessionRequest,
    offer_sdp: String,
    signalling: Option<&(String, Secret<String>)>,
) -> Result<Option<SealKey>, TunnelError> {
    put_offer_into(
        (
            &mut request.offer,
            &mut request.sealed_offer,
            &mut request.signalling,
        ),
        offer_sdp,
        signalling,
    )
}

/// [`put_offer`] for a viewer's request.
pub(crate) fn put_viewer_offer(
    request: &mut CreateViewerRequest,
    offer_sdp: String,
    signalling: Option<&(String, Secret<String>)>,
) -> Result<Option<SealKey>, TunnelError> {
    put_offer_into(
        (
            &mut request.offer,
            &mut request.sealed_offer,
            &mut request.signalling,
        ),
        offer_sdp,
        signalling,
    )
}

fn put_offer_into(
    (offer_slot, sealed_slot, signalling_slot): OfferFields<'_>,
    offer_sdp: String,
    signalling: Option<&(String, Secret<String>)>,
) -> Result<Option<SealKey>, TunnelError> {
    let offer = SessionDescription {
        kind: SdpType::Offer,
        sdp: offer_sdp,
    };
    let Some((resource_id, secret)) = signalling else {
        *offer_slot = Some(offer);
        return Ok(None);
    };
    let seal_error = |e: &dyn std::fmt::Display| TunnelError::Seal(e.to_string());
    let secret = seal::decode_traffic_secret(secret.expose_secret()).map_err(|e| seal_error(&e))?;
    let offer_key = SealKey::derive(&secret, resource_id, SignallingDirection::Offer);
    let json = serde_json::to_vec(&offer).map_err(|e| seal_error(&e))?;
    *sealed_slot = Some(offer_key.seal(&json).map_err(|e| seal_error(&e))?);
    *signalling_slot = Some(SignallingRequest {
        resource_id: resource_id.clone(),
        traffic_secret: secret_b64(&secret),
    });
    Ok(Some(SealKey::derive(
        &secret,
        resource_id,
        SignallingDirection::Answer,
    )))
}

/// ztproxy's answer, opened if it was to be sealed.
pub(crate) fn open_answer(
    answer_key: Option<SealKey>,
    answer: Option<SessionDescription>,
    sealed: Option<String>,
) -> Result<String, TunnelError> {
    match (answer_key, answer, sealed) {
        (None, Some(answer), _) => Ok(answer.sdp),
        (Some(key), _, Some(sealed)) => {
            let plain = key
                .open(&sealed)
                .map_err(|e| TunnelError::Seal(e.to_string()))?;
            let answer: SessionDescription =
                serde_json::from_slice(&plain).map_err(|e| TunnelError::Seal(e.to_string()))?;
            Ok(answer.sdp)
        }
        _ => Err(TunnelError::Seal(
            "ztproxy's answer is missing or not sealed as asked".into(),
        )),
    }
}

/// Waits until the peer connection is up.
async fn wait_connected(peer: &mut Peer, timeout: Duration) -> Result<(), TunnelError> {
    let connected = async {
        while let Some(event) = peer.events.recv().await {
            match event {
                PeerEvent::Connected => return true,
                PeerEvent::Failed | PeerEvent::Closed => return false,
                _ => {}
            }
        }
        false
    };
    match tokio::time::timeout(timeout, connected).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(TunnelError::SessionEnded),
        Err(_) => Err(TunnelError::Timeout(timeout)),
    }
}

/// The session is over when the peer connection fails or closes, or when ztproxy closes
/// the control channel (after saying why on it): the token that says so, and the reason.
fn watch_end(
    peer: &mut Peer,
    control: &Arc<dyn DataChannel>,
) -> (CancellationToken, Arc<std::sync::Mutex<Option<EndReason>>>) {
    let ended = CancellationToken::new();
    let end_reason = Arc::new(std::sync::Mutex::new(None));
    let mut events = std::mem::replace(&mut peer.events, tokio::sync::mpsc::channel(1).1);
    let signal = ended.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                PeerEvent::Failed | PeerEvent::Closed => break,
                PeerEvent::DataChannel(dc) => {
                    // ztproxy never opens channels towards clients.
                    let _ = dc.close().await;
                }
                _ => {}
            }
        }
        signal.cancel();
    });
    let watched = control.clone();
    let signal = ended.clone();
    let reason_slot = Arc::clone(&end_reason);
    tokio::spawn(async move {
        while let Some(event) = watched.poll().await {
            match event {
                DataChannelEvent::OnMessage(message) if message.is_string => {
                    if let Ok(ChannelControl::SessionEnded { reason }) =
                        ChannelControl::parse(&message.data)
                    {
                        *reason_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                    }
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
        signal.cancel();
    });
    (ended, end_reason)
}

fn secret_b64(secret: &[u8]) -> Secret<String> {
    use base64::Engine;
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret))
}

/// Relays one local TCP connection through `stream`.
pub async fn relay(
    stream: ClientStream,
    tcp: TcpStream,
    cancel: &CancellationToken,
) -> Result<(), RelayError> {
    tunnel::relay(
        stream,
        tcp,
        CLIENT_CHUNK,
        &NoMeter,
        cancel,
        tunnel::CloseRole::Opener,
    )
    .await
    .1
}

/// Accepts connections on `listener` and carries each through `session` until the session
/// ends or `cancel` fires. Returns [`TunnelError::SessionEnded`] when ztproxy ended it.
pub async fn serve(
    session: ClientSession,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), TunnelError> {
    let tasks = TaskTracker::new();
    let conn_cancel = cancel.child_token();
    let accept = async {
        loop {
            let (tcp, peer_addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            tracing::debug!(%peer_addr, "local connection");
            let stream = session.open().await;
            let cancel = conn_cancel.clone();
            tasks.spawn(async move {
                match stream {
                    Ok(stream) => match relay(stream, tcp, &cancel).await {
                        Ok(()) => {}
                        Err(RelayError::PeerFailed { code, message }) => {
                            eprintln!("ztproxy: connection refused ({code}): {message}");
                        }
                        Err(error) => tracing::debug!(%error, "connection ended"),
                    },
                    Err(TunnelError::Quic(QuicClientError::Refused { code, message })) => {
                        eprintln!("ztproxy: connection refused ({code}): {message}");
                    }
                    Err(error) => eprintln!("ztproxy: cannot open a connection: {error}"),
                }
            });
        }
    };
    let outcome = tokio::select! {
        () = cancel.cancelled() => Ok(()),
        () = accept => Ok(()),
        () = session.closed() => Err(match session.end_reason() {
            Some(reason) => TunnelError::SessionEndedBecause(reason),
            None => TunnelError::SessionEnded,
        }),
    };
    conn_cancel.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    session.close().await;
    outcome
}
