//! ZRLE (RFC 6143 7.7.6): a rectangle's zlib data (one zlib stream for the whole
//! connection) holds 64×64 tiles, each raw, solid, packed-palette, plain RLE or palette RLE,
//! with 3-byte pixels ("CPIXEL") for the 32-bit format the client asks for.
//!
//! The data is inflated as it arrives, a bounded piece at a time, and each tile becomes
//! [`Pixels`] as soon as it is whole: a rectangle never sits in memory whole, a zlib bomb
//! inflates no further than one tile needs, and a tile's runs cannot cover more pixels than
//! it has.

use flate2::Decompress;

use crate::error::Error;
use crate::inflate::{Progress, inflate};
use crate::rfb::Pixels;

/// A tile's side.
const TILE: u16 = 64;
/// The most inflated bytes waiting for a tile to be whole (a tile needs far fewer).
const MAX_PENDING: usize = 128 * 1024;

/// One ZRLE rectangle being read.
#[derive(Debug)]
pub(crate) struct Rect {
    x: u16,
    y: u16,
    width: u16,
    height: u16,
    /// Compressed bytes still to come from the server.
    pub(crate) compressed: u32,
    /// The next tile's origin, relative to the rectangle.
    tile_x: u16,
    tile_y: u16,
    /// Inflated bytes not yet parsed.
    pending: Vec<u8>,
}

impl Rect {
    pub(crate) fn new(x: u16, y: u16, width: u16, height: u16, compressed: u32) -> Self {
        Self {
            x,
            y,
            width,
            height,
            compressed,
            tile_x: 0,
            tile_y: 0,
            pending: Vec::new(),
        }
    }

    fn finished(&self) -> bool {
        self.width == 0 || self.height == 0 || self.tile_y >= self.height
    }

    /// Parses a tile from what is inflated, inflating more of `input` (the bytes the server
    /// sent that are here) as needed; returns how many of `input` were used.
    pub(crate) fn step(
        &mut self,
        zlib: &mut Decompress,
        input: &[u8],
    ) -> Result<(Progress, usize), Error> {
        let mut used = 0;
        loop {
            if self.finished() {
                // The rest of the rectangle's data must inflate to nothing (a flush).
                let here = input.len().min(used + self.compressed as usize);
                let (taken, made) =
                    inflate(zlib, &input[used..here.max(used)], &mut Vec::new(), "ZRLE")?;
                used += taken;
                self.compressed -= taken as u32;
                if made > 0 || !self.pending.is_empty() {
                    return Err(Error::protocol("ZRLE data past the rectangle's last tile"));
                }
                if self.compressed == 0 {
                    return Ok((Progress::Done, used));
                }
                return Ok((Progress::Wait, used));
            }
            let width = TILE.min(self.width - self.tile_x);
            let height = TILE.min(self.height - self.tile_y);
            if let Some((bgrx, length)) = tile(&self.pending, width, height)? {
                self.pending.drain(..length);
                let pixels = Pixels {
                    x: self.x + self.tile_x,
                    y: self.y + self.tile_y,
                    width,
                    height,
                    bgrx,
                };
                self.tile_x += width;
                if self.tile_x >= self.width {
                    self.tile_x = 0;
                    self.tile_y += height;
                }
                return Ok((Progress::Pixels(pixels), used));
            }
            if self.pending.len() > MAX_PENDING {
                return Err(Error::protocol("a ZRLE tile longer than any tile can be"));
            }
            let here = input.len().min(used + self.compressed as usize);
            if here == used {
                if self.compressed > 0 {
                    return Ok((Progress::Wait, used));
                }
                // Every byte is in, but zlib may still hold output it had no room for.
                let (_, made) = inflate(zlib, &[], &mut self.pending, "ZRLE")?;
                if made == 0 {
                    return Err(Error::protocol("a ZRLE rectangle cut short"));
                }
                continue;
            }
            let (taken, made) = inflate(zlib, &input[used..here], &mut self.pending, "ZRLE")?;
            used += taken;
            self.compressed -= taken as u32;
            if taken == 0 && made == 0 {
                return Err(Error::protocol("ZRLE data zlib cannot inflate"));
            }
        }
    }
}

/// A whole tile from `data`: its pixels (4 bytes each) and the bytes it took; `None` when
/// `data` does not hold all of it yet.
fn tile(data: &[u8], width: u16, height: u16) -> Result<Option<(Vec<u8>, usize)>, Error> {
    let count = usize::from(width) * usize::from(height);
    let Some(&kind) = data.first() else {
        return Ok(None);
    };
    let mut at = 1;
    let mut bgrx = Vec::with_capacity(count * 4);
    let cpixel = |at: usize| -> Option<[u8; 4]> {
        let p = data.get(at..at + 3)?;
        Some([p[0], p[1], p[2], 0])
    };
    match kind {
        0 => {
            let Some(raw) = data.get(1..1 + count * 3) else {
                return Ok(None);
            };
            for p in raw.chunks_exact(3) {
                bgrx.extend_from_slice(&[p[0], p[1], p[2], 0]);
            }
            at += count * 3;
        }
        1 => {
            let Some(p) = cpixel(1) else {
                return Ok(None);
            };
            for _ in 0..count {
                bgrx.extend_from_slice(&p);
            }
            at += 3;
        }
        2..=16 => {
            let size = usize::from(kind);
            let Some(palette) = palette(data, size) else {
                return Ok(None);
            };
            at += size * 3;
            let bits = match size {
                2 => 1,
                3..=4 => 2,
                _ => 4,
            };
            let row = (usize::from(width) * bits).div_ceil(8);
            let Some(packed) = data.get(at..at + row * usize::from(height)) else {
                return Ok(None);
            };
            for line in packed.chunks_exact(row) {
                for column in 0..usize::from(width) {
                    let bit = column * bits;
                    let byte = line.get(bit / 8).copied().unwrap_or(0);
                    let index = (byte >> (8 - bits - bit % 8)) & ((1 << bits) - 1);
                    let colour = palette
                        .get(usize::from(index))
                        .ok_or_else(|| Error::protocol("a ZRLE palette index past the palette"))?;
                    bgrx.extend_from_slice(colour);
                }
            }
            at += row * usize::from(height);
        }
        128 | 130..=255 => {
            let size = if kind == 128 {
                0
            } else {
                usize::from(kind - 128)
            };
            let palette = if size > 0 {
                let Some(palette) = palette(data, size) else {
                    return Ok(None);
                };
                at += size * 3;
                palette
            } else {
                Vec::new()
            };
            let mut done = 0;
            while done < count {
                let (colour, run_follows) = if size == 0 {
                    let Some(p) = cpixel(at) else {
                        return Ok(None);
                    };
                    at += 3;
                    (p, true)
                } else {
                    let Some(&byte) = data.get(at) else {
                        return Ok(None);
                    };
                    at += 1;
                    let colour = palette
                        .get(usize::from(byte & 0x7F))
                        .copied()
                        .ok_or_else(|| Error::protocol("a ZRLE palette index past the palette"))?;
                    (colour, byte & 0x80 != 0)
                };
                let mut run = 1;
                if run_follows {
                    loop {
                        let Some(&byte) = data.get(at) else {
                            return Ok(None);
                        };
                        at += 1;
                        run += usize::from(byte);
                        if run > count - done {
                            return Err(Error::protocol("a ZRLE run past its tile"));
                        }
                        if byte != 255 {
                            break;
                        }
                    }
                }
                if run > count - done {
                    return Err(Error::protocol("a ZRLE run past its tile"));
                }
                for _ in 0..run {
                    bgrx.extend_from_slice(&colour);
                }
                done += run;
            }
        }
        other => {
            return Err(Error::protocol(format!(
                "a ZRLE tile of unknown subencoding {other}"
            )));
        }
    }
    Ok(Some((bgrx, at)))
}

/// A palette of `size` CPIXELs after the subencoding byte.
fn palette(data: &[u8], size: usize) -> Option<Vec<[u8; 4]>> {
    let bytes = data.get(1..1 + size * 3)?;
    Some(
        bytes
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2], 0])
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rectangle_whose_bytes_all_came_inflates_what_zlib_still_holds() {
        // Four raw tiles of zeros (4 × 12,289 bytes inflated) compress to a few hundred: the
        // first inflate step takes them all and has room for only 16 KiB of output. Xvnc
        // sent such a rectangle; the rest was read as "cut short".
        let tiles: Vec<u8> = (0..4)
            .flat_map(|_| std::iter::once(0u8).chain(std::iter::repeat_n(0, 64 * 64 * 3)))
            .collect();
        let mut z = flate2::Compress::new(flate2::Compression::default(), true);
        let mut compressed = Vec::with_capacity(64 * 1024);
        z.compress_vec(&tiles, &mut compressed, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(compressed.len() < crate::inflate::STEP);
        let mut rect = Rect::new(0, 0, 128, 128, u32::try_from(compressed.len()).unwrap());
        let mut zlib = Decompress::new(true);
        let mut at = 0;
        let mut tiles = 0;
        loop {
            match rect.step(&mut zlib, &compressed[at..]).unwrap() {
                (Progress::Pixels(p), used) => {
                    at += used;
                    assert_eq!(p.bgrx.len(), 64 * 64 * 4);
                    tiles += 1;
                }
                (Progress::Done, _) => break,
                (Progress::Wait, _) => panic!("everything is here"),
            }
        }
        assert_eq!(tiles, 4);
    }

    #[test]
    fn every_subencoding_decodes() {
        // Solid.
        let (px, n) = tile(&[1, 1, 2, 3], 2, 2).unwrap().unwrap();
        assert_eq!((px, n), ([1, 2, 3, 0].repeat(4), 4));
        // Raw 2×1.
        let (px, _) = tile(&[0, 1, 2, 3, 4, 5, 6], 2, 1).unwrap().unwrap();
        assert_eq!(px, vec![1, 2, 3, 0, 4, 5, 6, 0]);
        // Two colours, 1 bit each: 3×2 rows `101` and `010`, padded to a byte.
        let data = [2, 9, 9, 9, 7, 7, 7, 0b1010_0000, 0b0100_0000];
        let (px, n) = tile(&data, 3, 2).unwrap().unwrap();
        assert_eq!(n, data.len());
        let colours: Vec<u8> = px.chunks(4).map(|p| p[0]).collect();
        assert_eq!(colours, vec![7, 9, 7, 9, 7, 9]);
        // Plain RLE: 300 of one colour (255 + 44 + 1), then 1 of another.
        let data = [128, 5, 5, 5, 255, 44, 6, 6, 6, 0];
        let (px, _) = tile(&data, 301, 1).unwrap().unwrap();
        assert_eq!(px.len(), 301 * 4);
        assert_eq!(&px[300 * 4..], &[6, 6, 6, 0]);
        // Palette RLE: index 1 once, index 0 run of 3.
        let data = [130, 1, 1, 1, 2, 2, 2, 0x01, 0x80, 2];
        let (px, _) = tile(&data, 4, 1).unwrap().unwrap();
        let colours: Vec<u8> = px.chunks(4).map(|p| p[0]).collect();
        assert_eq!(colours, vec![2, 1, 1, 1]);
        // Not yet whole.
        assert_eq!(tile(&[0, 1, 2], 2, 1).unwrap(), None);
        assert_eq!(tile(&[128, 5, 5, 5, 255], 301, 1).unwrap(), None);
    }

    #[test]
    fn hostile_tiles_are_errors() {
        assert!(
            tile(&[128, 5, 5, 5, 255, 255], 64, 1).is_err(),
            "a run past the tile"
        );
        assert!(
            tile(&[130, 1, 1, 1, 2, 2, 2, 0x05], 4, 1).is_err(),
            "an index past the palette"
        );
        assert!(tile(&[2, 1, 1, 1], 4, 1).unwrap().is_none());
        assert!(tile(&[17], 4, 1).is_err());
        assert!(tile(&[129], 4, 1).is_err());
    }
}
