//! The terminal's connection parameters, with guacd 1.6's names and defaults
//! (`../shared/fixtures/guacd-1.6/args.txt`).

use crate::error::SettingsError;
use crate::palette::Palette;

/// The most rows of history kept, whatever `scrollback` asks for (guacd's default is 1000).
pub const MAX_SCROLLBACK: usize = 10_000;

/// What a terminal is configured with.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TerminalSettings {
    /// `font-size`, in points (default 12).
    pub font_size: f32,
    /// `color-scheme`.
    pub palette: Palette,
    /// `scrollback`: rows of history (default 1000).
    pub scrollback: usize,
    /// `backspace`: the byte BackSpace sends (default 127).
    pub backspace: u8,
    /// `read-only`: input from the client is dropped.
    pub read_only: bool,
    /// `disable-copy`: text selected in the terminal is not sent to the client.
    pub disable_copy: bool,
    /// `disable-paste`: the client's clipboard is not typed into the terminal.
    pub disable_paste: bool,
}

impl Default for TerminalSettings {
    fn default() -> Self {
        Self {
            font_size: 12.0,
            palette: Palette::default(),
            scrollback: 1000,
            backspace: 127,
            read_only: false,
            disable_copy: false,
            disable_paste: false,
        }
    }
}

/// The parameters this crate reads (`font-name` is accepted and ignored: the terminal has
/// one font, inside the binary).
pub const PARAMETERS: &[&str] = &[
    "font-name",
    "font-size",
    "color-scheme",
    "scrollback",
    "backspace",
    "read-only",
    "disable-copy",
    "disable-paste",
];

impl TerminalSettings {
    /// The settings given by `get` (a parameter's value by name; an empty value is unset, as
    /// in guacd).
    pub fn from_parameters<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Self, SettingsError> {
        let value = |name: &str| get(name).map(str::trim).filter(|v| !v.is_empty());
        let flag = |name: &'static str| -> Result<bool, SettingsError> {
            match value(name) {
                None | Some("false") => Ok(false),
                Some("true") => Ok(true),
                Some(_) => Err(SettingsError::new(name, "must be true or false")),
            }
        };
        let mut settings = Self::default();
        if let Some(v) = value("font-size") {
            settings.font_size = v
                .parse::<f32>()
                .ok()
                .filter(|s| (1.0..=200.0).contains(s))
                .ok_or_else(|| {
                    SettingsError::new("font-size", "must be a number of points from 1 to 200")
                })?;
        }
        if let Some(v) = value("color-scheme") {
            settings.palette = Palette::from_scheme(v)?;
        }
        if let Some(v) = value("scrollback") {
            settings.scrollback = v
                .parse::<usize>()
                .ok()
                .filter(|s| *s <= MAX_SCROLLBACK)
                .ok_or_else(|| {
                    SettingsError::new("scrollback", "must be a number of rows up to 10000")
                })?;
        }
        if let Some(v) = value("backspace") {
            settings.backspace = v.parse::<u8>().ok().filter(|b| *b < 128).ok_or_else(|| {
                SettingsError::new("backspace", "must be a byte value from 0 to 127")
            })?;
        }
        settings.read_only = flag("read-only")?;
        settings.disable_copy = flag("disable-copy")?;
        settings.disable_paste = flag("disable-paste")?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<TerminalSettings, SettingsError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        TerminalSettings::from_parameters(|name| map.get(name).copied())
    }

    #[test]
    fn guacd_defaults_and_names() {
        assert_eq!(parse(&[]).unwrap(), TerminalSettings::default());
        let s = parse(&[
            ("font-size", "14"),
            ("scrollback", "50"),
            ("backspace", "8"),
            ("read-only", "true"),
            ("disable-copy", "true"),
            ("disable-paste", ""),
            ("color-scheme", "black-white"),
        ])
        .unwrap();
        assert_eq!((s.font_size, s.scrollback, s.backspace), (14.0, 50, 8));
        assert!(s.read_only && s.disable_copy && !s.disable_paste);
    }

    #[test]
    fn bad_values_name_the_parameter_not_the_value() {
        for (name, value) in [
            ("font-size", "0.5"),
            ("font-size", "NaN"),
            ("scrollback", "99999999999"),
            ("backspace", "300"),
            ("read-only", "yes"),
            ("color-scheme", "plaid"),
        ] {
            let error = parse(&[(name, value)]).unwrap_err();
            assert_eq!(error.name, name);
            assert!(!error.to_string().contains(value), "{error}");
        }
    }
}
