//! SFTP in SSH connections: file transfer as Guacamole file streams and a browsable
//! filesystem object, over an `sftp` subsystem channel of the session's own connection.
//!
//! ```text
//!  client ── get/put/file/blob/end/ack ─▶ files (Guacamole side, jail, policy, SHA-256)
//!         ◀─ filesystem/body/blob/end/ack ─┘        │ requests in flight, replies by id
//!                                                   ▼
//!                                          client (driver) ── proto (SFTP v3 codec) ── sshd
//! ```
//!
//! * [`proto`]: the SFTP version 3 wire format, sans I/O, bounded against a hostile server;
//! * [`client`]: the driver on a russh channel;
//! * [`jail`]: which paths a client may name and whether a resolved path is inside the root;
//! * `files`: the Guacamole side (see its docs for flow control, the jail and policy).
//!
//! # Why not russh-sftp
//!
//! russh-sftp 3.0 decodes names and handles as UTF-8 `String`s (a file name that is not UTF-8
//! fails the whole listing), copies every data packet through serde, and logs through `log`.
//! The client half of SFTP version 3 that ztproxy needs is about 400 lines here, decodes
//! names as bytes, hands data packets on without a copy, and is fuzzed with the rest of the
//! proxy's parsers (`protocols/fuzz`, target `sftp_replies`).

pub mod client;
pub mod files;
pub mod jail;
pub mod proto;

pub use client::{Sftp, SftpError};
pub use files::{FileDirection, FileEvent, Refusal};
