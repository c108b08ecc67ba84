//! The tokio driver: [`connect`] opens TCP to guacd and runs a [`GuacdHandshake`] on it.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use zt_secret::Secret;

use crate::codec::ProtocolVersion;
use crate::error::{Error, Phase};
use crate::proto::{GuacdHandshake, HandshakeEvent};
use crate::settings::{ClientInfo, HandshakeSettings};

/// A guacd connection past `ready`, ready for the proxy's relay.
///
/// `stream` is positioned after the bytes in `leftover`: feed `leftover` to the relay's
/// decoder before reading from `stream`. Dropping it closes the connection, which guacd
/// treats as the user leaving. (`Debug` shows the length of `leftover`, not its bytes: they
/// are the user's display stream, which may carry clipboard data.)
#[non_exhaustive]
pub struct GuacdConnection {
    /// guacd's id for the connection (`$` and a UUID).
    pub connection_id: String,
    /// The version guacd announced; `None` before guacd 1.1.
    pub guacd_version: Option<ProtocolVersion>,
    /// The version both sides speak.
    pub protocol_version: ProtocolVersion,
    /// guacd's parameter names in `args` order.
    pub args: Vec<String>,
    /// The socket, `TCP_NODELAY` set.
    pub stream: TcpStream,
    /// What guacd sent after `ready` in the same reads (the start of the display stream).
    pub leftover: BytesMut,
}

impl fmt::Debug for GuacdConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuacdConnection")
            .field("connection_id", &self.connection_id)
            .field("guacd_version", &self.guacd_version)
            .field("protocol_version", &self.protocol_version)
            .field("args", &self.args.len())
            .field("stream", &self.stream)
            .field("leftover", &self.leftover.len())
            .finish()
    }
}

/// Connects to guacd at `addr` and performs the handshake for `protocol` with the session's
/// `parameters` and the user's display settings, all within `settings.timeout` (TCP connect
/// included; [`HandshakeSettings::with_timeout`] for the default limits).
///
/// `parameters` must come from the session only (see [`GuacdHandshake::new`]). Errors say
/// which side failed: [`Error::Refused`], [`Error::Unreachable`], [`Error::TimedOut`] (with
/// the phase), [`Error::Closed`], [`Error::Guacd`] (guacd's status),
/// [`Error::PeerMisbehaved`], or a local limit ([`Error::ParameterTooLong`], …).
pub async fn connect(
    addr: SocketAddr,
    protocol: &str,
    parameters: &BTreeMap<String, Secret<String>>,
    client: ClientInfo,
    settings: HandshakeSettings,
) -> Result<GuacdConnection, Error> {
    // A timeout too long to add to the clock (`Duration::MAX`) means no deadline.
    let deadline = Instant::now().checked_add(settings.timeout);
    let connecting = TcpStream::connect(addr);
    let connected = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, connecting)
            .await
            .map_err(|_| Error::TimedOut {
                phase: Phase::Connect,
            })?,
        None => connecting.await,
    };
    let mut stream = match connected {
        Ok(stream) => stream,
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(Error::Refused(error));
        }
        Err(error) => return Err(Error::Unreachable(error)),
    };
    stream.set_nodelay(true).map_err(Error::Io)?;

    let mut remaining = settings;
    if let Some(deadline) = deadline {
        remaining.timeout = deadline.saturating_duration_since(Instant::now());
    }
    let mut handshake = GuacdHandshake::with_settings(protocol, parameters, client, remaining);
    handshake.start(Instant::now().into_std());
    let ready = drive(&mut handshake, &mut stream).await?;
    let HandshakeEvent::Ready {
        connection_id,
        guacd_version,
        protocol_version,
        args,
    } = ready;
    Ok(GuacdConnection {
        connection_id,
        guacd_version,
        protocol_version,
        args,
        stream,
        leftover: handshake.take_leftover(),
    })
}

/// Runs `handshake` on `stream` until `ready`.
async fn drive(
    handshake: &mut GuacdHandshake,
    stream: &mut TcpStream,
) -> Result<HandshakeEvent, Error> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        while let Some(bytes) = handshake.poll_transmit() {
            let deadline = handshake.poll_timeout().map(Instant::from_std);
            let write = stream.write_all(&bytes);
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, write)
                    .await
                    .map_err(|_| Error::TimedOut {
                        phase: handshake.phase(),
                    })?
                    .map_err(Error::Io)?,
                None => write.await.map_err(Error::Io)?,
            }
        }
        if let Some(event) = handshake.poll_event() {
            return Ok(event);
        }
        let deadline = handshake.poll_timeout().map(Instant::from_std);
        tokio::select! {
            read = stream.read_buf(&mut buf) => {
                if read.map_err(Error::Io)? == 0 {
                    return Err(Error::Closed { phase: handshake.phase() });
                }
                handshake.handle_input(Instant::now().into_std(), &buf)?;
                buf.clear();
            }
            () = sleep_until(deadline) => handshake.handle_timeout(Instant::now().into_std())?,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Bytes read from guacd at a time during the handshake (`args` of guacd 1.6's RDP is
/// about 1.5 KB).
const READ_CHUNK: usize = 16 * 1024;

#[cfg(test)]
mod tests;
