//! Bodies of the local control API (DESIGN.md §3) and their validation.
//!
//! The gateway is trusted with one session's secrets at a time, but its requests are still
//! parsed as hostile input: the body size is bounded before parsing
//! ([`MAX_REQUEST_BYTES`]), unknown fields are rejected by name (a typo in a policy field
//! must not silently weaken a session), and every string has a length limit. Parsing
//! ([`parse_create_session`]) and validation ([`CreateSessionRequest::validate`]) are
//! separate steps: the first turns bytes into a typed request, the second into a
//! [`SessionSpec`] in which every invariant the proxy relies on holds.
//!
//! Error messages may quote the request back to the gateway that sent it, so they are
//! never logged; the proxy logs [`ApiError::code`] and [`ApiError::field`] only.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Secret;
use crate::protocol::{ConnectionParameters, Protocol};
use crate::seal::{self, SealKey, SignallingDirection};

/// Largest request body the control API reads, in bytes. An SDP offer with many candidates
/// is a few kilobytes; connection parameters may hold a private key.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Largest SDP offer accepted, in bytes.
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// Longest target host name (RFC 1035 §2.3.4).
pub const MAX_HOST_LEN: usize = 253;
/// Most connection parameters in one request.
pub const MAX_PARAMETERS: usize = 256;
/// Longest connection parameter name.
pub const MAX_PARAMETER_NAME_LEN: usize = 64;
/// Longest connection parameter value (a PEM private key fits easily).
pub const MAX_PARAMETER_VALUE_LEN: usize = 64 * 1024;
/// Longest free-form label (protocol, resource id, user).
pub const MAX_LABEL_LEN: usize = 256;
/// Most ICE candidates in one trickle request.
pub const MAX_CANDIDATES_PER_REQUEST: usize = 64;
/// Longest ICE candidate line.
pub const MAX_CANDIDATE_LEN: usize = 1024;

/// How the client reaches ztproxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A WebRTC peer connection; the request carries the client's SDP offer.
    Webrtc,
    /// QUIC directly to ztproxy's UDP endpoint, authenticated by a one-time token.
    Quic,
}

impl Transport {
    /// The wire name, as used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webrtc => "webrtc",
            Self::Quic => "quic",
        }
    }
}

/// What the session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conversation {
    /// Raw TCP port forwarding: one channel or stream per TCP connection.
    Tunnel,
    /// An interactive connection speaking the Guacamole protocol.
    Connection,
}

impl Conversation {
    /// The wire name, as used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tunnel => "tunnel",
            Self::Connection => "connection",
        }
    }
}

/// The kind of an SDP description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    /// An offer (client to ztproxy).
    Offer,
    /// An answer (ztproxy to client).
    Answer,
}

/// An SDP description in the shape `RTCSessionDescriptionInit` has in browsers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionDescription {
    /// Offer or answer.
    #[serde(rename = "type")]
    pub kind: SdpType,
    /// The SDP text.
    pub sdp: String,
}

/// The one target a session may reach. The client never chooses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Host name or IP address literal.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Keys for sealed signalling: the resource whose traffic secret seals offer and answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignallingRequest {
    /// Identifier of the resource (bound into the key derivation and the associated data).
    pub resource_id: String,
    /// The resource's traffic secret, base64 (standard or URL-safe alphabet).
    pub traffic_secret: Secret<String>,
}

/// How an interactive connection reaches its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// Through the external guacd ztproxy is configured with (RDP always goes this way;
    /// VNC, SSH and Telnet can). The default for RDP and VNC.
    Guacd,
    /// Through ztproxy's own protocol client. The default for SSH, Telnet and the database
    /// consoles (which only it serves).
    Native,
}

impl Route {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guacd => "guacd",
            Self::Native => "native",
        }
    }
}

/// Protocols an interactive connection can speak to its target (the names of
/// [`Protocol::ALL`]).
pub const CONNECTION_PROTOCOLS: &[&str] = &[
    "rdp",
    "vnc",
    "ssh",
    "telnet",
    "kubernetes",
    "http",
    "postgresql",
    "mysql",
    "sqlserver",
];

/// Parameters a session may not carry: the target is the session's `target`, and nothing
/// else may point the connection elsewhere.
pub const RESERVED_PARAMETERS: &[&str] = &["hostname", "port"];

/// Recordings to write for a session (DESIGN.md §5).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingRequest {
    /// Record what the user saw (the Guacamole instructions sent to the client).
    #[serde(default)]
    pub graphical: bool,
    /// Record terminal output as a typescript (terminal protocols only).
    #[serde(default)]
    pub typescript: bool,
    /// The resource secret the recording key is wrapped under, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_secret: Option<Secret<String>>,
    /// Further X25519 public keys (`ztproxy recording keygen x25519` format) to wrap the
    /// recording key to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// End the session when recording fails (default: the proxy's configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_closed: Option<bool>,
}

/// Per-session limits; each is capped by the proxy's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// End the session after this long without a byte in either direction ("15m").
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<Duration>,
    /// End the session this long after it was created, whatever it is doing ("8h").
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_duration: Option<Duration>,
    /// Most tunnelled TCP connections open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

/// Body of `POST /v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// WebRTC or QUIC.
    pub transport: Transport,
    /// Tunnel or connection.
    pub conversation: Conversation,
    /// Protocol label. For tunnels it is informative (`"tcp"` if absent, or e.g.
    /// `"postgresql"`); for connections it selects the protocol (`"ssh"`, `"rdp"`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The target this session, and only this session, reaches.
    pub target: Target,
    /// The client's SDP offer (WebRTC, unsealed signalling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<SessionDescription>,
    /// The client's sealed SDP offer (WebRTC, sealed signalling; see [`crate::seal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_offer: Option<String>,
    /// Keys for sealed signalling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signalling: Option<SignallingRequest>,
    /// Connection parameters in guacamole-server's kebab-case vocabulary (credentials and
    /// policy). Every value is treated as a secret until a protocol's settings parser has
    /// decided otherwise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Secret<String>>,
    /// Limits for this session.
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: LimitsRequest,
    /// How a connection reaches its target (default: `guacd` for RDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    /// Recordings to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingRequest>,
    /// The vault resource this session is for (audit only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The user this session is for (audit only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// What the proxy requires of every request, from its configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidationPolicy {
    /// Refuse WebRTC sessions whose offer is not sealed.
    pub require_sealed_signalling: bool,
}

/// A validated request to create a session.
#[derive(Debug)]
pub struct SessionSpec {
    /// WebRTC or QUIC.
    pub transport: Transport,
    /// Tunnel or connection.
    pub conversation: Conversation,
    /// Protocol label (`"tcp"` for a tunnel that named none).
    pub protocol: String,
    /// The only target of this session.
    pub target: Target,
    /// The client's SDP offer, unsealed if it arrived sealed (WebRTC only).
    pub offer_sdp: Option<String>,
    /// The key to seal the answer with, when the offer was sealed.
    pub answer_key: Option<SealKey>,
    /// Parameters of a tunnel (informative; a connection's are in
    /// [`connection`](Self::connection)).
    pub parameters: BTreeMap<String, Secret<String>>,
    /// A connection's protocol and its parameters, checked against it (`None` for tunnels).
    pub connection: Option<ConnectionParameters>,
    /// Requested limits, not yet capped by configuration.
    pub limits: LimitsRequest,
    /// How a connection reaches its target (`None` for tunnels).
    pub route: Option<Route>,
    /// Recordings to write.
    pub recording: Option<RecordingRequest>,
    /// Resource id for audit.
    pub resource_id: Option<String>,
    /// User for audit.
    pub user: Option<String>,
}

impl CreateSessionRequest {
    /// Checks every invariant and opens a sealed offer.
    pub fn validate(self, policy: ValidationPolicy) -> Result<SessionSpec, ApiError> {
        validate_host(&self.target.host)?;
        if self.target.port == 0 {
            return Err(ApiError::invalid_field("target.port", "port must not be 0"));
        }
        let protocol = match self.protocol {
            Some(protocol) => {
                validate_label("protocol", &protocol)?;
                if !protocol
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(ApiError::invalid_field(
                        "protocol",
                        "protocol must be letters, digits, '-' or '_'",
                    ));
                }
                protocol.to_ascii_lowercase()
            }
            None if self.conversation == Conversation::Tunnel => "tcp".to_owned(),
            None => {
                return Err(ApiError::new(
                    ErrorCode::MissingField,
                    "a connection needs a protocol",
                )
                .with_field("protocol"));
            }
        };
        if let Some(resource_id) = &self.resource_id {
            validate_label("resource_id", resource_id)?;
        }
        let route = match self.conversation {
            Conversation::Tunnel => {
                if self.route.is_some() {
                    return Err(ApiError::invalid_field(
                        "route",
                        "a tunnel has no route; it connects to its target directly",
                    ));
                }
                None
            }
            Conversation::Connection => {
                if Protocol::from_name(&protocol).is_none() {
                    return Err(ApiError::new(
                        ErrorCode::Unsupported,
                        format!(
                            "connections speak {}, not {protocol}",
                            CONNECTION_PROTOCOLS.join(", ")
                        ),
                    )
                    .with_field("protocol"));
                }
                // ztproxy is its own SSH, Telnet, Kubernetes, database and VNC client; RDP
                // goes through guacd.
                let route = self
                    .route
                    .unwrap_or_else(|| match Protocol::from_name(&protocol) {
                        Some(Protocol::Rdp) => Route::Guacd,
                        _ => Route::Native,
                    });
                if route == Route::Guacd
                    && Protocol::from_name(&protocol).is_some_and(|p| !p.served_by_guacd())
                {
                    return Err(ApiError::new(
                        ErrorCode::Unsupported,
                        format!("guacd has no {protocol} console; ask for route \"native\""),
                    )
                    .with_field("route"));
                }
                Some(route)
            }
        };
        for reserved in RESERVED_PARAMETERS {
            if self.parameters.contains_key(*reserved) {
                return Err(ApiError::invalid_field(
                    format!("parameters.{reserved}"),
                    "the session's target is the only place to set where it connects",
                ));
            }
        }
        if let Some(recording) = &self.recording {
            if recording.typescript && self.conversation == Conversation::Tunnel {
                return Err(ApiError::invalid_field(
                    "recording.typescript",
                    "tunnels carry raw TCP and cannot be recorded as a typescript",
                ));
            }
            if recording.graphical && self.conversation == Conversation::Tunnel {
                return Err(ApiError::invalid_field(
                    "recording.graphical",
                    "tunnels carry raw TCP and cannot be recorded graphically",
                ));
            }
            if (recording.graphical || recording.typescript)
                && recording.resource_secret.is_none()
                && recording.recipients.is_empty()
            {
                return Err(ApiError::new(
                    ErrorCode::MissingField,
                    "a recording needs a resource_secret or recipients to wrap its key to",
                )
                .with_field("recording.resource_secret"));
            }
            if recording.recipients.len() > 8 {
                return Err(ApiError::invalid_field(
                    "recording.recipients",
                    "at most 8 recipients",
                ));
            }
        }
        if let Some(user) = &self.user {
            validate_label("user", user)?;
        }
        validate_parameters(&self.parameters)?;
        let (parameters, connection) = match Protocol::from_name(&protocol) {
            Some(kind) if self.conversation == Conversation::Connection => (
                BTreeMap::new(),
                Some(ConnectionParameters::new(kind, self.parameters)?),
            ),
            _ => (self.parameters, None),
        };
        if self.limits.max_connections == Some(0) {
            return Err(ApiError::invalid_field(
                "limits.max_connections",
                "max_connections must be at least 1",
            ));
        }
        for (name, value) in [
            ("limits.idle_timeout", self.limits.idle_timeout),
            ("limits.max_duration", self.limits.max_duration),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(ApiError::invalid_field(name, "duration must not be zero"));
            }
        }

        let (offer_sdp, answer_key) = transport_offer(
            self.transport,
            self.offer,
            self.sealed_offer,
            self.signalling,
            policy,
        )?;

        Ok(SessionSpec {
            transport: self.transport,
            conversation: self.conversation,
            protocol,
            target: self.target,
            offer_sdp,
            answer_key,
            parameters,
            connection,
            limits: self.limits,
            route,
            recording: self.recording,
            resource_id: self.resource_id,
            user: self.user,
        })
    }
}

/// The offer of a request for `transport`: none for QUIC, an opened (and, as `policy` may
/// demand, sealed) SDP offer for WebRTC.
fn transport_offer(
    transport: Transport,
    offer: Option<SessionDescription>,
    sealed_offer: Option<String>,
    signalling: Option<SignallingRequest>,
    policy: ValidationPolicy,
) -> Result<(Option<String>, Option<SealKey>), ApiError> {
    match transport {
        Transport::Quic => {
            if offer.is_some() || sealed_offer.is_some() {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    "a QUIC session takes no SDP offer",
                )
                .with_field("offer"));
            }
            if signalling.is_some() {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    "a QUIC session takes no signalling keys",
                )
                .with_field("signalling"));
            }
            Ok((None, None))
        }
        Transport::Webrtc => {
            let (sdp, key) = open_offer(offer, sealed_offer, signalling)?;
            if policy.require_sealed_signalling && key.is_none() {
                return Err(ApiError::new(
                    ErrorCode::SealedSignallingRequired,
                    "this proxy only accepts sealed offers",
                )
                .with_field("offer"));
            }
            Ok((Some(sdp), key))
        }
    }
}

fn open_offer(
    offer: Option<SessionDescription>,
    sealed_offer: Option<String>,
    signalling: Option<SignallingRequest>,
) -> Result<(String, Option<SealKey>), ApiError> {
    match (offer, sealed_offer, signalling) {
        (Some(_), Some(_), _) => Err(ApiError::new(
            ErrorCode::InvalidField,
            "give either offer or sealed_offer, not both",
        )
        .with_field("sealed_offer")),
        (None, None, _) => Err(ApiError::new(
            ErrorCode::MissingField,
            "a WebRTC session needs an SDP offer",
        )
        .with_field("offer")),
        (Some(_), None, Some(_)) => Err(ApiError::new(
            ErrorCode::SealedSignallingRequired,
            "signalling keys were given, so the offer must be sealed",
        )
        .with_field("offer")),
        (None, Some(_), None) => Err(ApiError::new(
            ErrorCode::MissingField,
            "a sealed offer needs signalling keys",
        )
        .with_field("signalling")),
        (Some(offer), None, None) => {
            check_offer(&offer)?;
            Ok((offer.sdp, None))
        }
        (None, Some(sealed), Some(signalling)) => {
            validate_label("signalling.resource_id", &signalling.resource_id)?;
            let secret = seal::decode_traffic_secret(signalling.traffic_secret.expose_secret())
                .map_err(|e| {
                    ApiError::new(ErrorCode::InvalidField, e.to_string())
                        .with_field("signalling.traffic_secret")
                })?;
            let offer_key =
                SealKey::derive(&secret, &signalling.resource_id, SignallingDirection::Offer);
            let plaintext = offer_key.open(&sealed).map_err(|e| {
                ApiError::new(ErrorCode::SealedOfferRejected, e.to_string())
                    .with_field("sealed_offer")
            })?;
            let offer: SessionDescription = serde_json::from_slice(&plaintext).map_err(|_| {
                ApiError::new(
                    ErrorCode::SealedOfferRejected,
                    "sealed offer does not contain a session description",
                )
                .with_field("sealed_offer")
            })?;
            check_offer(&offer)?;
            let answer_key = SealKey::derive(
                &secret,
                &signalling.resource_id,
                SignallingDirection::Answer,
            );
            Ok((offer.sdp, Some(answer_key)))
        }
    }
}

fn check_offer(offer: &SessionDescription) -> Result<(), ApiError> {
    if offer.kind != SdpType::Offer {
        return Err(ApiError::invalid_field(
            "offer.type",
            "the client's description must be an offer",
        ));
    }
    if offer.sdp.len() > MAX_SDP_BYTES {
        return Err(ApiError::invalid_field(
            "offer.sdp",
            "SDP offer is too large",
        ));
    }
    if !offer.sdp.starts_with("v=0") {
        return Err(
            ApiError::new(ErrorCode::BadOffer, "SDP offer must start with v=0")
                .with_field("offer.sdp"),
        );
    }
    Ok(())
}

fn validate_host(host: &str) -> Result<(), ApiError> {
    const FIELD: &str = "target.host";
    if host.is_empty() {
        return Err(ApiError::invalid_field(FIELD, "host must not be empty"));
    }
    if host.len() > MAX_HOST_LEN {
        return Err(ApiError::invalid_field(FIELD, "host name is too long"));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let labels_ok = host.trim_end_matches('.').split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if labels_ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            FIELD,
            "host must be a DNS name or an IP address literal",
        ))
    }
}

fn validate_label(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_LABEL_LEN {
        return Err(ApiError::invalid_field(
            field,
            format!("must be 1 to {MAX_LABEL_LEN} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn validate_parameters(parameters: &BTreeMap<String, Secret<String>>) -> Result<(), ApiError> {
    if parameters.len() > MAX_PARAMETERS {
        return Err(ApiError::invalid_field(
            "parameters",
            format!("at most {MAX_PARAMETERS} parameters"),
        ));
    }
    for (name, value) in parameters {
        let name_ok = !name.is_empty()
            && name.len() <= MAX_PARAMETER_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(ApiError::invalid_field(
                "parameters",
                "parameter names are kebab-case: lowercase letters, digits and '-'",
            ));
        }
        if value.expose_secret().len() > MAX_PARAMETER_VALUE_LEN {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!("parameter value is longer than {MAX_PARAMETER_VALUE_LEN} bytes"),
            )
            .with_field(format!("parameters.{name}")));
        }
    }
    Ok(())
}

/// Body of `POST /v1/sessions/{id}/viewers`: a second user joins a running connection
/// session, on a transport of the viewer's own.
///
/// A viewer sees what the session's owner sees: first the current screen, then the live
/// output. It is read-only unless the gateway sets `input` (its keys and mouse then reach
/// the target as the owner's do); it receives the clipboard only with `clipboard`. Its
/// `size` never reaches the target: the owner's display size wins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateViewerRequest {
    /// WebRTC or QUIC.
    pub transport: Transport,
    /// The viewer's SDP offer (WebRTC, unsealed signalling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<SessionDescription>,
    /// The viewer's sealed SDP offer (WebRTC, sealed signalling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_offer: Option<String>,
    /// The keys sealing the offer and the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signalling: Option<SignallingRequest>,
    /// Who watches (audit, and the recording's notes).
    pub user: String,
    /// Whether the viewer's keys and mouse reach the target (default: read-only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub input: bool,
    /// Whether the viewer receives the clipboard the target sets (default: no).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clipboard: bool,
}

/// A validated [`CreateViewerRequest`].
#[derive(Debug)]
pub struct ViewerSpec {
    /// WebRTC or QUIC.
    pub transport: Transport,
    /// The SDP offer, unsealed (WebRTC only).
    pub offer_sdp: Option<String>,
    /// The key to seal the answer with, when the offer was sealed.
    pub answer_key: Option<SealKey>,
    /// Who watches.
    pub user: String,
    /// Whether the viewer's input reaches the target.
    pub input: bool,
    /// Whether the viewer receives the clipboard.
    pub clipboard: bool,
}

impl CreateViewerRequest {
    /// Checks the request and opens a sealed offer.
    pub fn validate(self, policy: ValidationPolicy) -> Result<ViewerSpec, ApiError> {
        validate_label("user", &self.user)?;
        let (offer_sdp, answer_key) = transport_offer(
            self.transport,
            self.offer,
            self.sealed_offer,
            self.signalling,
            policy,
        )?;
        Ok(ViewerSpec {
            transport: self.transport,
            offer_sdp,
            answer_key,
            user: self.user,
            input: self.input,
            clipboard: self.clipboard,
        })
    }
}

/// Parses the body of `POST /v1/sessions/{id}/viewers`.
pub fn parse_create_viewer(body: &[u8]) -> Result<CreateViewerRequest, ApiError> {
    parse_body(body)
}

/// One viewer of a session, as `GET /v1/sessions/{id}/viewers` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewerInfo {
    /// The viewer's id (its own transport's session id).
    pub id: String,
    /// The session it watches.
    pub session: String,
    /// Who watches.
    pub user: String,
    /// Whether its input reaches the target.
    pub input: bool,
    /// Whether it receives the clipboard.
    pub clipboard: bool,
    /// Pending until the viewer's client connects.
    pub state: SessionState,
    /// Transport.
    pub transport: Transport,
    /// Creation time (RFC 3339, UTC).
    pub created_at: String,
    /// When the viewer's client connected (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<String>,
    /// Bytes sent to the viewer.
    pub bytes_to_client: u64,
}

/// Response to `GET /v1/sessions/{id}/viewers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewerList {
    /// The session's viewers, oldest first.
    pub viewers: Vec<ViewerInfo>,
}

/// Parses the body of `POST /v1/sessions`.
pub fn parse_create_session(body: &[u8]) -> Result<CreateSessionRequest, ApiError> {
    parse_body(body)
}

/// Body of `POST /v1/sessions/{id}/candidates`: trickled ICE candidates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidatesRequest {
    /// Candidates in the shape of `RTCIceCandidateInit`. An empty `candidate` string marks
    /// the end of candidates.
    pub candidates: Vec<IceCandidate>,
}

/// One trickled ICE candidate, as a browser's `RTCIceCandidate.toJSON()` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IceCandidate {
    /// The `candidate:` attribute line.
    pub candidate: String,
    /// The media section id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The media section index.
    #[serde(
        default,
        rename = "sdpMLineIndex",
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_m_line_index: Option<u16>,
    /// The ICE username fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// Parses and checks the body of `POST /v1/sessions/{id}/candidates`.
pub fn parse_candidates(body: &[u8]) -> Result<CandidatesRequest, ApiError> {
    let request: CandidatesRequest = parse_body(body)?;
    if request.candidates.len() > MAX_CANDIDATES_PER_REQUEST {
        return Err(ApiError::invalid_field(
            "candidates",
            format!("at most {MAX_CANDIDATES_PER_REQUEST} candidates per request"),
        ));
    }
    for candidate in &request.candidates {
        let line = &candidate.candidate;
        if line.len() > MAX_CANDIDATE_LEN || line.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                "candidates.candidate",
                "candidate line is too long or contains control characters",
            ));
        }
        if !line.is_empty() && !line.starts_with("candidate:") {
            return Err(ApiError::invalid_field(
                "candidates.candidate",
                "candidate line must start with `candidate:`",
            ));
        }
        for (field, value) in [
            ("candidates.sdpMid", &candidate.sdp_mid),
            ("candidates.usernameFragment", &candidate.username_fragment),
        ] {
            if let Some(value) = value
                && (value.len() > MAX_LABEL_LEN || value.chars().any(char::is_control))
            {
                return Err(ApiError::invalid_field(field, "value is not acceptable"));
            }
        }
    }
    Ok(request)
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("request body is larger than {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "request body must be a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(json_error)?;
    deserializer.end().map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("request body has trailing data: {e}"),
        )
    })?;
    Ok(value)
}

fn json_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    let message = inner.to_string();
    match inner.classify() {
        serde_json::error::Category::Io
        | serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof => ApiError::new(
            ErrorCode::InvalidJson,
            format!("request body is not valid JSON: {message}"),
        ),
        serde_json::error::Category::Data => {
            if let Some(name) = quoted_name(&message, "unknown field `") {
                let field = join_path(&path, name);
                ApiError::new(ErrorCode::UnknownField, format!("unknown field `{field}`"))
                    .with_field(field)
            } else if let Some(name) = quoted_name(&message, "missing field `") {
                let field = join_path(&path, name);
                ApiError::new(ErrorCode::MissingField, format!("missing field `{field}`"))
                    .with_field(field)
            } else {
                let field = if path == "." { String::new() } else { path };
                let error = ApiError::new(
                    ErrorCode::InvalidField,
                    if field.is_empty() {
                        message
                    } else {
                        format!("{field}: {message}")
                    },
                );
                if field.is_empty() {
                    error
                } else {
                    error.with_field(field)
                }
            }
        }
    }
}

/// `serde_path_to_error` reports the path of the struct holding an unknown or missing
/// field; the field's own name is in the message.
fn join_path(path: &str, name: &str) -> String {
    if path == name || path.ends_with(&format!(".{name}")) {
        path.to_owned()
    } else if path.is_empty() || path == "." {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn quoted_name<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    rest.get(..end)
}

/// Response to `POST /v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionResponse {
    /// The new session's id.
    pub id: String,
    /// The transport the session uses.
    pub transport: Transport,
    /// ztproxy's SDP answer (WebRTC, unsealed signalling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<SessionDescription>,
    /// ztproxy's sealed SDP answer (WebRTC, sealed signalling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_answer: Option<String>,
    /// Where and how to connect (QUIC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic: Option<QuicEndpoint>,
}

/// How a QUIC client reaches and authenticates to ztproxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicEndpoint {
    /// `host:port` of ztproxy's QUIC endpoint.
    pub endpoint: String,
    /// The TLS server name to send.
    pub server_name: String,
    /// SHA-256 of ztproxy's certificate (DER), lowercase hex; the client pins it.
    pub cert_sha256: String,
    /// One-time token, base64url; valid for one QUIC connection.
    pub token: Secret<String>,
}

/// Lifecycle state of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Created; waiting for the client to connect.
    Pending,
    /// The client is connected.
    Connected,
    /// Ending: connections are being closed.
    Ending,
}

/// One session, as `GET /v1/sessions` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionInfo {
    /// Session id.
    pub id: String,
    /// Current state.
    pub state: SessionState,
    /// Transport.
    pub transport: Transport,
    /// Conversation.
    pub conversation: Conversation,
    /// Protocol label.
    pub protocol: String,
    /// The target.
    pub target: Target,
    /// Resource id, if the gateway gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Creation time (RFC 3339, UTC).
    pub created_at: String,
    /// When the client connected (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<String>,
    /// Bytes sent to the target.
    pub bytes_to_target: u64,
    /// Bytes sent to the client.
    pub bytes_to_client: u64,
    /// Tunnelled connections open now.
    pub connections_active: u64,
    /// Tunnelled connections opened so far.
    pub connections_total: u64,
    /// Effective idle timeout, seconds.
    pub idle_timeout_secs: u64,
    /// Effective maximum duration, seconds.
    pub max_duration_secs: u64,
    /// Recordings being written for this session.
    #[serde(default)]
    pub recordings: Vec<String>,
}

/// Response to `GET /v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionList {
    /// Every live session.
    pub sessions: Vec<SessionInfo>,
}

/// Response to `DELETE /v1/sessions/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndedSession {
    /// Session id.
    pub id: String,
    /// Why it ended.
    pub reason: EndReason,
    /// Bytes sent to the target over the session's life.
    pub bytes_to_target: u64,
    /// Bytes sent to the client over the session's life.
    pub bytes_to_client: u64,
    /// Session duration in milliseconds.
    pub duration_ms: u64,
}

/// Response to `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Always `"ok"` when the daemon answers.
    pub status: String,
    /// Live sessions.
    pub sessions: u64,
    /// ztproxy version.
    pub version: String,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The gateway revoked it (`DELETE /v1/sessions/{id}`).
    Revoked,
    /// No byte moved for the idle timeout.
    IdleTimeout,
    /// The maximum duration elapsed.
    MaxDuration,
    /// The client never connected.
    ConnectTimeout,
    /// The client closed or lost its connection.
    ClientClosed,
    /// The target ended the conversation.
    TargetClosed,
    /// ztproxy is shutting down.
    Shutdown,
    /// An error ended it; see the audit event's `origin`.
    Error,
    /// Recording failed and policy says to fail closed.
    RecordingFailed,
}

impl EndReason {
    /// The wire name, as used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::IdleTimeout => "idle_timeout",
            Self::MaxDuration => "max_duration",
            Self::ConnectTimeout => "connect_timeout",
            Self::ClientClosed => "client_closed",
            Self::TargetClosed => "target_closed",
            Self::Shutdown => "shutdown",
            Self::Error => "error",
            Self::RecordingFailed => "recording_failed",
        }
    }
}

/// Which party caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The user's client.
    Client,
    /// The target system.
    Target,
    /// ztproxy itself (configuration, resources, a bug).
    Local,
}

impl Origin {
    /// The wire name, as used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Target => "target",
            Self::Local => "local",
        }
    }
}

/// Error codes of the control API. Stable: the gateway branches on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not JSON.
    InvalidJson,
    /// The body has a field this API does not know.
    UnknownField,
    /// A required field is missing.
    MissingField,
    /// A field has a value this API does not accept.
    InvalidField,
    /// The body is larger than [`MAX_REQUEST_BYTES`].
    BodyTooLarge,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// No or wrong bearer token.
    Unauthorized,
    /// No such session, or no such route.
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The SDP offer could not be applied.
    BadOffer,
    /// A candidate could not be applied.
    BadCandidate,
    /// The offer is unsealed but must be sealed.
    SealedSignallingRequired,
    /// The sealed offer did not open: wrong key, tampered, or not a sealed offer.
    SealedOfferRejected,
    /// The request is valid but this proxy does not offer it (transport disabled,
    /// conversation not available).
    Unsupported,
    /// The session limit is reached.
    TooManySessions,
    /// The session is not in a state that allows the request.
    Conflict,
    /// Something failed inside ztproxy.
    Internal,
    /// The request target (path and query) is longer than the API accepts.
    UriTooLong,
    /// The request's headers are larger than the API accepts.
    HeadersTooLarge,
    /// The path is not valid percent-encoded UTF-8.
    InvalidPath,
    /// The request body did not arrive in time.
    RequestTimeout,
}

impl ErrorCode {
    /// The HTTP status this code is sent with.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidJson
            | Self::UnknownField
            | Self::MissingField
            | Self::InvalidField
            | Self::BadOffer
            | Self::BadCandidate
            | Self::SealedSignallingRequired
            | Self::SealedOfferRejected
            | Self::InvalidPath => 400,
            Self::Unauthorized => 401,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::Conflict => 409,
            Self::BodyTooLarge => 413,
            Self::UriTooLong => 414,
            Self::UnsupportedMediaType => 415,
            Self::Unsupported => 422,
            Self::HeadersTooLarge => 431,
            Self::TooManySessions => 503,
            Self::Internal => 500,
        }
    }

    /// The wire name, as used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::UnknownField => "unknown_field",
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::BodyTooLarge => "body_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BadOffer => "bad_offer",
            Self::BadCandidate => "bad_candidate",
            Self::SealedSignallingRequired => "sealed_signalling_required",
            Self::SealedOfferRejected => "sealed_offer_rejected",
            Self::Unsupported => "unsupported",
            Self::TooManySessions => "too_many_sessions",
            Self::Conflict => "conflict",
            Self::Internal => "internal",
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "headers_too_large",
            Self::InvalidPath => "invalid_path",
            Self::RequestTimeout => "request_timeout",
        }
    }
}

/// An error answer of the control API: `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people. May quote the request; never logged.
    pub message: String,
    /// The offending field, dotted path (`limits.idle_timeout`), when there is one.
    pub field: Option<String>,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// An [`ErrorCode::InvalidField`] error about `field`.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidField, message).with_field(field)
    }

    /// Names the offending field.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The HTTP status to send.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The response body.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
                field: self.field.clone(),
            },
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// The JSON body of an error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable error code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Offending field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

mod opt_duration {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_str(&humantime::format_duration(*d).to_string()),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() > 64 {
            return Err(serde::de::Error::custom("duration is too long"));
        }
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("not a duration like \"15m\": {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel_json(extra: &str) -> String {
        format!(
            r#"{{"transport":"quic","conversation":"tunnel","target":{{"host":"127.0.0.1","port":5432}}{extra}}}"#
        )
    }

    #[test]
    fn parses_minimal_quic_tunnel() {
        let request = parse_create_session(tunnel_json("").as_bytes()).unwrap();
        let spec = request.validate(ValidationPolicy::default()).unwrap();
        assert_eq!(spec.transport, Transport::Quic);
        assert_eq!(spec.protocol, "tcp");
        assert_eq!(spec.target.to_string(), "127.0.0.1:5432");
    }

    #[test]
    fn names_unknown_top_level_field() {
        let err = parse_create_session(tunnel_json(r#","color":"red""#).as_bytes()).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownField);
        assert_eq!(err.field.as_deref(), Some("color"));
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn names_unknown_nested_field() {
        let err = parse_create_session(
            tunnel_json(r#","limits":{"idle_timeout":"5m","idle_timout":"5m"}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownField);
        assert_eq!(err.field.as_deref(), Some("limits.idle_timout"));
    }

    #[test]
    fn names_missing_field() {
        let err =
            parse_create_session(br#"{"transport":"quic","conversation":"tunnel"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::MissingField);
        assert_eq!(err.field.as_deref(), Some("target"));
    }

    #[test]
    fn rejects_bad_values_with_their_path() {
        let err = parse_create_session(
            br#"{"transport":"carrier-pigeon","conversation":"tunnel","target":{"host":"h","port":1}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidField);
        assert_eq!(err.field.as_deref(), Some("transport"));

        let err = parse_create_session(
            br#"{"transport":"quic","conversation":"tunnel","target":{"host":"h","port":70000}}"#,
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("target.port"));
    }

    #[test]
    fn rejects_malformed_and_oversized_bodies() {
        assert_eq!(
            parse_create_session(b"{\"transport\":").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        assert_eq!(
            parse_create_session(b"").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        assert_eq!(
            parse_create_session(b"[1,2,3]").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert_eq!(
            parse_create_session(&big).unwrap_err().code,
            ErrorCode::BodyTooLarge
        );
        let trailing = format!("{} x", tunnel_json(""));
        assert_eq!(
            parse_create_session(trailing.as_bytes()).unwrap_err().code,
            ErrorCode::InvalidJson
        );
    }

    #[test]
    fn validates_targets() {
        for (host, ok) in [
            ("db.internal.example", true),
            ("::1", true),
            ("10.0.0.1", true),
            ("", false),
            ("bad host", false),
            ("-lead.example", false),
            ("a..b", false),
        ] {
            let body = format!(
                r#"{{"transport":"quic","conversation":"tunnel","target":{{"host":"{host}","port":22}}}}"#
            );
            let result = parse_create_session(body.as_bytes())
                .unwrap()
                .validate(ValidationPolicy::default());
            assert_eq!(result.is_ok(), ok, "{host}");
        }
    }

    #[test]
    fn webrtc_needs_an_offer_and_quic_refuses_one() {
        let body =
            r#"{"transport":"webrtc","conversation":"tunnel","target":{"host":"h","port":1}}"#;
        let err = parse_create_session(body.as_bytes())
            .unwrap()
            .validate(ValidationPolicy::default())
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::MissingField);
        assert_eq!(err.field.as_deref(), Some("offer"));

        let body = tunnel_json(r#","offer":{"type":"offer","sdp":"v=0\r\n"}"#);
        let err = parse_create_session(body.as_bytes())
            .unwrap()
            .validate(ValidationPolicy::default())
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidField);
    }

    #[test]
    fn policy_can_require_sealed_offers() {
        let body = r#"{"transport":"webrtc","conversation":"tunnel","target":{"host":"h","port":1},"offer":{"type":"offer","sdp":"v=0\r\n"}}"#;
        let request = parse_create_session(body.as_bytes()).unwrap();
        let err = request
            .validate(ValidationPolicy {
                require_sealed_signalling: true,
            })
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::SealedSignallingRequired);
    }

    #[test]
    fn secrets_in_parameters_stay_out_of_debug() {
        let body = tunnel_json(r#","parameters":{"password":"hunter2"}"#);
        let request = parse_create_session(body.as_bytes()).unwrap();
        assert!(!format!("{request:?}").contains("hunter2"));
    }

    #[test]
    fn parameter_names_are_checked() {
        let body = tunnel_json(r#","parameters":{"Pass Word":"x"}"#);
        let err = parse_create_session(body.as_bytes())
            .unwrap()
            .validate(ValidationPolicy::default())
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("parameters"));
    }

    #[test]
    fn durations_parse_and_round_trip() {
        let body = tunnel_json(r#","limits":{"idle_timeout":"90s","max_duration":"2h"}"#);
        let request = parse_create_session(body.as_bytes()).unwrap();
        assert_eq!(request.limits.idle_timeout, Some(Duration::from_secs(90)));
        let json = serde_json::to_string(&request).unwrap();
        let again = parse_create_session(json.as_bytes()).unwrap();
        assert_eq!(again.limits, request.limits);

        let err =
            parse_create_session(tunnel_json(r#","limits":{"idle_timeout":"soon"}"#).as_bytes())
                .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("limits.idle_timeout"));
    }

    #[test]
    fn candidates_are_bounded() {
        let ok = br#"{"candidates":[{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}]}"#;
        assert_eq!(parse_candidates(ok).unwrap().candidates.len(), 1);
        let bad = br#"{"candidates":[{"candidate":"a=evil"}]}"#;
        assert_eq!(
            parse_candidates(bad).unwrap_err().code,
            ErrorCode::InvalidField
        );
        let many = format!(
            r#"{{"candidates":[{}]}}"#,
            vec![r#"{"candidate":""}"#; MAX_CANDIDATES_PER_REQUEST + 1].join(",")
        );
        assert_eq!(
            parse_candidates(many.as_bytes()).unwrap_err().code,
            ErrorCode::InvalidField
        );
    }
}
