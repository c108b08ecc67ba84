//! The SQL Server console: tiberius's SQL batches (any statement, several result sets), values
//! formatted as SQL Server Management Studio shows them, streamed into boxed tables; Ctrl-C
//! sends TDS's ATTENTION, so the batch stops on the server.
//!
//! * psql's `\dt`, `\l`, `\d NAME` and `\c DB` are offered, from `INFORMATION_SCHEMA`,
//!   `sys.databases` and `USE`; `USE` itself works and changes the prompt.
//! * A result set ends with `n rows in set`, as the MySQL console's; a batch that returns no
//!   rows says `(n rows affected)` for `INSERT`, `UPDATE`, `DELETE`
//!   and `MERGE` (from `@@ROWCOUNT`, asked in a batch of its own: tiberius's result stream
//!   does not carry the DONE tokens' counts), `Commands completed successfully.` otherwise.
//! * Keeper's clauses, as for MySQL: `SELECT ... INTO LOCAL OUTFILE 'name.csv'` sends the
//!   rows to the user as a CSV file when the session allows CSV export; `LOAD DATA LOCAL
//!   INFILE 'name.csv' INTO TABLE t [IGNORE n LINES] [(columns)]` asks the user for the file
//!   and inserts its records in one transaction (rolled back if the user abandons it) when
//!   the session allows CSV import. SQL Server has no LOAD DATA: ztproxy reads the CSV
//!   (bounded: 1 MiB a record) and sends `INSERT`s of up to [`INSERT_ROWS`]
//!   records, every value an `N'...'` literal the server converts (an empty unquoted field
//!   is NULL).
//!
//! TLS (`ssl-mode`, `server-certificate`) is negotiated below tiberius, by [`crate::tds`]:
//! the whole connection, the login first, is encrypted when the server offers it.
//!
//! Cancelling: tiberius sends ATTENTION only from the client the running batch borrows, so
//! the canceller only flags the request; the engine lets the token being read finish
//! (within [`TOKEN_GRACE`]: a stream dropped inside a token leaves the connection out of
//! step), drops the batch's stream and calls `cancel_query`, which sends the ATTENTION and
//! reads up to the server's acknowledgement. If that fails (the server does not answer
//! within [`CANCEL_WAIT`], or the token could not finish) the engine logs in again, in the
//! same database, and tells the user what a new connection loses: a connection left out of
//! step with the server is never reused.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use regex::Regex;
use std::sync::LazyLock;
use tiberius::{AuthMethod, Client, ColumnData, Config, EncryptionLevel, FromSql, QueryItem};
use tokio::sync::{mpsc, watch};
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use crate::console::{Canceller, Engine, Job, Output, QueryReport, Upload};
use crate::error::Error;
use crate::files::{CsvReader, Field, INFILE, OUTFILE, csv_line, file_name, load_target};
use crate::settings::DbSettings;
use crate::table::{Style, Table};
use crate::tds::Tunnel;
use crate::tls::Fingerprint;

/// Output gathered before it is handed to the terminal.
const CHUNK: usize = 16 * 1024;
/// How long the server has to acknowledge an ATTENTION before the engine logs in again.
pub const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// How long a read that has begun a token may take to finish it once the user cancels.
pub const TOKEN_GRACE: Duration = Duration::from_millis(200);
/// The most records one `INSERT` of an import carries (SQL Server's limit for a `VALUES`
/// list).
pub const INSERT_ROWS: usize = 1000;
/// The most bytes of SQL one `INSERT` of an import carries.
const INSERT_BYTES: usize = 256 * 1024;

const HELP: &str = "General\r
  \\q, quit, exit         quit (or Ctrl-D)\r
  \\?                     this help\r
  \\x                     toggle vertical output (one record per block)\r
Informational\r
  \\dt                    tables and views (INFORMATION_SCHEMA.TABLES)\r
  \\l                     databases (sys.databases)\r
  \\d NAME                the columns of table NAME\r
  \\c DB                  USE DB\r
Files (when the session allows)\r
  SELECT ... INTO LOCAL OUTFILE 'F.csv'         send a result to you as a CSV file\r
  LOAD DATA LOCAL INFILE 'F.csv' INTO TABLE T   insert a CSV file you send into T\r
      [IGNORE 1 LINES] [(column, ...)]\r
Statements end with ;  Ctrl-C cancels a running batch on the server; Up and Down recall\r
earlier statements.\r
\r
";

static USE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"(?is)^\s*use\s+").ok());
static COUNTED: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?is)^\s*(?:with\s.*\)\s*)?(?:insert|update|delete|merge)\b").ok()
});

type Connection = Client<Compat<Tunnel>>;

/// A logged-in SQL Server connection.
pub struct Mssql {
    client: Connection,
    host: String,
    port: u16,
    settings: DbSettings,
    database: String,
    certificate: Option<Fingerprint>,
    expanded: bool,
    cancel_tx: watch::Sender<u64>,
    cancel_rx: watch::Receiver<u64>,
}

impl std::fmt::Debug for Mssql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mssql")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Connects and logs in within the settings' `timeout`, to `database` when it is set.
pub async fn connect(host: &str, port: u16, settings: &DbSettings) -> Result<Mssql, Error> {
    let (mut client, certificate) = open(host, port, settings).await?;
    let database = current_database(&mut client).await?;
    let (cancel_tx, cancel_rx) = watch::channel(0);
    Ok(Mssql {
        client,
        host: host.to_owned(),
        port,
        settings: settings.clone(),
        database,
        certificate,
        expanded: false,
        cancel_tx,
        cancel_rx,
    })
}

/// A logged-in connection, and the fingerprint of the server's certificate when it is TLS.
async fn open(
    host: &str,
    port: u16,
    settings: &DbSettings,
) -> Result<(Connection, Option<Fingerprint>), Error> {
    let mut config = Config::new();
    config.host(host);
    config.port(port);
    config.application_name("ztproxy");
    // The encryption is below tiberius (crate::tds).
    config.encryption(EncryptionLevel::NotSupported);
    config.authentication(AuthMethod::sql_server(
        settings.username.expose_secret(),
        settings
            .password
            .as_ref()
            .map(|p| p.expose_secret().as_str())
            .unwrap_or_default(),
    ));
    if let Some(database) = &settings.database {
        config.database(database);
    }
    let login = async {
        let (transport, certificate) = crate::tds::connect(host, port, settings).await?;
        Client::connect(config, transport.compat_write())
            .await
            .map(|client| (client, certificate))
            .map_err(|e| match e {
                // 18456: login failed; 4060: cannot open the database; 18488: the password
                // must be changed.
                tiberius::error::Error::Server(token)
                    if matches!(token.code(), 18456 | 4060 | 18488 | 18470) =>
                {
                    Error::LoginRefused(token.message().to_owned())
                }
                tiberius::error::Error::Server(token) => Error::Server(token.message().to_owned()),
                tiberius::error::Error::Io { message, .. } => Error::Unreachable(message),
                other => Error::Server(other.to_string()),
            })
    };
    tokio::time::timeout(settings.timeout, login)
        .await
        .map_err(|_| Error::Timeout(settings.timeout))?
}

async fn current_database(client: &mut Connection) -> Result<String, Error> {
    let row = client
        .simple_query("SELECT DB_NAME()")
        .await
        .map_err(|e| Error::Server(e.to_string()))?
        .into_row()
        .await
        .map_err(|e| Error::Server(e.to_string()))?;
    // `try_get`: `get` panics on a row without the column or of another type.
    Ok(row
        .and_then(|row| row.try_get::<&str, _>(0).ok().flatten().map(str::to_owned))
        .unwrap_or_else(|| "master".to_owned()))
}

/// A value as SQL Server Management Studio shows it (`None` is NULL).
pub fn text(data: &ColumnData<'static>) -> Option<String> {
    fn fraction(nanos: u32, digits: usize) -> String {
        if digits == 0 {
            return String::new();
        }
        let all = format!("{nanos:09}");
        format!(".{}", &all[..digits.min(9)])
    }
    fn datetime(value: time::PrimitiveDateTime, digits: usize) -> String {
        let (date, time) = (value.date(), value.time());
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}{}",
            date.year(),
            u8::from(date.month()),
            date.day(),
            time.hour(),
            time.minute(),
            time.second(),
            fraction(time.nanosecond(), digits)
        )
    }
    match data {
        ColumnData::U8(v) => v.map(|v| v.to_string()),
        ColumnData::I16(v) => v.map(|v| v.to_string()),
        ColumnData::I32(v) => v.map(|v| v.to_string()),
        ColumnData::I64(v) => v.map(|v| v.to_string()),
        ColumnData::F32(v) => v.map(|v| v.to_string()),
        ColumnData::F64(v) => v.map(|v| v.to_string()),
        ColumnData::Bit(v) => v.map(|v| if v { "1" } else { "0" }.to_owned()),
        ColumnData::String(v) => v.as_ref().map(|v| v.to_string()),
        ColumnData::Guid(v) => v.map(|v| v.hyphenated().to_string().to_uppercase()),
        ColumnData::Binary(v) => v.as_ref().map(|bytes| {
            let mut text = String::with_capacity(2 + 2 * bytes.len());
            text.push_str("0x");
            for byte in bytes.iter() {
                text.push_str(&format!("{byte:02X}"));
            }
            text
        }),
        ColumnData::Numeric(v) => v.map(|v| v.to_string()),
        ColumnData::Xml(v) => v.as_ref().map(|v| v.to_string()),
        ColumnData::DateTime(_) => time::PrimitiveDateTime::from_sql(data)
            .ok()
            .flatten()
            .map(|v| datetime(v, 3)),
        ColumnData::SmallDateTime(_) => time::PrimitiveDateTime::from_sql(data)
            .ok()
            .flatten()
            .map(|v| datetime(v, 0)),
        ColumnData::DateTime2(v) => time::PrimitiveDateTime::from_sql(data)
            .ok()
            .flatten()
            .map(|value| datetime(value, v.map_or(7, |v| usize::from(v.time().scale())))),
        ColumnData::Date(_) => time::Date::from_sql(data).ok().flatten().map(|date| {
            format!(
                "{:04}-{:02}-{:02}",
                date.year(),
                u8::from(date.month()),
                date.day()
            )
        }),
        ColumnData::Time(v) => time::Time::from_sql(data).ok().flatten().map(|time| {
            format!(
                "{:02}:{:02}:{:02}{}",
                time.hour(),
                time.minute(),
                time.second(),
                fraction(time.nanosecond(), v.map_or(7, |v| usize::from(v.scale())))
            )
        }),
        // Not through tiberius's OffsetDateTime: its `to_offset` panics when the local time
        // passes year 9999 (a hostile server's value can).
        ColumnData::DateTimeOffset(v) => v.and_then(|v| {
            let utc = ColumnData::DateTime2(Some(v.datetime2()));
            let utc = time::PrimitiveDateTime::from_sql(&utc).ok().flatten()?;
            let minutes = v.offset();
            if !(-840..=840).contains(&minutes) {
                return None;
            }
            let local = utc.checked_add(time::Duration::minutes(i64::from(minutes)))?;
            let digits = usize::from(v.datetime2().time().scale());
            Some(format!(
                "{} {}{:02}:{:02}",
                datetime(local, digits),
                if minutes < 0 { '-' } else { '+' },
                minutes.unsigned_abs() / 60,
                minutes.unsigned_abs() % 60
            ))
        }),
    }
}

/// How a batch ended.
enum Ended {
    /// The server's answer ended (with or without an error).
    Finished,
    /// The user pressed Ctrl-C.
    Interrupted,
    /// The terminal went away.
    Gone,
}

impl Mssql {
    /// The database in use.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The SHA-256 of the certificate the server presented (`None`: no TLS), and whether it
    /// was pinned.
    pub fn certificate(&self) -> Option<(Fingerprint, bool)> {
        self.certificate
            .map(|c| (c, self.settings.pins.contains(&c)))
    }

    fn prompts(&self) -> Output {
        Output::Prompt {
            prompt: format!("SQL Server [{}]> ", self.database),
            continuation: "    -> ".to_owned(),
        }
    }

    fn failed(report: &mut QueryReport, error: &tiberius::error::Error, out: &mut Vec<u8>) {
        let text = match error {
            tiberius::error::Error::Server(token) => {
                report.error_code = Some(token.code().to_string());
                format!(
                    "Msg {}, Level {}, State {}, Line {}\n{}",
                    token.code(),
                    token.class(),
                    token.state(),
                    token.line(),
                    token.message()
                )
            }
            other => {
                report.error_code = Some("08S01".to_owned());
                format!("ERROR: {other}")
            }
        };
        for line in text.lines() {
            out.extend_from_slice(crate::table::display(line).0.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Runs `sql` until its answer ends or the user cancels it; each result set becomes a
    /// table (or, with `csv`, the first one a CSV file named `csv`).
    #[expect(
        clippy::too_many_arguments,
        reason = "the batch's inputs and the three things it fills in, kept apart from self so the client can be borrowed alone"
    )]
    async fn batch(
        client: &mut Connection,
        sql: &str,
        csv: Option<&str>,
        expanded: bool,
        out: &mpsc::Sender<Output>,
        report: &mut QueryReport,
        buf: &mut Vec<u8>,
        results: &mut u32,
        cancel: &mut watch::Receiver<u64>,
    ) -> Ended {
        let mut stream = match guarded(client.simple_query(sql), cancel).await {
            None => return Ended::Interrupted,
            Some(Ok(stream)) => stream,
            Some(Err(error)) => {
                Self::failed(report, &error, buf);
                return Ended::Finished;
            }
        };
        let mut table: Option<Table> = None;
        let mut file_open = false;
        let mut csv_data = Vec::new();
        let ended = loop {
            let Some(item) = guarded(stream.try_next(), cancel).await else {
                break Ended::Interrupted;
            };
            match item {
                Ok(Some(QueryItem::Metadata(meta))) => {
                    if let Some(done) = table.take() {
                        report.rows += done.rows();
                        done.finish(buf);
                    }
                    *results += 1;
                    let columns: Vec<String> = meta
                        .columns()
                        .iter()
                        .map(|c| {
                            if c.name().is_empty() {
                                "(No column name)".to_owned()
                            } else {
                                c.name().to_owned()
                            }
                        })
                        .collect();
                    match csv {
                        Some(name) if *results == 1 => {
                            if out
                                .send(Output::FileStart {
                                    name: name.to_owned(),
                                    mimetype: "text/csv",
                                })
                                .await
                                .is_err()
                            {
                                break Ended::Gone;
                            }
                            file_open = true;
                            csv_data = csv_line(columns.iter().map(|c| Some(c.as_str())));
                        }
                        Some(_) => {}
                        None => table = Some(Table::styled(&columns, expanded, Style::Boxed)),
                    }
                }
                Ok(Some(QueryItem::Row(row))) => {
                    let values: Vec<Option<String>> =
                        row.cells().map(|(_, data)| text(data)).collect();
                    let values: Vec<Option<&str>> = values.iter().map(Option::as_deref).collect();
                    if let Some(table) = &mut table {
                        table.row(&values, buf);
                    } else if file_open && *results == 1 {
                        report.rows += 1;
                        csv_data.extend(csv_line(values.into_iter()));
                        if csv_data.len() >= CHUNK
                            && out
                                .send(Output::FileData(Bytes::from(std::mem::take(&mut csv_data))))
                                .await
                                .is_err()
                        {
                            break Ended::Gone;
                        }
                    }
                    if buf.len() >= CHUNK
                        && out.send(Output::Bytes(std::mem::take(buf))).await.is_err()
                    {
                        break Ended::Gone;
                    }
                }
                Ok(None) => break Ended::Finished,
                Err(error) => {
                    Self::failed(report, &error, buf);
                    break Ended::Finished;
                }
            }
        };
        if let Some(done) = table.take() {
            report.rows += done.rows();
            if report.error_code.is_none() {
                done.finish(buf);
            }
        }
        if file_open {
            if !csv_data.is_empty() {
                let _ = out.send(Output::FileData(Bytes::from(csv_data))).await;
            }
            let _ = out.send(Output::FileEnd).await;
        }
        ended
    }

    /// Runs `sql` (see [`Self::batch`]) so that Ctrl-C cancels it on the server.
    async fn statement(
        &mut self,
        sql: &str,
        csv: Option<&str>,
        out: &mpsc::Sender<Output>,
    ) -> QueryReport {
        let started = Instant::now();
        let mut report = QueryReport::new(sql, &self.database);
        let mut buf = Vec::new();
        let mut results = 0;
        let mut cancel = self.cancel_rx.clone();
        cancel.borrow_and_update();
        let ended = Self::batch(
            &mut self.client,
            sql,
            csv,
            self.expanded,
            out,
            &mut report,
            &mut buf,
            &mut results,
            &mut cancel,
        )
        .await;
        match ended {
            Ended::Interrupted => {
                self.cancel_on_server(&mut buf).await;
                report.cancelled = true;
                report.error_code = Some("HY008".to_owned());
                buf.extend_from_slice(b"Query was cancelled by user.\r\n");
            }
            Ended::Gone => return report,
            Ended::Finished => {
                if report.error_code.is_none() {
                    if let Some(name) = csv {
                        let rows = report.rows;
                        buf.extend_from_slice(
                            format!("{rows} rows sent to you as {name}\r\n").as_bytes(),
                        );
                    } else if results == 0 {
                        if COUNTED.as_ref().is_some_and(|r| r.is_match(sql)) {
                            let rows = self.row_count().await;
                            report.rows = rows;
                            buf.extend_from_slice(
                                format!("({rows} row{} affected)\r\n", plural(rows)).as_bytes(),
                            );
                        } else {
                            buf.extend_from_slice(b"Commands completed successfully.\r\n");
                        }
                    }
                }
            }
        }
        // A finished table ends with its own blank line; every other ending gets one here.
        if !buf.ends_with(b"\r\n\r\n") {
            buf.extend_from_slice(b"\r\n");
        }
        let _ = out.send(Output::Bytes(std::mem::take(&mut buf))).await;
        report.duration = started.elapsed();
        if USE.as_ref().is_some_and(|r| r.is_match(sql)) && report.error_code.is_none() {
            if let Ok(database) = current_database(&mut self.client).await {
                report.database.clone_from(&database);
                self.database = database;
            }
            let _ = out.send(self.prompts()).await;
        }
        report
    }

    /// `@@ROWCOUNT` of the batch that just ran.
    async fn row_count(&mut self) -> u64 {
        let row = match self.client.simple_query("SELECT @@ROWCOUNT").await {
            Ok(stream) => stream.into_row().await.ok().flatten(),
            Err(_) => None,
        };
        row.and_then(|row| row.try_get::<i32, _>(0).ok().flatten())
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
    }

    /// ATTENTION for the batch the user cancelled; a fresh login when the connection cannot
    /// be trusted afterwards.
    async fn cancel_on_server(&mut self, buf: &mut Vec<u8>) {
        // ATTENTION and its acknowledgement; when that fails the connection goes (closing it
        // stops the batch too).
        if matches!(
            tokio::time::timeout(CANCEL_WAIT, self.client.cancel_query()).await,
            Ok(Ok(()))
        ) {
            return;
        }
        self.relogin(buf).await;
    }

    /// A fresh connection in the database in use, in place of one that cannot be trusted;
    /// the user is told what a new connection loses.
    async fn relogin(&mut self, buf: &mut Vec<u8>) {
        let say = |buf: &mut Vec<u8>, text: &str| {
            buf.extend_from_slice(crate::table::display(text).0.as_bytes());
            buf.extend_from_slice(b"\r\n");
        };
        let attempt = async {
            let (mut client, certificate) = open(&self.host, self.port, &self.settings).await?;
            run(&mut client, &format!("USE {}", bracket(&self.database)))
                .await
                .map_err(|e| Error::Server(e.to_string()))?;
            Ok::<_, Error>((client, certificate))
        };
        match tokio::time::timeout(self.settings.timeout, attempt).await {
            Ok(Ok((client, certificate))) => {
                self.client = client;
                self.certificate = certificate;
                say(
                    buf,
                    "The connection was opened again: an open transaction, temporary tables and SET options are gone.",
                );
            }
            Ok(Err(error)) => say(buf, &format!("reconnecting failed: {}", error.shortened())),
            Err(_) => say(
                buf,
                "reconnecting failed: the server did not answer in time",
            ),
        }
    }

    /// Keeper's `LOAD DATA LOCAL INFILE` for SQL Server: asks the user for the file and
    /// inserts its records in one transaction.
    async fn load(
        &mut self,
        sql: &str,
        name: &str,
        target: &str,
        out: &mpsc::Sender<Output>,
        uploads: &mut mpsc::Receiver<Upload>,
    ) -> QueryReport {
        let mut report = QueryReport::new(sql, &self.database);
        let say = |text: String| Output::Bytes(format!("{text}\r\n").into_bytes());
        let Some(target) = load_target(target) else {
            let _ = out
                .send(say(
                    "LOAD DATA LOCAL INFILE 'F.csv' INTO TABLE T [IGNORE n LINES] [(column, ...)] is what SQL Server's console reads: nothing was imported.".into(),
                ))
                .await;
            report.error_code = Some("42000".to_owned());
            return report;
        };
        // The import's ROLLBACK would also undo a transaction the user has open.
        let open_transactions = match self.client.simple_query("SELECT @@TRANCOUNT").await {
            Ok(stream) => stream
                .into_row()
                .await
                .ok()
                .flatten()
                .and_then(|row| row.try_get::<i32, _>(0).ok().flatten())
                .unwrap_or(0),
            Err(_) => 0,
        };
        if open_transactions > 0 {
            let _ = out
                .send(say(
                    "A transaction is open: COMMIT or ROLLBACK it first (an import runs in a transaction of its own). Nothing was imported.".into(),
                ))
                .await;
            report.error_code = Some("25000".to_owned());
            return report;
        }
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
                    report.error_code = Some("HY008".to_owned());
                    return report;
                }
            }
        }
        let started = Instant::now();
        let mut buf = Vec::new();
        let outcome = self.insert_file(&target, uploads).await;
        let committed = match &outcome {
            Ok(_) => self.finish_transaction("COMMIT TRANSACTION").await,
            Err(_) => {
                self.finish_transaction("IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION")
                    .await
            }
        };
        match (outcome, committed) {
            (Ok((rows, bytes)), Ok(())) => {
                report.rows = rows;
                buf.extend_from_slice(
                    format!(
                        "({rows} row{} affected: {bytes} bytes from {name})\r\n\r\n",
                        plural(rows)
                    )
                    .as_bytes(),
                );
            }
            (Ok(_), Err(error)) | (Err(LoadError::Server(error)), _) => {
                Self::failed(&mut report, &error, &mut buf);
                buf.extend_from_slice(b"Nothing was imported.\r\n\r\n");
            }
            (Err(LoadError::File(error)), _) => {
                report.error_code = Some("22P04".to_owned());
                buf.extend_from_slice(
                    format!("{name}: {error}: nothing was imported.\r\n\r\n").as_bytes(),
                );
            }
            (Err(LoadError::Abandoned), _) => {
                report.cancelled = true;
                report.error_code = Some("HY008".to_owned());
                buf.extend_from_slice(b"Import abandoned: nothing was imported.\r\n\r\n");
            }
        }
        let _ = out.send(Output::Bytes(buf)).await;
        report.duration = started.elapsed();
        report
    }

    /// Ends the import's transaction; a failure here leaves a connection that cannot be
    /// trusted, so the engine logs in again.
    async fn finish_transaction(&mut self, sql: &str) -> Result<(), tiberius::error::Error> {
        let result = match self.client.simple_query(sql).await {
            Ok(stream) => stream.into_results().await.map(|_| ()),
            Err(error) => Err(error),
        };
        if result.is_err() {
            let mut ignored = Vec::new();
            self.relogin(&mut ignored).await;
        }
        result
    }

    /// Reads the user's file and inserts its records; (rows, bytes).
    async fn insert_file(
        &mut self,
        target: &crate::files::LoadTarget,
        uploads: &mut mpsc::Receiver<Upload>,
    ) -> Result<(u64, u64), LoadError> {
        run(&mut self.client, "BEGIN TRANSACTION").await?;
        let mut reader = CsvReader::default();
        let mut skip = target.skip;
        let mut rows = 0u64;
        let mut bytes = 0u64;
        let mut insert = Insert::new(target);
        loop {
            let records = match uploads.recv().await {
                Some(Upload::Data(data)) => {
                    bytes += data.len() as u64;
                    reader.feed(&data).map_err(LoadError::File)?
                }
                Some(Upload::End) => {
                    let last = reader.finish().map_err(LoadError::File)?;
                    let mut records: Vec<Vec<Field>> =
                        last.into_iter().filter(|r| r[..] != [None]).collect();
                    if skip > 0 && !records.is_empty() {
                        records.clear();
                    }
                    for record in records {
                        insert.push(&record);
                        rows += 1;
                    }
                    if let Some(sql) = insert.take() {
                        run(&mut self.client, &sql).await?;
                    }
                    return Ok((rows, bytes));
                }
                Some(Upload::Start) => continue,
                Some(Upload::Abort) | None => return Err(LoadError::Abandoned),
            };
            for record in records {
                if record[..] == [None] {
                    // A blank line.
                    continue;
                }
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                insert.push(&record);
                rows += 1;
                if insert.full()
                    && let Some(sql) = insert.take()
                {
                    run(&mut self.client, &sql).await?;
                }
            }
        }
    }

    async fn meta(&mut self, command: &str, out: &mpsc::Sender<Output>) -> QueryReport {
        let mut words = command.split_whitespace();
        let name = words.next().unwrap_or_default();
        let argument = words.next();
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
            ("\\dt", _) => "SELECT TABLE_SCHEMA AS [schema], TABLE_NAME AS [name], TABLE_TYPE AS [type] FROM INFORMATION_SCHEMA.TABLES ORDER BY TABLE_SCHEMA, TABLE_NAME".to_owned(),
            ("\\l", _) => "SELECT name FROM sys.databases ORDER BY name".to_owned(),
            ("\\d", Some(table)) => {
                let (schema, table) = match table.rsplit_once('.') {
                    Some((schema, table)) => (Some(schema), table),
                    None => (None, table),
                };
                let unbracket = |s: &str| s.trim_start_matches('[').trim_end_matches(']').replace("]]", "]");
                let mut sql = format!(
                    "SELECT COLUMN_NAME AS [column], DATA_TYPE AS [type], CHARACTER_MAXIMUM_LENGTH AS [length], IS_NULLABLE AS [nullable] FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = {}",
                    literal(&unbracket(table))
                );
                if let Some(schema) = schema {
                    sql.push_str(&format!(" AND TABLE_SCHEMA = {}", literal(&unbracket(schema))));
                }
                sql.push_str(" ORDER BY TABLE_SCHEMA, ORDINAL_POSITION");
                sql
            }
            ("\\c" | "\\u", Some(database)) => format!("USE {}", bracket(database)),
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
            let target = captures.get(2).map_or("", |m| m.as_str()).to_owned();
            return self.load(sql, &name, &target, out, uploads).await;
        }
        self.statement(sql, None, out).await
    }
}

/// Why an import stopped.
enum LoadError {
    /// The server refused a statement.
    Server(tiberius::error::Error),
    /// The file is not CSV ztproxy can read.
    File(crate::files::CsvError),
    /// The user (or the client) abandoned it.
    Abandoned,
}

impl From<tiberius::error::Error> for LoadError {
    fn from(error: tiberius::error::Error) -> Self {
        Self::Server(error)
    }
}

/// `step` (a read of the batch's answer), or `None` when the user cancels. A read that has
/// begun a token gets [`TOKEN_GRACE`] to finish it, so the ATTENTION's acknowledgement can
/// be read after it. A read still pending then is taken to wait at a token's boundary (a
/// server writes a token whole: only a stalled network leaves one half-read for longer); if
/// it was not, reading the acknowledgement fails and the engine logs in again.
async fn guarded<F: Future>(step: F, cancel: &mut watch::Receiver<u64>) -> Option<F::Output> {
    // A step not yet polled has read nothing: checking first keeps a server that always has
    // the next row ready (the step is never pending) from starving the cancellation.
    if cancel.has_changed().unwrap_or(false) {
        return None;
    }
    tokio::pin!(step);
    tokio::select! {
        biased;
        output = &mut step => Some(output),
        _ = cancel.changed() => {
            let _ = tokio::time::timeout(TOKEN_GRACE, &mut step).await;
            None
        }
    }
}

/// Runs `sql`, reading its whole answer.
async fn run(client: &mut Connection, sql: &str) -> Result<(), tiberius::error::Error> {
    client.simple_query(sql).await?.into_results().await?;
    Ok(())
}

/// An `INSERT` of an import, being built.
struct Insert {
    head: String,
    sql: String,
    rows: usize,
}

impl Insert {
    fn new(target: &crate::files::LoadTarget) -> Self {
        let mut head = format!("INSERT INTO {} ", target.table);
        if !target.columns.is_empty() {
            head.push('(');
            head.push_str(&target.columns.join(", "));
            head.push_str(") ");
        }
        head.push_str("VALUES ");
        Self {
            head,
            sql: String::new(),
            rows: 0,
        }
    }

    fn push(&mut self, record: &[Field]) {
        if self.rows == 0 {
            self.sql.push_str(&self.head);
        } else {
            self.sql.push_str(", ");
        }
        self.sql.push('(');
        for (i, field) in record.iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            match field {
                Some(value) => self.sql.push_str(&literal(value)),
                None => self.sql.push_str("NULL"),
            }
        }
        self.sql.push(')');
        self.rows += 1;
    }

    fn full(&self) -> bool {
        self.rows >= INSERT_ROWS || self.sql.len() >= INSERT_BYTES
    }

    fn take(&mut self) -> Option<String> {
        if self.rows == 0 {
            return None;
        }
        self.rows = 0;
        Some(std::mem::take(&mut self.sql))
    }
}

/// `value` as a T-SQL Unicode string literal.
fn literal(value: &str) -> String {
    format!("N'{}'", value.replace('\'', "''"))
}

/// `name` as a bracketed T-SQL identifier.
fn bracket(name: &str) -> String {
    let name = name.trim_start_matches('[').trim_end_matches(']');
    format!("[{}]", name.replace(']', "]]"))
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl Engine for Mssql {
    fn prompt(&self) -> Output {
        self.prompts()
    }

    fn canceller(&self) -> Canceller {
        let cancel = self.cancel_tx.clone();
        Box::new(move || {
            cancel.send_modify(|n| *n = n.wrapping_add(1));
            Box::pin(std::future::ready(()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_look_as_sql_server_shows_them() {
        use std::borrow::Cow;
        use tiberius::time::{Date, DateTime2, Time};
        assert_eq!(text(&ColumnData::I32(None)), None);
        assert_eq!(text(&ColumnData::Bit(Some(true))).as_deref(), Some("1"));
        assert_eq!(
            text(&ColumnData::Binary(Some(Cow::Borrowed(&[0xde, 0x01])))).as_deref(),
            Some("0xDE01")
        );
        // 2026-12-06 is day 739_955 since 0001-01-01; 12:34:56.5 at scale 3.
        let dt2 = DateTime2::new(Date::new(739_955), Time::new(45_296_500, 3));
        assert_eq!(
            text(&ColumnData::DateTime2(Some(dt2))).as_deref(),
            Some("2026-12-06 12:34:56.500")
        );
        assert_eq!(
            text(&ColumnData::Date(Some(Date::new(739_955)))).as_deref(),
            Some("2026-12-06")
        );
    }

    #[test]
    fn imports_become_bounded_inserts_of_literals() {
        let target = load_target("dbo.t (a, b)").unwrap();
        let mut insert = Insert::new(&target);
        insert.push(&[Some("it's".into()), None]);
        insert.push(&[Some("2".into()), Some(String::new())]);
        assert_eq!(
            insert.take().as_deref(),
            Some("INSERT INTO dbo.t (a, b) VALUES (N'it''s', NULL), (N'2', N'')")
        );
        assert_eq!(insert.take(), None);
        for _ in 0..INSERT_ROWS {
            insert.push(&[None]);
        }
        assert!(insert.full());
        assert_eq!(bracket("a]b"), "[a]]b]");
    }
}
