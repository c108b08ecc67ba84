//! One test (or a few) per opcode, on small hand-made images.

use super::support::*;
use crate::surface::TRANSPARENT;
use crate::{Display, DisplayError, DisplayLimits, Unsupported};

const RED: [u8; 4] = [255, 0, 0, 255];
const GREEN: [u8; 4] = [0, 255, 0, 255];
const BLUE: [u8; 4] = [0, 0, 255, 255];

fn display(w: i64, h: i64) -> Display {
    let mut d = Display::new(DisplayLimits::default());
    feed(&mut d, &[num("size", &[0, w, h])]);
    d
}

fn fill(
    layer: i64,
    mask: i64,
    (x, y, w, h): (i64, i64, i64, i64),
    [r, g, b, a]: [u8; 4],
) -> Vec<zt_guac::Instruction> {
    vec![
        num("rect", &[layer, x, y, w, h]),
        num(
            "cfill",
            &[mask, layer, r.into(), g.into(), b.into(), a.into()],
        ),
    ]
}

#[test]
fn size_creates_resizes_and_keeps_the_overlap() {
    let mut d = display(4, 3);
    assert_eq!(size_of(&d, 0), (4, 3));
    feed(&mut d, &fill(0, 0xC, (0, 0, 4, 3), RED));
    feed(&mut d, &[num("size", &[0, 2, 5])]);
    assert_eq!(size_of(&d, 0), (2, 5));
    assert_eq!(pixel(&d, 0, 1, 2), RED);
    assert_eq!(pixel(&d, 0, 1, 3), TRANSPARENT);
    // A visible layer referenced first is created at the display's size; a buffer at 0 × 0.
    feed(
        &mut d,
        &[
            num("shade", &[3, 128]),
            num("dispose", &[-2]),
            num("rect", &[-1, 0, 0, 0, 0]),
        ],
    );
    assert_eq!(size_of(&d, 3), (2, 5));
    assert_eq!(size_of(&d, -1), (0, 0));
    assert!(!d.layers.contains_key(&-2));
    assert_replays(&d);
}

#[test]
fn size_resets_the_drawing_state_unless_unchanged() {
    let mut d = display(4, 4);
    feed(
        &mut d,
        &[num("rect", &[0, 0, 0, 1, 1]), num("size", &[0, 4, 4])],
    );
    assert!(
        d.layers[&0].path.ops().is_some(),
        "same size: nothing happens"
    );
    feed(
        &mut d,
        &[
            num("size", &[0, 5, 4]),
            num("cfill", &[0xE, 0, 255, 0, 0, 255]),
        ],
    );
    assert_eq!(pixel(&d, 0, 0, 0), TRANSPARENT, "the path was reset");
}

#[test]
fn png_images_draw_with_over_and_src() {
    let mut d = display(4, 2);
    feed(&mut d, &fill(0, 0xC, (0, 0, 4, 2), BLUE));
    // A 2 × 1 image: opaque red, half-transparent white.
    let bytes = png(2, 1, |x, _| if x == 0 { RED } else { [255, 255, 255, 128] });
    feed(&mut d, &image(0, 0xE, 0, "image/png", (1, 0), &bytes));
    assert_eq!(pixel(&d, 0, 0, 0), BLUE);
    assert_eq!(pixel(&d, 0, 1, 0), RED);
    assert_eq!(pixel(&d, 0, 2, 0), [128, 128, 255, 255]);
    // SRC replaces, transparent included — and clears the rest of the layer, as a canvas
    // "copy" does.
    feed(&mut d, &image(0, 0xC, 0, "image/png", (1, 1), &bytes));
    assert_eq!(pixel(&d, 0, 1, 1), RED);
    assert_eq!(pixel(&d, 0, 2, 1), [255, 255, 255, 128]);
    assert_eq!(pixel(&d, 0, 0, 0), TRANSPARENT);
    assert_eq!(pixel(&d, 0, 1, 0), TRANSPARENT);
    assert_eq!(d.approximations(), 0);
    assert_replays(&d);
}

#[test]
fn images_grow_buffers_and_are_clipped_by_layers() {
    let mut d = display(3, 3);
    let bytes = png(4, 4, |x, y| [x as u8 * 60, y as u8 * 60, 0, 255]);
    feed(&mut d, &image(2, 0xE, -1, "image/png", (1, 2), &bytes));
    assert_eq!(size_of(&d, -1), (5, 6));
    assert_eq!(pixel(&d, -1, 4, 5), [180, 180, 0, 255]);
    feed(&mut d, &image(2, 0xE, 0, "image/png", (1, 1), &bytes));
    assert_eq!(size_of(&d, 0), (3, 3));
    assert_eq!(pixel(&d, 0, 2, 2), [60, 60, 0, 255]);
    assert_replays(&d);
}

#[test]
fn jpeg_images_are_decoded_approximately() {
    let mut d = display(16, 16);
    let bytes = jpeg(16, 16, |_, _| [200, 100, 50, 255]);
    feed(&mut d, &image(4, 0xE, 0, "image/jpeg", (0, 0), &bytes));
    let [r, g, b, a] = pixel(&d, 0, 7, 7);
    assert!(r.abs_diff(200) <= 3 && g.abs_diff(100) <= 3 && b.abs_diff(50) <= 3 && a == 255);
    assert_eq!(d.approximations(), 1);
    assert_replays(&d);
}

#[test]
fn lossless_webp_images_are_exact() {
    let mut d = display(5, 5);
    let f = |x: u32, y: u32| {
        if (x + y).is_multiple_of(2) {
            [10, 20, 30, 255]
        } else {
            [40, 50, 60, 70]
        }
    };
    feed(
        &mut d,
        &image(6, 0xE, 0, "image/webp", (0, 0), &webp(5, 5, f)),
    );
    assert_eq!(pixel(&d, 0, 0, 0), [10, 20, 30, 255]);
    assert_eq!(pixel(&d, 0, 1, 0), [40, 50, 60, 70]);
    assert_eq!(d.approximations(), 0);
    assert_replays(&d);
}

#[test]
fn blobs_of_other_or_unknown_streams_are_ignored() {
    let mut d = display(2, 2);
    feed(
        &mut d,
        &[
            text("audio", &["1", "audio/L16"]),
            text("blob", &["1", "AAAA"]),
            text("blob", &["99", "AAAA"]),
            num("end", &[99]),
            num("end", &[1]),
        ],
    );
    assert!(!d.is_degraded());
    assert!(d.key_frame_ready());
}

#[test]
fn one_image_across_many_blobs() {
    let mut d = display(40, 40);
    let bytes = png(40, 40, |x, y| {
        [(x * 6) as u8, (y * 6) as u8, (x ^ y) as u8, 255]
    });
    let instructions = image_chunked(8, 0xE, 0, "image/png", (0, 0), &bytes, 12);
    assert!(instructions.len() > 20);
    feed(&mut d, &instructions[..instructions.len() - 1]);
    assert!(!d.key_frame_ready(), "a stream is open");
    feed(&mut d, &instructions[instructions.len() - 1..]);
    assert_eq!(pixel(&d, 0, 39, 2), [234, 12, 37, 255]);
    assert_replays(&d);
}

#[test]
fn copy_within_a_layer_scrolls() {
    let mut d = display(4, 4);
    for y in 0..4 {
        feed(
            &mut d,
            &fill(0, 0xE, (0, y, 4, 1), [y as u8 * 50, 0, 0, 255]),
        );
    }
    // Scroll up by one row (source and destination overlap).
    feed(&mut d, &[num("copy", &[0, 0, 1, 4, 3, 0xE, 0, 0, 0])]);
    assert_eq!(pixel(&d, 0, 0, 0), [50, 0, 0, 255]);
    assert_eq!(pixel(&d, 0, 3, 2), [150, 0, 0, 255]);
    assert_eq!(pixel(&d, 0, 3, 3), [150, 0, 0, 255]);
    assert_replays(&d);
}

#[test]
fn copy_between_layers_clips_the_source_like_the_client() {
    let mut d = display(4, 4);
    feed(&mut d, &[num("size", &[-1, 2, 2])]);
    feed(&mut d, &fill(-1, 0xC, (0, 0, 2, 2), GREEN));
    // Wider than the source: clipped to it, and the buffer's width bounds the copy.
    feed(&mut d, &[num("copy", &[-1, 1, 0, 5, 5, 0xE, 0, 0, 0])]);
    assert_eq!(pixel(&d, 0, 0, 0), GREEN);
    assert_eq!(pixel(&d, 0, 0, 1), GREEN);
    assert_eq!(pixel(&d, 0, 1, 0), TRANSPARENT);
    // Negative source coordinates: drawImage clips the destination alike.
    feed(&mut d, &[num("copy", &[-1, -1, 0, 2, 1, 0xE, 0, 2, 3])]);
    assert_eq!(pixel(&d, 0, 2, 3), TRANSPARENT);
    assert_eq!(pixel(&d, 0, 3, 3), GREEN);
    // A source at or past the right edge copies nothing, not even into a growing buffer.
    feed(&mut d, &[num("copy", &[-1, 2, 0, 1, 1, 0xE, -2, 0, 0])]);
    assert_eq!(size_of(&d, -2), (0, 0));
    // Into a buffer: it grows to the (clipped) size.
    feed(&mut d, &[num("copy", &[0, 0, 0, 9, 2, 0xE, -2, 1, 1])]);
    assert_eq!(size_of(&d, -2), (5, 3));
    assert_replays(&d);
}

#[test]
fn rect_and_cfill_with_masks() {
    let mut d = display(4, 1);
    feed(&mut d, &fill(0, 0xE, (0, 0, 4, 1), RED));
    feed(&mut d, &fill(0, 0xE, (1, 0, 1, 1), [0, 0, 255, 128]));
    assert_eq!(pixel(&d, 0, 1, 0), [127, 0, 128, 255]);
    // ROUT with opaque black clears (guacd's clearing of non-opaque layers).
    feed(&mut d, &fill(0, 0x2, (2, 0, 1, 1), [0, 0, 0, 255]));
    assert_eq!(pixel(&d, 0, 2, 0), TRANSPARENT);
    assert_eq!(pixel(&d, 0, 3, 0), RED);
    // A closed path is filled again by a second cfill; the next rect starts a new one.
    feed(&mut d, &[num("cfill", &[0xE, 0, 0, 255, 0, 255])]);
    assert_eq!(pixel(&d, 0, 2, 0), GREEN);
    assert_eq!(pixel(&d, 0, 3, 0), RED);
    // Several rectangles in one path.
    feed(
        &mut d,
        &[num("rect", &[0, 0, 0, 1, 1]), num("rect", &[0, 3, 0, 1, 1])],
    );
    feed(&mut d, &[num("cfill", &[0xE, 0, 0, 0, 255, 255])]);
    assert_eq!([pixel(&d, 0, 0, 0), pixel(&d, 0, 3, 0)], [BLUE, BLUE]);
    // An unmapped mask keeps the previous operation.
    feed(&mut d, &fill(0, 0x5, (1, 0, 1, 1), [0, 0, 0, 0]));
    assert_eq!(pixel(&d, 0, 1, 0), [127, 0, 128, 255]);
    assert_eq!(d.approximations(), 0);
    assert_replays(&d);
}

#[test]
fn src_fill_is_unbounded_within_the_clip() {
    let mut d = display(3, 1);
    feed(&mut d, &fill(0, 0xE, (0, 0, 3, 1), RED));
    feed(&mut d, &fill(0, 0xC, (1, 0, 1, 1), GREEN));
    assert_eq!(pixel(&d, 0, 0, 0), TRANSPARENT);
    assert_eq!(pixel(&d, 0, 1, 0), GREEN);
    assert_eq!(pixel(&d, 0, 2, 0), TRANSPARENT);
}

#[test]
fn transfer_applies_raster_operations() {
    let mut d = display(2, 1);
    feed(&mut d, &[num("size", &[-1, 2, 1])]);
    feed(
        &mut d,
        &fill(-1, 0xC, (0, 0, 2, 1), [0xF0, 0x0F, 0xFF, 0x80]),
    );
    feed(
        &mut d,
        &fill(0, 0xC, (0, 0, 2, 1), [0xFF, 0xFF, 0x00, 0xFF]),
    );
    feed(&mut d, &[num("transfer", &[-1, 0, 0, 1, 1, 0x6, 0, 0, 0])]); // XOR
    assert_eq!(pixel(&d, 0, 0, 0), [0x0F, 0xF0, 0xFF, 0xFF]);
    feed(&mut d, &[num("transfer", &[-1, 0, 0, 1, 1, 0x5, 0, 1, 0])]); // NOP
    assert_eq!(pixel(&d, 0, 1, 0), [0xFF, 0xFF, 0x00, 0xFF]);
    feed(&mut d, &[num("transfer", &[-1, 0, 0, 1, 1, 0x3, 0, 1, 0])]); // SRC: alpha too
    assert_eq!(pixel(&d, 0, 1, 0), [0xF0, 0x0F, 0xFF, 0x80]);
    // Outside the source reads as transparent black: BLACK keeps the alpha.
    feed(&mut d, &[num("transfer", &[-1, -1, 0, 2, 1, 0x0, 0, 0, 0])]);
    assert_eq!(pixel(&d, 0, 0, 0), [0, 0, 0, 0xFF]);
    assert_eq!(
        d.handle(&num("transfer", &[-1, 0, 0, 1, 1, 16, 0, 0, 0])),
        Err(DisplayError::Unsupported(Unsupported::TransferFunction))
    );
}

#[test]
fn cursor_comes_from_a_buffer_and_is_replayed() {
    let mut d = display(8, 8);
    let arrow = png(
        3,
        2,
        |x, y| if x <= y { [0, 0, 0, 255] } else { TRANSPARENT },
    );
    feed(&mut d, &[num("size", &[-1, 3, 2])]);
    feed(&mut d, &image(0, 0xC, -1, "image/png", (0, 0), &arrow));
    feed(&mut d, &[num("cursor", &[1, 1, -1, 0, 0, 3, 2])]);
    let cursor = &d.cursor;
    assert_eq!(
        (
            cursor.hotspot,
            cursor.surface.width(),
            cursor.surface.height()
        ),
        ((1, 1), 3, 2)
    );
    assert_eq!(cursor.surface.pixels()[0], [0, 0, 0, 255]);
    assert_eq!(cursor.surface.pixels()[1], TRANSPARENT);
    feed(&mut d, &[text("mouse", &["4", "5", "0", "1234"])]);
    let replay = assert_replays(&d);
    assert!(
        !replay.layers.contains_key(&-2),
        "the spare buffer is disposed"
    );
}

#[test]
fn layer_tree_move_shade_distort_dispose() {
    let mut d = display(10, 10);
    feed(
        &mut d,
        &[
            num("size", &[1, 4, 4]),
            num("size", &[2, 3, 3]),
            num("size", &[3, 2, 2]),
            num("move", &[2, 1, 1, 1, 0]),
            num("move", &[3, 0, 5, 5, -1]),
            num("shade", &[1, 100]),
            num("shade", &[0, 300]),
            text("distort", &["2", "1", "0.5", "0", "1", "2.25", "-3"]),
            num("move", &[0, 1, 0, 0, 0]), // ignored: the default layer cannot move
            num("move", &[1, -1, 0, 0, 0]), // ignored: no buffer parents
        ],
    );
    assert_eq!(d.live_parent(2), Some(1));
    assert_eq!(d.layers[&0].node.unwrap().opacity, 255);
    assert_eq!(d.layers[&1].node.unwrap().opacity, 100);
    assert_replays(&d);
    // A cycle is refused.
    assert_eq!(
        d.handle(&num("move", &[1, 2, 0, 0, 0])),
        Err(DisplayError::Unsupported(Unsupported::LayerCycle))
    );
    assert!(d.is_degraded());
}

#[test]
fn disposing_a_parent_detaches_its_children() {
    let mut d = display(6, 6);
    feed(
        &mut d,
        &[
            num("size", &[1, 2, 2]),
            num("size", &[2, 2, 2]),
            num("size", &[3, 2, 2]),
            num("move", &[2, 1, 1, 1, 3]),
            num("move", &[3, 2, 0, 1, 0]),
            num("dispose", &[1]),
            num("size", &[1, 5, 5]), // a new layer 1: not the parent of 2
        ],
    );
    assert_eq!(d.live_parent(2), None);
    assert_eq!(d.live_parent(3), Some(2));
    let replay = assert_replays(&d);
    assert_eq!(replay.live_parent(2), None);
}

#[test]
fn siblings_of_equal_z_keep_their_attachment_order() {
    let mut d = display(4, 4);
    feed(
        &mut d,
        &[
            num("size", &[1, 1, 1]),
            num("size", &[2, 1, 1]),
            num("size", &[3, 1, 1]),
            num("move", &[1, 3, 0, 0, 0]),
            num("move", &[1, 0, 0, 0, 0]), // back to the default layer: now on top of 2 and 3
            num("move", &[2, 0, 0, 0, 0]), // same parent: order unchanged
        ],
    );
    let replay = assert_replays(&d);
    let order = |d: &Display| {
        let mut v: Vec<_> = (1..=3)
            .map(|i| (d.layers[&i].node.unwrap().attach, i))
            .collect();
        v.sort();
        v.into_iter().map(|(_, i)| i).collect::<Vec<_>>()
    };
    assert_eq!(order(&d), vec![2, 3, 1]);
    assert_eq!(order(&replay), vec![2, 3, 1]);
}

#[test]
fn paths_lines_arcs_curves_and_strokes() {
    let mut d = display(20, 20);
    feed(
        &mut d,
        &[
            num("start", &[0, 0, 0]),
            num("line", &[0, 10, 0]),
            num("line", &[0, 0, 10]),
            num("close", &[0]),
            num("cfill", &[0xE, 0, 255, 0, 0, 255]),
        ],
    );
    assert_eq!(pixel(&d, 0, 1, 1), RED);
    assert_eq!(pixel(&d, 0, 9, 9), TRANSPARENT);
    feed(
        &mut d,
        &[
            text(
                "arc",
                &["0", "15", "15", "3", "0", "6.283185307179586", "0"],
            ),
            num("cfill", &[0xE, 0, 0, 255, 0, 255]),
        ],
    );
    assert_eq!(pixel(&d, 0, 15, 15), GREEN);
    assert_eq!(pixel(&d, 0, 15, 10), TRANSPARENT);
    feed(
        &mut d,
        &[
            num("start", &[0, 0, 19]),
            num("curve", &[0, 5, 12, 10, 12, 15, 19]),
            num("cstroke", &[0xE, 0, 1, 2, 2, 0, 0, 255, 255]),
        ],
    );
    assert_eq!(pixel(&d, 0, 0, 19), BLUE);
    assert!(d.approximations() >= 3);
    // The closed path is re-emitted in the key frame: a later cfill fills it again.
    let mut replay = assert_replays(&d);
    let again = num("cfill", &[0xE, 0, 9, 9, 9, 255]);
    d.handle(&again).unwrap();
    replay.handle(&again).unwrap();
    assert_eq!(replay.canonical(), d.canonical());
}

#[test]
fn clip_push_pop_reset_and_transforms() {
    let mut d = display(6, 6);
    feed(
        &mut d,
        &[
            num("push", &[0]),
            num("rect", &[0, 1, 1, 2, 2]),
            num("clip", &[0]),
            num("rect", &[0, 0, 0, 6, 6]),
            num("cfill", &[0xE, 0, 255, 0, 0, 255]),
        ],
    );
    assert_eq!(pixel(&d, 0, 1, 1), RED);
    assert_eq!(pixel(&d, 0, 0, 0), TRANSPARENT);
    assert!(!d.key_frame_ready(), "a clip and a pushed state");
    feed(&mut d, &[num("pop", &[0]), num("pop", &[0])]);
    assert!(d.key_frame_ready());
    feed(
        &mut d,
        &[
            text("transform", &["0", "1", "0", "0", "1", "4", "4"]),
            num("rect", &[0, 0, 0, 1, 1]),
            num("cfill", &[0xE, 0, 0, 255, 0, 255]),
        ],
    );
    assert_eq!(pixel(&d, 0, 4, 4), GREEN);
    assert!(!d.key_frame_ready(), "a transform");
    feed(&mut d, &[num("identity", &[0])]);
    assert!(!d.key_frame_ready(), "a path built under a transform");
    feed(&mut d, &[num("reset", &[0])]);
    assert!(d.key_frame_ready());
    assert_eq!(d.approximations(), 0);
    assert_replays(&d);
}

#[test]
fn layer_fill_repeats_a_pattern() {
    let mut d = display(4, 2);
    feed(&mut d, &[num("size", &[-1, 2, 1])]);
    feed(&mut d, &fill(-1, 0xE, (0, 0, 1, 1), RED));
    feed(&mut d, &fill(-1, 0xE, (1, 0, 1, 1), BLUE));
    feed(
        &mut d,
        &[num("rect", &[0, 0, 0, 4, 2]), num("lfill", &[0xE, 0, -1])],
    );
    assert_eq!(pixel(&d, 0, 2, 1), RED);
    assert_eq!(pixel(&d, 0, 3, 1), BLUE);
    assert_eq!(
        d.approximations(),
        1,
        "browsers repeat the canvas, 64 × 64 here"
    );
    assert_replays(&d);
    assert_eq!(
        d.handle(&num("lstroke", &[0xE, 0, 0, 0, 1, -1])),
        Err(DisplayError::Unsupported(Unsupported::LayerStroke))
    );
}

#[test]
fn legacy_png_draws_inline() {
    let mut d = display(2, 2);
    let data = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        png(1, 1, |_, _| GREEN),
    );
    feed(&mut d, &[text("png", &["14", "0", "1", "1", &data])]);
    assert_eq!(pixel(&d, 0, 1, 1), GREEN);
}

#[test]
fn sync_and_mouse_are_remembered() {
    let mut d = display(1, 1);
    assert_eq!(d.last_timestamp(), None);
    feed(
        &mut d,
        &[
            num("sync", &[42]),
            num("sync", &[43, 2]),
            num("mouse", &[1, 2, 0, 43]),
        ],
    );
    assert_eq!(d.last_timestamp(), Some(43));
    let replay = assert_replays(&d);
    assert_eq!(replay.mouse, d.mouse);
}

#[test]
fn instructions_that_do_not_draw_are_ignored() {
    let mut d = display(2, 2);
    let before = d.canonical();
    feed(
        &mut d,
        &[
            text("nop", &[]),
            text("clipboard", &["3", "text/plain"]),
            text("blob", &["3", "aGVsbG8="]),
            num("end", &[3]),
            text("file", &["5", "application/pdf", "x.pdf"]),
            text("pipe", &["7", "text/plain", "p"]),
            text("argv", &["9", "text/plain", "color-depth"]),
            text("ack", &["1", "OK", "0"]),
            text("name", &["desktop"]),
            text("log", &["hello"]),
            text("msg", &["1", "a", "b"]),
            text("required", &["password"]),
            text("video", &["11", "0", "video/webm"]),
            text("set", &["0", "miter-limit", "4"]),
            text("error", &["bye", "512"]),
            text("disconnect", &[]),
            text("frobnicate", &["1"]),
        ],
    );
    assert_eq!(d.canonical(), before);
    assert!(!d.is_degraded());
    // Open streams keep the key frame's images off their indexes.
    feed(&mut d, &[text("audio", &["0", "audio/L16"])]);
    feed(&mut d, &fill(0, 0xE, (0, 0, 1, 1), RED));
    let key_frame = d.snapshot().encode();
    assert!(key_frame.windows(10).any(|w| w == b"3.img,1.1,"));
    assert!(!key_frame.windows(10).any(|w| w == b"3.img,1.0,"));
}

#[test]
fn copy_within_a_layer_matches_a_copy_through_a_temporary() {
    let mut rng = Rng(17);
    let mut d = display(24, 16);
    let bytes = png(24, 16, |x, y| {
        [x as u8 * 10, y as u8 * 15, (x * y) as u8, 255]
    });
    feed(&mut d, &image(0, 0xE, 0, "image/png", (0, 0), &bytes));
    for _ in 0..200 {
        let (sx, sy) = (rng.below(30) as i64 - 3, rng.below(22) as i64 - 3);
        let (w, h) = (rng.below(26) as i64, rng.below(18) as i64);
        let (dx, dy) = (rng.below(30) as i64 - 3, rng.below(22) as i64 - 3);
        let before = d.layers[&0].surface.pixels().to_vec();
        feed(&mut d, &[num("copy", &[0, sx, sy, w, h, 0xE, 0, dx, dy])]);
        for y in 0..16 {
            for x in 0..24 {
                let (srcx, srcy) = (x - dx + sx, y - dy + sy);
                let copied = x >= dx
                    && y >= dy
                    && x < dx + w
                    && y < dy + h
                    && (0..24).contains(&srcx)
                    && (0..16).contains(&srcy)
                    && sx < 24
                    && sy < 16;
                let expected = if copied {
                    before[(srcy * 24 + srcx) as usize]
                } else {
                    before[(y * 24 + x) as usize]
                };
                assert_eq!(
                    pixel(&d, 0, x as u32, y as u32),
                    expected,
                    "copy {sx},{sy} {w}x{h} to {dx},{dy} at {x},{y}"
                );
            }
        }
    }
}

#[test]
fn the_screen_stacks_visible_layers_by_z_with_their_opacity() {
    let mut d = Display::new(DisplayLimits::default());
    feed(
        &mut d,
        &[
            num("size", &[0, 8, 4]),
            num("rect", &[0, 0, 0, 8, 4]),
            num("cfill", &[0xC, 0, 0, 0, 200, 255]),
            // Layer 2 (red, half transparent by `shade`) under layer 1 (green) by Z.
            num("size", &[1, 2, 2]),
            num("rect", &[1, 0, 0, 2, 2]),
            num("cfill", &[0xC, 1, 0, 255, 0, 255]),
            num("move", &[1, 0, 1, 1, 5]),
            num("size", &[2, 4, 2]),
            num("rect", &[2, 0, 0, 4, 2]),
            num("cfill", &[0xC, 2, 255, 0, 0, 255]),
            num("move", &[2, 0, 0, 1, 1]),
            num("shade", &[2, 128]),
            // A layer whose parent is disposed is not shown; a buffer never is.
            num("size", &[3, 8, 4]),
            num("move", &[4, 3, 0, 0, 9]),
            num("size", &[4, 8, 4]),
            num("rect", &[4, 0, 0, 8, 4]),
            num("cfill", &[0xC, 4, 9, 9, 9, 255]),
            num("dispose", &[3]),
            num("size", &[-1, 8, 4]),
            num("rect", &[-1, 0, 0, 8, 4]),
            num("cfill", &[0xC, -1, 7, 7, 7, 255]),
        ],
    );
    let screen = d.screen();
    assert_eq!((screen.width(), screen.height()), (8, 4));
    assert_eq!(screen.pixel(0, 0), Some([0, 0, 200, 255]));
    // Red at opacity 128 over blue.
    assert_eq!(screen.pixel(0, 1), Some([128, 0, 100, 255]));
    // Green (Z 5) over the red layer (Z 1).
    assert_eq!(screen.pixel(1, 1), Some([0, 255, 0, 255]));
    assert_eq!(screen.pixel(3, 2), Some([128, 0, 100, 255]));
    assert_eq!(screen.pixel(7, 3), Some([0, 0, 200, 255]));
    assert_eq!(screen.pixel(8, 0), None);
    // A key frame shows the same.
    assert_eq!(assert_replays(&d).screen(), screen);
}
