//! [`DeferredDisplay`]: a [`Display`] that decodes only the images a key frame can show.
//!
//! A graphical recording keeps a display model only to take key frames, every few seconds.
//! Between two key frames guacd may send gigabytes of images, most of them painted over
//! before anything reads them, and decoding them is by far the model's dearest work. So the
//! instructions wait in a queue, and the model is shown them only when a key frame needs it
//! ([`DeferredDisplay::flush`]) or when the queue outgrows its budget. Before that, a pass
//! over the queue finds what nobody will see and drops it:
//!
//! * an image stream (`img`, `blob`s, `end`, all queued) whose every grid cell ([`CELL`]
//!   pixels square) is replaced later in the queue before anything reads it;
//! * a `copy` whose destination cells are all replaced before anything reads them.
//!
//! The pass walks the queue backwards with, per layer, the set of cells whose current
//! content nobody needs (a later drawing replaces it before any read). A drawing *replaces*
//! a cell it covers entirely when it does not depend on what was there: drawn with `SRC`
//! (0xC), or with `OVER` (0xE) and opaque (a PNG without alpha or `tRNS`; a `copy` of cells
//! known to be opaque; `cfill` of one rectangle with alpha 255). `SRC` replaces the whole
//! layer, because the HTML canvas clears what lies outside the drawn shape. A `copy` is a
//! read of exactly the source pixels that land in destination cells still needed; `cursor`
//! and `transfer` read their source rectangle, `lfill` its whole pattern layer; `size` and
//! `dispose` count as reads of the whole layer. Every other drawing reads only the pixels it
//! writes, so it changes nothing. Anything the pass cannot parse counts as a read of
//! everything.
//!
//! Layers drawn under a clip, a transform or a saved state (`clip`, `transform`,
//! `identity`, `push`, `pop`, `reset`), or with a channel mask the canvas does not know (the
//! previous mask then stays in effect), are left alone for the rest of the session: their
//! drawings may not land where their coordinates say. Nothing drawn into a buffer (a
//! negative layer) is dropped: buffers grow to fit what is drawn into them, so even a
//! drawing nobody sees changes their size. But buffers have cells like layers: a drawing
//! into a buffer that a later one replaces before anything reads it stays and reads
//! nothing, so what it copied may be dropped. guacd 1.6 copies every frame's changes from
//! layer 0 into buffer -1 (its client-side copy of the last frame); without this, that copy
//! would keep every image of the session needed. Opacity is tracked for visible layers of
//! known size only.
//!
//! A dropped drawing is replaced by a `copy` of nothing with the same layers and channel
//! mask, so the layers it would have created exist and the mask it would have left set stays
//! set. The model shown the rest, in order, ends in the same state, as
//! `tests::deferred` and the `display_deferred` fuzz target check against a model shown
//! everything. A hostile guacd can at worst make a key frame show a screen that a corrupt
//! covering image would not have drawn; the recording itself holds every instruction.
//!
//! Memory: the queue holds at most [`DeferredDisplay::budget`] bytes (instruction bytes plus
//! bookkeeping); the pass needs a grid of [`GRID`]² bits for at most [`MAX_GRIDS`] layers.

use std::collections::{HashMap, HashSet, VecDeque};

use base64::Engine;
use zt_guac::{Instruction, opcode};

use crate::Display;

/// Side of a grid cell, in pixels.
pub const CELL: i64 = 16;
/// Cells per side of a layer's grid (8192 pixels); beyond it, nothing is ever dropped.
pub const GRID: usize = 512;
/// Layers with a grid (per pass, and for opacity); drawings on others are never dropped.
pub const MAX_GRIDS: usize = 16;
/// Layers and streams tracked between passes; beyond this, culling stops for the session.
pub const MAX_TRACKED: usize = 64;
/// The default queue budget: two or three times what a busy 1920 × 1080 screen of PNG
/// tiles shows.
pub const DEFAULT_BUDGET: usize = 64 << 20;

/// Guacamole's `SRC` channel mask: the source replaces the destination.
const SRC: u8 = 0xC;
/// Guacamole's `OVER` channel mask: the source is drawn over the destination.
const OVER: u8 = 0xE;

type Rect = (i64, i64, i64, i64);

/// Masks with a canvas composite operation (the others leave the previous one in effect).
fn valid_mask(mask: u8) -> bool {
    matches!(
        mask,
        0x1 | 0x2 | 0x4 | 0x6 | 0x8 | 0x9 | 0xA | 0xB | 0xC | 0xE | 0xF
    )
}

/// Masks whose canvas operation also clears the layer outside what is drawn.
fn unbounded(mask: u8) -> bool {
    matches!(mask, 0x1 | 0x4 | 0x8 | 0x9 | 0xC)
}

/// What the pass needs to know about a queued instruction, computed once when it arrives.
#[derive(Clone, Copy)]
enum Note {
    /// Everything else that reads no pixels.
    Plain,
    /// Everything else that reads pixels (see [`Reads`]).
    Reads(Reads),
    /// A placeholder for a dropped drawing: no pixels.
    Stub,
    /// `img` of a tracked stream.
    ImageStart { serial: u64, layer: i64, mask: u8 },
    /// `blob` of a tracked stream.
    ImageData { serial: u64 },
    /// `end` of a tracked stream: where the image is drawn.
    ImageEnd { serial: u64, draw: ImageDraw },
    /// A parsed `copy`.
    Copy(CopyOp),
    /// A parsed `cfill`.
    Fill {
        layer: i64,
        mask: u8,
        rect: Option<Rect>,
        opaque: bool,
    },
}

/// What an instruction without a note of its own reads, walking backwards: a rectangle of
/// a layer (`cursor`, `transfer`), a whole layer (`lfill`, `lstroke`, `size`, `dispose`),
/// or, when its arguments do not parse, everything.
#[derive(Clone, Copy)]
enum Reads {
    Rect(i64, Rect),
    Layer(i64),
    All,
}

impl Reads {
    /// What `instruction` reads; `None` for no pixels.
    fn of(instruction: &Instruction) -> Option<Self> {
        let (layer_at, rect_at) = match instruction.opcode() {
            // cursor x y srclayer srcx srcy w h
            opcode::CURSOR => (2, Some(3)),
            // transfer srclayer srcx srcy w h function dstlayer dstx dsty
            "transfer" => (0, Some(1)),
            // lfill mask layer srclayer
            "lfill" => (2, None),
            // lstroke mask layer cap join thickness srclayer
            "lstroke" => (5, None),
            opcode::SIZE | "dispose" => (0, None),
            // A copy we could not parse.
            opcode::COPY => return Some(Self::All),
            _ => return None,
        };
        Some(
            match (
                int(instruction, layer_at),
                rect_at.and_then(|at| rect(instruction, at)),
            ) {
                (Some(layer), Some(rect)) => Self::Rect(layer, rect),
                (Some(layer), None) => Self::Layer(layer),
                (None, _) => Self::All,
            },
        )
    }

    fn apply(self, unneeded: &mut Grids) {
        match self {
            Self::Rect(layer, rect) => unneeded.read(layer, rect),
            Self::Layer(layer) => unneeded.clear(layer),
            Self::All => unneeded.clear_all(),
        }
    }
}

#[derive(Clone, Copy)]
struct ImageDraw {
    layer: i64,
    mask: u8,
    /// Known for PNG (from its header).
    rect: Option<Rect>,
    opaque: bool,
    /// The whole stream is ours to drop (it replaced no open stream).
    droppable: bool,
}

#[derive(Clone, Copy)]
struct CopyOp {
    src: i64,
    rect: Rect,
    mask: u8,
    dst: i64,
    at: (i64, i64),
    /// The source rectangle lies inside a source layer of known size.
    within: bool,
    /// … and every pixel of it is opaque.
    opaque: bool,
}

struct Queued {
    instruction: Instruction,
    note: Note,
    detached: bool,
}

impl Queued {
    fn cost(&self) -> usize {
        self.instruction.len() + size_of::<Self>()
    }
}

/// Counters, for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeferredStats {
    /// Passes over the queue.
    pub passes: u64,
    /// Image streams dropped undecoded.
    pub images_dropped: u64,
    /// `copy` instructions dropped.
    pub copies_dropped: u64,
    /// Instruction bytes shown to the model.
    pub bytes_shown: u64,
    /// Instruction bytes dropped.
    pub bytes_dropped: u64,
}

/// A [`Display`] behind a queue that drops what nobody will see (see the module docs).
pub struct DeferredDisplay {
    display: Display,
    queue: VecDeque<Queued>,
    queued: usize,
    budget: usize,
    tracker: Tracker,
    stats: DeferredStats,
}

impl DeferredDisplay {
    /// Wraps `display`, queueing at most `budget` bytes.
    pub fn new(display: Display, budget: usize) -> Self {
        Self {
            display,
            queue: VecDeque::new(),
            queued: 0,
            budget,
            tracker: Tracker::new(),
            stats: DeferredStats::default(),
        }
    }

    /// The queue budget in bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// The counters.
    pub fn stats(&self) -> DeferredStats {
        self.stats
    }

    /// The model: up to date only after [`flush`](Self::flush).
    pub fn display(&self) -> &Display {
        &self.display
    }

    /// Whether an image stream is open at the end of what was handled: the model would not
    /// be [ready for a key frame](Display::key_frame_ready) even after a
    /// [`flush`](Self::flush), so a caller waiting to take one can wait for the next batch
    /// instead of flushing now (as far as this display follows the streams; when it does
    /// not, `false`).
    pub fn image_streaming(&self) -> bool {
        !self.tracker.disabled && !self.tracker.open.is_empty()
    }

    /// Queues one instruction the server sent to the client (in order, like
    /// [`Display::handle`]). Errors of the model are not reported: the model's
    /// [`Display::is_degraded`] tells whether its key frames can be trusted.
    pub fn handle(&mut self, instruction: &Instruction) {
        if self.tracker.disabled && self.queue.is_empty() {
            self.show(instruction);
            return;
        }
        let note = match self.tracker.note(instruction) {
            Note::Plain => Reads::of(instruction).map_or(Note::Plain, Note::Reads),
            note => note,
        };
        let queued = Queued {
            instruction: instruction.clone(),
            note,
            detached: false,
        };
        self.queued += queued.cost();
        self.queue.push_back(queued);
        if self.queued >= self.budget {
            self.pass();
            if self.queued > self.budget / 2 {
                while self.queued > self.budget / 4 {
                    self.show_next();
                }
            }
        }
    }

    /// Drops what nobody will see and shows the model the rest: the model is then up to date.
    pub fn flush(&mut self) {
        self.pass();
        while !self.queue.is_empty() {
            self.show_next();
        }
    }

    fn show_next(&mut self) {
        if let Some(queued) = self.queue.pop_front() {
            self.queued -= queued.cost();
            self.show(&queued.instruction);
        }
    }

    fn show(&mut self, instruction: &Instruction) {
        self.stats.bytes_shown += instruction.len() as u64;
        let _ = self.display.handle(instruction);
    }

    /// One backward pass over the queue (see the module docs).
    fn pass(&mut self) {
        self.stats.passes += 1;

        if self.tracker.disabled {
            return;
        }
        let starts: HashSet<u64> = self
            .queue
            .iter()
            .filter_map(|q| match q.note {
                Note::ImageStart { serial, .. } => Some(serial),
                _ => None,
            })
            .collect();
        let mut unneeded = Grids::default();
        let mut dead_images = HashSet::new();
        let mut dead_copies = HashSet::new();
        for (index, queued) in self.queue.iter().enumerate().rev() {
            match queued.note {
                Note::ImageEnd { serial, draw } => {
                    if self.tracker.is_unsafe(draw.layer) {
                        continue;
                    }
                    let Some(rect) = draw.rect else {
                        continue;
                    };
                    if draw.mask == SRC {
                        unneeded.fill(draw.layer);
                        continue;
                    }
                    if unbounded(draw.mask) {
                        continue;
                    }
                    if draw.layer >= 0
                        && draw.droppable
                        && starts.contains(&serial)
                        && unneeded.all(draw.layer, rect)
                    {
                        dead_images.insert(serial);
                        continue;
                    }
                    if draw.mask == OVER && draw.opaque {
                        unneeded.set_inside(draw.layer, rect);
                    }
                }
                Note::Copy(copy) => {
                    if self.copy_backwards(copy, &mut unneeded) {
                        dead_copies.insert(index);
                    }
                }
                Note::Fill {
                    layer,
                    mask,
                    rect: Some(rect),
                    opaque,
                } if !self.tracker.is_unsafe(layer) => {
                    if mask == SRC {
                        unneeded.fill(layer);
                    } else if mask == OVER && opaque {
                        unneeded.set_inside(layer, rect);
                    }
                }
                Note::Reads(reads) => reads.apply(&mut unneeded),
                Note::Plain
                | Note::Stub
                | Note::Fill { .. }
                | Note::ImageData { .. }
                | Note::ImageStart { .. } => {}
            }
        }
        if dead_images.is_empty() && dead_copies.is_empty() {
            self.detach_all();
            return;
        }
        // In place: the queue keeps its allocation, and only what follows a removed entry
        // moves.
        self.queued = 0;
        let mut index = 0;
        let stats = &mut self.stats;
        let queued_bytes = &mut self.queued;
        self.queue.retain_mut(|queued| {
            let at = index;
            index += 1;
            let dropped = match queued.note {
                Note::ImageStart {
                    serial,
                    layer,
                    mask,
                } if dead_images.contains(&serial) => {
                    stats.images_dropped += 1;
                    Some(Some(stub(layer, mask, layer)))
                }
                Note::ImageData { serial } | Note::ImageEnd { serial, .. }
                    if dead_images.contains(&serial) =>
                {
                    Some(None)
                }
                Note::Copy(copy) if dead_copies.contains(&at) => {
                    stats.copies_dropped += 1;
                    Some(Some(stub(copy.src, copy.mask, copy.dst)))
                }
                _ => None,
            };
            match dropped {
                Some(replacement) => {
                    stats.bytes_dropped += queued.instruction.len() as u64;
                    let Some(instruction) = replacement else {
                        return false;
                    };
                    *queued = Queued {
                        instruction,
                        note: Note::Stub,
                        detached: true,
                    };
                }
                None if !queued.detached => {
                    queued.instruction = queued.instruction.detached();
                    queued.detached = true;
                }
                None => {}
            }
            *queued_bytes += queued.cost();
            true
        });
    }

    /// Gives every queued instruction its own allocation, so the queue pins no read buffer.
    fn detach_all(&mut self) {
        for queued in &mut self.queue {
            if !queued.detached {
                queued.instruction = queued.instruction.detached();
                queued.detached = true;
            }
        }
    }

    /// A `copy`, walking backwards; returns whether it is dead.
    fn copy_backwards(&self, copy: CopyOp, unneeded: &mut Grids) -> bool {
        let (sx, sy, w, h) = copy.rect;
        if w <= 0 || h <= 0 {
            return false;
        }
        let (dx, dy) = copy.at;
        let dst_rect = (dx, dy, w, h);
        if self.tracker.is_unsafe(copy.src)
            || self.tracker.is_unsafe(copy.dst)
            || (unbounded(copy.mask) && !(copy.mask == SRC && copy.within))
        {
            unneeded.read(copy.src, copy.rect);
            return false;
        }
        let Some(needed) = unneeded.needed_cells(copy.dst, dst_rect) else {
            // Off the grid: everything it reads is needed.
            if copy.mask == SRC {
                unneeded.fill(copy.dst);
            }
            unneeded.read(copy.src, copy.rect);
            return false;
        };
        if needed.is_empty() && copy.mask != SRC {
            // Nothing it writes is needed, so it reads nothing; a copy into a buffer stays,
            // as the buffer's growth (see the module docs).
            return copy.dst >= 0;
        }
        if copy.mask == SRC {
            unneeded.fill(copy.dst);
        } else if copy.mask == OVER && copy.opaque {
            unneeded.set_inside(copy.dst, dst_rect);
        }
        for (cx, cy) in needed {
            let (x0, y0) = (cx as i64 * CELL, cy as i64 * CELL);
            let left = x0.max(dx);
            let top = y0.max(dy);
            let right = (x0 + CELL).min(dx + w);
            let bottom = (y0 + CELL).min(dy + h);
            if right > left && bottom > top {
                unneeded.read(
                    copy.src,
                    (left - dx + sx, top - dy + sy, right - left, bottom - top),
                );
            }
        }
        false
    }
}

/// `copy src 0 0 0 0 mask dst 0 0`: creates the layers and sets the mask, draws nothing.
fn stub(src: i64, mask: u8, dst: i64) -> Instruction {
    let (src, mask, dst) = (src.to_string(), mask.to_string(), dst.to_string());
    Instruction::new(
        opcode::COPY,
        &[src.as_str(), "0", "0", "0", "0", &mask, &dst, "0", "0"],
    )
}

fn int(instruction: &Instruction, index: usize) -> Option<i64> {
    instruction.arg(index)?.parse().ok()
}

fn rect(instruction: &Instruction, at: usize) -> Option<Rect> {
    Some((
        int(instruction, at)?,
        int(instruction, at + 1)?,
        int(instruction, at + 2)?,
        int(instruction, at + 3)?,
    ))
}

/// Cells `first..last` along one axis: touching `[start, start + len)`, or only those
/// entirely inside it; `None` when the span leaves the grid (for touching cells).
fn span(start: i64, len: i64, inner: bool) -> Option<(usize, usize)> {
    if len <= 0 {
        return Some((0, 0));
    }
    let end = start.checked_add(len)?;
    if inner {
        let first = start.max(0).saturating_add(CELL - 1) / CELL;
        let last = end.max(0) / CELL;
        let clamp = |v: i64| usize::try_from(v).unwrap_or(0).min(GRID);
        return Some((clamp(first), clamp(last).max(clamp(first))));
    }
    if start < 0 {
        return None;
    }
    let (first, last) = (start / CELL, end.saturating_add(CELL - 1) / CELL);
    let last = usize::try_from(last).ok()?;
    if last > GRID {
        return None;
    }
    Some((usize::try_from(first).ok()?, last))
}

/// One bit per cell.
#[derive(Clone)]
struct Grid {
    bits: Vec<u64>,
}

impl Grid {
    fn new() -> Self {
        Self {
            bits: vec![0; GRID * GRID / 64],
        }
    }

    fn get(&self, cx: usize, cy: usize) -> bool {
        let bit = cy * GRID + cx;
        self.bits
            .get(bit / 64)
            .is_some_and(|word| word & (1 << (bit % 64)) != 0)
    }

    fn put(&mut self, cx: usize, cy: usize, value: bool) {
        let bit = cy * GRID + cx;
        if let Some(word) = self.bits.get_mut(bit / 64) {
            if value {
                *word |= 1 << (bit % 64);
            } else {
                *word &= !(1 << (bit % 64));
            }
        }
    }

    /// Whether every cell touching `rect` is set (`false` off the grid).
    fn all(&self, (x, y, w, h): Rect) -> bool {
        let (Some((x0, x1)), Some((y0, y1))) = (span(x, w, false), span(y, h, false)) else {
            return false;
        };
        (y0..y1).all(|cy| (x0..x1).all(|cx| self.get(cx, cy)))
    }

    /// Sets the cells entirely inside `rect`.
    fn set_inside(&mut self, (x, y, w, h): Rect) {
        let (Some((x0, x1)), Some((y0, y1))) = (span(x, w, true), span(y, h, true)) else {
            return;
        };
        for cy in y0..y1 {
            for cx in x0..x1 {
                self.put(cx, cy, true);
            }
        }
    }

    /// Clears the cells touching `rect` (clamped to the grid).
    fn clear_touching(&mut self, (x, y, w, h): Rect) {
        let clamp = |start: i64, len: i64| {
            let end = start.saturating_add(len.max(0));
            let first = usize::try_from(start.max(0) / CELL)
                .unwrap_or(GRID)
                .min(GRID);
            let last = usize::try_from(end.max(0).saturating_add(CELL - 1) / CELL)
                .unwrap_or(GRID)
                .min(GRID);
            (first, last)
        };
        let ((x0, x1), (y0, y1)) = (clamp(x, w), clamp(y, h));
        for cy in y0..y1 {
            for cx in x0..x1 {
                self.put(cx, cy, false);
            }
        }
    }
}

/// Per layer, the cells whose content nobody needs (walking backwards); a layer without a
/// grid needs everything.
#[derive(Default)]
struct Grids {
    layers: HashMap<i64, Grid>,
}

impl Grids {
    /// Buffers (negative layers) get one too: drawings into them are never dropped (they grow
    /// the buffer), but what they replace there is not needed.
    fn grid(&mut self, layer: i64) -> Option<&mut Grid> {
        if !self.layers.contains_key(&layer) && self.layers.len() >= MAX_GRIDS {
            return None;
        }
        Some(self.layers.entry(layer).or_insert_with(Grid::new))
    }

    fn all(&self, layer: i64, rect: Rect) -> bool {
        self.layers.get(&layer).is_some_and(|grid| grid.all(rect))
    }

    fn set_inside(&mut self, layer: i64, rect: Rect) {
        if let Some(grid) = self.grid(layer) {
            grid.set_inside(rect);
        }
    }

    fn fill(&mut self, layer: i64) {
        if let Some(grid) = self.grid(layer) {
            grid.bits.fill(u64::MAX);
        }
    }

    /// The rectangle's pixels are read: their cells are needed.
    fn read(&mut self, layer: i64, rect: Rect) {
        if let Some(grid) = self.layers.get_mut(&layer) {
            grid.clear_touching(rect);
        }
    }

    fn clear(&mut self, layer: i64) {
        self.layers.remove(&layer);
    }

    fn clear_all(&mut self) {
        self.layers.clear();
    }

    /// The cells touching `rect` that are needed; `None` when `rect` leaves the grid.
    fn needed_cells(&self, layer: i64, (x, y, w, h): Rect) -> Option<Vec<(usize, usize)>> {
        let (x0, x1) = span(x, w, false)?;
        let (y0, y1) = span(y, h, false)?;
        let grid = self.layers.get(&layer);
        let mut cells = Vec::new();
        for cy in y0..y1 {
            for cx in x0..x1 {
                if !grid.is_some_and(|grid| grid.get(cx, cy)) {
                    cells.push((cx, cy));
                }
            }
        }
        Some(cells)
    }
}

/// An image stream between its `img` and its `end`.
struct OpenImage {
    serial: u64,
    layer: i64,
    mask: u8,
    x: i64,
    y: i64,
    png: bool,
    rect: Option<Rect>,
    opaque: bool,
    header_seen: bool,
    droppable: bool,
}

/// A layer's current path, as far as `cfill` is concerned.
#[derive(Clone, Copy)]
struct PathShape {
    one_rect: Option<Rect>,
    empty: bool,
    closed: bool,
}

impl PathShape {
    const NEW: Self = Self {
        one_rect: None,
        empty: true,
        closed: true,
    };
}

/// State that follows the stream as it arrives (so it is never affected by what a pass
/// drops: dropping changes nothing the model shows).
struct Tracker {
    next_serial: u64,
    open: HashMap<String, OpenImage>,
    unsafe_layers: HashSet<i64>,
    /// Too much to track: nothing is dropped any more.
    disabled: bool,
    sizes: HashMap<i64, (i64, i64)>,
    opaque: HashMap<i64, Grid>,
    paths: HashMap<i64, PathShape>,
}

impl Tracker {
    fn new() -> Self {
        Self {
            next_serial: 0,
            open: HashMap::new(),
            unsafe_layers: HashSet::new(),
            disabled: false,
            sizes: HashMap::from([(0, (0, 0))]),
            opaque: HashMap::new(),
            paths: HashMap::new(),
        }
    }

    fn is_unsafe(&self, layer: i64) -> bool {
        self.disabled || self.unsafe_layers.contains(&layer)
    }

    fn make_unsafe(&mut self, layer: i64) {
        self.opaque.remove(&layer);
        if self.unsafe_layers.insert(layer) && self.unsafe_layers.len() > MAX_TRACKED {
            self.disabled = true;
        }
    }

    /// A channel mask as the model will apply it: an unknown one makes the layer unsafe.
    fn mask(&mut self, text: Option<&str>, layer: i64) -> u8 {
        match text.and_then(|t| t.parse::<u8>().ok()) {
            Some(mask) if valid_mask(mask) => mask,
            _ => {
                self.make_unsafe(layer);
                0
            }
        }
    }

    fn path(&mut self, layer: i64) -> Option<&mut PathShape> {
        if !self.paths.contains_key(&layer) && self.paths.len() >= MAX_TRACKED {
            self.disabled = true;
            return None;
        }
        Some(self.paths.entry(layer).or_insert(PathShape::NEW))
    }

    fn opaque_grid(&mut self, layer: i64) -> Option<&mut Grid> {
        if layer < 0 || self.is_unsafe(layer) || !self.sizes.contains_key(&layer) {
            return None;
        }
        if !self.opaque.contains_key(&layer) && self.opaque.len() >= MAX_GRIDS {
            return None;
        }
        Some(self.opaque.entry(layer).or_insert_with(Grid::new))
    }

    /// What a drawing does to the layer's opacity. `drawn` is the rectangle drawn when known.
    fn paint(&mut self, layer: i64, mask: u8, drawn: Option<Rect>, opaque: bool) {
        if mask == OVER {
            if let (Some(rect), true) = (drawn, opaque)
                && let Some(grid) = self.opaque_grid(layer)
            {
                grid.set_inside(rect);
            }
            return;
        }
        match (mask, drawn) {
            (SRC, Some(rect)) if opaque => {
                self.opaque.remove(&layer);
                if let Some(grid) = self.opaque_grid(layer) {
                    grid.set_inside(rect);
                }
            }
            (_, Some(rect)) if !unbounded(mask) => {
                if let Some(grid) = self.opaque.get_mut(&layer) {
                    grid.clear_touching(rect);
                }
            }
            _ => {
                self.opaque.remove(&layer);
            }
        }
    }

    /// Whether every pixel of `rect` is known to be opaque (and inside the layer).
    fn opaque_within(&self, layer: i64, (x, y, w, h): Rect) -> (bool, bool) {
        let within = layer >= 0
            && !self.is_unsafe(layer)
            && self.sizes.get(&layer).is_some_and(|&(width, height)| {
                x >= 0
                    && y >= 0
                    && w > 0
                    && h > 0
                    && x.checked_add(w).is_some_and(|r| r <= width)
                    && y.checked_add(h).is_some_and(|b| b <= height)
            });
        let opaque = within
            && self
                .opaque
                .get(&layer)
                .is_some_and(|grid| grid.all((x, y, w, h)));
        (within, opaque)
    }

    fn note(&mut self, instruction: &Instruction) -> Note {
        if self.disabled {
            return Note::Plain;
        }
        match instruction.opcode() {
            opcode::BLOB => self.blob(instruction),
            opcode::IMG => self.img(instruction),
            opcode::END => self.end(instruction),
            opcode::COPY => self.copy(instruction),
            opcode::RECT => {
                if let Some(layer) = int(instruction, 0) {
                    let rect = rect(instruction, 1).filter(|r| r.2 > 0 && r.3 > 0);
                    if let Some(path) = self.path(layer) {
                        if path.closed || path.empty {
                            *path = PathShape {
                                one_rect: rect,
                                empty: false,
                                closed: false,
                            };
                        } else {
                            path.one_rect = None;
                        }
                    }
                }
                Note::Plain
            }
            opcode::CFILL => self.cfill(instruction),
            "start" | "line" | "arc" | "curve" | "close" => {
                if let Some(layer) = int(instruction, 0)
                    && let Some(path) = self.path(layer)
                {
                    let close = instruction.opcode() == "close";
                    *path = PathShape {
                        one_rect: None,
                        empty: false,
                        closed: close && path.closed,
                    };
                }
                Note::Plain
            }
            "cstroke" | "lfill" | "lstroke" | "png" | "jpeg" => {
                if let Some(layer) = int(instruction, 1) {
                    if let Some(path) = self.path(layer) {
                        path.closed = true;
                    }
                    self.mask(instruction.arg(0), layer);
                    self.opaque.remove(&layer);
                }
                Note::Plain
            }
            "transfer" => {
                if let Some(layer) = int(instruction, 6) {
                    self.opaque.remove(&layer);
                }
                Note::Plain
            }
            opcode::SIZE => {
                if let Some(layer) = int(instruction, 0) {
                    self.opaque.remove(&layer);
                    if let Some(path) = self.path(layer) {
                        *path = PathShape {
                            one_rect: None,
                            empty: true,
                            closed: false,
                        };
                    }
                    match (int(instruction, 1), int(instruction, 2)) {
                        (Some(w), Some(h)) if layer >= 0 && w >= 0 && h >= 0 => {
                            if self.sizes.len() < MAX_TRACKED || self.sizes.contains_key(&layer) {
                                self.sizes.insert(layer, (w, h));
                            }
                        }
                        _ => {
                            self.sizes.remove(&layer);
                        }
                    }
                }
                Note::Plain
            }
            "dispose" => {
                if let Some(layer) = int(instruction, 0) {
                    self.opaque.remove(&layer);
                    self.sizes.remove(&layer);
                    self.paths.remove(&layer);
                }
                Note::Plain
            }
            "clip" | "transform" | "identity" | "push" | "pop" | "reset" => {
                if let Some(layer) = int(instruction, 0) {
                    self.make_unsafe(layer);
                } else {
                    self.disabled = true;
                }
                Note::Plain
            }
            _ => Note::Plain,
        }
    }

    fn img(&mut self, instruction: &Instruction) -> Note {
        let (Some(stream), Some(layer), Some(x), Some(y)) = (
            instruction.arg(0),
            int(instruction, 2),
            int(instruction, 4),
            int(instruction, 5),
        ) else {
            // The model may still open it: forget any stream of that name.
            if let Some(stream) = instruction.arg(0) {
                self.open.remove(stream);
            }
            return Note::Plain;
        };
        let mask = self.mask(instruction.arg(1), layer);
        // An `img` on an open stream replaces it: neither may be dropped.
        let replaced = self.open.remove(stream).is_some();
        if self.open.len() >= MAX_TRACKED {
            self.disabled = true;
            return Note::Plain;
        }
        self.next_serial += 1;
        let serial = self.next_serial;
        let png = instruction.arg(3) == Some("image/png");
        let jpeg = instruction.arg(3) == Some("image/jpeg");
        self.open.insert(
            stream.to_owned(),
            OpenImage {
                serial,
                layer,
                mask,
                x,
                y,
                png,
                rect: None,
                opaque: jpeg,
                header_seen: false,
                droppable: !replaced && (png || jpeg) && valid_mask(mask),
            },
        );
        Note::ImageStart {
            serial,
            layer,
            mask,
        }
    }

    fn blob(&mut self, instruction: &Instruction) -> Note {
        let Some(image) = instruction.arg(0).and_then(|s| self.open.get_mut(s)) else {
            return Note::Plain;
        };
        if !image.header_seen {
            image.header_seen = true;
            if image.png
                && let Some((w, h, opaque)) = instruction.arg_bytes(1).and_then(png_header)
            {
                image.rect = Some((image.x, image.y, w, h));
                image.opaque = opaque;
            }
        }
        Note::ImageData {
            serial: image.serial,
        }
    }

    fn end(&mut self, instruction: &Instruction) -> Note {
        let Some(image) = instruction.arg(0).and_then(|s| self.open.remove(s)) else {
            return Note::Plain;
        };
        let draw = ImageDraw {
            layer: image.layer,
            mask: image.mask,
            rect: image.rect,
            opaque: image.opaque,
            droppable: image.droppable,
        };
        self.paint(image.layer, image.mask, image.rect, image.opaque);
        Note::ImageEnd {
            serial: image.serial,
            draw,
        }
    }

    fn copy(&mut self, instruction: &Instruction) -> Note {
        // copy srclayer srcx srcy w h mask dstlayer dstx dsty
        let (Some(src), Some(rect), Some(dst), Some(dx), Some(dy)) = (
            int(instruction, 0),
            rect(instruction, 1),
            int(instruction, 6),
            int(instruction, 7),
            int(instruction, 8),
        ) else {
            if let Some(dst) = int(instruction, 6) {
                self.opaque.remove(&dst);
            } else {
                self.opaque.clear();
            }
            return Note::Plain;
        };
        let mask = self.mask(instruction.arg(5), dst);
        let (within, opaque) = self.opaque_within(src, rect);
        let drawn = within.then_some((dx, dy, rect.2, rect.3));
        self.paint(dst, mask, drawn, opaque);
        Note::Copy(CopyOp {
            src,
            rect,
            mask,
            dst,
            at: (dx, dy),
            within,
            opaque,
        })
    }

    fn cfill(&mut self, instruction: &Instruction) -> Note {
        // cfill mask layer r g b a
        let Some(layer) = int(instruction, 1) else {
            return Note::Plain;
        };
        let mask = self.mask(instruction.arg(0), layer);
        let opaque = instruction.arg(5) == Some("255");
        let rect = match self.path(layer) {
            Some(path) => {
                // A closed path filled again is the same path.
                let rect = if path.empty { None } else { path.one_rect };
                path.closed = true;
                rect
            }
            None => None,
        };
        self.paint(layer, mask, rect, opaque);
        Note::Fill {
            layer,
            mask,
            rect,
            opaque,
        }
    }
}

/// Width, height and whether the PNG is opaque, from the start of its data (the first `blob`,
/// base64).
/// Base64 text (only its first few hundred bytes are looked at, so no UTF-8 check of the
/// whole blob).
fn png_header(blob: &[u8]) -> Option<(i64, i64, bool)> {
    // The header chunks guacd writes fit in the first few hundred bytes; a PNG with more
    // before its first IDAT is decoded up to the first 6048 bytes.
    header_within(blob, 1024).or_else(|| header_within(blob, 8064))
}

fn header_within(blob: &[u8], chars: usize) -> Option<(i64, i64, bool)> {
    let text = blob.get(..blob.len().min(chars) / 4 * 4)?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    if data.get(..8)? != b"\x89PNG\r\n\x1a\n" || data.get(12..16)? != b"IHDR" {
        return None;
    }
    let be = |at: usize| -> Option<i64> {
        let bytes: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(i64::from(u32::from_be_bytes(bytes)))
    };
    let (width, height) = (be(16)?, be(20)?);
    let colour = *data.get(25)?;
    // Grey or RGB; anything with alpha or a palette may be transparent.
    let opaque = colour == 0 || colour == 2;
    // Walk the chunks to the first IDAT: a tRNS makes it transparent; not reaching IDAT
    // means unknown.
    let mut at = 33usize;
    loop {
        let (len, kind) = (be(at)?, data.get(at + 4..at + 8)?);
        if kind == b"IDAT" {
            return Some((width, height, opaque));
        }
        if kind == b"tRNS" {
            return Some((width, height, false));
        }
        at = at.checked_add(12 + usize::try_from(len).ok()?)?;
    }
}
