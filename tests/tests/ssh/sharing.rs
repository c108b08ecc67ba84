//! Live sharing of a native SSH terminal: viewers join mid-session, see the owner's screen,
//! type only when allowed, never slow the owner, and end with the session.

use std::time::{Duration, Instant};

use zt_api::audit::AuditEvent;
use zt_api::control::{CreateViewerRequest, EndReason, Transport};
use zt_proxy::client::session::ClientSession;

use super::{Fixture, STEP, Term, options, wait_event};

/// Joins session `id` as `user` over `transport`, its screen at the tests' display size.
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
    let term = Term::connect(&session).await;
    (term, viewer, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_see_the_owners_screen_and_type_only_when_allowed() {
    let fx = Fixture::start().await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    // The owner's session writes a typescript: it notes who watched.
    let (owner_session, id) = fx
        .session(
            Transport::Quic,
            &fx.password_login(),
            Some(super::recording(false, true)),
        )
        .await;
    let mut owner = Term::connect(&owner_session).await;
    owner.wait_for_prompt().await;
    owner
        .run("echo before-the-viewers", "before-the-viewers")
        .await;

    // A read-only viewer joins mid-session over WebRTC: the owner's screen as it is now,
    // then what follows.
    let (mut bob, bob_id, _bob_session) = join(&fx, &id, Transport::Webrtc, "bob", false).await;
    bob.wait_for_pixels("the owner's screen", &owner.screen(), STEP)
        .await;
    assert!(
        bob.lines()
            .iter()
            .any(|l| l.ends_with("before-the-viewers")),
        "{:?}",
        bob.lines()
    );
    let joined = wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::ViewerJoined { .. })
    })
    .await;
    assert!(
        matches!(&joined, AuditEvent::ViewerJoined { viewer, user, input: false, .. }
            if viewer == &bob_id && user == "bob"),
        "{joined:?}"
    );
    let listed = fx.api.list_viewers(&id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].user.as_str(), listed[0].input), ("bob", false));
    assert!(
        fx.api
            .list_sessions()
            .await
            .unwrap()
            .iter()
            .all(|s| s.id != bob_id),
        "a viewer is not one of the gateway's sessions"
    );

    owner
        .run("echo while-bob-watches", "while-bob-watches")
        .await;
    bob.wait_for_pixels("the owner's screen", &owner.screen(), STEP)
        .await;

    // Bob's keys never reach the target.
    bob.type_text("echo typed-by-bob-$((6*7))\n").await;
    owner.run("echo after-bob-typed", "after-bob-typed").await;
    assert!(
        !owner.lines().iter().any(|l| l.contains("typed-by-bob")),
        "{:?}",
        owner.lines()
    );

    // An input-enabled viewer's keys do, as the owner's would.
    let (mut carol, carol_id, _carol_session) =
        join(&fx, &id, Transport::Quic, "carol", true).await;
    carol
        .wait_for_pixels("the owner's screen", &owner.screen(), STEP)
        .await;
    carol.type_text("echo typed-by-carol-$((6*7))\n").await;
    owner
        .wait_for("carol's command's output", STEP, |lines| {
            lines.iter().any(|l| l == "typed-by-carol-42")
        })
        .await;
    for viewer in [&mut bob, &mut carol] {
        viewer
            .wait_for_pixels("the owner's screen", &owner.screen(), STEP)
            .await;
    }

    // Revocation ends the owner and both viewers at once: each hears why within a second.
    let revoked = Instant::now();
    let revoke = {
        let api = fx.api.clone();
        let id = id.clone();
        tokio::spawn(async move { api.delete_session(&id).await })
    };
    for term in [&mut owner, &mut bob, &mut carol] {
        term.until_disconnect().await;
    }
    let elapsed = revoked.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "owner and viewers were told {elapsed:?} after the revocation"
    );
    for term in [&mut owner, &mut bob, &mut carol] {
        assert!(
            term.errors().iter().any(|(m, _)| m == "Session revoked"),
            "{:?}",
            term.errors()
        );
        term.until_closed().await;
    }
    let ended = revoke.await.unwrap().unwrap();
    assert_eq!(ended.reason, EndReason::Revoked);
    let mut left = Vec::new();
    while left.len() < 2 {
        let event = wait_event(&mut events, &id, STEP, |e| {
            matches!(e, AuditEvent::ViewerLeft { .. })
        })
        .await;
        left.push(event);
    }
    for event in &left {
        let AuditEvent::ViewerLeft {
            viewer,
            user,
            reason,
            inputs_forwarded,
            inputs_dropped,
            bytes_to_client,
            ..
        } = event
        else {
            unreachable!()
        };
        assert_eq!(*reason, EndReason::Revoked);
        assert!(*bytes_to_client > 0);
        match user.as_str() {
            "bob" => {
                assert_eq!(viewer, &bob_id);
                assert_eq!(*inputs_forwarded, 0);
                assert!(*inputs_dropped > 0);
            }
            "carol" => {
                assert_eq!(viewer, &carol_id);
                assert!(*inputs_forwarded > 0);
                assert_eq!(*inputs_dropped, 0);
            }
            other => panic!("an unknown viewer {other}"),
        }
    }

    // The typescript notes who watched, and when.
    let AuditEvent::RecordingEnded { recording, .. } = wait_event(&mut events, &id, STEP, |e| {
        matches!(e, AuditEvent::RecordingEnded { .. })
    })
    .await
    else {
        unreachable!()
    };
    let file = fx.recordings.path().join("rec").join(recording);
    let notes = zt_tests::recording_notes(&file, super::RESOURCE_SECRET);
    assert_eq!(
        notes,
        [
            "viewer_joined bob",
            "viewer_joined carol",
            "viewer_left bob",
            "viewer_left carol"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_stops_reading_is_dropped_and_the_owner_goes_on() {
    let fx = Fixture::start().await;
    let mut events = fx.api.events(Some(0)).await.unwrap();
    let (mut owner, id, _owner_session) = fx.terminal(Transport::Quic, &fx.password_login()).await;
    owner.wait_for_prompt().await;
    // The viewer completes its handshake, then never reads again.
    let (stalled, stalled_id, _stalled_session) =
        join(&fx, &id, Transport::Quic, "mallory", false).await;

    // Output without end, far more than the viewer's queue and its transport's windows
    // hold; the stalled viewer is dropped while it runs.
    owner.type_text("base64 /dev/urandom\n").await;
    let waiter = {
        let id = id.clone();
        tokio::spawn(async move {
            wait_event(&mut events, &id, Duration::from_secs(60), |e| {
                matches!(e, AuditEvent::ViewerLeft { .. })
            })
            .await
        })
    };
    // The owner reads on meanwhile, as a user's browser does.
    while !waiter.is_finished() {
        assert_ne!(owner.receive(Duration::from_millis(200)).await, Some(false));
    }
    let left = waiter.await.unwrap();
    assert!(
        matches!(&left, AuditEvent::ViewerLeft { viewer, reason: EndReason::Error, detail: Some(d), .. }
            if viewer == &stalled_id && d.contains("keep up")),
        "{left:?}"
    );
    // Ctrl-C.
    for (keysym, pressed) in [("65507", "1"), ("99", "1"), ("99", "0"), ("65507", "0")] {
        owner
            .client
            .send(&zt_guac::Instruction::new(
                zt_guac::opcode::KEY,
                &[keysym, pressed],
            ))
            .await
            .unwrap();
    }
    // The owner's session goes on, and a new viewer still joins.
    owner.run("echo still-here", "still-here").await;
    let (mut late, _, _late_session) = join(&fx, &id, Transport::Webrtc, "trent", false).await;
    late.wait_for_pixels("the owner's screen", &owner.screen(), STEP)
        .await;
    drop(stalled);
}
