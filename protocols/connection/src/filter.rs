//! Policy filtering of a Guacamole conversation, without I/O.
//!
//! Every instruction between the user's client and the target passes through a [`Filter`]:
//! [`Filter::from_client`] for the client's, [`Filter::from_server`] for the target's. It
//! answers with a [`Verdict`] (forward the instruction's own bytes, drop it, or forward a
//! replacement), queues the replies ztproxy sends itself (an `ack` refusing a stream), and
//! reports what happened as [`FilterEvent`]s for the audit log.
//!
//! | policy | client → target | target → client |
//! | --- | --- | --- |
//! | `disable-paste` | `clipboard` stream refused: `ack` 0x0303 to the client, its `blob`s and `end` dropped | — |
//! | `disable-copy` | — | `clipboard` stream, `blob`s and `end` dropped (guacd expects no `ack` for clipboard) |
//! | `disable-upload` | `file` and `put` streams refused: `ack` 0x0303 to the client | the target's `ack`s for them are dropped |
//! | `disable-download` | the client's `ack`s for refused streams are dropped | `file` and file `body` streams refused: `ack` 0x0303 to the target, never shown to the client (guacd does the same when it refuses a download itself) |
//! | `read-only` | `key`, `mouse`, `touch` dropped | — |
//! | `clipboard-buffer-size` | clipboard data beyond it dropped (the blob that crosses it is cut) | the same |
//!
//! Directory listings (`body` streams of the Guacamole stream-index type) are not downloads and
//! always pass. Allowed clipboard and file transfers are hashed as they pass (SHA-256 of the
//! decoded data) and reported when they end. Runtime parameter changes (`argv`) are allowed
//! only for the display parameters guacd itself lets users change.
//!
//! Limits: at most [`MAX_TRACKED_STREAMS`] transfers are tracked per direction; a stream
//! beyond that is refused with 0x031D (too many).

use std::collections::{HashMap, VecDeque};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use zt_guac::{Instruction, StreamIndex, opcode};

use crate::policy::ConnectionPolicy;

/// Transfers tracked at once, per direction.
pub const MAX_TRACKED_STREAMS: usize = 64;
/// Mimetype of directory listings on Guacamole filesystem objects.
pub const STREAM_INDEX_MIMETYPE: &str = "application/vnd.glyptodon.guacamole.stream-index+json";
/// Runtime parameters (`argv`) a client may change (those guacd accepts from users).
pub const MUTABLE_ARGS: &[&str] = &["color-scheme", "font-name", "font-size"];

/// `CLIENT_FORBIDDEN`: the policy forbids it.
const FORBIDDEN: u32 = 0x0303;
/// `CLIENT_TOO_MANY`: too many streams.
const TOO_MANY: u32 = 0x031D;

/// What to do with one instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the instruction's own bytes.
    Forward,
    /// Forward the instruction's own bytes to the client, but keep them out of the
    /// recording: a file's (or a directory listing's) data. The recording keeps the
    /// stream's `body`/`file` and `end`, and the audit log the transfer's size and digest.
    ForwardUnrecorded,
    /// Drop it.
    Drop,
    /// Forward these bytes instead (a clipboard blob cut to the buffer size).
    Replace(Bytes),
}

/// Which way data moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the user's client to the target (upload, paste).
    ToTarget,
    /// From the target to the user's client (download, copy).
    ToClient,
}

impl Direction {
    /// The wire name used in audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ToTarget => "to_target",
            Self::ToClient => "to_client",
        }
    }
}

/// What was transferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// Clipboard contents.
    Clipboard,
    /// A file.
    File,
}

impl TransferKind {
    /// The wire name used in audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clipboard => "clipboard",
            Self::File => "file",
        }
    }
}

/// What the policy refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Clipboard data from the client.
    Paste,
    /// Clipboard data from the target.
    Copy,
    /// A file from the client.
    Upload,
    /// A file from the target.
    Download,
    /// Keyboard, mouse or touch input (read-only); reported once per connection.
    Input,
    /// A runtime parameter change the client may not make.
    Parameter,
    /// A transfer over [`MAX_TRACKED_STREAMS`].
    TooManyStreams,
}

impl Refused {
    /// The wire name used in audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paste => "paste",
            Self::Copy => "copy",
            Self::Upload => "upload",
            Self::Download => "download",
            Self::Input => "input",
            Self::Parameter => "parameter",
            Self::TooManyStreams => "too_many_streams",
        }
    }
}

/// Something the audit log should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterEvent {
    /// An allowed transfer ended.
    Transferred {
        /// Which way.
        direction: Direction,
        /// Clipboard or file.
        kind: TransferKind,
        /// Declared mimetype.
        mimetype: String,
        /// File name, for files.
        name: Option<String>,
        /// Decoded bytes that passed.
        size: u64,
        /// SHA-256 of those bytes.
        sha256: [u8; 32],
        /// Data beyond the clipboard buffer size was dropped.
        truncated: bool,
    },
    /// The policy refused something.
    Refused {
        /// Which way it would have gone.
        direction: Direction,
        /// What.
        what: Refused,
        /// File or parameter name, when there is one.
        name: Option<String>,
    },
}

#[derive(Debug)]
enum Stream {
    Refused,
    Tracked(Transfer),
    /// A directory listing, or a file whose transfer the backend audits itself: passed on,
    /// neither hashed nor reported.
    Untracked,
}

#[derive(Debug)]
struct Transfer {
    kind: TransferKind,
    mimetype: String,
    name: Option<String>,
    size: u64,
    hasher: Sha256,
    truncated: bool,
}

/// The policy filter of one connection. See the module docs.
#[derive(Debug)]
pub struct Filter {
    policy: ConnectionPolicy,
    /// Streams the client opened (uploads, pastes).
    client_streams: HashMap<StreamIndex, Stream>,
    /// Streams the target opened (downloads, copies).
    server_streams: HashMap<StreamIndex, Stream>,
    to_client: BytesMut,
    to_server: BytesMut,
    events: VecDeque<FilterEvent>,
    input_refusal_reported: bool,
    backend_audits_files: bool,
}

impl Filter {
    /// A filter enforcing `policy`.
    pub fn new(policy: ConnectionPolicy) -> Self {
        Self {
            policy,
            client_streams: HashMap::new(),
            server_streams: HashMap::new(),
            to_client: BytesMut::new(),
            to_server: BytesMut::new(),
            events: VecDeque::new(),
            input_refusal_reported: false,
            backend_audits_files: false,
        }
    }

    /// The backend reports file transfers itself, with what only it knows (the path on the
    /// target, whether an upload reached it): file streams are still refused by policy here,
    /// but not hashed or reported as transferred.
    pub fn with_backend_audits_files(mut self, audits: bool) -> Self {
        self.backend_audits_files = audits;
        self
    }

    /// The policy.
    pub fn policy(&self) -> &ConnectionPolicy {
        &self.policy
    }

    /// Decides about an instruction from the user's client.
    pub fn from_client(&mut self, instruction: &Instruction) -> Verdict {
        let op = instruction.opcode();
        match op {
            opcode::MOUSE | opcode::KEY | opcode::TOUCH => {
                if self.policy.read_only {
                    if !self.input_refusal_reported {
                        self.input_refusal_reported = true;
                        self.refused(Direction::ToTarget, Refused::Input, None);
                    }
                    Verdict::Drop
                } else {
                    Verdict::Forward
                }
            }
            opcode::BLOB | opcode::END => self.stream_data(instruction, Direction::ToTarget),
            opcode::ACK => self.ack(instruction, Direction::ToTarget),
            opcode::CLIPBOARD => {
                let (Some(stream), Some(mimetype)) =
                    (stream_arg(instruction, 0), instruction.arg(1))
                else {
                    return Verdict::Drop;
                };
                if self.policy.disable_paste {
                    self.refuse_client_stream(stream, Refused::Paste, None, "Paste is disabled");
                    return Verdict::Drop;
                }
                self.track(
                    Direction::ToTarget,
                    stream,
                    TransferKind::Clipboard,
                    mimetype,
                    None,
                )
            }
            opcode::FILE | opcode::PUT => {
                // file: stream, mimetype, name; put: object, stream, mimetype, name.
                let (stream_at, rest) = if op == opcode::FILE { (0, 1) } else { (1, 2) };
                let (Some(stream), Some(mimetype), Some(name)) = (
                    stream_arg(instruction, stream_at),
                    instruction.arg(rest),
                    instruction.arg(rest + 1),
                ) else {
                    return Verdict::Drop;
                };
                if self.policy.disable_upload {
                    self.refuse_client_stream(
                        stream,
                        Refused::Upload,
                        Some(name),
                        "File upload is disabled",
                    );
                    return Verdict::Drop;
                }
                if self.backend_audits_files {
                    self.insert(Direction::ToTarget, stream, Stream::Untracked);
                    return Verdict::Forward;
                }
                self.track(
                    Direction::ToTarget,
                    stream,
                    TransferKind::File,
                    mimetype,
                    Some(name),
                )
            }
            opcode::ARGV => {
                let (Some(stream), Some(name)) = (stream_arg(instruction, 0), instruction.arg(2))
                else {
                    return Verdict::Drop;
                };
                if MUTABLE_ARGS.contains(&name) {
                    Verdict::Forward
                } else {
                    self.refuse_client_stream(
                        stream,
                        Refused::Parameter,
                        Some(name),
                        "This parameter cannot be changed",
                    );
                    Verdict::Drop
                }
            }
            _ => Verdict::Forward,
        }
    }

    /// Decides about an instruction from the target.
    pub fn from_server(&mut self, instruction: &Instruction) -> Verdict {
        match instruction.opcode() {
            // The common case first: image data, which is never tracked.
            opcode::BLOB | opcode::END => {
                if self.server_streams.is_empty() {
                    Verdict::Forward
                } else {
                    self.stream_data(instruction, Direction::ToClient)
                }
            }
            opcode::ACK => {
                if self.client_streams.is_empty() {
                    Verdict::Forward
                } else {
                    self.ack(instruction, Direction::ToClient)
                }
            }
            opcode::CLIPBOARD => {
                let (Some(stream), Some(mimetype)) =
                    (stream_arg(instruction, 0), instruction.arg(1))
                else {
                    return Verdict::Drop;
                };
                if self.policy.disable_copy {
                    // guacd sends clipboard streams without waiting for acks: drop quietly.
                    self.insert(Direction::ToClient, stream, Stream::Refused);
                    self.refused(Direction::ToClient, Refused::Copy, None);
                    return Verdict::Drop;
                }
                self.track(
                    Direction::ToClient,
                    stream,
                    TransferKind::Clipboard,
                    mimetype,
                    None,
                )
            }
            opcode::FILE => {
                let (Some(stream), Some(mimetype), Some(name)) = (
                    stream_arg(instruction, 0),
                    instruction.arg(1),
                    instruction.arg(2),
                ) else {
                    return Verdict::Drop;
                };
                self.server_file(stream, mimetype, name)
            }
            opcode::BODY => {
                let (Some(stream), Some(mimetype), Some(name)) = (
                    stream_arg(instruction, 1),
                    instruction.arg(2),
                    instruction.arg(3),
                ) else {
                    return Verdict::Drop;
                };
                if mimetype == STREAM_INDEX_MIMETYPE {
                    self.insert(Direction::ToClient, stream, Stream::Untracked);
                    Verdict::Forward
                } else {
                    self.server_file(stream, mimetype, name)
                }
            }
            _ => Verdict::Forward,
        }
    }

    /// Takes the bytes ztproxy must send to the client itself.
    pub fn take_to_client(&mut self) -> Option<Bytes> {
        (!self.to_client.is_empty()).then(|| self.to_client.split().freeze())
    }

    /// Takes the bytes ztproxy must send to the target itself.
    pub fn take_to_server(&mut self) -> Option<Bytes> {
        (!self.to_server.is_empty()).then(|| self.to_server.split().freeze())
    }

    /// The next event for the audit log.
    pub fn poll_event(&mut self) -> Option<FilterEvent> {
        self.events.pop_front()
    }

    fn server_file(&mut self, stream: StreamIndex, mimetype: &str, name: &str) -> Verdict {
        if self.policy.disable_download {
            self.insert(Direction::ToClient, stream, Stream::Refused);
            // Abort the target's stream; the client never learns of it.
            write_ack(
                &mut self.to_server,
                stream,
                "File download is disabled",
                FORBIDDEN,
            );
            self.refused(Direction::ToClient, Refused::Download, Some(name));
            return Verdict::Drop;
        }
        if self.backend_audits_files {
            self.insert(Direction::ToClient, stream, Stream::Untracked);
            return Verdict::Forward;
        }
        self.track(
            Direction::ToClient,
            stream,
            TransferKind::File,
            mimetype,
            Some(name),
        )
    }

    fn refuse_client_stream(
        &mut self,
        stream: StreamIndex,
        what: Refused,
        name: Option<&str>,
        message: &str,
    ) {
        self.insert(Direction::ToTarget, stream, Stream::Refused);
        write_ack(&mut self.to_client, stream, message, FORBIDDEN);
        self.refused(Direction::ToTarget, what, name);
    }

    fn track(
        &mut self,
        direction: Direction,
        stream: StreamIndex,
        kind: TransferKind,
        mimetype: &str,
        name: Option<&str>,
    ) -> Verdict {
        let full = self.streams(direction).len() >= MAX_TRACKED_STREAMS
            && !self.streams(direction).contains_key(&stream);
        if full {
            match direction {
                Direction::ToTarget => {
                    write_ack(&mut self.to_client, stream, "Too many streams", TOO_MANY)
                }
                Direction::ToClient => {
                    write_ack(&mut self.to_server, stream, "Too many streams", TOO_MANY)
                }
            }
            self.refused(direction, Refused::TooManyStreams, name);
            return Verdict::Drop;
        }
        self.insert(
            direction,
            stream,
            Stream::Tracked(Transfer {
                kind,
                mimetype: zt_api::truncate_utf8(mimetype, 255).to_owned(),
                name: name.map(|n| zt_api::truncate_utf8(n, 1024).to_owned()),
                size: 0,
                hasher: Sha256::new(),
                truncated: false,
            }),
        );
        Verdict::Forward
    }

    fn stream_data(&mut self, instruction: &Instruction, direction: Direction) -> Verdict {
        let Some(stream) = stream_arg(instruction, 0) else {
            return Verdict::Forward;
        };
        let is_end = instruction.is(opcode::END);
        let clipboard_limit = self.policy.clipboard_buffer_size as u64;
        let streams = self.streams_mut(direction);
        let Some(entry) = streams.get_mut(&stream) else {
            return Verdict::Forward;
        };
        match entry {
            Stream::Refused => {
                if is_end {
                    streams.remove(&stream);
                }
                Verdict::Drop
            }
            Stream::Untracked => {
                if is_end {
                    streams.remove(&stream);
                    Verdict::Forward
                } else if direction == Direction::ToClient {
                    Verdict::ForwardUnrecorded
                } else {
                    Verdict::Forward
                }
            }
            Stream::Tracked(transfer) => {
                if is_end {
                    if let Some(Stream::Tracked(transfer)) = streams.remove(&stream) {
                        self.events.push_back(FilterEvent::Transferred {
                            direction,
                            kind: transfer.kind,
                            mimetype: transfer.mimetype,
                            name: transfer.name,
                            size: transfer.size,
                            sha256: transfer.hasher.finalize().into(),
                            truncated: transfer.truncated,
                        });
                    }
                    return Verdict::Forward;
                }
                let encoded = instruction.arg(1).unwrap_or("");
                let data = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap_or_else(|_| encoded.as_bytes().to_vec());
                if transfer.kind == TransferKind::Clipboard {
                    let room = clipboard_limit.saturating_sub(transfer.size);
                    if room == 0 {
                        transfer.truncated = true;
                        return Verdict::Drop;
                    }
                    if (data.len() as u64) > room {
                        let keep = data.get(..room as usize).unwrap_or_default();
                        transfer.truncated = true;
                        transfer.size += keep.len() as u64;
                        transfer.hasher.update(keep);
                        let mut out = BytesMut::new();
                        zt_guac::encode(
                            opcode::BLOB,
                            &[
                                instruction.arg(0).unwrap_or("0"),
                                &base64::engine::general_purpose::STANDARD.encode(keep),
                            ],
                            &mut out,
                        );
                        return Verdict::Replace(out.freeze());
                    }
                }
                transfer.size += data.len() as u64;
                transfer.hasher.update(&data);
                if transfer.kind == TransferKind::File && direction == Direction::ToClient {
                    Verdict::ForwardUnrecorded
                } else {
                    Verdict::Forward
                }
            }
        }
    }

    /// An `ack` travelling `direction` acknowledges a stream the other side opened.
    fn ack(&self, instruction: &Instruction, direction: Direction) -> Verdict {
        let Some(stream) = stream_arg(instruction, 0) else {
            return Verdict::Forward;
        };
        let owner = match direction {
            // The client acks the target's streams, and vice versa.
            Direction::ToTarget => &self.server_streams,
            Direction::ToClient => &self.client_streams,
        };
        match owner.get(&stream) {
            // Already answered by ztproxy; the other side never saw the stream.
            Some(Stream::Refused) => Verdict::Drop,
            _ => Verdict::Forward,
        }
    }

    fn refused(&mut self, direction: Direction, what: Refused, name: Option<&str>) {
        self.events.push_back(FilterEvent::Refused {
            direction,
            what,
            name: name.map(|n| zt_api::truncate_utf8(n, 1024).to_owned()),
        });
    }

    /// Remembers a stream. A full table remembers no new one: a refused stream is then
    /// forgotten at once (its opening instruction is dropped either way, so its later `blob`s
    /// reach a side that has no such stream open and ignore it), which bounds memory against a
    /// peer that opens streams and never ends them.
    fn insert(&mut self, direction: Direction, stream: StreamIndex, state: Stream) {
        let streams = self.streams_mut(direction);
        if streams.len() >= MAX_TRACKED_STREAMS && !streams.contains_key(&stream) {
            return;
        }
        streams.insert(stream, state);
    }

    fn streams(&self, direction: Direction) -> &HashMap<StreamIndex, Stream> {
        match direction {
            Direction::ToTarget => &self.client_streams,
            Direction::ToClient => &self.server_streams,
        }
    }

    fn streams_mut(&mut self, direction: Direction) -> &mut HashMap<StreamIndex, Stream> {
        match direction {
            Direction::ToTarget => &mut self.client_streams,
            Direction::ToClient => &mut self.server_streams,
        }
    }
}

fn stream_arg(instruction: &Instruction, index: usize) -> Option<StreamIndex> {
    instruction
        .arg(index)
        .and_then(|s| s.parse::<u32>().ok())
        .map(StreamIndex)
}

fn write_ack(out: &mut BytesMut, stream: StreamIndex, message: &str, status: u32) {
    zt_guac::encode(
        opcode::ACK,
        &[
            stream.0.to_string().as_str(),
            message,
            status.to_string().as_str(),
        ],
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use zt_guac::{Decoder, Limits};

    fn decode(wire: &str) -> Vec<Instruction> {
        let mut decoder = Decoder::new(Limits::default());
        decoder.feed(wire.as_bytes());
        let mut out = Vec::new();
        while let Some(i) = decoder.poll_instruction().unwrap() {
            out.push(i);
        }
        out
    }

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    /// Runs `wire` from the client through the filter; returns what reaches the target.
    fn client(filter: &mut Filter, wire: &str) -> String {
        let mut out = String::new();
        for i in decode(wire) {
            match filter.from_client(&i) {
                Verdict::Forward | Verdict::ForwardUnrecorded => {
                    out.push_str(std::str::from_utf8(i.raw()).unwrap())
                }
                Verdict::Replace(b) => out.push_str(std::str::from_utf8(&b).unwrap()),
                Verdict::Drop => {}
            }
        }
        out
    }

    fn server(filter: &mut Filter, wire: &str) -> String {
        let mut out = String::new();
        for i in decode(wire) {
            match filter.from_server(&i) {
                Verdict::Forward | Verdict::ForwardUnrecorded => {
                    out.push_str(std::str::from_utf8(i.raw()).unwrap())
                }
                Verdict::Replace(b) => out.push_str(std::str::from_utf8(&b).unwrap()),
                Verdict::Drop => {}
            }
        }
        out
    }

    fn events(filter: &mut Filter) -> Vec<FilterEvent> {
        std::iter::from_fn(|| filter.poll_event()).collect()
    }

    fn policy(f: impl FnOnce(&mut ConnectionPolicy)) -> Filter {
        let mut p = ConnectionPolicy::default();
        f(&mut p);
        Filter::new(p)
    }

    fn clipboard(stream: u32, text: &str) -> String {
        let data = b64(text.as_bytes());
        format!(
            "9.clipboard,{}.{stream},10.text/plain;4.blob,{}.{stream},{}.{data};3.end,{}.{stream};",
            stream.to_string().len(),
            stream.to_string().len(),
            data.len(),
            stream.to_string().len()
        )
    }

    #[test]
    fn allows_and_audits_clipboard_both_ways() {
        let mut filter = Filter::new(ConnectionPolicy::default());
        let paste = clipboard(1, "from the user");
        assert_eq!(client(&mut filter, &paste), paste);
        let copy = clipboard(2, "from the target");
        assert_eq!(server(&mut filter, &copy), copy);
        let events = events(&mut filter);
        assert_eq!(events.len(), 2);
        let FilterEvent::Transferred {
            direction,
            kind,
            size,
            sha256,
            ..
        } = &events[0]
        else {
            panic!("{events:?}")
        };
        assert_eq!(
            (*direction, *kind, *size),
            (Direction::ToTarget, TransferKind::Clipboard, 13)
        );
        assert_eq!(*sha256, <[u8; 32]>::from(Sha256::digest(b"from the user")));
        assert!(matches!(
            events[1],
            FilterEvent::Transferred {
                direction: Direction::ToClient,
                ..
            }
        ));
    }

    #[test]
    fn disable_paste_blocks_only_the_client_direction() {
        let mut filter = policy(|p| p.disable_paste = true);
        assert_eq!(client(&mut filter, &clipboard(1, "secret")), "");
        let ack = String::from_utf8(filter.take_to_client().unwrap().to_vec()).unwrap();
        assert_eq!(ack, "3.ack,1.1,17.Paste is disabled,3.771;");
        let copy = clipboard(2, "allowed");
        assert_eq!(server(&mut filter, &copy), copy);
        assert!(matches!(
            events(&mut filter)[0],
            FilterEvent::Refused {
                what: Refused::Paste,
                direction: Direction::ToTarget,
                ..
            }
        ));
    }

    #[test]
    fn disable_copy_blocks_only_the_target_direction() {
        let mut filter = policy(|p| p.disable_copy = true);
        assert_eq!(server(&mut filter, &clipboard(3, "secret")), "");
        assert!(
            filter.take_to_server().is_none(),
            "guacd expects no ack for clipboard"
        );
        let paste = clipboard(1, "allowed");
        assert_eq!(client(&mut filter, &paste), paste);
    }

    #[test]
    fn upload_refusal_acks_the_client_and_drops_the_stream() {
        let mut filter = policy(|p| p.disable_upload = true);
        let data = b64(b"file contents");
        let wire = format!(
            "4.file,1.5,24.application/octet-stream,8.evil.exe;4.blob,1.5,{}.{data};3.end,1.5;",
            data.len()
        );
        assert_eq!(client(&mut filter, &wire), "");
        let ack = String::from_utf8(filter.take_to_client().unwrap().to_vec()).unwrap();
        assert!(
            ack.starts_with("3.ack,1.5,") && ack.ends_with("3.771;"),
            "{ack}"
        );
        // The stream is forgotten after its end: index 5 can be reused.
        assert!(filter.client_streams.is_empty());
        let FilterEvent::Refused { name, .. } = &events(&mut filter)[0] else {
            panic!()
        };
        assert_eq!(name.as_deref(), Some("evil.exe"));
        // Downloads still work.
        let wire = "4.file,1.7,10.text/plain,5.a.txt;4.blob,1.7,4.SGk=;3.end,1.7;";
        assert_eq!(server(&mut filter, wire), wire);
    }

    #[test]
    fn download_refusal_acks_the_target_and_hides_the_stream() {
        let mut filter = policy(|p| p.disable_download = true);
        let wire = "4.file,1.4,10.text/plain,10.report.pdf;4.blob,1.4,4.SGk=;";
        assert_eq!(server(&mut filter, wire), "");
        let ack = String::from_utf8(filter.take_to_server().unwrap().to_vec()).unwrap();
        assert!(
            ack.starts_with("3.ack,1.4,") && ack.ends_with("3.771;"),
            "{ack}"
        );
        // A stray client ack for the hidden stream does not reach the target.
        assert_eq!(client(&mut filter, "3.ack,1.4,2.OK,1.0;"), "");
        assert_eq!(server(&mut filter, "3.end,1.4;"), "");
        assert!(filter.server_streams.is_empty());
        // Directory listings are not downloads.
        let listing = format!(
            "4.body,1.1,1.9,{}.{STREAM_INDEX_MIMETYPE},1./;",
            STREAM_INDEX_MIMETYPE.len()
        );
        assert_eq!(server(&mut filter, &listing), listing);
        // Uploads still work.
        let upload = "4.file,1.2,10.text/plain,5.b.txt;4.blob,1.2,4.SGk=;3.end,1.2;";
        assert_eq!(client(&mut filter, upload), upload);
    }

    #[test]
    fn file_bodies_are_downloads() {
        let mut filter = policy(|p| p.disable_download = true);
        assert_eq!(
            server(&mut filter, "4.body,1.1,1.3,10.text/plain,6./a.txt;"),
            ""
        );
        assert!(filter.take_to_server().is_some());
    }

    #[test]
    fn read_only_drops_input_and_reports_once() {
        let mut filter = policy(|p| p.read_only = true);
        let wire = "5.mouse,2.10,2.20,1.1;3.key,5.65307,1.1;4.sync,4.1234;4.size,4.1024,3.768;";
        assert_eq!(
            client(&mut filter, wire),
            "4.sync,4.1234;4.size,4.1024,3.768;"
        );
        assert_eq!(client(&mut filter, "3.key,2.97,1.0;"), "");
        assert_eq!(events(&mut filter).len(), 1);
    }

    #[test]
    fn clipboard_is_cut_at_the_buffer_size() {
        let mut filter = policy(|p| p.clipboard_buffer_size = 4);
        let data = b64(b"abcdefgh");
        let wire = format!(
            "9.clipboard,1.1,10.text/plain;4.blob,1.1,{}.{data};4.blob,1.1,4.SGk=;3.end,1.1;",
            data.len()
        );
        let out = client(&mut filter, &wire);
        assert_eq!(
            out,
            format!(
                "9.clipboard,1.1,10.text/plain;4.blob,1.1,8.{};3.end,1.1;",
                b64(b"abcd")
            )
        );
        let FilterEvent::Transferred {
            size, truncated, ..
        } = &events(&mut filter)[0]
        else {
            panic!()
        };
        assert_eq!((*size, *truncated), (4, true));
    }

    #[test]
    fn only_display_parameters_may_change_at_runtime() {
        let mut filter = Filter::new(ConnectionPolicy::default());
        let ok = "4.argv,1.1,10.text/plain,9.font-size;";
        assert_eq!(client(&mut filter, ok), ok);
        assert_eq!(
            client(&mut filter, "4.argv,1.2,10.text/plain,8.hostname;"),
            ""
        );
        assert!(filter.take_to_client().is_some());
    }

    #[test]
    fn tracked_streams_are_bounded() {
        let mut filter = Filter::new(ConnectionPolicy::default());
        for stream in 0..MAX_TRACKED_STREAMS as u32 {
            let wire = format!(
                "9.clipboard,{}.{stream},10.text/plain;",
                stream.to_string().len()
            );
            assert_ne!(client(&mut filter, &wire), "");
        }
        assert_eq!(client(&mut filter, "9.clipboard,4.9999,10.text/plain;"), "");
        let ack = String::from_utf8(filter.take_to_client().unwrap().to_vec()).unwrap();
        assert!(ack.ends_with("3.797;"), "{ack}");
    }

    #[test]
    fn refused_streams_that_never_end_do_not_grow_memory() {
        let mut filter = policy(|p| p.disable_paste = true);
        for stream in 0..10_000u32 {
            let index = stream.to_string();
            let wire = format!("9.clipboard,{}.{index},10.text/plain;", index.len());
            assert_eq!(client(&mut filter, &wire), "");
            let ack = filter.take_to_client().expect("each refusal is acked");
            assert!(ack.ends_with(b"3.771;"));
        }
        assert!(filter.client_streams.len() <= MAX_TRACKED_STREAMS);
    }

    #[test]
    fn malformed_stream_instructions_are_dropped_not_fatal() {
        let mut filter = policy(|p| p.disable_paste = true);
        assert_eq!(
            client(&mut filter, "9.clipboard,1.x,10.text/plain;9.clipboard;"),
            ""
        );
        assert_eq!(
            client(&mut filter, "4.blob,1.x,4.SGk=;"),
            "4.blob,1.x,4.SGk=;"
        );
    }

    /// Random conversations from both sides under random policies: the filter never panics,
    /// its own replies stay small, its state stays bounded, and no switched-off direction
    /// ever lets its opening instruction through, whatever the stream numbers and order.
    #[test]
    fn random_conversations_keep_the_invariants() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let ops = [
            "clipboard",
            "file",
            "put",
            "blob",
            "end",
            "ack",
            "key",
            "mouse",
            "touch",
            "argv",
            "body",
            "pipe",
            "img",
            "sync",
            "get",
            "nop",
        ];
        let streams = ["0", "1", "2", "63", "64", "x", "-1", "4294967296", ""];
        for _ in 0..300 {
            let policy = ConnectionPolicy {
                disable_copy: next(2) == 0,
                disable_paste: next(2) == 0,
                disable_download: next(2) == 0,
                disable_upload: next(2) == 0,
                read_only: next(2) == 0,
                ..ConnectionPolicy::default()
            };
            let mut filter = Filter::new(policy.clone());
            for _ in 0..400 {
                let op = ops[next(ops.len() as u64) as usize];
                let argc = next(5) as usize;
                let mut args: Vec<String> = Vec::new();
                for i in 0..argc {
                    args.push(match (i, next(4)) {
                        (0 | 1, 0..=2) => streams[next(streams.len() as u64) as usize].to_owned(),
                        (_, 0) => b64(&vec![7u8; next(300_000) as usize]),
                        (_, 1) => "text/plain".to_owned(),
                        (_, 2) => "OK".to_owned(),
                        _ => "0".to_owned(),
                    });
                }
                let instruction = Instruction::new(op, &args);
                let from_client = next(2) == 0;
                let verdict = if from_client {
                    filter.from_client(&instruction)
                } else {
                    filter.from_server(&instruction)
                };
                let forwarded = verdict == Verdict::Forward;
                if forwarded && from_client {
                    assert!(!(policy.read_only && matches!(op, "key" | "mouse" | "touch")));
                    assert!(!(policy.disable_paste && op == "clipboard" && argc >= 2));
                    assert!(!(policy.disable_upload && op == "file" && argc >= 3));
                }
                if forwarded && !from_client {
                    assert!(!(policy.disable_copy && op == "clipboard"));
                    assert!(!(policy.disable_download && op == "file" && argc >= 3));
                }
                if let Verdict::Replace(bytes) = &verdict {
                    assert!(bytes.len() <= instruction.len());
                }
                for reply in [filter.take_to_client(), filter.take_to_server()]
                    .into_iter()
                    .flatten()
                {
                    assert!(reply.len() < 256, "{reply:?}");
                }
                while filter.poll_event().is_some() {}
                assert!(filter.client_streams.len() <= MAX_TRACKED_STREAMS);
                assert!(filter.server_streams.len() <= MAX_TRACKED_STREAMS);
            }
        }
    }
}
