//! A hostile or broken API server: every answer ends the connection or the session with a
//! clear error, in bounded memory, never a panic.

// A test binary: a failed expectation is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// tungstenite's handshake callback answers a refusal as an `http::Response` by value.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::sync::CancellationToken;
use zt_k8s::{EndedBy, Error, K8sSettings};
use zt_terminal::{Event, Observer, Terminal, TerminalSettings};

const BOUND: Duration = Duration::from_secs(20);

fn settings() -> K8sSettings {
    let map: HashMap<&str, &str> = [("pod", "web-0")].into_iter().collect();
    K8sSettings::from_parameters(|name| map.get(name).copied()).unwrap()
}

/// Counts what the session reports.
#[derive(Default)]
struct Counts {
    output: usize,
}

impl Observer for Counts {
    fn output(&mut self, bytes: &[u8]) {
        self.output += bytes.len();
    }
    fn input(&mut self, _: &[u8]) {}
    fn resize(&mut self, _: u16, _: u16) {}
    fn terminal(&mut self, _: &Event) {}
}

/// A WebSocket server choosing `protocol` that sends `messages` after the upgrade, then
/// waits for the client to go.
async fn websocket_server(protocol: &'static str, messages: Vec<Message>) -> u16 {
    websocket_server_then(protocol, messages, false).await
}

/// [`websocket_server`], dropping the connection at once after the messages when `abrupt`
/// (unread input in its socket makes that a reset).
async fn websocket_server_then(
    protocol: &'static str,
    messages: Vec<Message>,
    abrupt: bool,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let callback = |_: &Request, mut response: Response| {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
            Ok(response)
        };
        let socket = tokio_tungstenite::accept_hdr_async(tcp, callback)
            .await
            .unwrap();
        let (mut sink, mut source) = socket.split();
        for message in messages {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        if abrupt {
            return;
        }
        while let Some(Ok(_)) = source.next().await {}
    });
    port
}

/// A server that answers the request with `response` as it is.
async fn raw_server(response: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        let _ = tcp.write_all(&response).await;
        let _ = tcp.shutdown().await;
    });
    port
}

/// Runs a session against the server on `port` until it ends.
async fn session(port: u16) -> (EndedBy, usize) {
    let connection = zt_k8s::connect("127.0.0.1", port, &settings())
        .await
        .expect("the upgrade succeeds");
    let terminal = Terminal::new(TerminalSettings::default(), 800, 480, 96, Instant::now());
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    // The client reads everything and says nothing.
    let (mut client_reader, _client_writer) = tokio::io::split(theirs);
    tokio::spawn(async move {
        let mut sink = vec![0; 64 * 1024];
        while matches!(client_reader.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let mut counts = Counts::default();
    let end = tokio::time::timeout(
        BOUND,
        zt_k8s::run(
            connection,
            terminal,
            ours,
            &mut counts,
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the session ends");
    (end.ended_by, counts.output)
}

fn binary(bytes: &[u8]) -> Message {
    Message::Binary(bytes.to_vec().into())
}

#[tokio::test]
async fn broken_streams_end_the_session_with_a_protocol_error() {
    let status_part = [&[3u8][..], &[b'x'; 40 * 1024]].concat();
    for (protocol, messages, expected) in [
        (
            "v5.channel.k8s.io",
            vec![binary(&status_part), binary(&status_part)],
            "status is longer",
        ),
        (
            "v5.channel.k8s.io",
            vec![binary(b"\x00echo")],
            "stream 0, which the server does not write",
        ),
        ("v5.channel.k8s.io", vec![binary(b"\x09")], "stream 9"),
        (
            "v4.channel.k8s.io",
            vec![binary(&[255, 0])],
            "malformed close signal",
        ),
        ("v5.channel.k8s.io", vec![binary(&[])], "no stream byte"),
        (
            "v5.channel.k8s.io",
            vec![Message::Text("{}".into())],
            "text message",
        ),
        (
            "v5.channel.k8s.io",
            vec![
                binary(b"\x03{\"status\":\"Sideways\"}"),
                Message::Close(None),
            ],
            "malformed",
        ),
    ] {
        let port = websocket_server(protocol, messages).await;
        let (ended, _) = session(port).await;
        match ended {
            EndedBy::Failed(Error::Protocol(text)) => {
                assert!(text.contains(expected), "{text:?} lacks {expected:?}");
            }
            other => panic!("{other:?} for {expected:?}"),
        }
    }
}

#[tokio::test]
async fn an_oversized_message_ends_the_session_instead_of_growing_without_bound() {
    let mut huge = vec![1u8];
    huge.resize(4 * 1024 * 1024, b'a');
    let port = websocket_server("v5.channel.k8s.io", vec![binary(&huge)]).await;
    let (ended, output) = session(port).await;
    assert!(
        matches!(&ended, EndedBy::Failed(Error::Io(text)) if text.contains("too long") || text.contains("limit")),
        "{ended:?}"
    );
    assert_eq!(output, 0);
}

#[tokio::test]
async fn output_then_a_status_report_the_exit_code_and_a_plain_close_is_the_target_closing() {
    let status = br#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"42"}]}}"#;
    let port = websocket_server(
        "v5.channel.k8s.io",
        vec![
            binary(b"\x01"),
            binary(b"\x01hello\r\n"),
            binary(b"\x02warn\r\n"),
            binary(&[&[3u8][..], status].concat()),
            Message::Close(None),
        ],
    )
    .await;
    let (ended, output) = session(port).await;
    assert!(matches!(ended, EndedBy::Exited(42)), "{ended:?}");
    assert_eq!(output, "hello\r\nwarn\r\n".len());
    let port = websocket_server(
        "v4.channel.k8s.io",
        vec![binary(b"\x01bye"), Message::Close(None)],
    )
    .await;
    let (ended, _) = session(port).await;
    assert!(matches!(ended, EndedBy::Target), "{ended:?}");
}

#[tokio::test]
async fn a_bad_upgrade_answer_is_refused_before_any_stream() {
    let refuse = |response: &str| response.as_bytes().to_vec();
    for (response, expected) in [
        (
            refuse(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: bm90IHRoZSBhbnN3ZXI=\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n",
            ),
            "Sec-WebSocket-Accept",
        ),
        (
            {
                let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"web-0\" is forbidden: User \"u\" cannot create resource \"pods/exec\"","reason":"Forbidden","code":403}"#;
                refuse(&format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ))
            },
            "refused (403): pods \"web-0\" is forbidden",
        ),
        (
            // A body far over the limit: the status code alone is reported.
            [
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 10000000\r\n\r\n".to_vec(),
                vec![b'x'; 10_000_000],
            ]
            .concat(),
            "answered 500",
        ),
        (
            refuse("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
            "supports neither",
        ),
        (
            refuse("this is not HTTP\r\n\r\n"),
            "Kubernetes connection failed",
        ),
    ] {
        let port = raw_server(response).await;
        let error = tokio::time::timeout(BOUND, zt_k8s::connect("127.0.0.1", port, &settings()))
            .await
            .expect("the connection ends")
            .expect_err("refused");
        let text = error.to_string();
        assert!(text.contains(expected), "{text:?} lacks {expected:?}");
        assert!(text.chars().count() < 400, "{text:?}");
    }
}
