//! Targets for the tests: real servers (PostgreSQL, OpenSSH) as processes, and small
//! in-process TCP servers with known behaviour (echo, bulk transfer, endless stream).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::{PatternStream, chown_recursive, free_port, is_root, require_program, user_ids};

/// A PostgreSQL server in a temporary directory, with a password-authenticated user.
pub struct Postgres {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// User name.
    pub user: String,
    /// The user's password (SCRAM-SHA-256 authentication).
    pub password: String,
    bin: PathBuf,
    child: Child,
    _dir: TempDir,
}

impl Postgres {
    /// Initialises a cluster and starts `postgres` on a free port.
    pub fn start() -> anyhow::Result<Self> {
        let bin = postgres_bindir()?;
        let dir = tempfile::Builder::new().prefix("ztproxy-pg").tempdir()?;
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let data = dir.path().join("data");
        let user = "ztuser".to_owned();
        let password = format!("pw-{}", hex::encode(zt_proxy::util::random_bytes::<8>()?));
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password)?;
        let as_root = is_root();
        if as_root {
            let (uid, gid) = user_ids("postgres")
                .context("tests run as root need the `postgres` user (package postgresql)")?;
            chown_recursive(dir.path(), uid, gid)?;
        }
        let run_as = |program: PathBuf| {
            let mut command = if as_root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                Command::new(program)
            };
            command.stdin(Stdio::null());
            command
        };
        let status = run_as(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                &user,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running initdb")?;
        if !status.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&status.stderr));
        }
        let port = free_port();
        let child = run_as(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "logging_collector=off",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting postgres")?;
        let server = Self {
            port,
            user,
            password,
            bin,
            child,
            _dir: dir,
        };
        server.wait_ready(Duration::from_secs(30))?;
        Ok(server)
    }

    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("postgres did not become ready on port {}", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `psql` client.
    pub fn psql(&self) -> PathBuf {
        self.bin.join("psql")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGTERM is "smart shutdown"; the data directory is removed afterwards anyway.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn postgres_bindir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("postgres").is_file())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .context("PostgreSQL server binaries not found: install the Debian package `postgresql`")
}

/// An OpenSSH server in a temporary directory that accepts one generated client key.
pub struct Sshd {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// The client's private key.
    pub client_key: PathBuf,
    child: Child,
    _dir: TempDir,
}

impl Sshd {
    /// Generates keys and starts `sshd -D` on a free port.
    pub fn start() -> anyhow::Result<Self> {
        let sshd = require_program("sshd", "openssh-server", &["/usr/sbin"])?;
        let keygen = require_program("ssh-keygen", "openssh-client", &[])?;
        let dir = tempfile::Builder::new().prefix("ztproxy-sshd").tempdir()?;
        let host_key = dir.path().join("host_key");
        let client_key = dir.path().join("client_key");
        for key in [&host_key, &client_key] {
            let status = Command::new(&keygen)
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(key)
                .status()?;
            if !status.success() {
                bail!("ssh-keygen failed");
            }
        }
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized)?;
        if is_root() {
            // The privilege-separation directory sshd insists on.
            std::fs::create_dir_all("/run/sshd")?;
        }
        let user = crate::user_name()?;
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n\
                 Subsystem sftp internal-sftp\n",
                host_key.display(),
                authorized.display(),
                dir.path().join("sshd.pid").display()
            ),
        )?;
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sshd")?;
        let server = Self {
            port,
            user,
            client_key,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                bail!("sshd did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// An `ssh -N -L` command that forwards `local` on 127.0.0.1 to `target` through this
    /// server (the port forwarding a user would pick instead of a tunnel).
    pub fn forward(&self, local: u16, target: SocketAddr) -> anyhow::Result<Command> {
        let ssh = require_program("ssh", "openssh-client", &[])?;
        let mut command = Command::new(ssh);
        command
            .args(["-F", "/dev/null", "-i"])
            .arg(&self.client_key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ExitOnForwardFailure=yes",
                "-N",
                "-L",
                &format!("127.0.0.1:{local}:{}:{}", target.ip(), target.port()),
                "-p",
                &self.port.to_string(),
            ])
            .arg(format!("{}@127.0.0.1", self.user))
            .stdin(Stdio::null());
        Ok(command)
    }

    /// An `ssh` command that logs in through `port` on 127.0.0.1 and runs `remote`.
    pub fn ssh(&self, port: u16, remote: &str) -> anyhow::Result<Command> {
        let ssh = require_program("ssh", "openssh-client", &[])?;
        let mut command = Command::new(ssh);
        command
            .args(["-F", "/dev/null", "-i"])
            .arg(&self.client_key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "LogLevel=ERROR",
                "-p",
                &port.to_string(),
            ])
            .arg(format!("{}@127.0.0.1", self.user))
            .arg(remote);
        Ok(command)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP echo server; each connection echoes until EOF, then half-closes.
pub async fn echo_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
                    let _ = writer.shutdown().await;
                }
            });
        }
    });
    Ok(addr)
}

/// What a bulk-transfer server saw on one connection.
#[derive(Debug, Clone)]
pub struct BulkReport {
    /// Bytes received from the client.
    pub received: u64,
    /// SHA-256 of them.
    pub digest: [u8; 32],
    /// Bytes the server sent.
    pub sent: u64,
}

/// A server that, on every connection, sends `send_len` bytes of `PatternStream(seed)` and
/// half-closes, while reading everything the client sends and reporting its digest.
pub async fn bulk_server(
    send_len: u64,
    seed: u64,
) -> anyhow::Result<(SocketAddr, mpsc::UnboundedReceiver<BulkReport>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (reports_tx, reports) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let reports = reports_tx.clone();
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.into_split();
                let send = async move {
                    send_pattern(&mut writer, seed, send_len).await?;
                    writer.shutdown().await?;
                    Ok::<u64, std::io::Error>(send_len)
                };
                let receive = async move { hash_until_eof(&mut reader).await };
                if let Ok((sent, (received, digest))) = tokio::try_join!(send, receive) {
                    let _ = reports.send(BulkReport {
                        received,
                        digest,
                        sent,
                    });
                }
            });
        }
    });
    Ok((addr, reports))
}

/// Writes `len` bytes of `PatternStream(seed)`.
pub async fn send_pattern(
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    seed: u64,
    len: u64,
) -> std::io::Result<()> {
    let mut stream = PatternStream::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        stream.fill(&mut buf[..n]);
        writer.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

/// Reads until EOF; returns the byte count and SHA-256.
pub async fn hash_until_eof(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<(u64, [u8; 32])> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok((total, hasher.finalize().into()));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// A server that streams bytes to every client until the connection breaks, and reports
/// when each connection's socket closed (as seen from the target side).
pub async fn streaming_server() -> anyhow::Result<(SocketAddr, mpsc::UnboundedReceiver<Instant>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (closed_tx, closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed = closed_tx.clone();
            tokio::spawn(async move {
                let buf = vec![0x5au8; 16 * 1024];
                let mut scratch = [0u8; 1024];
                let (mut reader, mut writer) = stream.split();
                loop {
                    tokio::select! {
                        written = writer.write_all(&buf) => if written.is_err() { break },
                        read = reader.read(&mut scratch) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        },
                    }
                }
                let _ = closed.send(Instant::now());
            });
        }
    });
    Ok((addr, closed))
}

/// A loopback address nothing listens on (connections are refused).
pub fn refusing_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}
