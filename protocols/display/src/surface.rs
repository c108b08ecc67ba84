//! Pixel surfaces and the compositing of Guacamole channel masks.
//!
//! Pixels are straight (not premultiplied) RGBA, 8 bits per channel, and canonical: a pixel
//! with alpha 0 is `[0, 0, 0, 0]`, which is what a browser canvas (premultiplied) gives back
//! too. PNG round trips are therefore lossless, which is what makes key frames exact.

use std::fmt;
use std::sync::Arc;

/// One straight-alpha RGBA pixel.
pub(crate) type Pixel = [u8; 4];

/// The transparent pixel, the only one with alpha 0.
pub(crate) const TRANSPARENT: Pixel = [0; 4];

/// Makes a pixel canonical (alpha 0 means all zero).
#[inline]
pub(crate) fn canonical(pixel: Pixel) -> Pixel {
    if pixel[3] == 0 { TRANSPARENT } else { pixel }
}

/// A half-open rectangle `[x0, x1) × [y0, y1)`, in `i64` so that sums of wire `i32`s never
/// overflow. Empty when `x1 <= x0` or `y1 <= y0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rect {
    pub(crate) x0: i64,
    pub(crate) y0: i64,
    pub(crate) x1: i64,
    pub(crate) y1: i64,
}

impl Rect {
    /// The rectangle at `(x, y)` of size `w × h`, normalised when `w` or `h` is negative (as
    /// a canvas `rect()` covers the same pixels either way).
    pub(crate) fn new(x: i64, y: i64, w: i64, h: i64) -> Self {
        let (x0, x1) = if w < 0 { (x + w, x) } else { (x, x + w) };
        let (y0, y1) = if h < 0 { (y + h, y) } else { (y, y + h) };
        Self { x0, y0, x1, y1 }
    }

    pub(crate) const EMPTY: Self = Self {
        x0: 0,
        y0: 0,
        x1: 0,
        y1: 0,
    };

    pub(crate) fn is_empty(&self) -> bool {
        self.x1 <= self.x0 || self.y1 <= self.y0
    }

    pub(crate) fn width(&self) -> i64 {
        (self.x1 - self.x0).max(0)
    }

    pub(crate) fn height(&self) -> i64 {
        (self.y1 - self.y0).max(0)
    }

    pub(crate) fn intersect(&self, other: &Self) -> Self {
        let r = Self {
            x0: self.x0.max(other.x0),
            y0: self.y0.max(other.y0),
            x1: self.x1.min(other.x1),
            y1: self.y1.min(other.y1),
        };
        if r.is_empty() { Self::EMPTY } else { r }
    }

    pub(crate) fn intersects(&self, other: &Self) -> bool {
        !self.intersect(other).is_empty()
    }

    /// Whether `other` lies entirely inside `self` (an empty `other` always does).
    pub(crate) fn contains(&self, other: &Self) -> bool {
        other.is_empty()
            || (self.x0 <= other.x0
                && self.y0 <= other.y0
                && other.x1 <= self.x1
                && other.y1 <= self.y1)
    }

    pub(crate) fn translate(&self, dx: i64, dy: i64) -> Self {
        Self {
            x0: self.x0 + dx,
            y0: self.y0 + dy,
            x1: self.x1 + dx,
            y1: self.y1 + dy,
        }
    }
}

/// A Guacamole channel mask that clients implement, as the canvas composite operation
/// guacamole-common-js maps it to (`Guacamole.Layer`). Masks 0x0, 0x3, 0x5, 0x7 and 0xD
/// have no mapping: a client leaves the previous operation in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CompositeOp {
    /// 0x1 `destination-in`.
    Rin,
    /// 0x2 `destination-out`.
    Rout,
    /// 0x4 `source-in`.
    In,
    /// 0x6 `source-atop`.
    Atop,
    /// 0x8 `source-out`.
    Out,
    /// 0x9 `destination-atop`.
    Ratop,
    /// 0xA `xor`.
    Xor,
    /// 0xB `destination-over`.
    Rover,
    /// 0xC `copy`.
    Src,
    /// 0xE `source-over`.
    Over,
    /// 0xF `lighter`.
    Plus,
}

impl CompositeOp {
    /// The operation for a channel mask, `None` for the masks clients leave unmapped.
    pub(crate) fn from_mask(mask: u8) -> Option<Self> {
        Some(match mask {
            0x1 => Self::Rin,
            0x2 => Self::Rout,
            0x4 => Self::In,
            0x6 => Self::Atop,
            0x8 => Self::Out,
            0x9 => Self::Ratop,
            0xA => Self::Xor,
            0xB => Self::Rover,
            0xC => Self::Src,
            0xE => Self::Over,
            0xF => Self::Plus,
            _ => return None,
        })
    }

    /// The channel mask on the wire.
    pub(crate) fn mask(self) -> u8 {
        match self {
            Self::Rin => 0x1,
            Self::Rout => 0x2,
            Self::In => 0x4,
            Self::Atop => 0x6,
            Self::Out => 0x8,
            Self::Ratop => 0x9,
            Self::Xor => 0xA,
            Self::Rover => 0xB,
            Self::Src => 0xC,
            Self::Over => 0xE,
            Self::Plus => 0xF,
        }
    }

    /// Whether the operation changes the destination where the source is absent: the HTML
    /// canvas treats the area outside the drawn shape as transparent source, which these
    /// operations turn into transparent destination (within the clip).
    pub(crate) fn is_unbounded(self) -> bool {
        matches!(
            self,
            Self::Src | Self::In | Self::Out | Self::Rin | Self::Ratop
        )
    }

    /// Porter–Duff factors `(Fa, Fb)` scaled to 0–255, for source and destination alpha.
    #[inline]
    fn factors(self, sa: u32, da: u32) -> (u32, u32) {
        match self {
            Self::Src => (255, 0),
            Self::Over => (255, 255 - sa),
            Self::In => (da, 0),
            Self::Out => (255 - da, 0),
            Self::Atop => (da, 255 - sa),
            Self::Rover => (255 - da, 255),
            Self::Rin => (0, sa),
            Self::Rout => (0, 255 - sa),
            Self::Ratop => (255 - da, sa),
            Self::Xor => (255 - da, 255 - sa),
            Self::Plus => (255, 255),
        }
    }
}

/// Composites one source pixel onto one destination pixel, in straight alpha with rounding
/// to nearest. Exact (equal to the ideal result) whenever the source is opaque or
/// transparent or the destination is transparent; otherwise within one unit of it.
#[inline]
pub(crate) fn blend(op: CompositeOp, s: Pixel, d: Pixel) -> Pixel {
    let [sr, sg, sb, sa] = s.map(u32::from);
    let [dr, dg, db, da] = d.map(u32::from);
    match op {
        CompositeOp::Src => return canonical(s),
        CompositeOp::Over if s[3] == 255 || d[3] == 0 => return canonical(s),
        CompositeOp::Over if s[3] == 0 => return d,
        CompositeOp::Plus => {
            let alpha = (sa + da).min(255);
            if alpha == 0 {
                return TRANSPARENT;
            }
            let channel = |sc: u32, dc: u32| {
                let premultiplied = (sa * sc + da * dc).min(255 * 255);
                ((premultiplied + alpha / 2) / alpha).min(255) as u8
            };
            return [
                channel(sr, dr),
                channel(sg, dg),
                channel(sb, db),
                alpha as u8,
            ];
        }
        _ => {}
    }
    let (fa, fb) = op.factors(sa, da);
    let (wa, wb) = (sa * fa, da * fb);
    let total = wa + wb; // at most 255 × 255 for every operation but Plus
    let alpha = (total + 127) / 255;
    if alpha == 0 {
        return TRANSPARENT;
    }
    let channel = |sc: u32, dc: u32| ((wa * sc + wb * dc + total / 2) / total).min(255) as u8;
    [
        channel(sr, dr),
        channel(sg, dg),
        channel(sb, db),
        alpha.min(255) as u8,
    ]
}

/// Composites a row of source pixels onto a row of destination pixels of the same length.
fn blend_row(op: CompositeOp, src: &[Pixel], dst: &mut [Pixel]) {
    match op {
        CompositeOp::Src => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = canonical(*s);
            }
        }
        CompositeOp::Over if dst.len() == src.len() && src.iter().all(|p| p[3] == 255) => {
            dst.copy_from_slice(src);
        }
        CompositeOp::Over => {
            for (d, s) in dst.iter_mut().zip(src) {
                match s[3] {
                    255 => *d = *s,
                    0 => {}
                    _ => *d = blend(op, *s, *d),
                }
            }
        }
        _ => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = blend(op, *s, *d);
            }
        }
    }
}

/// Composites one colour onto a row of destination pixels.
fn fill_row(op: CompositeOp, color: Pixel, dst: &mut [Pixel]) {
    match (op, color[3]) {
        (CompositeOp::Src, _) | (CompositeOp::Over, 255) => dst.fill(canonical(color)),
        (CompositeOp::Over, 0) => {}
        _ => {
            for d in dst {
                *d = blend(op, color, *d);
            }
        }
    }
}

/// A binary raster operation of `transfer`, as guacamole-common-js implements them
/// (`Guacamole.Client.DefaultTransferFunction`): on un-premultiplied pixels, colour channels
/// only except for SRC (0x3) and NOT-SRC (0xC), which also take the source alpha.
pub(crate) fn transfer_pixel(function: u8, s: Pixel, d: Pixel) -> Pixel {
    let [sr, sg, sb, sa] = s;
    let [dr, dg, db, da] = d;
    let rgb = |f: fn(u8, u8) -> u8| [f(sr, dr), f(sg, dg), f(sb, db), da];
    let out = match function {
        0x0 => [0, 0, 0, da],
        0xF => [255, 255, 255, da],
        0x3 => s,
        0x5 => d,
        0xC => [!sr, !sg, !sb, sa],
        0xA => [!dr, !dg, !db, da],
        0x1 => rgb(|s, d| s & d),
        0xE => rgb(|s, d| !(s & d)),
        0x7 => rgb(|s, d| s | d),
        0x8 => rgb(|s, d| !(s | d)),
        0x6 => rgb(|s, d| s ^ d),
        0x9 => rgb(|s, d| !(s ^ d)),
        0x4 => rgb(|s, d| !s & d),
        0xD => rgb(|s, d| !s | d),
        0x2 => rgb(|s, d| s & !d),
        0xB => rgb(|s, d| s | !d),
        _ => d,
    };
    canonical(out)
}

/// Source pixels for a drawing operation: a `stride`-wide pixel buffer of `width × height`
/// pixels (a layer's or a decoded image's).
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) pixels: &'a [Pixel],
    pub(crate) width: u32,
    pub(crate) height: u32,
}

impl Source<'_> {
    /// The pixel at `(x, y)`, transparent outside.
    #[inline]
    fn get(&self, x: i64, y: i64) -> Pixel {
        if x < 0 || y < 0 || x >= i64::from(self.width) || y >= i64::from(self.height) {
            return TRANSPARENT;
        }
        let index = y as usize * self.width as usize + x as usize;
        self.pixels.get(index).copied().unwrap_or(TRANSPARENT)
    }

    /// Pixels `x0..x1` of row `y`, all within bounds (callers clip first).
    fn row(&self, y: i64, x0: i64, x1: i64) -> &[Pixel] {
        let start = y as usize * self.width as usize + x0 as usize;
        let end = start + (x1 - x0) as usize;
        self.pixels.get(start..end).unwrap_or_default()
    }

    fn bounds(&self) -> Rect {
        Rect::new(0, 0, self.width.into(), self.height.into())
    }
}

/// The pixels of one layer, buffer or cursor, shared copy-on-write with snapshots.
/// (`Debug` shows the size only.)
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Surface {
    width: u32,
    height: u32,
    pixels: Arc<Vec<Pixel>>,
}

impl fmt::Debug for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Surface({} × {})", self.width, self.height)
    }
}

impl Surface {
    /// A transparent surface. The caller has checked the size against the limits.
    pub(crate) fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            pixels: Arc::new(vec![TRANSPARENT; width as usize * height as usize]),
        }
    }

    /// A surface holding `pixels` (`width × height` of them).
    pub(crate) fn from_pixels(width: u32, height: u32, pixels: Vec<Pixel>) -> Self {
        debug_assert_eq!(pixels.len(), width as usize * height as usize);
        Self {
            width,
            height,
            pixels: Arc::new(pixels),
        }
    }

    pub(crate) fn width(&self) -> u32 {
        self.width
    }

    pub(crate) fn height(&self) -> u32 {
        self.height
    }

    /// Number of pixels.
    pub(crate) fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    pub(crate) fn bounds(&self) -> Rect {
        Rect::new(0, 0, self.width.into(), self.height.into())
    }

    pub(crate) fn pixels(&self) -> &[Pixel] {
        &self.pixels
    }

    pub(crate) fn source(&self) -> Source<'_> {
        Source {
            pixels: &self.pixels,
            width: self.width,
            height: self.height,
        }
    }

    /// Whether both surfaces share their pixel buffer (a snapshot that has not been written
    /// over since).
    #[cfg(test)]
    pub(crate) fn shares_pixels_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.pixels, &other.pixels)
    }

    fn pixels_mut(&mut self) -> &mut [Pixel] {
        Arc::make_mut(&mut self.pixels).as_mut_slice()
    }

    /// Pixels `x0..x1` of row `y`, mutable (all within bounds: callers clip first).
    fn row_mut(&mut self, y: i64, x0: i64, x1: i64) -> &mut [Pixel] {
        let width = self.width as usize;
        let start = y as usize * width + x0 as usize;
        let end = start + (x1 - x0) as usize;
        self.pixels_mut().get_mut(start..end).unwrap_or_default()
    }

    /// Changes the size, keeping the pixels of the overlap; the rest is transparent.
    pub(crate) fn resize(&mut self, width: u32, height: u32) {
        if (width, height) == (self.width, self.height) {
            return;
        }
        let mut pixels = vec![TRANSPARENT; width as usize * height as usize];
        let keep_w = width.min(self.width) as usize;
        if keep_w > 0 {
            let rows = self.pixels.chunks_exact(self.width as usize);
            for (new, old) in pixels.chunks_exact_mut(width as usize).zip(rows) {
                if let (Some(new), Some(old)) = (new.get_mut(..keep_w), old.get(..keep_w)) {
                    new.copy_from_slice(old);
                }
            }
        }
        *self = Self::from_pixels(width, height, pixels);
    }

    /// Makes every pixel in `area` (clipped to the surface) transparent.
    pub(crate) fn clear(&mut self, area: &Rect) {
        let area = area.intersect(&self.bounds());
        for y in area.y0..area.y1 {
            self.row_mut(y, area.x0, area.x1).fill(TRANSPARENT);
        }
    }

    /// Makes transparent every pixel of `clip` outside `drawn` (the effect of an unbounded
    /// operation outside the shape it draws).
    fn clear_outside(&mut self, clip: &Rect, drawn: &Rect) {
        let clip = clip.intersect(&self.bounds());
        let drawn = drawn.intersect(&clip);
        if drawn.is_empty() {
            self.clear(&clip);
            return;
        }
        self.clear(&Rect {
            y1: drawn.y0,
            ..clip
        });
        self.clear(&Rect {
            y0: drawn.y1,
            ..clip
        });
        let middle = Rect {
            y0: drawn.y0,
            y1: drawn.y1,
            ..clip
        };
        self.clear(&Rect {
            x1: drawn.x0,
            ..middle
        });
        self.clear(&Rect {
            x0: drawn.x1,
            ..middle
        });
    }

    /// Draws `src` (its pixels `sx, sy, w, h`, clipped to it) at `(dx, dy)` with `op`, within
    /// `clip`: the canvas `drawImage(src, sx, sy, w, h, dx, dy, w, h)`. Returns the area
    /// drawn (the destination after clipping to the source).
    pub(crate) fn draw(
        &mut self,
        op: CompositeOp,
        clip: &Rect,
        src: Source<'_>,
        src_rect: Rect,
        dx: i64,
        dy: i64,
    ) -> Rect {
        // Clipping the source rectangle to the source clips the destination alike.
        let src_rect = src_rect.intersect(&src.bounds());
        let (ox, oy) = (dx - src_rect.x0, dy - src_rect.y0);
        let drawn = src_rect.translate(ox, oy);
        let visible = drawn.intersect(clip).intersect(&self.bounds());
        for y in visible.y0..visible.y1 {
            let row = src.row(y - oy, visible.x0 - ox, visible.x1 - ox);
            blend_row(op, row, self.row_mut(y, visible.x0, visible.x1));
        }
        if op.is_unbounded() {
            self.clear_outside(clip, &drawn);
        }
        drawn
    }

    /// [`draw`](Self::draw) from this surface itself (`copy` within a layer, which scrolls),
    /// correct when source and destination overlap.
    pub(crate) fn draw_within(
        &mut self,
        op: CompositeOp,
        clip: &Rect,
        src_rect: Rect,
        dx: i64,
        dy: i64,
    ) -> Rect {
        let src_rect = src_rect.intersect(&self.bounds());
        let (ox, oy) = (dx - src_rect.x0, dy - src_rect.y0);
        let drawn = src_rect.translate(ox, oy);
        let visible = drawn.intersect(clip).intersect(&self.bounds());
        // Each source row is copied out before its destination row is written; rows are
        // visited so that no source row is overwritten before it is read.
        let mut row = Vec::with_capacity(visible.width() as usize);
        let mut copy_row = |surface: &mut Self, y: i64| {
            row.clear();
            row.extend_from_slice(
                surface
                    .source()
                    .row(y - oy, visible.x0 - ox, visible.x1 - ox),
            );
            blend_row(op, &row, surface.row_mut(y, visible.x0, visible.x1));
        };
        if oy > 0 {
            for y in (visible.y0..visible.y1).rev() {
                copy_row(self, y);
            }
        } else {
            for y in visible.y0..visible.y1 {
                copy_row(self, y);
            }
        }
        if op.is_unbounded() {
            self.clear_outside(clip, &drawn);
        }
        drawn
    }

    /// Fills `rect` with `color` using `op`, within `clip`.
    pub(crate) fn fill_rect(&mut self, op: CompositeOp, clip: &Rect, rect: &Rect, color: Pixel) {
        let visible = rect.intersect(clip).intersect(&self.bounds());
        for y in visible.y0..visible.y1 {
            fill_row(op, color, self.row_mut(y, visible.x0, visible.x1));
        }
        if op.is_unbounded() {
            self.clear_outside(clip, rect);
        }
    }

    /// Composites spans of row `y` (sorted, disjoint, clipped to `x0..x1` of the row) with
    /// a colour or a pattern; for an unbounded `op`, clears the rest of `x0..x1`.
    pub(crate) fn paint_row(
        &mut self,
        op: CompositeOp,
        y: i64,
        (x0, x1): (i64, i64),
        spans: &[(i64, i64)],
        paint: &Paint<'_>,
    ) {
        let bounds = self.bounds();
        if y < bounds.y0 || y >= bounds.y1 {
            return;
        }
        let (x0, x1) = (x0.max(0), x1.min(bounds.x1));
        let mut cleared_to = x0;
        for &(a, b) in spans {
            let (a, b) = (a.max(x0), b.min(x1));
            if a >= b {
                continue;
            }
            if op.is_unbounded() && cleared_to < a {
                self.row_mut(y, cleared_to, a).fill(TRANSPARENT);
            }
            cleared_to = b;
            match paint {
                Paint::Color(color) => fill_row(op, *color, self.row_mut(y, a, b)),
                Paint::Pattern(pattern) => {
                    let row = self.row_mut(y, a, b);
                    for (x, d) in (a..b).zip(row) {
                        *d = blend(op, pattern.get(x, y), *d);
                    }
                }
            }
        }
        if op.is_unbounded() && cleared_to < x1 {
            self.row_mut(y, cleared_to, x1).fill(TRANSPARENT);
        }
    }

    /// `transfer` / `put`: applies `function` to each pixel of the `w × h` rectangle at
    /// `(dx, dy)` and the one at `(sx, sy)` in `src` (transparent outside it), ignoring the
    /// clip and the transform, as `getImageData`/`putImageData` do.
    pub(crate) fn transfer(
        &mut self,
        function: u8,
        src: Source<'_>,
        (sx, sy): (i64, i64),
        (w, h): (i64, i64),
        (dx, dy): (i64, i64),
    ) {
        let visible = Rect::new(dx, dy, w, h).intersect(&self.bounds());
        for y in visible.y0..visible.y1 {
            let src_y = y - dy + sy;
            let row = self.row_mut(y, visible.x0, visible.x1);
            for (x, d) in (visible.x0..visible.x1).zip(row) {
                *d = transfer_pixel(function, src.get(x - dx + sx, src_y), *d);
            }
        }
    }
}

/// What a path is filled with: a colour (`cfill`) or a repeating layer (`lfill`).
pub(crate) enum Paint<'a> {
    Color(Pixel),
    Pattern(Pattern<'a>),
}

/// A layer repeated infinitely from the origin, as `createPattern(canvas, "repeat")`.
pub(crate) struct Pattern<'a> {
    pub(crate) source: Source<'a>,
}

impl Pattern<'_> {
    #[inline]
    fn get(&self, x: i64, y: i64) -> Pixel {
        let (w, h) = (i64::from(self.source.width), i64::from(self.source.height));
        if w == 0 || h == 0 {
            return TRANSPARENT;
        }
        self.source.get(x.rem_euclid(w), y.rem_euclid(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_onto_transparent_and_opaque_source_are_exact() {
        for s in [[10, 20, 30, 1], [200, 100, 0, 128], [1, 2, 3, 255]] {
            assert_eq!(blend(CompositeOp::Over, s, TRANSPARENT), s);
            assert_eq!(blend(CompositeOp::Over, s, [9, 9, 9, 0]), s);
            assert_eq!(blend(CompositeOp::Over, [1, 2, 3, 255], s), [1, 2, 3, 255]);
            assert_eq!(blend(CompositeOp::Over, TRANSPARENT, s), s);
        }
        // Half-transparent white over opaque black: mid grey, opaque.
        assert_eq!(
            blend(CompositeOp::Over, [255, 255, 255, 128], [0, 0, 0, 255]),
            [128, 128, 128, 255]
        );
    }

    #[test]
    fn porter_duff_operations_follow_the_canvas_definitions() {
        let s = [255, 0, 0, 255];
        let d = [0, 0, 255, 255];
        assert_eq!(blend(CompositeOp::Src, s, d), s);
        assert_eq!(blend(CompositeOp::Rout, s, d), TRANSPARENT);
        assert_eq!(blend(CompositeOp::Rover, s, d), d);
        assert_eq!(blend(CompositeOp::In, s, d), s);
        assert_eq!(blend(CompositeOp::In, s, TRANSPARENT), TRANSPARENT);
        assert_eq!(blend(CompositeOp::Out, s, TRANSPARENT), s);
        assert_eq!(blend(CompositeOp::Out, s, d), TRANSPARENT);
        assert_eq!(blend(CompositeOp::Atop, s, d), s);
        assert_eq!(blend(CompositeOp::Atop, s, TRANSPARENT), TRANSPARENT);
        assert_eq!(blend(CompositeOp::Rin, s, d), d);
        assert_eq!(blend(CompositeOp::Ratop, s, d), d);
        assert_eq!(blend(CompositeOp::Xor, s, d), TRANSPARENT);
        assert_eq!(blend(CompositeOp::Xor, s, TRANSPARENT), s);
        assert_eq!(
            blend(CompositeOp::Plus, [100, 0, 0, 255], [100, 50, 0, 255]),
            [200, 50, 0, 255]
        );
        // Transparent results are canonical.
        assert_eq!(blend(CompositeOp::Src, [5, 5, 5, 0], d), TRANSPARENT);
    }

    #[test]
    fn unmapped_masks_have_no_operation() {
        for mask in [0x0, 0x3, 0x5, 0x7, 0xD, 0x10, 0xFF] {
            assert_eq!(CompositeOp::from_mask(mask), None);
        }
        for mask in [0x1, 0x2, 0x4, 0x6, 0x8, 0x9, 0xA, 0xB, 0xC, 0xE, 0xF] {
            assert_eq!(
                CompositeOp::from_mask(mask).map(CompositeOp::mask),
                Some(mask)
            );
        }
    }

    #[test]
    fn resize_keeps_the_overlap() {
        let mut s = Surface::new(2, 2);
        s.fill_rect(CompositeOp::Src, &s.bounds(), &s.bounds(), [1, 2, 3, 255]);
        s.resize(3, 1);
        assert_eq!(s.pixels(), &[[1, 2, 3, 255], [1, 2, 3, 255], TRANSPARENT]);
        s.resize(0, 5);
        assert_eq!(s.area(), 0);
    }

    #[test]
    fn unbounded_operations_clear_outside_the_drawn_area_within_the_clip() {
        let mut s = Surface::new(4, 1);
        let all = s.bounds();
        s.fill_rect(CompositeOp::Src, &all, &all, [9, 9, 9, 255]);
        let clip = Rect::new(0, 0, 3, 1);
        s.fill_rect(
            CompositeOp::Src,
            &clip,
            &Rect::new(1, 0, 1, 1),
            [1, 1, 1, 255],
        );
        assert_eq!(
            s.pixels(),
            &[TRANSPARENT, [1, 1, 1, 255], TRANSPARENT, [9, 9, 9, 255]]
        );
    }

    #[test]
    fn transfer_functions_match_guacamole_common_js() {
        let s = [0b1100, 0b1100, 0, 77];
        let d = [0b1010, 0b1010, 255, 200];
        assert_eq!(transfer_pixel(0x1, s, d), [0b1000, 0b1000, 0, 200]);
        assert_eq!(transfer_pixel(0x6, s, d), [0b0110, 0b0110, 255, 200]);
        assert_eq!(transfer_pixel(0x3, s, d), s);
        assert_eq!(transfer_pixel(0x5, s, d), d);
        assert_eq!(transfer_pixel(0xC, s, d), [!0b1100, !0b1100, 255, 77]);
        assert_eq!(transfer_pixel(0x0, s, d), [0, 0, 0, 200]);
        assert_eq!(transfer_pixel(0x0, s, TRANSPARENT), TRANSPARENT);
    }
}
