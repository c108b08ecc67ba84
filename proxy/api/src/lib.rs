//! The contracts of ztproxy, without I/O.
//!
//! This crate holds everything that crosses a trust boundary as bytes and therefore has to be
//! parsed with care, in one place that has no runtime, no sockets and no clock:
//!
//! * [`control`] — the request and response bodies of the local control API (DESIGN.md §3):
//!   parsing with unknown fields rejected by name, size limits, and validation into a typed
//!   [`control::SessionSpec`];
//! * [`protocol`] — the protocols a connection speaks, and their parameters (guacd 1.6's
//!   names), checked when a session is created;
//! * [`tunnel`] — the framing ztproxy adds on the wire of a tunnel: control messages on a
//!   WebRTC data channel, and the token preamble and status reply on a QUIC stream;
//! * [`seal`] — sealed signalling: SDP offers and answers encrypted and authenticated under
//!   a key derived from the resource's traffic secret, so a relay can neither read nor swap
//!   them;
//! * [`audit`] — the typed audit events streamed to the gateway;
//! * [`Secret`] (from the leaf crate `zt-secret`) — the wrapper every credential travels in,
//!   whose `Debug` never prints the value.
//!
//! It does not open sockets, read files or keep time; `zt-proxy` does, and feeds the bytes
//! it receives to the functions here. Every parser in this crate takes arbitrary bytes and
//! returns a specific error, never panics, and never allocates more than a fixed bound. The
//! parsers are fuzzed (`proxy/fuzz`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::indexing_slicing)]

pub mod audit;
pub mod control;
pub mod protocol;
pub mod seal;
pub mod tunnel;

pub use zt_secret::Secret;

/// `text` cut to at most `max` bytes, at a character boundary (for messages and names from
/// untrusted peers that go into errors and audit events).
pub fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// Entry points for the fuzz targets in `proxy/fuzz`; not part of the API.
#[cfg(fuzzing)]
pub mod fuzzing;
