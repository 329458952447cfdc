//! A value that must never be printed: webhook URLs, routing keys, passwords, HMAC keys.
//!
//! `Debug` and `Display` print `***`; the only way to the value is [`Secret::expose`], so a
//! secret reaching a log or an error string takes a visible call.
use std::fmt;

use serde::Deserialize;

#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Replaces every occurrence of each secret in `text` by `***`: the last line of defence for
/// text that comes from elsewhere (a server's answer, a library's error).
pub(crate) fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        // Very short values would mangle ordinary words; they are not worth hiding by text.
        if secret.expose().len() >= 4 {
            out = out.replace(secret.expose(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn scrub_replaces_every_occurrence() {
        let s = Secret::new("tok-123");
        assert_eq!(
            scrub("a tok-123 b tok-123", &[&s]),
            "a *** b ***".to_string()
        );
    }
}
