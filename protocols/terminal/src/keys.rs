//! X11 keysyms (what a Guacamole client sends in `key`) to the bytes a terminal program
//! expects, as xterm sends them.
//!
//! Modifiers are tracked from their own key events. Control with a letter or one of
//! `@[\]^_? ` gives the C0 control; Alt (or Meta) sends ESC first; the cursor keys follow
//! the target's application-cursor mode (DECCKM); BackSpace sends the `backspace` parameter's
//! byte (127 unless set, as in guacd).

/// Which modifiers are held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modifiers {
    /// Either Shift.
    pub shift: bool,
    /// Either Control.
    pub ctrl: bool,
    /// Either Alt or Meta.
    pub alt: bool,
}

impl Modifiers {
    /// Updates the state for a modifier key; false when `keysym` is not a modifier.
    pub fn update(&mut self, keysym: u32, pressed: bool) -> bool {
        match keysym {
            0xffe1 | 0xffe2 => self.shift = pressed,
            0xffe3 | 0xffe4 => self.ctrl = pressed,
            0xffe7..=0xffea => self.alt = pressed,
            // Caps/Shift Lock, Super and Hyper: not modifiers a terminal sees.
            0xffe5 | 0xffe6 | 0xffeb..=0xffee | 0xfe03 => {}
            _ => return false,
        }
        true
    }
}

/// What the terminal needs to know to encode a key.
#[derive(Debug, Clone, Copy)]
pub struct KeyContext {
    /// The modifiers held.
    pub modifiers: Modifiers,
    /// DECCKM: cursor keys send `ESC O x` instead of `ESC [ x`.
    pub application_cursor: bool,
    /// The byte BackSpace sends.
    pub backspace: u8,
}

/// What a key press means to the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAction {
    /// Bytes for the target.
    Send(Vec<u8>),
    /// Shift+Page Up/Down: scroll the local scrollback by this many screens (positive: back
    /// in history). Nothing is sent.
    ScrollPages(i32),
    /// Nothing to do (an unknown keysym, or a modifier).
    None,
}

/// The action of pressing `keysym`.
pub fn press(keysym: u32, context: &KeyContext) -> KeyAction {
    let m = context.modifiers;
    if m.shift {
        match keysym {
            0xff55 => return KeyAction::ScrollPages(1),
            0xff56 => return KeyAction::ScrollPages(-1),
            _ => {}
        }
    }
    let mut bytes = match special(keysym, context) {
        Some(bytes) => bytes,
        None => match character(keysym) {
            Some(c) => {
                if m.ctrl {
                    match control(c) {
                        Some(byte) => vec![byte],
                        None => utf8(c),
                    }
                } else {
                    utf8(c)
                }
            }
            None => return KeyAction::None,
        },
    };
    if m.alt {
        bytes.insert(0, 0x1b);
    }
    KeyAction::Send(bytes)
}

fn utf8(c: char) -> Vec<u8> {
    let mut buf = [0u8; 4];
    c.encode_utf8(&mut buf).as_bytes().to_vec()
}

/// The character a keysym types: Latin-1 keysyms are their code points, and
/// `0x0100_0000 + code point` is any Unicode character (the X11 convention).
pub fn character(keysym: u32) -> Option<char> {
    match keysym {
        0x20..=0x7e | 0xa0..=0xff => char::from_u32(keysym),
        0x0100_0000..=0x0110_ffff => {
            char::from_u32(keysym - 0x0100_0000).filter(|c| !c.is_control())
        }
        // Keypad keys that type characters.
        0xff80 => Some(' '),
        0xffaa => Some('*'),
        0xffab => Some('+'),
        0xffac => Some(','),
        0xffad => Some('-'),
        0xffae => Some('.'),
        0xffaf => Some('/'),
        0xffb0..=0xffb9 => char::from_u32(u32::from(b'0') + keysym - 0xffb0),
        0xffbd => Some('='),
        _ => None,
    }
}

/// Control with `c`: the C0 control xterm sends, if there is one.
fn control(c: char) -> Option<u8> {
    let byte = u8::try_from(u32::from(c)).ok()?;
    match byte {
        b'a'..=b'z' => Some(byte - b'a' + 1),
        b'@' | b' ' | b'2' => Some(0),
        b'A'..=b'Z' => Some(byte - b'A' + 1),
        b'[' | b'3' => Some(0x1b),
        b'\\' | b'4' => Some(0x1c),
        b']' | b'5' => Some(0x1d),
        b'^' | b'6' | b'~' => Some(0x1e),
        b'_' | b'/' | b'7' | b'-' => Some(0x1f),
        b'?' | b'8' => Some(0x7f),
        _ => None,
    }
}

/// Keys that are not characters.
fn special(keysym: u32, context: &KeyContext) -> Option<Vec<u8>> {
    let cursor = |c: u8| -> Vec<u8> {
        if context.application_cursor {
            vec![0x1b, b'O', c]
        } else {
            vec![0x1b, b'[', c]
        }
    };
    let tilde = |n: &str| -> Vec<u8> { format!("\x1b[{n}~").into_bytes() };
    let bytes = match keysym {
        0xff08 => vec![context.backspace],
        0xff09 => b"\t".to_vec(),
        0xfe20 => b"\x1b[Z".to_vec(),
        0xff0d | 0xff8d => b"\r".to_vec(),
        0xff1b => b"\x1b".to_vec(),
        0xff50 | 0xff95 => cursor(b'H'),
        0xff57 | 0xff9c => cursor(b'F'),
        0xff51 | 0xff96 => cursor(b'D'),
        0xff52 | 0xff97 => cursor(b'A'),
        0xff53 | 0xff98 => cursor(b'C'),
        0xff54 | 0xff99 => cursor(b'B'),
        0xff55 | 0xff9a => tilde("5"),
        0xff56 | 0xff9b => tilde("6"),
        0xff63 | 0xff9e => tilde("2"),
        0xffff | 0xff9f => tilde("3"),
        0xffbe => b"\x1bOP".to_vec(),
        0xffbf => b"\x1bOQ".to_vec(),
        0xffc0 => b"\x1bOR".to_vec(),
        0xffc1 => b"\x1bOS".to_vec(),
        0xffc2 => tilde("15"),
        0xffc3 => tilde("17"),
        0xffc4 => tilde("18"),
        0xffc5 => tilde("19"),
        0xffc6 => tilde("20"),
        0xffc7 => tilde("21"),
        0xffc8 => tilde("23"),
        0xffc9 => tilde("24"),
        _ => return None,
    };
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> KeyContext {
        KeyContext {
            modifiers: Modifiers::default(),
            application_cursor: false,
            backspace: 127,
        }
    }

    fn sent(action: KeyAction) -> Vec<u8> {
        match action {
            KeyAction::Send(bytes) => bytes,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn characters_and_unicode_keysyms_type_utf8() {
        assert_eq!(sent(press(u32::from(b'a'), &ctx())), b"a");
        assert_eq!(sent(press(0xe9, &ctx())), "é".as_bytes());
        assert_eq!(sent(press(0x0100_20ac, &ctx())), "€".as_bytes());
        assert_eq!(sent(press(0xffb7, &ctx())), b"7");
        assert_eq!(press(0x0100_0007, &ctx()), KeyAction::None);
        assert_eq!(press(0x1234_5678, &ctx()), KeyAction::None);
    }

    #[test]
    fn control_alt_and_the_cursor_keys_follow_xterm() {
        let mut c = ctx();
        assert!(c.modifiers.update(0xffe3, true));
        assert_eq!(sent(press(u32::from(b'c'), &c)), [3]);
        assert_eq!(sent(press(u32::from(b'['), &c)), [0x1b]);
        assert!(c.modifiers.update(0xffe3, false));
        assert!(c.modifiers.update(0xffe9, true));
        assert_eq!(sent(press(u32::from(b'b'), &c)), b"\x1bb");
        assert!(c.modifiers.update(0xffe9, false));
        assert_eq!(sent(press(0xff52, &c)), b"\x1b[A");
        c.application_cursor = true;
        assert_eq!(sent(press(0xff52, &c)), b"\x1bOA");
        assert_eq!(sent(press(0xff08, &c)), [127]);
        c.backspace = 8;
        assert_eq!(sent(press(0xff08, &c)), [8]);
        assert_eq!(sent(press(0xffc9, &c)), b"\x1b[24~");
        assert!(!c.modifiers.update(u32::from(b'x'), true));
    }

    #[test]
    fn shift_page_up_scrolls_instead_of_sending() {
        let mut c = ctx();
        c.modifiers.update(0xffe1, true);
        assert_eq!(press(0xff55, &c), KeyAction::ScrollPages(1));
        assert_eq!(press(0xff56, &c), KeyAction::ScrollPages(-1));
    }
}
