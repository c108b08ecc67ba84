//! Export to the formats other tools play: `script` typescript + timing (`scriptreplay`),
//! asciicast v2 (`asciinema`), plain text, and a Guacamole recording file (the format of
//! guacd's `recording-path`, which the Guacamole session player and `guacenc` read) holding
//! the instruction stream the user saw (see [`export_guac`] for its one change).
//!
//! Each exporter is a loop over [`Events`] with one arm per event type, like guacenc's
//! instruction handlers; events a format cannot express are skipped (input and resizes in a
//! typescript, gap markers everywhere).

use std::io::{self, Write};
use std::time::Duration;

use crate::error::ExportError;
use crate::format::{Event, Header, RecordedEvent, RecordingKind};
use crate::reader::{Events, EventsEnd};

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// `script`-compatible typescript plus a classic timing file (output only).
    Typescript,
    /// asciicast v2 (output, input when recorded, resizes).
    Asciicast,
    /// Terminal output as plain text, escape sequences removed.
    Text,
    /// A Guacamole recording file: the instruction stream the user saw ([`export_guac`]).
    Guac,
}

impl ExportFormat {
    /// The recording kind the format applies to.
    pub fn kind(self) -> RecordingKind {
        match self {
            Self::Guac => RecordingKind::Graphical,
            Self::Typescript | Self::Asciicast | Self::Text => RecordingKind::Typescript,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Typescript => "typescript",
            Self::Asciicast => "asciicast",
            Self::Text => "text",
            Self::Guac => "guac",
        }
    }

    /// Fails unless the format applies to `kind`.
    pub fn check_kind(self, kind: RecordingKind) -> Result<(), ExportError> {
        if kind == self.kind() {
            Ok(())
        } else {
            Err(ExportError::WrongKind {
                format: self.name(),
                needs: self.kind(),
                kind,
            })
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportSummary {
    /// Events written.
    pub events: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// How the events ended; [`EventsEnd::Truncated`] for an unfinalised recording.
    pub end: Option<EventsEnd>,
    /// How a Guacamole export began ([`export_guac`] only).
    pub guac_start: Option<GuacStart>,
}

/// Writes a typescript (`data`) and its classic timing file (`timing`): one line
/// `<seconds since the previous output> <byte count>` per output event. `scriptreplay`
/// skips the first line of the typescript, so it starts with the `Script started on ...`
/// line `script` writes. `from` is where the range starts (zero for a whole recording);
/// the first delay is measured from it.
pub fn export_typescript<R: io::Read + io::Seek>(
    events: &mut Events<'_, R>,
    from: Duration,
    data: &mut dyn Write,
    timing: &mut dyn Write,
) -> Result<ExportSummary, ExportError> {
    ExportFormat::Typescript.check_kind(events.header().kind)?;
    let header = events.header().clone();
    let start = header.start_unix_micros.saturating_add(duration_us(from));
    let size = display_size(&header);
    writeln!(
        data,
        "Script started on {} [COMMAND=\"{}\" COLUMNS=\"{}\" LINES=\"{}\"]",
        script_date(start),
        sanitize(&title(&header)),
        size.0,
        size.1
    )
    .map_err(ExportError::Io)?;
    let mut previous = duration_us(from);
    let mut summary = ExportSummary::default();
    for event in events.by_ref() {
        let RecordedEvent { at, event } = event?;
        let Event::Output(bytes) = event else {
            continue;
        };
        if bytes.is_empty() {
            continue;
        }
        let at = duration_us(at);
        writeln!(
            timing,
            "{} {}",
            seconds(at.saturating_sub(previous)),
            bytes.len()
        )
        .map_err(ExportError::Io)?;
        data.write_all(&bytes).map_err(ExportError::Io)?;
        previous = at;
        summary.count(bytes.len());
    }
    summary.end = events.end();
    if summary.end == Some(EventsEnd::Final) {
        let end = header.start_unix_micros.saturating_add(previous);
        write!(
            data,
            "\nScript done on {} [COMMAND_EXIT_CODE=\"0\"]\n",
            script_date(end)
        )
        .map_err(ExportError::Io)?;
    }
    data.flush().map_err(ExportError::Io)?;
    timing.flush().map_err(ExportError::Io)?;
    Ok(summary)
}

/// Writes asciicast v2: a JSON header line, then one `[time, code, data]` line per output
/// (`"o"`), input (`"i"`) and resize (`"r"`, `"COLSxROWS"`) event. Terminal bytes are
/// decoded as UTF-8 across event boundaries; invalid sequences become U+FFFD, as asciinema
/// does when recording.
pub fn export_asciicast<R: io::Read + io::Seek>(
    events: &mut Events<'_, R>,
    from: Duration,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportError> {
    ExportFormat::Asciicast.check_kind(events.header().kind)?;
    let header = events.header().clone();
    let (width, height) = display_size(&header);
    let start_secs = header.start_unix_micros.saturating_add(duration_us(from)) / 1_000_000;
    let head = serde_json::json!({
        "version": 2,
        "width": width,
        "height": height,
        "timestamp": start_secs,
        "title": title(&header),
    });
    writeln!(out, "{head}").map_err(ExportError::Io)?;
    let from_us = duration_us(from);
    let mut output = Utf8Stream::default();
    let mut input = Utf8Stream::default();
    let mut text = String::new();
    let mut summary = ExportSummary::default();
    let mut time = seconds(0);
    for event in events.by_ref() {
        let RecordedEvent { at, event } = event?;
        time = seconds(duration_us(at).saturating_sub(from_us));
        let (code, len) = match &event {
            Event::Output(bytes) => {
                text.clear();
                output.decode(bytes, &mut text);
                ("o", bytes.len())
            }
            Event::Input(bytes) => {
                text.clear();
                input.decode(bytes, &mut text);
                ("i", bytes.len())
            }
            Event::Resize(size) => {
                text = format!("{}x{}", size.width, size.height);
                ("r", 0)
            }
            _ => continue,
        };
        if text.is_empty() {
            continue;
        }
        let data = serde_json::to_string(&text).map_err(|e| ExportError::Io(e.into()))?;
        writeln!(out, "[{time}, \"{code}\", {data}]").map_err(ExportError::Io)?;
        summary.count(len);
    }
    for (code, stream) in [("o", &mut output), ("i", &mut input)] {
        text.clear();
        stream.finish(&mut text);
        if !text.is_empty() {
            let data = serde_json::to_string(&text).map_err(|e| ExportError::Io(e.into()))?;
            writeln!(out, "[{time}, \"{code}\", {data}]").map_err(ExportError::Io)?;
        }
    }
    summary.end = events.end();
    out.flush().map_err(ExportError::Io)?;
    Ok(summary)
}

/// Writes the terminal output as plain text: escape sequences removed, carriage returns
/// and backspaces applied to the current line. This is an aid for reading and searching,
/// not a terminal emulator: full-screen programs come out as their drawing order.
pub fn export_text<R: io::Read + io::Seek>(
    events: &mut Events<'_, R>,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportError> {
    ExportFormat::Text.check_kind(events.header().kind)?;
    let mut filter = TextFilter::default();
    let mut summary = ExportSummary::default();
    for event in events.by_ref() {
        let RecordedEvent { event, .. } = event?;
        let Event::Output(bytes) = event else {
            continue;
        };
        filter.feed_bytes(&bytes, out).map_err(ExportError::Io)?;
        summary.count(bytes.len());
    }
    filter.finish(out).map_err(ExportError::Io)?;
    summary.end = events.end();
    out.flush().map_err(ExportError::Io)?;
    Ok(summary)
}

/// Writes a Guacamole recording file (the format of guacd's `recording-path`, which the
/// Guacamole session player and `guacenc` read): the instruction stream the user saw, from
/// its first instruction, with one change at its start where a player needs it.
///
/// * **The start.** A player needs the default layer's size before anything that draws or
///   shows the pointer: `guacenc` renders the cursor into layer 0 at every frame and crashes
///   when layer 0 has no size yet. guacd 1.5 sends `size 0` first; guacd 1.6 may send
///   `cursor`, `mouse` and `sync` before it (its display greets the user before the remote
///   desktop is up). When the stream does that, its beginning up to the first `sync` after
///   which layer 0 has a size is replaced by a key frame of the display at that `sync`
///   (layer sizes first, then the pixels, the pointer, the mouse and the `sync`), computed
///   with the same display model as the proxy's key frames. A player shows nothing before
///   that `sync` either way, so what it shows is unchanged. A stream that sizes layer 0
///   first is written exactly as the user received it. [`ExportSummary::guac_start`] says
///   which happened.
/// * **Key frames** of the recording are not part of the stream and are left out, except the
///   one a range export starts from (`--from`), which redraws the screen of that moment and
///   begins with layer 0's size.
///
/// When the display model cannot stand in for the replaced instructions (it degraded, or no
/// `sync` follows within [`MAX_GUAC_HEAD`] bytes), the stream is kept whole and only a
/// `size` of layer 0 (its size as the stream sets it, or the client's display size) is put
/// in front ([`GuacStart::SizeAdded`]).
pub fn export_guac<R: io::Read + io::Seek>(
    events: &mut Events<'_, R>,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportError> {
    ExportFormat::Guac.check_kind(events.header().kind)?;
    let mut summary = ExportSummary::default();
    let mut head = Some(GuacHead::new(display_pixels(events.header())));
    let mut first = true;
    for event in events.by_ref() {
        let RecordedEvent { event, .. } = event?;
        let bytes = match event {
            Event::Instructions(bytes) => bytes,
            Event::KeyFrame(bytes) if first => bytes,
            _ => {
                tracing::trace!("skipping an event the guac format does not carry");
                continue;
            }
        };
        first = false;
        if let Some(scanning) = &mut head {
            if let Some(start) = scanning.feed(&bytes, out, &mut summary)? {
                summary.guac_start = Some(start);
                head = None;
            }
            continue;
        }
        out.write_all(&bytes).map_err(ExportError::Io)?;
        summary.count(bytes.len());
    }
    if let Some(scanning) = head {
        summary.guac_start = Some(scanning.finish(out, &mut summary)?);
    }
    summary.end = events.end();
    out.flush().map_err(ExportError::Io)?;
    Ok(summary)
}

/// How a Guacamole export begins (see [`export_guac`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuacStart {
    /// Exactly as the user received it (or as the range's key frame redraws it): layer 0's
    /// size comes before anything that draws.
    AsRecorded,
    /// The stream drew before layer 0 had a size; its first `instructions` instructions were
    /// replaced by a key frame of the display at the first `sync` after layer 0 got one.
    KeyFrame {
        /// Instructions the key frame stands in for.
        instructions: u64,
    },
    /// The stream drew before layer 0 had a size and the display model could not stand in
    /// for its beginning: the stream is whole, after a `size` of layer 0.
    SizeAdded,
}

/// The start of a Guacamole export while it is decided (see [`export_guac`]): the stream is
/// held (at most [`MAX_GUAC_HEAD`] bytes) and fed to a display model until layer 0 has a
/// size.
struct GuacHead {
    display: zt_display::Display,
    decoder: zt_guac::Decoder,
    held: Vec<u8>,
    instructions: u64,
    /// Something that needs layer 0's size came before it.
    drew_unsized: bool,
    /// The `size` to put in front when nothing better can be done.
    fallback: (u32, u32),
}

impl GuacHead {
    fn new(fallback: (u32, u32)) -> Self {
        Self {
            display: zt_display::Display::new(zt_display::DisplayLimits::default()),
            decoder: zt_guac::Decoder::new(zt_guac::Limits::default()),
            held: Vec::new(),
            instructions: 0,
            drew_unsized: false,
            fallback,
        }
    }

    /// Takes the next recorded bytes; once the start is decided, writes it and what is held,
    /// and returns how it began.
    fn feed(
        &mut self,
        bytes: &[u8],
        out: &mut dyn Write,
        summary: &mut ExportSummary,
    ) -> Result<Option<GuacStart>, ExportError> {
        self.held.extend_from_slice(bytes);
        self.decoder.feed(bytes);
        loop {
            let instruction = match self.decoder.poll_instruction() {
                Ok(Some(instruction)) => instruction,
                Ok(None) if self.held.len() <= MAX_GUAC_HEAD => return Ok(None),
                // Too long without a decision, or not a stream the model can read: keep it.
                Ok(None) | Err(_) => return self.finish(out, summary).map(Some),
            };
            self.instructions += 1;
            let sized = self.display.size() != (0, 0);
            if !sized && needs_layer_size(instruction.opcode()) {
                self.drew_unsized = true;
            }
            let _ = self.display.handle(&instruction);
            let sized = self.display.size() != (0, 0);
            if sized && !self.drew_unsized {
                write_counted(out, summary, &self.held)?;
                return Ok(Some(GuacStart::AsRecorded));
            }
            if sized && instruction.is(zt_guac::opcode::SYNC) && self.display.key_frame_ready() {
                if self.display.is_degraded() {
                    return self.finish(out, summary).map(Some);
                }
                let key_frame = self.display.snapshot().encode();
                write_counted(out, summary, &key_frame)?;
                let rest = self.held.len().saturating_sub(self.decoder.buffered_len());
                if let Some(rest) = self.held.get(rest..).filter(|rest| !rest.is_empty()) {
                    write_counted(out, summary, rest)?;
                }
                return Ok(Some(GuacStart::KeyFrame {
                    instructions: self.instructions,
                }));
            }
        }
    }

    /// The stream ended (or the model gave up) before the start was decided: writes what is
    /// held, after a `size` of layer 0 when something drew before it had one.
    fn finish(
        &self,
        out: &mut dyn Write,
        summary: &mut ExportSummary,
    ) -> Result<GuacStart, ExportError> {
        if !self.drew_unsized {
            if !self.held.is_empty() {
                write_counted(out, summary, &self.held)?;
            }
            return Ok(GuacStart::AsRecorded);
        }
        let (w, h) = match self.display.size() {
            (0, _) | (_, 0) => self.fallback,
            size => size,
        };
        let mut size = bytes::BytesMut::new();
        zt_guac::encode(
            zt_guac::opcode::SIZE,
            &["0".to_owned(), w.to_string(), h.to_string()],
            &mut size,
        );
        write_counted(out, summary, &size)?;
        write_counted(out, summary, &self.held)?;
        Ok(GuacStart::SizeAdded)
    }
}

/// The first instruction of a Guacamole stream that a player cannot show because layer 0
/// has no size yet (its opcode), or `None` when layer 0's `size` comes first, as every
/// [`export_guac`] output begins. For checking exports; reads at most the stream's first
/// [`MAX_GUAC_HEAD`] bytes.
pub fn draws_before_size(stream: &[u8]) -> Option<String> {
    let mut decoder = zt_guac::Decoder::new(zt_guac::Limits::default());
    decoder.feed(stream.get(..MAX_GUAC_HEAD).unwrap_or(stream));
    while let Ok(Some(instruction)) = decoder.poll_instruction() {
        if instruction.is(zt_guac::opcode::SIZE)
            && instruction.arg(0) == Some("0")
            && instruction.arg(1).is_some_and(|w| w != "0")
            && instruction.arg(2).is_some_and(|h| h != "0")
        {
            return None;
        }
        if needs_layer_size(instruction.opcode()) {
            return Some(instruction.opcode().to_owned());
        }
    }
    None
}

/// Instructions a player cannot show before layer 0 has a size: everything that draws, the
/// pointer, and the frame boundaries at which guacenc renders the pointer into layer 0.
fn needs_layer_size(opcode: &str) -> bool {
    matches!(
        opcode,
        "cursor"
            | "mouse"
            | "sync"
            | "img"
            | "png"
            | "jpeg"
            | "video"
            | "copy"
            | "transfer"
            | "rect"
            | "start"
            | "line"
            | "arc"
            | "curve"
            | "close"
            | "cfill"
            | "lfill"
            | "cstroke"
            | "lstroke"
            | "clip"
    )
}

fn write_counted(
    out: &mut dyn Write,
    summary: &mut ExportSummary,
    bytes: &[u8],
) -> Result<(), ExportError> {
    out.write_all(bytes).map_err(ExportError::Io)?;
    summary.count(bytes.len());
    Ok(())
}

/// The client's display size in pixels, from the header (graphical recordings store it
/// there), or guacd's default.
fn display_pixels(header: &Header) -> (u32, u32) {
    match (header.size.width, header.size.height) {
        (0, _) | (_, 0) => DEFAULT_DISPLAY,
        (w, h) => (w.into(), h.into()),
    }
}

impl ExportSummary {
    fn count(&mut self, bytes: usize) {
        self.events += 1;
        self.bytes += u64::try_from(bytes).unwrap_or(u64::MAX);
    }
}

/// Decodes UTF-8 that may be split across events.
#[derive(Debug, Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn decode(&mut self, bytes: &[u8], out: &mut String) {
        let joined;
        let mut rest: &[u8] = if self.pending.is_empty() {
            bytes
        } else {
            self.pending.extend_from_slice(bytes);
            joined = std::mem::take(&mut self.pending);
            &joined
        };
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    return;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = after.get(n..).unwrap_or_default();
                        }
                        None => {
                            // An incomplete sequence at the end: at most 3 bytes, kept for
                            // the next event.
                            self.pending = after.to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    fn finish(&mut self, out: &mut String) {
        if !self.pending.is_empty() {
            self.pending.clear();
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// Removes terminal control sequences and applies `\r` and backspace to the current line.
///
/// The sequences are recognised by `vte` (Alacritty's parser, a complete implementation of
/// the DEC ANSI parser state machine, which also decodes UTF-8, replacing what is not), not
/// by a hand-written scanner: CSI, OSC, DCS, SOS/PM/APC strings and their terminators.
#[derive(Default)]
struct TextFilter {
    parser: vte::Parser,
    lines: Lines,
}

/// The line being written, and what has been written out.
#[derive(Debug, Default)]
struct Lines {
    line: Vec<char>,
    cursor: usize,
    written: Vec<u8>,
}

impl std::fmt::Debug for TextFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextFilter")
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl TextFilter {
    #[cfg(test)]
    fn feed(&mut self, text: &str, out: &mut dyn Write) -> io::Result<()> {
        self.feed_bytes(text.as_bytes(), out)
    }

    /// Terminal output, as the target sent it.
    fn feed_bytes(&mut self, bytes: &[u8], out: &mut dyn Write) -> io::Result<()> {
        self.parser.advance(&mut self.lines, bytes);
        out.write_all(&self.lines.written)?;
        self.lines.written.clear();
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if !self.lines.line.is_empty() {
            self.lines.emit_line();
        }
        out.write_all(&self.lines.written)?;
        self.lines.written.clear();
        Ok(())
    }
}

impl vte::Perform for Lines {
    fn print(&mut self, c: char) {
        self.put(c);
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' => self.emit_line(),
            b'\r' => self.cursor = 0,
            0x08 => self.cursor = self.cursor.saturating_sub(1),
            b'\t' => self.put('\t'),
            _ => {}
        }
    }
}

impl Lines {
    fn put(&mut self, c: char) {
        if let Some(slot) = self.line.get_mut(self.cursor) {
            *slot = c;
        } else {
            self.line.push(c);
        }
        self.cursor += 1;
        if self.line.len() >= MAX_TEXT_LINE_CHARS {
            self.emit_line();
        }
    }

    fn emit_line(&mut self) {
        let line: String = self.line.drain(..).collect();
        self.cursor = 0;
        self.written.extend_from_slice(line.trim_end().as_bytes());
        self.written.push(b'\n');
    }
}

fn display_size(header: &Header) -> (u16, u16) {
    match (header.size.width, header.size.height) {
        (0, _) | (_, 0) => (DEFAULT_COLUMNS, DEFAULT_ROWS),
        (w, h) => (w, h),
    }
}

fn title(header: &Header) -> String {
    format!("{} session {}", header.protocol, header.session_id)
}

/// Keeps the typescript's first line one line with balanced quotes.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() || c == '"' { '_' } else { c })
        .collect()
}

fn script_date(unix_micros: u64) -> String {
    let secs = i64::try_from(unix_micros / 1_000_000).unwrap_or(0);
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]+00:00");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

fn seconds(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Most bytes of the stream held while deciding how a Guacamole export begins.
pub const MAX_GUAC_HEAD: usize = 16 << 20;
/// guacd's display size when the client gives none.
const DEFAULT_DISPLAY: (u32, u32) = (1024, 768);
/// Size used when the recording does not say.
const DEFAULT_COLUMNS: u16 = 80;
const DEFAULT_ROWS: u16 = 24;
/// A line longer than this is broken, so output without newlines cannot grow memory.
const MAX_TEXT_LINE_CHARS: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_across_events() {
        let mut s = Utf8Stream::default();
        let mut out = String::new();
        let bytes = "aé€😀".as_bytes();
        for b in bytes {
            s.decode(std::slice::from_ref(b), &mut out);
        }
        s.finish(&mut out);
        assert_eq!(out, "aé€😀");
        let mut out = String::new();
        s.decode(b"x\xffy\xe2\x82", &mut out);
        assert_eq!(out, "x\u{fffd}y");
        s.finish(&mut out);
        assert_eq!(out, "x\u{fffd}y\u{fffd}");
    }

    #[test]
    fn text_filter_strips_sequences() {
        let mut f = TextFilter::default();
        let mut out = Vec::new();
        let input = "\x1b[1;32muser@host\x1b[0m:~$ ls\r\n\x1b]0;title\x07a  b\r\nprogress 10%\rprogress 99%\r\nab\x08c\n\x1bPdcs\x1b\\done";
        f.feed(input, &mut out).unwrap();
        f.finish(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "user@host:~$ ls\na  b\nprogress 99%\nac\ndone\n"
        );
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(0), "0.000000");
        assert_eq!(seconds(1_234_567), "1.234567");
        assert_eq!(script_date(0), "1970-01-01 00:00:00+00:00");
    }
}
