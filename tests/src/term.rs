//! The user's side of a terminal session (native SSH, Telnet, a database console): a
//! Guacamole client, everything it received, and the screen it draws. What the user sees is
//! read back from the display model's pixels (`zt_terminal::readback`), never from the
//! emulator's state.

// Test support: a failed expectation is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use zt_guac::{Instruction, opcode};
use zt_proxy::client::session::ClientSession;

use crate::guac_client::{GuacClient, Handshake};

/// How long any single step may take.
pub const STEP: Duration = Duration::from_secs(20);
/// The display the tests' client asks for (small, so reading it back is quick).
pub const DISPLAY: (u32, u32, u32) = (800, 480, 96);
/// The terminal's default font size (guacd's).
pub const FONT_SIZE: f32 = 12.0;

/// The user's side: a Guacamole client, everything it received, and the screen those
/// instructions draw.
pub struct Term {
    /// The client.
    pub client: GuacClient,
    /// Every instruction received, in order.
    pub received: Vec<Instruction>,
    display: zt_display::Display,
    /// Whether the channel closed.
    pub closed: bool,
}

impl Term {
    /// Connects an `ssh` session and completes the handshake at [`DISPLAY`].
    pub async fn connect(session: &ClientSession) -> Self {
        Self::connect_to(session, "ssh").await
    }

    /// Connects a session of `protocol` and completes the handshake at [`DISPLAY`].
    pub async fn connect_to(session: &ClientSession, protocol: &str) -> Self {
        let handshake = Handshake {
            select: protocol.into(),
            size: DISPLAY,
            ..Handshake::default()
        };
        let client = GuacClient::connect(session, &handshake)
            .await
            .expect("the client's handshake completes");
        Self::new(client)
    }

    /// Wraps a connected client.
    pub fn new(client: GuacClient) -> Self {
        Self {
            client,
            received: Vec::new(),
            display: zt_display::Display::new(zt_display::DisplayLimits::default()),
            closed: false,
        }
    }

    /// The screen's rows of text, as read from its pixels.
    pub fn lines(&self) -> Vec<String> {
        let screen = self.display.screen();
        zt_terminal::readback::read_text(
            screen.pixels(),
            screen.width(),
            screen.height(),
            FONT_SIZE,
            DISPLAY.2,
            "",
        )
    }

    /// What the user sees, as an image.
    pub fn screen(&self) -> zt_display::Screen {
        self.display.screen()
    }

    /// Saves the screen as a PNG in the directory `ZT_SCREENSHOTS` names, if it names one
    /// (to look at what a test saw).
    pub fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("ZT_SCREENSHOTS") else {
            return;
        };
        let screen = self.screen();
        let file =
            std::fs::File::create(std::path::Path::new(&dir).join(format!("{name}.png"))).unwrap();
        let mut encoder = png::Encoder::new(file, screen.width(), screen.height());
        encoder.set_color(png::ColorType::Rgba);
        let mut writer = encoder.write_header().unwrap();
        writer
            .write_image_data(screen.pixels().as_flattened())
            .unwrap();
    }

    /// Receives one instruction into the screen: `Some(false)` when the channel closed,
    /// `None` when nothing came within `timeout`.
    pub async fn receive(&mut self, timeout: Duration) -> Option<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        match self.client.next(timeout).await {
            Ok(Some(instruction)) => {
                let _ = self.display.handle(&instruction);
                self.received.push(instruction);
                Some(true)
            }
            Ok(None) => {
                self.closed = true;
                Some(false)
            }
            Err(_) if tokio::time::Instant::now() >= deadline => None,
            Err(error) => panic!("receiving: {error:#}"),
        }
    }

    /// Receives until a frame ends (`sync`) with `condition` true of the screen's text, or
    /// fails after `timeout` showing the screen.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.receive(left).await {
                Some(true) => {}
                Some(false) => panic!(
                    "the connection closed while waiting for {what}; the screen shows:\n{}",
                    self.lines().join("\n")
                ),
                None => panic!(
                    "timed out waiting for {what}; the screen shows:\n{}",
                    self.lines().join("\n")
                ),
            }
            if self.received.last().is_some_and(|i| i.is(opcode::SYNC)) {
                let lines = self.lines();
                if condition(&lines) {
                    return lines;
                }
            }
        }
    }

    /// Waits for a shell prompt (a row ending in `$ `).
    pub async fn wait_for_prompt(&mut self) -> Vec<String> {
        self.wait_for("the shell's prompt", STEP, |lines| {
            lines.iter().any(|l| l.ends_with('$'))
        })
        .await
    }

    /// Presses and releases `keysym`.
    pub async fn key(&mut self, keysym: u32) {
        for pressed in ["1", "0"] {
            self.client
                .send(&Instruction::new(
                    opcode::KEY,
                    &[keysym.to_string().as_str(), pressed],
                ))
                .await
                .unwrap();
        }
    }

    /// Types `text` (ASCII) as a keyboard would: one keysym per character.
    pub async fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            let keysym = match c {
                '\n' => 0xff0d,
                c if c.is_ascii() && !c.is_ascii_control() => u32::from(c),
                c => panic!("cannot type {c:?}"),
            };
            self.key(keysym).await;
        }
    }

    /// Types `command` and Return at a shell prompt, and waits until a row shows `expected`
    /// with the shell's next prompt below it (output and prompt may come in separate frames).
    pub async fn run(&mut self, command: &str, expected: &str) -> Vec<String> {
        self.type_text(command).await;
        self.type_text("\n").await;
        let expected = expected.to_owned();
        self.wait_for(
            &format!("`{expected}` and a prompt after `{command}`"),
            STEP,
            move |lines| {
                lines
                    .iter()
                    .position(|l| l.trim_end() == expected)
                    .is_some_and(|at| lines.iter().skip(at + 1).any(|l| l.ends_with('$')))
            },
        )
        .await
    }

    /// Receives until this screen's pixels are `pixels` at the end of a frame (`sync`), or
    /// fails after `timeout` saving both screens (with `ZT_SCREENSHOTS`).
    pub async fn wait_for_pixels(
        &mut self,
        what: &str,
        pixels: &zt_display::Screen,
        timeout: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.screen().pixels() == pixels.pixels() {
                return;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let before = self.received.len();
            if left.is_zero() || self.receive(left).await != Some(true) {
                self.screenshot(&format!("{what}-seen"));
                panic!("the screen never became {what}: {:?}", self.lines());
            }
            // Only a whole frame counts: read on to its `sync`.
            while !self.received[before..].iter().any(|i| i.is(opcode::SYNC)) {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() || self.receive(left).await != Some(true) {
                    break;
                }
            }
        }
    }

    /// Receives until ztproxy says goodbye (`disconnect`), or the channel closes.
    pub async fn until_disconnect(&mut self) {
        let deadline = tokio::time::Instant::now() + STEP;
        while !self.closed && !self.received.iter().any(|i| i.is(opcode::DISCONNECT)) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(self.receive(left).await.is_some(), "no disconnect arrived");
        }
    }

    /// Receives until the channel closes.
    pub async fn until_closed(&mut self) {
        let deadline = tokio::time::Instant::now() + STEP;
        while !self.closed {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                self.receive(left).await.is_some(),
                "the connection did not close"
            );
        }
    }

    /// Everything received, as text (for scanning for secrets).
    pub fn received_text(&self) -> String {
        let mut all = Vec::new();
        for instruction in &self.received {
            all.extend_from_slice(instruction.raw());
        }
        String::from_utf8_lossy(&all).into_owned()
    }

    /// The clipboard texts received so far (`clipboard` streams, each up to its `end`).
    pub fn clipboards(&self) -> Vec<String> {
        use base64::Engine as _;
        let mut texts = Vec::new();
        let mut open: Option<(String, Vec<u8>)> = None;
        for instruction in &self.received {
            match instruction.opcode() {
                opcode::CLIPBOARD => {
                    open = instruction
                        .arg(0)
                        .map(|stream| (stream.to_owned(), Vec::new()));
                }
                opcode::BLOB => {
                    if let Some((stream, data)) = &mut open
                        && instruction.arg(0) == Some(stream.as_str())
                    {
                        data.extend(
                            base64::engine::general_purpose::STANDARD
                                .decode(instruction.arg(1).unwrap_or_default())
                                .expect("a clipboard blob is base64"),
                        );
                    }
                }
                opcode::END => {
                    if let Some((_, data)) =
                        open.take_if(|(s, _)| instruction.arg(0) == Some(s.as_str()))
                    {
                        texts.push(String::from_utf8(data).expect("clipboard text is UTF-8"));
                    }
                }
                _ => {}
            }
        }
        texts
    }

    /// Sends `text` as the client's clipboard (stream 7, `text/plain`).
    pub async fn paste(&mut self, text: &str) {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(text);
        for instruction in [
            Instruction::new(opcode::CLIPBOARD, &["7", "text/plain"]),
            Instruction::new(opcode::BLOB, &["7", &data]),
            Instruction::new(opcode::END, &["7"]),
        ] {
            self.client
                .send(&instruction)
                .await
                .expect("the client sends");
        }
    }

    /// The `error` instructions received: (message, status).
    pub fn errors(&self) -> Vec<(String, u32)> {
        self.received
            .iter()
            .filter(|i| i.is(opcode::ERROR))
            .map(|i| {
                (
                    i.arg(0).unwrap_or_default().to_owned(),
                    i.arg(1).and_then(|s| s.parse().ok()).unwrap_or(0),
                )
            })
            .collect()
    }
}
