//! Typed audit events: what ztproxy reports to the gateway on `GET /v1/events`.
//!
//! Audit is not logging. Each security-relevant fact is one [`AuditEvent`], numbered and
//! timestamped in an [`AuditRecord`], and streamed as one JSON object per line. Events never
//! carry credentials, keystrokes or clipboard contents; they carry sizes and digests.

use serde::{Deserialize, Serialize};

use crate::control::{Conversation, EndReason, Origin, Target, Transport};
use crate::tunnel::TunnelErrorCode;

/// One audit event with its sequence number and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in this daemon's event sequence, from 1, without gaps.
    pub seq: u64,
    /// When it happened (RFC 3339, UTC, microseconds).
    pub time: String,
    /// What happened.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// A security-relevant fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// A session was created through the control API.
    SessionCreated {
        /// Session id.
        session: String,
        /// Transport.
        transport: Transport,
        /// Conversation.
        conversation: Conversation,
        /// Protocol label.
        protocol: String,
        /// The session's target.
        target: Target,
        /// Resource id, if given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource_id: Option<String>,
        /// User, if given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// The client connected (peer connection up, or first QUIC connection authenticated).
    SessionConnected {
        /// Session id.
        session: String,
    },
    /// The session ended.
    SessionEnded {
        /// Session id.
        session: String,
        /// Why.
        reason: EndReason,
        /// Who caused it, when an error ended it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Origin>,
        /// A short, secret-free detail (an error kind, a status code).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Bytes sent to the target.
        bytes_to_target: u64,
        /// Bytes sent to the client.
        bytes_to_client: u64,
        /// Tunnelled connections over the session's life.
        connections_total: u64,
        /// Connections refused over the session's life (limits, unreachable target).
        #[serde(default)]
        connections_refused: u64,
        /// How long the session lived, in milliseconds.
        duration_ms: u64,
    },
    /// A tunnelled connection reached the target.
    ConnectionOpened {
        /// Session id.
        session: String,
        /// Connection number within the session, from 1.
        connection: u64,
    },
    /// A tunnelled connection closed.
    ConnectionClosed {
        /// Session id.
        session: String,
        /// Connection number within the session.
        connection: u64,
        /// Bytes sent to the target over this connection.
        bytes_to_target: u64,
        /// Bytes sent to the client over this connection.
        bytes_to_client: u64,
    },
    /// A tunnelled connection was refused or failed to open.
    ConnectionRefused {
        /// Session id.
        session: String,
        /// Why.
        code: TunnelErrorCode,
        /// Who caused it.
        origin: Origin,
    },
    /// Clipboard data or a file crossed a connection (policy allowed it).
    Transfer {
        /// Session id.
        session: String,
        /// `to_target` (paste, upload) or `to_client` (copy, download).
        direction: String,
        /// `clipboard` or `file`.
        kind: String,
        /// Declared mimetype.
        mimetype: String,
        /// File name, for files.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The file's path inside `sftp-root-directory` (`/reports/q3.pdf`), for SFTP; the
        /// upload is at that path on the target when this event is sent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// Bytes that crossed.
        size: u64,
        /// SHA-256 of those bytes, lowercase hex.
        sha256: String,
        /// Data beyond `clipboard-buffer-size` was dropped.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    /// A file transfer (SFTP) started and did not finish: the client cancelled, the server
    /// failed, or the session ended. An upload leaves nothing at its target name.
    TransferIncomplete {
        /// Session id.
        session: String,
        /// `to_target` (upload) or `to_client` (download).
        direction: String,
        /// The file's path inside `sftp-root-directory`.
        path: String,
        /// Bytes that crossed before it stopped.
        size: u64,
        /// Why, in words.
        reason: String,
    },
    /// Policy refused something on a connection.
    PolicyRefused {
        /// Session id.
        session: String,
        /// `to_target` or `to_client`.
        direction: String,
        /// `paste`, `copy`, `upload`, `download`, `input`, `parameter`, `too_many_streams`,
        /// and for the remote browser `navigation` and `resource` (a request the URL policy
        /// refused; it never left the machine).
        action: String,
        /// File or parameter name, when there is one (for SFTP, the path asked for, control
        /// characters escaped; for the remote browser, the URL without query or fragment).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Why, when the action alone does not say (SFTP: `policy`, `outside_root`,
        /// `bad_path`, `hard_link`, `too_many_transfers`; the remote browser:
        /// `url_not_allowed`, `scheme_not_allowed`, `malformed_url`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A recording was started.
    RecordingStarted {
        /// Session id.
        session: String,
        /// The recording's file name.
        recording: String,
        /// `graphical` or `typescript`.
        kind: String,
    },
    /// A recording ended.
    RecordingEnded {
        /// Session id.
        session: String,
        /// The recording's file name.
        recording: String,
        /// `finalised`, or `failed` with `error`.
        status: String,
        /// Why it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Events recorded.
        #[serde(default)]
        events: u64,
        /// Events lost because the disk was slower than the session.
        #[serde(default)]
        dropped_events: u64,
    },
    /// A graphical recording's display model lost track of the screen: the recording goes
    /// on, complete, but without further key frames, so seeking into the rest of it replays
    /// from the last key frame before this point (or from the start).
    RecordingDegraded {
        /// Session id.
        session: String,
        /// The recording's file name.
        recording: String,
        /// Why, in the model's words (no data from the session).
        reason: String,
        /// When, in milliseconds since the recording started.
        at_ms: u64,
    },
    /// A native SSH connection logged in to its target.
    SshConnected {
        /// Session id.
        session: String,
        /// The target's host key, `SHA256:…` as `ssh-keygen -l` prints it.
        host_key_fingerprint: String,
        /// Its algorithm (`ssh-ed25519`).
        host_key_algorithm: String,
        /// Whether the key was the session's pinned `host-key` (otherwise the proxy's policy
        /// accepted an unpinned key: pin this fingerprint).
        host_key_pinned: bool,
        /// The method that authenticated: `publickey`, `password` or `keyboard-interactive`.
        auth_method: String,
    },
    /// A native SSH connection refused its target's host key, before authenticating: nothing
    /// of the session's credentials was sent.
    SshHostKeyRefused {
        /// Session id.
        session: String,
        /// `mismatch` (not the pinned key) or `unpinned` (no pin, and the policy refuses).
        reason: String,
        /// The presented key's fingerprint.
        host_key_fingerprint: String,
        /// Its algorithm.
        host_key_algorithm: String,
    },
    /// A native SSH connection's credentials were refused by the target.
    SshAuthFailed {
        /// Session id.
        session: String,
        /// The methods tried, in order.
        methods: Vec<String>,
    },
    /// A native SSH connection ended.
    SshDisconnected {
        /// Session id.
        session: String,
        /// `target_closed` (the shell or command exited), `client_closed`, `stopped`
        /// (revocation, limits, shutdown) or `error`.
        reason: String,
        /// The shell's or command's exit status, when the target sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_status: Option<u32>,
        /// What failed, for `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Bytes of terminal output the target sent.
        bytes_from_target: u64,
        /// Bytes sent to the target (keys, pastes).
        bytes_to_target: u64,
    },
    /// A native Telnet login failed: `login-failure-regex` matched (`refused`), or the
    /// login did not finish within the session's `timeout` (`timed_out`).
    TelnetLoginFailed {
        /// Session id.
        session: String,
        /// `refused` or `timed_out`.
        reason: String,
    },
    /// A native Telnet connection ended.
    TelnetDisconnected {
        /// Session id.
        session: String,
        /// `target_closed`, `client_closed`, `stopped` (revocation, limits, shutdown),
        /// `login_failed` or `error`.
        reason: String,
        /// Whether the login automation had finished (succeeded, or had nothing to do).
        logged_in: bool,
        /// What failed, for `login_failed` and `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Bytes of terminal data the target sent.
        bytes_from_target: u64,
        /// Bytes sent to the target for the user (keys, pastes; not the credentials).
        bytes_to_target: u64,
    },
    /// A native VNC connection logged in to its target.
    VncConnected {
        /// Session id.
        session: String,
        /// `vnc` (VNC authentication with the session's password) or `none` (the session
        /// has no password and the server asked for none).
        security: String,
        /// The desktop's width.
        width: u32,
        /// The desktop's height.
        height: u32,
    },
    /// A native VNC connection's login failed (a wrong password, or no security type the
    /// session allows); the detail is the server's reason, cut short.
    VncLoginFailed {
        /// Session id.
        session: String,
        /// What failed.
        detail: String,
    },
    /// A native VNC connection ended.
    VncDisconnected {
        /// Session id.
        session: String,
        /// `target_closed`, `client_closed`, `stopped` (revocation, limits, shutdown) or
        /// `error` (the server broke the protocol or a bound).
        reason: String,
        /// What failed, for `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Bytes the target sent.
        bytes_from_target: u64,
        /// Bytes sent to the target (input, clipboard, update requests).
        bytes_to_target: u64,
        /// Frames sent to the user.
        frames: u64,
    },
    /// A statement (or meta command) a user ran in a database console.
    DbQuery {
        /// Session id.
        session: String,
        /// The database it ran in.
        database: String,
        /// The statement, passwords redacted, at most 4096 characters.
        statement: String,
        /// How long it took, in milliseconds.
        duration_ms: u64,
        /// Rows returned or affected.
        rows: u64,
        /// The server's error code (SQLSTATE), when it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_code: Option<String>,
        /// Whether the user cancelled it (Ctrl-C; the server stopped it).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cancelled: bool,
    },
    /// A database console logged in (before its first statement).
    DbConnected {
        /// Session id.
        session: String,
        /// The database logged in to.
        database: String,
        /// Whether the connection is TLS.
        tls: bool,
        /// The server certificate's SHA-256 (`SHA256:` and base64), with TLS.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certificate_fingerprint: Option<String>,
        /// Whether that certificate was the session's `server-certificate` pin (otherwise
        /// any certificate was accepted: pin this fingerprint).
        certificate_pinned: bool,
    },
    /// A database console ended.
    DbDisconnected {
        /// Session id.
        session: String,
        /// `user_left` (`\q`, Ctrl-D, or the server closed), `client_closed` or `stopped`.
        reason: String,
        /// Statements and meta commands run.
        statements: u64,
    },
    /// A native Kubernetes exec or attach was accepted by the API server.
    K8sConnected {
        /// Session id.
        session: String,
        /// `exec` or `attach`.
        call: String,
        /// The namespace.
        namespace: String,
        /// The pod.
        pod: String,
        /// The container, when the session named one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
        /// The subprotocol the server chose (`v5.channel.k8s.io`, `v4.channel.k8s.io`).
        protocol: String,
        /// How the API server was authenticated: `ca_cert`, `public_roots`, `unverified`
        /// (`ignore-cert`) or `none` (plain HTTP, no `use-ssl`).
        tls: String,
        /// What ztproxy presented: `client_certificate`, `bearer_token` or `none`.
        credentials: String,
    },
    /// A native Kubernetes exec or attach ended.
    K8sDisconnected {
        /// Session id.
        session: String,
        /// `exited` (the status stream gave an exit status), `target_closed`,
        /// `client_closed`, `stopped` (revocation, limits, shutdown) or `error`.
        reason: String,
        /// The process's exit status, when the server reported one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_status: Option<u8>,
        /// What failed, for `error` (the API server's reason).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Bytes of terminal output the process sent.
        bytes_from_target: u64,
        /// Bytes of input sent to the process for the user.
        bytes_to_target: u64,
    },
    /// A remote browser started for a session.
    BrowserStarted {
        /// Session id.
        session: String,
        /// The start URL (scheme, host and path).
        url: String,
    },
    /// The remote browser's top frame now shows a page (scheme, host and path: never the
    /// query or fragment, which may carry tokens).
    BrowserNavigated {
        /// Session id.
        session: String,
        /// The page.
        url: String,
    },
    /// ztproxy filled the session's credentials into a page (never shown to the user).
    BrowserAutofilled {
        /// Session id.
        session: String,
        /// The page (scheme, host and path).
        url: String,
        /// Fields filled (username, password).
        fields: u32,
        /// Whether the form was submitted (the rule's `submit`).
        submitted: bool,
    },
    /// A remote browser ended.
    BrowserEnded {
        /// Session id.
        session: String,
        /// `client_closed`, `stopped` or `error`.
        reason: String,
        /// What failed, for `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Frames sent to the client.
        frames: u64,
        /// Top-level navigations.
        navigations: u64,
        /// Requests the URL policy refused.
        refused: u64,
    },
    /// A viewer's client joined a running connection session: from now on it sees the
    /// owner's screen.
    ViewerJoined {
        /// The session watched.
        session: String,
        /// The viewer's id.
        viewer: String,
        /// Who watches.
        user: String,
        /// Whether the viewer's input reaches the target.
        input: bool,
        /// Whether the viewer receives the clipboard.
        clipboard: bool,
    },
    /// A viewer left (or was removed, or the session ended).
    ViewerLeft {
        /// The session watched.
        session: String,
        /// The viewer's id.
        viewer: String,
        /// Who watched.
        user: String,
        /// Why: `revoked` (removed, or the session was revoked), `client_closed`, the
        /// session's own end reason, or `error` (a viewer too slow to keep up).
        reason: EndReason,
        /// A short, secret-free detail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Bytes sent to the viewer.
        bytes_to_client: u64,
        /// Input events of the viewer's that reached the target.
        inputs_forwarded: u64,
        /// Input events of the viewer's that were dropped (a read-only viewer's).
        inputs_dropped: u64,
    },
    /// A request or connection was refused for lack of valid credentials.
    AccessDenied {
        /// What was protected: `control_api` or `quic`.
        resource: String,
        /// Why: `missing_token`, `wrong_token`, `token_reused`, `bad_preamble`.
        reason: String,
    },
}

impl AuditEvent {
    /// The session the event is about, if any.
    pub fn session(&self) -> Option<&str> {
        match self {
            Self::SessionCreated { session, .. }
            | Self::SessionConnected { session }
            | Self::SessionEnded { session, .. }
            | Self::ViewerJoined { session, .. }
            | Self::ViewerLeft { session, .. }
            | Self::ConnectionOpened { session, .. }
            | Self::ConnectionClosed { session, .. }
            | Self::ConnectionRefused { session, .. }
            | Self::Transfer { session, .. }
            | Self::TransferIncomplete { session, .. }
            | Self::PolicyRefused { session, .. }
            | Self::RecordingStarted { session, .. }
            | Self::RecordingDegraded { session, .. }
            | Self::RecordingEnded { session, .. }
            | Self::SshConnected { session, .. }
            | Self::SshHostKeyRefused { session, .. }
            | Self::SshAuthFailed { session, .. }
            | Self::SshDisconnected { session, .. }
            | Self::TelnetLoginFailed { session, .. }
            | Self::TelnetDisconnected { session, .. }
            | Self::VncConnected { session, .. }
            | Self::VncLoginFailed { session, .. }
            | Self::VncDisconnected { session, .. }
            | Self::DbQuery { session, .. }
            | Self::DbConnected { session, .. }
            | Self::DbDisconnected { session, .. }
            | Self::K8sConnected { session, .. }
            | Self::K8sDisconnected { session, .. }
            | Self::BrowserStarted { session, .. }
            | Self::BrowserNavigated { session, .. }
            | Self::BrowserAutofilled { session, .. }
            | Self::BrowserEnded { session, .. } => Some(session),
            Self::AccessDenied { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_flat_json_lines() {
        let record = AuditRecord {
            seq: 3,
            time: "2026-11-21T10:00:00.000000Z".into(),
            event: AuditEvent::SessionConnected {
                session: "abc".into(),
            },
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"seq":3,"time":"2026-11-21T10:00:00.000000Z","event":"session_connected","session":"abc"}"#
        );
        let back: AuditRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
    }
}
