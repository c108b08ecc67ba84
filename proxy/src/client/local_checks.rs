//! The local helper's checks of a request's untrusted parts (`Host`, `Origin`, the path and
//! an offer), with no dependencies beyond `std` so that the fuzz target compiles this file
//! by itself.

use std::net::SocketAddr;

/// The longest SDP offer accepted from the page.
pub const MAX_OFFER: usize = 32 * 1024;

/// Whether `host` (the `Host` header) names the loopback address the helper is bound to:
/// `127.0.0.1:PORT` (or `localhost:PORT` when bound to IPv4), `[::1]:PORT`. Anything else is
/// a page reaching the port under another name (DNS rebinding).
pub fn host_ok(host: Option<&str>, bound: SocketAddr) -> bool {
    let Some(host) = host else {
        return false;
    };
    host == bound.to_string() || (bound.is_ipv4() && host == format!("localhost:{}", bound.port()))
}

/// Whether `origin` (the `Origin` header) is the page's own (`http://` and the `Host`); a
/// request that changes something must carry it.
pub fn origin_ok(origin: Option<&str>, host: Option<&str>, required: bool) -> bool {
    match (origin, host) {
        (None, _) => !required,
        (Some(origin), Some(host)) => origin.strip_prefix("http://") == Some(host),
        (Some(_), None) => false,
    }
}

/// Splits `/s/<token>/<rest>` into the token and the rest; `None` for any other path.
pub fn split_token(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/s/")?;
    Some(rest.split_once('/').unwrap_or((rest, "")))
}

/// Whether `sdp` looks like an SDP session description of a usable size.
pub fn offer_sdp_ok(sdp: &str) -> bool {
    sdp.len() <= MAX_OFFER && sdp.starts_with("v=0") && !sdp.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        let bound: SocketAddr = "127.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!());
        assert!(host_ok(Some("127.0.0.1:8080"), bound));
        assert!(host_ok(Some("localhost:8080"), bound));
        assert!(!host_ok(Some("evil.example:8080"), bound));
        assert!(!host_ok(Some("127.0.0.1:8081"), bound));
        assert!(!host_ok(None, bound));
        assert!(origin_ok(
            Some("http://127.0.0.1:8080"),
            Some("127.0.0.1:8080"),
            true
        ));
        assert!(!origin_ok(
            Some("https://127.0.0.1:8080"),
            Some("127.0.0.1:8080"),
            true
        ));
        assert!(!origin_ok(
            Some("http://evil.example"),
            Some("127.0.0.1:8080"),
            false
        ));
        assert!(!origin_ok(None, Some("127.0.0.1:8080"), true));
        assert!(origin_ok(None, Some("127.0.0.1:8080"), false));
        assert_eq!(split_token("/s/abc/offer"), Some(("abc", "offer")));
        assert_eq!(split_token("/s/abc"), Some(("abc", "")));
        assert_eq!(split_token("/abc/offer"), None);
    }
}
