//! The browser client in real Chromium (headless, Debian's, driven by playwright-core):
//! `ztproxy connect web` serves the page, which reaches ztproxy over WebRTC with stock
//! guacamole-common-js; `ztproxy connect guac` lets a Guacamole client in over plain TCP;
//! `ztproxy recording play` plays recordings. What a test checks is what the screen shows:
//! screenshots read back with ztproxy's own renderer, and the page's visible status line.

// A test binary: a failed expectation is a panic, in helpers as in test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bad_input;
mod files;
mod guac;
mod player;
mod rdp;
mod session;
mod tunnel;

use std::path::PathBuf;
use std::time::Duration;

use zt_tests::browser::{Browser, Screenshot};
use zt_tests::proc::{Helper, ProxyOptions, ZtProxy};
use zt_tests::servers::{Sshd, SshdOptions};
use zt_tests::ztproxy_bin;

/// How long any single step may take.
pub const STEP: Duration = Duration::from_secs(20);
/// The browser window the tests use, in CSS pixels (scale 1: the display fills it 1:1).
pub const WINDOW: (u32, u32) = (800, 480);
/// The terminal's default font size.
pub const FONT_SIZE: f32 = 12.0;
/// The resource secret recordings are wrapped under (32 bytes, base64).
pub const RESOURCE_SECRET: &str = "c2VjcmV0LXJlc291cmNlLWtleS1mb3ItdGhlLXRlc3RzIQ==";

/// An sshd with a user of the test's own, a ztproxy with a recordings directory, and files
/// for the helpers' arguments.
pub struct Fixture {
    /// The target.
    pub sshd: Sshd,
    /// The daemon.
    pub proxy: ZtProxy,
    /// Files: parameters, the recording secret, recordings.
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// Starts sshd and the daemon.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// [`Self::start`] with a daemon that refuses unsealed WebRTC offers.
    pub fn start_sealed() -> Self {
        Self::start_options("", true)
    }

    /// [`Self::start`] with more daemon TOML.
    pub fn start_with(extra_toml: &str) -> Self {
        Self::start_options(extra_toml, false)
    }

    fn start_options(extra_toml: &str, require_sealed: bool) -> Self {
        let sshd = Sshd::start_with(&SshdOptions {
            test_user: true,
            ..SshdOptions::default()
        })
        .expect("sshd starts");
        let dir = tempfile::tempdir().unwrap();
        let proxy = ZtProxy::start(
            ztproxy_bin!(),
            &ProxyOptions {
                extra_toml: format!(
                    "[recordings]\ndirectory = \"{}\"\n\n{extra_toml}\n",
                    dir.path().join("rec").display()
                ),
                require_sealed,
                ..ProxyOptions::default()
            },
        )
        .expect("ztproxy starts");
        std::fs::write(dir.path().join("recording-secret"), RESOURCE_SECRET).unwrap();
        Self { sshd, proxy, dir }
    }

    /// The SSH login parameters plus `extra`, written to a file for `--parameters-file`.
    pub fn parameters_file(&self, extra: &[(&str, &str)]) -> PathBuf {
        let mut parameters = serde_json::Map::new();
        parameters.insert("username".into(), self.sshd.user.clone().into());
        parameters.insert(
            "password".into(),
            self.sshd.password.clone().expect("a test user").into(),
        );
        parameters.insert("host-key".into(), self.sshd.host_public_key.clone().into());
        for (name, value) in extra {
            parameters.insert((*name).into(), (*value).into());
        }
        let path = self
            .dir
            .path()
            .join(format!("parameters-{}.json", parameters.len()));
        std::fs::write(&path, serde_json::Value::Object(parameters).to_string()).unwrap();
        path
    }

    /// `ztproxy connect web` for an SSH session with `extra` parameters and `args`.
    pub fn web(&self, extra: &[(&str, &str)], args: &[&str]) -> Helper {
        self.connect("web", extra, args)
    }

    /// `ztproxy connect <command>` (`web` or `guac`) for an SSH session to the fixture's
    /// sshd, with `extra` parameters and `args`.
    pub fn connect(&self, command: &str, extra: &[(&str, &str)], args: &[&str]) -> Helper {
        let parameters = self.parameters_file(extra);
        let api = self.proxy.api_arg();
        let target = format!("127.0.0.1:{}", self.sshd.port);
        let mut all = vec![
            "connect",
            command,
            "--api",
            &api,
            "--target",
            &target,
            "--protocol",
            "ssh",
            "--user",
            "alice",
            "--parameters-file",
            parameters.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        Helper::start(ztproxy_bin!(), &all).expect("the client command starts")
    }

    /// The recordings written so far.
    pub fn recordings(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("rec"))
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        found.sort();
        found
    }
}

/// Opens `url` and waits until the session page shows its session.
pub async fn open_session(browser: &mut Browser, url: &str, clipboard: bool) {
    browser
        .open(url, WINDOW.0, WINDOW.1, clipboard)
        .await
        .expect("the page opens");
    if let Err(error) = browser.wait_state("connected", STEP).await {
        panic!("{error:#}\nconsole:\n{}", browser.console().await);
    }
}

/// Takes screenshots until `condition` holds of the terminal text they show; fails after
/// `timeout` showing the last one.
pub async fn wait_screen(
    browser: &mut Browser,
    what: &str,
    timeout: Duration,
    condition: impl Fn(&[String]) -> bool,
) -> (Vec<String>, Screenshot) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let shot = browser.screenshot().await.expect("a screenshot");
        let lines = shot.lines(FONT_SIZE);
        if condition(&lines) {
            return (lines, shot);
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out waiting for {what}; the browser shows:\n{}\nconsole:\n{}",
                lines.join("\n"),
                browser.console().await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for a shell prompt on the page.
pub async fn wait_prompt(browser: &mut Browser) -> Vec<String> {
    wait_screen(browser, "the shell's prompt", STEP, |lines| {
        lines.iter().any(|l| l.ends_with('$'))
    })
    .await
    .0
}

/// Types `command` and Enter with real key events, and waits until a row shows exactly
/// `expected`.
pub async fn run(browser: &mut Browser, command: &str, expected: &str) -> Vec<String> {
    browser.type_text(command).await.unwrap();
    browser.press("Enter").await.unwrap();
    wait_screen(
        browser,
        &format!("`{expected}` after `{command}`"),
        STEP,
        |lines| lines.iter().any(|l| l.trim_end() == expected),
    )
    .await
    .0
}

/// The share of `reference`'s pixels the screenshot shows differently (from its top left).
pub fn difference(shot: &Screenshot, reference: &zt_display::Screen) -> f64 {
    shot.difference(reference.pixels(), reference.width(), reference.height())
}

/// A ztproxy using the guacd double at `peer`, and `connect web` for an RDP session through
/// it (with a password in the parameters file, in `dir`).
pub fn rdp_web(peer: std::net::SocketAddr, dir: &std::path::Path) -> (ZtProxy, Helper) {
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            extra_toml: format!("[guacd]\naddress = \"{peer}\"\n"),
            ..ProxyOptions::default()
        },
    )
    .expect("ztproxy starts");
    let parameters = dir.join("rdp-parameters.json");
    std::fs::write(
        &parameters,
        r#"{"username":"alice","password":"rdp-password-7"}"#,
    )
    .unwrap();
    let helper = Helper::start(
        ztproxy_bin!(),
        &[
            "connect",
            "web",
            "--api",
            &proxy.api_arg(),
            "--target",
            "10.0.0.5:3389",
            "--protocol",
            "rdp",
            "--route",
            "guacd",
            "--parameters-file",
            parameters.to_str().unwrap(),
        ],
    )
    .expect("connect web starts");
    (proxy, helper)
}
