//! Running the `zt-recording` binary. Each test binary uses a subset.
#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "shared by several test binaries, each using a subset; helpers fail by panicking"
)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zt-recording"))
}

/// Runs the `zt-recording` binary.
pub(crate) fn cli(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

pub(crate) fn cli_ok(args: &[&str]) -> String {
    let out = cli(args);
    assert!(
        out.status.success(),
        "zt-recording {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
