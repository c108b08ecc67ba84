//! The Telnet protocol (RFC 854) as a client speaks it, without I/O: the server's bytes in,
//! terminal data and negotiation replies out; the user's bytes in, escaped bytes out.
//!
//! Options (RFC 855 negotiation, loop-free as RFC 1143 asks: a request that changes
//! nothing is not answered):
//!
//! | option | ztproxy | why |
//! | --- | --- | --- |
//! | ECHO (1) | lets the server echo (`DO`) | the terminal shows what the server echoes |
//! | SUPPRESS-GO-AHEAD (3) | both ways | character at a time, as every modern server |
//! | TERMINAL-TYPE (24) | `WILL`, answers `SEND` with `terminal-type` | RFC 1091 |
//! | NAWS (31) | `WILL`, sends the window size, and again on each resize | RFC 1073 |
//! | anything else | refused (`WONT` / `DONT`) | |
//!
//! A hostile server costs bounded memory: a subnegotiation holds at most
//! [`MAX_SUBNEGOTIATION`] bytes (the rest is dropped), each option is refused at most
//! [`MAX_REFUSALS`] times and each supported one changes state at most [`MAX_CHANGES`] times
//! (a flood of requests then goes unanswered, so what goes back is bounded whatever comes
//! in), and negotiation replies waiting to be sent are capped at [`MAX_PENDING_REPLIES`]
//! bytes.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

/// Interpret As Command.
pub const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const SE: u8 = 240;

/// Option codes.
pub mod option {
    /// ECHO (RFC 857).
    pub const ECHO: u8 = 1;
    /// SUPPRESS-GO-AHEAD (RFC 858).
    pub const SGA: u8 = 3;
    /// TERMINAL-TYPE (RFC 1091).
    pub const TTYPE: u8 = 24;
    /// NAWS, window size (RFC 1073).
    pub const NAWS: u8 = 31;
}

const TTYPE_IS: u8 = 0;
const TTYPE_SEND: u8 = 1;

/// The most bytes of one subnegotiation kept.
pub const MAX_SUBNEGOTIATION: usize = 256;
/// How many times one option is refused before its requests are ignored.
pub const MAX_REFUSALS: u8 = 4;
/// How many times one supported option may change state (or TERMINAL-TYPE be asked for)
/// before its requests are ignored: a server toggling an option in a loop gets a few answers,
/// not one per request.
pub const MAX_CHANGES: u8 = 16;
/// The most negotiation bytes waiting to be sent.
pub const MAX_PENDING_REPLIES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parse {
    Data,
    /// A CR was the last data byte: a NUL after it is padding (RFC 854's CR NUL).
    Cr,
    Iac,
    Negotiate(u8),
    Sb,
    SbData,
    SbIac,
}

/// Something the server did that the driver may want to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The server will (or will no longer) echo what it receives.
    Echo(bool),
    /// The server asked for the window size; it gets it now and on every resize.
    NawsOn,
}

/// A Telnet client session's protocol state.
#[derive(Debug)]
pub struct Telnet {
    parse: Parse,
    /// Options enabled on our side (we `WILL`): index by option code.
    ours: [bool; 256],
    /// Options enabled on the server's side (it `WILL`, we said `DO`).
    theirs: [bool; 256],
    refusals: [u8; 256],
    /// State changes of each supported option (and TERMINAL-TYPE answers).
    changes: [u8; 256],
    subnegotiation: Vec<u8>,
    data: BytesMut,
    out: BytesMut,
    events: VecDeque<Event>,
    terminal_type: String,
    size: (u16, u16),
}

impl Telnet {
    /// A session that announces `terminal_type` and a window of `cols` × `rows`.
    pub fn new(terminal_type: &str, cols: u16, rows: u16) -> Self {
        Self {
            parse: Parse::Data,
            ours: [false; 256],
            theirs: [false; 256],
            refusals: [0; 256],
            changes: [0; 256],
            subnegotiation: Vec::new(),
            data: BytesMut::new(),
            out: BytesMut::new(),
            events: VecDeque::new(),
            terminal_type: terminal_type.to_owned(),
            size: (cols, rows),
        }
    }

    /// Takes bytes the server sent.
    pub fn receive(&mut self, input: &[u8]) {
        for &byte in input {
            self.byte(byte);
        }
    }

    fn byte(&mut self, byte: u8) {
        self.parse = match (self.parse, byte) {
            (Parse::Data | Parse::Cr, IAC) => Parse::Iac,
            (Parse::Cr, 0) => Parse::Data,
            (Parse::Data | Parse::Cr, b'\r') => {
                self.data.put_u8(byte);
                Parse::Cr
            }
            (Parse::Data | Parse::Cr, _) => {
                self.data.put_u8(byte);
                Parse::Data
            }
            (Parse::Iac, IAC) => {
                self.data.put_u8(IAC);
                Parse::Data
            }
            (Parse::Iac, WILL | WONT | DO | DONT) => Parse::Negotiate(byte),
            (Parse::Iac, SB) => {
                self.subnegotiation.clear();
                Parse::Sb
            }
            // NOP, GA, DM, BRK, IP, AO, AYT, EC, EL, a stray SE: nothing to do.
            (Parse::Iac, _) => Parse::Data,
            (Parse::Negotiate(verb), option) => {
                self.negotiate(verb, option);
                Parse::Data
            }
            (Parse::Sb | Parse::SbData, IAC) => Parse::SbIac,
            (Parse::Sb | Parse::SbData, _) => {
                if self.subnegotiation.len() < MAX_SUBNEGOTIATION {
                    self.subnegotiation.push(byte);
                }
                Parse::SbData
            }
            (Parse::SbIac, SE) => {
                self.subnegotiated();
                Parse::Data
            }
            (Parse::SbIac, IAC) => {
                if self.subnegotiation.len() < MAX_SUBNEGOTIATION {
                    self.subnegotiation.push(IAC);
                }
                Parse::SbData
            }
            // IAC followed by anything else inside a subnegotiation ends it (as libtelnet).
            (Parse::SbIac, _) => Parse::Data,
        };
    }

    fn negotiate(&mut self, verb: u8, option: u8) {
        let index = usize::from(option);
        let wanted = match verb {
            DO => matches!(option, option::TTYPE | option::NAWS | option::SGA),
            WILL => matches!(option, option::ECHO | option::SGA),
            _ => false,
        };
        let (enabled, refusal) = match verb {
            DO | DONT => (self.ours[index], WONT),
            _ => (self.theirs[index], DONT),
        };
        if matches!(verb, DO | WILL) && !wanted {
            self.refuse(refusal, option);
            return;
        }
        // A request that changes nothing is not answered (RFC 1143); one that does, only
        // while the option has changes left.
        let enable = matches!(verb, DO | WILL);
        if enable == enabled || !self.change(option) {
            return;
        }
        match verb {
            DO => {
                self.ours[index] = true;
                self.reply(WILL, option);
                if option == option::NAWS {
                    self.send_naws();
                    self.events.push_back(Event::NawsOn);
                }
            }
            DONT => {
                self.ours[index] = false;
                self.reply(WONT, option);
            }
            WILL => {
                self.theirs[index] = true;
                self.reply(DO, option);
                if option == option::ECHO {
                    self.events.push_back(Event::Echo(true));
                }
            }
            _ => {
                self.theirs[index] = false;
                self.reply(DONT, option);
                if option == option::ECHO {
                    self.events.push_back(Event::Echo(false));
                }
            }
        }
    }

    /// Counts a change of `option`; false once it has had [`MAX_CHANGES`].
    fn change(&mut self, option: u8) -> bool {
        let count = &mut self.changes[usize::from(option)];
        if *count < MAX_CHANGES {
            *count += 1;
            true
        } else {
            false
        }
    }

    fn refuse(&mut self, verb: u8, option: u8) {
        let count = &mut self.refusals[usize::from(option)];
        if *count < MAX_REFUSALS {
            *count += 1;
            self.reply(verb, option);
        }
    }

    fn reply(&mut self, verb: u8, option: u8) {
        if self.out.len() + 3 <= MAX_PENDING_REPLIES {
            self.out.put_slice(&[IAC, verb, option]);
        }
    }

    fn subnegotiated(&mut self) {
        if let [option::TTYPE, TTYPE_SEND, ..] = self.subnegotiation[..]
            && self.ours[usize::from(option::TTYPE)]
            && self.change(option::TTYPE)
        {
            let mut reply = vec![IAC, SB, option::TTYPE, TTYPE_IS];
            for &b in self.terminal_type.as_bytes() {
                reply.push(b);
                if b == IAC {
                    reply.push(IAC);
                }
            }
            reply.extend_from_slice(&[IAC, SE]);
            if self.out.len() + reply.len() <= MAX_PENDING_REPLIES {
                self.out.put_slice(&reply);
            }
        }
    }

    /// The window is now `cols` × `rows`; the server hears it if it asked (NAWS).
    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.size = (cols, rows);
        if self.ours[usize::from(option::NAWS)] {
            self.send_naws();
        }
    }

    fn send_naws(&mut self) {
        let mut sb = vec![IAC, SB, option::NAWS];
        for b in self
            .size
            .0
            .to_be_bytes()
            .into_iter()
            .chain(self.size.1.to_be_bytes())
        {
            sb.push(b);
            if b == IAC {
                sb.push(IAC);
            }
        }
        sb.extend_from_slice(&[IAC, SE]);
        if self.out.len() + sb.len() <= MAX_PENDING_REPLIES {
            self.out.put_slice(&sb);
        }
    }

    /// Queues the user's bytes for the server: IAC doubled, a lone CR sent as CR NUL
    /// (RFC 854's end of line for a bare carriage return).
    pub fn send(&mut self, data: &[u8]) {
        for &b in data {
            match b {
                IAC => self.out.put_slice(&[IAC, IAC]),
                b'\r' => self.out.put_slice(b"\r\0"),
                _ => self.out.put_u8(b),
            }
        }
    }

    /// Terminal data the server sent (negotiation removed), if any.
    pub fn poll_data(&mut self) -> Option<Bytes> {
        (!self.data.is_empty()).then(|| self.data.split().freeze())
    }

    /// Bytes to send to the server (replies and the user's data), if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the server echoes (it said `WILL ECHO`).
    pub fn server_echoes(&self) -> bool {
        self.theirs[usize::from(option::ECHO)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(t: &mut Telnet) -> (Vec<u8>, Vec<u8>) {
        (
            t.poll_data().map(|b| b.to_vec()).unwrap_or_default(),
            t.poll_transmit().map(|b| b.to_vec()).unwrap_or_default(),
        )
    }

    #[test]
    fn data_passes_with_iac_unescaped_and_cr_nul_dropped() {
        let mut t = Telnet::new("xterm-256color", 80, 24);
        t.receive(b"login:\r\0 a\xff\xffb\r\n");
        assert_eq!(drained(&mut t), (b"login:\r a\xffb\r\n".to_vec(), vec![]));
    }

    #[test]
    fn negotiation_agrees_to_what_is_supported_and_refuses_the_rest() {
        let mut t = Telnet::new("xterm", 80, 24);
        t.receive(&[IAC, WILL, option::ECHO, IAC, DO, option::TTYPE, IAC, DO, 39]);
        let (_, out) = drained(&mut t);
        assert_eq!(
            out,
            [
                IAC,
                DO,
                option::ECHO,
                IAC,
                WILL,
                option::TTYPE,
                IAC,
                WONT,
                39
            ]
        );
        assert!(t.server_echoes());
        assert_eq!(t.poll_event(), Some(Event::Echo(true)));
        // Asked again: nothing changes, nothing is said (no loops).
        t.receive(&[IAC, WILL, option::ECHO, IAC, DO, option::TTYPE]);
        assert_eq!(drained(&mut t), (vec![], vec![]));
        // TTYPE SEND is answered with the terminal type.
        t.receive(&[IAC, SB, option::TTYPE, TTYPE_SEND, IAC, SE]);
        let (_, out) = drained(&mut t);
        assert_eq!(out, b"\xff\xfa\x18\x00xterm\xff\xf0");
    }

    #[test]
    fn naws_reports_the_size_and_every_resize_with_iac_doubled() {
        let mut t = Telnet::new("xterm", 80, 24);
        t.resize(100, 30);
        assert_eq!(drained(&mut t), (vec![], vec![]), "not asked yet");
        t.receive(&[IAC, DO, option::NAWS]);
        let (_, out) = drained(&mut t);
        assert_eq!(
            out,
            [
                IAC,
                WILL,
                option::NAWS,
                IAC,
                SB,
                option::NAWS,
                0,
                100,
                0,
                30,
                IAC,
                SE
            ]
        );
        t.resize(255, 300);
        let (_, out) = drained(&mut t);
        assert_eq!(out, [IAC, SB, option::NAWS, 0, 255, 255, 1, 44, IAC, SE]);
    }

    #[test]
    fn user_input_is_escaped() {
        let mut t = Telnet::new("xterm", 80, 24);
        t.send(b"ls\r\xff");
        assert_eq!(drained(&mut t).1, b"ls\r\0\xff\xff");
    }

    #[test]
    fn floods_cost_bounded_memory_and_bounded_replies() {
        let mut t = Telnet::new("xterm", 80, 24);
        let mut flood = Vec::new();
        for _ in 0..100_000 {
            flood.extend_from_slice(&[IAC, DO, 77, IAC, WILL, 78]);
        }
        t.receive(&flood);
        let (_, out) = drained(&mut t);
        assert_eq!(out.len(), 3 * 2 * usize::from(MAX_REFUSALS));
        // An endless subnegotiation keeps at most its cap.
        t.receive(&[IAC, SB, option::TTYPE]);
        t.receive(&vec![7u8; 1 << 20]);
        assert!(t.subnegotiation.len() <= MAX_SUBNEGOTIATION);
        t.receive(&[IAC, SE, b'x']);
        assert_eq!(drained(&mut t).0, b"x");
    }

    #[test]
    fn a_server_toggling_options_in_a_loop_gets_a_bounded_number_of_answers() {
        let mut t = Telnet::new("xterm", 80, 24);
        let mut toggles = Vec::new();
        for option in [option::ECHO, option::SGA] {
            toggles.extend_from_slice(&[IAC, WILL, option, IAC, WONT, option]);
        }
        for option in [option::NAWS, option::TTYPE, option::SGA] {
            toggles.extend_from_slice(&[IAC, DO, option, IAC, DONT, option]);
        }
        toggles.extend_from_slice(&[IAC, DO, option::TTYPE]);
        toggles.extend_from_slice(&[IAC, SB, option::TTYPE, TTYPE_SEND, IAC, SE]);
        let mut total = 0;
        for round in 0..10_000 {
            t.receive(&toggles);
            let (_, out) = drained(&mut t);
            if round == 0 {
                // The first round is answered in full.
                assert!(out.windows(3).any(|w| w == [IAC, DO, option::ECHO]));
                assert!(out.windows(3).any(|w| w == [IAC, WONT, option::NAWS]));
            }
            total += out.len();
        }
        // Five options changing at most MAX_CHANGES times (3 bytes each, NAWS with its size,
        // TTYPE with its answers): a few hundred bytes for 10,000 rounds.
        assert!(total < 5 * usize::from(MAX_CHANGES) * 20, "{total}");
    }

    #[test]
    fn iac_in_every_position_never_panics() {
        for split in 0..8 {
            let mut t = Telnet::new("xterm", 80, 24);
            let wire = [IAC, IAC, IAC, SB, IAC, IAC, SE, IAC, SE, IAC];
            t.receive(&wire[..split]);
            t.receive(&wire[split..]);
            let _ = drained(&mut t);
        }
    }
}
