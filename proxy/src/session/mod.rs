//! Sessions: the registry, and the one task that owns each session.
//!
//! * [`registry`] — [`SessionHandle`], [`Registry`] and the session's counters;
//! * `admission` — tunnelled TCP connections: the per-session limit, the relay, audit;
//! * `task` — the task that owns a session's transport, from creation to its end;
//! * [`create`] — `POST /v1/sessions`: validation against this proxy, transport set-up,
//!   registration, and the start of the task.
//!
//! Imports run one way: `create` → `task` → `admission` → `registry`.
//!
//! # Lifecycle
//!
//! ```text
//!  POST /v1/sessions ──► Pending ──(client connects)──► Connected ──┐
//!                           │                                      │
//!                           └──── connect timeout, revocation, ────┴──► Ending ──► gone
//!                                 idle timeout, max duration,
//!                                 client gone, shutdown
//! ```
//!
//! [`create`] validates limits, sets up the transport (answers the WebRTC offer, or issues a
//! QUIC token), registers a [`SessionHandle`] and spawns the session task. The task owns the
//! transport; the control API and the transports talk to it only through the handle (end
//! requests) and channels (new data channels and streams). Each tunnelled TCP connection is
//! a relay task tracked by the session. When the session ends — for whatever reason — the
//! task cancels every relay (target sockets are reset), closes the peer connection or QUIC
//! connection (the client's channels close), waits briefly for the relays, removes the
//! session from the registry, and emits `session_ended` with the byte counts. Only then does
//! `DELETE /v1/sessions/{id}` answer, so a revoked session is gone from `GET /v1/sessions`
//! by the time the gateway hears back.

mod admission;
mod create;
pub mod registry;
mod task;

use std::time::Duration;

pub use create::{create, create_viewer};
pub use registry::{Registry, SessionHandle, SessionMeta, SessionStats, ViewerOf};

/// How long teardown waits for relays to finish after cancelling them.
pub const RELAY_GRACE: Duration = Duration::from_secs(2);
/// How long teardown spends telling a WebRTC client why its session ended.
pub const END_NOTICE_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a session's end waits for its Guacamole connection to tell the client.
pub const CONNECTION_END_GRACE: Duration = Duration::from_secs(1);
/// Refused connections reported individually per session; later ones are only counted
/// (a client opening thousands of channels must not flush the audit ring).
pub const REFUSALS_AUDITED: u64 = 10;
