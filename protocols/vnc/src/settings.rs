//! A VNC session's settings, from its connection parameters (guacd 1.6's names).
//!
//! | parameter | meaning here |
//! | --- | --- |
//! | `password` | VNC authentication's password. Without one, the session may use "None" security, and only then |
//! | `read-only` | keys, pointer and clipboard from the user are dropped |
//! | `disable-display-resize` | the client's size is never asked of the server |
//! | `encodings` | space-separated, most preferred first; of guacd's names `zrle`, `tight`, `copyrect` and `raw` are decoded, the others (`hextile`, `ultra`, `zlib`, `corre`, `rre`) skipped; default: ZRLE, Tight, CopyRect, Raw |
//! | `swap-red-blue` | red and blue swapped, for servers that send them the wrong way round |
//! | `color-depth` | 8, 16, 24 or 32; accepted, and the desktop is always read at 24 bits (see below) |
//! | `cursor` | `local` (default: the client draws the server's cursor image) or `remote` (the server draws it into the desktop) |
//! | `clipboard-encoding` | `ISO8859-1` (default, RFB's own), `UTF-8`, `UTF-16` or `CP1252`: how the server's cut text is read and the user's written |
//! | `force-lossless` | images are PNG only |
//! | `compress-level`, `quality-level` | 0–9, checked; not sent to the server (Tight's JPEG is not decoded, and asking for a quality level makes TigerVNC send it) |
//! | `autoretry` | connection attempts after the first, at one second intervals (at most 10) |
//! | `dest-host`, `dest-port`, `reverse-connect`, `enable-audio`, `enable-sftp` | refused: a repeater, a listening connection, PulseAudio and SFTP beside VNC need guacd (`"route": "guacd"`) |
//!
//! `color-depth` below 24 would save bandwidth between ztproxy and the target only; the
//! client always receives PNG or JPEG images, so the desktop is read in true colour.

use std::time::Duration;

use zt_secret::Secret;

use crate::rfb::{ENCODING_COPY_RECT, ENCODING_RAW, ENCODING_TIGHT, ENCODING_ZRLE};

/// The longest password (VNC authentication uses 8 characters; guacd takes any).
const MAX_PASSWORD: usize = 1024;
/// The most connection attempts after the first.
const MAX_RETRIES: u32 = 10;

/// A parameter that could not be used: its name, and why (never its value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} {reason}")]
pub struct SettingsError {
    /// The parameter's name.
    pub name: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SettingsError {
    fn new(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            reason: reason.into(),
        }
    }
}

/// Where the cursor is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorMode {
    /// The client draws it (the Cursor pseudo-encoding).
    Local,
    /// The server draws it into the desktop.
    Remote,
}

/// How RFB's cut text is read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipboardEncoding {
    /// ISO 8859-1 (RFB's own).
    Latin1,
    /// UTF-8.
    Utf8,
    /// UTF-16 (little-endian, as guacd writes it).
    Utf16,
    /// Windows code page 1252.
    Cp1252,
}

impl ClipboardEncoding {
    /// The server's cut text as text.
    pub fn decode(self, bytes: &[u8]) -> String {
        match self {
            Self::Latin1 => bytes.iter().map(|&b| char::from(b)).collect(),
            Self::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            Self::Utf16 => {
                let units: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
                    .collect();
                String::from_utf16_lossy(&units)
            }
            Self::Cp1252 => bytes.iter().map(|&b| cp1252_char(b)).collect(),
        }
    }

    /// Text as the server's cut text (a character it cannot hold becomes `?`).
    pub fn encode(self, text: &str) -> Vec<u8> {
        match self {
            Self::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect(),
            Self::Utf8 => text.as_bytes().to_vec(),
            Self::Utf16 => text.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            Self::Cp1252 => text
                .chars()
                .map(|c| (0..=255u8).find(|&b| cp1252_char(b) == c).unwrap_or(b'?'))
                .collect(),
        }
    }
}

/// Windows-1252: Latin-1 except 0x80–0x9F.
fn cp1252_char(byte: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    match byte {
        0x80..=0x9F => HIGH[usize::from(byte - 0x80)],
        _ => char::from(byte),
    }
}

/// A VNC session's settings.
#[derive(Debug, Clone)]
pub struct VncSettings {
    /// VNC authentication's password.
    pub password: Option<Secret<String>>,
    /// Input from the user is dropped.
    pub read_only: bool,
    /// The client's size is never asked of the server.
    pub disable_display_resize: bool,
    /// The encodings to ask for, most preferred first (pseudo-encodings are added).
    pub encodings: Vec<i32>,
    /// Red and blue swapped.
    pub swap_red_blue: bool,
    /// `color-depth` as given (24 when unset).
    pub color_depth: u8,
    /// Where the cursor is drawn.
    pub cursor: CursorMode,
    /// How cut text is read and written.
    pub clipboard_encoding: ClipboardEncoding,
    /// Images are PNG only.
    pub force_lossless: bool,
    /// Clipboard transfers to the server are dropped (`disable-paste`).
    pub disable_paste: bool,
    /// The server's clipboard is not sent to the user (`disable-copy`).
    pub disable_copy: bool,
    /// Connection attempts after the first.
    pub retries: u32,
    /// How long the connection and the login may take.
    pub timeout: Duration,
}

impl VncSettings {
    /// The settings given by `get` (a parameter's value by name; an empty value is unset, as
    /// in guacd). Errors name the parameter, never its value.
    pub fn from_parameters<'a>(
        get: impl Fn(&str) -> Option<&'a str> + Copy,
    ) -> Result<Self, SettingsError> {
        let value = |name: &str| get(name).map(str::trim).filter(|v| !v.is_empty());
        let flag = |name: &'static str| -> Result<bool, SettingsError> {
            match value(name) {
                None | Some("false") => Ok(false),
                Some("true") => Ok(true),
                Some(_) => Err(SettingsError::new(name, "must be true or false")),
            }
        };
        let level = |name: &'static str| -> Result<Option<u8>, SettingsError> {
            match value(name) {
                None => Ok(None),
                Some(v) => match v.parse::<u8>() {
                    Ok(n) if n <= 9 => Ok(Some(n)),
                    _ => Err(SettingsError::new(name, "must be a number from 0 to 9")),
                },
            }
        };
        for name in [
            "dest-host",
            "dest-port",
            "reverse-connect",
            "enable-audio",
            "enable-sftp",
        ] {
            let set = match value(name) {
                None | Some("false") => false,
                Some(_) => true,
            };
            if set {
                return Err(SettingsError::new(
                    name,
                    "is not supported by the native VNC client; ask for route \"guacd\"",
                ));
            }
        }
        let password = match get("password").filter(|v| !v.is_empty()) {
            Some(v) if v.len() > MAX_PASSWORD => {
                return Err(SettingsError::new("password", "is too long"));
            }
            Some(v) => Some(Secret::new(v.to_owned())),
            None => None,
        };
        let encodings = match value("encodings") {
            None => vec![
                ENCODING_ZRLE,
                ENCODING_TIGHT,
                ENCODING_COPY_RECT,
                ENCODING_RAW,
            ],
            Some(list) => {
                let mut encodings = Vec::new();
                for name in list.split_whitespace() {
                    let encoding = match name.to_ascii_lowercase().as_str() {
                        "zrle" => Some(ENCODING_ZRLE),
                        "tight" => Some(ENCODING_TIGHT),
                        "copyrect" => Some(ENCODING_COPY_RECT),
                        "raw" => Some(ENCODING_RAW),
                        "hextile" | "ultra" | "zlib" | "corre" | "rre" | "zywrle" | "trle" => None,
                        _ => {
                            return Err(SettingsError::new(
                                "encodings",
                                "names an encoding VNC does not have",
                            ));
                        }
                    };
                    if let Some(e) = encoding
                        && !encodings.contains(&e)
                    {
                        encodings.push(e);
                    }
                }
                // Every RFB client takes Raw.
                if !encodings.contains(&ENCODING_RAW) {
                    encodings.push(ENCODING_RAW);
                }
                encodings
            }
        };
        let color_depth = match value("color-depth") {
            None => 24,
            Some(v) => match v.parse::<u8>() {
                Ok(d @ (8 | 16 | 24 | 32)) => d,
                _ => return Err(SettingsError::new("color-depth", "must be 8, 16, 24 or 32")),
            },
        };
        let cursor = match value("cursor") {
            None | Some("local") => CursorMode::Local,
            Some("remote") => CursorMode::Remote,
            Some(_) => return Err(SettingsError::new("cursor", "must be local or remote")),
        };
        let clipboard_encoding = match value("clipboard-encoding").map(str::to_ascii_uppercase) {
            None => ClipboardEncoding::Latin1,
            Some(v) => match v.as_str() {
                "ISO8859-1" => ClipboardEncoding::Latin1,
                "UTF-8" => ClipboardEncoding::Utf8,
                "UTF-16" => ClipboardEncoding::Utf16,
                "CP1252" => ClipboardEncoding::Cp1252,
                _ => {
                    return Err(SettingsError::new(
                        "clipboard-encoding",
                        "must be ISO8859-1, UTF-8, UTF-16 or CP1252",
                    ));
                }
            },
        };
        level("compress-level")?;
        level("quality-level")?;
        let retries = match value("autoretry") {
            None => 0,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n <= MAX_RETRIES => n,
                _ => {
                    return Err(SettingsError::new(
                        "autoretry",
                        format!("must be a number from 0 to {MAX_RETRIES}"),
                    ));
                }
            },
        };
        Ok(Self {
            password,
            read_only: flag("read-only")?,
            disable_display_resize: flag("disable-display-resize")?,
            encodings,
            swap_red_blue: flag("swap-red-blue")?,
            color_depth,
            cursor,
            clipboard_encoding,
            force_lossless: flag("force-lossless")?,
            disable_paste: flag("disable-paste")?,
            disable_copy: flag("disable-copy")?,
            retries,
            timeout: Duration::from_secs(15),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<VncSettings, SettingsError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        VncSettings::from_parameters(|name| map.get(name).copied())
    }

    #[test]
    fn guacd_names_are_read_and_errors_name_the_parameter() {
        let s = settings(&[
            ("password", "pw"),
            ("encodings", "hextile tight raw"),
            ("cursor", "remote"),
            ("clipboard-encoding", "utf-8"),
            ("read-only", "true"),
        ])
        .unwrap();
        assert_eq!(s.encodings, [ENCODING_TIGHT, ENCODING_RAW]);
        assert_eq!(s.cursor, CursorMode::Remote);
        assert_eq!(s.clipboard_encoding, ClipboardEncoding::Utf8);
        assert!(s.read_only);
        for (pair, name) in [
            (("encodings", "jpeg2000"), "encodings"),
            (("color-depth", "12"), "color-depth"),
            (("dest-host", "repeater"), "dest-host"),
            (("quality-level", "10"), "quality-level"),
            (("read-only", "yes"), "read-only"),
        ] {
            assert_eq!(settings(&[pair]).unwrap_err().name, name);
        }
        let error = settings(&[("password", &"x".repeat(2000))]).unwrap_err();
        assert!(!error.to_string().contains("xxxx"));
    }

    #[test]
    fn clipboard_encodings_round_trip_what_they_can_hold() {
        for encoding in [
            ClipboardEncoding::Latin1,
            ClipboardEncoding::Utf8,
            ClipboardEncoding::Utf16,
            ClipboardEncoding::Cp1252,
        ] {
            assert_eq!(encoding.decode(&encoding.encode("Grüße")), "Grüße");
        }
        assert_eq!(ClipboardEncoding::Latin1.encode("€1"), b"?1");
        assert_eq!(ClipboardEncoding::Cp1252.encode("€1"), [0x80, b'1']);
        assert_eq!(ClipboardEncoding::Utf8.decode(&[0xff, b'a']), "\u{fffd}a");
    }
}
