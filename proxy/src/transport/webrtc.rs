//! WebRTC peer connections (webrtc-rs 0.21) for both ends of a session.
//!
//! ztproxy *answers*: the client's offer arrives through the control API, ztproxy builds a
//! peer connection, gathers its host candidates (and server-reflexive or relayed ones when
//! STUN/TURN servers are configured), and returns an answer that already contains them, so a
//! client that does not trickle still connects. Trickled client candidates are applied with
//! [`add_candidates`].
//!
//! The `connect` CLI, the benchmarks and the tests use the same builder as the *offerer*
//! ([`Peer::offer`]).
//!
//! Events from the stack's driver ([`PeerEvent`]) are forwarded over a bounded channel to
//! the one task that owns the session; the callbacks never wait, because they run on the
//! driver that also keeps ICE consent and SCTP timers going.
//!
//! # Browsers as peers
//!
//! A browser is a lossy receiver: Chromium reads its UDP socket through a 128 KiB buffer,
//! and on a fast path ztproxy's bursts overflow it (100–250 datagrams lost per 64 MiB on
//! loopback). The SCTP under webrtc-rs recovered from that badly — it stalled for good after
//! five retransmission timeouts, resent whole windows at once, never fast-retransmitted a
//! chunk twice lost, and lost stream resets, leaving channels `closing` for ever. ztproxy
//! carries it with fixes (`vendor/rtc-sctp`, written up for upstream in its `ZTPROXY.md`).
//!
//! When a client closes its peer connection (SCTP ABORT or SHUTDOWN, DTLS close_notify)
//! webrtc-rs closes every data channel but keeps the connection's state `connected` until
//! ICE consent fails; the session task therefore takes the close of the client's control
//! channel as the client's goodbye. A client that vanishes is noticed by ICE consent
//! ([`IceLiveness`]). Browsers offer only `.local` host candidates; ztproxy reaches them
//! through the peer-reflexive pair their checks create, so mDNS stays off unless configured
//! ([`PeerSettings::multicast_dns`]) and no multicast socket is opened.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState,
    RTCSessionDescription, SettingEngineBuilder,
};
use zt_api::control::IceCandidate;

use crate::config::IceServerConfig;
use crate::transport::runtime::{SetupKick, ZtRuntime};

/// Data channels the driver may announce before the session task has taken them. A client
/// that opens channels faster than this is refused the excess (each refused channel is
/// closed), which keeps a flood from growing memory.
pub const PEER_EVENT_CAPACITY: usize = 256;
/// Label of the control channel a tunnel client opens with its offer (an SDP offer needs at
/// least one data channel). It carries no payload and never reaches a target.
pub const CONTROL_CHANNEL_LABEL: &str = "ztproxy-control";

/// What the peer-connection builder needs to know.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// Local UDP addresses to bind.
    pub udp_addrs: Vec<String>,
    /// STUN and TURN servers.
    pub ice_servers: Vec<IceServerConfig>,
    /// SO_RCVBUF / SO_SNDBUF of every socket.
    pub socket_buffer_bytes: usize,
    /// SCTP MTU override.
    pub sctp_mtu: Option<u32>,
    /// How long to wait for candidate gathering.
    pub gather_timeout: Duration,
    /// Per-channel limit of unacknowledged bytes; `send` waits above it.
    pub send_buffer_limit: usize,
    /// How the peer connection notices that the other end is gone.
    pub liveness: IceLiveness,
    /// Answer and query mDNS (`.local`) candidates; off unless configured, so no multicast
    /// socket is opened.
    pub multicast_dns: bool,
}

/// ICE consent timers: with nothing heard for `disconnected`, the connection is
/// disconnected; `failed` later it has failed and the session ends. Keep-alives every
/// `keep_alive` keep an idle but live connection from either.
#[derive(Debug, Clone, Copy)]
pub struct IceLiveness {
    /// Silence before `disconnected`.
    pub disconnected: Duration,
    /// Further silence before `failed`.
    pub failed: Duration,
    /// Keep-alive interval.
    pub keep_alive: Duration,
}

impl Default for IceLiveness {
    /// A dead peer is noticed within 5 s.
    fn default() -> Self {
        Self {
            disconnected: Duration::from_secs(2),
            failed: Duration::from_secs(3),
            keep_alive: Duration::from_millis(500),
        }
    }
}

impl PeerSettings {
    /// Settings for loopback use (the CLI's default, tests, benchmarks).
    pub fn loopback() -> Self {
        Self {
            udp_addrs: vec!["127.0.0.1:0".to_owned()],
            ice_servers: Vec::new(),
            socket_buffer_bytes: 4 * 1024 * 1024,
            sctp_mtu: None,
            gather_timeout: Duration::from_secs(2),
            send_buffer_limit: 1024 * 1024,
            liveness: IceLiveness::default(),
            multicast_dns: false,
        }
    }
}

/// A state change or a new data channel, from the driver.
pub enum PeerEvent {
    /// DTLS is up: the peer connection is connected.
    Connected,
    /// Connectivity was lost; ICE may still recover.
    Disconnected,
    /// ICE or DTLS failed for good.
    Failed,
    /// The peer connection closed.
    Closed,
    /// The remote side opened a data channel (it is open).
    DataChannel(Arc<dyn DataChannel>),
}

impl std::fmt::Debug for PeerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connected => f.write_str("Connected"),
            Self::Disconnected => f.write_str("Disconnected"),
            Self::Failed => f.write_str("Failed"),
            Self::Closed => f.write_str("Closed"),
            Self::DataChannel(dc) => write!(f, "DataChannel({})", dc.id()),
        }
    }
}

/// Why an offer could not be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The offer is not acceptable SDP (client's fault). The message is for the caller only.
    #[error("SDP offer could not be applied: {0}")]
    BadOffer(String),
    /// The local stack failed.
    #[error("WebRTC stack error: {0}")]
    Local(String),
}

/// A peer connection and the receiving end of its events.
pub struct Peer {
    /// The connection.
    pub pc: Arc<dyn PeerConnection>,
    /// Events for the owner.
    pub events: mpsc::Receiver<PeerEvent>,
    /// Ends the set-up phase (see [`crate::transport::runtime`]).
    pub kick: SetupKick,
    gathered: watch::Receiver<bool>,
}

struct Handler {
    events: mpsc::Sender<PeerEvent>,
    gathered: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let event = match state {
            RTCPeerConnectionState::Connected => PeerEvent::Connected,
            RTCPeerConnectionState::Disconnected => PeerEvent::Disconnected,
            RTCPeerConnectionState::Failed => PeerEvent::Failed,
            RTCPeerConnectionState::Closed => PeerEvent::Closed,
            _ => return,
        };
        // State changes are few; a full queue means the owner is gone or far behind, and a
        // failure it misses is caught by its connect and idle timers.
        let _ = self.events.try_send(event);
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        if let Err(mpsc::error::TrySendError::Full(PeerEvent::DataChannel(dc))) =
            self.events.try_send(PeerEvent::DataChannel(data_channel))
        {
            // Closing takes the core lock the driver may need; do it off the driver.
            tokio::spawn(async move {
                let _ = dc.close().await;
            });
        }
    }
}

impl Peer {
    /// Builds a peer connection with ztproxy's runtime and settings.
    pub async fn build(settings: &PeerSettings) -> Result<Self, webrtc::error::Error> {
        let turn = settings
            .ice_servers
            .iter()
            .any(|server| server.urls.iter().any(|url| url.starts_with("turn")));
        let (runtime, kick) = ZtRuntime::new(settings.socket_buffer_bytes, turn);
        let (events_tx, events) = mpsc::channel(PEER_EVENT_CAPACITY);
        let (gathered_tx, gathered) = watch::channel(false);

        let mdns = if settings.multicast_dns {
            rtc_ice::mdns::MulticastDnsMode::QueryOnly
        } else {
            rtc_ice::mdns::MulticastDnsMode::Disabled
        };
        let mut engine = SettingEngineBuilder::new()
            .with_include_loopback_candidate(true)
            .with_multicast_dns_mode(mdns)
            .with_ice_timeouts(
                Some(settings.liveness.disconnected),
                Some(settings.liveness.failed),
                Some(settings.liveness.keep_alive),
            );
        if let Some(mtu) = settings.sctp_mtu {
            engine = engine.with_sctp_mtu(mtu);
        }
        let ice_servers = settings
            .ice_servers
            .iter()
            .map(|server| RTCIceServer {
                urls: server.urls.clone(),
                username: server.username.clone().unwrap_or_default(),
                credential: server
                    .credential
                    .as_ref()
                    .map(|c| c.expose_secret().clone())
                    .unwrap_or_default(),
            })
            .collect();
        let configuration = RTCConfigurationBuilder::new()
            .with_ice_servers(ice_servers)
            .build();

        let pc = PeerConnectionBuilder::new()
            .with_configuration(configuration)
            .with_setting_engine(engine.build())
            .with_runtime(runtime)
            .with_handler(Arc::new(Handler {
                events: events_tx,
                gathered: gathered_tx,
            }))
            .with_udp_addrs(settings.udp_addrs.clone())
            .with_data_channel_send_buffer_limit(settings.send_buffer_limit)
            .build()
            .await?;
        Ok(Self {
            pc: Arc::new(pc),
            events,
            kick,
            gathered,
        })
    }

    /// Answers `offer_sdp` (ztproxy's side). Returns the peer and the answer SDP, which holds
    /// every candidate gathered within the gathering timeout.
    pub async fn answer(
        settings: &PeerSettings,
        offer_sdp: String,
    ) -> Result<(Self, String), AnswerError> {
        if !offer_sdp.contains("m=application") {
            return Err(AnswerError::BadOffer(
                "the offer has no data channel (m=application) section".into(),
            ));
        }
        let mut peer = Self::build(settings)
            .await
            .map_err(|e| AnswerError::Local(e.to_string()))?;
        let result = async {
            let offer = RTCSessionDescription::offer(offer_sdp)
                .map_err(|e| AnswerError::BadOffer(e.to_string()))?;
            peer.pc
                .set_remote_description(offer)
                .await
                .map_err(|e| AnswerError::BadOffer(e.to_string()))?;
            let answer = peer
                .pc
                .create_answer(None)
                .await
                .map_err(|e| AnswerError::BadOffer(e.to_string()))?;
            peer.pc
                .set_local_description(answer)
                .await
                .map_err(|e| AnswerError::Local(e.to_string()))?;
            peer.wait_gathered(settings.gather_timeout).await;
            peer.pc
                .local_description()
                .await
                .map(|d| d.sdp)
                .ok_or_else(|| AnswerError::Local("no local description".into()))
        }
        .await;
        match result {
            Ok(sdp) => Ok((peer, sdp)),
            Err(e) => {
                let _ = peer.pc.close().await;
                Err(e)
            }
        }
    }

    /// Creates the offer (client side), after the caller has created at least one data
    /// channel. Returns the offer SDP with every candidate gathered.
    pub async fn offer(
        &mut self,
        gather_timeout: Duration,
    ) -> Result<String, webrtc::error::Error> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        self.wait_gathered(gather_timeout).await;
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or(webrtc::error::Error::ErrNoRemoteDescription)
    }

    /// Applies ztproxy's answer (client side).
    pub async fn accept_answer(&self, answer_sdp: String) -> Result<(), webrtc::error::Error> {
        let answer = RTCSessionDescription::answer(answer_sdp)?;
        self.pc.set_remote_description(answer).await
    }

    async fn wait_gathered(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.gathered.wait_for(|done| *done)).await;
    }
}

/// Applies trickled candidates to `pc`.
pub async fn add_candidates(
    pc: &Arc<dyn PeerConnection>,
    candidates: Vec<IceCandidate>,
) -> Result<(), String> {
    for candidate in candidates {
        if candidate.candidate.is_empty() {
            // End of candidates: nothing to apply.
            continue;
        }
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_m_line_index,
            username_fragment: candidate.username_fragment,
            ..Default::default()
        };
        pc.add_ice_candidate(init)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
