//! Typed inputs of the handshake: the user's display settings ([`ClientInfo`]) and the
//! handshake's own limits ([`HandshakeSettings`]).

use std::fmt;
use std::time::Duration;

use zt_guac::Limits;

/// The display settings the user's client gave ztproxy in its own handshake (`size`,
/// `audio`, `video`, `image`, `timezone`, `name`), passed on to guacd.
///
/// This is the only part of a guacd handshake that comes from the user's client; everything
/// in `connect` comes from the session (see [`GuacdHandshake::new`](crate::GuacdHandshake::new)).
///
/// ```
/// let mut info = zt_guacd::ClientInfo::new(1920, 1080, 96);
/// info.timezone = Some("Europe/Paris".to_owned());
/// assert_eq!(info.image_mimetypes, ["image/png", "image/jpeg"]);
/// ```
///
/// `Debug` leaves out the user's name, which is personal data.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// Optimal display width in pixels.
    pub width: u32,
    /// Optimal display height in pixels.
    pub height: u32,
    /// Display resolution in DPI (guacd assumes 96 when a client omits it).
    pub dpi: u32,
    /// Supported audio mimetypes, preferred first (may be empty).
    pub audio_mimetypes: Vec<String>,
    /// Supported video mimetypes, preferred first (may be empty).
    pub video_mimetypes: Vec<String>,
    /// Supported image mimetypes, preferred first.
    pub image_mimetypes: Vec<String>,
    /// IANA time zone (`Europe/Paris`); sent to guacd 1.1 and later.
    pub timezone: Option<String>,
    /// The user's display name; sent to guacd 1.5 and later.
    pub name: Option<String>,
}

impl ClientInfo {
    /// A display of `width` × `height` pixels at `dpi`, PNG and JPEG images, no audio or
    /// video, no time zone or name.
    pub fn new(width: u32, height: u32, dpi: u32) -> Self {
        Self {
            width,
            height,
            dpi,
            audio_mimetypes: Vec::new(),
            video_mimetypes: Vec::new(),
            image_mimetypes: vec!["image/png".to_owned(), "image/jpeg".to_owned()],
            timezone: None,
            name: None,
        }
    }
}

impl fmt::Debug for ClientInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientInfo")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("dpi", &self.dpi)
            .field("audio_mimetypes", &self.audio_mimetypes)
            .field("video_mimetypes", &self.video_mimetypes)
            .field("image_mimetypes", &self.image_mimetypes)
            .field("timezone", &self.timezone)
            .field("name", &self.name.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for ClientInfo {
    /// 1024 × 768 at 96 DPI, guacamole-common-java's defaults
    /// (`GuacamoleClientInformation`).
    fn default() -> Self {
        Self::new(1024, 768, 96)
    }
}

/// Limits and deadline of one handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeSettings {
    /// How long guacd may take from `select` to `ready`, counted from
    /// [`GuacdHandshake::start`](crate::GuacdHandshake::start). Default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]. guacd sends `ready` before it reaches the target, so
    /// this does not include the target's connection time.
    pub timeout: Duration,
    /// Limits on what guacd sends, and on the instructions sent to guacd (guacd enforces
    /// the same on its side). Default [`Limits::default`], guacd's own.
    pub limits: Limits,
    /// Most parameter names accepted in `args`. Default [`DEFAULT_MAX_ARGS`].
    pub max_args: usize,
}

impl Default for HandshakeSettings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            limits: Limits::default(),
            max_args: DEFAULT_MAX_ARGS,
        }
    }
}

impl HandshakeSettings {
    /// The default limits with `timeout`.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            timeout,
            ..Self::default()
        }
    }
}

/// Default [`HandshakeSettings::timeout`]: guacd's own per-phase timeout (`GUACD_TIMEOUT`,
/// `src/guacd/proc.h`).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Default [`HandshakeSettings::max_args`]: guacd's instruction element limit minus the
/// opcode and the version (guacd 1.6's RDP `args` has 88 names).
pub const DEFAULT_MAX_ARGS: usize = zt_guac::GUACD_MAX_ELEMENTS - 2;
