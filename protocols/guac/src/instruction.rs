//! [`Instruction`]: one decoded instruction, as its exact wire bytes plus element offsets.

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::codec;

/// One complete Guacamole instruction: its exact bytes on the wire (`LEN.VALUE,…;`) and the
/// position of each element inside them.
///
/// Produced by the [`Decoder`](crate::Decoder) without copying (the raw form is a slice of the
/// decoder's buffer sharing its allocation) or by [`Instruction::new`] /
/// [`TypedInstruction::to_instruction`](crate::TypedInstruction::to_instruction).
///
/// * [`raw`](Self::raw) / [`into_raw`](Self::into_raw) give the wire bytes, to forward the
///   instruction untouched;
/// * [`opcode`](Self::opcode), [`arg`](Self::arg) and [`args`](Self::args) give the elements
///   as `&str` without parsing the framing again (the element text is UTF-8 checked once more
///   on access, because this crate has no `unsafe`; that is a few nanoseconds for the short
///   elements one inspects, and about 25 µs per MB of base64 blob data — see `BENCH.md`);
/// * [`TypedInstruction::parse`](crate::TypedInstruction::parse) turns it into a typed value.
///
/// Two instructions are equal when their wire bytes are equal. `Debug` prints the opcode and
/// the number of arguments but never argument values, which may hold credentials, keystrokes
/// or clipboard contents.
#[derive(Clone)]
pub struct Instruction {
    raw: Bytes,
    spans: Spans,
}

impl Instruction {
    /// Encodes `opcode` and `args` into a new instruction (lengths counted in Unicode scalar
    /// values). Limits are not checked: see [`Limits::check`](crate::Limits::check) before
    /// sending to a peer that enforces them.
    pub fn new<A: AsRef<str>>(opcode: &str, args: &[A]) -> Self {
        let mut out = BytesMut::new();
        codec::encode(opcode, args, &mut out);
        Self::from_encoded(out.freeze())
    }

    /// Builds the element table of bytes this crate has just encoded (so well-formed).
    pub(crate) fn from_encoded(raw: Bytes) -> Self {
        let mut spans = SpanBuilder::new();
        let mut pos = 0;
        while let Some((start, end)) = encoded_element_at(&raw, pos) {
            spans.push(start, end);
            pos = end + 1;
        }
        Self {
            spans: spans.take(),
            raw,
        }
    }

    pub(crate) fn from_parts(raw: Bytes, spans: Spans) -> Self {
        Self { raw, spans }
    }

    /// The exact bytes of the instruction, terminating `;` included.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The same instruction in an allocation of its own. A decoded instruction shares the
    /// decoder's read buffer; one kept for long would pin all of that buffer.
    pub fn detached(&self) -> Self {
        Self {
            raw: Bytes::copy_from_slice(&self.raw),
            spans: self.spans.clone(),
        }
    }

    /// The exact bytes of the instruction, for forwarding without a copy.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// Length of the wire form in bytes.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Always `false`: an instruction has at least an opcode and a `;`. Present for the
    /// `len_without_is_empty` convention.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The opcode (first element). May be empty: the Guacamole tunnels use the empty opcode
    /// for their internal instructions (`0.,4.ping,…;`).
    pub fn opcode(&self) -> &str {
        self.element(0).unwrap_or_default()
    }

    /// Whether the opcode is `opcode`, comparing bytes (no UTF-8 check): the cheapest test
    /// for the hot path.
    pub fn is(&self, opcode: &str) -> bool {
        self.element_bytes(0) == Some(opcode.as_bytes())
    }

    /// Number of arguments (elements after the opcode).
    pub fn arg_count(&self) -> usize {
        self.spans.len().saturating_sub(1)
    }

    /// Argument `index` (zero-based, the opcode not counted).
    pub fn arg(&self, index: usize) -> Option<&str> {
        self.element(index.checked_add(1)?)
    }

    /// Argument `index` as bytes, without the UTF-8 check of [`arg`](Self::arg).
    pub fn arg_bytes(&self, index: usize) -> Option<&[u8]> {
        self.element_bytes(index.checked_add(1)?)
    }

    /// The arguments in order.
    pub fn args(&self) -> Elements<'_> {
        Elements {
            instruction: self,
            next: 1,
        }
    }

    /// All elements, opcode first.
    pub fn elements(&self) -> Elements<'_> {
        Elements {
            instruction: self,
            next: 0,
        }
    }

    fn element(&self, index: usize) -> Option<&str> {
        // The decoder and the encoder only produce valid UTF-8, so this cannot fail; it is
        // repeated because `from_utf8_unchecked` would need `unsafe`.
        std::str::from_utf8(self.element_bytes(index)?).ok()
    }

    fn element_bytes(&self, index: usize) -> Option<&[u8]> {
        let (start, end) = self.spans.get(index)?;
        self.raw.get(start..end)
    }
}

impl PartialEq for Instruction {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for Instruction {}

impl fmt::Debug for Instruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opcode = self.opcode();
        let mut d = f.debug_struct("Instruction");
        if opcode.len() <= 16 && opcode.bytes().all(|b| b.is_ascii_graphic()) {
            d.field("opcode", &opcode);
        } else {
            d.field("opcode_len", &opcode.len());
        }
        d.field("args", &self.arg_count())
            .field("len", &self.raw.len())
            .finish()
    }
}

/// Iterator over the elements of an [`Instruction`], from [`Instruction::args`] or
/// [`Instruction::elements`].
#[derive(Debug, Clone)]
pub struct Elements<'a> {
    instruction: &'a Instruction,
    next: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let element = self.instruction.element(self.next)?;
        self.next += 1;
        Some(element)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.instruction.spans.len().saturating_sub(self.next);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Elements<'_> {}

/// Start and end offsets of each element value within the raw instruction.
///
/// An [`Instruction`] is moved out of every `poll_instruction` call, so this is laid out for
/// cheap moves: up to [`INLINE_SPANS`] elements of an instruction shorter than 64 KiB (every
/// drawing and input instruction) are stored inline as packed `u16` pairs, so decoding
/// allocates nothing; longer ones (`args`, `connect`) go to the heap. The inline array is a
/// whole number of 16-byte words: with 44 bytes, its copies used overlapping 16-byte moves
/// that defeated store forwarding, a stall on every instruction (see `BENCH.md`).
#[derive(Debug, Clone)]
#[repr(C)] // the array first, so it is copied as whole 16-byte words
pub(crate) struct Spans {
    /// `start | end << 16` of each element, when `heap` is `None`.
    inline: [u32; INLINE_SPANS],
    len: u32,
    /// All spans, when they do not fit inline (a thin pointer, to keep `Instruction` small).
    heap: Option<Box<HeapSpans>>,
}

/// Spans of an instruction that does not fit [`Spans::inline`].
#[derive(Debug, Clone)]
struct HeapSpans(Vec<(u32, u32)>);

impl Spans {
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    fn get(&self, index: usize) -> Option<(usize, usize)> {
        if index >= self.len() {
            return None;
        }
        match &self.heap {
            None => {
                let packed = *self.inline.get(index)?;
                Some(((packed & 0xffff) as usize, (packed >> 16) as usize))
            }
            Some(spans) => {
                let &(start, end) = spans.0.get(index)?;
                Some((start as usize, end as usize))
            }
        }
    }
}

/// Collects the spans of one instruction as the decoder finds them.
///
/// Spans are written into the inline array as they are found and the array is copied out
/// whole when the instruction is complete (building a `Vec` and converting it made every
/// instruction pay store-forwarding stalls, see `BENCH.md`).
#[derive(Debug, Clone)]
pub(crate) struct SpanBuilder {
    len: usize,
    inline: [u32; INLINE_SPANS],
    /// All spans, once there are more than fit inline (the allocation is reused).
    wide: Vec<(u32, u32)>,
    is_wide: bool,
}

impl SpanBuilder {
    pub(crate) const fn new() -> Self {
        Self {
            len: 0,
            inline: [0; INLINE_SPANS],
            wide: Vec::new(),
            is_wide: false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records the next element. `end` is at least `start` and at least every earlier offset.
    #[inline]
    pub(crate) fn push(&mut self, start: usize, end: usize) {
        if !self.is_wide {
            if let (Some(slot), true) = (self.inline.get_mut(self.len), end <= 0xffff) {
                // Both fit in 16 bits: `start <= end`.
                *slot = start as u32 | (end as u32) << 16;
                self.len += 1;
                return;
            }
            self.spill();
        }
        self.wide.push((offset(start), offset(end)));
        self.len += 1;
    }

    #[cold]
    fn spill(&mut self) {
        self.is_wide = true;
        self.wide.clear();
        let inline = self.inline.get(..self.len).unwrap_or_default();
        self.wide
            .extend(inline.iter().map(|&packed| (packed & 0xffff, packed >> 16)));
    }

    /// The spans collected since the last call; the builder is empty afterwards.
    #[inline]
    pub(crate) fn take(&mut self) -> Spans {
        let spans = Spans {
            inline: self.inline,
            len: offset(self.len),
            heap: self.is_wide.then(|| Box::new(HeapSpans(self.wide.clone()))),
        };
        self.clear();
        spans
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
        if self.is_wide {
            self.is_wide = false;
            self.wide.clear();
        }
    }
}

/// Finds the element whose length prefix starts at `pos` in bytes this crate encoded (so well
/// formed). Returns the value's start and end offsets.
fn encoded_element_at(raw: &[u8], pos: usize) -> Option<(usize, usize)> {
    let rest = raw.get(pos..)?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    let mut chars = 0usize;
    for &digit in rest.get(..dot)? {
        chars = chars
            .checked_mul(10)?
            .checked_add(usize::from(digit.wrapping_sub(b'0')))?;
    }
    let start = pos + dot + 1;
    if raw
        .get(start..start.checked_add(chars)?)
        .is_some_and(<[u8]>::is_ascii)
    {
        return Some((start, start + chars));
    }
    // Valid UTF-8: each character is as long as its leading byte says.
    let mut end = start;
    for _ in 0..chars {
        end += codec::utf8_width(*raw.get(end)?)?;
    }
    Some((start, end))
}

/// An offset in an instruction as stored in its spans. The decoder never produces
/// instructions of 4 GiB; an encoder-built one that large would have wrong spans past 4 GiB.
pub(crate) fn offset(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

/// Element spans stored inline in an [`Instruction`]: enough for every drawing and input
/// instruction (`copy` and `transfer` have 10 elements), and 48 bytes (see [`Spans`]).
pub(crate) const INLINE_SPANS: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instruction_is_small_enough_to_move_cheaply() {
        assert!(size_of::<Instruction>() <= 96);
        assert_eq!(size_of::<[u32; INLINE_SPANS]>() % 16, 0);
    }

    #[test]
    fn spans_beyond_inline_capacity_or_u16_go_to_the_heap() {
        let build = |spans: &[(usize, usize)]| {
            let mut builder = SpanBuilder::new();
            for &(start, end) in spans {
                builder.push(start, end);
            }
            builder.take()
        };
        let few: Vec<_> = (0..INLINE_SPANS).map(|i| (i, i + 1)).collect();
        assert!(build(&few).heap.is_none());
        let many: Vec<_> = (0..=INLINE_SPANS).map(|i| (i, i + 1)).collect();
        let spans = build(&many);
        assert!(spans.heap.is_some());
        assert_eq!(spans.get(0), Some((0, 1)));
        assert_eq!(
            spans.get(INLINE_SPANS),
            Some((INLINE_SPANS, INLINE_SPANS + 1))
        );
        let far = build(&[(0, 1), (2, 70_000)]);
        assert!(far.heap.is_some());
        assert_eq!(
            (far.len(), far.get(1), far.get(2)),
            (2, Some((2, 70_000)), None)
        );
        let long = Instruction::new("blob", &["1", &"A".repeat(70_000)]);
        assert_eq!(long.arg(1).map(str::len), Some(70_000));
    }
}
