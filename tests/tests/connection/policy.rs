//! Clipboard, file-transfer and input policy, enforced by ztproxy whatever guacd does: each
//! switch blocks its own direction and nothing else, refused streams leave both sides
//! consistent, and allowed transfers are audited with their size and SHA-256.

use sha2::{Digest, Sha256};
use zt_api::audit::AuditEvent;
use zt_api::control::Transport;
use zt_guac::{Instruction, Status, opcode};
use zt_tests::guac_client::GuacClient;
use zt_tests::guacd_peer::{DownloadOutcome, PeerConfig, PeerConn};

use super::{Fixture, STEP, SessionSpec, b64, wait_event};

/// A marker the peer draws after something the client must not see: once the client has it,
/// anything sent before it would have arrived (the relay keeps order).
async fn peer_marker(conn: &PeerConn, client: &mut GuacClient, n: u32) -> Vec<Instruction> {
    let marker = Instruction::new(opcode::CFILL, &["14", "0", "1", "2", "3", &n.to_string()]);
    conn.send(marker.clone()).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let instruction = client
            .next(STEP)
            .await
            .unwrap()
            .expect("the channel stays open");
        if instruction.raw() == marker.raw() {
            return seen;
        }
        seen.push(instruction);
    }
}

/// A marker the client sends after something guacd must not receive.
async fn client_marker(conn: &PeerConn, client: &mut GuacClient, width: u32) -> Vec<Instruction> {
    let marker = Instruction::new(opcode::SIZE, &[width.to_string(), "777".to_owned()]);
    client.send(&marker).await.unwrap();
    let raw = marker.raw().clone();
    conn.wait_received(|all| all.iter().any(|i| i.raw() == &raw), STEP)
        .await
        .expect("the marker reaches guacd");
    let received = conn.received();
    let at = received.iter().position(|i| i.raw() == &raw).unwrap();
    received[..at].to_vec()
}

/// The client pastes `text` (a clipboard stream, as guacamole-common-js sends it).
async fn paste(client: &mut GuacClient, stream: u32, text: &str) {
    let s = stream.to_string();
    client
        .send(&Instruction::new(opcode::CLIPBOARD, &[&s, "text/plain"]))
        .await
        .unwrap();
    client
        .send(&Instruction::new(
            opcode::BLOB,
            &[&s, &b64(text.as_bytes())],
        ))
        .await
        .unwrap();
    client
        .send(&Instruction::new(opcode::END, &[&s]))
        .await
        .unwrap();
}

/// How an upload went.
#[derive(Debug, PartialEq, Eq)]
enum Upload {
    Done,
    Refused(u32),
}

/// The client uploads a file, waiting for the `ack` of each step as guacamole-common-js does.
async fn upload(client: &mut GuacClient, stream: u32, name: &str, data: &[u8]) -> Upload {
    let s = stream.to_string();
    client
        .send(&Instruction::new(
            opcode::FILE,
            &[&s, "application/octet-stream", name],
        ))
        .await
        .unwrap();
    let status = ack_status(client, &s).await;
    if status != 0 {
        return Upload::Refused(status);
    }
    for chunk in data.chunks(6048) {
        client
            .send(&Instruction::new(opcode::BLOB, &[&s, &b64(chunk)]))
            .await
            .unwrap();
        let status = ack_status(client, &s).await;
        if status != 0 {
            return Upload::Refused(status);
        }
    }
    client
        .send(&Instruction::new(opcode::END, &[&s]))
        .await
        .unwrap();
    Upload::Done
}

/// The status of the next `ack` for `stream`.
async fn ack_status(client: &mut GuacClient, stream: &str) -> u32 {
    loop {
        let ack = client.expect(opcode::ACK, STEP).await.unwrap();
        if ack.arg(0) == Some(stream) {
            return ack.arg(2).unwrap().parse::<u32>().unwrap();
        }
    }
}

/// The client accepts the next download: acks the `file` and each `blob`; returns the name and
/// the data.
async fn accept_download(client: &mut GuacClient) -> (String, Vec<u8>) {
    use base64::Engine;
    let file = client.expect(opcode::FILE, STEP).await.unwrap();
    let stream = file.arg(0).unwrap().to_owned();
    let name = file.arg(2).unwrap().to_owned();
    let ok = Instruction::new(opcode::ACK, &[&stream, "OK", "0"]);
    client.send(&ok).await.unwrap();
    let mut data = Vec::new();
    loop {
        let instruction = client.next(STEP).await.unwrap().expect("open");
        if instruction.arg(0) != Some(stream.as_str()) {
            continue;
        }
        if instruction.is(opcode::BLOB) {
            data.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(instruction.arg(1).unwrap())
                    .unwrap(),
            );
            client.send(&ok).await.unwrap();
        } else if instruction.is(opcode::END) {
            return (name, data);
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_copy_blocks_only_the_targets_clipboard() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let spec = SessionSpec::rdp(Transport::Quic).with("disable-copy", "true");
    let (_session, id, mut client, conn) = fx.connected(&spec).await;

    conn.clipboard("copied-on-the-target").await.unwrap();
    let seen = peer_marker(&conn, &mut client, 1).await;
    assert!(
        !seen.iter().any(|i| i.is(opcode::CLIPBOARD)),
        "target clipboard reached the client: {seen:?}"
    );
    let refused = wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::PolicyRefused { .. })
    })
    .await;
    let AuditEvent::PolicyRefused {
        direction, action, ..
    } = refused
    else {
        unreachable!()
    };
    assert_eq!((direction.as_str(), action.as_str()), ("to_client", "copy"));

    // The other direction still works, and is audited.
    paste(&mut client, 7, "pasted-by-the-user").await;
    let pasted = wait_clipboard(&conn).await;
    assert_eq!(pasted, "pasted-by-the-user");
    let transfer = wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::Transfer { .. })
    })
    .await;
    let AuditEvent::Transfer {
        direction,
        kind,
        size,
        sha256,
        ..
    } = transfer
    else {
        unreachable!()
    };
    assert_eq!(
        (direction.as_str(), kind.as_str()),
        ("to_target", "clipboard")
    );
    assert_eq!(size, "pasted-by-the-user".len() as u64);
    assert_eq!(sha256, sha256_hex(b"pasted-by-the-user"));
}

async fn wait_clipboard(conn: &PeerConn) -> String {
    zt_tests::wait_until(STEP, "guacd receives the clipboard", || async {
        !conn.clipboard_received().is_empty()
    })
    .await
    .unwrap();
    conn.clipboard_received().remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_paste_blocks_only_the_clients_clipboard() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let spec = SessionSpec::rdp(Transport::Webrtc).with("disable-paste", "true");
    let (_session, _id, mut client, conn) = fx.connected(&spec).await;

    paste(&mut client, 3, "secret-the-user-pastes").await;
    // The client is told (its UI shows the failure)...
    let ack = client.expect(opcode::ACK, STEP).await.unwrap();
    assert_eq!(ack.arg(0), Some("3"));
    assert_eq!(
        ack.arg(2),
        Some(Status::CLIENT_FORBIDDEN.code().to_string().as_str())
    );
    // ...and guacd sees nothing of the stream.
    let before = client_marker(&conn, &mut client, 1001).await;
    assert!(
        !before
            .iter()
            .any(|i| i.is(opcode::CLIPBOARD) || i.is(opcode::BLOB) || i.is(opcode::END)),
        "{before:?}"
    );
    assert!(conn.clipboard_received().is_empty());

    // Copy from the target still reaches the client.
    conn.clipboard("from-the-target").await.unwrap();
    let clipboard = client.expect(opcode::CLIPBOARD, STEP).await.unwrap();
    let blob = client.expect(opcode::BLOB, STEP).await.unwrap();
    assert_eq!(blob.arg(0), clipboard.arg(0));
    assert_eq!(blob.arg(1), Some(b64(b"from-the-target").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_download_refuses_files_from_the_target_and_allows_uploads() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let spec = SessionSpec::rdp(Transport::Quic).with("disable-download", "true");
    let (_session, id, mut client, conn) = fx.connected(&spec).await;

    // guacd offers a file: ztproxy refuses it for the client, guacd hears the refusal and
    // ends its stream; the client never sees the file.
    let outcome = conn
        .download("payroll.xlsx", "application/octet-stream", &[7u8; 10_000])
        .await
        .unwrap();
    match outcome {
        DownloadOutcome::Refused(status, _) => assert_eq!(status, Status::CLIENT_FORBIDDEN.code()),
        other => panic!("download was not refused: {other:?}"),
    }
    let seen = peer_marker(&conn, &mut client, 2).await;
    assert!(
        !seen
            .iter()
            .any(|i| i.is(opcode::FILE) || i.is(opcode::BLOB)),
        "{seen:?}"
    );
    let refused = wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::PolicyRefused { .. })
    })
    .await;
    let AuditEvent::PolicyRefused {
        direction,
        action,
        name,
        ..
    } = refused
    else {
        unreachable!()
    };
    assert_eq!(
        (direction.as_str(), action.as_str()),
        ("to_client", "download")
    );
    assert_eq!(name.as_deref(), Some("payroll.xlsx"));

    // Uploads still work, acked by guacd, and are audited with their hash.
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(
        upload(&mut client, 11, "notes.txt", &data).await,
        Upload::Done
    );
    zt_tests::wait_until(STEP, "guacd has the upload", || async {
        !conn.uploads().is_empty()
    })
    .await
    .unwrap();
    let uploaded = conn.uploads().remove(0);
    assert_eq!(uploaded.name, "notes.txt");
    assert_eq!(uploaded.data, data);
    let transfer = wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::Transfer { .. })
    })
    .await;
    let AuditEvent::Transfer {
        direction,
        kind,
        name,
        size,
        sha256,
        ..
    } = transfer
    else {
        unreachable!()
    };
    assert_eq!((direction.as_str(), kind.as_str()), ("to_target", "file"));
    assert_eq!(name.as_deref(), Some("notes.txt"));
    assert_eq!(size, data.len() as u64);
    assert_eq!(sha256, sha256_hex(&data));

    // The session is still healthy after the refusal: a second download attempt is refused
    // the same way (no stream left half-open on either side).
    let again = conn
        .download("second.bin", "application/octet-stream", b"x")
        .await
        .unwrap();
    assert!(matches!(again, DownloadOutcome::Refused(..)), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_upload_refuses_files_from_the_client_and_allows_downloads() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let spec = SessionSpec::rdp(Transport::Webrtc).with("sftp-disable-upload", "true");
    let (_session, id, mut client, conn) = fx.connected(&spec).await;

    assert_eq!(
        upload(&mut client, 5, "malware.exe", &[1u8; 4096]).await,
        Upload::Refused(Status::CLIENT_FORBIDDEN.code())
    );
    // A client that ignores the refusal and sends blobs anyway gets nothing through.
    client
        .send(&Instruction::new(opcode::BLOB, &["5", &b64(b"ignored")]))
        .await
        .unwrap();
    client
        .send(&Instruction::new(opcode::END, &["5"]))
        .await
        .unwrap();
    let before = client_marker(&conn, &mut client, 1002).await;
    assert!(
        !before
            .iter()
            .any(|i| i.is(opcode::FILE) || i.is(opcode::BLOB) || i.is(opcode::END)),
        "{before:?}"
    );
    assert!(conn.uploads().is_empty());
    let refused = wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::PolicyRefused { .. })
    })
    .await;
    let AuditEvent::PolicyRefused {
        direction,
        action,
        name,
        ..
    } = refused
    else {
        unreachable!()
    };
    assert_eq!(
        (direction.as_str(), action.as_str()),
        ("to_target", "upload")
    );
    assert_eq!(name.as_deref(), Some("malware.exe"));

    // Downloads still work.
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 256) as u8).collect();
    let download = {
        let conn = conn.clone();
        let data = data.clone();
        tokio::spawn(async move { conn.download("report.pdf", "application/pdf", &data).await })
    };
    let (name, got) = accept_download(&mut client).await;
    assert_eq!(name, "report.pdf");
    assert_eq!(got, data);
    assert!(matches!(
        download.await.unwrap().unwrap(),
        DownloadOutcome::Completed
    ));
    let transfer = wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::Transfer { .. })
    })
    .await;
    let AuditEvent::Transfer {
        direction,
        name,
        sha256,
        ..
    } = transfer
    else {
        unreachable!()
    };
    assert_eq!(direction, "to_client");
    assert_eq!(name.as_deref(), Some("report.pdf"));
    assert_eq!(sha256, sha256_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_drops_input_but_not_the_display_or_the_clipboard() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let spec = SessionSpec::rdp(Transport::Quic).with("read-only", "true");
    let (_session, _id, mut client, conn) = fx.connected(&spec).await;

    client
        .send(&Instruction::new(opcode::KEY, &["65", "1"]))
        .await
        .unwrap();
    client
        .send(&Instruction::new(opcode::KEY, &["65", "0"]))
        .await
        .unwrap();
    client
        .send(&Instruction::new(opcode::MOUSE, &["10", "20", "1"]))
        .await
        .unwrap();
    client
        .send(&Instruction::new(
            opcode::TOUCH,
            &["0", "10", "20", "5", "5", "0", "1"],
        ))
        .await
        .unwrap();
    paste(&mut client, 9, "allowed paste").await;
    let before = client_marker(&conn, &mut client, 1003).await;
    assert!(
        !before
            .iter()
            .any(|i| i.is(opcode::KEY) || i.is(opcode::MOUSE) || i.is(opcode::TOUCH)),
        "{before:?}"
    );
    assert_eq!(wait_clipboard(&conn).await, "allowed paste");
    // The display still flows.
    let seen = peer_marker(&conn, &mut client, 3).await;
    drop(seen);

    // Without read-only the same input arrives (the switch is what blocks it).
    let (_session, _id, mut client, conn) = fx.connected(&SessionSpec::rdp(Transport::Quic)).await;
    client
        .send(&Instruction::new(opcode::KEY, &["65", "1"]))
        .await
        .unwrap();
    let before = client_marker(&conn, &mut client, 1004).await;
    assert!(before.iter().any(|i| i.is(opcode::KEY)), "{before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clipboard_buffer_size_cuts_clipboard_data_both_ways() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let spec = SessionSpec::rdp(Transport::Quic).with("clipboard-buffer-size", "262144");
    let (_session, _id, mut client, conn) = fx.connected(&spec).await;

    // 300 KiB from the target: the client gets the first 256 KiB.
    let big: String = "abcdefghij".repeat(30 * 1024);
    conn.clipboard(&big).await.unwrap();
    let seen = peer_marker(&conn, &mut client, 4).await;
    let mut got = Vec::new();
    for instruction in seen.iter().filter(|i| i.is(opcode::BLOB)) {
        use base64::Engine;
        got.extend(
            base64::engine::general_purpose::STANDARD
                .decode(instruction.arg(1).unwrap())
                .unwrap(),
        );
    }
    assert_eq!(got.len(), 256 * 1024);
    assert_eq!(&got[..], &big.as_bytes()[..256 * 1024]);

    // 300 KiB pasted by the client, in guacamole-common-js's blob size: guacd gets 256 KiB.
    client
        .send(&Instruction::new(opcode::CLIPBOARD, &["4", "text/plain"]))
        .await
        .unwrap();
    for chunk in big.as_bytes().chunks(6048) {
        client
            .send(&Instruction::new(opcode::BLOB, &["4", &b64(chunk)]))
            .await
            .unwrap();
    }
    client
        .send(&Instruction::new(opcode::END, &["4"]))
        .await
        .unwrap();
    let pasted = wait_clipboard(&conn).await;
    assert_eq!(pasted.len(), 256 * 1024);
    assert_eq!(pasted.as_bytes(), &big.as_bytes()[..256 * 1024]);
}
