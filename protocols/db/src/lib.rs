//! Native database consoles: ztproxy logs in to the database with the session's credentials
//! (the user never sees them) and runs an interactive console on the terminal
//! (`zt_terminal`), as `psql` would, with every statement audited.
//!
//! ```text
//!  session's parameters ─▶ DbSettings ─▶ postgres/mysql/mssql::connect() ─▶ engine ─┐
//!                                                                          ▼
//!  client ⇄ pipe ⇄ Terminal ⇄ Editor (line editing, history, `;`) ⇄ console::run ⇄ engine
//! ```
//!
//! * [`settings`]: the parameters (`username`, `password`, `database`,
//!   `disable-csv-export`, `disable-csv-import`, the terminal's).
//! * [`editor`]: the line editor, without I/O: history, multi-line statements ended by `;`
//!   outside quotes and comments, meta commands, Ctrl-C and Ctrl-D.
//! * [`table`]: results as aligned tables or expanded records, streamed with bounded memory,
//!   values made safe for the terminal.
//! * [`postgres`]: PostgreSQL through tokio-postgres's simple-query protocol; psql's common
//!   meta commands (`\d`, `\dt`, `\dn`, `\l`, `\c`, `\x`, `\conninfo`, `\?`, `\q`); Ctrl-C
//!   sends the server's cancel request, so the query stops on the server.
//! * [`mysql`]: MySQL and MariaDB through mysql_async's text protocol, boxed tables as the
//!   `mysql` client draws them, `KILL QUERY` for Ctrl-C, Keeper's `INTO LOCAL OUTFILE` and
//!   `LOAD DATA LOCAL INFILE` as file transfers.
//! * [`mssql`]: SQL Server through tiberius's SQL batches, boxed tables, values as SQL Server
//!   Management Studio shows them, `Msg n, Level l, State s` errors, TDS's ATTENTION for
//!   Ctrl-C, and Keeper's two file clauses (the import as `INSERT`s in one transaction).
//! * [`console`]: the session, and the [`console::Observer`] that hears each statement
//!   ([`console::QueryReport`]: database, statement, duration, rows, error code, whether it
//!   was cancelled) with passwords redacted ([`redact`]).
//!
//! It does not record, audit, decide policy or read configuration: the proxy does. Nothing
//! here logs a credential.
//!
//! CSV export and import travel as Guacamole file streams (`file`, `blob`, `ack`, `end`),
//! only when the session allows them (`disable-csv-export` / `disable-csv-import` set to
//! `false`); the server's and ztproxy's file systems are never read or written.
//!
//! * [`tls`]: TLS to the server with the session's certificate pin (`ssl-mode`,
//!   `server-certificate`): through tokio-postgres's TLS hook for PostgreSQL, mysql_async's
//!   rustls set-up for MySQL/MariaDB, and [`tds`] for SQL Server, where ztproxy negotiates
//!   TDS's PRELOGIN encryption and runs the handshake itself, below tiberius.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod console;
pub mod editor;
pub mod error;
pub(crate) mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod mssql;
pub mod mysql;
pub mod postgres;
pub mod redact;
pub mod settings;
pub mod table;
pub mod tds;
pub mod tls;

pub use console::{EndedBy, Engine, Observer, QueryReport, SessionEnd, run};
pub use editor::{Dialect, Editor};
pub use error::Error;
pub use settings::{DbSettings, SslMode};
