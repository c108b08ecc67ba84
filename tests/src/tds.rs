//! A SQL Server test double: no SQL Server runs on these machines, so the SQL Server console
//! is tested against this peer. It speaks TDS 7.4 as MS-TDS documents it, on the wire (no
//! shortcut through the client's own types):
//!
//! * PRELOGIN answered with VERSION 16.0.1000 and ENCRYPTION (2.2.6.5) as a server without a
//!   certificate (`ENCRYPT_NOT_SUP`), with one ([`Encryption::Offered`]: `ENCRYPT_ON` to a
//!   client that asks, `ENCRYPT_NOT_SUP` to one that cannot) or with "force encryption"
//!   ([`Encryption::Required`]: `ENCRYPT_REQ`, and the connection closed when the client
//!   cannot encrypt); the TLS handshake (TLS 1.2 or 1.3, as SQL Server 2022 allows, with a
//!   fresh self-signed certificate) travels inside PRELOGIN packets (type 0x12) both ways,
//!   and then every byte, LOGIN7 first, is TLS records without TDS framing (2.2.6.5, 3.2.5.2);
//!   login-only encryption (`ENCRYPT_OFF`) is not offered;
//! * LOGIN7 (2.2.6.4) read field by field, the password de-obfuscated (each byte XORed with
//!   0xA5 and its nibbles swapped back), checked against the double's one login; success is
//!   ENVCHANGE (database, packet size), INFO 5701, LOGINACK and DONE; failure is ERROR 18456
//!   (class 14) as SQL Server sends it, or 4060 then 18456 for a database that does not exist;
//! * SQL batches (2.2.6.7) with their ALL_HEADERS, answered with COLMETADATA, ROW, DONE with
//!   counts, ERROR and INFO tokens, in packets of 4096 bytes;
//! * ATTENTION (2.2.1.7): the running batch stops between rows (or wakes from `WAITFOR`), and
//!   the answer ends with DONE carrying DONE_ATTN; an ATTENTION while idle gets a message of
//!   its own with DONE_ATTN, as the server acknowledges every ATTENTION;
//! * transactions: `BEGIN TRANSACTION` answers ENVCHANGE 8 with a descriptor, `COMMIT` and
//!   `ROLLBACK` ENVCHANGE 9 and 10; a connection that closes inside a transaction rolls it
//!   back.
//!
//! Its SQL is canned, not parsed: the statements the console and the tests send (listed in
//! `Session::execute`) against two databases, `master` and `shop`, where `shop.dbo.people`
//! is `(id int, name nvarchar(50) NULL, active bit)`; anything else is `Msg 102` ("Incorrect
//! syntax near ...") or `Msg 208` ("Invalid object name"), as the server words them.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{BufMut, BytesMut};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// A packet's most bytes (the packet size the double announces).
const PACKET: usize = 4096;
/// The most bytes of one message from a client.
const MAX_MESSAGE: usize = 8 << 20;

const TYPE_BATCH: u8 = 0x01;
const TYPE_REPLY: u8 = 0x04;
const TYPE_ATTENTION: u8 = 0x06;
const TYPE_LOGIN7: u8 = 0x10;
const TYPE_PRELOGIN: u8 = 0x12;

const DONE_ERROR: u16 = 0x0002;
const DONE_COUNT: u16 = 0x0010;
const DONE_ATTN: u16 = 0x0020;

/// A row of `people`.
pub type Person = (i32, Option<String>, bool);

/// What the double holds and what it saw.
#[derive(Debug, Default)]
pub struct State {
    /// `shop.dbo.people`.
    pub people: Vec<Person>,
    /// Every SQL batch received, in order.
    pub batches: Vec<String>,
    /// Every ATTENTION received.
    pub attentions: u32,
    /// The user names and passwords of the logins tried.
    pub logins: Vec<(String, String)>,
    /// Bytes of every packet a client sent, after TLS (what the double understood).
    pub received: Vec<u8>,
    /// Every byte clients sent, as it crossed the wire (TLS records when encrypted).
    pub wire: Vec<u8>,
    /// The ENCRYPTION each client's PRELOGIN asked for.
    pub asked: Vec<u8>,
    /// The TLS version of each encrypted connection.
    pub tls_versions: Vec<String>,
}

/// The double's TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// No certificate: `ENCRYPT_NOT_SUP`.
    None,
    /// A certificate, used when the client asks.
    Offered,
    /// A certificate and "force encryption": `ENCRYPT_REQ`.
    Required,
}

/// What one connection's PRELOGIN leads to.
#[derive(Clone)]
struct Policy {
    encryption: Encryption,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// The double, listening on 127.0.0.1.
pub struct TdsServer {
    /// Its port.
    pub port: u16,
    /// The login it accepts.
    pub user: String,
    /// That login's password.
    pub password: String,
    /// What it holds and saw.
    pub state: Arc<Mutex<State>>,
    /// Its certificate (DER) and the same as PEM, when it has one.
    pub certificate: Option<(Vec<u8>, String)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TdsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TdsServer {
    /// Starts the double with `people` holding three rows, without a certificate.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Encryption::None).await
    }

    /// Starts the double with `people` holding three rows and TLS as `encryption` says.
    pub async fn start_with(encryption: Encryption) -> anyhow::Result<Self> {
        let (tls, certificate) = if encryption == Encryption::None {
            (None, None)
        } else {
            let rcgen::CertifiedKey { cert, signing_key } =
                rcgen::generate_simple_self_signed(vec!["sql.example.test".to_owned()])?;
            let der = cert.der().to_vec();
            let key = rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            // SQL Server 2022 has TLS 1.3 too: the client must not take it in TDS 7.x.
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(vec![der.clone().into()], key)?;
            (Some(Arc::new(config)), Some((der, cert.pem())))
        };
        let policy = Policy { encryption, tls };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State {
            people: vec![
                (1, Some("Ada".to_owned()), true),
                (2, Some("Grace".to_owned()), true),
                (3, None, false),
            ],
            ..State::default()
        }));
        let user = "zt_sa".to_owned();
        let password = "Tds-Pw-7'x\"".to_owned();
        let login = (user.clone(), password.clone());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                let login = login.clone();
                let policy = policy.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, state, login, policy).await;
                });
            }
        });
        Ok(Self {
            port,
            user,
            password,
            state,
            certificate,
            task,
        })
    }

    /// The rows of `people`, in order.
    pub fn people(&self) -> Vec<Person> {
        self.state
            .lock()
            .map(|s| s.people.clone())
            .unwrap_or_default()
    }

    /// The batches received.
    pub fn batches(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.batches.clone())
            .unwrap_or_default()
    }

    /// ATTENTIONs received.
    pub fn attentions(&self) -> u32 {
        self.state.lock().map(|s| s.attentions).unwrap_or_default()
    }

    /// Every byte clients sent, after TLS.
    pub fn received(&self) -> Vec<u8> {
        self.state
            .lock()
            .map(|s| s.received.clone())
            .unwrap_or_default()
    }

    /// Every byte clients sent, as it crossed the wire.
    pub fn wire(&self) -> Vec<u8> {
        self.state
            .lock()
            .map(|s| s.wire.clone())
            .unwrap_or_default()
    }

    /// The logins tried (user names and passwords).
    pub fn logins(&self) -> Vec<(String, String)> {
        self.state
            .lock()
            .map(|s| s.logins.clone())
            .unwrap_or_default()
    }

    /// The TLS version of each encrypted connection (`TLSv1_2`).
    pub fn tls_versions(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.tls_versions.clone())
            .unwrap_or_default()
    }

    /// The ENCRYPTION each client's PRELOGIN asked for (0 off, 1 on, 2 not supported).
    pub fn asked(&self) -> Vec<u8> {
        self.state
            .lock()
            .map(|s| s.asked.clone())
            .unwrap_or_default()
    }
}

/// A connection's bytes as they arrive, kept in [`State::wire`].
struct Wire {
    tcp: TcpStream,
    state: Arc<Mutex<State>>,
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.tcp).poll_read(cx, buf))?;
        if let Ok(mut s) = self.state.lock() {
            s.wire.extend_from_slice(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The server's side of the handshake: the client's PRELOGIN packets are read whole and
/// their data handed to rustls; what rustls writes is sent, at each flush, as PRELOGIN
/// packets of at most [`PACKET`] bytes. After `bare` is set, bytes pass as they are.
struct Prelogin<S> {
    io: S,
    bare: bool,
    /// The packet being read (header and data), one byte at a time: never past its end.
    packet: Vec<u8>,
    /// Data of the packet read last, not yet taken.
    input: Vec<u8>,
    taken: usize,
    /// What rustls wrote since the last flush, and the packets made of it still to send.
    output: Vec<u8>,
    packets: Vec<u8>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prelogin<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.bare {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        while this.taken == this.input.len() {
            let length = match this.packet.get(2..4) {
                Some(l) => usize::from(u16::from_be_bytes([l[0], l[1]])).max(8),
                None => 8,
            };
            if this.packet.len() == length {
                this.input = this.packet.split_off(8);
                this.packet.clear();
                this.taken = 0;
                continue;
            }
            let mut byte = [0u8; 1];
            let mut one = ReadBuf::new(&mut byte);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut one))?;
            if one.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.packet.push(byte[0]);
            if this.packet.len() == 1 && byte[0] != TYPE_PRELOGIN {
                return Poll::Ready(Err(std::io::Error::other(format!(
                    "a packet of type {} during the handshake",
                    byte[0]
                ))));
            }
        }
        let n = buf.remaining().min(this.input.len() - this.taken);
        buf.put_slice(&this.input[this.taken..this.taken + n]);
        this.taken += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prelogin<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.bare {
            return Pin::new(&mut self.io).poll_write(cx, buf);
        }
        self.output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        for (id, chunk) in this.output.chunks(PACKET - 8).enumerate() {
            this.packets.extend_from_slice(&[TYPE_PRELOGIN, 0x01]);
            this.packets
                .extend_from_slice(&u16::try_from(chunk.len() + 8).unwrap_or(0).to_be_bytes());
            this.packets
                .extend_from_slice(&[0, 0, u8::try_from(id + 1).unwrap_or(0), 0]);
            this.packets.extend_from_slice(chunk);
        }
        this.output.clear();
        while !this.packets.is_empty() {
            let n = ready!(Pin::new(&mut this.io).poll_write(cx, &this.packets))?;
            this.packets.drain(..n);
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A connection after PRELOGIN, TLS or not.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Reads one message of at most [`PACKET`] bytes from `io`: its type and data.
async fn read_small_message<R: AsyncRead + Unpin>(io: &mut R) -> anyhow::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 8];
    io.read_exact(&mut header).await?;
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if !(8..=PACKET).contains(&length) || header[1] & 0x01 == 0 {
        bail!("a PRELOGIN packet of {length} bytes, status {}", header[1]);
    }
    let mut data = vec![0; length - 8];
    io.read_exact(&mut data).await?;
    Ok((header[0], data))
}

/// The ENCRYPTION a client's PRELOGIN asks for.
fn asked_encryption(data: &[u8]) -> anyhow::Result<u8> {
    let mut at = 0;
    while let Some(&token) = data.get(at) {
        if token == 0xFF {
            break;
        }
        let entry = data.get(at + 1..at + 5).context("option table cut short")?;
        let offset = usize::from(u16::from_be_bytes([entry[0], entry[1]]));
        if token == 0x01 {
            return data
                .get(offset)
                .copied()
                .context("ENCRYPTION outside the message");
        }
        at += 5;
    }
    bail!("a PRELOGIN without ENCRYPTION")
}

/// Reads the client's PRELOGIN, answers it as `policy` says and runs the TLS handshake when
/// the two agree on encryption: the connection the session continues on.
async fn prelogin(
    mut wire: Wire,
    state: &Arc<Mutex<State>>,
    policy: &Policy,
) -> anyhow::Result<Box<dyn Io>> {
    let (kind, data) = read_small_message(&mut wire).await?;
    if kind != TYPE_PRELOGIN {
        bail!("expected PRELOGIN, got type {kind}");
    }
    let asked = asked_encryption(&data)? & 0x0F;
    if let Ok(mut s) = state.lock() {
        s.asked.push(asked);
    }
    // ENCRYPT_OFF 0, ENCRYPT_ON 1, ENCRYPT_NOT_SUP 2, ENCRYPT_REQ 3.
    let answer = match (policy.encryption, asked) {
        (Encryption::None, _) => 2,
        (Encryption::Offered, 0) => 0,
        (Encryption::Offered, 2) => 2,
        (Encryption::Offered, _) => 1,
        (Encryption::Required, _) => 3,
    };
    // VERSION 16.0.1000, ENCRYPTION, INSTOPT (none), THREADID (none), MARS off.
    let options: [(u8, &[u8]); 5] = [
        (0x00, &[16, 0, 0x03, 0xE8, 0, 0]),
        (0x01, &[answer]),
        (0x02, &[0x00]),
        (0x03, &[]),
        (0x04, &[0x00]),
    ];
    let mut out = BytesMut::new();
    let mut offset = options.len() * 5 + 1;
    let mut values = Vec::new();
    for (token, value) in options {
        out.put_u8(token);
        out.put_u16(u16::try_from(offset).unwrap_or(0));
        out.put_u16(u16::try_from(value.len()).unwrap_or(0));
        offset += value.len();
        values.extend_from_slice(value);
    }
    out.put_u8(0xFF);
    out.extend_from_slice(&values);
    let mut packet = vec![TYPE_REPLY, 0x01];
    packet.extend_from_slice(&u16::try_from(out.len() + 8).unwrap_or(0).to_be_bytes());
    packet.extend_from_slice(&[0, 0, 1, 0]);
    packet.extend_from_slice(&out);
    wire.write_all(&packet).await?;
    let encrypt = match (answer, asked) {
        (2, _) => false,
        (0, _) => bail!("login-only encryption is not in the double"),
        // A client that cannot encrypt, to a server that insists: the server closes.
        (3, 2) => bail!("the client cannot encrypt"),
        _ => true,
    };
    if !encrypt {
        return Ok(Box::new(wire));
    }
    let config = policy.tls.clone().context("no certificate")?;
    let framed = Prelogin {
        io: wire,
        bare: false,
        packet: Vec::new(),
        input: Vec::new(),
        taken: 0,
        output: Vec::new(),
        packets: Vec::new(),
    };
    let mut tls = tokio_rustls::TlsAcceptor::from(config)
        .accept(framed)
        .await?;
    tls.get_mut().0.bare = true;
    if let Ok(mut s) = state.lock() {
        let version = tls.get_ref().1.protocol_version();
        s.tls_versions.push(format!("{version:?}"));
    }
    Ok(Box::new(tls))
}

/// One message from the client.
struct Message {
    kind: u8,
    data: Vec<u8>,
}

/// Reads packets into messages; ATTENTIONs go straight to `attention`.
async fn read_messages(
    mut reader: tokio::io::ReadHalf<Box<dyn Io>>,
    messages: mpsc::Sender<Message>,
    attention: Arc<Notify>,
    state: Arc<Mutex<State>>,
) -> anyhow::Result<()> {
    let mut data = Vec::new();
    loop {
        let mut header = [0u8; 8];
        reader.read_exact(&mut header).await?;
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if !(8..=32_768).contains(&length) {
            bail!("packet length {length}");
        }
        let mut payload = vec![0; length - 8];
        reader.read_exact(&mut payload).await?;
        if let Ok(mut s) = state.lock() {
            s.received.extend_from_slice(&header);
            s.received.extend_from_slice(&payload);
        }
        if header[0] == TYPE_ATTENTION {
            if let Ok(mut s) = state.lock() {
                s.attentions += 1;
            }
            attention.notify_one();
            continue;
        }
        data.extend_from_slice(&payload);
        if data.len() > MAX_MESSAGE {
            bail!("message too long");
        }
        if header[1] & 0x01 != 0 {
            let message = Message {
                kind: header[0],
                data: std::mem::take(&mut data),
            };
            if messages.send(message).await.is_err() {
                return Ok(());
            }
        }
    }
}

async fn serve(
    tcp: TcpStream,
    state: Arc<Mutex<State>>,
    login: (String, String),
    policy: Policy,
) -> anyhow::Result<()> {
    let wire = Wire {
        tcp,
        state: state.clone(),
    };
    let stream = prelogin(wire, &state, &policy).await?;
    let (reader, writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel(4);
    let attention = Arc::new(Notify::new());
    let reading = tokio::spawn(read_messages(reader, tx, attention.clone(), state.clone()));
    let mut session = Session {
        out: Reply::new(writer),
        state,
        attention,
        database: "master".to_owned(),
        rowcount: 0,
        snapshot: None,
    };
    let result = session.run(&mut rx, &login).await;
    if let Some(snapshot) = session.snapshot.take()
        && let Ok(mut s) = session.state.lock()
    {
        s.people = snapshot;
    }
    reading.abort();
    result
}

/// The answer being written, cut into packets.
struct Reply {
    writer: WriteHalf<Box<dyn Io>>,
    buf: BytesMut,
    packet_id: u8,
}

impl Reply {
    fn new(writer: WriteHalf<Box<dyn Io>>) -> Self {
        Self {
            writer,
            buf: BytesMut::new(),
            packet_id: 1,
        }
    }

    /// Sends the full packets the answer holds (all of it, the last with EOM, when `end`).
    async fn flush(&mut self, end: bool) -> std::io::Result<()> {
        let room = PACKET - 8;
        while self.buf.len() > room || (end && !self.buf.is_empty()) {
            let n = self.buf.len().min(room);
            let last = end && n == self.buf.len();
            let payload = self.buf.split_to(n);
            let mut packet = Vec::with_capacity(n + 8);
            packet.push(TYPE_REPLY);
            packet.push(u8::from(last));
            packet.extend_from_slice(&u16::try_from(n + 8).unwrap_or(0).to_be_bytes());
            packet.extend_from_slice(&[0, 0x33, self.packet_id, 0]);
            packet.extend_from_slice(&payload);
            self.packet_id = self.packet_id.wrapping_add(1);
            self.writer.write_all(&packet).await?;
        }
        // TLS holds what it has not sent until a flush.
        self.writer.flush().await?;
        Ok(())
    }
}

fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn b_varchar(buf: &mut BytesMut, text: &str) {
    let units = text.encode_utf16().count();
    buf.put_u8(u8::try_from(units).unwrap_or(u8::MAX));
    buf.extend_from_slice(&utf16(text));
}

fn us_varchar(buf: &mut BytesMut, text: &str) {
    let units = text.encode_utf16().count();
    buf.put_u16_le(u16::try_from(units).unwrap_or(u16::MAX));
    buf.extend_from_slice(&utf16(text));
}

/// ERROR (0xAA) or INFO (0xAB).
fn message_token(buf: &mut BytesMut, token: u8, number: i32, class: u8, text: &str) {
    let mut body = BytesMut::new();
    body.put_i32_le(number);
    body.put_u8(1); // state
    body.put_u8(class);
    us_varchar(&mut body, text);
    b_varchar(&mut body, "ztdouble");
    b_varchar(&mut body, "");
    body.put_i32_le(1); // line
    buf.put_u8(token);
    buf.put_u16_le(u16::try_from(body.len()).unwrap_or(u16::MAX));
    buf.extend_from_slice(&body);
}

fn done(buf: &mut BytesMut, status: u16, rows: u64) {
    buf.put_u8(0xFD);
    buf.put_u16_le(status);
    buf.put_u16_le(0xC1);
    buf.put_u64_le(rows);
}

fn env_change(buf: &mut BytesMut, kind: u8, new: &[u8], old: &[u8]) {
    buf.put_u8(0xE3);
    buf.put_u16_le(u16::try_from(1 + new.len() + old.len()).unwrap_or(0));
    buf.put_u8(kind);
    buf.extend_from_slice(new);
    buf.extend_from_slice(old);
}

fn b_varchar_bytes(text: &str) -> Vec<u8> {
    let mut buf = BytesMut::new();
    b_varchar(&mut buf, text);
    buf.to_vec()
}

/// A column's type on the wire.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    BigInt,
    Bit,
    NVarChar,
}

/// A value in a row.
enum Value {
    Int(i32),
    BigInt(i64),
    Bit(bool),
    Text(String),
    Null,
}

fn columns(buf: &mut BytesMut, columns: &[(&str, Kind)]) {
    buf.put_u8(0x81);
    buf.put_u16_le(u16::try_from(columns.len()).unwrap_or(0));
    for (name, kind) in columns {
        buf.put_u32_le(0); // user type
        buf.put_u16_le(0x0001); // nullable
        match kind {
            Kind::Int => buf.extend_from_slice(&[0x26, 4]),
            Kind::BigInt => buf.extend_from_slice(&[0x26, 8]),
            Kind::Bit => buf.extend_from_slice(&[0x68, 1]),
            Kind::NVarChar => {
                buf.put_u8(0xE7);
                buf.put_u16_le(8000);
                buf.extend_from_slice(&[0x09, 0x04, 0xD0, 0x00, 0x34]); // Latin1_General_CI_AS
            }
        }
        b_varchar(buf, name);
    }
}

fn row(buf: &mut BytesMut, kinds: &[Kind], values: &[Value]) {
    buf.put_u8(0xD1);
    for (kind, value) in kinds.iter().zip(values) {
        match (kind, value) {
            (Kind::NVarChar, Value::Null) => buf.put_u16_le(0xFFFF),
            (_, Value::Null) => buf.put_u8(0),
            (_, Value::Int(v)) => {
                buf.put_u8(4);
                buf.put_i32_le(*v);
            }
            (_, Value::BigInt(v)) => {
                buf.put_u8(8);
                buf.put_i64_le(*v);
            }
            (_, Value::Bit(v)) => {
                buf.put_u8(1);
                buf.put_u8(u8::from(*v));
            }
            (_, Value::Text(v)) => {
                let bytes = utf16(v);
                buf.put_u16_le(u16::try_from(bytes.len()).unwrap_or(0));
                buf.extend_from_slice(&bytes);
            }
        }
    }
}

/// LOGIN7's user name, password and database.
fn read_login(data: &[u8]) -> anyhow::Result<(String, String, String)> {
    let field = |at: usize, password: bool| -> anyhow::Result<String> {
        let offset = usize::from(u16::from_le_bytes([data[at], data[at + 1]]));
        let chars = usize::from(u16::from_le_bytes([data[at + 2], data[at + 3]]));
        let bytes = data
            .get(offset..offset + 2 * chars)
            .context("a LOGIN7 field outside the message")?;
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|pair| {
                let [lo, hi] = [pair[0], pair[1]].map(|b| {
                    if password {
                        let b = b ^ 0xA5;
                        b.rotate_left(4)
                    } else {
                        b
                    }
                });
                u16::from_le_bytes([lo, hi])
            })
            .collect();
        Ok(String::from_utf16(&units)?)
    };
    if data.len() < 94 {
        bail!("LOGIN7 shorter than its fixed part");
    }
    Ok((field(40, false)?, field(44, true)?, field(68, false)?))
}

/// One client's connection after the handshake.
struct Session {
    out: Reply,
    state: Arc<Mutex<State>>,
    attention: Arc<Notify>,
    database: String,
    rowcount: u64,
    snapshot: Option<Vec<Person>>,
}

/// How a statement ended.
enum Outcome {
    Done,
    Attention,
}

impl Session {
    async fn run(
        &mut self,
        messages: &mut mpsc::Receiver<Message>,
        login: &(String, String),
    ) -> anyhow::Result<()> {
        let login7 = messages.recv().await.context("no LOGIN7")?;
        if login7.kind != TYPE_LOGIN7 {
            bail!("expected LOGIN7, got type {}", login7.kind);
        }
        let (user, password, database) = read_login(&login7.data)?;
        if let Ok(mut s) = self.state.lock() {
            s.logins.push((user.clone(), password.clone()));
        }
        let database = if database.is_empty() {
            "master".to_owned()
        } else {
            database
        };
        let buf = &mut self.out.buf;
        if (user.as_str(), password.as_str()) != (login.0.as_str(), login.1.as_str()) {
            message_token(
                buf,
                0xAA,
                18456,
                14,
                &format!("Login failed for user '{user}'."),
            );
            done(buf, DONE_ERROR, 0);
            self.out.flush(true).await?;
            return Ok(());
        }
        if !matches!(database.as_str(), "master" | "shop") {
            message_token(
                buf,
                0xAA,
                4060,
                11,
                &format!(
                    "Cannot open database \"{database}\" requested by the login. The login failed."
                ),
            );
            message_token(
                buf,
                0xAA,
                18456,
                14,
                &format!("Login failed for user '{user}'."),
            );
            done(buf, DONE_ERROR, 0);
            self.out.flush(true).await?;
            return Ok(());
        }
        env_change(
            buf,
            1,
            &b_varchar_bytes(&database),
            &b_varchar_bytes("master"),
        );
        message_token(
            buf,
            0xAB,
            5701,
            0,
            &format!("Changed database context to '{database}'."),
        );
        env_change(buf, 7, &[5, 0x09, 0x04, 0xD0, 0x00, 0x34], &[0]);
        env_change(buf, 4, &b_varchar_bytes("4096"), &b_varchar_bytes("4096"));
        let mut ack = BytesMut::new();
        ack.put_u8(1);
        ack.put_u32(0x7400_0004);
        b_varchar(&mut ack, "Microsoft SQL Server");
        ack.extend_from_slice(&[16, 0, 0x03, 0xE8]);
        buf.put_u8(0xAD);
        buf.put_u16_le(u16::try_from(ack.len()).unwrap_or(0));
        buf.extend_from_slice(&ack);
        done(buf, 0, 0);
        self.out.flush(true).await?;
        self.database = database;
        let attention = self.attention.clone();
        loop {
            tokio::select! {
                message = messages.recv() => {
                    let Some(message) = message else { return Ok(()) };
                    if message.kind != TYPE_BATCH {
                        bail!("unexpected message type {}", message.kind);
                    }
                    let sql = batch_text(&message.data)?;
                    if let Ok(mut s) = self.state.lock() {
                        s.batches.push(sql.clone());
                    }
                    let status = match self.execute(&sql).await? {
                        Outcome::Done => 0,
                        Outcome::Attention => DONE_ATTN,
                    };
                    if status == DONE_ATTN {
                        done(&mut self.out.buf, DONE_ATTN, 0);
                    }
                    self.out.flush(true).await?;
                }
                () = attention.notified() => {
                    // Idle: the batch had finished; the ATTENTION still gets its answer.
                    done(&mut self.out.buf, DONE_ATTN, 0);
                    self.out.flush(true).await?;
                }
            }
        }
    }

    fn error(&mut self, number: i32, class: u8, text: &str) {
        message_token(&mut self.out.buf, 0xAA, number, class, text);
        done(&mut self.out.buf, DONE_ERROR, 0);
    }

    /// Sends a result set, checking for ATTENTION between rows.
    async fn result(
        &mut self,
        names: &[(&str, Kind)],
        rows: impl Iterator<Item = Vec<Value>>,
    ) -> anyhow::Result<Outcome> {
        columns(&mut self.out.buf, names);
        let kinds: Vec<Kind> = names.iter().map(|(_, k)| *k).collect();
        let mut count = 0u64;
        for values in rows {
            row(&mut self.out.buf, &kinds, &values);
            count += 1;
            if self.out.buf.len() > PACKET {
                self.out.flush(false).await?;
                if self.attended() {
                    return Ok(Outcome::Attention);
                }
            }
        }
        self.rowcount = count;
        done(&mut self.out.buf, DONE_COUNT, count);
        Ok(Outcome::Done)
    }

    /// Whether an ATTENTION is waiting (and takes it).
    fn attended(&self) -> bool {
        let notified = self.attention.notified();
        tokio::pin!(notified);
        // `enable` takes a stored permit without waiting.
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        Future::poll(notified.as_mut(), &mut context).is_ready()
    }

    /// The canned statements.
    async fn execute(&mut self, sql: &str) -> anyhow::Result<Outcome> {
        let text = sql.trim().trim_end_matches(';').trim();
        let lower = text.to_lowercase();
        let people_here = self.database == "shop";
        if lower == "select db_name()" {
            let name = self.database.clone();
            return self
                .result(
                    &[("", Kind::NVarChar)],
                    std::iter::once(vec![Value::Text(name)]),
                )
                .await;
        }
        if lower == "select @@trancount" {
            let n = i32::from(self.snapshot.is_some());
            return self
                .result(&[("", Kind::Int)], std::iter::once(vec![Value::Int(n)]))
                .await;
        }
        if lower == "select @@rowcount" {
            let n = i32::try_from(self.rowcount).unwrap_or(i32::MAX);
            return self
                .result(&[("", Kind::Int)], std::iter::once(vec![Value::Int(n)]))
                .await;
        }
        if let Some(name) = lower.strip_prefix("use ") {
            let name = name.trim().trim_start_matches('[').trim_end_matches(']');
            if matches!(name, "master" | "shop") {
                let old = std::mem::replace(&mut self.database, name.to_owned());
                env_change(
                    &mut self.out.buf,
                    1,
                    &b_varchar_bytes(name),
                    &b_varchar_bytes(&old),
                );
                message_token(
                    &mut self.out.buf,
                    0xAB,
                    5701,
                    0,
                    &format!("Changed database context to '{name}'."),
                );
                done(&mut self.out.buf, 0, 0);
            } else {
                self.error(
                    911,
                    16,
                    &format!(
                        "Database '{name}' does not exist. Make sure that the name is entered correctly."
                    ),
                );
            }
            return Ok(Outcome::Done);
        }
        if lower == "select name from sys.databases order by name" {
            let rows = ["master", "shop"]
                .into_iter()
                .map(|n| vec![Value::Text(n.to_owned())]);
            return self.result(&[("name", Kind::NVarChar)], rows).await;
        }
        if lower.starts_with("select table_schema as [schema], table_name as [name]") {
            let rows: Vec<Vec<Value>> = if people_here {
                vec![vec![
                    Value::Text("dbo".into()),
                    Value::Text("people".into()),
                    Value::Text("BASE TABLE".into()),
                ]]
            } else {
                vec![]
            };
            let names = [
                ("schema", Kind::NVarChar),
                ("name", Kind::NVarChar),
                ("type", Kind::NVarChar),
            ];
            return self.result(&names, rows.into_iter()).await;
        }
        if lower.starts_with("select column_name as [column]") {
            let rows: Vec<Vec<Value>> = if people_here && lower.contains("table_name = n'people'") {
                vec![
                    ("id", "int", Value::Null, "NO"),
                    ("name", "nvarchar", Value::Int(50), "YES"),
                    ("active", "bit", Value::Null, "NO"),
                ]
                .into_iter()
                .map(|(c, t, l, n)| {
                    vec![
                        Value::Text(c.into()),
                        Value::Text(t.into()),
                        l,
                        Value::Text(n.into()),
                    ]
                })
                .collect()
            } else {
                vec![]
            };
            let names = [
                ("column", Kind::NVarChar),
                ("type", Kind::NVarChar),
                ("length", Kind::Int),
                ("nullable", Kind::NVarChar),
            ];
            return self.result(&names, rows.into_iter()).await;
        }
        if lower.starts_with("select ") && lower.contains(" from ") && lower.contains("people") {
            if !people_here {
                self.error(208, 16, "Invalid object name 'people'.");
                return Ok(Outcome::Done);
            }
            let people = self
                .state
                .lock()
                .map(|s| s.people.clone())
                .unwrap_or_default();
            if lower.starts_with("select count(*)") {
                let n = i32::try_from(people.len()).unwrap_or(i32::MAX);
                return self
                    .result(&[("", Kind::Int)], std::iter::once(vec![Value::Int(n)]))
                    .await;
            }
            if lower.starts_with("select * from") || lower.starts_with("select id, name, active") {
                let rows = people.into_iter().map(|(id, name, active)| {
                    vec![
                        Value::Int(id),
                        name.map_or(Value::Null, Value::Text),
                        Value::Bit(active),
                    ]
                });
                let names = [
                    ("id", Kind::Int),
                    ("name", Kind::NVarChar),
                    ("active", Kind::Bit),
                ];
                return self.result(&names, rows).await;
            }
        }
        if let Some(rest) = lower.strip_prefix("select value from generate_series(") {
            let bounds: Vec<i64> = rest
                .trim_end_matches(')')
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect();
            if let [from, to] = bounds[..] {
                return self
                    .result(
                        &[("value", Kind::BigInt)],
                        (from..=to).map(|n| vec![Value::BigInt(n)]),
                    )
                    .await;
            }
        }
        if let Some(delay) = lower.strip_prefix("waitfor delay ") {
            let seconds: u64 = delay
                .trim_matches('\'')
                .split(':')
                .filter_map(|p| p.parse::<u64>().ok())
                .fold(0, |total, part| total * 60 + part);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(seconds)) => {
                    done(&mut self.out.buf, 0, 0);
                    return Ok(Outcome::Done);
                }
                () = self.attention.notified() => return Ok(Outcome::Attention),
            }
        }
        if lower == "select 1/0" {
            columns(&mut self.out.buf, &[("", Kind::Int)]);
            self.error(8134, 16, "Divide by zero error encountered.");
            return Ok(Outcome::Done);
        }
        if lower == "begin transaction" {
            self.snapshot = Some(
                self.state
                    .lock()
                    .map(|s| s.people.clone())
                    .unwrap_or_default(),
            );
            env_change(&mut self.out.buf, 8, &[8, 1, 0, 0, 0, 0, 0, 0, 0], &[0]);
            done(&mut self.out.buf, 0, 0);
            return Ok(Outcome::Done);
        }
        if lower == "commit transaction" {
            self.snapshot = None;
            env_change(&mut self.out.buf, 9, &[0], &[8, 1, 0, 0, 0, 0, 0, 0, 0]);
            done(&mut self.out.buf, 0, 0);
            return Ok(Outcome::Done);
        }
        if lower == "if @@trancount > 0 rollback transaction" {
            if let Some(snapshot) = self.snapshot.take() {
                if let Ok(mut s) = self.state.lock() {
                    s.people = snapshot;
                }
                env_change(&mut self.out.buf, 10, &[0], &[8, 1, 0, 0, 0, 0, 0, 0, 0]);
            }
            done(&mut self.out.buf, 0, 0);
            return Ok(Outcome::Done);
        }
        if lower.starts_with("insert into people") || lower.starts_with("insert into dbo.people") {
            if !people_here {
                self.error(208, 16, "Invalid object name 'people'.");
                return Ok(Outcome::Done);
            }
            return self.insert(text);
        }
        let near = text.split_whitespace().next().unwrap_or(text);
        self.error(102, 15, &format!("Incorrect syntax near '{near}'."));
        Ok(Outcome::Done)
    }

    /// `INSERT INTO people [(columns)] VALUES (...), ...` with N'' literals, numbers and NULL.
    fn insert(&mut self, text: &str) -> anyhow::Result<Outcome> {
        let Some(at) = text.to_lowercase().find(" values ") else {
            self.error(102, 15, "Incorrect syntax near 'people'.");
            return Ok(Outcome::Done);
        };
        let head = &text[..at];
        let order: Vec<String> = match (head.find('('), head.rfind(')')) {
            (Some(open), Some(close)) if open < close => head[open + 1..close]
                .split(',')
                .map(|c| c.trim().trim_matches(['[', ']']).to_lowercase())
                .collect(),
            _ => vec!["id".into(), "name".into(), "active".into()],
        };
        let tuples = match values(&text[at + 8..]) {
            Ok(tuples) => tuples,
            Err(near) => {
                self.error(102, 15, &format!("Incorrect syntax near '{near}'."));
                return Ok(Outcome::Done);
            }
        };
        let mut rows = Vec::new();
        for tuple in tuples {
            if tuple.len() != order.len() {
                self.error(
                    110,
                    15,
                    "There are fewer columns in the INSERT statement than values specified in the VALUES clause. The number of values in the VALUES clause must match the number of columns specified in the INSERT statement.",
                );
                return Ok(Outcome::Done);
            }
            let mut person: Person = (0, None, false);
            for (column, value) in order.iter().zip(tuple) {
                match column.as_str() {
                    "id" => match value.as_deref().map(str::parse::<i32>) {
                        Some(Ok(id)) => person.0 = id,
                        _ => {
                            self.error(
                                245,
                                16,
                                &format!(
                                    "Conversion failed when converting the nvarchar value '{}' to data type int.",
                                    value.unwrap_or_default()
                                ),
                            );
                            return Ok(Outcome::Done);
                        }
                    },
                    "name" => person.1 = value,
                    "active" => person.2 = matches!(value.as_deref(), Some("1" | "true")),
                    other => {
                        self.error(207, 16, &format!("Invalid column name '{other}'."));
                        return Ok(Outcome::Done);
                    }
                }
            }
            rows.push(person);
        }
        let n = rows.len() as u64;
        if let Ok(mut s) = self.state.lock() {
            s.people.extend(rows);
        }
        self.rowcount = n;
        done(&mut self.out.buf, DONE_COUNT, n);
        Ok(Outcome::Done)
    }
}

/// `(a, b), (c, d)`: each value's text (`None` for NULL); the text near a mistake.
fn values(text: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut chars = text.trim().chars().peekable();
    let mut tuples = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        match chars.next() {
            None => return Ok(tuples),
            Some('(') => {}
            Some(c) => return Err(c.to_string()),
        }
        let mut tuple = Vec::new();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let mut look = chars.clone();
            let literal = match (look.next(), look.next()) {
                (Some('\''), _) => true,
                (Some('N' | 'n'), Some('\'')) => {
                    chars.next();
                    true
                }
                _ => false,
            };
            let value = match chars.peek().copied() {
                Some('\'') if literal => {
                    chars.next();
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some('\'') if chars.peek() == Some(&'\'') => {
                                chars.next();
                                value.push('\'');
                            }
                            Some('\'') => break,
                            Some(c) => value.push(c),
                            None => return Err("'".into()),
                        }
                    }
                    Some(value)
                }
                Some(_) => {
                    let mut word = String::new();
                    while let Some(c) = chars.peek().copied() {
                        if c == ',' || c == ')' || c.is_whitespace() {
                            break;
                        }
                        word.push(c);
                        chars.next();
                    }
                    if word.eq_ignore_ascii_case("null") {
                        None
                    } else {
                        Some(word)
                    }
                }
                None => return Err(")".into()),
            };
            tuple.push(value);
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            match chars.next() {
                Some(',') => {}
                Some(')') => break,
                Some(c) => return Err(c.to_string()),
                None => return Err(")".into()),
            }
        }
        tuples.push(tuple);
    }
}

/// A SQL batch's text after its ALL_HEADERS.
fn batch_text(data: &[u8]) -> anyhow::Result<String> {
    let headers = data
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .context("a batch without ALL_HEADERS")?;
    let text = data.get(headers..).context("ALL_HEADERS past the batch")?;
    let units: Vec<u16> = text
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    Ok(String::from_utf16(&units)?)
}

/// The TDS password obfuscation (MS-TDS 2.2.6.4), for tests that look for the password on
/// the wire.
pub fn obfuscated(password: &str) -> Vec<u8> {
    utf16(password)
        .into_iter()
        .map(|b| b.rotate_left(4) ^ 0xA5)
        .collect()
}
