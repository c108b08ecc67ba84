//! The audit log: one typed stream of security-relevant events for the gateway.
//!
//! Events are numbered without gaps, kept in a bounded ring so a consumer that reconnects
//! can resume with `GET /v1/events?since=N`, broadcast to live consumers, and also written
//! to the log under the `audit` target. A consumer that falls more than
//! [`BROADCAST_CAPACITY`] events behind is disconnected and resumes from the ring.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use zt_api::audit::{AuditEvent, AuditRecord};

/// Events kept for consumers that resume with `since`.
pub const RING_CAPACITY: usize = 4096;
/// Events a live consumer may lag behind before it is disconnected.
pub const BROADCAST_CAPACITY: usize = 1024;

/// The audit log. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct AuditLog {
    inner: Mutex<Ring>,
    live: broadcast::Sender<Arc<AuditRecord>>,
}

#[derive(Debug)]
struct Ring {
    next_seq: u64,
    records: VecDeque<Arc<AuditRecord>>,
}

impl Default for AuditLog {
    fn default() -> Self {
        Self::new()
    }
}

impl AuditLog {
    /// An empty log.
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self {
            inner: Mutex::new(Ring {
                next_seq: 1,
                records: VecDeque::with_capacity(RING_CAPACITY),
            }),
            live,
        }
    }

    /// Records `event`.
    pub fn emit(&self, event: AuditEvent) {
        let time = crate::util::now_rfc3339();
        let record = {
            let mut ring = self.lock();
            let record = Arc::new(AuditRecord {
                seq: ring.next_seq,
                time,
                event,
            });
            ring.next_seq += 1;
            if ring.records.len() == RING_CAPACITY {
                ring.records.pop_front();
            }
            ring.records.push_back(record.clone());
            // Sent under the lock so `subscribe` never sees a gap or a duplicate.
            let _ = self.live.send(record.clone());
            record
        };
        match serde_json::to_string(&*record) {
            Ok(json) => tracing::info!(target: "audit", "{json}"),
            Err(error) => tracing::error!(target: "audit", %error, "cannot serialise event"),
        }
    }

    /// The retained events after `since` (all retained events when `None`), and a receiver
    /// for every later one.
    pub fn subscribe(
        &self,
        since: Option<u64>,
    ) -> (Vec<Arc<AuditRecord>>, broadcast::Receiver<Arc<AuditRecord>>) {
        let ring = self.lock();
        let backlog = match since {
            Some(since) => ring
                .records
                .iter()
                .filter(|r| r.seq > since)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (backlog, self.live.subscribe())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding this lock cannot leave the ring inconsistent (every update
        // is a single push/pop), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> AuditEvent {
        AuditEvent::SessionConnected {
            session: format!("s{n}"),
        }
    }

    #[test]
    fn numbers_without_gaps_and_resumes() {
        let log = AuditLog::new();
        log.emit(event(1));
        log.emit(event(2));
        let (backlog, mut live) = log.subscribe(Some(1));
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].seq, 2);
        log.emit(event(3));
        assert_eq!(live.try_recv().unwrap().seq, 3);
    }

    #[test]
    fn ring_is_bounded() {
        let log = AuditLog::new();
        for n in 0..(RING_CAPACITY as u64 + 10) {
            log.emit(event(n));
        }
        let (backlog, _) = log.subscribe(Some(0));
        assert_eq!(backlog.len(), RING_CAPACITY);
        assert_eq!(backlog[0].seq, 11);
    }
}
