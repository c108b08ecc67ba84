//! Error types. Reading errors name the exact defect so that tests, metrics and operators can
//! tell a wrong key from a tampered chunk from a crash.

use std::io;
use std::time::Duration;

use crate::format::{MAX_EVENT_LEN, RecordingKind};
use crate::keys::KeyId;

/// Why a recording (or a part of it) cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The file does not start with the recording magic.
    #[error("not a ztproxy recording")]
    NotARecording,
    /// The format version is not one this build reads.
    #[error(
        "unsupported recording format version {0} (this build reads version {current})",
        current = crate::format::FORMAT_VERSION
    )]
    UnsupportedVersion(u16),
    /// The file ends inside the header.
    #[error("recording is truncated inside its header")]
    TruncatedHeader,
    /// The header does not parse.
    #[error("malformed recording header: {0}")]
    MalformedHeader(&'static str),
    /// The resource secret or private key does not open any key wrap.
    #[error("wrong key: the resource secret does not open this recording")]
    WrongKey,
    /// The recording is not wrapped to the given X25519 key.
    #[error("this recording is not encrypted to X25519 key {0}")]
    NotARecipient(KeyId),
    /// The recording has no key wrap of the kind the given key needs.
    #[error("this recording has no key wrap for a resource secret")]
    NoResourceWrap,
    /// The key matched a key wrap but the wrap does not open: the header was changed.
    #[error("the key wrap for this key does not open: the header was tampered with")]
    HeaderTampered,
    /// A key is needed for this operation and none was given.
    #[error("no key given: decrypting needs the resource secret or an X25519 private key")]
    Locked,
    /// The first chunk does not carry this header's digest: the header was replaced or
    /// changed after writing.
    #[error("the header does not belong to these chunks (header changed or replaced)")]
    HeaderMismatch,
    /// A chunk does not authenticate.
    #[error("chunk {index} is tampered (authentication failed)")]
    TamperedChunk {
        /// Position of the chunk.
        index: u32,
    },
    /// A chunk carries another recording's header digest (spliced in).
    #[error("chunk at position {index} belongs to another recording")]
    ForeignChunk {
        /// Position where it was found.
        index: u32,
    },
    /// A chunk from later in the recording appears early.
    #[error("chunks out of order: expected chunk {expected}, found chunk {found}")]
    OutOfOrder {
        /// Position where it was found.
        expected: u32,
        /// Index the chunk was sealed with.
        found: u32,
    },
    /// A chunk appears a second time.
    #[error("chunk {index} appears twice (found again at position {position})")]
    DuplicateChunk {
        /// Index the chunk was sealed with.
        index: u32,
        /// Position where the copy was found.
        position: u32,
    },
    /// The recording stops before its final chunk (raised only when a complete recording
    /// was required; see `VerifyOptions::require_finalised`).
    #[error(
        "recording is truncated: {valid_chunks} valid chunks, not finalised \
         (recorded duration {duration:?})"
    )]
    Truncated {
        /// Chunks that verified.
        valid_chunks: u32,
        /// Time of the last event in them (zero when not decrypted).
        duration: Duration,
    },
    /// A chunk frame follows the final chunk.
    #[error("data after the final chunk")]
    DataAfterFinal,
    /// Bytes follow the manifest.
    #[error("data after the manifest")]
    DataAfterManifest,
    /// Something that is not a frame where a frame should start.
    #[error("malformed frame at byte offset {offset}")]
    MalformedFrame {
        /// File offset.
        offset: u64,
    },
    /// A chunk declares a length the format does not allow.
    #[error("chunk {index} declares a length the format does not allow")]
    ChunkTooLarge {
        /// Position of the chunk.
        index: u32,
    },
    /// A chunk authenticates but its content does not parse (a writer bug, not an attack).
    #[error("malformed content in chunk {index}: {reason}")]
    MalformedChunk {
        /// Position of the chunk.
        index: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// The manifest does not match the chunks (count, offset or hash).
    #[error("the manifest does not match the chunks: {0}")]
    ManifestMismatch(&'static str),
    /// The manifest signature does not verify.
    #[error("the manifest signature is invalid")]
    BadSignature,
    /// The header names an identity key (or the caller expects one) but the manifest is
    /// unsigned.
    #[error("the manifest is not signed")]
    MissingSignature,
    /// Signed, but not by the identity the caller expected.
    #[error("signed by identity {found}, not by the expected identity {expected}")]
    UnexpectedSigner {
        /// Fingerprint of the expected identity key.
        expected: KeyId,
        /// Fingerprint of the key named in the header.
        found: KeyId,
    },
    /// A seek-index entry does not point where it claims.
    #[error("seek index entry {entry} is inconsistent with the chunks")]
    BadIndex {
        /// Position of the entry.
        entry: usize,
    },
    /// Reading the file failed.
    #[error("reading the recording failed")]
    Io(#[from] io::Error),
}

impl From<ReadError> for io::Error {
    /// For callers that stream a recording through `io::Read`-style plumbing.
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => e,
            other => Self::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Why a recording could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// Neither a resource secret nor a recipient key was configured.
    #[error("a recording needs a resource secret or at least one X25519 recipient")]
    NoKeyWrap,
    /// More recipients than the header holds.
    #[error("too many key wraps (at most 16)")]
    TooManyKeyWraps,
    /// An id or the protocol name is longer than 255 bytes.
    #[error("{0} is longer than 255 bytes")]
    FieldTooLong(&'static str),
    /// The chunk size is outside the allowed range.
    #[error("chunk size must be between 1 KiB and 4 MiB")]
    BadChunkSize,
    /// The flush interval is zero or longer than a second.
    #[error("flush interval must be between 1 ms and 1 s")]
    BadFlushInterval,
    /// A recipient public key is not usable (for example a low-order point).
    #[error("recipient X25519 public key is not usable")]
    BadRecipient,
    /// The OS random number generator failed.
    #[error("no randomness available for the recording key")]
    NoRandomness,
    /// Creating the file or writing the header failed.
    #[error("creating the recording file failed")]
    Io(#[from] io::Error),
}

/// Why the writer thread stopped; reported once through the failure callback and then by
/// every append, [`crate::RecordingWriter::status`] and `finish`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriterFailure {
    /// The disk (or quota) is full.
    #[error("recording disk is full")]
    DiskFull,
    /// Writing or syncing the file failed.
    #[error("writing the recording failed: {0}")]
    Io(io::ErrorKind),
    /// The recording reached the largest number of chunks the format can count.
    #[error("recording reached the chunk limit")]
    ChunkLimit,
    /// The writer thread ended without reporting why.
    #[error("the recording writer thread died")]
    WriterGone,
}

impl From<io::Error> for WriterFailure {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Self::DiskFull,
            kind => Self::Io(kind),
        }
    }
}

/// Why an event was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The writer's queue is full: the disk is slower than the session. With
    /// `RecordingWriter::append` the event is dropped and a gap marker is recorded before
    /// the next event that fits.
    #[error("recording queue is full; event dropped")]
    QueueFull,
    /// The writer has failed; nothing more will be recorded.
    #[error("recording failed")]
    Failed(#[source] WriterFailure),
    /// The event does not belong in this kind of recording.
    #[error("a {kind} recording cannot hold this event")]
    WrongKind {
        /// The recording's kind.
        kind: RecordingKind,
    },
    /// Input was appended to a recording that does not record input.
    #[error("this recording does not record input")]
    InputNotRecorded,
    /// The event is larger than [`MAX_EVENT_LEN`].
    #[error("event of {len} bytes exceeds the {MAX_EVENT_LEN}-byte limit")]
    EventTooLarge {
        /// Payload length.
        len: usize,
    },
}

/// Why `try_append` did not queue an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryAppendError {
    /// The queue is full; the event is handed back and nothing is recorded as lost.
    #[error("recording queue is full")]
    Full(crate::format::Event),
    /// Any other reason, as for `append`.
    #[error(transparent)]
    Rejected(#[from] AppendError),
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The recording could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The format does not apply to this kind of recording.
    #[error("{format} export needs a {needs} recording, this one is {kind}")]
    WrongKind {
        /// Export format name.
        format: &'static str,
        /// Kind the format needs.
        needs: RecordingKind,
        /// Kind of the recording.
        kind: RecordingKind,
    },
    /// Writing the output failed.
    #[error("writing the export failed")]
    Io(#[source] io::Error),
}

/// Why a key or key file is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The resource secret is too short or too long.
    #[error("resource secret must be 16 to 1024 bytes")]
    BadSecretLength,
    /// The text is not base64.
    #[error("key material is not valid base64")]
    NotBase64,
    /// The key file is not of the expected kind or is malformed.
    #[error("not a {expected} key file")]
    BadKeyFile {
        /// The kind of key file expected.
        expected: &'static str,
    },
    /// The public key is not a valid point.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// The OS random number generator failed.
    #[error("no randomness available")]
    NoRandomness,
}
