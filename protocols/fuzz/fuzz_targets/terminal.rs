//! The terminal driven by random target output and random client input together (keys,
//! mouse, sizes up to a million pixels, clipboard streams, time): no panic, only whole and
//! valid instructions to the client, bounded input queued for the target.

#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static START: OnceLock<Instant> = OnceLock::new();
    zt_terminal::fuzzing::terminal(data, *START.get_or_init(Instant::now));
});
