//! The writer's core: turns timestamped events into sealed chunk frames, the trailer and the
//! manifest. It reads no clock and owns no file; the thread in [`crate::writer`] feeds it
//! events with their times and hands it the file to write frames into.

use std::io::{self, Write};
use std::time::Duration;

use crate::chunk::{ChunkSealer, SealError};
use crate::format::{
    Event, FRAME_HEADER_LEN, HeaderDigest, INDEX_INTERVAL, IndexEntry, MAX_EVENT_LEN,
    MAX_INDEX_ENTRIES, Manifest, RECORD_HEADER_LEN, RecordHeader, RecordType, RecordingKind,
    TAG_LEN, Trailer,
};
use crate::hash::FramesHasher;
use crate::keys::{IdentityKey, RecordingKey};

/// Why the encoder refused an event or could not write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum EncodeError {
    #[error("event does not fit the recording kind")]
    WrongKind,
    #[error("input is not recorded")]
    InputNotRecorded,
    #[error("event too large")]
    EventTooLarge,
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Totals of a finished recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordingStats {
    /// Events recorded, gap markers included.
    pub events: u64,
    /// Payload bytes recorded.
    pub payload_bytes: u64,
    /// Data chunks written.
    pub data_chunks: u32,
    /// Time of the last event.
    pub duration: Duration,
    /// Bytes written to the file, header included.
    pub file_bytes: u64,
    /// Events the proxy dropped because the writer fell behind.
    pub dropped_events: u64,
    /// Payload bytes the proxy dropped.
    pub dropped_bytes: u64,
}

pub(crate) struct RecordingEncoder {
    sealer: ChunkSealer,
    digest: HeaderDigest,
    kind: RecordingKind,
    includes_input: bool,
    chunk_size: usize,
    /// [`FRAME_HEADER_LEN`] bytes of room for the frame header, then the plaintext records.
    chunk: Vec<u8>,
    /// File offset where the frame being filled will be written.
    chunk_offset: u64,
    /// Over every frame, for the manifest.
    hasher: FramesHasher,
    index: Vec<IndexEntry>,
    last_index_time: Option<u64>,
    last_time: u64,
    trailer: Trailer,
}

impl RecordingEncoder {
    /// `header_len` is the encoded header's length: the first frame goes right after it.
    pub(crate) fn new(
        key: &RecordingKey,
        digest: HeaderDigest,
        kind: RecordingKind,
        includes_input: bool,
        chunk_size: u32,
        header_len: u64,
    ) -> Self {
        let chunk_size = usize::try_from(chunk_size).unwrap_or(usize::MAX);
        let mut chunk = Vec::with_capacity(FRAME_HEADER_LEN + chunk_size + TAG_LEN);
        chunk.resize(FRAME_HEADER_LEN, 0);
        Self {
            sealer: ChunkSealer::new(key, &digest),
            digest,
            kind,
            includes_input,
            chunk_size,
            chunk,
            chunk_offset: header_len,
            hasher: FramesHasher::new(),
            index: Vec::new(),
            last_index_time: None,
            last_time: 0,
            trailer: Trailer::default(),
        }
    }

    /// Checks whether this recording can take `event`, without recording it.
    pub(crate) fn check(&self, event: &Event) -> Result<(), EncodeError> {
        check_event(self.kind, self.includes_input, event)
    }

    /// Whether events are buffered that no sealed chunk holds yet.
    pub(crate) fn has_buffered(&self) -> bool {
        self.chunk.len() > FRAME_HEADER_LEN
    }

    /// Records `event` at `at_us` microseconds after the start. Times that go backwards are
    /// raised to the previous event's time so the stream stays ordered. Chunks that fill up
    /// are sealed and written to `out` immediately.
    pub(crate) fn handle_event(
        &mut self,
        at_us: u64,
        event: &Event,
        out: &mut impl Write,
    ) -> Result<(), EncodeError> {
        self.check(event)?;
        let at_us = at_us.max(self.last_time);
        let ty = event.record_type();
        event.with_payload(|payload| self.write_record(at_us, ty, payload, out))?;
        self.last_time = at_us;
        self.trailer.event_count += 1;
        if let Event::Gap { events, bytes } = event {
            self.trailer.dropped_events = self.trailer.dropped_events.saturating_add(*events);
            self.trailer.dropped_bytes = self.trailer.dropped_bytes.saturating_add(*bytes);
        } else {
            self.trailer.payload_bytes += u64::try_from(payload_len(event)).unwrap_or(u64::MAX);
        }
        Ok(())
    }

    fn write_record(
        &mut self,
        at_us: u64,
        ty: RecordType,
        payload: &[u8],
        out: &mut impl Write,
    ) -> Result<(), EncodeError> {
        let mut rest = payload;
        let mut first = true;
        loop {
            let used = self.chunk.len() - FRAME_HEADER_LEN;
            let space = self.chunk_size.saturating_sub(used);
            // A record needs its header plus at least one payload byte (or nothing more if
            // the payload is empty); otherwise start a new chunk. Records never straddle
            // chunks, so each chunk parses on its own.
            let needed = RECORD_HEADER_LEN + usize::from(!rest.is_empty());
            if space < needed {
                self.seal_chunk(false, out)?;
                continue;
            }
            if first {
                self.maybe_index(at_us, ty, used);
            }
            let take = rest.len().min(space - RECORD_HEADER_LEN);
            let (now, later) = rest.split_at(take);
            let header = RecordHeader {
                ty,
                continues: !later.is_empty(),
                continuation: !first,
                time_us: at_us,
                // take <= chunk size <= MAX_CHUNK_SIZE, so this never saturates.
                len: u32::try_from(take).unwrap_or(u32::MAX),
            };
            self.chunk.extend_from_slice(&header.encode());
            self.chunk.extend_from_slice(now);
            rest = later;
            first = false;
            if self.chunk.len() - FRAME_HEADER_LEN >= self.chunk_size {
                self.seal_chunk(false, out)?;
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    fn maybe_index(&mut self, at_us: u64, ty: RecordType, record_offset: usize) {
        let key_frame = ty == RecordType::KeyFrame;
        let interval = u64::try_from(INDEX_INTERVAL.as_micros()).unwrap_or(u64::MAX);
        let due = self
            .last_index_time
            .is_none_or(|t| at_us >= t.saturating_add(interval));
        if (key_frame || due) && self.index.len() < MAX_INDEX_ENTRIES {
            self.index.push(IndexEntry {
                time_us: at_us,
                chunk: self.sealer.next_index(),
                file_offset: self.chunk_offset,
                record_offset: u32::try_from(record_offset).unwrap_or(u32::MAX),
                key_frame,
            });
            self.last_index_time = Some(at_us);
        }
    }

    /// Seals whatever is buffered into a (short) chunk and writes it; a no-op when nothing
    /// is buffered. The writer calls this at least once a second.
    pub(crate) fn flush(&mut self, out: &mut impl Write) -> Result<(), EncodeError> {
        if self.has_buffered() {
            self.seal_chunk(false, out)?;
        }
        out.flush()?;
        Ok(())
    }

    fn seal_chunk(&mut self, last: bool, out: &mut impl Write) -> Result<(), EncodeError> {
        self.sealer.seal_in_place(&mut self.chunk, last)?;
        self.hasher.update(&self.chunk);
        out.write_all(&self.chunk)?;
        self.chunk_offset += u64::try_from(self.chunk.len()).unwrap_or(u64::MAX);
        self.chunk.truncate(FRAME_HEADER_LEN);
        Ok(())
    }

    /// Seals the remaining events, the final chunk (trailer with the seek index) and the
    /// manifest, signed when `identity` is given.
    pub(crate) fn finish(
        &mut self,
        identity: Option<&IdentityKey>,
        out: &mut impl Write,
    ) -> Result<RecordingStats, EncodeError> {
        if self.has_buffered() {
            self.seal_chunk(false, out)?;
        }
        let data_chunks = self.sealer.next_index();
        self.trailer.duration_us = self.last_time;
        self.trailer.data_chunks = data_chunks;
        self.trailer.index = std::mem::take(&mut self.index);
        let final_offset = self.chunk_offset;
        self.chunk.truncate(FRAME_HEADER_LEN);
        self.chunk.extend_from_slice(&self.trailer.encode());
        self.seal_chunk(true, out)?;
        let mut manifest = Manifest {
            header_tag: self.digest.tag(),
            chunk_count: self.sealer.next_index(),
            chunks_hash: self.hasher.finalize(),
            final_offset,
            signature: identity.map(|_| [0u8; 64]),
        };
        if let Some(identity) = identity {
            manifest.signature = Some(identity.sign(&manifest.signed_message(&self.digest)));
        }
        let encoded = manifest.encode();
        out.write_all(&encoded)?;
        out.flush()?;
        self.chunk_offset += u64::try_from(encoded.len()).unwrap_or(u64::MAX);
        Ok(RecordingStats {
            events: self.trailer.event_count,
            payload_bytes: self.trailer.payload_bytes,
            data_chunks,
            duration: Duration::from_micros(self.last_time),
            file_bytes: self.chunk_offset,
            dropped_events: self.trailer.dropped_events,
            dropped_bytes: self.trailer.dropped_bytes,
        })
    }
}

fn payload_len(event: &Event) -> usize {
    event.payload_len()
}

/// The rules an event must meet for a recording of `kind`; shared by the encoder and the
/// non-blocking append path, which rejects bad events before queueing them.
pub(crate) fn check_event(
    kind: RecordingKind,
    includes_input: bool,
    event: &Event,
) -> Result<(), EncodeError> {
    if !event.fits(kind) {
        return Err(EncodeError::WrongKind);
    }
    if matches!(event, Event::Input(_)) && !includes_input {
        return Err(EncodeError::InputNotRecorded);
    }
    if event.payload_len() > MAX_EVENT_LEN {
        return Err(EncodeError::EventTooLarge);
    }
    Ok(())
}
