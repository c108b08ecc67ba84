//! A flood of silent TCP connections, in a process of its own so that a test can open more
//! connections than one process's open-files limit allows.
//!
//! `zt-flood ADDR COUNT WAIT_MS`: opens COUNT connections to ADDR (at most 256 connecting at
//! once), sends nothing, prints `{"opened":N,"failed":M}`, then waits at most WAIT_MS for
//! the server to close them and prints `{"closed":N,"open":K}`. It exits when its stdin
//! closes, too, so it never outlives the test.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(count), Some(wait)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: zt-flood ADDR COUNT WAIT_MS");
    };
    let addr: SocketAddr = addr.parse()?;
    let count: usize = count.parse()?;
    let wait = Duration::from_millis(wait.parse()?);
    tokio::spawn(async {
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 64];
        while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        std::process::exit(0);
    });

    let mut held = Vec::with_capacity(count);
    let mut failed = 0usize;
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..count {
        if pending.len() >= 256
            && let Some(joined) = pending.join_next().await
        {
            match joined? {
                Ok(stream) => held.push(stream),
                Err(_) => failed += 1,
            }
        }
        pending.spawn(TcpStream::connect(addr));
    }
    while let Some(joined) = pending.join_next().await {
        match joined? {
            Ok(stream) => held.push(stream),
            Err(_) => failed += 1,
        }
    }
    println!("{{\"opened\":{},\"failed\":{failed}}}", held.len());

    let mut waits = tokio::task::JoinSet::new();
    for mut stream in held {
        waits.spawn(async move {
            let mut byte = [0u8; 1];
            // Closed: EOF or a reset. Bytes from a silent connection's server count as open.
            matches!(stream.read(&mut byte).await, Ok(0) | Err(_))
        });
    }
    let mut closed = 0usize;
    let mut open = waits.len();
    let _ = tokio::time::timeout(wait, async {
        while let Some(joined) = waits.join_next().await {
            if joined.unwrap_or(false) {
                closed += 1;
                open -= 1;
            }
        }
    })
    .await;
    println!("{{\"closed\":{closed},\"open\":{open}}}");
    Ok(())
}
