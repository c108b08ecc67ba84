//! `vnc-bench`: a TigerVNC desktop (`Xvnc`, 1024×768, twm, an xterm) through ztproxy's native
//! VNC client, as a user's Guacamole client receives it (over QUIC, PNG and JPEG accepted),
//! against a plain RFB client asking the same server for Raw pixels, connected to the same
//! desktop at the same time (the baseline: what a client would get without encoding):
//!
//! * (a) idle: the whole session's first 10 s, with a digital clock that changes once a
//!   second (guacd 1.6.0 sent 11.2 KB for its 10 s session of the same kind of desktop in
//!   `../shared/fixtures/guacd-1.6/vnc-tigervnc.guac`, the issue's measurement says about
//!   14 KB);
//! * (b) an xterm printing 200 lines, about 100 a second, smooth-scrolling, until the screen
//!   is quiet;
//! * (c) a window moved across the screen for 5 s (`xdotool windowmove`, 50 steps a second);
//! * keystroke to frame: a key typed into the xterm (`cat`) to the first drawing of its echo.
//!
//! Bytes are Guacamole wire bytes to the client, and RFB bytes from the server for the Raw
//! client; frames are `sync`s and FramebufferUpdates.
//!
//! ```text
//! cargo build --release -p zt-proxy -p zt-bench
//! target/release/vnc-bench --json bench/out/vnc.json
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use zt_api::Secret;
use zt_api::control::{Conversation, CreateSessionRequest, LimitsRequest, Target, Transport};
use zt_guac::{Instruction, opcode};
use zt_proxy::client::session::ClientSession;
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::x11::{Desktop, Server};
use zt_vnc::rfb::{Client, Config, ENCODING_RAW, Event};

#[derive(Debug, Parser)]
#[command(about = "native VNC through ztproxy against a Raw RFB client on the same desktop")]
struct Args {
    /// Keystrokes timed.
    #[arg(long, default_value_t = 60)]
    keys: usize,
    /// A short run (CI smoke): 3 s idle, 50 lines, 1 s of moving, 10 keys.
    #[arg(long)]
    quick: bool,
    /// The ztproxy binary (default: next to this one).
    #[arg(long)]
    ztproxy: Option<PathBuf>,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

const PASSWORD: &str = "bench-pw";
const SIZE: (u32, u32) = (1024, 768);
const STEP: Duration = Duration::from_secs(60);
/// The screen is settled when nothing has arrived for this long.
const QUIET: Duration = Duration::from_millis(500);

#[derive(Debug, Default, Serialize)]
struct Scenario {
    ztproxy_bytes: u64,
    raw_bytes: u64,
    bytes_ratio: f64,
    ztproxy_fps: f64,
    raw_fps: f64,
    seconds: f64,
}

#[derive(Debug, Default, Serialize)]
struct Results {
    cpu: String,
    desktop: String,
    idle_clock: Scenario,
    guacd_idle_bytes_fixture: u64,
    idle_bytes_vs_guacd: f64,
    xterm_200_lines: Scenario,
    window_move: Scenario,
    keystroke_p50_ms: f64,
    keystroke_p90_ms: f64,
    keystrokes: usize,
}

/// A plain RFB client asking for Raw pixels as fast as the server gives updates.
struct RawClient {
    bytes: Arc<AtomicU64>,
    frames: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RawClient {
    fn start(port: u16) -> Self {
        let bytes = Arc::new(AtomicU64::new(0));
        let frames = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, f, s) = (bytes.clone(), frames.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut client = Client::new(Config {
                password: Some(Secret::new(PASSWORD.to_owned())),
                encodings: vec![ENCODING_RAW],
                ..Config::default()
            });
            let mut buf = vec![0u8; 256 * 1024];
            while !s.load(Ordering::Relaxed) {
                while let Ok(Some(event)) = client.poll() {
                    if event == Event::UpdateEnd {
                        f.fetch_add(1, Ordering::Relaxed);
                        let (w, h) = client.size();
                        client.request_update(true, 0, 0, w, h);
                    }
                }
                stream.write_all(&client.output()).unwrap();
                match stream.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        b.fetch_add(n as u64, Ordering::Relaxed);
                        client.feed(&buf[..n]).unwrap();
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => panic!("raw client: {e}"),
                }
            }
        });
        Self {
            bytes,
            frames,
            stop,
        }
    }

    fn snapshot(&self) -> (u64, u64) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.frames.load(Ordering::Relaxed),
        )
    }
}

impl Drop for RawClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The user's side: wire bytes and frames received.
struct User {
    client: GuacClient,
    bytes: u64,
    frames: u64,
}

impl User {
    /// Receives one instruction; false when nothing came within `timeout`.
    async fn receive(&mut self, timeout: Duration) -> anyhow::Result<Option<Instruction>> {
        match self.client.next(timeout).await {
            Ok(Some(instruction)) => {
                if std::env::var_os("VNC_BENCH_TRACE").is_some() {
                    let text = String::from_utf8_lossy(instruction.raw());
                    eprintln!(
                        "{} {}",
                        instruction.len(),
                        text.chars().take(70).collect::<String>()
                    );
                }
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

    /// Receives for `duration`.
    async fn receive_for(&mut self, duration: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            self.receive(end.saturating_duration_since(Instant::now()))
                .await?;
        }
        Ok(())
    }

    /// Receives until nothing has come for [`QUIET`]; when the last instruction came.
    async fn until_quiet(&mut self) -> anyhow::Result<Instant> {
        let started = Instant::now();
        let mut last = Instant::now();
        while self.receive(QUIET).await?.is_some() {
            last = Instant::now();
            anyhow::ensure!(started.elapsed() < STEP, "the screen never settled");
        }
        Ok(last)
    }

    async fn send(&mut self, op: &str, args: &[&str]) -> anyhow::Result<()> {
        self.client.send(&Instruction::new(op, args)).await
    }
}

/// Measures `action` (started at the window's start) until the screen is quiet (or for
/// `fixed`), for both clients.
async fn measure(
    user: &mut User,
    raw: &RawClient,
    fixed: Option<Duration>,
    action: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Scenario> {
    let (raw_bytes, raw_frames) = raw.snapshot();
    let (bytes, frames) = (user.bytes, user.frames);
    let started = Instant::now();
    action()?;
    let ended = match fixed {
        Some(duration) => {
            user.receive_for(duration).await?;
            Instant::now()
        }
        None => user.until_quiet().await?,
    };
    let seconds = ended.duration_since(started).as_secs_f64();
    let (raw_bytes_after, raw_frames_after) = raw.snapshot();
    let scenario = Scenario {
        ztproxy_bytes: user.bytes - bytes,
        raw_bytes: raw_bytes_after - raw_bytes,
        bytes_ratio: 0.0,
        ztproxy_fps: (user.frames - frames) as f64 / seconds,
        raw_fps: (raw_frames_after - raw_frames) as f64 / seconds,
        seconds,
    };
    Ok(Scenario {
        bytes_ratio: scenario.ztproxy_bytes as f64 / scenario.raw_bytes.max(1) as f64,
        ..scenario
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (idle, lines, moving, keys) = if args.quick {
        (3, 50, 1, 10)
    } else {
        (10, 200, 5, args.keys.max(1))
    };
    let bin = zt_bench::ztproxy_binary(args.ztproxy.as_deref())?;
    let mut desktop = Desktop::start(Server::Xvnc, SIZE, PASSWORD)?;
    let proxy = ZtProxy::start(&bin, &ProxyOptions::default())?;
    let api = proxy.api();
    let mut results = Results {
        cpu: zt_bench::cpu_model(),
        desktop: format!("Xvnc {}x{}, twm, xterm", SIZE.0, SIZE.1),
        guacd_idle_bytes_fixture: 11_194,
        ..Results::default()
    };

    // (a) From the session's start: the first frame, then a clock for the rest.
    desktop.start_client(
        "xclock",
        &["-digital", "-update", "1", "-geometry", "+700+40"],
    )?;
    desktop.wait_for_window("xclock")?;
    let raw = RawClient::start(desktop.port);
    let request = CreateSessionRequest {
        transport: Transport::Quic,
        conversation: Conversation::Connection,
        protocol: Some("vnc".into()),
        target: Target {
            host: "127.0.0.1".into(),
            port: desktop.port,
        },
        offer: None,
        sealed_offer: None,
        signalling: None,
        parameters: [("password", PASSWORD)]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Secret::new((*v).to_owned())))
            .collect(),
        limits: LimitsRequest::default(),
        route: None,
        recording: None,
        resource_id: None,
        user: None,
    };
    let options =
        zt_tests::client::client_options(Transport::Quic, ([127, 0, 0, 1], desktop.port).into());
    let (session, _id) = ClientSession::connect_with(&api, request, &options).await?;
    let handshake = Handshake {
        select: "vnc".into(),
        size: (SIZE.0, SIZE.1, 96),
        ..Handshake::default()
    };
    let (raw_bytes, raw_frames) = raw.snapshot();
    let started = Instant::now();
    let mut user = User {
        client: GuacClient::connect(&session, &handshake).await?,
        bytes: 0,
        frames: 0,
    };
    // The pointer rests on the background, as a user's would (TigerVNC then lets the
    // client draw it).
    user.send(opcode::MOUSE, &["1000", "700", "0"]).await?;
    user.receive_for(Duration::from_secs(idle)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let (raw_bytes_after, raw_frames_after) = raw.snapshot();
    results.idle_clock = Scenario {
        ztproxy_bytes: user.bytes,
        raw_bytes: raw_bytes_after - raw_bytes,
        bytes_ratio: user.bytes as f64 / (raw_bytes_after - raw_bytes).max(1) as f64,
        ztproxy_fps: user.frames as f64 / seconds,
        raw_fps: (raw_frames_after - raw_frames) as f64 / seconds,
        seconds,
    };
    results.idle_bytes_vs_guacd = user.bytes as f64 / results.guacd_idle_bytes_fixture as f64;

    // (b) An xterm printing lines, started by a fifo.
    let fifo = tempfile::tempdir()?;
    let trigger = fifo.path().join("go");
    let made = std::process::Command::new("mkfifo")
        .arg(&trigger)
        .status()?;
    anyhow::ensure!(made.success(), "mkfifo failed");
    desktop.start_client(
        "xterm",
        &[
            "-geometry",
            "80x24+20+300",
            "-title",
            "zt-scroll",
            // Smooth scrolling (no jump scroll): every line moves the window.
            "+j",
            "-e",
            "sh",
            "-c",
            &format!(
                "read x < '{}'; seq 1 {lines} | while read l; do echo \"line $l\"; sleep 0.01; done; \
                 exec sleep 600",
                trigger.display()
            ),
        ],
    )?;
    desktop.wait_for_window("zt-scroll")?;
    user.until_quiet().await?;
    let go = trigger.clone();
    results.xterm_200_lines = measure(&mut user, &raw, None, move || {
        // Opening the fifo for writing blocks until the xterm's shell reads it.
        std::thread::spawn(move || std::fs::write(go, "go\n"));
        Ok(())
    })
    .await?;

    // (c) A window moved across the screen, 50 steps a second.
    let window = desktop.wait_for_window("zt-scroll")?;
    let steps = moving * 50;
    let script = format!(
        "i=0; while [ $i -lt {steps} ]; do xdotool windowmove {window} $((20 + i * 600 / {steps})) \
         $((300 - i * 200 / {steps})); sleep 0.02; i=$((i + 1)); done"
    );
    let mut mover = desktop.command("sh")?;
    mover.args(["-c", &script]);
    let mut child = None;
    results.window_move = measure(&mut user, &raw, None, || {
        child = Some(mover.spawn()?);
        Ok(())
    })
    .await?;
    if let Some(mut child) = child {
        child.wait()?;
    }

    // Keystroke to frame: a key into the desktop's xterm (`cat`), to the first drawing that
    // follows it (the echo).
    user.send(opcode::MOUSE, &["200", "100", "0"]).await?;
    user.until_quiet().await?;
    let mut samples = Vec::with_capacity(keys);
    for i in 0..keys {
        let keysym = if i % 30 == 29 {
            0xFF0D
        } else {
            u32::from(b'a' + (i % 26) as u8)
        };
        let sent = Instant::now();
        user.send(opcode::KEY, &[&keysym.to_string(), "1"]).await?;
        user.send(opcode::KEY, &[&keysym.to_string(), "0"]).await?;
        loop {
            let instruction = user
                .receive(STEP)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no echo of key {i}"))?;
            if [opcode::IMG, opcode::RECT, opcode::COPY]
                .iter()
                .any(|op| instruction.is(op))
            {
                samples.push(sent.elapsed());
                break;
            }
        }
        user.until_quiet_short().await?;
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| zt_bench::millis(*d)).collect();
    ms.sort_by(f64::total_cmp);
    results.keystrokes = ms.len();
    results.keystroke_p50_ms = zt_bench::median(&ms);
    results.keystroke_p90_ms = ms[(ms.len() * 9 / 10).min(ms.len() - 1)];
    drop(raw);

    let json = serde_json::to_string_pretty(&results)?;
    println!("{json}");
    if let Some(path) = args.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, &json)?;
    }
    Ok(())
}

impl User {
    /// Receives until nothing has come for 100 ms (between keystrokes).
    async fn until_quiet_short(&mut self) -> anyhow::Result<()> {
        while self.receive(Duration::from_millis(100)).await?.is_some() {}
        Ok(())
    }
}
