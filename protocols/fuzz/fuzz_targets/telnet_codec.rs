//! A hostile Telnet server's bytes: no panic, bounded replies, bounded subnegotiations.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zt_telnet::fuzzing::codec(data);
});
