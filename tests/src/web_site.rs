//! A small web site for the remote-browser tests, on 127.0.0.1 ports of its own, with an
//! access log: HTTP/1.1, one request per connection, pages whose content a test can find in
//! the client's pixels (full-width colour bands).
//!
//! * `/` — a red band and a resource from the same origin (`/app.css`);
//! * `/resources` — a blue band, an image from the same origin and an image and a script
//!   from [`WebSite::other`], the second origin (which a policy refuses);
//! * `/login` — a login form (`#username`, `#password`, `#go`) posting to `/login`; the
//!   right credentials get a green band ("welcome"), wrong ones a black one;
//! * `/form` — a focused text field (its caret transparent, so only typing changes the
//!   screen) posting to `/echo`, which answers with a yellow band;
//! * `/sockets` — what the DevTools Fetch domain does not see: a WebSocket to the other
//!   origin (`/ws-refused`), a shared worker (`/shared.js`) that fetches the other origin's
//!   `/worker-refused` and then its own `/worker-allowed`, then a WebSocket to its own origin (`/ws-allowed`); a teal band;
//! * `/redirect` → 302 `/redirect2` → 302 the other origin's `/landing`;
//! * `/animation` — a box sliding to and fro, for ever (the benchmark's busy page);
//! * `/get-report` (a grey band) goes on to `/download`, a file of [`REPORT_LEN`] bytes of
//!   [`report`] (`Content-Disposition: attachment; filename=report.bin`);
//! * `/upload` — a file input filling the top band; the file chosen is posted to `/uploaded`
//!   as text, and the band turns teal-green;
//! * hostile pages: `/memory` allocates without end (JavaScript objects), `/buffers` too
//!   (array buffers, which V8's heap limit does not bound), `/popups` opens thousands of windows
//!   (then shows a purple band), `/get-big` (an orange band) goes on to `/big-download`,
//!   an attachment that claims 10 GiB and streams zeros until the reader stops
//!   ([`WebSite::big_download_sent`] counts them).
//!
//! A third origin, [`WebSite::secure`], answers `/` over HTTPS with a self-signed certificate
//! (a brown band), for `ignore-server-cert`.
//!
//! Every request on each origin is logged ([`WebSite::log`], [`WebSite::other_log`]),
//! with its body for POSTs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// The length of `/download`.
pub const REPORT_LEN: usize = 300_000;

/// The bytes of `/download`.
pub fn report() -> Vec<u8> {
    (0..REPORT_LEN).map(|i| (i * 31 % 251) as u8).collect()
}

/// The colours of the pages' bands (RGB).
pub mod colour {
    /// `/`.
    pub const HOME: [u8; 3] = [220, 20, 20];
    /// `/resources`.
    pub const RESOURCES: [u8; 3] = [20, 20, 220];
    /// A successful login.
    pub const WELCOME: [u8; 3] = [20, 180, 20];
    /// A refused login.
    pub const REFUSED: [u8; 3] = [0, 0, 0];
    /// `/echo`.
    pub const ECHO: [u8; 3] = [230, 210, 20];
    /// `/form`.
    pub const FORM: [u8; 3] = [120, 20, 160];
    /// `/popups`, after its loop.
    pub const POPUPS: [u8; 3] = [160, 20, 120];
    /// `/get-big`.
    pub const GET_BIG: [u8; 3] = [240, 140, 20];
    /// `/get-report`.
    pub const GET_REPORT: [u8; 3] = [128, 128, 128];
    /// `/upload`, once a file was chosen and posted.
    pub const UPLOADED: [u8; 3] = [40, 200, 140];
    /// `/sockets`.
    pub const SOCKETS: [u8; 3] = [20, 160, 160];
    /// The HTTPS origin's `/`.
    pub const SECURE: [u8; 3] = [90, 60, 30];
}

/// The login the site accepts.
pub const USER: &str = "alice";
/// Its password.
pub const PASSWORD: &str = "zt-S3cret-pw!";

/// A request the site received.
#[derive(Debug, Clone)]
pub struct Hit {
    /// `GET`, `POST`.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The body (POST).
    pub body: String,
}

/// The running site. Its threads end with the process.
pub struct WebSite {
    /// The main origin's port.
    pub port: u16,
    /// The second origin's port.
    pub other: u16,
    /// The HTTPS origin's port (a self-signed certificate).
    pub secure: u16,
    log: Arc<Mutex<Vec<Hit>>>,
    secure_log: Arc<Mutex<Vec<Hit>>>,
    handshakes_failed: Arc<std::sync::atomic::AtomicU64>,
    other_log: Arc<Mutex<Vec<Hit>>>,
    big_sent: Arc<std::sync::atomic::AtomicU64>,
}

impl WebSite {
    /// Starts both origins.
    pub fn start() -> anyhow::Result<Self> {
        let main = TcpListener::bind("127.0.0.1:0")?;
        let other = TcpListener::bind("127.0.0.1:0")?;
        let secure = TcpListener::bind("127.0.0.1:0")?;
        let (port, other_port) = (main.local_addr()?.port(), other.local_addr()?.port());
        let secure_port = secure.local_addr()?.port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let secure_log = Arc::new(Mutex::new(Vec::new()));
        let other_log = Arc::new(Mutex::new(Vec::new()));
        let big_sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        serve(
            main,
            None,
            log.clone(),
            Some(big_sent.clone()),
            move |hit| page(hit, other_port),
        );
        let handshakes_failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tls = (self_signed()?, handshakes_failed.clone());
        serve(
            secure,
            Some(tls),
            secure_log.clone(),
            None,
            |hit| match hit.path.as_str() {
                "/" => html(200, "secure", &band(colour::SECURE)),
                _ => html(404, "not found", "<p>not found</p>"),
            },
        );
        serve(other, None, other_log.clone(), None, |hit| {
            match hit.path.as_str() {
                "/landing" => html(200, "landing", "<p>landing</p>"),
                _ => (200, "text/plain", Vec::new(), b"other origin".to_vec()),
            }
        });
        Ok(Self {
            port,
            other: other_port,
            secure: secure_port,
            log,
            secure_log,
            handshakes_failed,
            other_log,
            big_sent,
        })
    }

    /// Bytes of `/big-download` written so far (all requests).
    pub fn big_download_sent(&self) -> u64 {
        self.big_sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The main origin's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The second origin's URL for `path`.
    pub fn other_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.other)
    }

    /// The HTTPS origin's URL for `path`.
    pub fn secure_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.secure)
    }

    /// The HTTPS origin's requests so far (those that got past the TLS handshake).
    pub fn secure_log(&self) -> Vec<Hit> {
        self.secure_log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// TLS handshakes with the HTTPS origin that failed (a client refused the certificate).
    pub fn handshakes_failed(&self) -> u64 {
        self.handshakes_failed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The main origin's requests so far.
    pub fn log(&self) -> Vec<Hit> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The second origin's requests so far.
    pub fn other_log(&self) -> Vec<Hit> {
        self.other_log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

type Answer = (u16, &'static str, Vec<(String, String)>, Vec<u8>);

fn html(status: u16, title: &str, body: &str) -> Answer {
    (
        status,
        "text/html; charset=utf-8",
        Vec::new(),
        format!(
            "<!doctype html><html><head><title>{title}</title><style>body{{margin:0;font:16px sans-serif}} .band{{height:120px}}</style></head><body>{body}</body></html>"
        )
        .into_bytes(),
    )
}

fn band([r, g, b]: [u8; 3]) -> String {
    format!("<div class=band style=\"background:rgb({r},{g},{b})\"></div>")
}

fn redirect(to: String) -> Answer {
    (302, "text/plain", vec![("Location".into(), to)], Vec::new())
}

fn page(hit: &Hit, other: u16) -> Answer {
    let form_value = |name: &str| {
        hit.body.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| v.replace('+', " "))
        })
    };
    match (hit.method.as_str(), hit.path.as_str()) {
        ("GET", "/") => html(
            200,
            "home",
            &format!(
                "{}<link rel=stylesheet href=/app.css><p>zt-rbi home</p>",
                band(colour::HOME)
            ),
        ),
        ("GET", "/app.css") => (200, "text/css", Vec::new(), b"p{color:#333}".to_vec()),
        ("GET", "/pixel.png") => (200, "image/png", Vec::new(), Vec::new()),
        ("GET", "/resources") => html(
            200,
            "resources",
            &format!(
                "{}<img src=/pixel.png><img src=http://127.0.0.1:{other}/tracker.png><script src=http://127.0.0.1:{other}/x.js></script>",
                band(colour::RESOURCES)
            ),
        ),
        ("GET", "/login") => html(
            200,
            "login",
            "<form method=post action=/login><input id=username name=username autocomplete=username><input id=password name=password type=password><button id=go type=submit>Sign in</button></form>",
        ),
        ("POST", "/login") => {
            if form_value("username").as_deref() == Some(USER)
                && form_value("password")
                    .map(|p| percent_decode(&p))
                    .as_deref()
                    == Some(PASSWORD)
            {
                html(200, "welcome", &band(colour::WELCOME))
            } else {
                html(403, "refused", &band(colour::REFUSED))
            }
        }
        ("GET", "/form") => html(
            200,
            "form",
            &format!(
                "{}<form method=post action=/echo><input id=text name=text autofocus style=\"width:300px;caret-color:transparent\"><button id=send type=submit>Send</button></form>",
                band(colour::FORM)
            ),
        ),
        ("POST", "/echo") => html(200, "echo", &band(colour::ECHO)),
        ("GET", "/animation") => html(
            200,
            "animation",
            "<style>@keyframes slide { from { left: 0 } to { left: 600px } } #box { position: absolute; top: 150px; width: 120px; height: 120px; background: #2a6; animation: slide 2s linear infinite alternate }</style><p>zt-rbi animation</p><div id=box></div>",
        ),
        ("GET", "/memory") => html(
            200,
            "memory",
            "<script>const hoard = []; setInterval(() => { for (let i = 0; i < 50; i++) hoard.push(new Array(1 << 20).fill(Math.random())); }, 5);</script>",
        ),
        ("GET", "/buffers") => html(
            200,
            "buffers",
            "<script>const hoard = []; setInterval(() => { hoard.push(new Uint8Array(32 << 20).fill(1)); }, 5);</script>",
        ),
        ("GET", "/popups") => html(
            200,
            "popups",
            &format!(
                "<script>for (let i = 0; i < 5000; i++) window.open('/', '_blank');</script>{}",
                band(colour::POPUPS)
            ),
        ),
        ("GET", "/get-big") => html(
            200,
            "get-big",
            &format!(
                "{}<script>setTimeout(() => {{ location.href = '/big-download'; }}, 200);</script>",
                band(colour::GET_BIG)
            ),
        ),
        ("GET", "/sockets") => html(
            200,
            "sockets",
            &format!(
                "{}<script>new WebSocket('ws://127.0.0.1:{other}/ws-refused'); new SharedWorker('/shared.js'); setTimeout(() => new WebSocket('ws://' + location.host + '/ws-allowed'), 300);</script>",
                band(colour::SOCKETS)
            ),
        ),
        ("GET", "/shared.js") => (
            200,
            "text/javascript",
            Vec::new(),
            format!("fetch('http://127.0.0.1:{other}/worker-refused').catch(() => {{}}).finally(() => fetch('/worker-allowed'));")
                .into_bytes(),
        ),
        ("GET", "/redirect") => redirect("/redirect2".into()),
        ("GET", "/redirect2") => redirect(format!("http://127.0.0.1:{other}/landing")),
        ("GET", "/download") => (
            200,
            "application/octet-stream",
            vec![(
                "Content-Disposition".into(),
                "attachment; filename=report.bin".into(),
            )],
            report(),
        ),
        ("GET", "/get-report") => html(
            200,
            "get-report",
            &format!(
                "{}<script>setTimeout(() => {{ location.href = '/download'; }}, 200);</script>",
                band(colour::GET_REPORT)
            ),
        ),
        ("GET", "/upload") => html(
            200,
            "upload",
            &format!(
                "<div id=band class=band style=\"position:relative;background:rgb(250,250,250)\"><input id=file type=file style=\"position:absolute;inset:0;width:100%;height:100%;opacity:0\"></div><script>document.getElementById('file').addEventListener('change', async (e) => {{ const f = e.target.files[0]; if (!f) return; await fetch('/uploaded', {{ method: 'POST', body: f.name + ':' + await f.text() }}); const [r, g, b] = [{}, {}, {}]; document.getElementById('band').style.background = `rgb(${{r}},${{g}},${{b}})`; e.target.value = ''; }});</script>",
                colour::UPLOADED[0], colour::UPLOADED[1], colour::UPLOADED[2]
            ),
        ),
        ("POST", "/uploaded") => (200, "text/plain", Vec::new(), b"ok".to_vec()),
        _ => html(404, "not found", "<p>not found</p>"),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(
    listener: TcpListener,
    tls: Option<(Arc<rustls::ServerConfig>, Arc<std::sync::atomic::AtomicU64>)>,
    log: Arc<Mutex<Vec<Hit>>>,
    big: Option<Arc<std::sync::atomic::AtomicU64>>,
    answer: impl Fn(&Hit) -> Answer + Send + Sync + 'static,
) {
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = log.clone();
            let answer = answer.clone();
            let big = big.clone();
            let tls = tls.clone();
            std::thread::spawn(move || {
                let timeout = Some(std::time::Duration::from_secs(10));
                if stream.set_read_timeout(timeout).is_err()
                    || stream.set_write_timeout(timeout).is_err()
                {
                    return;
                }
                let _ = match tls {
                    Some((config, refused)) => {
                        let Ok(mut connection) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        let mut stream = stream;
                        while connection.is_handshaking() {
                            if connection.complete_io(&mut stream).is_err() {
                                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                return;
                            }
                        }
                        handle(
                            rustls::StreamOwned::new(connection, stream),
                            &log,
                            big.as_deref(),
                            &*answer,
                        )
                    }
                    None => handle(stream, &log, big.as_deref(), &*answer),
                };
            });
        }
    });
}

/// A server configuration with a fresh self-signed certificate for 127.0.0.1.
fn self_signed() -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)?;
    Ok(Arc::new(config))
}

/// `/big-download`: 10 GiB announced, zeros until the reader goes.
fn big_download(out: &mut impl Write, sent: &std::sync::atomic::AtomicU64) -> std::io::Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=huge.bin\r\nContent-Length: 10737418240\r\nConnection: close\r\n\r\n",
    )?;
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..(10u64 << 30) / chunk.len() as u64 {
        out.write_all(&chunk)?;
        sent.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

fn handle<S: Read + Write>(
    stream: S,
    log: &Mutex<Vec<Hit>>,
    big: Option<&std::sync::atomic::AtomicU64>,
    answer: &dyn Fn(&Hit) -> Answer,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0).min(1 << 20);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let hit = Hit {
        method,
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    if let Ok(mut log) = log.lock() {
        log.push(hit.clone());
    }
    let out = reader.get_mut();
    if let Some(sent) = big
        && hit.path == "/big-download"
    {
        return big_download(out, sent);
    }
    let (status, content_type, headers, body) = answer(&hit);
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        if status == 200 { "OK" } else { "Status" },
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(&body)?;
    out.flush()
}
