//! A VNC session between a Guacamole client and an RFB server.
//!
//! * [`connect`] reaches the server (with `autoretry`), logs in and returns once the desktop
//!   is known, so a refused password ends the session before the display starts.
//! * [`Engine`] (sans-IO) turns the server's [`Event`]s into the client's drawing
//!   ([`crate::display`]) and the client's instructions into RFB messages:
//!   * `key` (X11 keysyms, as RFB's KeyEvent takes them) and `mouse` (Guacamole's button
//!     mask is RFB's: left, middle, right, wheel up, wheel down) unless `read-only`;
//!   * a `clipboard` stream from the user becomes ClientCutText (in `clipboard-encoding`,
//!     bounded) unless `read-only` or `disable-paste`; ServerCutText becomes a `clipboard`
//!     stream unless `disable-copy`;
//!   * the client's `size` becomes SetDesktopSize where the server has ExtendedDesktopSize,
//!     unless `disable-display-resize` (otherwise the client scales, as with guacd);
//!   * the server's cursor (Cursor pseudo-encoding, `cursor=local`) becomes `cursor` from a
//!     buffer.
//! * Pacing: every framebuffer update ends with a `sync`, and the next update is asked of
//!   the server only when the client's pipe has taken the last frame and the client has
//!   answered all but one of the frames sent. A slow client gets fewer frames, each with
//!   everything that changed since (RFB's incremental updates coalesce on the server), and
//!   nothing queues up.
//! * [`run`] drives it over a TCP connection and the connection's pipe until the server
//!   closes, the client leaves, the server breaks the protocol, or the session is stopped
//!   (which closes the RFB connection at once).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use zt_guac::{
    Context, Decoder, Instruction, InstructionWriter, Limits, Status, TypedInstruction, opcode,
};

use crate::display::{Framebuffer, ImageOptions};
use crate::error::Error;
use crate::rfb::{self, Client, Config, Event};
use crate::settings::{CursorMode, VncSettings};

/// Bytes read at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Frames the client may leave unanswered before no more are asked of the server.
const MAX_UNANSWERED: usize = 2;
/// The most clipboard text taken from the user (decoded bytes); the connection's
/// `clipboard-buffer-size` usually cuts it sooner.
const MAX_CLIPBOARD: usize = 256 * 1024;
/// The most bytes waiting to go to the server (input is dropped beyond it).
const MAX_TO_TARGET: usize = 1 << 20;
/// Drawing waiting for the client beyond which the server is not read.
const MAX_BACKLOG: usize = 16 << 20;
/// The buffer the cursor is drawn in.
const CURSOR_LAYER: i64 = -1;
/// The first stream index of clipboard streams (images use 1–16).
const CLIPBOARD_STREAM: u64 = 64;
/// How long the client gets to hear why the session ended.
const LAST_WORDS: Duration = Duration::from_secs(1);
/// How long the pipe stays open after a stop, for the proxy's own farewell.
const STOPPED_GRACE: Duration = Duration::from_secs(2);

/// Why the connection could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The server could not be reached.
    #[error("the VNC server cannot be reached ({0:?})")]
    Unreachable(std::io::ErrorKind),
    /// The connection or the login took too long.
    #[error("the VNC server did not answer within {0:?}")]
    Timeout(Duration),
    /// The server refused the login, or broke the protocol during it.
    #[error(transparent)]
    Rfb(#[from] Error),
}

impl ConnectError {
    /// The Guacamole status the client hears (guacd's).
    pub fn status(&self) -> Status {
        match self {
            Self::Unreachable(_) => Status::UPSTREAM_NOT_FOUND,
            Self::Timeout(_) => Status::UPSTREAM_TIMEOUT,
            Self::Rfb(Error::Refused(_) | Error::PasswordRequired) => Status::CLIENT_UNAUTHORIZED,
            Self::Rfb(_) => Status::UPSTREAM_ERROR,
        }
    }

    /// What the user is told, in words (no server text, never the password).
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "The VNC server cannot be reached",
            Self::Timeout(_) => "The VNC server did not answer in time",
            Self::Rfb(Error::Refused(_) | Error::PasswordRequired) => "VNC authentication failed",
            Self::Rfb(_) => "The VNC server could not be used",
        }
    }
}

/// A logged-in RFB connection.
pub struct Connection {
    stream: TcpStream,
    client: Client,
    /// The desktop's width.
    pub width: u16,
    /// The desktop's height.
    pub height: u16,
    /// The desktop's name.
    pub name: String,
    /// Bytes received so far.
    pub bytes_from_target: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

/// The RFB configuration of `settings`: its encodings, then the pseudo-encodings.
pub fn config(settings: &VncSettings) -> Config {
    let mut encodings = settings.encodings.clone();
    if settings.cursor == CursorMode::Local {
        encodings.push(rfb::ENCODING_CURSOR);
    }
    encodings.extend([
        rfb::ENCODING_EXTENDED_DESKTOP_SIZE,
        rfb::ENCODING_DESKTOP_SIZE,
        rfb::ENCODING_LAST_RECT,
    ]);
    Config {
        password: settings.password.clone(),
        allow_none: settings.password.is_none(),
        encodings,
        ..Config::default()
    }
}

/// Connects to `host`:`port` and logs in, within the settings' timeout (retrying an
/// unreachable server `autoretry` times, a second apart).
pub async fn connect(
    host: &str,
    port: u16,
    settings: &VncSettings,
) -> Result<Connection, ConnectError> {
    let mut attempt = 0;
    loop {
        match tokio::time::timeout(settings.timeout, login(host, port, settings)).await {
            Ok(Err(ConnectError::Unreachable(_))) if attempt < settings.retries => {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(result) => return result,
            Err(_) => return Err(ConnectError::Timeout(settings.timeout)),
        }
    }
}

async fn login(host: &str, port: u16, settings: &VncSettings) -> Result<Connection, ConnectError> {
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| ConnectError::Unreachable(e.kind()))?;
    let _ = stream.set_nodelay(true);
    let mut client = Client::new(config(settings));
    let mut buf = vec![0u8; READ_CHUNK];
    let mut bytes_from_target = 0;
    loop {
        while let Some(event) = client.poll()? {
            if let Event::Connected {
                width,
                height,
                name,
            } = event
            {
                // SetPixelFormat, SetEncodings and the first request go with the rest.
                return Ok(Connection {
                    stream,
                    client,
                    width,
                    height,
                    name,
                    bytes_from_target,
                });
            }
        }
        let output = client.output();
        if !output.is_empty() {
            stream
                .write_all(&output)
                .await
                .map_err(|e| ConnectError::Unreachable(e.kind()))?;
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| ConnectError::Unreachable(e.kind()))?;
        if n == 0 {
            return Err(
                Error::protocol("nothing more: it closed the connection during the login").into(),
            );
        }
        bytes_from_target += n as u64;
        client.feed(buf.get(..n).unwrap_or_default())?;
    }
}

/// What the engine reports to the driver's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// The server's clipboard went to the user (characters).
    Copied(usize),
    /// The user's clipboard went to the server (characters).
    Pasted(usize),
    /// The server refused the client's size (ExtendedDesktopSize status).
    ResizeRefused(u16),
    /// The desktop has a new size.
    Resized(u16, u16),
}

/// An inbound clipboard stream.
#[derive(Debug)]
struct Inbound {
    stream: u32,
    data: Vec<u8>,
}

/// The session without I/O: RFB events in, drawing out; client instructions in, RFB out.
#[derive(Debug)]
pub struct Engine {
    client: Client,
    settings: VncSettings,
    framebuffer: Framebuffer,
    epoch: Instant,
    to_client: BytesMut,
    /// Timestamps of frames the client has not answered, oldest first.
    unanswered: VecDeque<u64>,
    last_timestamp: u64,
    waiting: bool,
    /// The size the client asked for, until the server has taken it.
    wanted: Option<(u16, u16)>,
    inbound: Option<Inbound>,
    clipboard_stream: u64,
    /// The cursor last sent (hotspot, size, pixels): servers repeat it.
    cursor: Option<(u16, u16, u16, u16, Vec<u8>)>,
    notices: VecDeque<Notice>,
    frames: u64,
}

impl Engine {
    /// The engine of a logged-in connection, for a client that takes JPEG when `jpeg`.
    /// The client is told the desktop's name and size.
    pub fn new(
        client: Client,
        (width, height): (u16, u16),
        name: &str,
        settings: VncSettings,
        jpeg: bool,
        now: Instant,
    ) -> Self {
        let options = ImageOptions {
            lossless: settings.force_lossless,
            jpeg,
            swap_red_blue: settings.swap_red_blue,
            ..ImageOptions::default()
        };
        let mut to_client = BytesMut::new();
        if !name.is_empty() {
            zt_guac::encode(opcode::NAME, &[name], &mut to_client);
        }
        let mut framebuffer = Framebuffer::new(width, height, options);
        framebuffer.resize(width, height, &mut to_client);
        Self {
            client,
            settings,
            framebuffer,
            epoch: now,
            to_client,
            unanswered: VecDeque::new(),
            last_timestamp: 0,
            // The connection's first request went out with the login.
            waiting: true,
            wanted: None,
            inbound: None,
            clipboard_stream: 0,
            cursor: None,
            notices: VecDeque::new(),
            frames: 0,
        }
    }

    /// The desktop the server drew (RGBA), and its size.
    pub fn framebuffer(&self) -> &Framebuffer {
        &self.framebuffer
    }

    /// Frames sent.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes from the server.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), Error> {
        self.client.feed(data)
    }

    /// Acts on everything the server sent so far.
    pub fn process(&mut self, now: Instant) -> Result<(), Error> {
        while let Some(event) = self.client.poll()? {
            self.handle_event(event, now);
        }
        Ok(())
    }

    fn timestamp(&mut self, now: Instant) -> u64 {
        let ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        self.last_timestamp = ms.max(self.last_timestamp + 1);
        self.last_timestamp
    }

    fn handle_event(&mut self, event: Event, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        match event {
            Event::Pixels(band) => self.framebuffer.draw(&band),
            Event::Fill {
                x,
                y,
                width,
                height,
                bgrx,
            } => self.framebuffer.fill(x, y, width, height, bgrx),
            Event::Copy {
                src_x,
                src_y,
                x,
                y,
                width,
                height,
            } => self.framebuffer.copy(
                (src_x, src_y),
                (x, y),
                (width, height),
                ms,
                &mut self.to_client,
            ),
            Event::Resize { width, height } => {
                // TigerVNC repeats the size in answer to a full request: nothing changed.
                // A new size comes with the whole desktop (the server's content follows in
                // this update or the next incremental one; asking for a full update instead
                // gets TigerVNC's size alone, again).
                if self.framebuffer.size() != (width.into(), height.into()) {
                    self.framebuffer.resize(width, height, &mut self.to_client);
                }
                if self.wanted == Some((width, height)) {
                    self.wanted = None;
                }
                self.notices.push_back(Notice::Resized(width, height));
            }
            Event::ResizeRefused(status) => {
                self.wanted = None;
                self.notices.push_back(Notice::ResizeRefused(status));
            }
            Event::Cursor {
                hot_x,
                hot_y,
                width,
                height,
                rgba,
            } => self.cursor(hot_x, hot_y, width, height, &rgba),
            Event::UpdateEnd => {
                self.framebuffer.flush(ms, &mut self.to_client);
                let timestamp = self.timestamp(now);
                let mut w = InstructionWriter::new(&mut self.to_client, opcode::SYNC);
                w.arg_u64(timestamp);
                w.finish();
                self.unanswered.push_back(timestamp);
                self.frames += 1;
                self.waiting = false;
            }
            Event::CutText(latin1) => {
                if !self.settings.disable_copy {
                    let text = self.settings.clipboard_encoding.decode(&latin1);
                    self.clipboard(&text);
                    self.notices.push_back(Notice::Copied(text.chars().count()));
                }
            }
            Event::Connected { .. } | Event::Bell => {}
        }
    }

    fn cursor(&mut self, hot_x: u16, hot_y: u16, width: u16, height: u16, rgba: &[u8]) {
        let shape = (hot_x, hot_y, width, height, rgba.to_vec());
        if self.cursor.as_ref() == Some(&shape) {
            return;
        }
        self.cursor = Some(shape);
        let out = &mut self.to_client;
        let (width, height) = (width.max(1), height.max(1));
        let mut pixels: Vec<[u8; 4]> = rgba
            .chunks_exact(4)
            .map(|p| [p[0], p[1], p[2], p[3]])
            .collect();
        pixels.resize(usize::from(width) * usize::from(height), [0; 4]);
        let mut w = InstructionWriter::new(out, opcode::SIZE);
        w.arg_i64(CURSOR_LAYER)
            .arg_u64(width.into())
            .arg_u64(height.into());
        w.finish();
        // SRC: the new image replaces the old one, transparent pixels included.
        let mut w = InstructionWriter::new(out, opcode::RECT);
        w.arg_i64(CURSOR_LAYER)
            .arg_u64(0)
            .arg_u64(0)
            .arg_u64(width.into())
            .arg_u64(height.into());
        w.finish();
        let mut w = InstructionWriter::new(out, opcode::CFILL);
        w.arg_u64(0xC)
            .arg_i64(CURSOR_LAYER)
            .arg_u64(0)
            .arg_u64(0)
            .arg_u64(0)
            .arg_u64(0);
        w.finish();
        let image = zt_display::Image {
            width: width.into(),
            height: height.into(),
            pixels: &pixels,
        };
        zt_display::encode_image(out, 0, CURSOR_LAYER as i32, (0, 0), &image);
        let mut w = InstructionWriter::new(out, opcode::CURSOR);
        w.arg_u64(hot_x.into())
            .arg_u64(hot_y.into())
            .arg_i64(CURSOR_LAYER)
            .arg_u64(0)
            .arg_u64(0)
            .arg_u64(width.into())
            .arg_u64(height.into());
        w.finish();
    }

    fn clipboard(&mut self, text: &str) {
        let stream = CLIPBOARD_STREAM + self.clipboard_stream;
        self.clipboard_stream = (self.clipboard_stream + 1) % 16;
        let out = &mut self.to_client;
        let mut w = InstructionWriter::new(out, opcode::CLIPBOARD);
        w.arg_u64(stream).arg("text/plain");
        w.finish();
        let mut encoded = String::new();
        for chunk in text.as_bytes().chunks(zt_display::BLOB_CHARS / 4 * 3) {
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

    /// An instruction from the client (after the handshake). Those the engine has no use
    /// for are ignored.
    pub fn handle_client(&mut self, instruction: &Instruction) {
        let Ok(typed) = TypedInstruction::parse(instruction, Context::ClientInteractive) else {
            return;
        };
        let input = !self.settings.read_only;
        match typed {
            TypedInstruction::Sync { timestamp, .. } => {
                while self.unanswered.front().is_some_and(|t| *t <= timestamp) {
                    self.unanswered.pop_front();
                }
            }
            TypedInstruction::Key {
                keysym, pressed, ..
            } if input => self.client.key(pressed, keysym.0),
            TypedInstruction::Mouse { x, y, buttons, .. } if input => {
                let clamp = |v: i32| u16::try_from(v.max(0)).unwrap_or(u16::MAX);
                self.client
                    .pointer((buttons.0 & 0x1F) as u8, clamp(x), clamp(y));
            }
            TypedInstruction::ClientSize { width, height } => self.resize(width, height),
            TypedInstruction::Clipboard { stream, mimetype }
                if input && !self.settings.disable_paste =>
            {
                self.inbound = mimetype.starts_with("text/").then(|| Inbound {
                    stream: stream.0,
                    data: Vec::new(),
                });
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
                    let text = String::from_utf8_lossy(&inbound.data);
                    let bytes = self.settings.clipboard_encoding.encode(&text);
                    self.client.cut_text(&bytes);
                    self.notices.push_back(Notice::Pasted(text.chars().count()));
                }
            }
            _ => {}
        }
    }

    /// Asks the server for the client's size (where it can change it).
    fn resize(&mut self, width: u32, height: u32) {
        if self.settings.disable_display_resize {
            return;
        }
        // Within what the client accepts from a server (rfb::Limits): a bigger desktop would
        // end the session.
        let limits = rfb::Limits::default();
        let clamp = |v: u32, max: u16| u16::try_from(v.clamp(1, u32::from(max))).unwrap_or(max);
        let side = limits.max_side;
        let tallest = u16::try_from(limits.max_pixels / u32::from(side)).unwrap_or(side);
        let size = (clamp(width, side), clamp(height, tallest.min(side)));
        if self.framebuffer.size() == (size.0.into(), size.1.into()) {
            return;
        }
        if self.client.set_desktop_size(size.0, size.1) {
            self.wanted = Some(size);
        }
    }

    /// Asks the server for the next update, when the client keeps up: the last frame has
    /// left (`drained`) and no more than one is unanswered.
    pub fn poll_request(&mut self, drained: bool) {
        if self.waiting || !drained || self.unanswered.len() >= MAX_UNANSWERED {
            return;
        }
        let (width, height) = self.client.size();
        self.client.request_update(true, 0, 0, width, height);
        self.waiting = true;
    }

    /// Bytes for the server.
    pub fn poll_target(&mut self) -> Vec<u8> {
        self.client.output()
    }

    /// Bytes of drawing waiting for the client.
    pub fn backlog(&self) -> usize {
        self.to_client.len()
    }

    /// Instructions for the client, if any.
    pub fn poll_client(&mut self) -> Option<BytesMut> {
        (!self.to_client.is_empty()).then(|| self.to_client.split())
    }

    /// The next notice for the owner.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }
}

/// How a session ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndedBy {
    /// The server closed the connection.
    Target,
    /// The client left (its pipe closed, or it said `disconnect`).
    Client,
    /// The session was stopped.
    Stopped,
    /// The server broke the protocol or a bound, or the connection failed.
    Failed(Error),
}

/// What [`run`] reports.
#[derive(Debug)]
pub struct SessionEnd {
    /// Why it ended.
    pub ended_by: EndedBy,
    /// Bytes the server sent (the login included).
    pub bytes_from_target: u64,
    /// Bytes sent to the server.
    pub bytes_to_target: u64,
    /// Frames sent to the client.
    pub frames: u64,
}

/// Runs a logged-in connection against the connection's pipe (the client's instructions in,
/// drawing out) until it ends; `notice` hears what the engine reports. The RFB connection is
/// closed when this returns.
pub async fn run<P>(
    connection: Connection,
    pipe: P,
    settings: VncSettings,
    jpeg: bool,
    mut notice: impl FnMut(Notice) + Send,
    stop: CancellationToken,
) -> SessionEnd
where
    P: AsyncRead + AsyncWrite + Unpin,
{
    let Connection {
        stream,
        client,
        width,
        height,
        name,
        bytes_from_target,
    } = connection;
    let mut engine = Engine::new(
        client,
        (width, height),
        &name,
        settings,
        jpeg,
        Instant::now(),
    );
    let (mut target_reader, mut target_writer) = stream.into_split();
    let (mut reader, mut writer) = tokio::io::split(pipe);
    let mut decoder = Decoder::new(Limits::default());
    let mut end = SessionEnd {
        ended_by: EndedBy::Target,
        bytes_from_target,
        bytes_to_target: 0,
        frames: 0,
    };
    let mut received = BytesMut::with_capacity(READ_CHUNK);
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut to_target: Vec<u8> = Vec::new();
    let mut out = BytesMut::new();
    end.ended_by = loop {
        if let Err(error) = engine.process(Instant::now()) {
            break EndedBy::Failed(error);
        }
        while let Some(n) = engine.poll_notice() {
            notice(n);
        }
        if out.is_empty()
            && let Some(frame) = engine.poll_client()
        {
            out = frame;
        }
        engine.poll_request(out.is_empty());
        let bytes = engine.poll_target();
        if to_target.len() + bytes.len() <= MAX_TO_TARGET {
            to_target.extend_from_slice(&bytes);
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => break EndedBy::Stopped,
            // Updates come only when asked for; a server that sends them anyway waits while
            // the client is behind.
            read = target_reader.read_buf(&mut received), if engine.backlog() < MAX_BACKLOG => match read {
                Ok(0) => break EndedBy::Target,
                Err(error) => break EndedBy::Failed(Error::protocol(format!("nothing more: the connection failed ({:?})", error.kind()))),
                Ok(n) => {
                    end.bytes_from_target += n as u64;
                    let fed = engine.feed(&received);
                    received.clear();
                    if let Err(error) = fed {
                        break EndedBy::Failed(error);
                    }
                }
            },
            written = target_writer.write(&to_target), if !to_target.is_empty() => match written {
                Ok(0) => break EndedBy::Target,
                Err(_) => break EndedBy::Target,
                Ok(n) => {
                    end.bytes_to_target += n as u64;
                    to_target.drain(..n);
                }
            },
            read = reader.read_buf(&mut input) => match read {
                Ok(0) | Err(_) => break EndedBy::Client,
                Ok(_) => {
                    decoder.feed(&input);
                    input.clear();
                    if !decoder.drain_until_disconnect(|i| engine.handle_client(i)) {
                        break EndedBy::Client;
                    }
                }
            },
            written = writer.write(&out), if !out.is_empty() => match written {
                Ok(0) | Err(_) => break EndedBy::Client,
                Ok(n) => out.advance(n),
            },
        }
    };
    // The connection closes the pipe when the session is stopped: that is the stop.
    if matches!(end.ended_by, EndedBy::Client) && stop.is_cancelled() {
        end.ended_by = EndedBy::Stopped;
    }
    end.frames = engine.frames();
    // The connection to the server closes now, whatever the pipe does.
    drop(target_reader);
    drop(target_writer);
    match &end.ended_by {
        EndedBy::Failed(error) => {
            let mut farewell = std::mem::take(&mut out);
            zt_guac::encode(
                opcode::ERROR,
                &[
                    "The VNC server sent something the client cannot take",
                    &Status::UPSTREAM_ERROR.code().to_string(),
                ],
                &mut farewell,
            );
            tracing::warn!(%error, "the VNC connection failed");
            let _ = tokio::time::timeout(LAST_WORDS, writer.write_all(&farewell)).await;
        }
        EndedBy::Stopped => {
            // The proxy tells the client why the session ended; the pipe stays open until it
            // has, so the client never hears "the target closed" instead.
            let _ = tokio::time::timeout(STOPPED_GRACE, async {
                let mut sink = [0; 4096];
                while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        EndedBy::Target | EndedBy::Client => {}
    }
    let _ = writer.shutdown().await;
    end
}
