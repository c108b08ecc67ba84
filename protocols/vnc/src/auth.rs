//! VNC authentication (RFC 6143 7.2.2): the server's 16-byte challenge encrypted with DES,
//! the key being the password's first 8 bytes (zero-padded) with each byte's bits reversed,
//! as every VNC implementation does.

use des::Des;
use des::cipher::{Array, BlockCipherEncrypt, KeyInit};

/// The response to `challenge` for `password`.
pub fn response(password: &[u8], challenge: &[u8; 16]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    let cipher = Des::new(&Array::from(key));
    let mut out = [0u8; 16];
    for (half, block) in out.chunks_exact_mut(8).zip(challenge.chunks_exact(8)) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(block);
        let mut block = Array::from(bytes);
        cipher.encrypt_block(&mut block);
        half.copy_from_slice(&block);
    }
    key.fill(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_is_des_with_the_reversed_password() {
        // The known answer (libvncserver's vncEncryptBytes, and `vncpasswd`'s fixed key
        // 23 82 107 6 35 78 88 7 applied to an all-zero "password" file).
        let challenge = [0u8; 16];
        let r = response(b"", &challenge);
        // DES of a zero block under the zero key.
        assert_eq!(&r[..8], &[0x8C, 0xA6, 0x4D, 0xE9, 0xC1, 0xB1, 0x23, 0xA7]);
        assert_eq!(r[..8], r[8..]);
        // Only the first 8 bytes of a password count.
        assert_eq!(
            response(b"password", &challenge),
            response(b"password-and-more", &challenge)
        );
        assert_ne!(response(b"password", &challenge), r);
    }
}
