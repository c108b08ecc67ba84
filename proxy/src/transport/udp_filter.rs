//! What reaches the WebRTC stack from its UDP sockets: STUN, DTLS and (with a TURN server)
//! TURN ChannelData, told apart as RFC 7983 does and checked for their fixed fields. ztproxy
//! carries no media, so RTP/RTCP and everything else is dropped before the stack sees it.
//!
//! The sockets are reachable by anyone who can send a datagram to a host candidate, and the
//! stack logs a warning for most datagrams it cannot parse: without this filter, garbage
//! wrote about 1.6 warnings per datagram. Dropped datagrams are counted, and a summary is
//! logged at most once a minute for the whole process.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Transmit};

use crate::inspect::admissible_datagram;
use crate::util::LogThrottle;

/// Datagrams dropped since the start (for the summary).
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// One summary a minute at most.
static SUMMARY: LogThrottle = LogThrottle::new(Duration::from_secs(60));

/// Counts `n` dropped datagrams and logs a summary when one is due.
fn note_dropped(n: u64) {
    let total = DROPPED.fetch_add(n, Ordering::Relaxed) + n;
    if let Some(dropped) = SUMMARY.note(n) {
        tracing::warn!(
            dropped,
            total,
            "WebRTC sockets dropped datagrams that are not STUN, DTLS or TURN (next summary in a minute at the earliest)"
        );
    }
}

/// A socket that hands the stack only [`admissible_datagram`]s.
pub struct FilteredUdpSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    turn: bool,
}

impl FilteredUdpSocket {
    /// Filters `inner`; `turn` admits TURN ChannelData.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, turn: bool) -> Self {
        Self { inner, turn }
    }

    /// Whether every datagram of the message in `buf` (several when the kernel coalesced
    /// them, `stride` bytes each) is admissible.
    fn message_admissible(&self, buf: &[u8], meta: &RecvMeta) -> bool {
        let data = buf.get(..meta.len).unwrap_or(buf);
        let stride = meta.stride.max(1);
        data.chunks(stride)
            .all(|d| admissible_datagram(d, self.turn))
    }
}

impl fmt::Debug for FilteredUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilteredUdpSocket")
            .field("inner", &self.inner)
            .field("turn", &self.turn)
            .finish()
    }
}

impl AsyncUdpSocket for FilteredUdpSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n.min(bufs.len()).min(meta.len()),
                other => return other,
            };
            // Keep the admissible messages, in order, at the front.
            let mut kept = 0;
            for i in 0..n {
                let (Some(buf), Some(m)) = (bufs.get(i), meta.get(i).copied()) else {
                    break;
                };
                if !self.message_admissible(buf, &m) {
                    continue;
                }
                if kept != i {
                    let (front, back) = bufs.split_at_mut(i);
                    if let (Some(to), Some(from)) = (front.get_mut(kept), back.first()) {
                        let len = m.len.min(from.len()).min(to.len());
                        to[..len].copy_from_slice(&from[..len]);
                    }
                    if let Some(slot) = meta.get_mut(kept) {
                        *slot = m;
                    }
                }
                kept += 1;
            }
            if kept < n {
                note_dropped(u64::try_from(n - kept).unwrap_or(u64::MAX));
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
            // Everything was garbage: read again (or register for wake-up).
        }
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}
