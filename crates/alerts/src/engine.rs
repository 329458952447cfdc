//! The alert engine: the lifecycle of alerts (pending → firing → resolved), their silences,
//! acknowledgements and inhibitions, and the queries the API serves.
use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use warden_core::{Snapshot, history::Severity, ports::Notification};

use crate::{
    Alert, AlertFilter, AlertState, Evaluation, MonitoringStatus, Transition,
    conditions::{self, Hit},
    config::AlertsConfig,
    dispatch::{Dispatcher, Inhibit, Route, Routing},
    matcher::{all_match, from_tables},
    rules::{self, ConfigError, Rule},
    silences::{self, AlertError, Silence, SilenceSpec, SilenceState},
};

/// Longest duration a config may set (so that time arithmetic never overflows).
const MAX_DURATION_DAYS: u64 = 365;

/// Most alert names a silence's creation lists.
const MAX_COVERED_LISTED: usize = 1000;

/// An alert and what the engine keeps beside it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub alert: Alert,
    pub fingerprint: String,
    /// See [`Hit::subject`].
    pub subject: String,
    /// Index into the engine's rules.
    pub rule: usize,
    /// When the condition was first seen not holding (flap damping counts from here).
    pub cleared_at: Option<SystemTime>,
    /// False: recorded, never notified (a scale-down the rule does not notify).
    pub notify: bool,
    pub escalated: bool,
    /// Receivers and notification group, computed on first dispatch.
    pub routing: Option<Routing>,
}

/// What [`AlertEngine::create_silence`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct SilenceCreated {
    /// The silence (with an empty name for a dry run).
    pub silence: Silence,
    /// Pending or firing alerts it covers, by name, at most 1000.
    pub alerts: Vec<String>,
    /// How many pending or firing alerts it covers in all.
    pub alerts_total: usize,
}

/// The alert engine. See the crate documentation. Cloning copies its whole state.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    pub(crate) config: AlertsConfig,
    pub(crate) rules: Vec<Rule>,
    pub(crate) start: SystemTime,
    id_prefix: String,
    next_id: u64,
    pub(crate) alerts: HashMap<String, Record>,
    /// Pending and firing alerts: fingerprint → name.
    active: HashMap<String, String>,
    /// Resolved alerts, oldest first, for the retention cap.
    resolved: VecDeque<String>,
    silences: BTreeMap<String, Silence>,
    pub(crate) dispatcher: Dispatcher,
}

impl AlertEngine {
    /// Checks the config and builds the engine. `start` is when warden started: the startup
    /// grace counts from it.
    pub fn new(config: AlertsConfig, start: SystemTime) -> Result<Self, ConfigError> {
        let rules = rules::compile(&config)?;
        let cfg_err = |field: String, message: String| ConfigError { field, message };
        let mut routes = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let matchers = from_tables(&r.match_eq, &r.match_re)
                .map_err(|(label, e)| cfg_err(format!("alerts.routes[{i}].match_re.{label}"), e))?;
            if r.receivers.is_empty() {
                return Err(cfg_err(
                    format!("alerts.routes[{i}].receivers"),
                    "at least one receiver is required".into(),
                ));
            }
            routes.push(Route {
                matchers,
                min_severity: r.min_severity,
                receivers: r.receivers.clone(),
            });
        }
        let mut inhibits = Vec::new();
        for (i, ih) in config.inhibit.iter().enumerate() {
            let source =
                from_tables(&ih.source_match, &ih.source_match_re).map_err(|(label, e)| {
                    cfg_err(format!("alerts.inhibit[{i}].source_match_re.{label}"), e)
                })?;
            let target =
                from_tables(&ih.target_match, &ih.target_match_re).map_err(|(label, e)| {
                    cfg_err(format!("alerts.inhibit[{i}].target_match_re.{label}"), e)
                })?;
            if source.is_empty() || target.is_empty() {
                return Err(cfg_err(
                    format!("alerts.inhibit[{i}]"),
                    "source and target matchers are both required".into(),
                ));
            }
            inhibits.push(Inhibit {
                source,
                target,
                equal: ih.equal.clone(),
            });
        }
        let limit = Duration::from_secs(MAX_DURATION_DAYS * 86_400);
        let mut durations = vec![
            ("alerts.startup_grace".to_string(), config.startup_grace),
            ("alerts.group_wait".to_string(), config.group_wait),
            ("alerts.group_interval".to_string(), config.group_interval),
            ("alerts.repeat_interval".to_string(), config.repeat_interval),
            ("alerts.escalate_after".to_string(), config.escalate_after),
            (
                "alerts.silence_retention".to_string(),
                config.silence_retention,
            ),
            ("alerts.inhibit_hold".to_string(), config.inhibit_hold),
        ];
        for r in &rules {
            let field = |name: &str| format!("alerts.rules.{}.{name}", r.id);
            durations.push((field("for"), r.for_duration));
            durations.push((field("keep_firing_for"), r.keep_firing_for));
            durations.push((field("repeat_interval"), r.repeat_interval));
        }
        if let Some((field, _)) = durations.into_iter().find(|(_, d)| *d > limit) {
            return Err(cfg_err(field, format!("at most {MAX_DURATION_DAYS} days")));
        }
        if config.group_by.is_empty() {
            return Err(cfg_err(
                "alerts.group_by".into(),
                "at least one label is required".into(),
            ));
        }
        let millis = start
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Ok(Self {
            dispatcher: Dispatcher::new(routes, inhibits),
            config,
            rules,
            start,
            id_prefix: format!("{millis:x}"),
            next_id: 1,
            alerts: HashMap::new(),
            active: HashMap::new(),
            resolved: VecDeque::new(),
            silences: BTreeMap::new(),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &AlertsConfig {
        &self.config
    }

    /// Whether `now` is within the startup grace.
    pub fn in_grace(&self, now: SystemTime) -> bool {
        now < self.start + self.config.startup_grace
    }

    /// Evaluates every rule against the snapshot at `now`: alerts start, fire and resolve,
    /// and the notifications due now are returned (grouped, routed, filtered).
    pub fn evaluate(
        &mut self,
        now: SystemTime,
        snapshot: &Snapshot,
        monitoring: &MonitoringStatus,
    ) -> Evaluation {
        let mut out = Evaluation::default();
        let hits = conditions::evaluate(&self.rules, snapshot, monitoring);
        let mut holding: HashSet<String> = HashSet::with_capacity(hits.len());
        let mut subjects: HashSet<String> = HashSet::with_capacity(hits.len());
        for hit in hits {
            holding.insert(hit.fingerprint.clone());
            subjects.insert(hit.subject.clone());
            self.apply_hit(hit, now, &mut out.transitions);
        }
        let stopped: Vec<String> = self
            .active
            .iter()
            .filter(|(fp, _)| !holding.contains(*fp))
            .map(|(_, name)| name.clone())
            .collect();
        for name in stopped {
            self.apply_stopped(&name, now, &subjects, &mut out.transitions);
        }
        out.transitions
            .sort_by(|a, b| (a.at, &a.alert).cmp(&(b.at, &b.alert)));
        self.refresh_marks(now);
        let Self {
            dispatcher,
            alerts,
            rules,
            config,
            start,
            ..
        } = self;
        dispatcher.run(now, alerts, rules, config, *start, &mut out);
        self.prune(now);
        out
    }

    fn apply_hit(&mut self, hit: Hit, now: SystemTime, transitions: &mut Vec<Transition>) {
        let rule = &self.rules[hit.rule];
        if let Some(name) = self.active.get(&hit.fingerprint)
            && let Some(record) = self.alerts.get_mut(name)
        {
            record.cleared_at = None;
            let alert = &mut record.alert;
            alert.summary = hit.summary;
            alert.description = hit.description;
            alert.findings = hit.findings;
            record.notify = hit.notify;
            if alert.state == AlertState::Pending
                && now
                    .duration_since(alert.started_at)
                    .is_ok_and(|held| held >= rule.for_duration)
            {
                alert.state = AlertState::Firing;
                alert.fired_at = Some(now);
                transitions.push(transition(alert, Some(AlertState::Pending), now));
            }
            return;
        }
        let name = format!("alerts/{}-{}", self.id_prefix, self.next_id);
        self.next_id += 1;
        let firing = rule.for_duration.is_zero();
        let alert = Alert {
            name: name.clone(),
            rule: rule.id.clone(),
            severity: hit.severity,
            state: if firing {
                AlertState::Firing
            } else {
                AlertState::Pending
            },
            acknowledged_by: None,
            acknowledged_at: None,
            silenced_by: Vec::new(),
            inhibited_by: Vec::new(),
            worker: hit.worker,
            group: hit.group,
            queue: hit.queue,
            summary: hit.summary,
            description: hit.description,
            labels: hit.labels,
            annotations: rule.annotations.clone(),
            started_at: now,
            fired_at: firing.then_some(now),
            resolved_at: None,
            last_notified_at: None,
            findings: hit.findings,
        };
        tracing::debug!(alert = %name, rule = %alert.rule, state = ?alert.state, "alert started");
        transitions.push(transition(&alert, None, now));
        self.active.insert(hit.fingerprint.clone(), name.clone());
        self.alerts.insert(
            name,
            Record {
                alert,
                fingerprint: hit.fingerprint,
                subject: hit.subject,
                rule: hit.rule,
                cleared_at: None,
                notify: hit.notify,
                escalated: false,
                routing: None,
            },
        );
    }

    /// An alert whose condition no longer holds: a pending one resolves at once, a firing
    /// one after `keep_firing_for` (at once when an alert of another severity for the same
    /// subject replaced it: warning → critical is one step, not two alerts at once).
    fn apply_stopped(
        &mut self,
        name: &str,
        now: SystemTime,
        subjects: &HashSet<String>,
        transitions: &mut Vec<Transition>,
    ) {
        let Some(record) = self.alerts.get_mut(name) else {
            return;
        };
        let cleared = *record.cleared_at.get_or_insert(now);
        let keep = self.rules[record.rule].keep_firing_for;
        let superseded = subjects.contains(&record.subject);
        let resolve = match record.alert.state {
            AlertState::Pending => true,
            AlertState::Firing if superseded => true,
            AlertState::Firing => now.duration_since(cleared).is_ok_and(|d| d >= keep),
            AlertState::Resolved => false,
        };
        if !resolve {
            return;
        }
        let from = record.alert.state;
        record.alert.state = AlertState::Resolved;
        record.alert.resolved_at = Some(now);
        record.alert.silenced_by.clear();
        record.alert.inhibited_by.clear();
        transitions.push(transition(&record.alert, Some(from), now));
        self.active.remove(&record.fingerprint);
        self.resolved.push_back(name.to_string());
    }

    /// Recomputes which active silences and firing alerts cover each live alert.
    fn refresh_marks(&mut self, now: SystemTime) {
        let active_silences: Vec<&Silence> = self
            .silences
            .values()
            .filter(|s| s.state(now) == SilenceState::Active)
            .collect();
        let live: Vec<&String> = self.active.values().collect();
        // Alerts resolved within the hold still inhibit (newest last in `resolved`).
        let hold = self.config.inhibit_hold;
        let held = self.resolved.iter().rev().take_while(|n| {
            self.alerts
                .get(*n)
                .and_then(|r| r.alert.resolved_at)
                .is_some_and(|at| at.checked_add(hold).is_some_and(|end| end > now))
        });
        let candidates: Vec<&String> = live.iter().copied().chain(held).collect();
        let mut inhibited: HashMap<String, Vec<String>> = HashMap::new();
        for inhibit in &self.dispatcher.inhibits {
            let sources: Vec<&Alert> = candidates
                .iter()
                .filter_map(|n| self.alerts.get(*n))
                .map(|r| &r.alert)
                // A source inhibits from the moment its condition holds, not only once it
                // has held for its `for` (Alertmanager never sees pending alerts; warden
                // does): the broker down for 3 s already explains the workers'
                // queue_connection alerts, though its own alert waits 30 s before it fires.
                // And it goes on inhibiting for `inhibit_hold` after it resolved.
                .filter(|a| all_match(&inhibit.source, &a.labels))
                .collect();
            if sources.is_empty() {
                continue;
            }
            for name in &live {
                let Some(target) = self.alerts.get(*name).map(|r| &r.alert) else {
                    continue;
                };
                if !all_match(&inhibit.target, &target.labels) {
                    continue;
                }
                for source in &sources {
                    if source.name != target.name
                        && inhibit
                            .equal
                            .iter()
                            .all(|l| source.labels.get(l) == target.labels.get(l))
                    {
                        inhibited
                            .entry(target.name.clone())
                            .or_default()
                            .push(source.name.clone());
                    }
                }
            }
        }
        let names: Vec<String> = self.active.values().cloned().collect();
        for name in names {
            let Some(record) = self.alerts.get_mut(&name) else {
                continue;
            };
            let alert = &mut record.alert;
            alert.silenced_by = active_silences
                .iter()
                .filter(|s| all_match(&s.matchers, &alert.labels))
                .map(|s| s.name.clone())
                .collect();
            let mut by = inhibited.remove(&name).unwrap_or_default();
            by.sort();
            by.dedup();
            alert.inhibited_by = by;
        }
    }

    fn prune(&mut self, now: SystemTime) {
        while self.resolved.len() > self.config.max_resolved {
            if let Some(name) = self.resolved.pop_front() {
                self.alerts.remove(&name);
            }
        }
        let retention = self.config.silence_retention;
        self.silences.retain(|_, s| {
            s.ends_at.checked_add(retention).is_none_or(|t| t > now)
                || s.state(now) != SilenceState::Expired
        });
    }

    /// Records that a notification was delivered: its alerts' `last_notified_at`.
    pub fn mark_notified(&mut self, notification: &Notification, at: SystemTime) {
        let names: Vec<&str> = notification
            .alerts
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        self.mark_notified_names(&names, at);
    }

    /// As [`Self::mark_notified`], by alert names (what a delivery record carries).
    pub fn mark_notified_names(&mut self, names: &[&str], at: SystemTime) {
        for name in names {
            if let Some(record) = self.alerts.get_mut(*name) {
                record.alert.last_notified_at = Some(at);
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Queries

    /// Alerts matching the filter, newest first (by `started_at`, ties by name).
    pub fn list_alerts(&self, filter: &AlertFilter) -> Vec<Alert> {
        let rule = filter
            .rule
            .as_deref()
            .map(|r| r.strip_prefix("alertRules/").unwrap_or(r));
        let mut out: Vec<Alert> = self
            .alerts
            .values()
            .map(|r| &r.alert)
            .filter(|a| {
                if filter.states.is_empty() {
                    a.state != AlertState::Resolved
                } else {
                    filter.states.contains(&a.state)
                }
            })
            .filter(|a| {
                filter
                    .worker
                    .as_ref()
                    .is_none_or(|w| a.worker.as_ref().is_some_and(|k| k.resource_name() == *w))
            })
            .filter(|a| {
                filter
                    .group
                    .as_ref()
                    .is_none_or(|g| a.group.as_deref() == Some(g.as_str()))
            })
            .filter(|a| rule.is_none_or(|r| a.rule == r))
            .filter(|a| filter.min_severity.is_none_or(|s| a.severity >= s))
            .filter(|a| {
                filter
                    .acknowledged
                    .is_none_or(|ack| a.acknowledged() == ack)
            })
            .filter(|a| filter.silenced.is_none_or(|s| a.silenced() == s))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            b.started_at
                .cmp(&a.started_at)
                .then_with(|| a.name.cmp(&b.name))
        });
        out
    }

    /// One alert by resource name.
    pub fn get_alert(&self, name: &str) -> Result<Alert, AlertError> {
        self.alerts
            .get(name)
            .map(|r| r.alert.clone())
            .ok_or_else(|| AlertError::AlertNotFound(name.to_string()))
    }

    /// Every rule, sorted by name.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// One rule by resource name (`alertRules/{id}`) or id.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        let id = name.strip_prefix("alertRules/").unwrap_or(name);
        self.rules.iter().find(|r| r.id == id)
    }

    // ---------------------------------------------------------------------------------------
    // Acknowledgements

    /// Acknowledges a pending or firing alert: no more re-notification or escalation. The
    /// first acknowledgement is kept. With `dry_run`, returns the alert as it would be.
    pub fn acknowledge(
        &mut self,
        name: &str,
        by: &str,
        now: SystemTime,
        dry_run: bool,
    ) -> Result<Alert, AlertError> {
        let record = self.live_record(name)?;
        let mut alert = record.alert.clone();
        if alert.acknowledged() {
            return Ok(alert);
        }
        alert.acknowledged_by = Some(by.to_string());
        alert.acknowledged_at = Some(now);
        if !dry_run {
            record.alert = alert.clone();
        }
        Ok(alert)
    }

    /// Withdraws an acknowledgement: notified and escalated again as if never acknowledged.
    pub fn unacknowledge(&mut self, name: &str, dry_run: bool) -> Result<Alert, AlertError> {
        let record = self.live_record(name)?;
        let mut alert = record.alert.clone();
        alert.acknowledged_by = None;
        alert.acknowledged_at = None;
        if !dry_run {
            record.alert = alert.clone();
        }
        Ok(alert)
    }

    fn live_record(&mut self, name: &str) -> Result<&mut Record, AlertError> {
        let record = self
            .alerts
            .get_mut(name)
            .ok_or_else(|| AlertError::AlertNotFound(name.to_string()))?;
        if record.alert.state == AlertState::Resolved {
            return Err(AlertError::AlertResolved(name.to_string()));
        }
        Ok(record)
    }

    // ---------------------------------------------------------------------------------------
    // Silences

    /// Creates a silence (validated as `CreateSilenceRequest` says). With `dry_run`, nothing
    /// is stored and the silence has an empty name.
    pub fn create_silence(
        &mut self,
        spec: &SilenceSpec,
        now: SystemTime,
        dry_run: bool,
    ) -> Result<SilenceCreated, AlertError> {
        let mut silence = silences::build(spec, now)?;
        let mut covered: Vec<&Alert> = self
            .active
            .values()
            .filter_map(|n| self.alerts.get(n))
            .map(|r| &r.alert)
            .filter(|a| all_match(&silence.matchers, &a.labels))
            .collect();
        covered.sort_by(|a, b| {
            b.started_at
                .cmp(&a.started_at)
                .then_with(|| a.name.cmp(&b.name))
        });
        let alerts_total = covered.len();
        let alerts = covered
            .iter()
            .take(MAX_COVERED_LISTED)
            .map(|a| a.name.clone())
            .collect();
        if !dry_run {
            silence.name = format!("silences/{}-{}", self.id_prefix, self.next_id);
            self.next_id += 1;
            self.silences.insert(silence.name.clone(), silence.clone());
            self.refresh_marks(now);
        }
        Ok(SilenceCreated {
            silence,
            alerts,
            alerts_total,
        })
    }

    /// Puts back silences kept across a restart (as [`AlertEngine::create_silence`] and
    /// [`AlertEngine::expire_silence`] returned them), keeping their names. Ones whose
    /// retention has passed are dropped. Returns how many were restored.
    pub fn restore_silences(&mut self, silences: Vec<Silence>, now: SystemTime) -> usize {
        let mut restored = 0;
        for silence in silences {
            if silence.name.is_empty()
                || silence
                    .ends_at
                    .checked_add(self.config.silence_retention)
                    .is_some_and(|t| t <= now)
            {
                continue;
            }
            self.silences.insert(silence.name.clone(), silence);
            restored += 1;
        }
        self.refresh_marks(now);
        restored
    }

    /// Silences in these states (empty: ACTIVE and PENDING), newest first (by create_time,
    /// ties by name).
    pub fn list_silences(&self, states: &[SilenceState], now: SystemTime) -> Vec<Silence> {
        let mut out: Vec<Silence> = self
            .silences
            .values()
            .filter(|s| {
                let state = s.state(now);
                if states.is_empty() {
                    state != SilenceState::Expired
                } else {
                    states.contains(&state)
                }
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            b.create_time
                .cmp(&a.create_time)
                .then_with(|| a.name.cmp(&b.name))
        });
        out
    }

    /// One silence by resource name.
    pub fn get_silence(&self, name: &str) -> Result<Silence, AlertError> {
        self.silences
            .get(name)
            .cloned()
            .ok_or_else(|| AlertError::SilenceNotFound(name.to_string()))
    }

    /// Ends a silence now (a pending one never starts); an expired one is unchanged.
    pub fn expire_silence(
        &mut self,
        name: &str,
        now: SystemTime,
        dry_run: bool,
    ) -> Result<Silence, AlertError> {
        let silence = self
            .silences
            .get_mut(name)
            .ok_or_else(|| AlertError::SilenceNotFound(name.to_string()))?;
        let mut after = silence.clone();
        if after.state(now) != SilenceState::Expired {
            after.ends_at = now;
            after.starts_at = after.starts_at.min(now);
        }
        if !dry_run {
            *silence = after.clone();
            self.refresh_marks(now);
        }
        Ok(after)
    }

    /// The highest severity among firing alerts (for a fleet summary); `None` when none fires.
    pub fn worst_firing(&self) -> Option<Severity> {
        self.active
            .values()
            .filter_map(|n| self.alerts.get(n))
            .filter(|r| r.alert.state == AlertState::Firing)
            .map(|r| r.alert.severity)
            .max()
    }
}

fn transition(alert: &Alert, from: Option<AlertState>, at: SystemTime) -> Transition {
    Transition {
        alert: alert.name.clone(),
        rule: alert.rule.clone(),
        from,
        to: alert.state,
        severity: alert.severity,
        labels: alert.labels.clone(),
        worker: alert.worker.clone(),
        group: alert.group.clone(),
        summary: alert.summary.clone(),
        at,
    }
}
