//! Native Telnet connections (issue 19, in progress): ztproxy is the Telnet client, so a
//! Telnet session will need no guacd.
//!
//! * [`codec`]: the protocol without I/O — option negotiation (ECHO, SGA, TERMINAL-TYPE,
//!   NAWS; everything else refused), IAC escaping both ways, RFC 854's CR NUL, bounded
//!   against a hostile server (option floods, endless subnegotiations).
//! * [`login`]: guacd's login automation without I/O — `username-regex`, `password-regex`,
//!   `login-success-regex`, `login-failure-regex` (guacd's defaults), over a bounded window of
//!   the server's output, with a deadline.
//!
//! Still to come: the driver on the terminal (`zt_terminal`) and the proxy's backend.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
#[doc(hidden)]
pub mod fuzzing;
pub mod login;

pub use codec::{Event, Telnet};
pub use login::{Action, Failure, Login, LoginSettings};
