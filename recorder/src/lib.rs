//! Encrypted, seekable, tamper-evident session recordings.
//!
//! A recording is a stream of timestamped events written while a session runs: terminal
//! output (and input, when `recording-include-keys` is set) and resizes for a *typescript*,
//! or the Guacamole instructions the user saw plus periodic key frames for a *graphical*
//! recording. This crate holds the container format, the writer the proxy appends events
//! to, the reader, the exporters and the `recording` command line (`ztproxy recording …`,
//! also built as the `zt-recording` binary).
//!
//! It does not decide what to record or when to stop a session: the proxy appends events
//! and applies its policy when the writer reports a failure. It does not render anything:
//! graphical events are opaque Guacamole instruction bytes produced by the proxy.
//!
//! # Writing (the proxy's side)
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use zt_recorder::{Event, RecordingKind, RecordingWriter, ResourceSecret, WriterConfig};
//!
//! let mut config = WriterConfig::new(RecordingKind::Typescript, "session-1", "resource-9", "ssh");
//! config.resource_secret = Some(Arc::new(ResourceSecret::new(b"resource secret bytes".to_vec())?));
//! config.on_failure = Some(Box::new(|failure| eprintln!("recording failed: {failure}")));
//! // Blocking I/O once (creates the file, writes the header): use spawn_blocking in async code.
//! let writer = RecordingWriter::create("/var/lib/ztproxy/rec/session-1.ztrec", config)?;
//!
//! // On the session's hot path: never blocks, never touches the disk.
//! if let Err(e) = writer.append(Event::Output(b"$ ls\r\n".to_vec())) {
//!     // QueueFull (event dropped, a gap marker will say so) or Failed (disk full, I/O):
//!     // end the session if policy says fail closed.
//!     eprintln!("{e}");
//! }
//!
//! // At the end: finalise (blocking; spawn_blocking in async code).
//! let stats = writer.finish()?;
//! # let _ = stats;
//! # Ok(()) }
//! ```
//!
//! [`RecordingWriter::append`] puts the event on a bounded queue (events and bytes) read by a
//! dedicated thread that packs events into chunks, seals and writes a chunk whenever it fills
//! and at least every second, and finalises the file when the handle is finished or dropped.
//! Failures reach the proxy three ways: the error `append` returns, the failure callback
//! (called once on the writer thread), and [`RecordingWriter::status`]. For graphical
//! recordings, [`RecordingWriter::keyframe_due`] tells the proxy when to append a key frame.
//!
//! # Reading
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use zt_recorder::{EventRange, RecordingReader, ResourceSecret, Unlock, VerifyOptions};
//!
//! let secret = ResourceSecret::new(b"resource secret bytes".to_vec())?;
//! let mut reader = RecordingReader::open_path("session-1.ztrec")?;
//! println!("{} recording of session {}", reader.header().kind, reader.header().session_id);
//! reader.unlock(Unlock::ResourceSecret(&secret))?;
//! let report = reader.verify(&VerifyOptions::default())?;
//! println!("{:?}, {} chunks", report.status, report.data_chunks);
//! for event in reader.events(EventRange::all())? {
//!     let event = event?;
//!     println!("{:?} {:?}", event.at, event.event);
//! }
//! # Ok(()) }
//! ```
//!
//! # The container format, version 2
//!
//! All integers are big-endian. A file is a header, chunk frames, and (once finalised) a
//! manifest:
//!
//! ```text
//! file   = header | chunk 0 | chunk 1 | ... | chunk n-1 | final chunk n | manifest
//!
//! header
//!   0    8  magic 89 'Z' 'T' 'R' 'E' 'C' 0d 0a
//!   8    2  format version = 2 (version 1 hashed the chunks with SHA-256; no longer read)
//!   10   4  body length (<= MAX_HEADER_BODY_LEN)
//!   14      body:
//!        16  recording id (random)
//!         1  kind: 1 typescript, 2 graphical
//!         1  flags: bit 0 input recorded
//!         8  start time, microseconds since the Unix epoch
//!         4  chunk size: largest data-chunk plaintext (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE)
//!         2  width (columns or pixels), 0 = unknown
//!         2  height (rows or pixels), 0 = unknown
//!       1+n  session id   (length byte + UTF-8, n <= 255)
//!       1+n  resource id
//!       1+n  protocol
//!         1  identity present (0 | 1)
//!       [32] Ed25519 public key that signs the manifest
//!        --  wrap context = SHA-256("ztrec-wrap-context/1" 0 | body up to here)
//!         1  key-wrap count (1..=MAX_KEY_WRAPS)
//!            key wraps, each: type (1) | length (2) | body
//!              type 1, resource secret: salt (32) | key check (8) | nonce (12) | sealed key (48)
//!              type 2, X25519 (HPKE):   key id (8) | encapsulated key (32) | sealed key (48)
//!              other types are skipped by readers
//!   header digest = SHA-256(all header bytes); header tag = its first 8 bytes
//!
//! chunk frame
//!   0    1  'C'
//!   1    8  header tag (a chunk of another recording is recognised before decryption)
//!   9    4  chunk index (0, 1, 2, ...)
//!   13   1  flags: bit 0 final chunk
//!   14   4  ciphertext length L (<= chunk size + 16; final: <= MAX_TRAILER_LEN + 16)
//!   18   L  AES-256-GCM(recording key,
//!                       nonce = 00000000 | index as u64,
//!                       aad   = "ztrec-chunk/1" | header digest | bytes 0..18 of the frame,
//!                       plaintext) with the 16-byte tag last
//!
//! data chunk plaintext = records; a record never straddles two chunks
//!   0    1  type: 1 output, 2 input, 3 resize, 4 instructions, 5 key frame, 6 gap,
//!              7 note (a JSON audit fact, such as a file transfer; never content)
//!   1    1  flags: bit 0 more fragments follow, bit 1 continues an earlier fragment
//!   2    8  time, microseconds since the start (never decreasing)
//!   10   4  fragment length
//!   14      payload fragment (resize: width u16 | height u16; gap: events u64 | bytes u64)
//!   An event larger than the room left in a chunk is split into fragments; an event is
//!   at most MAX_EVENT_LEN bytes.
//!
//! final chunk plaintext = trailer
//!   0    8  event count     8  duration (µs)     8  payload bytes     4  data chunk count n
//!   28   8  dropped events  8  dropped bytes     4  seek-index entry count (<= MAX_INDEX_ENTRIES)
//!   48      entries, each: time (8) | chunk (4) | chunk file offset (8) | record offset (4)
//!                          | flags (1): bit 0 key frame
//!
//! manifest (MANIFEST_LEN = 126 bytes)
//!   0    1  'M'
//!   1    8  header tag
//!   9    4  chunk count n + 1
//!   13  32  BLAKE3 over every chunk frame, in order
//!   45   8  file offset of the final chunk
//!   53   1  signed (0 | 1)
//!   54  64  Ed25519 signature over "ztrec-manifest/1" 0 | header digest | bytes 0..54
//!  118   8  "ZTRECEND"
//! ```
//!
//! Why it is built this way:
//!
//! * Every recording has a fresh random 256-bit key ([`RecordingKey`]), zeroised after use
//!   and stored only wrapped: under a key derived from the resource secret
//!   (HKDF-SHA256, random salt, the resource id and format version in `info`) and,
//!   optionally, to auditors' X25519 public keys with HPKE (RFC 9180), so a proxy that only
//!   writes recordings cannot read them back. See [`keys`].
//! * Chunks are sealed independently, with a nonce from the counter (never random, never
//!   reused), and the header digest, index, final flag and length in the associated data.
//!   Truncation, reordering, duplication and splicing between recordings each give a
//!   specific [`ReadError`]; a crash loses at most the chunk being filled, which the writer
//!   flushes at least every second, and everything before it still verifies.
//! * The seek index maps times (one entry a second at most, plus every key frame) to chunks
//!   and file offsets, so an export of a time range decrypts only that range. Graphical
//!   recordings carry a key frame at least every [`format::KEYFRAME_INTERVAL`] of activity.
//! * The manifest hashes the ciphertext of every chunk and is signed with the proxy's
//!   Ed25519 identity key when one is configured, so its integrity can be checked without
//!   the decryption key. The hash is BLAKE3: it runs over every byte the proxy records, and
//!   is four to five times faster than SHA-256 with SHA-NI (8.8 against 1.9 GB/s per core
//!   where we measure), which is what bounds a heavily recorded session's CPU. It is fed
//!   in aligned blocks so that it hashes 16 chunks at a time (`hash.rs`).
//!
//! Readers treat files as hostile: every length is checked against a named constant before
//! anything is allocated, and any byte sequence ends in a [`ReadError`], never a panic (the
//! reader is fuzzed: `recorder/fuzz`, target `recording_open`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::indexing_slicing)]

pub mod chunk;
mod decoder;
mod encoder;
pub mod error;
pub mod export;
pub mod format;
mod hash;
pub mod keys;
pub mod reader;
pub mod writer;

pub use encoder::RecordingStats;
pub use error::{
    AppendError, CreateError, ExportError, KeyError, ReadError, TryAppendError, WriterFailure,
};
pub use format::{Event, Header, RecordedEvent, RecordingId, RecordingKind, Size};
pub use keys::{
    IdentityKey, IdentityPublicKey, KeyId, RecipientPublicKey, RecipientSecretKey, RecordingKey,
    ResourceSecret, Unlock,
};
pub use reader::{
    EventRange, Events, EventsEnd, RecordingReader, RecordingStatus, SignatureStatus,
    VerifyOptions, VerifyReport,
};
pub use writer::{FailureCallback, RecordingWriter, WriterConfig, WriterStatus};

/// Entry points for the fuzz targets in `recorder/fuzz`; not part of the API.
#[cfg(fuzzing)]
pub mod fuzzing;
