use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::codec::Decoder;
use crate::error::{ArgumentError, ParseError};
use crate::typed::TypedInstruction as T;

fn decode(wire: &str) -> Instruction {
    let mut decoder = Decoder::default();
    decoder.feed(wire.as_bytes());
    let instruction = decoder.poll_instruction().unwrap().unwrap();
    assert!(decoder.is_at_boundary(), "one instruction: {wire}");
    instruction
}

fn encoded(typed: &T<'_>) -> String {
    let mut out = BytesMut::new();
    typed.encode(&mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

/// Parses `wire` in `context`, checks it gives `expected`, and that `expected` encodes back to
/// exactly `wire`.
fn check(context: Context, wire: &str, expected: T<'_>) {
    let instruction = decode(wire);
    let typed = T::parse(&instruction, context).unwrap();
    assert_eq!(typed, expected, "{wire}");
    assert_eq!(encoded(&expected), wire);
    assert_eq!(expected.to_instruction().raw().as_ref(), wire.as_bytes());
    assert_eq!(expected.opcode(), instruction.opcode());
}

fn parse_error(context: Context, wire: &str) -> ParseError {
    let instruction = decode(wire);
    T::parse(&instruction, context).unwrap_err()
}

#[test]
fn parses_the_client_handshake() {
    use Context::ClientHandshake as C;
    check(C, "6.select,3.rdp;", T::Select { identifier: "rdp" });
    check(
        C,
        "4.size,4.1920,4.1080,2.96;",
        T::HandshakeSize {
            width: 1920,
            height: 1080,
            dpi: Some(96),
        },
    );
    check(
        C,
        "4.size,4.1024,3.768;",
        T::HandshakeSize {
            width: 1024,
            height: 768,
            dpi: None,
        },
    );
    check(
        C,
        "5.audio,9.audio/L16,8.audio/L8;",
        T::HandshakeAudio {
            mimetypes: vec!["audio/L16", "audio/L8"],
        },
    );
    check(C, "5.video;", T::HandshakeVideo { mimetypes: vec![] });
    check(
        C,
        "5.image,10.image/jpeg,9.image/png,10.image/webp;",
        T::Image {
            mimetypes: vec!["image/jpeg", "image/png", "image/webp"],
        },
    );
    check(
        C,
        "8.timezone,13.Europe/Berlin;",
        T::Timezone {
            timezone: "Europe/Berlin",
        },
    );
    check(C, "4.name,5.Jérôm;", T::Name { name: "Jérôm" });
    check(
        C,
        "7.connect,13.VERSION_1_5_0,9.10.0.0.12,0.,5.alice,6.s3cr3t;",
        T::Connect {
            values: vec!["VERSION_1_5_0", "10.0.0.12", "", "alice", "s3cr3t"],
        },
    );
}

#[test]
fn parses_the_server_handshake() {
    use Context::ServerHandshake as S;
    check(
        S,
        "4.args,13.VERSION_1_5_0,8.hostname,4.port,8.username,8.password;",
        T::Args {
            values: vec!["VERSION_1_5_0", "hostname", "port", "username", "password"],
        },
    );
    check(
        S,
        "5.ready,37.$260d01da-779b-4ee9-afc1-c16bae885cc7;",
        T::Ready {
            identifier: "$260d01da-779b-4ee9-afc1-c16bae885cc7",
        },
    );
    check(
        S,
        "8.required,8.username,8.password;",
        T::Required {
            names: vec!["username", "password"],
        },
    );
    check(
        S,
        "5.error,18.Aborted. See logs.,3.519;",
        T::Error {
            message: "Aborted. See logs.",
            status: Status::UPSTREAM_NOT_FOUND,
        },
    );
}

#[test]
fn parses_control_and_stream_instructions() {
    use Context::{ClientInteractive as C, ServerInteractive as S};
    check(
        S,
        "4.sync,13.1700000000123;",
        T::Sync {
            timestamp: 1_700_000_000_123,
            frames: None,
        },
    );
    check(
        S,
        "4.sync,4.2048,1.3;",
        T::Sync {
            timestamp: 2048,
            frames: Some(3),
        },
    );
    check(C, "3.nop;", T::Nop);
    check(C, "10.disconnect;", T::Disconnect);
    check(S, "3.log,5.hello;", T::Log { message: "hello" });
    check(
        C,
        "3.ack,1.5,2.OK,1.0;",
        T::Ack {
            stream: StreamIndex(5),
            message: "OK",
            status: Status::SUCCESS,
        },
    );
    check(
        C,
        "4.argv,1.1,10.text/plain,12.color-scheme;",
        T::Argv {
            stream: StreamIndex(1),
            mimetype: "text/plain",
            name: "color-scheme",
        },
    );
    check(
        S,
        "5.audio,1.1,31.audio/L16;rate=44100,channels=2;",
        T::Audio {
            stream: StreamIndex(1),
            mimetype: "audio/L16;rate=44100,channels=2",
        },
    );
    check(
        C,
        "4.blob,1.2,8.SGVsbG8=;",
        T::Blob {
            stream: StreamIndex(2),
            data: "SGVsbG8=",
        },
    );
    check(
        C,
        "9.clipboard,1.2,24.text/plain;charset=utf-8;",
        T::Clipboard {
            stream: StreamIndex(2),
            mimetype: "text/plain;charset=utf-8",
        },
    );
    check(
        S,
        "3.end,2.10;",
        T::End {
            stream: StreamIndex(10),
        },
    );
    check(
        S,
        "4.file,1.4,24.application/octet-stream,10.report.pdf;",
        T::File {
            stream: StreamIndex(4),
            mimetype: "application/octet-stream",
            filename: "report.pdf",
        },
    );
    check(
        S,
        "3.img,1.3,2.14,1.0,9.image/png,3.640,3.480;",
        T::Img {
            stream: StreamIndex(3),
            mask: ChannelMask::OVER,
            layer: LayerIndex::DEFAULT,
            mimetype: "image/png",
            x: 640,
            y: 480,
        },
    );
    check(
        S,
        "4.pipe,1.7,10.text/plain,6.events;",
        T::Pipe {
            stream: StreamIndex(7),
            mimetype: "text/plain",
            name: "events",
        },
    );
    check(
        S,
        "5.video,1.8,1.1,10.video/webm;",
        T::Video {
            stream: StreamIndex(8),
            layer: LayerIndex(1),
            mimetype: "video/webm",
        },
    );
}

#[test]
fn parses_object_instructions() {
    use Context::{ClientInteractive as C, ServerInteractive as S};
    check(
        S,
        "10.filesystem,1.0,11.Shared Disk;",
        T::Filesystem {
            object: ObjectIndex(0),
            name: "Shared Disk",
        },
    );
    check(
        C,
        "3.get,1.0,10./tmp/a.txt;",
        T::Get {
            object: ObjectIndex(0),
            name: "/tmp/a.txt",
        },
    );
    check(
        C,
        "3.put,1.0,1.9,24.application/octet-stream,9./up/a.bin;",
        T::Put {
            object: ObjectIndex(0),
            stream: StreamIndex(9),
            mimetype: "application/octet-stream",
            name: "/up/a.bin",
        },
    );
    check(
        S,
        "4.body,1.0,1.6,53.application/vnd.glyptodon.guacamole.stream-index+json,1./;",
        T::Body {
            object: ObjectIndex(0),
            stream: StreamIndex(6),
            mimetype: "application/vnd.glyptodon.guacamole.stream-index+json",
            name: "/",
        },
    );
    check(
        S,
        "8.undefine,1.0;",
        T::Undefine {
            object: ObjectIndex(0),
        },
    );
}

#[test]
fn parses_input_instructions() {
    use Context::{ClientInteractive as C, ServerInteractive as S};
    check(
        C,
        "3.key,5.65307,1.1;",
        T::Key {
            keysym: Keysym(0xff1b),
            pressed: true,
            timestamp: None,
        },
    );
    check(
        S,
        "3.key,2.97,1.0,4.1234;",
        T::Key {
            keysym: Keysym(97),
            pressed: false,
            timestamp: Some(1234),
        },
    );
    check(
        C,
        "5.mouse,3.512,3.384,1.1;",
        T::Mouse {
            x: 512,
            y: 384,
            buttons: ButtonMask::LEFT,
            timestamp: None,
        },
    );
    check(
        S,
        "5.mouse,2.-4,1.0,1.0,13.1700000000000;",
        T::Mouse {
            x: -4,
            y: 0,
            buttons: ButtonMask(0),
            timestamp: Some(1_700_000_000_000),
        },
    );
    check(
        C,
        "5.touch,1.0,3.100,3.200,2.10,2.12,4.45.5,3.0.8;",
        T::Touch {
            id: 0,
            x: 100,
            y: 200,
            x_radius: 10,
            y_radius: 12,
            angle: 45.5,
            force: 0.8,
            timestamp: None,
        },
    );
    check(
        C,
        "4.size,4.1280,3.720;",
        T::ClientSize {
            width: 1280,
            height: 720,
        },
    );
}

#[test]
fn parses_drawing_instructions() {
    use Context::ServerInteractive as S;
    check(
        S,
        "4.size,1.0,4.1920,4.1080;",
        T::LayerSize {
            layer: LayerIndex::DEFAULT,
            width: 1920,
            height: 1080,
        },
    );
    check(
        S,
        "5.cfill,2.14,2.-1,3.255,3.128,1.0,3.255;",
        T::Cfill {
            mask: ChannelMask::OVER,
            layer: LayerIndex(-1),
            r: 255,
            g: 128,
            b: 0,
            a: 255,
        },
    );
    check(
        S,
        "4.copy,2.-2,1.0,2.16,2.64,2.32,2.12,1.0,3.100,3.200;",
        T::Copy {
            src_layer: LayerIndex(-2),
            src_x: 0,
            src_y: 16,
            width: 64,
            height: 32,
            mask: ChannelMask::SRC,
            dst_layer: LayerIndex(0),
            dst_x: 100,
            dst_y: 200,
        },
    );
    check(
        S,
        "6.cursor,1.0,1.0,2.-1,1.0,1.0,2.11,2.16;",
        T::Cursor {
            x: 0,
            y: 0,
            src_layer: LayerIndex(-1),
            src_x: 0,
            src_y: 0,
            width: 11,
            height: 16,
        },
    );
    check(
        S,
        "4.rect,1.0,2.10,2.20,3.300,3.400;",
        T::Rect {
            layer: LayerIndex(0),
            x: 10,
            y: 20,
            width: 300,
            height: 400,
        },
    );
    assert!(LayerIndex(-1).is_buffer());
    assert!(!LayerIndex::DEFAULT.is_buffer());
}

#[test]
fn size_audio_and_video_depend_on_context() {
    let size = decode("4.size,4.1024,3.768,2.96;");
    assert!(matches!(
        T::parse(&size, Context::ClientHandshake),
        Ok(T::HandshakeSize { dpi: Some(96), .. })
    ));
    assert!(matches!(
        T::parse(&size, Context::ClientInteractive),
        Ok(T::ClientSize {
            width: 1024,
            height: 768
        })
    ));
    assert!(matches!(
        T::parse(&size, Context::ServerInteractive),
        Ok(T::LayerSize {
            layer: LayerIndex(1024),
            ..
        })
    ));
    let audio = decode("5.audio,1.1,9.audio/L16;");
    assert!(matches!(
        T::parse(&audio, Context::ClientHandshake),
        Ok(T::HandshakeAudio { .. })
    ));
    assert!(matches!(
        T::parse(&audio, Context::ServerInteractive),
        Ok(T::Audio { .. })
    ));
}

#[test]
fn other_opcodes_pass_through_untouched() {
    for wire in [
        "5.shade,1.1,3.128;",
        "0.,4.ping,13.1700000000000;",
        "8.transfer,2.-1,1.0,1.0,2.64,2.64,1.3,1.0,1.0,1.0;",
        "4.Blob,1.1,1.A;",
    ] {
        let instruction = decode(wire);
        let typed = T::parse(&instruction, Context::ServerInteractive).unwrap();
        assert_eq!(typed, T::Other(&instruction));
        assert_eq!(typed.opcode(), instruction.opcode());
        assert_eq!(typed.stream(), None);
        assert_eq!(encoded(&typed), wire);
        assert_eq!(typed.to_instruction(), instruction);
    }
}

#[test]
fn extra_arguments_are_ignored_but_kept_in_the_raw_form() {
    let instruction = decode("3.end,1.2,6.future;");
    let typed = T::parse(&instruction, Context::ServerInteractive).unwrap();
    assert_eq!(
        typed,
        T::End {
            stream: StreamIndex(2)
        }
    );
    assert_eq!(instruction.arg_count(), 2);
}

#[test]
fn reports_which_argument_is_wrong() {
    use Context::{ClientInteractive as C, ServerInteractive as S};
    let cases = [
        (C, "3.key,5.65307;", "key", 1, ArgumentError::Missing),
        (
            S,
            "3.img,1.3,2.14,1.0,9.image/png,3.640;",
            "img",
            5,
            ArgumentError::Missing,
        ),
        (
            C,
            "5.mouse,3.abc,1.0,1.0;",
            "mouse",
            0,
            ArgumentError::NotAnInteger,
        ),
        (
            C,
            "5.mouse,2.+1,1.0,1.0;",
            "mouse",
            0,
            ArgumentError::NotAnInteger,
        ),
        (
            C,
            "5.mouse,2.1 ,1.0,1.0;",
            "mouse",
            0,
            ArgumentError::NotAnInteger,
        ),
        (
            C,
            "5.mouse,1.-,1.0,1.0;",
            "mouse",
            0,
            ArgumentError::NotAnInteger,
        ),
        (
            C,
            "5.mouse,0.,1.0,1.0;",
            "mouse",
            0,
            ArgumentError::NotAnInteger,
        ),
        (
            C,
            "5.mouse,3.1.5,1.0,1.0;",
            "mouse",
            0,
            ArgumentError::NotAnInteger,
        ),
        (
            C,
            "5.mouse,10.2147483648,1.0,1.0;",
            "mouse",
            0,
            ArgumentError::OutOfRange,
        ),
        (
            C,
            "4.blob,2.-1,4.AAAA;",
            "blob",
            0,
            ArgumentError::OutOfRange,
        ),
        (
            C,
            "3.end,20.99999999999999999999;",
            "end",
            0,
            ArgumentError::OutOfRange,
        ),
        (
            S,
            "5.cfill,2.14,1.0,3.256,1.0,1.0,1.0;",
            "cfill",
            2,
            ArgumentError::OutOfRange,
        ),
        (
            S,
            "5.cfill,3.256,1.0,1.0,1.0,1.0,1.0;",
            "cfill",
            0,
            ArgumentError::OutOfRange,
        ),
        (S, "4.sync,2.-1;", "sync", 0, ArgumentError::OutOfRange),
        (S, "4.sync,1.1,1.x;", "sync", 1, ArgumentError::NotAnInteger),
        (
            S,
            "5.error,3.bad,2.xx;",
            "error",
            1,
            ArgumentError::NotAnInteger,
        ),
        (
            C,
            "5.touch,1.0,1.0,1.0,1.0,1.0,3.NaN,1.1;",
            "touch",
            5,
            ArgumentError::NotANumber,
        ),
        (
            C,
            "5.touch,1.0,1.0,1.0,1.0,1.0,3.inf,1.1;",
            "touch",
            5,
            ArgumentError::NotANumber,
        ),
        (
            C,
            "5.touch,1.0,1.0,1.0,1.0,1.0,1.0,2.+1;",
            "touch",
            6,
            ArgumentError::NotANumber,
        ),
        (
            C,
            "5.touch,1.0,1.0,1.0,1.0,1.0,1.0,0.;",
            "touch",
            6,
            ArgumentError::NotANumber,
        ),
        (C, "6.select;", "select", 0, ArgumentError::Missing),
    ];
    for (context, wire, opcode, index, reason) in cases {
        let error = parse_error(context, wire);
        assert_eq!(
            error,
            ParseError {
                opcode,
                index,
                reason
            },
            "{wire}"
        );
    }
    assert_eq!(
        parse_error(C, "5.mouse,3.abc,1.0,1.0;").to_string(),
        "malformed `mouse` instruction: argument 0 is not an integer"
    );
}

#[test]
fn key_pressed_is_any_non_zero_value() {
    let instruction = decode("3.key,2.97,1.2;");
    assert!(matches!(
        T::parse(&instruction, Context::ClientInteractive),
        Ok(T::Key { pressed: true, .. })
    ));
}

#[test]
fn stream_of_stream_instructions() {
    let blob = decode("4.blob,2.12,4.AAAA;");
    let typed = T::parse(&blob, Context::ClientInteractive).unwrap();
    assert_eq!(typed.stream(), Some(StreamIndex(12)));
    let mouse = decode("5.mouse,1.1,1.1,1.0;");
    let typed = T::parse(&mouse, Context::ClientInteractive).unwrap();
    assert_eq!(typed.stream(), None);
}

#[test]
fn every_typed_opcode_is_parsed_not_passed_through() {
    // Each typed opcode with enough zero arguments parses into something other than `Other`.
    for opcode in opcode::TYPED {
        let args = ["0"; 9];
        let instruction = Instruction::new(opcode, &args);
        for context in [
            Context::ClientHandshake,
            Context::ClientInteractive,
            Context::ServerHandshake,
            Context::ServerInteractive,
        ] {
            let typed = T::parse(&instruction, context).unwrap();
            assert!(!matches!(typed, T::Other(_)), "{opcode}");
            assert_eq!(typed.opcode(), opcode);
        }
    }
}

fn roundtrip(typed: &T<'_>, context: Context) -> Result<(), TestCaseError> {
    let instruction = typed.to_instruction();
    let again = T::parse(&instruction, context).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&again, typed);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn input_instructions_round_trip(
        x in any::<i32>(), y in any::<i32>(), buttons in any::<u32>(),
        keysym in any::<u32>(), pressed in any::<bool>(), timestamp in any::<Option<u64>>(),
        angle in -1e300f64..1e300, force in 0f64..1.0,
    ) {
        let c = Context::ClientInteractive;
        roundtrip(&T::Mouse { x, y, buttons: ButtonMask(buttons), timestamp }, c)?;
        roundtrip(&T::Key { keysym: Keysym(keysym), pressed, timestamp }, c)?;
        roundtrip(&T::Touch {
            id: buttons, x, y, x_radius: y, y_radius: x, angle, force, timestamp,
        }, c)?;
        roundtrip(&T::ClientSize { width: buttons, height: keysym }, c)?;
    }

    #[test]
    fn stream_instructions_round_trip(
        stream in any::<u32>(), code in any::<u32>(), text in any::<String>(),
        other in any::<String>(), timestamp in any::<u64>(), layer in any::<i32>(),
    ) {
        let c = Context::ServerInteractive;
        let stream = StreamIndex(stream);
        roundtrip(&T::Ack { stream, message: &text, status: Status::new(code) }, c)?;
        roundtrip(&T::Blob { stream, data: &text }, c)?;
        roundtrip(&T::File { stream, mimetype: &text, filename: &other }, c)?;
        roundtrip(&T::Error { message: &other, status: Status::new(code) }, c)?;
        roundtrip(&T::Sync { timestamp, frames: Some(code) }, c)?;
        roundtrip(&T::Video { stream, layer: LayerIndex(layer), mimetype: &other }, c)?;
        roundtrip(&T::Connect { values: vec![&text, &other, ""] }, Context::ClientHandshake)?;
    }
}
