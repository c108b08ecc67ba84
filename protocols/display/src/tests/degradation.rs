//! When the model loses track of what the client shows, it says so — and recovers when it can.

use super::support::*;
use crate::{Display, DisplayError, DisplayLimits, Unsupported};

fn display() -> Display {
    let mut d = Display::new(DisplayLimits::default());
    feed(&mut d, &[num("size", &[0, 8, 8]), num("size", &[-1, 4, 4])]);
    d
}

#[test]
fn an_undecodable_image_degrades_its_layer_until_overwritten() {
    let mut d = display();
    let mut bytes = png(4, 4, |_, _| [1, 2, 3, 255]);
    bytes.truncate(bytes.len() - 20);
    let errors = feed_all(&mut d, &image(0, 0xE, -1, "image/png", (0, 0), &bytes));
    assert_eq!(errors, vec![DisplayError::BadImage]);
    assert!(d.is_degraded());
    assert!(!d.snapshot().is_complete());
    // Copying from it spreads the doubt.
    feed(&mut d, &[num("copy", &[-1, 0, 0, 2, 2, 0xE, 0, 0, 0])]);
    assert!(d.layers[&0].tainted);
    // An opaque fill of all of layer 0 and the disposal of the buffer clear it.
    feed(
        &mut d,
        &[
            num("rect", &[0, 0, 0, 8, 8]),
            num("cfill", &[0xE, 0, 0, 0, 0, 255]),
        ],
    );
    assert!(!d.layers[&0].tainted);
    feed(&mut d, &[num("dispose", &[-1])]);
    assert!(!d.is_degraded());
    assert_replays(&d);
}

#[test]
fn resizing_to_nothing_clears_degradation() {
    let mut d = display();
    let errors = feed_all(
        &mut d,
        &[
            text("img", &["0", "14", "-1", "image/gif", "0", "0"]),
            num("end", &[0]),
        ],
    );
    assert_eq!(errors, vec![DisplayError::UnsupportedImageType]);
    assert!(d.is_degraded());
    feed(&mut d, &[num("size", &[-1, 0, 0])]);
    assert!(!d.is_degraded());
}

#[test]
fn bad_base64_degrades_the_layer() {
    let mut d = display();
    let errors = feed_all(
        &mut d,
        &[
            text("img", &["0", "14", "0", "image/png", "0", "0"]),
            text("blob", &["0", "not*base64"]),
            num("end", &[0]),
        ],
    );
    assert_eq!(errors, vec![DisplayError::BadBase64]);
    assert!(d.layers[&0].tainted);
    assert!(d.key_frame_ready(), "the stream is closed");
}

#[test]
fn drawing_over_a_streaming_image_is_ambiguous() {
    let mut d = display();
    let bytes = png(4, 4, |_, _| [9, 9, 9, 255]);
    let img = image(0, 0xE, 0, "image/png", (2, 2), &bytes);
    // A fill overlapping the image between its img and its end: Chromium draws the image
    // first, Firefox last.
    let mut stream = img[..img.len() - 1].to_vec();
    stream.push(num("rect", &[0, 3, 3, 1, 1]));
    stream.push(num("cfill", &[0xE, 0, 1, 1, 1, 255]));
    stream.push(img[img.len() - 1].clone());
    let errors = feed_all(&mut d, &stream);
    assert_eq!(
        errors,
        vec![DisplayError::Unsupported(Unsupported::AmbiguousImageOrder)]
    );
    assert!(d.layers[&0].tainted);
}

#[test]
fn drawing_elsewhere_while_an_image_streams_is_fine() {
    let mut d = display();
    let bytes = png(4, 4, |_, _| [9, 9, 9, 255]);
    let img = image(0, 0xE, 0, "image/png", (4, 4), &bytes);
    let mut stream = img[..img.len() - 1].to_vec();
    stream.push(num("rect", &[0, 0, 0, 4, 4]));
    stream.push(num("cfill", &[0xE, 0, 1, 1, 1, 255]));
    stream.push(num("copy", &[0, 0, 0, 2, 2, 0xE, -1, 0, 0]));
    stream.push(img[img.len() - 1].clone());
    feed(&mut d, &stream);
    assert!(!d.is_degraded());
    // But a different channel mask set on the layer meanwhile is not: the mask applies at end.
    let mut stream = img[..img.len() - 1].to_vec();
    stream.push(num("rect", &[0, 0, 0, 1, 1]));
    stream.push(num("cfill", &[0x2, 0, 0, 0, 0, 255]));
    stream.push(img[img.len() - 1].clone());
    let errors = feed_all(&mut d, &stream);
    assert_eq!(
        errors,
        vec![DisplayError::Unsupported(Unsupported::AmbiguousImageOrder)]
    );
}

#[test]
fn an_image_stream_replaced_before_its_end_degrades_the_display() {
    let mut d = display();
    let errors = feed_all(
        &mut d,
        &[
            text("img", &["0", "14", "0", "image/png", "0", "0"]),
            text("audio", &["0", "audio/L16"]),
        ],
    );
    assert_eq!(
        errors,
        vec![DisplayError::Unsupported(Unsupported::AbandonedImageStream)]
    );
    assert!(d.is_degraded());
    assert!(d.key_frame_ready(), "the image stream is gone");
}

#[test]
fn an_image_for_a_disposed_layer_is_dropped() {
    let mut d = display();
    let bytes = png(2, 2, |_, _| [9, 9, 9, 255]);
    let img = image(0, 0xE, -1, "image/png", (0, 0), &bytes);
    let mut stream = img[..img.len() - 1].to_vec();
    stream.push(num("dispose", &[-1]));
    stream.push(num("size", &[-1, 2, 2]));
    stream.push(img[img.len() - 1].clone());
    feed(&mut d, &stream);
    assert_eq!(pixel(&d, -1, 0, 0), [0; 4]);
    assert!(!d.is_degraded());
}

#[test]
fn malformed_drawing_instructions_degrade_for_good() {
    let mut d = display();
    assert!(matches!(
        d.handle(&text("copy", &["0", "x"])),
        Err(DisplayError::BadArgument {
            opcode: "copy",
            index: 1,
            ..
        })
    ));
    assert!(d.is_degraded());
    // Non-drawing ones do not.
    let mut d = display();
    assert!(d.handle(&text("sync", &["soon"])).is_err());
    assert!(d.handle(&text("blob", &["x", "AAAA"])).is_err());
    assert!(d.handle(&text("audio", &["x", "audio/L16"])).is_err());
    assert!(!d.is_degraded());
}

#[test]
fn unsupported_operations_degrade() {
    for instruction in [
        text("nest", &["0", "4.sync,1.1;"]),
        num("lstroke", &[0xE, 0, 0, 0, 1, -1]),
        num("copy", &[0, 0, 0, -1, 1, 0xE, 0, 0, 0]),
        num("cursor", &[0, 0, -1, 0, 0, 1, -1]),
        num("arc", &[0, 1, 1, -1, 0, 1, 0]),
        num("lfill", &[0xE, 0, -5]),
        num("transfer", &[0, 0, 0, 1, 1, 99, 0, 0, 0]),
    ] {
        let mut d = display();
        assert!(
            matches!(d.handle(&instruction), Err(DisplayError::Unsupported(_))),
            "{instruction:?}"
        );
        assert!(d.is_degraded(), "{instruction:?}");
    }
}

#[test]
fn images_under_a_transform_degrade_the_layer() {
    let mut d = display();
    feed(
        &mut d,
        &[text("transform", &["0", "2", "0", "0", "2", "0", "0"])],
    );
    let errors = feed_all(
        &mut d,
        &image(
            0,
            0xE,
            0,
            "image/png",
            (0, 0),
            &png(1, 1, |_, _| [1, 1, 1, 255]),
        ),
    );
    assert_eq!(
        errors,
        vec![DisplayError::Unsupported(Unsupported::TransformedImage)]
    );
    assert!(d.is_degraded());
}

/// Regression: a `blob` whose stream index the model does not accept (clients read it with
/// `parseInt`, which takes `+0` or `0 ` as 0) was ignored without degrading, though the
/// client may have appended it to the image being streamed.
#[test]
fn a_malformed_blob_during_an_image_stream_degrades() {
    let mut d = display();
    let errors = feed_all(
        &mut d,
        &[
            text("img", &["0", "14", "0", "image/png", "0", "0"]),
            text("blob", &["+0", "AAAA"]),
        ],
    );
    assert!(
        matches!(
            errors.as_slice(),
            [DisplayError::BadArgument {
                opcode: "blob",
                index: 0,
                ..
            }]
        ),
        "{errors:?}"
    );
    assert!(d.is_degraded());
    // With no image streaming, no blob can change the display.
    let mut d = display();
    let errors = feed_all(
        &mut d,
        &[text("blob", &["+0", "AAAA"]), text("blob", &["1"])],
    );
    assert_eq!(errors.len(), 2);
    assert!(!d.is_degraded());
}
