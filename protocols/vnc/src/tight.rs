//! Tight (the RFB community's encoding 7), without JPEG: a rectangle is a fill, or "basic"
//! data (copy, palette or gradient filter) either sent as it is (under 12 bytes) or
//! compressed with one of four zlib streams the connection keeps; the control byte may reset
//! streams. Pixels are "TPIXEL"s: red, green, blue for the 32-bit format the client asks for.
//!
//! As for ZRLE, the data is inflated as it arrives, and whole rows become [`Pixels`] in
//! bands, so neither the compressed nor the inflated rectangle sits in memory whole. JPEG
//! (compression type 9) comes only to a client that sends a quality level, which this one
//! does not: it is an error.

use flate2::Decompress;

use crate::error::Error;
use crate::inflate::{Progress, STEP};
use crate::rfb::{BAND, Pixels};

/// A Tight rectangle's widest (the encoding's own bound).
pub(crate) const MAX_WIDTH: u16 = 2048;

/// The four zlib streams.
#[derive(Debug, Default)]
pub(crate) struct Streams([Option<Decompress>; 4]);

/// The header of a rectangle.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// One colour (blue, green, red, unused).
    Fill([u8; 4]),
    /// Rows of data through a filter.
    Basic(Basic),
}

#[derive(Debug, PartialEq, Eq)]
enum Filter {
    Copy,
    Palette(Vec<[u8; 4]>),
    Gradient,
}

/// A rectangle of basic data being read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Basic {
    x: u16,
    y: u16,
    width: u16,
    height: u16,
    /// The zlib stream, or `None` when the data is sent as it is.
    stream: Option<usize>,
    filter: Filter,
    /// Bytes of data still to come from the server (compressed, or as they are).
    pub(crate) left: u32,
    rows: u16,
    pending: Vec<u8>,
    /// The last row given (for the gradient filter): red, green, blue each pixel.
    previous: Vec<u8>,
}

fn tpixel(p: &[u8]) -> [u8; 4] {
    match p {
        [r, g, b, ..] => [*b, *g, *r, 0],
        _ => [0; 4],
    }
}

/// A compact length (1 to 3 bytes, 7 bits each): the value and its bytes.
fn compact(data: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for i in 0..3 {
        let byte = *data.get(i)?;
        let bits = if i == 2 { byte } else { byte & 0x7F };
        value |= u32::from(bits) << (7 * i);
        if i == 2 || byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Reads a rectangle's header from `data` (after the 12-byte rectangle header): the header
/// and its bytes, `None` when it is not all here. Resets the streams the control byte names.
pub(crate) fn header(
    data: &[u8],
    streams: &mut Streams,
    (x, y, width, height): (u16, u16, u16, u16),
) -> Result<Option<(Header, usize)>, Error> {
    let Some(&control) = data.first() else {
        return Ok(None);
    };
    let kind = control >> 4;
    if kind == 8 {
        let Some(p) = data.get(1..4) else {
            return Ok(None);
        };
        reset(streams, control);
        return Ok(Some((Header::Fill(tpixel(p)), 4)));
    }
    if kind == 9 {
        return Err(Error::protocol(
            "Tight JPEG, which the client did not ask for",
        ));
    }
    if kind > 9 || kind & 0x8 != 0 {
        return Err(Error::protocol(format!("Tight compression type {kind}")));
    }
    if width > MAX_WIDTH {
        return Err(Error::protocol(format!("a Tight rectangle {width} wide")));
    }
    let mut at = 1;
    let filter = if kind & 0x4 != 0 {
        let Some(&id) = data.get(at) else {
            return Ok(None);
        };
        at += 1;
        match id {
            0 => Filter::Copy,
            1 => {
                let Some(&count) = data.get(at) else {
                    return Ok(None);
                };
                let count = usize::from(count) + 1;
                let Some(colours) = data.get(at + 1..at + 1 + count * 3) else {
                    return Ok(None);
                };
                at += 1 + count * 3;
                if count < 2 {
                    return Err(Error::protocol("a Tight palette of one colour"));
                }
                Filter::Palette(colours.chunks_exact(3).map(tpixel).collect())
            }
            2 => Filter::Gradient,
            other => return Err(Error::protocol(format!("Tight filter {other}"))),
        }
    } else {
        Filter::Copy
    };
    let row = row_bytes(&filter, width);
    let size = row * usize::from(height);
    let (stream, left) = if size < 12 {
        (None, u32::try_from(size).unwrap_or(u32::MAX))
    } else {
        let Some((length, bytes)) = compact(data.get(at..).unwrap_or_default()) else {
            return Ok(None);
        };
        at += bytes;
        (Some(usize::from(kind & 0x3)), length)
    };
    reset(streams, control);
    Ok(Some((
        Header::Basic(Basic {
            x,
            y,
            width,
            height,
            stream,
            filter,
            left,
            rows: 0,
            pending: Vec::new(),
            previous: vec![0; usize::from(width) * 3],
        }),
        at,
    )))
}

fn reset(streams: &mut Streams, control: u8) {
    for (i, stream) in streams.0.iter_mut().enumerate() {
        if control & (1 << i) != 0 {
            *stream = None;
        }
    }
}

fn row_bytes(filter: &Filter, width: u16) -> usize {
    match filter {
        Filter::Palette(colours) if colours.len() == 2 => usize::from(width).div_ceil(8),
        Filter::Palette(_) => usize::from(width),
        _ => usize::from(width) * 3,
    }
}

impl Basic {
    /// Gives the next band of whole rows, taking what it needs of `input`; returns how many
    /// of `input` were used.
    pub(crate) fn step(
        &mut self,
        streams: &mut Streams,
        input: &[u8],
    ) -> Result<(Progress, usize), Error> {
        let row = row_bytes(&self.filter, self.width);
        if row == 0 {
            // An empty rectangle has no rows to give.
            self.rows = self.height;
        }
        let mut used = 0;
        loop {
            let wanted = usize::from(self.height - self.rows) * row;
            let whole = match row {
                0 => 0,
                _ => (self.pending.len() / row).min(usize::from(self.height - self.rows)),
            };
            let band = (BAND / (usize::from(self.width) * 4).max(1)).max(1);
            if whole > 0 && (whole >= band || self.pending.len() >= wanted) {
                return Ok((Progress::Pixels(self.rows_out(whole.min(band), row)?), used));
            }
            if self.rows == self.height {
                if !self.pending.is_empty() {
                    return Err(Error::protocol("Tight data past the rectangle's rows"));
                }
                if self.left > 0 {
                    // The rest must be a flush that inflates to nothing.
                    let here = input.len().min(used + self.left as usize);
                    let mut nothing = Vec::new();
                    let (taken, made) = match self.stream {
                        Some(i) => inflate(streams, i, &input[used..here], &mut nothing)?,
                        None => (here - used, here - used),
                    };
                    used += taken;
                    self.left -= taken as u32;
                    if made > 0 {
                        return Err(Error::protocol("Tight data past the rectangle's rows"));
                    }
                    if self.left > 0 {
                        return Ok((Progress::Wait, used));
                    }
                }
                return Ok((Progress::Done, used));
            }
            let here = input.len().min(used + self.left as usize);
            if here == used {
                if self.left > 0 {
                    return Ok((Progress::Wait, used));
                }
                // Every byte is in, but zlib may still hold output it had no room for.
                let made = match self.stream {
                    Some(i) => inflate(streams, i, &[], &mut self.pending)?.1,
                    None => 0,
                };
                if made == 0 {
                    return Err(Error::protocol("a Tight rectangle cut short"));
                }
                continue;
            }
            let (taken, made) = match self.stream {
                Some(i) => {
                    // Inflate only what the rows still need.
                    if self.pending.len() >= wanted {
                        return Err(Error::protocol("Tight data past the rectangle's rows"));
                    }
                    inflate(streams, i, &input[used..here], &mut self.pending)?
                }
                None => {
                    self.pending.extend_from_slice(&input[used..here]);
                    (here - used, here - used)
                }
            };
            used += taken;
            self.left -= taken as u32;
            if taken == 0 && made == 0 {
                return Err(Error::protocol("Tight data zlib cannot inflate"));
            }
            if self.pending.len() > wanted + STEP * 2 {
                return Err(Error::protocol("Tight data past the rectangle's rows"));
            }
        }
    }

    /// `count` rows from what is inflated, through the filter.
    fn rows_out(&mut self, count: usize, row: usize) -> Result<Pixels, Error> {
        let width = usize::from(self.width);
        let data: Vec<u8> = self.pending.drain(..count * row).collect();
        let mut bgrx = Vec::with_capacity(count * width * 4);
        for line in data.chunks_exact(row) {
            match &self.filter {
                Filter::Copy => {
                    for p in line.chunks_exact(3) {
                        bgrx.extend_from_slice(&tpixel(p));
                    }
                }
                Filter::Palette(colours) => {
                    for column in 0..width {
                        let index = if colours.len() == 2 {
                            let byte = line.get(column / 8).copied().unwrap_or(0);
                            usize::from((byte >> (7 - column % 8)) & 1)
                        } else {
                            usize::from(line.get(column).copied().unwrap_or(0))
                        };
                        let colour = colours.get(index).ok_or_else(|| {
                            Error::protocol("a Tight palette index past the palette")
                        })?;
                        bgrx.extend_from_slice(colour);
                    }
                }
                Filter::Gradient => {
                    let mut current = vec![0u8; width * 3];
                    for column in 0..width {
                        for channel in 0..3 {
                            let i = column * 3 + channel;
                            let left = if column > 0 { current[i - 3] } else { 0 };
                            let up = self.previous[i];
                            let up_left = if column > 0 { self.previous[i - 3] } else { 0 };
                            let predicted = (i32::from(left) + i32::from(up) - i32::from(up_left))
                                .clamp(0, 255);
                            current[i] = (predicted as u8).wrapping_add(line[i]);
                        }
                    }
                    for p in current.chunks_exact(3) {
                        bgrx.extend_from_slice(&tpixel(p));
                    }
                    self.previous = current;
                }
            }
        }
        let rows = u16::try_from(count).unwrap_or(0);
        let pixels = Pixels {
            x: self.x,
            y: self.y + self.rows,
            width: self.width,
            height: rows,
            bgrx,
        };
        self.rows += rows;
        Ok(pixels)
    }
}

/// Inflates some of `input` with stream `i` into `out`: (bytes taken, bytes made).
fn inflate(
    streams: &mut Streams,
    i: usize,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(usize, usize), Error> {
    let zlib = streams
        .0
        .get_mut(i)
        .ok_or_else(|| Error::protocol("a Tight zlib stream past the fourth"))?
        .get_or_insert_with(|| Decompress::new(true));
    crate::inflate::inflate(zlib, input, out, "Tight")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_lengths() {
        assert_eq!(compact(&[0x05]), Some((5, 1)));
        assert_eq!(compact(&[0x90, 0x4E]), Some((10000, 2)));
        assert_eq!(compact(&[0xFF, 0xFF, 0xFF]), Some((0x3F_FFFF, 3)));
        assert_eq!(compact(&[0x80]), None);
    }

    fn run(header_bytes: &[u8], body: &[u8], size: (u16, u16)) -> Result<Vec<Pixels>, Error> {
        let mut streams = Streams::default();
        let Some((Header::Basic(mut basic), n)) =
            header(header_bytes, &mut streams, (0, 0, size.0, size.1))?
        else {
            panic!("not basic");
        };
        assert_eq!(n, header_bytes.len());
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let (progress, used) = basic.step(&mut streams, &body[at..])?;
            at += used;
            match progress {
                Progress::Pixels(p) => out.push(p),
                Progress::Done => return Ok(out),
                Progress::Wait => return Err(Error::protocol("waiting")),
            }
        }
    }

    #[test]
    fn fills_palettes_and_gradients() {
        let mut streams = Streams::default();
        assert_eq!(
            header(&[0x80, 1, 2, 3], &mut streams, (0, 0, 9, 9)).unwrap(),
            Some((Header::Fill([3, 2, 1, 0]), 4))
        );
        // Two colours, 3×2, sent as they are (2 bytes < 12): rows `101`, `010`.
        let px = run(
            &[0x40, 1, 1, 9, 9, 9, 7, 7, 7],
            &[0b1010_0000, 0b0100_0000],
            (3, 2),
        )
        .unwrap();
        let reds: Vec<u8> = px
            .iter()
            .flat_map(|p| p.bgrx.chunks(4).map(|c| c[2]))
            .collect();
        assert_eq!(reds, vec![7, 9, 7, 9, 7, 9]);
        // Gradient, 2×1 as it is (6 bytes): the second pixel is predicted from the first.
        let px = run(&[0x40, 2], &[10, 20, 30, 1, 1, 1], (2, 1)).unwrap();
        assert_eq!(px[0].bgrx, vec![30, 20, 10, 0, 31, 21, 11, 0]);
        // Copy, compressed with stream 1.
        let raw: Vec<u8> = (0..48).collect();
        let mut z = flate2::Compress::new(flate2::Compression::default(), true);
        let mut compressed = Vec::with_capacity(256);
        z.compress_vec(&raw, &mut compressed, flate2::FlushCompress::Sync)
            .unwrap();
        let mut head = vec![0x10, u8::try_from(compressed.len()).unwrap()];
        head[1] &= 0x7F;
        let px = run(&head, &compressed, (4, 4)).unwrap();
        let all: Vec<u8> = px.iter().flat_map(|p| p.bgrx.clone()).collect();
        assert_eq!(&all[..8], &[2, 1, 0, 0, 5, 4, 3, 0]);
        assert_eq!(all.len(), 64);
    }

    #[test]
    fn empty_rectangles_end_at_once() {
        assert!(run(&[0x00], &[], (0, 5)).unwrap().is_empty());
        assert!(
            run(&[0x40, 1, 1, 1, 1, 1, 2, 2, 2], &[], (0, 3))
                .unwrap()
                .is_empty()
        );
        assert!(run(&[0x40, 2], &[], (7, 0)).unwrap().is_empty());
    }

    #[test]
    fn hostile_headers_are_errors() {
        let mut streams = Streams::default();
        let mut h = |data: &[u8], w: u16| header(data, &mut streams, (0, 0, w, 4));
        assert!(h(&[0x90], 4).is_err(), "JPEG");
        assert!(h(&[0xA0], 4).is_err());
        assert!(h(&[0x00], 4096).is_err(), "too wide");
        assert!(h(&[0x40, 5], 4).is_err(), "filter 5");
        assert!(h(&[0x40, 1, 0, 1, 2, 3], 4).is_err(), "one colour");
        assert_eq!(
            h(&[0x40, 1, 3, 1, 2], 4).unwrap(),
            None,
            "palette not all here"
        );
        // An index past a three-colour palette.
        assert!(
            run(
                &[0x40, 1, 2, 0, 0, 0, 1, 1, 1, 2, 2, 2],
                &[0, 1, 2, 3],
                (4, 1)
            )
            .is_err()
        );
        // More data than rows: 40 bytes inflated for a 2×2 copy's 12.
        let mut z = flate2::Compress::new(flate2::Compression::default(), true);
        let mut compressed = Vec::with_capacity(256);
        z.compress_vec(&[0; 40], &mut compressed, flate2::FlushCompress::Sync)
            .unwrap();
        let head = [0x00, u8::try_from(compressed.len()).unwrap()];
        assert!(run(&head, &compressed, (2, 2)).is_err());
    }
}
