//! WebRTC's UDP sockets against garbage from anyone, and what sockets the daemon holds.
//! With neither the socket filter nor the rate limit, the flood below wrote 157,804 lines.

use std::time::Duration;

use zt_api::control::Transport;
use zt_tests::proc::{ProxyOptions, SocketRow, ZtProxy, socket_inodes_of, socket_table};
use zt_tests::servers::echo_server;
use zt_tests::ztproxy_bin;

/// Bytes waiting in the receive queue of the UDP socket bound to 127.0.0.1:`port`.
fn rx_queue(port: u16) -> Option<u64> {
    socket_table("udp")
        .into_iter()
        .find(|row| row.local_ip_hex == "0100007F" && row.local_port == port)
        .map(|row| row.rx_queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_produce_a_bounded_number_of_log_lines() {
    const DATAGRAMS: u32 = 100_000;
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let echo = echo_server().await.unwrap();
    let (session, _) = crate::connect(
        &proxy.api(),
        &crate::client_options(Transport::Webrtc, echo),
    )
    .await;
    crate::echo_once(&session, b"before").await;
    // The session's sockets: the daemon's UDP sockets other than QUIC's.
    let quic = proxy.ready.quic.map(|a| a.port());
    let ports: Vec<u16> = udp_sockets_of(proxy.pid())
        .iter()
        .map(|row| row.local_port)
        .filter(|port| Some(*port) != quic)
        .collect();
    assert!(!ports.is_empty());
    let lines_before = proxy.output().lines().count();

    // Every first byte (so STUN-, DTLS- and RTP-looking datagrams too), lengths up to 1200.
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut datagram = Vec::with_capacity(1200);
    for i in 0..DATAGRAMS {
        datagram.clear();
        let len = 1 + (i as usize * 7919) % 1200;
        datagram.push((i % 256) as u8);
        while datagram.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            datagram.extend_from_slice(&state.to_le_bytes());
        }
        datagram.truncate(len);
        if i % 4 == 0 {
            // Every fourth is shaped like STUN (type, length, cookie): past the socket filter,
            // into the stack, which warns about each; its warnings are rate-limited.
            let body = (len.max(20) - 20) / 4 * 4;
            datagram.truncate(20 + body);
            datagram.resize(20 + body, 0);
            datagram[..8].copy_from_slice(&[0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42]);
            datagram[2..4].copy_from_slice(&u16::try_from(body).unwrap().to_be_bytes());
        }
        for port in &ports {
            let _ = sender.send_to(&datagram, ("127.0.0.1", *port));
        }
        if i % 1000 == 0 {
            // Let the daemon keep up rather than the kernel drop most of it.
            zt_tests::wait_until(
                Duration::from_secs(10),
                "the daemon to read its socket",
                || {
                    let ports = ports.clone();
                    async move { ports.iter().all(|p| rx_queue(*p).unwrap_or(0) < 1 << 20) }
                },
            )
            .await
            .unwrap();
        }
    }
    zt_tests::wait_until(
        Duration::from_secs(20),
        "the daemon to read the garbage",
        || {
            let ports = ports.clone();
            async move { ports.iter().all(|p| rx_queue(*p).unwrap_or(0) == 0) }
        },
    )
    .await
    .unwrap();

    let output = proxy.output();
    let new_lines: Vec<&str> = output.lines().skip(lines_before).collect();
    eprintln!("{} log lines:\n{}", new_lines.len(), new_lines.join("\n"));
    // Ten a minute per stack module and level, and the filter's summary.
    assert!(
        new_lines.len() <= 40,
        "{} log lines for {DATAGRAMS} garbage datagrams:\n{}",
        new_lines.len(),
        new_lines
            .iter()
            .take(20)
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        new_lines
            .iter()
            .any(|l| l.contains("not STUN, DTLS or TURN")),
        "no summary of the dropped datagrams:\n{}",
        new_lines.join("\n")
    );
    // The session still carries data over the same sockets.
    crate::echo_once(&session, b"after the garbage").await;
}

/// The local addresses of the UDP sockets process `pid` holds.
fn udp_sockets_of(pid: u32) -> Vec<SocketRow> {
    let inodes = socket_inodes_of(pid);
    ["udp", "udp6"]
        .into_iter()
        .flat_map(socket_table)
        .filter(|row| inodes.contains(&row.inode))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_only_on_the_configured_addresses() {
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).unwrap();
    let echo = echo_server().await.unwrap();
    let (session, _) = crate::connect(
        &proxy.api(),
        &crate::client_options(Transport::Webrtc, echo),
    )
    .await;
    crate::echo_once(&session, b"sockets").await;
    let sockets = udp_sockets_of(proxy.pid());
    // QUIC's and the session's, all on 127.0.0.1 (0100007F), none for mDNS (port 5353).
    assert!(sockets.len() >= 2, "{sockets:?}");
    for row in &sockets {
        assert_eq!(
            row.local_ip_hex, "0100007F",
            "a UDP socket elsewhere: {sockets:?}"
        );
        assert_ne!(row.local_port, 5353, "an mDNS socket: {sockets:?}");
    }
}
