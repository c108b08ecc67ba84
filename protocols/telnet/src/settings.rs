//! A Telnet connection's parameters, with guacd 1.6's names (`shared/fixtures/guacd-1.6/
//! args.txt`), so a gateway can move a session between guacd and the native backend without
//! changing anything.
//!
//! Departures from guacd, each deliberate:
//!
//! * `timeout` bounds the whole login — the TCP connection and the login automation, until
//!   the success regex matches or the last credential is sent — not only the connection, so a
//!   target that never prompts cannot hold a session in its login; and its default is 30 s
//!   (guacd's is 10 s for the connection alone);
//! * `terminal-type` defaults to `xterm-256color`, what the terminal emulates (guacd says
//!   `linux`);
//! * guacd's own recording and typescript parameters (`recording-path`, `typescript-path`,
//!   ...) are accepted and ignored: ztproxy records through the session's `recording`.

use std::time::Duration;

use zt_secret::Secret;
use zt_terminal::{SettingsError, TerminalSettings};

use crate::login::LoginSettings;

/// How long the connection and login may take when `timeout` is unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `timeout` accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The terminal type announced when `terminal-type` is unset.
pub const DEFAULT_TERMINAL_TYPE: &str = "xterm-256color";
/// The longest `username`, `password` or `terminal-type` accepted, in bytes.
const MAX_TEXT: usize = 4096;
/// The longest terminal type RFC 1091 allows (40 characters).
const MAX_TERMINAL_TYPE: usize = 40;

/// What a Telnet connection is configured with. Credentials stay [`Secret`]s.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TelnetSettings {
    /// `username`: typed at the prompt `username-regex` finds. Unset: the user types it.
    pub username: Option<Secret<String>>,
    /// `password`: typed at the prompt `password-regex` finds. Unset: the user types it.
    pub password: Option<Secret<String>>,
    /// The login automation's regexes.
    pub login: LoginSettings,
    /// `terminal-type`: what TERMINAL-TYPE announces.
    pub terminal_type: String,
    /// `timeout`: the longest the connection and the login may take.
    pub timeout: Duration,
    /// The terminal's own parameters (`font-size`, `color-scheme`, `scrollback`,
    /// `backspace`, `read-only`, `disable-copy`, `disable-paste`).
    pub terminal: TerminalSettings,
}

impl TelnetSettings {
    /// The settings given by `get` (a parameter's value by name; an empty value is unset, as
    /// in guacd). Errors name the parameter, never its value.
    pub fn from_parameters<'a>(
        get: impl Fn(&str) -> Option<&'a str> + Copy,
    ) -> Result<Self, SettingsError> {
        let value = |name: &str| get(name).filter(|v| !v.is_empty());
        let secret = |name: &'static str| -> Result<Option<Secret<String>>, SettingsError> {
            match value(name) {
                Some(v) if v.len() > MAX_TEXT => Err(SettingsError::new(name, "is too long")),
                // Typed at a prompt and ended by a carriage return: a line break or another
                // control character inside would type something else.
                Some(v) if v.chars().any(char::is_control) => {
                    Err(SettingsError::new(name, "must not hold control characters"))
                }
                Some(v) => Ok(Some(Secret::new(v.to_owned()))),
                None => Ok(None),
            }
        };
        let timeout = match value("timeout") {
            None => DEFAULT_TIMEOUT,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(0) => DEFAULT_TIMEOUT,
                Ok(s) if Duration::from_secs(s) <= MAX_TIMEOUT => Duration::from_secs(s),
                Ok(_) => return Err(SettingsError::new("timeout", "must be at most 300 seconds")),
                Err(_) => {
                    return Err(SettingsError::new("timeout", "must be a number of seconds"));
                }
            },
        };
        let terminal_type = match value("terminal-type") {
            None => DEFAULT_TERMINAL_TYPE.to_owned(),
            Some(t) if t.len() > MAX_TERMINAL_TYPE => {
                return Err(SettingsError::new("terminal-type", "is too long"));
            }
            Some(t)
                if !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.+/".contains(&b)) =>
            {
                return Err(SettingsError::new(
                    "terminal-type",
                    "must be letters, digits, '-', '_', '.', '+' or '/'",
                ));
            }
            Some(t) => t.to_owned(),
        };
        Ok(Self {
            username: secret("username")?,
            password: secret("password")?,
            login: LoginSettings::from_parameters(get)?,
            terminal_type,
            timeout,
            terminal: TerminalSettings::from_parameters(get)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<TelnetSettings, SettingsError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        TelnetSettings::from_parameters(|name| map.get(name).copied())
    }

    #[test]
    fn defaults_are_guacds_but_for_the_whole_login_timeout_and_the_terminal_type() {
        let s = parse(&[]).unwrap();
        assert!(s.username.is_none() && s.password.is_none());
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.terminal_type, "xterm-256color");
        let s = parse(&[
            ("timeout", "5"),
            ("terminal-type", "vt100"),
            ("username", "a"),
        ])
        .unwrap();
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!(s.terminal_type, "vt100");
        assert_eq!(s.username.unwrap().expose_secret(), "a");
    }

    #[test]
    fn bad_values_name_the_parameter_and_never_show_the_value() {
        for (pairs, name) in [
            (vec![("timeout", "soon")], "timeout"),
            (vec![("timeout", "301")], "timeout"),
            (vec![("terminal-type", "xterm\r\nevil")], "terminal-type"),
            (vec![("password", "pw\revil")], "password"),
            (vec![("username-regex", "(")], "username-regex"),
            (vec![("font-size", "huge")], "font-size"),
        ] {
            let error = parse(&pairs).unwrap_err();
            assert_eq!(error.name, name);
            assert!(!error.to_string().contains("evil"), "{error}");
        }
    }
}
