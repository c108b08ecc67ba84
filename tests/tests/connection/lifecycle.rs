//! How connections end: guacd's `error` and `disconnect`, guacd vanishing, the client
//! leaving, revocation; and how they stay up: the `sync` keep-alive for a silent client.

use std::time::Duration;

use zt_api::control::{EndReason, Origin, Transport};
use zt_guac::{Instruction, Status, opcode};
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::guacd_peer::{ConnEvent, DisplayMode, PeerConfig};

use super::{Fixture, STEP, SessionSpec, TRANSPORTS, guacds, session_ended};

/// Reads until the channel closes; returns what arrived.
async fn until_closed(client: &mut GuacClient) -> Vec<Instruction> {
    client
        .collect_until_closed(STEP)
        .await
        .expect("the channel closes in time")
}

async fn assert_gone(fx: &Fixture, id: &str) {
    zt_tests::wait_until(STEP, "the session leaves the registry", || async {
        !fx.api
            .list_sessions()
            .await
            .unwrap()
            .iter()
            .any(|s| s.id == id)
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guacd_error_ends_the_session_with_its_status_on_both_sides() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    for transport in TRANSPORTS {
        let (_session, id, mut client, conn) = fx.connected(&SessionSpec::rdp(transport)).await;
        client.expect(opcode::SYNC, STEP).await.unwrap();
        conn.error(
            "Unable to connect to the RDP server",
            Status::UPSTREAM_NOT_FOUND.code(),
        )
        .await
        .unwrap();
        let rest = until_closed(&mut client).await;
        let error = rest
            .iter()
            .find(|i| i.is(opcode::ERROR))
            .expect("the client hears the error");
        assert_eq!(error.arg(0), Some("Unable to connect to the RDP server"));
        assert_eq!(error.arg(1), Some("519"));
        let last = rest.last().unwrap();
        assert!(last.is(opcode::DISCONNECT), "{rest:?}");

        let (reason, origin, detail) = session_ended(&mut events, &id).await;
        assert_eq!(reason, EndReason::Error);
        assert_eq!(origin, Some(Origin::Target));
        let detail = detail.unwrap();
        assert!(
            detail.contains("0x0207") && detail.contains("UPSTREAM_NOT_FOUND"),
            "{detail}"
        );
        assert_gone(&fx, &id).await;
        conn.wait_closed(STEP).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guacd_disconnecting_or_vanishing_ends_the_session_cleanly() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();

    let (_session, id, mut client, conn) = fx.connected(&SessionSpec::rdp(Transport::Quic)).await;
    conn.disconnect().await.unwrap();
    let rest = until_closed(&mut client).await;
    assert!(rest.last().unwrap().is(opcode::DISCONNECT), "{rest:?}");
    assert!(!rest.iter().any(|i| i.is(opcode::ERROR)), "{rest:?}");
    let (reason, _, _) = session_ended(&mut events, &id).await;
    assert_eq!(reason, EndReason::TargetClosed);
    assert_gone(&fx, &id).await;

    // guacd's socket closes without a word: the client still gets a disconnect.
    let (_session, id, mut client, conn) = fx.connected(&SessionSpec::rdp(Transport::Webrtc)).await;
    conn.abort().await;
    let rest = until_closed(&mut client).await;
    assert!(rest.last().unwrap().is(opcode::DISCONNECT), "{rest:?}");
    let (reason, origin, _) = session_ended(&mut events, &id).await;
    assert_eq!(
        (reason, origin),
        (EndReason::TargetClosed, Some(Origin::Target))
    );
    assert_gone(&fx, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_leaving_reaches_guacd() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();

    // An explicit `disconnect`.
    let (_session, id, mut client, conn) = fx.connected(&SessionSpec::rdp(Transport::Quic)).await;
    client
        .send(&Instruction::new(opcode::DISCONNECT, &[] as &[&str]))
        .await
        .unwrap();
    let how = conn.wait_closed(STEP).await.unwrap();
    assert!(
        conn.events().contains(&ConnEvent::ClientDisconnected),
        "{how:?}"
    );
    let (reason, _, _) = session_ended(&mut events, &id).await;
    assert_eq!(reason, EndReason::ClientClosed);

    // The client's transport going away (the app closes it).
    let (session, id, client, conn) = fx.connected(&SessionSpec::rdp(Transport::Webrtc)).await;
    session.close().await;
    drop(client);
    conn.wait_closed(STEP).await.unwrap();
    let (reason, _, _) = session_ended(&mut events, &id).await;
    assert_eq!(reason, EndReason::ClientClosed);
    assert_gone(&fx, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_tells_the_client_and_disconnects_guacd() {
    for config in guacds() {
        revocation_tells_the_client(Fixture::start(config).await).await;
    }
}

async fn revocation_tells_the_client(fx: Fixture) {
    let (_session, id, mut client, conn) = fx.connected(&SessionSpec::rdp(Transport::Quic)).await;
    client.expect(opcode::SYNC, STEP).await.unwrap();
    fx.api.delete_session(&id).await.unwrap();
    let rest = until_closed(&mut client).await;
    let error = rest.iter().find(|i| i.is(opcode::ERROR)).expect("told why");
    assert_eq!(
        error.arg(1),
        Some(Status::SESSION_CLOSED.code().to_string().as_str())
    );
    assert!(rest.last().unwrap().is(opcode::DISCONNECT));
    conn.wait_closed(STEP).await.unwrap();
    assert!(conn.events().contains(&ConnEvent::ClientDisconnected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guacd_error_during_the_handshake_reaches_the_client() {
    let config = PeerConfig {
        error_on_connect: Some((
            "Protocol plugin failed to load".into(),
            Status::UNSUPPORTED.code(),
        )),
        ..PeerConfig::default()
    };
    let fx = Fixture::start(config).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (session, id) = fx.session(&SessionSpec::rdp(Transport::Quic)).await;
    let mut client = GuacClient::start(&session, &Handshake::default())
        .await
        .unwrap();
    let rest = until_closed(&mut client).await;
    assert!(!rest.iter().any(|i| i.is(opcode::READY)), "{rest:?}");
    let error = rest
        .iter()
        .find(|i| i.is(opcode::ERROR))
        .expect("the client hears an error");
    assert_eq!(
        error.arg(1),
        Some(Status::UNSUPPORTED.code().to_string().as_str())
    );
    assert!(rest.last().unwrap().is(opcode::DISCONNECT));
    let (reason, origin, detail) = session_ended(&mut events, &id).await;
    assert_eq!((reason, origin), (EndReason::Error, Some(Origin::Target)));
    let detail = detail.unwrap();
    assert!(detail.contains("0x0100"), "{detail}");
    assert!(!detail.contains("password"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_guacd_is_a_clear_target_error() {
    let unused = zt_tests::free_port();
    let fx = Fixture::start(PeerConfig::default()).await;
    // A second daemon whose guacd address has nothing listening.
    let proxy = zt_tests::proc::ZtProxy::start(
        zt_tests::ztproxy_bin!(),
        &zt_tests::proc::ProxyOptions {
            extra_toml: format!(
                "[guacd]\naddress = \"127.0.0.1:{unused}\"\nconnect_timeout = \"2s\"\n"
            ),
            ..zt_tests::proc::ProxyOptions::default()
        },
    )
    .unwrap();
    let api = proxy.api();
    let mut events = api.events(Some(0)).await.unwrap();
    let fx2 = Fixture { api, ..fx };
    let (session, id) = fx2.session(&SessionSpec::rdp(Transport::Quic)).await;
    let mut client = GuacClient::start(&session, &Handshake::default())
        .await
        .unwrap();
    let rest = until_closed(&mut client).await;
    let error = rest.iter().find(|i| i.is(opcode::ERROR)).expect("an error");
    assert_eq!(
        error.arg(1),
        Some(Status::UPSTREAM_ERROR.code().to_string().as_str())
    );
    let (reason, origin, detail) = session_ended(&mut events, &id).await;
    assert_eq!((reason, origin), (EndReason::Error, Some(Origin::Target)));
    assert!(detail.unwrap().contains("guacd"));
    drop(proxy);
}

/// guacd drops a user it has not heard from for 15 s. A client that stops reading (a browser
/// tab in the background) must not lose its session: ztproxy answers guacd's `sync`s and sends
/// `nop`s for it, and the client finds the session alive, its frames in order, when it comes
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_keeps_its_session_past_guacds_timeout() {
    let config = PeerConfig {
        display: DisplayMode::Frames {
            interval: Duration::from_millis(100),
        },
        ..PeerConfig::default()
    };
    let fx = Fixture::start(config).await;
    let (_session, _id, mut client, conn) = fx.connected(&SessionSpec::rdp(Transport::Quic)).await;
    client.expect(opcode::SYNC, STEP).await.unwrap();

    // Silence: the client neither reads nor writes for longer than guacd's timeout.
    let silent = zt_guacd::GUACD_CLIENT_TIMEOUT + Duration::from_secs(5);
    let result = tokio::time::timeout(silent, conn.wait_closed(silent + STEP)).await;
    assert!(
        result.is_err(),
        "guacd dropped the session: {:?}",
        conn.events()
    );
    assert!(!conn.events().contains(&ConnEvent::TimedOut));

    // What kept it alive: syncs ztproxy sent on the client's behalf, none for a frame guacd
    // had not sent.
    let syncs: Vec<u64> = conn
        .received()
        .iter()
        .filter(|i| i.is(opcode::SYNC))
        .filter_map(|i| i.arg(0)?.parse().ok())
        .collect();
    assert!(!syncs.is_empty(), "no keep-alive reached guacd");
    let sent = conn.sent_syncs();
    for timestamp in &syncs {
        assert!(
            sent.contains(timestamp),
            "sync {timestamp} acknowledges a frame guacd never sent"
        );
    }

    // The client comes back: frames are still flowing, in order.
    let mut last = 0u64;
    for _ in 0..20 {
        let sync = client.expect(opcode::SYNC, STEP).await.unwrap();
        let timestamp: u64 = sync.arg(0).unwrap().parse().unwrap();
        assert!(timestamp >= last, "frames out of order");
        last = timestamp;
    }
    assert!(conn.events().is_empty() || !conn.events().contains(&ConnEvent::TimedOut));
}
