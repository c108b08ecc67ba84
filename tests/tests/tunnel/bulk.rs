//! 1 GiB each way, at the same time, through one tunnelled connection, over each transport;
//! both directions arrive with the SHA-256 of what was sent.

use std::time::{Duration, Instant};

use zt_api::control::Transport;
use zt_proxy::client::session::ClientStream;
use zt_tests::PatternStream;
use zt_tests::proc::{ProxyOptions, TunnelCli, ZtProxy};
use zt_tests::servers::{bulk_server, hash_until_eof, send_pattern};
use zt_tests::ztproxy_bin;

/// Bytes each way (1 GiB; `ZT_TEST_BULK_BYTES` may lower it while developing).
fn bulk_bytes() -> u64 {
    std::env::var("ZT_TEST_BULK_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|v| v / 8 * 8)
        .unwrap_or(1 << 30)
}

async fn gigabyte_each_way(transport: Transport) {
    const UP_SEED: u64 = 0x5eed_0001;
    const DOWN_SEED: u64 = 0x5eed_0002;
    let len = bulk_bytes();
    let expected_up = tokio::task::spawn_blocking(move || PatternStream::digest(UP_SEED, len));
    let expected_down = tokio::task::spawn_blocking(move || PatternStream::digest(DOWN_SEED, len));

    let (target, mut reports) = bulk_server(len, DOWN_SEED).await.unwrap();
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let tunnel = TunnelCli::start(
        ztproxy_bin!(),
        &proxy.api_arg(),
        &target.to_string(),
        &["--transport", super::transport_arg(transport)],
    )
    .unwrap();

    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(tunnel.local).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let up = async move {
        send_pattern(&mut writer, UP_SEED, len).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut writer).await
    };
    let down = async move { hash_until_eof(&mut reader).await };
    let (up, down) =
        tokio::time::timeout(Duration::from_secs(600), async { tokio::join!(up, down) })
            .await
            .unwrap_or_else(|_| panic!("transfer timed out; ztproxy:\n{}", proxy.output()));
    up.expect("upload completes");
    let (received, down_digest) = down.expect("download completes");
    let elapsed = started.elapsed();

    let report = tokio::time::timeout(Duration::from_secs(60), reports.recv())
        .await
        .expect("target reports")
        .expect("target report");
    assert_eq!(received, len, "client received every byte");
    assert_eq!(report.received, len, "target received every byte");
    assert_eq!(report.sent, len);
    assert_eq!(down_digest, expected_down.await.unwrap(), "download digest");
    assert_eq!(report.digest, expected_up.await.unwrap(), "upload digest");
    eprintln!("{transport:?}: {} MiB each way in {elapsed:.1?}", len >> 20);

    // The session's counters saw the same bytes.
    let info = proxy.api().get_session(&tunnel.session).await.unwrap();
    assert_eq!(info.bytes_to_target, len);
    assert_eq!(info.bytes_to_client, len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_each_way_over_webrtc() {
    gigabyte_each_way(Transport::Webrtc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_each_way_over_quic() {
    gigabyte_each_way(Transport::Quic).await;
}

/// Path MTU discovery goes past quinn's 1452-byte default on loopback, and the larger
/// datagrams survive a bulk upload: no loss makes black-hole detection fall back to 1200
/// bytes (as refused segmentation-offload batches once did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_uses_large_datagrams_without_black_holes() {
    const UP_SEED: u64 = 0x5eed_0003;
    let len: u64 = 64 << 20;
    let expected_up = tokio::task::spawn_blocking(move || PatternStream::digest(UP_SEED, len));
    let (target, mut reports) = bulk_server(0, 0).await.unwrap();
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let api = proxy.api();
    let (session, _id) =
        super::connect(&api, &super::client_options(Transport::Quic, target)).await;
    let ClientStream::Quic(mut send, mut recv) = session.open().await.unwrap() else {
        panic!("a QUIC session opens a QUIC stream");
    };
    let transfer = async {
        send_pattern(&mut send, UP_SEED, len).await.unwrap();
        send.finish().unwrap();
        hash_until_eof(&mut recv).await.unwrap()
    };
    let (received, _) = tokio::time::timeout(Duration::from_secs(120), transfer)
        .await
        .unwrap_or_else(|_| panic!("upload timed out; ztproxy:\n{}", proxy.output()));
    assert_eq!(received, 0, "the target sends nothing");
    let report = tokio::time::timeout(Duration::from_secs(60), reports.recv())
        .await
        .expect("target reports")
        .expect("target report");
    assert_eq!(report.received, len, "target received every byte");
    assert_eq!(report.digest, expected_up.await.unwrap(), "upload digest");

    let path = session.quic_path_stats().expect("QUIC path statistics");
    eprintln!("client path after the upload: {path:?}");
    assert_eq!(path.black_holes_detected, 0, "no black hole: {path:?}");
    assert!(
        path.current_mtu > 1452,
        "discovery went past quinn's default: {path:?}"
    );
    session.close().await;
}
