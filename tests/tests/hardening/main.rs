//! Hardening against outside probes, tested against the real daemon process: floods of the
//! control API and of QUIC handshakes, garbage datagrams, crashes of either end, and the
//! control API's error shapes. (The recordings' part is in the `connection` tests and in
//! `zt-recorder`'s own.)

// A test binary: a failed expectation is a panic, in helpers as in test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod control;
mod liveness;
mod quic;
mod udp;

pub use zt_tests::client::{client_options, connect, echo_once};
