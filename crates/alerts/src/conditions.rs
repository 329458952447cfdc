//! Rule conditions over one fleet snapshot: which alerts should exist now, with what they
//! observed. Pure: the lifecycle (pending, firing, resolved) is the engine's.
use std::collections::BTreeMap;

use warden_core::{
    Snapshot,
    history::Severity,
    model::{
        Backend, Finding, HealthStatus, Lifecycle, UNGROUPED, Worker, WorkerKey, percent_encode,
    },
};

use crate::{
    MonitoringStatus,
    config::severity_name,
    rules::{Metric, Rule, RuleKind, render},
};

/// One thing a rule's condition holds for now (a worker, a group, a queue, the fleet).
#[derive(Debug, Clone)]
pub struct Hit {
    /// Identity of the alert: rule, subject and severity. The same key on the next evaluation
    /// is the same alert.
    pub fingerprint: String,
    /// The rule and subject without the severity: an alert of another severity for the same
    /// subject is superseded by this one.
    pub subject: String,
    pub rule: usize,
    pub severity: Severity,
    pub worker: Option<WorkerKey>,
    /// Group resource name (`groups/{backend}/{name}`).
    pub group: Option<String>,
    pub queue: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub description: String,
    pub findings: Vec<Finding>,
    /// False for an alert that is recorded but never notified (a scale-down the rule does not
    /// notify).
    pub notify: bool,
}

/// `groups/{backend}/{name}`, as the API names groups.
pub fn group_resource_name(backend: Backend, group: &str) -> String {
    format!("groups/{}/{}", backend.slug(), percent_encode(group))
}

struct Subject<'a> {
    worker: Option<&'a Worker>,
    group: Option<(Backend, &'a str)>,
    queue: Option<&'a str>,
}

struct Observed {
    severity: Severity,
    value: String,
    threshold: String,
    message: String,
    findings: Vec<Finding>,
    cause: Option<&'static str>,
    notify: bool,
}

fn hit(index: usize, rule: &Rule, subject: Subject<'_>, observed: Observed) -> Hit {
    let mut labels = rule.labels.clone();
    labels.insert("rule".into(), rule.id.clone());
    labels.insert("severity".into(), severity_name(observed.severity).into());
    let worker_name = subject.worker.map(|w| w.key.resource_name());
    let group = subject
        .group
        .or(subject.worker.map(|w| (w.key.backend, &*w.group)))
        .map(|(b, g)| (g, group_resource_name(b, g)));
    if let Some(name) = &worker_name {
        labels.insert("worker".into(), name.clone());
    }
    if let Some((_, name)) = &group {
        labels.insert("group".into(), name.clone());
    }
    if let Some(queue) = subject.queue {
        labels.insert("queue".into(), queue.into());
    }
    if let Some(cause) = observed.cause {
        labels.insert("cause".into(), cause.into());
    }
    let values: BTreeMap<&str, String> = BTreeMap::from([
        (
            "worker",
            subject.worker.map_or(String::new(), |w| w.id().to_string()),
        ),
        (
            "group",
            group.as_ref().map_or(String::new(), |(g, _)| g.to_string()),
        ),
        ("queue", subject.queue.unwrap_or_default().to_string()),
        ("value", observed.value),
        ("threshold", observed.threshold),
        ("rule", rule.id.clone()),
        ("severity", severity_name(observed.severity).to_string()),
        ("message", observed.message),
    ]);
    let subject_key = format!(
        "{}|w={}|g={}|q={}|c={}",
        rule.id,
        worker_name.as_deref().unwrap_or_default(),
        group.as_ref().map_or("", |(_, n)| n.as_str()),
        subject.queue.unwrap_or_default(),
        observed.cause.unwrap_or_default(),
    );
    let fingerprint = format!("{subject_key}|s={}", severity_name(observed.severity));
    Hit {
        fingerprint,
        subject: subject_key,
        rule: index,
        severity: observed.severity,
        worker: subject.worker.map(|w| w.key.clone()),
        group: group.map(|(_, n)| n),
        queue: subject.queue.map(str::to_string),
        labels,
        summary: render(&rule.summary, &values),
        description: render(&rule.details, &values),
        findings: observed.findings,
        notify: observed.notify,
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn worker_in_scope(rule: &Rule, w: &Worker) -> bool {
    rule.scope.group_ok(&w.group)
        && rule
            .scope
            .queue_ok(w.queues.iter().map(|q| q.name.as_str()))
        && rule.scope.worker_ok(w.id())
}

fn metric_value(metric: Metric, w: &Worker) -> Option<f64> {
    let res = w.resources.as_deref();
    let five_min = || w.task_stats.as_ref().map(|s| &s.overall[1]);
    match metric {
        Metric::CpuPercent => res?.cpu_percent,
        Metric::MemoryPercent => res?.memory_percent(),
        Metric::MemoryBytes => res?.memory_bytes.map(|b| b as f64),
        Metric::GpuUtilPercent => res?.gpu_util_percent,
        Metric::GpuMemoryPercent => res?.gpu_memory_percent,
        Metric::DiskPercent => res?.disk_percent,
        Metric::ActiveTasks => Some(f64::from(w.active_tasks)),
        Metric::ErrorRate => five_min().map(|r| r.error_rate()),
        Metric::ThroughputPerMin => five_min().map(|r| r.throughput_per_min()),
        Metric::Load1 => w.load_average.map(|l| l[0]),
    }
    .filter(|v| v.is_finite())
}

/// Every hit of every enabled rule.
pub fn evaluate(rules: &[Rule], snapshot: &Snapshot, monitoring: &MonitoringStatus) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        if rule.enabled {
            evaluate_rule(index, rule, snapshot, monitoring, &mut hits);
        }
    }
    hits
}

fn evaluate_rule(
    index: usize,
    rule: &Rule,
    snapshot: &Snapshot,
    monitoring: &MonitoringStatus,
    hits: &mut Vec<Hit>,
) {
    let fleet = || Subject {
        worker: None,
        group: None,
        queue: None,
    };
    let plain = |severity, value: String, threshold: String, message: String| Observed {
        severity,
        value,
        threshold,
        message,
        findings: Vec::new(),
        cause: None,
        notify: true,
    };
    match &rule.kind {
        RuleKind::HealthCheck(check) => {
            for w in snapshot.workers.values() {
                let Some(health) = &w.health else { continue };
                if !worker_in_scope(rule, w) {
                    continue;
                }
                let worst = health
                    .findings
                    .iter()
                    .filter(|f| f.check == *check && !f.error && f.status != HealthStatus::Healthy)
                    .max_by_key(|f| f.status);
                let Some(finding) = worst else { continue };
                let severity = if rule.severity_from_finding {
                    match finding.status {
                        HealthStatus::Critical => Severity::Critical,
                        _ => Severity::Warning,
                    }
                } else {
                    rule.severity
                };
                let unit = |v: f64| match finding.unit {
                    "" => number(v),
                    u => format!("{} {u}", number(v)),
                };
                let observed = Observed {
                    severity,
                    value: unit(finding.observed),
                    threshold: unit(finding.threshold),
                    message: finding.message.clone(),
                    findings: health
                        .findings
                        .iter()
                        .filter(|f| f.check == *check)
                        .cloned()
                        .collect(),
                    cause: None,
                    notify: true,
                };
                let subject = Subject {
                    worker: Some(w),
                    group: None,
                    queue: None,
                };
                hits.push(hit(index, rule, subject, observed));
            }
        }
        RuleKind::WorkerLost => {
            for w in snapshot.workers.values() {
                if w.lifecycle != Lifecycle::Lost || !worker_in_scope(rule, w) {
                    continue;
                }
                let message = format!("{} stopped reporting without saying goodbye", w.id());
                let subject = Subject {
                    worker: Some(w),
                    group: None,
                    queue: None,
                };
                hits.push(hit(
                    index,
                    rule,
                    subject,
                    plain(rule.severity, "LOST".into(), "ALIVE".into(), message),
                ));
            }
        }
        RuleKind::GroupMinWorkers {
            min_workers,
            notify_on_scale_down,
        } => {
            let mut groups: BTreeMap<(Backend, &str), Vec<&Worker>> = BTreeMap::new();
            for w in snapshot.workers.values() {
                if &*w.group != UNGROUPED {
                    groups.entry((w.key.backend, &w.group)).or_default().push(w);
                }
            }
            for ((backend, group), workers) in groups {
                if !rule.scope.group_ok(group)
                    || !rule.scope.queue_ok(
                        workers
                            .iter()
                            .flat_map(|w| w.queues.iter().map(|q| q.name.as_str())),
                    )
                {
                    continue;
                }
                let alive = workers
                    .iter()
                    .filter(|w| w.lifecycle == Lifecycle::Alive)
                    .count();
                if alive >= *min_workers as usize {
                    continue;
                }
                let lost: Vec<&str> = workers
                    .iter()
                    .filter(|w| w.lifecycle == Lifecycle::Lost)
                    .map(|w| w.id())
                    .collect();
                let offline = workers
                    .iter()
                    .filter(|w| w.lifecycle == Lifecycle::Offline)
                    .count();
                let (severity, cause, notify, message) = if !lost.is_empty() {
                    let shown: Vec<&str> = lost.iter().take(10).copied().collect();
                    let more = lost.len().saturating_sub(shown.len());
                    let mut message = format!(
                        "group {group} has {alive} alive workers (needs {min_workers}): {} lost ({})",
                        lost.len(),
                        shown.join(", ")
                    );
                    if more > 0 {
                        message.push_str(&format!(" and {more} more"));
                    }
                    (rule.severity, "crash", true, message)
                } else if offline > 0 {
                    let message = format!(
                        "group {group} has {alive} alive workers (needs {min_workers}): {offline} said goodbye (scale-down)"
                    );
                    (Severity::Info, "scale_down", *notify_on_scale_down, message)
                } else {
                    // Workers remembered from before a restart and not heard from yet: no
                    // evidence either way.
                    continue;
                };
                let observed = Observed {
                    severity,
                    value: alive.to_string(),
                    threshold: min_workers.to_string(),
                    message,
                    findings: Vec::new(),
                    cause: Some(cause),
                    notify,
                };
                let subject = Subject {
                    worker: None,
                    group: Some((backend, group)),
                    queue: None,
                };
                hits.push(hit(index, rule, subject, observed));
            }
        }
        RuleKind::QueueBacklog { max_depth, max_age } => {
            for q in snapshot.queues.values() {
                let consumer_groups: Vec<&str> = q
                    .consumers
                    .iter()
                    .filter_map(|k| snapshot.workers.get(k))
                    .map(|w| &*w.group)
                    .collect();
                let group = consumer_groups
                    .first()
                    .filter(|g| consumer_groups.iter().all(|o| o == *g))
                    .copied();
                if !rule.scope.queue_ok(std::iter::once(q.name.as_str()))
                    || !(rule.scope.groups.is_empty()
                        || group.is_some_and(|g| rule.scope.group_ok(g)))
                {
                    continue;
                }
                let by_depth = max_depth.filter(|m| q.depth >= *m);
                let by_age = max_age
                    .zip(q.oldest_pending_age)
                    .filter(|(max, age)| age >= max);
                let (value, threshold, message) = if let Some((max, age)) = by_age {
                    (
                        format!("oldest {}", crate::duration::format(age)),
                        crate::duration::format(max),
                        format!(
                            "queue {} oldest pending message is {} old (threshold {})",
                            q.name,
                            crate::duration::format(age),
                            crate::duration::format(max)
                        ),
                    )
                } else if let Some(max) = by_depth {
                    (
                        format!("{} messages", q.depth),
                        max.to_string(),
                        format!(
                            "queue {} holds {} messages (threshold {max})",
                            q.name, q.depth
                        ),
                    )
                } else {
                    continue;
                };
                let subject = Subject {
                    worker: None,
                    group: group.map(|g| (q.backend, g)),
                    queue: Some(&q.name),
                };
                hits.push(hit(
                    index,
                    rule,
                    subject,
                    plain(rule.severity, value, threshold, message),
                ));
            }
        }
        RuleKind::Metric { metric, op, value } => {
            for w in snapshot.workers.values() {
                if w.lifecycle != Lifecycle::Alive || !worker_in_scope(rule, w) {
                    continue;
                }
                let Some(observed) = metric_value(*metric, w) else {
                    continue;
                };
                if !op.holds(observed, *value) {
                    continue;
                }
                let message = format!(
                    "{} {} is {} ({} {})",
                    w.id(),
                    metric.name(),
                    number(observed),
                    op.symbol(),
                    number(*value)
                );
                let subject = Subject {
                    worker: Some(w),
                    group: None,
                    queue: None,
                };
                hits.push(hit(
                    index,
                    rule,
                    subject,
                    plain(rule.severity, number(observed), number(*value), message),
                ));
            }
        }
        RuleKind::BrokerUnreachable => {
            if let Some(broker) = snapshot.sources.get(warden_core::model::BROKER)
                && !broker.connected
            {
                let message = format!("broker unreachable: {}", broker.reason);
                hits.push(hit(
                    index,
                    rule,
                    fleet(),
                    plain(
                        rule.severity,
                        "disconnected".into(),
                        "connected".into(),
                        message,
                    ),
                ));
            }
        }
        RuleKind::StoreUnavailable => {
            if !monitoring.store_up {
                let message = "history store unavailable".to_string();
                hits.push(hit(
                    index,
                    rule,
                    fleet(),
                    plain(rule.severity, "down".into(), "up".into(), message),
                ));
            }
        }
        RuleKind::RecoveryExhausted => {
            for (key, why) in &monitoring.recovery_exhausted {
                let Some(w) = snapshot.workers.get(key) else {
                    continue;
                };
                if !worker_in_scope(rule, w) {
                    continue;
                }
                let subject = Subject {
                    worker: Some(w),
                    group: None,
                    queue: None,
                };
                hits.push(hit(
                    index,
                    rule,
                    subject,
                    plain(rule.severity, "exhausted".into(), "cap".into(), why.clone()),
                ));
            }
        }
        RuleKind::HealthEngineFailing { max_failed_share } => {
            let share = monitoring.health_failed_share;
            if share.is_finite() && share >= *max_failed_share {
                let message = format!(
                    "health could not be evaluated for {:.0}% of workers",
                    share * 100.0
                );
                hits.push(hit(
                    index,
                    rule,
                    fleet(),
                    plain(
                        rule.severity,
                        format!("{:.0}%", share * 100.0),
                        format!("{:.0}%", max_failed_share * 100.0),
                        message,
                    ),
                ));
            }
        }
    }
}
