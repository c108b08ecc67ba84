//! The task that owns a session: its transport, its connection or tunnels, its end.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use quinn::Connection;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use zt_api::audit::AuditEvent;
use zt_api::control::{EndReason, EndedSession, Origin};
use zt_api::tunnel::{ChannelControl, TunnelErrorCode};

use crate::server::Shared;
use crate::transport::quic::QuicEvent;
use crate::transport::stream::Stream;
use crate::transport::webrtc::{CONTROL_CHANNEL_LABEL, Peer, PeerEvent};
use crate::tunnel::{self};

use super::admission::{Slot, admit, opened, refused, relay_tunnel};
use super::create::{ConnectionSetup, ViewerSetup, Work};
use super::registry::*;
use super::*;

/// The transport a session task owns.
pub(super) enum SessionTransport {
    Webrtc {
        peer: Peer,
        control: Option<Arc<dyn DataChannel>>,
        /// Cancelled when the client's control channel closes: the client closed its peer
        /// connection (SCTP ABORT or SHUTDOWN, DTLS close_notify). webrtc-rs closes every
        /// channel then but leaves the connection's state `connected` until ICE consent
        /// fails, seconds later.
        control_closed: CancellationToken,
    },
    Quic {
        events: mpsc::Receiver<QuicEvent>,
        key: [u8; 32],
        conn: Option<Connection>,
    },
}

struct Ending {
    reason: EndReason,
    origin: Option<Origin>,
    detail: Option<String>,
}

impl Ending {
    fn new(reason: EndReason, origin: Option<Origin>) -> Self {
        Self {
            reason,
            origin,
            detail: None,
        }
    }
}

pub(super) async fn run(
    shared: Arc<Shared>,
    handle: Arc<SessionHandle>,
    mut transport: SessionTransport,
    work: Work,
    ended_tx: watch::Sender<Option<EndedSession>>,
) {
    tracing::info!(target = %handle.meta.target, "session created");
    let relays = TaskTracker::new();
    let relay_cancel = CancellationToken::new();
    let mut connection = ConnectionSlot::new(work);
    let ending = drive(
        &shared,
        &handle,
        &mut transport,
        &mut connection,
        &relays,
        &relay_cancel,
    )
    .await;

    handle.state.store(STATE_ENDING, Ordering::Relaxed);
    // The running connection asks the handle why it is cancelled: a deadline (idle, maximum
    // duration) must be recorded there first, or the client hears "Session revoked".
    handle.end(ending.reason);
    // Viewers end with the session they watch (and hear why), at once.
    for viewer in handle.viewers() {
        viewer.end(ending.reason);
    }
    // Their departures are noted in the recordings, which end with the connection.
    if let Some(share) = &handle.share {
        share.viewers_left().await;
    }
    relay_cancel.cancel();
    // A running Guacamole connection tells its client why (`error`, `disconnect`) before the
    // transport goes: closing a QUIC connection discards what is still unsent.
    if let ConnectionSlot::Running(_) = &connection {
        let _ = tokio::time::timeout(CONNECTION_END_GRACE, connection.ended()).await;
    }
    // A connection that never started never closed its share: its viewers leave now.
    if let Some(share) = &handle.share {
        share.close(ending.reason, ending.origin).await;
    }
    close_transport(&shared, transport, ending.reason).await;
    relays.close();
    if tokio::time::timeout(RELAY_GRACE, relays.wait())
        .await
        .is_err()
    {
        tracing::warn!("relays did not finish within the grace period");
    }
    shared.registry.remove(&handle.id);
    let stats = &handle.stats;
    if let Some(of) = &handle.viewer {
        // A viewer's join and departure are audited by its connection.
        if let Some(owner) = shared.registry.get(&of.session) {
            owner
                .viewers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|v| v.id != handle.id);
        }
        let _ = ended_tx.send(Some(EndedSession {
            id: handle.id.clone(),
            reason: ending.reason,
            bytes_to_target: stats.bytes_to_target.load(Ordering::Relaxed),
            bytes_to_client: stats.bytes_to_client.load(Ordering::Relaxed),
            duration_ms: crate::util::millis(stats.started.elapsed()),
        }));
        tracing::info!(reason = ending.reason.as_str(), "viewer ended");
        return;
    }
    shared.metrics.sessions_active.dec();
    shared.metrics.session_ended(ending.reason);

    let summary = EndedSession {
        id: handle.id.clone(),
        reason: ending.reason,
        bytes_to_target: stats.bytes_to_target.load(Ordering::Relaxed),
        bytes_to_client: stats.bytes_to_client.load(Ordering::Relaxed),
        duration_ms: crate::util::millis(stats.started.elapsed()),
    };
    shared.audit.emit(AuditEvent::SessionEnded {
        session: handle.id.clone(),
        reason: ending.reason,
        origin: ending.origin,
        detail: ending.detail.clone(),
        bytes_to_target: summary.bytes_to_target,
        bytes_to_client: summary.bytes_to_client,
        connections_total: stats.connections_total.load(Ordering::Relaxed),
        connections_refused: stats.connections_refused.load(Ordering::Relaxed),
        duration_ms: summary.duration_ms,
    });
    tracing::info!(
        reason = ending.reason.as_str(),
        bytes_to_target = summary.bytes_to_target,
        bytes_to_client = summary.bytes_to_client,
        "session ended"
    );
    let _ = ended_tx.send(Some(summary));
}

pub(super) async fn close_transport(
    shared: &Shared,
    transport: SessionTransport,
    reason: EndReason,
) {
    match transport {
        SessionTransport::Webrtc { peer, control, .. } => {
            if let Some(control) = control {
                // Tell the client why, then close. Bounded: revocation must stay prompt.
                let notice = ChannelControl::SessionEnded { reason }.to_text();
                let _ = tokio::time::timeout(END_NOTICE_TIMEOUT, async {
                    if control.send_text(&notice).await.is_ok() {
                        tunnel::wait_acked(&control).await;
                    }
                })
                .await;
            }
            let _ = peer.pc.close().await;
        }
        SessionTransport::Quic { key, conn, .. } => {
            if let Some(server) = &shared.quic {
                server.unregister(&key);
            }
            if let Some(conn) = conn {
                conn.close(
                    quinn::VarInt::from_u32(zt_api::tunnel::QUIC_CLOSE_SESSION_ENDED),
                    reason.as_str().as_bytes(),
                );
            }
        }
    }
}

enum Incoming {
    Connected,
    Disconnected,
    ClientGone,
    DataChannel(Arc<dyn DataChannel>),
    QuicConnected(Connection),
    QuicStream(quinn::SendStream, quinn::RecvStream),
}

async fn next_incoming(transport: &mut SessionTransport) -> Incoming {
    match transport {
        SessionTransport::Webrtc {
            peer,
            control_closed,
            ..
        } => tokio::select! {
            event = peer.events.recv() => match event {
                Some(PeerEvent::Connected) => Incoming::Connected,
                Some(PeerEvent::Disconnected) => Incoming::Disconnected,
                Some(PeerEvent::DataChannel(dc)) => Incoming::DataChannel(dc),
                Some(PeerEvent::Failed | PeerEvent::Closed) | None => Incoming::ClientGone,
            },
            () = control_closed.cancelled() => Incoming::ClientGone,
        },
        SessionTransport::Quic { events, conn, .. } => {
            let closed = async {
                match conn {
                    Some(conn) => {
                        conn.closed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.recv() => match event {
                    Some(QuicEvent::Connected(conn)) => Incoming::QuicConnected(conn),
                    Some(QuicEvent::Stream(stream)) => {
                        let (send, recv) = *stream;
                        Incoming::QuicStream(send, recv)
                    }
                    None => Incoming::ClientGone,
                },
                () = closed => Incoming::ClientGone,
            }
        }
    }
}

/// The Guacamole connection of a connection session: not started, running, or over.
enum ConnectionSlot {
    /// A tunnel session: no connection.
    None,
    /// Waiting for the client's Guacamole channel.
    Waiting(Box<ConnectionSetup>),
    /// A viewer waiting for its client's Guacamole channel.
    Viewer(ViewerSetup),
    /// Running; its end arrives here.
    Running(tokio::sync::oneshot::Receiver<crate::connection::ConnectionEnd>),
    /// It ended (its end was taken).
    Finished,
}

impl ConnectionSlot {
    fn new(work: Work) -> Self {
        match work {
            Work::Connection(setup) => Self::Waiting(setup),
            Work::Viewer(setup) => Self::Viewer(setup),
            Work::Tunnel => Self::None,
        }
    }

    fn is_connection(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// Takes the setup if the connection has not started yet.
    fn start(
        &mut self,
        done: tokio::sync::oneshot::Receiver<crate::connection::ConnectionEnd>,
    ) -> Option<Work> {
        match std::mem::replace(self, Self::Running(done)) {
            Self::Waiting(setup) => Some(Work::Connection(setup)),
            Self::Viewer(setup) => Some(Work::Viewer(setup)),
            other => {
                *self = other;
                None
            }
        }
    }

    async fn ended(&mut self) -> Ending {
        match self {
            Self::Running(done) => {
                let end = done.await;
                *self = Self::Finished;
                match end {
                    Ok(end) => Ending {
                        reason: end.reason,
                        origin: end.origin,
                        detail: end.detail,
                    },
                    Err(_) => Ending::new(EndReason::Error, Some(Origin::Local)),
                }
            }
            _ => std::future::pending().await,
        }
    }
}

/// Runs the session until something ends it.
async fn drive(
    shared: &Arc<Shared>,
    handle: &Arc<SessionHandle>,
    transport: &mut SessionTransport,
    connection: &mut ConnectionSlot,
    relays: &TaskTracker,
    relay_cancel: &CancellationToken,
) -> Ending {
    let mut clock = Deadlines::new(shared, handle);
    loop {
        let incoming = tokio::select! {
            biased;
            () = handle.end.cancelled() => return Ending::new(handle.reason(), None),
            incoming = next_incoming(transport) => incoming,
            ending = connection.ended() => return ending,
            () = tokio::time::sleep_until(clock.next(handle).into()) => {
                match clock.expired(handle, Instant::now()) {
                    Some(ending) => return ending,
                    None => continue,
                }
            }
        };
        let stream = match incoming {
            Incoming::Connected => {
                clock.connected(shared, handle);
                continue;
            }
            Incoming::Disconnected => {
                tracing::debug!("peer connection disconnected; waiting for ICE to recover");
                continue;
            }
            Incoming::ClientGone => {
                return Ending::new(EndReason::ClientClosed, Some(Origin::Client));
            }
            Incoming::QuicConnected(conn) => {
                if let SessionTransport::Quic { conn: slot, .. } = transport {
                    *slot = Some(conn);
                }
                clock.connected(shared, handle);
                continue;
            }
            Incoming::DataChannel(dc) => {
                match control_channel(transport, dc, relays, relay_cancel).await {
                    Some(dc) => Stream::Channel(dc),
                    None => continue,
                }
            }
            Incoming::QuicStream(send, recv) => Stream::Quic(send, recv),
        };
        incoming_stream(shared, handle, connection, relays, relay_cancel, stream).await;
    }
}

/// The session's deadlines: connecting, idling and its maximum duration.
struct Deadlines {
    connect: Instant,
    max: Instant,
    connected: bool,
}

impl Deadlines {
    fn new(shared: &Shared, handle: &SessionHandle) -> Self {
        let started = handle.stats.started;
        Self {
            connect: started + shared.settings.sessions.connect_timeout,
            max: started + handle.meta.max_duration,
            connected: false,
        }
    }

    /// The client connected (the first time counts).
    fn connected(&mut self, shared: &Shared, handle: &SessionHandle) {
        if !self.connected {
            self.connected = true;
            mark_connected(shared, handle);
        }
    }

    /// When to look again.
    fn next(&self, handle: &SessionHandle) -> Instant {
        if self.connected {
            (handle.stats.last_activity() + handle.meta.idle_timeout).min(self.max)
        } else {
            self.connect.min(self.max)
        }
    }

    /// Why the session ends at `now`, if a deadline has passed.
    fn expired(&self, handle: &SessionHandle, now: Instant) -> Option<Ending> {
        if now >= self.max {
            return Some(Ending::new(EndReason::MaxDuration, None));
        }
        if !self.connected && now >= self.connect {
            return Some(Ending::new(EndReason::ConnectTimeout, Some(Origin::Client)));
        }
        if self.connected && now >= handle.stats.last_activity() + handle.meta.idle_timeout {
            return Some(Ending::new(EndReason::IdleTimeout, None));
        }
        None
    }
}

/// Keeps the first channel labelled as the control channel (it carries the end notice);
/// returns any other channel.
async fn control_channel(
    transport: &mut SessionTransport,
    dc: Arc<dyn DataChannel>,
    relays: &TaskTracker,
    relay_cancel: &CancellationToken,
) -> Option<Arc<dyn DataChannel>> {
    let SessionTransport::Webrtc {
        peer,
        control,
        control_closed,
    } = transport
    else {
        return None;
    };
    peer.kick.done();
    let is_control = dc.label().await.is_ok_and(|l| l == CONTROL_CHANNEL_LABEL);
    if !is_control || control.is_some() {
        return Some(dc);
    }
    // Held so the channel stays registered and carries the end notice; its events are
    // drained so its queue never fills. The client never closes it while it wants the
    // session: its close is the client's goodbye.
    *control = Some(dc.clone());
    let cancel = relay_cancel.clone();
    let closed = control_closed.clone();
    relays.spawn(async move {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = async {
                while let Some(event) = dc.poll().await {
                    if matches!(event, DataChannelEvent::OnClose) {
                        break;
                    }
                }
            } => closed.cancel(),
        }
    });
    None
}

/// A stream the client opened: the connection session's Guacamole channel, or a tunnelled
/// TCP connection if the session has room for one.
async fn incoming_stream(
    shared: &Arc<Shared>,
    handle: &Arc<SessionHandle>,
    connection: &mut ConnectionSlot,
    relays: &TaskTracker,
    relay_cancel: &CancellationToken,
    mut stream: Stream,
) {
    if connection.is_connection() {
        // A QUIC stream hears it is accepted; a data channel needs nothing.
        if stream.accept().await.is_ok() {
            start_connection(shared, handle, connection, relays, relay_cancel, stream);
        }
        return;
    }
    if let Some(conn_no) = admit(shared, handle) {
        let span = tracing::debug_span!("conn", n = conn_no);
        relays.spawn(
            relay_tunnel(
                shared.clone(),
                handle.clone(),
                stream,
                conn_no,
                relay_cancel.clone(),
            )
            .instrument(span),
        );
    } else {
        tokio::spawn(stream.refuse(
            TunnelErrorCode::TooManyConnections,
            "the session has as many connections open as it may".into(),
        ));
    }
}

/// Starts the session's Guacamole connection on its first channel; refuses later ones (a
/// connection session carries one conversation).
fn start_connection(
    shared: &Arc<Shared>,
    handle: &Arc<SessionHandle>,
    connection: &mut ConnectionSlot,
    relays: &TaskTracker,
    relay_cancel: &CancellationToken,
    stream: Stream,
) {
    let (reader, mut writer) = stream.split();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let Some(work) = connection.start(done_rx) else {
        refused(
            shared,
            handle,
            TunnelErrorCode::TooManyConnections,
            Origin::Client,
        );
        tokio::spawn(async move { writer.close().await });
        return;
    };
    let setup = match work {
        Work::Connection(setup) => *setup,
        Work::Viewer(setup) => {
            return start_viewer(
                shared,
                handle,
                relays,
                relay_cancel,
                setup,
                (reader, writer),
                done_tx,
            );
        }
        Work::Tunnel => return,
    };
    let Some(conn_no) = admit(shared, handle) else {
        return;
    };
    opened(shared, handle, conn_no);
    let mut settings = setup.settings;
    settings.session = handle.id.clone();
    let context = crate::connection::ConnectionContext {
        settings,
        protocol: handle.meta.protocol.clone(),
        resource_id: handle.meta.resource_id.clone().unwrap_or_default(),
        recording: setup.recording,
        services: crate::connection::Services {
            audit: shared.audit.clone(),
            metrics: shared.metrics.clone(),
            stats: handle.stats.clone(),
            recordings: handle.recordings.clone(),
        },
        cancel: relay_cancel.clone(),
        end_session: {
            let handle = handle.clone();
            Arc::new(move |reason| handle.end(reason))
        },
        share: handle.share.clone(),
    };
    let backend = setup.backend;
    let shared = shared.clone();
    let handle = handle.clone();
    let span = tracing::debug_span!("guacamole");
    relays.spawn(
        async move {
            let _slot = Slot {
                shared: &shared,
                handle: &handle,
            };
            let reason_of = handle.clone();
            let end = crate::connection::run(context, reader, writer, backend, move || {
                reason_of.reason()
            })
            .await;
            for summary in &end.recordings {
                let (status, error, events) = match &summary.result {
                    Ok(events) => ("finalised", None, *events),
                    Err(error) => ("failed", Some(error.clone()), 0),
                };
                shared.audit.emit(AuditEvent::RecordingEnded {
                    session: handle.id.clone(),
                    recording: summary.file_name.clone(),
                    status: status.into(),
                    error,
                    events,
                    dropped_events: summary.dropped_events,
                });
            }
            shared.audit.emit(AuditEvent::ConnectionClosed {
                session: handle.id.clone(),
                connection: conn_no,
                bytes_to_target: handle.stats.bytes_to_target.load(Ordering::Relaxed),
                bytes_to_client: handle.stats.bytes_to_client.load(Ordering::Relaxed),
            });
            let _ = done_tx.send(end);
        }
        .instrument(span),
    );
}

/// Runs a viewer's Guacamole connection on its session's first channel.
fn start_viewer(
    shared: &Arc<Shared>,
    handle: &Arc<SessionHandle>,
    relays: &TaskTracker,
    relay_cancel: &CancellationToken,
    setup: ViewerSetup,
    (reader, writer): (
        crate::transport::stream::StreamReader,
        crate::transport::stream::StreamWriter,
    ),
    done_tx: tokio::sync::oneshot::Sender<crate::connection::ConnectionEnd>,
) {
    let Some(of) = handle.viewer.clone() else {
        return;
    };
    let context = crate::connection::share::ViewerContext {
        session: of.session,
        viewer: handle.id.clone(),
        user: of.user,
        input: of.input,
        clipboard: of.clipboard,
        share: setup.share,
        audit: shared.audit.clone(),
        metrics: shared.metrics.clone(),
        stats: handle.stats.clone(),
        cancel: relay_cancel.clone(),
    };
    let reason_of = handle.clone();
    relays.spawn(
        async move {
            let end = crate::connection::share::run_viewer(context, reader, writer, move || {
                reason_of.reason()
            })
            .await;
            let _ = done_tx.send(crate::connection::ConnectionEnd {
                reason: end.reason,
                origin: end.origin,
                detail: end.detail,
                recordings: Vec::new(),
            });
        }
        .instrument(tracing::debug_span!("guacamole")),
    );
}

fn mark_connected(shared: &Shared, handle: &SessionHandle) {
    handle.state.store(STATE_CONNECTED, Ordering::Relaxed);
    let _ = handle.connected_at.set(crate::util::now_rfc3339());
    handle.stats.touch();
    tracing::info!("client connected");
    if handle.viewer.is_some() {
        return;
    }
    shared.audit.emit(AuditEvent::SessionConnected {
        session: handle.id.clone(),
    });
}
