//! The Guacamole side of SFTP, as guacd exposes it, so a stock client's file UI works:
//!
//! * a filesystem object (`filesystem,0,<root>`) once the `sftp` subsystem is up;
//! * `get,0,<path>` of a directory: a `body` stream of the stream-index type, a JSON object
//!   mapping each entry's virtual path to its mimetype (directories have the stream-index
//!   type), in blobs; of a file: a `body` stream of `application/octet-stream`;
//! * `put,0,<stream>,<mimetype>,<path>` and `file,<stream>,<mimetype>,<name>` (into
//!   `sftp-directory`): uploads, acknowledged blob by blob.
//!
//! As guacd does, nothing is sent on a body stream until the client's first `ack`, and a
//! non-success `ack` ends it. Unlike guacd (one 4 KiB blob per `ack`), blobs are sent ahead
//! of the client's `ack`s up to [`WINDOW`] bytes, and file data is read from the server
//! [`READ_LEN`] bytes at a time with several reads in flight, so throughput is not one blob
//! per round trip. Uploads are written [`WRITE_LEN`] bytes at a time, several in flight,
//! and each blob is acknowledged once it is queued for the server; at most [`WINDOW`] bytes
//! wait for the server. Memory per transfer is bounded by those figures, whatever the size
//! of the file; a session runs at most [`MAX_TRANSFERS`] at once.
//!
//! **Jail** ([`super::jail`]): every path is parsed as a virtual path, mapped under the
//! root, resolved by the server (`REALPATH`, which follows symbolic links) and refused unless
//! the result is inside the root. A regular file with more than one link (a hard link may
//! point at a file outside the root) is not downloaded; the link count comes from the long
//! names of OpenSSH's listings. Uploads are written to a fresh temporary name
//! (`.ztproxy-upload-<random>`, created exclusively, so never through an existing link) in
//! the destination directory and renamed over the target name when complete; an upload that
//! fails, is cancelled or is cut off by the session's end is removed.
//!
//! **Policy**: `sftp-disable-upload` refuses uploads with an `ack` of status 0x0303;
//! `sftp-disable-download` refuses file downloads (listings stay, as in guacd), answering
//! nothing, as guacd does. Each refusal and each finished transfer is a [`FileEvent`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use zt_guac::{Instruction, Status, StreamIndex, TypedInstruction, opcode};

use super::client::{Sftp, SftpError};
use super::jail::{self, JailError, VirtualPath};
use super::proto::{FileType, open, status};
use crate::settings::SftpSettings;

/// Mimetype of directory listings.
pub const STREAM_INDEX_MIMETYPE: &str = "application/vnd.glyptodon.guacamole.stream-index+json";
/// Mimetype of files.
const FILE_MIMETYPE: &str = "application/octet-stream";
/// Raw bytes per blob (8,064 characters of base64: inside guacd's 8,192-character element
/// limit, which ztproxy's decoders enforce).
pub const BLOB: usize = 6048;
/// Bytes read from the server per `READ` (16 whole blobs, 94.5 KiB).
pub const READ_LEN: u32 = 16 * BLOB as u32;
/// `READ`s in flight per download.
const READS_IN_FLIGHT: usize = 16;
/// Bytes per `WRITE`.
pub const WRITE_LEN: usize = 48 * 1024;
/// Bytes sent to the client ahead of its `ack`s, or waiting for the server, per transfer.
pub const WINDOW: usize = 2 * 1024 * 1024;
/// Transfers running at once per session.
pub const MAX_TRANSFERS: usize = 16;
/// Entries listed per directory; the rest are left out (and the event says so).
pub const MAX_LISTING: usize = 10_000;
/// Symbolic links in one listing whose targets are looked up (to list them as what they
/// point at); later ones are listed as files.
const MAX_LINK_LOOKUPS: usize = 256;
/// Entries of a directory searched for a file's link count before a download.
const MAX_LINK_SCAN: usize = 100_000;
/// Messages queued towards one transfer.
const TRANSFER_QUEUE: usize = 64;
/// The first server-side stream index used (images use 0–255, clipboard 1000–1999).
const FIRST_STREAM: u32 = 2000;
/// Stream indices available.
const STREAMS: u32 = 1000;

/// What the file service reports, in order with its instructions.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Instructions for the client.
    Wire(Bytes),
    /// Something for the observer.
    Event(FileEvent),
}

/// Which way a file went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileDirection {
    /// From the client to the target.
    Upload,
    /// From the target to the client.
    Download,
}

impl FileDirection {
    /// `to_target` or `to_client`, as audit events name directions.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "to_target",
            Self::Download => "to_client",
        }
    }
}

/// Why a transfer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The session's policy forbids this direction.
    Policy,
    /// The path is not allowed, or leads outside the root.
    Jail(JailError),
    /// A file with several links (possibly to a file outside the root).
    HardLink,
    /// Too many transfers at once.
    TooMany,
}

impl Refusal {
    /// Short words for audit events.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Jail(JailError::Outside) => "outside_root",
            Self::Jail(_) => "bad_path",
            Self::HardLink => "hard_link",
            Self::TooMany => "too_many_transfers",
        }
    }
}

/// What happened to files, for the audit log and the recordings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileEvent {
    /// The `sftp` subsystem is up; the filesystem object was offered.
    Ready {
        /// The root, as the server resolved it.
        root: String,
    },
    /// SFTP could not start; the session goes on without it.
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A file was transferred completely (an upload is at its name on the target).
    Transferred {
        /// Which way.
        direction: FileDirection,
        /// Its path inside the jail.
        path: String,
        /// Bytes.
        size: u64,
        /// SHA-256 of those bytes.
        sha256: [u8; 32],
    },
    /// A transfer started and did not finish (the client cancelled, an error, the session
    /// ended). For uploads nothing is left at the target name.
    Incomplete {
        /// Which way.
        direction: FileDirection,
        /// Its path inside the jail.
        path: String,
        /// Bytes that crossed before it stopped.
        size: u64,
        /// Why, in words.
        reason: String,
    },
    /// A transfer was refused.
    Refused {
        /// Which way it would have gone.
        direction: FileDirection,
        /// The path or name asked for, printable (control characters escaped, cut short).
        path: String,
        /// Why.
        refusal: Refusal,
    },
}

/// Appends `ack,<stream>,<message>,<status>` to `out`.
pub(crate) fn encode_ack(stream: u32, message: &str, status: Status, out: &mut BytesMut) {
    TypedInstruction::Ack {
        stream: StreamIndex(stream),
        message,
        status,
    }
    .encode(out);
}

/// Sends one `ack` to the client.
async fn send_ack(out: &mpsc::Sender<Outbound>, stream: u32, message: &str, status: Status) {
    let mut wire = BytesMut::new();
    encode_ack(stream, message, status, &mut wire);
    let _ = out.send(Outbound::Wire(wire.freeze())).await;
}

/// The running service: instructions in, output out.
pub(crate) struct FileService {
    pub(crate) input: mpsc::Sender<Instruction>,
    pub(crate) output: mpsc::Receiver<Outbound>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// Whether a client instruction is for the file service (the terminal takes the others).
pub(crate) fn wants(instruction: &Instruction, uploads: &std::collections::HashSet<u32>) -> bool {
    match instruction.opcode() {
        opcode::GET | opcode::PUT | opcode::FILE => true,
        // The client acks only server streams: the terminal's clipboard streams need none.
        opcode::ACK => instruction
            .arg(0)
            .and_then(|s| s.parse::<u32>().ok())
            .is_some_and(|s| (FIRST_STREAM..FIRST_STREAM + STREAMS).contains(&s)),
        opcode::BLOB | opcode::END => instruction
            .arg(0)
            .and_then(|s| s.parse::<u32>().ok())
            .is_some_and(|s| uploads.contains(&s)),
        _ => false,
    }
}

/// Starts the service on a started SFTP session; `stop` ends it (uploads in progress are
/// removed first).
pub(crate) fn spawn(sftp: Sftp, settings: SftpSettings, stop: CancellationToken) -> FileService {
    let (input, input_rx) = mpsc::channel(TRANSFER_QUEUE);
    let (output_tx, output) = mpsc::channel(TRANSFER_QUEUE);
    let task = tokio::spawn(async move {
        let service = match Service::start(Arc::new(sftp), settings, output_tx.clone()).await {
            Ok(service) => service,
            Err(reason) => {
                let _ = output_tx
                    .send(Outbound::Event(FileEvent::Unavailable { reason }))
                    .await;
                return;
            }
        };
        service.run(input_rx, stop).await;
    });
    FileService {
        input,
        output,
        task,
    }
}

struct Service {
    sftp: Arc<Sftp>,
    root: Arc<[u8]>,
    /// The canonical upload directory for `file` streams, if it is usable.
    upload_directory: Result<Arc<[u8]>, String>,
    disable_download: bool,
    disable_upload: bool,
    out: mpsc::Sender<Outbound>,
    uploads: HashMap<u32, mpsc::Sender<UploadMessage>>,
    downloads: HashMap<u32, mpsc::Sender<Status>>,
    next_stream: u32,
    tasks: JoinSet<Key>,
}

#[derive(Debug, Clone, Copy)]
enum Key {
    Upload(u32),
    Download(u32),
}

enum UploadMessage {
    Blob(Bytes),
    End,
}

impl Service {
    async fn start(
        sftp: Arc<Sftp>,
        settings: SftpSettings,
        out: mpsc::Sender<Outbound>,
    ) -> Result<Self, String> {
        // The default root is the login's home directory (guacd's is `/`).
        let root_path = settings.root.as_deref().unwrap_or(".").as_bytes();
        let root: Arc<[u8]> = sftp
            .realpath(root_path)
            .await
            .map_err(|e| format!("sftp-root-directory cannot be used: {e}"))?
            .to_vec()
            .into();
        match sftp.stat(&root).await {
            Ok(attrs) if attrs.file_type() == FileType::Directory => {}
            _ => return Err("sftp-root-directory is not a directory".to_owned()),
        }
        let upload_directory = match settings.upload_directory.as_deref() {
            None => Ok(root.clone()),
            Some(path) => match sftp.realpath(path.as_bytes()).await {
                Ok(real) if jail::contains(&root, &real) => Ok(real.to_vec().into()),
                Ok(_) => Err("sftp-directory is outside sftp-root-directory".to_owned()),
                Err(e) => Err(format!("sftp-directory cannot be used: {e}")),
            },
        };
        if let Err(reason) = &upload_directory {
            tracing::warn!(reason, "uploads by file stream are refused");
        }
        let name = String::from_utf8_lossy(&root).into_owned();
        let mut wire = BytesMut::new();
        zt_guac::encode(opcode::FILESYSTEM, &["0", &name], &mut wire);
        let _ = out.send(Outbound::Wire(wire.freeze())).await;
        let _ = out
            .send(Outbound::Event(FileEvent::Ready { root: name }))
            .await;
        Ok(Self {
            sftp,
            root,
            upload_directory,
            disable_download: settings.disable_download,
            disable_upload: settings.disable_upload,
            out,
            uploads: HashMap::new(),
            downloads: HashMap::new(),
            next_stream: 0,
            tasks: JoinSet::new(),
        })
    }

    async fn run(mut self, mut input: mpsc::Receiver<Instruction>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                instruction = input.recv() => match instruction {
                    Some(instruction) => self.handle(&instruction, &stop).await,
                    None => break,
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match done {
                        Ok(Key::Upload(stream)) => { self.uploads.remove(&stream); }
                        Ok(Key::Download(stream)) => { self.downloads.remove(&stream); }
                        Err(_) => {}
                    }
                }
            }
        }
        // Uploads see `stop` and remove their temporary files; wait for them (bounded by
        // the caller).
        stop.cancel();
        self.uploads.clear();
        self.downloads.clear();
        while self.tasks.join_next().await.is_some() {}
    }

    async fn handle(&mut self, instruction: &Instruction, stop: &CancellationToken) {
        let arg = |i| instruction.arg(i).unwrap_or("");
        let stream_at = |i| instruction.arg(i).and_then(|s| s.parse::<u32>().ok());
        match instruction.opcode() {
            opcode::GET if arg(0) == "0" => self.get(arg(1), stop).await,
            opcode::PUT => {
                if let (Some(stream), "0") = (stream_at(1), arg(0)) {
                    let target = VirtualPath::parse(arg(3)).and_then(|path| {
                        path.split_last()
                            .map(|(dir, name)| {
                                (dir.under(&self.root), name.to_owned(), path.clone())
                            })
                            .ok_or(JailError::NotAName)
                    });
                    self.upload(stream, arg(3), target, stop).await;
                }
            }
            opcode::FILE => {
                if let Some(stream) = stream_at(0) {
                    let target = match &self.upload_directory {
                        Ok(dir) => jail::file_name(arg(2)).map(|name| {
                            let virtual_dir = jail::virtual_of(&self.root, dir)
                                .and_then(|v| VirtualPath::parse(&v).ok())
                                .unwrap_or_else(VirtualPath::root);
                            let path = virtual_dir
                                .join(name)
                                .unwrap_or_else(|_| VirtualPath::root());
                            (dir.to_vec(), name.to_owned(), path)
                        }),
                        Err(reason) => {
                            self.ack(stream, reason, Status::RESOURCE_NOT_FOUND).await;
                            return;
                        }
                    };
                    self.upload(stream, arg(2), target, stop).await;
                }
            }
            opcode::BLOB | opcode::END => {
                let Some(stream) = stream_at(0) else { return };
                let Some(tx) = self.uploads.get(&stream) else {
                    return;
                };
                let message = if instruction.is(opcode::END) {
                    UploadMessage::End
                } else {
                    match base64::engine::general_purpose::STANDARD.decode(arg(1)) {
                        Ok(data) => UploadMessage::Blob(Bytes::from(data)),
                        Err(_) => {
                            self.uploads.remove(&stream);
                            self.ack(stream, "Malformed blob", Status::CLIENT_BAD_REQUEST)
                                .await;
                            return;
                        }
                    }
                };
                if tx.send(message).await.is_err() {
                    self.uploads.remove(&stream);
                }
            }
            opcode::ACK => {
                let (Some(stream), Some(code)) = (stream_at(0), stream_at(2)) else {
                    return;
                };
                if let Some(tx) = self.downloads.get(&stream)
                    && tx.send(Status::new(code)).await.is_err()
                {
                    self.downloads.remove(&stream);
                }
            }
            _ => {}
        }
    }

    fn busy(&self) -> bool {
        self.uploads.len() + self.downloads.len() >= MAX_TRANSFERS
    }

    async fn ack(&self, stream: u32, message: &str, status: Status) {
        send_ack(&self.out, stream, message, status).await;
    }

    async fn refuse(&self, direction: FileDirection, path: &str, refusal: Refusal) {
        tracing::info!(
            direction = direction.as_str(),
            reason = refusal.as_str(),
            "file transfer refused"
        );
        let _ = self
            .out
            .send(Outbound::Event(FileEvent::Refused {
                direction,
                path: printable(path),
                refusal,
            }))
            .await;
    }

    async fn upload(
        &mut self,
        stream: u32,
        asked: &str,
        target: Result<(Vec<u8>, String, VirtualPath), JailError>,
        stop: &CancellationToken,
    ) {
        if self.disable_upload {
            self.refuse(FileDirection::Upload, asked, Refusal::Policy)
                .await;
            return self
                .ack(stream, "File upload is disabled", Status::CLIENT_FORBIDDEN)
                .await;
        }
        let (dir, name, path) = match target {
            Ok(target) => target,
            Err(error) => {
                self.refuse(FileDirection::Upload, asked, Refusal::Jail(error))
                    .await;
                return self
                    .ack(
                        stream,
                        &format!("Refused: {error}"),
                        Status::CLIENT_BAD_REQUEST,
                    )
                    .await;
            }
        };
        if self.busy() || self.uploads.contains_key(&stream) {
            self.refuse(FileDirection::Upload, asked, Refusal::TooMany)
                .await;
            return self
                .ack(stream, "Too many file transfers", Status::CLIENT_TOO_MANY)
                .await;
        }
        let (tx, rx) = mpsc::channel(TRANSFER_QUEUE);
        self.uploads.insert(stream, tx);
        let upload = Upload {
            sftp: self.sftp.clone(),
            root: self.root.clone(),
            out: self.out.clone(),
            stream,
            dir,
            name,
            path: path.to_string(),
        };
        let stop = stop.clone();
        self.tasks.spawn(async move {
            upload.run(rx, stop).await;
            Key::Upload(stream)
        });
    }

    async fn get(&mut self, asked: &str, stop: &CancellationToken) {
        let path = match VirtualPath::parse(asked) {
            Ok(path) => path,
            Err(error) => {
                return self
                    .refuse(FileDirection::Download, asked, Refusal::Jail(error))
                    .await;
            }
        };
        let real = match self.resolve(&path).await {
            Ok(real) => real,
            Err(Some(refusal)) => {
                return self.refuse(FileDirection::Download, asked, refusal).await;
            }
            Err(None) => return,
        };
        let Ok(attrs) = self.sftp.stat(&real).await else {
            return;
        };
        let listing = match attrs.file_type() {
            FileType::Directory => true,
            FileType::Regular => false,
            _ => return,
        };
        if !listing && self.disable_download {
            // As guacd: no body, nothing for the client to take.
            return self
                .refuse(FileDirection::Download, asked, Refusal::Policy)
                .await;
        }
        if self.busy() {
            return self
                .refuse(FileDirection::Download, asked, Refusal::TooMany)
                .await;
        }
        let Some(stream) = self.allocate_stream() else {
            return self
                .refuse(FileDirection::Download, asked, Refusal::TooMany)
                .await;
        };
        let (tx, rx) = mpsc::channel(TRANSFER_QUEUE);
        self.downloads.insert(stream, tx);
        let body = Body {
            sftp: self.sftp.clone(),
            root: self.root.clone(),
            out: self.out.clone(),
            stream,
            asked: asked.to_owned(),
            path,
            real,
            acks: rx,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
        };
        let stop = stop.clone();
        self.tasks.spawn(async move {
            if listing {
                body.list(stop).await;
            } else {
                body.download(stop).await;
            }
            Key::Download(stream)
        });
    }

    fn allocate_stream(&mut self) -> Option<u32> {
        for _ in 0..STREAMS {
            let index = FIRST_STREAM + self.next_stream;
            self.next_stream = (self.next_stream + 1) % STREAMS;
            if !self.downloads.contains_key(&index) {
                return Some(index);
            }
        }
        None
    }

    /// The canonical server path of `path`, if it is inside the jail. `Err(None)`: it does
    /// not exist (or the server failed); nothing is sent, as guacd does.
    async fn resolve(&self, path: &VirtualPath) -> Result<Vec<u8>, Option<Refusal>> {
        let mapped = path.under(&self.root);
        let real = self.sftp.realpath(&mapped).await.map_err(|_| None)?;
        if !jail::contains(&self.root, &real) {
            return Err(Some(Refusal::Jail(JailError::Outside)));
        }
        Ok(real.to_vec())
    }
}

/// A body stream to the client: a listing or a file.
struct Body {
    sftp: Arc<Sftp>,
    root: Arc<[u8]>,
    out: mpsc::Sender<Outbound>,
    stream: u32,
    asked: String,
    path: VirtualPath,
    real: Vec<u8>,
    acks: mpsc::Receiver<Status>,
    /// Sizes of blobs sent and not yet acknowledged.
    unacked: VecDeque<usize>,
    unacked_bytes: usize,
}

impl Body {
    async fn send(&self, wire: BytesMut) -> bool {
        self.out.send(Outbound::Wire(wire.freeze())).await.is_ok()
    }

    async fn start(&mut self, mimetype: &str, stop: &CancellationToken) -> bool {
        let mut wire = BytesMut::new();
        zt_guac::encode(
            opcode::BODY,
            &["0", &self.stream.to_string(), mimetype, &self.asked],
            &mut wire,
        );
        if !self.send(wire).await {
            return false;
        }
        // Nothing goes before the client's first ack, as with guacd.
        tokio::select! {
            () = stop.cancelled() => false,
            ack = self.acks.recv() => ack.is_some_and(Status::is_success),
        }
    }

    async fn blob(&mut self, data: &[u8]) -> bool {
        let mut wire = BytesMut::new();
        self.encode_blobs(data, &mut wire);
        self.send(wire).await
    }

    /// Encodes `data` as this stream's blobs of at most [`BLOB`] bytes into `wire`, base64
    /// written in place (no intermediate string), and counts them as unacknowledged.
    fn encode_blobs(&mut self, data: &[u8], wire: &mut BytesMut) {
        let index = self.stream.to_string();
        for chunk in data.chunks(BLOB) {
            let encoded = base64::encoded_len(chunk.len(), true).unwrap_or(0);
            // Base64 is ASCII: its length in characters is its length in bytes.
            wire.extend_from_slice(format!("4.blob,{}.{index},{encoded}.", index.len()).as_bytes());
            let start = wire.len();
            wire.resize(start + encoded, 0);
            let written = base64::engine::general_purpose::STANDARD
                .encode_slice(chunk, &mut wire[start..])
                .unwrap_or(0);
            wire.truncate(start + written);
            wire.extend_from_slice(b";");
            self.unacked.push_back(chunk.len());
            self.unacked_bytes += chunk.len();
        }
    }

    async fn end(&self) {
        let mut wire = BytesMut::new();
        zt_guac::encode(opcode::END, &[self.stream.to_string().as_str()], &mut wire);
        let _ = self.send(wire).await;
    }

    /// Takes one ack; false if the client refused or left.
    fn acked(&mut self, ack: Option<Status>) -> bool {
        match ack {
            Some(status) if status.is_success() => {
                if let Some(size) = self.unacked.pop_front() {
                    self.unacked_bytes -= size;
                }
                true
            }
            _ => false,
        }
    }

    /// Waits until the unacknowledged bytes are at most `limit`.
    async fn drain_to(&mut self, limit: usize, stop: &CancellationToken) -> bool {
        while self.unacked_bytes > limit {
            let ack = tokio::select! {
                () = stop.cancelled() => return false,
                ack = self.acks.recv() => ack,
            };
            if !self.acked(ack) {
                return false;
            }
        }
        true
    }

    async fn list(mut self, stop: CancellationToken) {
        let Ok(handle) = self.sftp.opendir(&self.real).await else {
            return;
        };
        if self.start(STREAM_INDEX_MIMETYPE, &stop).await {
            let listed = self.list_entries(&handle, &stop).await;
            if listed {
                self.end().await;
            }
        }
        let _ = self.sftp.close(&handle).await;
    }

    async fn list_entries(&mut self, handle: &[u8], stop: &CancellationToken) -> bool {
        let mut json = String::from("{");
        let mut listed = 0usize;
        let mut lookups = 0usize;
        let mut truncated = false;
        'read: loop {
            let entries = tokio::select! {
                () = stop.cancelled() => return false,
                entries = self.sftp.readdir(handle) => entries,
            };
            let Ok(Some(entries)) = entries else { break };
            for entry in entries {
                let Ok(name) = std::str::from_utf8(&entry.name) else {
                    continue;
                };
                if name == "." || name == ".." {
                    continue;
                }
                let Ok(path) = self.path.join(name) else {
                    continue;
                };
                if listed == MAX_LISTING {
                    truncated = true;
                    break 'read;
                }
                let mut kind = entry.attrs.file_type();
                if kind == FileType::Symlink && lookups < MAX_LINK_LOOKUPS {
                    lookups += 1;
                    let target = path.under(&self.root);
                    kind = match self.sftp.realpath(&target).await {
                        Ok(real) if jail::contains(&self.root, &real) => self
                            .sftp
                            .stat(&real)
                            .await
                            .map_or(FileType::Other, |a| a.file_type()),
                        // Links out of the jail are not listed.
                        _ => continue,
                    };
                }
                let mimetype = if kind == FileType::Directory {
                    STREAM_INDEX_MIMETYPE
                } else {
                    FILE_MIMETYPE
                };
                if listed > 0 {
                    json.push(',');
                }
                json.push_str(&serde_json::to_string(&path.to_string()).unwrap_or_default());
                json.push(':');
                json.push_str(&serde_json::to_string(mimetype).unwrap_or_default());
                listed += 1;
                while json.len() >= BLOB {
                    let rest = json.split_off(floor_char_boundary(&json, BLOB));
                    let chunk = std::mem::replace(&mut json, rest);
                    if !self.blob(chunk.as_bytes()).await || !self.drain_to(WINDOW, stop).await {
                        return false;
                    }
                }
            }
        }
        if truncated {
            tracing::info!(listed, "directory listing cut at its limit");
        }
        json.push('}');
        let mut rest = json.as_str();
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(floor_char_boundary(rest, BLOB));
            rest = tail;
            if !self.blob(chunk.as_bytes()).await || !self.drain_to(WINDOW, stop).await {
                return false;
            }
        }
        true
    }

    async fn download(mut self, stop: CancellationToken) {
        let shown =
            jail::virtual_of(&self.root, &self.real).unwrap_or_else(|| self.path.to_string());
        // The file itself, not the name asked for: a symbolic link inside the jail may
        // point at a hard link.
        let split = self.real.iter().rposition(|&b| b == b'/');
        if let Some(at) = split {
            let (dir, name) = (&self.real[..at.max(1)], &self.real[at + 1..]);
            match link_count(&self.sftp, dir, name).await {
                Some(1) => {}
                Some(_) => {
                    let _ = self
                        .out
                        .send(Outbound::Event(FileEvent::Refused {
                            direction: FileDirection::Download,
                            path: printable(&self.asked),
                            refusal: Refusal::HardLink,
                        }))
                        .await;
                    return;
                }
                // Not an OpenSSH server, or not found within the limit: no link count to
                // judge by; the jail check above stands.
                None => {}
            }
        }
        let Ok(handle) = self.sftp.open(&self.real, open::READ, 0).await else {
            return;
        };
        let mut size = 0u64;
        let result = if self.start(FILE_MIMETYPE, &stop).await {
            self.stream_file(&handle, &stop, &mut size).await
        } else {
            Err("the client did not accept the file".to_owned())
        };
        let _ = self.sftp.close(&handle).await;
        let event = match result {
            Ok(sha256) => {
                self.end().await;
                FileEvent::Transferred {
                    direction: FileDirection::Download,
                    path: shown,
                    size,
                    sha256,
                }
            }
            Err(reason) => FileEvent::Incomplete {
                direction: FileDirection::Download,
                path: shown,
                size,
                reason,
            },
        };
        let _ = self.out.send(Outbound::Event(event)).await;
    }

    async fn stream_file(
        &mut self,
        handle: &[u8],
        stop: &CancellationToken,
        size: &mut u64,
    ) -> Result<[u8; 32], String> {
        let sftp = self.sftp.clone();
        let mut hasher = Sha256::new();
        let mut next_offset = 0u64;
        let mut reads = FuturesOrdered::new();
        let mut eof = false;
        loop {
            while !eof
                && reads.len() < READS_IN_FLIGHT
                && self.unacked_bytes + (reads.len() + 1) * READ_LEN as usize <= WINDOW
            {
                let offset = next_offset;
                next_offset += u64::from(READ_LEN);
                let sftp = &sftp;
                reads.push_back(async move { (offset, sftp.read(handle, offset, READ_LEN).await) });
            }
            if eof && reads.is_empty() {
                return Ok(hasher.finalize().into());
            }
            tokio::select! {
                () = stop.cancelled() => return Err("the session ended".to_owned()),
                ack = self.acks.recv() => {
                    if !self.acked(ack) {
                        return Err("the client cancelled".to_owned());
                    }
                }
                Some((offset, read)) = reads.next(), if !reads.is_empty() => {
                    let data = read.map_err(|e| describe(&e))?;
                    if data.is_empty() {
                        // The end: later reads are past it.
                        eof = true;
                        reads.clear();
                        continue;
                    }
                    hasher.update(&data);
                    *size += data.len() as u64;
                    // One message for the whole read: fewer hand-overs to the session.
                    let mut wire = BytesMut::with_capacity(data.len() / 3 * 4 + 1024);
                    self.encode_blobs(&data, &mut wire);
                    if !self.send(wire).await {
                        return Err("the client left".to_owned());
                    }
                    if data.len() < READ_LEN as usize && !eof {
                        // A short read: the reads after it start at the wrong offsets.
                        reads.clear();
                        next_offset = offset + data.len() as u64;
                    }
                }
            }
        }
    }
}

/// The link count of `dir`/`name` (a canonical path), from the server's listing of `dir`.
async fn link_count(sftp: &Sftp, dir: &[u8], name: &[u8]) -> Option<u64> {
    let handle = sftp.opendir(dir).await.ok()?;
    let mut scanned = 0usize;
    let mut found = None;
    while scanned < MAX_LINK_SCAN {
        let Ok(Some(entries)) = sftp.readdir(&handle).await else {
            break;
        };
        scanned += entries.len();
        if let Some(entry) = entries.iter().find(|e| e.name.as_ref() == name) {
            found = entry.link_count();
            break;
        }
    }
    let _ = sftp.close(&handle).await;
    found
}

/// An upload into `dir` (canonical, inside the jail) as `name`.
struct Upload {
    sftp: Arc<Sftp>,
    root: Arc<[u8]>,
    out: mpsc::Sender<Outbound>,
    stream: u32,
    dir: Vec<u8>,
    name: String,
    path: String,
}

impl Upload {
    async fn ack(&self, message: &str, status: Status) {
        send_ack(&self.out, self.stream, message, status).await;
    }

    async fn event(&self, event: FileEvent) {
        let _ = self.out.send(Outbound::Event(event)).await;
    }

    async fn run(self, mut rx: mpsc::Receiver<UploadMessage>, stop: CancellationToken) {
        // The destination directory, resolved again now: inside the jail, a directory.
        let real_dir = match self.sftp.realpath(&self.dir).await {
            Ok(real) if jail::contains(&self.root, &real) => real.to_vec(),
            Ok(_) => {
                self.event(FileEvent::Refused {
                    direction: FileDirection::Upload,
                    path: printable(&self.path),
                    refusal: Refusal::Jail(JailError::Outside),
                })
                .await;
                return self
                    .ack(
                        "Refused: the path leads outside the root directory",
                        Status::CLIENT_FORBIDDEN,
                    )
                    .await;
            }
            Err(_) => {
                return self
                    .ack("No such directory", Status::RESOURCE_NOT_FOUND)
                    .await;
            }
        };
        let mut temp = real_dir.clone();
        temp.extend_from_slice(format!("/.ztproxy-upload-{}", random_hex()).as_bytes());
        let mut target = real_dir;
        target.push(b'/');
        target.extend_from_slice(self.name.as_bytes());
        let handle = match self
            .sftp
            .open(&temp, open::WRITE | open::CREAT | open::EXCL, 0o600)
            .await
        {
            Ok(handle) => handle,
            Err(error) => {
                return self
                    .ack(
                        &format!("Cannot open: {}", describe(&error)),
                        status_of(&error),
                    )
                    .await;
            }
        };
        self.ack("OK (STREAM BEGIN)", Status::SUCCESS).await;
        let mut size = 0u64;
        let received = self.receive(&handle, &mut rx, &stop, &mut size).await;
        let closed = self.sftp.close(&handle).await;
        let outcome = match (received, closed) {
            (Ok(sha256), Ok(())) => match self.sftp.rename_over(&temp, &target).await {
                Ok(()) => Ok(sha256),
                Err(error) => Err(format!("cannot rename into place: {}", describe(&error))),
            },
            (Err(reason), _) => Err(reason),
            (Ok(_), Err(error)) => Err(format!("cannot close: {}", describe(&error))),
        };
        match outcome {
            Ok(sha256) => {
                self.ack("OK (STREAM END)", Status::SUCCESS).await;
                self.event(FileEvent::Transferred {
                    direction: FileDirection::Upload,
                    path: self.path.clone(),
                    size,
                    sha256,
                })
                .await;
            }
            Err(reason) => {
                // Nothing is left behind: the target name was never written.
                let _ = self.sftp.remove(&temp).await;
                if !stop.is_cancelled() {
                    self.ack(&format!("Upload failed: {reason}"), Status::SERVER_ERROR)
                        .await;
                }
                self.event(FileEvent::Incomplete {
                    direction: FileDirection::Upload,
                    path: self.path.clone(),
                    size,
                    reason,
                })
                .await;
            }
        }
    }

    async fn receive(
        &self,
        handle: &[u8],
        rx: &mut mpsc::Receiver<UploadMessage>,
        stop: &CancellationToken,
        size: &mut u64,
    ) -> Result<[u8; 32], String> {
        let sftp = self.sftp.clone();
        let mut hasher = Sha256::new();
        let mut writes = FuturesOrdered::new();
        let mut in_flight = 0usize;
        let mut pending = BytesMut::new();
        let mut offset = 0u64;
        let mut ended = false;
        loop {
            // Full writes go out as soon as they are whole; the last one at the end.
            while pending.len() >= WRITE_LEN || (ended && !pending.is_empty()) {
                let take = pending.len().min(WRITE_LEN);
                let data = pending.split_to(take).freeze();
                let at = offset;
                offset += data.len() as u64;
                in_flight += data.len();
                let sftp = &sftp;
                writes.push_back(async move {
                    let len = data.len();
                    (len, sftp.write(handle, at, &data).await)
                });
            }
            if ended && writes.is_empty() {
                return Ok(hasher.finalize().into());
            }
            let room = !ended && in_flight + pending.len() < WINDOW;
            tokio::select! {
                () = stop.cancelled() => return Err("the session ended".to_owned()),
                Some((len, written)) = writes.next(), if !writes.is_empty() => {
                    written.map_err(|e| describe(&e))?;
                    in_flight -= len;
                }
                message = rx.recv(), if room => {
                    // Everything queued now is taken at once, and acknowledged in one message.
                    let mut acks = BytesMut::new();
                    let mut message = message;
                    loop {
                        match message {
                            Some(UploadMessage::Blob(data)) => {
                                hasher.update(&data);
                                *size += data.len() as u64;
                                pending.extend_from_slice(&data);
                                encode_ack(
                                    self.stream,
                                    "OK (DATA RECEIVED)",
                                    Status::SUCCESS,
                                    &mut acks,
                                );
                            }
                            Some(UploadMessage::End) => ended = true,
                            None => return Err("the client abandoned the upload".to_owned()),
                        }
                        if ended || in_flight + pending.len() >= WINDOW {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(next) => message = Some(next),
                            Err(_) => break,
                        }
                    }
                    if !acks.is_empty() {
                        let _ = self.out.send(Outbound::Wire(acks.freeze())).await;
                    }
                }
            }
        }
    }
}

/// A Guacamole status for an SFTP error, as guacd maps them.
fn status_of(error: &SftpError) -> Status {
    match error.code() {
        Some(status::NO_SUCH_FILE) => Status::RESOURCE_NOT_FOUND,
        Some(status::PERMISSION_DENIED) => Status::CLIENT_FORBIDDEN,
        Some(status::OP_UNSUPPORTED) => Status::UNSUPPORTED,
        Some(status::BAD_MESSAGE) => Status::SERVER_ERROR,
        Some(_) => Status::UPSTREAM_ERROR,
        None => Status::UPSTREAM_ERROR,
    }
}

/// An SFTP error in words for the client (the server's own text is left out).
fn describe(error: &SftpError) -> String {
    match error.code() {
        Some(status::NO_SUCH_FILE) => "no such file".to_owned(),
        Some(status::PERMISSION_DENIED) => "permission denied".to_owned(),
        Some(status::FAILURE) => "the server failed".to_owned(),
        Some(code) => format!("sftp status {code}"),
        None => error.to_string(),
    }
}

/// `text` safe to log and audit: control characters escaped, at most 1 KiB.
fn printable(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(char::escape_debug)
        .take(1024)
        .collect();
    escaped
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn random_hex() -> String {
    let mut bytes = [0u8; 12];
    // Without randomness the name is still unique enough with the time; it is created
    // exclusively, so a clash fails the upload rather than writing through anything.
    if getrandom::fill(&mut bytes).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes.copy_from_slice(&now.to_be_bytes()[4..]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
