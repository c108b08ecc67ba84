//! The running session: a Chromium of its own, driven through the DevTools protocol
//! (chromiumoxide), between the connection's pipe and the web.
//!
//! ```text
//!  pipe ─▶ Engine::handle_client ─▶ Command ─▶ input task ─▶ Input.dispatch* / Emulation
//!  pipe ◀─ Engine (framebuffer diff) ◀─ Page.screencastFrame ◀─ Chromium ─▶ ack when the client keeps up
//!          Fetch.requestPaused ─▶ UrlPolicy ─▶ continue, or fail (BlockedByClient) + Observer::refused
//!          Page.frameNavigated (top frame) ─▶ Observer::navigated
//!  Chromium's connections ─▶ gate (SOCKS 5, host and port) ─▶ the web, or Observer::connection_refused
//! ```
//!
//! Every request of the page passes the Fetch domain before it leaves: top-level documents
//! against the pages list, everything else against both lists ([`crate::policy`]); each
//! redirect hop is a request of its own and passes again. A refused request fails with
//! `BlockedByClient` and never reaches the network. What Fetch does not see (WebSockets,
//! service and shared workers) still passes the [`crate::gate`], which every connection of
//! the browser goes through.
//!
//! The browser's process group and profile are removed when [`run`] returns, whatever ended
//! it; a browser that exits or crashes ends the session with [`Error::Crashed`].

use std::path::Path;
use std::time::Instant;

use base64::Engine as _;
use bytes::{Buf, BytesMut};
use chromiumoxide::cdp::browser_protocol::browser::{
    CancelDownloadParams, DownloadProgressState, EventDownloadProgress, EventDownloadWillBegin,
    SetDownloadBehaviorBehavior, SetDownloadBehaviorParams,
};
use chromiumoxide::cdp::browser_protocol::dom::{BackendNodeId, SetFileInputFilesParams};
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::fetch::{
    self, ContinueRequestParams, EventRequestPaused, FailRequestParams, RequestPattern,
};
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams, DispatchMouseEventType,
    InsertTextParams, MouseButton,
};
use chromiumoxide::cdp::browser_protocol::inspector::EventTargetCrashed;
use chromiumoxide::cdp::browser_protocol::network::{ErrorReason, ResourceType};
use chromiumoxide::cdp::browser_protocol::page::{
    EventFileChooserOpened, EventFrameNavigated, EventLoadEventFired, EventScreencastFrame,
    FileChooserOpenedMode, NavigateParams, ScreencastFrameAckParams,
    SetInterceptFileChooserDialogParams, StartScreencastFormat, StartScreencastParams,
};
use chromiumoxide::cdp::browser_protocol::target::CreateTargetParams;
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::{Browser, Page};
use futures::StreamExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zt_guac::{Decoder, Limits, opcode};

use crate::browser::{Chromium, LaunchError};
use crate::engine::{Command, Engine};
use crate::files::{DownloadRefusal, Progress, ProgressAction, Transfers};
use crate::gate::Gate;
use crate::input::{Button, KeyKind, MouseEvent};
use crate::policy::{Kind, Refusal};
use crate::settings::RbiSettings;

/// Bytes read from the pipe at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Input commands waiting for the browser; more are dropped (a flood of input).
const MAX_COMMANDS: usize = 256;
/// How long the last words to the client may take.
const LAST_WORDS: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a stopped session keeps its pipe open for the proxy's farewell to the client.
const STOPPED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest URL put in an audit event, in characters.
const MAX_AUDITED_URL: usize = 1024;
/// The profile's directories for downloads and uploads.
const DOWNLOADS: &str = "zt-downloads";
const UPLOADS: &str = "zt-uploads";

/// Why a session could not start or ended abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Chromium could not start.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The DevTools connection failed or a command was refused.
    #[error("the browser's DevTools connection failed: {0}")]
    DevTools(String),
    /// The browser or the page's renderer exited or crashed.
    #[error("the browser crashed or exited")]
    Crashed,
}

impl Error {
    /// The Guacamole status the client hears.
    pub fn status(&self) -> zt_guac::Status {
        match self {
            Self::Launch(_) => zt_guac::Status::SERVER_ERROR,
            Self::DevTools(_) | Self::Crashed => zt_guac::Status::UPSTREAM_ERROR,
        }
    }

    /// What the user is told.
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::Launch(_) => "The remote browser could not start",
            Self::DevTools(_) => "The remote browser stopped answering",
            Self::Crashed => "The remote browser crashed",
        }
    }
}

fn devtools(error: impl std::fmt::Display) -> Error {
    Error::DevTools(error.to_string())
}

/// What the session reports as it runs (the proxy audits it).
pub trait Observer: Send {
    /// The top frame now shows `url` (scheme, host and path: no query or fragment).
    fn navigated(&mut self, url: &str);
    /// A request of `kind` for `url` (likewise shortened) was refused.
    fn refused(&mut self, kind: Kind, url: &str, reason: Refusal);
    /// The page started a download, which was refused or cancelled for `reason`: its URL
    /// (shortened; empty when only the name is known) and the name the page suggested.
    /// Allowed downloads are audited by the connection, as file streams.
    fn download_refused(&mut self, url: &str, filename: &str, reason: DownloadRefusal);
    /// The browser tried to connect to `host`:`port`, which no pattern names; the gate
    /// refused it ([`crate::gate`]).
    fn connection_refused(&mut self, host: &str, port: u16);
    /// The session's credentials were filled into `fields` fields of the page at `url`
    /// (and the form submitted when `submitted`).
    fn autofilled(&mut self, url: &str, fields: u32, submitted: bool);
}

/// A started browser with its page, policy in force, not yet showing anything.
pub struct RbiConnection {
    chromium: Chromium,
    gate: Gate,
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    page: Page,
    settings: RbiSettings,
    size: (u16, u16),
}

impl std::fmt::Debug for RbiConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbiConnection")
            .field("chromium", &self.chromium)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl RbiConnection {
    /// The browser process (for tests and accounting).
    pub fn chromium(&self) -> &Chromium {
        &self.chromium
    }
}

/// Starts `program` for `settings` at the client's `width` × `height`, with the URL policy
/// in force before anything is loaded, in a control group with `caps` where possible.
pub async fn open(
    program: &Path,
    profiles: Option<&Path>,
    caps: Option<crate::cgroup::Caps>,
    settings: &RbiSettings,
    width: u16,
    height: u16,
) -> Result<RbiConnection, Error> {
    let (width, height) = (
        width.clamp(1, crate::engine::MAX_SIDE),
        height.clamp(1, crate::engine::MAX_SIDE),
    );
    let gate = Gate::start(settings.policy.clone())
        .await
        .map_err(|e| LaunchError::Gate(e.kind()))?;
    let mut chromium = Chromium::launch(
        program,
        profiles,
        width,
        height,
        settings.ignore_server_cert,
        gate.address(),
        caps,
    )
    .await?;
    match attach(&chromium, settings, width, height).await {
        Ok((browser, handler, page)) => Ok(RbiConnection {
            chromium,
            gate,
            browser,
            handler,
            page,
            settings: settings.clone(),
            size: (width, height),
        }),
        Err(error) => {
            chromium.kill().await;
            Err(error)
        }
    }
}

async fn attach(
    chromium: &Chromium,
    settings: &RbiSettings,
    width: u16,
    height: u16,
) -> Result<(Browser, tokio::task::JoinHandle<()>, Page), Error> {
    let config = HandlerConfig {
        ignore_https_errors: settings.ignore_server_cert,
        viewport: None,
        request_intercept: true,
        ..HandlerConfig::default()
    };
    let (browser, mut handler) = Browser::connect_with_config(chromium.devtools_url(), config)
        .await
        .map_err(devtools)?;
    let handler = tokio::spawn(async move {
        while let Some(event) = handler.next().await {
            if event.is_err() {
                break;
            }
        }
    });
    // Downloads are refused unless allowed (then saved in the profile, by download id, and
    // sent to the client when complete); either way `Browser.downloadWillBegin` reports them.
    let downloads = match (settings.allow_download, chromium.profile()) {
        (true, Some(profile)) => {
            Some(crate::files::make_dir(&profile, DOWNLOADS).map_err(|e| {
                Error::DevTools(format!("cannot make the downloads directory: {e}"))
            })?)
        }
        _ => None,
    };
    let behavior = match &downloads {
        Some(dir) => SetDownloadBehaviorParams::builder()
            .behavior(SetDownloadBehaviorBehavior::AllowAndName)
            .download_path(dir.display().to_string()),
        None => SetDownloadBehaviorParams::builder().behavior(SetDownloadBehaviorBehavior::Deny),
    };
    browser
        .execute(
            behavior
                .events_enabled(true)
                .build()
                .map_err(Error::DevTools)?,
        )
        .await
        .map_err(devtools)?;
    let page = browser
        .new_page(CreateTargetParams::new("about:blank"))
        .await
        .map_err(devtools)?;
    page.execute(
        fetch::EnableParams::builder()
            .pattern(RequestPattern::builder().url_pattern("*").build())
            .build(),
    )
    .await
    .map_err(devtools)?;
    page.execute(SetDeviceMetricsOverrideParams::new(
        i64::from(width),
        i64::from(height),
        1.0,
        false,
    ))
    .await
    .map_err(devtools)?;
    // A file input never opens a dialog: its chooser is answered with the client's uploads,
    // or not at all.
    page.execute(SetInterceptFileChooserDialogParams::new(true))
        .await
        .map_err(devtools)?;
    Ok((browser, handler, page))
}

/// Why a session ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndedBy {
    /// The client's side of the pipe closed or said `disconnect`.
    Client,
    /// `stop` was cancelled (revocation, limits, shutdown).
    Stopped,
    /// The browser failed.
    Failed(Error),
}

/// How a session ended, with its figures.
#[derive(Debug)]
#[non_exhaustive]
pub struct SessionEnd {
    /// Why.
    pub ended_by: EndedBy,
    /// Frames sent to the client.
    pub frames: u64,
    /// Top-level navigations.
    pub navigations: u64,
    /// Requests refused by the URL policy.
    pub refused: u64,
}

/// `url` as the audit log shows it: scheme, host, port and path; no credentials, query or
/// fragment, at most 1024 characters.
pub fn audited_url(url: &str) -> String {
    let shown = match url::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Ok(parsed) => parsed.scheme().to_owned() + ":",
        Err(_) => "(malformed)".to_owned(),
    };
    shown.chars().take(MAX_AUDITED_URL).collect()
}

/// Runs the browser until the client leaves, the session stops or the browser fails.
/// `jpeg`: the client takes JPEG images.
pub async fn run<P>(
    connection: RbiConnection,
    pipe: P,
    observer: &mut dyn Observer,
    stop: CancellationToken,
    jpeg: bool,
    read_only: bool,
) -> SessionEnd
where
    P: AsyncRead + AsyncWrite + Unpin,
{
    let RbiConnection {
        mut chromium,
        mut gate,
        browser,
        handler,
        page,
        settings,
        size,
    } = connection;
    let mut end = SessionEnd {
        ended_by: EndedBy::Client,
        frames: 0,
        navigations: 0,
        refused: 0,
    };
    let (mut reader, mut writer) = tokio::io::split(pipe);
    let mut engine = Engine::new(size.0, size.1, jpeg, read_only, Instant::now())
        .with_address_bar(settings.allow_url_manipulation);
    let started = start(&page, &settings, size).await;
    let started = match started {
        Ok(streams) => listen_for_files(&browser, &page)
            .await
            .map(|files| (streams, files)),
        Err(error) => Err(error),
    };
    let (
        (mut paused, mut frames, mut navigated, mut crashed, mut loaded),
        (mut downloads, mut progress, mut choosers),
    ) = match started {
        Ok(started) => started,
        Err(error) => {
            say_error(&mut writer, BytesMut::new(), &error).await;
            end.ended_by = EndedBy::Failed(error);
            finish(&mut chromium, handler, browser).await;
            let _ = writer.shutdown().await;
            return end;
        }
    };
    // Input goes to the browser in order, from a task of its own, so a slow command never
    // holds up frames or the policy.
    let (commands, mut inbox) = mpsc::channel::<Command>(MAX_COMMANDS);
    let (copied_tx, mut copied_rx) = mpsc::channel::<String>(4);
    let input_page = page.clone();
    let input = tokio::spawn(async move {
        while let Some(command) = inbox.recv().await {
            match dispatch(&input_page, command).await {
                Ok(Some(text)) => {
                    let _ = copied_tx.send(text).await;
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
    });
    let profile = chromium.profile();
    let downloads_dir = profile
        .as_ref()
        .filter(|_| settings.allow_download)
        .map(|p| p.join(DOWNLOADS));
    let uploads_dir = profile
        .as_ref()
        .filter(|_| settings.allow_upload && !read_only)
        .and_then(|p| crate::files::make_dir(p, UPLOADS).ok());
    let mut transfers = Transfers::new(downloads_dir, uploads_dir, settings.max_file_size);
    let mut decoder = Decoder::new(Limits::default());
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::new();
    let mut unacked: Option<i64> = None;
    let main_frame = page.target_id().as_ref().to_owned();
    // The top frame's URL, for autofill.
    let mut current = String::new();
    let (filled_tx, mut filled_rx) = mpsc::channel::<(String, u32, bool)>(4);
    end.ended_by = loop {
        if out.is_empty() {
            if let Some(bytes) = engine.poll_client() {
                out = bytes;
            }
            transfers.poll_client(&mut out);
        }
        if let Some((node, files)) = transfers.poll_chooser() {
            let page = page.clone();
            tokio::spawn(async move {
                let files = files.iter().map(|f| f.display().to_string());
                if let Ok(params) = SetFileInputFilesParams::builder()
                    .files(files)
                    .backend_node_id(BackendNodeId::new(node))
                    .build()
                {
                    let _ = page.execute(params).await;
                }
            });
        }
        // The next frame is asked for once this one has left and the client keeps up.
        if out.is_empty()
            && engine.may_ack()
            && let Some(session) = unacked.take()
        {
            let page = page.clone();
            tokio::spawn(async move {
                let _ = page.execute(ScreencastFrameAckParams::new(session)).await;
            });
        }
        while let Some(command) = engine.poll_command() {
            // A typed URL passes the pages policy here, before anything is asked of the
            // browser (a `javascript:` URL would run in the page without a request).
            if let Command::Navigate(url) = &command
                && let Err(reason) = settings.policy.check(Kind::Navigation, url)
            {
                end.refused += 1;
                observer.refused(Kind::Navigation, &audited_url(url), reason);
                continue;
            }
            // Beyond the bound the browser is not keeping up: input is dropped.
            let _ = commands.try_send(command);
        }
        tokio::select! {
            () = stop.cancelled() => break EndedBy::Stopped,
            _ = chromium.exited() => break EndedBy::Failed(Error::Crashed),
            Some(_) = crashed.next() => break EndedBy::Failed(Error::Crashed),
            event = paused.next() => {
                let Some(event) = event else {
                    break EndedBy::Failed(Error::DevTools("the page went away".into()));
                };
                let kind = if event.resource_type == ResourceType::Document
                    && event.frame_id.as_ref() == main_frame
                {
                    Kind::Navigation
                } else {
                    Kind::Resource
                };
                let verdict = settings.policy.check(kind, &event.request.url);
                let page = page.clone();
                let id = event.request_id.clone();
                match verdict {
                    Ok(()) => {
                        tokio::spawn(async move {
                            let _ = page.execute(ContinueRequestParams::new(id)).await;
                        });
                    }
                    Err(reason) => {
                        end.refused += 1;
                        observer.refused(kind, &audited_url(&event.request.url), reason);
                        tokio::spawn(async move {
                            let _ = page
                                .execute(FailRequestParams::new(id, ErrorReason::BlockedByClient))
                                .await;
                        });
                    }
                }
            }
            frame = frames.next() => {
                let Some(frame) = frame else {
                    break EndedBy::Failed(Error::DevTools("the page went away".into()));
                };
                let data: &str = frame.data.as_ref();
                if let Ok(png) = base64::engine::general_purpose::STANDARD.decode(data)
                    && engine.frame(&png, Instant::now()).is_ok()
                {
                    end.frames = engine.frames();
                }
                unacked = Some(frame.session_id);
            }
            refused = gate.refused() => {
                end.refused += 1;
                let host: String = refused.host.chars().filter(|c| !c.is_control()).take(255).collect();
                observer.connection_refused(&host, refused.port);
            }
            Some(event) = navigated.next() => {
                if event.frame.parent_id.is_none() {
                    end.navigations += 1;
                    current.clone_from(&event.frame.url);
                    observer.navigated(&audited_url(&event.frame.url));
                    engine.url_changed(&event.frame.url);
                }
            }
            Some(_) = loaded.next() => {
                if let Some(script) = crate::autofill::script(&settings, &current) {
                    let page = page.clone();
                    let url = audited_url(&current);
                    let filled = filled_tx.clone();
                    tokio::spawn(async move {
                        let Ok(params) = EvaluateParams::builder()
                            .expression(script.expose_secret().clone())
                            .return_by_value(true)
                            .build()
                        else {
                            return;
                        };
                        if let Ok(answer) = page.execute(params).await
                            && let Some(value) = answer.result.result.value.as_ref()
                        {
                            let number = |key: &str| value.get(key).and_then(serde_json::Value::as_u64);
                            let fields = number("filled").unwrap_or(0);
                            let submitted = value
                                .get("submitted")
                                .and_then(serde_json::Value::as_bool)
                                .unwrap_or(false);
                            if fields > 0 {
                                let fields = u32::try_from(fields).unwrap_or(u32::MAX);
                                let _ = filled.send((url, fields, submitted)).await;
                            }
                        }
                    });
                }
            }
            Some(download) = downloads.next() => {
                let name = crate::files::file_name(&download.suggested_filename);
                if let Err(reason) = transfers.begin(&download.guid, &name) {
                    end.refused += 1;
                    observer.download_refused(&audited_url(&download.url), &name, reason);
                    if transfers.downloads_allowed() {
                        cancel_download(&browser, download.guid.clone()).await;
                    }
                }
            }
            Some(event) = progress.next() => {
                let state = match event.state {
                    DownloadProgressState::InProgress => Progress::InProgress,
                    DownloadProgressState::Completed => Progress::Completed,
                    DownloadProgressState::Canceled => Progress::Canceled,
                };
                let action =
                    transfers.progress(&event.guid, event.total_bytes, event.received_bytes, state);
                if let ProgressAction::Cancel { name } = action {
                    end.refused += 1;
                    observer.download_refused("", &name, DownloadRefusal::TooLarge);
                    cancel_download(&browser, event.guid.clone()).await;
                }
            }
            Some(chooser) = choosers.next() => {
                if let Some(node) = chooser.backend_node_id {
                    let multiple = chooser.mode == FileChooserOpenedMode::SelectMultiple;
                    transfers.chooser_opened(*node.inner(), multiple);
                }
            }
            Some(text) = copied_rx.recv() => engine.copied(&text),
            Some((url, fields, submitted)) = filled_rx.recv() => {
                observer.autofilled(&url, fields, submitted);
            }
            read = reader.read_buf(&mut buffer) => match read {
                Ok(0) | Err(_) => break EndedBy::Client,
                Ok(_) => {
                    decoder.feed(&buffer);
                    buffer.clear();
                    let now = Instant::now();
                    let client = |i: &zt_guac::Instruction| {
                        if !transfers.handle_client(i) {
                            engine.handle_client(i, now);
                        }
                    };
                    if !decoder.drain_until_disconnect(client) {
                        break EndedBy::Client;
                    }
                }
            },
            written = writer.write(&out), if !out.is_empty() => match written {
                Ok(0) | Err(_) => break EndedBy::Client,
                Ok(n) => out.advance(n),
            },
        }
    };
    input.abort();
    if let EndedBy::Failed(error) = &end.ended_by {
        say_error(&mut writer, std::mem::take(&mut out), error).await;
    }
    finish(&mut chromium, handler, browser).await;
    if let EndedBy::Stopped = end.ended_by {
        // The proxy tells the client why the session ended (revoked, timed out); the pipe
        // stays open until it has, so the client never hears "the browser closed" instead.
        let _ = tokio::time::timeout(STOPPED_GRACE, async {
            let mut sink = [0; 4096];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
    let _ = writer.shutdown().await;
    end
}

/// Sends what is left of `out` and then `error`'s `error` instruction, within [`LAST_WORDS`].
async fn say_error<W: AsyncWrite + Unpin>(writer: &mut W, mut out: BytesMut, error: &Error) {
    zt_guac::encode(
        opcode::ERROR,
        &[error.client_message(), &error.status().code().to_string()],
        &mut out,
    );
    let _ = tokio::time::timeout(LAST_WORDS, writer.write_all(&out)).await;
}

type FileStreams = (
    chromiumoxide::listeners::EventStream<EventDownloadWillBegin>,
    chromiumoxide::listeners::EventStream<EventDownloadProgress>,
    chromiumoxide::listeners::EventStream<EventFileChooserOpened>,
);

async fn listen_for_files(browser: &Browser, page: &Page) -> Result<FileStreams, Error> {
    Ok((
        browser
            .event_listener::<EventDownloadWillBegin>()
            .await
            .map_err(devtools)?,
        browser
            .event_listener::<EventDownloadProgress>()
            .await
            .map_err(devtools)?,
        page.event_listener::<EventFileChooserOpened>()
            .await
            .map_err(devtools)?,
    ))
}

/// `Browser.cancelDownload` (rare: a download refused or over the limit), within
/// [`LAST_WORDS`]: the DevTools handler runs in a task of its own, so the answer does not
/// wait for the session's loop.
async fn cancel_download(browser: &Browser, guid: String) {
    let _ =
        tokio::time::timeout(LAST_WORDS, browser.execute(CancelDownloadParams::new(guid))).await;
}

type Streams = (
    chromiumoxide::listeners::EventStream<EventRequestPaused>,
    chromiumoxide::listeners::EventStream<EventScreencastFrame>,
    chromiumoxide::listeners::EventStream<EventFrameNavigated>,
    chromiumoxide::listeners::EventStream<EventTargetCrashed>,
    chromiumoxide::listeners::EventStream<EventLoadEventFired>,
);

/// Listens, starts the screencast and opens the start page.
async fn start(page: &Page, settings: &RbiSettings, size: (u16, u16)) -> Result<Streams, Error> {
    let paused = page
        .event_listener::<EventRequestPaused>()
        .await
        .map_err(devtools)?;
    let frames = page
        .event_listener::<EventScreencastFrame>()
        .await
        .map_err(devtools)?;
    let navigated = page
        .event_listener::<EventFrameNavigated>()
        .await
        .map_err(devtools)?;
    let crashed = page
        .event_listener::<EventTargetCrashed>()
        .await
        .map_err(devtools)?;
    let loaded = page
        .event_listener::<EventLoadEventFired>()
        .await
        .map_err(devtools)?;
    page.execute(
        StartScreencastParams::builder()
            .format(StartScreencastFormat::Png)
            .max_width(i64::from(size.0))
            .max_height(i64::from(size.1))
            .build(),
    )
    .await
    .map_err(devtools)?;
    // The navigation is answered once the page has loaded, and its requests wait for the
    // policy in this task's loop: it must not be awaited here.
    let page = page.clone();
    let url = settings.start.to_string();
    tokio::spawn(async move {
        let _ = page.execute(NavigateParams::new(url)).await;
    });
    Ok((paused, frames, navigated, crashed, loaded))
}

/// What is selected in the page: the focused field's selection (never a password field's),
/// or the document's.
const READ_SELECTION: &str = r#"(() => {
  const e = document.activeElement;
  if (e instanceof HTMLInputElement || e instanceof HTMLTextAreaElement) {
    if (e.type === "password") return "";
    return e.value.substring(e.selectionStart ?? 0, e.selectionEnd ?? 0);
  }
  return String(window.getSelection() ?? "");
})()"#;

/// One input command; the text copied, for [`Command::ReadSelection`].
async fn dispatch(page: &Page, command: Command) -> Result<Option<String>, Error> {
    match command {
        Command::Key(key) => {
            let kind = match key.kind {
                KeyKind::KeyDown => DispatchKeyEventType::KeyDown,
                KeyKind::RawKeyDown => DispatchKeyEventType::RawKeyDown,
                KeyKind::KeyUp => DispatchKeyEventType::KeyUp,
            };
            let mut params = DispatchKeyEventParams::builder()
                .r#type(kind)
                .key(key.key)
                .windows_virtual_key_code(key.virtual_key)
                .modifiers(key.modifiers)
                .location(key.location);
            if !key.code.is_empty() {
                params = params.code(key.code);
            }
            if let Some(text) = key.text {
                params = params.text(text.clone()).unmodified_text(text);
            }
            let params = params.build().map_err(Error::DevTools)?;
            page.execute(params).await.map_err(devtools)?;
        }
        Command::Mouse(event) => {
            let params = match event {
                MouseEvent::Moved { x, y, buttons } => DispatchMouseEventParams::builder()
                    .r#type(DispatchMouseEventType::MouseMoved)
                    .x(x)
                    .y(y)
                    .buttons(buttons),
                MouseEvent::Button {
                    pressed,
                    button,
                    x,
                    y,
                    buttons,
                    click_count,
                } => DispatchMouseEventParams::builder()
                    .r#type(if pressed {
                        DispatchMouseEventType::MousePressed
                    } else {
                        DispatchMouseEventType::MouseReleased
                    })
                    .x(x)
                    .y(y)
                    .button(match button {
                        Button::Left => MouseButton::Left,
                        Button::Middle => MouseButton::Middle,
                        Button::Right => MouseButton::Right,
                    })
                    .buttons(buttons)
                    .click_count(click_count),
                MouseEvent::Wheel { x, y, delta_y } => DispatchMouseEventParams::builder()
                    .r#type(DispatchMouseEventType::MouseWheel)
                    .x(x)
                    .y(y)
                    .delta_x(0.0)
                    .delta_y(delta_y),
            };
            let params = params.build().map_err(Error::DevTools)?;
            page.execute(params).await.map_err(devtools)?;
        }
        Command::Resize(width, height) => {
            page.execute(SetDeviceMetricsOverrideParams::new(
                i64::from(width),
                i64::from(height),
                1.0,
                false,
            ))
            .await
            .map_err(devtools)?;
            // The screencast's size follows the viewport: restart it at the new bounds.
            page.execute(
                StartScreencastParams::builder()
                    .format(StartScreencastFormat::Png)
                    .max_width(i64::from(width))
                    .max_height(i64::from(height))
                    .build(),
            )
            .await
            .map_err(devtools)?;
        }
        Command::Navigate(url) => {
            // Answered when the page has loaded; its requests wait for the policy in the
            // session's loop, so it is not awaited here.
            let page = page.clone();
            tokio::spawn(async move {
                let _ = page.execute(NavigateParams::new(url)).await;
            });
        }
        Command::InsertText(text) => {
            page.execute(InsertTextParams::new(text))
                .await
                .map_err(devtools)?;
        }
        Command::ReadSelection => {
            let params = EvaluateParams::builder()
                .expression(READ_SELECTION)
                .return_by_value(true)
                .build()
                .map_err(Error::DevTools)?;
            let answer = page.execute(params).await.map_err(devtools)?;
            let text = answer
                .result
                .result
                .value
                .as_ref()
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// Ends the browser: DevTools first, then the process group and the profile.
async fn finish(chromium: &mut Chromium, handler: tokio::task::JoinHandle<()>, browser: Browser) {
    drop(browser);
    handler.abort();
    chromium.kill().await;
}
