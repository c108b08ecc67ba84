//! Hostile input on both sides: malformed instructions, oversized elements, a never-ending
//! instruction, 10,000-element instructions and `sync` floods get a clear error (or are
//! absorbed) and leave every other session alone.

use std::time::Duration;

use bytes::Bytes;
use zt_api::control::{EndReason, Origin, Transport};
use zt_guac::{Instruction, Status, opcode};
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::guacd_peer::{PeerConfig, PeerConn};

use super::{Fixture, STEP, SessionSpec, b64, session_ended};

/// A session that must not notice anything: its clipboard works both ways.
struct Bystander {
    client: GuacClient,
    conn: PeerConn,
    _session: zt_proxy::client::session::ClientSession,
    round: u32,
}

impl Bystander {
    async fn start(fx: &Fixture) -> Self {
        let (session, _id, client, conn) = fx.connected(&SessionSpec::rdp(Transport::Quic)).await;
        Self {
            client,
            conn,
            _session: session,
            round: 0,
        }
    }

    async fn still_works(&mut self) {
        self.round += 1;
        let text = format!("bystander round {}", self.round);
        let s = (10 + self.round % 50).to_string();
        self.client
            .send(&Instruction::new(opcode::CLIPBOARD, &[&s, "text/plain"]))
            .await
            .unwrap();
        self.client
            .send(&Instruction::new(
                opcode::BLOB,
                &[&s, &b64(text.as_bytes())],
            ))
            .await
            .unwrap();
        self.client
            .send(&Instruction::new(opcode::END, &[&s]))
            .await
            .unwrap();
        let conn = &self.conn;
        zt_tests::wait_until(STEP, "the bystander's paste", || {
            let text = text.clone();
            async move { conn.clipboard_received().contains(&text) }
        })
        .await
        .unwrap();
        self.conn.clipboard(&text).await.unwrap();
        let clipboard = self.client.expect(opcode::CLIPBOARD, STEP).await.unwrap();
        let blob = loop {
            let blob = self.client.expect(opcode::BLOB, STEP).await.unwrap();
            if blob.arg(0) == clipboard.arg(0) {
                break blob;
            }
        };
        assert_eq!(blob.arg(1), Some(b64(text.as_bytes()).as_str()));
    }
}

async fn ended(
    events: &mut zt_proxy::client::api::EventStream,
    id: &str,
) -> (EndReason, Option<Origin>, String) {
    let (reason, origin, detail) = session_ended(events, id).await;
    (reason, origin, detail.unwrap_or_default())
}

/// The hostile client's session ends with a protocol error, told to the client, and guacd
/// hears the user leave.
async fn assert_client_rejected(
    client: &mut GuacClient,
    conn: Option<&PeerConn>,
    events: &mut zt_proxy::client::api::EventStream,
    id: &str,
    expect_in_detail: &str,
) {
    let rest = client.collect_until_closed(STEP).await.unwrap();
    let error = rest
        .iter()
        .find(|i| i.is(opcode::ERROR))
        .expect("the client is told");
    assert_eq!(
        error.arg(1),
        Some(Status::CLIENT_BAD_REQUEST.code().to_string().as_str())
    );
    assert!(rest.last().unwrap().is(opcode::DISCONNECT));
    let (reason, origin, detail) = ended(events, id).await;
    assert_eq!(
        (reason, origin),
        (EndReason::Error, Some(Origin::Client)),
        "{detail}"
    );
    assert!(detail.contains(expect_in_detail), "{detail}");
    if let Some(conn) = conn {
        conn.wait_closed(STEP).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_client_input_is_rejected_alone() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let mut bystander = Bystander::start(&fx).await;

    let cases: [(&str, Bytes, &str); 4] = [
        ("malformed", Bytes::from_static(b"4.key,abc;"), "malformed"),
        (
            "bad length",
            Bytes::from_static(b"3.key,2.65,x1.1;"),
            "malformed",
        ),
        (
            "oversized element",
            Bytes::from_static(b"4.blob,1.1,99999999.AAAA"),
            "longer than the limit",
        ),
        (
            "not UTF-8",
            Bytes::from_static(b"3.key,2.\xff\xfe,1.1;"),
            "malformed",
        ),
    ];
    for (what, bytes, detail) in cases {
        let (_session, id, mut client, conn) =
            fx.connected(&SessionSpec::rdp(Transport::Quic)).await;
        client.send_raw(bytes).await.unwrap();
        assert_client_rejected(&mut client, Some(&conn), &mut events, &id, detail).await;
        bystander.still_works().await;
        eprintln!("{what}: rejected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_ending_client_instruction_is_cut_off() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let mut bystander = Bystander::start(&fx).await;
    let (_session, id, mut client, conn) = fx.connected(&SessionSpec::rdp(Transport::Webrtc)).await;

    // Element after element, each within the element limit, never a `;`.
    let element = format!(",8000.{}", "A".repeat(8000));
    client.send_raw(Bytes::from("4.blob,1.1")).await.unwrap();
    let mut sent = 0usize;
    while sent < 8 * 1024 * 1024 {
        if client.send_raw(Bytes::from(element.clone())).await.is_err() {
            break;
        }
        sent += element.len();
        // Stop once ztproxy has ended it.
        if let Ok(Ok(Some(instruction))) = tokio::time::timeout(
            Duration::from_millis(1),
            client.next(Duration::from_millis(1)),
        )
        .await
            && instruction.is(opcode::ERROR)
        {
            break;
        }
    }
    let (reason, origin, detail) = ended(&mut events, &id).await;
    assert_eq!((reason, origin), (EndReason::Error, Some(Origin::Client)));
    assert!(detail.contains("longer than the limit"), "{detail}");
    conn.wait_closed(STEP).await.unwrap();
    // guacd never saw any of it.
    assert!(!conn.received().iter().any(|i| i.is(opcode::BLOB)));
    bystander.still_works().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_element_instructions_from_the_client_are_refused() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let mut bystander = Bystander::start(&fx).await;

    // In the handshake: `connect` with 10,000 values.
    let (session, id) = fx.session(&SessionSpec::rdp(Transport::Quic)).await;
    let handshake = Handshake {
        connect_values: (0..10_000).map(|i| i.to_string()).collect(),
        ..Handshake::default()
    };
    let mut client = GuacClient::start(&session, &handshake).await.unwrap();
    assert_client_rejected(
        &mut client,
        None,
        &mut events,
        &id,
        "more elements than the limit",
    )
    .await;
    bystander.still_works().await;

    // During the relay.
    let (_session, id, mut client, conn) = fx.connected(&SessionSpec::rdp(Transport::Quic)).await;
    let args: Vec<String> = (0..10_000).map(|i| (i % 10).to_string()).collect();
    client.send(&Instruction::new("argv", &args)).await.unwrap();
    assert_client_rejected(
        &mut client,
        Some(&conn),
        &mut events,
        &id,
        "more elements than the limit",
    )
    .await;
    bystander.still_works().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_flood_from_the_client_never_reaches_guacd() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let (_session, _id, mut client, conn) = fx.connected(&SessionSpec::rdp(Transport::Quic)).await;
    let first = client.expect(opcode::SYNC, STEP).await.unwrap();
    let latest: u64 = first.arg(0).unwrap().parse().unwrap();

    // 100,000 syncs: repeats, and timestamps guacd never sent (guacd would end the session
    // on a sync "in the future").
    let mut flood = Vec::new();
    for i in 0..100_000u64 {
        let timestamp = if i % 2 == 0 { latest } else { latest + 1 + i };
        flood.extend_from_slice(
            GuacClient::encode(opcode::SYNC, &[&timestamp.to_string()]).as_ref(),
        );
        if flood.len() > 60_000 {
            client
                .send_raw(Bytes::from(std::mem::take(&mut flood)))
                .await
                .unwrap();
        }
    }
    client.send_raw(Bytes::from(flood)).await.unwrap();
    // A marker behind the flood.
    let marker = Instruction::new(opcode::SIZE, &["1111", "777"]);
    client.send(&marker).await.unwrap();
    let raw = marker.raw().clone();
    conn.wait_received(|all| all.iter().any(|i| i.raw() == &raw), STEP)
        .await
        .expect("the session survives the flood");
    let sent = conn.sent_syncs();
    let syncs: Vec<u64> = conn
        .received()
        .iter()
        .filter(|i| i.is(opcode::SYNC))
        .filter_map(|i| i.arg(0)?.parse().ok())
        .collect();
    assert!(
        syncs.len() <= sent.len(),
        "{} syncs reached guacd",
        syncs.len()
    );
    for timestamp in syncs {
        assert!(
            sent.contains(&timestamp),
            "a sync guacd never sent reached it: {timestamp}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guacd_output_ends_only_its_session() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let mut bystander = Bystander::start(&fx).await;

    enum Attack {
        Raw(&'static [u8]),
        Oversized,
        NeverEnding,
    }
    let attacks = [
        (
            "malformed",
            Attack::Raw(b"4.sync,abc;"),
            "protocol violation",
        ),
        (
            "bad UTF-8",
            Attack::Raw(b"4.name,2.\xc3\x28;"),
            "protocol violation",
        ),
        (
            "oversized element",
            Attack::Oversized,
            "longer than the limit",
        ),
        (
            "never-ending instruction",
            Attack::NeverEnding,
            "longer than the limit",
        ),
    ];
    for (what, attack, detail) in attacks {
        let (_session, id, mut client, conn) =
            fx.connected(&SessionSpec::rdp(Transport::Quic)).await;
        match attack {
            Attack::Raw(bytes) => conn.send_raw(Bytes::from_static(bytes)).await.unwrap(),
            Attack::Oversized => conn.oversized_element(1_000_000).await.unwrap(),
            Attack::NeverEnding => {
                let conn = conn.clone();
                tokio::spawn(async move { conn.never_ending_instruction().await });
            }
        }
        let rest = client.collect_until_closed(STEP).await.unwrap();
        let error = rest
            .iter()
            .find(|i| i.is(opcode::ERROR))
            .expect("the client is told");
        assert_eq!(
            error.arg(1),
            Some(Status::UPSTREAM_ERROR.code().to_string().as_str())
        );
        assert!(rest.last().unwrap().is(opcode::DISCONNECT));
        let (reason, origin, text) = ended(&mut events, &id).await;
        assert_eq!(
            (reason, origin),
            (EndReason::Error, Some(Origin::Target)),
            "{what}"
        );
        assert!(text.contains(detail), "{what}: {text}");
        conn.wait_closed(STEP).await.unwrap();
        bystander.still_works().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_args_from_guacd_are_refused() {
    let config = PeerConfig {
        hostile_args: Some(10_000),
        ..PeerConfig::default()
    };
    let fx = Fixture::start(config).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (session, id) = fx.session(&SessionSpec::rdp(Transport::Quic)).await;
    let mut client = GuacClient::start(&session, &Handshake::default())
        .await
        .unwrap();
    let rest = client.collect_until_closed(STEP).await.unwrap();
    assert!(!rest.iter().any(|i| i.is(opcode::READY)));
    let error = rest
        .iter()
        .find(|i| i.is(opcode::ERROR))
        .expect("the client is told");
    assert_eq!(
        error.arg(1),
        Some(Status::UPSTREAM_ERROR.code().to_string().as_str())
    );
    let (reason, origin, detail) = ended(&mut events, &id).await;
    assert_eq!((reason, origin), (EndReason::Error, Some(Origin::Target)));
    assert!(detail.contains("guacd"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_flood_from_guacd_is_relayed_with_bounded_memory() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let mut bystander = Bystander::start(&fx).await;
    let (_session, _id, mut client, conn) = fx.connected(&SessionSpec::rdp(Transport::Quic)).await;
    // The client stops answering: ztproxy must not remember 100,000 pending syncs.
    client.answer_syncs = false;
    conn.sync_flood(100_000).await.unwrap();
    let mut count = 0;
    while count < 100_000 {
        let instruction = client.next(STEP).await.unwrap().expect("open");
        if instruction.is(opcode::SYNC) {
            count += 1;
        }
    }
    // Still a working session in both directions.
    client.answer_syncs = true;
    let marker = Instruction::new(opcode::SIZE, &["1212", "777"]);
    client.send(&marker).await.unwrap();
    let raw = marker.raw().clone();
    conn.wait_received(|all| all.iter().any(|i| i.raw() == &raw), STEP)
        .await
        .unwrap();
    bystander.still_works().await;
}
