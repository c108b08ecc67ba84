//! A client's SFTP paths and file names: no panic, and nothing accepted leaves the jail.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zt_ssh::fuzzing::sftp_paths(data);
});
