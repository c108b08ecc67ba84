//! Helpers: instructions, images made with the same codecs the model decodes, and the key
//! frame replay check.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zt_guac::{Decoder, Instruction, Limits};

use crate::surface::Pixel;
use crate::{Display, DisplayError, DisplayLimits};

/// An instruction with integer arguments.
pub(crate) fn num(opcode: &str, args: &[i64]) -> Instruction {
    let args: Vec<String> = args.iter().map(i64::to_string).collect();
    Instruction::new(opcode, &args)
}

/// An instruction with text arguments.
pub(crate) fn text(opcode: &str, args: &[&str]) -> Instruction {
    Instruction::new(opcode, args)
}

/// `img` + `blob`s (of at most `chunk` base64 characters) + `end`.
pub(crate) fn image(
    stream: u32,
    mask: u8,
    layer: i32,
    mimetype: &str,
    (x, y): (i32, i32),
    bytes: &[u8],
) -> Vec<Instruction> {
    image_chunked(stream, mask, layer, mimetype, (x, y), bytes, 4000)
}

pub(crate) fn image_chunked(
    stream: u32,
    mask: u8,
    layer: i32,
    mimetype: &str,
    (x, y): (i32, i32),
    bytes: &[u8],
    chunk: usize,
) -> Vec<Instruction> {
    let s = stream.to_string();
    let mut out = vec![text(
        "img",
        &[
            &s,
            &mask.to_string(),
            &layer.to_string(),
            mimetype,
            &x.to_string(),
            &y.to_string(),
        ],
    )];
    for piece in bytes.chunks(chunk / 4 * 3) {
        out.push(text("blob", &[&s, &STANDARD.encode(piece)]));
    }
    out.push(num("end", &[stream.into()]));
    out
}

/// Pixels of a `w × h` image from a function of the coordinates.
pub(crate) fn pixels(w: u32, h: u32, f: impl Fn(u32, u32) -> Pixel) -> Vec<Pixel> {
    (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| f(x, y))
        .collect()
}

pub(crate) fn png(w: u32, h: u32, f: impl Fn(u32, u32) -> Pixel) -> Vec<u8> {
    let data: Vec<u8> = pixels(w, h, f).into_iter().flatten().collect();
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&data)
        .unwrap();
    out
}

pub(crate) fn jpeg(w: u16, h: u16, f: impl Fn(u32, u32) -> Pixel) -> Vec<u8> {
    let data: Vec<u8> = pixels(w.into(), h.into(), f)
        .into_iter()
        .flat_map(|[r, g, b, _]| [r, g, b])
        .collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 95)
        .encode(&data, w, h, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    out
}

pub(crate) fn webp(w: u32, h: u32, f: impl Fn(u32, u32) -> Pixel) -> Vec<u8> {
    let data: Vec<u8> = pixels(w, h, f).into_iter().flatten().collect();
    let mut out = Vec::new();
    image_webp::WebPEncoder::new(&mut out)
        .encode(&data, w, h, image_webp::ColorType::Rgba8)
        .unwrap();
    out
}

/// Feeds instructions, asserting each is accepted.
pub(crate) fn feed(display: &mut Display, instructions: &[Instruction]) {
    for instruction in instructions {
        display
            .handle(instruction)
            .unwrap_or_else(|e| panic!("{instruction:?}: {e}"));
    }
}

/// Feeds instructions, returning the errors.
pub(crate) fn feed_all(display: &mut Display, instructions: &[Instruction]) -> Vec<DisplayError> {
    instructions
        .iter()
        .filter_map(|i| display.handle(i).err())
        .collect()
}

/// Decodes a byte stream into instructions.
pub(crate) fn decode(bytes: &[u8]) -> Vec<Instruction> {
    let mut decoder = Decoder::new(Limits::default());
    decoder.feed(bytes);
    let mut out = Vec::new();
    while let Some(instruction) = decoder.poll_instruction().unwrap() {
        out.push(instruction);
    }
    assert!(decoder.is_at_boundary());
    out
}

/// The pixel at `(x, y)` of a layer.
pub(crate) fn pixel(display: &Display, layer: i32, x: u32, y: u32) -> Pixel {
    let surface = &display.layers[&layer].surface;
    assert!(
        x < surface.width() && y < surface.height(),
        "({x}, {y}) outside layer {layer}"
    );
    surface.pixels()[(y * surface.width() + x) as usize]
}

pub(crate) fn size_of(display: &Display, layer: i32) -> (u32, u32) {
    let surface = &display.layers[&layer].surface;
    (surface.width(), surface.height())
}

/// Encodes a key frame of `display`, replays it into a fresh display and asserts both are
/// indistinguishable. Returns the replayed display.
pub(crate) fn assert_replays(display: &Display) -> Display {
    assert!(display.key_frame_ready(), "not ready for a key frame");
    assert!(!display.is_degraded(), "degraded");
    let snapshot = display.snapshot();
    assert!(snapshot.is_complete());
    let bytes = snapshot.encode();
    let mut replay = Display::new(display.limits().for_key_frame_replay());
    for instruction in decode(&bytes) {
        zt_guac::GUACD_MAX_INSTRUCTION_BYTES
            .checked_sub(instruction.len())
            .expect("fits guacd's limit");
        replay
            .handle(&instruction)
            .unwrap_or_else(|e| panic!("replaying {instruction:?}: {e}"));
    }
    assert!(!replay.is_degraded());
    assert!(replay.key_frame_ready());
    assert_eq!(replay.canonical(), display.canonical());
    replay
}

/// A deterministic pseudo-random generator (xorshift), for generated sessions.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Small limits for tests of limits and hostile input.
pub(crate) fn small_limits() -> DisplayLimits {
    DisplayLimits {
        max_layer_width: 100,
        max_layer_height: 80,
        max_total_pixels: 20_000,
        max_layers: 4,
        max_buffers: 3,
        max_image_streams: 2,
        max_image_stream_bytes: 1000,
        max_total_image_stream_bytes: 1500,
        max_image_pixels: 2000,
        max_path_points: 16,
        max_state_stack: 3,
    }
}
