//! TLS to SQL Server, below tiberius. TDS 7.x negotiates encryption in PRELOGIN (MS-TDS
//! 2.2.6.5) and carries the TLS handshake inside PRELOGIN packets; after the handshake, TLS
//! records travel bare and everything, the login first, is inside them.
//!
//! tiberius is built without TLS (its rustls feature brings a second crypto provider and a
//! trust store of the system's CAs, with no place for a pin), so ztproxy negotiates itself,
//! before tiberius starts:
//!
//! 1. ztproxy sends its own PRELOGIN with `ENCRYPT_ON` and reads the server's answer:
//!    `ENCRYPT_ON` or `ENCRYPT_REQ` is TLS; `ENCRYPT_NOT_SUP` is plain TCP, which only
//!    `ssl-mode=prefer` accepts ([`Error::TlsUnavailable`] otherwise, before any credential
//!    is sent); `ENCRYPT_OFF` (encryption of the login only) is refused. Under
//!    `ssl-mode=disable` the PRELOGIN says `ENCRYPT_NOT_SUP`, and a server that requires
//!    encryption is a clear error rather than a connection it closes.
//! 2. The handshake runs through [`crate::tls::Tls`]'s verifier (the `server-certificate`
//!    pin, the fingerprint for the audit) inside PRELOGIN packets ([`Handshake`]). It offers
//!    TLS 1.2 only: in TDS 7.x a TLS 1.3 server's session tickets would follow the
//!    handshake still wrapped while the client reads bare records, and SQL Server's own
//!    clients keep TLS 1.3 for TDS 8.0's strict mode.
//! 3. tiberius then talks to a pipe ([`Tunnel`]): its own PRELOGIN is answered by ztproxy
//!    ([`answer`]: the server's VERSION, `ENCRYPT_NOT_SUP` since the encryption is below
//!    tiberius, nothing else of the server's), and a task copies between the pipe and the
//!    TLS stream, both ways, with bounded buffers. The task ends with the transport.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::settings::{DbSettings, SslMode};
use crate::tls::{Fingerprint, Tls};

/// PRELOGIN's packet type (the client's message, and the handshake's packets).
pub const TYPE_PRELOGIN: u8 = 0x12;
/// A server's answer (tabular result).
pub const TYPE_REPLY: u8 = 0x04;
/// A packet header's bytes.
const HEADER: usize = 8;
/// The most bytes of a PRELOGIN message, either way, and of a handshake packet.
pub const MAX_PRELOGIN: usize = 4096;
/// The pipe between tiberius and the TLS stream.
const PIPE: usize = 64 * 1024;

/// PRELOGIN's ENCRYPTION option token.
const OPTION_ENCRYPTION: u8 = 0x01;
const ENCRYPT_OFF: u8 = 0x00;
const ENCRYPT_ON: u8 = 0x01;
const ENCRYPT_NOT_SUP: u8 = 0x02;
const ENCRYPT_REQ: u8 = 0x03;

/// What a server answers to ENCRYPTION.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// `ENCRYPT_OFF`: the login only.
    Off,
    /// `ENCRYPT_ON`: all of the connection.
    On,
    /// `ENCRYPT_NOT_SUP`: none of it.
    NotSupported,
    /// `ENCRYPT_REQ`: all of it, and the server insists.
    Required,
}

/// ztproxy's PRELOGIN packet: VERSION, ENCRYPTION `ENCRYPT_ON` (`ENCRYPT_NOT_SUP` unless
/// `encrypt`), INSTOPT (the default instance), THREADID, MARS off.
pub fn request(encrypt: bool) -> Vec<u8> {
    let encryption = if encrypt { ENCRYPT_ON } else { ENCRYPT_NOT_SUP };
    let options: [(u8, &[u8]); 5] = [
        (0x00, &[0, 1, 0, 0, 0, 0]),
        (OPTION_ENCRYPTION, &[encryption]),
        (0x02, &[0x00]),
        (0x03, &[0, 0, 0, 0]),
        (0x04, &[0x00]),
    ];
    packet(TYPE_PRELOGIN, 1, &option_table(&options))
}

/// The PRELOGIN answer tiberius gets: `version` (the server's VERSION), ENCRYPTION
/// `ENCRYPT_NOT_SUP`, INSTOPT (the default instance), THREADID (empty, as servers send it),
/// MARS off.
pub fn answer(version: [u8; 6]) -> Vec<u8> {
    let options: [(u8, &[u8]); 5] = [
        (0x00, &version),
        (OPTION_ENCRYPTION, &[ENCRYPT_NOT_SUP]),
        (0x02, &[0x00]),
        (0x03, &[]),
        (0x04, &[0x00]),
    ];
    option_table(&options)
}

/// PRELOGIN's option table and its values.
fn option_table(options: &[(u8, &[u8])]) -> Vec<u8> {
    let mut table = Vec::new();
    let mut data = Vec::new();
    let mut offset = options.len() * 5 + 1;
    for (token, value) in options {
        table.push(*token);
        table.extend_from_slice(&u16::try_from(offset).unwrap_or(0).to_be_bytes());
        table.extend_from_slice(&u16::try_from(value.len()).unwrap_or(0).to_be_bytes());
        offset += value.len();
        data.extend_from_slice(value);
    }
    table.push(0xFF);
    table.extend_from_slice(&data);
    table
}

/// One packet with end of message set.
fn packet(kind: u8, id: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(HEADER + payload.len());
    packet.extend_from_slice(&[kind, 0x01]);
    packet.extend_from_slice(
        &u16::try_from(HEADER + payload.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    packet.extend_from_slice(&[0, 0, id, 0]);
    packet.extend_from_slice(payload);
    packet
}

/// The ENCRYPTION of a PRELOGIN message (the packets' data), and the offset of its byte.
pub fn encryption(data: &[u8]) -> Result<(Encryption, usize), &'static str> {
    let (value, offset) =
        option(data, OPTION_ENCRYPTION)?.ok_or("the answer has no ENCRYPTION option")?;
    // 0x80 is a flag (ENCRYPT_CLIENT_CERT); the rest the level.
    let level = match value.first().map(|v| v & 0x7F) {
        Some(ENCRYPT_OFF) => Encryption::Off,
        Some(ENCRYPT_ON) => Encryption::On,
        Some(ENCRYPT_NOT_SUP) => Encryption::NotSupported,
        Some(ENCRYPT_REQ) => Encryption::Required,
        Some(_) => return Err("the ENCRYPTION option has an unknown value"),
        None => return Err("the ENCRYPTION option is empty"),
    };
    Ok((level, offset))
}

/// The server's VERSION (zeros when it sends none of the right length).
fn version(data: &[u8]) -> [u8; 6] {
    match option(data, 0x00) {
        Ok(Some((value, _))) => value.try_into().unwrap_or_default(),
        _ => [0; 6],
    }
}

/// The value of option `wanted` in a PRELOGIN message, and its offset.
fn option(data: &[u8], wanted: u8) -> Result<Option<(&[u8], usize)>, &'static str> {
    let mut at = 0;
    loop {
        let token = *data.get(at).ok_or("the option table has no terminator")?;
        if token == 0xFF {
            return Ok(None);
        }
        let entry = data
            .get(at + 1..at + 5)
            .ok_or("an option entry is cut short")?;
        let offset = usize::from(u16::from_be_bytes([entry[0], entry[1]]));
        let length = usize::from(u16::from_be_bytes([entry[2], entry[3]]));
        if token == wanted {
            let value = data
                .get(offset..offset + length)
                .ok_or("an option points outside the message")?;
            return Ok(Some((value, offset)));
        }
        at += 5;
    }
}

/// Reads one message (packets up to the one with end of message), of at most `max` bytes
/// of data: its type (the first packet's) and data.
pub async fn read_message<S: AsyncRead + Unpin>(
    io: &mut S,
    max: usize,
) -> io::Result<(u8, Vec<u8>)> {
    let mut data = Vec::new();
    let mut kind = None;
    loop {
        let mut header = [0u8; HEADER];
        io.read_exact(&mut header).await?;
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if length < HEADER || data.len() + length - HEADER > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a PRELOGIN packet of {length} bytes"),
            ));
        }
        let start = data.len();
        data.resize(start + length - HEADER, 0);
        io.read_exact(&mut data[start..]).await?;
        let kind = *kind.get_or_insert(header[0]);
        if header[1] & 0x01 != 0 {
            return Ok((kind, data));
        }
    }
}

/// Connects to the server and negotiates encryption as the settings ask: the transport for
/// tiberius, and the fingerprint of the server's certificate when the connection is TLS.
pub async fn connect(
    host: &str,
    port: u16,
    settings: &DbSettings,
) -> Result<(Tunnel, Option<Fingerprint>), Error> {
    let unreachable = |e: io::Error| Error::Unreachable(e.to_string());
    let mut tcp = TcpStream::connect((host, port))
        .await
        .map_err(unreachable)?;
    let _ = tcp.set_nodelay(true);
    let encrypt = settings.ssl_mode != SslMode::Disable;
    tcp.write_all(&request(encrypt))
        .await
        .map_err(unreachable)?;
    let (kind, answer) = read_message(&mut tcp, MAX_PRELOGIN - HEADER)
        .await
        .map_err(|e| Error::Server(format!("PRELOGIN: {e}")))?;
    if kind != TYPE_REPLY {
        return Err(Error::Server(format!(
            "PRELOGIN answered with a packet of type {kind:#04x}"
        )));
    }
    let (level, _) = encryption(&answer).map_err(|e| Error::Server(format!("PRELOGIN: {e}")))?;
    let answer = self::answer(version(&answer));
    if !encrypt {
        return match level {
            Encryption::NotSupported => Ok((Tunnel::start(tcp, answer), None)),
            _ => Err(Error::Server(
                "the server requires encryption, which the session's \"ssl-mode\": \"disable\" turns off"
                    .to_owned(),
            )),
        };
    }
    match level {
        Encryption::On | Encryption::Required => {
            let tls = Tls::with_versions(settings.pins.clone(), &[&rustls::version::TLS12])
                .map_err(|e| Error::Server(e.to_string()))?;
            // The verifier checks the pins, not the name; an address is a name here too.
            let name = ServerName::try_from(host.to_owned())
                .unwrap_or_else(|_| ServerName::from(std::net::Ipv4Addr::LOCALHOST));
            let mut stream = match tls.connector().connect(name, Handshake::new(tcp)).await {
                Ok(stream) => stream,
                Err(error) => {
                    return Err(match tls.seen() {
                        Some(seen)
                            if !settings.pins.is_empty() && !settings.pins.contains(&seen) =>
                        {
                            Error::CertificateRefused(crate::tls::display(&seen))
                        }
                        _ => Error::Server(format!("TLS handshake: {error}")),
                    });
                }
            };
            stream
                .get_mut()
                .0
                .finish()
                .map_err(|e| Error::Server(format!("TLS handshake: {e}")))?;
            Ok((Tunnel::start(stream, answer), tls.seen()))
        }
        Encryption::NotSupported if settings.ssl_mode == SslMode::Prefer => {
            Ok((Tunnel::start(tcp, answer), None))
        }
        Encryption::NotSupported => Err(Error::TlsUnavailable),
        Encryption::Off => Err(Error::Server(
            "the server offers to encrypt the login only, not the session".to_owned(),
        )),
    }
}

/// What tiberius talks to: a pipe, and the task on its other end that holds the connection
/// (TLS, or plain TCP after the PRELOGIN).
#[derive(Debug)]
pub struct Tunnel {
    pipe: DuplexStream,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tunnel {
    /// Answers tiberius's PRELOGIN with `answer`, then copies between it and `server`.
    fn start<S>(server: S, answer: Vec<u8>) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (pipe, theirs) = tokio::io::duplex(PIPE);
        // tiberius sees the pipe end; why it ended goes to the log.
        let task = tokio::spawn(async move {
            if let Err(error) = relay(theirs, server, answer).await {
                tracing::info!(%error, "the SQL Server connection ended");
            }
        });
        Self { pipe, task }
    }
}

async fn relay<S>(mut client: DuplexStream, mut server: S, answer: Vec<u8>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (kind, _) = read_message(&mut client, MAX_PRELOGIN - HEADER).await?;
    if kind != TYPE_PRELOGIN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the client began with something else than PRELOGIN",
        ));
    }
    client.write_all(&packet(TYPE_REPLY, 1, &answer)).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

impl AsyncRead for Tunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().pipe).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().pipe).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().pipe).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().pipe).poll_shutdown(cx)
    }
}

/// The connection during the TLS handshake: what rustls writes goes out in PRELOGIN
/// packets, and what it reads is the data of the server's packets; after
/// [`Handshake::finish`], bytes pass as they are.
#[derive(Debug)]
pub struct Handshake<S> {
    io: S,
    bare: bool,
    /// The header being read, and how much of it is in.
    header: [u8; HEADER],
    header_in: usize,
    /// Data left in the packet being read.
    left: usize,
    /// The packet being written (its header first), and how much of it has gone out.
    out: Vec<u8>,
    sent: usize,
    packet_id: u8,
}

impl<S> Handshake<S> {
    /// Wraps the connection.
    pub fn new(io: S) -> Self {
        Self {
            io,
            bare: false,
            header: [0; HEADER],
            header_in: 0,
            left: 0,
            out: vec![0; HEADER],
            sent: 0,
            packet_id: 1,
        }
    }

    /// Ends the wrapping: from now on TLS records travel bare. An error if the handshake left
    /// part of a packet unread or unsent.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.left != 0 || self.header_in != 0 || self.out.len() > HEADER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the handshake ended inside a PRELOGIN packet",
            ));
        }
        self.bare = true;
        Ok(())
    }

    /// The connection.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

impl<S: AsyncWrite + Unpin> Handshake<S> {
    /// Sends the packet being written, if it holds data.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.len() == HEADER {
            return Poll::Ready(Ok(()));
        }
        // The header is written once a packet (a first write that waits comes back here).
        if self.sent == 0 && self.out[0] != TYPE_PRELOGIN {
            let length = u16::try_from(self.out.len()).unwrap_or(u16::MAX);
            self.out[..HEADER].copy_from_slice(&[
                TYPE_PRELOGIN,
                0x01,
                0,
                0,
                0,
                0,
                self.packet_id,
                0,
            ]);
            self.out[2..4].copy_from_slice(&length.to_be_bytes());
            self.packet_id = self.packet_id.wrapping_add(1);
        }
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.truncate(HEADER);
        self.out[0] = 0;
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Handshake<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.bare {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        while this.left == 0 {
            while this.header_in < HEADER {
                let mut header = ReadBuf::new(&mut this.header[this.header_in..]);
                ready!(Pin::new(&mut this.io).poll_read(cx, &mut header))?;
                let n = header.filled().len();
                if n == 0 {
                    return Poll::Ready(if this.header_in == 0 {
                        Ok(())
                    } else {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    });
                }
                this.header_in += n;
            }
            this.header_in = 0;
            let length = usize::from(u16::from_be_bytes([this.header[2], this.header[3]]));
            if !matches!(this.header[0], TYPE_PRELOGIN | TYPE_REPLY) || length < HEADER {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "a packet of type {:#04x} and {length} bytes during the TLS handshake",
                        this.header[0]
                    ),
                )));
            }
            this.left = length - HEADER;
        }
        let want = this.left.min(buf.remaining());
        let mut part = ReadBuf::new(buf.initialize_unfilled_to(want));
        ready!(Pin::new(&mut this.io).poll_read(cx, &mut part))?;
        let n = part.filled().len();
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        buf.advance(n);
        this.left -= n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Handshake<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.bare {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        // A packet partly sent, or full, goes out before anything is added to it.
        if this.sent > 0 || this.out.len() == MAX_PRELOGIN {
            ready!(this.poll_send(cx))?;
        }
        let n = buf.len().min(MAX_PRELOGIN - this.out.len());
        this.out.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.bare {
            ready!(this.poll_send(cx))?;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.bare {
            ready!(this.poll_send(cx))?;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_offers_encryption_and_reads_back() {
        assert_eq!(
            encryption(&request(false)[HEADER..]).map(|(level, _)| level),
            Ok(Encryption::NotSupported)
        );
        let request = request(true);
        assert_eq!(request[0], TYPE_PRELOGIN);
        assert_eq!(
            usize::from(u16::from_be_bytes([request[2], request[3]])),
            request.len()
        );
        let (level, at) = encryption(&request[HEADER..]).unwrap();
        assert_eq!(level, Encryption::On);
        assert_eq!(request[HEADER + at], ENCRYPT_ON);
    }

    #[test]
    fn tiberius_hears_the_servers_version_and_no_encryption() {
        let server = [
            0x00, 0, 11, 0, 6, 0x01, 0, 17, 0, 1, 0xFF, 16, 0, 3, 0xE8, 0, 0, 0x83,
        ];
        assert_eq!(encryption(&server), Ok((Encryption::Required, 17)));
        let answer = answer(version(&server));
        assert_eq!(
            option(&answer, 0x00),
            Ok(Some((&[16, 0, 3, 0xE8, 0, 0][..], 26)))
        );
        assert_eq!(
            encryption(&answer).map(|(level, _)| level),
            Ok(Encryption::NotSupported)
        );
        // A VERSION of another length is not passed on.
        assert_eq!(version(&[0x00, 0, 6, 0, 1, 0xFF, 7]), [0; 6]);
    }

    #[test]
    fn hostile_answers_are_errors() {
        for data in [
            &[][..],
            &[0x00, 0, 6, 0, 1][..],
            &[0x00, 0, 6, 0, 1, 0xFF][..],
            &[0x01, 0, 6, 0, 0, 0xFF][..],
            &[0x01, 0xFF, 0xFF, 0, 1, 0xFF][..],
            &[0x01, 0, 6, 0, 1, 0xFF, 0x07][..],
            &[0x01, 0, 6, 0, 1, 0xFF, 0x31][..],
            &[0x01, 0, 6][..],
        ] {
            assert!(encryption(data).is_err(), "{data:?}");
        }
        assert_eq!(
            encryption(&[0x01, 0, 6, 0, 1, 0xFF, 0x83]),
            Ok((Encryption::Required, 6))
        );
    }

    #[tokio::test]
    async fn messages_are_bounded_and_span_packets() {
        let mut two = packet(TYPE_REPLY, 1, b"abc");
        two[1] = 0;
        two.extend(packet(TYPE_REPLY, 2, b"de"));
        let (kind, data) = read_message(&mut &two[..], 16).await.unwrap();
        assert_eq!((kind, &data[..]), (TYPE_REPLY, &b"abcde"[..]));
        assert!(read_message(&mut &two[..], 4).await.is_err());
        assert!(
            read_message(&mut &[0x04, 1, 0, 3, 0, 0, 0, 0][..], 16)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_handshake_wraps_and_unwraps_packets_then_passes_bytes() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut wrapped = Handshake::new(near);
        wrapped
            .write_all(&vec![7; MAX_PRELOGIN + 10])
            .await
            .unwrap();
        wrapped.flush().await.unwrap();
        let (_, first) = read_message(&mut far, MAX_PRELOGIN).await.unwrap();
        let (_, second) = read_message(&mut far, MAX_PRELOGIN).await.unwrap();
        assert_eq!(first.len() + second.len(), MAX_PRELOGIN + 10);
        far.write_all(&packet(TYPE_PRELOGIN, 1, b"hello"))
            .await
            .unwrap();
        let mut got = [0u8; 5];
        wrapped.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        wrapped.finish().unwrap();
        wrapped.write_all(b"bare").await.unwrap();
        let mut got = [0u8; 4];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"bare");
        // A packet of another type during the handshake is an error.
        let (near, mut far) = tokio::io::duplex(1024);
        let mut wrapped = Handshake::new(near);
        far.write_all(&packet(0x01, 1, b"select")).await.unwrap();
        assert!(wrapped.read_exact(&mut [0u8; 1]).await.is_err());
    }
}
