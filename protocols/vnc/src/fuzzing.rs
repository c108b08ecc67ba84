//! The fuzz target's body (`protocols/fuzz/fuzz_targets/vnc_server.rs`), here so that it
//! builds and is tested with the crate.

#![allow(
    clippy::panic,
    reason = "a fuzz target reports a broken invariant by panicking"
)]

use zt_secret::Secret;

use crate::rfb::{BYTES_PER_PIXEL, Client, Config, Event, Limits};

/// A server's bytes (any, split anywhere) into a client that allows both security types:
/// never a panic; pixels and copies inside the framebuffer, with the bytes they announce;
/// cut text and the unparsed bytes within their bounds.
pub fn server_bytes(data: &[u8]) {
    let limits = Limits {
        max_cut_text: 64,
        max_buffered: 1 << 16,
        ..Limits::default()
    };
    let mut client = Client::new(Config {
        password: Some(Secret::new("pw".to_owned())),
        allow_none: true,
        limits,
        ..Config::default()
    });
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
            match client.poll() {
                Ok(Some(Event::Pixels(p))) => {
                    if !inside(p.x, p.y, p.width, p.height)
                        || p.bgrx.len()
                            != usize::from(p.width) * usize::from(p.height) * BYTES_PER_PIXEL
                    {
                        panic!("pixels outside the framebuffer or of the wrong length");
                    }
                }
                Ok(Some(Event::Copy {
                    src_x,
                    src_y,
                    x,
                    y,
                    width: w,
                    height: h,
                })) => {
                    if !inside(x, y, w, h) || !inside(src_x, src_y, w, h) {
                        panic!("a copy outside the framebuffer");
                    }
                }
                Ok(Some(Event::Fill {
                    x,
                    y,
                    width: w,
                    height: h,
                    ..
                })) => {
                    if !inside(x, y, w, h) {
                        panic!("a fill outside the framebuffer");
                    }
                }
                Ok(Some(Event::CutText(text))) => {
                    if text.len() > 64 {
                        panic!("cut text past its bound");
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let _ = client.output();
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
