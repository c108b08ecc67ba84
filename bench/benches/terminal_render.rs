//! The terminal's CPU per frame on the workloads of issue 16, at 1024×768 and 96 DPI: what
//! one native terminal session costs ztproxy besides the network, and so how many sessions a
//! core holds.
//!
//! ```text
//! cargo bench -p zt-bench --bench terminal_render
//! ```
//!
//! * `200 lines`: workload (c), `line $i $((i*7919)) abcdefghijklmnopqrstuvwxyz` at 20 lines a
//!   second — each line arrives 50 ms after the last, so each is one frame (the screen
//!   scrolls every frame);
//! * `typing`: one character echoed per frame at a prompt;
//! * `flood`: `seq` output as fast as it comes, 64 KiB a frame (frames coalesce).
//!
//! Each starts from a screen that already shows the Debian login banner and a prompt, as after
//! a login. The baseline measured in the same run is the emulator alone (`vt100` fed the same
//! bytes, no rendering): what rendering adds to a session's CPU.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a benchmark that cannot set up should abort loudly"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use zt_terminal::{Terminal, TerminalSettings};

const BANNER: &str = "Last login: Sun Dec  6 06:36:08 2026 from 127.0.0.1\r\n\r\nThe programs \
    included with the Debian GNU/Linux system are free software;\r\nthe exact distribution \
    terms for each program are described in the\r\nindividual files in \
    /usr/share/doc/*/copyright.\r\n\r\nDebian GNU/Linux comes with ABSOLUTELY NO WARRANTY, to \
    the extent\r\npermitted by applicable law.\r\n\x1b[01;32muser@vm\x1b[00m:\x1b[01;34m~\x1b[00m$ ";

/// A terminal after login, and the time of its last frame.
fn logged_in() -> (Terminal, Instant) {
    let now = Instant::now();
    let mut term = Terminal::new(TerminalSettings::default(), 1024, 768, 96, now);
    term.handle_target(BANNER.as_bytes());
    let _ = term.poll_client(now);
    (term, now)
}

/// Feeds `chunks`, one frame each, `gap` apart; returns the bytes of the frames.
fn frames(term: &mut Terminal, start: Instant, chunks: &[Vec<u8>], gap: Duration) -> usize {
    let mut now = start;
    let mut sent = 0;
    for chunk in chunks {
        now += gap;
        term.handle_target(chunk);
        if let Some(frame) = term.poll_client(now) {
            sent += frame.len();
        }
    }
    sent
}

fn workloads() -> Vec<(&'static str, Vec<Vec<u8>>, Duration)> {
    let lines = (1..=200u64)
        .map(|i| format!("line {i} {} abcdefghijklmnopqrstuvwxyz\r\n", i * 7919).into_bytes())
        .collect();
    let typing = "abcdefghijklmnopqrst".bytes().map(|b| vec![b]).collect();
    let mut seq = Vec::new();
    for i in 1..=200_000u64 {
        seq.extend_from_slice(format!("{i}\r\n").as_bytes());
    }
    let flood = seq.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
    vec![
        ("200 lines", lines, Duration::from_millis(50)),
        ("typing", typing, Duration::from_millis(200)),
        ("flood", flood, Duration::from_millis(40)),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("terminal_render");
    for (name, chunks, gap) in workloads() {
        group.throughput(Throughput::Elements(chunks.len() as u64));
        group.bench_function(format!("{name}: render"), |b| {
            b.iter_with_setup(logged_in, |(mut term, start)| {
                black_box(frames(&mut term, start, &chunks, gap))
            });
        });
        group.bench_function(format!("{name}: emulator only"), |b| {
            b.iter_with_setup(
                || {
                    let mut parser = vt100::Parser::new(
                        std::num::NonZeroU16::new(40).unwrap(),
                        std::num::NonZeroU16::new(102).unwrap(),
                        1000,
                    );
                    parser.process(BANNER.as_bytes());
                    parser
                },
                |mut parser| {
                    for chunk in &chunks {
                        parser.process(chunk);
                    }
                    black_box(parser.screen().cursor_position())
                },
            );
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    // Per frame, for the RESULTS table.
    let now = Instant::now();
    let mut term = Terminal::new(TerminalSettings::default(), 1024, 768, 96, now);
    term.handle_target(BANNER.as_bytes());
    let login = term.poll_client(now).map_or(0, |frame| frame.len());
    println!("login banner and prompt: {login} bytes to the client");
    for (name, chunks, gap) in workloads() {
        let runs = 20;
        let mut total = Duration::ZERO;
        let mut bytes = 0;
        for _ in 0..runs {
            let (mut term, start) = logged_in();
            let t = Instant::now();
            bytes = frames(&mut term, start, &chunks, gap);
            total += t.elapsed();
        }
        let per_frame = total / (runs * chunks.len() as u32);
        println!(
            "{name}: {:.1} µs per frame, {} bytes to the client",
            per_frame.as_secs_f64() * 1e6,
            bytes
        );
    }
}
