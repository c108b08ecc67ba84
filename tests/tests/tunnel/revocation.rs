//! `DELETE /v1/sessions/{id}` in the middle of a transfer closes both ends within a second,
//! removes the session, and is audited.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use zt_api::audit::AuditEvent;
use zt_api::control::{EndReason, Transport};
use zt_tests::proc::{ProxyOptions, TunnelCli, ZtProxy};
use zt_tests::servers::streaming_server;
use zt_tests::ztproxy_bin;

async fn revoke_mid_transfer(transport: Transport) {
    let (target, mut target_closed) = streaming_server().await.unwrap();
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let api = proxy.api();
    let mut events = api.events(Some(0)).await.unwrap();
    let mut tunnel = TunnelCli::start(
        ztproxy_bin!(),
        &proxy.api_arg(),
        &target.to_string(),
        &["--transport", super::transport_arg(transport)],
    )
    .unwrap();

    let mut stream = tokio::net::TcpStream::connect(tunnel.local).await.unwrap();
    // Mid-transfer: wait until data is flowing.
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0usize;
    while received < 8 * 1024 * 1024 {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("data flows")
            .unwrap();
        assert!(n > 0, "stream ended before revocation");
        received += n;
    }

    // Keep reading in the background until the client side is closed.
    let client_closed = tokio::spawn(async move {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    });

    let revoked_at = Instant::now();
    let ended = api
        .delete_session(&tunnel.session)
        .await
        .expect("revocation succeeds");
    assert_eq!(ended.reason, EndReason::Revoked);
    assert!(ended.bytes_to_client >= received as u64);

    let client_end = tokio::time::timeout(Duration::from_secs(5), client_closed)
        .await
        .expect("client side closes")
        .unwrap();
    let target_end = tokio::time::timeout(Duration::from_secs(5), target_closed.recv())
        .await
        .expect("target side closes")
        .unwrap();
    let client_after = client_end.saturating_duration_since(revoked_at);
    let target_after = target_end.saturating_duration_since(revoked_at);
    assert!(
        client_after < Duration::from_secs(1),
        "client side closed after {client_after:?}"
    );
    assert!(
        target_after < Duration::from_secs(1),
        "target side closed after {target_after:?}"
    );

    // Gone from the registry.
    let sessions = api.list_sessions().await.unwrap();
    assert!(
        sessions.iter().all(|s| s.id != tunnel.session),
        "{sessions:?}"
    );
    let missing = api.get_session(&tunnel.session).await.unwrap_err();
    assert!(missing.to_string().contains("not_found"), "{missing}");

    // Audited with the reason and byte counts.
    let ended_event = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(record) = events.next().await {
            if let AuditEvent::SessionEnded {
                session,
                reason,
                bytes_to_client,
                ..
            } = record.unwrap().event
                && session == tunnel.session
            {
                return Some((reason, bytes_to_client));
            }
        }
        None
    })
    .await
    .expect("audit event arrives")
    .expect("session_ended event");
    assert_eq!(ended_event.0, EndReason::Revoked);
    assert!(ended_event.1 >= received as u64);

    // The client notices and exits with its "session ended" status.
    let status = tunnel.wait(Duration::from_secs(10)).expect("client exits");
    assert_eq!(
        status.code(),
        Some(3),
        "client output:\n{}",
        tunnel.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_mid_transfer_over_webrtc() {
    revoke_mid_transfer(Transport::Webrtc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_mid_transfer_over_quic() {
    revoke_mid_transfer(Transport::Quic).await;
}
