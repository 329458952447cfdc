//! Synchronous actions: one Celery command (or a warden-side change) per target, answered
//! within the call.
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use warden_celery::control::Answer;
use warden_core::operations::Outcome;

use super::{ControlError, Controller, Target, TargetResult};

/// Targets of one synchronous call acted on at once.
const SYNC_CONCURRENCY: usize = 16;

/// A synchronous action, validated.
#[derive(Debug, Clone)]
pub enum SyncAction {
    /// `cancel_consumer` for these queues (empty: every queue it consumes).
    Pause {
        queues: Vec<String>,
    },
    /// `add_consumer` for these queues (empty: those warden paused).
    Resume {
        queues: Vec<String>,
    },
    /// `pool_grow` / `pool_shrink` to this size.
    PoolSize {
        size: u32,
    },
    /// `rate_limit`.
    RateLimit {
        task: String,
        rate: String,
    },
    /// `time_limit`, in seconds (None removes).
    TimeLimit {
        task: String,
        soft: Option<f64>,
        hard: Option<f64>,
    },
    /// `revoke`.
    Revoke {
        ids: Vec<String>,
        terminate: bool,
        signal: Option<String>,
    },
    Cordon {
        reason: String,
    },
    Uncordon,
}

impl SyncAction {
    /// Whether cordoned workers selected by filter or group are left alone.
    fn respects_cordon(&self) -> bool {
        !matches!(
            self,
            SyncAction::Revoke { .. } | SyncAction::Cordon { .. } | SyncAction::Uncordon
        )
    }

    fn warden_side(&self) -> bool {
        matches!(self, SyncAction::Cordon { .. } | SyncAction::Uncordon)
    }
}

/// How a Celery answer reads as an outcome.
fn outcome(answer: Answer) -> (Outcome, String) {
    match answer {
        Answer::Ok(Value::String(s)) => (Outcome::Applied, s),
        Answer::Ok(v) => (Outcome::Applied, v.to_string()),
        Answer::Error(e) => (Outcome::Failed, e),
        Answer::NoReply => (
            Outcome::Unknown,
            "no reply in time: the action may or may not have happened".into(),
        ),
    }
}

impl Controller {
    /// Runs `action` on every target, in order. Err only when nothing was done (every
    /// target's lock is held by others).
    pub async fn run_sync(
        &self,
        action: &SyncAction,
        targets: &[Target],
        dry_run: bool,
        request_id: &str,
    ) -> Result<Vec<TargetResult>, ControlError> {
        let mut results: Vec<Option<TargetResult>> = targets
            .iter()
            .map(|t| {
                if action.warden_side() {
                    None
                } else {
                    self.precheck(t, action.respects_cordon(), true, true)
                }
            })
            .collect();
        if action.warden_side() {
            return Ok(targets
                .iter()
                .map(|t| self.cordon(action, t, dry_run))
                .collect());
        }
        // Dry runs take no locks: they change nothing.
        let to_lock: Vec<String> = targets
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_none() && !dry_run)
            .map(|(t, _)| t.name())
            .collect();
        let mut guards = self.lock_all(&to_lock, request_id).await?.into_iter();
        let mut jobs = Vec::new();
        for (i, (target, slot)) in targets.iter().zip(results.iter_mut()).enumerate() {
            if slot.is_some() {
                continue;
            }
            if dry_run {
                jobs.push((i, None));
                continue;
            }
            match guards.next() {
                Some(Ok(guard)) => jobs.push((i, Some(guard))),
                Some(Err(holder)) => {
                    *slot = Some(TargetResult::new(
                        target,
                        Outcome::Locked,
                        format!("locked by request {holder:?}; retry later"),
                    ))
                }
                None => {}
            }
        }
        // Several workers at once (each target is a few broker round trips), in order.
        let done: Vec<(usize, TargetResult)> =
            futures_util::stream::iter(jobs.into_iter().map(|(i, guard)| {
                let target = &targets[i];
                async move {
                    let result = self.apply(action, target, dry_run).await;
                    if let Some(guard) = guard {
                        self.unlock(&guard).await;
                    }
                    (i, result)
                }
            }))
            .buffered(SYNC_CONCURRENCY)
            .collect()
            .await;
        for (i, result) in done {
            results[i] = Some(result);
        }
        Ok(results.into_iter().flatten().collect())
    }

    fn cordon(&self, action: &SyncAction, target: &Target, dry_run: bool) -> TargetResult {
        let name = target.name();
        let current = self.cordon_reason(&name);
        let (code, message) = match (action, current) {
            (SyncAction::Cordon { .. }, Some(r)) => {
                (Outcome::Skipped, format!("already cordoned: {r}"))
            }
            (SyncAction::Uncordon, None) => (Outcome::Skipped, "not cordoned".to_string()),
            (_, _) if dry_run => (Outcome::WouldApply, "would change its cordon".to_string()),
            (SyncAction::Cordon { reason }, None) => {
                self.set_cordon(&name, Some(reason.clone()));
                (Outcome::Applied, "cordoned".to_string())
            }
            (_, _) => {
                self.set_cordon(&name, None);
                (Outcome::Applied, "uncordoned".to_string())
            }
        };
        TargetResult::new(target, code, message)
    }

    /// One target: read what is needed, then (unless a dry run) act.
    async fn apply(&self, action: &SyncAction, target: &Target, dry_run: bool) -> TargetResult {
        match self.try_apply(action, target, dry_run).await {
            Ok(r) => r,
            Err(err) => TargetResult::new(
                target,
                Outcome::Unknown,
                format!("broker error: {err}; the action may or may not have happened"),
            ),
        }
    }

    async fn try_apply(
        &self,
        action: &SyncAction,
        target: &Target,
        dry_run: bool,
    ) -> Result<TargetResult, warden_celery::broker::BrokerError> {
        let node = target.node();
        let c = &self.celery;
        let would = |what: String| Ok(TargetResult::new(target, Outcome::WouldApply, what));
        match action {
            SyncAction::Pause { queues } | SyncAction::Resume { queues } => {
                let pause = matches!(action, SyncAction::Pause { .. });
                let consuming = match c.active_queues(node).await? {
                    Some(q) => q,
                    None => {
                        return Ok(TargetResult::new(
                            target,
                            Outcome::Unknown,
                            "the worker did not say which queues it consumes",
                        ));
                    }
                };
                let wanted: Vec<String> = match (pause, queues.is_empty()) {
                    (true, true) => consuming.clone(),
                    (false, true) => self.paused_queues(&target.name()).into_iter().collect(),
                    _ => queues.clone(),
                };
                let todo: Vec<String> = wanted
                    .into_iter()
                    .filter(|q| consuming.contains(q) == pause)
                    .collect();
                if todo.is_empty() {
                    let why = if pause {
                        "consumes none of these queues"
                    } else {
                        "already consuming every one of these queues"
                    };
                    return Ok(TargetResult::new(target, Outcome::Skipped, why));
                }
                let verb = if pause { "stop" } else { "start" };
                if dry_run {
                    return would(format!("would {verb} consuming {}", todo.join(", ")));
                }
                let mut done = Vec::new();
                for queue in &todo {
                    let answer = if pause {
                        c.call(node, "cancel_consumer", json!({"queue": queue}))
                            .await?
                    } else {
                        c.call(node, "add_consumer", json!({"queue": queue}))
                            .await?
                    };
                    let (code, message) = outcome(answer);
                    if code != Outcome::Applied {
                        return Ok(TargetResult::new(
                            target,
                            code,
                            format!("{queue}: {message} (done before: {})", done.join(", ")),
                        ));
                    }
                    self.mark_paused(&target.name(), queue, pause);
                    done.push(queue.clone());
                }
                let verb = if pause { "stopped" } else { "started" };
                Ok(TargetResult::new(
                    target,
                    Outcome::Applied,
                    format!("{verb} consuming {}", done.join(", ")),
                ))
            }
            SyncAction::PoolSize { size } => {
                let size = *size as usize;
                let Some((implementation, current)) = c.pool_size(node).await? else {
                    return Ok(TargetResult::new(
                        target,
                        Outcome::Unknown,
                        "the worker did not report its pool size",
                    ));
                };
                if implementation.contains("solo") || implementation.contains("thread") {
                    return Ok(TargetResult::new(
                        target,
                        Outcome::NotSupported,
                        format!("a {implementation} pool cannot be resized"),
                    ));
                }
                if current == size {
                    return Ok(TargetResult::new(
                        target,
                        Outcome::Skipped,
                        format!("pool size already {size}"),
                    ));
                }
                let change = format!("pool size {current} -> {size}");
                if dry_run {
                    return would(change);
                }
                let (method, n) = if size > current {
                    ("pool_grow", size - current)
                } else {
                    ("pool_shrink", current - size)
                };
                let (code, message) = outcome(c.call(node, method, json!({"n": n})).await?);
                if code == Outcome::Failed && message.contains("autoscale") {
                    // An autoscaled pool is sized through its range.
                    let (code, message) = outcome(
                        c.call(node, "autoscale", json!({"max": size, "min": size}))
                            .await?,
                    );
                    return Ok(TargetResult::new(
                        target,
                        code,
                        format!("{change}: {message}"),
                    ));
                }
                Ok(TargetResult::new(
                    target,
                    code,
                    format!("{change}: {message}"),
                ))
            }
            SyncAction::RateLimit { task, rate } => {
                if dry_run {
                    return would(format!("would set the rate limit of {task} to {rate}"));
                }
                let (code, message) = outcome(
                    c.call(
                        node,
                        "rate_limit",
                        json!({"task_name": task, "rate_limit": rate}),
                    )
                    .await?,
                );
                Ok(TargetResult::new(target, code, message))
            }
            SyncAction::TimeLimit { task, soft, hard } => {
                if dry_run {
                    return would(format!(
                        "would set the time limits of {task} to soft {soft:?} s, hard {hard:?} s"
                    ));
                }
                let (code, message) = outcome(
                    c.call(
                        node,
                        "time_limit",
                        json!({"task_name": task, "soft": soft, "hard": hard}),
                    )
                    .await?,
                );
                Ok(TargetResult::new(target, code, message))
            }
            SyncAction::Revoke {
                ids,
                terminate,
                signal,
            } => {
                if dry_run {
                    return would(format!("would revoke {} task(s)", ids.len()));
                }
                let (code, message) = outcome(
                    c.call(
                        node,
                        "revoke",
                        json!({"task_id": ids, "terminate": terminate, "signal": signal}),
                    )
                    .await?,
                );
                Ok(TargetResult::new(target, code, message))
            }
            SyncAction::Cordon { .. } | SyncAction::Uncordon => {
                Ok(self.cordon(action, target, dry_run))
            }
        }
    }
}
