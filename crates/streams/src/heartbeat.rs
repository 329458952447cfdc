//! The heartbeat key protocol: a JSON value with `started_at`, `last_seen`, `capacity` and
//! optionally `pid`, `host`, `version`, `period`, `group` and the cumulative task counters
//! `processed`, `failed` and `latency` (see [`latency`]); a value that is not JSON (a bare
//! timestamp) still counts as a heartbeat.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warden_core::{LatencyHistogram, Lease, TaskCounters};

/// Most histogram buckets read (more is a malformed histogram: ignored).
const MAX_BUCKETS: usize = 64;

/// The task counters of a heartbeat: `processed` (tasks finished, failed ones included) and
/// optionally `failed` and `latency`; absent without `processed`.
fn counters(obj: &serde_json::Map<String, serde_json::Value>) -> Option<TaskCounters> {
    let processed = obj.get("processed")?.as_u64()?;
    let failed = obj
        .get("failed")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Some(TaskCounters {
        processed,
        failed: failed.min(processed),
        latency: obj.get("latency").and_then(latency),
    })
}

/// `{"buckets": [upper bounds in seconds, increasing], "counts": [observations per bucket, not
/// cumulative], "count": total}`: those over the last bound are `count - sum(counts)` (`sum`,
/// the total seconds, may be sent too; it is not needed). Anything malformed: `None`.
fn latency(v: &serde_json::Value) -> Option<LatencyHistogram> {
    let bounds: Vec<f64> = v
        .get("buckets")?
        .as_array()?
        .iter()
        .map(serde_json::Value::as_f64)
        .collect::<Option<_>>()?;
    let counts: Vec<u64> = v
        .get("counts")?
        .as_array()?
        .iter()
        .map(serde_json::Value::as_u64)
        .collect::<Option<_>>()?;
    let valid = !bounds.is_empty()
        && bounds.len() <= MAX_BUCKETS
        && counts.len() == bounds.len()
        && bounds
            .iter()
            .all(|b| b.is_finite() && *b > 0.0 && *b < 86_400.0)
        && bounds.windows(2).all(|w| w[0] < w[1]);
    if !valid {
        return None;
    }
    let in_buckets = counts.iter().try_fold(0u64, |a, n| a.checked_add(*n))?;
    let count = v
        .get("count")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(in_buckets);
    Some(LatencyHistogram {
        bounds: bounds.into_iter().map(Duration::from_secs_f64).collect(),
        counts,
        over: count.saturating_sub(in_buckets),
    })
}

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
            tasks: counters(&obj),
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
        assert_eq!(lease.tasks, None);
        assert_eq!(parse(b"1700000000.25"), (Lease::default(), None));
        assert_eq!(parse(b"\xff garbage"), (Lease::default(), None));
    }

    #[test]
    fn task_counters_and_the_latency_histogram_are_read() {
        let (lease, _) = parse(
            br#"{"processed": 12, "failed": 3, "latency": {"buckets": [0.01, 0.1], "counts": [4, 6], "sum": 1.5, "count": 12}}"#,
        );
        let tasks = lease.tasks.unwrap();
        assert_eq!((tasks.processed, tasks.failed), (12, 3));
        let h = tasks.latency.unwrap();
        assert_eq!(h.counts, vec![4, 6]);
        assert_eq!(h.over, 2);
        assert_eq!(h.bounds[1], Duration::from_millis(100));
        // Malformed histograms are ignored, the counters kept.
        for bad in [
            r#"{"buckets": [0.1, 0.01], "counts": [1, 1]}"#,
            r#"{"buckets": [0.1], "counts": [1, 1]}"#,
            r#"{"buckets": [-1], "counts": [1]}"#,
            r#"{"buckets": [0.1], "counts": [-1]}"#,
            r#"[1]"#,
        ] {
            let value = format!(r#"{{"processed": 1, "latency": {bad}}}"#);
            let tasks = parse(value.as_bytes()).0.tasks.unwrap();
            assert_eq!(tasks.latency, None, "{bad}");
        }
        assert_eq!(parse(br#"{"failed": 2}"#).0.tasks, None);
    }
}
