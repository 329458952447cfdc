//! The ports: what the core asks of the outside world, as traits the adapters implement.
//!
//! The core never names an adapter (Redis, Kubernetes, Prometheus, SQL, HTTP): it depends on
//! these traits, and the binary wires adapters into them. That keeps the data flow one way
//! (adapters observe → core applies → subscribers act) and lets every rule be tested with
//! in-memory implementations. Futures are boxed so that the traits stay object-safe.
use std::{
    future::Future,
    pin::Pin,
    time::{Duration, SystemTime},
};

use crate::model::{Sample, WorkerKey};

/// A boxed, sendable future: the shape of every asynchronous port method.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a port call failed, in words that are safe to show (no credentials, no URLs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The dependency behind the port cannot be reached; `dependency` names it ("broker",
    /// "kubernetes", "store", ...).
    #[error("{dependency} unavailable: {reason}")]
    Unavailable {
        dependency: &'static str,
        reason: String,
    },
    /// The port cannot do this for this worker (e.g. no runtime manages it).
    #[error("not supported: {0}")]
    NotSupported(String),
    /// The thing acted on does not exist on the other side.
    #[error("not found: {0}")]
    NotFound(String),
    /// The dependency refused the call for lack of permission; the text names the verb and
    /// the resource (e.g. "kubernetes forbids delete on pods \"w-1\" in namespace \"jobs\"").
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The call was made and failed.
    #[error("{0}")]
    Failed(String),
}

/// Asks a backend for fresh observations now (e.g. an inspect broadcast), returning once
/// they have been applied to the fleet. `ids` are backend-local worker ids; `None` asks for
/// every worker of the backend.
pub trait Refresher: Send + Sync + 'static {
    fn refresh<'a>(&'a self, ids: Option<Vec<String>>) -> BoxFuture<'a, Result<(), String>>;
}

/// Gauges the fleet owner keeps current (implemented by the metrics registry).
pub trait FleetGauges: Send + Sync + 'static {
    fn set_workers(&self, count: usize);
    /// The total of new workers refused at the known-worker cap.
    fn set_workers_refused(&self, _total: u64) {}
}

/// Gauges that nobody reads (tests, benches).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoGauges;

impl FleetGauges for NoGauges {
    fn set_workers(&self, _count: usize) {}
}

/// How a runtime restarts a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// Only this worker's instance (its pod, or its local process).
    Instance,
    /// The whole workload that owns it, rolling.
    Rollout,
}

/// How an instance (a process, a container) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it (e.g. 9 for SIGKILL).
    Signal(i32),
}

/// An instance's end, and when it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRecord {
    pub status: ExitStatus,
    pub at: SystemTime,
    /// True when the runtime ended it (stop, restart); false when it died on its own.
    pub requested: bool,
    /// The runtime's reason, when it gives one (Kubernetes: `OOMKilled`, `Error`).
    pub reason: Option<String>,
}

/// What a runtime knows about the instance that runs a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceInfo {
    /// The worker's group (a workload, or a local launch group).
    pub group: String,
    /// The current (or last) instance, as `LogLine.source` shows it: `pid:<pid>` for a local
    /// process, `<pod>/<container>` for Kubernetes. Changes when the instance is replaced.
    pub source: String,
    /// Whether an instance is running now.
    pub running: bool,
    /// Whether the runtime keeps the worker stopped (it was stopped and not started again):
    /// such a worker is not respawned.
    pub held_stopped: bool,
    /// Process id of the current instance, when there is one and the runtime knows it.
    pub pid: Option<u32>,
    pub started_at: Option<SystemTime>,
    /// How many times the worker's instance was replaced (restarts and respawns).
    pub restarts: u32,
    /// How the previous instance ended, if one did.
    pub last_exit: Option<ExitRecord>,
    /// CPU use of the instance and its children (e.g. a prefork pool), percent of one core,
    /// over the last sampling interval; `None` before two samples exist.
    pub cpu_percent: Option<f64>,
    /// Resident memory of the instance and its children, bytes.
    pub rss_bytes: Option<u64>,
}

/// A point in a worker's log, after a line: ordered, so that lines seen twice (once read back,
/// once followed) can be told apart. `segment` is backend-defined (a log file's generation,
/// a container's restart count), `offset` a position within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogPosition {
    pub segment: u64,
    pub offset: u64,
}

/// One line as the runtime holds it, before any parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct RawLogLine {
    /// The position right after this line: resuming "after" it starts with the next line.
    pub position: LogPosition,
    /// When the runtime captured it.
    pub time: SystemTime,
    /// The instance that wrote it (as [`InstanceInfo::source`]).
    pub source: String,
    /// Without the newline; invalid UTF-8 replaced.
    pub text: String,
    /// The line was longer than the runtime keeps and was cut.
    pub truncated: bool,
}

/// Lines read back from a worker's stored log.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogPage {
    /// Oldest first.
    pub lines: Vec<RawLogLine>,
    /// The position asked for is no longer held (rotated away): the page starts at the oldest
    /// line still kept, and lines in between were lost.
    pub gap: bool,
    /// Where the next page starts (pass as `after`); equal to the input when nothing is left.
    pub next: LogPosition,
}

/// What a followed log delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    Line(RawLogLine),
    /// A new instance started (its `source`).
    Started {
        source: String,
    },
    /// The instance ended.
    Exited {
        source: String,
        status: ExitStatus,
    },
    /// The follower fell behind and this many events were dropped (bounded buffer).
    Lagged(u64),
}

/// New log events of one worker, as they happen. Dropping it stops following.
pub trait LogFeed: Send + 'static {
    /// The next event; `None` when the worker is gone for good (removed from the runtime).
    fn next(&mut self) -> BoxFuture<'_, Option<LogEvent>>;
    /// The next event if one is ready now, without waiting (for batching what is buffered).
    fn try_next(&mut self) -> Option<LogEvent> {
        None
    }
}

/// Where workers run: Kubernetes pods or local processes. Implemented by `crates/runtime`.
pub trait Runtime: Send + Sync + 'static {
    /// A short name for logs and errors ("kubernetes", "local").
    fn name(&self) -> &'static str;
    /// Whether this runtime manages the worker (has a pod or process for it).
    fn manages<'a>(&'a self, worker: &'a WorkerKey) -> BoxFuture<'a, Result<bool, PortError>>;
    /// The workers this runtime manages whose id is `id` (a short name such as `w1@host`),
    /// for resolving names of workers the fleet has not seen yet.
    fn find<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<WorkerKey>, PortError>>;
    /// The grace period a restart gives the worker when the caller names none (the
    /// runtime's configured one, e.g. `--kubernetes-grace`; 30 s unless a runtime says).
    fn default_grace(&self) -> Duration {
        Duration::from_secs(30)
    }
    /// Replaces the worker's instance: stops it (a graceful signal, `grace`, then a forced
    /// kill) and starts a new one. Returns once the new instance is running (not once the
    /// worker reports in: callers wait for its heartbeat). [`RestartMode::Rollout`] replaces
    /// every instance of the worker's group, one at a time.
    fn restart<'a>(
        &'a self,
        worker: &'a WorkerKey,
        mode: RestartMode,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), PortError>>;
    /// Stops the worker (graceful signal, `grace`, forced kill) and keeps it stopped: it is
    /// not respawned until [`Runtime::start`].
    fn stop<'a>(
        &'a self,
        worker: &'a WorkerKey,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), PortError>>;
    /// Starts a worker that was stopped (no-op when it runs).
    fn start<'a>(&'a self, worker: &'a WorkerKey) -> BoxFuture<'a, Result<(), PortError>>;
    /// Sets the replica count of a group (a workload, or a local launch group).
    fn scale<'a>(&'a self, group: &'a str, replicas: u32) -> BoxFuture<'a, Result<(), PortError>>;
    /// The worker's instance: NotFound when the runtime does not manage it.
    fn instance<'a>(
        &'a self,
        worker: &'a WorkerKey,
    ) -> BoxFuture<'a, Result<InstanceInfo, PortError>>;
    /// Up to `max_lines` stored lines after `after` (from the oldest kept line when `None`).
    fn read_log<'a>(
        &'a self,
        worker: &'a WorkerKey,
        after: Option<LogPosition>,
        max_lines: usize,
    ) -> BoxFuture<'a, Result<LogPage, PortError>>;
    /// Follows the worker's log from now on. Subscribe before reading back ([`read_log`]) and
    /// skip followed lines at or before the last position read: nothing is lost or repeated.
    ///
    /// [`read_log`]: Runtime::read_log
    fn follow_log<'a>(
        &'a self,
        worker: &'a WorkerKey,
    ) -> BoxFuture<'a, Result<Box<dyn LogFeed>, PortError>>;
}

// The history store port is `crate::history::HistoryStore`, beside the types it keeps.

/// A source of resource metrics (Prometheus, metrics.k8s.io, /proc, Celery rusage).
/// Implemented by `crates/prometheus`.
pub trait MetricSource: Send + Sync + 'static {
    /// The source's name, carried by every sample it produces.
    fn name(&self) -> &'static str;
    /// One sample per worker it knows about; workers it has nothing for are left out (a
    /// metric no source provided is absent, never 0).
    fn collect<'a>(
        &'a self,
        workers: &'a [WorkerKey],
    ) -> BoxFuture<'a, Result<Vec<Sample>, PortError>>;
}

/// One notification: one or more alerts of one group, for one receiver. Built by the alert
/// engine (grouping, routing, timing), delivered by a [`Notifier`].
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Stable key of the notification group: the deduplication key (PagerDuty `dedup_key`,
    /// Alertmanager grouping). The same group keeps the same key from firing to resolved.
    pub group_key: String,
    /// The configured receiver's name ("oncall-slack").
    pub receiver: String,
    /// Resolved when every alert in it has resolved; firing otherwise.
    pub resolved: bool,
    /// An escalation of an unacknowledged critical alert.
    pub escalated: bool,
    /// Labels every alert in it shares (the grouping labels, at least).
    pub common_labels: std::collections::BTreeMap<String, String>,
    /// The alerts, sorted by name. Never empty.
    pub alerts: Vec<NotifiedAlert>,
}

/// One alert as a notification carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifiedAlert {
    /// Resource name, `alerts/{id}`.
    pub name: String,
    /// The rule's id ("worker_lost").
    pub rule: String,
    pub severity: crate::history::Severity,
    /// False once it has resolved.
    pub firing: bool,
    /// One line for humans.
    pub summary: String,
    pub description: String,
    /// Always `rule` and `severity`, `worker` and `group` when it concerns one.
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    pub started_at: SystemTime,
    pub resolved_at: Option<SystemTime>,
}

/// Delivers notifications (Slack, PagerDuty, email, webhook, Alertmanager).
/// Implemented by `crates/notify`.
pub trait Notifier: Send + Sync + 'static {
    /// The channel's name as configured; never a URL or a secret.
    fn channel(&self) -> &str;
    fn notify<'a>(&'a self, notification: &'a Notification)
    -> BoxFuture<'a, Result<(), PortError>>;
}
