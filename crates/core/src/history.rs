//! History: what is recorded (samples, events, known workers), what can be asked of it
//! (series over subjects, events), and the store port that keeps it. The store adapter
//! (`crates/store`) does the I/O and the grouping by step in SQL; the arithmetic that turns a
//! step's rows into the figure asked for lives here, once, so that both engines agree and it
//! is tested without a database.
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    model::{Activity, Backend, HealthStatus, Lifecycle, WorkerKey},
    perf::Counts,
    ports::{BoxFuture, PortError},
    sketch::Sketch,
};

/// One worker at one sampling tick: its state, and what its tasks did since the last tick.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSample {
    pub worker: WorkerKey,
    pub group: Arc<str>,
    pub at: SystemTime,
    /// The span the task figures cover (the sampling interval, or less for a new worker).
    pub interval: Duration,
    pub activity: Activity,
    pub lifecycle: Lifecycle,
    pub health: Option<HealthStatus>,
    pub active_tasks: u32,
    pub processed_total: u64,
    /// Pool slots, when known (utilisation = active / concurrency).
    pub concurrency: Option<u32>,
    /// Task outcomes within the interval.
    pub tasks: Counts,
    /// Runtimes and queue waits within the interval, mergeable.
    pub runtime: Sketch,
    pub queue_wait: Sketch,
    /// Resource figures when a source provided them; absent is NULL, never 0.
    pub cpu_percent: Option<f64>,
    pub memory_rss_bytes: Option<u64>,
}

/// A queue at one sampling tick.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSample {
    pub queue: String,
    pub at: SystemTime,
    pub depth: u64,
    pub unacked: u64,
    pub consumers: u32,
}

/// A worker group at one sampling tick.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSample {
    pub backend: Backend,
    pub group: Arc<str>,
    pub at: SystemTime,
    pub workers: u32,
    pub alive: u32,
}

/// Everything one sampling tick produced. Every sample of a tick carries the tick's `at`: a
/// group's and the fleet's series sum the workers' rows that share an `at`, so samples of one
/// tick stamped a few milliseconds apart would count as separate ticks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleBatch {
    pub workers: Vec<WorkerSample>,
    pub queues: Vec<QueueSample>,
    pub groups: Vec<GroupSample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Lifecycle,
    Scaling,
    Alert,
    Control,
    Health,
    Recovery,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Lifecycle => "lifecycle",
            EventKind::Scaling => "scaling",
            EventKind::Alert => "alert",
            EventKind::Control => "control",
            EventKind::Health => "health",
            EventKind::Recovery => "recovery",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            EventKind::Lifecycle,
            EventKind::Scaling,
            EventKind::Alert,
            EventKind::Control,
            EventKind::Health,
            EventKind::Recovery,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// How serious an event is; ordered, so that `min_severity` filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info = 1,
    Warning = 2,
    Critical = 3,
}

impl Severity {
    pub fn from_level(level: i64) -> Option<Self> {
        match level {
            1 => Some(Severity::Info),
            2 => Some(Severity::Warning),
            3 => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// A typed event attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    String(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Time(SystemTime),
    Duration(Duration),
}

/// Something that happened to the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEvent {
    pub at: SystemTime,
    pub kind: EventKind,
    pub severity: Severity,
    pub worker: Option<WorkerKey>,
    pub group: Option<String>,
    pub message: String,
    pub attributes: Vec<(String, AttrValue)>,
}

/// An event as stored: with the id the store gave it (increasing with insertion).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub id: i64,
    pub event: HistoryEvent,
}

/// The attribute naming what a control, recovery or alert event did (`restart`, `pause`,
/// `firing`, `resolved`, ...): the fleet summary counts events by it.
pub const ATTR_ACTION: &str = "action";
/// [`ATTR_ACTION`] of a restart (control or recovery event, one per target).
pub const ACTION_RESTART: &str = "restart";
/// [`ATTR_ACTION`] of an alert that fired.
pub const ACTION_FIRING: &str = "firing";

/// What the events of a range add up to (the fleet history summary's event figures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventTotals {
    /// Workers LOST (lifecycle events to `lost`).
    pub lost: u32,
    /// Workers that went OFFLINE after a goodbye.
    pub clean_stops: u32,
    pub scale_ups: u32,
    pub scale_downs: u32,
    /// Restarts, manual and automatic.
    pub restarts: u32,
    /// Of them, by auto-recovery.
    pub automatic_restarts: u32,
    /// Alerts fired, by severity: info, warning, critical.
    pub alerts_fired: [u32; 3],
}

impl EventTotals {
    /// Adds one event.
    pub fn add(&mut self, e: &HistoryEvent) {
        let attr = |name: &str| {
            e.attributes.iter().find_map(|(k, v)| match v {
                AttrValue::String(s) if k == name => Some(s.as_str()),
                _ => None,
            })
        };
        match e.kind {
            EventKind::Lifecycle => match attr("to") {
                Some("lost") => self.lost += 1,
                Some("offline") => self.clean_stops += 1,
                _ => {}
            },
            EventKind::Scaling => {
                let n = |name: &str| {
                    e.attributes.iter().find_map(|(k, v)| match v {
                        AttrValue::Int(i) if k == name => Some(*i),
                        _ => None,
                    })
                };
                match (n("before"), n("after")) {
                    (Some(b), Some(a)) if a > b => self.scale_ups += 1,
                    (Some(b), Some(a)) if a < b => self.scale_downs += 1,
                    _ => {}
                }
            }
            EventKind::Control if attr(ATTR_ACTION) == Some(ACTION_RESTART) => self.restarts += 1,
            EventKind::Recovery if attr(ATTR_ACTION) == Some(ACTION_RESTART) => {
                self.restarts += 1;
                self.automatic_restarts += 1;
            }
            EventKind::Alert if attr(ATTR_ACTION) == Some(ACTION_FIRING) => {
                let i = match e.severity {
                    Severity::Info => 0,
                    Severity::Warning => 1,
                    Severity::Critical => 2,
                };
                self.alerts_fired[i] += 1;
            }
            _ => {}
        }
    }
}

/// A worker the store remembers, so that a restarted warden knows its fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownWorker {
    pub key: WorkerKey,
    pub group: Arc<str>,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    pub lifecycle: Lifecycle,
}

/// What one write carries; written in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub samples: SampleBatch,
    pub events: Vec<HistoryEvent>,
    /// Upserted by key.
    pub workers: Vec<KnownWorker>,
    /// Keys to forget (the worker row only; its history stays until retention).
    pub forgotten: Vec<WorkerKey>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.samples == SampleBatch::default()
            && self.events.is_empty()
            && self.workers.is_empty()
            && self.forgotten.is_empty()
    }

    /// Rows it holds (for buffer accounting).
    pub fn rows(&self) -> usize {
        self.samples.workers.len()
            + self.samples.queues.len()
            + self.samples.groups.len()
            + self.events.len()
            + self.workers.len()
            + self.forgotten.len()
    }
}

/// What a series is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Worker(WorkerKey),
    /// A group id.
    Group(String),
    Queue(String),
    Fleet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    Worker,
    Group,
    Queue,
    Fleet,
}

impl Subject {
    pub fn kind(&self) -> SubjectKind {
        match self {
            Subject::Worker(_) => SubjectKind::Worker,
            Subject::Group(_) => SubjectKind::Group,
            Subject::Queue(_) => SubjectKind::Queue,
            Subject::Fleet => SubjectKind::Fleet,
        }
    }
}

/// How a step's values are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregation {
    Avg,
    Min,
    Max,
    Sum,
    Last,
    Count,
    P50,
    P90,
    P95,
    P99,
}

/// Where a metric's values come from in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A worker-sample column read as is (summed over workers for a group or the fleet).
    WorkerGauge(&'static str),
    /// Tasks finished (succeeded + failed) per minute of the interval.
    Throughput,
    /// failed / (succeeded + failed) over the step.
    ErrorRate,
    /// An interval count column (succeeded, failed, ...), summed.
    WorkerCount(&'static str),
    /// active / concurrency.
    Utilisation,
    /// A distribution column (runtime, queue_wait): sketches merged per step.
    Distribution(&'static str),
    /// 1 while alive, else 0 (summed over workers: alive workers).
    Alive,
    /// A queue-sample column.
    QueueGauge(&'static str),
}

/// One metric of the catalog.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricDef {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    pub source: Source,
    pub subjects: &'static [SubjectKind],
    pub aggregations: &'static [Aggregation],
    pub default_aggregation: Aggregation,
}

const WORKERS_AND_UP: &[SubjectKind] =
    &[SubjectKind::Worker, SubjectKind::Group, SubjectKind::Fleet];
const GAUGE: &[Aggregation] = &[
    Aggregation::Avg,
    Aggregation::Min,
    Aggregation::Max,
    Aggregation::Last,
    Aggregation::Sum,
    Aggregation::Count,
];
const RATE: &[Aggregation] = &[Aggregation::Avg, Aggregation::Min, Aggregation::Max];
const COUNT: &[Aggregation] = &[Aggregation::Sum, Aggregation::Avg, Aggregation::Max];
const DISTRIBUTION: &[Aggregation] = &[
    Aggregation::P50,
    Aggregation::P90,
    Aggregation::P95,
    Aggregation::P99,
    Aggregation::Avg,
    Aggregation::Min,
    Aggregation::Max,
    Aggregation::Count,
];

/// Every metric history can answer for.
pub const CATALOG: &[MetricDef] = &[
    MetricDef {
        name: "throughput",
        unit: "tasks/min",
        description: "Tasks finished (succeeded + failed) per minute: finished in the step over the sampled minutes of the step (AVG); MIN/MAX of the per-sample rates.",
        source: Source::Throughput,
        subjects: WORKERS_AND_UP,
        aggregations: RATE,
        default_aggregation: Aggregation::Avg,
    },
    MetricDef {
        name: "succeeded",
        unit: "tasks",
        description: "Tasks that succeeded within the step (SUM).",
        source: Source::WorkerCount("succeeded"),
        subjects: WORKERS_AND_UP,
        aggregations: COUNT,
        default_aggregation: Aggregation::Sum,
    },
    MetricDef {
        name: "failed",
        unit: "tasks",
        description: "Tasks that failed within the step (SUM).",
        source: Source::WorkerCount("failed"),
        subjects: WORKERS_AND_UP,
        aggregations: COUNT,
        default_aggregation: Aggregation::Sum,
    },
    MetricDef {
        name: "error_rate",
        unit: "ratio",
        description: "failed / (succeeded + failed) over the step; absent when nothing finished.",
        source: Source::ErrorRate,
        subjects: WORKERS_AND_UP,
        aggregations: &[Aggregation::Avg],
        default_aggregation: Aggregation::Avg,
    },
    MetricDef {
        name: "runtime",
        unit: "seconds",
        description: "Task runtime: percentiles of the step's merged distribution (never averaged percentiles), mean, min, max, count.",
        source: Source::Distribution("runtime"),
        subjects: WORKERS_AND_UP,
        aggregations: DISTRIBUTION,
        default_aggregation: Aggregation::P50,
    },
    MetricDef {
        name: "queue_wait",
        unit: "seconds",
        description: "Time from received to started, as for runtime.",
        source: Source::Distribution("queue_wait"),
        subjects: WORKERS_AND_UP,
        aggregations: DISTRIBUTION,
        default_aggregation: Aggregation::P50,
    },
    MetricDef {
        name: "active_tasks",
        unit: "tasks",
        description: "Tasks running at the sampling ticks (summed over workers for a group or the fleet).",
        source: Source::WorkerGauge("active_tasks"),
        subjects: WORKERS_AND_UP,
        aggregations: GAUGE,
        default_aggregation: Aggregation::Avg,
    },
    MetricDef {
        name: "processed_total",
        unit: "tasks",
        description: "Tasks the worker completed since it started, at the sampling ticks.",
        source: Source::WorkerGauge("processed_total"),
        subjects: &[SubjectKind::Worker],
        aggregations: GAUGE,
        default_aggregation: Aggregation::Last,
    },
    MetricDef {
        name: "utilisation",
        unit: "ratio",
        description: "Active tasks / pool concurrency at the sampling ticks (for a group or the fleet: summed active over summed concurrency).",
        source: Source::Utilisation,
        subjects: WORKERS_AND_UP,
        aggregations: &[
            Aggregation::Avg,
            Aggregation::Min,
            Aggregation::Max,
            Aggregation::Last,
        ],
        default_aggregation: Aggregation::Avg,
    },
    MetricDef {
        name: "alive_workers",
        unit: "workers",
        description: "Workers ALIVE at the sampling ticks (1 or 0 for one worker).",
        source: Source::Alive,
        subjects: WORKERS_AND_UP,
        aggregations: GAUGE,
        default_aggregation: Aggregation::Avg,
    },
    MetricDef {
        name: "cpu_percent",
        unit: "percent",
        description: "CPU use when a metric source provides it; absent otherwise.",
        source: Source::WorkerGauge("cpu_percent"),
        subjects: WORKERS_AND_UP,
        aggregations: GAUGE,
        default_aggregation: Aggregation::Avg,
    },
    MetricDef {
        name: "memory_rss_bytes",
        unit: "bytes",
        description: "Resident memory when a metric source provides it; absent otherwise.",
        source: Source::WorkerGauge("memory_rss_bytes"),
        subjects: WORKERS_AND_UP,
        aggregations: GAUGE,
        default_aggregation: Aggregation::Avg,
    },
    MetricDef {
        name: "queue_depth",
        unit: "messages",
        description: "Messages waiting in the queue at the sampling ticks (priority sub-queues included).",
        source: Source::QueueGauge("depth"),
        subjects: &[SubjectKind::Queue],
        aggregations: GAUGE,
        default_aggregation: Aggregation::Avg,
    },
    MetricDef {
        name: "queue_unacked",
        unit: "messages",
        description: "Messages delivered but not acknowledged at the sampling ticks.",
        source: Source::QueueGauge("unacked"),
        subjects: &[SubjectKind::Queue],
        aggregations: GAUGE,
        default_aggregation: Aggregation::Avg,
    },
    MetricDef {
        name: "queue_consumers",
        unit: "workers",
        description: "Alive workers consuming the queue at the sampling ticks.",
        source: Source::QueueGauge("consumers"),
        subjects: &[SubjectKind::Queue],
        aggregations: GAUGE,
        default_aggregation: Aggregation::Avg,
    },
];

pub fn metric(name: &str) -> Option<&'static MetricDef> {
    CATALOG.iter().find(|m| m.name == name)
}

/// One subject and metric over a range, grouped by `step` (buckets start at multiples of the
/// step since the Unix epoch, so that the same query gives the same buckets every time).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesQuery {
    pub subject: Subject,
    pub metric: &'static MetricDef,
    pub start: SystemTime,
    pub end: SystemTime,
    pub step: Duration,
}

/// What the store computes per step (in SQL), from which any aggregation is derived here.
/// For a group or the fleet, values are first summed over workers per sampling tick, so a
/// "tick" is one row of the summed series.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Start of the step.
    pub start: SystemTime,
    /// Ticks with a value (NULLs excluded: absent is not 0).
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The value at the latest tick of the step.
    pub last: f64,
    /// For rates and ratios: the numerator and denominator summed over the step
    /// (Throughput: finished and sampled minutes; ErrorRate: failed and finished;
    /// Utilisation: active and concurrency).
    pub numerator: f64,
    pub denominator: f64,
    /// For distributions: the step's sketches merged.
    pub distribution: Option<Sketch>,
}

impl Default for Bucket {
    fn default() -> Self {
        Self {
            start: SystemTime::UNIX_EPOCH,
            count: 0,
            sum: 0.0,
            min: 0.0,
            max: 0.0,
            last: 0.0,
            numerator: 0.0,
            denominator: 0.0,
            distribution: None,
        }
    }
}

impl Bucket {
    /// Folds a later step into this one (for a summary over a whole range).
    pub fn merge(&mut self, later: &Bucket) {
        if later.count > 0 {
            if self.count == 0 {
                self.min = later.min;
                self.max = later.max;
            } else {
                self.min = self.min.min(later.min);
                self.max = self.max.max(later.max);
            }
            self.last = later.last;
        }
        self.count += later.count;
        self.sum += later.sum;
        self.numerator += later.numerator;
        self.denominator += later.denominator;
        if let Some(d) = &later.distribution {
            match &mut self.distribution {
                Some(mine) => mine.merge(d),
                None => self.distribution = Some(d.clone()),
            }
        }
    }

    /// The figure `aggregation` asks for; `None` when the step holds nothing to say it.
    pub fn value(&self, source: Source, aggregation: Aggregation) -> Option<f64> {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        match source {
            Source::Distribution(_) => {
                let d = self.distribution.as_ref().filter(|d| d.count() > 0)?;
                match aggregation {
                    Aggregation::P50 => secs(d.quantile(0.50)),
                    Aggregation::P90 => secs(d.quantile(0.90)),
                    Aggregation::P95 => secs(d.quantile(0.95)),
                    Aggregation::P99 => secs(d.quantile(0.99)),
                    Aggregation::Avg => secs(d.mean()),
                    Aggregation::Min => secs(d.min()),
                    Aggregation::Max => secs(d.max()),
                    Aggregation::Count => Some(d.count() as f64),
                    Aggregation::Sum | Aggregation::Last => None,
                }
            }
            Source::Throughput | Source::ErrorRate | Source::Utilisation
                if aggregation == Aggregation::Avg =>
            {
                (self.denominator > 0.0).then(|| self.numerator / self.denominator)
            }
            _ if self.count == 0 => None,
            _ => match aggregation {
                Aggregation::Avg => Some(self.sum / self.count as f64),
                Aggregation::Min => Some(self.min),
                Aggregation::Max => Some(self.max),
                Aggregation::Sum => Some(self.sum),
                Aggregation::Last => Some(self.last),
                Aggregation::Count => Some(self.count as f64),
                _ => None,
            },
        }
    }
}

/// Which events to list, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    pub worker: Option<WorkerKey>,
    pub group: Option<String>,
    pub kinds: Vec<EventKind>,
    pub min_severity: Option<Severity>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// Only events with an id below this (keyset paging, newest first).
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// How long each kind of row is kept, with optional per-table overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// Samples (worker, queue and group samples, and the per-tick totals).
    pub samples: Duration,
    pub events: Duration,
    /// Per-table overrides, for the tables in [`RETAINED_TABLES`]; a table not named here
    /// follows `samples` or `events` and has no row cap.
    pub tables: Vec<TableRetention>,
}

/// The tables whose retention may be set one by one. (`tick_totals` is derived from the
/// worker samples and follows their time bound.)
pub const RETAINED_TABLES: [&str; 4] =
    ["worker_samples", "queue_samples", "group_samples", "events"];

/// One table's retention, overriding the kind's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRetention {
    /// One of [`RETAINED_TABLES`].
    pub table: String,
    /// Rows older than this are deleted (instead of the kind's bound).
    pub keep: Option<Duration>,
    /// At most this many rows are kept: beyond it the oldest are deleted, whole sampling ticks
    /// at a time (rows sharing the oldest kept time go together), so the table may hold fewer.
    pub max_rows: Option<u64>,
}

impl Retention {
    /// How long `table`'s rows are kept.
    pub fn keep(&self, table: &str) -> Duration {
        let kind = if table == "events" {
            self.events
        } else {
            self.samples
        };
        self.override_of(table).and_then(|t| t.keep).unwrap_or(kind)
    }

    /// The most rows `table` may hold, if capped.
    pub fn max_rows(&self, table: &str) -> Option<u64> {
        self.override_of(table).and_then(|t| t.max_rows)
    }

    fn override_of(&self, table: &str) -> Option<&TableRetention> {
        self.tables.iter().rev().find(|t| t.table == table)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            samples: Duration::from_secs(7 * 86_400),
            events: Duration::from_secs(30 * 86_400),
            tables: Vec::new(),
        }
    }
}

/// Rows deleted by a sweep, per table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepReport {
    pub deleted: Vec<(&'static str, u64)>,
}

/// Rows per table and bytes on disk. A store may estimate the rows of large tables (the
/// history store counts up to 10,000 rows exactly and estimates above, so that reading the
/// size stays cheap).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreSize {
    pub bytes: u64,
    pub rows: Vec<(&'static str, u64)>,
}

/// Keeps history. Implemented by `crates/store` (SQLite, Postgres).
pub trait HistoryStore: Send + Sync + 'static {
    /// "sqlite" or "postgres", for logs and errors.
    fn engine(&self) -> &'static str;
    /// Writes a batch in one transaction: all of it or none.
    fn write<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<(), PortError>>;
    /// One series, grouped by step in the store; steps with no row are left out.
    fn buckets<'a>(
        &'a self,
        query: &'a SeriesQuery,
    ) -> BoxFuture<'a, Result<Vec<Bucket>, PortError>>;
    fn events<'a>(
        &'a self,
        query: &'a EventQuery,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, PortError>>;
    fn known_workers<'a>(&'a self) -> BoxFuture<'a, Result<Vec<KnownWorker>, PortError>>;
    /// The oldest sample time held, if any.
    fn oldest<'a>(&'a self) -> BoxFuture<'a, Result<Option<SystemTime>, PortError>>;
    /// Deletes what is older than the retention allows, in bounded batches.
    fn sweep<'a>(
        &'a self,
        now: SystemTime,
        retention: Retention,
    ) -> BoxFuture<'a, Result<SweepReport, PortError>>;
    fn size<'a>(&'a self) -> BoxFuture<'a, Result<StoreSize, PortError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_totals_count_each_kind_by_its_attributes() {
        let e = |kind, severity, attributes: Vec<(&str, AttrValue)>| HistoryEvent {
            at: SystemTime::UNIX_EPOCH,
            kind,
            severity,
            worker: None,
            group: None,
            message: String::new(),
            attributes: attributes
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        };
        let s = |v: &str| AttrValue::String(v.into());
        let events = [
            e(
                EventKind::Lifecycle,
                Severity::Critical,
                vec![("to", s("lost"))],
            ),
            e(
                EventKind::Lifecycle,
                Severity::Info,
                vec![("to", s("offline"))],
            ),
            e(
                EventKind::Lifecycle,
                Severity::Info,
                vec![("to", s("offline"))],
            ),
            e(
                EventKind::Lifecycle,
                Severity::Info,
                vec![("to", s("alive"))],
            ),
            e(
                EventKind::Scaling,
                Severity::Info,
                vec![("before", AttrValue::Int(1)), ("after", AttrValue::Int(3))],
            ),
            e(
                EventKind::Scaling,
                Severity::Warning,
                vec![("before", AttrValue::Int(3)), ("after", AttrValue::Int(0))],
            ),
            e(
                EventKind::Control,
                Severity::Info,
                vec![(ATTR_ACTION, s(ACTION_RESTART))],
            ),
            e(
                EventKind::Control,
                Severity::Info,
                vec![(ATTR_ACTION, s("pause"))],
            ),
            e(
                EventKind::Recovery,
                Severity::Warning,
                vec![(ATTR_ACTION, s(ACTION_RESTART))],
            ),
            e(
                EventKind::Alert,
                Severity::Critical,
                vec![(ATTR_ACTION, s(ACTION_FIRING))],
            ),
            e(
                EventKind::Alert,
                Severity::Critical,
                vec![(ATTR_ACTION, s("resolved"))],
            ),
            e(
                EventKind::Alert,
                Severity::Warning,
                vec![(ATTR_ACTION, s(ACTION_FIRING))],
            ),
        ];
        let mut totals = EventTotals::default();
        for event in &events {
            totals.add(event);
        }
        assert_eq!(
            totals,
            EventTotals {
                lost: 1,
                clean_stops: 2,
                scale_ups: 1,
                scale_downs: 1,
                restarts: 2,
                automatic_restarts: 1,
                alerts_fired: [0, 1, 1],
            }
        );
    }

    #[test]
    fn rates_and_ratios_come_from_summed_parts_not_averaged_rates() {
        // Two samples: 30 finished in 0.5 min, then 0 in 0.5 min: 30 per minute over the step.
        let b = Bucket {
            count: 2,
            sum: 60.0,
            min: 0.0,
            max: 60.0,
            numerator: 30.0,
            denominator: 1.0,
            ..Bucket::default()
        };
        assert_eq!(b.value(Source::Throughput, Aggregation::Avg), Some(30.0));
        assert_eq!(b.value(Source::Throughput, Aggregation::Max), Some(60.0));
        let empty = Bucket::default();
        assert_eq!(empty.value(Source::ErrorRate, Aggregation::Avg), None);
        assert_eq!(
            empty.value(Source::WorkerGauge("cpu_percent"), Aggregation::Avg),
            None
        );
    }

    #[test]
    fn percentiles_come_from_the_merged_distribution() {
        let (mut a, mut b) = (Sketch::default(), Sketch::default());
        for ms in 1..=90 {
            a.record(Duration::from_millis(ms));
        }
        for ms in 1000..1010 {
            b.record(Duration::from_millis(ms));
        }
        let mut merged = a.clone();
        merged.merge(&b);
        let bucket = Bucket {
            distribution: Some(merged),
            ..Bucket::default()
        };
        let p95 = bucket
            .value(Source::Distribution("runtime"), Aggregation::P95)
            .unwrap();
        // The true p95 of the 100 values is ~1.004 s; averaging the two parts' p95 would give
        // ~0.55 s.
        assert!((p95 - 1.004).abs() / 1.004 < 0.02, "{p95}");
        assert_eq!(
            bucket.value(Source::Distribution("runtime"), Aggregation::Count),
            Some(100.0)
        );
    }

    #[test]
    fn the_catalog_names_are_unique_and_defaults_are_offered() {
        for (i, m) in CATALOG.iter().enumerate() {
            assert!(
                CATALOG[i + 1..].iter().all(|o| o.name != m.name),
                "{}",
                m.name
            );
            assert!(
                m.aggregations.contains(&m.default_aggregation),
                "{}",
                m.name
            );
        }
        assert!(metric("throughput").is_some());
    }
}
