//! Keys: the per-recording key, the secrets that unwrap it, the identity key that signs
//! manifests, their text files, and key wrapping.
//!
//! ```text
//! resource key = HKDF-SHA256(ikm  = resource secret,
//!                            salt = 32 random bytes (in the wrap),
//!                            info = "ztrec resource key" 0x00 | version u16 | len u8 | resource id)
//! key check    = HKDF-Expand(same PRK, info = "ztrec resource key check" ...)[..8]
//! wrap         = AES-256-GCM(resource key, random nonce,
//!                            aad = "ztrec-wrap/1" 0x00 | wrap context, recording key)
//!
//! recipient wrap = HPKE base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM
//!                  info = "ztrec-hpke/1" 0x00 | wrap context, aad = empty
//! ```
//!
//! The wrap context is SHA-256 over the header fields before the key wraps (recording id,
//! kind, ids, time, sizes, identity key), so a wrap cannot be moved to another header. The
//! key check lets a reader tell a wrong resource secret ([`ReadError::WrongKey`]) from a
//! header whose fields were changed ([`ReadError::HeaderTampered`]); it reveals nothing an
//! attacker could not learn by trying a candidate secret against the wrap itself.
//!
//! HPKE (the `hpke` crate, RFC 9180) gives the forward secrecy the design asks for: the proxy
//! holds only auditors' public keys, so a host compromised later cannot decrypt recordings
//! it wrote earlier unless it also kept the resource secret.

use std::convert::Infallible;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{KeyError, ReadError};
use crate::format::{FORMAT_VERSION, Header, KeyWrap, write_hex};

type HpkeKem = hpke::kem::X25519HkdfSha256;
type HpkeKdf = hpke::kdf::HkdfSha256;
type HpkeAead = hpke::aead::AesGcm256;

/// The 256-bit key that seals one recording's chunks. Fresh from the OS CSPRNG for every
/// recording; zeroised when dropped.
pub struct RecordingKey(Zeroizing<[u8; 32]>);

impl RecordingKey {
    /// Draws a new key from the OS random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).map_err(|_| KeyError::NoRandomness)?;
        Ok(Self(key))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for RecordingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordingKey(<secret>)")
    }
}

/// The secret the gateway passes for a resource; recordings of sessions to that resource
/// are wrapped under a key derived from it.
pub struct ResourceSecret(Zeroizing<Vec<u8>>);

impl ResourceSecret {
    /// Wraps raw secret bytes ([`MIN_RESOURCE_SECRET_LEN`] to [`MAX_RESOURCE_SECRET_LEN`]).
    pub fn new(bytes: Vec<u8>) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(bytes);
        if !(MIN_RESOURCE_SECRET_LEN..=MAX_RESOURCE_SECRET_LEN).contains(&bytes.len()) {
            return Err(KeyError::BadSecretLength);
        }
        Ok(Self(bytes))
    }

    /// Decodes a secret given as base64 (standard or URL-safe, padded or not, surrounding
    /// whitespace ignored), the form the CLI reads from a file or environment variable.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        if text.len() > MAX_RESOURCE_SECRET_LEN * 2 {
            return Err(KeyError::BadSecretLength);
        }
        Self::new(decode_base64(text.trim())?.to_vec())
    }

    #[expect(
        clippy::expect_used,
        reason = "HKDF expand fails only for outputs over 255 hash lengths; these are 32 bytes"
    )]
    fn derive(&self, salt: &[u8; 32], resource_id: &str) -> (Zeroizing<[u8; 32]>, [u8; 8]) {
        let hkdf = Hkdf::<Sha256>::new(Some(salt), &self.0);
        let mut info = Vec::with_capacity(RESOURCE_KEY_LABEL.len() + 4 + resource_id.len());
        info.extend_from_slice(RESOURCE_KEY_LABEL);
        info.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        // Resource ids are at most 255 bytes (the header enforces it).
        info.push(u8::try_from(resource_id.len()).unwrap_or(u8::MAX));
        info.extend_from_slice(resource_id.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        let mut check = [0u8; 32];
        hkdf.expand_multi_info(&[&info], key.as_mut())
            .expect("32 bytes is far below HKDF-SHA256's 8160-byte output limit");
        hkdf.expand_multi_info(&[KEY_CHECK_LABEL, &info], &mut check)
            .expect("32 bytes is far below HKDF-SHA256's 8160-byte output limit");
        let mut key_check = [0u8; 8];
        key_check.copy_from_slice(check.get(..8).unwrap_or(&[0u8; 8]));
        (key, key_check)
    }
}

impl fmt::Debug for ResourceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResourceSecret(<secret>)")
    }
}

/// Identifies an X25519 recipient or an Ed25519 identity key: the first 8 bytes of a labelled
/// SHA-256 of the public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) [u8; 8]);

impl KeyId {
    fn of(label: &[u8], public: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(label)
            .chain_update(public)
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(digest.get(..8).unwrap_or(&[0u8; 8]));
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An auditor's X25519 public key; recordings wrapped to it can be read only with the
/// matching [`RecipientSecretKey`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecipientPublicKey([u8; 32]);

impl RecipientPublicKey {
    /// From the 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The key id written into key wraps.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(X25519_ID_LABEL, &self.0)
    }

    /// Parses a public key file written by `keygen`.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        parse_key_text(text, X25519_PUBLIC, "X25519 public").map(|b| Self(*b))
    }

    /// The key file text.
    pub fn to_text(&self) -> String {
        format!("{X25519_PUBLIC}:{}\n", STANDARD.encode(self.0))
    }
}

impl fmt::Debug for RecipientPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecipientPublicKey({})", self.key_id())
    }
}

/// An auditor's X25519 private key. Zeroised when dropped.
pub struct RecipientSecretKey(Zeroizing<[u8; 32]>);

impl RecipientSecretKey {
    /// Generates a new key pair from the OS random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut ikm = Zeroizing::new([0u8; 32]);
        getrandom::fill(ikm.as_mut()).map_err(|_| KeyError::NoRandomness)?;
        let (sk, _) = HpkeKem::derive_keypair(ikm.as_ref());
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&sk.to_bytes());
        Ok(Self(bytes))
    }

    /// From the 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The matching public key.
    pub fn public_key(&self) -> RecipientPublicKey {
        let mut out = [0u8; 32];
        if let Ok(sk) = self.hpke_key() {
            out.copy_from_slice(&HpkeKem::sk_to_pk(&sk).to_bytes());
        }
        RecipientPublicKey(out)
    }

    /// Parses a private key file written by `keygen`.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        parse_key_text(text, X25519_PRIVATE, "X25519 private").map(Self)
    }

    /// The key file text.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{X25519_PRIVATE}:{}\n",
            STANDARD.encode(self.0.as_ref())
        ))
    }

    fn hpke_key(&self) -> Result<<HpkeKem as hpke::Kem>::PrivateKey, KeyError> {
        <HpkeKem as hpke::Kem>::PrivateKey::from_bytes(self.0.as_ref()).map_err(|_| {
            KeyError::BadKeyFile {
                expected: "X25519 private",
            }
        })
    }
}

impl fmt::Debug for RecipientSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecipientSecretKey(<secret>)")
    }
}

/// The proxy's Ed25519 identity key, which signs manifests.
pub struct IdentityKey(SigningKey);

impl IdentityKey {
    /// Generates a new key from the OS random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|_| KeyError::NoRandomness)?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// From the 32-byte seed.
    pub fn from_bytes(seed: [u8; 32]) -> Self {
        let seed = Zeroizing::new(seed);
        Self(SigningKey::from_bytes(&seed))
    }

    /// The public half, written into recording headers.
    pub fn public_key(&self) -> IdentityPublicKey {
        IdentityPublicKey(self.0.verifying_key())
    }

    /// Parses a private key file written by `keygen`.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        parse_key_text(text, ED25519_PRIVATE, "Ed25519 private").map(|b| Self::from_bytes(*b))
    }

    /// The key file text.
    pub fn to_text(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.0.to_bytes());
        Zeroizing::new(format!(
            "{ED25519_PRIVATE}:{}\n",
            STANDARD.encode(seed.as_ref())
        ))
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityKey(<secret>)")
    }
}

/// The public half of an [`IdentityKey`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdentityPublicKey(VerifyingKey);

impl IdentityPublicKey {
    /// From the 32 raw bytes; fails for bytes that are not a curve point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| KeyError::InvalidPublicKey)
    }

    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// A short fingerprint for display and comparison.
    pub fn fingerprint(&self) -> KeyId {
        KeyId::of(ED25519_ID_LABEL, self.0.as_bytes())
    }

    /// Parses a public key file written by `keygen`.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let bytes = parse_key_text(text, ED25519_PUBLIC, "Ed25519 public")?;
        Self::from_bytes(&bytes)
    }

    /// The key file text.
    pub fn to_text(&self) -> String {
        format!("{ED25519_PUBLIC}:{}\n", STANDARD.encode(self.0.as_bytes()))
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &signature).is_ok()
    }
}

impl fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityPublicKey({})", self.fingerprint())
    }
}

/// What a reader uses to recover a recording key.
#[derive(Debug, Clone, Copy)]
pub enum Unlock<'a> {
    /// The resource secret the recording was written for.
    ResourceSecret(&'a ResourceSecret),
    /// An auditor's X25519 private key the recording was wrapped to.
    Recipient(&'a RecipientSecretKey),
}

/// Wraps `key` under the resource secret for `resource_id`.
pub(crate) fn wrap_for_resource(
    key: &RecordingKey,
    secret: &ResourceSecret,
    resource_id: &str,
    context: &[u8; 32],
) -> Result<KeyWrap, KeyError> {
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut salt).map_err(|_| KeyError::NoRandomness)?;
    getrandom::fill(&mut nonce).map_err(|_| KeyError::NoRandomness)?;
    let (wrapping_key, key_check) = secret.derive(&salt, resource_id);
    let aad = wrap_aad(context);
    let sealed = Aes256Gcm::new(&(*wrapping_key).into())
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: key.bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| KeyError::NoRandomness)?;
    let sealed: [u8; 48] = sealed
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::NoRandomness)?;
    Ok(KeyWrap::ResourceSecret {
        salt,
        key_check,
        nonce,
        sealed,
    })
}

/// Wraps `key` to an X25519 recipient with HPKE.
pub(crate) fn wrap_for_recipient(
    key: &RecordingKey,
    recipient: &RecipientPublicKey,
    context: &[u8; 32],
) -> Result<KeyWrap, WrapError> {
    let pk = <HpkeKem as hpke::Kem>::PublicKey::from_bytes(&recipient.0)
        .map_err(|_| WrapError::BadRecipient)?;
    let mut rng = OsRng { failed: false };
    let sealed = hpke::single_shot_seal_with_rng::<HpkeAead, HpkeKdf, HpkeKem>(
        &OpModeS::Base,
        &pk,
        &hpke_info(context),
        key.bytes(),
        &[],
        &mut rng,
    );
    if rng.failed {
        return Err(WrapError::NoRandomness);
    }
    let (enc, sealed) = sealed.map_err(|_| WrapError::BadRecipient)?;
    let enc: [u8; 32] = enc
        .to_bytes()
        .as_slice()
        .try_into()
        .map_err(|_| WrapError::BadRecipient)?;
    let sealed: [u8; 48] = sealed
        .as_slice()
        .try_into()
        .map_err(|_| WrapError::BadRecipient)?;
    Ok(KeyWrap::X25519 {
        key_id: recipient.key_id(),
        enc,
        sealed,
    })
}

/// Why a recipient wrap could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WrapError {
    BadRecipient,
    NoRandomness,
}

/// Recovers the recording key from the header's key wraps.
pub(crate) fn unwrap_recording_key(
    header: &Header,
    unlock: Unlock<'_>,
) -> Result<RecordingKey, ReadError> {
    match unlock {
        Unlock::ResourceSecret(secret) => {
            let mut any = false;
            let mut matched = false;
            for wrap in &header.key_wraps {
                let KeyWrap::ResourceSecret {
                    salt,
                    key_check,
                    nonce,
                    sealed,
                } = wrap
                else {
                    continue;
                };
                any = true;
                let (wrapping_key, check) = secret.derive(salt, &header.resource_id);
                if check != *key_check {
                    continue;
                }
                matched = true;
                let aad = wrap_aad(&header.wrap_context);
                let opened = Aes256Gcm::new(&(*wrapping_key).into()).decrypt(
                    &Nonce::from(*nonce),
                    Payload {
                        msg: sealed,
                        aad: &aad,
                    },
                );
                if let Ok(bytes) = opened {
                    let bytes = Zeroizing::new(bytes);
                    return recording_key_from(&bytes).ok_or(ReadError::HeaderTampered);
                }
            }
            Err(if !any {
                ReadError::NoResourceWrap
            } else if matched {
                ReadError::HeaderTampered
            } else {
                ReadError::WrongKey
            })
        }
        Unlock::Recipient(secret) => {
            let key_id = secret.public_key().key_id();
            let sk = secret.hpke_key().map_err(|_| ReadError::WrongKey)?;
            let mut matched = false;
            for wrap in &header.key_wraps {
                let KeyWrap::X25519 {
                    key_id: id,
                    enc,
                    sealed,
                } = wrap
                else {
                    continue;
                };
                if *id != key_id {
                    continue;
                }
                matched = true;
                let Ok(enc) = <HpkeKem as hpke::Kem>::EncappedKey::from_bytes(enc) else {
                    continue;
                };
                let opened = hpke::single_shot_open::<HpkeAead, HpkeKdf, HpkeKem>(
                    &OpModeR::Base,
                    &sk,
                    &enc,
                    &hpke_info(&header.wrap_context),
                    sealed,
                    &[],
                );
                if let Ok(bytes) = opened {
                    let bytes = Zeroizing::new(bytes);
                    return recording_key_from(&bytes).ok_or(ReadError::HeaderTampered);
                }
            }
            Err(if matched {
                ReadError::HeaderTampered
            } else {
                ReadError::NotARecipient(key_id)
            })
        }
    }
}

fn recording_key_from(bytes: &[u8]) -> Option<RecordingKey> {
    let array: [u8; 32] = bytes.try_into().ok()?;
    Some(RecordingKey(Zeroizing::new(array)))
}

fn wrap_aad(context: &[u8; 32]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_AAD_LABEL.len() + 32);
    aad.extend_from_slice(WRAP_AAD_LABEL);
    aad.extend_from_slice(context);
    aad
}

fn hpke_info(context: &[u8; 32]) -> Vec<u8> {
    let mut info = Vec::with_capacity(HPKE_INFO_LABEL.len() + 32);
    info.extend_from_slice(HPKE_INFO_LABEL);
    info.extend_from_slice(context);
    info
}

fn decode_base64(text: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(bytes) = engine.decode(text) {
            return Ok(Zeroizing::new(bytes));
        }
    }
    Err(KeyError::NotBase64)
}

fn parse_key_text(
    text: &str,
    label: &str,
    expected: &'static str,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let bad = KeyError::BadKeyFile { expected };
    if text.len() > MAX_KEY_FILE_LEN {
        return Err(bad);
    }
    let Some((found, body)) = text.trim().split_once(':') else {
        return Err(bad);
    };
    if found != label {
        return Err(bad);
    }
    let bytes = decode_base64(body.trim()).map_err(|_| bad.clone())?;
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(bad);
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// Randomness for HPKE's ephemeral key. `hpke` wants an infallible generator; this one
/// records a failure of the OS generator instead of panicking, and the caller discards the
/// output when it did fail.
struct OsRng {
    failed: bool,
}

impl hpke::rand_core::TryRng for OsRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        if getrandom::fill(dst).is_err() {
            self.failed = true;
            dst.fill(0);
        }
        Ok(())
    }
}

impl hpke::rand_core::TryCryptoRng for OsRng {}

/// Shortest resource secret accepted, in bytes.
pub const MIN_RESOURCE_SECRET_LEN: usize = 16;
/// Longest resource secret accepted, in bytes.
pub const MAX_RESOURCE_SECRET_LEN: usize = 1024;
/// Longest key file read.
pub const MAX_KEY_FILE_LEN: usize = 4096;

const X25519_PRIVATE: &str = "ztrec-x25519-private-key";
const X25519_PUBLIC: &str = "ztrec-x25519-public-key";
const ED25519_PRIVATE: &str = "ztrec-ed25519-private-key";
const ED25519_PUBLIC: &str = "ztrec-ed25519-public-key";
const RESOURCE_KEY_LABEL: &[u8] = b"ztrec resource key\0";
const KEY_CHECK_LABEL: &[u8] = b"ztrec resource key check\0";
const WRAP_AAD_LABEL: &[u8] = b"ztrec-wrap/1\0";
const HPKE_INFO_LABEL: &[u8] = b"ztrec-hpke/1\0";
const X25519_ID_LABEL: &[u8] = b"ztrec-x25519-key-id/1\0";
const ED25519_ID_LABEL: &[u8] = b"ztrec-ed25519-key-id/1\0";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{HeaderFields, RecordingId, RecordingKind, Size};

    fn header_with(wraps: &[KeyWrap], fields: &HeaderFields) -> Header {
        let (prefix, _) = fields.encode_prefix().unwrap();
        Header::parse(&HeaderFields::encode(&prefix, wraps).unwrap()).unwrap()
    }

    fn fields(resource_id: &str) -> HeaderFields {
        HeaderFields {
            recording_id: RecordingId([1; 16]),
            kind: RecordingKind::Graphical,
            includes_input: false,
            start_unix_micros: 0,
            chunk_size: 4096,
            size: Size::default(),
            session_id: "s".into(),
            resource_id: resource_id.into(),
            protocol: "rdp".into(),
            identity: None,
        }
    }

    #[test]
    fn resource_wrap_round_trips_and_fails_cleanly() {
        let secret = ResourceSecret::new(b"0123456789abcdef-secret".to_vec()).unwrap();
        let key = RecordingKey::generate().unwrap();
        let f = fields("res-1");
        let (_, context) = f.encode_prefix().unwrap();
        let wrap = wrap_for_resource(&key, &secret, "res-1", &context).unwrap();
        let header = header_with(std::slice::from_ref(&wrap), &f);
        let opened = unwrap_recording_key(&header, Unlock::ResourceSecret(&secret)).unwrap();
        assert_eq!(opened.bytes(), key.bytes());

        let wrong = ResourceSecret::new(b"another secret of 16+".to_vec()).unwrap();
        assert!(matches!(
            unwrap_recording_key(&header, Unlock::ResourceSecret(&wrong)),
            Err(ReadError::WrongKey)
        ));
        // Same wrap in a header with other fields: the key check matches, the wrap does not
        // open.
        let mut other = f;
        other.session_id = "s2".into();
        let moved = header_with(&[wrap], &other);
        assert!(matches!(
            unwrap_recording_key(&moved, Unlock::ResourceSecret(&secret)),
            Err(ReadError::HeaderTampered)
        ));
        // A wrap made for one resource id does not open under another (the id is in HKDF info).
        let wrap = wrap_for_resource(&key, &secret, "res-1", &context).unwrap();
        let header = header_with(&[wrap], &fields("res-2"));
        assert!(matches!(
            unwrap_recording_key(&header, Unlock::ResourceSecret(&secret)),
            Err(ReadError::WrongKey)
        ));
    }

    #[test]
    fn recipient_wrap_round_trips_and_fails_cleanly() {
        let auditor = RecipientSecretKey::generate().unwrap();
        let key = RecordingKey::generate().unwrap();
        let f = fields("r");
        let (_, context) = f.encode_prefix().unwrap();
        let wrap = wrap_for_recipient(&key, &auditor.public_key(), &context).unwrap();
        let header = header_with(&[wrap], &f);
        let opened = unwrap_recording_key(&header, Unlock::Recipient(&auditor)).unwrap();
        assert_eq!(opened.bytes(), key.bytes());

        let stranger = RecipientSecretKey::generate().unwrap();
        assert!(matches!(
            unwrap_recording_key(&header, Unlock::Recipient(&stranger)),
            Err(ReadError::NotARecipient(id)) if id == stranger.public_key().key_id()
        ));
        let secret = ResourceSecret::new(vec![7; 32]).unwrap();
        assert!(matches!(
            unwrap_recording_key(&header, Unlock::ResourceSecret(&secret)),
            Err(ReadError::NoResourceWrap)
        ));
        assert_eq!(
            wrap_for_recipient(&key, &RecipientPublicKey::from_bytes([0; 32]), &context),
            Err(WrapError::BadRecipient)
        );
    }

    #[test]
    fn key_files_round_trip() {
        let x = RecipientSecretKey::generate().unwrap();
        let x2 = RecipientSecretKey::from_text(&x.to_text()).unwrap();
        assert_eq!(x.public_key(), x2.public_key());
        let xp = RecipientPublicKey::from_text(&x.public_key().to_text()).unwrap();
        assert_eq!(xp, x.public_key());

        let e = IdentityKey::generate().unwrap();
        let e2 = IdentityKey::from_text(&e.to_text()).unwrap();
        assert_eq!(e.public_key(), e2.public_key());
        let ep = IdentityPublicKey::from_text(&e.public_key().to_text()).unwrap();
        assert_eq!(ep, e.public_key());
        let sig = e.sign(b"msg");
        assert!(ep.verify(b"msg", &sig));
        assert!(!ep.verify(b"msh", &sig));

        // A file of one kind is refused as another.
        assert!(IdentityKey::from_text(&x.to_text()).is_err());
        assert!(RecipientSecretKey::from_text(&xp.to_text()).is_err());
        assert!(RecipientSecretKey::from_text("garbage").is_err());
        assert!(RecipientSecretKey::from_text("ztrec-x25519-private-key:AAAA").is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = ResourceSecret::from_base64("MDEyMzQ1Njc4OWFiY2RlZg==").unwrap();
        assert_eq!(format!("{s:?}"), "ResourceSecret(<secret>)");
        assert_eq!(
            format!("{:?}", RecipientSecretKey::generate().unwrap()),
            "RecipientSecretKey(<secret>)"
        );
        assert_eq!(
            format!("{:?}", IdentityKey::generate().unwrap()),
            "IdentityKey(<secret>)"
        );
        assert_eq!(
            ResourceSecret::from_base64("c2hvcnQ").unwrap_err(),
            KeyError::BadSecretLength
        );
        assert_eq!(
            ResourceSecret::from_base64("%%%").unwrap_err(),
            KeyError::NotBase64
        );
    }
}
