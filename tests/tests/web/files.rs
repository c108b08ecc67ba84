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
