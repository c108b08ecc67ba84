//! Relaying one TCP connection over one [`Stream`] (a data channel or a QUIC stream).
//!
//! Both ends of a tunnel run the same relays: ztproxy between the channel and the target,
//! the `connect` client between the channel and the local application. The framing is
//! [`zt_api::tunnel`].
//!
//! Flow control is end to end and memory per connection is bounded:
//! * socket → channel: at most one chunk is read before it is handed to the transport, and
//!   the transport's `send` waits while the channel holds more than the high-water mark of
//!   unacknowledged bytes (webrtc-rs send-buffer limit; QUIC stream flow control), so a slow
//!   receiver stops us reading the socket, and TCP pushes back on its sender;
//! * channel → socket: the next message is taken from the transport only after the previous
//!   one is written to the socket; meanwhile the transport's receive window closes.
//!
//! Closing is orderly. A TCP half-close becomes an `eof` (WebRTC) or a stream FIN (QUIC) and
//! the other side half-closes its socket after writing everything before it. A data channel
//! is closed only when both sides have sent `eof` and everything this side sent has been
//! acknowledged, so no byte is lost to the close. An abnormal end (the peer closes the
//! channel without `eof`, a stream reset, a socket error) is propagated as a TCP reset.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use zt_api::control::Target;
use zt_api::tunnel::{ChannelControl, FramingError, TunnelErrorCode};

use crate::transport::stream::{self, Received, Stream};

/// How long a closing channel waits for its last bytes to be acknowledged.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a data channel to open.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the accepting end waits for the opener to close a finished channel, and how long
/// a closing end reads events until the close has gone through.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Counts bytes as a relay moves them. `sent` is socket → channel; `received` is
/// channel → socket.
pub trait Meter: Send + Sync {
    /// `n` bytes were handed to the transport.
    fn sent(&self, n: usize);
    /// `n` bytes were written to the socket.
    fn received(&self, n: usize);
}

/// A meter that counts nothing.
#[derive(Debug, Default)]
pub struct NoMeter;

impl Meter for NoMeter {
    fn sent(&self, _: usize) {}
    fn received(&self, _: usize) {}
}

/// Bytes one relay moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayTotals {
    /// Socket → channel.
    pub to_peer: u64,
    /// Channel → socket.
    pub from_peer: u64,
}

/// How a relay ended, when it did not end cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The session ended under it.
    #[error("session ended")]
    Cancelled,
    /// The peer closed the channel or reset the stream without an orderly end.
    #[error("peer aborted the connection")]
    PeerAborted,
    /// The peer reported a failure.
    #[error("peer reported {code}: {message}")]
    PeerFailed {
        /// Why.
        code: TunnelErrorCode,
        /// For people.
        message: String,
    },
    /// The peer broke the framing.
    #[error("peer broke the tunnel framing")]
    Framing(#[from] FramingError),
    /// The local socket failed.
    #[error("socket error")]
    Socket(#[source] io::Error),
    /// The transport failed.
    #[error("transport error: {0}")]
    Transport(String),
}

/// A failure to reach the target.
#[derive(Debug, Clone)]
pub struct TargetFailure {
    /// The code given to the client.
    pub code: TunnelErrorCode,
    /// A secret-free message for the client.
    pub message: String,
}

/// Connects to `target`, trying every address it resolves to, within `timeout`.
pub async fn connect_target(
    target: &Target,
    timeout: Duration,
) -> Result<TcpStream, TargetFailure> {
    let attempt = async {
        let addrs: Vec<_> = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|_| TargetFailure {
                code: TunnelErrorCode::TargetUnreachable,
                message: format!("cannot resolve target host {}", target.host),
            })?
            .collect();
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => TargetFailure {
                code: TunnelErrorCode::TargetRefused,
                message: format!("target {target} refused the connection"),
            },
            Some(e) => TargetFailure {
                code: TunnelErrorCode::TargetUnreachable,
                message: format!("cannot reach target {target}: {}", e.kind()),
            },
            None => TargetFailure {
                code: TunnelErrorCode::TargetUnreachable,
                message: format!("target host {} has no addresses", target.host),
            },
        })
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(TargetFailure {
            code: TunnelErrorCode::TargetTimeout,
            message: format!(
                "target {target} did not accept within {}",
                humantime::format_duration(timeout)
            ),
        }),
    }
}

/// Waits until `dc` is open. Returns `false` if it closed first or did not open in time.
pub async fn wait_open(dc: &Arc<dyn DataChannel>, timeout: Duration) -> bool {
    let wait = async {
        while let Some(event) = dc.poll().await {
            match event {
                DataChannelEvent::OnOpen => return true,
                DataChannelEvent::OnClose => return false,
                _ => {}
            }
        }
        false
    };
    tokio::time::timeout(timeout, wait).await.unwrap_or(false)
}

/// Sends a failure on a data channel and closes it.
pub async fn fail_channel(dc: &Arc<dyn DataChannel>, code: TunnelErrorCode, message: String) {
    let control = ChannelControl::Error { code, message };
    let _ = dc.send_text(&control.to_text()).await;
    let _ = wait_acked(dc).await;
    close_channel(dc).await;
}

/// Relays between an open stream and a TCP stream until both directions have ended.
///
/// `role` says which end closes a data channel after an orderly end (see [`CloseRole`]).
pub async fn relay(
    stream: Stream,
    mut tcp: TcpStream,
    chunk: usize,
    meter: &dyn Meter,
    cancel: &CancellationToken,
    role: CloseRole,
) -> (RelayTotals, Result<(), RelayError>) {
    let (mut reader, mut writer) = stream.split();
    let mut to_peer = 0u64;
    let mut from_peer = 0u64;
    let result = {
        let (mut tcp_read, mut tcp_write) = tcp.split();
        let (reader, writer) = (&mut reader, &mut writer);
        let up = async {
            // Each read is handed to the transport as it is (quinn keeps the buffer: no
            // copy); a data channel carries one message of at most `chunk` bytes per read.
            let message_based = writer.is_message_based();
            let mut buf = BytesMut::new();
            loop {
                buf.reserve(chunk);
                let read = if message_based {
                    (&mut tcp_read).take(chunk as u64).read_buf(&mut buf).await
                } else {
                    tcp_read.read_buf(&mut buf).await
                };
                let n = read.map_err(RelayError::Socket)?;
                if n == 0 {
                    writer.send_eof().await?;
                    return Ok::<(), RelayError>(());
                }
                writer.send_data(buf.split()).await?;
                meter.sent(n);
                to_peer += n as u64;
            }
        };
        let down = async {
            loop {
                match reader.recv_tunnel(chunk).await? {
                    Received::Data(data) => {
                        tcp_write
                            .write_all(&data)
                            .await
                            .map_err(RelayError::Socket)?;
                        meter.received(data.len());
                        from_peer += data.len() as u64;
                    }
                    Received::Eof => {
                        tcp_write.shutdown().await.map_err(RelayError::Socket)?;
                        return Ok::<(), RelayError>(());
                    }
                }
            }
        };
        tokio::select! {
            () = cancel.cancelled() => Err(RelayError::Cancelled),
            result = async { tokio::try_join!(up, down) } => result.map(|_| ()),
        }
    };
    let totals = RelayTotals { to_peer, from_peer };
    match result {
        Ok(()) => {
            stream::finish_tunnel(&writer, role).await;
            (totals, Ok(()))
        }
        Err(error) => {
            abort_socket(&tcp);
            stream::abort_tunnel(&mut reader, &mut writer, &error).await;
            (totals, Err(error))
        }
    }
}

/// Which end of a data channel closes it after an orderly end.
///
/// webrtc 0.21 frees a channel's SCTP stream id when the local side sends the stream reset,
/// before SCTP has finished it; a channel created in between gets the id and fails (or,
/// worse, is half-open on a stale stream on the other side). One closer per channel, and the
/// other end reading until the close has gone through, keeps that window to one round trip,
/// and [`crate::client::session::ClientSession::open`] retries the rare channel that lands in
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseRole {
    /// The end that opened the channel (the client) closes it.
    Opener,
    /// The end that accepted the channel (ztproxy) waits for the opener's close.
    Acceptor,
}

/// Closes `dc` and reads until the close has gone through (bounded), so the stream's reset
/// is not held up by unread data.
pub async fn close_channel(dc: &Arc<dyn DataChannel>) {
    let _ = dc.close().await;
    drain_until_closed(dc, CLOSE_WAIT).await;
}

/// Reads and discards events until the channel closes; `false` on timeout.
pub(crate) async fn drain_until_closed(dc: &Arc<dyn DataChannel>, timeout: Duration) -> bool {
    let drain = async {
        while let Some(event) = dc.poll().await {
            if matches!(event, DataChannelEvent::OnClose) {
                return;
            }
        }
    };
    tokio::time::timeout(timeout, drain).await.is_ok()
}

/// Waits until everything sent on `dc` is acknowledged (or [`DRAIN_TIMEOUT`]).
pub async fn wait_acked(dc: &Arc<dyn DataChannel>) -> bool {
    let wait = async {
        let mut delay = Duration::from_millis(1);
        loop {
            match dc.outstanding_bytes().await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
            }
        }
    };
    tokio::time::timeout(DRAIN_TIMEOUT, wait).await.is_ok()
}

/// Makes the coming close of `tcp` a reset, so the application sees an abort rather than a
/// clean end of stream.
fn abort_socket(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
}
