//! Policy on a native SSH connection: copy and paste each in their own direction only,
//! read-only, and revocation reaching the target at once.

use std::time::{Duration, Instant};

use base64::Engine as _;
use zt_api::audit::AuditEvent;
use zt_api::control::Transport;
use zt_guac::{Instruction, opcode};
use zt_terminal::font::Rasteriser;

use super::{DISPLAY, FONT_SIZE, Fixture, STEP, Term, wait_event};

/// Selects `len` cells of the row showing `text` (from its first column) with the mouse.
async fn select(term: &mut Term, lines: &[String], text: &str, len: u32) {
    let row = lines
        .iter()
        .position(|l| l == text)
        .expect("the text is on screen") as u32;
    let cell = Rasteriser::new(FONT_SIZE, DISPLAY.2).cell();
    let y = (row * cell.height + cell.height / 2).to_string();
    let from = (cell.width / 2).to_string();
    let to = ((len - 1) * cell.width + cell.width / 2).to_string();
    for (x, buttons) in [(&from, "0"), (&from, "1"), (&to, "1"), (&to, "0")] {
        term.client
            .send(&Instruction::new(opcode::MOUSE, &[x.as_str(), &y, buttons]))
            .await
            .unwrap();
    }
}

/// The text of the first clipboard stream received (after `from` instructions).
fn copied(term: &Term, from: usize) -> Option<String> {
    let received = &term.received[from..];
    let start = received.iter().position(|i| i.is(opcode::CLIPBOARD))?;
    let stream = received[start].arg(0)?.to_owned();
    let mut data = Vec::new();
    for instruction in &received[start..] {
        if instruction.is(opcode::BLOB) && instruction.arg(0) == Some(&stream) {
            data.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(instruction.arg(1)?)
                    .ok()?,
            );
        }
        if instruction.is(opcode::END) && instruction.arg(0) == Some(&stream) {
            return String::from_utf8(data).ok();
        }
    }
    None
}

/// Sends `text` as the client's clipboard, then presses the middle button to paste it.
async fn paste(term: &mut Term, text: &str) {
    let data = base64::engine::general_purpose::STANDARD.encode(text);
    for instruction in [
        Instruction::new(opcode::CLIPBOARD, &["40", "text/plain"]),
        Instruction::new(opcode::BLOB, &["40", &data]),
        Instruction::new(opcode::END, &["40"]),
        Instruction::new(opcode::MOUSE, &["5", "5", "2"]),
        Instruction::new(opcode::MOUSE, &["5", "5", "0"]),
    ] {
        term.client.send(&instruction).await.unwrap();
    }
}

/// Copies `copy-me-42` from the screen and pastes `pasted-99`; returns what was copied (if
/// anything reached the client) and whether the paste reached the shell.
async fn copy_and_paste(fx: &Fixture, policy: &[(&str, &str)]) -> (Option<String>, bool, String) {
    let mut parameters = fx.password_login();
    parameters.extend(
        policy
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (mut term, id, _session) = fx.terminal(Transport::Quic, &parameters).await;
    term.wait_for_prompt().await;
    let lines = term.run("echo copy-me-42", "copy-me-42").await;
    let mark = term.received.len();
    select(&mut term, &lines, "copy-me-42", 10).await;
    if policy.contains(&("disable-copy", "true")) {
        wait_event(
            &mut events,
            &id,
            STEP,
            |e| matches!(e, AuditEvent::PolicyRefused { action, .. } if action == "copy"),
        )
        .await;
    }
    // A paste between brackets: `[]` when refused.
    term.type_text("echo [").await;
    paste(&mut term, "pasted-99").await;
    term.type_text("]\n").await;
    let lines = term
        .wait_for("the pasted line", STEP, |lines| {
            lines.iter().any(|l| l == "[pasted-99]" || l == "[]")
        })
        .await;
    let pasted = lines.iter().any(|l| l == "[pasted-99]");
    (copied(&term, mark), pasted, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_paste_each_obey_their_own_switch() {
    let fx = Fixture::start().await;
    let (copy, pasted, _) = copy_and_paste(&fx, &[]).await;
    assert_eq!(copy.as_deref(), Some("copy-me-42"));
    assert!(pasted);

    let (copy, pasted, _) = copy_and_paste(&fx, &[("disable-copy", "true")]).await;
    assert_eq!(copy, None, "disable-copy let a copy through");
    assert!(pasted, "disable-copy stopped a paste");

    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (copy, pasted, id) = copy_and_paste(&fx, &[("disable-paste", "true")]).await;
    assert_eq!(
        copy.as_deref(),
        Some("copy-me-42"),
        "disable-paste stopped a copy"
    );
    assert!(!pasted, "disable-paste let a paste through");
    wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::PolicyRefused { action, direction, .. }
            if action == "paste" && direction == "to_target")
    })
    .await;
}

/// Runs a command that reads a line for three seconds and shows it, types `abc` and Return,
/// and returns the line it showed.
async fn typed_into(fx: &Fixture, read_only: bool) -> String {
    let mut parameters = fx.password_login();
    parameters.push((
        "command".into(),
        "bash -c 'echo ready; read -t 3 line; echo \"got:[$line]\"; sleep 1'".into(),
    ));
    if read_only {
        parameters.push(("read-only".into(), "true".into()));
    }
    let (mut term, _id, _session) = fx.terminal(Transport::Quic, &parameters).await;
    term.wait_for("ready", STEP, |l| l.iter().any(|l| l == "ready"))
        .await;
    term.type_text("abc\n").await;
    let lines = term
        .wait_for("the command's verdict", STEP, |lines| {
            lines.iter().any(|l| l.starts_with("got:"))
        })
        .await;
    lines.into_iter().find(|l| l.starts_with("got:")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_drops_the_users_keys() {
    let fx = Fixture::start().await;
    assert_eq!(typed_into(&fx, false).await, "got:[abc]");
    assert_eq!(typed_into(&fx, true).await, "got:[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_closes_the_ssh_connection_within_a_second() {
    let fx = Fixture::start().await;
    for transport in super::TRANSPORTS {
        let (mut term, id, _session) = fx.terminal(transport, &fx.password_login()).await;
        term.wait_for_prompt().await;
        let disconnects = fx.sshd.log().matches("Received disconnect from").count();
        let revoked = Instant::now();
        fx.api.delete_session(&id).await.unwrap();
        let mut seen = None;
        while revoked.elapsed() < Duration::from_secs(3) {
            if fx.sshd.log().matches("Received disconnect from").count() > disconnects {
                seen = Some(revoked.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seen = seen.unwrap_or_else(|| panic!("sshd saw no disconnect:\n{}", fx.sshd.log()));
        assert!(
            seen < Duration::from_secs(1),
            "{transport:?}: sshd saw the disconnect after {seen:?}"
        );
        term.until_closed().await;
        assert!(
            term.errors().iter().any(|(m, _)| m == "Session revoked"),
            "{:?}",
            term.errors()
        );
    }
}
