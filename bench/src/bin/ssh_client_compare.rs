//! `ssh-client-compare`: the two SSH client libraries ztproxy could be built on — russh
//! (async, pure Rust) and ssh2 (libssh2 bindings, blocking, one thread per session) — doing
//! what a native SSH connection does, against one real `sshd` in the same run.
//!
//! ```text
//! cargo build --release -p zt-bench
//! target/release/ssh-client-compare --json bench/out/ssh-client-compare.json
//! ```
//!
//! Each library runs in a child process of its own (so its memory is its own), in
//! alternating rounds. A child measures, in three phases:
//!
//! * **drain**: `--sessions` concurrent sessions, each logging in with an ed25519 key,
//!   asking for a pty and running `seq 1 <--lines>` to the end: wall time, and the client's
//!   CPU time per session;
//! * **big**: one session draining `seq 1 <--big-lines>`: wall time (MB/s);
//! * **idle**: `--sessions` concurrent interactive shells with a pty, each waiting at its
//!   prompt: resident memory per session (RSS after, less RSS before).
//!
//! The sshd's own CPU is not counted (it is the same server for both).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde::{Deserialize, Serialize};
use zt_bench::{median, rss_kib};
use zt_tests::servers::{Sshd, SshdOptions};

#[derive(Debug, Parser)]
#[command(about = "russh against ssh2 (libssh2) for ztproxy's SSH connections")]
struct Args {
    /// Concurrent sessions in the drain and idle phases.
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// Lines each session of the drain phase prints (`seq 1 N`).
    #[arg(long, default_value_t = 20_000)]
    lines: u64,
    /// Lines of the big drain (`seq 1 N`).
    #[arg(long, default_value_t = 2_000_000)]
    big_lines: u64,
    /// Rounds (each library once per round; medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Internal: run one library's phases against this server and print JSON.
    #[arg(long, hide = true)]
    child: Option<String>,
    #[arg(long, hide = true)]
    port: Option<u16>,
    #[arg(long, hide = true)]
    user: Option<String>,
    #[arg(long, hide = true)]
    key: Option<PathBuf>,
}

/// One child's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Figures {
    library: String,
    drain_wall_s: f64,
    drain_cpu_ms_per_session: f64,
    drain_bytes: u64,
    big_wall_s: f64,
    big_mb_per_s: f64,
    idle_rss_kib_per_session: f64,
    idle_connect_cpu_ms_per_session: f64,
    peak_rss_kib: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(library) = &args.child {
        let target = Target {
            port: args.port.context("--port")?,
            user: args.user.clone().context("--user")?,
            key: args.key.clone().context("--key")?,
        };
        let figures = match library.as_str() {
            "russh" => russh_side::run(&args, &target)?,
            "ssh2" => ssh2_side::run(&args, &target)?,
            other => bail!("unknown library {other}"),
        };
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }

    let sshd = Sshd::start_with(&SshdOptions {
        config: vec![
            // Every session of a phase connects at once.
            "MaxStartups 1000:30:2000".into(),
            "LogLevel ERROR".into(),
        ],
        ..SshdOptions::default()
    })?;
    let me = std::env::current_exe()?;
    let mut all: Vec<Figures> = Vec::new();
    for round in 0..args.rounds {
        for library in ["russh", "ssh2"] {
            eprintln!("round {} of {}: {library}", round + 1, args.rounds);
            let output = Command::new(&me)
                .args(["--child", library])
                .args(["--port", &sshd.port.to_string()])
                .args(["--user", &sshd.user])
                .arg("--key")
                .arg(&sshd.client_key)
                .args(["--sessions", &args.sessions.to_string()])
                .args(["--lines", &args.lines.to_string()])
                .args(["--big-lines", &args.big_lines.to_string()])
                .output()?;
            if !output.status.success() {
                bail!(
                    "{library} child failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            all.push(serde_json::from_slice(&output.stdout)?);
        }
    }

    let cpu = zt_bench::cpu_model();
    println!(
        "CPU: {cpu}; {} sessions, seq 1 {} each; big: seq 1 {}; {} rounds, medians\n",
        args.sessions, args.lines, args.big_lines, args.rounds
    );
    println!("| metric | russh | ssh2 (libssh2) | ssh2 ÷ russh |");
    println!("|---|---:|---:|---:|");
    let metric = |name: &str, get: fn(&Figures) -> f64| {
        let of = |library: &str| {
            median(
                &all.iter()
                    .filter(|f| f.library == library)
                    .map(get)
                    .collect::<Vec<_>>(),
            )
        };
        let (a, b) = (of("russh"), of("ssh2"));
        println!("| {name} | {a:.1} | {b:.1} | {:.2} |", b / a);
    };
    metric("drain: wall s", |f| f.drain_wall_s);
    metric("drain: client CPU ms per session", |f| {
        f.drain_cpu_ms_per_session
    });
    metric("big drain MB/s", |f| f.big_mb_per_s);
    metric("idle: RSS KiB per session", |f| f.idle_rss_kib_per_session);
    metric("idle: CPU ms per session to log in", |f| {
        f.idle_connect_cpu_ms_per_session
    });
    metric("peak RSS KiB", |f| f.peak_rss_kib as f64);
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(
            path,
            serde_json::to_vec_pretty(&serde_json::json!({
                "cpu": cpu,
                "sessions": args.sessions,
                "lines": args.lines,
                "big_lines": args.big_lines,
                "runs": all,
            }))?,
        )?;
    }
    Ok(())
}

/// Where the children connect.
#[derive(Clone)]
struct Target {
    port: u16,
    user: String,
    key: PathBuf,
}

/// This process's CPU time (user + system), in seconds.
fn cpu_now() -> f64 {
    zt_bench::cpu_seconds(std::process::id()).unwrap_or(f64::NAN)
}

/// This process's peak resident set, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn expected_bytes(lines: u64) -> u64 {
    // `seq` output through a pty: each "\n" becomes "\r\n".
    (1..=lines).map(|n| n.to_string().len() as u64 + 2).sum()
}

mod russh_side {
    use super::*;
    use russh::ChannelMsg;
    use russh::client::{self, Handle};
    use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};

    struct AcceptAny;

    impl client::Handler for AcceptAny {
        type Error = russh::Error;

        async fn check_server_key(
            &mut self,
            _key: &PublicKeyOrCertificate,
        ) -> Result<bool, Self::Error> {
            Ok(true)
        }
    }

    async fn login(target: &Target) -> anyhow::Result<Handle<AcceptAny>> {
        let key = Arc::new(russh::keys::load_secret_key(&target.key, None)?);
        let config = Arc::new(client::Config::default());
        let mut handle = client::connect(config, ("127.0.0.1", target.port), AcceptAny).await?;
        let auth = handle
            .authenticate_publickey(&target.user, PrivateKeyWithHashAlg::new(key, None))
            .await?;
        anyhow::ensure!(auth.success(), "russh: key refused");
        Ok(handle)
    }

    /// Runs `command` with a pty and returns the bytes it printed.
    async fn drain(target: &Target, command: &str) -> anyhow::Result<u64> {
        let handle = login(target).await?;
        let mut channel = handle.channel_open_session().await?;
        channel
            .request_pty(false, "xterm-256color", 80, 24, 0, 0, &[])
            .await?;
        channel.exec(true, command).await?;
        let mut bytes = 0u64;
        while let Some(message) = channel.wait().await {
            if let ChannelMsg::Data { data } = message {
                bytes += data.len() as u64;
            }
        }
        Ok(bytes)
    }

    pub(super) fn run(args: &Args, target: &Target) -> anyhow::Result<Figures> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let target = Arc::new(target.clone());
            // Drain.
            let command = format!("seq 1 {}", args.lines);
            let cpu = cpu_now();
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..args.sessions {
                let target = target.clone();
                let command = command.clone();
                tasks.push(tokio::spawn(async move { drain(&target, &command).await }));
            }
            let mut drain_bytes = 0;
            for task in tasks {
                drain_bytes += task.await??;
            }
            let drain_wall = started.elapsed();
            let drain_cpu = cpu_now() - cpu;
            anyhow::ensure!(
                drain_bytes >= expected_bytes(args.lines) * args.sessions as u64,
                "russh: short drain ({drain_bytes} bytes)"
            );

            // Big.
            let started = Instant::now();
            let big = drain(&target, &format!("seq 1 {}", args.big_lines)).await?;
            let big_wall = started.elapsed();
            anyhow::ensure!(
                big >= expected_bytes(args.big_lines),
                "russh: short big drain"
            );

            // Idle.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = rss_kib(std::process::id()).unwrap_or(0);
            let cpu = cpu_now();
            let mut held = Vec::new();
            let mut waits = Vec::new();
            for _ in 0..args.sessions {
                let target = target.clone();
                waits.push(tokio::spawn(async move {
                    let handle = login(&target).await?;
                    let mut channel = handle.channel_open_session().await?;
                    channel
                        .request_pty(false, "xterm-256color", 80, 24, 0, 0, &[])
                        .await?;
                    channel.request_shell(true).await?;
                    // The prompt.
                    loop {
                        match channel.wait().await {
                            Some(ChannelMsg::Data { .. }) => break,
                            Some(_) => {}
                            None => anyhow::bail!("russh: shell closed"),
                        }
                    }
                    anyhow::Ok((handle, channel))
                }));
            }
            for wait in waits {
                held.push(wait.await??);
            }
            let connect_cpu = cpu_now() - cpu;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = rss_kib(std::process::id()).unwrap_or(0);
            drop(held);
            Ok(Figures {
                library: "russh".into(),
                drain_wall_s: drain_wall.as_secs_f64(),
                drain_cpu_ms_per_session: drain_cpu * 1e3 / args.sessions as f64,
                drain_bytes,
                big_wall_s: big_wall.as_secs_f64(),
                big_mb_per_s: big as f64 / big_wall.as_secs_f64() / 1e6,
                idle_rss_kib_per_session: after.saturating_sub(before) as f64
                    / args.sessions as f64,
                idle_connect_cpu_ms_per_session: connect_cpu * 1e3 / args.sessions as f64,
                peak_rss_kib: peak_rss_kib(),
            })
        })
    }
}

mod ssh2_side {
    use super::*;

    fn login(target: &Target) -> anyhow::Result<ssh2::Session> {
        let tcp = TcpStream::connect(("127.0.0.1", target.port))?;
        let mut session = ssh2::Session::new()?;
        session.set_tcp_stream(tcp);
        session.handshake()?;
        session.userauth_pubkey_file(&target.user, None, Path::new(&target.key), None)?;
        anyhow::ensure!(session.authenticated(), "ssh2: key refused");
        Ok(session)
    }

    fn drain(target: &Target, command: &str) -> anyhow::Result<u64> {
        let session = login(target)?;
        let mut channel = session.channel_session()?;
        channel.request_pty("xterm-256color", None, Some((80, 24, 0, 0)))?;
        channel.exec(command)?;
        let mut buf = vec![0; 32 * 1024];
        let mut bytes = 0u64;
        loop {
            let n = channel.read(&mut buf)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
        channel.wait_close()?;
        Ok(bytes)
    }

    pub(super) fn run(args: &Args, target: &Target) -> anyhow::Result<Figures> {
        let target = Arc::new(target.clone());
        // Drain: one thread per session, as libssh2 is used (guacd does the same).
        let command = format!("seq 1 {}", args.lines);
        let cpu = cpu_now();
        let started = Instant::now();
        let threads: Vec<_> = (0..args.sessions)
            .map(|_| {
                let target = target.clone();
                let command = command.clone();
                std::thread::spawn(move || drain(&target, &command))
            })
            .collect();
        let mut drain_bytes = 0;
        for thread in threads {
            drain_bytes += thread.join().unwrap()?;
        }
        let drain_wall = started.elapsed();
        let drain_cpu = cpu_now() - cpu;
        anyhow::ensure!(
            drain_bytes >= expected_bytes(args.lines) * args.sessions as u64,
            "ssh2: short drain ({drain_bytes} bytes)"
        );

        let started = Instant::now();
        let big = drain(&target, &format!("seq 1 {}", args.big_lines))?;
        let big_wall = started.elapsed();
        anyhow::ensure!(
            big >= expected_bytes(args.big_lines),
            "ssh2: short big drain"
        );

        // Idle: each thread holds its shell until every one is measured.
        std::thread::sleep(Duration::from_millis(500));
        let before = rss_kib(std::process::id()).unwrap_or(0);
        let cpu = cpu_now();
        let logged_in = Arc::new(Barrier::new(args.sessions + 1));
        let release = Arc::new(Barrier::new(args.sessions + 1));
        let threads: Vec<_> = (0..args.sessions)
            .map(|_| {
                let target = target.clone();
                let logged_in = logged_in.clone();
                let release = release.clone();
                std::thread::spawn(move || -> anyhow::Result<()> {
                    let result = (|| {
                        let session = login(&target)?;
                        let mut channel = session.channel_session()?;
                        channel.request_pty("xterm-256color", None, Some((80, 24, 0, 0)))?;
                        channel.shell()?;
                        let mut buf = [0; 1024];
                        // The prompt.
                        let n = channel.read(&mut buf)?;
                        anyhow::ensure!(n > 0, "ssh2: shell closed");
                        anyhow::Ok((session, channel))
                    })();
                    logged_in.wait();
                    release.wait();
                    drop(result?);
                    Ok(())
                })
            })
            .collect();
        logged_in.wait();
        let connect_cpu = cpu_now() - cpu;
        std::thread::sleep(Duration::from_millis(500));
        let after = rss_kib(std::process::id()).unwrap_or(0);
        release.wait();
        for thread in threads {
            thread.join().unwrap()?;
        }
        Ok(Figures {
            library: "ssh2".into(),
            drain_wall_s: drain_wall.as_secs_f64(),
            drain_cpu_ms_per_session: drain_cpu * 1e3 / args.sessions as f64,
            drain_bytes,
            big_wall_s: big_wall.as_secs_f64(),
            big_mb_per_s: big as f64 / big_wall.as_secs_f64() / 1e6,
            idle_rss_kib_per_session: after.saturating_sub(before) as f64 / args.sessions as f64,
            idle_connect_cpu_ms_per_session: connect_cpu * 1e3 / args.sessions as f64,
            peak_rss_kib: peak_rss_kib(),
        })
    }
}
