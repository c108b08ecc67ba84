//! Native VNC connections: ztproxy is the RFB client (RFC 6143), so a VNC session needs no
//! guacd.
//!
//! * [`rfb`]: the protocol without I/O. [`rfb::Client`] is fed the server's bytes and gives
//!   [`rfb::Event`]s (the desktop's size and name, rectangles of pixels, copies, the cursor,
//!   cut text, the bell); the bytes to send wait in its output. Everything a server says is
//!   bounded by [`rfb::Limits`]: a desktop size, a rectangle outside the framebuffer, a
//!   colour map (ztproxy asks for true colour), or a length past its bound ends the
//!   connection with an [`Error`], and a rectangle's pixels are given a band of rows at a
//!   time, so a large update never sits in memory whole.
//! * [`auth`]: VNC authentication (DES of the server's challenge with the password).
//! * ZRLE, inflated and decoded a tile at a time (`zrle.rs`); Tight without JPEG, inflated
//!   and filtered a band of rows at a time (`tight.rs`).
//!
//! Why not vnc-rs: it owns the socket and spawns its own tasks (no byte-level API to fuzz,
//! no control over frame pacing), it chooses "no authentication" whenever the server offers
//! it, and it decodes cut text as UTF-8, where RFB's is Latin-1. Its 0.6 limits and the
//! fixes Warpgate made to 0.5 were read as a checklist for this crate's bounds.
//!
//! * [`display`]: the desktop as the client draws it: what changed at the end of each update
//!   as PNG, JPEG or a fill, CopyRect as `copy`.
//! * [`settings`]: the session's parameters, by guacd 1.6's names.
//! * [`session`]: the login ([`session::connect`]), the engine between RFB and the
//!   Guacamole client (input, clipboard, resize, the cursor, pacing by the client's `sync`),
//!   and its tokio driver ([`session::run`]).
//!
//! Not done: Tight's JPEG (ztproxy never asks for a quality level, so servers do not send
//! it), pixel formats below 24 bits, and lossy WebP to the client (no pure-Rust encoder;
//! JPEG is used for photographic areas).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod display;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod inflate;
pub mod rfb;
pub mod session;
pub mod settings;
mod tight;
mod zrle;

pub use error::Error;
