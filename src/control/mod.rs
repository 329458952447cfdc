//! Carrying control actions out: over Celery's remote-control commands (pause, resume, pool
//! size, limits, revoke, pool restart, shutdown), over a runtime when one is configured
//! (instance restarts), and on warden's own state (cordons, paused queues).
//!
//! The API layer (`api::control`) validates, authorises, audits and converts; this module acts.
//! Every action on a worker holds that worker's lock (`warden_celery::lock`) while it runs, so
//! that conflicting actions from this or another replica take turns. Long actions run as
//! operations (`warden_core::operations`) on tasks that stop on the shutdown token.
mod long;
mod scale;
mod sync;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};
use warden_celery::{
    control::Control,
    lock::{LockError, LockGuard, Locks},
};
use warden_core::{
    Backend, FleetHandle, Lifecycle, Worker, operations::Operations, operations::Outcome,
    ports::Runtime,
};

pub use long::{LongAction, Origin, Pacing, RestartHow};
pub use scale::Resize;
pub use sync::SyncAction;

/// Defaults of [`ControlSettings`].
pub const DEFAULT_BACK_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(5);
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// How control actions behave.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// How long a restarted worker has to come back (fresh heartbeat or ping) before its
    /// target is NOT_BACK.
    pub back_timeout: Duration,
    /// How long an action waits for a worker's lock held by another action.
    pub lock_wait: Duration,
    /// How long to wait for a worker's reply to one remote-control command.
    pub reply_timeout: Duration,
    /// How often a waiting step polls (drain, back, offline).
    pub poll_every: Duration,
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            back_timeout: DEFAULT_BACK_TIMEOUT,
            lock_wait: DEFAULT_LOCK_WAIT,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            poll_every: Duration::from_millis(500),
        }
    }
}

/// One resolved target: the worker, and whether it was named (named workers are acted on
/// even when cordoned).
#[derive(Debug, Clone)]
pub struct Target {
    pub worker: Arc<Worker>,
    pub named: bool,
}

impl Target {
    pub fn name(&self) -> String {
        self.worker.key.resource_name()
    }

    /// The Celery node name (`name@host`).
    pub fn node(&self) -> &str {
        &self.worker.key.id
    }
}

/// One target's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetResult {
    pub worker: String,
    pub code: Outcome,
    pub message: String,
}

impl TargetResult {
    pub fn new(target: &Target, code: Outcome, message: impl Into<String>) -> Self {
        Self {
            worker: target.name(),
            code,
            message: message.into(),
        }
    }
}

/// Why an action could not start at all (nothing was done).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Every target's lock is held by other actions.
    #[error("{target} is locked by request {holder:?}; retry when it is done")]
    Locked { target: String, holder: String },
    #[error("no runtime is configured: {0}")]
    NoRuntime(String),
    #[error("warden is shutting down")]
    ShuttingDown,
}

/// The actor of control actions. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    pub(crate) fleet: FleetHandle,
    pub(crate) celery: Control,
    pub(crate) locks: Locks,
    pub(crate) runtime: Option<Arc<dyn Runtime>>,
    pub operations: Operations,
    pub(crate) settings: ControlSettings,
    /// Cordoned workers (resource name → reason): warden-side, survives the worker's restarts,
    /// not warden's.
    cordons: Arc<Mutex<BTreeMap<String, String>>>,
    /// Queues warden paused per worker (resource name), for a ResumeConsuming without queues.
    paused: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    pub(crate) tasks: TaskTracker,
    pub(crate) cancel: CancellationToken,
    /// Where actions are put into history (disconnected without a store).
    pub(crate) journal: warden_core::journal::Journal,
    /// Every restart carried out, for auto-recovery's caps (manual restarts count too).
    pub(crate) ledger: crate::recovery::RestartLedger,
}

impl Controller {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        fleet: FleetHandle,
        celery: Control,
        locks: Locks,
        runtime: Option<Arc<dyn Runtime>>,
        settings: ControlSettings,
        tasks: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let operations = Operations::new(fleet.clock().clone());
        Self {
            fleet,
            celery,
            locks,
            runtime,
            operations,
            settings,
            cordons: Arc::default(),
            paused: Arc::default(),
            tasks,
            cancel,
            journal: warden_core::journal::Journal::disconnected(),
            ledger: crate::recovery::RestartLedger::default(),
        }
    }

    /// The restarts this controller carried out in the last hour (and those loaded at boot).
    pub fn ledger(&self) -> &crate::recovery::RestartLedger {
        &self.ledger
    }

    /// Puts the actions into history through `journal`.
    pub fn with_journal(mut self, journal: warden_core::journal::Journal) -> Self {
        self.journal = journal;
        self
    }

    pub fn has_runtime(&self) -> bool {
        self.runtime.is_some()
    }

    pub fn cordon_reason(&self, worker: &str) -> Option<String> {
        self.cordons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(worker)
            .cloned()
    }

    fn set_cordon(&self, worker: &str, reason: Option<String>) -> bool {
        let mut cordons = self.cordons.lock().unwrap_or_else(|p| p.into_inner());
        match reason {
            Some(r) => cordons.insert(worker.to_string(), r).is_none(),
            None => cordons.remove(worker).is_some(),
        }
    }

    fn paused_queues(&self, worker: &str) -> BTreeSet<String> {
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(worker)
            .cloned()
            .unwrap_or_default()
    }

    fn mark_paused(&self, worker: &str, queue: &str, paused: bool) {
        let mut map = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        let set = map.entry(worker.to_string()).or_default();
        if paused {
            set.insert(queue.to_string());
        } else {
            set.remove(queue);
        }
        if set.is_empty() {
            map.remove(worker);
        }
    }

    /// The outcome a target gets before any action: cordoned (when selected by filter or group
    /// and the verb respects cordons), not a Celery worker, not alive (`needs_alive`: a restart
    /// through the runtime also revives a LOST worker). `None`: go ahead.
    pub(crate) fn precheck(
        &self,
        target: &Target,
        respects_cordon: bool,
        needs_celery: bool,
        needs_alive: bool,
    ) -> Option<TargetResult> {
        if respects_cordon
            && !target.named
            && let Some(reason) = self.cordon_reason(&target.name())
        {
            return Some(TargetResult::new(
                target,
                Outcome::Cordoned,
                format!("cordoned: {reason}"),
            ));
        }
        if needs_celery && target.worker.key.backend != Backend::Celery {
            return Some(TargetResult::new(
                target,
                Outcome::NotSupported,
                "Celery remote control only: Redis Streams consumers have none",
            ));
        }
        if needs_alive && target.worker.lifecycle != Lifecycle::Alive
            || target.worker.lifecycle == Lifecycle::Offline
        {
            return Some(TargetResult::new(
                target,
                Outcome::NotAlive,
                format!("the worker is {:?}", target.worker.lifecycle),
            ));
        }
        None
    }

    /// Takes the locks of `targets` (waiting up to the lock wait for each). ABORTED-worthy
    /// [`ControlError::Locked`] when none could be taken; otherwise the guards (None for the
    /// targets that stayed locked, with their holder).
    pub(crate) async fn lock_all(
        &self,
        targets: &[String],
        request_id: &str,
    ) -> Result<Vec<Result<LockGuard, String>>, ControlError> {
        let wait = self.settings.lock_wait;
        let attempts = futures_util::future::join_all(
            targets
                .iter()
                .map(|t| self.locks.acquire(t, request_id, wait)),
        )
        .await;
        let mut out = Vec::with_capacity(attempts.len());
        for attempt in attempts {
            out.push(match attempt {
                Ok(guard) => Ok(guard),
                Err(LockError::Held { holder }) => Err(holder),
                // The broker is down: the action would fail anyway; say so per target.
                Err(LockError::Broker(err)) => Err(format!("(lock unavailable: {err})")),
            });
        }
        if !targets.is_empty()
            && out.iter().all(|g| g.is_err())
            && let Some(Err(holder)) = out.first()
        {
            return Err(ControlError::Locked {
                target: targets[0].clone(),
                holder: holder.clone(),
            });
        }
        Ok(out)
    }

    pub(crate) async fn unlock(&self, guard: &LockGuard) {
        if let Err(err) = self.locks.release(guard).await {
            tracing::warn!(%err, "could not release a target lock; it expires by itself");
        }
    }
}
