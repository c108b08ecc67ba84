//! The wire format: an incremental [`Decoder`] with [`Limits`], and the encoder ([`encode`],
//! [`InstructionWriter`]).
//!
//! An instruction is a comma-separated list of elements terminated by `;`, the first element
//! being the opcode; each element is `LENGTH.VALUE` where `LENGTH` is the decimal number of
//! Unicode scalar values (not bytes) in the UTF-8 `VALUE`:
//!
//! ```text
//! 4.size,1.0,4.1024,3.768;
//! ```
//!
//! Reference: <https://guacamole.apache.org/doc/gug/guacamole-protocol.html#design>.

use std::fmt;

use bytes::BytesMut;

use crate::error::DecodeError;
use crate::instruction::{Instruction, SpanBuilder};

/// Size limits the [`Decoder`] enforces on every instruction, so a hostile peer can make it
/// neither buffer nor allocate without bound.
///
/// The defaults are guacd's own (guacamole-server 1.5/1.6, `src/libguac/guacamole/
/// parser-constants.h` and `parser.h`), so anything guacd would accept from a client, and
/// anything it sends, passes; override a field when one side needs less:
///
/// ```
/// let mut limits = zt_guac::Limits::default();
/// limits.max_instruction_bytes = 16 * 1024;
/// let decoder = zt_guac::Decoder::new(limits);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Most elements in one instruction, opcode included. Default
    /// [`GUACD_MAX_ELEMENTS`] (128, guacd's `GUAC_INSTRUCTION_MAX_ELEMENTS`; the RDP `args`
    /// list and the matching `connect` have about 110).
    pub max_elements: usize,
    /// Longest element, in Unicode scalar values, checked against the declared length before
    /// the value is read. Default [`GUACD_MAX_ELEMENT_CHARS`] (8192, guacd's
    /// `GUAC_INSTRUCTION_MAX_LENGTH`, which guacd applies per element; its largest `blob` is
    /// 8064 base64 characters).
    pub max_element_chars: usize,
    /// Longest instruction in bytes, terminating `;` included; also the most the decoder
    /// holds of an incomplete instruction. Default [`GUACD_MAX_INSTRUCTION_BYTES`] (32768,
    /// the size of guacd's instruction buffer, `guac_parser.__instructionbuf`). Values above
    /// `u32::MAX - 1` are treated as `u32::MAX - 1`.
    pub max_instruction_bytes: usize,
}

impl Limits {
    /// Checks an instruction against these limits, with the error the decoder would report.
    /// For instructions this side builds before sending them to a peer that enforces limits.
    pub fn check(&self, instruction: &Instruction) -> Result<(), DecodeError> {
        if instruction.elements().len() > self.max_elements {
            return Err(DecodeError::TooManyElements);
        }
        if instruction
            .elements()
            .any(|element| count_chars(element.as_bytes()) > self.max_element_chars)
        {
            return Err(DecodeError::ElementTooLong);
        }
        if instruction.len() > self.max_instruction_bytes {
            return Err(DecodeError::InstructionTooLong);
        }
        Ok(())
    }

    fn instruction_cap(&self) -> usize {
        self.max_instruction_bytes.min(MAX_INSTRUCTION_BYTES_CAP)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_elements: GUACD_MAX_ELEMENTS,
            max_element_chars: GUACD_MAX_ELEMENT_CHARS,
            max_instruction_bytes: GUACD_MAX_INSTRUCTION_BYTES,
        }
    }
}

/// Incremental decoder for the Guacamole text protocol.
///
/// Feed bytes as they arrive with [`Decoder::feed`], then call
/// [`Decoder::poll_instruction`] until it returns `Ok(None)`. An instruction may be split
/// across any number of feeds (inside a length prefix or a multi-byte character, too) and one
/// feed may hold many instructions. Element lengths count Unicode scalar values, not bytes.
///
/// The decoder performs no I/O and keeps its scan position between calls, so every byte is
/// examined once however the stream is split. After `poll_instruction` returns `Ok(None)` it
/// holds less than [`Limits::max_instruction_bytes`] of the incomplete instruction; a single
/// `feed` adds its own length on top until the next poll, so a driver bounds memory by
/// bounding its read size.
///
/// Any [`DecodeError`] is final: the stream has no resynchronisation point, so the decoder
/// drops its buffer, ignores further input and returns the same error from every later call.
///
/// `Debug` shows sizes and state, never buffered bytes (they may hold credentials).
pub struct Decoder {
    /// Unconsumed input; always starts at the first byte of the current instruction.
    buf: BytesMut,
    limits: Limits,
    /// How far into `buf` the current instruction has been scanned.
    pos: usize,
    /// How many bytes at the start of `buf` are known to be ASCII (found with one vectorised
    /// pass over each fed byte, so the fast path needs no per-element check).
    ascii: usize,
    state: State,
    /// Elements of the current instruction completed so far (at most
    /// `limits.max_elements`; the allocation is reused).
    spans: SpanBuilder,
    error: Option<DecodeError>,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: BytesMut::new(),
            limits,
            pos: 0,
            ascii: 0,
            state: State::ElementStart,
            spans: SpanBuilder::new(),
            error: None,
        }
    }

    /// Appends bytes received from the peer. Ignored once the decoder has failed.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Room for at least `additional` more input bytes, to read into straight from a socket
    /// (`read_buf`) instead of reading into a buffer of one's own and [`Self::feed`]ing it:
    /// one copy fewer per byte. Only appending is possible through it. After an error the
    /// input is discarded, as [`Self::feed`] discards it.
    pub fn read_buffer(&mut self, additional: usize) -> &mut impl bytes::BufMut {
        if self.error.is_some() {
            self.buf.clear();
        }
        self.buf.reserve(additional);
        &mut self.buf
    }

    /// Returns the next complete instruction, `Ok(None)` if more bytes are needed, or the
    /// error that ended the stream (the same one on every later call).
    pub fn poll_instruction(&mut self) -> Result<Option<Instruction>, DecodeError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        match self.scan() {
            Ok(Some(len)) => {
                let raw = self.buf.split_to(len).freeze();
                let spans = self.spans.take();
                self.pos = 0;
                self.ascii = self.ascii.saturating_sub(len);
                self.state = State::ElementStart;
                Ok(Some(Instruction::from_parts(raw, spans)))
            }
            Ok(None) => Ok(None),
            Err(error) => {
                self.error = Some(error);
                self.buf = BytesMut::new();
                self.spans = SpanBuilder::new();
                self.pos = 0;
                self.ascii = 0;
                Err(error)
            }
        }
    }

    /// Hands every whole instruction fed so far to `each`, as a native engine reads its
    /// client: false once the client said `disconnect` (not handed on) or sent something
    /// undecodable, true when more bytes are needed.
    pub fn drain_until_disconnect(&mut self, mut each: impl FnMut(&Instruction)) -> bool {
        loop {
            match self.poll_instruction() {
                Ok(Some(instruction)) if instruction.is(crate::opcode::DISCONNECT) => return false,
                Ok(Some(instruction)) => each(&instruction),
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Bytes fed but not yet returned as instructions.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the decoder holds no partial instruction: the stream ends cleanly here.
    pub fn is_at_boundary(&self) -> bool {
        self.buf.is_empty() && self.error.is_none()
    }

    /// The error that ended the stream, if any.
    pub fn error(&self) -> Option<DecodeError> {
        self.error
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Gives up decoding and returns the bytes fed but not yet returned as instructions
    /// (starting at an instruction boundary), for a caller that switches to relaying the
    /// stream without inspecting it.
    pub fn into_buffered(self) -> BytesMut {
        self.buf
    }

    /// Advances the scan of the current instruction as far as the buffered bytes allow.
    /// Returns its length once its `;` is found.
    fn scan(&mut self) -> Result<Option<usize>, DecodeError> {
        let limits = self.limits;
        let max = limits.instruction_cap();
        // Never look past the longest allowed instruction.
        let window = self.buf.get(..self.buf.len().min(max)).unwrap_or_default();
        let mut pos = self.pos;
        let mut state = self.state;
        if let State::ElementStart = state {
            // Fast path for the common case, whole elements in the ASCII part of the buffer;
            // anything else (an element cut by the end of the buffer, a multi-byte character,
            // any error) stops it at the start of that element, and the general state
            // machine below decides.
            if self.ascii < window.len() {
                self.ascii += ascii_prefix_len(window.get(self.ascii..).unwrap_or_default());
            }
            let ascii = window.get(..self.ascii).unwrap_or_default();
            while let Some((start, end, separator)) =
                fast_element(ascii, pos, limits.max_element_chars)
            {
                if self.spans.len() >= limits.max_elements {
                    break;
                }
                self.spans.push(start, end);
                pos = end + 1;
                if separator == b';' {
                    return Ok(Some(pos));
                }
            }
        }
        'scan: loop {
            match state {
                State::ElementStart => {
                    let Some(&byte) = window.get(pos) else {
                        break 'scan;
                    };
                    if self.spans.len() >= limits.max_elements {
                        return Err(DecodeError::TooManyElements);
                    }
                    let digit = byte.wrapping_sub(b'0');
                    if digit > 9 {
                        return Err(match byte {
                            b';' if self.spans.is_empty() => DecodeError::EmptyInstruction,
                            b'.' => DecodeError::EmptyLength,
                            _ => DecodeError::NonDigitLength,
                        });
                    }
                    let value = usize::from(digit);
                    if value > limits.max_element_chars {
                        return Err(DecodeError::ElementTooLong);
                    }
                    pos += 1;
                    state = State::Length { value };
                }
                State::Length { mut value } => loop {
                    let Some(&byte) = window.get(pos) else {
                        state = State::Length { value };
                        break 'scan;
                    };
                    pos += 1;
                    let digit = byte.wrapping_sub(b'0');
                    if digit <= 9 {
                        value = value
                            .checked_mul(10)
                            .and_then(|v| v.checked_add(usize::from(digit)))
                            .ok_or(DecodeError::LengthOverflow)?;
                        if value > limits.max_element_chars {
                            return Err(DecodeError::ElementTooLong);
                        }
                    } else if byte == b'.' {
                        // The value needs at least one byte per character, then a separator.
                        if pos.saturating_add(value).saturating_add(1) > max {
                            return Err(DecodeError::InstructionTooLong);
                        }
                        state = State::Value {
                            start: pos,
                            remaining: value,
                        };
                        break;
                    } else {
                        return Err(DecodeError::MissingDot);
                    }
                },
                State::Value {
                    start,
                    mut remaining,
                } => {
                    if remaining > 0 {
                        (pos, remaining) = skip_chars(window, pos, remaining)?;
                        if remaining > 0 {
                            state = State::Value { start, remaining };
                            break 'scan;
                        }
                    }
                    let Some(&byte) = window.get(pos) else {
                        state = State::Value {
                            start,
                            remaining: 0,
                        };
                        break 'scan;
                    };
                    // Offsets fit in a `u32`: `max` is below `u32::MAX`.
                    self.spans.push(start, pos);
                    pos += 1;
                    match byte {
                        b',' => state = State::ElementStart,
                        b';' => return Ok(Some(pos)),
                        _ => return Err(DecodeError::BadSeparator),
                    }
                }
            }
        }
        // Out of bytes before the `;`.
        if self.buf.len() >= max {
            return Err(DecodeError::InstructionTooLong);
        }
        self.pos = pos;
        self.state = state;
        Ok(None)
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("buffered", &self.buf.len())
            .field("scanned", &self.pos)
            .field("elements", &self.spans.len())
            .field("limits", &self.limits)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Default for Decoder {
    /// A decoder with [`Limits::default`].
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// Parses the element at `pos` if it is complete in `ascii` (ASCII bytes) with its separator
/// and its length prefix has at most 8 digits within `max_chars`. Returns the value's start
/// and end (the separator's position) and the separator; `None` leaves the element to the
/// general path.
#[inline]
fn fast_element(ascii: &[u8], pos: usize, max_chars: usize) -> Option<(usize, usize, u8)> {
    let rest = ascii.get(pos..)?;
    let mut value = 0usize;
    let mut digits = 0;
    loop {
        let digit = rest.get(digits)?.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        value = value * 10 + usize::from(digit);
        digits += 1;
        if digits > 8 {
            return None;
        }
    }
    if digits == 0 || rest.get(digits) != Some(&b'.') || value > max_chars {
        return None;
    }
    let start = pos + digits + 1;
    let end = start + value;
    match *ascii.get(end)? {
        separator @ (b',' | b';') => Some((start, end, separator)),
        _ => None,
    }
}

/// Length of the ASCII prefix of `bytes`.
fn ascii_prefix_len(bytes: &[u8]) -> usize {
    let mut len = 0;
    for chunk in bytes.chunks(ASCII_CHUNK) {
        if chunk.is_ascii() {
            len += chunk.len();
        } else {
            return len + chunk.iter().take_while(|b| b.is_ascii()).count();
        }
    }
    len
}

/// Where the decoder is inside the current instruction.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Expecting the first digit of an element's length prefix.
    ElementStart,
    /// Inside a length prefix; `value` is the length so far.
    Length { value: usize },
    /// Inside an element value that starts at byte `start`, with `remaining` characters to
    /// go; at `remaining == 0`, expecting `,` or `;`.
    Value { start: usize, remaining: usize },
}

/// Appends the wire form of the instruction `opcode` with `args` to `out`, counting lengths
/// in Unicode scalar values.
///
/// ```
/// let mut out = bytes::BytesMut::new();
/// zt_guac::encode("size", &["0", "1024", "768"], &mut out);
/// assert_eq!(&out[..], b"4.size,1.0,4.1024,3.768;");
/// ```
pub fn encode<A: AsRef<str>>(opcode: &str, args: &[A], out: &mut BytesMut) {
    let mut writer = InstructionWriter::new(out, opcode);
    for arg in args {
        writer.arg(arg.as_ref());
    }
    writer.finish();
}

/// Writes one instruction argument by argument, formatting numbers without allocating.
///
/// ```
/// let mut out = bytes::BytesMut::new();
/// let mut w = zt_guac::InstructionWriter::new(&mut out, "mouse");
/// w.arg_i64(512).arg_i64(-3).arg_u64(1);
/// w.finish();
/// assert_eq!(&out[..], b"5.mouse,3.512,2.-3,1.1;");
/// ```
///
/// Short elements are assembled on the stack and appended to `out` in one copy; the
/// instruction is complete only after [`finish`](Self::finish) (without it, `out` holds
/// nothing or a prefix of the instruction).
#[must_use = "the instruction is incomplete until `finish` is called"]
pub struct InstructionWriter<'a> {
    out: &'a mut BytesMut,
    scratch: [u8; SCRATCH],
    len: usize,
}

impl<'a> InstructionWriter<'a> {
    /// Starts an instruction with `opcode` at the end of `out`.
    #[inline]
    pub fn new(out: &'a mut BytesMut, opcode: &str) -> Self {
        let mut writer = Self {
            out,
            scratch: [0; SCRATCH],
            len: 0,
        };
        writer.element(None, opcode);
        writer
    }

    /// Appends a text argument.
    #[inline]
    pub fn arg(&mut self, value: &str) -> &mut Self {
        self.element(Some(b','), value);
        self
    }

    /// Appends an unsigned integer argument in decimal.
    #[inline]
    pub fn arg_u64(&mut self, value: u64) -> &mut Self {
        self.number(false, value);
        self
    }

    /// Appends a signed integer argument in decimal.
    #[inline]
    pub fn arg_i64(&mut self, value: i64) -> &mut Self {
        self.number(value < 0, value.unsigned_abs());
        self
    }

    /// Appends a number argument in the shortest decimal form that parses back to the same
    /// `f64`. Non-finite values are written as Rust formats them (`NaN`, `inf`), which
    /// [`TypedInstruction::parse`](crate::TypedInstruction::parse) rejects.
    pub fn arg_f64(&mut self, value: f64) -> &mut Self {
        self.arg(&value.to_string())
    }

    /// Terminates the instruction with `;` and appends whatever is still on the stack.
    #[inline]
    pub fn finish(mut self) {
        self.put_byte(b';');
        self.flush();
    }

    /// `,LEN.VALUE` for text (`LEN.VALUE` for the opcode).
    fn element(&mut self, separator: Option<u8>, value: &str) {
        let chars = if value.is_ascii() {
            value.len()
        } else {
            value.chars().count()
        };
        // Separator, at most 20 digits, `.`.
        if self.len + 22 + value.len() > SCRATCH {
            self.flush();
        }
        if let Some(separator) = separator {
            self.put_byte(separator);
        }
        self.put_decimal(chars as u64);
        self.put_byte(b'.');
        let end = self.len + value.len();
        match self.scratch.get_mut(self.len..end) {
            Some(dest) => {
                dest.copy_from_slice(value.as_bytes());
                self.len = end;
            }
            None => {
                self.flush();
                self.out.extend_from_slice(value.as_bytes());
            }
        }
    }

    /// `,LEN.DIGITS` for a number, formatted in place (one byte per character).
    fn number(&mut self, negative: bool, magnitude: u64) {
        let chars = decimal_len(magnitude) + usize::from(negative);
        // `,`, 2 length digits, `.`, sign, 20 digits.
        if self.len + 25 > SCRATCH {
            self.flush();
        }
        self.put_byte(b',');
        self.put_decimal(chars as u64);
        self.put_byte(b'.');
        if negative {
            self.put_byte(b'-');
        }
        self.put_decimal(magnitude);
    }

    /// Writes one byte; callers make room first (a full buffer drops nothing: it is
    /// flushed).
    #[inline]
    fn put_byte(&mut self, byte: u8) {
        if self.len >= SCRATCH {
            self.flush();
        }
        if let Some(slot) = self.scratch.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    /// Writes `value` in decimal; callers make room for 20 digits first.
    #[inline]
    fn put_decimal(&mut self, mut value: u64) {
        let digits = decimal_len(value);
        if self.len + digits > SCRATCH {
            self.flush();
        }
        let end = self.len + digits;
        if let Some(dest) = self.scratch.get_mut(self.len..end) {
            for slot in dest.iter_mut().rev() {
                *slot = b'0' + (value % 10) as u8;
                value /= 10;
            }
            self.len = end;
        }
    }

    fn flush(&mut self) {
        self.out
            .extend_from_slice(self.scratch.get(..self.len).unwrap_or_default());
        self.len = 0;
    }
}

impl fmt::Debug for InstructionWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the bytes: they may be credentials.
        f.debug_struct("InstructionWriter")
            .field("pending", &self.len)
            .finish_non_exhaustive()
    }
}

/// Number of decimal digits of `value`.
#[inline]
fn decimal_len(value: u64) -> usize {
    let mut digits = 1;
    let mut rest = value;
    while rest >= 10 {
        rest /= 10;
        digits += 1;
    }
    digits
}

/// Skips up to `remaining` characters of `window` from `pos`, validating UTF-8. Returns the
/// new position and how many characters are still to come (non-zero when `window` ends
/// first, possibly in the middle of a character, which is then left for the next call).
fn skip_chars(
    window: &[u8],
    mut pos: usize,
    mut remaining: usize,
) -> Result<(usize, usize), DecodeError> {
    while remaining > 0 {
        let rest = window.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            break;
        }
        // `remaining` characters take at least `remaining` bytes, so the next `take` bytes
        // all belong to this value (the last character may continue beyond them).
        let take = remaining.min(rest.len());
        let chunk = rest.get(..take).unwrap_or_default();
        if chunk.is_ascii() {
            pos += take;
            remaining -= take;
            continue;
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => {
                pos += take;
                remaining -= count_chars(chunk);
            }
            Err(error) => {
                let valid = error.valid_up_to();
                remaining -= count_chars(chunk.get(..valid).unwrap_or_default());
                pos += valid;
                if error.error_len().is_some() {
                    return Err(DecodeError::InvalidUtf8);
                }
                // `chunk` ends inside a character starting at `pos`: take it whole if it is
                // all here, otherwise wait for the rest.
                let width = rest
                    .get(valid)
                    .and_then(|&b| utf8_width(b))
                    .ok_or(DecodeError::InvalidUtf8)?;
                let Some(character) = window.get(pos..pos + width) else {
                    // Incomplete, but what is here may already be invalid: say so now, not
                    // only once the rest arrives (the outcome must not depend on the split).
                    let partial = window.get(pos..).unwrap_or_default();
                    if let Err(error) = std::str::from_utf8(partial)
                        && error.error_len().is_some()
                    {
                        return Err(DecodeError::InvalidUtf8);
                    }
                    break;
                };
                if std::str::from_utf8(character).is_err() {
                    return Err(DecodeError::InvalidUtf8);
                }
                pos += width;
                remaining -= 1;
            }
        }
    }
    Ok((pos, remaining))
}

/// Number of characters in valid UTF-8: the bytes that are not continuation bytes.
pub(crate) fn count_chars(utf8: &[u8]) -> usize {
    utf8.iter().filter(|&&b| (b as i8) >= -0x40).count()
}

/// Length of the UTF-8 sequence a leading byte starts, `None` for bytes that cannot start one.
pub(crate) fn utf8_width(byte: u8) -> Option<usize> {
    match byte {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

/// guacd's `GUAC_INSTRUCTION_MAX_ELEMENTS` (guacamole-server 1.5+; 64 before).
pub const GUACD_MAX_ELEMENTS: usize = 128;

/// guacd's `GUAC_INSTRUCTION_MAX_LENGTH`, which its parser applies to each element's
/// declared length.
pub const GUACD_MAX_ELEMENT_CHARS: usize = 8192;

/// The size of guacd's instruction buffer (`char __instructionbuf[32768]` in
/// `guacamole/parser.h`): guacd fails with "Instruction too long" beyond it.
pub const GUACD_MAX_INSTRUCTION_BYTES: usize = 32768;

/// Bytes [`InstructionWriter`] assembles on the stack before appending them to its output.
const SCRATCH: usize = 128;

/// Bytes checked at once by [`ascii_prefix_len`]: large enough for the vectorised check to
/// run at full speed, small enough not to re-check much after a multi-byte character.
const ASCII_CHUNK: usize = 512;

/// Element offsets are stored as `u32`; one more byte is needed past the `;`.
const MAX_INSTRUCTION_BYTES_CAP: usize = u32::MAX as usize - 1;

#[cfg(test)]
mod tests;
