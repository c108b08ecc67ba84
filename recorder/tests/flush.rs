//! The flush interval counts from when an event happened, not from when the writer thread
//! got to it: an event handed over late (a busy caller) is on disk sooner.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers, like the tests themselves, fail by panicking"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use zt_recorder::{Event, RecordingKind, RecordingWriter};

/// Waits until the file at `path` is longer than `than`; returns how long that took.
fn until_longer(path: &std::path::Path, than: u64, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if std::fs::metadata(path).unwrap().len() > than {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

#[test]
fn an_event_handed_over_late_is_flushed_within_the_interval_of_when_it_happened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.ztr");
    let c = config(RecordingKind::Typescript);
    assert_eq!(c.flush_interval, Duration::from_secs(1));
    let writer = RecordingWriter::create(&path, c).unwrap();
    let header = std::fs::metadata(&path).unwrap().len();

    // On time: on disk within the interval, and not at once (the writer batches).
    append(
        &writer,
        writer.time_of(Instant::now()),
        Event::Output(b"on time".to_vec()),
    );
    let on_time = until_longer(&path, header, Duration::from_secs(3)).expect("flushed");
    assert!(on_time <= Duration::from_secs(1), "{on_time:?}");
    assert!(on_time >= Duration::from_millis(500), "{on_time:?}");

    // 700 ms late: what is left of its second, less the flush's own margin.
    let flushed = std::fs::metadata(&path).unwrap().len();
    let happened = Instant::now();
    while happened.elapsed() < Duration::from_millis(700) {
        std::thread::sleep(Duration::from_millis(10));
    }
    append(
        &writer,
        writer.time_of(happened),
        Event::Output(b"late".to_vec()),
    );
    let late = until_longer(&path, flushed, Duration::from_secs(3)).expect("flushed");
    assert!(
        happened.elapsed() <= Duration::from_secs(1),
        "an event 700 ms late reached the disk {late:?} after it was handed over"
    );
    writer.finish().unwrap();
}
