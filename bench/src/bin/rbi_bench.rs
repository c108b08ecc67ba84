//! `rbi-bench`: remote browser sessions through ztproxy (over QUIC), as a user's Guacamole
//! client receives them, against the test web site (`zt_tests::web_site`):
//!
//! * time from the session's creation to the first frame on the client (median of N
//!   sessions);
//! * bytes a second of a static page once it has drawn (target: about 0);
//! * bytes and frames a second of a page with a sliding box, against the baseline of
//!   forwarding whole frames: the same frames, each as a full PNG of the page as Chromium
//!   itself screenshots it (`chromium --headless --screenshot`, measured in the same run);
//! * input to frame: a key typed into a text field to the first frame after it (p50, p99);
//! * memory: the proportional set (PSS) of every process of N concurrent sessions' browsers,
//!   per session, and ztproxy's.
//!
//! ```text
//! cargo build --release -p zt-proxy -p zt-bench
//! target/release/rbi-bench --json bench/out/rbi.json
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use zt_api::Secret;
use zt_api::control::{Conversation, CreateSessionRequest, LimitsRequest, Target, Transport};
use zt_guac::{Instruction, opcode};
use zt_proxy::client::session::ClientSession;
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::web_site::WebSite;

#[derive(Debug, Parser)]
#[command(
    about = "remote browser sessions through ztproxy: first frame, bytes, input latency, memory"
)]
struct Args {
    /// Sessions started for the first-frame median and run at once for memory.
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    /// Keystrokes timed.
    #[arg(long, default_value_t = 100)]
    keys: usize,
    /// A short run (CI smoke): 2 sessions, 2 s windows, 10 keys.
    #[arg(long)]
    quick: bool,
    /// The ztproxy binary (default: next to this one).
    #[arg(long)]
    ztproxy: Option<PathBuf>,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

const SIZE: (u32, u32) = (1024, 768);
const QUIET: Duration = Duration::from_millis(700);

#[derive(Debug, Default, Serialize)]
struct Results {
    cpu: String,
    viewport: String,
    sessions: usize,
    first_frame_median_ms: f64,
    first_frame_max_ms: f64,
    static_bytes_per_s: f64,
    static_seconds: f64,
    animation_bytes_per_s: f64,
    animation_fps: f64,
    full_frame_png_bytes: u64,
    animation_baseline_bytes_per_s: f64,
    animation_bytes_ratio: f64,
    keys: usize,
    input_to_frame_p50_ms: f64,
    input_to_frame_p99_ms: f64,
    pss_per_session_mib: f64,
    ztproxy_pss_mib: f64,
}

struct User {
    client: GuacClient,
    bytes: u64,
    frames: u64,
}

impl User {
    async fn receive(&mut self, timeout: Duration) -> anyhow::Result<Option<Instruction>> {
        match self.client.next(timeout).await {
            Ok(Some(instruction)) => {
                self.bytes += instruction.len() as u64;
                if instruction.is(opcode::SYNC) {
                    self.frames += 1;
                }
                Ok(Some(instruction))
            }
            Ok(None) => anyhow::bail!("the session closed"),
            Err(_) => Ok(None),
        }
    }

    /// Receives until a frame with drawing in it has ended (`img` … `sync`).
    async fn until_drawn_frame(&mut self, limit: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + limit;
        let mut drew = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(!left.is_zero(), "no frame within {limit:?}");
            if let Some(instruction) = self.receive(left).await? {
                if instruction.is(opcode::IMG) || instruction.is(opcode::RECT) {
                    drew = true;
                }
                if instruction.is(opcode::SYNC) && drew {
                    return Ok(Instant::now());
                }
            }
        }
    }

    /// Receives until nothing has been drawn for [`QUIET`] (a focused field's caret timer
    /// keeps Chromium making frames, which change nothing and arrive as bare `sync`s).
    async fn until_quiet(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut last = Instant::now();
        loop {
            let left = QUIET.saturating_sub(last.elapsed());
            if left.is_zero() {
                return Ok(());
            }
            if let Some(instruction) = self.receive(left).await?
                && !instruction.is(opcode::SYNC)
            {
                last = Instant::now();
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "never quiet");
        }
    }

    async fn receive_for(&mut self, duration: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            self.receive(end.saturating_duration_since(Instant::now()))
                .await?;
        }
        Ok(())
    }
}

fn request(site: &WebSite, path: &str) -> CreateSessionRequest {
    CreateSessionRequest {
        transport: Transport::Quic,
        conversation: Conversation::Connection,
        protocol: Some("http".into()),
        target: Target {
            host: "127.0.0.1".into(),
            port: site.port,
        },
        offer: None,
        sealed_offer: None,
        signalling: None,
        parameters: [
            ("url", site.url(path)),
            (
                "allowed-url-patterns",
                format!("http://127.0.0.1:{}/*", site.port),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Secret::new(v)))
        .collect(),
        limits: LimitsRequest::default(),
        route: None,
        recording: None,
        resource_id: None,
        user: None,
    }
}

/// Creates a session at `path` and connects its client: the session and the client.
async fn open(
    api: &zt_proxy::client::api::ApiClient,
    site: &WebSite,
    path: &str,
) -> anyhow::Result<(ClientSession, User)> {
    let options =
        zt_tests::client::client_options(Transport::Quic, ([127, 0, 0, 1], site.port).into());
    let (session, _id) = ClientSession::connect_with(api, request(site, path), &options).await?;
    let handshake = Handshake {
        select: "http".into(),
        size: (SIZE.0, SIZE.1, 96),
        ..Handshake::default()
    };
    let client = GuacClient::connect(&session, &handshake).await?;
    Ok((
        session,
        User {
            client,
            bytes: 0,
            frames: 0,
        },
    ))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Proportional memory (PSS: shared pages divided among their users, so the browsers'
/// shared libraries count once) of the processes whose command line names `needle` (KiB).
fn pss_of(needle: &str) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmdline).contains(needle) {
            continue;
        }
        total += pss_kib(&path);
    }
    total
}

fn pss_kib(proc_dir: &Path) -> u64 {
    std::fs::read_to_string(proc_dir.join("smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The page at `url` as one full PNG, as Chromium screenshots it.
fn full_frame_png(url: &str) -> anyhow::Result<u64> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("shot.png");
    let status = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", dir.path().join("profile").display()),
            &format!("--window-size={},{}", SIZE.0, SIZE.1),
            &format!("--screenshot={}", out.display()),
            url,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "chromium --screenshot failed");
    Ok(std::fs::metadata(&out)?.len())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (sessions, window, keys) = if args.quick {
        (2, Duration::from_secs(2), 10)
    } else {
        (
            args.sessions.max(1),
            Duration::from_secs(5),
            args.keys.max(1),
        )
    };
    let bin = zt_bench::ztproxy_binary(args.ztproxy.as_deref())?;
    let site = WebSite::start()?;
    let profiles = tempfile::tempdir()?;
    let proxy = ZtProxy::start(
        &bin,
        &ProxyOptions {
            extra_toml: format!(
                "[rbi]\nprofile_directory = \"{}\"\nmax_browsers = {}\n",
                profiles.path().display(),
                sessions + 2
            ),
            ..ProxyOptions::default()
        },
    )?;
    let api = proxy.api();
    let mut results = Results {
        cpu: zt_bench::cpu_model(),
        viewport: format!("{}x{}", SIZE.0, SIZE.1),
        sessions,
        keys,
        ..Results::default()
    };

    // First frame, N times; the sessions stay open for the memory figure.
    let mut open_sessions = Vec::new();
    let mut first = Vec::new();
    for _ in 0..sessions {
        let started = Instant::now();
        let (session, mut user) = open(&api, &site, "/").await?;
        let at = user.until_drawn_frame(Duration::from_secs(30)).await?;
        first.push(at.duration_since(started).as_secs_f64() * 1e3);
        open_sessions.push((session, user));
    }
    for (_, user) in &mut open_sessions {
        user.until_quiet().await?;
    }
    let browsers_kib = pss_of(&profiles.path().display().to_string());
    let proxy_kib = pss_kib(&PathBuf::from(format!("/proc/{}", proxy.pid())));
    results.pss_per_session_mib = browsers_kib as f64 / 1024.0 / sessions as f64;
    results.ztproxy_pss_mib = proxy_kib as f64 / 1024.0;
    first.sort_by(f64::total_cmp);
    results.first_frame_median_ms = percentile(&first, 0.5);
    results.first_frame_max_ms = first.last().copied().unwrap_or(0.0);

    // A static page: what it costs once drawn.
    let (_, user) = open_sessions.first_mut().expect("a session");
    let before = user.bytes;
    let started = Instant::now();
    user.receive_for(window).await?;
    results.static_seconds = started.elapsed().as_secs_f64();
    results.static_bytes_per_s = (user.bytes - before) as f64 / results.static_seconds;
    drop(open_sessions);

    // The animation, against forwarding each frame whole.
    let (_session, mut user) = open(&api, &site, "/animation").await?;
    user.until_drawn_frame(Duration::from_secs(30)).await?;
    user.receive_for(Duration::from_millis(500)).await?;
    let (bytes, frames) = (user.bytes, user.frames);
    let started = Instant::now();
    user.receive_for(window).await?;
    let seconds = started.elapsed().as_secs_f64();
    results.animation_bytes_per_s = (user.bytes - bytes) as f64 / seconds;
    results.animation_fps = (user.frames - frames) as f64 / seconds;
    results.full_frame_png_bytes = full_frame_png(&site.url("/animation"))?;
    results.animation_baseline_bytes_per_s =
        results.full_frame_png_bytes as f64 * results.animation_fps;
    results.animation_bytes_ratio =
        results.animation_bytes_per_s / results.animation_baseline_bytes_per_s.max(1.0);
    drop(user);

    // Input to frame: keys typed into the form's field.
    let (_session, mut user) = open(&api, &site, "/form").await?;
    user.until_drawn_frame(Duration::from_secs(30)).await?;
    user.until_quiet().await?;
    for mask in ["1", "0"] {
        user.client
            .send(&Instruction::new(opcode::MOUSE, &["40", "130", mask]))
            .await?;
    }
    user.until_quiet().await?;
    let mut latencies = Vec::new();
    for i in 0..keys {
        let keysym = u32::from(b'a' + (i % 26) as u8).to_string();
        let sent = Instant::now();
        user.client
            .send(&Instruction::new(opcode::KEY, &[keysym.as_str(), "1"]))
            .await?;
        user.client
            .send(&Instruction::new(opcode::KEY, &[keysym.as_str(), "0"]))
            .await?;
        let at = user.until_drawn_frame(Duration::from_secs(10)).await?;
        latencies.push(at.duration_since(sent).as_secs_f64() * 1e3);
        user.until_quiet().await?;
    }
    latencies.sort_by(f64::total_cmp);
    results.input_to_frame_p50_ms = percentile(&latencies, 0.5);
    results.input_to_frame_p99_ms = percentile(&latencies, 0.99);

    let json = serde_json::to_string_pretty(&results)?;
    println!("{json}");
    if let Some(path) = args.json {
        std::fs::write(path, &json)?;
    }
    Ok(())
}
