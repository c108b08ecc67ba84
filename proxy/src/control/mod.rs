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

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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

/// Serves the API until shutdown.
pub async fn serve(shared: Arc<Shared>, listeners: Listeners) {
    let router = router(shared.clone());
    let shutdown = shared.shutdown.clone();
    let unix = axum::serve(listeners.unix, router.clone())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    match listeners.tcp {
        Some((listener, token)) => {
            let auth = Arc::new(TokenAuth {
                token,
                shared: shared.clone(),
            });
            let tcp_router = router.layer(middleware::from_fn_with_state(auth, require_token));
            let tcp = axum::serve(listener, tcp_router)
                .with_graceful_shutdown(shutdown.cancelled_owned());
            let (a, b) = tokio::join!(unix, tcp);
            for result in [a, b] {
                if let Err(error) = result {
                    tracing::error!(%error, "control API listener failed");
                }
            }
        }
        None => {
            if let Err(error) = unix.await {
                tracing::error!(%error, "control API listener failed");
            }
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/sessions", post(create_session).get(list_sessions))
        .route("/v1/sessions/{id}", get(get_session).delete(delete_session))
        .route("/v1/sessions/{id}/candidates", post(add_candidates))
        .route("/v1/events", get(events))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

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

async fn read_json_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
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
    match http_body_util::Limited::new(body, MAX_REQUEST_BYTES)
        .collect()
        .await
    {
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

async fn create_session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let body = read_json_body(&headers, body).await?;
    let request = control::parse_create_session(&body)?;
    let policy = ValidationPolicy {
        require_sealed_signalling: shared.webrtc.is_some()
            && shared
                .settings
                .webrtc
                .as_ref()
                .is_some_and(|w| w.require_sealed_signalling),
    };
    let spec = request.validate(policy)?;
    let response = session::create(&shared, spec).await?;
    Ok((StatusCode::CREATED, axum::Json(response)).into_response())
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
    handle.end(control::EndReason::Revoked);
    match tokio::time::timeout(REVOKE_WAIT, handle.wait_ended()).await {
        Ok(Some(summary)) => Ok(axum::Json(summary).into_response()),
        _ => Err(ApiError::new(
            ErrorCode::Internal,
            "the session is ending but did not finish in time",
        )
        .into()),
    }
}

async fn add_candidates(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let body = read_json_body(&headers, body).await?;
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
