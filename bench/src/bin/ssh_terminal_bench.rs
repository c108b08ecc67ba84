//! `ssh-terminal-bench`: native SSH connections through ztproxy to a real `sshd`, as a user
//! sees them, at 1024×768 and 96 DPI over QUIC, with the workloads of issue 16:
//!
//! * (a) login to the first prompt;
//! * (b) typing 20 characters at 5 per second (keystroke-to-echo latency: from sending the
//!   key to the first instruction that draws);
//! * (c) 200 lines at 20 lines per second
//!   (`for i in $(seq 1 200); do echo line $i $((i*7919)) abcdefghijklmnopqrstuvwxyz; sleep
//!   0.05; done`);
//! * (d) `seq 1 1000000` as fast as it comes;
//! * concurrency: `--sessions` sessions running (c) at once, each ending with the target's
//!   clock (`date +%s%N`) on screen, so the lag between the target printing the last line
//!   and the client showing it is measured; ztproxy's CPU time over that phase gives the
//!   sessions one core holds.
//!
//! ```text
//! cargo build --release -p zt-proxy -p zt-bench
//! target/release/ssh-terminal-bench --json bench/out/ssh-terminal.json
//! ```
//!
//! Bytes are what the client received (instructions as encoded on the wire, after `ready`).
//! The reference is Apache guacd 1.6.0 with OpenSSH, measured on this machine kind with the
//! same workloads (guacd cannot run here): (a) 24.7 KB, (b) about 200 bytes per echoed
//! character, (c) 357 KB beyond login. The screen is read back from the client's display
//! model (`zt_terminal::readback`) to know when each phase has ended.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use zt_api::Secret;
use zt_api::control::{Conversation, CreateSessionRequest, LimitsRequest, Target, Transport};
use zt_bench::{Percentiles, cpu_seconds, micros, rss_kib};
use zt_guac::{Instruction, opcode};
use zt_proxy::client::api::ApiClient;
use zt_proxy::client::session::ClientSession;
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::servers::{Sshd, SshdOptions};

#[derive(Debug, Parser)]
#[command(about = "native SSH connections through ztproxy, as the user sees them")]
struct Args {
    /// Concurrent sessions running workload (c).
    #[arg(long, default_value_t = 40)]
    sessions: usize,
    /// A short run (CI smoke): fewer sessions.
    #[arg(long)]
    quick: bool,
    /// Only the concurrency phase (for profiling it).
    #[arg(long)]
    concurrency_only: bool,
    /// The ztproxy binary (default: next to this one).
    #[arg(long)]
    ztproxy: Option<PathBuf>,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

const DISPLAY: (u32, u32, u32) = (1024, 768, 96);
const STEP: Duration = Duration::from_secs(60);
const WORKLOAD_C: &str = "for i in $(seq 1 200); do echo line $i $((i*7919)) abcdefghijklmnopqrstuvwxyz; sleep 0.05; done";
/// guacd 1.6.0's figures for (a), (b) and (c), measured against OpenSSH on this machine kind.
const GUACD_A: f64 = 24_700.0;
const GUACD_B: f64 = 200.0;
const GUACD_C: f64 = 357_000.0;

#[derive(Debug, Default, Serialize)]
struct Results {
    cpu: String,
    phases: BTreeMap<String, Phase>,
    keystroke_echo_us: Option<Percentiles>,
    /// The baseline for (d): OpenSSH's own client running `seq 1 1000000` with a pty, to
    /// /dev/null, in the same run (median of 3).
    ssh_seq_seconds: f64,
    bytes_per_echoed_char: f64,
    concurrency: Option<Concurrency>,
    ratios_to_guacd: BTreeMap<String, f64>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Phase {
    bytes: u64,
    instructions: u64,
    copies: u64,
    images: u64,
    frames: u64,
    seconds: f64,
    ztproxy_cpu_ms: f64,
    ztproxy_rss_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Concurrency {
    sessions: usize,
    rss_kib_per_session: f64,
    seconds: f64,
    ztproxy_cpu_seconds: f64,
    sessions_per_core: f64,
    lag_ms: Percentiles,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.sessions = args.sessions.min(4);
    }
    let bin = zt_bench::ztproxy_binary(args.ztproxy.as_deref())?;
    let sshd = Sshd::start_with(&SshdOptions {
        test_user: true,
        config: vec!["MaxStartups 1000:30:2000".into(), "LogLevel ERROR".into()],
        ..SshdOptions::default()
    })?;
    let proxy = ZtProxy::start(
        &bin,
        &ProxyOptions {
            log_level: "warn".into(),
            ..ProxyOptions::default()
        },
    )?;
    let api = proxy.api();
    let pid = proxy.pid();
    let target = Arc::new(Login::of(&sshd));
    let mut results = Results {
        cpu: zt_bench::cpu_model(),
        ..Results::default()
    };

    if args.concurrency_only {
        let concurrency = concurrency(&api, &target, args.sessions, pid).await?;
        println!("{}", serde_json::to_string_pretty(&concurrency)?);
        return Ok(());
    }
    // (a) login to the first prompt.
    let cpu = cpu_seconds(pid)?;
    let started = Instant::now();
    let mut user = User::open(&api, &target).await?;
    // A user reads the screen ten times a second at most (reading it back is the load
    // generator's dearest work; a client that falls behind gets coalesced frames).
    user.read_every = Duration::from_millis(100);
    user.until("the first prompt", |s| s.prompt_is_last())
        .await?;
    results
        .phases
        .insert("a login".into(), user.phase(started, cpu, pid)?);
    user.bottom_rows = Some(3);

    // (b) 20 characters at 5 per second.
    user.reset();
    let cpu = cpu_seconds(pid)?;
    let started = Instant::now();
    let mut latencies = Vec::new();
    for (n, c) in "abcdefghijklmnopqrst".chars().enumerate() {
        let due = started + Duration::from_millis(200 * n as u64);
        user.idle_until(due).await?;
        latencies.push(user.echo(u32::from(c)).await?);
    }
    user.idle_until(started + Duration::from_millis(200 * 20))
        .await?;
    let typed = user.phase(started, cpu, pid)?;
    results.bytes_per_echoed_char = typed.bytes as f64 / 20.0;
    results.keystroke_echo_us = Some(Percentiles::of(&latencies, micros));
    results.phases.insert("b typing".into(), typed);
    // Ctrl+U: clear the line.
    user.ctrl(u32::from('u')).await?;

    // (c) 200 lines at 20 per second.
    user.type_text(WORKLOAD_C).await?;
    user.reset();
    let cpu = cpu_seconds(pid)?;
    let started = Instant::now();
    user.type_text("\n").await?;
    user.until("line 200", |s| {
        s.prompt_is_last() && s.lines.iter().any(|l| l.starts_with("line 200 1583800 "))
    })
    .await?;
    results
        .phases
        .insert("c 200 lines".into(), user.phase(started, cpu, pid)?);

    // (d) a million lines.
    user.type_text("seq 1 1000000").await?;
    user.reset();
    let cpu = cpu_seconds(pid)?;
    let started = Instant::now();
    user.type_text("\n").await?;
    user.until("the end of seq", |s| {
        let shown: Vec<&String> = s.lines.iter().filter(|l| !l.is_empty()).collect();
        s.prompt_is_last() && shown.len() >= 2 && shown[shown.len() - 2] == "1000000"
    })
    .await?;
    results
        .phases
        .insert("d seq 1 1000000".into(), user.phase(started, cpu, pid)?);
    drop(user);
    results.ssh_seq_seconds = ssh_seq(&sshd)?;

    results.concurrency = Some(concurrency(&api, &target, args.sessions, pid).await?);
    for (name, guacd) in [("a login", GUACD_A), ("c 200 lines", GUACD_C)] {
        results
            .ratios_to_guacd
            .insert(name.into(), results.phases[name].bytes as f64 / guacd);
    }
    results
        .ratios_to_guacd
        .insert("b typing".into(), results.bytes_per_echoed_char / GUACD_B);
    print(&results);
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    Ok(())
}

/// Where and as whom the sessions log in.
struct Login {
    port: u16,
    user: String,
    password: String,
    host_key: String,
}

impl Login {
    fn of(sshd: &Sshd) -> Self {
        Self {
            port: sshd.port,
            user: sshd.user.clone(),
            password: sshd.password.clone().unwrap_or_default(),
            host_key: sshd.host_public_key.clone(),
        }
    }
}

/// What the user's screen shows.
struct Screen {
    lines: Vec<String>,
}

impl Screen {
    /// The last non-empty row is a prompt.
    fn prompt_is_last(&self) -> bool {
        self.lines
            .iter()
            .rev()
            .find(|l| !l.is_empty())
            .is_some_and(|l| l.ends_with('$'))
    }
}

/// A user at a Guacamole client with a native SSH session.
struct User {
    client: GuacClient,
    display: zt_display::Display,
    _session: ClientSession,
    bytes: u64,
    instructions: u64,
    copies: u64,
    images: u64,
    frames: u64,
    /// Read the screen back at most this often.
    read_every: Duration,
    /// Read only this many rows at the bottom.
    bottom_rows: Option<u32>,
    last_read: Option<Instant>,
}

impl User {
    async fn open(api: &ApiClient, login: &Login) -> anyhow::Result<Self> {
        let parameters = [
            ("username", login.user.as_str()),
            ("password", login.password.as_str()),
            ("host-key", login.host_key.as_str()),
        ];
        let request = CreateSessionRequest {
            transport: Transport::Quic,
            conversation: Conversation::Connection,
            protocol: Some("ssh".into()),
            target: Target {
                host: "127.0.0.1".into(),
                port: login.port,
            },
            offer: None,
            sealed_offer: None,
            signalling: None,
            parameters: parameters
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
            zt_tests::client::client_options(Transport::Quic, ([127, 0, 0, 1], login.port).into());
        let (session, _id) = ClientSession::connect_with(api, request, &options).await?;
        let handshake = Handshake {
            select: "ssh".into(),
            size: DISPLAY,
            ..Handshake::default()
        };
        let client = GuacClient::connect(&session, &handshake).await?;
        Ok(Self {
            client,
            display: zt_display::Display::new(zt_display::DisplayLimits::default()),
            _session: session,
            bytes: 0,
            instructions: 0,
            copies: 0,
            images: 0,
            frames: 0,
            read_every: Duration::ZERO,
            bottom_rows: None,
            last_read: None,
        })
    }

    fn reset(&mut self) {
        (
            self.bytes,
            self.instructions,
            self.copies,
            self.images,
            self.frames,
        ) = (0, 0, 0, 0, 0);
    }

    fn phase(&self, started: Instant, cpu: f64, pid: u32) -> anyhow::Result<Phase> {
        Ok(Phase {
            bytes: self.bytes,
            instructions: self.instructions,
            copies: self.copies,
            images: self.images,
            frames: self.frames,
            seconds: started.elapsed().as_secs_f64(),
            ztproxy_cpu_ms: (cpu_seconds(pid)? - cpu) * 1e3,
            ztproxy_rss_kib: rss_kib(pid)?,
        })
    }

    /// Receives one instruction; `None` when nothing came within `timeout`.
    async fn receive(&mut self, timeout: Duration) -> anyhow::Result<Option<Instruction>> {
        let deadline = Instant::now() + timeout;
        match self.client.next(timeout).await {
            Ok(Some(instruction)) => {
                self.bytes += instruction.raw().len() as u64;
                self.instructions += 1;
                match instruction.opcode() {
                    opcode::COPY => self.copies += 1,
                    opcode::IMG => self.images += 1,
                    opcode::SYNC => self.frames += 1,
                    _ => {}
                }
                let _ = self.display.handle(&instruction);
                Ok(Some(instruction))
            }
            Ok(None) => anyhow::bail!("the connection closed"),
            Err(_) if Instant::now() >= deadline => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn screen(&mut self) -> Screen {
        let screen = self.display.screen();
        self.last_read = Some(Instant::now());
        // Only the bottom rows, when that is all that is needed: reading text back is the
        // load generator's dearest work.
        let cell = zt_terminal::font::Rasteriser::new(12.0, DISPLAY.2).cell();
        let rows = screen.height() / cell.height;
        let first = rows.saturating_sub(self.bottom_rows.unwrap_or(rows));
        let start = (first * cell.height * screen.width()) as usize;
        let pixels = screen.pixels().get(start..).unwrap_or_default();
        Screen {
            lines: zt_terminal::readback::read_text(
                pixels,
                screen.width(),
                (rows - first) * cell.height,
                12.0,
                DISPLAY.2,
                "",
            ),
        }
    }

    /// Receives until a frame ends with `condition` true of the screen (read back at most
    /// every `read_every`, and at the latest that long after the last frame).
    async fn until(
        &mut self,
        what: &str,
        condition: impl Fn(&Screen) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut unread_frame = false;
        loop {
            let now = Instant::now();
            anyhow::ensure!(now < deadline, "timed out waiting for {what}");
            let next_read = self.last_read.map_or(now, |last| last + self.read_every);
            let wait = if unread_frame {
                next_read.saturating_duration_since(now)
            } else {
                deadline - now
            };
            if let Some(instruction) = self.receive(wait).await?
                && instruction.is(opcode::SYNC)
            {
                unread_frame = true;
            }
            if unread_frame && Instant::now() >= next_read {
                unread_frame = false;
                if condition(&self.screen()) {
                    return Ok(());
                }
            }
        }
    }

    /// Receives (and so answers `sync`s) until `when`.
    async fn idle_until(&mut self, when: Instant) -> anyhow::Result<()> {
        while Instant::now() < when {
            self.receive(when.saturating_duration_since(Instant::now()))
                .await?;
        }
        Ok(())
    }

    async fn send_key(&mut self, keysym: u32, pressed: bool) -> anyhow::Result<()> {
        self.client
            .send(&Instruction::new(
                opcode::KEY,
                &[keysym.to_string(), u8::from(pressed).to_string()],
            ))
            .await
    }

    /// Types `keysym` and returns how long until the first instruction that draws.
    async fn echo(&mut self, keysym: u32) -> anyhow::Result<Duration> {
        let sent = Instant::now();
        self.send_key(keysym, true).await?;
        self.send_key(keysym, false).await?;
        loop {
            let Some(instruction) = self.receive(STEP).await? else {
                anyhow::bail!("no echo");
            };
            if !matches!(instruction.opcode(), opcode::SYNC | opcode::NOP) {
                return Ok(sent.elapsed());
            }
        }
    }

    async fn ctrl(&mut self, keysym: u32) -> anyhow::Result<()> {
        self.send_key(0xffe3, true).await?;
        self.send_key(keysym, true).await?;
        self.send_key(keysym, false).await?;
        self.send_key(0xffe3, false).await
    }

    async fn type_text(&mut self, text: &str) -> anyhow::Result<()> {
        for c in text.chars() {
            let keysym = if c == '\n' { 0xff0d } else { u32::from(c) };
            self.send_key(keysym, true).await?;
            self.send_key(keysym, false).await?;
        }
        Ok(())
    }
}

/// How long OpenSSH's client takes to run `seq 1 1000000` with a pty (median of 3).
fn ssh_seq(sshd: &Sshd) -> anyhow::Result<f64> {
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let status = sshd
            .ssh_with(sshd.port, &["-tt"], "seq 1 1000000")?
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "ssh seq failed");
        times.push(started.elapsed().as_secs_f64());
    }
    Ok(zt_bench::median(&times))
}

/// `sessions` users run (c) at once; each prints the target's clock when its loop ends.
async fn concurrency(
    api: &ApiClient,
    login: &Arc<Login>,
    sessions: usize,
    pid: u32,
) -> anyhow::Result<Concurrency> {
    let rss_before = rss_kib(pid)?;
    let mut users = Vec::new();
    for _ in 0..sessions {
        let mut user = User::open(api, login).await?;
        user.until("the first prompt", |s| s.prompt_is_last())
            .await?;
        // The load generator reads the last rows, ten times a second.
        user.read_every = Duration::from_millis(100);
        user.bottom_rows = Some(3);
        users.push(user);
    }
    let rss = rss_kib(pid)?;
    let cpu = cpu_seconds(pid)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut user in users {
        tasks.push(tokio::spawn(async move {
            user.type_text(&format!("{WORKLOAD_C}; echo done $(date +%s%N)\n"))
                .await?;
            // Until the target's clock shows; then how late the screen showed it.
            let mut shown = None;
            user.until("the end of the loop", |s| {
                s.lines
                    .iter()
                    .any(|l| l.starts_with("done ") && l[5..].parse::<u128>().is_ok())
            })
            .await?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos();
            for line in user.screen().lines {
                if let Some(printed) = line
                    .strip_prefix("done ")
                    .and_then(|t| t.parse::<u128>().ok())
                {
                    shown = Some(Duration::from_nanos(now.saturating_sub(printed) as u64));
                }
            }
            shown.ok_or_else(|| anyhow::anyhow!("no clock on screen"))
        }));
    }
    let mut lags = Vec::new();
    for task in tasks {
        lags.push(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu;
    Ok(Concurrency {
        sessions,
        rss_kib_per_session: rss.saturating_sub(rss_before) as f64 / sessions as f64,
        seconds,
        ztproxy_cpu_seconds: cpu,
        sessions_per_core: sessions as f64 * seconds / cpu.max(1e-9),
        lag_ms: Percentiles::of(&lags, |d| d.as_secs_f64() * 1e3),
    })
}

fn print(results: &Results) {
    println!("CPU: {}; 1024×768 at 96 DPI over QUIC\n", results.cpu);
    println!(
        "| phase | bytes to client | copy | img | frames | seconds | ztproxy CPU ms | ztproxy RSS KiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, p) in &results.phases {
        println!(
            "| {name} | {} | {} | {} | {} | {:.2} | {:.0} | {} |",
            p.bytes, p.copies, p.images, p.frames, p.seconds, p.ztproxy_cpu_ms, p.ztproxy_rss_kib
        );
    }
    println!();
    println!(
        "seq 1 1000000 through OpenSSH's client (-tt, to /dev/null): {:.2} s",
        results.ssh_seq_seconds
    );
    println!(
        "bytes per echoed character: {:.0}",
        results.bytes_per_echoed_char
    );
    if let Some(p) = &results.keystroke_echo_us {
        println!(
            "keystroke to echo: p50 {:.0} µs, p99 {:.0} µs (n = {})",
            p.p50, p.p99, p.n
        );
    }
    for (name, ratio) in &results.ratios_to_guacd {
        println!("{name}: {ratio:.2} × guacd 1.6's bytes");
    }
    if let Some(c) = &results.concurrency {
        println!(
            "{} concurrent sessions of (c): {:.0} KiB RSS each, ztproxy {:.2} CPU s over {:.1} s, \
             {:.0} sessions per core; lag from the target's last line to the screen p50 {:.0} ms, \
             p99 {:.0} ms, max {:.0} ms",
            c.sessions,
            c.rss_kib_per_session,
            c.ztproxy_cpu_seconds,
            c.seconds,
            c.sessions_per_core,
            c.lag_ms.p50,
            c.lag_ms.p99,
            c.lag_ms.max
        );
    }
}
