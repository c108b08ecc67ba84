//! The local web server behind `ztproxy connect web` and `ztproxy recording play`: it serves
//! the browser client (built from `proxy/web`, embedded in the binary) on loopback and answers
//! the page's few requests.
//!
//! # Threat model
//!
//! Any web page the user visits, and any local process, can send requests to a loopback port.
//! So every request must name this run's random token as the first path segment
//! (`/s/<token>/…`, compared in constant time), its `Host` must be the loopback address the
//! server is bound to (no DNS rebinding), and a request that changes anything must come from
//! the page's own origin (`Origin` present and equal). Bodies are read with a size limit
//! before they are parsed. Everything served carries a strict Content-Security-Policy, and
//! nothing served is secret: the page never gets credentials or recording keys.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::local_checks as checks;

mod assets {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// The Content-Security-Policy of everything served: scripts, styles and requests only from
/// the page's origin; images and media also from `blob:` and `data:` URLs (Guacamole's
/// display decodes streams that way); no frames, forms or plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The largest request body accepted (an SDP offer is a few KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// Why the local server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The binary was built without the browser client.
    #[error(
        "this ztproxy was built without its browser client: run ./scripts/setup (or `npm ci && npm run build` in proxy/web) and rebuild"
    )]
    NotBuilt,
    /// The address is not a loopback address.
    #[error("{0} is not a loopback address; the local helper listens on loopback only")]
    NotLoopback(SocketAddr),
    /// Listening failed.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// No randomness for the token.
    #[error("no randomness available: {0}")]
    Random(std::io::Error),
}

/// One of the embedded files, by name.
pub fn asset(name: &str) -> Option<&'static [u8]> {
    assets::ASSETS
        .iter()
        .find_map(|(file, bytes)| (*file == name).then_some(*bytes))
}

/// Whether the browser client was built into this binary.
pub fn built() -> bool {
    !assets::ASSETS.is_empty()
}

/// A loopback listener and the token its URLs carry.
#[derive(Debug)]
pub struct LocalListener {
    listener: TcpListener,
    address: SocketAddr,
    token: String,
}

impl LocalListener {
    /// Binds `address` (loopback only) and draws a fresh token.
    pub async fn bind(address: SocketAddr) -> Result<Self, LocalError> {
        if !built() {
            return Err(LocalError::NotBuilt);
        }
        if !address.ip().is_loopback() {
            return Err(LocalError::NotLoopback(address));
        }
        let token = crate::util::random_bytes::<24>()
            .map(|bytes| {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            })
            .map_err(LocalError::Random)?;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| LocalError::Listen(address, e))?;
        let address = listener
            .local_addr()
            .map_err(|e| LocalError::Listen(address, e))?;
        Ok(Self {
            listener,
            address,
            token,
        })
    }

    /// The URL of `page` (a file name, or empty for the index).
    pub fn url(&self, page: &str) -> String {
        format!("http://{}/s/{}/{page}", self.address, self.token)
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves `app` until `shutdown` fires.
    pub async fn serve<A: App>(
        self,
        app: Arc<A>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let guard = Arc::new(Guard {
            token: self.token,
            address: self.address,
        });
        let router = axum::Router::new().fallback(move |request: Request| {
            let guard = guard.clone();
            let app = app.clone();
            async move { route(&guard, app.as_ref(), request).await }
        });
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    }
}

/// What a local page's server answers beyond its static files.
pub trait App: Send + Sync + 'static {
    /// The page `/s/<token>/` serves.
    const INDEX: &'static str;

    /// Answers `method` on `path` (after the token, never empty, never a static file), with
    /// the request's body (at most [`MAX_BODY`] bytes). `None`: not found.
    fn handle(
        &self,
        method: &Method,
        path: &str,
        body: Bytes,
    ) -> impl Future<Output = Option<Response>> + Send;
}

struct Guard {
    token: String,
    address: SocketAddr,
}

impl Guard {
    fn token_ok(&self, token: &str) -> bool {
        token.len() == self.token.len() && bool::from(token.as_bytes().ct_eq(self.token.as_bytes()))
    }
}

/// A JSON error: `{"error":{"code","message"}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    with_headers(
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
    )
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    with_headers(
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response(),
    )
}

/// Bytes with a content type.
pub fn bytes(content_type: &'static str, body: Bytes) -> Response {
    with_headers(([(header::CONTENT_TYPE, content_type)], Body::from(body)).into_response())
}

fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    }
}

async fn route<A: App>(guard: &Guard, app: &A, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let host = header(header::HOST);
    if !checks::host_ok(host, guard.address) {
        return error(
            StatusCode::FORBIDDEN,
            "bad_host",
            "the request is not addressed to this loopback helper",
        );
    }
    let cross_site = parts
        .headers
        .get("sec-fetch-site")
        .is_some_and(|site| site == "cross-site" || site == "same-site");
    let changes = parts.method != Method::GET && parts.method != Method::HEAD;
    if cross_site || !checks::origin_ok(header(header::ORIGIN), host, changes) {
        return error(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "requests must come from the page this helper serves",
        );
    }
    let path = parts.uri.path();
    let Some(rest) = path.strip_prefix("/s/") else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such page (the URL needs this run's token)",
        );
    };
    let (token, rest) = rest.split_once('/').unwrap_or((rest, ""));
    if !guard.token_ok(token) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such page (the URL needs this run's token)",
        );
    }
    let name = if rest.is_empty() { A::INDEX } else { rest };
    if parts.method == Method::GET
        && let Some(file) = asset(name)
    {
        return bytes(content_type(name), Bytes::from_static(file));
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!("the request body is larger than {MAX_BODY} bytes"),
            );
        }
    };
    match app.handle(&parts.method, name, body).await {
        Some(response) => response,
        None => error(StatusCode::NOT_FOUND, "not_found", "no such page"),
    }
}
