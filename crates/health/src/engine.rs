//! The background engine: a cycle every interval, verdicts to the fleet owner.
use std::sync::Arc;

use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use warden_core::{FleetHandle, owner::FleetMessage};

use crate::{
    baseline::Baselines,
    evaluator::{CycleSummary, Evaluator},
};

/// The running engine: its task, and the summary of its latest cycle (`None` before the
/// first one).
pub struct HealthEngine {
    pub summaries: watch::Receiver<Option<Arc<CycleSummary>>>,
    pub task: JoinHandle<()>,
}

/// Runs a cycle at once and then every `evaluator.interval()`: reads the fleet's latest
/// snapshot and its clock, evaluates, sends the verdicts as [`FleetMessage::Health`], and
/// publishes the cycle's summary. Baselines are read fresh each cycle from `baselines`
/// (the binary replaces them every few minutes). Stops when `cancel` fires or the fleet
/// owner stops.
pub fn spawn(
    fleet: FleetHandle,
    mut evaluator: Evaluator,
    baselines: watch::Receiver<Arc<Baselines>>,
    cancel: CancellationToken,
) -> HealthEngine {
    let (summary_tx, summaries) = watch::channel(None);
    let task = tokio::spawn(async move {
        let interval = evaluator.interval();
        let mut tick = warden_core::clock::ticker(interval);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = fleet.stopped().cancelled() => return,
                _ = tick.tick() => {}
            }
            let snapshot = fleet.snapshot();
            let now = fleet.clock().now();
            let current = baselines.borrow().clone();
            let verdicts = evaluator.evaluate(&snapshot, &current, now);
            let summary = evaluator.summary().clone();
            let sent = tokio::select! {
                _ = cancel.cancelled() => return,
                sent = fleet.observe(FleetMessage::Health(verdicts)) => sent,
            };
            if sent.is_err() {
                return;
            }
            tracing::debug!(
                evaluated = summary.evaluated,
                warning = summary.warning,
                critical = summary.critical,
                failed_checks = summary.failed_checks,
                unobservable_checks = summary.unobservable_checks,
                took_ms = summary.duration.as_secs_f64() * 1e3,
                "health cycle"
            );
            if summary.duration > interval {
                tracing::warn!(
                    took_ms = summary.duration.as_secs_f64() * 1e3,
                    interval_ms = interval.as_secs_f64() * 1e3,
                    "a health cycle took longer than the interval"
                );
            }
            // Logged when it starts and stops, not every cycle.
            if (summary.workers_failed > 0) != failing {
                failing = summary.workers_failed > 0;
                if failing {
                    tracing::warn!(
                        workers = summary.workers_failed,
                        checks = summary.failed_checks,
                        "health checks failed to run for some workers (see their error findings)"
                    );
                } else {
                    tracing::info!("every health check runs again");
                }
            }
            summary_tx.send_replace(Some(Arc::new(summary)));
        }
    });
    HealthEngine { summaries, task }
}
