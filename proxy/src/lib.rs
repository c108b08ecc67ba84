//! ztproxy: the data plane of a zero-trust privileged-access system.
//!
//! A PAM gateway runs `ztproxy serve` beside it as a sidecar and drives it through the
//! [control API](control) on a Unix socket (DESIGN.md §3). Users' clients meet ztproxy over
//! WebRTC data channels ([`transport::webrtc`]) or QUIC ([`transport::quic`]); ztproxy
//! bridges them to the one target each [session] was created for.
//!
//! # Words
//!
//! * **session** — what the gateway creates through the control API: one user, one target,
//!   one transport, a policy, limits, perhaps a recording. Its task (in [`session`]) owns
//!   everything below and ends it all.
//! * **transport** — how the user's client reaches ztproxy for the session: a WebRTC peer
//!   connection or a QUIC connection ([`transport`]).
//! * **stream** — one ordered, reliable byte stream inside the transport: a data channel or
//!   a QUIC stream, behind the one type [`transport::stream::Stream`], so nothing above it
//!   knows which transport it is on.
//! * **tunnel** — a session's conversation that carries raw TCP: each stream is relayed to a
//!   new TCP connection to the target ([`tunnel::relay`]).
//! * **connection** — a session's conversation that carries the Guacamole protocol: one
//!   stream, on which ztproxy plays guacd's server side, enforces the policy and records
//!   ([`connection`], on the sans-IO core in the `zt-connection` crate).
//! * **backend** — what draws a connection's display and takes its input: an external guacd,
//!   or a native engine — the SSH terminal today ([`connection::ssh`]), VNC and the browser
//!   next ([`connection::backend::Backend`]).
//!
//! # Map
//!
//! * [`server`] — `ztproxy serve`: start-up, the shared state, shutdown
//!   ([`server::serve_with`] takes the backends to offer);
//! * [`config`] — the TOML configuration and its validation;
//! * [`control`] — the control API (HTTP/1.1 + JSON) and its threat model;
//! * [`session`] — the registry, admission, creation and the task that owns each session;
//! * [`tunnel`] — relaying TCP over a stream, flow control and close;
//! * [`connection`] — the tokio driver of a Guacamole connection, its backends and its
//!   recording;
//! * [`transport`] — WebRTC peer connections, the QUIC endpoint, the common stream type;
//! * [`audit`], [`metrics`], [`telemetry`] — what ztproxy reports;
//! * [`client`] — the control API client and the client end of a session
//!   (`ztproxy connect`).
//!
//! Request and wire formats — everything parsed from untrusted bytes — live in the `zt-api`
//! crate, which has no I/O and is fuzzed. The protocol cores are sans-IO crates under
//! `protocols/`: `zt-guac` (the Guacamole codec), `zt-connection`, `zt-guacd` (guacd's
//! handshake, with a tokio driver), `zt-display` (the display model recordings use),
//! `zt-terminal` (the terminal renderer), `zt-ssh` (native SSH, with its russh driver).

pub mod audit;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod control;
pub mod inspect;
pub mod metrics;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod transport;
pub mod tunnel;
pub mod util;

pub use zt_connection::policy;
