//! Key frames: [`Display::snapshot`] and [`Snapshot::encode`].

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use zt_guac::{ButtonMask, InstructionWriter, TypedInstruction, opcode};

use crate::display::{Display, Mouse};
use crate::path::{Affine, PathOp};
use crate::surface::{CompositeOp, Surface};

/// The display at one instant, for encoding as a key frame: taking it is cheap (pixel buffers
/// are shared with the display, which copies a layer only when it next draws on it), encoding
/// it is not (PNG compression of every layer), so the proxy encodes on a blocking thread.
///
/// Holding a snapshot while the display goes on drawing keeps the old pixels of every layer
/// drawn on since: drop it once encoded.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Visible layers in the order they were attached to their parents (the default layer
    /// first), then buffers from -1 down.
    layers: Vec<LayerSnapshot>,
    cursor: Option<CursorSnapshot>,
    mouse: Option<Mouse>,
    timestamp: u64,
    stream: u32,
    spare_layer: i32,
    spare_buffer: i32,
    complete: bool,
}

#[derive(Debug, Clone)]
struct LayerSnapshot {
    index: i32,
    surface: Surface,
    node: Option<NodeSnapshot>,
    op: CompositeOp,
    path: Option<(Vec<PathOp>, bool)>,
}

#[derive(Debug, Clone, Copy)]
struct NodeSnapshot {
    parent: ParentSnapshot,
    x: i32,
    y: i32,
    z: i32,
    opacity: u8,
    matrix: Affine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ParentSnapshot {
    /// The default layer has no parent.
    Root,
    Live(i32),
    /// The parent was disposed: the subtree is detached. Keyed by the dead parent's serial.
    Detached(u64),
}

#[derive(Debug, Clone)]
struct CursorSnapshot {
    hotspot: (i32, i32),
    surface: Surface,
}

impl Display {
    /// Takes a snapshot of the display for a key frame. Cheap: no pixels are copied.
    ///
    /// Take it when [`key_frame_ready`](Self::key_frame_ready) and not
    /// [`is_degraded`](Self::is_degraded); otherwise the key frame is still well-formed but
    /// may be wrong (see [`Snapshot::is_complete`]).
    pub fn snapshot(&self) -> Snapshot {
        let mut visible: Vec<_> = self
            .layers
            .iter()
            .filter_map(|(&index, layer)| Some((index, layer, layer.node?)))
            .collect();
        visible.sort_by_key(|(_, _, node)| node.attach);
        let buffers = self.layers.range(..0).rev();
        let mut layers = Vec::with_capacity(self.layers.len());
        for (index, layer, node) in visible {
            let parent = match node.parent {
                None => ParentSnapshot::Root,
                Some(parent) => match self.live_parent(index) {
                    Some(index) => ParentSnapshot::Live(index),
                    None => ParentSnapshot::Detached(parent.serial),
                },
            };
            let node = NodeSnapshot {
                parent,
                x: node.x,
                y: node.y,
                z: node.z,
                opacity: node.opacity,
                matrix: node.matrix,
            };
            layers.push(LayerSnapshot::new(index, layer, Some(node)));
        }
        for (&index, layer) in buffers {
            layers.push(LayerSnapshot::new(index, layer, None));
        }
        let spare_layer = (1..)
            .find(|i| !self.layers.contains_key(i))
            .unwrap_or(i32::MAX);
        let spare_buffer = (1..)
            .map(|i: i32| -i)
            .find(|i| !self.layers.contains_key(i))
            .unwrap_or(i32::MIN);
        Snapshot {
            layers,
            cursor: self.cursor.set.then(|| CursorSnapshot {
                hotspot: self.cursor.hotspot,
                surface: self.cursor.surface.clone(),
            }),
            mouse: self.mouse,
            timestamp: self.timestamp.unwrap_or(0),
            stream: (0..)
                .find(|i| !self.streams.contains_key(i))
                .unwrap_or(u32::MAX),
            spare_layer,
            spare_buffer,
            complete: self.key_frame_ready() && !self.is_degraded(),
        }
    }
}

impl LayerSnapshot {
    fn new(index: i32, layer: &crate::display::Layer, node: Option<NodeSnapshot>) -> Self {
        Self {
            index,
            surface: layer.surface.clone(),
            node,
            op: layer.state.op,
            path: layer.path.ops().map(|(ops, closed)| (ops.to_vec(), closed)),
        }
    }
}

impl Snapshot {
    /// Whether the snapshot was taken when the display was
    /// [ready](Display::key_frame_ready) and not [degraded](Display::is_degraded), so that
    /// its key frame redraws exactly what the model holds.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The timestamp the key frame ends with (the last `sync`'s, 0 before any).
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The pixels of every layer and buffer, by index.
    #[cfg(test)]
    pub(crate) fn surfaces(&self) -> impl Iterator<Item = (i32, &Surface)> {
        self.layers
            .iter()
            .map(|layer| (layer.index, &layer.surface))
    }

    /// Encodes the key frame: Guacamole instructions that, sent to a client (or the session
    /// player) that has seen nothing, reproduce the display. In order:
    ///
    /// 1. `size` for the default layer, every visible layer (in the order they were attached
    ///    to their parents, so that siblings of equal Z stack as they do) and every buffer;
    /// 2. `move` for layers not at their initial place (child of the default layer at 0, 0,
    ///    Z 0); layers whose parent was disposed are moved into a spare layer that is then
    ///    disposed, which detaches them as they are; `shade` and `distort` where set;
    /// 3. the pixels: each layer in tiles of [`TILE_SIZE`] pixels, fully transparent tiles
    ///    skipped, each other tile a PNG drawn with OVER (exact on a transparent new layer)
    ///    through `img`, `blob`s of at most [`BLOB_CHARS`] base64 characters (guacd's size)
    ///    and `end`;
    /// 4. the current path of layers that have one (re-emitted, then closed by a transparent
    ///    `cfill` if it was), and each layer's compositing operation when not OVER (a `copy`
    ///    of nothing, which sets it and draws nothing);
    /// 5. the cursor: drawn into a spare buffer, `cursor` from it, the buffer disposed;
    /// 6. the last `mouse` position, if the server sent one;
    /// 7. `sync` with the last timestamp.
    ///
    /// All images use one stream index: the lowest one no stream of the display has open,
    /// so usually 0 (guacd's server streams are even numbers below 128 and are all closed
    /// at a ready point, and guacenc only accepts indexes below 64). The spare layer and
    /// buffer are the lowest unused indexes (1 and -1 upwards / downwards). Replaying a key
    /// frame therefore needs one layer, one buffer and one cursor's pixels more than the
    /// display held (see [`DisplayLimits::for_key_frame_replay`](crate::DisplayLimits::for_key_frame_replay)).
    ///
    /// Expensive (PNG compression, 20 to 35 ms for a 1920 × 1080 desktop on one core, see
    /// the crate's `BENCH.md`): run it on a blocking thread.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        for layer in &self.layers {
            let (w, h) = (layer.surface.width(), layer.surface.height());
            write(
                &mut out,
                opcode::SIZE,
                &[layer.index.into(), w.into(), h.into()],
            );
        }
        self.encode_tree(&mut out);
        for layer in &self.layers {
            encode_pixels(&mut out, self.stream, layer.index, &layer.surface);
        }
        for layer in &self.layers {
            encode_state(&mut out, layer);
        }
        if let Some(cursor) = &self.cursor {
            let (w, h) = (cursor.surface.width(), cursor.surface.height());
            let buffer = self.spare_buffer;
            write(&mut out, opcode::SIZE, &[buffer.into(), w.into(), h.into()]);
            encode_pixels(&mut out, self.stream, buffer, &cursor.surface);
            let (x, y) = cursor.hotspot;
            let args = [x.into(), y.into(), buffer.into(), 0, 0, w.into(), h.into()];
            write(&mut out, opcode::CURSOR, &args);
            write(&mut out, DISPOSE, &[buffer.into()]);
        }
        if let Some(mouse) = self.mouse {
            let mouse = TypedInstruction::Mouse {
                x: mouse.x,
                y: mouse.y,
                buttons: ButtonMask(mouse.buttons),
                timestamp: mouse.timestamp,
            };
            mouse.encode(&mut out);
        }
        TypedInstruction::Sync {
            timestamp: self.timestamp,
            frames: None,
        }
        .encode(&mut out);
        out.into()
    }

    fn encode_tree(&self, out: &mut BytesMut) {
        let mut detached: BTreeMap<u64, Vec<(i32, &NodeSnapshot)>> = BTreeMap::new();
        for layer in &self.layers {
            let Some(node) = &layer.node else {
                continue;
            };
            match node.parent {
                ParentSnapshot::Root => {}
                ParentSnapshot::Live(parent) => {
                    if (parent, node.x, node.y, node.z) != (0, 0, 0, 0) {
                        write_move(out, layer.index, parent, node);
                    }
                }
                ParentSnapshot::Detached(serial) => {
                    detached
                        .entry(serial)
                        .or_default()
                        .push((layer.index, node));
                }
            }
        }
        for members in detached.values() {
            for &(index, node) in members {
                write_move(out, index, self.spare_layer, node);
            }
            write(out, DISPOSE, &[self.spare_layer.into()]);
        }
        for layer in &self.layers {
            let Some(node) = &layer.node else {
                continue;
            };
            if node.opacity != 255 {
                write(out, SHADE, &[layer.index.into(), node.opacity.into()]);
            }
            if node.matrix != Affine::IDENTITY {
                let mut w = InstructionWriter::new(out, DISTORT);
                w.arg_i64(layer.index.into());
                for value in node.matrix.0 {
                    w.arg_f64(value);
                }
                w.finish();
            }
        }
    }
}

/// Side of the square tiles layers are encoded in.
pub const TILE_SIZE: u32 = 256;

/// Most base64 characters in one `blob`: guacd's (`GUAC_PROTOCOL_BLOB_MAX_LENGTH`, 6048
/// bytes, encodes to 8064 characters).
pub const BLOB_CHARS: usize = 8064;

const DISPOSE: &str = "dispose";
const SHADE: &str = "shade";
const DISTORT: &str = "distort";
const MOVE: &str = "move";

fn write(out: &mut BytesMut, opcode: &str, args: &[i64]) {
    let mut w = InstructionWriter::new(out, opcode);
    for &arg in args {
        w.arg_i64(arg);
    }
    w.finish();
}

fn write_move(out: &mut BytesMut, index: i32, parent: i32, node: &NodeSnapshot) {
    let args = [
        index.into(),
        parent.into(),
        node.x.into(),
        node.y.into(),
        node.z.into(),
    ];
    write(out, MOVE, &args);
}

/// The current path and compositing operation of a layer.
fn encode_state(out: &mut BytesMut, layer: &LayerSnapshot) {
    let index = i64::from(layer.index);
    if let Some((ops, closed)) = &layer.path {
        for op in ops {
            match *op {
                PathOp::Rect { x, y, w, h } => {
                    write(
                        out,
                        opcode::RECT,
                        &[index, x.into(), y.into(), w.into(), h.into()],
                    );
                }
                PathOp::Start { x, y } => write(out, "start", &[index, x.into(), y.into()]),
                PathOp::Line { x, y } => write(out, "line", &[index, x.into(), y.into()]),
                PathOp::Arc {
                    x,
                    y,
                    radius,
                    start,
                    end,
                    negative,
                } => {
                    let mut w = InstructionWriter::new(out, "arc");
                    w.arg_i64(index)
                        .arg_i64(x.into())
                        .arg_i64(y.into())
                        .arg_i64(radius.into())
                        .arg_f64(start)
                        .arg_f64(end)
                        .arg_i64(negative.into());
                    w.finish();
                }
                PathOp::Curve { cp1, cp2, x, y } => {
                    let args = [
                        index,
                        cp1.0.into(),
                        cp1.1.into(),
                        cp2.0.into(),
                        cp2.1.into(),
                        x.into(),
                        y.into(),
                    ];
                    write(out, "curve", &args);
                }
                PathOp::Close => write(out, "close", &[index]),
            }
        }
        if *closed && !matches!(ops.last(), Some(PathOp::Close)) {
            // A transparent fill with OVER draws nothing but closes the path.
            let over = CompositeOp::Over.mask().into();
            write(out, opcode::CFILL, &[over, index, 0, 0, 0, 0]);
        }
    }
    if layer.op != CompositeOp::Over {
        // A copy of nothing sets the operation and draws nothing.
        let args = [index, 0, 0, 0, 0, layer.op.mask().into(), index, 0, 0];
        write(out, opcode::COPY, &args);
    }
}

/// The pixels of a surface, tile by tile, as PNG images drawn with OVER.
fn encode_pixels(out: &mut BytesMut, stream: u32, index: i32, surface: &Surface) {
    encode_tiles(out, (stream, index), surface, TILE_SIZE, PNG_SETTINGS);
}

/// How key-frame PNGs are compressed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PngSettings {
    pub(crate) deflate: png::DeflateCompression,
    pub(crate) filter: png::Filter,
}

/// PNG compression of key frames: zlib's fastest level with adaptive filtering. On a
/// 1920 × 1080 desktop it takes about twice the time of fdeflate's ultra-fast mode (20–35 ms
/// against 12–18) for half the size (0.68 MB against 1.35), and a fifth of the time of the
/// default level 6 for 1.8 times its size (see the crate's `BENCH.md`). Key frames are taken
/// every few seconds, so their size in the recording matters more than 10–20 ms on a
/// blocking thread.
pub(crate) const PNG_SETTINGS: PngSettings = PngSettings {
    deflate: png::DeflateCompression::Level(1),
    filter: png::Filter::Adaptive,
};

/// [`encode_pixels`] with a given tile size and compression (for the benchmarks).
pub(crate) fn encode_tiles(
    out: &mut BytesMut,
    (stream, index): (u32, i32),
    surface: &Surface,
    tile_size: u32,
    settings: PngSettings,
) {
    let image = Image {
        width: surface.width(),
        height: surface.height(),
        pixels: surface.pixels(),
    };
    encode_image_tiles(out, (stream, index), (0, 0), &image, tile_size, settings);
}

/// RGBA pixels, row by row.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height` pixels, RGBA, row-major (missing pixels are transparent).
    pub pixels: &'a [[u8; 4]],
}

/// Draws `image` with its top left corner at `(x, y)` of layer (or buffer) `layer`, as PNG
/// tiles of at most [`TILE_SIZE`] pixels a side: for each tile an `img` on `stream` (OVER),
/// its PNG in `blob`s of at most [`BLOB_CHARS`] characters, and `end`, so the stream is free
/// again after each tile. Fully transparent tiles are left out (drawing them with OVER
/// changes nothing).
///
/// This is how key frames carry pixels, and the building block for native backends that
/// draw a display themselves (a terminal, a VNC framebuffer, a browser screencast).
///
/// ```
/// use bytes::BytesMut;
/// let red = vec![[255, 0, 0, 255]; 4];
/// let mut out = BytesMut::new();
/// let image = zt_display::Image { width: 2, height: 2, pixels: &red };
/// zt_display::encode_image(&mut out, 1, 0, (10, 20), &image);
/// assert!(out.starts_with(b"3.img,1.1,2.14,1.0,9.image/png,2.10,2.20;4.blob,1.1,"));
/// assert!(out.ends_with(b"3.end,1.1;"));
/// ```
pub fn encode_image(
    out: &mut BytesMut,
    stream: u32,
    layer: i32,
    at: (u32, u32),
    image: &Image<'_>,
) {
    encode_image_tiles(out, (stream, layer), at, image, TILE_SIZE, PNG_SETTINGS);
}

fn encode_image_tiles(
    out: &mut BytesMut,
    (stream, index): (u32, i32),
    (x, y): (u32, u32),
    image: &Image<'_>,
    tile_size: u32,
    settings: PngSettings,
) {
    let (width, height) = (image.width, image.height);
    let pixels = image.pixels;
    let tile_size = tile_size.max(1);
    let mut tile = Vec::new();
    let mut png = Vec::new();
    for ty in (0..height).step_by(tile_size as usize) {
        for tx in (0..width).step_by(tile_size as usize) {
            let (tw, th) = (tile_size.min(width - tx), tile_size.min(height - ty));
            tile.clear();
            let (mut transparent, mut opaque) = (true, true);
            for row_y in ty..ty + th {
                let start = row_y as usize * width as usize + tx as usize;
                let row = pixels.get(start..start + tw as usize).unwrap_or_default();
                for pixel in row {
                    transparent &= pixel[3] == 0;
                    opaque &= pixel[3] == 255;
                }
                tile.extend_from_slice(row);
                // A short image is padded with transparent pixels.
                tile.resize(tile.len() + (tw as usize - row.len()), [0; 4]);
                opaque &= row.len() == tw as usize;
            }
            if transparent {
                continue;
            }
            png.clear();
            encode_png(&mut png, &tile, (tw, th), opaque, settings);
            let mut w = InstructionWriter::new(out, opcode::IMG);
            w.arg_u64(stream.into())
                .arg_u64(CompositeOp::Over.mask().into())
                .arg_i64(index.into())
                .arg("image/png")
                .arg_u64(u64::from(x) + u64::from(tx))
                .arg_u64(u64::from(y) + u64::from(ty));
            w.finish();
            let mut text = String::with_capacity(BLOB_CHARS);
            for chunk in png.chunks(BLOB_CHARS / 4 * 3) {
                text.clear();
                STANDARD.encode_string(chunk, &mut text);
                let mut w = InstructionWriter::new(out, opcode::BLOB);
                w.arg_u64(stream.into()).arg(&text);
                w.finish();
            }
            write(out, opcode::END, &[stream.into()]);
        }
    }
}

/// Encodes RGBA pixels as a PNG (RGB when all are opaque).
fn encode_png(
    out: &mut Vec<u8>,
    pixels: &[[u8; 4]],
    (width, height): (u32, u32),
    opaque: bool,
    settings: PngSettings,
) {
    let mut encoder = png::Encoder::new(&mut *out, width, height);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_deflate_compression(settings.deflate);
    encoder.set_filter(settings.filter);
    let data: Vec<u8> = if opaque {
        encoder.set_color(png::ColorType::Rgb);
        pixels.iter().flat_map(|&[r, g, b, _]| [r, g, b]).collect()
    } else {
        encoder.set_color(png::ColorType::Rgba);
        pixels.as_flattened().to_vec()
    };
    #[expect(
        clippy::expect_used,
        reason = "encoding into a Vec fails only for a zero or oversized size or a data length \
                  that does not match it; tiles are non-empty, no larger than a layer, and the \
                  data is built from exactly width × height pixels"
    )]
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&data))
        .expect("PNG encoding into memory");
}
