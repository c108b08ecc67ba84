//! `ztproxy connect guac`: a Guacamole client over plain TCP, as guacamole-client's web
//! application or guacamole-lite would connect to guacd, reaches the session's target
//! through ztproxy and only that target.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zt_guac::{Decoder, Instruction, Limits, opcode};

use crate::{FONT_SIZE, Fixture, STEP};

/// A Guacamole client on a TCP connection, drawing what it receives into a display model.
struct TcpGuacClient {
    tcp: TcpStream,
    decoder: Decoder,
    display: zt_display::Display,
    buf: Vec<u8>,
}

impl TcpGuacClient {
    /// Connects and performs the client's handshake; `connect` values come from `value`.
    async fn connect(addr: &str, select: &str, value: impl Fn(&str) -> String) -> Self {
        let tcp = TcpStream::connect(addr)
            .await
            .expect("connect guac accepts");
        let mut client = Self {
            tcp,
            decoder: Decoder::new(Limits::default()),
            display: zt_display::Display::new(zt_display::DisplayLimits::default()),
            buf: vec![0; 64 * 1024],
        };
        client.send(opcode::SELECT, &[select]).await;
        let args = client.expect(opcode::ARGS).await;
        client.send(opcode::SIZE, &["800", "480", "96"]).await;
        client.send(opcode::AUDIO, &[]).await;
        client.send(opcode::VIDEO, &[]).await;
        client
            .send(opcode::IMAGE, &["image/png", "image/jpeg"])
            .await;
        client.send(opcode::TIMEZONE, &["UTC"]).await;
        let mut values: Vec<String> = vec![args.arg(0).unwrap_or("VERSION_1_5_0").to_owned()];
        values.extend(args.args().skip(1).map(&value));
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        client.send(opcode::CONNECT, &values).await;
        client.expect(opcode::READY).await;
        client
    }

    async fn send(&mut self, op: &str, args: &[&str]) {
        let mut out = BytesMut::new();
        zt_guac::encode(op, args, &mut out);
        self.tcp.write_all(&out).await.unwrap();
    }

    /// The next instruction, drawn and with `sync` answered.
    async fn next(&mut self) -> Instruction {
        loop {
            if let Some(instruction) = self.decoder.poll_instruction().expect("well-formed") {
                let _ = self.display.handle(&instruction);
                if instruction.is(opcode::SYNC) {
                    let stamp = instruction.arg(0).unwrap_or("0").to_owned();
                    self.send(opcode::SYNC, &[&stamp]).await;
                }
                return instruction;
            }
            let n = tokio::time::timeout(STEP, self.tcp.read(&mut self.buf))
                .await
                .expect("ztproxy sends within a step")
                .unwrap();
            assert!(n > 0, "connect guac closed the connection");
            self.decoder.feed(&self.buf[..n]);
        }
    }

    async fn expect(&mut self, op: &str) -> Instruction {
        loop {
            let instruction = self.next().await;
            if instruction.is(op) {
                return instruction;
            }
            assert!(
                !instruction.is(opcode::ERROR),
                "ztproxy refused: {instruction:?}"
            );
        }
    }

    fn lines(&self) -> Vec<String> {
        let screen = self.display.screen();
        zt_terminal::readback::read_text(
            screen.pixels(),
            screen.width(),
            screen.height(),
            FONT_SIZE,
            96,
            "",
        )
    }

    async fn wait_for(&mut self, what: &str, condition: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let instruction = self.next().await;
            if instruction.is(opcode::SYNC) {
                let lines = self.lines();
                if condition(&lines) {
                    return lines;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.lines().join("\n")
            );
        }
    }

    async fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            let keysym = if c == '\n' { 0xff0d } else { u32::from(c) }.to_string();
            self.send(opcode::KEY, &[&keysym, "1"]).await;
            self.send(opcode::KEY, &[&keysym, "0"]).await;
        }
    }
}

async fn through_connect_guac(transport: &str) {
    let fixture = Fixture::start();
    // A second server the client will name: it must never be reached.
    let decoy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let decoy_port = decoy.local_addr().unwrap().port().to_string();
    let helper = fixture.connect(
        "guac",
        &[],
        &["--listen", "127.0.0.1:0", "--transport", transport],
    );
    let listen = helper.field("listen");

    // A well-behaved client first, then one that names another target and credentials in
    // `select` and `connect`: both reach the session's sshd, logged in as the session's user.
    for hostile in [false, true] {
        let decoy_port = decoy_port.clone();
        let mut client =
            TcpGuacClient::connect(&listen, if hostile { "rdp" } else { "ssh" }, |name| match (
                hostile, name,
            ) {
                (false, _) => String::new(),
                (true, "hostname") => "127.0.0.1".into(),
                (true, "port") => decoy_port.clone(),
                (true, "username") => "root".into(),
                (true, "password") => "hunter2".into(),
                (true, "command") => "echo zt-hijacked".into(),
                (true, _) => String::new(),
            })
            .await;
        let user = fixture.sshd.user.clone();
        client
            .wait_for("the prompt of the session's user", |lines| {
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("{user}@")) && l.ends_with('$'))
            })
            .await;
        client.type_text("echo zt-$((6*7))\n").await;
        let lines = client
            .wait_for("zt-42", |lines| {
                lines.iter().any(|l| l.trim_end() == "zt-42")
            })
            .await;
        assert!(!lines.iter().any(|l| l.contains("zt-hijacked")));
    }
    let reached = tokio::time::timeout(Duration::from_millis(200), decoy.accept()).await;
    assert!(reached.is_err(), "the client's own target was reached");
}

#[tokio::test]
async fn a_guacamole_client_over_tcp_reaches_the_sessions_target_over_quic() {
    through_connect_guac("quic").await;
}

#[tokio::test]
async fn a_guacamole_client_over_tcp_reaches_the_sessions_target_over_webrtc() {
    through_connect_guac("webrtc").await;
}

#[tokio::test]
async fn a_hostile_local_client_of_connect_guac_harms_no_other() {
    let fixture = Fixture::start();
    let helper = fixture.connect(
        "guac",
        &[],
        &["--listen", "127.0.0.1:0", "--transport", "quic"],
    );
    let listen = helper.field("listen");
    let mut good = TcpGuacClient::connect(&listen, "ssh", |_| String::new()).await;
    good.wait_for("a prompt", |lines| lines.iter().any(|l| l.ends_with('$')))
        .await;

    // Bytes that are not UTF-8, a malformed instruction, an instruction that never ends:
    // each connection is closed (or answered with an error), and the good one carries on.
    for garbage in [
        &b"6.select,3.ssh;\xff\xfe\xfd;"[..],
        &b"6.select,3.ssh;x.y;"[..],
        &b"99999999999.select"[..],
    ] {
        let mut tcp = TcpStream::connect(&listen).await.unwrap();
        tcp.write_all(garbage).await.unwrap();
        let mut answer = Vec::new();
        let closed = tokio::time::timeout(STEP, tcp.read_to_end(&mut answer)).await;
        assert!(
            closed.is_ok(),
            "a hostile client's connection stayed open: {garbage:?}"
        );
    }
    good.type_text("echo zt-$((6*7))\n").await;
    good.wait_for("zt-42", |lines| {
        lines.iter().any(|l| l.trim_end() == "zt-42")
    })
    .await;
}
