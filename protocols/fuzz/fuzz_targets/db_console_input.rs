//! A user's keys into a database console: the line editor, the statement splitter, value
//! display and audit redaction never panic and stay bounded.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zt_db::fuzzing::console_input(data);
});
