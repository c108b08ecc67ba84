//! The terminal as the user sees it: resizing reaches the target's pty, a full-screen program
//! draws and leaves the screen as it was, a flood ends on the right row in bounded memory.

use zt_api::control::Transport;
use zt_guac::{Instruction, opcode};
use zt_terminal::font::Rasteriser;

use super::{DISPLAY, FONT_SIZE, Fixture, STEP};

/// The rows and columns a display of `width` × `height` pixels holds.
fn grid(width: u32, height: u32) -> (u32, u32) {
    let cell = Rasteriser::new(FONT_SIZE, DISPLAY.2).cell();
    (height / cell.height, width / cell.width)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_size_and_time_zone_and_the_locale_reach_the_target() {
    let fx = Fixture::start().await;
    let mut parameters = fx.password_login();
    parameters.push(("locale".into(), "C.UTF-8".into()));
    let (mut term, _id, _session) = fx.terminal(Transport::Quic, &parameters).await;
    term.wait_for_prompt().await;
    let (rows, cols) = grid(DISPLAY.0, DISPLAY.1);
    term.run("stty size", &format!("{rows} {cols}")).await;
    // The terminal type, `locale`, and the client's time zone (no `timezone` given).
    term.run(
        "echo $TERM $LANG $TZ",
        "xterm-256color C.UTF-8 Europe/Berlin",
    )
    .await;

    term.client
        .send(&Instruction::new(opcode::SIZE, &["1000", "300"]))
        .await
        .unwrap();
    let (rows, cols) = grid(1000, 300);
    term.run("stty size", &format!("{rows} {cols}")).await;
    let screen = term.screen();
    assert_eq!((screen.width(), screen.height()), (1000, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_screen_program_draws_and_leaving_it_restores_the_screen() {
    let fx = Fixture::start().await;
    let (mut term, _id, _session) = fx.terminal(Transport::Quic, &fx.password_login()).await;
    term.wait_for_prompt().await;
    let before = term.run("echo before-vim", "before-vim").await;
    let prompt = before.iter().rposition(|l| l.ends_with('$')).unwrap();

    term.type_text("vim -u NONE new-file.txt\n").await;
    // vim's empty buffer: its first row empty (with the cursor), `~` on every other row but
    // the last (the command line, naming the new file).
    let (rows, _) = grid(DISPLAY.0, DISPLAY.1);
    let rows = rows as usize;
    term.wait_for("vim's empty buffer", STEP, |lines| {
        lines.len() >= rows
            && lines[1..rows - 1].iter().all(|l| l == "~")
            && lines[rows - 1].contains("new-file.txt")
            && !lines.iter().any(|l| l.contains("before-vim"))
    })
    .await;
    term.screenshot("vim");
    term.type_text("ihello from vim").await;
    term.key(0xff1b).await; // Escape
    // (The cursor's translucent block sits on the last letter.)
    term.wait_for("the typed text in vim", STEP, |lines| {
        lines[0].starts_with("hello from vi")
    })
    .await;

    term.type_text(":q!\n").await;
    let after = term
        .wait_for("the shell's screen again", STEP, |lines| {
            !lines.iter().any(|l| l == "~")
                && lines
                    .windows(2)
                    .any(|w| w[0].ends_with("$ vim -u NONE new-file.txt") && w[1].ends_with('$'))
        })
        .await;
    // Everything up to the prompt on which vim was started is as it was.
    assert_eq!(after[..prompt], before[..prompt]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_lines_end_on_the_last_row_in_bounded_memory() {
    let fx = Fixture::start().await;
    let (mut term, _id, _session) = fx.terminal(Transport::Webrtc, &fx.password_login()).await;
    term.wait_for_prompt().await;
    let before = zt_tests::proc::rss_kib(fx.proxy.pid()).unwrap();
    let received_before = term.received_text().len();
    term.type_text("seq 1 1000000\n").await;
    let lines = term
        .wait_for(
            "the end of seq",
            std::time::Duration::from_secs(120),
            |lines| {
                let shown: Vec<&String> = lines.iter().filter(|l| !l.is_empty()).collect();
                shown.len() >= 2
                    && shown[shown.len() - 2] == "1000000"
                    && shown[shown.len() - 1].ends_with('$')
            },
        )
        .await;
    term.screenshot("seq");
    // The screen is full of the last numbers, in order.
    let numbers: Vec<u64> = lines.iter().filter_map(|l| l.parse().ok()).collect();
    assert!(numbers.len() > 10, "{lines:?}");
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    let after = zt_tests::proc::rss_kib(fx.proxy.pid()).unwrap();
    assert!(
        after < before + 64 * 1024,
        "ztproxy grew from {before} KiB to {after} KiB"
    );
    // Frames coalesced: far fewer bytes than the 6.9 MB seq printed.
    let sent = term.received_text().len() - received_before;
    assert!(sent < 3_000_000, "{sent} bytes for the flood");
}
