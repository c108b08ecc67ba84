//! SFTP in native SSH connections against the real sshd and its `sftp-server`: transfers of a
//! gigabyte each way through both transports with their SHA-256 in the audit log, the jail
//! (every escape refused, nothing outside the root touched), the policy switches, revocation
//! mid-upload, and what the recordings keep (the facts, not the content).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zt_api::audit::AuditEvent;
use zt_api::control::Transport;
use zt_guac::{Instruction, opcode};
use zt_tests::guac_files::{Files, Moved, pattern_source, sha256_file, write_pattern};

use super::{Fixture, STEP, TRANSPORTS, Term, events_until_ended, recording, wait_event};

/// What the issue asks to move each way.
const GIB: u64 = 1 << 30;
/// The server's cap on one listing (`zt_ssh::sftp::files::MAX_LISTING`).
const MAX_LISTING: usize = 10_000;
/// How long to wait for a body the server may rightly never send.
const PATIENCE: Duration = Duration::from_millis(1500);

/// The user's home with a jail (the root the sessions get) and a directory beside it.
struct Jail {
    root: PathBuf,
    outside: PathBuf,
    ids: (u32, u32),
}

impl Jail {
    fn new(fx: &Fixture) -> Self {
        let home = PathBuf::from("/home").join(&fx.sshd.user);
        let root = home.join("jail");
        let outside = home.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let ids = zt_tests::user_ids(&fx.sshd.user).unwrap();
        let jail = Self { root, outside, ids };
        jail.own(&home);
        jail
    }

    /// Gives `path` (and what is below it) to the test user.
    fn own(&self, path: &Path) {
        zt_tests::chown_recursive(path, self.ids.0, self.ids.1).unwrap();
    }

    fn parameters(&self, fx: &Fixture, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut parameters = fx.password_login();
        parameters.push(("enable-sftp".into(), "true".into()));
        parameters.push((
            "sftp-root-directory".into(),
            self.root.display().to_string(),
        ));
        parameters.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        parameters
    }

    /// Every file below `outside`, with its contents.
    fn outside_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&self.outside).unwrap() {
            let path = entry.unwrap().path();
            files.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
        }
        files
    }

    /// Names in the root that look like unfinished uploads.
    fn temporaries(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".ztproxy-upload-"))
            .collect()
    }
}

/// The next `transfer` event of `session` going `direction`: its path, size and SHA-256.
async fn transfer_event(
    events: &mut zt_proxy::client::api::EventStream,
    session: &str,
    direction: &str,
) -> (Option<String>, u64, String) {
    let event = wait_event(
        events,
        session,
        STEP,
        |e| matches!(e, AuditEvent::Transfer { direction: d, .. } if d == direction),
    )
    .await;
    let AuditEvent::Transfer {
        path, size, sha256, ..
    } = event
    else {
        unreachable!()
    };
    (path, size, sha256)
}

/// The next `policy_refused` event of `session` for `action`: its reason and name.
async fn refusal_event(
    events: &mut zt_proxy::client::api::EventStream,
    session: &str,
    action: &str,
) -> (Option<String>, Option<String>) {
    let event = wait_event(
        events,
        session,
        STEP,
        |e| matches!(e, AuditEvent::PolicyRefused { action: a, .. } if a == action),
    )
    .await;
    let AuditEvent::PolicyRefused { reason, name, .. } = event else {
        unreachable!()
    };
    (reason, name)
}

/// An SSH session with SFTP, its client past the `filesystem` instruction.
async fn files_session(
    fx: &Fixture,
    transport: Transport,
    parameters: &[(String, String)],
    recording: Option<zt_api::control::RecordingRequest>,
) -> (
    Term,
    String,
    zt_proxy::client::session::ClientSession,
    String,
) {
    let (session, id) = fx.session(transport, parameters, recording).await;
    let mut term = Term::connect(&session).await;
    let (object, name) = Files::new(&mut term.client).filesystem().await.unwrap();
    assert_eq!(object, "0");
    (term, id, session, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_each_way_over_both_transports_arrives_with_the_same_sha256() {
    let fx = Fixture::start().await;
    let jail = Jail::new(&fx);
    let down = jail.root.join("down.bin");
    let down_sha = write_pattern(&down, 7, GIB).unwrap();
    jail.own(&down);
    let parameters = jail.parameters(&fx, &[]);
    let mut events = fx.api.events(None).await.unwrap();
    for (seed, transport) in TRANSPORTS.into_iter().enumerate() {
        let (mut term, id, _session, root) = files_session(&fx, transport, &parameters, None).await;
        assert_eq!(
            Path::new(&root),
            jail.root,
            "the object is named by its root"
        );
        let mut files = Files::new(&mut term.client);
        files.step = Duration::from_secs(120);

        let up: Moved = files
            .upload(1, "up.bin", 4 << 20, pattern_source(seed as u64 + 100, GIB))
            .await
            .unwrap()
            .unwrap_or_else(|refused| panic!("{transport:?}: upload refused: {refused}"));
        assert_eq!(up.size, GIB);
        let landed = jail.root.join("up.bin");
        assert_eq!(
            sha256_file(&landed).unwrap(),
            up.sha256,
            "{transport:?}: the file on the target has the bytes sent"
        );
        assert_eq!(
            transfer_event(&mut events, &id, "to_target").await,
            (Some("/up.bin".to_owned()), GIB, hex::encode(up.sha256))
        );
        std::fs::remove_file(&landed).unwrap();

        let got = files
            .download("/down.bin", STEP, |_| {})
            .await
            .unwrap()
            .expect("a body for the file");
        assert_eq!(
            (got.size, got.sha256),
            (GIB, down_sha),
            "{transport:?}: the client got the file's bytes"
        );
        assert_eq!(
            transfer_event(&mut events, &id, "to_client").await,
            (Some("/down.bin".to_owned()), GIB, hex::encode(down_sha))
        );
        fx.api.delete_session(&id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_jail_escape_is_refused_and_nothing_outside_is_touched() {
    let fx = Fixture::start().await;
    let jail = Jail::new(&fx);
    std::fs::write(jail.outside.join("secret.txt"), b"outside the jail").unwrap();
    std::fs::write(jail.root.join("inside.txt"), b"inside the jail").unwrap();
    std::fs::create_dir(jail.root.join("sub")).unwrap();
    std::os::unix::fs::symlink("../outside", jail.root.join("link-out")).unwrap();
    std::os::unix::fs::symlink("../outside/secret.txt", jail.root.join("secret-link")).unwrap();
    std::os::unix::fs::symlink("/etc", jail.root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("sub", jail.root.join("link-in")).unwrap();
    std::fs::hard_link(jail.outside.join("secret.txt"), jail.root.join("hard.txt")).unwrap();
    std::os::unix::fs::symlink("hard.txt", jail.root.join("link-to-hard")).unwrap();
    jail.own(&jail.root);
    jail.own(&jail.outside);
    let before = jail.outside_files();

    let parameters = jail.parameters(&fx, &[]);
    let mut events = fx.api.events(None).await.unwrap();
    let (mut term, id, _session, _) = files_session(&fx, Transport::Quic, &parameters, None).await;
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut files = Files::new(&mut term.client);
    let seen = bodies.clone();
    files.other = Box::new(move |i: &Instruction| {
        if i.is(opcode::BODY) {
            seen.lock()
                .unwrap()
                .push(i.arg(3).unwrap_or_default().to_owned());
        }
    });

    // The root lists what is inside, and no link that leads out.
    let listing = files
        .list("/", STEP)
        .await
        .unwrap()
        .expect("the root lists");
    let names: Vec<&str> = listing.keys().map(String::as_str).collect();
    for expected in ["/inside.txt", "/sub", "/link-in", "/hard.txt"] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    for hidden in ["/link-out", "/secret-link", "/abs-link"] {
        assert!(!names.contains(&hidden), "{hidden} leads out: {names:?}");
    }
    assert_eq!(listing["/link-in"], zt_tests::guac_files::STREAM_INDEX);
    assert!(
        files.list("/link-in", STEP).await.unwrap().is_some(),
        "a link inside the jail is followed"
    );

    // Reads and listings that would leave the root: refused (audited), no body.
    // Longer than a name and a path may be; 64 KiB cannot even be sent (a Guacamole element
    // holds at most 8,192 characters: the connection's decoder ends a session that tries).
    let long = format!("/{}", "x".repeat(8000));
    let escapes = [
        ("/..", "bad_path"),
        ("/../outside", "bad_path"),
        ("/sub/../../outside/secret.txt", "bad_path"),
        ("//..//outside", "bad_path"),
        ("/./../outside", "bad_path"),
        ("/sub/..", "bad_path"),
        ("/..\\..\\outside", "bad_path"),
        ("/inside.txt\0/../../outside", "bad_path"),
        ("/a\nb", "bad_path"),
        ("outside/secret.txt", "bad_path"),
        (long.as_str(), "bad_path"),
        ("/link-out", "outside_root"),
        ("/link-out/secret.txt", "outside_root"),
        ("/secret-link", "outside_root"),
        ("/abs-link/passwd", "outside_root"),
        ("/hard.txt", "hard_link"),
        ("/link-to-hard", "hard_link"),
    ];
    for (path, reason) in escapes {
        let got = files.download(path, Duration::ZERO, |_| {}).await.unwrap();
        assert!(got.is_none());
        let (why, _) = refusal_event(&mut events, &id, "download").await;
        assert_eq!(why.as_deref(), Some(reason), "{:?}", path.get(..40));
    }
    // An absolute path is a path in the jail: /etc/passwd is not there.
    assert!(
        files
            .download("/etc/passwd", PATIENCE, |_| {})
            .await
            .unwrap()
            .is_none()
    );

    // Uploads under names that are not one component, or into links that lead out.
    let file_names = [
        "../escape.txt",
        "/etc/escape.txt",
        "a/b",
        "..",
        ".",
        "x\0y",
        "x\ny",
    ];
    let mut stream = 10;
    for name in file_names.iter().copied().chain([long.as_str()]) {
        stream += 1;
        let refused = files
            .upload(stream, name, 1 << 20, pattern_source(1, 4096))
            .await
            .unwrap()
            .expect_err("refused");
        assert_eq!(refused.status, 0x0300, "{:?}: {refused}", name.get(..20));
    }
    for path in [
        "/../escape.txt",
        "/link-out/escape.txt",
        "/abs-link/escape.txt",
    ] {
        stream += 1;
        let refused = files
            .put(stream, path, 1 << 20, pattern_source(1, 4096))
            .await
            .unwrap()
            .expect_err("refused");
        assert!(
            [0x0300, 0x0303].contains(&refused.status),
            "{path}: {refused}"
        );
    }
    // Replacing a link inside the jail replaces the link, never what it points at.
    for name in ["hard.txt", "secret-link"] {
        stream += 1;
        let moved = files
            .upload(stream, name, 1 << 20, pattern_source(2, 10_000))
            .await
            .unwrap()
            .expect("an upload over a name inside the jail");
        assert_eq!(sha256_file(&jail.root.join(name)).unwrap(), moved.sha256);
        assert!(!jail.root.join(name).is_symlink());
    }

    assert_eq!(
        jail.outside_files(),
        before,
        "nothing outside the root changed"
    );
    assert!(!Path::new("/etc/escape.txt").exists());
    assert!(!jail.root.parent().unwrap().join("escape.txt").exists());
    assert!(jail.temporaries().is_empty(), "{:?}", jail.temporaries());
    let bodies = bodies.lock().unwrap().clone();
    assert!(
        bodies.iter().all(|b| b == "/" || b == "/link-in"),
        "bodies for refused paths: {bodies:?}"
    );
    fx.api.delete_session(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_entries_are_listed_to_the_cap() {
    let fx = Fixture::start().await;
    let jail = Jail::new(&fx);
    let big = jail.root.join("big");
    std::fs::create_dir(&big).unwrap();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let big = big.clone();
            std::thread::spawn(move || {
                for n in (t..1_000_000).step_by(2) {
                    std::fs::File::create(big.join(format!("f{n:07}"))).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    jail.own(&jail.root);
    let parameters = jail.parameters(&fx, &[]);
    let (mut term, id, _session, _) = files_session(&fx, Transport::Quic, &parameters, None).await;
    let mut files = Files::new(&mut term.client);
    let listing = files
        .list("/big", STEP)
        .await
        .unwrap()
        .expect("the directory lists");
    assert_eq!(listing.len(), MAX_LISTING, "the listing stops at its cap");
    assert!(listing.keys().all(|k| k.starts_with("/big/f")));
    // The session goes on: a small listing still works.
    assert!(files.list("/", STEP).await.unwrap().is_some());
    fx.api.delete_session(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policy_switch_refuses_its_direction_only() {
    let fx = Fixture::start().await;
    let jail = Jail::new(&fx);
    std::fs::write(jail.root.join("report.txt"), b"quarterly figures").unwrap();
    jail.own(&jail.root);
    let mut events = fx.api.events(None).await.unwrap();

    // Uploads off: refused with 0x0303, and audited; downloads still work.
    let parameters = jail.parameters(&fx, &[("sftp-disable-upload", "true")]);
    let (mut term, id, _session, _) =
        files_session(&fx, Transport::Webrtc, &parameters, None).await;
    let mut files = Files::new(&mut term.client);
    let refused = files
        .upload(1, "new.txt", 1 << 20, pattern_source(3, 1000))
        .await
        .unwrap()
        .expect_err("uploads are disabled");
    assert_eq!(refused.status, 0x0303, "{refused}");
    assert!(!jail.root.join("new.txt").exists());
    assert_eq!(
        refusal_event(&mut events, &id, "upload").await,
        (Some("policy".to_owned()), Some("new.txt".to_owned()))
    );
    let got = files
        .download("/report.txt", STEP, |_| {})
        .await
        .unwrap()
        .expect("downloads are allowed");
    assert_eq!(got.size, 17);
    fx.api.delete_session(&id).await.unwrap();

    // Downloads off: no body for a file (listings stay), audited; uploads still work.
    let parameters = jail.parameters(&fx, &[("sftp-disable-download", "true")]);
    let (mut term, id, _session, _) =
        files_session(&fx, Transport::Webrtc, &parameters, None).await;
    let mut files = Files::new(&mut term.client);
    assert!(
        files
            .download("/report.txt", PATIENCE, |_| {})
            .await
            .unwrap()
            .is_none(),
        "no body for a file when downloads are disabled"
    );
    assert_eq!(
        refusal_event(&mut events, &id, "download").await,
        (Some("policy".to_owned()), Some("/report.txt".to_owned()))
    );
    assert!(files.list("/", STEP).await.unwrap().is_some());
    let moved = files
        .upload(2, "new.txt", 1 << 20, pattern_source(3, 1000))
        .await
        .unwrap()
        .expect("uploads are allowed");
    assert_eq!(
        sha256_file(&jail.root.join("new.txt")).unwrap(),
        moved.sha256
    );
    fx.api.delete_session(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_mid_upload_leaves_no_partial_file_and_closes_sftp() {
    let fx = Fixture::start().await;
    let jail = Jail::new(&fx);
    let parameters = jail.parameters(&fx, &[]);
    let mut events = fx.api.events(None).await.unwrap();
    let (mut term, id, _session, _) = files_session(&fx, Transport::Quic, &parameters, None).await;
    let api = fx.api.clone();
    let revoke_at = 64 << 20;
    let session = id.clone();
    let mut sent = 0u64;
    let mut pattern = pattern_source(5, GIB);
    let runtime = tokio::runtime::Handle::current();
    let mut revoked = false;
    let source = move |buffer: &mut [u8]| {
        sent += buffer.len() as u64;
        if sent >= revoke_at && !revoked {
            revoked = true;
            let (api, session) = (api.clone(), session.clone());
            runtime.spawn(async move { api.delete_session(&session).await });
        }
        pattern(buffer)
    };
    let outcome = Files::new(&mut term.client)
        .upload(1, "big.bin", 4 << 20, source)
        .await;
    assert!(
        !matches!(outcome, Ok(Ok(_))),
        "the upload cannot complete: {outcome:?}"
    );
    let event = wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::TransferIncomplete { .. })
    })
    .await;
    let AuditEvent::TransferIncomplete { path, size, .. } = event else {
        unreachable!()
    };
    assert_eq!(path, "/big.bin");
    assert!(size >= 1 << 20, "{size}");
    assert!(
        !jail.root.join("big.bin").exists(),
        "nothing at the target name"
    );
    assert!(jail.temporaries().is_empty(), "{:?}", jail.temporaries());
    // The SFTP server process of the session is gone.
    let user = fx.sshd.user.clone();
    zt_tests::wait_until(STEP, "the session's sftp-server to exit", || {
        let user = user.clone();
        async move {
            let output = std::process::Command::new("pgrep")
                .args(["-u", &user, "-f", "sftp-server"])
                .output()
                .unwrap();
            output.stdout.is_empty()
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_hold_the_transfer_facts_and_never_the_content() {
    let fx = Fixture::start().await;
    let jail = Jail::new(&fx);
    let marker = b"ZT-CONTENT-MARKER-0123456789".repeat(3000);
    std::fs::write(jail.root.join("marked.txt"), &marker).unwrap();
    jail.own(&jail.root);
    let parameters = jail.parameters(&fx, &[]);
    let mut events = fx.api.events(None).await.unwrap();
    let (mut term, id, _session, _) = files_session(
        &fx,
        Transport::Quic,
        &parameters,
        Some(recording(true, true)),
    )
    .await;
    let mut files = Files::new(&mut term.client);
    let got = files
        .download("/marked.txt", STEP, |_| {})
        .await
        .unwrap()
        .expect("a body");
    let mut data = marker.as_slice();
    let up = files
        .upload(1, "copy.txt", 1 << 20, move |buffer: &mut [u8]| {
            let n = buffer.len().min(data.len());
            buffer[..n].copy_from_slice(&data[..n]);
            data = &data[n..];
            n
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.sha256, up.sha256);
    fx.api.delete_session(&id).await.unwrap();
    let mut recordings = Vec::new();
    for event in events_until_ended(&mut events, &id).await {
        if let AuditEvent::RecordingEnded { recording, .. } = event {
            recordings.push(fx.recordings.path().join("rec").join(recording));
        }
    }
    assert_eq!(recordings.len(), 2, "{recordings:?}");
    let secret = fx.recordings.path().join("secret");
    std::fs::write(&secret, super::RESOURCE_SECRET).unwrap();
    let key = zt_recorder_cli::KeyArgs {
        secret_file: Some(secret),
        secret_env: None,
        x25519_key: None,
    };
    let encoded = base64_of(&marker[..3000]);
    for file in recordings {
        let mut reader = zt_recorder_cli::open_unlocked(&file, &key).unwrap();
        let mut notes = Vec::new();
        let mut all = Vec::new();
        for event in reader.events(zt_recorder::EventRange::all()).unwrap() {
            let event = event.unwrap().event;
            match &event {
                zt_recorder::Event::Note(json) => {
                    notes.push(serde_json::from_slice::<serde_json::Value>(json).unwrap());
                }
                zt_recorder::Event::Output(b) | zt_recorder::Event::Input(b) => {
                    all.extend_from_slice(b)
                }
                zt_recorder::Event::Instructions(b) | zt_recorder::Event::KeyFrame(b) => {
                    all.extend_from_slice(b)
                }
                _ => {}
            }
        }
        let paths: Vec<&str> = notes.iter().filter_map(|n| n["path"].as_str()).collect();
        assert_eq!(paths, ["/marked.txt", "/copy.txt"], "{}", file.display());
        for note in &notes {
            assert_eq!(note["event"], "transfer");
            assert_eq!(note["sha256"], hex::encode(got.sha256));
        }
        let text = String::from_utf8_lossy(&all);
        assert!(!text.contains("ZT-CONTENT-MARKER"), "{}", file.display());
        assert!(!text.contains(&encoded[..400]), "{}", file.display());
    }
}

fn base64_of(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
