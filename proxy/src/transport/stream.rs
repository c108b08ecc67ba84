//! One byte stream over either transport: a WebRTC data channel or a QUIC stream.
//!
//! Everything above the transports — tunnels ([`crate::tunnel`]) and Guacamole connections
//! ([`crate::connection`]) — is written once against [`Stream`] and its halves,
//! [`StreamReader`] and [`StreamWriter`]. What differs between the transports stays here:
//!
//! | | data channel | QUIC stream |
//! | --- | --- | --- |
//! | data | binary messages (at most one chunk each) | the stream's bytes |
//! | a Guacamole message | a text message | the stream's bytes |
//! | orderly end of one direction | the text control message `eof` | FIN |
//! | a refusal | the control message `error`, then close | a failed status, then FIN |
//! | an abort | close without `eof` | reset / stop |
//! | accepting | the channel opens | the status `connected` |

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use zt_api::tunnel::{ChannelControl, FramingError, StreamStatus, TunnelErrorCode};

use crate::transport::quic;
use crate::tunnel::{self, CloseRole, RelayError};

/// Largest read from a QUIC stream.
const READ_CHUNK: usize = 64 * 1024;

/// A stream between a client and ztproxy.
pub enum Stream {
    /// A data channel.
    Channel(Arc<dyn DataChannel>),
    /// A QUIC stream (the preamble is read).
    Quic(quinn::SendStream, quinn::RecvStream),
}

/// The receiving half of a [`Stream`].
pub enum StreamReader {
    /// A data channel (open).
    Channel(Arc<dyn DataChannel>),
    /// A QUIC stream whose preamble and status are done.
    Quic(quinn::RecvStream),
}

/// The sending half of a [`Stream`].
pub enum StreamWriter {
    /// A data channel.
    Channel(Arc<dyn DataChannel>),
    /// A QUIC stream.
    Quic(quinn::SendStream),
}

/// Why a message could not be moved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The transport failed or closed.
    #[error("client transport: {0}")]
    Transport(String),
    /// ztproxy produced something that is not UTF-8 (a bug; instructions are UTF-8).
    #[error("instruction bytes are not UTF-8")]
    NotUtf8,
}

/// What a tunnel's peer sent.
pub enum Received {
    /// Bytes for the socket.
    Data(Bytes),
    /// The peer will send nothing more (`eof` or FIN).
    Eof,
}

impl Stream {
    /// Its two halves.
    pub fn split(self) -> (StreamReader, StreamWriter) {
        match self {
            Self::Channel(dc) => (StreamReader::Channel(dc.clone()), StreamWriter::Channel(dc)),
            Self::Quic(send, recv) => (StreamReader::Quic(recv), StreamWriter::Quic(send)),
        }
    }

    /// Waits until the stream can carry data: a data channel has opened (bounded by
    /// [`tunnel::OPEN_TIMEOUT`]); a QUIC stream already can. `false` if it never will.
    pub async fn wait_open(&self) -> bool {
        match self {
            Self::Channel(dc) => tunnel::wait_open(dc, tunnel::OPEN_TIMEOUT).await,
            Self::Quic(..) => true,
        }
    }

    /// Tells the client its stream is accepted (QUIC's `connected` status; a data channel
    /// needs nothing).
    pub async fn accept(&mut self) -> Result<(), StreamError> {
        match self {
            Self::Channel(_) => Ok(()),
            Self::Quic(send, _) => quic::write_status(send, &StreamStatus::Connected)
                .await
                .map_err(|e| StreamError::Transport(e.to_string())),
        }
    }

    /// Refuses the stream with `code`, and closes it.
    pub async fn refuse(self, code: TunnelErrorCode, message: String) {
        match self {
            Self::Channel(dc) => tunnel::fail_channel(&dc, code, message).await,
            Self::Quic(send, _) => quic::refuse_stream(send, code, message).await,
        }
    }
}

impl StreamReader {
    /// The next message or chunk of a Guacamole conversation; `None` when the client
    /// closed.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, StreamError> {
        match self {
            Self::Channel(dc) => loop {
                match dc.poll().await {
                    Some(DataChannelEvent::OnMessage(message)) => {
                        return Ok(Some(message.data.freeze()));
                    }
                    Some(DataChannelEvent::OnClose) | None => return Ok(None),
                    Some(_) => {}
                }
            },
            Self::Quic(recv) => match recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => Ok(Some(chunk.bytes)),
                Ok(None) | Err(quinn::ReadError::Reset(_)) => Ok(None),
                Err(e) => Err(StreamError::Transport(e.to_string())),
            },
        }
    }

    /// The next piece of a tunnel: data, or the peer's orderly end. A close without `eof`
    /// or a reset is [`RelayError::PeerAborted`].
    pub async fn recv_tunnel(&mut self, chunk: usize) -> Result<Received, RelayError> {
        match self {
            Self::Channel(dc) => loop {
                match dc.poll().await {
                    Some(DataChannelEvent::OnMessage(message)) if message.is_string => {
                        match ChannelControl::parse(&message.data)? {
                            ChannelControl::Eof => return Ok(Received::Eof),
                            ChannelControl::Error { code, message } => {
                                return Err(RelayError::PeerFailed { code, message });
                            }
                            // Only meaningful on the control channel.
                            ChannelControl::SessionEnded { .. } => {
                                return Err(RelayError::Framing(FramingError::MalformedControl));
                            }
                        }
                    }
                    Some(DataChannelEvent::OnMessage(message)) => {
                        return Ok(Received::Data(message.data.freeze()));
                    }
                    Some(DataChannelEvent::OnClose) | None => {
                        return Err(RelayError::PeerAborted);
                    }
                    Some(_) => {}
                }
            },
            Self::Quic(recv) => match recv.read_chunk(chunk, true).await {
                Ok(Some(data)) => Ok(Received::Data(data.bytes)),
                Ok(None) => Ok(Received::Eof),
                Err(quinn::ReadError::Reset(_)) => Err(RelayError::PeerAborted),
                Err(e) => Err(RelayError::Transport(e.to_string())),
            },
        }
    }
}

impl StreamWriter {
    /// Sends whole Guacamole instructions (a text message on a data channel, at most
    /// [`zt_connection::MAX_MESSAGE`] bytes; callers batch accordingly). Waits while the
    /// client is above its high-water mark.
    pub async fn send(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        match self {
            Self::Channel(dc) => {
                let text = std::str::from_utf8(&bytes).map_err(|_| StreamError::NotUtf8)?;
                dc.send_text(text)
                    .await
                    .map_err(|e| StreamError::Transport(e.to_string()))
            }
            // quinn keeps the buffer itself: no copy.
            Self::Quic(send) => send
                .write_chunk(bytes)
                .await
                .map_err(|e| StreamError::Transport(e.to_string())),
        }
    }

    /// The most a tunnel may put in one [`send_data`](Self::send_data): one message on a
    /// data channel, anything on QUIC.
    pub fn is_message_based(&self) -> bool {
        matches!(self, Self::Channel(_))
    }

    /// Sends tunnel data (a binary message on a data channel).
    pub async fn send_data(&mut self, data: BytesMut) -> Result<(), RelayError> {
        match self {
            Self::Channel(dc) => dc
                .send(data)
                .await
                .map_err(|e| RelayError::Transport(e.to_string())),
            Self::Quic(send) => send.write_chunk(data.freeze()).await.map_err(|e| match e {
                quinn::WriteError::Stopped(_) => RelayError::PeerAborted,
                other => RelayError::Transport(other.to_string()),
            }),
        }
    }

    /// Ends this direction of a tunnel in order (`eof`, or FIN).
    pub async fn send_eof(&mut self) -> Result<(), RelayError> {
        match self {
            Self::Channel(dc) => dc
                .send_text(&ChannelControl::Eof.to_text())
                .await
                .map_err(|e| RelayError::Transport(e.to_string())),
            Self::Quic(send) => send
                .finish()
                .map_err(|e| RelayError::Transport(e.to_string())),
        }
    }

    /// Ends the stream after everything sent is delivered (bounded).
    pub async fn close(&mut self) {
        match self {
            Self::Channel(dc) => {
                tunnel::wait_acked(dc).await;
                tunnel::close_channel(dc).await;
            }
            Self::Quic(send) => {
                let _ = send.finish();
                let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
                let _ = send.flush().await;
            }
        }
    }
}

/// Closes a tunnel whose both directions ended in order: a data channel once everything is
/// acknowledged, by the end whose `role` closes (QUIC streams are finished already).
pub async fn finish_tunnel(writer: &StreamWriter, role: CloseRole) {
    if let StreamWriter::Channel(dc) = writer {
        let _ = tunnel::wait_acked(dc).await;
        match role {
            CloseRole::Opener => tunnel::close_channel(dc).await,
            CloseRole::Acceptor => {
                // The opener closes; wait for it (bounded) so the stream's reset completes
                // on both sides before its id can be reused.
                if !tunnel::drain_until_closed(dc, tunnel::CLOSE_WAIT).await {
                    tunnel::close_channel(dc).await;
                }
            }
        }
    }
}

/// Aborts a tunnel: closes a data channel (unless the peer already did), resets and stops a
/// QUIC stream.
pub async fn abort_tunnel(
    reader: &mut StreamReader,
    writer: &mut StreamWriter,
    error: &RelayError,
) {
    match (reader, writer) {
        (_, StreamWriter::Channel(dc)) => {
            if !matches!(error, RelayError::PeerAborted) {
                tunnel::close_channel(dc).await;
            }
        }
        (StreamReader::Quic(recv), StreamWriter::Quic(send)) => {
            let code = quinn::VarInt::from_u32(zt_api::tunnel::QUIC_CLOSE_SESSION_ENDED);
            let _ = send.reset(code);
            let _ = recv.stop(code);
        }
        (StreamReader::Channel(_), StreamWriter::Quic(send)) => {
            let _ = send.reset(quinn::VarInt::from_u32(
                zt_api::tunnel::QUIC_CLOSE_SESSION_ENDED,
            ));
        }
    }
}
