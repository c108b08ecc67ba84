//! Fuzz entry points. Each takes arbitrary bytes and asserts the codec's contract, not just
//! the absence of panics.

use bytes::{Bytes, BytesMut};

use crate::{Context, DecodeError, Decoder, Instruction, Limits, TypedInstruction, encode};

/// `guac_decode`: arbitrary bytes, fed whole and in arbitrary pieces (every other piece
/// appended through [`Decoder::read_buffer`], as a socket read would), under guacd's limits
/// or small ones (so that every limit is reached).
///
/// Asserts: no panic; the same instructions and the same error whatever the split; after
/// `Ok(None)` less than the instruction limit is buffered; every instruction respects the
/// limits and its elements lie inside its raw bytes; an error is final and frees the buffer;
/// typed parsing in every context returns (never panics).
pub fn decode(data: &[u8]) {
    let Some((&control, data)) = data.split_first() else {
        return;
    };
    let limits = if control & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_elements: 8,
            max_element_chars: 40,
            max_instruction_bytes: 100,
        }
    };
    let whole = run(limits, [data]);

    // Piece lengths from a generator seeded by the control byte: 1 to 16 bytes, so splits
    // fall inside prefixes, characters and separators.
    let mut seed = u32::from(control >> 1) | 0x100;
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let len = (1 + (seed >> 16) as usize % 16).min(rest.len());
        let (piece, tail) = rest.split_at(len);
        pieces.push(piece);
        rest = tail;
    }
    let split = run(limits, pieces);
    assert_eq!(whole, split, "the split changed the outcome");
}

fn run<'a>(
    limits: Limits,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Bytes>, Option<DecodeError>) {
    let mut decoder = Decoder::new(limits);
    let mut out = Vec::new();
    for (i, piece) in pieces.into_iter().enumerate() {
        if i % 2 == 1 {
            bytes::BufMut::put_slice(decoder.read_buffer(piece.len()), piece);
        } else {
            decoder.feed(piece);
        }
        loop {
            match decoder.poll_instruction() {
                Ok(Some(instruction)) => {
                    check_instruction(&limits, &instruction);
                    out.push(instruction.into_raw());
                }
                Ok(None) => {
                    assert!(decoder.buffered_len() < limits.max_instruction_bytes);
                    break;
                }
                Err(error) => {
                    assert_eq!(decoder.poll_instruction(), Err(error));
                    assert_eq!(decoder.buffered_len(), 0);
                    return (out, Some(error));
                }
            }
        }
    }
    (out, None)
}

fn check_instruction(limits: &Limits, instruction: &Instruction) {
    assert_eq!(limits.check(instruction), Ok(()));
    assert!(instruction.raw().ends_with(b";"));
    let mut elements = 0;
    for element in instruction.elements() {
        elements += 1;
        // Each element's text lies within the raw bytes (spans are consistent).
        let within = instruction.raw().as_ptr_range();
        let range = element.as_bytes().as_ptr_range();
        assert!(within.start <= range.start && range.end <= within.end);
    }
    assert_eq!(elements, instruction.arg_count() + 1);
    for context in CONTEXTS {
        let _ = TypedInstruction::parse(instruction, context);
    }
}

/// `guac_roundtrip`: decoded instructions re-encode to their raw bytes (exactly, unless a
/// length prefix had leading zeros, the only freedom in the format); typed instructions
/// survive encode → decode → parse; and arbitrary element lists survive encode → decode, the
/// decoder accepting them exactly when [`Limits::check`] does.
pub fn roundtrip(data: &[u8]) {
    let mut decoder = Decoder::default();
    decoder.feed(data);
    while let Ok(Some(instruction)) = decoder.poll_instruction() {
        let elements: Vec<&str> = instruction.elements().collect();
        let (opcode, args) = elements.split_first().unwrap_or((&"", &[]));
        let mut canonical = BytesMut::new();
        encode(opcode, args, &mut canonical);
        let raw = instruction.raw();
        if canonical.len() == raw.len() {
            assert_eq!(&canonical[..], &raw[..], "re-encoding changed the bytes");
        } else {
            assert!(canonical.len() < raw.len(), "re-encoding grew the bytes");
            let again = decode_one(&canonical, Limits::default());
            assert!(
                again.is_ok_and(|again| again.elements().eq(instruction.elements())),
                "the canonical form decodes to other elements"
            );
        }
        for context in CONTEXTS {
            if let Ok(typed) = TypedInstruction::parse(&instruction, context) {
                let encoded = typed.to_instruction();
                let again = TypedInstruction::parse(&encoded, context);
                assert_eq!(again.as_ref(), Ok(&typed), "typed round trip");
            }
        }
    }

    // The input as a list of elements separated by NUL (opcode first).
    let text = String::from_utf8_lossy(data);
    let elements: Vec<&str> = text.split('\0').take(300).collect();
    let (opcode, args) = elements.split_first().unwrap_or((&"", &[]));
    let built = Instruction::new(opcode, args);
    let limits = Limits {
        max_elements: 64,
        max_element_chars: 256,
        max_instruction_bytes: 2048,
    };
    match decode_one(built.raw(), limits) {
        Ok(decoded) => {
            assert_eq!(limits.check(&built), Ok(()));
            assert_eq!(decoded, built);
            assert!(decoded.elements().eq(elements.iter().copied()));
        }
        Err(error) => {
            assert!(limits.check(&built).is_err(), "decoder refused {error}");
        }
    }
}

/// Decodes bytes holding exactly one encoded instruction.
fn decode_one(bytes: &[u8], limits: Limits) -> Result<Instruction, DecodeError> {
    let mut decoder = Decoder::new(limits);
    decoder.feed(bytes);
    let instruction = decoder.poll_instruction()?;
    assert!(
        decoder.is_at_boundary() && instruction.is_some(),
        "not one instruction"
    );
    instruction.ok_or(DecodeError::InstructionTooLong)
}

const CONTEXTS: [Context; 4] = [
    Context::ClientHandshake,
    Context::ClientInteractive,
    Context::ServerHandshake,
    Context::ServerInteractive,
];
