//! Native SSH connections: ztproxy is the SSH client and the terminal, so an SSH session
//! needs no guacd.
//!
//! ```text
//!  session's parameters ─▶ SshSettings ─▶ login() ──────────▶ SshConnection ─▶ run()
//!                          (settings.rs)  TCP, key exchange,    pty + shell     terminal ⇄ pipe
//!                                         host-key decision     (or command)    (session.rs)
//!                                         (hostkey.rs), auth
//!                                         (auth.rs) — connect.rs
//! ```
//!
//! * [`SshSettings`] reads guacd 1.6's `ssh` parameters (`username`, `password`,
//!   `private-key`, `passphrase`, `host-key`, `command`, `terminal-type`, `locale`,
//!   `timezone`, `server-alive-interval`, `timeout` and the terminal's own).
//! * [`login`] connects under `timeout`, decides on the target's host key before anything
//!   else is sent ([`hostkey`]: the pinned key(s), or the proxy's [`UnpinnedPolicy`]),
//!   authenticates with the session's credentials — the private key first, then the
//!   password, as `password` or as keyboard-interactive answers ([`auth`]) — and opens a pty
//!   with a shell or `command`. The credentials go to the target and nowhere else.
//! * [`run`] joins the SSH channel and a [`zt_terminal::Terminal`] to a pipe of Guacamole
//!   instructions (the proxy's connection core is at its other end), reporting output,
//!   input and resizes to an [`Observer`] (the typescript recording), until the target
//!   closes, the client leaves, or the proxy stops it; then it disconnects.
//!
//! It does not record, audit, decide policy or read configuration: the proxy does, with what
//! [`LoginInfo`], [`Error`], [`Observer`] and [`SessionEnd`] tell it. Nothing here logs a
//! credential, a key or a keystroke, and no error holds one.
//!
//! # Why russh
//!
//! The design card names ssh2 (libssh2); Warpgate and Keeper's own Rust gateway use russh.
//! `bench/src/bin/ssh_client_compare.rs` measured both against one OpenSSH 9.2 server in the
//! same run, each library in a process of its own (2 vCPUs, Intel Xeon under KVM;
//! `bench/RESULTS.md` has the command): 200 concurrent sessions each logging in with an
//! ed25519 key and draining `seq 1 20000` through a pty, one session draining
//! `seq 1 2000000`, and 200 idle shells.
//!
//! | medians of 3 rounds | russh 0.65 | ssh2 0.9 (libssh2) | ssh2 ÷ russh |
//! |---|---:|---:|---:|
//! | client CPU per session: log in and drain 129 KB | 1.3 ms | 2.6 ms | 2.0 |
//! | client CPU per session: log in to an idle shell | 0.4 ms | 1.9 ms | 4.75 |
//! | resident memory per idle session | 29 KiB | 106 KiB | 3.6 |
//! | peak resident memory of the run | 27.5 MiB | 35.5 MiB | 1.29 |
//! | wall time, 200 concurrent drains (sshd-bound) | 30.7 s | 25.9 s | 0.84 |
//! | one session draining 15.9 MB | 19.4 MB/s | 24.6 MB/s | 1.26 |
//!
//! russh takes half the CPU per session and a third of the memory (libssh2 is blocking, so
//! each session holds a thread; guacd's SSH plugin does the same), is async on the proxy's
//! tokio runtime, and is pure Rust, where libssh2 parses a hostile server's packets in C.
//! libssh2 drains one large output 15–25 % faster (0.7 s against 0.85 s for 15.9 MB), which
//! does not matter here: both are far faster than a terminal shows (the terminal coalesces
//! frames), and the 200-session wall time is bound by the server. russh is built with
//! `ring` (already the proxy's TLS and QUIC provider), not `aws-lc-rs`.
//!
//! # Limits
//!
//! Settings texts are capped (4 KiB, a key 64 KiB, 32 pinned keys); keyboard-interactive is
//! answered for at most [`auth::MAX_ROUNDS`] rounds of [`auth::MAX_PROMPTS`] prompts; the
//! terminal bounds everything the target sends (see `zt_terminal`'s limits).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
mod connect;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hostkey;
mod session;
pub mod settings;
pub mod sftp;

pub use connect::{LoginInfo, LoginOptions, SshConnection, login};
pub use error::{Error, SettingsError};
pub use hostkey::{HostKeyPin, UnpinnedPolicy};
pub use session::{EndedBy, Observer, SessionEnd, run};
pub use settings::{SftpSettings, SshSettings};
