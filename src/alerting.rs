//! The alerting loop: evaluates the alert engine (`warden-alerts`) every second over the latest
//! fleet snapshot, puts its transitions into history (the journal), hands its notifications to
//! the dispatcher (`warden-notify`) and records the ones it held back as SUPPRESSED deliveries.
//! Deliveries that reach their receiver mark their alerts notified.
//!
//! The engine is pure and fast (milliseconds for 10,000 workers), so it sits behind a plain
//! mutex shared with the Alerts service; nothing awaits while holding it.
use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::sync::{mpsc, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use warden_alerts::{
    AlertEngine, AlertFilter, AlertState, AlertsConfig, MonitoringStatus, Suppressed,
};
use warden_core::{
    Clock, FleetHandle, WorkerKey,
    journal::Journal,
    ports::{Notification, NotifiedAlert},
};
use warden_notify::{Delivery, DeliveryState, Dispatcher, NotifyConfig};

use crate::recovery::Exhausted;

/// How often the engine is evaluated: with its 1 s group wait, a condition that holds is
/// notified within about 2 s.
pub const EVALUATE_EVERY: Duration = Duration::from_secs(1);

/// Why alerting could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    #[error("{0}")]
    Rules(#[from] warden_alerts::ConfigError),
    #[error("{0}")]
    Receivers(#[from] warden_notify::BuildError),
    #[error("alerts: {field} names receiver {receiver:?}, which is not configured in [notify]")]
    UnknownReceiver { field: String, receiver: String },
}

/// What the alerting loop reads besides the snapshot.
#[derive(Clone, Default)]
pub struct MonitoringInputs {
    /// Workers auto-recovery has given up on.
    pub recovery_exhausted: Exhausted,
    /// The health engine's last cycle (its share of failed evaluations).
    pub health: Option<watch::Receiver<Option<Arc<warden_health::CycleSummary>>>>,
}

/// The engine and the dispatcher, shared with the Alerts service. Cheap to clone.
#[derive(Clone)]
pub struct Alerting {
    engine: Arc<Mutex<AlertEngine>>,
    pub dispatcher: Dispatcher,
    pub clock: Arc<dyn Clock>,
    metrics: crate::metrics::Metrics,
    journal: Journal,
}

impl Alerting {
    /// Checks the rules and receivers, starts the dispatcher and the loop.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        mut alerts: AlertsConfig,
        notify: &NotifyConfig,
        fleet: FleetHandle,
        journal: Journal,
        inputs: MonitoringInputs,
        metrics: crate::metrics::Metrics,
        tasks: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Alerting, AlertingError> {
        let clock = fleet.clock().clone();
        let configured: BTreeSet<&str> = notify.receivers.iter().map(|r| r.name.as_str()).collect();
        // The default receiver is optional: with none of that name configured, alerts that no
        // rule or route sends anywhere are evaluated, listed and recorded, not notified.
        if !configured.contains(alerts.default_receiver.as_str()) {
            alerts.default_receiver.clear();
        }
        let engine = AlertEngine::new(alerts, clock.now())?;
        check_receivers(&engine, &configured)?;
        let (outcomes_tx, outcomes) = mpsc::unbounded_channel::<Delivery>();
        let counted = metrics.clone();
        let hook: warden_notify::OutcomeHook = Arc::new(move |d: &Delivery| {
            let outcome = match d.state {
                DeliveryState::Sent => "sent",
                DeliveryState::Suppressed => "suppressed",
                _ => "failed",
            };
            let channel = d.channel.map_or("unknown", |c| c.as_str());
            counted.notification(channel, outcome);
            if d.state == DeliveryState::Sent {
                let _ = outcomes_tx.send(d.clone());
            }
        });
        let dispatcher = notify.start(clock.clone(), Some(hook), cancel.clone())?;
        let alerting = Alerting {
            engine: Arc::new(Mutex::new(engine)),
            dispatcher,
            clock,
            metrics,
            journal: journal.clone(),
        };
        tasks.spawn(
            alerting
                .clone()
                .run(fleet, journal, inputs, outcomes, cancel),
        );
        Ok(alerting)
    }

    /// The engine, locked. Never held across an await.
    pub fn engine(&self) -> MutexGuard<'_, AlertEngine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(
        self,
        fleet: FleetHandle,
        journal: Journal,
        inputs: MonitoringInputs,
        mut outcomes: mpsc::UnboundedReceiver<Delivery>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(EVALUATE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.evaluate(&fleet, &journal, &inputs),
                Some(delivery) = outcomes.recv() => {
                    let names: Vec<&str> = delivery.alerts.iter().map(String::as_str).collect();
                    let at = delivery.sent_at.unwrap_or_else(|| self.clock.now());
                    self.engine().mark_notified_names(&names, at);
                }
            }
        }
    }

    /// One evaluation: transitions into history, notifications out, suppressions recorded.
    pub fn evaluate(&self, fleet: &FleetHandle, journal: &Journal, inputs: &MonitoringInputs) {
        let snapshot = fleet.snapshot();
        let now = self.clock.now();
        let monitoring = MonitoringStatus {
            store_up: snapshot
                .sources
                .get(warden_core::recorder::STORE)
                .is_none_or(|s| s.connected),
            health_failed_share: inputs
                .health
                .as_ref()
                .and_then(|rx| rx.borrow().as_ref().map(|s| s.failed_share()))
                .unwrap_or(0.0),
            recovery_exhausted: inputs
                .recovery_exhausted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter_map(|(name, why)| Some((WorkerKey::parse(name)?, why.clone())))
                .collect(),
        };
        let (evaluation, suppressed) = {
            let mut engine = self.engine();
            let evaluation = engine.evaluate(now, &snapshot, &monitoring);
            let suppressed: Vec<Notification> = evaluation
                .suppressed
                .iter()
                .filter_map(|s| suppressed_notification(&engine, s))
                .collect();
            (evaluation, suppressed)
        };
        for t in &evaluation.transitions {
            journal.record(t.history_event());
        }
        self.count_firing();
        if let Some(summary) = inputs.health.as_ref().and_then(|rx| rx.borrow().clone()) {
            self.metrics.health_cycle(summary.duration);
        }
        for n in evaluation.notifications {
            self.dispatcher.dispatch(n);
        }
        for (n, s) in suppressed.iter().zip(&evaluation.suppressed) {
            self.dispatcher.record_suppressed(n, s.reason.to_string());
        }
    }
}

impl Alerting {
    /// Puts an acknowledgement (or its withdrawal) of `alert` into history.
    pub fn record_acknowledgement(
        &self,
        alert: &warden_alerts::Alert,
        by: &str,
        reason: &str,
        acknowledged: bool,
    ) {
        use warden_core::history::{ATTR_ACTION, AttrValue, EventKind, HistoryEvent, Severity};
        let action = if acknowledged {
            "acknowledged"
        } else {
            "unacknowledged"
        };
        let mut message = format!("{} {action} by {by}: {}", alert.name, alert.summary);
        if !reason.is_empty() {
            message = format!("{message} ({reason})");
        }
        self.journal.record(HistoryEvent {
            at: self.clock.now(),
            kind: EventKind::Alert,
            severity: Severity::Info,
            worker: alert.worker.clone(),
            group: alert
                .group
                .as_deref()
                .and_then(|g| g.rsplit_once('/'))
                .and_then(|(_, enc)| warden_core::model::percent_decode(enc)),
            message,
            attributes: vec![
                (ATTR_ACTION.into(), AttrValue::String(action.into())),
                ("alert".into(), AttrValue::String(alert.name.clone())),
                ("rule".into(), AttrValue::String(alert.rule.clone())),
                ("by".into(), AttrValue::String(by.into())),
            ],
        });
    }

    /// `warden_alerts_firing{severity}`.
    fn count_firing(&self) {
        let firing = self.engine().list_alerts(&AlertFilter {
            states: vec![AlertState::Firing],
            ..AlertFilter::default()
        });
        let mut by = [0i64; 3];
        for a in &firing {
            by[a.severity as usize - 1] += 1;
        }
        self.metrics.alerts_firing(by[0], by[1], by[2]);
    }
}

/// Every receiver a rule, route or the escalation names must be configured.
fn check_receivers(engine: &AlertEngine, configured: &BTreeSet<&str>) -> Result<(), AlertingError> {
    let unknown = |field: String, receiver: &str| AlertingError::UnknownReceiver {
        field,
        receiver: receiver.to_string(),
    };
    for rule in engine.rules() {
        for r in &rule.receivers {
            if !configured.contains(r.as_str()) {
                return Err(unknown(format!("alerts.rules.{}.receivers", rule.id), r));
            }
        }
    }
    let config = engine.config();
    for (i, route) in config.routes.iter().enumerate() {
        for r in &route.receivers {
            if !configured.contains(r.as_str()) {
                return Err(unknown(format!("alerts.routes[{i}].receivers"), r));
            }
        }
    }
    for r in &config.escalation_receivers {
        if !configured.contains(r.as_str()) {
            return Err(unknown("alerts.escalation_receivers".into(), r));
        }
    }
    Ok(())
}

/// The notification a suppressed one would have been (for its SUPPRESSED delivery record).
fn suppressed_notification(engine: &AlertEngine, s: &Suppressed) -> Option<Notification> {
    let alert = engine.get_alert(&s.alert).ok()?;
    Some(Notification {
        group_key: s.group_key.clone(),
        receiver: s.receiver.clone(),
        resolved: s.state == AlertState::Resolved,
        escalated: false,
        common_labels: alert.labels.clone(),
        alerts: vec![NotifiedAlert {
            name: alert.name.clone(),
            rule: alert.rule.clone(),
            severity: alert.severity,
            firing: alert.state != AlertState::Resolved,
            summary: alert.summary.clone(),
            description: alert.description.clone(),
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            started_at: alert.started_at,
            resolved_at: alert.resolved_at,
        }],
    })
}
