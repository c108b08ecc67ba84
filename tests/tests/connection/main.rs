//! Connections over the Guacamole protocol against real processes: the daemon, a Guacamole
//! client in the test (over a WebRTC data channel or a QUIC stream) and the guacd peer
//! (`zt_tests::guacd_peer`, a faithful guacd 1.5 and 1.6 double: Debian 12 does not package
//! guacd). Tests that [`guacds`] runs against both behaviours.

// A test binary: a failed expectation is a panic, in helpers as in test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod handshake;
mod hostile;
mod lifecycle;
mod policy;
mod recording;
mod sharing;
mod template;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use zt_api::Secret;
use zt_api::audit::AuditEvent;
use zt_api::control::{
    Conversation, CreateSessionRequest, EndReason, LimitsRequest, Origin, RecordingRequest, Route,
    Target, Transport,
};
use zt_proxy::client::api::{ApiClient, EventStream};
use zt_proxy::client::session::{ClientSession, TunnelOptions};
use zt_proxy::transport::webrtc::PeerSettings;
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::guacd_peer::{GuacdPeer, PeerConfig};
use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::ztproxy_bin;

/// The target every session names (guacd would connect to it; the peer only records it).
pub const TARGET_HOST: &str = "10.20.30.40";
/// The target's port.
pub const TARGET_PORT: u16 = 3389;
/// The resource secret recordings are wrapped under (32 bytes, base64).
pub const RESOURCE_SECRET: &str = "c2VjcmV0LXJlc291cmNlLWtleS1mb3ItdGhlLXRlc3RzIQ==";
/// How long any single step may take.
pub const STEP: Duration = Duration::from_secs(20);

/// A guacd peer and a ztproxy pointed at it, with a recordings directory.
pub struct Fixture {
    /// The guacd double.
    pub peer: GuacdPeer,
    /// The daemon.
    pub proxy: ZtProxy,
    /// Its control API.
    pub api: ApiClient,
    /// Where recordings go.
    pub recordings: tempfile::TempDir,
}

/// What a test's session asks for.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// Transport.
    pub transport: Transport,
    /// Protocol (`rdp` unless told).
    pub protocol: String,
    /// Parameters (credentials, policy).
    pub parameters: Vec<(String, String)>,
    /// A graphical recording.
    pub record: bool,
}

impl SessionSpec {
    /// An RDP session over `transport` with the usual credentials.
    pub fn rdp(transport: Transport) -> Self {
        Self {
            transport,
            protocol: "rdp".into(),
            parameters: vec![
                ("username".into(), "svc-admin".into()),
                ("password".into(), "vault-password-Zx9".into()),
                ("domain".into(), "CORP".into()),
                ("ignore-cert".into(), "true".into()),
            ],
            record: false,
        }
    }

    /// Adds a parameter.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.parameters.push((name.into(), value.into()));
        self
    }

    /// Asks for a graphical recording.
    pub fn recorded(mut self) -> Self {
        self.record = true;
        self
    }
}

impl Fixture {
    /// Starts the peer with `config` and a ztproxy using it, with `sync_grace` for the keep-alive.
    pub async fn start(config: PeerConfig) -> Self {
        Self::start_with(config, "").await
    }

    /// [`Self::start`] with more `[guacd]` settings (TOML lines).
    pub async fn start_with(config: PeerConfig, guacd_extra: &str) -> Self {
        let peer = GuacdPeer::start(config)
            .await
            .expect("the guacd peer starts");
        let recordings = tempfile::tempdir().unwrap();
        let extra_toml = format!(
            "[guacd]\naddress = \"{}\"\n{guacd_extra}\n\n[recordings]\ndirectory = \"{}\"\n",
            peer.addr(),
            recordings.path().join("rec").display(),
        );
        let proxy = ZtProxy::start(
            ztproxy_bin!(),
            &ProxyOptions {
                extra_toml,
                ..ProxyOptions::default()
            },
        )
        .expect("ztproxy starts");
        let api = proxy.api();
        Self {
            peer,
            proxy,
            api,
            recordings,
        }
    }

    /// Creates a session as the gateway would and connects the client's transport.
    pub async fn session(&self, spec: &SessionSpec) -> (ClientSession, String) {
        self.session_result(spec)
            .await
            .expect("the connection session is created and its transport connects")
    }

    /// [`Self::session`], returning the failure.
    pub async fn session_result(
        &self,
        spec: &SessionSpec,
    ) -> anyhow::Result<(ClientSession, String)> {
        let request = CreateSessionRequest {
            transport: spec.transport,
            conversation: Conversation::Connection,
            protocol: Some(spec.protocol.clone()),
            target: Target {
                host: TARGET_HOST.into(),
                port: TARGET_PORT,
            },
            offer: None,
            sealed_offer: None,
            signalling: None,
            parameters: spec
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
                .collect(),
            limits: LimitsRequest::default(),
            route: Some(Route::Guacd),
            recording: spec.record.then(|| RecordingRequest {
                graphical: true,
                typescript: false,
                resource_secret: Some(Secret::new(RESOURCE_SECRET.into())),
                recipients: Vec::new(),
                fail_closed: None,
            }),
            resource_id: Some("res-42".into()),
            user: Some("alice".into()),
        };
        Ok(ClientSession::connect_with(&self.api, request, &options(spec.transport)).await?)
    }

    /// A session, its client through the handshake, and the peer's side of it.
    pub async fn connected(
        &self,
        spec: &SessionSpec,
    ) -> (
        ClientSession,
        String,
        GuacClient,
        zt_tests::guacd_peer::PeerConn,
    ) {
        let (session, id) = self.session(spec).await;
        let client = GuacClient::connect(&session, &Handshake::default())
            .await
            .expect("the client's handshake completes");
        let conn = self
            .peer
            .next_connection(STEP)
            .await
            .expect("ztproxy connected to guacd");
        (session, id, client, conn)
    }

    /// The recording files written so far.
    pub fn recording_files(&self) -> Vec<PathBuf> {
        let dir = self.recordings.path().join("rec");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

/// Client options for `transport` on loopback.
pub fn options(transport: Transport) -> TunnelOptions {
    TunnelOptions {
        transport,
        target: Target {
            host: TARGET_HOST.into(),
            port: TARGET_PORT,
        },
        protocol: None,
        signalling: None,
        limits: LimitsRequest::default(),
        resource_id: None,
        peer: PeerSettings::loopback(),
        connect_timeout: STEP,
    }
}

pub use zt_tests::wait_event;

/// The session's `session_ended` audit event: reason, origin and detail.
pub async fn session_ended(
    events: &mut EventStream,
    id: &str,
) -> (EndReason, Option<Origin>, Option<String>) {
    match wait_event(events, id, STEP, |e| {
        matches!(e, AuditEvent::SessionEnded { .. })
    })
    .await
    {
        AuditEvent::SessionEnded {
            reason,
            origin,
            detail,
            ..
        } => (reason, origin, detail),
        _ => unreachable!(),
    }
}

/// Base64, as Guacamole `blob`s carry data.
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Both transports.
pub const TRANSPORTS: [Transport; 2] = [Transport::Quic, Transport::Webrtc];

/// The guacd double as guacd 1.5 and as guacd 1.6 (its measured patterns: the pointer before
/// the first `size`, interleaved image streams, 1.6's `args` lists).
pub fn guacds() -> [PeerConfig; 2] {
    [PeerConfig::default(), PeerConfig::guacd_1_6()]
}
