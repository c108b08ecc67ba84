//! 200 concurrent TCP connections through one session, each echoing its own data.

use std::time::Duration;

use futures::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zt_api::control::Transport;
use zt_tests::PatternStream;
use zt_tests::proc::{ProxyOptions, TunnelCli, ZtProxy};
use zt_tests::servers::echo_server;
use zt_tests::ztproxy_bin;

const CONNECTIONS: usize = 200;
const BYTES_EACH: usize = 256 * 1024;

async fn two_hundred_connections(transport: Transport) {
    let target = echo_server().await.unwrap();
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let tunnel = TunnelCli::start(
        ztproxy_bin!(),
        &proxy.api_arg(),
        &target.to_string(),
        &["--transport", super::transport_arg(transport)],
    )
    .unwrap();
    let local = tunnel.local;

    // Open every connection first so all 200 are open at once, then transfer.
    let mut streams = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        streams.push(tokio::net::TcpStream::connect(local).await.unwrap());
    }
    let transfers = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| async move {
            let mut data = vec![0u8; BYTES_EACH];
            PatternStream::new(i as u64).fill(&mut data);
            let (mut reader, mut writer) = stream.into_split();
            let expected = data.clone();
            let send = async move {
                writer.write_all(&data).await?;
                writer.shutdown().await
            };
            let receive = async move {
                let mut echoed = Vec::with_capacity(BYTES_EACH);
                reader.read_to_end(&mut echoed).await?;
                Ok::<_, std::io::Error>(echoed)
            };
            let (sent, echoed) = tokio::join!(send, receive);
            sent.map_err(|e| format!("connection {i}: send: {e}"))?;
            let echoed = echoed.map_err(|e| format!("connection {i}: receive: {e}"))?;
            if echoed != expected {
                return Err(format!(
                    "connection {i}: echo differs ({} bytes)",
                    echoed.len()
                ));
            }
            Ok(())
        });
    let results = tokio::time::timeout(Duration::from_secs(180), join_all(transfers))
        .await
        .unwrap_or_else(|_| panic!("transfers timed out; ztproxy:\n{}", proxy.output()));
    let failures: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    assert!(
        failures.is_empty(),
        "{failures:?}\nclient:\n{}",
        tunnel.output()
    );

    let info = proxy.api().get_session(&tunnel.session).await.unwrap();
    // At least one channel per connection: webrtc 0.21 can hand a new channel the stream id
    // of one still being reset, and the client retries such a channel on a fresh one.
    assert!(info.connections_total >= CONNECTIONS as u64, "{info:?}");
    assert_eq!(info.bytes_to_target, (CONNECTIONS * BYTES_EACH) as u64);
    assert_eq!(info.bytes_to_client, (CONNECTIONS * BYTES_EACH) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections_over_webrtc() {
    two_hundred_connections(Transport::Webrtc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections_over_quic() {
    two_hundred_connections(Transport::Quic).await;
}
