//! Benchmarks and load generators for ztproxy.
//!
//! * `tunnel-bench` (`src/bin/tunnel_bench.rs`): the tunnel data plane against direct TCP and
//!   `ssh -L`, measured in the same run — throughput, echo round trip, session set-up time and
//!   memory per idle session.
//! * `benches/*.rs`: criterion micro-benchmarks (recorder chunk sealing, Guacamole codec).
//!
//! The machines these run on are shared and noisy, so every figure is reported next to a
//! baseline measured in the same run, as a ratio, and as a median of several runs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A 64 KiB block of incompressible bytes, repeated for bulk transfers.
pub fn payload_block() -> Vec<u8> {
    let mut block = vec![0u8; 64 * 1024];
    zt_tests::PatternStream::new(0xbe7c4).fill(&mut block);
    block
}

/// A server that reads every connection to EOF, then answers with the byte count (u64 BE).
pub async fn sink_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => return,
                    }
                }
                let _ = stream.write_all(&total.to_be_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// A server that sends `len` bytes to every connection, then closes it.
pub async fn source_server(len: u64) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let block = payload_block();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let block = block.clone();
            tokio::spawn(async move {
                let mut left = len;
                while left > 0 {
                    let n = left.min(block.len() as u64) as usize;
                    if stream.write_all(&block[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// Sends `len` bytes to a sink through `addr`; returns the time until the sink confirmed
/// every byte.
pub async fn upload(addr: SocketAddr, len: u64) -> anyhow::Result<Duration> {
    let block = payload_block();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let started = std::time::Instant::now();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        stream.write_all(&block[..n]).await?;
        left -= n as u64;
    }
    stream.shutdown().await?;
    let mut count = [0u8; 8];
    stream.read_exact(&mut count).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        u64::from_be_bytes(count) == len,
        "sink received {} of {len} bytes",
        u64::from_be_bytes(count)
    );
    Ok(elapsed)
}

/// Receives everything a source sends through `addr`; returns the time from connecting to
/// the end of the stream.
pub async fn download(addr: SocketAddr, len: u64) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(total == len, "received {total} of {len} bytes");
    Ok(elapsed)
}

/// Round trips of `size` bytes through `addr` (an echo server behind it): `warmup` unmeasured,
/// then `count` measured.
pub async fn echo_round_trips(
    addr: SocketAddr,
    size: usize,
    warmup: usize,
    count: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let out = vec![0x42u8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let started = std::time::Instant::now();
        stream.write_all(&out).await?;
        stream.read_exact(&mut back).await?;
        if i >= warmup {
            samples.push(started.elapsed());
        }
    }
    Ok(samples)
}

/// Percentiles of a sample set.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
    /// Number of samples.
    pub n: usize,
}

impl Percentiles {
    /// Percentiles of `samples` (nearest rank, from an HDR histogram with five significant
    /// digits: exact to the nanosecond below 262 µs), converted by `unit` (e.g. to
    /// microseconds).
    pub fn of(samples: &[Duration], unit: fn(Duration) -> f64) -> Self {
        let empty = Self {
            p50: f64::NAN,
            p99: f64::NAN,
            max: f64::NAN,
            n: 0,
        };
        let Ok(mut histogram) = hdrhistogram::Histogram::<u64>::new(5) else {
            return empty;
        };
        for sample in samples {
            let nanos = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
            if histogram.record(nanos.max(1)).is_err() {
                return empty;
            }
        }
        if histogram.is_empty() {
            return empty;
        }
        let at = |q: f64| unit(Duration::from_nanos(histogram.value_at_quantile(q)));
        Self {
            p50: at(0.50),
            p99: at(0.99),
            max: unit(Duration::from_nanos(histogram.max())),
            n: samples.len(),
        }
    }
}

/// Microseconds.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median of a set of numbers.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

pub use zt_tests::proc::rss_kib;

/// CPU time (user + system, all threads, live and exited) process `pid` has used, from
/// `/proc/<pid>/stat`, in clock ticks of 1/100 s (Linux's `USER_HZ`).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("malformed /proc/{pid}/stat"))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// The CPU's model name, as `/proc/cpuinfo` gives it (every result names its CPU).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default()
}

/// The ztproxy binary: `given`, or the one next to the running benchmark; an error telling
/// how to build it when it is missing.
pub fn ztproxy_binary(given: Option<&std::path::Path>) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    let bin = match given {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent directory")?
            .join("ztproxy"),
    };
    anyhow::ensure!(
        bin.is_file(),
        "{} not found: build it with `cargo build --release -p zt-proxy -p zt-bench`",
        bin.display()
    );
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let p = Percentiles::of(&samples, micros);
        assert_eq!((p.p50, p.p99, p.max, p.n), (50.0, 99.0, 100.0, 100));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
