//! The client's handshake and guacd's: display settings come from the client, everything
//! else from the session.

use zt_guac::opcode;
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::guacd_peer::PeerConfig;

use super::{Fixture, STEP, SessionSpec, TARGET_HOST, TARGET_PORT, TRANSPORTS, guacds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_credentials_reach_guacd_and_the_clients_attempts_do_not() {
    for config in guacds() {
        session_credentials_reach_guacd(Fixture::start(config).await).await;
    }
}

async fn session_credentials_reach_guacd(fx: Fixture) {
    for transport in TRANSPORTS {
        let (session, _id) = fx.session(&SessionSpec::rdp(transport)).await;
        // A hostile client: selects another protocol and puts a target and credentials of
        // its own in `connect` (as values for parameters ztproxy never offered).
        let handshake = Handshake {
            select: "vnc".into(),
            size: (1600, 900, 120),
            timezone: "Asia/Tokyo".into(),
            name: "mallory".into(),
            connect_values: vec![
                "evil.example.com".into(),
                "4444".into(),
                "Administrator".into(),
                "guessed-password".into(),
                "hostname=evil.example.com".into(),
            ],
            ..Handshake::default()
        };
        let client = GuacClient::connect(&session, &handshake).await.unwrap();
        // ztproxy's own `args` lists no parameters, only the protocol version.
        assert_eq!(client.args, vec!["VERSION_1_5_0".to_owned()]);
        assert!(client.ready_id.starts_with('$'), "{}", client.ready_id);

        let conn = fx.peer.next_connection(STEP).await.unwrap();
        let record = conn.wait_connect_record(STEP).await.unwrap();
        assert_eq!(
            record.protocol, "rdp",
            "the session's protocol, not the client's select"
        );
        let p = &record.parameters;
        assert_eq!(p.get("hostname").map(String::as_str), Some(TARGET_HOST));
        assert_eq!(
            p.get("port").map(String::as_str),
            Some(TARGET_PORT.to_string().as_str())
        );
        assert_eq!(p.get("username").map(String::as_str), Some("svc-admin"));
        assert_eq!(
            p.get("password").map(String::as_str),
            Some("vault-password-Zx9")
        );
        assert_eq!(p.get("domain").map(String::as_str), Some("CORP"));
        assert_eq!(p.get("ignore-cert").map(String::as_str), Some("true"));
        for value in p.values() {
            for attempt in &handshake.connect_values {
                assert_ne!(value, attempt, "a client value reached guacd");
            }
        }
        // The display settings are the client's.
        assert_eq!(record.size, (1600, 900, 120));
        assert_eq!(record.timezone.as_deref(), Some("Asia/Tokyo"));
        assert_eq!(record.name.as_deref(), Some("mallory"));
        assert_eq!(record.image, handshake.image);
        drop(client);
        drop(session);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guacd_route_serves_vnc_ssh_and_telnet_with_their_own_args() {
    for config in guacds() {
        serves_vnc_ssh_and_telnet(Fixture::start(config).await).await;
    }
}

async fn serves_vnc_ssh_and_telnet(fx: Fixture) {
    for protocol in ["vnc", "ssh", "telnet"] {
        let spec = SessionSpec {
            protocol: protocol.into(),
            parameters: vec![("password".into(), "pw-for-".to_owned() + protocol)],
            ..SessionSpec::rdp(zt_api::control::Transport::Quic)
        };
        let (_session, _id, mut client, conn) = fx.connected(&spec).await;
        let record = conn.wait_connect_record(STEP).await.unwrap();
        assert_eq!(record.protocol, protocol);
        assert_eq!(
            record.parameters.get("password").map(String::as_str),
            Some(format!("pw-for-{protocol}").as_str())
        );
        assert_eq!(
            record.parameters.get("hostname").map(String::as_str),
            Some(TARGET_HOST)
        );
        // The display flows once guacd reached the target.
        client.expect(opcode::SYNC, STEP).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_sessions_are_refused_clearly_when_they_cannot_work() {
    let fx = Fixture::start(PeerConfig::default()).await;
    // guacd has no such protocol: refused when the session is created.
    let spec = SessionSpec {
        protocol: "kermit".into(),
        ..SessionSpec::rdp(zt_api::control::Transport::Quic)
    };
    let request_error = tokio::time::timeout(STEP, async {
        let (session, _) = fx.session_result(&spec).await?;
        drop(session);
        anyhow::Ok(())
    })
    .await
    .unwrap()
    .expect_err("an unknown protocol is refused");
    let text = format!("{request_error:#}");
    assert!(text.contains("protocol"), "{text}");

    // A client may not set the target through parameters either.
    let spec = SessionSpec::rdp(zt_api::control::Transport::Quic).with("hostname", "evil");
    let text = format!(
        "{:#}",
        fx.session_result(&spec).await.err().expect("refused")
    );
    assert!(text.contains("parameters.hostname"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_checked_against_the_protocols_guacd_names() {
    let fx = Fixture::start(PeerConfig::default()).await;
    // An SSH parameter on an RDP session, a misspelt one, and malformed values: each is a
    // 400 naming the parameter, never its value.
    let rdp = || SessionSpec::rdp(zt_api::control::Transport::Quic);
    for (name, value, code) in [
        ("private-key", "-----BEGIN KEY-----", "unknown_field"),
        ("ignore-certs", "true", "unknown_field"),
        ("ignore-cert", "yes-please", "invalid_field"),
        ("width", "wide-secret", "invalid_field"),
        ("security", "none", "invalid_field"),
    ] {
        let error = fx.session_result(&rdp().with(name, value)).await.err();
        let text = format!("{:#}", error.expect("refused"));
        assert!(
            text.contains(&format!("parameters.{name}")),
            "{name}: {text}"
        );
        assert!(text.contains(code), "{name}: {text}");
        assert!(!text.contains(value), "{name}: the value leaked: {text}");
    }
    // The same names are fine where guacd has them.
    let ssh = SessionSpec {
        protocol: "ssh".into(),
        parameters: vec![("private-key".into(), "-----BEGIN KEY-----".into())],
        ..rdp()
    };
    let (session, _) = fx
        .session_result(&ssh)
        .await
        .expect("ssh takes private-key");
    drop(session);
}
