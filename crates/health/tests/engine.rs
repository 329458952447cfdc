//! The engine against a real fleet owner (core's `owner::spawn`) on a manual clock: a worker
//! fed to the owner gets a verdict on the snapshot, and the verdict follows the clock.
use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use warden_core::{
    Backend, EventPayload, FleetEvent, FleetSettings, HealthStatus, Lifecycle, ManualClock,
    Snapshot, SourceStatus, Thresholds, WorkerEvent, WorkerKey,
    model::WorkerEventKind,
    owner::{self, FleetMessage},
    ports::NoGauges,
};
use warden_health::{Baselines, Evaluator, HealthConfig, spawn};

/// Waits (with a deadline, not a sleep) until a published snapshot satisfies `condition`.
async fn until(
    snapshots: &mut watch::Receiver<Arc<Snapshot>>,
    what: &str,
    condition: impl FnMut(&Arc<Snapshot>) -> bool,
) -> Arc<Snapshot> {
    tokio::time::timeout(Duration::from_secs(10), snapshots.wait_for(condition))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("the owner stopped")
        .clone()
}

#[tokio::test]
async fn the_engine_puts_health_on_the_snapshot_and_follows_the_clock() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let cancel = CancellationToken::new();
    let (fleet, _owner) = owner::spawn(
        FleetSettings {
            thresholds: Thresholds {
                warning: Duration::from_secs(30),
                critical: Duration::from_secs(60),
            },
            evaluate_every: Duration::from_millis(10),
            max_workers: 100,
        },
        Arc::new(clock.clone()),
        Arc::new(NoGauges),
        cancel.clone(),
    );
    let key = WorkerKey::new(Backend::Celery, "redis://b", "w1@host");
    fleet
        .observe(FleetMessage::Source(SourceStatus {
            connected: true,
            reason: String::new(),
            last_ok: Some(clock_now(&clock)),
            ..SourceStatus::unknown()
        }))
        .await
        .unwrap();
    fleet
        .observe(FleetMessage::Events(vec![FleetEvent {
            worker: key.clone(),
            payload: EventPayload::Worker(WorkerEvent {
                kind: WorkerEventKind::Online,
                freq: Some(Duration::from_secs(2)),
                active: Some(0),
                processed: Some(0),
                load_average: None,
                software: None,
                pid: Some(42),
            }),
        }]))
        .await
        .unwrap();
    fleet.barrier().await.unwrap();

    let config = HealthConfig {
        interval: Duration::from_millis(20),
        ..Default::default()
    };
    let (_baselines_tx, baselines) = watch::channel(Arc::new(Baselines::default()));
    let mut engine = spawn(
        fleet.clone(),
        Evaluator::new(&config).unwrap(),
        baselines,
        cancel.clone(),
    );
    let mut snapshots = fleet.snapshots();

    // A fresh worker: evaluated, healthy, its heartbeat passing.
    let snap = until(&mut snapshots, "a healthy verdict", |s| {
        s.workers
            .get(&key)
            .and_then(|w| w.health.as_ref())
            .is_some()
    })
    .await;
    let health = snap.workers[&key].health.clone().unwrap();
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    assert_eq!(health.score, 1.0);
    assert!(health.passing.contains(&"heartbeat"), "{health:?}");
    assert!(health.findings.is_empty(), "{health:?}");
    assert_eq!(health.evaluated_at, clock_now(&clock));

    // 45 s of silence (2 s of it its announced period): 43 s late, a warning.
    clock.advance(Duration::from_secs(45));
    let snap = until(&mut snapshots, "a heartbeat warning", |s| {
        s.workers[&key]
            .health
            .as_ref()
            .is_some_and(|h| h.status == HealthStatus::Warning)
    })
    .await;
    let health = snap.workers[&key].health.clone().unwrap();
    let finding = &health.findings[0];
    assert_eq!(finding.check, "heartbeat");
    assert_eq!(finding.observed, 43.0);
    assert_eq!(finding.message, "heartbeat 43 s late (warning at 30 s)");
    assert_eq!(health.score, 0.85);

    // 75 s: the owner declares it LOST, and the engine says why.
    clock.advance(Duration::from_secs(30));
    let snap = until(&mut snapshots, "a lost verdict", |s| {
        let w = &s.workers[&key];
        // Until the owner has marked it LOST, a cycle may still judge it as a late ALIVE
        // worker (critical too): wait for the verdict on the LOST worker.
        w.lifecycle == Lifecycle::Lost
            && w.health.as_ref().is_some_and(|h| {
                h.status == HealthStatus::Critical && h.findings[0].message.starts_with("lost")
            })
    })
    .await;
    let health = snap.workers[&key].health.clone().unwrap();
    assert_eq!(health.findings.len(), 1);
    assert_eq!(
        health.findings[0].message,
        "lost: heartbeat 73 s late (critical at 60 s)"
    );

    // The cycle summary is published.
    let summary = tokio::time::timeout(
        Duration::from_secs(10),
        engine.summaries.wait_for(|s| s.is_some()),
    )
    .await
    .expect("a summary")
    .unwrap()
    .clone()
    .unwrap();
    assert_eq!(summary.evaluated, 1);
    assert_eq!(summary.failed_share(), 0.0);

    // It stops when told to.
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), engine.task)
        .await
        .expect("the engine stops on cancel")
        .unwrap();
}

fn clock_now(clock: &ManualClock) -> std::time::SystemTime {
    use warden_core::Clock;
    clock.now()
}
