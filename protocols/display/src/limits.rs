//! [`DisplayLimits`]: bounds on everything the instruction stream can make the display hold.

/// Bounds on the memory and work the instruction stream can cause. Everything in the stream
/// is treated as hostile: an instruction that would exceed a limit is refused with
/// [`DisplayError::LimitExceeded`](crate::DisplayError::LimitExceeded) and the affected layer
/// (or, when no single layer is concerned, the whole display) is marked degraded.
///
/// With the defaults the display holds at most [`DEFAULT_MAX_TOTAL_PIXELS`] × 4 bytes of
/// pixels (256 MiB), plus [`DEFAULT_MAX_TOTAL_IMAGE_STREAM_BYTES`] × ¾ of buffered image data
/// (48 MiB). While one instruction is applied it may also hold a decoded image of at most
/// [`DEFAULT_MAX_IMAGE_PIXELS`] pixels (twice 64 MiB: the decoder's output and its RGBA
/// form), or a working copy of the pixels it reads when it reads and writes the same layer
/// (`transfer` within a layer, `lfill` with the layer's own pattern), at most one layer. A
/// [`Snapshot`](crate::Snapshot) that is alive while the display changes keeps the old pixels
/// of every layer changed since (copy on write), so up to twice the pixel budget while a key
/// frame is being encoded. A few bookkeeping structures are bounded by constants (1024 stream
/// indexes remembered, 64 events per open image stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayLimits {
    /// Largest width of a layer, buffer or cursor, in pixels.
    pub max_layer_width: u32,
    /// Largest height of a layer, buffer or cursor, in pixels.
    pub max_layer_height: u32,
    /// Largest number of pixels held across all layers, buffers and the cursor (4 bytes each).
    pub max_total_pixels: u64,
    /// Largest number of visible layers, the default layer included.
    pub max_layers: usize,
    /// Largest number of off-screen buffers.
    pub max_buffers: usize,
    /// Largest number of image streams open at once.
    pub max_image_streams: usize,
    /// Largest size of one image stream, in base64 characters received.
    pub max_image_stream_bytes: usize,
    /// Largest size of all open image streams together, in base64 characters received.
    pub max_total_image_stream_bytes: usize,
    /// Largest decoded image, in pixels (its width and height are also bounded by the layer
    /// limits). Checked on the image header, before anything is decoded.
    pub max_image_pixels: u64,
    /// Largest number of points in the current path of one layer (curves and arcs count the
    /// segments they are flattened into).
    pub max_path_points: usize,
    /// Deepest `push` stack of one layer.
    pub max_state_stack: usize,
}

/// Default [`DisplayLimits::max_layer_width`] and [`DisplayLimits::max_layer_height`]: the
/// largest canvas browsers reliably allocate.
pub const DEFAULT_MAX_LAYER_SIDE: u32 = 16_384;
/// Default [`DisplayLimits::max_total_pixels`]: 64 Mi pixels, 256 MiB of RGBA — eight 4K
/// screens, where an RDP session at 1920×1080 with guacd's buffers holds about 3 Mi.
pub const DEFAULT_MAX_TOTAL_PIXELS: u64 = 64 << 20;
/// Default [`DisplayLimits::max_layers`].
pub const DEFAULT_MAX_LAYERS: usize = 256;
/// Default [`DisplayLimits::max_buffers`]: guacenc's limit.
pub const DEFAULT_MAX_BUFFERS: usize = 4096;
/// Default [`DisplayLimits::max_image_streams`]: guacd's limit of streams per client.
pub const DEFAULT_MAX_IMAGE_STREAMS: usize = 64;
/// Default [`DisplayLimits::max_image_stream_bytes`]: 16 MiB of base64, a 12 MiB image.
pub const DEFAULT_MAX_IMAGE_STREAM_BYTES: usize = 16 << 20;
/// Default [`DisplayLimits::max_total_image_stream_bytes`].
pub const DEFAULT_MAX_TOTAL_IMAGE_STREAM_BYTES: usize = 64 << 20;
/// Default [`DisplayLimits::max_image_pixels`]: 16 Mi pixels (a 4K screen is 8 Mi).
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 16 << 20;
/// Default [`DisplayLimits::max_path_points`].
pub const DEFAULT_MAX_PATH_POINTS: usize = 4096;
/// Default [`DisplayLimits::max_state_stack`].
pub const DEFAULT_MAX_STATE_STACK: usize = 64;

impl Default for DisplayLimits {
    fn default() -> Self {
        Self {
            max_layer_width: DEFAULT_MAX_LAYER_SIDE,
            max_layer_height: DEFAULT_MAX_LAYER_SIDE,
            max_total_pixels: DEFAULT_MAX_TOTAL_PIXELS,
            max_layers: DEFAULT_MAX_LAYERS,
            max_buffers: DEFAULT_MAX_BUFFERS,
            max_image_streams: DEFAULT_MAX_IMAGE_STREAMS,
            max_image_stream_bytes: DEFAULT_MAX_IMAGE_STREAM_BYTES,
            max_total_image_stream_bytes: DEFAULT_MAX_TOTAL_IMAGE_STREAM_BYTES,
            max_image_pixels: DEFAULT_MAX_IMAGE_PIXELS,
            max_path_points: DEFAULT_MAX_PATH_POINTS,
            max_state_stack: DEFAULT_MAX_STATE_STACK,
        }
    }
}

impl DisplayLimits {
    /// The limits a fresh display needs to replay a key frame taken from a display with
    /// these limits: one more layer and one more buffer (the key frame uses a spare one for
    /// detached layers and for the cursor), room for the spare layer or a second copy of the
    /// cursor (twice the pixels), and image limits that admit any tile of
    /// [`TILE_SIZE`](crate::TILE_SIZE) pixels.
    pub fn for_key_frame_replay(&self) -> Self {
        let tile = u64::from(crate::TILE_SIZE) * u64::from(crate::TILE_SIZE);
        // A tile's PNG is at most its raw RGBA (a byte more per row) plus 1/8 for the
        // entropy coding of incompressible data and some framing, in base64.
        let raw = tile as usize * 4 + crate::TILE_SIZE as usize;
        let tile_stream = (raw + raw / 8 + 8192) / 3 * 4 + 4;
        Self {
            max_layers: self.max_layers.saturating_add(1),
            max_buffers: self.max_buffers.saturating_add(1),
            max_total_pixels: self.max_total_pixels.saturating_mul(2),
            max_image_streams: self.max_image_streams.max(1),
            max_image_stream_bytes: self.max_image_stream_bytes.max(tile_stream),
            max_total_image_stream_bytes: self.max_total_image_stream_bytes.max(tile_stream),
            max_image_pixels: self.max_image_pixels.max(tile),
            ..*self
        }
    }
}
