//! The SFTP client driver: one `sftp` subsystem channel on a logged-in connection, requests
//! in flight at once (each caller awaits its own reply), replies matched by id.
//!
//! A reader task takes the channel's data and hands each reply to its caller; a writer task
//! sends the requests. They are separate so a request waiting for the server's window never
//! stops replies from being read (the server may be waiting for its own window to drain).
//! Memory is bounded by the callers: each transfer keeps a fixed number of requests in
//! flight, and the queue to the writer holds at most 64 packets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use russh::client::{self, Handle};
use russh::{ChannelMsg, ChannelReadHalf};
use tokio::sync::{mpsc, oneshot};

use super::proto::{self, Attrs, Decoded, Decoder, NameEntry, ProtocolError, Reply, Request};

/// Packets queued for the writer task.
const QUEUE: usize = 64;
/// The longest a request may wait for its reply: a server that stops answering fails the
/// transfer, not the session.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest the subsystem may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an SFTP request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SftpError {
    /// The server answered with a status other than OK.
    #[error("sftp: {message} (status {code})")]
    Status {
        /// `SSH_FX_*`.
        code: u32,
        /// The server's words.
        message: String,
    },
    /// The server answered with a reply of the wrong type.
    #[error("sftp: unexpected reply")]
    Unexpected,
    /// The server broke the protocol; the channel is closed.
    #[error("sftp: {0}")]
    Protocol(#[from] ProtocolError),
    /// The channel is closed (the server or the session ended).
    #[error("sftp: the channel is closed")]
    Closed,
    /// The server refused the subsystem.
    #[error("sftp: the server refused the sftp subsystem")]
    Refused,
    /// No reply in time.
    #[error("sftp: the server did not answer in time")]
    Timeout,
}

impl SftpError {
    /// The `SSH_FX_*` code, for a status error.
    pub fn code(&self) -> Option<u32> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

type Pending = Mutex<HashMap<u32, oneshot::Sender<Result<Reply, SftpError>>>>;

struct Shared {
    pending: Pending,
    next_id: AtomicU32,
    /// Set when the reader stops: later calls fail at once.
    failure: Mutex<Option<SftpError>>,
}

/// An SFTP session. Cheap to share by reference; requests may be made concurrently.
pub struct Sftp {
    shared: Arc<Shared>,
    out: mpsc::Sender<Bytes>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl std::fmt::Debug for Sftp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sftp").finish_non_exhaustive()
    }
}

impl Drop for Sftp {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Sftp {
    /// Opens the `sftp` subsystem on `handle`'s connection.
    pub async fn start<H: client::Handler>(handle: &Handle<H>) -> Result<Self, SftpError> {
        tokio::time::timeout(START_TIMEOUT, Self::start_inner(handle))
            .await
            .map_err(|_| SftpError::Timeout)?
    }

    async fn start_inner<H: client::Handler>(handle: &Handle<H>) -> Result<Self, SftpError> {
        let mut channel = handle
            .channel_open_session()
            .await
            .map_err(|_| SftpError::Refused)?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|_| SftpError::Closed)?;
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) | None => return Err(SftpError::Refused),
                Some(_) => {}
            }
        }
        let (mut read, write) = channel.split();
        let mut init = BytesMut::new();
        proto::encode_init(&mut init);
        write
            .data_bytes(init.freeze())
            .await
            .map_err(|_| SftpError::Closed)?;
        let mut decoder = Decoder::new();
        loop {
            match read.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    decoder.feed(&data);
                    match decoder.poll()? {
                        Some(Decoded::Version) => break,
                        Some(Decoded::Response(_)) => return Err(SftpError::Unexpected),
                        None => {}
                    }
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return Err(SftpError::Refused),
                Some(_) => {}
            }
        }
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            failure: Mutex::new(None),
        });
        let (out, mut queue) = mpsc::channel::<Bytes>(QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(packet) = queue.recv().await {
                if write.data_bytes(packet).await.is_err() {
                    return;
                }
            }
            let _ = write.eof().await;
        });
        let reader = tokio::spawn(read_replies(read, decoder, shared.clone()));
        Ok(Self {
            shared,
            out,
            tasks: [reader, writer],
        })
    }

    /// Sends `request` and waits for its reply (a status other than OK is an error).
    pub async fn call(&self, request: Request<'_>) -> Result<Reply, SftpError> {
        if let Some(failure) = lock(&self.shared.failure).clone() {
            return Err(failure);
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(id, tx);
        let mut packet = BytesMut::new();
        request.encode(id, &mut packet);
        let answered = async {
            self.out
                .send(packet.freeze())
                .await
                .map_err(|_| SftpError::Closed)?;
            rx.await.map_err(|_| SftpError::Closed)?
        };
        let reply = match tokio::time::timeout(REPLY_TIMEOUT, answered).await {
            Ok(reply) => reply,
            Err(_) => Err(SftpError::Timeout),
        };
        lock(&self.shared.pending).remove(&id);
        match reply? {
            Reply::Status { code, message } if code != proto::status::OK => {
                Err(SftpError::Status { code, message })
            }
            reply => Ok(reply),
        }
    }

    /// `REALPATH`: the canonical path.
    pub async fn realpath(&self, path: &[u8]) -> Result<Bytes, SftpError> {
        match self.call(Request::Realpath(path)).await? {
            Reply::Name(mut names) if names.len() == 1 => Ok(names.swap_remove(0).name),
            _ => Err(SftpError::Unexpected),
        }
    }

    /// `LSTAT`.
    pub async fn lstat(&self, path: &[u8]) -> Result<Attrs, SftpError> {
        attrs(self.call(Request::Lstat(path)).await?)
    }

    /// `STAT`.
    pub async fn stat(&self, path: &[u8]) -> Result<Attrs, SftpError> {
        attrs(self.call(Request::Stat(path)).await?)
    }

    /// `OPEN`.
    pub async fn open(&self, path: &[u8], flags: u32, mode: u32) -> Result<Bytes, SftpError> {
        handle_of(self.call(Request::Open { path, flags, mode }).await?)
    }

    /// `OPENDIR`.
    pub async fn opendir(&self, path: &[u8]) -> Result<Bytes, SftpError> {
        handle_of(self.call(Request::Opendir(path)).await?)
    }

    /// `READDIR`: the next entries, `None` at the end.
    pub async fn readdir(&self, handle: &[u8]) -> Result<Option<Vec<NameEntry>>, SftpError> {
        match self.call(Request::Readdir(handle)).await {
            Ok(Reply::Name(names)) => Ok(Some(names)),
            Ok(_) => Err(SftpError::Unexpected),
            Err(SftpError::Status {
                code: proto::status::EOF,
                ..
            }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `READ`: up to `len` bytes at `offset`; empty at the end of the file.
    pub async fn read(&self, handle: &[u8], offset: u64, len: u32) -> Result<Bytes, SftpError> {
        match self
            .call(Request::Read {
                handle,
                offset,
                len,
            })
            .await
        {
            Ok(Reply::Data(data)) if data.len() <= len as usize => Ok(data),
            Ok(_) => Err(SftpError::Unexpected),
            Err(SftpError::Status {
                code: proto::status::EOF,
                ..
            }) => Ok(Bytes::new()),
            Err(error) => Err(error),
        }
    }

    /// `WRITE`.
    pub async fn write(&self, handle: &[u8], offset: u64, data: &[u8]) -> Result<(), SftpError> {
        status_ok(
            self.call(Request::Write {
                handle,
                offset,
                data,
            })
            .await?,
        )
    }

    /// `CLOSE`.
    pub async fn close(&self, handle: &[u8]) -> Result<(), SftpError> {
        status_ok(self.call(Request::Close(handle)).await?)
    }

    /// `REMOVE`.
    pub async fn remove(&self, path: &[u8]) -> Result<(), SftpError> {
        status_ok(self.call(Request::Remove(path)).await?)
    }

    /// Renames `from` to `to`, replacing `to` (OpenSSH's `posix-rename`; otherwise a plain
    /// `RENAME`, which fails if `to` exists).
    pub async fn rename_over(&self, from: &[u8], to: &[u8]) -> Result<(), SftpError> {
        match self.call(Request::PosixRename(from, to)).await {
            Ok(reply) => status_ok(reply),
            Err(SftpError::Status {
                code: proto::status::OP_UNSUPPORTED,
                ..
            }) => status_ok(self.call(Request::Rename(from, to)).await?),
            Err(error) => Err(error),
        }
    }
}

async fn read_replies(mut read: ChannelReadHalf, mut decoder: Decoder, shared: Arc<Shared>) {
    let failure = 'read: loop {
        match read.wait().await {
            Some(ChannelMsg::Data { data }) => {
                decoder.feed(&data);
                loop {
                    match decoder.poll() {
                        Ok(Some(Decoded::Response(response))) => {
                            // A reply nobody waits for (timed out) is dropped.
                            if let Some(tx) = lock(&shared.pending).remove(&response.id) {
                                let _ = tx.send(Ok(response.reply));
                            }
                        }
                        Ok(Some(Decoded::Version)) => {}
                        Ok(None) => break,
                        Err(error) => break 'read SftpError::Protocol(error),
                    }
                }
            }
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => break SftpError::Closed,
            Some(_) => {}
        }
    };
    *lock(&shared.failure) = Some(failure.clone());
    for (_, tx) in lock(&shared.pending).drain() {
        let _ = tx.send(Err(failure.clone()));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn attrs(reply: Reply) -> Result<Attrs, SftpError> {
    match reply {
        Reply::Attrs(attrs) => Ok(attrs),
        _ => Err(SftpError::Unexpected),
    }
}

fn handle_of(reply: Reply) -> Result<Bytes, SftpError> {
    match reply {
        Reply::Handle(handle) => Ok(handle),
        _ => Err(SftpError::Unexpected),
    }
}

fn status_ok(reply: Reply) -> Result<(), SftpError> {
    match reply {
        Reply::Status { .. } => Ok(()),
        _ => Err(SftpError::Unexpected),
    }
}
