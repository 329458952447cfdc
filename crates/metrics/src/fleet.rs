//! The fleet as Prometheus series, rendered from a snapshot at scrape time.
//!
//! The `celery_*` families carry celery-exporter's names, labels, help texts and runtime
//! buckets, so that dashboards and alerts built for celery-exporter read warden unchanged.
//! The `warden_*` families add what only warden knows (health verdicts, source status).
//!
//! Rendering from the snapshot (rather than keeping a registry of per-worker series) is what
//! bounds cardinality: a worker that is forgotten, or gone for longer than
//! [`ExportOptions::gone_after`], is not in the next scrape, with nothing to clean up.
use std::{
    collections::BTreeMap,
    fmt::Write,
    time::{Duration, SystemTime},
};

use warden_core::{
    model::{Activity, Backend, HealthStatus, Lifecycle, Worker},
    perf::{RUNTIME_BUCKETS, TaskTotals},
    state::Snapshot,
};

/// The two exposition formats: they differ in how counter families are named and how the
/// text ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (`text/plain`), what celery-exporter serves and what
    /// `promtool check metrics` reads.
    Text,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

/// What the exporter leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// Label task series with the worker's hostname (celery-exporter's default). Without it,
    /// task series are summed over the fleet per task name: far fewer series.
    pub task_hostname: bool,
    /// Workers that are not alive and were last heard of longer ago than this are left out
    /// (celery-exporter purges offline workers after 10 minutes).
    pub gone_after: Duration,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            task_hostname: true,
            gone_after: Duration::from_secs(600),
        }
    }
}

/// One counter of [`TaskTotals`]: (family name without `_total`, help, field).
type TaskCounter = (&'static str, &'static str, fn(&TaskTotals) -> u64);

/// celery-exporter's task counters.
const TASK_COUNTERS: [TaskCounter; 7] = [
    (
        "celery_task_received",
        "Sent when the worker receives a task.",
        |t| t.received,
    ),
    (
        "celery_task_started",
        "Sent just before the worker executes the task.",
        |t| t.started,
    ),
    (
        "celery_task_succeeded",
        "Sent if the task executed successfully.",
        |t| t.succeeded,
    ),
    (
        "celery_task_failed",
        "Sent if the execution of the task failed.",
        |t| t.failed,
    ),
    (
        "celery_task_rejected",
        "The task was rejected by the worker, possibly to be re-queued or moved to a dead letter queue.",
        |t| t.rejected,
    ),
    (
        "celery_task_revoked",
        "Sent if the task has been revoked.",
        |t| t.revoked,
    ),
    (
        "celery_task_retried",
        "Sent if the task failed, but will be retried in the future.",
        |t| t.retried,
    ),
];

/// Appends the fleet's families to `out`.
pub fn render(snapshot: &Snapshot, options: ExportOptions, format: Format, out: &mut String) {
    let now = snapshot.at.max(SystemTime::now());
    let shown: Vec<&Worker> = snapshot
        .workers
        .values()
        .map(|w| &**w)
        .filter(|w| {
            w.lifecycle == Lifecycle::Alive
                || now.duration_since(w.last_seen).unwrap_or_default() < options.gone_after
        })
        .collect();
    let celery: Vec<&Worker> = shown
        .iter()
        .copied()
        .filter(|w| w.backend() == Backend::Celery)
        .collect();

    // Workers that share a hostname (two nodes on one host) share its series, as in
    // celery-exporter: up if any is up, active tasks summed.
    let mut by_host: BTreeMap<&str, (bool, u64)> = BTreeMap::new();
    for w in &celery {
        let entry = by_host.entry(&w.hostname).or_default();
        entry.0 |= is_up(w);
        entry.1 += u64::from(w.active_tasks);
    }
    family(
        out,
        "celery_worker_up",
        "gauge",
        "Indicates if a worker has recently sent a heartbeat.",
    );
    for (host, (up, _)) in &by_host {
        sample(
            out,
            "celery_worker_up",
            &[("hostname", host)],
            u64::from(*up),
        );
    }
    family(
        out,
        "celery_worker_tasks_active",
        "gauge",
        "The number of tasks the worker is currently processing",
    );
    for (host, (_, active)) in &by_host {
        sample(
            out,
            "celery_worker_tasks_active",
            &[("hostname", host)],
            *active,
        );
    }

    let mut tasks: BTreeMap<(&str, &str), TaskTotals> = BTreeMap::new();
    for w in &celery {
        let Some(stats) = &w.task_stats else { continue };
        let host = if options.task_hostname {
            w.hostname.as_str()
        } else {
            ""
        };
        for (name, totals) in &stats.totals {
            tasks.entry((name, host)).or_default().merge(totals);
        }
    }
    // Each series' labels are escaped once and reused by its 7 counters and 17 histogram
    // lines (a large fleet has tens of thousands of series).
    let series: Vec<(String, &TaskTotals)> = tasks
        .iter()
        .map(|((name, host), totals)| {
            let mut labels = String::new();
            label_pairs(&mut labels, &task_labels(name, host, options));
            (labels, totals)
        })
        .collect();
    // Tasks published (producers' task-sent events), as celery-exporter counts them.
    let mut sent: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for ((name, host), n) in &snapshot.tasks_sent {
        let host: &str = if options.task_hostname { host } else { "" };
        *sent.entry((name, host)).or_default() += n;
    }
    family(
        out,
        match format {
            Format::Text => "celery_task_sent_total",
            Format::OpenMetrics => "celery_task_sent",
        },
        "counter",
        "Sent when a task message is published.",
    );
    for ((name, host), n) in &sent {
        let mut labels = String::new();
        label_pairs(&mut labels, &task_labels(name, host, options));
        raw_sample(out, "celery_task_sent_total", &labels, "", *n);
    }
    for (counter, help, field) in TASK_COUNTERS {
        let total = format!("{counter}_total");
        let family_name = match format {
            Format::Text => total.as_str(),
            Format::OpenMetrics => counter,
        };
        family(out, family_name, "counter", help);
        for (labels, totals) in &series {
            raw_sample(out, &total, labels, "", field(totals));
        }
    }
    family(
        out,
        "celery_task_runtime",
        "histogram",
        "Histogram of task runtime measurements.",
    );
    let bounds: Vec<String> = RUNTIME_BUCKETS
        .iter()
        .map(|le| format!(",le=\"{le:?}\""))
        .collect();
    for (labels, totals) in &series {
        let mut cumulative = 0;
        for (le, count) in bounds.iter().zip(totals.runtime_buckets) {
            cumulative += count;
            raw_sample(out, "celery_task_runtime_bucket", labels, le, cumulative);
        }
        let count = totals.runtime_count();
        raw_sample(
            out,
            "celery_task_runtime_bucket",
            labels,
            ",le=\"+Inf\"",
            count,
        );
        raw_sample(out, "celery_task_runtime_count", labels, "", count);
        out.push_str("celery_task_runtime_sum{");
        out.push_str(labels);
        let _ = writeln!(out, "}} {:?}", totals.runtime_sum);
    }

    let queues: Vec<_> = snapshot
        .queues
        .values()
        .filter(|q| q.backend == Backend::Celery)
        .collect();
    family(
        out,
        "celery_queue_length",
        "gauge",
        "The number of message in broker queue.",
    );
    for q in &queues {
        sample(
            out,
            "celery_queue_length",
            &[("queue_name", &q.name)],
            q.depth,
        );
    }
    family(
        out,
        "celery_active_consumer_count",
        "gauge",
        "The number of active consumer in broker queue.",
    );
    for q in &queues {
        sample(
            out,
            "celery_active_consumer_count",
            &[("queue_name", &q.name)],
            q.consumers.len() as u64,
        );
    }
    family(
        out,
        "celery_active_worker_count",
        "gauge",
        "The number of active workers in broker queue.",
    );
    for q in &queues {
        sample(
            out,
            "celery_active_worker_count",
            &[("queue_name", &q.name)],
            q.consumers.len() as u64,
        );
    }

    render_warden(snapshot, &shown, out);
}

/// warden's own per-worker and per-source families.
fn render_warden(snapshot: &Snapshot, shown: &[&Worker], out: &mut String) {
    family(
        out,
        "warden_worker_health_status",
        "gauge",
        "1 for the worker's current health status (healthy, warning, critical); absent until evaluated",
    );
    for w in shown {
        if let Some(health) = &w.health {
            let status = match health.status {
                HealthStatus::Healthy => "healthy",
                HealthStatus::Warning => "warning",
                HealthStatus::Critical => "critical",
            };
            sample(
                out,
                "warden_worker_health_status",
                &[
                    ("backend", backend_label(w.backend())),
                    ("worker", w.id()),
                    ("status", status),
                ],
                1,
            );
        }
    }
    family(
        out,
        "warden_worker_health_score",
        "gauge",
        "The worker's health score, from 0 (worst) to 1; absent until evaluated",
    );
    for w in shown {
        if let Some(health) = &w.health {
            sample_f64(
                out,
                "warden_worker_health_score",
                &[("backend", backend_label(w.backend())), ("worker", w.id())],
                health.score,
            );
        }
    }
    type Figure = fn(&warden_core::model::ResourceUsage) -> Option<f64>;
    let figures: [(&str, &str, Figure); 4] = [
        (
            "warden_worker_cpu_percent",
            "CPU used by the worker, in percent of one core, as its resource source last measured it",
            |r| r.cpu_percent,
        ),
        (
            "warden_worker_memory_bytes",
            "Memory used by the worker (working set), in bytes",
            |r| r.memory_bytes.map(|v| v as f64),
        ),
        (
            "warden_worker_memory_limit_bytes",
            "The memory limit the worker runs under, in bytes; absent when none",
            |r| r.memory_limit_bytes.map(|v| v as f64),
        ),
        (
            "warden_worker_memory_percent",
            "Memory used in percent of the limit; absent without a limit",
            |r| r.memory_percent(),
        ),
    ];
    for (name, help, figure) in figures {
        family(out, name, "gauge", help);
        for w in shown {
            if let Some(value) = w.resources.as_deref().and_then(figure) {
                sample_f64(
                    out,
                    name,
                    &[("backend", backend_label(w.backend())), ("worker", w.id())],
                    value,
                );
            }
        }
    }
    family(
        out,
        "warden_source_up",
        "gauge",
        "1 while a source of observations (broker, prometheus, ...) answers, else 0",
    );
    for (name, status) in &snapshot.sources {
        sample(
            out,
            "warden_source_up",
            &[("source", name)],
            u64::from(status.connected),
        );
    }
}

/// celery-exporter's notion of up: it heartbeats (or otherwise answers) in time.
fn is_up(w: &Worker) -> bool {
    w.lifecycle == Lifecycle::Alive && w.activity != Activity::Unresponsive
}

fn backend_label(backend: Backend) -> &'static str {
    match backend {
        Backend::Celery => "celery",
        Backend::RedisStreams => "redis_streams",
    }
}

fn task_labels<'a>(
    name: &'a str,
    host: &'a str,
    options: ExportOptions,
) -> Vec<(&'a str, &'a str)> {
    if options.task_hostname {
        vec![("name", name), ("hostname", host)]
    } else {
        vec![("name", name)]
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels(out: &mut String, name: &str, labels: &[(&str, &str)]) {
    out.push_str(name);
    if labels.is_empty() {
        return;
    }
    out.push('{');
    label_pairs(out, labels);
    out.push('}');
}

/// `key="value",...`, values escaped.
fn label_pairs(out: &mut String, labels: &[(&str, &str)]) {
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        if !value.contains(['\\', '"', '\n']) {
            out.push_str(value);
        } else {
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
        }
        out.push('"');
    }
}

/// A sample whose labels are already escaped (`labels` may be empty; `extra` starts with a
/// comma when given).
fn raw_sample(out: &mut String, name: &str, labels: &str, extra: &str, value: u64) {
    out.push_str(name);
    if !labels.is_empty() || !extra.is_empty() {
        out.push('{');
        out.push_str(labels);
        out.push_str(if labels.is_empty() {
            extra.trim_start_matches(',')
        } else {
            extra
        });
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn sample(out: &mut String, name: &str, label_set: &[(&str, &str)], value: u64) {
    labels(out, name, label_set);
    let _ = writeln!(out, " {value}");
}

fn sample_f64(out: &mut String, name: &str, label_set: &[(&str, &str)], value: f64) {
    labels(out, name, label_set);
    if value.is_finite() {
        let _ = writeln!(out, " {value:?}");
    } else {
        out.push_str(" NaN\n");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use warden_core::{
        model::{TaskStats, WorkerKey},
        perf::WindowReport,
        state::FleetState,
    };

    use super::*;

    fn worker(id: &str, succeeded: u64, now: SystemTime) -> Worker {
        let mut w = Worker::new(WorkerKey::new(Backend::Celery, "", id), now);
        w.task_stats = Some(Arc::new(TaskStats {
            overall: [WindowReport::default(); 3],
            by_task: Vec::new(),
            totals: vec![(
                Arc::from("t"),
                TaskTotals {
                    succeeded,
                    ..TaskTotals::default()
                },
            )],
        }));
        w
    }

    /// Two nodes on host h1, and one on h2 that is lost and was last heard of an hour ago.
    fn snapshot() -> Snapshot {
        let now = SystemTime::now();
        let mut snapshot = FleetState::with_limits(now, 1, 10).snapshot().clone();
        for w in [worker("a@h1", 2, now), worker("b@h1", 3, now)] {
            snapshot.workers.insert(w.key.clone(), Arc::new(w));
        }
        let mut gone = worker("c@h2", 7, now - Duration::from_secs(3600));
        gone.lifecycle = Lifecycle::Lost;
        snapshot.workers.insert(gone.key.clone(), Arc::new(gone));
        snapshot
    }

    fn text(options: ExportOptions) -> String {
        let mut out = String::new();
        render(&snapshot(), options, Format::Text, &mut out);
        out
    }

    #[test]
    fn tasks_sent_are_counted_per_name_and_producer_or_per_name() {
        let mut s = snapshot();
        s.tasks_sent
            .insert((Arc::from("t"), Arc::from("gen1@p1")), 4);
        s.tasks_sent
            .insert((Arc::from("t"), Arc::from("gen2@p2")), 6);
        let mut out = String::new();
        render(&s, ExportOptions::default(), Format::Text, &mut out);
        assert!(
            out.contains("# TYPE celery_task_sent_total counter\n"),
            "{out}"
        );
        assert!(
            out.contains("celery_task_sent_total{name=\"t\",hostname=\"gen1@p1\"} 4\n"),
            "{out}"
        );
        let mut summed = String::new();
        let options = ExportOptions {
            task_hostname: false,
            ..ExportOptions::default()
        };
        render(&s, options, Format::Text, &mut summed);
        assert!(
            summed.contains("celery_task_sent_total{name=\"t\"} 10\n"),
            "{summed}"
        );
    }

    #[test]
    fn nodes_of_one_host_share_its_series_and_gone_workers_are_left_out() {
        let out = text(ExportOptions::default());
        assert!(
            out.contains("celery_task_succeeded_total{name=\"t\",hostname=\"h1\"} 5\n"),
            "{out}"
        );
        assert!(
            out.contains("celery_worker_up{hostname=\"h1\"} 1\n"),
            "{out}"
        );
        assert!(
            !out.contains("h2"),
            "a worker gone for an hour is not exported: {out}"
        );
        let keep = text(ExportOptions {
            gone_after: Duration::from_secs(7200),
            ..ExportOptions::default()
        });
        assert!(
            keep.contains("celery_worker_up{hostname=\"h2\"} 0\n"),
            "{keep}"
        );
    }

    #[test]
    fn without_hostnames_task_series_are_summed_per_name() {
        let out = text(ExportOptions {
            task_hostname: false,
            gone_after: Duration::from_secs(7200),
        });
        assert!(
            out.contains("celery_task_succeeded_total{name=\"t\"} 12\n"),
            "{out}"
        );
        assert!(
            out.contains("celery_task_runtime_count{name=\"t\"} 0\n"),
            "{out}"
        );
        assert!(
            !out.contains("celery_task_failed_total{name=\"t\",hostname"),
            "{out}"
        );
        // Worker gauges keep their hostname: they are per worker by nature.
        assert!(
            out.contains("celery_worker_up{hostname=\"h1\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "m", &[("name", "a\"b\\c\nd")], 1);
        assert_eq!(out, "m{name=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
