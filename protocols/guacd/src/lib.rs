//! Bridge from ztproxy to an external guacd: the client side of the Guacamole handshake, and
//! the `sync` keep-alive that carries a guacd session through a slow user's client.
//!
//! RDP (and, per session, VNC, SSH and Telnet) goes through guacd. ztproxy is guacd's
//! client: it connects to guacd's TCP port (4822 by default), performs the handshake with
//! the session's parameters, then relays Guacamole instructions between guacd and the user's
//! client, filtering and recording them. This crate provides:
//!
//! * [`GuacdHandshake`] (`proto.rs`) — the sans-IO handshake: `select`, guacd's `args`
//!   (with its protocol version first since guacd 1.1), the user's display settings
//!   ([`ClientInfo`]) in the instructions that version accepts, `connect` with one value per
//!   name in guacd's own `args` order, and `ready`. guacd's `error`, malformed or oversized
//!   input and the deadline end it with an [`Error`] that says which side failed;
//! * [`SyncTracker`] (`sync.rs`) — the sans-IO relay helper that answers guacd's `sync` for
//!   a client that has stopped answering (guacd drops a user it has not heard from for 15
//!   seconds), without ever acknowledging a frame guacd has not sent, and measures the
//!   client's lag;
//! * [`connect`] (`driver.rs`) — the tokio driver: TCP connect and handshake under one
//!   deadline, returning a [`GuacdConnection`] whose socket and leftover bytes the proxy's
//!   relay takes over.
//!
//! It does not relay, filter or record (the proxy does, with `zt-guac`), decide policy, or
//! read configuration. The connection parameters come from the session alone — see
//! [`GuacdHandshake::new`] — and are never logged: they are [`zt_secret::Secret`]s, and neither
//! [`Error`] nor any `Debug` output contains a value.
//!
//! # Sans-IO contract
//!
//! The cores take `now: Instant` as an argument and never read the clock, sockets or
//! threads. Drive a [`GuacdHandshake`] by writing everything
//! [`poll_transmit`](GuacdHandshake::poll_transmit) returns, feeding every read to
//! [`handle_input`](GuacdHandshake::handle_input), and calling
//! [`handle_timeout`](GuacdHandshake::handle_timeout) at
//! [`poll_timeout`](GuacdHandshake::poll_timeout), until
//! [`poll_event`](GuacdHandshake::poll_event) returns [`HandshakeEvent::Ready`]; `driver.rs`
//! is that loop.
//!
//! # Example: the proxy's side of an RDP session
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::time::{Duration, Instant};
//!
//! use bytes::BytesMut;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use zt_secret::Secret;
//! use zt_guac::{Context, Decoder, Limits, TypedInstruction, opcode};
//! use zt_guacd::{ClientInfo, HandshakeSettings, SyncTracker};
//!
//! # async fn relay(display: ClientInfo, mut to_client: tokio::net::TcpStream)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! // The session's parameters: target, credentials, policy. Never the client's.
//! let mut parameters = BTreeMap::new();
//! for (name, value) in [("hostname", "10.0.0.5"), ("port", "3389"), ("username", "alice"),
//!                       ("password", "from-the-vault"), ("ignore-cert", "true")] {
//!     parameters.insert(name.to_owned(), Secret::new(value.to_owned()));
//! }
//! let settings = HandshakeSettings::with_timeout(Duration::from_secs(10));
//! let guacd = zt_guacd::connect("127.0.0.1:4822".parse()?, "rdp", &parameters, display,
//!                               settings).await?;
//! let (mut from_guacd_rx, mut to_guacd) = guacd.stream.into_split();
//! let mut from_guacd = Decoder::new(Limits::default());
//! from_guacd.feed(&guacd.leftover);
//! let mut sync = SyncTracker::default();
//! let mut buf = BytesMut::with_capacity(64 * 1024);
//! loop {
//!     // guacd -> client: forward everything, note guacd's syncs.
//!     while let Some(instruction) = from_guacd.poll_instruction()? {
//!         if instruction.is(opcode::SYNC) {
//!             if let TypedInstruction::Sync { timestamp, .. } =
//!                 TypedInstruction::parse(&instruction, Context::ServerInteractive)?
//!             {
//!                 sync.server_sync(timestamp, Instant::now());
//!             }
//!         }
//!         to_client.write_all(instruction.raw()).await?;
//!     }
//!     // client -> guacd runs elsewhere: each `sync` reply goes through
//!     // `sync.client_sync(timestamp, now)` and is forwarded only on `ClientSync::Forward`;
//!     // any other forwarded input calls `sync.sent_to_guacd(now)`.
//!     let now = Instant::now();
//!     if let Some(timestamp) = sync.poll_keepalive(now) {
//!         let mut out = BytesMut::new();
//!         TypedInstruction::Sync { timestamp, frames: None }.encode(&mut out);
//!         to_guacd.write_all(&out).await?;
//!     } else if sync.poll_nop(now) {
//!         to_guacd.write_all(b"3.nop;").await?;
//!     }
//!     let wake = sync.poll_timeout().map(tokio::time::Instant::from_std);
//!     tokio::select! {
//!         read = from_guacd_rx.read_buf(&mut buf) => {
//!             if read? == 0 {
//!                 break; // guacd closed: the session is over
//!             }
//!             from_guacd.feed(&buf);
//!             buf.clear();
//!         }
//!         () = async {
//!             match wake {
//!                 Some(at) => tokio::time::sleep_until(at).await,
//!                 None => std::future::pending().await,
//!             }
//!         } => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Pointing ztproxy at a real guacd
//!
//! guacd is not packaged by Debian 12; the integration tests run against a protocol peer
//! (`tests/guacd-peer/src/lib.rs`). Any guacd 1.1 or later (1.5 and 1.6 tested by transcript)
//! works as is: this crate follows the `args` guacd sends, so the parameter set of the
//! guacd build in use (its optional features add and remove names) is always respected.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::indexing_slicing)] // parsers index with .get(); a panic here is a remote DoS

mod codec;
#[cfg(feature = "tokio")]
mod driver;
mod error;
mod proto;
mod settings;
mod sync;

use std::time::Duration;

pub use codec::ProtocolVersion;
#[cfg(feature = "tokio")]
pub use driver::{GuacdConnection, connect};
pub use error::{Error, PeerMisbehaved, Phase};
pub use proto::{GuacdHandshake, HandshakeEvent, MAX_GUACD_MESSAGE_CHARS};
pub use settings::{ClientInfo, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_ARGS, HandshakeSettings};
pub use sync::{
    ClientSync, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_MAX_PENDING_SYNCS, DEFAULT_NOP_INTERVAL,
    DEFAULT_SYNC_GRACE, SuppressReason, SyncSettings, SyncTracker,
};

/// guacd's default TCP port.
pub const GUACD_DEFAULT_PORT: u16 = 4822;

/// How long guacd waits for anything from a user before it sends `error "User is not
/// responding." 776` and `disconnect` (`GUACD_TIMEOUT`, `src/guacd/proc.h`).
pub const GUACD_CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// After this long without writing anything, guacd sends `nop`
/// (`GUAC_SOCKET_KEEP_ALIVE_INTERVAL`, `src/libguac/guacamole/socket-constants.h`; checked
/// every interval, so an idle client sees a `nop` every 5 to 10 seconds).
pub const GUACD_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
