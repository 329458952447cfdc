//! Each worker's own 24-hour baseline (p95 task runtime, throughput), read from history for
//! the health engine's `latency` and `throughput` checks.
//!
//! Recomputed every [`REFRESH_EVERY`], one worker after the other (two queries each, over
//! the index ordered by worker and time), so that the store is never flooded. A worker history
//! knows nothing about gets no baseline, and those two checks skip it.
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use warden_core::{
    FleetHandle, Lifecycle, WorkerKey,
    history::{self, HistoryStore, SeriesQuery, Subject},
    sketch::Sketch,
};
use warden_health::{Baseline, Baselines};

/// How often baselines are recomputed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(600);
/// The span a baseline covers.
pub const SPAN: Duration = Duration::from_secs(24 * 3600);
/// Each query's limit.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Recomputes the baselines of the alive workers every [`REFRESH_EVERY`] until `cancel`.
pub async fn run(
    fleet: FleetHandle,
    store: Arc<dyn HistoryStore>,
    baselines: watch::Sender<Arc<Baselines>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = fleet.snapshot();
        let now = fleet.clock().now();
        let mut workers = BTreeMap::new();
        for w in snapshot.workers.values() {
            if w.lifecycle != Lifecycle::Alive {
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                baseline = worker_baseline(store.as_ref(), &w.key, now) => {
                    if let Some(b) = baseline {
                        workers.insert(w.key.clone(), b);
                    }
                }
            }
        }
        let _ = baselines.send(Arc::new(Baselines {
            computed_at: Some(now),
            workers,
        }));
    }
}

/// One worker's baseline over the last [`SPAN`]; `None` when history has nothing for it.
pub async fn worker_baseline(
    store: &dyn HistoryStore,
    key: &WorkerKey,
    now: SystemTime,
) -> Option<Baseline> {
    let query = |name: &str| {
        history::metric(name).map(|metric| SeriesQuery {
            subject: Subject::Worker(key.clone()),
            metric,
            start: now - SPAN,
            end: now,
            step: SPAN,
        })
    };
    let read = |q: SeriesQuery| async move {
        match tokio::time::timeout(QUERY_TIMEOUT, store.buckets(&q)).await {
            Ok(Ok(buckets)) => buckets,
            Ok(Err(err)) => {
                tracing::debug!(%err, "baseline query failed");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    };
    let throughput = read(query("throughput")?).await;
    let (finished, minutes) = throughput
        .iter()
        .fold((0.0, 0.0), |(n, d), b| (n + b.numerator, d + b.denominator));
    let runtime = read(query("runtime")?).await;
    let mut merged = Sketch::default();
    for b in &runtime {
        if let Some(d) = &b.distribution {
            merged.merge(d);
        }
    }
    let baseline = Baseline {
        p95_runtime_secs: (merged.count() > 0)
            .then(|| merged.quantile(0.95))
            .flatten()
            .map(|d| d.as_secs_f64()),
        throughput_per_min: (minutes > 0.0).then(|| finished / minutes),
    };
    (baseline.p95_runtime_secs.is_some() || baseline.throughput_per_min.is_some())
        .then_some(baseline)
}
