//! The URL policy: which pages the browser may show (`allowed-url-patterns`) and which
//! sub-resources they may load (`allowed-resource-url-patterns`), as Keeper's remote
//! browser (`http` protocol) names them.
//!
//! A pattern is `[scheme://]host[:port][path]`, one per line (or separated by `|`):
//!
//! * **scheme**: `http`, `https` or `*`; absent means both. `http` also covers `ws`, and
//!   `https` `wss` (the same transport security).
//! * **host**: a name or an IP address, compared without case; `*.example.com` matches
//!   every subdomain of `example.com` (not `example.com` itself), and `*` every host. A `*`
//!   anywhere else in the host is refused: `app.example.com*` would also match
//!   `app.example.com.attacker.net`. For the same reason the common
//!   `https://app.example.com*` is read as `https://app.example.com/*`.
//! * **port**: a number or `*`; absent means the scheme's default port.
//! * **path**: a glob over the path and query, where `*` matches anything (`/` included);
//!   absent means every path.
//!
//! URLs are parsed and normalised (WHATWG, as the browser does: lowercase scheme and host,
//! punycode, default port dropped) before matching, so `HTTPS://App.Example.com:443/x`
//! matches `https://app.example.com/x`. Local schemes that never leave the machine
//! (`about:blank`, `data:`, `blob:` of an allowed origin) are allowed; every other
//! scheme (`file:`, `chrome:`, `javascript:`, `ftp:` …) is refused.

use std::fmt;

use url::{Host, Url};

/// The most patterns a list may hold.
pub const MAX_PATTERNS: usize = 256;
/// The longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 2048;
/// The longest URL checked; longer ones are refused.
pub const MAX_URL_LEN: usize = 64 * 1024;

/// A pattern that cannot be used. The text says why, without repeating the pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(pub &'static str);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// Every strict subdomain of this (lowercase) name.
    SubdomainsOf(String),
    /// Exactly this host (a lowercase name or an IP address, as `Url` serialises it).
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    Default,
    Exact(u16),
}

/// One pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    scheme: Scheme,
    host: HostPattern,
    port: PortPattern,
    /// The path-and-query glob (`*` wildcards); `None` is every path.
    path: Option<String>,
}

impl Pattern {
    /// Reads one pattern.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PatternError("an empty pattern"));
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(PatternError("a pattern is too long"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PatternError("a pattern holds spaces or control characters"));
        }
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (
                match scheme.to_ascii_lowercase().as_str() {
                    "http" => Scheme::Http,
                    "https" => Scheme::Https,
                    "*" => Scheme::Any,
                    _ => return Err(PatternError("a pattern's scheme must be http, https or *")),
                },
                rest,
            ),
            None => (Scheme::Any, text),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (mut authority, mut path) = (&rest[..split], &rest[split..]);
        // `https://app.example.com*`: the star is the path's.
        if path.is_empty()
            && let Some(host) = authority.strip_suffix('*')
            && !host.is_empty()
            && !host.ends_with(['.', ':'])
        {
            authority = host;
            path = "/*";
        }
        if authority.contains('@') {
            return Err(PatternError("a pattern must not hold user information"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal's colons are inside its brackets.
            Some((host, port)) if !port.contains(']') => (
                host,
                match port {
                    "*" => PortPattern::Any,
                    port => PortPattern::Exact(
                        port.parse()
                            .map_err(|_| PatternError("a pattern's port must be a number or *"))?,
                    ),
                },
            ),
            _ => (authority, PortPattern::Default),
        };
        let host = match host {
            "" => return Err(PatternError("a pattern has no host")),
            "*" => HostPattern::Any,
            host => match host.strip_prefix("*.") {
                Some(domain) => HostPattern::SubdomainsOf(normalise_host(domain)?),
                None => HostPattern::Exact(normalise_host(host)?),
            },
        };
        let path = match path {
            "" | "/*" | "*" => None,
            path => Some(path.to_owned()),
        };
        Ok(Self {
            scheme,
            host,
            port,
            path,
        })
    }

    /// Whether `host` (as `Url` serialises it) matches the pattern's host.
    fn host_matches(&self, host: &str) -> bool {
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(want) => host == want,
            HostPattern::SubdomainsOf(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
        }
    }

    /// Whether a connection to `host` (normalised) and `port` could carry a URL the pattern
    /// matches: its host, and its port (a default port is 80 for `http`, 443 for `https`,
    /// either for `*`).
    fn allows_endpoint(&self, host: &str, port: u16) -> bool {
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Exact(want) => port == want,
            PortPattern::Default => match self.scheme {
                Scheme::Http => port == 80,
                Scheme::Https => port == 443,
                Scheme::Any => port == 80 || port == 443,
            },
        };
        port_ok && self.host_matches(host)
    }

    /// Whether `url` (parsed) matches.
    fn matches(&self, url: &Url) -> bool {
        let secure = match url.scheme() {
            "https" | "wss" => true,
            "http" | "ws" => false,
            _ => return false,
        };
        match self.scheme {
            Scheme::Https if !secure => return false,
            Scheme::Http if secure => return false,
            _ => {}
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        if !self.host_matches(host) {
            return false;
        }
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Default => url.port().is_none(),
            PortPattern::Exact(want) => url.port_or_known_default() == Some(want),
        };
        if !port_ok {
            return false;
        }
        match &self.path {
            None => true,
            Some(glob) => {
                let mut target = url.path().to_owned();
                if let Some(query) = url.query() {
                    target.push('?');
                    target.push_str(query);
                }
                glob_matches(glob, &target)
            }
        }
    }
}

/// A pattern's host as the URL parser would write it (lowercase, punycode, IP addresses
/// canonical), or an error when it is no host.
fn normalise_host(host: &str) -> Result<String, PatternError> {
    if host.contains('*') {
        return Err(PatternError(
            "a pattern's host may use * only as its first label (*.example.com) or alone",
        ));
    }
    match Host::parse(host) {
        Ok(Host::Domain(name)) => Ok(name),
        Ok(Host::Ipv4(ip)) => Ok(ip.to_string()),
        Ok(Host::Ipv6(ip)) => Ok(format!("[{ip}]")),
        Err(_) => Err(PatternError("a pattern's host is not a valid host name")),
    }
}

/// `*` matches any run of characters; everything else matches itself. Linear in the
/// text for each star (the classic greedy algorithm with one backtrack point).
fn glob_matches(glob: &str, text: &str) -> bool {
    let (glob, text) = (glob.as_bytes(), text.as_bytes());
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && glob[g] == b'*' {
            star = Some((g, t));
            g += 1;
        } else if g < glob.len() && glob[g] == text[t] {
            g += 1;
            t += 1;
        } else if let Some((sg, st)) = star {
            g = sg + 1;
            t = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&b| b == b'*')
}

/// A list of patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns(Vec<Pattern>);

impl Patterns {
    /// Reads a list: patterns separated by line breaks or `|`.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let mut patterns = Vec::new();
        for part in text
            .split(['\n', '|'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if patterns.len() == MAX_PATTERNS {
                return Err(PatternError("more than 256 patterns"));
            }
            patterns.push(Pattern::parse(part)?);
        }
        Ok(Self(patterns))
    }

    /// The pattern that allows exactly `url`'s origin, every path.
    pub fn origin_of(url: &Url) -> Result<Self, PatternError> {
        let host = url
            .host_str()
            .ok_or(PatternError("the start URL has no host"))?;
        Ok(Self(vec![Pattern {
            scheme: match url.scheme() {
                "https" => Scheme::Https,
                "http" => Scheme::Http,
                _ => return Err(PatternError("the start URL must be http or https")),
            },
            host: HostPattern::Exact(host.to_owned()),
            port: match url.port() {
                None => PortPattern::Default,
                Some(port) => PortPattern::Exact(port),
            },
            path: None,
        }]))
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn matches(&self, url: &Url) -> bool {
        self.0.iter().any(|p| p.matches(url))
    }

    /// Whether `url` (http or https) matches one of the patterns.
    pub fn allows(&self, url: &str) -> bool {
        url.len() <= MAX_URL_LEN && Url::parse(url).is_ok_and(|u| self.matches(&u))
    }
}

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A top-level page (a navigation, a redirect of one, a popup).
    Navigation,
    /// Anything a page loads: a script, an image, an XHR or fetch, a WebSocket, an iframe.
    Resource,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Navigation => "navigation",
            Self::Resource => "resource",
        })
    }
}

/// Why a URL was refused (for the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a URL, or longer than [`MAX_URL_LEN`].
    Malformed,
    /// A scheme that is never allowed (`file:`, `chrome:`, `javascript:` …).
    Scheme,
    /// No pattern of the list matches.
    NotAllowed,
}

impl Refusal {
    /// The reason as the audit log writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed_url",
            Self::Scheme => "scheme_not_allowed",
            Self::NotAllowed => "url_not_allowed",
        }
    }
}

/// The session's URL policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPolicy {
    pages: Patterns,
    resources: Patterns,
}

impl UrlPolicy {
    /// Pages may be `pages`; sub-resources may be `resources` or `pages` (a page may load
    /// what it may show).
    pub fn new(pages: Patterns, resources: Patterns) -> Self {
        Self { pages, resources }
    }

    /// Whether a request of `kind` for `url` may go out.
    pub fn check(&self, kind: Kind, url: &str) -> Result<(), Refusal> {
        if url.len() > MAX_URL_LEN {
            return Err(Refusal::Malformed);
        }
        let parsed = Url::parse(url).map_err(|_| Refusal::Malformed)?;
        match parsed.scheme() {
            "http" | "https" | "ws" | "wss" => {}
            // Nothing leaves the machine: an empty page, inline data.
            "about" if parsed.as_str() == "about:blank" => return Ok(()),
            "data" if kind == Kind::Resource => return Ok(()),
            // A blob belongs to the origin that made it.
            "blob" if kind == Kind::Resource => {
                let inner = parsed.path();
                return match Url::parse(inner) {
                    Ok(origin) if self.allows(kind, &origin) => Ok(()),
                    Ok(_) => Err(Refusal::NotAllowed),
                    Err(_) => Err(Refusal::Malformed),
                };
            }
            _ => return Err(Refusal::Scheme),
        }
        if self.allows(kind, &parsed) {
            Ok(())
        } else {
            Err(Refusal::NotAllowed)
        }
    }

    /// Whether the browser may open a connection to `host`:`port` at all: some pattern of
    /// either list names that host and port. This is the check for what the Fetch domain
    /// does not see (WebSockets, service and shared workers' requests), made on the
    /// connection ([`crate::gate`]), so it knows no scheme or path. `host` is a name or an
    /// IP address; anything that is neither is refused.
    pub fn allows_endpoint(&self, host: &str, port: u16) -> bool {
        if host.len() > MAX_URL_LEN {
            return false;
        }
        let host = match Host::parse(host) {
            Ok(Host::Domain(name)) => name,
            Ok(Host::Ipv4(ip)) => ip.to_string(),
            Ok(Host::Ipv6(ip)) => format!("[{ip}]"),
            Err(_) => return false,
        };
        self.pages
            .0
            .iter()
            .chain(&self.resources.0)
            .any(|p| p.allows_endpoint(&host, port))
    }

    fn allows(&self, kind: Kind, url: &Url) -> bool {
        match kind {
            Kind::Navigation => self.pages.matches(url),
            Kind::Resource => self.pages.matches(url) || self.resources.matches(url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(pages: &str, resources: &str) -> UrlPolicy {
        UrlPolicy::new(
            Patterns::parse(pages).unwrap(),
            Patterns::parse(resources).unwrap(),
        )
    }

    #[test]
    fn endpoints_are_allowed_by_host_and_port_of_either_list() {
        let p = policy(
            "https://app.example.com/login*|http://127.0.0.1:8080",
            "*.cdn.example.net|https://[::1]:9443/x",
        );
        assert!(p.allows_endpoint("app.example.com", 443));
        assert!(
            p.allows_endpoint("APP.Example.com", 443),
            "names are normalised"
        );
        assert!(
            !p.allows_endpoint("app.example.com", 80),
            "https's default port only"
        );
        assert!(p.allows_endpoint("127.0.0.1", 8080));
        assert!(!p.allows_endpoint("127.0.0.1", 8081));
        assert!(p.allows_endpoint("img.cdn.example.net", 80));
        assert!(p.allows_endpoint("img.cdn.example.net", 443));
        assert!(!p.allows_endpoint("img.cdn.example.net", 8443));
        assert!(
            !p.allows_endpoint("cdn.example.net", 443),
            "strict subdomains"
        );
        assert!(!p.allows_endpoint("evilcdn.example.net", 443));
        assert!(p.allows_endpoint("[::1]", 9443));
        assert!(
            !p.allows_endpoint("localhost", 8080),
            "no resolution: names are names"
        );
        assert!(!p.allows_endpoint("", 443));
        assert!(!p.allows_endpoint("a b", 443));
        assert!(!p.allows_endpoint(&"a".repeat(10_000), 443));
    }

    #[test]
    fn hosts_match_exactly_or_as_subdomains_and_never_by_suffix() {
        let p = policy("https://app.example.com*\n*.example.org", "");
        let nav = |url| p.check(Kind::Navigation, url);
        assert_eq!(nav("https://app.example.com/"), Ok(()));
        assert_eq!(nav("https://APP.Example.com:443/login?x=1"), Ok(()));
        assert_eq!(
            nav("https://app.example.com.attacker.net/"),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(
            nav("https://evil-app.example.com/"),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(nav("http://app.example.com/"), Err(Refusal::NotAllowed));
        assert_eq!(
            nav("https://app.example.com:8443/"),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(nav("https://a.b.example.org/"), Ok(()));
        assert_eq!(nav("http://a.example.org/"), Ok(()));
        assert_eq!(nav("https://example.org/"), Err(Refusal::NotAllowed));
        assert_eq!(nav("https://notexample.org/"), Err(Refusal::NotAllowed));
        // User information cannot smuggle another host in.
        assert_eq!(
            nav("https://app.example.com@evil.net/"),
            Err(Refusal::NotAllowed)
        );
    }

    #[test]
    fn ports_paths_and_queries() {
        let p = policy("http://127.0.0.1:8080/app/*\nhttps://[::1]:*/", "");
        let nav = |url| p.check(Kind::Navigation, url);
        assert_eq!(nav("http://127.0.0.1:8080/app/x?y=1"), Ok(()));
        assert_eq!(nav("http://127.0.0.1:8080/app"), Err(Refusal::NotAllowed));
        assert_eq!(nav("http://127.0.0.1:8080/other"), Err(Refusal::NotAllowed));
        assert_eq!(nav("http://127.0.0.1:8081/app/x"), Err(Refusal::NotAllowed));
        assert_eq!(nav("https://[::1]:9/"), Ok(()));
        assert_eq!(nav("https://[::1]:9/x"), Err(Refusal::NotAllowed));
        // Percent-encoding cannot hide a path from the glob: the URL is normalised first.
        assert_eq!(
            nav("http://127.0.0.1:8080/app/../other"),
            Err(Refusal::NotAllowed)
        );
    }

    #[test]
    fn resources_may_come_from_either_list_pages_only_from_the_first() {
        let p = policy("https://app.example.com", "https://cdn.example.net/*");
        assert_eq!(
            p.check(Kind::Resource, "https://cdn.example.net/x.js"),
            Ok(())
        );
        assert_eq!(
            p.check(Kind::Resource, "https://app.example.com/a.png"),
            Ok(())
        );
        assert_eq!(
            p.check(Kind::Resource, "wss://app.example.com/socket"),
            Ok(())
        );
        assert_eq!(
            p.check(Kind::Navigation, "https://cdn.example.net/x.js"),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(
            p.check(Kind::Resource, "https://tracker.example.io/p.gif"),
            Err(Refusal::NotAllowed)
        );
    }

    #[test]
    fn local_schemes_are_allowed_and_the_rest_refused() {
        let p = policy("https://app.example.com", "");
        assert_eq!(p.check(Kind::Navigation, "about:blank"), Ok(()));
        assert_eq!(
            p.check(Kind::Resource, "data:image/png;base64,AAAA"),
            Ok(())
        );
        assert_eq!(
            p.check(Kind::Resource, "blob:https://app.example.com/1-2-3"),
            Ok(())
        );
        assert_eq!(
            p.check(Kind::Resource, "blob:https://evil.net/1-2-3"),
            Err(Refusal::NotAllowed)
        );
        for url in [
            "file:///etc/passwd",
            "chrome://settings",
            "javascript:alert(1)",
            "ftp://app.example.com/",
            "data:text/html,hi",
        ] {
            assert_eq!(
                p.check(Kind::Navigation, url),
                Err(Refusal::Scheme),
                "{url}"
            );
        }
        assert_eq!(
            p.check(Kind::Navigation, "not a url"),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "https://app.*.com",
            "https://*app.example.com",
            "gopher://x",
            "https://x:port",
            "https://user@x",
            "https://",
            "a b",
        ] {
            assert!(Patterns::parse(bad).is_err(), "{bad}");
        }
        assert!(Patterns::parse(&"x.example.com\n".repeat(257)).is_err());
    }

    #[test]
    fn the_origin_of_the_start_url() {
        let url = Url::parse("http://127.0.0.1:8080/login").unwrap();
        let p = UrlPolicy::new(Patterns::origin_of(&url).unwrap(), Patterns::default());
        assert_eq!(p.check(Kind::Navigation, "http://127.0.0.1:8080/x"), Ok(()));
        assert_eq!(
            p.check(Kind::Navigation, "http://127.0.0.1:8081/x"),
            Err(Refusal::NotAllowed)
        );
    }

    proptest! {
        #[test]
        fn glob_agrees_with_a_regex(glob in "[ab*/]{0,8}", text in "[ab/]{0,12}") {
            let regex = format!(
                "^{}$",
                glob.chars()
                    .map(|c| if c == '*' { ".*".to_owned() } else { regex_syntax_escape(c) })
                    .collect::<String>()
            );
            let want = regex::Regex::new(&regex).unwrap().is_match(&text);
            prop_assert_eq!(glob_matches(&glob, &text), want);
        }

        #[test]
        fn no_url_makes_the_check_panic(url in ".{0,200}") {
            let p = policy("https://app.example.com/a*\n*.example.org:*", "*");
            let _ = p.check(Kind::Navigation, &url);
            let _ = p.check(Kind::Resource, &url);
        }
    }

    fn regex_syntax_escape(c: char) -> String {
        regex::escape(&c.to_string())
    }
}
