//! Native SSH connections against a real OpenSSH `sshd` the tests start (with a system user
//! of their own and a password), through the daemon, over QUIC and WebRTC, with the tests'
//! Guacamole client. What the user sees is read back from the display model's pixels
//! (`zt_terminal::readback`), never from the emulator's state.

// A test binary: a failed expectation is a panic, in helpers as in test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod login;
mod policy;
mod recording;
mod sftp;
mod terminal;

use std::time::Duration;

use zt_api::Secret;
use zt_api::audit::AuditEvent;
use zt_api::control::{
    Conversation, CreateSessionRequest, LimitsRequest, RecordingRequest, Target, Transport,
};
use zt_guac::{Instruction, opcode};
use zt_proxy::client::api::{ApiClient, EventStream};
use zt_proxy::client::session::{ClientSession, TunnelOptions};
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::servers::{Sshd, SshdOptions};
use zt_tests::ztproxy_bin;

/// How long any single step may take.
pub const STEP: Duration = Duration::from_secs(20);
/// The resource secret recordings are wrapped under (32 bytes, base64).
pub const RESOURCE_SECRET: &str = "c2VjcmV0LXJlc291cmNlLWtleS1mb3ItdGhlLXRlc3RzIQ==";
/// The display the tests' client asks for (small, so reading it back is quick).
pub const DISPLAY: (u32, u32, u32) = (800, 480, 96);
/// The terminal's default font size (guacd's).
pub const FONT_SIZE: f32 = 12.0;
/// Both transports.
pub const TRANSPORTS: [Transport; 2] = [Transport::Quic, Transport::Webrtc];

/// An sshd with a user of the test's own, and a ztproxy with a recordings directory.
pub struct Fixture {
    /// The target.
    pub sshd: Sshd,
    /// The daemon.
    pub proxy: ZtProxy,
    /// Its control API.
    pub api: ApiClient,
    /// Where recordings go.
    pub recordings: tempfile::TempDir,
}

impl Fixture {
    /// An sshd accepting the user's password, an ed25519 key, an RSA key and an ed25519 key
    /// with a passphrase; the daemon with default SSH settings.
    pub async fn start() -> Self {
        Self::start_with(SshdOptions::default(), "").await
    }

    /// [`Self::start`] with more sshd options and more daemon TOML.
    pub async fn start_with(mut options: SshdOptions, extra_toml: &str) -> Self {
        options.test_user = true;
        options.extra_keys.extend([
            ("rsa".to_owned(), String::new()),
            ("ed25519".to_owned(), "key passphrase 7".to_owned()),
        ]);
        let sshd = Sshd::start_with(&options).expect("sshd starts");
        let recordings = tempfile::tempdir().unwrap();
        let proxy = ZtProxy::start(
            ztproxy_bin!(),
            &ProxyOptions {
                extra_toml: format!(
                    "[recordings]\ndirectory = \"{}\"\n\n{extra_toml}\n",
                    recordings.path().join("rec").display()
                ),
                ..ProxyOptions::default()
            },
        )
        .expect("ztproxy starts");
        let api = proxy.api();
        Self {
            sshd,
            proxy,
            api,
            recordings,
        }
    }

    /// The user's password.
    pub fn password(&self) -> &str {
        self.sshd.password.as_deref().expect("a test user")
    }

    /// Parameters for a password login with the server's host key pinned.
    pub fn password_login(&self) -> Vec<(String, String)> {
        vec![
            ("username".into(), self.sshd.user.clone()),
            ("password".into(), self.password().to_owned()),
            ("host-key".into(), self.sshd.host_public_key.clone()),
        ]
    }

    /// Parameters for a login with the `n`-th extra key (and its passphrase).
    pub fn key_login(&self, n: usize) -> Vec<(String, String)> {
        let key = &self.sshd.extra_keys[n];
        let mut parameters = vec![
            ("username".into(), self.sshd.user.clone()),
            (
                "private-key".into(),
                std::fs::read_to_string(&key.path).unwrap(),
            ),
            ("host-key".into(), self.sshd.host_public_key.clone()),
        ];
        if !key.passphrase.is_empty() {
            parameters.push(("passphrase".into(), key.passphrase.clone()));
        }
        parameters
    }

    /// Creates an SSH session with `parameters` (no route: native) and connects its transport.
    pub async fn session(
        &self,
        transport: Transport,
        parameters: &[(String, String)],
        recording: Option<RecordingRequest>,
    ) -> (ClientSession, String) {
        let request = CreateSessionRequest {
            transport,
            conversation: Conversation::Connection,
            protocol: Some("ssh".into()),
            target: Target {
                host: "127.0.0.1".into(),
                port: self.sshd.port,
            },
            offer: None,
            sealed_offer: None,
            signalling: None,
            parameters: parameters
                .iter()
                .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
                .collect(),
            limits: LimitsRequest::default(),
            route: None,
            recording,
            resource_id: Some("res-ssh".into()),
            user: Some("alice".into()),
        };
        ClientSession::connect_with(&self.api, request, &options(transport))
            .await
            .expect("the session is created and its transport connects")
    }

    /// A session with `parameters`, its terminal on the client's screen.
    pub async fn terminal(
        &self,
        transport: Transport,
        parameters: &[(String, String)],
    ) -> (Term, String, ClientSession) {
        let (session, id) = self.session(transport, parameters, None).await;
        let term = Term::connect(&session).await;
        (term, id, session)
    }
}

/// Client options for `transport` on loopback (the target is the session's, not these).
pub fn options(transport: Transport) -> TunnelOptions {
    zt_tests::client::client_options(transport, ([127, 0, 0, 1], 22).into())
}

/// A recording request: graphical and/or typescript.
pub fn recording(graphical: bool, typescript: bool) -> RecordingRequest {
    RecordingRequest {
        graphical,
        typescript,
        resource_secret: Some(Secret::new(RESOURCE_SECRET.into())),
        recipients: Vec::new(),
        fail_closed: None,
    }
}

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
    /// Connects and completes the handshake at [`DISPLAY`].
    pub async fn connect(session: &ClientSession) -> Self {
        let handshake = Handshake {
            select: "ssh".into(),
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

pub use zt_tests::wait_event;

/// Every audit event of `session` up to and including its `session_ended`.
pub async fn events_until_ended(events: &mut EventStream, session: &str) -> Vec<AuditEvent> {
    let mut seen = Vec::new();
    tokio::time::timeout(STEP, async {
        while let Some(record) = events.next().await {
            let event = record.expect("a well-formed audit record").event;
            if event.session() == Some(session) {
                let ended = matches!(event, AuditEvent::SessionEnded { .. });
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

/// The pieces of a secret that must never reach the client or a log: the whole value, and
/// each base64 line of a key.
pub fn secret_pieces(parameters: &[(String, String)]) -> Vec<String> {
    let mut pieces = Vec::new();
    for (name, value) in parameters {
        match name.as_str() {
            "password" | "passphrase" => pieces.push(value.clone()),
            "private-key" => pieces.extend(
                value
                    .lines()
                    .filter(|l| !l.starts_with("-----") && l.len() > 16)
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    assert!(!pieces.is_empty());
    pieces
}
