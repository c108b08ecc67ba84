//! What ztproxy adds on the wire of a tunnel.
//!
//! A tunnel carries one TCP connection per WebRTC data channel or QUIC stream. The payload is
//! the TCP byte stream itself; ztproxy adds only what a byte stream cannot say.
//!
//! # WebRTC data channels
//!
//! Reliable, ordered channels with sub-protocol [`DATA_CHANNEL_PROTOCOL`]. **Binary** messages
//! carry TCP payload, in order. **Text** messages carry a [`ChannelControl`] as JSON, at most
//! [`MAX_CONTROL_MESSAGE_LEN`] bytes:
//!
//! * `{"type":"eof"}` — the sender has nothing more to send (its TCP peer half-closed). The
//!   receiver shuts down the write side of its TCP socket after writing everything received
//!   before it. A channel is closed once both sides have sent `eof` and their data is
//!   acknowledged, so a half-closed conversation (`ssh host command < input`) keeps working.
//! * `{"type":"error","code":"target_refused","message":"…"}` — the connection failed; the
//!   sender closes the channel next. Codes are [`TunnelErrorCode`].
//!
//! The client opens one **control channel** (label `ztproxy-control`) with its offer; an SDP
//! offer needs a data channel, and this one never reaches a target. When the session ends,
//! ztproxy sends `{"type":"session_ended","reason":"revoked"}` on it (reasons are
//! [`EndReason`]) and closes the peer connection.
//!
//! # QUIC streams
//!
//! Each bidirectional stream opened by the client is one TCP connection. The client starts
//! the stream with a 36-byte preamble, and ztproxy answers with a status before any payload:
//!
//! Right after the QUIC handshake the client opens one **unidirectional** stream and writes
//! the 36-byte preamble on it: this authenticates the connection, which then belongs to the
//! session (the session is "connected"). Every bidirectional stream starts with the same
//! preamble:
//!
//! ```text
//! client -> ztproxy   "ZTQ1" | token (32 bytes)                        then payload
//! ztproxy -> client   0x00                                             then payload
//!                 or  code (1 byte, non-zero) | len (u16 BE) | UTF-8 message, then FIN
//! ```
//!
//! The token is the one-time token from the session's creation. The first connection that
//! presents it owns the session; every stream of that connection must carry the same token,
//! and no other connection can use it. When the session ends, ztproxy closes the connection
//! with application error [`QUIC_CLOSE_SESSION_ENDED`] and the [`EndReason`] as the reason
//! phrase (`revoked`, `idle_timeout`, …).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::control::EndReason;

/// Sub-protocol of tunnel data channels.
pub const DATA_CHANNEL_PROTOCOL: &str = "ztproxy-tunnel/1";
/// ALPN protocol of ztproxy's QUIC endpoint.
pub const QUIC_ALPN: &[u8] = b"ztproxy-tunnel/1";
/// Largest control message on a data channel, in bytes.
pub const MAX_CONTROL_MESSAGE_LEN: usize = 4096;
/// Longest error message in a control message or a QUIC status, in bytes.
pub const MAX_ERROR_MESSAGE_LEN: usize = 512;
/// First four bytes of a QUIC stream.
pub const PREAMBLE_MAGIC: [u8; 4] = *b"ZTQ1";
/// Length of a QUIC session token.
pub const TOKEN_LEN: usize = 32;
/// Length of a QUIC stream preamble.
pub const PREAMBLE_LEN: usize = PREAMBLE_MAGIC.len() + TOKEN_LEN;

/// QUIC application error code: closed normally.
pub const QUIC_CLOSE_NORMAL: u32 = 0;
/// QUIC application error code: the session ended (revoked, timed out, shut down).
pub const QUIC_CLOSE_SESSION_ENDED: u32 = 1;
/// QUIC application error code: the token is missing, wrong or already used.
pub const QUIC_CLOSE_INVALID_TOKEN: u32 = 2;
/// QUIC application error code: the client broke this framing.
pub const QUIC_CLOSE_PROTOCOL_VIOLATION: u32 = 3;

/// Why a tunnelled connection failed. Stable: clients branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TunnelErrorCode {
    /// The target refused the TCP connection.
    TargetRefused,
    /// The target's name did not resolve or no route leads to it.
    TargetUnreachable,
    /// The target did not answer within the connect timeout.
    TargetTimeout,
    /// The session has as many connections open as it may.
    TooManyConnections,
    /// The session ended (revoked, timed out).
    SessionEnded,
    /// The QUIC token is missing, wrong or already used.
    InvalidToken,
    /// The peer broke the tunnel framing.
    ProtocolViolation,
    /// Something failed inside ztproxy.
    Internal,
}

impl TunnelErrorCode {
    /// The one-byte code used in QUIC status replies (never 0).
    pub fn to_byte(self) -> u8 {
        match self {
            Self::TargetRefused => 1,
            Self::TargetUnreachable => 2,
            Self::TargetTimeout => 3,
            Self::TooManyConnections => 4,
            Self::SessionEnded => 5,
            Self::InvalidToken => 6,
            Self::ProtocolViolation => 7,
            Self::Internal => 8,
        }
    }

    /// Inverse of [`TunnelErrorCode::to_byte`].
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::TargetRefused,
            2 => Self::TargetUnreachable,
            3 => Self::TargetTimeout,
            4 => Self::TooManyConnections,
            5 => Self::SessionEnded,
            6 => Self::InvalidToken,
            7 => Self::ProtocolViolation,
            8 => Self::Internal,
            _ => return None,
        })
    }

    /// The wire name, as used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TargetRefused => "target_refused",
            Self::TargetUnreachable => "target_unreachable",
            Self::TargetTimeout => "target_timeout",
            Self::TooManyConnections => "too_many_connections",
            Self::SessionEnded => "session_ended",
            Self::InvalidToken => "invalid_token",
            Self::ProtocolViolation => "protocol_violation",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for TunnelErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A control message on a tunnel data channel (a text message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChannelControl {
    /// The sender will send no more payload.
    Eof,
    /// The connection failed; the channel closes next.
    Error {
        /// Why.
        code: TunnelErrorCode,
        /// For people; never contains secrets.
        message: String,
    },
    /// The session ended (control channel only); the peer connection closes next.
    SessionEnded {
        /// Why.
        reason: EndReason,
    },
}

impl ChannelControl {
    /// Parses a text message received on a tunnel data channel.
    pub fn parse(text: &[u8]) -> Result<Self, FramingError> {
        if text.len() > MAX_CONTROL_MESSAGE_LEN {
            return Err(FramingError::ControlTooLarge);
        }
        // Parsed through a flat struct so unknown fields are refused for every variant
        // (serde ignores `deny_unknown_fields` on the unit variants of a tagged enum).
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(rename = "type")]
            kind: String,
            code: Option<TunnelErrorCode>,
            message: Option<String>,
            reason: Option<EndReason>,
        }
        let raw: Raw = serde_json::from_slice(text).map_err(|_| FramingError::MalformedControl)?;
        match (raw.kind.as_str(), raw.code, raw.message, raw.reason) {
            ("eof", None, None, None) => Ok(Self::Eof),
            ("error", Some(code), Some(message), None) => {
                if message.len() > MAX_ERROR_MESSAGE_LEN {
                    return Err(FramingError::ControlTooLarge);
                }
                Ok(Self::Error { code, message })
            }
            ("session_ended", None, None, Some(reason)) => Ok(Self::SessionEnded { reason }),
            _ => Err(FramingError::MalformedControl),
        }
    }

    /// The text message for this control, at most [`MAX_CONTROL_MESSAGE_LEN`] bytes.
    pub fn to_text(&self) -> String {
        let bounded = match self {
            Self::Error { code, message } if message.len() > MAX_ERROR_MESSAGE_LEN => Self::Error {
                code: *code,
                message: crate::truncate_utf8(message, MAX_ERROR_MESSAGE_LEN).to_owned(),
            },
            other => other.clone(),
        };
        // Serialising a tagged enum of a string and a unit variant cannot fail.
        serde_json::to_string(&bounded).unwrap_or_else(|_| String::from(r#"{"type":"eof"}"#))
    }
}

/// A one-time QUIC session token.
#[derive(Clone)]
pub struct QuicToken([u8; TOKEN_LEN]);

impl QuicToken {
    /// A token from raw bytes (the proxy fills them from the OS CSPRNG).
    pub fn from_bytes(bytes: [u8; TOKEN_LEN]) -> Self {
        Self(bytes)
    }

    /// Decodes the base64url form given to clients.
    pub fn from_base64(text: &str) -> Result<Self, FramingError> {
        if text.len() > 64 {
            return Err(FramingError::MalformedToken);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| FramingError::MalformedToken)?;
        let bytes: [u8; TOKEN_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| FramingError::MalformedToken)?;
        Ok(Self(bytes))
    }

    /// The base64url form given to clients.
    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }

    /// Compares in constant time.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for QuicToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QuicToken(<secret>)")
    }
}

impl Drop for QuicToken {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// The preamble a client writes at the start of every QUIC stream.
pub fn encode_preamble(token: &QuicToken) -> [u8; PREAMBLE_LEN] {
    let mut out = [0u8; PREAMBLE_LEN];
    let (magic, rest) = out.split_at_mut(PREAMBLE_MAGIC.len());
    magic.copy_from_slice(&PREAMBLE_MAGIC);
    rest.copy_from_slice(token.as_bytes());
    out
}

/// Parses a stream preamble: exactly [`PREAMBLE_LEN`] bytes.
pub fn parse_preamble(bytes: &[u8]) -> Result<QuicToken, FramingError> {
    if bytes.len() != PREAMBLE_LEN {
        return Err(FramingError::BadPreamble);
    }
    let (magic, token) = bytes.split_at(PREAMBLE_MAGIC.len());
    if magic != PREAMBLE_MAGIC {
        return Err(FramingError::BadPreamble);
    }
    let token: [u8; TOKEN_LEN] = token.try_into().map_err(|_| FramingError::BadPreamble)?;
    Ok(QuicToken(token))
}

/// ztproxy's answer at the start of a QUIC stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStatus {
    /// Connected to the target; payload follows.
    Connected,
    /// The connection failed; the stream finishes after this.
    Failed {
        /// Why.
        code: TunnelErrorCode,
        /// For people.
        message: String,
    },
}

impl StreamStatus {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Connected => vec![0],
            Self::Failed { code, message } => {
                let message = crate::truncate_utf8(message, MAX_ERROR_MESSAGE_LEN);
                let mut out = Vec::with_capacity(3 + message.len());
                out.push(code.to_byte());
                // At most MAX_ERROR_MESSAGE_LEN (512) bytes, so it fits in a u16.
                out.extend_from_slice(&(message.len() as u16).to_be_bytes());
                out.extend_from_slice(message.as_bytes());
                out
            }
        }
    }

    /// Decodes a status from the start of `buf`. Returns the status and the number of bytes
    /// it took, or `Ok(None)` when more bytes are needed.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, FramingError> {
        let Some((&first, rest)) = buf.split_first() else {
            return Ok(None);
        };
        if first == 0 {
            return Ok(Some((Self::Connected, 1)));
        }
        let code = TunnelErrorCode::from_byte(first).ok_or(FramingError::BadStatus)?;
        let Some(&[hi, lo]) = rest.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len > MAX_ERROR_MESSAGE_LEN {
            return Err(FramingError::BadStatus);
        }
        let Some(message) = rest.get(2..2 + len) else {
            return Ok(None);
        };
        let message = std::str::from_utf8(message)
            .map_err(|_| FramingError::BadStatus)?
            .to_owned();
        Ok(Some((Self::Failed { code, message }, 3 + len)))
    }
}

/// A violation of the tunnel framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// A data-channel control message exceeds the size limit.
    #[error("control message is too large")]
    ControlTooLarge,
    /// A data-channel text message is not a control message.
    #[error("text message is not a tunnel control message")]
    MalformedControl,
    /// A QUIC stream did not start with the preamble.
    #[error("stream does not start with a ztproxy preamble")]
    BadPreamble,
    /// A QUIC status reply is malformed.
    #[error("malformed stream status")]
    BadStatus,
    /// A token is not base64url of 32 bytes.
    #[error("token is not base64url of 32 bytes")]
    MalformedToken,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip() {
        for control in [
            ChannelControl::Eof,
            ChannelControl::Error {
                code: TunnelErrorCode::TargetRefused,
                message: "connection refused".into(),
            },
            ChannelControl::SessionEnded {
                reason: EndReason::Revoked,
            },
        ] {
            assert_eq!(
                ChannelControl::parse(control.to_text().as_bytes()).unwrap(),
                control
            );
        }
        assert_eq!(ChannelControl::Eof.to_text(), r#"{"type":"eof"}"#);
    }

    #[test]
    fn control_parser_rejects_garbage() {
        for bad in [
            &b"hello"[..],
            br#"{"type":"shout"}"#,
            br#"{"type":"eof","x":1}"#,
            br#"{"type":"error","code":"nope","message":""}"#,
            br#"{"type":"session_ended"}"#,
            br#"{"type":"eof","reason":"revoked"}"#,
        ] {
            assert_eq!(
                ChannelControl::parse(bad),
                Err(FramingError::MalformedControl)
            );
        }
        let huge = vec![b' '; MAX_CONTROL_MESSAGE_LEN + 1];
        assert_eq!(
            ChannelControl::parse(&huge),
            Err(FramingError::ControlTooLarge)
        );
    }

    #[test]
    fn long_error_messages_are_truncated_on_a_char_boundary() {
        let control = ChannelControl::Error {
            code: TunnelErrorCode::Internal,
            message: "é".repeat(400),
        };
        let parsed = ChannelControl::parse(control.to_text().as_bytes()).unwrap();
        let ChannelControl::Error { message, .. } = parsed else {
            panic!("not an error")
        };
        assert_eq!(message.len(), MAX_ERROR_MESSAGE_LEN);
    }

    #[test]
    fn preamble_round_trips_and_rejects_garbage() {
        let token = QuicToken::from_bytes([7; TOKEN_LEN]);
        let preamble = encode_preamble(&token);
        assert!(parse_preamble(&preamble).unwrap().ct_eq(&token));
        assert_eq!(
            parse_preamble(&preamble[..10]).unwrap_err(),
            FramingError::BadPreamble
        );
        let mut bad = preamble;
        bad[0] = b'X';
        assert_eq!(parse_preamble(&bad).unwrap_err(), FramingError::BadPreamble);
        assert!(!token.ct_eq(&QuicToken::from_bytes([8; TOKEN_LEN])));
        assert_eq!(format!("{token:?}"), "QuicToken(<secret>)");
    }

    #[test]
    fn token_base64_round_trips() {
        let token = QuicToken::from_bytes([0xab; TOKEN_LEN]);
        let again = QuicToken::from_base64(&token.to_base64()).unwrap();
        assert!(again.ct_eq(&token));
        assert!(QuicToken::from_base64("short").is_err());
        assert!(QuicToken::from_base64("!!").is_err());
    }

    #[test]
    fn status_decodes_incrementally() {
        let status = StreamStatus::Failed {
            code: TunnelErrorCode::TargetUnreachable,
            message: "no such host".into(),
        };
        let wire = status.encode();
        for cut in 0..wire.len() {
            assert_eq!(
                StreamStatus::decode(&wire[..cut]).unwrap(),
                None,
                "cut {cut}"
            );
        }
        let mut with_payload = wire.clone();
        with_payload.extend_from_slice(b"rest");
        assert_eq!(
            StreamStatus::decode(&with_payload).unwrap(),
            Some((status, wire.len()))
        );
        assert_eq!(
            StreamStatus::decode(&[0, 1, 2]).unwrap(),
            Some((StreamStatus::Connected, 1))
        );
        assert_eq!(
            StreamStatus::decode(&[99]).unwrap_err(),
            FramingError::BadStatus
        );
        assert_eq!(
            StreamStatus::decode(&[1, 0xff, 0xff]).unwrap_err(),
            FramingError::BadStatus
        );
        assert_eq!(
            StreamStatus::decode(&[1, 0, 2, 0xff, 0xfe]).unwrap_err(),
            FramingError::BadStatus
        );
    }
}
