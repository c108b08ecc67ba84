//! Image stream data: base64 blobs and PNG, JPEG and WebP decoding, bounded.

use std::io::Cursor;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::error::{DisplayError, Limit};
use crate::surface::{Pixel, canonical};

/// The image formats clients decode from `img` streams that the model decodes too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageType {
    Png,
    Jpeg,
    Webp,
}

impl ImageType {
    /// The type of an `img` mimetype, `None` for any other (browsers may draw GIF, BMP, …;
    /// guacd sends only these three).
    pub(crate) fn from_mimetype(mimetype: &str) -> Option<Self> {
        match mimetype {
            "image/png" => Some(Self::Png),
            "image/jpeg" => Some(Self::Jpeg),
            "image/webp" => Some(Self::Webp),
            _ => None,
        }
    }
}

/// A decoded image: straight RGBA, canonical, row after row.
#[derive(Debug)]
pub(crate) struct Image {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) pixels: Vec<Pixel>,
    /// Whether a browser decodes the same pixels: true for PNG and lossless WebP; JPEG and
    /// lossy WebP decoders differ in rounding (IDCT, chroma upsampling).
    pub(crate) exact: bool,
}

/// Bounds on one decoded image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImageLimits {
    pub(crate) max_width: u32,
    pub(crate) max_height: u32,
    pub(crate) max_pixels: u64,
}

impl ImageLimits {
    fn check(&self, width: u64, height: u64) -> Result<(), DisplayError> {
        if width > u64::from(self.max_width)
            || height > u64::from(self.max_height)
            || width * height > self.max_pixels
        {
            return Err(DisplayError::LimitExceeded(Limit::ImageSize));
        }
        Ok(())
    }

    /// Bytes the decoders may allocate beyond the output (PNG row buffers, JPEG planes):
    /// the RGBA output size again, plus some slack for tiny images.
    fn working_bytes(&self, width: u64, height: u64) -> usize {
        usize::try_from(width * height * 8 + (1 << 20)).unwrap_or(usize::MAX)
    }
}

/// base64 as browsers' `atob` accepts it from guacd: the standard alphabet, padding optional,
/// stray bits in the last character ignored.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Appends the bytes of one `blob` (each blob is base64 on its own) to `out`.
pub(crate) fn append_base64(data: &str, out: &mut Vec<u8>) -> Result<(), DisplayError> {
    BASE64
        .decode_vec(data, out)
        .map_err(|_| DisplayError::BadBase64)
}

/// Decodes a complete image, checking its dimensions before decoding anything.
pub(crate) fn decode(
    kind: ImageType,
    data: &[u8],
    limits: &ImageLimits,
) -> Result<Image, DisplayError> {
    let image = match kind {
        ImageType::Png => decode_png(data, limits),
        ImageType::Jpeg => decode_jpeg(data, limits),
        ImageType::Webp => decode_webp(data, limits),
    }?;
    Ok(image)
}

fn decode_png(data: &[u8], limits: &ImageLimits) -> Result<Image, DisplayError> {
    let mut decoder = png::Decoder::new(Cursor::new(data));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    decoder.set_ignore_text_chunk(true);
    decoder.set_ignore_iccp_chunk(true);
    let header = decoder
        .read_header_info()
        .map_err(|_| DisplayError::BadImage)?;
    let (width, height) = (header.width, header.height);
    limits.check(width.into(), height.into())?;
    decoder.set_limits(png::Limits {
        bytes: limits.working_bytes(width.into(), height.into()),
    });
    let mut reader = decoder.read_info().map_err(|_| DisplayError::BadImage)?;
    let size = reader.output_buffer_size().ok_or(DisplayError::BadImage)?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|_| DisplayError::BadImage)?;
    let data = buf
        .get(..info.buffer_size())
        .ok_or(DisplayError::BadImage)?;
    let pixels = match info.color_type {
        png::ColorType::Rgba => data
            .as_chunks::<4>()
            .0
            .iter()
            .map(|&p| canonical(p))
            .collect(),
        png::ColorType::Rgb => data
            .as_chunks::<3>()
            .0
            .iter()
            .map(|&[r, g, b]| [r, g, b, 255])
            .collect(),
        png::ColorType::GrayscaleAlpha => data
            .as_chunks::<2>()
            .0
            .iter()
            .map(|&[v, a]| canonical([v, v, v, a]))
            .collect(),
        png::ColorType::Grayscale => data.iter().map(|&v| [v, v, v, 255]).collect(),
        png::ColorType::Indexed => return Err(DisplayError::BadImage),
    };
    finish(info.width, info.height, pixels, true)
}

fn decode_jpeg(data: &[u8], limits: &ImageLimits) -> Result<Image, DisplayError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;

    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGBA)
        .set_max_width(limits.max_width as usize)
        .set_max_height(limits.max_height as usize);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(data), options);
    decoder
        .decode_headers()
        .map_err(|_| DisplayError::BadImage)?;
    let info = decoder.info().ok_or(DisplayError::BadImage)?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    limits.check(width.into(), height.into())?;
    let size = decoder.output_buffer_size().ok_or(DisplayError::BadImage)?;
    let mut buf = vec![0; size];
    decoder
        .decode_into(&mut buf)
        .map_err(|_| DisplayError::BadImage)?;
    let pixels = buf
        .as_chunks::<4>()
        .0
        .iter()
        .map(|&[r, g, b, _]| [r, g, b, 255])
        .collect();
    finish(width, height, pixels, false)
}

fn decode_webp(data: &[u8], limits: &ImageLimits) -> Result<Image, DisplayError> {
    let mut decoder =
        image_webp::WebPDecoder::new(Cursor::new(data)).map_err(|_| DisplayError::BadImage)?;
    let (width, height) = decoder.dimensions();
    limits.check(width.into(), height.into())?;
    decoder.set_memory_limit(limits.working_bytes(width.into(), height.into()));
    let exact = !decoder.is_lossy();
    let size = decoder.output_buffer_size().ok_or(DisplayError::BadImage)?;
    let mut buf = vec![0; size];
    decoder
        .read_image(&mut buf)
        .map_err(|_| DisplayError::BadImage)?;
    let pixels = if decoder.has_alpha() {
        buf.as_chunks::<4>()
            .0
            .iter()
            .map(|&p| canonical(p))
            .collect()
    } else {
        buf.as_chunks::<3>()
            .0
            .iter()
            .map(|&[r, g, b]| [r, g, b, 255])
            .collect()
    };
    finish(width, height, pixels, exact)
}

fn finish(width: u32, height: u32, pixels: Vec<Pixel>, exact: bool) -> Result<Image, DisplayError> {
    if pixels.len() as u64 != u64::from(width) * u64::from(height) {
        return Err(DisplayError::BadImage);
    }
    Ok(Image {
        width,
        height,
        pixels,
        exact,
    })
}
