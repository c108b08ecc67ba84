//! Replay: key frames taken at several points of realistic sessions, fed into fresh displays,
//! must give identical displays — and stay identical when the rest of the session is fed to
//! both.

use zt_guac::Instruction;

use super::support::*;
use crate::surface::Pixel;
use crate::{Display, DisplayLimits};

/// A session shaped like what guacd 1.5/1.6 sends for RDP: a default layer updated with PNG
/// and JPEG tiles, solid fills, scrolls (`copy` within the layer), glyphs copied from cache
/// buffers, a cursor drawn into a buffer with SRC, a non-opaque visible layer (a pop-up, as
/// RemoteApp windows are) cleared with ROUT and drawn with OVER, moved and shaded, buffers
/// disposed and recreated, images on disjoint areas streamed concurrently (guacd 1.6's
/// worker threads), `mouse` and `sync`.
pub(crate) fn rdp_session(seed: u64, frames: usize) -> Vec<Instruction> {
    rdp_session_sized(seed, frames, (320, 200))
}

/// [`rdp_session`] on a screen of another size (at least 120 × 80).
pub(crate) fn rdp_session_sized(seed: u64, frames: usize, (w, h): (i64, i64)) -> Vec<Instruction> {
    let mut rng = Rng(seed | 1);
    let mut out = vec![num("size", &[0, w, h])];
    let mut timestamp = 1_000;
    let solid = |rng: &mut Rng| -> Pixel {
        [
            rng.below(256) as u8,
            rng.below(256) as u8,
            rng.below(256) as u8,
            255,
        ]
    };
    let cursor = |rng: &mut Rng, out: &mut Vec<Instruction>| {
        let (cw, ch) = (8 + rng.below(8) as u32, 10 + rng.below(8) as u32);
        let tone = rng.below(200) as u8;
        let bytes = png(cw, ch, |x, y| {
            if x <= y {
                [tone, tone, tone, 255]
            } else if x == y + 1 {
                [0, 0, 0, 128]
            } else {
                [0; 4]
            }
        });
        out.push(num("size", &[-1, cw.into(), ch.into()]));
        out.extend(image(2, 0xC, -1, "image/png", (0, 0), &bytes));
        out.push(num("cursor", &[1, 1, -1, 0, 0, cw.into(), ch.into()]));
    };
    cursor(&mut rng, &mut out);
    // Glyph cache buffers.
    for buffer in 2..=4 {
        let bytes = png(48, 12, |x, y| {
            if (x / 3 + y + buffer) % 4 == 0 {
                [0, 0, 0, 255]
            } else {
                [255, 255, 255, 255]
            }
        });
        out.push(num("size", &[-i64::from(buffer), 48, 12]));
        out.extend(image(4, 0xE, -(buffer as i32), "image/png", (0, 0), &bytes));
    }
    for frame in 0..frames {
        for _ in 0..1 + rng.below(6) {
            match rng.below(10) {
                0 | 1 => {
                    let (tw, th) = (8 + rng.below(56) as u32, 8 + rng.below(40) as u32);
                    let (x, y) = (
                        rng.below((w - 8) as u64) as i32,
                        rng.below((h - 8) as u64) as i32,
                    );
                    let base = rng.next();
                    let bytes = png(tw, th, |px, py| {
                        let v = (u64::from(px * 7 + py * 13) ^ base) as u8;
                        [v, v.wrapping_mul(3), v.wrapping_add(90), 255]
                    });
                    out.extend(image(0, 0xE, 0, "image/png", (x, y), &bytes));
                }
                2 => {
                    let (tw, th) = (16 + rng.below(48) as u16, 16 + rng.below(32) as u16);
                    let (x, y) = (rng.below(w as u64) as i32, rng.below(h as u64) as i32);
                    let c = rng.below(256) as u32;
                    let bytes = jpeg(tw, th, |px, py| {
                        [(px * 4 + c) as u8, (py * 4) as u8, c as u8, 255]
                    });
                    out.extend(image(6, 0xE, 0, "image/jpeg", (x, y), &bytes));
                }
                3 => {
                    let (x, y) = (rng.below(w as u64) as i64, rng.below(h as u64) as i64);
                    let [r, g, b, a] = solid(&mut rng);
                    out.push(num(
                        "rect",
                        &[0, x, y, 1 + rng.below(100) as i64, 1 + rng.below(60) as i64],
                    ));
                    out.push(num(
                        "cfill",
                        &[0xE, 0, r.into(), g.into(), b.into(), a.into()],
                    ));
                }
                4 => {
                    // Scroll a region up.
                    let dy = 1 + rng.below(20) as i64;
                    out.push(num("copy", &[0, 0, dy, w, h - dy, 0xE, 0, 0, 0]));
                }
                5 => {
                    // A few glyphs from a cache buffer.
                    let buffer = -(2 + rng.below(3) as i64);
                    let (x, y) = (rng.below(w as u64) as i64, rng.below(h as u64) as i64);
                    for i in 0..4 {
                        out.push(num(
                            "copy",
                            &[buffer, i * 12, 0, 12, 12, 0xE, 0, x + i * 8, y],
                        ));
                    }
                }
                6 => {
                    // The pop-up layer: cleared, redrawn with alpha, moved, shaded.
                    let (pw, ph) = (40 + rng.below(60) as i64, 30 + rng.below(40) as i64);
                    out.push(num("size", &[1, pw, ph]));
                    out.push(num("rect", &[1, 0, 0, pw, ph]));
                    out.push(num("cfill", &[0x2, 1, 0, 0, 0, 255]));
                    let alpha = 100 + rng.below(155) as u8;
                    let bytes = png(pw as u32, ph as u32, |x, y| {
                        [x as u8, y as u8, 200, if x < 4 { 0 } else { alpha }]
                    });
                    out.extend(image(8, 0xE, 1, "image/png", (0, 0), &bytes));
                    let (x, y, z) = (
                        rng.below(w as u64) as i64,
                        rng.below(h as u64) as i64,
                        rng.below(3) as i64,
                    );
                    out.push(num("move", &[1, 0, x, y, z]));
                    out.push(num("shade", &[1, 128 + rng.below(128) as i64]));
                }
                7 => {
                    // Two images on disjoint halves of the screen, streamed concurrently.
                    let a = png(32, 16, |x, _| [x as u8 * 8, 0, 0, 255]);
                    let b = png(32, 16, |_, y| [0, y as u8 * 16, 0, 255]);
                    let (ia, ib) = (
                        image(10, 0xE, 0, "image/png", (0, 0), &a),
                        image(12, 0xE, 0, "image/png", (w as i32 - 40, h as i32 - 20), &b),
                    );
                    let (mut ia, mut ib) = (ia.into_iter(), ib.into_iter());
                    loop {
                        let (x, y) = (ia.next(), ib.next());
                        if x.is_none() && y.is_none() {
                            break;
                        }
                        out.extend(x.into_iter().chain(y));
                    }
                }
                8 => {
                    if rng.below(4) == 0 {
                        cursor(&mut rng, &mut out);
                    }
                    out.push(num(
                        "mouse",
                        &[
                            rng.below(w as u64) as i64,
                            rng.below(h as u64) as i64,
                            0,
                            timestamp,
                        ],
                    ));
                }
                _ => {
                    // A transient buffer: created, used, disposed.
                    let bytes = png(10, 10, |x, y| [x as u8 * 20, y as u8 * 20, 0, 255]);
                    out.extend(image(14, 0xE, -9, "image/png", (0, 0), &bytes));
                    out.push(num(
                        "copy",
                        &[
                            -9,
                            0,
                            0,
                            10,
                            10,
                            0xE,
                            0,
                            rng.below(w as u64 - 10) as i64,
                            rng.below(h as u64 - 10) as i64,
                        ],
                    ));
                    if frame % 2 == 0 {
                        out.push(num("dispose", &[-9]));
                    }
                }
            }
        }
        timestamp += 40 + rng.below(200) as i64;
        out.push(num("sync", &[timestamp]));
    }
    out
}

/// Feeds `session`; at every `every`-th `sync` takes a key frame and starts a replay from it;
/// feeds the rest of the session to the original and every replay; checks they stay equal.
fn check_session(session: &[Instruction], every: usize) -> usize {
    let mut display = Display::new(DisplayLimits::default());
    let mut replays: Vec<Display> = Vec::new();
    let mut syncs = 0;
    for instruction in session {
        display
            .handle(instruction)
            .unwrap_or_else(|e| panic!("{instruction:?}: {e}"));
        for replay in &mut replays {
            replay
                .handle(instruction)
                .unwrap_or_else(|e| panic!("replay: {instruction:?}: {e}"));
        }
        if instruction.is("sync") {
            syncs += 1;
            if syncs % every == 0 {
                replays.push(assert_replays(&display));
            }
        }
    }
    assert!(!display.is_degraded());
    let expected = display.canonical();
    for replay in &replays {
        assert_eq!(
            replay.canonical(),
            expected,
            "a replay diverged after its key frame"
        );
    }
    replays.len()
}

#[test]
fn key_frames_of_an_rdp_like_session_replay_exactly() {
    let session = rdp_session(7, 60);
    assert!(check_session(&session, 12) >= 4);
}

#[test]
fn key_frames_replay_for_other_seeds() {
    for seed in [1, 2, 3] {
        check_session(&rdp_session(seed, 25), 5);
    }
}

#[test]
fn key_frame_of_a_fresh_display() {
    let display = Display::new(DisplayLimits::default());
    let key_frame = display.snapshot().encode();
    assert_eq!(&key_frame[..], b"4.size,1.0,1.0,1.0;4.sync,1.0;");
    assert_replays(&display);
}

#[test]
fn key_frames_use_guacd_sized_blobs_and_skip_transparent_tiles() {
    let mut display = Display::new(DisplayLimits::default());
    // Noise does not compress: one 256 × 256 tile is about 256 KiB of PNG.
    let mut rng = Rng(99);
    let noise: Vec<Pixel> = (0..600 * 300)
        .map(|_| [rng.next() as u8, rng.next() as u8, rng.next() as u8, 255])
        .collect();
    let bytes = png(600, 300, |x, y| noise[(y * 600 + x) as usize]);
    feed(&mut display, &[num("size", &[0, 600, 600])]);
    feed(&mut display, &image(0, 0xE, 0, "image/png", (0, 0), &bytes));
    let instructions = decode(&display.snapshot().encode());
    let blobs: Vec<_> = instructions.iter().filter(|i| i.is("blob")).collect();
    assert!(
        blobs
            .iter()
            .all(|b| b.arg(1).unwrap().len() <= crate::BLOB_CHARS)
    );
    assert!(
        blobs
            .iter()
            .any(|b| b.arg(1).unwrap().len() == crate::BLOB_CHARS)
    );
    // Rows 0–299 are drawn (two tile rows, three tiles each); the rest is transparent.
    assert_eq!(instructions.iter().filter(|i| i.is("img")).count(), 6);
    assert_replays(&display);
}

#[test]
fn snapshots_share_pixels_until_the_display_draws() {
    let mut display = Display::new(DisplayLimits::default());
    feed(
        &mut display,
        &[num("size", &[0, 64, 64]), num("size", &[-1, 8, 8])],
    );
    let snapshot = display.snapshot();
    let shared = |display: &Display, index: i32| {
        snapshot
            .surfaces()
            .any(|(i, s)| i == index && s.shares_pixels_with(&display.layers[&index].surface))
    };
    assert!(shared(&display, 0) && shared(&display, -1));
    let before = snapshot.encode();
    feed(
        &mut display,
        &[
            num("rect", &[0, 0, 0, 4, 4]),
            num("cfill", &[0xE, 0, 1, 2, 3, 255]),
        ],
    );
    assert!(!shared(&display, 0), "layer 0 was copied on write");
    assert!(shared(&display, -1), "the untouched buffer is still shared");
    assert_eq!(snapshot.encode(), before, "the snapshot did not change");
}

/// Writes the fuzz seed corpus of `display_feed` when `ZT_DISPLAY_SEED_DIR` names a
/// directory (`ZT_DISPLAY_SEED_DIR=protocols/fuzz/corpus/display_feed cargo test -p zt-display
/// write_fuzz_seeds`); does nothing otherwise.
#[test]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("ZT_DISPLAY_SEED_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let bytes = |instructions: &[Instruction]| -> Vec<u8> {
        instructions
            .iter()
            .flat_map(|i| i.raw().iter().copied())
            .collect()
    };
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    seeds.push(("rdp_session", bytes(&rdp_session_sized(3, 6, (160, 100)))));
    seeds.push((
        "rdp_session_long",
        bytes(&rdp_session_sized(11, 14, (200, 120))),
    ));
    let tile = png(6, 4, |x, y| {
        [x as u8 * 40, y as u8 * 60, 90, if x == 0 { 0 } else { 255 }]
    });
    let mut basic = vec![num("size", &[0, 40, 30]), num("size", &[-1, 6, 4])];
    basic.extend(image(0, 0xC, -1, "image/png", (0, 0), &tile));
    basic.extend([
        num("cursor", &[1, 1, -1, 0, 0, 6, 4]),
        num("copy", &[-1, 0, 0, 6, 4, 0xE, 0, 3, 3]),
        num("rect", &[0, 1, 1, 10, 5]),
        num("cfill", &[0xE, 0, 200, 10, 10, 255]),
        num("rect", &[0, 2, 2, 3, 3]),
        num("cfill", &[0x2, 0, 0, 0, 0, 255]),
        num("transfer", &[0, 0, 0, 8, 8, 0x6, 0, 20, 20]),
        num("size", &[1, 12, 8]),
        num("move", &[1, 0, 5, 5, 1]),
        num("shade", &[1, 128]),
        num("mouse", &[4, 4, 0, 10]),
        num("sync", &[10]),
    ]);
    seeds.push(("basic", bytes(&basic)));
    let mut paths = vec![num("size", &[0, 30, 30])];
    paths.extend([
        num("push", &[0]),
        num("start", &[0, 1, 1]),
        num("line", &[0, 20, 3]),
        num("curve", &[0, 5, 25, 10, 25, 2, 20]),
        num("close", &[0]),
        num("clip", &[0]),
        text("arc", &["0", "15", "15", "8", "0", "3.14", "1"]),
        num("cstroke", &[0xE, 0, 1, 2, 3, 0, 0, 255, 255]),
        num("pop", &[0]),
        text("transform", &["0", "1", "0", "0", "1", "2", "2"]),
        num("rect", &[0, 0, 0, 4, 4]),
        num("cfill", &[0xC, 0, 1, 2, 3, 4]),
        num("reset", &[0]),
        num("sync", &[20]),
    ]);
    seeds.push(("paths", bytes(&paths)));
    let mut formats = vec![num("size", &[0, 40, 40])];
    formats.extend(image(
        2,
        0xE,
        0,
        "image/jpeg",
        (1, 1),
        &jpeg(16, 8, |x, y| [x as u8 * 9, y as u8 * 20, 7, 255]),
    ));
    formats.extend(image(
        4,
        0xE,
        0,
        "image/webp",
        (8, 20),
        &webp(5, 5, |x, _| [x as u8 * 50, 0, 0, 128]),
    ));
    formats.push(num("sync", &[30]));
    seeds.push(("formats", bytes(&formats)));
    // Programs for the structured mode (odd first byte), each reaching a key frame.
    let mut rng = Rng(0x0D15_EA5E);
    let mut programs = 0;
    while programs < 3 {
        let len = 400 + rng.below(800) as usize;
        let mut program: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        program[0] |= 1;
        if crate::fuzzing::run(&program) > 1 {
            programs += 1;
            seeds.push((["ops_0", "ops_1", "ops_2"][programs - 1], program));
        }
    }
    for (name, data) in seeds {
        std::fs::write(dir.join(name), data).unwrap();
    }
}

/// Regression: a path closed by `clip` inside `push`/`pop` was never rasterised by the
/// server's stream, but the key frame closed it again with a transparent `cfill`, which
/// rasterised it and, for a long path on a tall layer, hit the fill work limit: the replay
/// failed and degraded. A transparent OVER fill draws nothing and is no longer rasterised.
#[test]
fn a_long_path_closed_without_a_fill_replays() {
    let mut display = Display::new(DisplayLimits::default());
    let mut session = vec![
        num("size", &[0, 16, 16_000]),
        num("push", &[0]),
        num("start", &[0, 0, 0]),
    ];
    for i in 1..4096 {
        session.push(num(
            "line",
            &[0, i % 16, if i % 2 == 0 { 0 } else { 15_999 }],
        ));
    }
    session.extend([num("clip", &[0]), num("pop", &[0]), num("sync", &[1])]);
    feed(&mut display, &session);
    assert_replays(&display);
    // The same fill with a visible colour is still refused.
    assert_eq!(
        display.handle(&num("cfill", &[0xE, 0, 1, 2, 3, 255])),
        Err(crate::DisplayError::LimitExceeded(crate::Limit::PathPoints))
    );
}

/// The replay check compares pixels, not just structure: a key frame without its images
/// gives a display with the same layers that the comparison tells apart.
#[test]
fn the_replay_comparison_sees_missing_pixels() {
    let mut display = Display::new(DisplayLimits::default());
    feed(
        &mut display,
        &[
            num("size", &[0, 20, 10]),
            num("rect", &[0, 2, 2, 5, 5]),
            num("cfill", &[0xE, 0, 255, 0, 0, 255]),
            num("sync", &[7]),
        ],
    );
    let key_frame = decode(&display.snapshot().encode());
    let mut without_images = Display::new(DisplayLimits::default().for_key_frame_replay());
    let kept: Vec<_> = key_frame
        .iter()
        .filter(|i| !(i.is("img") || i.is("blob") || i.is("end")))
        .cloned()
        .collect();
    assert!(kept.len() < key_frame.len());
    feed(&mut without_images, &kept);
    assert_eq!(size_of(&without_images, 0), (20, 10));
    assert_ne!(without_images.canonical(), display.canonical());
    let replay = assert_replays(&display);
    assert_eq!(pixel(&replay, 0, 3, 3), [255, 0, 0, 255]);
    assert_eq!(pixel(&replay, 0, 0, 0), [0, 0, 0, 0]);
}
