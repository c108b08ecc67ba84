//! Guacamole mouse events to xterm mouse reports, for targets that ask for them (`vim` with
//! `mouse=a`, `htop`, `mc`).

use crate::keys::Modifiers;

/// Guacamole's button bits.
pub const LEFT: u32 = 1;
/// Middle button.
pub const MIDDLE: u32 = 2;
/// Right button.
pub const RIGHT: u32 = 4;
/// Wheel up.
pub const WHEEL_UP: u32 = 8;
/// Wheel down.
pub const WHEEL_DOWN: u32 = 16;

/// One mouse event, in cells.
#[derive(Debug, Clone, Copy)]
pub struct MouseReport {
    /// Row (0-based).
    pub row: u16,
    /// Column (0-based).
    pub col: u16,
    /// Buttons that went down with this event.
    pub pressed: u32,
    /// Buttons that went up.
    pub released: u32,
    /// Buttons held after it.
    pub held: u32,
    /// Modifiers held.
    pub modifiers: Modifiers,
}

/// The bytes reporting `report` in the target's `mode` and `encoding` (empty if the mode does
/// not report it).
pub fn encode(
    report: &MouseReport,
    mode: vt100::MouseProtocolMode,
    encoding: vt100::MouseProtocolEncoding,
) -> Vec<u8> {
    use vt100::MouseProtocolMode as Mode;
    let mut modifiers = 0;
    if report.modifiers.shift {
        modifiers |= 4;
    }
    if report.modifiers.alt {
        modifiers |= 8;
    }
    if report.modifiers.ctrl {
        modifiers |= 16;
    }
    let mut out = Vec::new();
    let mut push = |code: u32, release: bool| {
        write(&mut out, code | modifiers, release, report, encoding);
    };
    for (bit, code) in [
        (LEFT, 0),
        (MIDDLE, 1),
        (RIGHT, 2),
        (WHEEL_UP, 64),
        (WHEEL_DOWN, 65),
    ] {
        if report.pressed & bit != 0 {
            push(code, false);
        }
    }
    if mode != Mode::Press {
        for (bit, code) in [(LEFT, 0), (MIDDLE, 1), (RIGHT, 2)] {
            if report.released & bit != 0 {
                push(code, true);
            }
        }
    }
    let moved = report.pressed == 0 && report.released == 0;
    let held = report.held & (LEFT | MIDDLE | RIGHT);
    if moved && (mode == Mode::AnyMotion || (mode == Mode::ButtonMotion && held != 0)) {
        let button = match held {
            h if h & LEFT != 0 => 0,
            h if h & MIDDLE != 0 => 1,
            h if h & RIGHT != 0 => 2,
            _ => 3,
        };
        push(32 + button, false);
    }
    out
}

fn write(
    out: &mut Vec<u8>,
    code: u32,
    release: bool,
    report: &MouseReport,
    encoding: vt100::MouseProtocolEncoding,
) {
    let x = u32::from(report.col) + 1;
    let y = u32::from(report.row) + 1;
    match encoding {
        vt100::MouseProtocolEncoding::Sgr => {
            let end = if release { 'm' } else { 'M' };
            out.extend_from_slice(format!("\x1b[<{code};{x};{y}{end}").as_bytes());
        }
        vt100::MouseProtocolEncoding::Utf8 => {
            let code = if release { 3 | (code & !3) } else { code };
            out.extend_from_slice(b"\x1b[M");
            for v in [code + 32, x + 32, y + 32] {
                let c = char::from_u32(v.min(2047)).unwrap_or(' ');
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
        _ => {
            // The X10 encoding cannot say where beyond column 223.
            let code = if release { 3 | (code & !3) } else { code };
            out.extend_from_slice(b"\x1b[M");
            for v in [code + 32, x.min(223) + 32, y.min(223) + 32] {
                out.push(u8::try_from(v).unwrap_or(255));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vt100::{MouseProtocolEncoding as E, MouseProtocolMode as M};

    fn report(pressed: u32, released: u32, held: u32) -> MouseReport {
        MouseReport {
            row: 4,
            col: 9,
            pressed,
            released,
            held,
            modifiers: Modifiers::default(),
        }
    }

    #[test]
    fn sgr_and_x10_reports() {
        let cases: [(MouseReport, M, E, &[u8]); 9] = [
            (
                report(LEFT, 0, LEFT),
                M::PressRelease,
                E::Sgr,
                b"\x1b[<0;10;5M",
            ),
            (
                report(0, LEFT, 0),
                M::PressRelease,
                E::Sgr,
                b"\x1b[<0;10;5m",
            ),
            (
                report(WHEEL_UP, 0, WHEEL_UP),
                M::PressRelease,
                E::Sgr,
                b"\x1b[<64;10;5M",
            ),
            (
                report(LEFT, 0, LEFT),
                M::PressRelease,
                E::Default,
                b"\x1b[M *%",
            ),
            (
                report(0, LEFT, 0),
                M::PressRelease,
                E::Default,
                b"\x1b[M#*%",
            ),
            (report(0, LEFT, 0), M::Press, E::Sgr, b""),
            (report(0, 0, LEFT), M::PressRelease, E::Sgr, b""),
            (
                report(0, 0, LEFT),
                M::ButtonMotion,
                E::Sgr,
                b"\x1b[<32;10;5M",
            ),
            (report(0, 0, 0), M::AnyMotion, E::Sgr, b"\x1b[<35;10;5M"),
        ];
        for (report, mode, encoding, expected) in cases {
            assert_eq!(
                encode(&report, mode, encoding),
                expected,
                "{report:?} {mode:?} {encoding:?}"
            );
        }
    }
}
