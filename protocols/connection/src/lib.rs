//! The sans-IO core of a Guacamole connection: everything between a user's Guacamole client
//! and a backend that draws the display and takes the input, without sockets, tasks or a
//! clock.
//!
//! A backend is whatever speaks the Guacamole protocol's server side: an external guacd
//! (ztproxy is its client), or one of ztproxy's native engines (a terminal renderer, a VNC
//! framebuffer, a Chromium screencast). The [`Connection`] sits between the two:
//!
//! ```text
//!  client ──bytes──▶ handshake ─▶ filter ─▶ keep-alive ───────────────▶ backend
//!  client ◀─messages─ batcher ◀── filter ◀── sync tracking ◀──bytes──── backend
//!                        └──▶ recording batches (output, and input with recording-include-keys)
//! ```
//!
//! It owns:
//!
//! * the client's handshake ([`handshake`]): ztproxy answers as guacd would and keeps only
//!   the display settings, as a [`zt_guacd::ClientInfo`] (the same type the guacd handshake
//!   sends on);
//! * the policy ([`policy`]) and its [`Filter`](filter::Filter);
//! * the `sync` keep-alive of a slow client ([`zt_guacd::SyncTracker`]);
//! * output batching: messages of whole instructions for the client, batches for the
//!   recording, and flow control (the backend is not read while the client is behind);
//! * the farewell: the `error` and `disconnect` that tell the client why it ends.
//!
//! # Sans-IO contract
//!
//! Time is an input (`now: Instant`); the crate never reads the clock, touches a socket or
//! starts a thread (enforced by its `.clippy.toml`). A driver moves bytes and timers, as
//! quinn's driver does for quinn-proto: see [`Connection`]. The proxy's driver is
//! `zt_proxy::connection`.
//!
//! ```
//! use std::time::Instant;
//! use zt_connection::{Connection, Event, Settings, policy::ConnectionPolicy};
//!
//! let now = Instant::now();
//! let mut conn = Connection::new(Settings::new("s1", ConnectionPolicy::default()), now);
//! conn.handle_client(now, b"6.select,3.ssh;");
//! assert_eq!(&conn.poll_transmit(now).unwrap()[..], b"4.args,13.VERSION_1_5_0;");
//! conn.handle_client(now, b"4.size,3.800,3.600,2.96;7.connect,13.VERSION_1_5_0;");
//! let Some(Event::HandshakeComplete(display)) = conn.poll_event() else { panic!() };
//! assert_eq!((display.width, display.height), (800, 600));
//! // … the driver opens the backend for `display` …
//! conn.backend_ready(now);
//! assert_eq!(&conn.poll_transmit(now).unwrap()[..], b"5.ready,3.$s1;");
//! conn.handle_backend(now, b"4.sync,2.10;");
//! assert_eq!(&conn.poll_transmit(now).unwrap()[..], b"4.sync,2.10;");
//! conn.handle_client(now, b"4.sync,2.10;3.key,2.65,1.1;");
//! assert_eq!(&conn.poll_backend_transmit().unwrap()[..], b"4.sync,2.10;3.key,2.65,1.1;");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::indexing_slicing)] // parsers index with .get(); a panic here is a remote DoS

mod batch;
mod connection;
mod end;
pub mod filter;
pub mod handshake;
pub mod policy;

pub use connection::{
    CLIENT_HIGH_WATER, Connection, Counts, Event, HANDSHAKE_TIMEOUT, MAX_MESSAGE, RECORD_BATCH,
    RECORD_DELAY, Record, Settings,
};
pub use end::{ConnectionEnd, farewell, status_text};

#[cfg(test)]
mod tests;
