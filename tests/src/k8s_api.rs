//! A Kubernetes API server test double: no Kubernetes runs on these machines, so the native
//! Kubernetes backend is tested against this peer. It serves the one thing the backend uses,
//! `pods/exec`, as the API server and kubelet do on the wire:
//!
//! * TLS (rustls) with a server certificate for `127.0.0.1` from a CA of its own
//!   ([`Pki::ca_pem`]); client certificates checked against a client CA with rustls's
//!   `WebPkiClientVerifier` (a certificate from another CA ends the handshake with an alert,
//!   as kube-apiserver's Go TLS does), or a bearer token;
//! * `GET /api/v1/namespaces/{ns}/pods/{pod}/exec?command=…&container=…&stdin=true&stdout=true&tty=true`
//!   upgraded to a WebSocket with the first offered subprotocol it supports (v5, then v4,
//!   as from Kubernetes 1.30), or a bare `403` when it supports none;
//! * refusals as plain HTTP with a `metav1.Status` body, worded as kube-apiserver words them:
//!   `401 Unauthorized`, `404 pods "x" not found`, `400 container x is not valid for pod y`;
//!   a container that is not running is refused after the upgrade, on the status stream,
//!   with `InternalError`, as the API server's stream translator does under v5;
//! * after the upgrade: an empty message on stdout first, then each exec runs the command
//!   (`command=` arguments, no shell) on a real pty on this machine (`setsid -c`, so the pty
//!   is its controlling terminal); stdin (stream 0) is written to the pty, output goes out on
//!   stream 1 in messages of at most 32 KiB, the resize stream (4, `{"Width":…,"Height":…}`)
//!   sets the pty's size, and at the process's end the status stream (3) carries `Success`
//!   or `NonZeroExitCode` with the `ExitCode` cause, then the connection closes.
//!
//! Every request's path, query and headers (the token's value masked) are kept for the tests
//! ([`ApiServer::requests`]).

// tungstenite's handshake callback answers a refusal as an `http::Response` by value.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures::{SinkExt as _, StreamExt as _};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

/// A CA and what it signed.
pub struct Pki {
    /// The server's CA (PEM): what `ca-cert` pins.
    pub ca_pem: String,
    /// A client certificate (PEM) from the client CA, for user `zt-admin`.
    pub client_cert_pem: String,
    /// Its key (PEM, PKCS#8).
    pub client_key_pem: String,
    /// A client certificate and key from another CA, which the server does not trust.
    pub stranger_cert_pem: String,
    /// Its key.
    pub stranger_key_pem: String,
    /// A CA that signed nothing the server holds (a wrong `ca-cert`).
    pub other_ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    client_ca: CertificateDer<'static>,
}

fn ca(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn leaf(
    names: &[&str],
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    Ok((params.signed_by(&key, issuer)?, key))
}

impl Pki {
    /// Fresh CAs and certificates.
    pub fn new() -> anyhow::Result<Self> {
        let server_ca = ca("zt-test kubernetes CA")?;
        let client_ca = ca("zt-test kubernetes client CA")?;
        let stranger_ca = ca("zt-test stranger CA")?;
        let other_ca = ca("zt-test other CA")?;
        let (server, server_key) = leaf(
            &["127.0.0.1", "kubernetes.default.svc"],
            "kube-apiserver",
            ExtendedKeyUsagePurpose::ServerAuth,
            &server_ca,
        )?;
        let (client, client_key) = leaf(
            &[],
            "zt-admin",
            ExtendedKeyUsagePurpose::ClientAuth,
            &client_ca,
        )?;
        let (stranger, stranger_key) = leaf(
            &[],
            "zt-admin",
            ExtendedKeyUsagePurpose::ClientAuth,
            &stranger_ca,
        )?;
        Ok(Self {
            ca_pem: server_ca.pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
            stranger_cert_pem: stranger.pem(),
            stranger_key_pem: stranger_key.serialize_pem(),
            other_ca_pem: other_ca.pem(),
            server_chain: vec![server.der().clone(), server_ca.der().clone()],
            server_key: server_key.serialize_der(),
            client_ca: client_ca.der().clone(),
        })
    }
}

/// A pod the server knows.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its containers, and whether each runs.
    pub containers: Vec<(String, bool)>,
}

impl Pod {
    /// A pod in `default` with one running container, `app`.
    pub fn running(name: &str) -> Self {
        Self {
            namespace: "default".into(),
            name: name.into(),
            containers: vec![("app".into(), true)],
        }
    }
}

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// The bearer token it accepts, besides client certificates.
    pub token: Option<String>,
    /// The subprotocols it supports, in its order of preference.
    pub protocols: Vec<&'static str>,
    /// Its pods.
    pub pods: Vec<Pod>,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        Self {
            token: None,
            protocols: vec!["v5.channel.k8s.io", "v4.channel.k8s.io"],
            pods: vec![Pod::running("web-0")],
        }
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path and query.
    pub uri: String,
    /// Headers (`authorization`'s value replaced by `<masked>`, or `<wrong>` when it did
    /// not match).
    pub headers: BTreeMap<String, String>,
    /// Whether the client presented a certificate the server trusts.
    pub client_certificate: bool,
    /// The HTTP status answered (101 for an upgrade).
    pub status: u16,
}

/// The running server. Stops on drop.
pub struct ApiServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its certificates.
    pub pki: Arc<Pki>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiServer {
    /// Starts a server with `options` on an ephemeral port.
    pub async fn start(options: ApiServerOptions) -> anyhow::Result<Self> {
        let pki = Arc::new(Pki::new()?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.client_ca.clone())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                pki.server_chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let options = Arc::new(options);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let seen = seen.clone();
                    let options = options.clone();
                    tokio::spawn(async move {
                        // A handshake the verifier refuses ends here, with its alert.
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let client_certificate = tls.get_ref().1.peer_certificates().is_some();
                        let _ = serve(tls, client_certificate, &options, &seen).await;
                    });
                }
            })
        };
        Ok(Self {
            port,
            pki,
            seen,
            task,
        })
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A `metav1.Status` refusal, as kube-apiserver writes it.
fn refusal(code: StatusCode, reason: &str, message: &str) -> ErrorResponse {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let body = body.to_string();
    let length = HeaderValue::from(body.len());
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("content-length", length);
    response
}

/// What an accepted request runs.
struct Accepted {
    command: Vec<String>,
    running: bool,
}

/// Checks a request as the API server would, in its order: authentication, the pod, the
/// container, the subprotocol.
fn check(
    request: &Request,
    client_certificate: bool,
    options: &ApiServerOptions,
) -> Result<(Accepted, &'static str), ErrorResponse> {
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authenticated =
        client_certificate || matches!((token, &options.token), (Some(t), Some(want)) if t == want);
    if !authenticated {
        return Err(refusal(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
        ));
    }
    let path = request.uri().path();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (namespace, pod_name) = match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", pod, "exec"] => (*ns, *pod),
        _ => {
            return Err(refusal(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    };
    let Some(pod) = options
        .pods
        .iter()
        .find(|p| p.namespace == namespace && p.name == pod_name)
    else {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{pod_name}\" not found"),
        ));
    };
    let mut command = Vec::new();
    let mut container = None;
    for pair in request.uri().query().unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match name {
            "command" => command.push(value),
            "container" => container = Some(value),
            _ => {}
        }
    }
    let container = match container {
        Some(name) => pod
            .containers
            .iter()
            .find(|(c, _)| *c == name)
            .ok_or_else(|| {
                refusal(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("container {name} is not valid for pod {pod_name}"),
                )
            })?,
        None if pod.containers.len() == 1 => &pod.containers[0],
        None => {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("a container name must be specified for pod {pod_name}"),
            ));
        }
    };
    if command.is_empty() {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least 1 command",
        ));
    }
    let offered = request
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(protocol) = offered
        .split(',')
        .map(str::trim)
        .find_map(|p| options.protocols.iter().find(|s| **s == p).copied())
    else {
        // What the API server answers when no subprotocol matches: 403, no body.
        let mut response = ErrorResponse::new(None);
        *response.status_mut() = StatusCode::FORBIDDEN;
        response
            .headers_mut()
            .insert("content-length", HeaderValue::from_static("0"));
        return Err(response);
    };
    Ok((
        Accepted {
            command,
            running: container.1,
        },
        protocol,
    ))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn serve(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    client_certificate: bool,
    options: &ApiServerOptions,
    seen: &Mutex<Vec<Seen>>,
) -> anyhow::Result<()> {
    let mut accepted = None;
    let callback = |request: &Request, mut response: Response| {
        let mut headers = BTreeMap::new();
        for (name, value) in request.headers() {
            let value = if name == "authorization" {
                let right = options
                    .token
                    .as_ref()
                    .is_some_and(|t| value.to_str().ok() == Some(format!("Bearer {t}").as_str()));
                if right { "<masked>" } else { "<wrong>" }.to_owned()
            } else {
                value.to_str().unwrap_or("<binary>").to_owned()
            };
            headers.insert(name.as_str().to_owned(), value);
        }
        let result = check(request, client_certificate, options);
        let status = match &result {
            Ok(_) => 101,
            Err(e) => e.status().as_u16(),
        };
        if let Ok(mut seen) = seen.lock() {
            seen.push(Seen {
                uri: request.uri().to_string(),
                headers,
                client_certificate,
                status,
            });
        }
        let (run, protocol) = result?;
        response
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
        accepted = Some((run, protocol));
        Ok(response)
    };
    let socket = tokio_tungstenite::accept_hdr_async(tls, callback).await?;
    let (run, protocol) = accepted.context("accepted")?;
    let (mut sink, mut source) = socket.split();
    if !run.running {
        let status = serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": "Internal error occurred: unable to upgrade connection: container not found (\"app\")",
            "reason": "InternalError",
            "details": {"causes": [{"message": "unable to upgrade connection: container not found (\"app\")"}]},
            "code": 500,
        });
        let mut message = vec![3];
        message.extend_from_slice(status.to_string().as_bytes());
        sink.send(Message::Binary(message.into())).await?;
        return close(sink, source).await;
    }
    let _ = protocol;
    // The kubelet's first message: empty, on stdout.
    sink.send(Message::Binary(vec![1].into())).await?;
    let mut pty = Pty::spawn(&run.command)?;
    let mut output_open = true;
    let mut exit = None;
    loop {
        tokio::select! {
            chunk = pty.output.recv(), if output_open => match chunk {
                Some(bytes) => {
                    let mut message = vec![1];
                    message.extend_from_slice(&bytes);
                    sink.send(Message::Binary(message.into())).await?;
                }
                None => output_open = false,
            },
            status = pty.child.wait(), if exit.is_none() => exit = Some(status?),
            message = source.next() => match message {
                Some(Ok(Message::Binary(data))) => match data.split_first() {
                    Some((0, input)) => pty.input(input),
                    Some((4, json)) => {
                        let size: serde_json::Value = serde_json::from_slice(json)?;
                        let cols = size["Width"].as_u64().context("Width")?;
                        let rows = size["Height"].as_u64().context("Height")?;
                        pty.resize(u16::try_from(cols)?, u16::try_from(rows)?)?;
                    }
                    // v5's close of stdin: a pty has no end of input to pass on.
                    Some((255, _)) => {}
                    _ => anyhow::bail!("a message on a stream the server does not read"),
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    let _ = pty.child.start_kill();
                    return Ok(());
                }
                Some(Ok(_)) => {}
            },
        }
        if let (false, Some(exit)) = (output_open, exit) {
            let status = match exit.code() {
                Some(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
                Some(code) => serde_json::json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", run.command.join(" ")),
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
                }),
                None => serde_json::json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": "error executing command: the process was killed",
                    "reason": "InternalError",
                    "code": 500,
                }),
            };
            let mut message = vec![3];
            message.extend_from_slice(status.to_string().as_bytes());
            sink.send(Message::Binary(message.into())).await?;
            return close(sink, source).await;
        }
    }
}

/// The WebSocket's closing handshake: our Close, then the client's messages until its own
/// Close (bounded), so the connection ends without a reset.
async fn close<S>(
    mut sink: futures::stream::SplitSink<S, Message>,
    mut source: futures::stream::SplitStream<S>,
) -> anyhow::Result<()>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + Unpin,
{
    sink.close().await?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(Ok(_)) = source.next().await {}
    })
    .await;
    Ok(())
}

/// A process on a pty of its own.
struct Pty {
    master: std::fs::File,
    child: tokio::process::Child,
    output: mpsc::Receiver<Vec<u8>>,
}

impl Pty {
    fn spawn(command: &[String]) -> anyhow::Result<Self> {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        use std::os::unix::ffi::OsStrExt as _;
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let name = ptsname(&master, Vec::new())?;
        rustix::termios::tcsetwinsize(
            &master,
            rustix::termios::Winsize {
                ws_row: 24,
                ws_col: 80,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )?;
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(std::ffi::OsStr::from_bytes(name.as_bytes()))?;
        let home = std::env::temp_dir();
        // `setsid -c` makes the pty the command's controlling terminal, as a container
        // runtime does for `tty: true`; `-w` waits so its status is the command's.
        let mut spawn = tokio::process::Command::new("setsid");
        spawn
            .args(["-c", "-w"])
            .args(command)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("TERM", "xterm")
            .env("HOME", &home)
            .env("PS1", "$ ")
            .current_dir(&home)
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave))
            .kill_on_drop(true);
        let child = spawn.spawn().context("setsid (util-linux)")?;
        // The slave's copies close with `spawn`: at the process's end the master reads EIO.
        drop(spawn);
        let master = std::fs::File::from(master);
        let mut reader = master.try_clone()?;
        let (tx, output) = mpsc::channel(16);
        std::thread::spawn(move || {
            let mut buffer = vec![0; 32 * 1024];
            // EIO once every process holding the slave has ended: the end of the output.
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                if tx.blocking_send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            master,
            child,
            output,
        })
    }

    fn input(&mut self, bytes: &[u8]) {
        // A process that has ended reads nothing more.
        let _ = self.master.write_all(bytes);
    }

    fn resize(&self, cols: u16, rows: u16) -> anyhow::Result<()> {
        rustix::termios::tcsetwinsize(
            &self.master,
            rustix::termios::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )?;
        Ok(())
    }
}
