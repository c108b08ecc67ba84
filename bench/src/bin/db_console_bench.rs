//! `db-console-bench`: the database consoles through ztproxy, as a user sees them (800×480 at
//! 96 DPI, over QUIC), against `psql` and `mysql` run directly in a pty on the same machine
//! in the same run, on servers the benchmark starts (`initdb`, `mariadb-install-db`):
//!
//! * time from creating the session to the first prompt on the screen, against the client
//!   started in a pty until it prints its prompt;
//! * time to display a 100,000-row result (typing the query to the prompt after the row
//!   count on the screen), against the client running the same query in a pty to its end;
//! * bytes sent to the client for that result, against the bytes the client wrote to its
//!   pty (what a terminal, or guacd's terminal, is given to draw).
//!
//! ```text
//! cargo build --release -p zt-proxy -p zt-bench
//! target/release/db-console-bench --json bench/out/db-console.json
//! ```
//!
//! Medians of `--rounds` rounds; ratios are ztproxy ÷ the direct client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use zt_api::Secret;
use zt_api::control::{Conversation, CreateSessionRequest, LimitsRequest, Target, Transport};
use zt_proxy::client::api::ApiClient;
use zt_proxy::client::session::ClientSession;
use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::servers::{Mariadb, Postgres};
use zt_tests::term::Term;

#[derive(Debug, Parser)]
#[command(about = "database consoles through ztproxy against psql and mysql in a pty")]
struct Args {
    /// Rounds per measurement (medians are reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// A short run (CI smoke): one round, 10,000 rows.
    #[arg(long)]
    quick: bool,
    /// The ztproxy binary (default: next to this one).
    #[arg(long)]
    ztproxy: Option<PathBuf>,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

const STEP: Duration = Duration::from_secs(120);

#[derive(Debug, Default, Serialize)]
struct Results {
    cpu: String,
    rows: u64,
    engines: BTreeMap<String, Engine>,
}

#[derive(Debug, Default, Serialize)]
struct Engine {
    ztproxy_first_prompt_ms: f64,
    direct_first_prompt_ms: f64,
    first_prompt_ratio: f64,
    ztproxy_result_ms: f64,
    direct_result_ms: f64,
    result_ratio: f64,
    ztproxy_result_bytes: f64,
    direct_result_bytes: f64,
    bytes_ratio: f64,
}

/// One console kind: how to reach it through ztproxy and directly.
struct Kind {
    protocol: &'static str,
    port: u16,
    user: String,
    password: String,
    database: &'static str,
    prompt: &'static str,
    /// The direct client's prompt (psql's ends in `#` for a superuser).
    direct_prompt: &'static str,
    query: String,
    footer: String,
    /// What the direct client's output ends with (the mysql client in batch mode prints no
    /// row count).
    direct_marker: String,
    /// The direct client, interactive (`-c`-less), and running the query.
    interactive: Vec<String>,
    batch: Vec<String>,
    env: Vec<(&'static str, String)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rounds = if args.quick { 1 } else { args.rounds.max(1) };
    let rows: u64 = if args.quick { 10_000 } else { 100_000 };
    let pg = Postgres::start()?;
    let maria = Mariadb::start()?;
    let psql = pg.psql().display().to_string();
    let port = |p: u16| p.to_string();
    let kinds = [
        Kind {
            protocol: "postgresql",
            port: pg.port,
            user: pg.user.clone(),
            password: pg.password.clone(),
            database: "postgres",
            prompt: "postgres=>",
            direct_prompt: "postgres=",
            query: format!("select g, md5(g::text) from generate_series(1, {rows}) g;"),
            footer: format!("({rows} rows)"),
            direct_marker: format!("({rows} rows)"),
            interactive: vec![
                psql.clone(),
                "-h".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port(pg.port),
                "-U".into(),
                pg.user.clone(),
                "postgres".into(),
            ],
            batch: vec![
                psql.clone(),
                "-h".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port(pg.port),
                "-U".into(),
                pg.user.clone(),
                "-P".into(),
                "pager=off".into(),
                "-c".into(),
                format!("select g, md5(g::text) from generate_series(1, {rows}) g;"),
                "postgres".into(),
            ],
            env: vec![("PGPASSWORD", pg.password.clone())],
        },
        Kind {
            protocol: "mysql",
            port: maria.port,
            user: maria.user.clone(),
            password: maria.password.clone(),
            database: "shop",
            prompt: "MariaDB [shop]>",
            direct_prompt: "MariaDB [shop]>",
            query: format!("select seq, md5(seq) from seq_1_to_{rows};"),
            footer: format!("{rows} rows in set"),
            direct_marker: format!("| {rows} |"),
            interactive: vec![
                "mariadb".into(),
                "--no-defaults".into(),
                "-h".into(),
                "127.0.0.1".into(),
                "-P".into(),
                port(maria.port),
                "-u".into(),
                maria.user.clone(),
                "shop".into(),
            ],
            batch: vec![
                "mariadb".into(),
                "--no-defaults".into(),
                "-h".into(),
                "127.0.0.1".into(),
                "-P".into(),
                port(maria.port),
                "-u".into(),
                maria.user.clone(),
                "-t".into(),
                "-e".into(),
                format!("select seq, md5(seq) from seq_1_to_{rows};"),
                "shop".into(),
            ],
            env: vec![("MYSQL_PWD", maria.password.clone())],
        },
    ];
    let bin = zt_bench::ztproxy_binary(args.ztproxy.as_deref())?;
    let proxy = ZtProxy::start(&bin, &ProxyOptions::default())?;
    let api = proxy.api();
    let mut results = Results {
        cpu: zt_bench::cpu_model(),
        rows,
        ..Results::default()
    };
    for kind in &kinds {
        let mut first = (Vec::new(), Vec::new());
        let mut result = (Vec::new(), Vec::new());
        let mut bytes = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (prompt, shown, sent) = through_ztproxy(&api, kind).await?;
            first.0.push(prompt);
            result.0.push(shown);
            bytes.0.push(sent);
            first.1.push(direct_first_prompt(kind)?);
            let (elapsed, written) = direct_result(kind)?;
            result.1.push(elapsed);
            bytes.1.push(written);
        }
        let median = |v: &[f64]| zt_bench::median(v);
        let engine = Engine {
            ztproxy_first_prompt_ms: median(&first.0),
            direct_first_prompt_ms: median(&first.1),
            first_prompt_ratio: median(&first.0) / median(&first.1),
            ztproxy_result_ms: median(&result.0),
            direct_result_ms: median(&result.1),
            result_ratio: median(&result.0) / median(&result.1),
            ztproxy_result_bytes: median(&bytes.0),
            direct_result_bytes: median(&bytes.1),
            bytes_ratio: median(&bytes.0) / median(&bytes.1),
        };
        results.engines.insert(kind.protocol.to_owned(), engine);
    }
    let json = serde_json::to_string_pretty(&results)?;
    println!("{json}");
    if let Some(path) = &args.json {
        std::fs::write(path, &json)?;
    }
    Ok(())
}

/// Through ztproxy: (ms to the first prompt, ms to the result's last screen, bytes of it).
async fn through_ztproxy(api: &ApiClient, kind: &Kind) -> anyhow::Result<(f64, f64, f64)> {
    let started = Instant::now();
    let parameters = [
        ("username", kind.user.as_str()),
        ("password", kind.password.as_str()),
        ("database", kind.database),
    ];
    let request = CreateSessionRequest {
        transport: Transport::Quic,
        conversation: Conversation::Connection,
        protocol: Some(kind.protocol.into()),
        target: Target {
            host: "127.0.0.1".into(),
            port: kind.port,
        },
        offer: None,
        sealed_offer: None,
        signalling: None,
        parameters: parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Secret::new((*v).to_owned())))
            .collect(),
        limits: LimitsRequest::default(),
        route: None,
        recording: None,
        resource_id: None,
        user: None,
    };
    let options =
        zt_tests::client::client_options(Transport::Quic, ([127, 0, 0, 1], kind.port).into());
    let (session, id) = ClientSession::connect_with(api, request, &options).await?;
    let mut term = Term::connect_to(&session, kind.protocol).await;
    let prompt = kind.prompt;
    term.wait_for("the first prompt", STEP, |l| l.iter().any(|l| l == prompt))
        .await;
    let first = started.elapsed();
    let before: usize = term.received.iter().map(|i| i.raw().len()).sum();
    let typed = Instant::now();
    term.type_text(&kind.query).await;
    term.type_text("\n").await;
    let footer = kind.footer.clone();
    term.wait_for("the result", STEP, |lines| {
        lines.contains(&footer)
            && lines
                .iter()
                .rev()
                .find(|l| !l.is_empty())
                .is_some_and(|l| l == prompt)
    })
    .await;
    let shown = typed.elapsed();
    let after: usize = term.received.iter().map(|i| i.raw().len()).sum();
    api.delete_session(&id).await?;
    drop(session);
    Ok((
        zt_bench::millis(first),
        zt_bench::millis(shown),
        (after - before) as f64,
    ))
}

/// `script` gives the client a pty, as a user's terminal would.
fn in_pty(kind: &Kind, argv: &[String]) -> Command {
    let quoted: Vec<String> = argv
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let mut command = Command::new("script");
    command
        .args(["--quiet", "--return", "--command"])
        .arg(quoted.join(" "))
        .arg("/dev/null");
    for (name, value) in &kind.env {
        command.env(name, value);
    }
    command
}

/// The client started in a pty until its prompt shows: ms.
fn direct_first_prompt(kind: &Kind) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut child = in_pty(kind, &kind.interactive)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().unwrap();
    let (chunks_tx, chunks) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || chunks_tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let elapsed = loop {
        let chunk = chunks.recv_timeout(Duration::from_secs(30));
        let Ok(chunk) = chunk else {
            let _ = child.kill();
            anyhow::bail!(
                "no prompt from {}: {}",
                kind.protocol,
                String::from_utf8_lossy(&seen)
            );
        };
        seen.extend_from_slice(&chunk);
        if String::from_utf8_lossy(&seen).contains(kind.direct_prompt) {
            break started.elapsed();
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(zt_bench::millis(elapsed))
}

/// The client running the query in a pty to its end: (ms, bytes it wrote).
fn direct_result(kind: &Kind) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let output = in_pty(kind, &kind.batch)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    let elapsed = started.elapsed();
    anyhow::ensure!(output.status.success(), "{} failed", kind.protocol);
    anyhow::ensure!(
        String::from_utf8_lossy(&output.stdout).contains(&kind.direct_marker),
        "{} did not print its result",
        kind.protocol
    );
    Ok((zt_bench::millis(elapsed), output.stdout.len() as f64))
}
