//! The exports play in the real tools: util-linux `scriptreplay` and `asciinema`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers, like the tests themselves, fail by panicking"
)]

mod bin;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

use bin::*;
use common::*;
use zt_recorder::RecordingKind;

fn export(dir: &std::path::Path, format: &str, out: &str) -> std::path::PathBuf {
    let path = dir.join("session.ztrec");
    if !path.exists() {
        write(
            &path,
            config(RecordingKind::Typescript),
            &typescript_events(),
        );
    }
    let secret = write_secret_file(dir);
    let out = dir.join(out);
    cli_ok(&[
        "export",
        path.to_str().unwrap(),
        "--format",
        format,
        "-o",
        out.to_str().unwrap(),
        "--secret-file",
        secret.to_str().unwrap(),
        "--force",
    ]);
    out
}

#[test]
fn scriptreplay_replays_the_typescript() {
    require_tool("/usr/bin/scriptreplay", "bsdutils");
    let dir = tempfile::tempdir().unwrap();
    let typescript = export(dir.path(), "typescript", "session.typescript");
    let timing = dir.path().join("session.typescript.timing");
    let out = Command::new("/usr/bin/scriptreplay")
        .arg("--timing")
        .arg(&timing)
        .arg("--log-out")
        .arg(&typescript)
        .args(["--maxdelay", "0.001"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scriptreplay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // scriptreplay prints a newline of its own when it finishes.
    let mut expected = typescript_output();
    expected.push(b'\n');
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(out.stdout, expected);
}

#[test]
fn asciinema_reads_the_asciicast() {
    require_tool("/usr/bin/asciinema", "asciinema");
    // `asciinema cat` insists on a controlling terminal; `script` (bsdutils) provides one.
    require_tool("/usr/bin/script", "bsdutils");
    let dir = tempfile::tempdir().unwrap();
    let cast = export(dir.path(), "asciicast", "session.cast");
    let out = Command::new("/usr/bin/script")
        .args(["--quiet", "--return", "--command"])
        .arg(format!("/usr/bin/asciinema cat {}", cast.display()))
        .arg("/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "asciinema cat failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = typescript_output();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(out.stdout, expected);
}
