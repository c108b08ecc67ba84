//! A Guacamole client for the tests: it speaks to ztproxy over a data channel or QUIC stream
//! exactly as a stock client (guacamole-common-js) does: the handshake (`select`, `size`,
//! `audio`, `video`, `image`, `timezone`, `name`, `connect`, then `ready`), then the display
//! protocol, answering `sync`s unless told not to.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use zt_guac::{Decoder, Instruction, Limits, opcode};
use zt_proxy::client::session::ClientSession;
use zt_proxy::transport::stream::{StreamReader, StreamWriter};

/// What the client sends during the handshake.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// What it selects (ztproxy ignores it).
    pub select: String,
    /// `size` width, height, dpi.
    pub size: (u32, u32, u32),
    /// `image` mimetypes.
    pub image: Vec<String>,
    /// `timezone`.
    pub timezone: String,
    /// `name`.
    pub name: String,
    /// Values the client puts in `connect` after the version (ztproxy must ignore them).
    pub connect_values: Vec<String>,
}

impl Default for Handshake {
    fn default() -> Self {
        Self {
            select: "rdp".into(),
            size: (1280, 720, 96),
            image: vec!["image/png".into(), "image/jpeg".into(), "image/webp".into()],
            timezone: "Europe/Berlin".into(),
            name: "alice".into(),
            connect_values: Vec::new(),
        }
    }
}

/// A connected Guacamole client.
pub struct GuacClient {
    reader: StreamReader,
    writer: StreamWriter,
    decoder: Decoder,
    /// Answer every `sync` from the server (as browsers do after rendering a frame).
    pub answer_syncs: bool,
    /// The `args` ztproxy offered.
    pub args: Vec<String>,
    /// The id in `ready`.
    pub ready_id: String,
}

impl GuacClient {
    /// Opens the session's Guacamole channel and performs the handshake.
    pub async fn connect(session: &ClientSession, handshake: &Handshake) -> anyhow::Result<Self> {
        let mut client = Self::start(session, handshake).await?;
        let ready = client
            .expect(opcode::READY, Duration::from_secs(30))
            .await?;
        client.ready_id = ready.arg(0).unwrap_or_default().to_owned();
        Ok(client)
    }

    /// Opens the channel and sends the handshake up to `connect`, without waiting for
    /// `ready` (for tests of what happens instead).
    pub async fn start(session: &ClientSession, handshake: &Handshake) -> anyhow::Result<Self> {
        let stream = session
            .open()
            .await
            .context("opening the Guacamole channel")?;
        let (reader, writer) = stream.split();
        let mut client = Self {
            reader,
            writer,
            decoder: Decoder::new(Limits::default()),
            answer_syncs: true,
            args: Vec::new(),
            ready_id: String::new(),
        };
        client
            .send(&Instruction::new(opcode::SELECT, &[&handshake.select]))
            .await?;
        let args = client.expect(opcode::ARGS, Duration::from_secs(20)).await?;
        client.args = args.args().map(str::to_owned).collect();
        let (w, h, dpi) = handshake.size;
        client
            .send(&Instruction::new(
                opcode::SIZE,
                &[w.to_string(), h.to_string(), dpi.to_string()],
            ))
            .await?;
        client
            .send(&Instruction::new(opcode::AUDIO, &[] as &[&str]))
            .await?;
        client
            .send(&Instruction::new(opcode::VIDEO, &[] as &[&str]))
            .await?;
        client
            .send(&Instruction::new(opcode::IMAGE, &handshake.image))
            .await?;
        client
            .send(&Instruction::new(opcode::TIMEZONE, &[&handshake.timezone]))
            .await?;
        client
            .send(&Instruction::new(opcode::NAME, &[&handshake.name]))
            .await?;
        let mut values = vec!["VERSION_1_5_0".to_owned()];
        values.extend(handshake.connect_values.iter().cloned());
        client
            .send(&Instruction::new(opcode::CONNECT, &values))
            .await?;
        Ok(client)
    }

    /// Sends one instruction.
    pub async fn send(&mut self, instruction: &Instruction) -> anyhow::Result<()> {
        self.send_raw(instruction.raw().clone()).await
    }

    /// Sends raw bytes (may be malformed, on purpose).
    pub async fn send_raw(&mut self, bytes: impl Into<Bytes>) -> anyhow::Result<()> {
        self.writer
            .send(bytes.into())
            .await
            .map_err(|e| anyhow::anyhow!("send: {e}"))
    }

    /// The next instruction from ztproxy, answering `sync` when [`Self::answer_syncs`];
    /// `None` when the channel closed.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Option<Instruction>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(instruction) = self.decoder.poll_instruction()? {
                if self.answer_syncs && instruction.is(opcode::SYNC) {
                    let reply =
                        Instruction::new(opcode::SYNC, &[instruction.arg(0).unwrap_or("0")]);
                    // Best effort, as a browser answers: a peer that closed after its last
                    // frame does not hear the answer, and the frame is still delivered (the
                    // close is seen on the next receive).
                    let _ = self.send(&reply).await;
                }
                return Ok(Some(instruction));
            }
            let message = tokio::time::timeout_at(deadline, self.reader.recv())
                .await
                .context("timed out waiting for an instruction")?
                .map_err(|e| anyhow::anyhow!("receive: {e}"))?;
            match message {
                Some(bytes) => self.decoder.feed(&bytes),
                None => return Ok(None),
            }
        }
    }

    /// The next instruction already received and decoded, without waiting (syncs are
    /// answered as by [`Self::next`]).
    pub async fn buffered(&mut self) -> anyhow::Result<Option<Instruction>> {
        let Some(instruction) = self.decoder.poll_instruction()? else {
            return Ok(None);
        };
        if self.answer_syncs && instruction.is(opcode::SYNC) {
            let reply = Instruction::new(opcode::SYNC, &[instruction.arg(0).unwrap_or("0")]);
            // Best effort, as in `next`.
            let _ = self.send(&reply).await;
        }
        Ok(Some(instruction))
    }

    /// Reads until an instruction with `op` arrives (others are discarded).
    pub async fn expect(&mut self, op: &str, timeout: Duration) -> anyhow::Result<Instruction> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Some(instruction) if instruction.is(op) => return Ok(instruction),
                Some(_) => {}
                None => bail!("channel closed while waiting for {op}"),
            }
        }
    }

    /// Reads everything until the channel closes or `timeout`; returns the instructions.
    pub async fn collect_until_closed(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Instruction>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Some(instruction) => all.push(instruction),
                None => return Ok(all),
            }
        }
    }

    /// Encodes one instruction into bytes (helper for building streams).
    pub fn encode(op: &str, args: &[&str]) -> Bytes {
        let mut out = BytesMut::new();
        zt_guac::encode(op, args, &mut out);
        out.freeze()
    }
}
