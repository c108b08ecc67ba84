//! The PostgreSQL console against a real server the tests start (`initdb` into a temporary
//! directory): statements and their tables on the screen, meta commands, Ctrl-C cancelling a
//! ten-million-row query on the server, and the audit's redaction of passwords.

use std::time::Duration;

use zt_api::audit::AuditEvent;
use zt_api::control::Transport;
use zt_guac::Status;
use zt_tests::servers::Postgres;
use zt_tests::term::{STEP, Term};

use super::{Proxy, TRANSPORTS, events_until_ended};

/// The prompt of the `postgres` database, as the screen shows it (trailing space trimmed).
const PROMPT: &str = "postgres=>";

fn login(pg: &Postgres) -> Vec<(&'static str, String)> {
    vec![
        ("username", pg.user.clone()),
        ("password", pg.password.clone()),
        ("database", "postgres".to_owned()),
    ]
}

fn pairs<'a>(parameters: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    parameters.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Opens a console and waits for its first prompt.
async fn console(
    fx: &Proxy,
    pg: &Postgres,
    transport: Transport,
) -> (Term, String, zt_proxy::client::session::ClientSession) {
    let parameters = login(pg);
    let (session, id) = fx
        .session(transport, "postgresql", pg.port, &pairs(&parameters), None)
        .await;
    let mut term = Term::connect_to(&session, "postgresql").await;
    term.wait_for("the first prompt", STEP, |lines| {
        lines.iter().any(|l| l == PROMPT)
    })
    .await;
    (term, id, session)
}

/// Types `statement` and Return, and waits until `shown` holds of the screen with a fresh
/// prompt on the last non-empty row.
async fn run(
    term: &mut Term,
    statement: &str,
    what: &str,
    shown: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    term.type_text(statement).await;
    term.type_text("\n").await;
    term.wait_for(what, STEP, |lines| {
        shown(lines)
            && lines
                .iter()
                .rev()
                .find(|l| !l.is_empty())
                .is_some_and(|l| l == PROMPT)
    })
    .await
}

/// Whether the last row with text is a fresh prompt.
fn last_is_prompt(lines: &[String]) -> bool {
    lines
        .iter()
        .rev()
        .find(|l| !l.is_empty())
        .is_some_and(|l| l == PROMPT)
}

/// Presses Ctrl-C.
pub(crate) async fn ctrl_c(term: &mut Term) {
    term.client
        .send(&zt_guac::Instruction::new(
            zt_guac::opcode::KEY,
            &["65507", "1"],
        ))
        .await
        .unwrap();
    term.key(u32::from('c')).await;
    term.client
        .send(&zt_guac::Instruction::new(
            zt_guac::opcode::KEY,
            &["65507", "0"],
        ))
        .await
        .unwrap();
}

fn queries(events: &[AuditEvent]) -> Vec<(String, u64, Option<String>, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            AuditEvent::DbQuery {
                statement,
                rows,
                error_code,
                cancelled,
                database,
                ..
            } => {
                assert_eq!(database, "postgres");
                Some((statement.clone(), *rows, error_code.clone(), *cancelled))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_their_tables_show_on_the_screen_over_both_transports() {
    let pg = Postgres::start().unwrap();
    let fx = Proxy::start();
    for transport in TRANSPORTS {
        let mut events = fx.api.events(Some(0)).await.unwrap();
        let (mut term, id, session) = console(&fx, &pg, transport).await;
        let table = format!("fruit{}", format!("{transport:?}").to_lowercase());
        run(
            &mut term,
            &format!("create table {table} (id int primary key, name text, price numeric(6,2));"),
            "CREATE TABLE",
            |l| l.iter().any(|l| l == "CREATE TABLE"),
        )
        .await;
        // A statement over two lines, under the continuation prompt.
        term.type_text(&format!("insert into {table} values\n"))
            .await;
        run(
            &mut term,
            "(1, 'apple', 0.5), (2, 'kiwi', NULL), (10, 'fig', 12.25);",
            "INSERT 0 3",
            |l| {
                l.iter().any(|l| l == "INSERT 0 3") && l.iter().any(|l| l.starts_with("postgres->"))
            },
        )
        .await;
        let lines = run(
            &mut term,
            &format!("select * from {table} order by id;"),
            "the table",
            |l| l.iter().any(|l| l == "(3 rows)"),
        )
        .await;
        term.screenshot(&format!("postgres-{transport:?}"));
        let at = lines
            .iter()
            .position(|l| l == " id | name  | price")
            .unwrap_or_else(|| panic!("{lines:#?}"));
        assert_eq!(
            lines[at..at + 5],
            [
                " id | name  | price",
                "----+-------+-------",
                "  1 | apple |  0.50",
                "  2 | kiwi  |  NULL",
                " 10 | fig   | 12.25",
            ]
        );
        // psql's meta commands.
        run(&mut term, "\\dt", "\\dt's listing", |l| {
            l.iter()
                .any(|l| l.contains(&format!("| {table}")) && l.contains("| table"))
        })
        .await;
        run(&mut term, &format!("\\d {table}"), "\\d's columns", |l| {
            l.iter()
                .any(|l| l.starts_with(" price") && l.contains("numeric(6,2)"))
        })
        .await;
        // A server error, as the server words it.
        run(&mut term, "select nope;", "the error", |l| {
            l.iter()
                .any(|l| l.contains("ERROR:  column \"nope\" does not exist"))
        })
        .await;
        assert!(!term.received_text().contains(&pg.password));
        // Ctrl-D leaves. The console may be gone before the keys' releases are sent: only
        // the presses must arrive.
        for (keysym, pressed) in [("65507", "1"), ("100", "1"), ("100", "0"), ("65507", "0")] {
            let sent = term
                .client
                .send(&zt_guac::Instruction::new(
                    zt_guac::opcode::KEY,
                    &[keysym, pressed],
                ))
                .await;
            if pressed == "1" {
                sent.unwrap();
            }
        }
        term.until_closed().await;
        let events = events_until_ended(&mut events, &id).await;
        let ran = queries(&events);
        let statements: Vec<&str> = ran.iter().map(|q| q.0.as_str()).collect();
        assert_eq!(
            statements,
            [
                format!("create table {table} (id int primary key, name text, price numeric(6,2));").as_str(),
                format!("insert into {table} values\n(1, 'apple', 0.5), (2, 'kiwi', NULL), (10, 'fig', 12.25);").as_str(),
                format!("select * from {table} order by id;").as_str(),
                "\\dt",
                &format!("\\d {table}"),
                "select nope;",
            ]
        );
        assert_eq!(ran[1].1, 3);
        assert_eq!(ran[2].1, 3);
        assert_eq!(ran[5].2.as_deref(), Some("42703"));
        assert!(
            events.iter().any(|e| matches!(
                e,
                AuditEvent::DbDisconnected { reason, statements: 6, .. } if reason == "user_left"
            )),
            "{events:?}"
        );
        // The rows are in the server.
        assert_eq!(
            pg.query(&format!(
                "select string_agg(name, ',' order by id) from {table}"
            ))
            .unwrap(),
            "apple,kiwi,fig"
        );
        drop(session);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_a_ten_million_row_query_on_the_server_in_bounded_memory() {
    let pg = Postgres::start().unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (mut term, id, session) = console(&fx, &pg, Transport::Webrtc).await;
    let before = zt_tests::proc::rss_kib(fx.proxy.pid()).unwrap();
    term.type_text("select g, md5(g::text) from generate_series(1, 10000000) g;\n")
        .await;
    // Rows stream: the layout's first rows reach the screen long before the end.
    term.wait_for("rows streaming", STEP, |lines| {
        lines
            .iter()
            .filter(|l| l.contains(" | ") && l.trim_start().starts_with(char::is_numeric))
            .count()
            > 10
    })
    .await;
    // The server is running it.
    let running = "select count(*) from pg_stat_activity where state = 'active' and query like 'select g, md5%'";
    assert_eq!(pg.query(running).unwrap(), "1");
    ctrl_c(&mut term).await;
    let lines = term
        .wait_for("the cancellation", Duration::from_secs(60), |lines| {
            lines
                .iter()
                .any(|l| l == "ERROR:  canceling statement due to user request")
                && last_is_prompt(lines)
        })
        .await;
    term.screenshot("postgres-cancelled");
    assert!(!lines.iter().any(|l| l.starts_with("(10000000 rows)")));
    assert_eq!(
        pg.query(running).unwrap(),
        "0",
        "the query still runs on the server"
    );
    let after = zt_tests::proc::rss_kib(fx.proxy.pid()).unwrap();
    assert!(
        after < before + 64 * 1024,
        "ztproxy grew from {before} KiB to {after} KiB"
    );
    // The console still works.
    run(&mut term, "select 6 * 7 as answer;", "42", |l| {
        l.iter().any(|l| l == "     42")
    })
    .await;
    fx.api.delete_session(&id).await.unwrap();
    let ran = queries(&events_until_ended(&mut events, &id).await);
    assert_eq!(ran[0].2.as_deref(), Some("57014"), "{ran:?}");
    assert!(ran[0].3, "cancelled: {ran:?}");
    assert_eq!(ran[1].1, 1);
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_redacted_from_the_audit_and_a_wrong_one_is_refused() {
    let pg = Postgres::start().unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (mut term, id, session) = console(&fx, &pg, Transport::Quic).await;
    let statements = [
        "create role auditor login password 'Typed-Secret-1';".to_owned(),
        "alter user auditor with encrypted password $pw$Typed-Secret-2$pw$;".to_owned(),
        format!("select '{}' as injected;", pg.password),
    ];
    for statement in &statements {
        term.type_text(statement).await;
        term.type_text("\n").await;
    }
    term.wait_for("three results", STEP, |l| {
        l.iter().any(|l| l == "(1 row)") && last_is_prompt(l)
    })
    .await;
    fx.api.delete_session(&id).await.unwrap();
    let all = events_until_ended(&mut events, &id).await;
    let ran = queries(&all);
    assert_eq!(ran.len(), 3, "{ran:?}");
    assert_eq!(ran[0].0, "create role auditor login password '***';");
    assert_eq!(
        ran[1].0,
        "alter user auditor with encrypted password '***';"
    );
    assert_eq!(ran[2].0, "select '***' as injected;");
    let audit = format!("{all:?}");
    for secret in ["Typed-Secret-1", "Typed-Secret-2", pg.password.as_str()] {
        assert!(!audit.contains(secret), "{secret} reached the audit");
    }
    drop(session);

    // A wrong password: the session ends before the console, with the reason.
    let mut parameters = login(&pg);
    parameters[1].1 = "wrong-password".to_owned();
    let (session, _id) = fx
        .session(
            Transport::Quic,
            "postgresql",
            pg.port,
            &pairs(&parameters),
            None,
        )
        .await;
    let client = zt_tests::guac_client::GuacClient::start(
        &session,
        &zt_tests::guac_client::Handshake {
            select: "postgresql".into(),
            size: zt_tests::term::DISPLAY,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut term = Term::new(client);
    term.until_closed().await;
    assert!(!term.received_text().contains("wrong-password"));
    assert_eq!(
        term.errors(),
        vec![(
            "The database server refused the login".to_owned(),
            Status::CLIENT_UNAUTHORIZED.code()
        )]
    );
}

/// Receives a file the console sends (acknowledging each blob, as a browser does): its
/// name, media type and bytes.
pub(crate) async fn receive_file(term: &mut Term) -> (String, String, Vec<u8>) {
    use base64::Engine as _;
    let deadline = tokio::time::Instant::now() + STEP;
    let mut file: Option<(String, String, String)> = None;
    let mut data = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert_eq!(
            term.receive(left).await,
            Some(true),
            "the file did not arrive"
        );
        let instruction = term.received.last().unwrap().clone();
        let arg = |n: usize| instruction.arg(n).unwrap_or_default().to_owned();
        match instruction.opcode() {
            zt_guac::opcode::FILE => {
                file = Some((arg(0), arg(1), arg(2)));
                ack(term, &arg(0)).await;
            }
            zt_guac::opcode::BLOB if file.as_ref().is_some_and(|f| f.0 == arg(0)) => {
                data.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(arg(1))
                        .unwrap(),
                );
                ack(term, &arg(0)).await;
            }
            zt_guac::opcode::END if file.as_ref().is_some_and(|f| f.0 == arg(0)) => {
                let (_, mimetype, name) = file.unwrap();
                return (name, mimetype, data);
            }
            _ => {}
        }
    }
}

async fn ack(term: &mut Term, stream: &str) {
    term.client
        .send(&zt_guac::Instruction::new(
            zt_guac::opcode::ACK,
            &[stream, "OK", "0"],
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_is_a_download_when_allowed_and_refused_otherwise() {
    let pg = Postgres::start().unwrap();
    pg.query(
        "create table export_me as select g as id, md5(g::text) as hash, \
         case when g % 7 = 0 then null else 'row, \"' || g || '\"' end as note \
         from generate_series(1, 20000) g",
    )
    .unwrap();
    let fx = Proxy::start();
    let query = "(select * from export_me order by id)";
    // What the server itself writes for the same COPY.
    let expected = pg
        .query(&format!("copy {query} to stdout with (format csv, header)"))
        .unwrap();
    for allowed in [true, false] {
        let mut events = fx.api.events(Some(0)).await.unwrap();
        let mut parameters = login(&pg);
        if allowed {
            parameters.push(("disable-csv-export", "false".to_owned()));
        }
        let (session, id) = fx
            .session(
                Transport::Quic,
                "postgresql",
                pg.port,
                &pairs(&parameters),
                None,
            )
            .await;
        let mut term = Term::connect_to(&session, "postgresql").await;
        term.wait_for("the first prompt", STEP, |lines| {
            lines.iter().any(|l| l == PROMPT)
        })
        .await;
        let command = format!("\\copy {query} to '/var/lib/postgresql/export.csv'");
        if allowed {
            term.type_text(&command).await;
            term.type_text("\n").await;
            let (name, mimetype, data) = receive_file(&mut term).await;
            assert_eq!(
                (name.as_str(), mimetype.as_str()),
                ("export.csv", "text/csv")
            );
            // `psql -At` drops the last line end.
            assert_eq!(String::from_utf8(data).unwrap().trim_end(), expected);
            term.wait_for("the copy's report", STEP, |l| {
                l.iter()
                    .any(|l| l.starts_with("COPY 20000 (sent to you as export.csv"))
                    && last_is_prompt(l)
            })
            .await;
        } else {
            run(&mut term, &command, "the refusal", |l| {
                l.iter()
                    .any(|l| l.starts_with("CSV export is not allowed for this session"))
            })
            .await;
            assert!(
                !term.received.iter().any(|i| i.is(zt_guac::opcode::FILE)),
                "a file was sent"
            );
            // Nothing was written on the server's side either.
            assert!(!std::path::Path::new("/var/lib/postgresql/export.csv").exists());
        }
        fx.api.delete_session(&id).await.unwrap();
        let events = events_until_ended(&mut events, &id).await;
        let transfers: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, AuditEvent::Transfer { .. }))
            .collect();
        let refusals: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, AuditEvent::PolicyRefused { .. }))
            .collect();
        if allowed {
            assert_eq!(transfers.len(), 1, "{events:?}");
            assert!(refusals.is_empty(), "{refusals:?}");
        } else {
            assert!(transfers.is_empty(), "{transfers:?}");
            assert!(
                matches!(
                    refusals.as_slice(),
                    [AuditEvent::PolicyRefused { action, name: Some(name), .. }]
                        if action == "download" && name == "export.csv"
                ),
                "{refusals:?}"
            );
        }
        let ran = queries(&events);
        assert_eq!(ran[0].0, command);
        assert_eq!(ran[0].2.is_none(), allowed, "{ran:?}");
        drop(session);
    }
}

/// Sends `data` as a file named `name` on stream `stream`, as a browser uploads a dropped
/// file: `file`, then each `blob` after the previous one's ack, then `end`. The acks'
/// statuses, in order.
/// Sends the first `pieces` blobs of a file (waiting for each ack) and no `end`: a file the
/// user abandons half-way.
pub(crate) async fn send_part(term: &mut Term, stream: u32, name: &str, pieces: usize) {
    use base64::Engine as _;
    let index = stream.to_string();
    term.client
        .send(&zt_guac::Instruction::new(
            zt_guac::opcode::FILE,
            &[index.as_str(), "text/csv", name],
        ))
        .await
        .unwrap();
    for n in 0..=pieces {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert_eq!(term.receive(left).await, Some(true), "no ack came");
            let last = term.received.last().unwrap();
            if last.is(zt_guac::opcode::ACK) && last.arg(0) == Some(index.as_str()) {
                assert_eq!(last.arg(2), Some("0"));
                break;
            }
        }
        if n == pieces {
            return;
        }
        let mut chunk = String::new();
        for id in n * 100..(n + 1) * 100 {
            chunk.push_str(&format!("{},part-{id}\n", id + 1));
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(chunk);
        term.client
            .send(&zt_guac::Instruction::new(
                zt_guac::opcode::BLOB,
                &[index.as_str(), encoded.as_str()],
            ))
            .await
            .unwrap();
    }
}

pub(crate) async fn send_file(
    term: &mut Term,
    stream: u32,
    name: &str,
    data: &[u8],
) -> Vec<String> {
    use base64::Engine as _;
    let index = stream.to_string();
    let mut statuses = Vec::new();
    term.client
        .send(&zt_guac::Instruction::new(
            zt_guac::opcode::FILE,
            &[index.as_str(), "text/csv", name],
        ))
        .await
        .unwrap();
    let mut chunks = data.chunks(4096).peekable();
    loop {
        // Wait for the ack of what was sent last.
        let deadline = tokio::time::Instant::now() + STEP;
        let status = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert_eq!(term.receive(left).await, Some(true), "no ack came");
            let last = term.received.last().unwrap();
            if last.is(zt_guac::opcode::ACK) && last.arg(0) == Some(index.as_str()) {
                break last.arg(2).unwrap_or_default().to_owned();
            }
        };
        let refused = status != "0";
        statuses.push(status);
        if refused {
            return statuses;
        }
        match chunks.next() {
            Some(chunk) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(chunk);
                term.client
                    .send(&zt_guac::Instruction::new(
                        zt_guac::opcode::BLOB,
                        &[index.as_str(), encoded.as_str()],
                    ))
                    .await
                    .unwrap();
            }
            None => break,
        }
    }
    term.client
        .send(&zt_guac::Instruction::new(
            zt_guac::opcode::END,
            &[index.as_str()],
        ))
        .await
        .unwrap();
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_import_takes_the_users_file_when_allowed_and_refuses_it_otherwise() {
    let pg = Postgres::start().unwrap();
    pg.query("create table import_here (id int primary key, name text, note text)")
        .unwrap();
    let mut csv = String::from("id,name,note\n");
    for id in 1..=5000 {
        csv.push_str(&format!("{id},name-{id},\"quoted, with comma {id}\"\n"));
    }
    let fx = Proxy::start();
    for allowed in [true, false] {
        let mut events = fx.api.events(Some(0)).await.unwrap();
        let mut parameters = login(&pg);
        if allowed {
            parameters.push(("disable-csv-import", "false".to_owned()));
        }
        let (session, id) = fx
            .session(
                Transport::Webrtc,
                "postgresql",
                pg.port,
                &pairs(&parameters),
                None,
            )
            .await;
        let mut term = Term::connect_to(&session, "postgresql").await;
        term.wait_for("the first prompt", STEP, |lines| {
            lines.iter().any(|l| l == PROMPT)
        })
        .await;
        let command = "\\copy import_here from 'rows.csv'";
        term.type_text(command).await;
        term.type_text("\n").await;
        if allowed {
            term.wait_for("the request for the file", STEP, |l| {
                l.iter()
                    .any(|l| l.starts_with("Send rows.csv: drop the file"))
            })
            .await;
            let statuses = send_file(&mut term, 7, "rows.csv", csv.as_bytes()).await;
            assert!(statuses.iter().all(|s| s == "0"), "{statuses:?}");
            term.wait_for("the import's report", STEP, |l| {
                l.iter().any(|l| l.starts_with("COPY 5000 (from rows.csv")) && last_is_prompt(l)
            })
            .await;
            assert_eq!(
                pg.query("select count(*), max(note) from import_here")
                    .unwrap(),
                "5000|quoted, with comma 999"
            );
        } else {
            term.wait_for("the refusal", STEP, |l| {
                l.iter()
                    .any(|l| l.starts_with("CSV import is not allowed for this session"))
                    && last_is_prompt(l)
            })
            .await;
            // A file sent anyway is refused, and nothing reaches the table.
            let statuses = send_file(&mut term, 8, "rows.csv", csv.as_bytes()).await;
            assert_eq!(statuses, vec![Status::CLIENT_FORBIDDEN.code().to_string()]);
            assert_eq!(
                pg.query("select count(*) from import_here").unwrap(),
                "5000"
            );
        }
        fx.api.delete_session(&id).await.unwrap();
        let events = events_until_ended(&mut events, &id).await;
        let ran = queries(&events);
        assert_eq!(ran[0].0, command);
        assert_eq!(ran[0].1, if allowed { 5000 } else { 0 });
        let refusals = events
            .iter()
            .filter(|e| matches!(e, AuditEvent::PolicyRefused { action, .. } if action == "upload"))
            .count();
        assert_eq!(refusals, usize::from(!allowed), "{events:?}");
        drop(session);
    }
}
