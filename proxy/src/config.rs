//! The configuration file (TOML) and its validation into typed settings.
//!
//! The file is parsed once at start-up with unknown keys refused (`deny_unknown_fields`): a
//! typo in a security setting stops the daemon instead of being ignored. [`Config::load`]
//! returns [`Settings`], in which every value has been checked; nothing downstream
//! re-validates. Every field is documented in README.md ("Configuration reference"); keep
//! the two in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zt_api::Secret;

/// Errors in the configuration file. Each names the file and, where it can, the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file or a file it names could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The configuration file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The control API.
    #[serde(default)]
    pub control: ControlConfig,
    /// The WebRTC transport.
    #[serde(default)]
    pub webrtc: WebrtcConfig,
    /// The QUIC transport.
    #[serde(default)]
    pub quic: QuicConfig,
    /// Session limits and defaults.
    #[serde(default)]
    pub sessions: SessionsConfig,
    /// Tunnel data plane.
    #[serde(default)]
    pub tunnel: TunnelConfig,
    /// The external guacd for interactive connections.
    #[serde(default)]
    pub guacd: Option<GuacdConfig>,
    /// Where and how recordings are written.
    #[serde(default)]
    pub recordings: Option<RecordingsConfig>,
    /// Native SSH connections.
    #[serde(default)]
    pub ssh: SshConfig,
    /// Remote browser isolation.
    #[serde(default)]
    pub rbi: RbiConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// `[rbi]`: remote browser isolation (sessions with `"protocol": "http"`): one headless
/// Chromium per session.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbiConfig {
    /// The Chromium to run (Debian's `chromium`).
    #[serde(default = "default_chromium")]
    pub chromium: PathBuf,
    /// Where each session's fresh profile directory is made (the system's temporary
    /// directory when unset). Each is removed with its session.
    #[serde(default)]
    pub profile_directory: Option<PathBuf>,
    /// The most browsers running at once; a session beyond it is refused when created.
    #[serde(default = "default_max_browsers")]
    pub max_browsers: usize,
    /// Memory one browser may use, in MiB, enforced by a control group of its own where the
    /// platform allows (0: no group).
    #[serde(default = "default_browser_memory_mib")]
    pub memory_limit_mib: u64,
    /// Processes and threads one browser may run, likewise.
    #[serde(default = "default_browser_processes")]
    pub max_processes: u32,
}

impl RbiConfig {
    /// The caps for each browser's control group; `None` when `memory_limit_mib` is 0.
    pub fn caps(&self) -> Option<zt_rbi::cgroup::Caps> {
        (self.memory_limit_mib > 0).then(|| zt_rbi::cgroup::Caps {
            memory: self.memory_limit_mib.saturating_mul(1 << 20),
            processes: self.max_processes.max(16),
        })
    }
}

impl Default for RbiConfig {
    fn default() -> Self {
        Self {
            chromium: default_chromium(),
            profile_directory: None,
            max_browsers: default_max_browsers(),
            memory_limit_mib: default_browser_memory_mib(),
            max_processes: default_browser_processes(),
        }
    }
}

fn default_browser_memory_mib() -> u64 {
    2048
}

fn default_browser_processes() -> u32 {
    512
}

fn default_chromium() -> PathBuf {
    "/usr/bin/chromium".into()
}

fn default_max_browsers() -> usize {
    4
}

/// Validated `[rbi]`, with the count of browsers running.
#[derive(Debug, Clone)]
pub struct RbiSettings {
    /// The configuration.
    pub config: RbiConfig,
    /// One permit per browser that may run.
    pub browsers: std::sync::Arc<tokio::sync::Semaphore>,
}

/// `[ssh]`: native SSH connections (sessions with `"protocol": "ssh"` and no route, or
/// `"route": "native"`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// Log in to a target whose session has no `host-key` pin, and report the key's
    /// fingerprint in the `ssh_connected` audit event so the gateway can pin it. Off by
    /// default: such a target is refused before any credential is sent, since nothing
    /// proves it is not a machine in the middle.
    #[serde(default)]
    pub danger_accept_unpinned_host_keys: bool,
}

/// `[guacd]`: the guacd that RDP (and, on request, VNC, SSH, Telnet) connections go through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuacdConfig {
    /// guacd's address (`host:port`; guacd listens on 4822 by default).
    pub address: String,
    /// How long connecting and the handshake with guacd may take.
    #[serde(default = "default_guacd_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long ztproxy lets a `sync` from guacd go unanswered by a slow client before it
    /// answers itself (guacd drops clients silent for 15 s).
    #[serde(default = "default_sync_grace", with = "humantime_serde")]
    pub sync_grace: Duration,
    /// How long the user's client has for the Guacamole handshake.
    #[serde(default = "default_guacd_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

fn default_guacd_timeout() -> Duration {
    Duration::from_secs(15)
}

fn default_sync_grace() -> Duration {
    Duration::from_secs(5)
}

/// `[recordings]`: where session recordings are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingsConfig {
    /// Directory for recording files (created with mode 0700 when missing).
    pub directory: PathBuf,
    /// Ed25519 identity key (`ztproxy recording keygen ed25519`) that signs manifests.
    #[serde(default)]
    pub identity_key_file: Option<PathBuf>,
    /// X25519 public keys of auditors every recording is also wrapped to.
    #[serde(default)]
    pub recipient_files: Vec<PathBuf>,
    /// End a session whose recording fails (unless the session says otherwise).
    #[serde(default = "yes")]
    pub fail_closed: bool,
}

/// `[control]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Unix socket for the control API (mode 0600).
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Optional loopback TCP listener; requires `token_file`.
    #[serde(default)]
    pub tcp: Option<SocketAddr>,
    /// File holding the bearer token for the TCP listener (at least 32 characters).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Let the TCP listener bind a non-loopback address. The token then crosses a network.
    #[serde(default)]
    pub danger_allow_non_loopback_tcp: bool,
    /// How long a connection has to send a complete request head, counted from when it was
    /// accepted and from the end of each response (so also how long an idle keep-alive
    /// connection stays open).
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a request body may take to arrive.
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Connections open at once on the TCP listener; default from the open-files limit.
    #[serde(default)]
    pub max_tcp_connections: Option<usize>,
    /// Connections open at once on the Unix socket (a budget of its own, so a TCP flood
    /// cannot starve it); default from the open-files limit.
    #[serde(default)]
    pub max_unix_connections: Option<usize>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: default_socket(),
            tcp: None,
            token_file: None,
            danger_allow_non_loopback_tcp: false,
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            max_tcp_connections: None,
            max_unix_connections: None,
        }
    }
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/ztproxy/control.sock")
}

/// One STUN or TURN server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    /// `stun:host:port`, `turn:host:port?transport=udp`, …
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default)]
    pub credential: Option<Secret<String>>,
}

/// `[webrtc]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebrtcConfig {
    /// Whether WebRTC sessions may be created.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Local UDP addresses to gather host candidates on. A wildcard means every non-loopback
    /// interface; list a loopback address to offer loopback candidates too.
    #[serde(default = "default_udp_addrs")]
    pub udp_addrs: Vec<String>,
    /// STUN and TURN servers.
    #[serde(default)]
    pub ice_servers: Vec<IceServerConfig>,
    /// SO_RCVBUF and SO_SNDBUF of every WebRTC UDP socket. webrtc-rs stalls for a second at a
    /// time under load with the kernel's default buffers.
    #[serde(default = "default_socket_buffer")]
    pub socket_buffer_bytes: usize,
    /// SCTP packet size budget. Leave unset (1191, safe through TURN over IPv6) unless the
    /// path MTU is known to be larger.
    #[serde(default)]
    pub sctp_mtu: Option<u32>,
    /// How long to wait for ICE gathering before answering with what was gathered.
    #[serde(default = "default_gather_timeout", with = "humantime_serde")]
    pub gather_timeout: Duration,
    /// Refuse offers that are not sealed (DESIGN.md §3).
    #[serde(default)]
    pub require_sealed_signalling: bool,
    /// Silence after which ICE calls the connection disconnected.
    #[serde(default = "default_ice_disconnected", with = "humantime_serde")]
    pub ice_disconnected_timeout: Duration,
    /// Further silence after which it has failed: the session ends.
    #[serde(default = "default_ice_failed", with = "humantime_serde")]
    pub ice_failed_timeout: Duration,
    /// ICE keep-alive interval.
    #[serde(default = "default_ice_keep_alive", with = "humantime_serde")]
    pub ice_keep_alive: Duration,
    /// Accept mDNS (`.local`) candidates, which opens a multicast socket on every interface.
    #[serde(default)]
    pub multicast_dns: bool,
}

fn default_ice_disconnected() -> Duration {
    crate::transport::webrtc::IceLiveness::default().disconnected
}

fn default_ice_failed() -> Duration {
    crate::transport::webrtc::IceLiveness::default().failed
}

fn default_ice_keep_alive() -> Duration {
    crate::transport::webrtc::IceLiveness::default().keep_alive
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            udp_addrs: default_udp_addrs(),
            ice_servers: Vec::new(),
            socket_buffer_bytes: default_socket_buffer(),
            sctp_mtu: None,
            gather_timeout: default_gather_timeout(),
            require_sealed_signalling: false,
            ice_disconnected_timeout: default_ice_disconnected(),
            ice_failed_timeout: default_ice_failed(),
            ice_keep_alive: default_ice_keep_alive(),
            multicast_dns: false,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_udp_addrs() -> Vec<String> {
    vec!["0.0.0.0:0".to_owned(), "127.0.0.1:0".to_owned()]
}

fn default_socket_buffer() -> usize {
    4 * 1024 * 1024
}

fn default_gather_timeout() -> Duration {
    Duration::from_secs(2)
}

/// `[quic]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicConfig {
    /// UDP address of the QUIC endpoint; QUIC is disabled when absent.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// `host:port` given to clients; defaults to the bound address.
    #[serde(default)]
    pub advertise: Option<String>,
    /// TLS server name in the certificate and given to clients.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// SO_RCVBUF and SO_SNDBUF of the QUIC socket.
    #[serde(default = "default_socket_buffer")]
    pub socket_buffer_bytes: usize,
    /// How long a QUIC connection may stay open without presenting a valid token.
    #[serde(default = "default_auth_timeout", with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// Connections at once that have not yet presented a token (handshaking or waiting for
    /// the token). Beyond half of it, clients must prove their address (a QUIC Retry);
    /// beyond it, the oldest such connection is closed to make room.
    #[serde(default = "default_max_unauthenticated")]
    pub max_unauthenticated: usize,
    /// How often an idle connection is probed (both ends).
    #[serde(default = "default_quic_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// A connection that hears nothing for this long is dead: its session ends, and a client
    /// learns that ztproxy is gone, within this time.
    #[serde(default = "default_quic_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            listen: None,
            advertise: None,
            server_name: default_server_name(),
            socket_buffer_bytes: default_socket_buffer(),
            auth_timeout: default_auth_timeout(),
            max_unauthenticated: default_max_unauthenticated(),
            keep_alive: default_quic_keep_alive(),
            idle_timeout: default_quic_idle_timeout(),
        }
    }
}

fn default_max_unauthenticated() -> usize {
    128
}

fn default_quic_keep_alive() -> Duration {
    crate::transport::quic::KEEP_ALIVE
}

fn default_quic_idle_timeout() -> Duration {
    crate::transport::quic::IDLE_TIMEOUT
}

fn default_server_name() -> String {
    "ztproxy".to_owned()
}

fn default_auth_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[sessions]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// Most sessions at once.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Default and ceiling for a session's concurrent tunnelled connections.
    #[serde(default = "default_max_connections")]
    pub max_connections_per_session: u32,
    /// Default idle timeout.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest idle timeout a session may ask for.
    #[serde(default = "default_max_idle_timeout", with = "humantime_serde")]
    pub max_idle_timeout: Duration,
    /// Default and ceiling for a session's duration.
    #[serde(default = "default_max_duration", with = "humantime_serde")]
    pub max_duration: Duration,
    /// How long a created session waits for its client.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Whether connection sessions can be watched (live sharing). Each connection session
    /// then keeps a display model of its screen on a thread of its own, for viewers to join
    /// with.
    #[serde(default = "default_sharing")]
    pub sharing: bool,
}

fn default_sharing() -> bool {
    true
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            sharing: default_sharing(),
            max_sessions: default_max_sessions(),
            max_connections_per_session: default_max_connections(),
            idle_timeout: default_idle_timeout(),
            max_idle_timeout: default_max_idle_timeout(),
            max_duration: default_max_duration(),
            connect_timeout: default_connect_timeout(),
        }
    }
}

fn default_max_sessions() -> usize {
    1000
}

fn default_max_connections() -> u32 {
    256
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_max_idle_timeout() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_max_duration() -> Duration {
    Duration::from_secs(8 * 3600)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[tunnel]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// How long to wait for the target to accept a TCP connection.
    #[serde(default = "default_target_connect_timeout", with = "humantime_serde")]
    pub target_connect_timeout: Duration,
    /// Stop reading a socket while this many bytes are unacknowledged on the other side.
    #[serde(default = "default_high_water_mark")]
    pub high_water_mark_bytes: usize,
    /// Largest chunk read from a socket and sent as one message.
    #[serde(default = "default_chunk")]
    pub chunk_bytes: usize,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            target_connect_timeout: default_target_connect_timeout(),
            high_water_mark_bytes: default_high_water_mark(),
            chunk_bytes: default_chunk(),
        }
    }
}

fn default_target_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_high_water_mark() -> usize {
    1024 * 1024
}

fn default_chunk() -> usize {
    64 * 1024 - 1024
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directive (`info`, `zt_proxy=debug,webrtc=warn`).
    #[serde(default = "default_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// Replace client addresses and user names in log lines with `{REDACTED}`.
    #[serde(default)]
    pub redact_pii: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_level(),
            format: LogFormat::default(),
            redact_pii: false,
        }
    }
}

fn default_level() -> String {
    "info".to_owned()
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Validated settings.
#[derive(Debug)]
pub struct Settings {
    /// Control API.
    pub control: ControlSettings,
    /// WebRTC, when enabled.
    pub webrtc: Option<WebrtcSettings>,
    /// QUIC, when enabled.
    pub quic: Option<QuicSettings>,
    /// Sessions.
    pub sessions: SessionsConfig,
    /// Tunnel data plane.
    pub tunnel: TunnelConfig,
    /// guacd, when configured.
    pub guacd: Option<GuacdSettings>,
    /// Recordings, when configured.
    pub recordings: Option<std::sync::Arc<RecordingsSettings>>,
    /// Native SSH connections.
    pub ssh: SshConfig,
    /// Remote browser isolation.
    pub rbi: RbiSettings,
    /// Logging.
    pub log: LogConfig,
}

/// Validated `[guacd]`.
#[derive(Debug, Clone)]
pub struct GuacdSettings {
    /// guacd's address.
    pub address: String,
    /// Connect and handshake timeout.
    pub connect_timeout: Duration,
    /// Sync grace.
    pub sync_grace: Duration,
    /// Client handshake timeout.
    pub handshake_timeout: Duration,
}

/// Validated `[recordings]`, with the keys read.
pub struct RecordingsSettings {
    /// Directory for recordings.
    pub directory: PathBuf,
    /// Identity key signing manifests.
    pub identity: Option<std::sync::Arc<zt_recorder::IdentityKey>>,
    /// Auditors' public keys.
    pub recipients: Vec<zt_recorder::RecipientPublicKey>,
    /// Default failure policy.
    pub fail_closed: bool,
}

impl std::fmt::Debug for RecordingsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingsSettings")
            .field("directory", &self.directory)
            .field("identity", &self.identity.is_some())
            .field("recipients", &self.recipients.len())
            .field("fail_closed", &self.fail_closed)
            .finish()
    }
}

/// Validated `[control]`.
#[derive(Debug)]
pub struct ControlSettings {
    /// Unix socket path.
    pub socket: PathBuf,
    /// TCP listener and its token.
    pub tcp: Option<(SocketAddr, Secret<String>)>,
    /// Deadline for a request head (and idle keep-alive).
    pub header_timeout: Duration,
    /// Deadline for a request body.
    pub body_timeout: Duration,
    /// TCP connection budget, when configured.
    pub max_tcp_connections: Option<usize>,
    /// Unix socket connection budget, when configured.
    pub max_unix_connections: Option<usize>,
}

/// Validated `[webrtc]`.
#[derive(Debug, Clone)]
pub struct WebrtcSettings {
    /// What every session's peer connection is built with.
    pub peer: crate::transport::webrtc::PeerSettings,
    /// Refuse unsealed offers.
    pub require_sealed_signalling: bool,
}

/// Validated `[quic]`.
#[derive(Debug, Clone)]
pub struct QuicSettings {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Advertised endpoint.
    pub advertise: Option<String>,
    /// TLS server name.
    pub server_name: String,
    /// Socket buffer size.
    pub socket_buffer_bytes: usize,
    /// Authentication timeout.
    pub auth_timeout: Duration,
    /// Unauthenticated connections at once.
    pub max_unauthenticated: usize,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
}

/// Shortest control API token accepted.
pub const MIN_TOKEN_LEN: usize = 32;
/// Largest socket buffer accepted.
pub const MAX_SOCKET_BUFFER: usize = 256 * 1024 * 1024;

impl Config {
    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)?.validate(path)
    }

    /// Parses configuration text; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Checks every value and reads the files the configuration names.
    pub fn validate(self, path: &Path) -> Result<Settings, ConfigError> {
        let check = Check { path };
        let control = validate_control(self.control, &check)?;
        // A data channel's send buffer is the tunnel's high-water mark.
        let webrtc = validate_webrtc(self.webrtc, self.tunnel.high_water_mark_bytes, &check)?;
        let quic = validate_quic(self.quic, &check)?;
        validate_sessions(&self.sessions, &check)?;
        validate_tunnel(&self.tunnel, &check)?;
        let guacd = validate_guacd(self.guacd, &check)?;
        let recordings = match self.recordings {
            None => None,
            Some(r) => Some(std::sync::Arc::new(read_recordings(r, path)?)),
        };
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(check.invalid(
                "log.level",
                format!("`{}` is not a tracing filter", self.log.level),
            ));
        }
        if self.rbi.max_browsers > 1024 {
            return Err(check.invalid("rbi.max_browsers", "must be at most 1024".to_owned()));
        }
        let rbi = RbiSettings {
            browsers: std::sync::Arc::new(tokio::sync::Semaphore::new(self.rbi.max_browsers)),
            config: self.rbi,
        };
        Ok(Settings {
            control,
            webrtc,
            quic,
            sessions: self.sessions,
            tunnel: self.tunnel,
            guacd,
            recordings,
            ssh: self.ssh,
            rbi,
            log: self.log,
        })
    }
}

/// Where a configuration came from, for its errors.
struct Check<'a> {
    path: &'a Path,
}

impl Check<'_> {
    fn invalid(&self, key: &'static str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key,
            message,
        }
    }

    fn buffer(&self, key: &'static str, value: usize) -> Result<(), ConfigError> {
        if (64 * 1024..=MAX_SOCKET_BUFFER).contains(&value) {
            Ok(())
        } else {
            Err(self.invalid(
                key,
                format!("must be between 65536 and {MAX_SOCKET_BUFFER}"),
            ))
        }
    }
}

fn validate_control(
    control: ControlConfig,
    check: &Check<'_>,
) -> Result<ControlSettings, ConfigError> {
    if control.socket.as_os_str().is_empty() {
        return Err(check.invalid("control.socket", "must not be empty".into()));
    }
    let tcp = match (control.tcp, &control.token_file) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(check.invalid("control.token_file", "is only used with control.tcp".into()));
        }
        (Some(_), None) => {
            return Err(check.invalid(
                "control.tcp",
                "a TCP control listener requires control.token_file".into(),
            ));
        }
        (Some(addr), Some(token_file)) => {
            if !addr.ip().is_loopback() && !control.danger_allow_non_loopback_tcp {
                return Err(check.invalid(
                    "control.tcp",
                    "must be a loopback address (set danger_allow_non_loopback_tcp to \
                     override)"
                        .into(),
                ));
            }
            let token = read_token(token_file).map_err(|source| ConfigError::Read {
                path: token_file.clone(),
                source,
            })?;
            if token.expose_secret().len() < MIN_TOKEN_LEN {
                return Err(check.invalid(
                    "control.token_file",
                    format!("the token must be at least {MIN_TOKEN_LEN} characters"),
                ));
            }
            if token.expose_secret().bytes().any(|b| !b.is_ascii_graphic()) {
                return Err(check.invalid(
                    "control.token_file",
                    "the token must be printable ASCII without spaces".into(),
                ));
            }
            Some((addr, token))
        }
    };
    for (key, value) in [
        ("control.header_timeout", control.header_timeout),
        ("control.body_timeout", control.body_timeout),
    ] {
        if value < Duration::from_millis(100) || value > Duration::from_secs(300) {
            return Err(check.invalid(key, "must be between 100ms and 5m".into()));
        }
    }
    for (key, value) in [
        ("control.max_tcp_connections", control.max_tcp_connections),
        ("control.max_unix_connections", control.max_unix_connections),
    ] {
        if value.is_some_and(|n| !(1..=1_000_000).contains(&n)) {
            return Err(check.invalid(key, "must be between 1 and 1000000".into()));
        }
    }

    Ok(ControlSettings {
        socket: control.socket,
        tcp,
        header_timeout: control.header_timeout,
        body_timeout: control.body_timeout,
        max_tcp_connections: control.max_tcp_connections,
        max_unix_connections: control.max_unix_connections,
    })
}

fn validate_webrtc(
    w: WebrtcConfig,
    send_buffer_limit: usize,
    check: &Check<'_>,
) -> Result<Option<WebrtcSettings>, ConfigError> {
    if !w.enabled {
        return Ok(None);
    }
    {
        if w.udp_addrs.is_empty() {
            return Err(check.invalid("webrtc.udp_addrs", "must not be empty".into()));
        }
        for addr in &w.udp_addrs {
            if addr.parse::<SocketAddr>().is_err() {
                return Err(check.invalid(
                    "webrtc.udp_addrs",
                    format!("`{addr}` is not an IP:port address"),
                ));
            }
        }
        validate_ice_servers(&w.ice_servers, check)?;
        check.buffer("webrtc.socket_buffer_bytes", w.socket_buffer_bytes)?;
        if let Some(mtu) = w.sctp_mtu
            && !(576..=16_000).contains(&mtu)
        {
            return Err(check.invalid(
                "webrtc.sctp_mtu",
                "must be between 576 and 16000 (a DTLS record holds at most 16 KiB)".into(),
            ));
        }
        if w.gather_timeout.is_zero() || w.gather_timeout > Duration::from_secs(30) {
            return Err(check.invalid(
                "webrtc.gather_timeout",
                "must be between 1ms and 30s".into(),
            ));
        }
        for (key, value) in [
            (
                "webrtc.ice_disconnected_timeout",
                w.ice_disconnected_timeout,
            ),
            ("webrtc.ice_failed_timeout", w.ice_failed_timeout),
            ("webrtc.ice_keep_alive", w.ice_keep_alive),
        ] {
            if value < Duration::from_millis(100) || value > Duration::from_secs(300) {
                return Err(check.invalid(key, "must be between 100ms and 5m".into()));
            }
        }
        if w.ice_keep_alive >= w.ice_disconnected_timeout {
            return Err(check.invalid(
                "webrtc.ice_keep_alive",
                "must be less than webrtc.ice_disconnected_timeout".into(),
            ));
        }
        let peer = crate::transport::webrtc::PeerSettings {
            udp_addrs: w.udp_addrs,
            ice_servers: w.ice_servers,
            socket_buffer_bytes: w.socket_buffer_bytes,
            sctp_mtu: w.sctp_mtu,
            gather_timeout: w.gather_timeout,
            send_buffer_limit,
            liveness: crate::transport::webrtc::IceLiveness {
                disconnected: w.ice_disconnected_timeout,
                failed: w.ice_failed_timeout,
                keep_alive: w.ice_keep_alive,
            },
            multicast_dns: w.multicast_dns,
        };
        Ok(Some(WebrtcSettings {
            peer,
            require_sealed_signalling: w.require_sealed_signalling,
        }))
    }
}

/// Every ICE server has a STUN or TURN URL, and every TURN server its credentials.
fn validate_ice_servers(servers: &[IceServerConfig], check: &Check<'_>) -> Result<(), ConfigError> {
    for server in servers {
        if server.urls.is_empty() {
            return Err(check.invalid("webrtc.ice_servers", "urls must not be empty".into()));
        }
        for url in &server.urls {
            let scheme_ok = ["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|s| url.starts_with(s));
            if !scheme_ok {
                return Err(check.invalid(
                    "webrtc.ice_servers",
                    format!("`{url}` is not a stun:, stuns:, turn: or turns: URL"),
                ));
            }
            if url.starts_with("turn") && server.credential.is_none() {
                return Err(check.invalid(
                    "webrtc.ice_servers",
                    "a TURN server needs username and credential".into(),
                ));
            }
        }
    }
    Ok(())
}

fn validate_quic(q: QuicConfig, check: &Check<'_>) -> Result<Option<QuicSettings>, ConfigError> {
    let Some(listen) = q.listen else {
        return Ok(None);
    };
    {
        check.buffer("quic.socket_buffer_bytes", q.socket_buffer_bytes)?;
        if q.server_name.is_empty() || q.server_name.len() > 253 {
            return Err(check.invalid("quic.server_name", "must be 1 to 253 bytes".into()));
        }
        if q.auth_timeout.is_zero() {
            return Err(check.invalid("quic.auth_timeout", "must not be zero".into()));
        }
        if !(2..=100_000).contains(&q.max_unauthenticated) {
            return Err(check.invalid(
                "quic.max_unauthenticated",
                "must be between 2 and 100000".into(),
            ));
        }
        if q.idle_timeout < Duration::from_secs(1) || q.idle_timeout > Duration::from_secs(600) {
            return Err(check.invalid("quic.idle_timeout", "must be between 1s and 10m".into()));
        }
        if q.keep_alive.is_zero() || q.keep_alive >= q.idle_timeout {
            return Err(check.invalid(
                "quic.keep_alive",
                "must be more than zero and less than quic.idle_timeout".into(),
            ));
        }
        Ok(Some(QuicSettings {
            listen,
            advertise: q.advertise,
            server_name: q.server_name,
            socket_buffer_bytes: q.socket_buffer_bytes,
            auth_timeout: q.auth_timeout,
            max_unauthenticated: q.max_unauthenticated,
            keep_alive: q.keep_alive,
            idle_timeout: q.idle_timeout,
        }))
    }
}

fn validate_sessions(s: &SessionsConfig, check: &Check<'_>) -> Result<(), ConfigError> {
    if s.max_sessions == 0 {
        return Err(check.invalid("sessions.max_sessions", "must be at least 1".into()));
    }
    if s.max_connections_per_session == 0 {
        return Err(check.invalid(
            "sessions.max_connections_per_session",
            "must be at least 1".into(),
        ));
    }
    for (key, value) in [
        ("sessions.idle_timeout", s.idle_timeout),
        ("sessions.max_idle_timeout", s.max_idle_timeout),
        ("sessions.max_duration", s.max_duration),
        ("sessions.connect_timeout", s.connect_timeout),
    ] {
        if value.is_zero() {
            return Err(check.invalid(key, "must not be zero".into()));
        }
    }
    if s.idle_timeout > s.max_idle_timeout {
        return Err(check.invalid(
            "sessions.idle_timeout",
            "must not exceed sessions.max_idle_timeout".into(),
        ));
    }

    Ok(())
}

fn validate_tunnel(t: &TunnelConfig, check: &Check<'_>) -> Result<(), ConfigError> {
    if t.target_connect_timeout.is_zero() {
        return Err(check.invalid("tunnel.target_connect_timeout", "must not be zero".into()));
    }
    if !(16 * 1024..=64 * 1024 * 1024).contains(&t.high_water_mark_bytes) {
        return Err(check.invalid(
            "tunnel.high_water_mark_bytes",
            "must be between 16 KiB and 64 MiB".into(),
        ));
    }
    if !(1024..=65_000).contains(&t.chunk_bytes) {
        return Err(check.invalid(
            "tunnel.chunk_bytes",
            "must be between 1024 and 65000 (the SCTP message limit is 64 KiB)".into(),
        ));
    }
    Ok(())
}

fn validate_guacd(
    guacd: Option<GuacdConfig>,
    check: &Check<'_>,
) -> Result<Option<GuacdSettings>, ConfigError> {
    let Some(g) = guacd else {
        return Ok(None);
    };
    {
        if g.address.is_empty() || !g.address.contains(':') {
            return Err(check.invalid("guacd.address", "must be host:port".into()));
        }
        for (key, value) in [
            ("guacd.connect_timeout", g.connect_timeout),
            ("guacd.handshake_timeout", g.handshake_timeout),
        ] {
            if value.is_zero() {
                return Err(check.invalid(key, "must not be zero".into()));
            }
        }
        if g.sync_grace.is_zero() || g.sync_grace >= Duration::from_secs(14) {
            return Err(check.invalid(
                "guacd.sync_grace",
                "must be between 1ms and 14s (guacd gives up on a client after 15s)".into(),
            ));
        }
        Ok(Some(GuacdSettings {
            address: g.address,
            connect_timeout: g.connect_timeout,
            sync_grace: g.sync_grace,
            handshake_timeout: g.handshake_timeout,
        }))
    }
}

fn read_recordings(
    config: RecordingsConfig,
    path: &Path,
) -> Result<RecordingsSettings, ConfigError> {
    let invalid = |key: &'static str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        key,
        message,
    };
    if config.directory.as_os_str().is_empty() {
        return Err(invalid("recordings.directory", "must not be empty".into()));
    }
    let read = |file: &Path| {
        std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            path: file.to_owned(),
            source,
        })
    };
    let identity = match &config.identity_key_file {
        None => None,
        Some(file) => {
            let text = Secret::new(read(file)?);
            let key = zt_recorder::IdentityKey::from_text(text.expose_secret()).map_err(|e| {
                invalid(
                    "recordings.identity_key_file",
                    format!("{}: {e}", file.display()),
                )
            })?;
            Some(std::sync::Arc::new(key))
        }
    };
    let mut recipients = Vec::new();
    for file in &config.recipient_files {
        let key = zt_recorder::RecipientPublicKey::from_text(&read(file)?).map_err(|e| {
            invalid(
                "recordings.recipient_files",
                format!("{}: {e}", file.display()),
            )
        })?;
        recipients.push(key);
    }
    Ok(RecordingsSettings {
        directory: config.directory,
        identity,
        recipients,
        fail_closed: config.fail_closed,
    })
}

fn read_token(path: &Path) -> std::io::Result<Secret<String>> {
    let text = Secret::new(std::fs::read_to_string(path)?);
    Ok(Secret::new(text.expose_secret().trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Config::parse(text, Path::new("test.toml"))?.validate(Path::new("test.toml"))
    }

    #[test]
    fn defaults_are_valid() {
        let settings = parse("").unwrap();
        assert!(settings.webrtc.is_some());
        assert!(settings.quic.is_none());
        assert!(settings.control.tcp.is_none());
    }

    #[test]
    fn unknown_keys_stop_start_up() {
        let err = parse("[sessions]\nmax_sesions = 3\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(err.to_string().contains("max_sesions"), "{err}");
    }

    #[test]
    fn tcp_requires_a_token_and_loopback() {
        let err = parse("[control]\ntcp = \"127.0.0.1:7780\"\n").unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                key: "control.tcp",
                ..
            }
        ));

        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "short").unwrap();
        let text = format!(
            "[control]\ntcp = \"127.0.0.1:7780\"\ntoken_file = \"{}\"\n",
            token.display()
        );
        let err = parse(&text).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                key: "control.token_file",
                ..
            }
        ));

        std::fs::write(&token, "a".repeat(40)).unwrap();
        assert!(parse(&text).is_ok());
        let remote = text.replace("127.0.0.1", "10.1.2.3");
        let err = parse(&remote).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                key: "control.tcp",
                ..
            }
        ));
    }

    #[test]
    fn durations_are_human() {
        let settings = parse("[sessions]\nidle_timeout = \"90s\"\n").unwrap();
        assert_eq!(settings.sessions.idle_timeout, Duration::from_secs(90));
        assert!(parse("[sessions]\nidle_timeout = \"0s\"\n").is_err());
    }

    #[test]
    fn values_are_range_checked() {
        assert!(parse("[webrtc]\nsctp_mtu = 40000\n").is_err());
        assert!(parse("[webrtc]\nudp_addrs = [\"nowhere\"]\n").is_err());
        assert!(parse("[tunnel]\nchunk_bytes = 70000\n").is_err());
        assert!(parse("[log]\nlevel = \"=\"\n").is_err());
        assert!(parse("[webrtc]\nice_servers = [{ urls = [\"http://x\"] }]\n").is_err());
    }
}
