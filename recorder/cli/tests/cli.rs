//! The `zt-recording` command line, as an operator would use it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers, like the tests themselves, fail by panicking"
)]

mod bin;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;

use bin::*;
use common::*;
use zt_recorder::{IdentityKey, RecipientPublicKey, RecordingKind};

#[test]
fn keygen_writes_private_and_public_files() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ["x25519", "ed25519"] {
        let key = dir.path().join(alg);
        let key_s = key.to_str().unwrap();
        cli_ok(&["keygen", alg, "--out", key_s]);
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{alg} private key must be private");
        let public = std::fs::read_to_string(format!("{key_s}.pub")).unwrap();
        assert!(public.starts_with(&format!("ztrec-{alg}-public-key:")));
        // Refuses to overwrite.
        assert!(!cli(&["keygen", alg, "--out", key_s]).status.success());
    }
}

#[test]
fn info_verify_and_export_with_each_key_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    cli_ok(&["keygen", "x25519", "--out", &d("auditor")]);
    cli_ok(&["keygen", "ed25519", "--out", &d("proxy")]);
    let auditor =
        RecipientPublicKey::from_text(&std::fs::read_to_string(d("auditor.pub")).unwrap()).unwrap();
    let identity = IdentityKey::from_text(&std::fs::read_to_string(d("proxy")).unwrap()).unwrap();
    let mut c = config(RecordingKind::Typescript);
    c.recipients = vec![auditor];
    c.identity = Some(Arc::new(identity));
    let rec = d("rec.ztrec");
    write(std::path::Path::new(&rec), c, &typescript_events());

    let info = cli_ok(&["info", &rec]);
    assert!(info.contains("typescript (input recorded: yes)"), "{info}");
    assert!(info.contains("session     session-42"), "{info}");
    assert!(info.contains("manifest    present"), "{info}");
    let json: serde_json::Value = serde_json::from_str(&cli_ok(&["info", &rec, "--json"])).unwrap();
    assert_eq!(json["kind"], "typescript");
    assert_eq!(json["key_wraps"].as_array().unwrap().len(), 2);

    // Without a key: structure, hash and signature only.
    let out = cli_ok(&["verify", &rec, "--identity", &d("proxy.pub")]);
    assert!(out.contains("contents not decrypted"), "{out}");
    assert!(out.contains("signature   valid"), "{out}");

    let secret = write_secret_file(dir.path());
    let out = cli_ok(&["verify", &rec, "--secret-file", secret.to_str().unwrap()]);
    assert!(out.contains("finalised"), "{out}");
    assert!(out.contains("decrypted and authenticated"), "{out}");
    let out = cli_ok(&["verify", &rec, "--x25519-key", &d("auditor")]);
    assert!(out.contains("decrypted and authenticated"), "{out}");
    let out = Command::new(bin())
        .args(["verify", &rec, "--secret-env", "ZT_TEST_SECRET", "--json"])
        .env("ZT_TEST_SECRET", secret_base64())
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"]["state"], "finalised");
    assert_eq!(report["events"], typescript_events().len());

    // Every typescript format exports; the guac format is for graphical recordings.
    for format in ["typescript", "asciicast", "text"] {
        let out = d(&format!("out.{format}"));
        cli_ok(&[
            "export",
            &rec,
            "-f",
            format,
            "-o",
            &out,
            "--x25519-key",
            &d("auditor"),
        ]);
        assert!(std::fs::metadata(&out).unwrap().len() > 0);
    }
    let text = std::fs::read_to_string(d("out.text")).unwrap();
    assert!(text.contains("price: 5 €"), "{text}");
    let out = cli(&[
        "export",
        &rec,
        "-f",
        "guac",
        "-o",
        &d("x.guac"),
        "--x25519-key",
        &d("auditor"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a graphical recording"));

    // A range, to standard output.
    let ranged = cli_ok(&[
        "export",
        &rec,
        "-f",
        "asciicast",
        "-o",
        "-",
        "--from",
        "1s",
        "--to",
        "2.1",
        "--x25519-key",
        &d("auditor"),
    ]);
    let lines: Vec<_> = ranged.lines().collect();
    assert_eq!(lines.len(), 4, "{ranged}");
    assert!(
        lines[1].starts_with("[0.200000, \"r\", \"120x40\"]"),
        "{ranged}"
    );

    // Existing outputs are not overwritten without --force.
    let out = cli(&[
        "export",
        &rec,
        "-f",
        "text",
        "-o",
        &d("out.text"),
        "--x25519-key",
        &d("auditor"),
    ]);
    assert!(!out.status.success());
}

#[test]
fn failures_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.ztrec");
    write(
        &rec,
        config(RecordingKind::Typescript),
        &typescript_events(),
    );
    let rec_s = rec.to_str().unwrap();
    let stderr = |args: &[&str]| {
        let out = cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let wrong = dir.path().join("wrong.b64");
    std::fs::write(&wrong, "d3Jvbmcgc2VjcmV0IGJ1dCBsb25nIGVub3VnaA==").unwrap();
    assert!(
        stderr(&["verify", rec_s, "--secret-file", wrong.to_str().unwrap()]).contains("wrong key")
    );
    assert!(stderr(&["export", rec_s, "-f", "text", "-o", "-"]).contains("needs a key"));
    // Secrets are never plain arguments.
    assert!(stderr(&["verify", rec_s, "--secret", "c2VjcmV0"]).contains("unexpected argument"));

    let mut bytes = std::fs::read(&rec).unwrap();
    let f = frames(&bytes);
    let at = f.chunks[0].start + 25;
    bytes[at] ^= 1;
    let bad = dir.path().join("bad.ztrec");
    std::fs::write(&bad, &bytes).unwrap();
    let secret = write_secret_file(dir.path());
    let secret_s = secret.to_str().unwrap();
    let msg = stderr(&["verify", bad.to_str().unwrap(), "--secret-file", secret_s]);
    assert!(msg.contains("chunk 0 is tampered"), "{msg}");
    // A failed export leaves no partial output behind.
    let out_path = dir.path().join("partial.txt");
    stderr(&[
        "export",
        bad.to_str().unwrap(),
        "-f",
        "text",
        "-o",
        out_path.to_str().unwrap(),
        "--secret-file",
        secret_s,
    ]);
    assert!(!out_path.exists());

    let cut = dir.path().join("cut.ztrec");
    std::fs::write(&cut, &std::fs::read(&rec).unwrap()[..f.chunks[0].end]).unwrap();
    let msg = stderr(&["verify", cut.to_str().unwrap(), "--secret-file", secret_s]);
    assert!(msg.contains("truncated: 1 valid chunks"), "{msg}");
    let ok = cli_ok(&[
        "verify",
        cut.to_str().unwrap(),
        "--secret-file",
        secret_s,
        "--allow-unfinalised",
    ]);
    assert!(
        ok.contains("UNFINALISED: 1 valid chunks, recorded duration"),
        "{ok}"
    );

    let not = dir.path().join("not.ztrec");
    std::fs::write(&not, b"hello world, not a recording").unwrap();
    assert!(stderr(&["info", not.to_str().unwrap()]).contains("not a ztproxy recording"));
}

#[test]
fn export_refuses_what_verify_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.ztrec");
    write(
        &rec,
        config(RecordingKind::Typescript),
        &typescript_events(),
    );
    let secret = write_secret_file(dir.path());
    let secret_s = secret.to_str().unwrap();
    let bytes = std::fs::read(&rec).unwrap();
    let manifest = frames(&bytes).manifest.unwrap();
    // Garbage where the manifest was: every chunk still authenticates.
    for (i, damage) in [0usize, 1, 8].into_iter().enumerate() {
        let mut damaged = bytes.clone();
        damaged[manifest.start + damage] ^= 0x5a;
        let bad = dir.path().join(format!("bad{i}.ztrec"));
        std::fs::write(&bad, &damaged).unwrap();
        let bad_s = bad.to_str().unwrap();
        let verify = cli(&["verify", bad_s, "--secret-file", secret_s]);
        assert!(
            !verify.status.success(),
            "verify accepts damage at {damage}"
        );
        let out_path = dir.path().join(format!("out{i}.txt"));
        let export = cli(&[
            "export",
            bad_s,
            "-f",
            "text",
            "-o",
            out_path.to_str().unwrap(),
            "--secret-file",
            secret_s,
        ]);
        let stderr = String::from_utf8_lossy(&export.stderr);
        assert!(
            !export.status.success(),
            "export of damage at {damage} succeeded"
        );
        assert!(stderr.contains("does not verify"), "{stderr}");
        assert!(!out_path.exists());
    }
}
