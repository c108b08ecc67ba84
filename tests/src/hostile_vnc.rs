//! A hostile RFB server for the native VNC tests: it logs the client in as RFB 3.8 with "None"
//! security, then sends one [`Attack`] and holds the connection open (reading whatever the
//! client sends) until the client closes it. It counts the connections that were closed, so
//! a test can see that ztproxy left.

// Test support: a failed expectation is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does after the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// ServerInit announces a 65535 × 65535 desktop (4.3 billion pixels).
    BillionPixels,
    /// A Raw rectangle of 65535 × 65535 at (0, 0).
    OversizedRect,
    /// A Raw rectangle that starts inside the framebuffer and ends outside it.
    RectOutside,
    /// A SetColourMapEntries message (the client asked for true colour).
    ColourMap,
    /// A ZRLE rectangle whose zlib data ends before its first tile does.
    TruncatedZrle,
    /// A Tight rectangle whose data is not zlib.
    BrokenTight,
    /// ServerCutText announcing 2 GiB, then bytes without end.
    EndlessCutText,
    /// FramebufferUpdates nobody asked for, of new noise each, as fast as they go.
    UnaskedUpdates,
}

/// The desktop the server announces (except for [`Attack::BillionPixels`]).
pub const SIZE: (u16, u16) = (640, 400);

/// A running hostile server.
pub struct HostileVnc {
    /// Where it listens.
    pub addr: SocketAddr,
    closed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostileVnc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostileVnc {
    /// Starts the server on 127.0.0.1.
    pub async fn start(attack: Attack) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closed = Arc::new(AtomicUsize::new(0));
        let counter = closed.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, attack).await;
                    counter.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self { addr, closed, task }
    }

    /// Connections the client has closed.
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A zlib stream of `data` in one stored block, cut to its first `keep` bytes.
fn zlib_stored(data: &[u8], keep: usize) -> Vec<u8> {
    let mut out = vec![0x78, 0x01, 0x01];
    let len = u16::try_from(data.len()).unwrap();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out.truncate(keep);
    out
}

fn rect_header(out: &mut Vec<u8>, (x, y, w, h): (u16, u16, u16, u16), encoding: i32) {
    for v in [x, y, w, h] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&encoding.to_be_bytes());
}

async fn serve(mut stream: TcpStream, attack: Attack) -> std::io::Result<()> {
    let mut buf = [0u8; 64];
    stream.write_all(b"RFB 003.008\n").await?;
    stream.read_exact(&mut buf[..12]).await?;
    stream.write_all(&[1, 1]).await?; // one security type: None
    stream.read_exact(&mut buf[..1]).await?;
    stream.write_all(&[0, 0, 0, 0]).await?; // SecurityResult OK
    stream.read_exact(&mut buf[..1]).await?; // ClientInit
    let (width, height) = if attack == Attack::BillionPixels {
        (u16::MAX, u16::MAX)
    } else {
        SIZE
    };
    let mut init = Vec::new();
    init.extend_from_slice(&width.to_be_bytes());
    init.extend_from_slice(&height.to_be_bytes());
    // 32 bpp, depth 24, little-endian, true colour, red at 16, green at 8, blue at 0.
    init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    init.extend_from_slice(&7u32.to_be_bytes());
    init.extend_from_slice(b"hostile");
    stream.write_all(&init).await?;
    let mut attack_bytes = Vec::new();
    let update = |out: &mut Vec<u8>| out.extend_from_slice(&[0, 0, 0, 1]);
    match attack {
        Attack::BillionPixels => {}
        Attack::OversizedRect => {
            update(&mut attack_bytes);
            rect_header(&mut attack_bytes, (0, 0, u16::MAX, u16::MAX), 0);
        }
        Attack::RectOutside => {
            update(&mut attack_bytes);
            rect_header(&mut attack_bytes, (600, 390, 100, 20), 0);
            attack_bytes.extend(std::iter::repeat_n(0x55, 100 * 20 * 4));
        }
        Attack::ColourMap => {
            attack_bytes.extend_from_slice(&[1, 0, 0, 0, 0, 1]);
            attack_bytes.extend_from_slice(&[0xFF; 6]);
        }
        Attack::TruncatedZrle => {
            update(&mut attack_bytes);
            rect_header(&mut attack_bytes, (0, 0, 64, 64), 16);
            // A raw tile needs 64 × 64 × 3 bytes after its subencoding: five come, and the
            // zlib stream itself is cut before its end.
            let zlib = zlib_stored(&[0, 1, 2, 3, 4, 5], 9);
            attack_bytes.extend_from_slice(&u32::try_from(zlib.len()).unwrap().to_be_bytes());
            attack_bytes.extend_from_slice(&zlib);
        }
        Attack::BrokenTight => {
            update(&mut attack_bytes);
            rect_header(&mut attack_bytes, (0, 0, 64, 64), 7);
            // Basic compression on stream 0, no filter; 200 bytes that are not zlib.
            attack_bytes.push(0x00);
            attack_bytes.extend_from_slice(&[0x80 | 0x48, 0x01]); // 200 as a compact length
            attack_bytes.extend(std::iter::repeat_n(0xAB, 200));
        }
        Attack::EndlessCutText => {
            attack_bytes.extend_from_slice(&[3, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF]);
        }
        Attack::UnaskedUpdates => {}
    }
    // Let the client's SetPixelFormat, SetEncodings and first request arrive first.
    let _ =
        tokio::time::timeout(std::time::Duration::from_millis(200), stream.read(&mut buf)).await;
    stream.write_all(&attack_bytes).await?;
    let (mut reader, mut writer) = stream.into_split();
    let feeder = tokio::spawn(async move {
        if attack == Attack::EndlessCutText {
            let chunk = vec![b'x'; 64 * 1024];
            while writer.write_all(&chunk).await.is_ok() {}
            return;
        }
        if attack == Attack::UnaskedUpdates {
            let mut seed = 0x9E37_79B9_u32;
            loop {
                let mut update = vec![0, 0, 0, 1];
                rect_header(&mut update, (0, 0, 128, 128), 0);
                for _ in 0..128 * 128 {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    update.extend_from_slice(&seed.to_le_bytes());
                }
                if writer.write_all(&update).await.is_err() {
                    return;
                }
            }
        }
        // Hold the writing half open.
        std::future::pending::<()>().await;
    });
    // Until the client closes.
    let mut sink = vec![0u8; 4096];
    while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    feeder.abort();
    Ok(())
}
