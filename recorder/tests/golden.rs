//! Golden files for every export format (`tests/golden/`), and the fuzz seed corpus.
//!
//! Regenerate after an intended change with `BLESS=1 cargo test -p zt-recorder --test golden`
//! and review the diff like code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers, like the tests themselves, fail by panicking"
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use zt_recorder::export::{
    draws_before_size, export_asciicast, export_guac, export_text, export_typescript,
};
use zt_recorder::{
    EventRange, RecordingKind, RecordingReader, RecordingStatus, ResourceSecret, Unlock,
    VerifyOptions,
};

fn blessing() -> bool {
    std::env::var_os("BLESS").is_some_and(|v| v != "0")
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check_golden(name: &str, actual: &[u8]) {
    let path = golden_dir().join(name);
    if blessing() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing; create it with BLESS=1 cargo test -p zt-recorder --test golden",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} differs from its golden file; if intended, regenerate with \
         BLESS=1 cargo test -p zt-recorder --test golden\n--- golden\n{}\n--- actual\n{}",
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(actual)
    );
}

fn recorded(kind: RecordingKind) -> (tempfile::TempDir, RecordingReader<std::fs::File>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("golden.ztrec");
    let mut c = config(kind);
    c.chunk_size = 1024;
    let events = match kind {
        RecordingKind::Typescript => typescript_events(),
        RecordingKind::Graphical => graphical_events(),
    };
    write(&path, c, &events);
    let reader = open_unlocked(&path);
    (dir, reader)
}

#[test]
fn typescript_golden() {
    let (_dir, mut r) = recorded(RecordingKind::Typescript);
    let (mut data, mut timing) = (Vec::new(), Vec::new());
    let mut events = r.events(EventRange::all()).unwrap();
    export_typescript(&mut events, Duration::ZERO, &mut data, &mut timing).unwrap();
    check_golden("session.typescript", &data);
    check_golden("session.timing", &timing);
}

#[test]
fn typescript_range_golden() {
    let (_dir, mut r) = recorded(RecordingKind::Typescript);
    let (mut data, mut timing) = (Vec::new(), Vec::new());
    let from = ms(1_000);
    let mut events = r
        .events(EventRange {
            from: Some(from),
            to: Some(ms(2_700)),
        })
        .unwrap();
    export_typescript(&mut events, from, &mut data, &mut timing).unwrap();
    check_golden("session-1s-2.7s.typescript", &data);
    check_golden("session-1s-2.7s.timing", &timing);
}

#[test]
fn asciicast_golden() {
    let (_dir, mut r) = recorded(RecordingKind::Typescript);
    let mut out = Vec::new();
    let mut events = r.events(EventRange::all()).unwrap();
    export_asciicast(&mut events, Duration::ZERO, &mut out).unwrap();
    check_golden("session.cast", &out);
}

#[test]
fn text_golden() {
    let (_dir, mut r) = recorded(RecordingKind::Typescript);
    let mut out = Vec::new();
    let mut events = r.events(EventRange::all()).unwrap();
    export_text(&mut events, &mut out).unwrap();
    check_golden("session.txt", &out);
}

#[test]
fn guac_golden() {
    let (_dir, mut r) = recorded(RecordingKind::Graphical);
    let mut out = Vec::new();
    let mut events = r.events(EventRange::all()).unwrap();
    export_guac(&mut events, &mut out).unwrap();
    assert_eq!(draws_before_size(&out), None);
    check_golden("graphical.guac", &out);
}

#[test]
fn guac_range_golden() {
    let (_dir, mut r) = recorded(RecordingKind::Graphical);
    let mut out = Vec::new();
    let mut events = r
        .events(EventRange {
            from: Some(ms(11_000)),
            to: None,
        })
        .unwrap();
    export_guac(&mut events, &mut out).unwrap();
    assert_eq!(draws_before_size(&out), None);
    check_golden("graphical-from-11s.guac", &out);
}

/// Must equal `zt_recorder::fuzzing::FUZZ_RESOURCE_SECRET` (only built under `cfg(fuzzing)`).
const FUZZ_RESOURCE_SECRET: &[u8] = b"zt-recorder fuzzing resource secret";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/recording_open")
}

/// Seeds for the `recording_open` fuzz target: small valid recordings of both kinds written
/// for the fuzzing secret, so mutations get past key unwrapping, plus an unfinalised one.
#[test]
fn fuzz_seed_corpus() {
    let seeds = ["typescript.ztrec", "graphical.ztrec", "unfinalised.ztrec"];
    if blessing() {
        let dir = tempfile::tempdir().unwrap();
        for (name, kind) in [
            ("typescript.ztrec", RecordingKind::Typescript),
            ("graphical.ztrec", RecordingKind::Graphical),
        ] {
            let path = dir.path().join(name);
            let mut c = config(kind);
            c.resource_secret = Some(Arc::new(
                ResourceSecret::new(FUZZ_RESOURCE_SECRET.to_vec()).unwrap(),
            ));
            c.chunk_size = 1024;
            let events = match kind {
                RecordingKind::Typescript => typescript_events(),
                RecordingKind::Graphical => graphical_events(),
            };
            write(&path, c, &events);
            std::fs::create_dir_all(corpus_dir()).unwrap();
            std::fs::copy(&path, corpus_dir().join(name)).unwrap();
        }
        let full = std::fs::read(corpus_dir().join("typescript.ztrec")).unwrap();
        let cut = frames(&full).chunks[1].start + 10;
        std::fs::write(corpus_dir().join("unfinalised.ztrec"), &full[..cut]).unwrap();
        return;
    }
    let secret = ResourceSecret::new(FUZZ_RESOURCE_SECRET.to_vec()).unwrap();
    for name in seeds {
        let path = corpus_dir().join(name);
        let mut r = RecordingReader::open_path(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; regenerate with BLESS=1 cargo test -p zt-recorder --test golden",
                path.display()
            )
        });
        r.unlock(Unlock::ResourceSecret(&secret)).unwrap();
        let report = r.verify(&VerifyOptions::default()).unwrap();
        let finalised = report.status == RecordingStatus::Finalised;
        assert_eq!(finalised, name != "unfinalised.ztrec", "{name}: {report:?}");
    }
}

#[test]
fn exports_are_deterministic() {
    // Guard against accidental nondeterminism: two recordings of the same events export
    // identically even though their keys and ciphertexts differ.
    let (_a, mut ra) = recorded(RecordingKind::Typescript);
    let (_b, mut rb) = recorded(RecordingKind::Typescript);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    export_asciicast(
        &mut ra.events(EventRange::all()).unwrap(),
        Duration::ZERO,
        &mut x,
    )
    .unwrap();
    export_asciicast(
        &mut rb.events(EventRange::all()).unwrap(),
        Duration::ZERO,
        &mut y,
    )
    .unwrap();
    assert_eq!(x, y);
}
