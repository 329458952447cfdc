//! Auto-recovery: restarts unhealthy workers through the runtime, within caps.
//!
//! Opt-in per group. A worker is restarted when it is LOST, or when the health engine found it
//! CRITICAL on `after_critical_checks` evaluations in a row. Never during the startup grace,
//! never a cordoned worker, never beyond the caps: `max_per_worker` restarts of one worker and
//! `max_fleet` of the whole fleet per hour, manual restarts included (the controller's
//! [`RestartLedger`], filled from history at boot, so the caps hold across warden restarts).
//! Each restart is an operation created by the controller with the actor [`PRINCIPAL`], an
//! audit entry and a recovery event. A worker that reaches its cap is reported exhausted, so
//! that the alert engine raises `recovery_exhausted`.
mod ledger;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use globset::{Glob, GlobSet, GlobSetBuilder};
use tokio_util::sync::CancellationToken;
use warden_core::{
    HealthStatus, Lifecycle, Snapshot, Worker, WorkerKey,
    audit::{AuditLog, AuditRecord},
};

pub use ledger::{RestartLedger, WINDOW};

use crate::control::{Controller, LongAction, Origin, Pacing, RestartHow, Target};

/// The actor of auto-recovery's restarts (operations, audit entries, events).
pub const PRINCIPAL: &str = "auto-recovery";

/// Defaults of [`RecoverySettings`].
pub const DEFAULT_AFTER_CRITICAL_CHECKS: u32 = 3;
pub const DEFAULT_MAX_PER_WORKER: u32 = 3;
pub const DEFAULT_MAX_FLEET: u32 = 20;
pub const DEFAULT_STARTUP_GRACE: Duration = Duration::from_secs(90);
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_UNAVAILABLE_PER_GROUP: u32 = 1;

/// How auto-recovery behaves (`[recovery]` in the config file).
#[derive(Debug, Clone, PartialEq)]
pub struct RecoverySettings {
    /// Groups (glob patterns on the group name) whose workers are restarted. Empty (the
    /// default): auto-recovery is off.
    pub groups: Vec<String>,
    /// CRITICAL evaluations in a row before a restart. Default 3.
    pub after_critical_checks: u32,
    /// Restarts of one worker per hour (manual ones count) beyond which it is left alone and
    /// reported exhausted. Default 3.
    pub max_per_worker: u32,
    /// Restarts of the whole fleet per hour beyond which auto-recovery pauses. Default 20.
    pub max_fleet: u32,
    /// No restart this soon after warden started (its view of the fleet is still forming).
    /// Default 90 s.
    pub startup_grace: Duration,
    /// How often workers are looked at. Default 5 s.
    pub interval: Duration,
    /// Least time between two restarts of one worker by auto-recovery (any restart of it
    /// counts as the last one). Default 5 min.
    pub cooldown: Duration,
    /// Restart LOST workers (not only CRITICAL ones). Default true.
    pub restart_lost: bool,
    /// Most workers of one group being restarted by auto-recovery at once. Default 1.
    pub max_unavailable_per_group: u32,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            groups: Vec::new(),
            after_critical_checks: DEFAULT_AFTER_CRITICAL_CHECKS,
            max_per_worker: DEFAULT_MAX_PER_WORKER,
            max_fleet: DEFAULT_MAX_FLEET,
            startup_grace: DEFAULT_STARTUP_GRACE,
            interval: DEFAULT_INTERVAL,
            cooldown: DEFAULT_COOLDOWN,
            restart_lost: true,
            max_unavailable_per_group: DEFAULT_MAX_UNAVAILABLE_PER_GROUP,
        }
    }
}

impl RecoverySettings {
    pub fn enabled(&self) -> bool {
        !self.groups.is_empty()
    }

    fn group_set(&self) -> Result<GlobSet, globset::Error> {
        let mut b = GlobSetBuilder::new();
        for g in &self.groups {
            b.add(Glob::new(g)?);
        }
        b.build()
    }
}

/// Why a worker needs a restart.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    Lost,
    /// CRITICAL this many evaluations in a row; the findings of the last one.
    Critical {
        checks: u32,
        findings: String,
    },
}

impl Cause {
    fn reason(&self) -> String {
        match self {
            Cause::Lost => "worker is LOST".into(),
            Cause::Critical { checks, findings } => {
                format!("CRITICAL on {checks} health checks in a row: {findings}")
            }
        }
    }
}

/// What one look at a worker decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Restart(Cause),
    /// Would restart, but a cap is reached: (the cap's description).
    Exhausted(Cause, String),
}

/// Workers whose restarts are exhausted (resource name → why), for the alert engine.
pub type Exhausted = Arc<Mutex<BTreeMap<String, String>>>;

/// The policy, without I/O: which workers to restart now.
pub struct Policy {
    settings: RecoverySettings,
    groups: GlobSet,
    started: SystemTime,
    /// Per worker: CRITICAL evaluations in a row, and the last evaluation counted.
    critical: HashMap<WorkerKey, (u32, SystemTime)>,
    /// Changes made at run time (UpdateRecoveryPolicy) so far: the etag's version.
    revision: u64,
    /// When and by whom it was last changed at run time; `None` while the config's.
    changed: Option<(SystemTime, String)>,
}

impl Policy {
    pub fn new(settings: RecoverySettings, started: SystemTime) -> Result<Self, globset::Error> {
        Ok(Self {
            groups: settings.group_set()?,
            settings,
            started,
            critical: HashMap::new(),
            revision: 0,
            changed: None,
        })
    }

    pub fn settings(&self) -> &RecoverySettings {
        &self.settings
    }

    /// Takes new settings (UpdateRecoveryPolicy); the CRITICAL counts carry over.
    pub fn update(&mut self, settings: RecoverySettings) -> Result<(), globset::Error> {
        self.groups = settings.group_set()?;
        self.settings = settings;
        Ok(())
    }

    /// Takes new settings on behalf of `by` (UpdateRecoveryPolicy): the etag changes.
    pub fn update_by(
        &mut self,
        settings: RecoverySettings,
        by: &str,
        at: SystemTime,
    ) -> Result<(), globset::Error> {
        self.update(settings)?;
        self.revision += 1;
        self.changed = Some((at, by.to_string()));
        Ok(())
    }

    /// When and by whom the settings were last changed at run time.
    pub fn changed(&self) -> Option<&(SystemTime, String)> {
        self.changed.as_ref()
    }

    /// Opaque version of the settings: changes with every update, and differs between
    /// different settings.
    pub fn etag(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{:?}", self.settings).hash(&mut h);
        format!("{}-{:016x}", self.revision, h.finish())
    }

    /// Looks at every worker of an opted-in group; `leave` says whether a worker (resource
    /// name) is to be left alone (cordoned, or a restart of it is under way), `busy` how many
    /// workers of a group are being restarted now, `ledger` how often a worker (and the fleet)
    /// restarted in the last hour.
    pub fn decide(
        &mut self,
        snapshot: &Snapshot,
        now: SystemTime,
        ledger: &RestartLedger,
        leave: &dyn Fn(&str) -> bool,
        busy: &dyn Fn(&str) -> usize,
    ) -> Vec<(Arc<Worker>, Decision)> {
        let mut started_in_group: HashMap<Arc<str>, usize> = HashMap::new();
        let in_grace = now
            .duration_since(self.started)
            .map_or(true, |up| up < self.settings.startup_grace);
        let mut out = Vec::new();
        let mut fleet_restarts = ledger.total(now);
        self.critical
            .retain(|k, _| snapshot.workers.contains_key(k));
        for worker in snapshot.workers.values() {
            if !self.groups.is_match(&*worker.group) {
                continue;
            }
            let Some(cause) = self.cause(worker) else {
                continue;
            };
            let name = worker.key.resource_name();
            if in_grace || leave(&name) {
                continue;
            }
            let restarts = ledger.count(&name, now);
            let cooling = ledger
                .last(&name)
                .is_some_and(|last| now < last + self.settings.cooldown);
            let group_busy =
                busy(&worker.group) + started_in_group.get(&worker.group).copied().unwrap_or(0);
            let decision = if restarts >= self.settings.max_per_worker as usize {
                Decision::Exhausted(
                    cause,
                    format!(
                        "{restarts} restarts in the last hour (at most {} per worker)",
                        self.settings.max_per_worker
                    ),
                )
            } else if cooling || group_busy >= self.settings.max_unavailable_per_group as usize {
                // Its turn comes: after the cooldown, or when its group's restarts are done.
                continue;
            } else if fleet_restarts >= self.settings.max_fleet as usize {
                Decision::Exhausted(
                    cause,
                    format!(
                        "{fleet_restarts} restarts across the fleet in the last hour (at most {})",
                        self.settings.max_fleet
                    ),
                )
            } else {
                fleet_restarts += 1;
                *started_in_group.entry(worker.group.clone()).or_default() += 1;
                self.critical.remove(&worker.key);
                Decision::Restart(cause)
            };
            out.push((worker.clone(), decision));
        }
        out
    }

    /// Counts CRITICAL evaluations in a row (each evaluation once) and says whether the worker
    /// needs a restart.
    fn cause(&mut self, worker: &Worker) -> Option<Cause> {
        if worker.lifecycle == Lifecycle::Lost {
            return self.settings.restart_lost.then_some(Cause::Lost);
        }
        if worker.lifecycle != Lifecycle::Alive {
            return None;
        }
        let health = worker.health.as_ref()?;
        let entry = self
            .critical
            .entry(worker.key.clone())
            .or_insert((0, SystemTime::UNIX_EPOCH));
        if entry.1 != health.evaluated_at {
            entry.1 = health.evaluated_at;
            entry.0 = if health.status == HealthStatus::Critical {
                entry.0 + 1
            } else {
                0
            };
        }
        (entry.0 >= self.settings.after_critical_checks).then(|| Cause::Critical {
            checks: entry.0,
            findings: health
                .findings
                .iter()
                .filter(|f| f.status == HealthStatus::Critical && !f.error)
                .map(|f| f.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

/// Runs the policy on an interval and carries its restarts out through the controller.
/// The policy, shared by the recovery loop and the Control service (GetRecoveryPolicy,
/// UpdateRecoveryPolicy). Never locked across an await.
pub type SharedPolicy = Arc<Mutex<Policy>>;

pub struct Recovery {
    pub policy: SharedPolicy,
    pub controller: Controller,
    pub audit: Arc<dyn AuditLog>,
    pub exhausted: Exhausted,
    /// Restarts under way: worker (resource name) → (its group, operation name). A worker is
    /// left alone until its operation ends (it is still LOST while it comes back).
    pub in_flight: HashMap<String, (Arc<str>, String)>,
}

impl Recovery {
    pub fn new(
        policy: SharedPolicy,
        controller: Controller,
        audit: Arc<dyn AuditLog>,
        exhausted: Exhausted,
    ) -> Self {
        Self {
            policy,
            controller,
            audit,
            exhausted,
            in_flight: HashMap::new(),
        }
    }
}

impl Recovery {
    /// Looks once; restarts what the policy says. Returns the restarts started.
    pub async fn run_once(&mut self) -> usize {
        let fleet = self.controller.fleet.clone();
        let snapshot = fleet.snapshot();
        let now = fleet.clock().now();
        let controller = self.controller.clone();
        self.in_flight.retain(|_, (_, op)| {
            controller
                .operations
                .get(op)
                .is_some_and(|o| o.end_time.is_none())
        });
        let in_flight = &self.in_flight;
        let decisions = self
            .policy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .decide(
                &snapshot,
                now,
                controller.ledger(),
                &|name| controller.cordon_reason(name).is_some() || in_flight.contains_key(name),
                &|group| in_flight.values().filter(|(g, _)| &**g == group).count(),
            );
        let mut exhausted = BTreeMap::new();
        let mut started = 0;
        for (worker, decision) in decisions {
            let name = worker.key.resource_name();
            match decision {
                Decision::Exhausted(cause, cap) => {
                    exhausted.insert(name, format!("{}; not restarted: {cap}", cause.reason()));
                }
                Decision::Restart(cause) => {
                    if let Some(op) = self.restart(&worker, &cause, snapshot.revision, now).await {
                        self.in_flight.insert(name, (worker.group.clone(), op));
                        started += 1;
                    }
                }
            }
        }
        *self.exhausted.lock().unwrap_or_else(|p| p.into_inner()) = exhausted;
        started
    }

    /// Starts the restart; the operation's name when it started.
    async fn restart(
        &self,
        worker: &Arc<Worker>,
        cause: &Cause,
        revision: u64,
        now: SystemTime,
    ) -> Option<String> {
        let name = worker.key.resource_name();
        let audit_id = uuid::Uuid::new_v4().to_string();
        let request_id = format!("auto-recovery-{audit_id}");
        let reason = cause.reason();
        let result = self
            .controller
            .start_operation(
                LongAction::Restart(RestartHow::Instance),
                vec![Target {
                    worker: worker.clone(),
                    named: false,
                }],
                Pacing {
                    batch_size: 1,
                    max_unavailable: 1,
                    pause_between_batches: Duration::ZERO,
                    max_failures: 0,
                },
                false,
                Origin {
                    actor: PRINCIPAL,
                    reason: &reason,
                    request_id: &request_id,
                    audit_id: &audit_id,
                    revision,
                },
            )
            .await;
        let (code, message, operation) = match &result {
            Ok(op) => ("OK", String::new(), op.name.clone()),
            Err(err) => ("ABORTED", err.to_string(), String::new()),
        };
        let record = AuditRecord {
            seq: 0,
            id: audit_id,
            time: now,
            actor: PRINCIPAL.into(),
            role: "system".into(),
            service: "Control".into(),
            action: "RestartWorkers".into(),
            targets: vec![name.clone()],
            reason: reason.clone(),
            dry_run: false,
            request_id,
            allowed: true,
            code: code.into(),
            message: message.clone(),
            counts: BTreeMap::new(),
            outcomes: Vec::new(),
            trace_id: String::new(),
            parameters: BTreeMap::from([("mode".into(), "\"RESTART_MODE_INSTANCE\"".into())]),
            operation: operation.clone(),
        };
        if let Err(err) = self.audit.append(&record).await {
            tracing::warn!(%err, "auto-recovery: could not append the audit entry");
        }
        match result {
            Ok(_) => {
                tracing::info!(worker = %name, %operation, %reason, "auto-recovery: restarting");
                Some(operation)
            }
            Err(err) => {
                tracing::warn!(worker = %name, %err, "auto-recovery: restart not started");
                None
            }
        }
    }

    /// Runs until `cancel`.
    pub async fn run(mut self, interval: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => { self.run_once().await; }
            }
        }
    }
}

#[cfg(test)]
mod tests;
