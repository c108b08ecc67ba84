//! The MySQL and MariaDB console: mysql_async's text protocol (any statement, several result
//! sets, values in the server's own formatting), streamed into boxed tables as the `mysql`
//! client draws them; Ctrl-C runs `KILL QUERY` from a second connection, so the query stops
//! on the server.
//!
//! * `USE`, `SHOW TABLES`, `DESCRIBE` are the server's own; psql's `\dt`, `\l`, `\d NAME` and
//!   `\c DB` are offered too, as `SHOW TABLES`, `SHOW DATABASES`, `DESCRIBE` and `USE`.
//! * `SELECT ... INTO LOCAL OUTFILE 'name.csv'` (Keeper's syntax; the server never sees it)
//!   runs the `SELECT` and sends its rows to the user as a CSV file, when the session allows
//!   CSV export.
//! * `LOAD DATA LOCAL INFILE 'name.csv' INTO TABLE ...` asks the user for the file and
//!   answers the server's LOCAL INFILE request with it, when the session allows CSV import.
//!   A LOCAL INFILE request at any other time (a hostile server asking for a file) is
//!   refused: ztproxy's own file system is never read.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row, SslOpts, Value};
use regex::Regex;
use tokio::sync::mpsc;

use crate::console::{Canceller, Engine, Job, Output, QueryReport, Upload};
use crate::error::Error;
use crate::files::{INFILE, OUTFILE, csv_line, file_name};
use crate::settings::{DbSettings, SslMode};
use crate::table::{Style, Table};

/// Output gathered before it is handed to the terminal.
const CHUNK: usize = 16 * 1024;

const HELP: &str = "General\r
  \\q, quit, exit         quit (or Ctrl-D)\r
  \\?                     this help\r
  \\x                     toggle vertical output (one record per block)\r
Informational (the server's own SHOW TABLES, SHOW DATABASES, DESCRIBE work too)\r
  \\dt                    SHOW TABLES\r
  \\l                     SHOW DATABASES\r
  \\d NAME                DESCRIBE NAME\r
  \\c DB                  USE DB\r
Files (when the session allows)\r
  SELECT ... INTO LOCAL OUTFILE 'F.csv'         send a result to you as a CSV file\r
  LOAD DATA LOCAL INFILE 'F.csv' INTO TABLE T   load a CSV file you send into T\r
Ctrl-C cancels a running query on the server; Up and Down recall earlier statements.\r
\r
";

static USE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"(?is)^\s*use\s+").ok());

/// A logged-in MySQL or MariaDB connection.
pub struct Mysql {
    conn: Conn,
    opts: Opts,
    settings: DbSettings,
    flavour: &'static str,
    database: String,
    expanded: bool,
    tls: bool,
    /// The connection's id, shared with the canceller (so `KILL QUERY` follows a reconnect).
    id: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl std::fmt::Debug for Mysql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mysql")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Connects and logs in within the settings' `timeout`, to `database` when it is set, with
/// TLS as `ssl-mode` and `server-certificate` say (see [`crate::tls`]).
pub async fn connect(host: &str, port: u16, settings: &DbSettings) -> Result<Mysql, Error> {
    let plain: Opts = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .prefer_socket(false)
        .user(Some(settings.username.expose_secret().clone()))
        .pass(
            settings
                .password
                .as_ref()
                .map(|p| p.expose_secret().clone()),
        )
        .db_name(settings.database.clone())
        .into();
    let (mut conn, opts, tls) = match ssl_opts(settings)? {
        None => (open(&plain, settings.timeout).await?, plain, false),
        Some(ssl) => {
            let secure: Opts = OptsBuilder::from_opts(plain.clone())
                .ssl_opts(Some(ssl))
                .into();
            match open(&secure, settings.timeout).await {
                Ok(conn) => (conn, secure, true),
                Err(Error::TlsUnavailable) if settings.ssl_mode == SslMode::Prefer => {
                    (open(&plain, settings.timeout).await?, plain, false)
                }
                Err(error) => return Err(error),
            }
        }
    };
    refuse_infile(&mut conn);
    let (flavour, database) = identify(&mut conn).await?;
    let id = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(conn.id()));
    Ok(Mysql {
        conn,
        opts,
        settings: settings.clone(),
        flavour,
        database,
        expanded: false,
        tls,
        id,
    })
}

/// The first DNS name a certificate holds.
fn dns_name(der: &[u8]) -> Option<String> {
    let der = rustls::pki_types::CertificateDer::from(der);
    let certificate = webpki::EndEntityCert::try_from(&der).ok()?;
    certificate.valid_dns_names().next().map(str::to_owned)
}

/// mysql_async's TLS options for the session: none for `disable`; the pinned certificates as
/// the only trust anchors (names unchecked: the pin is the identity); otherwise any
/// certificate.
fn ssl_opts(settings: &DbSettings) -> Result<Option<SslOpts>, Error> {
    if settings.ssl_mode == SslMode::Disable {
        return Ok(None);
    }
    // mysql_async builds its rustls configuration with the process's default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !settings.certificates.is_empty() {
        let roots = settings
            .certificates
            .iter()
            .map(|der| der.clone().into())
            .collect();
        let mut ssl = SslOpts::default()
            .with_root_certs(roots)
            .with_disable_built_in_roots(true)
            .with_danger_skip_domain_validation(true);
        // mysql_async's skipping of the name check looks for rustls's old error text, which
        // rustls 0.23 no longer writes: the pin is the identity, so the name checked is one
        // the pinned certificate holds.
        if let Some(name) = settings.certificates.first().and_then(|der| dns_name(der)) {
            ssl = ssl.with_danger_tls_hostname_override(Some(name));
        }
        return Ok(Some(ssl));
    }
    if !settings.pins.is_empty() {
        // Refused when the session is created; here for a caller that did not check.
        return Err(Error::Server(
            "MySQL pins need the certificate itself (PEM) in server-certificate".to_owned(),
        ));
    }
    Ok(Some(
        SslOpts::default().with_danger_accept_invalid_certs(true),
    ))
}

async fn open(opts: &Opts, timeout: Duration) -> Result<Conn, Error> {
    tokio::time::timeout(timeout, Conn::new(opts.clone()))
        .await
        .map_err(|_| Error::Timeout(timeout))?
        .map_err(|e| match &e {
            mysql_async::Error::Server(server) if matches!(server.code, 1044 | 1045 | 1049) => {
                Error::LoginRefused(server.message.clone())
            }
            mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
                Error::TlsUnavailable
            }
            mysql_async::Error::Io(mysql_async::IoError::Io(io))
                if io
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|tls| matches!(tls, rustls::Error::InvalidCertificate(_))) =>
            {
                Error::CertificateRefused("(not a pinned certificate)".to_owned())
            }
            mysql_async::Error::Server(server) => Error::Server(server.message.clone()),
            other => Error::Unreachable(other.to_string()),
        })
}

/// Until the user asks for a LOAD DATA LOCAL, a server asking for a file gets none: the
/// handler's stream fails at once, so mysql_async ends the file empty and the statement fails
/// with the reason (mysql_async then closes the connection: the console opens another).
/// mysql_async uses a handler once: it is set again before every statement.
fn refuse_infile(conn: &mut Conn) {
    conn.set_infile_handler(async {
        let refusal = futures::stream::once(async {
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the server asked for a file: ztproxy sends one only for a LOAD DATA LOCAL INFILE the user ran",
            ))
        });
        Ok(refusal.boxed())
    });
}

async fn identify(conn: &mut Conn) -> Result<(&'static str, String), Error> {
    let row: Option<(Option<String>, String)> = conn
        .query_first("SELECT DATABASE(), VERSION()")
        .await
        .map_err(|e| Error::Server(e.to_string()))?;
    let (database, version) = row.unwrap_or_default();
    let flavour = if version.contains("MariaDB") {
        "MariaDB"
    } else {
        "mysql"
    };
    Ok((flavour, database.unwrap_or_else(|| "(none)".to_owned())))
}

/// A row's values as text.
fn values_of(row: &Row) -> Vec<Option<String>> {
    (0..row.len())
        .map(|i| row.as_ref(i).and_then(text))
        .collect()
}

/// A value as the text protocol gives it (`None` is NULL).
fn text(value: &Value) -> Option<String> {
    match value {
        Value::NULL => None,
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        other => Some(other.as_sql(true).trim_matches('\'').to_owned()),
    }
}

impl Mysql {
    /// Whether the connection is TLS (verified against the pinned certificates when the
    /// session has any; mysql_async does not show the certificate it saw).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The database in use.
    pub fn database(&self) -> &str {
        &self.database
    }

    fn prompts(&self) -> Output {
        Output::Prompt {
            prompt: format!("{} [{}]> ", self.flavour, self.database),
            continuation: "    -> ".to_owned(),
        }
    }

    fn failed(report: &mut QueryReport, error: &mysql_async::Error, out: &mut Vec<u8>) {
        let text = match error {
            mysql_async::Error::Server(server) => {
                report.error_code = Some(server.state.clone());
                report.cancelled = server.code == 1317;
                format!(
                    "ERROR {} ({}): {}",
                    server.code, server.state, server.message
                )
            }
            mysql_async::Error::Driver(mysql_async::DriverError::LocalInfile(_)) => {
                report.error_code = Some("HY000".to_owned());
                "ERROR: the server asked for a file the user did not name: nothing was sent."
                    .to_owned()
            }
            other => {
                report.error_code = Some("HY000".to_owned());
                format!("ERROR: {other}")
            }
        };
        out.extend_from_slice(crate::table::display(&text).0.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Runs `sql`, writing each result set as a table (or its `Query OK`), or — with `csv`
    /// — the first result set as a CSV file named `csv`.
    async fn statement(
        &mut self,
        sql: &str,
        csv: Option<&str>,
        out: &mpsc::Sender<Output>,
    ) -> QueryReport {
        let started = Instant::now();
        let mut report = QueryReport::new(sql, &self.database);
        let mut buf = Vec::new();
        let expanded = self.expanded;
        refuse_infile(&mut self.conn);
        match self.conn.query_iter(sql).await {
            Err(error) => {
                Self::failed(&mut report, &error, &mut buf);
                if matches!(
                    error,
                    mysql_async::Error::Driver(mysql_async::DriverError::LocalInfile(_))
                ) {
                    // mysql_async closes a connection after a refused file request.
                    self.reconnect(&mut buf).await;
                }
            }
            Ok(mut result) => loop {
                let stream = match result.stream::<Row>().await {
                    Ok(Some(stream)) => stream,
                    Ok(None) => break,
                    Err(error) => {
                        Self::failed(&mut report, &error, &mut buf);
                        break;
                    }
                };
                let columns: Vec<String> = stream
                    .columns()
                    .iter()
                    .map(|c| c.name_str().into_owned())
                    .collect();
                if columns.is_empty() {
                    let rows = stream.affected_rows();
                    report.rows += rows;
                    let s = if rows == 1 { "" } else { "s" };
                    buf.extend_from_slice(
                        format!("Query OK, {rows} row{s} affected\r\n\r\n").as_bytes(),
                    );
                    continue;
                }
                futures::pin_mut!(stream);
                if let Some(name) = csv {
                    let _ = out
                        .send(Output::FileStart {
                            name: name.to_owned(),
                            mimetype: "text/csv",
                        })
                        .await;
                    let mut data = csv_line(columns.iter().map(|c| Some(c.as_str())));
                    let mut rows = 0u64;
                    while let Some(row) = stream.next().await {
                        match row {
                            Ok(row) => {
                                rows += 1;
                                let values: Vec<Option<String>> = values_of(&row);
                                data.extend(csv_line(values.iter().map(Option::as_deref)));
                                if data.len() >= CHUNK
                                    && out
                                        .send(Output::FileData(Bytes::from(std::mem::take(
                                            &mut data,
                                        ))))
                                        .await
                                        .is_err()
                                {
                                    break;
                                }
                            }
                            Err(error) => {
                                Self::failed(&mut report, &error, &mut buf);
                                break;
                            }
                        }
                    }
                    if !data.is_empty() {
                        let _ = out.send(Output::FileData(Bytes::from(data))).await;
                    }
                    let _ = out.send(Output::FileEnd).await;
                    report.rows += rows;
                    if report.error_code.is_none() {
                        buf.extend_from_slice(
                            format!("{rows} rows sent to you as {name}\r\n\r\n").as_bytes(),
                        );
                    }
                    break;
                }
                let mut table = Table::styled(&columns, expanded, Style::Boxed);
                while let Some(row) = stream.next().await {
                    match row {
                        Ok(row) => {
                            let values: Vec<Option<String>> = values_of(&row);
                            let values: Vec<Option<&str>> =
                                values.iter().map(Option::as_deref).collect();
                            table.row(&values, &mut buf);
                        }
                        Err(error) => {
                            Self::failed(&mut report, &error, &mut buf);
                            break;
                        }
                    }
                    if buf.len() >= CHUNK
                        && out
                            .send(Output::Bytes(std::mem::take(&mut buf)))
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
                report.rows += table.rows();
                if report.error_code.is_none() {
                    table.finish(&mut buf);
                }
            },
        }
        if !buf.is_empty() {
            let _ = out.send(Output::Bytes(buf)).await;
        }
        report.duration = started.elapsed();
        if USE.as_ref().is_some_and(|r| r.is_match(sql)) && report.error_code.is_none() {
            if let Ok((_, database)) = identify(&mut self.conn).await {
                report.database.clone_from(&database);
                self.database = database;
            }
            let _ = out.send(self.prompts()).await;
        }
        report
    }

    /// `LOAD DATA LOCAL INFILE`: asks the user for the file, then runs the statement with the
    /// file's bytes as the answer to the server's request. Ctrl-C (or a client that abandons
    /// the file) drops the connection mid-statement, so the server rolls it back, and opens
    /// a fresh one.
    async fn load(
        &mut self,
        sql: &str,
        name: &str,
        out: &mpsc::Sender<Output>,
        uploads: &mut mpsc::Receiver<Upload>,
    ) -> QueryReport {
        let mut report = QueryReport::new(sql, &self.database);
        let say = |text: String| Output::Bytes(format!("{text}\r\n").into_bytes());
        while uploads.try_recv().is_ok() {}
        let _ = out
            .send(Output::UploadWanted {
                name: name.to_owned(),
            })
            .await;
        let _ = out
            .send(say(format!(
                "Send {name}: drop the file on this window (Ctrl-C abandons)."
            )))
            .await;
        loop {
            match uploads.recv().await {
                Some(Upload::Start) => break,
                Some(Upload::Data(_) | Upload::End) => {}
                Some(Upload::Abort) | None => {
                    let _ = out
                        .send(say("Import abandoned: nothing was imported.".into()))
                        .await;
                    report.cancelled = true;
                    report.error_code = Some("70100".to_owned());
                    return report;
                }
            }
        }
        let started = Instant::now();
        let (data_tx, data_rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        self.conn.set_infile_handler(async move {
            let stream = futures::stream::unfold(data_rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            Ok(stream.boxed())
        });
        let mut buf = Vec::new();
        let mut data_tx = Some(data_tx);
        let abandoned = {
            let query = self.conn.query_iter(sql);
            futures::pin_mut!(query);
            let mut sent = 0u64;
            let mut pending: Option<Bytes> = None;
            loop {
                tokio::select! {
                    result = &mut query => {
                        match result {
                            Ok(result) => {
                                let rows = result.affected_rows();
                                let info = result.info().into_owned();
                                report.rows = rows;
                                let _ = result.drop_result().await;
                                buf.extend_from_slice(
                                    format!("Query OK, {rows} rows affected ({sent} bytes from {name})\r\n{info}\r\n\r\n")
                                        .as_bytes(),
                                );
                            }
                            Err(error) => Self::failed(&mut report, &error, &mut buf),
                        }
                        break false;
                    }
                    // A piece waits for room in the file's stream while the query (which
                    // reads that stream) keeps being polled: awaiting the room inside this
                    // branch would stop the query that makes it.
                    permit = reserve(data_tx.clone()), if pending.is_some() => match permit {
                        Some(permit) => {
                            if let Some(data) = pending.take() {
                                permit.send(Ok(data));
                            }
                        }
                        None => {
                            pending = None;
                            data_tx = None;
                        }
                    },
                    piece = uploads.recv(), if data_tx.is_some() && pending.is_none() => match piece {
                        Some(Upload::Data(data)) => {
                            sent += data.len() as u64;
                            pending = Some(data);
                        }
                        // The file is complete: its end is the stream's end.
                        Some(Upload::End) => data_tx = None,
                        Some(Upload::Start) => {}
                        Some(Upload::Abort) | None => break true,
                    },
                }
            }
        };
        drop(data_tx);
        if abandoned {
            // The statement is cut off with the connection: the server rolls it back.
            self.reconnect(&mut buf).await;
            buf.extend_from_slice(b"Import abandoned: nothing was imported.\r\n");
            report.cancelled = true;
            report.error_code = Some("70100".to_owned());
        }
        refuse_infile(&mut self.conn);
        let _ = out.send(Output::Bytes(buf)).await;
        report.duration = started.elapsed();
        report
    }

    /// A fresh connection in the same database, for one mysql_async closed (or one cut off
    /// mid-statement).
    async fn reconnect(&mut self, buf: &mut Vec<u8>) {
        match open(&self.opts, self.settings.timeout).await {
            Ok(mut conn) => {
                refuse_infile(&mut conn);
                if self.database != "(none)" {
                    let _ = conn
                        .query_drop(format!("USE `{}`", self.database.replace('`', "``")))
                        .await;
                }
                self.id
                    .store(conn.id(), std::sync::atomic::Ordering::Relaxed);
                self.conn = conn;
            }
            Err(error) => {
                let text = format!("reconnecting failed: {}", error.shortened());
                buf.extend_from_slice(crate::table::display(&text).0.as_bytes());
                buf.extend_from_slice(b"\r\n");
            }
        }
    }

    async fn meta(&mut self, command: &str, out: &mpsc::Sender<Output>) -> QueryReport {
        let mut words = command.split_whitespace();
        let name = words.next().unwrap_or_default();
        let argument = words.next();
        let quote = |name: &str| format!("`{}`", name.replace('`', "``"));
        let sql = match (name, argument) {
            ("\\q", _) => {
                let _ = out.send(Output::Quit).await;
                return QueryReport::new(command, &self.database);
            }
            ("\\?" | "\\h", _) => {
                let _ = out.send(Output::Bytes(HELP.as_bytes().to_vec())).await;
                return QueryReport::new(command, &self.database);
            }
            ("\\x", _) => {
                self.expanded = !self.expanded;
                let state = if self.expanded { "on" } else { "off" };
                let _ = out
                    .send(Output::Bytes(
                        format!("Vertical output is {state}.\r\n").into_bytes(),
                    ))
                    .await;
                return QueryReport::new(command, &self.database);
            }
            ("\\dt", _) => "SHOW TABLES".to_owned(),
            ("\\l", _) => "SHOW DATABASES".to_owned(),
            ("\\d", Some(table)) => format!("DESCRIBE {}", quote(table)),
            ("\\c" | "\\u", Some(database)) => format!("USE {}", quote(database)),
            _ => {
                let _ = out
                    .send(Output::Bytes(
                        format!("Unknown command '{name}'. Try \\? for help.\r\n").into_bytes(),
                    ))
                    .await;
                return QueryReport::new(command, &self.database);
            }
        };
        let mut report = self.statement(&sql, None, out).await;
        command.clone_into(&mut report.statement);
        report
    }

    async fn run_statement(
        &mut self,
        sql: &str,
        out: &mpsc::Sender<Output>,
        uploads: &mut mpsc::Receiver<Upload>,
    ) -> QueryReport {
        let trimmed = sql.trim().trim_end_matches(';').trim();
        if matches!(trimmed.to_ascii_lowercase().as_str(), "quit" | "exit") {
            let _ = out.send(Output::Quit).await;
            return QueryReport::new(sql, &self.database);
        }
        if let Some(captures) = OUTFILE.as_ref().and_then(|r| r.captures(sql)) {
            let name = file_name(captures.get(2).map_or("", |m| m.as_str()));
            if !self.settings.csv_export || name.is_empty() {
                return crate::files::refuse(sql, &self.database, "download", &name, out).await;
            }
            // The server runs the query without the clause (and its FIELDS options: the
            // file is CSV with a header, as for PostgreSQL).
            let query = captures.get(1).map_or("", |m| m.as_str()).to_owned();
            let mut report = self.statement(&query, Some(&name), out).await;
            sql.clone_into(&mut report.statement);
            return report;
        }
        if let Some(captures) = INFILE.as_ref().and_then(|r| r.captures(sql)) {
            let name = file_name(captures.get(1).map_or("", |m| m.as_str()));
            if !self.settings.csv_import || name.is_empty() {
                return crate::files::refuse(sql, &self.database, "upload", &name, out).await;
            }
            return self.load(sql, &name, out, uploads).await;
        }
        self.statement(sql, None, out).await
    }
}

/// Room for one piece in the file's stream; `None` once the stream is gone.
async fn reserve(
    tx: Option<mpsc::Sender<std::io::Result<Bytes>>>,
) -> Option<mpsc::OwnedPermit<std::io::Result<Bytes>>> {
    match tx {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => None,
    }
}

impl Engine for Mysql {
    fn prompt(&self) -> Output {
        self.prompts()
    }

    fn canceller(&self) -> Canceller {
        let opts = self.opts.clone();
        let shared = self.id.clone();
        Box::new(move || {
            let opts = opts.clone();
            let id = shared.load(std::sync::atomic::Ordering::Relaxed);
            Box::pin(async move {
                let kill = async {
                    let mut conn = Conn::new(opts).await?;
                    conn.query_drop(format!("KILL QUERY {id}")).await?;
                    conn.disconnect().await
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), kill).await;
            })
        })
    }

    async fn run(
        &mut self,
        job: Job,
        out: &mpsc::Sender<Output>,
        uploads: &mut mpsc::Receiver<Upload>,
    ) -> QueryReport {
        match job {
            Job::Statement(sql) => self.run_statement(&sql, out, uploads).await,
            Job::Meta(command) => self.meta(&command, out).await,
        }
    }
}
