//! The native protocols besides SSH — Telnet, Kubernetes, the database consoles and VNC —
//! against real servers the tests start (inetutils `telnetd` with a login program of the
//! test's own, an API-server double whose exec runs a real shell on a pty,
//! PostgreSQL from `initdb`, MariaDB from `mariadb-install-db`, TigerVNC `Xvnc`, `x11vnc` on
//! `Xvfb`),
//! through the daemon, over QUIC and WebRTC, with the tests' Guacamole client. What the user
//! sees is read back from the display model's pixels, never from the emulator's state.

// A test binary: a failed expectation is a panic, in helpers as in test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod db_tls;
mod k8s;
mod mssql;
mod mysql;
mod postgres;
mod rbi;
mod telnet;
mod vnc;

use zt_api::Secret;
use zt_api::audit::AuditEvent;
use zt_api::control::{
    Conversation, CreateSessionRequest, LimitsRequest, RecordingRequest, Target, Transport,
};
use zt_proxy::client::api::{ApiClient, EventStream};
use zt_proxy::client::session::ClientSession;
use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::term::{DISPLAY, FONT_SIZE, STEP};
use zt_tests::ztproxy_bin;

/// Both transports.
pub const TRANSPORTS: [Transport; 2] = [Transport::Quic, Transport::Webrtc];

/// The resource secret recordings are wrapped under (32 bytes, base64).
pub const RESOURCE_SECRET: &str = "c2VjcmV0LXJlc291cmNlLWtleS1mb3ItdGhlLXRlc3RzIQ==";

/// A ztproxy with default settings and a recordings directory.
pub struct Proxy {
    /// The daemon.
    pub proxy: ZtProxy,
    /// Its control API.
    pub api: ApiClient,
    /// Where recordings go (`rec/` inside).
    pub recordings: tempfile::TempDir,
}

impl Proxy {
    /// Starts the daemon.
    pub fn start() -> Self {
        let recordings = tempfile::tempdir().unwrap();
        let proxy = ZtProxy::start(
            ztproxy_bin!(),
            &ProxyOptions {
                extra_toml: format!(
                    "[recordings]\ndirectory = \"{}\"\n",
                    recordings.path().join("rec").display()
                ),
                ..ProxyOptions::default()
            },
        )
        .expect("ztproxy starts");
        let api = proxy.api();
        Self {
            proxy,
            api,
            recordings,
        }
    }

    /// The recordings the session's `recording_ended` events name, reading its events up to
    /// its end.
    pub async fn ended_recordings(
        &self,
        events: &mut EventStream,
        id: &str,
    ) -> (Vec<AuditEvent>, Vec<std::path::PathBuf>) {
        let events = events_until_ended(events, id).await;
        let mut files = Vec::new();
        for event in &events {
            if let AuditEvent::RecordingEnded {
                recording, status, ..
            } = event
            {
                assert_eq!(status, "finalised");
                files.push(self.recordings.path().join("rec").join(recording));
            }
        }
        (events, files)
    }

    /// Exports `recording` in `format`.
    pub fn export(&self, recording: &std::path::Path, format: &str) -> std::path::PathBuf {
        zt_tests::export_recording(ztproxy_bin!(), recording, RESOURCE_SECRET, format, &[])
    }

    /// Creates a `protocol` session to 127.0.0.1:`port` with `parameters` (no route: native)
    /// and connects its transport.
    pub async fn session(
        &self,
        transport: Transport,
        protocol: &str,
        port: u16,
        parameters: &[(&str, &str)],
        recording: Option<RecordingRequest>,
    ) -> (ClientSession, String) {
        self.session_with_limits(
            transport,
            protocol,
            port,
            parameters,
            recording,
            LimitsRequest::default(),
        )
        .await
    }

    /// [`Self::session`] with `limits`.
    pub async fn session_with_limits(
        &self,
        transport: Transport,
        protocol: &str,
        port: u16,
        parameters: &[(&str, &str)],
        recording: Option<RecordingRequest>,
        limits: LimitsRequest,
    ) -> (ClientSession, String) {
        let request = CreateSessionRequest {
            transport,
            conversation: Conversation::Connection,
            protocol: Some(protocol.into()),
            target: Target {
                host: "127.0.0.1".into(),
                port,
            },
            offer: None,
            sealed_offer: None,
            signalling: None,
            parameters: parameters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Secret::new((*v).to_owned())))
                .collect(),
            limits,
            route: None,
            recording,
            resource_id: Some(format!("res-{protocol}")),
            user: Some("alice".into()),
        };
        let options = zt_tests::client::client_options(transport, ([127, 0, 0, 1], port).into());
        ClientSession::connect_with(&self.api, request, &options)
            .await
            .expect("the session is created and its transport connects")
    }
}

/// A typescript recording request.
pub fn typescript() -> RecordingRequest {
    RecordingRequest {
        graphical: false,
        typescript: true,
        resource_secret: Some(Secret::new(RESOURCE_SECRET.into())),
        recipients: Vec::new(),
        fail_closed: None,
    }
}

/// The rows and columns a display of `width` × `height` pixels holds.
pub fn grid(width: u32, height: u32) -> (u32, u32) {
    let cell = zt_terminal::font::Rasteriser::new(FONT_SIZE, DISPLAY.2).cell();
    (height / cell.height, width / cell.width)
}

/// Every audit event of `session` up to and including its `session_ended`.
pub async fn events_until_ended(events: &mut EventStream, session: &str) -> Vec<AuditEvent> {
    zt_tests::events_until_ended(events, session, STEP).await
}
