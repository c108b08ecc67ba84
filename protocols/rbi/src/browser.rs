//! One Chromium per session: a fresh profile in a private temporary directory, the process
//! in a process group of its own, and both gone when the session ends, whatever the reason.
//!
//! * Debian's `chromium`, headless, with DevTools on an ephemeral loopback port (the URL is
//!   read from its stderr). `--no-sandbox` only when ztproxy runs as root, where Chromium's
//!   sandbox cannot start (a warning says so): run ztproxy as its own user.
//! * Popups and `window.open` are refused by Chromium itself (`--block-new-web-contents`),
//!   so a page cannot open windows the session does not watch. Site isolation is off, so
//!   cross-site iframes stay in the page's process and their requests pass the page's URL
//!   policy. No background networking, sync, extensions, first-run or crash reporting.
//! * Every connection goes through the session's [`crate::gate`] (`--proxy-server`, with
//!   loopback's implicit bypass removed).
//! * Bounds: V8's heap (`--js-flags=--max-old-space-size`), renderer processes, and the
//!   process tree, which [`Chromium::kill`] (and drop) ends with SIGKILL to the group; the
//!   profile directory is removed with it. Where the platform allows, a control group of
//!   its own caps the browser's memory and processes ([`crate::cgroup`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cgroup::{Caps, Group};

/// Where control groups are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Whether "no control group" was said already (it is said once per process).
static NO_GROUP_SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long Chromium may take to offer DevTools.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// V8's old-generation limit per renderer, in MiB.
const JS_HEAP_MIB: u32 = 512;
/// The longest stderr line read while waiting for the DevTools URL.
const MAX_LINE: usize = 4096;

/// Why Chromium could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The program could not run.
    #[error("cannot start {program}: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        error: std::io::ErrorKind,
    },
    /// The profile directory could not be made.
    #[error("cannot make the browser's profile directory: {0}")]
    Profile(std::io::ErrorKind),
    /// The connection gate could not listen.
    #[error("cannot start the browser's connection gate: {0}")]
    Gate(std::io::ErrorKind),
    /// It exited, or said nothing usable, before offering DevTools.
    #[error("the browser exited or did not offer DevTools within {0:?}")]
    NoDevTools(Duration),
}

/// A running Chromium.
#[derive(Debug)]
pub struct Chromium {
    child: Child,
    group: Option<i32>,
    profile: Option<tempfile::TempDir>,
    devtools: String,
    cgroup: Option<Group>,
}

impl Chromium {
    /// Starts `program` with a fresh profile under `parent` (the system's temporary
    /// directory when `None`), at `width` × `height`, in a control group with `caps` when
    /// given and the platform allows.
    pub async fn launch(
        program: &Path,
        parent: Option<&Path>,
        width: u16,
        height: u16,
        ignore_certificate_errors: bool,
        gate: std::net::SocketAddr,
        caps: Option<Caps>,
    ) -> Result<Self, LaunchError> {
        let profile = match parent {
            Some(parent) => tempfile::Builder::new()
                .prefix("zt-rbi-")
                .tempdir_in(parent),
            None => tempfile::Builder::new().prefix("zt-rbi-").tempdir(),
        }
        .map_err(|e| LaunchError::Profile(e.kind()))?;
        let mut args: Vec<String> = vec![
            "--headless".into(),
            "--remote-debugging-address=127.0.0.1".into(),
            "--remote-debugging-port=0".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-default-apps".into(),
            "--disable-extensions".into(),
            "--disable-sync".into(),
            "--disable-breakpad".into(),
            "--disable-crash-reporter".into(),
            "--disable-domain-reliability".into(),
            "--disable-client-side-phishing-detection".into(),
            "--metrics-recording-only".into(),
            "--no-pings".into(),
            "--password-store=basic".into(),
            "--use-mock-keychain".into(),
            "--disable-gpu".into(),
            "--mute-audio".into(),
            "--hide-scrollbars".into(),
            "--block-new-web-contents".into(),
            "--disable-features=IsolateOrigins,site-per-process,Translate,MediaRouter,OptimizationHints,AutofillServerCommunication".into(),
            "--disable-site-isolation-trials".into(),
            "--renderer-process-limit=4".into(),
            format!("--js-flags=--max-old-space-size={JS_HEAP_MIB}"),
            // Chromium's prefetch and preconnect would reach hosts before the policy sees a
            // request.
            "--dns-prefetch-disable".into(),
            "--disable-preconnect".into(),
            // Every connection, loopback included, goes through the session's gate; names
            // are resolved there.
            format!("--proxy-server=socks5://{gate}"),
            "--proxy-bypass-list=<-loopback>".into(),
        ];
        if ignore_certificate_errors {
            args.push("--ignore-certificate-errors".into());
        }
        if rustix::process::geteuid().is_root() {
            tracing::warn!(
                "ztproxy runs as root: Chromium's sandbox cannot start, so it runs without one"
            );
            args.push("--no-sandbox".into());
        }
        args.push("about:blank".into());
        let cgroup = caps.and_then(|caps| match Group::create(Path::new(CGROUP_ROOT), caps) {
            Ok(group) => Some(group),
            Err(error) => {
                if !NO_GROUP_SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        %error,
                        "remote browsers run without a control group: their memory and \
                         processes are bounded only by V8's heap limit and the renderer count"
                    );
                }
                None
            }
        });
        // In a group, a shell joins it and then becomes the browser, so no process of the
        // browser ever runs outside.
        let mut command = match &cgroup {
            Some(group) => {
                let mut command = Command::new("/bin/sh");
                command
                    .arg("-c")
                    .arg(crate::cgroup::LAUNCHER)
                    .arg("zt-rbi-launcher")
                    .args(group.procs())
                    .arg("--")
                    .arg(program);
                command
            }
            None => Command::new(program),
        };
        let spawned = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LaunchError::Spawn {
                program: program.display().to_string(),
                error: e.kind(),
            });
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                if let Some(group) = cgroup {
                    group.remove().await;
                }
                return Err(error);
            }
        };
        let group = child.id().and_then(|id| i32::try_from(id).ok());
        let stderr = child.stderr.take();
        let mut chromium = Self {
            child,
            group,
            profile: Some(profile),
            devtools: String::new(),
            cgroup,
        };
        let Some(stderr) = stderr else {
            chromium.kill().await;
            return Err(LaunchError::NoDevTools(START_TIMEOUT));
        };
        let found = tokio::time::timeout(START_TIMEOUT, async {
            let mut lines = BufReader::new(stderr);
            let mut line = String::new();
            loop {
                line.clear();
                match (&mut lines)
                    .take(MAX_LINE as u64)
                    .read_line(&mut line)
                    .await
                {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
                if let Some(url) = line.trim().strip_prefix("DevTools listening on ")
                    && url.starts_with("ws://127.0.0.1:")
                {
                    // The rest of stderr is drained so Chromium never blocks on it.
                    tokio::spawn(async move {
                        let mut sink = tokio::io::sink();
                        let _ = tokio::io::copy(&mut lines, &mut sink).await;
                    });
                    return Some(url.to_owned());
                }
            }
        })
        .await;
        match found {
            Ok(Some(url)) => {
                chromium.devtools = url;
                Ok(chromium)
            }
            _ => {
                chromium.kill().await;
                Err(LaunchError::NoDevTools(START_TIMEOUT))
            }
        }
    }

    /// The browser's DevTools WebSocket URL.
    pub fn devtools_url(&self) -> &str {
        &self.devtools
    }

    /// The browser process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The profile directory (removed by [`Chromium::kill`]).
    pub fn profile(&self) -> Option<PathBuf> {
        self.profile.as_ref().map(|p| p.path().to_owned())
    }

    /// Whether the browser has exited, and how.
    pub fn try_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the browser process to exit.
    pub async fn exited(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Ends every process of the browser's group and removes the profile.
    pub async fn kill(&mut self) {
        self.signal_group();
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
        // Renderers and helpers may outlive the browser by a moment: the group again.
        self.signal_group();
        if let Some(profile) = self.profile.take() {
            let path = profile.path().to_owned();
            // Chromium's last writes may race the removal: try a few times.
            for _ in 0..10 {
                if std::fs::remove_dir_all(&path).is_ok() || !path.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = profile.close();
        }
        if let Some(group) = self.cgroup.take() {
            group.remove().await;
        }
    }

    fn signal_group(&self) {
        if let Some(group) = self.group.and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // A session task that was aborted never called kill(): the group goes now, and the
        // profile with the TempDir.
        self.signal_group();
        if let Some(group) = self.cgroup.take() {
            // Its processes are dying: the group is removed once they are gone.
            std::thread::spawn(move || group.remove_blocking());
        }
    }
}
