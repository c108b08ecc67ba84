//! The runtime handed to webrtc-rs: Tokio, plus two fixes that webrtc-rs needs from outside.
//!
//! 1. **Socket buffers.** webrtc-rs reads its UDP sockets from one driver task. With the
//!    kernel's default 208 KiB receive buffer a burst of DTLS records overflows the socket,
//!    SCTP sees loss and backs off with one-second retransmission timeouts: throughput on
//!    loopback drops from ~300 MB/s to ~30 MB/s. [`ZtRuntime::wrap_udp_socket`] sets
//!    SO_RCVBUF and SO_SNDBUF on every socket the stack binds (the kernel caps the values at
//!    `net.core.rmem_max` / `wmem_max`; the daemon warns when that happens).
//!
//! 2. **Garbage.** Every socket is wrapped in a [`FilteredUdpSocket`], which hands the stack
//!    only STUN, DTLS and (with TURN) ChannelData: the stack warns about most datagrams it
//!    cannot parse, and anyone can send them (see [`crate::transport::udp_filter`]).
//!
//! 3. **Set-up stalls.** webrtc 0.21's driver flushes packets that the protocol core queues
//!    while *handling an event* — the DTLS ClientHello queued when ICE selects a pair, the
//!    SCTP INIT queued when DTLS completes, a DCEP OPEN queued when SCTP comes up — only on
//!    its next wake-up, which is the next protocol timer: 200 ms later each. A data channel
//!    therefore took ~600 ms to open on loopback instead of ~10 ms. While a connection is
//!    being set up, [`ZtRuntime::sleep`] caps the driver's timer at [`KICK_INTERVAL`], so
//!    those packets leave within a millisecond or two; a spurious timer wake-up is harmless
//!    (each protocol timer checks its own deadline). The cap ends when the caller calls
//!    [`SetupKick::done`] (first data channel open) or after [`MAX_KICK`], whichever comes
//!    first, so an established connection runs on its own timers.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::transport::udp_filter::FilteredUdpSocket;
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

/// Longest driver sleep while a connection is being set up.
pub const KICK_INTERVAL: Duration = Duration::from_millis(1);
/// Longest set-up phase during which the driver's sleeps are capped.
pub const MAX_KICK: Duration = Duration::from_secs(10);

/// A Tokio runtime for one peer connection.
pub struct ZtRuntime {
    inner: TokioRuntime,
    socket_buffer_bytes: usize,
    /// Admit TURN ChannelData (a TURN server is configured).
    turn: bool,
    kick: Arc<KickState>,
}

struct KickState {
    active: AtomicBool,
    until: Instant,
}

/// Ends the set-up phase of the connection whose runtime handed it out. Dropping it ends the
/// phase too.
pub struct SetupKick(Arc<KickState>);

impl SetupKick {
    /// The connection is set up: let the driver sleep on its own timers again.
    pub fn done(&self) {
        self.0.active.store(false, Ordering::Relaxed);
    }
}

impl Drop for SetupKick {
    fn drop(&mut self) {
        self.done();
    }
}

impl ZtRuntime {
    /// A runtime whose sockets get `socket_buffer_bytes` buffers, in the set-up phase; `turn`
    /// when a TURN server may relay (its ChannelData is admitted).
    pub fn new(socket_buffer_bytes: usize, turn: bool) -> (Arc<Self>, SetupKick) {
        let kick = Arc::new(KickState {
            active: AtomicBool::new(true),
            until: Instant::now() + MAX_KICK,
        });
        let runtime = Arc::new(Self {
            inner: TokioRuntime,
            socket_buffer_bytes,
            turn,
            kick: kick.clone(),
        });
        (runtime, SetupKick(kick))
    }

    fn kicking(&self) -> bool {
        self.kick.active.load(Ordering::Relaxed) && Instant::now() < self.kick.until
    }
}

impl fmt::Debug for ZtRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZtRuntime")
            .field("socket_buffer_bytes", &self.socket_buffer_bytes)
            .field("kicking", &self.kicking())
            .finish()
    }
}

impl Runtime for ZtRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        set_socket_buffers(&socket2::SockRef::from(&socket), self.socket_buffer_bytes);
        let inner = self.inner.wrap_udp_socket(socket)?;
        Ok(Arc::new(FilteredUdpSocket::new(inner, self.turn)))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let duration = if self.kicking() {
            duration.min(KICK_INTERVAL)
        } else {
            duration
        };
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn name(&self) -> &'static str {
        "ztproxy-tokio"
    }
}

/// Sets SO_RCVBUF and SO_SNDBUF, warning once per process when the kernel caps them.
pub fn set_socket_buffers(socket: &socket2::SockRef<'_>, bytes: usize) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let _ = socket.set_recv_buffer_size(bytes);
    let _ = socket.set_send_buffer_size(bytes);
    // Linux reports twice the requested size (it counts bookkeeping); less than requested
    // means net.core.rmem_max / wmem_max capped it.
    let capped = socket.recv_buffer_size().is_ok_and(|got| got < bytes)
        || socket.send_buffer_size().is_ok_and(|got| got < bytes);
    if capped && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            requested = bytes,
            "UDP socket buffers were capped by the kernel; raise net.core.rmem_max and \
             net.core.wmem_max to at least this value or throughput will suffer"
        );
    }
}
