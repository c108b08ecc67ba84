//! Byte transcripts of the handshake against a scripted guacd.

use std::time::Duration;

use zt_guac::{DecodeError, Status};

use super::*;

const ID: &str = "$8a1b2c3d-0000-4000-8000-0123456789ab";

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, Secret<String>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Secret::new((*v).to_owned())))
        .collect()
}

fn client() -> ClientInfo {
    let mut info = ClientInfo::new(1024, 768, 96);
    info.audio_mimetypes = vec!["audio/L16".to_owned()];
    info.timezone = Some("Europe/Paris".to_owned());
    info.name = Some("alice".to_owned());
    info
}

/// A handshake with `select` already taken.
fn started(protocol: &str, parameters: &[(&str, &str)]) -> (GuacdHandshake, Instant) {
    let now = Instant::now();
    let mut hs = GuacdHandshake::new(protocol, &params(parameters), client());
    hs.start(now);
    let select = hs.poll_transmit().expect("select");
    assert_eq!(
        select,
        format!("6.select,{}.{protocol};", protocol.len()).as_bytes()
    );
    assert!(hs.poll_transmit().is_none());
    (hs, now)
}

fn sent(hs: &mut GuacdHandshake) -> String {
    let mut all = Vec::new();
    while let Some(bytes) = hs.poll_transmit() {
        all.extend_from_slice(&bytes);
    }
    String::from_utf8(all).expect("utf-8")
}

fn ready_event(
    hs: &mut GuacdHandshake,
) -> (
    String,
    Option<ProtocolVersion>,
    ProtocolVersion,
    Vec<String>,
) {
    match hs.poll_event() {
        Some(HandshakeEvent::Ready {
            connection_id,
            guacd_version,
            protocol_version,
            args,
        }) => (connection_id, guacd_version, protocol_version, args),
        None => panic!("no event"),
    }
}

#[test]
fn full_transcript_with_guacd_1_5() {
    let (mut hs, now) = started(
        "rdp",
        &[
            ("hostname", "10.1.2.3"),
            ("port", "3389"),
            ("username", "admin"),
            ("password", "pa$$w0rd"),
            ("not-in-args", "never-sent"),
        ],
    );
    assert_eq!(hs.phase(), Phase::Args);
    hs.handle_input(
        now,
        b"4.args,13.VERSION_1_5_0,8.hostname,4.port,6.domain,8.username,8.password;",
    )
    .unwrap();
    assert_eq!(
        sent(&mut hs),
        "4.size,4.1024,3.768,2.96;5.audio,9.audio/L16;5.video;\
         5.image,9.image/png,10.image/jpeg;8.timezone,12.Europe/Paris;4.name,5.alice;\
         7.connect,13.VERSION_1_5_0,8.10.1.2.3,4.3389,0.,5.admin,8.pa$$w0rd;"
    );
    assert_eq!(hs.phase(), Phase::Ready);
    assert!(hs.poll_event().is_none());
    hs.handle_input(now, format!("5.ready,37.{ID};").as_bytes())
        .unwrap();
    let (id, guacd, negotiated, args) = ready_event(&mut hs);
    assert_eq!(id, ID);
    assert_eq!(guacd, Some(ProtocolVersion::V1_5_0));
    assert_eq!(negotiated, ProtocolVersion::V1_5_0);
    assert_eq!(args, ["hostname", "port", "domain", "username", "password"]);
    assert!(hs.is_ready());
    assert!(hs.take_leftover().is_empty());
    assert_eq!(hs.poll_timeout(), None);
}

#[test]
fn connect_values_follow_guacds_order_not_ours() {
    let (mut hs, now) = started(
        "vnc",
        &[("password", "p"), ("hostname", "h"), ("port", "5900")],
    );
    hs.handle_input(
        now,
        b"4.args,13.VERSION_1_5_0,4.port,9.read-only,8.password,8.hostname;",
    )
    .unwrap();
    let out = sent(&mut hs);
    assert!(
        out.ends_with("7.connect,13.VERSION_1_5_0,4.5900,0.,1.p,1.h;"),
        "{out}"
    );
}

#[test]
fn version_negotiation_picks_the_common_version_and_its_instructions() {
    // (guacd's args head, connect's version element, timezone sent, name sent)
    let cases = [
        ("13.VERSION_1_1_0,", "13.VERSION_1_1_0,", true, false),
        ("13.VERSION_1_3_0,", "13.VERSION_1_3_0,", true, false),
        ("13.VERSION_1_5_0,", "13.VERSION_1_5_0,", true, true),
        ("13.VERSION_1_6_0,", "13.VERSION_1_5_0,", true, true),
        ("13.VERSION_2_0_0,", "13.VERSION_1_5_0,", true, true),
        ("", "", false, false), // guacd before 1.1: no version at all
    ];
    for (head, version, timezone, name) in cases {
        let (mut hs, now) = started("ssh", &[("hostname", "h")]);
        hs.handle_input(now, format!("4.args,{head}8.hostname;").as_bytes())
            .unwrap();
        let out = sent(&mut hs);
        assert_eq!(out.contains("8.timezone,"), timezone, "{head}: {out}");
        assert_eq!(out.contains("4.name,"), name, "{head}: {out}");
        assert!(out.starts_with("4.size,"), "{out}");
        assert!(
            out.ends_with(&format!("7.connect,{version}1.h;")),
            "{head}: {out}"
        );
        hs.handle_input(now, b"5.ready,2.$x;").unwrap();
        let (_, guacd, negotiated, args) = ready_event(&mut hs);
        assert_eq!(guacd.is_some(), !head.is_empty());
        assert_eq!(negotiated.to_string().len(), 13);
        assert_eq!(args, ["hostname"]);
    }
}

#[test]
fn without_timezone_or_name_only_the_mandatory_instructions_are_sent() {
    let now = Instant::now();
    let mut hs = GuacdHandshake::new("rdp", &BTreeMap::new(), ClientInfo::default());
    hs.start(now);
    let _select = hs.poll_transmit();
    hs.handle_input(now, b"4.args,13.VERSION_1_5_0,8.hostname;")
        .unwrap();
    assert_eq!(
        sent(&mut hs),
        "4.size,4.1024,3.768,2.96;5.audio;5.video;5.image,9.image/png,10.image/jpeg;\
         7.connect,13.VERSION_1_5_0,0.;"
    );
}

#[test]
fn missing_parameters_are_empty_and_unlisted_ones_never_leave() {
    let (mut hs, now) = started("rdp", &[("password", "top-secret"), ("private-key", "KEY")]);
    hs.handle_input(now, b"4.args,13.VERSION_1_5_0,8.hostname,4.port;")
        .unwrap();
    let out = sent(&mut hs);
    assert!(out.ends_with("7.connect,13.VERSION_1_5_0,0.,0.;"), "{out}");
    assert!(!out.contains("top-secret") && !out.contains("KEY"));
}

#[test]
fn non_ascii_values_are_counted_in_characters() {
    let (mut hs, now) = started("rdp", &[("username", "Zoë"), ("domain", "例え")]);
    hs.handle_input(now, b"4.args,13.VERSION_1_5_0,8.username,6.domain;")
        .unwrap();
    assert!(sent(&mut hs).ends_with("7.connect,13.VERSION_1_5_0,3.Zoë,2.例え;"));
}

#[test]
fn bytes_after_ready_are_handed_back_at_an_instruction_boundary() {
    let (mut hs, now) = started("rdp", &[]);
    hs.handle_input(now, b"4.args,13.VERSION_1_5_0,8.hostname;")
        .unwrap();
    let _ = sent(&mut hs);
    hs.handle_input(now, b"5.ready,2.$a;4.size,1.0,4.1024,3.768;4.sync,3.12")
        .unwrap();
    let _ = ready_event(&mut hs);
    hs.handle_input(now, b"3;").unwrap(); // fed after ready: appended
    assert_eq!(
        &hs.take_leftover()[..],
        b"4.size,1.0,4.1024,3.768;4.sync,3.123;"
    );
    assert!(hs.take_leftover().is_empty());
}

#[test]
fn any_split_of_guacds_bytes_gives_the_same_result() {
    let server = format!(
        "4.args,13.VERSION_1_5_0,8.hostname,4.port,8.password;5.ready,37.{ID};3.nop;4.sync,2.42;"
    );
    for chunk in [1, 2, 3, 7, 13, server.len()] {
        let (mut hs, now) = started("rdp", &[("hostname", "h"), ("password", "é")]);
        let mut out = String::new();
        for piece in server.as_bytes().chunks(chunk) {
            hs.handle_input(now, piece).unwrap();
            out.push_str(&sent(&mut hs));
        }
        assert!(
            out.ends_with("7.connect,13.VERSION_1_5_0,1.h,0.,1.é;"),
            "{chunk}"
        );
        let (id, ..) = ready_event(&mut hs);
        assert_eq!(id, ID);
        assert_eq!(&hs.take_leftover()[..], b"3.nop;4.sync,2.42;", "{chunk}");
    }
}

#[test]
fn nop_and_log_before_ready_are_tolerated() {
    let (mut hs, now) = started("rdp", &[]);
    hs.handle_input(
        now,
        b"3.nop;3.log,5.hello;4.args,8.hostname;3.nop;5.ready,2.$b;",
    )
    .unwrap();
    assert_eq!(ready_event(&mut hs).0, "$b");
}

#[test]
fn guacd_error_reports_status_and_a_safe_message() {
    // In either waiting state.
    let (mut hs, now) = started("rdp", &[]);
    let error = hs
        .handle_input(now, b"5.error,25.Unable to connect to RDP.,3.519;")
        .unwrap_err();
    match &error {
        Error::Guacd { status, message } => {
            assert_eq!(*status, Status::UPSTREAM_NOT_FOUND);
            assert_eq!(message, "Unable to connect to RDP.");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(error.status(), Some(Status::UPSTREAM_NOT_FOUND));
    assert_eq!(
        error.to_string(),
        "guacd reported error status UPSTREAM_NOT_FOUND (519)"
    );

    let (mut hs, now) = started("rdp", &[("password", "pw")]);
    hs.handle_input(now, b"4.args,8.password;").unwrap();
    let long = format!("bad\x1b[31m\n{}", "x".repeat(1000));
    let error = hs
        .handle_input(
            now,
            format!("5.error,{}.{long},3.769;", long.chars().count()).as_bytes(),
        )
        .unwrap_err();
    let Error::Guacd { status, message } = error else {
        panic!("not a guacd error");
    };
    assert_eq!(status, Status::CLIENT_UNAUTHORIZED);
    assert_eq!(message.chars().count(), MAX_GUACD_MESSAGE_CHARS);
    assert!(message.starts_with("bad [31m ") && !message.chars().any(char::is_control));
}

#[test]
fn malformed_error_and_ready_are_protocol_violations() {
    for (bytes, after_args) in [
        (&b"5.error,3.bad,3.abc;"[..], false),
        (b"5.error;", true),
        (b"5.ready;", true),
    ] {
        let (mut hs, now) = started("rdp", &[]);
        if after_args {
            hs.handle_input(now, b"4.args,8.hostname;").unwrap();
        }
        let error = hs.handle_input(now, bytes).unwrap_err();
        assert!(
            matches!(error, Error::PeerMisbehaved(PeerMisbehaved::Malformed(_))),
            "{error:?}"
        );
    }
    let (mut hs, now) = started("rdp", &[]);
    hs.handle_input(now, b"4.args,8.hostname;").unwrap();
    assert!(matches!(
        hs.handle_input(now, b"5.ready,0.;"),
        Err(Error::PeerMisbehaved(PeerMisbehaved::EmptyConnectionId))
    ));
}

#[test]
fn instructions_out_of_place_are_rejected() {
    let cases: [(&[u8], bool, Option<&str>); 4] = [
        (b"5.ready,2.$a;", false, Some("ready")), // ready before args
        (b"4.args,8.hostname;", true, Some("args")), // args twice
        (b"4.sync,3.123;", false, Some("sync")),
        (b"7.unknown,1.x;", true, None),
    ];
    for (bytes, after_args, opcode) in cases {
        let (mut hs, now) = started("rdp", &[]);
        if after_args {
            hs.handle_input(now, b"4.args,8.hostname;").unwrap();
        }
        match hs.handle_input(now, bytes) {
            Err(Error::PeerMisbehaved(PeerMisbehaved::Unexpected { opcode: got })) => {
                assert_eq!(got, opcode);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn malformed_and_oversized_args_are_rejected_clearly() {
    // Garbage.
    let (mut hs, now) = started("rdp", &[]);
    assert!(matches!(
        hs.handle_input(now, b"hello guacd;"),
        Err(Error::PeerMisbehaved(PeerMisbehaved::Decode(
            DecodeError::NonDigitLength
        )))
    ));
    // 10,000 elements: stopped by the element limit after 128, long before the end.
    let (mut hs, now) = started("rdp", &[]);
    let mut huge = String::from("4.args,13.VERSION_1_5_0");
    for i in 0..10_000 {
        let name = format!("p{i}");
        huge.push_str(&format!(",{}.{name}", name.len()));
    }
    huge.push(';');
    let error = hs.handle_input(now, huge.as_bytes()).unwrap_err();
    assert!(
        matches!(
            error,
            Error::PeerMisbehaved(PeerMisbehaved::Decode(DecodeError::TooManyElements))
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "guacd violated the protocol: instruction has more elements than the limit"
    );
    // An element beyond guacd's length limit.
    let (mut hs, now) = started("rdp", &[]);
    assert!(matches!(
        hs.handle_input(now, b"4.args,99999.x"),
        Err(Error::PeerMisbehaved(PeerMisbehaved::Decode(
            DecodeError::ElementTooLong
        )))
    ));
    // Our own cap on parameter names.
    let settings = HandshakeSettings {
        max_args: 2,
        ..HandshakeSettings::default()
    };
    let now = Instant::now();
    let mut hs = GuacdHandshake::with_settings("rdp", &BTreeMap::new(), client(), settings);
    assert!(matches!(
        hs.handle_input(now, b"4.args,13.VERSION_1_5_0,1.a,1.b,1.c;"),
        Err(Error::PeerMisbehaved(PeerMisbehaved::TooManyArgs))
    ));
    // A version element that is not a version.
    let (mut hs, now) = started("rdp", &[]);
    assert!(matches!(
        hs.handle_input(now, b"4.args,13.VERSION_1_x_0,8.hostname;"),
        Err(Error::PeerMisbehaved(PeerMisbehaved::BadVersion))
    ));
}

#[test]
fn deadline_covers_both_phases() {
    let now = Instant::now();
    let settings = HandshakeSettings {
        timeout: Duration::from_secs(10),
        ..HandshakeSettings::default()
    };
    let mut hs = GuacdHandshake::with_settings("rdp", &BTreeMap::new(), client(), settings);
    assert_eq!(hs.poll_timeout(), None, "not armed before start");
    hs.start(now);
    hs.start(now + Duration::from_secs(5)); // the first start counts
    let deadline = now + Duration::from_secs(10);
    assert_eq!(hs.poll_timeout(), Some(deadline));
    hs.handle_timeout(deadline - Duration::from_millis(1))
        .unwrap();
    let _ = sent(&mut hs);
    assert!(matches!(
        hs.handle_timeout(deadline),
        Err(Error::TimedOut { phase: Phase::Args })
    ));
    assert_eq!(hs.poll_timeout(), None);

    let mut hs = GuacdHandshake::with_settings("rdp", &BTreeMap::new(), client(), settings);
    hs.handle_input(now, b"4.args,8.hostname;").unwrap(); // arms the deadline too
    let error = hs.handle_timeout(deadline).unwrap_err();
    assert!(matches!(
        error,
        Error::TimedOut {
            phase: Phase::Ready
        }
    ));
    assert_eq!(error.to_string(), "timed out waiting for guacd (ready)");
}

#[test]
fn a_failed_handshake_stays_failed_and_sends_nothing_more() {
    let (mut hs, now) = started("rdp", &[("password", "pw")]);
    assert!(hs.handle_input(now, b"x").is_err());
    assert!(hs.poll_transmit().is_none());
    assert!(matches!(
        hs.handle_input(now, b"4.args,8.password;"),
        Err(Error::Internal(_))
    ));
    assert!(matches!(hs.handle_timeout(now), Err(Error::Internal(_))));
    assert!(hs.poll_event().is_none());
}

#[test]
fn local_limits_name_the_parameter_never_the_value() {
    let long = "s".repeat(zt_guac::GUACD_MAX_ELEMENT_CHARS + 1);
    let (mut hs, now) = started("rdp", &[("private-key", &long)]);
    let error = hs
        .handle_input(now, b"4.args,13.VERSION_1_5_0,11.private-key;")
        .unwrap_err();
    assert!(matches!(&error, Error::ParameterTooLong { name } if name == "private-key"));
    assert!(!error.is_guacd_side());
    assert!(!format!("{error} {error:?}").contains("sss"));

    // Each value fits, the instruction does not (5 × 8000 > 32768 bytes).
    let value = "v".repeat(8000);
    let pairs: Vec<(String, String)> = (0..5).map(|i| (format!("p{i}"), value.clone())).collect();
    let borrowed: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (mut hs, now) = started("rdp", &borrowed);
    assert!(matches!(
        hs.handle_input(now, b"4.args,2.p0,2.p1,2.p2,2.p3,2.p4;"),
        Err(Error::ConnectTooLarge)
    ));

    let mut info = client();
    info.timezone = Some("t".repeat(10_000));
    let mut hs = GuacdHandshake::new("rdp", &BTreeMap::new(), info);
    assert!(matches!(
        hs.handle_input(now, b"4.args,13.VERSION_1_5_0,8.hostname;"),
        Err(Error::ClientInfoTooLarge)
    ));
}

#[test]
fn debug_output_never_shows_credentials() {
    let (mut hs, now) = started("rdp", &[("password", "hunter2")]);
    hs.handle_input(now, b"4.args,8.password;").unwrap();
    let debug = format!("{hs:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("queued: 1"), "{debug}");
}

#[test]
fn arbitrary_input_never_panics() {
    // A deterministic stream of guacd-like fragments and garbage, cut at every offset.
    let fragments: [&[u8]; 8] = [
        b"4.args,",
        b"13.VERSION_1_5_0,",
        b"5.ready,2.$a;",
        b"5.error,1.x,3.519;",
        b"\xff\xfe",
        b"99999999999999999999.",
        b";;,",
        b"8.hostname;",
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..500 {
        let (mut hs, now) = started("rdp", &[("password", "pw")]);
        for _ in 0..6 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let fragment = fragments
                .get((state % fragments.len() as u64) as usize)
                .copied()
                .unwrap_or_default();
            let _ = hs.handle_input(now, fragment);
            let _ = hs.handle_timeout(now);
            while hs.poll_transmit().is_some() {}
            while hs.poll_event().is_some() {}
        }
    }
}

#[test]
fn connect_has_one_value_per_name_plus_the_version_as_guacd_checks() {
    // guacd 1.1+ sends `ready`, then drops the user when `connect` does not have exactly one
    // element more than the names it listed (`guac_user_handle_connection`).
    for count in [0usize, 1, 5, 88, crate::DEFAULT_MAX_ARGS] {
        let mut args = String::from("4.args,13.VERSION_1_5_0");
        for i in 0..count {
            let name = format!("name-{i}");
            args.push_str(&format!(",{}.{name}", name.len()));
        }
        args.push(';');
        let (mut hs, now) = started("rdp", &[("name-0", "value")]);
        hs.handle_input(now, args.as_bytes()).unwrap();
        let out = sent(&mut hs);
        let connect = &out[out.find("7.connect").unwrap()..];
        let instruction = &decode_all(connect.as_bytes())[0];
        assert!(instruction.is("connect"));
        assert_eq!(instruction.arg_count(), count + 1, "{count}");
        assert_eq!(instruction.arg(0), Some("VERSION_1_5_0"));
    }
}

fn decode_all(bytes: &[u8]) -> Vec<Instruction> {
    let mut decoder = Decoder::new(zt_guac::Limits::default());
    decoder.feed(bytes);
    let mut out = Vec::new();
    while let Some(instruction) = decoder.poll_instruction().unwrap() {
        out.push(instruction);
    }
    out
}

#[test]
fn error_messages_lose_text_that_could_forge_or_hide_log_lines() {
    let (mut hs, now) = started("rdp", &[]);
    // A right-to-left override, a zero-width space, a line separator and a byte-order mark.
    let message = "a\u{202E}b\u{200B}c\u{2028}d\u{FEFF}e\u{2066}f";
    let error = hs
        .handle_input(
            now,
            format!("5.error,{}.{message},3.519;", message.chars().count()).as_bytes(),
        )
        .unwrap_err();
    let Error::Guacd { message, .. } = error else {
        panic!("not a guacd error");
    };
    assert_eq!(message, "a b c d e f");
}

#[test]
fn an_unrepresentable_timeout_means_no_deadline_not_a_panic() {
    let settings = HandshakeSettings {
        timeout: Duration::MAX,
        ..HandshakeSettings::default()
    };
    let now = Instant::now();
    let mut hs = GuacdHandshake::with_settings("rdp", &BTreeMap::new(), client(), settings);
    hs.start(now);
    assert_eq!(hs.poll_timeout(), None);
    hs.handle_timeout(now + Duration::from_secs(3600)).unwrap();
    hs.handle_input(now, b"4.args,8.hostname;").unwrap();
    assert_eq!(hs.poll_timeout(), None);
}

#[test]
fn client_info_debug_leaves_out_the_users_name() {
    let debug = format!("{:?}", client());
    assert!(!debug.contains("alice"), "{debug}");
    assert!(
        debug.contains("Europe/Paris") && debug.contains("<redacted>"),
        "{debug}"
    );
}
