//! Targets for the tests: real servers (PostgreSQL, OpenSSH) as processes, and small
//! in-process TCP servers with known behaviour (echo, bulk transfer, endless stream).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// The server's certificate (DER), when it offers TLS.
    pub certificate: Option<Vec<u8>>,
    bin: PathBuf,
    child: Child,
    _dir: TempDir,
}

impl Postgres {
    /// Initialises a cluster and starts `postgres` on a free port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// The same, offering TLS with a fresh self-signed certificate.
    pub fn start_tls() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> anyhow::Result<Self> {
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
        let mut certificate = None;
        let mut tls_options = Vec::new();
        if tls {
            let rcgen::CertifiedKey { cert, signing_key } =
                rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
            let (crt, key) = (data.join("server.crt"), data.join("server.key"));
            std::fs::write(&crt, cert.pem())?;
            std::fs::write(&key, signing_key.serialize_pem())?;
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            if as_root {
                let (uid, gid) = user_ids("postgres").context("the `postgres` user")?;
                chown_recursive(&data, uid, gid)?;
            }
            certificate = Some(cert.der().to_vec());
            tls_options = vec![
                "-c".to_owned(),
                "ssl=on".to_owned(),
                "-c".to_owned(),
                format!("ssl_cert_file={}", crt.display()),
                "-c".to_owned(),
                format!("ssl_key_file={}", key.display()),
            ];
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
            .args(&tls_options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting postgres")?;
        let server = Self {
            port,
            user,
            password,
            certificate,
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

    /// Runs `sql` with `psql` as the server's user in database `postgres`; its unaligned,
    /// tuples-only output.
    pub fn query(&self, sql: &str) -> anyhow::Result<String> {
        let output = Command::new(self.psql())
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                &self.user,
            ])
            .args(["-d", "postgres", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", &self.password)
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        if !output.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
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
    /// The user's password, when the server was started for a [`TestUser`].
    pub password: Option<String>,
    /// The client's private key (ed25519, no passphrase).
    pub client_key: PathBuf,
    /// More client keys the server accepts, when asked for ([`SshdOptions::extra_keys`]).
    pub extra_keys: Vec<ClientKey>,
    /// The server's host key, as its `.pub` file holds it (`ssh-ed25519 AAAA… comment`).
    pub host_public_key: String,
    log: PathBuf,
    child: Child,
    _user: Option<TestUser>,
    _dir: TempDir,
}

/// A client key the server accepts.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// `ssh-keygen -t` type (`ed25519`, `rsa`).
    pub kind: String,
    /// Its passphrase (empty: none).
    pub passphrase: String,
    /// The private key file (OpenSSH format).
    pub path: PathBuf,
}

/// Where Debian's openssh-sftp-server puts `sftp-server`.
pub const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// How to start an [`Sshd`].
#[derive(Debug, Clone, Default)]
pub struct SshdOptions {
    /// Log in as a fresh system user with a password (see [`TestUser`]) instead of the
    /// current user, and accept password and keyboard-interactive authentication.
    pub test_user: bool,
    /// More client keys to generate and accept: (`ssh-keygen -t` type, passphrase).
    pub extra_keys: Vec<(String, String)>,
    /// Lines put in `sshd_config` before its own (so they win: `MaxStartups 300`).
    pub config: Vec<String>,
}

impl Sshd {
    /// Generates keys and starts `sshd -D` on a free port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&SshdOptions::default())
    }

    /// Generates keys and starts `sshd -D` on a free port, as `options` say. Its log
    /// (`LogLevel VERBOSE`) is kept for [`Sshd::log`].
    pub fn start_with(options: &SshdOptions) -> anyhow::Result<Self> {
        let sshd = require_program("sshd", "openssh-server", &["/usr/sbin"])?;
        let dir = tempfile::Builder::new().prefix("ztproxy-sshd").tempdir()?;
        let host_key = dir.path().join("host_key");
        let client_key = dir.path().join("client_key");
        for key in [&host_key, &client_key] {
            keygen("ed25519", "", key)?;
        }
        let mut extra_keys = Vec::new();
        for (n, (kind, passphrase)) in options.extra_keys.iter().enumerate() {
            let path = dir.path().join(format!("client_key_{n}_{kind}"));
            keygen(kind, passphrase, &path)?;
            extra_keys.push(ClientKey {
                kind: kind.clone(),
                passphrase: passphrase.clone(),
                path,
            });
        }
        let mut authorized = String::new();
        for key in std::iter::once(&client_key).chain(extra_keys.iter().map(|k| &k.path)) {
            authorized.push_str(&std::fs::read_to_string(key.with_extension(
                match key.extension() {
                    Some(ext) => format!("{}.pub", ext.to_string_lossy()),
                    None => "pub".to_owned(),
                },
            ))?);
        }
        if is_root() {
            // The privilege-separation directory sshd insists on.
            std::fs::create_dir_all("/run/sshd")?;
        }
        let (user, test_user, authorized_file) = if options.test_user {
            let test_user = TestUser::create()?;
            let ssh_dir = test_user.home.join(".ssh");
            std::fs::create_dir_all(&ssh_dir)?;
            std::fs::write(ssh_dir.join("authorized_keys"), &authorized)?;
            let (uid, gid) = user_ids(&test_user.name)?;
            chown_recursive(&ssh_dir, uid, gid)?;
            (
                test_user.name.clone(),
                Some(test_user),
                "%h/.ssh/authorized_keys".to_owned(),
            )
        } else {
            let file = dir.path().join("authorized_keys");
            std::fs::write(&file, &authorized)?;
            (crate::user_name()?, None, file.display().to_string())
        };
        let password_auth = if options.test_user { "yes" } else { "no" };
        let port = free_port();
        let config = dir.path().join("sshd_config");
        // sshd takes the first value it reads for a keyword: the options' lines come first.
        let mut text: String = options.config.iter().map(|l| format!("{l}\n")).collect();
        // OpenSSH's own sftp-server (openssh-sftp-server), a process per session as in
        // production; sshd's built-in copy where it is not installed.
        let sftp_server = [SFTP_SERVER, "/usr/lib/sftp-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("internal-sftp");
        text += &format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {authorized_file}\n\
             PidFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication {password_auth}\n\
             KbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\nLogLevel VERBOSE\n\
             AcceptEnv LANG LC_* TZ\nSubsystem sftp {sftp_server}\n",
            host_key.display(),
            dir.path().join("sshd.pid").display()
        );
        std::fs::write(&config, text)?;
        let log = dir.path().join("sshd.log");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting sshd")?;
        let server = Self {
            port,
            user,
            password: test_user.as_ref().map(|u| u.password.clone()),
            client_key,
            extra_keys,
            host_public_key: std::fs::read_to_string(host_key.with_extension("pub"))?
                .trim()
                .to_owned(),
            log,
            child,
            _user: test_user,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                bail!(
                    "sshd did not listen on port {port}: {}",
                    server.log().lines().last().unwrap_or("(no log)")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// What sshd has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
        self.ssh_with(port, &[], remote)
    }

    /// [`Sshd::ssh`] with more options for `ssh` (`-tt` for a pty).
    pub fn ssh_with(&self, port: u16, options: &[&str], remote: &str) -> anyhow::Result<Command> {
        let ssh = require_program("ssh", "openssh-client", &[])?;
        let mut command = Command::new(ssh);
        command
            .args(["-F", "/dev/null"])
            .args(options)
            .arg("-i")
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

fn keygen(kind: &str, passphrase: &str, path: &Path) -> anyhow::Result<()> {
    let keygen = require_program("ssh-keygen", "openssh-client", &[])?;
    let status = Command::new(keygen)
        .args([
            "-q",
            "-t",
            kind,
            "-N",
            passphrase,
            "-C",
            "ztproxy-test",
            "-f",
        ])
        .arg(path)
        .status()?;
    if !status.success() {
        bail!("ssh-keygen -t {kind} failed");
    }
    Ok(())
}

/// A system user made for one test, with a random password and a home directory, removed
/// (with its home and processes) when dropped. Needs root; the name is unique (`zt` and 12
/// hex digits), so tests can run in parallel.
pub struct TestUser {
    /// The login name.
    pub name: String,
    /// The password.
    pub password: String,
    /// The home directory.
    pub home: PathBuf,
}

impl TestUser {
    /// Creates the user (`useradd`, `chpasswd`).
    pub fn create() -> anyhow::Result<Self> {
        if !is_root() {
            bail!("a test user can only be made as root (useradd)");
        }
        let useradd = require_program("useradd", "passwd", &["/usr/sbin", "/sbin"])?;
        let chpasswd = require_program("chpasswd", "passwd", &["/usr/sbin", "/sbin"])?;
        let random: [u8; 16] = rand_bytes();
        let name = format!("zt{}", hex::encode(&random[..6]));
        // Letters, digits and punctuation a shell or a keyboard-interactive prompt would
        // mangle if they were passed carelessly.
        let password = format!("pw-{}-$!'\\\"", hex::encode(&random[6..]));
        let home = PathBuf::from("/home").join(&name);
        // useradd waits for the passwd lock that parallel tests take in turn; retry when it
        // gives up.
        let mut tries = 0;
        loop {
            let output = Command::new(&useradd)
                .args(["--create-home", "--shell", "/bin/bash", "--home-dir"])
                .arg(&home)
                .arg(&name)
                .output()?;
            if output.status.success() {
                break;
            }
            tries += 1;
            if tries >= 20 {
                bail!(
                    "useradd {name} failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            std::thread::sleep(Duration::from_millis(100 * tries));
        }
        let user = Self {
            name,
            password,
            home,
        };
        let mut child = Command::new(chpasswd)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().context("chpasswd's stdin")?;
            writeln!(stdin, "{}:{}", user.name, user.password)?;
        }
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "chpasswd failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(user)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        for _ in 0..20 {
            match Command::new("userdel")
                .args(["--force", "--remove", &self.name])
                .stderr(Stdio::null())
                .status()
            {
                Ok(status) if status.success() => return,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// Random bytes from the kernel.
fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    if let Ok(mut file) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = file.read_exact(&mut bytes);
    }
    bytes
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

/// A server that reads each connection to its end and answers with the SHA-256 of what it
/// read, in hex, then closes: an upload is complete when the client has that answer.
pub async fn digest_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                if let Ok((_, digest)) = hash_until_eof(&mut reader).await {
                    let _ = writer.write_all(hex::encode(digest).as_bytes()).await;
                    let _ = writer.shutdown().await;
                }
            });
        }
    });
    Ok(addr)
}

/// The SHA-256 of the first `len` bytes of `PatternStream(seed)`, in hex.
pub fn pattern_digest(seed: u64, len: u64) -> String {
    hex::encode(PatternStream::digest(seed, len))
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

/// inetutils `telnetd` behind a listener of the test's own: each connection gets a `telnetd`
/// of its own (as inetd starts it, the socket as its standard input and output), which runs
/// a login program of the test's instead of `/bin/login`. The program prints realistic
/// prompts (`zt-device login:`, `Password:` with echo off), and on the right credentials
/// `Last login: ...` and an interactive `/bin/sh` with the prompt `$ `; on wrong ones,
/// `Login incorrect` and it exits.
pub struct Telnetd {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The user the login program accepts.
    pub user: String,
    /// Its password.
    pub password: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    children: std::sync::Arc<std::sync::Mutex<Vec<Child>>>,
    accept: Option<std::thread::JoinHandle<()>>,
    _dir: TempDir,
}

impl Telnetd {
    /// Starts the listener (telnetd runs per connection).
    pub fn start() -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;

        let telnetd = require_program("telnetd", "inetutils-telnetd", &["/usr/sbin"])?;
        let dir = tempfile::tempdir()?;
        let user = "zt-operator".to_owned();
        let password = format!("pw-{}", hex::encode(zt_proxy::util::random_bytes::<8>()?));
        let script = dir.path().join("login");
        std::fs::write(
            &script,
            format!(
                r#"#!/bin/sh
# A device's login, as telnetd's login program (instead of /bin/login).
printf '\r\nDebian GNU/Linux 12 zt-device\r\n\r\nzt-device login: '
IFS= read -r user
stty -echo
printf 'Password: '
IFS= read -r pass
stty echo
printf '\r\n'
if [ "$user" = '{user}' ] && [ "$pass" = '{password}' ]; then
  printf 'Last login: Sun Dec  6 10:00:00 2026 from 10.0.0.1\r\n'
  cd /tmp
  PS1='$ ' exec /bin/sh -i
fi
sleep 1
printf '\r\nLogin incorrect\r\n'
exit 1
"#
            ),
        )?;
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let children = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = {
            let stop = stop.clone();
            let children = children.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                        Err(_) => break,
                    };
                    let _ = stream.set_nonblocking(false);
                    let spawned = stream.try_clone().and_then(|output| {
                        Command::new(&telnetd)
                            .args(["-h", "-E"])
                            .arg(&script)
                            .stdin(Stdio::from(std::os::fd::OwnedFd::from(stream)))
                            .stdout(Stdio::from(std::os::fd::OwnedFd::from(output)))
                            .stderr(Stdio::null())
                            .spawn()
                    });
                    if let (Ok(child), Ok(mut list)) = (spawned, children.lock()) {
                        list.push(child);
                    }
                }
            })
        };
        Ok(Self {
            port,
            user,
            password,
            stop,
            children,
            accept: Some(accept),
            _dir: dir,
        })
    }
}

impl Drop for Telnetd {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        if let Ok(mut children) = self.children.lock() {
            for child in children.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A MariaDB server in a temporary directory (`mariadb-install-db`), on a free port, with a
/// password-authenticated user of its own and a database `shop`.
pub struct Mariadb {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// User name.
    pub user: String,
    /// The user's password.
    pub password: String,
    /// The server's certificate (PEM), when it offers TLS.
    pub certificate: Option<String>,
    socket: PathBuf,
    child: Child,
    _dir: TempDir,
}

impl Mariadb {
    /// Initialises a data directory and starts `mariadbd`.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// The same, offering TLS with a fresh self-signed certificate.
    pub fn start_tls() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> anyhow::Result<Self> {
        let install = require_program("mariadb-install-db", "mariadb-server", &[])?;
        let server = require_program("mariadbd", "mariadb-server", &["/usr/sbin"])?;
        let dir = tempfile::Builder::new()
            .prefix("ztproxy-mariadb")
            .tempdir()?;
        let as_root = is_root();
        if as_root {
            let (uid, gid) = user_ids("mysql")
                .context("tests run as root need the `mysql` user (package mariadb-server)")?;
            chown_recursive(dir.path(), uid, gid)?;
        }
        let data = dir.path().join("data");
        // A temporary directory of its own: servers bootstrapping side by side in /tmp
        // trip over each other's temporary tables.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp)?;
        let config = dir.path().join("my.cnf");
        let mut settings = format!("[mysqld]\ntmpdir={}\n", tmp.display());
        let mut certificate = None;
        if tls {
            let rcgen::CertifiedKey { cert, signing_key } =
                rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
            let (crt, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&crt, cert.pem())?;
            std::fs::write(&key, signing_key.serialize_pem())?;
            settings.push_str(&format!(
                "ssl-cert={}\nssl-key={}\n",
                crt.display(),
                key.display()
            ));
            certificate = Some(cert.pem());
        }
        std::fs::write(&config, settings)?;
        if as_root {
            let (uid, gid) = user_ids("mysql")?;
            chown_recursive(dir.path(), uid, gid)?;
        }
        let defaults = format!("--defaults-file={}", config.display());
        let mut command = Command::new(install);
        command
            .arg(&defaults)
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if as_root {
            command.arg("--user=mysql");
        }
        let output = command
            .stdin(Stdio::null())
            .output()
            .context("running mariadb-install-db")?;
        if !output.status.success() {
            bail!(
                "mariadb-install-db failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let socket = dir.path().join("sock");
        let port = free_port();
        let mut command = if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "mysql", "--"]).arg(server);
            c
        } else {
            Command::new(server)
        };
        let child = command
            .arg(&defaults)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                "--local-infile=1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mariadbd")?;
        let password = format!("pw-{}", hex::encode(zt_proxy::util::random_bytes::<8>()?));
        let mut server = Self {
            port,
            user: "ztuser".to_owned(),
            password,
            certificate,
            socket,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.socket.exists() {
            if Instant::now() >= deadline {
                bail!("mariadbd did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let setup = format!(
            "CREATE USER '{0}'@'%' IDENTIFIED BY '{1}'; GRANT ALL ON *.* TO '{0}'@'%'; \
             CREATE DATABASE shop;",
            server.user, server.password
        );
        // The socket appears a moment before the server takes connections on it.
        let mut last = String::new();
        while Instant::now() < deadline {
            match server.root(&setup) {
                Ok(_) => return Ok(server),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = server.child.kill();
        bail!("mariadb did not take the test user: {last}")
    }

    /// Runs `sql` as root over the socket; its tab-separated output without headers.
    pub fn root(&self, sql: &str) -> anyhow::Result<String> {
        let output = Command::new(require_program("mariadb", "mariadb-client", &[])?)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "-N", "-B", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .context("running mariadb")?;
        if !output.status.success() {
            bail!(
                "mariadb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        // The server itself (runuser does not pass SIGKILL on); its data goes with the
        // directory.
        if let Ok(pid) = std::fs::read_to_string(self._dir.path().join("pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
