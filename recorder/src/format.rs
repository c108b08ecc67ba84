//! The container format: header, chunk frames, manifest, trailer and records.
//!
//! Pure encoding and parsing, no I/O and no encryption (that is in [`crate::chunk`] and
//! [`crate::keys`]). The byte layout is drawn in the crate documentation; every length read
//! from a file is checked against one of the constants at the bottom of this module before
//! anything is allocated for it.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::ReadError;
use crate::keys::KeyId;

/// What a recording holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingKind {
    /// Terminal output (and input when enabled) with timing, exported as a `script`
    /// typescript, asciicast v2 or plain text.
    Typescript,
    /// The Guacamole instruction stream the user saw, with key frames for seeking.
    Graphical,
}

impl RecordingKind {
    fn code(self) -> u8 {
        match self {
            Self::Typescript => 1,
            Self::Graphical => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Typescript),
            2 => Some(Self::Graphical),
            _ => None,
        }
    }
}

impl fmt::Display for RecordingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Typescript => "typescript",
            Self::Graphical => "graphical",
        })
    }
}

/// The random identifier of one recording, written into its header.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordingId(pub(crate) [u8; 16]);

impl RecordingId {
    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for RecordingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for RecordingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordingId({self})")
    }
}

/// Terminal size in character cells (typescript) or display size in pixels (graphical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Size {
    /// Columns, or pixels across.
    pub width: u16,
    /// Rows, or pixels down.
    pub height: u16,
}

/// One event of a session, as appended by the proxy and as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Bytes the target sent to the terminal (typescript recordings).
    Output(Vec<u8>),
    /// Bytes the user typed (typescript recordings that record input).
    Input(Vec<u8>),
    /// The terminal was resized (typescript recordings).
    Resize(Size),
    /// Encoded Guacamole instructions sent to the user (graphical recordings). Shared
    /// ([`Bytes`]), so the proxy hands over the very buffers it sends to the client.
    Instructions(Bytes),
    /// Encoded Guacamole instructions that redraw the whole display from nothing, produced
    /// by the proxy at least every [`KEYFRAME_INTERVAL`] of activity (graphical recordings).
    /// They are not part of what the user saw; readers use them as seek points.
    KeyFrame(Bytes),
    /// A fact the audit log also holds (a file transfer: direction, path, size, SHA-256),
    /// as one JSON object. Never content. Both kinds of recording hold them; exports to
    /// other formats leave them out.
    Note(Bytes),
    /// Written by the recorder itself (never appended by callers): the proxy dropped this
    /// many events and payload bytes here because the writer could not keep up.
    Gap {
        /// Events dropped.
        events: u64,
        /// Payload bytes dropped.
        bytes: u64,
    },
}

impl Event {
    /// Length of the event's payload as stored, in bytes.
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Output(b) | Self::Input(b) => b.len(),
            Self::Instructions(b) | Self::KeyFrame(b) | Self::Note(b) => b.len(),
            Self::Resize(_) => RESIZE_PAYLOAD_LEN,
            Self::Gap { .. } => GAP_PAYLOAD_LEN,
        }
    }

    pub(crate) fn record_type(&self) -> RecordType {
        match self {
            Self::Output(_) => RecordType::Output,
            Self::Input(_) => RecordType::Input,
            Self::Resize(_) => RecordType::Resize,
            Self::Instructions(_) => RecordType::Instructions,
            Self::KeyFrame(_) => RecordType::KeyFrame,
            Self::Note(_) => RecordType::Note,
            Self::Gap { .. } => RecordType::Gap,
        }
    }

    /// Whether a recording of `kind` can hold this event.
    pub fn fits(&self, kind: RecordingKind) -> bool {
        self.record_type().allowed_in(kind)
    }

    /// Calls `f` with the payload bytes as stored.
    pub(crate) fn with_payload<T>(&self, f: impl FnOnce(&[u8]) -> T) -> T {
        match self {
            Self::Output(b) | Self::Input(b) => f(b),
            Self::Instructions(b) | Self::KeyFrame(b) | Self::Note(b) => f(b),
            Self::Resize(size) => {
                let mut p = [0u8; RESIZE_PAYLOAD_LEN];
                let (w, h) = p.split_at_mut(2);
                w.copy_from_slice(&size.width.to_be_bytes());
                h.copy_from_slice(&size.height.to_be_bytes());
                f(&p)
            }
            Self::Gap { events, bytes } => {
                let mut p = [0u8; GAP_PAYLOAD_LEN];
                let (e, b) = p.split_at_mut(8);
                e.copy_from_slice(&events.to_be_bytes());
                b.copy_from_slice(&bytes.to_be_bytes());
                f(&p)
            }
        }
    }
}

/// An event read back from a recording, with its time since the start of the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Time since the recording started.
    pub at: Duration,
    /// The event.
    pub event: Event,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordType {
    Output,
    Input,
    Resize,
    Instructions,
    KeyFrame,
    Gap,
    Note,
}

impl RecordType {
    fn code(self) -> u8 {
        match self {
            Self::Output => 1,
            Self::Input => 2,
            Self::Resize => 3,
            Self::Instructions => 4,
            Self::KeyFrame => 5,
            Self::Gap => 6,
            Self::Note => 7,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Output,
            2 => Self::Input,
            3 => Self::Resize,
            4 => Self::Instructions,
            5 => Self::KeyFrame,
            6 => Self::Gap,
            7 => Self::Note,
            _ => return None,
        })
    }

    pub(crate) fn allowed_in(self, kind: RecordingKind) -> bool {
        match self {
            Self::Output | Self::Input | Self::Resize => kind == RecordingKind::Typescript,
            Self::Instructions | Self::KeyFrame => kind == RecordingKind::Graphical,
            Self::Gap | Self::Note => true,
        }
    }
}

/// SHA-256 of the complete encoded header; bound into every chunk and the manifest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HeaderDigest(pub(crate) [u8; 32]);

impl HeaderDigest {
    /// The first [`HEADER_TAG_LEN`] bytes, written in clear in every frame so that a chunk
    /// from another recording is recognised as foreign before any decryption.
    pub fn tag(&self) -> [u8; HEADER_TAG_LEN] {
        let mut tag = [0u8; HEADER_TAG_LEN];
        let (head, _) = self.0.split_at(HEADER_TAG_LEN);
        tag.copy_from_slice(head);
        tag
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<[u8; 32]> for HeaderDigest {
    /// For sealing chunks outside a writer (benchmarks, tools); a writer computes the digest
    /// from the header it wrote.
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for HeaderDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeaderDigest(")?;
        write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

/// One way of recovering the recording key, stored in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyWrap {
    /// The recording key sealed with AES-256-GCM under a key derived from the resource
    /// secret (see [`crate::keys`]).
    ResourceSecret {
        /// HKDF salt, random per recording.
        salt: [u8; 32],
        /// Tells a wrong secret from a tampered wrap: the first bytes of a second HKDF output.
        key_check: [u8; 8],
        /// AES-GCM nonce, random.
        nonce: [u8; 12],
        /// The sealed recording key and its tag.
        sealed: [u8; 48],
    },
    /// The recording key sealed to an X25519 public key with HPKE (RFC 9180).
    X25519 {
        /// Identifies the recipient public key.
        key_id: KeyId,
        /// The HPKE encapsulated key.
        enc: [u8; 32],
        /// The sealed recording key and its tag.
        sealed: [u8; 48],
    },
    /// A wrap type this version does not know; skipped when unlocking.
    Unknown {
        /// The type byte.
        kind: u8,
    },
}

const WRAP_RESOURCE: u8 = 1;
const WRAP_X25519: u8 = 2;
const WRAP_RESOURCE_LEN: usize = 32 + 8 + 12 + 48;
const WRAP_X25519_LEN: usize = 8 + 32 + 48;

/// The parsed header of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Header {
    /// Random id of this recording.
    pub recording_id: RecordingId,
    /// Typescript or graphical.
    pub kind: RecordingKind,
    /// Whether typed input is recorded (typescript only; `recording-include-keys`).
    pub includes_input: bool,
    /// Wall-clock start, in microseconds since the Unix epoch.
    pub start_unix_micros: u64,
    /// Largest plaintext of a data chunk, in bytes.
    pub chunk_size: u32,
    /// Initial terminal or display size; zero when unknown.
    pub size: Size,
    /// The proxy's session id.
    pub session_id: String,
    /// The resource (target) id the resource secret belongs to.
    pub resource_id: String,
    /// Protocol of the session (`ssh`, `rdp`, ...).
    pub protocol: String,
    /// Ed25519 public key that signs the manifest, when the proxy has an identity key.
    pub identity: Option<[u8; 32]>,
    /// Ways to recover the recording key (at least one).
    pub key_wraps: Vec<KeyWrap>,
    /// SHA-256 over the encoded header.
    pub digest: HeaderDigest,
    /// SHA-256 over the header fields before the key wraps; bound into every key wrap.
    pub wrap_context: [u8; 32],
    /// Encoded length; the first frame starts at this offset.
    pub encoded_len: u64,
}

/// The header fields chosen by the writer, before key wrapping.
#[derive(Debug, Clone)]
pub(crate) struct HeaderFields {
    pub(crate) recording_id: RecordingId,
    pub(crate) kind: RecordingKind,
    pub(crate) includes_input: bool,
    pub(crate) start_unix_micros: u64,
    pub(crate) chunk_size: u32,
    pub(crate) size: Size,
    pub(crate) session_id: String,
    pub(crate) resource_id: String,
    pub(crate) protocol: String,
    pub(crate) identity: Option<[u8; 32]>,
}

/// Why header fields cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldError {
    TooLong(&'static str),
    ChunkSize,
    WrapCount,
}

impl HeaderFields {
    /// Encodes the header body up to (not including) the key-wrap count, and the wrap
    /// context digest over it.
    pub(crate) fn encode_prefix(&self) -> Result<(Vec<u8>, [u8; 32]), FieldError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(FieldError::ChunkSize);
        }
        let mut body = Vec::with_capacity(128);
        body.extend_from_slice(&self.recording_id.0);
        body.push(self.kind.code());
        body.push(if self.includes_input { FLAG_INPUT } else { 0 });
        body.extend_from_slice(&self.start_unix_micros.to_be_bytes());
        body.extend_from_slice(&self.chunk_size.to_be_bytes());
        body.extend_from_slice(&self.size.width.to_be_bytes());
        body.extend_from_slice(&self.size.height.to_be_bytes());
        for (name, value) in [
            ("session id", &self.session_id),
            ("resource id", &self.resource_id),
            ("protocol", &self.protocol),
        ] {
            let len = u8::try_from(value.len()).map_err(|_| FieldError::TooLong(name))?;
            body.push(len);
            body.extend_from_slice(value.as_bytes());
        }
        match &self.identity {
            Some(key) => {
                body.push(1);
                body.extend_from_slice(key);
            }
            None => body.push(0),
        }
        let context = wrap_context(&body);
        Ok((body, context))
    }

    /// Encodes the complete header from a prefix made by [`Self::encode_prefix`].
    pub(crate) fn encode(prefix: &[u8], wraps: &[KeyWrap]) -> Result<Vec<u8>, FieldError> {
        let count = u8::try_from(wraps.len()).map_err(|_| FieldError::WrapCount)?;
        if wraps.is_empty() || wraps.len() > MAX_KEY_WRAPS {
            return Err(FieldError::WrapCount);
        }
        let mut body = prefix.to_vec();
        body.push(count);
        for wrap in wraps {
            match wrap {
                KeyWrap::ResourceSecret {
                    salt,
                    key_check,
                    nonce,
                    sealed,
                } => {
                    body.push(WRAP_RESOURCE);
                    body.extend_from_slice(&len16(WRAP_RESOURCE_LEN));
                    body.extend_from_slice(salt);
                    body.extend_from_slice(key_check);
                    body.extend_from_slice(nonce);
                    body.extend_from_slice(sealed);
                }
                KeyWrap::X25519 {
                    key_id,
                    enc,
                    sealed,
                } => {
                    body.push(WRAP_X25519);
                    body.extend_from_slice(&len16(WRAP_X25519_LEN));
                    body.extend_from_slice(&key_id.0);
                    body.extend_from_slice(enc);
                    body.extend_from_slice(sealed);
                }
                KeyWrap::Unknown { .. } => return Err(FieldError::WrapCount),
            }
        }
        let body_len = u32::try_from(body.len()).map_err(|_| FieldError::TooLong("header"))?;
        if body.len() > MAX_HEADER_BODY_LEN {
            return Err(FieldError::TooLong("header"));
        }
        let mut out = Vec::with_capacity(HEADER_PREFIX_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&body_len.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }
}

fn len16(len: usize) -> [u8; 2] {
    // The wrap lengths are small constants.
    u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes()
}

fn wrap_context(prefix: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(WRAP_CONTEXT_LABEL);
    h.update(prefix);
    h.finalize().into()
}

/// Checks the fixed start of a header (magic, version, body length) and returns the body
/// length.
pub(crate) fn parse_header_start(start: &[u8]) -> Result<usize, ReadError> {
    let mut r = ByteReader::new(start);
    let magic = r.array::<8>().ok_or(ReadError::TruncatedHeader)?;
    if magic != MAGIC {
        return Err(ReadError::NotARecording);
    }
    let version = r.u16().ok_or(ReadError::TruncatedHeader)?;
    if version != FORMAT_VERSION {
        return Err(ReadError::UnsupportedVersion(version));
    }
    let body_len = r.u32().ok_or(ReadError::TruncatedHeader)?;
    let body_len = usize::try_from(body_len).unwrap_or(usize::MAX);
    if body_len > MAX_HEADER_BODY_LEN {
        return Err(ReadError::MalformedHeader(
            "header longer than the format allows",
        ));
    }
    Ok(body_len)
}

impl Header {
    /// Parses a complete header: the [`HEADER_PREFIX_LEN`] fixed bytes followed by the body.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReadError> {
        let body_len = parse_header_start(bytes)?;
        let total = HEADER_PREFIX_LEN + body_len;
        let encoded = bytes.get(..total).ok_or(ReadError::TruncatedHeader)?;
        let body = encoded
            .get(HEADER_PREFIX_LEN..)
            .ok_or(ReadError::TruncatedHeader)?;
        let mut r = ByteReader::new(body);
        let recording_id = RecordingId(
            r.array()
                .ok_or(ReadError::MalformedHeader("short recording id"))?,
        );
        let kind =
            RecordingKind::from_code(r.u8().ok_or(ReadError::MalformedHeader("missing kind"))?)
                .ok_or(ReadError::MalformedHeader("unknown recording kind"))?;
        let flags = r.u8().ok_or(ReadError::MalformedHeader("missing flags"))?;
        if flags & !FLAG_INPUT != 0 {
            return Err(ReadError::MalformedHeader("unknown header flags"));
        }
        let start_unix_micros = r
            .u64()
            .ok_or(ReadError::MalformedHeader("missing start time"))?;
        let chunk_size = r
            .u32()
            .ok_or(ReadError::MalformedHeader("missing chunk size"))?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(ReadError::MalformedHeader("chunk size out of range"));
        }
        let width = r.u16().ok_or(ReadError::MalformedHeader("missing size"))?;
        let height = r.u16().ok_or(ReadError::MalformedHeader("missing size"))?;
        let session_id = r
            .str8()
            .ok_or(ReadError::MalformedHeader("bad session id"))?;
        let resource_id = r
            .str8()
            .ok_or(ReadError::MalformedHeader("bad resource id"))?;
        let protocol = r.str8().ok_or(ReadError::MalformedHeader("bad protocol"))?;
        let identity = match r
            .u8()
            .ok_or(ReadError::MalformedHeader("missing identity flag"))?
        {
            0 => None,
            1 => Some(
                r.array::<32>()
                    .ok_or(ReadError::MalformedHeader("short identity key"))?,
            ),
            _ => return Err(ReadError::MalformedHeader("bad identity flag")),
        };
        let prefix_len = r.position();
        let wrap_context = wrap_context(body.get(..prefix_len).unwrap_or_default());
        let count = usize::from(
            r.u8()
                .ok_or(ReadError::MalformedHeader("missing key-wrap count"))?,
        );
        if count == 0 {
            return Err(ReadError::MalformedHeader("no key wraps"));
        }
        if count > MAX_KEY_WRAPS {
            return Err(ReadError::MalformedHeader("too many key wraps"));
        }
        let mut key_wraps = Vec::with_capacity(count);
        for _ in 0..count {
            let wrap_kind = r.u8().ok_or(ReadError::MalformedHeader("short key wrap"))?;
            let len = usize::from(
                r.u16()
                    .ok_or(ReadError::MalformedHeader("short key wrap"))?,
            );
            let wrap_body = r
                .take(len)
                .ok_or(ReadError::MalformedHeader("short key wrap"))?;
            let mut w = ByteReader::new(wrap_body);
            let wrap = match (wrap_kind, len) {
                (WRAP_RESOURCE, WRAP_RESOURCE_LEN) => KeyWrap::ResourceSecret {
                    salt: w
                        .array()
                        .ok_or(ReadError::MalformedHeader("short key wrap"))?,
                    key_check: w
                        .array()
                        .ok_or(ReadError::MalformedHeader("short key wrap"))?,
                    nonce: w
                        .array()
                        .ok_or(ReadError::MalformedHeader("short key wrap"))?,
                    sealed: w
                        .array()
                        .ok_or(ReadError::MalformedHeader("short key wrap"))?,
                },
                (WRAP_X25519, WRAP_X25519_LEN) => KeyWrap::X25519 {
                    key_id: KeyId(
                        w.array()
                            .ok_or(ReadError::MalformedHeader("short key wrap"))?,
                    ),
                    enc: w
                        .array()
                        .ok_or(ReadError::MalformedHeader("short key wrap"))?,
                    sealed: w
                        .array()
                        .ok_or(ReadError::MalformedHeader("short key wrap"))?,
                },
                (WRAP_RESOURCE | WRAP_X25519, _) => {
                    return Err(ReadError::MalformedHeader("key wrap has the wrong length"));
                }
                (other, _) => KeyWrap::Unknown { kind: other },
            };
            key_wraps.push(wrap);
        }
        if r.remaining() != 0 {
            return Err(ReadError::MalformedHeader("trailing bytes in header"));
        }
        Ok(Self {
            recording_id,
            kind,
            includes_input: flags & FLAG_INPUT != 0,
            start_unix_micros,
            chunk_size,
            size: Size { width, height },
            session_id,
            resource_id,
            protocol,
            identity,
            key_wraps,
            digest: HeaderDigest(Sha256::digest(encoded).into()),
            wrap_context,
            encoded_len: u64::try_from(total).unwrap_or(u64::MAX),
        })
    }

    /// Largest ciphertext (with tag) a chunk frame of this recording may declare.
    pub(crate) fn max_ciphertext_len(&self, last: bool) -> usize {
        if last {
            MAX_TRAILER_LEN + TAG_LEN
        } else {
            usize::try_from(self.chunk_size).unwrap_or(usize::MAX) + TAG_LEN
        }
    }
}

/// The clear header of a chunk frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// First bytes of the header digest of the recording the chunk belongs to.
    pub header_tag: [u8; HEADER_TAG_LEN],
    /// Position of the chunk in the recording, from 0.
    pub index: u32,
    /// Whether this is the final chunk (the trailer).
    pub last: bool,
    /// Length of the ciphertext including the tag.
    pub ciphertext_len: u32,
}

/// Why a frame header does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    NotAChunk,
    BadFlags,
}

impl FrameHeader {
    /// Encodes the [`FRAME_HEADER_LEN`] bytes.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut out = [0u8; FRAME_HEADER_LEN];
        let mut w = ByteWriter::new(&mut out);
        w.put(&[FRAME_CHUNK]);
        w.put(&self.header_tag);
        w.put(&self.index.to_be_bytes());
        w.put(&[if self.last { CHUNK_FLAG_LAST } else { 0 }]);
        w.put(&self.ciphertext_len.to_be_bytes());
        out
    }

    /// Parses the [`FRAME_HEADER_LEN`] bytes at the start of `bytes`.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Option<Self>, FrameError> {
        let mut r = ByteReader::new(bytes);
        let Some(ty) = r.u8() else { return Ok(None) };
        if ty != FRAME_CHUNK {
            return Err(FrameError::NotAChunk);
        }
        let (Some(header_tag), Some(index), Some(flags), Some(ciphertext_len)) =
            (r.array(), r.u32(), r.u8(), r.u32())
        else {
            return Ok(None);
        };
        if flags & !CHUNK_FLAG_LAST != 0 {
            return Err(FrameError::BadFlags);
        }
        Ok(Some(Self {
            header_tag,
            index,
            last: flags & CHUNK_FLAG_LAST != 0,
            ciphertext_len,
        }))
    }
}

/// The manifest frame that closes a finalised recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// First bytes of the header digest.
    pub header_tag: [u8; HEADER_TAG_LEN],
    /// Number of chunk frames, the final one included.
    pub chunk_count: u32,
    /// BLAKE3 over every chunk frame (clear header and ciphertext), in order.
    pub chunks_hash: [u8; 32],
    /// File offset of the final chunk frame.
    pub final_offset: u64,
    /// Ed25519 signature by the header's identity key, if any.
    pub signature: Option<[u8; 64]>,
}

impl Manifest {
    /// The bytes the signature covers: a label, the header digest and the manifest fields
    /// before the signature (including the "signed" flag, so it cannot be cleared).
    pub(crate) fn signed_message(&self, digest: &HeaderDigest) -> Vec<u8> {
        let encoded = self.encode();
        let mut msg = Vec::with_capacity(MANIFEST_LABEL.len() + 32 + MANIFEST_SIGNED_LEN);
        msg.extend_from_slice(MANIFEST_LABEL);
        msg.extend_from_slice(&digest.0);
        msg.extend_from_slice(encoded.get(..MANIFEST_SIGNED_LEN).unwrap_or_default());
        msg
    }

    /// Encodes the [`MANIFEST_LEN`] bytes.
    pub(crate) fn encode(&self) -> [u8; MANIFEST_LEN] {
        let mut out = [0u8; MANIFEST_LEN];
        let mut w = ByteWriter::new(&mut out);
        w.put(&[FRAME_MANIFEST]);
        w.put(&self.header_tag);
        w.put(&self.chunk_count.to_be_bytes());
        w.put(&self.chunks_hash);
        w.put(&self.final_offset.to_be_bytes());
        w.put(&[u8::from(self.signature.is_some())]);
        w.put(&self.signature.unwrap_or([0u8; 64]));
        w.put(&END_MAGIC);
        out
    }

    /// Parses a manifest frame; `None` if the bytes are not one.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != MANIFEST_LEN {
            return None;
        }
        let mut r = ByteReader::new(bytes);
        if r.u8()? != FRAME_MANIFEST {
            return None;
        }
        let header_tag = r.array()?;
        let chunk_count = r.u32()?;
        let chunks_hash = r.array()?;
        let final_offset = r.u64()?;
        let signed = r.u8()?;
        let signature: [u8; 64] = r.array()?;
        if r.array::<8>()? != END_MAGIC {
            return None;
        }
        let signature = match signed {
            0 if signature == [0u8; 64] => None,
            1 => Some(signature),
            _ => return None,
        };
        Some(Self {
            header_tag,
            chunk_count,
            chunks_hash,
            final_offset,
            signature,
        })
    }
}

/// A seek-index entry: where an event starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IndexEntry {
    /// Event time, microseconds since the recording started.
    pub time_us: u64,
    /// Chunk the event's first record is in.
    pub chunk: u32,
    /// File offset of that chunk's frame.
    pub file_offset: u64,
    /// Offset of the record inside the chunk's plaintext.
    pub record_offset: u32,
    /// Whether the event is a key frame.
    pub key_frame: bool,
}

/// The plaintext of the final chunk: totals and the seek index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trailer {
    /// Events recorded, gap markers included.
    pub event_count: u64,
    /// Time of the last event, microseconds.
    pub duration_us: u64,
    /// Payload bytes recorded.
    pub payload_bytes: u64,
    /// Number of data chunks (the final chunk's index).
    pub data_chunks: u32,
    /// Events the proxy dropped because the writer fell behind.
    pub dropped_events: u64,
    /// Payload bytes the proxy dropped.
    pub dropped_bytes: u64,
    /// Seek index, ordered by position.
    pub index: Vec<IndexEntry>,
}

impl Trailer {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TRAILER_FIXED_LEN + self.index.len() * INDEX_ENTRY_LEN);
        out.extend_from_slice(&self.event_count.to_be_bytes());
        out.extend_from_slice(&self.duration_us.to_be_bytes());
        out.extend_from_slice(&self.payload_bytes.to_be_bytes());
        out.extend_from_slice(&self.data_chunks.to_be_bytes());
        out.extend_from_slice(&self.dropped_events.to_be_bytes());
        out.extend_from_slice(&self.dropped_bytes.to_be_bytes());
        let count = u32::try_from(self.index.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for e in &self.index {
            out.extend_from_slice(&e.time_us.to_be_bytes());
            out.extend_from_slice(&e.chunk.to_be_bytes());
            out.extend_from_slice(&e.file_offset.to_be_bytes());
            out.extend_from_slice(&e.record_offset.to_be_bytes());
            out.push(u8::from(e.key_frame));
        }
        out
    }

    /// Parses and checks a trailer; `Err` names what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, &'static str> {
        let mut r = ByteReader::new(bytes);
        let short = "trailer is truncated";
        let mut t = Self {
            event_count: r.u64().ok_or(short)?,
            duration_us: r.u64().ok_or(short)?,
            payload_bytes: r.u64().ok_or(short)?,
            data_chunks: r.u32().ok_or(short)?,
            dropped_events: r.u64().ok_or(short)?,
            dropped_bytes: r.u64().ok_or(short)?,
            index: Vec::new(),
        };
        let count = usize::try_from(r.u32().ok_or(short)?).unwrap_or(usize::MAX);
        if count > MAX_INDEX_ENTRIES {
            return Err("seek index has too many entries");
        }
        if r.remaining() != count.saturating_mul(INDEX_ENTRY_LEN) {
            return Err("seek index length does not match its entry count");
        }
        t.index.reserve_exact(count);
        let mut previous: Option<IndexEntry> = None;
        for _ in 0..count {
            let entry = IndexEntry {
                time_us: r.u64().ok_or(short)?,
                chunk: r.u32().ok_or(short)?,
                file_offset: r.u64().ok_or(short)?,
                record_offset: r.u32().ok_or(short)?,
                key_frame: match r.u8().ok_or(short)? {
                    0 => false,
                    1 => true,
                    _ => return Err("bad seek index flag"),
                },
            };
            if entry.chunk >= t.data_chunks || entry.time_us > t.duration_us {
                return Err("seek index entry points outside the recording");
            }
            if let Some(p) = previous {
                let ordered = entry.time_us >= p.time_us
                    && (entry.chunk, entry.record_offset) > (p.chunk, p.record_offset)
                    && (entry.chunk > p.chunk) == (entry.file_offset > p.file_offset)
                    && (entry.chunk != p.chunk || entry.file_offset == p.file_offset);
                if !ordered {
                    return Err("seek index is not in order");
                }
            }
            previous = Some(entry);
            t.index.push(entry);
        }
        Ok(t)
    }
}

/// Header of one record inside a chunk's plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) ty: RecordType,
    /// More fragments of the same event follow in the next record.
    pub(crate) continues: bool,
    /// This record continues an event begun in an earlier record.
    pub(crate) continuation: bool,
    pub(crate) time_us: u64,
    pub(crate) len: u32,
}

impl RecordHeader {
    pub(crate) fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut out = [0u8; RECORD_HEADER_LEN];
        let mut w = ByteWriter::new(&mut out);
        let mut flags = 0;
        if self.continues {
            flags |= RECORD_FLAG_CONTINUES;
        }
        if self.continuation {
            flags |= RECORD_FLAG_CONTINUATION;
        }
        w.put(&[self.ty.code(), flags]);
        w.put(&self.time_us.to_be_bytes());
        w.put(&self.len.to_be_bytes());
        out
    }

    pub(crate) fn parse(r: &mut ByteReader<'_>) -> Result<Self, &'static str> {
        let short = "record header split across chunks";
        let ty = r.u8().ok_or(short)?;
        let flags = r.u8().ok_or(short)?;
        let time_us = r.u64().ok_or(short)?;
        let len = r.u32().ok_or(short)?;
        let ty = RecordType::from_code(ty).ok_or("unknown record type")?;
        if flags & !(RECORD_FLAG_CONTINUES | RECORD_FLAG_CONTINUATION) != 0 {
            return Err("unknown record flags");
        }
        Ok(Self {
            ty,
            continues: flags & RECORD_FLAG_CONTINUES != 0,
            continuation: flags & RECORD_FLAG_CONTINUATION != 0,
            time_us,
            len,
        })
    }
}

/// Builds an [`Event`] from a complete record payload.
pub(crate) fn event_from_payload(ty: RecordType, payload: Vec<u8>) -> Result<Event, &'static str> {
    Ok(match ty {
        RecordType::Output => Event::Output(payload),
        RecordType::Input => Event::Input(payload),
        RecordType::Instructions => Event::Instructions(payload.into()),
        RecordType::KeyFrame => Event::KeyFrame(payload.into()),
        RecordType::Note => Event::Note(payload.into()),
        RecordType::Resize => {
            let mut r = ByteReader::new(&payload);
            let (Some(width), Some(height), 0) = (r.u16(), r.u16(), r.remaining()) else {
                return Err("resize record has the wrong length");
            };
            Event::Resize(Size { width, height })
        }
        RecordType::Gap => {
            let mut r = ByteReader::new(&payload);
            let (Some(events), Some(bytes), 0) = (r.u64(), r.u64(), r.remaining()) else {
                return Err("gap record has the wrong length");
            };
            Event::Gap { events, bytes }
        }
    })
}

/// Reads big-endian fields from a slice without panicking.
#[derive(Debug)]
pub(crate) struct ByteReader<'a> {
    rest: &'a [u8],
    consumed: usize,
}

impl<'a> ByteReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            consumed: 0,
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.rest.split_at_checked(n)?;
        self.rest = tail;
        self.consumed += n;
        Some(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    fn str8(&mut self) -> Option<String> {
        let len = usize::from(self.u8()?);
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn position(&self) -> usize {
        self.consumed
    }
}

/// Writes into a fixed array; the callers size the array for exactly what they put.
struct ByteWriter<'a> {
    rest: &'a mut [u8],
}

impl<'a> ByteWriter<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Self { rest: out }
    }

    fn put(&mut self, bytes: &[u8]) {
        let rest = std::mem::take(&mut self.rest);
        let n = bytes.len().min(rest.len());
        let (head, tail) = rest.split_at_mut(n);
        head.copy_from_slice(bytes.get(..n).unwrap_or_default());
        self.rest = tail;
    }
}

pub(crate) fn write_hex(f: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// First bytes of every recording file.
pub const MAGIC: [u8; 8] = *b"\x89ZTREC\r\n";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 2;
/// Magic, version and body length.
pub const HEADER_PREFIX_LEN: usize = 14;
/// Longest header body accepted. Three 255-byte strings and 16 key wraps of about 100 bytes
/// fit in under 3 KiB.
pub const MAX_HEADER_BODY_LEN: usize = 16 * 1024;
/// Most key wraps in one header.
pub const MAX_KEY_WRAPS: usize = 16;
/// Chunk plaintext size the writer uses unless told otherwise: large enough that the
/// per-chunk overhead (34 bytes) is negligible, small enough that a crash loses little.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: u32 = 1024;
/// Largest chunk size accepted; bounds the reader's chunk buffer.
pub const MAX_CHUNK_SIZE: u32 = 4 * 1024 * 1024;
/// Bytes of header digest repeated in clear in every frame.
pub const HEADER_TAG_LEN: usize = 8;
/// Type, header tag, index, flags, ciphertext length.
pub const FRAME_HEADER_LEN: usize = 1 + HEADER_TAG_LEN + 4 + 1 + 4;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Type, flags, time, fragment length.
pub const RECORD_HEADER_LEN: usize = 1 + 1 + 8 + 4;
/// Largest single event (payload bytes); bounds the reader's reassembly buffer. A key frame
/// of a 4K display as base64 PNG instructions is well under this.
pub const MAX_EVENT_LEN: usize = 16 * 1024 * 1024;
/// Most seek-index entries; at one per second that is three days of activity. Past it the
/// writer stops indexing and readers decode forward from the last entry.
pub const MAX_INDEX_ENTRIES: usize = 1 << 18;
/// Encoded size of one seek-index entry.
pub const INDEX_ENTRY_LEN: usize = 8 + 4 + 8 + 4 + 1;
/// Fixed part of the trailer.
pub const TRAILER_FIXED_LEN: usize = 8 + 8 + 8 + 4 + 8 + 8 + 4;
/// Largest trailer (final chunk plaintext).
pub const MAX_TRAILER_LEN: usize = TRAILER_FIXED_LEN + MAX_INDEX_ENTRIES * INDEX_ENTRY_LEN;
/// Manifest fields covered by the signature.
const MANIFEST_SIGNED_LEN: usize = 1 + HEADER_TAG_LEN + 4 + 32 + 8 + 1;
/// Encoded manifest frame length.
pub const MANIFEST_LEN: usize = MANIFEST_SIGNED_LEN + 64 + 8;
/// Last bytes of a finalised recording.
pub const END_MAGIC: [u8; 8] = *b"ZTRECEND";
/// The writer adds a seek-index entry at the first event after this much time since the
/// previous entry (and at every key frame).
pub const INDEX_INTERVAL: Duration = Duration::from_secs(1);
/// Graphical recordings carry a key frame at least this often while the display changes;
/// the writer reports when one is due (`RecordingWriter::keyframe_due`).
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(5);

const FLAG_INPUT: u8 = 0x01;
const FRAME_CHUNK: u8 = b'C';
const FRAME_MANIFEST: u8 = b'M';
const CHUNK_FLAG_LAST: u8 = 0x01;
const RECORD_FLAG_CONTINUES: u8 = 0x01;
const RECORD_FLAG_CONTINUATION: u8 = 0x02;
const RESIZE_PAYLOAD_LEN: usize = 4;
const GAP_PAYLOAD_LEN: usize = 16;
const WRAP_CONTEXT_LABEL: &[u8] = b"ztrec-wrap-context/1\0";
const MANIFEST_LABEL: &[u8] = b"ztrec-manifest/1\0";

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> HeaderFields {
        HeaderFields {
            recording_id: RecordingId([7; 16]),
            kind: RecordingKind::Typescript,
            includes_input: true,
            start_unix_micros: 1_700_000_000_000_000,
            chunk_size: DEFAULT_CHUNK_SIZE,
            size: Size {
                width: 80,
                height: 24,
            },
            session_id: "s-1".into(),
            resource_id: "r-1".into(),
            protocol: "ssh".into(),
            identity: Some([9; 32]),
        }
    }

    fn wraps() -> Vec<KeyWrap> {
        vec![
            KeyWrap::ResourceSecret {
                salt: [1; 32],
                key_check: [2; 8],
                nonce: [3; 12],
                sealed: [4; 48],
            },
            KeyWrap::X25519 {
                key_id: KeyId([5; 8]),
                enc: [6; 32],
                sealed: [7; 48],
            },
        ]
    }

    #[test]
    fn header_round_trips() {
        let f = fields();
        let (prefix, context) = f.encode_prefix().unwrap();
        let bytes = HeaderFields::encode(&prefix, &wraps()).unwrap();
        let h = Header::parse(&bytes).unwrap();
        assert_eq!(h.recording_id, f.recording_id);
        assert_eq!(h.kind, RecordingKind::Typescript);
        assert!(h.includes_input);
        assert_eq!(h.session_id, "s-1");
        assert_eq!(h.protocol, "ssh");
        assert_eq!(h.identity, Some([9; 32]));
        assert_eq!(h.key_wraps, wraps());
        assert_eq!(h.wrap_context, context);
        assert_eq!(h.encoded_len, bytes.len() as u64);
        assert_eq!(h.digest.0, <[u8; 32]>::from(Sha256::digest(&bytes)));
    }

    #[test]
    fn header_errors_are_specific() {
        let (prefix, _) = fields().encode_prefix().unwrap();
        let bytes = HeaderFields::encode(&prefix, &wraps()).unwrap();
        assert!(matches!(
            Header::parse(b"GIF89a.........."),
            Err(ReadError::NotARecording)
        ));
        // Version 1 (SHA-256 over the chunks) and anything newer are refused by name.
        for version in [1, FORMAT_VERSION + 1] {
            let mut other = bytes.clone();
            other[8..10].copy_from_slice(&version.to_be_bytes());
            assert!(matches!(
                Header::parse(&other),
                Err(ReadError::UnsupportedVersion(v)) if v == version
            ));
        }
        for cut in [0, 5, 13, 20, bytes.len() - 1] {
            assert!(matches!(
                Header::parse(&bytes[..cut]),
                Err(ReadError::TruncatedHeader)
            ));
        }
        let mut huge = bytes;
        huge[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Header::parse(&huge),
            Err(ReadError::MalformedHeader(_))
        ));
    }

    #[test]
    fn header_refuses_bad_fields() {
        let mut f = fields();
        f.session_id = "x".repeat(256);
        assert_eq!(
            f.encode_prefix().unwrap_err(),
            FieldError::TooLong("session id")
        );
        let mut f = fields();
        f.chunk_size = 10;
        assert_eq!(f.encode_prefix().unwrap_err(), FieldError::ChunkSize);
        let (prefix, _) = fields().encode_prefix().unwrap();
        assert_eq!(
            HeaderFields::encode(&prefix, &[]).unwrap_err(),
            FieldError::WrapCount
        );
    }

    #[test]
    fn frame_header_and_manifest_round_trip() {
        let fh = FrameHeader {
            header_tag: [1, 2, 3, 4, 5, 6, 7, 8],
            index: 42,
            last: true,
            ciphertext_len: 1000,
        };
        assert_eq!(FrameHeader::parse(&fh.encode()), Ok(Some(fh)));
        assert_eq!(FrameHeader::parse(&fh.encode()[..10]), Ok(None));
        assert_eq!(FrameHeader::parse(b"X"), Err(FrameError::NotAChunk));
        let mut bad = fh.encode();
        bad[13] = 0x80;
        assert_eq!(FrameHeader::parse(&bad), Err(FrameError::BadFlags));

        let m = Manifest {
            header_tag: [1; 8],
            chunk_count: 3,
            chunks_hash: [2; 32],
            final_offset: 99,
            signature: Some([3; 64]),
        };
        assert_eq!(Manifest::parse(&m.encode()), Some(m.clone()));
        let unsigned = Manifest {
            signature: None,
            ..m
        };
        assert_eq!(Manifest::parse(&unsigned.encode()), Some(unsigned));
        assert_eq!(Manifest::parse(&[0; MANIFEST_LEN]), None);
    }

    #[test]
    fn trailer_round_trips_and_checks_order() {
        let entry = |time_us, chunk, record_offset| IndexEntry {
            time_us,
            chunk,
            file_offset: 100 + u64::from(chunk) * 1000,
            record_offset,
            key_frame: false,
        };
        let t = Trailer {
            event_count: 10,
            duration_us: 5_000_000,
            payload_bytes: 1234,
            data_chunks: 3,
            dropped_events: 1,
            dropped_bytes: 2,
            index: vec![
                entry(0, 0, 0),
                entry(1_000_000, 0, 50),
                entry(3_000_000, 2, 0),
            ],
        };
        assert_eq!(Trailer::parse(&t.encode()), Ok(t.clone()));
        let mut backwards = t.clone();
        backwards.index.swap(0, 1);
        assert!(Trailer::parse(&backwards.encode()).is_err());
        let mut outside = t.clone();
        outside.index.push(entry(4_000_000, 3, 0));
        assert!(Trailer::parse(&outside.encode()).is_err());
        let mut encoded = t.encode();
        encoded.pop();
        assert!(Trailer::parse(&encoded).is_err());
        // An entry count far beyond the data is refused before allocating.
        let mut huge = Trailer::default().encode();
        let n = huge.len();
        huge[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Trailer::parse(&huge).is_err());
    }

    #[test]
    fn record_header_round_trips() {
        let h = RecordHeader {
            ty: RecordType::KeyFrame,
            continues: true,
            continuation: false,
            time_us: 77,
            len: 5,
        };
        let bytes = h.encode();
        assert_eq!(RecordHeader::parse(&mut ByteReader::new(&bytes)), Ok(h));
        assert!(RecordHeader::parse(&mut ByteReader::new(&bytes[..5])).is_err());
        let mut bad = bytes;
        bad[0] = 99;
        assert!(RecordHeader::parse(&mut ByteReader::new(&bad)).is_err());
    }

    #[test]
    fn fixed_payloads_round_trip() {
        for event in [
            Event::Resize(Size {
                width: 132,
                height: 43,
            }),
            Event::Gap {
                events: 3,
                bytes: 4096,
            },
        ] {
            let ty = event.record_type();
            let payload = event.with_payload(<[u8]>::to_vec);
            assert_eq!(payload.len(), event.payload_len());
            assert_eq!(event_from_payload(ty, payload), Ok(event));
        }
        assert!(event_from_payload(RecordType::Resize, vec![1, 2, 3]).is_err());
    }
}
