//! Grouping, routing and timing of notifications: group_wait, group_interval,
//! repeat_interval, startup grace, escalation, acknowledgements, and group scale-down.
mod support;

use support::*;
use warden_alerts::{AlertError, AlertFilter, AlertState, SuppressReason};
use warden_core::history::Severity;

fn without_group_rule(mut cfg: warden_alerts::AlertsConfig) -> warden_alerts::AlertsConfig {
    cfg.rules.insert(
        "group_min_workers".into(),
        warden_alerts::RuleConfig {
            enabled: Some(false),
            ..Default::default()
        },
    );
    cfg
}

#[test]
fn thirty_workers_lost_at_once_make_one_notification_per_receiver() {
    let mut cfg = config();
    cfg.rules.insert(
        "worker_lost".into(),
        warden_alerts::RuleConfig {
            receivers: Some(vec!["team-slack".into()]),
            ..Default::default()
        },
    );
    cfg.routes.push(warden_alerts::RouteConfig {
        min_severity: Some(Severity::Critical),
        receivers: vec!["oncall-pagerduty".into()],
        ..Default::default()
    });
    let mut engine = engine(cfg);
    let t = t0();
    let mut fleet = Fleet::new(t);
    let names: Vec<String> = (0..30).map(|i| format!("w{i:02}@host")).collect();
    let up: Vec<(&str, Up)> = names.iter().map(|n| (n.as_str(), Up::Alive)).collect();
    // The 30 are the whole group: group_min_workers fires too, in its own notification group.
    fleet.poll(t, "batch", &up);
    assert!(eval(&mut engine, &fleet, t).notifications.is_empty());
    let down: Vec<(&str, Up)> = names.iter().map(|n| (n.as_str(), Up::Crashed)).collect();
    fleet.poll(t + secs(5), "batch", &down);
    let out = eval(&mut engine, &fleet, t + secs(5));
    assert_eq!(
        out.transitions.len(),
        31,
        "30 worker_lost + 1 group_min_workers"
    );
    assert!(out.notifications.is_empty(), "group_wait first");

    let out = eval(&mut engine, &fleet, t + secs(6));
    let lost: Vec<_> = out
        .notifications
        .iter()
        .filter(|n| n.common_labels.get("rule").map(String::as_str) == Some("worker_lost"))
        .collect();
    assert_eq!(
        lost.len(),
        2,
        "one per receiver: {:?}",
        out.notifications
            .iter()
            .map(|n| &n.receiver)
            .collect::<Vec<_>>()
    );
    let mut receivers: Vec<&str> = lost.iter().map(|n| n.receiver.as_str()).collect();
    receivers.sort();
    assert_eq!(
        receivers,
        ["oncall-pagerduty", "team-slack"],
        "the rule's and the route's"
    );
    for n in &lost {
        assert_eq!(n.alerts.len(), 30);
        assert_eq!(
            workers_in(n),
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>()
        );
        assert!(!n.resolved && !n.escalated);
        assert_eq!(n.common_labels["group"], "groups/redis-streams/batch");
        assert_eq!(n.common_labels["severity"], "critical");
        assert!(
            n.alerts.windows(2).all(|w| w[0].name < w[1].name),
            "sorted by name"
        );
    }
    assert_eq!(lost[0].group_key, lost[1].group_key);
    let group: Vec<_> = out
        .notifications
        .iter()
        .filter(|n| n.common_labels.get("rule").map(String::as_str) == Some("group_min_workers"))
        .collect();
    assert_eq!(
        group.len(),
        1,
        "the route only: a route replaces the default receiver"
    );
    assert_eq!(group[0].receiver, "oncall-pagerduty");
    assert_eq!(group[0].alerts[0].labels["cause"], "crash");
    assert_eq!(group[0].alerts[0].severity, Severity::Critical);
    assert_eq!(out.notifications.len(), 3);
}

#[test]
fn group_wait_then_group_interval() {
    let mut engine = engine(without_group_rule(config()));
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "g", &[("w1", Up::Alive), ("w2", Up::Alive)]);
    eval(&mut engine, &fleet, t);
    fleet.poll(t + secs(1), "g", &[("w1", Up::Crashed), ("w2", Up::Alive)]);
    let start = t + secs(1);
    assert!(eval(&mut engine, &fleet, start).notifications.is_empty());
    assert!(
        eval(&mut engine, &fleet, start + ms(999))
            .notifications
            .is_empty()
    );
    let out = eval(&mut engine, &fleet, start + secs(1));
    assert_eq!(out.notifications.len(), 1);
    assert_eq!(workers_in(&out.notifications[0]), ["w1"]);
    let sent = start + secs(1);

    // w2 lost 4 s later: same group, so it waits for group_interval (30 s after the send).
    fleet.poll(
        sent + secs(4),
        "g",
        &[("w1", Up::Crashed), ("w2", Up::Crashed)],
    );
    assert!(
        eval(&mut engine, &fleet, sent + secs(4))
            .notifications
            .is_empty()
    );
    assert!(
        eval(&mut engine, &fleet, sent + secs(30) - ms(1))
            .notifications
            .is_empty()
    );
    let out = eval(&mut engine, &fleet, sent + secs(30));
    assert_eq!(out.notifications.len(), 1);
    assert_eq!(
        workers_in(&out.notifications[0]),
        ["w1", "w2"],
        "the whole group"
    );
    // Nothing changes: nothing sent.
    assert!(
        eval(&mut engine, &fleet, sent + secs(61))
            .notifications
            .is_empty()
    );
}

#[test]
fn repeat_interval_repeats_exactly_once_at_its_end() {
    let mut cfg = without_group_rule(config());
    cfg.escalate_after = std::time::Duration::ZERO; // escalation off: repeats only
    let mut engine = engine(cfg);
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "g", &[("w1", Up::Alive)]);
    fleet.poll(t + secs(1), "g", &[("w1", Up::Crashed)]);
    eval(&mut engine, &fleet, t + secs(1));
    let sent = t + secs(2);
    assert_eq!(eval(&mut engine, &fleet, sent).notifications.len(), 1);
    let four_h = secs(4 * 3600);
    for step in [secs(60), secs(3600), four_h - ms(1)] {
        let out = eval(&mut engine, &fleet, sent + step);
        assert!(
            out.notifications.is_empty(),
            "no repeat at {step:?}: {out:#?}"
        );
    }
    let out = eval(&mut engine, &fleet, sent + four_h);
    assert_eq!(out.notifications.len(), 1);
    assert_eq!(workers_in(&out.notifications[0]), ["w1"]);
    assert!(
        eval(&mut engine, &fleet, sent + four_h + secs(1))
            .notifications
            .is_empty()
    );
}

#[test]
fn recovery_sends_a_resolved_notification_with_the_same_group_key() {
    let mut engine = engine(without_group_rule(config()));
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "g", &[("w1", Up::Alive)]);
    fleet.poll(t + secs(1), "g", &[("w1", Up::Crashed)]);
    eval(&mut engine, &fleet, t + secs(1));
    let fired = eval(&mut engine, &fleet, t + secs(2))
        .notifications
        .remove(0);
    fleet.poll(t + secs(10), "g", &[("w1", Up::Alive)]);
    let out = eval(&mut engine, &fleet, t + secs(10));
    assert_eq!(out.transitions[0].to, AlertState::Resolved);
    assert!(
        out.notifications.is_empty(),
        "group_interval since the last send"
    );
    let out = eval(&mut engine, &fleet, t + secs(32));
    assert_eq!(out.notifications.len(), 1);
    let n = &out.notifications[0];
    assert!(n.resolved);
    assert_eq!(n.group_key, fired.group_key);
    assert!(!n.alerts[0].firing);
    assert_eq!(n.alerts[0].resolved_at, Some(t + secs(10)));
    assert!(
        eval(&mut engine, &fleet, t + secs(100))
            .notifications
            .is_empty()
    );
}

#[test]
fn startup_grace_holds_worker_down_alerts_then_notifies_those_still_down() {
    // Default config: grace 90 s from t0.
    let mut engine = engine(without_group_rule(warden_alerts::AlertsConfig::default()));
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "g", &[("w1", Up::Alive), ("w2", Up::Alive)]);
    fleet.poll(
        t + secs(10),
        "g",
        &[("w1", Up::Crashed), ("w2", Up::Crashed)],
    );
    let out = eval(&mut engine, &fleet, t + secs(10));
    assert_eq!(out.transitions.len(), 2, "recorded during grace");
    let out = eval(&mut engine, &fleet, t + secs(11));
    assert!(out.notifications.is_empty());
    assert_eq!(out.suppressed.len(), 2);
    assert!(
        out.suppressed
            .iter()
            .all(|s| s.reason == SuppressReason::StartupGrace)
    );
    assert_eq!(
        out.suppressed[0].reason.to_string(),
        "held during startup grace"
    );

    // w2 comes back during grace: its alert resolves, never notified.
    fleet.poll(t + secs(50), "g", &[("w1", Up::Crashed), ("w2", Up::Alive)]);
    eval(&mut engine, &fleet, t + secs(50));
    let out = eval(&mut engine, &fleet, t + ms(89_999));
    assert!(out.notifications.is_empty());
    assert!(out.suppressed.is_empty(), "suppression reported once");
    assert!(engine.in_grace(t + ms(89_999)));
    assert!(!engine.in_grace(t + secs(90)));
    let out = eval(&mut engine, &fleet, t + secs(90));
    assert_eq!(out.notifications.len(), 1);
    assert_eq!(
        workers_in(&out.notifications[0]),
        ["w1"],
        "only the worker still down"
    );
}

#[test]
fn startup_grace_does_not_hold_other_alerts() {
    let mut engine = engine(warden_alerts::AlertsConfig::default());
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "g", &[("w1", Up::Alive)]);
    fleet.health(
        t,
        "w1",
        vec![finding(
            "cpu",
            warden_core::model::HealthStatus::Critical,
            97.0,
            95.0,
        )],
    );
    eval(&mut engine, &fleet, t);
    let out = eval(&mut engine, &fleet, t + secs(1));
    assert_eq!(out.notifications.len(), 1);
    assert_eq!(out.notifications[0].alerts[0].rule, "cpu");
}

#[test]
fn escalation_after_five_minutes_once_and_never_when_acknowledged() {
    let mut cfg = without_group_rule(config());
    cfg.escalation_receivers = vec!["managers".into()];
    let mut engine = engine(cfg);
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "g", &[("w1", Up::Alive), ("w2", Up::Alive)]);
    fleet.poll(t + secs(1), "g", &[("w1", Up::Crashed), ("w2", Up::Alive)]);
    let fired = t + secs(1);
    eval(&mut engine, &fleet, fired);
    let escalations = |out: &warden_alerts::Evaluation| {
        out.notifications
            .iter()
            .filter(|n| n.escalated)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(escalations(&eval(&mut engine, &fleet, fired + secs(2))).is_empty());
    assert!(escalations(&eval(&mut engine, &fleet, fired + secs(300) - ms(1))).is_empty());
    let out = eval(&mut engine, &fleet, fired + secs(300));
    let esc = escalations(&out);
    assert_eq!(esc.len(), 1);
    assert_eq!(esc[0].receiver, "managers");
    assert_eq!(workers_in(&esc[0]), ["w1"]);
    assert!(!esc[0].resolved);
    assert!(
        escalations(&eval(&mut engine, &fleet, fired + secs(600))).is_empty(),
        "once"
    );

    // w2 lost later and acknowledged before its 5 minutes: no escalation.
    let lost2 = fired + secs(700);
    fleet.poll(lost2, "g", &[("w1", Up::Crashed), ("w2", Up::Crashed)]);
    let out = eval(&mut engine, &fleet, lost2);
    let w2 = out
        .transitions
        .iter()
        .find(|tr| tr.worker == Some(key("w2")))
        .unwrap()
        .alert
        .clone();
    engine
        .acknowledge(&w2, "alice", lost2 + secs(10), false)
        .unwrap();
    assert!(escalations(&eval(&mut engine, &fleet, lost2 + secs(300))).is_empty());
    assert!(escalations(&eval(&mut engine, &fleet, lost2 + secs(900))).is_empty());
    // Withdrawn: escalated as if never acknowledged.
    engine.unacknowledge(&w2, false).unwrap();
    let esc = escalations(&eval(&mut engine, &fleet, lost2 + secs(901)));
    assert_eq!(esc.len(), 1);
    assert_eq!(workers_in(&esc[0]), ["w2"]);
}

#[test]
fn warning_alerts_are_not_escalated() {
    let mut engine = engine(config());
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "g", &[("w1", Up::Alive)]);
    fleet.health(
        t,
        "w1",
        vec![finding(
            "cpu",
            warden_core::model::HealthStatus::Warning,
            85.0,
            80.0,
        )],
    );
    eval(&mut engine, &fleet, t);
    let out = eval(&mut engine, &fleet, t + secs(3600));
    assert!(out.notifications.iter().all(|n| !n.escalated));
}

#[test]
fn acknowledgement_stops_repeats_and_resolved_alerts_cannot_be_acknowledged() {
    let mut engine = engine(without_group_rule(config()));
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "g", &[("w1", Up::Alive)]);
    fleet.poll(t + secs(1), "g", &[("w1", Up::Crashed)]);
    let name = eval(&mut engine, &fleet, t + secs(1)).transitions[0]
        .alert
        .clone();
    assert_eq!(
        eval(&mut engine, &fleet, t + secs(2)).notifications.len(),
        1
    );

    let dry = engine.acknowledge(&name, "bob", t + secs(3), true).unwrap();
    assert_eq!(dry.acknowledged_by.as_deref(), Some("bob"));
    assert!(
        !engine.get_alert(&name).unwrap().acknowledged(),
        "dry run changes nothing"
    );
    let acked = engine
        .acknowledge(&name, "alice", t + secs(3), false)
        .unwrap();
    assert_eq!(acked.acknowledged_at, Some(t + secs(3)));
    let again = engine
        .acknowledge(&name, "bob", t + secs(4), false)
        .unwrap();
    assert_eq!(
        again.acknowledged_by.as_deref(),
        Some("alice"),
        "the first is kept"
    );
    assert_eq!(
        engine
            .list_alerts(&AlertFilter {
                acknowledged: Some(true),
                ..Default::default()
            })
            .len(),
        1
    );

    let out = eval(&mut engine, &fleet, t + secs(2) + secs(4 * 3600));
    assert!(out.notifications.is_empty(), "no repeat once acknowledged");
    assert_eq!(out.suppressed.len(), 1);
    assert_eq!(
        out.suppressed[0].reason,
        SuppressReason::Acknowledged("alice".into())
    );

    // It still resolves, and its resolution is notified.
    let back = t + secs(5 * 3600);
    fleet.poll(back, "g", &[("w1", Up::Alive)]);
    let out = eval(&mut engine, &fleet, back);
    assert_eq!(out.notifications.len(), 1);
    assert!(out.notifications[0].resolved);
    assert_eq!(
        engine.acknowledge(&name, "alice", back, false),
        Err(AlertError::AlertResolved(name.clone()))
    );
    assert_eq!(
        engine.unacknowledge(&name, false),
        Err(AlertError::AlertResolved(name.clone()))
    );
    assert_eq!(
        engine.acknowledge("alerts/nope", "alice", back, false),
        Err(AlertError::AlertNotFound("alerts/nope".into()))
    );
}

#[test]
fn group_scaled_down_by_goodbyes_is_recorded_not_notified() {
    let mut engine = engine(config());
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "etl", &[("w1", Up::Alive), ("w2", Up::Alive)]);
    eval(&mut engine, &fleet, t);
    fleet.poll(
        t + secs(1),
        "etl",
        &[("w1", Up::Goodbye), ("w2", Up::Goodbye)],
    );
    let out = eval(&mut engine, &fleet, t + secs(1));
    assert_eq!(out.transitions.len(), 1);
    let tr = &out.transitions[0];
    assert_eq!(tr.rule, "group_min_workers");
    assert_eq!(tr.to, AlertState::Firing);
    assert_eq!(tr.severity, Severity::Info);
    assert_eq!(tr.labels["cause"], "scale_down");
    assert_eq!(tr.group.as_deref(), Some("groups/redis-streams/etl"));
    let event = tr.history_event();
    assert_eq!(event.kind, warden_core::history::EventKind::Alert);
    assert_eq!(event.group.as_deref(), Some("etl"));
    assert_eq!(event.severity, Severity::Info);
    assert!(event.attributes.contains(&(
        "action".to_string(),
        warden_core::history::AttrValue::String("firing".into())
    )));
    for s in [2, 60, 3600] {
        let out = eval(&mut engine, &fleet, t + secs(s));
        assert!(out.notifications.is_empty());
        assert!(out.suppressed.is_empty());
    }
}

#[test]
fn group_scale_down_notifies_when_the_rule_asks() {
    let mut engine = engine(config_toml(
        r#"
        [alerts]
        startup_grace = "0s"
        [alerts.rules.group_min_workers]
        notify_on_scale_down = true
        receivers = ["autoscaler-log"]
        "#,
    ));
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "etl", &[("w1", Up::Alive)]);
    fleet.poll(t + secs(1), "etl", &[("w1", Up::Goodbye)]);
    eval(&mut engine, &fleet, t + secs(1));
    let out = eval(&mut engine, &fleet, t + secs(2));
    assert_eq!(out.notifications.len(), 1);
    assert_eq!(out.notifications[0].receiver, "autoscaler-log");
    assert_eq!(out.notifications[0].alerts[0].severity, Severity::Info);
}

#[test]
fn group_emptied_by_a_crash_is_critical_and_min_workers_counts_alive() {
    let mut engine = engine(config_toml(
        r#"
        [alerts]
        startup_grace = "0s"
        [alerts.rules.group_min_workers]
        min_workers = 2
        "#,
    ));
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(
        t,
        "etl",
        &[("w1", Up::Alive), ("w2", Up::Alive), ("w3", Up::Alive)],
    );
    assert!(eval(&mut engine, &fleet, t).transitions.is_empty());
    fleet.poll(
        t + secs(1),
        "etl",
        &[("w1", Up::Crashed), ("w2", Up::Alive), ("w3", Up::Alive)],
    );
    let out = eval(&mut engine, &fleet, t + secs(1));
    assert!(
        out.transitions.iter().all(|tr| tr.rule == "worker_lost"),
        "2 alive: enough"
    );
    fleet.poll(
        t + secs(2),
        "etl",
        &[("w1", Up::Crashed), ("w2", Up::Crashed), ("w3", Up::Alive)],
    );
    let out = eval(&mut engine, &fleet, t + secs(2));
    let group = out
        .transitions
        .iter()
        .find(|tr| tr.rule == "group_min_workers")
        .expect("1 alive < 2");
    assert_eq!(group.severity, Severity::Critical);
    assert_eq!(group.labels["cause"], "crash");
    let alert = engine.get_alert(&group.alert).unwrap();
    assert_eq!(alert.summary, "group etl has 1 alive workers (needs 2)");
    assert!(
        alert.description.contains("2 lost (w1, w2)"),
        "{}",
        alert.description
    );
}
