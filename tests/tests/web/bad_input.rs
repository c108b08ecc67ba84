//! Hostile requests to the local helpers: each gets a clear error and the running session
//! carries on.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zt_tests::browser::Browser;

use crate::{Fixture, open_session, run, wait_prompt};

/// Sends a raw HTTP/1.1 request; returns the status and the body.
async fn request(addr: &str, head: &str, body: &[u8]) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // A server may answer (and close) before reading an oversized body.
    let _ = tcp.write_all(body).await;
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn hostile_requests_to_connect_web_get_clear_errors_and_end_no_session() {
    let fixture = Fixture::start();
    let helper = fixture.web(&[], &[]);
    let url = helper.field("url");
    let mut browser = Browser::start().unwrap();
    open_session(&mut browser, &url, false).await;
    wait_prompt(&mut browser).await;

    let addr = helper.field("listen");
    let path = url
        .trim_start_matches("http://")
        .split_once('/')
        .unwrap()
        .1
        .to_owned();
    let offer = format!("/{path}offer");
    let origin = format!("http://{addr}");
    let post = |host: &str, origin: Option<&str>, target: &str| {
        let mut head =
            format!("POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n");
        if let Some(origin) = origin {
            head.push_str(&format!("Origin: {origin}\r\n"));
        }
        head
    };
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "not JSON",
            post(&addr, Some(&origin), &offer),
            b"{\"sdp\":".to_vec(),
            400,
            "bad_offer",
        ),
        (
            "an unknown field",
            post(&addr, Some(&origin), &offer),
            br#"{"sdp":"v=0","target":"10.0.0.1:22"}"#.to_vec(),
            400,
            "unknown field",
        ),
        (
            "not SDP",
            post(&addr, Some(&origin), &offer),
            br#"{"sdp":"hello"}"#.to_vec(),
            400,
            "bad_offer",
        ),
        (
            "SDP ztproxy cannot use",
            post(&addr, Some(&origin), &offer),
            br#"{"sdp":"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}"#.to_vec(),
            400,
            "ztproxy refused",
        ),
        (
            "an oversized body",
            post(&addr, Some(&origin), &offer),
            vec![b' '; 1 << 20],
            413,
            "too_large",
        ),
        (
            "another origin",
            post(&addr, Some("http://evil.example"), &offer),
            br#"{"sdp":"v=0"}"#.to_vec(),
            403,
            "bad_origin",
        ),
        (
            "no origin",
            post(&addr, None, &offer),
            br#"{"sdp":"v=0"}"#.to_vec(),
            403,
            "bad_origin",
        ),
        (
            "another host name (DNS rebinding)",
            post("evil.example", Some("http://evil.example"), &offer),
            br#"{"sdp":"v=0"}"#.to_vec(),
            403,
            "bad_host",
        ),
        (
            "no token",
            post(&addr, Some(&origin), "/s/offer"),
            br#"{"sdp":"v=0"}"#.to_vec(),
            404,
            "token",
        ),
        (
            "a wrong token",
            post(
                &addr,
                Some(&origin),
                "/s/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/offer",
            ),
            br#"{"sdp":"v=0"}"#.to_vec(),
            404,
            "token",
        ),
        (
            "the page without its token",
            format!("GET /s/ HTTP/1.1\r\nHost: {addr}\r\n"),
            Vec::new(),
            404,
            "token",
        ),
    ];
    for (what, head, body, status, says) in cases {
        let (got, text) = request(&addr, &head, &body).await;
        assert_eq!(got, status, "{what}: {text}");
        assert!(
            text.contains(says),
            "{what}: the error does not say `{says}`: {text}"
        );
    }
    // The page's own requests still work, everything served carries the policy, and the
    // session the page runs is the only one and carries on.
    let (status, config) = request(
        &addr,
        &format!("GET /{path}config HTTP/1.1\r\nHost: {addr}\r\n"),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    // The page learns the policy, never a credential.
    let password = fixture.sshd.password.clone().unwrap();
    assert!(config.contains("\"copy\":true"), "{config}");
    assert!(
        !config.contains(&password) && !config.contains("ssh-ed25519"),
        "{config}"
    );
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut page = String::new();
    tcp.read_to_string(&mut page).await.unwrap();
    assert!(
        page.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{page}"
    );
    assert_eq!(fixture.proxy.api().list_sessions().await.unwrap().len(), 1);
    run(&mut browser, "echo zt-$((6*7))", "zt-42").await;
    browser.close().await;
}
