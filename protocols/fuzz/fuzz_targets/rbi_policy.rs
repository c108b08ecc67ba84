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

    // The client's input and a frame from the browser.
    let now = Instant::now();
    let mut engine = Engine::new(64, 48, true, false, now);
    for chunk in data.chunks(9) {
        let n = |i: usize| chunk.get(i).copied().unwrap_or(0);
        let a = u32::from_le_bytes([n(1), n(2), n(3), n(4)]).to_string();
        let b = u32::from_le_bytes([n(5), n(6), n(7), n(8)]).to_string();
        let instruction = match n(0) % 4 {
            0 => Instruction::new(
                opcode::KEY,
                &[a.as_str(), if n(5) & 1 == 0 { "0" } else { "1" }],
            ),
            1 => Instruction::new(opcode::MOUSE, &[a.as_str(), b.as_str(), &n(8).to_string()]),
            2 => Instruction::new(opcode::SIZE, &[a.as_str(), b.as_str()]),
            _ => Instruction::new(opcode::SYNC, &[a.as_str()]),
        };
        engine.handle_client(&instruction, now);
    }
    while engine.poll_command().is_some() {}
    let _ = engine.frame(data, now);
});
