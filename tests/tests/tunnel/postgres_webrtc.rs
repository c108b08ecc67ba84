//! psql, the real PostgreSQL client, runs a query through a WebRTC tunnel.

use zt_tests::proc::{ProxyOptions, TunnelCli, ZtProxy};
use zt_tests::servers::Postgres;
use zt_tests::ztproxy_bin;

#[test]
fn psql_runs_a_query_through_a_webrtc_tunnel() {
    let postgres = Postgres::start().expect("postgres starts");
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).expect("ztproxy starts");
    let tunnel = TunnelCli::start(
        ztproxy_bin!(),
        &proxy.api_arg(),
        &format!("127.0.0.1:{}", postgres.port),
        &["--transport", "webrtc", "--protocol", "postgresql"],
    )
    .expect("tunnel starts");

    let output = std::process::Command::new(postgres.psql())
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &tunnel.local.port().to_string(),
            "-U",
            &postgres.user,
            "-d",
            "postgres",
            "-c",
            "select 40 + 2 as answer, current_user",
        ])
        .env("PGPASSWORD", &postgres.password)
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql failed: {}\nztproxy:\n{}\ntunnel:\n{}",
        String::from_utf8_lossy(&output.stderr),
        proxy.output(),
        tunnel.output()
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("42|{}", postgres.user)
    );

    // The gateway sees the session and the bytes that crossed it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let info = runtime
        .block_on(proxy.api().get_session(&tunnel.session))
        .expect("session is listed");
    assert_eq!(info.protocol, "postgresql");
    assert!(
        info.bytes_to_target > 0 && info.bytes_to_client > 0,
        "{info:?}"
    );
    assert_eq!(info.connections_total, 1);
}
