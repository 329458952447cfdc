//! `heartbeat`: how late the worker's heartbeat is.
use std::time::{Duration, SystemTime};

use warden_core::{Finding, HealthStatus, Worker};

use super::{CheckError, Context, Outcome, ceiling, finding, level, source_down};
use crate::{config::Limits, format};

/// Lateness: silence (age of the freshest evidence of life, counted from warden's restart at
/// the latest for a remembered worker) beyond the heartbeat period the worker announced —
/// the core's own definition, so that the finding and the lifecycle agree.
pub fn lateness(worker: &Worker, now: SystemTime) -> Duration {
    worker
        .silence(now)
        .saturating_sub(worker.heartbeat_interval.unwrap_or_default())
}

/// WARNING from `heartbeat_warning` late, CRITICAL from `heartbeat_critical`. While a source
/// the worker is observed through is down, its silence proves nothing: the check cannot run.
pub fn check(ctx: &Context<'_>) -> Result<Outcome, CheckError> {
    if let Some(down) = ctx.fleet.backend_down(ctx.worker.key.backend) {
        return Err(source_down(down));
    }
    let late = lateness(ctx.worker, ctx.now);
    let l = ctx.limits;
    let Some((status, threshold)) = ceiling(
        late.as_secs_f64(),
        l.heartbeat_warning.as_secs_f64(),
        l.heartbeat_critical.as_secs_f64(),
    ) else {
        return Ok(Outcome::Pass);
    };
    Ok(Outcome::one(finding(
        "heartbeat",
        status,
        format!(
            "heartbeat {} late ({} at {})",
            format::duration(late),
            level(status),
            format::secs(threshold)
        ),
        late.as_secs_f64(),
        threshold,
        "s",
    )))
}

/// The one finding of a LOST worker (no other check runs for it).
pub fn lost(worker: &Worker, limits: &Limits, now: SystemTime) -> Finding {
    let late = lateness(worker, now);
    let threshold = limits.heartbeat_critical.as_secs_f64();
    let message = if worker.lost_at.is_some() && late < limits.heartbeat_critical {
        format!(
            "lost: its liveness lease expired (heartbeat {} late)",
            format::duration(late)
        )
    } else {
        format!(
            "lost: heartbeat {} late (critical at {})",
            format::duration(late),
            format::secs(threshold)
        )
    };
    finding(
        "heartbeat",
        HealthStatus::Critical,
        message,
        late.as_secs_f64(),
        threshold,
        "s",
    )
}
