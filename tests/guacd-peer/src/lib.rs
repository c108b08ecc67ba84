//! A guacd 1.5 / 1.6 test double: guacd's side of the Guacamole protocol, as the protocol
//! reference documents it and as guacamole-server 1.5 implements it, on a loopback TCP port,
//! with guacd 1.6.0's display patterns as they were measured ([`GuacdVersion::V1_6`]).
//!
//! Debian 12 does not package guacd, so ztproxy's integration tests and benchmarks run
//! against this peer; pointing `[guacd] address` at a real guacd instead needs no other
//! change. The peer speaks only the Guacamole protocol (it reaches no RDP, VNC, SSH or
//! Telnet server): it models what guacd shows its client, and records everything the client
//! sends so tests can assert what reached "guacd".
//!
//! # What it models, and where that is documented
//!
//! References: the Guacamole protocol reference (`doc/gug/protocol-reference`, 1.5.0
//! manual) and guacamole-server 1.5: `src/guacd/connection.c` (routing `select`),
//! `src/guacd/proc.c` (`GUACD_TIMEOUT`, users of a connection), `src/libguac/user-handshake.c`
//! (handshake and input loop), `src/libguac/user-handlers.c` (instruction and stream
//! handlers), `src/protocols/*/settings.c` (the `args` lists) and the RDP plugin's
//! `upload.c` / `download.c` / clipboard code.
//!
//! * **Routing** — the first instruction must be `select` with one argument, read within
//!   `GUACD_TIMEOUT` (15 s); otherwise guacd logs and closes without a word. An identifier
//!   starting with `$` names a connection to join: the peer, like guacd when the id is
//!   unknown, closes. A protocol guacd has no plugin for (anything but `rdp`, `vnc`, `ssh`,
//!   `telnet` here) is closed without a word too ("Support for protocol … is not
//!   installed"): guacd sends neither `args` nor `error`.
//! * **Handshake** (`guac_user_handle_connection`, 1.5) — `args` carries the protocol version
//!   `VERSION_1_5_0` then the plugin's parameter names ([`protocol_args`]: guacamole-server
//!   1.5's `GUAC_*_CLIENT_ARGS`, built with every optional feature: SFTP, PulseAudio, VNC
//!   repeater and listen mode). guacd then reads `size`, `audio`, `video`, `image`,
//!   `timezone` and `name` in any order (each optional except that `size` needs at least
//!   two arguments; unknown opcodes are ignored) until `connect`, each read bounded by 15 s.
//!   It sends `ready $<uuid>` *before* checking `connect`; when `connect` does not carry
//!   exactly one value per `args` element ("Client did not return the expected number of
//!   arguments") it then closes without `error` or `disconnect`. The peer does the same
//!   ([`ConnEvent::WrongValueCount`]).
//! * **Reaching the target** — guacd answers `ready` before the plugin connects to the
//!   remote desktop; the peer waits [`PeerConfig::connect_delay`] before the first display
//!   output: `size 0 <w> <h>` (the client's size, or the `width`/`height` parameters when
//!   set), a background, a few PNG tiles, the pointer (`size -1`, an image on buffer `-1`,
//!   `cursor`) and `sync`. A target failure is [`PeerConn::error`]: `error` then `disconnect`
//!   (`guac_client_abort` then the end of the user's I/O loop).
//! * **Display** — [`DisplayMode`]: frames are what guacd's RDP plugin flushes: `img
//!   <stream> 14 <layer> image/png <x> <y>` with the PNG in `blob`s of at most 6048 bytes
//!   (`GUAC_PROTOCOL_BLOB_MAX_LENGTH`, 8064 base64 characters) and `end`, `copy`,
//!   `rect`+`cfill`, `cursor`, then `sync <timestamp>` (milliseconds since the epoch; guacd
//!   1.5 sends no frame count — [`PeerConfig::sync_frame_count`] adds 1.6's). Image and
//!   clipboard streams are client-level streams (odd indices), allocated and freed around
//!   each image, so always stream 1, as with guacd; downloads use user-level (even) indices.
//! * **Flow control** — guacd 1.5 paces its frame loop by the client's processing lag,
//!   computed from its `sync` replies (`__guac_handle_sync`, `guac_client_get_processing_lag`)
//!   and, beyond that, by TCP backpressure on its blocking socket writes. The peer keeps the
//!   same lag figure ([`PeerStats::processing_lag`]) and approximates the combined effect
//!   with a window: it never has more than [`PeerConfig::max_unacked_frames`] frames whose
//!   `sync` the client has not acknowledged (default [`DEFAULT_MAX_UNACKED_FRAMES`]: a
//!   responsive client never meets it, a stalled one stops the display within a few
//!   megabytes, as a full socket buffer stops guacd). A client `sync` newer than the last
//!   one sent ends the session ("timestamp is in future": the handler fails, guacd stops the
//!   user and sends `disconnect`).
//! * **Keep-alive and timeout** — with nothing written for 5 s guacd sends `nop`
//!   (`GUAC_SOCKET_KEEP_ALIVE_INTERVAL`); with nothing read from the client for
//!   `GUACD_TIMEOUT` = 15 s ([`PeerConfig::client_timeout`]) it sends `error "User is not
//!   responding." 776` (`GUAC_PROTOCOL_STATUS_CLIENT_TIMEOUT` = 0x0308) and `disconnect`, and
//!   closes ([`ConnEvent::TimedOut`]).
//! * **Client input** — every instruction after the handshake is recorded
//!   ([`PeerConn::received`], bounded). `disconnect` from the client ends the session (guacd
//!   answers `disconnect`); malformed input or an instruction beyond guacd's parser limits
//!   ([`zt_guac::Limits::default`] are guacd's) ends it with `disconnect` only — guacd logs
//!   "Guacamole connection failure" and sends no `error`.
//! * **Streams** (`user-handlers.c`) — client stream indices must be below
//!   `GUAC_USER_MAX_STREAMS` (64) or guacd answers `ack <s> "Invalid stream index" 768`, as
//!   it does for `blob`/`end` on a stream that is not open. A clipboard (`clipboard`,
//!   `blob`s, `end`) is recorded as text ([`PeerConn::clipboard_received`], at most 256 KiB
//!   each, guacd 1.5's `GUAC_COMMON_CLIPBOARD_MAX_LENGTH`); guacd sends no `ack` for it. An
//!   upload (`file`) is answered as the RDP plugin does: `ack <s> "OK (STREAM BEGIN)" 0`,
//!   `"OK (DATA RECEIVED)"` per `blob`, `"OK (STREAM END)"` at `end` ([`PeerConn::uploads`]),
//!   or `"FAIL (UPLOAD DISABLED)" 771` when the `disable-upload` parameter is `true`; the
//!   peer behaves as guacd with its drive configured. `ack`s for the peer's downloads drive
//!   them: `file`, then one `blob` of at most 4096 bytes per successful `ack`, `end` after
//!   the last one ([`PeerConn::download`]); a failing `ack` ends the stream with nothing
//!   more sent. Clipboard text from "the target" ([`PeerConn::clipboard`]) goes out as
//!   `clipboard <s> text/plain`, `blob`s of 4096 bytes and `end`, without waiting for acks.
//!
//! * **guacd 1.6** ([`PeerConfig::guacd`] = [`GuacdVersion::V1_6`]), as a real guacd 1.6.0
//!   sent it in the sessions of `tests/fixtures/guacd-1.6/`: `args` lists read from that
//!   fixture's `args.txt` (1.6 still announces `VERSION_1_5_0`, and adds `kubernetes`); at
//!   `ready`, before the target is reached, the display greets the user with `cursor` from a
//!   buffer that has no size yet and `mouse` with a timestamp, then `sync <t> 0` — all
//!   before any `size` of layer 0; every `sync` carries its frame count and is followed by a
//!   copy of the area the frame changed from layer 0 into buffer -1 (1.6's client-side copy
//!   of the last frame); frames stream their images two at a time on streams 3 and 5, both open on layer 0
//!   at once with their `blob`s interleaved (the second opened ends first and the two do
//!   not overlap, or, in the first frame, they overlap and the first opened ends first);
//!   the pointer is drawn into buffer -2. [`DisplayMode::Replay`] sends a recorded
//!   stream itself, such as the fixtures.
//!
//! What is deliberately not modelled: joining a connection by id, `required` (credential
//! prompts), audio and video streams, `argv`/`pipe` semantics (their data is accepted and
//! dropped), file system objects, and policy enforcement other than `disable-upload` (the
//! peer records what reached it; it is ztproxy that must filter).
//!
//! # Test controls
//!
//! [`GuacdPeer::start`] listens on `127.0.0.1:0`; each accepted connection runs in its own
//! task and is handed out, in accept order, by [`GuacdPeer::next_connection`] as a
//! [`PeerConn`]: commands (send, clipboard, download, error, disconnect, abort, hostile
//! output) and observations (records, events, waits bounded by timeouts, no sleeps).
//! Everything the peer stores is bounded ([`PeerConfig::max_received`] and friends), and no
//! input from the client can make it panic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zt_guac::{DecodeError, Decoder, Instruction, InstructionWriter, Limits, Status, opcode};

/// The protocol version guacd 1.5 announces first in `args` (`GUAC_PROTOCOL_VERSION_1_5_0`).
pub const GUACD_PROTOCOL_VERSION: &str = "VERSION_1_5_0";

/// guacd's `GUACD_TIMEOUT` (`src/guacd/proc.h`): how long guacd waits for anything from a
/// user (during the handshake, per instruction) before giving up on it.
pub const GUACD_TIMEOUT: Duration = Duration::from_secs(15);

/// `GUAC_SOCKET_KEEP_ALIVE_INTERVAL`: after this long without writing, guacd sends `nop`.
pub const GUAC_SOCKET_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Default [`PeerConfig::max_unacked_frames`].
pub const DEFAULT_MAX_UNACKED_FRAMES: usize = 32;

/// `GUAC_USER_MAX_STREAMS`: stream indices a user may open, and user-level streams guacd may
/// have open towards one user.
pub const GUAC_USER_MAX_STREAMS: u32 = 64;

/// guacd 1.5's RDP `args` (`GUAC_RDP_CLIENT_ARGS`, guacamole-server 1.5.3
/// `src/protocols/rdp/settings.c`, with SFTP support built in), in order.
pub const RDP_ARGS: &[&str] = &[
    "hostname",
    "port",
    "domain",
    "username",
    "password",
    "width",
    "height",
    "dpi",
    "initial-program",
    "color-depth",
    "disable-audio",
    "enable-printing",
    "printer-name",
    "enable-drive",
    "drive-name",
    "drive-path",
    "create-drive-path",
    "disable-download",
    "disable-upload",
    "console",
    "console-audio",
    "server-layout",
    "security",
    "ignore-cert",
    "disable-auth",
    "remote-app",
    "remote-app-dir",
    "remote-app-args",
    "static-channels",
    "client-name",
    "enable-wallpaper",
    "enable-theming",
    "enable-font-smoothing",
    "enable-full-window-drag",
    "enable-desktop-composition",
    "enable-menu-animations",
    "disable-bitmap-caching",
    "disable-offscreen-caching",
    "disable-glyph-caching",
    "preconnection-id",
    "preconnection-blob",
    "timezone",
    "enable-sftp",
    "sftp-hostname",
    "sftp-host-key",
    "sftp-port",
    "sftp-username",
    "sftp-password",
    "sftp-private-key",
    "sftp-passphrase",
    "sftp-directory",
    "sftp-root-directory",
    "sftp-server-alive-interval",
    "sftp-disable-download",
    "sftp-disable-upload",
    "recording-path",
    "recording-name",
    "recording-exclude-output",
    "recording-exclude-mouse",
    "recording-exclude-touch",
    "recording-include-keys",
    "create-recording-path",
    "resize-method",
    "enable-audio-input",
    "enable-touch",
    "read-only",
    "gateway-hostname",
    "gateway-port",
    "gateway-domain",
    "gateway-username",
    "gateway-password",
    "load-balance-info",
    "disable-copy",
    "disable-paste",
    "wol-send-packet",
    "wol-mac-addr",
    "wol-broadcast-addr",
    "wol-udp-port",
    "wol-wait-time",
    "force-lossless",
    "normalize-clipboard",
];

/// guacd 1.5's VNC `args` (`GUAC_VNC_CLIENT_ARGS`, with repeater, PulseAudio, listen mode and
/// SFTP built in), in order. Reconstructed from guacamole-server's 1.5-line sources (the
/// 1.5.0 list plus `wol-udp-port` and `force-lossless`, which 1.5.3's RDP list also has).
pub const VNC_ARGS: &[&str] = &[
    "hostname",
    "port",
    "read-only",
    "encodings",
    "username",
    "password",
    "swap-red-blue",
    "color-depth",
    "cursor",
    "autoretry",
    "clipboard-encoding",
    "dest-host",
    "dest-port",
    "enable-audio",
    "audio-servername",
    "reverse-connect",
    "listen-timeout",
    "enable-sftp",
    "sftp-hostname",
    "sftp-host-key",
    "sftp-port",
    "sftp-username",
    "sftp-password",
    "sftp-private-key",
    "sftp-passphrase",
    "sftp-directory",
    "sftp-root-directory",
    "sftp-server-alive-interval",
    "sftp-disable-download",
    "sftp-disable-upload",
    "recording-path",
    "recording-name",
    "recording-exclude-output",
    "recording-exclude-mouse",
    "recording-include-keys",
    "create-recording-path",
    "disable-copy",
    "disable-paste",
    "wol-send-packet",
    "wol-mac-addr",
    "wol-broadcast-addr",
    "wol-udp-port",
    "wol-wait-time",
    "force-lossless",
];

/// guacd 1.5's SSH `args` (`GUAC_SSH_CLIENT_ARGS`, without the optional SSH agent), in order.
/// Reconstructed from guacamole-server's 1.5-line sources, like [`VNC_ARGS`].
pub const SSH_ARGS: &[&str] = &[
    "hostname",
    "host-key",
    "port",
    "username",
    "password",
    "font-name",
    "font-size",
    "enable-sftp",
    "sftp-root-directory",
    "sftp-disable-download",
    "sftp-disable-upload",
    "private-key",
    "passphrase",
    "color-scheme",
    "command",
    "typescript-path",
    "typescript-name",
    "create-typescript-path",
    "recording-path",
    "recording-name",
    "recording-exclude-output",
    "recording-exclude-mouse",
    "recording-include-keys",
    "create-recording-path",
    "read-only",
    "server-alive-interval",
    "backspace",
    "terminal-type",
    "scrollback",
    "locale",
    "timezone",
    "disable-copy",
    "disable-paste",
    "wol-send-packet",
    "wol-mac-addr",
    "wol-broadcast-addr",
    "wol-udp-port",
    "wol-wait-time",
];

/// guacd 1.5's Telnet `args` (`GUAC_TELNET_CLIENT_ARGS`), in order: 1.4's list plus the
/// Wake-on-LAN parameters 1.5 added to every protocol.
pub const TELNET_ARGS: &[&str] = &[
    "hostname",
    "port",
    "username",
    "username-regex",
    "password",
    "password-regex",
    "font-name",
    "font-size",
    "color-scheme",
    "typescript-path",
    "typescript-name",
    "create-typescript-path",
    "recording-path",
    "recording-name",
    "recording-exclude-output",
    "recording-exclude-mouse",
    "recording-include-keys",
    "create-recording-path",
    "read-only",
    "backspace",
    "terminal-type",
    "scrollback",
    "login-success-regex",
    "login-failure-regex",
    "disable-copy",
    "disable-paste",
    "wol-send-packet",
    "wol-mac-addr",
    "wol-broadcast-addr",
    "wol-udp-port",
    "wol-wait-time",
];

/// Which guacd the peer behaves like (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GuacdVersion {
    /// guacamole-server 1.5.
    #[default]
    V1_5,
    /// guacamole-server 1.6.0, as measured (`tests/fixtures/guacd-1.6/`).
    V1_6,
}

/// The `args` lists a real guacd 1.6.0 answered, as measured.
pub const GUACD_1_6_ARGS: &str = include_str!("../../fixtures/guacd-1.6/args.txt");

/// The parameter names `version` lists in `args` for `protocol` (without the version), or
/// `None` for a protocol it has no plugin for.
pub fn protocol_args_of(version: GuacdVersion, protocol: &str) -> Option<Vec<&'static str>> {
    match version {
        GuacdVersion::V1_5 => protocol_args(protocol).map(<[&str]>::to_vec),
        GuacdVersion::V1_6 => GUACD_1_6_ARGS
            .lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (name, list) = line.split_once(':')?;
                (name == protocol).then(|| list.split_whitespace().skip(1).collect())
            }),
    }
}

/// The parameter names guacd 1.5 lists in `args` for `protocol` (without the version), or
/// `None` for a protocol it has no plugin for.
pub fn protocol_args(protocol: &str) -> Option<&'static [&'static str]> {
    match protocol {
        "rdp" => Some(RDP_ARGS),
        "vnc" => Some(VNC_ARGS),
        "ssh" => Some(SSH_ARGS),
        "telnet" => Some(TELNET_ARGS),
        _ => None,
    }
}

/// What the display does once the peer has "reached the target".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisplayMode {
    /// The initial frame, then nothing but guacd's `nop` keep-alive.
    Idle,
    /// A frame (a few PNG tiles, some `copy`/`rect`+`cfill`, now and then `cursor`, and
    /// `sync`) every `interval`, within the flow-control window.
    Frames {
        /// Time between frames.
        interval: Duration,
    },
    /// Frames as fast as the socket and the flow-control window allow until `bytes` of
    /// display instructions have been written ([`ConnEvent::BulkDone`]), then idle. For
    /// benchmarks.
    Bulk {
        /// Display bytes to write (frames are whole, so slightly more are written).
        bytes: u64,
    },
    /// A recorded stream (Guacamole instructions, such as `tests/fixtures/guacd-1.6/*.guac`),
    /// sent frame by frame (each up to and including a `sync`) in place of the peer's own
    /// display, at its recorded pace (the gaps between its `sync` timestamps, divided by
    /// `speed`) and within the flow-control window, then idle ([`ConnEvent::ReplayDone`]).
    /// A trailing `error` and `disconnect` (the end of the recorded session) are not sent.
    Replay {
        /// The recorded instructions.
        stream: Bytes,
        /// How many times faster than recorded (at least 1).
        speed: u32,
    },
}

/// How the peer behaves. Every field has a default ([`PeerConfig::default`]).
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Display traffic after the initial frame. Default [`DisplayMode::Idle`].
    pub display: DisplayMode,
    /// Time between `ready` and the first display output (guacd reaching the target).
    /// Default 50 ms.
    pub connect_delay: Duration,
    /// Time between `connect` and `ready`. Default 0.
    pub ready_delay: Duration,
    /// guacd's `GUACD_TIMEOUT`: silence from the client after which it is dropped, and the
    /// bound on each handshake read. Default [`GUACD_TIMEOUT`] (15 s).
    pub client_timeout: Duration,
    /// guacd's keep-alive: `nop` after this long without writing. Default
    /// [`GUAC_SOCKET_KEEP_ALIVE_INTERVAL`] (5 s).
    pub keep_alive_interval: Duration,
    /// Most frames the client may leave unacknowledged before the display waits (see the
    /// module docs). Default [`DEFAULT_MAX_UNACKED_FRAMES`]. At least 1.
    pub max_unacked_frames: usize,
    /// If set, `args` lists this many made-up parameter names instead of the protocol's
    /// (hostile guacd: ztproxy must refuse beyond its limit).
    pub hostile_args: Option<usize>,
    /// If set, `connect` is answered with `error <message> <status>` instead of `ready`, and
    /// the connection closed. guacd 1.5 itself answers `ready` before its plugin has
    /// connected and reports a failing target afterwards ([`PeerConn::error`]); this models
    /// a guacd that refuses the connection outright.
    pub error_on_connect: Option<(String, u32)>,
    /// Send guacd 1.6's frame count in `sync` (`sync <timestamp> 1`); guacd 1.5 sends the
    /// timestamp alone. Default `false`.
    pub sync_frame_count: bool,
    /// Most client instructions kept by [`PeerConn::received`]; later ones are counted
    /// ([`PeerStats::received_dropped`]). Default 100,000.
    pub max_received: usize,
    /// Most bytes of client instructions kept. Default 64 MiB.
    pub max_received_bytes: usize,
    /// Most bytes kept of one upload (the rest is counted, not kept). Default 64 MiB.
    pub max_upload_bytes: usize,
    /// Seed of the display content (tiles, positions). Default a fixed value.
    pub seed: u64,
    /// Which guacd to behave like. Default [`GuacdVersion::V1_5`].
    pub guacd: GuacdVersion,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            display: DisplayMode::Idle,
            connect_delay: Duration::from_millis(50),
            ready_delay: Duration::ZERO,
            client_timeout: GUACD_TIMEOUT,
            keep_alive_interval: GUAC_SOCKET_KEEP_ALIVE_INTERVAL,
            max_unacked_frames: DEFAULT_MAX_UNACKED_FRAMES,
            hostile_args: None,
            error_on_connect: None,
            sync_frame_count: false,
            max_received: 100_000,
            max_received_bytes: 64 * 1024 * 1024,
            max_upload_bytes: 64 * 1024 * 1024,
            seed: 0x5EED_6A7C_D150_0001,
            guacd: GuacdVersion::V1_5,
        }
    }
}

impl PeerConfig {
    /// The defaults, behaving like guacd 1.6 (with its frame counts in `sync`).
    pub fn guacd_1_6() -> Self {
        Self {
            guacd: GuacdVersion::V1_6,
            sync_frame_count: true,
            ..Self::default()
        }
    }
}

/// What the client said in its handshake, as guacd would hand it to the protocol plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectRecord {
    /// The protocol `select`ed.
    pub protocol: String,
    /// The client's protocol version (first `connect` value).
    pub version: String,
    /// The parameter names of `args`, in order (without the version).
    pub args: Vec<String>,
    /// Parameter name (from `args`) → value (from `connect`).
    pub parameters: BTreeMap<String, String>,
    /// `size`: width, height, DPI (96 when the client sent none, as guacd assumes).
    pub size: (u32, u32, u32),
    /// `audio` mimetypes.
    pub audio: Vec<String>,
    /// `video` mimetypes.
    pub video: Vec<String>,
    /// `image` mimetypes.
    pub image: Vec<String>,
    /// `timezone`, when sent and not empty.
    pub timezone: Option<String>,
    /// `name`, when sent and not empty.
    pub name: Option<String>,
}

/// Why a handshake failed (guacd closes without a word in each case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client closed the connection.
    Closed,
    /// Nothing arrived for [`PeerConfig::client_timeout`].
    TimedOut,
    /// The bytes were not valid Guacamole protocol, or beyond guacd's limits.
    Malformed(DecodeError),
    /// The first instruction was not `select` with exactly one argument.
    BadSelect,
    /// `select` named a connection id (`$…`): joining is not modelled, and guacd closes for
    /// an id it does not know.
    UnknownConnection,
    /// `size` had fewer than two arguments.
    BadSize,
}

/// Something that happened on a connection, in order ([`PeerConn::events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// `select` named a protocol guacd has no plugin for; closed without `args`.
    UnknownProtocol(String),
    /// The handshake failed before `connect`.
    HandshakeFailed(HandshakeFailure),
    /// `connect` did not carry one value per `args` element: `ready` was sent, then the
    /// connection closed.
    WrongValueCount {
        /// `args` elements (version included).
        expected: usize,
        /// `connect` values.
        got: usize,
    },
    /// `connect` was answered with [`PeerConfig::error_on_connect`].
    ErrorOnConnect(u32),
    /// `ready` was sent with this connection id.
    Ready(String),
    /// The initial display was sent (guacd reached the target).
    TargetReached,
    /// [`DisplayMode::Replay`] sent its last frame.
    ReplayDone {
        /// Frames sent.
        frames: u64,
    },
    /// [`DisplayMode::Bulk`] wrote its bytes.
    BulkDone {
        /// Display bytes written.
        bytes: u64,
        /// Frames written (each ending with `sync`).
        frames: u64,
    },
    /// The client sent `disconnect`.
    ClientDisconnected,
    /// The client closed the connection (or it failed) without `disconnect`.
    ClientClosed,
    /// Nothing arrived from the client for [`PeerConfig::client_timeout`]: `error "User is
    /// not responding." 776` and `disconnect` were sent.
    TimedOut,
    /// The client sent malformed or oversized input.
    Malformed(DecodeError),
    /// The client acknowledged a timestamp newer than the last `sync` sent.
    FutureSync {
        /// The client's timestamp.
        timestamp: u64,
        /// The last timestamp sent.
        last_sent: u64,
    },
    /// The client used a stream index guacd rejects (answered with `ack … 768`).
    InvalidStream(String),
    /// The connection is closed.
    Closed(CloseReason),
}

/// How a connection ended ([`PeerConn::wait_closed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The handshake failed ([`ConnEvent::HandshakeFailed`]).
    HandshakeFailed,
    /// Unknown protocol ([`ConnEvent::UnknownProtocol`]).
    UnknownProtocol,
    /// Wrong `connect` value count ([`ConnEvent::WrongValueCount`]).
    WrongValueCount,
    /// [`PeerConfig::error_on_connect`].
    ErrorOnConnect,
    /// The client sent `disconnect`.
    ClientDisconnected,
    /// The client closed the connection.
    ClientClosed,
    /// The client was silent for [`PeerConfig::client_timeout`].
    TimedOut,
    /// Malformed client input.
    Malformed,
    /// A client `sync` from the future.
    FutureSync,
    /// [`PeerConn::error`].
    PeerError,
    /// [`PeerConn::disconnect`].
    PeerDisconnect,
    /// [`PeerConn::abort`].
    Aborted,
    /// Writing to the client failed.
    WriteFailed,
    /// The peer was shut down.
    Shutdown,
}

/// The result of [`PeerConn::download`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadOutcome {
    /// Every block was acknowledged and `end` sent.
    Completed,
    /// The client answered with a failing `ack`: its status code and message.
    Refused(u32, String),
}

/// A file the client uploaded (`file`, `blob`s, `end`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// File name from `file`.
    pub name: String,
    /// Mimetype from `file`.
    pub mimetype: String,
    /// The decoded data (at most [`PeerConfig::max_upload_bytes`]).
    pub data: Vec<u8>,
    /// Bytes received beyond what `data` keeps.
    pub truncated: u64,
}

/// Counters of one connection ([`PeerConn::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Frames written (initial frame included; each ends with `sync`).
    pub frames_sent: u64,
    /// Bytes of display frames written.
    pub display_bytes_sent: u64,
    /// All bytes written after the handshake.
    pub bytes_sent: u64,
    /// The last `sync` timestamp sent (guacd's `last_sent_timestamp`).
    pub last_sync_sent: u64,
    /// The newest timestamp the client acknowledged.
    pub last_sync_acked: Option<u64>,
    /// guacd 1.5's estimate of the client's processing lag, from its `sync` replies.
    pub processing_lag: Duration,
    /// Client instructions received after the handshake.
    pub received_count: u64,
    /// Of those, how many were not kept (beyond the bounds).
    pub received_dropped: u64,
}

/// A running guacd double. Dropping it (or [`GuacdPeer::shutdown`]) stops the listener and
/// closes every connection.
pub struct GuacdPeer {
    addr: SocketAddr,
    cancel: CancellationToken,
    connections: tokio::sync::Mutex<mpsc::Receiver<PeerConn>>,
    accepted: Arc<AtomicU64>,
}

impl fmt::Debug for GuacdPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuacdPeer")
            .field("addr", &self.addr)
            .field("accepted", &self.accepted.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl GuacdPeer {
    /// Starts the peer on `127.0.0.1:0` (call within a Tokio runtime).
    pub async fn start(config: PeerConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the guacd peer")?;
        let addr = listener.local_addr()?;
        let tiles = Arc::new(Tiles::build(config.seed).context("building display tiles")?);
        let cancel = CancellationToken::new();
        let (tx, rx) = mpsc::channel(PENDING_CONNECTIONS);
        let accepted = Arc::new(AtomicU64::new(0));
        let context = PeerContext {
            config: Arc::new(config),
            tiles,
        };
        tokio::spawn(accept_loop(
            listener,
            context,
            cancel.clone(),
            tx,
            accepted.clone(),
        ));
        Ok(Self {
            addr,
            cancel,
            connections: tokio::sync::Mutex::new(rx),
            accepted,
        })
    }

    /// The address to give ztproxy as `[guacd] address`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// The next accepted connection, in accept order (whether or not its handshake
    /// succeeds), waiting up to `timeout`.
    pub async fn next_connection(&self, timeout: Duration) -> anyhow::Result<PeerConn> {
        let mut connections = self.connections.lock().await;
        match tokio::time::timeout(timeout, connections.recv()).await {
            Ok(Some(conn)) => Ok(conn),
            Ok(None) => bail!("the guacd peer has stopped"),
            Err(_) => bail!("no connection to the guacd peer within {timeout:?}"),
        }
    }

    /// Stops accepting and closes every connection (without a word to the clients).
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

impl Drop for GuacdPeer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// One connection to the peer: commands as guacd would send them, and what the client sent.
/// Cheap to clone; every method is bounded by a timeout.
#[derive(Clone)]
pub struct PeerConn {
    shared: Arc<ConnShared>,
    commands: mpsc::Sender<Command>,
}

impl fmt::Debug for PeerConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConn")
            .field("id", &self.shared.id)
            .field("closed", &self.shared.read(|s| s.closed))
            .finish_non_exhaustive()
    }
}

impl PeerConn {
    /// The connection's number, in accept order from 1.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// What the client's handshake said; empty until `connect` has arrived (see
    /// [`Self::wait_connect_record`]).
    pub fn connect_record(&self) -> ConnectRecord {
        self.try_connect_record().unwrap_or_default()
    }

    /// What the client's handshake said, once `connect` has arrived with the right count.
    pub fn try_connect_record(&self) -> Option<ConnectRecord> {
        self.shared.read(|s| s.record.clone())
    }

    /// Waits up to `timeout` for the handshake's record.
    pub async fn wait_connect_record(&self, timeout: Duration) -> anyhow::Result<ConnectRecord> {
        self.wait_state(timeout, "the handshake", |s| {
            s.record.is_some() || s.closed.is_some()
        })
        .await?;
        self.try_connect_record()
            .context("the connection closed before a valid `connect`")
    }

    /// Client instructions received after the handshake, in order (bounded: see
    /// [`PeerConfig::max_received`]).
    pub fn received(&self) -> Vec<Instruction> {
        self.shared.read(|s| s.received.clone())
    }

    /// What happened on the connection, in order.
    pub fn events(&self) -> Vec<ConnEvent> {
        self.shared.read(|s| s.events.clone())
    }

    /// Clipboard texts the client sent (each complete stream, lossy UTF-8).
    pub fn clipboard_received(&self) -> Vec<String> {
        self.shared.read(|s| s.clipboards.clone())
    }

    /// Uploads the client completed.
    pub fn uploads(&self) -> Vec<Upload> {
        self.shared.read(|s| s.uploads.clone())
    }

    /// Every `sync` timestamp sent, frames and floods (bounded to the last million).
    pub fn sent_syncs(&self) -> Vec<u64> {
        self.shared.read(|s| s.sent_syncs.iter().copied().collect())
    }

    /// Counters.
    pub fn stats(&self) -> PeerStats {
        self.shared.read(|s| s.stats.clone())
    }

    /// How the connection ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.read(|s| s.closed)
    }

    /// Sends one instruction.
    pub async fn send(&self, instruction: Instruction) -> anyhow::Result<()> {
        self.send_raw(instruction.into_raw()).await
    }

    /// Sends raw bytes (possibly malformed, on purpose).
    pub async fn send_raw(&self, bytes: Bytes) -> anyhow::Result<()> {
        let written = self
            .command(COMMAND_TIMEOUT, |done| Command::Write {
                bytes,
                done: Some(done),
            })
            .await?;
        if !written {
            bail!("writing to the client failed");
        }
        Ok(())
    }

    /// Sends `text` as the remote clipboard: `clipboard <s> text/plain`, `blob`s, `end`.
    pub async fn clipboard(&self, text: &str) -> anyhow::Result<()> {
        let data = text.as_bytes().to_vec();
        let written = self
            .command(COMMAND_TIMEOUT, |done| Command::Clipboard {
                mimetype: "text/plain".into(),
                data,
                done,
            })
            .await?;
        if !written {
            bail!("writing to the client failed");
        }
        Ok(())
    }

    /// Offers a file download as guacd does (`file`, then a `blob` per successful `ack`,
    /// `end`), waiting up to 60 s for the outcome.
    pub async fn download(
        &self,
        name: &str,
        mimetype: &str,
        data: &[u8],
    ) -> anyhow::Result<DownloadOutcome> {
        self.download_within(name, mimetype, data, DOWNLOAD_TIMEOUT)
            .await
    }

    /// [`Self::download`] with an explicit timeout.
    pub async fn download_within(
        &self,
        name: &str,
        mimetype: &str,
        data: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<DownloadOutcome> {
        let data = Bytes::copy_from_slice(data);
        let (name, mimetype) = (name.to_owned(), mimetype.to_owned());
        self.command(timeout, |done| Command::Download {
            name,
            mimetype,
            data,
            done,
        })
        .await?
        .map_err(|e| anyhow!("download not started: {e}"))
    }

    /// Ends the session as guacd does when the target fails (`guac_client_abort`): `error
    /// <message> <status>`, `disconnect`, close. Returns once closed.
    pub async fn error(&self, message: &str, status: u32) -> anyhow::Result<()> {
        let goodbye = vec![
            encode(opcode::ERROR, &[message, &status.to_string()]),
            encode(opcode::DISCONNECT, &[]),
        ];
        self.close_with(CloseReason::PeerError, goodbye).await
    }

    /// Ends the session normally (the target disconnected): `disconnect`, close.
    pub async fn disconnect(&self) -> anyhow::Result<()> {
        let goodbye = vec![encode(opcode::DISCONNECT, &[])];
        self.close_with(CloseReason::PeerDisconnect, goodbye).await
    }

    /// Closes the socket without a word (guacd crashing).
    pub async fn abort(&self) {
        self.shared.mark_closing(CloseReason::Aborted);
        self.shared.cancel.cancel();
        let _ = self.wait_closed(COMMAND_TIMEOUT).await;
    }

    /// Sends `count` `sync`s back to back (timestamps increasing, recorded as sent).
    pub async fn sync_flood(&self, count: u64) -> anyhow::Result<()> {
        let timeout = COMMAND_TIMEOUT + Duration::from_millis(count / 10);
        self.command(timeout, |done| Command::SyncFlood { count, done })
            .await?;
        Ok(())
    }

    /// Starts an instruction whose element declares a huge length and then sends filler
    /// without end, until the socket closes or 256 MiB. Returns the bytes written.
    pub async fn never_ending_instruction(&self) -> anyhow::Result<u64> {
        self.never_ending_instruction_capped(NEVER_ENDING_CAP).await
    }

    /// [`Self::never_ending_instruction`] with an explicit cap in bytes.
    pub async fn never_ending_instruction_capped(&self, cap: u64) -> anyhow::Result<u64> {
        let header = Bytes::from_static(b"4.blob,1.1,999999999.");
        self.command(Duration::from_secs(600), |done| Command::Flood {
            header,
            len: cap,
            trailer: Bytes::new(),
            done,
        })
        .await
    }

    /// Sends a `blob` whose data element is `len` characters long (guacd's limit is 8192),
    /// completely. Succeeds even if the client closes part-way (that is the expected
    /// outcome).
    pub async fn oversized_element(&self, len: usize) -> anyhow::Result<()> {
        let header = Bytes::from(format!("4.blob,1.1,{len}."));
        self.command(Duration::from_secs(600), |done| Command::Flood {
            header,
            len: len as u64,
            trailer: Bytes::from_static(b";"),
            done,
        })
        .await?;
        Ok(())
    }

    /// Waits up to `timeout` until `pred` holds for the received instructions.
    pub async fn wait_received(
        &self,
        mut pred: impl FnMut(&[Instruction]) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.wait_state(timeout, "client instructions", |s| pred(&s.received))
            .await
    }

    /// Waits up to `timeout` for an event matching `pred` and returns it.
    pub async fn wait_event(
        &self,
        mut pred: impl FnMut(&ConnEvent) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<ConnEvent> {
        let mut found = None;
        self.wait_state(timeout, "an event", |s| {
            found = s.events.iter().find(|e| pred(e)).cloned();
            found.is_some()
        })
        .await?;
        found.context("event vanished")
    }

    /// Waits up to `timeout` for [`ConnEvent::BulkDone`]; returns (bytes, frames).
    pub async fn wait_bulk_done(&self, timeout: Duration) -> anyhow::Result<(u64, u64)> {
        match self
            .wait_event(
                |e| matches!(e, ConnEvent::BulkDone { .. } | ConnEvent::Closed(_)),
                timeout,
            )
            .await?
        {
            ConnEvent::BulkDone { bytes, frames } => Ok((bytes, frames)),
            other => bail!("the connection ended before the bulk transfer: {other:?}"),
        }
    }

    /// Waits up to `timeout` for the connection to close; returns how.
    pub async fn wait_closed(&self, timeout: Duration) -> anyhow::Result<CloseReason> {
        self.wait_state(timeout, "the connection to close", |s| s.closed.is_some())
            .await?;
        self.close_reason().context("closed")
    }

    async fn close_with(&self, reason: CloseReason, goodbye: Vec<Bytes>) -> anyhow::Result<()> {
        self.command(COMMAND_TIMEOUT, |done| Command::Close {
            reason,
            goodbye,
            done: Some(done),
        })
        .await?;
        self.wait_closed(COMMAND_TIMEOUT).await?;
        Ok(())
    }

    async fn command<T>(
        &self,
        timeout: Duration,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        match tokio::time::timeout_at(deadline, self.commands.send(make(tx))).await {
            Err(_) => bail!("timed out after {timeout:?} queueing a command"),
            Ok(Err(_)) => bail!("the connection is closed"),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => bail!("the command did not complete within {timeout:?}"),
            Ok(Err(_)) => bail!("the connection closed before the command completed"),
            Ok(Ok(value)) => Ok(value),
        }
    }

    async fn wait_state(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&ConnState) -> bool,
    ) -> anyhow::Result<()> {
        let mut changes = self.shared.changed.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if self.shared.read(&mut pred) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Err(_) => bail!("timed out after {timeout:?} waiting for {what}"),
                Ok(Err(_)) => bail!("the connection state is gone"),
                Ok(Ok(())) => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shared state

struct ConnShared {
    id: u64,
    state: Mutex<ConnState>,
    changed: watch::Sender<u64>,
    cancel: CancellationToken,
}

impl ConnShared {
    fn read<R>(&self, f: impl FnOnce(&ConnState) -> R) -> R {
        f(&lock(&self.state))
    }

    fn with<R>(&self, f: impl FnOnce(&mut ConnState) -> R) -> R {
        let result = f(&mut lock(&self.state));
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        result
    }

    fn event(&self, event: ConnEvent) {
        self.with(|s| s.push_event(event));
    }

    /// Records why the connection is closing; the first reason wins.
    fn mark_closing(&self, reason: CloseReason) -> bool {
        self.with(|s| {
            if s.closing.is_none() {
                s.closing = Some(reason);
                true
            } else {
                false
            }
        })
    }

    fn finish(&self, default: CloseReason) {
        self.with(|s| {
            if s.closed.is_none() {
                let reason = s.closing.unwrap_or(default);
                s.closed = Some(reason);
                s.push_event(ConnEvent::Closed(reason));
            }
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct ConnState {
    config: Arc<PeerConfig>,
    record: Option<ConnectRecord>,
    received: Vec<Instruction>,
    received_bytes: usize,
    events: Vec<ConnEvent>,
    clipboards: Vec<String>,
    uploads: Vec<Upload>,
    sent_syncs: VecDeque<u64>,
    /// guacd's `client->last_sent_timestamp`.
    last_sent_sync: u64,
    /// guacd's `user->last_frame_duration` (ms).
    last_frame_duration: i64,
    stats: PeerStats,
    closing: Option<CloseReason>,
    closed: Option<CloseReason>,
}

impl ConnState {
    fn new(config: Arc<PeerConfig>) -> Self {
        Self {
            config,
            record: None,
            received: Vec::new(),
            received_bytes: 0,
            events: Vec::new(),
            clipboards: Vec::new(),
            uploads: Vec::new(),
            sent_syncs: VecDeque::new(),
            // guac_client_alloc starts the timeline at the connection's creation: a reply to
            // a timestamp before that is not "in the future".
            last_sent_sync: now_ms(),
            last_frame_duration: 0,
            stats: PeerStats::default(),
            closing: None,
            closed: None,
        }
    }

    fn push_event(&mut self, event: ConnEvent) {
        if self.events.len() < MAX_EVENTS || matches!(event, ConnEvent::Closed(_)) {
            self.events.push(event);
        }
    }

    fn push_received(&mut self, instruction: &Instruction) {
        self.stats.received_count += 1;
        let len = instruction.len();
        if self.received.len() >= self.config.max_received
            || self.received_bytes.saturating_add(len) > self.config.max_received_bytes
        {
            self.stats.received_dropped += 1;
            return;
        }
        self.received_bytes += len;
        self.received.push(detach(instruction));
    }

    fn sync_sent(&mut self, timestamp: u64) {
        if self.sent_syncs.len() >= MAX_SENT_SYNCS {
            self.sent_syncs.pop_front();
        }
        self.sent_syncs.push_back(timestamp);
        self.last_sent_sync = timestamp;
        self.stats.last_sync_sent = timestamp;
    }

    /// `__guac_handle_sync` of guacd 1.5: rejects a timestamp in the future, then updates
    /// the acknowledged timestamp and the processing-lag estimate.
    fn client_sync(&mut self, timestamp: u64) -> Result<(), u64> {
        if timestamp > self.last_sent_sync {
            return Err(self.last_sent_sync);
        }
        if self
            .stats
            .last_sync_acked
            .is_none_or(|acked| timestamp >= acked)
        {
            self.stats.last_sync_acked = Some(timestamp);
            let frame_duration = i64::try_from(now_ms().saturating_sub(timestamp)).unwrap_or(0);
            let mut lag = self.stats.processing_lag.as_millis() as i64;
            if self.last_frame_duration != 0 {
                lag = (frame_duration - self.last_frame_duration).max(0);
                self.stats.processing_lag = Duration::from_millis(lag as u64);
            }
            self.last_frame_duration = frame_duration - lag;
        }
        Ok(())
    }
}

/// A copy of `instruction` with its own allocation (decoded instructions share the read
/// buffer, which a kept instruction would otherwise pin).
fn detach(instruction: &Instruction) -> Instruction {
    let mut decoder = Decoder::new(Limits::default());
    decoder.feed(instruction.raw());
    match decoder.poll_instruction() {
        Ok(Some(copy)) => copy,
        _ => instruction.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Accepting and the handshake

#[derive(Clone)]
struct PeerContext {
    config: Arc<PeerConfig>,
    tiles: Arc<Tiles>,
}

async fn accept_loop(
    listener: TcpListener,
    context: PeerContext,
    cancel: CancellationToken,
    connections: mpsc::Sender<PeerConn>,
    accepted: Arc<AtomicU64>,
) {
    loop {
        let accept = tokio::select! {
            () = cancel.cancelled() => return,
            accept = listener.accept() => accept,
        };
        let Ok((stream, _)) = accept else {
            // Out of file descriptors and the like: try again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let id = accepted.fetch_add(1, Ordering::Relaxed) + 1;
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(ConnShared {
            id,
            state: Mutex::new(ConnState::new(context.config.clone())),
            changed,
            cancel: cancel.child_token(),
        });
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let conn = PeerConn {
            shared: shared.clone(),
            commands: commands_tx.clone(),
        };
        // A test that never asks for its connections must not stop the peer.
        let _ = connections.try_send(conn);
        tokio::spawn(run_connection(
            stream,
            context.clone(),
            shared,
            commands_tx,
            commands_rx,
        ));
    }
}

async fn run_connection(
    mut stream: TcpStream,
    context: PeerContext,
    shared: Arc<ConnShared>,
    commands_tx: mpsc::Sender<Command>,
    commands_rx: mpsc::Receiver<Command>,
) {
    let mut decoder = Decoder::new(Limits::default());
    let handshake = tokio::select! {
        () = shared.cancel.cancelled() => Err(CloseReason::Shutdown),
        result = handshake(&mut stream, &mut decoder, &context.config, &shared) => result,
    };
    let (width, height) = match handshake {
        Ok(size) => size,
        Err(reason) => {
            shared.mark_closing(reason);
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, stream.shutdown()).await;
            shared.finish(reason);
            return;
        }
    };
    let (read_half, write_half) = stream.into_split();
    let display_at = Instant::now() + context.config.connect_delay;
    let reader = tokio::spawn(
        Reader {
            reader: read_half,
            decoder,
            shared: shared.clone(),
            commands: commands_tx,
            config: context.config.clone(),
            streams: HashMap::new(),
            disable_upload: shared.read(|s| {
                s.record.as_ref().is_some_and(|r| {
                    r.protocol == "rdp"
                        && r.parameters.get("disable-upload").map(String::as_str) == Some("true")
                })
            }),
        }
        .run(),
    );
    let mut output = Output::new(write_half, context, shared.clone(), width, height);
    output.run(commands_rx, display_at).await;
    drop(output);
    shared.cancel.cancel();
    let _ = reader.await;
    shared.finish(CloseReason::Shutdown);
}

/// guacd's handshake (see the module docs). Returns the display size, or why the
/// connection closes (after whatever guacd would send).
async fn handshake(
    stream: &mut TcpStream,
    decoder: &mut Decoder,
    config: &PeerConfig,
    shared: &ConnShared,
) -> Result<(u32, u32), CloseReason> {
    let timeout = config.client_timeout;
    let mut reader = HandshakeReader {
        buf: BytesMut::with_capacity(READ_CHUNK),
    };
    let failed = |failure: HandshakeFailure| {
        shared.event(ConnEvent::HandshakeFailed(failure));
        CloseReason::HandshakeFailed
    };

    // `select` (guacd_route_connection).
    let select = reader
        .next(stream, decoder, timeout)
        .await
        .map_err(failed)?;
    if !select.is(opcode::SELECT) || select.arg_count() != 1 {
        return Err(failed(HandshakeFailure::BadSelect));
    }
    let protocol = select.arg(0).unwrap_or_default().to_owned();
    if protocol.starts_with('$') {
        return Err(failed(HandshakeFailure::UnknownConnection));
    }
    let names: Vec<String> = match (
        config.hostile_args,
        protocol_args_of(config.guacd, &protocol),
    ) {
        (Some(count), _) => (0..count).map(|i| format!("hostile-arg-{i}")).collect(),
        (None, Some(names)) => names.iter().map(|&n| n.to_owned()).collect(),
        (None, None) => {
            shared.event(ConnEvent::UnknownProtocol(protocol));
            return Err(CloseReason::UnknownProtocol);
        }
    };
    let mut args = Vec::with_capacity(names.len() + 1);
    args.push(GUACD_PROTOCOL_VERSION.to_owned());
    args.extend(names.iter().cloned());
    let mut args_instruction = BytesMut::new();
    zt_guac::encode(opcode::ARGS, &args, &mut args_instruction);
    write_handshake(stream, &args_instruction, timeout)
        .await
        .map_err(failed)?;

    // `size`, `audio`, `video`, `image`, `timezone`, `name` until `connect`
    // (__guac_user_handshake).
    let mut record = ConnectRecord {
        protocol,
        args: names,
        size: (0, 0, 96),
        ..ConnectRecord::default()
    };
    let connect = loop {
        let instruction = reader
            .next(stream, decoder, timeout)
            .await
            .map_err(failed)?;
        let strings = || instruction.args().map(str::to_owned).collect::<Vec<_>>();
        match instruction.opcode() {
            opcode::CONNECT => break instruction,
            opcode::SIZE => {
                if instruction.arg_count() < 2 {
                    return Err(failed(HandshakeFailure::BadSize));
                }
                let dpi = instruction.arg(2).map_or(96, atoi);
                record.size = (
                    instruction.arg(0).map_or(0, atoi),
                    instruction.arg(1).map_or(0, atoi),
                    dpi,
                );
            }
            opcode::AUDIO => record.audio = strings(),
            opcode::VIDEO => record.video = strings(),
            opcode::IMAGE => record.image = strings(),
            opcode::TIMEZONE => {
                record.timezone = instruction
                    .arg(0)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned);
            }
            opcode::NAME => {
                record.name = instruction
                    .arg(0)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned);
            }
            _ => {} // guacd ignores opcodes it has no handshake handler for
        }
    };

    if !config.ready_delay.is_zero() {
        tokio::time::sleep(config.ready_delay).await;
    }
    let expected = args.len();
    let got = connect.arg_count();
    if expected == got
        && let Some((message, status)) = &config.error_on_connect
    {
        let error = encode(opcode::ERROR, &[message.as_str(), &status.to_string()]);
        let _ = write_handshake(stream, &error, timeout).await;
        shared.event(ConnEvent::ErrorOnConnect(*status));
        return Err(CloseReason::ErrorOnConnect);
    }
    // guacd sends `ready` before it checks the values.
    let id = connection_id();
    write_handshake(stream, &encode(opcode::READY, &[&id]), timeout)
        .await
        .map_err(failed)?;
    if expected != got {
        shared.event(ConnEvent::WrongValueCount { expected, got });
        return Err(CloseReason::WrongValueCount);
    }
    let mut values = connect.args();
    record.version = values.next().unwrap_or_default().to_owned();
    record.parameters = record
        .args
        .iter()
        .cloned()
        .zip(values.map(str::to_owned))
        .collect();
    // The RDP plugin uses the `width`/`height` parameters when set, else the client's size.
    let parameter = |name: &str| {
        record
            .parameters
            .get(name)
            .map(|v| atoi(v))
            .filter(|&v| v > 0)
    };
    // … and 1024×768 (GUAC_RDP_DEFAULT_WIDTH/HEIGHT) when neither says.
    let width = parameter("width")
        .or_else(|| (record.size.0 > 0).then_some(record.size.0))
        .unwrap_or(1024);
    let height = parameter("height")
        .or_else(|| (record.size.1 > 0).then_some(record.size.1))
        .unwrap_or(768);
    shared.with(|s| {
        s.record = Some(record);
        s.push_event(ConnEvent::Ready(id));
    });
    Ok((width.clamp(1, MAX_DISPLAY), height.clamp(1, MAX_DISPLAY)))
}

struct HandshakeReader {
    buf: BytesMut,
}

impl HandshakeReader {
    async fn next(
        &mut self,
        stream: &mut TcpStream,
        decoder: &mut Decoder,
        timeout: Duration,
    ) -> Result<Instruction, HandshakeFailure> {
        loop {
            match decoder.poll_instruction() {
                Ok(Some(instruction)) => return Ok(instruction),
                Ok(None) => {}
                Err(error) => return Err(HandshakeFailure::Malformed(error)),
            }
            self.buf.clear();
            match tokio::time::timeout(timeout, stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(HandshakeFailure::TimedOut),
                Ok(Err(_) | Ok(0)) => return Err(HandshakeFailure::Closed),
                Ok(Ok(_)) => decoder.feed(&self.buf),
            }
        }
    }
}

async fn write_handshake(
    stream: &mut TcpStream,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), HandshakeFailure> {
    match tokio::time::timeout(timeout, stream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(HandshakeFailure::Closed),
        Err(_) => Err(HandshakeFailure::TimedOut),
    }
}

/// A connection id as guacd makes them (`guac_generate_id('$')`: `$` and a UUID).
fn connection_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        bytes[..8].copy_from_slice(&now_ms().to_le_bytes());
    }
    let h = hex::encode(bytes);
    format!(
        "${}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// C's `atoi` for the non-negative numbers of the handshake: leading digits, else 0.
fn atoi(text: &str) -> u32 {
    let digits: String = text
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .take(9)
        .collect();
    digits.parse().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// The input side: guacd's user input thread

struct Reader {
    reader: OwnedReadHalf,
    decoder: Decoder,
    shared: Arc<ConnShared>,
    commands: mpsc::Sender<Command>,
    config: Arc<PeerConfig>,
    streams: HashMap<u32, InputStream>,
    disable_upload: bool,
}

enum InputStream {
    Clipboard {
        data: Vec<u8>,
    },
    Upload(Upload),
    /// Opened, with no blob handler: `blob`s get "File transfer unsupported".
    Unhandled,
    /// `argv`, `pipe`, `audio`, `put`: data accepted and dropped.
    Sink,
}

/// Whether the input loop goes on.
enum Flow {
    Continue,
    Stop,
}

impl Reader {
    async fn run(mut self) {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            loop {
                match self.decoder.poll_instruction() {
                    Ok(Some(instruction)) => {
                        if let Flow::Stop = self.handle(&instruction).await {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        // guacd logs "Guacamole connection failure" and stops the user; the
                        // end of its I/O loop sends `disconnect`.
                        self.shared.event(ConnEvent::Malformed(error));
                        self.close(CloseReason::Malformed, vec![disconnect()]).await;
                        return;
                    }
                }
            }
            buf.clear();
            let read = tokio::select! {
                () = self.shared.cancel.cancelled() => return,
                read = tokio::time::timeout(self.config.client_timeout, self.reader.read_buf(&mut buf)) => read,
            };
            match read {
                Err(_) => {
                    // guac_user_abort(user, GUAC_PROTOCOL_STATUS_CLIENT_TIMEOUT, "User is not
                    // responding."), then `disconnect`.
                    self.shared.event(ConnEvent::TimedOut);
                    let error = encode(
                        opcode::ERROR,
                        &[
                            "User is not responding.",
                            &Status::CLIENT_TIMEOUT.code().to_string(),
                        ],
                    );
                    self.close(CloseReason::TimedOut, vec![error, disconnect()])
                        .await;
                    return;
                }
                Ok(Err(_) | Ok(0)) => {
                    self.shared.event(ConnEvent::ClientClosed);
                    self.close(CloseReason::ClientClosed, vec![disconnect()])
                        .await;
                    return;
                }
                Ok(Ok(_)) => self.decoder.feed(&buf),
            }
        }
    }

    /// Asks the output side to send `goodbye` and close; closes anyway if it cannot.
    async fn close(&self, reason: CloseReason, goodbye: Vec<Bytes>) {
        if !self.shared.mark_closing(reason) {
            return; // already closing for another reason
        }
        let command = Command::Close {
            reason,
            goodbye,
            done: None,
        };
        match tokio::time::timeout(GOODBYE_TIMEOUT, self.commands.send(command)).await {
            Ok(Ok(())) => {
                tokio::select! {
                    () = self.shared.cancel.cancelled() => {}
                    () = tokio::time::sleep(GOODBYE_TIMEOUT * 2) => self.shared.cancel.cancel(),
                }
            }
            _ => self.shared.cancel.cancel(),
        }
    }

    async fn reply(&self, bytes: Bytes) -> Flow {
        let command = Command::Write { bytes, done: None };
        match self.commands.send(command).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }

    async fn ack(&self, stream: &str, message: &str, status: Status) -> Flow {
        self.reply(encode(
            opcode::ACK,
            &[stream, message, &status.code().to_string()],
        ))
        .await
    }

    /// Records and handles one client instruction. Instructions are recorded once handled, so
    /// a test that sees one in [`PeerConn::received`] sees its effects too; those that close
    /// the connection are recorded before it closes.
    async fn handle(&mut self, instruction: &Instruction) -> Flow {
        if instruction.is(opcode::DISCONNECT) {
            self.record(instruction);
            return self.dispatch(instruction).await;
        }
        let flow = self.dispatch(instruction).await;
        if !instruction.is(opcode::SYNC) || matches!(flow, Flow::Continue) {
            self.record(instruction);
        }
        flow
    }

    fn record(&self, instruction: &Instruction) {
        self.shared.with(|s| s.push_received(instruction));
    }

    async fn dispatch(&mut self, instruction: &Instruction) -> Flow {
        let arg = |i: usize| instruction.arg(i).unwrap_or_default();
        match instruction.opcode() {
            opcode::SYNC => {
                let Ok(timestamp) = arg(0).parse::<u64>() else {
                    return Flow::Continue;
                };
                if let Err(last_sent) = self.shared.with(|s| s.client_sync(timestamp)) {
                    // "Error if timestamp is in future": the handler fails, guacd stops the
                    // user and its I/O loop sends `disconnect`.
                    self.record(instruction);
                    self.shared.event(ConnEvent::FutureSync {
                        timestamp,
                        last_sent,
                    });
                    self.close(CloseReason::FutureSync, vec![disconnect()])
                        .await;
                    return Flow::Stop;
                }
                Flow::Continue
            }
            opcode::DISCONNECT => {
                self.shared.event(ConnEvent::ClientDisconnected);
                self.close(CloseReason::ClientDisconnected, vec![disconnect()])
                    .await;
                Flow::Stop
            }
            opcode::CLIPBOARD => {
                let Some(index) = self.input_index(arg(0)).await else {
                    return Flow::Continue;
                };
                self.open(arg(0), index, InputStream::Clipboard { data: Vec::new() })
                    .await
            }
            opcode::FILE => {
                let Some(index) = self.input_index(arg(0)).await else {
                    return Flow::Continue;
                };
                if self.disable_upload {
                    if let Flow::Stop = self.open(arg(0), index, InputStream::Unhandled).await {
                        return Flow::Stop;
                    }
                    return self
                        .ack(arg(0), "FAIL (UPLOAD DISABLED)", Status::CLIENT_FORBIDDEN)
                        .await;
                }
                let upload = InputStream::Upload(Upload {
                    name: arg(2).to_owned(),
                    mimetype: arg(1).to_owned(),
                    data: Vec::new(),
                    truncated: 0,
                });
                if let Flow::Stop = self.open(arg(0), index, upload).await {
                    return Flow::Stop;
                }
                self.ack(arg(0), "OK (STREAM BEGIN)", Status::SUCCESS).await
            }
            opcode::ARGV | opcode::PIPE | opcode::AUDIO | opcode::PUT => {
                let stream = if instruction.is(opcode::PUT) {
                    arg(1)
                } else {
                    arg(0)
                };
                match self.input_index(stream).await {
                    Some(index) => self.open(stream, index, InputStream::Sink).await,
                    None => Flow::Continue,
                }
            }
            opcode::BLOB => self.blob(arg(0), arg(1)).await,
            opcode::END => self.end(arg(0)).await,
            opcode::ACK => {
                // Client-level (odd) streams are ignored by guacd; user-level ones are the
                // downloads.
                let stream = arg(0).parse::<u32>().ok().filter(|s| s % 2 == 0);
                if let Some(stream) = stream {
                    let command = Command::ClientAck {
                        stream,
                        message: arg(1).to_owned(),
                        status: atoi(arg(2)),
                    };
                    if self.commands.send(command).await.is_err() {
                        return Flow::Stop;
                    }
                }
                Flow::Continue
            }
            _ => Flow::Continue,
        }
    }

    /// A client stream index guacd accepts, or the `ack … 768` it answers otherwise.
    async fn input_index(&self, text: &str) -> Option<u32> {
        match text.parse::<u32>() {
            Ok(index) if index < GUAC_USER_MAX_STREAMS => Some(index),
            _ => {
                self.invalid_stream(text).await;
                None
            }
        }
    }

    async fn invalid_stream(&self, text: &str) {
        self.shared
            .event(ConnEvent::InvalidStream(truncate(text, 32)));
        let _ = self
            .ack(text, "Invalid stream index", Status::CLIENT_BAD_REQUEST)
            .await;
    }

    async fn blob(&mut self, stream: &str, data: &str) -> Flow {
        let open = stream
            .parse::<u32>()
            .ok()
            .filter(|i| self.streams.contains_key(i));
        let Some(index) = open else {
            self.invalid_stream(stream).await;
            return Flow::Continue;
        };
        let max_upload = self.config.max_upload_bytes;
        match self.streams.get_mut(&index) {
            Some(InputStream::Clipboard { data: buffer }) => {
                let bytes = decode_base64(data);
                let room = CLIPBOARD_MAX_LENGTH.saturating_sub(buffer.len());
                buffer.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
                Flow::Continue
            }
            Some(InputStream::Upload(upload)) => {
                let bytes = decode_base64(data);
                let room = max_upload.saturating_sub(upload.data.len());
                let keep = room.min(bytes.len());
                upload
                    .data
                    .extend_from_slice(bytes.get(..keep).unwrap_or_default());
                upload.truncated += (bytes.len() - keep) as u64;
                self.ack(stream, "OK (DATA RECEIVED)", Status::SUCCESS)
                    .await
            }
            Some(InputStream::Unhandled) => {
                self.ack(stream, "File transfer unsupported", Status::UNSUPPORTED)
                    .await
            }
            Some(InputStream::Sink) | None => Flow::Continue,
        }
    }

    /// Opens client stream `index` (`__init_input_stream`): a stream already open there is
    /// ended first, as if the client had sent `end`.
    async fn open(&mut self, text: &str, index: u32, stream: InputStream) -> Flow {
        match self.streams.insert(index, stream) {
            Some(previous) => self.finish(text, previous).await,
            None => Flow::Continue,
        }
    }

    async fn end(&mut self, stream: &str) -> Flow {
        let open = stream
            .parse::<u32>()
            .ok()
            .and_then(|i| self.streams.remove(&i));
        match open {
            None => {
                self.invalid_stream(stream).await;
                Flow::Continue
            }
            Some(open) => self.finish(stream, open).await,
        }
    }

    /// The end handler of a client stream.
    async fn finish(&self, stream: &str, open: InputStream) -> Flow {
        match open {
            InputStream::Clipboard { data } => {
                let text = String::from_utf8_lossy(&data).into_owned();
                self.shared.with(|s| {
                    if s.clipboards.len() >= MAX_KEPT_STREAMS {
                        s.clipboards.remove(0);
                    }
                    s.clipboards.push(text);
                });
                Flow::Continue
            }
            InputStream::Upload(upload) => {
                self.shared.with(|s| {
                    if s.uploads.len() >= MAX_KEPT_UPLOADS {
                        s.uploads.remove(0);
                    }
                    s.uploads.push(upload);
                });
                self.ack(stream, "OK (STREAM END)", Status::SUCCESS).await
            }
            InputStream::Unhandled | InputStream::Sink => Flow::Continue,
        }
    }
}

/// guacd's lenient base64 decoding (`guac_protocol_decode_base64`): decodes what it can.
fn decode_base64(text: &str) -> Vec<u8> {
    if let Ok(bytes) = STANDARD.decode(text) {
        return bytes;
    }
    let clean: String = text
        .chars()
        .take_while(|&c| c != '=')
        .filter(|c| c.is_ascii_alphanumeric() || *c == '+' || *c == '/')
        .collect();
    // Unpadded base64 cannot end with a single character of a group.
    let usable = if clean.len() % 4 == 1 {
        clean.len() - 1
    } else {
        clean.len()
    };
    STANDARD_NO_PAD
        .decode(clean.get(..usable).unwrap_or_default())
        .unwrap_or_default()
}

fn truncate(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

// ---------------------------------------------------------------------------------------
// The output side: display, replies, commands

enum Command {
    Write {
        bytes: Bytes,
        done: Option<oneshot::Sender<bool>>,
    },
    Clipboard {
        mimetype: String,
        data: Vec<u8>,
        done: oneshot::Sender<bool>,
    },
    Download {
        name: String,
        mimetype: String,
        data: Bytes,
        done: oneshot::Sender<Result<DownloadOutcome, String>>,
    },
    ClientAck {
        stream: u32,
        message: String,
        status: u32,
    },
    Close {
        reason: CloseReason,
        goodbye: Vec<Bytes>,
        done: Option<oneshot::Sender<()>>,
    },
    SyncFlood {
        count: u64,
        done: oneshot::Sender<u64>,
    },
    /// `header`, then `len` filler bytes, then `trailer`.
    Flood {
        header: Bytes,
        len: u64,
        trailer: Bytes,
        done: oneshot::Sender<u64>,
    },
}

struct Download {
    data: Bytes,
    offset: usize,
    done: oneshot::Sender<Result<DownloadOutcome, String>>,
}

/// The output loop stops (the connection is closing).
struct Stop;

struct Output {
    writer: OwnedWriteHalf,
    config: Arc<PeerConfig>,
    tiles: Arc<Tiles>,
    shared: Arc<ConnShared>,
    rng: Rng,
    width: u32,
    height: u32,
    last_write: Instant,
    last_timestamp: u64,
    /// Timestamps of frames the client has not acknowledged yet, oldest first.
    unacked: VecDeque<u64>,
    frames: u64,
    display_bytes: u64,
    bulk_done: bool,
    downloads: HashMap<u32, Download>,
    out: BytesMut,
    /// guacd 1.6: the bounding rectangle (x0, y0, x1, y1) of what the frame drew on layer 0.
    dirty: Option<(i64, i64, i64, i64)>,
    /// [`DisplayMode::Replay`]: the frames still to send.
    replay: Option<Replay>,
}

/// A recorded stream being replayed.
struct Replay {
    /// Frames (each ending with its `sync`, if it has one) and their `sync` timestamps.
    frames: VecDeque<(Bytes, Option<u64>)>,
    /// The first frame's timestamp, and when it was sent.
    start: Option<(u64, Instant)>,
    speed: u32,
    sent: u64,
}

impl Replay {
    fn new(stream: &Bytes, speed: u32) -> Self {
        let mut decoder = Decoder::new(Limits::default());
        decoder.feed(stream);
        let mut instructions = Vec::new();
        while let Ok(Some(instruction)) = decoder.poll_instruction() {
            instructions.push(instruction);
        }
        // The recorded session's own end is not guacd's to send again.
        while instructions
            .last()
            .is_some_and(|i| i.is(opcode::ERROR) || i.is(opcode::DISCONNECT))
        {
            instructions.pop();
        }
        let mut frames = VecDeque::new();
        let mut frame = BytesMut::new();
        for instruction in &instructions {
            frame.extend_from_slice(instruction.raw());
            if instruction.is(opcode::SYNC) {
                let timestamp = instruction.arg(0).and_then(|t| t.parse().ok());
                frames.push_back((frame.split().freeze(), timestamp));
            }
        }
        if !frame.is_empty() {
            frames.push_back((frame.freeze(), None));
        }
        Self {
            frames,
            start: None,
            speed: speed.max(1),
            sent: 0,
        }
    }

    /// When the next frame is due.
    fn next_at(&self) -> Option<Instant> {
        let (_, timestamp) = self.frames.front()?;
        Some(match (self.start, timestamp) {
            (Some((first, at)), Some(t)) => {
                at + Duration::from_millis(t.saturating_sub(first) / u64::from(self.speed))
            }
            _ => Instant::now(),
        })
    }
}

impl Output {
    fn new(
        writer: OwnedWriteHalf,
        context: PeerContext,
        shared: Arc<ConnShared>,
        width: u32,
        height: u32,
    ) -> Self {
        let seed = context.config.seed ^ shared.id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let replay = match &context.config.display {
            DisplayMode::Replay { stream, speed } => Some(Replay::new(stream, *speed)),
            _ => None,
        };
        Self {
            writer,
            config: context.config,
            tiles: context.tiles,
            shared,
            rng: Rng::new(seed),
            width,
            height,
            last_write: Instant::now(),
            last_timestamp: 0,
            unacked: VecDeque::new(),
            frames: 0,
            display_bytes: 0,
            bulk_done: false,
            downloads: HashMap::new(),
            out: BytesMut::new(),
            dirty: None,
            replay,
        }
    }

    async fn run(&mut self, mut commands: mpsc::Receiver<Command>, display_at: Instant) {
        if self.config.guacd == GuacdVersion::V1_6
            && self.replay.is_none()
            && self.greet().await.is_err()
        {
            commands.close();
            return;
        }
        let _ = self.step_loop(&mut commands, display_at).await;
        commands.close();
    }

    async fn step_loop(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        display_at: Instant,
    ) -> Result<(), Stop> {
        let mut changes = self.shared.changed.subscribe();
        let mut display_started = false;
        let mut next_frame = display_at;
        let cancel = self.shared.cancel.clone();
        loop {
            let window_open = self.window_open();
            let frames = match self.config.display {
                DisplayMode::Frames { interval } => Some(interval),
                _ => None,
            };
            let bulk_ready = display_started
                && window_open
                && !self.bulk_done
                && matches!(self.config.display, DisplayMode::Bulk { .. });
            let keep_alive_at = self.last_write + self.config.keep_alive_interval;
            let replay_at = self
                .replay
                .as_ref()
                .and_then(Replay::next_at)
                .filter(|_| display_started && window_open);
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Stop),
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await?,
                    None => return Err(Stop),
                },
                () = tokio::time::sleep_until(display_at), if !display_started => {
                    display_started = true;
                    self.initial_display().await?;
                    next_frame = Instant::now() + frames.unwrap_or_default();
                }
                () = tokio::time::sleep_until(next_frame), if display_started && window_open && frames.is_some() => {
                    self.frame().await?;
                    let interval = frames.unwrap_or_default();
                    next_frame = (next_frame + interval).max(Instant::now());
                }
                () = std::future::ready(()), if bulk_ready => self.bulk_frame().await?,
                () = sleep_until(replay_at), if replay_at.is_some() => self.replay_frame().await?,
                _ = changes.changed(), if display_started && !window_open => {}
                () = tokio::time::sleep_until(keep_alive_at) => {
                    self.write(&encode(opcode::NOP, &[])).await?;
                }
            }
        }
    }

    fn window_open(&mut self) -> bool {
        if let Some(acked) = self.shared.read(|s| s.stats.last_sync_acked) {
            while self.unacked.front().is_some_and(|&t| t <= acked) {
                self.unacked.pop_front();
            }
        }
        self.unacked.len() < self.config.max_unacked_frames.max(1)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        let result = tokio::select! {
            biased;
            () = self.shared.cancel.cancelled() => return Err(Stop),
            result = self.writer.write_all(bytes) => result,
        };
        if result.is_err() {
            self.shared.mark_closing(CloseReason::WriteFailed);
            return Err(Stop);
        }
        self.last_write = Instant::now();
        let len = bytes.len() as u64;
        self.shared.with(|s| s.stats.bytes_sent += len);
        Ok(())
    }

    async fn command(&mut self, command: Command) -> Result<(), Stop> {
        match command {
            Command::Write { bytes, done } => {
                let result = self.write(&bytes).await;
                if let Some(done) = done {
                    let _ = done.send(result.is_ok());
                }
                result
            }
            Command::Clipboard {
                mimetype,
                data,
                done,
            } => {
                // guac_common_clipboard_send: one client-level stream, 4096-byte blocks.
                let mut out = BytesMut::new();
                zt_guac::encode(
                    opcode::CLIPBOARD,
                    &[IMAGE_STREAM, mimetype.as_str()],
                    &mut out,
                );
                for block in data.chunks(CLIPBOARD_BLOCK_SIZE) {
                    zt_guac::encode(
                        opcode::BLOB,
                        &[IMAGE_STREAM, STANDARD.encode(block).as_str()],
                        &mut out,
                    );
                }
                zt_guac::encode(opcode::END, &[IMAGE_STREAM], &mut out);
                let result = self.write(&out).await;
                let _ = done.send(result.is_ok());
                result
            }
            Command::Download {
                name,
                mimetype,
                data,
                done,
            } => {
                let Some(stream) = (0..GUAC_USER_MAX_STREAMS)
                    .map(|k| k * 2)
                    .find(|s| !self.downloads.contains_key(s))
                else {
                    let _ = done.send(Err("no free user stream".into()));
                    return Ok(());
                };
                self.downloads.insert(
                    stream,
                    Download {
                        data,
                        offset: 0,
                        done,
                    },
                );
                self.write(&encode(
                    opcode::FILE,
                    &[&stream.to_string(), &mimetype, &name],
                ))
                .await
            }
            Command::ClientAck {
                stream,
                message,
                status,
            } => self.client_ack(stream, message, status).await,
            Command::Close {
                reason,
                goodbye,
                done,
            } => {
                self.shared.mark_closing(reason);
                for bytes in goodbye {
                    match tokio::time::timeout(GOODBYE_TIMEOUT, self.write(&bytes)).await {
                        Ok(Ok(())) => {}
                        _ => break,
                    }
                }
                let _ = tokio::time::timeout(GOODBYE_TIMEOUT, self.writer.shutdown()).await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
                Err(Stop)
            }
            Command::SyncFlood { count, done } => {
                let mut sent = 0;
                while sent < count {
                    let batch = (count - sent).min(SYNC_FLOOD_BATCH);
                    let mut out = BytesMut::new();
                    let mut timestamps = Vec::with_capacity(batch as usize);
                    for _ in 0..batch {
                        let timestamp = self.next_timestamp();
                        timestamps.push(timestamp);
                        self.push_sync(&mut out, timestamp);
                    }
                    // Recorded before they are written: the client may answer at once.
                    self.shared
                        .with(|s| timestamps.iter().for_each(|&t| s.sync_sent(t)));
                    if self.write(&out).await.is_err() {
                        let _ = done.send(sent);
                        return Err(Stop);
                    }
                    sent += batch;
                }
                let _ = done.send(sent);
                Ok(())
            }
            Command::Flood {
                header,
                len,
                trailer,
                done,
            } => {
                let mut written = 0u64;
                let filler = vec![b'A'; FLOOD_CHUNK];
                let result = async {
                    self.write(&header).await?;
                    written += header.len() as u64;
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(FLOOD_CHUNK as u64) as usize;
                        self.write(filler.get(..n).unwrap_or_default()).await?;
                        written += n as u64;
                        left -= n as u64;
                    }
                    self.write(&trailer).await?;
                    written += trailer.len() as u64;
                    Ok::<(), Stop>(())
                }
                .await;
                let _ = done.send(written);
                result
            }
        }
    }

    /// guacd's download ack handler (RDP `download.c`): a block per successful `ack`, `end`
    /// at the end of the data; a failing `ack` frees the stream with nothing sent.
    async fn client_ack(&mut self, stream: u32, message: String, status: u32) -> Result<(), Stop> {
        let Some(download) = self.downloads.get_mut(&stream) else {
            return Ok(());
        };
        if status != Status::SUCCESS.code() {
            if let Some(download) = self.downloads.remove(&stream) {
                let _ = download
                    .done
                    .send(Ok(DownloadOutcome::Refused(status, message)));
            }
            return Ok(());
        }
        let index = stream.to_string();
        if download.offset < download.data.len() {
            let end = (download.offset + DOWNLOAD_BLOCK_SIZE).min(download.data.len());
            let block = download.data.slice(download.offset..end);
            download.offset = end;
            self.write(&encode(opcode::BLOB, &[&index, &STANDARD.encode(&block)]))
                .await
        } else {
            let result = self.write(&encode(opcode::END, &[&index])).await;
            if let Some(download) = self.downloads.remove(&stream) {
                let _ = download.done.send(Ok(DownloadOutcome::Completed));
            }
            result
        }
    }

    /// guacd's timestamps are milliseconds since the epoch; the peer never repeats one, so
    /// each `sync` reply acknowledges an exact frame.
    fn next_timestamp(&mut self) -> u64 {
        let timestamp = now_ms().max(self.last_timestamp + 1);
        self.last_timestamp = timestamp;
        timestamp
    }

    fn push_sync(&self, out: &mut BytesMut, timestamp: u64) {
        let mut w = InstructionWriter::new(out, opcode::SYNC);
        w.arg_u64(timestamp);
        if self.config.sync_frame_count {
            w.arg_u64(1);
        }
        w.finish();
    }

    /// Ends a frame with `sync` and writes it.
    async fn send_frame(&mut self) -> Result<(), Stop> {
        let timestamp = self.next_timestamp();
        let mut out = std::mem::take(&mut self.out);
        self.push_sync(&mut out, timestamp);
        // guacd 1.6, right after the frame's sync: its changed area of layer 0 is saved into
        // the client-side backing buffer -1 (guac_display_worker_thread, END_FRAME).
        if let Some((x0, y0, x1, y1)) = self.dirty.take() {
            let mut writer = InstructionWriter::new(&mut out, opcode::COPY);
            writer.arg_i64(0).arg_i64(x0).arg_i64(y0);
            writer.arg_i64(x1 - x0).arg_i64(y1 - y0);
            writer.arg_u64(u64::from(COMP_OVER)).arg_i64(-1);
            writer.arg_i64(x0).arg_i64(y0);
            writer.finish();
        }
        self.unacked.push_back(timestamp);
        self.frames += 1;
        self.display_bytes += out.len() as u64;
        let (frames, display_bytes) = (self.frames, self.display_bytes);
        self.shared.with(|s| {
            s.sync_sent(timestamp);
            s.stats.frames_sent = frames;
            s.stats.display_bytes_sent = display_bytes;
        });
        let result = self.write(&out).await;
        out.clear();
        self.out = out;
        result
    }

    /// guacd 1.6's display greets a joining user before the target is reached: the pointer
    /// (from buffer -2, which has no size yet), the mouse and an empty frame, before any
    /// `size` of layer 0.
    async fn greet(&mut self) -> Result<(), Stop> {
        let timestamp = self.next_timestamp();
        let mut out = BytesMut::new();
        let mut writer = InstructionWriter::new(&mut out, opcode::CURSOR);
        writer.arg_i64(0).arg_i64(0).arg_i64(-2);
        writer.arg_i64(0).arg_i64(0).arg_i64(64).arg_i64(64);
        writer.finish();
        let mut writer = InstructionWriter::new(&mut out, opcode::MOUSE);
        writer.arg_i64(0).arg_i64(0).arg_i64(0).arg_u64(timestamp);
        writer.finish();
        let mut writer = InstructionWriter::new(&mut out, opcode::SYNC);
        writer.arg_u64(timestamp).arg_u64(0);
        writer.finish();
        self.unacked.push_back(timestamp);
        self.frames += 1;
        let frames = self.frames;
        self.shared.with(|s| {
            s.sync_sent(timestamp);
            s.stats.frames_sent = frames;
        });
        self.write(&out).await
    }

    /// What guacd sends once the plugin has connected: the display size, a desktop, the
    /// pointer, a first frame. A replayed stream brings its own.
    async fn initial_display(&mut self) -> Result<(), Stop> {
        if self.replay.is_some() {
            self.shared.event(ConnEvent::TargetReached);
            return Ok(());
        }
        let (w, h) = (i64::from(self.width), i64::from(self.height));
        let mut out = std::mem::take(&mut self.out);
        if self.config.guacd == GuacdVersion::V1_6 {
            layer_size(&mut out, -2, 32, 32);
        }
        layer_size(&mut out, 0, w, h);
        fill(&mut out, 0, (0, 0, w, h), (0, 99, 140));
        fill(&mut out, 0, (0, (h - 40).max(0), w, 40), (32, 32, 40));
        self.out = out;
        self.mark_dirty((0, 0, w, h));
        if self.config.guacd == GuacdVersion::V1_6 {
            self.overlapping_pair();
        }
        self.tiles(3);
        self.cursor();
        self.send_frame().await?;
        self.shared.event(ConnEvent::TargetReached);
        Ok(())
    }

    /// The next frame of a [`DisplayMode::Replay`], as recorded.
    async fn replay_frame(&mut self) -> Result<(), Stop> {
        let Some(replay) = &mut self.replay else {
            return Ok(());
        };
        let Some((frame, timestamp)) = replay.frames.pop_front() else {
            return Ok(());
        };
        if let Some(timestamp) = timestamp {
            replay
                .start
                .get_or_insert_with(|| (timestamp, Instant::now()));
            self.unacked.push_back(timestamp);
            self.shared.with(|s| s.sync_sent(timestamp));
        }
        replay.sent += 1;
        let (sent, done) = (replay.sent, replay.frames.is_empty());
        self.frames += 1;
        self.display_bytes += frame.len() as u64;
        let (frames, display_bytes) = (self.frames, self.display_bytes);
        self.shared.with(|s| {
            s.stats.frames_sent = frames;
            s.stats.display_bytes_sent = display_bytes;
        });
        self.write(&frame).await?;
        if done {
            self.shared.event(ConnEvent::ReplayDone { frames: sent });
        }
        Ok(())
    }

    async fn frame(&mut self) -> Result<(), Stop> {
        let tiles = 2 + self.rng.below(3);
        self.tiles(tiles as usize);
        if self.rng.below(3) == 0 {
            self.scroll();
        }
        if self.rng.below(4) == 0 {
            let (x, y, w, h) = self.random_rect(200, 120);
            let colour = (
                self.rng.below(256) as u8,
                self.rng.below(256) as u8,
                self.rng.below(256) as u8,
            );
            fill(&mut self.out, 0, (x, y, w, h), colour);
            self.mark_dirty((x, y, w, h));
        }
        if self.frames % 50 == 49 {
            self.cursor();
        }
        self.send_frame().await
    }

    async fn bulk_frame(&mut self) -> Result<(), Stop> {
        self.frame().await?;
        if let DisplayMode::Bulk { bytes } = self.config.display
            && self.display_bytes >= bytes
        {
            self.bulk_done = true;
            self.shared.event(ConnEvent::BulkDone {
                bytes: self.display_bytes,
                frames: self.frames,
            });
        }
        Ok(())
    }

    /// `count` random tiles on layer 0: one after the other (guacd 1.5), or (guacd 1.6)
    /// after a copy of the area they cover into buffer -1, two at a time on streams 3 and 5
    /// with their blobs interleaved, the two side by side (left and right half).
    fn tiles(&mut self, count: usize) {
        let tiles = self.tiles.clone();
        let mut placed = Vec::with_capacity(count);
        for i in 0..count {
            let index = self.rng.below(tiles.tiles.len() as u64) as usize;
            let Some(tile) = tiles.tiles.get(index) else {
                continue;
            };
            // guacd 1.6 pairs tiles: the first of a pair in the left half, the second in the
            // right half, so the two never overlap.
            let (x0, span) = match self.config.guacd {
                GuacdVersion::V1_6 if self.width >= 2 * tile.width => {
                    let half = self.width / 2;
                    (if i % 2 == 0 { 0 } else { half }, half)
                }
                _ => (0, self.width),
            };
            let x = i64::from(x0)
                + (self
                    .rng
                    .below(u64::from(span.saturating_sub(tile.width)) + 1)
                    as i64
                    & !15);
            let y = (self
                .rng
                .below(u64::from(self.height.saturating_sub(tile.height)) + 1)
                as i64)
                & !15;
            placed.push((tile, x, y));
        }
        if self.config.guacd == GuacdVersion::V1_5 {
            for (tile, x, y) in placed {
                push_image(&mut self.out, tile, COMP_OVER, 0, x, y);
            }
            return;
        }
        for &(tile, x, y) in &placed {
            self.mark_dirty((x, y, i64::from(tile.width), i64::from(tile.height)));
        }
        for pair in placed.chunks(2) {
            match pair {
                [(a, ax, ay), (b, bx, by)] if ax + i64::from(a.width) <= *bx => {
                    // Both open at once, their blobs interleaved; the second ends first.
                    push_img(&mut self.out, "3", COMP_OVER, 0, *ax, *ay);
                    push_img(&mut self.out, "5", COMP_OVER, 0, *bx, *by);
                    let mut first = a.interleaved[0].iter();
                    for blob in &b.interleaved[1] {
                        self.out.extend_from_slice(blob);
                        if let Some(blob) = first.next() {
                            self.out.extend_from_slice(blob);
                        }
                    }
                    zt_guac::encode(opcode::END, &["5"], &mut self.out);
                    for blob in first {
                        self.out.extend_from_slice(blob);
                    }
                    zt_guac::encode(opcode::END, &["3"], &mut self.out);
                }
                _ => {
                    for (tile, x, y) in pair {
                        push_img(&mut self.out, "3", COMP_OVER, 0, *x, *y);
                        for blob in &tile.interleaved[0] {
                            self.out.extend_from_slice(blob);
                        }
                        zt_guac::encode(opcode::END, &["3"], &mut self.out);
                    }
                }
            }
        }
    }

    /// guacd 1.6 remembers what each frame changed on layer 0 (one bounding rectangle).
    fn mark_dirty(&mut self, (x, y, w, h): (i64, i64, i64, i64)) {
        if self.config.guacd != GuacdVersion::V1_6 || w <= 0 || h <= 0 {
            return;
        }
        let (x1, y1) = (x + w, y + h);
        self.dirty = Some(match self.dirty {
            Some((a, b, c, d)) => (a.min(x), b.min(y), c.max(x1), d.max(y1)),
            None => (x, y, x1, y1),
        });
    }

    /// guacd 1.6's other way of streaming two images at once (its first full-screen update
    /// in the fixture): overlapping, blobs interleaved, the first opened ending first, so
    /// that every client draws them in the same order.
    fn overlapping_pair(&mut self) {
        let tiles = self.tiles.clone();
        let (Some(a), Some(b)) = (tiles.tiles.first(), tiles.tiles.get(1)) else {
            return;
        };
        let (bx, by) = (i64::from(a.width / 2), i64::from(a.height / 2));
        self.mark_dirty((0, 0, i64::from(a.width), i64::from(a.height)));
        self.mark_dirty((bx, by, i64::from(b.width), i64::from(b.height)));
        push_img(&mut self.out, "3", COMP_OVER, 0, 0, 0);
        push_img(&mut self.out, "5", COMP_OVER, 0, bx, by);
        let mut second = b.interleaved[1].iter();
        for blob in &a.interleaved[0] {
            self.out.extend_from_slice(blob);
            if let Some(blob) = second.next() {
                self.out.extend_from_slice(blob);
            }
        }
        zt_guac::encode(opcode::END, &["3"], &mut self.out);
        for blob in second {
            self.out.extend_from_slice(blob);
        }
        zt_guac::encode(opcode::END, &["5"], &mut self.out);
    }

    /// A scroll: part of the screen copied up by a line of text.
    fn scroll(&mut self) {
        let (x, y, w, h) = self.random_rect(400, 300);
        let dy = 16;
        if h <= dy {
            return;
        }
        self.mark_dirty((x, y, w, h - dy));
        let mut writer = InstructionWriter::new(&mut self.out, opcode::COPY);
        writer
            .arg_i64(0)
            .arg_i64(x)
            .arg_i64(y + dy)
            .arg_i64(w)
            .arg_i64(h - dy)
            .arg_u64(u64::from(COMP_OVER))
            .arg_i64(0)
            .arg_i64(x)
            .arg_i64(y);
        writer.finish();
    }

    /// The pointer, as guac_common_cursor sends it: drawn into buffer -1 (guacd 1.6: -2),
    /// then `cursor`.
    fn cursor(&mut self) {
        let tiles = self.tiles.clone();
        let cursor = &tiles.cursor;
        let (w, h) = (i64::from(cursor.width), i64::from(cursor.height));
        let buffer = match self.config.guacd {
            GuacdVersion::V1_5 => -1,
            GuacdVersion::V1_6 => -2,
        };
        layer_size(&mut self.out, buffer, w, h);
        match self.config.guacd {
            GuacdVersion::V1_5 => push_image(&mut self.out, cursor, COMP_SRC, buffer, 0, 0),
            GuacdVersion::V1_6 => {
                push_img(&mut self.out, "3", COMP_SRC, buffer, 0, 0);
                for blob in &cursor.interleaved[0] {
                    self.out.extend_from_slice(blob);
                }
                zt_guac::encode(opcode::END, &["3"], &mut self.out);
            }
        }
        let mut writer = InstructionWriter::new(&mut self.out, opcode::CURSOR);
        writer
            .arg_i64(0)
            .arg_i64(0)
            .arg_i64(buffer)
            .arg_i64(0)
            .arg_i64(0)
            .arg_i64(w)
            .arg_i64(h);
        writer.finish();
    }

    fn random_rect(&mut self, max_w: u32, max_h: u32) -> (i64, i64, i64, i64) {
        let w = 16
            + self
                .rng
                .below(u64::from(max_w.min(self.width).max(17) - 16));
        let h = 16
            + self
                .rng
                .below(u64::from(max_h.min(self.height).max(17) - 16));
        let x = self.rng.below(u64::from(self.width).saturating_sub(w) + 1);
        let y = self.rng.below(u64::from(self.height).saturating_sub(h) + 1);
        (x as i64, y as i64, w as i64, h as i64)
    }
}

fn layer_size(out: &mut BytesMut, layer: i64, w: i64, h: i64) {
    let mut writer = InstructionWriter::new(out, opcode::SIZE);
    writer.arg_i64(layer).arg_i64(w).arg_i64(h);
    writer.finish();
}

/// `rect` + `cfill`, as guacd fills a solid rectangle.
fn fill(
    out: &mut BytesMut,
    layer: i64,
    (x, y, w, h): (i64, i64, i64, i64),
    (r, g, b): (u8, u8, u8),
) {
    let mut writer = InstructionWriter::new(out, opcode::RECT);
    writer
        .arg_i64(layer)
        .arg_i64(x)
        .arg_i64(y)
        .arg_i64(w)
        .arg_i64(h);
    writer.finish();
    let mut writer = InstructionWriter::new(out, opcode::CFILL);
    writer
        .arg_u64(u64::from(COMP_OVER))
        .arg_i64(layer)
        .arg_u64(u64::from(r))
        .arg_u64(u64::from(g))
        .arg_u64(u64::from(b))
        .arg_u64(255);
    writer.finish();
}

/// `img <stream> <mask> <layer> image/png <x> <y>`.
fn push_img(out: &mut BytesMut, stream: &str, mask: u32, layer: i64, x: i64, y: i64) {
    let mut writer = InstructionWriter::new(out, opcode::IMG);
    writer
        .arg(stream)
        .arg_u64(u64::from(mask))
        .arg_i64(layer)
        .arg("image/png")
        .arg_i64(x)
        .arg_i64(y);
    writer.finish();
}

/// `img <stream> <mask> <layer> image/png <x> <y>`, the PNG's `blob`s, `end`
/// (guac_client_stream_png).
fn push_image(out: &mut BytesMut, tile: &Tile, mask: u32, layer: i64, x: i64, y: i64) {
    let mut writer = InstructionWriter::new(out, opcode::IMG);
    writer
        .arg(IMAGE_STREAM)
        .arg_u64(u64::from(mask))
        .arg_i64(layer)
        .arg("image/png")
        .arg_i64(x)
        .arg_i64(y);
    writer.finish();
    out.extend_from_slice(&tile.blobs);
    zt_guac::encode(opcode::END, &[IMAGE_STREAM], out);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn encode(op: &str, args: &[&str]) -> Bytes {
    let mut out = BytesMut::new();
    zt_guac::encode(op, args, &mut out);
    out.freeze()
}

fn disconnect() -> Bytes {
    encode(opcode::DISCONNECT, &[])
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Display content

/// A PNG tile, its `blob` instructions pre-encoded for [`IMAGE_STREAM`] (guacd 1.5), and
/// one by one for streams 3 and 5 (guacd 1.6 interleaves them).
struct Tile {
    width: u32,
    height: u32,
    blobs: Bytes,
    interleaved: [Vec<Bytes>; 2],
}

impl Tile {
    fn new(width: u32, height: u32, png: &[u8]) -> Self {
        Self {
            width,
            height,
            blobs: blobs(png),
            interleaved: ["3", "5"].map(|stream| {
                png.chunks(GUAC_PROTOCOL_BLOB_MAX_LENGTH)
                    .map(|block| encode(opcode::BLOB, &[stream, &STANDARD.encode(block)]))
                    .collect()
            }),
        }
    }
}

struct Tiles {
    tiles: Vec<Tile>,
    cursor: Tile,
}

impl Tiles {
    /// Tiles from 64×64 to 256×256: application windows with text, gradients, photographs
    /// (smooth noise) and video-like noise, so PNG sizes range from a few hundred bytes to
    /// incompressible.
    fn build(seed: u64) -> anyhow::Result<Self> {
        const SIZES: [(u32, u32); 8] = [
            (64, 64),
            (128, 64),
            (96, 96),
            (128, 128),
            (192, 96),
            (256, 128),
            (160, 160),
            (256, 256),
        ];
        let mut rng = Rng::new(seed);
        let mut tiles = Vec::new();
        for i in 0..16usize {
            let (w, h) = SIZES[(i * 3 + i / 8) % SIZES.len()];
            let pixels = match i % 4 {
                0 => window_pixels(w, h, &mut rng),
                1 => gradient_pixels(w, h, &mut rng),
                2 => photo_pixels(w, h, &mut rng),
                _ => noise_pixels(w, h, &mut rng),
            };
            let png = encode_png(w, h, png::ColorType::Rgb, &pixels)?;
            tiles.push(Tile::new(w, h, &png));
        }
        let cursor_png = encode_png(32, 32, png::ColorType::Rgba, &cursor_pixels())?;
        Ok(Self {
            tiles,
            cursor: Tile::new(32, 32, &cursor_png),
        })
    }
}

fn encode_png(w: u32, h: u32, color: png::ColorType, pixels: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(out)
}

/// The `blob`s of an image, in guacd's 6048-byte blocks.
fn blobs(data: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    for block in data.chunks(GUAC_PROTOCOL_BLOB_MAX_LENGTH) {
        zt_guac::encode(
            opcode::BLOB,
            &[IMAGE_STREAM, STANDARD.encode(block).as_str()],
            &mut out,
        );
    }
    out.freeze()
}

/// A window: title bar, light background, lines of "text".
fn window_pixels(w: u32, h: u32, rng: &mut Rng) -> Vec<u8> {
    let mut px = vec![248u8; (w * h * 3) as usize];
    let set = |px: &mut [u8], x: u32, y: u32, c: (u8, u8, u8)| {
        if x < w && y < h {
            let i = ((y * w + x) * 3) as usize;
            if let Some(p) = px.get_mut(i..i + 3) {
                p.copy_from_slice(&[c.0, c.1, c.2]);
            }
        }
    };
    for y in 0..16.min(h) {
        for x in 0..w {
            set(&mut px, x, y, (0, 84, 147));
        }
    }
    let mut y = 22;
    while y + 9 < h {
        let mut x = 6;
        while x + 6 < w {
            let word = 2 + rng.below(7) as u32;
            for _ in 0..word {
                let glyph = rng.next();
                for gy in 0..8 {
                    for gx in 0..5 {
                        if (glyph >> (gy * 5 + gx)) & 1 == 1 {
                            set(&mut px, x + gx, y + gy, (20, 20, 20));
                        }
                    }
                }
                x += 6;
            }
            x += 6;
        }
        y += 14;
    }
    px
}

fn gradient_pixels(w: u32, h: u32, rng: &mut Rng) -> Vec<u8> {
    let (cx, cy, r) = (
        rng.below(u64::from(w)) as i64,
        rng.below(u64::from(h)) as i64,
        (w.min(h) / 3) as i64,
    );
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (i64::from(x) - cx, i64::from(y) - cy);
            let inside = dx * dx + dy * dy < r * r;
            px.push((x * 255 / w.max(1)) as u8);
            px.push((y * 255 / h.max(1)) as u8);
            px.push(if inside { 230 } else { 90 });
        }
    }
    px
}

fn photo_pixels(w: u32, h: u32, rng: &mut Rng) -> Vec<u8> {
    let phases: Vec<f64> = (0..6).map(|_| rng.below(628) as f64 / 100.0).collect();
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (f64::from(x), f64::from(y));
            for c in 0..3 {
                let p = phases.get(c * 2).copied().unwrap_or(0.0);
                let q = phases.get(c * 2 + 1).copied().unwrap_or(0.0);
                let v = 128.0 + 60.0 * (fx / 13.0 + p).sin() + 50.0 * (fy / 17.0 + q).cos();
                let noise = (rng.next() & 15) as f64;
                px.push((v + noise).clamp(0.0, 255.0) as u8);
            }
        }
    }
    px
}

fn noise_pixels(w: u32, h: u32, rng: &mut Rng) -> Vec<u8> {
    let mut px = vec![0u8; (w * h * 3) as usize];
    for chunk in px.chunks_mut(8) {
        let value = rng.next().to_le_bytes();
        let n = chunk.len();
        chunk.copy_from_slice(value.get(..n).unwrap_or_default());
    }
    px
}

/// A 32×32 arrow pointer with transparency.
fn cursor_pixels() -> Vec<u8> {
    let mut px = vec![0u8; 32 * 32 * 4];
    for y in 0..20usize {
        for x in 0..=(y * 2 / 3) {
            let edge = x == 0 || x == y * 2 / 3 || y == 19;
            let i = (y * 32 + x) * 4;
            if let Some(p) = px.get_mut(i..i + 4) {
                p.copy_from_slice(if edge {
                    &[0, 0, 0, 255]
                } else {
                    &[255, 255, 255, 255]
                });
            }
        }
    }
    px
}

/// xorshift64* (deterministic display content; not for secrets).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

// ---------------------------------------------------------------------------------------
// Constants

/// The client-level stream guacd's image and clipboard streams end up on (allocated and
/// freed around each one, the lowest odd index).
const IMAGE_STREAM: &str = "1";
/// `GUAC_COMP_OVER`.
const COMP_OVER: u32 = 0xE;
/// `GUAC_COMP_SRC`.
const COMP_SRC: u32 = 0xC;
/// `GUAC_PROTOCOL_BLOB_MAX_LENGTH`: bytes per image `blob`.
const GUAC_PROTOCOL_BLOB_MAX_LENGTH: usize = 6048;
/// The RDP plugin's download block (`char buffer[4096]` in `download.c`).
const DOWNLOAD_BLOCK_SIZE: usize = 4096;
/// `GUAC_COMMON_CLIPBOARD_BLOCK_SIZE`.
const CLIPBOARD_BLOCK_SIZE: usize = 4096;
/// `GUAC_COMMON_CLIPBOARD_MAX_LENGTH` (guacd 1.5).
const CLIPBOARD_MAX_LENGTH: usize = 262_144;
/// Largest display dimension the peer accepts from a client.
const MAX_DISPLAY: u32 = 8192;
const READ_CHUNK: usize = 64 * 1024;
const PENDING_CONNECTIONS: usize = 1024;
const COMMAND_QUEUE: usize = 256;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
const NEVER_ENDING_CAP: u64 = 256 * 1024 * 1024;
const FLOOD_CHUNK: usize = 64 * 1024;
const SYNC_FLOOD_BATCH: u64 = 4096;
const MAX_EVENTS: usize = 10_000;
const MAX_SENT_SYNCS: usize = 1_000_000;
const MAX_KEPT_STREAMS: usize = 1_000;
const MAX_KEPT_UPLOADS: usize = 100;
