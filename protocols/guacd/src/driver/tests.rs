//! The driver against scripted guacd servers on loopback: which side failed, and the hand-over
//! to the relay. (The peer in `tests/guacd-peer/src/lib.rs` tests it against a full guacd.)

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use zt_guac::{DecodeError, Status};

use super::*;
use crate::error::PeerMisbehaved;

/// A one-connection server that runs `script` on the accepted socket.
async fn scripted<F, Fut>(script: F) -> SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            script(stream).await;
        }
    });
    addr
}

/// Reads until `needle` has been seen (or EOF).
async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
    seen
}

fn parameters() -> BTreeMap<String, Secret<String>> {
    [("hostname", "10.9.8.7"), ("password", "pw")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Secret::new(v.to_owned())))
        .collect()
}

async fn run(addr: SocketAddr, timeout: Duration) -> Result<GuacdConnection, Error> {
    let settings = HandshakeSettings::with_timeout(timeout);
    connect(addr, "rdp", &parameters(), ClientInfo::default(), settings).await
}

#[tokio::test]
async fn hands_over_the_socket_and_the_bytes_after_ready() {
    let addr = scripted(|mut s| async move {
        assert_eq!(read_until(&mut s, b";").await, b"6.select,3.rdp;");
        s.write_all(b"4.args,13.VERSION_1_5_0,8.hostname,8.password;")
            .await
            .unwrap();
        let sent = read_until(&mut s, b"2.pw;").await;
        assert!(sent.ends_with(b"7.connect,13.VERSION_1_5_0,8.10.9.8.7,2.pw;"));
        s.write_all(b"5.ready,2.$z;4.size,1.0,3.640,3.480;4.sy")
            .await
            .unwrap();
        s.write_all(b"nc,1.5;").await.unwrap();
        // The relay talks on the same socket.
        assert_eq!(read_until(&mut s, b"4.sync,1.5;").await, b"4.sync,1.5;");
    })
    .await;
    let mut conn = run(addr, Duration::from_secs(5)).await.unwrap();
    assert_eq!(conn.connection_id, "$z");
    assert_eq!(conn.guacd_version, Some(ProtocolVersion::V1_5_0));
    assert_eq!(conn.protocol_version, ProtocolVersion::V1_5_0);
    assert_eq!(conn.args, ["hostname", "password"]);
    assert!(conn.stream.nodelay().unwrap());
    let debug = format!("{conn:?}");
    assert!(
        debug.contains(&format!("leftover: {}", conn.leftover.len())),
        "{debug}"
    );
    assert!(
        !debug.contains("640"),
        "the display stream stays out of Debug: {debug}"
    );
    // guacd's two writes may both have arrived in the handshake's last read, or not: read
    // from the socket only what the leftover lacks (reading more would wait forever).
    let expected: &[u8] = b"4.size,1.0,3.640,3.480;4.sync,1.5;";
    let mut relay = conn.leftover.to_vec();
    let mut buf = [0u8; 256];
    while relay.len() < expected.len() {
        let n = conn.stream.read(&mut buf).await.unwrap();
        assert_ne!(n, 0, "guacd closed early");
        relay.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    assert_eq!(relay, expected);
    conn.stream.write_all(b"4.sync,1.5;").await.unwrap();
}

#[tokio::test]
async fn refused_when_nothing_listens() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let error = run(addr, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(error, Error::Refused(_)), "{error:?}");
    assert_eq!(error.to_string(), "guacd refused the connection");
    assert!(error.is_guacd_side());
}

#[tokio::test]
async fn silent_guacd_times_out_in_the_phase_it_was_in() {
    let addr = scripted(|mut s| async move {
        let _ = read_until(&mut s, b"never").await;
    })
    .await;
    let error = run(addr, Duration::from_millis(300)).await.unwrap_err();
    assert!(
        matches!(error, Error::TimedOut { phase: Phase::Args }),
        "{error:?}"
    );

    let addr = scripted(|mut s| async move {
        let _ = read_until(&mut s, b";").await;
        s.write_all(b"4.args,8.hostname;").await.unwrap();
        let _ = read_until(&mut s, b"never").await;
    })
    .await;
    let error = run(addr, Duration::from_millis(300)).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::TimedOut {
                phase: Phase::Ready
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn closing_guacd_is_reported_as_closed() {
    // guacd closes without a word when the protocol is not installed.
    let addr = scripted(|mut s| async move {
        let _ = read_until(&mut s, b";").await;
    })
    .await;
    let error = run(addr, Duration::from_secs(5)).await.unwrap_err();
    assert!(
        matches!(error, Error::Closed { phase: Phase::Args }),
        "{error:?}"
    );
}

#[tokio::test]
async fn guacd_error_carries_its_status() {
    let addr = scripted(|mut s| async move {
        let _ = read_until(&mut s, b";").await;
        s.write_all(b"4.args,8.hostname;").await.unwrap();
        let _ = read_until(&mut s, b"7.connect").await;
        s.write_all(b"5.error,22.Authentication failure,3.769;")
            .await
            .unwrap();
    })
    .await;
    let error = run(addr, Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(error.status(), Some(Status::CLIENT_UNAUTHORIZED));
    assert!(matches!(&error, Error::Guacd { message, .. } if message == "Authentication failure"));
}

#[tokio::test]
async fn an_args_list_of_ten_thousand_elements_is_rejected() {
    let addr = scripted(|mut s| async move {
        let _ = read_until(&mut s, b";").await;
        let mut args = String::from("4.args,13.VERSION_1_5_0");
        for i in 0..10_000 {
            args.push_str(&format!(",5.p{i:04}"));
        }
        args.push(';');
        let _ = s.write_all(args.as_bytes()).await;
    })
    .await;
    let error = run(addr, Duration::from_secs(5)).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::PeerMisbehaved(PeerMisbehaved::Decode(DecodeError::TooManyElements))
        ),
        "{error:?}"
    );
}
