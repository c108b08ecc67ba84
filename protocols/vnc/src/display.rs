//! The desktop as the user's client draws it: RFB's rectangles go into a framebuffer, and at
//! the end of each update what changed goes to the client as Guacamole drawing instructions.
//!
//! * Pixels and fills are drawn into the framebuffer and remembered as damage. At the end of
//!   an update ([`Framebuffer::flush`]) each damaged area is compared with what the client
//!   already shows (a second copy of the framebuffer), cut down to the rows and columns that
//!   really changed, and sent:
//!   * a single colour as `rect` + `cfill`;
//!   * a photographic area that changes often as JPEG (guacd 1.6's rule: at least 3 updates
//!     a second over at least 4096 pixels, and pixels that differ from their left neighbour
//!     more often than a fifth of the time), unless the session is lossless or the client
//!     takes no JPEG;
//!   * anything else (text, flat areas, a rare change) as PNG.
//! * A CopyRect first sends the damage so far (the copy's source must be what the server
//!   copied), then a Guacamole `copy` within the default layer.
//! * Images go on one stream at a time (`img`, `blob`s of at most [`zt_display::BLOB_CHARS`]
//!   characters, `end`), so a client that drops a stream loses one image, never a frame.
//!
//! Memory: two framebuffers of 4 bytes a pixel, bounded by [`crate::rfb::Limits`], and the
//! images of one update while they are encoded.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use zt_guac::{InstructionWriter, opcode};

use crate::rfb::Pixels;

/// The Guacamole channel mask for OVER.
const OVER: u64 = 0xE;
/// Side of a cell of the update-rate map, in pixels.
const CELL: u32 = 64;
/// Updates a cell remembers to measure its rate.
const HISTORY: usize = 5;
/// guacd 1.6: the smallest area sent as JPEG, in pixels.
const JPEG_MIN_PIXELS: u64 = 4096;
/// guacd 1.6: the least update rate (per second) of an area sent as JPEG.
const JPEG_MIN_RATE: u32 = 3;
/// Damaged rectangles remembered before they are merged into their bounding box.
const MAX_DAMAGE: usize = 64;
/// Unchanged rows that split a damaged area into two images.
const SPLIT_ROWS: u32 = 8;
/// Unchanged columns that split a band of changed rows into two images.
const SPLIT_COLUMNS: u32 = 16;
/// zlib's level for PNG images.
const PNG_LEVEL: u8 = 6;
/// The image streams used in turn.
const STREAMS: u32 = 16;
/// The tallest image sent at once (taller areas go as bands).
const MAX_IMAGE_ROWS: u32 = 256;

/// How images are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageOptions {
    /// Only lossless images (`force-lossless`).
    pub lossless: bool,
    /// Whether the client takes JPEG.
    pub jpeg: bool,
    /// JPEG quality, 1–100.
    pub jpeg_quality: u8,
    /// Red and blue swapped (`swap-red-blue`).
    pub swap_red_blue: bool,
}

impl Default for ImageOptions {
    fn default() -> Self {
        Self {
            lossless: false,
            jpeg: true,
            jpeg_quality: 90,
            swap_red_blue: false,
        }
    }
}

/// A rectangle of the framebuffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Rect {
    fn right(&self) -> u32 {
        self.x + self.width
    }

    fn bottom(&self) -> u32 {
        self.y + self.height
    }

    fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Overlapping or touching.
    fn meets(&self, other: &Self) -> bool {
        self.x <= other.right()
            && other.x <= self.right()
            && self.y <= other.bottom()
            && other.y <= self.bottom()
    }

    fn union(&self, other: &Self) -> Self {
        let (x, y) = (self.x.min(other.x), self.y.min(other.y));
        Self {
            x,
            y,
            width: self.right().max(other.right()) - x,
            height: self.bottom().max(other.bottom()) - y,
        }
    }
}

/// What a flush sent, for statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// PNG images.
    pub png: u32,
    /// JPEG images.
    pub jpeg: u32,
    /// Solid fills.
    pub fills: u32,
    /// Pixels sent as images or fills.
    pub pixels: u64,
}

/// The desktop: what the server drew, and what the client shows.
#[derive(Debug)]
pub struct Framebuffer {
    width: u32,
    height: u32,
    /// RGBA, what the server drew.
    pixels: Vec<[u8; 4]>,
    /// RGBA, what the client shows.
    shown: Vec<[u8; 4]>,
    damage: Vec<Rect>,
    /// Whether the server drew anything since the last reset (until it has, the black
    /// desktop is not sent: TigerVNC's first update is the size alone).
    drawn: bool,
    /// The last update times of each cell (milliseconds), newest first.
    heat: Vec<[u64; HISTORY]>,
    options: ImageOptions,
    stream: u32,
    sent: Sent,
}

impl Framebuffer {
    /// An empty (black) desktop of `width` × `height`, all of it to be sent.
    pub fn new(width: u16, height: u16, options: ImageOptions) -> Self {
        let mut framebuffer = Self {
            width: 0,
            height: 0,
            pixels: Vec::new(),
            shown: Vec::new(),
            damage: Vec::new(),
            drawn: false,
            heat: Vec::new(),
            options,
            stream: 0,
            sent: Sent::default(),
        };
        framebuffer.reset(width, height);
        framebuffer
    }

    fn reset(&mut self, width: u16, height: u16) {
        self.width = u32::from(width);
        self.height = u32::from(height);
        let n = usize::from(width) * usize::from(height);
        self.pixels = vec![[0, 0, 0, 255]; n];
        // Nothing is shown yet: an impossible colour makes every pixel differ.
        self.shown = vec![[0, 0, 0, 0]; n];
        self.damage.clear();
        self.drawn = false;
        let cells = (self.width.div_ceil(CELL) * self.height.div_ceil(CELL)) as usize;
        self.heat = vec![[0; HISTORY]; cells];
        if n > 0 {
            self.damage.push(Rect {
                x: 0,
                y: 0,
                width: self.width,
                height: self.height,
            });
        }
    }

    /// The size.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The pixels the server drew, RGBA, row by row.
    pub fn pixels(&self) -> &[[u8; 4]] {
        &self.pixels
    }

    /// What the flushes so far sent.
    pub fn sent(&self) -> Sent {
        self.sent
    }

    /// Whether anything waits for [`Framebuffer::flush`].
    pub fn is_damaged(&self) -> bool {
        !self.damage.is_empty()
    }

    /// A new size: the default layer's `size`, and a black desktop to be drawn again.
    pub fn resize(&mut self, width: u16, height: u16, out: &mut BytesMut) {
        self.reset(width, height);
        let mut w = InstructionWriter::new(out, opcode::SIZE);
        w.arg_u64(0)
            .arg_u64(u64::from(width))
            .arg_u64(u64::from(height));
        w.finish();
    }

    fn rgba(&self, bgrx: [u8; 4]) -> [u8; 4] {
        let [b, g, r, _] = bgrx;
        if self.options.swap_red_blue {
            [b, g, r, 255]
        } else {
            [r, g, b, 255]
        }
    }

    /// The part of a rectangle inside the framebuffer.
    fn clip(&self, x: u32, y: u32, width: u32, height: u32) -> Option<Rect> {
        let right = x.saturating_add(width).min(self.width);
        let bottom = y.saturating_add(height).min(self.height);
        (x < right && y < bottom).then(|| Rect {
            x,
            y,
            width: right - x,
            height: bottom - y,
        })
    }

    fn damage(&mut self, rect: Rect) {
        self.drawn = true;
        if let Some(last) = self.damage.last_mut()
            && last.meets(&rect)
            && last.union(&rect).area() <= last.area() + rect.area()
        {
            *last = last.union(&rect);
            return;
        }
        self.damage.push(rect);
        if self.damage.len() > MAX_DAMAGE {
            let all = self
                .damage
                .iter()
                .copied()
                .reduce(|a, b| a.union(&b))
                .unwrap_or(rect);
            self.damage = vec![all];
        }
    }

    /// Draws a band of a rectangle's pixels (the server keeps them inside the framebuffer;
    /// anything outside is dropped).
    pub fn draw(&mut self, band: &Pixels) {
        let (x, y) = (u32::from(band.x), u32::from(band.y));
        let (width, height) = (u32::from(band.width), u32::from(band.height));
        let Some(rect) = self.clip(x, y, width, height) else {
            return;
        };
        for row in 0..rect.height {
            let from = (row * width) as usize * 4;
            let to = ((rect.y + row) * self.width + rect.x) as usize;
            let Some(source) = band.bgrx.get(from..from + rect.width as usize * 4) else {
                break;
            };
            for (i, pixel) in source.chunks_exact(4).enumerate() {
                let rgba = self.rgba([pixel[0], pixel[1], pixel[2], pixel[3]]);
                if let Some(target) = self.pixels.get_mut(to + i) {
                    *target = rgba;
                }
            }
        }
        self.damage(rect);
    }

    /// Fills a rectangle with one colour.
    pub fn fill(&mut self, x: u16, y: u16, width: u16, height: u16, bgrx: [u8; 4]) {
        let Some(rect) = self.clip(x.into(), y.into(), width.into(), height.into()) else {
            return;
        };
        let rgba = self.rgba(bgrx);
        for row in rect.y..rect.bottom() {
            let start = (row * self.width + rect.x) as usize;
            if let Some(span) = self.pixels.get_mut(start..start + rect.width as usize) {
                span.fill(rgba);
            }
        }
        self.damage(rect);
    }

    /// Copies a rectangle within the framebuffer: the damage so far is sent first, then a
    /// Guacamole `copy`.
    #[allow(clippy::too_many_arguments)]
    pub fn copy(
        &mut self,
        (src_x, src_y): (u16, u16),
        (x, y): (u16, u16),
        (width, height): (u16, u16),
        now_ms: u64,
        out: &mut BytesMut,
    ) {
        let (Some(source), Some(target)) = (
            self.clip(src_x.into(), src_y.into(), width.into(), height.into()),
            self.clip(x.into(), y.into(), width.into(), height.into()),
        ) else {
            return;
        };
        let width = source.width.min(target.width);
        let height = source.height.min(target.height);
        // After the flush the client shows every pixel as the server drew it, so the copy
        // moves the same pixels on both sides.
        self.flush(now_ms, out);
        let rows: Vec<u32> = if target.y > source.y {
            (0..height).rev().collect()
        } else {
            (0..height).collect()
        };
        for row in rows {
            let from = ((source.y + row) * self.width + source.x) as usize;
            let to = ((target.y + row) * self.width + target.x) as usize;
            let n = width as usize;
            if from + n <= self.pixels.len() && to + n <= self.pixels.len() {
                self.pixels.copy_within(from..from + n, to);
                self.shown.copy_within(from..from + n, to);
            }
        }
        let mut w = InstructionWriter::new(out, opcode::COPY);
        w.arg_i64(0)
            .arg_u64(source.x.into())
            .arg_u64(source.y.into())
            .arg_u64(width.into())
            .arg_u64(height.into())
            // OVER, as guacd copies: the pixels are opaque, so they replace what is under
            // them. SRC is a canvas "copy", which clears the whole layer outside them.
            .arg_u64(OVER)
            .arg_i64(0)
            .arg_u64(target.x.into())
            .arg_u64(target.y.into());
        w.finish();
    }

    /// Sends what changed since the last flush as drawing instructions (no `sync`).
    pub fn flush(&mut self, now_ms: u64, out: &mut BytesMut) {
        if !self.drawn {
            return;
        }
        let mut damage = std::mem::take(&mut self.damage);
        merge(&mut damage);
        for rect in damage {
            for band in self.changed(rect) {
                for piece in self.columns(band) {
                    self.send(piece, now_ms, out);
                }
            }
        }
    }

    /// The parts of `rect` that differ from what the client shows: bands of changed rows
    /// (split at [`SPLIT_ROWS`] unchanged ones), each cut to its changed columns.
    fn changed(&self, rect: Rect) -> Vec<Rect> {
        let mut pieces = Vec::new();
        let mut band: Option<(u32, u32, u32, u32)> = None; // top, last changed row, left, right
        for row in rect.y..rect.bottom() {
            let start = (row * self.width + rect.x) as usize;
            let end = start + rect.width as usize;
            let (Some(now), Some(shown)) =
                (self.pixels.get(start..end), self.shown.get(start..end))
            else {
                break;
            };
            let first = now.iter().zip(shown).position(|(a, b)| a != b);
            let Some(first) = first else {
                if let Some((top, last, left, right)) = band
                    && row - last > SPLIT_ROWS
                {
                    pieces.push(rect_of(top, last, left, right));
                    band = None;
                }
                continue;
            };
            let last_col = now
                .iter()
                .zip(shown)
                .rposition(|(a, b)| a != b)
                .unwrap_or(first);
            let (left, right) = (rect.x + first as u32, rect.x + last_col as u32 + 1);
            band = Some(match band {
                Some((top, _, l, r)) if row - top < MAX_IMAGE_ROWS => {
                    (top, row, l.min(left), r.max(right))
                }
                Some((top, last, l, r)) => {
                    pieces.push(rect_of(top, last, l, r));
                    (row, row, left, right)
                }
                None => (row, row, left, right),
            });
        }
        if let Some((top, last, left, right)) = band {
            pieces.push(rect_of(top, last, left, right));
        }
        pieces
    }

    /// A band of changed rows split where [`SPLIT_COLUMNS`] or more columns in a row did
    /// not change (two windows side by side are two images, not one with the desktop
    /// between them), each cut to the rows that changed in its columns.
    fn columns(&self, band: Rect) -> Vec<Rect> {
        let mut changed = vec![false; band.width as usize];
        for row in band.y..band.bottom() {
            let start = (row * self.width + band.x) as usize;
            let end = start + band.width as usize;
            if let (Some(now), Some(shown)) =
                (self.pixels.get(start..end), self.shown.get(start..end))
            {
                for ((column, a), b) in changed.iter_mut().zip(now).zip(shown) {
                    *column |= a != b;
                }
            }
        }
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for (i, _) in changed.iter().enumerate().filter(|(_, c)| **c) {
            let x = band.x + i as u32;
            match runs.last_mut() {
                Some((_, end)) if x - *end < SPLIT_COLUMNS => *end = x + 1,
                _ => runs.push((x, x + 1)),
            }
        }
        if runs.len() <= 1 {
            return vec![band];
        }
        runs.into_iter()
            .filter_map(|(left, right)| {
                let width = right - left;
                let differs = |row: u32| {
                    let start = (row * self.width + left) as usize;
                    let end = start + width as usize;
                    self.pixels.get(start..end) != self.shown.get(start..end)
                };
                let top = (band.y..band.bottom()).find(|&row| differs(row))?;
                let bottom = (top..band.bottom()).rev().find(|&row| differs(row))?;
                Some(Rect {
                    x: left,
                    y: top,
                    width,
                    height: bottom + 1 - top,
                })
            })
            .collect()
    }

    /// Sends a changed area: its cells of one colour as fills, the rest as images (runs of
    /// cells merged along rows, then runs of the same columns down the area), as guacd 1.6
    /// plans a frame.
    fn send(&mut self, piece: Rect, now_ms: u64, out: &mut BytesMut) {
        let rate = self.touch(piece, now_ms);
        self.sent.pixels += piece.area();
        for (rect, colour) in self.plan(piece) {
            match colour {
                Some(colour) => self.fill_rect(rect, colour, out),
                None => self.image(rect, rate, out),
            }
        }
        for row in piece.y..piece.bottom() {
            let start = (row * self.width + piece.x) as usize;
            let end = start + piece.width as usize;
            if let (Some(source), Some(shown)) =
                (self.pixels.get(start..end), self.shown.get_mut(start..end))
            {
                shown.copy_from_slice(source);
            }
        }
    }

    /// The colour of every pixel of `rect`, when they have one.
    fn solid(&self, rect: Rect) -> Option<[u8; 4]> {
        let first = *self.pixels.get((rect.y * self.width + rect.x) as usize)?;
        (rect.y..rect.bottom())
            .all(|row| {
                let start = (row * self.width + rect.x) as usize;
                self.pixels
                    .get(start..start + rect.width as usize)
                    .is_some_and(|span| span.iter().all(|p| *p == first))
            })
            .then_some(first)
    }

    /// `piece` as fills and images: the screen's [`CELL`] grid inside it, cells of one
    /// colour merged with their neighbours of the same colour, the others into images.
    fn plan(&self, piece: Rect) -> Vec<(Rect, Option<[u8; 4]>)> {
        let mut done: Vec<(Rect, Option<[u8; 4]>)> = Vec::new();
        // Runs of the previous row of cells, still open downwards.
        let mut open: Vec<(Rect, Option<[u8; 4]>)> = Vec::new();
        let mut y = piece.y;
        while y < piece.bottom() {
            let bottom = ((y / CELL + 1) * CELL).min(piece.bottom());
            let mut row: Vec<(Rect, Option<[u8; 4]>)> = Vec::new();
            let mut x = piece.x;
            while x < piece.right() {
                let right = ((x / CELL + 1) * CELL).min(piece.right());
                let cell = Rect {
                    x,
                    y,
                    width: right - x,
                    height: bottom - y,
                };
                let colour = self.solid(cell);
                match row.last_mut() {
                    Some((run, kind)) if *kind == colour => run.width += cell.width,
                    _ => row.push((cell, colour)),
                }
                x = right;
            }
            let mut next = Vec::with_capacity(row.len());
            for (run, kind) in row {
                let above = open
                    .iter()
                    .position(|(o, k)| *k == kind && o.x == run.x && o.width == run.width);
                match above {
                    Some(i) => {
                        let (mut merged, kind) = open.swap_remove(i);
                        merged.height += run.height;
                        next.push((merged, kind));
                    }
                    None => next.push((run, kind)),
                }
            }
            done.append(&mut open);
            open = next;
            y = bottom;
        }
        done.append(&mut open);
        done
    }

    fn fill_rect(&mut self, rect: Rect, [r, g, b, _]: [u8; 4], out: &mut BytesMut) {
        self.sent.fills += 1;
        let mut w = InstructionWriter::new(out, opcode::RECT);
        w.arg_i64(0)
            .arg_u64(rect.x.into())
            .arg_u64(rect.y.into())
            .arg_u64(rect.width.into())
            .arg_u64(rect.height.into());
        w.finish();
        let mut w = InstructionWriter::new(out, opcode::CFILL);
        w.arg_u64(OVER)
            .arg_i64(0)
            .arg_u64(r.into())
            .arg_u64(g.into())
            .arg_u64(b.into())
            .arg_u64(255);
        w.finish();
    }

    /// Sends `rect` as an image: JPEG for a photographic area updated at least
    /// [`JPEG_MIN_RATE`] times a second (unless lossless), PNG otherwise.
    fn image(&mut self, rect: Rect, rate: u32, out: &mut BytesMut) {
        let mut image = Vec::with_capacity(rect.area() as usize);
        for row in rect.y..rect.bottom() {
            let start = (row * self.width + rect.x) as usize;
            if let Some(source) = self.pixels.get(start..start + rect.width as usize) {
                image.extend_from_slice(source);
            }
        }
        let lossy = !self.options.lossless
            && self.options.jpeg
            && rect.area() >= JPEG_MIN_PIXELS
            && rate >= JPEG_MIN_RATE
            && photographic(&image, rect.width as usize);
        let encoded = if lossy {
            jpeg(&image, rect, self.options.jpeg_quality).map(|data| ("image/jpeg", data))
        } else {
            None
        };
        let (mimetype, data) = match encoded {
            Some(encoded) => {
                self.sent.jpeg += 1;
                encoded
            }
            None => {
                self.sent.png += 1;
                ("image/png", png(&image, rect))
            }
        };
        let stream = u64::from(self.stream + 1);
        self.stream = (self.stream + 1) % STREAMS;
        let mut w = InstructionWriter::new(out, opcode::IMG);
        w.arg_u64(stream)
            .arg_u64(OVER)
            .arg_i64(0)
            .arg(mimetype)
            .arg_u64(rect.x.into())
            .arg_u64(rect.y.into());
        w.finish();
        let mut text = String::with_capacity(zt_display::BLOB_CHARS);
        for chunk in data.chunks(zt_display::BLOB_CHARS / 4 * 3) {
            text.clear();
            STANDARD.encode_string(chunk, &mut text);
            let mut w = InstructionWriter::new(out, opcode::BLOB);
            w.arg_u64(stream).arg(&text);
            w.finish();
        }
        let mut w = InstructionWriter::new(out, opcode::END);
        w.arg_u64(stream);
        w.finish();
    }

    /// Notes an update of `rect` at `now_ms`; its cells' average update rate before it, per
    /// second.
    fn touch(&mut self, rect: Rect, now_ms: u64) -> u32 {
        let columns = self.width.div_ceil(CELL);
        let (mut total, mut cells) = (0u64, 0u64);
        for cy in rect.y / CELL..rect.bottom().div_ceil(CELL) {
            for cx in rect.x / CELL..rect.right().div_ceil(CELL) {
                let Some(history) = self.heat.get_mut((cy * columns + cx) as usize) else {
                    continue;
                };
                let known = history.iter().filter(|t| **t > 0).count() as u64;
                let oldest = history.iter().rev().find(|t| **t > 0).copied();
                if let Some(oldest) = oldest
                    && now_ms > oldest
                {
                    total += known * 1000 / (now_ms - oldest);
                }
                cells += 1;
                history.rotate_right(1);
                history[0] = now_ms.max(1);
            }
        }
        u32::try_from(total / cells.max(1)).unwrap_or(u32::MAX)
    }
}

fn rect_of(top: u32, last: u32, left: u32, right: u32) -> Rect {
    Rect {
        x: left,
        y: top,
        width: right - left,
        height: last + 1 - top,
    }
}

/// Merges overlapping rectangles (touching ones too, when that costs no more area).
fn merge(rects: &mut Vec<Rect>) {
    let mut merged = true;
    while merged {
        merged = false;
        let mut i = 0;
        while i < rects.len() {
            let mut j = i + 1;
            while j < rects.len() {
                let (a, b) = (rects[i], rects[j]);
                if a.meets(&b) && a.union(&b).area() <= a.area() + b.area() {
                    rects[i] = a.union(&b);
                    rects.swap_remove(j);
                    merged = true;
                } else {
                    j += 1;
                }
            }
            i += 1;
        }
    }
}

/// guacd 1.6's test for photographic content: pixels differ from their left neighbour more
/// than a fifth of the time (`0x100 * same / different - 0x400 < 0`).
fn photographic(pixels: &[[u8; 4]], width: usize) -> bool {
    let (mut same, mut different) = (0u64, 1u64);
    for row in pixels.chunks(width.max(1)) {
        let mut last = row.first().copied().unwrap_or_default();
        for &pixel in row {
            if pixel == last {
                same += 1;
            } else {
                different += 1;
            }
            last = pixel;
        }
    }
    0x100 * same / different < 0x400
}

/// A PNG of opaque pixels: indexed when they have at most 256 colours (text, windows,
/// flat areas: a third of the bytes to deflate), RGB otherwise.
fn png(pixels: &[[u8; 4]], rect: Rect) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, rect.width, rect.height);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_deflate_compression(png::DeflateCompression::Level(PNG_LEVEL));
    let data = match palette(pixels) {
        Some((colours, indices)) => {
            // As few bits an index as the colours need, each row padded to a byte.
            let bits: u8 = match colours.len() / 3 {
                0..=2 => 1,
                3..=4 => 2,
                5..=16 => 4,
                _ => 8,
            };
            encoder.set_color(png::ColorType::Indexed);
            encoder.set_depth(match bits {
                1 => png::BitDepth::One,
                2 => png::BitDepth::Two,
                4 => png::BitDepth::Four,
                _ => png::BitDepth::Eight,
            });
            encoder.set_palette(colours);
            encoder.set_filter(png::Filter::NoFilter);
            pack(&indices, rect.width as usize, bits)
        }
        None => {
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_filter(png::Filter::Adaptive);
            pixels.iter().flat_map(|&[r, g, b, _]| [r, g, b]).collect()
        }
    };
    let written = encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&data));
    if written.is_err() {
        // Only a size of zero or a data length that does not match: neither happens here.
        out.clear();
    }
    out
}

/// Indices of `bits` bits each, packed into bytes row by row (the first pixel in the high
/// bits), each row padded to a whole byte, as PNG wants them.
fn pack(indices: &[u8], width: usize, bits: u8) -> Vec<u8> {
    if bits == 8 {
        return indices.to_vec();
    }
    let per_byte = usize::from(8 / bits);
    let mut out = Vec::with_capacity(indices.len() / per_byte + indices.len() / width.max(1) + 1);
    for row in indices.chunks(width.max(1)) {
        for group in row.chunks(per_byte) {
            let mut byte = 0u8;
            for (i, index) in group.iter().enumerate() {
                byte |= index << (8 - bits * (i as u8 + 1));
            }
            out.push(byte);
        }
    }
    out
}

/// The palette (RGB triples) and each pixel's index, when there are at most 256 colours.
fn palette(pixels: &[[u8; 4]]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut colours: std::collections::HashMap<[u8; 4], u8> = std::collections::HashMap::new();
    let mut palette = Vec::new();
    let mut indices = Vec::with_capacity(pixels.len());
    let mut last: Option<([u8; 4], u8)> = None;
    for &pixel in pixels {
        let index = match last {
            Some((colour, index)) if colour == pixel => index,
            _ => {
                let next = colours.len();
                let index = match colours.get(&pixel) {
                    Some(&index) => index,
                    None => {
                        let index = u8::try_from(next).ok()?;
                        colours.insert(pixel, index);
                        palette.extend_from_slice(&pixel[..3]);
                        index
                    }
                };
                last = Some((pixel, index));
                index
            }
        };
        indices.push(index);
    }
    Some((palette, indices))
}

fn jpeg(pixels: &[[u8; 4]], rect: Rect, quality: u8) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let encoder = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    let rgb: Vec<u8> = pixels.iter().flat_map(|&[r, g, b, _]| [r, g, b]).collect();
    encoder
        .encode(
            &rgb,
            u16::try_from(rect.width).ok()?,
            u16::try_from(rect.height).ok()?,
            jpeg_encoder::ColorType::Rgb,
        )
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instructions(out: &BytesMut) -> Vec<zt_guac::Instruction> {
        let mut decoder = zt_guac::Decoder::new(zt_guac::Limits::default());
        decoder.feed(out);
        let mut all = Vec::new();
        while let Ok(Some(i)) = decoder.poll_instruction() {
            all.push(i);
        }
        all
    }

    fn opcodes(out: &BytesMut) -> Vec<String> {
        instructions(out)
            .iter()
            .map(|i| i.opcode().to_owned())
            .collect()
    }

    fn band(width: u16, height: u16, dot: (usize, usize), colour: u8) -> Pixels {
        let mut bgrx = vec![0u8; usize::from(width) * usize::from(height) * 4];
        for (i, px) in bgrx.chunks_exact_mut(4).enumerate() {
            let (x, y) = (i % usize::from(width), i / usize::from(width));
            if (dot.0..dot.0 + 3).contains(&x) && (dot.1..dot.1 + 2).contains(&y) {
                px[0] = colour;
                px[2] = i as u8;
            }
        }
        Pixels {
            x: 0,
            y: 0,
            width,
            height,
            bgrx,
        }
    }

    #[test]
    fn cells_of_one_colour_are_fills_and_then_only_what_changed_is_sent() {
        let mut fb = Framebuffer::new(100, 50, ImageOptions::default());
        let mut out = BytesMut::new();
        // Nothing drawn yet: nothing sent (TigerVNC's first update is its size alone).
        fb.flush(1, &mut out);
        assert!(out.is_empty());
        // The first cell holds a 3×2 dot: an image; the rest of the desktop is black.
        fb.draw(&band(100, 50, (10, 20), 200));
        fb.flush(2, &mut out);
        assert_eq!(opcodes(&out), ["img", "blob", "end", "rect", "cfill"]);
        out.clear();
        // The dot moves: only the two changed places are sent, the old one black again (a
        // fill), the new one an image of itself.
        fb.draw(&band(100, 50, (40, 30), 100));
        fb.flush(3, &mut out);
        let all = instructions(&out);
        let args = |i: &zt_guac::Instruction, n: usize| -> Vec<String> {
            (0..n).map(|k| i.arg(k).unwrap().to_owned()).collect()
        };
        assert_eq!(opcodes(&out), ["rect", "cfill", "img", "blob", "end"]);
        assert_eq!(args(&all[0], 5), ["0", "10", "20", "3", "2"]);
        assert_eq!(args(&all[2], 6), ["2", "14", "0", "image/png", "40", "30"]);
        assert_eq!(fb.sent().pixels, 100 * 50 + 6 + 6);
        out.clear();
        fb.flush(4, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_copy_sends_the_damage_first_and_moves_both_copies() {
        let mut fb = Framebuffer::new(64, 64, ImageOptions::default());
        let mut out = BytesMut::new();
        fb.flush(1, &mut out);
        fb.fill(0, 0, 8, 8, [0, 0, 255, 0]);
        out.clear();
        fb.copy((0, 0), (32, 32), (8, 8), 2, &mut out);
        assert_eq!(opcodes(&out), ["img", "blob", "end", "copy"]);
        assert_eq!(fb.pixels()[32 * 64 + 32], [255, 0, 0, 255]);
        out.clear();
        fb.flush(3, &mut out);
        assert!(out.is_empty(), "the client's copy already shows it");
    }

    #[test]
    fn photographic_areas_that_change_often_go_as_jpeg_unless_lossless() {
        for lossless in [false, true] {
            let mut fb = Framebuffer::new(
                128,
                128,
                ImageOptions {
                    lossless,
                    ..ImageOptions::default()
                },
            );
            let mut out = BytesMut::new();
            for frame in 0..8u64 {
                let bgrx: Vec<u8> = (0..128 * 128 * 4)
                    .map(|i: u64| ((i * 7919 + frame * 31) % 251) as u8)
                    .collect();
                fb.draw(&Pixels {
                    x: 0,
                    y: 0,
                    width: 128,
                    height: 128,
                    bgrx,
                });
                fb.flush(1000 + frame * 100, &mut out);
            }
            assert_eq!(fb.sent().jpeg > 0, !lossless, "{:?}", fb.sent());
        }
    }

    #[test]
    fn pngs_of_any_number_of_colours_decode_to_their_pixels() {
        for colours in [1u32, 2, 3, 5, 17, 256, 300] {
            let rect = Rect {
                x: 0,
                y: 0,
                width: 13,
                height: 7,
            };
            let pixels: Vec<[u8; 4]> = (0..13 * 7u32)
                .map(|i| {
                    let c = (i * 7) % colours;
                    [c as u8, (c >> 8) as u8 * 40, 3, 255]
                })
                .collect();
            let data = png(&pixels, rect);
            let mut decoder = ::png::Decoder::new(std::io::Cursor::new(data));
            decoder.set_transformations(::png::Transformations::EXPAND);
            let mut reader = decoder.read_info().unwrap();
            let mut buf = vec![0; reader.output_buffer_size().unwrap()];
            let info = reader.next_frame(&mut buf).unwrap();
            assert_eq!(info.color_type, ::png::ColorType::Rgb, "{colours} colours");
            let decoded: Vec<[u8; 4]> = buf[..info.buffer_size()]
                .chunks(3)
                .map(|p| [p[0], p[1], p[2], 255])
                .collect();
            assert_eq!(decoded, pixels, "{colours} colours");
        }
    }
}
