//! Wire forms of the client side of the handshake: the protocol version in `args` and
//! `connect` ([`ProtocolVersion`]), and the instructions ztproxy sends, checked against the
//! limits guacd enforces before they leave.
//!
//! Reference: <https://guacamole.apache.org/doc/gug/guacamole-protocol.html#handshake-phase>.

use std::fmt;

use bytes::BytesMut;
use zt_guac::{InstructionWriter, Limits};

use crate::error::Error;
use crate::settings::ClientInfo;

/// A Guacamole protocol version, `VERSION_X_Y_Z` on the wire.
///
/// guacd 1.1 and later put their version first in `args`; the client answers, first in
/// `connect`, with the highest version both support, and that version decides which
/// handshake instructions guacd accepts. guacd 1.5 and 1.6 both announce
/// [`ProtocolVersion::V1_5_0`].
///
/// ```
/// use zt_guacd::ProtocolVersion;
/// let v = ProtocolVersion::parse("VERSION_1_3_0").unwrap();
/// assert_eq!(v, ProtocolVersion::V1_3_0);
/// assert!(v.supports_timezone() && !v.supports_name());
/// assert_eq!(v.min(ProtocolVersion::LATEST).to_string(), "VERSION_1_3_0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolVersion {
    major: u16,
    minor: u16,
    patch: u16,
}

impl ProtocolVersion {
    /// 1.0.0 and older: no version in `args`; `size`, `audio`, `video`, `image` in that
    /// order, then `connect`.
    pub const V1_0_0: Self = Self::new(1, 0, 0);
    /// 1.1.0: version negotiation, handshake instructions in any order, `timezone`.
    pub const V1_1_0: Self = Self::new(1, 1, 0);
    /// 1.3.0: the `required` instruction.
    pub const V1_3_0: Self = Self::new(1, 3, 0);
    /// 1.5.0: the `msg` instruction and the `name` handshake instruction.
    pub const V1_5_0: Self = Self::new(1, 5, 0);
    /// The newest version this crate speaks.
    pub const LATEST: Self = Self::V1_5_0;

    /// Version `major.minor.patch`.
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses `VERSION_X_Y_Z` (each part 1 to 5 decimal digits); `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.strip_prefix(VERSION_PREFIX)?.split('_');
        let mut next = || -> Option<u16> {
            let part = parts.next()?;
            if part.is_empty() || part.len() > 5 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let version = Self::new(next()?, next()?, next()?);
        parts.next().is_none().then_some(version)
    }

    /// Whether a handshake at this version may carry `timezone`.
    pub fn supports_timezone(self) -> bool {
        self >= Self::V1_1_0
    }

    /// Whether a handshake at this version may carry `name`.
    pub fn supports_name(self) -> bool {
        self >= Self::V1_5_0
    }

    /// Whether guacd at this version may send `required` to ask for missing parameters.
    pub fn supports_required(self) -> bool {
        self >= Self::V1_3_0
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERSION_PREFIX}{}_{}_{}",
            self.major, self.minor, self.patch
        )
    }
}

/// Whether the first element of `args` is meant as a version (parameter names never start
/// with this prefix).
pub(crate) fn is_version_element(element: &str) -> bool {
    element.starts_with(VERSION_PREFIX)
}

/// Appends `select <identifier>`.
pub(crate) fn encode_select(identifier: &str, out: &mut BytesMut) {
    zt_guac::encode(zt_guac::opcode::SELECT, &[identifier], out);
}

/// Appends the client's handshake instructions for a guacd at `version`, in the order the
/// protocol reference documents: `size`, `audio`, `video`, `image`, then `timezone` (1.1+)
/// and `name` (1.5+) when known. Fails before writing anything if one would break `limits`.
pub(crate) fn encode_client_info(
    version: ProtocolVersion,
    info: &ClientInfo,
    limits: &Limits,
    out: &mut BytesMut,
) -> Result<(), Error> {
    let size = [
        info.width.to_string(),
        info.height.to_string(),
        info.dpi.to_string(),
    ];
    let timezone = info
        .timezone
        .as_deref()
        .filter(|_| version.supports_timezone());
    let name = info.name.as_deref().filter(|_| version.supports_name());
    let within_limits = fits(
        limits,
        zt_guac::opcode::SIZE,
        size.iter().map(String::as_str),
    ) && fits(
        limits,
        zt_guac::opcode::AUDIO,
        info.audio_mimetypes.iter().map(String::as_str),
    ) && fits(
        limits,
        zt_guac::opcode::VIDEO,
        info.video_mimetypes.iter().map(String::as_str),
    ) && fits(
        limits,
        zt_guac::opcode::IMAGE,
        info.image_mimetypes.iter().map(String::as_str),
    ) && timezone
        .is_none_or(|t| fits(limits, zt_guac::opcode::TIMEZONE, [t].into_iter()))
        && name.is_none_or(|n| fits(limits, zt_guac::opcode::NAME, [n].into_iter()));
    if !within_limits {
        return Err(Error::ClientInfoTooLarge);
    }
    zt_guac::encode(zt_guac::opcode::SIZE, &size, out);
    zt_guac::encode(zt_guac::opcode::AUDIO, &info.audio_mimetypes, out);
    zt_guac::encode(zt_guac::opcode::VIDEO, &info.video_mimetypes, out);
    zt_guac::encode(zt_guac::opcode::IMAGE, &info.image_mimetypes, out);
    if let Some(timezone) = timezone {
        zt_guac::encode(zt_guac::opcode::TIMEZONE, &[timezone], out);
    }
    if let Some(name) = name {
        zt_guac::encode(zt_guac::opcode::NAME, &[name], out);
    }
    Ok(())
}

/// Appends `connect` with `values` (`(parameter name, value)`, in guacd's `args` order).
/// Fails before writing anything if a value or the whole instruction breaks `limits`; the
/// error names the parameter, never its value.
pub(crate) fn encode_connect(
    values: &[(&str, &str)],
    limits: &Limits,
    out: &mut BytesMut,
) -> Result<(), Error> {
    if let Some((name, _)) = values
        .iter()
        .find(|(_, value)| chars(value) > limits.max_element_chars)
    {
        return Err(Error::ParameterTooLong {
            name: (*name).to_owned(),
        });
    }
    if !fits(
        limits,
        zt_guac::opcode::CONNECT,
        values.iter().map(|(_, value)| *value),
    ) {
        return Err(Error::ConnectTooLarge);
    }
    let mut w = InstructionWriter::new(out, zt_guac::opcode::CONNECT);
    for (_, value) in values {
        w.arg(value);
    }
    w.finish();
    Ok(())
}

/// Whether `opcode` with `args` stays within `limits` once encoded.
fn fits<'a>(limits: &Limits, opcode: &str, args: impl Iterator<Item = &'a str>) -> bool {
    let mut elements = 1usize;
    let mut bytes = element_len(opcode);
    for arg in args {
        let len = chars(arg);
        if len > limits.max_element_chars {
            return false;
        }
        elements += 1;
        bytes = bytes.saturating_add(element_len(arg));
    }
    elements <= limits.max_elements && bytes <= limits.max_instruction_bytes
}

/// Bytes of `LEN.VALUE` plus its separator.
fn element_len(value: &str) -> usize {
    let len = chars(value);
    let digits = len.checked_ilog10().map_or(1, |d| d as usize + 1);
    digits + 1 + value.len() + 1
}

/// Length in Unicode scalar values, as the protocol counts.
fn chars(value: &str) -> usize {
    if value.is_ascii() {
        value.len()
    } else {
        value.chars().count()
    }
}

/// Prefix of the version element.
const VERSION_PREFIX: &str = "VERSION_";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_well_formed_versions() {
        assert_eq!(
            ProtocolVersion::parse("VERSION_1_5_0"),
            Some(ProtocolVersion::V1_5_0)
        );
        assert_eq!(
            ProtocolVersion::parse("VERSION_12_0_3"),
            Some(ProtocolVersion::new(12, 0, 3))
        );
        for bad in [
            "VERSION_1_5",
            "VERSION_1_5_0_0",
            "VERSION_1__0",
            "VERSION_a_5_0",
            "VERSION_1_5_-0",
            "VERSION_123456_0_0",
            "VERSION_1_5_0 ",
            "version_1_5_0",
            "hostname",
            "",
        ] {
            assert_eq!(ProtocolVersion::parse(bad), None, "{bad:?}");
        }
        assert!(is_version_element("VERSION_x"));
        assert!(!is_version_element("hostname"));
    }

    #[test]
    fn versions_order_and_display() {
        assert!(ProtocolVersion::V1_0_0 < ProtocolVersion::V1_1_0);
        assert!(ProtocolVersion::new(1, 10, 0) > ProtocolVersion::V1_5_0);
        assert!(ProtocolVersion::new(2, 0, 0) > ProtocolVersion::new(1, 99, 99));
        assert_eq!(ProtocolVersion::V1_1_0.to_string(), "VERSION_1_1_0");
        assert!(!ProtocolVersion::V1_0_0.supports_timezone());
        assert!(ProtocolVersion::V1_3_0.supports_required());
        assert!(ProtocolVersion::V1_5_0.supports_name());
    }

    #[test]
    fn fits_counts_like_the_decoder() {
        let limits = Limits::default();
        // `4.size,1.0,4.1024,3.768;` is 24 bytes.
        let mut out = BytesMut::new();
        zt_guac::encode("size", &["0", "1024", "768"], &mut out);
        let mut tight = limits;
        tight.max_instruction_bytes = out.len();
        assert!(fits(&tight, "size", ["0", "1024", "768"].into_iter()));
        tight.max_instruction_bytes = out.len() - 1;
        assert!(!fits(&tight, "size", ["0", "1024", "768"].into_iter()));
        let mut few = limits;
        few.max_elements = 3;
        assert!(!fits(&few, "size", ["0", "1024", "768"].into_iter()));
        // Characters, not bytes.
        let mut short = limits;
        short.max_element_chars = 2;
        assert!(fits(&short, "x", ["éé"].into_iter()));
        assert!(!fits(&short, "x", ["ééé"].into_iter()));
    }
}
