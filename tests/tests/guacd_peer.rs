//! Tests of the guacd peer itself (`zt_tests::guacd_peer`), driven by ztproxy's real guacd
//! client (`zt_guacd`) and by a raw TCP Guacamole client: the transcripts guacd 1.5 would
//! produce, so the double can be trusted where the real guacd is not available.

// A test binary: a failed expectation is a panic, in helpers as in test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zt_api::Secret;
use zt_guac::{DecodeError, Decoder, Instruction, Limits, Status, opcode};
use zt_guacd::{ClientInfo, GuacdConnection, HandshakeSettings};

use zt_tests::guacd_peer::{
    CloseReason, ConnEvent, DisplayMode, DownloadOutcome, GUACD_PROTOCOL_VERSION, GuacdPeer,
    PeerConfig, PeerConn, RDP_ARGS, SSH_ARGS, TELNET_ARGS, VNC_ARGS,
};

const STEP: Duration = Duration::from_secs(10);

/// A Guacamole client on a raw TCP socket.
struct RawClient {
    stream: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
}

impl RawClient {
    async fn connect(addr: SocketAddr) -> Self {
        Self::with_limits(addr, Limits::default()).await
    }

    async fn with_limits(addr: SocketAddr, limits: Limits) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            decoder: Decoder::new(limits),
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// Takes over a connection `zt_guacd` set up.
    fn from_guacd(connection: GuacdConnection) -> Self {
        let mut decoder = Decoder::new(Limits::default());
        decoder.feed(&connection.leftover);
        Self {
            stream: connection.stream,
            decoder,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    async fn send(&mut self, op: &str, args: &[&str]) {
        let mut out = BytesMut::new();
        zt_guac::encode(op, args, &mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next instruction, `Ok(None)` at end of stream, `Err` on a decode error.
    async fn next(&mut self, timeout: Duration) -> Result<Option<Instruction>, DecodeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(instruction) = self.decoder.poll_instruction()? {
                return Ok(Some(instruction));
            }
            self.buf.clear();
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .expect("the peer answers in time");
            match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => self.decoder.feed(&self.buf),
            }
        }
    }

    /// The next instruction with `op`, skipping others.
    async fn expect(&mut self, op: &str) -> Instruction {
        loop {
            match self.next(STEP).await.unwrap() {
                Some(instruction) if instruction.is(op) => return instruction,
                Some(_) => {}
                None => panic!("closed while waiting for `{op}`"),
            }
        }
    }

    /// Everything until the peer closes.
    async fn until_closed(&mut self) -> Vec<Instruction> {
        let mut all = Vec::new();
        while let Some(instruction) = self.next(STEP).await.unwrap() {
            all.push(instruction);
        }
        all
    }

    /// A full handshake for `protocol` with `values` (the version first) in `connect`.
    async fn handshake(
        addr: SocketAddr,
        protocol: &str,
        connect: ConnectValues,
    ) -> (Self, Vec<String>) {
        let mut client = Self::connect(addr).await;
        client.send(opcode::SELECT, &[protocol]).await;
        let args = client.expect(opcode::ARGS).await;
        let args: Vec<String> = args.args().map(str::to_owned).collect();
        client.send(opcode::SIZE, &["1280", "720", "96"]).await;
        client.send(opcode::AUDIO, &[]).await;
        client.send(opcode::VIDEO, &[]).await;
        client.send(opcode::IMAGE, &["image/png"]).await;
        let values: Vec<String> = match connect {
            ConnectValues::Matching => {
                let mut values = vec![GUACD_PROTOCOL_VERSION.to_owned()];
                values.extend(args.iter().skip(1).map(|_| String::new()));
                values
            }
            ConnectValues::Count(n) => (0..n).map(|i| i.to_string()).collect(),
        };
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        client.send(opcode::CONNECT, &values).await;
        (client, args)
    }
}

enum ConnectValues {
    Matching,
    Count(usize),
}

fn parameters(pairs: &[(&str, &str)]) -> BTreeMap<String, Secret<String>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Secret::new((*v).to_owned())))
        .collect()
}

/// What `zt_guacd` learnt in the handshake.
struct Handshook {
    args: Vec<String>,
    guacd_version: Option<zt_guacd::ProtocolVersion>,
}

/// ztproxy's guacd client through the handshake, then a raw client on its socket.
async fn connect_guacd(
    peer: &GuacdPeer,
    protocol: &str,
    pairs: &[(&str, &str)],
) -> (RawClient, PeerConn, Handshook) {
    let mut info = ClientInfo::new(1600, 900, 120);
    info.timezone = Some("Europe/Paris".into());
    info.name = Some("alice".into());
    let settings = HandshakeSettings::with_timeout(STEP);
    let connection = zt_guacd::connect(peer.addr(), protocol, &parameters(pairs), info, settings)
        .await
        .expect("zt_guacd completes the handshake");
    let conn = peer.next_connection(STEP).await.unwrap();
    let id = &connection.connection_id;
    assert!(id.starts_with('$') && id.len() == 37, "{id}");
    let handshook = Handshook {
        args: connection.args.clone(),
        guacd_version: connection.guacd_version,
    };
    (RawClient::from_guacd(connection), conn, handshook)
}

#[tokio::test]
async fn the_handshake_records_every_parameter_by_name() {
    let peer = GuacdPeer::start(PeerConfig::default()).await.unwrap();
    let (_client, conn, connection) = connect_guacd(
        &peer,
        "rdp",
        &[
            ("hostname", "10.1.2.3"),
            ("port", "3389"),
            ("username", "svc"),
            ("password", "pw,with;separators"),
            ("disable-copy", "true"),
            ("recording-path", "/not/used"),
        ],
    )
    .await;
    // guacd 1.5's own list, version first on the wire.
    assert_eq!(connection.args, RDP_ARGS);
    assert_eq!(
        connection.guacd_version,
        Some(zt_guacd::ProtocolVersion::V1_5_0)
    );
    let record = conn.wait_connect_record(STEP).await.unwrap();
    assert_eq!(record.protocol, "rdp");
    assert_eq!(record.version, GUACD_PROTOCOL_VERSION);
    assert_eq!(record.parameters.len(), RDP_ARGS.len());
    let p = |name: &str| record.parameters.get(name).map(String::as_str);
    assert_eq!(p("hostname"), Some("10.1.2.3"));
    assert_eq!(p("password"), Some("pw,with;separators"));
    assert_eq!(p("disable-copy"), Some("true"));
    assert_eq!(
        p("domain"),
        Some(""),
        "absent parameters are empty, as guacd's defaults"
    );
    assert_eq!(record.size, (1600, 900, 120));
    assert_eq!(record.image, ["image/png", "image/jpeg"]);
    assert!(record.audio.is_empty() && record.video.is_empty());
    assert_eq!(record.timezone.as_deref(), Some("Europe/Paris"));
    assert_eq!(record.name.as_deref(), Some("alice"));
    assert!(matches!(conn.events().first(), Some(ConnEvent::Ready(id)) if id.starts_with('$')));
}

#[tokio::test]
async fn each_protocol_offers_guacd_1_5s_parameter_list() {
    let peer = GuacdPeer::start(PeerConfig::default()).await.unwrap();
    for (protocol, names) in [
        ("vnc", VNC_ARGS),
        ("ssh", SSH_ARGS),
        ("telnet", TELNET_ARGS),
    ] {
        let (_client, conn, connection) =
            connect_guacd(&peer, protocol, &[("hostname", "h"), ("password", "p")]).await;
        assert_eq!(connection.args, names, "{protocol}");
        let record = conn.wait_connect_record(STEP).await.unwrap();
        assert_eq!(record.protocol, protocol);
        assert_eq!(
            record.parameters.get("password").map(String::as_str),
            Some("p")
        );
    }
    // Every list has the policy and recording parameters ztproxy sets.
    for names in [RDP_ARGS, VNC_ARGS, SSH_ARGS, TELNET_ARGS] {
        for name in [
            "hostname",
            "port",
            "password",
            "disable-copy",
            "disable-paste",
            "recording-path",
            "recording-include-keys",
        ] {
            assert!(names.contains(&name), "{name}");
        }
    }
    for name in [
        "read-only",
        "dpi",
        "width",
        "initial-program",
        "color-depth",
        "enable-printing",
        "disable-upload",
        "disable-download",
    ] {
        assert!(RDP_ARGS.contains(&name), "{name}");
    }
}

#[tokio::test]
async fn an_unknown_protocol_or_a_bad_first_instruction_is_closed_without_a_word() {
    let peer = GuacdPeer::start(PeerConfig::default()).await.unwrap();

    let mut client = RawClient::connect(peer.addr()).await;
    client.send(opcode::SELECT, &["kermit"]).await;
    assert!(
        client.until_closed().await.is_empty(),
        "guacd sends neither args nor error"
    );
    let conn = peer.next_connection(STEP).await.unwrap();
    assert_eq!(
        conn.wait_closed(STEP).await.unwrap(),
        CloseReason::UnknownProtocol
    );
    assert!(
        conn.events()
            .contains(&ConnEvent::UnknownProtocol("kermit".into()))
    );

    let error = zt_guacd::connect(
        peer.addr(),
        "kermit",
        &parameters(&[]),
        ClientInfo::default(),
        HandshakeSettings::with_timeout(STEP),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, zt_guacd::Error::Closed { .. }), "{error:?}");
    let _ = peer.next_connection(STEP).await.unwrap();

    for first in [
        &b"3.nop;"[..],
        b"6.select;",
        b"6.select,3.rdp,3.vnc;",
        b"6.select,37.$00000000-0000-4000-a000-000000000000;",
    ] {
        let mut client = RawClient::connect(peer.addr()).await;
        client.send_raw(first).await;
        assert!(client.until_closed().await.is_empty());
        let conn = peer.next_connection(STEP).await.unwrap();
        assert_eq!(
            conn.wait_closed(STEP).await.unwrap(),
            CloseReason::HandshakeFailed
        );
    }
}

#[tokio::test]
async fn connect_with_the_wrong_value_count_gets_ready_then_a_silent_close() {
    let peer = GuacdPeer::start(PeerConfig::default()).await.unwrap();
    for count in [0, 3, RDP_ARGS.len(), RDP_ARGS.len() + 2] {
        let (mut client, args) =
            RawClient::handshake(peer.addr(), "rdp", ConnectValues::Count(count)).await;
        assert_eq!(args.len(), RDP_ARGS.len() + 1);
        let rest = client.until_closed().await;
        // guacd sends `ready` before it checks `connect`, then closes without error or
        // disconnect.
        assert_eq!(rest.len(), 1, "{rest:?}");
        assert!(rest[0].is(opcode::READY));
        let conn = peer.next_connection(STEP).await.unwrap();
        assert_eq!(
            conn.wait_closed(STEP).await.unwrap(),
            CloseReason::WrongValueCount
        );
        assert!(conn.events().contains(&ConnEvent::WrongValueCount {
            expected: RDP_ARGS.len() + 1,
            got: count
        }));
        assert!(conn.try_connect_record().is_none());
    }
    // The right count works.
    let (mut client, _) = RawClient::handshake(peer.addr(), "rdp", ConnectValues::Matching).await;
    client.expect(opcode::READY).await;
    client.expect(opcode::SYNC).await;
}

#[tokio::test]
async fn frames_of_png_tiles_arrive_with_sync_after_the_connect_delay() {
    let config = PeerConfig {
        display: DisplayMode::Frames {
            interval: Duration::from_millis(20),
        },
        connect_delay: Duration::from_millis(200),
        ..PeerConfig::default()
    };
    let peer = GuacdPeer::start(config).await.unwrap();
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[("hostname", "h")]).await;
    let started = tokio::time::Instant::now();

    // The initial display: the layer size is the client's, then drawing, then `sync`.
    let first = client.next(STEP).await.unwrap().unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "display before guacd reached the target"
    );
    assert_eq!(first.opcode(), opcode::SIZE);
    assert_eq!(first.args().collect::<Vec<_>>(), ["0", "1600", "900"]);

    let mut syncs = 0;
    let mut images = 0;
    let mut png = Vec::new();
    let mut last_timestamp = 0u64;
    let mut seen = std::collections::HashSet::new();
    while syncs < 20 {
        let instruction = client.next(STEP).await.unwrap().expect("open");
        seen.insert(instruction.opcode().to_owned());
        match instruction.opcode() {
            opcode::IMG => {
                images += 1;
                assert_eq!(instruction.arg(0), Some("1"), "client-level stream");
                assert_eq!(instruction.arg(3), Some("image/png"));
                png.clear();
            }
            opcode::BLOB => {
                let data = instruction.arg(1).unwrap();
                assert!(data.len() <= 8064, "guacd's blobs are at most 6048 bytes");
                png.extend(STANDARD.decode(data).unwrap());
            }
            opcode::END => {
                // A real PNG, decodable.
                let decoder = png::Decoder::new(std::io::Cursor::new(png.clone()));
                let reader = decoder.read_info().expect("a valid PNG");
                let info = reader.info();
                assert!(info.width >= 32 && info.width <= 256, "{}", info.width);
            }
            opcode::SYNC => {
                assert_eq!(
                    instruction.arg_count(),
                    1,
                    "guacd 1.5 sends the timestamp alone"
                );
                let timestamp: u64 = instruction.arg(0).unwrap().parse().unwrap();
                assert!(timestamp > last_timestamp);
                last_timestamp = timestamp;
                syncs += 1;
                client
                    .send(opcode::SYNC, &[instruction.arg(0).unwrap()])
                    .await;
            }
            _ => {}
        }
    }
    assert!(images >= 20, "{images}");
    for op in [opcode::RECT, opcode::CFILL, opcode::CURSOR, opcode::COPY] {
        assert!(seen.contains(op), "no `{op}` in {seen:?}");
    }
    assert!(conn.events().contains(&ConnEvent::TargetReached));
    conn.wait_received(
        |all| all.iter().filter(|i| i.is(opcode::SYNC)).count() >= 20,
        STEP,
    )
    .await
    .unwrap();
    let stats = conn.stats();
    assert!(stats.frames_sent >= 20);
    assert!(stats.last_sync_acked.is_some());
    assert_eq!(conn.sent_syncs().len() as u64, stats.frames_sent);
}

#[tokio::test]
async fn a_slow_client_holds_the_display_back_and_bulk_reports_done() {
    let config = PeerConfig {
        display: DisplayMode::Bulk {
            bytes: 4 * 1024 * 1024,
        },
        connect_delay: Duration::ZERO,
        max_unacked_frames: 4,
        ..PeerConfig::default()
    };
    let peer = GuacdPeer::start(config).await.unwrap();
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;

    // Reading but not answering: four frames, then nothing.
    let mut pending = Vec::new();
    let mut first_bytes = 0u64;
    while pending.len() < 4 {
        let instruction = client.next(STEP).await.unwrap().expect("open");
        first_bytes += instruction.len() as u64;
        if instruction.is(opcode::SYNC) {
            pending.push(instruction.arg(0).unwrap().to_owned());
        }
    }
    let more = tokio::time::timeout(Duration::from_millis(500), client.expect(opcode::SYNC)).await;
    assert!(more.is_err(), "a fifth frame went out unacknowledged");
    assert_eq!(conn.stats().frames_sent, 4);

    // Answering: the bulk transfer completes.
    for timestamp in &pending {
        client.send(opcode::SYNC, &[timestamp]).await;
    }
    let reader = tokio::spawn(async move {
        let mut bytes = 0u64;
        loop {
            match client.next(STEP).await.unwrap() {
                Some(instruction) => {
                    bytes += instruction.len() as u64;
                    if instruction.is(opcode::SYNC) {
                        client
                            .send(opcode::SYNC, &[instruction.arg(0).unwrap()])
                            .await;
                    }
                }
                None => return bytes,
            }
        }
    });
    let (bytes, frames) = conn.wait_bulk_done(Duration::from_secs(60)).await.unwrap();
    assert!(bytes >= 4 * 1024 * 1024);
    assert!(frames > 4);
    assert!(conn.stats().processing_lag < Duration::from_secs(5));
    conn.disconnect().await.unwrap();
    let received = first_bytes + reader.await.unwrap();
    assert!(received >= bytes, "{received} < {bytes}");
}

#[tokio::test]
async fn a_silent_client_gets_guacds_timeout_error() {
    let config = PeerConfig {
        client_timeout: Duration::from_secs(1),
        ..PeerConfig::default()
    };
    let peer = GuacdPeer::start(config).await.unwrap();
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    let started = tokio::time::Instant::now();
    let rest = client.until_closed().await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    let n = rest.len();
    assert!(n >= 2, "{rest:?}");
    let error = &rest[n - 2];
    assert_eq!(error.opcode(), opcode::ERROR);
    assert_eq!(error.arg(0), Some("User is not responding."));
    assert_eq!(error.arg(1), Some("776"));
    assert!(rest[n - 1].is(opcode::DISCONNECT));
    assert_eq!(conn.wait_closed(STEP).await.unwrap(), CloseReason::TimedOut);
    assert!(conn.events().contains(&ConnEvent::TimedOut));
}

#[tokio::test]
async fn an_idle_display_sends_keep_alive_nops_and_any_input_keeps_the_user() {
    let config = PeerConfig {
        client_timeout: Duration::from_millis(1500),
        keep_alive_interval: Duration::from_millis(200),
        ..PeerConfig::default()
    };
    let peer = GuacdPeer::start(config).await.unwrap();
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    client.expect(opcode::SYNC).await;
    // Three seconds of `nop` both ways: longer than the timeout, the user stays.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut nops = 0;
    while tokio::time::Instant::now() < deadline {
        let instruction = client.next(STEP).await.unwrap().expect("open");
        assert!(instruction.is(opcode::NOP), "{instruction:?}");
        nops += 1;
        client.send(opcode::NOP, &[]).await;
    }
    assert!(nops >= 10, "{nops}");
    assert_eq!(conn.close_reason(), None);
}

#[tokio::test]
async fn downloads_wait_for_each_ack_and_stop_at_a_refusal() {
    let peer = GuacdPeer::start(PeerConfig::default()).await.unwrap();
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    client.expect(opcode::SYNC).await;

    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let download = {
        let conn = conn.clone();
        let data = data.clone();
        tokio::spawn(async move { conn.download("report.pdf", "application/pdf", &data).await })
    };
    let file = client.expect(opcode::FILE).await;
    let stream = file.arg(0).unwrap().to_owned();
    assert_eq!(stream, "0", "a user-level (even) stream");
    assert_eq!(
        file.args().skip(1).collect::<Vec<_>>(),
        ["application/pdf", "report.pdf"]
    );
    // Nothing until the client acknowledges.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), client.expect(opcode::BLOB))
            .await
            .is_err()
    );
    let mut got = Vec::new();
    loop {
        client.send(opcode::ACK, &[&stream, "OK", "0"]).await;
        let next = client.next(STEP).await.unwrap().unwrap();
        match next.opcode() {
            opcode::BLOB => {
                let block = STANDARD.decode(next.arg(1).unwrap()).unwrap();
                assert!(block.len() <= 4096);
                got.extend(block);
            }
            opcode::END => break,
            other => panic!("unexpected `{other}`"),
        }
    }
    assert_eq!(got, data);
    assert_eq!(download.await.unwrap().unwrap(), DownloadOutcome::Completed);

    // A refusal ends the stream with nothing more from guacd.
    let download = {
        let conn = conn.clone();
        tokio::spawn(async move {
            conn.download("secret.xlsx", "application/octet-stream", b"x")
                .await
        })
    };
    let file = client.expect(opcode::FILE).await;
    let stream = file.arg(0).unwrap().to_owned();
    client
        .send(opcode::ACK, &[&stream, "Download refused", "771"])
        .await;
    assert_eq!(
        download.await.unwrap().unwrap(),
        DownloadOutcome::Refused(771, "Download refused".into())
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), client.expect(opcode::BLOB))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn uploads_and_clipboard_from_the_client_are_acked_and_recorded_as_guacd_does() {
    let peer = GuacdPeer::start(PeerConfig::default()).await.unwrap();
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    client.expect(opcode::SYNC).await;

    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    client
        .send(opcode::FILE, &["5", "text/plain", "notes.txt"])
        .await;
    let ack = client.expect(opcode::ACK).await;
    assert_eq!(
        ack.args().collect::<Vec<_>>(),
        ["5", "OK (STREAM BEGIN)", "0"]
    );
    for chunk in data.chunks(6048) {
        client
            .send(opcode::BLOB, &["5", &STANDARD.encode(chunk)])
            .await;
        let ack = client.expect(opcode::ACK).await;
        assert_eq!(
            ack.args().collect::<Vec<_>>(),
            ["5", "OK (DATA RECEIVED)", "0"]
        );
    }
    client.send(opcode::END, &["5"]).await;
    let ack = client.expect(opcode::ACK).await;
    assert_eq!(
        ack.args().collect::<Vec<_>>(),
        ["5", "OK (STREAM END)", "0"]
    );
    let uploads = conn.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        (uploads[0].name.as_str(), uploads[0].mimetype.as_str()),
        ("notes.txt", "text/plain")
    );
    assert_eq!(uploads[0].data, data);

    // The clipboard: no acks, the text recorded at `end`.
    client.send(opcode::CLIPBOARD, &["7", "text/plain"]).await;
    client
        .send(opcode::BLOB, &["7", &STANDARD.encode("héllo ")])
        .await;
    client
        .send(opcode::BLOB, &["7", &STANDARD.encode("world")])
        .await;
    client.send(opcode::END, &["7"]).await;
    conn.wait_received(
        |all| all.iter().filter(|i| i.is(opcode::END)).count() == 2,
        STEP,
    )
    .await
    .unwrap();
    assert_eq!(conn.clipboard_received(), ["héllo world"]);

    // Streams guacd does not know, or beyond its 64: "Invalid stream index".
    client.send(opcode::BLOB, &["9", "AAAA"]).await;
    let ack = client.expect(opcode::ACK).await;
    assert_eq!(
        ack.args().collect::<Vec<_>>(),
        ["9", "Invalid stream index", "768"]
    );
    client.send(opcode::FILE, &["64", "text/plain", "x"]).await;
    let ack = client.expect(opcode::ACK).await;
    assert_eq!(
        ack.args().collect::<Vec<_>>(),
        ["64", "Invalid stream index", "768"]
    );

    // And from the target: `clipboard`, `blob`s of 4096 bytes, `end`.
    let text = "x".repeat(10_000);
    conn.clipboard(&text).await.unwrap();
    let open = client.expect(opcode::CLIPBOARD).await;
    assert_eq!(open.arg(1), Some("text/plain"));
    let mut got = Vec::new();
    loop {
        let next = client.next(STEP).await.unwrap().unwrap();
        match next.opcode() {
            opcode::BLOB => got.extend(STANDARD.decode(next.arg(1).unwrap()).unwrap()),
            opcode::END => break,
            opcode::NOP => {}
            other => panic!("unexpected `{other}`"),
        }
    }
    assert_eq!(got, text.as_bytes());
}

#[tokio::test]
async fn disable_upload_is_refused_as_the_rdp_plugin_does() {
    let peer = GuacdPeer::start(PeerConfig::default()).await.unwrap();
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[("disable-upload", "true")]).await;
    client
        .send(opcode::FILE, &["3", "application/octet-stream", "a.exe"])
        .await;
    let ack = client.expect(opcode::ACK).await;
    assert_eq!(
        ack.args().collect::<Vec<_>>(),
        ["3", "FAIL (UPLOAD DISABLED)", "771"]
    );
    client.send(opcode::END, &["3"]).await;
    conn.wait_received(|all| all.iter().any(|i| i.is(opcode::END)), STEP)
        .await
        .unwrap();
    assert!(conn.uploads().is_empty());
}

#[tokio::test]
async fn ten_thousand_args_are_offered_when_asked() {
    let config = PeerConfig {
        hostile_args: Some(10_000),
        ..PeerConfig::default()
    };
    let peer = GuacdPeer::start(config).await.unwrap();
    let error = zt_guacd::connect(
        peer.addr(),
        "rdp",
        &parameters(&[]),
        ClientInfo::default(),
        HandshakeSettings::with_timeout(STEP),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, zt_guacd::Error::PeerMisbehaved(_)),
        "{error:?}"
    );
    let _ = peer.next_connection(STEP).await.unwrap();

    let mut limits = Limits::default();
    limits.max_elements = 20_000;
    limits.max_instruction_bytes = 1 << 20;
    let mut client = RawClient::with_limits(peer.addr(), limits).await;
    client.send(opcode::SELECT, &["rdp"]).await;
    let args = client.expect(opcode::ARGS).await;
    assert_eq!(args.arg_count(), 10_001);
    assert_eq!(args.arg(0), Some(GUACD_PROTOCOL_VERSION));
}

#[tokio::test]
async fn guacd_errors_and_disconnects_end_the_session() {
    let config = PeerConfig {
        error_on_connect: Some(("Protocol plugin failed".into(), 0x0100)),
        ..PeerConfig::default()
    };
    let peer = GuacdPeer::start(config).await.unwrap();
    let error = zt_guacd::connect(
        peer.addr(),
        "rdp",
        &parameters(&[]),
        ClientInfo::default(),
        HandshakeSettings::with_timeout(STEP),
    )
    .await
    .unwrap_err();
    match error {
        zt_guacd::Error::Guacd { status, .. } => assert_eq!(status, Status::UNSUPPORTED),
        other => panic!("{other:?}"),
    }
    let conn = peer.next_connection(STEP).await.unwrap();
    assert_eq!(
        conn.wait_closed(STEP).await.unwrap(),
        CloseReason::ErrorOnConnect
    );

    let peer = GuacdPeer::start(PeerConfig::default()).await.unwrap();
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    client.expect(opcode::SYNC).await;
    conn.error(
        "Unable to connect to RDP server",
        Status::UPSTREAM_NOT_FOUND.code(),
    )
    .await
    .unwrap();
    let rest = client.until_closed().await;
    let tail: Vec<&str> = rest.iter().map(Instruction::opcode).collect();
    assert_eq!(tail[tail.len() - 2..], [opcode::ERROR, opcode::DISCONNECT]);
    assert_eq!(rest[rest.len() - 2].arg(1), Some("519"));
    assert_eq!(conn.close_reason(), Some(CloseReason::PeerError));
    assert!(
        conn.send(Instruction::new(opcode::NOP, &[] as &[&str]))
            .await
            .is_err()
    );

    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    conn.disconnect().await.unwrap();
    let rest = client.until_closed().await;
    assert!(rest.last().unwrap().is(opcode::DISCONNECT));
    assert!(!rest.iter().any(|i| i.is(opcode::ERROR)));

    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    client.expect(opcode::SYNC).await;
    conn.abort().await;
    assert!(client.until_closed().await.is_empty(), "abort says nothing");
    assert_eq!(conn.close_reason(), Some(CloseReason::Aborted));
}

#[tokio::test]
async fn the_client_leaving_or_misbehaving_ends_the_session_as_in_guacd() {
    let peer = GuacdPeer::start(PeerConfig::default()).await.unwrap();

    // `disconnect`: answered with `disconnect`.
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    client.send(opcode::KEY, &["65", "1"]).await;
    client.send(opcode::DISCONNECT, &[]).await;
    let rest = client.until_closed().await;
    assert!(rest.last().unwrap().is(opcode::DISCONNECT));
    assert_eq!(
        conn.wait_closed(STEP).await.unwrap(),
        CloseReason::ClientDisconnected
    );
    assert!(conn.events().contains(&ConnEvent::ClientDisconnected));
    let received: Vec<String> = conn
        .received()
        .iter()
        .map(|i| i.opcode().to_owned())
        .collect();
    assert_eq!(received, ["key", "disconnect"]);

    // Malformed input: `disconnect`, no `error`.
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    client.send_raw(b"3.key,2.65,1.1;xyz;").await;
    let rest = client.until_closed().await;
    assert!(rest.last().unwrap().is(opcode::DISCONNECT));
    assert!(!rest.iter().any(|i| i.is(opcode::ERROR)));
    assert_eq!(
        conn.wait_closed(STEP).await.unwrap(),
        CloseReason::Malformed
    );
    let events = conn.events();
    assert!(
        events.contains(&ConnEvent::Malformed(DecodeError::NonDigitLength)),
        "{events:?}"
    );

    // Beyond guacd's element limit.
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    client.send_raw(b"4.blob,1.1,9000.").await;
    client.until_closed().await;
    assert!(
        conn.events()
            .contains(&ConnEvent::Malformed(DecodeError::ElementTooLong))
    );

    // A `sync` for a frame guacd never sent.
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    let sync = client.expect(opcode::SYNC).await;
    let future = sync.arg(0).unwrap().parse::<u64>().unwrap() + 60_000;
    client.send(opcode::SYNC, &[&future.to_string()]).await;
    let rest = client.until_closed().await;
    assert!(rest.last().unwrap().is(opcode::DISCONNECT));
    assert_eq!(
        conn.wait_closed(STEP).await.unwrap(),
        CloseReason::FutureSync
    );

    // The socket going away.
    let (client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    drop(client);
    assert_eq!(
        conn.wait_closed(STEP).await.unwrap(),
        CloseReason::ClientClosed
    );
}

#[tokio::test]
async fn hostile_output_helpers_do_what_they_say() {
    let peer = GuacdPeer::start(PeerConfig::default()).await.unwrap();

    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    client.expect(opcode::SYNC).await;
    conn.sync_flood(5_000).await.unwrap();
    let mut syncs = Vec::new();
    while syncs.len() < 5_000 {
        let sync = client.expect(opcode::SYNC).await;
        syncs.push(sync.arg(0).unwrap().parse::<u64>().unwrap());
    }
    assert!(syncs.windows(2).all(|w| w[0] < w[1]));
    let sent = conn.sent_syncs();
    assert!(syncs.iter().all(|t| sent.contains(t)));
    // Acknowledging the newest is allowed.
    client
        .send(opcode::SYNC, &[&syncs[4_999].to_string()])
        .await;
    conn.wait_received(|all| all.iter().any(|i| i.is(opcode::SYNC)), STEP)
        .await
        .unwrap();

    conn.send_raw(bytes::Bytes::from_static(b"4.sync,abc;"))
        .await
        .unwrap();
    assert_eq!(client.next(STEP).await, Err(DecodeError::NonDigitLength));

    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    client.expect(opcode::SYNC).await;
    conn.oversized_element(100_000).await.unwrap();
    assert_eq!(client.next(STEP).await, Err(DecodeError::ElementTooLong));

    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    client.expect(opcode::SYNC).await;
    let written = conn
        .never_ending_instruction_capped(1024 * 1024)
        .await
        .unwrap();
    assert!(written > 1024 * 1024);
    assert_eq!(client.next(STEP).await, Err(DecodeError::ElementTooLong));

    // The peer keeps its bounds: an instruction flood from the client is counted, not kept.
    let config = PeerConfig {
        max_received: 100,
        ..PeerConfig::default()
    };
    let peer = GuacdPeer::start(config).await.unwrap();
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[]).await;
    let mut flood = BytesMut::new();
    for i in 0..1_000 {
        zt_guac::encode(opcode::MOUSE, &[&i.to_string(), "1", "0"], &mut flood);
    }
    client.send_raw(&flood).await;
    conn.wait_received(|_| false, Duration::ZERO)
        .await
        .unwrap_err();
    let deadline = tokio::time::Instant::now() + STEP;
    while conn.stats().received_count < 1_000 && tokio::time::Instant::now() < deadline {
        conn.wait_received(|_| false, Duration::from_millis(20))
            .await
            .unwrap_err();
    }
    assert_eq!(conn.received().len(), 100);
    assert_eq!(conn.stats().received_dropped, 900);
}

// ---------------------------------------------------------------------------------------
// guacd 1.6

/// The `args` list of `protocol` in the real guacd 1.6.0's answers (the fixture).
fn measured_args(protocol: &str) -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/guacd-1.6/args.txt"
    ))
    .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{protocol}: ")))
        .unwrap_or_else(|| panic!("no {protocol} line"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn guacd_1_6_offers_the_parameter_lists_it_was_measured_with() {
    let peer = GuacdPeer::start(PeerConfig::guacd_1_6()).await.unwrap();
    for protocol in ["rdp", "vnc", "ssh", "telnet", "kubernetes"] {
        let (_client, _conn, connection) =
            connect_guacd(&peer, protocol, &[("hostname", "h")]).await;
        let measured = measured_args(protocol);
        assert_eq!(measured[0], GUACD_PROTOCOL_VERSION, "1.6 still says 1.5.0");
        assert_eq!(connection.args, measured[1..], "{protocol}");
    }
    // 1.6 lists what 1.5 did not.
    assert!(measured_args("rdp").iter().any(|n| n == "disable-gfx"));
    assert!(!RDP_ARGS.contains(&"disable-gfx"));
}

#[tokio::test]
async fn guacd_1_6_greets_before_sizing_and_interleaves_its_image_streams() {
    let config = PeerConfig {
        display: DisplayMode::Frames {
            interval: Duration::from_millis(10),
        },
        ..PeerConfig::guacd_1_6()
    };
    let peer = GuacdPeer::start(config).await.unwrap();
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[("hostname", "h")]).await;
    let mut received = Vec::new();
    while received
        .iter()
        .filter(|i: &&Instruction| i.is(opcode::SYNC))
        .count()
        < 30
    {
        let instruction = client.next(STEP).await.unwrap().expect("open");
        if instruction.is(opcode::SYNC) {
            client
                .send(opcode::SYNC, &[instruction.arg(0).unwrap()])
                .await;
        }
        received.push(instruction);
    }
    // The greeting: pointer from an unsized buffer, mouse with a timestamp, an empty frame.
    let ops: Vec<&str> = received.iter().take(3).map(Instruction::opcode).collect();
    assert_eq!(ops, ["cursor", "mouse", "sync"]);
    assert_eq!(received[0].arg(2), Some("-2"));
    assert_eq!(received[1].arg_count(), 4);
    assert_eq!(received[2].arg(1), Some("0"), "the greeting's frame count");
    let first_size = received
        .iter()
        .position(|i| i.is(opcode::SIZE) && i.arg(0) == Some("0"))
        .unwrap();
    assert!(first_size > 2);
    assert_eq!(
        zt_recorder::export::draws_before_size(
            &received
                .iter()
                .flat_map(|i| i.raw().to_vec())
                .collect::<Vec<_>>()
        )
        .as_deref(),
        Some("cursor")
    );
    // Every later sync carries its frame count; frames copy into buffer -1 first.
    assert!(
        received[3..]
            .iter()
            .filter(|i| i.is(opcode::SYNC))
            .all(|i| i.arg(1) == Some("1"))
    );
    assert!(
        received
            .iter()
            .any(|i| i.is(opcode::COPY) && i.arg(0) == Some("0") && i.arg(6) == Some("-1"))
    );
    // Two image streams open on layer 0 at once, blobs interleaved, never overlapping.
    let mut open: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let (mut concurrent, mut interleaved, mut last_blob) = (0, 0, None::<String>);
    for instruction in &received {
        match instruction.opcode() {
            opcode::IMG if instruction.arg(2) == Some("0") => {
                let at = |n| instruction.arg(n).unwrap().parse::<i64>().unwrap();
                open.insert(instruction.arg(0).unwrap().to_owned(), (at(4), at(5)));
                if open.len() == 2 {
                    concurrent += 1;
                    let mut xs = open.values().map(|&(x, _)| x);
                    let (a, b) = (xs.next().unwrap(), xs.next().unwrap());
                    assert!(a != b, "side by side");
                }
            }
            opcode::BLOB => {
                let stream = instruction.arg(0).unwrap().to_owned();
                if open.len() == 2 && last_blob.as_ref().is_some_and(|l| *l != stream) {
                    interleaved += 1;
                }
                last_blob = Some(stream);
            }
            opcode::END => {
                open.remove(instruction.arg(0).unwrap());
            }
            _ => {}
        }
    }
    assert!(
        concurrent >= 10 && interleaved >= 10,
        "{concurrent} {interleaved}"
    );
    // The display model follows it all without losing track, so key frames can be taken.
    let mut display = zt_display::Display::new(zt_display::DisplayLimits::default());
    for instruction in &received {
        let _ = display.handle(instruction);
        assert!(
            !display.is_degraded(),
            "{instruction:?}: {:?}",
            display.degradation()
        );
    }
    assert!(display.key_frame_ready());
    assert_eq!(display.size(), (1600, 900));
    assert_eq!(conn.sent_syncs().len() as u64, conn.stats().frames_sent);
}

#[tokio::test]
async fn a_replay_sends_the_recorded_stream_at_its_pace() {
    let stream = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/guacd-1.6/rdp-xrdp.guac"
    ))
    .unwrap();
    let config = PeerConfig {
        display: DisplayMode::Replay {
            stream: stream.clone().into(),
            speed: 4,
        },
        ..PeerConfig::guacd_1_6()
    };
    let peer = GuacdPeer::start(config).await.unwrap();
    let (mut client, conn, _) = connect_guacd(&peer, "rdp", &[("hostname", "h")]).await;
    let started = tokio::time::Instant::now();
    let mut received = Vec::new();
    let mut decoder = Decoder::new(Limits::default());
    decoder.feed(&stream);
    let mut expected = Vec::new();
    while let Some(instruction) = decoder.poll_instruction().unwrap() {
        expected.push(instruction);
    }
    // Without the recorded session's end (ztproxy's error and disconnect).
    assert!(expected.pop().unwrap().is(opcode::DISCONNECT));
    assert!(expected.pop().unwrap().is(opcode::ERROR));
    while received.len() < expected.len() {
        let instruction = client.next(STEP).await.unwrap().expect("open");
        if instruction.is(opcode::SYNC) {
            client
                .send(opcode::SYNC, &[instruction.arg(0).unwrap()])
                .await;
        }
        received.push(instruction);
    }
    for (got, want) in received.iter().zip(&expected) {
        assert_eq!(got.raw(), want.raw());
    }
    // 9.2 s of recorded syncs at four times the speed.
    assert!(started.elapsed() >= Duration::from_millis(2_000));
    conn.wait_event(|e| matches!(e, ConnEvent::ReplayDone { .. }), STEP)
        .await
        .unwrap();
}
