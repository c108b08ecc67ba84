//! Sealing and opening chunk frames.
//!
//! ```text
//! nonce = 0x00000000 | index as u64, big-endian                      12 bytes
//! aad   = "ztrec-chunk/1" | header digest (32) | frame header (18)   63 bytes
//! frame = frame header | AES-256-GCM(recording key, nonce, aad, plaintext) | tag
//! ```
//!
//! The sealer owns the chunk counter, so a caller cannot pick an index and a nonce is never
//! used twice under one key; the recording key is fresh per recording, so nonces never repeat
//! across recordings either. The frame header in the associated data binds the index, the
//! final-chunk flag, the ciphertext length and the header tag; the digest binds the whole
//! header. Together they make truncation, reordering, duplication and splicing detectable.
//!
//! The cipher is `ring`'s AES-256-GCM (VAES and VPCLMULQDQ where the CPU has them; three
//! times the throughput of the RustCrypto implementation on the machines we measure). `ring`
//! does not zeroise its key schedules, so the sealer and opener overwrite theirs in place when
//! they are dropped.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

use crate::format::{FRAME_HEADER_LEN, FrameHeader, HeaderDigest, TAG_LEN};
use crate::keys::RecordingKey;

/// Seals the chunks of one recording, in order.
pub struct ChunkSealer {
    cipher: Cipher,
    aad: [u8; AAD_LEN],
    header_tag: [u8; 8],
    next_index: u32,
    finished: bool,
}

/// Why a chunk could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The final chunk has been sealed; nothing may follow it.
    #[error("the final chunk has already been sealed")]
    Finished,
    /// The chunk counter is exhausted.
    #[error("the recording reached the chunk limit")]
    ChunkLimit,
    /// The buffer is shorter than a frame header or the plaintext is too long.
    #[error("chunk buffer has the wrong size")]
    BadBuffer,
}

impl ChunkSealer {
    /// A sealer for the recording whose header has `digest`, starting at chunk 0.
    pub fn new(key: &RecordingKey, digest: &HeaderDigest) -> Self {
        Self {
            cipher: Cipher::new(key.bytes()),
            aad: aad_prefix(digest),
            header_tag: digest.tag(),
            next_index: 0,
            finished: false,
        }
    }

    /// Index the next sealed chunk will get.
    pub fn next_index(&self) -> u32 {
        self.next_index
    }

    /// Seals a chunk in place. `frame` holds [`FRAME_HEADER_LEN`] bytes of space followed by
    /// the plaintext; on return it holds the complete frame (header, ciphertext, tag). The
    /// buffer should have [`TAG_LEN`] bytes of spare capacity so the tag does not reallocate.
    pub fn seal_in_place(
        &mut self,
        frame: &mut Vec<u8>,
        last: bool,
    ) -> Result<FrameHeader, SealError> {
        if self.finished {
            return Err(SealError::Finished);
        }
        let index = self.next_index;
        let next = index.checked_add(1).ok_or(SealError::ChunkLimit)?;
        let plaintext_len = frame
            .len()
            .checked_sub(FRAME_HEADER_LEN)
            .ok_or(SealError::BadBuffer)?;
        let ciphertext_len =
            u32::try_from(plaintext_len + TAG_LEN).map_err(|_| SealError::BadBuffer)?;
        let fh = FrameHeader {
            header_tag: self.header_tag,
            index,
            last,
            ciphertext_len,
        };
        let encoded = fh.encode();
        let (head, plaintext) = frame.split_at_mut(FRAME_HEADER_LEN);
        head.copy_from_slice(&encoded);
        let aad = self.aad_for(&encoded);
        let tag = self
            .cipher
            .key()
            .seal_in_place_separate_tag(nonce(index), Aad::from(&aad), plaintext)
            .map_err(|_| SealError::BadBuffer)?;
        frame.extend_from_slice(tag.as_ref());
        self.next_index = next;
        self.finished = last;
        Ok(fh)
    }

    fn aad_for(&self, frame_header: &[u8; FRAME_HEADER_LEN]) -> [u8; AAD_LEN] {
        let mut aad = self.aad;
        if let Some(slot) = aad.get_mut(AAD_LEN - FRAME_HEADER_LEN..) {
            slot.copy_from_slice(frame_header);
        }
        aad
    }
}

impl std::fmt::Debug for ChunkSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkSealer")
            .field("next_index", &self.next_index)
            .finish_non_exhaustive()
    }
}

/// Opens the chunks of one recording.
pub struct ChunkOpener {
    cipher: Cipher,
    aad: [u8; AAD_LEN],
}

/// Why a chunk did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The frame is shorter than a header and tag, or its length field disagrees.
    #[error("malformed chunk frame")]
    Malformed,
    /// Authentication failed: tampered, wrong key or sealed under another index.
    #[error("chunk does not authenticate")]
    Authentication,
}

impl ChunkOpener {
    /// An opener for the recording whose header has `digest`.
    pub fn new(key: &RecordingKey, digest: &HeaderDigest) -> Self {
        Self {
            cipher: Cipher::new(key.bytes()),
            aad: aad_prefix(digest),
        }
    }

    /// Authenticates and decrypts a complete frame into `out` (resized to the plaintext
    /// length). The frame's own header says which index it was sealed with; callers check
    /// that index against the position they expected. On failure `out` is cleared, so no
    /// unauthenticated plaintext is ever visible.
    pub fn open_into(&self, frame: &[u8], out: &mut Vec<u8>) -> Result<FrameHeader, OpenError> {
        let (head, rest) = frame
            .split_at_checked(FRAME_HEADER_LEN)
            .ok_or(OpenError::Malformed)?;
        let Ok(Some(fh)) = FrameHeader::parse(head) else {
            return Err(OpenError::Malformed);
        };
        let ct_len = usize::try_from(fh.ciphertext_len).map_err(|_| OpenError::Malformed)?;
        if ct_len != rest.len() {
            return Err(OpenError::Malformed);
        }
        let body_len = ct_len.checked_sub(TAG_LEN).ok_or(OpenError::Malformed)?;
        let (body, tag) = rest.split_at(body_len);
        let tag = Tag::try_from(tag).map_err(|_| OpenError::Malformed)?;
        let mut encoded = [0u8; FRAME_HEADER_LEN];
        encoded.copy_from_slice(head);
        let mut aad = self.aad;
        if let Some(slot) = aad.get_mut(AAD_LEN - FRAME_HEADER_LEN..) {
            slot.copy_from_slice(&encoded);
        }
        out.clear();
        out.extend_from_slice(body);
        match self.cipher.key().open_in_place_separate_tag(
            nonce(fh.index),
            Aad::from(&aad),
            tag,
            out,
            0..,
        ) {
            Ok(_) => Ok(fh),
            Err(_) => {
                out.clear();
                Err(OpenError::Authentication)
            }
        }
    }
}

impl std::fmt::Debug for ChunkOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkOpener(<secret>)")
    }
}

/// An AES-256-GCM key, zeroised (as far as safe code can) when dropped.
struct Cipher(Box<LessSafeKey>);

impl Cipher {
    fn new(key: &[u8; 32]) -> Self {
        Self(Box::new(aes_256_gcm(key)))
    }

    fn key(&self) -> &LessSafeKey {
        &self.0
    }
}

impl Drop for Cipher {
    fn drop(&mut self) {
        // Overwrite the key schedule where it lives (the box keeps it in one place for its
        // whole life) with that of the all-zero key, and keep the compiler from dropping the
        // store as dead.
        *self.0 = aes_256_gcm(&[0; 32]);
        std::hint::black_box(&*self.0);
    }
}

fn aes_256_gcm(key: &[u8; 32]) -> LessSafeKey {
    match UnboundKey::new(&AES_256_GCM, key) {
        Ok(key) => LessSafeKey::new(key),
        // A 32-byte key is what AES-256-GCM takes; ring refuses only other lengths.
        Err(_) => unreachable!("AES-256-GCM takes 32-byte keys"),
    }
}

fn nonce(index: u32) -> Nonce {
    let mut n = [0u8; 12];
    if let Some(tail) = n.get_mut(4..) {
        tail.copy_from_slice(&u64::from(index).to_be_bytes());
    }
    Nonce::assume_unique_for_key(n)
}

fn aad_prefix(digest: &HeaderDigest) -> [u8; AAD_LEN] {
    let mut aad = [0u8; AAD_LEN];
    let (label, rest) = aad.split_at_mut(AAD_LABEL.len());
    label.copy_from_slice(AAD_LABEL);
    if let Some(d) = rest.get_mut(..32) {
        d.copy_from_slice(digest.as_bytes());
    }
    aad
}

const AAD_LABEL: &[u8] = b"ztrec-chunk/1";
const AAD_LEN: usize = 13 + 32 + FRAME_HEADER_LEN;

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_with(plaintext: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; FRAME_HEADER_LEN];
        f.extend_from_slice(plaintext);
        f
    }

    #[test]
    fn seals_and_opens_in_order() {
        let key = RecordingKey::generate().unwrap();
        let digest = HeaderDigest([5; 32]);
        let mut sealer = ChunkSealer::new(&key, &digest);
        let opener = ChunkOpener::new(&key, &digest);
        let mut frames = Vec::new();
        for (i, text) in [&b"first"[..], b"second", b""].iter().enumerate() {
            let mut f = frame_with(text);
            let fh = sealer.seal_in_place(&mut f, i == 2).unwrap();
            assert_eq!(fh.index, i as u32);
            assert_eq!(f.len(), FRAME_HEADER_LEN + text.len() + TAG_LEN);
            frames.push((f, text.to_vec()));
        }
        assert_eq!(
            sealer.seal_in_place(&mut frame_with(b"x"), false),
            Err(SealError::Finished)
        );
        let mut out = Vec::new();
        for (i, (f, text)) in frames.iter().enumerate() {
            let fh = opener.open_into(f, &mut out).unwrap();
            assert_eq!(fh.index, i as u32);
            assert_eq!(&out, text);
        }
    }

    #[test]
    fn any_change_fails_authentication() {
        let key = RecordingKey::generate().unwrap();
        let digest = HeaderDigest([5; 32]);
        let mut sealer = ChunkSealer::new(&key, &digest);
        let mut f = frame_with(b"some chunk plaintext");
        sealer.seal_in_place(&mut f, false).unwrap();
        let mut out = Vec::new();
        for pos in 0..f.len() {
            // The type byte and length field are structural; everything else is authenticated.
            let mut bad = f.clone();
            bad[pos] ^= 0x01;
            let result = ChunkOpener::new(&key, &digest).open_into(&bad, &mut out);
            assert!(result.is_err(), "flip at {pos} went unnoticed");
            assert!(out.is_empty());
        }
        let other = ChunkOpener::new(&key, &HeaderDigest([6; 32]));
        assert_eq!(
            other.open_into(&f, &mut out),
            Err(OpenError::Authentication)
        );
        let wrong_key = ChunkOpener::new(&RecordingKey::generate().unwrap(), &digest);
        assert_eq!(
            wrong_key.open_into(&f, &mut out),
            Err(OpenError::Authentication)
        );
        assert_eq!(
            ChunkOpener::new(&key, &digest).open_into(&f[..10], &mut out),
            Err(OpenError::Malformed)
        );
    }
}
