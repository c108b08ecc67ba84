//! Helpers shared by the recorder's integration tests. Each test binary uses a subset.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "shared by several test binaries, each using a subset; helpers fail by panicking"
)]

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zt_recorder::{
    Event, EventRange, IdentityKey, RecipientSecretKey, RecordedEvent, RecordingKind,
    RecordingReader, RecordingStats, RecordingWriter, ResourceSecret, Size, TryAppendError, Unlock,
    VerifyOptions, VerifyReport, WriterConfig,
};

/// The resource secret every test recording is written for.
pub(crate) const SECRET: &[u8] = b"integration-test resource secret, 0123456789";

pub(crate) fn secret() -> ResourceSecret {
    ResourceSecret::new(SECRET.to_vec()).unwrap()
}

pub(crate) fn secret_base64() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(SECRET)
}

/// A fixed start time so exports are reproducible: 2024-01-02 03:04:05 UTC.
pub(crate) fn start_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_704_164_645)
}

/// Keys a test recording can be written with.
pub(crate) struct Keys {
    pub(crate) auditor: RecipientSecretKey,
    pub(crate) identity: Arc<IdentityKey>,
}

impl Keys {
    pub(crate) fn new() -> Self {
        Self {
            auditor: RecipientSecretKey::generate().unwrap(),
            identity: Arc::new(IdentityKey::generate().unwrap()),
        }
    }
}

pub(crate) fn config(kind: RecordingKind) -> WriterConfig {
    let protocol = match kind {
        RecordingKind::Typescript => "ssh",
        RecordingKind::Graphical => "rdp",
    };
    let mut c = WriterConfig::new(kind, "session-42", "resource-7", protocol);
    c.resource_secret = Some(Arc::new(secret()));
    c.start_time = start_time();
    c.include_input = kind == RecordingKind::Typescript;
    c.size = match kind {
        RecordingKind::Typescript => Size {
            width: 80,
            height: 24,
        },
        RecordingKind::Graphical => Size {
            width: 1024,
            height: 768,
        },
    };
    c
}

/// Appends, waiting while the queue is full (tests want every event recorded).
pub(crate) fn append(writer: &RecordingWriter, at: Duration, event: Event) {
    let mut event = event;
    loop {
        match writer.try_append_at(at, event) {
            Ok(()) => return,
            Err(TryAppendError::Full(back)) => {
                event = back;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => panic!("append failed: {e}"),
        }
    }
}

pub(crate) fn write(
    path: &Path,
    config: WriterConfig,
    events: &[(Duration, Event)],
) -> RecordingStats {
    let writer = RecordingWriter::create(path, config).unwrap();
    for (at, event) in events {
        append(&writer, *at, event.clone());
    }
    writer.finish().unwrap()
}

pub(crate) fn open(path: &Path) -> RecordingReader<std::fs::File> {
    RecordingReader::open_path(path).unwrap()
}

pub(crate) fn open_unlocked(path: &Path) -> RecordingReader<std::fs::File> {
    let mut r = open(path);
    r.unlock(Unlock::ResourceSecret(&secret())).unwrap();
    r
}

pub(crate) fn read_all(path: &Path) -> (VerifyReport, Vec<RecordedEvent>) {
    let mut r = open_unlocked(path);
    let report = r.verify(&VerifyOptions::default()).unwrap();
    let events = r
        .events(EventRange::all())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (report, events)
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A terminal session: prompts, colours, a multi-byte character split across two events,
/// carriage-return progress output, a resize and typed input.
pub(crate) fn typescript_events() -> Vec<(Duration, Event)> {
    let out = |s: &[u8]| Event::Output(s.to_vec());
    let euro = "€".as_bytes();
    vec![
        (ms(0), out(b"\x1b[1;32muser@host\x1b[0m:~$ ")),
        (ms(400), Event::Input(b"ls -l\r".to_vec())),
        (ms(420), out(b"ls -l\r\n")),
        (
            ms(500),
            out(b"total 8\r\n-rw-r--r-- 1 user user 42 Jan  2 03:04 caf\xc3\xa9.txt\r\n"),
        ),
        (ms(510), Event::Output([b"price: 5 ", &euro[..1]].concat())),
        (ms(530), Event::Output([&euro[1..], b"\r\n"].concat())),
        (
            ms(1_200),
            Event::Resize(Size {
                width: 120,
                height: 40,
            }),
        ),
        (
            ms(1_250),
            out(b"progress 10%\rprogress 55%\rprogress 100%\r\n"),
        ),
        (ms(2_000), out(b"\x1b]0;window title\x07user@host:~$ ")),
        (ms(2_600), Event::Input(b"exit\r".to_vec())),
        (ms(2_650), out(b"exit\r\nlogout\r\n")),
        (ms(3_500), out(b"Connection to host closed.\r\n")),
    ]
}

/// The output bytes of [`typescript_events`], in order.
pub(crate) fn typescript_output() -> Vec<u8> {
    typescript_events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Output(b) => Some(b),
            _ => None,
        })
        .flatten()
        .collect()
}

/// A graphical session: instructions with `sync` timestamps and a key frame every 5 s.
pub(crate) fn graphical_events() -> Vec<(Duration, Event)> {
    let mut events = Vec::new();
    for i in 0..13u64 {
        let t = i * 1_000;
        if i > 0 && i % 5 == 0 {
            events.push((
                ms(t),
                Event::KeyFrame(
                    format!(
                        "4.size,1.0,4.1024,3.768;4.rect,1.0,1.0,1.0,4.1024,3.768;5.cfill,2.14,1.0,1.{},1.0,1.0,3.255;4.sync,{}.{};",
                        i % 10,
                        t.to_string().len(),
                        t
                    )
                    .into_bytes()
                    .into(),
                ),
            ));
        }
        // guacd sizes the display first.
        let size = if i == 0 {
            "4.size,1.0,4.1024,3.768;"
        } else {
            ""
        };
        let draw = format!(
            "{size}4.rect,1.0,{}.{},2.10,2.20,2.20;5.cfill,2.14,1.0,1.{},1.0,1.0,3.255;4.sync,{}.{};",
            (i * 10).to_string().len(),
            i * 10,
            i % 10,
            t.to_string().len(),
            t
        );
        events.push((ms(t), Event::Instructions(draw.into_bytes().into())));
    }
    events
}

pub(crate) fn write_secret_file(dir: &Path) -> PathBuf {
    let p = dir.join("secret.b64");
    std::fs::write(&p, secret_base64()).unwrap();
    p
}

/// Offsets of the frames of a recording file: chunk frames, then the manifest if present.
pub(crate) struct Frames {
    pub(crate) header_len: usize,
    pub(crate) chunks: Vec<std::ops::Range<usize>>,
    pub(crate) manifest: Option<std::ops::Range<usize>>,
}

pub(crate) fn frames(bytes: &[u8]) -> Frames {
    let header = zt_recorder::Header::parse(bytes).unwrap();
    let header_len = header.encoded_len as usize;
    let mut pos = header_len;
    let mut chunks = Vec::new();
    let mut manifest = None;
    while pos < bytes.len() {
        if bytes[pos] == b'M' {
            manifest = Some(pos..pos + zt_recorder::format::MANIFEST_LEN);
            break;
        }
        let len = u32::from_be_bytes(bytes[pos + 14..pos + 18].try_into().unwrap()) as usize;
        let end = pos + zt_recorder::format::FRAME_HEADER_LEN + len;
        chunks.push(pos..end);
        pos = end;
    }
    Frames {
        header_len,
        chunks,
        manifest,
    }
}

/// Fails the test with the Debian package to install when a tool is missing.
pub(crate) fn require_tool(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package `{package}` (apt-get install {package})"
    );
}
