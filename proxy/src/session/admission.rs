//! Tunnelled TCP connections: admission against the session's limit, the relay, audit.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use zt_api::audit::AuditEvent;
use zt_api::control::Origin;
use zt_api::tunnel::TunnelErrorCode;

use crate::server::Shared;
use crate::transport::stream::Stream;
use crate::tunnel::{self, Meter};

use super::registry::*;
use super::*;

/// Admits a new tunnelled connection if the session has room; returns its number.
pub(super) fn admit(shared: &Shared, handle: &SessionHandle) -> Option<u64> {
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

pub(super) fn refused(
    shared: &Shared,
    handle: &SessionHandle,
    code: TunnelErrorCode,
    origin: Origin,
) {
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
pub(super) struct Slot<'a> {
    pub(super) shared: &'a Shared,
    pub(super) handle: &'a SessionHandle,
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
        self.stats.count_to_client(&self.shared.metrics, n as u64);
        self.stats.touch();
    }

    fn received(&self, n: usize) {
        self.stats.count_to_target(&self.shared.metrics, n as u64);
        self.stats.touch();
    }
}

/// One tunnelled TCP connection: the target is connected, then bytes flow until both sides
/// end (or the session does).
pub(super) async fn relay_tunnel(
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

pub(super) fn opened(shared: &Shared, handle: &SessionHandle, conn_no: u64) {
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
