#![no_main]

//! The browser helpers' checks of a request's `Host`, `Origin`, path and offer
//! (`proxy/src/client/local_checks.rs`, compiled here by itself).

#[path = "../../src/client/local_checks.rs"]
mod local_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let (host, origin, rest) = (parts.next(), parts.next(), parts.next().unwrap_or_default());
    let bound: std::net::SocketAddr = ([127, 0, 0, 1], 4822).into();
    if local_checks::host_ok(host, bound) {
        assert!(host == Some("127.0.0.1:4822") || host == Some("localhost:4822"));
    }
    if local_checks::origin_ok(origin, host, true) {
        assert_eq!(origin.map(|o| o.trim_start_matches("http://")), host);
    }
    if let Some((token, page)) = local_checks::split_token(rest) {
        assert!(!token.contains('/'));
        assert!(rest.ends_with(page));
    }
    if local_checks::offer_sdp_ok(rest) {
        assert!(rest.len() <= local_checks::MAX_OFFER && rest.starts_with("v=0"));
    }
});
