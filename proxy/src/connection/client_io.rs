//! The user's end of a connection: the one data channel or QUIC stream that carries the
//! Guacamole instruction stream.
//!
//! Messages from the client may be text or binary; an instruction may span messages and a
//! message may hold several (the decoder reassembles them). ztproxy sends text messages, each
//! holding whole instructions only, as browsers' Guacamole clients parse strings.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use webrtc::data_channel::{DataChannel, DataChannelEvent};

/// Largest message ztproxy sends on a data channel (below the SCTP maximum of 64 KiB).
pub const MAX_MESSAGE: usize = zt_connection::MAX_MESSAGE;
/// Largest read from a QUIC stream.
const READ_CHUNK: usize = 64 * 1024;

/// The receiving half.
pub enum ClientReader {
    /// A data channel (open).
    Channel(Arc<dyn DataChannel>),
    /// A QUIC stream whose preamble and status are done.
    Quic(quinn::RecvStream),
}

/// The sending half.
pub enum ClientWriter {
    /// A data channel.
    Channel(Arc<dyn DataChannel>),
    /// A QUIC stream.
    Quic(quinn::SendStream),
}

/// Why the client side failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientIoError {
    /// The transport failed or closed.
    #[error("client transport: {0}")]
    Transport(String),
    /// ztproxy produced something that is not UTF-8 (a bug; instructions are UTF-8).
    #[error("instruction bytes are not UTF-8")]
    NotUtf8,
}

impl ClientReader {
    /// The next message or chunk; `None` when the client closed.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, ClientIoError> {
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
                Ok(None) => Ok(None),
                Err(quinn::ReadError::Reset(_)) => Ok(None),
                Err(e) => Err(ClientIoError::Transport(e.to_string())),
            },
        }
    }
}

impl ClientWriter {
    /// Sends whole instructions (at most [`MAX_MESSAGE`] bytes per data-channel message;
    /// callers batch accordingly). Waits while the client is above its high-water mark.
    pub async fn send(&mut self, bytes: Bytes) -> Result<(), ClientIoError> {
        match self {
            Self::Channel(dc) => {
                let text = std::str::from_utf8(&bytes).map_err(|_| ClientIoError::NotUtf8)?;
                dc.send_text(text)
                    .await
                    .map_err(|e| ClientIoError::Transport(e.to_string()))
            }
            // quinn keeps the buffer itself: no copy.
            Self::Quic(send) => send
                .write_chunk(bytes)
                .await
                .map_err(|e| ClientIoError::Transport(e.to_string())),
        }
    }

    /// Ends the stream after everything sent is delivered (bounded).
    pub async fn close(&mut self) {
        match self {
            Self::Channel(dc) => {
                crate::tunnel::wait_acked(dc).await;
                crate::tunnel::close_channel(dc).await;
            }
            Self::Quic(send) => {
                let _ = send.finish();
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(2), send.stopped()).await;
                let _ = send.flush().await;
            }
        }
    }
}
