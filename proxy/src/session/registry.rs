//! The registry of live sessions and the handle on each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::PeerConnection;
use zt_api::control::{
    Conversation, EndReason, EndedSession, SessionInfo, SessionState, Target, Transport, ViewerInfo,
};

/// Live counters of one session, shared with its relays.
#[derive(Debug)]
pub struct SessionStats {
    pub(super) started: Instant,
    /// Bytes relayed to the target.
    pub bytes_to_target: AtomicU64,
    /// Bytes relayed to the client.
    pub bytes_to_client: AtomicU64,
    /// Tunnelled connections open now.
    pub connections_active: AtomicU64,
    /// Tunnelled connections opened so far.
    pub connections_total: AtomicU64,
    /// Connections refused so far.
    pub connections_refused: AtomicU64,
    last_activity_ms: AtomicU64,
}

impl SessionStats {
    pub(super) fn new() -> Self {
        Self {
            started: Instant::now(),
            bytes_to_target: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            connections_active: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            last_activity_ms: AtomicU64::new(0),
        }
    }

    /// `n` bytes went to the client: the session's counter and the daemon's.
    pub fn count_to_client(&self, metrics: &crate::metrics::Metrics, n: u64) {
        self.bytes_to_client.fetch_add(n, Ordering::Relaxed);
        metrics.bytes_to_client.inc_by(n);
    }

    /// `n` bytes went to the target: the session's counter and the daemon's.
    pub fn count_to_target(&self, metrics: &crate::metrics::Metrics, n: u64) {
        self.bytes_to_target.fetch_add(n, Ordering::Relaxed);
        metrics.bytes_to_target.inc_by(n);
    }

    /// Records activity now (resets the idle timer).
    pub fn touch(&self) {
        self.last_activity_ms.store(
            crate::util::millis(self.started.elapsed()),
            Ordering::Relaxed,
        );
    }

    pub(super) fn last_activity(&self) -> Instant {
        self.started + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }
}

/// What was fixed when the session was created.
#[derive(Debug, Clone)]
pub struct SessionMeta {
    /// Transport.
    pub transport: Transport,
    /// Conversation.
    pub conversation: Conversation,
    /// Protocol label.
    pub protocol: String,
    /// The only target.
    pub target: Target,
    /// Resource id (audit).
    pub resource_id: Option<String>,
    /// User (audit).
    pub user: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Effective idle timeout.
    pub idle_timeout: Duration,
    /// Effective maximum duration.
    pub max_duration: Duration,
    /// Effective connection limit.
    pub max_connections: u64,
    /// How a connection reaches its target (`None` for tunnels).
    pub route: Option<zt_api::control::Route>,
}

pub(super) const STATE_PENDING: u8 = 0;
pub(super) const STATE_CONNECTED: u8 = 1;
pub(super) const STATE_ENDING: u8 = 2;

/// The registry's handle on a session. Ending it through [`SessionHandle::end`] is the only
/// way to stop a session from outside its task.
pub struct SessionHandle {
    /// Session id.
    pub id: String,
    /// Fixed facts.
    pub meta: SessionMeta,
    /// Counters.
    pub stats: Arc<SessionStats>,
    pub(super) state: AtomicU8,
    pub(super) connected_at: OnceLock<String>,
    pub(super) end: CancellationToken,
    pub(super) end_reason: Mutex<Option<EndReason>>,
    pub(super) ended: watch::Receiver<Option<EndedSession>>,
    pub(super) peer: Option<Arc<dyn PeerConnection>>,
    pub(super) recordings: Arc<Mutex<Vec<String>>>,
    /// A connection session's live sharing (viewers join it).
    pub(super) share: Option<Arc<crate::connection::share::Share>>,
    /// What a viewer watches; `None` for the sessions the gateway created.
    pub(super) viewer: Option<ViewerOf>,
    /// A connection session's viewers.
    pub(super) viewers: Mutex<Vec<Arc<Self>>>,
}

/// What a viewer session watches, and may do.
#[derive(Debug, Clone)]
pub struct ViewerOf {
    /// The session watched.
    pub session: String,
    /// Who watches.
    pub user: String,
    /// Whether its input reaches the target.
    pub input: bool,
    /// Whether it receives the clipboard.
    pub clipboard: bool,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.id)
            .field("meta", &self.meta)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SessionHandle {
    /// Asks the session to end for `reason` (the first reason given wins).
    pub fn end(&self, reason: EndReason) {
        {
            let mut slot = self.end_reason.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(reason);
            }
        }
        self.end.cancel();
    }

    /// Waits until the session has ended and returns its summary.
    pub async fn wait_ended(&self) -> Option<EndedSession> {
        let mut ended = self.ended.clone();
        ended
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|summary| summary.clone())
    }

    /// The WebRTC peer connection, for trickled candidates.
    pub fn peer(&self) -> Option<&Arc<dyn PeerConnection>> {
        self.peer.as_ref()
    }

    fn state(&self) -> SessionState {
        match self.state.load(Ordering::Relaxed) {
            STATE_PENDING => SessionState::Pending,
            STATE_CONNECTED => SessionState::Connected,
            _ => SessionState::Ending,
        }
    }

    /// The API view of the session.
    pub fn info(&self) -> SessionInfo {
        let state = self.state();
        SessionInfo {
            id: self.id.clone(),
            state,
            transport: self.meta.transport,
            conversation: self.meta.conversation,
            protocol: self.meta.protocol.clone(),
            target: self.meta.target.clone(),
            resource_id: self.meta.resource_id.clone(),
            created_at: self.meta.created_at.clone(),
            connected_at: self.connected_at.get().cloned(),
            bytes_to_target: self.stats.bytes_to_target.load(Ordering::Relaxed),
            bytes_to_client: self.stats.bytes_to_client.load(Ordering::Relaxed),
            connections_active: self.stats.connections_active.load(Ordering::Relaxed),
            connections_total: self.stats.connections_total.load(Ordering::Relaxed),
            idle_timeout_secs: self.meta.idle_timeout.as_secs(),
            max_duration_secs: self.meta.max_duration.as_secs(),
            recordings: self
                .recordings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// What this session watches, when it is a viewer.
    pub fn viewer_of(&self) -> Option<&ViewerOf> {
        self.viewer.as_ref()
    }

    /// The session's viewers, oldest first.
    pub fn viewers(&self) -> Vec<Arc<Self>> {
        self.viewers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The API view of a viewer session (`None` for other sessions).
    pub fn viewer_info(&self) -> Option<ViewerInfo> {
        let of = self.viewer.as_ref()?;
        let state = self.state();
        Some(ViewerInfo {
            id: self.id.clone(),
            session: of.session.clone(),
            user: of.user.clone(),
            input: of.input,
            clipboard: of.clipboard,
            state,
            transport: self.meta.transport,
            created_at: self.meta.created_at.clone(),
            connected_at: self.connected_at.get().cloned(),
            bytes_to_client: self.stats.bytes_to_client.load(Ordering::Relaxed),
        })
    }

    pub(super) fn reason(&self) -> EndReason {
        self.end_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(EndReason::Revoked)
    }
}

/// Live sessions by id.
#[derive(Debug)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Arc<SessionHandle>>>,
    max: usize,
}

impl Registry {
    /// An empty registry holding at most `max` sessions.
    pub fn new(max: usize) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SessionHandle>>> {
        // Updates are single inserts and removes: a poisoned map is intact.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether another session fits.
    pub fn has_room(&self) -> bool {
        self.lock().len() < self.max
    }

    pub(super) fn insert(&self, handle: Arc<SessionHandle>) -> bool {
        let mut sessions = self.lock();
        if sessions.len() >= self.max {
            return false;
        }
        sessions.insert(handle.id.clone(), handle);
        true
    }

    /// The session with `id`.
    pub fn get(&self, id: &str) -> Option<Arc<SessionHandle>> {
        self.lock().get(id).cloned()
    }

    /// Every live session the gateway created (not viewers), oldest first.
    pub fn list(&self) -> Vec<Arc<SessionHandle>> {
        let mut all: Vec<_> = self
            .lock()
            .values()
            .filter(|h| h.viewer.is_none())
            .cloned()
            .collect();
        all.sort_by_key(|h| h.stats.started);
        all
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub(super) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Ends every session (shutdown).
    pub fn end_all(&self, reason: EndReason) {
        let all: Vec<_> = self.lock().values().cloned().collect();
        for handle in all {
            handle.end(reason);
        }
    }
}
