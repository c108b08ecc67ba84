//! `ztproxy serve`: wires the control API, the transports and the session registry together
//! and runs them until a shutdown signal.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zt_api::control::EndReason;

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::control;
use crate::metrics::Metrics;
use crate::session::Registry;
use crate::transport::quic::{QuicServer, QuicSetupError};
use crate::transport::webrtc::PeerSettings;

/// How long shutdown waits for sessions to close.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// State shared by the control API, the transports and every session.
#[derive(Debug)]
pub struct Shared {
    /// Validated configuration.
    pub settings: Settings,
    /// What connection sessions' displays come from, by route.
    pub backends: crate::connection::backend::Backends,
    /// Live sessions.
    pub registry: Registry,
    /// Audit events.
    pub audit: Arc<AuditLog>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Peer-connection settings, when WebRTC is enabled.
    pub webrtc: Option<PeerSettings>,
    /// The QUIC endpoint, when QUIC is enabled.
    pub quic: Option<Arc<QuicServer>>,
    /// Session tasks.
    pub tasks: TaskTracker,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for QuicServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicServer")
            .field("local_addr", &self.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The control socket or TCP listener could not be set up.
    #[error("control API: cannot listen on {what}")]
    Control {
        /// The socket path or address.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The QUIC endpoint could not be set up.
    #[error(transparent)]
    Quic(#[from] QuicSetupError),
}

/// What the daemon prints on stdout, as one JSON line, once it accepts requests.
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    /// Always `"ready"`.
    pub event: &'static str,
    /// The control socket.
    pub control_socket: PathBuf,
    /// The control TCP listener, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_tcp: Option<SocketAddr>,
    /// The QUIC endpoint, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quic: Option<SocketAddr>,
    /// ztproxy's version.
    pub version: &'static str,
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn serve(settings: Settings, shutdown: CancellationToken) -> Result<(), ServeError> {
    serve_with(settings, shutdown, ServeOptions::default()).await
}

/// What an embedding program adds to [`serve`]: more backends, and the ready line as a
/// value.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The backends connection sessions may use (guacd is always there when configured).
    pub backends: crate::connection::backend::Backends,
    /// Gets the ready line once the daemon listens.
    pub ready: Option<tokio::sync::oneshot::Sender<Ready>>,
}

/// [`serve`], with `options`.
pub async fn serve_with(
    settings: Settings,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> Result<(), ServeError> {
    let open_files = crate::util::raise_open_files_limit();
    tracing::debug!(open_files, "open-files limit");
    let max_streams = settings.sessions.max_connections_per_session;
    let quic = match &settings.quic {
        Some(quic) => Some(QuicServer::bind(quic, max_streams)?),
        None => None,
    };
    let webrtc = settings.webrtc.as_ref().map(|w| w.peer.clone());
    let shared = Arc::new(Shared {
        backends: options.backends,
        registry: Registry::new(settings.sessions.max_sessions),
        audit: Arc::new(AuditLog::new()),
        metrics: Arc::new(Metrics::new()),
        webrtc,
        quic,
        tasks: TaskTracker::new(),
        shutdown: shutdown.clone(),
        settings,
    });

    let listeners = control::bind(&shared.settings.control).await?;
    let ready = Ready {
        event: "ready",
        control_socket: shared.settings.control.socket.clone(),
        control_tcp: listeners.tcp_addr(),
        quic: shared.quic.as_ref().and_then(|q| q.local_addr().ok()),
        version: env!("CARGO_PKG_VERSION"),
    };

    let mut background = Vec::new();
    if let Some(quic) = &shared.quic {
        background.push(tokio::spawn(quic.clone().run(
            shutdown.clone(),
            shared.audit.clone(),
            shared.metrics.clone(),
        )));
    }
    let control_task = tokio::spawn(control::serve(shared.clone(), listeners));

    match serde_json::to_string(&ready) {
        Ok(line) => println!("{line}"),
        Err(error) => tracing::error!(%error, "cannot print the ready line"),
    }
    let announced = ready.clone();
    tracing::info!(
        control_socket = %ready.control_socket.display(),
        control_tcp = ?ready.control_tcp,
        quic = ?ready.quic,
        "ztproxy ready"
    );

    if let Some(tx) = options.ready {
        let _ = tx.send(announced);
    }
    shutdown.cancelled().await;
    tracing::info!(sessions = shared.registry.len(), "shutting down");
    shared.registry.end_all(EndReason::Shutdown);
    shared.tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, shared.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("sessions did not end within the shutdown grace period");
    }
    let _ = control_task.await;
    for task in background {
        let _ = task.await;
    }
    let _ = std::fs::remove_file(&shared.settings.control.socket);
    Ok(())
}
