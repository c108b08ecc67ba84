//! Shared helpers for the integration tests: start real servers and the daemon as local
//! processes on ephemeral loopback ports, in temporary directories, and stop them on drop.
//!
//! Every helper that needs a program from a Debian package fails with a message naming the
//! package (`scripts/setup` installs them all).

#![allow(clippy::missing_panics_doc)]

pub mod browser;
pub mod client;
pub mod guac_client;
pub mod guac_files;
pub mod hostile_mysql;
pub mod hostile_vnc;
pub mod k8s_api;
pub mod proc;
pub mod servers;
pub mod tds;
pub mod term;
pub mod web_site;
pub mod x11;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The `ztproxy` binary built from this package.
#[macro_export]
macro_rules! ztproxy_bin {
    () => {
        std::path::Path::new(env!("CARGO_BIN_EXE_ztproxy-test"))
    };
}

/// A free TCP port on 127.0.0.1 (bound and released; another process could take it, so
/// callers retry when a server fails to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(
    timeout: Duration,
    what: &str,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads audit events until `pred` holds for one of `session`'s, within `timeout`; panics
/// (failing the test) when the stream ends or the time is up.
#[allow(clippy::panic, clippy::expect_used)]
pub async fn wait_event(
    events: &mut zt_proxy::client::api::EventStream,
    session: &str,
    timeout: Duration,
    mut pred: impl FnMut(&zt_api::audit::AuditEvent) -> bool,
) -> zt_api::audit::AuditEvent {
    tokio::time::timeout(timeout, async {
        while let Some(record) = events.next().await {
            let event = record.expect("a well-formed audit record").event;
            if event.session() == Some(session) && pred(&event) {
                return event;
            }
        }
        panic!("the audit stream ended");
    })
    .await
    .expect("the audit event arrives in time")
}

/// Every audit event of `session` up to and including its `session_ended`, within `timeout`.
#[allow(clippy::expect_used)]
pub async fn events_until_ended(
    events: &mut zt_proxy::client::api::EventStream,
    session: &str,
    timeout: Duration,
) -> Vec<zt_api::audit::AuditEvent> {
    let mut seen = Vec::new();
    tokio::time::timeout(timeout, async {
        while let Some(record) = events.next().await {
            let event = record.expect("a well-formed audit record").event;
            if event.session() == Some(session) {
                let ended = matches!(event, zt_api::audit::AuditEvent::SessionEnded { .. });
                seen.push(event);
                if ended {
                    return;
                }
            }
        }
    })
    .await
    .expect("the session ends in time");
    seen
}

/// Exports `recording` with `bin`'s `recording export` in `format` (with `extra` arguments),
/// unwrapping it with the resource secret `secret`; the output's path (beside the recording).
#[allow(clippy::unwrap_used, clippy::panic)]
pub fn export_recording(
    bin: &Path,
    recording: &Path,
    secret: &str,
    format: &str,
    extra: &[&str],
) -> PathBuf {
    let secret_file = recording.with_extension("secret");
    std::fs::write(&secret_file, secret).unwrap();
    let out = recording.with_extension(format);
    let output = std::process::Command::new(bin)
        .args(["recording", "export", "--force", "--format", format])
        .arg("--secret-file")
        .arg(&secret_file)
        .arg("--output")
        .arg(&out)
        .args(extra)
        .arg(recording)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// Every instruction of an exported `.guac` recording (a key frame's images are large, so the
/// bounds are wide); panics unless it is well-formed and ends with a whole instruction.
#[allow(
    clippy::expect_used,
    reason = "test support: a malformed export is a failed test"
)]
pub fn decode_recording(bytes: &[u8]) -> Vec<zt_guac::Instruction> {
    let mut limits = zt_guac::Limits::default();
    limits.max_instruction_bytes = 64 * 1024 * 1024;
    limits.max_element_chars = 64 * 1024 * 1024;
    limits.max_elements = 1 << 20;
    let mut decoder = zt_guac::Decoder::new(limits);
    decoder.feed(bytes);
    let mut all = Vec::new();
    while let Some(instruction) = decoder
        .poll_instruction()
        .expect("the export is well-formed")
    {
        all.push(instruction);
    }
    assert_eq!(
        decoder.buffered_len(),
        0,
        "the export ends with a whole instruction"
    );
    all
}

/// The screen `instructions` draw, as a client shows it; panics if the display model could
/// not draw all of it.
pub fn replay_screen(instructions: &[zt_guac::Instruction]) -> zt_display::Screen {
    let mut display = zt_display::Display::new(zt_display::DisplayLimits::default());
    for instruction in instructions {
        let _ = display.handle(instruction);
    }
    assert!(!display.is_degraded(), "{:?}", display.degradation());
    display.screen()
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_for_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    wait_until(timeout, &format!("a listener on {addr}"), || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await
}

/// Finds `program` on PATH or in `extra` directories; the error names the Debian package.
pub fn require_program(program: &str, package: &str, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path_dirs).collect();
    dirs.extend(extra.iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("`{program}` not found: install the Debian package `{package}` (scripts/setup does)")
}

/// Whether the tests run as root (servers that refuse root then run as another user).
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The current user's name.
pub fn user_name() -> anyhow::Result<String> {
    let output = std::process::Command::new("id")
        .arg("-un")
        .output()
        .context("running id -un")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Numeric uid and gid of `user`.
pub fn user_ids(user: &str) -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let output = std::process::Command::new("id")
            .args([flag, user])
            .output()
            .with_context(|| format!("running id {flag} {user}"))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .with_context(|| format!("user {user} does not exist"))
    };
    Ok((id("-u")?, id("-g")?))
}

/// Gives `path` and everything below it to `uid:gid`. Symbolic links are changed
/// themselves and never followed (a link to `/etc` below `path` must not give `/etc` away).
pub fn chown_recursive(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_recursive(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// A deterministic byte stream (xorshift64*), fast enough to generate gigabytes.
#[derive(Debug, Clone)]
pub struct PatternStream {
    state: u64,
}

impl PatternStream {
    /// A stream for `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0x9E37_79B9_7F4A_7C15 | 1,
        }
    }

    /// Fills `buf` with the next bytes of the stream. `buf.len()` must be a multiple of 8
    /// for the stream to be independent of how it is chunked.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let value = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            let n = chunk.len();
            chunk.copy_from_slice(&value[..n]);
        }
    }

    /// SHA-256 of the first `len` bytes of the stream for `seed` (`len` a multiple of 8).
    pub fn digest(seed: u64, len: u64) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut stream = Self::new(seed);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            stream.fill(&mut buf[..n]);
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        hasher.finalize().into()
    }
}

/// The guacd double, a crate of its own (`tests/guacd-peer`) that the benchmarks use too.
pub use zt_guacd_peer as guacd_peer;

/// Every note of a recording as its event and user, sorted (`viewer_joined bob`; `-` for a
/// note naming no user). `secret` is the resource secret (base64) the recording is wrapped
/// under.
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub fn recording_notes(file: &Path, secret: &str) -> Vec<String> {
    let secret_file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(secret_file.path(), secret).unwrap();
    let key = zt_recorder_cli::KeyArgs {
        secret_file: Some(secret_file.path().to_owned()),
        secret_env: None,
        x25519_key: None,
    };
    let mut reader = zt_recorder_cli::open_unlocked(file, &key).expect("the recording opens");
    let mut notes = Vec::new();
    for event in reader.events(zt_recorder::EventRange::all()).unwrap() {
        if let zt_recorder::Event::Note(json) = event.unwrap().event {
            let note: serde_json::Value = serde_json::from_slice(&json).unwrap();
            let event = note["event"].as_str().unwrap_or("-");
            notes.push(format!("{event} {}", note["user"].as_str().unwrap_or("-")));
        }
    }
    notes.sort();
    notes
}
