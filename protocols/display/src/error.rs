//! [`DisplayError`]: why the display could not apply one instruction.
//!
//! No variant carries text or bytes from the wire, so errors can be logged and used as metric
//! labels as they are.

use std::fmt;

use zt_guac::{ArgumentError, ParseError};

/// Why [`Display::handle`](crate::Display::handle) could not apply one instruction exactly.
///
/// The server (guacd, or whatever speaks for the target) is at fault in every case. An error
/// concerns one instruction: the display stays usable and later instructions are applied.
/// Whether the error cost the display its ability to produce correct key frames is reported
/// separately by [`Display::is_degraded`](crate::Display::is_degraded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DisplayError {
    /// An argument is missing, malformed, or out of the range clients handle (a negative
    /// size or radius, a colour component above 255, …).
    #[error("malformed `{opcode}` instruction: argument {index} {reason}")]
    BadArgument {
        /// The opcode (one this crate knows, never text from the wire).
        opcode: &'static str,
        /// Zero-based index of the offending argument.
        index: usize,
        /// What is wrong with it.
        reason: ArgumentError,
    },

    /// Applying the instruction would exceed one of the [`DisplayLimits`](crate::DisplayLimits).
    #[error("{0} limit exceeded")]
    LimitExceeded(Limit),

    /// A `blob` of an image stream is not valid base64.
    #[error("image stream data is not valid base64")]
    BadBase64,

    /// An image stream has a mimetype other than PNG, JPEG and WebP.
    #[error("unsupported image mimetype")]
    UnsupportedImageType,

    /// An image stream ended with data that is not a decodable image of its type.
    #[error("image could not be decoded")]
    BadImage,

    /// The instruction is valid but the model cannot reproduce what clients do with it.
    #[error("unsupported display operation: {0}")]
    Unsupported(Unsupported),
}

impl From<ParseError> for DisplayError {
    fn from(error: ParseError) -> Self {
        Self::BadArgument {
            opcode: error.opcode,
            index: error.index,
            reason: error.reason,
        }
    }
}

/// Which of the [`DisplayLimits`](crate::DisplayLimits) an instruction would have exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`DisplayLimits::max_layer_width`](crate::DisplayLimits::max_layer_width) or
    /// [`max_layer_height`](crate::DisplayLimits::max_layer_height).
    LayerSize,
    /// [`DisplayLimits::max_total_pixels`](crate::DisplayLimits::max_total_pixels).
    TotalPixels,
    /// [`DisplayLimits::max_layers`](crate::DisplayLimits::max_layers).
    Layers,
    /// [`DisplayLimits::max_buffers`](crate::DisplayLimits::max_buffers).
    Buffers,
    /// [`DisplayLimits::max_image_streams`](crate::DisplayLimits::max_image_streams).
    ImageStreams,
    /// [`DisplayLimits::max_image_stream_bytes`](crate::DisplayLimits::max_image_stream_bytes).
    ImageStreamBytes,
    /// [`DisplayLimits::max_total_image_stream_bytes`](crate::DisplayLimits::max_total_image_stream_bytes).
    TotalImageStreamBytes,
    /// [`DisplayLimits::max_image_pixels`](crate::DisplayLimits::max_image_pixels) or the
    /// layer dimensions, checked on the image header before decoding.
    ImageSize,
    /// [`DisplayLimits::max_path_points`](crate::DisplayLimits::max_path_points), or a fill or
    /// stroke whose rasterisation would cross more than 16 Mi edge-rows.
    PathPoints,
    /// [`DisplayLimits::max_state_stack`](crate::DisplayLimits::max_state_stack).
    StateStack,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LayerSize => "layer size",
            Self::TotalPixels => "total pixels",
            Self::Layers => "layer count",
            Self::Buffers => "buffer count",
            Self::ImageStreams => "open image streams",
            Self::ImageStreamBytes => "image stream size",
            Self::TotalImageStreamBytes => "total image stream size",
            Self::ImageSize => "image size",
            Self::PathPoints => "path size",
            Self::StateStack => "state stack depth",
        })
    }
}

/// A valid instruction whose effect on a real client the model cannot reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unsupported {
    /// `nest` (a deprecated way to interleave instructions that guacd no longer sends).
    Nest,
    /// `lstroke`: guacamole-common-js passes its arguments wrongly and throws.
    LayerStroke,
    /// A `lfill` whose pattern layer has no pixels: browsers throw.
    EmptyPattern,
    /// A `move` that would make a layer its own ancestor: browsers throw.
    LayerCycle,
    /// A `transfer` with a function outside 0–15: guacamole-common-js throws.
    TransferFunction,
    /// A negative `arc` radius: browsers throw.
    NegativeRadius,
    /// A negative width or height in `copy`, `transfer` or `cursor`, which browsers handle
    /// in ways that differ from each other.
    NegativeSize,
    /// An image or layer copy drawn while the layer has a transform other than an integer
    /// translation.
    TransformedImage,
    /// An image stream was replaced by another stream on the same index before its `end`:
    /// clients either drop the image or stop rendering altogether.
    AbandonedImageStream,
    /// An instruction touched an image's layer between the image's `img` and `end`, so
    /// clients that draw at `img` (Chromium) and at `end` (Firefox, guacenc) disagree.
    AmbiguousImageOrder,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nest => "nested instruction stream",
            Self::LayerStroke => "layer stroke",
            Self::EmptyPattern => "pattern from an empty layer",
            Self::LayerCycle => "layer made its own ancestor",
            Self::TransferFunction => "unknown transfer function",
            Self::NegativeRadius => "negative arc radius",
            Self::NegativeSize => "negative width or height",
            Self::TransformedImage => "image drawn under a transform",
            Self::AbandonedImageStream => "image stream replaced before its end",
            Self::AmbiguousImageOrder => "layer changed while an image was streaming",
        })
    }
}
