//! A backend written only against `zt_proxy::connection::backend`, with no change to the
//! client handshake, the filter, the recording or the session code: the template for the
//! native protocols.
//!
//! [`EchoBackend`] runs its engine in a task at the other end of a `tokio::io::duplex` pipe:
//! it draws a fixed image (a red square with a blue one inside it), and for every key the
//! user presses it paints a cell in a colour made from the key's keysym; a `size` from the
//! client is answered with a `sync`. The daemon runs in this process with the backend serving
//! `"route": "native"`; the client is the tests' Guacamole client over QUIC. What the user
//! sees is checked in the display model's pixels, live and in the exported recording.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;
use zt_api::Secret;
use zt_api::control::{
    ApiError, Conversation, CreateSessionRequest, LimitsRequest, RecordingRequest, Route, Target,
    Transport,
};
use zt_api::protocol::Protocol;
use zt_guac::{Decoder, Instruction, Limits, opcode};
use zt_guacd::ClientInfo;
use zt_proxy::client::api::{ApiAddress, ApiClient};
use zt_proxy::client::session::ClientSession;
use zt_proxy::connection::backend::{
    Backend, BackendError, BackendFactory, BackendRequest, BackendStream, Backends, OpenContext,
};
use zt_proxy::server::{ServeOptions, serve_with};
use zt_tests::guac_client::{GuacClient, Handshake};

use super::recording::{export, recording_ended, screen};
use super::{RESOURCE_SECRET, STEP, options};

const SQUARE: u32 = 64;
const RED: [u8; 4] = [255, 0, 0, 255];
const BLUE: [u8; 4] = [0, 0, 255, 255];
/// Where the n-th key's cell is painted: a row of 8 × 8 cells below the square.
const CELL: u32 = 8;

/// The colour a key is echoed in.
fn key_colour(keysym: u32) -> [u8; 4] {
    [
        (keysym & 0xff) as u8,
        0x80,
        ((keysym >> 8) & 0xff) as u8,
        255,
    ]
}

struct EchoFactory;

impl BackendFactory for EchoFactory {
    fn make(&self, request: &BackendRequest<'_>) -> Result<Box<dyn Backend>, ApiError> {
        // A backend sees the session's protocol, target and parameters; this one needs none.
        assert_eq!(request.parameters.protocol(), Protocol::Vnc);
        Ok(Box::new(EchoBackend))
    }
}

struct EchoBackend;

#[async_trait::async_trait]
impl Backend for EchoBackend {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn protocol_metric(&self) -> &'static str {
        "echo_protocol"
    }

    async fn open(
        &mut self,
        display: &ClientInfo,
        _context: &OpenContext,
    ) -> Result<BackendStream, BackendError> {
        let (ours, engine) = tokio::io::duplex(64 * 1024);
        tokio::spawn(run_engine(engine, display.width, display.height));
        let (reader, writer) = tokio::io::split(ours);
        Ok(BackendStream {
            reader: Box::new(reader),
            writer: Box::new(writer),
            leftover: bytes::Bytes::new(),
            id: "echo-1".into(),
            finished: None,
        })
    }
}

/// The engine: a fixed image, then one cell per key.
async fn run_engine(mut pipe: DuplexStream, width: u32, height: u32) {
    let mut out = BytesMut::new();
    zt_guac::encode(
        opcode::SIZE,
        &["0".to_owned(), width.to_string(), height.to_string()],
        &mut out,
    );
    let mut pixels = vec![RED; (SQUARE * SQUARE) as usize];
    for y in 16..48 {
        for x in 16..48 {
            pixels[(y * SQUARE + x) as usize] = BLUE;
        }
    }
    let image = zt_display::Image {
        width: SQUARE,
        height: SQUARE,
        pixels: &pixels,
    };
    zt_display::encode_image(&mut out, 1, 0, (0, 0), &image);
    let mut frame = 1u64;
    zt_guac::encode(opcode::SYNC, &[frame.to_string()], &mut out);
    if pipe.write_all(&out).await.is_err() {
        return;
    }
    let mut decoder = Decoder::new(Limits::default());
    let mut keys = 0u32;
    let mut buf = vec![0; 16 * 1024];
    loop {
        let Ok(n) = pipe.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        decoder.feed(&buf[..n]);
        let mut out = BytesMut::new();
        while let Ok(Some(instruction)) = decoder.poll_instruction() {
            let frame_ends = match instruction.opcode() {
                opcode::KEY if instruction.arg(1) == Some("1") => {
                    let keysym: u32 = instruction.arg(0).and_then(|k| k.parse().ok()).unwrap();
                    let [r, g, b, a] = key_colour(keysym);
                    let x = (keys * CELL).to_string();
                    let y = (SQUARE + CELL).to_string();
                    let cell = CELL.to_string();
                    zt_guac::encode(opcode::RECT, &["0", &x, &y, &cell, &cell], &mut out);
                    let colour = [r, g, b, a].map(|c| c.to_string());
                    zt_guac::encode(
                        opcode::CFILL,
                        &["14", "0", &colour[0], &colour[1], &colour[2], &colour[3]],
                        &mut out,
                    );
                    keys += 1;
                    true
                }
                opcode::SIZE => true,
                opcode::DISCONNECT => return,
                _ => false,
            };
            if frame_ends {
                frame += 1;
                zt_guac::encode(opcode::SYNC, &[frame.to_string()], &mut out);
            }
        }
        if !out.is_empty() && pipe.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A daemon in this process serving `"route": "native"` with the echo backend.
struct Daemon {
    api: ApiClient,
    shutdown: CancellationToken,
    recordings: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl Daemon {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let recordings = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let text = format!(
            "[control]\nsocket = \"{}\"\n\n[quic]\nlisten = \"127.0.0.1:0\"\n\n\
             [recordings]\ndirectory = \"{}\"\n",
            socket.display(),
            recordings.path().display()
        );
        let path = dir.path().join("ztproxy.toml");
        let settings = zt_proxy::config::Config::parse(&text, &path)
            .unwrap()
            .validate(&path)
            .unwrap();
        let shutdown = CancellationToken::new();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let mut serve = ServeOptions::default();
        serve.backends = Backends::default().with_native(Arc::new(EchoFactory));
        serve.ready = Some(ready_tx);
        tokio::spawn(serve_with(settings, shutdown.clone(), serve));
        let ready = tokio::time::timeout(STEP, ready).await.unwrap().unwrap();
        Self {
            api: ApiClient::new(ApiAddress::Unix(ready.control_socket), None),
            shutdown,
            recordings,
            _dir: dir,
        }
    }

    async fn session(&self, parameters: &[(&str, &str)]) -> (ClientSession, String) {
        let request = CreateSessionRequest {
            transport: Transport::Quic,
            conversation: Conversation::Connection,
            protocol: Some("vnc".into()),
            target: Target {
                host: "127.0.0.1".into(),
                port: 5900,
            },
            offer: None,
            sealed_offer: None,
            signalling: None,
            parameters: parameters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Secret::new((*v).to_owned())))
                .collect(),
            limits: LimitsRequest::default(),
            route: Some(Route::Native),
            recording: Some(RecordingRequest {
                graphical: true,
                typescript: false,
                resource_secret: Some(Secret::new(RESOURCE_SECRET.into())),
                recipients: Vec::new(),
                fail_closed: None,
            }),
            resource_id: Some("res-echo".into()),
            user: Some("alice".into()),
        };
        ClientSession::connect_with(&self.api, request, &options(Transport::Quic))
            .await
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Reads (into `seen`) until the backend's `sync` after `frame`.
async fn until_sync_after(client: &mut GuacClient, seen: &mut Vec<Instruction>, frame: u64) {
    loop {
        let instruction = client
            .next(STEP)
            .await
            .unwrap()
            .expect("the channel is open");
        let done = instruction.is(opcode::SYNC)
            && instruction.arg(0).and_then(|t| t.parse::<u64>().ok()) > Some(frame);
        seen.push(instruction);
        if done {
            return;
        }
    }
}

fn key(keysym: u32, pressed: bool) -> Instruction {
    Instruction::new(
        opcode::KEY,
        &[keysym.to_string(), u8::from(pressed).to_string()],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_backend_draws_and_echoes_keys_through_the_unchanged_connection_code() {
    let daemon = Daemon::start().await;
    let mut events = daemon.api.events(Some(0)).await.unwrap();
    let (session, id) = daemon.session(&[]).await;
    let mut client = GuacClient::connect(&session, &Handshake::default())
        .await
        .unwrap();
    assert_eq!(client.ready_id, format!("${id}"));

    // The fixed image, on the screen the client asked for.
    let mut seen = Vec::new();
    until_sync_after(&mut client, &mut seen, 0).await;
    let first = screen(&seen);
    assert_eq!((first.width(), first.height()), (1280, 720));
    assert_eq!(first.pixel(2, 2), Some(RED));
    assert_eq!(first.pixel(32, 32), Some(BLUE));
    assert_eq!(
        first.pixel(100, 100).map(|p| p[3]),
        Some(0),
        "nothing drawn there"
    );

    // Two keys, each echoed as a cell in its colour.
    for keysym in [0x61, 0xff0d] {
        client.send(&key(keysym, true)).await.unwrap();
        client.send(&key(keysym, false)).await.unwrap();
    }
    until_sync_after(&mut client, &mut seen, 2).await;
    let typed = screen(&seen);
    assert_eq!(typed.pixel(4, SQUARE + CELL + 4), Some(key_colour(0x61)));
    assert_eq!(
        typed.pixel(CELL + 4, SQUARE + CELL + 4),
        Some(key_colour(0xff0d))
    );
    assert_eq!(typed.pixel(32, 32), Some(BLUE));

    // The session's end reaches the client as for any connection, and the recording holds
    // what it saw.
    daemon.api.delete_session(&id).await.unwrap();
    seen.extend(client.collect_until_closed(STEP).await.unwrap());
    assert!(seen.iter().any(|i| i.is(opcode::ERROR)), "no farewell");
    let (recording, status) = recording_ended(&mut events, &id).await;
    assert_eq!(status, "finalised");
    let secret = daemon.recordings.path().join("secret");
    std::fs::write(&secret, RESOURCE_SECRET).unwrap();
    let exported = export(&daemon.recordings.path().join(recording), &secret, None);
    let replayed = screen(&exported);
    assert_eq!(
        replayed.differing_pixels(&typed),
        0,
        "the recording shows another screen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_filter_applies_to_a_new_backend() {
    let daemon = Daemon::start().await;
    let (session, _id) = daemon.session(&[("read-only", "true")]).await;
    let mut client = GuacClient::connect(&session, &Handshake::default())
        .await
        .unwrap();
    let mut seen = Vec::new();
    until_sync_after(&mut client, &mut seen, 0).await;
    // A key, then a resize, which read-only does not drop: input keeps its order, so when
    // the resize's `sync` arrives the key would have been echoed before it.
    client.send(&key(0x61, true)).await.unwrap();
    client
        .send(&Instruction::new(opcode::SIZE, &["1280", "720"]))
        .await
        .unwrap();
    until_sync_after(&mut client, &mut seen, 1).await;
    let shown = screen(&seen);
    assert_eq!(
        shown.pixel(4, SQUARE + CELL + 4).map(|p| p[3]),
        Some(0),
        "a read-only session's key reached the backend"
    );
    assert_eq!(shown.pixel(32, 32), Some(BLUE));
}
