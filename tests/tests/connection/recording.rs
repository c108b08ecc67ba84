//! Graphical recording: the exported Guacamole file is, instruction for instruction, what the
//! client received; key frames let a range export start mid-session.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use zt_api::audit::AuditEvent;
use zt_api::control::Transport;
use zt_guac::{Instruction, Status, opcode};
use zt_proxy::client::api::EventStream;
use zt_tests::guacd_peer::{DisplayMode, PeerConfig};
use zt_tests::ztproxy_bin;

use super::{Fixture, RESOURCE_SECRET, STEP, SessionSpec, b64, wait_event};

/// Runs `ztproxy recording export --format guac` and decodes the result, which must begin
/// with layer 0's size before anything that draws (as every export does).
pub(crate) fn export(recording: &Path, secret_file: &Path, from: Option<&str>) -> Vec<Instruction> {
    export_noting(recording, secret_file, from).0
}

/// [`export`], with what the command said on stderr.
fn export_noting(
    recording: &Path,
    secret_file: &Path,
    from: Option<&str>,
) -> (Vec<Instruction>, String) {
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
    assert_eq!(
        zt_recorder::export::draws_before_size(&bytes),
        None,
        "the export draws before layer 0 has a size"
    );
    (
        zt_tests::decode_recording(&bytes),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What the user sees after `instructions` (the display model's composited screen).
pub(crate) fn screen(instructions: &[Instruction]) -> zt_display::Screen {
    let mut display = zt_display::Display::new(zt_display::DisplayLimits::default());
    for instruction in instructions {
        let _ = display.handle(instruction);
    }
    assert!(
        !display.is_degraded() && display.key_frame_ready(),
        "{:?}",
        display.degradation()
    );
    display.screen()
}

/// The screen is a desktop, not nothing (so that equal screens mean something).
fn assert_drawn(screen: &zt_display::Screen) {
    let drawn = screen.pixels().iter().filter(|p| p[3] == 255).count();
    let all = screen.pixels().len();
    assert!(all > 0 && drawn > all / 4, "mostly blank: {drawn} of {all}");
}

/// The instructions up to and including the first `sync` (a key frame), and the rest.
fn split_after_first_sync(instructions: &[Instruction]) -> (&[Instruction], &[Instruction]) {
    let sync = instructions
        .iter()
        .position(|i| i.is(opcode::SYNC))
        .expect("a key frame ends with a sync");
    instructions.split_at(sync + 1)
}

/// Collects what the client receives for `duration`, answering nothing itself (the client's
/// library answers `sync`s).
async fn receive_for(
    client: &mut zt_tests::guac_client::GuacClient,
    duration: Duration,
) -> Vec<Instruction> {
    let mut received = Vec::new();
    let started = tokio::time::Instant::now();
    while started.elapsed() < duration {
        received.push(client.next(STEP).await.unwrap().expect("open"));
    }
    received
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

/// The session's `recording_ended` audit event: the file name and its status.
pub(crate) async fn recording_ended(events: &mut EventStream, id: &str) -> (String, String) {
    let ended = wait_event(events, id, STEP, |e| {
        matches!(e, AuditEvent::RecordingEnded { .. })
    })
    .await;
    let AuditEvent::RecordingEnded {
        recording, status, ..
    } = ended
    else {
        unreachable!()
    };
    (recording, status)
}

/// The file of the session's recording, once its `recording_ended` audit event is out.
async fn ended_recording(fx: &Fixture, events: &mut EventStream, id: &str) -> PathBuf {
    let (recording, _) = recording_ended(events, id).await;
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

    let (recording, status) = recording_ended(&mut events, &id).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guacd_1_6_rdp_recording_has_key_frames_and_plays_from_its_first_instruction() {
    let config = PeerConfig {
        display: DisplayMode::Frames {
            interval: Duration::from_millis(40),
        },
        ..PeerConfig::guacd_1_6()
    };
    let fx = Fixture::start(config).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let secret_file = fx.recordings.path().join("secret");
    std::fs::write(&secret_file, RESOURCE_SECRET).unwrap();
    let spec = SessionSpec::rdp(Transport::Quic).recorded();
    let (_session, id, mut client, conn) = fx.connected(&spec).await;
    let mut received = receive_for(&mut client, Duration::from_millis(6_500)).await;
    conn.disconnect().await.unwrap();
    received.extend(client.collect_until_closed(STEP).await.unwrap());
    // guacd 1.6's stream: the pointer before any size of layer 0.
    assert!(received[0].is(opcode::CURSOR), "{:?}", received[0]);
    let path = ended_recording(&fx, &mut events, &id).await;
    let report = verify(&path, &secret_file);
    let key_frames: u64 = report
        .split("payload bytes, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(key_frames >= 1, "no key frame: {report}");

    // The whole export: a key frame of the first sized frame, then exactly the rest.
    let (exported, said) = export_noting(&path, &secret_file, None);
    assert!(said.contains("replaced by a key frame"), "{said}");
    let (key_frame, rest) = split_after_first_sync(&exported);
    assert!(key_frame[0].is(opcode::SIZE) && key_frame[0].arg(0) == Some("0"));
    let head = &received[..received.len() - rest.len()];
    let raw = |all: &[Instruction]| all.iter().map(|i| i.raw().to_vec()).collect::<Vec<_>>();
    assert_eq!(raw(rest), raw(&received[head.len()..]));
    assert!(
        screen(key_frame) == screen(head),
        "the key frame is not the first screen"
    );
    let whole = screen(&received);
    assert_drawn(&whole);
    assert!(
        screen(&exported) == whole,
        "the export ends on another screen"
    );

    // From the middle: the key frame at or before 5.5 s shows the client's screen of that
    // moment, and the rest is what the client received after it.
    let tail = export(&path, &secret_file, Some("5.5"));
    let (key_frame, after) = split_after_first_sync(&tail);
    assert!(!after.is_empty() && after.len() < rest.len());
    let at = received.len() - after.len();
    assert_eq!(raw(after), raw(&received[at..]));
    let then = screen(&received[..at]);
    assert_drawn(&then);
    assert!(
        screen(key_frame) == then,
        "the key frame differs from the screen then"
    );
    assert!(screen(&tail) == whole);
}

/// What a real guacd 1.6.0 sent (the fixtures), replayed by the double through ztproxy at
/// its recorded pace: every recording exports sized first, to the screen the client had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_of_real_guacd_1_6_streams_export_to_what_the_client_saw() {
    let fixtures = ["rdp-xrdp.guac", "vnc-tigervnc.guac", "ssh-openssh.guac"];
    let runs = fixtures.map(|name| async move {
        let stream = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/guacd-1.6")
                .join(name),
        )
        .unwrap();
        let config = PeerConfig {
            display: DisplayMode::Replay {
                stream: stream.into(),
                speed: 1,
            },
            ..PeerConfig::guacd_1_6()
        };
        let fx = Fixture::start(config).await;
        let mut events = fx.api.events(Some(0)).await.unwrap();
        let secret_file = fx.recordings.path().join("secret");
        std::fs::write(&secret_file, RESOURCE_SECRET).unwrap();
        let spec = SessionSpec::rdp(Transport::Quic).recorded();
        let (_session, id, mut client, conn) = fx.connected(&spec).await;
        let mut received = Vec::new();
        let done = conn.wait_event(
            |e| matches!(e, zt_tests::guacd_peer::ConnEvent::ReplayDone { .. }),
            Duration::from_secs(30),
        );
        tokio::pin!(done);
        loop {
            tokio::select! {
                result = &mut done => { result.unwrap(); break; }
                instruction = client.next(STEP) => received.push(instruction.unwrap().expect("open")),
            }
        }
        // The last frame reaches the client, then the gateway revokes.
        let last_sync = conn.sent_syncs().last().copied().unwrap();
        while !received
            .iter()
            .any(|i| i.is(opcode::SYNC) && i.arg(0) == Some(last_sync.to_string().as_str()))
        {
            received.push(client.next(STEP).await.unwrap().expect("open"));
        }
        fx.api.delete_session(&id).await.unwrap();
        received.extend(client.collect_until_closed(STEP).await.unwrap());
        let path = ended_recording(&fx, &mut events, &id).await;
        let (exported, _) = export_noting(&path, &secret_file, None);
        let whole = screen(&received);
        assert_drawn(&whole);
        assert!(screen(&exported) == whole, "{name}: the export ends on another screen");
        if name != "rdp-xrdp.guac" {
            // guacd sized layer 0 first: the export is the client's stream itself.
            let raw = |all: &[Instruction]| all.iter().map(|i| i.raw().to_vec()).collect::<Vec<_>>();
            assert_eq!(raw(&exported), raw(&received), "{name}");
        }
        // A range export starts at a key frame (the recording is about 10 s long).
        let tail = export(&path, &secret_file, Some("6"));
        assert!(screen(&tail) == whole, "{name}");
    });
    let [rdp, vnc, ssh] = runs;
    tokio::join!(rdp, vnc, ssh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_model_that_loses_track_is_reported_with_its_reason() {
    let config = PeerConfig {
        display: DisplayMode::Frames {
            interval: Duration::from_millis(50),
        },
        ..PeerConfig::default()
    };
    let fx = Fixture::start(config).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let spec = SessionSpec::rdp(Transport::Quic).recorded();
    let (_session, id, mut client, conn) = fx.connected(&spec).await;
    client.expect(opcode::SYNC, STEP).await.unwrap();
    // An image that is not one: the model cannot know what the client shows there.
    conn.send_raw(bytes::Bytes::from_static(
        b"3.img,2.11,2.14,1.0,9.image/png,1.0,1.0;4.blob,2.11,8.AAAAAAAA;3.end,2.11;",
    ))
    .await
    .unwrap();
    let degraded = wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::RecordingDegraded { .. })
    })
    .await;
    let AuditEvent::RecordingDegraded { reason, at_ms, .. } = degraded else {
        unreachable!()
    };
    assert_eq!(reason, "image could not be decoded");
    assert!(at_ms >= 4_000, "{at_ms}");
    // The session and its recording go on.
    client.expect(opcode::SYNC, STEP).await.unwrap();
    // The warning is logged before the event is emitted, but reaches the test through a pipe
    // read by another thread.
    zt_tests::wait_until(STEP, "the degradation warning in the log", || async {
        fx.proxy.output().contains("display model degraded")
    })
    .await
    .unwrap();
}

/// One crash: a recorded session over QUIC whose daemon is killed with SIGKILL after
/// `after` of display. The recording it leaves verifies as an unfinalised prefix of what the
/// client received, and holds everything the client had received a second before the kill.
async fn killed_after(after: Duration) -> String {
    let config = PeerConfig {
        display: DisplayMode::Frames {
            interval: Duration::from_millis(20),
        },
        ..PeerConfig::default()
    };
    let mut fx = Fixture::start(config).await;
    let spec = SessionSpec::rdp(Transport::Quic).recorded();
    let (_session, _id, mut client, _conn) = fx.connected(&spec).await;
    let started = tokio::time::Instant::now();
    let mut received = Vec::new();
    while started.elapsed() < after {
        let instruction = client.next(STEP).await.unwrap().expect("open");
        received.push((tokio::time::Instant::now(), instruction));
    }
    fx.proxy.kill().unwrap();
    let killed = tokio::time::Instant::now();
    // Anything already in the client's buffers arrived before the kill, too.
    while let Ok(Some(instruction)) = client.next(Duration::from_millis(200)).await {
        received.push((killed, instruction));
    }

    let files = fx.recording_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let secret_file = fx.recordings.path().join("secret");
    std::fs::write(&secret_file, RESOURCE_SECRET).unwrap();
    let output = Command::new(ztproxy_bin!())
        .args([
            "recording",
            "verify",
            "--allow-unfinalised",
            "--json",
            "--secret-file",
        ])
        .arg(&secret_file)
        .arg(&files[0])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "verify rejects the file a crash left: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_ne!(report["status"]["state"], "finalised", "{report}");

    let exported = export(&files[0], &secret_file, None);
    assert!(exported.len() <= received.len());
    for (n, (e, (_, r))) in exported.iter().zip(&received).enumerate() {
        assert_eq!(e.raw(), r.raw(), "instruction {n} differs");
    }
    let a_second_before = killed - Duration::from_secs(1);
    let due = received
        .iter()
        .filter(|(at, _)| *at <= a_second_before)
        .count();
    let lost = received
        .get(exported.len())
        .map_or(Duration::ZERO, |(at, _)| {
            killed.saturating_duration_since(*at)
        });
    assert!(
        exported.len() >= due,
        "after {after:?}: the recording holds {} of the {due} instructions received a second \
         before the kill ({} received in all; it lost the last {lost:?})",
        exported.len(),
        received.len()
    );
    format!(
        "{after:?}: lost {lost:?} of {} instructions",
        received.len()
    )
}

/// SIGKILL at 20 points of recorded sessions (two tests of ten, so they run side by side).
async fn killed_at_points(seed: u64) {
    let mut state = seed;
    let mut report = Vec::new();
    for _ in 0..10 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let after = Duration::from_millis(200 + state % 3_300);
        report.push(killed_after(after).await);
    }
    eprintln!("{}", report.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loses_at_most_a_second_of_the_recording_first_ten_points() {
    killed_at_points(0x9E37_79B9_7F4A_7C15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loses_at_most_a_second_of_the_recording_second_ten_points() {
    killed_at_points(0xD1B5_4A32_D192_ED03).await;
}
