//! The SQL Server console against the TDS test double (`zt_tests::tds`; no SQL Server runs
//! on these machines): the injected login (never on the user's screen, and inside TLS when
//! the server offers it), tables, errors as SQL Server words them, `USE` and the meta
//! commands, Ctrl-C as a TDS ATTENTION that stops the batch on the server, and Keeper's file
//! clauses under the policy. The certificate pin is in `db_tls`.

use std::time::Duration;

use zt_api::audit::AuditEvent;
use zt_api::control::Transport;
use zt_tests::tds::{Encryption, TdsServer};
use zt_tests::term::{STEP, Term};

use super::postgres::{ctrl_c, receive_file, send_file, send_part};
use super::{Proxy, TRANSPORTS, events_until_ended};

fn prompt(database: &str) -> String {
    format!("SQL Server [{database}]>")
}

fn last_is(lines: &[String], prompt: &str) -> bool {
    lines
        .iter()
        .rev()
        .find(|l| !l.is_empty())
        .is_some_and(|l| l == prompt)
}

async fn console(
    fx: &Proxy,
    db: &TdsServer,
    transport: Transport,
    extra: &[(&'static str, &str)],
) -> (Term, String, zt_proxy::client::session::ClientSession) {
    let mut pairs: Vec<(&str, &str)> = vec![
        ("username", db.user.as_str()),
        ("password", db.password.as_str()),
        ("database", "shop"),
    ];
    pairs.extend_from_slice(extra);
    let (session, id) = fx
        .session(transport, "sqlserver", db.port, &pairs, None)
        .await;
    let mut term = Term::connect_to(&session, "sqlserver").await;
    term.wait_for("the first prompt", STEP, |l| {
        l.iter().any(|l| *l == prompt("shop"))
    })
    .await;
    (term, id, session)
}

async fn run(
    term: &mut Term,
    statement: &str,
    what: &str,
    database: &str,
    shown: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    term.type_text(statement).await;
    term.type_text("\n").await;
    let prompt = prompt(database);
    term.wait_for(what, STEP, |lines| shown(lines) && last_is(lines, &prompt))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_tables_errors_and_use_show_on_the_screen_over_both_transports() {
    // A server with a certificate: the console's connection is TLS.
    let db = TdsServer::start_with(Encryption::Offered).await.unwrap();
    let fx = Proxy::start();
    for (round, transport) in TRANSPORTS.into_iter().enumerate() {
        let mut events = fx.api.events(Some(0)).await.unwrap();
        let (mut term, id, session) = console(&fx, &db, transport, &[]).await;
        let rows = 3 + round;
        let lines = run(
            &mut term,
            "select * from people;",
            "the table",
            "shop",
            |l| l.iter().any(|l| *l == format!("{rows} rows in set")),
        )
        .await;
        term.screenshot(&format!("sqlserver-{transport:?}"));
        let at = lines
            .iter()
            .position(|l| l == "| id | name  | active |")
            .unwrap_or_else(|| panic!("{lines:#?}"));
        let mut table = vec![
            "+----+-------+--------+",
            "| id | name  | active |",
            "+----+-------+--------+",
            "|  1 | Ada   |      1 |",
            "|  2 | Grace |      1 |",
            "|  3 | NULL  |      0 |",
        ];
        if round == 1 {
            table.push("| 10 | Zoe   |      1 |");
        }
        table.push("+----+-------+--------+");
        assert_eq!(lines[at - 1..at - 1 + table.len()], table);
        let insert = format!("insert into people values ({}, N'Zoe', 1);", 10 + round);
        run(&mut term, &insert, "the insert", "shop", |l| {
            l.iter().any(|l| l == "(1 row affected)")
        })
        .await;
        run(&mut term, "select 1/0;", "the error", "shop", |l| {
            let at = l
                .iter()
                .position(|l| l == "Msg 8134, Level 16, State 1, Line 1");
            at.is_some_and(|at| {
                l.get(at + 1)
                    .is_some_and(|l| l == "Divide by zero error encountered.")
            })
        })
        .await;
        run(&mut term, "\\dt", "the tables", "shop", |l| {
            l.iter().any(|l| l == "| dbo    | people | BASE TABLE |")
        })
        .await;
        run(&mut term, "\\d people", "the columns", "shop", |l| {
            l.iter()
                .any(|l| l.starts_with("| name   | nvarchar |     50 | YES"))
        })
        .await;
        run(&mut term, "use nowhere;", "the refused USE", "shop", |l| {
            l.iter().any(|l| l == "Msg 911, Level 16, State 1, Line 1")
        })
        .await;
        // USE changes the prompt; the table is not in master.
        run(&mut term, "use master;", "the new prompt", "master", |l| {
            l.iter().any(|l| l == "Commands completed successfully.")
        })
        .await;
        run(
            &mut term,
            "select * from people;",
            "the missing table",
            "master",
            |l| l.iter().any(|l| l == "Invalid object name 'people'."),
        )
        .await;
        assert!(!term.received_text().contains(&db.password));
        term.type_text("exit\n").await;
        term.until_closed().await;
        let events = events_until_ended(&mut events, &id).await;
        let ran: Vec<(String, String, u64, Option<String>)> = events
            .iter()
            .filter_map(|e| match e {
                AuditEvent::DbQuery {
                    statement,
                    database,
                    rows,
                    error_code,
                    ..
                } => Some((
                    statement.clone(),
                    database.clone(),
                    *rows,
                    error_code.clone(),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(ran.len(), 8, "{ran:?}");
        assert_eq!(ran[0].2, rows as u64);
        assert_eq!(ran[1].2, 1);
        assert_eq!(ran[2].3.as_deref(), Some("8134"));
        assert_eq!(ran[5].3.as_deref(), Some("911"));
        assert_eq!(ran[6].1, "master", "USE reports the database it moved to");
        assert_eq!(ran[7].3.as_deref(), Some("208"));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, AuditEvent::DbConnected { tls: true, .. })),
            "{events:?}"
        );
        drop(session);
    }
    // The session's credentials logged in, inside TLS: the double understood the LOGIN7
    // (with the password obfuscated as TDS does), but neither it nor a statement crossed the
    // wire readable; every insert landed.
    let seen = db.logins();
    assert!(
        seen.len() == 2 && seen.iter().all(|(u, p)| *u == db.user && *p == db.password),
        "{seen:?}"
    );
    let obfuscated = zt_tests::tds::obfuscated(&db.password);
    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    let statement = "select * from people"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect::<Vec<u8>>();
    assert!(contains(&db.received(), &obfuscated) && contains(&db.received(), &statement));
    assert!(!contains(&db.wire(), &obfuscated) && !contains(&db.wire(), &statement));
    assert_eq!(db.asked(), vec![1, 1], "ztproxy asked for ENCRYPT_ON");
    // tiberius, below which the encryption runs, does not tell the log it is unencrypted.
    let log = fx.proxy.output();
    assert!(
        log.contains("logged in to the database") && !log.contains("TLS encryption is not enabled")
    );
    assert_eq!(db.people().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_ends_the_session_with_the_servers_reason() {
    let db = TdsServer::start().await.unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (session, id) = fx
        .session(
            Transport::Quic,
            "sqlserver",
            db.port,
            &[
                ("username", "zt_sa"),
                ("password", "wrong"),
                ("ssl-mode", "disable"),
            ],
            None,
        )
        .await;
    let client = zt_tests::guac_client::GuacClient::start(
        &session,
        &zt_tests::guac_client::Handshake {
            select: "sqlserver".into(),
            size: zt_tests::term::DISPLAY,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut term = Term::new(client);
    term.until_closed().await;
    assert_eq!(
        term.errors(),
        vec![(
            "The database server refused the login".to_owned(),
            zt_guac::Status::CLIENT_UNAUTHORIZED.code()
        )]
    );
    let events = events_until_ended(&mut events, &id).await;
    assert!(
        events.iter().any(
            |e| matches!(e, AuditEvent::SessionEnded { detail: Some(detail), .. }
            if detail.contains("Login failed for user 'zt_sa'."))
        ),
        "{events:?}"
    );
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_sends_attention_and_the_server_stops_the_batch() {
    // A server that forces encryption: the ATTENTION travels inside TLS.
    let db = TdsServer::start_with(Encryption::Required).await.unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (mut term, id, session) = console(&fx, &db, Transport::Webrtc, &[]).await;
    // Ten million rows stream; Ctrl-C stops them.
    term.type_text("select value from generate_series(1, 10000000);\n")
        .await;
    term.wait_for("rows streaming", STEP, |lines| {
        lines
            .iter()
            .filter(|l| {
                l.starts_with("| ")
                    && l.trim_end_matches('|')
                        .trim()
                        .trim_start_matches('|')
                        .trim()
                        .parse::<u64>()
                        .is_ok()
            })
            .count()
            > 10
    })
    .await;
    ctrl_c(&mut term).await;
    term.wait_for("the cancellation", Duration::from_secs(60), |lines| {
        lines.iter().any(|l| l == "Query was cancelled by user.") && last_is(lines, &prompt("shop"))
    })
    .await;
    assert_eq!(db.attentions(), 1);
    // A batch that waits on the server: ATTENTION wakes it.
    term.type_text("waitfor delay '00:10:00';\n").await;
    tokio::time::timeout(STEP, async {
        while !db.batches().iter().any(|b| b.starts_with("waitfor")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the batch reached the server");
    ctrl_c(&mut term).await;
    term.wait_for("the second cancellation", STEP, |lines| {
        lines
            .iter()
            .filter(|l| *l == "Query was cancelled by user.")
            .count()
            == 2
            && last_is(lines, &prompt("shop"))
    })
    .await;
    assert_eq!(db.attentions(), 2);
    // The same connection goes on.
    run(
        &mut term,
        "select count(*) from people;",
        "the count",
        "shop",
        |l| l.iter().any(|l| l == "|                3 |"),
    )
    .await;
    assert_eq!(
        db.state.lock().unwrap().logins.len(),
        1,
        "the server acknowledged both ATTENTIONs: no second login was needed"
    );
    fx.api.delete_session(&id).await.unwrap();
    let events = events_until_ended(&mut events, &id).await;
    let cancelled = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                AuditEvent::DbQuery {
                    cancelled: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(cancelled, 2, "{events:?}");
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_outfile_and_infile_are_file_streams_under_the_policy() {
    let db = TdsServer::start().await.unwrap();
    let fx = Proxy::start();
    let (mut term, _id, session) = console(
        &fx,
        &db,
        Transport::Quic,
        &[
            ("disable-csv-export", "false"),
            ("disable-csv-import", "false"),
        ],
    )
    .await;
    term.type_text("select * from people into local outfile 'C:\\out\\people.csv';\n")
        .await;
    let (name, mimetype, data) = receive_file(&mut term).await;
    assert_eq!(
        (name.as_str(), mimetype.as_str()),
        ("people.csv", "text/csv")
    );
    assert_eq!(
        String::from_utf8(data).unwrap(),
        "id,name,active\n1,Ada,1\n2,Grace,1\n3,,0\n"
    );
    term.wait_for("the export's report", STEP, |l| {
        l.iter().any(|l| l == "3 rows sent to you as people.csv")
    })
    .await;
    // An import: 2500 records (three INSERTs), quotes and a NULL, in one transaction.
    let mut csv = String::from("id,name,active\n");
    for n in 100..2600 {
        csv.push_str(&format!("{n},\"O'Brien, \"\"{n}\"\"\",1\n"));
    }
    csv.push_str("9999,,0\n");
    term.type_text(
        "load data local infile 'people.csv' into table people ignore 1 lines (id, name, active);\n",
    )
    .await;
    term.wait_for("the request for the file", STEP, |l| {
        l.iter()
            .any(|l| l.starts_with("Send people.csv: drop the file"))
    })
    .await;
    let statuses = send_file(&mut term, 9, "people.csv", csv.as_bytes()).await;
    assert!(statuses.iter().all(|s| s == "0"), "{statuses:?}");
    term.wait_for("the import's report", STEP, |l| {
        l.iter().any(|l| l.starts_with("(2501 rows affected: ")) && last_is(l, &prompt("shop"))
    })
    .await;
    let people = db.people();
    assert_eq!(people.len(), 3 + 2501);
    assert_eq!(people[3], (100, Some("O'Brien, \"100\"".to_owned()), true));
    assert_eq!(people[3 + 2500], (9999, None, false));
    let inserts = db
        .batches()
        .iter()
        .filter(|b| b.starts_with("INSERT INTO people"))
        .count();
    assert_eq!(inserts, 3);
    // A file that is not CSV rolls everything back.
    term.type_text("load data local infile 'bad.csv' into table people;\n")
        .await;
    term.wait_for("the second request", STEP, |l| {
        l.iter()
            .any(|l| l.starts_with("Send bad.csv: drop the file"))
    })
    .await;
    send_file(&mut term, 10, "bad.csv", b"1,a,1\n2,\"never closed").await;
    term.wait_for("the rollback", STEP, |l| {
        l.iter()
            .any(|l| l == "bad.csv: the file ends inside a quoted field: nothing was imported.")
    })
    .await;
    assert_eq!(db.people().len(), 3 + 2501);
    drop(session);

    // Refused both ways without the grants: nothing is sent, nothing is asked for.
    let (mut term, _id, session) = console(&fx, &db, Transport::Webrtc, &[]).await;
    run(
        &mut term,
        "select * from people into local outfile 'people.csv';",
        "the export's refusal",
        "shop",
        |l| l.iter().any(|l| l.starts_with("CSV export is not allowed")),
    )
    .await;
    run(
        &mut term,
        "load data local infile 'people.csv' into table people;",
        "the import's refusal",
        "shop",
        |l| l.iter().any(|l| l.starts_with("CSV import is not allowed")),
    )
    .await;
    assert!(!term.received.iter().any(|i| i.is(zt_guac::opcode::FILE)));
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_an_import_rolls_it_back_and_the_console_goes_on() {
    let db = TdsServer::start().await.unwrap();
    let fx = Proxy::start();
    let (mut term, _id, session) = console(
        &fx,
        &db,
        Transport::Webrtc,
        &[("disable-csv-import", "false")],
    )
    .await;
    term.type_text("load data local infile 'half.csv' into table people (id, name);\n")
        .await;
    term.wait_for("the request for the file", STEP, |l| {
        l.iter()
            .any(|l| l.starts_with("Send half.csv: drop the file"))
    })
    .await;
    // Three pieces, then the user gives up: the transaction is rolled back.
    send_part(&mut term, 9, "half.csv", 3).await;
    ctrl_c(&mut term).await;
    term.wait_for("the abandonment", STEP, |l| {
        l.iter()
            .any(|l| l == "Import abandoned: nothing was imported.")
            && last_is(l, &prompt("shop"))
    })
    .await;
    assert_eq!(db.people().len(), 3);
    assert!(
        db.batches()
            .iter()
            .any(|b| b == "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION"),
        "{:?}",
        db.batches()
    );
    run(
        &mut term,
        "select count(*) from people;",
        "the count",
        "shop",
        |l| l.iter().any(|l| l == "|                3 |"),
    )
    .await;
    // Inside the user's own transaction an import is refused: its rollback would undo the
    // user's work too.
    run(&mut term, "begin transaction;", "BEGIN", "shop", |l| {
        l.iter().any(|l| l == "Commands completed successfully.")
    })
    .await;
    run(
        &mut term,
        "load data local infile 'half.csv' into table people;",
        "the refusal",
        "shop",
        |l| {
            l.iter()
                .any(|l| l.starts_with("A transaction is open: COMMIT or ROLLBACK"))
        },
    )
    .await;
    assert_eq!(
        db.batches()
            .iter()
            .filter(|b| b.contains("ROLLBACK"))
            .count(),
        1,
        "only the abandoned import rolled back: {:?}",
        db.batches()
    );
    drop(session);
}
