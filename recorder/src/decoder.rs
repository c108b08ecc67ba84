//! The reader's core: turns decrypted chunk plaintexts back into events. No I/O.
//!
//! Records never straddle chunks; an event larger than the room left in a chunk is split
//! into fragments, each a record of its own with the "continues" or "continuation" flag.
//! The decoder reassembles fragments (never more than [`MAX_EVENT_LEN`] bytes) and checks
//! that fragments follow each other, that times never go backwards and that every record
//! type belongs to the recording's kind.

use std::collections::VecDeque;
use std::time::Duration;

use crate::format::{
    ByteReader, MAX_EVENT_LEN, RecordHeader, RecordType, RecordedEvent, RecordingKind,
    event_from_payload,
};

/// Why a chunk's plaintext does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The content is malformed.
    Malformed(&'static str),
    /// No record starts at the offset a seek asked for.
    NoRecordAt,
}

/// Where an event begins: the seek index must point at one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordStart {
    pub(crate) offset: usize,
    pub(crate) time_us: u64,
    pub(crate) key_frame: bool,
}

#[derive(Debug)]
struct Partial {
    ty: RecordType,
    time_us: u64,
    payload: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct RecordDecoder {
    kind: RecordingKind,
    partial: Option<Partial>,
    last_time: u64,
    ready: VecDeque<RecordedEvent>,
    starts: Vec<RecordStart>,
}

impl RecordDecoder {
    pub(crate) fn new(kind: RecordingKind) -> Self {
        Self {
            kind,
            partial: None,
            last_time: 0,
            ready: VecDeque::new(),
            starts: Vec::new(),
        }
    }

    /// Decodes the records of one data chunk. With `seek_to` (the first chunk after a seek),
    /// records before that offset are skipped and a new event must begin exactly there.
    pub(crate) fn push_chunk(
        &mut self,
        plaintext: &[u8],
        seek_to: Option<usize>,
    ) -> Result<(), DecodeError> {
        self.starts.clear();
        let mut r = ByteReader::new(plaintext);
        let mut found_start = seek_to.is_none();
        let start_at = seek_to.unwrap_or(0);
        while r.remaining() > 0 {
            let offset = r.position();
            let header = RecordHeader::parse(&mut r).map_err(DecodeError::Malformed)?;
            let len = usize::try_from(header.len).unwrap_or(usize::MAX);
            let fragment = r
                .take(len)
                .ok_or(DecodeError::Malformed("record longer than its chunk"))?;
            if !found_start {
                if offset < start_at {
                    continue;
                }
                if offset > start_at || header.continuation {
                    return Err(DecodeError::NoRecordAt);
                }
                found_start = true;
            }
            self.handle_record(offset, &header, fragment)?;
        }
        if found_start {
            Ok(())
        } else {
            Err(DecodeError::NoRecordAt)
        }
    }

    fn handle_record(
        &mut self,
        offset: usize,
        header: &RecordHeader,
        fragment: &[u8],
    ) -> Result<(), DecodeError> {
        if !header.ty.allowed_in(self.kind) {
            return Err(DecodeError::Malformed(
                "record type does not belong to this kind",
            ));
        }
        let mut partial = match (self.partial.take(), header.continuation) {
            (None, false) => {
                if header.time_us < self.last_time {
                    return Err(DecodeError::Malformed("event times go backwards"));
                }
                self.last_time = header.time_us;
                self.starts.push(RecordStart {
                    offset,
                    time_us: header.time_us,
                    key_frame: header.ty == RecordType::KeyFrame,
                });
                Partial {
                    ty: header.ty,
                    time_us: header.time_us,
                    payload: Vec::new(),
                }
            }
            (Some(p), true) if p.ty == header.ty && p.time_us == header.time_us => p,
            (Some(_), _) => return Err(DecodeError::Malformed("event fragment missing")),
            (None, true) => return Err(DecodeError::Malformed("fragment without its event")),
        };
        if partial.payload.len() + fragment.len() > MAX_EVENT_LEN {
            return Err(DecodeError::Malformed(
                "event larger than the format allows",
            ));
        }
        partial.payload.extend_from_slice(fragment);
        if header.continues {
            self.partial = Some(partial);
            return Ok(());
        }
        let event =
            event_from_payload(partial.ty, partial.payload).map_err(DecodeError::Malformed)?;
        self.ready.push_back(RecordedEvent {
            at: Duration::from_micros(partial.time_us),
            event,
        });
        Ok(())
    }

    /// The next complete event, in order.
    pub(crate) fn poll_event(&mut self) -> Option<RecordedEvent> {
        self.ready.pop_front()
    }

    /// Events that began in the chunk last pushed.
    pub(crate) fn starts(&self) -> &[RecordStart] {
        &self.starts
    }

    /// Whether an event's fragments are still being collected (at the end of a recording
    /// this is an event cut off by a crash).
    pub(crate) fn has_partial(&self) -> bool {
        self.partial.is_some()
    }

    /// Time of the latest event begun, complete or not.
    pub(crate) fn last_time(&self) -> Duration {
        Duration::from_micros(self.last_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Event, RECORD_HEADER_LEN};

    fn record(ty: RecordType, continues: bool, continuation: bool, t: u64, p: &[u8]) -> Vec<u8> {
        let mut v = RecordHeader {
            ty,
            continues,
            continuation,
            time_us: t,
            len: p.len() as u32,
        }
        .encode()
        .to_vec();
        v.extend_from_slice(p);
        v
    }

    #[test]
    fn reassembles_fragments_across_chunks() {
        let mut d = RecordDecoder::new(RecordingKind::Typescript);
        let mut c1 = record(RecordType::Output, false, false, 1, b"ab");
        c1.extend(record(RecordType::Output, true, false, 2, b"cd"));
        let c2 = record(RecordType::Output, false, true, 2, b"ef");
        d.push_chunk(&c1, None).unwrap();
        assert_eq!(d.poll_event().unwrap().event, Event::Output(b"ab".to_vec()));
        assert!(d.poll_event().is_none());
        assert!(d.has_partial());
        d.push_chunk(&c2, None).unwrap();
        let e = d.poll_event().unwrap();
        assert_eq!(e.event, Event::Output(b"cdef".to_vec()));
        assert_eq!(e.at, Duration::from_micros(2));
        assert!(!d.has_partial());
    }

    #[test]
    fn seeks_to_a_record_boundary_only() {
        let mut chunk = record(RecordType::Output, false, true, 1, b"tail");
        let second = chunk.len();
        chunk.extend(record(RecordType::Output, false, false, 3, b"x"));
        let mut d = RecordDecoder::new(RecordingKind::Typescript);
        d.push_chunk(&chunk, Some(second)).unwrap();
        assert_eq!(d.poll_event().unwrap().event, Event::Output(b"x".to_vec()));
        let mut d = RecordDecoder::new(RecordingKind::Typescript);
        assert_eq!(
            d.push_chunk(&chunk, None),
            Err(DecodeError::Malformed("fragment without its event"))
        );
        let mut d = RecordDecoder::new(RecordingKind::Typescript);
        assert_eq!(d.push_chunk(&chunk, Some(0)), Err(DecodeError::NoRecordAt));
        let mut d = RecordDecoder::new(RecordingKind::Typescript);
        assert_eq!(d.push_chunk(&chunk, Some(3)), Err(DecodeError::NoRecordAt));
    }

    #[test]
    fn refuses_inconsistent_streams() {
        let cases: Vec<(RecordingKind, Vec<u8>)> = vec![
            (
                RecordingKind::Graphical,
                record(RecordType::Output, false, false, 1, b"x"),
            ),
            (RecordingKind::Typescript, {
                let mut v = record(RecordType::Output, false, false, 5, b"x");
                v.extend(record(RecordType::Output, false, false, 4, b"y"));
                v
            }),
            (RecordingKind::Typescript, {
                let mut v = record(RecordType::Output, true, false, 5, b"x");
                v.extend(record(RecordType::Input, false, true, 5, b"y"));
                v
            }),
            (RecordingKind::Typescript, {
                let mut v = record(RecordType::Output, true, false, 5, b"x");
                v.extend(record(RecordType::Output, false, false, 5, b"y"));
                v
            }),
            (
                RecordingKind::Typescript,
                record(RecordType::Resize, false, false, 1, b"xyz"),
            ),
            (
                RecordingKind::Typescript,
                record(RecordType::Output, false, false, 1, b"x")[..RECORD_HEADER_LEN - 1].to_vec(),
            ),
            (RecordingKind::Typescript, {
                let mut v = record(RecordType::Output, false, false, 1, b"x");
                v.pop();
                v
            }),
        ];
        for (i, (kind, chunk)) in cases.into_iter().enumerate() {
            let mut d = RecordDecoder::new(kind);
            assert!(
                matches!(d.push_chunk(&chunk, None), Err(DecodeError::Malformed(_))),
                "case {i}"
            );
        }
    }
}
