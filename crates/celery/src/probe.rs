//! Broker connectivity: a cheap command every second; readiness and staleness follow it.
use std::{sync::Arc, time::Duration, time::SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::broker::{Broker, BrokerError};
use warden_core::{BrokerStatus, Clock, FleetHandle, owner::FleetMessage};
use warden_metrics::Metrics;

/// How often the broker is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The broker's `INFO` is read on the first successful probe and then every this many probes.
pub const INFO_EVERY: u32 = 15;

/// The `INFO` fields exported on `/metrics` (`warden_broker_info{field=...}`).
const INFO_FIELDS: [&str; 3] = [
    "used_memory",
    "instantaneous_ops_per_sec",
    "connected_clients",
];

/// The exported fields of an `INFO` reply; fields missing or not integers are left out.
pub fn info_fields(info: &str) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((name, value)) = line.trim().split_once(':') else {
            continue;
        };
        if let Some(field) = INFO_FIELDS.iter().find(|f| **f == name)
            && let Ok(v) = value.trim().parse::<i64>()
        {
            out.push((*field, v));
        }
    }
    out
}

/// Probes until `cancel`, publishing each change of status. The reason for a failure is
/// logged once when it starts (or changes), not on every probe.
pub async fn run(
    broker: Broker,
    clock: Arc<dyn Clock>,
    status: watch::Sender<BrokerStatus>,
    fleet: FleetHandle,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let mut tick = warden_core::clock::ticker(PROBE_INTERVAL);
    let mut until_info = 0u32;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A data command, like the ones workers depend on: it meets LOADING while Redis
        // loads its dataset and NOAUTH on a connection that did not authenticate.
        let probe = redis::cmd("EXISTS")
            .arg(broker.keys().key("_kombu.binding.celery"))
            .clone();
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = broker.query::<i64>(&probe) => r.map(drop),
        };
        metrics.broker_probe(result.as_ref().err().map_or("ok", BrokerError::kind));
        if result.is_ok() {
            if until_info == 0 {
                let command = redis::cmd("INFO");
                let info = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = broker.query::<String>(&command) => r,
                };
                // INFO may be renamed away on managed Redis: then there is nothing to export.
                if let Ok(info) = info {
                    metrics.broker_info(&info_fields(&info));
                }
                until_info = INFO_EVERY;
            }
            until_info -= 1;
        }
        let previous = status.borrow().clone();
        match next_status(&previous, result, clock.now()) {
            Probed::Changed(next) => {
                if next.connected {
                    info!(broker = broker.display_url(), "broker connected");
                } else {
                    warn!(broker = broker.display_url(), reason = %next.reason, "broker unavailable");
                }
                metrics.broker_status_changed(next.connected);
                status.send_replace(next);
            }
            Probed::StillUp(last_ok) => {
                // Keep last_ok fresh without waking every watcher each second.
                status.send_if_modified(|s| {
                    s.last_ok = Some(last_ok);
                    false
                });
            }
            Probed::StillDown => {}
        }
        // Every probe, so that the fleet's view of the source (and its last_ok) is current.
        let current = status.borrow().clone();
        if fleet.observe(FleetMessage::Source(current)).await.is_err() {
            return;
        }
    }
}

/// What one probe means for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    /// Up after down, down after up, or down for another reason: publish and log it.
    Changed(BrokerStatus),
    /// Up as before; the broker last answered at this time.
    StillUp(SystemTime),
    /// Down for the same reason as before: nothing to say.
    StillDown,
}

/// The transition rule, apart from I/O so that "logged once" is tested exactly.
pub fn next_status(
    previous: &BrokerStatus,
    result: Result<(), BrokerError>,
    now: SystemTime,
) -> Probed {
    match result {
        Ok(()) if previous.connected => Probed::StillUp(now),
        Ok(()) => Probed::Changed(BrokerStatus {
            connected: true,
            reason: String::new(),
            last_ok: Some(now),
            ..previous.clone()
        }),
        Err(err) => {
            let reason = err.to_string();
            if !previous.connected && previous.reason == reason {
                Probed::StillDown
            } else {
                Probed::Changed(BrokerStatus {
                    connected: false,
                    reason,
                    ..previous.clone()
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_and_others_ignored() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
                    # Stats\r\ninstantaneous_ops_per_sec:42\r\nconnected_clients:oops\r\n";
        assert_eq!(
            info_fields(info),
            vec![
                ("used_memory", 1_048_576),
                ("instantaneous_ops_per_sec", 42)
            ]
        );
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Feeds probe results through the rule the way `run` does; returns the statuses that
    /// were published (each one is one log line).
    fn published(results: Vec<Result<(), BrokerError>>) -> Vec<BrokerStatus> {
        let mut status = BrokerStatus::unknown();
        let mut changes = Vec::new();
        for (i, result) in results.into_iter().enumerate() {
            match next_status(&status, result, at(i as u64)) {
                Probed::Changed(next) => {
                    status = next.clone();
                    changes.push(next);
                }
                Probed::StillUp(t) => status.last_ok = Some(t),
                Probed::StillDown => {}
            }
        }
        changes
    }

    #[test]
    fn a_lasting_failure_is_published_once() {
        for err in [
            BrokerError::Auth("NOAUTH".into()),
            BrokerError::Auth("WRONGPASS".into()),
            BrokerError::Loading,
            BrokerError::Timeout(Duration::from_secs(1)),
        ] {
            let changes = published(vec![Err(err.clone()); 30]);
            assert_eq!(changes.len(), 1, "{err:?}: {changes:?}");
            assert!(!changes[0].connected);
            assert_eq!(changes[0].reason, err.to_string());
        }
    }

    #[test]
    fn each_transition_is_published_once() {
        let loading = || Err(BrokerError::Loading);
        let noauth = || Err(BrokerError::Auth("NOAUTH".into()));
        let changes = published(vec![
            loading(),
            loading(),
            noauth(),
            noauth(),
            Ok(()),
            Ok(()),
            Ok(()),
            noauth(),
            noauth(),
        ]);
        let seen: Vec<(bool, &str)> = changes
            .iter()
            .map(|s| (s.connected, s.reason.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (false, "broker is loading its dataset"),
                (false, "broker refused authentication (NOAUTH)"),
                (true, ""),
                (false, "broker refused authentication (NOAUTH)"),
            ]
        );
        // The last success is remembered while down.
        assert_eq!(changes[3].last_ok, Some(at(6)));
    }

    #[test]
    fn staying_up_only_refreshes_last_ok() {
        let up = BrokerStatus {
            connected: true,
            reason: String::new(),
            last_ok: Some(at(1)),
            ..BrokerStatus::unknown()
        };
        assert_eq!(next_status(&up, Ok(()), at(2)), Probed::StillUp(at(2)));
    }
}
