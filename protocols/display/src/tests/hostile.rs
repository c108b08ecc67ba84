//! Hostile input: never a panic, never an allocation beyond the limits.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zt_guac::Instruction;

use super::support::*;
use crate::{Display, DisplayError, DisplayLimits, Limit};

#[test]
fn huge_and_negative_sizes_allocate_nothing() {
    let mut d = Display::new(DisplayLimits::default());
    let max = i64::from(i32::MAX);
    assert_eq!(
        d.handle(&num("size", &[0, max, max])),
        Err(DisplayError::LimitExceeded(Limit::LayerSize))
    );
    assert!(matches!(
        d.handle(&num("size", &[0, -1, 5])),
        Err(DisplayError::BadArgument { .. })
    ));
    assert!(d.handle(&num("size", &[0, max + 1, 5])).is_err());
    assert_eq!(
        d.handle(&num("cursor", &[0, 0, 0, 0, 0, max, max])),
        Err(DisplayError::LimitExceeded(Limit::LayerSize))
    );
    assert_eq!(d.total_pixels(), 0);
    d.check_invariants();
}

#[test]
fn extreme_indexes_and_coordinates() {
    let mut d = Display::new(DisplayLimits::default());
    let (min, max) = (i64::from(i32::MIN), i64::from(i32::MAX));
    feed(
        &mut d,
        &[
            num("size", &[min, 1, 1]),
            num("size", &[max, 1, 1]),
            num("size", &[0, 10, 10]),
        ],
    );
    let _ = feed_all(
        &mut d,
        &[
            num("copy", &[0, max, max, max, max, 0xE, 0, min, min]),
            num("copy", &[0, min, min, max, max, 0xE, 0, 0, 0]),
            num("copy", &[0, 0, 0, max, max, 0xE, -1, max, max]),
            num("copy", &[0, 0, 0, 5, 5, 0xE, 0, max, min]),
            num("transfer", &[0, min, min, max, max, 0x6, 0, 0, 0]),
            num("transfer", &[0, min, min, max, max, 0x6, -2, 0, 0]),
            num("rect", &[0, min, min, max, max]),
            num("cfill", &[0xC, 0, 1, 2, 3, 4]),
            num("rect", &[-3, max, max, max, max]),
            num("start", &[-4, max, max]),
            num("cursor", &[max, min, 0, min, min, 10, 10]),
            text(
                "arc",
                &["0", "5", "5", "2147483647", "-1e300", "1e300", "1"],
            ),
            num("cfill", &[0xE, 0, 1, 2, 3, 255]),
            text(
                "transform",
                &["0", "1e308", "1e308", "-1e308", "1e308", "1e308", "1e308"],
            ),
            num("rect", &[0, 0, 0, max, max]),
            num("line", &[0, min, 3]),
            num("cstroke", &[0xE, 0, 1, 2, max, 1, 2, 3, 255]),
            num("clip", &[0]),
            text("distort", &["1", "1e308", "0", "0", "1e308", "-1e308", "0"]),
            num("move", &[max, max, min, min, min]),
            num("shade", &[max, min]),
        ],
    );
    d.check_invariants();
    assert!(
        d.layers
            .values()
            .all(|l| l.surface.area() <= 100 || l.surface.area() == 0)
    );
}

#[test]
fn thousands_of_layers_are_refused_beyond_the_limit() {
    let mut d = Display::new(DisplayLimits::default());
    feed(&mut d, &[num("size", &[0, 16, 16])]);
    let mut refused = 0;
    for i in 1..5000 {
        refused += usize::from(d.handle(&num("size", &[i, 1, 1])).is_err());
        refused += usize::from(d.handle(&num("size", &[-i, 1, 1])).is_err());
    }
    assert_eq!(refused, (4999 - 255) + (4999 - 4096));
    assert_eq!(d.layer_count(), 256 + 4096);
    d.check_invariants();
}

#[test]
fn decompression_bombs_are_refused_from_the_header() {
    // A valid PNG whose header claims 60000 × 60000 (the data is the original 1 × 1 pixel).
    let mut bytes = png(1, 1, |_, _| [1, 2, 3, 255]);
    bytes[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    let mut d = Display::new(DisplayLimits::default());
    feed(&mut d, &[num("size", &[0, 4, 4])]);
    let errors = feed_all(&mut d, &image(0, 0xE, 0, "image/png", (0, 0), &bytes));
    assert_eq!(errors, vec![DisplayError::LimitExceeded(Limit::ImageSize)]);
    // And a real one: 4096 × 4096 of zeros compresses to ~50 KiB but is refused by its size.
    let mut d = Display::new(DisplayLimits {
        max_image_pixels: 4096 * 4095,
        ..DisplayLimits::default()
    });
    let bomb = png(4096, 4096, |_, _| [0; 4]);
    assert!(bomb.len() < 100_000);
    let errors = feed_all(&mut d, &image(0, 0xE, 0, "image/png", (0, 0), &bomb));
    assert_eq!(errors, vec![DisplayError::LimitExceeded(Limit::ImageSize)]);
}

#[test]
fn truncated_and_garbage_images() {
    let good = png(8, 8, |x, y| [x as u8, y as u8, 0, 255]);
    let jpg = jpeg(8, 8, |x, y| [x as u8, y as u8, 0, 255]);
    let wbp = webp(8, 8, |x, y| [x as u8, y as u8, 0, 255]);
    for (mime, bytes) in [
        ("image/png", &good),
        ("image/jpeg", &jpg),
        ("image/webp", &wbp),
    ] {
        for cut in [0, 1, 8, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut d = Display::new(DisplayLimits::default());
            let errors = feed_all(&mut d, &image(0, 0xE, 0, mime, (0, 0), &bytes[..cut]));
            assert!(errors.len() <= 1, "{mime} cut at {cut}");
            d.check_invariants();
        }
        let mut garbage = bytes.clone();
        for (i, b) in garbage.iter_mut().enumerate().skip(30) {
            *b ^= (i * 37) as u8;
        }
        let mut d = Display::new(DisplayLimits::default());
        let _ = feed_all(&mut d, &image(0, 0xE, 0, mime, (0, 0), &garbage));
        d.check_invariants();
    }
}

#[test]
fn random_instruction_soup_never_panics() {
    const OPCODES: &[&str] = &[
        "size",
        "img",
        "blob",
        "end",
        "copy",
        "rect",
        "cfill",
        "cursor",
        "sync",
        "mouse",
        "transfer",
        "move",
        "shade",
        "distort",
        "dispose",
        "start",
        "line",
        "arc",
        "curve",
        "close",
        "clip",
        "push",
        "pop",
        "reset",
        "identity",
        "transform",
        "cstroke",
        "lfill",
        "lstroke",
        "set",
        "nest",
        "png",
        "audio",
        "nop",
    ];
    const VALUES: &[&str] = &[
        "0",
        "1",
        "2",
        "3",
        "-1",
        "-2",
        "4",
        "12",
        "14",
        "64",
        "255",
        "-7",
        "2147483647",
        "-2147483648",
        "0.5",
        "x",
        "",
        "image/png",
        "image/jpeg",
        "1e9",
        "AAAA",
        "iVBORw0KGgo=",
    ];
    let png_blob = base64::Engine::encode(&STANDARD, png(3, 2, |x, _| [x as u8, 1, 2, 200]));
    for seed in 1..40 {
        let mut rng = Rng(seed);
        let mut bytes = Vec::new();
        for _ in 0..400 {
            let opcode = OPCODES[rng.below(OPCODES.len() as u64) as usize];
            let args: Vec<&str> = (0..rng.below(10))
                .map(|_| {
                    if rng.below(20) == 0 {
                        png_blob.as_str()
                    } else {
                        VALUES[rng.below(VALUES.len() as u64) as usize]
                    }
                })
                .collect();
            bytes.extend_from_slice(Instruction::new(opcode, &args).raw());
        }
        crate::fuzzing::feed(&bytes);
    }
}

#[test]
fn the_fuzz_check_accepts_real_sessions() {
    let session = super::replay::rdp_session_sized(5, 10, (160, 100));
    let mut display = Display::new(crate::fuzzing::FUZZ_LIMITS);
    let mut bytes = Vec::new();
    for instruction in &session {
        display.handle(instruction).unwrap();
        bytes.extend_from_slice(instruction.raw());
    }
    assert!(!display.is_degraded());
    assert!(crate::fuzzing::check_key_frame(&display));
    crate::fuzzing::feed(&bytes);
    // The committed seeds hold too.
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/display_feed");
    for entry in std::fs::read_dir(corpus).into_iter().flatten().flatten() {
        crate::fuzzing::feed(&std::fs::read(entry.path()).unwrap());
    }
}

/// CRC-32 (IEEE), for patching PNG chunks.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn fills_that_would_take_too_long_are_refused() {
    let mut d = Display::new(DisplayLimits::default());
    feed(
        &mut d,
        &[num("size", &[0, 10, 16_000]), num("start", &[0, 0, 0])],
    );
    for i in 0..2000 {
        feed(
            &mut d,
            &[num(
                "line",
                &[0, i % 10, if i % 2 == 0 { 16_000 } else { 0 }],
            )],
        );
    }
    assert_eq!(
        d.handle(&num("cstroke", &[0xE, 0, 1, 2, 3, 1, 2, 3, 255])),
        Err(DisplayError::LimitExceeded(Limit::PathPoints))
    );
    assert_eq!(
        d.handle(&num("cfill", &[0xE, 0, 1, 2, 3, 255])),
        Err(DisplayError::LimitExceeded(Limit::PathPoints))
    );
    assert!(d.is_degraded());
}

/// The structured mode of the `display_feed` fuzz target on deterministic programs, so that
/// plain `cargo test` exercises the same contract (limits, bookkeeping, exact key frames).
#[test]
fn generated_drawing_programs_keep_the_contract() {
    let mut rng = Rng(0x5EED);
    let (mut programs, mut checked) = (0, 0);
    for _ in 0..400 {
        let len = 50 + rng.below(1500) as usize;
        let mut program: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        program[0] |= 1; // the structured mode
        let key_frames = crate::fuzzing::run(&program);
        programs += usize::from(key_frames > 0);
        checked += key_frames;
    }
    println!("{programs} programs with {checked} key frames checked");
    assert!(
        programs > 100,
        "too few programs reached a key frame: {programs}"
    );
}

/// guacd 1.6 interleaves image streams; a hostile server can open thousands, send blobs for
/// streams it never opened and end streams twice. Memory stays within the limits, the
/// bookkeeping adds up after every instruction, and the display recovers once the layer is
/// overwritten.
#[test]
fn thousands_of_interleaved_image_streams_stay_bounded() {
    let limits = DisplayLimits::default();
    let mut d = Display::new(limits);
    let mut deferred = crate::DeferredDisplay::new(Display::new(limits), 1 << 20);
    let mut handle = |d: &mut Display, instruction: &Instruction| {
        let _ = d.handle(instruction);
        deferred.handle(instruction);
        d.check_invariants();
        assert!(deferred.queued_bytes() <= 1 << 20);
    };
    handle(&mut d, &num("size", &[0, 512, 512]));
    let tile = png(8, 8, |x, y| [x as u8 * 30, y as u8 * 30, 7, 255]);
    let encoded = STANDARD.encode(&tile);
    let pieces: Vec<&str> = encoded
        .as_bytes()
        .chunks(16)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    const STREAMS: u32 = 5_000;
    for s in 0..STREAMS {
        let (x, y) = ((s % 64 * 8).to_string(), (s / 64 % 64 * 8).to_string());
        let s = s.to_string();
        handle(&mut d, &text("img", &[&s, "14", "0", "image/png", &x, &y]));
    }
    // Interleaved: piece k of every stream, then piece k + 1, with blobs for streams that
    // were never opened in between.
    for piece in &pieces {
        for s in 0..STREAMS {
            handle(&mut d, &text("blob", &[&s.to_string(), piece]));
        }
        handle(&mut d, &text("blob", &["999999", piece]));
        handle(&mut d, &text("blob", &["4294967295", piece]));
    }
    // Every stream ended twice, in reverse order.
    for s in (0..STREAMS).rev() {
        handle(&mut d, &num("end", &[s.into()]));
        handle(&mut d, &num("end", &[s.into()]));
    }
    assert!(d.key_frame_ready(), "no image stream is left open");
    // Beyond 64 open streams the images were refused: the layer is degraded, and says why.
    assert!(d.is_degraded());
    assert_eq!(
        d.degradation(),
        Some(DisplayError::LimitExceeded(Limit::ImageStreams))
    );
    // The first 64 were drawn, each where it belongs.
    assert_eq!(pixel(&d, 0, 8 * 3 + 1, 0), [30, 0, 7, 255]);
    // Overwritten whole, the layer is trusted again and its key frame replays.
    handle(&mut d, &num("rect", &[0, 0, 0, 512, 512]));
    handle(&mut d, &num("cfill", &[0xC, 0, 1, 2, 3, 255]));
    assert!(!d.is_degraded());
    assert_replays(&d);
    deferred.flush();
    assert_eq!(deferred.display().canonical(), d.canonical());
}
