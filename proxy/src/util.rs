//! Small helpers shared across the daemon.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The current time as RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

/// `time` as RFC 3339.
pub fn format_rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

/// Random bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes)
}

/// Saturating conversion of a duration to whole milliseconds.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The soft open-files limit (`RLIMIT_NOFILE`); 1024 when it cannot be read or is unlimited
/// beyond `u64`.
pub fn open_files_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1024 * 1024)
}

/// Raises the soft open-files limit to the hard limit, as a daemon that holds a descriptor
/// per connection should; returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let resource = rustix::process::Resource::Nofile;
    let limit = rustix::process::getrlimit(resource);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(error) = rustix::process::setrlimit(resource, raised) {
            tracing::warn!(%error, "cannot raise the open-files limit to the hard limit");
        }
    }
    open_files_limit()
}

/// Counts repeated occurrences (a flood's refusals, dropped datagrams) so that they are
/// logged as one line per interval with a count, never one line each.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    state: std::sync::Mutex<(u64, Option<std::time::Instant>)>,
}

impl LogThrottle {
    /// A throttle that lets one line through per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: std::sync::Mutex::new((0, None)),
        }
    }

    /// Counts `n` more occurrences. Returns how many happened since the last line (this
    /// call's included) when a line is due now, `None` otherwise.
    pub fn note(&self, n: u64) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = state.0.saturating_add(n);
        if state.1.is_some_and(|at| at.elapsed() < self.every) {
            return None;
        }
        let count = state.0;
        *state = (0, Some(std::time::Instant::now()));
        Some(count)
    }
}

static REDACT_PII: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Switches [`Redacted`] on or off for the whole process (`log.redact_pii`).
pub fn set_redact_pii(on: bool) {
    REDACT_PII.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Personal data in a log field (a client address, a user name): shown as `{REDACTED}` when
/// `log.redact_pii` is set.
pub struct Redacted<T>(pub T);

impl<T: std::fmt::Display> std::fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if REDACT_PII.load(std::sync::atomic::Ordering::Relaxed) {
            f.write_str("{REDACTED}")
        } else {
            self.0.fmt(f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_reports_the_first_occurrence_then_counts_until_the_next_line() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.note(1), Some(1));
        assert_eq!(throttle.note(5), None);
        assert_eq!(throttle.note(1), None);
        let every_time = LogThrottle::new(Duration::ZERO);
        assert_eq!(every_time.note(2), Some(2));
        assert_eq!(every_time.note(3), Some(3));
    }
}
