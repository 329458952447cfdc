//! warden's own metrics, served as Prometheus/OpenMetrics text on the HTTP port, together
//! with the fleet's series ([`fleet`]).
pub mod fleet;

use std::sync::Arc;

use prometheus_client::{
    encoding::text::{encode, encode_eof, encode_registry},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

type Labels = Vec<(&'static str, &'static str)>;

/// Counters shared by every part of warden; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    rejected: Family<Labels, Counter>,
    inspect_rounds: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    workers: Gauge,
    broker_probes: Family<Labels, Counter>,
    broker_status_changes: Counter,
    broker_up: Gauge,
    /// The broker's own figures from `INFO`, by name (absent until first read).
    broker_info: Family<Labels, Gauge>,
    workers_refused: Counter,
    store_buffered_rows: Gauge,
    store_rows_dropped: Counter,
    store_writes: Family<Labels, Counter>,
    store_bytes: Gauge,
    store_rows: Family<Labels, Gauge>,
    alerts_firing: Family<Labels, Gauge>,
    notifications: Family<Labels, Counter>,
    health_cycle_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("warden");
        let rejected = Family::<Labels, Counter>::default();
        registry.register(
            "broker_messages_rejected",
            "Broker messages counted and skipped, by kind and reason (malformed, not JSON, ...)",
            rejected.clone(),
        );
        let inspect_rounds = Family::<Labels, Counter>::default();
        registry.register(
            "inspect_rounds",
            "Celery inspect broadcasts, by outcome",
            inspect_rounds.clone(),
        );
        let events = Family::<Labels, Counter>::default();
        registry.register(
            "celery_events",
            "Celery events applied to the fleet, by type",
            events.clone(),
        );
        let workers = Gauge::default();
        registry.register("workers", "Workers known to warden", workers.clone());
        let broker_probes = Family::<Labels, Counter>::default();
        registry.register(
            "broker_probes",
            "Broker readiness probes, by outcome (ok, or the kind of failure)",
            broker_probes.clone(),
        );
        let broker_status_changes = Counter::default();
        registry.register(
            "broker_status_changes",
            "Changes of broker status (up, down, or a new reason); each is logged once",
            broker_status_changes.clone(),
        );
        let broker_up = Gauge::default();
        registry.register(
            "broker_up",
            "1 while the broker answers the readiness probe, else 0",
            broker_up.clone(),
        );
        let broker_info = Family::<Labels, Gauge>::default();
        registry.register(
            "broker_info",
            "The broker's own figures from Redis INFO, by field: used_memory (bytes), \
             instantaneous_ops_per_sec, connected_clients",
            broker_info.clone(),
        );
        let workers_refused = Counter::default();
        registry.register(
            "workers_refused",
            "New workers refused because the known-worker cap (max_workers) was reached",
            workers_refused.clone(),
        );
        let store_buffered_rows = Gauge::default();
        registry.register(
            "store_buffered_rows",
            "History rows waiting for the store (it is down or behind)",
            store_buffered_rows.clone(),
        );
        let store_rows_dropped = Counter::default();
        registry.register(
            "store_rows_dropped",
            "History rows dropped because the outage buffer was full (oldest first)",
            store_rows_dropped.clone(),
        );
        let store_writes = Family::<Labels, Counter>::default();
        registry.register(
            "store_writes",
            "Batches written to the history store, by outcome",
            store_writes.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "store_bytes",
            "Size of the history store on disk, in bytes",
            store_bytes.clone(),
        );
        let store_rows = Family::<Labels, Gauge>::default();
        registry.register(
            "store_rows",
            "Rows in the history store, by table (estimated above 10,000 rows)",
            store_rows.clone(),
        );
        let alerts_firing = Family::<Labels, Gauge>::default();
        registry.register(
            "alerts_firing",
            "Alerts firing now, by severity (info, warning, critical)",
            alerts_firing.clone(),
        );
        let notifications = Family::<Labels, Counter>::default();
        registry.register(
            "notifications",
            "Notification deliveries that ended, by channel kind and outcome (sent, failed, \
             suppressed)",
            notifications.clone(),
        );
        let health_cycle_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "health_cycle_seconds",
            "How long the health engine's last cycle over every worker took",
            health_cycle_seconds.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                workers_refused,
                store_buffered_rows,
                store_rows_dropped,
                store_writes,
                store_bytes,
                store_rows,
                alerts_firing,
                notifications,
                health_cycle_seconds,
                registry,
                rejected,
                inspect_rounds,
                events,
                workers,
                broker_probes,
                broker_status_changes,
                broker_up,
                broker_info,
            }),
        }
    }

    /// A broker message that was counted and skipped.
    pub fn message_rejected(&self, kind: &'static str, reason: &'static str) {
        self.inner
            .rejected
            .get_or_create(&vec![("kind", kind), ("reason", reason)])
            .inc();
    }

    /// How many messages of `kind` were rejected for `reason` so far. Reading never
    /// creates a series (an empty one would be exported as a real 0).
    pub fn rejected_count(&self, kind: &'static str, reason: &'static str) -> u64 {
        read(
            &self.inner.rejected,
            &vec![("kind", kind), ("reason", reason)],
        )
    }

    /// How many inspect rounds ended with `outcome` so far.
    pub fn inspect_round_count(&self, outcome: &'static str) -> u64 {
        read(&self.inner.inspect_rounds, &vec![("outcome", outcome)])
    }

    pub fn inspect_round(&self, outcome: &'static str) {
        self.inner
            .inspect_rounds
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    pub fn event_applied(&self, event_type: &'static str) {
        self.inner
            .events
            .get_or_create(&vec![("type", event_type)])
            .inc();
    }

    pub fn set_workers(&self, count: usize) {
        self.inner.workers.set(count as i64);
    }

    /// One readiness probe of the broker: `outcome` is "ok" or the kind of failure.
    pub fn broker_probe(&self, outcome: &'static str) {
        self.inner
            .broker_probes
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    /// How many probes had `outcome` so far.
    pub fn broker_probe_count(&self, outcome: &'static str) -> u64 {
        read(&self.inner.broker_probes, &vec![("outcome", outcome)])
    }

    /// Workers refused so far because the known-worker cap was reached.
    pub fn workers_refused(&self) -> u64 {
        self.inner.workers_refused.get()
    }

    /// The broker status changed (and was logged).
    pub fn broker_status_changed(&self, up: bool) {
        self.inner.broker_status_changes.inc();
        self.inner.broker_up.set(i64::from(up));
    }

    /// Figures read from the broker's `INFO` (field name, value).
    pub fn broker_info(&self, fields: &[(&'static str, i64)]) {
        for (field, value) in fields {
            self.inner
                .broker_info
                .get_or_create(&vec![("field", *field)])
                .set(*value);
        }
    }

    /// Alerts firing now, by severity.
    pub fn alerts_firing(&self, info: i64, warning: i64, critical: i64) {
        for (severity, n) in [("info", info), ("warning", warning), ("critical", critical)] {
            self.inner
                .alerts_firing
                .get_or_create(&vec![("severity", severity)])
                .set(n);
        }
    }

    /// One delivery ended (`outcome`: sent, failed, suppressed).
    pub fn notification(&self, channel: &'static str, outcome: &'static str) {
        self.inner
            .notifications
            .get_or_create(&vec![("channel", channel), ("outcome", outcome)])
            .inc();
    }

    pub fn health_cycle(&self, took: std::time::Duration) {
        self.inner.health_cycle_seconds.set(took.as_secs_f64());
    }

    pub fn broker_status_change_count(&self) -> u64 {
        self.inner.broker_status_changes.get()
    }

    /// The whole exposition in `format`: warden's own families, then the fleet's (when a
    /// snapshot is given).
    pub fn exposition(
        &self,
        fleet: Option<(&warden_core::state::Snapshot, fleet::ExportOptions)>,
        format: fleet::Format,
    ) -> String {
        let mut own = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut own, &self.inner.registry);
        let mut out = match format {
            fleet::Format::OpenMetrics => own,
            fleet::Format::Text => openmetrics_to_text(&own),
        };
        if let Some((snapshot, options)) = fleet {
            fleet::render(snapshot, options, format, &mut out);
        }
        if format == fleet::Format::OpenMetrics {
            let _ = encode_eof(&mut out);
        }
        out
    }

    /// The OpenMetrics text exposition of warden's own families.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}

/// Rewrites prometheus-client's OpenMetrics text as Prometheus text 0.0.4: a counter
/// family is named with its `_total` suffix there, and `# UNIT` / `# EOF` do not exist.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 256);
    let mut pending_help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(help) = pending_help.replace(rest) {
                out.push_str("# HELP ");
                out.push_str(help);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            if let Some(help) = pending_help.take() {
                let text = help.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A counter's value, or 0 when the series does not exist (it is not created).
fn read(family: &Family<Labels, Counter>, labels: &Labels) -> u64 {
    family.get(labels).map_or(0, |c| c.get())
}

impl warden_core::ports::FleetGauges for Metrics {
    fn set_workers(&self, count: usize) {
        Metrics::set_workers(self, count);
    }

    fn set_workers_refused(&self, total: u64) {
        let counter = &self.inner.workers_refused;
        counter.inc_by(total.saturating_sub(counter.get()));
    }
}

impl warden_core::recorder::RecorderGauges for Metrics {
    fn buffered_rows(&self, rows: usize) {
        self.inner.store_buffered_rows.set(rows as i64);
    }

    fn rows_dropped(&self, rows: u64) {
        self.inner.store_rows_dropped.inc_by(rows);
    }

    fn write(&self, ok: bool, _rows: usize) {
        self.inner
            .store_writes
            .get_or_create(&vec![("outcome", if ok { "ok" } else { "error" })])
            .inc();
    }

    fn store_size(&self, size: &warden_core::history::StoreSize) {
        self.inner.store_bytes.set(size.bytes as i64);
        for (table, rows) in &size.rows {
            self.inner
                .store_rows
                .get_or_create(&vec![("table", *table)])
                .set(*rows as i64);
        }
    }
}

impl Metrics {
    /// Batches written to the store with `outcome` ("ok", "error") so far.
    pub fn store_write_count(&self, outcome: &'static str) -> u64 {
        read(&self.inner.store_writes, &vec![("outcome", outcome)])
    }

    pub fn store_rows_dropped(&self) -> u64 {
        self.inner.store_rows_dropped.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_count_creates_no_series() {
        let metrics = Metrics::new();
        assert_eq!(metrics.rejected_count("event", "never_seen"), 0);
        assert!(!metrics.encode().contains("never_seen"));
        metrics.message_rejected("event", "seen");
        assert_eq!(metrics.rejected_count("event", "seen"), 1);
        assert!(metrics.encode().contains("reason=\"seen\""));
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn text_format_names_counter_families_with_total_and_has_no_eof() {
        let metrics = Metrics::new();
        metrics.inspect_round("ok");
        let text = metrics.exposition(None, fleet::Format::Text);
        assert!(
            text.contains("# HELP warden_inspect_rounds_total Celery inspect broadcasts, by outcome.\n# TYPE warden_inspect_rounds_total counter\nwarden_inspect_rounds_total{outcome=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE warden_workers gauge\n"), "{text}");
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        let om = metrics.exposition(None, fleet::Format::OpenMetrics);
        assert!(
            om.contains("# TYPE warden_inspect_rounds counter\n"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"), "{om}");
    }
}
