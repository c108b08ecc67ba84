//! A Kubernetes connection's parameters, with guacd 1.6's names (`kubernetes` in
//! `shared/fixtures/guacd-1.6/args.txt`), so a gateway can move a session between guacd and
//! the native backend. The API server's address is the session's target.
//!
//! Departures from guacd, each deliberate:
//!
//! * **`exec-command` defaults to a shell** (`/bin/sh`), as `kubectl exec -it` users expect;
//!   guacd attaches when it is empty. `attach` (ztproxy's own, `true`/`false`) asks for the
//!   container's main process instead. The command is split on whitespace into arguments, as
//!   guacd after 1.6 does (1.6 sends the whole string as one argument, so `ls -l` would look
//!   for a program called `ls -l`); the server runs it without a shell.
//! * **`ca-cert` pins**: with it, the API server's certificate must chain to it and nothing
//!   else (guacd adds it to the system's roots). Without it, and without `ignore-cert`, the
//!   certificate must chain to Mozilla's roots (what Debian's system store holds). The name
//!   checked is the session's target host, a DNS name or an IP address.
//! * **Credentials need TLS**: `client-cert`, `client-key`, `ca-cert`, `ignore-cert` and
//!   `bearer-token` are refused without `use-ssl` (guacd ignores them there, which would
//!   connect in plain text without the credential the gateway meant to use).
//! * **`bearer-token`** (ztproxy's own): sent as `Authorization: Bearer`, for service-account
//!   and OIDC tokens, which guacd cannot use.
//! * guacd's recording and typescript parameters are accepted and ignored: ztproxy records
//!   through the session's `recording`.
//!
//! The client certificate, its key and the token stay [`Secret`]s; errors name the parameter,
//! never its value.

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zt_secret::Secret;
use zt_terminal::{SettingsError, TerminalSettings};

use crate::request::{Call, MAX_COMMAND_LEN, Target, is_label, is_subdomain};

/// The command run when `exec-command` is empty.
pub const DEFAULT_COMMAND: &str = "/bin/sh";
/// The namespace when `namespace` is empty (guacd's default).
pub const DEFAULT_NAMESPACE: &str = "default";
/// The most certificates `ca-cert` or `client-cert` may hold.
const MAX_CERTIFICATES: usize = 16;
/// The longest PEM parameter or token accepted, in bytes.
const MAX_PEM: usize = 64 * 1024;

/// How the API server's certificate is checked.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ServerTrust {
    /// `use-ssl` is unset: plain HTTP (guacd's default; only for an API server behind a
    /// trusted proxy, as guacd's is).
    Plain,
    /// TLS, the certificate chaining to `ca-cert`'s certificates.
    Pinned(Vec<CertificateDer<'static>>),
    /// TLS, the certificate chaining to Mozilla's roots.
    PublicRoots,
    /// TLS, any certificate (`ignore-cert`): encrypted, but not authenticated.
    Unverified,
}

/// What the API server is told about the user.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Credentials {
    /// Nothing (an API server that lets anonymous users exec, or a proxy that adds them).
    None,
    /// `client-cert` and `client-key`.
    ClientCertificate {
        /// The certificate and its chain.
        chain: Vec<CertificateDer<'static>>,
        /// The key, as PEM (read with [`Credentials::client_key`]).
        key: Secret<String>,
    },
    /// `bearer-token`.
    Token(Secret<String>),
}

impl Credentials {
    /// The client certificate's key (checked when the settings were read).
    pub fn client_key(&self) -> Option<PrivateKeyDer<'static>> {
        match self {
            Self::ClientCertificate { key, .. } => private_key(key.expose_secret()).ok(),
            _ => None,
        }
    }

    /// The kind, as the audit log names it (`client_certificate`, `bearer_token`, `none`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientCertificate { .. } => "client_certificate",
            Self::Token(_) => "bearer_token",
        }
    }
}

/// What a Kubernetes connection is configured with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct K8sSettings {
    /// `namespace`, `pod`, `container`.
    pub target: Target,
    /// `exec-command` (split into arguments) or `attach`.
    pub call: Call,
    /// `use-ssl`, `ca-cert`, `ignore-cert`.
    pub trust: ServerTrust,
    /// `client-cert` and `client-key`, or `bearer-token`.
    pub credentials: Credentials,
    /// The terminal's own parameters (`font-size`, `color-scheme`, `scrollback`,
    /// `backspace`, `read-only`, `disable-copy`, `disable-paste`).
    pub terminal: TerminalSettings,
}

impl K8sSettings {
    /// The settings given by `get` (a parameter's value by name; an empty value is unset, as
    /// in guacd). Errors name the parameter, never its value.
    pub fn from_parameters<'a>(
        get: impl Fn(&str) -> Option<&'a str> + Copy,
    ) -> Result<Self, SettingsError> {
        let value = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let flag = |name: &'static str| -> Result<bool, SettingsError> {
            match value(name).map(str::trim) {
                None | Some("false") => Ok(false),
                Some("true") => Ok(true),
                Some(_) => Err(SettingsError::new(name, "must be true or false")),
            }
        };
        let namespace = value("namespace")
            .map_or(DEFAULT_NAMESPACE, str::trim)
            .to_owned();
        if !is_label(&namespace) {
            return Err(SettingsError::new(
                "namespace",
                "must be a Kubernetes name (lowercase letters, digits and '-')",
            ));
        }
        let pod = value("pod")
            .map(str::trim)
            .ok_or_else(|| SettingsError::new("pod", "is required"))?
            .to_owned();
        if !is_subdomain(&pod) {
            return Err(SettingsError::new(
                "pod",
                "must be a Kubernetes name (lowercase letters, digits, '-' and '.')",
            ));
        }
        let container = value("container").map(|c| c.trim().to_owned());
        if container.as_deref().is_some_and(|c| !is_label(c)) {
            return Err(SettingsError::new(
                "container",
                "must be a Kubernetes name (lowercase letters, digits and '-')",
            ));
        }
        let call = match (flag("attach")?, value("exec-command")) {
            (true, Some(_)) => {
                return Err(SettingsError::new(
                    "attach",
                    "cannot be combined with exec-command",
                ));
            }
            (true, None) => Call::Attach,
            (false, command) => {
                let command = command.unwrap_or(DEFAULT_COMMAND);
                if command.len() > MAX_COMMAND_LEN {
                    return Err(SettingsError::new("exec-command", "is too long"));
                }
                Call::Exec(command.split_whitespace().map(str::to_owned).collect())
            }
        };

        let use_ssl = flag("use-ssl")?;
        if !use_ssl {
            // `ignore-cert=false` asks for nothing.
            let ignore_cert = value("ignore-cert").is_some() && flag("ignore-cert")?;
            let given = ["client-cert", "client-key", "ca-cert", "bearer-token"]
                .into_iter()
                .find(|name| value(name).is_some())
                .or_else(|| ignore_cert.then_some("ignore-cert"));
            if let Some(name) = given {
                return Err(SettingsError::new(name, "is used only with use-ssl"));
            }
        }
        let ignore_cert = flag("ignore-cert")?;
        let trust = match (use_ssl, value("ca-cert"), ignore_cert) {
            (false, ..) => ServerTrust::Plain,
            (true, Some(_), true) => {
                return Err(SettingsError::new(
                    "ignore-cert",
                    "cannot be combined with ca-cert",
                ));
            }
            (true, Some(pem), false) => ServerTrust::Pinned(certificates("ca-cert", pem)?),
            (true, None, true) => ServerTrust::Unverified,
            (true, None, false) => ServerTrust::PublicRoots,
        };
        let credentials = match (
            value("client-cert"),
            value("client-key"),
            value("bearer-token"),
        ) {
            (None, None, None) => Credentials::None,
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(SettingsError::new(
                    "bearer-token",
                    "cannot be combined with client-cert and client-key",
                ));
            }
            (Some(cert), Some(key), None) => Credentials::ClientCertificate {
                chain: certificates("client-cert", cert)?,
                key: {
                    private_key(key)?;
                    Secret::new(key.to_owned())
                },
            },
            (Some(_), None, None) => {
                return Err(SettingsError::new(
                    "client-key",
                    "is required with client-cert",
                ));
            }
            (None, Some(_), None) => {
                return Err(SettingsError::new(
                    "client-cert",
                    "is required with client-key",
                ));
            }
            (None, None, Some(token)) => {
                let token = token.trim();
                if token.len() > MAX_PEM || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(SettingsError::new(
                        "bearer-token",
                        "must be printable ASCII without spaces",
                    ));
                }
                Credentials::Token(Secret::new(token.to_owned()))
            }
        };
        Ok(Self {
            target: Target {
                namespace,
                pod,
                container,
            },
            call,
            trust,
            credentials,
            terminal: TerminalSettings::from_parameters(get)?,
        })
    }
}

/// The PEM certificates of parameter `name`.
fn certificates(
    name: &'static str,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, SettingsError> {
    if pem.len() > MAX_PEM {
        return Err(SettingsError::new(name, "is too long"));
    }
    let mut certificates = Vec::new();
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let certificate = certificate
            .map_err(|_| SettingsError::new(name, "holds a PEM certificate that cannot be read"))?;
        if certificates.len() == MAX_CERTIFICATES {
            return Err(SettingsError::new(name, "holds more than 16 certificates"));
        }
        certificates.push(certificate);
    }
    if certificates.is_empty() {
        return Err(SettingsError::new(name, "holds no PEM certificate"));
    }
    Ok(certificates)
}

/// `client-key`: a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, SettingsError> {
    if pem.len() > MAX_PEM {
        return Err(SettingsError::new("client-key", "is too long"));
    }
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| SettingsError::new("client-key", "holds no PEM private key"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<K8sSettings, SettingsError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        K8sSettings::from_parameters(|name| map.get(name).copied())
    }

    fn pem() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["api".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn defaults_exec_a_shell_in_the_default_namespace_in_plain_text() {
        let s = parse(&[("pod", "web-0")]).unwrap();
        assert_eq!(s.target.namespace, "default");
        assert_eq!(s.target.pod, "web-0");
        assert_eq!(s.target.container, None);
        assert_eq!(s.call, Call::Exec(vec!["/bin/sh".to_owned()]));
        assert!(matches!(s.trust, ServerTrust::Plain));
        assert!(matches!(s.credentials, Credentials::None));
        let s = parse(&[
            ("pod", "web-0"),
            ("namespace", "prod"),
            ("container", "app"),
            ("exec-command", " ls  -l /tmp "),
        ])
        .unwrap();
        assert_eq!(s.target.container.as_deref(), Some("app"));
        assert_eq!(
            s.call,
            Call::Exec(vec!["ls".into(), "-l".into(), "/tmp".into()])
        );
        assert_eq!(
            parse(&[("pod", "p"), ("attach", "true")]).unwrap().call,
            Call::Attach
        );
    }

    #[test]
    fn tls_and_credentials_are_read_and_held_as_secrets() {
        let (cert, key) = pem();
        let s = parse(&[
            ("pod", "p"),
            ("use-ssl", "true"),
            ("ca-cert", &cert),
            ("client-cert", &cert),
            ("client-key", &key),
        ])
        .unwrap();
        assert!(matches!(&s.trust, ServerTrust::Pinned(c) if c.len() == 1));
        assert_eq!(s.credentials.kind(), "client_certificate");
        let s = parse(&[
            ("pod", "p"),
            ("use-ssl", "true"),
            ("ignore-cert", "true"),
            ("bearer-token", "eyJhbGciOi.abc"),
        ])
        .unwrap();
        assert!(matches!(s.trust, ServerTrust::Unverified));
        assert!(
            matches!(&s.credentials, Credentials::Token(t) if t.expose_secret() == "eyJhbGciOi.abc")
        );
        assert!(!format!("{s:?}").contains("eyJhbGciOi"));
        let s = parse(&[("pod", "p"), ("use-ssl", "true")]).unwrap();
        assert!(matches!(s.trust, ServerTrust::PublicRoots));
    }

    #[test]
    fn bad_values_name_the_parameter_and_never_show_the_value() {
        let (cert, key) = pem();
        for (pairs, name) in [
            (vec![], "pod"),
            (vec![("pod", "Evil/../x")], "pod"),
            (vec![("pod", "p"), ("namespace", "a?evil=1")], "namespace"),
            (vec![("pod", "p"), ("container", "evil app")], "container"),
            (
                vec![("pod", "p"), ("attach", "true"), ("exec-command", "evil")],
                "attach",
            ),
            (vec![("pod", "p"), ("bearer-token", "evil")], "bearer-token"),
            (vec![("pod", "p"), ("client-key", &key)], "client-key"),
            (
                vec![("pod", "p"), ("use-ssl", "true"), ("client-cert", &cert)],
                "client-key",
            ),
            (
                vec![("pod", "p"), ("use-ssl", "true"), ("ca-cert", "evil")],
                "ca-cert",
            ),
            (
                vec![
                    ("pod", "p"),
                    ("use-ssl", "true"),
                    ("client-cert", &cert),
                    ("client-key", "evil"),
                ],
                "client-key",
            ),
            (
                vec![
                    ("pod", "p"),
                    ("use-ssl", "true"),
                    ("bearer-token", "evil token"),
                ],
                "bearer-token",
            ),
            (
                vec![
                    ("pod", "p"),
                    ("use-ssl", "true"),
                    ("ignore-cert", "true"),
                    ("ca-cert", &cert),
                ],
                "ignore-cert",
            ),
            (vec![("pod", "p"), ("use-ssl", "evil")], "use-ssl"),
        ] {
            let error = parse(&pairs).unwrap_err();
            assert_eq!(error.name, name, "{pairs:?}");
            assert!(!error.to_string().contains("evil"), "{error}");
        }
        // `ignore-cert=false` says nothing, so it needs no TLS.
        assert!(parse(&[("pod", "p"), ("ignore-cert", "false")]).is_ok());
    }
}
