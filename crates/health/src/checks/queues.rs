//! `queue_connection` (the broker is reachable and the worker consumes the queues it should)
//! and `stalled` (work is waiting, the worker is alive and does none of it).
use warden_core::{HealthStatus, Lifecycle, UNGROUPED};

use super::{CheckError, Context, Outcome, finding, source_down};
use crate::format;

/// CRITICAL when a source the worker's backend is observed through (the broker) is down.
/// Then its queues: with `expected_queues` configured, CRITICAL when it consumes none of them
/// and WARNING when it misses some; without, CRITICAL when it consumes no queue at all once
/// its queues are known. Passing needs both parts judged: the broker's status known and up,
/// and its queues known.
pub fn connection(ctx: &Context<'_>) -> Result<Outcome, CheckError> {
    let w = ctx.worker;
    let mut broker_known = false;
    for source in ctx.fleet.backend_sources(w.key.backend) {
        broker_known = true;
        if !source.connected {
            let since = source
                .last_ok
                .and_then(|t| ctx.now.duration_since(t).ok())
                .unwrap_or_default();
            let how_long = if source.last_ok.is_some() {
                format!(" for {}", format::duration(since))
            } else {
                String::new()
            };
            return Ok(Outcome::one(finding(
                "queue_connection",
                HealthStatus::Critical,
                format!(
                    "{} unreachable{how_long}: {}",
                    source.source,
                    if source.reason.is_empty() {
                        "no reason given"
                    } else {
                        &source.reason
                    }
                ),
                0.0,
                1.0,
                "ratio",
            )));
        }
    }
    let consumes = |name: &str| w.queues.iter().any(|q| q.name == name);
    let expected = &ctx.limits.expected_queues;
    if !expected.is_empty() {
        let missing: Vec<&str> = expected
            .iter()
            .map(String::as_str)
            .filter(|q| !consumes(q))
            .collect();
        if !missing.is_empty() {
            let consumed = expected.len() - missing.len();
            let status = if consumed == 0 {
                HealthStatus::Critical
            } else {
                HealthStatus::Warning
            };
            return Ok(Outcome::one(finding(
                "queue_connection",
                status,
                format!(
                    "not consuming expected queue{} {} ({consumed} of {} consumed)",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join(", "),
                    expected.len()
                ),
                consumed as f64 / expected.len() as f64,
                1.0,
                "ratio",
            )));
        }
    } else {
        // A Celery worker's queues are known once it reported them (it has a group then).
        let known = !w.queues.is_empty() || *w.group != *UNGROUPED;
        if !known {
            return Ok(Outcome::NoData);
        }
        if w.queues.is_empty() {
            return Ok(Outcome::one(finding(
                "queue_connection",
                HealthStatus::Critical,
                "consumes no queue".into(),
                0.0,
                1.0,
                "ratio",
            )));
        }
    }
    Ok(if broker_known {
        Outcome::Pass
    } else {
        Outcome::NoData
    })
}

/// CRITICAL when a queue the worker consumes holds messages, the worker is ALIVE, runs no
/// task, and has shown no progress for `stalled_after` — counted from its last progress or
/// from when the engine first saw the backlog, whichever is later (see
/// [`crate::memory::WorkerMemory::stall_since`]).
pub fn stalled(ctx: &Context<'_>) -> Result<Outcome, CheckError> {
    let w = ctx.worker;
    if w.lifecycle != Lifecycle::Alive {
        return Ok(Outcome::NoData);
    }
    if let Some(down) = ctx.fleet.backend_down(w.key.backend) {
        return Err(source_down(down));
    }
    let Some(backlog) = ctx.backlog else {
        return Ok(Outcome::NoData);
    };
    if backlog.messages == 0 || w.active_tasks > 0 {
        return Ok(Outcome::Pass);
    }
    let Some(since) = ctx.memory.stall_since() else {
        return Ok(Outcome::NoData);
    };
    let idle = ctx.now.duration_since(since).unwrap_or_default();
    let threshold = ctx.limits.stalled_after;
    if idle < threshold {
        return Ok(Outcome::Pass);
    }
    Ok(Outcome::one(finding(
        "stalled",
        HealthStatus::Critical,
        format!(
            "stalled: queue {:?} holds {} messages and no task started for {} (critical at {})",
            backlog.queue,
            backlog.messages,
            format::duration(idle),
            format::duration(threshold)
        ),
        idle.as_secs_f64(),
        threshold.as_secs_f64(),
        "s",
    )))
}
