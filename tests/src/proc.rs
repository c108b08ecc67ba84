//! The daemon and the `connect` client as child processes.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use tempfile::TempDir;
use zt_proxy::client::api::{ApiAddress, ApiClient};

/// The daemon's ready line.
#[derive(Debug, Clone, Deserialize)]
pub struct Ready {
    /// Control socket.
    pub control_socket: PathBuf,
    /// Control TCP listener.
    #[serde(default)]
    pub control_tcp: Option<SocketAddr>,
    /// QUIC endpoint.
    #[serde(default)]
    pub quic: Option<SocketAddr>,
}

/// How to configure the daemon under test.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Open the loopback TCP control listener with a token.
    pub tcp_control: bool,
    /// Enable QUIC.
    pub quic: bool,
    /// `webrtc.require_sealed_signalling`.
    pub require_sealed: bool,
    /// Extra `key = value` lines for `[sessions]`.
    pub sessions: Vec<String>,
    /// Extra `key = value` lines for `[tunnel]`.
    pub tunnel: Vec<String>,
    /// `log.level` (`ZT_TEST_LOG` when set, else `info`).
    pub log_level: String,
    /// `RUST_LOG` for the process (overrides `log.level`).
    pub rust_log: Option<String>,
    /// More TOML sections (`[guacd]`, `[recordings]`), appended as they are.
    pub extra_toml: String,
    /// Extra `key = value` lines for `[control]`.
    pub control: Vec<String>,
    /// Extra `key = value` lines for `[quic]` (when `quic` is on).
    pub quic_lines: Vec<String>,
    /// Extra `key = value` lines for `[webrtc]`.
    pub webrtc: Vec<String>,
    /// Start the daemon with this soft and hard `RLIMIT_NOFILE` (through `prlimit`).
    pub nofile: Option<(u64, u64)>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            tcp_control: false,
            quic: true,
            require_sealed: false,
            sessions: Vec::new(),
            tunnel: Vec::new(),
            log_level: std::env::var("ZT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            rust_log: None,
            extra_toml: String::new(),
            control: Vec::new(),
            quic_lines: Vec::new(),
            webrtc: Vec::new(),
            nofile: None,
        }
    }
}

/// A running `ztproxy serve`, killed on drop.
pub struct ZtProxy {
    /// Working directory (config, socket, token).
    pub dir: TempDir,
    /// Ready line.
    pub ready: Ready,
    /// Control token, when the TCP listener is on.
    pub token: Option<String>,
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

impl ZtProxy {
    /// Starts the daemon with `options` and waits for its ready line.
    pub fn start(bin: &Path, options: &ProxyOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("ztproxy-test").tempdir()?;
        let socket = dir.path().join("control.sock");
        let mut config = format!("[control]\nsocket = \"{}\"\n", socket.display());
        let mut token = None;
        if options.tcp_control {
            let value = format!(
                "test-token-{}",
                hex::encode(zt_proxy::util::random_bytes::<16>()?)
            );
            let path = dir.path().join("token");
            std::fs::write(&path, &value)?;
            config.push_str(&format!(
                "tcp = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
                path.display()
            ));
            token = Some(value);
        }
        for line in &options.control {
            config.push_str(line);
            config.push('\n');
        }
        config.push_str(&format!(
            "\n[webrtc]\nudp_addrs = [\"127.0.0.1:0\"]\nrequire_sealed_signalling = {}\n",
            options.require_sealed
        ));
        for line in &options.webrtc {
            config.push_str(line);
            config.push('\n');
        }
        if options.quic {
            config.push_str("\n[quic]\nlisten = \"127.0.0.1:0\"\n");
            for line in &options.quic_lines {
                config.push_str(line);
                config.push('\n');
            }
        }
        config.push_str("\n[sessions]\n");
        for line in &options.sessions {
            config.push_str(line);
            config.push('\n');
        }
        config.push_str("\n[tunnel]\n");
        for line in &options.tunnel {
            config.push_str(line);
            config.push('\n');
        }
        config.push_str(&format!("\n[log]\nlevel = \"{}\"\n", options.log_level));
        config.push('\n');
        config.push_str(&options.extra_toml);
        let config_path = dir.path().join("ztproxy.toml");
        std::fs::write(&config_path, config)?;

        let mut command = match options.nofile {
            Some((soft, hard)) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={soft}:{hard}"))
                    .arg("--")
                    .arg(bin);
                command
            }
            None => Command::new(bin),
        };
        command
            .args(["serve", "--config"])
            .arg(&config_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG");
        if let Some(rust_log) = &options.rust_log {
            command.env("RUST_LOG", rust_log);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        capture(stderr, output.clone(), None);
        let (lines_tx, lines) = mpsc::channel();
        capture(stdout, output.clone(), Some(lines_tx));
        let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let log = String::from_utf8_lossy(&output.lock().unwrap_or_else(|e| e.into_inner()))
                .into_owned();
            bail!("ztproxy did not become ready; output:\n{log}");
        };
        let ready: Ready = serde_json::from_str(&line)
            .with_context(|| format!("ready line is not JSON: {line}"))?;
        Ok(Self {
            dir,
            ready,
            token,
            child,
            output,
        })
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A control API client on the Unix socket.
    pub fn api(&self) -> ApiClient {
        ApiClient::new(ApiAddress::Unix(self.ready.control_socket.clone()), None)
    }

    /// A control API client on the TCP listener with `token`.
    pub fn tcp_api(&self, token: Option<&str>) -> ApiClient {
        let addr = self
            .ready
            .control_tcp
            .map(|a| a.to_string())
            .unwrap_or_default();
        ApiClient::new(
            ApiAddress::Tcp(addr),
            token.map(|t| zt_api::Secret::new(t.to_owned())),
        )
    }

    /// `unix:<socket>` for the `connect` CLI.
    pub fn api_arg(&self) -> String {
        format!("unix:{}", self.ready.control_socket.display())
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        wait_child(&mut self.child, Duration::from_secs(15))
    }
}

impl Drop for ZtProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `ztproxy connect tunnel`, killed on drop.
pub struct TunnelCli {
    /// The local address it forwards.
    pub local: SocketAddr,
    /// The session id.
    pub session: String,
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

#[derive(Deserialize)]
struct Listening {
    listen: SocketAddr,
    session: String,
}

impl TunnelCli {
    /// Starts `ztproxy connect tunnel --api <api> --target <target> <extra…>` and waits until it
    /// listens. On failure, returns the process's exit status and output in the error.
    pub fn start(bin: &Path, api: &str, target: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let mut command = Command::new(bin);
        command
            .args(["connect", "tunnel", "--api", api, "--target", target])
            .args(extra);
        let (child, output, line) = spawn_until_first_line(command, "connect tunnel")?;
        let listening: Listening = serde_json::from_str(&line)
            .with_context(|| format!("unexpected first line: {line}"))?;
        Ok(Self {
            local: listening.listen,
            session: listening.session,
            child,
            output,
        })
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// Kills the process with SIGKILL (a client that vanishes) and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for TunnelCli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `bin connect tunnel …` expecting it to fail; returns its exit status and output.
pub fn run_failing_tunnel(bin: &Path, args: &[&str]) -> anyhow::Result<(ExitStatus, String)> {
    let output = Command::new(bin)
        .args(["connect", "tunnel"])
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status, text))
}

fn wait_child(child: &mut Child, timeout: Duration) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            bail!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn capture(
    stream: impl Read + Send + 'static,
    output: Arc<Mutex<Vec<u8>>>,
    lines: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    output
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(line.as_bytes());
                    if let Some(lines) = &lines {
                        let _ = lines.send(line.trim_end().to_owned());
                    }
                }
            }
        }
    });
}

/// Resident set size of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}

/// One row of a `/proc/net/{tcp,udp}{,6}` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketRow {
    /// Local address as the kernel prints it (`0100007F` is 127.0.0.1).
    pub local_ip_hex: String,
    /// Local port.
    pub local_port: u16,
    /// State (`01` is TCP ESTABLISHED; `07` is every unconnected UDP socket).
    pub state: String,
    /// Bytes waiting to be read.
    pub rx_queue: u64,
    /// Socket inode (as `/proc/<pid>/fd` links name it: `socket:[inode]`).
    pub inode: String,
}

/// The rows of `table` (`"tcp"`, `"udp"`, `"udp6"`, …) in this network namespace; none when it
/// cannot be read.
pub fn socket_table(table: &str) -> Vec<SocketRow> {
    let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (ip, port) = fields.get(1)?.split_once(':')?;
            let (_, rx) = fields.get(4)?.split_once(':')?;
            Some(SocketRow {
                local_ip_hex: ip.to_owned(),
                local_port: u16::from_str_radix(port, 16).ok()?,
                state: (*fields.get(3)?).to_owned(),
                rx_queue: u64::from_str_radix(rx, 16).ok()?,
                inode: (*fields.get(9)?).to_owned(),
            })
        })
        .collect()
}

/// The socket inodes process `pid` holds.
pub fn socket_inodes_of(pid: u32) -> std::collections::HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    target
                        .strip_prefix("socket:[")
                        .and_then(|t| t.strip_suffix(']'))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The process's output so far, shared with the threads that read it.
type Output = Arc<Mutex<Vec<u8>>>;

/// Starts `command` (stdout and stderr captured, `RUST_LOG` unset) and waits up to 60 s for
/// the first line it prints. On failure, returns the process's exit status and output in the
/// error.
fn spawn_until_first_line(
    mut command: Command,
    what: &str,
) -> anyhow::Result<(Child, Output, String)> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let output: Output = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().context("stderr")?;
    let stdout = child.stdout.take().context("stdout")?;
    capture(stderr, output.clone(), None);
    let (lines_tx, lines) = mpsc::channel();
    capture(stdout, output.clone(), Some(lines_tx));
    match lines.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => Ok((child, output, line)),
        Err(_) => {
            let status = wait_child(&mut child, Duration::from_secs(5));
            let log = String::from_utf8_lossy(&output.lock().unwrap_or_else(|e| e.into_inner()))
                .into_owned();
            bail!("{what} did not start ({status:?}); output:\n{log}");
        }
    }
}

/// A running `ztproxy` client command that prints a JSON `listening` line first
/// (`connect web`, `connect guac`, `recording play`), killed on drop.
pub struct Helper {
    /// Its `listening` line.
    pub listening: serde_json::Value,
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Helper {
    /// Starts `bin <args…>` and waits for its first line. On failure, returns the process's
    /// exit status and output in the error.
    pub fn start(bin: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut command = Command::new(bin);
        command.args(args).stdin(Stdio::null());
        let (child, output, line) = spawn_until_first_line(command, &format!("{args:?}"))?;
        let listening: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("unexpected first line: {line}"))?;
        Ok(Self {
            listening,
            child,
            output,
        })
    }

    /// A string field of the `listening` line.
    pub fn field(&self, name: &str) -> String {
        self.listening
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Stops the process with SIGTERM, as Ctrl-C would, and waits for it.
    pub fn stop(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        wait_child(&mut self.child, timeout)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
