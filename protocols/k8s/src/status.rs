//! `metav1.Status`: the outcome on the status stream, and the body of a refused upgrade.
//!
//! On the status stream (v4 and v5) the server writes one object when the process ends:
//!
//! ```text
//! {"metadata":{},"status":"Success"}
//! {"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: …",
//!  "reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}
//! {"metadata":{},"status":"Failure","message":"Internal error occurred: …","reason":"InternalError",…,"code":500}
//! ```
//!
//! A refused upgrade is a plain HTTP answer whose body is a Status too (`401 Unauthorized`,
//! `403 … cannot create resource "pods/exec" …`, `404 pods "x" not found`, `400 container x
//! is not valid for pod y`); a `403` with no body means the server took none of the offered
//! subprotocols. The server's message is what the user is told, shortened and with control
//! characters removed: it comes from the network.

use serde::Deserialize;

/// The longest server message passed on, in characters.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// How the process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with status 0 (or the attached session ended normally).
    Success,
    /// It exited with this non-zero status.
    Exited(u8),
    /// The server reports a failure (its reason and message).
    Failed {
        /// The Status's `reason` (`InternalError`, …), or empty.
        reason: String,
        /// The server's message, sanitised.
        message: String,
    },
}

/// A status that is not a Status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// Not JSON, or not a Status object.
    #[error("the status stream holds no Kubernetes Status")]
    NotAStatus,
    /// `NonZeroExitCode` without a readable exit code, or an unknown `status`.
    #[error("the status stream's Status is malformed")]
    Malformed,
}

#[derive(Deserialize)]
struct Status {
    status: Option<String>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
    details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    causes: Vec<Cause>,
}

#[derive(Deserialize)]
struct Cause {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// Reads the status stream's Status.
pub fn outcome(json: &[u8]) -> Result<Outcome, StatusError> {
    let status: Status = serde_json::from_slice(json).map_err(|_| StatusError::NotAStatus)?;
    match status.status.as_deref() {
        Some("Success") => Ok(Outcome::Success),
        Some("Failure") if status.reason == "NonZeroExitCode" => status
            .details
            .iter()
            .flat_map(|d| &d.causes)
            .find(|c| c.reason == "ExitCode")
            .and_then(|c| c.message.trim().parse::<u8>().ok())
            .map(Outcome::Exited)
            .ok_or(StatusError::Malformed),
        Some("Failure") => Ok(Outcome::Failed {
            reason: sanitize(&status.reason),
            message: sanitize(&status.message),
        }),
        _ => Err(StatusError::Malformed),
    }
}

/// What to tell the user about an upgrade the API server refused with `code` and `body`.
pub fn refusal(code: u16, body: &[u8]) -> String {
    if let Ok(status) = serde_json::from_slice::<Status>(body)
        && !status.message.is_empty()
    {
        return format!(
            "the Kubernetes API server refused ({code}): {}",
            sanitize(&status.message)
        );
    }
    match code {
        403 if body.is_empty() => {
            "the Kubernetes API server refused the exec (403): it supports neither \
             v5.channel.k8s.io nor v4.channel.k8s.io"
                .to_owned()
        }
        401 => "the Kubernetes API server refused the credentials (401)".to_owned(),
        _ => format!(
            "the Kubernetes API server answered {code}: {}",
            sanitize(&String::from_utf8_lossy(body))
        ),
    }
}

/// `text` without control characters, at most [`MAX_MESSAGE_CHARS`] characters.
pub fn sanitize(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_exit_codes_and_failures_are_read() {
        assert_eq!(
            outcome(br#"{"metadata":{},"status":"Success"}"#),
            Ok(Outcome::Success)
        );
        assert_eq!(
            outcome(
                br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: command terminated with exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
            ),
            Ok(Outcome::Exited(3))
        );
        assert_eq!(
            outcome(
                br#"{"metadata":{},"status":"Failure","message":"Internal error occurred: unable to upgrade connection: container not found (\"c1\")","reason":"InternalError","details":{"causes":[{"message":"x"}]},"code":500}"#
            ),
            Ok(Outcome::Failed {
                reason: "InternalError".into(),
                message:
                    "Internal error occurred: unable to upgrade connection: container not found (\"c1\")"
                        .into()
            })
        );
    }

    #[test]
    fn malformed_statuses_are_errors() {
        assert_eq!(outcome(b"exit 3"), Err(StatusError::NotAStatus));
        assert_eq!(outcome(b"[]"), Err(StatusError::NotAStatus));
        assert_eq!(
            outcome(br#"{"status":"Pending"}"#),
            Err(StatusError::Malformed)
        );
        assert_eq!(
            outcome(br#"{"status":"Failure","reason":"NonZeroExitCode"}"#),
            Err(StatusError::Malformed)
        );
        assert_eq!(
            outcome(
                br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"300"}]}}"#
            ),
            Err(StatusError::Malformed)
        );
    }

    #[test]
    fn refusals_say_what_the_server_said() {
        let forbidden = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"web-0\" is forbidden: User \"bob\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"shop\"","reason":"Forbidden","details":{"name":"web-0","kind":"pods"},"code":403}"#;
        assert_eq!(
            refusal(403, forbidden),
            "the Kubernetes API server refused (403): pods \"web-0\" is forbidden: User \"bob\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"shop\""
        );
        assert!(
            refusal(
                404,
                br#"{"status":"Failure","message":"pods \"nope\" not found","code":404}"#
            )
            .ends_with("pods \"nope\" not found")
        );
        assert!(refusal(403, b"").contains("v5.channel.k8s.io"));
        assert!(refusal(401, b"").contains("401"));
        assert_eq!(
            refusal(502, b"bad\x1b[2Jgateway"),
            "the Kubernetes API server answered 502: bad [2Jgateway"
        );
        let long = "x".repeat(1000);
        assert_eq!(
            refusal(500, long.as_bytes()).chars().count(),
            "the Kubernetes API server answered 500: ".len() + MAX_MESSAGE_CHARS + 1
        );
    }
}
