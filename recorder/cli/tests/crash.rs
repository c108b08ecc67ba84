//! Crash safety: a child process writing a recording is killed with SIGKILL at random points;
//! every file it leaves must verify its valid prefix and export.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers, like the tests themselves, fail by panicking"
)]

mod bin;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bin::*;
use common::*;
use zt_recorder::{Event, RecordingKind, RecordingStatus, RecordingWriter, VerifyOptions};

const CHILD: &str = "ZT_RECORDER_CRASH_CHILD";
const RUNS: usize = 24;
const KILLED_WHILE_RECORDING: usize = 20;
/// How long the child records before finalising.
const WRITE_FOR: Duration = Duration::from_millis(900);

/// The deterministic output the child writes, event by event.
fn line(i: u64) -> Vec<u8> {
    format!(
        "event {i:07}: {}\r\n",
        "abcdefghij".repeat((i % 7) as usize)
    )
    .into_bytes()
}

fn child(path: &str) {
    let mut c = config(RecordingKind::Typescript);
    c.chunk_size = 2048;
    c.flush_interval = Duration::from_millis(100);
    let writer = RecordingWriter::create(path, c).unwrap();
    println!("READY");
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < WRITE_FOR {
        append(
            &writer,
            Duration::from_micros(i * 250),
            Event::Output(line(i)),
        );
        i += 1;
        if i.is_multiple_of(64) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    writer.finish().unwrap();
    println!("DONE {i}");
}

#[test]
fn sigkill_at_random_points_leaves_verifiable_prefixes() {
    if let Ok(path) = std::env::var(CHILD) {
        child(&path);
        return;
    }
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    println!("crash test seed {seed}");
    let mut state = seed;
    let mut random = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write_secret_file(dir.path());
    let secret_arg = secret_file.to_str().unwrap();
    let (mut finalised, mut unfinalised) = (0, 0);
    for run in 0..RUNS {
        let path = dir.path().join(format!("crash-{run}.ztrec"));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_at_random_points_leaves_verifiable_prefixes",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        while !ready.contains("READY") {
            ready.clear();
            assert!(out.read_line(&mut ready).unwrap() > 0, "child exited early");
        }
        // The first KILLED_WHILE_RECORDING runs are killed while the child records; the
        // rest around the time it finalises.
        let window = WRITE_FOR.as_millis() as u64;
        let delay = Duration::from_millis(if run < KILLED_WHILE_RECORDING {
            random(window)
        } else {
            window - 50 + random(350)
        });
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let mut r = open_unlocked(&path);
        let report = r
            .verify(&VerifyOptions::default())
            .unwrap_or_else(|e| panic!("run {run} (seed {seed}, {delay:?}): {e}"));
        match report.status {
            RecordingStatus::Finalised => finalised += 1,
            _ => unfinalised += 1,
        }

        // Export through the CLI: the text of the valid prefix, which must be exactly the
        // first events the child wrote.
        let file = path.to_str().unwrap();
        let text_path = dir.path().join(format!("crash-{run}.ts"));
        let out = cli(&[
            "export",
            file,
            "--format",
            "typescript",
            "-o",
            text_path.to_str().unwrap(),
            "--secret-file",
            secret_arg,
        ]);
        assert!(
            out.status.success(),
            "run {run}: export failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let exported = std::fs::read(&text_path).unwrap();
        let body = &exported[exported.iter().position(|&b| b == b'\n').unwrap() + 1..];
        let events = report.events.unwrap() as usize;
        let expected: Vec<u8> = (0..events as u64).flat_map(line).collect();
        assert!(
            body.starts_with(&expected),
            "run {run}: exported data is not the written prefix"
        );
        let timing = std::fs::read_to_string(format!("{}.timing", text_path.display())).unwrap();
        assert_eq!(timing.lines().count(), events, "run {run}");
        let out = cli(&[
            "verify",
            file,
            "--secret-file",
            secret_arg,
            "--allow-unfinalised",
        ]);
        assert!(out.status.success(), "run {run}: verify failed");
    }
    println!("{RUNS} runs: {finalised} finalised, {unfinalised} killed while recording");
    assert!(
        unfinalised >= RUNS / 2,
        "kills should mostly land while recording"
    );
}
