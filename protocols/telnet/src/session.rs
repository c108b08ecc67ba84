//! The running session: the server's bytes through the Telnet codec into the terminal (and
//! the login automation), the terminal's frames to the client, the client's input through
//! the terminal and the codec to the server.
//!
//! ```text
//!              ┌──────────────────────────── run() ──────────────────────────────┐
//!  telnetd ──▶ │ socket ─▶ Telnet::receive ─▶ data ─┬▶ Terminal ─ poll_client ─▶ │ ──▶ pipe ──▶ core
//!              │                                    └▶ Login ─▶ credentials ─┐   │
//!  telnetd ◀── │ socket ◀─ Telnet::poll_transmit ◀─ send ◀─ Terminal ◀───────┴── │ ◀── pipe ◀── core
//!              └─────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Flow control: the server is always read. While the pipe to the client is full, the
//! terminal keeps taking output and the next frame waits, so frames coalesce. Bytes for the
//! server wait in a buffer of at most [`MAX_TO_TARGET`] bytes; while it is full the terminal
//! keeps the user's input (bounded by its own limit) and the codec its replies (bounded by
//! [`crate::codec::MAX_PENDING_REPLIES`]), so a server that stops reading costs bounded
//! memory and never stops its output being read.

use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use zt_guac::{Decoder, Limits, opcode};
use zt_terminal::{Event, Observer, Terminal};

use crate::codec::Telnet;
use crate::error::Error;
use crate::login::{Action, Failure, Login};
use crate::settings::TelnetSettings;

/// Bytes read from the server or the pipe at a time.
const READ_CHUNK: usize = 16 * 1024;
/// The most bytes waiting to be written to the server.
pub const MAX_TO_TARGET: usize = 64 * 1024;
/// How long the last words to the client (the `error`) may take.
const LAST_WORDS: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a stopped session keeps its pipe open for the proxy's farewell to the client.
const STOPPED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection to a Telnet server, with the login still to do.
#[derive(Debug)]
pub struct TelnetConnection {
    stream: TcpStream,
    settings: TelnetSettings,
    /// When the login must be done by (the connection's start plus `timeout`).
    deadline: Instant,
}

/// Connects to `host`:`port` within the settings' `timeout`; the login (and the rest of the
/// timeout) happens in [`run`], on the user's screen.
pub async fn connect(
    host: &str,
    port: u16,
    settings: &TelnetSettings,
) -> Result<TelnetConnection, Error> {
    let started = Instant::now();
    let stream = tokio::time::timeout(settings.timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| Error::Timeout(settings.timeout))?
        .map_err(|e| Error::Unreachable(e.kind()))?;
    // Keys go out as they are typed.
    let _ = stream.set_nodelay(true);
    Ok(TelnetConnection {
        stream,
        settings: settings.clone(),
        deadline: started + settings.timeout,
    })
}

/// Why a session ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndedBy {
    /// The server closed the connection (the shell exited, the device hung up).
    Target,
    /// The client's side of the pipe closed or said `disconnect`.
    Client,
    /// `stop` was cancelled (revocation, shutdown, a failed recording).
    Stopped,
    /// The login failed (`login-failure-regex`, or the `timeout` passed), or the connection
    /// failed.
    Failed(Error),
}

/// How a session ended, with its figures.
#[derive(Debug)]
#[non_exhaustive]
pub struct SessionEnd {
    /// Why.
    pub ended_by: EndedBy,
    /// Whether the login automation finished (it succeeded, or there was nothing to do).
    pub logged_in: bool,
    /// Bytes of terminal data the server sent (negotiation not counted).
    pub bytes_from_target: u64,
    /// Bytes of terminal data sent to the server for the user (credentials not counted).
    pub bytes_to_target: u64,
}

/// Runs a connection until the server closes it, the client goes away, the login fails, or
/// `stop` is cancelled. `pipe` carries Guacamole instructions: the client's input after the
/// proxy's filter one way, the terminal's frames the other.
///
/// The credentials are typed for the user when the server prompts for them; they go to the
/// server and nowhere else (not to the observer: a typescript with the user's keys never
/// holds the password).
pub async fn run<P>(
    connection: TelnetConnection,
    mut terminal: Terminal,
    pipe: P,
    observer: &mut dyn Observer,
    stop: CancellationToken,
) -> SessionEnd
where
    P: AsyncRead + AsyncWrite + Unpin,
{
    let TelnetConnection {
        stream,
        settings,
        deadline,
    } = connection;
    let geometry = terminal.geometry();
    let mut telnet = Telnet::new(&settings.terminal_type, geometry.cols, geometry.rows);
    let mut login = Login::new(
        settings.login.clone(),
        settings.username.is_some(),
        settings.password.is_some(),
        deadline,
    );
    let (mut target_reader, mut target_writer) = stream.into_split();
    let (mut reader, mut writer) = tokio::io::split(pipe);
    let mut decoder = Decoder::new(Limits::default());
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut received = BytesMut::with_capacity(READ_CHUNK);
    let mut to_target = BytesMut::new();
    let mut out = BytesMut::new();
    let mut target_open = true;
    let mut end = SessionEnd {
        ended_by: EndedBy::Target,
        logged_in: login.is_done(),
        bytes_from_target: 0,
        bytes_to_target: 0,
    };
    end.ended_by = loop {
        while let Some(event) = terminal.poll_event() {
            match event {
                Event::Resize { cols, rows, .. } => {
                    observer.resize(cols, rows);
                    telnet.resize(cols, rows);
                }
                other => observer.terminal(&other),
            }
        }
        if to_target.len() < MAX_TO_TARGET {
            // The user's keys wait while the login has the terminal (a success regex that
            // has not matched yet); the terminal holds them, bounded.
            if !login.holds_input()
                && let Some(bytes) = terminal.poll_target()
            {
                observer.input(&bytes);
                end.bytes_to_target += bytes.len() as u64;
                telnet.send(&bytes);
            }
            if let Some(bytes) = telnet.poll_transmit() {
                to_target.extend_from_slice(&bytes);
            }
        }
        if out.is_empty()
            && let Some(frame) = terminal.poll_client(Instant::now())
        {
            out = frame;
        }
        if !target_open && out.is_empty() && terminal.poll_timeout().is_none() {
            // The last frame is out.
            break EndedBy::Target;
        }
        let deadline = earliest(
            if out.is_empty() {
                terminal.poll_timeout()
            } else {
                None
            },
            login.poll_timeout(),
        );
        let mut action = None;
        tokio::select! {
            () = stop.cancelled() => break EndedBy::Stopped,
            read = target_reader.read_buf(&mut received), if target_open => match read {
                Ok(0) => target_open = false,
                Err(error) => break EndedBy::Failed(Error::Io(error.kind())),
                Ok(_) => {
                    telnet.receive(&received);
                    received.clear();
                    // Echo and NAWS need nothing from here: the codec answers and the
                    // terminal shows what the server echoes.
                    while telnet.poll_event().is_some() {}
                    if let Some(data) = telnet.poll_data() {
                        observer.output(&data);
                        end.bytes_from_target += data.len() as u64;
                        terminal.handle_target(&data);
                        action = login.output(&data);
                    }
                }
            },
            written = target_writer.write(&to_target), if !to_target.is_empty() && target_open => {
                match written {
                    Ok(0) => target_open = false,
                    Err(error) => break EndedBy::Failed(Error::Io(error.kind())),
                    Ok(n) => to_target.advance(n),
                }
            }
            read = reader.read_buf(&mut input) => match read {
                Ok(0) | Err(_) => break EndedBy::Client,
                Ok(_) => {
                    decoder.feed(&input);
                    input.clear();
                    if !decoder.drain_until_disconnect(|i| terminal.handle_client(i)) {
                        break EndedBy::Client;
                    }
                }
            },
            written = writer.write(&out), if !out.is_empty() => match written {
                Ok(0) | Err(_) => break EndedBy::Client,
                Ok(n) => out.advance(n),
            },
            () = sleep_until(deadline) => action = login.handle_timeout(Instant::now()),
        }
        // One chunk of output may call for more than one step (both prompts at once).
        let mut failed = None;
        while let Some(step) = action {
            action = match step {
                Action::SendUsername => {
                    if let Some(username) = &settings.username {
                        telnet.send(username.expose_secret().as_bytes());
                        telnet.send(b"\r");
                    }
                    login.output(b"")
                }
                Action::SendPassword => {
                    if let Some(password) = &settings.password {
                        telnet.send(password.expose_secret().as_bytes());
                        telnet.send(b"\r");
                    }
                    login.output(b"")
                }
                Action::Succeeded => None,
                Action::Failed(Failure::Refused) => {
                    failed = Some(Error::LoginRefused);
                    None
                }
                Action::Failed(Failure::TimedOut) => {
                    failed = Some(Error::Timeout(settings.timeout));
                    None
                }
            };
            // Credentials go out whatever the user's input waiting does (the codec's buffer
            // is not bounded for them, and they are short).
            if let Some(bytes) = telnet.poll_transmit() {
                to_target.extend_from_slice(&bytes);
            }
        }
        end.logged_in = login.is_done() && failed.is_none();
        if let Some(error) = failed {
            break EndedBy::Failed(error);
        }
    };
    if let EndedBy::Failed(error) = &end.ended_by {
        // The user sees the server's last words (`Login incorrect`), then hears why, as
        // from guacd.
        let mut farewell = std::mem::take(&mut out);
        if let Some(frame) = terminal.poll_client(Instant::now() + zt_terminal::FRAME_INTERVAL) {
            farewell.extend_from_slice(&frame);
        }
        zt_guac::encode(
            opcode::ERROR,
            &[error.client_message(), &error.status().code().to_string()],
            &mut farewell,
        );
        let _ = tokio::time::timeout(LAST_WORDS, writer.write_all(&farewell)).await;
    }
    // The connection to the server closes now, whatever the pipe does.
    drop(target_reader);
    drop(target_writer);
    if let EndedBy::Stopped = end.ended_by {
        // The proxy tells the client why the session ended; the pipe stays open until it
        // has, so the client never hears "the target closed" instead.
        let _ = tokio::time::timeout(STOPPED_GRACE, async {
            let mut sink = [0; 4096];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
    let _ = writer.shutdown().await;
    end
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
