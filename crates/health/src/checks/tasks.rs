//! `error_rate`, `latency`, `throughput`: task performance over the last 5 minutes (the
//! 5 min window of the worker's task statistics), the last two against the worker's own 24 h
//! baseline.
use warden_core::{HealthStatus, WindowReport};

use super::{CheckError, Context, Outcome, ceiling, finding, level, source_down, usable};
use crate::format;

/// Index of the 5 min window in `TaskStats::overall` (1 min, 5 min, 1 h).
const FIVE_MINUTES: usize = 1;

fn window<'a>(ctx: &Context<'a>) -> Option<&'a WindowReport> {
    ctx.worker
        .task_stats
        .as_deref()
        .map(|s| &s.overall[FIVE_MINUTES])
}

/// failed / (succeeded + failed) over 5 min, judged once at least `min_tasks` finished.
pub fn error_rate(ctx: &Context<'_>) -> Result<Outcome, CheckError> {
    let Some(w) = window(ctx) else {
        return Ok(Outcome::NoData);
    };
    let l = ctx.limits;
    let finished = u64::from(w.counts.succeeded) + u64::from(w.counts.failed);
    if finished == 0 || finished < u64::from(l.min_tasks) {
        return Ok(Outcome::NoData);
    }
    let rate = w.error_rate();
    let Some((status, threshold)) = ceiling(rate, l.error_rate_warning, l.error_rate_critical)
    else {
        return Ok(Outcome::Pass);
    };
    Ok(Outcome::one(finding(
        "error_rate",
        status,
        format!(
            "error rate {} over 5 min ({} of {finished} tasks failed; {} at {})",
            format::percent(rate * 100.0),
            w.counts.failed,
            level(status),
            format::percent(threshold * 100.0)
        ),
        rate,
        threshold,
        "ratio",
    )))
}

/// p95 runtime over 5 min at or above `latency_factor` × the 24 h baseline: WARNING.
pub fn latency(ctx: &Context<'_>) -> Result<Outcome, CheckError> {
    let Some(baseline) = ctx
        .baseline
        .and_then(|b| b.p95_runtime_secs)
        .filter(|b| *b > 0.0)
    else {
        return Ok(Outcome::NoData);
    };
    let baseline = usable("baseline p95 runtime", baseline)?;
    let Some(w) = window(ctx) else {
        return Ok(Outcome::NoData);
    };
    let l = ctx.limits;
    if w.runtime.count == 0 || w.runtime.count < u64::from(l.min_tasks) {
        return Ok(Outcome::NoData);
    }
    let p95 = usable("p95 runtime", f64::from(w.runtime.p95))?;
    let threshold = l.latency_factor * baseline;
    if p95 < threshold {
        return Ok(Outcome::Pass);
    }
    Ok(Outcome::one(finding(
        "latency",
        HealthStatus::Warning,
        format!(
            "p95 runtime {} over 5 min is {}× its 24 h baseline {} (warning at {}×)",
            format::secs(p95),
            format::number(p95 / baseline, ""),
            format::secs(baseline),
            format::number(l.latency_factor, "")
        ),
        p95,
        threshold,
        "s",
    )))
}

/// Throughput over 5 min at or below `throughput_factor` × the 24 h baseline while a queue
/// the worker consumes holds messages: WARNING. Judged once the worker has been observed for
/// the whole 5 minutes (a worker that just started has no rate yet).
pub fn throughput(ctx: &Context<'_>) -> Result<Outcome, CheckError> {
    let Some(baseline) = ctx
        .baseline
        .and_then(|b| b.throughput_per_min)
        .filter(|b| *b > 0.0)
    else {
        return Ok(Outcome::NoData);
    };
    let baseline = usable("baseline throughput", baseline)?;
    let Some(w) = window(ctx) else {
        return Ok(Outcome::NoData);
    };
    if w.covered_secs < w.window_secs {
        return Ok(Outcome::NoData);
    }
    if let Some(down) = ctx.fleet.backend_down(ctx.worker.key.backend) {
        // Queue depths are stale: whether the worker should be busy is unknown.
        return Err(source_down(down));
    }
    let Some(backlog) = ctx.backlog else {
        return Ok(Outcome::NoData);
    };
    if backlog.messages == 0 {
        return Ok(Outcome::Pass);
    }
    let rate = w.throughput_per_min();
    let threshold = ctx.limits.throughput_factor * baseline;
    if rate > threshold {
        return Ok(Outcome::Pass);
    }
    Ok(Outcome::one(finding(
        "throughput",
        HealthStatus::Warning,
        format!(
            "throughput {} over 5 min is {} of its 24 h baseline {} while queue {:?} holds {} \
             messages (warning at {})",
            format::number(rate, "/min"),
            format::percent(rate / baseline * 100.0),
            format::number(baseline, "/min"),
            backlog.queue,
            backlog.messages,
            format::percent(ctx.limits.throughput_factor * 100.0)
        ),
        rate,
        threshold,
        "per_min",
    )))
}
