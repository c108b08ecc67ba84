//! A hostile SFTP server's replies, split anywhere: no panic, no allocation beyond the
//! codec's limits, never more names than a reply may hold.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zt_ssh::fuzzing::sftp_replies(data);
});
