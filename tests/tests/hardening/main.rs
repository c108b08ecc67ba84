//! Hardening against outside probes, tested against the real daemon process: floods of the
//! control API and of QUIC handshakes, garbage datagrams, crashes of either end, and the
//! smaller promises (error shapes, tamper messages, exports of rejected files).

// A test binary: a failed expectation is a panic, in helpers as in test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod control;
mod liveness;
mod quic;
mod udp;

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

/// One echo through a new stream of `session`.
pub async fn echo_once(session: &ClientSession, payload: &[u8]) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let stream = session.open().await.unwrap();
    let relay = {
        let cancel = cancel.clone();
        async move {
            let (tcp, _) = listener.accept().await.unwrap();
            zt_proxy::client::tunnel::relay(stream, tcp, &cancel).await
        }
    };
    let app = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(payload).await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        tcp.read_to_end(&mut echoed).await.unwrap();
        echoed
    };
    let (relayed, echoed) =
        tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(relay, app) })
            .await
            .expect("echo completes");
    relayed.expect("relay ends cleanly");
    assert_eq!(echoed, payload);
}
