//! The running session: the process's output into the terminal, the client's keys and size
//! out to the process, until the status stream says how it ended.
//!
//! ```text
//!              ┌───────────────────────────── run() ───────────────────────────────┐
//!  API server ─▶ WebSocket ─▶ channel::decode ─▶ stdout ─▶ Terminal ─ poll_client ─▶ pipe ─▶ core
//!              │                              └▶ status ─▶ outcome (exit status)     │
//!  API server ◀─ writer task ◀─ queue ◀─ stdin ◀─ Terminal ◀──────────────────────── pipe ◀─ core
//!              │                      └─ resize ◀─ the client's `size`               │
//!              └───────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Flow control: the server is always read. While the pipe to the client is full, the
//! terminal keeps taking output and frames coalesce. Messages for the server wait in a queue
//! of at most [`MAX_TO_TARGET`] bytes, handed to a writer task one at a time; while it is
//! full the terminal keeps the user's input (bounded by its own limit). A pending resize is
//! replaced by a newer one, never queued behind it.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use zt_guac::{Decoder, Limits, opcode};
use zt_terminal::{Event, Observer, Terminal};

use crate::channel::{self, Incoming, StatusBuffer};
use crate::connect::K8sConnection;
use crate::error::Error;
use crate::status::{self, Outcome};

/// Bytes read from the pipe at a time.
const READ_CHUNK: usize = 16 * 1024;
/// The most bytes of stdin waiting for the server.
pub const MAX_TO_TARGET: usize = 64 * 1024;
/// How long the last words to the client (the `error`) may take.
const LAST_WORDS: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a stopped session keeps its pipe open for the proxy's farewell to the client.
const STOPPED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the WebSocket's closing handshake may take.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a session ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndedBy {
    /// The process exited and the server said with which status (0 for success).
    Exited(u8),
    /// The server closed the connection without a status (an attach whose process ended,
    /// an API server going away).
    Target,
    /// The client's side of the pipe closed or said `disconnect`.
    Client,
    /// `stop` was cancelled (revocation, shutdown, a failed recording).
    Stopped,
    /// The server reported a failure, broke the protocol, or the connection failed.
    Failed(Error),
}

/// How a session ended, with its figures.
#[derive(Debug)]
#[non_exhaustive]
pub struct SessionEnd {
    /// Why.
    pub ended_by: EndedBy,
    /// Bytes of terminal output the server sent.
    pub bytes_from_target: u64,
    /// Bytes of input sent to the process for the user.
    pub bytes_to_target: u64,
}

/// Runs an exec or attach until the process ends, the client goes away, or `stop` is
/// cancelled. `pipe` carries Guacamole instructions: the client's input after the proxy's
/// filter one way, the terminal's frames the other.
///
/// A non-zero exit status is written on the terminal (`[exited with status 3]`), where the
/// user sees it; a failure is shown too and sent as an `error` with the server's reason.
pub async fn run<P>(
    connection: K8sConnection,
    mut terminal: Terminal,
    pipe: P,
    observer: &mut dyn Observer,
    stop: CancellationToken,
) -> SessionEnd
where
    P: AsyncRead + AsyncWrite + Unpin,
{
    let K8sConnection {
        socket, protocol, ..
    } = connection;
    let (sink, mut source) = socket.split();
    let (messages, outbox) = mpsc::channel::<Message>(1);
    let writer = tokio::spawn(write_all(sink, outbox));
    let (mut reader, mut writer_pipe) = tokio::io::split(pipe);
    let mut decoder = Decoder::new(Limits::default());
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
    let mut queued = 0usize;
    let geometry = terminal.geometry();
    // The process starts at the client's size, as `kubectl exec -it` starts it at the
    // terminal's.
    let mut resize = Some(channel::resize(geometry.cols, geometry.rows));
    let mut status = StatusBuffer::default();
    let mut out = BytesMut::new();
    let mut target_open = true;
    let mut announced = false;
    let mut end = SessionEnd {
        ended_by: EndedBy::Target,
        bytes_from_target: 0,
        bytes_to_target: 0,
    };
    end.ended_by = loop {
        while let Some(event) = terminal.poll_event() {
            match event {
                Event::Resize { cols, rows, .. } => {
                    observer.resize(cols, rows);
                    resize = Some(channel::resize(cols, rows));
                }
                other => observer.terminal(&other),
            }
        }
        if target_open
            && queued < MAX_TO_TARGET
            && let Some(bytes) = terminal.poll_target()
        {
            observer.input(&bytes);
            end.bytes_to_target += bytes.len() as u64;
            queued += bytes.len();
            queue.push_back(channel::stdin(&bytes));
        }
        if out.is_empty()
            && let Some(frame) = terminal.poll_client(Instant::now())
        {
            out = frame;
        }
        if !target_open && out.is_empty() && terminal.poll_timeout().is_none() {
            // The last frame is out.
            break match status.take().map(|json| status::outcome(&json)) {
                None => EndedBy::Target,
                Some(Ok(Outcome::Success)) => EndedBy::Exited(0),
                Some(Ok(Outcome::Exited(code))) => EndedBy::Exited(code),
                Some(Ok(Outcome::Failed { reason, message })) => {
                    EndedBy::Failed(Error::Failed { reason, message })
                }
                Some(Err(error)) => EndedBy::Failed(Error::Protocol(error.to_string())),
            };
        }
        let next = resize.take().or_else(|| queue.pop_front());
        let has_next = next.is_some();
        let deadline = if out.is_empty() {
            terminal.poll_timeout()
        } else {
            None
        };
        let mut unsent = next;
        tokio::select! {
            () = stop.cancelled() => break EndedBy::Stopped,
            permit = messages.reserve(), if has_next && target_open => match permit {
                Ok(permit) => {
                    if let Some(message) = unsent.take() {
                        if message.first() == Some(&channel::stream::STDIN) {
                            queued -= message.len() - 1;
                        }
                        permit.send(Message::Binary(Bytes::from(message)));
                    }
                }
                // The writer failed: the reader hears why.
                Err(_) => target_open = false,
            },
            message = source.next(), if target_open => match message {
                None => target_open = false,
                Some(Ok(Message::Binary(data))) => match channel::decode(protocol, &data) {
                    Ok(Incoming::Stdout(bytes) | Incoming::Stderr(bytes)) => {
                        observer.output(bytes);
                        end.bytes_from_target += bytes.len() as u64;
                        terminal.handle_target(bytes);
                    }
                    Ok(Incoming::Status(part)) => {
                        if let Err(error) = status.push(part) {
                            break EndedBy::Failed(error.into());
                        }
                    }
                    Ok(Incoming::Empty | Incoming::Closed(_)) => {}
                    Err(error) => break EndedBy::Failed(error.into()),
                },
                Some(Ok(Message::Close(_))) => target_open = false,
                Some(Ok(Message::Text(_))) => {
                    break EndedBy::Failed(Error::Protocol(
                        "a text message (the streams are binary)".into(),
                    ));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // The server may drop the connection right after the status.
                Some(Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    ),
                )) => target_open = false,
                // A server that closes at once after the status may reset the connection
                // while our last messages are in flight: the status already says how it
                // ended.
                Some(Err(_)) if !status.is_empty() => target_open = false,
                Some(Err(error)) => break EndedBy::Failed(Error::Io(error.to_string())),
            },
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
            written = writer_pipe.write(&out), if !out.is_empty() => match written {
                Ok(0) | Err(_) => break EndedBy::Client,
                Ok(n) => out.advance(n),
            },
            () = sleep_until(deadline) => {}
        }
        // A message not handed to the writer goes back to the front of its line.
        match unsent {
            Some(message) if message.first() == Some(&channel::stream::RESIZE) => {
                resize.get_or_insert(message);
            }
            Some(message) => queue.push_front(message),
            None => {}
        }
        if !target_open && !announced {
            // Say how it ended on the screen, once, before the last frame goes out.
            announced = true;
            if let Some(line) = ending_line(&mut status) {
                terminal.handle_target(line.as_bytes());
            }
        }
    };
    let farewell_error = match &end.ended_by {
        EndedBy::Failed(error) => Some(error.clone()),
        _ => None,
    };
    // Closing the writer's queue sends the WebSocket's Close.
    drop(messages);
    let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
    if let Some(error) = farewell_error {
        let mut farewell = std::mem::take(&mut out);
        let message = error.client_message();
        terminal.handle_target(format!("\r\n[{message}]\r\n").as_bytes());
        if let Some(frame) = terminal.poll_client(Instant::now() + zt_terminal::FRAME_INTERVAL) {
            farewell.extend_from_slice(&frame);
        }
        zt_guac::encode(
            opcode::ERROR,
            &[&message, &error.status().code().to_string()],
            &mut farewell,
        );
        let _ = tokio::time::timeout(LAST_WORDS, writer_pipe.write_all(&farewell)).await;
    }
    if let EndedBy::Stopped = end.ended_by {
        // The proxy tells the client why the session ended; the pipe stays open until it
        // has, so the client never hears "the target closed" instead.
        let _ = tokio::time::timeout(STOPPED_GRACE, async {
            let mut sink = [0; 4096];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
    let _ = writer_pipe.shutdown().await;
    end
}

/// The line shown when the process has ended with a non-zero status. The status stays in
/// `status` for the end's report.
fn ending_line(status: &mut StatusBuffer) -> Option<String> {
    let json = status.take()?;
    let line = match status::outcome(&json) {
        Ok(Outcome::Exited(code)) => Some(format!("\r\n[exited with status {code}]\r\n")),
        _ => None,
    };
    // Put it back: the end reads it. (A status that fit before still fits.)
    let _ = status.push(&json);
    line
}

/// The writer task: messages to the server, in order, then the WebSocket's Close.
async fn write_all<S>(mut sink: S, mut outbox: mpsc::Receiver<Message>)
where
    S: futures::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    while let Some(message) = outbox.recv().await {
        if sink.send(message).await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
