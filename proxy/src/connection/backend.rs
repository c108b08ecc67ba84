//! Backends: what draws a connection's display and takes its input.
//!
//! A [`Backend`] is opened once the client's handshake is complete, for the client's display
//! settings, and gives a byte stream of Guacamole instructions (its server side) in both
//! directions. The connection core (`zt_connection`) does everything else: the client's
//! handshake, policy, recording, keep-alive and the farewell. So a new backend — a native
//! engine such as a terminal renderer, a VNC framebuffer or a Chromium screencast — only
//! implements [`Backend::open`]: run the engine in a task and return one end of a
//! [`tokio::io::duplex`] pipe (`tests/tests/connection/template.rs` is the template;
//! [`crate::connection::ssh`] is the first real one), or connect to an external server that
//! speaks Guacamole, as [`GuacdBackend`] does.
//!
//! A native engine gets an [`OpenContext`]: the session's id and services (the audit log for
//! its own events, the recordings list), its typescript recording request, and the session's
//! cancellation, so it can stop its target at once when the session ends. Its task's handle
//! goes back in [`BackendStream::finished`]: the connection waits for it (bounded) so the
//! engine's recordings are finalised before the session's end is reported.
//!
//! A [`BackendFactory`] decides, when a session is created, whether it can serve it (and
//! says why not, as an API error naming the field), and makes its backend.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use zt_api::Secret;
use zt_api::control::{ApiError, EndReason, ErrorCode, Origin, RecordingRequest, Route, Target};
use zt_api::protocol::{ConnectionParameters, Protocol};
use zt_guac::Status;
use zt_guacd::ClientInfo;

use super::Services;
use super::recording::RecordingSummary;
use crate::config::{GuacdSettings, RecordingsSettings, Settings};
use crate::metrics::Metrics;

/// The backend's side of a connection: Guacamole instructions both ways.
pub struct BackendStream {
    /// What the backend sends.
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    /// What the backend is sent.
    pub writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// Bytes the backend already sent after its own handshake (they come first).
    pub leftover: Bytes,
    /// An id for logs (guacd's connection id).
    pub id: String,
    /// The engine's task, for a native backend: the connection waits for it when it ends
    /// (after closing the pipe), and reports the recordings it wrote.
    pub finished: Option<tokio::task::JoinHandle<Vec<RecordingSummary>>>,
}

/// What a backend is opened with, besides the client's display.
#[derive(Clone)]
#[non_exhaustive]
pub struct OpenContext {
    /// The session's id.
    pub session: String,
    /// The vault resource id (bound into recording keys).
    pub resource_id: String,
    /// The session's protocol.
    pub protocol: String,
    /// Audit, metrics, counters and the recordings list.
    pub services: Services,
    /// The typescript recording the session asked for, when it asked for one.
    pub typescript: Option<(RecordingRequest, Arc<RecordingsSettings>)>,
    /// Whether typed input is recorded (`recording-include-keys`).
    pub record_input: bool,
    /// Whether a failing recording ends the session.
    pub fail_closed: bool,
    /// Cancelled when the session ends: stop the target at once.
    pub cancel: CancellationToken,
    /// Ends the whole session for a reason (a recording that fails closed).
    pub end_session: Arc<dyn Fn(EndReason) + Send + Sync>,
    /// Facts for the session's graphical recording, when it has one.
    pub notes: Option<super::recording::NoteSink>,
    /// The session's live sharing: a typescript registers there to note who watched.
    pub share: Option<Arc<super::share::Share>>,
}

/// Why a backend could not be opened. Secret-free: it reaches the audit log.
#[derive(Debug, Clone)]
pub struct BackendError {
    /// What went wrong.
    pub detail: String,
    /// The Guacamole status the client hears, when the backend gave one.
    pub status: Option<Status>,
    /// What the client is told in words, when the backend knows better than "server error".
    pub message: Option<String>,
    /// The end's reason when the failure is ztproxy's own (a recording that could not
    /// start), not the target's.
    pub local: Option<EndReason>,
}

impl BackendError {
    /// A native backend could not log in: `detail` for the audit log, `status` and
    /// `message` for the client.
    pub fn login(detail: impl std::fmt::Display, status: Status, message: &str) -> Self {
        Self {
            detail: detail.to_string(),
            status: Some(status),
            message: Some(message.to_owned()),
            local: None,
        }
    }

    /// The target (or the server in front of it) failed.
    pub fn target(detail: impl Into<String>, status: Option<Status>) -> Self {
        Self {
            detail: detail.into(),
            status,
            message: None,
            local: None,
        }
    }
}

/// What a connection's display comes from. See the module docs.
#[async_trait::async_trait]
pub trait Backend: Send {
    /// Its name in details and logs (`guacd`).
    fn name(&self) -> &'static str;

    /// The error counter for its protocol violations (`guacd_protocol`).
    fn protocol_metric(&self) -> &'static str;

    /// Opens the backend for a client with `display`.
    async fn open(
        &mut self,
        display: &ClientInfo,
        context: &OpenContext,
    ) -> Result<BackendStream, BackendError>;

    /// Whether it writes typescript recordings (a terminal of its own).
    fn records_typescript(&self) -> bool {
        false
    }

    /// Whether it audits file transfers itself (native SFTP knows the path on the target and
    /// whether an upload arrived); the connection's filter then only enforces the policy.
    fn audits_file_transfers(&self) -> bool {
        false
    }

    /// Tightens the connection's policy with what only the backend knows (the remote browser
    /// transfers files only when `allow-download` / `allow-upload` say so).
    fn restrict_policy(&self, _policy: &mut zt_connection::policy::ConnectionPolicy) {}
}

/// What a [`BackendFactory`] gets to decide on a session.
#[derive(Debug)]
#[non_exhaustive]
pub struct BackendRequest<'a> {
    /// The session's protocol and parameters (credentials and settings; never logged),
    /// checked against the protocol.
    pub parameters: &'a ConnectionParameters,
    /// The session's only target.
    pub target: &'a Target,
    /// The daemon's settings.
    pub settings: &'a Settings,
}

/// Makes the backends of one route.
pub trait BackendFactory: Send + Sync {
    /// A backend for the session, or why this proxy cannot serve it.
    fn make(&self, request: &BackendRequest<'_>) -> Result<Box<dyn Backend>, ApiError>;
}

/// The backend factories a daemon serves, by route. By default the native route serves the
/// protocols ztproxy has its own client for ([`NativeFactory`]).
#[derive(Clone)]
pub struct Backends {
    native: Option<Arc<dyn BackendFactory>>,
}

impl Default for Backends {
    fn default() -> Self {
        Self {
            native: Some(Arc::new(NativeFactory)),
        }
    }
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("native", &self.native.is_some())
            .finish()
    }
}

impl Backends {
    /// Serves `"route": "native"` with `factory`.
    #[must_use]
    pub fn with_native(mut self, factory: Arc<dyn BackendFactory>) -> Self {
        self.native = Some(factory);
        self
    }

    /// A backend for a session on `route`.
    pub fn make(
        &self,
        route: Option<Route>,
        request: &BackendRequest<'_>,
    ) -> Result<Box<dyn Backend>, ApiError> {
        match route {
            Some(Route::Guacd) => GuacdFactory.make(request),
            Some(Route::Native) | None => match &self.native {
                Some(factory) => factory.make(request),
                None => Err(ApiError::new(
                    ErrorCode::Unsupported,
                    "this build connects through guacd only; ask for route \"guacd\"",
                )
                .with_field("route")),
            },
        }
    }
}

/// `"route": "native"`: ztproxy's own protocol clients (SSH, Telnet, Kubernetes, database
/// consoles, VNC, the remote browser), by protocol.
pub struct NativeFactory;

impl BackendFactory for NativeFactory {
    fn make(&self, request: &BackendRequest<'_>) -> Result<Box<dyn Backend>, ApiError> {
        match request.parameters.protocol() {
            Protocol::Ssh => super::ssh::SshFactory.make(request),
            Protocol::Telnet => super::telnet::TelnetFactory.make(request),
            Protocol::Kubernetes => super::k8s::K8sFactory.make(request),
            Protocol::Http => super::rbi::RbiFactory.make(request),
            Protocol::Postgresql | Protocol::Mysql | Protocol::Sqlserver => {
                super::database::DatabaseFactory.make(request)
            }
            Protocol::Vnc => super::vnc::VncFactory.make(request),
            other => Err(ApiError::new(
                ErrorCode::Unsupported,
                format!("{other} has no native client yet; ask for route \"guacd\""),
            )
            .with_field("route")),
        }
    }
}

/// `"route": "guacd"`: the external guacd of the configuration.
struct GuacdFactory;

impl BackendFactory for GuacdFactory {
    fn make(&self, request: &BackendRequest<'_>) -> Result<Box<dyn Backend>, ApiError> {
        let guacd = request.settings.guacd.clone().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unsupported,
                "this proxy has no guacd configured ([guacd] address)",
            )
            .with_field("route")
        })?;
        Ok(Box::new(GuacdBackend {
            guacd,
            protocol: request.parameters.protocol(),
            parameters: request.parameters.values().clone(),
            target: request.target.clone(),
        }))
    }
}

/// guacd as a backend: ztproxy is its client and passes the session's parameters, with the
/// session's target as the only `hostname` and `port`.
pub struct GuacdBackend {
    guacd: GuacdSettings,
    protocol: Protocol,
    parameters: BTreeMap<String, Secret<String>>,
    target: Target,
}

#[async_trait::async_trait]
impl Backend for GuacdBackend {
    fn name(&self) -> &'static str {
        "guacd"
    }

    fn protocol_metric(&self) -> &'static str {
        "guacd_protocol"
    }

    async fn open(
        &mut self,
        display: &ClientInfo,
        _context: &OpenContext,
    ) -> Result<BackendStream, BackendError> {
        let addr = tokio::net::lookup_host(self.guacd.address.as_str())
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                BackendError::target(
                    format!("guacd address {} does not resolve", self.guacd.address),
                    None,
                )
            })?;
        let mut parameters = self.parameters.clone();
        parameters.insert("hostname".into(), Secret::new(self.target.host.clone()));
        parameters.insert("port".into(), Secret::new(self.target.port.to_string()));
        let guacd = zt_guacd::connect(
            addr,
            self.protocol.as_str(),
            &parameters,
            display.clone(),
            zt_guacd::HandshakeSettings::with_timeout(self.guacd.connect_timeout),
        )
        .await
        .map_err(|error| match error.status() {
            Some(status) => BackendError::target(
                format!(
                    "guacd: {error} (status {})",
                    zt_connection::status_text(status)
                ),
                Some(status),
            ),
            None => BackendError::target(format!("guacd: {error}"), None),
        })?;
        let (reader, writer) = guacd.stream.into_split();
        Ok(BackendStream {
            reader: Box::new(reader),
            writer: Box::new(writer),
            leftover: guacd.leftover.freeze(),
            id: guacd.connection_id,
            finished: None,
        })
    }
}

/// Counts a backend that could not be opened.
pub(crate) fn count_open_failure(metrics: &Metrics, backend: &str) {
    metrics.error(
        Origin::Target,
        if backend == "guacd" {
            "guacd"
        } else {
            "backend"
        },
    );
}
