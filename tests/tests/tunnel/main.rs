//! Tunnel data plane against real processes: the daemon, `ztproxy connect`, PostgreSQL and
//! psql, sshd and ssh, and in-process targets with known traffic.

// A test binary: a failed expectation is a panic, in helpers as in test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bad_input;
mod bulk;
mod concurrent;
mod lifecycle;
mod log_redaction;
mod postgres_webrtc;
mod revocation;
mod ssh_quic;

use std::time::Duration;

use zt_api::control::{LimitsRequest, Target, Transport};
use zt_proxy::client::api::ApiClient;
use zt_proxy::client::tunnel::{ClientSession, TunnelOptions};
use zt_proxy::transport::webrtc::PeerSettings;

/// Options for an in-process client of `target` over `transport`.
pub fn client_options(transport: Transport, target: std::net::SocketAddr) -> TunnelOptions {
    TunnelOptions {
        transport,
        target: Target {
            host: target.ip().to_string(),
            port: target.port(),
        },
        protocol: None,
        signalling: None,
        limits: LimitsRequest::default(),
        resource_id: None,
        peer: PeerSettings::loopback(),
        connect_timeout: Duration::from_secs(20),
    }
}

/// Connects an in-process client session.
pub async fn connect(api: &ApiClient, options: &TunnelOptions) -> (ClientSession, String) {
    ClientSession::connect(api, options)
        .await
        .expect("client session connects")
}

/// Both transports, for tests that run on each.
pub const TRANSPORTS: [Transport; 2] = [Transport::Webrtc, Transport::Quic];

/// `--transport` value for the CLI.
pub fn transport_arg(transport: Transport) -> &'static str {
    transport.as_str()
}
