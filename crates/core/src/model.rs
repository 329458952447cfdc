//! What warden knows about a worker, in backend-neutral terms.
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

pub use super::perf::{DistributionReport, TaskObservation, TaskOutcome, WindowReport};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    #[default]
    Celery,
    RedisStreams,
}

impl Backend {
    /// The backend's segment in a worker's resource name.
    pub fn slug(self) -> &'static str {
        match self {
            Backend::Celery => "celery",
            Backend::RedisStreams => "redis-streams",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Self> {
        match slug {
            "celery" => Some(Backend::Celery),
            "redis-streams" => Some(Backend::RedisStreams),
            _ => None,
        }
    }
}

/// A worker's identity, unique across backends: backend + scope + id. The scope is where the
/// backend's ids are unique: for Celery the broker (node names are unique per broker), for
/// Redis Streams the stream and consumer group (a consumer name is unique only there).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerKey {
    pub backend: Backend,
    pub scope: Arc<str>,
    pub id: Arc<str>,
}

impl WorkerKey {
    pub fn new(backend: Backend, scope: impl Into<Arc<str>>, id: impl Into<Arc<str>>) -> Self {
        Self {
            backend,
            scope: scope.into(),
            id: id.into(),
        }
    }

    /// `workers/{backend}/{scope}/{id}`, scope and id percent-encoded so that neither holds
    /// a `/`: the one name the API exposes.
    pub fn resource_name(&self) -> String {
        format!(
            "workers/{}/{}/{}",
            self.backend.slug(),
            percent_encode(&self.scope),
            percent_encode(&self.id)
        )
    }

    /// Parses a resource name; `None` when it is not one.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("workers/")?;
        let mut parts = rest.split('/');
        let backend = Backend::from_slug(parts.next()?)?;
        let scope = percent_decode(parts.next()?)?;
        let id = percent_decode(parts.next()?)?;
        if parts.next().is_some() || id.is_empty() {
            return None;
        }
        Some(Self::new(backend, scope, id))
    }
}

impl std::fmt::Display for WorkerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.resource_name())
    }
}

/// Escapes `%`, `/` and `:` (and control characters) so that a segment can sit in a name.
pub fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for c in segment.chars() {
        match c {
            '%' | '/' | ':' | '\0'..='\x1f' | '\x7f' => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The inverse of [`percent_encode`]; `None` for a malformed escape.
pub fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A timestamped set of metrics for one worker, from one source. A metric no source provided
/// is absent from `metrics`, never 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub worker: WorkerKey,
    pub at: SystemTime,
    /// Where it came from ("celery", "prometheus", "proc", ...).
    pub source: &'static str,
    pub metrics: Vec<(&'static str, f64)>,
}

/// What a worker is doing now (see DESIGN.md's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Activity {
    Active,
    Idle,
    Unresponsive,
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lifecycle {
    Alive,
    Offline,
    Lost,
    /// Remembered from history across a restart, and not heard from since: neither alive nor
    /// lost until there is evidence (or a critical period of silence).
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    /// "prefork", "threads", "solo", ...
    pub implementation: String,
    pub max_concurrency: u32,
    pub processes: Vec<u32>,
    /// 0 = unlimited.
    pub max_tasks_per_child: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumedQueue {
    pub name: String,
    pub exchange: String,
    pub routing_key: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActiveTask {
    pub id: String,
    pub name: String,
    pub started: Option<SystemTime>,
    pub worker_pid: u32,
    pub args: String,
    pub kwargs: String,
    pub acknowledged: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Software {
    pub ident: String,
    pub version: String,
    pub system: String,
}

/// One worker as last observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    pub key: WorkerKey,
    /// The worker group: what is scaled and alerted on as one (for plain Celery, the nodes
    /// that consume the same queues).
    pub group: Arc<str>,
    /// Labels for selection (`host`, `pool`, ...; runtimes add their own).
    pub labels: Arc<BTreeMap<String, String>>,
    pub hostname: String,
    pub first_seen: SystemTime,
    /// Any evidence of life: a heartbeat, an event or an inspect reply.
    pub last_seen: SystemTime,
    pub last_heartbeat: Option<SystemTime>,
    pub heartbeat_interval: Option<Duration>,
    /// Derived from the reported uptime, so that uptime can be computed at any time.
    pub started_at: Option<SystemTime>,
    /// It did not answer the most recent ping addressed to it (and was not heard from since).
    pub missed_ping: bool,
    /// It said goodbye (Celery `worker-offline`) at this time.
    pub offline_at: Option<SystemTime>,
    /// Remembered from history at this boot time and not heard from since. Silence counts
    /// from then (not from `last_seen`, which says when it was last heard of).
    pub remembered: Option<SystemTime>,
    pub activity: Activity,
    pub lifecycle: Lifecycle,
    /// The verdict of the health engine; `None` until something evaluates it (absent is not
    /// healthy).
    pub health: Option<Health>,
    pub pid: Option<u32>,
    pub active_tasks: u32,
    pub processed_total: u64,
    pub processed_by_task: BTreeMap<String, u64>,
    pub pool: Option<Pool>,
    pub queues: Vec<ConsumedQueue>,
    /// Shared between workers that register the same tasks (most of a fleet runs one app).
    pub registered: Arc<Vec<String>>,
    pub active: Vec<ActiveTask>,
    pub load_average: Option<[f64; 3]>,
    pub software: Option<Software>,
    pub prefetch_count: Option<u32>,
    /// Task performance, refreshed from the event stream about once a second.
    pub task_stats: Option<Arc<TaskStats>>,
    /// Its liveness lease (e.g. a heartbeat key with a TTL) expired without a goodbye at this
    /// time: LOST, decided at that transition and kept until it is heard from again.
    pub lost_at: Option<SystemTime>,
    /// Where it sits in a Redis Streams consumer group, as last polled (Streams workers only).
    pub stream: Option<StreamConsumer>,
    /// CPU and memory as a resource source last measured them (absent when none did).
    pub resources: Option<Arc<ResourceUsage>>,
    /// The last `rusage` CPU reading from `stats` (when, CPU seconds), from which the next
    /// gives a CPU figure when no other source measures the worker.
    pub rusage: Option<(SystemTime, f64)>,
}

/// The source name of CPU figures computed from a Celery worker's own `rusage` report (main
/// process only): used only when no other source measures the worker.
pub const RUSAGE_SOURCE: &str = "celery";

/// The metric names a resource [`Sample`] carries.
pub mod metric {
    /// CPU used, in percent of one core.
    pub const CPU_PERCENT: &str = "cpu_percent";
    /// Memory in use (working set or resident), in bytes.
    pub const MEMORY_BYTES: &str = "memory_bytes";
    /// The memory limit the worker runs under, in bytes.
    pub const MEMORY_LIMIT_BYTES: &str = "memory_limit_bytes";
    /// GPU utilisation, in percent.
    pub const GPU_UTIL_PERCENT: &str = "gpu_util_percent";
    /// GPU memory in use, in percent of the GPU's memory.
    pub const GPU_MEMORY_PERCENT: &str = "gpu_memory_percent";
    /// Disk space in use on the worker's data volume, in percent.
    pub const DISK_PERCENT: &str = "disk_percent";
}

/// A worker's resource usage as one source last measured it. A figure the source did not
/// give is `None`, never 0.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceUsage {
    /// The source's name ("prometheus", ...): its status says whether this is stale.
    pub source: &'static str,
    pub sampled_at: SystemTime,
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub gpu_util_percent: Option<f64>,
    pub gpu_memory_percent: Option<f64>,
    pub disk_percent: Option<f64>,
}

impl ResourceUsage {
    /// The usage a sample describes.
    pub fn from_sample(sample: &Sample) -> Self {
        let get = |name: &str| {
            sample
                .metrics
                .iter()
                .find(|(n, v)| *n == name && v.is_finite())
                .map(|(_, v)| *v)
        };
        Self {
            source: sample.source,
            sampled_at: sample.at,
            cpu_percent: get(metric::CPU_PERCENT).map(|v| v.max(0.0)),
            memory_bytes: get(metric::MEMORY_BYTES).map(|v| v.max(0.0) as u64),
            memory_limit_bytes: get(metric::MEMORY_LIMIT_BYTES)
                .filter(|v| *v > 0.0)
                .map(|v| v as u64),
            gpu_util_percent: get(metric::GPU_UTIL_PERCENT).map(|v| v.max(0.0)),
            gpu_memory_percent: get(metric::GPU_MEMORY_PERCENT).map(|v| v.max(0.0)),
            disk_percent: get(metric::DISK_PERCENT).map(|v| v.max(0.0)),
        }
    }

    /// Memory in percent of the limit, when both are known.
    pub fn memory_percent(&self) -> Option<f64> {
        let (used, limit) = (self.memory_bytes?, self.memory_limit_bytes?);
        (limit > 0).then(|| used as f64 * 100.0 / limit as f64)
    }
}

/// A worker's place in a Redis Streams consumer group, as last polled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamConsumer {
    /// The stream, unencoded.
    pub stream: String,
    /// The consumer group, unencoded.
    pub group: String,
    /// Entries delivered to this consumer and not acknowledged.
    pub pending: u64,
    /// Time since it last interacted with the group (XINFO CONSUMERS `idle`).
    pub idle: Duration,
    /// The group's last delivered entry id; empty when none.
    pub last_delivered_id: String,
}

/// What a lease-based backend (a heartbeat key with a TTL, a shutdown marker) says about one
/// worker in one poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseReport {
    pub name: String,
    /// The worker group it belongs to.
    pub group: String,
    /// The lease, while it exists; `None` once it expired or was removed (or never existed).
    pub lease: Option<Lease>,
    /// A goodbye marker exists (a clean stop), read with the lease.
    pub goodbye: bool,
    /// Time since it last interacted with the backend, when the backend tells (liveness of
    /// workers that hold no lease).
    pub idle: Option<Duration>,
    pub queues: Vec<ConsumedQueue>,
    pub stream: Option<StreamConsumer>,
}

/// The content of a liveness lease (all optional but its existence).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lease {
    pub started_at: Option<SystemTime>,
    /// When the worker says it renewed the lease. A lease renewed longer ago than the
    /// critical threshold is stale: it counts as gone (a key left without a TTL).
    pub renewed_at: Option<SystemTime>,
    /// How often the worker renews it.
    pub period: Option<Duration>,
    /// Most tasks at once.
    pub capacity: Option<u32>,
    pub pid: Option<u32>,
    pub host: Option<String>,
    pub version: Option<String>,
    /// The worker's own cumulative task counters, when it reports them.
    pub tasks: Option<TaskCounters>,
}

/// Cumulative task counters a lease-based worker reports in its heartbeat (since it started):
/// warden counts their increase between heartbeats as task outcomes, as it counts Celery task
/// events. A counter that went down means the worker restarted: it is counted from 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskCounters {
    /// Tasks finished (succeeded or failed).
    pub processed: u64,
    /// Of them, the failed ones.
    pub failed: u64,
    pub latency: Option<LatencyHistogram>,
}

/// A fixed-bucket histogram of task latencies: `counts[i]` observations in
/// `(bounds[i-1], bounds[i]]` (not cumulative), `over` above the last bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Upper bounds, increasing.
    pub bounds: Vec<Duration>,
    pub counts: Vec<u64>,
    pub over: u64,
}

/// One poll of a lease-based backend: every worker of `scope`s it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRound {
    pub backend: Backend,
    /// (scope, reports of that scope).
    pub scopes: Vec<(Arc<str>, Vec<LeaseReport>)>,
}

/// Task performance of a worker, as last summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStats {
    /// 1 min, 5 min, 1 h.
    pub overall: [WindowReport; 3],
    /// The same per task name, sorted by name.
    pub by_task: Vec<(Arc<str>, [WindowReport; 3])>,
    /// Cumulative counts by task name since warden first saw the worker, sorted by name.
    pub totals: Vec<(Arc<str>, crate::perf::TaskTotals)>,
}

/// The group of a Celery worker that has not reported its queues yet.
pub const UNGROUPED: &str = "(unknown)";

impl Worker {
    pub fn new(key: WorkerKey, now: SystemTime) -> Self {
        let hostname = key
            .id
            .split_once('@')
            .map_or(&*key.id, |(_, h)| h)
            .to_string();
        let mut labels = BTreeMap::new();
        labels.insert("host".to_string(), hostname.clone());
        Self {
            key,
            group: Arc::from(UNGROUPED),
            labels: Arc::new(labels),
            hostname,
            first_seen: now,
            last_seen: now,
            last_heartbeat: None,
            heartbeat_interval: None,
            started_at: None,
            missed_ping: false,
            offline_at: None,
            remembered: None,
            activity: Activity::Idle,
            lifecycle: Lifecycle::Alive,
            health: None,
            pid: None,
            active_tasks: 0,
            processed_total: 0,
            processed_by_task: BTreeMap::new(),
            pool: None,
            queues: Vec::new(),
            registered: Arc::default(),
            active: Vec::new(),
            load_average: None,
            software: None,
            prefetch_count: None,
            task_stats: None,
            lost_at: None,
            stream: None,
            resources: None,
            rusage: None,
        }
    }

    /// The backend-local name (Celery node name, Streams consumer name).
    pub fn id(&self) -> &str {
        &self.key.id
    }

    pub fn backend(&self) -> Backend {
        self.key.backend
    }

    /// How long the worker has been up: until now while alive, until last seen otherwise.
    pub fn uptime(&self, now: SystemTime) -> Option<Duration> {
        let started = self.started_at?;
        let until = if self.lifecycle == Lifecycle::Alive {
            now
        } else {
            self.last_seen
        };
        until.duration_since(started).ok()
    }

    /// Age of the freshest evidence of life (for a worker remembered across a restart, of
    /// the restart at the latest: warden could not hear it before).
    pub fn silence(&self, now: SystemTime) -> Duration {
        let since = self
            .remembered
            .map_or(self.last_seen, |r| r.max(self.last_seen));
        now.duration_since(since).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthStatus {
    Healthy,
    Warning,
    Critical,
}

/// One reason behind a health verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The check's id ("heartbeat", "cpu", ...).
    pub check: &'static str,
    /// WARNING or CRITICAL for a threshold reached; HEALTHY for an informational finding.
    pub status: HealthStatus,
    pub message: String,
    pub observed: f64,
    pub threshold: f64,
    /// Unit of `observed` and `threshold`: "s", "ratio", "percent", "bytes", "per_min".
    pub unit: &'static str,
    /// The check could not run (its data source failed): `message` says why. It does not
    /// weigh on the verdict, so that one broken check never hides what the others found.
    pub error: bool,
}

/// A health verdict: status, a score in [0, 1] and the findings that explain it.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: HealthStatus,
    pub score: f64,
    pub findings: Vec<Finding>,
    /// The checks that ran and passed.
    pub passing: Vec<&'static str>,
    pub evaluated_at: SystemTime,
}

impl Health {
    /// The same verdict, ignoring when it was computed.
    pub fn same_verdict(&self, other: &Health) -> bool {
        self.status == other.status
            && self.score == other.score
            && self.findings == other.findings
            && self.passing == other.passing
    }
}

/// What `stats` says about a worker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerStats {
    pub pid: Option<u32>,
    pub uptime: Option<Duration>,
    pub pool: Option<Pool>,
    pub processed_by_task: BTreeMap<String, u64>,
    pub prefetch_count: Option<u32>,
    /// CPU time the worker's main process used since it started (`rusage` utime + stime), in
    /// seconds: the last resort for a CPU figure (the pool's children are not in it).
    pub cpu_seconds: Option<f64>,
}

/// One worker's answers in an inspect round; `None` where it did not answer that command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InspectReport {
    pub name: String,
    pub ping: bool,
    pub stats: Option<WorkerStats>,
    pub active: Option<Vec<ActiveTask>>,
    pub queues: Option<Vec<ConsumedQueue>>,
    pub registered: Option<Vec<String>>,
}

/// The outcome of one inspect broadcast.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectRound {
    pub backend: Backend,
    /// Where the reports' names are unique (see [`WorkerKey`]).
    pub scope: Arc<str>,
    pub started_at: SystemTime,
    /// The workers (ids within `scope`) the round was addressed to; `None` for a broadcast to
    /// every worker of the scope.
    pub targets: Option<Vec<String>>,
    pub reports: Vec<InspectReport>,
}

/// Thresholds that turn evidence into activity and lifecycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Silence after which a worker is UNRESPONSIVE.
    pub warning: Duration,
    /// Silence after which a worker that did not say goodbye is LOST.
    pub critical: Duration,
}

/// Connectivity of one source of observations (the broker; later Prometheus, Kubernetes,
/// the store) as last probed. Workers of the backends that depend on a source that is down
/// are marked stale, and their silence is not held against them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStatus {
    /// "broker", "prometheus", "kubernetes", "store".
    pub source: &'static str,
    /// The backends whose workers are observed through this source.
    pub backends: Vec<Backend>,
    pub connected: bool,
    /// Why not, when not connected.
    pub reason: String,
    /// Last time the source answered.
    pub last_ok: Option<SystemTime>,
}

/// The status of the broker, the source every Celery worker is observed through.
pub type BrokerStatus = SourceStatus;

/// The name of the broker source.
pub const BROKER: &str = "broker";

impl SourceStatus {
    /// The broker before its first probe.
    pub fn unknown() -> Self {
        Self::unknown_source(BROKER, vec![Backend::Celery])
    }

    pub fn unknown_source(source: &'static str, backends: Vec<Backend>) -> Self {
        Self {
            source,
            backends,
            connected: false,
            reason: "not connected yet".into(),
            last_ok: None,
        }
    }
}

/// What a worker event says (Celery `worker-online`, `worker-heartbeat`, `worker-offline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEventKind {
    Online,
    Heartbeat,
    Offline,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerEvent {
    pub kind: WorkerEventKind,
    /// Heartbeat period announced by the worker.
    pub freq: Option<Duration>,
    /// Tasks running now.
    pub active: Option<u32>,
    /// Tasks completed since the worker started.
    pub processed: Option<u64>,
    pub load_average: Option<[f64; 3]>,
    pub software: Option<Software>,
    pub pid: Option<u32>,
}

/// One event from a worker's event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum EventPayload {
    Worker(WorkerEvent),
    Task(TaskObservation),
    /// A producer published a task (Celery `task-sent`, when the app sets
    /// `task_send_sent_event`); the event's worker key names the producer, which is not a
    /// worker and is never added to the fleet.
    Sent {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct FleetEvent {
    pub worker: WorkerKey,
    pub payload: EventPayload,
}

/// Depth of one queue as measured on the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub name: String,
    /// The backend of its consumers.
    pub backend: Backend,
    /// (priority step, messages), non-empty steps only; step 0 is the queue's own list.
    pub by_priority: Vec<(u32, u64)>,
    /// Delivered but not acknowledged.
    pub unacked: u64,
    /// Messages not yet delivered to its consumers, where the backend tells (Streams `lag`).
    pub lag: Option<u64>,
    /// Age of the oldest message delivered and not acknowledged, when known.
    pub oldest_pending_age: Option<Duration>,
}

/// A queue as reported: depth plus who consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: String,
    pub backend: Backend,
    pub depth: u64,
    pub lag: Option<u64>,
    pub oldest_pending_age: Option<Duration>,
    pub by_priority: Vec<(u32, u64)>,
    pub unacked: u64,
    /// The alive workers consuming it.
    pub consumers: Vec<WorkerKey>,
    pub updated_at: SystemTime,
}
