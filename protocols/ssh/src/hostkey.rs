//! Host-key pinning: the `host-key` parameter, and the decision on the key a target presents.
//!
//! A pin is one or more of these, one per line (blank lines and `#` comments are skipped):
//!
//! * a `known_hosts` line: `host[,host…] ssh-ed25519 AAAA… [comment]` (the host field,
//!   hashed or not, is not used: the session's target is the only host);
//! * an OpenSSH public key: `ssh-ed25519 AAAA… [comment]`, as in a `.pub` file;
//! * the key alone, in base64 (`AAAA…`), as guacd takes it;
//! * a fingerprint, `SHA256:…`, as `ssh-keygen -l` prints it.
//!
//! The target's key matches when it is one of them. Certificates are checked by the key they
//! certify (a certificate authority is not a pin). `@cert-authority` and `@revoked` lines
//! are refused: they say something a pin cannot.

use base64::Engine as _;
use russh::keys::ssh_key::{HashAlg, PublicKey};

use crate::error::SettingsError;

/// The most keys one pin holds.
const MAX_PINNED: usize = 32;

/// The keys a target may present. See the module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct HostKeyPin {
    keys: Vec<Pinned>,
}

#[derive(Clone, PartialEq, Eq)]
enum Pinned {
    /// The key's wire encoding (algorithm and key data).
    Key(Vec<u8>),
    /// A SHA-256 fingerprint.
    Sha256([u8; 32]),
}

impl std::fmt::Debug for HostKeyPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Public, but an operator's inventory: say how many, not which.
        write!(f, "HostKeyPin({} keys)", self.keys.len())
    }
}

impl HostKeyPin {
    /// Parses the `host-key` parameter.
    pub fn parse(text: &str) -> Result<Self, SettingsError> {
        let mut keys = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if keys.len() == MAX_PINNED {
                return Err(SettingsError::new("host-key", "holds too many keys"));
            }
            keys.push(parse_line(line)?);
        }
        if keys.is_empty() {
            return Err(SettingsError::new("host-key", "holds no key"));
        }
        Ok(Self { keys })
    }

    /// Whether `key` is one of the pinned keys.
    pub fn matches(&self, key: &PublicKey) -> bool {
        let Ok(wire) = key.to_bytes() else {
            return false;
        };
        let digest = sha256(&wire);
        self.keys.iter().any(|pinned| match pinned {
            Pinned::Key(bytes) => *bytes == wire,
            Pinned::Sha256(fingerprint) => *fingerprint == digest,
        })
    }
}

/// What the policy says about a target that has no pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnpinnedPolicy {
    /// End the session before authentication (the default).
    #[default]
    Refuse,
    /// Log in, and report the key's fingerprint so the gateway can pin it.
    Accept,
}

/// The decision on a presented key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It is a pinned key.
    Pinned,
    /// There is no pin and the policy accepts unpinned keys.
    AcceptedUnpinned,
    /// There is a pin and this key is not in it.
    Mismatch,
    /// There is no pin and the policy refuses.
    RefusedUnpinned,
}

impl Verdict {
    /// Whether the login may go on.
    pub fn accepts(self) -> bool {
        matches!(self, Self::Pinned | Self::AcceptedUnpinned)
    }
}

/// Decides on `key`, presented by a target pinned by `pin`, under `policy`.
pub fn decide(pin: Option<&HostKeyPin>, policy: UnpinnedPolicy, key: &PublicKey) -> Verdict {
    match (pin, policy) {
        (Some(pin), _) if pin.matches(key) => Verdict::Pinned,
        (Some(_), _) => Verdict::Mismatch,
        (None, UnpinnedPolicy::Accept) => Verdict::AcceptedUnpinned,
        (None, UnpinnedPolicy::Refuse) => Verdict::RefusedUnpinned,
    }
}

/// `SHA256:…` as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn parse_line(line: &str) -> Result<Pinned, SettingsError> {
    let bad = |reason| SettingsError::new("host-key", reason);
    if line.starts_with('@') {
        return Err(bad(
            "holds a @cert-authority or @revoked line, which is not a pin",
        ));
    }
    if let Some(b64) = line.strip_prefix("SHA256:") {
        let digest = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64.trim_end_matches('='))
            .ok()
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
            .ok_or_else(|| bad("holds a malformed SHA256 fingerprint"))?;
        return Ok(Pinned::Sha256(digest));
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    // The key is the first field that decodes as one, after an algorithm name: a known_hosts
    // line has the host first, a `.pub` line starts with the algorithm, a bare key is alone.
    let candidates: Vec<&str> = match fields.as_slice() {
        [key] => vec![key],
        [first, second, rest @ ..] => {
            let mut c = vec![*second];
            if let Some(third) = rest.first() {
                c.push(third);
            }
            c.push(first);
            c
        }
        [] => vec![],
    };
    for candidate in candidates {
        if let Ok(key) = russh::keys::parse_public_key_base64(candidate)
            && let Ok(wire) = key.to_bytes()
        {
            return Ok(Pinned::Key(wire));
        }
    }
    Err(bad(
        "holds a line that is not a key, a known_hosts entry or a fingerprint",
    ))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use russh::keys::ssh_key::sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two ed25519 host keys made with `ssh-keygen -t ed25519` (KEY_A's fingerprint is what
    /// `ssh-keygen -lf` printed for it).
    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5NRQoNFwx+UKHFKyLkLT0A1CrB4CwzQkA5qVM7iEEw a@host";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKkCjVWA7I+g/DyTTPkiRQ3hgud5v0UZb7bBoiK2ad1+ b@host";

    fn key(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).unwrap()
    }

    #[test]
    fn every_pin_form_matches_its_key_only() {
        let a = key(KEY_A);
        let b64 = KEY_A.split_whitespace().nth(1).unwrap();
        for pin in [
            KEY_A.to_owned(),
            format!("[10.0.0.5]:2222,host.example {}", &KEY_A[..KEY_A.len() - 7]),
            format!("|1|c2FsdA==|aGFzaA== {}", &KEY_A[..KEY_A.len() - 7]),
            b64.to_owned(),
            fingerprint(&a),
            format!("# the old key\n{KEY_B}\n\n{KEY_A}\n"),
        ] {
            let pin = HostKeyPin::parse(&pin).unwrap();
            assert!(pin.matches(&a), "{pin:?} should match");
            assert_eq!(
                decide(Some(&pin), UnpinnedPolicy::Refuse, &a),
                Verdict::Pinned
            );
        }
        let only_b = HostKeyPin::parse(KEY_B).unwrap();
        assert!(!only_b.matches(&a));
        assert_eq!(
            decide(Some(&only_b), UnpinnedPolicy::Accept, &a),
            Verdict::Mismatch,
            "a pin is never overridden by the unpinned policy"
        );
    }

    #[test]
    fn unpinned_follows_the_policy() {
        let a = key(KEY_A);
        assert_eq!(
            decide(None, UnpinnedPolicy::Refuse, &a),
            Verdict::RefusedUnpinned
        );
        assert_eq!(
            decide(None, UnpinnedPolicy::Accept, &a),
            Verdict::AcceptedUnpinned
        );
        assert!(!Verdict::RefusedUnpinned.accepts() && !Verdict::Mismatch.accepts());
    }

    #[test]
    fn fingerprints_are_ssh_keygens() {
        // ssh-keygen -lf of KEY_A.
        assert_eq!(
            fingerprint(&key(KEY_A)),
            "SHA256:AvioL3mqOfgfMdPodfZ0D80d9Em46YyzJNIHZo8yGUQ"
        );
    }

    #[test]
    fn malformed_pins_are_refused_by_name() {
        for text in [
            "",
            "# only a comment",
            "ssh-ed25519 notbase64!",
            "SHA256:short",
            "@cert-authority * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5NRQoNFwx+UKHFKyLkLT0A1CrB4CwzQkA5qVM7iEEw",
            "AAAA",
            &"AAAA\n".repeat(100),
        ] {
            let error = HostKeyPin::parse(text).unwrap_err();
            assert_eq!(error.name, "host-key", "{text:?}");
        }
    }
}
