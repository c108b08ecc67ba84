//! Writing and reading back: both kinds, every key, large and many events, seeking, and the
//! writer's failure reporting.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers, like the tests themselves, fail by panicking"
)]

mod common;

use std::io::{self, Cursor, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::*;
use zt_recorder::export::{export_guac, export_typescript};
use zt_recorder::format::MAX_EVENT_LEN;
use zt_recorder::{
    AppendError, CreateError, Event, EventRange, EventsEnd, RecordingKind, RecordingReader,
    RecordingStatus, RecordingWriter, SignatureStatus, Unlock, VerifyOptions, WriterFailure,
    WriterStatus,
};

#[test]
fn typescript_round_trip_with_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ztrec");
    let keys = Keys::new();
    let mut config = config(RecordingKind::Typescript);
    config.recipients = vec![keys.auditor.public_key()];
    config.identity = Some(keys.identity.clone());
    let stats = write(&path, config, &typescript_events());
    assert_eq!(stats.events, typescript_events().len() as u64);

    let (report, events) = read_all(&path);
    let expected: Vec<_> = typescript_events();
    assert_eq!(events.len(), expected.len());
    for (got, (at, event)) in events.iter().zip(&expected) {
        assert_eq!(got.at, *at);
        assert_eq!(&got.event, event);
    }
    assert_eq!(report.status, RecordingStatus::Finalised);
    assert_eq!(report.signature, SignatureStatus::Valid);
    assert_eq!(
        report.signer,
        Some(keys.identity.public_key().fingerprint())
    );
    assert_eq!(report.duration, Some(ms(3_500)));
    assert_eq!(report.events, Some(expected.len() as u64));
    assert!(report.index_entries.unwrap() >= 3, "{report:?}");

    // The auditor's X25519 key opens the same recording.
    let mut r = open(&path);
    r.unlock(Unlock::Recipient(&keys.auditor)).unwrap();
    let via_auditor: Vec<_> = r
        .events(EventRange::all())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(via_auditor, events);

    // The identity the caller expects is checked.
    let mut r = open(&path);
    let report = r
        .verify(&VerifyOptions {
            require_finalised: true,
            expected_identity: Some(keys.identity.public_key()),
        })
        .unwrap();
    assert_eq!(report.signature, SignatureStatus::Valid);
    assert!(!report.decrypted);
}

#[test]
fn recipient_only_recording_cannot_be_read_by_the_writer() {
    // A proxy configured with only auditor public keys writes a recording it cannot open.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ztrec");
    let keys = Keys::new();
    let mut config = config(RecordingKind::Typescript);
    config.resource_secret = None;
    config.recipients = vec![keys.auditor.public_key()];
    write(&path, config, &typescript_events());
    let mut r = open(&path);
    assert!(matches!(
        r.unlock(Unlock::ResourceSecret(&secret())),
        Err(zt_recorder::ReadError::NoResourceWrap)
    ));
    r.unlock(Unlock::Recipient(&keys.auditor)).unwrap();
    assert_eq!(
        r.verify(&VerifyOptions::default()).unwrap().events,
        Some(typescript_events().len() as u64)
    );
}

#[test]
fn graphical_round_trip_with_key_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.ztrec");
    let mut config = config(RecordingKind::Graphical);
    config.chunk_size = 1024;
    write(&path, config, &graphical_events());
    let (report, events) = read_all(&path);
    assert_eq!(report.status, RecordingStatus::Finalised);
    assert_eq!(report.key_frames, Some(2));
    let expected = graphical_events();
    assert_eq!(events.len(), expected.len());
    for (got, (at, event)) in events.iter().zip(&expected) {
        assert_eq!((&got.at, &got.event), (at, event));
    }
}

#[test]
fn large_events_span_chunks_and_oversized_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.ztrec");
    let mut config = config(RecordingKind::Graphical);
    config.chunk_size = 4096;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let writer = RecordingWriter::create(&path, config).unwrap();
    append(
        &writer,
        ms(1),
        Event::Instructions(b"4.sync,1.1;".to_vec().into()),
    );
    append(&writer, ms(2), Event::KeyFrame(big.clone().into()));
    append(&writer, ms(3), Event::Instructions(Vec::new().into()));
    assert_eq!(
        writer.append_at(ms(4), Event::KeyFrame(vec![0; MAX_EVENT_LEN + 1].into())),
        Err(AppendError::EventTooLarge {
            len: MAX_EVENT_LEN + 1
        })
    );
    let stats = writer.finish().unwrap();
    assert!(stats.data_chunks > 700, "{stats:?}");
    let (_, events) = read_all(&path);
    assert_eq!(events.len(), 3);
    assert_eq!(events[1].event, Event::KeyFrame(big.into()));
    assert_eq!(events[2].event, Event::Instructions(Vec::new().into()));
}

/// A cheap running digest so a million events need not be kept.
fn mix(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[test]
fn one_million_small_events() {
    const N: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.ztrec");
    let writer = RecordingWriter::create(&path, config(RecordingKind::Typescript)).unwrap();
    let mut expected = 0xcbf2_9ce4_8422_2325u64;
    for i in 0..N {
        let len = (i % 16) as usize + 1;
        let payload: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
        let at = Duration::from_micros(i * 7);
        expected = mix(expected, &(at.as_micros() as u64).to_be_bytes());
        expected = mix(expected, &payload);
        let event = if i % 10 == 9 {
            Event::Input(payload)
        } else {
            Event::Output(payload)
        };
        append(&writer, at, event);
    }
    let stats = writer.finish().unwrap();
    assert_eq!(stats.events, N);

    let mut r = open_unlocked(&path);
    let report = r.verify(&VerifyOptions::default()).unwrap();
    assert_eq!(report.events, Some(N));
    assert_eq!(report.status, RecordingStatus::Finalised);
    let mut digest = 0xcbf2_9ce4_8422_2325u64;
    let mut count = 0;
    for e in r.events(EventRange::all()).unwrap() {
        let e = e.unwrap();
        digest = mix(digest, &(e.at.as_micros() as u64).to_be_bytes());
        match e.event {
            Event::Output(b) | Event::Input(b) => digest = mix(digest, &b),
            other => panic!("unexpected {other:?}"),
        }
        count += 1;
    }
    assert_eq!(count, N);
    assert_eq!(digest, expected);
}

/// Peak resident memory of this process, from /proc.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

const TWO_GIB_CHILD: &str = "ZT_RECORDER_TWO_GIB_CHILD";

/// Writes and reads back 2 GiB in a child process (so the measurement is not disturbed by
/// other tests in this binary) and asserts that its peak RSS stays far below the size of
/// the recording.
#[test]
fn two_gib_recording_streams_in_bounded_memory() {
    const EVENT: usize = 64 * 1024;
    const EVENTS: u64 = (2u64 << 30) / EVENT as u64;
    if let Ok(path) = std::env::var(TWO_GIB_CHILD) {
        let path = std::path::PathBuf::from(path);
        let writer = RecordingWriter::create(&path, config(RecordingKind::Typescript)).unwrap();
        let mut payload = vec![0u8; EVENT];
        for (i, b) in payload.iter_mut().enumerate() {
            *b = (i % 253) as u8;
        }
        for i in 0..EVENTS {
            payload[..8].copy_from_slice(&i.to_be_bytes());
            append(
                &writer,
                Duration::from_micros(i * 100),
                Event::Output(payload.clone()),
            );
        }
        let stats = writer.finish().unwrap();
        assert!(stats.file_bytes > 2 << 30);
        let after_write = vm_hwm_kib();
        // Before anything reads the file back into the page cache.
        let cached = page_cache_bytes(&path);

        let mut r = open_unlocked(&path);
        let report = r.verify(&VerifyOptions::default()).unwrap();
        assert_eq!(report.events, Some(EVENTS));
        assert_eq!(report.payload_bytes, Some(EVENTS * EVENT as u64));
        let mut n = 0u64;
        for e in r.events(EventRange::all()).unwrap() {
            let Event::Output(bytes) = e.unwrap().event else {
                panic!("not output")
            };
            assert_eq!(bytes.len(), EVENT);
            assert_eq!(bytes[..8], n.to_be_bytes());
            assert_eq!(bytes[EVENT - 1], ((EVENT - 1) % 253) as u8);
            n += 1;
        }
        assert_eq!(n, EVENTS);
        println!(
            "\nVMHWM_KIB after_write={after_write} cached={cached} end={}",
            vm_hwm_kib()
        );
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two-gib.ztrec");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "two_gib_recording_streams_in_bounded_memory",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(TWO_GIB_CHILD, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest prints the test name on the same line, before the child's own output.
    let line = stdout
        .lines()
        .find_map(|l| l.find("VMHWM_KIB").map(|at| &l[at..]))
        .expect("child reported its peak RSS");
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let peak = field("end");
    let cached = field("cached");
    println!("{line}");
    assert!(
        std::fs::metadata(&path).unwrap().len() > 2 << 30,
        "the recording is 2 GiB"
    );
    // Queue (8 MiB), one chunk, one event and the test's own buffers: a small fraction of
    // the 2 GiB that went through.
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB exceeds {PEAK_RSS_LIMIT_KIB} KiB"
    );
    // The writer drops what is on disk from the page cache (nothing reads a recording while
    // it is written), so 2 GiB of recording do not push 2 GiB of other files out.
    assert!(
        cached < PAGE_CACHE_LIMIT,
        "{cached} bytes of the finished recording stay in the page cache"
    );
}

const PEAK_RSS_LIMIT_KIB: u64 = 64 * 1024;
const PAGE_CACHE_LIMIT: u64 = 16 << 20;

/// Bytes of `path` in the page cache, as util-linux's `fincore` reports them.
fn page_cache_bytes(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (util-linux) runs");
    assert!(out.status.success(), "fincore failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("fincore prints a byte count")
}

#[test]
fn range_export_uses_the_index_and_decrypts_only_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.ztrec");
    let mut config = config(RecordingKind::Typescript);
    config.chunk_size = 1024;
    // 60 s of output, one 100-byte line every 100 ms: about 60 KiB, 60 chunks.
    let events: Vec<_> = (0..600u64)
        .map(|i| {
            let line = format!("{i:06} {}\r\n", "x".repeat(90));
            (ms(i * 100), Event::Output(line.into_bytes()))
        })
        .collect();
    write(&path, config, &events);

    // Ruin the first and the last data chunks: a range in the middle must not touch them.
    let mut bytes = std::fs::read(&path).unwrap();
    let f = frames(&bytes);
    let first = f.chunks[0].clone();
    let last_data = f.chunks[f.chunks.len() - 2].clone();
    bytes[first.start + 30] ^= 0xff;
    bytes[last_data.start + 30] ^= 0xff;
    let mut r = RecordingReader::open(Cursor::new(bytes)).unwrap();
    r.unlock(Unlock::ResourceSecret(&secret())).unwrap();

    let range = EventRange {
        from: Some(Duration::from_secs(20)),
        to: Some(Duration::from_secs(30)),
    };
    let got: Vec<_> = r.events(range).unwrap().collect::<Result<_, _>>().unwrap();
    let want: Vec<_> = events
        .iter()
        .filter(|(at, _)| *at >= ms(20_000) && *at <= ms(30_000))
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, (at, e)) in got.iter().zip(want) {
        assert_eq!((&g.at, &g.event), (at, e));
    }

    // The same reader refuses the whole recording at the ruined first chunk.
    let err = r
        .events(EventRange::all())
        .unwrap()
        .find_map(Result::err)
        .unwrap();
    assert!(
        matches!(err, zt_recorder::ReadError::TamperedChunk { index: 0 }),
        "{err}"
    );

    // The typescript exporter times the range from its start.
    let mut data = Vec::new();
    let mut timing = Vec::new();
    let mut ev = r.events(range).unwrap();
    let summary =
        export_typescript(&mut ev, Duration::from_secs(20), &mut data, &mut timing).unwrap();
    assert_eq!(summary.end, Some(EventsEnd::RangeEnd));
    let timing = String::from_utf8(timing).unwrap();
    assert!(timing.starts_with("0.000000 99\n0.100000 99\n"), "{timing}");
}

#[test]
fn graphical_range_export_starts_at_a_key_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.ztrec");
    let mut config = config(RecordingKind::Graphical);
    config.chunk_size = 1024;
    write(&path, config, &graphical_events());
    let mut r = open_unlocked(&path);
    let mut out = Vec::new();
    let mut ev = r
        .events(EventRange {
            from: Some(ms(7_500)),
            to: Some(ms(9_000)),
        })
        .unwrap();
    export_guac(&mut ev, &mut out).unwrap();
    assert_eq!(zt_recorder::export::draws_before_size(&out), None);
    let out = String::from_utf8(out).unwrap();
    // The key frame at 5 s, then the instructions from 5 s to 9 s.
    assert!(out.starts_with("4.size,1.0,4.1024,3.768;"), "{out}");
    assert!(out.contains("4.sync,4.5000;4.rect,1.0,2.50,"), "{out}");
    assert!(out.ends_with("4.sync,4.9000;"), "{out}");
    assert!(!out.contains("4.sync,4.4000;"));
}

#[test]
fn unflushed_events_reach_the_disk_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.ztrec");
    let writer = RecordingWriter::create(&path, config(RecordingKind::Typescript)).unwrap();
    writer.append(Event::Output(b"hello".to_vec())).unwrap();
    std::thread::sleep(Duration::from_millis(1_400));
    // The writer is still open: the file is unfinalised but holds the event.
    let mut r = open_unlocked(&path);
    let report = r.verify(&VerifyOptions::default()).unwrap();
    assert_eq!(
        report.status,
        RecordingStatus::Unfinalised { trailing_bytes: 0 }
    );
    assert_eq!(report.events, Some(1));
    assert_eq!(report.data_chunks, 1);
    writer.finish().unwrap();
}

/// A sink that blocks until released, standing in for a stalled disk.
#[derive(Clone)]
struct StalledDisk {
    gate: Arc<(Mutex<bool>, Condvar)>,
    data: Arc<Mutex<Vec<u8>>>,
}

impl Write for StalledDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (open, cv) = &*self.gate;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        self.data.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn full_queue_never_blocks_and_is_recorded_as_a_gap() {
    let disk = StalledDisk {
        gate: Arc::new((Mutex::new(true), Condvar::new())),
        data: Arc::default(),
    };
    let mut config = config(RecordingKind::Typescript);
    config.queue_events = 8;
    config.chunk_size = 1024;
    let writer = RecordingWriter::with_writer(disk.clone(), config).unwrap();
    // Header written; now the disk stalls.
    *disk.gate.0.lock().unwrap() = false;
    let mut dropped = 0;
    let mut accepted = 0;
    for i in 0..2_000u64 {
        let started = Instant::now();
        let result = writer.append_at(ms(i), Event::Output(vec![b'x'; 200]));
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "append blocked"
        );
        match result {
            Ok(()) => accepted += 1,
            Err(AppendError::QueueFull) => dropped += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(dropped > 1_000, "accepted {accepted}, dropped {dropped}");
    // Whenever a slot frees up, the loss so far is queued as a gap marker; the rest waits.
    let pending = writer.pending_dropped_events();
    assert!(pending > 0 && pending <= dropped);
    assert_eq!(writer.status(), WriterStatus::Recording);

    // The disk recovers; the next event is preceded by a gap marker.
    {
        let (open, cv) = &*disk.gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    std::thread::sleep(Duration::from_millis(100));
    append(&writer, ms(5_000), Event::Output(b"after".to_vec()));
    writer.finish().unwrap();

    let bytes = disk.data.lock().unwrap().clone();
    let mut r = RecordingReader::open(Cursor::new(bytes)).unwrap();
    r.unlock(Unlock::ResourceSecret(&secret())).unwrap();
    let report = r.verify(&VerifyOptions::default()).unwrap();
    assert_eq!(report.dropped_events, Some(dropped));
    assert_eq!(report.dropped_bytes, Some(dropped * 200));
    let events: Vec<_> = r
        .events(EventRange::all())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let n = events.len();
    assert_eq!(
        events[n - 2].event,
        Event::Gap {
            events: pending,
            bytes: pending * 200
        }
    );
    let gaps: u64 = events
        .iter()
        .map(|e| match e.event {
            Event::Gap { events, .. } => events,
            _ => 0,
        })
        .sum();
    assert_eq!(gaps, dropped);
    let outputs = events
        .iter()
        .filter(|e| matches!(e.event, Event::Output(_)))
        .count() as u64;
    assert_eq!(outputs, accepted + 1);
    assert_eq!(events[n - 1].event, Event::Output(b"after".to_vec()));
}

/// Accepts `room` bytes, then fails as a full disk does.
struct SmallDisk {
    room: usize,
    written: Arc<AtomicUsize>,
}

impl Write for SmallDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let used = self.written.load(Ordering::SeqCst);
        if used + buf.len() > self.room {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.written.fetch_add(buf.len(), Ordering::SeqCst);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn full_disk_is_reported_by_callback_status_and_append() {
    let (tx, rx) = mpsc::channel();
    let mut config = config(RecordingKind::Typescript);
    config.chunk_size = 1024;
    config.on_failure = Some(Box::new(move |f| tx.send(f.clone()).unwrap()));
    let disk = SmallDisk {
        room: 8 * 1024,
        written: Arc::default(),
    };
    let writer = RecordingWriter::with_writer(disk, config).unwrap();
    let mut failed = None;
    for i in 0..10_000u64 {
        match writer.append_at(ms(i), Event::Output(vec![b'y'; 100])) {
            Ok(()) | Err(AppendError::QueueFull) => {}
            Err(AppendError::Failed(f)) => {
                failed = Some(f);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    assert_eq!(failed, Some(WriterFailure::DiskFull));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        WriterFailure::DiskFull
    );
    assert!(rx.try_recv().is_err(), "the callback runs once");
    assert_eq!(
        writer.status(),
        WriterStatus::Failed(WriterFailure::DiskFull)
    );
    assert_eq!(
        writer.append(Event::Output(b"z".to_vec())),
        Err(AppendError::Failed(WriterFailure::DiskFull))
    );
    assert_eq!(writer.finish(), Err(WriterFailure::DiskFull));
}

#[test]
fn a_full_device_fails_at_creation() {
    let dev_full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let err =
        RecordingWriter::with_writer(dev_full, config(RecordingKind::Typescript)).unwrap_err();
    assert!(
        matches!(&err, CreateError::Io(e) if e.kind() == io::ErrorKind::StorageFull),
        "{err:?}"
    );
}

#[test]
fn key_frames_are_due_after_five_seconds_of_activity() {
    let writer =
        RecordingWriter::with_writer(io::sink(), config(RecordingKind::Graphical)).unwrap();
    assert!(!writer.keyframe_due_at(ms(10_000)), "no activity yet");
    writer
        .append_at(
            ms(100),
            Event::Instructions(b"4.sync,3.100;".to_vec().into()),
        )
        .unwrap();
    assert!(!writer.keyframe_due_at(ms(4_999)));
    assert!(writer.keyframe_due_at(ms(5_000)));
    writer
        .append_at(
            ms(5_000),
            Event::KeyFrame(b"4.size,1.0,1.1,1.1;".to_vec().into()),
        )
        .unwrap();
    assert!(
        !writer.keyframe_due_at(ms(20_000)),
        "idle since the key frame"
    );
    writer
        .append_at(
            ms(6_000),
            Event::Instructions(b"4.sync,4.6000;".to_vec().into()),
        )
        .unwrap();
    assert!(!writer.keyframe_due_at(ms(9_999)));
    assert!(writer.keyframe_due_at(ms(10_000)));
    writer.finish().unwrap();

    let ts = RecordingWriter::with_writer(io::sink(), config(RecordingKind::Typescript)).unwrap();
    ts.append_at(ms(1), Event::Output(b"x".to_vec())).unwrap();
    assert!(
        !ts.keyframe_due_at(ms(60_000)),
        "typescripts have no key frames"
    );
}

#[test]
fn events_of_the_wrong_kind_are_refused() {
    let g = RecordingWriter::with_writer(io::sink(), config(RecordingKind::Graphical)).unwrap();
    let wrong = AppendError::WrongKind {
        kind: RecordingKind::Graphical,
    };
    assert_eq!(g.append(Event::Output(b"x".to_vec())), Err(wrong.clone()));
    assert_eq!(
        g.append(Event::Gap {
            events: 1,
            bytes: 1
        }),
        Err(wrong)
    );
    let mut c = config(RecordingKind::Typescript);
    c.include_input = false;
    let t = RecordingWriter::with_writer(io::sink(), c).unwrap();
    assert_eq!(
        t.append(Event::Input(b"secret keys".to_vec())),
        Err(AppendError::InputNotRecorded)
    );
    assert_eq!(
        t.append(Event::KeyFrame(b"x".to_vec().into())),
        Err(AppendError::WrongKind {
            kind: RecordingKind::Typescript
        })
    );
}

#[test]
fn creation_checks_its_configuration() {
    let mut c = config(RecordingKind::Typescript);
    c.resource_secret = None;
    assert!(matches!(
        RecordingWriter::with_writer(io::sink(), c),
        Err(CreateError::NoKeyWrap)
    ));
    let mut c = config(RecordingKind::Typescript);
    c.chunk_size = 100;
    assert!(matches!(
        RecordingWriter::with_writer(io::sink(), c),
        Err(CreateError::BadChunkSize)
    ));
    let mut c = config(RecordingKind::Typescript);
    c.session_id = "s".repeat(300);
    assert!(matches!(
        RecordingWriter::with_writer(io::sink(), c),
        Err(CreateError::FieldTooLong("session id"))
    ));
    let mut c = config(RecordingKind::Typescript);
    c.flush_interval = Duration::from_secs(2);
    assert!(matches!(
        RecordingWriter::with_writer(io::sink(), c),
        Err(CreateError::BadFlushInterval)
    ));
    let mut c = config(RecordingKind::Typescript);
    c.recipients = vec![zt_recorder::RecipientPublicKey::from_bytes([0; 32])];
    assert!(matches!(
        RecordingWriter::with_writer(io::sink(), c),
        Err(CreateError::BadRecipient)
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exists");
    std::fs::write(&path, b"keep me").unwrap();
    assert!(matches!(
        RecordingWriter::create(&path, config(RecordingKind::Typescript)),
        Err(CreateError::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

#[test]
fn dropping_the_writer_finalises_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropped.ztrec");
    let writer = RecordingWriter::create(&path, config(RecordingKind::Typescript)).unwrap();
    writer.append(Event::Output(b"bye".to_vec())).unwrap();
    drop(writer);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut r = open_unlocked(&path);
        if let Ok(report) = r.verify(&VerifyOptions::default())
            && report.status == RecordingStatus::Finalised
        {
            assert_eq!(report.events, Some(1));
            break;
        }
        assert!(Instant::now() < deadline, "never finalised");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn recording_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.ztrec");
    write(&path, config(RecordingKind::Typescript), &[]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (report, events) = read_all(&path);
    assert!(events.is_empty());
    assert_eq!(report.status, RecordingStatus::Finalised);
}
