//! The collection loop: every interval, one `collect` for the whole fleet; samples go to the
//! fleet owner, and the source's status (up, or down and why) with them.
//!
//! When a collection fails, workers keep their last figures: the source's status, down,
//! is what marks them stale (with their age), and nothing else about a worker changes.
use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use warden_core::{
    FleetHandle,
    model::{Lifecycle, SourceStatus, WorkerKey},
    owner::FleetMessage,
    ports::MetricSource,
};

/// Runs until `cancel` fires. `timeout` bounds one whole collection (the source also bounds
/// each request).
pub async fn run(
    source: Arc<dyn MetricSource>,
    fleet: FleetHandle,
    interval: Duration,
    timeout: Duration,
    cancel: CancellationToken,
) {
    let name = source.name();
    let mut status = SourceStatus::unknown_source(name, Vec::new());
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let workers: Vec<WorkerKey> = fleet
            .snapshot()
            .workers
            .values()
            .filter(|w| w.lifecycle == Lifecycle::Alive)
            .map(|w| w.key.clone())
            .collect();
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(timeout, source.collect(&workers)) => r,
        };
        let outcome = match outcome {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("{name} did not answer within {timeout:?}")),
        };
        let was_connected = status.connected;
        match outcome {
            Ok(samples) => {
                status.connected = true;
                status.reason.clear();
                status.last_ok = Some(std::time::SystemTime::now());
                if !was_connected {
                    tracing::info!(source = name, "resource source up");
                }
                if fleet.observe(FleetMessage::Samples(samples)).await.is_err() {
                    return;
                }
            }
            Err(reason) => {
                if was_connected || status.reason != reason {
                    tracing::warn!(source = name, %reason, "resource source down: figures are stale");
                }
                status.connected = false;
                status.reason = reason;
            }
        }
        if fleet
            .observe(FleetMessage::Source(status.clone()))
            .await
            .is_err()
        {
            return;
        }
    }
}
