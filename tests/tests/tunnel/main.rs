//! Tunnel data plane against real processes: the daemon, `ztproxy connect`, PostgreSQL and
//! psql, sshd and ssh, and in-process targets with known traffic.

// A test binary: a failed expectation is a panic, in helpers as in test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bad_input;
mod bulk;
mod concurrent;
mod lifecycle;
mod log_redaction;
mod postgres_webrtc;
mod revocation;
mod ssh_quic;

use zt_api::control::Transport;
pub use zt_tests::client::{client_options, connect, echo_once};

/// Both transports, for tests that run on each.
pub const TRANSPORTS: [Transport; 2] = [Transport::Webrtc, Transport::Quic];

/// `--transport` value for the CLI.
pub fn transport_arg(transport: Transport) -> &'static str {
    transport.as_str()
}
