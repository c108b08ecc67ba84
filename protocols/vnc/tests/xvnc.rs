//! The RFB client against TigerVNC's `Xvnc`, started by the test on a Unix socket of its
//! own (no TCP port) with a VNC password made by `x11vnc -storepasswd`: the login, the
//! first full update covering the whole desktop, the same pixels through ZRLE and Tight as
//! through Raw, a resize asked with SetDesktopSize, and a wrong password refused with the server's
//! reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zt_secret::Secret;
use zt_vnc::Error;
use zt_vnc::rfb::{Client, Config, Event};

const WAIT: Duration = Duration::from_secs(20);

struct Xvnc {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Xvnc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Xvnc {
    fn start(password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        let stored = Command::new("x11vnc")
            .args(["-storepasswd", password])
            .arg(&passwd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(stored.success());
        let socket = dir.path().join("rfb.sock");
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        // A display number of its own (`-displayfd` needs a descriptor of the test's: the
        // number is what makes two servers distinct, the socket is what the test uses).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let display = 200
            + (std::process::id() * 4 + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                % 20_000;
        let child = Command::new("Xvnc")
            .arg(format!(":{display}"))
            .args(["-rfbport", "-1", "-localhost"])
            .arg("-rfbunixpath")
            .arg(&socket)
            .arg("-rfbauth")
            .arg(&passwd)
            .args([
                "-SecurityTypes",
                "VncAuth",
                "-geometry",
                "320x200",
                "-depth",
                "24",
                // The classic root weave: a pattern, not a flat colour, to decode.
                "-retro",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while UnixStream::connect(&socket).is_err() {
            assert!(started.elapsed() < WAIT, "Xvnc did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            socket,
            _dir: dir,
        }
    }
}

/// Runs the client over the socket until `done` says so (or an error), with a deadline.
fn drive(
    socket: &Path,
    client: &mut Client,
    mut done: impl FnMut(&mut Client, &Event) -> bool,
) -> Result<(Vec<Event>, usize), Error> {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut events = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0;
    loop {
        assert!(
            started.elapsed() < WAIT,
            "no end in sight after {} events; the last: {:?}",
            events.len(),
            events.iter().rev().take(4).collect::<Vec<_>>()
        );
        let output = client.output();
        stream.write_all(&output).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Err(Error::Protocol("the server closed".into())),
            Ok(n) => {
                read += n;
                client.feed(&buf[..n])?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("{e}"),
        }
        while let Some(event) = client.poll()? {
            let stop = done(client, &event);
            events.push(event);
            if stop {
                return Ok((events, read));
            }
        }
    }
}

#[test]
fn xvnc_logs_in_sends_the_whole_desktop_and_resizes_on_request() {
    let server = Xvnc::start("s3cret-pw");
    let mut client = Client::new(Config {
        password: Some(Secret::new("s3cret-pw".to_owned())),
        ..Config::default()
    });
    let mut covered = vec![false; 320 * 200];
    let mut asked = false;
    let (events, _) = drive(&server.socket, &mut client, |client, event| {
        match event {
            Event::Pixels(p) => {
                for row in p.y..p.y + p.height {
                    for column in p.x..p.x + p.width {
                        covered[usize::from(row) * 320 + usize::from(column)] = true;
                    }
                }
            }
            // The pseudo-rectangles may come in an update of their own: once the pixels
            // cover the desktop, the test asks for the new size.
            Event::UpdateEnd if !asked && covered.iter().all(|c| *c) => {
                asked = true;
                assert!(
                    client.set_desktop_size(400, 300),
                    "Xvnc has ExtendedDesktopSize"
                );
                client.request_update(true, 0, 0, 320, 200);
            }
            // TigerVNC answers a full request with the desktop's size alone and clears the
            // request: the pixels come with the next, incremental, one.
            Event::UpdateEnd if !asked => client.request_update(true, 0, 0, 320, 200),
            Event::Resize {
                width: 400,
                height: 300,
            } => return true,
            _ => {}
        }
        false
    })
    .unwrap();
    assert!(
        matches!(
            events.first(),
            Some(Event::Connected {
                width: 320,
                height: 200,
                ..
            })
        ),
        "{:?}",
        events.first()
    );
    assert_eq!(client.size(), (400, 300));
}

#[test]
fn a_wrong_password_is_refused_with_the_servers_reason() {
    let server = Xvnc::start("right-pw");
    let mut client = Client::new(Config {
        password: Some(Secret::new("wrong-pw".to_owned())),
        ..Config::default()
    });
    let result = drive(&server.socket, &mut client, |_, _| false);
    match result {
        Err(Error::Refused(reason)) => assert!(!reason.is_empty()),
        other => panic!("{other:?}"),
    }
    // No password at all: the client says so rather than trying None.
    let mut client = Client::new(Config::default());
    assert_eq!(
        drive(&server.socket, &mut client, |_, _| false).map(|_| ()),
        Err(Error::PasswordRequired)
    );
}

/// The desktop's first complete picture through `encodings`, and the bytes it took.
fn picture(server: &Xvnc, encodings: &[i32]) -> (Vec<u8>, usize) {
    let mut client = Client::new(Config {
        password: Some(Secret::new("pw".to_owned())),
        encodings: encodings.to_vec(),
        ..Config::default()
    });
    let mut screen = vec![None::<[u8; 3]>; 320 * 200];
    let (_, read) = drive(&server.socket, &mut client, |client, event| {
        match event {
            Event::Pixels(p) => {
                for (i, px) in p.bgrx.chunks_exact(4).enumerate() {
                    let (row, column) = (i / usize::from(p.width), i % usize::from(p.width));
                    let at = (usize::from(p.y) + row) * 320 + usize::from(p.x) + column;
                    screen[at] = Some([px[2], px[1], px[0]]);
                }
            }
            Event::UpdateEnd if screen.iter().all(Option::is_some) => return true,
            Event::UpdateEnd => client.request_update(true, 0, 0, 320, 200),
            _ => {}
        }
        false
    })
    .unwrap();
    (screen.into_iter().flatten().flatten().collect(), read)
}

#[test]
fn zrle_and_tight_give_the_same_pixels_as_raw() {
    use zt_vnc::rfb::{
        ENCODING_EXTENDED_DESKTOP_SIZE, ENCODING_RAW, ENCODING_TIGHT, ENCODING_ZRLE,
    };
    let server = Xvnc::start("pw");
    let (raw, raw_bytes) = picture(&server, &[ENCODING_RAW, ENCODING_EXTENDED_DESKTOP_SIZE]);
    let (zrle, zrle_bytes) = picture(&server, &[ENCODING_ZRLE, ENCODING_EXTENDED_DESKTOP_SIZE]);
    // Raw is 4 bytes a pixel; the weave in ZRLE is a small fraction of that.
    assert!(raw_bytes >= 320 * 200 * 4, "{raw_bytes}");
    assert!(
        zrle_bytes * 10 < raw_bytes,
        "ZRLE was used: {zrle_bytes} against {raw_bytes}"
    );
    assert_eq!(raw.len(), 320 * 200 * 3);
    // The weave has both colours; ZRLE rebuilt it exactly.
    assert!(raw.chunks(3).any(|p| p == [0, 0, 0]) && raw.chunks(3).any(|p| p != [0, 0, 0]));
    assert!(raw == zrle, "ZRLE's pixels differ from Raw's");
    let (tight, tight_bytes) = picture(&server, &[ENCODING_TIGHT, ENCODING_EXTENDED_DESKTOP_SIZE]);
    assert!(
        tight_bytes * 10 < raw_bytes,
        "Tight was used: {tight_bytes} against {raw_bytes}"
    );
    assert!(raw == tight, "Tight's pixels differ from Raw's");
}
