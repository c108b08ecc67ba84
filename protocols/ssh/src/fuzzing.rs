//! The fuzz target's body (`protocols/fuzz/fuzz_targets/ssh_settings.rs`), here so that it
//! builds and is tested with the crate: hostile session parameters (every `ssh` name, any
//! value, host-key pins of any shape) and keyboard-interactive prompts.

#![allow(
    clippy::panic,
    reason = "a fuzz target reports a broken invariant by panicking"
)]

use std::collections::HashMap;

use russh::keys::PublicKey;

use crate::auth;
use crate::hostkey::HostKeyPin;
use crate::settings::SshSettings;

/// The `ssh` parameters this crate reads itself (the terminal's come from
/// [`zt_terminal::settings::PARAMETERS`]), and one nobody reads.
const SSH_NAMES: &[&str] = &[
    "username",
    "password",
    "private-key",
    "passphrase",
    "host-key",
    "command",
    "terminal-type",
    "locale",
    "timezone",
    "server-alive-interval",
    "timeout",
    "enable-sftp",
    "sftp-root-directory",
    "sftp-directory",
    "sftp-disable-download",
    "sftp-disable-upload",
    "sftp-hostname",
    "unknown-name",
];

/// Parses parameters and a host-key pin made from `data`, and answers prompts made from it:
/// never a panic; an error names a parameter and never holds its value.
pub fn settings(data: &[u8]) {
    let names: Vec<&str> = SSH_NAMES
        .iter()
        .chain(zt_terminal::settings::PARAMETERS)
        .copied()
        .collect();
    let text = String::from_utf8_lossy(data);
    let mut values: HashMap<&str, String> = HashMap::new();
    for (n, piece) in text.split('\u{1}').enumerate() {
        let name = names
            .get(piece.bytes().next().map_or(n, usize::from) % names.len())
            .copied()
            .unwrap_or("username");
        values.insert(name, piece.chars().skip(1).collect());
    }
    match SshSettings::from_parameters(|name| values.get(name).map(String::as_str)) {
        Ok(settings) => {
            if let Some(pin) = &settings.host_key {
                let _ = pin.matches(&fixed_key());
            }
        }
        Err(error) => {
            assert!(names.contains(&error.name), "{error}");
            if let Some(value) = values.get(error.name)
                && value.len() > 8
            {
                assert!(!error.to_string().contains(value.as_str()), "{error}");
            }
        }
    }
    if let Ok(pin) = HostKeyPin::parse(&text) {
        let _ = pin.matches(&fixed_key());
    }
    let prompts: Vec<(&str, bool)> = text.split('\n').map(|p| (p, p.len() % 2 == 0)).collect();
    if let Some(answers) = auth::answer_prompts(prompts.iter().copied(), "user", "pw") {
        assert_eq!(answers.len(), prompts.len());
    }
}

fn fixed_key() -> PublicKey {
    // A valid ed25519 key (the tests' KEY_A); parsing a constant cannot fail.
    PublicKey::from_openssh(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5NRQoNFwx+UKHFKyLkLT0A1CrB4CwzQkA5qVM7iEEw",
    )
    .unwrap_or_else(|_| panic!("the fixed key parses"))
}

/// Decodes `data` as an SFTP server's output after its `VERSION`: never a panic, never more
/// entries than the limit (the fuzz target `sftp_replies`).
pub fn sftp_replies(data: &[u8]) {
    use crate::sftp::proto::{Decoded, Decoder, MAX_NAMES, Reply};
    use bytes::BufMut;
    let mut decoder = Decoder::new();
    let mut version = bytes::BytesMut::new();
    version.put_u32(5);
    version.put_u8(2);
    version.put_u32(3);
    decoder.feed(&version);
    let _ = decoder.poll();
    for chunk in data.chunks(97) {
        decoder.feed(chunk);
        loop {
            match decoder.poll() {
                Ok(Some(Decoded::Response(response))) => {
                    if let Reply::Name(entries) = &response.reply {
                        assert!(entries.len() <= MAX_NAMES);
                        for e in entries {
                            let _ = e.link_count();
                            let _ = e.attrs.file_type();
                        }
                    }
                }
                Ok(Some(Decoded::Version)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// A client's path or file name (any text): never a panic; an accepted path has no `..`,
/// no control character, stays under the root it is mapped to, and prints as a path that
/// parses to itself (the fuzz target `sftp_paths`).
pub fn sftp_paths(data: &[u8]) {
    use crate::sftp::jail::{self, VirtualPath};
    let text = String::from_utf8_lossy(data);
    if let Ok(path) = VirtualPath::parse(&text) {
        let shown = path.to_string();
        assert!(!shown.split('/').any(|c| c == ".."), "{shown:?}");
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(VirtualPath::parse(&shown).ok().as_ref(), Some(&path));
        let real = path.under(b"/srv/jail");
        assert!(jail::contains(b"/srv/jail", &real), "{shown:?}");
    }
    if let Ok(name) = jail::file_name(&text) {
        assert!(!name.contains('/') && name != ".." && name != ".");
        let _ = VirtualPath::root().join(name);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_body_runs_on_seeds() {
        for seed in [
            &b""[..],
            b"\x00alice\x01\x01hunter2\x01\x04ssh-ed25519 AAAA\x01\x0btimeout-x",
            b"SHA256:abc\nssh-rsa AAAAB3\n@revoked x",
            &[0xff; 300],
        ] {
            super::settings(seed);
            super::sftp_replies(seed);
            super::sftp_paths(seed);
        }
    }
}
