//! The guacd-compatible handshake ztproxy performs with the user's client, without I/O.
//!
//! A stock Guacamole client speaks to ztproxy exactly as it would to guacd:
//!
//! ```text
//! client                                   ztproxy
//!   select <anything>            ──▶
//!                                ◀──      args VERSION_1_5_0
//!   size <w> <h> <dpi>           ──▶
//!   audio <mimetypes…>           ──▶      (each optional, in this order)
//!   video <mimetypes…>           ──▶
//!   image <mimetypes…>           ──▶
//!   timezone <tz>                ──▶
//!   name <user name>             ──▶
//!   connect VERSION_1_5_0 …      ──▶
//!                                ◀──      ready $<id>   (once the target side is up)
//! ```
//!
//! Only the display settings (size, DPI, mimetypes, timezone, name) are taken from the client.
//! What it selects, and every value it puts in `connect`, is read and discarded: the protocol,
//! the target and the credentials come from the session the gateway created, never from the
//! client. ztproxy's `args` therefore lists no parameters, only the protocol version, so a
//! well-behaved client sends none; one that sends values anyway changes nothing.

use zt_guac::{Context, Instruction, TypedInstruction, opcode};
use zt_guacd::ClientInfo;

/// Protocol version ztproxy announces (guacd 1.5's).
pub const PROTOCOL_VERSION: &str = "VERSION_1_5_0";
/// Most handshake instructions a client may send before `connect`.
pub const MAX_HANDSHAKE_INSTRUCTIONS: usize = 16;
/// Most mimetypes kept per kind.
pub const MAX_MIMETYPES: usize = 32;
/// Largest display the client may ask for, per side (guacd's own limit is lower than this).
pub const MAX_DISPLAY_SIDE: u32 = 16_384;
/// Longest timezone or name kept.
pub const MAX_TEXT: usize = 256;

/// Why the client's handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The client sent something other than the next handshake instruction.
    #[error("unexpected instruction during the handshake")]
    Unexpected,
    /// A handshake instruction has bad arguments.
    #[error("malformed handshake instruction")]
    Malformed,
    /// The client sent more handshake instructions than any client needs.
    #[error("too many handshake instructions")]
    TooLong,
}

/// What to do after an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes to the client and wait for more.
    Reply(Vec<u8>),
    /// Keep reading.
    Continue,
    /// The client sent `connect`: the handshake is complete.
    Done(ClientInfo),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ExpectSelect,
    Collect,
    Done,
}

/// The client-facing handshake. Feed it the client's instructions in order.
#[derive(Debug)]
pub struct ClientHandshake {
    phase: Phase,
    display: ClientInfo,
    seen: usize,
}

impl Default for ClientHandshake {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientHandshake {
    /// A handshake waiting for `select`.
    pub fn new() -> Self {
        Self {
            phase: Phase::ExpectSelect,
            display: ClientInfo::default(),
            seen: 0,
        }
    }

    /// Handles one instruction from the client.
    pub fn handle(&mut self, instruction: &Instruction) -> Result<Step, HandshakeError> {
        self.seen += 1;
        if self.seen > MAX_HANDSHAKE_INSTRUCTIONS {
            return Err(HandshakeError::TooLong);
        }
        match self.phase {
            Phase::ExpectSelect => {
                if !instruction.is(opcode::SELECT) {
                    return Err(HandshakeError::Unexpected);
                }
                // What the client selects is ignored: the session decides the protocol.
                self.phase = Phase::Collect;
                let mut reply = bytes::BytesMut::new();
                zt_guac::encode(opcode::ARGS, &[PROTOCOL_VERSION], &mut reply);
                Ok(Step::Reply(reply.to_vec()))
            }
            Phase::Collect => self.collect(instruction),
            Phase::Done => Err(HandshakeError::Unexpected),
        }
    }

    fn collect(&mut self, instruction: &Instruction) -> Result<Step, HandshakeError> {
        let typed = TypedInstruction::parse(instruction, Context::ClientHandshake)
            .map_err(|_| HandshakeError::Malformed)?;
        let list = |mimetypes: Vec<&str>| -> Vec<String> {
            mimetypes
                .into_iter()
                .take(MAX_MIMETYPES)
                .filter(|m| m.len() <= MAX_TEXT)
                .map(str::to_owned)
                .collect()
        };
        let text =
            |value: &str| (!value.is_empty() && value.len() <= MAX_TEXT).then(|| value.to_owned());
        match typed {
            TypedInstruction::HandshakeSize { width, height, dpi } => {
                if width == 0
                    || height == 0
                    || width > MAX_DISPLAY_SIDE
                    || height > MAX_DISPLAY_SIDE
                {
                    return Err(HandshakeError::Malformed);
                }
                self.display.width = width;
                self.display.height = height;
                if let Some(dpi) = dpi.filter(|d| (1..=2_400).contains(d)) {
                    self.display.dpi = dpi;
                }
            }
            TypedInstruction::HandshakeAudio { mimetypes } => {
                self.display.audio_mimetypes = list(mimetypes);
            }
            TypedInstruction::HandshakeVideo { mimetypes } => {
                self.display.video_mimetypes = list(mimetypes);
            }
            TypedInstruction::Image { mimetypes } => {
                // A client that lists none gets guacd's PNG and JPEG.
                let mimetypes = list(mimetypes);
                if !mimetypes.is_empty() {
                    self.display.image_mimetypes = mimetypes;
                }
            }
            TypedInstruction::Timezone { timezone } => self.display.timezone = text(timezone),
            TypedInstruction::Name { name } => self.display.name = text(name),
            TypedInstruction::Connect { .. } => {
                // The values are the client's answers to our `args`; none are used.
                self.phase = Phase::Done;
                return Ok(Step::Done(self.display.clone()));
            }
            _ => return Err(HandshakeError::Unexpected),
        }
        Ok(Step::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zt_guac::{Decoder, Limits};

    fn run(wire: &str) -> Result<Vec<Step>, HandshakeError> {
        let mut decoder = Decoder::new(Limits::default());
        decoder.feed(wire.as_bytes());
        let mut handshake = ClientHandshake::new();
        let mut steps = Vec::new();
        while let Some(instruction) = decoder.poll_instruction().unwrap() {
            steps.push(handshake.handle(&instruction)?);
        }
        Ok(steps)
    }

    #[test]
    fn collects_display_settings_and_ignores_the_clients_choices() {
        let steps = run(concat!(
            "6.select,3.ssh;",
            "4.size,4.1920,4.1080,2.96;",
            "5.audio,9.audio/L16;",
            "5.video;",
            "5.image,9.image/png,10.image/jpeg;",
            "8.timezone,13.Europe/Berlin;",
            "4.name,5.alice;",
            "7.connect,13.VERSION_1_5_0,8.evil.com,4.root,6.hunter;",
        ))
        .unwrap();
        assert_eq!(steps[0], Step::Reply(b"4.args,13.VERSION_1_5_0;".to_vec()));
        let Step::Done(display) = steps.last().unwrap() else {
            panic!("{steps:?}")
        };
        assert_eq!(
            (display.width, display.height, display.dpi),
            (1920, 1080, 96)
        );
        assert_eq!(display.image_mimetypes, ["image/png", "image/jpeg"]);
        assert_eq!(display.audio_mimetypes, ["audio/L16"]);
        assert_eq!(display.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(display.name.as_deref(), Some("alice"));
    }

    #[test]
    fn minimal_handshake_uses_defaults() {
        let steps = run("6.select,3.rdp;7.connect,13.VERSION_1_5_0;").unwrap();
        assert_eq!(steps[1], Step::Done(ClientInfo::default()));
    }

    #[test]
    fn refuses_out_of_order_and_malformed_instructions() {
        assert_eq!(
            run("4.size,3.800,3.600;").unwrap_err(),
            HandshakeError::Unexpected
        );
        assert_eq!(
            run("6.select,3.rdp;5.mouse,1.1,1.1,1.0;").unwrap_err(),
            HandshakeError::Unexpected
        );
        assert_eq!(
            run("6.select,3.rdp;4.size,1.0,3.600;").unwrap_err(),
            HandshakeError::Malformed
        );
        assert_eq!(
            run("6.select,3.rdp;4.size,6.999999,3.600;").unwrap_err(),
            HandshakeError::Malformed
        );
    }

    #[test]
    fn bounds_the_handshake() {
        let mut wire = String::from("6.select,3.rdp;");
        for _ in 0..MAX_HANDSHAKE_INSTRUCTIONS {
            wire.push_str("4.name,1.a;");
        }
        assert_eq!(run(&wire).unwrap_err(), HandshakeError::TooLong);
    }
}
