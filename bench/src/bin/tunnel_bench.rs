//! `tunnel-bench`: ztproxy's tunnel data plane against direct loopback TCP and OpenSSH
//! `ssh -N -L`, all measured in the same run.
//!
//! ```text
//! cargo build --release -p zt-proxy -p zt-bench
//! target/release/tunnel-bench --json bench/out/tunnel.json
//! ```
//!
//! For each path — (a) direct TCP, (b) `ssh -N -L` through a local sshd, (c) ztproxy over
//! WebRTC, (d) ztproxy over QUIC, both with the `ztproxy connect tunnel` client process — it
//! measures bulk throughput of one connection each way, the 64-byte echo round trip, session
//! set-up time from offer (or `ssh` start) to the first echoed byte, and ztproxy's resident
//! memory per idle session. It prints a Markdown table, the ratios against `ssh -L` with the
//! targets of issue 2, and JSON.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webrtc::data_channel::DataChannelEvent;
use zt_api::control::Transport;
use zt_bench::{
    Percentiles, download, echo_round_trips, median, micros, millis, rss_kib, sink_server,
    source_server, upload,
};
use zt_proxy::client::api::ApiClient;
use zt_proxy::client::session::{ClientSession, ClientStream, TunnelOptions};
use zt_proxy::transport::webrtc::PeerSettings;
use zt_tests::proc::{ProxyOptions, TunnelCli, ZtProxy};
use zt_tests::servers::{Sshd, echo_server};

#[derive(Debug, Parser)]
#[command(about = "ztproxy tunnel benchmarks against direct TCP and ssh -L")]
struct Args {
    /// Bytes per bulk transfer, each way.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Bulk-transfer runs per path (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measured echo round trips per path.
    #[arg(long, default_value_t = 5000)]
    echo_count: usize,
    /// Sessions set up per path.
    #[arg(long, default_value_t = 100)]
    setup_count: usize,
    /// Idle sessions for the memory measurement.
    #[arg(long, default_value_t = 500)]
    idle_sessions: usize,
    /// A short run (CI smoke): 64 MiB, one run, fewer samples.
    #[arg(long)]
    quick: bool,
    /// The ztproxy binary (default: next to this one).
    #[arg(long)]
    ztproxy: Option<PathBuf>,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// SCTP MTU for both WebRTC ends (default: the stack's 1191).
    #[arg(long)]
    sctp_mtu: Option<u32>,
    /// Run only these phases (throughput, echo, setup, memory); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

impl Args {
    fn runs_phase(&self, phase: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == phase)
    }
}

const PATHS: [&str; 4] = ["direct", "ssh -L", "ztproxy WebRTC", "ztproxy QUIC"];

#[derive(Debug, Default, Serialize)]
struct Results {
    config: BTreeMap<String, serde_json::Value>,
    /// MB/s (10^6 bytes/s) per run, per path.
    upload_mbps: BTreeMap<String, Vec<f64>>,
    download_mbps: BTreeMap<String, Vec<f64>>,
    echo_rtt_us: BTreeMap<String, Percentiles>,
    setup_ms: BTreeMap<String, Percentiles>,
    idle_rss_kib_per_session: BTreeMap<String, f64>,
    ratios: BTreeMap<String, f64>,
    targets: BTreeMap<String, bool>,
}

struct Endpoints {
    sink: SocketAddr,
    source: SocketAddr,
    echo: SocketAddr,
}

/// Processes that must live as long as their path (dropping one stops them).
enum Guard {
    Ssh(Vec<Child>),
    Tunnels(#[allow(dead_code)] Vec<TunnelCli>),
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Self::Ssh(children) = self {
            for child in children {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.bytes = args.bytes.min(64 << 20);
        args.runs = 1;
        args.echo_count = args.echo_count.min(500);
        args.setup_count = args.setup_count.min(10);
        args.idle_sessions = args.idle_sessions.min(50);
    }
    let bin = zt_bench::ztproxy_binary(args.ztproxy.as_deref())?;

    let mut results = Results::default();
    let config = &mut results.config;
    config.insert("bytes".into(), args.bytes.into());
    config.insert("runs".into(), args.runs.into());
    config.insert("echo_count".into(), args.echo_count.into());
    config.insert("setup_count".into(), args.setup_count.into());
    config.insert("idle_sessions".into(), args.idle_sessions.into());
    config.insert(
        "sctp_mtu".into(),
        args.sctp_mtu.map_or_else(|| 1191.into(), Into::into),
    );
    config.insert(
        "cpus".into(),
        std::thread::available_parallelism()
            .map_or(0, |n| n.get())
            .into(),
    );

    let sink = sink_server().await?;
    let source = source_server(args.bytes).await?;
    let echo = echo_server().await?;
    let sshd = Sshd::start()?;
    let proxy = ZtProxy::start(
        &bin,
        &ProxyOptions {
            log_level: "warn".into(),
            ..ProxyOptions::default()
        },
    )?;
    let api = proxy.api();

    let direct = Endpoints { sink, source, echo };
    let mut guards = Vec::new();
    let mut paths = vec![&direct];
    let (ssh, webrtc, quic);
    if args.runs_phase("throughput") || args.runs_phase("echo") {
        eprintln!("setting up paths…");
        let mut extra: Vec<String> = Vec::new();
        if let Some(mtu) = args.sctp_mtu {
            extra = vec!["--sctp-mtu".into(), mtu.to_string()];
        }
        let guard;
        (ssh, guard) = ssh_path(&sshd, &direct).await?;
        guards.push(guard);
        let guard;
        (webrtc, guard) = tunnel_path(&bin, &proxy, &direct, "webrtc", &extra)?;
        guards.push(guard);
        let guard;
        (quic, guard) = tunnel_path(&bin, &proxy, &direct, "quic", &[])?;
        guards.push(guard);
        paths.extend([&ssh, &webrtc, &quic]);
    }

    // Bulk throughput, paths interleaved in every run so they see the same machine state.
    let runs = if args.runs_phase("throughput") {
        args.runs
    } else {
        0
    };
    for run in 0..runs {
        for (name, endpoints) in PATHS.iter().zip(paths.iter().copied()) {
            eprintln!("run {}/{}: {name} bulk transfer", run + 1, args.runs);
            let up = upload(endpoints.sink, args.bytes).await?;
            let down = download(endpoints.source, args.bytes).await?;
            let mbps = |d: Duration| args.bytes as f64 / d.as_secs_f64() / 1e6;
            results
                .upload_mbps
                .entry(name.to_string())
                .or_default()
                .push(mbps(up));
            results
                .download_mbps
                .entry(name.to_string())
                .or_default()
                .push(mbps(down));
        }
    }

    for (name, endpoints) in PATHS.iter().zip(paths.iter().copied()) {
        if !args.runs_phase("echo") {
            break;
        }
        eprintln!("{name}: echo round trips");
        let samples = echo_round_trips(endpoints.echo, 64, 200, args.echo_count).await?;
        results
            .echo_rtt_us
            .insert(name.to_string(), Percentiles::of(&samples, micros));
    }

    let setup_count = if args.runs_phase("setup") {
        args.setup_count
    } else {
        0
    };
    eprintln!("set-up: direct");
    let mut samples = Vec::new();
    for _ in 0..setup_count {
        let started = Instant::now();
        first_echo(echo).await?;
        samples.push(started.elapsed());
    }
    results
        .setup_ms
        .insert(PATHS[0].into(), Percentiles::of(&samples, millis));
    eprintln!("set-up: ssh -L");
    let mut samples = Vec::new();
    for _ in 0..setup_count {
        samples.push(ssh_setup(&sshd, echo).await?);
    }
    results
        .setup_ms
        .insert(PATHS[1].into(), Percentiles::of(&samples, millis));
    for (name, transport) in [(PATHS[2], Transport::Webrtc), (PATHS[3], Transport::Quic)] {
        eprintln!("set-up: {name}");
        let options = options(transport, echo, args.sctp_mtu);
        let mut samples = Vec::new();
        for _ in 0..setup_count {
            samples.push(tunnel_setup(&api, &options).await?);
        }
        results
            .setup_ms
            .insert(name.into(), Percentiles::of(&samples, millis));
    }

    for (name, transport) in [(PATHS[2], Transport::Webrtc), (PATHS[3], Transport::Quic)] {
        if !args.runs_phase("memory") {
            break;
        }
        eprintln!("memory: {} idle {name} sessions", args.idle_sessions);
        // A fresh daemon per transport: memory freed by earlier phases and kept by the
        // allocator would otherwise absorb the growth.
        let fresh = ZtProxy::start(
            &bin,
            &ProxyOptions {
                log_level: "warn".into(),
                ..ProxyOptions::default()
            },
        )?;
        let per_session = idle_memory(
            &fresh,
            &fresh.api(),
            &options(transport, echo, args.sctp_mtu),
            args.idle_sessions,
        )
        .await?;
        results
            .idle_rss_kib_per_session
            .insert(name.into(), per_session);
    }

    judge(&mut results);
    print_table(&results);
    let json = serde_json::to_string_pretty(&results)?;
    println!("\n{json}");
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, &json)?;
    }
    Ok(())
}

async fn ssh_path(sshd: &Sshd, direct: &Endpoints) -> anyhow::Result<(Endpoints, Guard)> {
    let mut children = Vec::new();
    let mut locals = Vec::new();
    for target in [direct.sink, direct.source, direct.echo] {
        let port = zt_tests::free_port();
        children.push(sshd.forward(port, target)?.spawn()?);
        let local = SocketAddr::from(([127, 0, 0, 1], port));
        zt_tests::wait_for_port(local, Duration::from_secs(20)).await?;
        locals.push(local);
    }
    Ok((
        Endpoints {
            sink: locals[0],
            source: locals[1],
            echo: locals[2],
        },
        Guard::Ssh(children),
    ))
}

fn tunnel_path(
    bin: &std::path::Path,
    proxy: &ZtProxy,
    direct: &Endpoints,
    transport: &str,
    extra: &[String],
) -> anyhow::Result<(Endpoints, Guard)> {
    let mut tunnels = Vec::new();
    for target in [direct.sink, direct.source, direct.echo] {
        let mut args: Vec<&str> = vec!["--transport", transport];
        args.extend(extra.iter().map(String::as_str));
        tunnels.push(TunnelCli::start(
            bin,
            &proxy.api_arg(),
            &target.to_string(),
            &args,
        )?);
    }
    Ok((
        Endpoints {
            sink: tunnels[0].local,
            source: tunnels[1].local,
            echo: tunnels[2].local,
        },
        Guard::Tunnels(tunnels),
    ))
}

fn options(transport: Transport, target: SocketAddr, sctp_mtu: Option<u32>) -> TunnelOptions {
    let mut peer = PeerSettings::loopback();
    peer.sctp_mtu = sctp_mtu;
    TunnelOptions {
        transport,
        target: zt_api::control::Target {
            host: target.ip().to_string(),
            port: target.port(),
        },
        protocol: None,
        signalling: None,
        limits: Default::default(),
        resource_id: None,
        peer,
        connect_timeout: Duration::from_secs(20),
    }
}

/// Connects to an echo server and waits for one byte back.
async fn first_echo(addr: SocketAddr) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(b"x").await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await?;
    Ok(())
}

/// Starts `ssh -N -L` and measures until a byte has crossed it and come back.
async fn ssh_setup(sshd: &Sshd, echo: SocketAddr) -> anyhow::Result<Duration> {
    let port = zt_tests::free_port();
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let mut child = sshd.forward(port, echo)?.spawn()?;
    let result = loop {
        if first_echo(local).await.is_ok() {
            break Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(20) {
            break Err(anyhow::anyhow!("ssh -L did not come up"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// One session from offer (client peer connection built) to the first echoed byte.
async fn tunnel_setup(api: &ApiClient, options: &TunnelOptions) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (session, id) = ClientSession::connect(api, options).await?;
    match session.open().await? {
        ClientStream::Channel(dc) => {
            dc.send(bytes::BytesMut::from(&b"x"[..])).await?;
            loop {
                match dc.poll().await {
                    Some(DataChannelEvent::OnMessage(m)) if !m.is_string => break,
                    Some(DataChannelEvent::OnMessage(_)) => bail!("tunnel refused"),
                    Some(_) => {}
                    None => bail!("channel closed"),
                }
            }
        }
        ClientStream::Quic(mut send, mut recv) => {
            send.write_all(b"x").await?;
            let mut byte = [0u8; 1];
            recv.read_exact(&mut byte).await?;
        }
    }
    let elapsed = started.elapsed();
    session.close().await;
    let _ = api.delete_session(&id).await;
    Ok(elapsed)
}

/// ztproxy's RSS growth per connected, idle session.
async fn idle_memory(
    proxy: &ZtProxy,
    api: &ApiClient,
    options: &TunnelOptions,
    count: usize,
) -> anyhow::Result<f64> {
    // Warm up once so lazily allocated, process-wide state is in the baseline.
    let (warm, warm_id) = ClientSession::connect(api, options).await?;
    warm.close().await;
    let _ = api.delete_session(&warm_id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(proxy.pid())?;
    let mut sessions = Vec::with_capacity(count);
    for _ in 0..count {
        sessions.push(ClientSession::connect(api, options).await?);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(proxy.pid())?;
    for (session, id) in sessions {
        session.close().await;
        let _ = api.delete_session(&id).await;
    }
    Ok((after as f64 - before as f64) / count as f64)
}

fn judge(results: &mut Results) {
    if results.upload_mbps.is_empty()
        || results.echo_rtt_us.is_empty()
        || results.setup_ms.is_empty()
        || results.idle_rss_kib_per_session.is_empty()
    {
        return;
    }
    let up = |name: &str| median(&results.upload_mbps[name]);
    let down = |name: &str| median(&results.download_mbps[name]);
    let both = |name: &str| up(name).min(down(name));
    let ssh = both(PATHS[1]);
    let webrtc = both(PATHS[2]) / ssh;
    let quic = both(PATHS[3]) / ssh;
    let ratios = &mut results.ratios;
    ratios.insert("webrtc_throughput_vs_ssh".into(), webrtc);
    ratios.insert("quic_throughput_vs_ssh".into(), quic);
    ratios.insert("direct_throughput_vs_ssh".into(), both(PATHS[0]) / ssh);
    let rtt = |name: &str| results.echo_rtt_us[name].p50;
    ratios.insert(
        "webrtc_echo_p50_vs_ssh".into(),
        rtt(PATHS[2]) / rtt(PATHS[1]),
    );
    ratios.insert("quic_echo_p50_vs_ssh".into(), rtt(PATHS[3]) / rtt(PATHS[1]));

    let targets = &mut results.targets;
    targets.insert("webrtc throughput >= 0.2 x ssh -L".into(), webrtc >= 0.2);
    targets.insert("quic throughput >= 0.4 x ssh -L".into(), quic >= 0.4);
    targets.insert(
        "webrtc echo p50 <= ssh -L".into(),
        rtt(PATHS[2]) <= rtt(PATHS[1]),
    );
    for name in [PATHS[2], PATHS[3]] {
        let setup = results.setup_ms[name];
        targets.insert(format!("{name} set-up max <= 250 ms"), setup.max <= 250.0);
        targets.insert(format!("{name} set-up p50 <= 30 ms"), setup.p50 <= 30.0);
        let rss = results.idle_rss_kib_per_session[name];
        targets.insert(format!("{name} idle RSS <= 64 KiB/session"), rss <= 64.0);
    }
}

fn print_table(results: &Results) {
    let cell = |v: Option<f64>, digits: usize| match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "–".into(),
    };
    println!("| metric | {} |", PATHS.join(" | "));
    println!("|---|{}", "---:|".repeat(PATHS.len()));
    let row = |label: &str, value: &dyn Fn(&str) -> Option<f64>, digits: usize| {
        let cells: Vec<String> = PATHS.iter().map(|p| cell(value(p), digits)).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    row(
        "upload MB/s (median)",
        &|p| results.upload_mbps.get(p).map(|v| median(v)),
        0,
    );
    row(
        "download MB/s (median)",
        &|p| results.download_mbps.get(p).map(|v| median(v)),
        0,
    );
    row(
        "64 B echo p50 µs",
        &|p| results.echo_rtt_us.get(p).map(|s| s.p50),
        0,
    );
    row(
        "64 B echo p99 µs",
        &|p| results.echo_rtt_us.get(p).map(|s| s.p99),
        0,
    );
    row(
        "set-up p50 ms",
        &|p| results.setup_ms.get(p).map(|s| s.p50),
        1,
    );
    row(
        "set-up p99 ms",
        &|p| results.setup_ms.get(p).map(|s| s.p99),
        1,
    );
    row(
        "set-up max ms",
        &|p| results.setup_ms.get(p).map(|s| s.max),
        1,
    );
    row(
        "idle RSS KiB/session",
        &|p| results.idle_rss_kib_per_session.get(p).copied(),
        1,
    );
    println!();
    for (name, ratio) in &results.ratios {
        println!("{name}: {ratio:.2}");
    }
    println!();
    for (target, met) in &results.targets {
        println!("[{}] {target}", if *met { "met" } else { "MISSED" });
    }
}
