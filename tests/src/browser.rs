//! Debian's Chromium, headless, driven through `proxy/web/tests/driver.mjs` (playwright-core
//! from `proxy/web`'s lockfile; nothing downloads a browser). What a test learns from it is
//! what the screen shows: screenshots, read back with ztproxy's own renderer
//! ([`Screenshot::lines`]), and the page's visible status line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The web client's directory.
pub fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy/web")
}

/// A headless Chromium and its driver, stopped on drop.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Where screenshots go.
    pub dir: tempfile::TempDir,
    shots: u32,
}

impl Browser {
    /// Starts the driver (the browser starts with the first page).
    pub fn start() -> anyhow::Result<Self> {
        let web = web_dir();
        if !web.join("node_modules/playwright-core").is_dir() {
            bail!(
                "playwright-core is not installed in {}: run ./scripts/setup",
                web.display()
            );
        }
        if !Path::new("/usr/bin/chromium").exists() && std::env::var_os("ZT_CHROMIUM").is_none() {
            bail!("/usr/bin/chromium is missing: run ./scripts/setup (Debian package chromium)");
        }
        let mut child = Command::new("node")
            .arg(web.join("tests/driver.mjs"))
            .current_dir(&web)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting node (Debian package nodejs)")?;
        let stdin = child.stdin.take().context("driver stdin")?;
        let stdout = child.stdout.take().context("driver stdout")?;
        Ok(Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            dir: tempfile::tempdir()?,
            shots: 0,
        })
    }

    /// Sends one command; its answer, or the driver's error.
    pub async fn call(&mut self, command: Value) -> anyhow::Result<Value> {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await?;
        let answer = tokio::time::timeout(Duration::from_secs(90), self.lines.next_line())
            .await
            .context("the browser driver did not answer")??
            .context("the browser driver exited")?;
        let answer: Value = serde_json::from_str(&answer)?;
        if answer.get("ok") != Some(&Value::Bool(true)) {
            bail!(
                "{}: {}",
                command.get("op").and_then(Value::as_str).unwrap_or("?"),
                answer
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("failed")
            );
        }
        Ok(answer)
    }

    /// Opens `url` in a fresh window of `width` × `height` CSS pixels (scale 1), with the
    /// clipboard permissions when `clipboard`.
    pub async fn open(
        &mut self,
        url: &str,
        width: u32,
        height: u32,
        clipboard: bool,
    ) -> anyhow::Result<Value> {
        self.call(json!({"op": "open", "url": url, "width": width, "height": height, "clipboard": clipboard}))
            .await
    }

    /// Waits until the page shows `state` (`connecting`, `connected`, `ended`); returns how
    /// long that took and the status line's text.
    pub async fn wait_state(
        &mut self,
        state: &str,
        timeout: Duration,
    ) -> anyhow::Result<(u64, String)> {
        let answer = self
            .call(
                json!({"op": "wait_state", "state": state, "timeout": timeout.as_millis() as u64}),
            )
            .await?;
        Ok((
            answer.get("ms").and_then(Value::as_u64).unwrap_or(0),
            answer
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        ))
    }

    /// The page's state and the visible status text.
    pub async fn status(&mut self) -> anyhow::Result<(String, String)> {
        let answer = self.call(json!({"op": "status"})).await?;
        let field = |name: &str| {
            answer
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok((field("state"), field("text")))
    }

    /// Types `text` with real key events.
    pub async fn type_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.call(json!({"op": "type", "text": text}))
            .await
            .map(drop)
    }

    /// Presses a key (playwright's names: "Enter", "Control+Shift+V").
    pub async fn press(&mut self, key: &str) -> anyhow::Result<()> {
        self.call(json!({"op": "press", "key": key}))
            .await
            .map(drop)
    }

    /// Resizes the window.
    pub async fn resize(&mut self, width: u32, height: u32) -> anyhow::Result<()> {
        self.call(json!({"op": "resize", "width": width, "height": height}))
            .await
            .map(drop)
    }

    /// A screenshot of the window.
    pub async fn screenshot(&mut self) -> anyhow::Result<Screenshot> {
        self.shots += 1;
        let path = self.dir.path().join(format!("shot-{}.png", self.shots));
        self.call(json!({"op": "screenshot", "path": path})).await?;
        let shot = Screenshot::load(&path)?;
        if let Some(dir) = std::env::var_os("ZT_SCREENSHOTS") {
            let _ = std::fs::copy(
                &path,
                Path::new(&dir).join(format!("browser-{}-{}.png", std::process::id(), self.shots)),
            );
        }
        Ok(shot)
    }

    /// Mouse: `action` is move, down, up or click.
    pub async fn mouse(&mut self, action: &str, x: f64, y: f64) -> anyhow::Result<()> {
        self.call(json!({"op": "mouse", "action": action, "x": x, "y": y, "steps": 4}))
            .await
            .map(drop)
    }

    /// The browser clipboard's text.
    pub async fn clipboard(&mut self) -> anyhow::Result<String> {
        let answer = self.call(json!({"op": "clipboard_read"})).await?;
        Ok(answer
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// Puts text on the browser's clipboard (as another application would).
    pub async fn set_clipboard(&mut self, text: &str) -> anyhow::Result<()> {
        self.call(json!({"op": "clipboard_write", "text": text}))
            .await
            .map(drop)
    }

    /// What the page logged (for failure messages).
    pub async fn console(&mut self) -> String {
        match self.call(json!({"op": "console"})).await {
            Ok(answer) => answer
                .get("lines")
                .and_then(Value::as_array)
                .map(|lines| {
                    lines
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default(),
            Err(error) => format!("(no console: {error})"),
        }
    }

    /// Closes the browser.
    pub async fn close(mut self) {
        let _ = self.call(json!({"op": "close"})).await;
        let _ = self.child.kill().await;
    }
}

/// A screenshot's pixels.
pub struct Screenshot {
    /// RGBA pixels, row-major.
    pub pixels: Vec<[u8; 4]>,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Screenshot {
    /// Decodes a PNG.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path)?));
        let mut reader = decoder.read_info()?;
        let mut buf = vec![0; reader.output_buffer_size().context("PNG too large")?];
        let info = reader.next_frame(&mut buf)?;
        let bytes = buf.get(..info.buffer_size()).context("short PNG")?;
        let pixels = match info.color_type {
            png::ColorType::Rgba => bytes
                .chunks_exact(4)
                .map(|p| [p[0], p[1], p[2], p[3]])
                .collect(),
            png::ColorType::Rgb => bytes
                .chunks_exact(3)
                .map(|p| [p[0], p[1], p[2], 255])
                .collect(),
            other => bail!("unexpected screenshot colour type {other:?}"),
        };
        Ok(Self {
            pixels,
            width: info.width,
            height: info.height,
        })
    }

    /// The rows of terminal text the screenshot shows from its top left corner, read with the
    /// terminal's font at `font_size` points and 96 DPI.
    pub fn lines(&self, font_size: f32) -> Vec<String> {
        zt_terminal::readback::read_text(&self.pixels, self.width, self.height, font_size, 96, "")
    }

    /// The share of the pixels of an image (`reference`, RGBA, `width` × `height`) that the
    /// screenshot shows differently from its top left corner (by more than a rounding error
    /// in any channel); 1 when the screenshot is smaller.
    pub fn difference(&self, reference: &[[u8; 4]], width: u32, height: u32) -> f64 {
        if self.width < width || self.height < height || width == 0 || height == 0 {
            return 1.0;
        }
        let mut differ = 0u64;
        for y in 0..height {
            for x in 0..width {
                let want = reference
                    .get((y * width + x) as usize)
                    .copied()
                    .unwrap_or_default();
                let got = self.pixel(x, y);
                if (0..3).any(|c| want[c].abs_diff(got[c]) > 8) {
                    differ += 1;
                }
            }
        }
        differ as f64 / f64::from(width * height)
    }

    /// The pixel at (`x`, `y`).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 4] {
        self.pixels
            .get((y * self.width + x) as usize)
            .copied()
            .unwrap_or([0, 0, 0, 0])
    }
}

/// A tunnel client in a real browser page (`proxy/web/tests/tunnel-lab.js`): the page holds
/// the `RTCPeerConnection`, ztproxy answers its offer through the control API, and the page
/// moves bytes through tunnel channels with ztproxy's framing. Every figure comes from the
/// page's own clock.
pub struct TunnelLab {
    /// The browser.
    pub browser: Browser,
    /// The session, once connected.
    pub session: Option<String>,
}

/// One transfer the page made.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabTransfer {
    /// Bytes moved.
    pub bytes: u64,
    /// SHA-256 of what the page received (download) or sent (upload), hex.
    pub sha256: String,
    /// For an upload: the SHA-256 the target computed, hex.
    #[serde(default)]
    pub theirs: Option<String>,
    /// From the channel's opening to the last byte (download: the target's eof; upload: the
    /// target's digest), in milliseconds.
    pub ms: f64,
    /// Longest gap between two messages (download), in milliseconds.
    #[serde(default)]
    pub max_gap_ms: Option<f64>,
    /// From the end to the channel's `close` event, in milliseconds; `None` if it did not
    /// close within 10 s.
    pub close_ms: Option<f64>,
}

impl LabTransfer {
    /// Megabytes (10⁶) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / (self.ms / 1e3)
    }
}

impl TunnelLab {
    /// Starts a browser with the lab page loaded.
    pub async fn start() -> anyhow::Result<Self> {
        let mut browser = Browser::start()?;
        browser.call(json!({"op": "lab"})).await?;
        Ok(Self {
            browser,
            session: None,
        })
    }

    /// The value of `expression` in the page.
    pub async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let answer = self
            .browser
            .call(json!({"op": "eval", "expression": expression}))
            .await?;
        Ok(answer.get("value").cloned().unwrap_or(Value::Null))
    }

    /// Creates a WebRTC tunnel session to `target` with the page's offer and waits until
    /// the page's control channel is open. Returns the session's id.
    pub async fn connect(
        &mut self,
        api: &zt_proxy::client::api::ApiClient,
        target: std::net::SocketAddr,
        limits: zt_api::control::LimitsRequest,
    ) -> anyhow::Result<String> {
        use zt_api::control::{
            Conversation, CreateSessionRequest, SdpType, SessionDescription, Target, Transport,
        };
        let offer = self.eval("ztLab.offer()").await?;
        let offer = offer.as_str().context("the page made no offer")?.to_owned();
        let request = CreateSessionRequest {
            transport: Transport::Webrtc,
            conversation: Conversation::Tunnel,
            protocol: None,
            target: Target {
                host: target.ip().to_string(),
                port: target.port(),
            },
            offer: Some(SessionDescription {
                kind: SdpType::Offer,
                sdp: offer,
            }),
            sealed_offer: None,
            signalling: None,
            parameters: Default::default(),
            limits,
            route: None,
            recording: None,
            resource_id: None,
            user: None,
        };
        let response = api.create_session(&request).await?;
        let answer = response.answer.context("ztproxy sent no answer")?.sdp;
        self.eval(&format!("ztLab.answer({})", Value::String(answer)))
            .await?;
        self.session = Some(response.id.clone());
        Ok(response.id)
    }

    /// `count` downloads on parallel channels, each until the target's eof, within
    /// `limit`.
    pub async fn download(
        &mut self,
        count: usize,
        limit: Duration,
    ) -> anyhow::Result<Vec<LabTransfer>> {
        let value = self
            .eval(&format!(
                "ztLab.receiveMany({count}, {})",
                limit.as_millis()
            ))
            .await?;
        Ok(serde_json::from_value(
            value.get("results").cloned().unwrap_or(Value::Null),
        )?)
    }

    /// One upload of `len` random bytes to a [`crate::servers::digest_server`].
    pub async fn upload(&mut self, len: u64) -> anyhow::Result<LabTransfer> {
        let value = self.eval(&format!("ztLab.send({len})")).await?;
        Ok(serde_json::from_value(value)?)
    }

    /// Chromium against itself: `len` bytes between two peer connections in the page; MB/s.
    pub async fn loopback(&mut self, len: u64) -> anyhow::Result<f64> {
        let value = self.eval(&format!("ztLab.loopback({len})")).await?;
        let ms = value
            .get("ms")
            .and_then(Value::as_f64)
            .context("no time from the page")?;
        Ok(len as f64 / 1e6 / (ms / 1e3))
    }

    /// The page's connection and control-channel states, and its log.
    pub async fn state(&mut self) -> anyhow::Result<Value> {
        self.eval("ztLab.state()").await
    }

    /// `pc.close()` in the page.
    pub async fn close_peer(&mut self) -> anyhow::Result<()> {
        self.eval("ztLab.close()").await.map(drop)
    }

    /// The browser's main process id: the driver's child process.
    pub async fn browser_pid(&mut self) -> anyhow::Result<u32> {
        let driver = self.browser.child.id().context("the driver has exited")?;
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`: the command may hold spaces, so read after `)`.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<u32>().ok());
            if ppid == Some(driver) && stat.contains("(chromium") {
                return Ok(pid);
            }
        }
        bail!("no chromium process under the driver {driver}")
    }
}
