//! What a real guacd 1.6.0 sent to its client (`tests/fixtures/guacd-1.6/`, recorded through
//! ztproxy against xrdp, TigerVNC and OpenSSH): the model follows every stream without
//! degrading, a key frame can be taken at the recorder's cadence, and the last key frame is
//! the screen the whole stream builds.
//!
//! guacd 1.6 streams two images into the default layer at once (its `guac_display` encodes
//! in parallel) and interleaves their `blob`s; the RDP stream also starts with `cursor` and
//! `mouse` before any `size`.

use zt_guac::Instruction;

use super::support::*;
use crate::{DeferredDisplay, Display, DisplayLimits};

pub(crate) const RDP: &[u8] = include_bytes!("../../../../tests/fixtures/guacd-1.6/rdp-xrdp.guac");
pub(crate) const VNC: &[u8] =
    include_bytes!("../../../../tests/fixtures/guacd-1.6/vnc-tigervnc.guac");
pub(crate) const SSH: &[u8] =
    include_bytes!("../../../../tests/fixtures/guacd-1.6/ssh-openssh.guac");

/// The recorder's key-frame cadence (`zt_recorder::format::KEYFRAME_INTERVAL`), here on the
/// clock of the stream's `sync` timestamps (milliseconds).
const CADENCE_MS: u64 = 5_000;

/// Feeds `stream` to an eager display and to a deferred one (as the proxy's recording does),
/// taking a key frame at every `sync` at least [`CADENCE_MS`] after the previous one (or the
/// first `sync`); returns the displays and the timestamps of the key frames taken.
fn follow(stream: &[u8]) -> (Display, DeferredDisplay, Vec<u64>) {
    let instructions = decode(stream);
    let mut eager = Display::new(DisplayLimits::default());
    let mut deferred = DeferredDisplay::new(Display::new(DisplayLimits::default()), 1 << 20);
    let mut start = None;
    let mut last_key_frame = None;
    let mut key_frames = Vec::new();
    for instruction in &instructions {
        let result = eager.handle(instruction);
        assert!(result.is_ok(), "{instruction:?}: {result:?}");
        deferred.handle(instruction);
        assert!(!eager.is_degraded(), "degraded at {instruction:?}");
        if !instruction.is("sync") {
            continue;
        }
        let now = eager.last_timestamp().expect("a sync sets the timestamp");
        let since = last_key_frame
            .or_else(|| *start.get_or_insert(Some(now)))
            .unwrap_or(now);
        if now < since + CADENCE_MS {
            continue;
        }
        // Due: both displays can give one, and it redraws what they hold.
        assert!(eager.key_frame_ready(), "not ready at {now}");
        assert_replays(&eager);
        deferred.flush();
        assert!(!deferred.display().is_degraded());
        assert_eq!(deferred.display().canonical(), eager.canonical());
        key_frames.push(now);
        last_key_frame = Some(now);
    }
    (eager, deferred, key_frames)
}

/// The last key frame, taken at the end of the stream, rebuilds the screen of the whole
/// stream; every pixel of the default layer is what the stream drew there.
fn check_end(mut eager: Display, mut deferred: DeferredDisplay) -> Display {
    let replayed = assert_replays(&eager);
    deferred.flush();
    assert!(!deferred.display().is_degraded());
    assert_eq!(deferred.display().canonical(), eager.canonical());
    assert_eq!(replayed.size(), eager.size());
    // Feeding more to both keeps them equal (nothing hidden in the key frame's state).
    let more: Vec<Instruction> = vec![
        num("copy", &[0, 0, 0, 64, 64, 0xC, 0, 100, 100]),
        num("rect", &[0, 10, 10, 5, 5]),
        num("cfill", &[0xE, 0, 1, 2, 3, 255]),
        num("sync", &[99_999_999]),
    ];
    let mut replayed = replayed;
    feed(&mut eager, &more);
    feed(&mut replayed, &more);
    assert_eq!(replayed.canonical(), eager.canonical());
    eager
}

#[test]
fn rdp_with_interleaved_image_streams_keeps_its_key_frames() {
    let (eager, deferred, key_frames) = follow(RDP);
    // 9.2 s of display: one key frame due at 5 s, the last one at the end.
    assert_eq!(key_frames.len(), 1, "{key_frames:?}");
    let eager = check_end(eager, deferred);
    assert_eq!(eager.size(), (1024, 768));
}

#[test]
fn vnc_keeps_its_key_frames() {
    let (eager, deferred, key_frames) = follow(VNC);
    assert!(!key_frames.is_empty(), "no key frame in {} ms", CADENCE_MS);
    let eager = check_end(eager, deferred);
    assert_eq!(eager.size(), (1024, 768));
}

#[test]
fn ssh_keeps_its_key_frames() {
    let (eager, deferred, key_frames) = follow(SSH);
    assert!(!key_frames.is_empty(), "no key frame in {} ms", CADENCE_MS);
    let eager = check_end(eager, deferred);
    assert_eq!(eager.size(), (1024, 768));
}

/// The pattern itself: two streams on one layer, the second opened while the first is open,
/// ending first, the first then ending over part of it: all clients order them the same way
/// only when the rectangles are disjoint or the first opened also ended first.
#[test]
fn nested_and_disjoint_image_streams_are_unambiguous() {
    let red = png(8, 8, |_, _| [255, 0, 0, 255]);
    let blue = png(8, 8, |_, _| [0, 0, 255, 255]);
    let open = |s: u32, (x, y): (i32, i32)| image(s, 0xE, 0, "image/png", (x, y), &[]);
    let data = |s: u32, bytes: &[u8]| {
        let all = image(s, 0xE, 0, "image/png", (0, 0), bytes);
        all[1..all.len() - 1].to_vec()
    };
    let start = |s: u32, at| open(s, at)[0].clone();
    let end = |s: u32| num("end", &[s.into()]);

    // Opened 3 then 5, overlapping; 3 ends first: every client draws 3 then 5.
    let mut d = Display::new(DisplayLimits::default());
    feed(&mut d, &[num("size", &[0, 16, 16])]);
    let mut stream = vec![start(3, (0, 0)), start(5, (4, 4))];
    stream.extend(data(3, &red));
    stream.push(end(3));
    stream.extend(data(5, &blue));
    stream.push(end(5));
    feed(&mut d, &stream);
    assert!(!d.is_degraded());
    assert_eq!(pixel(&d, 0, 5, 5), [0, 0, 255, 255]);
    assert_eq!(pixel(&d, 0, 1, 1), [255, 0, 0, 255]);
    assert_replays(&d);

    // Opened 3 then 5, disjoint; 5 ends first (guacd 1.6's interleaving): no doubt either.
    let mut stream = vec![start(3, (0, 0)), start(5, (8, 8))];
    stream.extend(data(5, &red));
    stream.push(end(5));
    stream.extend(data(3, &blue));
    stream.push(end(3));
    feed(&mut d, &stream);
    assert!(!d.is_degraded());
    assert_eq!(pixel(&d, 0, 9, 9), [255, 0, 0, 255]);
    assert_eq!(pixel(&d, 0, 1, 1), [0, 0, 255, 255]);

    // Opened 3 then 5, overlapping, 5 ends first: Chromium draws 3 under 5, Firefox and
    // guacenc 5 under 3.
    let mut stream = vec![start(3, (0, 0)), start(5, (4, 4))];
    stream.extend(data(5, &red));
    stream.push(end(5));
    stream.extend(data(3, &blue));
    stream.push(end(3));
    let errors = feed_all(&mut d, &stream);
    assert_eq!(
        errors,
        vec![crate::DisplayError::Unsupported(
            crate::Unsupported::AmbiguousImageOrder
        )]
    );
    assert_eq!(
        d.degradation(),
        Some(crate::DisplayError::Unsupported(
            crate::Unsupported::AmbiguousImageOrder
        ))
    );
    // Overwritten whole, the layer is trusted again.
    feed(
        &mut d,
        &[
            num("rect", &[0, 0, 0, 16, 16]),
            num("cfill", &[0xC, 0, 0, 0, 0, 255]),
        ],
    );
    assert!(!d.is_degraded());
    assert_eq!(d.degradation(), None);
}
