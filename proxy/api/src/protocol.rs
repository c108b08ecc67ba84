//! The protocols a connection speaks, and their parameters: [`Protocol`],
//! [`ConnectionParameters`].
//!
//! A connection's parameters keep guacd 1.6's names, so a gateway can move a session between
//! guacd and a native backend without changing anything else. Each protocol accepts exactly
//! the names guacd 1.6 lists in its `args` for it (`shared/fixtures/guacd-1.6/args.txt`),
//! except `hostname` and `port` (the session's `target` is the only place for those), plus the
//! parameters ztproxy enforces itself ([`ZTPROXY_PARAMETERS`]). The database consoles, which
//! guacd does not have, take the names Keeper's connection manager gives them
//! ([`DATABASE`]). A name the protocol does not
//! have, or a value its kind cannot take, is refused when the session is created, with the
//! parameter's name (never its value) in the error, as unknown JSON fields are.
//!
//! Values stay [`Secret`]s: the kinds here only say what a value must look like.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Secret;
use crate::control::{ApiError, ErrorCode};

/// What an interactive connection speaks to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Protocol {
    /// Remote Desktop Protocol (through guacd).
    Rdp,
    /// VNC.
    Vnc,
    /// SSH.
    Ssh,
    /// Telnet.
    Telnet,
    /// A Kubernetes pod's container: exec or attach through the API server.
    Kubernetes,
    /// A web application in a remote browser (Keeper's `http`, native only).
    Http,
    /// A PostgreSQL console (native only).
    Postgresql,
    /// A MySQL or MariaDB console (native only).
    Mysql,
    /// A SQL Server console (native only).
    Sqlserver,
}

impl Protocol {
    /// Every protocol, in the order errors list them.
    pub const ALL: [Self; 9] = [
        Self::Rdp,
        Self::Vnc,
        Self::Ssh,
        Self::Telnet,
        Self::Kubernetes,
        Self::Http,
        Self::Postgresql,
        Self::Mysql,
        Self::Sqlserver,
    ];

    /// The protocols guacd 1.6 serves.
    pub const GUACD: [Self; 5] = [
        Self::Rdp,
        Self::Vnc,
        Self::Ssh,
        Self::Telnet,
        Self::Kubernetes,
    ];

    /// The wire name (`rdp`), as guacd's `select` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rdp => "rdp",
            Self::Vnc => "vnc",
            Self::Ssh => "ssh",
            Self::Telnet => "telnet",
            Self::Kubernetes => "kubernetes",
            Self::Http => "http",
            Self::Postgresql => "postgresql",
            Self::Mysql => "mysql",
            Self::Sqlserver => "sqlserver",
        }
    }

    /// Whether guacd serves it (the database consoles and the remote browser are ztproxy's
    /// only).
    pub fn served_by_guacd(self) -> bool {
        Self::GUACD.contains(&self)
    }

    /// The protocol named `name` (lowercase).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The protocol's parameter names, after `hostname` and `port`: guacd 1.6's, or
    /// [`DATABASE`] for the consoles.
    pub fn parameters(self) -> &'static [&'static str] {
        match self {
            Self::Rdp => RDP,
            Self::Vnc => VNC,
            Self::Ssh => SSH,
            Self::Telnet => TELNET,
            Self::Kubernetes => KUBERNETES,
            Self::Http => HTTP,
            Self::Postgresql | Self::Mysql | Self::Sqlserver => DATABASE,
        }
    }

    /// Whether the protocol has a parameter called `name`.
    pub fn has_parameter(self, name: &str) -> bool {
        self.parameters().contains(&name)
            || ZTPROXY_PARAMETERS.contains(&name)
            || (self == Self::Kubernetes && KUBERNETES_ZTPROXY.contains(&name))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parameters every protocol accepts because ztproxy enforces them itself.
pub const ZTPROXY_PARAMETERS: &[&str] = &[
    // The most clipboard data carried per transfer (guacd's range, 256 KiB to 50 MiB).
    "clipboard-buffer-size",
];

/// Kubernetes parameters of ztproxy's own, besides guacd's: a bearer token (sent as
/// `Authorization: Bearer`, never to the client), and `attach` (attach to the container's
/// main process instead of running `exec-command`).
pub const KUBERNETES_ZTPROXY: &[&str] = &["bearer-token", "attach"];

/// What a parameter's value must look like. An empty value always means "the default", as
/// it does for guacd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// `true` or `false`.
    Bool,
    /// A decimal number that fits in 32 bits.
    Number,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// Anything (credentials, paths, keys, names).
    Text,
}

impl Kind {
    /// The kind of parameter `name` (the same for every protocol that has it).
    pub fn of(name: &str) -> Self {
        if BOOLEANS.contains(&name) {
            return Self::Bool;
        }
        if NUMBERS.contains(&name) {
            return Self::Number;
        }
        match name {
            "security" => Self::OneOf(&["any", "nla", "nla-ext", "tls", "vmconnect", "rdp"]),
            "resize-method" => Self::OneOf(&["display-update", "reconnect"]),
            "cursor" => Self::OneOf(&["local", "remote"]),
            "normalize-clipboard" => Self::OneOf(&["preserve", "unix", "windows"]),
            "clipboard-encoding" => Self::OneOf(&["ISO8859-1", "UTF-8", "UTF-16", "CP1252"]),
            _ => Self::Text,
        }
    }

    /// Checks `value`; the problem, if any, names no value.
    pub fn check(self, value: &str) -> Result<(), &'static str> {
        if value.is_empty() {
            return Ok(());
        }
        match self {
            Self::Bool if value == "true" || value == "false" => Ok(()),
            Self::Bool => Err("must be \"true\" or \"false\""),
            Self::Number if value.len() <= 10 && value.parse::<u32>().is_ok() => Ok(()),
            Self::Number => Err("must be a decimal number"),
            Self::OneOf(words) if words.contains(&value) => Ok(()),
            Self::OneOf(_) => Err("is not one of the values guacd accepts for it"),
            Self::Text => Ok(()),
        }
    }
}

/// A connection's parameters, checked against its protocol.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionParameters {
    protocol: Protocol,
    values: BTreeMap<String, Secret<String>>,
}

impl fmt::Debug for ConnectionParameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionParameters")
            .field("protocol", &self.protocol)
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ConnectionParameters {
    /// Checks every parameter of `values` against `protocol`: the first name it does not
    /// have, or value its kind cannot take, is an error naming `parameters.<name>`.
    pub fn new(
        protocol: Protocol,
        values: BTreeMap<String, Secret<String>>,
    ) -> Result<Self, ApiError> {
        for (name, value) in &values {
            if !protocol.has_parameter(name) {
                return Err(ApiError::new(
                    ErrorCode::UnknownField,
                    format!("{protocol} has no parameter {name} (guacd 1.6's names)"),
                )
                .with_field(format!("parameters.{name}")));
            }
            Kind::of(name)
                .check(value.expose_secret())
                .map_err(|problem| {
                    ApiError::invalid_field(
                        format!("parameters.{name}"),
                        format!("{name} {problem}"),
                    )
                })?;
        }
        Ok(Self { protocol, values })
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Every parameter, by name.
    pub fn values(&self) -> &BTreeMap<String, Secret<String>> {
        &self.values
    }

    /// Parameter `name`, when given and not empty.
    pub fn get(&self, name: &str) -> Option<&Secret<String>> {
        self.values
            .get(name)
            .filter(|v| !v.expose_secret().is_empty())
    }

    /// A [`Kind::Bool`] parameter (`false` when absent or empty).
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v.expose_secret() == "true")
    }

    /// A [`Kind::Number`] parameter, when given.
    pub fn number(&self, name: &str) -> Option<u32> {
        self.get(name).and_then(|v| v.expose_secret().parse().ok())
    }
}

/// Parameters from name–value pairs (for clients building requests, and tests).
pub fn parameter_map(pairs: &[(&str, &str)]) -> BTreeMap<String, Secret<String>> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), Secret::new((*value).to_owned())))
        .collect()
}

const BOOLEANS: &[&str] = &[
    "allow-download",
    "allow-upload",
    "allow-url-manipulation",
    "attach",
    "cert-tofu",
    "disable-csv-export",
    "disable-csv-import",
    "console",
    "console-audio",
    "create-drive-path",
    "create-recording-path",
    "create-typescript-path",
    "disable-audio",
    "disable-auth",
    "disable-bitmap-caching",
    "disable-copy",
    "disable-display-resize",
    "disable-download",
    "disable-gfx",
    "disable-glyph-caching",
    "disable-offscreen-caching",
    "disable-paste",
    "disable-server-input",
    "disable-upload",
    "enable-audio",
    "enable-audio-input",
    "enable-desktop-composition",
    "enable-drive",
    "enable-font-smoothing",
    "enable-full-window-drag",
    "enable-menu-animations",
    "enable-printing",
    "enable-sftp",
    "enable-theming",
    "enable-touch",
    "enable-wallpaper",
    "force-lossless",
    "ignore-cert",
    "ignore-initial-ssl-cert",
    "ignore-server-cert",
    "read-only",
    "recording-exclude-mouse",
    "recording-exclude-output",
    "recording-exclude-touch",
    "recording-include-keys",
    "recording-write-existing",
    "reverse-connect",
    "sftp-disable-download",
    "sftp-disable-upload",
    "swap-red-blue",
    "typescript-write-existing",
    "use-ssl",
    "wol-send-packet",
];

const NUMBERS: &[&str] = &[
    "autoretry",
    "backspace",
    "clipboard-buffer-size",
    "color-depth",
    "compress-level",
    "dest-port",
    "dpi",
    "font-size",
    "gateway-port",
    "height",
    "listen-timeout",
    "max-file-size",
    "preconnection-id",
    "quality-level",
    "scrollback",
    "server-alive-interval",
    "sftp-port",
    "sftp-server-alive-interval",
    "sftp-timeout",
    "timeout",
    "width",
    "wol-udp-port",
    "wol-wait-time",
];

/// guacd 1.6's `rdp` parameters after `hostname` and `port`, in its `args` order.
const RDP: &[&str] = &[
    "timeout",
    "domain",
    "username",
    "password",
    "width",
    "height",
    "dpi",
    "initial-program",
    "color-depth",
    "disable-audio",
    "enable-printing",
    "printer-name",
    "enable-drive",
    "drive-name",
    "drive-path",
    "create-drive-path",
    "disable-download",
    "disable-upload",
    "console",
    "console-audio",
    "server-layout",
    "security",
    "ignore-cert",
    "cert-tofu",
    "cert-fingerprints",
    "disable-auth",
    "remote-app",
    "remote-app-dir",
    "remote-app-args",
    "static-channels",
    "client-name",
    "enable-wallpaper",
    "enable-theming",
    "enable-font-smoothing",
    "enable-full-window-drag",
    "enable-desktop-composition",
    "enable-menu-animations",
    "disable-bitmap-caching",
    "disable-offscreen-caching",
    "disable-glyph-caching",
    "disable-gfx",
    "preconnection-id",
    "preconnection-blob",
    "timezone",
    "enable-sftp",
    "sftp-hostname",
    "sftp-host-key",
    "sftp-port",
    "sftp-timeout",
    "sftp-username",
    "sftp-password",
    "sftp-private-key",
    "sftp-passphrase",
    "sftp-public-key",
    "sftp-directory",
    "sftp-root-directory",
    "sftp-server-alive-interval",
    "sftp-disable-download",
    "sftp-disable-upload",
    "recording-path",
    "recording-name",
    "recording-exclude-output",
    "recording-exclude-mouse",
    "recording-exclude-touch",
    "recording-include-keys",
    "create-recording-path",
    "recording-write-existing",
    "resize-method",
    "enable-audio-input",
    "enable-touch",
    "read-only",
    "gateway-hostname",
    "gateway-port",
    "gateway-domain",
    "gateway-username",
    "gateway-password",
    "load-balance-info",
    "disable-copy",
    "disable-paste",
    "wol-send-packet",
    "wol-mac-addr",
    "wol-broadcast-addr",
    "wol-udp-port",
    "wol-wait-time",
    "force-lossless",
    "normalize-clipboard",
];
/// guacd 1.6's `vnc` parameters after `hostname` and `port`, in its `args` order.
const VNC: &[&str] = &[
    "read-only",
    "disable-display-resize",
    "encodings",
    "username",
    "password",
    "swap-red-blue",
    "color-depth",
    "cursor",
    "autoretry",
    "clipboard-encoding",
    "dest-host",
    "dest-port",
    "enable-audio",
    "audio-servername",
    "reverse-connect",
    "listen-timeout",
    "enable-sftp",
    "sftp-hostname",
    "sftp-host-key",
    "sftp-port",
    "sftp-timeout",
    "sftp-username",
    "sftp-password",
    "sftp-private-key",
    "sftp-passphrase",
    "sftp-public-key",
    "sftp-directory",
    "sftp-root-directory",
    "sftp-server-alive-interval",
    "sftp-disable-download",
    "sftp-disable-upload",
    "recording-path",
    "recording-name",
    "recording-exclude-output",
    "recording-exclude-mouse",
    "recording-include-keys",
    "create-recording-path",
    "recording-write-existing",
    "disable-copy",
    "disable-paste",
    "disable-server-input",
    "wol-send-packet",
    "wol-mac-addr",
    "wol-broadcast-addr",
    "wol-udp-port",
    "wol-wait-time",
    "force-lossless",
    "compress-level",
    "quality-level",
];
/// guacd 1.6's `ssh` parameters after `hostname` and `port`, in its `args` order.
const SSH: &[&str] = &[
    "host-key",
    "timeout",
    "username",
    "password",
    "font-name",
    "font-size",
    "enable-sftp",
    "sftp-root-directory",
    "sftp-disable-download",
    "sftp-disable-upload",
    "private-key",
    "passphrase",
    "public-key",
    "color-scheme",
    "command",
    "typescript-path",
    "typescript-name",
    "create-typescript-path",
    "typescript-write-existing",
    "recording-path",
    "recording-name",
    "recording-exclude-output",
    "recording-exclude-mouse",
    "recording-include-keys",
    "create-recording-path",
    "recording-write-existing",
    "read-only",
    "server-alive-interval",
    "backspace",
    "terminal-type",
    "scrollback",
    "locale",
    "timezone",
    "disable-copy",
    "disable-paste",
    "wol-send-packet",
    "wol-mac-addr",
    "wol-broadcast-addr",
    "wol-udp-port",
    "wol-wait-time",
];
/// guacd 1.6's `telnet` parameters after `hostname` and `port`, in its `args` order.
const TELNET: &[&str] = &[
    "timeout",
    "username",
    "username-regex",
    "password",
    "password-regex",
    "font-name",
    "font-size",
    "color-scheme",
    "typescript-path",
    "typescript-name",
    "create-typescript-path",
    "typescript-write-existing",
    "recording-path",
    "recording-name",
    "recording-exclude-output",
    "recording-exclude-mouse",
    "recording-include-keys",
    "create-recording-path",
    "recording-write-existing",
    "read-only",
    "backspace",
    "terminal-type",
    "scrollback",
    "login-success-regex",
    "login-failure-regex",
    "disable-copy",
    "disable-paste",
    "wol-send-packet",
    "wol-mac-addr",
    "wol-broadcast-addr",
    "wol-udp-port",
    "wol-wait-time",
];

/// guacd 1.6's `kubernetes` parameters after `hostname` and `port`, in its `args` order.
const KUBERNETES: &[&str] = &[
    "namespace",
    "pod",
    "container",
    "exec-command",
    "use-ssl",
    "client-cert",
    "client-key",
    "ca-cert",
    "ignore-cert",
    "font-name",
    "font-size",
    "color-scheme",
    "typescript-path",
    "typescript-name",
    "create-typescript-path",
    "typescript-write-existing",
    "recording-path",
    "recording-name",
    "recording-exclude-output",
    "recording-exclude-mouse",
    "recording-include-keys",
    "create-recording-path",
    "recording-write-existing",
    "read-only",
    "backspace",
    "scrollback",
    "disable-copy",
    "disable-paste",
];

/// The remote browser's parameters: the names Keeper's `http` protocol uses
/// (`ignore-initial-ssl-cert` is KCM's spelling of `ignore-server-cert`), `read-only`, and
/// ztproxy's file transfer switches (`allow-download`, `allow-upload`, `max-file-size`).
const HTTP: &[&str] = &[
    "url",
    "allow-download",
    "allow-upload",
    "max-file-size",
    "username",
    "password",
    "allowed-url-patterns",
    "allowed-resource-url-patterns",
    "allow-url-manipulation",
    "ignore-server-cert",
    "ignore-initial-ssl-cert",
    "autofill-configuration",
    "disable-copy",
    "disable-paste",
    "read-only",
    "recording-path",
    "recording-name",
    "recording-exclude-output",
    "recording-exclude-mouse",
    "recording-include-keys",
    "create-recording-path",
];

/// The database consoles' parameters: the names Keeper's connection manager uses for its
/// `mysql`, `postgres` and `sql-server` consoles (`database` is the record's "Default
/// Database"; `disable-csv-export` and `disable-csv-import` its "Can export CSV" and "Can
/// import CSV", inverted), and the terminal's.
pub const DATABASE: &[&str] = &[
    "timeout",
    "username",
    "password",
    "database",
    "disable-csv-export",
    "disable-csv-import",
    "ssl-mode",
    "server-certificate",
    "font-name",
    "font-size",
    "color-scheme",
    "scrollback",
    "backspace",
    "read-only",
    "disable-copy",
    "disable-paste",
    "typescript-path",
    "typescript-name",
    "create-typescript-path",
    "recording-path",
    "recording-name",
    "recording-exclude-output",
    "recording-exclude-mouse",
    "recording-include-keys",
    "create-recording-path",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, Secret<String>> {
        parameter_map(pairs)
    }

    #[test]
    fn names_and_kinds_follow_guacd_1_6() {
        assert_eq!(RDP.len(), 86);
        assert!(Protocol::Ssh.has_parameter("private-key"));
        assert!(!Protocol::Rdp.has_parameter("private-key"));
        assert!(Protocol::Telnet.has_parameter("clipboard-buffer-size"));
        assert!(!Protocol::Vnc.has_parameter("hostname"));
        assert_eq!(Kind::of("read-only"), Kind::Bool);
        assert_eq!(Kind::of("sftp-port"), Kind::Number);
        assert_eq!(Kind::of("password"), Kind::Text);
        // Every name classified is one some protocol has.
        for name in BOOLEANS.iter().chain(NUMBERS) {
            assert!(
                Protocol::ALL.iter().any(|p| p.has_parameter(name)),
                "{name} is no protocol's"
            );
        }
    }

    /// The lists are guacd 1.6's own, as a real guacd 1.6.0 sent them
    /// (`tests/fixtures/guacd-1.6/args.txt`): the copy here cannot drift from them.
    #[test]
    fn the_lists_are_the_measured_guacd_1_6_args() {
        let fixture = include_str!("../../../tests/fixtures/guacd-1.6/args.txt");
        for protocol in Protocol::GUACD {
            let line = fixture
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{protocol}: ")))
                .unwrap_or_else(|| panic!("{protocol} is not in the fixture"));
            let measured: Vec<&str> = line
                .split_whitespace()
                .skip(1) // the protocol version
                .filter(|name| !["hostname", "port"].contains(name))
                .collect();
            assert_eq!(protocol.parameters(), measured, "{protocol}");
        }
    }

    #[test]
    fn unknown_and_malformed_parameters_are_refused_by_name_without_the_value() {
        let err = ConnectionParameters::new(Protocol::Rdp, params(&[("private-key", "PEM")]))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownField);
        assert_eq!(err.field.as_deref(), Some("parameters.private-key"));
        let err = ConnectionParameters::new(Protocol::Ssh, params(&[("font-size", "huge-secret")]))
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("parameters.font-size"));
        assert!(!err.message.contains("huge-secret"), "{}", err.message);
        let err =
            ConnectionParameters::new(Protocol::Rdp, params(&[("security", "none")])).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("parameters.security"));
    }

    #[test]
    fn well_formed_parameters_read_back_typed() {
        let p = ConnectionParameters::new(
            Protocol::Ssh,
            params(&[
                ("read-only", "true"),
                ("font-size", "14"),
                ("password", ""),
                ("command", "top"),
            ]),
        )
        .unwrap();
        assert!(p.flag("read-only") && !p.flag("disable-copy"));
        assert_eq!(p.number("font-size"), Some(14));
        assert!(p.get("password").is_none(), "empty means the default");
        assert_eq!(
            p.get("command").map(|v| v.expose_secret().as_str()),
            Some("top")
        );
        assert!(!format!("{p:?}").contains("top"));
    }
}
