//! `ztproxy connect web`: the vault client's local part for a browser. It serves the session
//! page ([`super::local`]) and brokers signalling as the gateway would: the page's WebRTC
//! offer becomes a connection session for the configured target and protocol, created
//! through the control API with the credentials this command was given (never the page's),
//! sealed when a traffic secret is configured; the answer goes back to the page.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use zt_api::Secret;
use zt_api::control::{
    CreateSessionRequest, CreateViewerRequest, IceCandidate, SessionInfo, Transport,
};

use super::api::{ApiClient, ClientError};
use super::local::{self, App};
use super::session::{TunnelError, open_answer, put_offer, put_viewer_offer};

pub use super::local_checks::MAX_OFFER;
/// The most sessions one run of the helper creates (each page load makes one).
pub const MAX_SESSIONS: usize = 64;

/// What the page is told about the session: nothing secret.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageConfig {
    /// The protocol.
    pub protocol: String,
    /// `host:port`.
    pub target: String,
    /// The user's name.
    pub user: String,
    /// Copying out of the session is allowed.
    pub copy: bool,
    /// Pasting into the session is allowed.
    pub paste: bool,
    /// Uploads are allowed.
    pub upload: bool,
    /// Downloads are allowed.
    pub download: bool,
    /// Input is dropped.
    pub read_only: bool,
    /// The page watches another user's session (live sharing).
    pub viewer: bool,
}

impl PageConfig {
    /// The page's view of `request`: policy from its parameters (ztproxy enforces it anyway).
    pub fn of(request: &CreateSessionRequest) -> Self {
        let flag = |name: &str| {
            request
                .parameters
                .get(name)
                .is_some_and(|v| v.expose_secret().trim().eq_ignore_ascii_case("true"))
        };
        Self {
            protocol: request.protocol.clone().unwrap_or_default(),
            target: format!("{}:{}", request.target.host, request.target.port),
            user: request.user.clone().unwrap_or_default(),
            copy: !flag("disable-copy"),
            paste: !flag("disable-paste") && !flag("read-only"),
            upload: !flag("disable-upload") && !flag("sftp-disable-upload") && !flag("read-only"),
            download: !flag("disable-download") && !flag("sftp-disable-download"),
            read_only: flag("read-only"),
            viewer: false,
        }
    }

    /// The page's view of a viewer of `session` (its protocol and target, as the control
    /// API reports them): no transfers; typing and the clipboard as the gateway allowed.
    pub fn viewer(session: &SessionInfo, viewer: &CreateViewerRequest) -> Self {
        Self {
            protocol: session.protocol.clone(),
            target: format!("{}:{}", session.target.host, session.target.port),
            user: viewer.user.clone(),
            copy: viewer.clipboard,
            paste: false,
            upload: false,
            download: false,
            read_only: !viewer.input,
            viewer: true,
        }
    }
}

/// What each page load becomes.
enum Mode {
    /// A connection session like this one (its offer is the page's).
    Session(Box<CreateSessionRequest>),
    /// A viewer of the running session `session`.
    Viewer {
        session: String,
        request: Box<CreateViewerRequest>,
    },
}

/// The helper's state.
pub struct WebApp {
    api: ApiClient,
    mode: Mode,
    signalling: Option<(String, Secret<String>)>,
    config: PageConfig,
    sessions: Mutex<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferBody {
    sdp: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidatesBody {
    session: String,
    candidates: Vec<IceCandidate>,
}

impl WebApp {
    /// A helper creating sessions like `template` (a WebRTC connection session; its offer is
    /// the page's).
    pub fn new(
        api: ApiClient,
        mut template: CreateSessionRequest,
        signalling: Option<(String, Secret<String>)>,
    ) -> Self {
        template.transport = Transport::Webrtc;
        template.offer = None;
        template.sealed_offer = None;
        let config = PageConfig::of(&template);
        Self {
            api,
            mode: Mode::Session(Box::new(template)),
            signalling,
            config,
            sessions: Mutex::new(Vec::new()),
        }
    }

    /// A helper joining the running session `session` as the viewer `request` describes,
    /// once per page load; the page is told what the control API says of the session.
    pub async fn viewer(
        api: ApiClient,
        session: &str,
        mut request: CreateViewerRequest,
        signalling: Option<(String, Secret<String>)>,
    ) -> Result<Self, ClientError> {
        let info = api.get_session(session).await?;
        request.transport = Transport::Webrtc;
        request.offer = None;
        request.sealed_offer = None;
        let config = PageConfig::viewer(&info, &request);
        Ok(Self {
            api,
            mode: Mode::Viewer {
                session: session.to_owned(),
                request: Box::new(request),
            },
            signalling,
            config,
            sessions: Mutex::new(Vec::new()),
        })
    }

    /// The sessions created so far.
    pub fn sessions(&self) -> Vec<String> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ends every session this helper created (when it stops).
    pub async fn end_sessions(&self) {
        for id in self.sessions() {
            let ended = match &self.mode {
                Mode::Session(_) => self.api.delete_session(&id).await,
                Mode::Viewer { session, .. } => self.api.delete_viewer(session, &id).await,
            };
            match ended {
                Ok(_) | Err(ClientError::Api { status: 404, .. }) => {}
                Err(error) => tracing::warn!(%error, session = %id, "cannot end the session"),
            }
        }
    }

    async fn offer(&self, body: &[u8]) -> Response {
        let offer: OfferBody = match serde_json::from_slice(body) {
            Ok(offer) => offer,
            Err(error) => {
                return local::error(
                    StatusCode::BAD_REQUEST,
                    "bad_offer",
                    &format!("the offer is not {{\"sdp\": \"…\"}}: {error}"),
                );
            }
        };
        if !super::local_checks::offer_sdp_ok(&offer.sdp) {
            return local::error(
                StatusCode::BAD_REQUEST,
                "bad_offer",
                "the offer is not an SDP session description of a usable size",
            );
        }
        {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            if sessions.len() >= MAX_SESSIONS {
                return local::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_sessions",
                    "this helper has created as many sessions as it may; start it again",
                );
            }
        }
        let answer_key = match &self.mode {
            Mode::Session(template) => {
                let mut request = (**template).clone();
                put_offer(&mut request, offer.sdp, self.signalling.as_ref())
                    .map(|key| (key, Creation::Session(request)))
            }
            Mode::Viewer { session, request } => {
                let mut request = (**request).clone();
                put_viewer_offer(&mut request, offer.sdp, self.signalling.as_ref())
                    .map(|key| (key, Creation::Viewer(session, request)))
            }
        };
        let (answer_key, request) = match answer_key {
            Ok(key) => key,
            Err(error) => {
                return local::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "seal",
                    &error.to_string(),
                );
            }
        };
        let created = match &request {
            Creation::Session(request) => self.api.create_session(request).await,
            Creation::Viewer(session, request) => self.api.create_viewer(session, request).await,
        };
        let response = match created {
            Ok(response) => response,
            Err(ClientError::Api { status, error }) => {
                let status = if status == 400 {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::BAD_GATEWAY
                };
                return local::error(
                    status,
                    "refused",
                    &format!("ztproxy refused the session: {}", error.message),
                );
            }
            Err(error) => {
                return local::error(StatusCode::BAD_GATEWAY, "unreachable", &error.to_string());
            }
        };
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(response.id.clone());
        match open_answer(answer_key, response.answer, response.sealed_answer) {
            Ok(sdp) => {
                tracing::info!(session = %response.id, "session created for the page");
                local::json(
                    StatusCode::OK,
                    &serde_json::json!({ "session": response.id, "sdp": sdp }),
                )
            }
            Err(TunnelError::Seal(message)) => {
                local::error(StatusCode::BAD_GATEWAY, "seal", &message)
            }
            Err(error) => local::error(StatusCode::BAD_GATEWAY, "answer", &error.to_string()),
        }
    }
}

/// One page load's request to ztproxy.
enum Creation<'a> {
    Session(CreateSessionRequest),
    Viewer(&'a str, CreateViewerRequest),
}

impl WebApp {
    /// Trickles the page's candidates to ztproxy, for a session this helper created.
    async fn candidates(&self, body: &[u8]) -> Response {
        let request: CandidatesBody = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(error) => {
                return local::error(
                    StatusCode::BAD_REQUEST,
                    "bad_candidates",
                    &format!("the candidates are not {{\"session\", \"candidates\"}}: {error}"),
                );
            }
        };
        let ours = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&request.session);
        if !ours {
            return local::error(StatusCode::NOT_FOUND, "no_session", "no such session");
        }
        match self
            .api
            .add_candidates(&request.session, request.candidates)
            .await
        {
            Ok(()) => local::json(StatusCode::OK, &serde_json::json!({})),
            Err(ClientError::Api { status, error }) => {
                let status = if status == 400 {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::BAD_GATEWAY
                };
                local::error(
                    status,
                    "refused",
                    &format!("ztproxy refused the candidates: {}", error.message),
                )
            }
            Err(error) => local::error(StatusCode::BAD_GATEWAY, "unreachable", &error.to_string()),
        }
    }
}

impl App for WebApp {
    const INDEX: &'static str = "index.html";

    async fn handle(&self, method: &Method, path: &str, body: Bytes) -> Option<Response> {
        match (method, path) {
            (&Method::GET, "config") => Some(local::json(
                StatusCode::OK,
                &serde_json::to_value(&self.config).unwrap_or_default(),
            )),
            (&Method::POST, "offer") => Some(self.offer(&body).await),
            (&Method::POST, "candidates") => Some(self.candidates(&body).await),
            (_, "offer" | "config" | "candidates") => Some(local::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "method not allowed",
            )),
            _ => None,
        }
    }
}

/// Serves the page for `app` on `listener` until `shutdown`, then ends its sessions.
pub async fn serve(
    listener: local::LocalListener,
    app: Arc<WebApp>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let served = listener.serve(app.clone(), shutdown).await;
    app.end_sessions().await;
    served
}
