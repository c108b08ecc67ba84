//! The control API's listeners: bounded, timed HTTP/1.1 connections.
//!
//! Each listener (the Unix socket, the TCP port) has its own connection budget, so a flood
//! on the TCP port can never take the gateway's Unix socket with it. A connection beyond the
//! budget is accepted and closed at once (counted in `ztproxy_control_refused_total`), which
//! keeps the kernel's accept queue moving. Every connection must deliver a complete request
//! head within [`ListenerLimits::header_timeout`], counted from when it was accepted and again
//! from the end of each response, so a silent, idle or slowloris connection is closed; a body
//! must arrive within `body_timeout` (the handlers enforce that, see `read_json_body`).
//!
//! Request targets longer than [`MAX_URI_BYTES`] and heads larger than [`MAX_HEAD_BYTES`] get
//! the API's JSON errors (414, 431). hyper itself answers heads beyond [`HTTP_BUF_BYTES`], with
//! an empty 431, and closes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::metrics::Metrics;

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a connection has to send a complete request head.
    pub header_timeout: Duration,
}

/// Longest request target (path and query) the API reads.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest request head (request line and headers) the API reads.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// hyper's read buffer per connection: heads beyond it are refused by hyper itself.
pub const HTTP_BUF_BYTES: usize = 64 * 1024;
/// How long shutdown lets open connections finish their request.
const DRAIN: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` within `limits` until `shutdown`.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: ListenerLimits,
    name: &'static str,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) where
    L: Listener,
    L::Io: Send + Unpin + 'static,
{
    let budget = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let refusals = crate::util::LogThrottle::new(Duration::from_secs(60));
    loop {
        // axum's `Listener::accept` retries accept errors (EMFILE and the like) by itself,
        // pausing between attempts.
        let (io, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok(permit) = budget.clone().try_acquire_owned() else {
            drop(io);
            metrics.control_refused(name);
            // One line per minute at most, however hard the flood.
            if let Some(refused) = refusals.note(1) {
                tracing::warn!(
                    listener = name,
                    refused,
                    max = limits.max_connections,
                    "control API connection budget exhausted; refusing connections"
                );
            }
            continue;
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let router = router.clone();
                async move {
                    let response = router
                        .oneshot(request.map(Body::new))
                        .await
                        .unwrap_or_else(|never: Infallible| match never {});
                    Ok::<_, Infallible>(response)
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(HTTP_BUF_BYTES)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, connection).await;
                }
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(DRAIN, connections.wait()).await;
}
