//! The terminal: the state machine that joins the emulator, the renderer and the input.

use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::BytesMut;
use zt_guac::{Context, Instruction, StreamIndex, TypedInstruction};

use crate::font::{Rasteriser, Style};
use crate::keys::{self, KeyAction, KeyContext, Modifiers};
use crate::mouse::{self, MouseReport};
use crate::osc::OscLimiter;
use crate::render::{CellText, Cursor, Drawn, Geometry, KnownRow, RenderStats, Renderer};
use crate::settings::TerminalSettings;

/// The shortest time between two frames (guacd's frame duration is 40 ms).
pub const FRAME_INTERVAL: Duration = Duration::from_millis(40);
/// The largest display accepted, in pixels; larger sizes are clamped.
pub const MAX_DISPLAY: (u32, u32) = (8192, 8192);
/// The most columns and rows, whatever the display's size.
pub const MAX_GRID: (u16, u16) = (400, 200);
/// The most clipboard text kept or sent, in bytes (guacd's `GUAC_COMMON_CLIPBOARD_MAX_LENGTH`).
pub const MAX_CLIPBOARD: usize = 256 * 1024;
/// The most bytes waiting for the target; input beyond is dropped.
pub const MAX_PENDING_INPUT: usize = 1024 * 1024;
/// Rows the mouse wheel scrolls by.
const WHEEL_ROWS: usize = 3;
/// guacd's largest blob payload.
const BLOB_MAX: usize = 6048;

/// Something the driver acts on or audits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The terminal has a new size: tell the target (an SSH `window-change`, Telnet NAWS).
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// Selected text went to the client's clipboard.
    Copied {
        /// Its length in bytes.
        bytes: usize,
    },
    /// Selected text was not sent: `disable-copy`.
    CopyRefused,
    /// The client's clipboard was pasted into the terminal.
    Pasted {
        /// Its length in bytes.
        bytes: usize,
    },
    /// The client's clipboard was not taken: `disable-paste`.
    PasteRefused,
}

/// Replies the emulator owes the target (device attributes, cursor position).
#[derive(Debug, Default)]
struct Replies {
    bytes: Vec<u8>,
}

/// The most reply bytes kept; a target that asks faster than it reads loses the rest.
const MAX_REPLIES: usize = 4096;

impl vt100::Callbacks for Replies {
    fn unhandled_csi(
        &mut self,
        screen: &mut vt100::Screen,
        i1: Option<u8>,
        _i2: Option<u8>,
        params: &[&[u16]],
        c: char,
    ) {
        let first = params.first().and_then(|p| p.first()).copied().unwrap_or(0);
        let reply = match (i1, c, first) {
            // Primary device attributes: a VT100 with advanced video, as xterm's minimum.
            (None, 'c', 0) => "\x1b[?1;2c".to_owned(),
            // Secondary device attributes.
            (Some(b'>'), 'c', 0) => "\x1b[>0;276;0c".to_owned(),
            // Device status and cursor position.
            (None, 'n', 5) => "\x1b[0n".to_owned(),
            (None, 'n', 6) => {
                let (row, col) = screen.cursor_position();
                format!("\x1b[{};{}R", u32::from(row) + 1, u32::from(col) + 1)
            }
            _ => return,
        };
        if self.bytes.len() + reply.len() <= MAX_REPLIES {
            self.bytes.extend_from_slice(reply.as_bytes());
        }
    }
}

/// A clipboard stream the client is sending.
#[derive(Debug)]
struct Inbound {
    stream: StreamIndex,
    data: Vec<u8>,
}

/// A selection by the mouse, in screen cells (row, column), from where it started to where
/// the mouse is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Selection {
    from: (u16, u16),
    to: (u16, u16),
}

impl Selection {
    fn ordered(&self) -> ((u16, u16), (u16, u16)) {
        if self.from <= self.to {
            (self.from, self.to)
        } else {
            (self.to, self.from)
        }
    }

    fn contains(&self, row: u16, col: u16) -> bool {
        let (start, end) = self.ordered();
        (row, col) >= start && (row, col) <= end
    }
}

/// A terminal rendered into Guacamole instructions. See the crate docs.
pub struct Terminal {
    parser: vt100::Parser<Replies>,
    osc: OscLimiter,
    settings: TerminalSettings,
    renderer: Renderer,
    modifiers: Modifiers,
    buttons: u32,
    selection: Option<Selection>,
    /// The emulator's cells at the last frame, and the selection then (see `cells`).
    last_grid: Vec<Option<vt100::Cell>>,
    last_selection: Option<Selection>,
    selecting: bool,
    clipboard: String,
    inbound: Option<Inbound>,
    to_target: Vec<u8>,
    to_client: BytesMut,
    events: VecDeque<Event>,
    dirty: bool,
    last_frame: Option<Instant>,
    epoch: Instant,
    next_stream: u32,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("geometry", &self.renderer.geometry())
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

impl Terminal {
    /// A terminal for a client display of `width` × `height` pixels at `dpi`, created at
    /// `now`. The first [`Terminal::poll_client`] draws its empty screen.
    pub fn new(
        settings: TerminalSettings,
        width: u32,
        height: u32,
        dpi: u32,
        now: Instant,
    ) -> Self {
        let raster = Rasteriser::new(settings.font_size, dpi);
        let cell = raster.cell();
        let geometry = geometry_for(width, height, cell.width, cell.height);
        let scrollback = settings.scrollback.min(crate::settings::MAX_SCROLLBACK);
        let parser = vt100::Parser::new_with_callbacks(
            nonzero(geometry.rows),
            nonzero(geometry.cols),
            scrollback,
            Replies::default(),
        );
        let renderer = Renderer::new(raster, geometry, settings.palette.background);
        Self {
            parser,
            osc: OscLimiter::default(),
            settings,
            renderer,
            modifiers: Modifiers::default(),
            buttons: 0,
            selection: None,
            last_grid: Vec::new(),
            last_selection: None,
            selecting: false,
            clipboard: String::new(),
            inbound: None,
            to_target: Vec::new(),
            to_client: BytesMut::new(),
            events: VecDeque::new(),
            dirty: true,
            last_frame: None,
            epoch: now,
            next_stream: 1000,
        }
    }

    /// Columns and rows, and the display's size in pixels.
    pub fn geometry(&self) -> Geometry {
        self.renderer.geometry()
    }

    /// The size of a character cell in pixels.
    pub fn cell_size(&self) -> crate::font::CellSize {
        self.renderer.cell()
    }

    /// What the renderer has sent so far.
    pub fn stats(&self) -> RenderStats {
        self.renderer.stats()
    }

    /// The screen's text, rows separated by newlines (trailing blanks trimmed).
    pub fn text(&self) -> String {
        self.parser.screen().contents()
    }

    /// Output from the target.
    pub fn handle_target(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let parser = &mut self.parser;
        self.osc.filter(bytes, |chunk| parser.process(chunk));
        let replies = std::mem::take(&mut self.parser.callbacks_mut().bytes);
        self.queue_target(&replies);
        self.dirty = true;
    }

    /// An instruction from the client (after the handshake). Instructions the terminal has
    /// no use for are ignored.
    pub fn handle_client(&mut self, instruction: &Instruction) {
        let Ok(typed) = TypedInstruction::parse(instruction, Context::ClientInteractive) else {
            return;
        };
        match typed {
            TypedInstruction::Key {
                keysym, pressed, ..
            } => self.key(keysym.0, pressed),
            TypedInstruction::Mouse { x, y, buttons, .. } => self.mouse(x, y, buttons.0),
            TypedInstruction::ClientSize { width, height } => self.resize(width, height),
            TypedInstruction::Clipboard { stream, mimetype } => {
                self.inbound = mimetype.starts_with("text/").then(|| Inbound {
                    stream,
                    data: Vec::new(),
                });
            }
            TypedInstruction::Blob { stream, data } => self.clipboard_blob(stream, data),
            TypedInstruction::End { stream } => self.clipboard_end(stream),
            _ => {}
        }
    }

    /// Bytes for the target (keys, pastes, mouse reports, replies), if any.
    pub fn poll_target(&mut self) -> Option<Vec<u8>> {
        (!self.to_target.is_empty()).then(|| std::mem::take(&mut self.to_target))
    }

    /// Instructions for the client: a frame when the screen changed and the last frame is
    /// at least [`FRAME_INTERVAL`] old, and any clipboard stream.
    pub fn poll_client(&mut self, now: Instant) -> Option<BytesMut> {
        let due = self
            .last_frame
            .is_none_or(|last| now.saturating_duration_since(last) >= FRAME_INTERVAL);
        if self.dirty && due {
            self.render(now);
        }
        (!self.to_client.is_empty()).then(|| self.to_client.split())
    }

    /// When [`Terminal::poll_client`] has a frame to give, if it has one waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        Some(
            self.last_frame
                .map_or(self.epoch, |last| last + FRAME_INTERVAL),
        )
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn render(&mut self, now: Instant) {
        let (cells, known) = self.cells();
        let screen = self.parser.screen();
        let cursor = Cursor {
            at: (!screen.hide_cursor() && screen.scrollback() == 0)
                .then(|| screen.cursor_position()),
            colour: self.settings.palette.foreground,
        };
        let timestamp = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        self.renderer
            .frame_known(&cells, known, cursor, timestamp, &mut self.to_client);
        self.dirty = false;
        self.last_frame = Some(now);
    }

    /// The grid as it should look, row-major, and what is known of each row (its hash, and
    /// the row of the last frame it is a copy of).
    ///
    /// Reading every cell back from the emulator and converting it is most of a frame's cost,
    /// so a row whose emulator cells equal those of a row of the last frame — in place, or
    /// moved by the scroll the rows above it moved by — is taken from the renderer's shadow
    /// (what the last frame drew) with its hash. Only rows that really changed are converted.
    fn cells(&mut self) -> (Vec<Drawn>, Vec<KnownRow>) {
        let Geometry { cols, rows, .. } = self.renderer.geometry();
        let (cols, rows) = (usize::from(cols), usize::from(rows));
        let last = std::mem::take(&mut self.last_grid);
        let usable = last.len() == cols * rows
            && self.last_selection == self.selection
            && self.renderer.shadow_rows() == rows;
        let mut raw: Vec<Option<vt100::Cell>> = Vec::with_capacity(cols * rows);
        let mut cells = Vec::with_capacity(cols * rows);
        let mut known = Vec::with_capacity(rows);
        // The shift that matched last, tried first (a scroll moves every row by the same).
        let mut shift = 0;
        for row in 0..rows {
            let start = raw.len();
            let screen = self.parser.screen();
            for col in 0..cols {
                raw.push(screen.cell(row as u16, col as u16).cloned());
            }
            let now = raw.get(start..).unwrap_or_default();
            let reused = usable
                && [shift, 0, 1].into_iter().any(|k| {
                    let from = row + k;
                    let was = last.get(from * cols..(from + 1) * cols);
                    if from >= rows || was != Some(now) {
                        return false;
                    }
                    match self.renderer.shadow_row(from) {
                        Some((drawn, hash)) => {
                            cells.extend_from_slice(drawn);
                            known.push(KnownRow {
                                hash,
                                was: Some(from),
                            });
                            shift = k;
                            true
                        }
                        None => false,
                    }
                });
            if !reused {
                let before = cells.len();
                for (col, cell) in now.iter().enumerate() {
                    cells.push(self.drawn(cell.as_ref(), row as u16, col as u16));
                }
                known.push(KnownRow {
                    hash: self
                        .renderer
                        .row_hash(cells.get(before..).unwrap_or_default()),
                    was: None,
                });
            }
        }
        self.last_grid = raw;
        self.last_selection = self.selection;
        (cells, known)
    }

    /// How an emulator cell looks at `row`, `col`.
    fn drawn(&self, cell: Option<&vt100::Cell>, row: u16, col: u16) -> Drawn {
        let palette = &self.settings.palette;
        let Some(cell) = cell else {
            return Drawn::blank(palette.foreground, palette.background);
        };
        let mut fg_colour = cell.fgcolor();
        if let vt100::Color::Idx(i) = fg_colour
            && cell.bold()
            && i < 8
        {
            fg_colour = vt100::Color::Idx(i + 8);
        }
        let mut fg = palette.resolve(fg_colour, palette.foreground);
        let mut bg = palette.resolve(cell.bgcolor(), palette.background);
        let selected = self.selection.is_some_and(|s| s.contains(row, col));
        if cell.inverse() != selected {
            std::mem::swap(&mut fg, &mut bg);
        }
        let drawn = Drawn {
            text: if cell.is_wide_continuation() {
                CellText::default()
            } else {
                CellText::new(cell.contents())
            },
            style: Style {
                fg,
                bg,
                bold: cell.bold(),
                underline: cell.underline(),
            },
            wide: cell.is_wide(),
            continuation: cell.is_wide_continuation(),
        };
        // A blank cell shows only its background: cells that look the same compare equal.
        if drawn.shows_only_background() {
            Drawn::blank(bg, bg)
        } else {
            drawn
        }
    }

    fn queue_target(&mut self, bytes: &[u8]) {
        if self.to_target.len() + bytes.len() <= MAX_PENDING_INPUT {
            self.to_target.extend_from_slice(bytes);
        }
    }

    fn key(&mut self, keysym: u32, pressed: bool) {
        if self.modifiers.update(keysym, pressed) || !pressed || self.settings.read_only {
            return;
        }
        // Ctrl+Shift+V pastes, as in guacd.
        if self.modifiers.ctrl && self.modifiers.shift && matches!(keysym, 0x56 | 0x76) {
            self.paste();
            return;
        }
        let context = KeyContext {
            modifiers: self.modifiers,
            application_cursor: self.parser.screen().application_cursor(),
            backspace: self.settings.backspace,
        };
        match keys::press(keysym, &context) {
            KeyAction::Send(bytes) => {
                self.scroll_to_bottom();
                self.queue_target(&bytes);
            }
            KeyAction::ScrollPages(pages) => {
                let rows = usize::from(self.renderer.geometry().rows);
                self.scroll_view(pages.signum() as isize * rows as isize);
            }
            KeyAction::None => {}
        }
    }

    fn scroll_to_bottom(&mut self) {
        if self.parser.screen().scrollback() != 0 {
            self.parser.screen_mut().set_scrollback(0);
            self.dirty = true;
        }
    }

    /// Moves the view `rows` back into history (negative: forward).
    fn scroll_view(&mut self, rows: isize) {
        let screen = self.parser.screen_mut();
        let now = screen.scrollback();
        let wanted = now.saturating_add_signed(rows);
        screen.set_scrollback(wanted);
        if screen.scrollback() != now {
            self.selection = None;
            self.dirty = true;
        }
    }

    fn mouse(&mut self, x: i32, y: i32, buttons: u32) {
        let cell = self.renderer.cell();
        let Geometry { cols, rows, .. } = self.renderer.geometry();
        let col = u16::try_from((x.max(0) as u32) / cell.width)
            .unwrap_or(u16::MAX)
            .min(cols - 1);
        let row = u16::try_from((y.max(0) as u32) / cell.height)
            .unwrap_or(u16::MAX)
            .min(rows - 1);
        let pressed = buttons & !self.buttons;
        let released = self.buttons & !buttons;
        self.buttons = buttons;
        let screen = self.parser.screen();
        let mode = screen.mouse_protocol_mode();
        if mode != vt100::MouseProtocolMode::None && !self.modifiers.shift {
            if self.settings.read_only {
                return;
            }
            let report = MouseReport {
                row,
                col,
                pressed,
                released,
                held: buttons,
                modifiers: self.modifiers,
            };
            let bytes = mouse::encode(&report, mode, screen.mouse_protocol_encoding());
            self.queue_target(&bytes);
            return;
        }
        if pressed & mouse::WHEEL_UP != 0 {
            self.scroll_view(WHEEL_ROWS as isize);
        }
        if pressed & mouse::WHEEL_DOWN != 0 {
            self.scroll_view(-(WHEEL_ROWS as isize));
        }
        if pressed & mouse::MIDDLE != 0 {
            self.paste();
        }
        self.select(row, col, pressed, released, buttons);
    }

    fn select(&mut self, row: u16, col: u16, pressed: u32, released: u32, held: u32) {
        if pressed & mouse::LEFT != 0 {
            self.selection = Some(Selection {
                from: (row, col),
                to: (row, col),
            });
            self.selecting = true;
            self.dirty = true;
        } else if self.selecting
            && held & mouse::LEFT != 0
            && let Some(selection) = &mut self.selection
            && selection.to != (row, col)
        {
            selection.to = (row, col);
            self.dirty = true;
        }
        if released & mouse::LEFT != 0 && self.selecting {
            self.selecting = false;
            if let Some(selection) = &mut self.selection {
                selection.to = (row, col);
            }
            match self.selection {
                Some(s) if s.from != s.to => self.copy(s),
                _ => {
                    self.selection = None;
                    self.dirty = true;
                }
            }
        }
    }

    /// Sends the selected text to the client's clipboard.
    fn copy(&mut self, selection: Selection) {
        if self.settings.disable_copy {
            self.events.push_back(Event::CopyRefused);
            return;
        }
        let ((r0, c0), (r1, c1)) = selection.ordered();
        let mut text = self
            .parser
            .screen()
            .contents_between(r0, c0, r1, c1.saturating_add(1));
        truncate(&mut text, MAX_CLIPBOARD);
        let stream = StreamIndex(self.next_stream);
        self.next_stream = 1000 + (self.next_stream + 1 - 1000) % 1000;
        TypedInstruction::Clipboard {
            stream,
            mimetype: "text/plain",
        }
        .encode(&mut self.to_client);
        for chunk in text.as_bytes().chunks(BLOB_MAX) {
            let data = base64::engine::general_purpose::STANDARD.encode(chunk);
            TypedInstruction::Blob {
                stream,
                data: &data,
            }
            .encode(&mut self.to_client);
        }
        TypedInstruction::End { stream }.encode(&mut self.to_client);
        self.events.push_back(Event::Copied { bytes: text.len() });
    }

    fn clipboard_blob(&mut self, stream: StreamIndex, data: &str) {
        let Some(inbound) = self.inbound.as_mut().filter(|i| i.stream == stream) else {
            return;
        };
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
            self.inbound = None;
            return;
        };
        let room = MAX_CLIPBOARD.saturating_sub(inbound.data.len());
        inbound
            .data
            .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    }

    fn clipboard_end(&mut self, stream: StreamIndex) {
        if self.inbound.as_ref().is_none_or(|i| i.stream != stream) {
            return;
        }
        let Some(inbound) = self.inbound.take() else {
            return;
        };
        if self.settings.disable_paste {
            self.events.push_back(Event::PasteRefused);
            return;
        }
        self.clipboard = String::from_utf8_lossy(&inbound.data).into_owned();
    }

    /// Types the client's clipboard into the terminal, as a bracketed paste when the target
    /// asked for one.
    fn paste(&mut self) {
        if self.settings.read_only || self.clipboard.is_empty() {
            return;
        }
        if self.settings.disable_paste {
            self.events.push_back(Event::PasteRefused);
            return;
        }
        // Newlines become carriage returns (what Return sends), and no text can end the
        // bracketed paste early.
        let text = self
            .clipboard
            .replace("\r\n", "\r")
            .replace('\n', "\r")
            .replace("\x1b[201~", "");
        let bracketed = self.parser.screen().bracketed_paste();
        let mut bytes = Vec::with_capacity(text.len() + 12);
        if bracketed {
            bytes.extend_from_slice(b"\x1b[200~");
        }
        bytes.extend_from_slice(text.as_bytes());
        if bracketed {
            bytes.extend_from_slice(b"\x1b[201~");
        }
        self.scroll_to_bottom();
        self.queue_target(&bytes);
        self.events.push_back(Event::Pasted { bytes: text.len() });
    }

    fn resize(&mut self, width: u32, height: u32) {
        let cell = self.renderer.cell();
        let geometry = geometry_for(width, height, cell.width, cell.height);
        if geometry == self.renderer.geometry() {
            return;
        }
        self.parser
            .set_size(nonzero(geometry.rows), nonzero(geometry.cols));
        self.renderer.resize(geometry);
        self.selection = None;
        self.dirty = true;
        self.events.push_back(Event::Resize {
            cols: geometry.cols,
            rows: geometry.rows,
            width: geometry.width,
            height: geometry.height,
        });
    }

    /// The first event: the size the target's window should have from the start.
    pub fn initial_size(&self) -> Event {
        let g = self.renderer.geometry();
        Event::Resize {
            cols: g.cols,
            rows: g.rows,
            width: g.width,
            height: g.height,
        }
    }
}

fn geometry_for(width: u32, height: u32, cell_width: u32, cell_height: u32) -> Geometry {
    let width = width.clamp(1, MAX_DISPLAY.0);
    let height = height.clamp(1, MAX_DISPLAY.1);
    let cols = u16::try_from(width / cell_width.max(1))
        .unwrap_or(u16::MAX)
        .clamp(1, MAX_GRID.0);
    let rows = u16::try_from(height / cell_height.max(1))
        .unwrap_or(u16::MAX)
        .clamp(1, MAX_GRID.1);
    Geometry {
        cols,
        rows,
        width: width.max(u32::from(cols) * cell_width),
        height: height.max(u32::from(rows) * cell_height),
    }
}

fn nonzero(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

/// Cuts `text` to at most `max` bytes at a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}
