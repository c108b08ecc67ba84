//! Hardening against outside probes, tested against the real daemon process: floods of the
//! control API and of QUIC handshakes, garbage datagrams, crashes of either end, and the
//! smaller promises (error shapes, tamper messages, exports of rejected files).

// A test binary: a failed expectation is a panic, in helpers as in test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod control;
