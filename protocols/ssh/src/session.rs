//! The running session: the target's output into the terminal, the terminal's frames to the
//! client, the client's input through the terminal to the target.
//!
//! ```text
//!            ┌──────────── run() ─────────────┐
//!  sshd ◀──▶ │ channel ◀─ poll_target ─ Terminal ◀─ handle_client ◀─ decoder │ ◀── pipe ◀── core
//!            │ channel ─▶ handle_target ▶ Terminal ─ poll_client ─▶ frame ───│ ──▶ pipe ──▶ core
//!            └────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Flow control: the target is always read. While the pipe to the client is full (the
//! client is behind), the terminal keeps taking output and the next frame waits, so frames
//! coalesce: a flood costs the client a few frames of the final screen, never a queue, and
//! memory stays the terminal's own (bounded by its grid and scrollback).

use std::time::Instant;

use bytes::{Buf, BytesMut};
use russh::ChannelMsg;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use zt_guac::{Decoder, Limits, Status, opcode};
use zt_terminal::{Event, Terminal};

use crate::connect::SshConnection;
use crate::error::Error;

/// Bytes read from the pipe at a time.
const READ_CHUNK: usize = 16 * 1024;
/// How long the last words to either side may take (the `disconnect` to the target, the
/// `error` to the client).
const LAST_WORDS: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a stopped session keeps its pipe open for the proxy's farewell to the client.
const STOPPED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What a session reports while it runs. Called from the session's task between two awaits:
/// keep each call short and never block (append to a queue, set a flag).
pub trait Observer: Send {
    /// Bytes the target sent, as the terminal receives them (a typescript's output).
    fn output(&mut self, bytes: &[u8]);
    /// Bytes sent to the target for the user: keys, pastes, mouse reports, and the
    /// terminal's answers to the target's queries.
    fn input(&mut self, bytes: &[u8]);
    /// The terminal (and the target's window) changed to `cols` × `rows`.
    fn resize(&mut self, cols: u16, rows: u16);
    /// Something the terminal did that policy cares about (a copy, a refused paste).
    fn terminal(&mut self, event: &Event);
}

/// Why a session ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndedBy {
    /// The target closed the channel (the shell or command exited).
    Target,
    /// The client's side of the pipe closed or said `disconnect`.
    Client,
    /// `stop` was cancelled (revocation, shutdown, a failed recording).
    Stopped,
    /// The SSH connection failed.
    Failed(Error),
}

/// How a session ended, with its figures.
#[derive(Debug)]
#[non_exhaustive]
pub struct SessionEnd {
    /// Why.
    pub ended_by: EndedBy,
    /// The command's or shell's exit status, when the target sent one.
    pub exit_status: Option<u32>,
    /// Bytes of terminal output the target sent.
    pub bytes_from_target: u64,
    /// Bytes sent to the target.
    pub bytes_to_target: u64,
}

/// Runs a logged-in connection until the target closes it, the client goes away, or `stop`
/// is cancelled; then disconnects from the target. `pipe` carries Guacamole instructions:
/// the client's input after the proxy's filter one way, the terminal's frames the other.
pub async fn run<P>(
    connection: SshConnection,
    mut terminal: Terminal,
    pipe: P,
    observer: &mut dyn Observer,
    stop: CancellationToken,
) -> SessionEnd
where
    P: AsyncRead + AsyncWrite + Unpin,
{
    let SshConnection {
        handle,
        mut channel,
        ..
    } = connection;
    let (mut reader, mut writer) = tokio::io::split(pipe);
    let mut decoder = Decoder::new(Limits::default());
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::new();
    let mut target_open = true;
    let mut end = SessionEnd {
        ended_by: EndedBy::Target,
        exit_status: None,
        bytes_from_target: 0,
        bytes_to_target: 0,
    };
    end.ended_by = 'session: loop {
        while let Some(event) = terminal.poll_event() {
            match event {
                Event::Resize {
                    cols,
                    rows,
                    width,
                    height,
                } => {
                    observer.resize(cols, rows);
                    if target_open {
                        let change =
                            channel.window_change(u32::from(cols), u32::from(rows), width, height);
                        tokio::select! {
                            _ = change => {}
                            () = stop.cancelled() => break 'session EndedBy::Stopped,
                        }
                    }
                }
                other => observer.terminal(&other),
            }
        }
        if let Some(bytes) = terminal.poll_target()
            && target_open
        {
            observer.input(&bytes);
            end.bytes_to_target += bytes.len() as u64;
            // A target that stops reading holds this up (its window is shut), never the
            // session's end.
            let sent = tokio::select! {
                sent = channel.data_bytes(bytes) => sent,
                () = stop.cancelled() => break EndedBy::Stopped,
            };
            if let Err(error) = sent {
                break EndedBy::Failed(Error::protocol(&error));
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
        let deadline = if out.is_empty() {
            terminal.poll_timeout()
        } else {
            None
        };
        tokio::select! {
            () = stop.cancelled() => break EndedBy::Stopped,
            message = channel.wait(), if target_open => match message {
                Some(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) => {
                    observer.output(&data);
                    end.bytes_from_target += data.len() as u64;
                    terminal.handle_target(&data);
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => end.exit_status = Some(exit_status),
                Some(ChannelMsg::Close) | None => target_open = false,
                Some(_) => {}
            },
            read = reader.read_buf(&mut input) => match read {
                Ok(0) | Err(_) => break EndedBy::Client,
                Ok(_) => {
                    decoder.feed(&input);
                    input.clear();
                    if !take_input(&mut decoder, &mut terminal) {
                        break EndedBy::Client;
                    }
                }
            },
            written = writer.write(&out), if !out.is_empty() => match written {
                Ok(0) | Err(_) => break EndedBy::Client,
                Ok(n) => out.advance(n),
            },
            () = sleep_until(deadline) => {}
        }
    };
    match &end.ended_by {
        EndedBy::Failed(error) => {
            // The client hears why, as it would from guacd.
            let mut farewell = BytesMut::new();
            zt_guac::encode(
                opcode::ERROR,
                &[
                    error.client_message(),
                    &Status::UPSTREAM_ERROR.code().to_string(),
                ],
                &mut farewell,
            );
            let _ = tokio::time::timeout(LAST_WORDS, writer.write_all(&farewell)).await;
        }
        EndedBy::Client | EndedBy::Stopped => {
            // A target that stopped reading cannot hold this up: the connection is dropped
            // below either way.
            let _ = tokio::time::timeout(
                LAST_WORDS,
                handle.disconnect(russh::Disconnect::ByApplication, "session ended", ""),
            )
            .await;
        }
        EndedBy::Target => {}
    }
    // The connection to the target closes now, whatever the pipe does.
    drop(channel);
    drop(handle);
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

/// Hands the client's instructions to the terminal; false when the client said
/// `disconnect` or sent something undecodable.
fn take_input(decoder: &mut Decoder, terminal: &mut Terminal) -> bool {
    loop {
        match decoder.poll_instruction() {
            Ok(Some(instruction)) if instruction.is(opcode::DISCONNECT) => return false,
            Ok(Some(instruction)) => terminal.handle_client(&instruction),
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
