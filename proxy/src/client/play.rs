//! `ztproxy recording play FILE`: plays a recording in the browser. The recording is opened
//! and decrypted in this process with the key given to the command, and served to the player
//! page ([`super::local`]) as a Guacamole session recording; the browser never holds the key.
//!
//! * A graphical recording is served as `recording export --format guac` writes it, and its
//!   key frames (from the recording's seek index) are listed for the page's seek bar, at the
//!   position the player gives them (milliseconds after the first frame).
//! * A text recording (typescript) is rendered by ztproxy's own terminal — the one native
//!   SSH sessions use — into Guacamole drawing instructions, frame by frame at the recorded
//!   times, so it plays in the same page.
//!
//! What is served is held in memory, at most [`MAX_PLAYBACK`] bytes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use bytes::BytesMut;
use zt_guac::{Decoder, Instruction, Limits, opcode};
use zt_recorder::export;
use zt_recorder::reader::EventRange;
use zt_recorder::{Event, RecordingKind};
use zt_recorder_cli::KeyArgs;
use zt_terminal::{Terminal, TerminalSettings};

use super::local::{self, App};

/// The most a recording may take once exported for playing.
pub const MAX_PLAYBACK: usize = 512 * 1024 * 1024;
/// The display a typescript is played in when it never says its size (80 × 24 cells).
const DEFAULT_CELLS: (u16, u16) = (80, 24);
/// Resolution typescripts are rendered at.
const DPI: u32 = 96;

/// A recording ready to be played.
#[derive(Debug)]
pub struct Playback {
    /// `graphical` or `typescript`.
    pub kind: &'static str,
    /// The Guacamole session recording the page plays.
    pub guac: Bytes,
    /// Key frames, in milliseconds after the first frame.
    pub keyframes: Vec<u64>,
    /// Milliseconds from the first frame to the last.
    pub duration: u64,
}

/// Limits what the export may write.
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_PLAYBACK {
            return Err(std::io::Error::other(format!(
                "the recording is larger than {} MiB once exported; export it with `ztproxy recording export` instead",
                MAX_PLAYBACK >> 20
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Playback {
    /// Opens, verifies and prepares `path` (blocking: run it off the async threads).
    pub fn load(path: &Path, key: &KeyArgs) -> anyhow::Result<Self> {
        let mut reader = zt_recorder_cli::open_unlocked(path, key)?;
        match reader.header().kind {
            RecordingKind::Graphical => {
                let mut out = Capped(Vec::new());
                {
                    let mut events = reader.events(EventRange::all())?;
                    export::export_guac(&mut events, &mut out)
                        .context("exporting the recording")?;
                }
                let (keyframes, duration) = {
                    let mut events = reader.events(EventRange::all())?;
                    let mut timeline = Timeline::default();
                    for event in events.by_ref() {
                        match event?.event {
                            Event::Instructions(bytes) => timeline.instructions(&bytes),
                            Event::KeyFrame(_) => timeline.key_frame(),
                            _ => {}
                        }
                    }
                    timeline.finish()
                };
                Ok(Self {
                    kind: "graphical",
                    guac: Bytes::from(out.0),
                    keyframes,
                    duration,
                })
            }
            RecordingKind::Typescript => {
                let size = reader.header().size;
                let mut events = reader.events(EventRange::all())?;
                let mut render = TypescriptRender::new(size.width, size.height);
                for event in events.by_ref() {
                    let event = event?;
                    render.event(event.at, &event.event)?;
                }
                let (guac, duration) = render.finish()?;
                Ok(Self {
                    kind: "typescript",
                    guac,
                    keyframes: Vec::new(),
                    duration,
                })
            }
        }
    }
}

/// Where a graphical recording's key frames fall on the player's timeline, which counts from
/// the first `sync`. The proxy takes a key frame at a frame's end, so it shows the display as
/// of the last `sync` before it.
#[derive(Default)]
struct Timeline {
    decoder: Option<Decoder>,
    first: Option<u64>,
    /// The latest `sync` seen.
    latest: Option<u64>,
    last: u64,
    keyframes: Vec<u64>,
}

impl Timeline {
    fn instructions(&mut self, bytes: &[u8]) {
        let decoder = self
            .decoder
            .get_or_insert_with(|| Decoder::new(Limits::default()));
        decoder.feed(bytes);
        loop {
            match decoder.poll_instruction() {
                Ok(Some(instruction)) if instruction.is(opcode::SYNC) => {
                    let Some(at) = instruction.arg(0).and_then(|t| t.parse::<u64>().ok()) else {
                        continue;
                    };
                    self.first.get_or_insert(at);
                    self.latest = Some(at);
                    self.last = self.last.max(at);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    // Not a stream the timeline can follow: no marks, the player still seeks.
                    self.decoder = Some(Decoder::new(Limits::default()));
                    break;
                }
            }
        }
    }

    fn key_frame(&mut self) {
        if let (Some(first), Some(latest)) = (self.first, self.latest) {
            self.keyframes.push(latest.saturating_sub(first));
        }
    }

    fn finish(mut self) -> (Vec<u64>, u64) {
        self.keyframes.dedup();
        let first = self.first.unwrap_or(0);
        (self.keyframes, self.last.saturating_sub(first))
    }
}

/// A typescript drawn by the terminal at its recorded times.
struct TypescriptRender {
    terminal: Terminal,
    epoch: Instant,
    out: Vec<u8>,
    /// When the last event happened.
    last: Duration,
    /// The first and last frames' stamps, in milliseconds after `epoch`.
    first_frame: Option<u64>,
    last_frame: u64,
}

impl TypescriptRender {
    fn new(cols: u16, rows: u16) -> Self {
        let epoch = Instant::now();
        let probe = Terminal::new(TerminalSettings::default(), 800, 600, DPI, epoch);
        let cell = probe.cell_size();
        let (cols, rows) = match (cols, rows) {
            (0, _) | (_, 0) => DEFAULT_CELLS,
            size => size,
        };
        let terminal = Terminal::new(
            TerminalSettings::default(),
            u32::from(cols) * cell.width,
            u32::from(rows) * cell.height,
            DPI,
            epoch,
        );
        Self {
            terminal,
            epoch,
            out: Vec::new(),
            last: Duration::ZERO,
            first_frame: None,
            last_frame: 0,
        }
    }

    /// Draws what is due by `at`. A frame is stamped no earlier than the last event it shows,
    /// so the player shows output at the moment it was recorded.
    fn drain_until(&mut self, at: Instant) -> anyhow::Result<()> {
        while let Some(due) = self.terminal.poll_timeout() {
            if due > at {
                break;
            }
            if !self.frame_at(due.max(self.epoch + self.last))? {
                break;
            }
        }
        Ok(())
    }

    /// Takes the terminal's frame at `stamp`, if it has one.
    fn frame_at(&mut self, stamp: Instant) -> anyhow::Result<bool> {
        let Some(frame) = self.terminal.poll_client(stamp) else {
            return Ok(false);
        };
        self.push(&frame)?;
        let ms = u64::try_from(stamp.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        self.first_frame.get_or_insert(ms);
        self.last_frame = ms;
        Ok(true)
    }

    fn push(&mut self, frame: &BytesMut) -> anyhow::Result<()> {
        if self.out.len() + frame.len() > MAX_PLAYBACK {
            bail!(
                "the recording is larger than {} MiB once rendered; export it with `ztproxy recording export` instead",
                MAX_PLAYBACK >> 20
            );
        }
        self.out.extend_from_slice(frame);
        Ok(())
    }

    fn event(&mut self, at: Duration, event: &Event) -> anyhow::Result<()> {
        let now = self.epoch + at;
        self.drain_until(now)?;
        match event {
            Event::Output(bytes) => self.terminal.handle_target(bytes),
            Event::Resize(size) if size.width > 0 && size.height > 0 => {
                let cell = self.terminal.cell_size();
                let width = u32::from(size.width) * cell.width;
                let height = u32::from(size.height) * cell.height;
                self.terminal.handle_client(&Instruction::new(
                    opcode::SIZE,
                    &[width.to_string(), height.to_string()],
                ));
            }
            _ => {}
        }
        // Replies meant for the target go nowhere.
        while self.terminal.poll_target().is_some() {}
        while self.terminal.poll_event().is_some() {}
        self.last = at;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<(Bytes, u64)> {
        let end = self.epoch + self.last + zt_terminal::FRAME_INTERVAL * 2;
        self.drain_until(end)?;
        self.frame_at(end)?;
        let duration = self
            .last_frame
            .saturating_sub(self.first_frame.unwrap_or(0));
        Ok((Bytes::from(self.out), duration))
    }
}

/// The player's server.
pub struct PlayerApp {
    playback: Playback,
}

impl PlayerApp {
    /// A server for `playback`.
    pub fn new(playback: Playback) -> Self {
        Self { playback }
    }
}

impl App for PlayerApp {
    const INDEX: &'static str = "player.html";

    async fn handle(&self, method: &Method, path: &str, _body: Bytes) -> Option<Response> {
        if method != Method::GET {
            return Some(local::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "method not allowed",
            ));
        }
        match path {
            "info" => Some(local::json(
                StatusCode::OK,
                &serde_json::json!({
                    "kind": self.playback.kind,
                    "keyframes": self.playback.keyframes,
                    "duration": self.playback.duration,
                }),
            )),
            "recording.guac" => Some(local::bytes(
                "application/octet-stream",
                self.playback.guac.clone(),
            )),
            _ => None,
        }
    }
}
