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

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use russh::ChannelMsg;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zt_guac::{Decoder, Instruction, Limits, Status, opcode};
use zt_terminal::{Event, Terminal};

use crate::connect::SshConnection;
use crate::error::Error;
use crate::sftp::files::{self, FileService, Outbound};
use crate::sftp::{FileEvent, Sftp};

/// Bytes read from the pipe at a time.
const READ_CHUNK: usize = 16 * 1024;
/// How long the last words to either side may take (the `disconnect` to the target, the
/// `error` to the client).
const LAST_WORDS: std::time::Duration = std::time::Duration::from_secs(1);
/// Instructions queued for the file service before the client's pipe is no longer read.
const FILE_QUEUE: usize = 256;
/// How long the file service may take to clean up (remove unfinished uploads).
const FILES_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a stopped session keeps its pipe open for the proxy's farewell to the client.
const STOPPED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What an SSH session reports while it runs: the terminal's reports, and what happened to
/// files (SFTP). Called between two awaits, as [`zt_terminal::Observer`] is.
pub trait Observer: zt_terminal::Observer {
    /// Something happened to files (SFTP): a transfer, a refusal.
    fn file(&mut self, event: &FileEvent) {
        let _ = event;
    }
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
/// With SFTP enabled, an `sftp` channel is opened beside the shell and the client's file
/// instructions go to [`crate::sftp`]'s file service.
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
        sftp: sftp_settings,
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
    let files_stop = stop.child_token();
    let mut files = FileRouting::new(sftp_settings.is_some());
    let mut files_in: Option<mpsc::Sender<Instruction>> = None;
    let mut files_out: Option<mpsc::Receiver<Outbound>> = None;
    let mut files_task: Option<tokio::task::JoinHandle<()>> = None;
    end.ended_by = {
        let sftp_start = async {
            match &sftp_settings {
                Some(_) => Some(Sftp::start(&handle).await),
                None => None,
            }
        };
        tokio::pin!(sftp_start);
        let mut starting = sftp_settings.is_some();
        'session: loop {
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
                            let change = channel.window_change(
                                u32::from(cols),
                                u32::from(rows),
                                width,
                                height,
                            );
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
            if out.is_empty() {
                if let Some(frame) = terminal.poll_client(Instant::now()) {
                    out = frame;
                } else if !files.replies.is_empty() {
                    out = files.replies.split();
                }
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
            let reading = files.queue.len() < FILE_QUEUE;
            let mut started = None;
            let mut gone = false;
            tokio::select! {
                () = stop.cancelled() => break EndedBy::Stopped,
                result = &mut sftp_start, if starting => {
                    starting = false;
                    started = result;
                }
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
                read = reader.read_buf(&mut input), if reading => match read {
                    Ok(0) | Err(_) => break EndedBy::Client,
                    Ok(_) => {
                        decoder.feed(&input);
                        input.clear();
                        if !decoder.drain_until_disconnect(|i| {
                            if !files.take(i) {
                                terminal.handle_client(i);
                            }
                        }) {
                            break EndedBy::Client;
                        }
                    }
                },
                permit = reserve(&files_in), if !files.queue.is_empty() && files_in.is_some() => {
                    match (permit, files.queue.pop_front()) {
                        (Some(permit), Some(instruction)) => permit.send(instruction),
                        // The service stopped: it no longer takes anything.
                        _ => gone = true,
                    }
                }
                message = next_output(&mut files_out), if out.is_empty() && files_out.is_some() => {
                    match message {
                        // `out` is empty: take the buffer itself, not a copy.
                        Some(Outbound::Wire(bytes)) => {
                            out = bytes.try_into_mut().unwrap_or_else(|b| BytesMut::from(&b[..]));
                        }
                        Some(Outbound::Event(event)) => observer.file(&event),
                        None => gone = true,
                    }
                }
                written = writer.write(&out), if !out.is_empty() => match written {
                    Ok(0) | Err(_) => break EndedBy::Client,
                    Ok(n) => out.advance(n),
                },
                () = sleep_until(deadline) => {}
            }
            match started.take() {
                Some(Ok(sftp)) => {
                    if let Some(settings) = sftp_settings.clone() {
                        let FileService {
                            input,
                            output,
                            task,
                        } = files::spawn(sftp, settings, files_stop.clone());
                        (files_in, files_out, files_task) = (Some(input), Some(output), Some(task));
                    }
                }
                Some(Err(error)) => {
                    files.unavailable();
                    observer.file(&FileEvent::Unavailable {
                        reason: error.to_string(),
                    });
                }
                None => {}
            }
            if std::mem::take(&mut gone) {
                (files_in, files_out) = (None, None);
                files.unavailable();
            }
        }
    };
    if let Some(mut task) = files_task.take() {
        // Uploads in progress remove their temporary files before the connection goes.
        drop(files_in);
        files_stop.cancel();
        let _ = tokio::time::timeout(FILES_GRACE, async {
            let mut output = files_out;
            loop {
                tokio::select! {
                    message = next_output(&mut output), if output.is_some() => match message {
                        Some(Outbound::Event(event)) => observer.file(&event),
                        Some(Outbound::Wire(_)) => {}
                        None => output = None,
                    },
                    _ = &mut task => break,
                }
            }
            // Events sent before the service ended.
            while let Some(message) = output.as_mut().and_then(|o| o.try_recv().ok()) {
                if let Outbound::Event(event) = message {
                    observer.file(&event);
                }
            }
        })
        .await;
        task.abort();
    }
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

/// Which client instructions go to the file service, and what waits for it.
struct FileRouting {
    /// SFTP is on and not (yet) failed.
    enabled: bool,
    /// Client streams that are uploads (their `blob`s and `end` go to the service).
    uploads: HashSet<u32>,
    /// Instructions for the service, in order.
    queue: VecDeque<Instruction>,
    /// Replies ztproxy makes itself when SFTP is off or failed.
    replies: BytesMut,
}

impl FileRouting {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            uploads: HashSet::new(),
            queue: VecDeque::new(),
            replies: BytesMut::new(),
        }
    }

    /// Takes `instruction` if it is the file service's.
    fn take(&mut self, instruction: &Instruction) -> bool {
        let stream = instruction.arg(0).and_then(|s| s.parse::<u32>().ok());
        match instruction.opcode() {
            // A stream index the client reuses for its clipboard is no longer an upload.
            opcode::CLIPBOARD => {
                if let Some(stream) = stream {
                    self.uploads.remove(&stream);
                }
                return false;
            }
            opcode::FILE => {
                if let Some(stream) = stream {
                    self.uploads.insert(stream);
                }
            }
            opcode::PUT => {
                if let Some(stream) = instruction.arg(1).and_then(|s| s.parse::<u32>().ok()) {
                    self.uploads.insert(stream);
                }
            }
            _ => {}
        }
        if !files::wants(instruction, &self.uploads) {
            return false;
        }
        if instruction.is(opcode::END)
            && let Some(stream) = stream
        {
            self.uploads.remove(&stream);
        }
        if self.enabled {
            self.queue.push_back(instruction.clone());
        } else {
            self.refuse(instruction);
        }
        true
    }

    /// SFTP is off or failed: uploads waiting are refused, as guacd refuses them.
    fn unavailable(&mut self) {
        self.enabled = false;
        for instruction in std::mem::take(&mut self.queue) {
            self.refuse(&instruction);
        }
    }

    fn refuse(&mut self, instruction: &Instruction) {
        let stream = match instruction.opcode() {
            opcode::FILE => instruction.arg(0),
            opcode::PUT => instruction.arg(1),
            _ => None,
        };
        if let Some(stream) = stream.and_then(|s| s.parse::<u32>().ok()) {
            files::encode_ack(
                stream,
                "File transfer unsupported",
                Status::UNSUPPORTED,
                &mut self.replies,
            );
        }
    }
}

async fn reserve(
    input: &Option<mpsc::Sender<Instruction>>,
) -> Option<mpsc::Permit<'_, Instruction>> {
    match input {
        Some(input) => input.reserve().await.ok(),
        None => None,
    }
}

async fn next_output(output: &mut Option<mpsc::Receiver<Outbound>>) -> Option<Outbound> {
    match output {
        Some(output) => output.recv().await,
        None => None,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instruction(op: &str, args: &[&str]) -> Instruction {
        Instruction::new(op, args)
    }

    #[test]
    fn file_streams_go_to_the_file_service_and_clipboard_streams_to_the_terminal() {
        let mut files = FileRouting::new(true);
        assert!(files.take(&instruction(opcode::FILE, &["3", "text/plain", "a.txt"])));
        assert!(files.take(&instruction(opcode::BLOB, &["3", "SGk="])));
        // Another stream's data is the terminal's (a paste).
        assert!(!files.take(&instruction(opcode::BLOB, &["4", "SGk="])));
        assert!(files.take(&instruction(opcode::END, &["3"])));
        assert!(!files.take(&instruction(opcode::BLOB, &["3", "SGk="])));
        // A refused upload's index reused for the clipboard goes back to the terminal.
        assert!(files.take(&instruction(opcode::PUT, &["0", "5", "text/plain", "/b"])));
        assert!(!files.take(&instruction(opcode::CLIPBOARD, &["5", "text/plain"])));
        assert!(!files.take(&instruction(opcode::BLOB, &["5", "SGk="])));
        // Acks for the service's streams only; keys never.
        assert!(files.take(&instruction(opcode::ACK, &["2000", "OK", "0"])));
        assert!(!files.take(&instruction(opcode::ACK, &["1000", "OK", "0"])));
        assert!(!files.take(&instruction(opcode::KEY, &["97", "1"])));
        assert!(files.take(&instruction(opcode::GET, &["0", "/"])));
        assert_eq!(files.queue.len(), 6);
    }

    #[test]
    fn without_sftp_uploads_are_refused_as_guacd_refuses_them() {
        let mut files = FileRouting::new(false);
        assert!(files.take(&instruction(opcode::FILE, &["3", "text/plain", "a.txt"])));
        assert!(files.take(&instruction(opcode::GET, &["0", "/"])));
        assert!(files.queue.is_empty());
        assert_eq!(
            &files.replies[..],
            b"3.ack,1.3,25.File transfer unsupported,3.256;"
        );

        // SFTP that fails to start answers what waited for it.
        let mut files = FileRouting::new(true);
        files.take(&instruction(opcode::PUT, &["0", "7", "text/plain", "/x"]));
        files.take(&instruction(opcode::BLOB, &["7", "SGk="]));
        files.unavailable();
        assert!(files.queue.is_empty());
        assert_eq!(
            &files.replies[..],
            b"3.ack,1.7,25.File transfer unsupported,3.256;"
        );
    }
}
