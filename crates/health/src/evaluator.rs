//! One health cycle over the whole fleet, and what it remembers between cycles.
use std::{
    cmp::Ordering,
    iter::Peekable,
    time::{Duration, Instant, SystemTime},
};

use warden_core::{Health, HealthStatus, Lifecycle, Snapshot, WorkerKey};

use crate::{
    baseline::Baselines,
    checks::{CHECKS, Check, Context, FleetView, heartbeat, run_all},
    config::{ConfigError, HealthConfig},
    memory::{WorkerMemory, cmp_keys},
    overrides::Resolver,
    verdict::{Weights, verdict},
};

/// What one cycle did: for logs, `/metrics` and the "health engine failing" alert.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CycleSummary {
    /// The cycle's `now`.
    pub evaluated_at: Option<SystemTime>,
    /// Workers given a verdict (ALIVE, UNKNOWN and LOST ones).
    pub evaluated: usize,
    /// OFFLINE workers (they said goodbye): not evaluated.
    pub skipped: usize,
    /// Verdicts by status.
    pub healthy: usize,
    pub warning: usize,
    pub critical: usize,
    /// Checks that failed because of the engine (unusable data, a bug): error findings.
    pub failed_checks: usize,
    /// Workers with at least one such failed check.
    pub workers_failed: usize,
    /// Checks that could not run because a source was down (error findings too, but the
    /// engine is not at fault: the source's own alert covers it).
    pub unobservable_checks: usize,
    /// Wall time the cycle took.
    pub duration: Duration,
}

impl CycleSummary {
    /// Share (0 to 1) of evaluated workers whose evaluation had a failed check: the
    /// "health engine failing" alert compares it with its threshold.
    pub fn failed_share(&self) -> f64 {
        if self.evaluated == 0 {
            0.0
        } else {
            self.workers_failed as f64 / self.evaluated as f64
        }
    }
}

/// Evaluates every worker of a snapshot; keeps per-worker memory (progress for `stalled`,
/// samples for `forecast`, resolved limits) between calls.
pub struct Evaluator {
    interval: Duration,
    weights: Weights,
    resolver: Resolver,
    checks: Vec<Check>,
    /// By worker key, in the snapshot's order: a cycle walks it alongside the workers.
    memory: Vec<(WorkerKey, WorkerMemory)>,
    summary: CycleSummary,
}

/// The value of `key` in an iterator ordered by key, skipping (dropping) the entries before
/// it: both sides walk in key order, so a whole cycle costs one pass over each.
fn advance_to<K, V, I>(entries: &mut Peekable<I>, key: &WorkerKey) -> Option<V>
where
    I: Iterator<Item = (K, V)>,
    K: std::borrow::Borrow<WorkerKey>,
{
    while let Some((k, _)) = entries.peek() {
        match cmp_keys(k.borrow(), key) {
            Ordering::Less => {
                entries.next();
            }
            Ordering::Equal => return entries.next().map(|(_, v)| v),
            Ordering::Greater => return None,
        }
    }
    None
}

impl Evaluator {
    pub fn new(config: &HealthConfig) -> Result<Self, ConfigError> {
        Self::with_checks(config, CHECKS.to_vec())
    }

    /// With another set of checks (tests: a check that panics).
    pub(crate) fn with_checks(
        config: &HealthConfig,
        checks: Vec<Check>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            interval: config.interval,
            weights: Weights {
                warning: config.warning_weight,
                critical: config.critical_weight,
            },
            resolver: Resolver::new(config)?,
            checks,
            memory: Vec::new(),
            summary: CycleSummary::default(),
        })
    }

    /// How often the engine runs a cycle.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The last cycle's summary.
    pub fn summary(&self) -> &CycleSummary {
        &self.summary
    }

    /// A verdict for every ALIVE, UNKNOWN and LOST worker of the snapshot (LOST ones get one
    /// critical `heartbeat` finding and nothing else); OFFLINE ones are skipped. `now` is the
    /// fleet clock's time.
    pub fn evaluate(
        &mut self,
        snapshot: &Snapshot,
        baselines: &Baselines,
        now: SystemTime,
    ) -> Vec<(WorkerKey, Health)> {
        let started = Instant::now();
        let mut memories = std::mem::take(&mut self.memory).into_iter().peekable();
        let mut kept = Vec::with_capacity(snapshot.workers.len());
        let mut baselines = baselines.workers.iter().peekable();
        let view = FleetView::new(snapshot);
        let mut summary = CycleSummary {
            evaluated_at: Some(now),
            ..Default::default()
        };
        let mut verdicts = Vec::with_capacity(snapshot.workers.len());
        for worker in snapshot.workers.values() {
            // Memories of workers before this one are of workers gone: dropped.
            let memory = advance_to(&mut memories, &worker.key);
            let baseline = advance_to(&mut baselines, &worker.key);
            let health = match worker.lifecycle {
                Lifecycle::Offline => {
                    summary.skipped += 1;
                    continue;
                }
                Lifecycle::Lost => {
                    // Its memory is dropped: if it comes back, it starts afresh.
                    let limits = self.resolver.resolve(worker);
                    let finding = heartbeat::lost(worker, &limits, now);
                    verdict(vec![finding], Vec::new(), self.weights, now)
                }
                Lifecycle::Alive | Lifecycle::Unknown => {
                    let mut memory = memory.unwrap_or_else(|| WorkerMemory::new(now));
                    let limits = memory.limits(&self.resolver, worker);
                    let backlog = view.backlog(worker);
                    memory.observe(worker, backlog.map(|b| b.messages), &limits, now);
                    let ctx = Context {
                        now,
                        worker,
                        limits: &limits,
                        baseline,
                        fleet: &view,
                        memory: &memory,
                        backlog,
                    };
                    let results = run_all(&self.checks, &ctx);
                    kept.push((worker.key.clone(), memory));
                    summary.failed_checks += results.failed;
                    summary.unobservable_checks += results.unobservable;
                    if results.failed > 0 {
                        summary.workers_failed += 1;
                    }
                    verdict(results.findings, results.passing, self.weights, now)
                }
            };
            summary.evaluated += 1;
            match health.status {
                HealthStatus::Healthy => summary.healthy += 1,
                HealthStatus::Warning => summary.warning += 1,
                HealthStatus::Critical => summary.critical += 1,
            }
            verdicts.push((worker.key.clone(), health));
        }
        self.memory = kept;
        summary.duration = started.elapsed();
        self.summary = summary;
        verdicts
    }
}
