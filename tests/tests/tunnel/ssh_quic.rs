//! ssh, the real OpenSSH client, runs a command on an sshd through a QUIC tunnel.

use zt_tests::proc::{ProxyOptions, TunnelCli, ZtProxy};
use zt_tests::servers::Sshd;
use zt_tests::ztproxy_bin;

#[test]
fn ssh_runs_a_command_through_a_quic_tunnel() {
    let sshd = Sshd::start().expect("sshd starts");
    let proxy = ZtProxy::start(ztproxy_bin!(), &ProxyOptions::default()).expect("ztproxy starts");
    let tunnel = TunnelCli::start(
        ztproxy_bin!(),
        &proxy.api_arg(),
        &format!("127.0.0.1:{}", sshd.port),
        &["--transport", "quic", "--protocol", "ssh"],
    )
    .expect("tunnel starts");

    // `cat` makes the server wait for our EOF: the half-close must cross the tunnel.
    let mut command = sshd
        .ssh(
            tunnel.local.port(),
            "printf 'tunnel-ok:'; cat; printf ':%s' \"$(whoami)\"",
        )
        .unwrap();
    let output = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"through-stdin")?;
            child.wait_with_output()
        })
        .expect("ssh runs");
    assert!(
        output.status.success(),
        "ssh failed: {}\nztproxy:\n{}\ntunnel:\n{}",
        String::from_utf8_lossy(&output.stderr),
        proxy.output(),
        tunnel.output()
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("tunnel-ok:through-stdin:{}", sshd.user)
    );
}
