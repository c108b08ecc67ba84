//! Recordings of a native SSH connection: the typescript plays in `scriptreplay` and
//! `asciinema`, the graphical recording shows what the client saw; no secret reaches a log.

use std::path::{Path, PathBuf};
use std::process::Command;

use zt_api::audit::AuditEvent;
use zt_api::control::{EndReason, Transport};
use zt_proxy::client::api::EventStream;
use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::ztproxy_bin;

use super::{
    Fixture, RESOURCE_SECRET, STEP, Term, events_until_ended, recording, secret_pieces, wait_event,
};

/// Exports `recording` in `format` (with `extra` arguments) and returns the output's path.
fn export(recording: &Path, format: &str, extra: &[&str]) -> PathBuf {
    zt_tests::export_recording(ztproxy_bin!(), recording, RESOURCE_SECRET, format, extra)
}

/// The recordings the session's `recording_ended` events name, by kind.
async fn ended_recordings(fx: &Fixture, events: &mut EventStream, id: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for event in events_until_ended(events, id).await {
        if let AuditEvent::RecordingEnded {
            recording, status, ..
        } = event
        {
            assert_eq!(status, "finalised");
            files.push(fx.recordings.path().join("rec").join(recording));
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_session_replays_in_scriptreplay_asciinema_and_the_player() {
    let fx = Fixture::start().await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (session, id) = fx
        .session(
            Transport::Quic,
            &fx.password_login(),
            Some(recording(true, true)),
        )
        .await;
    let mut term = Term::connect(&session).await;
    term.wait_for_prompt().await;
    // Six seconds of output, so that the recording takes a key frame after its first.
    term.run(
        "for i in $(seq 1 12); do echo tick-$i; sleep 0.5; done",
        "tick-12",
    )
    .await;
    term.run("echo zt-$((6*7))", "zt-42").await;
    // The shell exits: the session ends by itself, and its recordings are finalised.
    term.type_text("exit\n").await;
    term.until_closed().await;
    let last_screen = term.screen();
    let files = ended_recordings(&fx, &mut events, &id).await;
    assert_eq!(files.len(), 2, "{files:?}");
    let graphical = files
        .iter()
        .find(|f| f.to_string_lossy().contains("graphical"))
        .unwrap();
    let typescript = files
        .iter()
        .find(|f| f.to_string_lossy().contains("typescript"))
        .unwrap();

    // The typescript, in scriptreplay.
    let data = export(typescript, "typescript", &[]);
    let timing = PathBuf::from(format!("{}.timing", data.display()));
    let replay = Command::new("scriptreplay")
        .args(["--maxdelay", "0.01", "--timing"])
        .arg(&timing)
        .arg(&data)
        .output()
        .expect("scriptreplay (bsdutils) runs");
    assert!(replay.status.success());
    let replayed = String::from_utf8_lossy(&replay.stdout);
    assert!(replayed.contains("\rzt-42\r\n"), "{replayed:?}");
    // No input was recorded (no recording-include-keys): the command shows only as the
    // shell's echo of it.
    assert!(replayed.contains("echo zt-$((6*7))"));

    // The asciicast, in asciinema.
    let cast = export(typescript, "asciicast", &[]);
    // `asciinema cat` insists on a controlling terminal; `script` (bsdutils) provides one.
    let played = Command::new("script")
        .args(["--quiet", "--return", "--command"])
        .arg(format!("asciinema cat {}", cast.display()))
        .arg("/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("asciinema runs");
    assert!(
        played.status.success(),
        "{}",
        String::from_utf8_lossy(&played.stderr)
    );
    assert!(String::from_utf8_lossy(&played.stdout).contains("\rzt-42\r\n"));

    // The graphical recording: from its start, and from its last key frame, it ends on the
    // screen the client saw last.
    let guac = export(graphical, "guac", &[]);
    let all = zt_tests::decode_recording(&std::fs::read(&guac).unwrap());
    assert_eq!(
        zt_tests::replay_screen(&all).differing_pixels(&last_screen),
        0
    );
    let tail = export(graphical, "guac", &["--from", "1h"]);
    let from_key_frame = zt_tests::decode_recording(&std::fs::read(&tail).unwrap());
    assert!(from_key_frame.len() < all.len());
    assert_eq!(
        zt_tests::replay_screen(&from_key_frame).differing_pixels(&last_screen),
        0,
        "the last key frame and what follows it are not the client's last screen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_in_the_typescript_only_with_recording_include_keys() {
    let fx = Fixture::start().await;
    for include in [false, true] {
        let mut events = fx.api.events(Some(0)).await.unwrap();
        let mut parameters = fx.password_login();
        // Typed without echo, so only an input record can hold it.
        parameters.push((
            "command".into(),
            "bash -c 'stty -echo; echo ready; read line; echo done-1'".into(),
        ));
        if include {
            parameters.push(("recording-include-keys".into(), "true".into()));
        }
        let (session, id) = fx
            .session(Transport::Quic, &parameters, Some(recording(false, true)))
            .await;
        let mut term = Term::connect(&session).await;
        term.wait_for("ready", STEP, |l| l.iter().any(|l| l == "ready"))
            .await;
        term.type_text("secret-keys-7\n").await;
        term.wait_for("done-1", STEP, |l| l.iter().any(|l| l == "done-1"))
            .await;
        term.until_closed().await;
        assert!(
            !term.received_text().contains("secret-keys-7"),
            "the keys were echoed"
        );
        let files = ended_recordings(&fx, &mut events, &id).await;
        let cast = export(&files[0], "asciicast", &[]);
        let text = std::fs::read_to_string(&cast).unwrap();
        // Input may be recorded in several events (keys arrive one by one): join them.
        let typed: String = text
            .lines()
            .skip(1)
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event[1] == "i")
            .filter_map(|event| event[2].as_str().map(str::to_owned))
            .collect();
        assert_eq!(
            typed.contains("secret-keys-7"),
            include,
            "include-keys {include}: {text}"
        );
        assert!(!include || !text.contains("\"o\", \"secret"), "{text}");
        if !include {
            assert!(
                typed.is_empty() && !text.contains("secret-keys-7"),
                "{text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_from_the_ssh_crates_reaches_a_log_at_any_level() {
    let fx = Fixture::start().await;
    // A second daemon logging everything, russh's own `log` records included.
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            log_level: "trace".into(),
            rust_log: Some(
                "info,zt_proxy=trace,zt_ssh=trace,zt_terminal=trace,zt_connection=trace,\
                 zt_recorder=trace,russh=trace"
                    .into(),
            ),
            ..ProxyOptions::default()
        },
    )
    .unwrap();
    let fx = Fixture {
        api: proxy.api(),
        proxy,
        ..fx
    };
    let mut checked = Vec::new();
    for parameters in [fx.password_login(), fx.key_login(1)] {
        let mut events = fx.api.events(Some(0)).await.unwrap();
        let (mut term, id, _session) = fx.terminal(Transport::Quic, &parameters).await;
        term.wait_for_prompt().await;
        term.run("echo typed-keystrokes-5", "typed-keystrokes-5")
            .await;
        fx.api.delete_session(&id).await.unwrap();
        wait_event(&mut events, &id, STEP, |e| matches!(e, AuditEvent::SessionEnded { reason, .. } if *reason == EndReason::Revoked)).await;
        checked.extend(secret_pieces(&parameters));
    }
    // A wrong password too.
    let mut wrong = fx.password_login();
    wrong[1].1 = "wrong-password-Q8".into();
    let (session, id) = fx.session(Transport::Quic, &wrong, None).await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let _client = zt_tests::guac_client::GuacClient::start(&session, &Default::default()).await;
    wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::SessionEnded { .. })
    })
    .await;
    checked.push("wrong-password-Q8".into());

    let log = fx.proxy.output();
    assert!(
        log.contains("TRACE") || log.contains("trace"),
        "the daemon did not log at trace level"
    );
    assert!(
        log.contains("russh") || log.contains("zt_ssh"),
        "nothing from the ssh crates was logged"
    );
    for secret in checked {
        assert!(
            !log.contains(&secret),
            "a secret ({} bytes) reached the log",
            secret.len()
        );
    }
    assert!(
        !log.contains("typed-keystrokes-5"),
        "a keystroke reached the log"
    );
    let _ = STEP;
}
