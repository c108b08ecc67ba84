//! The login: TCP, key exchange with the host-key decision, authentication with the
//! session's credentials, and a pty with a shell (or `command`). Everything under the
//! `timeout` parameter. The decisions are in [`crate::hostkey`] and [`crate::auth`]; this is
//! the russh driver around them.

use std::sync::{Arc, Mutex};

use russh::client::{self, AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{Channel, ChannelMsg, Pty};

use crate::auth::{self, AuthPlan, Method};
use crate::error::Error;
use crate::hostkey::{self, UnpinnedPolicy, Verdict};
use crate::settings::SshSettings;

/// The ciphers offered, best first. AES-256-GCM leads (russh's default puts
/// ChaCha20-Poly1305 first): with ring's AES instructions it costs a fraction of
/// ChaCha20-Poly1305's CPU, which was a sixth of the proxy's in an SFTP download
/// (`bench/RESULTS.md`, "SFTP"). Both are AEADs; the rest are russh's defaults.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

/// What a login needs besides the session's [`SshSettings`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoginOptions {
    /// The proxy's policy for targets without a `host-key`.
    pub unpinned: UnpinnedPolicy,
    /// The pty's first size: columns, rows, width and height in pixels.
    pub size: (u16, u16, u32, u32),
    /// The client's time zone, used when `timezone` is unset (as guacd does).
    pub client_timezone: Option<String>,
}

impl LoginOptions {
    /// Options for a pty of `cols` × `rows` cells, `width` × `height` pixels.
    pub fn new(unpinned: UnpinnedPolicy, cols: u16, rows: u16, width: u32, height: u32) -> Self {
        Self {
            unpinned,
            size: (cols, rows, width, height),
            client_timezone: None,
        }
    }
}

/// What the login established, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoginInfo {
    /// The target's host key, `SHA256:…`.
    pub fingerprint: String,
    /// Its algorithm (`ssh-ed25519`).
    pub algorithm: String,
    /// Whether it was pinned (otherwise the unpinned policy accepted it).
    pub pinned: bool,
    /// The method that authenticated.
    pub method: Method,
}

/// A logged-in SSH connection with its pty and shell (or command) running.
pub struct SshConnection {
    pub(crate) handle: Handle<Verifier>,
    pub(crate) channel: Channel<client::Msg>,
    /// SFTP on this connection, when the session enabled it.
    pub(crate) sftp: Option<crate::settings::SftpSettings>,
    /// What the login established.
    pub info: LoginInfo,
}

impl std::fmt::Debug for SshConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshConnection")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Logs in to `host`:`port` with `settings`, under `settings.timeout`.
pub async fn login(
    host: &str,
    port: u16,
    settings: &SshSettings,
    options: &LoginOptions,
) -> Result<SshConnection, Error> {
    tokio::time::timeout(settings.timeout, login_inner(host, port, settings, options))
        .await
        .map_err(|_| Error::Timeout(settings.timeout))?
}

async fn login_inner(
    host: &str,
    port: u16,
    settings: &SshSettings,
    options: &LoginOptions,
) -> Result<SshConnection, Error> {
    // Decrypting a key (bcrypt for OpenSSH keys) is seconds of CPU at worst: not on the
    // runtime's threads.
    let key = match &settings.private_key {
        Some(text) => {
            let text = text.clone();
            let passphrase = settings.passphrase.clone();
            Some(
                tokio::task::spawn_blocking(move || {
                    russh::keys::decode_secret_key(
                        text.expose_secret(),
                        passphrase.as_ref().map(|p| p.expose_secret().as_str()),
                    )
                })
                .await
                .map_err(|_| Error::PrivateKey("could not be decoded"))?
                .map_err(|e| Error::PrivateKey(key_problem(&e)))?,
            )
        }
        None => None,
    };
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| Error::Unreachable(e.kind()))?;
    let _ = tcp.set_nodelay(true);

    let seen = Arc::new(Mutex::new(None));
    let verifier = Verifier {
        pin: settings.host_key.clone(),
        policy: options.unpinned,
        seen: seen.clone(),
    };
    let config = Arc::new(client::Config {
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(CIPHERS),
            ..russh::Preferred::DEFAULT
        },
        inactivity_timeout: None,
        keepalive_interval: settings.server_alive_interval,
        keepalive_max: 3,
        nodelay: true,
        ..client::Config::default()
    });
    let connected = client::connect_stream(config, tcp, verifier).await;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (mut handle, seen) = match (connected, seen) {
        (_, Some(seen)) if !seen.verdict.accepts() => {
            let (presented, algorithm) = (seen.fingerprint, seen.algorithm);
            return Err(if seen.verdict == Verdict::Mismatch {
                Error::HostKeyMismatch {
                    presented,
                    algorithm,
                }
            } else {
                Error::HostKeyUnpinned {
                    presented,
                    algorithm,
                }
            });
        }
        (Ok(handle), Some(seen)) => (handle, seen),
        (Err(error), _) => return Err(Error::protocol(&error)),
        // russh calls the verifier before it completes the key exchange.
        (Ok(_), None) => return Err(Error::Protocol("no host key was checked".into())),
    };
    let method = authenticate(&mut handle, settings, key).await?;
    let channel = open_terminal(&handle, settings, options).await?;
    Ok(SshConnection {
        handle,
        channel,
        sftp: settings.sftp.clone(),
        info: LoginInfo {
            fingerprint: seen.fingerprint,
            algorithm: seen.algorithm,
            pinned: seen.verdict == Verdict::Pinned,
            method,
        },
    })
}

fn key_problem(error: &russh::keys::Error) -> &'static str {
    match error {
        russh::keys::Error::KeyIsEncrypted => "is encrypted and no passphrase was given",
        _ => "is malformed, unsupported, or its passphrase is wrong",
    }
}

/// Tries the plan's methods until one succeeds; returns it.
async fn authenticate(
    handle: &mut Handle<Verifier>,
    settings: &SshSettings,
    key: Option<PrivateKey>,
) -> Result<Method, Error> {
    let user = settings.username.expose_secret().as_str();
    let password = settings
        .password
        .as_ref()
        .map(|p| p.expose_secret().as_str());
    let key = key.map(Arc::new);
    let mut plan = AuthPlan::new(key.is_some(), password.is_some());
    let mut allowed: Option<Vec<Method>> = None;
    loop {
        let Some(method) = plan.next(allowed.as_deref()) else {
            return Err(Error::AuthenticationFailed {
                tried: plan.tried(),
            });
        };
        let result = match (method, &key, password) {
            (Method::PublicKey, Some(key), _) => {
                let hash = if key.algorithm().is_rsa() {
                    // rsa-sha2-512 unless the server says it only knows SHA-1 `ssh-rsa`.
                    match handle.best_supported_rsa_hash().await {
                        Ok(Some(hash)) => hash,
                        _ => Some(HashAlg::Sha512),
                    }
                } else {
                    None
                };
                handle
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
                    .await
            }
            (Method::Password, _, Some(password)) => {
                handle.authenticate_password(user, password).await
            }
            (Method::KeyboardInteractive, _, Some(password)) => {
                keyboard_interactive(handle, user, password).await
            }
            _ => continue,
        }
        .map_err(|e| Error::protocol(&e))?;
        match result {
            AuthResult::Success => return Ok(method),
            AuthResult::Failure {
                remaining_methods, ..
            } => {
                allowed = Some(
                    remaining_methods
                        .iter()
                        .filter_map(|m| match m {
                            russh::MethodKind::PublicKey => Some(Method::PublicKey),
                            russh::MethodKind::Password => Some(Method::Password),
                            russh::MethodKind::KeyboardInteractive => {
                                Some(Method::KeyboardInteractive)
                            }
                            _ => None,
                        })
                        .collect(),
                );
            }
        }
    }
}

/// Answers the server's prompts from the credentials, for at most [`auth::MAX_ROUNDS`] rounds.
async fn keyboard_interactive(
    handle: &mut Handle<Verifier>,
    user: &str,
    password: &str,
) -> Result<AuthResult, russh::Error> {
    let mut response = handle
        .authenticate_keyboard_interactive_start(user, None)
        .await?;
    for _ in 0..auth::MAX_ROUNDS {
        match response {
            KeyboardInteractiveAuthResponse::Success => return Ok(AuthResult::Success),
            KeyboardInteractiveAuthResponse::Failure {
                remaining_methods,
                partial_success,
            } => {
                return Ok(AuthResult::Failure {
                    remaining_methods,
                    partial_success,
                });
            }
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                let Some(answers) = auth::answer_prompts(
                    prompts.iter().map(|p| (p.prompt.as_str(), p.echo)),
                    user,
                    password,
                ) else {
                    break;
                };
                response = handle
                    .authenticate_keyboard_interactive_respond(answers)
                    .await?;
            }
        }
    }
    Ok(AuthResult::Failure {
        remaining_methods: russh::MethodSet::empty(),
        partial_success: false,
    })
}

/// Opens the session channel: environment, pty, then the shell or `command`.
async fn open_terminal(
    handle: &Handle<Verifier>,
    settings: &SshSettings,
    options: &LoginOptions,
) -> Result<Channel<client::Msg>, Error> {
    let mut channel = handle
        .channel_open_session()
        .await
        .map_err(|_| Error::ChannelRefused("session channel"))?;
    let timezone = settings
        .timezone
        .as_deref()
        .or(options.client_timezone.as_deref());
    // No reply asked: sshd refuses variables its AcceptEnv does not list, as OpenSSH's
    // client accepts.
    for (name, value) in [("LANG", settings.locale.as_deref()), ("TZ", timezone)] {
        if let Some(value) = value {
            channel
                .set_env(false, name, value)
                .await
                .map_err(|e| Error::protocol(&e))?;
        }
    }
    let (cols, rows, width, height) = options.size;
    channel
        .request_pty(
            true,
            &settings.terminal_type,
            u32::from(cols),
            u32::from(rows),
            width,
            height,
            // The byte BackSpace sends is the pty's erase character (guacd does the same).
            &[
                (Pty::VERASE, u32::from(settings.terminal.backspace)),
                (Pty::IUTF8, 1),
            ],
        )
        .await
        .map_err(|e| Error::protocol(&e))?;
    expect_success(&mut channel, "pty").await?;
    match &settings.command {
        Some(command) => channel.exec(true, command.as_bytes()).await,
        None => channel.request_shell(true).await,
    }
    .map_err(|e| Error::protocol(&e))?;
    expect_success(
        &mut channel,
        if settings.command.is_some() {
            "command"
        } else {
            "shell"
        },
    )
    .await?;
    Ok(channel)
}

/// Waits for the reply to the last request on `channel`.
async fn expect_success(
    channel: &mut Channel<client::Msg>,
    what: &'static str,
) -> Result<(), Error> {
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => return Ok(()),
            Some(ChannelMsg::Failure) | None => return Err(Error::ChannelRefused(what)),
            // Window adjustments may come first; output cannot (nothing runs yet).
            Some(_) => {}
        }
    }
}

/// The key the target presented, and the decision on it.
struct Seen {
    fingerprint: String,
    algorithm: String,
    verdict: Verdict,
}

/// russh's handler: decides on the host key (and remembers what it saw, for the error or the
/// audit event).
pub(crate) struct Verifier {
    pin: Option<hostkey::HostKeyPin>,
    policy: UnpinnedPolicy,
    seen: Arc<Mutex<Option<Seen>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match presented {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            // A certificate is checked by the key it certifies.
            PublicKeyOrCertificate::Certificate(certificate) => {
                PublicKey::from(certificate.public_key().clone())
            }
        };
        let verdict = hostkey::decide(self.pin.as_ref(), self.policy, &key);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(Seen {
            fingerprint: hostkey::fingerprint(&key),
            algorithm: key.algorithm().as_str().to_owned(),
            verdict,
        });
        Ok(verdict.accepts())
    }
}
