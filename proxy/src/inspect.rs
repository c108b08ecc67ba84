//! Checks of untrusted bytes that need nothing else: no I/O, no other module, no
//! dependency (`proxy/fuzz` compiles this file by itself as its `inspect` target).

/// Whether `path`, with its `%XX` escapes decoded, is UTF-8 (as the router's path extraction
/// requires).
pub fn percent_decodes_to_utf8(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
        match (byte, hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(high), Some(low)) => {
                decoded.push(u8::try_from(high * 16 + low).unwrap_or(0));
                i += 3;
            }
            _ => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&decoded).is_ok()
}

/// STUN's magic cookie (RFC 8489 §5).
const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Whether `datagram` may be STUN, DTLS or (when `turn`) TURN ChannelData.
pub fn admissible_datagram(datagram: &[u8], turn: bool) -> bool {
    let Some(&first) = datagram.first() else {
        return false;
    };
    match first {
        0..=3 => {
            // A header of 20 bytes, the cookie, and a length that is what follows, in words.
            let declared = datagram.get(2..4).map_or(usize::MAX, |l| {
                usize::from(u16::from_be_bytes([l[0], l[1]]))
            });
            datagram.len() >= 20
                && datagram.get(4..8) == Some(&STUN_MAGIC[..])
                && declared % 4 == 0
                && declared + 20 == datagram.len()
        }
        20..=25 => {
            // A DTLS record header: version 1.0 (FE FF) or 1.2 (FE FD), a length within it.
            let declared = datagram.get(11..13).map_or(usize::MAX, |l| {
                usize::from(u16::from_be_bytes([l[0], l[1]]))
            });
            datagram.len() >= 13
                && datagram.get(1) == Some(&0xFE)
                && matches!(datagram.get(2), Some(0xFD | 0xFF))
                && declared + 13 <= datagram.len()
        }
        0x40..=0x4F if turn => {
            let declared = datagram.get(2..4).map_or(usize::MAX, |l| {
                usize::from(u16::from_be_bytes([l[0], l[1]]))
            });
            datagram.len() >= 4 && declared + 4 <= datagram.len()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_decode_to_utf8() {
        assert!(percent_decodes_to_utf8("/v1/sessions/abc"));
        assert!(percent_decodes_to_utf8("/v1/sessions/%C3%A9"));
        assert!(percent_decodes_to_utf8("/v1/100%"));
        assert!(!percent_decodes_to_utf8("/v1/sessions/%FF"));
        assert!(!percent_decodes_to_utf8("/v1/sessions/%C3"));
    }

    #[test]
    fn stun_dtls_and_turn_are_told_from_garbage() {
        let mut stun = vec![0x00, 0x01, 0x00, 0x04];
        stun.extend_from_slice(&STUN_MAGIC);
        stun.extend_from_slice(&[0u8; 12]);
        stun.extend_from_slice(&[0u8; 4]);
        assert!(admissible_datagram(&stun, false));
        assert!(!admissible_datagram(&stun[..stun.len() - 1], false));
        let mut dtls = vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
        dtls.extend_from_slice(&[1, 2, 3]);
        assert!(admissible_datagram(&dtls, false));
        dtls[2] = 0x01;
        assert!(!admissible_datagram(&dtls, false));
        let channel = [0x40, 0x00, 0x00, 0x02, 9, 9];
        assert!(admissible_datagram(&channel, true));
        assert!(!admissible_datagram(&channel, false));
        for garbage in [
            &[][..],
            &[0x80, 0x60, 0, 0],
            b"GET / HTTP/1.1\r\n",
            &[0xFF; 100],
        ] {
            assert!(!admissible_datagram(garbage, true), "{garbage:?}");
        }
    }

    #[test]
    fn random_datagrams_almost_never_pass() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut passed = 0;
        for i in 0..100_000u32 {
            let len = 1 + (i as usize * 7919) % 1200;
            let datagram: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state.to_le_bytes()[0]
                })
                .collect();
            passed += usize::from(admissible_datagram(&datagram, false));
        }
        assert!(passed < 10, "{passed} random datagrams passed");
    }
}
