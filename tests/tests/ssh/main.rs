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
mod sharing;
mod terminal;

use zt_api::Secret;
use zt_api::audit::AuditEvent;
use zt_api::control::{
    Conversation, CreateSessionRequest, LimitsRequest, RecordingRequest, Target, Transport,
};

use zt_proxy::client::api::{ApiClient, EventStream};
use zt_proxy::client::session::{ClientSession, TunnelOptions};

use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::servers::{Sshd, SshdOptions};
use zt_tests::ztproxy_bin;

/// The resource secret recordings are wrapped under (32 bytes, base64).
pub const RESOURCE_SECRET: &str = "c2VjcmV0LXJlc291cmNlLWtleS1mb3ItdGhlLXRlc3RzIQ==";
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

pub use zt_tests::term::{DISPLAY, FONT_SIZE, STEP, Term};
pub use zt_tests::wait_event;

/// Every audit event of `session` up to and including its `session_ended`.
pub async fn events_until_ended(events: &mut EventStream, session: &str) -> Vec<AuditEvent> {
    zt_tests::events_until_ended(events, session, STEP).await
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
