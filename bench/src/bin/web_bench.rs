//! `web-bench`: the browser client in Debian's headless Chromium against a real `sshd`
//! through `ztproxy connect web` (WebRTC), next to the tests' native Guacamole client on the
//! same target over the same transport, in the same run:
//!
//! * **first frame**: from opening the URL (the start of the page's navigation) to the first
//!   frame the display drew (the page's `zt-frame` mark after Guacamole's display flush);
//!   for the native client, from creating the session to the first `sync` after layer 0 has
//!   a size — p50 and p99 over `--runs` runs;
//! * **keystroke to screen**: in the browser, from the key event (a real one, through the
//!   DevTools input domain) to the drawn frame that changed the display canvas's pixels; for
//!   the native client, from sending the key to the `sync` that ends the frame drawing its
//!   echo — at the shell prompt, one key at a time.
//!
//! ```text
//! cargo build --release -p zt-proxy -p zt-bench && ./scripts/setup --deps-only
//! target/release/web-bench --json bench/out/web.json
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use serde_json::json;
use zt_api::Secret;
use zt_api::control::{Conversation, CreateSessionRequest, LimitsRequest, Target, Transport};
use zt_bench::{Percentiles, millis};
use zt_guac::{Instruction, opcode};
use zt_proxy::client::api::ApiClient;
use zt_proxy::client::session::ClientSession;
use zt_tests::browser::Browser;
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::proc::{Helper, ProxyOptions, ZtProxy};
use zt_tests::servers::{Sshd, SshdOptions};

#[derive(Debug, Parser)]
#[command(about = "the browser client in Chromium against the native client, as a user sees them")]
struct Args {
    /// Runs of the first-frame measurement.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Keys typed for the keystroke latency.
    #[arg(long, default_value_t = 40)]
    keys: usize,
    /// A short run (CI smoke).
    #[arg(long)]
    quick: bool,
    /// The ztproxy binary (default: next to this one).
    #[arg(long)]
    ztproxy: Option<PathBuf>,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

const WINDOW: (u32, u32) = (800, 480);
const STEP: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize)]
struct Side {
    first_frame_ms: Percentiles,
    keystroke_to_screen_ms: Percentiles,
}

#[derive(Debug, Serialize)]
struct Results {
    cpu: String,
    runs: usize,
    keys: usize,
    browser: Side,
    native: Side,
    /// Medians of the page's marks on the way to its first frame (milliseconds since the
    /// navigation started): config fetched, candidates gathered, answer applied, data channel
    /// open, Guacamole `ready`.
    browser_first_frame_marks_ms: std::collections::BTreeMap<String, f64>,
    /// Browser over native, p50.
    first_frame_ratio: f64,
    keystroke_ratio: f64,
}

fn parameters(sshd: &Sshd) -> Vec<(String, String)> {
    vec![
        ("username".into(), sshd.user.clone()),
        ("password".into(), sshd.password.clone().unwrap_or_default()),
        ("host-key".into(), sshd.host_public_key.clone()),
    ]
}

fn ms(values: &[f64]) -> Percentiles {
    let durations: Vec<Duration> = values
        .iter()
        .map(|v| Duration::from_secs_f64(v / 1e3))
        .collect();
    Percentiles::of(&durations, millis)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.runs = args.runs.min(3);
        args.keys = args.keys.min(5);
    }
    let bin = zt_bench::ztproxy_binary(args.ztproxy.as_deref())?;
    let sshd = Sshd::start_with(&SshdOptions {
        test_user: true,
        config: vec!["LogLevel ERROR".into()],
        ..SshdOptions::default()
    })?;
    let proxy = ZtProxy::start(
        &bin,
        &ProxyOptions {
            log_level: "warn".into(),
            ..ProxyOptions::default()
        },
    )?;
    let api = proxy.api();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("parameters.json");
    let map: serde_json::Map<String, serde_json::Value> = parameters(&sshd)
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    std::fs::write(&file, serde_json::Value::Object(map).to_string())?;
    let target = format!("127.0.0.1:{}", sshd.port);
    let helper = Helper::start(
        &bin,
        &[
            "connect",
            "web",
            "--api",
            &proxy.api_arg(),
            "--target",
            &target,
            "--protocol",
            "ssh",
            "--parameters-file",
            file.to_str().unwrap_or_default(),
        ],
    )?;
    let url = helper.field("url");

    // The browser.
    let mut browser = Browser::start()?;
    let mut first_frames = Vec::new();
    let mut marks: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for _ in 0..args.runs {
        let answer = browser
            .call(json!({"op": "first_frame", "url": url, "width": WINDOW.0, "height": WINDOW.1}))
            .await?;
        first_frames.push(answer["ms"].as_f64().unwrap_or(f64::NAN));
        if let Some(seen) = answer["marks"].as_object() {
            for (name, at) in seen {
                marks.entry(name.clone()).or_default().extend(at.as_f64());
            }
        }
    }
    // The last page is connected: wait for the prompt, then type.
    browser.wait_state("connected", STEP).await?;
    wait_browser_prompt(&mut browser).await?;
    let keys: Vec<String> = (0..args.keys)
        .map(|n| ((b'a' + (n % 26) as u8) as char).to_string())
        .collect();
    let answer = browser
        .call(json!({"op": "key_latency", "keys": keys}))
        .await?;
    let browser_keys: Vec<f64> = answer["latencies"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    browser.close().await;

    // The native client, same target, same transport.
    let mut native_first = Vec::new();
    let mut last = None;
    for _ in 0..args.runs {
        let started = Instant::now();
        let (session, mut client) = native_session(&api, &sshd).await?;
        let mut display = zt_display::Display::new(zt_display::DisplayLimits::default());
        loop {
            let instruction = next(&mut client).await?;
            let _ = display.handle(&instruction);
            if instruction.is(opcode::SYNC) && display.size() != (0, 0) {
                break;
            }
        }
        native_first.push(started.elapsed().as_secs_f64() * 1e3);
        if let Some((old, _, _)) = last.replace((session, client, display)) {
            let old: ClientSession = old;
            old.close().await;
        }
    }
    let (_session, mut client, mut display) = last.expect("at least one run");
    loop {
        let instruction = next(&mut client).await?;
        let _ = display.handle(&instruction);
        if instruction.is(opcode::SYNC) && prompt(&display) {
            break;
        }
    }
    let mut native_keys = Vec::new();
    for n in 0..args.keys {
        // Keys a tenth of a second apart, as in the browser.
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            let _ = client
                .next(until.saturating_duration_since(Instant::now()))
                .await;
        }
        let keysym = u32::from(b'a' + (n % 26) as u8);
        let sent = Instant::now();
        for pressed in ["1", "0"] {
            client
                .send(&Instruction::new(
                    opcode::KEY,
                    &[keysym.to_string().as_str(), pressed],
                ))
                .await?;
        }
        let mut drew = false;
        loop {
            let instruction = next(&mut client).await?;
            if instruction.is(opcode::SYNC) {
                if drew {
                    break;
                }
            } else if !instruction.is(opcode::NOP) {
                drew = true;
            }
        }
        native_keys.push(sent.elapsed().as_secs_f64() * 1e3);
    }

    let browser_side = Side {
        first_frame_ms: ms(&first_frames),
        keystroke_to_screen_ms: ms(&browser_keys),
    };
    let native_side = Side {
        first_frame_ms: ms(&native_first),
        keystroke_to_screen_ms: ms(&native_keys),
    };
    let results = Results {
        cpu: zt_bench::cpu_model(),
        runs: args.runs,
        keys: args.keys,
        browser_first_frame_marks_ms: marks
            .iter()
            .map(|(name, at)| (name.clone(), zt_bench::median(at)))
            .collect(),
        first_frame_ratio: browser_side.first_frame_ms.p50 / native_side.first_frame_ms.p50,
        keystroke_ratio: browser_side.keystroke_to_screen_ms.p50
            / native_side.keystroke_to_screen_ms.p50,
        browser: browser_side,
        native: native_side,
    };
    let text = serde_json::to_string_pretty(&results)?;
    println!("{text}");
    if let Some(path) = &args.json {
        std::fs::write(path, &text)?;
    }
    Ok(())
}

async fn native_session(
    api: &ApiClient,
    sshd: &Sshd,
) -> anyhow::Result<(ClientSession, GuacClient)> {
    let request = CreateSessionRequest {
        transport: Transport::Webrtc,
        conversation: Conversation::Connection,
        protocol: Some("ssh".into()),
        target: Target {
            host: "127.0.0.1".into(),
            port: sshd.port,
        },
        offer: None,
        sealed_offer: None,
        signalling: None,
        parameters: parameters(sshd)
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect(),
        limits: LimitsRequest::default(),
        route: None,
        recording: None,
        resource_id: None,
        user: Some("bench".into()),
    };
    let options =
        zt_tests::client::client_options(Transport::Webrtc, ([127, 0, 0, 1], sshd.port).into());
    let (session, _) = ClientSession::connect_with(api, request, &options).await?;
    let client = GuacClient::connect(
        &session,
        &Handshake {
            select: "ssh".into(),
            size: (WINDOW.0, WINDOW.1, 96),
            ..Handshake::default()
        },
    )
    .await?;
    Ok((session, client))
}

async fn next(client: &mut GuacClient) -> anyhow::Result<Instruction> {
    client
        .next(STEP)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the connection closed"))
}

fn prompt(display: &zt_display::Display) -> bool {
    let screen = display.screen();
    zt_terminal::readback::read_text(
        screen.pixels(),
        screen.width(),
        screen.height(),
        12.0,
        96,
        "",
    )
    .iter()
    .any(|l| l.ends_with('$'))
}

async fn wait_browser_prompt(browser: &mut Browser) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP;
    loop {
        let lines = browser.screenshot().await?.lines(12.0);
        if lines.iter().any(|l| l.ends_with('$')) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no prompt in the browser:\n{}",
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
