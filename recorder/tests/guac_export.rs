//! Guacamole exports of what real guacd 1.6.0 sent (`tests/fixtures/guacd-1.6/`), recorded as
//! the proxy records them (the client's messages, key frames at the recorder's cadence):
//! every export begins with layer 0's size, replays to the screen the client had, and is the
//! client's stream itself wherever guacd sized the display first.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers, like the tests themselves, fail by panicking"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use zt_display::{Display, DisplayLimits, Screen};
use zt_guac::{Decoder, Instruction, Limits};
use zt_recorder::export::{
    ExportSummary, GuacStart, MAX_GUAC_HEAD, draws_before_size, export_guac,
};
use zt_recorder::format::KEYFRAME_INTERVAL;
use zt_recorder::{Event, EventRange, RecordingKind};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/guacd-1.6");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(name)).unwrap()
}

fn decode(bytes: &[u8]) -> Vec<Instruction> {
    let mut decoder = Decoder::new(Limits::default());
    decoder.feed(bytes);
    let mut out = Vec::new();
    while let Some(instruction) = decoder.poll_instruction().unwrap() {
        out.push(instruction);
    }
    assert!(decoder.is_at_boundary());
    out
}

/// What the user sees after `instructions`.
fn screen(instructions: &[Instruction]) -> Screen {
    let mut display = Display::new(DisplayLimits::default().for_key_frame_replay());
    for instruction in instructions {
        let _ = display.handle(instruction);
    }
    assert!(!display.is_degraded() && display.key_frame_ready());
    display.screen()
}

/// The screen at the end of a session shows a desktop, not nothing.
fn assert_drawn(screen: &Screen) {
    let drawn = screen.pixels().iter().filter(|p| p[3] == 255).count();
    let all = screen.pixels().len();
    assert!(
        drawn > all / 4,
        "the screen is mostly blank: {drawn} of {all} drawn"
    );
}

/// Records `stream` as the proxy does: one event per frame (up to and including its `sync`),
/// at the time of its `sync` since the first one, and a key frame after every `sync` once
/// [`KEYFRAME_INTERVAL`] has passed since the previous one (or the start).
fn record(path: &Path, stream: &[u8]) -> usize {
    let instructions = decode(stream);
    let mut display = Display::new(DisplayLimits::default());
    let mut events = Vec::new();
    let mut frame = Vec::new();
    let (mut first, mut at, mut last_key_frame) = (None, Duration::ZERO, Duration::ZERO);
    let mut key_frames = 0;
    for instruction in &instructions {
        frame.extend_from_slice(instruction.raw());
        let _ = display.handle(instruction);
        if !instruction.is("sync") {
            continue;
        }
        let timestamp = display.last_timestamp().unwrap();
        let start = *first.get_or_insert(timestamp);
        at = Duration::from_millis(timestamp - start);
        events.push((at, Event::Instructions(std::mem::take(&mut frame).into())));
        if at >= last_key_frame + KEYFRAME_INTERVAL
            && display.size() != (0, 0)
            && display.key_frame_ready()
            && !display.is_degraded()
        {
            events.push((at, Event::KeyFrame(display.snapshot().encode().into())));
            last_key_frame = at;
            key_frames += 1;
        }
    }
    if !frame.is_empty() {
        events.push((at, Event::Instructions(frame.into())));
    }
    let mut config = config(RecordingKind::Graphical);
    config.size = zt_recorder::Size {
        width: 1024,
        height: 768,
    };
    write(path, config, &events);
    key_frames
}

fn export(path: &Path, from: Option<Duration>) -> (Vec<u8>, ExportSummary) {
    let mut reader = open_unlocked(path);
    let mut events = reader.events(EventRange { from, to: None }).unwrap();
    let mut out = Vec::new();
    let summary = export_guac(&mut events, &mut out).unwrap();
    (out, summary)
}

/// The instructions of a stream that the key frame ending in its first `sync` stands in for
/// (its `sync` included), and the rest.
fn split_after_first_sync(instructions: &[Instruction]) -> (&[Instruction], &[Instruction]) {
    let sync = instructions.iter().position(|i| i.is("sync")).unwrap();
    instructions.split_at(sync + 1)
}

#[test]
fn an_rdp_export_begins_with_the_screen_its_first_frames_built() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rdp.ztrec");
    let stream = fixture("rdp-xrdp.guac");
    // The stream as guacd 1.6 sent it: the pointer first, layer 0 sized later.
    assert_eq!(draws_before_size(&stream).as_deref(), Some("cursor"));
    let key_frames = record(&path, &stream);
    assert_eq!(key_frames, 1, "one key frame due in 9 s");

    let (exported, summary) = export(&path, None);
    assert_eq!(draws_before_size(&exported), None);
    let received = decode(&stream);
    let (exported, replaced) = (decode(&exported), summary.guac_start);
    // The first two frames (pointer and mouse, then the desktop) became one key frame; the
    // rest is exactly what the client received.
    let Some(GuacStart::KeyFrame { instructions }) = replaced else {
        panic!("{replaced:?}");
    };
    let (head, rest) = received.split_at(instructions as usize);
    assert!(head.last().unwrap().is("sync"));
    let (key_frame, tail) = split_after_first_sync(&exported);
    assert!(key_frame[0].is("size") && key_frame[0].arg(0) == Some("0"));
    assert_eq!(key_frame[0].arg(1), Some("1024"));
    let raw = |all: &[Instruction]| all.iter().map(|i| i.raw().clone()).collect::<Vec<_>>();
    assert_eq!(raw(tail), raw(rest));
    // The key frame shows what the client's screen showed at that sync, and the whole
    // export what the whole stream did.
    assert!(screen(key_frame) == screen(head));
    assert_drawn(&screen(&received));
    assert!(screen(&exported) == screen(&received));
}

#[test]
fn vnc_and_ssh_exports_are_the_stream_as_received() {
    for name in ["vnc-tigervnc.guac", "ssh-openssh.guac"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.ztrec");
        let stream = fixture(name);
        assert!(record(&path, &stream) >= 1, "{name}: no key frame");
        let (exported, summary) = export(&path, None);
        assert_eq!(summary.guac_start, Some(GuacStart::AsRecorded), "{name}");
        assert_eq!(draws_before_size(&exported), None, "{name}");
        assert!(
            exported == stream,
            "{name}: the export differs from the stream"
        );
    }
}

#[test]
fn a_range_export_starts_at_a_key_frame_sized_first() {
    for name in ["rdp-xrdp.guac", "vnc-tigervnc.guac", "ssh-openssh.guac"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.ztrec");
        let stream = fixture(name);
        record(&path, &stream);
        let (whole, _) = export(&path, None);
        let (tail, summary) = export(&path, Some(Duration::from_secs(6)));
        assert_eq!(summary.guac_start, Some(GuacStart::AsRecorded), "{name}");
        assert_eq!(draws_before_size(&tail), None, "{name}");
        let (tail, whole) = (decode(&tail), decode(&whole));
        // The key frame, then the rest of the stream from where it was taken: the same
        // screen at the end as the whole export.
        let (key_frame, after) = split_after_first_sync(&tail);
        let at = whole.len() - after.len();
        assert!(
            at > split_after_first_sync(&whole).0.len(),
            "{name}: the range starts where the whole export does"
        );
        assert!(
            whole[at..]
                .iter()
                .zip(after)
                .all(|(w, t)| w.raw() == t.raw()),
            "{name}"
        );
        assert!(screen(key_frame) == screen(&whole[..at]), "{name}");
        assert_drawn(&screen(&whole));
        assert!(screen(&tail) == screen(&whole), "{name}");
    }
}

#[test]
fn a_stream_the_model_cannot_redraw_gets_a_size_in_front() {
    let dir = tempfile::tempdir().unwrap();
    // The pointer and mouse before any size, then a session that ends before layer 0 is
    // ever sized: nothing can stand in for it, so the size is the client's display size.
    let path = dir.path().join("short.ztrec");
    let head = "6.cursor,1.0,1.0,2.-2,1.0,1.0,2.64,2.64;5.mouse,1.0,1.0,1.0,2.10;4.sync,2.10;";
    let mut config = config(RecordingKind::Graphical);
    config.size = zt_recorder::Size {
        width: 800,
        height: 600,
    };
    write(
        &path,
        config,
        &[(ms(0), Event::Instructions(head.as_bytes().to_vec().into()))],
    );
    let (exported, summary) = export(&path, None);
    assert_eq!(summary.guac_start, Some(GuacStart::SizeAdded));
    assert_eq!(
        String::from_utf8(exported).unwrap(),
        format!("4.size,1.0,3.800,3.600;{head}")
    );

    // More than the bound without a `sync`: the export does not wait (or hold) any longer.
    let path = dir.path().join("long.ztrec");
    let mut events = vec![(ms(0), Event::Instructions(head.as_bytes().to_vec().into()))];
    let noise = "4.rect,1.0,1.0,1.0,1.1,1.1;".repeat(64 * 1024);
    for i in 0..(MAX_GUAC_HEAD / noise.len() + 2) {
        events.push((ms(i as u64), Event::Instructions(noise.clone().into())));
    }
    events.push((ms(999), Event::Instructions("4.size,1.0,1.8,1.8;".into())));
    write(&path, config_graphical(), &events);
    let (exported, summary) = export(&path, None);
    assert_eq!(summary.guac_start, Some(GuacStart::SizeAdded));
    assert!(exported.starts_with(b"4.size,1.0,4.1024,3.768;6.cursor,"));
    assert!(exported.ends_with(b"4.size,1.0,1.8,1.8;"));
}

fn config_graphical() -> zt_recorder::WriterConfig {
    let mut config = config(RecordingKind::Graphical);
    config.size = zt_recorder::Size {
        width: 1024,
        height: 768,
    };
    config
}
