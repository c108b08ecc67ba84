//! Fuzz entry points (`recorder/fuzz`); not part of the API.

use std::io::{Cursor, sink};

use crate::decoder::RecordDecoder;
use crate::export;
use crate::format::{RecordingKind, Trailer};
use crate::keys::{ResourceSecret, Unlock};
use crate::reader::{EventRange, RecordingReader, VerifyOptions};

/// The resource secret of the seed corpus (`recorder/fuzz/corpus/recording_open`), so that
/// mutated seeds get past unwrapping.
pub const FUZZ_RESOURCE_SECRET: &[u8] = b"zt-recorder fuzzing resource secret";

/// Arbitrary bytes as a recording file: `info`, `verify` with and without a key, and every
/// export must end in a result, never a panic, never unbounded allocation. The same bytes are
/// also fed to the parsers that normally only see authenticated plaintext (trailer, records),
/// which the fuzzer cannot reach through the encryption.
pub fn recording_open(data: &[u8]) {
    if let Ok(mut reader) = RecordingReader::open(Cursor::new(data)) {
        let _ = reader.has_manifest();
        let _ = reader.verify(&VerifyOptions::default());
        let Ok(secret) = ResourceSecret::new(FUZZ_RESOURCE_SECRET.to_vec()) else {
            return;
        };
        if reader.unlock(Unlock::ResourceSecret(&secret)).is_ok() {
            let _ = reader.verify(&VerifyOptions::default());
            let kind = reader.header().kind;
            for range in [
                EventRange::all(),
                EventRange {
                    from: Some(std::time::Duration::from_millis(1500)),
                    to: Some(std::time::Duration::from_secs(3)),
                },
            ] {
                let from = range.from.unwrap_or_default();
                let Ok(mut events) = reader.events(range) else {
                    continue;
                };
                let _ = match kind {
                    RecordingKind::Typescript => {
                        export::export_asciicast(&mut events, from, &mut sink())
                    }
                    RecordingKind::Graphical => export::export_guac(&mut events, &mut sink()),
                };
            }
            if let Ok(mut events) = reader.events(EventRange::all()) {
                let _ = export::export_typescript(
                    &mut events,
                    std::time::Duration::ZERO,
                    &mut sink(),
                    &mut sink(),
                );
            }
            if let Ok(mut events) = reader.events(EventRange::all()) {
                let _ = export::export_text(&mut events, &mut sink());
            }
        }
    }
    if let Ok(trailer) = Trailer::parse(data) {
        assert_eq!(Trailer::parse(&trailer.encode()), Ok(trailer));
    }
    for kind in [RecordingKind::Typescript, RecordingKind::Graphical] {
        let mut decoder = RecordDecoder::new(kind);
        for piece in data.chunks(PLAINTEXT_PIECE) {
            if decoder.push_chunk(piece, None).is_err() {
                break;
            }
            while decoder.poll_event().is_some() {}
        }
    }
}

/// Splits fuzz input into chunk-sized plaintexts for the record decoder.
const PLAINTEXT_PIECE: usize = 512;
