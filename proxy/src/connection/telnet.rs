//! The native Telnet backend: ztproxy is the Telnet client ([`zt_telnet`]) and draws the
//! terminal ([`zt_terminal`]) into the connection's pipe, so a Telnet session needs no guacd.
//!
//! [`TelnetFactory`] reads the session's parameters (guacd 1.6's names) when the session is
//! created, so a malformed one is a 400 naming it. [`TelnetBackend::open`] then, once the
//! client's display is known:
//!
//! 1. connects to the target within `timeout` (an unreachable target ends the session before
//!    the display starts, with guacd's status);
//! 2. starts the typescript recording the session asked for;
//! 3. runs [`zt_telnet::run`] in a task at the far end of a pipe: the login happens on the
//!    user's screen with the credentials typed by ztproxy (never recorded as input); a login
//!    the `login-failure-regex` refuses, or one that outlasts `timeout`, ends the session with
//!    `telnet_login_failed` and an `error` to the client; otherwise it runs until the target
//!    closes, the client leaves or the session ends; then `telnet_disconnected` with the
//!    byte counts, and the typescript is finalised.
//!
//! Telnet has no encryption and no server authentication: it is for legacy devices on a
//! network the gateway trusts, as with guacd.

use zt_api::audit::AuditEvent;
use zt_api::control::{ApiError, Target};
use zt_guacd::ClientInfo;
use zt_telnet::{EndedBy, TelnetSettings};
use zt_terminal::Terminal;

use super::backend::{
    Backend, BackendError, BackendFactory, BackendRequest, BackendStream, OpenContext,
};
use super::recording::RecordingSummary;
use super::terminal::{SessionObserver, for_display, start_engine};

/// Makes [`TelnetBackend`]s.
pub struct TelnetFactory;

impl BackendFactory for TelnetFactory {
    fn make(&self, request: &BackendRequest<'_>) -> Result<Box<dyn Backend>, ApiError> {
        let values = request.parameters.values();
        let settings = TelnetSettings::from_parameters(|name| {
            values.get(name).map(|v| v.expose_secret().as_str())
        })
        .map_err(|e| ApiError::invalid_field(format!("parameters.{}", e.name), e.reason))?;
        Ok(Box::new(TelnetBackend {
            settings,
            target: request.target.clone(),
        }))
    }
}

/// One session's Telnet connection. Holds the session's credentials until it opens.
pub struct TelnetBackend {
    settings: TelnetSettings,
    target: Target,
}

#[async_trait::async_trait]
impl Backend for TelnetBackend {
    fn name(&self) -> &'static str {
        "telnet"
    }

    fn protocol_metric(&self) -> &'static str {
        "telnet_protocol"
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
            match zt_telnet::connect(&self.target.host, self.target.port, &self.settings).await {
                Ok(connection) => connection,
                Err(error) => {
                    return Err(BackendError::login(
                        &error,
                        error.status(),
                        error.client_message(),
                    ));
                }
            };
        tracing::info!("connected to the telnet target");
        start_engine(
            context,
            (geometry.cols, geometry.rows),
            format!("telnet {}:{}", self.target.host, self.target.port),
            move |pipe, observer, stop| drive(connection, terminal, pipe, observer, stop),
        )
        .await
    }
}

/// The engine's task: the session until it ends, then its audit events and recording.
async fn drive(
    connection: zt_telnet::TelnetConnection,
    terminal: Terminal,
    pipe: tokio::io::DuplexStream,
    mut observer: SessionObserver,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<RecordingSummary> {
    let end = zt_telnet::run(connection, terminal, pipe, &mut observer, stop).await;
    let (reason, detail) = match &end.ended_by {
        EndedBy::Target => ("target_closed", None),
        EndedBy::Client => ("client_closed", None),
        EndedBy::Stopped => ("stopped", None),
        EndedBy::Failed(
            error @ (zt_telnet::Error::LoginRefused | zt_telnet::Error::Timeout(_)),
        ) => {
            let reason = if matches!(error, zt_telnet::Error::LoginRefused) {
                "refused"
            } else {
                "timed_out"
            };
            tracing::warn!(%error, "telnet login failed");
            observer.record(AuditEvent::TelnetLoginFailed {
                session: observer.session.clone(),
                reason: reason.to_owned(),
            });
            ("login_failed", Some(error.to_string()))
        }
        EndedBy::Failed(error) => ("error", Some(error.to_string())),
        _ => ("error", None),
    };
    tracing::info!(
        reason,
        logged_in = end.logged_in,
        bytes_from_target = end.bytes_from_target,
        bytes_to_target = end.bytes_to_target,
        "telnet connection ended"
    );
    observer.audit.emit(AuditEvent::TelnetDisconnected {
        session: observer.session.clone(),
        reason: reason.to_owned(),
        logged_in: end.logged_in,
        detail,
        bytes_from_target: end.bytes_from_target,
        bytes_to_target: end.bytes_to_target,
    });
    observer.finish().await
}
