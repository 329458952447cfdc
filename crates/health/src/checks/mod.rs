//! The checks: small functions from one worker's figures to findings.
//!
//! Each check answers one [`Outcome`]:
//! - `Pass`: it had its data and found nothing wrong (the check is listed in
//!   `Health.passing`);
//! - `Found`: findings (WARNING or CRITICAL when a threshold is reached);
//! - `NoData`: its data is missing (no resource source, no task finished, no baseline, queues
//!   not known yet): nothing is reported and the check is *not* passing, so that absent data
//!   never reads as a pass.
//!
//! A check that cannot run answers a [`CheckError`] (its data source is down, a figure is not a
//! number, or the check panicked): the engine turns it into one finding with `error: true`,
//! which weighs nothing on the verdict, and the other checks still run and decide.
use std::{
    collections::HashMap,
    panic::{AssertUnwindSafe, catch_unwind},
    time::SystemTime,
};

use warden_core::{Backend, Finding, HealthStatus, Snapshot, SourceStatus, Worker};

use crate::{baseline::Baseline, config::Limits, memory::WorkerMemory};

pub mod forecast;
pub mod heartbeat;
pub mod queues;
pub mod resources;
pub mod tasks;

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Found(Vec<Finding>),
    NoData,
}

impl Outcome {
    fn one(finding: Finding) -> Self {
        Outcome::Found(vec![finding])
    }
}

/// Why a check could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckError {
    /// The source its figures come from is down: they cannot be trusted now. The fleet is
    /// unobservable, the engine is not failing.
    #[error("{name} is down ({reason}): not checked")]
    SourceDown { name: String, reason: String },
    /// A figure it needs is not usable (not a number, negative).
    #[error("unusable figure: {0}")]
    BadData(String),
    /// The check itself failed (a bug): the others still ran.
    #[error("the check failed: {0}")]
    Panicked(String),
}

impl CheckError {
    /// A failure of the engine (bad data, a bug), as opposed to a source being down.
    pub fn is_engine_failure(&self) -> bool {
        !matches!(self, CheckError::SourceDown { .. })
    }
}

/// What the checks may read about one worker.
pub struct Context<'a> {
    pub now: SystemTime,
    pub worker: &'a Worker,
    pub limits: &'a Limits,
    pub baseline: Option<&'a Baseline>,
    pub fleet: &'a FleetView<'a>,
    pub memory: &'a WorkerMemory,
    /// Messages waiting in its queues ([`FleetView::backlog`]), computed once per worker.
    pub backlog: Option<Backlog<'a>>,
}

/// What one cycle reads from the snapshot once, for every worker.
pub struct FleetView<'a> {
    pub snapshot: &'a Snapshot,
    /// Messages waiting in each queue (not yet delivered), by backend and name.
    depths: HashMap<(Backend, &'a str), u64>,
}

/// Messages waiting in the queues a worker consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog<'a> {
    /// Summed over its queues whose depth is known.
    pub messages: u64,
    /// The fullest of them.
    pub queue: &'a str,
}

impl<'a> FleetView<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        let depths = snapshot
            .queues
            .iter()
            .map(|((backend, name), info)| ((*backend, name.as_str()), info.depth))
            .collect();
        Self { snapshot, depths }
    }

    /// The sources the worker's backend is observed through (the broker for Celery, the
    /// Streams poller for Redis Streams); empty when the snapshot has none for it.
    pub fn backend_sources(&self, backend: Backend) -> impl Iterator<Item = &'a SourceStatus> {
        self.snapshot
            .sources
            .values()
            .filter(move |s| s.backends.contains(&backend))
    }

    /// The first source of the backend that is down.
    pub fn backend_down(&self, backend: Backend) -> Option<&'a SourceStatus> {
        self.backend_sources(backend).find(|s| !s.connected)
    }

    /// The status of a named source (a resource source), when the snapshot has it.
    pub fn source(&self, name: &str) -> Option<&'a SourceStatus> {
        self.snapshot.sources.get(name)
    }

    /// Messages waiting in the queues `worker` consumes; `None` when none of their depths is
    /// known.
    pub fn backlog<'w>(&self, worker: &'w Worker) -> Option<Backlog<'w>> {
        let mut total = 0u64;
        let mut fullest: Option<(&'w str, u64)> = None;
        for q in &worker.queues {
            let Some(&depth) = self.depths.get(&(worker.key.backend, q.name.as_str())) else {
                continue;
            };
            total = total.saturating_add(depth);
            if fullest.is_none_or(|(_, most)| depth > most) {
                fullest = Some((&q.name, depth));
            }
        }
        fullest.map(|(queue, _)| Backlog {
            messages: total,
            queue,
        })
    }
}

pub(crate) fn source_down(status: &SourceStatus) -> CheckError {
    CheckError::SourceDown {
        name: status.source.to_string(),
        reason: if status.reason.is_empty() {
            "no reason given".into()
        } else {
            status.reason.clone()
        },
    }
}

type Run = fn(&Context<'_>) -> Result<Outcome, CheckError>;

/// One check: its id (as in `Finding.check` and alert rules), the unit of its figures, and
/// the function.
#[derive(Clone, Copy)]
pub struct Check {
    pub id: &'static str,
    pub unit: &'static str,
    pub run: Run,
}

/// Every check, in the order their findings are listed.
pub const CHECKS: [Check; 11] = [
    Check {
        id: "heartbeat",
        unit: "s",
        run: heartbeat::check,
    },
    Check {
        id: "cpu",
        unit: "percent",
        run: resources::cpu,
    },
    Check {
        id: "memory",
        unit: "percent",
        run: resources::memory,
    },
    Check {
        id: "gpu",
        unit: "percent",
        run: resources::gpu,
    },
    Check {
        id: "disk",
        unit: "percent",
        run: resources::disk,
    },
    Check {
        id: "error_rate",
        unit: "ratio",
        run: tasks::error_rate,
    },
    Check {
        id: "latency",
        unit: "s",
        run: tasks::latency,
    },
    Check {
        id: "throughput",
        unit: "per_min",
        run: tasks::throughput,
    },
    Check {
        id: "queue_connection",
        unit: "ratio",
        run: queues::connection,
    },
    Check {
        id: "stalled",
        unit: "s",
        run: queues::stalled,
    },
    Check {
        id: "forecast",
        unit: "s",
        run: forecast::check,
    },
];

/// The ids of [`CHECKS`] (what `disable` accepts).
pub const CHECK_IDS: [&str; 11] = [
    "heartbeat",
    "cpu",
    "memory",
    "gpu",
    "disk",
    "error_rate",
    "latency",
    "throughput",
    "queue_connection",
    "stalled",
    "forecast",
];

/// The findings and passing checks of one worker, and how many checks could not run.
#[derive(Debug, Default)]
pub struct CheckResults {
    pub findings: Vec<Finding>,
    pub passing: Vec<&'static str>,
    /// Checks that failed because of the engine (bad data, a bug).
    pub failed: usize,
    /// Checks that could not run because a source is down.
    pub unobservable: usize,
}

/// Runs every check not disabled for the worker; one that fails yields an error finding and
/// the rest still run.
pub fn run_all(checks: &[Check], ctx: &Context<'_>) -> CheckResults {
    let mut out = CheckResults {
        passing: Vec::with_capacity(checks.len()),
        ..Default::default()
    };
    for check in checks {
        if !ctx.limits.disable.is_empty() && ctx.limits.disable.iter().any(|d| d == check.id) {
            continue;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| (check.run)(ctx)))
            .unwrap_or_else(|panic| Err(CheckError::Panicked(panic_text(&panic))));
        match outcome {
            Ok(Outcome::Pass) => out.passing.push(check.id),
            Ok(Outcome::Found(findings)) => out.findings.extend(findings),
            Ok(Outcome::NoData) => {}
            Err(e) => {
                if e.is_engine_failure() {
                    out.failed += 1;
                } else {
                    out.unobservable += 1;
                }
                out.findings.push(Finding {
                    check: check.id,
                    status: HealthStatus::Healthy,
                    message: e.to_string(),
                    observed: 0.0,
                    threshold: 0.0,
                    unit: check.unit,
                    error: true,
                });
            }
        }
    }
    out
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".into())
}

/// A finding of a threshold reached.
pub(crate) fn finding(
    check: &'static str,
    status: HealthStatus,
    message: String,
    observed: f64,
    threshold: f64,
    unit: &'static str,
) -> Finding {
    Finding {
        check,
        status,
        message,
        observed,
        threshold,
        unit,
        error: false,
    }
}

/// The level a ceiling threshold pair gives `observed` (fires at `>=`), with the threshold
/// reached.
pub(crate) fn ceiling(observed: f64, warning: f64, critical: f64) -> Option<(HealthStatus, f64)> {
    if observed >= critical {
        Some((HealthStatus::Critical, critical))
    } else if observed >= warning {
        Some((HealthStatus::Warning, warning))
    } else {
        None
    }
}

pub(crate) fn level(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Healthy => "healthy",
        HealthStatus::Warning => "warning",
        HealthStatus::Critical => "critical",
    }
}

/// A figure that must be a finite number ≥ 0.
pub(crate) fn usable(what: &str, v: f64) -> Result<f64, CheckError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(CheckError::BadData(format!("{what} is {v}")))
    }
}
