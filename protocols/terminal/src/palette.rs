//! Colours: the 256-colour xterm palette, true colour, and guacd's `color-scheme` parameter.
//!
//! The first 16 colours and the four named schemes are guacd 1.6's
//! (`src/terminal/color-scheme.c`, `palette.c`), so a session switched between the guacd route
//! and the native one looks the same. The rest of the 256 are xterm's 6 × 6 × 6 cube and 24
//! greys.

use crate::error::SettingsError;

/// An opaque colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rgb(pub u8, pub u8, pub u8);

/// guacd's first 16 colours (`GUAC_TERMINAL_INITIAL_PALETTE`).
const BASE16: [Rgb; 16] = [
    Rgb(0x00, 0x00, 0x00),
    Rgb(0x99, 0x3E, 0x3E),
    Rgb(0x3E, 0x99, 0x3E),
    Rgb(0x99, 0x99, 0x3E),
    Rgb(0x3E, 0x3E, 0x99),
    Rgb(0x99, 0x3E, 0x99),
    Rgb(0x3E, 0x99, 0x99),
    Rgb(0x99, 0x99, 0x99),
    Rgb(0x3E, 0x3E, 0x3E),
    Rgb(0xFF, 0x67, 0x67),
    Rgb(0x67, 0xFF, 0x67),
    Rgb(0xFF, 0xFF, 0x67),
    Rgb(0x67, 0x67, 0xFF),
    Rgb(0xFF, 0x67, 0xFF),
    Rgb(0x67, 0xFF, 0xFF),
    Rgb(0xFF, 0xFF, 0xFF),
];

/// The longest `color-scheme` value accepted (guacd's are a few hundred characters).
pub const MAX_SCHEME_LEN: usize = 8 * 1024;

/// A palette: default foreground and background and the 256 indexed colours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Palette {
    /// The colour of text with no colour set.
    pub foreground: Rgb,
    /// The colour behind text with no background set.
    pub background: Rgb,
    colours: [Rgb; 256],
}

impl Default for Palette {
    /// guacd's default scheme, `gray-black`.
    fn default() -> Self {
        let mut colours = [Rgb(0, 0, 0); 256];
        for (index, colour) in colours.iter_mut().enumerate() {
            *colour = xterm(index);
        }
        Self {
            foreground: BASE16[7],
            background: BASE16[0],
            colours,
        }
    }
}

/// xterm's colour `index` (0–255), with guacd's first 16.
fn xterm(index: usize) -> Rgb {
    const CUBE: [u8; 6] = [0, 0x5f, 0x87, 0xaf, 0xd7, 0xff];
    match index {
        0..=15 => BASE16.get(index).copied().unwrap_or(Rgb(0, 0, 0)),
        16..=231 => {
            let i = index - 16;
            let level = |n: usize| CUBE.get(n % 6).copied().unwrap_or(0);
            Rgb(level(i / 36), level(i / 6), level(i))
        }
        _ => {
            let grey = u8::try_from(8 + (index.saturating_sub(232)) * 10).unwrap_or(0xee);
            Rgb(grey, grey, grey)
        }
    }
}

impl Palette {
    /// The palette of a `color-scheme` value: one of guacd's names (`black-white`,
    /// `gray-black`, `green-black`, `white-black`) or its custom syntax,
    /// `foreground: rgb:RR/GG/BB; background: color0; color9: rgb:ff/00/00`. Empty means the
    /// default.
    pub fn from_scheme(scheme: &str) -> Result<Self, SettingsError> {
        let mut palette = Self::default();
        let scheme = scheme.trim();
        let named = |fg: usize, bg: usize| (xterm(fg), xterm(bg));
        let (fg, bg) = match scheme {
            "" | "gray-black" => return Ok(palette),
            "black-white" => named(0, 15),
            "green-black" => named(2, 0),
            "white-black" => named(15, 0),
            _ => return palette.custom(scheme).map(|()| palette),
        };
        palette.foreground = fg;
        palette.background = bg;
        Ok(palette)
    }

    fn custom(&mut self, scheme: &str) -> Result<(), SettingsError> {
        if scheme.len() > MAX_SCHEME_LEN {
            return Err(SettingsError::new("color-scheme", "is too long"));
        }
        for entry in scheme.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || SettingsError::new("color-scheme", "is not a guacd colour scheme");
            let (name, value) = entry.split_once(':').ok_or_else(bad)?;
            let colour = self.parse_colour(value.trim()).ok_or_else(bad)?;
            match name.trim() {
                "foreground" => self.foreground = colour,
                "background" => self.background = colour,
                other => {
                    let index: usize = other
                        .strip_prefix("color")
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n < 256)
                        .ok_or_else(bad)?;
                    if let Some(slot) = self.colours.get_mut(index) {
                        *slot = colour;
                    }
                }
            }
        }
        Ok(())
    }

    /// `rgb:RR/GG/BB` (one to four hex digits each, as X11 allows) or `colorN`.
    fn parse_colour(&self, value: &str) -> Option<Rgb> {
        if let Some(index) = value.strip_prefix("color") {
            let index: usize = index.parse().ok()?;
            return self.colours.get(index).copied();
        }
        let mut parts = value.strip_prefix("rgb:")?.split('/');
        let mut channel = || -> Option<u8> {
            let hex = parts.next()?;
            if hex.is_empty() || hex.len() > 4 {
                return None;
            }
            let v = u32::from_str_radix(hex, 16).ok()?;
            let max = (1u32 << (4 * hex.len())) - 1;
            u8::try_from(v * 255 / max).ok()
        };
        let colour = Rgb(channel()?, channel()?, channel()?);
        parts.next().is_none().then_some(colour)
    }

    /// Indexed colour `index`.
    pub fn indexed(&self, index: u8) -> Rgb {
        self.colours
            .get(usize::from(index))
            .copied()
            .unwrap_or(self.foreground)
    }

    /// The colour of a cell's `colour`, `default` when it has none.
    pub(crate) fn resolve(&self, colour: vt100::Color, default: Rgb) -> Rgb {
        match colour {
            vt100::Color::Default => default,
            vt100::Color::Idx(index) => self.indexed(index),
            vt100::Color::Rgb(r, g, b) => Rgb(r, g, b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_schemes_are_guacds() {
        let p = Palette::from_scheme("black-white").unwrap();
        assert_eq!(
            (p.foreground, p.background),
            (Rgb(0, 0, 0), Rgb(255, 255, 255))
        );
        let p = Palette::from_scheme("").unwrap();
        assert_eq!(
            (p.foreground, p.background),
            (Rgb(0x99, 0x99, 0x99), Rgb(0, 0, 0))
        );
        assert_eq!(p.indexed(196), Rgb(0xff, 0, 0));
        assert_eq!(p.indexed(232), Rgb(8, 8, 8));
        assert_eq!(p.indexed(255), Rgb(0xee, 0xee, 0xee));
    }

    #[test]
    fn a_custom_scheme_sets_colours_and_refuses_nonsense() {
        let p =
            Palette::from_scheme("foreground: rgb:ff/80/00; background: color4; color1: rgb:f/0/0")
                .unwrap();
        assert_eq!(p.foreground, Rgb(255, 128, 0));
        assert_eq!(p.background, Rgb(0x3E, 0x3E, 0x99));
        assert_eq!(p.indexed(1), Rgb(255, 0, 0));
        for bad in [
            "purple",
            "foreground: rgb:gg/00/00",
            "color256: rgb:0/0/0",
            "foreground: rgb:1/2",
            "foreground: rgb:1/2/3/4",
            "foreground: rgb:12345/0/0",
        ] {
            assert!(Palette::from_scheme(bad).is_err(), "{bad}");
        }
        assert!(Palette::from_scheme(&"a".repeat(MAX_SCHEME_LEN + 1)).is_err());
    }
}
