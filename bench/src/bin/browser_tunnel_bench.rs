//! `browser-tunnel-bench`: a tunnel carried by a real browser's data channels (Debian's
//! headless Chromium, no flags, through `proxy/web/tests/tunnel-lab.js`) against the
//! `ztproxy connect tunnel` client over WebRTC, in the same run, against the same daemon:
//!
//! * **download / upload**: one connection each way, `--bytes` (64 MiB), the SHA-256 checked
//!   end to end; the browser's figure is the page's own clock from the channel's opening to
//!   the last byte (download) or to the target's digest (upload); the CLI's from connecting
//!   its local port to the same points;
//! * **parallel**: `--rounds` rounds of `--parallel` downloads of `--parallel-bytes` at once
//!   on one peer connection: every transfer must complete, and the longest gap between two
//!   messages of one channel and the time from the end to the channel's `closed` are
//!   reported;
//! * **packet loss**: the kernel's UDP receive-buffer drops (`RcvbufErrors` in
//!   `/proc/net/snmp`) during each phase; ztproxy's sockets have 4 MiB buffers, so drops
//!   there are the browser's (128 KiB).
//!
//! ```text
//! cargo build --release -p zt-proxy -p zt-bench && ./scripts/setup --deps-only
//! target/release/browser-tunnel-bench --json bench/out/browser-tunnel.json
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use zt_api::control::LimitsRequest;
use zt_bench::{median, sink_server, source_server};
use zt_tests::browser::{LabTransfer, TunnelLab};
use zt_tests::proc::{ProxyOptions, TunnelCli, ZtProxy};
use zt_tests::servers::{bulk_server, digest_server, pattern_digest};

#[derive(Debug, Parser)]
#[command(about = "a tunnel through headless Chromium's data channels against the CLI client")]
struct Args {
    /// Bytes per bulk transfer, each way.
    #[arg(long, default_value_t = 64 << 20)]
    bytes: u64,
    /// Bulk-transfer runs per path and direction (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Rounds of parallel downloads.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Downloads at once in each round.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Bytes per parallel download.
    #[arg(long, default_value_t = 16 << 20)]
    parallel_bytes: u64,
    /// A short run (CI smoke).
    #[arg(long)]
    quick: bool,
    /// The ztproxy binary (default: next to this one).
    #[arg(long)]
    ztproxy: Option<PathBuf>,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

const SEED: u64 = 0x7a70_726f_7879;
const LIMIT: Duration = Duration::from_secs(80);

#[derive(Debug, Default, Serialize)]
struct Direction {
    /// MB/s of each run.
    browser_mb_s: Vec<f64>,
    cli_mb_s: Vec<f64>,
    /// Receive-buffer drops during the browser's runs, each.
    browser_drops: Vec<u64>,
    browser_median_mb_s: f64,
    cli_median_mb_s: f64,
    /// Browser over CLI, medians.
    ratio: f64,
}

#[derive(Debug, Default, Serialize)]
struct Parallel {
    rounds: usize,
    parallel: usize,
    bytes_each: u64,
    completed: usize,
    /// Longest gap between two messages of one channel, over all transfers, in ms.
    max_gap_ms: f64,
    /// Median of each round's longest gap.
    median_round_gap_ms: f64,
    /// Longest time from the end of a transfer to its channel's `closed`, in ms; -1 when a
    /// channel did not close within 10 s.
    max_close_ms: f64,
    /// Aggregate MB/s of each round (all channels together).
    round_mb_s: Vec<f64>,
    median_round_mb_s: f64,
    drops: u64,
}

#[derive(Debug, Serialize)]
struct Results {
    cpu: String,
    bytes: u64,
    runs: usize,
    /// MB/s between two peer connections inside the page: Chromium's data channels
    /// against themselves, on this machine.
    chromium_loopback_mb_s: Vec<f64>,
    chromium_loopback_median_mb_s: f64,
    download: Direction,
    upload: Direction,
    parallel: Parallel,
}

/// The kernel's UDP receive-buffer drops so far (all sockets).
fn rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|line| line.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

fn check(transfer: &LabTransfer, expected: &str, what: &str) {
    assert_eq!(
        transfer.sha256, expected,
        "{what}: the SHA-256 differs ({transfer:?})"
    );
}

fn mb_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.bytes = args.bytes.min(16 << 20);
        args.runs = args.runs.min(1);
        args.rounds = args.rounds.min(2);
        args.parallel_bytes = args.parallel_bytes.min(4 << 20);
    }
    let bin = zt_bench::ztproxy_binary(args.ztproxy.as_deref())?;
    let proxy = ZtProxy::start(
        &bin,
        &ProxyOptions {
            log_level: std::env::var("ZT_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            // ZT_BENCH_WEBRTC: more `[webrtc]` lines, separated by `;` (for experiments).
            webrtc: std::env::var("ZT_BENCH_WEBRTC")
                .map(|lines| lines.split(';').map(str::to_owned).collect())
                .unwrap_or_default(),
            ..ProxyOptions::default()
        },
    )?;
    let result = run(&args, &bin, &proxy).await;
    // ZT_BENCH_LOG: show the daemon's log after a good run too.
    if result.is_err() || std::env::var_os("ZT_BENCH_LOG").is_some() {
        eprintln!("ztproxy's output:\n{}", proxy.output());
    }
    result
}

async fn run(args: &Args, bin: &std::path::Path, proxy: &ZtProxy) -> anyhow::Result<()> {
    let api = proxy.api();
    let limits = LimitsRequest::default();

    // Targets: the pattern source for the browser (its digest is known), a digest server
    // for browser uploads, and zt_bench's source and sink for the CLI.
    let (bulk, _reports) = bulk_server(args.bytes, SEED).await?;
    let (parallel_bulk, _parallel_reports) = bulk_server(args.parallel_bytes, SEED).await?;
    let digest = digest_server().await?;
    let source = source_server(args.bytes).await?;
    let sink = sink_server().await?;
    let expected = pattern_digest(SEED, args.bytes);
    let expected_parallel = pattern_digest(SEED, args.parallel_bytes);

    let cli_download = TunnelCli::start(
        bin,
        &proxy.api_arg(),
        &source.to_string(),
        &["--transport", "webrtc"],
    )?;
    let cli_upload = TunnelCli::start(
        bin,
        &proxy.api_arg(),
        &sink.to_string(),
        &["--transport", "webrtc"],
    )?;

    let mut download_lab = TunnelLab::start().await?;
    download_lab.connect(&api, bulk, limits.clone()).await?;
    let mut upload_lab = TunnelLab::start().await?;
    upload_lab.connect(&api, digest, limits.clone()).await?;

    // Chromium's own loopback pair needs its `.local` candidates resolved by its mDNS
    // responder, which does not always answer in time: a run that does not connect is
    // left out.
    let mut loopback = Vec::new();
    for _ in 0..args.runs {
        let mut lab = TunnelLab::start().await?;
        match lab.loopback(args.bytes).await {
            Ok(mb_s) => loopback.push(mb_s),
            Err(e) => eprintln!("chromium to chromium: {e}"),
        }
        lab.browser.close().await;
    }
    eprintln!("chromium to chromium: {loopback:.0?} MB/s");

    let mut download = Direction::default();
    let mut upload = Direction::default();
    for run in 0..args.runs {
        let drops = rcvbuf_errors();
        let transfer = download_lab.download(1, LIMIT).await?.remove(0);
        download.browser_drops.push(rcvbuf_errors() - drops);
        check(&transfer, &expected, "browser download");
        download.browser_mb_s.push(transfer.mb_per_s());

        let started = Instant::now();
        zt_bench::download(cli_download.local, args.bytes).await?;
        download.cli_mb_s.push(mb_s(args.bytes, started.elapsed()));

        let drops = rcvbuf_errors();
        let transfer = upload_lab.upload(args.bytes).await?;
        upload.browser_drops.push(rcvbuf_errors() - drops);
        assert_eq!(
            transfer.theirs.as_deref(),
            Some(transfer.sha256.as_str()),
            "browser upload: the target's SHA-256 differs"
        );
        upload.browser_mb_s.push(transfer.mb_per_s());

        let elapsed = zt_bench::upload(cli_upload.local, args.bytes).await?;
        upload.cli_mb_s.push(mb_s(args.bytes, elapsed));
        eprintln!(
            "run {run}: download browser {:.0} MB/s (drops {}), CLI {:.0}; upload browser {:.0}, CLI {:.0}",
            download.browser_mb_s[run],
            download.browser_drops[run],
            download.cli_mb_s[run],
            upload.browser_mb_s[run],
            upload.cli_mb_s[run],
        );
    }
    for direction in [&mut download, &mut upload] {
        direction.browser_median_mb_s = median(&direction.browser_mb_s);
        direction.cli_median_mb_s = median(&direction.cli_mb_s);
        direction.ratio = direction.browser_median_mb_s / direction.cli_median_mb_s;
    }
    download_lab.browser.close().await;
    upload_lab.browser.close().await;

    let mut parallel = Parallel {
        rounds: args.rounds,
        parallel: args.parallel,
        bytes_each: args.parallel_bytes,
        ..Parallel::default()
    };
    let mut lab = TunnelLab::start().await?;
    lab.connect(&api, parallel_bulk, limits).await?;
    let drops = rcvbuf_errors();
    let mut round_gaps = Vec::new();
    for round in 0..args.rounds {
        let started = Instant::now();
        let transfers = lab.download(args.parallel, LIMIT).await?;
        let elapsed = started.elapsed();
        let mut round_gap = 0f64;
        for transfer in &transfers {
            check(transfer, &expected_parallel, "parallel download");
            parallel.completed += 1;
            round_gap = round_gap.max(transfer.max_gap_ms.unwrap_or(0.0));
            parallel.max_close_ms = match transfer.close_ms {
                Some(ms) if parallel.max_close_ms >= 0.0 => parallel.max_close_ms.max(ms),
                _ => -1.0,
            };
        }
        parallel.max_gap_ms = parallel.max_gap_ms.max(round_gap);
        round_gaps.push(round_gap);
        parallel
            .round_mb_s
            .push(mb_s(args.parallel_bytes * args.parallel as u64, elapsed));
        eprintln!(
            "round {round}: longest gap {round_gap:.0} ms, {:.0} MB/s; each: {:?}",
            parallel.round_mb_s[round],
            transfers
                .iter()
                .map(|t| (t.ms.round(), t.max_gap_ms, t.close_ms))
                .collect::<Vec<_>>()
        );
    }
    parallel.drops = rcvbuf_errors() - drops;
    parallel.median_round_gap_ms = median(&round_gaps);
    parallel.median_round_mb_s = median(&parallel.round_mb_s);
    lab.browser.close().await;

    let results = Results {
        cpu: zt_bench::cpu_model(),
        bytes: args.bytes,
        runs: args.runs,
        chromium_loopback_median_mb_s: median(&loopback),
        chromium_loopback_mb_s: loopback,
        download,
        upload,
        parallel,
    };
    println!(
        "## browser tunnel ({}; {} runs)\n",
        results.cpu, results.runs
    );
    println!("| | browser MB/s | CLI MB/s | browser / CLI | browser drops (median) |");
    println!("|---|---|---|---|---|");
    for (name, d) in [("download", &results.download), ("upload", &results.upload)] {
        let drops: Vec<f64> = d.browser_drops.iter().map(|&d| d as f64).collect();
        println!(
            "| {name} {} MiB | {:.0} | {:.0} | {:.2} | {:.0} |",
            results.bytes >> 20,
            d.browser_median_mb_s,
            d.cli_median_mb_s,
            d.ratio,
            median(&drops)
        );
    }
    let p = &results.parallel;
    println!(
        "\nparallel: {} rounds × {} × {} MiB: {} of {} completed; longest gap {:.0} ms (median round {:.0} ms); longest close {:.0} ms; {:.0} MB/s median; {} drops",
        p.rounds,
        p.parallel,
        p.bytes_each >> 20,
        p.completed,
        p.rounds * p.parallel,
        p.max_gap_ms,
        p.median_round_gap_ms,
        p.max_close_ms,
        p.median_round_mb_s,
        p.drops
    );
    let json = serde_json::to_string_pretty(&results)?;
    println!("\n{json}");
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, json)?;
    }
    drop(cli_download);
    drop(cli_upload);
    Ok(())
}
