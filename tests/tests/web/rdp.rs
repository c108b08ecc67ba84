//! An RDP session through guacd in the browser: the guacd double replays what a real guacd
//! 1.6.0 sent from xrdp, and the page must draw it as ztproxy's display model does.

use std::path::Path;
use std::time::Duration;

use zt_guac::{Decoder, Limits, opcode};
use zt_tests::browser::Browser;
use zt_tests::guacd_peer::{DisplayMode, GuacdPeer, PeerConfig};

use crate::{STEP, difference};

/// The display model's picture after each of the stream's first `frames` frames.
fn frames_of(stream: &[u8], frames: usize) -> Vec<zt_display::Screen> {
    let mut decoder = Decoder::new(Limits::default());
    decoder.feed(stream);
    let mut display = zt_display::Display::new(zt_display::DisplayLimits::default());
    let mut screens = Vec::new();
    while let Ok(Some(instruction)) = decoder.poll_instruction() {
        let _ = display.handle(&instruction);
        if instruction.is(opcode::SYNC) && display.size() != (0, 0) {
            screens.push(display.screen());
            if screens.len() == frames {
                break;
            }
        }
    }
    screens
}

#[tokio::test]
async fn an_rdp_session_through_guacd_draws_its_frames_in_the_page() {
    let stream = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/guacd-1.6/rdp-xrdp.guac"),
    )
    .unwrap();
    // Only frames that are pictures, not a blank screen: a match means something was drawn.
    let references: Vec<_> = frames_of(&stream, 60)
        .into_iter()
        .filter(|screen| {
            let colours: std::collections::HashSet<[u8; 4]> =
                screen.pixels().iter().copied().collect();
            colours.len() > 16
        })
        .collect();
    assert!(
        !references.is_empty(),
        "the stream's first frames are blank"
    );
    let (width, height) = (references[0].width(), references[0].height());

    let peer = GuacdPeer::start(PeerConfig {
        display: DisplayMode::Replay {
            stream: stream.clone().into(),
            speed: 1,
        },
        ..PeerConfig::guacd_1_6()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_proxy, helper) = crate::rdp_web(peer.addr(), dir.path());
    let mut browser = Browser::start().unwrap();
    browser
        .open(&helper.field("url"), width, height, false)
        .await
        .unwrap();
    browser.wait_state("connected", STEP).await.unwrap();
    let deadline = tokio::time::Instant::now() + STEP;
    let mut best = 1.0f64;
    loop {
        let shot = browser.screenshot().await.unwrap();
        best = references
            .iter()
            .map(|r| difference(&shot, r))
            .fold(best, f64::min);
        if best < 0.005 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page never showed one of the stream's first frames (closest: {:.1} % of pixels differ)\n{}",
            best * 100.0,
            browser.console().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The credentials went to guacd, never to the page.
    let conn = peer.next_connection(STEP).await.unwrap();
    let record = conn.wait_connect_record(STEP).await.unwrap();
    assert_eq!(
        record.parameters.get("password").map(String::as_str),
        Some("rdp-password-7")
    );
    browser.close().await;
}
