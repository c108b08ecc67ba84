//! Hostile SSH session parameters and host-key pins, and keyboard-interactive prompts: no
//! panic, and an error names its parameter, never the value.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zt_ssh::fuzzing::settings(data);
});
