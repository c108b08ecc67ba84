//! An SSH connection's parameters, with guacd 1.6's names (`shared/fixtures/guacd-1.6/
//! args.txt`, guacamole-server's `src/protocols/ssh/settings.c`), so a gateway can move a
//! session between guacd and the native backend without changing anything.
//!
//! Departures from guacd, each deliberate:
//!
//! * credentials are never asked for in the terminal: `username` and at least one of
//!   `password` and `private-key` are required (a privileged-access system injects them);
//! * `terminal-type` defaults to `xterm-256color`, what the terminal emulates (guacd says
//!   `linux`);
//! * `timeout` bounds the whole login (TCP, key exchange, authentication, the pty), not only
//!   the TCP connect, so a target that stalls cannot hold a session open;
//! * `public-key` is accepted and ignored: the public key is derived from `private-key`;
//! * guacd's own recording and typescript parameters (`recording-path`, `typescript-path`,
//!   ...) are accepted and ignored: ztproxy records through the session's `recording`.

use std::time::Duration;

use zt_secret::Secret;
use zt_terminal::TerminalSettings;

use crate::error::SettingsError;
use crate::hostkey::HostKeyPin;

/// guacd's default connection timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `timeout` accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The terminal type announced when `terminal-type` is unset.
pub const DEFAULT_TERMINAL_TYPE: &str = "xterm-256color";
/// The longest `command`, `locale`, `timezone` or `terminal-type` accepted, in bytes.
const MAX_TEXT: usize = 4096;
/// guacd's parameters for an SFTP login of its own, which SSH sessions do not take.
const SEPARATE_SFTP_LOGIN: &[&str] = &[
    "sftp-hostname",
    "sftp-port",
    "sftp-username",
    "sftp-password",
    "sftp-private-key",
    "sftp-passphrase",
    "sftp-host-key",
];
/// The longest `private-key` accepted, in bytes (an RSA 16384-bit key is about 12 KiB).
const MAX_KEY: usize = 64 * 1024;

/// What an SSH connection is configured with. Credentials stay [`Secret`]s.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SshSettings {
    /// `username`.
    pub username: Secret<String>,
    /// `password`: for `password` authentication, and the answer to keyboard-interactive
    /// prompts that do not echo.
    pub password: Option<Secret<String>>,
    /// `private-key`: an OpenSSH, PKCS#1, PKCS#8 or PuTTY private key, tried first.
    pub private_key: Option<Secret<String>>,
    /// `passphrase`: decrypts `private-key`.
    pub passphrase: Option<Secret<String>>,
    /// `host-key`: the target's pinned key(s); `None` leaves the decision to the proxy's
    /// policy for unpinned targets.
    pub host_key: Option<HostKeyPin>,
    /// `command`: run this instead of a login shell.
    pub command: Option<String>,
    /// `terminal-type`: `TERM` on the target.
    pub terminal_type: String,
    /// `locale`: `LANG` on the target (sshd passes it only if its `AcceptEnv` allows).
    pub locale: Option<String>,
    /// `timezone`: `TZ` on the target; the client's time zone when unset.
    pub timezone: Option<String>,
    /// `server-alive-interval`: send a keep-alive this often (off when unset or 0).
    pub server_alive_interval: Option<Duration>,
    /// `timeout`: the longest the login may take.
    pub timeout: Duration,
    /// The terminal's own parameters (`font-size`, `color-scheme`, `scrollback`,
    /// `backspace`, `read-only`, `disable-copy`, `disable-paste`).
    pub terminal: TerminalSettings,
    /// `enable-sftp` and the `sftp-*` parameters; `None` when SFTP is off.
    pub sftp: Option<SftpSettings>,
}

/// SFTP on the session's connection (`enable-sftp`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SftpSettings {
    /// `sftp-root-directory`: nothing outside it can be listed, read or written. Unset: the
    /// login's home directory (guacd's default is `/`; a jail should be asked for, not
    /// implied, so ztproxy defaults to the narrower one).
    pub root: Option<String>,
    /// `sftp-directory`: where `file` uploads (dropped on the display) go; inside the root.
    /// Unset: the root.
    pub upload_directory: Option<String>,
    /// `sftp-disable-download`.
    pub disable_download: bool,
    /// `sftp-disable-upload`.
    pub disable_upload: bool,
}

impl SshSettings {
    /// The settings given by `get` (a parameter's value by name; an empty value is unset, as
    /// in guacd). Errors name the parameter, never its value.
    pub fn from_parameters<'a>(
        get: impl Fn(&str) -> Option<&'a str> + Copy,
    ) -> Result<Self, SettingsError> {
        let value = |name: &str| get(name).filter(|v| !v.is_empty());
        let text = |name: &'static str| -> Result<Option<String>, SettingsError> {
            match value(name) {
                Some(v) if v.len() > MAX_TEXT => Err(SettingsError::new(name, "is too long")),
                Some(v) if v.chars().any(char::is_control) => {
                    Err(SettingsError::new(name, "must not hold control characters"))
                }
                Some(v) => Ok(Some(v.to_owned())),
                None => Ok(None),
            }
        };
        let secret = |name: &'static str, max: usize| -> Result<Option<Secret<String>>, _> {
            match value(name) {
                Some(v) if v.len() > max => Err(SettingsError::new(name, "is too long")),
                Some(v) => Ok(Some(Secret::new(v.to_owned()))),
                None => Ok(None),
            }
        };
        let seconds = |name: &'static str| -> Result<Option<u64>, SettingsError> {
            value(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| SettingsError::new(name, "must be a number of seconds"))
                })
                .transpose()
        };

        let username = secret("username", MAX_TEXT)?
            .ok_or_else(|| SettingsError::new("username", "is required"))?;
        let password = secret("password", MAX_TEXT)?;
        let private_key = secret("private-key", MAX_KEY)?;
        if password.is_none() && private_key.is_none() {
            return Err(SettingsError::new(
                "password",
                "or private-key is required (credentials are injected, never asked for)",
            ));
        }
        let host_key = value("host-key")
            .map(|v| {
                if v.len() > MAX_KEY {
                    return Err(SettingsError::new("host-key", "is too long"));
                }
                HostKeyPin::parse(v)
            })
            .transpose()?;
        let timeout = match seconds("timeout")? {
            None | Some(0) => DEFAULT_TIMEOUT,
            Some(s) if Duration::from_secs(s) > MAX_TIMEOUT => {
                return Err(SettingsError::new("timeout", "must be at most 300 seconds"));
            }
            Some(s) => Duration::from_secs(s),
        };
        let server_alive_interval = match seconds("server-alive-interval")? {
            None | Some(0) => None,
            Some(s) if s > 3600 => {
                return Err(SettingsError::new(
                    "server-alive-interval",
                    "must be at most 3600 seconds",
                ));
            }
            Some(s) => Some(Duration::from_secs(s)),
        };
        let terminal_type = text("terminal-type")?;
        if terminal_type.as_ref().is_some_and(|t| {
            !t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
        }) {
            return Err(SettingsError::new(
                "terminal-type",
                "must be letters, digits, '-', '_', '.' or '+'",
            ));
        }
        let terminal = TerminalSettings::from_parameters(get)?;
        let flag = |name: &'static str| -> Result<bool, SettingsError> {
            match value(name) {
                None | Some("false") => Ok(false),
                Some("true") => Ok(true),
                Some(_) => Err(SettingsError::new(name, "must be \"true\" or \"false\"")),
            }
        };
        let server_path = |name: &'static str| -> Result<Option<String>, SettingsError> {
            let path = text(name)?;
            if path.as_ref().is_some_and(|p| !p.starts_with('/')) {
                return Err(SettingsError::new(name, "must be an absolute path"));
            }
            Ok(path)
        };
        let sftp = if flag("enable-sftp")? {
            // A separate SFTP connection (guacd's `sftp-hostname`, `sftp-username`, ... for
            // RDP and VNC) is not offered for SSH: SFTP runs on the session's own login.
            for name in SEPARATE_SFTP_LOGIN {
                if value(name).is_some() {
                    return Err(SettingsError::new(
                        name,
                        "is not supported for ssh: SFTP uses the session's own connection",
                    ));
                }
            }
            Some(SftpSettings {
                root: server_path("sftp-root-directory")?,
                upload_directory: server_path("sftp-directory")?,
                disable_download: flag("sftp-disable-download")?,
                disable_upload: flag("sftp-disable-upload")?,
            })
        } else {
            None
        };
        Ok(Self {
            username,
            password,
            private_key,
            passphrase: secret("passphrase", MAX_TEXT)?,
            host_key,
            command: text("command")?,
            terminal_type: terminal_type.unwrap_or_else(|| DEFAULT_TERMINAL_TYPE.to_owned()),
            locale: text("locale")?,
            timezone: text("timezone")?,
            server_alive_interval,
            timeout,
            terminal,
            sftp,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<SshSettings, SettingsError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        SshSettings::from_parameters(|name| map.get(name).copied())
    }

    #[test]
    fn guacd_names_and_defaults() {
        let s = parse(&[
            ("username", "alice"),
            ("password", "secret"),
            ("command", "top"),
            ("locale", "en_GB.UTF-8"),
            ("timezone", ""),
            ("server-alive-interval", "30"),
            ("font-size", "14"),
            ("read-only", "true"),
        ])
        .unwrap();
        assert_eq!(s.username.expose_secret(), "alice");
        assert_eq!(s.password.as_ref().unwrap().expose_secret(), "secret");
        assert!(s.private_key.is_none() && s.host_key.is_none() && s.timezone.is_none());
        assert_eq!(s.command.as_deref(), Some("top"));
        assert_eq!(s.terminal_type, "xterm-256color");
        assert_eq!(s.locale.as_deref(), Some("en_GB.UTF-8"));
        assert_eq!(s.server_alive_interval, Some(Duration::from_secs(30)));
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.terminal.font_size, 14.0);
        assert!(s.terminal.read_only);
    }

    #[test]
    fn credentials_are_required() {
        assert_eq!(parse(&[("password", "x")]).unwrap_err().name, "username");
        assert_eq!(parse(&[("username", "a")]).unwrap_err().name, "password");
        assert!(parse(&[("username", "a"), ("private-key", "k")]).is_ok());
    }

    #[test]
    fn bad_values_name_the_parameter_never_the_value() {
        for (name, value) in [
            ("timeout", "soon"),
            ("timeout", "100000"),
            ("server-alive-interval", "-1"),
            ("terminal-type", "xterm\nEVIL"),
            ("terminal-type", "xterm 256"),
            ("command", "ls\u{7}"),
            ("locale", &"x".repeat(5000)),
            ("host-key", "zzz-garbage"),
            ("font-size", "huge"),
        ] {
            let error = parse(&[("username", "a"), ("password", "p"), (name, value)]).unwrap_err();
            assert_eq!(error.name, name, "{name}={value:?}");
            assert!(!error.to_string().contains(value), "{error}");
        }
    }

    #[test]
    fn sftp_is_off_unless_enabled_and_takes_guacds_names() {
        let login = [("username", "a"), ("password", "p")];
        assert!(parse(&login).unwrap().sftp.is_none());
        let mut pairs = login.to_vec();
        pairs.extend([
            ("enable-sftp", "true"),
            ("sftp-root-directory", "/srv/x"),
            ("sftp-directory", "/srv/x/in"),
            ("sftp-disable-upload", "true"),
        ]);
        let sftp = parse(&pairs).unwrap().sftp.unwrap();
        assert_eq!(sftp.root.as_deref(), Some("/srv/x"));
        assert_eq!(sftp.upload_directory.as_deref(), Some("/srv/x/in"));
        assert!(sftp.disable_upload && !sftp.disable_download);
        for (name, value) in [
            ("sftp-root-directory", "relative/path"),
            ("sftp-root-directory", "/a\nb"),
            ("sftp-disable-download", "yes"),
            ("sftp-hostname", "elsewhere"),
            ("enable-sftp", "1"),
        ] {
            let mut pairs = login.to_vec();
            pairs.extend([("enable-sftp", "true"), (name, value)]);
            if name == "enable-sftp" {
                pairs.retain(|(n, v)| *n != "enable-sftp" || *v == value);
            }
            assert_eq!(parse(&pairs).unwrap_err().name, name, "{name}={value}");
        }
    }

    #[test]
    fn debug_shows_no_credential() {
        let s = parse(&[
            ("username", "alice-user"),
            ("password", "hunter2-pw"),
            ("private-key", "KEYMATERIAL"),
            ("passphrase", "open-sesame"),
        ])
        .unwrap();
        let debug = format!("{s:?}");
        for secret in ["alice-user", "hunter2-pw", "KEYMATERIAL", "open-sesame"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }
}
