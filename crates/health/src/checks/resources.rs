//! `cpu`, `memory`, `gpu`, `disk`: the worker's resource usage as its resource source last
//! measured it. No source (or a figure the source does not give) reports nothing; a source
//! that is down makes the check fail to run (its figures are stale).
use warden_core::{HealthStatus, ResourceUsage, Worker};

use super::{CheckError, Context, Outcome, ceiling, finding, level, source_down, usable};
use crate::format;

/// The worker's figures, when a source gave any and that source is up.
fn usage<'a>(ctx: &Context<'a>) -> Result<Option<&'a ResourceUsage>, CheckError> {
    let Some(usage) = ctx.worker.resources.as_deref() else {
        return Ok(None);
    };
    if let Some(status) = ctx.fleet.source(usage.source)
        && !status.connected
    {
        return Err(source_down(status));
    }
    Ok(Some(usage))
}

/// The cores a worker may use: `cpu_cores` when configured, else the pool's concurrency for
/// a process pool (each process can use a core), else 1 (one process, or threads behind one
/// interpreter lock).
pub fn allowed_cores(worker: &Worker, configured: f64) -> f64 {
    if configured > 0.0 {
        return configured;
    }
    match &worker.pool {
        Some(pool) if matches!(pool.implementation.as_str(), "prefork" | "processes") => {
            f64::from(pool.max_concurrency.max(1))
        }
        _ => 1.0,
    }
}

/// CPU in percent of the worker's allowed cores: the source's percent of one core (the
/// worker and its pool children together, up to 100 × cores) divided by the cores.
pub fn cpu(ctx: &Context<'_>) -> Result<Outcome, CheckError> {
    let Some(usage) = usage(ctx)? else {
        return Ok(Outcome::NoData);
    };
    let Some(raw) = usage.cpu_percent else {
        return Ok(Outcome::NoData);
    };
    let raw = usable("cpu_percent", raw)?;
    let l = ctx.limits;
    let cores = allowed_cores(ctx.worker, l.cpu_cores);
    let percent = raw / cores;
    let Some((status, threshold)) = ceiling(percent, l.cpu_warning, l.cpu_critical) else {
        return Ok(Outcome::Pass);
    };
    let of = if cores == 1.0 {
        String::new()
    } else {
        format!(
            " of {} cores ({} of one core)",
            format::number(cores, ""),
            format::percent(raw)
        )
    };
    Ok(Outcome::one(finding(
        "cpu",
        status,
        format!(
            "CPU {}{of} ({} at {})",
            format::percent(percent),
            level(status),
            format::percent(threshold)
        ),
        percent,
        threshold,
        "percent",
    )))
}

/// Memory in percent of the worker's limit, and against the absolute `memory_bytes` limit
/// when configured. One finding at most: the worse of the two (the percent one on a tie).
pub fn memory(ctx: &Context<'_>) -> Result<Outcome, CheckError> {
    let Some(usage) = usage(ctx)? else {
        return Ok(Outcome::NoData);
    };
    let Some(used) = usage.memory_bytes else {
        return Ok(Outcome::NoData);
    };
    let l = ctx.limits;
    let mut judged = false;
    let mut worst = None;
    if let Some(percent) = usage.memory_percent() {
        judged = true;
        if let Some((status, threshold)) = ceiling(percent, l.memory_warning, l.memory_critical) {
            let limit = usage.memory_limit_bytes.unwrap_or_default() as f64;
            worst = Some(finding(
                "memory",
                status,
                format!(
                    "memory {} of its {} limit ({}; {} at {})",
                    format::percent(percent),
                    format::bytes(limit),
                    format::bytes(used as f64),
                    level(status),
                    format::percent(threshold)
                ),
                percent,
                threshold,
                "percent",
            ));
        }
    }
    if l.memory_bytes > 0 {
        judged = true;
        let absolute_fires = used >= l.memory_bytes;
        let percent_critical = worst
            .as_ref()
            .is_some_and(|f| f.status == HealthStatus::Critical);
        if absolute_fires && !percent_critical {
            worst = Some(finding(
                "memory",
                HealthStatus::Critical,
                format!(
                    "memory {} (critical at {})",
                    format::bytes(used as f64),
                    format::bytes(l.memory_bytes as f64)
                ),
                used as f64,
                l.memory_bytes as f64,
                "bytes",
            ));
        }
    }
    Ok(match (judged, worst) {
        (false, _) => Outcome::NoData,
        (true, None) => Outcome::Pass,
        (true, Some(f)) => Outcome::one(f),
    })
}

/// GPU memory in percent: CRITICAL from `gpu_memory_critical` (no warning level).
pub fn gpu(ctx: &Context<'_>) -> Result<Outcome, CheckError> {
    let Some(usage) = usage(ctx)? else {
        return Ok(Outcome::NoData);
    };
    let Some(percent) = usage.gpu_memory_percent else {
        return Ok(Outcome::NoData);
    };
    let percent = usable("gpu_memory_percent", percent)?;
    let threshold = ctx.limits.gpu_memory_critical;
    if percent < threshold {
        return Ok(Outcome::Pass);
    }
    Ok(Outcome::one(finding(
        "gpu",
        HealthStatus::Critical,
        format!(
            "GPU memory {} (critical at {})",
            format::percent(percent),
            format::percent(threshold)
        ),
        percent,
        threshold,
        "percent",
    )))
}

/// Disk use of the worker's data volume in percent.
pub fn disk(ctx: &Context<'_>) -> Result<Outcome, CheckError> {
    let Some(usage) = usage(ctx)? else {
        return Ok(Outcome::NoData);
    };
    let Some(percent) = usage.disk_percent else {
        return Ok(Outcome::NoData);
    };
    let percent = usable("disk_percent", percent)?;
    let l = ctx.limits;
    let Some((status, threshold)) = ceiling(percent, l.disk_warning, l.disk_critical) else {
        return Ok(Outcome::Pass);
    };
    Ok(Outcome::one(finding(
        "disk",
        status,
        format!(
            "disk {} full ({} at {})",
            format::percent(percent),
            level(status),
            format::percent(threshold)
        ),
        percent,
        threshold,
        "percent",
    )))
}
