//! Long actions (restart, drain, shutdown) as operations: created at once, carried out in the
//! background in paced batches, each target reporting its steps until BACK / NOT_BACK.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::sync::Semaphore;
use warden_celery::{control::Answer, lock::LockGuard};
use warden_core::{
    operations::{Operation, OperationHandle, Outcome, TargetProgress},
    ports::RestartMode,
};

use super::{ControlError, Controller, Target, TargetResult};

/// How a worker is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartHow {
    /// Its instance, through the runtime.
    Instance,
    /// Its whole workload, through the runtime.
    Rollout,
    /// Celery `pool_restart`: the process stays, its pool is replaced.
    Pool,
}

/// A long action, validated.
#[derive(Debug, Clone)]
pub enum LongAction {
    Restart(RestartHow),
    /// Stop consuming, wait for running tasks (at most `timeout`), restart.
    Drain {
        how: RestartHow,
        timeout: Duration,
    },
    /// Warm shutdown (Celery `shutdown`); waits at most `grace` for the worker to go offline.
    Shutdown {
        grace: Option<Duration>,
    },
}

impl LongAction {
    pub fn verb(&self) -> &'static str {
        match self {
            LongAction::Restart(_) => "RestartWorkers",
            LongAction::Drain { .. } => "DrainWorkers",
            LongAction::Shutdown { .. } => "ShutdownWorkers",
        }
    }

    fn needs_runtime(&self) -> bool {
        matches!(
            self,
            LongAction::Restart(RestartHow::Instance | RestartHow::Rollout)
                | LongAction::Drain {
                    how: RestartHow::Instance | RestartHow::Rollout,
                    ..
                }
        )
    }

    /// A runtime restart revives a worker that is LOST (a hung or vanished process); every
    /// other action needs a live worker.
    fn needs_alive(&self) -> bool {
        !matches!(
            self,
            LongAction::Restart(RestartHow::Instance | RestartHow::Rollout)
        )
    }

    /// Pool restarts and shutdowns go through Celery's remote control.
    fn needs_celery(&self) -> bool {
        matches!(
            self,
            LongAction::Restart(RestartHow::Pool)
                | LongAction::Drain { .. }
                | LongAction::Shutdown { .. }
        )
    }
}

/// How a bulk action is spread over time (defaults applied).
#[derive(Debug, Clone)]
pub struct Pacing {
    pub batch_size: usize,
    pub max_unavailable: usize,
    pub pause_between_batches: Duration,
    /// 0: never stop.
    pub max_failures: usize,
}

/// Who asked, for the operation's record.
pub struct Origin<'a> {
    pub actor: &'a str,
    pub reason: &'a str,
    pub request_id: &'a str,
    pub audit_id: &'a str,
    pub revision: u64,
}

impl Controller {
    /// Creates the operation and starts it in the background; returns it as created. A dry
    /// run is returned ended, with what each target would get, and is not stored.
    pub async fn start_operation(
        &self,
        action: LongAction,
        targets: Vec<Target>,
        pacing: Pacing,
        dry_run: bool,
        origin: Origin<'_>,
    ) -> Result<Operation, ControlError> {
        if action.needs_runtime() && self.runtime.is_none() {
            return Err(ControlError::NoRuntime(format!(
                "{} of this mode needs a runtime (Kubernetes or local processes); use mode POOL \
                 for a Celery pool restart",
                action.verb()
            )));
        }
        let now = self.operations.now();
        let mut op = Operation::new(
            action.verb(),
            origin.actor,
            origin.reason,
            origin.request_id,
            now,
        );
        op.audit_id = origin.audit_id.to_string();
        op.revision = origin.revision;
        op.dry_run = dry_run;
        let prechecks: Vec<Option<TargetResult>> = targets
            .iter()
            .map(|t| self.precheck(t, true, action.needs_celery(), action.needs_alive()))
            .collect();
        op.targets = targets
            .iter()
            .zip(&prechecks)
            .map(|(t, pre)| {
                let (code, message) = match pre {
                    Some(r) => (r.code, r.message.clone()),
                    None if dry_run => (Outcome::WouldApply, would(&action)),
                    None => (Outcome::Pending, String::new()),
                };
                TargetProgress {
                    worker: t.name(),
                    code,
                    message,
                    update_time: now,
                    group: format!("groups/{}", t.worker.group),
                    instance: t.worker.pid.map(|p| format!("pid:{p}")).unwrap_or_default(),
                }
            })
            .collect();
        if dry_run {
            let (state, message) = op.verdict();
            op.state = state;
            op.message = message;
            op.end_time = Some(now);
            return Ok(op);
        }
        // Locks are taken now, so that a conflicting call learns at once (ABORTED when every
        // target is held, LOCKED per target otherwise).
        let pending: Vec<usize> = (0..targets.len())
            .filter(|i| prechecks[*i].is_none())
            .collect();
        let names: Vec<String> = pending.iter().map(|i| targets[*i].name()).collect();
        let locks = self.lock_all(&names, origin.request_id).await?;
        let mut work = Vec::new();
        for (i, lock) in pending.into_iter().zip(locks) {
            match lock {
                Ok(guard) => work.push((i, targets[i].clone(), guard)),
                Err(holder) => {
                    op.targets[i].code = Outcome::Locked;
                    op.targets[i].message = format!("locked by request {holder:?}; retry later");
                }
            }
        }
        let handle = self.operations.create(op);
        let created = handle.snapshot();
        let this = self.clone();
        self.tasks.spawn(async move {
            this.run_operation(handle, action, work, pacing).await;
        });
        Ok(created)
    }

    async fn run_operation(
        &self,
        handle: OperationHandle,
        action: LongAction,
        work: Vec<(usize, Target, LockGuard)>,
        pacing: Pacing,
    ) {
        handle.set_running();
        // Keep every held lock alive while the operation runs.
        let guards: Vec<LockGuard> = work.iter().map(|(_, _, g)| g.clone()).collect();
        let keepalive = {
            let locks = self.locks.clone();
            let guards = guards.clone();
            let stop = tokio_util::sync::CancellationToken::new();
            let stopped = stop.clone();
            let every = locks.ttl() / 3;
            let shutdown = self.cancel.clone();
            self.tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stopped.cancelled() => break,
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(every) => {
                            for g in &guards {
                                let _ = locks.extend(g).await;
                            }
                        }
                    }
                }
            });
            stop
        };
        let slots = Arc::new(Semaphore::new(pacing.max_unavailable.max(1)));
        let mut failures = 0usize;
        let mut stopped = None;
        let batches: Vec<&[(usize, Target, LockGuard)]> =
            work.chunks(pacing.batch_size.max(1)).collect();
        for (b, batch) in batches.iter().enumerate() {
            if handle.cancelled().is_cancelled() || self.cancel.is_cancelled() {
                break;
            }
            let runs = batch.iter().map(|(i, target, guard)| {
                let slots = slots.clone();
                let handle = handle.clone();
                let action = action.clone();
                async move {
                    let _slot = slots.acquire().await;
                    let result = tokio::select! {
                        r = self.run_target(&handle, *i, target, &action) => r,
                        _ = self.cancel.cancelled() => (Outcome::Unknown, "warden shut down while acting".to_string()),
                    };
                    handle.target(*i, result.0, result.1.clone());
                    self.unlock(guard).await;
                    result.0
                }
            });
            let codes = futures_util::future::join_all(runs).await;
            failures += codes
                .iter()
                .filter(|c| matches!(c, Outcome::Failed | Outcome::Unknown))
                .count();
            if pacing.max_failures > 0 && failures >= pacing.max_failures {
                stopped = Some(format!(
                    "stopped after {failures} failures (max_failures {})",
                    pacing.max_failures
                ));
                break;
            }
            if b + 1 < batches.len() && !pacing.pause_between_batches.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pacing.pause_between_batches) => {}
                    _ = handle.cancelled().cancelled() => {}
                    _ = self.cancel.cancelled() => {}
                }
            }
        }
        keepalive.cancel();
        // Targets never started keep their locks until now: release them.
        let snapshot = handle.snapshot();
        for (i, _, guard) in &work {
            if !snapshot.targets[*i].code.is_final() {
                self.unlock(guard).await;
            }
        }
        handle.finish(stopped);
    }

    /// Carries the action out on one target; returns its final code and message.
    async fn run_target(
        &self,
        handle: &OperationHandle,
        i: usize,
        target: &Target,
        action: &LongAction,
    ) -> (Outcome, String) {
        handle.target(i, Outcome::Running, "starting");
        let node = target.node();
        match action {
            LongAction::Restart(how) => self.restart(handle, i, target, *how, &[]).await,
            LongAction::Shutdown { grace } => {
                if let Err(err) = self.celery.cast(node, "shutdown", json!({})).await {
                    return (Outcome::Failed, format!("could not send shutdown: {err}"));
                }
                handle.target(
                    i,
                    Outcome::Running,
                    "shutdown sent, waiting for it to go offline",
                );
                let wait = grace.unwrap_or(self.settings.back_timeout);
                if self.wait_offline(target, wait).await {
                    (Outcome::Applied, "shut down: OFFLINE".into())
                } else {
                    (
                        Outcome::Unknown,
                        format!("still alive {} s after the shutdown", wait.as_secs()),
                    )
                }
            }
            LongAction::Drain { how, timeout } => {
                let queues = match self.celery.active_queues(node).await {
                    Ok(Some(q)) => q,
                    Ok(None) => {
                        return (
                            Outcome::Unknown,
                            "the worker did not say which queues it consumes".into(),
                        );
                    }
                    Err(err) => return (Outcome::Failed, format!("broker error: {err}")),
                };
                for q in &queues {
                    match self
                        .celery
                        .call(node, "cancel_consumer", json!({"queue": q}))
                        .await
                    {
                        Ok(Answer::Ok(_)) => {}
                        other => {
                            return (
                                Outcome::Failed,
                                format!("could not stop consuming {q}: {other:?}"),
                            );
                        }
                    }
                }
                let started = Instant::now();
                loop {
                    match self.celery.busy(node).await {
                        Ok(Some(0)) => break,
                        Ok(Some(n)) => handle.target(
                            i,
                            Outcome::Running,
                            format!(
                                "drained queues {}; waiting for {n} running task(s)",
                                queues.join(", ")
                            ),
                        ),
                        _ => handle.target(
                            i,
                            Outcome::Running,
                            "waiting for the worker to report its running tasks",
                        ),
                    }
                    if started.elapsed() >= *timeout {
                        handle.target(
                            i,
                            Outcome::Running,
                            "drain timeout reached: restarting with tasks still running",
                        );
                        break;
                    }
                    tokio::time::sleep(self.settings.poll_every).await;
                }
                self.restart(handle, i, target, *how, &queues).await
            }
        }
    }

    /// Restarts one worker and waits until it is back, and puts the restart into history (the
    /// journal: one Control event per target, `action` = restart, which the fleet summary
    /// counts). `resume`: queues to consume again after a pool restart (a drain cancelled
    /// them, and the process keeps that).
    async fn restart(
        &self,
        handle: &OperationHandle,
        i: usize,
        target: &Target,
        how: RestartHow,
        resume: &[String],
    ) -> (Outcome, String) {
        let (outcome, message) = self.restart_and_wait(handle, i, target, how, resume).await;
        use warden_core::history::{
            ACTION_RESTART, ATTR_ACTION, AttrValue, EventKind, HistoryEvent, Severity,
        };
        let worker = &target.worker;
        let now = self.fleet.clock().now();
        self.ledger.record(&worker.key.resource_name(), now);
        // Restarts by auto-recovery are recovery events (the summary counts them apart).
        let automatic = handle.snapshot().actor == crate::recovery::PRINCIPAL;
        self.journal.record(HistoryEvent {
            at: now,
            kind: if automatic {
                EventKind::Recovery
            } else {
                EventKind::Control
            },
            severity: if outcome == Outcome::Applied {
                Severity::Info
            } else {
                Severity::Warning
            },
            worker: Some(worker.key.clone()),
            group: (&*worker.group != warden_core::model::UNGROUPED)
                .then(|| worker.group.to_string()),
            message: format!("restart ({how:?}) of {}: {message}", worker.key.id),
            attributes: vec![
                (ATTR_ACTION.into(), AttrValue::String(ACTION_RESTART.into())),
                (
                    "mode".into(),
                    AttrValue::String(format!("{how:?}").to_lowercase()),
                ),
                ("outcome".into(), AttrValue::String(outcome.name().into())),
            ],
        });
        (outcome, message)
    }

    async fn restart_and_wait(
        &self,
        handle: &OperationHandle,
        i: usize,
        target: &Target,
        how: RestartHow,
        resume: &[String],
    ) -> (Outcome, String) {
        let node = target.node();
        let began = Instant::now();
        let old_pid = self
            .fleet
            .snapshot()
            .workers
            .get(&target.worker.key)
            .and_then(|w| w.pid);
        match how {
            RestartHow::Pool => match self.celery.call(node, "pool_restart", json!({})).await {
                Ok(Answer::Ok(_)) => {}
                Ok(Answer::Error(e)) => {
                    // Give the worker its queues back: it was not restarted.
                    self.consume(node, resume).await;
                    let hint = if e.contains("not enabled") {
                        " (set worker_pool_restarts = True in the worker's app)"
                    } else {
                        ""
                    };
                    return (Outcome::Failed, format!("pool_restart refused: {e}{hint}"));
                }
                Ok(Answer::NoReply) => {
                    self.consume(node, resume).await;
                    return (
                        Outcome::Unknown,
                        "no reply to pool_restart: the restart may or may not have happened".into(),
                    );
                }
                Err(err) => return (Outcome::Failed, format!("broker error: {err}")),
            },
            RestartHow::Instance | RestartHow::Rollout => {
                let Some(runtime) = &self.runtime else {
                    return (Outcome::NotSupported, "no runtime".into());
                };
                match runtime.manages(&target.worker.key).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return (
                            Outcome::NotSupported,
                            format!("the {} runtime does not manage this worker", runtime.name()),
                        );
                    }
                    Err(err) => return (Outcome::Failed, err.to_string()),
                }
                let mode = if how == RestartHow::Rollout {
                    RestartMode::Rollout
                } else {
                    RestartMode::Instance
                };
                if let Err(err) = runtime
                    .restart(&target.worker.key, mode, runtime.default_grace())
                    .await
                {
                    return (Outcome::Failed, err.to_string());
                }
            }
        }
        handle.target(
            i,
            Outcome::Running,
            "restarted; waiting for it to come back",
        );
        let back = self.wait_back(target, how, old_pid).await;
        if how == RestartHow::Pool {
            self.consume(node, resume).await;
        }
        let secs = began.elapsed().as_secs_f64();
        if back {
            (Outcome::Applied, format!("BACK after {secs:.1} s"))
        } else {
            (
                Outcome::Unknown,
                format!(
                    "NOT_BACK: not heard from within {} s of the restart",
                    self.settings.back_timeout.as_secs()
                ),
            )
        }
    }

    async fn consume(&self, node: &str, queues: &[String]) {
        for q in queues {
            if let Err(err) = self
                .celery
                .call(node, "add_consumer", json!({"queue": q}))
                .await
            {
                tracing::warn!(%err, node, queue = %q, "could not resume consuming after a drain");
            }
        }
    }

    /// Whether the worker answers again within the back timeout: a ping reply (for an instance
    /// restart, from a new process: another pid, or a fresh start time).
    async fn wait_back(&self, target: &Target, how: RestartHow, old_pid: Option<u32>) -> bool {
        let deadline = Instant::now() + self.settings.back_timeout;
        let started = self.fleet.clock().now();
        while Instant::now() < deadline && !self.cancel.is_cancelled() {
            let pinged = self.celery.ping(target.node()).await.unwrap_or(false);
            let fresh = match how {
                RestartHow::Pool => true,
                _ => self
                    .fleet
                    .snapshot()
                    .workers
                    .get(&target.worker.key)
                    .is_some_and(|w| {
                        w.pid != old_pid || w.started_at.is_some_and(|s| s >= started)
                    }),
            };
            if pinged && fresh {
                return true;
            }
            tokio::time::sleep(self.settings.poll_every).await;
        }
        false
    }

    async fn wait_offline(&self, target: &Target, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && !self.cancel.is_cancelled() {
            let alive = self
                .fleet
                .snapshot()
                .workers
                .get(&target.worker.key)
                .is_some_and(|w| w.lifecycle == warden_core::Lifecycle::Alive);
            if !alive {
                return true;
            }
            tokio::time::sleep(self.settings.poll_every).await;
        }
        false
    }
}

fn would(action: &LongAction) -> String {
    match action {
        LongAction::Restart(RestartHow::Pool) => "would restart its pool (pool_restart)".into(),
        LongAction::Restart(RestartHow::Instance) => "would restart its instance".into(),
        LongAction::Restart(RestartHow::Rollout) => "would restart its workload".into(),
        LongAction::Drain { how, timeout } => format!(
            "would stop consuming, wait up to {} s for its tasks, then restart ({how:?})",
            timeout.as_secs()
        ),
        LongAction::Shutdown { .. } => "would shut down warm".into(),
    }
}
