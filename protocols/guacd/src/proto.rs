//! The client side of the guacd handshake, without I/O: [`GuacdHandshake`].
//!
//! | state         | sends                                                       | waits for |
//! |---------------|-------------------------------------------------------------|-----------|
//! | `ExpectArgs`  | `select` (queued by [`GuacdHandshake::new`])                | `args`    |
//! | `ExpectReady` | `size` `audio` `video` `image` (`timezone`) (`name`) `connect` | `ready` |
//! | `Ready`       | — (the relay takes over)                                    | —         |
//!
//! `timezone` goes to guacd 1.1 and later, `name` to 1.5 and later, when known.
//!
//! `error` from guacd in any waiting state, a malformed stream, an unexpected instruction or
//! the deadline ends the handshake with an [`Error`]; the handshake stays failed.
//!
//! Reference: <https://guacamole.apache.org/doc/gug/guacamole-protocol.html#handshake-phase>
//! and guacd's side, `src/libguac/user-handshake.c` in guacamole-server.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use zt_guac::{Context, Decoder, Instruction, TypedInstruction, opcode};
use zt_secret::Secret;

use crate::codec::{self, ProtocolVersion};
use crate::error::{Error, PeerMisbehaved, Phase};
use crate::settings::{ClientInfo, HandshakeSettings};

/// The handshake ztproxy performs as guacd's client, from `select` to `ready`.
///
/// Sans-IO: feed what guacd sends with [`handle_input`](Self::handle_input), write what
/// [`poll_transmit`](Self::poll_transmit) returns, wait until
/// [`poll_timeout`](Self::poll_timeout) and call [`handle_timeout`](Self::handle_timeout),
/// and read [`HandshakeEvent::Ready`] from [`poll_event`](Self::poll_event). Bytes guacd
/// sent after `ready` belong to the relay: [`take_leftover`](Self::take_leftover).
///
/// ```
/// use std::collections::BTreeMap;
/// use std::time::Instant;
/// use zt_secret::Secret;
/// use zt_guacd::{ClientInfo, GuacdHandshake, HandshakeEvent};
///
/// let mut parameters = BTreeMap::new();
/// parameters.insert("hostname".to_owned(), Secret::new("10.1.2.3".to_owned()));
/// parameters.insert("password".to_owned(), Secret::new("s3cret".to_owned()));
/// let mut hs = GuacdHandshake::new("rdp", &parameters, ClientInfo::new(1280, 720, 96));
/// hs.start(Instant::now());
/// assert_eq!(&hs.poll_transmit().unwrap()[..], b"6.select,3.rdp;");
///
/// hs.handle_input(Instant::now(), b"4.args,13.VERSION_1_5_0,8.hostname,4.port,8.password;")?;
/// let sent = hs.poll_transmit().unwrap();
/// assert!(sent.starts_with(b"4.size,4.1280,3.720,2.96;5.audio;5.video;"));
/// assert!(sent.ends_with(b"7.connect,13.VERSION_1_5_0,8.10.1.2.3,0.,6.s3cret;"));
///
/// hs.handle_input(Instant::now(), b"5.ready,37.$b4cf0bd0-9b3c-4a5d-8bb8-5a3f6c8d5e01;4.sync")?;
/// let Some(HandshakeEvent::Ready { connection_id, args, .. }) = hs.poll_event() else {
///     panic!("not ready");
/// };
/// assert_eq!(connection_id, "$b4cf0bd0-9b3c-4a5d-8bb8-5a3f6c8d5e01");
/// assert_eq!(args, ["hostname", "port", "password"]);
/// assert_eq!(&hs.take_leftover()[..], b"4.sync");
/// # Ok::<(), zt_guacd::Error>(())
/// ```
pub struct GuacdHandshake {
    state: State,
    /// Last phase waited for, for errors reported after the state has moved on.
    phase: Phase,
    parameters: BTreeMap<String, Secret<String>>,
    client: ClientInfo,
    settings: HandshakeSettings,
    decoder: Decoder,
    transmit: VecDeque<Bytes>,
    events: VecDeque<HandshakeEvent>,
    /// Whether [`start`](GuacdHandshake::start) has run (the deadline is armed).
    started: bool,
    /// `None` before the start, or when the timeout is too long to represent (no deadline).
    deadline: Option<Instant>,
    leftover: BytesMut,
}

/// What the handshake reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeEvent {
    /// guacd accepted the connection. It has not reached the target yet: the first `sync`
    /// in the relay says the session is up, an `error` says it failed.
    #[non_exhaustive]
    Ready {
        /// guacd's id for the connection (`$` and a UUID); another user could join it with
        /// `select <id>`, so treat it as a capability.
        connection_id: String,
        /// The version guacd announced in `args`; `None` for guacd before 1.1, which
        /// announces none.
        guacd_version: Option<ProtocolVersion>,
        /// The version both sides speak, sent first in `connect`.
        protocol_version: ProtocolVersion,
        /// guacd's parameter names, in `args` order (the version element removed).
        args: Vec<String>,
    },
}

#[derive(Debug)]
enum State {
    ExpectArgs,
    ExpectReady {
        guacd_version: Option<ProtocolVersion>,
        protocol_version: ProtocolVersion,
        args: Vec<String>,
    },
    Ready,
    Failed,
}

impl GuacdHandshake {
    /// A handshake that selects `protocol` (`rdp`, `vnc`, `ssh`, `telnet`, … or a
    /// connection id to join), with [`HandshakeSettings::default`]. `select` is queued at
    /// once.
    ///
    /// `parameters` are the connection parameters by guacd name (`hostname`, `port`,
    /// `username`, `password`, `security`, `ignore-cert`, `disable-copy`, …). They must come
    /// from the session only: the proxy merges the session's policy and credentials with the
    /// target's `hostname` and `port`. Nothing the user's client sends may reach this map:
    /// the only client input that reaches guacd is `client` (display size, DPI, mimetypes,
    /// time zone, name). Each name guacd lists in `args` gets its value here, or the empty
    /// string (guacd's default) when absent; names guacd does not list are never sent.
    pub fn new(
        protocol: &str,
        parameters: &BTreeMap<String, Secret<String>>,
        client: ClientInfo,
    ) -> Self {
        Self::with_settings(protocol, parameters, client, HandshakeSettings::default())
    }

    /// [`new`](Self::new) with explicit limits and deadline.
    pub fn with_settings(
        protocol: &str,
        parameters: &BTreeMap<String, Secret<String>>,
        client: ClientInfo,
        settings: HandshakeSettings,
    ) -> Self {
        let mut select = BytesMut::new();
        codec::encode_select(protocol, &mut select);
        Self {
            state: State::ExpectArgs,
            phase: Phase::Args,
            parameters: parameters.clone(),
            client,
            settings,
            decoder: Decoder::new(settings.limits),
            transmit: VecDeque::from([select.freeze()]),
            events: VecDeque::new(),
            started: false,
            deadline: None,
            leftover: BytesMut::new(),
        }
    }

    /// Arms the deadline ([`HandshakeSettings::timeout`] from `now`). Call once the TCP
    /// connection to guacd is up; the first `handle_*` call arms it otherwise, and later
    /// calls change nothing. A timeout too long to add to `now` (`Duration::MAX`) means no
    /// deadline.
    pub fn start(&mut self, now: Instant) {
        if !self.started {
            self.started = true;
            self.deadline = now.checked_add(self.settings.timeout);
        }
    }

    /// Handles bytes read from guacd.
    ///
    /// An error ends the handshake (later calls return [`Error::Internal`]). Bytes that
    /// arrive after `ready` are appended to the leftover.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Error> {
        self.start(now);
        match self.state {
            State::Ready => {
                self.leftover.extend_from_slice(bytes);
                return Ok(());
            }
            State::Failed => return Err(Error::Internal("guacd handshake used after it failed")),
            State::ExpectArgs | State::ExpectReady { .. } => {}
        }
        self.decoder.feed(bytes);
        let result = self.process();
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// Fails the handshake with [`Error::TimedOut`] if the deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.start(now);
        match self.state {
            State::ExpectArgs | State::ExpectReady { .. } => {}
            State::Ready => return Ok(()),
            State::Failed => return Err(Error::Internal("guacd handshake used after it failed")),
        }
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            self.fail();
            return Err(Error::TimedOut { phase: self.phase });
        }
        Ok(())
    }

    /// The next bytes to write to guacd, in order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<HandshakeEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout); `None` once ready or failed,
    /// or before the deadline is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::ExpectArgs | State::ExpectReady { .. } => self.deadline,
            State::Ready | State::Failed => None,
        }
    }

    /// What the handshake waits for (or waited for when it failed): for
    /// [`Error::Closed`] when guacd closes the connection.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether `ready` has been received.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready)
    }

    /// Bytes guacd sent after `ready` (the start of the relay stream, at an instruction
    /// boundary), and anything fed since; the buffer is empty afterwards.
    pub fn take_leftover(&mut self) -> BytesMut {
        std::mem::take(&mut self.leftover)
    }

    fn process(&mut self) -> Result<(), Error> {
        while let Some(instruction) = self
            .decoder
            .poll_instruction()
            .map_err(PeerMisbehaved::Decode)?
        {
            // guacd sends neither before `ready`; harmless, so tolerated.
            if instruction.is(opcode::NOP) || instruction.is(opcode::LOG) {
                continue;
            }
            if instruction.is(opcode::ERROR) {
                return Err(guacd_error(&instruction));
            }
            match self.state {
                State::ExpectArgs if instruction.is(opcode::ARGS) => {
                    self.handle_args(&instruction)?;
                }
                State::ExpectReady { .. } if instruction.is(opcode::READY) => {
                    return self.handle_ready(&instruction);
                }
                _ => {
                    return Err(PeerMisbehaved::Unexpected {
                        opcode: known_opcode(instruction.opcode()),
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    fn handle_args(&mut self, instruction: &Instruction) -> Result<(), Error> {
        let elements: Vec<&str> = instruction.args().collect();
        let (guacd_version, names) = match elements.split_first() {
            Some((first, names)) if codec::is_version_element(first) => (
                Some(ProtocolVersion::parse(first).ok_or(PeerMisbehaved::BadVersion)?),
                names,
            ),
            _ => (None, elements.as_slice()),
        };
        if names.len() > self.settings.max_args {
            return Err(PeerMisbehaved::TooManyArgs.into());
        }
        // guacd answers the lowest common version (guacamole-common-java does the same).
        let protocol_version =
            guacd_version.map_or(ProtocolVersion::V1_0_0, |v| v.min(ProtocolVersion::LATEST));
        let version = protocol_version.to_string();
        let mut values: Vec<(&str, &str)> = Vec::with_capacity(elements.len());
        if guacd_version.is_some() {
            values.push(("protocol version", &version));
        }
        for name in names {
            let value = self
                .parameters
                .get(*name)
                .map_or("", |value| value.expose_secret().as_str());
            values.push((name, value));
        }
        let mut out = BytesMut::new();
        codec::encode_client_info(
            protocol_version,
            &self.client,
            &self.settings.limits,
            &mut out,
        )?;
        codec::encode_connect(&values, &self.settings.limits, &mut out)?;
        tracing::debug!(
            guacd_version = ?guacd_version.map(|v| v.to_string()),
            protocol_version = %protocol_version,
            args = names.len(),
            "guacd args received, sending connect"
        );
        self.transmit.push_back(out.freeze());
        let args = names.iter().map(|name| (*name).to_owned()).collect();
        self.state = State::ExpectReady {
            guacd_version,
            protocol_version,
            args,
        };
        self.phase = Phase::Ready;
        Ok(())
    }

    fn handle_ready(&mut self, instruction: &Instruction) -> Result<(), Error> {
        let connection_id = match TypedInstruction::parse(instruction, Context::ServerHandshake) {
            Ok(TypedInstruction::Ready { identifier }) => identifier.to_owned(),
            Ok(_) => return Err(Error::Internal("`ready` parsed as another opcode")),
            Err(error) => return Err(PeerMisbehaved::Malformed(error).into()),
        };
        if connection_id.is_empty() {
            return Err(PeerMisbehaved::EmptyConnectionId.into());
        }
        let State::ExpectReady {
            guacd_version,
            protocol_version,
            args,
        } = std::mem::replace(&mut self.state, State::Ready)
        else {
            return Err(Error::Internal("`ready` handled outside ExpectReady"));
        };
        let decoder = std::mem::replace(&mut self.decoder, Decoder::new(self.settings.limits));
        self.leftover = decoder.into_buffered();
        // The credentials are in guacd's hands now; drop (and zeroise) our copy.
        self.parameters = BTreeMap::new();
        tracing::debug!(%connection_id, "guacd ready");
        self.events.push_back(HandshakeEvent::Ready {
            connection_id,
            guacd_version,
            protocol_version,
            args,
        });
        Ok(())
    }

    fn fail(&mut self) {
        self.state = State::Failed;
        self.transmit.clear();
        self.parameters = BTreeMap::new();
        self.decoder = Decoder::new(self.settings.limits);
    }
}

impl fmt::Debug for GuacdHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the queued bytes: `connect` holds credentials.
        f.debug_struct("GuacdHandshake")
            .field("state", &self.state)
            .field("parameters", &self.parameters.len())
            .field("queued", &self.transmit.len())
            .field("deadline", &self.deadline)
            .field("leftover", &self.leftover.len())
            .finish_non_exhaustive()
    }
}

/// guacd's `error` as an [`Error`].
fn guacd_error(instruction: &Instruction) -> Error {
    match TypedInstruction::parse(instruction, Context::ServerHandshake) {
        Ok(TypedInstruction::Error { message, status }) => Error::Guacd {
            status,
            message: sanitize(message),
        },
        Ok(_) => Error::Internal("`error` parsed as another opcode"),
        Err(error) => PeerMisbehaved::Malformed(error).into(),
    }
}

/// Untrusted text made safe to log: control characters, and the invisible formatting
/// characters that reorder or hide text on a terminal (bidirectional overrides and isolates,
/// zero-width characters, the byte-order mark), replaced by spaces; length bounded.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars()
        .take(MAX_GUACD_MESSAGE_CHARS)
        .map(|c| if is_unsafe_to_log(c) { ' ' } else { c })
        .collect()
}

/// Whether `c` could forge or hide log text: Unicode controls (`Cc`), line and paragraph
/// separators, and the format characters (`Cf`) that reorder or hide the text around them.
fn is_unsafe_to_log(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// The opcode as a `&'static str` when `zt-guac` knows it, so errors never carry wire text.
fn known_opcode(opcode: &str) -> Option<&'static str> {
    opcode::TYPED.iter().copied().find(|known| *known == opcode)
}

/// Longest message kept from guacd's `error`, in characters.
pub const MAX_GUACD_MESSAGE_CHARS: usize = 256;

#[cfg(test)]
mod tests;
