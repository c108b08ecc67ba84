//! Recording chunk seal/open throughput against raw AES-256-GCM from the same library
//! (`ring`), measured in the same run, and the writer thread's CPU per recorded MB.
//!
//! ```text
//! cargo bench -p zt-bench --bench recorder_seal
//! ```
//!
//! Criterion reports each case; after it, a summary prints the per-core throughput of each
//! pair measured back to back (so both see the same machine state), their ratio (target
//! >= 0.8), and the writer's CPU cost when recording 512 MiB through `RecordingWriter`.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a benchmark that cannot set up should abort loudly"
)]

use std::hint::black_box;
use std::io::Read;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use zt_recorder::chunk::{ChunkOpener, ChunkSealer};
use zt_recorder::format::{FRAME_HEADER_LEN, HeaderDigest};
use zt_recorder::{
    Event, RecordingKey, RecordingKind, RecordingWriter, ResourceSecret, WriterConfig,
};

const SIZES: [usize; 2] = [16 * 1024, 64 * 1024];

struct Fixture {
    raw: LessSafeKey,
    sealer: ChunkSealer,
    opener: ChunkOpener,
    size: usize,
    /// Plaintext for raw encryption, in place.
    plain: Vec<u8>,
    /// Frame header room + plaintext, sealed in place.
    frame: Vec<u8>,
    /// A sealed frame to open, and the matching raw ciphertext and tag.
    sealed: Vec<u8>,
    raw_sealed: Vec<u8>,
    raw_tag: Tag,
    out: Vec<u8>,
}

impl Fixture {
    fn new(size: usize) -> Self {
        let key = RecordingKey::generate().unwrap();
        let digest = HeaderDigest::from([7u8; 32]);
        let mut sealer = ChunkSealer::new(&key, &digest);
        let opener = ChunkOpener::new(&key, &digest);
        let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[9u8; 32]).unwrap());
        let plain: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut frame = vec![0u8; FRAME_HEADER_LEN];
        frame.extend_from_slice(&plain);
        frame.reserve(16);
        let mut sealed = frame.clone();
        sealer.seal_in_place(&mut sealed, false).unwrap();
        let mut raw_sealed = plain.clone();
        let raw_tag = raw
            .seal_in_place_separate_tag(nonce(), Aad::empty(), &mut raw_sealed)
            .unwrap();
        Self {
            raw,
            sealer,
            opener,
            size,
            plain,
            frame,
            sealed,
            raw_sealed,
            raw_tag,
            out: vec![0u8; size],
        }
    }

    fn raw_encrypt(&mut self) {
        let tag = self
            .raw
            .seal_in_place_separate_tag(nonce(), Aad::empty(), &mut self.plain)
            .unwrap();
        black_box(&tag);
    }

    fn seal(&mut self) {
        self.sealer.seal_in_place(&mut self.frame, false).unwrap();
        // Drop the tag so the next iteration seals the same length again.
        self.frame.truncate(FRAME_HEADER_LEN + self.size);
    }

    /// Decrypts a copy, as opening a chunk does (the frame stays intact).
    fn raw_decrypt(&mut self) {
        self.out.clear();
        self.out.extend_from_slice(&self.raw_sealed);
        self.raw
            .open_in_place_separate_tag(nonce(), Aad::empty(), self.raw_tag, &mut self.out, 0..)
            .unwrap();
        black_box(&self.out);
    }

    fn open(&mut self) {
        self.opener.open_into(&self.sealed, &mut self.out).unwrap();
        black_box(&self.out);
    }
}

fn nonce() -> Nonce {
    Nonce::assume_unique_for_key([1u8; 12])
}

fn seal_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("recorder_seal");
    for size in SIZES {
        let mut f = Fixture::new(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("raw_aes256gcm_encrypt", size), |b| {
            b.iter(|| f.raw_encrypt())
        });
        group.bench_function(BenchmarkId::new("chunk_seal", size), |b| {
            b.iter(|| f.seal())
        });
        group.bench_function(BenchmarkId::new("raw_aes256gcm_decrypt", size), |b| {
            b.iter(|| f.raw_decrypt())
        });
        group.bench_function(BenchmarkId::new("chunk_open", size), |b| {
            b.iter(|| f.open())
        });
    }
    group.finish();
}

/// MB/s (10^6 bytes per second) of `op` run for about `time`.
fn rate(size: usize, time: Duration, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        for _ in 0..16 {
            op();
        }
        n += 16;
    }
    (n * size as u64) as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Raw and recorder operations measured back to back, three rounds, best of each.
fn ratios() {
    println!("\nrecorder_seal summary (single core, MB/s = 10^6 B/s, best of 3 x 0.5 s):");
    println!(
        "{:>8} {:>12} {:>12} {:>7} {:>12} {:>12} {:>7}",
        "chunk", "raw enc", "seal", "ratio", "raw dec", "open", "ratio"
    );
    for size in SIZES {
        let mut f = Fixture::new(size);
        let mut best = [0f64; 4];
        for _ in 0..3 {
            let t = Duration::from_millis(500);
            best[0] = best[0].max(rate(size, t, || f.raw_encrypt()));
            best[1] = best[1].max(rate(size, t, || f.seal()));
            best[2] = best[2].max(rate(size, t, || f.raw_decrypt()));
            best[3] = best[3].max(rate(size, t, || f.open()));
        }
        println!(
            "{:>7}K {:>12.0} {:>12.0} {:>7.3} {:>12.0} {:>12.0} {:>7.3}",
            size / 1024,
            best[0],
            best[1],
            best[1] / best[0],
            best[2],
            best[3],
            best[3] / best[2]
        );
    }
}

/// CPU time of one thread of this process, in nanoseconds (first field of schedstat).
fn thread_cpu_ns(tid: &str) -> u64 {
    let mut s = String::new();
    std::fs::File::open(format!("/proc/self/task/{tid}/schedstat"))
        .and_then(|mut f| f.read_to_string(&mut s))
        .unwrap();
    s.split_whitespace().next().unwrap().parse().unwrap()
}

fn writer_tid() -> String {
    // The thread names itself once it runs, which may be a moment after the writer returns.
    for _ in 0..100 {
        for entry in std::fs::read_dir("/proc/self/task").unwrap() {
            let tid = entry.unwrap().file_name().into_string().unwrap();
            let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"));
            if comm.is_ok_and(|c| c.trim() == "zt-recorder") {
                return tid;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("writer thread not found");
}

/// Records 512 MiB of 1 KiB output events through a real `RecordingWriter` into a file and
/// reports the writer thread's CPU time per recorded MB (encode, seal, hash, write syscalls).
fn writer_cpu() {
    const EVENT: usize = 1024;
    const TOTAL: usize = 512 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut config = WriterConfig::new(RecordingKind::Typescript, "bench", "bench", "ssh");
    config.resource_secret = Some(std::sync::Arc::new(
        ResourceSecret::new(b"benchmark resource secret 0123456789".to_vec()).unwrap(),
    ));
    let writer = RecordingWriter::create(dir.path().join("bench.ztrec"), config).unwrap();
    let tid = writer_tid();
    let payload = vec![b'x'; EVENT];
    let before = thread_cpu_ns(&tid);
    let start = Instant::now();
    for i in 0..(TOTAL / EVENT) as u64 {
        let mut event = Event::Output(payload.clone());
        let at = Duration::from_micros(i);
        loop {
            match writer.try_append_at(at, event) {
                Ok(()) => break,
                Err(zt_recorder::TryAppendError::Full(back)) => {
                    event = back;
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    // Wait until the writer has drained the queue (its CPU time stops moving).
    let mut last = thread_cpu_ns(&tid);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = thread_cpu_ns(&tid);
        if now == last {
            break;
        }
        last = now;
    }
    let wall = start.elapsed();
    let cpu_ns = last - before;
    let stats = writer.finish().unwrap();
    let mb = TOTAL as f64 / 1e6;
    println!(
        "\nwriter CPU: {:.0} MB of 1 KiB output events -> {} bytes on disk; writer thread \
         {:.3} s CPU = {:.2} ms CPU per recorded MB ({:.0} MB/s per core); wall {:.2} s",
        mb,
        stats.file_bytes,
        cpu_ns as f64 / 1e9,
        cpu_ns as f64 / 1e6 / mb,
        mb / (cpu_ns as f64 / 1e9),
        wall.as_secs_f64()
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    seal_open(&mut c);
    c.final_summary();
    // `cargo test --benches` / `cargo bench -- --test` only checks that the cases run.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    ratios();
    writer_cpu();
}
