//! Native Telnet: guacd's login regexes against inetutils `telnetd` running a login program of
//! the test's own, the window size by NAWS, a refused login, and a hostile server.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zt_api::audit::AuditEvent;
use zt_api::control::Transport;
use zt_guac::{Instruction, Status, opcode};
use zt_tests::servers::Telnetd;
use zt_tests::term::{DISPLAY, STEP, Term};

use super::{Proxy, TRANSPORTS, events_until_ended, grid};

/// guacd-style parameters for `telnetd`'s login program, with `password`.
fn login(telnetd: &Telnetd, password: &str) -> Vec<(&'static str, String)> {
    vec![
        ("username", telnetd.user.clone()),
        ("password", password.to_owned()),
        ("username-regex", "zt-device login: ?$".to_owned()),
        ("password-regex", "Password: ?$".to_owned()),
        ("login-success-regex", "Last login:".to_owned()),
        ("login-failure-regex", "Login incorrect".to_owned()),
    ]
}

fn pairs<'a>(parameters: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    parameters.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_regexes_log_in_and_the_window_size_follows_the_client() {
    let telnetd = Telnetd::start().unwrap();
    let fx = Proxy::start();
    for transport in TRANSPORTS {
        let mut events = fx.api.events(Some(0)).await.unwrap();
        let parameters = login(&telnetd, &telnetd.password);
        let (session, id) = fx
            .session(transport, "telnet", telnetd.port, &pairs(&parameters), None)
            .await;
        let mut term = Term::connect_to(&session, "telnet").await;
        // The login happened on the screen: the prompts, the typed user name (echoed by the
        // device), then the shell.
        let lines = term.wait_for_prompt().await;
        assert!(
            lines
                .iter()
                .any(|l| l == &format!("zt-device login: {}", telnetd.user)),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("Last login:")),
            "{lines:?}"
        );
        term.run("echo zt-$((6*7))", "zt-42").await;
        // NAWS: the device's pty has the terminal's size, and follows the client's `size`.
        let (rows, cols) = grid(DISPLAY.0, DISPLAY.1);
        term.run("stty size", &format!("{rows} {cols}")).await;
        term.client
            .send(&Instruction::new(opcode::SIZE, &["1000", "300"]))
            .await
            .unwrap();
        let (rows, cols) = grid(1000, 300);
        term.run("stty size", &format!("{rows} {cols}")).await;
        term.screenshot(&format!("telnet-{transport:?}"));
        // The password went to the device, never to the client.
        assert!(!term.received_text().contains(&telnetd.password));

        term.type_text("exit\n").await;
        term.until_closed().await;
        let events = events_until_ended(&mut events, &id).await;
        let ended = events
            .iter()
            .find_map(|e| match e {
                AuditEvent::TelnetDisconnected {
                    reason,
                    logged_in,
                    bytes_to_target,
                    ..
                } => Some((reason.clone(), *logged_in, *bytes_to_target)),
                _ => None,
            })
            .expect("telnet_disconnected");
        assert_eq!(ended.0, "target_closed", "{transport:?}");
        assert!(ended.1, "logged in");
        // The user's keys, not the credentials ztproxy typed.
        assert!(ended.2 >= "echo zt-$((6*7))\rstty size\rstty size\rexit\r".len() as u64);
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, AuditEvent::TelnetLoginFailed { .. })),
            "{events:?}"
        );
        drop(session);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_ends_the_session_with_the_reason() {
    let telnetd = Telnetd::start().unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let parameters = login(&telnetd, "not-the-password");
    let (session, id) = fx
        .session(
            Transport::Quic,
            "telnet",
            telnetd.port,
            &pairs(&parameters),
            None,
        )
        .await;
    let mut term = Term::connect_to(&session, "telnet").await;
    term.until_closed().await;
    // The user saw the device's refusal, and heard why the session ended.
    assert!(
        term.lines().iter().any(|l| l == "Login incorrect"),
        "{:?}",
        term.lines()
    );
    assert_eq!(
        term.errors(),
        vec![(
            "Telnet login failed".to_owned(),
            Status::CLIENT_UNAUTHORIZED.code()
        )]
    );
    let events = events_until_ended(&mut events, &id).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            AuditEvent::TelnetLoginFailed { reason, .. } if reason == "refused"
        )),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            AuditEvent::TelnetDisconnected { reason, logged_in: false, .. } if reason == "login_failed"
        )),
        "{events:?}"
    );
    drop(session);
}

/// What the hostile server sent and received.
#[derive(Debug, Default)]
struct HostileReport {
    sent: u64,
    received: u64,
}

/// A Telnet server that never prompts: option requests for every option over and over, IAC
/// between every two characters of an endless line, subnegotiations that never end, for as
/// long as the client reads. Reports what it sent and what the client answered.
async fn hostile_server() -> (u16, tokio::sync::oneshot::Receiver<HostileReport>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (report_tx, report_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let reading = tokio::spawn(async move {
            let mut received = 0u64;
            let mut buf = vec![0; 16 * 1024];
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                received += n as u64;
            }
            received
        });
        let mut chunk = Vec::with_capacity(64 * 1024);
        for option in 0..=255u8 {
            for verb in [251u8, 252, 253, 254] {
                chunk.extend_from_slice(&[255, verb, option]);
            }
        }
        // A subnegotiation far over any limit, then its end.
        chunk.extend_from_slice(&[255, 250, 24]);
        chunk.extend(std::iter::repeat_n(b'x', 8 * 1024));
        chunk.extend_from_slice(&[255, 240]);
        // An endless "prompt" with IAC (escaped 255s and NOPs) in every position.
        while chunk.len() < 64 * 1024 {
            chunk.extend_from_slice(b"Username please ");
            chunk.extend_from_slice(&[255, 255, 255, 241]);
        }
        let mut sent = 0u64;
        while writer.write_all(&chunk).await.is_ok() {
            sent += chunk.len() as u64;
        }
        let received = reading.await.unwrap_or(0);
        let _ = report_tx.send(HostileReport { sent, received });
    });
    (port, report_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_server_that_never_prompts_costs_bounded_memory_and_times_out() {
    let fx = Proxy::start();
    let (port, report) = hostile_server().await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let before = zt_tests::proc::rss_kib(fx.proxy.pid()).unwrap();
    let parameters = [
        ("username", "operator"),
        ("password", "pw"),
        ("timeout", "4"),
    ];
    let (session, id) = fx
        .session(Transport::Webrtc, "telnet", port, &parameters, None)
        .await;
    let mut term = Term::connect_to(&session, "telnet").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !term.closed {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            term.receive(left).await.is_some(),
            "the session did not end"
        );
    }
    let after = zt_tests::proc::rss_kib(fx.proxy.pid()).unwrap();
    assert_eq!(
        term.errors(),
        vec![(
            "The Telnet login did not finish in time".to_owned(),
            Status::UPSTREAM_TIMEOUT.code()
        )]
    );
    let report = tokio::time::timeout(STEP, report).await.unwrap().unwrap();
    // The server sent tens of megabytes of requests; each option was refused a few times at
    // most, and nothing else went back.
    assert!(report.sent > 8 << 20, "{report:?}");
    assert!(report.received < 16 * 1024, "{report:?}");
    assert!(
        after < before + 64 * 1024,
        "ztproxy grew from {before} KiB to {after} KiB"
    );
    let events = events_until_ended(&mut events, &id).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            AuditEvent::TelnetLoginFailed { reason, .. } if reason == "timed_out"
        )),
        "{events:?}"
    );
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_holds_the_users_keys_but_never_the_typed_password() {
    let telnetd = Telnetd::start().unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let mut parameters = login(&telnetd, &telnetd.password);
    parameters.push(("recording-include-keys", "true".to_owned()));
    let (session, id) = fx
        .session(
            Transport::Quic,
            "telnet",
            telnetd.port,
            &pairs(&parameters),
            Some(super::typescript()),
        )
        .await;
    let mut term = Term::connect_to(&session, "telnet").await;
    term.wait_for_prompt().await;
    term.run("echo zt-$((6*7))", "zt-42").await;
    term.type_text("exit\n").await;
    term.until_closed().await;
    let (_, files) = fx.ended_recordings(&mut events, &id).await;
    assert_eq!(files.len(), 1, "{files:?}");
    let cast = std::fs::read_to_string(fx.export(&files[0], "asciicast")).unwrap();
    let of_kind = |kind: &str| -> String {
        cast.lines()
            .skip(1)
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event[1] == kind)
            .filter_map(|event| event[2].as_str().map(str::to_owned))
            .collect()
    };
    let (typed, shown) = (of_kind("i"), of_kind("o"));
    assert!(typed.contains("echo zt-$((6*7))\r"), "{typed:?}");
    assert!(shown.contains("zt-device login: ") && shown.contains("\r\nzt-42\r\n"));
    // Neither credential is input (ztproxy typed them); the password is nowhere.
    assert!(!typed.contains(&telnetd.user), "{typed:?}");
    assert!(!cast.contains(&telnetd.password));
    drop(session);
}
