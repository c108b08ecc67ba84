//! Session policy: what the gateway's connection parameters allow, as typed settings.
//!
//! The gateway passes policy in guacamole-server's vocabulary (`disable-copy`, `read-only`,
//! …). It is parsed here once, when the session is created, into [`ConnectionPolicy`];
//! unknown values for these names are refused with a specific error rather than read as
//! "allowed". ztproxy enforces the policy itself, whatever the target does: the same names
//! are also passed on to guacd, which enforces them a second time.

use std::collections::BTreeMap;

use zt_api::Secret;

/// Default `clipboard-buffer-size` (guacd's default).
pub const DEFAULT_CLIPBOARD_BUFFER: usize = 256 * 1024;
/// Smallest `clipboard-buffer-size` accepted (guacd's minimum).
pub const MIN_CLIPBOARD_BUFFER: usize = 256 * 1024;
/// Largest `clipboard-buffer-size` accepted (guacd's maximum).
pub const MAX_CLIPBOARD_BUFFER: usize = 50 * 1024 * 1024;

/// A policy parameter with a value it cannot have. Names the parameter, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("parameter {name} {problem}")]
pub struct ParameterError {
    /// The parameter's guacd name (`read-only`).
    pub name: &'static str,
    /// What is wrong with its value.
    pub problem: &'static str,
}

/// What a connection's user may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionPolicy {
    /// No clipboard data from the target reaches the client (`disable-copy`).
    pub disable_copy: bool,
    /// No clipboard data from the client reaches the target (`disable-paste`).
    pub disable_paste: bool,
    /// Most clipboard bytes carried in either direction per transfer
    /// (`clipboard-buffer-size`); the rest is dropped.
    pub clipboard_buffer_size: usize,
    /// No file leaves the target for the client (`disable-download`, `sftp-disable-download`).
    pub disable_download: bool,
    /// No file goes from the client to the target (`disable-upload`, `sftp-disable-upload`).
    pub disable_upload: bool,
    /// No key, mouse or touch input reaches the target (`read-only`).
    pub read_only: bool,
    /// The client's input is recorded too (`recording-include-keys`).
    pub record_input: bool,
}

impl Default for ConnectionPolicy {
    fn default() -> Self {
        Self {
            disable_copy: false,
            disable_paste: false,
            clipboard_buffer_size: DEFAULT_CLIPBOARD_BUFFER,
            disable_download: false,
            disable_upload: false,
            read_only: false,
            record_input: false,
        }
    }
}

impl ConnectionPolicy {
    /// Reads the policy parameters of a session.
    pub fn from_parameters(
        parameters: &BTreeMap<String, Secret<String>>,
    ) -> Result<Self, ParameterError> {
        let flag = |name: &'static str| -> Result<bool, ParameterError> {
            match parameters.get(name).map(|v| v.expose_secret().as_str()) {
                None | Some("") | Some("false") => Ok(false),
                Some("true") => Ok(true),
                Some(_) => Err(ParameterError {
                    name,
                    problem: "must be \"true\" or \"false\"",
                }),
            }
        };
        let clipboard_buffer_size = match parameters
            .get("clipboard-buffer-size")
            .map(|v| v.expose_secret().as_str())
        {
            None | Some("") => DEFAULT_CLIPBOARD_BUFFER,
            Some(text) => {
                let size: usize = text.parse().map_err(|_| ParameterError {
                    name: "clipboard-buffer-size",
                    problem: "must be a number of bytes",
                })?;
                // guacd clamps to its range; so do we.
                size.clamp(MIN_CLIPBOARD_BUFFER, MAX_CLIPBOARD_BUFFER)
            }
        };
        Ok(Self {
            disable_copy: flag("disable-copy")?,
            disable_paste: flag("disable-paste")?,
            clipboard_buffer_size,
            disable_download: flag("disable-download")? || flag("sftp-disable-download")?,
            disable_upload: flag("disable-upload")? || flag("sftp-disable-upload")?,
            read_only: flag("read-only")?,
            record_input: flag("recording-include-keys")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, Secret<String>> {
        zt_api::protocol::parameter_map(pairs)
    }

    #[test]
    fn defaults_allow_everything() {
        assert_eq!(
            ConnectionPolicy::from_parameters(&params(&[])).unwrap(),
            ConnectionPolicy::default()
        );
    }

    #[test]
    fn reads_each_switch_and_both_forms_of_transfer_switches() {
        let p = ConnectionPolicy::from_parameters(&params(&[
            ("disable-copy", "true"),
            ("sftp-disable-download", "true"),
            ("disable-upload", "true"),
            ("read-only", "true"),
            ("recording-include-keys", "true"),
        ]))
        .unwrap();
        assert!(p.disable_copy && !p.disable_paste && p.disable_download && p.disable_upload);
        assert!(p.read_only && p.record_input);
    }

    #[test]
    fn refuses_values_that_are_not_booleans() {
        let err = ConnectionPolicy::from_parameters(&params(&[("read-only", "yes")])).unwrap_err();
        assert_eq!(err.name, "read-only");
        let err = ConnectionPolicy::from_parameters(&params(&[("clipboard-buffer-size", "lots")]))
            .unwrap_err();
        assert_eq!(err.name, "clipboard-buffer-size");
    }

    #[test]
    fn clamps_the_clipboard_buffer_like_guacd() {
        let small =
            ConnectionPolicy::from_parameters(&params(&[("clipboard-buffer-size", "10")])).unwrap();
        assert_eq!(small.clipboard_buffer_size, MIN_CLIPBOARD_BUFFER);
        let large = ConnectionPolicy::from_parameters(&params(&[(
            "clipboard-buffer-size",
            "999999999999",
        )]))
        .unwrap();
        assert_eq!(large.clipboard_buffer_size, MAX_CLIPBOARD_BUFFER);
    }
}
