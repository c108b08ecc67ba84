//! Reading recordings: the header without a key, verification, and events (optionally a
//! time range found through the seek index).
//!
//! The reader treats the file as hostile. It reads frames one at a time into buffers bounded
//! by the header's chunk size (itself at most [`crate::format::MAX_CHUNK_SIZE`]) or
//! [`MAX_TRAILER_LEN`], checks every length before reading, and returns the first defect it
//! finds as a specific [`ReadError`]. Memory stays bounded whatever the file size: one chunk,
//! one event being reassembled, and the events of one chunk waiting to be taken.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use crate::chunk::ChunkOpener;
use crate::decoder::{DecodeError, RecordDecoder};
use crate::error::ReadError;
use crate::format::{
    Event, FRAME_HEADER_LEN, FrameError, FrameHeader, HEADER_PREFIX_LEN, Header, IndexEntry, MAGIC,
    MANIFEST_LEN, MAX_TRAILER_LEN, Manifest, RecordedEvent, RecordingKind, Trailer,
    parse_header_start,
};
use crate::hash::FramesHasher;
use crate::keys::{IdentityPublicKey, KeyId, Unlock, unwrap_recording_key};

/// An open recording.
#[derive(Debug)]
pub struct RecordingReader<R> {
    src: R,
    header: Header,
    file_len: u64,
    opener: Option<ChunkOpener>,
}

impl RecordingReader<File> {
    /// Opens the recording at `path` and reads its header.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self, ReadError> {
        Self::open(File::open(path)?)
    }
}

impl<R: Read + Seek> RecordingReader<R> {
    /// Reads and checks the header. No key is needed.
    pub fn open(mut src: R) -> Result<Self, ReadError> {
        let file_len = src.seek(SeekFrom::End(0))?;
        src.seek(SeekFrom::Start(0))?;
        let mut start = [0u8; HEADER_PREFIX_LEN];
        let n = read_up_to(&mut src, &mut start)?;
        let start = start.get(..n).unwrap_or_default();
        if !MAGIC.starts_with(start.get(..n.min(MAGIC.len())).unwrap_or_default()) {
            return Err(ReadError::NotARecording);
        }
        let body_len = parse_header_start(start)?;
        let mut bytes = Vec::with_capacity(HEADER_PREFIX_LEN + body_len);
        bytes.extend_from_slice(start);
        bytes.resize(HEADER_PREFIX_LEN + body_len, 0);
        let body = bytes.get_mut(HEADER_PREFIX_LEN..).unwrap_or_default();
        if read_up_to(&mut src, body)? != body_len {
            return Err(ReadError::TruncatedHeader);
        }
        let header = Header::parse(&bytes)?;
        Ok(Self {
            src,
            header,
            file_len,
            opener: None,
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Recovers the recording key; needed before reading events or verifying contents.
    ///
    /// A key that opens no wrap is [`ReadError::WrongKey`], unless the first chunk shows that
    /// the header was changed ([`ReadError::HeaderMismatch`]): a changed header also hides the
    /// key check, and "wrong key" would send the reader after the wrong problem.
    pub fn unlock(&mut self, unlock: Unlock<'_>) -> Result<(), ReadError> {
        let key = match unwrap_recording_key(&self.header, unlock) {
            Ok(key) => key,
            Err(ReadError::WrongKey) if self.first_chunk_is_foreign()? => {
                return Err(ReadError::HeaderMismatch);
            }
            Err(error) => return Err(error),
        };
        self.opener = Some(ChunkOpener::new(&key, &self.header.digest));
        Ok(())
    }

    /// Whether the first chunk's frame carries another header's tag (false when there is no
    /// chunk to tell by).
    fn first_chunk_is_foreign(&mut self) -> Result<bool, ReadError> {
        self.src.seek(SeekFrom::Start(self.header.encoded_len))?;
        let mut head = [0u8; FRAME_HEADER_LEN];
        let head_len = read_up_to(&mut self.src, &mut head)?;
        Ok(
            match FrameHeader::parse(head.get(..head_len).unwrap_or_default()) {
                Ok(Some(fh)) => fh.header_tag != self.header.digest.tag(),
                _ => false,
            },
        )
    }

    /// Whether [`Self::unlock`] succeeded.
    pub fn is_unlocked(&self) -> bool {
        self.opener.is_some()
    }

    /// Whether the file ends with a manifest of this recording (a quick structural check for
    /// `info`; [`Self::verify`] is the real one).
    pub fn has_manifest(&mut self) -> Result<bool, ReadError> {
        Ok(self.read_manifest()?.is_some())
    }

    /// Checks the whole recording: every frame's place and header tag, the final chunk, the
    /// manifest's chunk count, offset and hash, and its signature. When unlocked it also
    /// authenticates and decodes every chunk, checks the trailer's totals against the events
    /// and every seek-index entry against the record it names.
    ///
    /// A recording without its final chunk or manifest (a writer that crashed or was killed)
    /// is reported as unfinalised with the number of chunks that verified, unless
    /// `options.require_finalised` asks for [`ReadError::Truncated`] instead.
    pub fn verify(&mut self, options: &VerifyOptions) -> Result<VerifyReport, ReadError> {
        let kind = self.header.kind;
        let expected_trailer = match self.opener {
            Some(_) => self.read_trailer()?,
            None => None,
        };
        let mut entries = expected_trailer
            .as_ref()
            .map(|t| t.index.iter().enumerate().peekable());
        let mut scan = Scanner::new(self.header.encoded_len, true);
        self.src.seek(SeekFrom::Start(scan.pos))?;
        let mut decoder = RecordDecoder::new(kind);
        let mut plain = Vec::new();
        let mut totals = Totals::default();
        let mut trailer = None;
        let mut manifest = None;
        let mut trailing_bytes = 0;
        loop {
            let step = scan.step(
                &mut self.src,
                self.file_len,
                &self.header,
                self.opener.as_ref(),
                &mut plain,
            )?;
            match step {
                Step::Chunk { fh, offset } if !fh.last => {
                    if self.opener.is_none() {
                        continue;
                    }
                    decoder
                        .push_chunk(&plain, None)
                        .map_err(|e| malformed(fh.index, e))?;
                    while let Some(event) = decoder.poll_event() {
                        totals.add(&event);
                    }
                    if let Some(entries) = entries.as_mut() {
                        check_entries(entries, fh.index, offset, decoder.starts())?;
                    }
                }
                Step::Chunk { fh, .. } => {
                    if self.opener.is_some() {
                        let t =
                            Trailer::parse(&plain).map_err(|reason| ReadError::MalformedChunk {
                                index: fh.index,
                                reason,
                            })?;
                        trailer = Some((fh.index, t));
                    }
                }
                Step::Manifest(m) => {
                    manifest = Some(m);
                    break;
                }
                Step::End { trailing_bytes: t } => {
                    trailing_bytes = t;
                    break;
                }
            }
        }
        let data_chunks = scan.final_index.unwrap_or(scan.next_index);
        let duration = decoder.last_time();

        let signer = self.check_signer(options)?;
        let signature = match &manifest {
            Some(m) => self.check_manifest(m, &scan)?,
            None => SignatureStatus::NotChecked,
        };
        if let Some((index, t)) = &trailer {
            let bad = |reason| ReadError::MalformedChunk {
                index: *index,
                reason,
            };
            if t.data_chunks != data_chunks {
                return Err(bad("trailer chunk count differs from the chunks"));
            }
            if decoder.has_partial() {
                return Err(bad("last event is incomplete"));
            }
            if t.event_count != totals.events
                || t.payload_bytes != totals.payload_bytes
                || t.dropped_events != totals.dropped_events
                || t.dropped_bytes != totals.dropped_bytes
                || Duration::from_micros(t.duration_us) != duration
            {
                return Err(bad("trailer totals differ from the events"));
            }
            // Without a manifest (the writer stopped while closing) the index was not read
            // up front and is not checked; the recording is reported as unfinalised anyway.
            if manifest.is_some() {
                match (&expected_trailer, entries.as_mut()) {
                    (Some(expected), Some(rest)) if expected == t => {
                        if let Some((i, _)) = rest.next() {
                            return Err(ReadError::BadIndex { entry: i });
                        }
                    }
                    // The manifest checks above passed, so the trailer read through it is
                    // the one the scan found; anything else means the file changed under us.
                    _ => return Err(ReadError::ManifestMismatch("final chunk")),
                }
            }
        }

        let status = match (&manifest, scan.final_index) {
            (Some(_), _) => RecordingStatus::Finalised,
            (None, Some(_)) => RecordingStatus::NoManifest,
            (None, None) => RecordingStatus::Unfinalised { trailing_bytes },
        };
        let decrypted = self.opener.is_some();
        if options.require_finalised && status != RecordingStatus::Finalised {
            return Err(ReadError::Truncated {
                valid_chunks: data_chunks,
                duration: if decrypted { duration } else { Duration::ZERO },
            });
        }
        Ok(VerifyReport {
            status,
            data_chunks,
            decrypted,
            duration: decrypted.then_some(duration),
            events: decrypted.then_some(totals.events),
            payload_bytes: decrypted.then_some(totals.payload_bytes),
            key_frames: decrypted.then_some(totals.key_frames),
            dropped_events: decrypted.then_some(totals.dropped_events),
            dropped_bytes: decrypted.then_some(totals.dropped_bytes),
            incomplete_last_event: decrypted && decoder.has_partial(),
            index_entries: trailer.map(|(_, t)| t.index.len()),
            signature,
            signer,
        })
    }

    /// Reads events. Needs [`Self::unlock`]. With a start time, a finalised recording is
    /// entered through its seek index, so the chunks before the start are not decrypted;
    /// reading stops at the first event after `range.to`, so the chunks after it are not
    /// decrypted either.
    ///
    /// For typescript recordings the events in `[from, to]` are returned. For graphical
    /// recordings reading starts at the last key frame at or before `from` (or at the
    /// beginning when there is none) and returns everything from there, because the
    /// instructions before `from` are needed to draw the screen as it was at `from`.
    ///
    /// An unfinalised recording yields the events of its complete chunks and then ends, as
    /// [`Events::end`] reports.
    pub fn events(&mut self, range: EventRange) -> Result<Events<'_, R>, ReadError> {
        if self.opener.is_none() {
            return Err(ReadError::Locked);
        }
        let kind = self.header.kind;
        let from_us = duration_us(range.from.unwrap_or_default());
        let mut scan = Scanner::new(self.header.encoded_len, false);
        let mut seek = None;
        if from_us > 0
            && let Some(trailer) = self.read_trailer()?
        {
            let candidate = trailer
                .index
                .iter()
                .enumerate()
                .rev()
                .find(|(_, e)| {
                    e.time_us <= from_us && (kind == RecordingKind::Typescript || e.key_frame)
                })
                .map(|(i, e)| (i, *e));
            if let Some((entry, e)) = candidate {
                scan.pos = e.file_offset;
                scan.next_index = e.chunk;
                seek = Some(SeekPoint {
                    entry,
                    record_offset: usize::try_from(e.record_offset).unwrap_or(usize::MAX),
                });
            }
        }
        self.src.seek(SeekFrom::Start(scan.pos))?;
        Ok(Events {
            reader: self,
            scan,
            decoder: RecordDecoder::new(kind),
            plain: Vec::new(),
            from_us: if kind == RecordingKind::Typescript {
                from_us
            } else {
                0
            },
            to_us: range.to.map(duration_us),
            seek,
            end: None,
            done: false,
        })
    }

    fn check_signer(&self, options: &VerifyOptions) -> Result<Option<KeyId>, ReadError> {
        let header_key = match &self.header.identity {
            Some(bytes) => {
                Some(IdentityPublicKey::from_bytes(bytes).map_err(|_| ReadError::BadSignature)?)
            }
            None => None,
        };
        if let Some(expected) = &options.expected_identity {
            match &header_key {
                None => return Err(ReadError::MissingSignature),
                Some(found) if found != expected => {
                    return Err(ReadError::UnexpectedSigner {
                        expected: expected.fingerprint(),
                        found: found.fingerprint(),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(header_key.map(|k| k.fingerprint()))
    }

    fn check_manifest(&self, m: &Manifest, scan: &Scanner) -> Result<SignatureStatus, ReadError> {
        if m.header_tag != self.header.digest.tag() {
            return Err(ReadError::ManifestMismatch("header"));
        }
        if m.chunk_count != scan.next_index {
            return Err(ReadError::ManifestMismatch("chunk count"));
        }
        if Some(m.final_offset) != scan.final_offset {
            return Err(ReadError::ManifestMismatch("final chunk offset"));
        }
        if scan.hash.as_ref() != Some(&m.chunks_hash) {
            return Err(ReadError::ManifestMismatch("hash over the chunks"));
        }
        match (&self.header.identity, &m.signature) {
            (None, None) => Ok(SignatureStatus::Unsigned),
            (None, Some(_)) => Err(ReadError::BadSignature),
            (Some(_), None) => Err(ReadError::MissingSignature),
            (Some(key), Some(signature)) => {
                let key =
                    IdentityPublicKey::from_bytes(key).map_err(|_| ReadError::BadSignature)?;
                if key.verify(&m.signed_message(&self.header.digest), signature) {
                    Ok(SignatureStatus::Valid)
                } else {
                    Err(ReadError::BadSignature)
                }
            }
        }
    }

    fn read_manifest(&mut self) -> Result<Option<Manifest>, ReadError> {
        let manifest_len = len_u64(MANIFEST_LEN);
        let Some(at) = self.file_len.checked_sub(manifest_len) else {
            return Ok(None);
        };
        if at < self.header.encoded_len {
            return Ok(None);
        }
        self.src.seek(SeekFrom::Start(at))?;
        let mut bytes = [0u8; MANIFEST_LEN];
        self.src.read_exact(&mut bytes)?;
        Ok(Manifest::parse(&bytes).filter(|m| m.header_tag == self.header.digest.tag()))
    }

    /// The trailer of a finalised recording, read through the manifest; `None` when there
    /// is no manifest or anything about it does not check out (verification reports why).
    fn read_trailer(&mut self) -> Result<Option<Trailer>, ReadError> {
        if self.opener.is_none() {
            return Ok(None);
        }
        let Some(m) = self.read_manifest()? else {
            return Ok(None);
        };
        let manifest_at = self.file_len.saturating_sub(len_u64(MANIFEST_LEN));
        let frame_len = manifest_at.saturating_sub(m.final_offset);
        let max_frame = len_u64(FRAME_HEADER_LEN + MAX_TRAILER_LEN + crate::format::TAG_LEN);
        if m.final_offset < self.header.encoded_len || frame_len > max_frame {
            return Ok(None);
        }
        self.src.seek(SeekFrom::Start(m.final_offset))?;
        let mut frame = vec![0u8; usize::try_from(frame_len).unwrap_or(0)];
        self.src.read_exact(&mut frame)?;
        let mut plain = Vec::new();
        let Some(opener) = &self.opener else {
            return Ok(None);
        };
        match opener.open_into(&frame, &mut plain) {
            Ok(fh) if fh.last && fh.index.checked_add(1) == Some(m.chunk_count) => {
                Ok(Trailer::parse(&plain).ok())
            }
            _ => Ok(None),
        }
    }
}

/// What [`RecordingReader::verify`] must insist on.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Fail with [`ReadError::Truncated`] instead of reporting an unfinalised recording.
    pub require_finalised: bool,
    /// Fail unless the recording names (and its manifest is signed by) this identity.
    pub expected_identity: Option<IdentityPublicKey>,
}

/// How far a recording got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RecordingStatus {
    /// Final chunk and manifest present and consistent.
    Finalised,
    /// The final chunk is there but the manifest is missing (the writer stopped while
    /// closing).
    NoManifest,
    /// The recording stops after its last complete chunk (the writer stopped while
    /// recording); `trailing_bytes` of an incomplete frame follow it.
    Unfinalised {
        /// Bytes of an incomplete last frame, ignored.
        trailing_bytes: u64,
    },
}

/// The manifest signature's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureStatus {
    /// Signed by the identity key named in the header, and the signature verifies.
    Valid,
    /// No identity key configured when recording.
    Unsigned,
    /// No manifest to check.
    NotChecked,
}

/// What [`RecordingReader::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Finalised or not.
    pub status: RecordingStatus,
    /// Data chunks that verified (the final chunk not counted).
    pub data_chunks: u32,
    /// Whether the chunks were decrypted and authenticated (a key was given). Without a key
    /// only the structure, the manifest hash and its signature are checked.
    pub decrypted: bool,
    /// Time of the last event (with a key).
    #[serde(with = "optional_secs")]
    pub duration: Option<Duration>,
    /// Events decoded, gap markers included (with a key).
    pub events: Option<u64>,
    /// Payload bytes decoded (with a key).
    pub payload_bytes: Option<u64>,
    /// Key frames (with a key).
    pub key_frames: Option<u64>,
    /// Events the proxy reported dropped (with a key).
    pub dropped_events: Option<u64>,
    /// Payload bytes the proxy reported dropped (with a key).
    pub dropped_bytes: Option<u64>,
    /// The last event was cut off (unfinalised recordings only).
    pub incomplete_last_event: bool,
    /// Seek-index entries (finalised, with a key).
    pub index_entries: Option<usize>,
    /// The manifest signature.
    pub signature: SignatureStatus,
    /// Fingerprint of the identity key named in the header.
    pub signer: Option<KeyId>,
}

mod optional_secs {
    use std::time::Duration;

    #[expect(
        clippy::ref_option,
        reason = "serde's `with` passes the field by reference"
    )]
    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

/// A time range of a recording, relative to its start; `None` means unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventRange {
    /// Start of the range.
    pub from: Option<Duration>,
    /// End of the range (inclusive).
    pub to: Option<Duration>,
}

impl EventRange {
    /// The whole recording.
    pub fn all() -> Self {
        Self::default()
    }
}

/// How the events of a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsEnd {
    /// At the final chunk: the recording is complete.
    Final,
    /// At the end of the range asked for.
    RangeEnd,
    /// At the end of the file before a final chunk: an unfinalised recording.
    Truncated,
}

/// Iterator over a recording's events, from [`RecordingReader::events`].
#[derive(Debug)]
pub struct Events<'a, R> {
    reader: &'a mut RecordingReader<R>,
    scan: Scanner,
    decoder: RecordDecoder,
    plain: Vec<u8>,
    from_us: u64,
    to_us: Option<u64>,
    seek: Option<SeekPoint>,
    end: Option<EventsEnd>,
    done: bool,
}

#[derive(Debug, Clone, Copy)]
struct SeekPoint {
    entry: usize,
    record_offset: usize,
}

impl<R> Events<'_, R> {
    /// How iteration ended; `None` while events remain.
    pub fn end(&self) -> Option<EventsEnd> {
        self.end
    }

    /// The recording's header.
    pub fn header(&self) -> &Header {
        &self.reader.header
    }
}

impl<R: Read + Seek> Iterator for Events<'_, R> {
    type Item = Result<RecordedEvent, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(event) = self.decoder.poll_event() {
                let at = duration_us(event.at);
                if self.to_us.is_some_and(|to| at > to) {
                    self.done = true;
                    self.end = Some(EventsEnd::RangeEnd);
                    return None;
                }
                if at < self.from_us {
                    continue;
                }
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let seek = self.seek.take();
            let reader = &mut *self.reader;
            let step = self.scan.step(
                &mut reader.src,
                reader.file_len,
                &reader.header,
                reader.opener.as_ref(),
                &mut self.plain,
            );
            let result = match (step, seek) {
                (Ok(Step::Chunk { fh, .. }), seek) if !fh.last => self
                    .decoder
                    .push_chunk(&self.plain, seek.map(|s| s.record_offset))
                    .map_err(|e| match (e, seek) {
                        (DecodeError::NoRecordAt, Some(s)) => {
                            ReadError::BadIndex { entry: s.entry }
                        }
                        (e, _) => malformed(fh.index, e),
                    }),
                (Ok(Step::Chunk { .. } | Step::Manifest(_)), None) => {
                    self.done = true;
                    self.end = Some(EventsEnd::Final);
                    Ok(())
                }
                (Ok(Step::End { .. }), None) => {
                    self.done = true;
                    self.end = Some(EventsEnd::Truncated);
                    Ok(())
                }
                (Ok(_), Some(s)) => Err(ReadError::BadIndex { entry: s.entry }),
                (Err(ReadError::Io(e)), _) => Err(ReadError::Io(e)),
                (Err(_), Some(s)) => Err(ReadError::BadIndex { entry: s.entry }),
                (Err(e), None) => Err(e),
            };
            if let Err(e) = result {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

/// Walks frames in order, checking each one's place.
#[derive(Debug)]
struct Scanner {
    pos: u64,
    next_index: u32,
    final_index: Option<u32>,
    final_offset: Option<u64>,
    hasher: Option<FramesHasher>,
    hash: Option<[u8; 32]>,
    frame: Vec<u8>,
}

#[derive(Debug)]
enum Step {
    /// A chunk frame that verified; when unlocked its plaintext is in the caller's buffer.
    Chunk {
        fh: FrameHeader,
        offset: u64,
    },
    Manifest(Manifest),
    /// End of file, possibly inside an incomplete frame.
    End {
        trailing_bytes: u64,
    },
}

impl Scanner {
    fn new(pos: u64, hash: bool) -> Self {
        Self {
            pos,
            next_index: 0,
            final_index: None,
            final_offset: None,
            hasher: hash.then(FramesHasher::new),
            hash: None,
            frame: Vec::new(),
        }
    }

    /// Reads the frame at `self.pos`; the source must be positioned there.
    fn step<R: Read>(
        &mut self,
        src: &mut R,
        file_len: u64,
        header: &Header,
        opener: Option<&ChunkOpener>,
        plain: &mut Vec<u8>,
    ) -> Result<Step, ReadError> {
        let remaining = file_len.saturating_sub(self.pos);
        if remaining == 0 {
            self.finish_hash();
            return Ok(Step::End { trailing_bytes: 0 });
        }
        let offset = self.pos;
        let mut head = [0u8; FRAME_HEADER_LEN];
        let head_len = read_up_to(src, &mut head)?;
        let head = head.get(..head_len).unwrap_or_default();
        let fh = match FrameHeader::parse(head) {
            Ok(Some(fh)) => fh,
            Ok(None) => {
                self.finish_hash();
                return Ok(Step::End {
                    trailing_bytes: remaining,
                });
            }
            Err(FrameError::NotAChunk) => return self.manifest(src, head, remaining, offset),
            Err(FrameError::BadFlags) => return Err(ReadError::MalformedFrame { offset }),
        };
        if fh.header_tag != header.digest.tag() {
            return Err(if self.next_index == 0 {
                ReadError::HeaderMismatch
            } else {
                ReadError::ForeignChunk {
                    index: self.next_index,
                }
            });
        }
        if self.final_index.is_some() {
            return Err(ReadError::DataAfterFinal);
        }
        let ct_len = usize::try_from(fh.ciphertext_len).unwrap_or(usize::MAX);
        if ct_len > header.max_ciphertext_len(fh.last) || ct_len < crate::format::TAG_LEN {
            return Err(ReadError::ChunkTooLarge {
                index: self.next_index,
            });
        }
        let frame_len = FRAME_HEADER_LEN + ct_len;
        if remaining < len_u64(frame_len) {
            self.finish_hash();
            return Ok(Step::End {
                trailing_bytes: remaining,
            });
        }
        self.frame.clear();
        self.frame.extend_from_slice(head);
        self.frame.resize(frame_len, 0);
        src.read_exact(self.frame.get_mut(FRAME_HEADER_LEN..).unwrap_or_default())?;
        if let Some(opener) = opener
            && opener.open_into(&self.frame, plain).is_err()
        {
            return Err(ReadError::TamperedChunk {
                index: self.next_index,
            });
        }
        // Only now, with the claimed index authenticated (when a key is given), is a
        // mismatch a reordering rather than tampering.
        if fh.index < self.next_index {
            return Err(ReadError::DuplicateChunk {
                index: fh.index,
                position: self.next_index,
            });
        }
        if fh.index > self.next_index {
            return Err(ReadError::OutOfOrder {
                expected: self.next_index,
                found: fh.index,
            });
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&self.frame);
        }
        self.pos += len_u64(frame_len);
        self.next_index = self.next_index.saturating_add(1);
        if fh.last {
            self.final_index = Some(fh.index);
            self.final_offset = Some(offset);
        }
        Ok(Step::Chunk { fh, offset })
    }

    fn manifest<R: Read>(
        &mut self,
        src: &mut R,
        head: &[u8],
        remaining: u64,
        offset: u64,
    ) -> Result<Step, ReadError> {
        if self.final_index.is_none() {
            return Err(ReadError::MalformedFrame { offset });
        }
        self.finish_hash();
        if remaining < len_u64(MANIFEST_LEN) {
            return Ok(Step::End {
                trailing_bytes: remaining,
            });
        }
        let mut bytes = [0u8; MANIFEST_LEN];
        let (first, rest) = bytes.split_at_mut(head.len().min(MANIFEST_LEN));
        first.copy_from_slice(head.get(..first.len()).unwrap_or_default());
        src.read_exact(rest)?;
        let manifest = Manifest::parse(&bytes).ok_or(ReadError::MalformedFrame { offset })?;
        if remaining > len_u64(MANIFEST_LEN) {
            return Err(ReadError::DataAfterManifest);
        }
        self.pos += len_u64(MANIFEST_LEN);
        Ok(Step::Manifest(manifest))
    }

    fn finish_hash(&mut self) {
        if let Some(h) = self.hasher.take() {
            self.hash = Some(h.finalize());
        }
    }
}

/// Checks the seek-index entries that fall in chunk `index` against the events that start
/// there.
fn check_entries<'t>(
    entries: &mut std::iter::Peekable<impl Iterator<Item = (usize, &'t IndexEntry)>>,
    index: u32,
    offset: u64,
    starts: &[crate::decoder::RecordStart],
) -> Result<(), ReadError> {
    while let Some((i, e)) = entries.next_if(|(_, e)| e.chunk <= index) {
        let matches = e.chunk == index
            && e.file_offset == offset
            && starts.iter().any(|s| {
                len_u64(s.offset) == u64::from(e.record_offset)
                    && s.time_us == e.time_us
                    && s.key_frame == e.key_frame
            });
        if !matches {
            return Err(ReadError::BadIndex { entry: i });
        }
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Totals {
    events: u64,
    payload_bytes: u64,
    key_frames: u64,
    dropped_events: u64,
    dropped_bytes: u64,
}

impl Totals {
    fn add(&mut self, e: &RecordedEvent) {
        self.events += 1;
        match &e.event {
            Event::Gap { events, bytes } => {
                self.dropped_events = self.dropped_events.saturating_add(*events);
                self.dropped_bytes = self.dropped_bytes.saturating_add(*bytes);
            }
            other => {
                if matches!(other, Event::KeyFrame(_)) {
                    self.key_frames += 1;
                }
                self.payload_bytes += len_u64(other.payload_len());
            }
        }
    }
}

fn malformed(index: u32, e: DecodeError) -> ReadError {
    ReadError::MalformedChunk {
        index,
        reason: match e {
            DecodeError::Malformed(reason) => reason,
            DecodeError::NoRecordAt => "no record at the expected offset",
        },
    }
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn read_up_to<R: Read>(src: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match src.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
