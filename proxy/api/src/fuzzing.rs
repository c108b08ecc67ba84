//! Fuzz entry points. Each takes arbitrary bytes and asserts the parser's contract: a typed
//! result or a specific error, never a panic, and round trips where the format has one.

use crate::control::{self, ValidationPolicy};
use crate::seal::{SealKey, SignallingDirection};
use crate::tunnel::{self, ChannelControl, StreamStatus};

/// `POST /v1/sessions`, `POST /v1/sessions/{id}/candidates` and
/// `POST /v1/sessions/{id}/viewers` bodies.
pub fn control_request(data: &[u8]) {
    if let Ok(request) = control::parse_create_session(data) {
        let _ = request.validate(ValidationPolicy::default());
    }
    let _ = control::parse_candidates(data);
    if let Ok(request) = control::parse_create_viewer(data) {
        let _ = request.validate(ValidationPolicy::default());
    }
}

/// Data-channel control messages; what parses must survive a round trip.
pub fn channel_control(data: &[u8]) {
    if let Ok(control) = ChannelControl::parse(data) {
        let again = ChannelControl::parse(control.to_text().as_bytes());
        assert_eq!(again.as_ref(), Ok(&control));
    }
}

/// QUIC preambles and status replies; statuses must survive a round trip.
pub fn quic_framing(data: &[u8]) {
    let _ = tunnel::parse_preamble(data);
    if let Ok(Some((status, used))) = StreamStatus::decode(data) {
        assert!(used <= data.len());
        assert_eq!(status.encode().len(), used);
        assert_eq!(
            StreamStatus::decode(&status.encode()),
            Ok(Some((status, used)))
        );
    }
}

/// Sealed offers: arbitrary text must fail cleanly.
pub fn sealed_offer(data: &[u8]) {
    let key = SealKey::derive(
        b"fuzzing traffic secret 0123456789",
        "r",
        SignallingDirection::Offer,
    );
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = key.open(text);
    }
}
