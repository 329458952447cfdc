//! Broker connectivity: a cheap command every second; readiness and staleness follow it.
use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::broker::Broker;
use crate::fleet::{BrokerStatus, Clock};

/// How often the broker is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Probes until `cancel`, publishing each change of status. The reason for a failure is
/// logged once when it starts (or changes), not on every probe.
pub async fn run(
    broker: Broker,
    clock: Arc<dyn Clock>,
    status: watch::Sender<BrokerStatus>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A data command, not PING: a Redis that is still loading its dataset answers PING.
        let probe = redis::cmd("EXISTS")
            .arg(broker.keys().key("_kombu.binding.celery"))
            .clone();
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = broker.query::<i64>(&probe) => r,
        };
        let previous = status.borrow().clone();
        let next = match result {
            Ok(_) => BrokerStatus {
                connected: true,
                reason: String::new(),
                last_ok: Some(clock.now()),
            },
            Err(err) => BrokerStatus {
                connected: false,
                reason: err.to_string(),
                last_ok: previous.last_ok,
            },
        };
        if next.connected != previous.connected || next.reason != previous.reason {
            if next.connected {
                info!(broker = broker.display_url(), "broker connected");
            } else {
                warn!(broker = broker.display_url(), reason = %next.reason, "broker unavailable");
            }
            status.send_replace(next);
        } else if next.connected {
            // Keep last_ok fresh without waking every watcher each second.
            status.send_if_modified(|s| {
                s.last_ok = next.last_ok;
                false
            });
        }
    }
}
