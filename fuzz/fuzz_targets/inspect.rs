//! The inspect reply readers (`parse_ping`, `parse_stats`, `parse_active`,
//! `parse_active_queues`, `parse_registered`). The input is parsed as JSON (non-JSON inputs
//! are skipped); every reader gets the whole value and, since a broadcast reply is
//! `{"worker@host": reply}`, each member of an object or element of an array too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use warden_celery::inspect;

/// `repr` cuts args/kwargs at 1024 bytes and appends "…" (3 bytes).
const MAX_REPR: usize = 1024 + '…'.len_utf8();

fn read_all(v: &Value) {
    let _ = inspect::parse_ping(v);
    if let Some(stats) = inspect::parse_stats(v) {
        if let Some(uptime) = stats.uptime {
            assert!(uptime.as_secs_f64() < 1e10, "{uptime:?}");
        }
        let _ = format!("{stats:?}");
    }
    if let Some(active) = inspect::parse_active(v) {
        for task in &active {
            assert!(task.args.len() <= MAX_REPR, "args of {} bytes", task.args.len());
            assert!(task.kwargs.len() <= MAX_REPR, "kwargs of {} bytes", task.kwargs.len());
        }
        let _ = format!("{active:?}");
    }
    if let Some(queues) = inspect::parse_active_queues(v) {
        let _ = format!("{queues:?}");
    }
    if let Some(names) = inspect::parse_registered(v) {
        // Sorted and without duplicates or blanks.
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        assert!(names.iter().all(|n| !n.is_empty()), "{names:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    read_all(&value);
    match &value {
        Value::Object(map) => map.values().for_each(read_all),
        Value::Array(items) => items.iter().for_each(read_all),
        _ => {}
    }
});
