//! Native VNC against real VNC servers the tests start (TigerVNC `Xvnc` with a VNC password,
//! `x11vnc` on `Xvfb`), each showing a solid background, `twm` and an `xterm`. What the user
//! sees is the display model the tests' client rebuilds from ztproxy's instructions, compared
//! pixel for pixel with the X server's own screenshot (`xwd`).

use std::time::{Duration, Instant};

use zt_api::audit::AuditEvent;
use zt_api::control::Transport;
use zt_guac::{Instruction, opcode};
use zt_proxy::client::session::ClientSession;
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::term::{DISPLAY, STEP, Term};
use zt_tests::x11::{Desktop, Server};

use super::{Proxy, events_until_ended};

/// The desktops' size.
const DESKTOP: (u32, u32) = (640, 400);
/// The VNC password.
const PASSWORD: &str = "vnc-pw-7";

/// X11 keysyms.
const XK_RETURN: u32 = 0xFF0D;

fn parameters<'a>(
    password: &'a str,
    extra: &[(&'static str, &'a str)],
) -> Vec<(&'static str, &'a str)> {
    let mut all = vec![("password", password), ("force-lossless", "true")];
    all.extend_from_slice(extra);
    all
}

/// Receives until the client's screen equals the X server's, or fails after `timeout` with
/// the number of differing pixels. The X server is read once the client has had nothing new
/// for a moment (a frame ended and nothing followed for 300 ms).
async fn until_screens_match(fx: &Proxy, term: &mut Term, desktop: &Desktop, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        // Drain until quiet.
        loop {
            match term.receive(Duration::from_millis(300)).await {
                Some(true) => {}
                Some(false) => panic!(
                    "the session closed; {last} {:?}\n{}",
                    term.errors(),
                    fx.proxy.output()
                ),
                None => break,
            }
            assert!(
                Instant::now() < deadline,
                "the display never settled; {last}; the last instructions: {:?}",
                term.received
                    .iter()
                    .rev()
                    .take(12)
                    .map(|i| format!("{i:?}").chars().take(80).collect::<String>())
                    .collect::<Vec<_>>()
            );
        }
        let (width, height, x) = desktop.screenshot().unwrap();
        let screen = term.screen();
        if (screen.width(), screen.height()) == (width, height) {
            let differing = screen
                .pixels()
                .iter()
                .zip(&x)
                .filter(|(a, b)| a != b)
                .count();
            if differing == 0 {
                return;
            }
            let first = screen.pixels().iter().zip(&x).position(|(a, b)| a != b);
            last = format!(
                "cursors {}; {differing} of {} pixels differ (first at {:?}: client {:?}, X {:?})",
                term.received
                    .iter()
                    .filter(|i| i.is(opcode::CURSOR))
                    .count(),
                x.len(),
                first.map(|i| (i as u32 % width, i as u32 / width)),
                first.map(|i| screen.pixels()[i]),
                first.map(|i| x[i]),
            );
        } else {
            last = format!(
                "the client shows {}×{}, the X server {width}×{height}",
                screen.width(),
                screen.height()
            );
        }
        term.screenshot("vnc-mismatch");
        if let Some(dir) = std::env::var_os("ZT_SCREENSHOTS") {
            let log: Vec<String> = term
                .received
                .iter()
                .filter(|i| !i.is(opcode::BLOB))
                .map(|i| String::from_utf8_lossy(i.raw()).chars().take(100).collect())
                .collect();
            std::fs::write(
                std::path::Path::new(&dir).join("vnc-mismatch.log"),
                log.join("\n"),
            )
            .unwrap();
            std::fs::write(
                std::path::Path::new(&dir).join("vnc-proxy.log"),
                fx.proxy.output(),
            )
            .unwrap();
        }
        assert!(Instant::now() < deadline, "{last}");
    }
}

/// Connects the session's client at the tests' display size; the daemon's log if it cannot.
async fn open(fx: &Proxy, session: &ClientSession) -> Term {
    let handshake = Handshake {
        select: "vnc".into(),
        size: DISPLAY,
        ..Handshake::default()
    };
    match GuacClient::connect(session, &handshake).await {
        Ok(client) => Term::new(client),
        Err(error) => panic!("{error:#}\n{}", fx.proxy.output()),
    }
}

/// Starts the session's handshake without waiting for `ready` (a session that fails before
/// its display starts never sends it).
async fn start(fx: &Proxy, session: &ClientSession) -> Term {
    let handshake = Handshake {
        select: "vnc".into(),
        size: DISPLAY,
        ..Handshake::default()
    };
    match GuacClient::start(session, &handshake).await {
        Ok(client) => Term::new(client),
        Err(error) => panic!("{error:#}\n{}", fx.proxy.output()),
    }
}

/// Opens the session and moves the pointer, as a user's browser does: until a client moves
/// it, TigerVNC draws the pointer into the desktop (`needRenderedCursor`), which the X
/// server's screenshot does not show.
async fn open_and_point(fx: &Proxy, session: &ClientSession) -> Term {
    let mut term = open(fx, session).await;
    mouse(&mut term, 600, 380, 0).await;
    term
}

/// A session to `desktop` with `extra` parameters (lossless, with the password), its client
/// connected and pointing, once its screen equals the X server's.
async fn settled(
    fx: &Proxy,
    desktop: &Desktop,
    transport: Transport,
    extra: &[(&'static str, &str)],
    recording: Option<zt_api::control::RecordingRequest>,
) -> (ClientSession, String, Term) {
    let (session, id) = fx
        .session(
            transport,
            "vnc",
            desktop.port,
            &parameters(PASSWORD, extra),
            recording,
        )
        .await;
    let mut term = open_and_point(fx, &session).await;
    until_screens_match(fx, &mut term, desktop, STEP).await;
    (session, id, term)
}

/// Types `text` and Return into the desktop's xterm (the pointer over it gives it the focus
/// under twm), and waits for its `cat` to write the line.
async fn type_line(term: &mut Term, desktop: &Desktop, text: &str) {
    mouse(term, 200, 120, 0).await;
    for c in text.chars() {
        key(term, u32::from(c)).await;
    }
    key(term, XK_RETURN).await;
    receive_until(term, "the typed line", |_| {
        desktop.typed().lines().any(|l| l == text)
    })
    .await;
}

async fn key(term: &mut Term, keysym: u32) {
    for pressed in ["1", "0"] {
        term.client
            .send(&Instruction::new(
                opcode::KEY,
                &[&keysym.to_string(), pressed],
            ))
            .await
            .unwrap();
    }
}

async fn mouse(term: &mut Term, x: i32, y: i32, buttons: u32) {
    term.client
        .send(&Instruction::new(
            opcode::MOUSE,
            &[&x.to_string(), &y.to_string(), &buttons.to_string()],
        ))
        .await
        .unwrap();
}

/// Keeps the display model current while `condition` is false; fails after `STEP`.
async fn receive_until(term: &mut Term, what: &str, condition: impl Fn(&Term) -> bool) {
    let deadline = Instant::now() + STEP;
    while !condition(term) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        if term.receive(Duration::from_millis(50)).await == Some(false) {
            panic!("the session closed while waiting for {what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xvnc_is_drawn_pixel_for_pixel_and_takes_keys_drags_and_resizes() {
    let desktop = Desktop::start(Server::Xvnc, DESKTOP, PASSWORD).unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (_session, id, mut term) = settled(&fx, &desktop, Transport::Quic, &[], None).await;

    // A key typed in the client reaches the xterm (`cat` writes it to a file), and the
    // client's screen shows what the X server shows.
    type_line(&mut term, &desktop, "zt typed").await;
    assert_eq!(desktop.typed(), "zt typed\n");
    until_screens_match(&fx, &mut term, &desktop, STEP).await;

    // A drag of the xterm's title bar (twm's move) moves the window.
    let window = desktop.wait_for_window("zt-xterm").unwrap();
    let (x, y) = desktop.window_position(&window).unwrap();
    let (grab_x, grab_y) = (x + 60, y - 8);
    // At a hand's pace: twm follows the pointer while the button is down, and a release
    // that arrives before it has seen the press cancels the move.
    let hand = Duration::from_millis(40);
    mouse(&mut term, grab_x, grab_y, 0).await;
    mouse(&mut term, grab_x, grab_y, 1).await;
    for step in 1..=10 {
        tokio::time::sleep(hand).await;
        mouse(&mut term, grab_x + step * 12, grab_y + step * 8, 1).await;
    }
    tokio::time::sleep(hand).await;
    mouse(&mut term, grab_x + 120, grab_y + 80, 0).await;
    receive_until(&mut term, "the window to move", |_| {
        desktop.window_position(&window).ok() == Some((x + 120, y + 80))
    })
    .await;
    until_screens_match(&fx, &mut term, &desktop, STEP).await;

    // The client's size becomes the X server's (ExtendedDesktopSize).
    term.client
        .send(&Instruction::new(opcode::SIZE, &["1280", "720"]))
        .await
        .unwrap();
    receive_until(&mut term, "the X screen to be 1280×720", |_| {
        desktop.screen_size().ok() == Some((1280, 720))
    })
    .await;
    until_screens_match(&fx, &mut term, &desktop, STEP).await;
    term.screenshot("vnc-xvnc");

    // The password reached the server, never the client.
    assert!(!term.received_text().contains(PASSWORD));
    fx.api.delete_session(&id).await.unwrap();
    let events = events_until_ended(&mut events, &id).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            AuditEvent::VncConnected { security, width: 640, height: 400, .. } if security == "vnc"
        )),
        "{events:?}"
    );
    let disconnected = events.iter().find_map(|e| match e {
        AuditEvent::VncDisconnected {
            reason,
            frames,
            bytes_to_target,
            ..
        } => Some((reason.clone(), *frames, *bytes_to_target)),
        _ => None,
    });
    let (reason, frames, to_target) = disconnected.expect("vnc_disconnected");
    assert_eq!(reason, "stopped");
    assert!(
        frames > 3 && to_target > 0,
        "{frames} frames, {to_target} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x11vnc_on_xvfb_is_drawn_pixel_for_pixel() {
    let desktop = Desktop::start(Server::X11vnc, DESKTOP, PASSWORD).unwrap();
    let fx = Proxy::start();
    let (_session, _id, mut term) = settled(&fx, &desktop, Transport::Webrtc, &[], None).await;
    type_line(&mut term, &desktop, "x11vnc").await;
    until_screens_match(&fx, &mut term, &desktop, STEP).await;
    term.screenshot("vnc-x11vnc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clipboard_crosses_only_where_the_policy_allows() {
    let mut desktop = Desktop::start(Server::Xvnc, DESKTOP, PASSWORD).unwrap();
    let fx = Proxy::start();
    // Each direction on its own: a policy read the wrong way round fails both rounds.
    for (copy, paste_allowed) in [(true, false), (false, true)] {
        let disable_copy = if copy { "false" } else { "true" };
        let disable_paste = if paste_allowed { "false" } else { "true" };
        let extra = [
            ("disable-copy", disable_copy),
            ("disable-paste", disable_paste),
        ];
        let (_session, id, mut term) = settled(&fx, &desktop, Transport::Quic, &extra, None).await;

        // Server → client: the X clipboard changes; then the background does, and once the
        // client shows that, the cut text (sent before it on the same connection) has come
        // if it ever will.
        let copied = format!("from the desktop {copy} Grüße");
        desktop.set_clipboard(&copied).unwrap();
        let colour = if copy { "#aa3311" } else { "#11aa33" };
        desktop.run("xsetroot", &["-solid", colour]).unwrap();
        let rgb = u32::from_str_radix(&colour[1..], 16).unwrap();
        let expected = [(rgb >> 16) as u8, (rgb >> 8) as u8, rgb as u8, 255];
        if copy {
            receive_until(&mut term, "the copied text", |term| {
                term.clipboards().contains(&copied)
            })
            .await;
        } else {
            receive_until(&mut term, "the new background", |term| {
                term.screen().pixel(2, 2) == Some(expected)
            })
            .await;
            assert!(term.clipboards().is_empty(), "{:?}", term.clipboards());
        }

        // Client → server: a paste, then a key into the xterm; once the key has arrived, the
        // paste (sent before it) has been handled.
        let pasted = format!("from the user {paste_allowed} Ünïcode");
        term.paste(&pasted).await;
        type_line(&mut term, &desktop, if paste_allowed { "p" } else { "q" }).await;
        if paste_allowed {
            receive_until(&mut term, "the pasted text on the X clipboard", |_| {
                desktop.clipboard().as_deref() == Some(pasted.as_str())
            })
            .await;
        } else {
            assert_ne!(desktop.clipboard().as_deref(), Some(pasted.as_str()));
        }
        fx.api.delete_session(&id).await.unwrap();
        term.until_closed().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_ends_the_session_with_a_clear_error() {
    let desktop = Desktop::start(Server::Xvnc, DESKTOP, PASSWORD).unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (session, id) = fx
        .session(
            Transport::Quic,
            "vnc",
            desktop.port,
            &parameters("not-the-pw", &[]),
            None,
        )
        .await;
    let mut term = start(&fx, &session).await;
    term.until_closed().await;
    let errors = term.errors();
    assert!(
        errors
            .iter()
            .any(|(message, status)| message == "VNC authentication failed" && *status == 0x0301),
        "{errors:?}"
    );
    assert!(!term.received_text().contains("not-the-pw"));
    let events = events_until_ended(&mut events, &id).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AuditEvent::VncLoginFailed { .. })),
        "{events:?}"
    );
    assert!(!fx.proxy.output().contains("not-the-pw"));
}

/// The established TCP connections to `port` on 127.0.0.1 (`ss`).
fn connections_to(port: u16) -> usize {
    let output = std::process::Command::new("ss")
        .args([
            "-Htn",
            "state",
            "established",
            &format!("( dport = :{port} )"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_closes_the_rfb_connection_within_a_second() {
    let desktop = Desktop::start(Server::Xvnc, DESKTOP, PASSWORD).unwrap();
    let fx = Proxy::start();
    let (_session, id, mut term) = settled(&fx, &desktop, Transport::Quic, &[], None).await;
    assert_eq!(connections_to(desktop.port), 1);
    let revoked = Instant::now();
    fx.api.delete_session(&id).await.unwrap();
    while connections_to(desktop.port) > 0 {
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "the RFB connection outlived the revocation by a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    term.until_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_servers_end_the_session_with_a_clear_error_in_bounded_memory() {
    use zt_tests::hostile_vnc::{Attack, HostileVnc};
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let rss_before = zt_tests::proc::rss_kib(fx.proxy.pid()).unwrap();
    for (attack, detail) in [
        (Attack::BillionPixels, "desktop"),
        (Attack::OversizedRect, "rectangle"),
        (Attack::RectOutside, "rectangle"),
        (Attack::ColourMap, "colour map"),
        (Attack::TruncatedZrle, "ZRLE"),
        (Attack::BrokenTight, "Tight"),
        (Attack::EndlessCutText, "cut text"),
    ] {
        let server = HostileVnc::start(attack).await;
        // No password: the hostile server offers "None".
        let (session, id) = fx
            .session(Transport::Quic, "vnc", server.addr.port(), &[], None)
            .await;
        let mut term = start(&fx, &session).await;
        term.until_closed().await;
        let errors = term.errors();
        assert!(
            errors.iter().any(|(_, status)| *status == 0x0203),
            "{attack:?}: {errors:?}"
        );
        let events = events_until_ended(&mut events, &id).await;
        let said = events
            .iter()
            .find_map(|e| match e {
                AuditEvent::VncDisconnected { reason, detail, .. } => {
                    Some(format!("{reason}: {}", detail.clone().unwrap_or_default()))
                }
                AuditEvent::SessionEnded { detail, .. } => detail.clone(),
                _ => None,
            })
            .unwrap_or_default();
        assert!(said.contains(detail), "{attack:?}: {said}\n{events:?}");
        // ztproxy closed the server's connection.
        let deadline = Instant::now() + STEP;
        while server.closed() == 0 {
            assert!(
                Instant::now() < deadline,
                "{attack:?}: the connection stayed open"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let rss_after = zt_tests::proc::rss_kib(fx.proxy.pid()).unwrap();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "the daemon grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(fx.proxy.output().contains("the VNC"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_gets_no_more_frames_then_a_fresh_one() {
    let mut desktop = Desktop::start(Server::Xvnc, DESKTOP, PASSWORD).unwrap();
    let fx = Proxy::start();
    let (_session, _id, mut term) = settled(&fx, &desktop, Transport::Quic, &[], None).await;
    // A window whose text changes as fast as it can for three seconds.
    desktop
        .start_client(
            "xterm",
            &[
                "-geometry",
                "30x6+300+220",
                "-e",
                "sh",
                "-c",
                "end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do date +%s%N; done; \
                 echo flood over; exec sleep 600",
            ],
        )
        .unwrap();
    let syncs = |term: &Term| term.received.iter().filter(|i| i.is(opcode::SYNC)).count();
    let frames_before = syncs(&term);
    receive_until(&mut term, "frames of the flood", |term| {
        syncs(term) > frames_before + 3
    })
    .await;
    // The client stops answering: ztproxy sends what was asked of the server already, then
    // nothing (the proxy answers for a client only after 4 s).
    term.client.answer_syncs = false;
    let silent = Instant::now();
    let at_silence = syncs(&term);
    let bytes_at_silence: usize = term.received.iter().map(Instruction::len).sum();
    while silent.elapsed() < Duration::from_millis(1500) {
        if term.receive(Duration::from_millis(100)).await == Some(false) {
            panic!("the session closed");
        }
    }
    let unanswered = syncs(&term) - at_silence;
    let bytes: usize = term.received.iter().map(Instruction::len).sum::<usize>() - bytes_at_silence;
    assert!(
        unanswered <= 2,
        "{unanswered} frames went to a client that answered none ({bytes} bytes)"
    );
    // It answers the last one: frames come again, and the screen catches up with the X
    // server's once the flood is over.
    let last = term
        .received
        .iter()
        .rev()
        .find(|i| i.is(opcode::SYNC))
        .unwrap()
        .arg(0)
        .unwrap()
        .to_owned();
    term.client.answer_syncs = true;
    term.client
        .send(&Instruction::new(opcode::SYNC, &[last.as_str()]))
        .await
        .unwrap();
    let resumed = syncs(&term);
    receive_until(&mut term, "frames after the answer", |term| {
        syncs(term) > resumed + 3
    })
    .await;
    until_screens_match(&fx, &mut term, &desktop, STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_red_blue_and_a_remote_cursor_are_drawn_by_the_server() {
    let desktop = Desktop::start(Server::Xvnc, DESKTOP, PASSWORD).unwrap();
    let fx = Proxy::start();
    let extra = [("swap-red-blue", "true"), ("cursor", "remote")];
    let (session, _id) = fx
        .session(
            Transport::Quic,
            "vnc",
            desktop.port,
            &parameters(PASSWORD, &extra),
            None,
        )
        .await;
    let mut term = open_and_point(&fx, &session).await;
    // The background #336699 with red and blue swapped; the X cursor drawn into the desktop
    // under the pointer, and no `cursor` for the client to draw.
    let background = [0x99, 0x66, 0x33, 255];
    receive_until(
        &mut term,
        "the swapped background and the drawn cursor",
        |term| {
            let screen = term.screen();
            screen.pixel(2, 2) == Some(background)
                && (585..615)
                    .flat_map(|x| (365..395).map(move |y| (x, y)))
                    .any(|(x, y)| screen.pixel(x, y).is_some_and(|p| p != background))
        },
    )
    .await;
    assert!(!term.received.iter().any(|i| i.is(opcode::CURSOR)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graphical_recording_ends_on_the_screen_from_its_start_and_its_last_key_frame() {
    let mut desktop = Desktop::start(Server::Xvnc, DESKTOP, PASSWORD).unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let recording = zt_api::control::RecordingRequest {
        graphical: true,
        typescript: false,
        ..super::typescript()
    };
    let (_session, id, mut term) =
        settled(&fx, &desktop, Transport::Quic, &[], Some(recording)).await;
    // A clock that changes every second, for seven of them: the recording takes a key frame
    // after its first.
    desktop
        .start_client(
            "xclock",
            &["-digital", "-update", "1", "-geometry", "+300+260"],
        )
        .unwrap();
    let syncs = |term: &Term| term.received.iter().filter(|i| i.is(opcode::SYNC)).count();
    let before = syncs(&term);
    let started = Instant::now();
    receive_until(&mut term, "seven seconds of the clock", |term| {
        syncs(term) >= before + 7 && started.elapsed() > Duration::from_secs(7)
    })
    .await;
    until_screens_match(&fx, &mut term, &desktop, STEP).await;
    let last_screen = term.screen();
    fx.api.delete_session(&id).await.unwrap();
    let (_, files) = fx.ended_recordings(&mut events, &id).await;
    assert_eq!(files.len(), 1, "{files:?}");
    let all = zt_tests::decode_recording(&std::fs::read(fx.export(&files[0], "guac")).unwrap());
    assert_eq!(
        zt_tests::replay_screen(&all).differing_pixels(&last_screen),
        0
    );
    let tail = zt_tests::export_recording(
        zt_tests::ztproxy_bin!(),
        &files[0],
        super::RESOURCE_SECRET,
        "guac",
        &["--from", "1h"],
    );
    let from_key_frame = zt_tests::decode_recording(&std::fs::read(&tail).unwrap());
    assert!(from_key_frame.len() < all.len());
    assert_eq!(
        zt_tests::replay_screen(&from_key_frame).differing_pixels(&last_screen),
        0,
        "the last key frame and what follows it are not the client's last screen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_flooding_a_client_that_does_not_read_costs_bounded_memory() {
    use zt_tests::hostile_vnc::{Attack, HostileVnc};
    let fx = Proxy::start();
    let server = HostileVnc::start(Attack::UnaskedUpdates).await;
    let (session, id) = fx
        .session(Transport::Quic, "vnc", server.addr.port(), &[], None)
        .await;
    let mut term = open(&fx, &session).await;
    let before = zt_tests::proc::rss_kib(fx.proxy.pid()).unwrap();
    // The client reads nothing for three seconds while the server sends updates of noise
    // (64 KiB of pixels each, a PNG of about as much) as fast as it can.
    let started = Instant::now();
    let mut peak = before;
    while started.elapsed() < Duration::from_secs(3) {
        peak = peak.max(zt_tests::proc::rss_kib(fx.proxy.pid()).unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        peak < before + 96 * 1024,
        "the daemon grew from {before} KiB to {peak} KiB"
    );
    // It was never stuck: the client reads again and frames come.
    receive_until(&mut term, "a frame", |term| {
        term.received.iter().any(|i| i.is(opcode::SYNC))
    })
    .await;
    fx.api.delete_session(&id).await.unwrap();
}
