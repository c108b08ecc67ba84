//! Graphical recording: the exported Guacamole file is, instruction for instruction, what the
//! client received; key frames let a range export start mid-session.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use zt_api::audit::AuditEvent;
use zt_api::control::Transport;
use zt_guac::{Decoder, Instruction, Limits, Status, opcode};
use zt_proxy::client::api::EventStream;
use zt_tests::guacd_peer::{DisplayMode, PeerConfig};
use zt_tests::ztproxy_bin;

use super::{Fixture, RESOURCE_SECRET, STEP, SessionSpec, b64, wait_event};

/// Runs `ztproxy recording export --format guac` and decodes the result.
fn export(recording: &Path, secret_file: &Path, from: Option<&str>) -> Vec<Instruction> {
    let out = recording.with_extension(format!("guac{}", from.unwrap_or("")));
    let mut command = Command::new(ztproxy_bin!());
    command
        .args([
            "recording",
            "export",
            "--format",
            "guac",
            "--force",
            "--secret-file",
        ])
        .arg(secret_file)
        .arg("--output")
        .arg(&out)
        .arg(recording);
    if let Some(from) = from {
        command.args(["--from", from]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    decode_all(&bytes)
}

fn decode_all(bytes: &[u8]) -> Vec<Instruction> {
    let mut limits = Limits::default();
    limits.max_instruction_bytes = 64 * 1024 * 1024;
    limits.max_element_chars = 64 * 1024 * 1024;
    limits.max_elements = 1 << 20;
    let mut decoder = Decoder::new(limits);
    decoder.feed(bytes);
    let mut all = Vec::new();
    while let Some(instruction) = decoder
        .poll_instruction()
        .expect("the export is well-formed")
    {
        all.push(instruction);
    }
    assert_eq!(
        decoder.buffered_len(),
        0,
        "the export ends with a whole instruction"
    );
    all
}

fn verify(recording: &Path, secret_file: &Path) -> String {
    let output = Command::new(ztproxy_bin!())
        .args(["recording", "verify", "--secret-file"])
        .arg(secret_file)
        .arg(recording)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "verify failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// The file of the session's recording, once its `recording_ended` audit event is out.
async fn ended_recording(fx: &Fixture, events: &mut EventStream, id: &str) -> PathBuf {
    let ended = wait_event(events, id, STEP, |e| {
        matches!(e, AuditEvent::RecordingEnded { .. })
    })
    .await;
    let AuditEvent::RecordingEnded { recording, .. } = ended else {
        unreachable!()
    };
    fx.recordings.path().join("rec").join(recording)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exported_recording_is_what_the_client_received() {
    let config = PeerConfig {
        display: DisplayMode::Frames {
            interval: Duration::from_millis(40),
        },
        ..PeerConfig::default()
    };
    let fx = Fixture::start(config).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let spec = SessionSpec::rdp(Transport::Webrtc)
        .recorded()
        .with("disable-upload", "true");
    let (_session, id, mut client, conn) = fx.connected(&spec).await;

    // Over six seconds of display (a key frame is due every five), a clipboard copy, a
    // download and a refused upload (whose `ack` ztproxy itself sends) in the middle, then
    // guacd ends the session.
    let mut received = Vec::new();
    let started = tokio::time::Instant::now();
    let (mut copied, mut uploaded) = (false, false);
    while started.elapsed() < Duration::from_millis(6_500) {
        let instruction = client.next(STEP).await.unwrap().expect("open");
        if !copied && started.elapsed() > Duration::from_secs(2) {
            copied = true;
            conn.clipboard("copied text").await.unwrap();
        }
        if !uploaded && started.elapsed() > Duration::from_secs(3) {
            uploaded = true;
            client
                .send(&Instruction::new(
                    opcode::FILE,
                    &["7", "text/plain", "refused.txt"],
                ))
                .await
                .unwrap();
        }
        received.push(instruction);
    }
    conn.disconnect().await.unwrap();
    received.extend(client.collect_until_closed(STEP).await.unwrap());
    assert!(received.iter().any(|i| i.is(opcode::CLIPBOARD)));
    let forbidden = Status::CLIENT_FORBIDDEN.code().to_string();
    assert!(
        received
            .iter()
            .any(|i| i.is(opcode::ACK) && i.arg(2) == Some(forbidden.as_str())),
        "the refused upload was not acked"
    );
    assert!(received.iter().filter(|i| i.is(opcode::IMG)).count() > 10);
    assert!(received.last().unwrap().is(opcode::DISCONNECT));

    let ended = wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::RecordingEnded { .. })
    })
    .await;
    let AuditEvent::RecordingEnded {
        recording, status, ..
    } = ended
    else {
        unreachable!()
    };
    assert_eq!(status, "finalised");
    let files = fx.recording_files();
    let path = files
        .iter()
        .find(|p| p.file_name().and_then(|n| n.to_str()) == Some(recording.as_str()))
        .unwrap_or_else(|| panic!("{recording} not in {files:?}"))
        .clone();
    let secret_file = fx.recordings.path().join("secret");
    std::fs::write(&secret_file, RESOURCE_SECRET).unwrap();
    let report = verify(&path, &secret_file);
    assert!(report.contains("finalised"), "{report}");

    // Instruction for instruction.
    let exported = export(&path, &secret_file, None);
    for (n, (e, r)) in exported.iter().zip(&received).enumerate() {
        assert_eq!(
            e.raw(),
            r.raw(),
            "instruction {n} differs; around it the client received {:?}",
            &received[n.saturating_sub(2)..(n + 3).min(received.len())]
        );
    }
    assert_eq!(
        exported.len(),
        received.len(),
        "instruction counts differ; the client's last: {:?}; the export's last: {:?}",
        received.last(),
        exported.last()
    );

    // From the middle: a key frame that redraws the screen, then exactly the rest.
    let tail = export(&path, &secret_file, Some("5.5"));
    assert!(tail.len() < exported.len());
    let resume = tail
        .iter()
        .position(|i| i.is(opcode::SYNC))
        .expect("the key frame ends with a sync");
    let after_key_frame = &tail[resume + 1..];
    assert!(!after_key_frame.is_empty());
    let suffix = &received[received.len() - after_key_frame.len()..];
    for (e, r) in after_key_frame.iter().zip(suffix) {
        assert_eq!(e.raw(), r.raw());
    }
    assert!(
        tail[..resume]
            .iter()
            .any(|i| i.is(opcode::IMG) || i.is(opcode::SIZE))
    );
    // The key frame shows exactly what the client's screen showed there, although the
    // recording's model skipped most images: both re-encode to the same key frame.
    let shown = |instructions: &[Instruction]| {
        let mut display = zt_display::Display::new(zt_display::DisplayLimits::default());
        for instruction in instructions {
            let _ = display.handle(instruction);
        }
        assert!(!display.is_degraded() && display.key_frame_ready());
        display.snapshot().encode()
    };
    let before = &received[..received.len() - after_key_frame.len()];
    assert!(
        shown(&tail[..=resume]) == shown(before),
        "the key frame differs from the screen the client had"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_input_is_recorded_only_with_recording_include_keys() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let secret_file = fx.recordings.path().join("secret");
    std::fs::write(&secret_file, RESOURCE_SECRET).unwrap();

    for include in [false, true] {
        let mut spec = SessionSpec::rdp(Transport::Quic).recorded();
        if include {
            spec = spec.with("recording-include-keys", "true");
        }
        let (_session, id, mut client, conn) = fx.connected(&spec).await;
        client.expect(opcode::SYNC, STEP).await.unwrap();
        client
            .send(&Instruction::new(opcode::KEY, &["65", "1"]))
            .await
            .unwrap();
        client
            .send(&Instruction::new(opcode::MOUSE, &["5", "6", "0"]))
            .await
            .unwrap();
        conn.wait_received(|all| all.iter().any(|i| i.is(opcode::MOUSE)), STEP)
            .await
            .unwrap();
        // Something guacd sends after the input, so the input is before it in the file.
        conn.clipboard("after input").await.unwrap();
        client.expect(opcode::BLOB, STEP).await.unwrap();
        conn.disconnect().await.unwrap();
        client.collect_until_closed(STEP).await.unwrap();
        let path = ended_recording(&fx, &mut events, &id).await;
        let exported = export(&path, &secret_file, None);
        let keys = exported
            .iter()
            .filter(|i| i.is(opcode::KEY) || i.is(opcode::MOUSE))
            .count();
        assert_eq!(keys, if include { 2 } else { 0 }, "include={include}");
        assert!(
            exported
                .iter()
                .any(|i| i.is(opcode::BLOB) && i.arg(1) == Some(b64(b"after input").as_str()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_ztproxy_ended_a_session_is_recorded_as_the_client_heard_it() {
    let fx = Fixture::start(PeerConfig::default()).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let secret_file = fx.recordings.path().join("secret");
    std::fs::write(&secret_file, RESOURCE_SECRET).unwrap();
    let spec = SessionSpec::rdp(Transport::Quic).recorded();
    let (_session, id, mut client, conn) = fx.connected(&spec).await;

    // The target is up (its first frame ends with a sync), then the gateway revokes.
    let mut received = Vec::new();
    loop {
        let instruction = client.next(STEP).await.unwrap().expect("open");
        let sync = instruction.is(opcode::SYNC);
        received.push(instruction);
        if sync {
            break;
        }
    }
    fx.api.delete_session(&id).await.unwrap();
    received.extend(client.collect_until_closed(STEP).await.unwrap());
    conn.wait_closed(STEP).await.unwrap();
    let [.., error, disconnect] = received.as_slice() else {
        panic!("the client was not told: {received:?}");
    };
    assert!(error.is(opcode::ERROR), "{error:?}");
    assert_eq!(
        error.arg(1),
        Some(Status::SESSION_CLOSED.code().to_string().as_str())
    );
    assert!(disconnect.is(opcode::DISCONNECT));

    let path = ended_recording(&fx, &mut events, &id).await;
    let exported = export(&path, &secret_file, None);
    let raw = |all: &[Instruction]| all.iter().map(|i| i.raw().to_vec()).collect::<Vec<_>>();
    assert_eq!(
        raw(&exported),
        raw(&received),
        "the recording differs from what the client received"
    );
}
