//! Benchmarks, `#[ignore]`d: run them in release mode, alone on the machine:
//!
//! ```text
//! cargo test --release -p zt-display bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Figures are recorded in `protocols/display/BENCH.md`.

#![expect(
    clippy::disallowed_methods,
    reason = "benchmarks read the clock; they are tests, not part of the sans-IO core"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use zt_guac::Instruction;

use super::support::*;
use crate::surface::Pixel;
use crate::{Display, DisplayLimits};

const W: u32 = 1920;
const H: u32 = 1080;

/// A 1920 × 1080 desktop as guacd paints it: 64 × 64 tiles (PNG for the UI, JPEG for a
/// photo), each an `img` + `blob`s + `end`, then `sync`.
///
/// The content: a gradient wallpaper, three windows with text-like glyph rows on white, a
/// photo-like area (smooth colour noise), a taskbar.
fn desktop_pixel(x: u32, y: u32, seed: u64) -> Pixel {
    let window = |x0: u32, y0: u32, w: u32, h: u32| x >= x0 && x < x0 + w && y >= y0 && y < y0 + h;
    if y >= H - 40 {
        return [30, 30, 40, 255];
    }
    if window(100, 80, 900, 600) || window(1000, 300, 800, 650) || window(300, 700, 500, 300) {
        if y % 20 < 2 || x % 300 < 1 {
            return [200, 200, 210, 255];
        }
        // Glyph-like strokes: 7 × 12 cells, pseudo-random on/off pixels in rows of text.
        let (cx, cy) = (x / 7, y / 20);
        let h = ((u64::from(cx) * 0x9E37_79B9) ^ (u64::from(cy) * 0x85EB_CA6B) ^ seed)
            .wrapping_mul(0xC2B2_AE35);
        let on = (y % 20) >= 5
            && (y % 20) < 17
            && (h >> ((x % 7) * 3 + (y % 20) % 5)) & 3 == 0
            && (h >> 60) != 0;
        return if on {
            [20, 20, 20, 255]
        } else {
            [255, 255, 255, 255]
        };
    }
    if window(1100, 60, 640, 200) {
        let v = ((x as f64 / 37.0).sin() * 60.0
            + (y as f64 / 23.0).cos() * 60.0
            + (seed % 50) as f64) as i32;
        return [
            (120 + v).clamp(0, 255) as u8,
            (90 + v / 2).clamp(0, 255) as u8,
            (60 + v / 3).clamp(0, 255) as u8,
            255,
        ];
    }
    [(y * 200 / H) as u8, (40 + x * 100 / W) as u8, 160, 255]
}

fn desktop_stream(seed: u64) -> Vec<Instruction> {
    let mut out = vec![num("size", &[0, W.into(), H.into()])];
    let mut stream = 0;
    for ty in (0..H).step_by(64) {
        for tx in (0..W).step_by(64) {
            let (tw, th) = (64.min(W - tx), 64.min(H - ty));
            let photo = (1100..1740).contains(&tx) && (60..260).contains(&ty);
            let f = |x: u32, y: u32| desktop_pixel(tx + x, ty + y, seed);
            let (mime, bytes) = if photo {
                ("image/jpeg", jpeg(tw as u16, th as u16, f))
            } else {
                ("image/png", png(tw, th, f))
            };
            out.extend(image_chunked(
                stream,
                0xE,
                0,
                mime,
                (tx as i32, ty as i32),
                &bytes,
                crate::BLOB_CHARS,
            ));
            stream = (stream + 2) % 64;
        }
    }
    out.push(num("sync", &[seed as i64]));
    out
}

fn time<T>(runs: u32, mut f: impl FnMut() -> T) -> Duration {
    let start = Instant::now();
    for _ in 0..runs {
        black_box(f());
    }
    start.elapsed() / runs
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

#[test]
#[ignore]
fn bench_handle() {
    let streams: Vec<Vec<Instruction>> = (1..=4).map(desktop_stream).collect();
    let bytes: usize = streams.iter().flatten().map(Instruction::len).sum();
    let count: usize = streams.iter().map(Vec::len).sum();
    let mut display = Display::new(DisplayLimits::default());
    let elapsed = time(3, || {
        for stream in &streams {
            for instruction in stream {
                display.handle(instruction).unwrap();
            }
        }
    });
    println!(
        "handle, full-screen repaints as 64x64 PNG/JPEG tiles: {:.1} MB, {count} instructions in {elapsed:?}: {:.1} MB/s, {:.0} ns/instruction, {:.1} ms per MB",
        mb(bytes),
        mb(bytes) / elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / count as f64,
        elapsed.as_secs_f64() * 1e3 / mb(bytes),
    );

    // Small updates (a terminal, typing, scrolling): no images.
    feed(&mut display, &[num("size", &[-1, 700, 12])]);
    let mut rng = Rng(5);
    type Make<'a> = Box<dyn FnMut(i64) -> Vec<Instruction> + 'a>;
    let kinds: [(&str, Make<'_>); 4] = [
        (
            "rect + cfill 80x20",
            Box::new(|_| {
                let (x, y) = (rng.below(1800) as i64, rng.below(1000) as i64);
                vec![
                    num("rect", &[0, x, y, 80, 20]),
                    num("cfill", &[0xE, 0, 255, 255, 255, 255]),
                ]
            }),
        ),
        (
            "copy of a 7x12 glyph from a buffer",
            Box::new(|i| {
                vec![num(
                    "copy",
                    &[
                        -1,
                        (i % 100) * 7,
                        0,
                        7,
                        12,
                        0xE,
                        0,
                        (i * 37) % 1900,
                        (i * 91) % 1060,
                    ],
                )]
            }),
        ),
        (
            "copy within the layer, 1900x200 scroll",
            Box::new(|_| vec![num("copy", &[0, 0, 40, 1900, 200, 0xE, 0, 0, 20])]),
        ),
        ("sync", Box::new(|i| vec![num("sync", &[i])])),
    ];
    for (name, mut make) in kinds {
        let instructions: Vec<Instruction> = (0..5000).flat_map(&mut make).collect();
        let elapsed = time(3, || {
            for instruction in &instructions {
                display.handle(instruction).unwrap();
            }
        });
        println!(
            "handle, {name}: {:.0} ns/instruction",
            elapsed.as_nanos() as f64 / instructions.len() as f64
        );
    }
}

#[test]
#[ignore]
fn bench_snapshot_and_encode() {
    let mut display = Display::new(DisplayLimits::default());
    for instruction in desktop_stream(1) {
        display.handle(&instruction).unwrap();
    }
    // guacd's usual extras: a cursor buffer and a few glyph caches.
    for instruction in [
        num("size", &[-1, 32, 32]),
        num("cursor", &[0, 0, -1, 0, 0, 32, 32]),
    ] {
        display.handle(&instruction).unwrap();
    }
    assert!(display.key_frame_ready() && !display.is_degraded());

    let snapshot_time = time(10_000, || display.snapshot());
    println!("snapshot: {snapshot_time:?}");
    // The first write after a snapshot copies the layer (copy on write).
    let snapshot = display.snapshot();
    let fill = [
        num("rect", &[0, 0, 0, 1, 1]),
        num("cfill", &[0xE, 0, 1, 2, 3, 255]),
    ];
    let start = Instant::now();
    for instruction in &fill {
        display.handle(instruction).unwrap();
    }
    println!(
        "first 1-pixel fill after a snapshot (copies the 1920x1080 layer): {:?}",
        start.elapsed()
    );
    drop(snapshot);

    let snapshot = display.snapshot();
    let key_frame = snapshot.encode();
    let elapsed = time(5, || snapshot.encode());
    println!(
        "encode 1920x1080 desktop: {elapsed:?}, {:.2} MB key frame ({} tiles of {})",
        mb(key_frame.len()),
        decode(&key_frame).iter().filter(|i| i.is("img")).count(),
        crate::TILE_SIZE,
    );

    // Alternatives, for the record.
    let surface = &display.layers[&0].surface;
    use png::{DeflateCompression as D, Filter as F};
    for (deflate, filter) in [
        (D::FdeflateUltraFast, F::Up),
        (D::FdeflateUltraFast, F::Adaptive),
        (D::FdeflateUltraFast, F::Paeth),
        (D::Level(1), F::Adaptive),
        (D::Level(2), F::Adaptive),
        (D::Level(3), F::Adaptive),
        (D::Level(6), F::Adaptive),
    ] {
        let settings = crate::keyframe::PngSettings { deflate, filter };
        let default = matches!(deflate, D::FdeflateUltraFast) && filter == F::Adaptive;
        let tiles: &[u32] = if default {
            &[128, 256, 512, 2048]
        } else {
            &[256]
        };
        for &tile in tiles {
            let mut out = BytesMut::new();
            let elapsed = time(3, || {
                out.clear();
                crate::keyframe::encode_tiles(&mut out, (0, 0), surface, tile, settings);
            });
            let name = format!("{deflate:?} {filter:?}");
            println!(
                "  layer 0 with {name:>28}, tiles of {tile:>4}: {elapsed:>10.2?}, {:.2} MB",
                mb(out.len())
            );
        }
    }

    // Replaying the key frame (what a fresh display, or a player, decodes).
    let instructions = decode(&key_frame);
    let elapsed = time(3, || {
        let mut replay = Display::new(DisplayLimits::default().for_key_frame_replay());
        for instruction in &instructions {
            replay.handle(instruction).unwrap();
        }
        replay
    });
    println!("replay of the key frame into a fresh display: {elapsed:?}");
}
