//! The PostgreSQL console: tokio-postgres's simple-query protocol (any statement, several
//! results, rows as text in the server's own formatting), streamed into [`Table`]s; psql's
//! common meta commands; cancel through the server's cancel request.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::{CancelToken, Client, SimpleQueryMessage};

use crate::console::{Engine, Job, Output, QueryReport, Upload};
use crate::error::Error;
use crate::settings::{DbSettings, SslMode};
use crate::table::Table;
use crate::tls::{Fingerprint, Tls};

/// Output gathered before it is handed to the terminal.
const CHUNK: usize = 16 * 1024;

/// psql's `\?`, for the commands ztproxy offers.
const HELP: &str = "General\r
  \\q                     quit (or Ctrl-D)\r
  \\?                     this help\r
  \\x                     toggle expanded output (one record per block)\r
  \\conninfo              the current connection\r
Informational\r
  \\d                     list tables, views and sequences\r
  \\d NAME                describe table, view or sequence\r
  \\dt                    list tables\r
  \\dn                    list schemas\r
  \\l                     list databases\r
Connection\r
  \\c DBNAME              connect to another database\r
  \\copy (QUERY) to 'F.csv'  send a result to you as a CSV file (when the session allows)\r
  \\copy TABLE from 'F.csv' load a CSV file you send into TABLE (when the session allows)\r
Ctrl-C cancels a running query on the server; Up and Down recall earlier statements.\r
\r
";

/// A logged-in PostgreSQL connection.
pub struct Postgres {
    client: Client,
    /// The connection's cancel token, shared with the canceller (so it follows `\c`).
    cancel: std::sync::Arc<std::sync::Mutex<CancelToken>>,
    connection: tokio::task::JoinHandle<()>,
    settings: DbSettings,
    host: String,
    port: u16,
    database: String,
    expanded: bool,
    tls: Tls,
    certificate: Option<Fingerprint>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Connects and logs in to `database` (the settings' default when `None`) within the
/// settings' `timeout`.
pub async fn connect(
    host: &str,
    port: u16,
    settings: &DbSettings,
    database: Option<&str>,
) -> Result<Postgres, Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user(settings.username.expose_secret())
        .application_name("ztproxy")
        .connect_timeout(settings.timeout);
    if let Some(password) = &settings.password {
        config.password(password.expose_secret());
    }
    if let Some(database) = database.or(settings.database.as_deref()) {
        config.dbname(database);
    }
    config.ssl_mode(match settings.ssl_mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require => PgSslMode::Require,
    });
    let tls = Tls::new(settings.pins.clone()).map_err(|e| Error::Server(e.to_string()))?;
    let (client, connection) = tokio::time::timeout(settings.timeout, config.connect(tls.clone()))
        .await
        .map_err(|_| Error::Timeout(settings.timeout))?
        .map_err(|e| tls_error(&tls, settings, &e).unwrap_or_else(|| login_error(&e)))?;
    // Under `prefer` against a server without TLS no certificate was seen.
    let certificate = tls.seen();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let database = match client.simple_query("select current_database()").await {
        Ok(messages) => messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_default(),
        Err(e) => return Err(Error::Server(server_text(&e))),
    };
    Ok(Postgres {
        cancel: std::sync::Arc::new(std::sync::Mutex::new(client.cancel_token())),
        client,
        connection,
        settings: settings.clone(),
        host: host.to_owned(),
        port,
        database,
        expanded: false,
        tls,
        certificate,
    })
}

/// The TLS failures the session's policy causes, in words the operator can act on.
fn tls_error(tls: &Tls, settings: &DbSettings, error: &tokio_postgres::Error) -> Option<Error> {
    let text = format!(
        "{error}: {}",
        std::error::Error::source(error)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    if text.contains("server does not support TLS") {
        return Some(Error::TlsUnavailable);
    }
    match tls.seen() {
        Some(seen) if !settings.pins.is_empty() && !settings.pins.contains(&seen) => {
            Some(Error::CertificateRefused(crate::tls::display(&seen)))
        }
        _ => None,
    }
}

fn login_error(error: &tokio_postgres::Error) -> Error {
    match error.as_db_error() {
        Some(db) if db.code().code().starts_with("28") => {
            Error::LoginRefused(db.message().to_owned())
        }
        Some(db) => Error::Server(db.message().to_owned()),
        None if error.to_string().contains("timed out") => Error::Unreachable(error.to_string()),
        None => Error::Unreachable(error.to_string()),
    }
}

fn server_text(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map_or_else(|| error.to_string(), |db| db.message().to_owned())
}

impl Postgres {
    /// The SHA-256 of the certificate the server presented (`None`: no TLS), and whether it
    /// was pinned.
    pub fn certificate(&self) -> Option<(Fingerprint, bool)> {
        self.certificate
            .map(|c| (c, self.settings.pins.contains(&c)))
    }

    /// The database connected to.
    pub fn database(&self) -> &str {
        &self.database
    }

    fn prompts(&self) -> Output {
        Output::Prompt {
            prompt: format!("{}=> ", self.database),
            continuation: format!("{}-> ", self.database),
        }
    }

    async fn statement(&self, sql: &str, out: &mpsc::Sender<Output>) -> QueryReport {
        let started = Instant::now();
        let mut report = QueryReport::new(sql, &self.database);
        let mut buf = Vec::new();
        match self.client.simple_query_raw(sql).await {
            Err(error) => report.failed(&error, &mut buf),
            Ok(stream) => {
                futures::pin_mut!(stream);
                let mut table: Option<Table> = None;
                while let Some(message) = stream.next().await {
                    match message {
                        Ok(SimpleQueryMessage::RowDescription(columns)) => {
                            let names: Vec<String> =
                                columns.iter().map(|c| c.name().to_owned()).collect();
                            table = Some(Table::new(&names, self.expanded));
                        }
                        Ok(SimpleQueryMessage::Row(row)) => {
                            if table.is_none() {
                                let names: Vec<String> =
                                    row.columns().iter().map(|c| c.name().to_owned()).collect();
                                table = Some(Table::new(&names, self.expanded));
                            }
                            if let Some(table) = &mut table {
                                let values: Vec<Option<&str>> =
                                    (0..row.len()).map(|i| row.get(i)).collect();
                                table.row(&values, &mut buf);
                            }
                        }
                        Ok(SimpleQueryMessage::CommandComplete(rows)) => {
                            report.rows += rows;
                            match table.take() {
                                Some(table) => table.finish(&mut buf),
                                None => buf.extend_from_slice(
                                    format!("{}\r\n", command_tag(sql, rows)).as_bytes(),
                                ),
                            }
                        }
                        Ok(_) => {}
                        Err(error) => {
                            report.failed(&error, &mut buf);
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
            }
        }
        if !buf.is_empty() {
            let _ = out.send(Output::Bytes(buf)).await;
        }
        report.duration = started.elapsed();
        report
    }

    async fn meta(
        &mut self,
        command: &str,
        out: &mpsc::Sender<Output>,
        uploads: &mut mpsc::Receiver<Upload>,
    ) -> QueryReport {
        let mut words = command.split_whitespace();
        let name = words.next().unwrap_or_default();
        let argument = words.next();
        let say = |text: String| Output::Bytes(text.into_bytes());
        let query = match (name, argument) {
            ("\\q", _) => {
                let _ = out.send(Output::Quit).await;
                return QueryReport::new(command, &self.database);
            }
            ("\\?", _) => {
                let _ = out.send(say(HELP.to_owned())).await;
                return QueryReport::new(command, &self.database);
            }
            ("\\x", _) => {
                self.expanded = !self.expanded;
                let state = if self.expanded { "on" } else { "off" };
                let _ = out
                    .send(say(format!("Expanded display is {state}.\r\n")))
                    .await;
                return QueryReport::new(command, &self.database);
            }
            ("\\conninfo", _) => {
                let _ = out
                    .send(say(format!(
                        "You are connected to database \"{}\" as user \"{}\" on host \"{}\" at port \"{}\".\r\n{}",
                        self.database,
                        self.settings.username.expose_secret(),
                        self.host,
                        self.port,
                        match self.certificate() {
                            Some((c, pinned)) => format!(
                                "TLS connection (server certificate {}, {}).\r\n",
                                crate::tls::display(&c),
                                if pinned { "pinned" } else { "not pinned" }
                            ),
                            None => "Not a TLS connection.\r\n".to_owned(),
                        }
                    )))
                    .await;
                return QueryReport::new(command, &self.database);
            }
            ("\\copy", _) => return self.copy(command, out, uploads).await,
            ("\\c" | "\\connect", Some(database)) => {
                return self.reconnect(command, database, out).await;
            }
            ("\\l" | "\\list", _) => LIST_DATABASES.to_owned(),
            ("\\dt", _) => LIST_TABLES.to_owned(),
            ("\\dn", _) => LIST_SCHEMAS.to_owned(),
            ("\\d", None) => LIST_RELATIONS.to_owned(),
            ("\\d", Some(relation)) => DESCRIBE.replace("$1", &quote_literal(relation)),
            _ => {
                let _ = out
                    .send(say(format!(
                        "invalid command {name}\r\nTry \\? for help.\r\n"
                    )))
                    .await;
                return QueryReport::new(command, &self.database);
            }
        };
        let mut report = self.statement(&query, out).await;
        command.clone_into(&mut report.statement);
        report
    }

    async fn reconnect(
        &mut self,
        command: &str,
        database: &str,
        out: &mpsc::Sender<Output>,
    ) -> QueryReport {
        let mut report = QueryReport::new(command, &self.database);
        match connect(&self.host, self.port, &self.settings, Some(database)).await {
            Ok(mut fresh) => {
                fresh.expanded = self.expanded;
                // The canceller holds the token: it now cancels on the new connection.
                let shared = self.cancel.clone();
                if let (Ok(mut token), Ok(new)) = (shared.lock(), fresh.cancel.lock()) {
                    *token = new.clone();
                }
                fresh.cancel = shared;
                *self = fresh;
                let _ = out
                    .send(Output::Bytes(
                        format!(
                            "You are now connected to database \"{}\".\r\n",
                            self.database
                        )
                        .into_bytes(),
                    ))
                    .await;
                let _ = out.send(self.prompts()).await;
            }
            Err(error) => {
                report.error_code = Some("08000".to_owned());
                let _ = out
                    .send(Output::Bytes(
                        format!("connection to database \"{database}\" failed: {error}\r\nPrevious connection kept\r\n")
                            .into_bytes(),
                    ))
                    .await;
            }
        }
        report.database.clone_from(&self.database);
        report
    }
}

impl Postgres {
    /// `\copy SOURCE to 'name.csv'`: the result as a CSV file for the user, when the session
    /// allows CSV export; `\copy TABLE from 'name.csv'` is refused (import is not offered
    /// yet). Nothing is read from or written to the server's file system: the data goes
    /// through `COPY ... TO STDOUT`.
    async fn copy(
        &self,
        command: &str,
        out: &mpsc::Sender<Output>,
        uploads: &mut mpsc::Receiver<Upload>,
    ) -> QueryReport {
        let mut report = QueryReport::new(command, &self.database);
        let say = |text: &str| Output::Bytes(format!("{text}\r\n").into_bytes());
        let Some(copy) = parse_copy(command) else {
            let _ = out
                .send(say(
                    "\\copy: use \\copy (QUERY) to 'FILE.csv' or \\copy TABLE to 'FILE.csv'",
                ))
                .await;
            report.error_code = Some("42601".to_owned());
            return report;
        };
        let (allowed, action, what) = if copy.export {
            (self.settings.csv_export, "download", "export")
        } else {
            (self.settings.csv_import, "upload", "import")
        };
        if !allowed {
            let _ = out
                .send(Output::Refused {
                    action,
                    name: copy.file.clone(),
                })
                .await;
            let _ = out
                .send(say(&format!(
                    "CSV {what} is not allowed for this session: nothing was transferred."
                )))
                .await;
            report.error_code = Some("42501".to_owned());
            return report;
        }
        if !copy.export {
            return self.copy_in(&copy, report, out, uploads).await;
        }
        let started = Instant::now();
        let sql = format!("COPY {} TO STDOUT WITH (FORMAT csv, HEADER)", copy.source);
        match self.client.copy_out(sql.as_str()).await {
            Err(error) => {
                let mut buf = Vec::new();
                report.failed(&error, &mut buf);
                let _ = out.send(Output::Bytes(buf)).await;
            }
            Ok(stream) => {
                futures::pin_mut!(stream);
                let _ = out
                    .send(Output::FileStart {
                        name: copy.file.clone(),
                        mimetype: "text/csv",
                    })
                    .await;
                let mut bytes = 0u64;
                let mut lines = 0u64;
                let mut failure = Vec::new();
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(data) => {
                            bytes += data.len() as u64;
                            lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
                            if out.send(Output::FileData(data)).await.is_err() {
                                break;
                            }
                        }
                        Err(error) => {
                            report.failed(&error, &mut failure);
                            break;
                        }
                    }
                }
                let _ = out.send(Output::FileEnd).await;
                if failure.is_empty() {
                    // The header is not a row.
                    report.rows = lines.saturating_sub(1);
                    let _ = out
                        .send(say(&format!(
                            "COPY {} (sent to you as {}, {bytes} bytes)",
                            report.rows, copy.file
                        )))
                        .await;
                } else {
                    let _ = out.send(Output::Bytes(failure)).await;
                }
            }
        }
        report.duration = started.elapsed();
        report
    }
}

impl Postgres {
    /// Asks the user for the file, then streams it into `COPY ... FROM STDIN` (the COPY
    /// starts only once the file does, so nothing is held on the server while the user
    /// chooses it). Ctrl-C abandons it; a failed or abandoned COPY adds no row.
    async fn copy_in(
        &self,
        copy: &Copy,
        mut report: QueryReport,
        out: &mpsc::Sender<Output>,
        uploads: &mut mpsc::Receiver<Upload>,
    ) -> QueryReport {
        use futures::SinkExt;

        let say = |text: String| Output::Bytes(format!("{text}\r\n").into_bytes());
        // Anything left from an earlier, abandoned upload is not this one.
        while uploads.try_recv().is_ok() {}
        let _ = out
            .send(Output::UploadWanted {
                name: copy.file.clone(),
            })
            .await;
        let _ = out
            .send(say(format!(
                "Send {}: drop the file on this window (Ctrl-C abandons).",
                copy.file
            )))
            .await;
        let abandoned = |mut report: QueryReport| {
            report.cancelled = true;
            report.error_code = Some("57014".to_owned());
            report
        };
        // The user's file begins.
        loop {
            match uploads.recv().await {
                Some(Upload::Start) => break,
                Some(Upload::Data(_) | Upload::End) => {}
                Some(Upload::Abort) | None => {
                    let _ = out
                        .send(say("CSV import abandoned: nothing was imported.".into()))
                        .await;
                    return abandoned(report);
                }
            }
        }
        let started = Instant::now();
        let sql = format!("COPY {} FROM STDIN WITH (FORMAT csv, HEADER)", copy.source);
        let mut failure = Vec::new();
        match self.client.copy_in::<_, bytes::Bytes>(sql.as_str()).await {
            Err(error) => report.failed(&error, &mut failure),
            Ok(sink) => {
                futures::pin_mut!(sink);
                let mut sent = 0u64;
                let outcome = loop {
                    match uploads.recv().await {
                        Some(Upload::Data(data)) => {
                            sent += data.len() as u64;
                            if let Err(error) = sink.send(data).await {
                                break Err(error);
                            }
                        }
                        Some(Upload::End) => break sink.as_mut().finish().await,
                        // Dropping the sink unfinished fails the COPY on the server.
                        Some(Upload::Start | Upload::Abort) | None => {
                            let _ = out
                                .send(say("CSV import abandoned: nothing was imported.".into()))
                                .await;
                            report.duration = started.elapsed();
                            return abandoned(report);
                        }
                    }
                };
                match outcome {
                    Ok(rows) => {
                        report.rows = rows;
                        let _ = out
                            .send(say(format!(
                                "COPY {rows} (from {}, {sent} bytes)",
                                copy.file
                            )))
                            .await;
                    }
                    Err(error) => report.failed(&error, &mut failure),
                }
            }
        }
        if !failure.is_empty() {
            let _ = out.send(Output::Bytes(failure)).await;
        }
        report.duration = started.elapsed();
        report
    }
}

/// A `\copy` meta command, understood.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Copy {
    /// `(query)` or `table [(columns)]`, as `COPY` takes it.
    source: String,
    /// The file's name for the user (its last path component, made safe).
    pub(crate) file: String,
    /// `to` (export) rather than `from`.
    export: bool,
}

pub(crate) fn parse_copy(command: &str) -> Option<Copy> {
    let rest = command.strip_prefix("\\copy")?.trim();
    // The direction is the last ` to ` or ` from ` outside the source's parentheses.
    let lower = rest.to_ascii_lowercase();
    let mut depth = 0i32;
    let mut quoted = false;
    let mut split = None;
    for (at, c) in lower.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ' ' if !quoted && depth == 0 => {
                let after = lower.get(at + 1..).unwrap_or_default();
                for (word, export) in [("to ", true), ("from ", false)] {
                    if after.starts_with(word) {
                        split = Some((at, at + 1 + word.len(), export));
                    }
                }
            }
            _ => {}
        }
    }
    let (source_end, file_start, export) = split?;
    let source = rest.get(..source_end)?.trim().to_owned();
    let target = rest.get(file_start..)?.trim();
    let file = target.strip_prefix('\'')?;
    let file = file.get(..file.find('\'')?)?;
    let name: String = file
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(255)
        .collect();
    if source.is_empty() || name.is_empty() || name == "." || name == ".." {
        return None;
    }
    Some(Copy {
        source,
        file: name,
        export,
    })
}

impl Engine for Postgres {
    fn prompt(&self) -> Output {
        self.prompts()
    }

    fn canceller(&self) -> crate::console::Canceller {
        let shared = self.cancel.clone();
        let tls = self.tls.clone();
        Box::new(move || {
            let token = shared.lock().ok().map(|t| t.clone());
            let tls = tls.clone();
            Box::pin(async move {
                if let Some(token) = token {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), token.cancel_query(tls)).await;
                }
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
            Job::Statement(sql) => self.statement(&sql, out).await,
            Job::Meta(command) => self.meta(&command, out, uploads).await,
        }
    }
}

/// What psql prints for a command that returns no rows: the command's tag, from the
/// statement's first words (the simple protocol's completion gives only the count).
fn command_tag(sql: &str, rows: u64) -> String {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == ';' || c == '(')
        .filter(|w| !w.is_empty())
        .take(3)
        .map(str::to_ascii_uppercase)
        .collect();
    let first = words.first().map_or("", String::as_str);
    match first {
        "INSERT" => format!("INSERT 0 {rows}"),
        "UPDATE" | "DELETE" | "SELECT" | "MERGE" | "COPY" | "FETCH" | "MOVE" => {
            format!("{first} {rows}")
        }
        "CREATE" | "DROP" | "ALTER" => {
            let kind: Vec<&str> = words
                .iter()
                .skip(1)
                .map(String::as_str)
                .filter(|w| {
                    !matches!(
                        *w,
                        "OR" | "REPLACE" | "TEMP" | "TEMPORARY" | "UNIQUE" | "IF"
                    )
                })
                .take(1)
                .collect();
            format!("{first} {}", kind.join(" "))
        }
        "" => "OK".to_owned(),
        other => other.to_owned(),
    }
}

/// `text` as a SQL string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

const LIST_DATABASES: &str = "select d.datname as \"Name\", pg_catalog.pg_get_userbyid(d.datdba) as \"Owner\", \
     pg_catalog.pg_encoding_to_char(d.encoding) as \"Encoding\" from pg_catalog.pg_database d order by 1;";
const LIST_TABLES: &str = "select n.nspname as \"Schema\", c.relname as \"Name\", 'table' as \"Type\", \
     pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\" from pg_catalog.pg_class c \
     join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r','p') \
     and n.nspname not in ('pg_catalog','information_schema') and n.nspname !~ '^pg_toast' \
     and pg_catalog.pg_table_is_visible(c.oid) order by 1, 2;";
const LIST_RELATIONS: &str = "select n.nspname as \"Schema\", c.relname as \"Name\", \
     case c.relkind when 'r' then 'table' when 'p' then 'partitioned table' when 'v' then 'view' \
     when 'm' then 'materialized view' when 'S' then 'sequence' when 'f' then 'foreign table' end as \"Type\", \
     pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\" from pg_catalog.pg_class c \
     join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r','p','v','m','S','f') \
     and n.nspname not in ('pg_catalog','information_schema') and n.nspname !~ '^pg_toast' \
     and pg_catalog.pg_table_is_visible(c.oid) order by 1, 2;";
const LIST_SCHEMAS: &str = "select n.nspname as \"Name\", pg_catalog.pg_get_userbyid(n.nspowner) as \"Owner\" \
     from pg_catalog.pg_namespace n where n.nspname !~ '^pg_' and n.nspname <> 'information_schema' order by 1;";
const DESCRIBE: &str = "select a.attname as \"Column\", pg_catalog.format_type(a.atttypid, a.atttypmod) as \"Type\", \
     case when a.attnotnull then 'not null' else '' end as \"Nullable\", \
     pg_catalog.pg_get_expr(d.adbin, d.adrelid) as \"Default\" from pg_catalog.pg_attribute a \
     left join pg_catalog.pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum \
     where a.attrelid = $1::regclass and a.attnum > 0 and not a.attisdropped order by a.attnum;";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tags_are_psqls() {
        assert_eq!(
            command_tag("insert into t values (1), (2);", 2),
            "INSERT 0 2"
        );
        assert_eq!(command_tag("create table t (a int);", 0), "CREATE TABLE");
        assert_eq!(
            command_tag("CREATE UNIQUE INDEX i on t(a);", 0),
            "CREATE INDEX"
        );
        assert_eq!(command_tag("update t set a = 1;", 5), "UPDATE 5");
        assert_eq!(command_tag("begin;", 0), "BEGIN");
        assert_eq!(quote_literal("o'brien"), "'o''brien'");
    }

    #[test]
    fn copy_commands_name_their_source_direction_and_file() {
        assert_eq!(
            parse_copy("\\copy (select 'a to b' from t) to '/tmp/../x/out.csv' csv"),
            Some(Copy {
                source: "(select 'a to b' from t)".into(),
                file: "out.csv".into(),
                export: true,
            })
        );
        assert_eq!(
            parse_copy("\\copy fruit (id, name) FROM 'in.csv'"),
            Some(Copy {
                source: "fruit (id, name)".into(),
                file: "in.csv".into(),
                export: false,
            })
        );
        assert_eq!(parse_copy("\\copy fruit to stdout"), None);
        assert_eq!(parse_copy("\\copy to '..'"), None);
    }
}
