//! Sealed signalling: SDP offers and answers that relays can neither read nor swap.
//!
//! Offer and answer travel through relays the user does not control. Each carries the
//! DTLS certificate fingerprint of its side, so a relay that could rewrite them could sit in
//! the middle of the peer connection. When the gateway passes the resource's traffic secret,
//! the client seals its offer and ztproxy seals its answer:
//!
//! ```text
//! key   = HKDF-SHA256(ikm  = traffic secret,
//!                     salt = "ztproxy sealed signalling v1",
//!                     info = "offer" | "answer", 0x00, resource id)        32 bytes
//! aad   = "ztproxy-signalling/1", 0x00, "offer" | "answer", 0x00, resource id
//!
//! sealed = base64url-nopad( version | nonce | AES-256-GCM(key, nonce, aad, plaintext) )
//!           1 byte = 0x01   12 bytes    len(plaintext) + 16 bytes
//! ```
//!
//! The plaintext is the JSON session description (`{"type":"offer","sdp":"..."}`). Nonces
//! are random (OS CSPRNG); each key seals a handful of messages, far below the birthday
//! bound for 96-bit nonces. Offer and answer use different keys, so an answer cannot be
//! reflected as an offer, and the resource id is bound in both the key and the associated
//! data, so a sealed offer for one resource does not open for another.
//!
//! A replayed sealed offer creates a session whose DTLS fingerprint belongs to the original
//! client; without that client's private key the replaying party cannot complete the
//! handshake, and the session ends at its connect timeout.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::control::MAX_SDP_BYTES;

/// The sealed-signalling format version this crate writes and reads.
pub const SEAL_VERSION: u8 = 1;
/// Length of the random AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Shortest traffic secret accepted, in bytes.
pub const MIN_TRAFFIC_SECRET_LEN: usize = 16;
/// Longest traffic secret accepted, in bytes.
pub const MAX_TRAFFIC_SECRET_LEN: usize = 128;
/// Longest sealed message accepted, in base64 characters: a maximal SDP in its JSON
/// envelope, sealed.
pub const MAX_SEALED_LEN: usize = (MAX_SDP_BYTES + 1024 + 1 + NONCE_LEN + TAG_LEN) * 4 / 3 + 4;

const HKDF_SALT: &[u8] = b"ztproxy sealed signalling v1";
const AAD_PREFIX: &[u8] = b"ztproxy-signalling/1";

/// Which message a key seals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignallingDirection {
    /// The client's offer.
    Offer,
    /// ztproxy's answer.
    Answer,
}

impl SignallingDirection {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Offer => b"offer",
            Self::Answer => b"answer",
        }
    }
}

/// Why a sealed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The traffic secret is not base64 or has an unacceptable length.
    #[error(
        "traffic secret must be base64 of {MIN_TRAFFIC_SECRET_LEN} to {MAX_TRAFFIC_SECRET_LEN} bytes"
    )]
    BadTrafficSecret,
    /// The sealed message is not base64url.
    #[error("sealed message is not base64url")]
    NotBase64,
    /// The sealed message is shorter than version, nonce and tag.
    #[error("sealed message is truncated")]
    Truncated,
    /// The sealed message is longer than [`MAX_SEALED_LEN`].
    #[error("sealed message is too large")]
    TooLarge,
    /// The version byte is not one this build reads.
    #[error("sealed message has unsupported version {0}")]
    UnsupportedVersion(u8),
    /// Authentication failed: wrong key, wrong resource, wrong direction, or tampered.
    #[error("sealed message does not open with this resource's key (wrong key or tampered)")]
    WrongKeyOrTampered,
    /// The OS random number generator failed.
    #[error("no randomness available for a nonce")]
    NoRandomness,
}

/// Decodes a traffic secret given as base64 (standard or URL-safe, padded or not).
pub fn decode_traffic_secret(text: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if text.len() > MAX_TRAFFIC_SECRET_LEN * 2 {
        return Err(SealError::BadTrafficSecret);
    }
    let trimmed = text.trim_end_matches('=');
    let decoded = URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD.decode(text))
        .or_else(|_| URL_SAFE.decode(text))
        .map_err(|_| SealError::BadTrafficSecret)?;
    let decoded = Zeroizing::new(decoded);
    if !(MIN_TRAFFIC_SECRET_LEN..=MAX_TRAFFIC_SECRET_LEN).contains(&decoded.len()) {
        return Err(SealError::BadTrafficSecret);
    }
    Ok(decoded)
}

/// A key that seals or opens one direction of signalling for one resource.
pub struct SealKey {
    key: Zeroizing<[u8; 32]>,
    aad: Vec<u8>,
}

impl SealKey {
    /// Derives the key for `direction` from a decoded traffic secret.
    #[expect(
        clippy::expect_used,
        reason = "the HKDF output length is a constant within limits"
    )]
    pub fn derive(
        traffic_secret: &[u8],
        resource_id: &str,
        direction: SignallingDirection,
    ) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), traffic_secret);
        let mut info = Vec::with_capacity(8 + resource_id.len());
        info.extend_from_slice(direction.label());
        info.push(0);
        info.extend_from_slice(resource_id.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf.expand(&info, key.as_mut())
            .expect("32 bytes is far below HKDF-SHA256's 8160-byte output limit");
        let mut aad = Vec::with_capacity(AAD_PREFIX.len() + 8 + resource_id.len());
        aad.extend_from_slice(AAD_PREFIX);
        aad.push(0);
        aad.extend_from_slice(direction.label());
        aad.push(0);
        aad.extend_from_slice(resource_id.as_bytes());
        Self { key, aad }
    }

    /// Seals `plaintext`, returning the base64url text to put in the request or response.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealError::NoRandomness)?;
        let cipher = self.cipher();
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &self.aad,
                },
            )
            .map_err(|_| SealError::TooLarge)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a sealed message produced by [`SealKey::seal`] with the same key.
    pub fn open(&self, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(SealError::TooLarge);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(sealed.trim_end_matches('='))
            .map_err(|_| SealError::NotBase64)?;
        let (&version, rest) = raw.split_first().ok_or(SealError::Truncated)?;
        if version != SEAL_VERSION {
            return Err(SealError::UnsupportedVersion(version));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Truncated);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Truncated)?;
        self.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &self.aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::WrongKeyOrTampered)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&(*self.key).into())
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trips() {
        let key = SealKey::derive(SECRET, "res-1", SignallingDirection::Offer);
        let sealed = key.seal(b"{\"type\":\"offer\"}").unwrap();
        assert_eq!(&*key.open(&sealed).unwrap(), b"{\"type\":\"offer\"}");
        // Random nonces: sealing twice gives different texts.
        assert_ne!(key.seal(b"x").unwrap(), key.seal(b"x").unwrap());
    }

    #[test]
    fn refuses_wrong_key_resource_and_direction() {
        let key = SealKey::derive(SECRET, "res-1", SignallingDirection::Offer);
        let sealed = key.seal(b"offer").unwrap();
        for other in [
            SealKey::derive(
                b"another secret of sixteen+ bytes",
                "res-1",
                SignallingDirection::Offer,
            ),
            SealKey::derive(SECRET, "res-2", SignallingDirection::Offer),
            SealKey::derive(SECRET, "res-1", SignallingDirection::Answer),
        ] {
            assert_eq!(
                other.open(&sealed).unwrap_err(),
                SealError::WrongKeyOrTampered
            );
        }
    }

    #[test]
    fn refuses_tampering_and_garbage() {
        let key = SealKey::derive(SECRET, "r", SignallingDirection::Answer);
        let sealed = key.seal(b"answer").unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            key.open(&URL_SAFE_NO_PAD.encode(&raw)).unwrap_err(),
            SealError::WrongKeyOrTampered
        );
        raw[0] = 9;
        assert_eq!(
            key.open(&URL_SAFE_NO_PAD.encode(&raw)).unwrap_err(),
            SealError::UnsupportedVersion(9)
        );
        assert_eq!(key.open("!!!").unwrap_err(), SealError::NotBase64);
        assert_eq!(key.open("").unwrap_err(), SealError::Truncated);
        assert_eq!(key.open("AQID").unwrap_err(), SealError::Truncated);
        assert_eq!(
            key.open(&"A".repeat(MAX_SEALED_LEN + 1)).unwrap_err(),
            SealError::TooLarge
        );
    }

    #[test]
    fn traffic_secret_forms() {
        assert_eq!(
            decode_traffic_secret(&STANDARD.encode(SECRET))
                .unwrap()
                .len(),
            32
        );
        assert_eq!(
            decode_traffic_secret(&URL_SAFE_NO_PAD.encode(SECRET))
                .unwrap()
                .len(),
            32
        );
        assert_eq!(
            decode_traffic_secret("c2hvcnQ=").unwrap_err(),
            SealError::BadTrafficSecret
        );
        assert_eq!(
            decode_traffic_secret("%%%").unwrap_err(),
            SealError::BadTrafficSecret
        );
    }

    #[test]
    fn debug_hides_key() {
        let key = SealKey::derive(SECRET, "r", SignallingDirection::Offer);
        assert_eq!(format!("{key:?}"), "SealKey(<secret>)");
    }
}
