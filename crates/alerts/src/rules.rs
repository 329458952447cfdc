//! Alert rules, checked and compiled from the config: the built-in ones with their defaults,
//! overridden field by field, plus the configured new ones.
use std::{collections::BTreeMap, time::Duration};

use regex::Regex;
use warden_core::history::Severity;

use crate::{
    config::{AlertsConfig, RuleConfig, ScopeConfig},
    duration,
};

/// The health checks: one built-in rule each, named like the check.
pub const HEALTH_CHECKS: [&str; 11] = [
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

/// Every built-in rule id.
pub const BUILTIN_IDS: [&str; 18] = [
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
    "worker_lost",
    "group_min_workers",
    "queue_backlog",
    "broker_unreachable",
    "store_unavailable",
    "health_engine_failing",
    "recovery_exhausted",
];

/// Rules whose alerts mean "a worker is down": held during the startup grace.
pub const GRACE_RULES: [&str; 3] = ["heartbeat", "worker_lost", "group_min_workers"];

/// A worker figure a `metric` rule compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    CpuPercent,
    MemoryPercent,
    MemoryBytes,
    GpuUtilPercent,
    GpuMemoryPercent,
    DiskPercent,
    ActiveTasks,
    ErrorRate,
    ThroughputPerMin,
    Load1,
}

impl Metric {
    pub const ALL: [(&'static str, Metric); 10] = [
        ("cpu_percent", Metric::CpuPercent),
        ("memory_percent", Metric::MemoryPercent),
        ("memory_bytes", Metric::MemoryBytes),
        ("gpu_util_percent", Metric::GpuUtilPercent),
        ("gpu_memory_percent", Metric::GpuMemoryPercent),
        ("disk_percent", Metric::DiskPercent),
        ("active_tasks", Metric::ActiveTasks),
        ("error_rate", Metric::ErrorRate),
        ("throughput_per_min", Metric::ThroughputPerMin),
        ("load1", Metric::Load1),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("", |(n, _)| n)
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == text).map(|(_, m)| *m)
    }
}

/// How a `metric` rule compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ge,
    Gt,
    Le,
    Lt,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
        }
    }

    pub fn holds(self, observed: f64, threshold: f64) -> bool {
        match self {
            Op::Ge => observed >= threshold,
            Op::Gt => observed > threshold,
            Op::Le => observed <= threshold,
            Op::Lt => observed < threshold,
        }
    }
}

/// What a rule evaluates.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// A worker's finding for this health check at WARNING or CRITICAL.
    HealthCheck(&'static str),
    /// A worker whose lifecycle is LOST.
    WorkerLost,
    /// A group with fewer alive workers than `min_workers`: by crash (a worker LOST) it is an
    /// alert of the rule's severity; by goodbyes only (scale-down) an INFO alert, notified
    /// only when `notify_on_scale_down`.
    GroupMinWorkers {
        min_workers: u32,
        notify_on_scale_down: bool,
    },
    /// A queue at or above `max_depth` messages, or whose oldest pending message is at least
    /// `max_age` old (when the backend reports it).
    QueueBacklog {
        max_depth: Option<u64>,
        max_age: Option<Duration>,
    },
    /// A worker figure compared with a threshold.
    Metric { metric: Metric, op: Op, value: f64 },
    /// The broker source is not connected.
    BrokerUnreachable,
    /// [`crate::MonitoringStatus::store_up`] is false.
    StoreUnavailable,
    /// [`crate::MonitoringStatus::health_failed_share`] at or above `max_failed_share`.
    HealthEngineFailing { max_failed_share: f64 },
    /// Auto-recovery reached a restart cap for a worker
    /// ([`crate::MonitoringStatus::recovery_exhausted`]).
    RecoveryExhausted,
}

/// A compiled rule scope.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub groups: Vec<String>,
    pub queues: Vec<String>,
    /// The globs as written.
    pub workers: Vec<String>,
    worker_globs: Vec<Regex>,
}

impl PartialEq for Scope {
    fn eq(&self, other: &Self) -> bool {
        (&self.groups, &self.queues, &self.workers)
            == (&other.groups, &other.queues, &other.workers)
    }
}

impl Scope {
    fn compile(config: &ScopeConfig) -> Result<Self, String> {
        let worker_globs = config
            .workers
            .iter()
            .map(|g| glob(g))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            groups: config.groups.clone(),
            queues: config.queues.clone(),
            workers: config.workers.clone(),
            worker_globs,
        })
    }

    pub fn group_ok(&self, group: &str) -> bool {
        self.groups.is_empty() || self.groups.iter().any(|g| g == group)
    }

    pub fn queue_ok<'a>(&self, mut queues: impl Iterator<Item = &'a str>) -> bool {
        self.queues.is_empty() || queues.any(|q| self.queues.iter().any(|s| s == q))
    }

    pub fn worker_ok(&self, id: &str) -> bool {
        self.worker_globs.is_empty() || self.worker_globs.iter().any(|g| g.is_match(id))
    }
}

/// A glob (`*` any run, `?` one character) as an anchored regex.
fn glob(pattern: &str) -> Result<Regex, String> {
    let mut re = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    Regex::new(&re).map_err(|e| e.to_string())
}

/// A rule, checked: what the engine evaluates and what `ListAlertRules` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// lower_snake_case, e.g. "worker_lost".
    pub id: String,
    pub description: String,
    /// The check it is based on, for display (proto `AlertRule.check`).
    pub check: String,
    /// The condition as configured, for display; not meant to be parsed.
    pub expression: String,
    pub kind: RuleKind,
    /// Severity of its alerts (for health-check rules following the finding: the highest
    /// they can have, CRITICAL).
    pub severity: Severity,
    /// Health-check rules: the alert takes the finding's severity (WARNING or CRITICAL).
    pub severity_from_finding: bool,
    pub for_duration: Duration,
    pub keep_firing_for: Duration,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub summary: String,
    pub details: String,
    pub repeat_interval: Duration,
    pub receivers: Vec<String>,
    pub enabled: bool,
    pub scope: Scope,
}

impl Rule {
    /// Resource name, `alertRules/{id}`.
    pub fn name(&self) -> String {
        format!("alertRules/{}", self.id)
    }

    /// The check as `AlertRule.check`'s documented vocabulary names it: `group_min_workers`
    /// is "group_empty", and conditions without a built-in check of their own (`metric`,
    /// `queue_backlog`, monitoring failures) are "expression" (see [`Rule::expression`]).
    pub fn proto_check(&self) -> &str {
        match self.check.as_str() {
            "group_min_workers" => "group_empty",
            c if HEALTH_CHECKS.contains(&c) || c == "worker_lost" || c == "recovery_exhausted" => c,
            _ => "expression",
        }
    }

    /// Its alerts are held during the startup grace.
    pub fn held_in_grace(&self) -> bool {
        GRACE_RULES.contains(&self.check.as_str())
    }
}

/// Why the config was refused: the field (e.g. `alerts.rules.cpu.severity`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

struct Defaults {
    check: &'static str,
    description: &'static str,
    severity: Severity,
    from_finding: bool,
    for_duration: Duration,
    keep_firing_for: Duration,
    summary: &'static str,
    details: &'static str,
}

fn builtin(id: &str) -> Option<Defaults> {
    let secs = Duration::from_secs;
    if let Some(check) = HEALTH_CHECKS.iter().find(|c| **c == id) {
        return Some(Defaults {
            check,
            description: "A worker's health check finds a problem (WARNING or CRITICAL).",
            severity: Severity::Critical,
            from_finding: true,
            for_duration: Duration::ZERO,
            keep_firing_for: secs(30),
            summary: "{worker}: {rule} {severity}",
            details: "{message} (observed {value}, threshold {threshold})",
        });
    }
    let d = |check, description, severity, for_duration, summary, details| Defaults {
        check,
        description,
        severity,
        from_finding: false,
        for_duration,
        keep_firing_for: Duration::ZERO,
        summary,
        details,
    };
    Some(match id {
        "worker_lost" => d(
            "worker_lost",
            "A worker stopped reporting without saying goodbye (LOST).",
            Severity::Critical,
            Duration::ZERO,
            "{worker} is lost",
            "{worker} of group {group} stopped reporting without saying goodbye.",
        ),
        "group_min_workers" => d(
            "group_min_workers",
            "A group has fewer alive workers than it needs.",
            Severity::Critical,
            Duration::ZERO,
            "group {group} has {value} alive workers (needs {threshold})",
            "{message}",
        ),
        "queue_backlog" => d(
            "queue_backlog",
            "A queue holds too many messages, or its oldest is too old, for a while.",
            Severity::Warning,
            secs(300),
            "queue {queue} is backlogged ({value})",
            "{message}",
        ),
        "broker_unreachable" => d(
            "broker_unreachable",
            "warden cannot reach the broker: worker data is stale.",
            Severity::Critical,
            secs(30),
            "broker unreachable",
            "{message}",
        ),
        "store_unavailable" => d(
            "store_unavailable",
            "warden's history store is unavailable.",
            Severity::Warning,
            secs(60),
            "history store unavailable",
            "The history store does not answer: events and samples are not recorded.",
        ),
        "recovery_exhausted" => d(
            "recovery_exhausted",
            "Auto-recovery reached its restart cap for a worker: it is left as it is.",
            Severity::Critical,
            Duration::ZERO,
            "{worker}: auto-recovery gave up",
            "{message}",
        ),
        "health_engine_failing" => d(
            "health_engine_failing",
            "The health engine cannot evaluate a large share of the workers.",
            Severity::Warning,
            secs(120),
            "health checks fail for {value} of workers",
            "Health could not be evaluated for {value} of workers (threshold {threshold}).",
        ),
        _ => return None,
    })
}

fn generic_defaults(check: &'static str) -> Defaults {
    Defaults {
        check,
        description: "",
        severity: Severity::Warning,
        from_finding: false,
        for_duration: Duration::from_secs(300),
        keep_firing_for: Duration::ZERO,
        summary: "{worker}{queue}: {rule} ({value})",
        details: "{message}",
    }
}

const CHECKS: [&str; 19] = [
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
    "worker_lost",
    "group_min_workers",
    "queue_backlog",
    "metric",
    "broker_unreachable",
    "store_unavailable",
    "health_engine_failing",
    "recovery_exhausted",
];

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && id.len() <= 63
}

/// The rules of a config, sorted by id: every built-in (overridden as configured) and every
/// configured new one.
pub fn compile(config: &AlertsConfig) -> Result<Vec<Rule>, ConfigError> {
    let mut ids: Vec<&str> = BUILTIN_IDS.to_vec();
    for id in config.rules.keys() {
        if !BUILTIN_IDS.contains(&id.as_str()) {
            ids.push(id);
        }
    }
    let empty = RuleConfig::default();
    let mut rules = Vec::with_capacity(ids.len());
    for id in ids {
        let field = format!("alerts.rules.{id}");
        if !valid_id(id) {
            return Err(err(
                &field,
                "rule ids are lower_snake_case (a-z, 0-9, _), at most 63 characters",
            ));
        }
        let rc = config.rules.get(id).unwrap_or(&empty);
        let defaults = match builtin(id) {
            Some(d) => {
                if let Some(check) = &rc.check
                    && check != d.check
                {
                    return Err(err(
                        format!("{field}.check"),
                        format!(
                            "the built-in rule {id} checks {:?}; give a new id for another check",
                            d.check
                        ),
                    ));
                }
                d
            }
            None => {
                let Some(check) = rc.check.as_deref() else {
                    return Err(err(format!("{field}.check"), "required for a new rule"));
                };
                let Some(check) = CHECKS.iter().find(|c| **c == check) else {
                    return Err(err(
                        format!("{field}.check"),
                        format!("unknown check {check:?} (one of {})", CHECKS.join(", ")),
                    ));
                };
                let mut d = builtin(check).unwrap_or_else(|| generic_defaults(check));
                d.check = check;
                d
            }
        };
        rules.push(compile_one(id, &field, rc, defaults, config)?);
    }
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(rules)
}

fn compile_one(
    id: &str,
    field: &str,
    rc: &RuleConfig,
    d: Defaults,
    config: &AlertsConfig,
) -> Result<Rule, ConfigError> {
    let kind = match d.check {
        "worker_lost" => RuleKind::WorkerLost,
        "group_min_workers" => RuleKind::GroupMinWorkers {
            min_workers: rc.min_workers.unwrap_or(1),
            notify_on_scale_down: rc.notify_on_scale_down.unwrap_or(false),
        },
        "queue_backlog" => {
            let max_depth = match (rc.max_depth, rc.max_age) {
                (None, None) => Some(10_000),
                (depth, _) => depth,
            };
            RuleKind::QueueBacklog {
                max_depth,
                max_age: rc.max_age,
            }
        }
        "metric" => {
            let name = rc
                .metric
                .as_deref()
                .ok_or_else(|| err(format!("{field}.metric"), "required for a metric rule"))?;
            let metric = Metric::parse(name).ok_or_else(|| {
                err(
                    format!("{field}.metric"),
                    format!(
                        "unknown metric {name:?} (one of {})",
                        Metric::ALL.map(|(n, _)| n).join(", ")
                    ),
                )
            })?;
            let op = match rc.op.as_deref().unwrap_or(">=") {
                ">=" => Op::Ge,
                ">" => Op::Gt,
                "<=" => Op::Le,
                "<" => Op::Lt,
                other => {
                    return Err(err(
                        format!("{field}.op"),
                        format!("unknown operator {other:?} (one of >=, >, <=, <)"),
                    ));
                }
            };
            let value = rc
                .value
                .filter(|v| v.is_finite())
                .ok_or_else(|| err(format!("{field}.value"), "required: a finite number"))?;
            RuleKind::Metric { metric, op, value }
        }
        "broker_unreachable" => RuleKind::BrokerUnreachable,
        "store_unavailable" => RuleKind::StoreUnavailable,
        "recovery_exhausted" => RuleKind::RecoveryExhausted,
        "health_engine_failing" => {
            let share = rc.max_failed_share.unwrap_or(0.5);
            if !(share > 0.0 && share <= 1.0) {
                return Err(err(
                    format!("{field}.max_failed_share"),
                    "must be in (0, 1]",
                ));
            }
            RuleKind::HealthEngineFailing {
                max_failed_share: share,
            }
        }
        check => RuleKind::HealthCheck(
            HEALTH_CHECKS
                .iter()
                .find(|c| **c == check)
                .copied()
                .ok_or_else(|| err(format!("{field}.check"), "unknown check"))?,
        ),
    };
    let scope = Scope::compile(rc.scope.as_ref().unwrap_or(&ScopeConfig::default()))
        .map_err(|e| err(format!("{field}.scope.workers"), e))?;
    let for_duration = rc.for_duration.unwrap_or(d.for_duration);
    let expression = expression(&kind, for_duration);
    let labels = rc.labels.clone().unwrap_or_default();
    for reserved in ["rule", "severity", "worker", "group", "queue"] {
        if labels.contains_key(reserved) {
            return Err(err(
                format!("{field}.labels.{reserved}"),
                "this label is set by the engine",
            ));
        }
    }
    Ok(Rule {
        id: id.to_string(),
        description: rc.description.clone().unwrap_or_else(|| {
            if d.description.is_empty() {
                expression.clone()
            } else {
                d.description.to_string()
            }
        }),
        check: d.check.to_string(),
        expression,
        kind,
        severity: rc.severity.unwrap_or(d.severity),
        severity_from_finding: d.from_finding && rc.severity.is_none(),
        for_duration,
        keep_firing_for: rc.keep_firing_for.unwrap_or(d.keep_firing_for),
        labels,
        annotations: rc.annotations.clone().unwrap_or_default(),
        summary: rc.summary.clone().unwrap_or_else(|| d.summary.to_string()),
        details: rc.details.clone().unwrap_or_else(|| d.details.to_string()),
        repeat_interval: rc.repeat_interval.unwrap_or(config.repeat_interval),
        receivers: rc.receivers.clone().unwrap_or_default(),
        enabled: rc.enabled.unwrap_or(true),
        scope,
    })
}

fn expression(kind: &RuleKind, for_duration: Duration) -> String {
    let base = match kind {
        RuleKind::HealthCheck(check) => format!("health finding {check} at WARNING or CRITICAL"),
        RuleKind::WorkerLost => "worker lifecycle LOST".into(),
        RuleKind::GroupMinWorkers {
            min_workers,
            notify_on_scale_down,
        } => format!(
            "alive workers < {min_workers} per group (scale-down notified: {notify_on_scale_down})"
        ),
        RuleKind::QueueBacklog { max_depth, max_age } => {
            let mut parts = Vec::new();
            if let Some(d) = max_depth {
                parts.push(format!("depth >= {d}"));
            }
            if let Some(a) = max_age {
                parts.push(format!("oldest pending age >= {}", duration::format(*a)));
            }
            parts.join(" or ")
        }
        RuleKind::Metric { metric, op, value } => {
            format!("{} {} {value}", metric.name(), op.symbol())
        }
        RuleKind::BrokerUnreachable => "broker source not connected".into(),
        RuleKind::StoreUnavailable => "history store down".into(),
        RuleKind::RecoveryExhausted => "auto-recovery restart cap reached".into(),
        RuleKind::HealthEngineFailing { max_failed_share } => {
            format!("share of workers whose health check failed >= {max_failed_share}")
        }
    };
    if for_duration.is_zero() {
        base
    } else {
        format!("{base} for {}", duration::format(for_duration))
    }
}

/// Fills a template's placeholders; unknown ones stay as written.
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if values.contains_key(&after[..close]) => {
                out.push_str(&values[&after[..close]]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
