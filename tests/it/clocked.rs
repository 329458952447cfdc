//! Thresholds against the injected clock: warden runs with a `ManualClock`, so a worker's
//! silence grows only when the test moves the clock, by exactly as much as it says, and no
//! test waits real seconds for a threshold to pass. The broker is a real Redis (its source
//! must be up: while it is down, silence is not held against its workers); workers are fed to
//! the fleet as the Celery adapter would report them. What the test waits for in real time is
//! only the owner's 1 s evaluation tick, with a deadline.
//!
//! Every negative check ("not yet") is read from the same snapshot as a positive one for a
//! worker evaluated at the same instant: one evaluation pass judges every worker at one
//! `now`, so the pair proves where the threshold lies without waiting "long enough".

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::support::*;
use tonic::transport::Channel;
use warden::{
    fleet::{Backend, ManualClock, WorkerEventKind, WorkerKey},
    proto::v1::{self as pb, worker_health_client::WorkerHealthClient},
};

/// Workers fed here live in a scope of their own (see [`worker_event`]).
const SCOPE: &str = "clocked";
const WARNING: Duration = Duration::from_secs(30);
const CRITICAL: Duration = Duration::from_secs(60);
/// The heartbeat period the fed workers announce (Celery's default `freq`): lateness counts
/// from one period after the last heartbeat.
const FREQ: Duration = Duration::from_secs(2);
/// Real time for the 1 s evaluation tick to pick up a move of the clock.
const TICK_DEADLINE: Duration = Duration::from_secs(10);

/// A warden on a real broker, with a manual clock started at the wall clock's now.
async fn clocked_warden(
    redis: &RedisServer,
) -> (ManualClock, TestWarden, WorkerHealthClient<Channel>) {
    let clock = ManualClock::new(SystemTime::now());
    let mut config = test_config(&redis.url(0));
    config.heartbeat_warning = WARNING;
    config.heartbeat_critical = CRITICAL;
    let warden = TestWarden::start_with_clock(config, Arc::new(clock.clone())).await;
    let client = warden.client().await;
    (clock, warden, client)
}

/// Feeds one event of the Celery worker `id` and waits until it is applied (at the clock's
/// current time).
async fn feed(warden: &TestWarden, id: &str, kind: WorkerEventKind) {
    feed_key(warden, WorkerKey::new(Backend::Celery, SCOPE, id), kind).await;
}

async fn feed_key(warden: &TestWarden, key: WorkerKey, kind: WorkerEventKind) {
    let fleet = &warden.inner().fleet;
    fleet
        .observe(worker_event(key, kind, Some(FREQ)))
        .await
        .expect("the fleet runs");
    fleet.barrier().await.expect("the fleet runs");
}

fn state(r: &pb::ListWorkersResponse, id: &str) -> (pb::Lifecycle, pb::Activity) {
    let w = find(r, id).unwrap_or_else(|| panic!("{id} not listed: {r:?}"));
    (w.lifecycle(), w.activity())
}

/// Waits for the evaluation tick that puts `id` in `expected`; returns that listing.
async fn until(
    client: &WorkerHealthClient<Channel>,
    id: &'static str,
    expected: (pb::Lifecycle, pb::Activity),
) -> pb::ListWorkersResponse {
    eventually(
        TICK_DEADLINE,
        &format!("{id} evaluated as {expected:?}"),
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, false).await;
                (find(&r, id).map(|w| (w.lifecycle(), w.activity())) == Some(expected)).then_some(r)
            }
        },
    )
    .await
}

fn secs(d: Option<&prost_types::Duration>) -> Option<(i64, i32)> {
    d.map(|d| (d.seconds, d.nanos))
}

const IDLE: (pb::Lifecycle, pb::Activity) = (pb::Lifecycle::Alive, pb::Activity::Idle);
const UNRESPONSIVE: (pb::Lifecycle, pb::Activity) =
    (pb::Lifecycle::Alive, pb::Activity::Unresponsive);
const LOST: (pb::Lifecycle, pb::Activity) = (pb::Lifecycle::Lost, pb::Activity::Unresponsive);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_past_warning_is_unresponsive_and_past_critical_is_lost() {
    let redis = RedisServer::start().await;
    let (clock, warden, client) = clocked_warden(&redis).await;
    broker_connected(&client).await;

    // "early" last heard at t=0, "late" at t=20 s.
    feed(&warden, "early@clock", WorkerEventKind::Online).await;
    clock.advance(Duration::from_secs(20));
    feed(&warden, "late@clock", WorkerEventKind::Online).await;
    let r = list(&mut client.clone(), false).await;
    assert_eq!(state(&r, "early@clock"), IDLE);
    assert_eq!(state(&r, "late@clock"), IDLE);
    // Ages are measured on the injected clock, exactly.
    let early = find(&r, "early@clock").unwrap();
    assert_eq!(secs(early.heartbeat_age.as_ref()), Some((20, 0)));
    assert_eq!(secs(early.heartbeat_interval.as_ref()), Some((2, 0)));

    // t=35 s: early is 33 s late (> warning), late only 13 s.
    clock.advance(Duration::from_secs(15));
    let r = until(&client, "early@clock", UNRESPONSIVE).await;
    assert_eq!(
        state(&r, "late@clock"),
        IDLE,
        "13 s late is under the 30 s warning"
    );
    let early = find(&r, "early@clock").unwrap();
    assert_eq!(secs(early.heartbeat_age.as_ref()), Some((35, 0)));

    // t=65 s: early is 63 s late (> critical), late 43 s: past warning only.
    clock.advance(Duration::from_secs(30));
    let r = until(&client, "early@clock", LOST).await;
    assert_eq!(
        state(&r, "late@clock"),
        UNRESPONSIVE,
        "43 s late is past the warning, under the 60 s critical threshold"
    );

    // t=85 s: late is 63 s late too.
    clock.advance(Duration::from_secs(20));
    until(&client, "late@clock", LOST).await;

    // A heartbeat brings a LOST worker back: it is evidence of life, at the clock's now.
    feed(&warden, "early@clock", WorkerEventKind::Heartbeat).await;
    let r = until(&client, "early@clock", IDLE).await;
    assert_eq!(state(&r, "late@clock"), LOST);
    assert_eq!(
        secs(find(&r, "early@clock").unwrap().heartbeat_age.as_ref()),
        Some((0, 0))
    );
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_during_a_broker_outage_is_not_held_against_its_workers() {
    let mut redis = RedisServer::start().await;
    let (clock, warden, client) = clocked_warden(&redis).await;
    broker_connected(&client).await;
    feed(&warden, "patient@clock", WorkerEventKind::Online).await;
    // A control of another backend, which does not depend on the broker: it is judged in
    // every evaluation pass, in the same pass as the broker's workers.
    let control = WorkerKey::new(Backend::RedisStreams, "jobs/consumers", "control@clock");
    feed_key(&warden, control, WorkerEventKind::Online).await;

    // The broker goes away: nothing can be heard from its workers meanwhile.
    redis.kill().await;
    eventually(TICK_DEADLINE, "the broker reported down", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            broker_source(&r)
                .is_some_and(|s| !s.available)
                .then_some(())
        }
    })
    .await;
    // Twice the critical threshold of silence for both. The control turning LOST shows that a
    // pass judged the fleet at the new time; the patient worker, judged in that same pass, is
    // still as it was, its data marked stale.
    clock.advance(CRITICAL * 2);
    let r = until(&client, "control@clock", LOST).await;
    assert_eq!(state(&r, "patient@clock"), IDLE);
    let patient = find(&r, "patient@clock").unwrap();
    assert!(patient.stale, "its data is marked stale: {patient:?}");
    assert_eq!(patient.stale_sources, ["broker"]);

    // Back up: now the silence counts, and it is long past critical.
    redis.restart().await;
    broker_connected(&client).await;
    until(&client, "patient@clock", LOST).await;
    warden.stop().await;
}
