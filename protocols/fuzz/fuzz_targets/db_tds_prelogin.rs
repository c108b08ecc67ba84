//! What a SQL Server sends before TLS: a PRELOGIN answer's option table, its packets, and
//! the handshake's packets never panic, stay bounded and are never read past.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zt_db::fuzzing::tds_prelogin(data);
});
