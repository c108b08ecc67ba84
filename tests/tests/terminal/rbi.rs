//! Remote browser isolation against a web site the tests start (`zt_tests::web_site`): what
//! the client's screen shows (the display model's pixels), what the site's access logs saw,
//! and what is left behind.

use std::path::Path;
use std::time::{Duration, Instant};

use zt_api::audit::AuditEvent;
use zt_api::control::{LimitsRequest, Transport};
use zt_guac::{Instruction, opcode};
use zt_proxy::client::api::EventStream;
use zt_proxy::client::session::ClientSession;
use zt_tests::proc::{ProxyOptions, ZtProxy};
use zt_tests::term::{STEP, Term};
use zt_tests::web_site::{WebSite, colour};
use zt_tests::ztproxy_bin;

use super::{Proxy, TRANSPORTS, events_until_ended};

/// A proxy whose browsers keep their profiles under `profiles`.
fn proxy_with_profiles(profiles: &Path) -> Proxy {
    let recordings = tempfile::tempdir().unwrap();
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            extra_toml: format!(
                "[recordings]\ndirectory = \"{}\"\n[rbi]\nprofile_directory = \"{}\"\n",
                recordings.path().join("rec").display(),
                profiles.display()
            ),
            ..ProxyOptions::default()
        },
    )
    .expect("ztproxy starts");
    let api = proxy.api();
    Proxy {
        proxy,
        api,
        recordings,
    }
}

/// Parameters for a session starting at `path` of `site`, its origin allowed.
fn parameters(site: &WebSite, path: &str) -> Vec<(&'static str, String)> {
    vec![
        ("url", site.url(path)),
        (
            "allowed-url-patterns",
            format!("http://127.0.0.1:{}/*", site.port),
        ),
    ]
}

fn pairs<'a>(parameters: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    parameters.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A browser session to `port` with `parameters` over `transport`, its client connected.
async fn browse(
    fx: &Proxy,
    transport: Transport,
    port: u16,
    parameters: &[(&'static str, String)],
) -> (ClientSession, String, Term) {
    let (session, id) = fx
        .session(transport, "http", port, &pairs(parameters), None)
        .await;
    let term = Term::connect_to(&session, "http").await;
    (session, id, term)
}

/// The client leaves; the session's audit events up to its end.
async fn leave(term: &mut Term, events: &mut EventStream, id: &str) -> Vec<AuditEvent> {
    term.client
        .send(&Instruction::new(opcode::DISCONNECT, &[] as &[&str]))
        .await
        .unwrap();
    term.until_closed().await;
    events_until_ended(events, id).await
}

/// Receives until the client's screen shows `rgb` at (`x`, `y`).
async fn until_colour(fx: &Proxy, term: &mut Term, (x, y): (u32, u32), rgb: [u8; 3], what: &str) {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(p) = term.screen().pixel(x, y)
            && p[..3] == rgb
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the screen never showed {what}: ({x}, {y}) is {:?}; errors {:?}\n{}",
            term.screen().pixel(x, y),
            term.errors(),
            fx.proxy.output()
        );
        if term.receive(Duration::from_millis(200)).await == Some(false) {
            panic!(
                "the session closed before {what}: {:?}\n{}",
                term.errors(),
                fx.proxy.output()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_shown_and_refused_sub_resources_never_leave_the_machine() {
    let site = WebSite::start().unwrap();
    let fx = Proxy::start();
    for transport in TRANSPORTS {
        let mut events = fx.api.events(Some(0)).await.unwrap();
        let parameters = parameters(&site, "/resources");
        let (session, id, mut term) = browse(&fx, transport, site.port, &parameters).await;
        until_colour(&fx, &mut term, (10, 10), colour::RESOURCES, "the page").await;
        term.screenshot(&format!("rbi-{transport:?}"));
        let events = leave(&mut term, &mut events, &id).await;
        // The image from the page's origin loaded; the other origin never heard of us.
        assert!(
            site.log().iter().any(|h| h.path == "/pixel.png"),
            "{:?}",
            site.log()
        );
        assert!(site.other_log().is_empty(), "{:?}", site.other_log());
        for refused in ["/tracker.png", "/x.js"] {
            assert!(
                events.iter().any(|e| matches!(
                    e,
                    AuditEvent::PolicyRefused { action, name: Some(name), reason: Some(reason), .. }
                        if action == "resource" && name.ends_with(refused) && reason == "url_not_allowed"
                )),
                "{refused}: {events:?}"
            );
        }
        assert!(
            events.iter().any(|e| matches!(
                e,
                AuditEvent::BrowserNavigated { url, .. } if *url == site.url("/resources")
            )),
            "{events:?}"
        );
        assert!(
            events.iter().any(|e| matches!(
                e,
                AuditEvent::BrowserEnded { reason, refused, frames, .. }
                    if reason == "client_closed" && *refused >= 2 && *frames >= 1
            )),
            "{events:?}"
        );
        drop(session);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_refused_origin_is_stopped_at_its_hop() {
    let site = WebSite::start().unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let parameters = parameters(&site, "/redirect");
    let (session, id, mut term) = browse(&fx, Transport::Quic, site.port, &parameters).await;
    // The hop to the other origin is refused, and audited.
    let deadline = Instant::now() + STEP;
    while !site.log().iter().any(|h| h.path == "/redirect2") {
        assert!(Instant::now() < deadline, "{:?}", site.log());
        term.receive(Duration::from_millis(200)).await;
    }
    // The refusal is audited when Chromium asks for the hop, after /redirect2 answered.
    let refused = |e: &AuditEvent| {
        matches!(
            e,
            AuditEvent::PolicyRefused { action, name: Some(name), .. }
                if action == "navigation" && *name == site.other_url("/landing")
        )
    };
    let mut seen = Vec::new();
    let found = tokio::time::timeout(STEP, async {
        while let Some(record) = events.next().await {
            let event = record.expect("a well-formed audit record").event;
            if event.session() == Some(id.as_str()) {
                let done = refused(&event);
                seen.push(event);
                if done {
                    return;
                }
            }
        }
    })
    .await;
    assert!(found.is_ok(), "the hop was never refused: {seen:?}");
    leave(&mut term, &mut events, &id).await;
    assert!(site.other_log().is_empty(), "{:?}", site.other_log());
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_and_workers_reach_only_allowed_hosts() {
    let site = WebSite::start().unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let parameters = parameters(&site, "/sockets");
    let (session, id, mut term) = browse(&fx, Transport::Quic, site.port, &parameters).await;
    until_colour(&fx, &mut term, (10, 10), colour::SOCKETS, "the page").await;
    // The allowed WebSocket and the worker's allowed fetch come after the refused ones.
    let deadline = Instant::now() + STEP;
    while !["/ws-allowed", "/worker-allowed"]
        .iter()
        .all(|path| site.log().iter().any(|h| h.path == *path))
    {
        assert!(Instant::now() < deadline, "{:?}", site.log());
        term.receive(Duration::from_millis(200)).await;
    }
    let events = leave(&mut term, &mut events, &id).await;
    assert!(site.other_log().is_empty(), "{:?}", site.other_log());
    let other = format!("127.0.0.1:{}", site.other);
    let refusals = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                AuditEvent::PolicyRefused { action, name: Some(name), reason: Some(reason), .. }
                    if action == "connection" && *name == other && reason == "endpoint_not_allowed"
            )
        })
        .count();
    assert!(
        refusals >= 2,
        "the WebSocket and the worker's fetch: {events:?}"
    );
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_is_refused_unless_ignore_server_cert() {
    let site = WebSite::start().unwrap();
    let fx = Proxy::start();
    let secure = |ignore: bool| {
        let mut parameters = vec![("url", site.secure_url("/"))];
        if ignore {
            parameters.push(("ignore-server-cert", "true".to_owned()));
        }
        parameters
    };
    // Checked: Chromium refuses the handshake, and the page is never asked for.
    let parameters = secure(false);
    let (session, _, mut term) = browse(&fx, Transport::Quic, site.secure, &parameters).await;
    let deadline = Instant::now() + STEP;
    while site.handshakes_failed() == 0 {
        assert!(
            Instant::now() < deadline,
            "Chromium never tried the HTTPS origin"
        );
        term.receive(Duration::from_millis(200)).await;
    }
    assert!(site.secure_log().is_empty(), "{:?}", site.secure_log());
    drop(term);
    drop(session);
    // Ignored: the page is shown.
    let parameters = secure(true);
    let (session, _, mut term) = browse(&fx, Transport::Quic, site.secure, &parameters).await;
    until_colour(&fx, &mut term, (10, 10), colour::SECURE, "the HTTPS page").await;
    assert!(site.secure_log().iter().any(|h| h.path == "/"));
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_clicking_in_the_client_submit_a_form() {
    let site = WebSite::start().unwrap();
    let fx = Proxy::start();
    let parameters = parameters(&site, "/form");
    let (session, _id, mut term) = browse(&fx, Transport::Webrtc, site.port, &parameters).await;
    until_colour(&fx, &mut term, (10, 10), colour::FORM, "the form").await;
    // Click into the field (below the band), type non-ASCII text, press Return.
    for mask in ["1", "0"] {
        term.client
            .send(&Instruction::new(opcode::MOUSE, &["40", "130", mask]))
            .await
            .unwrap();
    }
    term.type_text("zt text").await;
    for keysym in [0xe9u32, 0x0100_0436] {
        term.key(keysym).await;
    }
    term.key(0xff0d).await;
    until_colour(&fx, &mut term, (10, 10), colour::ECHO, "the answer page").await;
    let posted = site
        .log()
        .into_iter()
        .find(|h| h.method == "POST" && h.path == "/echo")
        .expect("the form was posted");
    assert_eq!(posted.body, "text=zt+text%C3%A9%D0%B6");
    drop(session);
}

/// Chromium processes whose command line names `dir`.
fn browsers_under(dir: &Path) -> usize {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_sessions_leaves_no_browser_process_and_no_profile() {
    let site = WebSite::start().unwrap();
    let profiles = tempfile::tempdir().unwrap();
    let fx = proxy_with_profiles(profiles.path());
    for round in 0..10 {
        let parameters = parameters(&site, "/");
        // Ends by revocation, by the client leaving, by the client's connection dropping,
        // and by the idle timeout (a static page sends nothing), in turn.
        let limits = LimitsRequest {
            idle_timeout: (round % 4 == 3).then_some(Duration::from_secs(2)),
            ..LimitsRequest::default()
        };
        let (session, id) = fx
            .session_with_limits(
                Transport::Quic,
                "http",
                site.port,
                &pairs(&parameters),
                None,
                limits,
            )
            .await;
        let mut term = Term::connect_to(&session, "http").await;
        until_colour(&fx, &mut term, (10, 10), colour::HOME, "the home page").await;
        assert!(browsers_under(profiles.path()) > 0, "round {round}");
        match round % 4 {
            0 => {
                fx.api.delete_session(&id).await.unwrap();
                // The client hears why, not "the browser closed".
                term.until_closed().await;
                assert!(
                    term.errors().iter().any(|(m, _)| m == "Session revoked"),
                    "round {round}: {:?}",
                    term.errors()
                );
            }
            1 => term
                .client
                .send(&Instruction::new(opcode::DISCONNECT, &[] as &[&str]))
                .await
                .unwrap(),
            2 => {}
            _ => {
                term.until_closed().await;
                assert!(
                    term.errors()
                        .iter()
                        .any(|(m, _)| m == "Session idle for too long"),
                    "round {round}: {:?}",
                    term.errors()
                );
            }
        }
        drop(term);
        drop(session);
        let deadline = Instant::now() + STEP;
        loop {
            let left = browsers_under(profiles.path());
            let files = std::fs::read_dir(profiles.path()).unwrap().count();
            if left == 0 && files == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {left} browser processes and {files} profiles are left"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autofill_logs_in_and_the_password_reaches_neither_the_client_nor_the_recording() {
    use zt_tests::web_site::{PASSWORD, USER};
    let site = WebSite::start().unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let mut parameters = parameters(&site, "/login");
    parameters.extend([
        ("username", USER.to_owned()),
        ("password", PASSWORD.to_owned()),
        (
            "autofill-configuration",
            format!(
                r##"[{{"page": "http://127.0.0.1:{}/login", "username-field": "#username", "password-field": "#password", "submit": "#go"}}]"##,
                site.port
            ),
        ),
    ]);
    let recording = zt_api::control::RecordingRequest {
        graphical: true,
        typescript: false,
        ..super::typescript()
    };
    let (session, id) = fx
        .session(
            Transport::Quic,
            "http",
            site.port,
            &pairs(&parameters),
            Some(recording),
        )
        .await;
    let mut term = Term::connect_to(&session, "http").await;
    until_colour(
        &fx,
        &mut term,
        (10, 10),
        colour::WELCOME,
        "the welcome page",
    )
    .await;
    // The site got the credentials...
    let login = site
        .log()
        .into_iter()
        .find(|h| h.method == "POST" && h.path == "/login")
        .expect("the form was submitted");
    assert!(
        login.body.contains(&format!("username={USER}")),
        "{}",
        login.body
    );
    // ...the client never did.
    assert!(!term.received_text().contains(PASSWORD));
    fx.api.delete_session(&id).await.unwrap();
    term.until_closed().await;
    let (events, files) = fx.ended_recordings(&mut events, &id).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            AuditEvent::BrowserAutofilled {
                fields: 2,
                submitted: true,
                ..
            }
        )),
        "{events:?}"
    );
    assert!(!serde_json::to_string(&events).unwrap().contains(PASSWORD));
    assert_eq!(files.len(), 1, "{files:?}");
    let exported = std::fs::read(fx.export(&files[0], "guac")).unwrap();
    assert!(!String::from_utf8_lossy(&exported).contains(PASSWORD));
    // The recording shows what the client saw: the welcome page at the end.
    let all = zt_tests::decode_recording(&exported);
    assert_eq!(
        zt_tests::replay_screen(&all).differing_pixels(&term.screen()),
        0
    );
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pages_end_or_are_refused_cleanly_and_other_sessions_go_on() {
    let site = WebSite::start().unwrap();
    let profiles = tempfile::tempdir().unwrap();
    let fx = proxy_with_profiles(profiles.path());
    let mut events = fx.api.events(Some(0)).await.unwrap();
    // A bystander, which must not notice the others.
    let bystander_parameters = parameters(&site, "/form");
    let (bystander, _, mut calm) =
        browse(&fx, Transport::Quic, site.port, &bystander_parameters).await;
    until_colour(
        &fx,
        &mut calm,
        (10, 10),
        colour::FORM,
        "the bystander's form",
    )
    .await;

    // Thousands of popups: none opens; the page goes on.
    let popups = parameters(&site, "/popups");
    let (session, _, mut term) = browse(&fx, Transport::Quic, site.port, &popups).await;
    until_colour(
        &fx,
        &mut term,
        (10, 10),
        colour::POPUPS,
        "the page after its popups",
    )
    .await;
    assert!(
        site.log().iter().filter(|h| h.path == "/").count() == 0,
        "a popup loaded"
    );
    drop(term);
    drop(session);

    // A 10 GiB download: refused after its headers, audited; the page stays.
    let big = parameters(&site, "/get-big");
    let (session, id, mut term) = browse(&fx, Transport::Quic, site.port, &big).await;
    until_colour(
        &fx,
        &mut term,
        (10, 10),
        colour::GET_BIG,
        "the page that downloads",
    )
    .await;
    let deadline = Instant::now() + STEP;
    while !site.log().iter().any(|h| h.path == "/big-download") {
        assert!(Instant::now() < deadline, "the download never started");
        term.receive(Duration::from_millis(100)).await;
    }
    term.receive(Duration::from_secs(1)).await;
    let sent = site.big_download_sent();
    assert!(
        sent < 1 << 30,
        "{sent} bytes of the 10 GiB download were taken"
    );
    fx.api.delete_session(&id).await.unwrap();
    term.until_closed().await;
    let ended = events_until_ended(&mut events, &id).await;
    assert!(
        ended.iter().any(|e| matches!(
            e,
            AuditEvent::PolicyRefused { action, name: Some(name), .. }
                if action == "download" && name == "huge.bin"
        )),
        "{ended:?}"
    );
    drop(session);

    // A page that allocates without end: its renderer dies at V8's limit, and the session
    // ends with a clear error.
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let memory = parameters(&site, "/memory");
    let (session, id, mut term) = browse(&fx, Transport::Quic, site.port, &memory).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !term.closed {
        assert!(
            Instant::now() < deadline,
            "the allocating page never ended its session"
        );
        term.receive(Duration::from_millis(500)).await;
    }
    assert_eq!(
        term.errors(),
        vec![(
            "The remote browser crashed".to_owned(),
            zt_guac::Status::UPSTREAM_ERROR.code()
        )]
    );
    let ended = events_until_ended(&mut events, &id).await;
    assert!(
        ended.iter().any(|e| matches!(
            e,
            AuditEvent::BrowserEnded { reason, .. } if reason == "error"
        )),
        "{ended:?}"
    );
    drop(session);

    // The bystander still works: a click, typing and Return submit its form.
    for mask in ["1", "0"] {
        calm.client
            .send(&Instruction::new(opcode::MOUSE, &["40", "130", mask]))
            .await
            .unwrap();
    }
    calm.type_text("calm").await;
    calm.key(0xff0d).await;
    until_colour(
        &fx,
        &mut calm,
        (10, 10),
        colour::ECHO,
        "the bystander's answer",
    )
    .await;
    drop(calm);
    drop(bystander);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_beyond_the_configured_limit_are_refused_when_the_session_is_created() {
    let site = WebSite::start().unwrap();
    let recordings = tempfile::tempdir().unwrap();
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            extra_toml: "[rbi]\nmax_browsers = 1\n".to_owned(),
            ..ProxyOptions::default()
        },
    )
    .expect("ztproxy starts");
    let fx = Proxy {
        api: proxy.api(),
        proxy,
        recordings,
    };
    let parameters = parameters(&site, "/");
    let (first, id) = fx
        .session(
            Transport::Quic,
            "http",
            site.port,
            &pairs(&parameters),
            None,
        )
        .await;
    let request = zt_api::control::CreateSessionRequest {
        transport: Transport::Quic,
        conversation: zt_api::control::Conversation::Connection,
        protocol: Some("http".into()),
        target: zt_api::control::Target {
            host: "127.0.0.1".into(),
            port: site.port,
        },
        offer: None,
        sealed_offer: None,
        signalling: None,
        parameters: pairs(&parameters)
            .iter()
            .map(|(k, v)| ((*k).to_owned(), zt_api::Secret::new((*v).to_owned())))
            .collect(),
        limits: LimitsRequest::default(),
        route: None,
        recording: None,
        resource_id: Some("res-http".into()),
        user: Some("alice".into()),
    };
    let refused = fx.api.create_session(&request).await.unwrap_err();
    assert!(refused.to_string().contains("max_browsers"), "{refused}");
    // The permit comes back with the session.
    fx.api.delete_session(&id).await.unwrap();
    drop(first);
    let deadline = Instant::now() + STEP;
    loop {
        match fx.api.create_session(&request).await {
            Ok(_) => break,
            Err(error) => {
                assert!(Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Ctrl + `letter`.
async fn chord(term: &mut Term, letter: char) {
    for (keysym, pressed) in [
        (0xffe3, "1"),
        (u32::from(letter), "1"),
        (u32::from(letter), "0"),
        (0xffe3, "0"),
    ] {
        term.client
            .send(&Instruction::new(
                opcode::KEY,
                &[keysym.to_string().as_str(), pressed],
            ))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clipboard_crosses_only_where_the_policy_allows() {
    let site = WebSite::start().unwrap();
    let fx = Proxy::start();
    for (copy_allowed, paste_allowed) in [(true, false), (false, true)] {
        let mut events = fx.api.events(Some(0)).await.unwrap();
        let mut parameters = parameters(&site, "/form");
        parameters.push(("disable-copy", (!copy_allowed).to_string()));
        parameters.push(("disable-paste", (!paste_allowed).to_string()));
        let (session, id, mut term) = browse(&fx, Transport::Quic, site.port, &parameters).await;
        until_colour(&fx, &mut term, (10, 10), colour::FORM, "the form").await;
        for mask in ["1", "0"] {
            term.client
                .send(&Instruction::new(opcode::MOUSE, &["40", "130", mask]))
                .await
                .unwrap();
        }
        // Copy: typed text, selected and copied in the page.
        term.type_text("copied-zt").await;
        chord(&mut term, 'a').await;
        chord(&mut term, 'c').await;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && term.clipboards().is_empty() {
            term.receive(Duration::from_millis(100)).await;
        }
        if copy_allowed {
            assert_eq!(term.clipboards(), vec!["copied-zt".to_owned()]);
        } else {
            assert!(term.clipboards().is_empty(), "{:?}", term.clipboards());
        }
        // Paste: the client's clipboard typed over the selection, then the form sent.
        term.paste("pasted-zt").await;
        chord(&mut term, 'a').await;
        chord(&mut term, 'v').await;
        term.key(0xff0d).await;
        until_colour(&fx, &mut term, (10, 10), colour::ECHO, "the answer page").await;
        let posted = site
            .log()
            .into_iter()
            .rev()
            .find(|h| h.method == "POST" && h.path == "/echo")
            .unwrap();
        let want = if paste_allowed {
            "text=pasted-zt"
        } else {
            "text=copied-zt"
        };
        assert_eq!(posted.body, want);
        let events = leave(&mut term, &mut events, &id).await;
        let refused = |what: &str| {
            events.iter().any(|e| {
                matches!(
                    e,
                    AuditEvent::PolicyRefused { action, .. } if action == what
                )
            })
        };
        assert_eq!(refused("copy"), !copy_allowed, "{events:?}");
        assert_eq!(refused("paste"), !paste_allowed, "{events:?}");
        drop(session);
    }
}

/// Mouse button 1 pressed and released at (`x`, `y`).
async fn click(term: &mut Term, x: u32, y: u32) {
    for mask in ["1", "0"] {
        term.client
            .send(&Instruction::new(
                opcode::MOUSE,
                &[x.to_string().as_str(), y.to_string().as_str(), mask],
            ))
            .await
            .unwrap();
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_download_reaches_the_client_as_a_file_and_an_oversized_one_is_cancelled() {
    use zt_tests::guac_files::Files;
    let site = WebSite::start().unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let mut allowed = parameters(&site, "/get-report");
    allowed.push(("allow-download", "true".into()));
    let (session, id, mut term) = browse(&fx, Transport::Quic, site.port, &allowed).await;
    let mut data = Vec::new();
    let (name, moved) = Files::new(&mut term.client)
        .receive_file(STEP, |bytes| data.extend_from_slice(bytes))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no file reached the client\n{}", fx.proxy.output()));
    assert_eq!(name, "report.bin");
    assert_eq!(moved.size, zt_tests::web_site::REPORT_LEN as u64);
    assert!(
        data == zt_tests::web_site::report(),
        "the file's bytes differ"
    );
    let ended = leave(&mut term, &mut events, &id).await;
    let digest = sha256_hex(&zt_tests::web_site::report());
    assert!(
        ended.iter().any(|e| matches!(
            e,
            AuditEvent::Transfer { direction, kind, name: Some(name), size, sha256, .. }
                if direction == "to_client" && kind == "file" && name == "report.bin"
                    && *size == zt_tests::web_site::REPORT_LEN as u64 && *sha256 == digest
        )),
        "{ended:?}"
    );
    drop(session);

    // 10 GiB announced against a limit of 1 MiB: cancelled at once, audited, and the page
    // stays.
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let mut big = parameters(&site, "/get-big");
    big.push(("allow-download", "true".into()));
    big.push(("max-file-size", (1 << 20).to_string()));
    let (session, id, mut term) = browse(&fx, Transport::Quic, site.port, &big).await;
    until_colour(
        &fx,
        &mut term,
        (10, 10),
        colour::GET_BIG,
        "the page that downloads",
    )
    .await;
    let deadline = Instant::now() + STEP;
    while !site.log().iter().any(|h| h.path == "/big-download") {
        assert!(Instant::now() < deadline, "the download never started");
        term.receive(Duration::from_millis(100)).await;
    }
    term.receive(Duration::from_secs(1)).await;
    let sent = site.big_download_sent();
    assert!(
        sent < 1 << 30,
        "{sent} bytes of the 10 GiB download were taken"
    );
    let ended = leave(&mut term, &mut events, &id).await;
    assert!(
        ended.iter().any(|e| matches!(
            e,
            AuditEvent::PolicyRefused { action, name: Some(name), reason: Some(reason), .. }
                if action == "download" && name == "huge.bin" && reason == "too_large"
        )),
        "{ended:?}"
    );
    assert!(
        !ended
            .iter()
            .any(|e| matches!(e, AuditEvent::Transfer { .. })),
        "{ended:?}"
    );
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_reach_the_pages_file_input_only_when_allowed() {
    use zt_tests::guac_files::Files;
    let site = WebSite::start().unwrap();
    let fx = Proxy::start();
    let uploaded = |body: &str| {
        site.log()
            .iter()
            .any(|h| h.method == "POST" && h.path == "/uploaded" && h.body == body)
    };
    let from = |text: &'static [u8]| {
        let mut left = text;
        move |buffer: &mut [u8]| {
            let n = left.len().min(buffer.len());
            buffer[..n].copy_from_slice(&left[..n]);
            left = &left[n..];
            n
        }
    };
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let mut allowed = parameters(&site, "/upload");
    allowed.push(("allow-upload", "true".into()));
    let (session, id, mut term) = browse(&fx, Transport::Quic, site.port, &allowed).await;
    until_colour(&fx, &mut term, (10, 10), [250, 250, 250], "the upload page").await;

    // Dropped first, then chosen in the page.
    let moved = Files::new(&mut term.client)
        .upload(5, "notes.txt", 64 * 1024, from(b"zt upload one"))
        .await
        .unwrap()
        .expect("the upload is taken");
    assert_eq!(moved.size, 13);
    click(&mut term, 10, 10).await;
    until_colour(
        &fx,
        &mut term,
        (10, 10),
        colour::UPLOADED,
        "the page's answer",
    )
    .await;
    assert!(uploaded("notes.txt:zt upload one"), "{:?}", site.log());

    // Chosen first: the chooser waits for the next upload.
    click(&mut term, 10, 10).await;
    Files::new(&mut term.client)
        .upload(6, "../second.txt", 64 * 1024, from(b"zt upload two"))
        .await
        .unwrap()
        .expect("the upload is taken");
    let deadline = Instant::now() + STEP;
    while !uploaded("second.txt:zt upload two") {
        assert!(Instant::now() < deadline, "{:?}", site.log());
        term.receive(Duration::from_millis(100)).await;
    }
    let ended = leave(&mut term, &mut events, &id).await;
    for (name, text) in [
        ("notes.txt", "zt upload one"),
        ("../second.txt", "zt upload two"),
    ] {
        let digest = sha256_hex(text.as_bytes());
        assert!(
            ended.iter().any(|e| matches!(
                e,
                AuditEvent::Transfer { direction, name: Some(n), sha256, .. }
                    if direction == "to_target" && n == name && *sha256 == digest
            )),
            "{name}: {ended:?}"
        );
    }
    drop(session);

    // Without allow-upload the client is refused, and the refusal audited.
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let off = parameters(&site, "/upload");
    let (session, id, mut term) = browse(&fx, Transport::Quic, site.port, &off).await;
    let refused = Files::new(&mut term.client)
        .upload(5, "notes.txt", 64 * 1024, from(b"zt upload three"))
        .await
        .unwrap()
        .expect_err("uploads are off by default");
    assert_eq!(refused.status, zt_guac::Status::CLIENT_FORBIDDEN.code());
    let ended = leave(&mut term, &mut events, &id).await;
    assert!(
        ended.iter().any(|e| matches!(
            e,
            AuditEvent::PolicyRefused { action, .. } if action == "upload"
        )),
        "{ended:?}"
    );
    assert!(!site.log().iter().any(|h| h.body.contains("three")));
    drop(session);
}

/// The URLs the client's address bar was sent (`url` pipes), in order.
fn urls_shown(term: &Term) -> Vec<String> {
    use base64::Engine as _;
    let mut streams = Vec::new();
    let mut urls = Vec::new();
    for i in &term.received {
        if i.is(opcode::PIPE) && i.arg(2) == Some("url") {
            streams.push(i.arg(0).unwrap_or_default().to_owned());
        } else if i.is(opcode::BLOB) && streams.iter().any(|s| Some(s.as_str()) == i.arg(0)) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(i.arg(1).unwrap_or_default())
                .unwrap();
            urls.push(String::from_utf8(bytes).unwrap());
        } else if i.is(opcode::END) {
            streams.retain(|s| Some(s.as_str()) != i.arg(0));
        }
    }
    urls
}

/// Types `url` into the address bar: a `url` pipe on `stream`.
async fn type_url(term: &mut Term, stream: &str, url: &str) {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(url);
    for i in [
        Instruction::new(opcode::PIPE, &[stream, "text/plain", "url"]),
        Instruction::new(opcode::BLOB, &[stream, data.as_str()]),
        Instruction::new(opcode::END, &[stream]),
    ] {
        term.client.send(&i).await.unwrap();
    }
}

/// Receives until the client got an `ack` of `stream`: its status.
async fn ack_of(term: &mut Term, stream: &str) -> u32 {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(ack) = term
            .received
            .iter()
            .find(|i| i.is(opcode::ACK) && i.arg(0) == Some(stream))
        {
            return ack.arg(2).and_then(|s| s.parse().ok()).unwrap();
        }
        assert!(Instant::now() < deadline, "no ack of stream {stream}");
        term.receive(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_bar_shows_each_page_and_takes_typed_urls_only_when_allowed() {
    let site = WebSite::start().unwrap();
    let fx = Proxy::start();
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let mut allowed = parameters(&site, "/");
    allowed.push(("allow-url-manipulation", "true".into()));
    let (session, id, mut term) = browse(&fx, Transport::Quic, site.port, &allowed).await;
    until_colour(&fx, &mut term, (10, 10), colour::HOME, "the home page").await;
    assert_eq!(urls_shown(&term).last(), Some(&site.url("/")));

    type_url(&mut term, "9", &site.url("/form")).await;
    assert_eq!(ack_of(&mut term, "9").await, 0);
    until_colour(&fx, &mut term, (10, 10), colour::FORM, "the typed page").await;
    let deadline = Instant::now() + STEP;
    while urls_shown(&term).last() != Some(&site.url("/form")) {
        assert!(Instant::now() < deadline, "{:?}", urls_shown(&term));
        term.receive(Duration::from_millis(100)).await;
    }

    // Another origin, and a script: refused before the browser is asked, and audited.
    type_url(&mut term, "10", &site.other_url("/typed")).await;
    type_url(
        &mut term,
        "11",
        "javascript:document.body.style.background='black'",
    )
    .await;
    type_url(&mut term, "12", &site.url("/echo-typed")).await;
    let deadline = Instant::now() + STEP;
    while !site.log().iter().any(|h| h.path == "/echo-typed") {
        assert!(Instant::now() < deadline, "the last typed URL never loaded");
        term.receive(Duration::from_millis(100)).await;
    }
    let ended = leave(&mut term, &mut events, &id).await;
    assert!(site.other_log().is_empty(), "{:?}", site.other_log());
    for refused in [site.other_url("/typed"), "javascript:".to_owned()] {
        assert!(
            ended.iter().any(|e| matches!(
                e,
                AuditEvent::PolicyRefused { action, name: Some(name), .. }
                    if action == "navigation" && name.starts_with(&refused)
            )),
            "{refused}: {ended:?}"
        );
    }
    drop(session);

    // Off by default: the typed URL is refused and nothing loads.
    let plain = parameters(&site, "/");
    let (session, _, mut term) = browse(&fx, Transport::Quic, site.port, &plain).await;
    until_colour(&fx, &mut term, (10, 10), colour::HOME, "the home page").await;
    type_url(&mut term, "9", &site.url("/resources")).await;
    assert_eq!(
        ack_of(&mut term, "9").await,
        zt_guac::Status::CLIENT_FORBIDDEN.code()
    );
    term.receive(Duration::from_secs(1)).await;
    assert!(!site.log().iter().any(|h| h.path == "/resources"));
    drop(term);
    drop(session);
}

/// The remote browsers' control groups under `root` (`zt-rbi-*` directories, at any depth
/// up to 6).
fn browser_groups(root: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, depth: u32, found: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if entry.file_name().to_string_lossy().starts_with("zt-rbi-") {
                found.push(path);
            } else if depth > 0 {
                walk(&path, depth - 1, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(root, 6, &mut found);
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_filling_memory_outside_v8_is_stopped_by_the_browsers_control_group() {
    // The machines this runs on let root make cgroups (v1 here; v2 with delegation): the
    // cap is checked in force before the page may allocate.
    let root = Path::new("/sys/fs/cgroup/memory");
    let site = WebSite::start().unwrap();
    let proxy = ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            extra_toml: "[rbi]\nmemory_limit_mib = 768\nmax_processes = 400\n".into(),
            ..ProxyOptions::default()
        },
    )
    .expect("ztproxy starts");
    let api = proxy.api();
    let fx = Proxy {
        proxy,
        api,
        recordings: tempfile::tempdir().unwrap(),
    };
    // This proxy's groups (other tests' proxies make theirs at the same time).
    let prefix = format!("zt-rbi-{}-", fx.proxy.pid());
    let ours = |root: &Path| {
        browser_groups(root)
            .into_iter()
            .filter(|g| {
                g.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .collect::<Vec<_>>()
    };
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let home = parameters(&site, "/");
    let (session, _, mut term) = browse(&fx, Transport::Quic, site.port, &home).await;
    until_colour(&fx, &mut term, (10, 10), colour::HOME, "the home page").await;
    let groups = ours(root);
    assert_eq!(
        groups.len(),
        1,
        "one group for the browser: {groups:?}\n{}",
        fx.proxy.output()
    );
    let limit = std::fs::read_to_string(groups[0].join("memory.limit_in_bytes")).unwrap();
    assert_eq!(limit.trim(), (768u64 << 20).to_string());
    let procs = std::fs::read_to_string(groups[0].join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().count() >= 2,
        "the browser's processes: {procs:?}"
    );
    drop(term);
    drop(session);

    // 32 MiB array buffers every 5 ms: the kernel ends the renderer at the group's limit,
    // and the session ends with a clear error; the group goes with the browser.
    let buffers = parameters(&site, "/buffers");
    let (session, id, mut term) = browse(&fx, Transport::Quic, site.port, &buffers).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    // The group's peak use, read while the browser runs: it is the group's limit that
    // stopped the page, not anything else.
    let mut peak = 0u64;
    while !term.closed {
        assert!(
            Instant::now() < deadline,
            "the page filling memory never ended its session"
        );
        for group in ours(root) {
            if let Ok(used) = std::fs::read_to_string(group.join("memory.max_usage_in_bytes")) {
                peak = peak.max(used.trim().parse().unwrap_or(0));
            }
        }
        term.receive(Duration::from_millis(50)).await;
    }
    assert!(
        peak >= 700 << 20,
        "the browser's group peaked at {} MiB of its 768",
        peak >> 20
    );
    assert_eq!(
        term.errors(),
        vec![(
            "The remote browser crashed".to_owned(),
            zt_guac::Status::UPSTREAM_ERROR.code()
        )]
    );
    let ended = events_until_ended(&mut events, &id).await;
    assert!(
        ended.iter().any(|e| matches!(
            e,
            AuditEvent::BrowserEnded { reason, .. } if reason == "error"
        )),
        "{ended:?}"
    );
    drop(session);
    let deadline = Instant::now() + STEP;
    loop {
        let left = ours(root);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "groups left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
