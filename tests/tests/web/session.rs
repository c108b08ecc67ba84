//! The session page against a real sshd through `ztproxy connect web` and WebRTC.

use std::time::{Duration, Instant};

use zt_tests::browser::Browser;

use crate::{FONT_SIZE, Fixture, STEP, WINDOW, open_session, run, wait_prompt, wait_screen};

/// Rows and columns of the terminal in a window of `width` × `height` pixels.
fn grid(width: u32, height: u32) -> (u32, u32) {
    let cell = zt_terminal::font::Rasteriser::new(FONT_SIZE, 96).cell();
    (height / cell.height, width / cell.width)
}

#[tokio::test]
async fn keys_typed_in_the_page_run_on_the_target_and_the_output_shows() {
    let fixture = Fixture::start();
    let helper = fixture.web(&[], &[]);
    let mut browser = Browser::start().unwrap();
    open_session(&mut browser, &helper.field("url"), false).await;
    wait_prompt(&mut browser).await;
    let lines = run(&mut browser, "echo zt-$((6*7))", "zt-42").await;
    // The command line itself shows what was typed, character for character.
    assert!(
        lines.iter().any(|l| l.contains("echo zt-$((6*7))")),
        "the typed command is not on screen:\n{}",
        lines.join("\n")
    );
    browser.close().await;
}

#[tokio::test]
async fn resizing_the_window_resizes_the_terminal_on_the_target() {
    let fixture = Fixture::start();
    let helper = fixture.web(&[], &[]);
    let mut browser = Browser::start().unwrap();
    open_session(&mut browser, &helper.field("url"), false).await;
    wait_prompt(&mut browser).await;
    let (rows, cols) = grid(WINDOW.0, WINDOW.1);
    run(&mut browser, "stty size", &format!("{rows} {cols}")).await;

    let (width, height) = (640, 400);
    browser.resize(width, height).await.unwrap();
    let (rows, cols) = grid(width, height);
    // The new size reaches the target after the page's debounce and the window change; run
    // the command until it shows (each run types the command again).
    let expected = format!("{rows} {cols}");
    let deadline = Instant::now() + STEP;
    loop {
        browser.type_text("clear; stty size").await.unwrap();
        browser.press("Enter").await.unwrap();
        let (lines, _) = wait_screen(&mut browser, "the output of stty size", STEP, |lines| {
            lines.iter().any(|l| {
                let mut words = l.split_whitespace();
                matches!((words.next(), words.next(), words.next()), (Some(r), Some(c), None)
                    if r.parse::<u32>().is_ok() && c.parse::<u32>().is_ok())
            })
        })
        .await;
        if lines.iter().any(|l| l.trim_end() == expected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stty size never showed {expected}:\n{}",
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.close().await;
}

/// Where `text` is on screen, in pixels: the centres of its first and last cells.
fn locate(lines: &[String], text: &str) -> ((f64, f64), (f64, f64)) {
    let cell = zt_terminal::font::Rasteriser::new(FONT_SIZE, 96).cell();
    let (row, line) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.trim_end() == text)
        .unwrap_or_else(|| panic!("`{text}` is not on screen:\n{}", lines.join("\n")));
    let col = line.find(text).unwrap();
    let y = (row as f64 + 0.5) * f64::from(cell.height);
    let x0 = (col as f64 + 0.5) * f64::from(cell.width);
    let x1 = ((col + text.len() - 1) as f64 + 0.5) * f64::from(cell.width);
    ((x0, y), (x1, y))
}

/// Selects `text` on screen with the mouse.
async fn select(browser: &mut Browser, lines: &[String], text: &str) {
    let ((x0, y0), (x1, y1)) = locate(lines, text);
    browser.mouse("move", x0, y0).await.unwrap();
    browser.mouse("down", x0, y0).await.unwrap();
    browser.mouse("move", x1, y1).await.unwrap();
    browser.mouse("up", x1, y1).await.unwrap();
}

#[tokio::test]
async fn selected_text_reaches_the_browser_clipboard_and_pastes_come_back() {
    let fixture = Fixture::start();
    let helper = fixture.web(&[], &[]);
    let mut browser = Browser::start().unwrap();
    open_session(&mut browser, &helper.field("url"), true).await;
    wait_prompt(&mut browser).await;
    browser.set_clipboard("nothing yet").await.unwrap();
    let lines = run(&mut browser, "echo zt-copy-$((40+2))", "zt-copy-42").await;
    select(&mut browser, &lines, "zt-copy-42").await;
    let deadline = Instant::now() + STEP;
    loop {
        let text = browser.clipboard().await.unwrap();
        if text == "zt-copy-42" {
            break;
        }
        assert!(Instant::now() < deadline, "the clipboard holds {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    browser
        .set_clipboard("echo zt-pasted-$((2+3))")
        .await
        .unwrap();
    browser.press("Control+Shift+V").await.unwrap();
    browser.press("Enter").await.unwrap();
    wait_screen(&mut browser, "the pasted command's output", STEP, |lines| {
        lines.iter().any(|l| l.trim_end() == "zt-pasted-5")
    })
    .await;
    browser.close().await;
}

#[tokio::test]
async fn disable_copy_and_disable_paste_hold_in_the_browser() {
    let fixture = Fixture::start();
    let helper = fixture.web(&[("disable-copy", "true"), ("disable-paste", "true")], &[]);
    let mut browser = Browser::start().unwrap();
    open_session(&mut browser, &helper.field("url"), true).await;
    wait_prompt(&mut browser).await;
    browser
        .set_clipboard("echo zt-pasted-$((2+3))")
        .await
        .unwrap();
    let lines = run(&mut browser, "echo zt-copy-$((40+2))", "zt-copy-42").await;
    select(&mut browser, &lines, "zt-copy-42").await;
    browser.press("Control+Shift+V").await.unwrap();
    browser.press("Enter").await.unwrap();
    // A later command's output shows after anything the selection or the paste could have
    // caused (one ordered channel each way).
    let lines = run(&mut browser, "echo zt-after-$((1+1))", "zt-after-2").await;
    assert!(
        !lines.iter().any(|l| l.contains("zt-pasted-5")),
        "the paste reached the target:\n{}",
        lines.join("\n")
    );
    assert_eq!(
        browser.clipboard().await.unwrap(),
        "echo zt-pasted-$((2+3))",
        "the selection reached the clipboard"
    );
    browser.close().await;
}

#[tokio::test]
async fn revocation_shows_the_ended_state_with_its_reason_within_a_second() {
    let fixture = Fixture::start();
    let helper = fixture.web(&[], &[]);
    let mut browser = Browser::start().unwrap();
    open_session(&mut browser, &helper.field("url"), false).await;
    wait_prompt(&mut browser).await;
    let api = fixture.proxy.api();
    let sessions = api.list_sessions().await.unwrap();
    assert_eq!(sessions.len(), 1, "one session for the page");
    let id = sessions[0].id.clone();
    let started = Instant::now();
    let revoke = tokio::spawn(async move { api.delete_session(&id).await });
    let (_, text) = browser
        .wait_state("ended", Duration::from_secs(1))
        .await
        .expect("the page shows the ended state within a second");
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "the page took {elapsed:?}"
    );
    assert!(
        text.contains("ended by the administrator"),
        "the page says {text:?}"
    );
    revoke.await.unwrap().unwrap();
    browser.close().await;
}

#[tokio::test]
async fn sealed_signalling_works_from_the_page_and_its_absence_is_refused_in_words() {
    let fixture = Fixture::start_sealed();
    let secret = fixture.dir.path().join("traffic-secret");
    std::fs::write(&secret, "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=").unwrap();
    let sealed = fixture.web(
        &[],
        &[
            "--resource-id",
            "res-web",
            "--traffic-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    let mut browser = Browser::start().unwrap();
    open_session(&mut browser, &sealed.field("url"), false).await;
    wait_prompt(&mut browser).await;
    run(&mut browser, "echo zt-$((6*7))", "zt-42").await;

    // Without the keys the daemon refuses the offer, and the page says why.
    let unsealed = fixture.web(&[], &[]);
    browser
        .open(&unsealed.field("url"), WINDOW.0, WINDOW.1, false)
        .await
        .unwrap();
    let (_, text) = browser.wait_state("ended", STEP).await.unwrap();
    assert!(
        text.contains("could not start") && text.contains("seal"),
        "the page says {text:?}"
    );
    browser.close().await;
}

/// A remote browser session in the page: its address bar shows the page and takes a typed
/// URL, which ztproxy's browser then shows (checked in the window's pixels).
#[tokio::test]
async fn the_remote_browsers_address_bar_takes_a_typed_url() {
    use zt_tests::web_site::{WebSite, colour};
    let site = WebSite::start().unwrap();
    let proxy = zt_tests::proc::ZtProxy::start(
        zt_tests::ztproxy_bin!(),
        &zt_tests::proc::ProxyOptions::default(),
    )
    .expect("ztproxy starts");
    let dir = tempfile::tempdir().unwrap();
    let parameters = dir.path().join("parameters.json");
    std::fs::write(
        &parameters,
        serde_json::json!({
            "url": site.url("/"),
            "allowed-url-patterns": format!("http://127.0.0.1:{}/*", site.port),
            "allow-url-manipulation": "true",
        })
        .to_string(),
    )
    .unwrap();
    let api = proxy.api_arg();
    let target = format!("127.0.0.1:{}", site.port);
    let helper = zt_tests::proc::Helper::start(
        zt_tests::ztproxy_bin!(),
        &[
            "connect",
            "web",
            "--api",
            &api,
            "--target",
            &target,
            "--protocol",
            "http",
            "--parameters-file",
            parameters.to_str().unwrap(),
        ],
    )
    .expect("the client command starts");
    let mut browser = Browser::start().unwrap();
    open_session(&mut browser, &helper.field("url"), false).await;
    // The page's top-left corner, below the 34-pixel address bar.
    let until = async |browser: &mut Browser, rgb: [u8; 3], what: &str| {
        let deadline = Instant::now() + STEP;
        loop {
            let shot = browser.screenshot().await.unwrap();
            if shot.pixel(10, 44)[..3] == rgb {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the window never showed {what}: {:?}\n{}",
                shot.pixel(10, 44),
                browser.console().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    until(&mut browser, colour::HOME, "the start page").await;
    browser.mouse("click", 400.0, 17.0).await.unwrap();
    browser.press("Control+A").await.unwrap();
    browser.type_text(&site.url("/form")).await.unwrap();
    browser.press("Enter").await.unwrap();
    until(&mut browser, colour::FORM, "the typed page").await;
    assert!(site.log().iter().any(|h| h.path == "/form"));
    browser.close().await;
}

#[tokio::test]
async fn a_viewer_page_shows_the_owners_terminal_marked_read_only() {
    let fixture = Fixture::start();
    let helper = fixture.web(&[], &[]);
    let mut owner = Browser::start().unwrap();
    open_session(&mut owner, &helper.field("url"), false).await;
    wait_prompt(&mut owner).await;
    run(&mut owner, "echo owner-$((6*7))", "owner-42").await;

    // The gateway's view: the owner's session, joined by a viewer page.
    let api = fixture.proxy.api();
    let sessions = api.list_sessions().await.unwrap();
    assert_eq!(sessions.len(), 1);
    let api_arg = fixture.proxy.api_arg();
    let view = zt_tests::proc::Helper::start(
        zt_tests::ztproxy_bin!(),
        &[
            "connect",
            "view",
            "--api",
            &api_arg,
            "--session",
            &sessions[0].id,
            "--user",
            "bob",
        ],
    )
    .expect("connect view starts");
    let mut viewer = Browser::start().unwrap();
    open_session(&mut viewer, &view.field("url"), false).await;
    wait_screen(&mut viewer, "the owner's terminal", STEP, |lines| {
        lines.iter().any(|l| l.trim_end() == "owner-42")
    })
    .await;
    // The page says it is a read-only view, on screen: a red badge at the top right.
    let badge = viewer
        .call(serde_json::json!({"op": "text", "selector": "#badge"}))
        .await
        .unwrap();
    assert_eq!(badge["text"], "Viewing — read-only");
    let shot = viewer.screenshot().await.unwrap();
    let [r, g, b, _] = shot.pixel(WINDOW.0 - 12, 10);
    assert!(r > 140 && g < 80 && b < 80, "no badge: {:?}", (r, g, b));

    // The viewer's keys never reach the target; the owner's output reaches the viewer.
    viewer.type_text("echo viewer-typed\n").await.unwrap();
    run(&mut owner, "echo owner-again-$((7*7))", "owner-again-49").await;
    let (lines, _) = wait_screen(&mut viewer, "the owner's new output", STEP, |lines| {
        lines.iter().any(|l| l.trim_end() == "owner-again-49")
    })
    .await;
    assert!(
        !lines.iter().any(|l| l.contains("viewer-typed")),
        "{}",
        lines.join("\n")
    );
    let (owner_lines, _) = wait_screen(&mut owner, "the owner's screen", STEP, |_| true).await;
    assert!(!owner_lines.iter().any(|l| l.contains("viewer-typed")));
    viewer.close().await;
    owner.close().await;
}
