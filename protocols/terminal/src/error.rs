//! This crate's errors.

/// A connection parameter the terminal cannot use. Names the parameter, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {name} {reason}")]
#[non_exhaustive]
pub struct SettingsError {
    /// The parameter's guacd name (`font-size`).
    pub name: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl SettingsError {
    pub(crate) fn new(name: &'static str, reason: &'static str) -> Self {
        Self { name, reason }
    }
}
