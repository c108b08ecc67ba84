//! Every limit, at N (accepted) and N + 1 (refused, and accounted as degradation).

use super::support::*;
use crate::{Display, DisplayError, Limit};

fn limit(limit: Limit) -> DisplayError {
    DisplayError::LimitExceeded(limit)
}

#[test]
fn layer_width_and_height() {
    let mut d = Display::new(small_limits());
    feed(&mut d, &[num("size", &[0, 100, 80])]);
    assert_eq!(
        d.handle(&num("size", &[0, 101, 1])),
        Err(limit(Limit::LayerSize))
    );
    assert_eq!(
        d.handle(&num("size", &[-1, 1, 81])),
        Err(limit(Limit::LayerSize))
    );
    assert_eq!(size_of(&d, 0), (100, 80));
    assert!(d.is_degraded());
    d.check_invariants();
    // Buffers growing past the limit are refused too.
    let mut d = Display::new(small_limits());
    feed(&mut d, &[num("rect", &[-1, 0, 0, 100, 80])]);
    assert_eq!(
        d.handle(&num("rect", &[-1, 0, 0, 101, 1])),
        Err(limit(Limit::LayerSize))
    );
}

#[test]
fn total_pixels() {
    let mut d = Display::new(small_limits());
    feed(
        &mut d,
        &[
            num("size", &[0, 100, 80]),
            num("size", &[-1, 100, 80]),
            num("size", &[-2, 100, 40]),
        ],
    );
    assert_eq!(d.total_pixels(), 20_000);
    assert_eq!(
        d.handle(&num("size", &[-2, 100, 41])),
        Err(limit(Limit::TotalPixels))
    );
    // A new visible layer would be created at the display's size.
    assert_eq!(
        d.handle(&num("move", &[1, 0, 0, 0, 0])),
        Err(limit(Limit::TotalPixels))
    );
    // The cursor counts too.
    feed(&mut d, &[num("size", &[-2, 100, 39])]);
    feed(&mut d, &[num("cursor", &[0, 0, -2, 0, 0, 10, 10])]);
    assert_eq!(
        d.handle(&num("cursor", &[0, 0, -2, 0, 0, 11, 10])),
        Err(limit(Limit::TotalPixels))
    );
    d.check_invariants();
}

#[test]
fn layer_and_buffer_counts() {
    let mut d = Display::new(small_limits());
    feed(
        &mut d,
        &[
            num("size", &[1, 1, 1]),
            num("size", &[2, 1, 1]),
            num("size", &[3, 1, 1]),
        ],
    );
    assert_eq!(
        d.handle(&num("size", &[4, 1, 1])),
        Err(limit(Limit::Layers))
    );
    feed(
        &mut d,
        &[
            num("size", &[-1, 1, 1]),
            num("size", &[-2, 1, 1]),
            num("size", &[-3, 1, 1]),
        ],
    );
    assert_eq!(
        d.handle(&num("size", &[-4, 1, 1])),
        Err(limit(Limit::Buffers))
    );
    assert_eq!(d.layer_count(), 7);
    assert!(d.is_degraded());
    // Disposing makes room.
    feed(&mut d, &[num("dispose", &[3]), num("size", &[4, 1, 1])]);
    d.check_invariants();
}

#[test]
fn open_image_streams() {
    let mut d = Display::new(small_limits());
    let img = |s: &str| text("img", &[s, "14", "0", "image/png", "0", "0"]);
    feed(&mut d, &[img("0"), img("2")]);
    assert_eq!(d.handle(&img("4")), Err(limit(Limit::ImageStreams)));
    assert!(d.is_degraded());
    d.check_invariants();
}

#[test]
fn bytes_per_image_stream_and_in_total() {
    let mut d = Display::new(small_limits());
    let a1000 = "A".repeat(1000);
    feed(
        &mut d,
        &[
            text("img", &["0", "14", "0", "image/png", "0", "0"]),
            text("blob", &["0", &a1000]),
        ],
    );
    assert_eq!(
        d.handle(&text("blob", &["0", "AAAA"])),
        Err(limit(Limit::ImageStreamBytes))
    );
    d.check_invariants();
    let mut d = Display::new(small_limits());
    let a500 = "A".repeat(500);
    feed(
        &mut d,
        &[
            text("img", &["0", "14", "0", "image/png", "0", "0"]),
            text("img", &["2", "14", "-1", "image/png", "0", "0"]),
            text("blob", &["0", &a1000]),
            text("blob", &["2", &a500]),
        ],
    );
    assert_eq!(
        d.handle(&text("blob", &["2", "AAAA"])),
        Err(limit(Limit::TotalImageStreamBytes))
    );
    assert!(d.layers[&-1].tainted && !d.layers[&0].tainted);
    d.check_invariants();
}

#[test]
fn decoded_image_pixels() {
    let mut d = Display::new(small_limits());
    feed(&mut d, &[num("size", &[0, 100, 80])]);
    let ok = png(50, 40, |_, _| [1, 2, 3, 255]);
    feed(&mut d, &image(0, 0xE, 0, "image/png", (0, 0), &ok));
    let big = png(50, 41, |_, _| [1, 2, 3, 255]);
    assert_eq!(
        feed_all(&mut d, &image(0, 0xE, 0, "image/png", (0, 0), &big)),
        vec![limit(Limit::ImageSize)]
    );
    // Wider than a layer may be, whatever the pixel count.
    let wide = png(101, 1, |_, _| [1, 2, 3, 255]);
    assert_eq!(
        feed_all(&mut d, &image(0, 0xE, 0, "image/png", (0, 0), &wide)),
        vec![limit(Limit::ImageSize)]
    );
    for bytes in [
        jpeg(50, 41, |_, _| [1, 2, 3, 255]),
        webp(50, 41, |_, _| [1, 2, 3, 255]),
    ] {
        let mime = if bytes.starts_with(b"RIFF") {
            "image/webp"
        } else {
            "image/jpeg"
        };
        assert_eq!(
            feed_all(&mut d, &image(0, 0xE, 0, mime, (0, 0), &bytes)),
            vec![limit(Limit::ImageSize)]
        );
    }
}

#[test]
fn path_points() {
    let mut d = Display::new(small_limits());
    for i in 0..4 {
        feed(&mut d, &[num("rect", &[0, i, 0, 1, 1])]); // 4 points each
    }
    assert_eq!(
        d.handle(&num("rect", &[0, 9, 0, 1, 1])),
        Err(limit(Limit::PathPoints))
    );
    assert!(d.is_degraded());
}

#[test]
fn state_stack() {
    let mut d = Display::new(small_limits());
    feed(
        &mut d,
        &[num("push", &[0]), num("push", &[0]), num("push", &[0])],
    );
    assert_eq!(d.handle(&num("push", &[0])), Err(limit(Limit::StateStack)));
    d.check_invariants();
}
