//! A guard in front of the emulator: operating system commands (`ESC ] … BEL`) are cut at
//! [`MAX_OSC`] bytes.
//!
//! vte, with the `std` feature that the workspace turns on, collects an OSC string into a
//! growing vector until its terminator, so a target that opens one and never ends it would
//! grow the proxy's memory without bound. The limiter passes bytes through unchanged until an
//! OSC string grows past the limit; it then ends the string for the emulator (a BEL) and drops
//! the rest of it, up to its own terminator (BEL, ST, CAN, SUB, or the ESC that starts the
//! next sequence). Nothing else is buffered: a chunk is passed on as slices of itself.

/// The longest OSC string passed to the emulator (window titles, colours, hyperlinks).
pub const MAX_OSC: usize = 4096;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Ground,
    Escape,
    Osc(usize),
    Discard,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct OscLimiter {
    state: State,
}

impl OscLimiter {
    /// Passes `input` to `emit` in slices, with overlong OSC strings cut.
    pub fn filter(&mut self, input: &[u8], mut emit: impl FnMut(&[u8])) {
        let mut start = 0;
        for (i, &byte) in input.iter().enumerate() {
            self.state = match (self.state, byte) {
                (State::Discard, 0x07 | 0x18 | 0x1a) => {
                    start = i + 1;
                    State::Ground
                }
                (State::Discard, 0x1b) => {
                    start = i;
                    State::Escape
                }
                (State::Discard, _) => State::Discard,
                (_, 0x1b) => State::Escape,
                (State::Escape, b']') => State::Osc(0),
                (State::Osc(_), 0x07 | 0x18 | 0x1a) => State::Ground,
                (State::Osc(n), _) if n >= MAX_OSC => {
                    emit(input.get(start..i).unwrap_or_default());
                    emit(b"\x07");
                    State::Discard
                }
                (State::Osc(n), _) => State::Osc(n + 1),
                _ => State::Ground,
            };
        }
        if self.state != State::Discard {
            emit(input.get(start..).unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(limiter: &mut OscLimiter, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        limiter.filter(input, |chunk| out.extend_from_slice(chunk));
        out
    }

    #[test]
    fn ordinary_output_and_short_titles_pass_unchanged() {
        let mut l = OscLimiter::default();
        let input = b"ab\x1b]0;title\x07cd\x1b[31mred";
        assert_eq!(run(&mut l, input), input);
    }

    #[test]
    fn an_endless_osc_is_cut_and_what_follows_its_end_passes() {
        let mut l = OscLimiter::default();
        let mut out = run(&mut l, b"x\x1b]0;");
        for _ in 0..1000 {
            out.extend(run(&mut l, &[b'a'; 1000]));
        }
        assert!(out.len() < MAX_OSC + 16, "{}", out.len());
        assert_eq!(out.last(), Some(&0x07));
        out.extend(run(&mut l, b"aaa\x1b\\after"));
        assert!(
            out.ends_with(b"\x07\x1b\\after"),
            "{:?}",
            String::from_utf8_lossy(&out[out.len() - 12..])
        );
    }
}
