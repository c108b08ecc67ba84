//! The browser's only way out: a SOCKS 5 proxy on a loopback port of the session's own,
//! which Chromium must use for every connection (`--proxy-server`, loopback included).
//!
//! The DevTools Fetch domain checks each request's whole URL, but it does not see WebSocket
//! handshakes or the requests of service and shared workers. The gate sees every
//! connection, and lets one through only to a host and port that a pattern of either list
//! names ([`UrlPolicy::allows_endpoint`]). A refused connection is answered "not allowed by
//! ruleset" and never leaves the machine, and is reported ([`Gate::refused`]).
//!
//! The gate knows host and port only: a WebSocket to an allowed host passes whatever its
//! path. Names are resolved here, not by the browser.
//!
//! Bounds: [`MAX_CONNECTIONS`] at once (more are refused), the handshake and the
//! connection to the destination each within [`HANDSHAKE_TIMEOUT`]. Everything ends when
//! the gate is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::policy::UrlPolicy;
use crate::socks::{self, Destination};

/// Connections through the gate at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long the browser's handshake, and then the connection to the destination, may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Refusals waiting to be reported; more are counted in the log only.
const MAX_PENDING_REFUSALS: usize = 64;

/// A running gate.
#[derive(Debug)]
pub struct Gate {
    address: SocketAddr,
    cancel: CancellationToken,
    refusals: mpsc::Receiver<Destination>,
}

impl Gate {
    /// Starts a gate for `policy` on an ephemeral loopback port.
    pub async fn start(policy: UrlPolicy) -> std::io::Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let (refused, refusals) = mpsc::channel(MAX_PENDING_REFUSALS);
        tokio::spawn(accept(listener, Arc::new(policy), refused, cancel.clone()));
        Ok(Self {
            address,
            cancel,
            refusals,
        })
    }

    /// Where the browser connects (`socks5://` this).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The next refused destination; pending for ever once the gate has stopped.
    pub async fn refused(&mut self) -> Destination {
        match self.refusals.recv().await {
            Some(destination) => destination,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    policy: Arc<UrlPolicy>,
    refused: mpsc::Sender<Destination>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "the browser gate's accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("the browser opened more than {MAX_CONNECTIONS} connections; refused");
            drop(stream);
            continue;
        };
        let (policy, refused, cancel) = (policy.clone(), refused.clone(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = serve(stream, &policy, &refused) => {}
            }
            drop(slot);
        });
    }
}

/// One connection: the handshake, the policy, then bytes both ways until either side ends.
async fn serve(mut browser: TcpStream, policy: &UrlPolicy, refused: &mpsc::Sender<Destination>) {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut browser, policy)).await;
    let (mut upstream, early) = match handshake {
        Ok(Ok(connected)) => connected,
        Ok(Err(Outcome::Refused(destination))) => {
            tracing::debug!(host = %destination.host, port = destination.port, "the browser gate refused a connection");
            let _ = browser.write_all(&socks::reply(socks::NOT_ALLOWED)).await;
            if refused.try_send(destination).is_err() {
                tracing::warn!("browser gate refusals arrive faster than they are audited");
            }
            return;
        }
        Ok(Err(Outcome::Failed(code))) => {
            let _ = browser.write_all(&socks::reply(code)).await;
            return;
        }
        Ok(Err(Outcome::Gone)) | Err(_) => return,
    };
    if browser
        .write_all(&socks::reply(socks::SUCCEEDED))
        .await
        .is_err()
    {
        return;
    }
    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut browser, &mut upstream).await;
}

enum Outcome {
    /// The policy refuses the destination.
    Refused(Destination),
    /// Another failure, with the code to answer.
    Failed(u8),
    /// The browser went away or broke the protocol beyond an answer.
    Gone,
}

/// Reads the greeting and the request, checks the policy, connects. Returns the connection
/// and whatever the browser sent after its request.
async fn handshake(
    browser: &mut TcpStream,
    policy: &UrlPolicy,
) -> Result<(TcpStream, Vec<u8>), Outcome> {
    let mut buf = Vec::with_capacity(socks::MAX_REQUEST);
    let used = loop {
        match socks::greeting(&buf) {
            Ok(Some(used)) => break used,
            Ok(None) => read_some(browser, &mut buf, socks::MAX_GREETING).await?,
            Err(socks::Refused::NoMethod) => {
                let _ = browser.write_all(&socks::NO_ACCEPTABLE_METHOD).await;
                return Err(Outcome::Gone);
            }
            Err(_) => return Err(Outcome::Gone),
        }
    };
    buf.drain(..used);
    browser
        .write_all(&socks::METHOD_ACCEPTED)
        .await
        .map_err(|_| Outcome::Gone)?;
    let (destination, used) = loop {
        match socks::request(&buf) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => read_some(browser, &mut buf, socks::MAX_REQUEST).await?,
            Err(refused) => return Err(Outcome::Failed(refused.reply())),
        }
    };
    buf.drain(..used);
    if !policy.allows_endpoint(&destination.host, destination.port) {
        return Err(Outcome::Refused(destination));
    }
    let host = destination
        .host
        .trim_start_matches('[')
        .trim_end_matches(']');
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, destination.port))
        .await
        .map_err(|_| Outcome::Failed(socks::HOST_UNREACHABLE))?
        .collect();
    let mut code = socks::HOST_UNREACHABLE;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(upstream) => {
                let _ = upstream.set_nodelay(true);
                return Ok((upstream, buf));
            }
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                code = socks::CONNECTION_REFUSED;
            }
            Err(_) => {}
        }
    }
    Err(Outcome::Failed(code))
}

/// Reads more of the handshake into `buf`, which may hold at most `limit` bytes.
async fn read_some(
    browser: &mut TcpStream,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<(), Outcome> {
    if buf.len() >= limit {
        return Err(Outcome::Gone);
    }
    let mut chunk = [0u8; 512];
    let want = (limit - buf.len()).min(chunk.len());
    match browser.read(&mut chunk[..want]).await {
        Ok(0) | Err(_) => Err(Outcome::Gone),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Patterns;

    async fn socks_connect(gate: SocketAddr, host: &str, port: u16) -> (TcpStream, u8) {
        let mut s = TcpStream::connect(gate).await.unwrap();
        s.write_all(&[5, 1, 0]).await.unwrap();
        let mut method = [0u8; 2];
        s.read_exact(&mut method).await.unwrap();
        assert_eq!(method, socks::METHOD_ACCEPTED);
        let mut request = vec![5, 1, 0, 3, host.len() as u8];
        request.extend(host.as_bytes());
        request.extend(port.to_be_bytes());
        s.write_all(&request).await.unwrap();
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).await.unwrap();
        (s, reply[1])
    }

    #[tokio::test]
    async fn allowed_endpoints_connect_and_refused_ones_are_reported_and_never_reached() {
        let allowed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused_target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = allowed.local_addr().unwrap().port();
        let refused_port = refused_target.local_addr().unwrap().port();
        let policy = UrlPolicy::new(
            Patterns::parse(&format!("http://127.0.0.1:{port}/app*")).unwrap(),
            Patterns::default(),
        );
        let mut gate = Gate::start(policy).await.unwrap();

        let (mut s, code) = socks_connect(gate.address(), "127.0.0.1", port).await;
        assert_eq!(code, socks::SUCCEEDED);
        let (mut upstream, _) = allowed.accept().await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        upstream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        upstream.write_all(b"pong").await.unwrap();
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");

        let (_s, code) = socks_connect(gate.address(), "127.0.0.1", refused_port).await;
        assert_eq!(code, socks::NOT_ALLOWED);
        let reported = tokio::time::timeout(Duration::from_secs(5), gate.refused())
            .await
            .unwrap();
        assert_eq!(reported.port, refused_port);
        let reached =
            tokio::time::timeout(Duration::from_millis(300), refused_target.accept()).await;
        assert!(reached.is_err(), "the refused destination was reached");

        // Hostile: a greeting without "no authentication", a BIND, junk.
        let mut s = TcpStream::connect(gate.address()).await.unwrap();
        s.write_all(&[5, 1, 2]).await.unwrap();
        let mut method = [0u8; 2];
        s.read_exact(&mut method).await.unwrap();
        assert_eq!(method, socks::NO_ACCEPTABLE_METHOD);
        let mut s = TcpStream::connect(gate.address()).await.unwrap();
        s.write_all(&[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80])
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        s.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer[3], socks::COMMAND_NOT_SUPPORTED);
        let mut s = TcpStream::connect(gate.address()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{rest:?}");

        // Dropped, the gate stops accepting.
        let address = gate.address();
        drop(gate);
        let ended = async {
            loop {
                if TcpStream::connect(address).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .unwrap();
    }
}
