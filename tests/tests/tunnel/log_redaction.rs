//! No secret — control token, connection password, traffic secret, QUIC token — appears in
//! any output of the daemon at any log level.

use std::time::Duration;

use base64::Engine;
use zt_api::Secret;
use zt_api::control::{CreateSessionRequest, Transport};
use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::servers::echo_server;
use zt_tests::ztproxy_bin;

use super::{client_options, connect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_log_line() {
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            tcp_control: true,
            log_level: "trace".into(),
            rust_log: Some("trace".into()),
            ..ProxyOptions::default()
        },
    )
    .unwrap();
    let token = proxy.token.clone().unwrap();
    let api = proxy.tcp_api(Some(&token));
    let target = echo_server().await.unwrap();

    let password = "hunter2-Pa55w0rd-must-not-leak";
    let traffic_secret = [0x33u8; 32];
    let traffic_b64 = base64::engine::general_purpose::STANDARD.encode(traffic_secret);

    // A sealed WebRTC session with a password parameter; traffic through it.
    let mut options = client_options(Transport::Webrtc, target);
    options.signalling = Some(("res-9".into(), Secret::new(traffic_b64.clone())));
    let (session, _) = connect(&api, &options).await;
    let stream = session.open().await.unwrap();
    drop(stream);

    // A QUIC session with credentials in its parameters, and a connection that uses its token.
    let mut request: CreateSessionRequest = serde_json::from_str(&format!(
        r#"{{"transport":"quic","conversation":"tunnel","target":{{"host":"127.0.0.1","port":{}}}}}"#,
        target.port()
    ))
    .unwrap();
    request
        .parameters
        .insert("password".into(), Secret::new(password.into()));
    request.parameters.insert(
        "private-key".into(),
        Secret::new("-----BEGIN KEY-----secretkey".into()),
    );
    let created = api.create_session(&request).await.unwrap();
    let quic = created.quic.unwrap();
    let quic_token = quic.token.expose_secret().clone();
    let client = zt_proxy::transport::quic::QuicClient::connect(&quic, 1 << 20)
        .await
        .unwrap();
    let _ = client.open().await.unwrap();

    // Failed logins with near-miss tokens, malformed bodies quoting the password.
    let near_miss = format!("{token}0");
    let _ = proxy.tcp_api(Some(&near_miss)).health().await;
    let _ = api
        .raw(
            hyper::Method::POST,
            "/v1/sessions",
            Some("application/json"),
            Some(format!(r#"{{"transport":"quic","password":"{password}"}}"#).into_bytes()),
        )
        .await;
    let _ = api
        .raw(
            hyper::Method::POST,
            "/v1/sessions",
            Some("application/json"),
            Some(
                format!(
                    r#"{{"transport":"quic","conversation":"tunnel","target":{{"host":"{password} x","port":1}}}}"#
                )
                .into_bytes(),
            ),
        )
        .await;
    for s in api.list_sessions().await.unwrap() {
        api.delete_session(&s.id).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let output = proxy.output();
    assert!(
        output.len() > 10_000,
        "trace logging produced output:\n{output}"
    );
    let secrets = [
        token.as_str(),
        password,
        traffic_b64.as_str(),
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(traffic_secret),
        &hex::encode(traffic_secret),
        quic_token.as_str(),
        "secretkey",
    ];
    for secret in secrets {
        let leaks: Vec<&str> = output.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "secret {secret:?} found in the daemon's output:\n{}",
            leaks.join("\n")
        );
    }
}
