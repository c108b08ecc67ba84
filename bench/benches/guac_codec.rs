//! Guacamole codec throughput (`zt-guac`) against a naive split-on-`;` parser, measured in the
//! same run.
//!
//! ```text
//! cargo bench -p zt-bench --bench guac_codec
//! ```
//!
//! Two generated streams (deterministic, see [`display_stream`] and [`input_stream`]):
//!
//! * **display**: what guacd sends during an RDP session — `img` + base64 `blob` chunks of
//!   PNG/JPEG/WebP data (incompressible bytes, at most 8064 base64 characters per blob as
//!   guacd writes them) + `end`, `copy`, `rect` + `cfill`, cursor updates, one `sync` per
//!   frame; about 8 MB;
//! * **input**: what a client sends — `mouse` (70 %), `key` (20 %), `sync` (10 %).
//!
//! Each is fed in 16 KiB reads to the validating [`Decoder`] and to [`NaiveSplit`], which only
//! looks for `;` and splits the instruction off as `Bytes` — the same buffer management, none
//! of the validation. Criterion reports each case; after it, a summary measures each pair back
//! to back (best of 3 × 0.5 s, so both see the same machine state) and prints the ratios
//! (target ≥ 0.5), plus encoding throughput and typed parsing cost.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark that cannot set up should abort loudly"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput};
use zt_guac::{
    ButtonMask, Context, Decoder, Instruction, Keysym, Limits, TypedInstruction, encode,
};

/// Bytes per `feed`, like one socket read.
const READ: usize = 16 * 1024;

/// Most raw bytes guacd puts in one `blob` (`GUAC_PROTOCOL_BLOB_MAX_LENGTH`): 8064 base64
/// characters.
const BLOB_RAW: usize = 6048;

/// The baseline: splits on `;` and nothing else. It would cut a value containing `;` in two;
/// the generated streams have none, so both parsers return the same instructions.
struct NaiveSplit {
    buf: BytesMut,
    scanned: usize,
}

impl NaiveSplit {
    fn new() -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn poll(&mut self) -> Option<Bytes> {
        match self.buf[self.scanned..].iter().position(|&b| b == b';') {
            Some(at) => {
                let len = self.scanned + at + 1;
                self.scanned = 0;
                Some(self.buf.split_to(len).freeze())
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }
}

/// Decodes `stream` in `READ`-byte feeds; returns the instruction count.
fn run_decoder(decoder: &mut Decoder, stream: &[u8]) -> usize {
    let mut n = 0;
    for read in stream.chunks(READ) {
        decoder.feed(read);
        while let Some(instruction) = decoder.poll_instruction().unwrap() {
            black_box(&instruction);
            n += 1;
        }
    }
    n
}

fn run_naive(naive: &mut NaiveSplit, stream: &[u8]) -> usize {
    let mut n = 0;
    for read in stream.chunks(READ) {
        naive.feed(read);
        while let Some(instruction) = naive.poll() {
            black_box(&instruction);
            n += 1;
        }
    }
    n
}

/// Decodes and parses every instruction as the proxy's client side would.
fn run_decoder_typed(decoder: &mut Decoder, stream: &[u8], context: Context) -> usize {
    let mut n = 0;
    for read in stream.chunks(READ) {
        decoder.feed(read);
        while let Some(instruction) = decoder.poll_instruction().unwrap() {
            let typed = TypedInstruction::parse(&instruction, context).unwrap();
            black_box(&typed);
            n += 1;
        }
    }
    n
}

/// Re-encodes decoded instructions from their `&str` elements.
fn run_encode(instructions: &[Instruction], out: &mut BytesMut) -> usize {
    out.clear();
    let mut args: Vec<&str> = Vec::with_capacity(16);
    for instruction in instructions {
        args.clear();
        args.extend(instruction.args());
        encode(instruction.opcode(), &args, out);
    }
    out.len()
}

/// Encodes typed input instructions.
fn run_encode_typed(instructions: &[TypedInstruction<'_>], out: &mut BytesMut) -> usize {
    out.clear();
    for instruction in instructions {
        instruction.encode(out);
    }
    out.len()
}

/// Reads every blob's data as `&str` (the UTF-8 re-check of `Instruction::arg`).
fn run_blob_access(instructions: &[Instruction]) -> usize {
    instructions
        .iter()
        .filter(|i| i.is("blob"))
        .map(|i| i.arg(1).unwrap().len())
        .sum()
}

struct Fixture {
    display: Vec<u8>,
    display_count: usize,
    input: Vec<u8>,
    input_count: usize,
    display_decoded: Vec<Instruction>,
    input_decoded: Vec<Instruction>,
}

impl Fixture {
    fn new() -> Self {
        let (display, display_count) = display_stream();
        let (input, input_count) = input_stream();
        let decode = |stream: &[u8]| {
            let mut decoder = Decoder::new(Limits::default());
            decoder.feed(stream);
            let mut out = Vec::new();
            while let Some(instruction) = decoder.poll_instruction().unwrap() {
                out.push(instruction);
            }
            out
        };
        let fixture = Self {
            display_decoded: decode(&display),
            input_decoded: decode(&input),
            display,
            display_count,
            input,
            input_count,
        };
        // Both parsers see the same instructions.
        assert_eq!(fixture.display_decoded.len(), display_count);
        assert_eq!(fixture.input_decoded.len(), input_count);
        assert_eq!(
            run_naive(&mut NaiveSplit::new(), &fixture.display),
            display_count
        );
        assert_eq!(
            run_naive(&mut NaiveSplit::new(), &fixture.input),
            input_count
        );
        fixture
    }

    fn typed_input(&self) -> Vec<TypedInstruction<'_>> {
        self.input_decoded
            .iter()
            .map(|i| TypedInstruction::parse(i, Context::ClientInteractive).unwrap())
            .collect()
    }
}

fn decode_benches(c: &mut Criterion, f: &Fixture) {
    let mut group = c.benchmark_group("guac_decode");
    group.throughput(Throughput::Bytes(f.display.len() as u64));
    let mut naive = NaiveSplit::new();
    group.bench_function(BenchmarkId::new("naive_split", "display"), |b| {
        b.iter(|| run_naive(&mut naive, &f.display))
    });
    let mut decoder = Decoder::default();
    group.bench_function(BenchmarkId::new("decoder", "display"), |b| {
        b.iter(|| run_decoder(&mut decoder, &f.display))
    });
    group.throughput(Throughput::Elements(f.input_count as u64));
    group.bench_function(BenchmarkId::new("naive_split", "input"), |b| {
        b.iter(|| run_naive(&mut naive, &f.input))
    });
    group.bench_function(BenchmarkId::new("decoder", "input"), |b| {
        b.iter(|| run_decoder(&mut decoder, &f.input))
    });
    group.bench_function(BenchmarkId::new("decoder_typed", "input"), |b| {
        b.iter(|| run_decoder_typed(&mut decoder, &f.input, Context::ClientInteractive))
    });
    group.finish();

    let mut group = c.benchmark_group("guac_encode");
    let mut out = BytesMut::new();
    group.throughput(Throughput::Bytes(f.display.len() as u64));
    group.bench_function(BenchmarkId::new("encode", "display"), |b| {
        b.iter(|| run_encode(&f.display_decoded, &mut out))
    });
    let typed = f.typed_input();
    group.throughput(Throughput::Elements(typed.len() as u64));
    group.bench_function(BenchmarkId::new("encode_typed", "input"), |b| {
        b.iter(|| run_encode_typed(&typed, &mut out))
    });
    group.finish();
}

/// Runs `op` for about `time`; returns (units per second, seconds per op).
fn rate(units: usize, time: Duration, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        op();
        n += 1;
    }
    (n * units as u64) as f64 / start.elapsed().as_secs_f64()
}

/// Best of 3 rounds of 0.5 s for each case, the cases interleaved within each round.
fn best_of_3(units: usize, cases: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let mut best = vec![0f64; cases.len()];
    for _ in 0..3 {
        for (case, best) in cases.iter_mut().zip(best.iter_mut()) {
            *best = best.max(rate(units, Duration::from_millis(500), &mut **case));
        }
    }
    best
}

fn summary(f: &Fixture) {
    let mut naive = NaiveSplit::new();
    let mut decoder = Decoder::default();
    let mut typed_decoder = Decoder::default();
    println!(
        "\nguac_codec summary (single core, best of 3 x 0.5 s, MB/s = 10^6 B/s, {READ} B feeds)"
    );
    let blob_bytes: usize = f
        .display_decoded
        .iter()
        .filter(|i| i.is("blob"))
        .map(Instruction::len)
        .sum();
    println!(
        "display stream: {} bytes, {} instructions ({:.0} B average, {:.1} % of bytes in blobs)",
        f.display.len(),
        f.display_count,
        f.display.len() as f64 / f.display_count as f64,
        100.0 * blob_bytes as f64 / f.display.len() as f64,
    );
    let [naive_mb, decoder_mb] = best_of_3(
        f.display.len(),
        &mut [
            &mut || {
                black_box(run_naive(&mut naive, &f.display));
            },
            &mut || {
                black_box(run_decoder(&mut decoder, &f.display));
            },
        ],
    )[..] else {
        unreachable!()
    };
    let per_instr = f.display_count as f64 / f.display.len() as f64;
    println!(
        "  naive split  {:>8.0} MB/s {:>7.2} M instr/s\n  decoder      {:>8.0} MB/s \
         {:>7.2} M instr/s\n  ratio decoder / naive = {:.2} (target >= 0.5)",
        naive_mb / 1e6,
        naive_mb * per_instr / 1e6,
        decoder_mb / 1e6,
        decoder_mb * per_instr / 1e6,
        decoder_mb / naive_mb
    );

    println!(
        "input stream: {} bytes, {} instructions (mouse 70 %, key 20 %, sync 10 %; {:.1} B \
         average)",
        f.input.len(),
        f.input_count,
        f.input.len() as f64 / f.input_count as f64
    );
    let [naive_ips, decoder_ips, typed_ips] = best_of_3(
        f.input_count,
        &mut [
            &mut || {
                black_box(run_naive(&mut naive, &f.input));
            },
            &mut || {
                black_box(run_decoder(&mut decoder, &f.input));
            },
            &mut || {
                black_box(run_decoder_typed(
                    &mut typed_decoder,
                    &f.input,
                    Context::ClientInteractive,
                ));
            },
        ],
    )[..] else {
        unreachable!()
    };
    println!(
        "  naive split  {:>6.1} ns/instr {:>7.2} M instr/s\n  decoder      {:>6.1} ns/instr \
         {:>7.2} M instr/s\n  ratio decoder / naive = {:.2} (target >= 0.5)\n  decoder + \
         typed parse {:.1} ns/instr",
        1e9 / naive_ips,
        naive_ips / 1e6,
        1e9 / decoder_ips,
        decoder_ips / 1e6,
        decoder_ips / naive_ips,
        1e9 / typed_ips
    );

    let mut out = BytesMut::new();
    let typed = f.typed_input();
    let [encode_mb] = best_of_3(
        f.display.len(),
        &mut [&mut || {
            black_box(run_encode(&f.display_decoded, &mut out));
        }],
    )[..] else {
        unreachable!()
    };
    let [encode_ips] = best_of_3(
        typed.len(),
        &mut [&mut || {
            black_box(run_encode_typed(&typed, &mut out));
        }],
    )[..] else {
        unreachable!()
    };
    let [access_mb] = best_of_3(
        blob_bytes,
        &mut [&mut || {
            black_box(run_blob_access(&f.display_decoded));
        }],
    )[..] else {
        unreachable!()
    };
    println!(
        "encode: display {:.0} MB/s ({:.2} M instr/s); typed input {:.1} ns/instr\nblob data \
         as &str (UTF-8 re-check): {:.0} MB/s",
        encode_mb / 1e6,
        encode_mb * per_instr / 1e6,
        1e9 / encode_ips,
        access_mb / 1e6
    );
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What guacd sends for an RDP desktop: ~8 MB of frames. Per frame: 0–4 image updates (size
/// log-uniform from 256 B to 64 KiB of incompressible data, JPEG 60 % / PNG 30 % / WebP 10 %,
/// sent as `img`, blobs of at most 6048 raw bytes, `end`), 0–3 `rect` + `cfill` fills,
/// 0–2 `copy`, a cursor update in 5 % of frames (`img` to a buffer, blob, `end`, `cursor`),
/// then `sync`. Returns the stream and its instruction count.
fn display_stream() -> (Vec<u8>, usize) {
    let mut g = Generator {
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        out: BytesMut::new(),
        count: 0,
        stream: 1,
    };
    let mut timestamp = 1_700_000_000_000u64;
    while g.out.len() < 8_000_000 {
        for _ in 0..g.rng.below(5) {
            let size = (256.0 * 256f64.powf(g.rng.below(1000) as f64 / 1000.0)) as usize;
            g.image(0, size);
        }
        for _ in 0..g.rng.below(4) {
            let (x, y) = (g.rng.below(1920), g.rng.below(1080));
            let (w, h) = (1 + g.rng.below(400), 1 + g.rng.below(300));
            g.push("rect", &[0, x, y, w, h]);
            let (r, gr, b) = (g.rng.below(256), g.rng.below(256), g.rng.below(256));
            g.push("cfill", &[14, 0, r, gr, b, 255]);
        }
        for _ in 0..g.rng.below(3) {
            let (sx, sy) = (g.rng.below(1920), g.rng.below(1080));
            let (w, h) = (1 + g.rng.below(800), 1 + g.rng.below(600));
            let (dx, dy) = (g.rng.below(1920), g.rng.below(1080));
            g.push("copy", &[0, sx, sy, w, h, 12, 0, dx, dy]);
        }
        if g.rng.chance(5) {
            let size = 300 + g.rng.below(1200) as usize;
            g.image(-1, size);
            let cursor = ["0", "0", "-1", "0", "0", "32", "32"];
            encode("cursor", &cursor, &mut g.out);
            g.count += 1;
        }
        timestamp += 16 + g.rng.below(40);
        g.push("sync", &[timestamp]);
    }
    (g.out.to_vec(), g.count)
}

struct Generator {
    rng: Rng,
    out: BytesMut,
    count: usize,
    stream: u64,
}

impl Generator {
    fn push(&mut self, opcode: &str, args: &[u64]) {
        let args: Vec<String> = args.iter().map(u64::to_string).collect();
        encode(opcode, &args, &mut self.out);
        self.count += 1;
    }

    /// `img`, the data in blobs as guacd cuts it, `end`.
    fn image(&mut self, layer: i64, size: usize) {
        let mimetype = match self.rng.below(10) {
            0..=5 => "image/jpeg",
            6..=8 => "image/png",
            _ => "image/webp",
        };
        self.stream = self.stream % 63 + 1;
        let index = self.stream.to_string();
        let mask = if self.rng.chance(80) { "14" } else { "12" };
        let x = (self.rng.below(30) * 64).to_string();
        let y = (self.rng.below(17) * 64).to_string();
        let layer = layer.to_string();
        encode(
            "img",
            &[&index, mask, &layer, mimetype, &x, &y],
            &mut self.out,
        );
        let data: Vec<u8> = (0..size).map(|_| self.rng.next() as u8).collect();
        for chunk in data.chunks(BLOB_RAW) {
            encode("blob", &[index.clone(), base64(chunk)], &mut self.out);
        }
        encode("end", &[&index], &mut self.out);
        self.count += 2 + data.len().div_ceil(BLOB_RAW);
    }
}

/// What a client sends while the user works: 100 000 instructions, `mouse` 70 % (positions
/// on a 1920×1080 screen, a button held 10 % of the time), `key` 20 % (printable and special
/// keysyms, press or release), `sync` 10 % (13-digit timestamps).
fn input_stream() -> (Vec<u8>, usize) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut out = BytesMut::new();
    let mut timestamp = 1_700_000_000_000u64;
    let count = 100_000;
    for _ in 0..count {
        let typed = match rng.below(10) {
            0..=6 => TypedInstruction::Mouse {
                x: rng.below(1920) as i32,
                y: rng.below(1080) as i32,
                buttons: if rng.chance(10) {
                    ButtonMask::LEFT
                } else {
                    ButtonMask(0)
                },
                timestamp: None,
            },
            7..=8 => TypedInstruction::Key {
                keysym: Keysym(if rng.chance(80) {
                    0x20 + rng.below(95) as u32
                } else {
                    0xff00 + rng.below(256) as u32
                }),
                pressed: rng.chance(50),
                timestamp: None,
            },
            _ => {
                timestamp += rng.below(100);
                TypedInstruction::Sync {
                    timestamp,
                    frames: None,
                }
            }
        };
        typed.encode(&mut out);
    }
    (out.to_vec(), count)
}

fn main() {
    let fixture = Fixture::new();
    let mut c = Criterion::default().configure_from_args();
    decode_benches(&mut c, &fixture);
    c.final_summary();
    // `cargo test --benches` / `cargo bench -- --test` only checks that the cases run.
    // Nor when profiling one case (`-- --profile-time 10 <filter>`).
    if std::env::args().any(|a| a == "--test" || a == "--list" || a == "--profile-time") {
        return;
    }
    summary(&fixture);
}
