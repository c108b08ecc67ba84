//! The connection core driven with a virtual clock: no sockets, no sleeping.

use std::time::{Duration, Instant};

use bytes::Bytes;
use zt_api::control::{EndReason, Origin};
use zt_guac::{Decoder, Limits, Status};
use zt_guacd::DEFAULT_SYNC_GRACE;

use crate::filter::{Direction, FilterEvent, Refused};
use crate::policy::ConnectionPolicy;
use crate::{Connection, ConnectionEnd, Event, Record, Settings};

const HANDSHAKE: &[u8] = b"6.select,3.rdp;4.size,4.1280,3.720,2.96;7.connect,13.VERSION_1_5_0;";

/// Where the virtual clock starts; every later time is this plus a duration.
#[expect(
    clippy::disallowed_methods,
    reason = "the virtual clock needs one arbitrary instant to count from; nothing reads the clock after"
)]
fn epoch() -> Instant {
    Instant::now()
}

/// A connection in its relay phase, with everything so far taken.
struct Harness {
    conn: Connection,
    now: Instant,
}

impl Harness {
    fn new(policy: ConnectionPolicy) -> Self {
        Self::with(Settings::new("s1", policy))
    }

    fn with(settings: Settings) -> Self {
        let now = epoch();
        let mut conn = Connection::new(settings, now);
        conn.handle_client(now, HANDSHAKE);
        let Some(Event::HandshakeComplete(display)) = conn.poll_event() else {
            panic!("no handshake")
        };
        assert_eq!(
            (display.width, display.height, display.dpi),
            (1280, 720, 96)
        );
        let mut harness = Self { conn, now };
        harness.conn.backend_ready(now);
        assert_eq!(harness.client(), "4.args,13.VERSION_1_5_0;5.ready,3.$s1;");
        harness
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.conn.poll_timeout().is_some_and(|at| at <= self.now) {
            self.conn.handle_timeout(self.now);
        }
    }

    /// Everything queued for the client, as text.
    fn client(&mut self) -> String {
        let mut text = String::new();
        while let Some(message) = self.conn.poll_transmit(self.now) {
            text.push_str(std::str::from_utf8(&message).unwrap());
        }
        text
    }

    fn backend(&mut self) -> String {
        self.conn
            .poll_backend_transmit()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .unwrap_or_default()
    }

    fn client_sends(&mut self, wire: &str) {
        self.conn.handle_client(self.now, wire.as_bytes());
    }

    fn backend_sends(&mut self, wire: &str) {
        self.conn.handle_backend(self.now, wire.as_bytes());
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    fn ended(&mut self) -> ConnectionEnd {
        let events = self.events();
        match events.into_iter().last() {
            Some(Event::Ended(end)) => end,
            other => panic!("not ended: {other:?}"),
        }
    }
}

#[test]
fn relays_both_ways_and_counts_what_it_forwards() {
    let mut h = Harness::new(ConnectionPolicy::default());
    h.backend_sends("4.size,1.0,4.1280,3.720;4.sync,3.100;");
    assert_eq!(h.client(), "4.size,1.0,4.1280,3.720;4.sync,3.100;");
    assert!(matches!(h.events()[..], [Event::TargetUp]));
    h.client_sends("4.sync,3.100;5.mouse,2.10,2.20,1.1;");
    assert_eq!(h.backend(), "4.sync,3.100;5.mouse,2.10,2.20,1.1;");
    let counts = h.conn.take_counts();
    assert_eq!((counts.to_client, counts.to_target), (37, 35));
    assert_eq!(h.conn.take_counts(), crate::Counts::default());
}

#[test]
fn answers_the_backends_sync_for_a_silent_client_and_suppresses_the_late_answer() {
    let mut h = Harness::new(ConnectionPolicy::default());
    h.backend_sends("4.sync,3.100;");
    h.client();
    h.events();
    // Nothing before the grace has passed.
    h.advance(DEFAULT_SYNC_GRACE - Duration::from_millis(1));
    assert_eq!(h.backend(), "");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.backend(), "4.sync,3.100;");
    let events = h.events();
    assert!(
        matches!(events[..], [Event::KeepAlive { lag }] if lag >= DEFAULT_SYNC_GRACE),
        "{events:?}"
    );
    // The client's own answer arrives late: guacd must not hear it twice.
    h.client_sends("4.sync,3.100;");
    assert_eq!(h.backend(), "");
    // A sync for a frame the backend never sent is never forwarded.
    h.client_sends("4.sync,3.999;");
    assert_eq!(h.backend(), "");
}

#[test]
fn a_slow_client_stops_the_backend_being_read_and_loses_nothing() {
    let mut settings = Settings::new("s1", ConnectionPolicy::default());
    settings.client_high_water = 1024;
    settings.max_message = 256;
    let mut h = Harness::with(settings);
    let frame = "4.rect,1.0,1.0,1.0,2.10,2.10;"; // 29 bytes
    let wire: String = std::iter::repeat_n(frame, 200).collect();
    h.backend_sends(&wire);
    // Only up to the high-water mark is decoded; the rest waits in the decoder.
    assert!(h.conn.pending_client_bytes() >= 1024);
    assert!(h.conn.pending_client_bytes() < 1024 + frame.len());
    assert!(!h.conn.wants_backend_input());
    // Taking messages makes room, and everything arrives in order, whole.
    let received = h.client();
    assert_eq!(received, wire);
    assert!(h.conn.wants_backend_input());
}

#[test]
fn messages_hold_whole_instructions_within_the_limit() {
    let mut settings = Settings::new("s1", ConnectionPolicy::default());
    settings.max_message = 100;
    let mut h = Harness::with(settings);
    h.backend_sends(&"4.rect,1.0,1.0,1.0,2.10,2.10;".repeat(10));
    let mut decoder = Decoder::new(Limits::default());
    while let Some(message) = h.conn.poll_transmit(h.now) {
        assert!(message.len() <= 100, "{}", message.len());
        decoder.feed(&message);
        while decoder.poll_instruction().unwrap().is_some() {}
        assert!(decoder.is_at_boundary(), "a message split an instruction");
    }
}

#[test]
fn policy_refusals_are_answered_reported_and_never_forwarded() {
    let policy = ConnectionPolicy {
        disable_paste: true,
        read_only: true,
        ..ConnectionPolicy::default()
    };
    let mut h = Harness::new(policy);
    h.client_sends("9.clipboard,1.1,10.text/plain;4.blob,1.1,4.aGk=;3.end,1.1;3.key,2.65,1.1;");
    assert_eq!(h.backend(), "", "refused input reached the backend");
    let reply = h.client();
    assert!(reply.starts_with("3.ack,1.1,"), "{reply}");
    assert!(reply.ends_with(",3.771;"), "{reply}"); // 0x0303
    let refused: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Filter(FilterEvent::Refused {
                direction, what, ..
            }) => Some((direction, what)),
            _ => None,
        })
        .collect();
    assert!(
        refused.contains(&(Direction::ToTarget, Refused::Paste)),
        "{refused:?}"
    );
    assert!(!h.conn.is_closed());
}

#[test]
fn revocation_tells_the_client_and_the_backend() {
    let mut h = Harness::new(ConnectionPolicy::default());
    h.backend_sends("4.sync,1.1;");
    h.client();
    h.conn.close(EndReason::Revoked);
    assert_eq!(
        h.client(),
        format!(
            "5.error,15.Session revoked,{}.{};10.disconnect;",
            Status::SESSION_CLOSED.code().to_string().len(),
            Status::SESSION_CLOSED.code()
        )
    );
    assert_eq!(h.backend(), "10.disconnect;");
    let end = h.ended();
    assert_eq!((end.reason, end.origin), (EndReason::Revoked, None));
    assert!(h.conn.is_closed());
    // Nothing more goes anywhere.
    h.backend_sends("4.sync,1.2;");
    h.client_sends("3.key,2.65,1.1;");
    assert_eq!((h.client(), h.backend()), (String::new(), String::new()));
    assert!(h.events().is_empty());
}

#[test]
fn a_client_protocol_violation_ends_the_connection_on_both_sides() {
    let mut h = Harness::new(ConnectionPolicy::default());
    h.client_sends("3.key,2.65;5.mouse,x");
    // The valid key goes through; the garbage ends it.
    h.client_sends("garbage;");
    assert_eq!(h.backend(), "3.key,2.65;10.disconnect;");
    assert!(
        h.client()
            .contains("14.Protocol error,3.768;10.disconnect;")
    ); // 0x0300
    let end = h.ended();
    assert_eq!(end.origin, Some(Origin::Client));
    assert_eq!(end.metric, Some("guacamole_protocol"));
    assert!(end.detail.unwrap().contains("malformed"));
}

#[test]
fn a_backend_protocol_violation_ends_the_connection_without_a_disconnect_to_it() {
    let mut h = Harness::new(ConnectionPolicy::default());
    h.backend_sends("4.sync,1.1;4.name,2.\u{1}");
    h.conn.handle_backend(h.now, b"4.sync,abc;x");
    h.backend_sends("x;");
    let end = h.ended();
    assert_eq!(
        (end.reason, end.origin),
        (EndReason::Error, Some(Origin::Target))
    );
    assert_eq!(end.metric, Some("guacd_protocol"));
    assert!(end.detail.unwrap().contains("guacd protocol violation"));
    assert_eq!(h.backend(), "");
    assert!(h.client().ends_with("10.disconnect;"));
}

#[test]
fn the_backends_error_reaches_the_client_with_its_status() {
    let mut h = Harness::new(ConnectionPolicy::default());
    h.backend_sends("5.error,9.Not found,3.519;");
    assert_eq!(h.client(), "5.error,9.Not found,3.519;10.disconnect;");
    let end = h.ended();
    assert_eq!(
        (end.reason, end.origin),
        (EndReason::Error, Some(Origin::Target))
    );
    assert_eq!(
        end.detail.as_deref(),
        Some("guacd error, status 0x0207 UPSTREAM_NOT_FOUND")
    );
    assert_eq!(h.backend(), "", "the backend ended it: no disconnect back");
}

#[test]
fn the_backend_closing_ends_the_connection_after_its_last_output() {
    let mut h = Harness::new(ConnectionPolicy::default());
    h.backend_sends("4.sync,1.1;");
    h.conn.handle_backend_closed(h.now);
    assert_eq!(h.client(), "4.sync,1.1;10.disconnect;");
    let end = h.ended();
    assert_eq!(
        (end.reason, end.origin),
        (EndReason::TargetClosed, Some(Origin::Target))
    );
}

#[test]
fn the_client_leaving_tells_the_backend() {
    let mut h = Harness::new(ConnectionPolicy::default());
    h.client_sends("3.key,2.65,1.1;10.disconnect;3.key,2.66,1.1;");
    assert_eq!(h.backend(), "3.key,2.65,1.1;10.disconnect;");
    assert_eq!(h.ended().reason, EndReason::ClientClosed);

    let mut h = Harness::new(ConnectionPolicy::default());
    h.conn.handle_client_closed();
    assert_eq!(h.backend(), "10.disconnect;");
    assert_eq!(h.client(), "", "a closed channel is not written to");
}

#[test]
fn the_handshake_has_a_deadline_on_the_virtual_clock() {
    let now = epoch();
    let mut settings = Settings::new("s1", ConnectionPolicy::default());
    settings.handshake_timeout = Duration::from_secs(5);
    let mut conn = Connection::new(settings, now);
    conn.handle_client(now, b"6.select,3.rdp;");
    assert_eq!(conn.poll_timeout(), Some(now + Duration::from_secs(5)));
    conn.handle_timeout(now + Duration::from_millis(4_999));
    assert!(!conn.is_closed());
    conn.handle_timeout(now + Duration::from_secs(5));
    assert!(conn.is_closed());
    let Some(Event::Ended(end)) = conn.poll_event() else {
        panic!()
    };
    assert_eq!(end.detail.as_deref(), Some("client handshake timed out"));
    assert_eq!(end.origin, Some(Origin::Client));
}

#[test]
fn the_handshake_refuses_a_client_that_skips_select() {
    let now = epoch();
    let mut conn = Connection::new(Settings::new("s1", ConnectionPolicy::default()), now);
    conn.handle_client(now, b"5.mouse,1.1,1.1,1.0;");
    let Some(Event::Ended(end)) = conn.poll_event() else {
        panic!()
    };
    assert_eq!(end.origin, Some(Origin::Client));
    let farewell = conn.poll_transmit(now).unwrap();
    assert!(farewell.ends_with(b"10.disconnect;"));
}

#[test]
fn input_during_the_backends_opening_waits_and_then_goes_first() {
    let now = epoch();
    let mut conn = Connection::new(Settings::new("s1", ConnectionPolicy::default()), now);
    conn.handle_client(now, HANDSHAKE);
    conn.handle_client(now, b"3.key,2.65,1.1;");
    assert!(conn.poll_backend_transmit().is_none());
    assert!(!conn.wants_backend_input());
    conn.backend_ready(now);
    assert_eq!(
        &conn.poll_backend_transmit().unwrap()[..],
        b"3.key,2.65,1.1;"
    );
}

#[test]
fn the_recording_gets_output_then_input_in_order_and_batches_by_time() {
    let policy = ConnectionPolicy {
        record_input: true,
        ..ConnectionPolicy::default()
    };
    let now = epoch();
    let mut conn = Connection::new(Settings::new("s1", policy), now);
    conn.handle_client(now, HANDSHAKE);
    conn.start_recording(true);
    conn.backend_ready(now);
    // The handshake's replies and `ready` are not recorded.
    conn.handle_backend(now, b"4.sync,1.1;");
    assert!(conn.poll_record().is_none(), "handed over before its time");
    assert_eq!(conn.poll_timeout(), Some(now + crate::RECORD_DELAY));
    // Input flushes the output before it, then follows it.
    conn.handle_client(now, b"3.key,2.65,1.1;4.sync,1.1;");
    let Some(Record::Output {
        instructions,
        messages,
    }) = conn.poll_record()
    else {
        panic!()
    };
    assert_eq!(instructions.len(), 1);
    assert_eq!(messages, [Bytes::from_static(b"4.sync,1.1;")]);
    let Some(Record::Input(input)) = conn.poll_record() else {
        panic!()
    };
    assert_eq!(&input[..], b"3.key,2.65,1.1;", "the sync is not input");
    // Output waits at most the delay.
    conn.handle_backend(now, b"4.sync,1.2;");
    conn.handle_timeout(now + crate::RECORD_DELAY);
    assert!(matches!(conn.poll_record(), Some(Record::Output { .. })));
    // The farewell is recorded too.
    conn.close(EndReason::IdleTimeout);
    let Some(Record::Output { messages, .. }) = conn.poll_record() else {
        panic!()
    };
    assert!(messages.concat().ends_with(b"10.disconnect;"));
}

#[test]
fn a_large_burst_is_handed_to_the_recording_at_the_batch_size() {
    let mut settings = Settings::new("s1", ConnectionPolicy::default());
    settings.record_batch = 1000;
    let now = epoch();
    let mut conn = Connection::new(settings, now);
    conn.handle_client(now, HANDSHAKE);
    conn.start_recording(false);
    conn.backend_ready(now);
    conn.handle_backend(now, "4.rect,1.0,1.0,1.0,2.10,2.10;".repeat(40).as_bytes());
    let Some(Record::Output { instructions, .. }) = conn.poll_record() else {
        panic!("no batch at the batch size")
    };
    assert_eq!(instructions.len(), 40);
}

#[test]
fn a_recording_failure_ends_the_connection_as_the_driver_says() {
    let mut h = Harness::new(ConnectionPolicy::default());
    h.conn.abort(ConnectionEnd::new(
        EndReason::RecordingFailed,
        Some(Origin::Local),
        "recording failed: disk full".to_owned(),
    ));
    assert!(h.client().contains("16.Recording failed"));
    assert_eq!(h.backend(), "10.disconnect;");
    assert_eq!(h.ended().reason, EndReason::RecordingFailed);
}
