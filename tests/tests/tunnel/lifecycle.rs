//! Timeouts, the audit stream, metrics and shutdown.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::{Duration, Instant};

use zt_api::audit::AuditEvent;
use zt_api::control::{CreateSessionRequest, EndReason, LimitsRequest, SessionState, Transport};
use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::servers::echo_server;
use zt_tests::ztproxy_bin;

use super::{client_options, connect};

async fn wait_for_end(
    events: &mut zt_proxy::client::api::EventStream,
    session: &str,
) -> (EndReason, u64) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(record) = events.next().await {
            if let AuditEvent::SessionEnded {
                session: s,
                reason,
                duration_ms,
                ..
            } = record.unwrap().event
                && s == session
            {
                return (reason, duration_ms);
            }
        }
        panic!("event stream ended")
    })
    .await
    .expect("session ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_on_idle_timeout_max_duration_and_connect_timeout() {
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            sessions: vec!["connect_timeout = \"2s\"".into()],
            ..ProxyOptions::default()
        },
    )
    .unwrap();
    let api = proxy.api();
    let mut events = api.events(Some(0)).await.unwrap();
    let target = echo_server().await.unwrap();

    // Idle: connected, then nothing moves for the idle timeout.
    let mut options = client_options(Transport::Quic, target);
    options.limits = LimitsRequest {
        idle_timeout: Some(Duration::from_millis(1500)),
        ..LimitsRequest::default()
    };
    let (idle, idle_id) = connect(&api, &options).await;
    let (reason, duration_ms) = wait_for_end(&mut events, &idle_id).await;
    assert_eq!(reason, EndReason::IdleTimeout);
    assert!((1400..5000).contains(&duration_ms), "{duration_ms}");
    tokio::time::timeout(Duration::from_secs(5), idle.closed())
        .await
        .expect("client sees the end");
    assert_eq!(idle.end_reason(), Some(EndReason::IdleTimeout));

    // Max duration: ends even while busy.
    let mut options = client_options(Transport::Webrtc, target);
    options.limits = LimitsRequest {
        max_duration: Some(Duration::from_secs(2)),
        ..LimitsRequest::default()
    };
    let (busy, busy_id) = connect(&api, &options).await;
    let started = Instant::now();
    let keep_busy = async {
        while started.elapsed() < Duration::from_secs(10) {
            let Ok(stream) = busy.open().await else { break };
            drop(stream);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ((reason, duration_ms), ()) = tokio::join!(wait_for_end(&mut events, &busy_id), keep_busy);
    assert_eq!(reason, EndReason::MaxDuration);
    assert!((1900..5000).contains(&duration_ms), "{duration_ms}");

    // Connect timeout: created, never connected.
    let request = CreateSessionRequest {
        transport: Transport::Quic,
        ..serde_json::from_str(&format!(
            r#"{{"transport":"quic","conversation":"tunnel","target":{{"host":"127.0.0.1","port":{}}}}}"#,
            target.port()
        ))
        .unwrap()
    };
    let created = api.create_session(&request).await.unwrap();
    assert_eq!(
        api.get_session(&created.id).await.unwrap().state,
        SessionState::Pending
    );
    let (reason, _) = wait_for_end(&mut events, &created.id).await;
    assert_eq!(reason, EndReason::ConnectTimeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_metrics_and_health_report_sessions() {
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let api = proxy.api();
    let target = echo_server().await.unwrap();

    // The control socket is private.
    let meta = std::fs::metadata(&proxy.ready.control_socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let (session, id) = connect(&api, &client_options(Transport::Quic, target)).await;
    zt_tests::wait_until(Duration::from_secs(10), "session connected", || async {
        api.get_session(&id)
            .await
            .is_ok_and(|i| i.state == SessionState::Connected)
    })
    .await
    .unwrap();
    assert_eq!(api.health().await.unwrap().sessions, 1);
    let _ = session;
    let ended = api.delete_session(&id).await.unwrap();

    let mut events = api.events(Some(0)).await.unwrap();
    let mut kinds = Vec::new();
    while !kinds.contains(&"session_ended") {
        let record = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        assert_eq!(record.event.session(), Some(id.as_str()));
        kinds.push(match record.event {
            AuditEvent::SessionCreated { .. } => "session_created",
            AuditEvent::SessionConnected { .. } => "session_connected",
            AuditEvent::SessionEnded {
                bytes_to_target, ..
            } => {
                assert_eq!(bytes_to_target, ended.bytes_to_target);
                "session_ended"
            }
            _ => "other",
        });
    }
    assert_eq!(
        kinds,
        ["session_created", "session_connected", "session_ended"]
    );

    let metrics = api.metrics().await.unwrap();
    for needle in [
        "ztproxy_sessions_created_total{transport=\"quic\",conversation=\"tunnel\"} 1",
        "ztproxy_sessions_ended_total{reason=\"revoked\"} 1",
        "ztproxy_sessions_active 0",
        "ztproxy_bytes_total{direction=\"to_target\"}",
        "ztproxy_connections_active 0",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_sessions_and_removes_the_socket() {
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let api = proxy.api();
    let target = echo_server().await.unwrap();
    let (session, _) = connect(&api, &client_options(Transport::Webrtc, target)).await;
    let socket = proxy.ready.control_socket.clone();
    let status = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "socket removed on shutdown");
    tokio::time::timeout(Duration::from_secs(10), session.closed())
        .await
        .expect("client sees the shutdown");
    assert_eq!(session.end_reason(), Some(EndReason::Shutdown));
}

#[test]
fn connect_cli_fails_clearly_when_the_session_cannot_be_created() {
    use zt_tests::proc::run_failing_tunnel;

    let (status, output) = run_failing_tunnel(
        ztproxy_bin!(),
        &[
            "--api",
            "unix:/nonexistent/control.sock",
            "--target",
            "127.0.0.1:22",
        ],
    )
    .unwrap();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("cannot reach the control API"), "{output}");

    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let (status, output) = run_failing_tunnel(
        ztproxy_bin!(),
        &[
            "--api",
            &proxy.api_arg(),
            "--target",
            "bad host!:22",
            "--transport",
            "quic",
        ],
    )
    .unwrap();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains("invalid_field") && output.contains("target.host"),
        "{output}"
    );

    let (status, output) = run_failing_tunnel(
        ztproxy_bin!(),
        &["--api", &proxy.api_arg(), "--target", "127.0.0.1"],
    )
    .unwrap();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("not host:port"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_candidates_are_applied_to_webrtc_sessions() {
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let api = proxy.api();
    let target = echo_server().await.unwrap();
    let (_session, id) = connect(&api, &client_options(Transport::Webrtc, target)).await;
    api.add_candidates(
        &id,
        vec![zt_api::control::IceCandidate {
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        }],
    )
    .await
    .expect("a well-formed candidate is accepted");
    // The end-of-candidates marker is accepted too.
    api.add_candidates(
        &id,
        vec![zt_api::control::IceCandidate {
            candidate: String::new(),
            sdp_mid: None,
            sdp_m_line_index: None,
            username_fragment: None,
        }],
    )
    .await
    .unwrap();
}
