//! The fuzz target's body (`protocols/fuzz/fuzz_targets/vnc_server.rs`), here so that it
//! builds and is tested with the crate.

#![allow(
    clippy::panic,
    reason = "a fuzz target reports a broken invariant by panicking"
)]

use zt_secret::Secret;

use crate::display::{Framebuffer, ImageOptions};
use crate::rfb::{BYTES_PER_PIXEL, Client, Config, Event, Limits};

/// A server's bytes (any, split anywhere) into a client that allows both security types,
/// and its events into the display as the engine draws them: never a panic; pixels and
/// copies inside the framebuffer, with the bytes they announce; cut text and the unparsed
/// bytes within their bounds.
pub fn server_bytes(data: &[u8]) {
    let limits = Limits {
        max_cut_text: 64,
        max_buffered: 1 << 16,
        // Small desktops: every update is drawn and encoded.
        max_side: 512,
        max_pixels: 512 * 256,
        ..Limits::default()
    };
    let mut client = Client::new(Config {
        password: Some(Secret::new("pw".to_owned())),
        allow_none: true,
        limits,
        ..Config::default()
    });
    let mut framebuffer = None;
    let mut out = bytes::BytesMut::new();
    for chunk in data.chunks(29) {
        if client.feed(chunk).is_err() {
            return;
        }
        loop {
            let (width, height) = client.size();
            let inside = |x: u16, y: u16, w: u16, h: u16| {
                u32::from(x) + u32::from(w) <= u32::from(width)
                    && u32::from(y) + u32::from(h) <= u32::from(height)
            };
            let Ok(Some(event)) = client.poll() else {
                break;
            };
            match &event {
                Event::Pixels(p)
                    if !inside(p.x, p.y, p.width, p.height)
                        || p.bgrx.len()
                            != usize::from(p.width) * usize::from(p.height) * BYTES_PER_PIXEL =>
                {
                    panic!("pixels outside the framebuffer or of the wrong length");
                }
                Event::Copy {
                    src_x,
                    src_y,
                    x,
                    y,
                    width: w,
                    height: h,
                } if !inside(*x, *y, *w, *h) || !inside(*src_x, *src_y, *w, *h) => {
                    panic!("a copy outside the framebuffer");
                }
                Event::Fill {
                    x,
                    y,
                    width: w,
                    height: h,
                    ..
                } if !inside(*x, *y, *w, *h) => panic!("a fill outside the framebuffer"),
                Event::CutText(text) if text.len() > 64 => panic!("cut text past its bound"),
                _ => {}
            }
            draw(&mut framebuffer, event, &mut out);
            out.clear();
        }
        let _ = client.output();
    }
}

/// The display's side of an event: what the engine does with it.
fn draw(framebuffer: &mut Option<Framebuffer>, event: Event, out: &mut bytes::BytesMut) {
    match (event, framebuffer.as_mut()) {
        (Event::Connected { width, height, .. } | Event::Resize { width, height }, _) => {
            *framebuffer = Some(Framebuffer::new(width, height, ImageOptions::default()));
        }
        (Event::Pixels(band), Some(fb)) => fb.draw(&band),
        (
            Event::Fill {
                x,
                y,
                width,
                height,
                bgrx,
            },
            Some(fb),
        ) => fb.fill(x, y, width, height, bgrx),
        (
            Event::Copy {
                src_x,
                src_y,
                x,
                y,
                width,
                height,
            },
            Some(fb),
        ) => fb.copy((src_x, src_y), (x, y), (width, height), 1, out),
        (Event::UpdateEnd, Some(fb)) => fb.flush(2, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_seeds_run() {
        super::server_bytes(b"RFB 003.008\n\x01\x01\x00\x00\x00\x00\x00\x04\x00\x02");
        super::server_bytes(b"RFB 003.003\n\x00\x00\x00\x02");
        super::server_bytes(&[0xFF; 300]);
    }
}
