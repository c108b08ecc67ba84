//! Bad input gets a specific error and harms nobody else's session.

use std::time::Duration;

use base64::Engine;
use hyper::{Method, StatusCode};
use webrtc::data_channel::DataChannelEvent;
use zt_api::Secret;
use zt_api::audit::AuditEvent;
use zt_api::control::{
    Conversation, CreateSessionRequest, ErrorBody, ErrorCode, SdpType, SessionDescription,
    SignallingRequest, Target, Transport,
};
use zt_api::seal::{SealKey, SignallingDirection};
use zt_api::tunnel::{
    ChannelControl, QUIC_CLOSE_INVALID_TOKEN, QUIC_CLOSE_PROTOCOL_VIOLATION, TunnelErrorCode,
};
use zt_proxy::client::api::{ApiClient, ClientError};
use zt_proxy::client::session::{ClientStream, TunnelError};
use zt_proxy::transport::quic::{QuicClient, QuicClientError, client_endpoint};
use zt_proxy::transport::webrtc::{CONTROL_CHANNEL_LABEL, Peer, PeerSettings};
use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::servers::{echo_server, refusing_addr};
use zt_tests::ztproxy_bin;

use super::{client_options, connect, echo_once};

fn error_of(status: StatusCode, body: &[u8]) -> (u16, ErrorCode, Option<String>) {
    let body: ErrorBody = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not an error body: {}", String::from_utf8_lossy(body)));
    (status.as_u16(), body.error.code, body.error.field)
}

async fn post(
    api: &ApiClient,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, ErrorCode, Option<String>) {
    let (status, bytes) = api
        .raw(Method::POST, path, content_type, Some(body))
        .await
        .unwrap();
    error_of(status, &bytes)
}

fn quic_tunnel_json(extra: &str) -> Vec<u8> {
    format!(
        r#"{{"transport":"quic","conversation":"tunnel","target":{{"host":"127.0.0.1","port":9}}{extra}}}"#
    )
    .into_bytes()
}

#[tokio::test]
async fn malformed_oversized_and_unknown_requests_get_specific_errors() {
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let api = proxy.api();
    let json = Some("application/json");

    assert_eq!(
        post(&api, "/v1/sessions", json, b"{\"transport\": quic".to_vec()).await,
        (400, ErrorCode::InvalidJson, None)
    );
    assert_eq!(
        post(&api, "/v1/sessions", json, vec![b' '; 300 * 1024]).await,
        (413, ErrorCode::BodyTooLarge, None)
    );
    assert_eq!(
        post(
            &api,
            "/v1/sessions",
            json,
            quic_tunnel_json(r#","colour":"red""#)
        )
        .await,
        (400, ErrorCode::UnknownField, Some("colour".into()))
    );
    assert_eq!(
        post(
            &api,
            "/v1/sessions",
            json,
            quic_tunnel_json(r#","limits":{"idel_timeout":"5m"}"#)
        )
        .await,
        (
            400,
            ErrorCode::UnknownField,
            Some("limits.idel_timeout".into())
        )
    );
    assert_eq!(
        post(
            &api,
            "/v1/sessions",
            json,
            br#"{"transport":"quic"}"#.to_vec()
        )
        .await,
        (400, ErrorCode::MissingField, Some("conversation".into()))
    );
    assert_eq!(
        post(
            &api,
            "/v1/sessions",
            Some("text/plain"),
            quic_tunnel_json("")
        )
        .await,
        (415, ErrorCode::UnsupportedMediaType, None)
    );
    assert_eq!(
        post(
            &api,
            "/v1/sessions",
            json,
            br#"{"transport":"quic","conversation":"tunnel","target":{"host":"bad host","port":22}}"#
                .to_vec()
        )
        .await,
        (400, ErrorCode::InvalidField, Some("target.host".into()))
    );
    assert_eq!(
        post(
            &api,
            "/v1/sessions",
            json,
            br#"{"transport":"quic","conversation":"connection","protocol":"rdp","target":{"host":"h","port":3389}}"#
                .to_vec()
        )
        .await,
        // RDP needs a guacd, and this proxy has none configured.
        (422, ErrorCode::Unsupported, Some("route".into()))
    );
    assert_eq!(
        post(
            &api,
            "/v1/sessions",
            json,
            br#"{"transport":"quic","conversation":"connection","protocol":"ssh","target":{"host":"h","port":22}}"#
                .to_vec()
        )
        .await,
        // SSH is native, and its credentials are injected, never asked for.
        (400, ErrorCode::InvalidField, Some("parameters.username".into()))
    );
    assert_eq!(
        post(
            &api,
            "/v1/sessions",
            json,
            br#"{"transport":"quic","conversation":"connection","protocol":"vnc","target":{"host":"h","port":5900},"parameters":{"color-depth":"12"}}"#
                .to_vec()
        )
        .await,
        // VNC is native, and its parameters are checked when the session is created.
        (400, ErrorCode::InvalidField, Some("parameters.color-depth".into()))
    );
    assert_eq!(
        post(
            &api,
            "/v1/sessions",
            json,
            br#"{"transport":"quic","conversation":"connection","protocol":"vnc","target":{"host":"h","port":5900},"parameters":{"dest-host":"repeater"}}"#
                .to_vec()
        )
        .await,
        (400, ErrorCode::InvalidField, Some("parameters.dest-host".into()))
    );

    // Routes and methods.
    let (status, body) = api
        .raw(Method::GET, "/v2/nothing", None, None)
        .await
        .unwrap();
    assert_eq!(error_of(status, &body).1, ErrorCode::NotFound);
    let (status, body) = api
        .raw(Method::PUT, "/v1/sessions", None, None)
        .await
        .unwrap();
    assert_eq!(
        error_of(status, &body),
        (405, ErrorCode::MethodNotAllowed, None)
    );
    let (status, body) = api
        .raw(Method::DELETE, "/v1/sessions/0123456789abcdef", None, None)
        .await
        .unwrap();
    assert_eq!(error_of(status, &body).1, ErrorCode::NotFound);

    // Candidates: unknown session, wrong transport, bad line.
    let candidate = br#"{"candidates":[{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 9 typ host","sdpMid":"0"}]}"#;
    assert_eq!(
        post(
            &api,
            "/v1/sessions/feedface/candidates",
            json,
            candidate.to_vec()
        )
        .await
        .1,
        ErrorCode::NotFound
    );
    let quic = api
        .create_session(&serde_json::from_slice(&quic_tunnel_json("")).unwrap())
        .await
        .unwrap();
    assert_eq!(
        post(
            &api,
            &format!("/v1/sessions/{}/candidates", quic.id),
            json,
            candidate.to_vec()
        )
        .await,
        (409, ErrorCode::Conflict, None)
    );
    assert_eq!(
        post(
            &api,
            &format!("/v1/sessions/{}/candidates", quic.id),
            json,
            br#"{"candidates":[{"candidate":"a=bogus"}]}"#.to_vec()
        )
        .await
        .1,
        ErrorCode::InvalidField
    );

    // None of this disturbed the daemon.
    assert_eq!(api.health().await.unwrap().status, "ok");
}

#[tokio::test]
async fn bad_sdp_offers_are_refused() {
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let api = proxy.api();
    let mut request = webrtc_request("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    let err = api.create_session(&request).await.unwrap_err();
    assert_api_error(&err, 400, ErrorCode::BadOffer);

    request.offer = Some(SessionDescription {
        kind: SdpType::Offer,
        sdp: "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nthis is not sdp\r\n"
            .into(),
    });
    let err = api.create_session(&request).await.unwrap_err();
    assert_api_error(&err, 400, ErrorCode::BadOffer);

    request.offer = Some(SessionDescription {
        kind: SdpType::Offer,
        sdp: "hello".into(),
    });
    let err = api.create_session(&request).await.unwrap_err();
    assert_api_error(&err, 400, ErrorCode::BadOffer);
    assert!(api.list_sessions().await.unwrap().is_empty());
}

fn webrtc_request(sdp: &str) -> CreateSessionRequest {
    CreateSessionRequest {
        transport: Transport::Webrtc,
        conversation: Conversation::Tunnel,
        protocol: None,
        target: Target {
            host: "127.0.0.1".into(),
            port: 9,
        },
        offer: Some(SessionDescription {
            kind: SdpType::Offer,
            sdp: sdp.into(),
        }),
        sealed_offer: None,
        signalling: None,
        parameters: Default::default(),
        limits: Default::default(),
        route: None,
        recording: None,
        resource_id: None,
        user: None,
    }
}

fn assert_api_error(err: &ClientError, status: u16, code: ErrorCode) {
    match err {
        ClientError::Api { status: s, error } => {
            assert_eq!((*s, error.code), (status, code), "{}", error.message);
        }
        other => panic!("expected an API error, got {other}"),
    }
}

async fn real_offer() -> (Peer, String) {
    let mut peer = Peer::build(&PeerSettings::loopback()).await.unwrap();
    peer.pc
        .create_data_channel(CONTROL_CHANNEL_LABEL, None)
        .await
        .unwrap();
    let sdp = peer.offer(Duration::from_secs(2)).await.unwrap();
    (peer, sdp)
}

#[tokio::test]
async fn sealed_signalling_refuses_wrong_keys_and_unsealed_offers() {
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            require_sealed: true,
            ..ProxyOptions::default()
        },
    )
    .unwrap();
    let api = proxy.api();
    let engine = base64::engine::general_purpose::STANDARD;
    let right = [7u8; 32];
    let wrong = [8u8; 32];
    let (_peer, sdp) = real_offer().await;
    let offer = serde_json::to_vec(&SessionDescription {
        kind: SdpType::Offer,
        sdp: sdp.clone(),
    })
    .unwrap();

    // Unsealed while the proxy requires sealing.
    let err = api.create_session(&webrtc_request(&sdp)).await.unwrap_err();
    assert_api_error(&err, 400, ErrorCode::SealedSignallingRequired);

    // Sealed with a key derived from another secret.
    let mut request = webrtc_request(&sdp);
    request.offer = None;
    request.sealed_offer = Some(
        SealKey::derive(&wrong, "res-1", SignallingDirection::Offer)
            .seal(&offer)
            .unwrap(),
    );
    request.signalling = Some(SignallingRequest {
        resource_id: "res-1".into(),
        traffic_secret: Secret::new(engine.encode(right)),
    });
    let err = api.create_session(&request).await.unwrap_err();
    assert_api_error(&err, 400, ErrorCode::SealedOfferRejected);

    // Sealed for another resource.
    request.sealed_offer = Some(
        SealKey::derive(&right, "res-2", SignallingDirection::Offer)
            .seal(&offer)
            .unwrap(),
    );
    let err = api.create_session(&request).await.unwrap_err();
    assert_api_error(&err, 400, ErrorCode::SealedOfferRejected);

    // Garbage where the sealed offer goes.
    request.sealed_offer = Some("bm90IHNlYWxlZA".into());
    let err = api.create_session(&request).await.unwrap_err();
    assert_api_error(&err, 400, ErrorCode::SealedOfferRejected);
    assert!(api.list_sessions().await.unwrap().is_empty());

    // The right key works end to end, and the answer comes back sealed.
    let target = echo_server().await.unwrap();
    let mut options = client_options(Transport::Webrtc, target);
    options.signalling = Some(("res-1".into(), Secret::new(engine.encode(right))));
    let (session, _) = connect(&api, &options).await;
    echo_once(&session, b"sealed and delivered").await;
}

/// What ztproxy answers when it cannot reach the target, per transport.
async fn target_failure(
    api: &ApiClient,
    transport: Transport,
    host: &str,
    port: u16,
) -> TunnelErrorCode {
    let mut options = client_options(transport, "127.0.0.1:9".parse().unwrap());
    options.target = Target {
        host: host.into(),
        port,
    };
    let (session, _) = connect(api, &options).await;
    match session.open().await {
        Ok(ClientStream::Channel(dc)) => {
            let event = tokio::time::timeout(Duration::from_secs(20), async {
                while let Some(event) = dc.poll().await {
                    if let DataChannelEvent::OnMessage(message) = event {
                        return Some(message);
                    }
                }
                None
            })
            .await
            .expect("an answer arrives")
            .expect("a control message");
            assert!(event.is_string, "failure is a control (text) message");
            match ChannelControl::parse(&event.data).unwrap() {
                ChannelControl::Error { code, .. } => code,
                other => panic!("expected an error, got {other:?}"),
            }
        }
        Err(TunnelError::Quic(QuicClientError::Refused { code, .. })) => code,
        Ok(ClientStream::Quic(..)) => panic!("stream opened to an unreachable target"),
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_targets_are_reported_to_the_client() {
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            tunnel: vec!["target_connect_timeout = \"3s\"".into()],
            ..ProxyOptions::default()
        },
    )
    .unwrap();
    let api = proxy.api();
    let refusing = refusing_addr();
    for transport in super::TRANSPORTS {
        assert_eq!(
            target_failure(&api, transport, "127.0.0.1", refusing.port()).await,
            TunnelErrorCode::TargetRefused,
            "{transport:?}"
        );
        assert_eq!(
            target_failure(&api, transport, "no-such-host.invalid", 22).await,
            TunnelErrorCode::TargetUnreachable,
            "{transport:?}"
        );
    }
    // Refusals are audited with the target as origin.
    let mut events = api.events(Some(0)).await.unwrap();
    let mut refused = 0;
    while refused < 4 {
        let record = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        if matches!(record.event, AuditEvent::ConnectionRefused { .. }) {
            refused += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_sessions_and_bad_tokens_get_no_channel() {
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            tunnel: vec![],
            ..ProxyOptions::default()
        },
    )
    .unwrap();
    let api = proxy.api();
    let target = echo_server().await.unwrap();

    // WebRTC: after revocation, no new channel opens.
    let (session, id) = connect(&api, &client_options(Transport::Webrtc, target)).await;
    echo_once(&session, b"before").await;
    api.delete_session(&id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .expect("client sees the end");
    assert_eq!(
        session.end_reason(),
        Some(zt_api::control::EndReason::Revoked)
    );
    assert!(matches!(
        session.open().await,
        Err(TunnelError::SessionEnded)
    ));

    // QUIC: the token of an ended session, then a made-up token, are refused.
    let info = api
        .create_session(&serde_json::from_slice(&quic_tunnel_json("")).unwrap())
        .await
        .unwrap();
    let endpoint = info.quic.unwrap();
    api.delete_session(&info.id).await.unwrap();
    let client = QuicClient::connect(&endpoint, 1 << 20).await.unwrap();
    assert_closed_invalid_token(client.open().await, client.connection()).await;

    let mut forged = endpoint.clone();
    forged.token =
        Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0x42u8; 32]));
    let client = QuicClient::connect(&forged, 1 << 20).await.unwrap();
    assert_closed_invalid_token(client.open().await, client.connection()).await;

    // A token works once: a second connection with a used token is refused.
    let info = api
        .create_session(&serde_json::from_slice(&quic_tunnel_json("")).unwrap())
        .await
        .unwrap();
    let endpoint = info.quic.unwrap();
    let first = QuicClient::connect(&endpoint, 1 << 20).await.unwrap();
    let refused = first.open().await;
    assert!(
        matches!(
            refused,
            Err(QuicClientError::Refused {
                code: TunnelErrorCode::TargetRefused,
                ..
            })
        ),
        "first connection is admitted (target port 9 refuses): {refused:?}"
    );
    let second = QuicClient::connect(&endpoint, 1 << 20).await.unwrap();
    assert_closed_invalid_token(second.open().await, second.connection()).await;

    // Garbage on a stream of an authenticated connection: a protocol violation.
    let info = api
        .create_session(&serde_json::from_slice(&quic_tunnel_json("")).unwrap())
        .await
        .unwrap();
    let endpoint = info.quic.unwrap();
    let client = QuicClient::connect(&endpoint, 1 << 20).await.unwrap();
    let (mut send, _recv) = client.connection().open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: x\r\n\r\n")
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), client.connection().closed())
        .await
        .expect("connection is closed");
    assert_close_code(&reason, QUIC_CLOSE_PROTOCOL_VIOLATION);

    // Garbage instead of the authentication preamble: access denied.
    let info = api
        .create_session(&serde_json::from_slice(&quic_tunnel_json("")).unwrap())
        .await
        .unwrap();
    let endpoint = info.quic.unwrap();
    let (server, pinned) = zt_tests::client::quic_address_and_pin(&endpoint);
    let raw = client_endpoint(server, pinned, 1 << 20).unwrap();
    let conn = raw
        .connect(server, &endpoint.server_name)
        .unwrap()
        .await
        .unwrap();
    let mut auth = conn.open_uni().await.unwrap();
    auth.write_all(&[0x55; 36]).await.unwrap();
    let _ = auth.finish();
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("connection is closed");
    assert_invalid_token_close(&reason);

    // The refusals are audited.
    let mut events = api.events(Some(0)).await.unwrap();
    let mut denied = 0;
    while denied < 4 {
        let record = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        if let AuditEvent::AccessDenied { resource, .. } = record.event {
            assert_eq!(resource, "quic");
            denied += 1;
        }
    }
}

#[tokio::test]
async fn quic_connections_without_a_token_time_out() {
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let api = proxy.api();
    let info = api
        .create_session(&serde_json::from_slice(&quic_tunnel_json("")).unwrap())
        .await
        .unwrap();
    // Connect, then say nothing: closed with "invalid token" after quic.auth_timeout (10 s).
    let endpoint = info.quic.unwrap();
    let (server, pinned) = zt_tests::client::quic_address_and_pin(&endpoint);
    let raw = client_endpoint(server, pinned, 1 << 20).unwrap();
    let conn = raw
        .connect(server, &endpoint.server_name)
        .unwrap()
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(20), conn.closed())
        .await
        .expect("silent connection is closed");
    assert_invalid_token_close(&reason);
}

async fn assert_closed_invalid_token(
    opened: Result<(quinn::SendStream, quinn::RecvStream), QuicClientError>,
    conn: &quinn::Connection,
) {
    assert!(opened.is_err(), "stream must not open");
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("connection is closed");
    assert_invalid_token_close(&reason);
}

fn assert_invalid_token_close(reason: &quinn::ConnectionError) {
    assert_close_code(reason, QUIC_CLOSE_INVALID_TOKEN);
}

fn assert_close_code(reason: &quinn::ConnectionError, code: u32) {
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(code), "{close:?}");
        }
        other => panic!("expected an application close, got {other}"),
    }
}

#[tokio::test]
async fn tcp_control_api_requires_the_token() {
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            tcp_control: true,
            ..ProxyOptions::default()
        },
    )
    .unwrap();
    let token = proxy.token.clone().unwrap();

    let err = proxy.tcp_api(None).health().await.unwrap_err();
    assert_api_error(&err, 401, ErrorCode::Unauthorized);
    let err = proxy
        .tcp_api(Some("wrong-token"))
        .health()
        .await
        .unwrap_err();
    assert_api_error(&err, 401, ErrorCode::Unauthorized);
    let almost = format!("{}x", &token[..token.len() - 1]);
    let err = proxy
        .tcp_api(Some(&almost))
        .list_sessions()
        .await
        .unwrap_err();
    assert_api_error(&err, 401, ErrorCode::Unauthorized);
    let (status, _) = proxy
        .tcp_api(None)
        .raw(Method::GET, "/metrics", None, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    assert_eq!(
        proxy.tcp_api(Some(&token)).health().await.unwrap().status,
        "ok"
    );

    let mut events = proxy.api().events(Some(0)).await.unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < 4 {
        let record = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        if let AuditEvent::AccessDenied { resource, reason } = record.event {
            assert_eq!(resource, "control_api");
            reasons.push(reason);
        }
    }
    assert_eq!(
        reasons,
        [
            "missing_token",
            "wrong_token",
            "wrong_token",
            "missing_token"
        ]
    );
}

#[tokio::test]
async fn the_session_limit_is_enforced() {
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            sessions: vec!["max_sessions = 2".into()],
            ..ProxyOptions::default()
        },
    )
    .unwrap();
    let api = proxy.api();
    let request: CreateSessionRequest = serde_json::from_slice(&quic_tunnel_json("")).unwrap();
    api.create_session(&request).await.unwrap();
    api.create_session(&request).await.unwrap();
    let err = api.create_session(&request).await.unwrap_err();
    assert_api_error(&err, 503, ErrorCode::TooManySessions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_flood_is_refused_without_harming_other_sessions() {
    const FLOOD: usize = 2000;
    const LIMIT: usize = 32;
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            sessions: vec![format!("max_connections_per_session = {LIMIT}")],
            ..ProxyOptions::default()
        },
    )
    .unwrap();
    let api = proxy.api();
    let target = echo_server().await.unwrap();
    let (victim, _) = connect(&api, &client_options(Transport::Webrtc, target)).await;
    let (attacker, attacker_id) = connect(&api, &client_options(Transport::Webrtc, target)).await;

    // The attacker opens channels as fast as it can and never closes them.
    let flood = async {
        let mut opened = Vec::new();
        let mut refused = 0usize;
        for _ in 0..FLOOD {
            match attacker.open().await {
                Ok(ClientStream::Channel(dc)) => opened.push(dc),
                Ok(_) => unreachable!(),
                Err(_) => refused += 1,
            }
        }
        // How ztproxy answered each channel: refused with "too many connections", closed
        // (refused before the session task saw it), or left open (admitted).
        let (mut too_many, mut closed, mut admitted) = (0usize, 0usize, 0usize);
        for dc in &opened {
            let answer = tokio::time::timeout(Duration::from_millis(500), async {
                while let Some(event) = dc.poll().await {
                    match event {
                        DataChannelEvent::OnMessage(m) => {
                            return ChannelControl::parse(&m.data).ok();
                        }
                        DataChannelEvent::OnClose => return None,
                        _ => {}
                    }
                }
                None
            })
            .await;
            match answer {
                Ok(Some(ChannelControl::Error {
                    code: TunnelErrorCode::TooManyConnections,
                    ..
                })) => too_many += 1,
                Ok(None) => closed += 1,
                Ok(Some(other)) => panic!("unexpected answer {other:?}"),
                Err(_) => admitted += 1,
            }
        }
        (opened.len(), refused, too_many, closed, admitted)
    };
    // Meanwhile another user's session keeps working.
    let victim_work = async {
        for i in 0..20 {
            echo_once(&victim, format!("still here {i}").as_bytes()).await;
        }
    };
    let ((opened, refused, too_many, closed, admitted), ()) =
        tokio::time::timeout(Duration::from_secs(300), async {
            tokio::join!(flood, victim_work)
        })
        .await
        .expect("flood and victim finish");
    assert_eq!(opened + refused, FLOOD);
    assert!(
        admitted <= LIMIT,
        "{admitted} channels admitted beyond the limit of {LIMIT}"
    );
    assert_eq!(too_many + closed + admitted, opened);
    assert!(
        too_many >= FLOOD / 2,
        "most refusals say why: {too_many} too_many_connections, {closed} closed"
    );
    let info = api.get_session(&attacker_id).await.unwrap();
    assert!(info.connections_active <= LIMIT as u64, "{info:?}");
    assert_eq!(api.health().await.unwrap().status, "ok");
}
