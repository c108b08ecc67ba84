//! The local control API (DESIGN.md §3): HTTP/1.1 + JSON for the gateway.
//!
//! # Threat model
//!
//! The API creates sessions with credentials in them and revokes them, so only the gateway
//! may reach it:
//! * the **Unix socket** (always on) is created with mode 0600 — it is bound inside a
//!   private 0700 directory and renamed into place, so it never exists with looser
//!   permissions — and is reachable only by its owner (and root);
//! * the optional **TCP listener** binds loopback only (unless `danger_allow_non_loopback_tcp`)
//!   and requires `Authorization: Bearer <token>` on every request, compared in constant time;
//!   failures are audited (`access_denied`) and answered with 401.
//!
//! Every body is read with a size limit before parsing, parsed with unknown fields refused by
//! name, and validated; errors are JSON (`{"error":{"code","message","field"}}`) with the
//! status the code implies. Error messages may quote the request and are never logged.

pub mod listener;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, UnixListener};
use zt_api::Secret;
use zt_api::audit::AuditEvent;
use zt_api::control::{
    self, ApiError, ErrorCode, Health, MAX_REQUEST_BYTES, Origin, SessionList, ValidationPolicy,
};

use crate::config::ControlSettings;
use crate::server::{ServeError, Shared};
use crate::session;

/// The body deadline when none was configured (unit tests of the handlers).
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `DELETE` waits for the session to finish closing.
pub const REVOKE_WAIT: Duration = Duration::from_secs(10);

/// The bound listeners.
#[derive(Debug)]
pub struct Listeners {
    unix: UnixListener,
    tcp: Option<(TcpListener, Secret<String>)>,
}

impl Listeners {
    /// The TCP listener's address.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }
}

/// Binds the control socket and, if configured, the TCP listener.
pub async fn bind(settings: &ControlSettings) -> Result<Listeners, ServeError> {
    let unix = bind_unix(&settings.socket).map_err(|source| ServeError::Control {
        what: settings.socket.display().to_string(),
        source,
    })?;
    let tcp = match &settings.tcp {
        Some((addr, token)) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Control {
                    what: addr.to_string(),
                    source,
                })?;
            Some((listener, token.clone()))
        }
        None => None,
    };
    Ok(Listeners { unix, tcp })
}

fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another ztproxy is serving this socket",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let private = parent.join(format!(
        ".ztproxy-{}",
        hex::encode(crate::util::random_bytes::<8>()?)
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let result = (|| {
        let staged = private.join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        listener.set_nonblocking(true)?;
        UnixListener::from_std(listener)
    })();
    let _ = std::fs::remove_dir(&private);
    result
}

/// Serves the API until shutdown: each listener within its own connection budget (see
/// [`listener`]).
pub async fn serve(shared: Arc<Shared>, listeners: Listeners) {
    let router = router(shared.clone());
    let shutdown = shared.shutdown.clone();
    let settings = &shared.settings.control;
    let limits = |max_connections| listener::ListenerLimits {
        max_connections,
        header_timeout: settings.header_timeout,
    };
    let (max_unix, max_tcp) = connection_budgets(settings, crate::util::open_files_limit());
    tracing::debug!(max_unix, max_tcp, "control API connection budgets");
    let unix = listener::serve(
        listeners.unix,
        router.clone(),
        limits(max_unix),
        "unix",
        shared.metrics.clone(),
        shutdown.clone(),
    );
    match listeners.tcp {
        Some((tcp, token)) => {
            let auth = Arc::new(TokenAuth {
                token,
                shared: shared.clone(),
            });
            let tcp_router = router.layer(middleware::from_fn_with_state(auth, require_token));
            let tcp = listener::serve(
                tcp,
                tcp_router,
                limits(max_tcp),
                "tcp",
                shared.metrics.clone(),
                shutdown,
            );
            tokio::join!(unix, tcp);
        }
        None => unix.await,
    }
}

/// The Unix socket's and the TCP listener's connection budgets: as configured, or sized from
/// the open-files limit (an eighth for TCP, at most 1024; a sixteenth for the Unix socket,
/// at most 256), so that a flood of either leaves most descriptors to the sessions.
fn connection_budgets(settings: &ControlSettings, open_files: u64) -> (usize, usize) {
    let share =
        |divisor: u64, cap: u64| usize::try_from((open_files / divisor).clamp(8, cap)).unwrap_or(8);
    (
        settings
            .max_unix_connections
            .unwrap_or_else(|| share(16, 256)),
        settings
            .max_tcp_connections
            .unwrap_or_else(|| share(8, 1024)),
    )
}

fn router(shared: Arc<Shared>) -> Router {
    let body_timeout = shared.settings.control.body_timeout;
    Router::new()
        .route("/v1/sessions", post(create_session).get(list_sessions))
        .route("/v1/sessions/{id}", get(get_session).delete(delete_session))
        .route("/v1/sessions/{id}/candidates", post(add_candidates))
        .route(
            "/v1/sessions/{id}/viewers",
            post(create_viewer).get(list_viewers),
        )
        .route(
            "/v1/sessions/{id}/viewers/{viewer}",
            axum::routing::delete(delete_viewer),
        )
        .route("/v1/events", get(events))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(move |request, next| {
            guard_request(request, next, body_timeout)
        }))
        .with_state(shared)
}

/// Refuses, in the API's own error shape, request targets and heads beyond the limits and
/// paths that are not UTF-8; gives the handlers the body deadline.
async fn guard_request(mut request: Request, next: Next, body_timeout: Duration) -> Response {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri_len > listener::MAX_URI_BYTES {
        return Failure(ApiError::new(
            ErrorCode::UriTooLong,
            format!(
                "the request target is longer than {} bytes",
                listener::MAX_URI_BYTES
            ),
        ))
        .into_response();
    }
    let head: usize = uri_len
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if head > listener::MAX_HEAD_BYTES {
        return Failure(ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!(
                "the request head is larger than {} bytes",
                listener::MAX_HEAD_BYTES
            ),
        ))
        .into_response();
    }
    if !crate::inspect::percent_decodes_to_utf8(request.uri().path()) {
        return Failure(ApiError::new(
            ErrorCode::InvalidPath,
            "the path is not valid percent-encoded UTF-8",
        ))
        .into_response();
    }
    request.extensions_mut().insert(BodyDeadline(body_timeout));
    next.run(request).await
}

/// How long a handler waits for the request body.
#[derive(Debug, Clone, Copy)]
struct BodyDeadline(Duration);

/// An [`ApiError`] as a response.
struct Failure(ApiError);

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        // The message may quote the request (and so a credential): log code and field only.
        tracing::debug!(code = self.0.code.as_str(), field = ?self.0.field, "request refused");
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.0.to_body())).into_response();
        if self.0.code == ErrorCode::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

struct TokenAuth {
    token: Secret<String>,
    shared: Arc<Shared>,
}

async fn require_token(
    State(auth): State<Arc<TokenAuth>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let reason = match presented {
        Some(token)
            if bool::from(
                token
                    .as_bytes()
                    .ct_eq(auth.token.expose_secret().as_bytes()),
            ) =>
        {
            return next.run(request).await;
        }
        Some(_) => "wrong_token",
        None => "missing_token",
    };
    auth.shared
        .metrics
        .error(Origin::Client, "control_unauthorized");
    auth.shared.audit.emit(AuditEvent::AccessDenied {
        resource: "control_api".into(),
        reason: reason.into(),
    });
    Failure(ApiError::new(
        ErrorCode::Unauthorized,
        "a valid bearer token is required",
    ))
    .into_response()
}

async fn read_json_body(
    headers: &HeaderMap,
    body: Body,
    deadline: Option<BodyDeadline>,
) -> Result<Bytes, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the body must be application/json",
        ));
    }
    let timeout = deadline.map_or(DEFAULT_BODY_TIMEOUT, |d| d.0);
    let collected = tokio::time::timeout(
        timeout,
        http_body_util::Limited::new(body, MAX_REQUEST_BYTES).collect(),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            ErrorCode::RequestTimeout,
            format!("the request body did not arrive within {timeout:?}"),
        )
    })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("request body is larger than {MAX_REQUEST_BYTES} bytes"),
        )),
        Err(_) => Err(ApiError::new(
            ErrorCode::InvalidJson,
            "the request body could not be read",
        )),
    }
}

/// What this proxy requires of every request that creates a transport.
fn validation_policy(shared: &Shared) -> ValidationPolicy {
    ValidationPolicy {
        require_sealed_signalling: shared.webrtc.is_some()
            && shared
                .settings
                .webrtc
                .as_ref()
                .is_some_and(|w| w.require_sealed_signalling),
    }
}

async fn create_session(
    State(shared): State<Arc<Shared>>,
    deadline: Option<Extension<BodyDeadline>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let body = read_json_body(&headers, body, deadline.map(|d| d.0)).await?;
    let request = control::parse_create_session(&body)?;
    let policy = validation_policy(&shared);
    let spec = request.validate(policy)?;
    let response = session::create(&shared, spec).await?;
    Ok((StatusCode::CREATED, axum::Json(response)).into_response())
}

async fn create_viewer(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    deadline: Option<Extension<BodyDeadline>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let body = read_json_body(&headers, body, deadline.map(|d| d.0)).await?;
    let request = control::parse_create_viewer(&body)?;
    let policy = validation_policy(&shared);
    let spec = request.validate(policy)?;
    let owner = find(&shared, &id)?;
    let response = session::create_viewer(&shared, &owner, spec).await?;
    Ok((StatusCode::CREATED, axum::Json(response)).into_response())
}

async fn list_viewers(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, Failure> {
    let owner = find(&shared, &id)?;
    let viewers = owner
        .viewers()
        .iter()
        .filter_map(|v| v.viewer_info())
        .collect();
    Ok(axum::Json(control::ViewerList { viewers }).into_response())
}

async fn delete_viewer(
    State(shared): State<Arc<Shared>>,
    UrlPath((id, viewer)): UrlPath<(String, String)>,
) -> Result<Response, Failure> {
    let owner = find(&shared, &id)?;
    let Some(handle) = owner.viewers().into_iter().find(|v| v.id == viewer) else {
        return Err(ApiError::new(ErrorCode::NotFound, "no such viewer").into());
    };
    tracing::info!(session = %id, %viewer, "removing viewer");
    revoke(&handle, "viewer").await
}

/// Revokes `handle` and answers, once it is gone, with its summary (`what`: `session` or
/// `viewer`, for the error when it takes too long).
async fn revoke(handle: &session::SessionHandle, what: &str) -> Result<Response, Failure> {
    handle.end(control::EndReason::Revoked);
    match tokio::time::timeout(REVOKE_WAIT, handle.wait_ended()).await {
        Ok(Some(summary)) => Ok(axum::Json(summary).into_response()),
        _ => Err(ApiError::new(
            ErrorCode::Internal,
            format!("the {what} is ending but did not finish in time"),
        )
        .into()),
    }
}

async fn list_sessions(State(shared): State<Arc<Shared>>) -> axum::Json<SessionList> {
    axum::Json(SessionList {
        sessions: shared.registry.list().iter().map(|h| h.info()).collect(),
    })
}

fn find(shared: &Shared, id: &str) -> Result<Arc<session::SessionHandle>, ApiError> {
    shared
        .registry
        .get(id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such session"))
}

async fn get_session(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, Failure> {
    let handle = find(&shared, &id)?;
    Ok(axum::Json(handle.info()).into_response())
}

async fn delete_session(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, Failure> {
    let handle = find(&shared, &id)?;
    tracing::info!(session = %id, "revoking session");
    revoke(&handle, "session").await
}

async fn add_candidates(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    deadline: Option<Extension<BodyDeadline>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let body = read_json_body(&headers, body, deadline.map(|d| d.0)).await?;
    let request = control::parse_candidates(&body)?;
    let handle = find(&shared, &id)?;
    let Some(pc) = handle.peer() else {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "candidates apply to WebRTC sessions only",
        )
        .into());
    };
    crate::transport::webrtc::add_candidates(pc, request.candidates)
        .await
        .map_err(|message| {
            ApiError::new(ErrorCode::BadCandidate, message).with_field("candidates")
        })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn events(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Result<Response, Failure> {
    let since = parse_since(query.as_deref())?;
    let (backlog, live) = shared.audit.subscribe(since);
    let shutdown = shared.shutdown.clone();
    let stream = futures::stream::unfold(
        (backlog.into_iter(), live, shutdown),
        |(mut backlog, mut live, shutdown)| async move {
            let record = match backlog.next() {
                Some(record) => record,
                None => tokio::select! {
                    () = shutdown.cancelled() => return None,
                    received = live.recv() => received.ok()?,
                },
            };
            let mut line = serde_json::to_vec(&*record).ok()?;
            line.push(b'\n');
            Some((
                Ok::<_, Infallible>(Bytes::from(line)),
                (backlog, live, shutdown),
            ))
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn parse_since(query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    let mut since = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("since", value)) => {
                since = Some(value.parse::<u64>().map_err(|_| {
                    ApiError::invalid_field("since", "since must be an event sequence number")
                })?);
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::UnknownField,
                    "the only query parameter is `since`",
                )
                .with_field("query"));
            }
        }
    }
    Ok(since)
}

async fn health(State(shared): State<Arc<Shared>>) -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        sessions: shared.registry.len() as u64,
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn not_found() -> Failure {
    Failure(ApiError::new(ErrorCode::NotFound, "no such route"))
}

async fn method_not_allowed() -> Failure {
    Failure(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_follow_the_open_files_limit_unless_configured() {
        let mut settings = ControlSettings {
            socket: "/tmp/x.sock".into(),
            tcp: None,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_tcp_connections: None,
            max_unix_connections: None,
        };
        assert_eq!(connection_budgets(&settings, 1024), (64, 128));
        assert_eq!(connection_budgets(&settings, 20_000), (256, 1024));
        assert_eq!(connection_budgets(&settings, 16), (8, 8));
        settings.max_tcp_connections = Some(5);
        settings.max_unix_connections = Some(7);
        assert_eq!(connection_budgets(&settings, 20_000), (7, 5));
    }

    #[test]
    fn since_is_the_only_query_parameter() {
        assert_eq!(parse_since(None).unwrap(), None);
        assert_eq!(parse_since(Some("since=42")).unwrap(), Some(42));
        assert_eq!(
            parse_since(Some("since=x")).unwrap_err().code,
            ErrorCode::InvalidField
        );
        assert_eq!(
            parse_since(Some("from=1")).unwrap_err().code,
            ErrorCode::UnknownField
        );
    }

    #[test]
    fn socket_is_private_and_replaces_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/control.sock");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = bind_unix(&path).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            // A live socket is not stolen.
            let err = bind_unix(&path).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
            drop(listener);
            // A stale one is replaced.
            bind_unix(&path).unwrap();
            // A regular file is never removed.
            let file = dir.path().join("file");
            std::fs::write(&file, "x").unwrap();
            assert_eq!(
                bind_unix(&file).unwrap_err().kind(),
                io::ErrorKind::AlreadyExists
            );
        });
        // No staging directory is left behind.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".ztproxy-"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
