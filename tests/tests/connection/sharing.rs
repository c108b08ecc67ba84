//! Live sharing of an RDP connection through the guacd double: a viewer joining mid-session
//! draws, frame for frame, the pixels the owner draws; only an input-enabled viewer's keys
//! reach guacd; revocation ends everyone.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use zt_api::audit::AuditEvent;
use zt_api::control::{CreateViewerRequest, EndReason, Transport};
use zt_guac::{Instruction, opcode};
use zt_proxy::client::session::ClientSession;
use zt_tests::guac_client::{GuacClient, Handshake};
use zt_tests::guacd_peer::{DisplayMode, PeerConfig};
use zt_tests::term::Term;

use super::{Fixture, STEP, SessionSpec, options};

/// The screen's pixels at each frame's end (`sync` timestamp → digest of the pixels).
#[derive(Default)]
struct Frames(HashMap<u64, u64>);

impl Frames {
    /// Receives one instruction (waiting at most `wait`), noting the screen at a `sync`.
    async fn step(&mut self, term: &mut Term, wait: Duration) -> Option<bool> {
        let before = term.received.len();
        let received = term.receive(wait).await;
        if let Some(timestamp) = term.received[before..]
            .iter()
            .rfind(|i| i.is(opcode::SYNC))
            .and_then(|i| i.arg(0)?.parse().ok())
        {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            term.screen().pixels().hash(&mut hasher);
            self.0.insert(timestamp, hasher.finish());
        }
        received
    }
}

async fn join(
    fx: &Fixture,
    id: &str,
    transport: Transport,
    user: &str,
    input: bool,
) -> (Term, String, ClientSession) {
    let request = CreateViewerRequest {
        transport,
        offer: None,
        sealed_offer: None,
        signalling: None,
        user: user.into(),
        input,
        clipboard: false,
    };
    let (session, viewer) = ClientSession::join(&fx.api, id, request, &options(transport))
        .await
        .expect("the viewer is created and its transport connects");
    let client = GuacClient::connect(&session, &Handshake::default())
        .await
        .expect("the viewer's handshake completes");
    (Term::new(client), viewer, session)
}

/// Reads both sides until `frames` of the viewer's frames were compared with the owner's
/// of the same timestamp (the first is the screen it joined with); panics on a difference.
async fn compare_frames(owner: &mut Term, viewer: &mut Term, frames: usize) {
    let (mut seen_by_owner, mut seen_by_viewer) = (Frames::default(), Frames::default());
    let deadline = Instant::now() + STEP;
    let mut compared = 0;
    while compared < frames {
        assert!(
            Instant::now() < deadline,
            "only {compared} frames compared; the viewer received {} instructions ({:?}), frames {:?}; the owner's frames {:?}",
            viewer.received.len(),
            viewer
                .received
                .iter()
                .take(12)
                .map(|i| i.opcode().to_owned())
                .collect::<Vec<_>>(),
            seen_by_viewer.0.keys().take(5).collect::<Vec<_>>(),
            seen_by_owner.0.keys().take(5).collect::<Vec<_>>(),
        );
        seen_by_owner.step(owner, Duration::from_millis(5)).await;
        seen_by_viewer.step(viewer, Duration::from_millis(5)).await;
        let common: Vec<u64> = seen_by_viewer
            .0
            .keys()
            .filter(|t| seen_by_owner.0.contains_key(t))
            .copied()
            .collect();
        for timestamp in common {
            let theirs = seen_by_viewer.0.remove(&timestamp);
            if theirs != seen_by_owner.0.get(&timestamp).copied() {
                owner.screenshot("owner");
                viewer.screenshot("viewer");
                panic!("the viewer's frame {timestamp} differs from the owner's");
            }
            compared += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_draws_the_owners_frames_and_types_only_when_allowed() {
    let fx = Fixture::start(PeerConfig {
        display: DisplayMode::Frames {
            interval: Duration::from_millis(40),
        },
        ..PeerConfig::guacd_1_6()
    })
    .await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (_session, id, client, conn) = fx
        .connected(&SessionSpec::rdp(Transport::Webrtc).recorded())
        .await;
    let mut owner = Term::new(client);
    // A few frames in: the session is under way.
    let mut syncs = 0;
    while syncs < 10 {
        assert_eq!(owner.receive(STEP).await, Some(true));
        syncs += usize::from(owner.received.last().is_some_and(|i| i.is(opcode::SYNC)));
    }

    let (mut viewer, viewer_id, _viewer_session) =
        join(&fx, &id, Transport::Quic, "auditor", false).await;
    compare_frames(&mut owner, &mut viewer, 10).await;
    let (theirs, ours) = (viewer.screen(), owner.screen());
    assert_eq!(
        (theirs.width(), theirs.height()),
        (ours.width(), ours.height())
    );
    assert!(ours.width() > 0);

    // The read-only viewer's keys and size never reach guacd.
    for instruction in [
        Instruction::new(opcode::KEY, &["65", "1"]),
        Instruction::new(opcode::KEY, &["65", "0"]),
        Instruction::new(opcode::SIZE, &["320", "200"]),
    ] {
        viewer.client.send(&instruction).await.unwrap();
    }
    // An input-enabled viewer's do.
    let (mut helper, _, _helper_session) = join(&fx, &id, Transport::Webrtc, "helper", true).await;
    compare_frames(&mut owner, &mut helper, 3).await;
    helper
        .client
        .send(&Instruction::new(opcode::KEY, &["66", "1"]))
        .await
        .unwrap();
    let keys = || {
        conn.received()
            .iter()
            .filter(|i| i.is(opcode::KEY))
            .filter_map(|i| i.arg(0).map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + STEP;
    while !keys().contains(&"66".to_owned()) {
        assert!(
            Instant::now() < deadline,
            "the helper's key never reached guacd"
        );
        Frames::default()
            .step(&mut owner, Duration::from_millis(20))
            .await;
    }
    assert!(!keys().contains(&"65".to_owned()), "{:?}", keys());
    assert!(
        !conn
            .received()
            .iter()
            .any(|i| i.is(opcode::SIZE) && i.arg(0) == Some("320")),
        "a viewer resized the display"
    );

    // Revocation ends the owner and both viewers: each hears why within a second.
    let revoked = Instant::now();
    let revoke = {
        let api = fx.api.clone();
        let id = id.clone();
        tokio::spawn(async move { api.delete_session(&id).await })
    };
    for term in [&mut owner, &mut viewer, &mut helper] {
        term.until_disconnect().await;
    }
    assert!(
        revoked.elapsed() < Duration::from_secs(1),
        "{:?}",
        revoked.elapsed()
    );
    for term in [&mut owner, &mut viewer, &mut helper] {
        assert!(
            term.errors().iter().any(|(m, _)| m == "Session revoked"),
            "{:?}",
            term.errors()
        );
        term.until_closed().await;
    }
    let ended = revoke.await.unwrap().unwrap();
    assert_eq!(ended.reason, EndReason::Revoked);
    let mut users = Vec::new();
    while users.len() < 2 {
        if let AuditEvent::ViewerLeft {
            user,
            viewer,
            reason,
            ..
        } = zt_tests::wait_event(&mut events, &id, STEP, |e| {
            matches!(e, AuditEvent::ViewerLeft { .. })
        })
        .await
        {
            assert_eq!(reason, EndReason::Revoked);
            if user == "auditor" {
                assert_eq!(viewer, viewer_id);
            }
            users.push(user);
        }
    }
    users.sort();
    assert_eq!(users, ["auditor", "helper"]);

    // The recording notes who watched, and when.
    let (recording, status) = super::recording::recording_ended(&mut events, &id).await;
    assert_eq!(status, "finalised");
    let file = fx.recordings.path().join("rec").join(recording);
    let notes = zt_tests::recording_notes(&file, super::RESOURCE_SECRET);
    assert_eq!(
        notes,
        [
            "viewer_joined auditor",
            "viewer_joined helper",
            "viewer_left auditor",
            "viewer_left helper"
        ]
    );
}
