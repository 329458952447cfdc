//! The alert lifecycle at its exact boundaries: `for`, keep_firing_for, resolution, and the
//! rules' conditions over a real fleet state.
mod support;

use support::*;
use warden_alerts::{AlertFilter, AlertState, MonitoringStatus};
use warden_core::{history::Severity, model::HealthStatus};

#[test]
fn for_duration_pending_until_exactly_its_end() {
    let mut cfg = config();
    cfg.rules.insert(
        "cpu".into(),
        warden_alerts::RuleConfig {
            for_duration: Some(secs(120)),
            ..Default::default()
        },
    );
    let mut engine = engine(cfg);
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "batch", &[("w1", Up::Alive)]);
    fleet.health(
        t,
        "w1",
        vec![finding("cpu", HealthStatus::Warning, 85.0, 80.0)],
    );

    let first = eval(&mut engine, &fleet, t);
    assert_eq!(first.transitions.len(), 1);
    assert_eq!(first.transitions[0].from, None);
    assert_eq!(first.transitions[0].to, AlertState::Pending);
    assert_eq!(first.transitions[0].severity, Severity::Warning);
    let name = first.transitions[0].alert.clone();

    let before = eval(&mut engine, &fleet, t + secs(120) - ms(1));
    assert!(before.transitions.is_empty());
    assert_eq!(engine.get_alert(&name).unwrap().state, AlertState::Pending);
    assert!(
        before.notifications.is_empty(),
        "a pending alert is never notified"
    );

    let at = eval(&mut engine, &fleet, t + secs(120));
    assert_eq!(at.transitions.len(), 1);
    assert_eq!(at.transitions[0].from, Some(AlertState::Pending));
    assert_eq!(at.transitions[0].to, AlertState::Firing);
    let alert = engine.get_alert(&name).unwrap();
    assert_eq!(alert.fired_at, Some(t + secs(120)));
    assert_eq!(alert.started_at, t);
    assert_eq!(alert.findings.len(), 1);
    assert_eq!(alert.labels["rule"], "cpu");
    assert_eq!(alert.labels["severity"], "warning");
    assert_eq!(alert.labels["worker"], key("w1").resource_name());
    assert_eq!(alert.labels["group"], "groups/redis-streams/batch");
    assert_eq!(alert.summary, "w1: cpu warning");
    assert_eq!(
        alert.description,
        "cpu at 85 (observed 85 percent, threshold 80 percent)"
    );
}

#[test]
fn pending_alert_whose_condition_stops_resolves_without_firing() {
    let mut cfg = config();
    cfg.rules.insert(
        "cpu".into(),
        warden_alerts::RuleConfig {
            for_duration: Some(secs(60)),
            ..Default::default()
        },
    );
    let mut engine = engine(cfg);
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "batch", &[("w1", Up::Alive)]);
    fleet.health(
        t,
        "w1",
        vec![finding("cpu", HealthStatus::Warning, 85.0, 80.0)],
    );
    eval(&mut engine, &fleet, t);
    fleet.health(t + secs(10), "w1", vec![]);
    let out = eval(&mut engine, &fleet, t + secs(10));
    assert_eq!(out.transitions.len(), 1);
    assert_eq!(out.transitions[0].from, Some(AlertState::Pending));
    assert_eq!(out.transitions[0].to, AlertState::Resolved);
    assert!(out.notifications.is_empty());
}

#[test]
fn keep_firing_for_damps_flapping_to_the_millisecond() {
    // Health-check rules keep firing 30 s after their finding clears (the default).
    let mut engine = engine(config());
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "batch", &[("w1", Up::Alive)]);
    fleet.health(
        t,
        "w1",
        vec![finding("memory", HealthStatus::Critical, 97.0, 95.0)],
    );
    let out = eval(&mut engine, &fleet, t);
    assert_eq!(
        out.transitions[0].to,
        AlertState::Firing,
        "for = 0: fires at once"
    );
    let name = out.transitions[0].alert.clone();

    // Clears at t+10 s, holds again at t+30 s (within 30 s): the same alert keeps firing.
    fleet.health(t + secs(10), "w1", vec![]);
    assert!(
        eval(&mut engine, &fleet, t + secs(10))
            .transitions
            .is_empty()
    );
    fleet.health(
        t + secs(30),
        "w1",
        vec![finding("memory", HealthStatus::Critical, 96.0, 95.0)],
    );
    assert!(
        eval(&mut engine, &fleet, t + secs(30))
            .transitions
            .is_empty()
    );
    assert_eq!(engine.get_alert(&name).unwrap().state, AlertState::Firing);

    // Clears at t+40 s: still firing at t+70 s − 1 ms, resolved at t+70 s.
    fleet.health(t + secs(40), "w1", vec![]);
    assert!(
        eval(&mut engine, &fleet, t + secs(40))
            .transitions
            .is_empty()
    );
    assert!(
        eval(&mut engine, &fleet, t + secs(70) - ms(1))
            .transitions
            .is_empty()
    );
    assert_eq!(engine.get_alert(&name).unwrap().state, AlertState::Firing);
    let out = eval(&mut engine, &fleet, t + secs(70));
    assert_eq!(out.transitions.len(), 1);
    assert_eq!(out.transitions[0].to, AlertState::Resolved);
    let alert = engine.get_alert(&name).unwrap();
    assert_eq!(alert.resolved_at, Some(t + secs(70)));

    // Resolved is final: the condition holding again starts a new alert.
    fleet.health(
        t + secs(80),
        "w1",
        vec![finding("memory", HealthStatus::Critical, 99.0, 95.0)],
    );
    let out = eval(&mut engine, &fleet, t + secs(80));
    assert_eq!(out.transitions.len(), 1);
    assert_eq!(out.transitions[0].from, None);
    assert_ne!(out.transitions[0].alert, name);
}

#[test]
fn metric_rule_fires_at_threshold_not_below() {
    let mut engine = engine(config_toml(
        r#"
        [alerts]
        startup_grace = "0s"
        [alerts.rules.hot_cpu]
        check = "metric"
        metric = "cpu_percent"
        op = ">="
        value = 80
        for = "0s"
        severity = "critical"
        "#,
    ));
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "batch", &[("w1", Up::Alive)]);
    fleet.cpu(t, "w1", 79.9);
    assert!(eval(&mut engine, &fleet, t).transitions.is_empty());
    fleet.cpu(t + secs(1), "w1", 80.0);
    let out = eval(&mut engine, &fleet, t + secs(1));
    assert_eq!(out.transitions.len(), 1);
    assert_eq!(out.transitions[0].rule, "hot_cpu");
    assert_eq!(out.transitions[0].severity, Severity::Critical);
    assert_eq!(out.transitions[0].to, AlertState::Firing);
}

#[test]
fn monitoring_failures_are_alerts() {
    let mut engine = engine(config());
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.broker(false);
    let down = MonitoringStatus {
        store_up: false,
        health_failed_share: 0.5,
        recovery_exhausted: Vec::new(),
    };
    let out = eval_with(&mut engine, &fleet, t, down.clone());
    assert_eq!(out.transitions.len(), 3, "all three start pending");
    // broker: for 30 s; store: 60 s; health engine: 120 s.
    let firing = |engine: &warden_alerts::AlertEngine| {
        let mut rules: Vec<String> = engine
            .list_alerts(&AlertFilter {
                states: vec![AlertState::Firing],
                ..Default::default()
            })
            .into_iter()
            .map(|a| a.rule)
            .collect();
        rules.sort();
        rules
    };
    eval_with(&mut engine, &fleet, t + secs(30) - ms(1), down.clone());
    assert!(firing(&engine).is_empty());
    eval_with(&mut engine, &fleet, t + secs(30), down.clone());
    assert_eq!(firing(&engine), ["broker_unreachable"]);
    eval_with(&mut engine, &fleet, t + secs(60), down.clone());
    assert_eq!(firing(&engine), ["broker_unreachable", "store_unavailable"]);
    eval_with(&mut engine, &fleet, t + secs(120), down.clone());
    assert_eq!(
        firing(&engine),
        [
            "broker_unreachable",
            "health_engine_failing",
            "store_unavailable"
        ]
    );
    // Just under the share: resolves.
    let better = MonitoringStatus {
        store_up: true,
        health_failed_share: 0.49,
        recovery_exhausted: Vec::new(),
    };
    fleet.broker(true);
    eval_with(&mut engine, &fleet, t + secs(121), better.clone());
    assert!(firing(&engine).is_empty());
}

#[test]
fn queue_backlog_needs_depth_for_its_duration() {
    let mut engine = engine(config_toml(
        r#"
        [alerts]
        startup_grace = "0s"
        [alerts.rules.queue_backlog]
        max_depth = 100
        for = "5m"
        "#,
    ));
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.queue(t, "emails", 99);
    assert!(eval(&mut engine, &fleet, t).transitions.is_empty());
    fleet.queue(t + secs(1), "emails", 100);
    let out = eval(&mut engine, &fleet, t + secs(1));
    assert_eq!(out.transitions[0].to, AlertState::Pending);
    assert!(
        eval(&mut engine, &fleet, t + secs(301) - ms(1))
            .transitions
            .is_empty()
    );
    let out = eval(&mut engine, &fleet, t + secs(301));
    assert_eq!(out.transitions[0].to, AlertState::Firing);
    let alert = engine.get_alert(&out.transitions[0].alert).unwrap();
    assert_eq!(alert.queue.as_deref(), Some("emails"));
    assert_eq!(alert.labels["queue"], "emails");
    assert_eq!(alert.summary, "queue emails is backlogged (100 messages)");
}

#[test]
fn resolved_alerts_are_capped() {
    let mut cfg = config();
    cfg.max_resolved = 2;
    cfg.rules.insert(
        "group_min_workers".into(),
        warden_alerts::RuleConfig {
            enabled: Some(false),
            ..Default::default()
        },
    );
    let mut engine = engine(cfg);
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "g", &[("w1", Up::Alive)]);
    let mut names = Vec::new();
    for i in 0..4u64 {
        let at = t + secs(10 * i + 1);
        fleet.poll(at, "g", &[("w1", Up::Crashed)]);
        names.push(eval(&mut engine, &fleet, at).transitions[0].alert.clone());
        fleet.poll(at + secs(1), "g", &[("w1", Up::Alive)]);
        eval(&mut engine, &fleet, at + secs(1));
    }
    let resolved = engine.list_alerts(&AlertFilter {
        states: vec![AlertState::Resolved],
        rule: Some("alertRules/worker_lost".into()),
        ..Default::default()
    });
    let kept: Vec<&str> = resolved.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        kept,
        [names[3].as_str(), names[2].as_str()],
        "the 2 most recent, newest first"
    );
    assert!(engine.get_alert(&names[0]).is_err());
}

#[test]
fn queries_filter_and_sort() {
    let mut engine = engine(config());
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "a", &[("w1", Up::Alive), ("w2", Up::Alive)]);
    fleet.poll(t, "b", &[("w3", Up::Alive)]);
    fleet.health(
        t,
        "w3",
        vec![finding("cpu", HealthStatus::Warning, 85.0, 80.0)],
    );
    eval(&mut engine, &fleet, t);
    fleet.poll(t + secs(1), "a", &[("w1", Up::Crashed), ("w2", Up::Alive)]);
    eval(&mut engine, &fleet, t + secs(1));

    let all = engine.list_alerts(&AlertFilter::default());
    let rules: Vec<&str> = all.iter().map(|a| a.rule.as_str()).collect();
    assert_eq!(rules, ["worker_lost", "cpu"], "newest first");
    let critical = engine.list_alerts(&AlertFilter {
        min_severity: Some(Severity::Critical),
        ..Default::default()
    });
    assert_eq!(critical.len(), 1);
    assert_eq!(critical[0].worker, Some(key("w1")));
    let group_b = engine.list_alerts(&AlertFilter {
        group: Some("groups/redis-streams/b".into()),
        ..Default::default()
    });
    assert_eq!(group_b.len(), 1);
    assert_eq!(group_b[0].rule, "cpu");
    let by_worker = engine.list_alerts(&AlertFilter {
        worker: Some(key("w3").resource_name()),
        ..Default::default()
    });
    assert_eq!(by_worker.len(), 1);
    let acked = engine.list_alerts(&AlertFilter {
        acknowledged: Some(true),
        ..Default::default()
    });
    assert!(acked.is_empty());

    let rule_names: Vec<String> = engine.rules().iter().map(|r| r.name()).collect();
    let mut sorted = rule_names.clone();
    sorted.sort();
    assert_eq!(rule_names, sorted);
    assert_eq!(rule_names.len(), 18);
    let lost = engine.rule("alertRules/worker_lost").unwrap();
    assert_eq!(lost.severity, Severity::Critical);
    assert!(lost.enabled);
    assert_eq!(lost.check, "worker_lost");
    assert!(engine.rule("alertRules/nope").is_none());
}

#[test]
fn warning_turning_critical_replaces_the_alert_at_once() {
    let mut engine = engine(config());
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "batch", &[("w1", Up::Alive)]);
    fleet.health(
        t,
        "w1",
        vec![finding("cpu", HealthStatus::Warning, 85.0, 80.0)],
    );
    let warning = eval(&mut engine, &fleet, t).transitions[0].alert.clone();
    fleet.health(
        t + secs(5),
        "w1",
        vec![finding("cpu", HealthStatus::Critical, 96.0, 95.0)],
    );
    let out = eval(&mut engine, &fleet, t + secs(5));
    let moves: Vec<(Option<AlertState>, AlertState, Severity)> = out
        .transitions
        .iter()
        .map(|tr| (tr.from, tr.to, tr.severity))
        .collect();
    assert!(moves.contains(&(None, AlertState::Firing, Severity::Critical)));
    assert!(moves.contains(&(
        Some(AlertState::Firing),
        AlertState::Resolved,
        Severity::Warning
    )));
    assert_eq!(
        engine.get_alert(&warning).unwrap().state,
        AlertState::Resolved
    );
    // Back to warning: the critical one is replaced the same way.
    fleet.health(
        t + secs(9),
        "w1",
        vec![finding("cpu", HealthStatus::Warning, 90.0, 80.0)],
    );
    let out = eval(&mut engine, &fleet, t + secs(9));
    assert_eq!(out.transitions.len(), 2);
    let live = engine.list_alerts(&AlertFilter::default());
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].severity, Severity::Warning);
}
