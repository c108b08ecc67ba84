//! The UDP socket under quinn, and how large its datagrams may get.
//!
//! quinn probes the path MTU (DPLPMTUD, RFC 8899) only up to 1452 bytes by default. Between
//! hosts whose path carries larger datagrams (loopback, a sidecar's local network, jumbo
//! frames) that leaves most of the connection's CPU in per-packet work: packet building,
//! header protection, acknowledgement tracking, one trip through the kernel's UDP stack per
//! datagram. For a peer on loopback ztproxy starts at [`LOOPBACK_MAX_DATAGRAM`], the largest
//! datagram IPv6 loopback carries, with an initial congestion window of ten such datagrams.
//! Other peers keep quinn's defaults: there a datagram larger than the path is lost, and
//! probing for more would hold up the first round trips of every connection.
//!
//! Starting at the bound instead of probing up to it is what keeps idle sessions small.
//! quinn keeps, per connection, a send buffer with room for one datagram of the current
//! size. An MTU probe is a ping padded to the probed size, so probing writes every page of
//! that buffer: an idle QUIC session cost ~63 KiB with 4 KiB probes and ~125 KiB with 64 KiB
//! ones, against a budget of 64 KiB. Starting at 64 KiB sends no probe; the buffer is
//! reserved but only the pages that small packets touch are resident, and an idle session
//! costs what it did with 4 KiB datagrams. If the path stops carrying them (a black hole),
//! quinn drops to its minimum and probes its way back up to the same bound.
//!
//! Relaying a Guacamole display stream (without recording) took 1.34–1.38 ns of ztproxy's
//! CPU per byte with 4 KiB datagrams and 0.74–1.04 with 64 KiB ones; the receiving client's
//! share fell from 1.45–1.49 to 0.74–0.93 (`guac-relay-bench`, back to back).
//!
//! Datagrams this large need one fix below quinn, made by [`ZtUdpSocket`]. quinn batches up
//! to ten datagrams of one size into a single `sendmsg` (segmentation offload, GSO) without
//! bounding the batch's total size, but the kernel refuses a batch above 64 KiB: with 9 KB
//! datagrams every refused batch was lost, until quinn's black-hole detection gave up and
//! dropped to 1200 bytes. [`ZtUdpSocket::try_send`] splits such a batch into batches the
//! kernel takes (for 64 KiB datagrams, one each).
//!
//! It also sizes quinn's receive buffers for what the kernel delivers: one coalesced batch
//! (GRO) is at most 64 KiB however large each datagram is, so one [`MAX_RECEIVE_PAYLOAD`]
//! buffer per slot holds it. Without this quinn would reserve room for 64 datagrams of
//! [`MAX_RECEIVE_PAYLOAD`] per slot (128 MiB per endpoint).

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// The largest UDP payload that fits in one IPv4 datagram.
pub const MAX_UDP_PAYLOAD: u16 = 65_507;
/// The datagram size for peers on loopback, from the start: the largest UDP payload in one
/// IPv6 datagram on a 64 KiB loopback MTU (65536 − 40 − 8), which IPv4 carries too.
pub const LOOPBACK_MAX_DATAGRAM: u16 = 65_488;
/// The largest UDP payload ztproxy accepts (quinn's maximum), which also sizes each receive
/// slot: a coalesced batch never exceeds it.
pub const MAX_RECEIVE_PAYLOAD: u16 = 65_527;
/// The largest batch of datagrams (their payloads together) the kernel takes in one send.
pub const MAX_BATCH_BYTES: usize = MAX_UDP_PAYLOAD as usize;

/// quinn's UDP socket with batches bounded to what the kernel accepts.
pub struct ZtUdpSocket {
    inner: Arc<dyn AsyncUdpSocket>,
}

impl ZtUdpSocket {
    /// Wraps a socket from quinn's runtime.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>) -> Arc<Self> {
        Arc::new(Self { inner })
    }
}

impl fmt::Debug for ZtUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZtUdpSocket")
            .field("local", &self.inner.local_addr().ok())
            .finish()
    }
}

/// The pieces of a send of `len` bytes in datagrams of `segment` bytes, each under
/// [`MAX_BATCH_BYTES`]: (offset, length) pairs.
fn split_batch(len: usize, segment: usize) -> impl Iterator<Item = (usize, usize)> {
    let per_batch = (MAX_BATCH_BYTES / segment.max(1)).max(1) * segment.max(1);
    (0..len)
        .step_by(per_batch)
        .map(move |offset| (offset, per_batch.min(len - offset)))
}

impl AsyncUdpSocket for ZtUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let Some(segment) = transmit.segment_size else {
            return self.inner.try_send(transmit);
        };
        if transmit.contents.len() <= MAX_BATCH_BYTES {
            return self.inner.try_send(transmit);
        }
        // A failure part-way makes quinn send the whole batch again: the receiver discards
        // the duplicates by packet number, which is cheaper than losing the rest.
        for (offset, len) in split_batch(transmit.contents.len(), segment) {
            let contents = transmit
                .contents
                .get(offset..offset + len)
                .unwrap_or_default();
            self.inner.try_send(&Transmit {
                destination: transmit.destination,
                ecn: transmit.ecn,
                contents,
                segment_size: (len > segment).then_some(segment),
                src_ip: transmit.src_ip,
            })?;
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        // quinn gives each receive slot max_udp_payload × this; a coalesced batch never
        // exceeds one MAX_RECEIVE_PAYLOAD.
        1
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_split_on_datagram_boundaries_under_the_kernel_limit() {
        for (len, segment) in [
            (65_507, 1452),
            (10 * 16_000, 16_000),
            (3 * 65_495, 65_495),
            (100_000, 1200),
            (1, 1),
            (5 * 40_000 - 7, 40_000), // a short last datagram
        ] {
            let pieces: Vec<_> = split_batch(len, segment).collect();
            let mut next = 0;
            for &(offset, piece) in &pieces {
                assert_eq!(offset, next, "contiguous");
                assert!(piece <= MAX_BATCH_BYTES.max(segment), "{piece} too large");
                assert!(offset % segment == 0, "splits on a datagram boundary");
                next = offset + piece;
            }
            assert_eq!(next, len, "covers the batch");
        }
    }

    #[test]
    fn a_batch_that_fits_is_one_piece() {
        assert_eq!(split_batch(44 * 1452, 1452).count(), 1);
    }
}
