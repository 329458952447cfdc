//! `forecast`: memory or disk reaching its limit within `forecast_horizon`, by a
//! least-squares line through the samples of the last `forecast_window` (at least
//! `forecast_min_points` of them). The finding's `observed` is the predicted number of
//! seconds until the limit, its `threshold` the horizon; it fires at `eta <= horizon`.
use warden_core::{Finding, HealthStatus};

use super::{CheckError, Context, Outcome, finding, source_down};
use crate::{
    format,
    memory::{Series, secs},
};

/// A line fitted to a series: its slope (per second) and its value now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    pub slope: f64,
    pub value_now: f64,
}

/// The least-squares line through `points` (x in seconds), evaluated at `now`; `None` with
/// fewer than 2 distinct times.
pub fn fit(points: impl Iterator<Item = (f64, f64)> + Clone, now: f64) -> Option<Line> {
    // x relative to now keeps the sums precise (epoch seconds are ~1.7e9).
    let (mut n, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (x, y) in points.clone() {
        n += 1.0;
        sx += x - now;
        sy += y;
    }
    if n < 2.0 {
        return None;
    }
    let (mx, my) = (sx / n, sy / n);
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for (x, y) in points {
        let dx = x - now - mx;
        sxx += dx * dx;
        sxy += dx * (y - my);
    }
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some(Line {
        slope,
        value_now: my - slope * mx,
    })
}

/// Seconds from `now` until the fitted line reaches `limit` (0 when it is there already);
/// `None` when the series is flat or falling, or has fewer than `min_points` samples.
pub fn eta(series: &Series, now: f64, limit: f64, min_points: u32) -> Option<(f64, Line)> {
    if series.len() < min_points as usize {
        return None;
    }
    let line = fit(series.points(), now)?;
    if line.slope.is_nan() || line.slope <= 0.0 {
        return None;
    }
    let eta = ((limit - line.value_now) / line.slope).max(0.0);
    eta.is_finite().then_some((eta, line))
}

pub fn check(ctx: &Context<'_>) -> Result<Outcome, CheckError> {
    let Some(usage) = ctx.worker.resources.as_deref() else {
        return Ok(Outcome::NoData);
    };
    if let Some(status) = ctx.fleet.source(usage.source)
        && !status.connected
    {
        return Err(source_down(status));
    }
    let l = ctx.limits;
    let now = secs(ctx.now);
    let horizon = l.forecast_horizon.as_secs_f64();
    let enough = |s: &Series| s.len() >= l.forecast_min_points as usize;
    let mut judged = false;
    let mut findings: Vec<Finding> = Vec::new();

    let memory_limit = match (usage.memory_limit_bytes, l.memory_bytes) {
        (Some(reported), 0) => Some(reported),
        (Some(reported), configured) => Some(reported.min(configured)),
        (None, 0) => None,
        (None, configured) => Some(configured),
    };
    if let Some(limit) = memory_limit
        && enough(&ctx.memory.memory)
    {
        judged = true;
        if let Some((eta, line)) = eta(&ctx.memory.memory, now, limit as f64, l.forecast_min_points)
            && eta <= horizon
        {
            findings.push(finding(
                "forecast",
                HealthStatus::Warning,
                format!(
                    "memory reaches its limit {} in {} (+{}/min over the last {}; warning \
                     within {})",
                    format::bytes(limit as f64),
                    format::secs(eta),
                    format::bytes(line.slope * 60.0),
                    format::duration(l.forecast_window),
                    format::duration(l.forecast_horizon)
                ),
                eta,
                horizon,
                "s",
            ));
        }
    }
    if usage.disk_percent.is_some() && enough(&ctx.memory.disk) {
        judged = true;
        if let Some((eta, line)) = eta(&ctx.memory.disk, now, 100.0, l.forecast_min_points)
            && eta <= horizon
        {
            findings.push(finding(
                "forecast",
                HealthStatus::Warning,
                format!(
                    "disk fills up in {} (+{} per min over the last {}; warning within {})",
                    format::secs(eta),
                    format::percent(line.slope * 60.0),
                    format::duration(l.forecast_window),
                    format::duration(l.forecast_horizon)
                ),
                eta,
                horizon,
                "s",
            ));
        }
    }
    Ok(match (judged, findings.is_empty()) {
        (false, _) => Outcome::NoData,
        (true, true) => Outcome::Pass,
        (true, false) => Outcome::Found(findings),
    })
}
