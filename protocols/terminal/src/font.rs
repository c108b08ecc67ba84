//! The terminal's font: DejaVu Sans Mono (regular and bold) inside the binary, rasterised by
//! fontdue. No system font is needed.
//!
//! The fonts are parsed once per process (fontdue prepares every outline when it loads a
//! font) and shared by every terminal. A cell's size follows from the font size in points and
//! the client's DPI, as guacd's does (`font-size`, default 12 points; DPI from the client's
//! handshake, default 96).

use std::collections::HashMap;
use std::sync::OnceLock;

use fontdue::{Font, FontSettings};

use crate::palette::Rgb;

const REGULAR: &[u8] = include_bytes!("../fonts/DejaVuSansMono.ttf");
const BOLD: &[u8] = include_bytes!("../fonts/DejaVuSansMono-Bold.ttf");

/// The smallest and largest glyph size, in pixels, whatever `font-size` and DPI ask for.
pub const PIXEL_SIZE_RANGE: (f32, f32) = (6.0, 128.0);

/// How many rasterised glyphs one [`Rasteriser`] keeps before it starts again.
const COVERAGE_CACHE: usize = 2048;

struct Fonts {
    regular: Font,
    bold: Font,
}

fn fonts() -> Option<&'static Fonts> {
    static FONTS: OnceLock<Option<Fonts>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let settings = FontSettings {
                collection_index: 0,
                scale: 40.0,
                load_substitutions: false,
            };
            Some(Fonts {
                regular: Font::from_bytes(REGULAR, settings).ok()?,
                bold: Font::from_bytes(BOLD, settings).ok()?,
            })
        })
        .as_ref()
}

/// The size of one character cell, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellSize {
    /// Width of a narrow cell.
    pub width: u32,
    /// Height of a row.
    pub height: u32,
    /// Distance from a cell's top to the text's baseline.
    pub baseline: u32,
}

/// What a glyph is drawn with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Style {
    /// Text colour.
    pub fg: Rgb,
    /// Cell colour.
    pub bg: Rgb,
    /// Bold face.
    pub bold: bool,
    /// A line under the text.
    pub underline: bool,
}

/// Rasterises cells at one size, keeping each character's coverage for reuse.
pub struct Rasteriser {
    px: f32,
    cell: CellSize,
    coverage: HashMap<(char, bool), Coverage>,
}

impl std::fmt::Debug for Rasteriser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rasteriser")
            .field("px", &self.px)
            .field("cell", &self.cell)
            .finish_non_exhaustive()
    }
}

struct Coverage {
    x: i32,
    y: i32,
    width: usize,
    height: usize,
    alpha: Vec<u8>,
}

impl Rasteriser {
    /// A rasteriser for `font_size` points at `dpi`.
    pub fn new(font_size: f32, dpi: u32) -> Self {
        let px = font_size * dpi.max(1) as f32 / 72.0;
        let px = if px.is_finite() {
            px.clamp(PIXEL_SIZE_RANGE.0, PIXEL_SIZE_RANGE.1)
        } else {
            16.0
        };
        let cell = match fonts() {
            Some(fonts) => {
                let advance = fonts.regular.metrics('M', px).advance_width;
                let (ascent, descent) = fonts
                    .regular
                    .horizontal_line_metrics(px)
                    .map_or((px * 0.8, -px * 0.2), |m| (m.ascent, m.descent));
                CellSize {
                    width: (advance.round() as u32).max(1),
                    height: ((ascent - descent).ceil() as u32).max(1),
                    baseline: ascent.ceil() as u32,
                }
            }
            None => CellSize {
                width: (px * 0.6).round() as u32,
                height: px.ceil() as u32,
                baseline: (px * 0.8).ceil() as u32,
            },
        };
        Self {
            px,
            cell,
            coverage: HashMap::new(),
        }
    }

    /// The cell size.
    pub fn cell(&self) -> CellSize {
        self.cell
    }

    /// Draws `text` (one character and any combining marks after it) in `style` into `out`,
    /// an RGB image `stride` pixels wide, with the cell's top left at (`x0`, 0) and `cells`
    /// cells wide (2 for a wide character).
    pub fn draw(
        &mut self,
        text: &str,
        style: &Style,
        cells: u32,
        out: &mut [u8],
        stride: usize,
        x0: usize,
    ) {
        let width = (self.cell.width * cells) as usize;
        let height = self.cell.height as usize;
        let Rgb(br, bg, bb) = style.bg;
        for y in 0..height {
            for x in 0..width {
                put(out, (y * stride + x0 + x) * 3, [br, bg, bb]);
            }
        }
        for ch in text.chars().take(8) {
            self.blend(ch, style, width, out, stride, x0);
        }
        if style.underline {
            let y = (self.cell.baseline as usize + 1).min(height.saturating_sub(1));
            let Rgb(r, g, b) = style.fg;
            for x in 0..width {
                put(out, (y * stride + x0 + x) * 3, [r, g, b]);
            }
        }
    }

    fn blend(
        &mut self,
        ch: char,
        style: &Style,
        width: usize,
        out: &mut [u8],
        stride: usize,
        x0: usize,
    ) {
        let px = self.px;
        let baseline = self.cell.baseline as i32;
        let coverage = self.coverage.len();
        if coverage >= COVERAGE_CACHE {
            self.coverage.clear();
        }
        let glyph = self.coverage.entry((ch, style.bold)).or_insert_with(|| {
            let Some(fonts) = fonts() else {
                return Coverage {
                    x: 0,
                    y: 0,
                    width: 0,
                    height: 0,
                    alpha: Vec::new(),
                };
            };
            let font = if style.bold {
                &fonts.bold
            } else {
                &fonts.regular
            };
            let (metrics, mut alpha) = font.rasterize(ch, px);
            quantise(&mut alpha);
            Coverage {
                x: metrics.xmin,
                y: baseline - (metrics.height as i32 + metrics.ymin),
                width: metrics.width,
                height: metrics.height,
                alpha,
            }
        });
        let height = self.cell.height as i32;
        let (fg, bg) = (style.fg, style.bg);
        for gy in 0..glyph.height {
            let y = glyph.y + gy as i32;
            if y < 0 || y >= height {
                continue;
            }
            for gx in 0..glyph.width {
                let x = glyph.x + gx as i32;
                if x < 0 || x as usize >= width {
                    continue;
                }
                let a = u32::from(glyph.alpha.get(gy * glyph.width + gx).copied().unwrap_or(0));
                if a == 0 {
                    continue;
                }
                let at = (y as usize * stride + x0 + x as usize) * 3;
                let mix =
                    |f: u8, b: u8| ((u32::from(f) * a + u32::from(b) * (255 - a)) / 255) as u8;
                // Combining marks are drawn over what is there: blend with it, not the
                // background.
                let under = [
                    out.get(at).copied().unwrap_or(bg.0),
                    out.get(at + 1).copied().unwrap_or(bg.1),
                    out.get(at + 2).copied().unwrap_or(bg.2),
                ];
                put(
                    out,
                    at,
                    [
                        mix(fg.0, under[0]),
                        mix(fg.1, under[1]),
                        mix(fg.2, under[2]),
                    ],
                );
            }
        }
    }
}

/// Rounds coverage to 16 levels: a glyph in one pair of colours then has at most 16 colours,
/// so the renderer sends it as a 4-bit indexed PNG (half the bytes of its 256-level form;
/// the eye does not tell 16 levels of anti-aliasing from 256 at terminal sizes).
fn quantise(alpha: &mut [u8]) {
    for a in alpha {
        // (255 + 8) / 17 * 17 = 255: no overflow.
        *a = u8::try_from((u16::from(*a) + 8) / 17 * 17).unwrap_or(u8::MAX);
    }
}

fn put(out: &mut [u8], at: usize, rgb: [u8; 3]) {
    if let Some(pixel) = out.get_mut(at..at + 3) {
        pixel.copy_from_slice(&rgb);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twelve_points_at_96_dpi_is_a_16_pixel_font_in_a_cell_about_10_by_19() {
        let r = Rasteriser::new(12.0, 96);
        let cell = r.cell();
        assert_eq!(r.px, 16.0);
        assert!((9..=10).contains(&cell.width), "{cell:?}");
        assert!((18..=20).contains(&cell.height), "{cell:?}");
        assert!(cell.baseline < cell.height);
    }

    #[test]
    fn a_glyph_has_ink_and_a_space_has_none() {
        let mut r = Rasteriser::new(12.0, 96);
        let cell = r.cell();
        let stride = cell.width as usize;
        let mut out = vec![0u8; stride * cell.height as usize * 3];
        let style = Style {
            fg: Rgb(255, 255, 255),
            bg: Rgb(0, 0, 0),
            bold: false,
            underline: false,
        };
        r.draw("A", &style, 1, &mut out, stride, 0);
        let ink = out.iter().filter(|&&v| v > 128).count();
        assert!(ink > 20, "{ink}");
        r.draw(" ", &style, 1, &mut out, stride, 0);
        assert!(out.iter().all(|&v| v == 0));
    }

    #[test]
    fn absurd_sizes_are_clamped() {
        assert_eq!(Rasteriser::new(1e9, 96).px, PIXEL_SIZE_RANGE.1);
        assert_eq!(Rasteriser::new(-5.0, 0).px, PIXEL_SIZE_RANGE.0);
        assert_eq!(Rasteriser::new(f32::NAN, 96).px, 16.0);
    }
}
