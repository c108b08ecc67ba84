//! Either end crashing: a client learns that ztproxy is gone, and ztproxy ends the session of
//! a client that vanished, within the documented time (QUIC `idle_timeout` 5 s; WebRTC ICE
//! disconnected 2 s + failed 3 s).

use std::time::{Duration, Instant};

use zt_api::audit::AuditEvent;
use zt_api::control::{EndReason, Transport};
use zt_tests::proc::{ProxyOptions, TunnelCli, ZtProxy};
use zt_tests::servers::echo_server;
use zt_tests::ztproxy_bin;

/// The documented time, and what the test allows beyond it for scheduling.
const NOTICED_WITHIN: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_notice_a_killed_daemon_within_the_documented_time() {
    let mut proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let api = proxy.api();
    let echo = echo_server().await.unwrap();
    let mut sessions = Vec::new();
    for transport in [Transport::Quic, Transport::Webrtc] {
        let (session, _) = crate::connect(&api, &crate::client_options(transport, echo)).await;
        crate::echo_once(&session, b"alive").await;
        sessions.push((transport, session));
    }
    proxy.kill().unwrap();
    let killed = Instant::now();
    let noticed =
        futures::future::join_all(sessions.iter().map(|(transport, session)| async move {
            let within = tokio::time::timeout(NOTICED_WITHIN + SLACK * 2, session.closed()).await;
            (*transport, within.map(|()| killed.elapsed()))
        }))
        .await;
    for (transport, noticed) in noticed {
        let took = noticed.unwrap_or_else(|_| panic!("{transport:?} client never noticed"));
        assert!(
            took <= NOTICED_WITHIN + SLACK,
            "{transport:?} client noticed after {took:?}"
        );
        // Not by luck of a timer that fires at once either: the client waited for silence.
        assert!(took >= Duration::from_millis(500), "{transport:?} {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_killed_clients_end_within_the_documented_time() {
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let api = proxy.api();
    let echo = echo_server().await.unwrap();
    let mut events = api.events(None).await.unwrap();
    for transport in ["quic", "webrtc"] {
        let mut cli = TunnelCli::start(
            ztproxy_bin!(),
            &proxy.api_arg(),
            &echo.to_string(),
            &["--transport", transport],
        )
        .unwrap();
        // The session is live: a connection through it echoes.
        let mut tcp = tokio::net::TcpStream::connect(cli.local).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tcp.write_all(b"ping").await.unwrap();
        let mut pong = [0u8; 4];
        tcp.read_exact(&mut pong).await.unwrap();
        let session = cli.session.clone();
        cli.kill().unwrap();
        let killed = Instant::now();
        let (reason, took) = tokio::time::timeout(NOTICED_WITHIN + SLACK * 3, async {
            while let Some(record) = events.next().await {
                if let AuditEvent::SessionEnded {
                    session: s, reason, ..
                } = record.unwrap().event
                    && s == session
                {
                    return (reason, killed.elapsed());
                }
            }
            panic!("the event stream ended")
        })
        .await
        .unwrap_or_else(|_| panic!("the {transport} session of a killed client lingers"));
        assert_eq!(reason, EndReason::ClientClosed, "{transport}");
        assert!(
            took <= NOTICED_WITHIN + SLACK,
            "{transport}: ended after {took:?}"
        );
    }
}
