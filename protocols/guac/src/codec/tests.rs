use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::instruction::INLINE_SPANS;

/// guacamole-server's parser test fixture (`src/libguac/tests/parser/append.c`).
const FIXTURE: &str = "4.test,8.testdata,5.zxcvb,13.guacamoletest;";

/// Several instructions, with multi-byte characters of every width, an empty opcode and an
/// empty element.
const MIXED: &str = concat!(
    "4.test,8.testdata,5.zxcvb,13.guacamoletest;",
    "4.name,5.héllo;",
    "9.clipboard,1.2,10.text/plain;",
    "4.blob,1.2,5.😀é中a😀;",
    "0.,4.ping,13.1700000000000;",
    "3.nop;",
    "5.error,0.,3.519;",
    "4.name,4.中文名字;",
);

fn decoder() -> Decoder {
    Decoder::default()
}

fn limits(max_elements: usize, max_element_chars: usize, max_instruction_bytes: usize) -> Limits {
    Limits {
        max_elements,
        max_element_chars,
        max_instruction_bytes,
    }
}

/// Elements of every instruction in `input` fed in one piece, then the final outcome
/// (`Ok(None)` or the error).
fn decode_all(decoder: &mut Decoder, input: &[u8]) -> (Vec<Vec<String>>, Result<(), DecodeError>) {
    decoder.feed(input);
    drain(decoder)
}

fn drain(decoder: &mut Decoder) -> (Vec<Vec<String>>, Result<(), DecodeError>) {
    let mut out = Vec::new();
    loop {
        match decoder.poll_instruction() {
            Ok(Some(instruction)) => out.push(elements(&instruction)),
            Ok(None) => return (out, Ok(())),
            Err(error) => return (out, Err(error)),
        }
    }
}

fn elements(instruction: &Instruction) -> Vec<String> {
    instruction.elements().map(str::to_owned).collect()
}

fn first_error(limits: Limits, input: &[u8]) -> DecodeError {
    let mut decoder = Decoder::new(limits);
    decode_all(&mut decoder, input)
        .1
        .expect_err("input must be rejected")
}

#[test]
fn decodes_the_guacamole_server_fixture_and_leaves_the_rest() {
    let mut decoder = decoder();
    decoder.feed(b"4.test,8.testdata,5.zxcvb,13.guacamoletest;XXXXXXXXXXXXXXXXXX");
    let instruction = decoder.poll_instruction().unwrap().unwrap();
    assert_eq!(instruction.opcode(), "test");
    assert_eq!(instruction.arg_count(), 3);
    assert_eq!(
        instruction.args().collect::<Vec<_>>(),
        ["testdata", "zxcvb", "guacamoletest"]
    );
    assert_eq!(instruction.raw().as_ref(), FIXTURE.as_bytes());
    assert_eq!(instruction.len(), FIXTURE.len());
    // Like guac_parser_append: the instruction consumed exactly its bytes.
    assert_eq!(decoder.buffered_len(), 18);
    assert_eq!(decoder.poll_instruction(), Err(DecodeError::NonDigitLength));
}

#[test]
fn exposes_elements_without_parsing_again() {
    let mut decoder = decoder();
    decoder.feed(b"4.blob,1.2,5.\xf0\x9f\x98\x80\xc3\xa9\xe4\xb8\xada\xf0\x9f\x98\x80;");
    let instruction = decoder.poll_instruction().unwrap().unwrap();
    assert!(instruction.is("blob"));
    assert!(!instruction.is("blo"));
    assert_eq!(instruction.arg(0), Some("2"));
    assert_eq!(instruction.arg(1), Some("😀é中a😀"));
    assert_eq!(instruction.arg_bytes(1), Some("😀é中a😀".as_bytes()));
    assert_eq!(instruction.arg(2), None);
    assert_eq!(instruction.arg(usize::MAX), None);
    assert_eq!(instruction.args().len(), 2);
    assert_eq!(instruction.elements().len(), 3);
    assert!(!instruction.is_empty());
    assert_eq!(
        format!("{instruction:?}"),
        r#"Instruction { opcode: "blob", args: 2, len: 28 }"#
    );
}

#[test]
fn decodes_many_instructions_from_one_feed() {
    let (instructions, end) = decode_all(&mut decoder(), MIXED.as_bytes());
    assert_eq!(end, Ok(()));
    assert_eq!(instructions.len(), 8);
    assert_eq!(instructions[1], ["name", "héllo"]);
    assert_eq!(instructions[3], ["blob", "2", "😀é中a😀"]);
    assert_eq!(instructions[4], ["", "ping", "1700000000000"]);
    assert_eq!(instructions[5], ["nop"]);
    assert_eq!(instructions[6], ["error", "", "519"]);
    assert_eq!(instructions[7], ["name", "中文名字"]);
}

#[test]
fn raw_bytes_are_exactly_the_input() {
    let mut decoder = decoder();
    decoder.feed(MIXED.as_bytes());
    let mut joined = Vec::new();
    while let Some(instruction) = decoder.poll_instruction().unwrap() {
        joined.extend_from_slice(instruction.raw());
    }
    assert_eq!(joined, MIXED.as_bytes());
    assert!(decoder.is_at_boundary());
}

#[test]
fn splits_at_every_byte_position() {
    let input = MIXED.as_bytes();
    let (expected, _) = decode_all(&mut decoder(), input);
    for at in 0..=input.len() {
        let mut decoder = decoder();
        let (mut got, end) = decode_all(&mut decoder, &input[..at]);
        assert_eq!(end, Ok(()), "split at {at}");
        let (rest, end) = decode_all(&mut decoder, &input[at..]);
        assert_eq!(end, Ok(()), "split at {at}");
        got.extend(rest);
        assert_eq!(got, expected, "split at {at}");
        assert!(decoder.is_at_boundary());
    }
}

#[test]
fn splits_at_every_pair_of_positions() {
    let input = "4.name,5.héllo;4.blob,1.2,5.😀é中a😀;0.;".as_bytes();
    let (expected, _) = decode_all(&mut decoder(), input);
    for a in 0..=input.len() {
        for b in a..=input.len() {
            let mut decoder = decoder();
            let mut got = Vec::new();
            for part in [&input[..a], &input[a..b], &input[b..]] {
                let (instructions, end) = decode_all(&mut decoder, part);
                assert_eq!(end, Ok(()), "split at {a}, {b}");
                got.extend(instructions);
            }
            assert_eq!(got, expected, "split at {a}, {b}");
        }
    }
}

#[test]
fn feeds_one_byte_at_a_time() {
    let input = MIXED.as_bytes();
    let (expected, _) = decode_all(&mut decoder(), input);
    let mut decoder = decoder();
    let mut got = Vec::new();
    for byte in input {
        let (instructions, end) = decode_all(&mut decoder, std::slice::from_ref(byte));
        assert_eq!(end, Ok(()));
        got.extend(instructions);
    }
    assert_eq!(got, expected);
}

#[test]
fn holds_a_character_split_across_feeds_until_it_is_complete() {
    for text in ["é", "😀", "中", "a😀b", "é中😀"] {
        let wire = format!("4.text,{}.{text};", text.chars().count());
        let bytes = wire.as_bytes();
        let value_start = wire.find(text).unwrap();
        for at in value_start..value_start + text.len() {
            let mut decoder = decoder();
            decoder.feed(&bytes[..at]);
            assert_eq!(decoder.poll_instruction(), Ok(None), "{text} split at {at}");
            decoder.feed(&bytes[at..]);
            let instruction = decoder.poll_instruction().unwrap().unwrap();
            assert_eq!(instruction.arg(0), Some(text));
        }
    }
}

#[test]
fn lengths_count_characters_not_bytes() {
    // "héllo" is 5 characters in 6 bytes: a byte count as length swallows the `;`.
    let mut decoder = decoder();
    decoder.feed("4.name,6.héllo;4.sync,1.0;".as_bytes());
    assert_eq!(decoder.poll_instruction(), Err(DecodeError::BadSeparator));
    // 4-byte characters count once.
    let (instructions, end) = decode_all(&mut Decoder::default(), "1.😀,2.😀😀;".as_bytes());
    assert_eq!(end, Ok(()));
    assert_eq!(instructions, [["😀", "😀😀"]]);
}

#[test]
fn accepts_empty_elements_and_leading_zeros() {
    let (instructions, end) = decode_all(&mut decoder(), b"0.;4.test,0.,0.;004.test,01.a;");
    assert_eq!(end, Ok(()));
    assert_eq!(
        instructions,
        [vec![""], vec!["test", "", ""], vec!["test", "a"]]
    );
}

#[test]
fn rejects_each_kind_of_malformed_input() {
    let cases: &[(&[u8], DecodeError)] = &[
        (b";", DecodeError::EmptyInstruction),
        (b"3.nop;;", DecodeError::EmptyInstruction),
        (b".nop;", DecodeError::EmptyLength),
        (b"4.test,.abc;", DecodeError::EmptyLength),
        (b"x.test;", DecodeError::NonDigitLength),
        (b"-1.a;", DecodeError::NonDigitLength),
        (b"+1.a;", DecodeError::NonDigitLength),
        (b" 4.test;", DecodeError::NonDigitLength),
        (b"4.test,;", DecodeError::NonDigitLength),
        (b"4.test\n3.nop;", DecodeError::BadSeparator),
        (b"3.nop;\n", DecodeError::NonDigitLength),
        (b"4,test;", DecodeError::MissingDot),
        (b"4test;", DecodeError::MissingDot),
        (b"4.test,1;", DecodeError::MissingDot),
        (b"1 .a;", DecodeError::MissingDot),
        (b"8193.", DecodeError::ElementTooLong),
        (b"99999999999999999999999.", DecodeError::ElementTooLong),
        (b"4.test.;", DecodeError::BadSeparator),
        (b"4.testX;", DecodeError::BadSeparator),
        (b"5.test;3.nop;", DecodeError::BadSeparator),
        (b"3.test;", DecodeError::BadSeparator),
        (b"4.te\xffst;", DecodeError::InvalidUtf8),
        (b"1.\x80;", DecodeError::InvalidUtf8),
        (b"2.\xc0\xafa;", DecodeError::InvalidUtf8),
        (b"1.\xed\xa0\x80;", DecodeError::InvalidUtf8),
        (b"1.\xf4\x90\x80\x80;", DecodeError::InvalidUtf8),
        (b"2.\xe4\xb8a;", DecodeError::InvalidUtf8),
        (b"2.a\xf0\x9f\x98;", DecodeError::InvalidUtf8),
    ];
    for (input, expected) in cases {
        let got = first_error(Limits::default(), input);
        assert_eq!(got, *expected, "{}", String::from_utf8_lossy(input));
        // The same error whatever the split.
        let mut decoder = decoder();
        let mut end = Ok(());
        for byte in *input {
            decoder.feed(std::slice::from_ref(byte));
            end = drain(&mut decoder).1;
            if end.is_err() {
                break;
            }
        }
        assert_eq!(end, Err(*expected), "{}", String::from_utf8_lossy(input));
    }
}

#[test]
fn invalid_utf8_split_across_feeds_is_rejected() {
    let mut decoder = decoder();
    decoder.feed(b"4.name,2.a\xe4");
    assert_eq!(decoder.poll_instruction(), Ok(None));
    decoder.feed(b"\xb8");
    assert_eq!(decoder.poll_instruction(), Ok(None));
    decoder.feed(b"X;");
    assert_eq!(decoder.poll_instruction(), Err(DecodeError::InvalidUtf8));
}

#[test]
fn length_overflow_is_reported_with_unbounded_element_limit() {
    let limits = limits(128, usize::MAX, 32768);
    assert_eq!(
        first_error(limits, b"99999999999999999999999.a;"),
        DecodeError::LengthOverflow
    );
}

#[test]
fn an_error_is_final() {
    let mut decoder = decoder();
    decoder.feed(b"3.nop;4.bad!3.nop;");
    assert!(decoder.poll_instruction().unwrap().is_some());
    assert_eq!(decoder.poll_instruction(), Err(DecodeError::BadSeparator));
    assert_eq!(decoder.error(), Some(DecodeError::BadSeparator));
    assert_eq!(decoder.buffered_len(), 0);
    decoder.feed(b"3.nop;");
    assert_eq!(decoder.buffered_len(), 0);
    assert!(!decoder.is_at_boundary());
    assert_eq!(decoder.poll_instruction(), Err(DecodeError::BadSeparator));
}

#[test]
fn element_limit_at_n_and_n_plus_one() {
    let limits = limits(3, 8192, 32768);
    let (instructions, end) = decode_all(&mut Decoder::new(limits), b"1.a,1.b,1.c;");
    assert_eq!((instructions.len(), end), (1, Ok(())));
    assert_eq!(
        first_error(limits, b"1.a,1.b,1.c,1.d;"),
        DecodeError::TooManyElements
    );
    // Reported as soon as the extra element starts, not at its end.
    let mut decoder = Decoder::new(limits);
    decoder.feed(b"1.a,1.b,1.c,");
    assert_eq!(decoder.poll_instruction(), Ok(None));
    decoder.feed(b"9");
    assert_eq!(
        decoder.poll_instruction(),
        Err(DecodeError::TooManyElements)
    );
}

#[test]
fn default_element_limit_is_guacd_s() {
    let mut args = String::from("4.args");
    for _ in 1..GUACD_MAX_ELEMENTS {
        args.push_str(",4.name");
    }
    let at_limit = format!("{args};");
    let over_limit = format!("{args},4.name;");
    let (instructions, end) = decode_all(&mut decoder(), at_limit.as_bytes());
    assert_eq!(end, Ok(()));
    assert_eq!(instructions[0].len(), GUACD_MAX_ELEMENTS);
    // Beyond the inline spans: exercises the spilled ones.
    assert_eq!(instructions[0][INLINE_SPANS + 1], "name");
    assert_eq!(instructions[0][GUACD_MAX_ELEMENTS - 1], "name");
    assert_eq!(
        first_error(Limits::default(), over_limit.as_bytes()),
        DecodeError::TooManyElements
    );
}

#[test]
fn an_args_list_of_ten_thousand_elements_is_rejected_early() {
    let mut hostile = String::from("4.args,13.VERSION_1_5_0");
    for i in 0..10_000 {
        hostile.push_str(&format!(",{}.param{i}", format!("param{i}").len()));
    }
    hostile.push(';');
    let mut decoder = decoder();
    decoder.feed(hostile.as_bytes());
    assert_eq!(
        decoder.poll_instruction(),
        Err(DecodeError::TooManyElements)
    );
    assert_eq!(decoder.buffered_len(), 0);
}

#[test]
fn element_length_limit_at_n_and_n_plus_one() {
    let limits = limits(128, 5, 32768);
    let (instructions, end) = decode_all(&mut Decoder::new(limits), "4.text,5.héllo;".as_bytes());
    assert_eq!((instructions.len(), end), (1, Ok(())));
    assert_eq!(
        first_error(limits, "4.text,6.héllo!;".as_bytes()),
        DecodeError::ElementTooLong
    );
    let mut decoder = Decoder::new(limits);
    // Rejected from the declared length alone, before the value arrives.
    decoder.feed(b"1.t,6.");
    assert_eq!(decoder.poll_instruction(), Err(DecodeError::ElementTooLong));

    // The default, guacd's 8192 characters.
    let ok = format!("4.blob,1.0,8192.{};", "A".repeat(8192));
    let (instructions, end) = decode_all(&mut Decoder::default(), ok.as_bytes());
    assert_eq!((instructions.len(), end), (1, Ok(())));
    assert_eq!(
        first_error(Limits::default(), b"4.blob,1.0,8193."),
        DecodeError::ElementTooLong
    );
}

#[test]
fn instruction_length_limit_at_n_and_n_plus_one() {
    let limits = limits(128, 8192, 10);
    // 10 bytes, `;` included.
    let (instructions, end) = decode_all(&mut Decoder::new(limits), b"4.test,0.;");
    assert_eq!((instructions.len(), end), (1, Ok(())));
    assert_eq!(
        first_error(limits, b"4.test,1.a;"),
        DecodeError::InstructionTooLong
    );
    // Multi-byte characters count by bytes here: 2 characters, 8 bytes, 18 in all.
    let limits = self::limits(128, 8192, 18);
    let (instructions, end) = decode_all(&mut Decoder::new(limits), "4.text,2.😀😀;".as_bytes());
    assert_eq!((instructions.len(), end), (1, Ok(())));
    let limits = self::limits(128, 8192, 17);
    assert_eq!(
        first_error(limits, "4.text,2.😀😀;".as_bytes()),
        DecodeError::InstructionTooLong
    );
}

#[test]
fn instruction_too_long_is_reported_from_a_declared_length() {
    let limits = limits(128, 1_000_000, 32768);
    let mut decoder = Decoder::new(limits);
    // 13 bytes so far, then at least 32755 bytes of value and the `;`: 32769 > 32768.
    decoder.feed(b"4.blob,32755.");
    assert_eq!(
        decoder.poll_instruction(),
        Err(DecodeError::InstructionTooLong)
    );
    // 32754 may fit exactly.
    let mut decoder = Decoder::new(limits);
    decoder.feed(b"4.blob,32754.");
    assert_eq!(decoder.poll_instruction(), Ok(None));
}

#[test]
fn a_never_ending_instruction_is_cut_at_the_limit() {
    // Elements of the largest allowed size, forever: guacd's buffer (32 KiB) fills in 4.
    let chunk = format!(",8192.{}", "A".repeat(8192));
    let mut decoder = decoder();
    decoder.feed(b"4.blob");
    let mut fed = 6;
    let error = loop {
        decoder.feed(chunk.as_bytes());
        fed += chunk.len();
        match decoder.poll_instruction() {
            Ok(None) => assert!(decoder.buffered_len() < GUACD_MAX_INSTRUCTION_BYTES),
            Ok(Some(_)) => panic!("no instruction ends"),
            Err(error) => break error,
        }
        assert!(fed < 1 << 20, "not cut");
    };
    assert_eq!(error, DecodeError::InstructionTooLong);
    assert!(fed <= GUACD_MAX_INSTRUCTION_BYTES + chunk.len());
}

#[test]
fn buffers_less_than_the_limit_however_the_bytes_arrive() {
    let limits = limits(4096, 8192, 1000);
    let mut decoder = Decoder::new(limits);
    let mut hostile = Vec::new();
    while hostile.len() < 5000 {
        hostile.extend_from_slice(b"1.a,");
    }
    for (fed, byte) in hostile.iter().enumerate() {
        decoder.feed(std::slice::from_ref(byte));
        match decoder.poll_instruction() {
            Ok(None) => assert!(decoder.buffered_len() < 1000),
            Ok(Some(_)) => panic!("no instruction ends"),
            Err(error) => {
                assert_eq!(error, DecodeError::InstructionTooLong);
                assert_eq!(fed + 1, 1000);
                return;
            }
        }
    }
    panic!("never rejected");
}

#[test]
fn a_flood_of_sync_is_decoded_without_state_growth() {
    let mut decoder = decoder();
    let sync = b"4.sync,13.1700000000000;";
    let mut burst = Vec::new();
    for _ in 0..10_000 {
        burst.extend_from_slice(sync);
    }
    decoder.feed(&burst);
    let mut count = 0;
    while let Some(instruction) = decoder.poll_instruction().unwrap() {
        assert!(instruction.is("sync"));
        count += 1;
    }
    assert_eq!(count, 10_000);
    assert!(decoder.is_at_boundary());
}

#[test]
fn into_buffered_returns_the_unreturned_bytes() {
    let mut decoder = decoder();
    decoder.feed(b"3.nop;4.sync,1.");
    assert!(decoder.poll_instruction().unwrap().is_some());
    assert_eq!(decoder.poll_instruction(), Ok(None));
    assert_eq!(&decoder.into_buffered()[..], b"4.sync,1.");
}

#[test]
fn limits_check_reports_what_the_decoder_would() {
    let instruction = Instruction::new("blob", &["1", "AAAA"]);
    assert_eq!(Limits::default().check(&instruction), Ok(()));
    assert_eq!(
        limits(2, 8192, 1000).check(&instruction),
        Err(DecodeError::TooManyElements)
    );
    assert_eq!(
        limits(3, 3, 1000).check(&instruction),
        Err(DecodeError::ElementTooLong)
    );
    assert_eq!(
        limits(3, 4, instruction.len() - 1).check(&instruction),
        Err(DecodeError::InstructionTooLong)
    );
    assert_eq!(limits(3, 4, instruction.len()).check(&instruction), Ok(()));
}

#[test]
fn encodes_with_character_lengths() {
    let mut out = BytesMut::new();
    encode("test", &["testdata", "zxcvb", "guacamoletest"], &mut out);
    assert_eq!(&out[..], FIXTURE.as_bytes());
    out.clear();
    encode("name", &["héllo"], &mut out);
    encode("blob", &["2", "😀é中a😀"], &mut out);
    encode("", &["ping"], &mut out);
    encode::<&str>("nop", &[], &mut out);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "4.name,5.héllo;4.blob,1.2,5.😀é中a😀;0.,4.ping;3.nop;"
    );
}

#[test]
fn writes_numbers_without_allocating() {
    let mut out = BytesMut::new();
    let mut w = InstructionWriter::new(&mut out, "n");
    w.arg_u64(0)
        .arg_u64(u64::MAX)
        .arg_i64(-1)
        .arg_i64(i64::MIN)
        .arg_i64(i64::MAX)
        .arg_f64(0.5)
        .arg_f64(-2.0)
        .arg("x");
    w.finish();
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "1.n,1.0,20.18446744073709551615,2.-1,20.-9223372036854775808,\
         19.9223372036854775807,3.0.5,2.-2,1.x;"
    );
}

#[test]
fn instruction_new_matches_the_decoder() {
    for args in [
        vec![],
        vec!["testdata", "zxcvb", "guacamoletest"],
        vec!["", "😀é中a😀", "", "héllo"],
        vec!["x"; 40],
    ] {
        let built = Instruction::new("test", &args);
        let mut decoder = decoder();
        decoder.feed(built.raw());
        let decoded = decoder.poll_instruction().unwrap().unwrap();
        assert_eq!(decoded, built);
        assert_eq!(elements(&decoded), elements(&built));
        assert_eq!(built.args().collect::<Vec<_>>(), args);
    }
}

/// Instructions as element lists: opcode and up to 30 arguments of any text.
fn any_elements() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(any::<String>(), 1..30)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_then_decode_is_identity(
        instructions in prop::collection::vec(any_elements(), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut wire = BytesMut::new();
        for elements in &instructions {
            let (opcode, args) = elements.split_first().unwrap();
            encode(opcode, args, &mut wire);
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        cuts.sort_unstable();
        let mut decoder = Decoder::new(limits(64, usize::MAX, 1 << 20));
        let mut got = Vec::new();
        let mut raw = Vec::new();
        let mut from = 0;
        for to in cuts.into_iter().chain([wire.len()]) {
            decoder.feed(&wire[from..to]);
            from = to;
            while let Some(instruction) = decoder.poll_instruction().unwrap() {
                raw.extend_from_slice(instruction.raw());
                got.push(elements(&instruction));
            }
        }
        prop_assert_eq!(got, instructions);
        prop_assert_eq!(&raw[..], &wire[..]);
        prop_assert!(decoder.is_at_boundary());
    }

    #[test]
    fn any_split_of_any_bytes_decodes_the_same(
        input in prop::collection::vec(
            prop::sample::select(b"0123456789.,;ab\xc3\xa9\xf0\x9f\x98\x80\xff".to_vec()),
            0..200,
        ),
        cut in any::<prop::sample::Index>(),
    ) {
        let small = limits(6, 12, 64);
        let whole = decode_all(&mut Decoder::new(small), &input);
        let at = cut.index(input.len() + 1);
        let mut decoder = Decoder::new(small);
        let (mut got, end) = decode_all(&mut decoder, &input[..at]);
        let end = match end {
            Ok(()) => {
                let (rest, end) = decode_all(&mut decoder, &input[at..]);
                got.extend(rest);
                end
            }
            Err(error) => Err(error),
        };
        prop_assert_eq!((got, end), whole);
        prop_assert!(decoder.buffered_len() < 64 || decoder.error().is_some());
    }
}

#[test]
fn debug_output_never_shows_wire_bytes() {
    let mut decoder = decoder();
    decoder.feed(b"7.connect,6.s3cr3t;7.connect,6.hunter");
    let instruction = decoder.poll_instruction().unwrap().unwrap();
    assert_eq!(decoder.poll_instruction(), Ok(None));
    let mut out = BytesMut::new();
    let mut writer = InstructionWriter::new(&mut out, "connect");
    writer.arg("hunter2");
    for shown in [
        format!("{decoder:?}"),
        format!("{instruction:?}"),
        format!("{writer:?}"),
    ] {
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("hunter"),
            "{shown}"
        );
    }
    writer.finish();
}

#[test]
fn non_ascii_in_the_middle_of_a_long_ascii_stream() {
    let mut input = Vec::new();
    for i in 0..1000 {
        input.extend_from_slice(format!("4.sync,{}.{i};", i.to_string().len()).as_bytes());
    }
    input.extend_from_slice("4.name,3.é中😀;".as_bytes());
    for _ in 0..1000 {
        input.extend_from_slice(b"3.nop;");
    }
    for piece in [1, 7, 1000, input.len()] {
        let mut decoder = decoder();
        let mut got = Vec::new();
        for chunk in input.chunks(piece) {
            let (instructions, end) = decode_all(&mut decoder, chunk);
            assert_eq!(end, Ok(()));
            got.extend(instructions);
        }
        assert_eq!(got.len(), 2001);
        assert_eq!(got[999], ["sync", "999"]);
        assert_eq!(got[1000], ["name", "é中😀"]);
        assert_eq!(got[2000], ["nop"]);
    }
}

#[test]
fn instructions_beyond_64_kib_decode_with_raised_limits() {
    let value = "A".repeat(70_000);
    let wire = format!("4.blob,1.1,70000.{value},1.x;");
    let mut decoder = Decoder::new(limits(128, 100_000, 200_000));
    decoder.feed(wire.as_bytes());
    let instruction = decoder.poll_instruction().unwrap().unwrap();
    assert_eq!(instruction.arg(1), Some(value.as_str()));
    assert_eq!(instruction.arg(2), Some("x"));
    assert_eq!(instruction.len(), wire.len());
}

#[test]
fn an_incomplete_character_that_cannot_become_valid_is_rejected_at_once() {
    // Found by `guac_decode`: the third character starts with a 4-byte lead byte followed by
    // another lead byte. Whether the rest of the value has arrived must not matter.
    for input in [
        &b"4.name,3.ab\xf0\xf0"[..],
        b"4.name,3.ab\xf0\xf0x",
        b"4.name,3.ab\xf0",
    ] {
        let mut decoder = decoder();
        decoder.feed(input);
        let expected = if input.len() > 12 {
            Err(DecodeError::InvalidUtf8)
        } else {
            Ok(None)
        };
        assert_eq!(decoder.poll_instruction(), expected, "{input:?}");
    }
}

#[test]
fn reading_into_the_decoder_equals_feeding_it() {
    use bytes::BufMut;
    let expected = decode_all(&mut decoder(), MIXED.as_bytes());
    for piece in [1, 3, 7, 64, MIXED.len()] {
        let mut d = decoder();
        let mut out = Vec::new();
        for part in MIXED.as_bytes().chunks(piece) {
            // What `read_buf` does: write into the spare room, then advance.
            d.read_buffer(part.len()).put_slice(part);
            out.extend(drain(&mut d).0);
        }
        assert_eq!(out, expected.0, "pieces of {piece}");
        assert!(d.is_at_boundary());
    }
}

#[test]
fn reading_after_an_error_keeps_nothing() {
    use bytes::BufMut;
    let mut d = decoder();
    d.read_buffer(8).put_slice(b"x.bad;");
    assert_eq!(d.poll_instruction(), Err(DecodeError::NonDigitLength));
    d.read_buffer(1 << 20).put_slice(&[b'9'; 4096]);
    assert_eq!(d.poll_instruction(), Err(DecodeError::NonDigitLength));
    d.read_buffer(16);
    assert_eq!(d.buffered_len(), 0);
}
