//! The remote browser's untrusted inputs: a session's parameters (URL patterns, the start
//! URL, the autofill rules), the URLs a hostile page requests, the client's keys and mouse,
//! the frames the browser sends, and the SOCKS messages of its connections. No panic; a URL
//! the policy allows is one the patterns name; no refused scheme ever passes.

#![no_main]

use std::time::Instant;

use zt_guac::{Instruction, opcode};
use zt_rbi::engine::Engine;
use zt_rbi::policy::{Kind, Patterns, UrlPolicy};
use zt_rbi::settings::RbiSettings;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The connection gate's SOCKS messages: what was read is within the message and bounds.
    if let Ok(Some(used)) = zt_rbi::socks::greeting(data) {
        assert!(used <= data.len() && used <= zt_rbi::socks::MAX_GREETING);
    }
    if let Ok(Some((_, used))) = zt_rbi::socks::request(data) {
        assert!(used <= data.len() && used <= zt_rbi::socks::MAX_REQUEST);
    }
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\u{0}');
    let pages = fields.next().unwrap_or_default();
    let resources = fields.next().unwrap_or_default();
    if let (Ok(pages), Ok(resources)) = (Patterns::parse(pages), Patterns::parse(resources)) {
        let policy = UrlPolicy::new(pages, resources);
        for url in fields.clone() {
            let _ = policy.allows_endpoint(url, 443);
            for kind in [Kind::Navigation, Kind::Resource] {
                if policy.check(kind, url).is_ok() {
                    // As the browser parses it (WHATWG: surrounding C0 controls and spaces,
                    // and tabs and newlines anywhere, are dropped).
                    let scheme = url::Url::parse(url).map(|u| u.scheme().to_owned());
                    assert!(
                        scheme.as_deref().is_ok_and(|s| {
                            ["http", "https", "ws", "wss", "about", "data", "blob"].contains(&s)
                        }),
                        "{url}"
                    );
                }
            }
        }
    }

    // The same bytes as a session's parameters.
    const NAMES: [&str; 5] = [
        "url",
        "allowed-url-patterns",
        "allowed-resource-url-patterns",
        "autofill-configuration",
        "allow-url-manipulation",
    ];
    let values: Vec<&str> = text.split('\u{1}').collect();
    let get = |name: &str| {
        NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i).copied())
    };
    if let Ok(settings) = RbiSettings::from_parameters(get, "127.0.0.1", 8080) {
        assert!(
            settings
                .policy
                .check(Kind::Navigation, settings.start.as_str())
                .is_ok()
        );
    }

    // The client's input and a frame from the browser; the address bar and file streams
    // too (no disk: both file directions off, so every transfer is refused).
    let now = Instant::now();
    let mut engine = Engine::new(64, 48, true, false, now).with_address_bar(data.first() == Some(&1));
    let mut transfers = zt_rbi::files::Transfers::new(None, None, 4096);
    for chunk in data.chunks(9) {
        let n = |i: usize| chunk.get(i).copied().unwrap_or(0);
        let a = u32::from_le_bytes([n(1), n(2), n(3), n(4)]).to_string();
        let b = u32::from_le_bytes([n(5), n(6), n(7), n(8)]).to_string();
        let instruction = match n(0) % 9 {
            0 => Instruction::new(
                opcode::KEY,
                &[a.as_str(), if n(5) & 1 == 0 { "0" } else { "1" }],
            ),
            1 => Instruction::new(opcode::MOUSE, &[a.as_str(), b.as_str(), &n(8).to_string()]),
            2 => Instruction::new(opcode::SIZE, &[a.as_str(), b.as_str()]),
            3 => Instruction::new(opcode::SYNC, &[a.as_str()]),
            4 => Instruction::new(opcode::PIPE, &[a.as_str(), "text/plain", "url"]),
            5 => Instruction::new(opcode::BLOB, &[a.as_str(), b.as_str()]),
            6 => Instruction::new(opcode::END, &[a.as_str()]),
            7 => Instruction::new(opcode::FILE, &[a.as_str(), "text/plain", b.as_str()]),
            _ => Instruction::new(opcode::ACK, &[a.as_str(), "OK", b.as_str()]),
        };
        if !transfers.handle_client(&instruction) {
            engine.handle_client(&instruction, now);
        }
    }
    while let Some(command) = engine.poll_command() {
        if let zt_rbi::engine::Command::Navigate(url) = command {
            assert!(url.len() <= zt_rbi::engine::MAX_URL);
        }
    }
    let mut out = bytes::BytesMut::new();
    transfers.poll_client(&mut out);
    assert!(transfers.poll_chooser().is_none(), "no upload can have been taken");
    engine.url_changed(&text);
    let _ = engine.frame(data, now);
});
