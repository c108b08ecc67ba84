//! `ztproxy connect guac`: a local port that speaks guacd's protocol. Each TCP connection
//! becomes one connection session, created through the control API for the configured target
//! with the credentials this command was given, and carried over WebRTC or QUIC to ztproxy,
//! which plays guacd's part of the handshake. So guacamole-client's web application,
//! guacamole-lite or any guacd client works with ztproxy as with guacd — except that nothing
//! it says in `select` or `connect` chooses the target or the credentials: ztproxy takes those
//! from the session and ignores the client's.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zt_api::control::CreateSessionRequest;

use super::api::ApiClient;
use super::session::{ClientSession, TunnelOptions};

/// Bytes read from the local client at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Local connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Why one local connection ended badly.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("the local client sent bytes that are not UTF-8")]
    NotUtf8,
    #[error("{0}")]
    Transport(String),
    #[error("local socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `listener` until `cancel` fires: one session per accepted connection.
pub async fn serve(
    listener: TcpListener,
    api: ApiClient,
    template: CreateSessionRequest,
    options: TunnelOptions,
    cancel: CancellationToken,
) {
    let tasks = TaskTracker::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            eprintln!("ztproxy: refusing {peer}: {MAX_CONNECTIONS} connections are open");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let api = api.clone();
        let request = template.clone();
        let options = options.clone();
        let cancel = cancel.child_token();
        tasks.spawn(async move {
            let _slot = slot;
            connection(tcp, &api, request, &options, &cancel).await;
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
}

async fn connection(
    tcp: TcpStream,
    api: &ApiClient,
    request: CreateSessionRequest,
    options: &TunnelOptions,
    cancel: &CancellationToken,
) {
    let (session, id) = match ClientSession::connect_with(api, request, options).await {
        Ok(connected) => connected,
        Err(error) => {
            eprintln!("ztproxy: cannot create a session for a local client: {error}");
            refuse(tcp, &error.to_string()).await;
            return;
        }
    };
    eprintln!("ztproxy: session {id} for a local Guacamole client");
    let outcome = match session.open().await {
        Ok(stream) => {
            let (reader, writer) = stream.split();
            tokio::select! {
                () = cancel.cancelled() => Ok(()),
                outcome = relay(tcp, reader, writer) => outcome,
            }
        }
        Err(error) => Err(RelayError::Transport(error.to_string())),
    };
    if let Err(error) = outcome {
        eprintln!("ztproxy: session {id}: {error}");
    }
    session.close().await;
    // The gateway's part: the session is over when its only connection is.
    if let Err(error) = api.delete_session(&id).await {
        tracing::debug!(%error, "session already ended");
    }
}

/// Tells a local client that nothing will come, as guacd does: an `error` instruction.
async fn refuse(mut tcp: TcpStream, message: &str) {
    let mut out = bytes::BytesMut::new();
    zt_guac::encode(
        zt_guac::opcode::ERROR,
        &[
            message.to_owned(),
            zt_guac::Status::UPSTREAM_UNAVAILABLE.code().to_string(),
        ],
        &mut out,
    );
    let _ = tcp.write_all(&out).await;
    let _ = tcp.shutdown().await;
}

async fn relay(
    tcp: TcpStream,
    mut reader: crate::transport::stream::StreamReader,
    mut writer: crate::transport::stream::StreamWriter,
) -> Result<(), RelayError> {
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let upstream = async {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = tcp_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), RelayError>(());
            }
            pending.extend_from_slice(buf.get(..n).unwrap_or_default());
            // Channels carry text: send whole characters, keep a split one for later.
            let valid = match std::str::from_utf8(&pending) {
                Ok(_) => pending.len(),
                Err(error) if error.error_len().is_none() => error.valid_up_to(),
                Err(_) => return Err(RelayError::NotUtf8),
            };
            if valid > 0 {
                let rest = pending.split_off(valid);
                let whole = std::mem::replace(&mut pending, rest);
                writer
                    .send(Bytes::from(whole))
                    .await
                    .map_err(|e| RelayError::Transport(e.to_string()))?;
            }
        }
    };
    let downstream = async {
        loop {
            match reader.recv().await {
                Ok(Some(bytes)) => tcp_write.write_all(&bytes).await?,
                Ok(None) => {
                    let _ = tcp_write.shutdown().await;
                    return Ok::<(), RelayError>(());
                }
                Err(error) => return Err(RelayError::Transport(error.to_string())),
            }
        }
    };
    tokio::select! {
        outcome = upstream => outcome,
        outcome = downstream => outcome,
    }
}
