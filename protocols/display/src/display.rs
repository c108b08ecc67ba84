//! [`Display`]: the state of a Guacamole client's display, driven by the instructions the
//! server sends it.

use std::collections::{BTreeMap, HashMap};

use zt_guac::{ArgumentError, Context, Instruction, TypedInstruction, opcode};

use crate::args::Args;
use crate::decode::{self, Image, ImageLimits, ImageType};
use crate::error::{DisplayError, Limit, Unsupported};
use crate::limits::DisplayLimits;
use crate::path::{Affine, Path, PathOp, StrokeStyle};
use crate::surface::{CompositeOp, Paint, Pattern, Pixel, Rect, Source, Surface, canonical};

/// A model of the display of a Guacamole client (guacamole-common-js's `Guacamole.Client` and
/// `Guacamole.Display`): layers, buffers, their pixels, the layer tree and the cursor, kept
/// up to date by feeding it, in order, every instruction the server sends to the client.
///
/// It exists to produce key frames ([`snapshot`](Self::snapshot), then
/// [`Snapshot::encode`](crate::Snapshot::encode)): the instructions that redraw the current
/// display on a client that has seen nothing. See the crate documentation for what is exact,
/// what is approximate and when the display is [degraded](Self::is_degraded).
#[derive(Debug)]
pub struct Display {
    pub(crate) limits: DisplayLimits,
    /// Live layers (index ≥ 0) and buffers (index < 0). Layer 0 always exists.
    pub(crate) layers: BTreeMap<i32, Layer>,
    visible: usize,
    buffers: usize,
    /// Pixels of all layers, buffers and the cursor.
    pixels: u64,
    next_serial: u64,
    next_attach: u64,
    /// Open streams, by index: image streams, and others only to know their indexes.
    pub(crate) streams: HashMap<u32, Stream>,
    open_images: usize,
    /// base64 characters held by open image streams.
    image_bytes: usize,
    /// Counts `img`s, so that open image streams know which of them was opened first.
    next_image: u64,
    /// While an ended image is drawn: the `img` number of that image (see [`Touch`]).
    drawing_image: Option<u64>,
    pub(crate) cursor: Cursor,
    pub(crate) mouse: Option<Mouse>,
    pub(crate) timestamp: Option<u64>,
    /// Set for good when the model lost track of something no layer accounts for.
    degraded: bool,
    /// The error of the last instruction after which the display was degraded.
    degradation: Option<DisplayError>,
    approximations: u64,
}

/// One layer or buffer.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    /// Unique per layer object: an index disposed and used again is a new layer.
    pub(crate) serial: u64,
    pub(crate) surface: Surface,
    /// Position in the layer tree; `None` for buffers.
    pub(crate) node: Option<Node>,
    pub(crate) state: DrawState,
    pub(crate) stack: Vec<DrawState>,
    pub(crate) path: Path,
    /// The pixels may differ from the client's.
    pub(crate) tainted: bool,
}

/// The canvas drawing state that `push` saves and `pop` restores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DrawState {
    pub(crate) op: CompositeOp,
    pub(crate) transform: Affine,
    /// Device-space clip rectangle (`None`: the whole layer).
    pub(crate) clip: Option<Rect>,
}

impl DrawState {
    const INITIAL: Self = Self {
        op: CompositeOp::Over,
        transform: Affine::IDENTITY,
        clip: None,
    };
}

/// Where a visible layer sits in the tree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Node {
    /// `None` for the default layer; otherwise the parent layer, which may since have been
    /// disposed (its subtree is then detached and invisible).
    pub(crate) parent: Option<ParentRef>,
    pub(crate) x: i32,
    pub(crate) y: i32,
    pub(crate) z: i32,
    pub(crate) opacity: u8,
    pub(crate) matrix: Affine,
    /// When the layer was last attached to its parent: siblings with equal `z` stack in this
    /// order (the DOM order of guacamole-common-js).
    pub(crate) attach: u64,
}

/// A parent layer object: its index and serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParentRef {
    pub(crate) index: i32,
    pub(crate) serial: u64,
}

/// The cursor image and hotspot (`cursor`).
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    pub(crate) set: bool,
    pub(crate) hotspot: (i32, i32),
    pub(crate) surface: Surface,
    pub(crate) tainted: bool,
}

/// The last `mouse` position the server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mouse {
    pub(crate) x: i32,
    pub(crate) y: i32,
    pub(crate) buttons: u32,
    pub(crate) timestamp: Option<u64>,
}

/// An open stream.
#[derive(Debug)]
pub(crate) enum Stream {
    Image(Box<ImageStream>),
    /// Audio, clipboard, file, pipe, … or an image stream that will not be drawn.
    Other,
}

/// An `img` stream between its `img` and its `end`. (`Debug` leaves the data out.)
pub(crate) struct ImageStream {
    layer: i32,
    serial: u64,
    /// The how-manieth `img` of the display this stream's was.
    opened: u64,
    kind: ImageType,
    x: i32,
    y: i32,
    data: Vec<u8>,
    /// base64 characters received.
    received: usize,
    failed: bool,
    /// The layer's drawing state right after `img`: a client that draws at `img`
    /// (Chromium's `ImageDecoder` path) uses it, one that draws at `end` uses the state then.
    state_at_img: DrawState,
    /// What happened to the layer since `img`.
    touches: Vec<Touch>,
}

impl std::fmt::Debug for ImageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStream")
            .field("layer", &self.layer)
            .field("kind", &self.kind)
            .field("received", &self.received)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Something an instruction did to a layer while an image for it was streaming.
///
/// Only what the two kinds of client order differently is remembered. A client that draws
/// an image at its `img` (Chromium's `ImageDecoder` path) and one that draws it at its `end`
/// (Firefox, guacenc) agree on everything drawn before the `img` and after the `end`. In
/// between, they disagree on the order of the image and every other instruction, except
/// another image opened *before* it and ended before it: both draw that one first. guacd 1.6
/// streams several images on one layer at once (its `guac_display` encodes in parallel), in
/// exactly that nested-or-disjoint way.
#[derive(Debug, Clone, Copy)]
enum Touch {
    Write(Rect),
    Read(Rect),
    Resize,
    Overflow,
}

/// Touches remembered per image stream; more make the image's order ambiguous.
const MAX_TOUCHES: usize = 64;

/// The size of a canvas guacamole-common-js allocates for a pattern: layer sizes rounded up
/// to a multiple of this (`CANVAS_SIZE_FACTOR`), which is the period of `lfill` patterns.
const CANVAS_SIZE_FACTOR: u32 = 64;

/// Opcodes this crate reports in errors.
mod op {
    pub(super) const ARC: &str = "arc";
    pub(super) const CLIP: &str = "clip";
    pub(super) const CLOSE: &str = "close";
    pub(super) const CSTROKE: &str = "cstroke";
    pub(super) const CURVE: &str = "curve";
    pub(super) const DISPOSE: &str = "dispose";
    pub(super) const DISTORT: &str = "distort";
    pub(super) const IDENTITY: &str = "identity";
    pub(super) const JPEG: &str = "jpeg";
    pub(super) const LFILL: &str = "lfill";
    pub(super) const LINE: &str = "line";
    pub(super) const LSTROKE: &str = "lstroke";
    pub(super) const MOVE: &str = "move";
    pub(super) const NEST: &str = "nest";
    pub(super) const PNG: &str = "png";
    pub(super) const POP: &str = "pop";
    pub(super) const PUSH: &str = "push";
    pub(super) const RESET: &str = "reset";
    pub(super) const SET: &str = "set";
    pub(super) const SHADE: &str = "shade";
    pub(super) const START: &str = "start";
    pub(super) const TRANSFER: &str = "transfer";
    pub(super) const TRANSFORM: &str = "transform";
}

impl Display {
    /// An empty display, as a client has before the first instruction: the default layer
    /// (0) at 0 × 0, no cursor.
    pub fn new(limits: DisplayLimits) -> Self {
        let mut layers = BTreeMap::new();
        layers.insert(
            0,
            Layer::new(
                0,
                Surface::new(0, 0),
                Some(Node {
                    parent: None,
                    x: 0,
                    y: 0,
                    z: 0,
                    opacity: 255,
                    matrix: Affine::IDENTITY,
                    attach: 0,
                }),
            ),
        );
        Self {
            limits,
            layers,
            visible: 1,
            buffers: 0,
            pixels: 0,
            next_serial: 1,
            next_attach: 1,
            streams: HashMap::new(),
            open_images: 0,
            image_bytes: 0,
            next_image: 0,
            drawing_image: None,
            cursor: Cursor {
                set: false,
                hotspot: (0, 0),
                surface: Surface::new(0, 0),
                tainted: false,
            },
            mouse: None,
            timestamp: None,
            degraded: false,
            degradation: None,
            approximations: 0,
        }
    }

    /// The limits this display enforces.
    pub fn limits(&self) -> &DisplayLimits {
        &self.limits
    }

    /// Applies one instruction the server sent to the client. Call it for every instruction,
    /// in order; instructions that do not draw (`nop`, `audio`, `clipboard`, `ack`, `error`,
    /// …) are ignored.
    ///
    /// An error concerns this instruction only (bad arguments, an undecodable image, a limit):
    /// the display stays usable, and [`is_degraded`](Self::is_degraded) tells whether it can
    /// still produce correct key frames.
    pub fn handle(&mut self, instruction: &Instruction) -> Result<(), DisplayError> {
        let result = self.apply(instruction);
        if let Err(error) = result
            && self.is_degraded()
        {
            self.degradation = Some(error);
        }
        result
    }

    fn apply(&mut self, instruction: &Instruction) -> Result<(), DisplayError> {
        // The hot path: image data.
        if instruction.is(opcode::BLOB) {
            return self.blob(instruction);
        }
        match TypedInstruction::parse(instruction, Context::ServerInteractive) {
            Ok(TypedInstruction::Other(instruction)) => self.untyped(instruction),
            Ok(typed) => self.typed(typed),
            Err(error) => {
                // A drawing instruction the client misreads: we no longer know what it shows.
                if draws(instruction.opcode()) {
                    self.degraded = true;
                }
                Err(error.into())
            }
        }
    }

    /// Whether the model can no longer guarantee that a key frame redraws what the client
    /// shows: a layer or the cursor holds pixels the model could not compute (an undecodable
    /// image, a limit, an ambiguous order), or the display lost track of something for good
    /// (a malformed drawing instruction, a layer it could not create, an operation clients
    /// disagree on). A degraded layer recovers when it is disposed, resized to nothing or
    /// overwritten whole; the rest is permanent. The proxy records without key frames while
    /// this is true.
    pub fn is_degraded(&self) -> bool {
        self.degraded || self.cursor.tainted || self.layers.values().any(|layer| layer.tainted)
    }

    /// Why the display is [degraded](Self::is_degraded): the error of the last instruction
    /// that left it degraded, or `None` while it is not. For the operator's log and the
    /// recording's notes; no variant carries data from the wire.
    pub fn degradation(&self) -> Option<DisplayError> {
        if self.is_degraded() {
            self.degradation
        } else {
            None
        }
    }

    /// Whether a key frame taken now is complete: no image stream is open (later `blob`s
    /// and `end`s would refer to a stream the key frame does not open) and every layer's
    /// drawing state is one a key frame reproduces (no `push`ed state, no clip, the identity
    /// transform, and a current path built under it). guacd leaves this state at every
    /// `sync`, so taking key frames right after a `sync` always works.
    pub fn key_frame_ready(&self) -> bool {
        self.open_images == 0
            && self.layers.values().all(|layer| {
                layer.stack.is_empty()
                    && layer.state.clip.is_none()
                    && layer.state.transform == Affine::IDENTITY
                    && layer.path.is_reproducible()
            })
    }

    /// The timestamp of the last `sync`, if any.
    pub fn last_timestamp(&self) -> Option<u64> {
        self.timestamp
    }

    /// How many operations were drawn approximately so far (anti-aliased paths and strokes,
    /// JPEG and lossy WebP decoding, patterns, clips by a path other than a rectangle): the
    /// model's pixels may differ from a browser's by rounding and edge anti-aliasing there.
    /// Key frames reproduce the model exactly; this says how close the model is to a client.
    pub fn approximations(&self) -> u64 {
        self.approximations
    }

    /// The size of the default layer: the display's size (0 × 0 until the server sets it).
    pub fn size(&self) -> (u32, u32) {
        self.layers.get(&0).map_or((0, 0), |layer| {
            (layer.surface.width(), layer.surface.height())
        })
    }

    /// Number of live layers (the default one included) and buffers.
    pub fn layer_count(&self) -> usize {
        self.visible + self.buffers
    }

    /// Pixels held by all layers, buffers and the cursor (4 bytes each).
    pub fn total_pixels(&self) -> u64 {
        self.pixels
    }

    /// Asserts that the display is within its limits and its counters add up (tests and
    /// fuzzing).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn check_invariants(&self) {
        let limits = &self.limits;
        let visible = self.layers.keys().filter(|&&i| i >= 0).count();
        let buffers = self.layers.len() - visible;
        assert_eq!((visible, buffers), (self.visible, self.buffers));
        assert!(visible <= limits.max_layers && buffers <= limits.max_buffers);
        let mut pixels = self.cursor.surface.area();
        for layer in self.layers.values() {
            assert!(layer.surface.width() <= limits.max_layer_width);
            assert!(layer.surface.height() <= limits.max_layer_height);
            assert!(layer.stack.len() <= limits.max_state_stack);
            pixels += layer.surface.area();
        }
        assert!(self.cursor.surface.width() <= limits.max_layer_width);
        assert!(self.cursor.surface.height() <= limits.max_layer_height);
        assert_eq!(pixels, self.pixels);
        assert!(pixels <= limits.max_total_pixels);
        let mut images = 0;
        let mut bytes = 0;
        for stream in self.streams.values() {
            if let Stream::Image(stream) = stream {
                images += 1;
                bytes += stream.received;
                assert!(stream.received <= limits.max_image_stream_bytes);
                assert!(stream.data.len() <= stream.received);
            }
        }
        assert_eq!((images, bytes), (self.open_images, self.image_bytes));
        assert!(images <= limits.max_image_streams);
        assert!(bytes <= limits.max_total_image_stream_bytes);
    }

    fn typed(&mut self, typed: TypedInstruction<'_>) -> Result<(), DisplayError> {
        use TypedInstruction as T;
        match typed {
            T::LayerSize {
                layer,
                width,
                height,
            } => self.set_size(layer.0, width, height),
            T::Img {
                stream,
                mask,
                layer,
                mimetype,
                x,
                y,
            } => self.img(stream.0, mask.0, layer.0, mimetype, x, y),
            T::End { stream } => self.end(stream.0),
            T::Copy {
                src_layer,
                src_x,
                src_y,
                width,
                height,
                mask,
                dst_layer,
                dst_x,
                dst_y,
            } => self.copy(
                src_layer.0,
                (src_x, src_y, width, height),
                mask.0,
                dst_layer.0,
                (dst_x, dst_y),
            ),
            T::Rect {
                layer,
                x,
                y,
                width,
                height,
            } => self.path_op(
                layer.0,
                PathOp::Rect {
                    x,
                    y,
                    w: width,
                    h: height,
                },
            ),
            T::Cfill {
                mask,
                layer,
                r,
                g,
                b,
                a,
            } => self.cfill(mask.0, layer.0, [r, g, b, a]),
            T::Cursor {
                x,
                y,
                src_layer,
                src_x,
                src_y,
                width,
                height,
            } => self.set_cursor((x, y), src_layer.0, (src_x, src_y, width, height)),
            T::Sync { timestamp, .. } => {
                self.timestamp = Some(timestamp);
                Ok(())
            }
            T::Mouse {
                x,
                y,
                buttons,
                timestamp,
            } => {
                self.mouse = Some(Mouse {
                    x,
                    y,
                    buttons: buttons.0,
                    timestamp,
                });
                Ok(())
            }
            T::Audio { stream, .. }
            | T::Argv { stream, .. }
            | T::Clipboard { stream, .. }
            | T::File { stream, .. }
            | T::Pipe { stream, .. }
            | T::Video { stream, .. }
            | T::Body { stream, .. } => self.open_other_stream(stream.0),
            _ => Ok(()),
        }
    }

    fn untyped(&mut self, instruction: &Instruction) -> Result<(), DisplayError> {
        let result = match instruction.opcode() {
            op::START => self.start_or_line(instruction, op::START),
            op::LINE => self.start_or_line(instruction, op::LINE),
            op::ARC => self.arc(instruction),
            op::CURVE => self.curve(instruction),
            op::CLOSE => {
                let layer = Args::new(instruction, op::CLOSE).int(0)?;
                self.path_op(layer, PathOp::Close)
            }
            op::CLIP => self.clip(Args::new(instruction, op::CLIP).int(0)?),
            op::CSTROKE => self.cstroke(instruction),
            op::LFILL => self.lfill(instruction),
            op::LSTROKE => {
                self.degraded = true;
                Err(DisplayError::Unsupported(Unsupported::LayerStroke))
            }
            op::PUSH => self.push(Args::new(instruction, op::PUSH).int(0)?),
            op::POP => self.pop(Args::new(instruction, op::POP).int(0)?),
            op::RESET => self.reset(Args::new(instruction, op::RESET).int(0)?),
            op::IDENTITY => {
                let layer = Args::new(instruction, op::IDENTITY).int(0)?;
                self.set_transform(layer, None)
            }
            op::TRANSFORM => {
                let args = Args::new(instruction, op::TRANSFORM);
                let layer = args.int(0)?;
                let m = matrix(&args)?;
                self.set_transform(layer, Some(m))
            }
            op::SET => {
                // Only `miter-limit` affects drawing, and strokes are approximate anyway.
                let layer = Args::new(instruction, op::SET).int(0)?;
                self.ensure_layer(layer)
            }
            op::TRANSFER => self.transfer(instruction),
            op::MOVE => self.move_layer(instruction),
            op::SHADE => self.shade(instruction),
            op::DISTORT => self.distort(instruction),
            op::DISPOSE => self.dispose(Args::new(instruction, op::DISPOSE).int(0)?),
            op::PNG => self.legacy_image(instruction, op::PNG, ImageType::Png),
            op::JPEG => self.legacy_image(instruction, op::JPEG, ImageType::Jpeg),
            op::NEST => Err(DisplayError::Unsupported(Unsupported::Nest)),
            _ => return Ok(()),
        };
        // Argument errors make the instruction's effect unknown, and layer creation failures
        // leave a layer the client has and we do not: neither belongs to one known layer.
        if matches!(
            result,
            Err(DisplayError::BadArgument { .. }
                | DisplayError::Unsupported(Unsupported::Nest)
                | DisplayError::LimitExceeded(Limit::Layers | Limit::Buffers))
        ) {
            self.degraded = true;
        }
        result
    }

    // ---- layers ----------------------------------------------------------------------

    /// Creates the layer if it does not exist, as `getLayer()` does on any reference: a
    /// visible layer the size of the display, child of the default layer; a buffer 0 × 0.
    fn ensure_layer(&mut self, index: i32) -> Result<(), DisplayError> {
        if self.layers.contains_key(&index) {
            return Ok(());
        }
        let result = self.create_layer(index);
        if result.is_err() {
            self.degraded = true;
        }
        result
    }

    fn create_layer(&mut self, index: i32) -> Result<(), DisplayError> {
        let (node, size) = if index > 0 {
            if self.visible >= self.limits.max_layers {
                return Err(DisplayError::LimitExceeded(Limit::Layers));
            }
            let root = self.layer(0)?;
            let size = (root.surface.width(), root.surface.height());
            let node = Node {
                parent: Some(ParentRef {
                    index: 0,
                    serial: root.serial,
                }),
                x: 0,
                y: 0,
                z: 0,
                opacity: 255,
                matrix: Affine::IDENTITY,
                attach: self.next_attach,
            };
            self.next_attach += 1;
            (Some(node), size)
        } else {
            if self.buffers >= self.limits.max_buffers {
                return Err(DisplayError::LimitExceeded(Limit::Buffers));
            }
            (None, (0, 0))
        };
        let area = u64::from(size.0) * u64::from(size.1);
        if self.pixels + area > self.limits.max_total_pixels {
            return Err(DisplayError::LimitExceeded(Limit::TotalPixels));
        }
        self.pixels += area;
        if index > 0 {
            self.visible += 1;
        } else {
            self.buffers += 1;
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.layers.insert(
            index,
            Layer::new(serial, Surface::new(size.0, size.1), node),
        );
        Ok(())
    }

    fn layer(&self, index: i32) -> Result<&Layer, DisplayError> {
        // Callers ensure the layer exists; failing here is a bug, reported rather than a panic.
        self.layers
            .get(&index)
            .ok_or(DisplayError::LimitExceeded(Limit::Layers))
    }

    fn layer_mut(&mut self, index: i32) -> Result<&mut Layer, DisplayError> {
        self.layers
            .get_mut(&index)
            .ok_or(DisplayError::LimitExceeded(Limit::Layers))
    }

    fn taint(&mut self, index: i32) {
        if let Some(layer) = self.layers.get_mut(&index) {
            layer.tainted = true;
        }
    }

    /// Marks the layer degraded and returns `error`.
    fn taint_with(&mut self, index: i32, error: DisplayError) -> Result<(), DisplayError> {
        self.taint(index);
        Err(error)
    }

    fn set_size(&mut self, index: i32, width: i32, height: i32) -> Result<(), DisplayError> {
        let (Ok(width), Ok(height)) = (u32::try_from(width), u32::try_from(height)) else {
            self.degraded = true;
            let index = if width < 0 { 1 } else { 2 };
            return Err(DisplayError::BadArgument {
                opcode: opcode::SIZE,
                index,
                reason: ArgumentError::OutOfRange,
            });
        };
        self.ensure_layer(index)?;
        self.resize_layer(index, width, height)
    }

    /// Resizes a layer as `Guacamole.Layer.resize` does: nothing when the size is the same;
    /// otherwise the overlap is kept and the drawing state (path, clip, transform, stack) is
    /// reset.
    fn resize_layer(&mut self, index: i32, width: u32, height: u32) -> Result<(), DisplayError> {
        let limits = self.limits;
        let layer = self.layer(index)?;
        if (layer.surface.width(), layer.surface.height()) == (width, height) {
            return Ok(());
        }
        if width > limits.max_layer_width || height > limits.max_layer_height {
            return self.taint_with(index, DisplayError::LimitExceeded(Limit::LayerSize));
        }
        let area = u64::from(width) * u64::from(height);
        let total = self.pixels - layer.surface.area() + area;
        if total > limits.max_total_pixels {
            return self.taint_with(index, DisplayError::LimitExceeded(Limit::TotalPixels));
        }
        self.touch(index, Touch::Resize);
        self.pixels = total;
        let layer = self.layer_mut(index)?;
        layer.surface.resize(width, height);
        layer.reset_state();
        if area == 0 {
            layer.tainted = false;
        }
        Ok(())
    }

    /// Grows a buffer to hold `w × h` pixels at `(x, y)` (`fitRect` of auto-sized buffers).
    fn fit(&mut self, index: i32, (x, y, w, h): (i64, i64, i64, i64)) -> Result<(), DisplayError> {
        if index >= 0 {
            return Ok(());
        }
        let layer = self.layer(index)?;
        let (width, height) = (
            i64::from(layer.surface.width()),
            i64::from(layer.surface.height()),
        );
        let (new_w, new_h) = (width.max(x + w), height.max(y + h));
        if (new_w, new_h) == (width, height) {
            return Ok(());
        }
        match (u32::try_from(new_w), u32::try_from(new_h)) {
            (Ok(w), Ok(h)) => self.resize_layer(index, w, h),
            _ => self.taint_with(index, DisplayError::LimitExceeded(Limit::LayerSize)),
        }
    }

    fn move_layer(&mut self, instruction: &Instruction) -> Result<(), DisplayError> {
        let args = Args::new(instruction, op::MOVE);
        let (index, parent): (i32, i32) = (args.int(0)?, args.int(1)?);
        let (x, y, z): (i32, i32, i32) = (args.int(2)?, args.int(3)?, args.int(4)?);
        // Clients ignore moves of the default layer or of buffers, and into buffers.
        if index <= 0 || parent < 0 {
            return Ok(());
        }
        self.ensure_layer(index)?;
        self.ensure_layer(parent)?;
        if self.is_ancestor(index, parent) {
            self.degraded = true;
            return Err(DisplayError::Unsupported(Unsupported::LayerCycle));
        }
        let parent_ref = ParentRef {
            index: parent,
            serial: self.layer(parent)?.serial,
        };
        let attach = self.next_attach;
        let layer = self.layer_mut(index)?;
        let mut attached = false;
        if let Some(node) = &mut layer.node {
            if node.parent != Some(parent_ref) {
                node.parent = Some(parent_ref);
                node.attach = attach;
                attached = true;
            }
            (node.x, node.y, node.z) = (x, y, z);
        }
        if attached {
            self.next_attach += 1;
        }
        Ok(())
    }

    /// Whether `ancestor` is `layer` or one of its live ancestors.
    fn is_ancestor(&self, ancestor: i32, layer: i32) -> bool {
        let mut current = layer;
        for _ in 0..=self.layers.len() {
            if current == ancestor {
                return true;
            }
            let Some(parent) = self.live_parent(current) else {
                return false;
            };
            current = parent;
        }
        true // a loop that does not pass through `ancestor`: cannot happen, refuse anyway
    }

    /// The index of the live parent of a visible layer.
    pub(crate) fn live_parent(&self, index: i32) -> Option<i32> {
        let parent = self.layers.get(&index)?.node?.parent?;
        let live = self.layers.get(&parent.index)?.serial == parent.serial;
        live.then_some(parent.index)
    }

    fn shade(&mut self, instruction: &Instruction) -> Result<(), DisplayError> {
        let args = Args::new(instruction, op::SHADE);
        let (index, opacity): (i32, i64) = (args.int(0)?, args.int(1)?);
        if index < 0 {
            return Ok(());
        }
        self.ensure_layer(index)?;
        if let Some(node) = &mut self.layer_mut(index)?.node {
            // CSS clamps the opacity to 0–1.
            node.opacity = opacity.clamp(0, 255) as u8;
        }
        Ok(())
    }

    fn distort(&mut self, instruction: &Instruction) -> Result<(), DisplayError> {
        let args = Args::new(instruction, op::DISTORT);
        let index: i32 = args.int(0)?;
        let m = matrix(&args)?;
        if index < 0 {
            return Ok(());
        }
        self.ensure_layer(index)?;
        if let Some(node) = &mut self.layer_mut(index)?.node {
            node.matrix = m;
        }
        Ok(())
    }

    fn dispose(&mut self, index: i32) -> Result<(), DisplayError> {
        // Disposing the default layer has no effect; a layer that does not exist is created
        // and disposed by clients, which is no change.
        if index == 0 {
            return Ok(());
        }
        if let Some(layer) = self.layers.remove(&index) {
            self.pixels -= layer.surface.area();
            if index > 0 {
                self.visible -= 1;
            } else {
                self.buffers -= 1;
            }
        }
        Ok(())
    }

    // ---- streams ---------------------------------------------------------------------

    fn open_other_stream(&mut self, index: u32) -> Result<(), DisplayError> {
        self.replace_stream(index)?;
        self.remember_other_stream(index);
        Ok(())
    }

    /// Remembers an open stream that does not draw, only to keep key-frame images off its
    /// index; beyond [`MAX_OTHER_STREAMS`] they are forgotten.
    fn remember_other_stream(&mut self, index: u32) {
        if self.streams.len() < MAX_OTHER_STREAMS {
            self.streams.insert(index, Stream::Other);
        }
    }

    /// Closes the stream on `index`, if any, before another opens there. An image stream
    /// replaced before its end is never drawn by some clients and freezes others.
    fn replace_stream(&mut self, index: u32) -> Result<(), DisplayError> {
        if let Some(Stream::Image(stream)) = self.streams.remove(&index) {
            self.open_images -= 1;
            self.image_bytes -= stream.received;
            self.degraded = true;
            return Err(DisplayError::Unsupported(Unsupported::AbandonedImageStream));
        }
        Ok(())
    }

    fn img(
        &mut self,
        stream: u32,
        mask: u8,
        layer: i32,
        mimetype: &str,
        x: i32,
        y: i32,
    ) -> Result<(), DisplayError> {
        let replaced = self.replace_stream(stream);
        if let Err(error) = self.ensure_layer(layer) {
            self.remember_other_stream(stream);
            return Err(error);
        }
        self.set_mask(layer, mask)?;
        let opened = self.open_image(stream, layer, mimetype, x, y);
        replaced.and(opened)
    }

    fn open_image(
        &mut self,
        stream: u32,
        layer: i32,
        mimetype: &str,
        x: i32,
        y: i32,
    ) -> Result<(), DisplayError> {
        let Some(kind) = ImageType::from_mimetype(mimetype) else {
            self.remember_other_stream(stream);
            return self.taint_with(layer, DisplayError::UnsupportedImageType);
        };
        if self.open_images >= self.limits.max_image_streams {
            self.remember_other_stream(stream);
            return self.taint_with(layer, DisplayError::LimitExceeded(Limit::ImageStreams));
        }
        let target = self.layer(layer)?;
        let opened = self.next_image;
        let image = ImageStream {
            layer,
            serial: target.serial,
            opened,
            kind,
            x,
            y,
            data: Vec::new(),
            received: 0,
            failed: false,
            state_at_img: target.state,
            touches: Vec::new(),
        };
        self.streams.insert(stream, Stream::Image(Box::new(image)));
        self.open_images += 1;
        self.next_image += 1;
        Ok(())
    }

    fn blob(&mut self, instruction: &Instruction) -> Result<(), DisplayError> {
        let args = Args::new(instruction, opcode::BLOB);
        let (index, data) = match args
            .int::<u32>(0)
            .and_then(|index| Ok((index, args.text(1)?)))
        {
            Ok(parsed) => parsed,
            Err(error) => {
                // Clients read the index with `parseInt`, which accepts more than the model
                // (`+1`, `1 `, `1x`): with an image streaming, this blob may belong to it.
                if self.open_images > 0 {
                    self.degraded = true;
                }
                return Err(error);
            }
        };
        let limits = self.limits;
        let total = self.image_bytes;
        // Blobs of other streams, or of none, are not ours to check.
        let Some(Stream::Image(stream)) = self.streams.get_mut(&index) else {
            return Ok(());
        };
        if stream.failed {
            return Ok(());
        }
        let error = if stream.received + data.len() > limits.max_image_stream_bytes {
            Some(DisplayError::LimitExceeded(Limit::ImageStreamBytes))
        } else if total + data.len() > limits.max_total_image_stream_bytes {
            Some(DisplayError::LimitExceeded(Limit::TotalImageStreamBytes))
        } else {
            decode::append_base64(data, &mut stream.data).err()
        };
        let received = stream.received;
        let layer = (stream.layer, stream.serial);
        if let Some(error) = error {
            // The image is lost: free what it holds and mark its layer.
            stream.failed = true;
            stream.data = Vec::new();
            stream.received = 0;
            self.image_bytes -= received;
            if self
                .layers
                .get(&layer.0)
                .is_some_and(|l| l.serial == layer.1)
            {
                self.taint(layer.0);
            }
            return Err(error);
        }
        stream.received += data.len();
        self.image_bytes += data.len();
        Ok(())
    }

    fn end(&mut self, index: u32) -> Result<(), DisplayError> {
        match self.streams.remove(&index) {
            Some(Stream::Image(stream)) => {
                self.open_images -= 1;
                self.image_bytes -= stream.received;
                self.finish_image(*stream)
            }
            _ => Ok(()),
        }
    }

    fn finish_image(&mut self, stream: ImageStream) -> Result<(), DisplayError> {
        let index = stream.layer;
        // An image for a layer disposed since is drawn into an object no longer displayed.
        let Some(layer) = self.layers.get(&index) else {
            return Ok(());
        };
        if layer.serial != stream.serial || stream.failed {
            return Ok(());
        }
        let image = match decode::decode(stream.kind, &stream.data, &self.image_limits()) {
            Ok(image) => image,
            Err(error) => return self.taint_with(index, error),
        };
        drop(stream.data);
        let rect = Rect::new(
            stream.x.into(),
            stream.y.into(),
            image.width.into(),
            image.height.into(),
        );
        let offset = stream
            .state_at_img
            .transform
            .integer_translation()
            .unwrap_or_default();
        let device = rect.translate(offset.0, offset.1);
        let ambiguous = layer.state != stream.state_at_img
            || stream.touches.iter().any(|touch| match touch {
                Touch::Write(r) | Touch::Read(r) => r.intersects(&device),
                Touch::Resize | Touch::Overflow => true,
            });
        self.drawing_image = Some(stream.opened);
        let drawn = self.draw_image(index, stream.x, stream.y, &image);
        self.drawing_image = None;
        if ambiguous {
            return self.taint_with(
                index,
                DisplayError::Unsupported(Unsupported::AmbiguousImageOrder),
            );
        }
        drawn
    }

    fn image_limits(&self) -> ImageLimits {
        ImageLimits {
            max_width: self.limits.max_layer_width,
            max_height: self.limits.max_layer_height,
            max_pixels: self.limits.max_image_pixels,
        }
    }

    /// `png`/`jpeg` of protocol versions before 0.9: the image inline, drawn in order.
    fn legacy_image(
        &mut self,
        instruction: &Instruction,
        opcode: &'static str,
        kind: ImageType,
    ) -> Result<(), DisplayError> {
        let args = Args::new(instruction, opcode);
        let (mask, index): (u8, i32) = (args.int(0)?, args.int(1)?);
        let (x, y): (i32, i32) = (args.int(2)?, args.int(3)?);
        let data = args.text(4)?;
        self.ensure_layer(index)?;
        self.set_mask(index, mask)?;
        let mut bytes = Vec::new();
        if let Err(error) = decode::append_base64(data, &mut bytes) {
            return self.taint_with(index, error);
        }
        match decode::decode(kind, &bytes, &self.image_limits()) {
            Ok(image) => self.draw_image(index, x, y, &image),
            Err(error) => self.taint_with(index, error),
        }
    }

    /// Draws a decoded image with the layer's current operation (`drawImage`).
    fn draw_image(
        &mut self,
        index: i32,
        x: i32,
        y: i32,
        image: &Image,
    ) -> Result<(), DisplayError> {
        if !image.exact {
            self.approximations += 1;
        }
        let (x, y) = (i64::from(x), i64::from(y));
        self.fit(index, (x, y, image.width.into(), image.height.into()))?;
        let layer = self.layer(index)?;
        let Some((ox, oy)) = layer.state.transform.integer_translation() else {
            return self.taint_with(
                index,
                DisplayError::Unsupported(Unsupported::TransformedImage),
            );
        };
        let state = layer.state;
        let opaque = image.pixels.iter().all(|p| p[3] == 255);
        let source = Source {
            pixels: &image.pixels,
            width: image.width,
            height: image.height,
        };
        let full = Rect::new(0, 0, image.width.into(), image.height.into());
        let layer = self.layer_mut(index)?;
        let clip = layer.clip();
        let drawn = layer
            .surface
            .draw(state.op, &clip, source, full, x + ox, y + oy);
        self.wrote(index, state.op, &clip, &drawn, opaque);
        Ok(())
    }

    // ---- drawing ---------------------------------------------------------------------

    /// `setChannelMask`: an unmapped mask leaves the previous operation.
    fn set_mask(&mut self, index: i32, mask: u8) -> Result<(), DisplayError> {
        if let Some(op) = CompositeOp::from_mask(mask) {
            self.layer_mut(index)?.state.op = op;
        }
        Ok(())
    }

    /// Records that `area` of a layer was drawn with `op` (and, for unbounded operations,
    /// the rest of `clip` cleared): for image streams pending on the layer, and to clear the
    /// layer's degradation when the drawing replaced all of it.
    fn wrote(&mut self, index: i32, op: CompositeOp, clip: &Rect, drawn: &Rect, opaque: bool) {
        let affected = if op.is_unbounded() {
            *clip
        } else {
            drawn.intersect(clip)
        };
        self.touch(index, Touch::Write(affected));
        let Some(layer) = self.layers.get_mut(&index) else {
            return;
        };
        let independent = match op {
            CompositeOp::Src => true,
            CompositeOp::Over => opaque,
            _ => false,
        };
        if independent && affected.contains(&layer.surface.bounds()) {
            layer.tainted = false;
        }
    }

    /// Tells the image streams pending on layer `index` what happened to it, unless every
    /// client orders it before them (an image opened before them, see [`Touch`]).
    fn touch(&mut self, index: i32, touch: Touch) {
        if self.open_images == 0 {
            return;
        }
        let Some(serial) = self.layers.get(&index).map(|l| l.serial) else {
            return;
        };
        let drawing = self.drawing_image;
        for stream in self.streams.values_mut() {
            if let Stream::Image(stream) = stream
                && stream.layer == index
                && stream.serial == serial
                && drawing.is_none_or(|image| image > stream.opened)
            {
                if stream.touches.len() < MAX_TOUCHES {
                    stream.touches.push(touch);
                } else if let Some(last) = stream.touches.last_mut() {
                    *last = Touch::Overflow;
                }
            }
        }
    }

    fn start_or_line(
        &mut self,
        instruction: &Instruction,
        opcode: &'static str,
    ) -> Result<(), DisplayError> {
        let args = Args::new(instruction, opcode);
        let (layer, x, y) = (args.int(0)?, args.int(1)?, args.int(2)?);
        let op = if opcode == op::START {
            PathOp::Start { x, y }
        } else {
            PathOp::Line { x, y }
        };
        self.path_op(layer, op)
    }

    fn arc(&mut self, instruction: &Instruction) -> Result<(), DisplayError> {
        let args = Args::new(instruction, op::ARC);
        let (layer, x, y, radius) = (args.int(0)?, args.int(1)?, args.int(2)?, args.int(3)?);
        let (start, end) = (args.float(4)?, args.float(5)?);
        let negative = args.int::<i64>(6)? != 0;
        if radius < 0 {
            self.degraded = true;
            return Err(DisplayError::Unsupported(Unsupported::NegativeRadius));
        }
        self.path_op(
            layer,
            PathOp::Arc {
                x,
                y,
                radius,
                start,
                end,
                negative,
            },
        )
    }

    fn curve(&mut self, instruction: &Instruction) -> Result<(), DisplayError> {
        let args = Args::new(instruction, op::CURVE);
        let layer = args.int(0)?;
        let cp1 = (args.int(1)?, args.int(2)?);
        let cp2 = (args.int(3)?, args.int(4)?);
        let (x, y) = (args.int(5)?, args.int(6)?);
        self.path_op(layer, PathOp::Curve { cp1, cp2, x, y })
    }

    /// Adds to a layer's path, growing a buffer to the point or rectangle first as
    /// guacamole-common-js does.
    fn path_op(&mut self, index: i32, op: PathOp) -> Result<(), DisplayError> {
        self.ensure_layer(index)?;
        let fit = match op {
            PathOp::Rect { x, y, w, h } => Some((x.into(), y.into(), w.into(), h.into())),
            PathOp::Start { x, y }
            | PathOp::Line { x, y }
            | PathOp::Arc { x, y, .. }
            | PathOp::Curve { x, y, .. } => Some((x.into(), y.into(), 0, 0)),
            PathOp::Close => None,
        };
        if let Some(fit) = fit {
            self.fit(index, fit)?;
        }
        let limit = self.limits.max_path_points;
        let layer = self.layer_mut(index)?;
        let transform = layer.state.transform;
        if layer.path.add(op, &transform, limit).is_err() {
            return self.taint_with(index, DisplayError::LimitExceeded(Limit::PathPoints));
        }
        Ok(())
    }

    fn cfill(&mut self, mask: u8, index: i32, color: Pixel) -> Result<(), DisplayError> {
        self.ensure_layer(index)?;
        self.set_mask(index, mask)?;
        self.fill(index, Paint::Color(canonical(color)), None)
    }

    fn lfill(&mut self, instruction: &Instruction) -> Result<(), DisplayError> {
        let args = Args::new(instruction, op::LFILL);
        let (mask, index, src): (u8, i32, i32) = (args.int(0)?, args.int(1)?, args.int(2)?);
        self.ensure_layer(index)?;
        self.ensure_layer(src)?;
        self.set_mask(index, mask)?;
        let source = self.layer(src)?;
        let (pattern, tainted) = (source.surface.clone(), source.tainted);
        if pattern.area() == 0 {
            self.degraded = true;
            return Err(DisplayError::Unsupported(Unsupported::EmptyPattern));
        }
        // Browsers repeat the whole canvas, whose size is rounded up to CANVAS_SIZE_FACTOR.
        if pattern.width() % CANVAS_SIZE_FACTOR != 0 || pattern.height() % CANVAS_SIZE_FACTOR != 0 {
            self.approximations += 1;
        }
        self.touch(src, Touch::Read(pattern.bounds()));
        let paint = Paint::Pattern(Pattern {
            source: pattern.source(),
        });
        self.fill(index, paint, None)?;
        if tainted {
            self.taint(index);
        }
        Ok(())
    }

    fn cstroke(&mut self, instruction: &Instruction) -> Result<(), DisplayError> {
        let args = Args::new(instruction, op::CSTROKE);
        let (mask, index): (u8, i32) = (args.int(0)?, args.int(1)?);
        let style = StrokeStyle {
            cap: args.int(2)?,
            join: args.int(3)?,
            thickness: args.int(4)?,
        };
        let color = [args.int(5)?, args.int(6)?, args.int(7)?, args.int(8)?];
        self.ensure_layer(index)?;
        self.set_mask(index, mask)?;
        self.fill(index, Paint::Color(canonical(color)), Some(style))
    }

    /// Fills (or, with a style, strokes) the current path of a layer, then marks the path
    /// closed.
    fn fill(
        &mut self,
        index: i32,
        paint: Paint<'_>,
        stroke: Option<StrokeStyle>,
    ) -> Result<(), DisplayError> {
        let layer = self.layer_mut(index)?;
        let clip = layer.clip();
        let state = layer.state;
        if matches!(paint, Paint::Color([.., 0])) && !state.op.is_unbounded() {
            // A transparent colour with a bounded operation leaves every pixel as it is: only
            // the path is closed. Not rasterising it matters for key frames, which close a
            // path this way (a path may be too long to rasterise within `MAX_RASTER_WORK`).
            layer.path.set_closed();
            return Ok(());
        }
        let opaque = match paint {
            Paint::Color(color) => color[3] == 255,
            Paint::Pattern(_) => false,
        };
        let single = match (&paint, stroke) {
            (Paint::Color(_), None) => layer.path.single_rect(),
            _ => None,
        };
        let exact = stroke.is_none() && layer.path.fill_is_exact();
        let drawn = if let (Some(rect), Paint::Color(color)) = (single, &paint) {
            layer.surface.fill_rect(state.op, &clip, &rect, *color);
            rect
        } else {
            let shape = match stroke {
                Some(style) => layer.path.stroke_shape(&style, &state.transform),
                None => layer.path.fill_shape(),
            };
            let bounds = shape.bounds();
            let rows = if state.op.is_unbounded() {
                clip
            } else {
                bounds.intersect(&clip)
            };
            if shape.work(&rows) > MAX_RASTER_WORK {
                layer.path.set_closed();
                return self.taint_with(index, DisplayError::LimitExceeded(Limit::PathPoints));
            }
            let surface = &mut layer.surface;
            shape.for_each_row(&rows, |y, spans| {
                surface.paint_row(state.op, y, (clip.x0, clip.x1), spans, &paint);
            });
            bounds
        };
        layer.path.set_closed();
        if !exact {
            self.approximations += 1;
        }
        self.wrote(index, state.op, &clip, &drawn, opaque);
        Ok(())
    }

    fn clip(&mut self, index: i32) -> Result<(), DisplayError> {
        self.ensure_layer(index)?;
        let layer = self.layer_mut(index)?;
        let exact = layer.path.single_rect().is_some();
        let area = layer
            .path
            .single_rect()
            .unwrap_or_else(|| layer.path.bounds());
        let clip = area.intersect(&layer.state.clip.unwrap_or(area));
        layer.state.clip = Some(clip);
        layer.path.set_closed();
        if !exact {
            self.approximations += 1;
        }
        Ok(())
    }

    fn push(&mut self, index: i32) -> Result<(), DisplayError> {
        self.ensure_layer(index)?;
        let limit = self.limits.max_state_stack;
        let layer = self.layer_mut(index)?;
        if layer.stack.len() >= limit {
            return self.taint_with(index, DisplayError::LimitExceeded(Limit::StateStack));
        }
        layer.stack.push(layer.state);
        Ok(())
    }

    fn pop(&mut self, index: i32) -> Result<(), DisplayError> {
        self.ensure_layer(index)?;
        let layer = self.layer_mut(index)?;
        if let Some(state) = layer.stack.pop() {
            layer.state = state;
        }
        Ok(())
    }

    fn reset(&mut self, index: i32) -> Result<(), DisplayError> {
        self.ensure_layer(index)?;
        self.layer_mut(index)?.reset_state();
        Ok(())
    }

    fn set_transform(&mut self, index: i32, m: Option<Affine>) -> Result<(), DisplayError> {
        self.ensure_layer(index)?;
        let state = &mut self.layer_mut(index)?.state;
        state.transform = match m {
            Some(m) => state.transform.then(&m),
            None => Affine::IDENTITY,
        };
        Ok(())
    }

    fn copy(
        &mut self,
        src: i32,
        (sx, sy, w, h): (i32, i32, i32, i32),
        mask: u8,
        dst: i32,
        (dx, dy): (i32, i32),
    ) -> Result<(), DisplayError> {
        if w < 0 || h < 0 {
            self.degraded = true;
            return Err(DisplayError::Unsupported(Unsupported::NegativeSize));
        }
        self.ensure_layer(src)?;
        self.ensure_layer(dst)?;
        self.set_mask(dst, mask)?;
        let Some(area) = self.source_area(src, (sx, sy, w, h))? else {
            return Ok(());
        };
        let (dx, dy) = (i64::from(dx), i64::from(dy));
        self.fit(dst, (dx, dy, area.width(), area.height()))?;
        let Some((ox, oy)) = self.layer(dst)?.state.transform.integer_translation() else {
            return self.taint_with(
                dst,
                DisplayError::Unsupported(Unsupported::TransformedImage),
            );
        };
        self.touch(src, Touch::Read(area));
        // `drawImage` clips the source rectangle to the source and the destination alike.
        let clipped = area.intersect(&self.layer(src)?.surface.bounds());
        if clipped.is_empty() {
            return Ok(());
        }
        let (dx, dy) = (
            dx + ox + clipped.x0 - area.x0,
            dy + oy + clipped.y0 - area.y0,
        );
        if src == dst {
            let layer = self.layer_mut(dst)?;
            let (op, clip) = (layer.state.op, layer.clip());
            let drawn = layer.surface.draw_within(op, &clip, clipped, dx, dy);
            self.wrote(dst, op, &clip, &drawn, false);
            return Ok(());
        }
        let (pixels, tainted) = self.source_pixels(src, dst, &clipped)?;
        let layer = self.layer_mut(dst)?;
        let (op, clip) = (layer.state.op, layer.clip());
        let drawn = match &pixels {
            SourcePixels::Layer(surface) => {
                layer
                    .surface
                    .draw(op, &clip, surface.source(), clipped, dx, dy)
            }
            SourcePixels::Copied(surface) => {
                let local = Rect::new(0, 0, clipped.width(), clipped.height());
                layer
                    .surface
                    .draw(op, &clip, surface.source(), local, dx, dy)
            }
        };
        if tainted {
            layer.tainted = true;
        }
        self.wrote(dst, op, &clip, &drawn, false);
        Ok(())
    }

    /// The source rectangle of `copy`, `transfer` and `cursor` after guacamole-common-js's
    /// clipping to the right and bottom edges; `None` when it draws nothing.
    fn source_area(
        &self,
        src: i32,
        (sx, sy, w, h): (i32, i32, i32, i32),
    ) -> Result<Option<Rect>, DisplayError> {
        let surface = &self.layer(src)?.surface;
        let (width, height) = (i64::from(surface.width()), i64::from(surface.height()));
        let (sx, sy) = (i64::from(sx), i64::from(sy));
        if sx >= width || sy >= height {
            return Ok(None);
        }
        let (w, h) = (i64::from(w).min(width - sx), i64::from(h).min(height - sy));
        if w <= 0 || h <= 0 {
            return Ok(None);
        }
        Ok(Some(Rect::new(sx, sy, w, h)))
    }

    /// The pixels to read from `src` when drawing into `dst`: shared with the layer when they
    /// differ, a copy of `area` (transparent outside the layer) when they are the same.
    fn source_pixels(
        &self,
        src: i32,
        dst: i32,
        area: &Rect,
    ) -> Result<(SourcePixels, bool), DisplayError> {
        let layer = self.layer(src)?;
        let pixels = if src == dst {
            let source = layer.surface.source();
            let mut copy = Surface::new(area.width() as u32, area.height() as u32);
            copy.transfer(
                0x3,
                source,
                (area.x0, area.y0),
                (area.width(), area.height()),
                (0, 0),
            );
            SourcePixels::Copied(copy)
        } else {
            SourcePixels::Layer(layer.surface.clone())
        };
        Ok((pixels, layer.tainted))
    }

    fn transfer(&mut self, instruction: &Instruction) -> Result<(), DisplayError> {
        let args = Args::new(instruction, op::TRANSFER);
        let src: i32 = args.int(0)?;
        let rect: (i32, i32, i32, i32) = (args.int(1)?, args.int(2)?, args.int(3)?, args.int(4)?);
        let function: i64 = args.int(5)?;
        let dst: i32 = args.int(6)?;
        let (dx, dy): (i32, i32) = (args.int(7)?, args.int(8)?);
        self.ensure_layer(src)?;
        self.ensure_layer(dst)?;
        let Ok(function @ 0..=15) = u8::try_from(function) else {
            self.degraded = true;
            return Err(DisplayError::Unsupported(Unsupported::TransferFunction));
        };
        if function == 0x5 {
            return Ok(()); // NOP: guacamole-common-js does not even call into the layer
        }
        if rect.2 < 0 || rect.3 < 0 {
            self.degraded = true;
            return Err(DisplayError::Unsupported(Unsupported::NegativeSize));
        }
        let Some(area) = self.source_area(src, rect)? else {
            return Ok(());
        };
        // `getImageData` reads from (sx, sy) even when negative: transparent outside.
        let (sx, sy) = (i64::from(rect.0), i64::from(rect.1));
        let (w, h) = (area.x1 - sx, area.y1 - sy);
        let (dx, dy) = (i64::from(dx), i64::from(dy));
        self.fit(dst, (dx, dy, w, h))?;
        self.touch(src, Touch::Read(Rect::new(sx, sy, w, h)));
        // Only the part that lands on the destination matters (`putImageData` drops the rest).
        let written = Rect::new(dx, dy, w, h).intersect(&self.layer(dst)?.surface.bounds());
        if written.is_empty() {
            return Ok(());
        }
        let read = written.translate(sx - dx, sy - dy);
        let (pixels, tainted) = self.source_pixels(src, dst, &read)?;
        let size = (written.width(), written.height());
        let at = (written.x0, written.y0);
        let layer = self.layer_mut(dst)?;
        match &pixels {
            SourcePixels::Layer(surface) => {
                layer
                    .surface
                    .transfer(function, surface.source(), (read.x0, read.y0), size, at);
            }
            SourcePixels::Copied(surface) => {
                layer
                    .surface
                    .transfer(function, surface.source(), (0, 0), size, at);
            }
        }
        if tainted {
            layer.tainted = true;
        }
        self.wrote(dst, CompositeOp::Over, &written, &written, false);
        Ok(())
    }

    fn set_cursor(
        &mut self,
        hotspot: (i32, i32),
        src: i32,
        (sx, sy, w, h): (i32, i32, i32, i32),
    ) -> Result<(), DisplayError> {
        let (Ok(width), Ok(height)) = (u32::try_from(w), u32::try_from(h)) else {
            self.degraded = true;
            return Err(DisplayError::Unsupported(Unsupported::NegativeSize));
        };
        self.ensure_layer(src)?;
        let area = u64::from(width) * u64::from(height);
        let error = if width > self.limits.max_layer_width || height > self.limits.max_layer_height
        {
            Some(Limit::LayerSize)
        } else if self.pixels - self.cursor.surface.area() + area > self.limits.max_total_pixels {
            Some(Limit::TotalPixels)
        } else {
            None
        };
        if let Some(limit) = error {
            self.cursor.tainted = true;
            return Err(DisplayError::LimitExceeded(limit));
        }
        self.pixels = self.pixels - self.cursor.surface.area() + area;
        self.cursor.set = true;
        self.cursor.hotspot = hotspot;
        // The cursor layer is resized (keeping the overlap), then the source is copied with
        // SRC, which replaces all of it — unless guacamole-common-js's copy returns early.
        self.cursor.surface.resize(width, height);
        let Some(area) = self.source_area(src, (sx, sy, w, h))? else {
            return Ok(());
        };
        self.touch(src, Touch::Read(area));
        let layer = self.layer(src)?;
        let (source, tainted) = (layer.surface.clone(), layer.tainted);
        let bounds = self.cursor.surface.bounds();
        self.cursor
            .surface
            .draw(CompositeOp::Src, &bounds, source.source(), area, 0, 0);
        self.cursor.tainted = tainted;
        Ok(())
    }
}

/// Pixels read by `copy` or `transfer`.
enum SourcePixels {
    /// Another layer's pixels, shared.
    Layer(Surface),
    /// The source area, copied out of the destination layer itself.
    Copied(Surface),
}

/// Most rows × edges one fill or stroke may rasterise (about 50 ms): paths are bounded by
/// [`DisplayLimits::max_path_points`], but strokes multiply them and long edges cross every
/// row of a tall layer.
const MAX_RASTER_WORK: u64 = 1 << 24;

/// Other streams remembered at most (their indexes only).
const MAX_OTHER_STREAMS: usize = 1024;

impl Layer {
    fn new(serial: u64, surface: Surface, node: Option<Node>) -> Self {
        Self {
            serial,
            surface,
            node,
            state: DrawState::INITIAL,
            stack: Vec::new(),
            path: Path::new(),
            tainted: false,
        }
    }

    /// The clip rectangle within the layer.
    fn clip(&self) -> Rect {
        let bounds = self.surface.bounds();
        self.state
            .clip
            .map_or(bounds, |clip| clip.intersect(&bounds))
    }

    /// What a resize or `reset` does to the drawing state. (guacamole-common-js's `reset` also
    /// restores the composite operation saved when the canvas was last reallocated; the model
    /// keeps the current one, which only matters while an image streams, see `Touch`.)
    fn reset_state(&mut self) {
        self.stack.clear();
        self.state.transform = Affine::IDENTITY;
        self.state.clip = None;
        self.path.clear(false);
    }
}

/// Whether an opcode changes what the display shows (so that misreading it degrades the model).
fn draws(opcode: &str) -> bool {
    matches!(
        opcode,
        "size" | "img" | "end" | "copy" | "rect" | "cfill" | "cursor" | "mouse"
    )
}

/// Six finite numbers after the layer: a `transform` or `distort` matrix.
fn matrix(args: &Args<'_>) -> Result<Affine, DisplayError> {
    Ok(Affine([
        args.float(1)?,
        args.float(2)?,
        args.float(3)?,
        args.float(4)?,
        args.float(5)?,
        args.float(6)?,
    ]))
}
