//! A remote-browser session's parameters, with the names of Keeper's remote browser
//! (`http` protocol): `url`, `allowed-url-patterns`, `allowed-resource-url-patterns`,
//! `allow-url-manipulation`, `ignore-server-cert` (KCM's `ignore-initial-ssl-cert` is read
//! too), `username`, `password`, `autofill-configuration`, `disable-copy`, `disable-paste`.
//!
//! * `url` is where the browser starts; without it, `http://` (or `https://` for port 443)
//!   and the session's target.
//! * `allowed-url-patterns` defaults to the target's origin, so a session without it can
//!   browse its own site and nothing else. The start URL must pass it. When `url` names the
//!   target's host and port, its scheme is the origin's (HTTPS on a port other than 443).
//! * `autofill-configuration` is a JSON list of rules (the flow form of KCM's YAML):
//!   `[{"page": "https://app.example.com/login*", "username-field": "#user",
//!   "password-field": "#pass", "submit": "button[type=submit]"}]`. Each field is a CSS
//!   selector; `submit` is clicked after filling only when given. Without rules, a page
//!   the pages policy allows is filled with the defaults below, never submitted.
//!
//! * `allow-download` and `allow-upload` (ztproxy's; both off by default) let files cross
//!   as Guacamole file streams ([`crate::files`]); `max-file-size` (bytes, default 100 MiB)
//!   bounds each file either way.
//!
//! Errors name the parameter, never its value; the credentials stay [`Secret`]s.

use serde::Deserialize;
use url::Url;
use zt_secret::Secret;

use crate::policy::{Patterns, UrlPolicy};

/// The default selector of the username field: the first of these before the password
/// field.
pub const DEFAULT_USERNAME_FIELD: &str = "input[autocomplete=username], input[type=email], \
     input[name*=user i], input[id*=user i], input[name*=login i], input[type=text]";
/// The default selector of the password field.
pub const DEFAULT_PASSWORD_FIELD: &str = "input[type=password]";
/// The most autofill rules.
const MAX_RULES: usize = 64;
/// The longest text parameter, in bytes.
const MAX_TEXT: usize = 64 * 1024;
/// The default `max-file-size`, in bytes.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 100 << 20;
/// The largest `max-file-size` accepted, in bytes (4 GiB less one: a 32-bit number, as every
/// numeric parameter).
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;

/// A parameter that cannot be used: its name and why (never its value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} {reason}")]
pub struct SettingsError {
    /// The parameter.
    pub name: &'static str,
    /// Why.
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

/// Where and how to fill credentials in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutofillRule {
    /// The pages it applies to.
    pub page: Patterns,
    /// The username field's CSS selector (`None`: no username on this page).
    pub username_field: Option<String>,
    /// The password field's CSS selector (`None`: no password on this page).
    pub password_field: Option<String>,
    /// What to click after filling (`None`: the user submits).
    pub submit: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RuleText {
    page: String,
    username_field: Option<String>,
    password_field: Option<String>,
    submit: Option<String>,
}

/// What a remote-browser session is configured with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RbiSettings {
    /// Where the browser starts.
    pub start: Url,
    /// The pages and sub-resources allowed.
    pub policy: UrlPolicy,
    /// `allow-url-manipulation`: the user may type a URL (it still passes the policy).
    pub allow_url_manipulation: bool,
    /// `ignore-server-cert`: TLS errors are ignored.
    pub ignore_server_cert: bool,
    /// `username`.
    pub username: Option<Secret<String>>,
    /// `password`.
    pub password: Option<Secret<String>>,
    /// `autofill-configuration`; empty: the defaults on every allowed page.
    pub autofill: Vec<AutofillRule>,
    /// `disable-copy`: nothing copied in the browser reaches the client.
    pub disable_copy: bool,
    /// `disable-paste`: the client's clipboard is not pasted into the page.
    pub disable_paste: bool,
    /// `allow-download`: files the page downloads go to the client (off: refused).
    pub allow_download: bool,
    /// `allow-upload`: files the client sends may be chosen in the page's file inputs.
    pub allow_upload: bool,
    /// `max-file-size`: the largest file either way, in bytes.
    pub max_file_size: u64,
}

impl RbiSettings {
    /// The settings given by `get` (a parameter by name; empty is unset) for a session whose
    /// target is `host`:`port`.
    pub fn from_parameters<'a>(
        get: impl Fn(&str) -> Option<&'a str> + Copy,
        host: &str,
        port: u16,
    ) -> Result<Self, SettingsError> {
        let value = |name: &str| get(name).map(str::trim).filter(|v| !v.is_empty());
        let text = |name: &'static str| -> Result<Option<&'a str>, SettingsError> {
            match get(name).map(str::trim).filter(|v| !v.is_empty()) {
                Some(v) if v.len() > MAX_TEXT => Err(SettingsError::new(name, "is too long")),
                other => Ok(other),
            }
        };
        let flag = |name: &'static str| -> Result<bool, SettingsError> {
            match value(name) {
                None | Some("false") => Ok(false),
                Some("true") => Ok(true),
                Some(_) => Err(SettingsError::new(name, "must be true or false")),
            }
        };
        // The target, as a URL: the start page when `url` is unset, and the pages allowed
        // when `allowed-url-patterns` is.
        let target = {
            let scheme = if port == 443 { "https" } else { "http" };
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_owned()
            };
            Url::parse(&format!("{scheme}://{host}:{port}/"))
                .map_err(|_| SettingsError::new("url", "cannot be made from the target"))?
        };
        let start = match text("url")? {
            Some(url) => Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| SettingsError::new("url", "must be an http or https URL"))?,
            None => target.clone(),
        };
        let pages = match text("allowed-url-patterns")? {
            Some(list) => Patterns::parse(list)
                .map_err(|e| SettingsError::new("allowed-url-patterns", e.0))?,
            // `url` on the target's host and port says the scheme (an HTTPS site on a port
            // other than 443).
            None => {
                let same_endpoint = start.host_str() == target.host_str()
                    && start.port_or_known_default() == Some(port);
                let origin = if same_endpoint { &start } else { &target };
                Patterns::origin_of(origin).map_err(|e| SettingsError::new("url", e.0))?
            }
        };
        let resources = match text("allowed-resource-url-patterns")? {
            Some(list) => Patterns::parse(list)
                .map_err(|e| SettingsError::new("allowed-resource-url-patterns", e.0))?,
            None => Patterns::default(),
        };
        let policy = UrlPolicy::new(pages, resources);
        if policy
            .check(crate::policy::Kind::Navigation, start.as_str())
            .is_err()
        {
            return Err(SettingsError::new(
                "url",
                "is not allowed by allowed-url-patterns",
            ));
        }
        let secret = |name: &'static str| -> Result<Option<Secret<String>>, SettingsError> {
            match get(name).filter(|v| !v.is_empty()) {
                Some(v) if v.len() > 4096 => Err(SettingsError::new(name, "is too long")),
                Some(v) => Ok(Some(Secret::new(v.to_owned()))),
                None => Ok(None),
            }
        };
        let autofill = match text("autofill-configuration")? {
            None => Vec::new(),
            Some(json) => {
                let rules: Vec<RuleText> = serde_json::from_str(json).map_err(|_| {
                    SettingsError::new(
                        "autofill-configuration",
                        "must be a JSON list of {page, username-field, password-field, submit}",
                    )
                })?;
                if rules.len() > MAX_RULES {
                    return Err(SettingsError::new(
                        "autofill-configuration",
                        "holds more than 64 rules",
                    ));
                }
                rules
                    .into_iter()
                    .map(|rule| {
                        Ok(AutofillRule {
                            page: Patterns::parse(&rule.page)
                                .map_err(|e| SettingsError::new("autofill-configuration", e.0))?,
                            username_field: rule.username_field,
                            password_field: rule.password_field,
                            submit: rule.submit,
                        })
                    })
                    .collect::<Result<_, SettingsError>>()?
            }
        };
        Ok(Self {
            start,
            policy,
            allow_url_manipulation: flag("allow-url-manipulation")?,
            ignore_server_cert: flag("ignore-server-cert")? || flag("ignore-initial-ssl-cert")?,
            username: secret("username")?,
            password: secret("password")?,
            autofill,
            disable_copy: flag("disable-copy")?,
            disable_paste: flag("disable-paste")?,
            allow_download: flag("allow-download")?,
            allow_upload: flag("allow-upload")?,
            max_file_size: match value("max-file-size") {
                None => DEFAULT_MAX_FILE_SIZE,
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=MAX_FILE_SIZE).contains(n))
                    .ok_or_else(|| {
                        SettingsError::new(
                            "max-file-size",
                            "must be a size in bytes, 1 to 4294967295",
                        )
                    })?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::policy::Kind;

    fn parse(pairs: &[(&str, &str)]) -> Result<RbiSettings, SettingsError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        RbiSettings::from_parameters(|name| map.get(name).copied(), "127.0.0.1", 8080)
    }

    #[test]
    fn defaults_browse_the_targets_origin_only() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.start.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(
            s.policy.check(Kind::Navigation, "http://127.0.0.1:8080/x"),
            Ok(())
        );
        assert!(
            s.policy
                .check(Kind::Navigation, "http://127.0.0.1:9/")
                .is_err()
        );
        assert!(!s.allow_url_manipulation && !s.ignore_server_cert);
        assert!(s.autofill.is_empty());
        assert!(
            !s.allow_download && !s.allow_upload,
            "files cross only when allowed"
        );
        assert_eq!(s.max_file_size, DEFAULT_MAX_FILE_SIZE);
    }

    #[test]
    fn a_start_url_on_the_target_says_the_default_origins_scheme() {
        let s = parse(&[("url", "https://127.0.0.1:8080/app")]).unwrap();
        assert_eq!(
            s.policy.check(Kind::Navigation, "https://127.0.0.1:8080/x"),
            Ok(())
        );
        assert!(
            s.policy
                .check(Kind::Navigation, "http://127.0.0.1:8080/x")
                .is_err()
        );
        // Elsewhere, the target's origin stays the default, and the start URL fails it.
        assert!(parse(&[("url", "https://127.0.0.1:9090/")]).is_err());
    }

    #[test]
    fn patterns_autofill_and_credentials_are_read() {
        let s = parse(&[
            ("url", "http://127.0.0.1:8080/login"),
            ("allowed-url-patterns", "http://127.0.0.1:8080/*|http://localhost:*"),
            ("allowed-resource-url-patterns", "http://127.0.0.1:9999/static/*"),
            ("ignore-initial-ssl-cert", "true"),
            ("password", "hunter2"),
            (
                "autofill-configuration",
                r##"[{"page":"http://127.0.0.1:8080/login*","username-field":"#u","password-field":"#p","submit":"#go"}]"##,
            ),
        ])
        .unwrap();
        assert!(s.ignore_server_cert);
        assert_eq!(s.autofill.len(), 1);
        assert_eq!(s.autofill[0].submit.as_deref(), Some("#go"));
        assert_eq!(
            s.policy
                .check(Kind::Resource, "http://127.0.0.1:9999/static/a.js"),
            Ok(())
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn bad_values_name_the_parameter_and_never_show_the_value() {
        for (pairs, name) in [
            (vec![("url", "file:///evil")], "url"),
            (vec![("url", "http://evil.net/")], "url"),
            (
                vec![("allowed-url-patterns", "https://evil.*.net")],
                "allowed-url-patterns",
            ),
            (
                vec![("allowed-resource-url-patterns", "gopher://evil")],
                "allowed-resource-url-patterns",
            ),
            (
                vec![("autofill-configuration", "evil")],
                "autofill-configuration",
            ),
            (
                vec![("autofill-configuration", r#"[{"page":"x","evil":1}]"#)],
                "autofill-configuration",
            ),
            (vec![("disable-copy", "evil")], "disable-copy"),
            (vec![("allow-download", "evil")], "allow-download"),
            (vec![("max-file-size", "evil")], "max-file-size"),
            (vec![("max-file-size", "0")], "max-file-size"),
            (vec![("max-file-size", "99999999999999")], "max-file-size"),
        ] {
            let error = parse(&pairs).unwrap_err();
            assert_eq!(error.name, name, "{pairs:?}");
            assert!(!error.to_string().contains("evil"), "{error}");
        }
    }
}
