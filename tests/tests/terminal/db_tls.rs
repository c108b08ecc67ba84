//! TLS with the session's certificate pin: to PostgreSQL and MariaDB against real servers
//! the tests start with TLS on, to SQL Server against the TDS double (`zt_tests::tds`). For
//! PostgreSQL, against a server with `ssl=on` and a fresh self-signed certificate: the pinned certificate is
//! accepted and the server itself reports the connection as TLS; another certificate ends
//! the session before the login; an unpinned one is accepted under `prefer` and its
//! fingerprint audited for pinning; `ssl-mode=require` against a server without TLS is
//! refused.

use sha2::Digest as _;
use zt_api::audit::AuditEvent;
use zt_api::control::Transport;
use zt_guac::Status;
use zt_tests::servers::{Mariadb, Postgres};
use zt_tests::tds::{Encryption, TdsServer};
use zt_tests::term::{STEP, Term};

use super::{Proxy, events_until_ended};

const PROMPT: &str = "postgres=>";

fn fingerprint(pg: &Postgres) -> [u8; 32] {
    sha2::Sha256::digest(pg.certificate.as_ref().unwrap()).into()
}

fn hex_colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    )
}

async fn open(
    fx: &Proxy,
    pg: &Postgres,
    extra: &[(&str, &str)],
) -> (Term, String, zt_proxy::client::session::ClientSession) {
    let mut pairs: Vec<(&str, &str)> = vec![
        ("username", pg.user.as_str()),
        ("password", pg.password.as_str()),
        ("database", "postgres"),
    ];
    pairs.extend_from_slice(extra);
    let (session, id) = fx
        .session(Transport::Quic, "postgresql", pg.port, &pairs, None)
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
    (Term::new(client), id, session)
}

fn connected(events: &[AuditEvent]) -> Option<(bool, Option<String>, bool)> {
    events.iter().find_map(|e| match e {
        AuditEvent::DbConnected {
            tls,
            certificate_fingerprint,
            certificate_pinned,
            ..
        } => Some((*tls, certificate_fingerprint.clone(), *certificate_pinned)),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_certificate_is_accepted_and_the_server_sees_tls() {
    let pg = Postgres::start_tls().unwrap();
    let fx = Proxy::start();
    let presented = fingerprint(&pg);
    let mut events = fx.api.events(Some(0)).await.unwrap();
    // The pin as openssl prints it.
    let pin = format!("sha256 Fingerprint={}", hex_colons(&presented));
    let (mut term, id, session) = open(&fx, &pg, &[("server-certificate", &pin)]).await;
    term.wait_for("the first prompt", STEP, |l| l.iter().any(|l| l == PROMPT))
        .await;
    term.type_text("select ssl, version from pg_stat_ssl where pid = pg_backend_pid();\n")
        .await;
    term.wait_for("the server's view of the connection", STEP, |lines| {
        lines.iter().any(|l| l.starts_with(" t   | TLSv1."))
    })
    .await;
    term.type_text("\\conninfo\n").await;
    let expected = format!(
        "TLS connection (server certificate {}, pinned).",
        base64(&presented)
    );
    term.wait_for("\\conninfo", STEP, |lines| {
        // The line is wider than the terminal: compare without the wrap's spaces.
        lines
            .concat()
            .replace(' ', "")
            .contains(&expected.replace(' ', ""))
    })
    .await;
    fx.api.delete_session(&id).await.unwrap();
    let events = events_until_ended(&mut events, &id).await;
    assert_eq!(
        connected(&events),
        Some((true, Some(base64(&presented)), true)),
        "{events:?}"
    );
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_certificate_ends_the_session_before_the_login() {
    let pg = Postgres::start_tls().unwrap();
    let fx = Proxy::start();
    let presented = fingerprint(&pg);
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let wrong = base64(&[7; 32]);
    let (mut term, id, session) = open(&fx, &pg, &[("server-certificate", &wrong)]).await;
    term.until_closed().await;
    assert_eq!(
        term.errors(),
        vec![(
            "The database server's certificate does not match the pinned certificate".to_owned(),
            Status::UPSTREAM_UNAVAILABLE.code()
        )]
    );
    let events = events_until_ended(&mut events, &id).await;
    assert!(connected(&events).is_none(), "{events:?}");
    assert!(
        events.iter().any(
            |e| matches!(e, AuditEvent::SessionEnded { detail: Some(d), .. }
            if d.contains(&base64(&presented)))
        ),
        "the presented fingerprint is in the session's end: {events:?}"
    );
    // The server never saw a login from the proxy.
    let logins = pg
        .query("select count(*) from pg_stat_activity where application_name = 'ztproxy'")
        .unwrap();
    assert_eq!(logins, "0");
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pin_tls_is_preferred_and_the_fingerprint_audited_and_require_needs_tls() {
    let pg = Postgres::start_tls().unwrap();
    let fx = Proxy::start();
    let presented = fingerprint(&pg);
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (mut term, id, session) = open(&fx, &pg, &[]).await;
    term.wait_for("the first prompt", STEP, |l| l.iter().any(|l| l == PROMPT))
        .await;
    fx.api.delete_session(&id).await.unwrap();
    let ended = events_until_ended(&mut events, &id).await;
    assert_eq!(
        connected(&ended),
        Some((true, Some(base64(&presented)), false)),
        "{ended:?}"
    );
    drop((term, session));

    // A server without TLS: `require` refuses it, the default connects in the clear.
    let plain = Postgres::start().unwrap();
    let (mut term, _id, session) = open(&fx, &plain, &[("ssl-mode", "require")]).await;
    term.until_closed().await;
    assert_eq!(
        term.errors(),
        vec![(
            "The database server does not offer TLS".to_owned(),
            Status::UPSTREAM_ERROR.code()
        )]
    );
    drop(session);
    let (mut term, id, session) = open(&fx, &plain, &[]).await;
    term.wait_for("the first prompt", STEP, |l| l.iter().any(|l| l == PROMPT))
        .await;
    fx.api.delete_session(&id).await.unwrap();
    let ended = events_until_ended(&mut events, &id).await;
    assert_eq!(connected(&ended), Some((false, None, false)), "{ended:?}");
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_a_console_cannot_give_is_refused_when_the_session_is_created() {
    use zt_api::Secret;
    use zt_api::control::{Conversation, CreateSessionRequest, LimitsRequest, Target};
    let fx = Proxy::start();
    let pin = base64(&[1; 32]);
    for (protocol, name, value, message) in [
        (
            "mysql",
            "server-certificate",
            pin.as_str(),
            "the pinned certificate itself (PEM)",
        ),
        (
            "sqlserver",
            "ssl-mode",
            "maybe",
            "must be \"disable\", \"prefer\" or \"require\"",
        ),
    ] {
        let request = CreateSessionRequest {
            transport: Transport::Quic,
            conversation: Conversation::Connection,
            protocol: Some(protocol.into()),
            target: Target {
                host: "127.0.0.1".into(),
                port: 9,
            },
            offer: None,
            sealed_offer: None,
            signalling: None,
            parameters: [("username", "u"), (name, value)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Secret::new(v.to_owned())))
                .collect(),
            limits: LimitsRequest::default(),
            route: None,
            recording: None,
            resource_id: None,
            user: None,
        };
        match fx.api.create_session(&request).await {
            Err(zt_proxy::client::api::ClientError::Api { status, error }) => {
                assert_eq!(status, 400);
                assert_eq!(error.field.as_deref(), Some(&*format!("parameters.{name}")));
                assert!(error.message.contains(message), "{}", error.message);
            }
            other => panic!("{protocol}: {other:?}"),
        }
    }
}

/// A MariaDB console's session, waiting for its first prompt unless `refused`.
async fn open_mysql(
    fx: &Proxy,
    db: &Mariadb,
    extra: &[(&str, &str)],
) -> (Term, String, zt_proxy::client::session::ClientSession) {
    let mut pairs: Vec<(&str, &str)> = vec![
        ("username", db.user.as_str()),
        ("password", db.password.as_str()),
        ("database", "shop"),
    ];
    pairs.extend_from_slice(extra);
    let (session, id) = fx
        .session(Transport::Webrtc, "mysql", db.port, &pairs, None)
        .await;
    let client = zt_tests::guac_client::GuacClient::start(
        &session,
        &zt_tests::guac_client::Handshake {
            select: "mysql".into(),
            size: zt_tests::term::DISPLAY,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (Term::new(client), id, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_with_its_pinned_certificate_is_tls_and_another_is_refused() {
    let db = Mariadb::start_tls().unwrap();
    let fx = Proxy::start();
    let pem = db.certificate.clone().unwrap();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (mut term, id, session) = open_mysql(&fx, &db, &[("server-certificate", &pem)]).await;
    term.wait_for("the first prompt", STEP, |l| {
        l.iter().any(|l| l == "MariaDB [shop]>")
    })
    .await;
    term.type_text("show status like 'Ssl_version';\n").await;
    term.wait_for("the server's view of the connection", STEP, |lines| {
        lines
            .iter()
            // (The screen's read-back shows `_` as `?`.)
            .any(|l| l.starts_with("| Ssl") && l.contains("version   | TLSv1."))
    })
    .await;
    fx.api.delete_session(&id).await.unwrap();
    let ended = events_until_ended(&mut events, &id).await;
    assert_eq!(
        connected(&ended),
        // mysql_async does not show the certificate it saw: only that it passed the pin.
        Some((true, None, true)),
        "{ended:?}"
    );
    drop(session);

    // Another certificate (of another server) is refused before the login.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .unwrap()
        .cert
        .pem();
    let (mut term, id, session) = open_mysql(&fx, &db, &[("server-certificate", &other)]).await;
    term.until_closed().await;
    assert_eq!(
        term.errors(),
        vec![(
            "The database server's certificate does not match the pinned certificate".to_owned(),
            Status::UPSTREAM_UNAVAILABLE.code()
        )]
    );
    let ended = events_until_ended(&mut events, &id).await;
    assert!(connected(&ended).is_none(), "{ended:?}");
    drop(session);

    // Without a pin: TLS, as the server offers it, and nothing pinned.
    let (mut term, id, session) = open_mysql(&fx, &db, &[]).await;
    term.wait_for("the first prompt", STEP, |l| {
        l.iter().any(|l| l == "MariaDB [shop]>")
    })
    .await;
    fx.api.delete_session(&id).await.unwrap();
    let ended = events_until_ended(&mut events, &id).await;
    assert_eq!(connected(&ended), Some((true, None, false)), "{ended:?}");
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_without_tls_is_refused_under_require_and_plain_under_prefer() {
    let db = Mariadb::start().unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (mut term, _id, session) = open_mysql(&fx, &db, &[("ssl-mode", "require")]).await;
    term.until_closed().await;
    assert_eq!(
        term.errors(),
        vec![(
            "The database server does not offer TLS".to_owned(),
            Status::UPSTREAM_ERROR.code()
        )]
    );
    drop(session);
    let (mut term, id, session) = open_mysql(&fx, &db, &[]).await;
    term.wait_for("the first prompt", STEP, |l| {
        l.iter().any(|l| l == "MariaDB [shop]>")
    })
    .await;
    fx.api.delete_session(&id).await.unwrap();
    let ended = events_until_ended(&mut events, &id).await;
    assert_eq!(connected(&ended), Some((false, None, false)), "{ended:?}");
    drop(session);
}

/// A SQL Server console's session against the TDS double.
async fn open_mssql(
    fx: &Proxy,
    db: &TdsServer,
    extra: &[(&str, &str)],
) -> (Term, String, zt_proxy::client::session::ClientSession) {
    let mut pairs: Vec<(&str, &str)> = vec![
        ("username", db.user.as_str()),
        ("password", db.password.as_str()),
        ("database", "shop"),
    ];
    pairs.extend_from_slice(extra);
    let (session, id) = fx
        .session(Transport::Quic, "sqlserver", db.port, &pairs, None)
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
    (Term::new(client), id, session)
}

const MSSQL_PROMPT: &str = "SQL Server [shop]>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlserver_with_its_pinned_certificate_is_tls_and_another_is_refused_before_the_login() {
    let db = TdsServer::start_with(Encryption::Offered).await.unwrap();
    let fx = Proxy::start();
    let (der, pem) = db.certificate.clone().unwrap();
    let presented: [u8; 32] = sha2::Sha256::digest(&der).into();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    // The pin as the certificate (PEM) and as its fingerprint.
    for pin in [pem.clone(), hex_colons(&presented)] {
        let (mut term, id, session) = open_mssql(&fx, &db, &[("server-certificate", &pin)]).await;
        term.type_text("select * from people;\n").await;
        term.wait_for("the table, through TLS", STEP, |l| {
            l.iter().any(|l| l == "3 rows in set") && l.iter().any(|l| l == MSSQL_PROMPT)
        })
        .await;
        fx.api.delete_session(&id).await.unwrap();
        let ended = events_until_ended(&mut events, &id).await;
        assert_eq!(
            connected(&ended),
            Some((true, Some(base64(&presented)), true)),
            "{ended:?}"
        );
        drop(session);
    }
    assert_eq!(db.logins().len(), 2);
    // TLS 1.2, though the server has 1.3: TDS 7.x wraps only the handshake.
    assert_eq!(db.tls_versions(), vec!["Some(TLSv1_2)"; 2]);

    // Another certificate: the session ends before LOGIN7 is sent.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .unwrap()
        .cert
        .pem();
    let (mut term, id, session) = open_mssql(&fx, &db, &[("server-certificate", &other)]).await;
    term.until_closed().await;
    assert_eq!(
        term.errors(),
        vec![(
            "The database server's certificate does not match the pinned certificate".to_owned(),
            Status::UPSTREAM_UNAVAILABLE.code()
        )]
    );
    let ended = events_until_ended(&mut events, &id).await;
    assert!(connected(&ended).is_none(), "{ended:?}");
    assert!(
        ended.iter().any(
            |e| matches!(e, AuditEvent::SessionEnded { detail: Some(d), .. }
            if d.contains(&base64(&presented)))
        ),
        "the presented fingerprint is in the session's end: {ended:?}"
    );
    assert_eq!(
        db.logins().len(),
        2,
        "no login after the refused certificate"
    );
    drop(session);

    // Without a pin: TLS, the fingerprint audited for pinning, nothing pinned.
    let (mut term, id, session) = open_mssql(&fx, &db, &[]).await;
    term.wait_for("the first prompt", STEP, |l| {
        l.iter().any(|l| l == MSSQL_PROMPT)
    })
    .await;
    fx.api.delete_session(&id).await.unwrap();
    let ended = events_until_ended(&mut events, &id).await;
    assert_eq!(
        connected(&ended),
        Some((true, Some(base64(&presented)), false)),
        "{ended:?}"
    );
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlserver_without_tls_is_refused_under_require_and_one_that_forces_it_under_disable() {
    let plain = TdsServer::start().await.unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (mut term, _id, session) = open_mssql(&fx, &plain, &[("ssl-mode", "require")]).await;
    term.until_closed().await;
    assert_eq!(
        term.errors(),
        vec![(
            "The database server does not offer TLS".to_owned(),
            Status::UPSTREAM_ERROR.code()
        )]
    );
    assert!(plain.logins().is_empty(), "no login in the clear");
    drop(session);
    // The default prefers TLS and accepts a server without it.
    let (mut term, id, session) = open_mssql(&fx, &plain, &[]).await;
    term.wait_for("the first prompt", STEP, |l| {
        l.iter().any(|l| l == MSSQL_PROMPT)
    })
    .await;
    fx.api.delete_session(&id).await.unwrap();
    let ended = events_until_ended(&mut events, &id).await;
    assert_eq!(connected(&ended), Some((false, None, false)), "{ended:?}");
    drop(session);

    // A server that forces encryption, and a session that turns it off.
    let forced = TdsServer::start_with(Encryption::Required).await.unwrap();
    let (mut term, id, session) = open_mssql(&fx, &forced, &[("ssl-mode", "disable")]).await;
    term.until_closed().await;
    assert_eq!(
        term.errors(),
        vec![(
            "Database server error".to_owned(),
            Status::UPSTREAM_ERROR.code()
        )]
    );
    let ended = events_until_ended(&mut events, &id).await;
    assert!(
        ended.iter().any(
            |e| matches!(e, AuditEvent::SessionEnded { detail: Some(d), .. }
            if d.contains("requires encryption"))
        ),
        "{ended:?}"
    );
    assert_eq!(forced.asked(), vec![2], "the PRELOGIN said ENCRYPT_NOT_SUP");
    assert!(forced.logins().is_empty());
    drop(session);
}
