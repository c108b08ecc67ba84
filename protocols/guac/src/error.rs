//! Errors of this crate: framing errors from the [`Decoder`](crate::Decoder) and argument
//! errors from typed parsing ([`TypedInstruction::parse`](crate::TypedInstruction::parse)).
//!
//! Neither carries bytes or text from the wire, so both can be logged and used as metric
//! labels as they are.

/// Why the byte stream is not a valid sequence of Guacamole instructions.
///
/// The peer that sent the bytes is at fault. Every variant is fatal for the stream: the
/// decoder cannot find the next instruction boundary after it, so it keeps returning the
/// same error (see [`Decoder::poll_instruction`](crate::Decoder::poll_instruction)).
///
/// Reference: <https://guacamole.apache.org/doc/gug/guacamole-protocol.html#design>.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A `;` where an instruction should start: an instruction needs at least an opcode.
    #[error("empty instruction")]
    EmptyInstruction,

    /// An element starts with `.`: its length prefix has no digits.
    #[error("element length prefix has no digits")]
    EmptyLength,

    /// An element starts with a byte that is not a decimal digit.
    #[error("element does not start with a decimal length")]
    NonDigitLength,

    /// A length prefix is followed by something other than a digit or `.`.
    #[error("element length prefix is not followed by `.`")]
    MissingDot,

    /// A length prefix does not fit in a `usize` (only reachable with limits near
    /// `usize::MAX`; the default limits reject such a prefix as [`Self::ElementTooLong`]).
    #[error("element length prefix overflows")]
    LengthOverflow,

    /// The declared element length exceeds [`Limits::max_element_chars`](crate::Limits).
    #[error("element longer than the limit")]
    ElementTooLong,

    /// The byte after an element's declared length is neither `,` nor `;`: the element is
    /// longer than its prefix says, or the separator is wrong.
    #[error("element not followed by `,` or `;`")]
    BadSeparator,

    /// An element value is not valid UTF-8.
    #[error("element is not valid utf-8")]
    InvalidUtf8,

    /// The instruction has more elements (opcode included) than
    /// [`Limits::max_elements`](crate::Limits).
    #[error("instruction has more elements than the limit")]
    TooManyElements,

    /// The instruction is longer, in bytes and with its terminating `;`, than
    /// [`Limits::max_instruction_bytes`](crate::Limits), or its declared lengths make it so.
    #[error("instruction longer than the limit")]
    InstructionTooLong,
}

/// Why a well-framed instruction is not a valid instance of its opcode.
///
/// Returned by [`TypedInstruction::parse`](crate::TypedInstruction::parse). The stream is
/// still intact (the next instruction can be decoded); whether to drop the instruction, pass
/// it through raw, or end the session is the caller's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("malformed `{opcode}` instruction: argument {index} {reason}")]
#[non_exhaustive]
pub struct ParseError {
    /// The opcode being parsed (always one this crate knows, never text from the wire).
    pub opcode: &'static str,
    /// Zero-based index of the offending argument (the opcode is not counted).
    pub index: usize,
    /// What is wrong with it.
    pub reason: ArgumentError,
}

/// What is wrong with one argument of an instruction. See [`ParseError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ArgumentError {
    /// The instruction has fewer arguments than the opcode requires.
    #[error("is missing")]
    Missing,
    /// Expected a decimal integer (`-?[0-9]+`).
    #[error("is not an integer")]
    NotAnInteger,
    /// A decimal integer outside the range of the field (for example a negative stream
    /// index, or a colour component above 255).
    #[error("is out of range")]
    OutOfRange,
    /// Expected a finite decimal number.
    #[error("is not a finite number")]
    NotANumber,
}
