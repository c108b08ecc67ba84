//! The renderer: a grid of cells in, the Guacamole instructions that change what the client
//! shows into it, out.
//!
//! It keeps a copy of what the client's display shows (the *shadow*) and sends only the
//! difference, in this order of preference:
//!
//! 1. **Scrolling** is one `copy` of the moved rows within the display layer, found by
//!    comparing row hashes of the new grid with the shadow's (both directions, the longest run
//!    of moved rows that are not already right).
//! 2. **Blank cells** (a space or nothing, no underline) are `rect` + `cfill`, one per run of
//!    equal background in a row.
//! 3. **Glyphs** are drawn by `copy` from a *glyph atlas*, an off-screen buffer (layer `-1`)
//!    into which each distinct (text, colours, weight) cell is rasterised once. Cells that sit
//!    side by side on the screen and in the atlas are one `copy`. Glyphs new to the atlas in
//!    a frame are allocated side by side and sent as one PNG per atlas row (`img` + `blob` +
//!    `end`), before the copies that use them. A word seen a second time is composed in the
//!    atlas and costs one `copy` from then on. When the atlas is full it starts again from
//!    its first slot: what the client already shows stays, as `copy` copies pixels.
//! 4. **Strips**: a row of fresh text (a login banner, a file shown for the first time)
//!    costs less as pixels than as a `copy` a glyph, so when the estimate says so (see
//!    `strip_span`) the row's changed span is rasterised side by side into the atlas and
//!    drawn with one `copy` per piece; its glyphs and words are remembered where the strip
//!    put them.
//!
//! Images are indexed PNGs where they have at most 256 colours (always, for text: coverage is
//! kept in 16 levels, so a glyph in one pair of colours is a 4-bit PNG).
//!
//! The text cursor is its own small layer (`1`), a translucent block the renderer `move`s and
//! `shade`s, so moving it redraws no cell.
//!
//! Every frame ends with `sync`. Pixels are opaque and drawn with OVER (channel mask `0xE`),
//! as guacd draws: the HTML canvas's SRC would also clear what is outside the drawing.

use std::hash::{BuildHasher as _, Hash, Hasher};
use std::ops::Range;

use foldhash::{HashMap, HashSet};

use base64::Engine as _;
use bytes::BytesMut;
use zt_guac::{ChannelMask, InstructionWriter, LayerIndex, StreamIndex, TypedInstruction};

use crate::font::{CellSize, Rasteriser, Style};
use crate::palette::Rgb;

/// The display layer.
pub const DISPLAY: LayerIndex = LayerIndex(0);
/// The glyph atlas.
pub const ATLAS: LayerIndex = LayerIndex(-1);
/// The text cursor.
pub const CURSOR: LayerIndex = LayerIndex(1);

/// Glyph slots per atlas row, and atlas rows.
const ATLAS_COLUMNS: u32 = 64;
const ATLAS_ROWS: u32 = 32;
/// guacd's largest blob payload (`GUAC_PROTOCOL_BLOB_MAX_LENGTH`), in bytes before base64.
const BLOB_MAX: usize = 6048;
/// Words remembered as seen once, before the memory starts again.
const SEEN_WORDS: usize = 4096;
/// OVER.
const OVER: ChannelMask = ChannelMask(0xE);
/// What drawing costs on the wire, about, for choosing between glyphs and strips (measured
/// on the Debian login banner at 12 pt and 96 DPI): a `copy`; a new glyph's share of an
/// upload (a 4-bit indexed PNG, base64); a `rect` + `cfill`; a cell of text in a strip and a
/// blank one (a strip compresses repeated glyphs: 28 PNG bytes a cell of text); and a strip
/// piece's `img`, `blob`, `end` and `copy`.
const COPY_BYTES: usize = 52;
const GLYPH_BYTES: usize = 60;
const FILL_BYTES: usize = 60;
const STRIP_TEXT_BYTES: usize = 38;
const STRIP_BLANK_BYTES: usize = 3;
const STRIP_PIECE_BYTES: usize = 130;
/// The shortest strip piece put at the end of an atlas row (shorter: the next row).
const MIN_STRIP_PIECE: usize = 8;
/// The cursor's opacity, of 255.
const CURSOR_ALPHA: u8 = 160;

/// The text of one cell: a character and its combining marks, inline (as vt100 keeps it):
/// up to 23 bytes of UTF-8, and its length in the last byte (24 bytes in all, so comparing
/// two is three word compares, not a call to `memcmp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CellText {
    bytes: [u8; 24],
}

/// Bytes of text a cell holds.
const CELL_TEXT_MAX: usize = 23;

impl CellText {
    /// `text`, cut at a character boundary to fit.
    pub fn new(text: &str) -> Self {
        let mut cell = Self::default();
        let mut len = text.len().min(CELL_TEXT_MAX);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        if let (Some(to), Some(from)) = (cell.bytes.get_mut(..len), text.as_bytes().get(..len)) {
            to.copy_from_slice(from);
        }
        if let Some(last) = cell.bytes.last_mut() {
            *last = len as u8;
        }
        cell
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        let len = usize::from(self.bytes.last().copied().unwrap_or(0));
        let bytes = self.bytes.get(..len).unwrap_or_default();
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    /// Nothing is drawn for it but its background.
    pub fn is_blank(&self) -> bool {
        matches!(self.as_str(), "" | " ")
    }
}

/// One cell as it should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drawn {
    /// What is written in it.
    pub text: CellText,
    /// How.
    pub style: Style,
    /// A wide character: it covers this cell and the next.
    pub wide: bool,
    /// The right half of a wide character (drawn with its left half).
    pub continuation: bool,
}

impl Hash for Drawn {
    /// Four words instead of a dozen small writes: grids are hashed row by row every frame.
    fn hash<H: Hasher>(&self, state: &mut H) {
        for chunk in self.text.bytes.as_chunks::<8>().0 {
            state.write_u64(u64::from_le_bytes(*chunk));
        }
        let Style {
            fg,
            bg,
            bold,
            underline,
        } = self.style;
        let flags = u8::from(bold)
            | u8::from(underline) << 1
            | u8::from(self.wide) << 2
            | u8::from(self.continuation) << 3;
        state.write_u64(u64::from_le_bytes([
            fg.0, fg.1, fg.2, bg.0, bg.1, bg.2, flags, 0,
        ]));
    }
}

impl Drawn {
    /// An empty cell of background `bg`.
    pub fn blank(fg: Rgb, bg: Rgb) -> Self {
        Self {
            text: CellText::default(),
            style: Style {
                fg,
                bg,
                bold: false,
                underline: false,
            },
            wide: false,
            continuation: false,
        }
    }

    fn is_blank(&self) -> bool {
        self.shows_only_background()
    }

    /// Nothing is drawn in it but its background (no text, no underline, not half of a
    /// wide character).
    pub fn shows_only_background(&self) -> bool {
        self.text.is_blank() && !self.style.underline && !self.continuation
    }
}

/// What a caller of [`Renderer::frame_known`] knows of a row of the new grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownRow {
    /// Its [`Renderer::row_hash`].
    pub hash: u64,
    /// The row of the shadow (the last frame's grid) it is an exact copy of.
    pub was: Option<usize>,
}

/// Where the text cursor is and how it looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Row and column, or `None` when hidden.
    pub at: Option<(u16, u16)>,
    /// Its colour.
    pub colour: Rgb,
}

/// What the renderer has sent, for benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderStats {
    /// Frames rendered.
    pub frames: u64,
    /// Glyphs rasterised into the atlas.
    pub glyphs: u64,
    /// Rows moved by one `copy`.
    pub scrolls: u64,
}

/// The geometry of the display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Columns and rows of cells.
    pub cols: u16,
    /// Rows of cells.
    pub rows: u16,
    /// The display layer's size in pixels (at least the cells').
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// See the module docs.
#[derive(Debug)]
pub struct Renderer {
    raster: Rasteriser,
    cell: CellSize,
    geometry: Geometry,
    background: Rgb,
    shadow: Vec<Drawn>,
    /// The shadow's row hashes, kept from the last frame.
    shadow_hashes: Vec<u64>,
    /// Hashes rows (seeded per renderer: a target cannot aim for collisions it could
    /// predict, and a collision is caught anyway before it is used).
    hasher: foldhash::fast::RandomState,
    /// The whole display must be drawn again (new, or resized).
    invalid: bool,
    atlas: HashMap<Drawn, (u32, u32)>,
    /// Words composed in the atlas, and words seen once (composed when seen again).
    words: HashMap<Box<[Drawn]>, (u32, u32)>,
    seen: HashSet<Box<[Drawn]>>,
    next_slot: u32,
    cursor_shown: Option<(u16, u16)>,
    cursor_colour: Option<Rgb>,
    next_stream: u32,
    stats: RenderStats,
}

/// A frame being written: glyphs to upload, then the drawing that uses them.
#[derive(Default)]
struct Frame {
    pending: Vec<Pending>,
    draw: BytesMut,
}

/// A glyph to rasterise into atlas slot `slot`.
struct Pending {
    slot: u32,
    drawn: Drawn,
}

/// A `copy` being merged with its neighbours.
#[derive(Clone, Copy)]
struct Blit {
    src_x: u32,
    src_y: u32,
    width: u32,
    dst_x: u32,
    dst_y: u32,
}

impl Renderer {
    /// A renderer for `geometry` with rasteriser `raster`; the display's background is
    /// `background`.
    pub fn new(raster: Rasteriser, geometry: Geometry, background: Rgb) -> Self {
        let cell = raster.cell();
        Self {
            raster,
            cell,
            geometry,
            background,
            shadow: Vec::new(),
            shadow_hashes: Vec::new(),
            hasher: foldhash::fast::RandomState::default(),
            invalid: true,
            atlas: HashMap::default(),
            words: HashMap::default(),
            seen: HashSet::default(),
            next_slot: 0,
            cursor_shown: None,
            cursor_colour: None,
            next_stream: 0,
            stats: RenderStats::default(),
        }
    }

    /// A row's hash, as the shadow keeps them.
    pub fn row_hash(&self, row: &[Drawn]) -> u64 {
        self.hasher.hash_one(row)
    }

    /// What the client shows in `row` (as of the last frame), with its hash.
    pub fn shadow_row(&self, row: usize) -> Option<(&[Drawn], u64)> {
        let cols = usize::from(self.geometry.cols);
        Some((
            self.shadow.get(row * cols..(row + 1) * cols)?,
            *self.shadow_hashes.get(row)?,
        ))
    }

    /// Rows of the shadow whose hashes are known (0 before a frame, or after a redraw).
    pub fn shadow_rows(&self) -> usize {
        self.shadow_hashes.len()
    }

    /// The cell size.
    pub fn cell(&self) -> CellSize {
        self.cell
    }

    /// The geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// What was sent so far.
    pub fn stats(&self) -> RenderStats {
        self.stats
    }

    /// Changes the geometry; the next frame draws everything.
    pub fn resize(&mut self, geometry: Geometry) {
        if geometry != self.geometry {
            self.geometry = geometry;
            self.invalid = true;
        }
    }

    /// A server-side stream index for an image.
    fn stream(&mut self) -> StreamIndex {
        let index = self.next_stream;
        self.next_stream = (self.next_stream + 1) % 256;
        StreamIndex(index)
    }

    /// Writes the instructions that make the client show `cells` (row-major,
    /// `cols × rows` of the geometry) and `cursor`, ending with `sync` at `timestamp`.
    pub fn frame(&mut self, cells: &[Drawn], cursor: Cursor, timestamp: u64, out: &mut BytesMut) {
        let cols = usize::from(self.geometry.cols).max(1);
        let rows = cells
            .chunks(cols)
            .map(|row| KnownRow {
                hash: self.row_hash(row),
                was: None,
            })
            .collect();
        self.frame_known(cells, rows, cursor, timestamp, out);
    }

    /// [`Renderer::frame`], with what the caller knows of each row: its
    /// [`Renderer::row_hash`], and which row of the shadow it is a copy of, if it is one.
    pub fn frame_known(
        &mut self,
        cells: &[Drawn],
        known: Vec<KnownRow>,
        cursor: Cursor,
        timestamp: u64,
        out: &mut BytesMut,
    ) {
        let Geometry { cols, rows, .. } = self.geometry;
        let count = usize::from(cols) * usize::from(rows);
        let blank = Drawn::blank(self.background, self.background);
        let cells = cells.get(..count).unwrap_or(cells);
        if self.invalid {
            self.redraw_all(out);
        }
        self.shadow.resize(count, blank);
        let mut frame = Frame::default();
        let (hashes, moved) = self.scroll(cells, known, &mut frame.draw);
        for row in 0..rows {
            // Rows the scroll moved are already right (compared when it was decided).
            if !moved.contains(&usize::from(row)) {
                self.diff_row(cells, row, &mut frame, out);
            }
        }
        // The shadow now shows `cells`.
        self.shadow_hashes = hashes;
        self.flush(&mut frame, out);
        self.place_cursor(cursor, out);
        TypedInstruction::Sync {
            timestamp,
            frames: None,
        }
        .encode(out);
        self.stats.frames += 1;
    }

    fn redraw_all(&mut self, out: &mut BytesMut) {
        let Geometry { width, height, .. } = self.geometry;
        let (w, h) = (to_i32(width), to_i32(height));
        layer_size(DISPLAY, w, h, out);
        fill(DISPLAY, (0, 0, w, h), self.background, out);
        layer_size(
            ATLAS,
            to_i32(ATLAS_COLUMNS * self.cell.width),
            to_i32(ATLAS_ROWS * self.cell.height),
            out,
        );
        layer_size(
            CURSOR,
            to_i32(self.cell.width),
            to_i32(self.cell.height),
            out,
        );
        self.shadow.clear();
        self.shadow_hashes.clear();
        self.cursor_shown = None;
        self.cursor_colour = None;
        self.invalid = false;
    }

    /// Moves rows that moved with one `copy`. Returns the new grid's row hashes (the shadow's
    /// once the frame is drawn) and the rows moved into place.
    fn scroll(
        &mut self,
        cells: &[Drawn],
        known: Vec<KnownRow>,
        out: &mut BytesMut,
    ) -> (Vec<u64>, Range<usize>) {
        let rows = usize::from(self.geometry.rows);
        let cols = usize::from(self.geometry.cols);
        let new: Vec<u64> = known.iter().map(|row| row.hash).collect();
        if cols == 0 || rows < 2 || new.len() != rows {
            return (new, 0..0);
        }
        // The shadow's hashes are the last frame's grid's, unless it was redrawn since.
        let old = match std::mem::take(&mut self.shadow_hashes) {
            old if old.len() == rows => old,
            _ => self
                .shadow
                .chunks(cols)
                .map(|r| self.hasher.hash_one(r))
                .collect(),
        };
        let blank = self
            .hasher
            .hash_one(vec![Drawn::blank(self.background, self.background); cols].as_slice());
        // (benefit, first destination row, length, shift): a positive shift moves rows up.
        let mut best: Option<(usize, usize, usize, isize)> = None;
        for shift in 1..rows as isize {
            for direction in [1, -1] {
                let k = shift * direction;
                let mut run_start = None;
                let mut benefit = 0;
                for i in 0..=rows {
                    let source = i as isize + k;
                    let moved = i < rows
                        && (0..rows as isize).contains(&source)
                        && new.get(i) == old.get(source as usize);
                    if moved {
                        if run_start.is_none() {
                            run_start = Some(i);
                            benefit = 0;
                        }
                        if new.get(i) != old.get(i) && new.get(i) != Some(&blank) {
                            benefit += 1;
                        }
                    } else if let Some(start) = run_start.take()
                        && benefit > 0
                        && best.is_none_or(|b| benefit > b.0)
                    {
                        best = Some((benefit, start, i - start, k));
                    }
                }
            }
        }
        let Some((_, start, len, k)) = best else {
            return (new, 0..0);
        };
        let source = (start as isize + k) as usize;
        // Equal hashes are not proof (a target can aim for a collision): the rows must be,
        // unless they are known copies of the very rows they are moved from.
        let span = |from: usize| from * cols..(from + len) * cols;
        let row_span = |from: usize| from * cols..(from + 1) * cols;
        let equal = (0..len).all(|i| {
            known.get(start + i).and_then(|row| row.was) == Some(source + i)
                || cells.get(row_span(start + i)) == self.shadow.get(row_span(source + i))
        });
        if !equal {
            return (new, 0..0);
        }
        let (cw, ch) = (self.cell.width, self.cell.height);
        TypedInstruction::Copy {
            src_layer: DISPLAY,
            src_x: 0,
            src_y: to_i32(source as u32 * ch),
            width: to_i32(cols as u32 * cw),
            height: to_i32(len as u32 * ch),
            mask: OVER,
            dst_layer: DISPLAY,
            dst_x: 0,
            dst_y: to_i32(start as u32 * ch),
        }
        .encode(out);
        // Both spans were just compared with the grid, so they are in the shadow.
        if self.shadow.get(span(source)).is_some() && self.shadow.get(span(start)).is_some() {
            self.shadow.copy_within(span(source), start * cols);
        }
        self.stats.scrolls += len as u64;
        (new, start..start + len)
    }

    /// Draws the cells of `row` that differ from the shadow.
    fn diff_row(&mut self, cells: &[Drawn], row: u16, frame: &mut Frame, out: &mut BytesMut) {
        let cols = usize::from(self.geometry.cols);
        let base = usize::from(row) * cols;
        let y = u32::from(row) * self.cell.height;
        let Some(want_row) = cells.get(base..base + cols) else {
            return;
        };
        if self.shadow.get(base..base + cols) == Some(want_row) {
            return;
        }
        if let Some(span) = self.strip_span(want_row, base) {
            self.draw_strip(want_row, span, base, y, frame, out);
            return;
        }
        let changed = |shadow: &[Drawn], col: usize| -> bool {
            let Some(want) = want_row.get(col) else {
                return false;
            };
            let width = if want.wide && col + 1 < cols { 2 } else { 1 };
            (col..col + width).any(|c| want_row.get(c) != shadow.get(base + c))
        };
        let mut fill_run: Option<(usize, usize, Rgb)> = None;
        let mut blit: Option<Blit> = None;
        let mut col = 0;
        while let Some(&want) = want_row.get(col) {
            if want.continuation || !changed(&self.shadow, col) {
                flush_fill(&mut fill_run, y, self.cell, &mut frame.draw);
                col += 1;
                continue;
            }
            if want.is_blank() {
                match &mut fill_run {
                    Some((_, end, bg)) if *bg == want.style.bg && *end == col => *end = col + 1,
                    _ => {
                        flush_fill(&mut fill_run, y, self.cell, &mut frame.draw);
                        fill_run = Some((col, col + 1, want.style.bg));
                    }
                }
                self.set_shadow(base + col, std::slice::from_ref(&want));
                col += 1;
                continue;
            }
            flush_fill(&mut fill_run, y, self.cell, &mut frame.draw);
            // A word: changed, non-blank cells side by side.
            let mut end = col;
            while let Some(cell) = want_row.get(end) {
                if end > col
                    && (cell.is_blank() || (!cell.continuation && !changed(&self.shadow, end)))
                {
                    break;
                }
                end += 1;
            }
            let word = want_row.get(col..end).unwrap_or_default();
            self.draw_word(word, col as u32, y, &mut blit, frame, out);
            self.set_shadow(base + col, word);
            col = end;
        }
        flush_fill(&mut fill_run, y, self.cell, &mut frame.draw);
        flush_blit(&mut blit, self.cell.height, &mut frame.draw);
        // Past the last column: only the background, drawn at a full redraw.
    }

    /// The span of `row`'s changed cells, when drawing it as one strip of the atlas costs
    /// fewer bytes than drawing it glyph by glyph (see [`STRIP_TEXT_BYTES`]).
    ///
    /// Glyph by glyph, a word costs a `copy` per glyph until it is composed in the atlas
    /// (the second time it is seen), and a glyph new to the atlas its upload; fresh text —
    /// a login banner, a file printed for the first time — costs more that way than as
    /// pixels. A strip is the span's cells rasterised side by side into the atlas (one
    /// indexed PNG per atlas row, where repeated glyphs compress) and drawn with one `copy`
    /// per piece; the glyphs in it are remembered where they are, so they are reused later.
    fn strip_span(&self, row: &[Drawn], base: usize) -> Option<Range<usize>> {
        let changed = |col: usize| row.get(col) != self.shadow.get(base + col);
        let mut first = (0..row.len()).find(|&c| changed(c))?;
        let mut end = (0..row.len()).rposition(&changed)? + 1;
        while first > 0 && row.get(first).is_some_and(|c| c.continuation) {
            first -= 1;
        }
        while row.get(end).is_some_and(|c| c.continuation) {
            end += 1;
        }
        let span = row.get(first..end)?;
        // Glyph by glyph.
        let mut glyph_cost = 0;
        let mut new_glyphs: Vec<Drawn> = Vec::new();
        let mut col = first;
        while col < end {
            let Some(cell) = row.get(col) else { break };
            if !changed(col) || cell.continuation {
                col += 1;
                continue;
            }
            if cell.is_blank() {
                glyph_cost += FILL_BYTES;
                while row.get(col).is_some_and(|c| c.is_blank()) && changed(col) {
                    col += 1;
                }
                continue;
            }
            let start = col;
            while row
                .get(col)
                .is_some_and(|c| !c.is_blank() && (changed(col) || c.continuation))
            {
                col += 1;
            }
            let word = row.get(start..col).unwrap_or_default();
            if self.words.contains_key(word) {
                glyph_cost += COPY_BYTES;
                continue;
            }
            for (i, glyph) in word.iter().enumerate().filter(|(_, c)| !c.continuation) {
                glyph_cost += COPY_BYTES;
                let width = if word.get(i + 1).is_some_and(|c| c.continuation) {
                    2
                } else {
                    1
                };
                let key = atlas_key(*glyph, width);
                if !self.atlas.contains_key(&key) && !new_glyphs.contains(&key) {
                    new_glyphs.push(key);
                    glyph_cost += GLYPH_BYTES;
                }
            }
        }
        // As a strip.
        let text = span.iter().filter(|c| !c.is_blank()).count();
        let pieces = span.len().div_ceil(ATLAS_COLUMNS as usize) + 1;
        let strip_cost = text * STRIP_TEXT_BYTES
            + (span.len() - text) * STRIP_BLANK_BYTES
            + pieces * STRIP_PIECE_BYTES;
        (strip_cost < glyph_cost).then_some(first..end)
    }

    /// Draws `span` of `row` as a strip of the atlas (see [`Renderer::strip_span`]).
    fn draw_strip(
        &mut self,
        row: &[Drawn],
        span: Range<usize>,
        base: usize,
        y: u32,
        frame: &mut Frame,
        out: &mut BytesMut,
    ) {
        let (cw, ch) = (self.cell.width, self.cell.height);
        let mut blit: Option<Blit> = None;
        let mut col = span.start;
        while col < span.end {
            let room = (ATLAS_COLUMNS - self.next_slot % ATLAS_COLUMNS) as usize;
            let mut len = (span.end - col).min(room);
            // A wide glyph is not cut between two pieces.
            if len > 1 && row.get(col + len).is_some_and(|c| c.continuation) && col + len < span.end
            {
                len -= 1;
            }
            if len < (span.end - col).min(MIN_STRIP_PIECE) {
                // Too little room left in this atlas row: start the next one.
                self.next_slot += room as u32;
                if self.next_slot >= ATLAS_COLUMNS * ATLAS_ROWS {
                    self.restart_atlas(&mut blit, frame, out);
                }
                continue;
            }
            if self.next_slot as usize + len > (ATLAS_COLUMNS * ATLAS_ROWS) as usize {
                self.restart_atlas(&mut blit, frame, out);
                continue;
            }
            let first = self.next_slot;
            self.next_slot += len as u32;
            let position = |slot: u32| ((slot % ATLAS_COLUMNS) * cw, (slot / ATLAS_COLUMNS) * ch);
            for i in 0..len {
                let Some(&cell) = row.get(col + i) else { break };
                if cell.continuation {
                    continue;
                }
                let width = if row.get(col + i + 1).is_some_and(|c| c.continuation) {
                    2
                } else {
                    1
                };
                let key = atlas_key(cell, width);
                let slot = first + i as u32;
                if !cell.is_blank() && !self.atlas.contains_key(&key) {
                    self.atlas.insert(key, position(slot));
                    self.stats.glyphs += 1;
                }
                frame.pending.push(Pending { slot, drawn: key });
            }
            // Its words too: next time each is one `copy`.
            let piece = row.get(col..col + len).unwrap_or_default();
            let mut i = 0;
            while i < piece.len() {
                let start = i;
                while piece.get(i).is_some_and(|c| !c.is_blank()) {
                    i += 1;
                }
                let word = piece.get(start..i).unwrap_or_default();
                if word.iter().filter(|c| !c.continuation).count() >= 2
                    && !self.words.contains_key(word)
                {
                    self.words
                        .insert(word.into(), position(first + start as u32));
                }
                i += 1;
            }
            let (src_x, src_y) = position(first);
            let next = Blit {
                src_x,
                src_y,
                width: len as u32 * cw,
                dst_x: col as u32 * cw,
                dst_y: y,
            };
            push_blit(&mut blit, next, ch, &mut frame.draw);
            col += len;
        }
        flush_blit(&mut blit, ch, &mut frame.draw);
        let cells = row.get(span.clone()).unwrap_or_default();
        self.set_shadow(base + span.start, cells);
    }

    fn set_shadow(&mut self, at: usize, cells: &[Drawn]) {
        if let Some(target) = self.shadow.get_mut(at..at + cells.len()) {
            target.copy_from_slice(cells);
        }
    }

    /// Draws `word` (cells, with the right halves of wide ones) at column `col`: one `copy`
    /// when the atlas holds the word, else glyph by glyph. A word seen a second time is
    /// composed in the atlas (from the glyphs there, by `copy` within it, and any new
    /// glyphs), so from then on it costs one `copy`.
    fn draw_word(
        &mut self,
        word: &[Drawn],
        col: u32,
        y: u32,
        blit: &mut Option<Blit>,
        frame: &mut Frame,
        out: &mut BytesMut,
    ) {
        let (cw, ch) = (self.cell.width, self.cell.height);
        let cells = word.len() as u32;
        let glyphs = word.iter().filter(|c| !c.continuation).count();
        if glyphs >= 2 && cells <= ATLAS_COLUMNS {
            // Looked up by slice: a word is copied into a key only when it is remembered.
            let at = match self.words.get(word) {
                Some(&at) => Some(at),
                None if self.seen.contains(word) => {
                    Some(self.compose(word.into(), blit, frame, out))
                }
                None => {
                    if self.seen.len() >= SEEN_WORDS {
                        self.seen.clear();
                    }
                    self.seen.insert(word.into());
                    None
                }
            };
            if let Some((sx, sy)) = at {
                let next = Blit {
                    src_x: sx,
                    src_y: sy,
                    width: cells * cw,
                    dst_x: col * cw,
                    dst_y: y,
                };
                push_blit(blit, next, ch, &mut frame.draw);
                return;
            }
        }
        let mut i = 0;
        while let Some(&cell) = word.get(i) {
            let width = if word.get(i + 1).is_some_and(|c| c.continuation) {
                2
            } else {
                1
            };
            if !cell.continuation {
                let (sx, sy) = self.glyph(cell, width, blit, frame, out);
                let next = Blit {
                    src_x: sx,
                    src_y: sy,
                    width: width * cw,
                    dst_x: (col + i as u32) * cw,
                    dst_y: y,
                };
                push_blit(blit, next, ch, &mut frame.draw);
            }
            i += width as usize;
        }
    }

    /// The atlas position of a glyph, making room first if the atlas is full.
    fn glyph(
        &mut self,
        cell: Drawn,
        width: u32,
        blit: &mut Option<Blit>,
        frame: &mut Frame,
        out: &mut BytesMut,
    ) -> (u32, u32) {
        if !self.atlas.contains_key(&atlas_key(cell, width)) && self.atlas_is_full(width) {
            self.restart_atlas(blit, frame, out);
        }
        self.slot_for(cell, width, &mut frame.pending)
    }

    /// Empties the atlas. Copies from it must run before its slots are reused: the frame so
    /// far is written first.
    fn restart_atlas(&mut self, blit: &mut Option<Blit>, frame: &mut Frame, out: &mut BytesMut) {
        flush_blit(blit, self.cell.height, &mut frame.draw);
        self.flush(frame, out);
        self.atlas.clear();
        self.words.clear();
        self.next_slot = 0;
    }

    /// Builds `word` in consecutive atlas slots of one atlas row; returns where.
    fn compose(
        &mut self,
        word: Box<[Drawn]>,
        blit: &mut Option<Blit>,
        frame: &mut Frame,
        out: &mut BytesMut,
    ) -> (u32, u32) {
        let cells = word.len() as u32;
        let (cw, ch) = (self.cell.width, self.cell.height);
        let room_in_row = ATLAS_COLUMNS - self.next_slot % ATLAS_COLUMNS;
        let skip = if room_in_row < cells { room_in_row } else { 0 };
        if self.next_slot + skip + cells > ATLAS_COLUMNS * ATLAS_ROWS {
            self.restart_atlas(blit, frame, out);
        } else {
            self.next_slot += skip;
        }
        let first = self.next_slot;
        self.next_slot += cells;
        let position = |slot: u32| ((slot % ATLAS_COLUMNS) * cw, (slot / ATLAS_COLUMNS) * ch);
        let mut inner: Option<Blit> = None;
        let mut i = 0;
        while let Some(&cell) = word.get(i) {
            let width = if word.get(i + 1).is_some_and(|c| c.continuation) {
                2
            } else {
                1
            };
            let key = atlas_key(cell, width);
            let (dx, dy) = position(first + i as u32);
            match self.atlas.get(&key) {
                Some(&(sx, sy)) => {
                    let next = Blit {
                        src_x: sx,
                        src_y: sy,
                        width: width * cw,
                        dst_x: dx,
                        dst_y: dy,
                    };
                    push_copy(&mut inner, next, WITHIN_ATLAS, ch, &mut frame.draw);
                }
                None => {
                    self.atlas.insert(key, (dx, dy));
                    frame.pending.push(Pending {
                        slot: first + i as u32,
                        drawn: key,
                    });
                    self.stats.glyphs += 1;
                }
            }
            i += width as usize;
        }
        flush_copy(&mut inner, WITHIN_ATLAS, ch, &mut frame.draw);
        let at = position(first);
        self.words.insert(word, at);
        at
    }

    /// The atlas position of `drawn`'s glyph, allocating a slot (queued in `pending`) when it
    /// is new.
    fn slot_for(&mut self, drawn: Drawn, width: u32, pending: &mut Vec<Pending>) -> (u32, u32) {
        let key = atlas_key(drawn, width);
        if let Some(&at) = self.atlas.get(&key) {
            return at;
        }
        if width == 2 && self.next_slot % ATLAS_COLUMNS == ATLAS_COLUMNS - 1 {
            self.next_slot += 1;
        }
        let slot = self.next_slot;
        self.next_slot += width;
        let at = (
            (slot % ATLAS_COLUMNS) * self.cell.width,
            (slot / ATLAS_COLUMNS) * self.cell.height,
        );
        self.atlas.insert(key, at);
        pending.push(Pending { slot, drawn: key });
        self.stats.glyphs += 1;
        at
    }

    /// No room for a glyph `width` cells wide.
    fn atlas_is_full(&self, width: u32) -> bool {
        let skip = u32::from(width == 2 && self.next_slot % ATLAS_COLUMNS == ATLAS_COLUMNS - 1);
        self.next_slot + skip + width > ATLAS_COLUMNS * ATLAS_ROWS
    }

    /// Writes the frame so far: its new glyphs, then what it draws.
    fn flush(&mut self, frame: &mut Frame, out: &mut BytesMut) {
        let pending = std::mem::take(&mut frame.pending);
        self.upload(&pending, out);
        out.extend_from_slice(&frame.draw);
        frame.draw.clear();
    }

    /// Sends the glyphs of `pending`, one PNG per run of adjacent slots in an atlas row.
    fn upload(&mut self, pending: &[Pending], out: &mut BytesMut) {
        let mut i = 0;
        while let Some(first) = pending.get(i) {
            let row = first.slot / ATLAS_COLUMNS;
            let mut end = i + 1;
            let mut next_slot = first.slot + if first.drawn.wide { 2 } else { 1 };
            while let Some(p) = pending.get(end) {
                if p.slot != next_slot || p.slot / ATLAS_COLUMNS != row {
                    break;
                }
                next_slot += if p.drawn.wide { 2 } else { 1 };
                end += 1;
            }
            let run = pending.get(i..end).unwrap_or_default();
            self.upload_run(first.slot, next_slot - first.slot, run, out);
            i = end;
        }
    }

    fn upload_run(&mut self, first_slot: u32, slots: u32, run: &[Pending], out: &mut BytesMut) {
        let (cw, ch) = (self.cell.width, self.cell.height);
        let stride = (slots * cw) as usize;
        let mut rgb = vec![0u8; stride * ch as usize * 3];
        for p in run {
            let x0 = ((p.slot - first_slot) * cw) as usize;
            let cells = if p.drawn.wide { 2 } else { 1 };
            self.raster.draw(
                p.drawn.text.as_str(),
                &p.drawn.style,
                cells,
                &mut rgb,
                stride,
                x0,
            );
        }
        let Some(png) = encode_png(&rgb, stride as u32, ch) else {
            return;
        };
        let stream = self.stream();
        TypedInstruction::Img {
            stream,
            mask: OVER,
            layer: ATLAS,
            mimetype: "image/png",
            x: to_i32((first_slot % ATLAS_COLUMNS) * cw),
            y: to_i32((first_slot / ATLAS_COLUMNS) * ch),
        }
        .encode(out);
        for chunk in png.chunks(BLOB_MAX) {
            let data = base64::engine::general_purpose::STANDARD.encode(chunk);
            TypedInstruction::Blob {
                stream,
                data: &data,
            }
            .encode(out);
        }
        TypedInstruction::End { stream }.encode(out);
    }

    fn place_cursor(&mut self, cursor: Cursor, out: &mut BytesMut) {
        if self.cursor_colour != Some(cursor.colour) {
            let (w, h) = (to_i32(self.cell.width), to_i32(self.cell.height));
            fill(CURSOR, (0, 0, w, h), cursor.colour, out);
            self.cursor_colour = Some(cursor.colour);
        }
        if cursor.at == self.cursor_shown {
            return;
        }
        match cursor.at {
            Some((row, col)) => {
                let x = u32::from(col) * self.cell.width;
                let y = u32::from(row) * self.cell.height;
                let mut w = InstructionWriter::new(out, "move");
                w.arg_i64(i64::from(CURSOR.0))
                    .arg_i64(i64::from(DISPLAY.0))
                    .arg_u64(u64::from(x))
                    .arg_u64(u64::from(y))
                    .arg_u64(0);
                w.finish();
                if self.cursor_shown.is_none() {
                    shade(CURSOR, CURSOR_ALPHA, out);
                }
            }
            None => shade(CURSOR, 0, out),
        }
        self.cursor_shown = cursor.at;
    }
}

/// What a glyph is cached as.
fn atlas_key(drawn: Drawn, width: u32) -> Drawn {
    Drawn {
        continuation: false,
        wide: width == 2,
        ..drawn
    }
}

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn layer_size(layer: LayerIndex, width: i32, height: i32, out: &mut BytesMut) {
    TypedInstruction::LayerSize {
        layer,
        width,
        height,
    }
    .encode(out);
}

fn fill(
    layer: LayerIndex,
    (x, y, width, height): (i32, i32, i32, i32),
    colour: Rgb,
    out: &mut BytesMut,
) {
    TypedInstruction::Rect {
        layer,
        x,
        y,
        width,
        height,
    }
    .encode(out);
    let Rgb(r, g, b) = colour;
    TypedInstruction::Cfill {
        mask: OVER,
        layer,
        r,
        g,
        b,
        a: 255,
    }
    .encode(out);
}

fn shade(layer: LayerIndex, alpha: u8, out: &mut BytesMut) {
    let mut w = InstructionWriter::new(out, "shade");
    w.arg_i64(i64::from(layer.0)).arg_u64(u64::from(alpha));
    w.finish();
}

fn flush_fill(run: &mut Option<(usize, usize, Rgb)>, y: u32, cell: CellSize, out: &mut BytesMut) {
    if let Some((start, end, bg)) = run.take() {
        let rect = (
            to_i32(start as u32 * cell.width),
            to_i32(y),
            to_i32((end - start) as u32 * cell.width),
            to_i32(cell.height),
        );
        fill(DISPLAY, rect, bg, out);
    }
}

/// The atlas to the display, and the atlas to itself.
const TO_DISPLAY: (LayerIndex, LayerIndex) = (ATLAS, DISPLAY);
const WITHIN_ATLAS: (LayerIndex, LayerIndex) = (ATLAS, ATLAS);

/// Adds a copy between `layers`, merged with the last one when both sides are adjacent.
fn push_copy(
    blit: &mut Option<Blit>,
    next: Blit,
    layers: (LayerIndex, LayerIndex),
    height: u32,
    out: &mut BytesMut,
) {
    match blit {
        Some(b)
            if b.src_y == next.src_y
                && b.src_x + b.width == next.src_x
                && b.dst_y == next.dst_y
                && b.dst_x + b.width == next.dst_x =>
        {
            b.width += next.width;
        }
        _ => {
            flush_copy(blit, layers, height, out);
            *blit = Some(next);
        }
    }
}

fn push_blit(blit: &mut Option<Blit>, next: Blit, height: u32, out: &mut BytesMut) {
    push_copy(blit, next, TO_DISPLAY, height, out);
}

fn flush_blit(blit: &mut Option<Blit>, height: u32, out: &mut BytesMut) {
    flush_copy(blit, TO_DISPLAY, height, out);
}

fn flush_copy(
    blit: &mut Option<Blit>,
    (src_layer, dst_layer): (LayerIndex, LayerIndex),
    height: u32,
    out: &mut BytesMut,
) {
    if let Some(b) = blit.take() {
        TypedInstruction::Copy {
            src_layer,
            src_x: to_i32(b.src_x),
            src_y: to_i32(b.src_y),
            width: to_i32(b.width),
            height: to_i32(height),
            mask: OVER,
            dst_layer,
            dst_x: to_i32(b.dst_x),
            dst_y: to_i32(b.dst_y),
        }
        .encode(out);
    }
}

/// An RGB image as PNG.
/// Encodes RGB pixels as a PNG: indexed (1, 2, 4 or 8 bits a pixel) when there are at most
/// 256 colours, as glyphs in a terminal's few colours always are (libguac does the same), so
/// a glyph costs about a third of its true-colour encoding; true colour otherwise.
fn encode_png(rgb: &[u8], width: u32, height: u32) -> Option<Vec<u8>> {
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_compression(png::Compression::High);
    let indexed = index_colours(rgb, width as usize);
    let mut writer = match &indexed {
        Some(indexed) => {
            encoder.set_color(png::ColorType::Indexed);
            encoder.set_depth(indexed.depth);
            encoder.set_palette(indexed.palette.as_slice());
            // Filters do not help indices (the PNG specification's advice).
            encoder.set_filter(png::Filter::NoFilter);
            encoder.write_header().ok()?
        }
        None => {
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            encoder.write_header().ok()?
        }
    };
    match &indexed {
        Some(indexed) => writer.write_image_data(&indexed.rows).ok()?,
        None => writer.write_image_data(rgb).ok()?,
    }
    writer.finish().ok()?;
    Some(png)
}

/// An image as palette indices packed into rows.
struct Indexed {
    palette: Vec<u8>,
    depth: png::BitDepth,
    rows: Vec<u8>,
}

/// `rgb` (`width` pixels a row) as indices into a palette of its colours, or `None` when it
/// has more than 256.
fn index_colours(rgb: &[u8], width: usize) -> Option<Indexed> {
    let mut palette: Vec<[u8; 3]> = Vec::new();
    let mut indices = Vec::with_capacity(rgb.len() / 3);
    let mut last: Option<([u8; 3], u8)> = None;
    for pixel in rgb.chunks_exact(3) {
        let colour = [
            pixel.first().copied()?,
            pixel.get(1).copied()?,
            pixel.get(2).copied()?,
        ];
        let index = match last {
            Some((c, i)) if c == colour => i,
            _ => {
                let position = match palette.iter().position(|c| *c == colour) {
                    Some(i) => i,
                    None => {
                        palette.push(colour);
                        palette.len() - 1
                    }
                };
                // More than 256 colours: true colour.
                u8::try_from(position).ok()?
            }
        };
        last = Some((colour, index));
        indices.push(index);
    }
    let (depth, bits) = match palette.len() {
        0..=2 => (png::BitDepth::One, 1),
        3..=4 => (png::BitDepth::Two, 2),
        5..=16 => (png::BitDepth::Four, 4),
        _ => (png::BitDepth::Eight, 8),
    };
    let per_byte = 8 / bits;
    let row_bytes = width.div_ceil(per_byte);
    let mut rows = Vec::with_capacity(row_bytes * (indices.len() / width.max(1)));
    for row in indices.chunks(width.max(1)) {
        for group in row.chunks(per_byte) {
            let mut byte = 0u8;
            for (n, index) in group.iter().enumerate() {
                byte |= index << (8 - bits * (n + 1));
            }
            rows.push(byte);
        }
    }
    Some(Indexed {
        palette: palette.concat(),
        depth,
        rows,
    })
}
