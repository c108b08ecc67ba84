//! X desktops behind real VNC servers, for the native VNC tests: TigerVNC's `Xvnc` (an X
//! server that is its own VNC server) and `x11vnc` on `Xvfb`. Each shows known content — a
//! solid background (`xsetroot`), a window manager (`twm`, so a window can be dragged by its
//! title) and an `xterm` — and the tests read the X server's own screen (`xwd` of the root
//! window), its clipboard (`xclip`) and its windows (`xdotool`).

// Test support: a failed expectation is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::{free_port, require_program};

/// How long a server or client may take to start.
const START: Duration = Duration::from_secs(20);

/// Which VNC server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// TigerVNC's `Xvnc`.
    Xvnc,
    /// `x11vnc` on `Xvfb`.
    X11vnc,
}

/// An X desktop served over VNC on 127.0.0.1.
pub struct Desktop {
    /// The VNC port.
    pub port: u16,
    /// The VNC password.
    pub password: String,
    /// The X display (`:N`).
    pub display: String,
    /// A file the desktop's `xterm` writes what is typed into it (`cat > file`).
    pub typed: PathBuf,
    children: Vec<Child>,
    dir: TempDir,
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A display number of the process's own.
fn display_number() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    loop {
        let n = 100
            + (std::process::id() * 8 + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                % 30_000;
        if !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
        {
            return n;
        }
    }
}

impl Desktop {
    /// Starts `server` with a desktop of `width` × `height` and `password`.
    pub fn start(
        server: Server,
        (width, height): (u32, u32),
        password: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let passwd = dir.path().join("passwd");
        let stored = Command::new(require_program("x11vnc", "x11vnc", &[])?)
            .args(["-storepasswd", password])
            .arg(&passwd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !stored.success() {
            bail!("x11vnc -storepasswd failed");
        }
        let n = display_number();
        let display = format!(":{n}");
        let port = free_port();
        let logs = dir.path().to_owned();
        let log = move |name: &str| std::fs::File::create(logs.join(name));
        let mut children = Vec::new();
        let geometry = format!("{width}x{height}");
        match server {
            Server::Xvnc => {
                let xvnc = require_program("Xvnc", "tigervnc-standalone-server", &[])?;
                children.push(
                    Command::new(xvnc)
                        .arg(&display)
                        .args(["-rfbport", &port.to_string(), "-localhost", "-rfbauth"])
                        .arg(&passwd)
                        .args(["-SecurityTypes", "VncAuth", "-geometry", &geometry])
                        .args(["-depth", "24", "-nolisten", "tcp", "-AlwaysShared"])
                        .stdout(Stdio::null())
                        .stderr(log("Xvnc.log")?)
                        .spawn()?,
                );
            }
            Server::X11vnc => {
                let xvfb = require_program("Xvfb", "xvfb", &[])?;
                children.push(
                    Command::new(xvfb)
                        .arg(&display)
                        .args([
                            "-screen",
                            "0",
                            &format!("{geometry}x24"),
                            "-nolisten",
                            "tcp",
                        ])
                        .stdout(Stdio::null())
                        .stderr(log("Xvfb.log")?)
                        .spawn()?,
                );
            }
        }
        let mut desktop = Self {
            port,
            password: password.to_owned(),
            display,
            typed: dir.path().join("typed"),
            children,
            dir,
        };
        desktop.wait_for_x()?;
        if server == Server::X11vnc {
            let x11vnc = require_program("x11vnc", "x11vnc", &[])?;
            let child = Command::new(x11vnc)
                .args(["-display", &desktop.display, "-rfbport", &port.to_string()])
                .arg("-rfbauth")
                .arg(&passwd)
                .args([
                    "-localhost",
                    "-forever",
                    "-shared",
                    "-nocursor",
                    "-noxdamage",
                ])
                .args(["-nowf", "-noscr", "-wait", "10", "-defer", "10"])
                .stdout(Stdio::null())
                .stderr(log("x11vnc.log")?)
                .spawn()?;
            desktop.children.push(child);
        }
        desktop.run("xsetroot", &["-solid", "#336699"])?;
        let twmrc = desktop.dir.path().join("twmrc");
        std::fs::write(
            &twmrc,
            // Fonts xfonts-base has (twm exits without its default "variable"); a window at
            // the position it asks for; a drag of the title moves it.
            "TitleFont \"fixed\"\nResizeFont \"fixed\"\nMenuFont \"fixed\"\nIconFont \"fixed\"\n\
             IconManagerFont \"fixed\"\nUsePPosition \"on\"\nNoGrabServer\nOpaqueMove\n\
             BorderWidth 2\nButton1 = : title : f.move\n",
        )?;
        let twm = desktop.spawn("twm", &["-f", twmrc.to_str().unwrap_or_default()], "twm")?;
        desktop.children.push(twm);
        let typed = desktop.typed.display().to_string();
        let xterm = desktop.spawn(
            "xterm",
            &[
                "-geometry",
                "48x8+40+60",
                "-title",
                "zt-xterm",
                "-fa",
                "DejaVu Sans Mono",
                "-fs",
                "11",
                "-bg",
                "white",
                "-fg",
                "black",
                "-e",
                "sh",
                "-c",
                &format!("echo ztproxy native VNC; stty -echoctl; cat > '{typed}'"),
            ],
            "xterm",
        )?;
        desktop.children.push(xterm);
        let xterm = desktop.wait_for_window("zt-xterm")?;
        // twm has framed it (a title bar to drag).
        let started = Instant::now();
        loop {
            let tree = desktop.run("xwininfo", &["-id", &xterm, "-tree"])?;
            let parent = tree
                .lines()
                .find(|l| l.trim_start().starts_with("Parent window id:"))
                .unwrap_or_default();
            if !parent.contains("(the root window)") {
                break;
            }
            if started.elapsed() > START {
                bail!("twm did not frame the xterm: {}", desktop.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > START {
                bail!(
                    "the VNC server did not listen on port {port}: {}",
                    desktop.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(desktop)
    }

    /// The servers' logs.
    pub fn logs(&self) -> String {
        ["Xvnc.log", "Xvfb.log", "x11vnc.log", "twm", "xterm"]
            .iter()
            .filter_map(|name| std::fs::read_to_string(self.dir.path().join(name)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn wait_for_x(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if self.command("xdpyinfo")?.output()?.status.success() {
                return Ok(());
            }
            if started.elapsed() > START {
                bail!(
                    "the X server {} did not start: {}",
                    self.display,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command of the X utilities, on this display.
    pub fn command(&self, program: &str) -> anyhow::Result<Command> {
        let package = match program {
            "xwd" => "x11-apps",
            "xdotool" => "xdotool",
            "xclip" => "xclip",
            "xterm" => "xterm",
            "twm" => "twm",
            "xdpyinfo" | "xwininfo" => "x11-utils",
            _ => "x11-xserver-utils",
        };
        let mut command = Command::new(require_program(program, package, &[])?);
        command
            .env("DISPLAY", &self.display)
            .env("LC_ALL", "C")
            .env_remove("XAUTHORITY");
        Ok(command)
    }

    fn spawn(&self, program: &str, args: &[&str], log: &str) -> anyhow::Result<Child> {
        Ok(self
            .command(program)?
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join(log))?)
            .spawn()?)
    }

    /// Starts an X client on the desktop that runs until the desktop stops.
    pub fn start_client(&mut self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let child = self.spawn(program, args, &format!("{program}-client"))?;
        self.children.push(child);
        Ok(())
    }

    /// Runs an X utility to the end; its standard output.
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let output = self.command(program)?.args(args).output()?;
        if !output.status.success() {
            bail!(
                "{program} {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Waits for a window titled `title`; its id.
    pub fn wait_for_window(&self, title: &str) -> anyhow::Result<String> {
        let started = Instant::now();
        loop {
            if let Ok(out) = self.run("xdotool", &["search", "--name", title])
                && let Some(id) = out.lines().next()
            {
                return Ok(id.trim().to_owned());
            }
            if started.elapsed() > START {
                bail!("no window {title}: {}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A window's position on the screen (`xwininfo`'s absolute upper left corner; with
    /// twm, the title bar is above it).
    pub fn window_position(&self, id: &str) -> anyhow::Result<(i32, i32)> {
        let out = self.run("xwininfo", &["-id", id])?;
        let value = |key: &str| -> anyhow::Result<i32> {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .context("no such field")?
                .trim()
                .parse()
                .context("not a number")
        };
        Ok((
            value("Absolute upper-left X:")?,
            value("Absolute upper-left Y:")?,
        ))
    }

    /// The screen's size, as the X server has it.
    pub fn screen_size(&self) -> anyhow::Result<(u32, u32)> {
        let out = self.run("xdpyinfo", &[])?;
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("dimensions:"))
            .context("no dimensions")?;
        let size = line.split_whitespace().nth(1).context("no size")?;
        let (w, h) = size.split_once('x').context("not WxH")?;
        Ok((w.parse()?, h.parse()?))
    }

    /// The X server's own picture of the root window (`xwd`): width, height, RGBA pixels.
    pub fn screenshot(&self) -> anyhow::Result<(u32, u32, Vec<[u8; 4]>)> {
        let output = self.command("xwd")?.args(["-root", "-silent"]).output()?;
        if !output.status.success() {
            bail!("xwd failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        parse_xwd(&output.stdout)
    }

    /// The X clipboard (`CLIPBOARD` selection), or `None` when it is empty.
    pub fn clipboard(&self) -> Option<String> {
        let output = self
            .command("xclip")
            .ok()?
            .args(["-selection", "clipboard", "-o"])
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Sets the X clipboard (an `xclip` stays to serve it until another owner takes it).
    pub fn set_clipboard(&mut self, text: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut child = self
            .command("xclip")?
            .args(["-selection", "clipboard", "-i", "-quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .context("xclip's input")?
            .write_all(text.as_bytes())?;
        self.children.push(child);
        Ok(())
    }

    /// What was typed into the xterm so far.
    pub fn typed(&self) -> String {
        std::fs::read_to_string(&self.typed).unwrap_or_default()
    }
}

/// Reads an XWD file (X11 window dump, version 7) of a true-colour ZPixmap.
pub fn parse_xwd(data: &[u8]) -> anyhow::Result<(u32, u32, Vec<[u8; 4]>)> {
    let field = |i: usize| -> anyhow::Result<u32> {
        let bytes = data.get(i * 4..i * 4 + 4).context("a short XWD header")?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let header_size = field(0)? as usize;
    if field(1)? != 7 || field(2)? != 2 {
        bail!("not a version 7 ZPixmap XWD");
    }
    let (width, height) = (field(4)?, field(5)?);
    let byte_order = field(7)?;
    let bits_per_pixel = field(11)?;
    let bytes_per_line = field(12)? as usize;
    let (red, green, blue) = (field(14)?, field(15)?, field(16)?);
    let colours = field(19)? as usize;
    if bits_per_pixel != 32 {
        bail!("{bits_per_pixel} bits per pixel");
    }
    let start = header_size + colours * 12;
    let channel = |value: u32, mask: u32| -> u8 {
        let shift = mask.trailing_zeros();
        ((value & mask) >> shift) as u8
    };
    let mut pixels = Vec::with_capacity((width * height) as usize);
    for y in 0..height as usize {
        let row = data
            .get(start + y * bytes_per_line..start + y * bytes_per_line + width as usize * 4)
            .context("a short XWD image")?;
        for p in row.chunks_exact(4) {
            let value = if byte_order == 0 {
                u32::from_le_bytes([p[0], p[1], p[2], p[3]])
            } else {
                u32::from_be_bytes([p[0], p[1], p[2], p[3]])
            };
            pixels.push([
                channel(value, red),
                channel(value, green),
                channel(value, blue),
                255,
            ]);
        }
    }
    Ok((width, height, pixels))
}
