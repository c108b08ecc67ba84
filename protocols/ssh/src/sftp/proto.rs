//! The SFTP version 3 wire format (draft-ietf-secsh-filexfer-02, what OpenSSH's
//! `sftp-server` speaks), client side, without I/O: requests are encoded into a buffer,
//! replies are decoded from whatever the channel delivered.
//!
//! Everything a server sends is hostile: a packet longer than [`MAX_PACKET`] is an error
//! (before anything is allocated for it), a `NAME` reply holds at most [`MAX_NAMES`] entries,
//! a handle at most [`MAX_HANDLE`] bytes, and every count and length is checked against the
//! bytes actually present. Names are bytes, not text: a file name that is not UTF-8 is
//! still a name.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol version asked for and required.
pub const VERSION: u32 = 3;
/// The longest packet accepted from the server (OpenSSH's own limit is 256 KiB).
pub const MAX_PACKET: usize = 256 * 1024 + 1024;
/// The most entries one `NAME` reply may hold (OpenSSH sends at most 100).
pub const MAX_NAMES: usize = 4096;
/// The longest handle accepted (the draft says 256 bytes).
pub const MAX_HANDLE: usize = 256;

/// Packet types.
mod kind {
    pub(super) const INIT: u8 = 1;
    pub(super) const VERSION: u8 = 2;
    pub(super) const OPEN: u8 = 3;
    pub(super) const CLOSE: u8 = 4;
    pub(super) const READ: u8 = 5;
    pub(super) const WRITE: u8 = 6;
    pub(super) const LSTAT: u8 = 7;
    pub(super) const OPENDIR: u8 = 11;
    pub(super) const READDIR: u8 = 12;
    pub(super) const REMOVE: u8 = 13;
    pub(super) const REALPATH: u8 = 16;
    pub(super) const STAT: u8 = 17;
    pub(super) const RENAME: u8 = 18;
    pub(super) const STATUS: u8 = 101;
    pub(super) const HANDLE: u8 = 102;
    pub(super) const DATA: u8 = 103;
    pub(super) const NAME: u8 = 104;
    pub(super) const ATTRS: u8 = 105;
    pub(super) const EXTENDED: u8 = 200;
    pub(super) const EXTENDED_REPLY: u8 = 201;
}

/// `SSH_FXF_*` open flags.
pub mod open {
    /// Open for reading.
    pub const READ: u32 = 0x01;
    /// Open for writing.
    pub const WRITE: u32 = 0x02;
    /// Create the file if it does not exist.
    pub const CREAT: u32 = 0x08;
    /// Truncate an existing file.
    pub const TRUNC: u32 = 0x10;
    /// Fail if the file exists (with `CREAT`; a symbolic link counts as existing).
    pub const EXCL: u32 = 0x20;
}

/// `SSH_FX_*` status codes.
pub mod status {
    /// Success.
    pub const OK: u32 = 0;
    /// End of file, or of a directory.
    pub const EOF: u32 = 1;
    /// No such file or directory.
    pub const NO_SUCH_FILE: u32 = 2;
    /// Permission denied.
    pub const PERMISSION_DENIED: u32 = 3;
    /// Any other failure.
    pub const FAILURE: u32 = 4;
    /// The server did not understand the request.
    pub const BAD_MESSAGE: u32 = 5;
    /// The operation is not supported.
    pub const OP_UNSUPPORTED: u32 = 8;
}

/// File type bits of `permissions` (`S_IFMT`).
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// File attributes, as far as the server sent them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Size in bytes.
    pub size: Option<u64>,
    /// Mode bits, with the file type.
    pub permissions: Option<u32>,
    /// Modification time, seconds since the epoch.
    pub mtime: Option<u32>,
}

/// What kind of file attributes describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A directory.
    Directory,
    /// A regular file.
    Regular,
    /// A symbolic link (from `LSTAT` or a directory listing).
    Symlink,
    /// Anything else (device, socket, FIFO), or the server did not say.
    Other,
}

impl Attrs {
    /// The file's type, from `permissions`.
    pub fn file_type(&self) -> FileType {
        match self.permissions.map(|p| p & S_IFMT) {
            Some(S_IFDIR) => FileType::Directory,
            Some(S_IFREG) => FileType::Regular,
            Some(S_IFLNK) => FileType::Symlink,
            _ => FileType::Other,
        }
    }
}

/// One entry of a `NAME` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// The name (a file name in a listing, a path from `REALPATH`).
    pub name: Bytes,
    /// `ls -l`'s line for it (OpenSSH's; other servers may send anything).
    pub long_name: Bytes,
    /// Its attributes.
    pub attrs: Attrs,
}

impl NameEntry {
    /// The link count from an OpenSSH long name (`-rw-r--r--    2 user group ...`), when it
    /// has one.
    pub fn link_count(&self) -> Option<u64> {
        let text = std::str::from_utf8(&self.long_name).ok()?;
        let mut fields = text.split_ascii_whitespace();
        let mode = fields.next()?;
        if mode.len() < 10 {
            return None;
        }
        fields.next()?.parse().ok()
    }
}

/// A reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `STATUS`: a code and the server's message.
    Status {
        /// `SSH_FX_*`.
        code: u32,
        /// The server's words (untrusted text, cut to 256 bytes).
        message: String,
    },
    /// `HANDLE`: an open file or directory.
    Handle(Bytes),
    /// `DATA`: bytes read.
    Data(Bytes),
    /// `NAME`: directory entries, or a resolved path.
    Name(Vec<NameEntry>),
    /// `ATTRS`.
    Attrs(Attrs),
    /// `EXTENDED_REPLY` (its payload is not interpreted).
    Extended,
}

/// A reply with the request id it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The id of the request it answers.
    pub id: u32,
    /// The reply.
    pub reply: Reply,
}

/// What the server sent that is not SFTP version 3 as this client speaks it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A packet longer than [`MAX_PACKET`].
    #[error("sftp packet of {0} bytes is too long")]
    TooLong(usize),
    /// A packet that ends before its fields do, or breaks a limit.
    #[error("malformed sftp packet ({0})")]
    Malformed(&'static str),
    /// A packet type a client never receives.
    #[error("unexpected sftp packet type {0}")]
    Unexpected(u8),
    /// The server speaks another version.
    #[error("the sftp server speaks version {0}, not 3")]
    Version(u32),
}

/// A request, encoded with its id.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// `OPEN`: path, `SSH_FXF_*` flags, permissions for a new file.
    Open {
        /// The path.
        path: &'a [u8],
        /// Flags.
        flags: u32,
        /// Mode of a file it creates.
        mode: u32,
    },
    /// `CLOSE` a handle.
    Close(&'a [u8]),
    /// `READ` `len` bytes at `offset`.
    Read {
        /// The handle.
        handle: &'a [u8],
        /// Where.
        offset: u64,
        /// How many bytes at most.
        len: u32,
    },
    /// `WRITE` `data` at `offset`.
    Write {
        /// The handle.
        handle: &'a [u8],
        /// Where.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// `LSTAT` (does not follow a final symbolic link).
    Lstat(&'a [u8]),
    /// `STAT` (follows symbolic links).
    Stat(&'a [u8]),
    /// `OPENDIR`.
    Opendir(&'a [u8]),
    /// `READDIR` the next entries.
    Readdir(&'a [u8]),
    /// `REMOVE` a file.
    Remove(&'a [u8]),
    /// `REALPATH`: the canonical path, symbolic links resolved.
    Realpath(&'a [u8]),
    /// `RENAME` (fails if the new name exists, by the draft).
    Rename(&'a [u8], &'a [u8]),
    /// OpenSSH's `posix-rename@openssh.com`: replaces the new name atomically.
    PosixRename(&'a [u8], &'a [u8]),
}

/// Encodes the client's `INIT` into `out`.
pub fn encode_init(out: &mut BytesMut) {
    out.put_u32(5);
    out.put_u8(kind::INIT);
    out.put_u32(VERSION);
}

impl Request<'_> {
    /// Appends the request, as request `id`, to `out`.
    pub fn encode(&self, id: u32, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        let (kind, strings): (u8, [&[u8]; 2]) = match *self {
            Self::Open { path, .. } => (kind::OPEN, [path, &[]]),
            Self::Close(h) => (kind::CLOSE, [h, &[]]),
            Self::Read { handle, .. } => (kind::READ, [handle, &[]]),
            Self::Write { handle, .. } => (kind::WRITE, [handle, &[]]),
            Self::Lstat(p) => (kind::LSTAT, [p, &[]]),
            Self::Stat(p) => (kind::STAT, [p, &[]]),
            Self::Opendir(p) => (kind::OPENDIR, [p, &[]]),
            Self::Readdir(h) => (kind::READDIR, [h, &[]]),
            Self::Remove(p) => (kind::REMOVE, [p, &[]]),
            Self::Realpath(p) => (kind::REALPATH, [p, &[]]),
            Self::Rename(a, b) => (kind::RENAME, [a, b]),
            Self::PosixRename(a, b) => (kind::EXTENDED, [a, b]),
        };
        out.put_u8(kind);
        out.put_u32(id);
        if let Self::PosixRename(..) = self {
            put_string(out, b"posix-rename@openssh.com");
        }
        put_string(out, strings[0]);
        match *self {
            Self::Open { flags, mode, .. } => {
                out.put_u32(flags);
                // Attributes: permissions only.
                out.put_u32(0x04);
                out.put_u32(mode);
            }
            Self::Read { offset, len, .. } => {
                out.put_u64(offset);
                out.put_u32(len);
            }
            Self::Write { offset, data, .. } => {
                out.put_u64(offset);
                put_string(out, data);
            }
            Self::Rename(..) | Self::PosixRename(..) => put_string(out, strings[1]),
            _ => {}
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

fn put_string(out: &mut BytesMut, s: &[u8]) {
    out.put_u32(s.len() as u32);
    out.put_slice(s);
}

/// Reassembles the server's packets from the channel's data.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: BytesMut,
    version_seen: bool,
}

/// What [`Decoder::poll`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The server's `VERSION` (the first packet).
    Version,
    /// A reply.
    Response(Response),
}

impl Decoder {
    /// A decoder expecting the server's `VERSION` first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes from the channel.
    pub fn feed(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next whole packet, `None` until one is complete.
    pub fn poll(&mut self) -> Result<Option<Decoded>, ProtocolError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([
            self.buffer[0],
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
        ]) as usize;
        if len > MAX_PACKET {
            return Err(ProtocolError::TooLong(len));
        }
        if len == 0 {
            return Err(ProtocolError::Malformed("empty packet"));
        }
        if self.buffer.len() < 4 + len {
            self.buffer.reserve(4 + len - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(4);
        let packet = self.buffer.split_to(len).freeze();
        let decoded = decode_packet(packet, self.version_seen)?;
        if decoded == Decoded::Version {
            self.version_seen = true;
        }
        Ok(Some(decoded))
    }
}

fn decode_packet(mut p: Bytes, version_seen: bool) -> Result<Decoded, ProtocolError> {
    let kind = p.get_u8();
    if !version_seen {
        if kind != kind::VERSION {
            return Err(ProtocolError::Unexpected(kind));
        }
        let version = get_u32(&mut p)?;
        // Extensions follow; none is needed (posix-rename is tried, and its failure handled).
        return if version == VERSION {
            Ok(Decoded::Version)
        } else {
            Err(ProtocolError::Version(version))
        };
    }
    let id = get_u32(&mut p)?;
    let reply = match kind {
        kind::STATUS => {
            let code = get_u32(&mut p)?;
            // The message and language tag are optional in practice (version 3 servers
            // before the draft's revision omit them).
            let message = if p.has_remaining() {
                let raw = get_string(&mut p)?;
                let raw = raw.get(..256).unwrap_or(&raw);
                String::from_utf8_lossy(raw)
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect()
            } else {
                String::new()
            };
            Reply::Status { code, message }
        }
        kind::HANDLE => {
            let handle = get_string(&mut p)?;
            if handle.len() > MAX_HANDLE || handle.is_empty() {
                return Err(ProtocolError::Malformed("handle length"));
            }
            Reply::Handle(handle)
        }
        kind::DATA => Reply::Data(get_string(&mut p)?),
        kind::NAME => {
            let count = get_u32(&mut p)? as usize;
            if count > MAX_NAMES {
                return Err(ProtocolError::Malformed("too many names"));
            }
            // Each entry takes at least 12 bytes: never allocate for more than are there.
            let mut entries = Vec::with_capacity(count.min(p.remaining() / 12));
            for _ in 0..count {
                let name = get_string(&mut p)?;
                let long_name = get_string(&mut p)?;
                let attrs = get_attrs(&mut p)?;
                entries.push(NameEntry {
                    name,
                    long_name,
                    attrs,
                });
            }
            Reply::Name(entries)
        }
        kind::ATTRS => Reply::Attrs(get_attrs(&mut p)?),
        kind::EXTENDED_REPLY => Reply::Extended,
        other => return Err(ProtocolError::Unexpected(other)),
    };
    Ok(Decoded::Response(Response { id, reply }))
}

fn get_u32(p: &mut Bytes) -> Result<u32, ProtocolError> {
    p.try_get_u32()
        .map_err(|_| ProtocolError::Malformed("truncated"))
}

fn get_u64(p: &mut Bytes) -> Result<u64, ProtocolError> {
    p.try_get_u64()
        .map_err(|_| ProtocolError::Malformed("truncated"))
}

fn get_string(p: &mut Bytes) -> Result<Bytes, ProtocolError> {
    let len = get_u32(p)? as usize;
    if len > p.remaining() {
        return Err(ProtocolError::Malformed("string beyond the packet"));
    }
    Ok(p.split_to(len))
}

fn get_attrs(p: &mut Bytes) -> Result<Attrs, ProtocolError> {
    let flags = get_u32(p)?;
    let mut attrs = Attrs::default();
    if flags & 0x01 != 0 {
        attrs.size = Some(get_u64(p)?);
    }
    if flags & 0x02 != 0 {
        get_u32(p)?;
        get_u32(p)?;
    }
    if flags & 0x04 != 0 {
        attrs.permissions = Some(get_u32(p)?);
    }
    if flags & 0x08 != 0 {
        get_u32(p)?;
        attrs.mtime = Some(get_u32(p)?);
    }
    if flags & 0x8000_0000 != 0 {
        let count = get_u32(p)?;
        for _ in 0..count {
            get_string(p)?;
            get_string(p)?;
        }
    }
    Ok(attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(kind);
        out.extend_from_slice(body);
        out
    }

    fn version() -> Vec<u8> {
        packet(kind::VERSION, &3u32.to_be_bytes())
    }

    #[test]
    fn requests_encode_as_the_draft_says() {
        let mut out = BytesMut::new();
        Request::Read {
            handle: b"h1",
            offset: 7,
            len: 32768,
        }
        .encode(9, &mut out);
        assert_eq!(
            &out[..],
            &[
                0, 0, 0, 23, 5, 0, 0, 0, 9, 0, 0, 0, 2, b'h', b'1', 0, 0, 0, 0, 0, 0, 0, 7, 0, 0,
                0x80, 0
            ]
        );
        out.clear();
        Request::PosixRename(b"a", b"b").encode(1, &mut out);
        assert_eq!(out[4], kind::EXTENDED);
        assert!(out.windows(24).any(|w| w == b"posix-rename@openssh.com"));
        assert_eq!(
            out.len() - 4,
            u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize
        );
    }

    #[test]
    fn replies_decode_across_any_split() {
        let mut wire = version();
        let mut data = 5u32.to_be_bytes().to_vec();
        data.extend_from_slice(&4u32.to_be_bytes());
        data.extend_from_slice(b"\xff\x00ab");
        wire.extend(packet(kind::DATA, &data));
        for split in 0..wire.len() {
            let mut decoder = Decoder::new();
            decoder.feed(&wire[..split]);
            let mut seen = Vec::new();
            while let Some(d) = decoder.poll().unwrap() {
                seen.push(d);
            }
            decoder.feed(&wire[split..]);
            while let Some(d) = decoder.poll().unwrap() {
                seen.push(d);
            }
            assert_eq!(seen.len(), 2, "split at {split}");
            assert_eq!(
                seen[1],
                Decoded::Response(Response {
                    id: 5,
                    reply: Reply::Data(Bytes::from_static(b"\xff\x00ab"))
                })
            );
        }
    }

    #[test]
    fn hostile_lengths_are_errors_not_allocations() {
        let mut decoder = Decoder::new();
        decoder.feed(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(decoder.poll(), Err(ProtocolError::TooLong(_))));

        // A NAME that claims a million entries in a few bytes.
        let mut decoder = Decoder::new();
        decoder.feed(&version());
        decoder.poll().unwrap();
        let mut body = 1u32.to_be_bytes().to_vec();
        body.extend_from_slice(&1_000_000u32.to_be_bytes());
        decoder.feed(&packet(kind::NAME, &body));
        assert_eq!(
            decoder.poll(),
            Err(ProtocolError::Malformed("too many names"))
        );

        let mut decoder = Decoder::new();
        decoder.feed(&version());
        decoder.poll().unwrap();
        let mut body = 1u32.to_be_bytes().to_vec();
        body.extend_from_slice(&2u32.to_be_bytes());
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        decoder.feed(&packet(kind::NAME, &body));
        assert!(decoder.poll().is_err());
    }

    #[test]
    fn the_first_packet_must_be_version_3() {
        let mut decoder = Decoder::new();
        decoder.feed(&packet(kind::VERSION, &6u32.to_be_bytes()));
        assert_eq!(decoder.poll(), Err(ProtocolError::Version(6)));
        let mut decoder = Decoder::new();
        decoder.feed(&packet(kind::STATUS, &[0; 8]));
        assert!(decoder.poll().is_err());
    }

    #[test]
    fn link_counts_come_from_openssh_long_names() {
        let entry = |long: &'static [u8]| NameEntry {
            name: Bytes::new(),
            long_name: Bytes::from_static(long),
            attrs: Attrs::default(),
        };
        assert_eq!(
            entry(b"-rw-r--r--    2 alice    alice          12 Dec  6 12:00 f").link_count(),
            Some(2)
        );
        assert_eq!(entry(b"f").link_count(), None);
        assert_eq!(entry(b"").link_count(), None);
    }
}
