//! RFB (RFC 6143) as the client speaks it, without I/O.
//!
//! ```text
//!  server bytes ─▶ Client::feed ─▶ Client::poll ─▶ Event (Connected, Pixels, Copy, Resize,
//!                                                  Cursor, UpdateEnd, CutText, Bell)
//!  Client::key / pointer / cut_text / request_update / set_desktop_size ─▶ Client::output
//! ```
//!
//! * Versions 3.3, 3.7 and 3.8 (a server's other minors as the RFC says: 3.4–3.6 are 3.3,
//!   higher ones and 4.x are 3.8).
//! * Security: VNC authentication when the session has a password; "None" only when the
//!   session allows it ([`Config::allow_none`]), never as a fallback.
//! * After ServerInit the client asks for 32-bit true colour (blue, green, red, unused in
//!   each pixel's four bytes), the encodings of [`Config::encodings`] and a full update.
//! * Encodings: ZRLE, Tight (without JPEG), Raw and CopyRect; the DesktopSize, ExtendedDesktopSize, Cursor and LastRect
//!   pseudo-encodings. A rectangle in an encoding the client did not ask for is an error (RFB
//!   gives no length to skip it), except Raw, which every client must take.
//! * Bounds ([`Limits`]): the desktop's size, a rectangle inside the framebuffer, the
//!   cursor's size, the desktop name and failure reasons, cut text (kept up to the clipboard
//!   limit, the rest read and dropped), and the bytes waiting to be parsed. Raw pixels are
//!   given a band of rows at a time.

use zt_secret::Secret;

use crate::error::Error;

/// Raw.
pub const ENCODING_RAW: i32 = 0;
/// CopyRect.
pub const ENCODING_COPY_RECT: i32 = 1;
/// ZRLE.
pub const ENCODING_ZRLE: i32 = 16;
/// Tight (without JPEG).
pub const ENCODING_TIGHT: i32 = 7;
/// The Cursor pseudo-encoding.
pub const ENCODING_CURSOR: i32 = -239;
/// The DesktopSize pseudo-encoding.
pub const ENCODING_DESKTOP_SIZE: i32 = -223;
/// The LastRect pseudo-encoding.
pub const ENCODING_LAST_RECT: i32 = -224;
/// The ExtendedDesktopSize pseudo-encoding.
pub const ENCODING_EXTENDED_DESKTOP_SIZE: i32 = -308;

/// The encodings this client decodes.
pub const SUPPORTED: &[i32] = &[
    ENCODING_ZRLE,
    ENCODING_TIGHT,
    ENCODING_COPY_RECT,
    ENCODING_RAW,
    ENCODING_CURSOR,
    ENCODING_DESKTOP_SIZE,
    ENCODING_LAST_RECT,
    ENCODING_EXTENDED_DESKTOP_SIZE,
];

const SECURITY_NONE: u8 = 1;
const SECURITY_VNC: u8 = 2;

/// Bytes per pixel of the format the client asks for.
pub const BYTES_PER_PIXEL: usize = 4;
/// The most bytes of pixels one [`Event::Pixels`] carries (at least one row).
pub const BAND: usize = 256 * 1024;

/// What a server may make the client hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The widest and tallest desktop.
    pub max_side: u16,
    /// The most pixels of a desktop.
    pub max_pixels: u32,
    /// The widest and tallest cursor.
    pub max_cursor: u16,
    /// The most bytes of cut text kept (the rest is read and dropped).
    pub max_cut_text: usize,
    /// The longest cut text read at all: a server that announces more ends the connection
    /// (a clipboard of gigabytes is a stream without end, not a clipboard).
    pub max_cut_text_wire: u32,
    /// The longest desktop name or failure reason.
    pub max_text: usize,
    /// The most bytes waiting to be parsed.
    pub max_buffered: usize,
    /// The most compressed bytes of one rectangle.
    pub max_compressed: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_side: 8192,
            max_pixels: 8192 * 4608,
            max_cursor: 256,
            max_cut_text: 256 * 1024,
            max_cut_text_wire: 16 << 20,
            max_text: 4096,
            max_buffered: 4 << 20,
            max_compressed: 64 << 20,
        }
    }
}

/// The session's side of the connection.
#[derive(Debug)]
pub struct Config {
    /// The VNC password (`password`).
    pub password: Option<Secret<String>>,
    /// Whether "None" security may be used when the server offers it.
    pub allow_none: bool,
    /// Whether the desktop is shared with other clients (ClientInit's flag).
    pub shared: bool,
    /// The encodings to ask for, most preferred first (each in [`SUPPORTED`]).
    pub encodings: Vec<i32>,
    /// The bounds.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            password: None,
            allow_none: false,
            shared: true,
            encodings: SUPPORTED.to_vec(),
            limits: Limits::default(),
        }
    }
}

/// What the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The login succeeded: the desktop's size and name.
    Connected {
        /// Width.
        width: u16,
        /// Height.
        height: u16,
        /// The desktop's name (Latin-1, control characters removed).
        name: String,
    },
    /// Pixels of a rectangle (part of one: a band of its rows).
    Pixels(Pixels),
    /// A rectangle of one colour.
    Fill {
        /// Left.
        x: u16,
        /// Top.
        y: u16,
        /// Width.
        width: u16,
        /// Height.
        height: u16,
        /// The colour: blue, green, red, unused.
        bgrx: [u8; 4],
    },
    /// A rectangle copied from elsewhere in the framebuffer.
    Copy {
        /// Source's left.
        src_x: u16,
        /// Source's top.
        src_y: u16,
        /// Destination's left.
        x: u16,
        /// Destination's top.
        y: u16,
        /// Width.
        width: u16,
        /// Height.
        height: u16,
    },
    /// The desktop has a new size (its content follows).
    Resize {
        /// Width.
        width: u16,
        /// Height.
        height: u16,
    },
    /// The server refused the client's request for a new size (ExtendedDesktopSize status).
    ResizeRefused(u16),
    /// The cursor's image.
    Cursor {
        /// The hotspot's column.
        hot_x: u16,
        /// The hotspot's row.
        hot_y: u16,
        /// Width.
        width: u16,
        /// Height.
        height: u16,
        /// Red, green, blue, alpha for each pixel, row by row.
        rgba: Vec<u8>,
    },
    /// The end of a framebuffer update.
    UpdateEnd,
    /// The server's clipboard (Latin-1), cut at [`Limits::max_cut_text`].
    CutText(Vec<u8>),
    /// The bell.
    Bell,
}

/// Pixels of a band of a rectangle: 4 bytes each (blue, green, red, unused), row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    /// Left.
    pub x: u16,
    /// Top.
    pub y: u16,
    /// Width.
    pub width: u16,
    /// Height.
    pub height: u16,
    /// The pixels.
    pub bgrx: Vec<u8>,
}

/// The protocol version both sides use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// 3.3: the server chooses the security type.
    V3_3,
    /// 3.7: the client chooses; no failure reasons.
    V3_7,
    /// 3.8.
    V3_8,
}

#[derive(Debug)]
enum State {
    Version,
    SecurityTypes,
    SecurityType33,
    Challenge,
    SecurityResult,
    /// A failure reason follows (u32 length and text); then the connection ends.
    Reason,
    ServerInit,
    Message,
    Rects {
        left: u16,
    },
    /// Raw pixels, `done` rows given; `left` rectangles follow.
    Raw {
        x: u16,
        y: u16,
        width: u16,
        height: u16,
        done: u16,
        left: u16,
    },
    CutText {
        left: u32,
        kept: Vec<u8>,
    },
    /// A Tight rectangle of basic data; `left` rectangles follow.
    Tight {
        rect: Box<crate::tight::Basic>,
        left: u16,
    },
    /// A ZRLE rectangle; `left` rectangles follow.
    Zrle {
        rect: Box<crate::zrle::Rect>,
        left: u16,
    },
    Closed,
}

/// An RFB client without I/O.
#[derive(Debug)]
pub struct Client {
    config: Config,
    state: State,
    version: Version,
    input: Vec<u8>,
    at: usize,
    output: Vec<u8>,
    width: u16,
    height: u16,
    /// The first screen's id (ExtendedDesktopSize), for SetDesktopSize.
    screen: Option<u32>,
    security: Option<u8>,
    /// ZRLE's zlib stream (one for the connection).
    zlib: Option<flate2::Decompress>,
    /// Tight's four zlib streams.
    tight: crate::tight::Streams,
}

impl Client {
    /// A client that has not heard from the server yet.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            state: State::Version,
            version: Version::V3_8,
            input: Vec::new(),
            at: 0,
            output: Vec::new(),
            width: 0,
            height: 0,
            screen: None,
            security: None,
            zlib: None,
            tight: crate::tight::Streams::default(),
        }
    }

    /// The version in use (3.8 until the server's is known).
    pub fn version(&self) -> Version {
        self.version
    }

    /// The framebuffer's size.
    pub fn size(&self) -> (u16, u16) {
        (self.width, self.height)
    }

    /// Bytes from the server. An error if more wait to be parsed than [`Limits`] allow:
    /// call [`Client::poll`] until it gives `None` between feeds.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.at > 0 && self.at * 2 >= self.input.len() {
            self.input.drain(..self.at);
            self.at = 0;
        }
        if self.input.len() - self.at + data.len() > self.config.limits.max_buffered {
            return Err(Error::protocol("more than the client can hold unparsed"));
        }
        self.input.extend_from_slice(data);
        Ok(())
    }

    /// The bytes to send to the server (taken).
    pub fn output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    fn buffered(&self) -> &[u8] {
        self.input.get(self.at..).unwrap_or_default()
    }

    /// The next `n` bytes, if they are all here (not consumed).
    fn peek(&self, n: usize) -> Option<&[u8]> {
        self.buffered().get(..n)
    }

    fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.input.len());
    }

    /// The next event, `None` until more bytes arrive. After an error the client is closed.
    pub fn poll(&mut self) -> Result<Option<Event>, Error> {
        let result = self.step();
        if result.is_err() {
            self.state = State::Closed;
        }
        result
    }

    fn step(&mut self) -> Result<Option<Event>, Error> {
        loop {
            let progressed = match std::mem::replace(&mut self.state, State::Closed) {
                State::Version => self.read_version()?,
                State::SecurityTypes => self.read_security_types()?,
                State::SecurityType33 => self.read_security_type_33()?,
                State::Challenge => self.read_challenge()?,
                State::SecurityResult => self.read_security_result()?,
                State::Reason => return self.read_reason().map(|_| None),
                State::ServerInit => return self.read_server_init(),
                State::Message => match self.read_message()? {
                    Step::Event(event) => return Ok(Some(event)),
                    Step::Again => true,
                    Step::Wait => false,
                },
                State::Rects { left: 0 } => {
                    self.state = State::Message;
                    return Ok(Some(Event::UpdateEnd));
                }
                State::Rects { left } => match self.read_rect(left)? {
                    Step::Event(event) => return Ok(Some(event)),
                    Step::Again => true,
                    Step::Wait => false,
                },
                State::Raw {
                    x,
                    y,
                    width,
                    height,
                    done,
                    left,
                } => return self.read_raw(x, y, width, height, done, left),
                State::CutText { left, kept } => return self.read_cut_text(left, kept),
                State::Tight { mut rect, left } => {
                    let input = self.input.get(self.at..).unwrap_or_default();
                    let (progress, used) = rect.step(&mut self.tight, input)?;
                    match self.progress(progress, used, State::Tight { rect, left }, left) {
                        Some(event) => return event,
                        None => true,
                    }
                }
                State::Zrle { mut rect, left } => {
                    let zlib = self
                        .zlib
                        .get_or_insert_with(|| flate2::Decompress::new(true));
                    let input = self.input.get(self.at..).unwrap_or_default();
                    let (progress, used) = rect.step(zlib, input)?;
                    match self.progress(progress, used, State::Zrle { rect, left }, left) {
                        Some(event) => return event,
                        None => true,
                    }
                }
                State::Closed => return Err(Error::protocol("data after the connection ended")),
            };
            if !progressed {
                return Ok(None);
            }
        }
    }

    /// After a step of a compressed rectangle: its pixels, or a wait (in `state`, the
    /// rectangle's), or `None` to go on with the `left` rectangles after it.
    fn progress(
        &mut self,
        progress: crate::inflate::Progress,
        used: usize,
        state: State,
        left: u16,
    ) -> Option<Result<Option<Event>, Error>> {
        self.consume(used);
        match progress {
            crate::inflate::Progress::Pixels(pixels) => {
                self.state = state;
                Some(Ok(Some(Event::Pixels(pixels))))
            }
            crate::inflate::Progress::Wait => {
                self.state = state;
                Some(Ok(None))
            }
            crate::inflate::Progress::Done => {
                self.state = State::Rects { left };
                None
            }
        }
    }

    /// Puts `state` back and says whether to go on.
    fn wait(&mut self, state: State) -> Result<bool, Error> {
        self.state = state;
        Ok(false)
    }

    fn read_version(&mut self) -> Result<bool, Error> {
        let Some(text) = self.peek(12) else {
            if self
                .buffered()
                .iter()
                .any(|b| !b"RFB 0123456789.\n".contains(b))
            {
                return Err(Error::NotRfb);
            }
            return self.wait(State::Version);
        };
        let parse =
            |digits: &[u8]| -> Option<u32> { std::str::from_utf8(digits).ok()?.parse().ok() };
        let (major, minor) = match (text.get(..4), text.get(4..7), text.get(8..11), text.get(11)) {
            (Some(b"RFB "), Some(major), Some(minor), Some(b'\n'))
                if text.get(7) == Some(&b'.') =>
            {
                (parse(major), parse(minor))
            }
            _ => (None, None),
        };
        let (Some(major), Some(minor)) = (major, minor) else {
            return Err(Error::NotRfb);
        };
        self.version = match (major, minor) {
            (3, 7) => Version::V3_7,
            (3, 8..) | (4.., _) => Version::V3_8,
            (3, _) => Version::V3_3,
            _ => return Err(Error::NotRfb),
        };
        self.consume(12);
        self.output.extend_from_slice(match self.version {
            Version::V3_3 => b"RFB 003.003\n",
            Version::V3_7 => b"RFB 003.007\n",
            Version::V3_8 => b"RFB 003.008\n",
        });
        self.state = if self.version == Version::V3_3 {
            State::SecurityType33
        } else {
            State::SecurityTypes
        };
        Ok(true)
    }

    fn read_security_types(&mut self) -> Result<bool, Error> {
        let Some(&[count]) = self.peek(1) else {
            return self.wait(State::SecurityTypes);
        };
        if count == 0 {
            self.consume(1);
            self.state = State::Reason;
            return Ok(true);
        }
        let Some(offered) = self.peek(1 + usize::from(count)).map(|t| t[1..].to_vec()) else {
            return self.wait(State::SecurityTypes);
        };
        self.consume(1 + usize::from(count));
        let chosen = self.choose(&offered)?;
        self.output.push(chosen);
        self.after_choice(chosen);
        Ok(true)
    }

    fn read_security_type_33(&mut self) -> Result<bool, Error> {
        let Some(kind) = self.peek(4).map(be32) else {
            return self.wait(State::SecurityType33);
        };
        self.consume(4);
        if kind == 0 {
            self.state = State::Reason;
            return Ok(true);
        }
        let kind = u8::try_from(kind).map_err(|_| Error::NoSecurity(Vec::new()))?;
        // The server chose; the client may still refuse what the session does not allow.
        let chosen = self.choose(&[kind])?;
        self.after_choice(chosen);
        Ok(true)
    }

    /// VNC authentication when there is a password; "None" only when the session allows it.
    fn choose(&self, offered: &[u8]) -> Result<u8, Error> {
        if self.config.password.is_some() && offered.contains(&SECURITY_VNC) {
            return Ok(SECURITY_VNC);
        }
        if self.config.allow_none && offered.contains(&SECURITY_NONE) {
            return Ok(SECURITY_NONE);
        }
        if offered.contains(&SECURITY_VNC) {
            return Err(Error::PasswordRequired);
        }
        let mut offered = offered.to_vec();
        offered.truncate(16);
        Err(Error::NoSecurity(offered))
    }

    fn after_choice(&mut self, chosen: u8) {
        self.security = Some(chosen);
        self.state = match chosen {
            SECURITY_VNC => State::Challenge,
            // 3.3 and 3.7 send no SecurityResult after "None".
            _ if self.version < Version::V3_8 => {
                self.client_init();
                State::ServerInit
            }
            _ => State::SecurityResult,
        };
    }

    fn client_init(&mut self) {
        self.output.push(u8::from(self.config.shared));
    }

    fn read_challenge(&mut self) -> Result<bool, Error> {
        let Some(challenge) = self.peek(16) else {
            return self.wait(State::Challenge);
        };
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(challenge);
        self.consume(16);
        let password = self
            .config
            .password
            .as_ref()
            .ok_or(Error::PasswordRequired)?;
        let response = crate::auth::response(password.expose_secret().as_bytes(), &bytes);
        self.output.extend_from_slice(&response);
        self.state = State::SecurityResult;
        Ok(true)
    }

    fn read_security_result(&mut self) -> Result<bool, Error> {
        let Some(result) = self.peek(4).map(be32) else {
            return self.wait(State::SecurityResult);
        };
        self.consume(4);
        if result == 0 {
            self.client_init();
            self.state = State::ServerInit;
            return Ok(true);
        }
        if self.version == Version::V3_8 {
            self.state = State::Reason;
            return Ok(true);
        }
        Err(Error::Refused(
            if self.security == Some(SECURITY_VNC) {
                "authentication failed"
            } else {
                "the connection was refused"
            }
            .to_owned(),
        ))
    }

    /// A failure reason: always an error, once it is all here.
    fn read_reason(&mut self) -> Result<(), Error> {
        let Some(length) = self.peek(4).map(be32) else {
            self.state = State::Reason;
            return Ok(());
        };
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        if length > self.config.limits.max_text {
            return Err(Error::protocol(format!(
                "a failure reason of {length} bytes"
            )));
        }
        let Some(reason) = self.peek(4 + length).map(|r| r[4..].to_vec()) else {
            self.state = State::Reason;
            return Ok(());
        };
        Err(Error::refused(&reason))
    }

    fn read_server_init(&mut self) -> Result<Option<Event>, Error> {
        let Some(head) = self.peek(24) else {
            self.state = State::ServerInit;
            return Ok(None);
        };
        let (width, height) = (be16(&head[0..2]), be16(&head[2..4]));
        let length = usize::try_from(be32(&head[20..24])).unwrap_or(usize::MAX);
        if length > self.config.limits.max_text {
            return Err(Error::protocol(format!("a desktop name of {length} bytes")));
        }
        let Some(name) = self.peek(24 + length).map(|r| text(&r[24..])) else {
            self.state = State::ServerInit;
            return Ok(None);
        };
        self.check_size(width, height)?;
        self.consume(24 + length);
        (self.width, self.height) = (width, height);
        self.set_pixel_format();
        self.set_encodings();
        self.request_update(false, 0, 0, width, height);
        self.state = State::Message;
        Ok(Some(Event::Connected {
            width,
            height,
            name,
        }))
    }

    fn check_size(&self, width: u16, height: u16) -> Result<(), Error> {
        let limits = &self.config.limits;
        if width == 0
            || height == 0
            || width > limits.max_side
            || height > limits.max_side
            || u32::from(width) * u32::from(height) > limits.max_pixels
        {
            return Err(Error::protocol(format!("a desktop of {width}×{height}")));
        }
        Ok(())
    }

    fn set_pixel_format(&mut self) {
        // SetPixelFormat: 32 bits per pixel, depth 24, little-endian true colour, 8 bits per
        // channel at shifts 16 (red), 8 (green), 0 (blue).
        self.output.extend_from_slice(&[0, 0, 0, 0]);
        self.output
            .extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    }

    fn set_encodings(&mut self) {
        let encodings: Vec<i32> = self
            .config
            .encodings
            .iter()
            .copied()
            .filter(|e| SUPPORTED.contains(e))
            .collect();
        self.output.extend_from_slice(&[2, 0]);
        self.output
            .extend_from_slice(&u16::try_from(encodings.len()).unwrap_or(0).to_be_bytes());
        for encoding in encodings {
            self.output.extend_from_slice(&encoding.to_be_bytes());
        }
    }

    /// Asks for an update of the rectangle (only what changed, when `incremental`).
    pub fn request_update(&mut self, incremental: bool, x: u16, y: u16, width: u16, height: u16) {
        self.output.extend_from_slice(&[3, u8::from(incremental)]);
        for value in [x, y, width, height] {
            self.output.extend_from_slice(&value.to_be_bytes());
        }
    }

    /// A key pressed or released (an X11 keysym).
    pub fn key(&mut self, down: bool, keysym: u32) {
        self.output.extend_from_slice(&[4, u8::from(down), 0, 0]);
        self.output.extend_from_slice(&keysym.to_be_bytes());
    }

    /// The pointer's position and buttons (bit 0 left, 1 middle, 2 right, 3 and 4 the wheel).
    pub fn pointer(&mut self, buttons: u8, x: u16, y: u16) {
        self.output.extend_from_slice(&[5, buttons]);
        self.output
            .extend_from_slice(&x.min(self.width.saturating_sub(1)).to_be_bytes());
        self.output
            .extend_from_slice(&y.min(self.height.saturating_sub(1)).to_be_bytes());
    }

    /// The client's clipboard (Latin-1), cut at [`Limits::max_cut_text`].
    pub fn cut_text(&mut self, latin1: &[u8]) {
        let text = latin1
            .get(..self.config.limits.max_cut_text)
            .unwrap_or(latin1);
        self.output.extend_from_slice(&[6, 0, 0, 0]);
        self.output
            .extend_from_slice(&u32::try_from(text.len()).unwrap_or(0).to_be_bytes());
        self.output.extend_from_slice(text);
    }

    /// Asks for a desktop of `width`×`height` (SetDesktopSize). False, and nothing sent,
    /// when the server has not shown it supports ExtendedDesktopSize.
    pub fn set_desktop_size(&mut self, width: u16, height: u16) -> bool {
        let Some(screen) = self.screen else {
            return false;
        };
        self.output.extend_from_slice(&[251, 0]);
        self.output.extend_from_slice(&width.to_be_bytes());
        self.output.extend_from_slice(&height.to_be_bytes());
        self.output.extend_from_slice(&[1, 0]);
        self.output.extend_from_slice(&screen.to_be_bytes());
        self.output.extend_from_slice(&[0, 0, 0, 0]);
        self.output.extend_from_slice(&width.to_be_bytes());
        self.output.extend_from_slice(&height.to_be_bytes());
        self.output.extend_from_slice(&[0, 0, 0, 0]);
        true
    }

    fn read_message(&mut self) -> Result<Step, Error> {
        let Some(&[kind]) = self.peek(1) else {
            self.state = State::Message;
            return Ok(Step::Wait);
        };
        match kind {
            0 => {
                let Some(head) = self.peek(4) else {
                    self.state = State::Message;
                    return Ok(Step::Wait);
                };
                let count = be16(&head[2..4]);
                self.consume(4);
                if count == 0 {
                    self.state = State::Message;
                    return Ok(Step::Event(Event::UpdateEnd));
                }
                self.state = State::Rects { left: count };
                Ok(Step::Again)
            }
            1 => Err(Error::protocol(
                "a colour map, though the client asked for true colour",
            )),
            2 => {
                self.consume(1);
                self.state = State::Message;
                Ok(Step::Event(Event::Bell))
            }
            3 => {
                let Some(head) = self.peek(8) else {
                    self.state = State::Message;
                    return Ok(Step::Wait);
                };
                let length = be32(&head[4..8]);
                if i32::from_be_bytes(length.to_be_bytes()) < 0 {
                    return Err(Error::protocol(
                        "extended clipboard data, which the client did not ask for",
                    ));
                }
                if length > self.config.limits.max_cut_text_wire {
                    return Err(Error::protocol(format!(
                        "cut text of {length} bytes, more than the {} the client reads",
                        self.config.limits.max_cut_text_wire
                    )));
                }
                self.consume(8);
                self.state = State::CutText {
                    left: length,
                    kept: Vec::new(),
                };
                Ok(Step::Again)
            }
            other => Err(Error::protocol(format!(
                "a message of unknown type {other}"
            ))),
        }
    }

    /// After a rectangle that gave no event: the next one, or the update's end.
    fn next_rect(&mut self, left: u16) -> Step {
        self.state = State::Rects { left };
        Step::Again
    }

    fn read_rect(&mut self, left: u16) -> Result<Step, Error> {
        let Some(head) = self.peek(12) else {
            self.state = State::Rects { left };
            return Ok(Step::Wait);
        };
        let (x, y, width, height) = (
            be16(&head[0..2]),
            be16(&head[2..4]),
            be16(&head[4..6]),
            be16(&head[6..8]),
        );
        let encoding = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        // LastRect's count is 0xFFFF: the count never ends the update early.
        let next = left.saturating_sub(1);
        if encoding != ENCODING_LAST_RECT && !self.asked(encoding) {
            return Err(Error::protocol(format!(
                "a rectangle in encoding {encoding}, which the client did not ask for"
            )));
        }
        match encoding {
            ENCODING_RAW => {
                self.check_rect(x, y, width, height)?;
                self.consume(12);
                if width == 0 || height == 0 {
                    return Ok(self.next_rect(next));
                }
                self.state = State::Raw {
                    x,
                    y,
                    width,
                    height,
                    done: 0,
                    left: next,
                };
                Ok(Step::Again)
            }
            ENCODING_TIGHT => {
                self.check_rect(x, y, width, height)?;
                let data = self.input.get(self.at + 12..).unwrap_or_default();
                let Some((header, n)) =
                    crate::tight::header(data, &mut self.tight, (x, y, width, height))?
                else {
                    self.state = State::Rects { left };
                    return Ok(Step::Wait);
                };
                self.consume(12 + n);
                match header {
                    crate::tight::Header::Fill(bgrx) => {
                        self.state = State::Rects { left: next };
                        Ok(Step::Event(Event::Fill {
                            x,
                            y,
                            width,
                            height,
                            bgrx,
                        }))
                    }
                    crate::tight::Header::Basic(basic) => {
                        self.state = State::Tight {
                            rect: Box::new(basic),
                            left: next,
                        };
                        Ok(Step::Again)
                    }
                }
            }
            ENCODING_ZRLE => {
                let Some(length) = self.peek(16).map(|b| be32(&b[12..16])) else {
                    self.state = State::Rects { left };
                    return Ok(Step::Wait);
                };
                self.check_rect(x, y, width, height)?;
                if length > self.config.limits.max_compressed {
                    return Err(Error::protocol(format!(
                        "a ZRLE rectangle of {length} bytes"
                    )));
                }
                self.consume(16);
                self.state = State::Zrle {
                    rect: Box::new(crate::zrle::Rect::new(x, y, width, height, length)),
                    left: next,
                };
                Ok(Step::Again)
            }
            ENCODING_COPY_RECT => {
                let Some(source) = self.peek(16).map(|b| (be16(&b[12..14]), be16(&b[14..16])))
                else {
                    self.state = State::Rects { left };
                    return Ok(Step::Wait);
                };
                self.check_rect(x, y, width, height)?;
                self.check_rect(source.0, source.1, width, height)?;
                self.consume(16);
                let event = Event::Copy {
                    src_x: source.0,
                    src_y: source.1,
                    x,
                    y,
                    width,
                    height,
                };
                // With `left` 0, the update's end comes with the next poll.
                self.state = State::Rects { left: next };
                Ok(Step::Event(event))
            }
            ENCODING_DESKTOP_SIZE => {
                self.check_size(width, height)?;
                self.consume(12);
                (self.width, self.height) = (width, height);
                self.state = State::Rects { left: next };
                Ok(Step::Event(Event::Resize { width, height }))
            }
            ENCODING_EXTENDED_DESKTOP_SIZE => {
                let Some(count) = self.peek(16).map(|b| usize::from(b[12])) else {
                    self.state = State::Rects { left };
                    return Ok(Step::Wait);
                };
                let Some(first) = self
                    .peek(16 + 16 * count)
                    .map(|b| (count > 0).then(|| be32(&b[16..20])))
                else {
                    self.state = State::Rects { left };
                    return Ok(Step::Wait);
                };
                // x: why (0 the server, 1 this client's request, 2 another client's); y: the
                // status of a request (0 success).
                let (reason, status) = (x, y);
                self.consume(16 + 16 * count);
                self.screen = first.or(self.screen);
                self.state = State::Rects { left: next };
                if reason == 1 && status != 0 {
                    return Ok(Step::Event(Event::ResizeRefused(status)));
                }
                self.check_size(width, height)?;
                (self.width, self.height) = (width, height);
                Ok(Step::Event(Event::Resize { width, height }))
            }
            ENCODING_CURSOR => {
                let max = self.config.limits.max_cursor;
                if width > max || height > max {
                    return Err(Error::protocol(format!("a cursor of {width}×{height}")));
                }
                let (w, h) = (usize::from(width), usize::from(height));
                let mask_row = w.div_ceil(8);
                let length = w * h * BYTES_PER_PIXEL + mask_row * h;
                let Some(data) = self.peek(12 + length).map(|b| b[12..].to_vec()) else {
                    self.state = State::Rects { left };
                    return Ok(Step::Wait);
                };
                self.consume(12 + length);
                let (pixels, mask) = data.split_at(w * h * BYTES_PER_PIXEL);
                let mut rgba = Vec::with_capacity(w * h * 4);
                for (i, bgrx) in pixels.chunks_exact(BYTES_PER_PIXEL).enumerate() {
                    let (row, column) = (i / w.max(1), i % w.max(1));
                    let bit = mask
                        .get(row * mask_row + column / 8)
                        .is_some_and(|byte| byte & (0x80 >> (column % 8)) != 0);
                    rgba.extend_from_slice(&[bgrx[2], bgrx[1], bgrx[0], if bit { 255 } else { 0 }]);
                }
                self.state = State::Rects { left: next };
                Ok(Step::Event(Event::Cursor {
                    hot_x: x,
                    hot_y: y,
                    width,
                    height,
                    rgba,
                }))
            }
            ENCODING_LAST_RECT => {
                self.consume(12);
                Ok(self.next_rect(0))
            }
            _ => Err(Error::protocol(format!(
                "a rectangle in encoding {encoding}, which the client cannot decode"
            ))),
        }
    }

    /// Whether the client asked for `encoding` (Raw always: every client must take it).
    fn asked(&self, encoding: i32) -> bool {
        encoding == ENCODING_RAW
            || (self.config.encodings.contains(&encoding) && SUPPORTED.contains(&encoding))
    }

    /// A band of a Raw rectangle's rows: as many whole rows as are here, up to [`BAND`]
    /// bytes (at least one row).
    fn read_raw(
        &mut self,
        x: u16,
        y: u16,
        width: u16,
        height: u16,
        done: u16,
        left: u16,
    ) -> Result<Option<Event>, Error> {
        let row = usize::from(width) * BYTES_PER_PIXEL;
        let here = self.buffered().len() / row;
        let rows = here
            .min(usize::from(height - done))
            .min((BAND / row).max(1));
        let rows16 = u16::try_from(rows).unwrap_or(0);
        if rows16 == 0 {
            self.state = State::Raw {
                x,
                y,
                width,
                height,
                done,
                left,
            };
            return Ok(None);
        }
        let bgrx = self
            .peek(rows * row)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        self.consume(rows * row);
        let event = Event::Pixels(Pixels {
            x,
            y: y + done,
            width,
            height: rows16,
            bgrx,
        });
        if done + rows16 < height {
            self.state = State::Raw {
                x,
                y,
                width,
                height,
                done: done + rows16,
                left,
            };
        } else {
            // The next rectangle, or the update's end at the next poll.
            self.state = State::Rects { left };
        }
        Ok(Some(event))
    }

    /// Cut text: kept up to the limit, the rest read and dropped.
    fn read_cut_text(&mut self, left: u32, mut kept: Vec<u8>) -> Result<Option<Event>, Error> {
        let here = self
            .buffered()
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let room = self.config.limits.max_cut_text.saturating_sub(kept.len());
        if let Some(bytes) = self.peek(here.min(room)) {
            kept.extend_from_slice(bytes);
        }
        self.consume(here);
        let left = left - u32::try_from(here).unwrap_or(left);
        if left > 0 {
            self.state = State::CutText { left, kept };
            return Ok(None);
        }
        self.state = State::Message;
        Ok(Some(Event::CutText(kept)))
    }

    fn check_rect(&self, x: u16, y: u16, width: u16, height: u16) -> Result<(), Error> {
        if u32::from(x) + u32::from(width) > u32::from(self.width)
            || u32::from(y) + u32::from(height) > u32::from(self.height)
        {
            return Err(Error::protocol(format!(
                "a rectangle {width}×{height} at {x},{y}, outside the {}×{} framebuffer",
                self.width, self.height
            )));
        }
        Ok(())
    }
}

/// What parsing one element gave.
enum Step {
    Event(Event),
    Again,
    Wait,
}

fn be16(b: &[u8]) -> u16 {
    match b {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

fn be32(b: &[u8]) -> u32 {
    match b {
        [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

/// Latin-1 text without control characters.
fn text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| char::from(b))
        .filter(|c| !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(password: Option<&str>, allow_none: bool) -> Client {
        Client::new(Config {
            password: password.map(|p| Secret::new(p.to_owned())),
            allow_none,
            ..Config::default()
        })
    }

    /// Feeds `bytes` one at a time and gathers every event.
    fn trickle(client: &mut Client, bytes: &[u8]) -> Result<Vec<Event>, Error> {
        let mut events = Vec::new();
        for byte in bytes {
            client.feed(&[*byte])?;
            while let Some(event) = client.poll()? {
                events.push(event);
            }
        }
        Ok(events)
    }

    fn server_init(width: u16, height: u16, name: &[u8]) -> Vec<u8> {
        let mut init = Vec::new();
        init.extend_from_slice(&width.to_be_bytes());
        init.extend_from_slice(&height.to_be_bytes());
        init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        init.extend_from_slice(&u32::try_from(name.len()).unwrap_or(0).to_be_bytes());
        init.extend_from_slice(name);
        init
    }

    /// A 3.8 login with VNC authentication, up to `Connected` on a 4×2 desktop.
    fn logged_in() -> Client {
        let mut c = client(Some("secret"), false);
        assert!(trickle(&mut c, b"RFB 003.008\n").unwrap().is_empty());
        assert_eq!(c.output(), b"RFB 003.008\n");
        trickle(&mut c, &[2, 1, 2]).unwrap();
        assert_eq!(c.output(), [2], "VNC authentication, not None");
        let challenge = [7u8; 16];
        trickle(&mut c, &challenge).unwrap();
        assert_eq!(c.output(), crate::auth::response(b"secret", &challenge));
        trickle(&mut c, &[0, 0, 0, 0]).unwrap();
        assert_eq!(c.output(), [1], "ClientInit, shared");
        let events = trickle(&mut c, &server_init(4, 2, b"desk\x1b[2J")).unwrap();
        assert_eq!(
            events,
            vec![Event::Connected {
                width: 4,
                height: 2,
                name: "desk[2J".to_owned()
            }]
        );
        let output = c.output();
        assert_eq!(&output[..4], &[0, 0, 0, 0], "SetPixelFormat");
        assert_eq!(&output[20..22], &[2, 0], "SetEncodings");
        assert_eq!(
            &output[output.len() - 10..],
            &[3, 0, 0, 0, 0, 0, 0, 4, 0, 2]
        );
        c
    }

    #[test]
    fn a_login_with_a_password_and_an_update_of_every_kind() {
        let mut c = logged_in();
        let mut update = vec![0, 0, 0, 5];
        // Raw 4×2 at 0,0.
        update.extend_from_slice(&[0, 0, 0, 0, 0, 4, 0, 2, 0, 0, 0, 0]);
        update.extend((0..32).map(|i| i as u8));
        // CopyRect 2×1 from 0,0 to 2,1.
        update.extend_from_slice(&[0, 2, 0, 1, 0, 2, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
        // Cursor 2×1 with hotspot 1,0: two pixels, the mask shows the first.
        update.extend_from_slice(&[0, 1, 0, 0, 0, 2, 0, 1, 0xFF, 0xFF, 0xFF, 0x11]);
        update.extend_from_slice(&[1, 2, 3, 0, 4, 5, 6, 0, 0b1000_0000]);
        // ExtendedDesktopSize from the server: 4×2, one screen of id 9.
        update.extend_from_slice(&[0, 0, 0, 0, 0, 4, 0, 2, 0xFF, 0xFF, 0xFE, 0xCC]);
        update.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 4, 0, 2, 0, 0, 0, 0]);
        // A zero-sized Raw rectangle.
        update.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let events = trickle(&mut c, &update).unwrap();
        assert_eq!(events.len(), 6, "{events:?}");
        // One row at a time, as the bytes trickled in.
        assert_eq!(
            events[0],
            Event::Pixels(Pixels {
                x: 0,
                y: 0,
                width: 4,
                height: 1,
                bgrx: (0..16).collect()
            })
        );
        assert!(matches!(&events[1], Event::Pixels(p) if p.y == 1 && p.bgrx[0] == 16));
        assert_eq!(
            events[2],
            Event::Copy {
                src_x: 0,
                src_y: 0,
                x: 2,
                y: 1,
                width: 2,
                height: 1
            }
        );
        assert_eq!(
            events[3],
            Event::Cursor {
                hot_x: 1,
                hot_y: 0,
                width: 2,
                height: 1,
                rgba: vec![3, 2, 1, 255, 6, 5, 4, 0]
            }
        );
        assert_eq!(
            events[4],
            Event::Resize {
                width: 4,
                height: 2
            }
        );
        assert_eq!(events[5], Event::UpdateEnd);
        // SetDesktopSize names the screen the server reported.
        assert!(c.set_desktop_size(1280, 720));
        let out = c.output();
        assert_eq!(&out[..6], &[251, 0, 5, 0, 2, 208]);
        assert_eq!(&out[8..12], &[0, 0, 0, 9]);
        // Bell and cut text, then input.
        let events = trickle(&mut c, &[2, 3, 0, 0, 0, 0, 0, 0, 2, b'h', 0xE9]).unwrap();
        assert_eq!(events, vec![Event::Bell, Event::CutText(vec![b'h', 0xE9])]);
        c.key(true, 0xFF0D);
        c.pointer(1, 100, 1);
        assert_eq!(c.output(), [4, 1, 0, 0, 0, 0, 0xFF, 0x0D, 5, 1, 0, 3, 0, 1]);
    }

    #[test]
    fn raw_pixels_come_in_bands_not_whole() {
        let mut c = client(None, true);
        let mut bytes = b"RFB 003.008\n".to_vec();
        bytes.extend_from_slice(&[1, 1, 0, 0, 0, 0]);
        bytes.extend_from_slice(&server_init(1024, 768, b""));
        c.feed(&bytes).unwrap();
        assert!(matches!(c.poll(), Ok(Some(Event::Connected { .. }))));
        let mut update = vec![0, 0, 0, 1, 0, 0, 0, 0, 4, 0, 3, 0, 0, 0, 0, 0];
        update.resize(update.len() + 1024 * 768 * 4, 0xAB);
        let mut bands = 0;
        let mut rows = 0;
        for piece in update.chunks(64 * 1024) {
            c.feed(piece).unwrap();
            while let Some(event) = c.poll().unwrap() {
                if let Event::Pixels(p) = event {
                    assert!(p.bgrx.len() <= BAND);
                    bands += 1;
                    rows += usize::from(p.height);
                }
            }
            assert!(c.input.len() - c.at < 2 * 64 * 1024);
        }
        assert_eq!(rows, 768);
        assert!(bands >= 12, "{bands}");
    }

    #[test]
    fn security_follows_the_session_not_the_server() {
        // None offered, not allowed.
        let mut c = client(None, false);
        let r = trickle(&mut c, b"RFB 003.008\n\x01\x01");
        assert_eq!(r, Err(Error::NoSecurity(vec![1])));
        // A password asked for, none given.
        let mut c = client(None, true);
        assert_eq!(
            trickle(&mut c, b"RFB 003.008\n\x01\x02"),
            Err(Error::PasswordRequired)
        );
        // Both offered, a password given: VNC authentication.
        let mut c = client(Some("pw"), true);
        trickle(&mut c, b"RFB 003.008\n\x02\x01\x02").unwrap();
        assert_eq!(c.output(), b"RFB 003.008\n\x02");
        // 3.3: the server chooses; None is still refused unless allowed.
        let mut c = client(Some("pw"), false);
        assert_eq!(
            trickle(&mut c, b"RFB 003.003\n\x00\x00\x00\x01"),
            Err(Error::NoSecurity(vec![1]))
        );
        // 3.7 with None: no SecurityResult, straight to ClientInit.
        let mut c = client(None, true);
        trickle(&mut c, b"RFB 003.007\n\x01\x01").unwrap();
        assert_eq!(c.output(), b"RFB 003.007\n\x01\x01");
        // Other versions as the RFC says.
        for (server, ours) in [
            (&b"RFB 003.005\n"[..], &b"RFB 003.003\n"[..]),
            (b"RFB 003.889\n", b"RFB 003.008\n"),
            (b"RFB 004.001\n", b"RFB 003.008\n"),
        ] {
            let mut c = client(Some("pw"), false);
            trickle(&mut c, server).unwrap();
            assert_eq!(c.output(), ours);
        }
    }

    #[test]
    fn refusals_carry_the_servers_reason_cut_short() {
        let mut c = client(Some("pw"), false);
        let mut bytes = b"RFB 003.008\n\x01\x02".to_vec();
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 16]);
        bytes.extend_from_slice(b"Bad password\x07!!!");
        assert_eq!(
            trickle(&mut c, &bytes),
            Err(Error::Refused("Bad password!!!".to_owned()))
        );
        let mut c = client(Some("pw"), false);
        assert_eq!(
            trickle(&mut c, b"RFB 003.008\n\x00\x00\x00\x00\x02no"),
            Err(Error::Refused("no".to_owned()))
        );
        let mut c = client(Some("pw"), false);
        let mut bytes = b"RFB 003.007\n\x01\x02".to_vec();
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(&[0, 0, 0, 1]);
        assert_eq!(
            trickle(&mut c, &bytes),
            Err(Error::Refused("authentication failed".to_owned()))
        );
    }

    #[test]
    fn hostile_servers_end_the_connection_with_an_error() {
        let after_login = |bytes: &[u8]| {
            let mut c = logged_in();
            let result = trickle(&mut c, bytes);
            // Closed: nothing more is parsed.
            assert!(c.poll().is_err());
            result
        };
        let outside = [0, 0, 0, 1, 0, 3, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0];
        assert!(matches!(after_login(&outside), Err(Error::Protocol(m)) if m.contains("outside")));
        let copy_from_outside = [0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 9, 0, 0];
        assert!(after_login(&copy_from_outside).is_err());
        assert!(
            matches!(after_login(&[1, 0, 0, 0, 0, 1]), Err(Error::Protocol(m)) if m.contains("colour map"))
        );
        // Hextile, not asked for.
        assert!(after_login(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 5]).is_err());
        // Tight JPEG, not asked for either.
        assert!(after_login(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 7, 0x90]).is_err());
        // ZRLE: a tile that is not zlib, and a rectangle cut short.
        let not_zlib = [
            0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 16, 0, 0, 0, 2, 0xFF, 0xFF,
        ];
        assert!(matches!(after_login(&not_zlib), Err(Error::Protocol(m)) if m.contains("zlib")));
        let empty = [0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 16, 0, 0, 0, 0];
        assert!(matches!(after_login(&empty), Err(Error::Protocol(m)) if m.contains("cut short")));
        assert!(after_login(&[9]).is_err());
        let huge = [
            0, 0, 0, 1, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x21,
        ];
        assert!(matches!(after_login(&huge), Err(Error::Protocol(m)) if m.contains("desktop")));
        let big_cursor = [0, 0, 0, 1, 0, 0, 0, 0, 4, 0, 4, 0, 0xFF, 0xFF, 0xFF, 0x11];
        assert!(after_login(&big_cursor).is_err());
        assert!(after_login(&[3, 0, 0, 0, 0x80, 0, 0, 0]).is_err());
        // A billion-pixel desktop at login.
        let mut c = client(None, true);
        let mut bytes = b"RFB 003.008\n\x01\x01\x00\x00\x00\x00".to_vec();
        bytes.extend_from_slice(&server_init(40000, 30000, b""));
        assert!(trickle(&mut c, &bytes).is_err());
        // A long name.
        let mut c = client(None, true);
        let mut bytes = b"RFB 003.008\n\x01\x01\x00\x00\x00\x00".to_vec();
        bytes.extend_from_slice(&[0, 4, 0, 4]);
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(&[0x7F, 0, 0, 0]);
        assert!(trickle(&mut c, &bytes).is_err());
        // Not RFB at all.
        let mut c = client(None, true);
        assert_eq!(trickle(&mut c, b"SSH-2.0-x\r\n"), Err(Error::NotRfb));
    }

    #[test]
    fn endless_cut_text_is_kept_up_to_the_limit_and_the_rest_dropped() {
        let mut c = Client::new(Config {
            allow_none: true,
            limits: Limits {
                max_cut_text: 8,
                max_cut_text_wire: 1 << 30,
                ..Limits::default()
            },
            ..Config::default()
        });
        let mut bytes = b"RFB 003.008\n\x01\x01\x00\x00\x00\x00".to_vec();
        bytes.extend_from_slice(&server_init(4, 4, b""));
        c.feed(&bytes).unwrap();
        assert!(matches!(c.poll(), Ok(Some(Event::Connected { .. }))));
        c.feed(&[3, 0, 0, 0, 0x10, 0, 0, 0]).unwrap();
        assert_eq!(c.poll(), Ok(None));
        // 256 MiB announced and sent: 8 bytes kept, and never much more held.
        for i in 0..4096 {
            c.feed(&[b'x'; 64 * 1024]).unwrap();
            let event = c.poll();
            if i < 4095 {
                assert_eq!(event, Ok(None));
            } else {
                assert_eq!(event, Ok(Some(Event::CutText(b"xxxxxxxx".to_vec()))));
            }
            assert!(c.input.len() < 256 * 1024);
        }
        // Over the unparsed bound.
        assert!(c.feed(&vec![0; 5 << 20]).is_err());
        // Two gigabytes announced: refused at once with the default bounds.
        let mut c = client(None, true);
        let mut bytes = b"RFB 003.008\n\x01\x01\x00\x00\x00\x00".to_vec();
        bytes.extend_from_slice(&server_init(4, 4, b""));
        bytes.extend_from_slice(&[3, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF]);
        let error = trickle(&mut c, &bytes).unwrap_err();
        assert!(
            error.to_string().contains("cut text of 2147483647 bytes"),
            "{error}"
        );
    }
}
