//! The browser's screen and the client's input, without I/O.
//!
//! * Screencast frames (PNG, the whole viewport each time) are decoded into the VNC
//!   backend's framebuffer ([`zt_vnc::display::Framebuffer`]), which sends the client only
//!   what changed since the last frame, as guacd would: fills, PNG, or JPEG for areas that
//!   change often. A frame identical to the last sends nothing but its `sync`.
//! * Pacing: a frame is acknowledged to Chromium (which sends the next one only then) when
//!   the client has answered all but one of the frames sent ([`Engine::may_ack`]): a slow
//!   client gets fewer frames, each up to date, and nothing queues up.
//! * The client's `key`, `mouse` and `size` become [`Command`]s for the driver, unless
//!   `read-only`.
//! * Clipboard: the client's `clipboard` stream (text, at most 256 KiB) is kept, and Ctrl+V
//!   types it into the page ([`Command::InsertText`]) instead of reaching the page (whose
//!   own clipboard is the browser's, empty). Ctrl+C and Ctrl+X reach the page, then
//!   [`Command::ReadSelection`] asks for what is selected (never from a password field),
//!   which goes to the client as a `clipboard` stream ([`Engine::copied`]). The connection's
//!   filter applies `disable-copy` and `disable-paste` to those streams, and audits.
//! * Address bar: every top-level URL goes to the client as a `pipe` stream named `url`
//!   ([`Engine::url_changed`]). A client's `url` pipe (at most [`MAX_URL`] bytes) becomes
//!   [`Command::Navigate`] when `allow-url-manipulation` is on (the driver checks it against
//!   the pages policy first), and is refused with `CLIENT_FORBIDDEN` otherwise.

use std::collections::VecDeque;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use zt_guac::{Context, Instruction, InstructionWriter, TypedInstruction, opcode};
use zt_vnc::display::{Framebuffer, ImageOptions};
use zt_vnc::rfb::Pixels;

use crate::input::{Input, KeyEvent, MouseEvent};

/// Frames the client may leave unanswered before Chromium waits for an acknowledgement.
const MAX_UNANSWERED: usize = 2;
/// The largest viewport side, in pixels.
pub const MAX_SIDE: u16 = 4096;
/// The largest PNG accepted from the browser, in bytes.
const MAX_FRAME_BYTES: usize = 32 << 20;

/// What the driver should tell the browser.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `Input.dispatchKeyEvent`.
    Key(KeyEvent),
    /// `Input.dispatchMouseEvent`.
    Mouse(MouseEvent),
    /// A new viewport size (`Emulation.setDeviceMetricsOverride`).
    Resize(u16, u16),
    /// Type this text (`Input.insertText`): a paste.
    InsertText(String),
    /// Read the page's selection for the client's clipboard (after Ctrl+C or Ctrl+X).
    ReadSelection,
    /// Go to this URL (typed in the client's address bar; not yet checked).
    Navigate(String),
}

/// The most clipboard text kept or sent, in bytes.
pub const MAX_CLIPBOARD: usize = 256 * 1024;
/// The first stream index of clipboard streams (images use 1–16).
const CLIPBOARD_STREAM: u64 = 64;
/// The first stream index of `url` pipes to the client.
const URL_STREAM: u64 = 80;
/// The longest URL taken from or sent to the client, in bytes.
pub const MAX_URL: usize = 8 * 1024;
/// The name of the address bar's pipe streams.
pub const URL_PIPE: &str = "url";

/// The body of an opened stream: at most `max` bytes of `text` (cut at a character), in
/// `blob`s within guacd's element size, then `end`.
fn text_stream(out: &mut BytesMut, stream: u64, text: &str, max: usize) {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut encoded = String::new();
    for chunk in text.as_bytes()[..end].chunks(zt_display::BLOB_CHARS / 4 * 3) {
        encoded.clear();
        STANDARD.encode_string(chunk, &mut encoded);
        let mut w = InstructionWriter::new(out, opcode::BLOB);
        w.arg_u64(stream).arg(&encoded);
        w.finish();
    }
    let mut w = InstructionWriter::new(out, opcode::END);
    w.arg_u64(stream);
    w.finish();
}

/// A clipboard stream arriving from the client.
#[derive(Debug)]
struct Inbound {
    stream: u32,
    data: Vec<u8>,
}

/// A frame that cannot be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Not a PNG the engine reads (8-bit RGB or RGBA), or too big.
    #[error("the browser sent a frame that is not a usable PNG")]
    Image,
}

/// The screen and input state of one session.
#[derive(Debug)]
pub struct Engine {
    framebuffer: Framebuffer,
    input: Input,
    read_only: bool,
    epoch: Instant,
    to_client: BytesMut,
    unanswered: VecDeque<u64>,
    last_timestamp: u64,
    commands: VecDeque<Command>,
    frames: u64,
    /// The client's clipboard, as last pasted into ztproxy.
    clipboard: String,
    inbound: Option<Inbound>,
    clipboard_stream: u64,
    /// `allow-url-manipulation`.
    address_bar: bool,
    /// A URL arriving from the client.
    typed_url: Option<Inbound>,
    url_stream: u64,
}

impl Engine {
    /// An engine for a `width` × `height` viewport; the client is told the size.
    pub fn new(width: u16, height: u16, jpeg: bool, read_only: bool, now: Instant) -> Self {
        let (width, height) = (width.clamp(1, MAX_SIDE), height.clamp(1, MAX_SIDE));
        let options = ImageOptions {
            jpeg,
            ..ImageOptions::default()
        };
        let mut to_client = BytesMut::new();
        let mut framebuffer = Framebuffer::new(width, height, options);
        framebuffer.resize(width, height, &mut to_client);
        Self {
            framebuffer,
            input: Input::new(),
            read_only,
            epoch: now,
            to_client,
            unanswered: VecDeque::new(),
            last_timestamp: 0,
            commands: VecDeque::new(),
            frames: 0,
            clipboard: String::new(),
            inbound: None,
            clipboard_stream: 0,
            address_bar: false,
            typed_url: None,
            url_stream: 0,
        }
    }

    /// Whether the client may type URLs (`allow-url-manipulation`; off by default).
    pub fn with_address_bar(mut self, allowed: bool) -> Self {
        self.address_bar = allowed;
        self
    }

    /// The top frame now shows `url`: the client's address bar is told.
    pub fn url_changed(&mut self, url: &str) {
        let stream = URL_STREAM + self.url_stream;
        self.url_stream = (self.url_stream + 1) % 16;
        let mut w = InstructionWriter::new(&mut self.to_client, opcode::PIPE);
        w.arg_u64(stream).arg("text/plain").arg(URL_PIPE);
        w.finish();
        text_stream(&mut self.to_client, stream, url, MAX_URL);
    }

    fn ack(&mut self, stream: u32, message: &str, status: zt_guac::Status) {
        let mut w = InstructionWriter::new(&mut self.to_client, opcode::ACK);
        w.arg_u64(u64::from(stream))
            .arg(message)
            .arg_u64(u64::from(status.code()));
        w.finish();
    }

    /// The screen as the browser last drew it (RGBA) and its size.
    pub fn framebuffer(&self) -> &Framebuffer {
        &self.framebuffer
    }

    /// Frames sent to the client.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// A screencast frame (PNG bytes).
    pub fn frame(&mut self, png: &[u8], now: Instant) -> Result<(), FrameError> {
        let (width, height, bgrx) = decode(png)?;
        if self.framebuffer.size() != (u32::from(width), u32::from(height)) {
            self.framebuffer.resize(width, height, &mut self.to_client);
        }
        self.framebuffer.draw(&Pixels {
            x: 0,
            y: 0,
            width,
            height,
            bgrx,
        });
        let ms = self.millis(now);
        self.framebuffer.flush(ms, &mut self.to_client);
        let timestamp = ms.max(self.last_timestamp + 1);
        self.last_timestamp = timestamp;
        let mut w = InstructionWriter::new(&mut self.to_client, opcode::SYNC);
        w.arg_u64(timestamp);
        w.finish();
        self.unanswered.push_back(timestamp);
        self.frames += 1;
        Ok(())
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the next frame may be asked for: the client keeps up.
    pub fn may_ack(&self) -> bool {
        self.unanswered.len() < MAX_UNANSWERED
    }

    /// An instruction from the client (after the handshake). Those the engine has no use
    /// for are ignored.
    pub fn handle_client(&mut self, instruction: &Instruction, now: Instant) {
        let Ok(typed) = TypedInstruction::parse(instruction, Context::ClientInteractive) else {
            return;
        };
        let input = !self.read_only;
        match typed {
            TypedInstruction::Sync { timestamp, .. } => {
                while self.unanswered.front().is_some_and(|t| *t <= timestamp) {
                    self.unanswered.pop_front();
                }
            }
            TypedInstruction::Key {
                keysym, pressed, ..
            } if input => {
                let ctrl = self.input.modifiers() & crate::input::modifier::CTRL != 0;
                let letter = char::from_u32(keysym.0).map(|c| c.to_ascii_lowercase());
                if ctrl && letter == Some('v') {
                    // The paste is ztproxy's: the key itself never reaches the page.
                    if pressed && !self.clipboard.is_empty() {
                        self.commands
                            .push_back(Command::InsertText(self.clipboard.clone()));
                    }
                    return;
                }
                if let Some(event) = self.input.key(keysym.0, pressed) {
                    self.commands.push_back(Command::Key(event));
                }
                if pressed && ctrl && matches!(letter, Some('c' | 'x')) {
                    self.commands.push_back(Command::ReadSelection);
                }
            }
            TypedInstruction::Clipboard { stream, mimetype } if input => {
                self.inbound = mimetype.starts_with("text/").then(|| Inbound {
                    stream: stream.0,
                    data: Vec::new(),
                });
            }
            TypedInstruction::Pipe { stream, name, .. } if name == URL_PIPE => {
                if input && self.address_bar {
                    self.typed_url = Some(Inbound {
                        stream: stream.0,
                        data: Vec::new(),
                    });
                    self.ack(stream.0, "OK", zt_guac::Status::SUCCESS);
                } else {
                    self.ack(
                        stream.0,
                        "Typing a URL is not allowed",
                        zt_guac::Status::CLIENT_FORBIDDEN,
                    );
                }
            }
            TypedInstruction::Blob { stream, data }
                if self
                    .typed_url
                    .as_ref()
                    .is_some_and(|t| t.stream == stream.0) =>
            {
                if let Some(typed) = &mut self.typed_url
                    && let Ok(bytes) = STANDARD.decode(data)
                {
                    let room = MAX_URL.saturating_sub(typed.data.len());
                    typed
                        .data
                        .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
                }
                self.ack(stream.0, "OK", zt_guac::Status::SUCCESS);
            }
            TypedInstruction::End { stream }
                if self
                    .typed_url
                    .as_ref()
                    .is_some_and(|t| t.stream == stream.0) =>
            {
                if let Some(typed) = self.typed_url.take() {
                    let url = String::from_utf8_lossy(&typed.data).trim().to_owned();
                    if !url.is_empty() {
                        self.commands.push_back(Command::Navigate(url));
                    }
                }
            }
            TypedInstruction::Blob { stream, data } => {
                if let Some(inbound) = &mut self.inbound
                    && inbound.stream == stream.0
                    && let Ok(bytes) = STANDARD.decode(data)
                {
                    let room = MAX_CLIPBOARD.saturating_sub(inbound.data.len());
                    inbound
                        .data
                        .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
                }
            }
            TypedInstruction::End { stream } => {
                if let Some(inbound) = self.inbound.take_if(|i| i.stream == stream.0) {
                    self.clipboard = String::from_utf8_lossy(&inbound.data).into_owned();
                }
            }
            TypedInstruction::Mouse { x, y, buttons, .. } if input => {
                for event in self.input.mouse(x, y, buttons.0 & 0x1F, now) {
                    self.commands.push_back(Command::Mouse(event));
                }
            }
            TypedInstruction::ClientSize { width, height } => {
                let clamp =
                    |v: u32| u16::try_from(v.clamp(1, u32::from(MAX_SIDE))).unwrap_or(MAX_SIDE);
                // Only the latest size matters.
                self.commands.retain(|c| !matches!(c, Command::Resize(..)));
                self.commands
                    .push_back(Command::Resize(clamp(width), clamp(height)));
            }
            _ => {}
        }
    }

    /// Text the page had selected when the user copied: it goes to the client as a
    /// `clipboard` stream (the connection's filter decides whether it crosses).
    pub fn copied(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let stream = CLIPBOARD_STREAM + self.clipboard_stream;
        self.clipboard_stream = (self.clipboard_stream + 1) % 16;
        let mut w = InstructionWriter::new(&mut self.to_client, opcode::CLIPBOARD);
        w.arg_u64(stream).arg("text/plain");
        w.finish();
        text_stream(&mut self.to_client, stream, text, MAX_CLIPBOARD);
    }

    /// The next command for the browser.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Bytes of drawing waiting for the client.
    pub fn backlog(&self) -> usize {
        self.to_client.len()
    }

    /// Instructions for the client, if any.
    pub fn poll_client(&mut self) -> Option<BytesMut> {
        (!self.to_client.is_empty()).then(|| self.to_client.split())
    }

    /// Adds instructions for the client (the driver's own: `error`, a clipboard).
    pub fn to_client(&mut self) -> &mut BytesMut {
        &mut self.to_client
    }
}

/// A PNG's size and pixels as the framebuffer takes them (B, G, R, X).
fn decode(png_bytes: &[u8]) -> Result<(u16, u16, Vec<u8>), FrameError> {
    if png_bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::Image);
    }
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|_| FrameError::Image)?;
    let info = reader.info();
    let (width, height) = (info.width, info.height);
    if width == 0 || height == 0 || width > u32::from(MAX_SIDE) || height > u32::from(MAX_SIDE) {
        return Err(FrameError::Image);
    }
    let size = reader.output_buffer_size().ok_or(FrameError::Image)?;
    let mut buffer = vec![0; size];
    let frame = reader
        .next_frame(&mut buffer)
        .map_err(|_| FrameError::Image)?;
    let channels = match frame.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        _ => return Err(FrameError::Image),
    };
    let pixels = (width * height) as usize;
    let mut bgrx = Vec::with_capacity(pixels * 4);
    for row in buffer[..frame.buffer_size()].chunks_exact(frame.line_size) {
        for p in row.chunks_exact(channels).take(width as usize) {
            bgrx.extend_from_slice(&[p[2], p[1], p[0], 0]);
        }
    }
    if bgrx.len() != pixels * 4 {
        return Err(FrameError::Image);
    }
    let side = |v: u32| u16::try_from(v).map_err(|_| FrameError::Image);
    Ok((side(width)?, side(height)?, bgrx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        let data: Vec<u8> = (0..width * height).flat_map(|_| rgb).collect();
        writer.write_image_data(&data).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn a_long_url_reaches_the_client_whole_in_blobs_within_the_element_size() {
        let t = Instant::now();
        let mut engine = Engine::new(64, 32, true, false, t);
        let _ = engine.poll_client();
        let url = format!("http://example.com/{}", "é".repeat(MAX_URL));
        engine.url_changed(&url);
        let mut decoder = zt_guac::Decoder::new(zt_guac::Limits::default());
        decoder.feed(&engine.poll_client().unwrap());
        let mut sent = Vec::new();
        let mut blobs = 0;
        while let Ok(Some(i)) = decoder.poll_instruction() {
            if i.is(opcode::BLOB) {
                let data = i.arg(1).unwrap();
                assert!(data.len() <= zt_display::BLOB_CHARS);
                sent.extend(STANDARD.decode(data).unwrap());
                blobs += 1;
            }
        }
        assert!(blobs > 1);
        let sent = String::from_utf8(sent).expect("cut at a character");
        assert!(
            sent.len() <= MAX_URL && url.starts_with(&sent),
            "{}",
            sent.len()
        );
    }

    #[test]
    fn an_unchanged_frame_sends_only_its_sync_and_the_client_paces_the_acks() {
        let t = Instant::now();
        let mut engine = Engine::new(64, 32, true, false, t);
        let first = engine.poll_client().unwrap();
        assert!(first.starts_with(b"4.size,1.0,2.64,2.32;"));
        engine.frame(&png(64, 32, [200, 10, 10]), t).unwrap();
        let drawn = engine.poll_client().unwrap();
        assert!(drawn.len() > 20 && drawn.ends_with(b";"));
        assert!(engine.may_ack());
        engine.frame(&png(64, 32, [200, 10, 10]), t).unwrap();
        let again = engine.poll_client().unwrap();
        assert!(again.starts_with(b"4.sync,"), "{again:?}");
        assert!(!engine.may_ack());
        let sync = Instruction::new(opcode::SYNC, &["1000000"]);
        engine.handle_client(&sync, t);
        assert!(engine.may_ack());
        // A new size comes with the frame that has it.
        engine.frame(&png(32, 16, [0, 0, 0]), t).unwrap();
        let resized = engine.poll_client().unwrap();
        assert!(resized.starts_with(b"4.size,1.0,2.32,2.16;"));
        assert!(engine.frame(b"not a png", t).is_err());
    }

    #[test]
    fn input_becomes_commands_unless_read_only_and_only_the_last_size_counts() {
        let t = Instant::now();
        let mut engine = Engine::new(64, 32, true, false, t);
        engine.handle_client(&Instruction::new(opcode::KEY, &["97", "1"]), t);
        engine.handle_client(&Instruction::new(opcode::SIZE, &["100", "50"]), t);
        engine.handle_client(&Instruction::new(opcode::SIZE, &["99999", "60"]), t);
        assert!(matches!(engine.poll_command(), Some(Command::Key(_))));
        assert_eq!(engine.poll_command(), Some(Command::Resize(MAX_SIDE, 60)));
        assert_eq!(engine.poll_command(), None);
        let mut engine = Engine::new(64, 32, true, true, t);
        engine.handle_client(&Instruction::new(opcode::KEY, &["97", "1"]), t);
        engine.handle_client(&Instruction::new(opcode::MOUSE, &["1", "1", "1"]), t);
        assert_eq!(engine.poll_command(), None);
    }
}
