//! The policy's decisions, with fixed times (no sleeping).
use std::time::{Duration, SystemTime};

use warden_core::{
    Backend, Finding, Health, HealthStatus, Lifecycle, Worker, WorkerKey, state::FleetState,
};

use super::*;

const T0: Duration = Duration::from_secs(1_800_000_000);

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
}

fn settings() -> RecoverySettings {
    RecoverySettings {
        groups: vec!["batch*".into()],
        ..RecoverySettings::default()
    }
}

fn worker(
    id: &str,
    group: &str,
    lifecycle: Lifecycle,
    health: Option<(HealthStatus, SystemTime)>,
) -> Worker {
    let mut w = Worker::new(WorkerKey::new(Backend::Celery, "s", id), at(0));
    w.group = group.into();
    w.lifecycle = lifecycle;
    w.health = health.map(|(status, evaluated_at)| Health {
        status,
        score: 0.5,
        findings: vec![Finding {
            check: "cpu",
            status,
            message: "cpu 97 % (critical at 95 %)".into(),
            observed: 97.0,
            threshold: 95.0,
            unit: "percent",
            error: false,
        }],
        passing: vec![],
        evaluated_at,
    });
    w
}

fn snapshot(workers: Vec<Worker>) -> Snapshot {
    let mut s = FleetState::new(at(0)).snapshot().clone();
    for w in workers {
        s.workers.insert(w.key.clone(), Arc::new(w));
    }
    s
}

fn idle(_: &str) -> usize {
    0
}

fn restarts(decisions: &[(Arc<Worker>, Decision)]) -> Vec<String> {
    decisions
        .iter()
        .filter(|(_, d)| matches!(d, Decision::Restart(_)))
        .map(|(w, _)| w.key.id.to_string())
        .collect()
}

#[test]
fn a_lost_worker_of_an_opted_in_group_is_restarted_after_the_grace_and_not_before() {
    let mut policy = Policy::new(settings(), at(0)).unwrap();
    let ledger = RestartLedger::default();
    let s = snapshot(vec![
        worker("lost@a", "batch-1", Lifecycle::Lost, None),
        worker("other@a", "web", Lifecycle::Lost, None),
        worker("ok@a", "batch-1", Lifecycle::Alive, None),
    ]);
    let no = |_: &str| false;
    let grace_end = at(0) + DEFAULT_STARTUP_GRACE;
    assert!(
        policy
            .decide(
                &s,
                grace_end - Duration::from_millis(1),
                &ledger,
                &no,
                &idle
            )
            .is_empty()
    );
    let d = policy.decide(&s, grace_end, &ledger, &no, &idle);
    assert_eq!(restarts(&d), vec!["lost@a"]);
    assert_eq!(d[0].1, Decision::Restart(Cause::Lost));
}

#[test]
fn critical_restarts_only_after_three_evaluations_in_a_row() {
    let mut policy = Policy::new(settings(), at(0)).unwrap();
    let ledger = RestartLedger::default();
    let no = |_: &str| false;
    let now = at(200);
    let eval = |n: u64, status| {
        snapshot(vec![worker(
            "w@a",
            "batch",
            Lifecycle::Alive,
            Some((status, at(100 + n))),
        )])
    };
    assert!(
        restarts(&policy.decide(&eval(1, HealthStatus::Critical), now, &ledger, &no, &idle))
            .is_empty()
    );
    // The same evaluation seen again does not count twice.
    assert!(
        restarts(&policy.decide(&eval(1, HealthStatus::Critical), now, &ledger, &no, &idle))
            .is_empty()
    );
    assert!(
        restarts(&policy.decide(&eval(2, HealthStatus::Critical), now, &ledger, &no, &idle))
            .is_empty()
    );
    // A WARNING in between starts the count again.
    assert!(
        restarts(&policy.decide(&eval(3, HealthStatus::Warning), now, &ledger, &no, &idle))
            .is_empty()
    );
    assert!(
        restarts(&policy.decide(&eval(4, HealthStatus::Critical), now, &ledger, &no, &idle))
            .is_empty()
    );
    assert!(
        restarts(&policy.decide(&eval(5, HealthStatus::Critical), now, &ledger, &no, &idle))
            .is_empty()
    );
    let d = policy.decide(&eval(6, HealthStatus::Critical), now, &ledger, &no, &idle);
    assert_eq!(restarts(&d), vec!["w@a"]);
    match &d[0].1 {
        Decision::Restart(Cause::Critical { checks, findings }) => {
            assert_eq!(*checks, 3);
            assert!(findings.contains("cpu 97 %"), "{findings}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_caps_stop_restarts_and_report_exhaustion_and_a_cordon_is_respected() {
    let mut policy = Policy::new(
        RecoverySettings {
            max_fleet: 4,
            max_unavailable_per_group: 10,
            ..settings()
        },
        at(0),
    )
    .unwrap();
    let ledger = RestartLedger::default();
    let now = at(1000);
    let name = |id: &str| WorkerKey::new(Backend::Celery, "s", id).resource_name();
    for i in 0..3 {
        ledger.record(&name("a@h"), now - Duration::from_secs(60 * i));
    }
    ledger.record(&name("b@h"), now - WINDOW);
    let s = snapshot(vec![
        worker("a@h", "batch", Lifecycle::Lost, None),
        worker("b@h", "batch", Lifecycle::Lost, None),
        worker("c@h", "batch", Lifecycle::Lost, None),
        worker("d@h", "batch", Lifecycle::Lost, None),
    ]);
    let cordoned = |n: &str| n == name("d@h");
    let d = policy.decide(&s, now, &ledger, &cordoned, &idle);
    // a@h: 3 restarts in the hour, exhausted. b@h: its restart is an hour old, no longer
    // counted. The fleet had 3 in the hour, cap 4: only one more (b@h, first in order).
    let by_id: BTreeMap<String, Decision> = d
        .into_iter()
        .map(|(w, d)| (w.key.id.to_string(), d))
        .collect();
    assert!(
        matches!(&by_id["a@h"], Decision::Exhausted(_, why) if why.contains("3 restarts in the last hour"))
    );
    assert_eq!(by_id["b@h"], Decision::Restart(Cause::Lost));
    assert!(
        matches!(&by_id["c@h"], Decision::Exhausted(_, why) if why.contains("across the fleet"))
    );
    assert!(
        !by_id.contains_key("d@h"),
        "a cordoned worker is never restarted"
    );
}

#[test]
fn a_cooldown_and_the_groups_unavailability_bound_make_restarts_wait_their_turn() {
    let mut policy = Policy::new(settings(), at(0)).unwrap();
    let ledger = RestartLedger::default();
    let now = at(1000);
    let name = |id: &str| WorkerKey::new(Backend::Celery, "s", id).resource_name();
    ledger.record(
        &name("a@h"),
        now - DEFAULT_COOLDOWN + Duration::from_millis(1),
    );
    let s = snapshot(vec![
        worker("a@h", "batch", Lifecycle::Lost, None),
        worker("b@h", "batch", Lifecycle::Lost, None),
        worker("c@h", "batch", Lifecycle::Lost, None),
    ]);
    let no = |_: &str| false;
    // a@h restarted 5 min - 1 ms ago: cooling down. b@h goes; c@h waits (1 per group at once).
    assert_eq!(
        restarts(&policy.decide(&s, now, &ledger, &no, &idle)),
        vec!["b@h"]
    );
    // While b@h's restart runs, its group is busy: nobody else goes.
    assert!(policy.decide(&s, now, &ledger, &no, &|_| 1).is_empty());
    // At exactly the cooldown, a@h may go again.
    let later = now + Duration::from_millis(1);
    assert_eq!(
        restarts(&policy.decide(&s, later, &ledger, &no, &idle)),
        vec!["a@h"]
    );
    // LOST workers are left alone when the policy says so.
    policy
        .update(RecoverySettings {
            restart_lost: false,
            ..settings()
        })
        .unwrap();
    assert!(policy.decide(&s, later, &ledger, &no, &idle).is_empty());
}
