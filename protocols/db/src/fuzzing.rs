//! The fuzz target's body (`protocols/fuzz/fuzz_targets/db_console_input.rs`), here so that
//! it builds and is tested with the crate.

#![allow(
    clippy::panic,
    reason = "a fuzz target reports a broken invariant by panicking"
)]

use crate::editor::{Dialect, Editor, Input, MAX_QUEUE, MAX_STATEMENT, split};
use crate::{redact, table};

/// A user's keys (any bytes, split anywhere) through the line editor of each dialect, the
/// statement splitter, the `\copy`, file-name, LOAD DATA, CSV-import and certificate-pin
/// parsers, the table's value display and the
/// audit's redaction: never a panic,
/// statements end with `;` and are bounded, displayed values hold no control character, and
/// audited text is bounded.
pub fn console_input(data: &[u8]) {
    for dialect in [Dialect::Postgres, Dialect::Mysql, Dialect::Tsql] {
        let mut editor = Editor::new(dialect, "db=> ", "db-> ");
        for chunk in data.chunks(37) {
            editor.feed(chunk);
            let mut echo = Vec::new();
            while let Some(input) = editor.poll(&mut echo) {
                match input {
                    Input::Statement(s) => {
                        if !s.ends_with(';') || s.len() > MAX_STATEMENT + 64 {
                            panic!("a statement without its end, or too long");
                        }
                    }
                    Input::Meta(m) => {
                        if !m.starts_with('\\') {
                            panic!("a meta command without its backslash");
                        }
                    }
                    Input::Eof => {}
                }
            }
            if echo.len() > 4 * (MAX_QUEUE + MAX_STATEMENT) {
                panic!("echo out of proportion");
            }
        }
        let text = String::from_utf8_lossy(data);
        let (statements, rest) = split(dialect, &text);
        let joined: usize = statements.iter().map(String::len).sum::<usize>() + rest.len();
        if joined > text.len() {
            panic!("split made text");
        }
    }
    let text = String::from_utf8_lossy(data);
    // `\copy` and the MySQL file clauses name a file for the user: never a path.
    for command in [format!("\\copy {text}"), text.to_string()] {
        if let Some(copy) = crate::postgres::parse_copy(&command)
            && (copy.file.contains(['/', '\\']) || copy.file == ".." || copy.file.is_empty())
        {
            panic!("a \\copy file name that is a path");
        }
    }
    if crate::files::file_name(&text).contains(['/', '\\']) {
        panic!("a file name that is a path");
    }
    // A LOAD DATA target and a CSV file (SQL Server's import) from anything, in pieces.
    let _ = crate::files::load_target(&text);
    let mut reader = crate::files::CsvReader::default();
    for chunk in data.chunks(53) {
        match reader.feed(chunk) {
            Ok(records) => {
                if records.iter().any(|r| r.len() > crate::files::MAX_FIELDS) {
                    panic!("a record with more fields than the bound");
                }
            }
            Err(_) => break,
        }
    }
    let _ = reader.finish();
    // `server-certificate` comes from the control API.
    if let Ok(pinned) = crate::tls::parse_server_certificate(&text)
        && (pinned.fingerprints.is_empty() || pinned.fingerprints.len() > 16)
    {
        panic!("a pin list out of its bounds");
    }
    let (shown, _) = table::display(&text);
    if shown.chars().any(char::is_control) {
        panic!("a control character reached the terminal");
    }
    if redact::for_audit(&text, Some("pw-secret")).chars().count() > redact::MAX_AUDITED + 1 {
        panic!("audited text is not bounded");
    }
}

/// A SQL Server's bytes before TLS (`crate::tds`): the PRELOGIN answer's option table, a
/// message of packets, and the handshake's unwrapping. Never a panic; the ENCRYPTION byte is
/// inside the message; a message is bounded; the handshake gives rustls only packets' data.
pub fn tds_prelogin(data: &[u8]) {
    use tokio::io::AsyncReadExt as _;
    if let Ok((_, at)) = crate::tds::encryption(data)
        && at >= data.len()
    {
        panic!("ENCRYPTION outside the message");
    }
    let body = data.get(8..).unwrap_or_default();
    let _ = crate::tds::encryption(body);
    futures::executor::block_on(async {
        if let Ok((_, message)) = crate::tds::read_message(&mut &data[..], 4088).await
            && message.len() > 4088
        {
            panic!("a PRELOGIN message past its bound");
        }
        let mut wrapped = crate::tds::Handshake::new(data);
        let mut unwrapped = Vec::new();
        let mut piece = [0u8; 61];
        while let Ok(n) = wrapped.read(&mut piece).await {
            if n == 0 {
                break;
            }
            unwrapped.extend_from_slice(&piece[..n]);
        }
        if unwrapped.len() > data.len() {
            panic!("the handshake made data");
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_seeds_run() {
        super::console_input(b"select 1;\r\\dt x\r\x1b[A\x1b[D\x7f\x03\x04");
        super::console_input("insert 'é\x1b[2J' $$;$$ -- ;\n/* ; */;\r".as_bytes());
        super::console_input(&[0xff, 0xfe, b';', b'\r', 0x1b, b'[', b'3', b'~']);
    }

    #[test]
    fn the_prelogin_seeds_run() {
        super::tds_prelogin(&crate::tds::request(true));
        super::tds_prelogin(&[0x12, 1, 0, 13, 0, 0, 1, 0, 0x16, 3, 3, 0, 0]);
        super::tds_prelogin(&[0x01, 0xFF, 0xFF, 0, 1, 0xFF]);
        super::tds_prelogin(&[0x12, 0, 0, 8, 0, 0, 1, 0, 0x12, 1, 0, 3]);
    }
}
