#![no_main]

//! The daemon's dependency-free checks of untrusted bytes (`proxy/src/inspect.rs`, compiled
//! here by itself so that the fuzz build does not need the daemon).

#[path = "../../src/inspect.rs"]
mod inspect;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&flags, datagram)) = data.split_first() {
        let turn = flags & 1 == 1;
        let admitted = inspect::admissible_datagram(datagram, turn);
        // Admitting ChannelData is the only thing `turn` changes.
        if admitted && !turn {
            assert!(inspect::admissible_datagram(datagram, true));
        }
    }
    if let Ok(path) = std::str::from_utf8(data) {
        // A path without escapes is the UTF-8 it already is.
        if !path.contains('%') {
            assert!(inspect::percent_decodes_to_utf8(path));
        } else {
            let _ = inspect::percent_decodes_to_utf8(path);
        }
    }
});
