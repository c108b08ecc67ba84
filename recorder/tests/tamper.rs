//! One test per attack on a recording file, each asserting its specific error; and hostile
//! byte sequences that must end in an error, never a panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers, like the tests themselves, fail by panicking"
)]

mod common;

use std::io::Cursor;
use std::sync::Arc;

use common::*;
use zt_recorder::format::{MANIFEST_LEN, MAX_CHUNK_SIZE};
use zt_recorder::{
    Event, EventRange, IdentityKey, ReadError, RecipientSecretKey, RecordingKind, RecordingReader,
    RecordingStatus, ResourceSecret, Unlock, VerifyOptions, VerifyReport,
};

/// A signed typescript recording with about a dozen small chunks.
fn recording(identity: &Arc<IdentityKey>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ztrec");
    let mut c = config(RecordingKind::Typescript);
    c.chunk_size = 1024;
    c.identity = Some(identity.clone());
    let events: Vec<_> = (0..100u64)
        .map(|i| {
            (
                ms(i * 10),
                Event::Output(format!("{i:04}{}", "-".repeat(100)).into_bytes()),
            )
        })
        .collect();
    write(&path, c, &events);
    std::fs::read(path).unwrap()
}

fn signed() -> (Vec<u8>, Arc<IdentityKey>) {
    let identity = Arc::new(IdentityKey::generate().unwrap());
    (recording(&identity), identity)
}

fn verify_with(bytes: Vec<u8>, options: &VerifyOptions) -> Result<VerifyReport, ReadError> {
    let mut r = RecordingReader::open(Cursor::new(bytes))?;
    r.unlock(Unlock::ResourceSecret(&secret()))?;
    r.verify(options)
}

fn verify(bytes: Vec<u8>) -> Result<VerifyReport, ReadError> {
    verify_with(bytes, &VerifyOptions::default())
}

fn strict(bytes: Vec<u8>) -> Result<VerifyReport, ReadError> {
    verify_with(
        bytes,
        &VerifyOptions {
            require_finalised: true,
            expected_identity: None,
        },
    )
}

fn splice(bytes: &[u8], parts: &[std::ops::Range<usize>]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|r| bytes[r.clone()].to_vec())
        .collect()
}

#[test]
fn intact_recording_verifies() {
    let (bytes, _) = signed();
    let f = frames(&bytes);
    assert!(f.chunks.len() >= 12, "{}", f.chunks.len());
    let report = strict(bytes).unwrap();
    assert_eq!(report.status, RecordingStatus::Finalised);
    assert_eq!(report.events, Some(100));
}

#[test]
fn flipped_ciphertext_bit_is_a_tampered_chunk() {
    let (mut bytes, _) = signed();
    let f = frames(&bytes);
    bytes[f.chunks[3].start + 40] ^= 0x04;
    assert!(matches!(
        verify(bytes),
        Err(ReadError::TamperedChunk { index: 3 })
    ));
}

#[test]
fn flipped_tag_and_final_flag_are_tampered_chunks() {
    let (bytes, _) = signed();
    let f = frames(&bytes);
    let mut tag = bytes.clone();
    tag[f.chunks[5].end - 1] ^= 0x80;
    assert!(matches!(
        verify(tag),
        Err(ReadError::TamperedChunk { index: 5 })
    ));
    // Marking a middle chunk final (to hide what follows) breaks its authentication.
    let mut last = bytes.clone();
    last[f.chunks[2].start + 13] = 1;
    assert!(matches!(
        verify(last),
        Err(ReadError::TamperedChunk { index: 2 })
    ));
    // Un-marking the final chunk likewise.
    let n = f.chunks.len() - 1;
    let mut unfinal = bytes;
    unfinal[f.chunks[n].start + 13] = 0;
    assert!(matches!(
        verify(unfinal),
        Err(ReadError::TamperedChunk { index }) if index as usize == n
    ));
}

#[test]
fn truncation_at_a_chunk_boundary_is_reported() {
    let (bytes, _) = signed();
    let f = frames(&bytes);
    let cut = bytes[..f.chunks[6].start].to_vec();
    let report = verify(cut.clone()).unwrap();
    assert_eq!(
        report.status,
        RecordingStatus::Unfinalised { trailing_bytes: 0 }
    );
    assert_eq!(report.data_chunks, 6);
    assert_eq!(report.signature, zt_recorder::SignatureStatus::NotChecked);
    assert!(matches!(
        strict(cut),
        Err(ReadError::Truncated { valid_chunks: 6, duration }) if duration > ms(0)
    ));
}

#[test]
fn truncation_inside_a_chunk_is_reported() {
    let (bytes, _) = signed();
    let f = frames(&bytes);
    let cut = bytes[..f.chunks[6].start + 100].to_vec();
    let report = verify(cut.clone()).unwrap();
    assert_eq!(
        report.status,
        RecordingStatus::Unfinalised {
            trailing_bytes: 100
        }
    );
    assert_eq!(report.data_chunks, 6);
    assert!(matches!(
        strict(cut),
        Err(ReadError::Truncated {
            valid_chunks: 6,
            ..
        })
    ));
}

#[test]
fn missing_manifest_is_reported() {
    let (bytes, _) = signed();
    let f = frames(&bytes);
    let manifest = f.manifest.clone().unwrap();
    for cut in [manifest.start, manifest.start + 60] {
        let report = verify(bytes[..cut].to_vec()).unwrap();
        assert_eq!(report.status, RecordingStatus::NoManifest);
        assert!(matches!(
            strict(bytes[..cut].to_vec()),
            Err(ReadError::Truncated { .. })
        ));
    }
    // The final chunk removed, the manifest kept: a manifest where a chunk should be.
    let n = f.chunks.len() - 1;
    let spliced = splice(&bytes, &[0..f.chunks[n].start, manifest]);
    assert!(matches!(
        verify(spliced),
        Err(ReadError::MalformedFrame { .. })
    ));
}

#[test]
fn reordered_chunks_are_detected() {
    let (bytes, _) = signed();
    let f = frames(&bytes);
    let c = &f.chunks;
    let swapped = splice(
        &bytes,
        &[
            0..c[2].start,
            c[3].clone(),
            c[2].clone(),
            c[4].start..bytes.len(),
        ],
    );
    assert!(matches!(
        verify(swapped),
        Err(ReadError::OutOfOrder {
            expected: 2,
            found: 3
        })
    ));
}

#[test]
fn duplicated_chunk_is_detected() {
    let (bytes, _) = signed();
    let f = frames(&bytes);
    let c = &f.chunks;
    let doubled = splice(
        &bytes,
        &[0..c[3].end, c[3].clone(), c[4].start..bytes.len()],
    );
    assert!(matches!(
        verify(doubled),
        Err(ReadError::DuplicateChunk {
            index: 3,
            position: 4
        })
    ));
}

#[test]
fn chunk_spliced_from_another_recording_is_foreign() {
    let (bytes, identity) = signed();
    let other = recording(&identity);
    let f = frames(&bytes);
    let g = frames(&other);
    // Same key material, same index, same position: only the header binding differs.
    let mut spliced = bytes[..f.chunks[4].start].to_vec();
    spliced.extend_from_slice(&other[g.chunks[4].clone()]);
    spliced.extend_from_slice(&bytes[f.chunks[5].start..]);
    assert!(matches!(
        verify(spliced.clone()),
        Err(ReadError::ForeignChunk { index: 4 })
    ));
    // With the clear header tag rewritten to match, authentication still fails.
    let at = f.chunks[4].start;
    spliced[at + 1..at + 9].copy_from_slice(&bytes[at + 1..at + 9]);
    assert!(matches!(
        verify(spliced),
        Err(ReadError::TamperedChunk { index: 4 })
    ));
}

#[test]
fn data_after_the_end_is_detected() {
    let (bytes, _) = signed();
    let f = frames(&bytes);
    let manifest = f.manifest.clone().unwrap();
    let n = f.chunks.len() - 1;
    let after_final = splice(&bytes, &[0..f.chunks[n].end, f.chunks[1].clone(), manifest]);
    assert!(matches!(
        verify(after_final),
        Err(ReadError::DataAfterFinal)
    ));
    let mut after_manifest = bytes;
    after_manifest.extend_from_slice(b"appended");
    assert!(matches!(
        verify(after_manifest),
        Err(ReadError::DataAfterManifest)
    ));
}

#[test]
fn changed_header_is_detected() {
    let (bytes, _) = signed();
    // The session id starts after 14 + 16 + 1 + 1 + 8 + 4 + 2 + 2 = 48 bytes and its length.
    let mut changed = bytes;
    assert_eq!(&changed[49..56], b"session");
    changed[49] = b'S';
    // The key wrap binds the header fields: the right secret no longer opens it.
    let mut r = RecordingReader::open(Cursor::new(changed.clone())).unwrap();
    assert!(matches!(
        r.unlock(Unlock::ResourceSecret(&secret())),
        Err(ReadError::HeaderTampered)
    ));
    // Without a key, the chunks do not match the header digest.
    let mut r = RecordingReader::open(Cursor::new(changed)).unwrap();
    assert!(matches!(
        r.verify(&VerifyOptions::default()),
        Err(ReadError::HeaderMismatch)
    ));
}

#[test]
fn manifest_tampering_is_detected() {
    let (bytes, identity) = signed();
    let m = frames(&bytes).manifest.unwrap();
    let mut hash = bytes.clone();
    hash[m.start + 20] ^= 1;
    assert!(matches!(verify(hash), Err(ReadError::ManifestMismatch(_))));
    let mut signature = bytes.clone();
    signature[m.start + 60] ^= 1;
    assert!(matches!(verify(signature), Err(ReadError::BadSignature)));
    // Stripping the signature (flag and bytes) is not a way to make it "unsigned".
    let mut stripped = bytes.clone();
    stripped[m.start + 53] = 0;
    stripped[m.start + 54..m.start + 118].fill(0);
    assert!(matches!(verify(stripped), Err(ReadError::MissingSignature)));
    // The caller's expected identity is enforced.
    let other = IdentityKey::generate().unwrap();
    assert!(matches!(
        verify_with(
            bytes,
            &VerifyOptions {
                require_finalised: true,
                expected_identity: Some(other.public_key()),
            }
        ),
        Err(ReadError::UnexpectedSigner { expected, found })
            if expected == other.public_key().fingerprint()
                && found == identity.public_key().fingerprint()
    ));
    assert_eq!(m.len(), MANIFEST_LEN);
}

#[test]
fn wrong_keys_fail_cleanly() {
    let (bytes, _) = signed();
    let mut r = RecordingReader::open(Cursor::new(bytes)).unwrap();
    let wrong = ResourceSecret::new(b"not the resource secret at all".to_vec()).unwrap();
    assert!(matches!(
        r.unlock(Unlock::ResourceSecret(&wrong)),
        Err(ReadError::WrongKey)
    ));
    let stranger = RecipientSecretKey::generate().unwrap();
    assert!(matches!(
        r.unlock(Unlock::Recipient(&stranger)),
        Err(ReadError::NotARecipient(id)) if id == stranger.public_key().key_id()
    ));
    assert!(matches!(
        r.events(EventRange::all()).map(|_| ()),
        Err(ReadError::Locked)
    ));
}

#[test]
fn other_files_and_versions_are_refused() {
    let (bytes, _) = signed();
    let open = |b: Vec<u8>| RecordingReader::open(Cursor::new(b)).map(|_| ());
    assert!(matches!(
        open(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec()),
        Err(ReadError::NotARecording)
    ));
    assert!(matches!(
        open(b"ZT".to_vec()),
        Err(ReadError::NotARecording)
    ));
    assert!(matches!(open(Vec::new()), Err(ReadError::TruncatedHeader)));
    assert!(matches!(
        open(bytes[..5].to_vec()),
        Err(ReadError::TruncatedHeader)
    ));
    // Version 1 (SHA-256 over the chunks) and versions from the future.
    for version in [1u16, 3] {
        let mut other = bytes.clone();
        other[8..10].copy_from_slice(&version.to_be_bytes());
        assert!(matches!(
            open(other),
            Err(ReadError::UnsupportedVersion(v)) if v == version
        ));
    }
    let mut huge_header = bytes.clone();
    huge_header[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        open(huge_header),
        Err(ReadError::MalformedHeader(_))
    ));
    // A chunk that claims an enormous length is refused before anything is allocated.
    let f = frames(&bytes);
    let mut huge_chunk = bytes.clone();
    huge_chunk[f.chunks[1].start + 14..f.chunks[1].start + 18]
        .copy_from_slice(&(MAX_CHUNK_SIZE * 512).to_be_bytes());
    assert!(matches!(
        verify(huge_chunk),
        Err(ReadError::ChunkTooLarge { index: 1 })
    ));
    // A frame that is neither a chunk nor a manifest.
    let mut junk = bytes;
    junk[f.chunks[1].start] = b'Q';
    assert!(matches!(
        verify(junk),
        Err(ReadError::MalformedFrame { offset }) if offset == f.chunks[1].start as u64
    ));
}

/// Every prefix of a recording (what a crash leaves) either verifies as unfinalised or, if
/// the header itself is cut, is reported as truncated; nothing else.
#[test]
fn every_prefix_is_a_clean_result() {
    let (bytes, _) = signed();
    let f = frames(&bytes);
    let step = 7;
    for len in (0..bytes.len()).step_by(step).chain([bytes.len() - 1]) {
        let prefix = bytes[..len].to_vec();
        match verify(prefix) {
            Ok(report) => {
                assert_ne!(report.status, RecordingStatus::Finalised, "prefix {len}");
                let complete = f.chunks.iter().filter(|c| c.end <= len).count();
                let data = complete.min(f.chunks.len() - 1);
                assert_eq!(report.data_chunks as usize, data, "prefix {len}");
            }
            Err(ReadError::TruncatedHeader) => assert!(len < f.header_len, "prefix {len}"),
            Err(e) => panic!("prefix {len}: {e}"),
        }
    }
}

/// Random bytes and random corruptions never panic, and every error is one of the typed
/// ones (the fuzz target does this at scale).
#[test]
fn hostile_bytes_never_panic() {
    let (bytes, _) = signed();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let mut mutated = bytes.clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() % mutated.len() as u64) as usize;
            mutated[at] = next() as u8;
        }
        let _ = verify(mutated.clone());
        if let Ok(mut r) = RecordingReader::open(Cursor::new(mutated))
            && r.unlock(Unlock::ResourceSecret(&secret())).is_ok()
            && let Ok(events) = r.events(EventRange::all())
        {
            for e in events {
                if e.is_err() {
                    break;
                }
            }
        }
    }
    for len in [0usize, 1, 13, 14, 100, 5000] {
        let garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        assert!(verify(garbage).is_err());
    }
}

#[test]
fn no_flipped_header_bit_is_reported_as_a_wrong_key() {
    let (bytes, _) = signed();
    let header_len = usize::try_from(
        RecordingReader::open(Cursor::new(bytes.clone()))
            .unwrap()
            .header()
            .encoded_len,
    )
    .unwrap();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for bit in 0..header_len * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let outcome = RecordingReader::open(Cursor::new(flipped)).and_then(|mut r| {
            r.unlock(Unlock::ResourceSecret(&secret()))?;
            r.verify(&VerifyOptions::default()).map(|_| ())
        });
        let name = match &outcome {
            Ok(()) => "verified".to_owned(),
            Err(e) => format!("{e:?}")
                .split(['(', ' ', '{'])
                .next()
                .unwrap()
                .to_owned(),
        };
        assert!(
            !matches!(outcome, Err(ReadError::WrongKey)),
            "flipping header bit {bit} (byte {}) is reported as a wrong key",
            bit / 8
        );
        *outcomes.entry(name).or_default() += 1;
    }
    // Every flip is noticed (a header without its tag's bytes verifying is impossible).
    assert!(!outcomes.contains_key("verified"), "{outcomes:?}");
}
