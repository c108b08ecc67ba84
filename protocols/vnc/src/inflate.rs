//! What ZRLE and Tight share: inflating a bounded piece at a time, and what a step of a
//! rectangle gives.

use flate2::{Decompress, FlushDecompress, Status};

use crate::error::Error;
use crate::rfb::Pixels;

/// Inflated bytes produced per step.
pub(crate) const STEP: usize = 16 * 1024;

/// What a step of a rectangle gave.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Pixels (a tile, or a band of rows).
    Pixels(Pixels),
    /// More bytes from the server are needed.
    Wait,
    /// The rectangle is finished.
    Done,
}

/// Inflates up to about [`STEP`] bytes of `input` into `out`: (bytes taken, bytes made).
/// `what` names the encoding in errors.
pub(crate) fn inflate(
    zlib: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    what: &str,
) -> Result<(usize, usize), Error> {
    let (before_in, before_out) = (zlib.total_in(), zlib.total_out());
    out.reserve(STEP);
    let status = zlib
        .decompress_vec(input, out, FlushDecompress::Sync)
        .map_err(|_| Error::protocol(format!("{what} data zlib cannot inflate")))?;
    if status == Status::StreamEnd {
        return Err(Error::protocol(format!("a {what} zlib stream that ended")));
    }
    let taken = usize::try_from(zlib.total_in() - before_in).unwrap_or(0);
    let made = usize::try_from(zlib.total_out() - before_out).unwrap_or(0);
    Ok((taken, made))
}
