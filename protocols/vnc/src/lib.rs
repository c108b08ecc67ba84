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
//! Still to come (issue 20): Tight's JPEG (with a quality level), the Guacamole display (images,
//! copies, pacing by the client's `sync`), input and clipboard policy, resize, and the
//! proxy's backend.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod inflate;
pub mod rfb;
mod tight;
mod zrle;

pub use error::Error;
