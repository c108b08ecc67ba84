//! Files through the page: a download the session offers is saved by the browser, a file
//! dropped on the display is uploaded; both through guacd (the double) over WebRTC.

use base64::Engine;
use serde_json::json;
use zt_tests::browser::Browser;
use zt_tests::guacd_peer::{DownloadOutcome, GuacdPeer, PeerConfig};

use crate::{STEP, WINDOW};

#[tokio::test]
async fn downloads_are_saved_and_dropped_files_are_uploaded() {
    let peer = GuacdPeer::start(PeerConfig::guacd_1_6()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (proxy, helper) = crate::rdp_web(peer.addr(), dir.path());
    let mut browser = Browser::start().unwrap();
    browser
        .open(&helper.field("url"), WINDOW.0, WINDOW.1, false)
        .await
        .unwrap();
    browser.wait_state("connected", STEP).await.unwrap();
    let conn = peer.next_connection(STEP).await.unwrap();

    // 300 KiB, so the download takes many blobs and acks.
    let data: Vec<u8> = (0..300 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let offered = conn.download("report.bin", "application/octet-stream", &data);
    let saved = dir.path().join("saved.bin");
    let (outcome, answer) = tokio::join!(
        offered,
        browser.call(json!({"op": "wait_download", "path": saved}))
    );
    assert!(matches!(outcome.unwrap(), DownloadOutcome::Completed));
    assert_eq!(answer.unwrap()["name"], "report.bin");
    assert_eq!(
        std::fs::read(&saved).unwrap(),
        data,
        "the saved file differs"
    );

    let upload: Vec<u8> = (0..200 * 1024u32).map(|i| (i * 13 % 241) as u8).collect();
    browser
        .call(json!({
            "op": "drop_file",
            "name": "notes.txt",
            "type": "text/plain",
            "base64": base64::engine::general_purpose::STANDARD.encode(&upload),
        }))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        if let Some(done) = conn.uploads().into_iter().find(|u| u.name == "notes.txt")
            && done.data.len() == upload.len()
        {
            assert_eq!(done.data, upload, "the uploaded file differs");
            assert_eq!(done.mimetype, "text/plain");
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let panel = browser
                .call(json!({"op": "text", "selector": "#files"}))
                .await;
            let log = proxy.output();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "ztproxy's log ends:\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
            let received = conn.received();
            eprintln!(
                "the peer sent syncs {:?}; received {} syncs, opcodes: {:?}; stats {:?}",
                conn.sent_syncs(),
                received.iter().filter(|i| i.is("sync")).count(),
                received
                    .iter()
                    .map(|i| i.opcode().to_owned())
                    .collect::<Vec<_>>(),
                conn.stats()
            );
            eprintln!(
                "the peer received: {:?}",
                conn.received()
                    .iter()
                    .rev()
                    .take(12)
                    .map(
                        |i| String::from_utf8_lossy(&i.raw()[..i.raw().len().min(80)]).into_owned()
                    )
                    .collect::<Vec<_>>()
            );
            panic!(
                "the upload did not arrive: {:?}; the page's file panel shows {panel:?}\n{}",
                conn.uploads()
                    .iter()
                    .map(|u| (&u.name, u.data.len()))
                    .collect::<Vec<_>>(),
                browser.console().await
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    browser.close().await;
}

/// The user's home with a jail for SFTP, owned by the test user.
fn jail(fx: &crate::Fixture) -> std::path::PathBuf {
    let home = std::path::PathBuf::from("/home").join(&fx.sshd.user);
    let root = home.join("jail");
    std::fs::create_dir_all(&root).unwrap();
    root
}

fn own(fx: &crate::Fixture, path: &std::path::Path) {
    let (uid, gid) = zt_tests::user_ids(&fx.sshd.user).unwrap();
    zt_tests::chown_recursive(path, uid, gid).unwrap();
}

#[tokio::test]
async fn sftp_files_dropped_on_the_display_land_on_the_target_and_the_panel_downloads() {
    let fx = crate::Fixture::start();
    let root = jail(&fx);
    let report: Vec<u8> = (0..300 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("report.bin"), &report).unwrap();
    std::fs::create_dir_all(root.join("docs")).unwrap();
    own(&fx, root.parent().unwrap());
    let root_text = root.display().to_string();
    let helper = fx.web(
        &[("enable-sftp", "true"), ("sftp-root-directory", &root_text)],
        &[],
    );
    let mut browser = Browser::start().unwrap();
    browser
        .open(&helper.field("url"), WINDOW.0, WINDOW.1, false)
        .await
        .unwrap();
    browser.wait_state("connected", STEP).await.unwrap();

    // The panel lists the root; a click on a file saves it.
    let entry = r#"#files .browser .entry[data-path="/report.bin"]"#;
    browser
        .call(json!({"op": "wait_selector", "selector": entry}))
        .await
        .unwrap();
    let listed = browser
        .call(json!({"op": "text", "selector": "#files .browser"}))
        .await
        .unwrap();
    assert!(
        listed["text"].as_str().unwrap().contains("docs/"),
        "{listed}"
    );
    browser
        .call(json!({"op": "click", "selector": entry}))
        .await
        .unwrap();
    let saved = fx.dir.path().join("saved.bin");
    let answer = browser
        .call(json!({"op": "wait_download", "path": saved}))
        .await
        .unwrap();
    assert_eq!(answer["name"], "report.bin");
    assert_eq!(
        std::fs::read(&saved).unwrap(),
        report,
        "the saved file differs"
    );

    // A file dropped on the display arrives in the root, whole.
    let upload: Vec<u8> = (0..700 * 1024u32).map(|i| (i * 13 % 241) as u8).collect();
    browser
        .call(json!({
            "op": "drop_file",
            "name": "dropped.bin",
            "base64": base64::engine::general_purpose::STANDARD.encode(&upload),
        }))
        .await
        .unwrap();
    let landed = root.join("dropped.bin");
    zt_tests::wait_until(STEP, "the dropped file on the target", || {
        let landed = landed.clone();
        let size = upload.len() as u64;
        async move { std::fs::metadata(&landed).is_ok_and(|m| m.len() == size) }
    })
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(&landed).unwrap(),
        upload,
        "the uploaded file differs"
    );
    let row = browser
        .call(json!({"op": "wait_selector", "selector": r#"#files .transfer[data-name="dropped.bin"][data-state="700.0 KiB sent"]"#}))
        .await
        .unwrap();
    assert!(row["text"].as_str().unwrap().contains("sent"), "{row}");
    // What the user sees, for a person to look at (saved where ZT_SCREENSHOTS names).
    browser.screenshot().await.unwrap();
    browser.close().await;
}

#[tokio::test]
async fn an_upload_refused_by_policy_shows_ztproxys_answer() {
    let fx = crate::Fixture::start();
    let root = jail(&fx);
    own(&fx, root.parent().unwrap());
    let root_text = root.display().to_string();
    let helper = fx.web(
        &[
            ("enable-sftp", "true"),
            ("sftp-root-directory", &root_text),
            ("sftp-disable-upload", "true"),
        ],
        &[],
    );
    let mut browser = Browser::start().unwrap();
    browser
        .open(&helper.field("url"), WINDOW.0, WINDOW.1, false)
        .await
        .unwrap();
    browser.wait_state("connected", STEP).await.unwrap();
    browser
        .call(json!({
            "op": "drop_file",
            "name": "blocked.bin",
            "base64": base64::engine::general_purpose::STANDARD.encode(b"not allowed"),
        }))
        .await
        .unwrap();
    let row = browser
        .call(json!({"op": "wait_selector", "selector": r#"#files .transfer.failed[data-name="blocked.bin"]"#}))
        .await
        .unwrap();
    let text = row["text"].as_str().unwrap();
    assert!(
        text.contains("refused") && text.contains("disabled"),
        "{text}"
    );
    assert!(!root.join("blocked.bin").exists());
    browser.close().await;
}
