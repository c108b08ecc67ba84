//! `POST /v1/sessions`: a validated request becomes a session.

use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use zt_api::audit::AuditEvent;
use zt_api::control::{
    ApiError, Conversation, CreateSessionResponse, EndReason, ErrorCode, Origin, SdpType,
    SessionDescription, SessionSpec, Transport, ViewerSpec,
};

use crate::server::Shared;
use crate::transport::webrtc::{AnswerError, Peer};

use super::registry::*;
use super::task::{SessionTransport, close_transport, run};

/// What a connection session needs once its Guacamole channel arrives. Held by the session
/// task only: the backend carries the session's credentials.
pub(super) struct ConnectionSetup {
    pub(super) backend: Box<dyn crate::connection::backend::Backend>,
    pub(super) settings: zt_connection::Settings,
    pub(super) recording: Option<(
        zt_api::control::RecordingRequest,
        Arc<crate::config::RecordingsSettings>,
    )>,
}

/// What a viewer session needs once its Guacamole channel arrives.
pub(super) struct ViewerSetup {
    pub(super) share: Arc<crate::connection::share::Share>,
}

/// What a session's task carries: tunnels, a connection, or a viewer of one.
pub(super) enum Work {
    Tunnel,
    Connection(Box<ConnectionSetup>),
    Viewer(ViewerSetup),
}

/// Creates a session from a validated request.
pub async fn create(
    shared: &Arc<Shared>,
    mut spec: SessionSpec,
) -> Result<CreateSessionResponse, ApiError> {
    let work = match spec.conversation {
        Conversation::Tunnel => Work::Tunnel,
        Conversation::Connection => Work::Connection(Box::new(connection_setup(shared, &spec)?)),
    };
    if !shared.registry.has_room() {
        return Err(too_many_sessions(shared));
    }
    let offer = (spec.offer_sdp.take(), spec.answer_key.take());
    let (response, transport, peer) = new_transport(shared, spec.transport, offer).await?;
    let share = match &work {
        Work::Connection(_) if shared.settings.sessions.sharing => {
            crate::connection::share::Share::start()
        }
        _ => None,
    };
    let meta = session_meta(&shared.settings.sessions, spec);
    let (handle, ended_tx) = new_handle(response.id.clone(), meta, peer, share, None);
    if !shared.registry.insert(handle.clone()) {
        close_transport(shared, transport, EndReason::Error).await;
        return Err(too_many_sessions(shared));
    }
    start(shared, handle, transport, work, ended_tx);
    Ok(response)
}

/// Creates a viewer of the running connection session `owner`, on a transport of its own.
pub async fn create_viewer(
    shared: &Arc<Shared>,
    owner: &Arc<SessionHandle>,
    mut spec: ViewerSpec,
) -> Result<CreateSessionResponse, ApiError> {
    let conflict = |message: &str| ApiError::new(ErrorCode::Conflict, message.to_owned());
    let too_many_viewers = || {
        conflict(&format!(
            "the session has {} viewers, as many as it may",
            crate::connection::share::MAX_VIEWERS
        ))
    };
    if owner.viewer.is_some() {
        return Err(conflict(
            "a viewer cannot be watched; join the session it watches",
        ));
    }
    let Some(share) = owner.share.clone() else {
        return Err(match owner.meta.conversation {
            Conversation::Tunnel => conflict("only a connection session can be watched"),
            Conversation::Connection => ApiError::new(
                ErrorCode::Unsupported,
                "live sharing is off on this proxy ([sessions] sharing)",
            ),
        });
    };
    if owner.end.is_cancelled() || share.is_closed() {
        return Err(conflict("the session is ending"));
    }
    if !share.is_shareable() {
        return Err(conflict(
            "the session's screen cannot be shared (its display model failed)",
        ));
    }
    if owner.viewers().len() >= crate::connection::share::MAX_VIEWERS {
        return Err(too_many_viewers());
    }
    if !shared.registry.has_room() {
        return Err(too_many_sessions(shared));
    }
    let offer = (spec.offer_sdp.take(), spec.answer_key.take());
    let (response, transport, peer) = new_transport(shared, spec.transport, offer).await?;
    let mut meta = owner.meta.clone();
    meta.transport = spec.transport;
    meta.user = Some(spec.user.clone());
    meta.created_at = crate::util::now_rfc3339();
    meta.max_connections = 1;
    let viewer = ViewerOf {
        session: owner.id.clone(),
        user: spec.user,
        input: spec.input,
        clipboard: spec.clipboard,
    };
    let (handle, ended_tx) = new_handle(response.id.clone(), meta, peer, None, Some(viewer));
    if !shared.registry.insert(handle.clone()) {
        close_transport(shared, transport, EndReason::Error).await;
        return Err(too_many_sessions(shared));
    }
    // Checked again where it counts: concurrent requests passed the check above.
    let admitted = {
        let mut viewers = owner.viewers.lock().unwrap_or_else(|e| e.into_inner());
        let room = viewers.len() < crate::connection::share::MAX_VIEWERS;
        if room {
            viewers.push(handle.clone());
        }
        room
    };
    if !admitted {
        shared.registry.remove(&handle.id);
        close_transport(shared, transport, EndReason::Error).await;
        return Err(too_many_viewers());
    }
    // The owner may have ended meanwhile, after ending the viewers it had.
    if owner.end.is_cancelled() {
        handle.end(owner.reason());
    }
    start(
        shared,
        handle,
        transport,
        Work::Viewer(ViewerSetup { share }),
        ended_tx,
    );
    Ok(response)
}

/// A new session's id, its transport set up (answering the WebRTC `offer`, sealed with its
/// key when it was sealed, or issuing a QUIC token), and the response that names both.
async fn new_transport(
    shared: &Shared,
    transport: Transport,
    (offer, answer_key): (Option<String>, Option<zt_api::seal::SealKey>),
) -> Result<(CreateSessionResponse, SessionTransport, NewPeer), ApiError> {
    let id = hex::encode(
        crate::util::random_bytes::<16>()
            .map_err(|_| ApiError::new(ErrorCode::Internal, "no randomness available"))?,
    );
    let mut response = CreateSessionResponse {
        id: id.clone(),
        transport,
        answer: None,
        sealed_answer: None,
        quic: None,
    };
    let (transport, peer) = match transport {
        Transport::Webrtc => {
            let offer = offer.unwrap_or_default();
            answer_webrtc(shared, offer, answer_key, &mut response).await?
        }
        Transport::Quic => issue_quic_token(shared, &id, &mut response)?,
    };
    Ok((response, transport, peer))
}

/// The handle of a new session (pending), and the sender of its end.
fn new_handle(
    id: String,
    meta: SessionMeta,
    peer: NewPeer,
    share: Option<Arc<crate::connection::share::Share>>,
    viewer: Option<ViewerOf>,
) -> (
    Arc<SessionHandle>,
    watch::Sender<Option<zt_api::control::EndedSession>>,
) {
    let (ended_tx, ended) = watch::channel(None);
    let handle = Arc::new(SessionHandle {
        id,
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
        share,
        viewer,
        viewers: Mutex::default(),
    });
    (handle, ended_tx)
}

fn disabled(transport: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Unsupported,
        format!("{transport} is disabled on this proxy"),
    )
    .with_field("transport")
}

fn too_many_sessions(shared: &Shared) -> ApiError {
    shared.metrics.error(Origin::Local, "too_many_sessions");
    ApiError::new(ErrorCode::TooManySessions, "the session limit is reached")
}

/// What is fixed at creation: the request's facts, its limits capped by the configuration.
fn session_meta(config: &crate::config::SessionsConfig, spec: SessionSpec) -> SessionMeta {
    let limits = spec.limits;
    SessionMeta {
        transport: spec.transport,
        conversation: spec.conversation,
        protocol: spec.protocol,
        target: spec.target,
        resource_id: spec.resource_id,
        user: spec.user,
        created_at: crate::util::now_rfc3339(),
        idle_timeout: limits
            .idle_timeout
            .unwrap_or(config.idle_timeout)
            .min(config.max_idle_timeout),
        max_duration: limits
            .max_duration
            .unwrap_or(config.max_duration)
            .min(config.max_duration),
        max_connections: u64::from(
            limits
                .max_connections
                .unwrap_or(config.max_connections_per_session)
                .min(config.max_connections_per_session),
        ),
        route: spec.route,
    }
}

/// A WebRTC session's peer connection.
type NewPeer = Option<Arc<dyn webrtc::peer_connection::PeerConnection>>;
/// A session's transport, and its peer connection when it is WebRTC.
type NewTransport = (SessionTransport, NewPeer);

/// Answers the client's WebRTC offer (sealed when the offer was).
async fn answer_webrtc(
    shared: &Shared,
    offer: String,
    answer_key: Option<zt_api::seal::SealKey>,
    response: &mut CreateSessionResponse,
) -> Result<NewTransport, ApiError> {
    let settings = shared.webrtc.as_ref().ok_or_else(|| disabled("WebRTC"))?;
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
    match answer_key {
        Some(key) => {
            let json = serde_json::to_vec(&answer)
                .map_err(|_| ApiError::new(ErrorCode::Internal, "cannot encode the answer"))?;
            response.sealed_answer = Some(
                key.seal(&json)
                    .map_err(|_| ApiError::new(ErrorCode::Internal, "cannot seal the answer"))?,
            );
        }
        None => response.answer = Some(answer),
    }
    let pc = peer.pc.clone();
    let transport = SessionTransport::Webrtc {
        peer,
        control: None,
        control_closed: CancellationToken::new(),
    };
    Ok((transport, Some(pc)))
}

/// Registers the session with the QUIC endpoint and hands out its token.
fn issue_quic_token(
    shared: &Shared,
    id: &str,
    response: &mut CreateSessionResponse,
) -> Result<NewTransport, ApiError> {
    let server = shared.quic.as_ref().ok_or_else(|| disabled("QUIC"))?;
    let (info, key, events) = server
        .register(id)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "no randomness available"))?;
    response.quic = Some(info);
    let transport = SessionTransport::Quic {
        events,
        key,
        conn: None,
    };
    Ok((transport, None))
}

/// Counts and audits the new session and starts its task.
fn start(
    shared: &Arc<Shared>,
    handle: Arc<SessionHandle>,
    transport: SessionTransport,
    work: Work,
    ended_tx: watch::Sender<Option<zt_api::control::EndedSession>>,
) {
    if let Some(of) = &handle.viewer {
        let span = tracing::info_span!(
            "viewer",
            id = %handle.id,
            of = %of.session,
            transport = handle.meta.transport.as_str()
        );
        shared
            .tasks
            .spawn(run(shared.clone(), handle, transport, work, ended_tx).instrument(span));
        return;
    }
    shared
        .metrics
        .session_created(handle.meta.transport, handle.meta.conversation);
    shared.metrics.sessions_active.inc();
    shared.audit.emit(AuditEvent::SessionCreated {
        session: handle.id.clone(),
        transport: handle.meta.transport,
        conversation: handle.meta.conversation,
        protocol: handle.meta.protocol.clone(),
        target: handle.meta.target.clone(),
        resource_id: handle.meta.resource_id.clone(),
        user: handle.meta.user.clone(),
    });
    let span = tracing::info_span!(
        "session",
        id = %handle.id,
        transport = handle.meta.transport.as_str(),
        proto = %handle.meta.protocol
    );
    shared
        .tasks
        .spawn(run(shared.clone(), handle, transport, work, ended_tx).instrument(span));
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
    let mut policy = zt_connection::policy::ConnectionPolicy::from_parameters(parameters.values())
        .map_err(|e| ApiError::invalid_field(format!("parameters.{}", e.name), e.problem))?;
    backend.restrict_policy(&mut policy);
    let mut settings = zt_connection::Settings::new(String::new(), policy);
    settings.backend_audits_files = backend.audits_file_transfers();
    if let Some(guacd) = &shared.settings.guacd {
        settings.handshake_timeout = guacd.handshake_timeout;
        settings.sync.grace = guacd.sync_grace;
    }
    let recording = match &spec.recording {
        Some(request) if request.graphical || request.typescript => {
            if request.typescript && !backend.records_typescript() {
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
