//! Keeping a guacd session alive while the user's client is slow: [`SyncTracker`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Timing of the [`SyncTracker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncSettings {
    /// How long a `sync` may stay unanswered by the client before the proxy answers it for
    /// the client. Default [`DEFAULT_SYNC_GRACE`], well under guacd's 15 s.
    pub grace: Duration,
    /// Least time between two keep-alive syncs. Default [`DEFAULT_KEEPALIVE_INTERVAL`].
    pub keepalive_interval: Duration,
    /// After this long with nothing sent to guacd, [`SyncTracker::poll_nop`] asks for a
    /// `nop`. Default [`DEFAULT_NOP_INTERVAL`].
    pub nop_interval: Duration,
    /// Most unanswered syncs remembered; beyond it, intermediate ones are merged (a `sync`
    /// flood cannot grow memory). Default [`DEFAULT_MAX_PENDING_SYNCS`].
    pub max_pending: usize,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            grace: DEFAULT_SYNC_GRACE,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            nop_interval: DEFAULT_NOP_INTERVAL,
            max_pending: DEFAULT_MAX_PENDING_SYNCS,
        }
    }
}

/// What to do with a `sync` reply from the user's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum ClientSync {
    /// Send it to guacd.
    Forward,
    /// Drop it.
    Suppress(SuppressReason),
}

/// Why a client's `sync` reply is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SuppressReason {
    /// It acknowledges a timestamp guacd has not sent (newer than its most recent `sync`, or
    /// before any): guacd would end the session.
    Future,
    /// It is at or below a timestamp already sent to guacd (by the client or as a
    /// keep-alive).
    Stale,
}

/// Tracks guacd's `sync`s and the client's replies during the relay. Sans-IO: `now` is an
/// input.
///
/// guacd ends a frame with `sync <timestamp>` and expects the client to echo the timestamp
/// once it has rendered the frame. Two rules of guacd shape what ztproxy may do:
///
/// * guacd drops a user from whom it has read nothing for 15 seconds (`error "User is not
///   responding." 776`, then `disconnect`; `GUACD_TIMEOUT` in `src/guacd/proc.h`, the read
///   loop in `src/libguac/user-handshake.c`). A browser tab in the background stops
///   rendering and its timers run once a minute, so its sync replies and `nop` keep-alives
///   stop too.
/// * guacd ends the session of a user who acknowledges a timestamp newer than the last
///   `sync` it sent (`__guac_handle_sync` in `src/libguac/user-handlers.c`: "Error if
///   timestamp is in future"), and measures the user's lag from the replies to pace its
///   frames (`guac_client_get_processing_lag`, used by the RDP and VNC frame loops).
///
/// The proxy forwards guacd's syncs to the client and the client's replies to guacd, and
/// tells this tracker about both. When the client leaves a sync unanswered for
/// [`SyncSettings::grace`], [`poll_keepalive`](Self::poll_keepalive) gives a timestamp the
/// proxy sends to guacd itself: guacd keeps the session, sees the lag, and slows down. When
/// nothing at all has gone to guacd for [`SyncSettings::nop_interval`],
/// [`poll_nop`](Self::poll_nop) asks for a `nop`, as guacamole-common-js sends every 5 s.
///
/// Invariants the tracker keeps for what it lets through ([`ClientSync::Forward`] and
/// keep-alives): never a timestamp newer than guacd's most recent `sync`, and never one at
/// or below a timestamp already sent (so a late client reply does not repeat a keep-alive).
/// [`lag`](Self::lag) measures the client alone: keep-alives do not hide its lag.
///
/// ```
/// use std::time::{Duration, Instant};
/// use zt_guacd::{ClientSync, SyncSettings, SyncTracker};
///
/// let t0 = Instant::now();
/// let mut sync = SyncTracker::new(SyncSettings::default());
/// sync.server_sync(1_000, t0);                        // forwarded to the client
/// assert_eq!(sync.poll_keepalive(t0 + Duration::from_secs(1)), None);
/// let late = t0 + Duration::from_secs(5);              // the client is still silent
/// assert_eq!(sync.poll_keepalive(late), Some(1_000));  // send `sync 1000` to guacd
/// assert_eq!(sync.lag(late), Duration::from_secs(5));  // the client's own lag
/// assert!(matches!(sync.client_sync(1_000, late), ClientSync::Suppress(_))); // already sent
/// assert_eq!(sync.lag(late), Duration::ZERO);
/// ```
#[derive(Debug, Clone)]
pub struct SyncTracker {
    settings: SyncSettings,
    /// guacd's most recent `sync` timestamp (most recent, not highest: guacd compares
    /// replies with the last one it sent).
    latest_server: Option<u64>,
    /// Highest timestamp sent to guacd, by the client or as a keep-alive.
    forwarded: Option<u64>,
    /// Server syncs the client has not answered, oldest first, with when they arrived;
    /// timestamps strictly increasing.
    pending: VecDeque<Pending>,
    last_keepalive: Option<Instant>,
    /// When something was last sent to guacd (`None` until the tracker first sees time).
    last_sent: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    timestamp: u64,
    at: Instant,
}

impl SyncTracker {
    /// A tracker with `settings`.
    pub fn new(settings: SyncSettings) -> Self {
        Self {
            settings,
            latest_server: None,
            forwarded: None,
            pending: VecDeque::new(),
            last_keepalive: None,
            last_sent: None,
        }
    }

    /// guacd sent `sync <timestamp>` (the proxy forwards it to the client).
    pub fn server_sync(&mut self, timestamp: u64, now: Instant) {
        self.touch(now);
        if self.latest_server.is_some_and(|latest| timestamp < latest) {
            // guacd's clock stepped back. It now rejects replies above `timestamp`: forget
            // every unanswered sync above it and the watermark, which may be above it too.
            self.pending.retain(|p| p.timestamp <= timestamp);
            if self.forwarded.is_some_and(|f| f > timestamp) {
                self.forwarded = None;
            }
        }
        self.latest_server = Some(timestamp);
        if self
            .pending
            .back()
            .is_some_and(|last| last.timestamp >= timestamp)
        {
            return; // the same frame time again: the older arrival stands
        }
        if self.pending.len() >= self.settings.max_pending.max(2) {
            // Keep the oldest (for the lag) and the newest (for keep-alives).
            self.pending.remove(1);
        }
        self.pending.push_back(Pending { timestamp, at: now });
    }

    /// The client replied `sync <timestamp>`: whether to forward it to guacd. A
    /// [`ClientSync::Forward`] counts as sent.
    pub fn client_sync(&mut self, timestamp: u64, now: Instant) -> ClientSync {
        self.touch(now);
        if self.latest_server.is_none_or(|latest| timestamp > latest) {
            return ClientSync::Suppress(SuppressReason::Future);
        }
        while self
            .pending
            .front()
            .is_some_and(|p| p.timestamp <= timestamp)
        {
            self.pending.pop_front();
        }
        if self.forwarded.is_some_and(|f| timestamp <= f) {
            return ClientSync::Suppress(SuppressReason::Stale);
        }
        self.forwarded = Some(timestamp);
        self.last_sent = Some(now);
        ClientSync::Forward
    }

    /// A timestamp to send to guacd now as `sync <timestamp>`, because the client has left
    /// guacd's syncs unanswered for [`SyncSettings::grace`]: the newest such sync not yet
    /// sent. `Some` counts as sent.
    pub fn poll_keepalive(&mut self, now: Instant) -> Option<u64> {
        self.touch(now);
        if self
            .last_keepalive
            .is_some_and(|last| !reached(now, last, self.settings.keepalive_interval))
        {
            return None;
        }
        let grace = self.settings.grace;
        let aged = self.pending.partition_point(|p| reached(now, p.at, grace));
        let newest_aged = self.pending.get(aged.checked_sub(1)?)?.timestamp;
        if self.forwarded.is_some_and(|f| newest_aged <= f) {
            return None;
        }
        self.forwarded = Some(newest_aged);
        self.last_keepalive = Some(now);
        self.last_sent = Some(now);
        Some(newest_aged)
    }

    /// Records that the proxy sent something else to guacd (forwarded client input such as
    /// `key`, `mouse`, `size`, `blob`, `ack`, or a `nop`), which restarts the `nop` timer.
    pub fn sent_to_guacd(&mut self, now: Instant) {
        self.last_sent = Some(now);
    }

    /// Whether to send `nop` to guacd now: nothing has gone to guacd for
    /// [`SyncSettings::nop_interval`]. `true` counts as sent.
    pub fn poll_nop(&mut self, now: Instant) -> bool {
        self.touch(now);
        if self
            .last_sent
            .is_some_and(|last| reached(now, last, self.settings.nop_interval))
        {
            self.last_sent = Some(now);
            return true;
        }
        false
    }

    /// When [`poll_keepalive`](Self::poll_keepalive) or [`poll_nop`](Self::poll_nop) may
    /// next have something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let nop = self
            .last_sent
            .and_then(|last| last.checked_add(self.settings.nop_interval));
        let first_unsent = self
            .pending
            .partition_point(|p| self.forwarded.is_some_and(|f| p.timestamp <= f));
        let keepalive = self.pending.get(first_unsent).and_then(|p| {
            let due = p.at.checked_add(self.settings.grace)?;
            match self.last_keepalive {
                Some(last) => Some(due.max(last.checked_add(self.settings.keepalive_interval)?)),
                None => Some(due),
            }
        });
        match (nop, keepalive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long the oldest `sync` the client has not answered has been waiting (zero when
    /// it is up to date): the client's lag, whatever keep-alives were sent.
    pub fn lag(&self, now: Instant) -> Duration {
        self.pending
            .front()
            .map_or(Duration::ZERO, |p| now.saturating_duration_since(p.at))
    }

    /// Number of guacd syncs the client has not answered (at most
    /// [`SyncSettings::max_pending`]).
    pub fn unanswered(&self) -> usize {
        self.pending.len()
    }

    /// guacd's most recent `sync` timestamp.
    pub fn latest_server_sync(&self) -> Option<u64> {
        self.latest_server
    }

    /// The highest timestamp sent to guacd so far.
    pub fn last_forwarded(&self) -> Option<u64> {
        self.forwarded
    }

    fn touch(&mut self, now: Instant) {
        if self.last_sent.is_none() {
            self.last_sent = Some(now);
        }
    }
}

/// Whether `interval` has passed between `since` and `now`. An interval too long to add to
/// an `Instant` never passes (settings such as `Duration::MAX` mean "never", not a panic).
fn reached(now: Instant, since: Instant, interval: Duration) -> bool {
    since.checked_add(interval).is_some_and(|due| now >= due)
}

impl Default for SyncTracker {
    fn default() -> Self {
        Self::new(SyncSettings::default())
    }
}

/// Default [`SyncSettings::grace`]: a quarter of guacd's 15 s, so a keep-alive reaches guacd
/// long before it gives up, and a healthy client (which answers within its round trip and
/// one frame) never triggers one.
pub const DEFAULT_SYNC_GRACE: Duration = Duration::from_secs(4);

/// Default [`SyncSettings::keepalive_interval`].
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Default [`SyncSettings::nop_interval`]: guacamole-common-js's `KEEP_ALIVE_FREQUENCY`
/// (5 s), a third of guacd's timeout.
pub const DEFAULT_NOP_INTERVAL: Duration = Duration::from_secs(5);

/// Default [`SyncSettings::max_pending`].
pub const DEFAULT_MAX_PENDING_SYNCS: usize = 1024;

#[cfg(test)]
mod tests;
