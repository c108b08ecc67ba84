//! [`Display::screen`]: what the user sees, as one picture.

use crate::display::Display;
use crate::surface::{CompositeOp, Pixel, blend};

/// The picture a client shows: the default layer with every visible layer attached to it
/// composited on top, as guacamole-common-js stacks them (children over their parent, by Z
/// and then in the order they were attached, at their position and opacity). Straight 8-bit
/// RGBA, row by row, `width × height` pixels.
///
/// Not included: the mouse pointer (browsers draw it as a CSS cursor, and the model's
/// [`cursor`](Self::cursor_hotspot) is kept separately), and layer distortions (`distort`;
/// guacd never sends one): a distorted layer is drawn at its position, untransformed, as
/// guacenc draws it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    width: u32,
    height: u32,
    pixels: Vec<Pixel>,
    cursor_hotspot: Option<(i32, i32)>,
}

impl Screen {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixels, row by row.
    pub fn pixels(&self) -> &[[u8; 4]] {
        &self.pixels
    }

    /// The pixel at `(x, y)`, `None` outside the screen.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let index = y as usize * self.width as usize + x as usize;
        self.pixels.get(index).copied()
    }

    /// The pointer's hotspot, when the server has set a pointer image.
    pub fn cursor_hotspot(&self) -> Option<(i32, i32)> {
        self.cursor_hotspot
    }

    /// Pixels that differ from `other`'s at the same place (all of them when the sizes
    /// differ): for test failure messages.
    pub fn differing_pixels(&self, other: &Self) -> usize {
        if (self.width, self.height) != (other.width, other.height) {
            return self.pixels.len().max(other.pixels.len());
        }
        self.pixels
            .iter()
            .zip(&other.pixels)
            .filter(|(a, b)| a != b)
            .count()
    }
}

impl Display {
    /// What the user sees now (see [`Screen`]). Costs a copy of every visible layer's pixels:
    /// for tests and verification tools, not for the recording path.
    pub fn screen(&self) -> Screen {
        let (width, height) = self.size();
        let pixels = self.render(0, 0);
        Screen {
            width,
            height,
            pixels,
            cursor_hotspot: self.cursor.set.then_some(self.cursor.hotspot),
        }
    }

    /// Layer `index` with its subtree composited, at the layer's own size. `depth` bounds
    /// the recursion (the tree has no cycles, and at most `max_layers` levels).
    fn render(&self, index: i32, depth: usize) -> Vec<Pixel> {
        let Some(layer) = self.layers.get(&index) else {
            return Vec::new();
        };
        let mut pixels = layer.surface.pixels().to_vec();
        if depth > self.limits.max_layers {
            return pixels;
        }
        let (width, height) = (layer.surface.width(), layer.surface.height());
        let mut children: Vec<_> = self
            .layers
            .iter()
            .filter(|&(&child, _)| child > 0 && self.live_parent(child) == Some(index))
            .filter_map(|(&child, layer)| Some((layer.node?, child)))
            .collect();
        children.sort_by_key(|(node, _)| (node.z, node.attach));
        for (node, child) in children {
            if node.opacity == 0 {
                continue;
            }
            let Some(surface) = self.layers.get(&child).map(|l| &l.surface) else {
                continue;
            };
            let (cw, ch) = (surface.width(), surface.height());
            let drawn = self.render(child, depth + 1);
            for cy in 0..ch {
                let y = i64::from(node.y) + i64::from(cy);
                if y < 0 || y >= i64::from(height) {
                    continue;
                }
                for cx in 0..cw {
                    let x = i64::from(node.x) + i64::from(cx);
                    if x < 0 || x >= i64::from(width) {
                        continue;
                    }
                    let source = cy as usize * cw as usize + cx as usize;
                    let Some(&[r, g, b, a]) = drawn.get(source) else {
                        continue;
                    };
                    let alpha = (u32::from(a) * u32::from(node.opacity) + 127) / 255;
                    let s = [r, g, b, u8::try_from(alpha).unwrap_or(u8::MAX)];
                    let target = y as usize * width as usize + x as usize;
                    if let Some(d) = pixels.get_mut(target) {
                        *d = blend(CompositeOp::Over, s, *d);
                    }
                }
            }
        }
        pixels
    }
}
