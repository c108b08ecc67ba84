//! Fuzz entry points (and the same checks for the unit tests). Each takes arbitrary bytes and
//! asserts the display's contract, not just the absence of panics.

use zt_guac::{Decoder, Instruction, Limits};

use crate::{Display, DisplayLimits};

/// Limits small enough that a fuzzer reaches every one of them quickly.
pub const FUZZ_LIMITS: DisplayLimits = DisplayLimits {
    max_layer_width: 300,
    max_layer_height: 200,
    max_total_pixels: 120_000,
    max_layers: 6,
    max_buffers: 6,
    max_image_streams: 3,
    max_image_stream_bytes: 48 << 10,
    max_total_image_stream_bytes: 64 << 10,
    max_image_pixels: 40_000,
    max_path_points: 128,
    max_state_stack: 4,
};

/// Key frames checked at most per input (each costs an encode and a replay).
const MAX_KEY_FRAMES: usize = 4;

/// `display_feed`: arbitrary bytes fed to a display with [`FUZZ_LIMITS`], in one of two
/// modes chosen by the first byte:
///
/// * even (every Guacamole stream starts with an ASCII digit, so the committed seeds, which
///   are real streams, land here): the bytes are decoded as Guacamole instructions, which
///   exercises the model on what the wire can carry, malformed arguments included;
/// * odd: the rest is a program for [`Ops`], which turns each few bytes into a well-formed
///   drawing instruction with arguments drawn mostly from the small ranges where layers,
///   images and paths interact (and sometimes from the extremes), and images encoded on the
///   fly. Byte-level mutations of Guacamole text rarely get past the length prefixes; this
///   mode reaches the compositing, layer tree and key frame logic directly.
///
/// Asserts: no panic; after every instruction the display holds no more than its limits
/// (pixels, layers, buffers, open streams, buffered bytes) and its bookkeeping adds up; at up
/// to [`MAX_KEY_FRAMES`] `sync`s and at the end, when a key frame is ready and the display is
/// not degraded, the key frame replays without error into a fresh display that is then
/// indistinguishable from the original.
pub fn feed(data: &[u8]) {
    let _ = run(data);
}

/// [`feed`], returning how many key frames were checked.
pub(crate) fn run(data: &[u8]) -> usize {
    match data.split_first() {
        Some((mode, program)) if mode & 1 == 1 => feed_ops(program),
        _ => feed_stream(data),
    }
}

/// The even mode of [`feed`]: `data` is a Guacamole stream.
fn feed_stream(data: &[u8]) -> usize {
    let mut checker = Checker::new();
    let mut decoder = Decoder::new(Limits::default());
    decoder.feed(data);
    while let Ok(Some(instruction)) = decoder.poll_instruction() {
        checker.handle(&instruction);
    }
    checker.finish()
}

/// The odd mode of [`feed`]: `program` drives [`Ops`].
fn feed_ops(program: &[u8]) -> usize {
    let mut checker = Checker::new();
    let mut ops = Ops::new(program);
    let mut instructions = Vec::new();
    while ops.next(&mut instructions) {
        for instruction in instructions.drain(..) {
            checker.handle(&instruction);
        }
    }
    checker.finish()
}

/// Feeds one display and checks it after every instruction.
struct Checker {
    display: Display,
    key_frames: usize,
}

impl Checker {
    fn new() -> Self {
        Self {
            display: Display::new(FUZZ_LIMITS),
            key_frames: 0,
        }
    }

    fn handle(&mut self, instruction: &Instruction) {
        let _ = self.display.handle(instruction);
        self.display.check_invariants();
        if instruction.is("sync")
            && self.key_frames < MAX_KEY_FRAMES
            && check_key_frame(&self.display)
        {
            self.key_frames += 1;
        }
    }

    /// The last check; returns how many key frames were checked in all.
    fn finish(self) -> usize {
        self.key_frames + usize::from(check_key_frame(&self.display))
    }
}

/// Replays a key frame of `display` into a fresh display and asserts they are equal; returns
/// whether a key frame was taken.
pub fn check_key_frame(display: &Display) -> bool {
    if !display.key_frame_ready() || display.is_degraded() {
        return false;
    }
    let snapshot = display.snapshot();
    assert!(snapshot.is_complete());
    let key_frame = snapshot.encode();
    let mut replay = Display::new(display.limits().for_key_frame_replay());
    let mut decoder = Decoder::new(Limits::default());
    decoder.feed(&key_frame);
    loop {
        let next = decoder.poll_instruction();
        assert!(next.is_ok(), "key frame does not decode: {next:?}");
        let Ok(Some(instruction)) = next else {
            break;
        };
        let result = replay.handle(&instruction);
        assert!(
            result.is_ok(),
            "key frame instruction {instruction:?} failed: {result:?}"
        );
        replay.check_invariants();
    }
    assert!(decoder.is_at_boundary(), "key frame ends mid-instruction");
    assert!(!replay.is_degraded(), "replay degraded");
    assert!(replay.key_frame_ready(), "replay not ready");
    assert!(
        replay.canonical() == display.canonical(),
        "replay differs from the original"
    );
    true
}

/// Turns bytes into well-formed drawing instructions (the odd mode of [`feed`]). Each call to
/// [`next`](Self::next) reads one opcode byte and the bytes of its arguments; it stops when
/// the bytes run out.
pub struct Ops<'a> {
    data: &'a [u8],
    timestamp: u64,
}

impl<'a> Ops<'a> {
    /// A program of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, timestamp: 0 }
    }

    /// Appends the instructions of the next operation to `out`; `false` once the program is
    /// exhausted.
    pub fn next(&mut self, out: &mut Vec<Instruction>) -> bool {
        let Some(op) = self.byte() else {
            return false;
        };
        let layer = self.layer();
        match op % 32 {
            0 | 1 => {
                let (w, h) = (self.dimension(), self.dimension());
                out.push(ints("size", &[layer, w, h]));
            }
            2 | 3 => self.image(layer, out),
            4 => self.interleaved_images(layer, out),
            5 => {
                let (stream, mask) = (self.stream(), self.mask());
                let mimetype = self.pick(&["image/png", "image/webp", "image/jpeg", "image/gif"]);
                let (x, y) = (self.coordinate(), self.coordinate());
                let args = [stream, mask, layer].map(|v| v.to_string());
                let (x, y) = (x.to_string(), y.to_string());
                out.push(Instruction::new(
                    "img",
                    &[&args[0], &args[1], &args[2], mimetype, &x, &y],
                ));
            }
            6 => {
                // A blob of some image, or of garbage, on any stream.
                let stream = self.stream().to_string();
                let data = if self.byte().unwrap_or(0).is_multiple_of(4) {
                    self.pick(&["", "=", "AAAA", "@@@@", "iVBORw0KGgo="])
                        .to_owned()
                } else {
                    base64(&self.png())
                };
                out.push(Instruction::new("blob", &[stream, data]));
            }
            7 => out.push(ints("end", &[self.stream()])),
            8 | 9 => {
                let src = self.layer();
                let rect = [self.coordinate(), self.coordinate()];
                let size = [self.dimension(), self.dimension()];
                let mask = self.mask();
                let at = [self.coordinate(), self.coordinate()];
                out.push(ints(
                    "copy",
                    &[
                        src, rect[0], rect[1], size[0], size[1], mask, layer, at[0], at[1],
                    ],
                ));
            }
            10 => {
                let src = self.layer();
                let rect = [self.coordinate(), self.coordinate()];
                let size = [self.dimension(), self.dimension()];
                let function = i64::from(self.byte().unwrap_or(0) % 17);
                let at = [self.coordinate(), self.coordinate()];
                out.push(ints(
                    "transfer",
                    &[
                        src, rect[0], rect[1], size[0], size[1], function, layer, at[0], at[1],
                    ],
                ));
            }
            11 | 12 => {
                let (x, y) = (self.coordinate(), self.coordinate());
                let (w, h) = (self.signed_dimension(), self.signed_dimension());
                out.push(ints("rect", &[layer, x, y, w, h]));
            }
            13 | 14 => {
                let mask = self.mask();
                let color = self.color();
                out.push(ints(
                    "cfill",
                    &[mask, layer, color[0], color[1], color[2], color[3]],
                ));
            }
            15 => {
                let opcode = self.pick(&["start", "line", "line"]);
                let (x, y) = (self.coordinate(), self.coordinate());
                out.push(ints(opcode, &[layer, x, y]));
            }
            16 => {
                let (x, y, radius) = (self.coordinate(), self.coordinate(), self.dimension());
                let (start, end) = (self.float(), self.float());
                let negative = self.byte().unwrap_or(0) % 2;
                let args = [
                    layer.to_string(),
                    x.to_string(),
                    y.to_string(),
                    radius.to_string(),
                    start.to_owned(),
                    end.to_owned(),
                    negative.to_string(),
                ];
                out.push(Instruction::new("arc", &args));
            }
            17 => {
                let points: Vec<i64> = (0..6).map(|_| self.coordinate()).collect();
                let mut args = vec![layer];
                args.extend(points);
                out.push(ints("curve", &args));
            }
            18 => {
                let opcode = self.pick(&["close", "clip", "push", "pop", "reset", "identity"]);
                out.push(ints(opcode, &[layer]));
            }
            19 => {
                let mask = self.mask();
                let cap = i64::from(self.byte().unwrap_or(0) % 3);
                let join = i64::from(self.byte().unwrap_or(0) % 3);
                let thickness = self.dimension();
                let color = self.color();
                out.push(ints(
                    "cstroke",
                    &[
                        mask, layer, cap, join, thickness, color[0], color[1], color[2], color[3],
                    ],
                ));
            }
            20 => {
                let (mask, src) = (self.mask(), self.layer());
                out.push(ints("lfill", &[mask, layer, src]));
            }
            21 => {
                let opcode = self.pick(&["transform", "distort"]);
                let mut args = vec![layer.to_string()];
                for _ in 0..6 {
                    args.push(self.float().to_owned());
                }
                out.push(Instruction::new(opcode, &args));
            }
            22 | 23 => {
                let parent = self.layer();
                let (x, y) = (self.coordinate(), self.coordinate());
                let z = self.coordinate();
                out.push(ints("move", &[layer, parent, x, y, z]));
            }
            24 => {
                let opacity = self.pick(&[0, 1, 128, 254, 255, 256, -1]);
                out.push(ints("shade", &[layer, opacity]));
            }
            25 => out.push(ints("dispose", &[layer])),
            26 => {
                let hotspot = [self.coordinate(), self.coordinate()];
                let src = [self.coordinate(), self.coordinate()];
                let size = [self.dimension(), self.dimension()];
                out.push(ints(
                    "cursor",
                    &[
                        hotspot[0], hotspot[1], layer, src[0], src[1], size[0], size[1],
                    ],
                ));
            }
            27 => {
                let (x, y) = (self.coordinate(), self.coordinate());
                let buttons = i64::from(self.byte().unwrap_or(0) % 32);
                let timestamp = self.timestamp as i64;
                out.push(ints("mouse", &[x, y, buttons, timestamp]));
            }
            28 | 29 => {
                self.timestamp += u64::from(self.byte().unwrap_or(0));
                out.push(ints("sync", &[self.timestamp as i64]));
            }
            30 => {
                // Legacy inline image.
                let (mask, x, y) = (self.mask(), self.coordinate(), self.coordinate());
                let data = base64(&self.png());
                let args = [mask, layer, x, y].map(|v| v.to_string());
                out.push(Instruction::new(
                    "png",
                    &[&args[0], &args[1], &args[2], &args[3], &data],
                ));
            }
            _ => {
                // Instructions that do not draw, or that the model refuses.
                let opcode = self.pick(&[
                    "nop",
                    "set",
                    "set",
                    "video",
                    "audio",
                    "clipboard",
                    "lstroke",
                    "nest",
                ]);
                let stream = self.stream();
                out.push(ints(opcode, &[stream, layer, 0]));
            }
        }
        true
    }

    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(first)
    }

    fn pick<T: Copy + Default>(&mut self, items: &[T]) -> T {
        let byte = usize::from(self.byte().unwrap_or(0));
        items
            .get(byte % items.len().max(1))
            .copied()
            .unwrap_or_default()
    }

    /// A layer index: mostly the few that interact, sometimes an extreme.
    fn layer(&mut self) -> i64 {
        self.pick(&[
            0,
            0,
            0,
            1,
            1,
            2,
            3,
            -1,
            -1,
            -2,
            -3,
            4,
            -5,
            7,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
        ])
    }

    fn stream(&mut self) -> i64 {
        self.pick(&[0, 0, 1, 2, 4, 6, 64, i64::from(u32::MAX)])
    }

    fn mask(&mut self) -> i64 {
        self.pick(&[
            0xE, 0xE, 0xC, 0x2, 0x1, 0x4, 0x6, 0x8, 0x9, 0xA, 0xB, 0xF, 0x0, 0x3, 0x5, 0x7,
        ])
    }

    /// A coordinate: mostly within a small layer, sometimes far outside.
    fn coordinate(&mut self) -> i64 {
        let byte = self.byte().unwrap_or(0);
        match byte {
            0..=239 => i64::from(byte % 48) - 8,
            _ => self.pick(&[
                i64::from(i32::MIN),
                i64::from(i32::MAX),
                -1_000_000,
                1_000_000,
                299,
                300,
                199,
                200,
                -64,
                64,
                128,
                255,
            ]),
        }
    }

    /// A width or height: mostly small, sometimes at or beyond the limits.
    fn dimension(&mut self) -> i64 {
        let byte = self.byte().unwrap_or(0);
        match byte {
            0..=239 => i64::from(byte % 40),
            _ => self.pick(&[0, 64, 128, 200, 201, 300, 301, 1000, i64::from(i32::MAX)]),
        }
    }

    /// A width or height that may be negative (`rect` normalises it).
    fn signed_dimension(&mut self) -> i64 {
        let value = self.dimension();
        if self.byte().unwrap_or(0).is_multiple_of(5) {
            -value
        } else {
            value
        }
    }

    fn color(&mut self) -> [i64; 4] {
        let mut component = || self.pick(&[0, 255, 255, 128, 1, 254, 77, 200]);
        [component(), component(), component(), component()]
    }

    fn float(&mut self) -> &'static str {
        self.pick(&[
            "0",
            "1",
            "-1",
            "0.5",
            "2",
            "1.5707963",
            "3.1415926",
            "6.3",
            "-6.3",
            "100",
            "1e300",
            "-1e300",
            "-0",
            "0.001",
        ])
    }

    /// `img` + `blob`s + `end` of an image made from the program.
    fn image(&mut self, layer: i64, out: &mut Vec<Instruction>) {
        let (stream, mask) = (self.stream(), self.mask());
        let (x, y) = (self.coordinate(), self.coordinate());
        let webp = self.byte().unwrap_or(0).is_multiple_of(4);
        let (mimetype, bytes) = if webp {
            ("image/webp", self.webp())
        } else {
            ("image/png", self.png())
        };
        let text = base64(&bytes);
        let split = usize::from(self.byte().unwrap_or(0)).min(text.len()) / 4 * 4;
        image_stream(out, [stream, mask, layer, x, y], mimetype, &text, split);
    }

    /// Two to four image streams open at once on one layer, their `blob`s interleaved and
    /// their `end`s in any order, as guacd 1.6 sends them (and as it never does: overlapping,
    /// ended out of order, some never ended or ended twice).
    fn interleaved_images(&mut self, layer: i64, out: &mut Vec<Instruction>) {
        let count = 2 + usize::from(self.byte().unwrap_or(0) % 3);
        let (base_x, base_y) = (self.coordinate(), self.coordinate());
        let mut streams = Vec::with_capacity(count);
        for i in 0..count {
            // Distinct odd indexes (guacd's), now and then an even one or a repeat.
            let stream = match self.byte().unwrap_or(1) % 16 {
                0 => self.stream(),
                _ => 1 + 2 * i as i64,
            };
            let mask = self.pick(&[0xE, 0xE, 0xC, 0x2]);
            // Mostly side by side, as guacd's are (images are at most 6 pixels wide).
            let (x, y) = if self.byte().unwrap_or(0).is_multiple_of(4) {
                (self.coordinate(), self.coordinate())
            } else {
                (base_x + 6 * i as i64, base_y)
            };
            let text = base64(&self.png());
            let args = img(out, [stream, mask, layer, x, y], "image/png");
            streams.push((stream, args[0].clone(), text, 0usize));
        }
        // Blobs of 32 to 256 characters, from a stream the program picks (one byte says
        // which and how long), until all are sent.
        while streams.iter().any(|(_, _, text, sent)| *sent < text.len()) {
            let byte = usize::from(self.byte().unwrap_or(0));
            let pick = (byte & 3) % streams.len();
            let chunk = 32 * (1 + (byte >> 5));
            let Some(next) = (0..count).map(|i| (pick + i) % count).find(|&i| {
                streams
                    .get(i)
                    .is_some_and(|(_, _, text, sent)| *sent < text.len())
            }) else {
                break;
            };
            let Some((_, index, text, sent)) = streams.get_mut(next) else {
                break;
            };
            let end = (*sent + chunk).min(text.len());
            if let Some(part) = text.get(*sent..end) {
                out.push(Instruction::new("blob", &[index.as_str(), part]));
            }
            *sent = end;
            if self.data.is_empty() {
                break;
            }
        }
        // Ends in an order the program picks; sometimes one twice, sometimes one never.
        while !streams.is_empty() {
            let pick = usize::from(self.byte().unwrap_or(0)) % streams.len();
            let (stream, ..) = streams.swap_remove(pick);
            match self.byte().unwrap_or(2) % 64 {
                0 => {}
                1 => {
                    out.push(ints("end", &[stream]));
                    out.push(ints("end", &[stream]));
                }
                _ => out.push(ints("end", &[stream])),
            }
        }
    }

    /// Pixels of a small image: up to 6 × 6, opaque, translucent or with holes.
    fn pixels(&mut self) -> (u32, u32, Vec<u8>) {
        let (w, h) = (
            u32::from(self.byte().unwrap_or(0) % 6) + 1,
            u32::from(self.byte().unwrap_or(0) % 6) + 1,
        );
        let style = self.byte().unwrap_or(0) % 4;
        let seed = self.byte().unwrap_or(0);
        let mut rgba = Vec::with_capacity(w as usize * h as usize * 4);
        for i in 0..w * h {
            let v = seed.wrapping_add((i as u8).wrapping_mul(37));
            let alpha = match style {
                0 => 255,
                1 => v | 1,
                2 => {
                    if v.is_multiple_of(3) {
                        0
                    } else {
                        255
                    }
                }
                _ => v,
            };
            rgba.extend_from_slice(&[v, v.wrapping_mul(3), v ^ 0x5A, alpha]);
        }
        (w, h, rgba)
    }

    fn png(&mut self) -> Vec<u8> {
        let (w, h, rgba) = self.pixels();
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let written = encoder
            .write_header()
            .and_then(|mut writer| writer.write_image_data(&rgba));
        assert!(written.is_ok(), "PNG encoding of a small image failed");
        out
    }

    fn webp(&mut self) -> Vec<u8> {
        let (w, h, rgba) = self.pixels();
        let mut out = Vec::new();
        let written = image_webp::WebPEncoder::new(&mut out).encode(
            &rgba,
            w,
            h,
            image_webp::ColorType::Rgba8,
        );
        assert!(written.is_ok(), "WebP encoding of a small image failed");
        out
    }
}

/// An instruction with integer arguments.
fn ints(opcode: &str, args: &[i64]) -> Instruction {
    let args: Vec<String> = args.iter().map(i64::to_string).collect();
    Instruction::new(opcode, &args)
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `display_deferred`: a [`DeferredDisplay`](crate::DeferredDisplay) against a display
/// shown everything. The first byte picks the queue budget (small, so passes and partial
/// showing happen often); the rest is a program of [`Scene`] operations (tiles, scrolls and
/// fills at the sizes where cells get covered), mixed with [`Ops`] when the budget byte is
/// even.
///
/// Asserts: no panic; after every flush (at some `sync`s, and at the end), when neither
/// display is degraded, both hold the same state; the queue stays within its budget.
pub fn deferred(data: &[u8]) {
    let _ = run_deferred(data);
}

/// [`deferred`], returning how many comparisons were made and the deferred display's
/// counters.
pub(crate) fn run_deferred(data: &[u8]) -> (usize, crate::DeferredStats) {
    let Some((&budget, program)) = data.split_first() else {
        return (0, crate::DeferredStats::default());
    };
    let mixed = budget % 2 == 0;
    let budget = 512 + usize::from(budget).pow(2) * 4;
    let mut eager = Display::new(FUZZ_LIMITS);
    let mut deferred = crate::DeferredDisplay::new(Display::new(FUZZ_LIMITS), budget);
    let mut scene = Scene {
        data: program,
        mixed,
    };
    let mut compared = 0;
    // A desktop to draw on, as guacd starts.
    let mut instructions = vec![
        ints("size", &[0, 128, 96]),
        ints("size", &[1, 128, 96]),
        ints("rect", &[0, 0, 0, 128, 96]),
        ints("cfill", &[14, 0, 0, 99, 140, 255]),
    ];
    for instruction in instructions.drain(..) {
        let _ = eager.handle(&instruction);
        deferred.handle(&instruction);
    }
    let compare = |eager: &Display, deferred: &mut crate::DeferredDisplay| {
        deferred.flush();
        let shown = deferred.display();
        if eager.is_degraded() || shown.is_degraded() {
            return 0;
        }
        assert!(
            eager.canonical() == shown.canonical(),
            "the deferred display differs from the eager one"
        );
        1
    };
    while scene.next(&mut instructions) {
        for instruction in instructions.drain(..) {
            let _ = eager.handle(&instruction);
            deferred.handle(&instruction);
            assert!(
                deferred.queued_bytes() <= budget,
                "the queue outgrew its budget"
            );
            if instruction.is("sync") && instruction.len() % 3 == 0 && compared < MAX_KEY_FRAMES {
                compared += compare(&eager, &mut deferred);
            }
        }
    }
    compared += compare(&eager, &mut deferred);
    (compared, deferred.stats())
}

/// Operations where the deferred display's culling matters: opaque and translucent tiles
/// of 8 to 48 pixels on layers 0, 1 and buffer -1, copies (scrolls) of unaligned
/// rectangles, `rect` + `cfill`, `cursor`, `size`, `sync`; one in sixteen hands over to
/// [`Ops`] for everything else when `mixed`.
struct Scene<'a> {
    data: &'a [u8],
    /// Hands over to [`Ops`] (an odd budget byte keeps to the scene).
    mixed: bool,
}

impl Scene<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(first)
    }

    fn small(&mut self, n: u8) -> i64 {
        i64::from(self.byte().unwrap_or(0) % n)
    }

    fn next(&mut self, out: &mut Vec<Instruction>) -> bool {
        let Some(op) = self.byte() else {
            return false;
        };
        let layer = [0, 0, 0, 1, -1]
            .get((op as usize / 16) % 5)
            .copied()
            .unwrap_or(0);
        let mask = [14, 14, 14, 14, 14, 12, 6, 8]
            .get((op as usize / 80) % 8)
            .copied()
            .unwrap_or(14);
        match op % 16 {
            0..=5 => {
                // Mostly on the 16-pixel grid, as guacd's tiles are.
                let unit = if self.small(4) == 0 { 8 } else { 16 };
                let (x, y) = (self.small(6) * unit, self.small(5) * unit);
                let (w, h) = (unit + self.small(4) * unit, unit + self.small(4) * unit);
                let style = self.byte().unwrap_or(0);
                let rgb = !style.is_multiple_of(4);
                let mut pixels = Vec::new();
                for i in 0..(w * h) as u32 {
                    let v = (i.wrapping_mul(7) as u8).wrapping_add(style);
                    pixels.extend_from_slice(&[v, v ^ 0x33, v.wrapping_mul(5)]);
                    if !rgb {
                        pixels.push(if i % 5 == 0 { 0 } else { 200 });
                    }
                }
                let mut png = Vec::new();
                let mut encoder = png::Encoder::new(&mut png, w as u32, h as u32);
                encoder.set_color(if rgb {
                    png::ColorType::Rgb
                } else {
                    png::ColorType::Rgba
                });
                let written = encoder
                    .write_header()
                    .and_then(|mut writer| writer.write_image_data(&pixels));
                assert!(written.is_ok(), "PNG encoding failed");
                let stream = self.small(2);
                let text = base64(&png);
                let split = (self.small(4) as usize * text.len() / 4) / 4 * 4;
                png_stream(out, [stream, mask, layer, x, y], &text, split);
            }
            6..=8 => {
                // A scroll or a copy between layers.
                let src = if op % 16 == 8 {
                    [0, 1, -1].get(self.small(3) as usize).copied().unwrap_or(0)
                } else {
                    layer
                };
                let (x, y) = (self.small(40), self.small(30));
                let (w, h) = (1 + self.small(40), 1 + self.small(30));
                let (dx, dy) = (self.small(40), self.small(30));
                out.push(ints("copy", &[src, x, y, w, h, mask, layer, dx, dy]));
            }
            9 | 10 => {
                let (x, y) = (self.small(8) * 8, self.small(6) * 8);
                let (w, h) = (1 + self.small(48), 1 + self.small(48));
                let alpha = if self.small(4) == 0 { 100 } else { 255 };
                out.push(ints("rect", &[layer, x, y, w, h]));
                out.push(ints("cfill", &[mask, layer, 10, 200, 30, alpha]));
            }
            11 => {
                let (w, h) = (64 + self.small(4) * 32, 48 + self.small(4) * 32);
                out.push(ints("size", &[layer, w, h]));
            }
            12 => out.push(ints("cursor", &[0, 0, layer, 0, 0, 16, 16])),
            13 | 14 => out.push(ints("sync", &[self.small(100)])),
            _ if !self.mixed => out.push(ints("sync", &[self.small(100)])),
            _ => {
                let mut ops = Ops::new(self.data);
                let more = ops.next(out);
                self.data = ops.data;
                return more;
            }
        }
        true
    }
}

/// Pushes `img <stream> <mask> <layer> <mimetype> <x> <y>`; returns the arguments as text.
fn img(out: &mut Vec<Instruction>, args: [i64; 5], mimetype: &str) -> [String; 5] {
    let args = args.map(|v| v.to_string());
    let [stream, mask, layer, x, y] = &args;
    out.push(Instruction::new(
        "img",
        &[stream, mask, layer, mimetype, x, y],
    ));
    args
}

/// `img <stream> <mask> <layer> image/png <x> <y>`, the base64 `text` in two `blob`s split at
/// `split` (a multiple of 4; an empty part is left out), `end`.
pub(crate) fn png_stream(out: &mut Vec<Instruction>, args: [i64; 5], text: &str, split: usize) {
    image_stream(out, args, "image/png", text, split);
}

/// `img` of `mimetype`, then as [`png_stream`].
fn image_stream(
    out: &mut Vec<Instruction>,
    args: [i64; 5],
    mimetype: &str,
    text: &str,
    split: usize,
) {
    let args = img(out, args, mimetype);
    let (first, second) = text.split_at(split.min(text.len()));
    for part in [first, second] {
        if !part.is_empty() {
            out.push(Instruction::new("blob", &[&args[0], part]));
        }
    }
    out.push(Instruction::new("end", &[&args[0]]));
}
