//! The `[alerts]` section of warden's config file, as written. Every option has a default, so
//! an empty section (or none) gives the built-in rules, grouping by rule and group, a 90 s
//! startup grace and escalation after 5 minutes. [`crate::rules::compile`] turns this into
//! checked rules.
use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Deserializer, de};
use warden_core::history::Severity;

use crate::duration;

/// The alert engine's configuration (TOML section `[alerts]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// After warden starts, worker-down alerts (rules `heartbeat`, `worker_lost`,
    /// `group_min_workers`) are evaluated and recorded but not notified for this long: workers
    /// are still reporting in. One still down when it ends is notified then. Default 90 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub startup_grace: Duration,
    /// Labels whose values make a notification group: alerts sharing them are notified
    /// together (30 workers lost at once: one message). Default `["rule", "group"]`.
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification. Default 1 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub group_wait: Duration,
    /// Least time between two notifications of a group when its alerts change. Default 30 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub group_interval: Duration,
    /// A group still firing, unchanged, is notified again after this long (rules may say
    /// otherwise). Default 4 h.
    #[serde(deserialize_with = "duration::deserialize")]
    pub repeat_interval: Duration,
    /// The receiver of alerts that no rule or route sends anywhere. Empty: such alerts are
    /// not notified. Default "default".
    pub default_receiver: String,
    /// A CRITICAL alert firing this long without acknowledgement is escalated once. Zero
    /// turns escalation off. Default 5 min.
    #[serde(deserialize_with = "duration::deserialize")]
    pub escalate_after: Duration,
    /// Receivers of escalations. Default empty: the alert's own receivers.
    pub escalation_receivers: Vec<String>,
    /// Resolved alerts kept for queries, most recent first. Default 10,000.
    pub max_resolved: usize,
    /// How long an expired silence stays listed. Default 5 days (120 h).
    #[serde(deserialize_with = "duration::deserialize")]
    pub silence_retention: Duration,
    /// Rules by id: a built-in id (see [`crate::rules::BUILTIN_IDS`]) overrides that rule's
    /// defaults field by field; any other id is a new rule and needs `check`. Default: none
    /// (the built-in rules as they are).
    pub rules: BTreeMap<String, RuleConfig>,
    /// Routes: every route whose matchers all hold (and whose `min_severity` the alert
    /// reaches) adds its receivers. Default none.
    pub routes: Vec<RouteConfig>,
    /// Inhibition rules. Default: two. `broker_unreachable` inhibits `heartbeat`,
    /// `worker_lost`, `queue_connection`, `stalled` and `group_min_workers` (the broker
    /// being down explains them); `worker_lost` inhibits the same worker's `heartbeat` (one
    /// alert per lost worker, not two). Setting this list replaces both.
    pub inhibit: Vec<InhibitConfig>,
    /// How long an inhibition outlasts its source. When the broker comes back, its alert
    /// resolves at once, but the workers' alerts it caused live on for a while (health
    /// findings computed during the outage, until the next health cycle; then their
    /// `keep_firing_for`): without this hold they would be notified just as the outage ends.
    /// A target still firing after the hold is a problem of its own and is notified.
    /// Default 60 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub inhibit_hold: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            startup_grace: Duration::from_secs(90),
            group_by: vec!["rule".into(), "group".into()],
            group_wait: Duration::from_secs(1),
            group_interval: Duration::from_secs(30),
            repeat_interval: Duration::from_secs(4 * 3600),
            default_receiver: "default".into(),
            escalate_after: Duration::from_secs(300),
            escalation_receivers: Vec::new(),
            max_resolved: 10_000,
            silence_retention: Duration::from_secs(120 * 3600),
            rules: BTreeMap::new(),
            routes: Vec::new(),
            inhibit: vec![
                InhibitConfig::broker_default(),
                InhibitConfig::lost_worker_default(),
            ],
            inhibit_hold: Duration::from_secs(60),
        }
    }
}

/// One rule as configured. For a built-in rule every field is optional (unset: the built-in
/// default); a new rule needs `check` and what that check needs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// What it evaluates: a health check id ("heartbeat", "cpu", "memory", "gpu", "disk",
    /// "error_rate", "latency", "throughput", "queue_connection", "stalled", "forecast"),
    /// "worker_lost", "group_min_workers", "queue_backlog", "metric", "broker_unreachable",
    /// "store_unavailable" or "health_engine_failing". Built-in ids imply theirs.
    pub check: Option<String>,
    /// What it watches for, for humans.
    pub description: Option<String>,
    /// Severity of its alerts. Health-check rules default to the finding's (WARNING or
    /// CRITICAL); setting it fixes it.
    #[serde(deserialize_with = "severity_opt")]
    pub severity: Option<Severity>,
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for", deserialize_with = "duration::deserialize_opt")]
    pub for_duration: Option<Duration>,
    /// How long an alert keeps firing after its condition stopped holding (flap damping).
    #[serde(deserialize_with = "duration::deserialize_opt")]
    pub keep_firing_for: Option<Duration>,
    /// Labels added to its alerts.
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added to its alerts (e.g. `runbook_url`).
    pub annotations: Option<BTreeMap<String, String>>,
    /// One-line summary template. Placeholders: {worker}, {group}, {queue}, {value},
    /// {threshold}, {rule}, {severity}, {message}.
    pub summary: Option<String>,
    /// Details template (the alert's description), same placeholders.
    pub details: Option<String>,
    /// Re-notification period of its alerts while firing. Default: `repeat_interval`.
    #[serde(deserialize_with = "duration::deserialize_opt")]
    pub repeat_interval: Option<Duration>,
    /// Receivers its alerts go to (besides matching routes).
    pub receivers: Option<Vec<String>>,
    /// False: configured but raises nothing.
    pub enabled: Option<bool>,
    /// Limits the rule to some groups, queues or worker names.
    pub scope: Option<ScopeConfig>,
    /// `group_min_workers`: alive workers a group needs. Default 1.
    pub min_workers: Option<u32>,
    /// `group_min_workers`: also notify when a group drops below `min_workers` because its
    /// workers said goodbye (a scale-down). Default false: recorded only.
    pub notify_on_scale_down: Option<bool>,
    /// `queue_backlog`: messages waiting at or above which the queue is backlogged. Default
    /// 10,000.
    pub max_depth: Option<u64>,
    /// `queue_backlog`: age of the oldest pending message at or above which the queue is
    /// backlogged (when the backend reports it). Default unset.
    #[serde(deserialize_with = "duration::deserialize_opt")]
    pub max_age: Option<Duration>,
    /// `metric`: the worker figure: "cpu_percent", "memory_percent", "memory_bytes",
    /// "gpu_util_percent", "gpu_memory_percent", "disk_percent", "active_tasks",
    /// "error_rate" (5 min, 0..1), "throughput_per_min" (5 min), "load1".
    pub metric: Option<String>,
    /// `metric`: ">=", ">", "<=" or "<". Default ">=".
    pub op: Option<String>,
    /// `metric`: the threshold.
    pub value: Option<f64>,
    /// `health_engine_failing`: share of workers (0..1) whose health could not be evaluated
    /// at or above which it fires. Default 0.5.
    pub max_failed_share: Option<f64>,
}

/// Where a rule applies. Every non-empty list narrows (AND); within a list, any entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScopeConfig {
    /// Group names (as workers report them, e.g. "default").
    pub groups: Vec<String>,
    /// Queue names: worker rules apply to workers consuming one of them.
    pub queues: Vec<String>,
    /// Worker name globs (`*`, `?`), matched against the worker's id (e.g. "w*@host-?").
    pub workers: Vec<String>,
}

/// A route: alerts matching it go (also) to its receivers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Labels that must equal these values.
    #[serde(rename = "match")]
    pub match_eq: BTreeMap<String, String>,
    /// Labels that must match these anchored regular expressions.
    pub match_re: BTreeMap<String, String>,
    /// Least severity of the alerts it takes. Default: any.
    #[serde(deserialize_with = "severity_opt")]
    pub min_severity: Option<Severity>,
    /// Receiver names. Required, non-empty.
    pub receivers: Vec<String>,
}

/// An inhibition: while a pending or firing alert matches the source matchers (and for
/// `inhibit_hold` after it resolved), alerts that match the target matchers and have the same
/// values for `equal` labels are not notified.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InhibitConfig {
    pub source_match: BTreeMap<String, String>,
    pub source_match_re: BTreeMap<String, String>,
    pub target_match: BTreeMap<String, String>,
    pub target_match_re: BTreeMap<String, String>,
    /// Labels source and target must share (a label both lack counts as equal).
    pub equal: Vec<String>,
}

impl InhibitConfig {
    /// A broker that cannot be reached explains the worker alerts it causes.
    pub fn broker_default() -> Self {
        Self {
            source_match: BTreeMap::from([("rule".into(), "broker_unreachable".into())]),
            target_match_re: BTreeMap::from([(
                "rule".into(),
                "heartbeat|worker_lost|queue_connection|stalled|group_min_workers".into(),
            )]),
            ..Self::default()
        }
    }

    /// A lost worker's late heartbeat says nothing more.
    pub fn lost_worker_default() -> Self {
        Self {
            source_match: BTreeMap::from([("rule".into(), "worker_lost".into())]),
            target_match: BTreeMap::from([("rule".into(), "heartbeat".into())]),
            equal: vec!["worker".into()],
            ..Self::default()
        }
    }
}

/// "info", "warning" or "critical".
pub fn parse_severity(text: &str) -> Option<Severity> {
    match text.to_ascii_lowercase().as_str() {
        "info" => Some(Severity::Info),
        "warning" => Some(Severity::Warning),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

/// The label value of a severity.
pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn severity_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Severity>, D::Error> {
    let text = String::deserialize(d)?;
    parse_severity(&text).map(Some).ok_or_else(|| {
        de::Error::custom(format!(
            "invalid severity {text:?} (expected info, warning or critical)"
        ))
    })
}
