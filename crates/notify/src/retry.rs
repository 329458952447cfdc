//! How often and how patiently a delivery is tried.
use std::time::Duration;

use serde::Deserialize;

/// How long one attempt may take before it counts as failed.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts in all, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The wait after the first failed attempt; it doubles after each further failure.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Retry settings: `attempt_timeout` per attempt, at most `max_attempts` attempts, waits of
/// `initial_backoff` doubling up to `max_backoff` between them. In TOML the durations are
/// written as humantime strings (`"10s"`, `"500ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(with = "humantime_serde_compat")]
    pub attempt_timeout: Duration,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde_compat")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `failed_attempt` (1 = the first attempt):
    /// `initial_backoff × 2^(n−1)`, at most `max_backoff`.
    pub fn backoff(&self, failed_attempt: u32) -> Duration {
        let doublings = failed_attempt.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }

    /// Whether another attempt follows failed attempt number `failed_attempt`.
    pub fn retries_after(&self, failed_attempt: u32) -> bool {
        failed_attempt < self.max_attempts.max(1)
    }

    /// Checks the values make sense; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry.max_attempts must be at least 1".into());
        }
        if self.attempt_timeout.is_zero() {
            return Err("retry.attempt_timeout must be positive".into());
        }
        if self.max_backoff < self.initial_backoff {
            return Err("retry.max_backoff must not be below retry.initial_backoff".into());
        }
        Ok(())
    }
}

/// Durations as humantime strings, for serde.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| D::Error::custom(format!("{text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let p = RetryPolicy::default();
        assert_eq!(p.attempt_timeout, Duration::from_secs(10));
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.initial_backoff, Duration::from_secs(1));
        assert_eq!(p.max_backoff, Duration::from_secs(30));
    }

    #[test]
    fn backoff_doubles_from_one_second_and_stops_at_thirty() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=8).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        // No overflow for absurd attempt numbers.
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn five_attempts_mean_four_retries() {
        let p = RetryPolicy::default();
        assert!((1..=4).all(|n| p.retries_after(n)));
        assert!(!p.retries_after(5));
    }

    #[test]
    fn validate_names_the_key() {
        let p = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(p.validate().unwrap_err().contains("max_attempts"));
    }
}
