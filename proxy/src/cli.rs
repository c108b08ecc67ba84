//! The `ztproxy` command line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use zt_api::Secret;
use zt_api::control::{
    Conversation, CreateSessionRequest, LimitsRequest, RecordingRequest, Route, Target, Transport,
};

use crate::client::api::{ApiAddress, ApiClient};
use crate::client::local::LocalListener;
use crate::client::session::{self as client_session, ClientSession, TunnelError, TunnelOptions};
use crate::config::{Config, LogConfig};
use crate::transport::webrtc::PeerSettings;

/// Exit status when the session could not be created or connected.
pub const EXIT_FAILED: u8 = 1;
/// Exit status when ztproxy ended the session (revoked, timed out).
pub const EXIT_SESSION_ENDED: u8 = 3;

/// ztproxy: zero-trust tunnel and session proxy.
#[derive(Debug, Parser)]
#[command(name = "ztproxy", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar daemon.
    Serve(ServeArgs),
    /// Check a configuration file and exit.
    CheckConfig(ServeArgs),
    /// Client commands: what the vault's desktop app does.
    #[command(subcommand)]
    Connect(Box<ConnectCommand>),
    /// Print a new random control API token (for `control.token_file`).
    GenToken,
    /// Recordings: generate keys, inspect, verify, export and play.
    #[command(subcommand)]
    Recording(RecordingCommand),
}

#[derive(Debug, Subcommand)]
enum RecordingCommand {
    /// Play a recording in the browser: serves a local player page; the recording is
    /// decrypted here, the browser never holds the key.
    Play(PlayArgs),
    #[command(flatten)]
    Other(zt_recorder_cli::RecordingCommand),
}

#[derive(Debug, Args)]
struct PlayArgs {
    /// Recording file.
    file: PathBuf,
    /// Key to decrypt it.
    #[command(flatten)]
    key: zt_recorder_cli::KeyArgs,
    /// Local address to serve the player on (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Open the player in the system browser.
    #[arg(long)]
    open: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(
        long,
        short,
        env = "ZTPROXY_CONFIG",
        default_value = "/etc/ztproxy/ztproxy.toml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum ConnectCommand {
    /// Create a tunnel session and forward a local port to its target.
    Tunnel(TunnelArgs),
    /// Serve the browser client on loopback: each page load becomes a connection session
    /// (WebRTC) to the target, with the credentials given here, never the page's.
    Web(WebArgs),
    /// Serve the browser client on loopback for a viewer of a running connection session:
    /// each page load joins it (WebRTC) and shows its screen, read-only unless --input.
    View(ViewArgs),
    /// Listen as guacd does: each TCP connection becomes a connection session to the target,
    /// so any Guacamole client works with ztproxy.
    Guac(GuacArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RouteArg {
    /// ztproxy's own protocol client (the default for SSH).
    Native,
    /// The external guacd ztproxy is configured with (the default for RDP).
    Guacd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RecordArg {
    /// What the user saw (Guacamole instructions).
    Graphical,
    /// Terminal output as a typescript.
    Typescript,
}

/// A connection session as the gateway would create it.
#[derive(Debug, Args)]
struct ConnectionArgs {
    #[command(flatten)]
    access: AccessArgs,
    /// The target, host:port (chosen by the gateway in production).
    #[arg(long)]
    target: String,
    /// The protocol: ssh, rdp, vnc, telnet, …
    #[arg(long)]
    protocol: String,
    /// How ztproxy reaches the target (default: native for SSH, guacd otherwise).
    #[arg(long, value_enum)]
    route: Option<RouteArg>,
    /// JSON file with the connection parameters (credentials and policy, guacd's names:
    /// {"username": "…", "password": "…", "host-key": "…", "disable-copy": "true"}).
    #[arg(long, value_name = "PATH", conflicts_with = "parameters_env")]
    parameters_file: Option<PathBuf>,
    /// Name of an environment variable holding the parameters as JSON.
    #[arg(long, value_name = "VAR")]
    parameters_env: Option<String>,
    /// The user's name (audit).
    #[arg(long)]
    user: Option<String>,
    /// Record the session (comma-separated: graphical, typescript).
    #[arg(long, value_enum, value_delimiter = ',')]
    record: Vec<RecordArg>,
    /// File with the base64 resource secret recordings are wrapped under.
    #[arg(long, value_name = "PATH")]
    recording_secret_file: Option<PathBuf>,
    /// Ask for this idle timeout ("15m").
    #[arg(long, value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Ask for this maximum duration ("8h").
    #[arg(long, value_parser = humantime::parse_duration)]
    max_duration: Option<Duration>,
}

#[derive(Debug, Args)]
struct ViewArgs {
    #[command(flatten)]
    access: AccessArgs,
    /// The id of the connection session to watch.
    #[arg(long)]
    session: String,
    /// Who watches (audit, and the owner's recording).
    #[arg(long)]
    user: String,
    /// Let the viewer's keys and mouse reach the target (default: read-only).
    #[arg(long)]
    input: bool,
    /// Give the viewer the clipboard the target sets.
    #[arg(long)]
    clipboard: bool,
    /// Local address to serve the page on (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Open the page in the system browser.
    #[arg(long)]
    open: bool,
}

#[derive(Debug, Args)]
struct WebArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Local address to serve the page on (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Open the page in the system browser.
    #[arg(long)]
    open: bool,
}

#[derive(Debug, Args)]
struct GuacArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// How to reach ztproxy.
    #[arg(long, value_enum, default_value = "webrtc")]
    transport: TransportArg,
    /// Local address to listen on, as guacd would.
    #[arg(long, default_value = "127.0.0.1:4822")]
    listen: SocketAddr,
    /// Local UDP address for WebRTC candidates (repeatable).
    #[arg(long = "udp-addr", default_value = "127.0.0.1:0")]
    udp_addrs: Vec<String>,
    /// How long to wait for the connection to ztproxy.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    connect_timeout: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TransportArg {
    Webrtc,
    Quic,
}

/// How to reach the control API, and the keys that seal the signalling.
#[derive(Debug, Args)]
struct AccessArgs {
    /// Control API: unix:/path/to/socket or http://127.0.0.1:PORT.
    #[arg(
        long,
        env = "ZTPROXY_API",
        default_value = "unix:/run/ztproxy/control.sock"
    )]
    api: ApiAddress,
    /// File with the control API bearer token (for an http:// API).
    #[arg(long, env = "ZTPROXY_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Resource id; with --traffic-secret-file, seals the offer and answer.
    #[arg(long)]
    resource_id: Option<String>,
    /// File with the resource's base64 traffic secret: seal the signalling.
    #[arg(long, requires = "resource_id")]
    traffic_secret_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TunnelArgs {
    #[command(flatten)]
    access: AccessArgs,
    /// The target, host:port (chosen by the gateway in production).
    #[arg(long)]
    target: String,
    /// How to reach ztproxy.
    #[arg(long, value_enum, default_value = "webrtc")]
    transport: TransportArg,
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Protocol label for the session (audit only).
    #[arg(long)]
    protocol: Option<String>,
    /// Ask for this idle timeout ("15m").
    #[arg(long, value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Ask for this maximum duration ("8h").
    #[arg(long, value_parser = humantime::parse_duration)]
    max_duration: Option<Duration>,
    /// Ask for at most this many concurrent connections.
    #[arg(long)]
    max_connections: Option<u32>,
    /// Local UDP address for WebRTC candidates (repeatable).
    #[arg(long = "udp-addr", default_value = "127.0.0.1:0")]
    udp_addrs: Vec<String>,
    /// SCTP MTU (WebRTC); leave unset unless the path MTU is known.
    #[arg(long)]
    sctp_mtu: Option<u32>,
    /// How long to wait for the connection to ztproxy.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    connect_timeout: Duration,
}

/// Runs the command line; the process exit status is the result.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ztproxy: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve(&args.config).await,
        Command::CheckConfig(args) => match Config::load(&args.config) {
            Ok(_) => {
                println!("{}: ok", args.config.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("ztproxy: {error}");
                ExitCode::from(EXIT_FAILED)
            }
        },
        Command::Connect(command) => match *command {
            ConnectCommand::Tunnel(args) => connect_tunnel(args).await,
            ConnectCommand::Web(args) => connect_web(args).await,
            ConnectCommand::View(args) => connect_view(args).await,
            ConnectCommand::Guac(args) => connect_guac(args).await,
        },
        Command::Recording(RecordingCommand::Play(args)) => recording_play(args).await,
        Command::Recording(RecordingCommand::Other(command)) => {
            match tokio::task::spawn_blocking(move || zt_recorder_cli::run(command)).await {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(error)) => {
                    eprintln!("ztproxy recording: {error:#}");
                    ExitCode::from(EXIT_FAILED)
                }
                Err(error) => {
                    eprintln!("ztproxy recording: {error}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
        Command::GenToken => match crate::util::random_bytes::<32>() {
            Ok(bytes) => {
                use base64::Engine;
                println!(
                    "{}",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("ztproxy: no randomness available: {error}");
                ExitCode::from(EXIT_FAILED)
            }
        },
    }
}

async fn serve(config: &Path) -> ExitCode {
    let settings = match Config::load(config) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("ztproxy: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    crate::telemetry::init(&settings.log);
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    match crate::server::serve(settings, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "ztproxy cannot start");
            eprintln!("ztproxy: {}", error_chain(&error));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

async fn signal_shutdown(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop ztproxy with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn parse_target(text: &str) -> Result<Target, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}` is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("`{port}` is not a port number"))?;
    Ok(Target {
        host: host.to_owned(),
        port,
    })
}

fn read_secret_file(path: &Path) -> Result<Secret<String>, String> {
    let text = Secret::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    Ok(Secret::new(text.expose_secret().trim().to_owned()))
}

/// The control API token and the signalling secret the arguments name.
type Credentials = (Option<Secret<String>>, Option<(String, Secret<String>)>);

fn read_credentials(args: &AccessArgs) -> Result<Credentials, String> {
    let token = match &args.token_file {
        Some(path) => Some(read_secret_file(path)?),
        None => None,
    };
    let signalling = match (&args.resource_id, &args.traffic_secret_file) {
        (Some(resource), Some(path)) => Some((resource.clone(), read_secret_file(path)?)),
        _ => None,
    };
    Ok((token, signalling))
}

fn tunnel_options(
    args: &TunnelArgs,
    target: Target,
    signalling: Option<(String, Secret<String>)>,
) -> TunnelOptions {
    let mut peer = PeerSettings::loopback();
    peer.udp_addrs = args.udp_addrs.clone();
    peer.sctp_mtu = args.sctp_mtu;
    TunnelOptions {
        transport: args.transport.into(),
        target,
        protocol: args.protocol.clone(),
        signalling,
        limits: LimitsRequest {
            idle_timeout: args.idle_timeout,
            max_duration: args.max_duration,
            max_connections: args.max_connections,
        },
        resource_id: args.access.resource_id.clone(),
        peer,
        connect_timeout: args.connect_timeout,
    }
}

async fn connect_tunnel(args: TunnelArgs) -> ExitCode {
    crate::telemetry::init(&LogConfig {
        level: "warn".into(),
        ..LogConfig::default()
    });
    let fail = |message: String| {
        eprintln!("ztproxy connect: {message}");
        ExitCode::from(EXIT_FAILED)
    };
    let target = match parse_target(&args.target) {
        Ok(target) => target,
        Err(message) => return fail(message),
    };
    let (token, signalling) = match read_credentials(&args.access) {
        Ok(read) => read,
        Err(message) => return fail(message),
    };
    let (listener, local) = match bind_local(args.listen).await {
        Ok(bound) => bound,
        Err(message) => return fail(message),
    };
    let options = tunnel_options(&args, target.clone(), signalling);
    let api = ApiClient::new(args.access.api.clone(), token);
    let (session, id) = match ClientSession::connect(&api, &options).await {
        Ok(connected) => connected,
        Err(error) => return fail(error.to_string()),
    };
    println!(
        "{}",
        serde_json::json!({
            "event": "listening",
            "listen": local.to_string(),
            "session": id,
            "transport": options.transport.as_str(),
        })
    );
    eprintln!(
        "ztproxy: forwarding {local} to {target} over {} (session {id}); Ctrl-C to stop",
        options.transport.as_str()
    );
    let cancel = CancellationToken::new();
    tokio::spawn(signal_shutdown(cancel.clone()));
    match client_session::serve(session, listener, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(TunnelError::SessionEnded) => {
            eprintln!("ztproxy connect: the session was ended by ztproxy");
            ExitCode::from(EXIT_SESSION_ENDED)
        }
        Err(TunnelError::SessionEndedBecause(reason)) => {
            eprintln!(
                "ztproxy connect: the session was ended by ztproxy ({})",
                reason.as_str()
            );
            ExitCode::from(EXIT_SESSION_ENDED)
        }
        Err(error) => fail(error.to_string()),
    }
}

/// A TCP listener on `address` and the address it got.
async fn bind_local(address: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| format!("cannot listen on {address}: {error}"))?;
    let local = listener
        .local_addr()
        .map_err(|error| format!("cannot listen on {address}: {error}"))?;
    Ok((listener, local))
}

impl From<TransportArg> for Transport {
    fn from(transport: TransportArg) -> Self {
        match transport {
            TransportArg::Webrtc => Self::Webrtc,
            TransportArg::Quic => Self::Quic,
        }
    }
}

/// Reads the session's parameters from the file or variable the arguments name.
fn read_parameters(args: &ConnectionArgs) -> Result<BTreeMap<String, Secret<String>>, String> {
    let text = match (&args.parameters_file, &args.parameters_env) {
        (Some(path), _) => read_secret_file(path)?,
        (None, Some(var)) => Secret::new(
            std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?,
        ),
        (None, None) => return Ok(BTreeMap::new()),
    };
    let parsed: BTreeMap<String, serde_json::Value> = serde_json::from_str(text.expose_secret())
        .map_err(|e| {
            // serde_json's message names a position, never the content.
            format!("the parameters are not a JSON object of strings: {e}")
        })?;
    parsed
        .into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(text) => Ok((name, Secret::new(text))),
            serde_json::Value::Bool(flag) => Ok((name, Secret::new(flag.to_string()))),
            serde_json::Value::Number(number) => Ok((name, Secret::new(number.to_string()))),
            _ => Err(format!("parameter `{name}` is not a string")),
        })
        .collect()
}

/// The session request the arguments describe (no transport details yet).
fn connection_request(
    args: &ConnectionArgs,
    transport: Transport,
) -> Result<CreateSessionRequest, String> {
    let target = parse_target(&args.target)?;
    let parameters = read_parameters(args)?;
    let recording = if args.record.is_empty() {
        None
    } else {
        let secret = args
            .recording_secret_file
            .as_deref()
            .ok_or("--record needs --recording-secret-file")?;
        Some(RecordingRequest {
            graphical: args.record.contains(&RecordArg::Graphical),
            typescript: args.record.contains(&RecordArg::Typescript),
            resource_secret: Some(read_secret_file(secret)?),
            recipients: Vec::new(),
            fail_closed: None,
        })
    };
    Ok(CreateSessionRequest {
        transport,
        conversation: Conversation::Connection,
        protocol: Some(args.protocol.clone()),
        target,
        offer: None,
        sealed_offer: None,
        signalling: None,
        parameters,
        limits: LimitsRequest {
            idle_timeout: args.idle_timeout,
            max_duration: args.max_duration,
            max_connections: None,
        },
        route: args.route.map(|route| match route {
            RouteArg::Native => Route::Native,
            RouteArg::Guacd => Route::Guacd,
        }),
        recording,
        resource_id: args.access.resource_id.clone(),
        user: args.user.clone(),
    })
}

/// Starts the system browser on `url` (`--open`).
fn open_browser(url: &str) {
    match std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(_) => {}
        Err(error) => eprintln!("ztproxy: cannot start a browser ({error}); open the URL yourself"),
    }
}

async fn connect_web(args: WebArgs) -> ExitCode {
    crate::telemetry::init(&LogConfig {
        level: "warn".into(),
        ..LogConfig::default()
    });
    let fail = |message: String| {
        eprintln!("ztproxy connect web: {message}");
        ExitCode::from(EXIT_FAILED)
    };
    let request = match connection_request(&args.connection, Transport::Webrtc) {
        Ok(request) => request,
        Err(message) => return fail(message),
    };
    let (token, signalling) = match read_credentials(&args.connection.access) {
        Ok(read) => read,
        Err(message) => return fail(message),
    };
    let listener = match LocalListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => return fail(error.to_string()),
    };
    let url = listener.url("");
    let api = ApiClient::new(args.connection.access.api.clone(), token);
    let app = std::sync::Arc::new(crate::client::web::WebApp::new(api, request, signalling));
    println!(
        "{}",
        serde_json::json!({ "event": "listening", "url": url, "listen": listener.address().to_string() })
    );
    eprintln!("ztproxy: open {url} in a browser on this machine; Ctrl-C to stop");
    if args.open {
        open_browser(&url);
    }
    let cancel = CancellationToken::new();
    tokio::spawn(signal_shutdown(cancel.clone()));
    match crate::client::web::serve(listener, app, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(error.to_string()),
    }
}

async fn connect_view(args: ViewArgs) -> ExitCode {
    crate::telemetry::init(&LogConfig {
        level: "warn".into(),
        ..LogConfig::default()
    });
    let fail = |message: String| {
        eprintln!("ztproxy connect view: {message}");
        ExitCode::from(EXIT_FAILED)
    };
    let (token, signalling) = match read_credentials(&args.access) {
        Ok(read) => read,
        Err(message) => return fail(message),
    };
    let listener = match LocalListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => return fail(error.to_string()),
    };
    let api = ApiClient::new(args.access.api.clone(), token);
    let request = zt_api::control::CreateViewerRequest {
        transport: Transport::Webrtc,
        offer: None,
        sealed_offer: None,
        signalling: None,
        user: args.user,
        input: args.input,
        clipboard: args.clipboard,
    };
    let app =
        match crate::client::web::WebApp::viewer(api, &args.session, request, signalling).await {
            Ok(app) => std::sync::Arc::new(app),
            Err(error) => return fail(format!("session {}: {error}", args.session)),
        };
    let url = listener.url("");
    println!(
        "{}",
        serde_json::json!({ "event": "listening", "url": url, "listen": listener.address().to_string() })
    );
    eprintln!("ztproxy: open {url} in a browser on this machine to watch; Ctrl-C to stop");
    if args.open {
        open_browser(&url);
    }
    let cancel = CancellationToken::new();
    tokio::spawn(signal_shutdown(cancel.clone()));
    match crate::client::web::serve(listener, app, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(error.to_string()),
    }
}

async fn connect_guac(args: GuacArgs) -> ExitCode {
    crate::telemetry::init(&LogConfig {
        level: "warn".into(),
        ..LogConfig::default()
    });
    let fail = |message: String| {
        eprintln!("ztproxy connect guac: {message}");
        ExitCode::from(EXIT_FAILED)
    };
    let transport = Transport::from(args.transport);
    let request = match connection_request(&args.connection, transport) {
        Ok(request) => request,
        Err(message) => return fail(message),
    };
    let (token, signalling) = match read_credentials(&args.connection.access) {
        Ok(read) => read,
        Err(message) => return fail(message),
    };
    let (listener, local) = match bind_local(args.listen).await {
        Ok(bound) => bound,
        Err(message) => return fail(message),
    };
    let mut peer = PeerSettings::loopback();
    peer.udp_addrs = args.udp_addrs.clone();
    let options = TunnelOptions {
        transport,
        target: request.target.clone(),
        protocol: request.protocol.clone(),
        signalling,
        limits: request.limits.clone(),
        resource_id: request.resource_id.clone(),
        peer,
        connect_timeout: args.connect_timeout,
    };
    println!(
        "{}",
        serde_json::json!({ "event": "listening", "listen": local.to_string(), "transport": transport.as_str() })
    );
    eprintln!(
        "ztproxy: guacd protocol on {local}; each connection is a session to {} over {}; Ctrl-C to stop",
        args.connection.target,
        transport.as_str()
    );
    let api = ApiClient::new(args.connection.access.api.clone(), token);
    let cancel = CancellationToken::new();
    tokio::spawn(signal_shutdown(cancel.clone()));
    crate::client::guac::serve(listener, api, request, options, cancel).await;
    ExitCode::SUCCESS
}

async fn recording_play(args: PlayArgs) -> ExitCode {
    let fail = |message: String| {
        eprintln!("ztproxy recording play: {message}");
        ExitCode::from(EXIT_FAILED)
    };
    let listener = match LocalListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => return fail(error.to_string()),
    };
    let file = args.file.clone();
    let key = args.key.clone();
    let playback =
        match tokio::task::spawn_blocking(move || crate::client::play::Playback::load(&file, &key))
            .await
        {
            Ok(Ok(playback)) => playback,
            Ok(Err(error)) => return fail(format!("{error:#}")),
            Err(error) => return fail(error.to_string()),
        };
    let url = listener.url("");
    println!(
        "{}",
        serde_json::json!({
            "event": "listening",
            "url": url,
            "kind": playback.kind,
            "duration_ms": playback.duration,
            "keyframes": playback.keyframes.len(),
        })
    );
    eprintln!(
        "ztproxy: playing {} at {url}; Ctrl-C to stop",
        args.file.display()
    );
    if args.open {
        open_browser(&url);
    }
    let cancel = CancellationToken::new();
    tokio::spawn(signal_shutdown(cancel.clone()));
    let app = std::sync::Arc::new(crate::client::play::PlayerApp::new(playback));
    match listener.serve(app, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = parse_target("db.example:5432").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("db.example", 5432));
        let t = parse_target("[::1]:22").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 22));
        assert!(parse_target("nohost").is_err());
        assert!(parse_target("h:99999").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
