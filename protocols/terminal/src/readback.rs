//! Reading text back from pixels drawn with the terminal's font: how tests (and tools that
//! check a recording) see what a user sees, from a display model's pixels rather than from
//! the emulator's state.
//!
//! Each cell of the grid is compared with every printable ASCII character (and any extra
//! characters asked for), regular and bold, rasterised in the cell's own colours: its
//! background is its most common colour and its foreground the colour farthest from it. A
//! uniform cell is a space; a cell that matches nothing closely is `?` (the text cursor's
//! translucent block over a character reads so).

use std::collections::HashMap;

use crate::font::{Rasteriser, Style};
use crate::palette::Rgb;

/// Reads the rows of text in `pixels` (RGBA, `width` × `height`, row-major; cells from the
/// top left, a partial cell at the right or bottom edge ignored) drawn at
/// `font_size` points and `dpi`. Trailing spaces are trimmed; `extra` adds characters beyond
/// printable ASCII to recognise.
pub fn read_text(
    pixels: &[[u8; 4]],
    width: u32,
    height: u32,
    font_size: f32,
    dpi: u32,
    extra: &str,
) -> Vec<String> {
    let mut raster = Rasteriser::new(font_size, dpi);
    let cell = raster.cell();
    let (cw, ch) = (cell.width as usize, cell.height as usize);
    let cols = width as usize / cw.max(1);
    let rows = height as usize / ch.max(1);
    let candidates: Vec<char> = (0x21u8..0x7f)
        .map(char::from)
        .chain(extra.chars())
        .collect();
    let mut rendered: HashMap<(char, bool, Rgb, Rgb), Vec<u8>> = HashMap::new();
    let mut lines = Vec::with_capacity(rows);
    for row in 0..rows {
        let mut line = String::with_capacity(cols);
        for col in 0..cols {
            let mut rgb = Vec::with_capacity(cw * ch * 3);
            for y in 0..ch {
                for x in 0..cw {
                    let at = (row * ch + y) * width as usize + col * cw + x;
                    let p = pixels.get(at).copied().unwrap_or([0, 0, 0, 255]);
                    rgb.extend_from_slice(&p[..3]);
                }
            }
            line.push(recognise(&rgb, &candidates, &mut raster, &mut rendered));
        }
        lines.push(line.trim_end().to_owned());
    }
    lines
}

fn recognise(
    cell: &[u8],
    candidates: &[char],
    raster: &mut Rasteriser,
    rendered: &mut HashMap<(char, bool, Rgb, Rgb), Vec<u8>>,
) -> char {
    let pixels: Vec<Rgb> = cell
        .chunks_exact(3)
        .filter_map(|p| match p {
            &[r, g, b] => Some(Rgb(r, g, b)),
            _ => None,
        })
        .collect();
    let mut counts: HashMap<Rgb, usize> = HashMap::new();
    for p in &pixels {
        *counts.entry(*p).or_default() += 1;
    }
    let Some(bg) = counts
        .iter()
        .max_by_key(|(c, n)| (**n, **c))
        .map(|(c, _)| *c)
    else {
        return ' ';
    };
    if counts.len() == 1 {
        return ' ';
    }
    let distance = |a: Rgb, b: Rgb| {
        a.0.abs_diff(b.0) as u32 + a.1.abs_diff(b.1) as u32 + a.2.abs_diff(b.2) as u32
    };
    let fg = pixels
        .iter()
        .copied()
        .max_by_key(|p| distance(*p, bg))
        .unwrap_or(bg);
    let cell_size = raster.cell();
    let stride = cell_size.width as usize;
    let mut best = ('?', usize::MAX);
    for &c in candidates {
        for bold in [false, true] {
            let glyph = rendered.entry((c, bold, fg, bg)).or_insert_with(|| {
                let mut out = vec![0; stride * cell_size.height as usize * 3];
                let style = Style {
                    fg,
                    bg,
                    bold,
                    underline: false,
                };
                raster.draw(&c.to_string(), &style, 1, &mut out, stride, 0);
                out
            });
            let wrong = glyph
                .chunks_exact(3)
                .zip(cell.chunks_exact(3))
                .filter(|(a, b)| a.iter().zip(b.iter()).any(|(x, y)| x.abs_diff(*y) > 24))
                .count();
            if wrong < best.1 {
                best = (c, wrong);
            }
        }
    }
    if best.1 * 20 <= pixels.len() {
        best.0
    } else {
        '?'
    }
}
