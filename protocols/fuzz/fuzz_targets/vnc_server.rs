//! A VNC server's bytes into ztproxy's RFB client: never a panic, everything it gives is
//! inside the framebuffer and within its bounds.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zt_vnc::fuzzing::server_bytes(data);
});
