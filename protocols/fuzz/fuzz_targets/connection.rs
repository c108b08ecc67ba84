//! The connection core driven as a driver would, by a script of client bytes, backend bytes,
//! time, the backend opening or failing and either side closing.
//!
//! Checked on every step: no panic; everything handed to the client and to the backend is
//! whole Guacamole instructions; a client message larger than `max_message` is one
//! instruction; output queued for the client stays bounded (the high-water mark, one backend
//! read, the farewell and what the client's own input provoked) while the driver reads the
//! backend only when asked; nothing follows `Ended`.

#![no_main]

use std::time::{Duration, Instant};

use zt_api::control::EndReason;
use zt_connection::policy::ConnectionPolicy;
use zt_connection::{Connection, ConnectionEnd, Event, Settings};
use zt_guac::{Decoder, Limits};

/// Small limits so that the fuzzer reaches them.
const MAX_MESSAGE: usize = 512;
const HIGH_WATER: usize = 2048;

struct Run<'a> {
    data: &'a [u8],
    conn: Connection,
    now: Instant,
    to_client: Decoder,
    to_backend: Decoder,
    ended: bool,
    /// Client bytes fed since the client last read (replies to them are queued for it).
    unread_input: usize,
}

impl Run<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(first)
    }

    fn bytes(&mut self) -> &[u8] {
        let len = usize::from(self.byte().unwrap_or(0));
        let (taken, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// Takes everything the connection has for the driver and checks it.
    fn drain(&mut self, client_reads: bool) {
        if client_reads {
            while let Some(message) = self.conn.poll_transmit(self.now) {
                let instructions = whole(&mut self.to_client, &message);
                assert!(instructions >= 1);
                assert!(message.len() <= MAX_MESSAGE || instructions == 1);
            }
            self.unread_input = 0;
        }
        while let Some(bytes) = self.conn.poll_backend_transmit() {
            whole(&mut self.to_backend, &bytes);
        }
        while self.conn.poll_record().is_some() {}
        while let Some(event) = self.conn.poll_event() {
            assert!(!self.ended, "an event after Ended: {event:?}");
            if let Event::Ended(_) = event {
                self.ended = true;
                assert!(self.conn.is_closed());
            }
        }
        // The backend is read only while the connection wants input, so what is queued for
        // the client is the high-water mark plus one read, the farewell and the replies to
        // the client's own input at most.
        let bound = HIGH_WATER + 256 + 1024 + 4 * self.unread_input;
        assert!(self.conn.pending_client_bytes() <= bound);
    }
}

/// Feeds `bytes` to `decoder` and counts the instructions: they must be well-formed, and the
/// bytes must end on an instruction boundary.
fn whole(decoder: &mut Decoder, bytes: &[u8]) -> usize {
    decoder.feed(bytes);
    let mut count = 0;
    loop {
        match decoder.poll_instruction() {
            Ok(Some(_)) => count += 1,
            Ok(None) => break,
            Err(error) => panic!("malformed output: {error}"),
        }
    }
    assert_eq!(
        decoder.buffered_len(),
        0,
        "output ends inside an instruction"
    );
    count
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let policy = ConnectionPolicy {
        disable_copy: flags & 1 != 0,
        disable_paste: flags & 2 != 0,
        disable_download: flags & 4 != 0,
        disable_upload: flags & 8 != 0,
        read_only: flags & 16 != 0,
        record_input: flags & 32 != 0,
        clipboard_buffer_size: 64,
    };
    let mut settings = Settings::new("fuzz", policy);
    settings.max_message = MAX_MESSAGE;
    settings.client_high_water = HIGH_WATER;
    settings.record_batch = 1024;
    let now = Instant::now();
    let limits = Limits::default();
    let mut run = Run {
        data,
        conn: Connection::new(settings, now),
        now,
        to_client: Decoder::new(limits),
        to_backend: Decoder::new(limits),
        ended: false,
        unread_input: 0,
    };
    if flags & 64 != 0 {
        run.conn.start_recording(flags & 32 != 0);
    }
    while let Some(op) = run.byte() {
        let client_reads = op & 0x80 == 0;
        match op & 0x0F {
            0..=4 => {
                let bytes = run.bytes().to_vec();
                run.unread_input += bytes.len();
                run.conn.handle_client(run.now, &bytes);
            }
            5..=9 => {
                let bytes = run.bytes().to_vec();
                if run.conn.wants_backend_input() {
                    run.conn.handle_backend(run.now, &bytes);
                }
            }
            10 => {
                let by = Duration::from_millis(u64::from(run.byte().unwrap_or(0)) * 100);
                run.now += by;
                if run.conn.poll_timeout().is_some_and(|at| at <= run.now) {
                    run.conn.handle_timeout(run.now);
                }
            }
            11 => run.conn.backend_ready(run.now),
            12 => run.conn.abort(ConnectionEnd::backend_error(
                "backend refused".to_owned(),
                None,
            )),
            13 => run.conn.close(EndReason::Revoked),
            14 => run.conn.handle_backend_closed(run.now),
            _ => run.conn.handle_client_closed(),
        }
        run.drain(client_reads);
    }
    run.drain(true);
});
