//! The keep-alive rules on a virtual clock.

use super::*;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn tracker() -> (SyncTracker, Instant) {
    (SyncTracker::new(SyncSettings::default()), Instant::now())
}

#[test]
fn a_prompt_client_needs_no_keepalive() {
    let (mut sync, t0) = tracker();
    for i in 0..100u64 {
        let at = t0 + 40 * MS * i as u32;
        sync.server_sync(1_000 + i * 40, at);
        assert_eq!(
            sync.client_sync(1_000 + i * 40, at + 15 * MS),
            ClientSync::Forward
        );
        assert_eq!(sync.poll_keepalive(at + 20 * MS), None);
        assert!(!sync.poll_nop(at + 20 * MS));
    }
    assert_eq!(sync.unanswered(), 0);
    assert_eq!(sync.last_forwarded(), Some(1_000 + 99 * 40));
}

#[test]
fn a_silent_client_is_answered_after_the_grace_then_once_per_interval() {
    let (mut sync, t0) = tracker();
    sync.server_sync(100, t0);
    sync.server_sync(200, t0 + S);
    assert_eq!(sync.poll_timeout(), Some(t0 + 4 * S));
    assert_eq!(sync.poll_keepalive(t0 + 4 * S - MS), None);
    // Only the sync that has waited the whole grace is answered.
    assert_eq!(sync.poll_keepalive(t0 + 4 * S), Some(100));
    assert_eq!(sync.poll_keepalive(t0 + 4 * S), None);
    assert_eq!(sync.poll_timeout(), Some(t0 + 5 * S));
    assert_eq!(sync.poll_keepalive(t0 + 5 * S), Some(200));
    // Many frames later: the newest aged one, at most once per interval.
    for i in 0..20u64 {
        sync.server_sync(300 + i, t0 + 5 * S + 10 * MS * i as u32);
    }
    assert_eq!(
        sync.poll_keepalive(t0 + 5 * S + 500 * MS),
        None,
        "rate limited"
    );
    assert_eq!(sync.poll_keepalive(t0 + 9 * S + 105 * MS), Some(310));
    assert_eq!(sync.poll_keepalive(t0 + 10 * S + 200 * MS), Some(319));
    assert_eq!(
        sync.poll_keepalive(t0 + 20 * S),
        None,
        "nothing newer to answer"
    );
    // The client's own lag is untouched by the keep-alives.
    assert_eq!(sync.lag(t0 + 20 * S), 20 * S);
    assert_eq!(sync.unanswered(), 22);
}

#[test]
fn keepalives_never_exceed_guacds_latest_sync() {
    let (mut sync, t0) = tracker();
    assert_eq!(
        sync.poll_keepalive(t0 + 60 * S),
        None,
        "nothing from guacd yet"
    );
    sync.server_sync(5_000, t0);
    let mut sent = Vec::new();
    for step in 0..200u32 {
        let now = t0 + 100 * MS * step;
        if step % 7 == 0 {
            sync.server_sync(5_000 + u64::from(step), now);
        }
        if let Some(ts) = sync.poll_keepalive(now) {
            assert!(Some(ts) <= sync.latest_server_sync());
            sent.push(ts);
        }
    }
    assert!(
        sent.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {sent:?}"
    );
    assert!(!sent.is_empty());
}

#[test]
fn late_client_replies_do_not_repeat_or_undo_a_keepalive() {
    let (mut sync, t0) = tracker();
    sync.server_sync(100, t0);
    sync.server_sync(200, t0 + S);
    sync.server_sync(300, t0 + 2 * S);
    assert_eq!(sync.poll_keepalive(t0 + 5 * S), Some(200));
    let later = t0 + 6 * S;
    assert_eq!(
        sync.client_sync(100, later),
        ClientSync::Suppress(SuppressReason::Stale),
        "backwards"
    );
    assert_eq!(
        sync.client_sync(200, later),
        ClientSync::Suppress(SuppressReason::Stale),
        "duplicate of the keep-alive"
    );
    assert_eq!(
        sync.lag(later),
        4 * S,
        "300 is still unanswered by the client"
    );
    assert_eq!(sync.client_sync(300, later), ClientSync::Forward);
    assert_eq!(sync.lag(later), Duration::ZERO);
    assert_eq!(
        sync.client_sync(300, later),
        ClientSync::Suppress(SuppressReason::Stale)
    );
}

#[test]
fn client_replies_from_the_future_are_never_forwarded() {
    let (mut sync, t0) = tracker();
    assert_eq!(
        sync.client_sync(1, t0),
        ClientSync::Suppress(SuppressReason::Future),
        "before any server sync"
    );
    sync.server_sync(1_000, t0);
    assert_eq!(
        sync.client_sync(1_001, t0),
        ClientSync::Suppress(SuppressReason::Future)
    );
    assert_eq!(sync.unanswered(), 1, "a bogus reply answers nothing");
    assert_eq!(sync.client_sync(1_000, t0), ClientSync::Forward);
}

#[test]
fn a_backwards_clock_on_guacd_resets_the_watermark() {
    let (mut sync, t0) = tracker();
    sync.server_sync(10_000, t0);
    assert_eq!(sync.client_sync(10_000, t0), ClientSync::Forward);
    sync.server_sync(20_000, t0 + S);
    sync.server_sync(5_000, t0 + 2 * S); // guacd's clock stepped back
    assert_eq!(sync.latest_server_sync(), Some(5_000));
    assert_eq!(
        sync.unanswered(),
        1,
        "20000 can no longer be acknowledged, 5000 is new"
    );
    assert_eq!(
        sync.client_sync(20_000, t0 + 2 * S),
        ClientSync::Suppress(SuppressReason::Future)
    );
    assert_eq!(sync.client_sync(5_000, t0 + 2 * S), ClientSync::Forward);
    sync.server_sync(5_100, t0 + 3 * S);
    assert_eq!(sync.poll_keepalive(t0 + 7 * S), Some(5_100));
}

#[test]
fn repeated_timestamps_keep_the_first_arrival() {
    let (mut sync, t0) = tracker();
    sync.server_sync(7, t0);
    sync.server_sync(7, t0 + 3 * S);
    assert_eq!(sync.unanswered(), 1);
    assert_eq!(sync.poll_keepalive(t0 + 4 * S), Some(7));
}

#[test]
fn a_sync_flood_is_bounded_and_keeps_the_oldest_and_newest() {
    let (mut sync, t0) = tracker();
    for i in 0..100_000u64 {
        sync.server_sync(i + 1, t0 + MS * (i / 1000) as u32);
    }
    assert_eq!(sync.unanswered(), DEFAULT_MAX_PENDING_SYNCS);
    assert_eq!(sync.lag(t0 + 10 * S), 10 * S, "oldest kept");
    assert_eq!(
        sync.poll_keepalive(t0 + 10 * S),
        Some(100_000),
        "newest kept"
    );
    assert_eq!(
        sync.client_sync(100_000, t0 + 10 * S),
        ClientSync::Suppress(SuppressReason::Stale)
    );
    assert_eq!(sync.unanswered(), 0);
}

#[test]
fn nop_after_a_quiet_interval_and_the_timer_says_when() {
    let (mut sync, t0) = tracker();
    assert!(
        !sync.poll_nop(t0),
        "first sight of time starts the interval"
    );
    assert_eq!(sync.poll_timeout(), Some(t0 + 5 * S));
    assert!(!sync.poll_nop(t0 + 5 * S - MS));
    assert!(sync.poll_nop(t0 + 5 * S));
    assert!(!sync.poll_nop(t0 + 5 * S));
    sync.sent_to_guacd(t0 + 8 * S); // forwarded input restarts it
    assert!(!sync.poll_nop(t0 + 10 * S));
    assert!(sync.poll_nop(t0 + 13 * S));
    // A forwarded reply or a keep-alive restarts it as well.
    sync.server_sync(1, t0 + 13 * S);
    assert_eq!(sync.client_sync(1, t0 + 14 * S), ClientSync::Forward);
    assert_eq!(sync.poll_timeout(), Some(t0 + 19 * S));
}

#[test]
fn poll_timeout_is_the_earlier_of_keepalive_and_nop() {
    let (mut sync, t0) = tracker();
    sync.server_sync(1, t0 + 2 * S); // first sight of time: nop due at t0+7
    assert_eq!(sync.poll_timeout(), Some(t0 + 6 * S));
    assert_eq!(sync.poll_keepalive(t0 + 6 * S), Some(1));
    assert_eq!(
        sync.poll_timeout(),
        Some(t0 + 11 * S),
        "only the nop is left"
    );
    sync.server_sync(2, t0 + 6 * S + 100 * MS);
    assert_eq!(sync.poll_timeout(), Some(t0 + 10 * S + 100 * MS));
}

#[test]
fn settings_are_respected() {
    let settings = SyncSettings {
        grace: 500 * MS,
        keepalive_interval: Duration::ZERO,
        ..SyncSettings::default()
    };
    let mut sync = SyncTracker::new(settings);
    let t0 = Instant::now();
    sync.server_sync(1, t0);
    sync.server_sync(2, t0 + 10 * MS);
    assert_eq!(sync.poll_keepalive(t0 + 500 * MS), Some(1));
    assert_eq!(sync.poll_keepalive(t0 + 510 * MS), Some(2));
}

#[test]
fn intervals_too_long_for_the_clock_mean_never_not_a_panic() {
    let settings = SyncSettings {
        grace: Duration::MAX,
        keepalive_interval: Duration::MAX,
        nop_interval: Duration::MAX,
        ..SyncSettings::default()
    };
    let mut sync = SyncTracker::new(settings);
    let t0 = Instant::now();
    sync.server_sync(1, t0);
    assert_eq!(sync.poll_keepalive(t0 + 3600 * S), None);
    assert!(!sync.poll_nop(t0 + 3600 * S));
    assert_eq!(sync.poll_timeout(), None);
    assert_eq!(sync.client_sync(1, t0 + S), ClientSync::Forward);
    // Only the keep-alive interval unrepresentable: one keep-alive, then none.
    let settings = SyncSettings {
        keepalive_interval: Duration::MAX,
        ..SyncSettings::default()
    };
    let mut sync = SyncTracker::new(settings);
    sync.server_sync(1, t0);
    sync.server_sync(2, t0 + S);
    assert_eq!(sync.poll_keepalive(t0 + 4 * S), Some(1));
    assert_eq!(sync.poll_keepalive(t0 + 60 * S), None);
    assert_eq!(
        sync.poll_timeout(),
        Some(t0 + 9 * S),
        "only the nop is left"
    );
}
