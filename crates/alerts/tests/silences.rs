//! Silences and inhibitions suppress exactly what they match.
mod support;

use std::time::Duration;

use support::*;
use warden_alerts::{
    AlertError, AlertFilter, AlertState, MatchOp, MatcherSpec, SilenceSpec, SilenceState,
    SuppressReason,
};

fn spec(matchers: &[(&str, MatchOp, &str)]) -> SilenceSpec {
    SilenceSpec {
        matchers: matchers
            .iter()
            .map(|(l, op, v)| MatcherSpec {
                label: l.to_string(),
                op: *op,
                value: v.to_string(),
            })
            .collect(),
        duration: Some(Duration::from_secs(3600)),
        created_by: "alice".into(),
        reason: "maintenance".into(),
        ..Default::default()
    }
}

fn no_group_rule() -> warden_alerts::AlertsConfig {
    let mut cfg = config();
    cfg.rules.insert(
        "group_min_workers".into(),
        warden_alerts::RuleConfig {
            enabled: Some(false),
            ..Default::default()
        },
    );
    cfg
}

/// Workers w1, w10, w2 of group g, all lost at t+1 s; returns the fleet.
fn three_lost(engine: &mut warden_alerts::AlertEngine) -> Fleet {
    let t = t0();
    let mut fleet = Fleet::new(t);
    let names = ["w1", "w10", "w2"];
    fleet.poll(t, "g", &names.map(|n| (n, Up::Alive)));
    fleet.poll(t + secs(1), "g", &names.map(|n| (n, Up::Crashed)));
    eval(engine, &fleet, t + secs(1));
    fleet
}

fn silenced_workers(engine: &warden_alerts::AlertEngine) -> Vec<String> {
    let mut out: Vec<String> = engine
        .list_alerts(&AlertFilter {
            silenced: Some(true),
            ..Default::default()
        })
        .into_iter()
        .map(|a| a.worker.unwrap().id.to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn regex_matchers_are_anchored() {
    let mut engine = engine(no_group_rule());
    let fleet = three_lost(&mut engine);
    let created = engine
        .create_silence(
            &spec(&[
                ("rule", MatchOp::Equal, "worker_lost"),
                ("worker", MatchOp::Regex, "workers/redis-streams/jobs/w1"),
            ]),
            t0() + secs(1),
            false,
        )
        .unwrap();
    assert_eq!(created.alerts_total, 1, "w1 only, not w10");
    assert_eq!(silenced_workers(&engine), ["w1"]);
    assert_eq!(
        created.silence.comment, "maintenance",
        "the reason when no comment"
    );
    assert_eq!(created.silence.created_by, "alice");
    assert!(created.silence.name.starts_with("silences/"));

    let out = eval(&mut engine, &fleet, t0() + secs(2));
    assert_eq!(out.notifications.len(), 1);
    assert_eq!(workers_in(&out.notifications[0]), ["w10", "w2"]);
    assert_eq!(out.suppressed.len(), 1);
    assert_eq!(
        out.suppressed[0].reason,
        SuppressReason::Silenced(vec![created.silence.name.clone()])
    );
    let w1 = engine.get_alert(&out.suppressed[0].alert).unwrap();
    assert_eq!(w1.silenced_by, std::slice::from_ref(&created.silence.name));
    assert_eq!(
        w1.state,
        AlertState::Firing,
        "silenced alerts are still evaluated"
    );
}

#[test]
fn not_operators_match_the_complement() {
    let mut engine = engine(no_group_rule());
    three_lost(&mut engine);
    engine
        .create_silence(
            &spec(&[
                ("rule", MatchOp::Equal, "worker_lost"),
                ("worker", MatchOp::NotEqual, "workers/redis-streams/jobs/w1"),
            ]),
            t0() + secs(1),
            false,
        )
        .unwrap();
    assert_eq!(silenced_workers(&engine), ["w10", "w2"]);

    let mut engine2 = engine_with_three_lost();
    engine2
        .create_silence(
            &spec(&[
                ("rule", MatchOp::Regex, "worker_.*"),
                ("worker", MatchOp::NotRegex, ".*/w1.*"),
            ]),
            t0() + secs(1),
            false,
        )
        .unwrap();
    assert_eq!(silenced_workers(&engine2), ["w2"]);
}

fn engine_with_three_lost() -> warden_alerts::AlertEngine {
    let mut engine = engine(no_group_rule());
    three_lost(&mut engine);
    engine
}

#[test]
fn pending_silence_starts_later_and_expiry_ends_it() {
    let mut engine = engine(no_group_rule());
    let fleet = three_lost(&mut engine);
    let now = t0() + secs(1);
    let mut s = spec(&[("worker", MatchOp::Regex, ".*/w2")]);
    s.starts_at = Some(now + secs(60));
    s.duration = Some(secs(600));
    let created = engine.create_silence(&s, now, false).unwrap();
    let name = created.silence.name.clone();
    assert_eq!(created.silence.state(now), SilenceState::Pending);
    assert_eq!(
        created.silence.ends_at,
        now + secs(660),
        "duration from its start"
    );
    assert!(
        silenced_workers(&engine).is_empty(),
        "pending: not in force"
    );
    assert_eq!(
        engine.list_silences(&[], now).len(),
        1,
        "listed by default (pending)"
    );
    let out = eval(&mut engine, &fleet, now + secs(1));
    assert_eq!(workers_in(&out.notifications[0]), ["w1", "w10", "w2"]);

    eval(&mut engine, &fleet, now + secs(60) - ms(1));
    assert!(silenced_workers(&engine).is_empty());
    eval(&mut engine, &fleet, now + secs(60));
    assert_eq!(silenced_workers(&engine), ["w2"]);

    // Expire at +100 s: no longer silenced, listed as EXPIRED only when asked.
    let expired = engine
        .expire_silence(&name, now + secs(100), false)
        .unwrap();
    assert_eq!(expired.state(now + secs(100)), SilenceState::Expired);
    assert!(silenced_workers(&engine).is_empty());
    assert!(engine.list_silences(&[], now + secs(100)).is_empty());
    assert_eq!(
        engine
            .list_silences(&[SilenceState::Expired], now + secs(100))
            .len(),
        1
    );
    let again = engine
        .expire_silence(&name, now + secs(200), false)
        .unwrap();
    assert_eq!(
        again.ends_at,
        now + secs(100),
        "expiring an expired one changes nothing"
    );
    assert_eq!(
        engine.expire_silence("silences/nope", now, false),
        Err(AlertError::SilenceNotFound("silences/nope".into()))
    );

    // A silence ends by itself at its end.
    let mut s = spec(&[("worker", MatchOp::Regex, ".*/w1")]);
    s.duration = Some(secs(30));
    let at = now + secs(300);
    let short = engine.create_silence(&s, at, false).unwrap().silence;
    assert_eq!(short.state(at + secs(30) - ms(1)), SilenceState::Active);
    assert_eq!(short.state(at + secs(30)), SilenceState::Expired);
    eval(&mut engine, &fleet, at + secs(30) - ms(1));
    assert_eq!(silenced_workers(&engine), ["w1"]);
    eval(&mut engine, &fleet, at + secs(30));
    assert!(silenced_workers(&engine).is_empty());
}

#[test]
fn silence_requests_are_validated_naming_the_field() {
    let mut engine = engine(no_group_rule());
    let now = t0();
    let field = |r: Result<warden_alerts::SilenceCreated, AlertError>| match r {
        Err(AlertError::InvalidArgument { field, .. }) => field,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    };
    assert_eq!(
        field(engine.create_silence(&spec(&[]), now, false)),
        "matchers"
    );
    assert_eq!(
        field(engine.create_silence(&spec(&[("worker", MatchOp::NotEqual, "x")]), now, false)),
        "matchers",
        "NOT_EQUAL alone could cover every alert"
    );
    assert_eq!(
        field(engine.create_silence(&spec(&[("worker", MatchOp::Regex, ".*")]), now, false)),
        "matchers",
        "a regex matching the empty string could cover every alert"
    );
    assert_eq!(
        field(engine.create_silence(&spec(&[("worker", MatchOp::Equal, "")]), now, false)),
        "matchers"
    );
    assert_eq!(
        field(engine.create_silence(
            &spec(&[
                ("rule", MatchOp::Equal, "x"),
                ("worker", MatchOp::Regex, "(")
            ]),
            now,
            false
        )),
        "matchers[1].value"
    );
    assert_eq!(
        field(engine.create_silence(&spec(&[("", MatchOp::Equal, "x")]), now, false)),
        "matchers[0].label"
    );
    let mut both = spec(&[("rule", MatchOp::Equal, "x")]);
    both.ends_at = Some(now + secs(60));
    assert_eq!(field(engine.create_silence(&both, now, false)), "end");
    let mut neither = spec(&[("rule", MatchOp::Equal, "x")]);
    neither.duration = None;
    assert_eq!(field(engine.create_silence(&neither, now, false)), "end");
    let mut backwards = neither.clone();
    backwards.ends_at = Some(now - secs(1));
    assert_eq!(field(engine.create_silence(&backwards, now, false)), "end");
    let mut too_long = spec(&[("rule", MatchOp::Equal, "x")]);
    too_long.duration = Some(secs(30 * 86_400 + 1));
    assert_eq!(field(engine.create_silence(&too_long, now, false)), "end");
    let mut late = spec(&[("rule", MatchOp::Equal, "x")]);
    late.starts_at = Some(now + secs(30 * 86_400 + 1));
    assert_eq!(field(engine.create_silence(&late, now, false)), "starts_at");

    // Past start: taken as now. Dry run: nothing stored, empty name.
    let mut past = spec(&[("rule", MatchOp::Equal, "x")]);
    past.starts_at = Some(now - secs(100));
    let dry = engine.create_silence(&past, now, true).unwrap();
    assert_eq!(dry.silence.starts_at, now);
    assert!(dry.silence.name.is_empty());
    assert!(engine.list_silences(&[], now).is_empty());
}

#[test]
fn broker_down_inhibits_the_worker_alerts_it_causes_and_nothing_else() {
    let mut engine = engine(config());
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.broker(true);
    fleet.poll(t, "g", &[("w1", Up::Alive), ("w2", Up::Alive)]);
    fleet.health(
        t,
        "w2",
        vec![finding(
            "cpu",
            warden_core::model::HealthStatus::Critical,
            97.0,
            95.0,
        )],
    );
    eval(&mut engine, &fleet, t);
    fleet.broker(false);
    fleet.poll(t + secs(1), "g", &[("w1", Up::Crashed), ("w2", Up::Alive)]);
    eval(&mut engine, &fleet, t + secs(1));
    let out = eval(&mut engine, &fleet, t + secs(2));
    // worker_lost (w1) is inhibited from the moment the broker's condition holds, while its
    // alert is still pending (its `for` is 30 s): the outage explains it already.
    let pending_broker = engine
        .list_alerts(&AlertFilter {
            rule: Some("broker_unreachable".into()),
            ..Default::default()
        })
        .remove(0);
    assert_eq!(pending_broker.state, AlertState::Pending);
    assert!(
        !out.notifications
            .iter()
            .any(|n| n.alerts.iter().any(|a| a.rule == "worker_lost")),
        "{:?}",
        out.notifications
    );
    assert!(out.suppressed.iter().any(|s| s.rule == "worker_lost"
        && s.reason == SuppressReason::Inhibited(vec![pending_broker.name.clone()])));

    let later = t + secs(40);
    fleet.poll(later, "g", &[("w1", Up::Crashed), ("w2", Up::Alive)]);
    fleet.poll(later, "h", &[("w9", Up::Alive)]);
    fleet.poll(later + secs(1), "h", &[("w9", Up::Crashed)]);
    let out = eval(&mut engine, &fleet, later + secs(1));
    assert!(
        out.transitions
            .iter()
            .any(|tr| tr.rule == "broker_unreachable")
    );
    let broker = engine
        .list_alerts(&AlertFilter {
            rule: Some("broker_unreachable".into()),
            ..Default::default()
        })
        .remove(0);
    let w9_lost = engine
        .list_alerts(&AlertFilter {
            worker: Some(key("w9").resource_name()),
            rule: Some("worker_lost".into()),
            ..Default::default()
        })
        .remove(0);
    assert_eq!(w9_lost.inhibited_by, std::slice::from_ref(&broker.name));
    let cpu = engine
        .list_alerts(&AlertFilter {
            rule: Some("cpu".into()),
            ..Default::default()
        })
        .remove(0);
    assert!(
        cpu.inhibited_by.is_empty(),
        "cpu is not caused by the broker"
    );

    let out = eval(&mut engine, &fleet, later + secs(40));
    let rules: Vec<&str> = out
        .notifications
        .iter()
        .flat_map(|n| n.alerts.iter().map(|a| a.rule.as_str()))
        .collect();
    assert!(rules.contains(&"broker_unreachable"));
    assert!(!rules.contains(&"worker_lost") && !rules.contains(&"group_min_workers"));
    let inhibited: Vec<&str> = out
        .suppressed
        .iter()
        .filter(|s| matches!(s.reason, SuppressReason::Inhibited(_)))
        .map(|s| s.rule.as_str())
        .collect();
    assert!(inhibited.contains(&"worker_lost") && inhibited.contains(&"group_min_workers"));
}

#[test]
fn inhibition_needs_equal_labels() {
    let mut cfg = config_toml(
        r#"
        [alerts]
        startup_grace = "0s"
        [[alerts.inhibit]]
        source_match = { rule = "group_min_workers" }
        target_match = { rule = "worker_lost" }
        equal = ["group"]
        "#,
    );
    cfg.escalate_after = Duration::ZERO;
    let mut engine = engine(cfg);
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "a", &[("a1", Up::Alive), ("a2", Up::Alive)]);
    fleet.poll(t, "b", &[("b1", Up::Alive), ("b2", Up::Alive)]);
    fleet.poll(
        t + secs(1),
        "a",
        &[("a1", Up::Crashed), ("a2", Up::Crashed)],
    );
    fleet.poll(t + secs(1), "b", &[("b1", Up::Crashed), ("b2", Up::Alive)]);
    eval(&mut engine, &fleet, t + secs(1));
    let out = eval(&mut engine, &fleet, t + secs(2));
    let lost: Vec<String> = out
        .notifications
        .iter()
        .filter(|n| n.common_labels["rule"] == "worker_lost")
        .flat_map(workers_in)
        .collect();
    assert_eq!(
        lost,
        ["b1"],
        "group a's are explained by its group alert; b's is not"
    );
    let mut inhibited: Vec<String> = out
        .suppressed
        .iter()
        .map(|s| {
            engine
                .get_alert(&s.alert)
                .unwrap()
                .worker
                .unwrap()
                .id
                .to_string()
        })
        .collect();
    inhibited.sort();
    assert_eq!(inhibited, ["a1", "a2"]);
}

#[test]
fn a_lost_worker_alerts_once_not_also_for_its_heartbeat() {
    let mut engine = engine(no_group_rule());
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.poll(t, "g", &[("w1", Up::Alive), ("w2", Up::Alive)]);
    fleet.poll(t + secs(1), "g", &[("w1", Up::Crashed), ("w2", Up::Alive)]);
    use warden_core::model::HealthStatus::Critical;
    fleet.health(
        t + secs(1),
        "w1",
        vec![finding("heartbeat", Critical, 70.0, 60.0)],
    );
    fleet.health(
        t + secs(1),
        "w2",
        vec![finding("heartbeat", Critical, 65.0, 60.0)],
    );
    eval(&mut engine, &fleet, t + secs(1));
    let out = eval(&mut engine, &fleet, t + secs(2));
    let mut notified: Vec<(String, Vec<String>)> = out
        .notifications
        .iter()
        .map(|n| (n.common_labels["rule"].clone(), workers_in(n)))
        .collect();
    notified.sort();
    assert_eq!(
        notified,
        [
            ("heartbeat".to_string(), vec!["w2".to_string()]),
            ("worker_lost".to_string(), vec!["w1".to_string()]),
        ],
        "w1's heartbeat is explained by its loss; w2's is not"
    );
    assert_eq!(out.suppressed.len(), 1);
    assert_eq!(out.suppressed[0].rule, "heartbeat");
}

#[test]
fn expired_silences_are_forgotten_after_their_retention() {
    let mut cfg = no_group_rule();
    cfg.silence_retention = secs(3600);
    let mut engine = engine(cfg);
    let fleet = Fleet::new(t0());
    let mut s = spec(&[("rule", MatchOp::Equal, "worker_lost")]);
    s.duration = Some(secs(60));
    let name = engine.create_silence(&s, t0(), false).unwrap().silence.name;
    eval(&mut engine, &fleet, t0() + secs(60) + secs(3600) - ms(1));
    assert!(engine.get_silence(&name).is_ok());
    eval(&mut engine, &fleet, t0() + secs(60) + secs(3600));
    assert_eq!(
        engine.get_silence(&name),
        Err(AlertError::SilenceNotFound(name))
    );
}

#[test]
fn silences_restored_after_a_restart_keep_silencing() {
    let mut before = engine(no_group_rule());
    let now = t0();
    let kept = before
        .create_silence(&spec(&[("worker", MatchOp::Regex, ".*/w1")]), now, false)
        .unwrap()
        .silence;
    let mut after = engine(no_group_rule());
    assert_eq!(after.restore_silences(vec![kept.clone()], now + secs(1)), 1);
    assert_eq!(after.get_silence(&kept.name).unwrap(), kept);
    let fleet = three_lost(&mut after);
    let out = eval(&mut after, &fleet, t0() + secs(2));
    assert_eq!(workers_in(&out.notifications[0]), ["w10", "w2"]);
}

/// A broker outage as the health engine reports it: every worker's queue_connection finding
/// turns CRITICAL a few seconds in, long before broker_unreachable has held for its 30 s;
/// when the broker is back, its alert resolves at once while the findings stay until the next
/// health cycle and the alerts then keep firing for their keep_firing_for. None of it is
/// notified: the pending broker alert inhibits, and the inhibition outlasts it by
/// `inhibit_hold`. A queue_connection problem that outlives the hold is notified.
#[test]
fn a_broker_outage_notifies_only_the_broker_alert_from_its_start_to_after_its_end() {
    use warden_core::model::HealthStatus;
    let mut engine = engine(config());
    let t = t0();
    let mut fleet = Fleet::new(t);
    fleet.broker(true);
    fleet.poll(t, "g", &[("w1", Up::Alive), ("w2", Up::Alive)]);
    eval(&mut engine, &fleet, t);
    let cut = |f: &mut Fleet, at| {
        for w in ["w1", "w2"] {
            f.health(
                at,
                w,
                vec![finding(
                    "queue_connection",
                    HealthStatus::Critical,
                    0.0,
                    1.0,
                )],
            );
        }
    };
    let healthy = |f: &mut Fleet, at, ws: &[&str]| {
        for w in ws {
            f.health(at, w, Vec::new());
        }
    };
    let mut notified: Vec<(u64, String, bool)> = Vec::new();
    let mut inhibited_by: Vec<Vec<String>> = Vec::new();
    let run = |engine: &mut warden_alerts::AlertEngine,
               fleet: &Fleet,
               s: u64,
               notified: &mut Vec<(u64, String, bool)>,
               inhibited_by: &mut Vec<Vec<String>>| {
        let out = eval(engine, fleet, t + secs(s));
        for n in &out.notifications {
            for a in &n.alerts {
                notified.push((s, a.rule.clone(), a.firing));
            }
        }
        for sup in out.suppressed {
            if let SuppressReason::Inhibited(by) = sup.reason {
                assert_eq!(sup.rule, "queue_connection");
                inhibited_by.push(by);
            }
        }
    };
    // Down at 1 s; the findings from 4 s (queue_connection's own 3 s).
    fleet.broker(false);
    for s in 1..=3 {
        run(&mut engine, &fleet, s, &mut notified, &mut inhibited_by);
    }
    cut(&mut fleet, t + secs(4));
    for s in 4..=50 {
        run(&mut engine, &fleet, s, &mut notified, &mut inhibited_by);
    }
    // Back at 51 s; the next health cycle (30 s later) clears the findings.
    fleet.broker(true);
    for s in 51..=80 {
        run(&mut engine, &fleet, s, &mut notified, &mut inhibited_by);
    }
    healthy(&mut fleet, t + secs(81), &["w1", "w2"]);
    for s in 81..=125 {
        run(&mut engine, &fleet, s, &mut notified, &mut inhibited_by);
    }
    assert_eq!(
        notified,
        vec![
            (32, "broker_unreachable".to_string(), true),
            // Resolved at 51 s, told at the group's next flush (group_interval 30 s).
            (62, "broker_unreachable".to_string(), false),
        ],
        "only the broker's alert, firing then resolved"
    );
    // Each worker's alert reported inhibited once, by the broker alert while still pending.
    assert_eq!(inhibited_by.len(), 2, "{inhibited_by:?}");
    let broker = engine
        .list_alerts(&AlertFilter {
            rule: Some("broker_unreachable".into()),
            states: vec![AlertState::Resolved],
            ..Default::default()
        })
        .remove(0);
    assert!(
        inhibited_by
            .iter()
            .all(|by| by == &vec![broker.name.clone()])
    );
    assert!(
        engine.list_alerts(&AlertFilter::default()).is_empty(),
        "all resolved"
    );

    // Another outage; this time w2 stays cut off after the broker is back: notified once
    // the hold (60 s) is over, not before.
    fleet.broker(false);
    for s in 126..=130 {
        run(&mut engine, &fleet, s, &mut notified, &mut inhibited_by);
    }
    cut(&mut fleet, t + secs(131));
    for s in 131..=170 {
        run(&mut engine, &fleet, s, &mut notified, &mut inhibited_by);
    }
    fleet.broker(true);
    healthy(&mut fleet, t + secs(171), &["w1"]);
    notified.clear();
    for s in 171..=240 {
        run(&mut engine, &fleet, s, &mut notified, &mut inhibited_by);
    }
    let qc: Vec<&(u64, String, bool)> = notified
        .iter()
        .filter(|(_, rule, _)| rule == "queue_connection")
        .collect();
    assert_eq!(qc.len(), 1, "{notified:?}");
    assert_eq!(
        qc[0].0,
        171 + 60,
        "notified when the hold ends: {notified:?}"
    );
    assert!(qc[0].2);
}
