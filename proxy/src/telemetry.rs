//! Logging set-up. Only the daemon installs a subscriber; libraries just emit.
//!
//! The WebRTC stack logs through the `log` crate, which `tracing-subscriber` bridges. Its
//! per-packet chatter is capped at `warn` unless the filter names those crates explicitly,
//! and its warnings and errors are rate-limited: at most [`QUIET_BURST`] a minute per crate
//! module and level (a peer can make the stack warn about every packet it sends), with one
//! line a minute saying how many were suppressed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{Level, Metadata, subscriber::Interest};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Warnings and errors per quiet module and level let through per [`QUIET_WINDOW`].
pub const QUIET_BURST: u32 = 10;
/// The rate limit's window.
pub const QUIET_WINDOW: Duration = Duration::from_secs(60);
/// Modules tracked at most (beyond it, new ones share one budget).
const MAX_TRACKED: usize = 1024;

use crate::config::{LogConfig, LogFormat};

/// Crates whose `info` output is per-connection noise.
pub const QUIET_CRATES: &[&str] = &[
    "webrtc",
    "rtc",
    "rtc_ice",
    "rtc_dtls",
    "rtc_sctp",
    "rtc_sdp",
    "rtc_datachannel",
    "rtc_srtp",
    "rtc_turn",
    "rtc_stun",
    "rtc_mdns",
    "rtc_interceptor",
    "quinn",
    "quinn_proto",
    "rustls",
    "hyper",
    "axum",
];

/// Whether `target` belongs to one of the [`QUIET_CRATES`].
fn is_quiet(target: &str) -> bool {
    QUIET_CRATES.iter().any(|krate| {
        target
            .strip_prefix(krate)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

#[derive(Debug)]
struct Window {
    started: Instant,
    passed: u32,
    suppressed: u64,
}

/// The rate limit on the quiet crates' warnings and errors.
#[derive(Debug, Default)]
pub struct QuietRateLimit {
    windows: Mutex<HashMap<(Level, String), Window>>,
}

impl QuietRateLimit {
    /// Whether one more event of `level` from `target` may be written now.
    pub fn admit(&self, target: &str, level: Level) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let key =
            if windows.len() < MAX_TRACKED || windows.contains_key(&(level, target.to_owned())) {
                (level, target.to_owned())
            } else {
                (level, String::from("(other)"))
            };
        let window = windows.entry(key).or_insert_with(|| Window {
            started: Instant::now(),
            passed: 0,
            suppressed: 0,
        });
        if window.started.elapsed() >= QUIET_WINDOW {
            window.started = Instant::now();
            window.passed = 0;
        }
        if window.passed < QUIET_BURST {
            window.passed += 1;
            true
        } else {
            window.suppressed += 1;
            false
        }
    }

    /// The suppressed counts since the last call, per module and level (and resets them).
    pub fn take_suppressed(&self) -> Vec<(Level, String, u64)> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken = Vec::new();
        for ((level, target), window) in windows.iter_mut() {
            if window.suppressed > 0 {
                taken.push((*level, target.clone(), window.suppressed));
                window.suppressed = 0;
            }
        }
        windows.retain(|_, w| w.started.elapsed() < QUIET_WINDOW * 2);
        taken
    }
}

/// [`QuietRateLimit`] as a per-layer filter.
struct RateLimitFilter(Arc<QuietRateLimit>);

impl<S> Filter<S> for RateLimitFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        if !meta.is_event() || *meta.level() > Level::WARN || !is_quiet(meta.target()) {
            return true;
        }
        self.0.admit(meta.target(), *meta.level())
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_event() && is_quiet(meta.target()) {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }
}

/// Logs what the rate limit suppressed, once per window.
fn report_suppressed(limit: Arc<QuietRateLimit>) {
    let spawned = std::thread::Builder::new()
        .name("zt-log-summary".into())
        .spawn(move || {
            loop {
                std::thread::sleep(QUIET_WINDOW);
                for (level, module, suppressed) in limit.take_suppressed() {
                    tracing::warn!(
                        %module,
                        %level,
                        suppressed,
                        "suppressed repeated log lines from the network stack in the last minute"
                    );
                }
            }
        });
    if spawned.is_err() {
        eprintln!("ztproxy: cannot start the log summary thread");
    }
}

/// Targets that log message payloads below `info`, capped at `info` at every level.
const SECRET_TRACERS: &[&str] = &[
    "chromiumoxide=info",
    "tungstenite=info",
    "tokio_tungstenite=info",
    "async_tungstenite=info",
];

/// Installs the global subscriber, writing to stderr. `RUST_LOG`, when set, wins over the
/// configured level. Unless the filter's global level is `debug` or `trace`, the crates in
/// [`QUIET_CRATES`] are capped at `warn`; their warnings and errors are always rate-limited.
pub fn init(config: &LogConfig) {
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| config.level.clone());
    let mut filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    // A global `debug` or `trace` asks for everything; otherwise the stack's chatter is capped.
    let verbose = directive
        .split(',')
        .any(|part| matches!(part.trim(), "debug" | "trace"));
    for krate in QUIET_CRATES {
        if !verbose
            && !directive.contains(krate)
            && let Ok(d) = format!("{krate}=warn").parse()
        {
            filter = filter.add_directive(d);
        }
    }
    // tiberius, built without TLS, warns at every login that the login is not encrypted:
    // the encryption is below it (zt_db::tds), and `db_connected` says whether there is any.
    if !directive.contains("tiberius")
        && let Ok(d) = "tiberius::client::connection=error".parse()
    {
        filter = filter.add_directive(d);
    }
    // These trace every message they carry: the remote browser's DevTools commands (typed
    // keys, the autofilled password) and WebSocket frames (Kubernetes stdin). Secrets never
    // reach a log, whatever the level asked for.
    for cap in SECRET_TRACERS {
        if let Ok(d) = cap.parse() {
            filter = filter.add_directive(d);
        }
    }
    let limit = Arc::new(QuietRateLimit::default());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_span_events(FmtSpan::NONE);
    let layer = match config.format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().with_current_span(true).boxed(),
    };
    let layer = layer
        .with_filter(filter)
        .with_filter(RateLimitFilter(limit.clone()));
    let result = tracing_subscriber::registry().with(layer).try_init();
    if result.is_err() {
        eprintln!("ztproxy: a log subscriber was already installed");
    } else if !verbose {
        report_suppressed(limit);
    }
    crate::util::set_redact_pii(config.redact_pii);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_crates_are_told_by_module_path() {
        assert!(is_quiet("rtc_ice::agent"));
        assert!(is_quiet("rtc"));
        assert!(is_quiet("rtc::peer_connection::handler"));
        assert!(!is_quiet("rtcx::agent"));
        assert!(!is_quiet("zt_proxy::session"));
    }

    #[test]
    fn a_burst_passes_then_the_rest_is_counted() {
        let limit = QuietRateLimit::default();
        let passed = (0..1000)
            .filter(|_| limit.admit("rtc_ice::agent", Level::WARN))
            .count();
        assert_eq!(passed, QUIET_BURST as usize);
        // Another module and another level have budgets of their own.
        assert!(limit.admit("rtc::peer_connection::handler", Level::WARN));
        assert!(limit.admit("rtc_ice::agent", Level::ERROR));
        let suppressed = limit.take_suppressed();
        assert_eq!(
            suppressed,
            vec![(
                Level::WARN,
                "rtc_ice::agent".to_owned(),
                1000 - u64::from(QUIET_BURST)
            )]
        );
        assert!(limit.take_suppressed().is_empty());
    }
}
