//! From alerts to notifications, like Alertmanager: routing to receivers, grouping by labels
//! with group_wait / group_interval / repeat_interval, suppression (silences, inhibitions,
//! acknowledgements, the startup grace) and escalation.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, SystemTime},
};

use warden_core::{
    history::Severity,
    ports::{Notification, NotifiedAlert},
};

use crate::{
    Alert, AlertState, Evaluation, SuppressReason, Suppressed,
    config::AlertsConfig,
    engine::Record,
    matcher::{Matcher, all_match},
    rules::Rule,
};

/// A configured route, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub matchers: Vec<Matcher>,
    pub min_severity: Option<Severity>,
    pub receivers: Vec<String>,
}

/// A configured inhibition, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Inhibit {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

/// Where an alert's notifications go: computed once per alert.
#[derive(Debug, Clone)]
pub(crate) struct Routing {
    receivers: Vec<String>,
    key: String,
    common: BTreeMap<String, String>,
}

/// One notification group's timing and what it last told its receiver.
#[derive(Debug, Clone)]
struct Group {
    common: BTreeMap<String, String>,
    /// No flush before this.
    next_flush: SystemTime,
    last_sent: Option<SystemTime>,
    /// Alerts last notified as firing (kept while acknowledged, so that their resolution is
    /// notified), as they were then.
    sent: BTreeMap<String, NotifiedAlert>,
    /// Suppression last reported per alert, so that each is reported once.
    reported: HashMap<String, SuppressReason>,
}

/// What the alerts of one group and receiver ask for now.
#[derive(Default)]
struct Candidates {
    common: BTreeMap<String, String>,
    firing: BTreeSet<String>,
    acknowledged: BTreeSet<String>,
    suppressed: BTreeMap<String, (String, SuppressReason)>,
    repeat: Option<Duration>,
}

#[derive(Debug, Clone)]
pub(crate) struct Dispatcher {
    routes: Vec<Route>,
    pub inhibits: Vec<Inhibit>,
    /// By (group key, receiver).
    groups: BTreeMap<(String, String), Group>,
}

pub(crate) fn notified(alert: &Alert) -> NotifiedAlert {
    NotifiedAlert {
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
    }
}

/// The labels every alert shares.
fn common_labels<'a>(
    mut alerts: impl Iterator<Item = &'a NotifiedAlert>,
) -> BTreeMap<String, String> {
    let Some(first) = alerts.next() else {
        return BTreeMap::new();
    };
    let mut common = first.labels.clone();
    for a in alerts {
        common.retain(|k, v| a.labels.get(k) == Some(v));
    }
    common
}

impl Dispatcher {
    pub fn new(routes: Vec<Route>, inhibits: Vec<Inhibit>) -> Self {
        Self {
            routes,
            inhibits,
            groups: BTreeMap::new(),
        }
    }

    /// The receivers of an alert: its rule's, every matching route's, else the default one.
    fn receivers(&self, alert: &Alert, rule: &Rule, config: &AlertsConfig) -> Vec<String> {
        let mut out: Vec<String> = rule.receivers.clone();
        for route in &self.routes {
            if route.min_severity.is_none_or(|s| alert.severity >= s)
                && all_match(&route.matchers, &alert.labels)
            {
                out.extend(route.receivers.iter().cloned());
            }
        }
        if out.is_empty() && !config.default_receiver.is_empty() {
            out.push(config.default_receiver.clone());
        }
        let mut seen = BTreeSet::new();
        out.retain(|r| seen.insert(r.clone()));
        out
    }

    fn group_key(alert: &Alert, config: &AlertsConfig) -> (String, BTreeMap<String, String>) {
        let common: BTreeMap<String, String> = config
            .group_by
            .iter()
            .map(|l| (l.clone(), alert.labels.get(l).cloned().unwrap_or_default()))
            .collect();
        let key = format!(
            "{{{}}}",
            common
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        (key, common)
    }

    /// Why a firing alert is not notified now, if it is not.
    fn suppression(alert: &Alert, rule: &Rule, in_grace: bool) -> Option<SuppressReason> {
        if alert.silenced() {
            Some(SuppressReason::Silenced(alert.silenced_by.clone()))
        } else if !alert.inhibited_by.is_empty() {
            Some(SuppressReason::Inhibited(alert.inhibited_by.clone()))
        } else if in_grace && rule.held_in_grace() {
            Some(SuppressReason::StartupGrace)
        } else {
            alert
                .acknowledged_by
                .clone()
                .map(SuppressReason::Acknowledged)
        }
    }

    pub fn run(
        &mut self,
        now: SystemTime,
        records: &mut HashMap<String, Record>,
        rules: &[Rule],
        config: &AlertsConfig,
        start: SystemTime,
        out: &mut Evaluation,
    ) {
        let in_grace = now < start + config.startup_grace;
        let mut candidates: BTreeMap<(String, String), Candidates> = BTreeMap::new();
        let mut escalations: BTreeMap<(String, String), Vec<NotifiedAlert>> = BTreeMap::new();
        for record in records.values_mut() {
            let alert = &record.alert;
            if alert.state != AlertState::Firing || !record.notify {
                continue;
            }
            let rule = &rules[record.rule];
            let reason = Self::suppression(alert, rule, in_grace);
            // Labels and severity never change during an alert's life: route it once.
            if record.routing.is_none() {
                let (key, common) = Self::group_key(alert, config);
                record.routing = Some(Routing {
                    receivers: self.receivers(alert, rule, config),
                    key,
                    common,
                });
            }
            let alert = &record.alert;
            let Some(Routing {
                receivers,
                key,
                common,
            }) = &record.routing
            else {
                continue;
            };
            for receiver in receivers {
                let c = candidates
                    .entry((key.clone(), receiver.clone()))
                    .or_default();
                if c.common.is_empty() {
                    c.common.clone_from(common);
                }
                c.repeat = Some(
                    c.repeat
                        .map_or(rule.repeat_interval, |r| r.min(rule.repeat_interval)),
                );
                match &reason {
                    None => {
                        c.firing.insert(alert.name.clone());
                    }
                    Some(reason) => {
                        if matches!(reason, SuppressReason::Acknowledged(_)) {
                            c.acknowledged.insert(alert.name.clone());
                        }
                        c.suppressed
                            .insert(alert.name.clone(), (alert.rule.clone(), reason.clone()));
                    }
                }
            }
            let escalate = !config.escalate_after.is_zero()
                && reason.is_none()
                && !record.escalated
                && alert.severity == Severity::Critical
                && alert
                    .fired_at
                    .and_then(|f| now.duration_since(f).ok())
                    .is_some_and(|d| d >= config.escalate_after);
            if escalate {
                let targets = if config.escalation_receivers.is_empty() {
                    receivers.clone()
                } else {
                    config.escalation_receivers.clone()
                };
                for receiver in targets {
                    escalations
                        .entry((key.clone(), receiver))
                        .or_default()
                        .push(notified(alert));
                }
                record.escalated = true;
            }
        }
        for (k, c) in &candidates {
            if !self.groups.contains_key(k) && (!c.firing.is_empty() || !c.suppressed.is_empty()) {
                self.groups.insert(
                    k.clone(),
                    Group {
                        common: c.common.clone(),
                        next_flush: now + config.group_wait,
                        last_sent: None,
                        sent: BTreeMap::new(),
                        reported: HashMap::new(),
                    },
                );
            }
        }
        let empty = Candidates::default();
        let mut finished = Vec::new();
        for ((key, receiver), group) in &mut self.groups {
            if now < group.next_flush {
                continue;
            }
            let c = candidates
                .get(&(key.clone(), receiver.clone()))
                .unwrap_or(&empty);
            let mut resolved = Vec::new();
            group.sent.retain(|name, last| {
                if c.firing.contains(name) || c.acknowledged.contains(name) {
                    return true;
                }
                match records.get(name).map(|r| &r.alert) {
                    Some(alert) if alert.state == AlertState::Resolved => {
                        resolved.push(notified(alert));
                    }
                    None => {
                        let mut gone = last.clone();
                        gone.firing = false;
                        gone.resolved_at.get_or_insert(now);
                        resolved.push(gone);
                    }
                    // Still firing but no longer notified (silenced, inhibited, scale-down).
                    Some(_) => {}
                }
                false
            });
            let new = c.firing.iter().any(|n| !group.sent.contains_key(n));
            let repeat = !c.firing.is_empty()
                && group
                    .last_sent
                    .zip(c.repeat)
                    .is_some_and(|(t, r)| now.duration_since(t).is_ok_and(|d| d >= r));
            if new || repeat || !resolved.is_empty() {
                let firing: Vec<NotifiedAlert> = c
                    .firing
                    .iter()
                    .filter_map(|n| records.get(n))
                    .map(|r| notified(&r.alert))
                    .collect();
                for alert in &firing {
                    group.sent.insert(alert.name.clone(), alert.clone());
                }
                let mut alerts: Vec<NotifiedAlert> = firing.into_iter().chain(resolved).collect();
                alerts.sort_by(|a, b| a.name.cmp(&b.name));
                let mut common = common_labels(alerts.iter());
                common.extend(
                    group
                        .common
                        .iter()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                out.notifications.push(Notification {
                    group_key: key.clone(),
                    receiver: receiver.clone(),
                    resolved: c.firing.is_empty(),
                    escalated: false,
                    common_labels: common,
                    alerts,
                });
                group.last_sent = Some(now);
                group.next_flush = now + config.group_interval;
            }
            for (name, (rule, reason)) in &c.suppressed {
                if group.reported.get(name) != Some(reason) {
                    out.suppressed.push(Suppressed {
                        alert: name.clone(),
                        rule: rule.clone(),
                        receiver: receiver.clone(),
                        group_key: key.clone(),
                        state: AlertState::Firing,
                        reason: reason.clone(),
                        at: now,
                    });
                    group.reported.insert(name.clone(), reason.clone());
                }
            }
            group
                .reported
                .retain(|name, _| c.suppressed.contains_key(name));
            if group.sent.is_empty() && c.firing.is_empty() && c.suppressed.is_empty() {
                finished.push((key.clone(), receiver.clone()));
            }
        }
        for k in finished {
            self.groups.remove(&k);
        }
        for ((key, receiver), mut alerts) in escalations {
            alerts.sort_by(|a, b| a.name.cmp(&b.name));
            let mut common = common_labels(alerts.iter());
            if let Some(group) = self.groups.get(&(key.clone(), receiver.clone())) {
                common.extend(
                    group
                        .common
                        .iter()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
            }
            out.notifications.push(Notification {
                group_key: key,
                receiver,
                resolved: false,
                escalated: true,
                common_labels: common,
                alerts,
            });
        }
    }
}
