//! The heartbeat key protocol: a JSON value with `started_at`, `last_seen`, `capacity` and
//! optionally `pid`, `host`, `version`, `period` and `group`; a value that is not JSON (a bare
//! timestamp) still counts as a heartbeat.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warden_core::Lease;

/// A parsed heartbeat value: the lease, and the consumer group when the worker names it.
pub fn parse(value: &[u8]) -> (Lease, Option<String>) {
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(value)
    else {
        return (Lease::default(), None);
    };
    let time = |k: &str| {
        let v = obj.get(k)?;
        let secs = v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))?;
        (secs.is_finite() && secs >= 0.0)
            .then(|| UNIX_EPOCH + Duration::from_secs_f64(secs.min(1e11)))
    };
    let uint = |k: &str| {
        obj.get(k)
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let text = |k: &str| {
        obj.get(k)
            .and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.is_number().then(|| v.to_string()))
            })
            .map(|s| s.chars().take(256).collect::<String>())
    };
    let period = obj
        .get("period")
        .and_then(serde_json::Value::as_f64)
        .filter(|p| p.is_finite() && *p > 0.0 && *p < 86_400.0)
        .map(Duration::from_secs_f64);
    let started_at: Option<SystemTime> = time("started_at");
    (
        Lease {
            started_at,
            renewed_at: time("last_seen"),
            period,
            capacity: uint("capacity"),
            pid: uint("pid"),
            host: text("host"),
            version: text("version"),
        },
        text("group"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_are_read_and_a_bare_timestamp_is_a_heartbeat() {
        let (lease, group) = parse(
            br#"{"started_at": 1700000000.5, "last_seen": 1700000010, "capacity": 4, "pid": 42, "host": "h1", "version": "1.2", "group": "g"}"#,
        );
        assert_eq!(lease.capacity, Some(4));
        assert_eq!(lease.pid, Some(42));
        assert_eq!(lease.host.as_deref(), Some("h1"));
        assert_eq!(lease.version.as_deref(), Some("1.2"));
        assert_eq!(
            lease.started_at,
            Some(UNIX_EPOCH + Duration::from_secs_f64(1_700_000_000.5))
        );
        assert_eq!(group.as_deref(), Some("g"));
        assert_eq!(
            lease.renewed_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_010))
        );
        assert_eq!(parse(b"1700000000.25"), (Lease::default(), None));
        assert_eq!(parse(b"\xff garbage"), (Lease::default(), None));
    }
}
