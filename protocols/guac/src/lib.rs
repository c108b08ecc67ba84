//! The Guacamole protocol, without I/O: instructions, an incremental decoder and an encoder.
//!
//! Every graphical session in ztproxy speaks the Guacamole protocol
//! (<https://guacamole.apache.org/doc/gug/guacamole-protocol.html>) to the user's client, and
//! RDP (and optionally VNC, SSH, Telnet) speaks it to guacd. The proxy decodes both streams,
//! inspects or rewrites the few instructions its policy cares about (handshake, clipboard, file
//! transfers, input when read-only, `sync`, `error`, …) and forwards everything else as the
//! exact bytes it received. This crate is that codec:
//!
//! * [`Decoder`] — bytes in, [`Instruction`]s out, split anywhere across reads, with
//!   [`Limits`] on element count, element length and instruction length (guacd's values by
//!   default) and a specific [`DecodeError`] for anything malformed;
//! * [`Instruction`] — one decoded instruction: its raw wire bytes (a [`bytes::Bytes`] slice of
//!   the decoder's buffer, forwarded without copying or re-encoding) and its elements as
//!   `&str`;
//! * [`TypedInstruction`] — the opcodes ztproxy inspects, with numbers parsed, indexes as
//!   newtypes ([`StreamIndex`], [`LayerIndex`], [`ObjectIndex`]) and [`Status`] codes; a
//!   [`ParseError`] when a well-framed instruction has bad arguments; everything else is
//!   [`TypedInstruction::Other`];
//! * [`encode`], [`InstructionWriter`], [`TypedInstruction::encode`] — the encoder
//!   (lengths counted in Unicode scalar values); `decode(encode(x)) == x`.
//!
//! It does not read sockets, keep time or decide policy: `zt-proxy` and the guacd bridge feed
//! it the bytes they read and act on what it returns. It never panics on input, and never
//! holds more than [`Limits::max_instruction_bytes`] of an incomplete instruction. The decoder
//! and the encode/decode round trip are fuzzed (`protocols/fuzz`) and benchmarked
//! (`bench/benches/guac_codec.rs`, figures in `protocols/guac/BENCH.md`).
//!
//! # Example: the relay loop of one direction
//!
//! ```
//! use bytes::BytesMut;
//! use zt_guac::{Context, Decoder, Limits, Status, TypedInstruction as T, opcode};
//!
//! let (disable_paste, mut refused) = (true, Vec::new());
//! let (mut to_guacd, mut to_client) = (BytesMut::new(), BytesMut::new());
//! let mut from_client = Decoder::new(Limits::default());
//! from_client.feed(b"5.mouse,2.10,2.20,1.0;9.clipboard,1.2,10.text/plain;4.blob,1.2,4.SGk=;");
//! from_client.feed(b"3.end,1.2;3.key,5.65307,1.1;"); // bytes as the socket delivers them
//! while let Some(instruction) = from_client.poll_instruction()? {
//!     if instruction.is(opcode::MOUSE) || instruction.is(opcode::KEY) { // hot path: no parsing
//!         to_guacd.extend_from_slice(instruction.raw());
//!         continue;
//!     }
//!     match T::parse(&instruction, Context::ClientInteractive)? {
//!         T::Clipboard { stream, .. } if disable_paste => {
//!             refused.push(stream); // refuse the stream; its blobs and end are dropped below
//!             let message = "clipboard disabled";
//!             T::Ack { stream, message, status: Status::CLIENT_FORBIDDEN }.encode(&mut to_client);
//!         }
//!         t @ (T::Blob { .. } | T::End { .. }) if t.stream().is_some_and(|s| refused.contains(&s)) => {}
//!         _ => to_guacd.extend_from_slice(instruction.raw()), // forwarded byte for byte
//!     }
//! }
//! assert_eq!(&to_guacd[..], b"5.mouse,2.10,2.20,1.0;3.key,5.65307,1.1;");
//! assert_eq!(&to_client[..], b"3.ack,1.2,18.clipboard disabled,3.771;");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A [`DecodeError`] ends the stream (the decoder stays failed); a [`ParseError`] concerns one
//! instruction and the stream goes on, so the caller chooses between dropping it, forwarding
//! it raw, and ending the session.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::indexing_slicing)] // parsers index with .get(); a panic here is a remote DoS

mod codec;
mod error;
mod instruction;
mod status;
mod typed;

pub use codec::{
    Decoder, GUACD_MAX_ELEMENT_CHARS, GUACD_MAX_ELEMENTS, GUACD_MAX_INSTRUCTION_BYTES,
    InstructionWriter, Limits, encode,
};
pub use error::{ArgumentError, DecodeError, ParseError};
pub use instruction::{Elements, Instruction};
pub use status::Status;
pub use typed::{
    ButtonMask, ChannelMask, Context, Keysym, LayerIndex, ObjectIndex, StreamIndex,
    TypedInstruction, opcode,
};

/// Entry points for the fuzz targets in `protocols/fuzz`; not part of the API.
#[cfg(fuzzing)]
pub mod fuzzing;
