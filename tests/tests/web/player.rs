//! `ztproxy recording play`: recordings play in Chromium, decrypted by ztproxy (the page
//! never holds the key); seeking lands on the screen of that moment.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use zt_api::Secret;
use zt_api::control::{
    Conversation, CreateSessionRequest, LimitsRequest, RecordingRequest, Route, Target, Transport,
};
use zt_guac::{Decoder, Limits, opcode};
use zt_proxy::client::session::ClientSession;
use zt_recorder::reader::EventRange;
use zt_recorder::{Event, RecordingReader, ResourceSecret, Unlock};
use zt_tests::browser::Browser;
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::guacd_peer::{DisplayMode, GuacdPeer, PeerConfig};
use zt_tests::proc::{Helper, ProxyOptions, ZtProxy};
use zt_tests::ztproxy_bin;

use crate::{
    FONT_SIZE, Fixture, RESOURCE_SECRET, STEP, difference, open_session, run, wait_prompt,
};

/// Height of the player's control bar, in CSS pixels.
const CONTROLS: u32 = 44;

/// A key frame of a recording: where the player's timeline puts it, and what it shows.
struct KeyFrame {
    at: u64,
    screen: zt_display::Screen,
}

/// The key frames of a graphical recording, found by reading it directly: each shows the
/// display as of the last `sync` before it, and the player's timeline counts from the first.
fn key_frames(path: &Path) -> (Vec<KeyFrame>, zt_display::Screen) {
    let mut reader = RecordingReader::open_path(path).unwrap();
    let secret = ResourceSecret::from_base64(RESOURCE_SECRET).unwrap();
    reader.unlock(Unlock::ResourceSecret(&secret)).unwrap();
    let mut decoder = Decoder::new(Limits::default());
    let mut live = zt_display::Display::new(zt_display::DisplayLimits::default());
    let mut first_screen = None;
    let (mut first, mut latest) = (None, None);
    let mut frames = Vec::new();
    for event in reader.events(EventRange::all()).unwrap() {
        match event.unwrap().event {
            Event::Instructions(bytes) => {
                decoder.feed(&bytes);
                while let Ok(Some(instruction)) = decoder.poll_instruction() {
                    let _ = live.handle(&instruction);
                    if instruction.is(opcode::SYNC) {
                        let at: u64 = instruction.arg(0).unwrap().parse().unwrap();
                        first.get_or_insert(at);
                        latest = Some(at);
                        if first_screen.is_none() && live.size() != (0, 0) {
                            first_screen = Some(live.screen());
                        }
                    }
                }
            }
            Event::KeyFrame(bytes) => {
                let mut display = zt_display::Display::new(zt_display::DisplayLimits::default());
                let mut decoder = Decoder::new(Limits::default());
                decoder.feed(&bytes);
                while let Ok(Some(instruction)) = decoder.poll_instruction() {
                    let _ = display.handle(&instruction);
                }
                frames.push(KeyFrame {
                    at: latest.unwrap() - first.unwrap(),
                    screen: display.screen(),
                });
            }
            _ => {}
        }
    }
    (frames, first_screen.expect("a first frame"))
}

fn screens_differ(a: &zt_display::Screen, b: &zt_display::Screen) -> f64 {
    let differ = a
        .pixels()
        .iter()
        .zip(b.pixels())
        .filter(|(p, q)| (0..3).any(|c| p[c].abs_diff(q[c]) > 8))
        .count();
    differ as f64 / a.pixels().len() as f64
}

/// Starts `recording play` on `file` and opens it in a window fitting `width` × `height`.
async fn play(file: &Path, secret: &Path, width: u32, height: u32) -> (Helper, Browser) {
    let helper = Helper::start(
        ztproxy_bin!(),
        &[
            "recording",
            "play",
            file.to_str().unwrap(),
            "--secret-file",
            secret.to_str().unwrap(),
        ],
    )
    .expect("recording play starts");
    let mut browser = Browser::start().unwrap();
    browser
        .open(&helper.field("url"), width, height + CONTROLS, false)
        .await
        .unwrap();
    if let Err(error) = browser.wait_state("ready", STEP).await {
        panic!("{error:#}\n{}", browser.console().await);
    }
    (helper, browser)
}

async fn seek(browser: &mut Browser, at: u64) {
    browser
        .call(json!({"op": "seek", "value": at}))
        .await
        .unwrap();
    browser
        .call(json!({"op": "wait_attr", "name": "seeked", "value": at.to_string()}))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeking_a_graphical_recording_shows_the_key_frame_of_that_moment() {
    // A session long enough for key frames (one per 5 s of activity), through the guacd
    // double drawing a new frame every 100 ms.
    let peer = GuacdPeer::start(PeerConfig {
        display: DisplayMode::Frames {
            interval: Duration::from_millis(100),
        },
        ..PeerConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            extra_toml: format!(
                "[guacd]\naddress = \"{}\"\n\n[recordings]\ndirectory = \"{}\"\n",
                peer.addr(),
                dir.path().join("rec").display()
            ),
            ..ProxyOptions::default()
        },
    )
    .unwrap();
    let api = proxy.api();
    let request = CreateSessionRequest {
        transport: Transport::Quic,
        conversation: Conversation::Connection,
        protocol: Some("rdp".into()),
        target: Target {
            host: "10.0.0.5".into(),
            port: 3389,
        },
        offer: None,
        sealed_offer: None,
        signalling: None,
        parameters: Default::default(),
        limits: LimitsRequest::default(),
        route: Some(Route::Guacd),
        recording: Some(RecordingRequest {
            graphical: true,
            typescript: false,
            resource_secret: Some(Secret::new(RESOURCE_SECRET.into())),
            recipients: Vec::new(),
            fail_closed: None,
        }),
        resource_id: Some("res-play".into()),
        user: Some("alice".into()),
    };
    let options = zt_tests::client::client_options(Transport::Quic, ([127, 0, 0, 1], 3389).into());
    let (session, id): (ClientSession, String) =
        ClientSession::connect_with(&api, request, &options)
            .await
            .unwrap();
    let mut client = GuacClient::connect(
        &session,
        &Handshake {
            size: (640, 400, 96),
            ..Handshake::default()
        },
    )
    .await
    .unwrap();
    let until = tokio::time::Instant::now() + Duration::from_millis(11_500);
    while tokio::time::Instant::now() < until {
        let _ = client.next(Duration::from_millis(500)).await;
    }
    api.delete_session(&id).await.unwrap();
    let file = std::fs::read_dir(dir.path().join("rec"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "zrec") || p.is_file())
        .expect("a recording");
    let (frames, first_screen) = key_frames(&file);
    assert!(frames.len() >= 2, "{} key frames", frames.len());
    let middle = &frames[frames.len() / 2];
    assert!(middle.at > 0);
    assert!(
        screens_differ(&middle.screen, &first_screen) > 0.01,
        "the key frame looks like the first frame: the test could not tell them apart"
    );
    let secret = dir.path().join("secret");
    std::fs::write(&secret, RESOURCE_SECRET).unwrap();
    let (width, height) = (middle.screen.width(), middle.screen.height());
    let (_helper, mut browser) = play(&file, &secret, width, height).await;
    seek(&mut browser, middle.at).await;
    let shot = browser.screenshot().await.unwrap();
    let off = difference(&shot, &middle.screen);
    assert!(
        off < 0.005,
        "after seeking to {} ms the player shows something else ({:.1} % of pixels differ)",
        middle.at,
        off * 100.0
    );
    // And back to the start: the first frame.
    seek(&mut browser, 0).await;
    let shot = browser.screenshot().await.unwrap();
    assert!(
        difference(&shot, &first_screen) < 0.005,
        "seeking back to the start"
    );
    browser.close().await;
}

#[tokio::test]
async fn a_text_recording_plays_rendered_by_the_terminal() {
    let fixture = Fixture::start();
    let secret = fixture.dir.path().join("recording-secret");
    let helper = fixture.web(
        &[],
        &[
            "--record",
            "typescript",
            "--recording-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    let mut browser = Browser::start().unwrap();
    open_session(&mut browser, &helper.field("url"), false).await;
    wait_prompt(&mut browser).await;
    run(&mut browser, "echo zt-$((6*7))", "zt-42").await;
    let api = fixture.proxy.api();
    let id = api.list_sessions().await.unwrap()[0].id.clone();
    api.delete_session(&id).await.unwrap();
    browser.close().await;
    let file = fixture
        .recordings()
        .into_iter()
        .next()
        .expect("a typescript");
    if let Some(keep) = std::env::var_os("ZT_KEEP_RECORDING") {
        std::fs::copy(&file, keep).unwrap();
    }

    let (_player, mut browser) = play(&file, &secret, 800, 480).await;
    let duration = browser
        .call(json!({"op": "fetch", "path": "info"}))
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(duration["body"].as_str().unwrap()).unwrap();
    assert_eq!(info["kind"], "typescript");
    seek(&mut browser, info["duration"].as_u64().unwrap()).await;
    let lines = browser.screenshot().await.unwrap().lines(FONT_SIZE);
    assert!(
        lines.iter().any(|l| l.trim_end() == "zt-42"),
        "the player shows:\n{}",
        lines.join("\n")
    );
    browser.close().await;
}
