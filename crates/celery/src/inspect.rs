//! Typed readings of Celery's inspect replies (`ping`, `stats`, `active`, `active_queues`,
//! `registered`). Replies are read leniently field by field: a field of the wrong type is
//! left unknown rather than failing the whole reply.
use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use super::pidbox::Command;
use warden_core::{ActiveTask, ConsumedQueue, Pool, WorkerStats};

/// The commands of one inspect round, in the order their replies are read.
pub fn round_commands() -> Vec<Command> {
    ["ping", "stats", "active", "active_queues", "registered"]
        .into_iter()
        .map(Command::new)
        .collect()
}

pub const PING: usize = 0;
pub const STATS: usize = 1;
pub const ACTIVE: usize = 2;
pub const ACTIVE_QUEUES: usize = 3;
pub const REGISTERED: usize = 4;

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .and_then(|n| u32::try_from(n).ok())
}

/// `{"ok": "pong"}`.
pub fn parse_ping(v: &Value) -> bool {
    v.get("ok").and_then(Value::as_str) == Some("pong")
}

/// Celery names pools by class path ("celery.concurrency.prefork:TaskPool"); people say "prefork".
fn pool_name(implementation: &str) -> String {
    let module = implementation.split(':').next().unwrap_or(implementation);
    let last = module.rsplit('.').next().unwrap_or(module);
    match last {
        "thread" => "threads".to_string(),
        other => other.to_string(),
    }
}

pub fn parse_stats(v: &Value) -> Option<WorkerStats> {
    let obj = v.as_object()?;
    let pool = obj.get("pool").and_then(Value::as_object).map(|p| Pool {
        implementation: p
            .get("implementation")
            .and_then(Value::as_str)
            .map(pool_name)
            .unwrap_or_default(),
        max_concurrency: p.get("max-concurrency").and_then(as_u32).unwrap_or(0),
        processes: p
            .get("processes")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(as_u32).collect())
            .unwrap_or_default(),
        max_tasks_per_child: p.get("max-tasks-per-child").and_then(as_u32).unwrap_or(0),
    });
    let processed_by_task: BTreeMap<String, u64> = obj
        .get("total")
        .and_then(Value::as_object)
        .map(|t| {
            t.iter()
                .filter_map(|(name, n)| Some((name.clone(), n.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    Some(WorkerStats {
        pid: obj.get("pid").and_then(as_u32),
        uptime: obj
            .get("uptime")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e10)
            .map(Duration::from_secs_f64),
        pool,
        processed_by_task,
        prefetch_count: obj.get("prefetch_count").and_then(as_u32),
        cpu_seconds: obj.get("rusage").and_then(Value::as_object).and_then(|r| {
            let user = r.get("utime").and_then(Value::as_f64)?;
            let system = r.get("stime").and_then(Value::as_f64)?;
            let total = user + system;
            (total.is_finite() && total >= 0.0).then_some(total)
        }),
    })
}

/// An epoch timestamp in seconds, if it plausibly is one (Celery versions differ in whether
/// `time_start` is wall-clock or monotonic; a monotonic reading is not a time).
fn epoch(v: &Value) -> Option<SystemTime> {
    let secs = v.as_f64()?;
    (secs > 1e9 && secs < 1e11).then(|| UNIX_EPOCH + Duration::from_secs_f64(secs))
}

fn repr(v: Option<&Value>) -> String {
    const MAX: usize = 1024;
    let text = match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

pub fn parse_active(v: &Value) -> Option<Vec<ActiveTask>> {
    Some(
        v.as_array()?
            .iter()
            .filter_map(|t| {
                let t = t.as_object()?;
                Some(ActiveTask {
                    id: t.get("id")?.as_str()?.to_string(),
                    name: t
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    started: t.get("time_start").and_then(epoch),
                    worker_pid: t.get("worker_pid").and_then(as_u32).unwrap_or(0),
                    args: repr(t.get("args")),
                    kwargs: repr(t.get("kwargs")),
                    acknowledged: t
                        .get("acknowledged")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                })
            })
            .collect(),
    )
}

pub fn parse_active_queues(v: &Value) -> Option<Vec<ConsumedQueue>> {
    Some(
        v.as_array()?
            .iter()
            .filter_map(|q| {
                let q = q.as_object()?;
                Some(ConsumedQueue {
                    name: q.get("name")?.as_str()?.to_string(),
                    exchange: q
                        .get("exchange")
                        .and_then(|e| e.get("name").or(Some(e)))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    routing_key: q
                        .get("routing_key")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                })
            })
            .collect(),
    )
}

/// Task names, sorted; Celery may append details after a space (`name [rate_limit=...]`).
pub fn parse_registered(v: &Value) -> Option<Vec<String>> {
    let mut names: Vec<String> = v
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|s| s.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    Some(names)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stats_reply_as_celery_5_sends_it() {
        let v = json!({
            "broker": {"hostname": "127.0.0.1", "port": 6379, "transport": "redis"},
            "clock": "42", "pid": 4242, "prefetch_count": 8, "uptime": 12,
            "pool": {"implementation": "celery.concurrency.prefork:TaskPool",
                     "max-concurrency": 2, "processes": [4243, 4244],
                     "max-tasks-per-child": "N/A", "timeouts": [0, 0]},
            "rusage": {"utime": 0.5}, "total": {"app.add": 3, "app.fail": 1}
        });
        let s = parse_stats(&v).unwrap();
        assert_eq!(s.pid, Some(4242));
        assert_eq!(s.uptime, Some(Duration::from_secs(12)));
        let pool = s.pool.unwrap();
        assert_eq!(pool.implementation, "prefork");
        assert_eq!(pool.max_concurrency, 2);
        assert_eq!(pool.processes, vec![4243, 4244]);
        assert_eq!(pool.max_tasks_per_child, 0);
        assert_eq!(s.processed_by_task.values().sum::<u64>(), 4);
        assert_eq!(s.prefetch_count, Some(8));
        // No stime: no CPU reading (half a figure would be wrong).
        assert_eq!(s.cpu_seconds, None);
        let s = parse_stats(&json!({"rusage": {"utime": 1.25, "stime": 0.5, "maxrss": 60000}}))
            .unwrap();
        assert_eq!(s.cpu_seconds, Some(1.75));
    }

    #[test]
    fn wrong_types_leave_fields_unknown() {
        assert!(parse_stats(&json!([1])).is_none());
        let s = parse_stats(&json!({"pid": "x", "uptime": -5, "total": {"a": "many"}})).unwrap();
        assert_eq!((s.pid, s.uptime), (None, None));
        assert!(s.processed_by_task.is_empty());
        assert!(!parse_ping(&json!({"ok": 1})));
        assert!(parse_ping(&json!({"ok": "pong"})));
    }

    #[test]
    fn active_queues_and_registered() {
        let q = parse_active_queues(&json!([
            {"name": "celery", "exchange": {"name": "celery", "type": "direct"}, "routing_key": "celery"},
            {"bogus": true}
        ]))
        .unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].exchange, "celery");
        let r = parse_registered(&json!(["b.task [rate_limit=1/s]", "a.task", 5])).unwrap();
        assert_eq!(r, vec!["a.task", "b.task"]);
        let a = parse_active(
            &json!([{"id": "u1", "name": "t", "time_start": 1700000000.5,
            "worker_pid": 7, "args": [1, 2], "kwargs": {}, "acknowledged": true}]),
        )
        .unwrap();
        assert_eq!(a[0].worker_pid, 7);
        assert_eq!(a[0].args, "[1,2]");
        assert!(a[0].started.is_some());
    }
}
