//! The ports: what the core asks of the outside world, as traits the adapters implement.
//!
//! The core never names an adapter (Redis, Kubernetes, Prometheus, SQL, HTTP): it depends on
//! these traits, and the binary wires adapters into them. That keeps the data flow one way
//! (adapters observe → core applies → subscribers act) and lets every rule be tested with
//! in-memory implementations. Futures are boxed so that the traits stay object-safe.
use std::{future::Future, pin::Pin, time::Duration};

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

/// Where workers run: Kubernetes pods or local processes. Implemented by `crates/runtime`.
pub trait Runtime: Send + Sync + 'static {
    /// A short name for logs and errors ("kubernetes", "local").
    fn name(&self) -> &'static str;
    /// Whether this runtime manages the worker (has a pod or process for it).
    fn manages<'a>(&'a self, worker: &'a WorkerKey) -> BoxFuture<'a, Result<bool, PortError>>;
    fn restart<'a>(
        &'a self,
        worker: &'a WorkerKey,
        mode: RestartMode,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), PortError>>;
    /// Sets the replica count of a group (a workload, or a local launch group).
    fn scale<'a>(&'a self, group: &'a str, replicas: u32) -> BoxFuture<'a, Result<(), PortError>>;
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

/// One message for a notification channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Groups notifications of one alert (deduplication key).
    pub key: String,
    pub title: String,
    pub body: String,
    pub resolved: bool,
    pub labels: Vec<(String, String)>,
}

/// Delivers notifications (Slack, PagerDuty, email, webhook, Alertmanager).
/// Implemented by `crates/health`.
pub trait Notifier: Send + Sync + 'static {
    /// The channel's name as configured; never a URL or a secret.
    fn channel(&self) -> &str;
    fn notify<'a>(&'a self, notification: &'a Notification)
    -> BoxFuture<'a, Result<(), PortError>>;
}
