//! ztproxy: the data plane of a zero-trust privileged-access system.
//!
//! A PAM gateway runs `ztproxy serve` beside it as a sidecar and drives it through the
//! [control API](control) on a Unix socket (DESIGN.md §3). Users' clients meet ztproxy over
//! WebRTC data channels ([`transport::webrtc`]) or QUIC ([`transport::quic`]); ztproxy
//! bridges them to the one target each [session] was created for.
//!
//! # Map
//!
//! * [`server`] — `ztproxy serve`: start-up, the shared state, shutdown;
//! * [`config`] — the TOML configuration and its validation;
//! * [`control`] — the control API (HTTP/1.1 + JSON) and its threat model;
//! * [`session`] — the registry and the task that owns each session, with its lifecycle;
//! * [`tunnel`] — relaying TCP over a data channel or QUIC stream, flow control and close;
//! * [`transport`] — WebRTC peer connections and the QUIC endpoint;
//! * [`audit`], [`metrics`], [`telemetry`] — what ztproxy reports;
//! * [`client`] — the control API client and `ztproxy connect`.
//!
//! Request and wire formats — everything parsed from untrusted bytes — live in the `zt-api`
//! crate, which has no I/O and is fuzzed.

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
