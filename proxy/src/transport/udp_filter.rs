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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Transmit};

/// Datagrams dropped since the start (for the summary).
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The count at the last summary, and when it was logged.
static LAST_SUMMARY: Mutex<Option<(Instant, u64)>> = Mutex::new(None);
/// How often at most a summary is logged.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// STUN's magic cookie (RFC 8489 §5).
const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Whether `datagram` may be STUN, DTLS or (when `turn`) TURN ChannelData.
pub fn admissible(datagram: &[u8], turn: bool) -> bool {
    let Some(&first) = datagram.first() else {
        return false;
    };
    match first {
        0..=3 => {
            // A header of 20 bytes, the cookie, and a length that is what follows, in words.
            let declared = datagram.get(2..4).map_or(usize::MAX, |l| {
                usize::from(u16::from_be_bytes([l[0], l[1]]))
            });
            datagram.len() >= 20
                && datagram.get(4..8) == Some(&STUN_MAGIC[..])
                && declared % 4 == 0
                && declared + 20 == datagram.len()
        }
        20..=25 => {
            // A DTLS record header: version 1.0 (FE FF) or 1.2 (FE FD), a length within it.
            let declared = datagram.get(11..13).map_or(usize::MAX, |l| {
                usize::from(u16::from_be_bytes([l[0], l[1]]))
            });
            datagram.len() >= 13
                && datagram.get(1) == Some(&0xFE)
                && matches!(datagram.get(2), Some(0xFD | 0xFF))
                && declared + 13 <= datagram.len()
        }
        0x40..=0x4F if turn => {
            let declared = datagram.get(2..4).map_or(usize::MAX, |l| {
                usize::from(u16::from_be_bytes([l[0], l[1]]))
            });
            datagram.len() >= 4 && declared + 4 <= datagram.len()
        }
        _ => false,
    }
}

/// Counts `n` dropped datagrams and logs a summary when one is due.
fn note_dropped(n: u64) {
    let total = DROPPED.fetch_add(n, Ordering::Relaxed) + n;
    let mut last = LAST_SUMMARY.lock().unwrap_or_else(|e| e.into_inner());
    let (since, before) = match *last {
        Some((at, _)) if at.elapsed() < SUMMARY_EVERY => return,
        Some((at, before)) => (Some(at.elapsed()), before),
        None => (None, 0),
    };
    *last = Some((Instant::now(), total));
    tracing::warn!(
        dropped = total - before,
        total,
        since_last_summary = ?since,
        "WebRTC sockets dropped datagrams that are not STUN, DTLS or TURN (next summary in a minute at the earliest)"
    );
}

/// A socket that hands the stack only [`admissible`] datagrams.
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
        data.chunks(stride).all(|d| admissible(d, self.turn))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_dtls_and_turn_are_told_from_garbage() {
        let mut stun = vec![0x00, 0x01, 0x00, 0x04];
        stun.extend_from_slice(&STUN_MAGIC);
        stun.extend_from_slice(&[0u8; 12]);
        stun.extend_from_slice(&[0u8; 4]);
        assert!(admissible(&stun, false));
        assert!(!admissible(&stun[..stun.len() - 1], false));
        let mut dtls = vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
        dtls.extend_from_slice(&[1, 2, 3]);
        assert!(admissible(&dtls, false));
        dtls[2] = 0x01;
        assert!(!admissible(&dtls, false));
        let channel = [0x40, 0x00, 0x00, 0x02, 9, 9];
        assert!(admissible(&channel, true));
        assert!(!admissible(&channel, false));
        for garbage in [
            &[][..],
            &[0x80, 0x60, 0, 0],
            b"GET / HTTP/1.1\r\n",
            &[0xFF; 100],
        ] {
            assert!(!admissible(garbage, true), "{garbage:?}");
        }
    }

    #[test]
    fn random_datagrams_almost_never_pass() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut passed = 0;
        for i in 0..100_000u32 {
            let len = 1 + (i as usize * 7919) % 1200;
            let datagram: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state.to_le_bytes()[0]
                })
                .collect();
            passed += usize::from(admissible(&datagram, false));
        }
        assert!(passed < 10, "{passed} random datagrams passed");
    }
}
