//! A wrapper for credentials and key material: [`Secret`].
//!
//! A leaf crate, so that a protocol crate (the guacd bridge, the native backends) can carry
//! credentials without depending on the control API. `zt_api::Secret` is this type.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;

use serde::{Deserialize, Deserializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A value that must never reach a log line or an error message.
///
/// `Debug` prints `<secret>`; there is no `Display`. The value is reached only through
/// [`Secret::expose_secret`], which makes every use visible in review, and it is zeroised
/// when dropped. Deserialises transparently from the inner type, so a request body can hold
/// credentials without a copy ever being formatted.
#[derive(Clone, Default, PartialEq, Eq, ZeroizeOnDrop)]
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Returns the secret value. Callers must not log or format it.
    pub fn expose_secret(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl<'de, T: Zeroize + Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self)
    }
}

impl<T: Zeroize + serde::Serialize> serde::Serialize for Secret<T> {
    /// Serialises the secret value. Only request bodies built by a client (the gateway, the
    /// `connect` CLI, tests) are serialised; ztproxy never serialises a secret it received.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        let secret = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{secret:?}"), "<secret>");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(<secret>)");
        assert_eq!(secret.expose_secret(), "hunter2");
    }

    #[test]
    fn deserialises_transparently() {
        let secret: Secret<String> = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(secret.expose_secret(), "abc");
    }
}
