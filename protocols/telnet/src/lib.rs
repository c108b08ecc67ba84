//! Native Telnet connections: ztproxy is the Telnet client and the terminal, so a Telnet
//! session needs no guacd.
//!
//! ```text
//!  session's parameters ─▶ TelnetSettings ─▶ connect() ─▶ TelnetConnection ─▶ run()
//!                          (settings.rs)     TCP under                         codec + login
//!                                            `timeout`                         + terminal ⇄ pipe
//! ```
//!
//! * [`codec`]: the protocol without I/O — option negotiation (ECHO, SGA, TERMINAL-TYPE,
//!   NAWS; everything else refused), IAC escaping both ways, RFC 854's CR NUL, bounded
//!   against a hostile server (option floods, endless subnegotiations).
//! * [`login`]: guacd's login automation without I/O — `username-regex`, `password-regex`,
//!   `login-success-regex`, `login-failure-regex` (guacd's defaults), over a bounded window of
//!   the server's output, with a deadline.
//!
//! * [`TelnetSettings`]: guacd 1.6's `telnet` parameters.
//! * [`connect`] and [`run`]: the connection, then the session on a
//!   [`zt_terminal::Terminal`] — the login happens on the user's screen, as with guacd, with
//!   the credentials typed by ztproxy; a refused or late login ends the session with an
//!   [`Error`] the proxy audits. Reports go to a [`zt_terminal::Observer`] (the typescript).
//!
//! It does not record, audit, decide policy or read configuration: the proxy does. Nothing
//! here logs a credential or a keystroke, and no error holds one or the server's text.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod login;
mod session;
pub mod settings;

pub use codec::{Event, Telnet};
pub use error::Error;
pub use login::{Action, Failure, Login, LoginSettings};
pub use session::{EndedBy, MAX_TO_TARGET, SessionEnd, TelnetConnection, connect, run};
pub use settings::TelnetSettings;
