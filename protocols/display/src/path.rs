//! Paths (`rect`, `start`, `line`, `arc`, `curve`, `close`), transforms and their
//! rasterisation.
//!
//! A path is kept twice: as the operations received (to re-emit them in a key frame) and in
//! device space, transformed when each operation arrives as a canvas does. Filling samples
//! pixel centres with the non-zero winding rule and no anti-aliasing: exact for rectangles
//! with integer coordinates under an integer translation (everything guacd draws), an
//! approximation (edge pixels may differ from a browser's anti-aliased ones) otherwise.
//! Strokes are approximated by filling a polygon per segment, with polygon caps and joins.

use std::f64::consts::TAU;

use crate::surface::Rect;

/// A 2D affine transform, in the canvas order `(a, b, c, d, e, f)`: `x' = a·x + c·y + e`,
/// `y' = b·x + d·y + f`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Affine(pub(crate) [f64; 6]);

impl Affine {
    pub(crate) const IDENTITY: Self = Self([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);

    /// `self × m`: the canvas `transform(m)` (points go through `m` first).
    pub(crate) fn then(&self, m: &Self) -> Self {
        let [a, b, c, d, e, f] = self.0;
        let [ma, mb, mc, md, me, mf] = m.0;
        Self([
            a * ma + c * mb,
            b * ma + d * mb,
            a * mc + c * md,
            b * mc + d * md,
            a * me + c * mf + e,
            b * me + d * mf + f,
        ])
    }

    pub(crate) fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let [a, b, c, d, e, f] = self.0;
        (a * x + c * y + e, b * x + d * y + f)
    }

    /// `Some((dx, dy))` when the transform is a translation by whole pixels (so images and
    /// rectangles stay pixel-aligned).
    pub(crate) fn integer_translation(&self) -> Option<(i64, i64)> {
        let [a, b, c, d, e, f] = self.0;
        let whole = |v: f64| v.fract() == 0.0 && v.abs() < 1e15;
        ((a, b, c, d) == (1.0, 0.0, 0.0, 1.0) && whole(e) && whole(f))
            .then_some((e as i64, f as i64))
    }

    /// How much the transform scales lengths (the square root of its determinant).
    fn scale(&self) -> f64 {
        let [a, b, c, d, ..] = self.0;
        (a * d - b * c).abs().sqrt()
    }
}

/// One path instruction as received (arguments as parsed), for re-emission.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PathOp {
    Rect {
        x: i32,
        y: i32,
        w: i32,
        h: i32,
    },
    Start {
        x: i32,
        y: i32,
    },
    Line {
        x: i32,
        y: i32,
    },
    Arc {
        x: i32,
        y: i32,
        radius: i32,
        start: f64,
        end: f64,
        negative: bool,
    },
    Curve {
        cp1: (i32, i32),
        cp2: (i32, i32),
        x: i32,
        y: i32,
    },
    Close,
}

/// A subpath in device space.
#[derive(Debug, Clone, PartialEq)]
struct Subpath {
    points: Vec<(f64, f64)>,
    closed: bool,
    /// Made by `rect` under an integer translation, with integer corners: filling it is exact.
    aligned_rect: bool,
}

/// The current path of a layer, with guacamole-common-js's "path closed" flag: after a fill,
/// stroke, clip or `close`, the path stays current (a second `cfill` fills it again) but the
/// next path instruction starts a new one.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Path {
    ops: Vec<PathOp>,
    /// Whether every op was added under the identity transform, so re-emitting `ops` on a
    /// fresh layer rebuilds the same path.
    transformed: bool,
    subpaths: Vec<Subpath>,
    points: usize,
    closed: bool,
}

/// The path would exceed [`DisplayLimits::max_path_points`](crate::DisplayLimits).
#[derive(Debug)]
pub(crate) struct PathTooLong;

/// Segments of a flattened Bézier curve.
const CURVE_SEGMENTS: usize = 16;
/// Most segments of a flattened arc.
const MAX_ARC_SEGMENTS: f64 = 128.0;
/// Vertices of the polygon that stands for a round cap or join.
const ROUND_VERTICES: usize = 12;

impl Path {
    pub(crate) fn new() -> Self {
        Self {
            closed: true,
            ..Self::default()
        }
    }

    /// The operations that rebuild this path on a fresh layer, and whether it is closed;
    /// `None` when it is empty.
    pub(crate) fn ops(&self) -> Option<(&[PathOp], bool)> {
        (!self.ops.is_empty()).then_some((&self.ops, self.closed))
    }

    /// Whether the path can be rebuilt by re-emitting its operations (empty, or built under
    /// the identity transform).
    pub(crate) fn is_reproducible(&self) -> bool {
        !self.transformed
    }

    /// Clears the path (`reset`, a resize).
    pub(crate) fn clear(&mut self, closed: bool) {
        *self = Self {
            closed,
            ..Self::new()
        };
    }

    /// Marks the path closed (after a fill, a stroke or a clip).
    pub(crate) fn set_closed(&mut self) {
        self.closed = true;
    }

    /// Adds one path instruction, transformed by `m`; `limit` bounds the points.
    pub(crate) fn add(&mut self, op: PathOp, m: &Affine, limit: usize) -> Result<(), PathTooLong> {
        if self.closed && !matches!(op, PathOp::Close) {
            self.clear(false);
        }
        let mut points = Vec::new();
        let p = |x: i32, y: i32| m.apply(x.into(), y.into());
        match op {
            PathOp::Rect { x, y, w, h } => {
                let (x0, y0, x1, y1) = (
                    f64::from(x),
                    f64::from(y),
                    f64::from(x) + f64::from(w),
                    f64::from(y) + f64::from(h),
                );
                points.extend([
                    m.apply(x0, y0),
                    m.apply(x1, y0),
                    m.apply(x1, y1),
                    m.apply(x0, y1),
                ]);
            }
            PathOp::Start { x, y } | PathOp::Line { x, y } => points.push(p(x, y)),
            PathOp::Curve { cp1, cp2, x, y } => {
                let start = self.current().unwrap_or_else(|| p(cp1.0, cp1.1));
                let (c1, c2, end) = (p(cp1.0, cp1.1), p(cp2.0, cp2.1), p(x, y));
                points.push(start);
                for i in 1..=CURVE_SEGMENTS {
                    let t = i as f64 / CURVE_SEGMENTS as f64;
                    let u = 1.0 - t;
                    let (w0, w1, w2, w3) = (u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t);
                    points.push((
                        w0 * start.0 + w1 * c1.0 + w2 * c2.0 + w3 * end.0,
                        w0 * start.1 + w1 * c1.1 + w2 * c2.1 + w3 * end.1,
                    ));
                }
            }
            PathOp::Arc {
                x,
                y,
                radius,
                start,
                end,
                negative,
            } => {
                let sweep = arc_sweep(start, end, negative);
                let r = f64::from(radius);
                let segments = (sweep.abs() * r.sqrt().max(1.0) * 2.0)
                    .ceil()
                    .clamp(1.0, MAX_ARC_SEGMENTS) as usize;
                for i in 0..=segments {
                    let angle = start + sweep * i as f64 / segments as f64;
                    points.push(m.apply(
                        f64::from(x) + r * angle.cos(),
                        f64::from(y) + r * angle.sin(),
                    ));
                }
            }
            PathOp::Close => {}
        }
        let total = self.points.saturating_add(points.len());
        if total > limit || self.ops.len() >= limit {
            return Err(PathTooLong);
        }
        self.points = total;
        self.transformed |= *m != Affine::IDENTITY;
        let aligned = m.integer_translation().is_some();
        match &op {
            PathOp::Rect { x, y, .. } => {
                self.subpaths.push(Subpath {
                    points,
                    closed: true,
                    aligned_rect: aligned,
                });
                self.subpaths.push(Subpath {
                    points: vec![p(*x, *y)],
                    closed: false,
                    aligned_rect: false,
                });
            }
            PathOp::Start { .. } => {
                self.subpaths.push(Subpath {
                    points,
                    closed: false,
                    aligned_rect: false,
                });
            }
            PathOp::Line { .. } | PathOp::Curve { .. } | PathOp::Arc { .. } => {
                match self.subpaths.last_mut() {
                    Some(last) if !last.closed => {
                        // An arc joins the current point to its start with a line; a curve
                        // starts at the current point, already in `points`.
                        let skip = usize::from(matches!(op, PathOp::Curve { .. }));
                        last.points.extend(points.into_iter().skip(skip));
                        last.aligned_rect = false;
                    }
                    _ => self.subpaths.push(Subpath {
                        points,
                        closed: false,
                        aligned_rect: false,
                    }),
                }
            }
            PathOp::Close => {
                if let Some(last) = self.subpaths.last_mut()
                    && !last.closed
                {
                    last.closed = true;
                    let first = last.points.first().copied();
                    if let Some(first) = first {
                        self.subpaths.push(Subpath {
                            points: vec![first],
                            closed: false,
                            aligned_rect: false,
                        });
                    }
                }
            }
        }
        self.ops.push(op);
        if matches!(self.ops.last(), Some(PathOp::Close)) {
            self.closed = true;
        }
        Ok(())
    }

    fn current(&self) -> Option<(f64, f64)> {
        self.subpaths
            .last()
            .filter(|s| !s.closed)
            .and_then(|s| s.points.last().copied())
    }

    /// Whether filling this path is exact: only pixel-aligned rectangles.
    pub(crate) fn fill_is_exact(&self) -> bool {
        self.subpaths.iter().all(|s| {
            s.points.len() < 2
                || (s.aligned_rect
                    && s.points
                        .iter()
                        .all(|&(x, y)| x.fract() == 0.0 && y.fract() == 0.0))
        })
    }

    /// The single pixel-aligned rectangle this path is, if it is one (the common `rect` +
    /// `cfill`), for a fast fill.
    pub(crate) fn single_rect(&self) -> Option<Rect> {
        let mut shapes = self.subpaths.iter().filter(|s| s.points.len() >= 2);
        let only = shapes.next()?;
        if shapes.next().is_some() || !only.aligned_rect || !self.fill_is_exact() {
            return None;
        }
        let xs = only.points.iter().map(|p| p.0);
        let ys = only.points.iter().map(|p| p.1);
        let (x0, x1) = (
            xs.clone().fold(f64::INFINITY, f64::min),
            xs.fold(f64::NEG_INFINITY, f64::max),
        );
        let (y0, y1) = (
            ys.clone().fold(f64::INFINITY, f64::min),
            ys.fold(f64::NEG_INFINITY, f64::max),
        );
        Some(Rect {
            x0: x0 as i64,
            y0: y0 as i64,
            x1: x1 as i64,
            y1: y1 as i64,
        })
    }

    /// The edges of the path filled (every subpath implicitly closed).
    pub(crate) fn fill_shape(&self) -> Shape {
        let mut shape = Shape::default();
        for subpath in &self.subpaths {
            shape.add_polygon(&subpath.points);
        }
        shape
    }

    /// The polygon union approximating a stroke of the path.
    pub(crate) fn stroke_shape(&self, style: &StrokeStyle, m: &Affine) -> Shape {
        let mut shape = Shape::default();
        let half = f64::from(style.thickness) * m.scale() / 2.0;
        if half <= 0.0 || !half.is_finite() {
            return shape;
        }
        for subpath in &self.subpaths {
            stroke_subpath(&mut shape, subpath, style, half);
        }
        shape
    }

    /// The device-space bounding box of the path, in whole pixels.
    pub(crate) fn bounds(&self) -> Rect {
        let mut points = self.subpaths.iter().flat_map(|s| s.points.iter());
        let Some(&(x, y)) = points.next() else {
            return Rect::EMPTY;
        };
        let (mut x0, mut y0, mut x1, mut y1) = (x, y, x, y);
        for &(x, y) in points {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
        Rect {
            x0: to_pixel(x0.floor()),
            y0: to_pixel(y0.floor()),
            x1: to_pixel(x1.ceil()),
            y1: to_pixel(y1.ceil()),
        }
    }
}

/// The sweep of a canvas `arc()`, signed (negative when drawn anticlockwise).
fn arc_sweep(start: f64, end: f64, negative: bool) -> f64 {
    let delta = if negative { start - end } else { end - start };
    let sweep = if delta >= TAU {
        TAU
    } else {
        delta.rem_euclid(TAU)
    };
    if negative { -sweep } else { sweep }
}

/// Line cap, join and thickness of `cstroke`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StrokeStyle {
    pub(crate) cap: u32,
    pub(crate) join: u32,
    pub(crate) thickness: i32,
}

const CAP_ROUND: u32 = 1;
const CAP_SQUARE: u32 = 2;
const JOIN_ROUND: u32 = 2;

fn stroke_subpath(shape: &mut Shape, subpath: &Subpath, style: &StrokeStyle, half: f64) {
    let mut points: Vec<(f64, f64)> = subpath.points.clone();
    points.dedup();
    if subpath.closed
        && points.len() > 2
        && let Some(&first) = points.first()
    {
        points.push(first);
    }
    let count = points.len();
    let segments: Vec<_> = points
        .windows(2)
        .filter_map(|w| match w {
            [a, b] => Some((*a, *b)),
            _ => None,
        })
        .collect();
    for (i, &(a, b)) in segments.iter().enumerate() {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len = (dx * dx + dy * dy).sqrt();
        if len == 0.0 || !len.is_finite() {
            continue;
        }
        let (ux, uy) = (dx / len, dy / len);
        let (nx, ny) = (-uy * half, ux * half);
        let open = !subpath.closed;
        let extend = |first: bool| {
            if open && style.cap == CAP_SQUARE && first {
                half
            } else {
                0.0
            }
        };
        let (a, b) = (
            (a.0 - ux * extend(i == 0), a.1 - uy * extend(i == 0)),
            (
                b.0 + ux * extend(i + 1 == segments.len()),
                b.1 + uy * extend(i + 1 == segments.len()),
            ),
        );
        shape.add_polygon_oriented(&[
            (a.0 + nx, a.1 + ny),
            (b.0 + nx, b.1 + ny),
            (b.0 - nx, b.1 - ny),
            (a.0 - nx, a.1 - ny),
        ]);
    }
    let round_ends = style.cap == CAP_ROUND && !subpath.closed;
    for (i, &p) in points.iter().enumerate() {
        let end = i == 0 || i + 1 == count;
        let round = if end && !subpath.closed {
            round_ends
        } else {
            style.join == JOIN_ROUND
        };
        if round {
            let circle: Vec<_> = (0..ROUND_VERTICES)
                .map(|k| {
                    let angle = TAU * k as f64 / ROUND_VERTICES as f64;
                    (p.0 + half * angle.cos(), p.1 + half * angle.sin())
                })
                .collect();
            shape.add_polygon_oriented(&circle);
        } else if !end || subpath.closed {
            // Bevel (and miter, approximated as bevel): the triangles between the offsets of
            // the two segments meeting here.
            let prev = if i == 0 {
                points.get(count.saturating_sub(2))
            } else {
                points.get(i - 1)
            };
            if let (Some(&prev), Some(&next)) = (prev, points.get(i + 1)) {
                let normal = |a: (f64, f64), b: (f64, f64)| {
                    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
                    let len = (dx * dx + dy * dy).sqrt();
                    if len == 0.0 {
                        (0.0, 0.0)
                    } else {
                        (-dy / len * half, dx / len * half)
                    }
                };
                let (n1, n2) = (normal(prev, p), normal(p, next));
                shape.add_polygon_oriented(&[
                    p,
                    (p.0 + n1.0, p.1 + n1.1),
                    (p.0 + n2.0, p.1 + n2.1),
                ]);
                shape.add_polygon_oriented(&[
                    p,
                    (p.0 - n1.0, p.1 - n1.1),
                    (p.0 - n2.0, p.1 - n2.1),
                ]);
            }
        }
    }
}

/// `(x0, y0, x1, y1, winding)` with `y0 < y1`.
type Edge = (f64, f64, f64, f64, i32);

/// A set of edges to fill with the non-zero winding rule.
#[derive(Debug, Default)]
pub(crate) struct Shape {
    edges: Vec<Edge>,
}

impl Shape {
    /// The work of rasterising `area`: rows plus, for each edge, the rows it crosses.
    pub(crate) fn work(&self, area: &Rect) -> u64 {
        let (top, bottom) = (area.y0 as f64, area.y1 as f64);
        let crossed: f64 = self
            .edges
            .iter()
            .map(|e| (e.3.min(bottom) - e.1.max(top)).max(0.0) + 1.0)
            .sum();
        crossed as u64 + area.height() as u64
    }

    fn add_polygon(&mut self, points: &[(f64, f64)]) {
        if points.len() < 2 {
            return;
        }
        let next = points.iter().skip(1).chain(points.first());
        for (&(x0, y0), &(x1, y1)) in points.iter().zip(next) {
            if !(x0.is_finite() && y0.is_finite() && x1.is_finite() && y1.is_finite()) || y0 == y1 {
                continue;
            }
            if y0 < y1 {
                self.edges.push((x0, y0, x1, y1, 1));
            } else {
                self.edges.push((x1, y1, x0, y0, -1));
            }
        }
    }

    /// Adds a polygon turned so that its signed area is positive: a union of such polygons
    /// is what the non-zero rule fills.
    fn add_polygon_oriented(&mut self, points: &[(f64, f64)]) {
        let next = points.iter().skip(1).chain(points.first());
        let area: f64 = points
            .iter()
            .zip(next)
            .map(|(a, b)| a.0 * b.1 - b.0 * a.1)
            .sum();
        if area < 0.0 {
            let reversed: Vec<_> = points.iter().rev().copied().collect();
            self.add_polygon(&reversed);
        } else {
            self.add_polygon(points);
        }
    }

    /// The bounding box of the edges, in whole pixels.
    pub(crate) fn bounds(&self) -> Rect {
        let mut r: Option<(f64, f64, f64, f64)> = None;
        for &(x0, y0, x1, y1, _) in &self.edges {
            let (a, b) = (x0.min(x1), x0.max(x1));
            r = Some(match r {
                None => (a, y0, b, y1),
                Some((rx0, ry0, rx1, ry1)) => (rx0.min(a), ry0.min(y0), rx1.max(b), ry1.max(y1)),
            });
        }
        r.map_or(Rect::EMPTY, |(x0, y0, x1, y1)| Rect {
            x0: to_pixel(x0.floor()),
            y0: to_pixel(y0.floor()),
            x1: to_pixel(x1.ceil()),
            y1: to_pixel(y1.ceil()),
        })
    }

    /// Calls `row(y, spans)` for every row of `area`, with the sorted, disjoint spans
    /// `[x0, x1)` of pixels whose centres the shape covers (possibly none).
    pub(crate) fn for_each_row(&self, area: &Rect, mut row: impl FnMut(i64, &[(i64, i64)])) {
        let mut edges: Vec<_> = self.edges.clone();
        edges.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut next = 0;
        let mut active: Vec<Edge> = Vec::new();
        let mut crossings: Vec<(f64, i32)> = Vec::new();
        let mut spans: Vec<(i64, i64)> = Vec::new();
        for y in area.y0..area.y1 {
            let centre = y as f64 + 0.5;
            crossings.clear();
            spans.clear();
            while let Some(&edge) = edges.get(next)
                && edge.1 <= centre
            {
                active.push(edge);
                next += 1;
            }
            active.retain(|edge| centre < edge.3);
            for &(x0, y0, x1, y1, winding) in &active {
                crossings.push((x0 + (centre - y0) * (x1 - x0) / (y1 - y0), winding));
            }
            crossings.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut winding = 0;
            let mut start = 0.0;
            for &(x, w) in &crossings {
                if winding == 0 {
                    start = x;
                }
                winding += w;
                if winding == 0 {
                    let (a, b) = (pixel_from(start, area), pixel_from(x, area));
                    if a < b {
                        spans.push((a, b));
                    }
                }
            }
            row(y, &spans);
        }
    }
}

/// The first pixel whose centre is at or right of `x`, clamped to `area`.
fn pixel_from(x: f64, area: &Rect) -> i64 {
    to_pixel((x - 0.5).ceil()).clamp(area.x0, area.x1)
}

/// A coordinate in pixels as an integer, saturating far outside any layer.
fn to_pixel(v: f64) -> i64 {
    v.clamp(-1e12, 1e12) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(shape: &Shape, area: Rect) -> Vec<(i64, Vec<(i64, i64)>)> {
        let mut out = Vec::new();
        shape.for_each_row(&area, |y, s| out.push((y, s.to_vec())));
        out
    }

    #[test]
    fn rectangles_fill_exactly_the_pixels_they_cover() {
        let mut path = Path::new();
        path.add(
            PathOp::Rect {
                x: 1,
                y: 1,
                w: 2,
                h: 1,
            },
            &Affine::IDENTITY,
            100,
        )
        .unwrap();
        assert!(path.fill_is_exact());
        assert_eq!(path.single_rect(), Some(Rect::new(1, 1, 2, 1)));
        let rows = spans(&path.fill_shape(), Rect::new(0, 0, 4, 3));
        assert_eq!(rows, vec![(0, vec![]), (1, vec![(1, 3)]), (2, vec![])]);
    }

    #[test]
    fn opposite_rectangles_cancel_under_the_non_zero_rule() {
        let mut path = Path::new();
        path.add(
            PathOp::Rect {
                x: 0,
                y: 0,
                w: 4,
                h: 1,
            },
            &Affine::IDENTITY,
            100,
        )
        .unwrap();
        path.add(
            PathOp::Rect {
                x: 3,
                y: 0,
                w: -2,
                h: 1,
            },
            &Affine::IDENTITY,
            100,
        )
        .unwrap();
        assert_eq!(path.single_rect(), None);
        let rows = spans(&path.fill_shape(), Rect::new(0, 0, 4, 1));
        assert_eq!(rows, vec![(0, vec![(0, 1), (3, 4)])]);
    }

    #[test]
    fn closed_path_restarts_on_the_next_instruction() {
        let mut path = Path::new();
        path.add(
            PathOp::Rect {
                x: 0,
                y: 0,
                w: 1,
                h: 1,
            },
            &Affine::IDENTITY,
            100,
        )
        .unwrap();
        path.set_closed();
        path.add(
            PathOp::Rect {
                x: 5,
                y: 5,
                w: 1,
                h: 1,
            },
            &Affine::IDENTITY,
            100,
        )
        .unwrap();
        assert_eq!(path.single_rect(), Some(Rect::new(5, 5, 1, 1)));
        assert_eq!(path.ops().map(|(ops, _)| ops.len()), Some(1));
    }

    #[test]
    fn points_are_bounded() {
        let mut path = Path::new();
        for i in 0..4 {
            path.add(PathOp::Line { x: i, y: i }, &Affine::IDENTITY, 4)
                .unwrap();
        }
        assert!(
            path.add(PathOp::Line { x: 9, y: 9 }, &Affine::IDENTITY, 4)
                .is_err()
        );
        let arc = PathOp::Arc {
            x: 0,
            y: 0,
            radius: 1_000_000,
            start: 0.0,
            end: 1e300,
            negative: false,
        };
        let mut path = Path::new();
        path.add(arc, &Affine::IDENTITY, 1000).unwrap();
        assert!(path.points <= MAX_ARC_SEGMENTS as usize + 1);
    }

    #[test]
    fn a_triangle_is_filled_at_pixel_centres() {
        let mut path = Path::new();
        for op in [
            PathOp::Start { x: 0, y: 0 },
            PathOp::Line { x: 4, y: 0 },
            PathOp::Line { x: 0, y: 4 },
        ] {
            path.add(op, &Affine::IDENTITY, 100).unwrap();
        }
        assert!(!path.fill_is_exact());
        let rows = spans(&path.fill_shape(), Rect::new(0, 0, 4, 4));
        assert_eq!(
            rows,
            vec![
                (0, vec![(0, 3)]),
                (1, vec![(0, 2)]),
                (2, vec![(0, 1)]),
                (3, vec![])
            ]
        );
    }

    #[test]
    fn strokes_cover_the_line() {
        let mut path = Path::new();
        path.add(PathOp::Start { x: 0, y: 2 }, &Affine::IDENTITY, 100)
            .unwrap();
        path.add(PathOp::Line { x: 6, y: 2 }, &Affine::IDENTITY, 100)
            .unwrap();
        let style = StrokeStyle {
            cap: 0,
            join: 0,
            thickness: 2,
        };
        let rows = spans(
            &path.stroke_shape(&style, &Affine::IDENTITY),
            Rect::new(0, 0, 6, 5),
        );
        assert_eq!(rows[1].1, vec![(0, 6)]);
        assert_eq!(rows[2].1, vec![(0, 6)]);
        assert_eq!(rows[0].1, vec![]);
    }
}
