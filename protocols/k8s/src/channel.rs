//! The WebSocket subprotocols `v5.channel.k8s.io` and `v4.channel.k8s.io`: binary messages
//! whose first byte names the stream.
//!
//! The client offers both in one `Sec-WebSocket-Protocol` header ([`OFFER`]); the server
//! takes the first it supports (v5 from Kubernetes 1.30, v4 before) and echoes it, or answers
//! a bare `403` when it supports neither. v5 adds the close signal `[255, stream]`, with which
//! a client says its stdin has ended without closing the connection.
//!
//! Right after the upgrade the server sends an empty message on the first stream it writes
//! (`[1]`); empty payloads carry nothing and are [`Incoming::Empty`].

use std::fmt;

/// The `Sec-WebSocket-Protocol` value a client sends: v5 preferred, v4 accepted.
pub const OFFER: &str = "v5.channel.k8s.io, v4.channel.k8s.io";

/// The largest status (stream 3) accepted: the server sends one `metav1.Status` object.
pub const MAX_STATUS_LEN: usize = 64 * 1024;

/// A remote-command subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `v5.channel.k8s.io`: v4 and the close signal.
    V5,
    /// `v4.channel.k8s.io`: binary streams, a JSON status on stream 3.
    V4,
}

impl Protocol {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::V5 => "v5.channel.k8s.io",
            Self::V4 => "v4.channel.k8s.io",
        }
    }

    /// The protocol the server chose, from its `Sec-WebSocket-Protocol` header (absent:
    /// `None`). Anything but one of ours is an error: the streams would mean something else.
    pub fn chosen(header: Option<&str>) -> Result<Self, FrameError> {
        match header.map(str::trim) {
            Some("v5.channel.k8s.io") => Ok(Self::V5),
            Some("v4.channel.k8s.io") => Ok(Self::V4),
            Some(other) => Err(FrameError::Protocol(Some(truncate(other, 64)))),
            None => Err(FrameError::Protocol(None)),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Stream numbers.
pub mod stream {
    /// Client → server: the process's standard input.
    pub const STDIN: u8 = 0;
    /// Server → client: standard output (with a tty, everything the terminal shows).
    pub const STDOUT: u8 = 1;
    /// Server → client: standard error (none with a tty).
    pub const STDERR: u8 = 2;
    /// Server → client: the outcome, a `metav1.Status`.
    pub const STATUS: u8 = 3;
    /// Client → server: the terminal's size.
    pub const RESIZE: u8 = 4;
    /// v5: "this sender is done with stream N" (`[255, N]`).
    pub const CLOSE: u8 = 255;
}

/// A message from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// Bytes for the terminal.
    Stdout(&'a [u8]),
    /// Bytes for the terminal (a process without a tty).
    Stderr(&'a [u8]),
    /// Part of the status (collect with [`StatusBuffer`]).
    Status(&'a [u8]),
    /// An empty payload (the server's first message): nothing to do.
    Empty,
    /// v5: the server closed its side of a stream.
    Closed(u8),
}

/// A message that breaks the protocol. The text is for the audit log: it holds no payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The server chose no protocol, or one that was not offered.
    #[error("the API server chose WebSocket subprotocol {0:?}, not one of {OFFER}")]
    Protocol(Option<String>),
    /// A message with no stream byte.
    #[error("an empty WebSocket message (no stream byte)")]
    Empty,
    /// A stream a server does not write (stdin, resize) or that does not exist.
    #[error("a message on stream {0}, which the server does not write")]
    Stream(u8),
    /// A v5 close signal that is not two bytes, or under v4.
    #[error("a malformed close signal ({len} bytes under {protocol})")]
    Close {
        /// The message's length.
        len: usize,
        /// The protocol in use.
        protocol: Protocol,
    },
    /// The status grew past [`MAX_STATUS_LEN`].
    #[error("the status is longer than {MAX_STATUS_LEN} bytes")]
    StatusTooLong,
}

/// Reads one binary message from the server.
pub fn decode(protocol: Protocol, message: &[u8]) -> Result<Incoming<'_>, FrameError> {
    let (&channel, payload) = message.split_first().ok_or(FrameError::Empty)?;
    match channel {
        stream::STDOUT | stream::STDERR | stream::STATUS if payload.is_empty() => {
            Ok(Incoming::Empty)
        }
        stream::STDOUT => Ok(Incoming::Stdout(payload)),
        stream::STDERR => Ok(Incoming::Stderr(payload)),
        stream::STATUS => Ok(Incoming::Status(payload)),
        stream::CLOSE => match (protocol, payload) {
            (Protocol::V5, &[closed]) => Ok(Incoming::Closed(closed)),
            _ => Err(FrameError::Close {
                len: message.len(),
                protocol,
            }),
        },
        other => Err(FrameError::Stream(other)),
    }
}

/// A stdin message carrying `data`.
pub fn stdin(data: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(stream::STDIN);
    message.extend_from_slice(data);
    message
}

/// A resize message: `cols` × `rows` characters (kubelet's `TerminalSize`, whose JSON keys
/// are capitalised).
pub fn resize(cols: u16, rows: u16) -> Vec<u8> {
    let mut message = vec![stream::RESIZE];
    message.extend_from_slice(format!("{{\"Width\":{cols},\"Height\":{rows}}}").as_bytes());
    message
}

/// The message that ends stdin: v5's close signal; v4 has none (`None`: only closing the
/// connection ends stdin there).
pub fn close_stdin(protocol: Protocol) -> Option<[u8; 2]> {
    (protocol == Protocol::V5).then_some([stream::CLOSE, stream::STDIN])
}

/// Collects the status stream, which may arrive in several messages, up to
/// [`MAX_STATUS_LEN`].
#[derive(Debug, Default)]
pub struct StatusBuffer {
    bytes: Vec<u8>,
}

impl StatusBuffer {
    /// Adds a part.
    pub fn push(&mut self, part: &[u8]) -> Result<(), FrameError> {
        if self.bytes.len() + part.len() > MAX_STATUS_LEN {
            return Err(FrameError::StatusTooLong);
        }
        self.bytes.extend_from_slice(part);
        Ok(())
    }

    /// Whether nothing was received.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Everything received, or `None` if nothing was.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        (!self.bytes.is_empty()).then(|| std::mem::take(&mut self.bytes))
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_server_chooses_one_of_the_offered_protocols() {
        assert_eq!(
            Protocol::chosen(Some("v5.channel.k8s.io")),
            Ok(Protocol::V5)
        );
        assert_eq!(
            Protocol::chosen(Some(" v4.channel.k8s.io ")),
            Ok(Protocol::V4)
        );
        assert!(Protocol::chosen(Some("channel.k8s.io")).is_err());
        assert!(Protocol::chosen(Some("v4.base64.channel.k8s.io")).is_err());
        assert!(Protocol::chosen(None).is_err());
        assert!(OFFER.starts_with(Protocol::V5.name()));
    }

    #[test]
    fn server_messages_are_read_by_stream() {
        let v5 = Protocol::V5;
        assert_eq!(decode(v5, b"\x01"), Ok(Incoming::Empty));
        assert_eq!(
            decode(v5, b"\x01zt-42\r\n"),
            Ok(Incoming::Stdout(b"zt-42\r\n"))
        );
        assert_eq!(decode(v5, b"\x02oops"), Ok(Incoming::Stderr(b"oops")));
        assert_eq!(decode(v5, b"\x03{}"), Ok(Incoming::Status(b"{}")));
        assert_eq!(decode(v5, &[255, 1]), Ok(Incoming::Closed(1)));
        assert_eq!(decode(v5, b""), Err(FrameError::Empty));
        assert_eq!(decode(v5, b"\x00input"), Err(FrameError::Stream(0)));
        assert_eq!(decode(v5, b"\x04{}"), Err(FrameError::Stream(4)));
        assert_eq!(decode(v5, b"\x07x"), Err(FrameError::Stream(7)));
        assert!(matches!(
            decode(v5, &[255, 1, 2]),
            Err(FrameError::Close { len: 3, .. })
        ));
        assert!(matches!(
            decode(Protocol::V4, &[255, 1]),
            Err(FrameError::Close { .. })
        ));
    }

    #[test]
    fn client_messages_are_what_kubectl_sends() {
        assert_eq!(stdin(b"ls\r"), b"\x00ls\r");
        assert_eq!(resize(80, 24), b"\x04{\"Width\":80,\"Height\":24}");
        assert_eq!(close_stdin(Protocol::V5), Some([255, 0]));
        assert_eq!(close_stdin(Protocol::V4), None);
    }

    #[test]
    fn the_status_is_bounded() {
        let mut status = StatusBuffer::default();
        assert_eq!(status.take(), None);
        status.push(b"{\"status\":").unwrap();
        status.push(b"\"Success\"}").unwrap();
        assert_eq!(status.take().unwrap(), b"{\"status\":\"Success\"}");
        let mut status = StatusBuffer::default();
        status.push(&vec![b'x'; MAX_STATUS_LEN]).unwrap();
        assert_eq!(status.push(b"x"), Err(FrameError::StatusTooLong));
    }

    proptest! {
        #[test]
        fn any_message_decodes_or_is_refused(
            message in proptest::collection::vec(any::<u8>(), 0..64),
            v5 in any::<bool>(),
        ) {
            let protocol = if v5 { Protocol::V5 } else { Protocol::V4 };
            match decode(protocol, &message) {
                Ok(Incoming::Stdout(p) | Incoming::Stderr(p) | Incoming::Status(p)) => {
                    prop_assert_eq!(p, &message[1..]);
                    prop_assert!(!p.is_empty());
                }
                Ok(Incoming::Empty) => prop_assert_eq!(message.len(), 1),
                Ok(Incoming::Closed(n)) => prop_assert_eq!(&message[..], &[255, n][..]),
                Err(_) => {}
            }
        }
    }
}
