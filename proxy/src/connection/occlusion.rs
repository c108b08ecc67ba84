//! Which images in a window of display output nobody can ever see, so the recording's display
//! model need not decode them.
//!
//! The graphical recording keeps a display model only to take key frames, and decoding every
//! PNG guacd sends is most of its cost. Most of those images are painted over before anything
//! reads them: a screen region is redrawn many times between two key frames. [`hidden_images`]
//! finds them in a window of instructions with one backward pass, conservatively:
//!
//! * an image is hidden when it is a PNG whose every grid cell ([`CELL`] pixels square) lies
//!   entirely inside later images on the same layer that replace what is under them (drawn
//!   with `SRC`, 0xC, or opaque and drawn with `OVER`, 0xE), with nothing in between that
//!   reads those pixels (`copy`, `transfer` or `cursor` from them, a drawing that blends
//!   with them, `lfill`, `size`, `dispose`);
//! * only complete image streams (`img`, `blob`s, `end` all in the window) are hidden; a PNG
//!   is opaque when its colour type is grey or RGB with no `tRNS` before the first `IDAT`,
//!   as its first `blob` shows;
//! * a layer with any `clip`, `transform`, `identity`, `push`, `pop` or `reset` in the window
//!   is left alone (its drawings may not land where their coordinates say), and so is any
//!   layer beyond [`MAX_LAYERS`] or coordinate beyond [`GRID`] cells.
//!
//! Hiding changes only what the model decodes, never what is recorded: the recording holds
//! every instruction. A hostile guacd can at worst make a key frame show a screen that a
//! corrupt covering image would not have drawn; the instruction stream itself stays exact.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use zt_guac::{Instruction, opcode};

/// Side of a grid cell, in pixels.
pub const CELL: i64 = 16;
/// Cells per side of a layer's grid (8192 pixels).
pub const GRID: usize = 512;
/// Layers tracked per window.
pub const MAX_LAYERS: usize = 16;

/// Guacamole's `SRC` channel mask: the source replaces the destination.
const MASK_SRC: &str = "12";
/// Guacamole's `OVER` channel mask: the source is drawn over the destination.
const MASK_OVER: &str = "14";

struct Image {
    layer: i64,
    mask: String,
    /// JPEG is opaque whatever its size.
    jpeg: bool,
    rect: Option<(i64, i64, i64, i64)>,
    opaque: bool,
    first_blob_seen: bool,
    positions: Vec<usize>,
    end: Option<usize>,
}

/// Cells of one layer known to be painted over later in the window.
struct Grid {
    bits: Vec<u64>,
}

impl Grid {
    fn new() -> Self {
        Self {
            bits: vec![0; GRID * GRID / 64],
        }
    }

    fn cell_range(start: i64, len: i64, inner: bool) -> Option<(usize, usize)> {
        if start < 0 || len <= 0 {
            return None;
        }
        let end = start.checked_add(len)?;
        let (first, last) = if inner {
            // Cells entirely inside [start, end).
            (start.saturating_add(CELL - 1) / CELL, end / CELL)
        } else {
            // Cells touching [start, end).
            (start / CELL, end.saturating_add(CELL - 1) / CELL)
        };
        let last = usize::try_from(last).ok()?;
        let first = usize::try_from(first).ok()?;
        if inner {
            Some((first.min(GRID), last.min(GRID)))
        } else if last > GRID {
            None
        } else {
            Some((first, last))
        }
    }

    fn covers(&self, (x, y, w, h): (i64, i64, i64, i64)) -> bool {
        let (Some((x0, x1)), Some((y0, y1))) =
            (Self::cell_range(x, w, false), Self::cell_range(y, h, false))
        else {
            return false;
        };
        (y0..y1).all(|cy| (x0..x1).all(|cx| self.get(cx, cy)))
    }

    fn cover(&mut self, (x, y, w, h): (i64, i64, i64, i64)) {
        let (Some((x0, x1)), Some((y0, y1))) =
            (Self::cell_range(x, w, true), Self::cell_range(y, h, true))
        else {
            return;
        };
        for cy in y0..y1 {
            for cx in x0..x1 {
                let bit = cy * GRID + cx;
                if let Some(word) = self.bits.get_mut(bit / 64) {
                    *word |= 1 << (bit % 64);
                }
            }
        }
    }

    /// Forgets the cover of every cell touching the rectangle (its pixels are read).
    fn uncover(&mut self, (x, y, w, h): (i64, i64, i64, i64)) {
        let clamp = |start: i64, len: i64| {
            let start = start.max(0);
            let end = start.saturating_add(len.max(0)).saturating_add(CELL - 1) / CELL;
            let first = usize::try_from(start / CELL).unwrap_or(GRID).min(GRID);
            (first, usize::try_from(end).unwrap_or(GRID).min(GRID))
        };
        let ((x0, x1), (y0, y1)) = (clamp(x, w), clamp(y, h));
        for cy in y0..y1 {
            for cx in x0..x1 {
                let bit = cy * GRID + cx;
                if let Some(word) = self.bits.get_mut(bit / 64) {
                    *word &= !(1 << (bit % 64));
                }
            }
        }
    }

    fn get(&self, cx: usize, cy: usize) -> bool {
        let bit = cy * GRID + cx;
        self.bits
            .get(bit / 64)
            .is_some_and(|word| word & (1 << (bit % 64)) != 0)
    }
}

/// For each instruction of `window`, whether the display model may skip it (it belongs to an
/// image stream whose pixels are painted over before anything reads them).
pub fn hidden_images(window: &[Instruction]) -> Vec<bool> {
    let mut hidden = vec![false; window.len()];
    let mut images: Vec<Image> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    let mut unsafe_layers: HashSet<i64> = HashSet::new();
    // Image ends, by position.
    let mut ends: HashMap<usize, usize> = HashMap::new();

    for (i, instruction) in window.iter().enumerate() {
        match instruction.opcode() {
            opcode::IMG => {
                let (Some(stream), Some(mask), Some(layer), Some(x), Some(y)) = (
                    instruction.arg(0),
                    instruction.arg(1),
                    int(instruction, 2),
                    int(instruction, 4),
                    int(instruction, 5),
                ) else {
                    continue;
                };
                let png = instruction.arg(3) == Some("image/png");
                images.push(Image {
                    layer,
                    mask: mask.chars().take(8).collect(),
                    jpeg: instruction.arg(3) == Some("image/jpeg"),
                    rect: png.then_some((x, y, 0, 0)),
                    opaque: false,
                    first_blob_seen: false,
                    positions: vec![i],
                    end: None,
                });
                open.insert(stream.to_owned(), images.len() - 1);
            }
            opcode::BLOB => {
                let Some(&n) = instruction.arg(0).and_then(|s| open.get(s)) else {
                    continue;
                };
                let Some(image) = images.get_mut(n) else {
                    continue;
                };
                image.positions.push(i);
                if !image.first_blob_seen {
                    image.first_blob_seen = true;
                    let header = instruction.arg(1).and_then(png_header);
                    match (image.rect, header) {
                        (Some((x, y, _, _)), Some((w, h, opaque))) => {
                            image.rect = Some((x, y, w, h));
                            image.opaque = opaque;
                        }
                        _ => image.rect = None,
                    }
                }
            }
            opcode::END => {
                if let Some(n) = instruction.arg(0).and_then(|s| open.remove(s))
                    && let Some(image) = images.get_mut(n)
                {
                    image.positions.push(i);
                    image.end = Some(i);
                    ends.insert(i, n);
                }
            }
            "clip" | "transform" | "identity" | "push" | "pop" | "reset" => {
                if let Some(layer) = int(instruction, 0) {
                    unsafe_layers.insert(layer);
                }
            }
            _ => {}
        }
    }

    let mut grids: HashMap<i64, Grid> = HashMap::new();
    let clear = |grids: &mut HashMap<i64, Grid>, layer: Option<i64>| {
        if let Some(layer) = layer {
            grids.remove(&layer);
        }
    };
    // A read of a rectangle: the layer's cells there are seen as they are now. A rectangle
    // that does not parse is a read of the whole layer.
    let read = |grids: &mut HashMap<i64, Grid>, instruction: &Instruction, at: usize| {
        let layer = int(instruction, at);
        let rect = (|| {
            Some((
                int(instruction, at + 1)?,
                int(instruction, at + 2)?,
                int(instruction, at + 3)?,
                int(instruction, at + 4)?,
            ))
        })();
        match (layer, rect) {
            (Some(layer), Some(rect)) => {
                if let Some(grid) = grids.get_mut(&layer) {
                    grid.uncover(rect);
                }
            }
            _ => clear(grids, layer),
        }
    };
    for (i, instruction) in window.iter().enumerate().rev() {
        if let Some(&n) = ends.get(&i) {
            let Some(image) = images.get(n) else {
                continue;
            };
            let replaces =
                image.mask == MASK_SRC || (image.mask == MASK_OVER && (image.opaque || image.jpeg));
            let safe = !unsafe_layers.contains(&image.layer);
            if let Some(rect) = image.rect
                && safe
                && rect.2 > 0
                && grids
                    .get(&image.layer)
                    .is_some_and(|grid| grid.covers(rect))
            {
                for &p in &image.positions {
                    if let Some(h) = hidden.get_mut(p) {
                        *h = true;
                    }
                }
                continue;
            }
            match (image.rect, replaces) {
                // Blends with what is under it: a read of that.
                (Some(rect), false) => {
                    if let Some(grid) = grids.get_mut(&image.layer) {
                        grid.uncover(rect);
                    }
                }
                (None, false) => clear(&mut grids, Some(image.layer)),
                (Some(rect), true)
                    if safe && (grids.contains_key(&image.layer) || grids.len() < MAX_LAYERS) =>
                {
                    grids
                        .entry(image.layer)
                        .or_insert_with(Grid::new)
                        .cover(rect);
                }
                _ => {}
            }
            continue;
        }
        let op = instruction.opcode();
        let blends = |index: usize| instruction.arg(index).is_some_and(|m| m != MASK_SRC);
        match op {
            // copy srclayer srcx srcy w h mask dstlayer dstx dsty
            opcode::COPY => {
                read(&mut grids, instruction, 0);
                if blends(5) {
                    // The destination rectangle is read too.
                    let dst = [6, 7, 8, 3, 4].map(|i| instruction.arg(i).unwrap_or(""));
                    read(&mut grids, &Instruction::new(opcode::COPY, &dst), 0);
                }
            }
            // transfer srclayer srcx srcy w h function dstlayer dstx dsty
            "transfer" => {
                read(&mut grids, instruction, 0);
                clear(&mut grids, int(instruction, 6));
            }
            // cursor x y srclayer srcx srcy w h
            opcode::CURSOR => read(&mut grids, instruction, 2),
            // lfill mask layer srclayer
            "lfill" => {
                clear(&mut grids, int(instruction, 2));
                if blends(0) {
                    clear(&mut grids, int(instruction, 1));
                }
            }
            // cfill mask layer r g b a: an opaque colour drawn OVER replaces.
            opcode::CFILL => {
                let opaque_over =
                    instruction.arg(0) == Some(MASK_OVER) && instruction.arg(5) == Some("255");
                if blends(0) && !opaque_over {
                    clear(&mut grids, int(instruction, 1));
                }
            }
            // cstroke / lstroke mask layer …; png / jpeg mask layer …
            "cstroke" | "lstroke" | "png" | "jpeg" if blends(0) => {
                clear(&mut grids, int(instruction, 1));
            }
            opcode::SIZE | "dispose" => clear(&mut grids, int(instruction, 0)),
            _ => {}
        }
    }
    hidden
}

fn int(instruction: &Instruction, index: usize) -> Option<i64> {
    instruction.arg(index)?.parse().ok()
}

/// Width, height and whether the PNG is opaque, from the start of its data (the first `blob`,
/// base64).
fn png_header(blob: &str) -> Option<(i64, i64, bool)> {
    // The first 6048 decoded bytes at most: enough for the header chunks guacd writes.
    let bytes = blob.as_bytes();
    let text = bytes.get(..bytes.len().min(8064) / 4 * 4)?;
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
    let mut opaque = colour == 0 || colour == 2;
    // Walk the chunks to the first IDAT: a tRNS makes it transparent; not reaching IDAT
    // within the first blob means unknown, so not opaque.
    let mut at = 33usize;
    let mut reached_idat = false;
    while let (Some(len), Some(kind)) = (be(at), data.get(at + 4..at + 8)) {
        if kind == b"IDAT" {
            reached_idat = true;
            break;
        }
        if kind == b"tRNS" {
            opaque = false;
            break;
        }
        at = at.checked_add(12 + usize::try_from(len).ok()?)?;
    }
    Some((width, height, opaque && reached_idat))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, colour: png::ColorType) -> String {
        let mut out = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut out, w, h);
            encoder.set_color(colour);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().unwrap();
            let channels = if colour == png::ColorType::Rgba { 4 } else { 3 };
            writer
                .write_image_data(&vec![200u8; (w * h * channels) as usize])
                .unwrap();
        }
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    fn image(stream: u32, layer: i32, x: i32, y: i32, blob: &str, mask: &str) -> Vec<Instruction> {
        let s = stream.to_string();
        vec![
            Instruction::new(
                opcode::IMG,
                &[
                    &s,
                    mask,
                    &layer.to_string(),
                    "image/png",
                    &x.to_string(),
                    &y.to_string(),
                ],
            ),
            Instruction::new(opcode::BLOB, &[&s, blob]),
            Instruction::new(opcode::END, &[&s]),
        ]
    }

    #[test]
    fn an_image_painted_over_before_any_read_is_hidden() {
        let small = png(64, 64, png::ColorType::Rgb);
        let big = png(128, 128, png::ColorType::Rgb);
        let mut window = image(1, 0, 32, 32, &small, "14");
        window.extend(image(1, 0, 0, 0, &big, "14"));
        let hidden = hidden_images(&window);
        assert_eq!(hidden, [true, true, true, false, false, false]);
    }

    #[test]
    fn reads_transparency_masks_and_partial_cover_keep_images() {
        let small = png(64, 64, png::ColorType::Rgb);
        let big = png(128, 128, png::ColorType::Rgb);
        let alpha = png(128, 128, png::ColorType::Rgba);
        // A copy from layer 0 between them reads the first image.
        let mut window = image(1, 0, 32, 32, &small, "14");
        window.push(Instruction::new(
            opcode::COPY,
            &["0", "40", "40", "10", "10", "14", "-1", "0", "0"],
        ));
        window.extend(image(1, 0, 0, 0, &big, "14"));
        assert!(!hidden_images(&window)[0]);
        // A copy of somewhere else does not.
        let mut window = image(1, 0, 32, 32, &small, "14");
        window.push(Instruction::new(
            opcode::COPY,
            &["0", "100", "0", "10", "10", "14", "-1", "0", "0"],
        ));
        window.extend(image(1, 0, 0, 0, &big, "14"));
        assert!(hidden_images(&window)[0]);
        // A transparent cover does not hide.
        let mut window = image(1, 0, 32, 32, &small, "14");
        window.extend(image(1, 0, 0, 0, &alpha, "14"));
        assert!(!hidden_images(&window)[0]);
        // A transparent image drawn with SRC replaces what is under it.
        let mut window = image(1, 0, 32, 32, &small, "14");
        window.extend(image(1, 0, 0, 0, &alpha, "12"));
        assert!(hidden_images(&window)[0]);
        // Partly covered: kept.
        let mut window = image(1, 0, 100, 100, &small, "14");
        window.extend(image(1, 0, 0, 0, &big, "14"));
        assert!(!hidden_images(&window)[0]);
        // Another layer: kept. A clipped layer: kept.
        let mut window = image(1, 1, 32, 32, &small, "14");
        window.extend(image(1, 0, 0, 0, &big, "14"));
        assert!(!hidden_images(&window)[0]);
        let mut window = image(1, 0, 32, 32, &small, "14");
        window.push(Instruction::new("clip", &["0"]));
        window.extend(image(1, 0, 0, 0, &big, "14"));
        assert!(!hidden_images(&window)[0]);
        // An unfinished stream: kept.
        let mut window = image(1, 0, 32, 32, &small, "14");
        window.pop();
        window.extend(image(2, 0, 0, 0, &big, "14"));
        assert!(!hidden_images(&window)[0]);
    }

    #[test]
    fn the_union_of_later_images_covers() {
        let quarter = png(64, 64, png::ColorType::Rgb);
        let whole = png(128, 128, png::ColorType::Rgb);
        let mut window = image(1, 0, 0, 0, &whole, "14");
        for (x, y) in [(0, 0), (64, 0), (0, 64), (64, 64)] {
            window.extend(image(1, 0, x, y, &quarter, "14"));
        }
        let hidden = hidden_images(&window);
        assert!(hidden[0] && hidden[1] && hidden[2]);
        assert!(!hidden[3..].iter().any(|h| *h));
    }

    /// The point of it all: a display model shown the window without its hidden images ends
    /// in the same state, so key frames are unchanged.
    #[test]
    fn skipping_hidden_images_leaves_the_same_key_frame() {
        // Tiles drawn as guacd draws them: most are hidden.
        assert!(key_frame_unchanged(false) >= 90);
        // Every mask, transparent tiles, buffers and copies: fewer, and still exact.
        key_frame_unchanged(true);
    }

    /// Runs a random window both ways; returns how many instructions were skipped.
    fn key_frame_unchanged(mixed: bool) -> usize {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut window = vec![Instruction::new(opcode::SIZE, &["0", "640", "480"])];
        for n in 0..300u32 {
            let (w, h) = (16 + next(100) as u32, 16 + next(100) as u32);
            let mut out = Vec::new();
            {
                let mut encoder = png::Encoder::new(&mut out, w, h);
                encoder.set_color(png::ColorType::Rgb);
                let mut writer = encoder.write_header().unwrap();
                let pixels: Vec<u8> = (0..w * h * 3)
                    .map(|i| (i as u64 * 31 + u64::from(n)) as u8)
                    .collect();
                writer.write_image_data(&pixels).unwrap();
            }
            let blob = base64::engine::general_purpose::STANDARD.encode(out);
            let (x, y) = (next(600) as i32, next(440) as i32);
            let mask = if mixed {
                ["14", "14", "14", "12", "6", "10"][next(6) as usize]
            } else {
                "14"
            };
            let (blob, layer) = match next(10) {
                0 if mixed => (png(40, 40, png::ColorType::Rgba), 0),
                1 if mixed => (blob, -1),
                _ => (blob, 0),
            };
            window.extend(image(1 + n % 3, layer, x, y, &blob, mask));
            if n % 50 == 0 {
                window.push(Instruction::new(
                    opcode::COPY,
                    &["0", "0", "0", "64", "64", "14", "0", "300", "300"],
                ));
            }
            if n % 40 == 0 {
                window.push(Instruction::new(
                    opcode::COPY,
                    &["-1", "0", "0", "200", "200", "12", "0", "100", "100"],
                ));
            }
            if n % 70 == 0 {
                window.push(Instruction::new(
                    opcode::RECT,
                    &["0", "10", "10", "50", "50"],
                ));
                window.push(Instruction::new(
                    opcode::CFILL,
                    &["14", "0", "255", "0", "0", "255"],
                ));
            }
        }
        window.push(Instruction::new(opcode::SYNC, &["1000"]));
        let hidden = hidden_images(&window);
        let skipped = hidden.iter().filter(|h| **h).count();

        let mut full = zt_display::Display::new(zt_display::DisplayLimits::default());
        let mut culled = zt_display::Display::new(zt_display::DisplayLimits::default());
        for (instruction, hidden) in window.iter().zip(&hidden) {
            full.handle(instruction).unwrap();
            if !hidden {
                culled.handle(instruction).unwrap();
            }
        }
        assert!(full.key_frame_ready() && culled.key_frame_ready());
        assert!(full.snapshot().encode() == culled.snapshot().encode());
        skipped
    }

    #[test]
    fn hostile_windows_do_not_panic() {
        let big = png(128, 128, png::ColorType::Rgb);
        let window = vec![
            Instruction::new(
                opcode::IMG,
                &["1", "14", "-99999999999999999999", "image/png", "0", "0"],
            ),
            Instruction::new(opcode::BLOB, &["1", "!!!!é"]),
            Instruction::new(opcode::END, &["1"]),
            Instruction::new(
                opcode::IMG,
                &["2", "14", "0", "image/png", "9223372036854775807", "-5"],
            ),
            Instruction::new(opcode::BLOB, &["2", &big]),
            Instruction::new(opcode::END, &["2"]),
            Instruction::new(
                opcode::IMG,
                &["3", "14", "0", "image/png", "9223372036854775000", "0"],
            ),
            Instruction::new(opcode::BLOB, &["3", &big]),
            Instruction::new(opcode::END, &["3"]),
            Instruction::new(opcode::COPY, &[] as &[&str]),
            Instruction::new(opcode::CURSOR, &["x"]),
            Instruction::new(opcode::END, &[] as &[&str]),
            Instruction::new(opcode::BLOB, &[] as &[&str]),
        ];
        let hidden = hidden_images(&window);
        assert_eq!(hidden.len(), window.len());
        // Many layers: bounded.
        let tile = png(16, 16, png::ColorType::Rgb);
        let mut window = Vec::new();
        for layer in 0..100 {
            window.extend(image(1, layer, 0, 0, &tile, "14"));
        }
        hidden_images(&window);
    }
}
