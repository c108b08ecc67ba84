//! [`DeferredDisplay`](crate::DeferredDisplay): the same state as a display shown everything,
//! with most images never decoded.

use crate::fuzzing::run_deferred;

/// The fuzz target's committed seeds, as a unit test.
#[test]
fn the_fuzz_seeds_pass() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/display_deferred"
    );
    let mut seeds = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        crate::fuzzing::deferred(&std::fs::read(entry.unwrap().path()).unwrap());
        seeds += 1;
    }
    assert!(seeds >= 6);
}

/// Random programs through the differential check of the `display_deferred` fuzz target.
#[test]
fn random_programs_end_in_the_same_state() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut compared, mut dropped) = (0, 0);
    for _ in 0..500 {
        let len = 64 + (next() % 1000) as usize;
        let program: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let (n, stats) = run_deferred(&program);
        compared += n;
        dropped += stats.images_dropped + stats.copies_dropped;
    }
    // The check must actually run, and culling must actually happen.
    assert!(compared > 1000, "only {compared} comparisons");
    assert!(dropped > 500, "only {dropped} drawings dropped");
}

use zt_guac::Instruction;

use crate::{DeferredDisplay, Display, DisplayLimits};

fn ints(opcode: &str, args: &[i64]) -> Instruction {
    let args: Vec<String> = args.iter().map(i64::to_string).collect();
    Instruction::new(opcode, &args)
}

fn png(w: u32, h: u32, alpha: bool, seed: u8) -> String {
    use base64::Engine as _;
    let channels = if alpha { 4 } else { 3 };
    let pixels: Vec<u8> = (0..w * h * channels)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(if alpha {
        png::ColorType::Rgba
    } else {
        png::ColorType::Rgb
    });
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(out)
}

fn image(out: &mut Vec<Instruction>, mask: i64, layer: i64, (x, y): (i64, i64), data: &str) {
    crate::fuzzing::png_stream(out, [1, mask, layer, x, y], data, data.len());
}

/// Runs `stream` through both; returns the deferred display's counters.
fn both(stream: &[Instruction], budget: usize) -> crate::DeferredStats {
    let mut eager = Display::new(DisplayLimits::default());
    let mut deferred = DeferredDisplay::new(Display::new(DisplayLimits::default()), budget);
    for instruction in stream {
        eager.handle(instruction).unwrap();
        deferred.handle(instruction);
    }
    deferred.flush();
    assert!(!eager.is_degraded() && !deferred.display().is_degraded());
    assert!(eager.canonical() == deferred.display().canonical());
    deferred.stats()
}

fn desktop() -> Vec<Instruction> {
    vec![
        ints("size", &[0, 640, 480]),
        ints("rect", &[0, 0, 0, 640, 480]),
        ints("cfill", &[14, 0, 0, 99, 140, 255]),
    ]
}

#[test]
fn an_image_painted_over_is_dropped_and_one_still_visible_is_not() {
    let mut stream = desktop();
    image(&mut stream, 14, 0, (32, 32), &png(64, 64, false, 1));
    image(&mut stream, 14, 0, (16, 16), &png(96, 96, false, 2));
    assert_eq!(both(&stream, 1 << 20).images_dropped, 1);
    // Partly covered, transparent cover, other layer: kept.
    for (mask, at, alpha, layer) in [
        (14, (40, 40), false, 0),
        (14, (0, 0), true, 0),
        (14, (0, 0), false, 1),
    ] {
        let mut stream = desktop();
        image(&mut stream, 14, 0, (32, 32), &png(64, 64, false, 1));
        image(&mut stream, mask, layer, at, &png(96, 96, alpha, 2));
        assert_eq!(
            both(&stream, 1 << 20).images_dropped,
            0,
            "{at:?} {alpha} {layer}"
        );
    }
}
#[test]
fn debug_one() {
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut program: Vec<u8> = (0..300)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    program[0] = 101;
    let (n, stats) = run_deferred(&program);
    eprintln!("{n} {stats:?}");
}

/// A stream like the guacd test peer's bulk display: 2–4 opaque tiles of 64 to 256 pixels
/// per frame on the 16-pixel grid (a quarter of them incompressible noise), a scroll of an
/// unaligned rectangle every third frame, a solid fill every fourth.
fn guacd_like(frames: usize, (width, height): (i64, i64)) -> Vec<Instruction> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: i64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n.max(1) as u64) as i64
    };
    const SIZES: [(u32, u32); 8] = [
        (64, 64),
        (128, 64),
        (96, 96),
        (128, 128),
        (192, 96),
        (256, 128),
        (160, 160),
        (256, 256),
    ];
    let tiles: Vec<(i64, i64, String)> = (0..16u32)
        .map(|i| {
            let (w, h) = SIZES[(i as usize * 3 + i as usize / 8) % 8];
            let noise = i % 4 == 3;
            let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(i);
            let pixels: Vec<u8> = (0..w * h * 3)
                .map(|p| {
                    if noise {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed >> 24) as u8
                    } else {
                        (p / 97) as u8
                    }
                })
                .collect();
            let mut png = Vec::new();
            let mut encoder = png::Encoder::new(&mut png, w, h);
            encoder.set_color(png::ColorType::Rgb);
            encoder
                .write_header()
                .unwrap()
                .write_image_data(&pixels)
                .unwrap();
            use base64::Engine as _;
            let text = base64::engine::general_purpose::STANDARD.encode(png);
            (i64::from(w), i64::from(h), text)
        })
        .collect();
    let mut out = vec![ints("size", &[0, width, height])];
    out.push(ints("rect", &[0, 0, 0, width, height]));
    out.push(ints("cfill", &[14, 0, 0, 99, 140, 255]));
    for frame in 0..frames {
        for _ in 0..2 + next(3) {
            let (w, h, data) = &tiles[next(16) as usize];
            let x = next(width - w + 1) & !15;
            let y = next(height - h + 1) & !15;
            image(&mut out, 14, 0, (x, y), data);
        }
        if next(3) == 0 {
            let (w, h) = (16 + next(384), 16 + next(284));
            let (x, y) = (next(width - w + 1), next(height - h + 1));
            if h > 16 {
                out.push(ints("copy", &[0, x, y + 16, w, h - 16, 14, 0, x, y]));
            }
        }
        if next(4) == 0 {
            let (w, h) = (16 + next(184), 16 + next(104));
            let (x, y) = (next(width - w + 1), next(height - h + 1));
            out.push(ints("rect", &[0, x, y, w, h]));
            out.push(ints("cfill", &[14, 0, 200, 10, 10, 255]));
        }
        out.push(ints("sync", &[frame as i64]));
    }
    out
}

/// What the recording's model decodes on such a stream, per budget (release mode).
#[test]
#[expect(
    clippy::disallowed_methods,
    reason = "a measurement reads the clock; it is a test, not part of the sans-IO core"
)]
#[ignore = "a measurement: cargo test --release -p zt-display deferred_budgets -- --ignored --nocapture"]
fn deferred_budgets() {
    let stream = guacd_like(3_000, (1920, 1080));
    let total: usize = stream.iter().map(Instruction::len).sum();
    for budget in [4 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20] {
        let mut deferred = DeferredDisplay::new(Display::new(DisplayLimits::default()), budget);
        let started = std::time::Instant::now();
        for instruction in &stream {
            deferred.handle(instruction);
        }
        deferred.flush();
        let stats = deferred.stats();
        println!(
            "budget {} MiB: {} MB in, {:.1} % shown, {:.0} MB/s, {stats:?}",
            budget >> 20,
            total / 1_000_000,
            stats.bytes_shown as f64 * 100.0 / total as f64,
            total as f64 / started.elapsed().as_secs_f64() / 1e6
        );
    }
}

/// guacd 1.6 saves every frame's changes from layer 0 into buffer -1 right after the frame's
/// `sync`. An image painted over in a later frame is then still dropped: its copy in the
/// buffer is replaced by the later frame's copy before anything reads it. The copies stay
/// (they grow the buffer), and both displays end equal, buffer included.
#[test]
fn guacd_1_6_backing_buffer_copies_do_not_keep_every_image() {
    let mut stream = desktop();
    for frame in 0..40i64 {
        // Two opaque tiles on the same spot each frame, then the sync and the copy.
        for k in 0..2 {
            image(
                &mut stream,
                14,
                0,
                (64, 32),
                &png(64, 64, false, (frame * 2 + k) as u8),
            );
        }
        stream.push(ints("sync", &[1000 + frame]));
        stream.push(ints("copy", &[0, 64, 32, 64, 64, 14, -1, 64, 32]));
    }
    let stats = both(&stream, 1 << 20);
    // Of each frame's two tiles the first is painted over within the frame, and the second
    // of every frame but the last is replaced in layer 0 and in the buffer.
    assert!(stats.images_dropped >= 70, "{stats:?}");
    assert_eq!(stats.copies_dropped, 0, "copies into buffers stay");
}
