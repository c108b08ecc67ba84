//! The MySQL/MariaDB console against a real MariaDB the tests start (`mariadb-install-db`
//! into a temporary directory): statements and boxed tables on the screen, `USE` and the
//! prompt, Ctrl-C cancelling on the server, and Keeper's `INTO LOCAL OUTFILE` and
//! `LOAD DATA LOCAL INFILE` as file streams under the policy.

use std::time::Duration;

use zt_api::audit::AuditEvent;
use zt_api::control::Transport;
use zt_tests::servers::Mariadb;
use zt_tests::term::{STEP, Term};

use super::postgres::{ctrl_c, receive_file, send_file, send_part};
use super::{Proxy, TRANSPORTS, events_until_ended};

const PROMPT: &str = "MariaDB [shop]>";

fn login(db: &Mariadb) -> Vec<(&'static str, String)> {
    vec![
        ("username", db.user.clone()),
        ("password", db.password.clone()),
        ("database", "shop".to_owned()),
    ]
}

fn last_is_prompt(lines: &[String]) -> bool {
    lines
        .iter()
        .rev()
        .find(|l| !l.is_empty())
        .is_some_and(|l| l == PROMPT)
}

async fn console(
    fx: &Proxy,
    db: &Mariadb,
    transport: Transport,
    extra: &[(&'static str, &str)],
) -> (Term, String, zt_proxy::client::session::ClientSession) {
    let parameters = login(db);
    let mut pairs: Vec<(&str, &str)> = parameters.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pairs.extend_from_slice(extra);
    let (session, id) = fx.session(transport, "mysql", db.port, &pairs, None).await;
    let mut term = Term::connect_to(&session, "mysql").await;
    term.wait_for("the first prompt", STEP, |l| l.iter().any(|l| l == PROMPT))
        .await;
    (term, id, session)
}

async fn run(
    term: &mut Term,
    statement: &str,
    what: &str,
    shown: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    term.type_text(statement).await;
    term.type_text("\n").await;
    term.wait_for(what, STEP, |lines| shown(lines) && last_is_prompt(lines))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_boxed_tables_show_on_the_screen_over_both_transports() {
    let db = Mariadb::start().unwrap();
    let fx = Proxy::start();
    for transport in TRANSPORTS {
        let mut events = fx.api.events(Some(0)).await.unwrap();
        let (mut term, id, session) = console(&fx, &db, transport, &[]).await;
        let table = format!("fruit{}", format!("{transport:?}").to_lowercase());
        run(
            &mut term,
            &format!("create table {table} (id int primary key, name text, price decimal(6,2));"),
            "the table's creation",
            |l| l.iter().any(|l| l.starts_with("Query OK, 0 rows affected")),
        )
        .await;
        run(
            &mut term,
            &format!("insert into {table} values (1, 'apple', 0.5), (2, 'kiwi', NULL), (10, 'fig', 12.25);"),
            "the insert",
            |l| l.iter().any(|l| l.starts_with("Query OK, 3 rows affected")),
        )
        .await;
        let lines = run(
            &mut term,
            &format!("select * from {table} order by id;"),
            "the table",
            |l| l.iter().any(|l| l == "3 rows in set"),
        )
        .await;
        term.screenshot(&format!("mariadb-{transport:?}"));
        let at = lines
            .iter()
            .position(|l| l == "| id | name  | price |")
            .unwrap_or_else(|| panic!("{lines:#?}"));
        assert_eq!(
            lines[at - 1..at + 6],
            [
                "+----+-------+-------+",
                "| id | name  | price |",
                "+----+-------+-------+",
                "|  1 | apple |  0.50 |",
                "|  2 | kiwi  |  NULL |",
                "| 10 | fig   | 12.25 |",
                "+----+-------+-------+",
            ]
        );
        run(&mut term, "show tables;", "SHOW TABLES", |l| {
            l.iter().any(|l| l.contains(&format!("| {table}")))
        })
        .await;
        run(&mut term, "select nope;", "the error", |l| {
            l.iter()
                .any(|l| l.starts_with("ERROR 1054 (42S22): Unknown column 'nope' in "))
        })
        .await;
        // USE changes the prompt.
        term.type_text("use mysql;\n").await;
        term.wait_for("the new prompt", STEP, |l| {
            l.iter()
                .rev()
                .find(|l| !l.is_empty())
                .is_some_and(|l| l == "MariaDB [mysql]>")
        })
        .await;
        assert!(!term.received_text().contains(&db.password));
        term.type_text("quit\n").await;
        term.until_closed().await;
        let events = events_until_ended(&mut events, &id).await;
        let ran: Vec<(String, String, Option<String>)> = events
            .iter()
            .filter_map(|e| match e {
                AuditEvent::DbQuery {
                    statement,
                    database,
                    error_code,
                    ..
                } => Some((statement.clone(), database.clone(), error_code.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(ran.len(), 6, "{ran:?}");
        assert_eq!(ran[4].2.as_deref(), Some("42S22"));
        assert_eq!(ran[5].1, "mysql", "USE reports the database it moved to");
        drop(session);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_kills_a_ten_million_row_query_on_the_server() {
    let db = Mariadb::start().unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (mut term, id, session) = console(&fx, &db, Transport::Quic, &[]).await;
    term.type_text("select seq, md5(seq) from seq_1_to_10000000;\n")
        .await;
    term.wait_for("rows streaming", STEP, |lines| {
        lines
            .iter()
            .filter(|l| l.starts_with("| ") && l.contains(" | "))
            .count()
            > 10
    })
    .await;
    let running =
        "select count(*) from information_schema.processlist where info like 'select seq, md5%'";
    assert_eq!(db.root(running).unwrap(), "1");
    ctrl_c(&mut term).await;
    term.wait_for("the cancellation", Duration::from_secs(60), |lines| {
        lines
            .iter()
            .any(|l| l.starts_with("ERROR 1317 (70100): Query execution was interrupted"))
            && last_is_prompt(lines)
    })
    .await;
    assert_eq!(db.root(running).unwrap(), "0");
    run(&mut term, "select 6 * 7 as answer;", "42", |l| {
        l.iter().any(|l| l == "|     42 |")
    })
    .await;
    fx.api.delete_session(&id).await.unwrap();
    let events = events_until_ended(&mut events, &id).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            AuditEvent::DbQuery { cancelled: true, error_code: Some(code), .. } if code == "70100"
        )),
        "{events:?}"
    );
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_outfile_and_infile_are_file_streams_under_the_policy() {
    let db = Mariadb::start().unwrap();
    db.root(
        "use shop; create table items (id int primary key, name text); \
         insert into items select seq, concat('item, \"', seq, '\"') from seq_1_to_3000; \
         create table loaded (id int primary key, name text);",
    )
    .unwrap();
    let fx = Proxy::start();
    // Allowed both ways.
    let (mut term, _id, session) = console(
        &fx,
        &db,
        Transport::Webrtc,
        &[
            ("disable-csv-export", "false"),
            ("disable-csv-import", "false"),
        ],
    )
    .await;
    term.type_text("select * from items order by id into local outfile '/etc/items.csv';\n")
        .await;
    let (name, mimetype, data) = receive_file(&mut term).await;
    assert_eq!(
        (name.as_str(), mimetype.as_str()),
        ("items.csv", "text/csv")
    );
    let text = String::from_utf8(data).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3001);
    assert_eq!(lines[0], "id,name");
    assert_eq!(lines[7], "7,\"item, \"\"7\"\"\"");
    term.wait_for("the export's report", STEP, |l| {
        l.iter().any(|l| l == "3000 rows sent to you as items.csv") && last_is_prompt(l)
    })
    .await;
    // The exported file goes back in through LOAD DATA LOCAL INFILE.
    term.type_text(
        "load data local infile 'items.csv' into table loaded fields terminated by ',' \
         optionally enclosed by '\"' ignore 1 lines;\n",
    )
    .await;
    term.wait_for("the request for the file", STEP, |l| {
        l.iter()
            .any(|l| l.starts_with("Send items.csv: drop the file"))
    })
    .await;
    let statuses = send_file(&mut term, 9, "items.csv", text.as_bytes()).await;
    assert!(statuses.iter().all(|s| s == "0"), "{statuses:?}");
    term.wait_for("the import's report", STEP, |l| {
        l.iter()
            .any(|l| l.starts_with("Query OK, 3000 rows affected"))
            && last_is_prompt(l)
    })
    .await;
    assert_eq!(
        db.root(
            "select count(*), sum(a.name = b.name) from shop.items a join shop.loaded b using (id)"
        )
        .unwrap(),
        "3000\t3000"
    );
    drop(session);

    // Refused both ways without the grants: nothing is sent, nothing is asked for.
    let (mut term, _id, session) = console(&fx, &db, Transport::Quic, &[]).await;
    run(
        &mut term,
        "select * from items into local outfile 'items.csv';",
        "the export's refusal",
        |l| l.iter().any(|l| l.starts_with("CSV export is not allowed")),
    )
    .await;
    run(
        &mut term,
        "load data local infile 'items.csv' into table loaded;",
        "the import's refusal",
        |l| l.iter().any(|l| l.starts_with("CSV import is not allowed")),
    )
    .await;
    assert!(!term.received.iter().any(|i| i.is(zt_guac::opcode::FILE)));
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_asking_for_a_file_nobody_named_gets_none_and_the_console_goes_on() {
    use zt_tests::hostile_mysql::{HostileMysql, WANTED};
    let server = HostileMysql::start().await.unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    // Even with CSV import allowed: the user did not ask for this file.
    let (session, id) = fx
        .session(
            Transport::Quic,
            "mysql",
            server.port,
            &[
                ("username", "app"),
                ("password", "pw-hostile"),
                ("disable-csv-import", "false"),
            ],
            None,
        )
        .await;
    let mut term = Term::connect_to(&session, "mysql").await;
    let prompt = "mysql [shop]>";
    term.wait_for("the first prompt", STEP, |l| l.iter().any(|l| l == prompt))
        .await;
    for (n, statement) in ["select 1;", "select 2;"].into_iter().enumerate() {
        term.type_text(statement).await;
        term.type_text("\n").await;
        term.wait_for("the refusal", STEP, |lines| {
            lines
                .iter()
                .filter(|l| {
                    *l == "ERROR: the server asked for a file the user did not name: nothing was sent."
                })
                .count()
                == n + 1
                && lines
                    .iter()
                    .rev()
                    .find(|l| !l.is_empty())
                    .is_some_and(|l| l == prompt)
        })
        .await;
    }
    {
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen.requests, 2, "{seen:?}");
        // Each request got the empty packet that ends a file, and nothing else.
        assert_eq!(seen.answers, vec![Vec::<u8>::new(), Vec::new()]);
    }
    assert!(!term.received_text().contains("root:"));
    assert!(!WANTED.is_empty());
    fx.api.delete_session(&id).await.unwrap();
    let events = events_until_ended(&mut events, &id).await;
    let failed = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                AuditEvent::DbQuery {
                    error_code: Some(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(failed, 2, "{events:?}");
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_load_data_imports_nothing_and_the_console_goes_on() {
    let db = Mariadb::start().unwrap();
    db.root("use shop; create table halfway (id int primary key, name text);")
        .unwrap();
    let fx = Proxy::start();
    let (mut term, _id, session) = console(
        &fx,
        &db,
        Transport::Quic,
        &[("disable-csv-import", "false")],
    )
    .await;
    term.type_text(
        "load data local infile 'half.csv' into table halfway fields terminated by ',';\n",
    )
    .await;
    term.wait_for("the request for the file", STEP, |l| {
        l.iter()
            .any(|l| l.starts_with("Send half.csv: drop the file"))
    })
    .await;
    // Three pieces reach the server's LOAD, then the user gives up.
    send_part(&mut term, 9, "half.csv", 3).await;
    ctrl_c(&mut term).await;
    term.wait_for("the abandonment", STEP, |l| {
        l.iter().any(|l| {
            l == "Import abandoned: nothing was imported." || l.starts_with("ERROR 1317 (70100)")
        }) && last_is_prompt(l)
    })
    .await;
    assert_eq!(db.root("select count(*) from shop.halfway").unwrap(), "0");
    // The console goes on, in the same database.
    run(
        &mut term,
        "select count(*) as n from halfway;",
        "the count",
        |l| l.iter().any(|l| l == "| 0 |"),
    )
    .await;
    drop(session);
}
