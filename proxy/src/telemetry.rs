//! Logging set-up. Only the daemon installs a subscriber; libraries just emit.
//!
//! The WebRTC stack logs through the `log` crate, which `tracing-subscriber` bridges. Its
//! per-packet chatter is capped at `warn` unless the filter names those crates explicitly.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

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

/// Installs the global subscriber, writing to stderr. `RUST_LOG`, when set, wins over the
/// configured level. Unless the filter's global level is `debug` or `trace`, the crates in
/// [`QUIET_CRATES`] are capped at `warn`.
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_span_events(FmtSpan::NONE);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    if result.is_err() {
        eprintln!("ztproxy: a log subscriber was already installed");
    }
    crate::util::set_redact_pii(config.redact_pii);
}
