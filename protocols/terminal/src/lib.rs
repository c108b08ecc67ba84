//! A server-side terminal without I/O: the target's output in, Guacamole drawing instructions
//! out; the client's Guacamole input in, bytes for the target out. SSH, Telnet and the
//! database consoles draw through it, as guacd's protocols draw through its `src/terminal`.
//!
//! ```text
//!  target ──bytes──▶ OSC limiter ─▶ vt100 emulator ─▶ cells ─▶ renderer ──instructions──▶ client
//!  target ◀─bytes─── keys / mouse reports / pastes / replies ◀──── key, mouse, clipboard ── client
//!                                                  size ──▶ Event::Resize ──▶ driver
//! ```
//!
//! * **Emulation** is the `vt100` crate (xterm-compatible: 256 colours and true colour, UTF-8
//!   with wide and combining characters, the alternate screen, scroll regions, bracketed
//!   paste, mouse reporting, application cursor keys) with `scrollback` rows of history the
//!   user scrolls with the mouse wheel or Shift+Page Up/Down. The terminal answers the
//!   device-attribute and cursor-position queries programs make.
//! * **Rendering** ([`render`]) sends only what changed: scrolling as one `copy`, blank runs
//!   as `rect` + `cfill`, glyphs by `copy` from a glyph atlas each glyph is rasterised into
//!   once (words seen twice become one `copy`), rows of fresh text as strips of the atlas
//!   when that is fewer bytes, images as indexed PNGs, frames ended by `sync` and at most one
//!   every [`FRAME_INTERVAL`] (as guacd paces), so a flood of output coalesces into few
//!   frames. A frame reads back only what changed in the emulator's grid: rows whose cells
//!   are as they were (in place or scrolled) are taken from the last frame with their hashes.
//! * **The font** ([`font`]) is DejaVu Sans Mono inside the binary, at `font-size` points and
//!   the client's DPI; **colours** ([`palette`]) are guacd's `color-scheme`s.
//! * **Input**: X11 keysyms to xterm's bytes ([`keys`]), mouse reports ([`mouse`]) when the
//!   target asks for them and otherwise selection (copied to the client's clipboard unless
//!   `disable-copy`) and scrolling; the client's clipboard is pasted with the middle button or
//!   Ctrl+Shift+V (unless `disable-paste`), bracketed when the target asked for that;
//!   `read-only` drops input.
//!
//! # Sans-IO contract
//!
//! Time is an input; the crate never reads a clock, touches a socket or starts a thread
//! (enforced by its `.clippy.toml`). A driver feeds [`Terminal::handle_target`] and
//! [`Terminal::handle_client`], and after each call (and at [`Terminal::poll_timeout`])
//! drains [`Terminal::poll_client`], [`Terminal::poll_target`] and [`Terminal::poll_event`].
//!
//! ```
//! use std::time::Instant;
//! use zt_terminal::{Terminal, TerminalSettings};
//!
//! let now = Instant::now();
//! let mut term = Terminal::new(TerminalSettings::default(), 800, 600, 96, now);
//! term.handle_target(b"hello \x1b[1;32mworld\x1b[m\r\n$ ");
//! let frame = term.poll_client(now).unwrap();
//! assert!(frame.ends_with(b";") && term.text().starts_with("hello world"));
//! term.handle_client(&zt_guac::Instruction::new("key", &["65", "1"]));
//! assert_eq!(term.poll_target().unwrap(), b"A");
//! ```
//!
//! # Limits
//!
//! Everything from the target and the client is hostile. The grid is at most [`MAX_GRID`]
//! cells and the display [`MAX_DISPLAY`] pixels whatever `size` asks for; history at most
//! [`settings::MAX_SCROLLBACK`] rows; a cell keeps at most 22 bytes of combining marks (vt100
//! drops the rest); an OSC string is cut at [`osc::MAX_OSC`] bytes; clipboard text at
//! [`MAX_CLIPBOARD`]; input waiting for the target at [`MAX_PENDING_INPUT`]. Each byte of
//! output costs at most one row's worth of work in the emulator, and a frame at most a few
//! passes over the grid.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::indexing_slicing)]

pub mod error;
pub mod font;
pub mod fuzzing;
pub mod keys;
pub mod mouse;
mod observer;
pub mod osc;
pub mod palette;
pub mod readback;
pub mod render;
pub mod settings;
mod terminal;

pub use error::SettingsError;
pub use observer::Observer;
pub use settings::TerminalSettings;
pub use terminal::{
    Event, FRAME_INTERVAL, MAX_CLIPBOARD, MAX_DISPLAY, MAX_GRID, MAX_PENDING_INPUT, Terminal,
};

#[cfg(test)]
mod tests;
