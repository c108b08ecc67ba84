//! A tunnel through a real browser's data channels: Debian's headless Chromium, no flags,
//! with the page's own `RTCPeerConnection` (`proxy/web/tests/tunnel-lab.js`) against ztproxy.
//! Chromium's UDP receive buffer is 128 KiB, so bursts from ztproxy are lost in its kernel
//! socket: what these tests check is that the transfers survive that — intact, without
//! stalls — and that channels and sessions end when they should. Throughput against the
//! CLI client is `browser-tunnel-bench`'s.

use std::time::{Duration, Instant};

use zt_api::audit::AuditEvent;
use zt_api::control::{EndReason, LimitsRequest, Origin};
use zt_proxy::client::api::EventStream;
use zt_tests::browser::TunnelLab;
use zt_tests::proc::{ProxyOptions, ZtProxy, socket_table};
use zt_tests::servers::{bulk_server, digest_server, pattern_digest};
use zt_tests::ztproxy_bin;

const SEED: u64 = 0x6272_6f77_7365;
/// The longest a transfer may go without a message, and a finished channel may take to
/// reach `closed` in the page.
const STALL: f64 = 1000.0;

fn proxy() -> ZtProxy {
    ZtProxy::start(
        ztproxy_bin!(),
        &ProxyOptions {
            log_level: "warn".into(),
            ..ProxyOptions::default()
        },
    )
    .expect("ztproxy starts")
}

/// The end of `session` from the audit stream: its reason, origin and when it arrived.
async fn session_end(
    events: &mut EventStream,
    session: &str,
    limit: Duration,
) -> (EndReason, Option<Origin>, Instant) {
    tokio::time::timeout(limit, async {
        while let Some(record) = events.next().await {
            if let AuditEvent::SessionEnded {
                session: s,
                reason,
                origin,
                ..
            } = record.expect("audit record").event
                && s == session
            {
                return (reason, origin, Instant::now());
            }
        }
        panic!("the audit stream ended")
    })
    .await
    .unwrap_or_else(|_| panic!("session {session} did not end within {limit:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_downloads_and_uploads_64_mib_intact_and_its_channels_close() {
    const LEN: u64 = 64 << 20;
    let proxy = proxy();
    let api = proxy.api();
    let (source, _) = bulk_server(LEN, SEED).await.unwrap();
    let sink = digest_server().await.unwrap();

    let mut lab = TunnelLab::start().await.unwrap();
    lab.connect(&api, source, LimitsRequest::default())
        .await
        .unwrap();
    let download = lab
        .download(1, Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(download.bytes, LEN);
    assert_eq!(
        download.sha256,
        pattern_digest(SEED, LEN),
        "download digest"
    );
    assert!(
        download.max_gap_ms.unwrap_or(f64::MAX) <= STALL,
        "the download stalled: {download:?}"
    );
    assert!(
        download.close_ms.is_some_and(|ms| ms <= STALL),
        "the channel did not close within a second of the end: {download:?}"
    );

    let mut upload_lab = TunnelLab::start().await.unwrap();
    upload_lab
        .connect(&api, sink, LimitsRequest::default())
        .await
        .unwrap();
    let upload = upload_lab.upload(LEN).await.unwrap();
    assert_eq!(
        upload.theirs.as_deref(),
        Some(upload.sha256.as_str()),
        "the target hashed something else than the page sent"
    );
    assert!(
        upload.close_ms.is_some_and(|ms| ms <= STALL),
        "the upload channel did not close within a second: {upload:?}"
    );
    eprintln!(
        "browser download {:.0} MB/s, upload {:.0} MB/s",
        download.mb_per_s(),
        upload.mb_per_s()
    );
    lab.browser.close().await;
    upload_lab.browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_downloads_to_a_browser_never_stall_and_every_channel_closes() {
    const ROUNDS: usize = 20;
    const PARALLEL: usize = 4;
    const LEN: u64 = 16 << 20;
    let proxy = proxy();
    let api = proxy.api();
    let (source, _) = bulk_server(LEN, SEED).await.unwrap();
    let expected = pattern_digest(SEED, LEN);

    let mut lab = TunnelLab::start().await.unwrap();
    lab.connect(&api, source, LimitsRequest::default())
        .await
        .unwrap();
    for round in 0..ROUNDS {
        let transfers = lab
            .download(PARALLEL, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(transfers.len(), PARALLEL);
        for transfer in transfers {
            assert_eq!(transfer.bytes, LEN, "round {round}");
            assert_eq!(transfer.sha256, expected, "round {round}: digest");
            assert!(
                transfer.max_gap_ms.unwrap_or(f64::MAX) <= STALL,
                "round {round}: a download stalled: {transfer:?}"
            );
            assert!(
                transfer.close_ms.is_some_and(|ms| ms <= STALL),
                "round {round}: a channel did not close within a second: {transfer:?}"
            );
        }
    }
    // Every channel was closed: the session has none left open.
    let info = api
        .get_session(lab.session.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(info.connections_total, (ROUNDS * PARALLEL) as u64);
    assert_eq!(info.connections_active, 0);
    lab.browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_peer_connection_in_the_page_ends_the_session_within_two_seconds() {
    let proxy = proxy();
    let api = proxy.api();
    let (source, _) = bulk_server(1 << 20, SEED).await.unwrap();
    let mut lab = TunnelLab::start().await.unwrap();
    let session = lab
        .connect(&api, source, LimitsRequest::default())
        .await
        .unwrap();
    // The session carried a channel first, so it is an established one that ends.
    let transfer = lab
        .download(1, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(transfer.sha256, pattern_digest(SEED, 1 << 20));

    let mut events = api.events(None).await.unwrap();
    let closed = Instant::now();
    lab.close_peer().await.unwrap();
    let (reason, origin, at) = session_end(&mut events, &session, Duration::from_secs(10)).await;
    assert_eq!(reason, EndReason::ClientClosed);
    assert_eq!(origin, Some(Origin::Client));
    let took = at - closed;
    assert!(
        took <= Duration::from_secs(2),
        "pc.close() in the page ended the session after {took:?}"
    );
    lab.browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_browser_ends_the_session_within_seconds_and_ztproxy_sends_no_multicast() {
    let proxy = proxy();
    let api = proxy.api();
    let (source, _) = bulk_server(1 << 20, SEED).await.unwrap();
    let mut lab = TunnelLab::start().await.unwrap();
    let session = lab
        .connect(&api, source, LimitsRequest::default())
        .await
        .unwrap();
    lab.download(1, Duration::from_secs(30)).await.unwrap();

    // mDNS is off by default: while a browser with `.local` candidates is connected,
    // ztproxy has no socket on the mDNS port, and none bound to a multicast address.
    let inodes = zt_tests::proc::socket_inodes_of(proxy.pid());
    let sockets: Vec<_> = socket_table("udp")
        .into_iter()
        .chain(socket_table("udp6"))
        .filter(|row| inodes.contains(&row.inode))
        .collect();
    assert!(!sockets.is_empty(), "ztproxy's UDP sockets are listed");
    for row in &sockets {
        assert_ne!(row.local_port, 5353, "ztproxy listens for mDNS: {row:?}");
        // IPv4 as the kernel prints it: the first octet is the last two digits.
        let first_octet = u8::from_str_radix(&row.local_ip_hex[row.local_ip_hex.len() - 2..], 16);
        assert!(
            !(row.local_ip_hex.len() == 8 && matches!(first_octet, Ok(224..=239))),
            "ztproxy bound a multicast address: {row:?}"
        );
    }

    let mut events = api.events(None).await.unwrap();
    let pid = lab.browser_pid().await.unwrap();
    let killed = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("a pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill chromium");
    let (reason, _, at) = session_end(&mut events, &session, Duration::from_secs(20)).await;
    assert_eq!(reason, EndReason::ClientClosed);
    let took = at - killed;
    assert!(
        took <= Duration::from_secs(6),
        "a killed browser ended the session after {took:?}"
    );
}
