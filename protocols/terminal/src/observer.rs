//! What a terminal session reports while it runs, whatever its protocol (SSH, Telnet, a
//! database console): the proxy's typescript recording and audit log listen here.

use crate::Event;

/// What a terminal session reports while it runs. Called from the session's task between two
/// awaits: keep each call short and never block (append to a queue, set a flag).
pub trait Observer: Send {
    /// Bytes the target sent, as the terminal receives them (a typescript's output).
    fn output(&mut self, bytes: &[u8]);
    /// Bytes sent to the target for the user: keys, pastes, mouse reports, and the
    /// terminal's answers to the target's queries.
    fn input(&mut self, bytes: &[u8]);
    /// The terminal (and the target's window) changed to `cols` × `rows`.
    fn resize(&mut self, cols: u16, rows: u16);
    /// Something the terminal did that policy cares about (a copy, a refused paste).
    fn terminal(&mut self, event: &Event);
}
