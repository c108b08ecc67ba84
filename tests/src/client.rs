//! In-process tunnel clients for the tests: options for a loopback session, connecting one,
//! and one echo through it. They fail the test by panicking, as the test binaries' own
//! helpers do.

#![allow(clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use zt_api::control::{LimitsRequest, QuicEndpoint, Target, Transport};
use zt_proxy::client::api::ApiClient;
use zt_proxy::client::session::{ClientSession, TunnelOptions};
use zt_proxy::transport::webrtc::PeerSettings;

/// Options for an in-process client of `target` over `transport`, on loopback.
pub fn client_options(transport: Transport, target: SocketAddr) -> TunnelOptions {
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

/// Where a session's QUIC endpoint is and the certificate digest to pin, for tests that
/// drive QUIC by hand; panics on a malformed endpoint.
pub fn quic_address_and_pin(endpoint: &QuicEndpoint) -> (SocketAddr, [u8; 32]) {
    let server = endpoint
        .endpoint
        .parse()
        .expect("the endpoint is an address");
    let pinned = hex::decode(&endpoint.cert_sha256)
        .ok()
        .and_then(|d| d.try_into().ok())
        .expect("cert_sha256 is 32 hex bytes");
    (server, pinned)
}

/// Connects an in-process client session; panics when it cannot.
pub async fn connect(api: &ApiClient, options: &TunnelOptions) -> (ClientSession, String) {
    ClientSession::connect(api, options)
        .await
        .expect("client session connects")
}

/// Sends `payload` through a new stream of `session` (to an echoing target) and checks that
/// it comes back; panics otherwise.
pub async fn echo_once(session: &ClientSession, payload: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local listener");
    let addr = listener.local_addr().expect("its address");
    let cancel = tokio_util::sync::CancellationToken::new();
    let stream = session.open().await.expect("a stream opens");
    let relay = {
        let cancel = cancel.clone();
        async move {
            let (tcp, _) = listener.accept().await.expect("the app connects");
            zt_proxy::client::session::relay(stream, tcp, &cancel).await
        }
    };
    let app = async {
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects to the relay");
        tcp.write_all(payload).await.expect("writes");
        tcp.shutdown().await.expect("shuts down");
        let mut echoed = Vec::new();
        tcp.read_to_end(&mut echoed).await.expect("reads the echo");
        echoed
    };
    let (relayed, echoed) =
        tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(relay, app) })
            .await
            .expect("echo completes");
    relayed.expect("relay ends cleanly");
    assert_eq!(echoed, payload);
}
