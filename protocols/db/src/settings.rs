//! A database console's parameters: the names Keeper's connection manager gives its
//! consoles (`username`, `password`, `database`, `disable-csv-export`, `disable-csv-import`)
//! and the terminal's.
//!
//! Departures, each deliberate:
//!
//! * CSV export and import are refused unless the session allows them
//!   (`disable-csv-export` / `disable-csv-import` given as `false`): the record's "Can export
//!   CSV" and "Can import CSV" are off unless set, and a missing parameter is not a grant;
//! * credentials are never asked for in the terminal: `username` is required (a
//!   privileged-access system injects it, and the password);
//! * `timeout` (default 10 s) bounds the connection and the login;
//! * `ssl-mode` (`disable`, `prefer`, the default, or `require`) and `server-certificate`
//!   (SHA-256 pins of the server's certificate; a pin makes TLS required) are ztproxy's own,
//!   libpq's and SSH's `host-key` ideas: see [`crate::tls`].

use std::time::Duration;

use zt_secret::Secret;
use zt_terminal::{SettingsError, TerminalSettings};

/// How long the connection and login may take when `timeout` is unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `timeout` accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest `username`, `password` or `database` accepted, in bytes.
const MAX_TEXT: usize = 1024;

/// What a database console is configured with. Credentials stay [`Secret`]s.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DbSettings {
    /// `username`.
    pub username: Secret<String>,
    /// `password`.
    pub password: Option<Secret<String>>,
    /// `database`: the default database (the server's default for the user when unset).
    pub database: Option<String>,
    /// Whether `\copy ... to` (PostgreSQL) and `select ... into local outfile` (MySQL) may
    /// send a result to the user as a CSV file.
    pub csv_export: bool,
    /// Whether `\copy ... from` and `load data local infile` may take a CSV file from the
    /// user.
    pub csv_import: bool,
    /// `timeout`: the longest the connection and the login may take.
    pub timeout: Duration,
    /// `ssl-mode`: whether the connection uses TLS.
    pub ssl_mode: SslMode,
    /// `server-certificate`: the SHA-256s of the certificates the server may present (empty:
    /// any).
    pub pins: Vec<crate::tls::Fingerprint>,
    /// The pinned certificates themselves (DER), when `server-certificate` gave them (PEM).
    pub certificates: Vec<Vec<u8>>,
    /// The terminal's own parameters.
    pub terminal: TerminalSettings,
}

/// `ssl-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it (the default; required when a pin is given).
    Prefer,
    /// TLS, or no connection.
    Require,
}

impl DbSettings {
    /// The settings given by `get` (a parameter's value by name; an empty value is unset).
    /// Errors name the parameter, never its value.
    pub fn from_parameters<'a>(
        get: impl Fn(&str) -> Option<&'a str> + Copy,
    ) -> Result<Self, SettingsError> {
        let value = |name: &str| get(name).filter(|v| !v.is_empty());
        let text = |name: &'static str| -> Result<Option<&'a str>, SettingsError> {
            match value(name) {
                Some(v) if v.len() > MAX_TEXT => Err(SettingsError::new(name, "is too long")),
                Some(v) if v.contains('\0') => {
                    Err(SettingsError::new(name, "must not hold a NUL character"))
                }
                v => Ok(v),
            }
        };
        let allowed = |name: &'static str| -> Result<bool, SettingsError> {
            match value(name) {
                // Not given: not allowed (see the module docs).
                None | Some("true") => Ok(false),
                Some("false") => Ok(true),
                Some(_) => Err(SettingsError::new(name, "must be \"true\" or \"false\"")),
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
        let pinned = match value("server-certificate") {
            None => crate::tls::Pinned::default(),
            Some(v) if v.len() > 64 * 1024 => {
                return Err(SettingsError::new("server-certificate", "is too long"));
            }
            Some(v) => crate::tls::parse_server_certificate(v)
                .map_err(|reason| SettingsError::new("server-certificate", reason))?,
        };
        let pins = pinned.fingerprints;
        let ssl_mode = match value("ssl-mode") {
            None | Some("prefer") if !pins.is_empty() => SslMode::Require,
            None | Some("prefer") => SslMode::Prefer,
            Some("require") => SslMode::Require,
            Some("disable") if pins.is_empty() => SslMode::Disable,
            Some("disable") => {
                return Err(SettingsError::new(
                    "ssl-mode",
                    "cannot be \"disable\" with a server-certificate pin",
                ));
            }
            Some(_) => {
                return Err(SettingsError::new(
                    "ssl-mode",
                    "must be \"disable\", \"prefer\" or \"require\"",
                ));
            }
        };
        Ok(Self {
            username: text("username")?
                .map(|v| Secret::new(v.to_owned()))
                .ok_or_else(|| {
                    SettingsError::new(
                        "username",
                        "is required (credentials are injected, never asked for)",
                    )
                })?,
            password: text("password")?.map(|v| Secret::new(v.to_owned())),
            database: text("database")?.map(str::to_owned),
            csv_export: allowed("disable-csv-export")?,
            csv_import: allowed("disable-csv-import")?,
            timeout,
            ssl_mode,
            pins,
            certificates: pinned.certificates,
            terminal: TerminalSettings::from_parameters(get)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<DbSettings, SettingsError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        DbSettings::from_parameters(|name| map.get(name).copied())
    }

    #[test]
    fn csv_is_refused_unless_allowed_and_the_username_is_required() {
        let s = parse(&[("username", "u")]).unwrap();
        assert!(!s.csv_export && !s.csv_import);
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        let s = parse(&[
            ("username", "u"),
            ("disable-csv-export", "false"),
            ("disable-csv-import", "true"),
            ("database", "shop"),
        ])
        .unwrap();
        assert!(s.csv_export && !s.csv_import);
        assert_eq!(s.database.as_deref(), Some("shop"));
        assert_eq!(parse(&[]).unwrap_err().name, "username");
        let error = parse(&[("username", "u"), ("password", "evil\0")]).unwrap_err();
        assert_eq!(error.name, "password");
        assert!(!error.to_string().contains("evil"));
    }

    #[test]
    fn a_pin_makes_tls_required() {
        assert_eq!(
            parse(&[("username", "u")]).unwrap().ssl_mode,
            SslMode::Prefer
        );
        let pin = "ab".repeat(32);
        let s = parse(&[("username", "u"), ("server-certificate", &pin)]).unwrap();
        assert_eq!((s.ssl_mode, s.pins.len()), (SslMode::Require, 1));
        let error = parse(&[
            ("username", "u"),
            ("server-certificate", &pin),
            ("ssl-mode", "disable"),
        ])
        .unwrap_err();
        assert_eq!(error.name, "ssl-mode");
        assert_eq!(
            parse(&[("username", "u"), ("server-certificate", "nope")])
                .unwrap_err()
                .name,
            "server-certificate"
        );
    }
}
