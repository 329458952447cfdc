//! warden's alert engine (issue 18, items 3 and 4): rules over the fleet snapshot and the
//! alert lifecycle like Alertmanager's — pending → firing → resolved, grouping, routing,
//! inhibition, silences, acknowledgements, a startup grace and escalation.
//!
//! Pure and synchronous: no I/O, no tasks, no clock of its own. The binary calls
//! [`AlertEngine::evaluate`] on an interval with the time, the latest [`Snapshot`] and the
//! [`MonitoringStatus`], records the returned transitions, hands the notifications to the
//! notifiers and records the suppressed ones as SUPPRESSED deliveries.
//!
//! [`Snapshot`]: warden_core::Snapshot
pub mod conditions;
pub mod config;
mod dispatch;
pub mod duration;
mod engine;
pub mod matcher;
pub mod rules;
pub mod silences;

use std::{collections::BTreeMap, fmt, time::SystemTime};

use warden_core::{
    history::{ACTION_FIRING, ATTR_ACTION, AttrValue, EventKind, HistoryEvent, Severity},
    model::{Finding, WorkerKey},
    ports::Notification,
};

pub use config::{AlertsConfig, InhibitConfig, RouteConfig, RuleConfig, ScopeConfig};
pub use engine::{AlertEngine, SilenceCreated};
pub use matcher::{MatchOp, Matcher};
pub use rules::{ConfigError, Metric, Op, Rule, RuleKind};
pub use silences::{AlertError, MatcherSpec, Silence, SilenceSpec, SilenceState};

/// Health of warden's own monitoring that the snapshot does not carry: the binary passes it
/// to every evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitoringStatus {
    /// The history store answers.
    pub store_up: bool,
    /// Share of workers (0..1) whose health the health engine could not evaluate in its last
    /// cycle.
    pub health_failed_share: f64,
    /// Workers auto-recovery would restart but may not (a cap is reached), and why.
    pub recovery_exhausted: Vec<(WorkerKey, String)>,
}

impl Default for MonitoringStatus {
    fn default() -> Self {
        Self {
            store_up: true,
            health_failed_share: 0.0,
            recovery_exhausted: Vec::new(),
        }
    }
}

/// Where an alert is in its life (proto `AlertState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
}

/// One alert raised by a rule (proto `Alert`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `alerts/{id}`.
    pub name: String,
    /// The rule's id ("worker_lost"); its resource name is `alertRules/{rule}`.
    pub rule: String,
    pub severity: Severity,
    pub state: AlertState,
    /// Who acknowledged it, when it is acknowledged.
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<SystemTime>,
    /// Active silences that match it (resource names), as of the last evaluation or silence
    /// change. Empty: not silenced.
    pub silenced_by: Vec<String>,
    /// Pending or firing alerts that inhibit it (resource names). Not in the proto; shown for
    /// reasons.
    pub inhibited_by: Vec<String>,
    /// The worker it concerns.
    pub worker: Option<WorkerKey>,
    /// The group it concerns, `groups/{backend}/{name}` (the worker's for worker alerts).
    pub group: Option<String>,
    /// The queue it concerns (queue_backlog).
    pub queue: Option<String>,
    pub summary: String,
    pub description: String,
    /// Always `rule` and `severity`; `worker`, `group`, `queue` when it concerns one; `cause`
    /// for group_min_workers ("crash" or "scale_down"); plus the rule's labels.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub started_at: SystemTime,
    pub fired_at: Option<SystemTime>,
    pub resolved_at: Option<SystemTime>,
    /// Set by [`AlertEngine::mark_notified`] once a notification of it was delivered.
    pub last_notified_at: Option<SystemTime>,
    /// The findings that made the condition hold, as last evaluated (health-check rules).
    pub findings: Vec<Finding>,
}

impl Alert {
    pub fn acknowledged(&self) -> bool {
        self.acknowledged_by.is_some()
    }

    pub fn silenced(&self) -> bool {
        !self.silenced_by.is_empty()
    }

    /// `alertRules/{rule}`.
    pub fn rule_name(&self) -> String {
        format!("alertRules/{}", self.rule)
    }
}

/// One change of an alert's state, for the history journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// `alerts/{id}`.
    pub alert: String,
    /// The rule's id.
    pub rule: String,
    /// `None` for a new alert.
    pub from: Option<AlertState>,
    pub to: AlertState,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub worker: Option<WorkerKey>,
    pub group: Option<String>,
    pub summary: String,
    pub at: SystemTime,
}

impl AlertState {
    /// "pending", "firing", "resolved": the `action` of its history event.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => ACTION_FIRING,
            AlertState::Resolved => ACTION_RESOLVED,
        }
    }
}

/// [`ATTR_ACTION`] of an alert that resolved ([`ACTION_FIRING`] when it fired).
pub const ACTION_RESOLVED: &str = "resolved";

impl Transition {
    /// The history event recording it: kind `alert`, `action` = the new state ("pending",
    /// "firing" — which the fleet summary counts — or "resolved"), plus `alert`, `rule` and
    /// `from` attributes. The group is the short group name, as other events carry it.
    pub fn history_event(&self) -> HistoryEvent {
        let group = self.group.as_deref().and_then(|g| {
            g.rsplit_once('/')
                .and_then(|(_, enc)| warden_core::model::percent_decode(enc))
        });
        let mut attributes = vec![
            (
                ATTR_ACTION.to_string(),
                AttrValue::String(self.to.as_str().into()),
            ),
            ("alert".to_string(), AttrValue::String(self.alert.clone())),
            ("rule".to_string(), AttrValue::String(self.rule.clone())),
        ];
        if let Some(from) = self.from {
            attributes.push(("from".to_string(), AttrValue::String(from.as_str().into())));
        }
        HistoryEvent {
            at: self.at,
            kind: EventKind::Alert,
            severity: self.severity,
            worker: self.worker.clone(),
            group,
            message: format!("{} ({})", self.summary, self.to.as_str()),
            attributes,
        }
    }
}

/// Why a notification was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuppressReason {
    /// Matched by these active silences.
    Silenced(Vec<String>),
    /// Inhibited by these pending or firing alerts.
    Inhibited(Vec<String>),
    /// Acknowledged by this actor.
    Acknowledged(String),
    /// Held during the startup grace.
    StartupGrace,
}

impl fmt::Display for SuppressReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuppressReason::Silenced(by) => write!(f, "silenced by {}", by.join(", ")),
            SuppressReason::Inhibited(by) => write!(f, "inhibited by {}", by.join(", ")),
            SuppressReason::Acknowledged(by) => write!(f, "acknowledged by {by}"),
            SuppressReason::StartupGrace => f.write_str("held during startup grace"),
        }
    }
}

/// A notification of one alert to one receiver that was not sent on purpose (a SUPPRESSED
/// delivery). Reported once per alert, receiver and reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Suppressed {
    /// `alerts/{id}`.
    pub alert: String,
    pub rule: String,
    pub receiver: String,
    pub group_key: String,
    /// The state that would have been notified (FIRING).
    pub state: AlertState,
    pub reason: SuppressReason,
    pub at: SystemTime,
}

/// What one evaluation produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// Alert state changes, oldest first.
    pub transitions: Vec<Transition>,
    /// Notifications to deliver, one per group and receiver.
    pub notifications: Vec<Notification>,
    /// Notifications not sent on purpose.
    pub suppressed: Vec<Suppressed>,
}

/// Which alerts [`AlertEngine::list_alerts`] returns. Every set filter narrows (AND).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFilter {
    /// Empty: PENDING and FIRING.
    pub states: Vec<AlertState>,
    /// Worker resource name.
    pub worker: Option<String>,
    /// Group resource name (`groups/{backend}/{name}`): the group's alerts and its workers'.
    pub group: Option<String>,
    /// Rule id or resource name (`alertRules/{id}`).
    pub rule: Option<String>,
    pub min_severity: Option<Severity>,
    pub acknowledged: Option<bool>,
    pub silenced: Option<bool>,
}
