//! The running console: the client's keys through the terminal into the [`Editor`], complete
//! statements to the [`Engine`] (in a task of its own, so Ctrl-C is heard while a query
//! runs), the engine's output into the terminal, the terminal's frames to the client.
//!
//! ```text
//!  client ─▶ pipe ─▶ Terminal ─ keys ─▶ Editor ─ statements ─▶ engine task ─▶ server
//!  client ◀─ pipe ◀─ Terminal ◀──────── echo, prompts ◀── output (bounded) ◀─┘
//!                                  Ctrl-C while busy ─▶ Canceller ─▶ server's cancel
//! ```
//!
//! Flow control: the engine's output channel holds [`OUTPUT_QUEUE`] chunks, so a server
//! streaming ten million rows waits for the terminal (which coalesces frames when the client
//! is behind) and memory stays bounded.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zt_guac::{Decoder, Limits, opcode};
use zt_terminal::{Event, Terminal};

use crate::editor::{Editor, Input};
use crate::redact;

/// Chunks of output waiting for the terminal.
pub const OUTPUT_QUEUE: usize = 8;
/// Bytes read from the pipe at a time.
const READ_CHUNK: usize = 16 * 1024;
/// How long a stopped session keeps its pipe open for the proxy's farewell to the client.
const STOPPED_GRACE: Duration = Duration::from_secs(5);
/// The stream index of files sent to the client (images use 0–255, the clipboard
/// 1000–1999).
const FILE_STREAM: u32 = 3000;
/// Bytes of file data per `blob` (guacd's largest).
const BLOB: usize = 6048;
/// `blob`s sent ahead of the client's acks.
const BLOB_WINDOW: usize = 64;
/// Pieces of an upload waiting for the engine.
const UPLOAD_QUEUE: usize = 16;
/// Pieces of an upload held (not yet acknowledged) while the engine's queue is full; a
/// client that sends more without waiting for acks loses the upload.
const MAX_HELD: usize = 64;

/// Something the user asked the engine to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Run a statement.
    Statement(String),
    /// Run a meta command (`\dt`).
    Meta(String),
}

/// What the engine says.
#[derive(Debug)]
pub enum Output {
    /// Text for the terminal.
    Bytes(Vec<u8>),
    /// The prompts changed (another database).
    Prompt {
        /// The primary prompt.
        prompt: String,
        /// The continuation prompt.
        continuation: String,
    },
    /// The user asked to leave (`\q`).
    Quit,
    /// A file for the user begins (a CSV export): a Guacamole `file` stream named `name`.
    FileStart {
        /// The name the user's browser saves it as.
        name: String,
        /// Its media type.
        mimetype: &'static str,
    },
    /// The file's next bytes.
    FileData(bytes::Bytes),
    /// The file is complete.
    FileEnd,
    /// The engine waits for a file from the user (a CSV import): the next file the client
    /// sends (a dropped file) is it.
    UploadWanted {
        /// The name the statement gave.
        name: String,
    },
    /// Policy refused something the user asked for.
    Refused {
        /// `download` (a CSV export) or `upload` (a CSV import).
        action: &'static str,
        /// The file it named.
        name: String,
    },
    /// A job finished.
    Done(QueryReport),
}

/// A file from the user, for the engine (a CSV import).
#[derive(Debug)]
pub enum Upload {
    /// The user's file begins.
    Start,
    /// Its next bytes.
    Data(bytes::Bytes),
    /// It is complete.
    End,
    /// The user abandoned it (Ctrl-C), or the client did.
    Abort,
}

/// One statement's (or meta command's) audit figures.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueryReport {
    /// The statement as typed, until [`run`] redacts it for the observer.
    pub statement: String,
    /// The database it ran in.
    pub database: String,
    /// How long it took.
    pub duration: Duration,
    /// Rows returned or affected.
    pub rows: u64,
    /// The server's error code (SQLSTATE), when it failed.
    pub error_code: Option<String>,
    /// Whether the user cancelled it (Ctrl-C).
    pub cancelled: bool,
}

impl QueryReport {
    /// A report for `statement` in `database`, nothing done yet.
    pub fn new(statement: &str, database: &str) -> Self {
        Self {
            statement: statement.to_owned(),
            database: database.to_owned(),
            duration: Duration::ZERO,
            rows: 0,
            error_code: None,
            cancelled: false,
        }
    }

    /// Records a PostgreSQL error and writes it as psql does.
    pub(crate) fn failed(&mut self, error: &tokio_postgres::Error, out: &mut Vec<u8>) {
        match error.as_db_error() {
            Some(db) => {
                self.error_code = Some(db.code().code().to_owned());
                let text = format!("{}:  {}", db.severity(), db.message());
                out.extend_from_slice(crate::table::display(&text).0.as_bytes());
                out.extend_from_slice(b"\r\n");
                if let Some(detail) = db.detail() {
                    let text = format!("DETAIL:  {detail}");
                    out.extend_from_slice(crate::table::display(&text).0.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                if let Some(hint) = db.hint() {
                    let text = format!("HINT:  {hint}");
                    out.extend_from_slice(crate::table::display(&text).0.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
            }
            None => {
                self.error_code = Some("08006".to_owned());
                let text = format!("ERROR:  {error}");
                out.extend_from_slice(crate::table::display(&text).0.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        self.cancelled = self.error_code.as_deref() == Some("57014");
    }
}

/// Asks the server to cancel what runs (a future of its own, not the engine's).
pub type Canceller = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A database behind the console.
pub trait Engine: Send + 'static {
    /// The prompts for the current database.
    fn prompt(&self) -> Output;
    /// How to cancel a running statement.
    fn canceller(&self) -> Canceller;
    /// Runs `job`, streaming its output to `out`; a file it asked for
    /// ([`Output::UploadWanted`]) arrives on `uploads`.
    fn run(
        &mut self,
        job: Job,
        out: &mpsc::Sender<Output>,
        uploads: &mut mpsc::Receiver<Upload>,
    ) -> impl Future<Output = QueryReport> + Send;
}

/// What a console reports while it runs: the terminal's reports (typescript, copy and paste
/// refusals), and each statement run.
pub trait Observer: zt_terminal::Observer {
    /// A statement (or meta command) finished; its text is redacted.
    fn query(&mut self, report: &QueryReport);
    /// Policy refused a file transfer the user asked for (`action`: `download`, `upload`).
    fn refused(&mut self, action: &str, name: &str);
}

/// Why a console ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndedBy {
    /// The user left (`\q`, Ctrl-D), or the server closed the connection.
    User,
    /// The client's side of the pipe closed or said `disconnect`.
    Client,
    /// `stop` was cancelled (revocation, shutdown, a failed recording).
    Stopped,
}

/// How a console ended, with its figures.
#[derive(Debug)]
#[non_exhaustive]
pub struct SessionEnd {
    /// Why.
    pub ended_by: EndedBy,
    /// Statements and meta commands run.
    pub statements: u64,
}

/// Runs a logged-in `engine` until the user leaves, the client goes away or `stop` is
/// cancelled. `password` (the session's) is redacted from audited statements wherever it
/// appears.
pub async fn run<E, P>(
    engine: E,
    mut editor: Editor,
    mut terminal: Terminal,
    pipe: P,
    password: Option<&str>,
    observer: &mut dyn Observer,
    stop: CancellationToken,
) -> SessionEnd
where
    E: Engine,
    P: AsyncRead + AsyncWrite + Unpin,
{
    let canceller = engine.canceller();
    let (jobs_tx, mut jobs_rx) = mpsc::channel::<Job>(1);
    let (output_tx, mut output_rx) = mpsc::channel::<Output>(OUTPUT_QUEUE);
    let (upload_tx, mut upload_rx) = mpsc::channel::<Upload>(UPLOAD_QUEUE);
    if let Output::Prompt {
        prompt,
        continuation,
    } = engine.prompt()
    {
        editor.set_prompts(&prompt, &continuation);
    }
    let engine_task = tokio::spawn(async move {
        let mut engine = engine;
        while let Some(job) = jobs_rx.recv().await {
            let report = engine.run(job, &output_tx, &mut upload_rx).await;
            if output_tx.send(Output::Done(report)).await.is_err() {
                break;
            }
        }
    });

    let (mut reader, mut writer) = tokio::io::split(pipe);
    let mut decoder = Decoder::new(Limits::default());
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::new();
    let mut end = SessionEnd {
        ended_by: EndedBy::User,
        statements: 0,
    };
    let mut busy = false;
    let mut cancelled_at: Option<Instant> = None;
    let mut download = Download::default();
    let mut upload = UploadRouting::default();
    let mut echo = Vec::new();
    editor.prompt(&mut echo);
    show(&mut terminal, observer, &echo);
    end.ended_by = 'session: loop {
        while let Some(event) = terminal.poll_event() {
            match event {
                Event::Resize { cols, rows, .. } => observer.resize(cols, rows),
                other => observer.terminal(&other),
            }
        }
        if let Some(keys) = terminal.poll_target() {
            observer.input(&keys);
            if busy && keys.contains(&0x03) {
                // Ctrl-C: the server cancels the statement; what was typed ahead goes, and
                // so does an upload.
                editor.interrupt();
                if upload.abort(&mut out) {
                    let tx = upload_tx.clone();
                    tokio::spawn(async move { tx.send(Upload::Abort).await });
                }
                if cancelled_at.is_none() {
                    cancelled_at = Some(Instant::now());
                    tokio::spawn(canceller());
                }
            } else {
                editor.feed(&keys);
            }
        }
        while !busy {
            let mut echo = Vec::new();
            let next = editor.poll(&mut echo);
            show(&mut terminal, observer, &echo);
            let job = match next {
                None => break,
                Some(Input::Eof) => break 'session EndedBy::User,
                Some(Input::Statement(sql)) => Job::Statement(sql),
                Some(Input::Meta(command)) => Job::Meta(command),
            };
            if jobs_tx.send(job).await.is_err() {
                break 'session EndedBy::User;
            }
            busy = true;
            cancelled_at = None;
        }
        if out.is_empty()
            && let Some(frame) = terminal.poll_client(Instant::now())
        {
            out = frame;
        }
        let deadline = if out.is_empty() {
            terminal.poll_timeout()
        } else {
            None
        };
        tokio::select! {
            () = stop.cancelled() => break EndedBy::Stopped,
            output = output_rx.recv(), if download.unacked < BLOB_WINDOW => match output {
                Some(Output::Bytes(bytes)) => show(&mut terminal, observer, &bytes),
                Some(Output::FileStart { name, mimetype }) => {
                    download.start(&name, mimetype, &mut out);
                }
                Some(Output::FileData(bytes)) => download.data(&bytes, &mut out),
                Some(Output::FileEnd) => download.end(&mut out),
                Some(Output::Refused { action, name }) => observer.refused(action, &name),
                Some(Output::UploadWanted { .. }) => upload.wanted = true,
                Some(Output::Prompt { prompt, continuation }) => {
                    editor.set_prompts(&prompt, &continuation);
                }
                Some(Output::Quit) | None => break EndedBy::User,
                Some(Output::Done(mut report)) => {
                    busy = false;
                    upload.done(&mut out);
                    end.statements += 1;
                    report.statement = redact::for_audit(&report.statement, password);
                    report.cancelled |= cancelled_at.is_some() && report.error_code.is_some();
                    observer.query(&report);
                    let mut echo = Vec::new();
                    editor.prompt(&mut echo);
                    show(&mut terminal, observer, &echo);
                }
            },
            read = reader.read_buf(&mut input) => match read {
                Ok(0) | Err(_) => break EndedBy::Client,
                Ok(_) => {
                    decoder.feed(&input);
                    input.clear();
                    if !decoder.drain_until_disconnect(|i| {
                        // Acks of a download go to it, an upload to the engine, the rest to
                        // the terminal.
                        let acked = i.is(opcode::ACK) && download.acked(i);
                        if !acked && !upload.take(i, &mut out) {
                            terminal.handle_client(i);
                        }
                    }) {
                        break EndedBy::Client;
                    }
                }
            },
            permit = upload_tx.reserve(), if !upload.held.is_empty() => {
                if let Ok(permit) = permit {
                    upload.forward(permit, &mut out);
                }
            }
            written = writer.write(&out), if !out.is_empty() => match written {
                Ok(0) | Err(_) => break EndedBy::Client,
                Ok(n) => out.advance(n),
            },
            () = sleep_until(deadline) => {}
        }
    };
    if busy {
        // Whatever still runs stops on the server, not only here.
        let _ = tokio::time::timeout(Duration::from_secs(2), canceller()).await;
    }
    drop(jobs_tx);
    engine_task.abort();
    if end.ended_by == EndedBy::User {
        // The last frame (the goodbye) reaches the client.
        let mut last = std::mem::take(&mut out);
        if let Some(frame) = terminal.poll_client(Instant::now() + zt_terminal::FRAME_INTERVAL) {
            last.extend_from_slice(&frame);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), writer.write_all(&last)).await;
    }
    if end.ended_by == EndedBy::Stopped {
        // The proxy tells the client why the session ended; the pipe stays open until it has.
        let _ = tokio::time::timeout(STOPPED_GRACE, async {
            let mut sink = [0; 4096];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
    let _ = writer.shutdown().await;
    end
}

/// Puts `bytes` on the terminal (and in the typescript).
fn show(terminal: &mut Terminal, observer: &mut dyn Observer, bytes: &[u8]) {
    if !bytes.is_empty() {
        observer.output(bytes);
        terminal.handle_target(bytes);
    }
}

/// The client's file streams: the one the engine asked for goes to it (each `blob`
/// acknowledged once the engine's queue took it); any other is refused, as guacd refuses
/// uploads it has no use for.
#[derive(Debug, Default)]
struct UploadRouting {
    /// The engine waits for a file.
    wanted: bool,
    /// The client's stream carrying it.
    stream: Option<u32>,
    /// Pieces for the engine, in order, with the stream to acknowledge once taken.
    held: std::collections::VecDeque<(Option<u32>, Upload)>,
}

impl UploadRouting {
    /// Takes `instruction` if it is about a file from the client.
    fn take(&mut self, instruction: &zt_guac::Instruction, out: &mut BytesMut) -> bool {
        let stream = instruction.arg(0).and_then(|s| s.parse::<u32>().ok());
        match instruction.opcode() {
            opcode::FILE => {
                let Some(stream) = stream else { return true };
                if self.wanted && self.stream.is_none() {
                    self.stream = Some(stream);
                    self.held.push_back((None, Upload::Start));
                    ack(stream, "OK", zt_guac::Status::SUCCESS, out);
                } else {
                    ack(
                        stream,
                        "No file is expected",
                        zt_guac::Status::CLIENT_FORBIDDEN,
                        out,
                    );
                }
                true
            }
            opcode::BLOB | opcode::END if stream.is_some() && stream == self.stream => {
                if instruction.is(opcode::END) {
                    self.held.push_back((None, Upload::End));
                    self.stream = None;
                    self.wanted = false;
                } else if self.held.len() >= MAX_HELD {
                    // The client does not wait for acks: the upload is lost, not the memory.
                    self.abort(out);
                    self.held.push_back((None, Upload::Abort));
                } else {
                    use base64::Engine as _;
                    let data = instruction
                        .arg(1)
                        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                        .unwrap_or_default();
                    self.held
                        .push_back((self.stream, Upload::Data(data.into())));
                }
                true
            }
            _ => false,
        }
    }

    /// Hands the next held piece to the engine, acknowledging a blob to the client.
    fn forward(&mut self, permit: mpsc::Permit<'_, Upload>, out: &mut BytesMut) {
        if let Some((stream, piece)) = self.held.pop_front() {
            if let Some(stream) = stream {
                ack(stream, "OK", zt_guac::Status::SUCCESS, out);
            }
            permit.send(piece);
        }
    }

    /// Abandons the upload (Ctrl-C); whether there was one to tell the engine about.
    fn abort(&mut self, out: &mut BytesMut) -> bool {
        let had = self.wanted || self.stream.is_some();
        if let Some(stream) = self.stream.take() {
            ack(
                stream,
                "Upload abandoned",
                zt_guac::Status::CLIENT_FORBIDDEN,
                out,
            );
        }
        self.held.clear();
        self.wanted = false;
        had
    }

    /// The engine finished its job: no file is expected any more.
    fn done(&mut self, out: &mut BytesMut) {
        if let Some(stream) = self.stream.take() {
            ack(
                stream,
                "Upload not taken",
                zt_guac::Status::CLIENT_FORBIDDEN,
                out,
            );
        }
        self.held.clear();
        self.wanted = false;
    }
}

fn ack(stream: u32, message: &str, status: zt_guac::Status, out: &mut BytesMut) {
    zt_guac::encode(
        opcode::ACK,
        &[
            stream.to_string().as_str(),
            message,
            &status.code().to_string(),
        ],
        out,
    );
}

/// A file on its way to the client: Guacamole's `file`, `blob`s (each acknowledged by the
/// client; at most [`BLOB_WINDOW`] ahead) and `end`.
#[derive(Debug, Default)]
struct Download {
    /// The stream, while a file is open.
    stream: Option<u32>,
    /// Files sent so far (each gets a fresh stream index).
    count: u32,
    /// Blobs not yet acknowledged.
    unacked: usize,
    /// The client refused the stream: the rest of the file is dropped.
    refused: bool,
    /// Bytes not yet in a full blob.
    partial: Vec<u8>,
}

impl Download {
    fn start(&mut self, name: &str, mimetype: &str, out: &mut BytesMut) {
        let stream = FILE_STREAM + self.count % 1000;
        self.count += 1;
        self.stream = Some(stream);
        self.unacked = 0;
        self.refused = false;
        self.partial.clear();
        zt_guac::encode(
            opcode::FILE,
            &[stream.to_string().as_str(), mimetype, name],
            out,
        );
    }

    fn data(&mut self, bytes: &[u8], out: &mut BytesMut) {
        if self.stream.is_none() || self.refused {
            return;
        }
        self.partial.extend_from_slice(bytes);
        while self.partial.len() >= BLOB {
            let blob: Vec<u8> = self.partial.drain(..BLOB).collect();
            self.blob(&blob, out);
        }
    }

    fn blob(&mut self, blob: &[u8], out: &mut BytesMut) {
        use base64::Engine as _;
        if let Some(stream) = self.stream {
            let data = base64::engine::general_purpose::STANDARD.encode(blob);
            zt_guac::encode(opcode::BLOB, &[stream.to_string(), data], out);
            self.unacked += 1;
        }
    }

    fn end(&mut self, out: &mut BytesMut) {
        if let Some(stream) = self.stream
            && !self.refused
        {
            let rest = std::mem::take(&mut self.partial);
            if !rest.is_empty() {
                self.blob(&rest, out);
            }
            zt_guac::encode(opcode::END, &[stream.to_string()], out);
        }
        self.stream = None;
        // Acks of the finished stream no longer hold anything up.
        self.unacked = 0;
    }

    /// Takes the client's `ack` if it is for the open file.
    fn acked(&mut self, ack: &zt_guac::Instruction) -> bool {
        let Some(stream) = ack.arg(0).and_then(|s| s.parse::<u32>().ok()) else {
            return false;
        };
        if !(FILE_STREAM..FILE_STREAM + 1000).contains(&stream) {
            return false;
        }
        if self.stream == Some(stream) {
            self.unacked = self.unacked.saturating_sub(1);
            if ack.arg(2).is_some_and(|status| status != "0") {
                // The client refused or abandoned it.
                self.refused = true;
                self.unacked = 0;
            }
        }
        true
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
