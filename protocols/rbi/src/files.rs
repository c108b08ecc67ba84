//! Files between the client and the remote browser, when the session allows them
//! (`allow-download`, `allow-upload`; both off by default), without the DevTools side.
//!
//! **Downloads.** Chromium saves what the page downloads under the profile, by download id
//! (`Browser.setDownloadBehavior` `allowAndName`). [`Transfers::begin`] admits at most
//! [`MAX_DOWNLOADS`] at once; [`Transfers::progress`] says when one passes `max-file-size`
//! (the driver cancels it) and queues it when complete. Complete files go to the client one
//! at a time as a Guacamole `file` stream, named as the page suggested: nothing is sent before
//! the client's first `ack`, then `blob`s with at most [`WINDOW`] unacknowledged, then `end`;
//! a non-success `ack` ends the stream. The file is removed once sent.
//!
//! **Uploads.** A client's `file` stream is written under the profile (its own directory per
//! upload, so the page sees the client's file name) and acknowledged blob by blob, as guacd
//! does: the `file` itself, each `blob`, and the `end` once the file is complete. A file over
//! `max-file-size`, or over four times that for the session's uploads together, is refused
//! with `CLIENT_OVERRUN` and removed. Completed files wait for the page's next file chooser
//! (`Page.fileChooserOpened`, intercepted so no dialog opens): [`Transfers::poll_chooser`]
//! hands the newest (or, for a `multiple` input, every waiting one) to
//! `DOM.setFileInputFiles`. A chooser opened before the upload is answered when it completes.
//! Files handed to the page stay until the session ends, since the page reads them lazily.
//!
//! The proxy's connection filter applies the session's policy to the same streams (the backend
//! turns `allow-*` off into `disable-download` / `disable-upload`) and audits each transfer
//! with its SHA-256; a refused upload never gets here. Disk I/O is synchronous and
//! small (one blob at a time, on a local temporary directory).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use zt_guac::{Context, Instruction, InstructionWriter, Status, TypedInstruction, opcode};

/// Downloads in the browser or waiting to be sent, at once.
pub const MAX_DOWNLOADS: usize = 4;
/// Uploads arriving at once.
pub const MAX_UPLOADS: usize = 4;
/// Completed uploads kept for file choosers; older ones are forgotten (their files stay
/// until the session ends).
const MAX_WAITING_UPLOADS: usize = 16;
/// Blobs sent to the client ahead of its `ack`s.
pub const WINDOW: usize = 32;
/// Raw bytes per blob (guacd's element size in base64).
const BLOB: usize = zt_display::BLOB_CHARS / 4 * 3;
/// Bytes of instructions queued for the client before more blobs wait.
const QUEUED: usize = 64 * 1024;
/// The first stream index of downloads (images use 1–16, clipboard 64–79).
const FIRST_STREAM: u32 = 200;
/// Stream indices used by downloads, in turn.
const STREAMS: u32 = 64;
/// The longest file name kept, in characters.
const MAX_NAME: usize = 200;

/// Why a download was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownloadRefusal {
    /// `allow-download` is off.
    Disabled,
    /// Larger than `max-file-size`.
    TooLarge,
    /// [`MAX_DOWNLOADS`] are running.
    TooMany,
}

impl DownloadRefusal {
    /// The name audit events use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "downloads_disabled",
            Self::TooLarge => "too_large",
            Self::TooMany => "too_many",
        }
    }
}

/// Where a download stands, as `Browser.downloadProgress` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Still arriving.
    InProgress,
    /// Saved.
    Completed,
    /// Cancelled (by ztproxy or the page).
    Canceled,
}

/// What the driver does after [`Transfers::progress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressAction {
    /// Nothing.
    None,
    /// Cancel the download (`Browser.cancelDownload`): it passed `max-file-size`. The name
    /// is the page's.
    Cancel {
        /// The suggested file name.
        name: String,
    },
}

#[derive(Debug)]
struct Download {
    name: String,
    cancelled: bool,
}

#[derive(Debug)]
struct Ready {
    path: PathBuf,
    name: String,
}

#[derive(Debug)]
struct Sending {
    stream: u32,
    path: PathBuf,
    file: File,
    /// The client has answered the `file` instruction.
    opened: bool,
    unacked: usize,
    done: bool,
}

#[derive(Debug)]
struct Upload {
    path: PathBuf,
    file: File,
    size: u64,
}

/// The session's file transfers.
#[derive(Debug)]
pub struct Transfers {
    downloads_dir: Option<PathBuf>,
    uploads_dir: Option<PathBuf>,
    max: u64,
    downloads: HashMap<String, Download>,
    ready: VecDeque<Ready>,
    sending: Option<Sending>,
    next_stream: u32,
    uploads: HashMap<u32, Upload>,
    uploaded_bytes: u64,
    upload_count: u64,
    waiting: VecDeque<PathBuf>,
    chooser: Option<(i64, bool)>,
    to_client: BytesMut,
}

impl Transfers {
    /// Transfers under `downloads` and `uploads` (directories made by the caller; `None`:
    /// that direction is off), each file at most `max` bytes.
    pub fn new(downloads: Option<PathBuf>, uploads: Option<PathBuf>, max: u64) -> Self {
        Self {
            downloads_dir: downloads,
            uploads_dir: uploads,
            max,
            downloads: HashMap::new(),
            ready: VecDeque::new(),
            sending: None,
            next_stream: 0,
            uploads: HashMap::new(),
            uploaded_bytes: 0,
            upload_count: 0,
            waiting: VecDeque::new(),
            chooser: None,
            to_client: BytesMut::new(),
        }
    }

    /// Whether downloads are allowed.
    pub fn downloads_allowed(&self) -> bool {
        self.downloads_dir.is_some()
    }

    /// The page started download `guid`, suggesting `name`.
    pub fn begin(&mut self, guid: &str, name: &str) -> Result<(), DownloadRefusal> {
        if self.downloads_dir.is_none() {
            return Err(DownloadRefusal::Disabled);
        }
        let running = self.downloads.len() + self.ready.len() + usize::from(self.sending.is_some());
        if running >= MAX_DOWNLOADS {
            return Err(DownloadRefusal::TooMany);
        }
        self.downloads.insert(
            guid.to_owned(),
            Download {
                name: file_name(name),
                cancelled: false,
            },
        );
        Ok(())
    }

    /// Download `guid` has `received` of `total` bytes (0: unknown) and is in `state`.
    pub fn progress(
        &mut self,
        guid: &str,
        total: f64,
        received: f64,
        state: Progress,
    ) -> ProgressAction {
        let max = self.max as f64;
        let Some(download) = self.downloads.get_mut(guid) else {
            return ProgressAction::None;
        };
        match state {
            Progress::InProgress if !download.cancelled && (total > max || received > max) => {
                download.cancelled = true;
                ProgressAction::Cancel {
                    name: download.name.clone(),
                }
            }
            Progress::InProgress => ProgressAction::None,
            Progress::Completed => {
                let Some(download) = self.downloads.remove(guid) else {
                    return ProgressAction::None;
                };
                let Some(dir) = &self.downloads_dir else {
                    return ProgressAction::None;
                };
                let path = dir.join(guid_file(guid));
                // Chromium may report a size under the limit and write more.
                let size = std::fs::metadata(&path)
                    .map(|m| m.len())
                    .unwrap_or(u64::MAX);
                if download.cancelled || size > self.max {
                    let _ = std::fs::remove_file(&path);
                    return if download.cancelled {
                        ProgressAction::None
                    } else {
                        ProgressAction::Cancel {
                            name: download.name,
                        }
                    };
                }
                self.ready.push_back(Ready {
                    path,
                    name: download.name,
                });
                ProgressAction::None
            }
            Progress::Canceled => {
                self.downloads.remove(guid);
                if let Some(dir) = &self.downloads_dir {
                    let _ = std::fs::remove_file(dir.join(guid_file(guid)));
                }
                ProgressAction::None
            }
        }
    }

    /// A client instruction, if it belongs to a transfer (then it is consumed: `true`).
    pub fn handle_client(&mut self, instruction: &Instruction) -> bool {
        let op = instruction.opcode();
        if !matches!(op, opcode::ACK | opcode::FILE | opcode::BLOB | opcode::END) {
            return false;
        }
        let Ok(typed) = TypedInstruction::parse(instruction, Context::ClientInteractive) else {
            return false;
        };
        match typed {
            TypedInstruction::Ack { stream, status, .. } => {
                let Some(sending) = self.sending.as_mut().filter(|s| s.stream == stream.0) else {
                    return false;
                };
                if status == Status::SUCCESS {
                    if sending.opened {
                        sending.unacked = sending.unacked.saturating_sub(1);
                    } else {
                        sending.opened = true;
                    }
                } else if let Some(sending) = self.sending.take() {
                    // The client refused or failed it: the stream is over.
                    let _ = std::fs::remove_file(&sending.path);
                }
                true
            }
            TypedInstruction::File {
                stream, filename, ..
            } => {
                self.upload(stream.0, filename);
                true
            }
            TypedInstruction::Blob { stream, data } => {
                if !self.uploads.contains_key(&stream.0) {
                    return false;
                }
                self.blob(stream.0, data);
                true
            }
            TypedInstruction::End { stream } => {
                let Some(upload) = self.uploads.remove(&stream.0) else {
                    return false;
                };
                drop(upload.file);
                self.ack(stream.0, "OK", Status::SUCCESS);
                self.waiting.push_back(upload.path);
                if self.waiting.len() > MAX_WAITING_UPLOADS {
                    self.waiting.pop_front();
                }
                true
            }
            _ => false,
        }
    }

    fn upload(&mut self, stream: u32, name: &str) {
        let Some(dir) = &self.uploads_dir else {
            self.ack(stream, "File upload is disabled", Status::CLIENT_FORBIDDEN);
            return;
        };
        if self.uploads.contains_key(&stream) {
            self.ack(stream, "The stream is in use", Status::CLIENT_BAD_REQUEST);
            return;
        }
        if self.uploads.len() >= MAX_UPLOADS {
            self.ack(stream, "Too many uploads at once", Status::CLIENT_TOO_MANY);
            return;
        }
        if self.uploaded_bytes >= self.max.saturating_mul(4) {
            self.ack(
                stream,
                "This session has taken all the uploads it may",
                Status::CLIENT_OVERRUN,
            );
            return;
        }
        self.upload_count += 1;
        let folder = dir.join(self.upload_count.to_string());
        let path = folder.join(file_name(name));
        let opened = std::fs::create_dir(&folder).and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
        });
        match opened {
            Ok(file) => {
                self.uploads.insert(
                    stream,
                    Upload {
                        path,
                        file,
                        size: 0,
                    },
                );
                self.ack(stream, "OK", Status::SUCCESS);
            }
            Err(_) => self.ack(stream, "The file cannot be stored", Status::SERVER_ERROR),
        }
    }

    fn blob(&mut self, stream: u32, data: &str) {
        let Some(upload) = self.uploads.get_mut(&stream) else {
            return;
        };
        let Ok(bytes) = STANDARD.decode(data) else {
            self.fail_upload(stream, "A blob is not base64", Status::CLIENT_BAD_REQUEST);
            return;
        };
        let len = bytes.len() as u64;
        if upload.size + len > self.max || self.uploaded_bytes + len > self.max.saturating_mul(4) {
            self.fail_upload(
                stream,
                "The file is larger than this session allows",
                Status::CLIENT_OVERRUN,
            );
            return;
        }
        if upload.file.write_all(&bytes).is_err() {
            self.fail_upload(stream, "The file cannot be stored", Status::SERVER_ERROR);
            return;
        }
        upload.size += len;
        self.uploaded_bytes += len;
        self.ack(stream, "OK", Status::SUCCESS);
    }

    fn fail_upload(&mut self, stream: u32, message: &str, status: Status) {
        if let Some(upload) = self.uploads.remove(&stream) {
            drop(upload.file);
            let _ = std::fs::remove_file(&upload.path);
        }
        self.ack(stream, message, status);
    }

    fn ack(&mut self, stream: u32, message: &str, status: Status) {
        let mut w = InstructionWriter::new(&mut self.to_client, opcode::ACK);
        w.arg_u64(u64::from(stream))
            .arg(message)
            .arg_u64(u64::from(status.code()));
        w.finish();
    }

    /// The page opened a file chooser for input `node` (`multiple`: it takes several files).
    pub fn chooser_opened(&mut self, node: i64, multiple: bool) {
        self.chooser = Some((node, multiple));
    }

    /// A chooser to answer and the files for it, when both are there.
    pub fn poll_chooser(&mut self) -> Option<(i64, Vec<PathBuf>)> {
        if self.waiting.is_empty() {
            return None;
        }
        let (node, multiple) = self.chooser.take()?;
        let files = if multiple {
            self.waiting.drain(..).collect()
        } else {
            self.waiting.pop_back().into_iter().collect()
        };
        Some((node, files))
    }

    /// Appends what the client should hear now to `out`: acks, and the next part of a
    /// download while the client keeps up.
    pub fn poll_client(&mut self, out: &mut BytesMut) {
        if !self.to_client.is_empty() {
            out.extend_from_slice(&self.to_client.split());
        }
        if self.sending.is_none() {
            self.start_next(out);
        }
        let Some(sending) = self.sending.as_mut() else {
            return;
        };
        let mut buffer = [0u8; BLOB];
        let mut encoded = String::new();
        while sending.opened && !sending.done && sending.unacked < WINDOW && out.len() < QUEUED {
            // A read error of the session's own temporary file ends the stream where it is;
            // the audit's size and digest are of what the client received.
            let n = read_full(&mut sending.file, &mut buffer).unwrap_or_default();
            if n == 0 {
                let mut w = InstructionWriter::new(out, opcode::END);
                w.arg_u64(u64::from(sending.stream));
                w.finish();
                sending.done = true;
                break;
            }
            encoded.clear();
            STANDARD.encode_string(&buffer[..n], &mut encoded);
            let mut w = InstructionWriter::new(out, opcode::BLOB);
            w.arg_u64(u64::from(sending.stream)).arg(&encoded);
            w.finish();
            sending.unacked += 1;
        }
        if sending.done
            && let Some(sending) = self.sending.take()
        {
            let _ = std::fs::remove_file(&sending.path);
            self.start_next(out);
        }
    }

    fn start_next(&mut self, out: &mut BytesMut) {
        while let Some(ready) = self.ready.pop_front() {
            let Ok(file) = File::open(&ready.path) else {
                continue;
            };
            let stream = FIRST_STREAM + self.next_stream;
            self.next_stream = (self.next_stream + 1) % STREAMS;
            let mut w = InstructionWriter::new(out, opcode::FILE);
            w.arg_u64(u64::from(stream))
                .arg("application/octet-stream")
                .arg(&ready.name);
            w.finish();
            self.sending = Some(Sending {
                stream,
                path: ready.path,
                file,
                opened: false,
                unacked: 0,
                done: false,
            });
            return;
        }
    }
}

/// Reads until `buffer` is full or the file ends.
fn read_full(file: &mut File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buffer.len() {
        match file.read(&mut buffer[n..])? {
            0 => break,
            read => n += read,
        }
    }
    Ok(n)
}

/// The file Chromium saves download `guid` as (`allowAndName`), never a path.
fn guid_file(guid: &str) -> String {
    guid.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect()
}

/// `name` as a file name: its last path component, without control characters, at most
/// 200 characters; `file` when nothing usable is left.
pub fn file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = last
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect();
    let clean = clean.trim();
    if clean.is_empty() || clean == "." || clean == ".." {
        "file".to_owned()
    } else {
        clean.to_owned()
    }
}

/// Makes `dir` under `profile` for transfers, readable by this user only.
pub fn make_dir(profile: &Path, dir: &str) -> std::io::Result<PathBuf> {
    let path = profile.join(dir);
    std::fs::create_dir(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use zt_guac::Decoder;

    use super::*;

    fn instructions(bytes: &BytesMut) -> Vec<Instruction> {
        let mut decoder = Decoder::new(zt_guac::Limits::default());
        decoder.feed(bytes);
        let mut all = Vec::new();
        while let Ok(Some(i)) = decoder.poll_instruction() {
            all.push(i);
        }
        all
    }

    fn ack(stream: u32) -> Instruction {
        Instruction::new(opcode::ACK, &[stream.to_string().as_str(), "OK", "0"])
    }

    #[test]
    fn a_completed_download_is_sent_once_the_client_answers_and_paced_by_its_acks() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(BLOB * (WINDOW + 5)) as u32).map(|i| i as u8).collect();
        std::fs::write(dir.path().join("g-1"), &data).unwrap();
        let mut t = Transfers::new(Some(dir.path().to_owned()), None, 1 << 30);
        t.begin("g-1", "../../etc/report.bin").unwrap();
        assert_eq!(
            t.progress("g-1", 0.0, data.len() as f64, Progress::Completed),
            ProgressAction::None
        );
        let mut out = BytesMut::new();
        t.poll_client(&mut out);
        let sent = instructions(&out);
        assert_eq!(
            sent.len(),
            1,
            "nothing but the file before the client answers"
        );
        assert!(sent[0].is(opcode::FILE));
        assert_eq!(sent[0].arg(2), Some("report.bin"));
        let stream: u32 = sent[0].arg(0).unwrap().parse().unwrap();

        let mut received = Vec::new();
        assert!(t.handle_client(&ack(stream)));
        let mut ended = false;
        for _ in 0..100 {
            let mut out = BytesMut::new();
            t.poll_client(&mut out);
            let sent = instructions(&out);
            let blobs = sent.iter().filter(|i| i.is(opcode::BLOB)).count();
            assert!(blobs <= WINDOW, "{blobs} blobs ahead of the client");
            for i in &sent {
                if i.is(opcode::BLOB) {
                    received.extend(STANDARD.decode(i.arg(1).unwrap()).unwrap());
                    t.handle_client(&ack(stream));
                }
                ended |= i.is(opcode::END);
            }
            if ended {
                break;
            }
        }
        assert!(ended);
        assert_eq!(received, data);
        assert!(!dir.path().join("g-1").exists(), "removed once sent");
    }

    #[test]
    fn downloads_over_the_limit_or_beyond_the_count_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Transfers::new(Some(dir.path().to_owned()), None, 1000);
        t.begin("a", "a.bin").unwrap();
        assert_eq!(
            t.progress("a", 10_737_418_240.0, 0.0, Progress::InProgress),
            ProgressAction::Cancel {
                name: "a.bin".into()
            }
        );
        // Cancelled once; its cancellation ends it.
        assert_eq!(
            t.progress("a", 10_737_418_240.0, 10.0, Progress::InProgress),
            ProgressAction::None
        );
        t.progress("a", 0.0, 0.0, Progress::Canceled);
        for i in 0..MAX_DOWNLOADS {
            t.begin(&format!("d{i}"), "x").unwrap();
        }
        assert_eq!(t.begin("more", "x"), Err(DownloadRefusal::TooMany));
        let off = Transfers::new(None, None, 1000).begin("b", "b");
        assert_eq!(off, Err(DownloadRefusal::Disabled));
    }

    #[test]
    fn an_upload_is_stored_under_its_name_and_handed_to_the_next_chooser() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Transfers::new(None, Some(dir.path().to_owned()), 1000);
        t.chooser_opened(7, false);
        assert!(t.poll_chooser().is_none(), "no file yet");
        assert!(t.handle_client(&Instruction::new(
            opcode::FILE,
            &["3", "text/plain", "C:\\Users\\me\\notes.txt"]
        )));
        let data = STANDARD.encode(b"hello");
        assert!(t.handle_client(&Instruction::new(opcode::BLOB, &["3", &data])));
        assert!(t.handle_client(&Instruction::new(opcode::END, &["3"])));
        let mut out = BytesMut::new();
        t.poll_client(&mut out);
        let acks = instructions(&out);
        assert_eq!(acks.len(), 3, "the file, its blob and its end");
        assert!(acks.iter().all(|a| a.arg(2) == Some("0")));
        let (node, files) = t.poll_chooser().unwrap();
        assert_eq!(node, 7);
        assert_eq!(files.len(), 1);
        assert!(files[0].ends_with("notes.txt"));
        assert_eq!(std::fs::read(&files[0]).unwrap(), b"hello");
        assert!(t.poll_chooser().is_none());
    }

    #[test]
    fn uploads_over_the_limit_or_when_off_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Transfers::new(None, Some(dir.path().to_owned()), 4);
        t.handle_client(&Instruction::new(opcode::FILE, &["3", "x", "big"]));
        let data = STANDARD.encode(b"hello");
        t.handle_client(&Instruction::new(opcode::BLOB, &["3", &data]));
        let mut out = BytesMut::new();
        t.poll_client(&mut out);
        let acks = instructions(&out);
        assert_eq!(acks.last().unwrap().arg(2), Some("781"), "{acks:?}");
        assert!(!dir.path().join("1").join("big").exists());
        // Its end is not an upload any more.
        assert!(!t.handle_client(&Instruction::new(opcode::END, &["3"])));

        let mut off = Transfers::new(None, None, 4);
        off.handle_client(&Instruction::new(opcode::FILE, &["3", "x", "a"]));
        let mut out = BytesMut::new();
        off.poll_client(&mut out);
        assert_eq!(instructions(&out)[0].arg(2), Some("771"));
    }

    #[test]
    fn file_names_are_names_only() {
        assert_eq!(file_name("../../etc/passwd"), "passwd");
        assert_eq!(file_name("a\\b\\c.txt"), "c.txt");
        assert_eq!(file_name(".."), "file");
        assert_eq!(file_name("x\u{0}\ny"), "xy");
        assert_eq!(file_name(""), "file");
        assert_eq!(guid_file("../x/y"), "xy");
    }
}
