//! The client's Guacamole input as DevTools input events, without I/O.
//!
//! * `key` (an X11 keysym, pressed or released) becomes `Input.dispatchKeyEvent`: DOM `key`
//!   and `code`, the Windows virtual key code Chromium's keyboard handling keys on, the
//!   modifier mask, and the text a printable key types — any Unicode character, from the
//!   Latin-1 keysyms and the `0x01000000 + code point` ones alike. With Ctrl, Alt or Meta
//!   held a key types nothing (`rawKeyDown`), so shortcuts reach the page as shortcuts.
//! * `mouse` (x, y and a button mask: left 1, middle 2, right 4, wheel up 8, wheel down 16)
//!   becomes moves, presses and releases of the buttons that changed (with the click count
//!   a double click needs), and wheel steps.

use std::time::{Duration, Instant};

/// Modifier bits as `Input.dispatch*Event` takes them.
pub mod modifier {
    /// Alt.
    pub const ALT: i64 = 1;
    /// Control.
    pub const CTRL: i64 = 2;
    /// Meta (the Windows or Command key).
    pub const META: i64 = 4;
    /// Shift.
    pub const SHIFT: i64 = 8;
}

/// A key event's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A key that types text.
    KeyDown,
    /// A key that types nothing (a special key, or one held with Ctrl, Alt or Meta).
    RawKeyDown,
    /// A release.
    KeyUp,
}

/// One `Input.dispatchKeyEvent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    /// Its type.
    pub kind: KeyKind,
    /// The DOM `key` value (`a`, `é`, `Enter`, `ArrowLeft`).
    pub key: String,
    /// The DOM `code` (`KeyA`, `Enter`), empty when unknown.
    pub code: String,
    /// The Windows virtual key code (0 when none).
    pub virtual_key: i64,
    /// What it types, for [`KeyKind::KeyDown`].
    pub text: Option<String>,
    /// The modifiers held.
    pub modifiers: i64,
    /// 1 left, 2 right, 3 the keypad; 0 otherwise.
    pub location: i64,
}

/// A mouse button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    /// Left.
    Left,
    /// Middle.
    Middle,
    /// Right.
    Right,
}

/// One `Input.dispatchMouseEvent`.
#[derive(Debug, Clone, PartialEq)]
pub enum MouseEvent {
    /// The pointer moved (with these DevTools `buttons` held: left 1, right 2, middle 4).
    Moved {
        /// Position.
        x: f64,
        /// Position.
        y: f64,
        /// Buttons held.
        buttons: i64,
    },
    /// A button went down or up.
    Button {
        /// Down (`true`) or up.
        pressed: bool,
        /// Which.
        button: Button,
        /// Position.
        x: f64,
        /// Position.
        y: f64,
        /// Buttons held after the event.
        buttons: i64,
        /// 1 for a click, 2 for the second of a double click, …
        click_count: i64,
    },
    /// A wheel step (negative `delta_y` scrolls up).
    Wheel {
        /// Position.
        x: f64,
        /// Position.
        y: f64,
        /// Pixels.
        delta_y: f64,
    },
}

/// How far one wheel step scrolls, in CSS pixels (Chromium's own step).
const WHEEL_STEP: f64 = 100.0;
/// Clicks closer than this, at nearly the same place, count as one multi-click.
const MULTI_CLICK: Duration = Duration::from_millis(500);

/// Turns the client's input into DevTools events, keeping the modifier and button state.
#[derive(Debug, Default)]
pub struct Input {
    modifiers: i64,
    /// Guacamole's mask of the last `mouse`.
    mask: u32,
    last_click: Option<(Instant, i32, i32, Button, i64)>,
}

impl Input {
    /// A fresh state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The modifiers held now.
    pub fn modifiers(&self) -> i64 {
        self.modifiers
    }

    /// The events for `key keysym pressed`.
    pub fn key(&mut self, keysym: u32, pressed: bool) -> Option<KeyEvent> {
        if let Some(bit) = modifier_bit(keysym) {
            if pressed {
                self.modifiers |= bit;
            } else {
                self.modifiers &= !bit;
            }
        }
        let (key, code, virtual_key, location) = match special(keysym) {
            Some((key, code, vk, location)) => (key.to_owned(), code.to_owned(), vk, location),
            None => {
                let c = printable(keysym)?;
                (c.to_string(), code_of(c), virtual_key_of(c), 0)
            }
        };
        let typed = match keysym {
            0xff0d | 0xff8d => Some("\r".to_owned()),
            _ if special(keysym).is_some() => None,
            _ => Some(key.clone()),
        };
        let chord = self.modifiers & (modifier::CTRL | modifier::ALT | modifier::META) != 0;
        let (kind, text) = match (pressed, typed) {
            (false, _) => (KeyKind::KeyUp, None),
            (true, Some(text)) if !chord => (KeyKind::KeyDown, Some(text)),
            (true, _) => (KeyKind::RawKeyDown, None),
        };
        Some(KeyEvent {
            kind,
            key,
            code,
            virtual_key,
            text,
            modifiers: self.modifiers,
            location,
        })
    }

    /// The events for `mouse x y mask` at `now`.
    pub fn mouse(&mut self, x: i32, y: i32, mask: u32, now: Instant) -> Vec<MouseEvent> {
        let (fx, fy) = (f64::from(x.max(0)), f64::from(y.max(0)));
        let mut events = Vec::new();
        let changed = self.mask ^ mask;
        // Where the pointer is comes first, with the buttons held before.
        events.push(MouseEvent::Moved {
            x: fx,
            y: fy,
            buttons: buttons(self.mask),
        });
        for (bit, button) in [(1, Button::Left), (2, Button::Middle), (4, Button::Right)] {
            if changed & bit == 0 {
                continue;
            }
            let pressed = mask & bit != 0;
            let held = (self.mask & !bit) | (mask & bit);
            let click_count = if pressed {
                let count = match self.last_click {
                    Some((at, lx, ly, lb, count))
                        if lb == button
                            && now.duration_since(at) < MULTI_CLICK
                            && (lx - x).abs() <= 4
                            && (ly - y).abs() <= 4 =>
                    {
                        count + 1
                    }
                    _ => 1,
                };
                self.last_click = Some((now, x, y, button, count));
                count
            } else {
                self.last_click.map_or(1, |(.., count)| count)
            };
            events.push(MouseEvent::Button {
                pressed,
                button,
                x: fx,
                y: fy,
                buttons: buttons(held),
                click_count,
            });
        }
        // The wheel is a press of "button" 4 or 5: one step per press.
        if changed & mask & 8 != 0 {
            events.push(MouseEvent::Wheel {
                x: fx,
                y: fy,
                delta_y: -WHEEL_STEP,
            });
        }
        if changed & mask & 16 != 0 {
            events.push(MouseEvent::Wheel {
                x: fx,
                y: fy,
                delta_y: WHEEL_STEP,
            });
        }
        self.mask = mask;
        events
    }
}

/// DevTools `buttons` for a Guacamole mask.
fn buttons(mask: u32) -> i64 {
    let mut held = 0;
    if mask & 1 != 0 {
        held |= 1;
    }
    if mask & 4 != 0 {
        held |= 2;
    }
    if mask & 2 != 0 {
        held |= 4;
    }
    held
}

fn modifier_bit(keysym: u32) -> Option<i64> {
    match keysym {
        0xffe1 | 0xffe2 => Some(modifier::SHIFT),
        0xffe3 | 0xffe4 => Some(modifier::CTRL),
        0xffe9 | 0xffea => Some(modifier::ALT),
        0xffe7 | 0xffe8 | 0xffeb | 0xffec => Some(modifier::META),
        _ => None,
    }
}

/// The keys that type nothing (or a control character): DOM key, code, virtual key,
/// location.
fn special(keysym: u32) -> Option<(&'static str, &'static str, i64, i64)> {
    Some(match keysym {
        0xff08 => ("Backspace", "Backspace", 8, 0),
        0xff09 | 0xfe20 => ("Tab", "Tab", 9, 0),
        0xff0d => ("Enter", "Enter", 13, 0),
        0xff8d => ("Enter", "NumpadEnter", 13, 3),
        0xff1b => ("Escape", "Escape", 27, 0),
        0xffff => ("Delete", "Delete", 46, 0),
        0xff50 => ("Home", "Home", 36, 0),
        0xff51 => ("ArrowLeft", "ArrowLeft", 37, 0),
        0xff52 => ("ArrowUp", "ArrowUp", 38, 0),
        0xff53 => ("ArrowRight", "ArrowRight", 39, 0),
        0xff54 => ("ArrowDown", "ArrowDown", 40, 0),
        0xff55 => ("PageUp", "PageUp", 33, 0),
        0xff56 => ("PageDown", "PageDown", 34, 0),
        0xff57 => ("End", "End", 35, 0),
        0xff63 => ("Insert", "Insert", 45, 0),
        0xffe1 => ("Shift", "ShiftLeft", 16, 1),
        0xffe2 => ("Shift", "ShiftRight", 16, 2),
        0xffe3 => ("Control", "ControlLeft", 17, 1),
        0xffe4 => ("Control", "ControlRight", 17, 2),
        0xffe9 => ("Alt", "AltLeft", 18, 1),
        0xffea => ("Alt", "AltRight", 18, 2),
        0xffe7 | 0xffeb => ("Meta", "MetaLeft", 91, 1),
        0xffe8 | 0xffec => ("Meta", "MetaRight", 92, 2),
        0xffe5 => ("CapsLock", "CapsLock", 20, 0),
        0xffbe..=0xffc9 => {
            const KEYS: [&str; 12] = [
                "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "F9", "F10", "F11", "F12",
            ];
            let n = (keysym - 0xffbe) as usize;
            (KEYS[n], KEYS[n], 112 + n as i64, 0)
        }
        _ => return None,
    })
}

/// The character a keysym types: ASCII and Latin-1 keysyms are their code points, Unicode
/// keysyms `0x01000000` plus theirs.
fn printable(keysym: u32) -> Option<char> {
    let code = match keysym {
        0x20..=0x7e | 0xa0..=0xff => keysym,
        0x0100_0000..=0x0110_ffff => keysym - 0x0100_0000,
        _ => return None,
    };
    char::from_u32(code).filter(|c| !c.is_control())
}

fn code_of(c: char) -> String {
    match c {
        'a'..='z' | 'A'..='Z' => format!("Key{}", c.to_ascii_uppercase()),
        '0'..='9' => format!("Digit{c}"),
        ' ' => "Space".to_owned(),
        _ => String::new(),
    }
}

fn virtual_key_of(c: char) -> i64 {
    match c {
        'a'..='z' | 'A'..='Z' => i64::from(u32::from(c.to_ascii_uppercase())),
        '0'..='9' | ' ' => i64::from(u32::from(c)),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_keys_type_any_character_and_chords_type_nothing() {
        let mut input = Input::new();
        let a = input.key(u32::from('a'), true).unwrap();
        assert_eq!(
            (a.kind, a.text.as_deref(), a.code.as_str(), a.virtual_key),
            (KeyKind::KeyDown, Some("a"), "KeyA", 65)
        );
        // Latin-1 é, and a Unicode keysym (Cyrillic ж).
        assert_eq!(input.key(0xe9, true).unwrap().text.as_deref(), Some("é"));
        assert_eq!(
            input.key(0x0100_0436, true).unwrap().text.as_deref(),
            Some("ж")
        );
        assert_eq!(input.key(0xff0d, true).unwrap().text.as_deref(), Some("\r"));
        assert_eq!(input.key(0xff51, true).unwrap().kind, KeyKind::RawKeyDown);
        input.key(0xffe3, true);
        let ctrl_a = input.key(u32::from('a'), true).unwrap();
        assert_eq!(
            (ctrl_a.kind, ctrl_a.modifiers),
            (KeyKind::RawKeyDown, modifier::CTRL)
        );
        input.key(0xffe3, false);
        assert_eq!(input.modifiers(), 0);
        assert_eq!(
            input.key(u32::from('a'), false).unwrap().kind,
            KeyKind::KeyUp
        );
        assert!(input.key(0xfe03, true).is_none());
        assert!(input.key(0x0100_0000 + 0xd800, true).is_none());
    }

    #[test]
    fn buttons_press_release_double_click_and_wheel() {
        let mut input = Input::new();
        let t = Instant::now();
        let down = input.mouse(10, 20, 1, t);
        assert!(matches!(
            down[1],
            MouseEvent::Button {
                pressed: true,
                button: Button::Left,
                buttons: 1,
                click_count: 1,
                ..
            }
        ));
        let up = input.mouse(10, 20, 0, t);
        assert!(matches!(
            up[1],
            MouseEvent::Button {
                pressed: false,
                buttons: 0,
                click_count: 1,
                ..
            }
        ));
        let again = input.mouse(11, 20, 1, t + Duration::from_millis(100));
        assert!(matches!(
            again[1],
            MouseEvent::Button { click_count: 2, .. }
        ));
        input.mouse(11, 20, 0, t);
        let wheel = input.mouse(11, 20, 16, t);
        assert!(matches!(wheel.last(), Some(MouseEvent::Wheel { delta_y, .. }) if *delta_y > 0.0));
        let right = input.mouse(5, 5, 4, t + Duration::from_secs(2));
        assert!(matches!(
            right[1],
            MouseEvent::Button {
                button: Button::Right,
                buttons: 2,
                click_count: 1,
                ..
            }
        ));
    }
}
