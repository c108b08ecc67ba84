//! The native database consoles: ztproxy logs in to the database itself ([`zt_db`]) and runs
//! an interactive console on the terminal ([`zt_terminal`]), so the password is injected and
//! never shown.
//!
//! [`DatabaseFactory`] reads the session's parameters when the session is created.
//! [`DatabaseBackend::open`] logs in within `timeout` (a refused login ends the session
//! before the display starts, with the server's reason in the detail), starts the typescript
//! recording, and runs [`zt_db::run`] in a task at the far end of a pipe. Every statement is
//! a `db_query` audit event (and a note in the recordings); the end is `db_disconnected`.
//!
//! PostgreSQL, MySQL/MariaDB and SQL Server.

use zt_api::audit::AuditEvent;
use zt_api::control::{ApiError, ErrorCode, Target};
use zt_api::protocol::Protocol;
use zt_db::{DbSettings, Dialect, Editor, EndedBy, QueryReport};
use zt_guacd::ClientInfo;
use zt_terminal::Terminal;

use super::backend::{
    Backend, BackendError, BackendFactory, BackendRequest, BackendStream, OpenContext,
};
use super::recording::RecordingSummary;
use super::terminal::{SessionObserver, for_display, start_engine};

/// Makes [`DatabaseBackend`]s.
pub struct DatabaseFactory;

impl BackendFactory for DatabaseFactory {
    fn make(&self, request: &BackendRequest<'_>) -> Result<Box<dyn Backend>, ApiError> {
        let protocol = request.parameters.protocol();
        if !matches!(
            protocol,
            Protocol::Postgresql | Protocol::Mysql | Protocol::Sqlserver
        ) {
            return Err(ApiError::new(
                ErrorCode::Unsupported,
                format!("{protocol} is not a database console"),
            )
            .with_field("protocol"));
        }
        let values = request.parameters.values();
        let settings = DbSettings::from_parameters(|name| {
            values.get(name).map(|v| v.expose_secret().as_str())
        })
        .map_err(|e| ApiError::invalid_field(format!("parameters.{}", e.name), e.reason))?;
        if protocol == Protocol::Mysql
            && !settings.pins.is_empty()
            && settings.certificates.is_empty()
        {
            return Err(ApiError::invalid_field(
                "parameters.server-certificate",
                "for mysql, the pinned certificate itself (PEM), not its fingerprint",
            ));
        }
        Ok(Box::new(DatabaseBackend {
            settings,
            protocol,
            target: request.target.clone(),
        }))
    }
}

/// One session's database console. Holds the session's credentials until it opens.
pub struct DatabaseBackend {
    settings: DbSettings,
    protocol: Protocol,
    target: Target,
}

/// A logged-in engine of either kind.
enum Connected {
    Postgres(Box<zt_db::postgres::Postgres>),
    Mysql(Box<zt_db::mysql::Mysql>),
    Mssql(Box<zt_db::mssql::Mssql>),
}

impl DatabaseBackend {
    async fn login(&self) -> Result<Connected, zt_db::Error> {
        let (host, port) = (self.target.host.as_str(), self.target.port);
        match self.protocol {
            Protocol::Mysql => zt_db::mysql::connect(host, port, &self.settings)
                .await
                .map(|e| Connected::Mysql(Box::new(e))),
            Protocol::Sqlserver => zt_db::mssql::connect(host, port, &self.settings)
                .await
                .map(|e| Connected::Mssql(Box::new(e))),
            _ => zt_db::postgres::connect(host, port, &self.settings, None)
                .await
                .map(|e| Connected::Postgres(Box::new(e))),
        }
    }
}

#[async_trait::async_trait]
impl Backend for DatabaseBackend {
    fn name(&self) -> &'static str {
        self.protocol.as_str()
    }

    fn protocol_metric(&self) -> &'static str {
        "database_protocol"
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
        let engine = match self.login().await {
            Ok(engine) => engine,
            Err(error) => {
                let error = error.shortened();
                tracing::warn!(%error, "database login failed");
                return Err(BackendError::login(
                    &error,
                    error.status(),
                    error.client_message(),
                ));
            }
        };
        let database = match &engine {
            Connected::Postgres(e) => e.database().to_owned(),
            Connected::Mysql(e) => e.database().to_owned(),
            Connected::Mssql(e) => e.database().to_owned(),
        };
        // (TLS, the certificate's fingerprint when known, whether it was pinned.)
        let (tls, certificate, pinned) = match &engine {
            Connected::Postgres(e) => match e.certificate() {
                Some((c, pinned)) => (true, Some(c), pinned),
                None => (false, None, false),
            },
            // mysql_async does not show the certificate: only that it passed the pins.
            Connected::Mysql(e) => (e.tls(), None, e.tls() && !self.settings.pins.is_empty()),
            Connected::Mssql(e) => match e.certificate() {
                Some((c, pinned)) => (true, Some(c), pinned),
                None => (false, None, false),
            },
        };
        let certificate = certificate.map(|c| zt_db::tls::display(&c));
        tracing::info!(%database, tls, certificate, "logged in to the database");
        context.services.audit.emit(AuditEvent::DbConnected {
            session: context.session.clone(),
            database: database.clone(),
            tls,
            certificate_fingerprint: certificate,
            certificate_pinned: pinned,
        });
        let password = self.settings.password.clone();
        start_engine(
            context,
            (geometry.cols, geometry.rows),
            format!(
                "{} {}:{}",
                self.protocol, self.target.host, self.target.port
            ),
            move |pipe, observer, stop| async move {
                let console = Console {
                    terminal,
                    pipe,
                    password,
                    observer: QueryObserver { inner: observer },
                    stop,
                };
                match engine {
                    Connected::Postgres(engine) => console.run(*engine, Dialect::Postgres).await,
                    Connected::Mysql(engine) => console.run(*engine, Dialect::Mysql).await,
                    Connected::Mssql(engine) => console.run(*engine, Dialect::Tsql).await,
                }
            },
        )
        .await
    }
}

/// Everything the console's task needs besides its engine.
struct Console {
    terminal: Terminal,
    pipe: tokio::io::DuplexStream,
    password: Option<zt_api::Secret<String>>,
    observer: QueryObserver,
    stop: tokio_util::sync::CancellationToken,
}

impl Console {
    /// The console until it ends, then its audit event and recording.
    async fn run<E: zt_db::Engine>(self, engine: E, dialect: Dialect) -> Vec<RecordingSummary> {
        let Self {
            terminal,
            pipe,
            password,
            mut observer,
            stop,
        } = self;
        let editor = Editor::new(dialect, "> ", "-> ");
        let end = zt_db::run(
            engine,
            editor,
            terminal,
            pipe,
            password.as_ref().map(|p| p.expose_secret().as_str()),
            &mut observer,
            stop,
        )
        .await;
        let reason = match end.ended_by {
            EndedBy::User => "user_left",
            EndedBy::Client => "client_closed",
            EndedBy::Stopped => "stopped",
            _ => "error",
        };
        tracing::info!(
            reason,
            statements = end.statements,
            "database console ended"
        );
        let inner = observer.inner;
        inner.audit.emit(AuditEvent::DbDisconnected {
            session: inner.session.clone(),
            reason: reason.to_owned(),
            statements: end.statements,
        });
        inner.finish().await
    }
}

/// The session's observer, hearing statements too.
struct QueryObserver {
    inner: SessionObserver,
}

impl zt_terminal::Observer for QueryObserver {
    fn output(&mut self, bytes: &[u8]) {
        self.inner.output(bytes);
    }

    fn input(&mut self, bytes: &[u8]) {
        self.inner.input(bytes);
    }

    fn resize(&mut self, cols: u16, rows: u16) {
        self.inner.resize(cols, rows);
    }

    fn terminal(&mut self, event: &zt_terminal::Event) {
        self.inner.terminal(event);
    }
}

impl zt_db::Observer for QueryObserver {
    fn query(&mut self, report: &QueryReport) {
        let event = AuditEvent::DbQuery {
            session: self.inner.session.clone(),
            database: report.database.clone(),
            statement: report.statement.clone(),
            duration_ms: u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
            rows: report.rows,
            error_code: report.error_code.clone(),
            cancelled: report.cancelled,
        };
        self.inner.record(event);
    }

    fn refused(&mut self, action: &str, name: &str) {
        let direction = if action == "upload" {
            "to_target"
        } else {
            "to_client"
        };
        let event = AuditEvent::PolicyRefused {
            session: self.inner.session.clone(),
            direction: direction.to_owned(),
            action: action.to_owned(),
            name: Some(name.to_owned()),
            reason: Some("policy".to_owned()),
        };
        self.inner.record(event);
    }
}
