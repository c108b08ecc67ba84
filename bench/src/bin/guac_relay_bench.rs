//! `guac-relay-bench`: display throughput of a Guacamole connection through ztproxy (QUIC,
//! optionally WebRTC) against a plain TCP relay, measured in the same run.
//!
//! ```text
//! cargo build --release -p zt-proxy -p zt-bench
//! target/release/guac-relay-bench --json bench/out/guac-relay.json
//! ```
//!
//! guacd is played by `zt_tests::guacd_peer` in bulk mode: realistic frames (PNG tiles of
//! 64×64 to 256×256 in 6048-byte `blob`s, `copy`, `rect`+`cfill`, `cursor`, `sync`) as fast
//! as the client acknowledges them, within guacd-like flow control; as guacd 1.5 sends them,
//! or with `--guacd 1.6` as guacd 1.6 does (two image streams interleaved on layer 0). The same client code —
//! read, decode every instruction, answer every `sync` — runs on each path:
//!
//! * **plain TCP relay** — a minimal `copy_bidirectional` relay between the client and the
//!   peer; the client performs guacd's handshake itself;
//! * **ztproxy QUIC** (and **ztproxy WebRTC** with `--webrtc`) — a connection session as the
//!   gateway creates it (`route: guacd`), with policy filtering on (`disable-copy`,
//!   `disable-upload`) and a graphical recording written.
//!
//! Each run moves `--bytes` of display instructions per path (paths interleaved so they see
//! the same machine state); the table shows medians of MB/s (10^6 bytes/s) and
//! instructions/s, and the ratio ztproxy / plain (target: ≥ 0.5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use clap::Parser;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use zt_api::Secret;
use zt_api::control::{
    Conversation, CreateSessionRequest, LimitsRequest, RecordingRequest, Route, Target, Transport,
};
use zt_bench::median;
use zt_guac::{Decoder, Instruction, Limits, opcode};
use zt_guacd_peer::{DisplayMode, GuacdPeer, PeerConfig, PeerConn};
use zt_proxy::client::api::ApiClient;
use zt_proxy::client::session::{ClientSession, ClientStream, TunnelOptions};
use zt_proxy::transport::stream::{StreamReader, StreamWriter};
use zt_proxy::transport::webrtc::PeerSettings;
use zt_tests::proc::{ProxyOptions, ZtProxy};

#[derive(Debug, Parser)]
#[command(about = "Guacamole display throughput through ztproxy against a plain TCP relay")]
struct Args {
    /// Bytes of display instructions per run and path.
    #[arg(long, default_value_t = 256 << 20)]
    bytes: u64,
    /// Runs per path (medians are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// A short run (CI smoke): 32 MiB, two runs.
    #[arg(long)]
    quick: bool,
    /// Also measure ztproxy over WebRTC.
    #[arg(long)]
    webrtc: bool,
    /// Also measure diagnostic paths: ztproxy QUIC without the recording, without the
    /// recording and the policy parameters, and a QUIC tunnel session (raw bytes, no
    /// Guacamole processing) to the peer.
    #[arg(long)]
    diagnose: bool,
    /// Also measure live sharing: ztproxy QUIC with a viewer that stops reading after its
    /// handshake, and with a viewer that reads everything (the owner's throughput).
    #[arg(long)]
    viewers: bool,
    /// Run ztproxy with live sharing off (`[sessions] sharing = false`): no display model
    /// of the screen besides the recording's. For the cost of sharing, against a run without.
    #[arg(long, conflicts_with = "viewers")]
    sharing_off: bool,
    /// Measure only the plain relay and the paths whose name contains this text (for
    /// profiling one path).
    #[arg(long)]
    only: Option<String>,
    /// The peer's flow-control window (frames the client may leave unacknowledged).
    #[arg(long)]
    window: Option<usize>,
    /// Which guacd the peer behaves like: 1.5, or 1.6 (the pointer before the first size,
    /// two image streams interleaved on layer 0, a copy into buffer -1 per frame).
    #[arg(long, value_enum, default_value_t = Guacd::V1_5)]
    guacd: Guacd,
    /// The ztproxy binary (default: next to this one).
    #[arg(long)]
    ztproxy: Option<PathBuf>,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `--guacd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Guacd {
    #[value(name = "1.5")]
    V1_5,
    #[value(name = "1.6")]
    V1_6,
}

const PLAIN: &str = "plain TCP relay";
const QUIC: &str = "ztproxy QUIC";
const WEBRTC: &str = "ztproxy WebRTC";

/// One way from the client to the peer.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// The plain TCP relay.
    Plain,
    /// A ztproxy connection session.
    Connection {
        transport: Transport,
        recording: bool,
        policy: bool,
        viewer: Viewer,
    },
    /// A ztproxy tunnel session to the peer (the client speaks to guacd through it).
    Tunnel(Transport),
}

/// A viewer of the owner's session, on its own QUIC connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Viewer {
    None,
    /// Completes its handshake, then never reads again.
    Stalled,
    /// Reads and decodes everything.
    Reading,
}

impl Path {
    fn name(self) -> String {
        match self {
            Self::Plain => PLAIN.into(),
            Self::Connection {
                viewer: Viewer::Stalled,
                ..
            } => format!("{QUIC}, a stalled viewer"),
            Self::Connection {
                viewer: Viewer::Reading,
                ..
            } => format!("{QUIC}, a viewer reading"),
            Self::Connection {
                transport,
                recording,
                policy,
                ..
            } => {
                let base = if transport == Transport::Quic {
                    QUIC
                } else {
                    WEBRTC
                };
                match (recording, policy) {
                    (true, true) => base.into(),
                    (false, true) => format!("{base}, no recording"),
                    (true, false) => format!("{base}, no policy"),
                    (false, false) => format!("{base}, no recording or policy"),
                }
            }
            Self::Tunnel(transport) => format!("ztproxy {} tunnel (raw bytes)", transport.as_str()),
        }
    }
}

/// The display the client asks for.
const DISPLAY: (u32, u32, u32) = (1920, 1080, 96);
/// Longest a single measured transfer may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest any set-up step may take.
const STEP: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Serialize)]
struct Results {
    config: BTreeMap<String, serde_json::Value>,
    /// Per path, per run.
    runs: BTreeMap<String, Vec<Run>>,
    /// Per path: median MB/s.
    mbps: BTreeMap<String, f64>,
    /// Per path: median instructions/s.
    instructions_per_sec: BTreeMap<String, f64>,
    /// ztproxy path / plain relay, on the medians of MB/s.
    ratios: BTreeMap<String, f64>,
    targets: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, Serialize)]
struct Run {
    bytes: u64,
    instructions: u64,
    frames: u64,
    seconds: f64,
    mbps: f64,
    instructions_per_sec: f64,
    /// CPU time ztproxy used per byte delivered, in ns (0 for the plain relay).
    ztproxy_cpu_ns_per_byte: f64,
    /// CPU time this process (client, guacd peer and, for the plain path, the relay) used
    /// per byte delivered, in ns.
    bench_cpu_ns_per_byte: f64,
    /// With a viewer: the bytes it received, and whether ztproxy dropped it as too slow.
    #[serde(skip_serializing_if = "Option::is_none")]
    viewer: Option<(u64, bool)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.bytes = args.bytes.min(32 << 20);
        args.runs = args.runs.min(2);
    }
    let bin = zt_bench::ztproxy_binary(args.ztproxy.as_deref())?;

    let base = match args.guacd {
        Guacd::V1_5 => PeerConfig::default(),
        Guacd::V1_6 => PeerConfig::guacd_1_6(),
    };
    let mut peer_config = PeerConfig {
        display: DisplayMode::Bulk { bytes: args.bytes },
        connect_delay: Duration::ZERO,
        ..base
    };
    if let Some(window) = args.window {
        peer_config.max_unacked_frames = window;
    }
    let mut results = Results::default();
    let config = &mut results.config;
    config.insert("bytes".into(), args.bytes.into());
    config.insert("runs".into(), args.runs.into());
    config.insert(
        "guacd".into(),
        match args.guacd {
            Guacd::V1_5 => "1.5",
            Guacd::V1_6 => "1.6",
        }
        .into(),
    );
    config.insert(
        "max_unacked_frames".into(),
        peer_config.max_unacked_frames.into(),
    );
    config.insert(
        "display".into(),
        format!("{}x{}@{}", DISPLAY.0, DISPLAY.1, DISPLAY.2).into(),
    );
    config.insert(
        "ztproxy_policy".into(),
        "disable-copy, disable-upload; graphical recording".into(),
    );
    config.insert("sharing".into(), (!args.sharing_off).into());
    config.insert(
        "cpus".into(),
        std::thread::available_parallelism()
            .map_or(0, |n| n.get())
            .into(),
    );

    let peer = GuacdPeer::start(peer_config).await?;
    let relay = plain_relay(peer.addr()).await?;
    let recordings = tempfile::tempdir()?;
    let proxy = ZtProxy::start(
        &bin,
        &ProxyOptions {
            log_level: "warn".into(),
            extra_toml: format!(
                "[guacd]\naddress = \"{}\"\n\n[recordings]\ndirectory = \"{}\"\n",
                peer.addr(),
                recordings.path().display(),
            ),
            sessions: vec![format!("sharing = {}", !args.sharing_off)],
            ..ProxyOptions::default()
        },
    )?;
    let api = proxy.api();
    let secret =
        base64::engine::general_purpose::STANDARD.encode(zt_proxy::util::random_bytes::<32>()?);

    let connection = |transport, recording, policy| Path::Connection {
        transport,
        recording,
        policy,
        viewer: Viewer::None,
    };
    let mut paths = vec![Path::Plain, connection(Transport::Quic, true, true)];
    if args.webrtc {
        paths.push(connection(Transport::Webrtc, true, true));
    }
    if args.diagnose {
        paths.push(connection(Transport::Quic, false, true));
        paths.push(connection(Transport::Quic, false, false));
        paths.push(Path::Tunnel(Transport::Quic));
    }
    if args.viewers {
        for viewer in [Viewer::Stalled, Viewer::Reading] {
            paths.push(Path::Connection {
                transport: Transport::Quic,
                recording: true,
                policy: true,
                viewer,
            });
        }
    }
    if let Some(only) = &args.only {
        paths.retain(|p| matches!(p, Path::Plain) || p.name().contains(only.as_str()));
    }
    let names: Vec<String> = paths.iter().map(|p| p.name()).collect();
    for run in 0..args.runs {
        for &path in &paths {
            let name = path.name();
            eprintln!("run {}/{}: {name}", run + 1, args.runs);
            let cpu_before = (
                zt_bench::cpu_seconds(proxy.pid())?,
                zt_bench::cpu_seconds(std::process::id())?,
            );
            let result = match path {
                Path::Plain => measure_plain(&peer, relay, args.bytes).await,
                Path::Connection {
                    transport,
                    recording,
                    policy,
                    viewer,
                } => {
                    let secret = recording.then_some(secret.as_str());
                    let how = (transport, secret, policy, viewer);
                    measure_proxy(&peer, &api, how, args.bytes).await
                }
                Path::Tunnel(transport) => measure_tunnel(&peer, &api, transport, args.bytes).await,
            };
            let result = match result {
                Ok(mut result) => {
                    let per_byte = |seconds: f64| seconds * 1e9 / result.bytes.max(1) as f64;
                    if !matches!(path, Path::Plain) {
                        result.ztproxy_cpu_ns_per_byte =
                            per_byte(zt_bench::cpu_seconds(proxy.pid())? - cpu_before.0);
                    }
                    result.bench_cpu_ns_per_byte =
                        per_byte(zt_bench::cpu_seconds(std::process::id())? - cpu_before.1);
                    result
                }
                Err(error) => {
                    let log = proxy.output();
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                    bail!("{name}: {error:#}\nztproxy output (tail):\n{tail}");
                }
            };
            eprintln!(
                "  {:.0} MB/s, {:.0} instructions/s ({} frames); CPU ns/byte: ztproxy {:.2}, bench {:.2}",
                result.mbps,
                result.instructions_per_sec,
                result.frames,
                result.ztproxy_cpu_ns_per_byte,
                result.bench_cpu_ns_per_byte
            );
            results.runs.entry(name).or_default().push(result);
        }
    }
    let recorded: u64 = std::fs::read_dir(recordings.path())
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    results
        .config
        .insert("recorded_bytes".into(), recorded.into());

    judge(&mut results);
    print_table(&results, &names);
    let json = serde_json::to_string_pretty(&results)?;
    println!("\n{json}");
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, &json)?;
    }
    drop(proxy);
    Ok(())
}

/// A minimal relay: each connection is copied both ways to `target` with
/// `copy_bidirectional`.
async fn plain_relay(target: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    Ok(addr)
}

async fn measure_plain(peer: &GuacdPeer, relay: SocketAddr, bytes: u64) -> anyhow::Result<Run> {
    let stream = TcpStream::connect(relay).await?;
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut client = BenchClient::new(Wire::Tcp {
        read,
        write,
        buf: BytesMut::with_capacity(256 * 1024),
    });
    client.handshake(&plain_parameters()).await?;
    let conn = peer.next_connection(STEP).await?;
    let run = tokio::time::timeout(RUN_TIMEOUT, client.measure(bytes))
        .await
        .context("the transfer took too long")??;
    finish_peer(&conn).await?;
    Ok(run)
}

/// A connection session as the gateway creates it: the policy parameters (`disable-copy`,
/// `disable-upload`) when `policy`, a graphical recording wrapped under `secret` when given.
async fn measure_proxy(
    peer: &GuacdPeer,
    api: &ApiClient,
    (transport, secret, policy, viewer): (Transport, Option<&str>, bool, Viewer),
    bytes: u64,
) -> anyhow::Result<Run> {
    let target = Target {
        host: "10.0.0.10".into(),
        port: 3389,
    };
    let mut parameters: Vec<(&str, &str)> = vec![
        ("username", "bench"),
        ("password", "bench-password"),
        ("ignore-cert", "true"),
    ];
    if policy {
        parameters.extend([("disable-copy", "true"), ("disable-upload", "true")]);
    }
    let parameters = parameters
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Secret::new(v.to_owned())))
        .collect();
    let request = CreateSessionRequest {
        transport,
        conversation: Conversation::Connection,
        protocol: Some("rdp".into()),
        target: target.clone(),
        offer: None,
        sealed_offer: None,
        signalling: None,
        parameters,
        limits: LimitsRequest::default(),
        route: Some(Route::Guacd),
        recording: secret.map(|secret| RecordingRequest {
            graphical: true,
            typescript: false,
            resource_secret: Some(Secret::new(secret.to_owned())),
            recipients: Vec::new(),
            fail_closed: None,
        }),
        resource_id: Some("bench-resource".into()),
        user: Some("bench".into()),
    };
    let options = TunnelOptions {
        transport,
        target,
        protocol: None,
        signalling: None,
        limits: LimitsRequest::default(),
        resource_id: None,
        peer: PeerSettings::loopback(),
        connect_timeout: STEP,
    };
    let (session, id) = ClientSession::connect_with(api, request, &options)
        .await
        .context("creating the connection session")?;
    let stream = session
        .open()
        .await
        .context("opening the Guacamole channel")?;
    let mut client = BenchClient::new(Wire::proxy(stream));
    // ztproxy supplies the parameters: the client's `connect` carries only the version.
    client.handshake(&BTreeMap::new()).await?;
    let conn = peer
        .next_connection(STEP)
        .await
        .context("ztproxy did not connect to the guacd peer")?;
    let watching = match viewer {
        Viewer::None => None,
        Viewer::Stalled | Viewer::Reading => Some(join(api, &id, &options, viewer).await?),
    };
    let mut run = tokio::time::timeout(RUN_TIMEOUT, client.measure(bytes))
        .await
        .context("the transfer took too long")??;
    finish_peer(&conn).await?;
    drop(client);
    if let Some((viewer_session, (received, dropped), reader)) = watching {
        reader.abort();
        let dropped = dropped.load(std::sync::atomic::Ordering::Relaxed);
        let received = received.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("  the viewer received {received} bytes; dropped as too slow: {dropped}");
        run.viewer = Some((received, dropped));
        viewer_session.close().await;
    }
    session.close().await;
    let _ = api.delete_session(&id).await;
    Ok(run)
}

/// What a viewer saw: bytes received, and whether it was told it was too slow.
type Seen = (
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
);

/// Joins session `id` as a viewer over QUIC, through its handshake; a reading viewer then
/// reads and decodes everything in a task of its own, a stalled one never reads again.
async fn join(
    api: &ApiClient,
    id: &str,
    options: &TunnelOptions,
    viewer: Viewer,
) -> anyhow::Result<(ClientSession, Seen, tokio::task::JoinHandle<()>)> {
    let request = zt_api::control::CreateViewerRequest {
        transport: Transport::Quic,
        offer: None,
        sealed_offer: None,
        signalling: None,
        user: "bench-viewer".into(),
        input: false,
        clipboard: false,
    };
    let (session, _) = ClientSession::join(api, id, request, options)
        .await
        .context("joining as a viewer")?;
    let stream = session.open().await.context("the viewer's channel")?;
    let mut client = BenchClient::new(Wire::proxy(stream));
    client.handshake(&BTreeMap::new()).await?;
    let seen: Seen = Default::default();
    let (received, dropped) = seen.clone();
    let task = tokio::spawn(async move {
        use std::sync::atomic::Ordering::Relaxed;
        if viewer == Viewer::Reading {
            while let Ok(Some(bytes)) = client.wire.recv().await {
                received.fetch_add(bytes.len() as u64, Relaxed);
                client.decoder.feed(&bytes);
                while let Ok(Some(instruction)) = client.decoder.poll_instruction() {
                    if instruction.is(opcode::ERROR) {
                        dropped.store(instruction.arg(0) == Some("Viewer too slow"), Relaxed);
                    }
                }
            }
        } else {
            // Holds the stream open without reading it.
            std::future::pending::<()>().await;
        }
    });
    Ok((session, seen, task))
}

/// A tunnel session to the peer: ztproxy relays bytes without looking at them, and the
/// client performs guacd's handshake itself, as on the plain relay.
async fn measure_tunnel(
    peer: &GuacdPeer,
    api: &ApiClient,
    transport: Transport,
    bytes: u64,
) -> anyhow::Result<Run> {
    let options = TunnelOptions {
        transport,
        target: Target {
            host: peer.addr().ip().to_string(),
            port: peer.addr().port(),
        },
        protocol: None,
        signalling: None,
        limits: LimitsRequest::default(),
        resource_id: None,
        peer: PeerSettings::loopback(),
        connect_timeout: STEP,
    };
    let (session, id) = ClientSession::connect(api, &options)
        .await
        .context("creating the tunnel session")?;
    let stream = session.open().await.context("opening the tunnel")?;
    let mut client = BenchClient::new(Wire::proxy(stream));
    client.handshake(&plain_parameters()).await?;
    let conn = peer.next_connection(STEP).await?;
    let run = tokio::time::timeout(RUN_TIMEOUT, client.measure(bytes))
        .await
        .context("the transfer took too long")??;
    finish_peer(&conn).await?;
    drop(client);
    session.close().await;
    let _ = api.delete_session(&id).await;
    Ok(run)
}

/// The parameters a client speaking to guacd directly gives.
fn plain_parameters() -> BTreeMap<&'static str, &'static str> {
    [
        ("hostname", "10.0.0.10"),
        ("port", "3389"),
        ("username", "bench"),
        ("password", "bench-password"),
        ("ignore-cert", "true"),
    ]
    .into_iter()
    .collect()
}

/// Checks the peer's side of a finished run and ends the connection.
async fn finish_peer(conn: &PeerConn) -> anyhow::Result<()> {
    conn.wait_bulk_done(STEP)
        .await
        .context("the peer did not finish its bulk display")?;
    conn.disconnect().await.context("ending the guacd side")?;
    Ok(())
}

/// The client's transport: TCP (plain relay) or ztproxy's channel.
enum Wire {
    Tcp {
        read: OwnedReadHalf,
        write: OwnedWriteHalf,
        buf: BytesMut,
    },
    Proxy {
        reader: StreamReader,
        writer: StreamWriter,
    },
}

impl Wire {
    fn proxy(stream: ClientStream) -> Self {
        let (reader, writer) = stream.split();
        Self::Proxy { reader, writer }
    }

    async fn recv(&mut self) -> anyhow::Result<Option<Bytes>> {
        match self {
            Self::Tcp { read, buf, .. } => {
                buf.reserve(64 * 1024);
                if read.read_buf(buf).await? == 0 {
                    return Ok(None);
                }
                Ok(Some(buf.split().freeze()))
            }
            Self::Proxy { reader, .. } => Ok(reader.recv().await?),
        }
    }

    async fn send(&mut self, bytes: Bytes) -> anyhow::Result<()> {
        match self {
            Self::Tcp { write, .. } => write.write_all(&bytes).await?,
            Self::Proxy { writer, .. } => writer.send(bytes).await?,
        }
        Ok(())
    }
}

/// A Guacamole client as browsers run it, reduced to what costs: decoding every instruction
/// and answering every `sync`. The same code on every path.
struct BenchClient {
    wire: Wire,
    decoder: Decoder,
}

impl BenchClient {
    fn new(wire: Wire) -> Self {
        Self {
            wire,
            decoder: Decoder::new(Limits::default()),
        }
    }

    async fn send(&mut self, op: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        zt_guac::encode(op, args, &mut out);
        self.wire.send(out.freeze()).await
    }

    async fn expect(&mut self, op: &str) -> anyhow::Result<Instruction> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            while let Some(instruction) = self.decoder.poll_instruction()? {
                if instruction.is(op) {
                    return Ok(instruction);
                }
                if instruction.is(opcode::ERROR) {
                    bail!(
                        "`error` while waiting for `{op}`: {} {}",
                        instruction.arg(0).unwrap_or_default(),
                        instruction.arg(1).unwrap_or_default()
                    );
                }
            }
            match tokio::time::timeout_at(deadline, self.wire.recv()).await {
                Err(_) => bail!("timed out waiting for `{op}`"),
                Ok(Ok(Some(bytes))) => self.decoder.feed(&bytes),
                Ok(Ok(None)) => bail!("closed while waiting for `{op}`"),
                Ok(Err(error)) => return Err(error),
            }
        }
    }

    /// The client's handshake, answering `args` with `parameters` by name (guacd directly)
    /// or with the version alone (ztproxy, whose `args` lists no parameters).
    async fn handshake(&mut self, parameters: &BTreeMap<&str, &str>) -> anyhow::Result<()> {
        self.send(opcode::SELECT, &["rdp"]).await?;
        let args = self.expect(opcode::ARGS).await?;
        let (w, h, dpi) = DISPLAY;
        let (w, h, dpi) = (w.to_string(), h.to_string(), dpi.to_string());
        self.send(opcode::SIZE, &[&w, &h, &dpi]).await?;
        self.send(opcode::AUDIO, &[]).await?;
        self.send(opcode::VIDEO, &[]).await?;
        self.send(opcode::IMAGE, &["image/png", "image/jpeg", "image/webp"])
            .await?;
        self.send(opcode::TIMEZONE, &["Europe/Berlin"]).await?;
        self.send(opcode::NAME, &["bench"]).await?;
        let values: Vec<&str> = args
            .args()
            .enumerate()
            .map(|(i, name)| {
                if i == 0 {
                    name // the version, echoed
                } else {
                    parameters.get(name).copied().unwrap_or("")
                }
            })
            .collect();
        self.send(opcode::CONNECT, &values).await?;
        self.expect(opcode::READY).await?;
        Ok(())
    }

    /// Reads the display until `bytes` of instructions and the `sync` ending that frame have
    /// arrived, answering each `sync`. Timed from the first display byte.
    async fn measure(&mut self, bytes: u64) -> anyhow::Result<Run> {
        let mut received = 0u64;
        let mut instructions = 0u64;
        let mut frames = 0u64;
        let mut started = None;
        let mut replies = BytesMut::new();
        loop {
            while let Some(instruction) = self.decoder.poll_instruction()? {
                started.get_or_insert_with(Instant::now);
                received += instruction.len() as u64;
                instructions += 1;
                if instruction.is(opcode::SYNC) {
                    frames += 1;
                    let timestamp = instruction.arg(0).unwrap_or("0");
                    zt_guac::encode(opcode::SYNC, &[timestamp], &mut replies);
                    if received >= bytes {
                        let seconds = started
                            .map_or(Duration::ZERO, |s| s.elapsed())
                            .as_secs_f64();
                        self.wire.send(replies.split().freeze()).await?;
                        return Ok(Run {
                            bytes: received,
                            instructions,
                            frames,
                            seconds,
                            mbps: received as f64 / seconds / 1e6,
                            instructions_per_sec: instructions as f64 / seconds,
                            ztproxy_cpu_ns_per_byte: 0.0,
                            bench_cpu_ns_per_byte: 0.0,
                            viewer: None,
                        });
                    }
                } else if instruction.is(opcode::ERROR) || instruction.is(opcode::DISCONNECT) {
                    bail!(
                        "the session ended after {received} bytes: `{}` {}",
                        instruction.opcode(),
                        instruction.arg(0).unwrap_or_default()
                    );
                }
            }
            if !replies.is_empty() {
                self.wire.send(replies.split().freeze()).await?;
            }
            match self.wire.recv().await? {
                Some(chunk) => self.decoder.feed(&chunk),
                None => bail!("closed after {received} of {bytes} bytes"),
            }
        }
    }
}

fn judge(results: &mut Results) {
    for (path, runs) in &results.runs {
        let mbps: Vec<f64> = runs.iter().map(|r| r.mbps).collect();
        let ips: Vec<f64> = runs.iter().map(|r| r.instructions_per_sec).collect();
        results.mbps.insert(path.clone(), median(&mbps));
        results
            .instructions_per_sec
            .insert(path.clone(), median(&ips));
    }
    let Some(&plain) = results.mbps.get(PLAIN) else {
        return;
    };
    for (path, &mbps) in &results.mbps {
        if path == PLAIN {
            continue;
        }
        let ratio = mbps / plain;
        results.ratios.insert(format!("{path} / plain"), ratio);
        if path == QUIC || path == WEBRTC {
            results
                .targets
                .insert(format!("{path} >= 0.5 x plain TCP relay"), ratio >= 0.5);
        }
    }
}

fn print_table(results: &Results, paths: &[String]) {
    println!(
        "| path | MB/s (median) | instructions/s (median) | runs (MB/s) | CPU ns/byte: ztproxy, bench (medians) |"
    );
    println!("|---|---:|---:|---|---:|");
    for path in paths {
        let path = path.as_str();
        let runs: Vec<String> = results
            .runs
            .get(path)
            .map(|runs| runs.iter().map(|r| format!("{:.0}", r.mbps)).collect())
            .unwrap_or_default();
        let cpu = |f: fn(&Run) -> f64| {
            let values: Vec<f64> = results
                .runs
                .get(path)
                .map(|runs| runs.iter().map(f).collect())
                .unwrap_or_default();
            median(&values)
        };
        println!(
            "| {path} | {:.0} | {:.0} | {} | {:.2}, {:.2} |",
            results.mbps.get(path).copied().unwrap_or(f64::NAN),
            results
                .instructions_per_sec
                .get(path)
                .copied()
                .unwrap_or(f64::NAN),
            runs.join(", "),
            cpu(|r| r.ztproxy_cpu_ns_per_byte),
            cpu(|r| r.bench_cpu_ns_per_byte),
        );
    }
    println!();
    for (name, ratio) in &results.ratios {
        println!("{name}: {ratio:.2}");
    }
    for (target, met) in &results.targets {
        println!("[{}] {target}", if *met { "met" } else { "MISSED" });
    }
}
