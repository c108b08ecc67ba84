//! The native Kubernetes backend: ztproxy opens the exec or attach on the API server
//! ([`zt_k8s`]) and draws the terminal ([`zt_terminal`]) into the connection's pipe, so a
//! Kubernetes session needs no guacd or kubectl.
//!
//! [`K8sFactory`] reads the session's parameters (guacd 1.6's `kubernetes` names, plus
//! `bearer-token` and `attach`) when the session is created, so a malformed one is a 400
//! naming it. The session's target is the API server. [`K8sBackend::open`] then, once the
//! client's display is known:
//!
//! 1. connects within [`zt_k8s::CONNECT_TIMEOUT`]: TLS with the session's client certificate
//!    or token (neither ever reaches the client, the audit log or a recording), the
//!    exec or attach request and its WebSocket upgrade. A refusal — a certificate that does
//!    not chain to `ca-cert`, a client certificate the server does not trust, 401/403, a
//!    missing pod — ends the session before the display starts, with the server's reason;
//! 2. audits `k8s_connected` (pod, subprotocol, how the server was authenticated, which
//!    credential was presented) and starts the typescript the session asked for;
//! 3. runs [`zt_k8s::run`] in a task at the far end of a pipe until the process exits, the
//!    client leaves or the session ends; then `k8s_disconnected` with the exit status the
//!    status stream reported and the byte counts, and the typescript is finalised.

use zt_api::audit::AuditEvent;
use zt_api::control::{ApiError, Target};
use zt_guacd::ClientInfo;
use zt_k8s::request::Call;
use zt_k8s::{EndedBy, K8sSettings};
use zt_terminal::Terminal;

use super::backend::{
    Backend, BackendError, BackendFactory, BackendRequest, BackendStream, OpenContext,
};
use super::recording::RecordingSummary;
use super::terminal::{SessionObserver, for_display, start_engine};

/// Makes [`K8sBackend`]s.
pub struct K8sFactory;

impl BackendFactory for K8sFactory {
    fn make(&self, request: &BackendRequest<'_>) -> Result<Box<dyn Backend>, ApiError> {
        let values = request.parameters.values();
        let settings = K8sSettings::from_parameters(|name| {
            values.get(name).map(|v| v.expose_secret().as_str())
        })
        .map_err(|e| ApiError::invalid_field(format!("parameters.{}", e.name), e.reason))?;
        Ok(Box::new(K8sBackend {
            settings,
            target: request.target.clone(),
        }))
    }
}

/// One session's Kubernetes connection. Holds the session's credentials until it opens.
pub struct K8sBackend {
    settings: K8sSettings,
    target: Target,
}

#[async_trait::async_trait]
impl Backend for K8sBackend {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn protocol_metric(&self) -> &'static str {
        "kubernetes_protocol"
    }

    fn records_typescript(&self) -> bool {
        true
    }

    async fn open(
        &mut self,
        display: &ClientInfo,
        context: &OpenContext,
    ) -> Result<BackendStream, BackendError> {
        let terminal = for_display(&self.settings.terminal, display);
        let geometry = terminal.geometry();
        let connection =
            match zt_k8s::connect(&self.target.host, self.target.port, &self.settings).await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, "the Kubernetes exec could not be opened");
                    return Err(BackendError::login(
                        &error,
                        error.status(),
                        &error.client_message(),
                    ));
                }
            };
        tracing::info!(protocol = %connection.protocol(), tls = connection.tls(), "connected to the Kubernetes API server");
        let pod = &self.settings.target;
        context.services.audit.emit(AuditEvent::K8sConnected {
            session: context.session.clone(),
            call: match self.settings.call {
                Call::Attach => "attach",
                _ => "exec",
            }
            .to_owned(),
            namespace: pod.namespace.clone(),
            pod: pod.pod.clone(),
            container: pod.container.clone(),
            protocol: connection.protocol().name().to_owned(),
            tls: connection.tls().to_owned(),
            credentials: self.settings.credentials.kind().to_owned(),
        });
        start_engine(
            context,
            (geometry.cols, geometry.rows),
            format!(
                "kubernetes {}:{} {}/{}",
                self.target.host, self.target.port, pod.namespace, pod.pod
            ),
            move |pipe, observer, stop| drive(connection, terminal, pipe, observer, stop),
        )
        .await
    }
}

/// The engine's task: the session until it ends, then its audit event and recording.
async fn drive(
    connection: zt_k8s::K8sConnection,
    terminal: Terminal,
    pipe: tokio::io::DuplexStream,
    mut observer: SessionObserver,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<RecordingSummary> {
    let end = zt_k8s::run(connection, terminal, pipe, &mut observer, stop).await;
    let (reason, exit_status, detail) = match &end.ended_by {
        EndedBy::Exited(code) => ("exited", Some(*code), None),
        EndedBy::Target => ("target_closed", None, None),
        EndedBy::Client => ("client_closed", None, None),
        EndedBy::Stopped => ("stopped", None, None),
        EndedBy::Failed(error) => {
            tracing::warn!(%error, "the Kubernetes session failed");
            ("error", None, Some(error.to_string()))
        }
        _ => ("error", None, None),
    };
    tracing::info!(
        reason,
        exit_status,
        bytes_from_target = end.bytes_from_target,
        bytes_to_target = end.bytes_to_target,
        "kubernetes connection ended"
    );
    observer.record(AuditEvent::K8sDisconnected {
        session: observer.session.clone(),
        reason: reason.to_owned(),
        exit_status,
        detail,
        bytes_from_target: end.bytes_from_target,
        bytes_to_target: end.bytes_to_target,
    });
    observer.finish().await
}
