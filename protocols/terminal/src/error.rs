//! This crate's errors.

/// A connection parameter that cannot be used. Names the parameter, never its value.
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
    /// Parameter `name` is wrong for `reason` (the protocols that draw through the terminal
    /// report their own parameters' problems the same way).
    pub fn new(name: &'static str, reason: &'static str) -> Self {
        Self { name, reason }
    }
}
