//! The fuzz target's body (`protocols/fuzz/fuzz_targets/terminal.rs`), here so that it builds
//! and is tested with the crate: random target output and random client input together.

#![allow(
    clippy::panic,
    reason = "a fuzz target reports a broken invariant by panicking"
)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use zt_guac::{Decoder, Instruction, Limits};

use crate::{MAX_PENDING_INPUT, Terminal, TerminalSettings};

/// Drives a terminal with the operations `data` describes, starting at `start`, and checks
/// that everything it sends the client is whole, valid instructions and that what it queues
/// for the target stays bounded.
pub fn terminal(data: &[u8], start: Instant) {
    let mut now = start;
    let mut term = Terminal::new(TerminalSettings::default(), 640, 480, 96, now);
    let mut decoder = Decoder::new(Limits::default());
    let mut input = data;
    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        match op % 8 {
            0..=2 => {
                let len = usize::from(take(&mut input, 1).first().copied().unwrap_or(0)) * 4;
                let chunk = take(&mut input, len);
                term.handle_target(chunk);
            }
            3 => {
                let b = take(&mut input, 5);
                let keysym = u32::from_le_bytes([get(b, 0), get(b, 1), get(b, 2), get(b, 3)]);
                let pressed = if get(b, 4) & 1 == 1 { "1" } else { "0" };
                term.handle_client(&Instruction::new(
                    "key",
                    &[keysym.to_string().as_str(), pressed],
                ));
            }
            4 => {
                let b = take(&mut input, 5);
                let x = i32::from(i16::from_le_bytes([get(b, 0), get(b, 1)]));
                let y = i32::from(i16::from_le_bytes([get(b, 2), get(b, 3)]));
                let args = [
                    x.to_string(),
                    y.to_string(),
                    u32::from(get(b, 4) & 31).to_string(),
                ];
                term.handle_client(&Instruction::new("mouse", &args));
            }
            5 => {
                let b = take(&mut input, 4);
                let w = u32::from(u16::from_le_bytes([get(b, 0), get(b, 1)])) * 16;
                let h = u32::from(u16::from_le_bytes([get(b, 2), get(b, 3)])) * 16;
                term.handle_client(&Instruction::new("size", &[w.to_string(), h.to_string()]));
            }
            6 => {
                let len = usize::from(take(&mut input, 1).first().copied().unwrap_or(0));
                let text = take(&mut input, len);
                let data = base64::engine::general_purpose::STANDARD.encode(text);
                term.handle_client(&Instruction::new("clipboard", &["7", "text/plain"]));
                term.handle_client(&Instruction::new("blob", &["7", data.as_str()]));
                term.handle_client(&Instruction::new("end", &["7"]));
            }
            _ => {
                let ms = take(&mut input, 1).first().copied().unwrap_or(0);
                now += Duration::from_millis(u64::from(ms));
            }
        }
        drain(&mut term, &mut decoder, now);
    }
    now += Duration::from_secs(1);
    drain(&mut term, &mut decoder, now);
    assert!(
        decoder.is_at_boundary(),
        "a frame ended inside an instruction"
    );
}

fn drain(term: &mut Terminal, decoder: &mut Decoder, now: Instant) {
    if let Some(out) = term.poll_client(now) {
        decoder.feed(&out);
        loop {
            match decoder.poll_instruction() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(error) => panic!("the terminal sent an invalid instruction: {error}"),
            }
        }
    }
    if let Some(bytes) = term.poll_target() {
        assert!(bytes.len() <= MAX_PENDING_INPUT);
    }
    while term.poll_event().is_some() {}
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(input.len());
    let (head, tail) = input.split_at(n);
    *input = tail;
    head
}

fn get(bytes: &[u8], i: usize) -> u8 {
    bytes.get(i).copied().unwrap_or(0)
}
