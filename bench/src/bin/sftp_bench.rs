//! `sftp-bench`: SFTP file transfers through ztproxy (native SSH with `enable-sftp`, the
//! Guacamole filesystem object and `file` streams) over QUIC and WebRTC, each direction,
//! against OpenSSH's `scp` and `sftp` straight to the same `sshd` (with its `sftp-server`)
//! in the same run. The ratios are ztproxy's throughput over `scp`'s; the issue's target is
//! at least 0.5 in each direction. ztproxy's peak resident memory is reported with the file
//! size, to show that memory per transfer does not grow with the file.
//!
//! ```text
//! cargo build --release -p zt-proxy -p zt-bench
//! target/release/sftp-bench --json bench/out/sftp.json
//! ```
//!
//! The client is the tests' Guacamole client (`zt_tests::guac_files`): it acknowledges each
//! blob of a download, and sends upload blobs (6,048 bytes, as guacamole-common-js) up to a
//! 4 MiB window ahead of ztproxy's acks; it hashes every byte, as ztproxy does. Medians of
//! `--rounds` runs of each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use zt_api::Secret;
use zt_api::control::{Conversation, CreateSessionRequest, LimitsRequest, Target, Transport};
use zt_proxy::client::session::ClientSession;
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::guac_files::{Files, pattern_source, sha256_file, write_pattern};
use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::servers::{Sshd, SshdOptions};

#[derive(Debug, Parser)]
#[command(about = "SFTP through ztproxy against scp and sftp to the same sshd")]
struct Args {
    /// File size in MiB.
    #[arg(long, default_value_t = 512)]
    mib: u64,
    /// Runs of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// A short run (CI smoke): 16 MiB, one round.
    #[arg(long)]
    quick: bool,
    /// Only ztproxy over this transport (`quic` or `webrtc`), no baselines (for profiling).
    #[arg(long)]
    only: Option<String>,
    /// The ztproxy binary (default: next to this one).
    #[arg(long)]
    ztproxy: Option<PathBuf>,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
struct Results {
    cpu: String,
    bytes: u64,
    /// MB/s (10^6 bytes per second), medians.
    throughput_mb_s: BTreeMap<String, f64>,
    /// ztproxy's over scp's, per transport and direction.
    ratio_to_scp: BTreeMap<String, f64>,
    /// ztproxy's peak resident memory (VmHWM) after the transfers, and before them.
    ztproxy_peak_rss_kib: u64,
    ztproxy_rss_before_kib: u64,
}

const STEP: Duration = Duration::from_secs(600);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.mib = args.mib.min(16);
        args.rounds = 1;
    }
    let bytes = args.mib << 20;
    let bin = zt_bench::ztproxy_binary(args.ztproxy.as_deref())?;
    let sshd = Sshd::start_with(&SshdOptions {
        test_user: true,
        config: vec!["LogLevel ERROR".into()],
        ..SshdOptions::default()
    })?;
    let home = PathBuf::from("/home").join(&sshd.user);
    let root = home.join("jail");
    std::fs::create_dir_all(&root)?;
    let down = root.join("down.bin");
    let down_sha = write_pattern(&down, 11, bytes)?;
    let (uid, gid) = zt_tests::user_ids(&sshd.user)?;
    zt_tests::chown_recursive(&home, uid, gid)?;
    let scratch = tempfile::tempdir()?;
    let source = scratch.path().join("source.bin");
    write_pattern(&source, 12, bytes)?;

    let proxy = ZtProxy::start(
        &bin,
        &ProxyOptions {
            log_level: "warn".into(),
            ..ProxyOptions::default()
        },
    )?;
    let mut results = Results {
        cpu: zt_bench::cpu_model(),
        bytes,
        ztproxy_rss_before_kib: zt_bench::rss_kib(proxy.pid())?,
        ..Results::default()
    };

    let ssh = OpenSsh::new(&sshd);
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..args.rounds {
        let mb_s = |elapsed: Duration| bytes as f64 / elapsed.as_secs_f64() / 1e6;
        if let Some(only) = &args.only {
            let transport = if only == "webrtc" {
                Transport::Webrtc
            } else {
                Transport::Quic
            };
            let (down, up) =
                through_ztproxy(&proxy, &sshd, &root, transport, bytes, &down_sha).await?;
            println!(
                "{only}: download {:.0} MB/s, upload {:.0} MB/s",
                mb_s(down),
                mb_s(up)
            );
            continue;
        }
        let got = scratch.path().join("got.bin");
        let took = ssh.scp(format!("{}:jail/down.bin", ssh.user_host()), &got)?;
        check(&got, &down_sha)?;
        samples
            .entry("scp download".into())
            .or_default()
            .push(mb_s(took));
        let took = ssh.scp(&source, format!("{}:jail/up-scp.bin", ssh.user_host()))?;
        samples
            .entry("scp upload".into())
            .or_default()
            .push(mb_s(took));
        let took = ssh.sftp(&format!("get jail/down.bin {}", got.display()))?;
        check(&got, &down_sha)?;
        samples
            .entry("sftp download".into())
            .or_default()
            .push(mb_s(took));
        let took = ssh.sftp(&format!("put {} jail/up-sftp.bin", source.display()))?;
        samples
            .entry("sftp upload".into())
            .or_default()
            .push(mb_s(took));

        for transport in [Transport::Quic, Transport::Webrtc] {
            let name = format!("{transport:?}").to_lowercase();
            let (down_took, up_took) =
                through_ztproxy(&proxy, &sshd, &root, transport, bytes, &down_sha).await?;
            samples
                .entry(format!("ztproxy {name} download"))
                .or_default()
                .push(mb_s(down_took));
            samples
                .entry(format!("ztproxy {name} upload"))
                .or_default()
                .push(mb_s(up_took));
        }
    }
    if args.only.is_some() {
        return Ok(());
    }
    for (name, values) in &samples {
        results
            .throughput_mb_s
            .insert(name.clone(), zt_bench::median(values));
    }
    for transport in ["quic", "webrtc"] {
        for direction in ["download", "upload"] {
            let ours = results.throughput_mb_s[&format!("ztproxy {transport} {direction}")];
            let scp = results.throughput_mb_s[&format!("scp {direction}")];
            results
                .ratio_to_scp
                .insert(format!("{transport} {direction}"), ours / scp);
        }
    }
    results.ztproxy_peak_rss_kib = peak_rss_kib(proxy.pid())?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

fn check(path: &Path, sha: &[u8; 32]) -> anyhow::Result<()> {
    anyhow::ensure!(
        &sha256_file(path)? == sha,
        "{} has the wrong bytes",
        path.display()
    );
    Ok(())
}

/// One download and one upload of `bytes` through ztproxy: their times.
async fn through_ztproxy(
    proxy: &ZtProxy,
    sshd: &Sshd,
    root: &Path,
    transport: Transport,
    bytes: u64,
    down_sha: &[u8; 32],
) -> anyhow::Result<(Duration, Duration)> {
    let api = proxy.api();
    let parameters = [
        ("username", sshd.user.clone()),
        ("password", sshd.password.clone().unwrap_or_default()),
        ("host-key", sshd.host_public_key.clone()),
        ("enable-sftp", "true".into()),
        ("sftp-root-directory", root.display().to_string()),
    ];
    let request = CreateSessionRequest {
        transport,
        conversation: Conversation::Connection,
        protocol: Some("ssh".into()),
        target: Target {
            host: "127.0.0.1".into(),
            port: sshd.port,
        },
        offer: None,
        sealed_offer: None,
        signalling: None,
        parameters: parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Secret::new(v.clone())))
            .collect(),
        limits: LimitsRequest::default(),
        route: None,
        recording: None,
        resource_id: Some("res-sftp-bench".into()),
        user: Some("bench".into()),
    };
    let options = zt_tests::client::client_options(transport, ([127, 0, 0, 1], 22).into());
    let (session, id): (ClientSession, String) =
        ClientSession::connect_with(&api, request, &options).await?;
    let handshake = Handshake {
        select: "ssh".into(),
        size: (1024, 768, 96),
        ..Handshake::default()
    };
    let mut client = GuacClient::connect(&session, &handshake).await?;
    let mut files = Files::new(&mut client);
    files.step = STEP;
    files.filesystem().await?;

    let started = Instant::now();
    let got = files
        .download("/down.bin", STEP, |_| {})
        .await?
        .ok_or_else(|| anyhow::anyhow!("no body for /down.bin"))?;
    let down_took = started.elapsed();
    anyhow::ensure!(
        got.size == bytes && &got.sha256 == down_sha,
        "download differs"
    );

    let started = Instant::now();
    let sent = files
        .upload(1, "up-ztproxy.bin", 4 << 20, pattern_source(13, bytes))
        .await?
        .map_err(|refused| anyhow::anyhow!("upload refused: {refused}"))?;
    let up_took = started.elapsed();
    let landed = root.join("up-ztproxy.bin");
    anyhow::ensure!(sha256_file(&landed)? == sent.sha256, "upload differs");
    std::fs::remove_file(&landed)?;
    api.delete_session(&id).await?;
    Ok((down_took, up_took))
}

/// OpenSSH's clients, logging in with the fixture's key.
struct OpenSsh {
    port: u16,
    user: String,
    key: PathBuf,
}

impl OpenSsh {
    fn new(sshd: &Sshd) -> Self {
        Self {
            port: sshd.port,
            user: sshd.user.clone(),
            key: sshd.client_key.clone(),
        }
    }

    fn user_host(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }

    fn common(&self, command: &mut Command, port_flag: &str) {
        command
            .arg(port_flag)
            .arg(self.port.to_string())
            .arg("-i")
            .arg(&self.key)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
            ]);
    }

    fn scp(
        &self,
        from: impl AsRef<std::ffi::OsStr>,
        to: impl AsRef<std::ffi::OsStr>,
    ) -> anyhow::Result<Duration> {
        let mut command = Command::new("scp");
        self.common(&mut command, "-P");
        command.arg("-q").arg(from).arg(to);
        timed(command)
    }

    fn sftp(&self, batch: &str) -> anyhow::Result<Duration> {
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), format!("{batch}\n"))?;
        let mut command = Command::new("sftp");
        self.common(&mut command, "-P");
        command
            .arg("-q")
            .arg("-b")
            .arg(file.path())
            .arg(self.user_host());
        timed(command)
    }
}

fn timed(mut command: Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = command.output()?;
    let took = started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(took)
}

/// The peak resident set size of `pid` (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM for {pid}"))
}
