//! The fuzz target's body (`protocols/fuzz/fuzz_targets/telnet_codec.rs`), here so that it
//! builds and is tested with the crate.

#![allow(
    clippy::panic,
    reason = "a fuzz target reports a broken invariant by panicking"
)]

use std::time::{Duration, Instant};

use crate::codec::{MAX_PENDING_REPLIES, Telnet};
use crate::login::{Login, LoginSettings};

/// A hostile server's bytes, split anywhere, with the user typing and resizing between,
/// and the terminal data through guacd's login automation: never a panic, and what waits to
/// be sent stays bounded.
pub fn codec(data: &[u8]) {
    let mut telnet = Telnet::new("xterm-256color", 80, 24);
    let Ok(settings) = LoginSettings::from_parameters(|name| {
        (name == "login-failure-regex").then_some("incorrect")
    }) else {
        panic!("the login's settings compile");
    };
    let mut login = Login::new(
        settings,
        true,
        true,
        Instant::now() + Duration::from_secs(60),
    );
    for (n, chunk) in data.chunks(61).enumerate() {
        telnet.receive(chunk);
        if n % 3 == 0 {
            telnet.send(&chunk[..chunk.len().min(4)]);
            telnet.resize(u16::from(chunk[0]) * 2, 255);
        }
        if let Some(text) = telnet.poll_data() {
            let _ = login.output(&text);
            if login.is_done() {
                let _ = login.handle_timeout(Instant::now());
            }
        }
        if let Some(out) = telnet.poll_transmit()
            && out.len() > MAX_PENDING_REPLIES + 4 * 2 + 64
        {
            panic!("{} bytes queued for the server", out.len());
        }
        while telnet.poll_event().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_body_runs_on_seeds() {
        for seed in [
            &b"\xff\xfd\x1f\xff\xfa\x18\x01\xff\xf0login: "[..],
            &[0xff; 300],
            &b"\xff\xfa\x18"[..],
        ] {
            super::codec(seed);
        }
    }
}
