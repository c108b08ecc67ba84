//! Guacamole file transfer for the tests and benchmarks, as a stock client does it: the
//! filesystem object's `get` (listings and downloads, each blob acknowledged) and `file`
//! streams (uploads, blobs sent ahead of the server's `ack`s up to a window, as
//! guacamole-common-js's `ArrayBufferWriter` sends them). Other instructions (the terminal's
//! frames) are passed to a callback, so a test can keep drawing its screen.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use bytes::BytesMut;
use sha2::{Digest, Sha256};
use zt_guac::{Instruction, opcode};

use crate::PatternStream;
use crate::guac_client::GuacClient;

/// Mimetype of directory listings.
pub const STREAM_INDEX: &str = "application/vnd.glyptodon.guacamole.stream-index+json";
/// Raw bytes per upload blob (guacamole-common-js's `DEFAULT_BLOB_LENGTH`).
pub const BLOB: usize = 6048;

/// A refusal or failure the server reported in an `ack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The `ack`'s message.
    pub message: String,
    /// Its status.
    pub status: u32,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (status {:#06x})", self.message, self.status)
    }
}

/// What a finished transfer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Bytes.
    pub size: u64,
    /// Their SHA-256.
    pub sha256: [u8; 32],
}

/// File transfers over a connected client.
pub struct Files<'a> {
    client: &'a mut GuacClient,
    /// Called with every instruction that is not the transfer's.
    pub other: Box<dyn FnMut(&Instruction) + Send + 'a>,
    /// The longest wait for any one instruction.
    pub step: Duration,
}

impl<'a> Files<'a> {
    /// Transfers over `client`.
    pub fn new(client: &'a mut GuacClient) -> Self {
        Self {
            client,
            other: Box::new(|_| {}),
            step: Duration::from_secs(30),
        }
    }

    /// Waits for the server's `filesystem` instruction: (object, name).
    pub async fn filesystem(&mut self) -> anyhow::Result<(String, String)> {
        loop {
            let instruction = self.next().await?;
            if instruction.is(opcode::FILESYSTEM) {
                return Ok((
                    instruction.arg(0).unwrap_or_default().to_owned(),
                    instruction.arg(1).unwrap_or_default().to_owned(),
                ));
            }
            (self.other)(&instruction);
        }
    }

    async fn next(&mut self) -> anyhow::Result<Instruction> {
        match self.client.next(self.step).await? {
            Some(instruction) => Ok(instruction),
            None => bail!("the channel closed"),
        }
    }

    /// Lists `path`: each entry's path and mimetype. `Ok(None)` when the server sent no
    /// body within `patience` (a refusal, as guacd makes them).
    pub async fn list(
        &mut self,
        path: &str,
        patience: Duration,
    ) -> anyhow::Result<Option<BTreeMap<String, String>>> {
        let mut json = Vec::new();
        let Some((mimetype, _)) = self
            .get(path, patience, |data| json.extend_from_slice(data))
            .await?
        else {
            return Ok(None);
        };
        if mimetype != STREAM_INDEX {
            bail!("{path} is not a directory ({mimetype})");
        }
        Ok(Some(
            serde_json::from_slice(&json).context("the listing is a JSON object of strings")?,
        ))
    }

    /// Downloads `path`, handing its bytes to `sink`. `Ok(None)` when the server sent no body
    /// within `patience`.
    pub async fn download(
        &mut self,
        path: &str,
        patience: Duration,
        sink: impl FnMut(&[u8]),
    ) -> anyhow::Result<Option<Moved>> {
        Ok(self
            .get(path, patience, sink)
            .await?
            .map(|(_, moved)| moved))
    }

    /// Waits up to `patience` for a `file` stream from the server (a download it starts
    /// itself, as the remote browser does), accepts it and hands its bytes to `sink`: the
    /// file's name and what it carried. `Ok(None)` when none came.
    pub async fn receive_file(
        &mut self,
        patience: Duration,
        sink: impl FnMut(&[u8]),
    ) -> anyhow::Result<Option<(String, Moved)>> {
        let Some((stream, name)) = self
            .opened(patience, |i| {
                i.is(opcode::FILE).then(|| (i.arg(0), i.arg(2)))
            })
            .await?
        else {
            return Ok(None);
        };
        let moved = self.accept(&stream, sink).await?;
        Ok(Some((name, moved)))
    }

    /// `get` on object 0: the body's mimetype and what it carried.
    async fn get(
        &mut self,
        path: &str,
        patience: Duration,
        sink: impl FnMut(&[u8]),
    ) -> anyhow::Result<Option<(String, Moved)>> {
        self.client
            .send(&Instruction::new(opcode::GET, &["0", path]))
            .await?;
        let Some((stream, mimetype)) = self
            .opened(patience, |i| {
                (i.is(opcode::BODY) && i.arg(3) == Some(path)).then(|| (i.arg(1), i.arg(2)))
            })
            .await?
        else {
            return Ok(None);
        };
        let moved = self.accept(&stream, sink).await?;
        Ok(Some((mimetype, moved)))
    }

    /// Waits up to `patience` for the instruction that opens a stream (`pick` gives its
    /// stream index and one more argument); `Ok(None)` when none came.
    async fn opened(
        &mut self,
        patience: Duration,
        pick: impl for<'i> Fn(&'i Instruction) -> Option<(Option<&'i str>, Option<&'i str>)>,
    ) -> anyhow::Result<Option<(String, String)>> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let instruction = match self.client.next(left).await {
                Ok(Some(instruction)) => instruction,
                Ok(None) => bail!("the channel closed"),
                Err(_) if tokio::time::Instant::now() >= deadline => return Ok(None),
                Err(error) => return Err(error),
            };
            if let Some((a, b)) = pick(&instruction) {
                return Ok(Some((
                    a.unwrap_or_default().to_owned(),
                    b.unwrap_or_default().to_owned(),
                )));
            }
            (self.other)(&instruction);
        }
    }

    /// Accepts server stream `stream` and acknowledges its blobs until its `end`.
    async fn accept(&mut self, stream: &str, mut sink: impl FnMut(&[u8])) -> anyhow::Result<Moved> {
        self.client
            .send(&Instruction::new(opcode::ACK, &[stream, "OK", "0"]))
            .await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut acks = BytesMut::new();
        let mut instruction = self.next().await?;
        loop {
            if instruction.arg(0) == Some(stream) && instruction.is(opcode::BLOB) {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(instruction.arg(1).unwrap_or_default())
                    .context("a blob is base64")?;
                hasher.update(&data);
                size += data.len() as u64;
                sink(&data);
                zt_guac::encode(opcode::ACK, &[stream, "OK", "0"], &mut acks);
            } else if instruction.arg(0) == Some(stream) && instruction.is(opcode::END) {
                break;
            } else {
                (self.other)(&instruction);
            }
            // Acknowledge everything decoded so far at once.
            instruction = match self.client.buffered().await? {
                Some(instruction) => instruction,
                None => {
                    if !acks.is_empty() {
                        self.client.send_raw(acks.split().freeze()).await?;
                    }
                    self.next().await?
                }
            };
        }
        if !acks.is_empty() {
            self.client.send_raw(acks.split().freeze()).await?;
        }
        Ok(Moved {
            size,
            sha256: hasher.finalize().into(),
        })
    }

    /// Uploads what `source` produces (it fills the buffer and returns how much it wrote; 0
    /// at the end) as a `file` stream named `name`, with at most `window` bytes unacknowledged.
    /// `Err(Refused)` inside `Ok` when the server refused or failed the upload.
    pub async fn upload(
        &mut self,
        stream: u32,
        name: &str,
        window: usize,
        source: impl FnMut(&mut [u8]) -> usize,
    ) -> anyhow::Result<Result<Moved, Refused>> {
        let open = Instruction::new(
            opcode::FILE,
            &[
                stream.to_string().as_str(),
                "application/octet-stream",
                name,
            ],
        );
        self.stream_upload(stream, open, window, source).await
    }

    /// The same through the filesystem object's `put` to `path`.
    pub async fn put(
        &mut self,
        stream: u32,
        path: &str,
        window: usize,
        source: impl FnMut(&mut [u8]) -> usize,
    ) -> anyhow::Result<Result<Moved, Refused>> {
        let open = Instruction::new(
            opcode::PUT,
            &[
                "0",
                stream.to_string().as_str(),
                "application/octet-stream",
                path,
            ],
        );
        self.stream_upload(stream, open, window, source).await
    }

    async fn stream_upload(
        &mut self,
        stream: u32,
        open: Instruction,
        window: usize,
        mut source: impl FnMut(&mut [u8]) -> usize,
    ) -> anyhow::Result<Result<Moved, Refused>> {
        let index = stream.to_string();
        self.client.send(&open).await?;
        // The first ack opens the stream (guacamole-common-js waits for it too).
        if let Err(refused) = self.ack(&index).await? {
            return Ok(Err(refused));
        }
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut unacked: std::collections::VecDeque<usize> = Default::default();
        let mut unacked_bytes = 0usize;
        let mut buffer = vec![0u8; BLOB];
        let mut out = BytesMut::new();
        let mut done = false;
        while !done || !unacked.is_empty() {
            while !done && unacked_bytes + BLOB <= window {
                let n = source(&mut buffer);
                if n == 0 {
                    done = true;
                    break;
                }
                hasher.update(&buffer[..n]);
                size += n as u64;
                let data = base64::engine::general_purpose::STANDARD.encode(&buffer[..n]);
                zt_guac::encode(opcode::BLOB, &[index.as_str(), &data], &mut out);
                unacked.push_back(n);
                unacked_bytes += n;
                if out.len() >= 56 * 1024 {
                    self.client.send_raw(out.split().freeze()).await?;
                }
            }
            if !out.is_empty() {
                self.client.send_raw(out.split().freeze()).await?;
            }
            if unacked.is_empty() {
                break;
            }
            if let Err(refused) = self.ack(&index).await? {
                return Ok(Err(refused));
            }
            if let Some(n) = unacked.pop_front() {
                unacked_bytes -= n;
            }
        }
        self.client
            .send(&Instruction::new(opcode::END, &[index.as_str()]))
            .await?;
        // The last ack says the file is in place (or why not).
        if let Err(refused) = self.ack(&index).await? {
            return Ok(Err(refused));
        }
        Ok(Ok(Moved {
            size,
            sha256: hasher.finalize().into(),
        }))
    }

    /// Waits for the next `ack` of `stream`.
    async fn ack(&mut self, stream: &str) -> anyhow::Result<Result<(), Refused>> {
        loop {
            let instruction = self.next().await?;
            if instruction.is(opcode::ACK) && instruction.arg(0) == Some(stream) {
                let status: u32 = instruction.arg(2).and_then(|s| s.parse().ok()).unwrap_or(0);
                return Ok(if status == 0 {
                    Ok(())
                } else {
                    Err(Refused {
                        message: instruction.arg(1).unwrap_or_default().to_owned(),
                        status,
                    })
                });
            }
            (self.other)(&instruction);
        }
    }
}

/// A source of `total` bytes of [`PatternStream`] `seed`, for [`Files::upload`] (the
/// buffers it is given are multiples of 8 bytes, so the bytes do not depend on them).
pub fn pattern_source(seed: u64, total: u64) -> impl FnMut(&mut [u8]) -> usize {
    let mut pattern = PatternStream::new(seed);
    let mut left = total;
    move |buffer: &mut [u8]| {
        let n = (buffer.len() as u64).min(left) as usize;
        pattern.fill(&mut buffer[..n]);
        left -= n as u64;
        n
    }
}

/// Writes `total` bytes of [`PatternStream`] `seed` to `path`; returns their SHA-256.
pub fn write_pattern(path: &std::path::Path, seed: u64, total: u64) -> std::io::Result<[u8; 32]> {
    use std::io::Write;
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut source = pattern_source(seed, total);
    let mut buffer = vec![0u8; 1 << 20];
    let mut hasher = Sha256::new();
    loop {
        let n = source(&mut buffer);
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        file.write_all(&buffer[..n])?;
    }
    file.flush()?;
    Ok(hasher.finalize().into())
}

/// SHA-256 of a file on disk.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buffer[..n]);
    }
}
