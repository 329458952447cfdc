//! Inspect rounds: periodic, on broker recovery, and on demand (`refresh`).
use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use super::{
    broker::BrokerError,
    inspect,
    pidbox::{Command, Pidbox},
};
use warden_core::{
    Backend, BrokerStatus, Clock, FleetHandle, InspectReport, InspectRound, Refresher,
    owner::FleetMessage,
};
use warden_metrics::Metrics;

/// Runs inspect rounds against Celery workers and hands the results to the fleet.
#[derive(Clone)]
pub struct Inspector {
    pidbox: Pidbox,
    fleet: FleetHandle,
    /// Where the broker's node names are unique (see `WorkerKey`).
    scope: Arc<str>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    timeout: Duration,
    enable_events: bool,
    /// The fleet-wide round in flight, shared by every refresh asked for meanwhile: a burst
    /// of `refresh: true` requests costs the workers one broadcast, not one each.
    in_flight: Arc<Mutex<Option<PendingRound>>>,
    /// Owns the shared rounds, so that shutdown waits for them.
    tracker: TaskTracker,
}

/// Resolves to the outcome of a round once it is applied.
type PendingRound = watch::Receiver<Option<Result<(), String>>>;

impl Inspector {
    pub fn new(
        pidbox: Pidbox,
        fleet: FleetHandle,
        scope: Arc<str>,
        metrics: Metrics,
        timeout: Duration,
        enable_events: bool,
        tracker: TaskTracker,
    ) -> Self {
        Self {
            tracker,
            scope,
            clock: fleet.clock().clone(),
            pidbox,
            fleet,
            metrics,
            timeout,
            enable_events,
            in_flight: Arc::default(),
        }
    }

    /// A fleet-wide round, joined if one is already running.
    async fn refresh_all(&self) -> Result<(), String> {
        let mut pending = {
            let mut slot = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(pending) => pending.clone(),
                None => {
                    let (done, pending) = watch::channel(None);
                    *slot = Some(pending.clone());
                    let this = self.clone();
                    self.tracker.spawn(async move {
                        let result = this.round(None).await.map_err(|e| e.to_string());
                        // Callers from now on start a new round: this one's view is old.
                        this.in_flight
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .take();
                        let _ = done.send(Some(result));
                    });
                    pending
                }
            }
        };
        loop {
            if let Some(result) = pending.borrow_and_update().clone() {
                return result;
            }
            if pending.changed().await.is_err() {
                return Err("the refresh round was abandoned".into());
            }
        }
    }

    /// One round: broadcast, gather for the inspect timeout (or until every addressed worker
    /// answered everything), apply. Returns once the fleet shows the result.
    pub async fn round(&self, targets: Option<Vec<String>>) -> Result<(), BrokerError> {
        let started_at = self.clock.now();
        let commands = inspect::round_commands();
        let limit = targets.as_ref().map(|t| t.len() * commands.len());
        let result = self
            .pidbox
            .broadcast(&commands, targets.as_deref(), self.timeout, limit)
            .await;
        let replies = match result {
            Ok(replies) => replies,
            Err(err) => {
                self.metrics.inspect_round("error");
                return Err(err);
            }
        };
        self.metrics.inspect_round("ok");
        let mut reports: BTreeMap<String, InspectReport> = BTreeMap::new();
        for reply in replies {
            let report = reports
                .entry(reply.node.clone())
                .or_insert_with(|| InspectReport {
                    name: reply.node.clone(),
                    ..InspectReport::default()
                });
            let parsed = match reply.command {
                inspect::PING => {
                    report.ping = inspect::parse_ping(&reply.value);
                    report.ping
                }
                inspect::STATS => {
                    report.stats = inspect::parse_stats(&reply.value);
                    report.stats.is_some()
                }
                inspect::ACTIVE => {
                    report.active = inspect::parse_active(&reply.value);
                    report.active.is_some()
                }
                inspect::ACTIVE_QUEUES => {
                    report.queues = inspect::parse_active_queues(&reply.value);
                    report.queues.is_some()
                }
                inspect::REGISTERED => {
                    report.registered = inspect::parse_registered(&reply.value);
                    report.registered.is_some()
                }
                _ => false,
            };
            if !parsed {
                debug!(node = %reply.node, command = reply.command, "malformed inspect reply skipped");
                self.metrics.message_rejected("inspect_reply", "malformed");
            }
        }
        // A node that answered something but not the ping is still answering.
        for report in reports.values_mut() {
            report.ping |= report.stats.is_some() || report.active.is_some();
        }
        let round = InspectRound {
            backend: Backend::Celery,
            scope: self.scope.clone(),
            started_at,
            targets,
            reports: reports.into_values().collect(),
        };
        if self
            .fleet
            .observe(FleetMessage::Inspect(round))
            .await
            .is_ok()
        {
            let _ = self.fleet.barrier().await;
        }
        if self.enable_events {
            // Workers started without -E begin sending task events (what Flower does).
            self.pidbox
                .cast(&Command::new("enable_events"), None)
                .await?;
        }
        Ok(())
    }

    /// Polls every `interval`, and at once whenever the broker (re)connects.
    pub async fn run(
        self,
        interval: Duration,
        mut broker: watch::Receiver<BrokerStatus>,
        cancel: CancellationToken,
    ) {
        let mut tick = warden_core::clock::ticker(interval);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                changed = broker.changed() => {
                    if changed.is_err() { return; }
                    if !broker.borrow_and_update().connected { continue; }
                    tick.reset();
                }
            }
            if !broker.borrow().connected {
                continue;
            }
            let round = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.round(None) => r,
            };
            match round {
                Ok(()) if failing => {
                    failing = false;
                    debug!("inspect rounds succeed again");
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    warn!(%err, "inspect round failed");
                }
                Err(_) => {}
            }
        }
    }
}

impl Refresher for Inspector {
    fn refresh<'a>(
        &'a self,
        names: Option<Vec<String>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            match names {
                None => self.refresh_all().await,
                Some(names) => self.round(Some(names)).await.map_err(|e| e.to_string()),
            }
        })
    }
}
