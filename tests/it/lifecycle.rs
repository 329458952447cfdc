//! Lifecycle from evidence, and the WatchFleet stream: a warm shutdown is OFFLINE, a SIGKILL
//! becomes LOST after the critical threshold (on the injected clock), a new worker appears in
//! a watch within its first heartbeat, and revisions can be resumed from.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use crate::support::*;
use tokio_stream::StreamExt as _;
use warden::{
    fleet::ManualClock,
    proto::v1::{self as pb, watch_fleet_response::Event},
};

fn lifecycle_of(r: &pb::ListWorkersResponse, name: &str) -> Option<pb::Lifecycle> {
    find(r, name).map(|w| w.lifecycle())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_shutdown_is_offline_and_sigkill_is_lost_after_the_critical_threshold() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let warm = CeleryWorker::start(&broker, "warm@life", WorkerOptions::default());
    let mut crash = CeleryWorker::start(&broker, "crash@life", WorkerOptions::default());
    // The injected clock stands still unless the test moves it: every observation below
    // happens at its start, and LOST can only come from moving it past the critical
    // threshold (the default 60 s), never from real seconds passing.
    let clock = ManualClock::new(SystemTime::now());
    let mut config = test_config(&broker);
    // A broker probe that times out on a loaded machine counts as an outage, and silence
    // during an outage is not held against workers: on this test's frozen clock that credit
    // would never run out. A long broker timeout keeps the probes from failing.
    config.broker_timeout = Duration::from_secs(20);
    let critical = config.heartbeat_critical;
    let warden = TestWarden::start_with_clock(config, Arc::new(clock.clone())).await;
    let client = warden.client().await;
    eventually(
        Duration::from_secs(30),
        "both workers alive with heartbeats",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, false).await;
                let ok = ["warm@life", "crash@life"].iter().all(|n| {
                    find(&r, n).is_some_and(|w| {
                        w.lifecycle() == pb::Lifecycle::Alive && w.heartbeat_interval.is_some()
                    })
                });
                ok.then_some(())
            }
        },
    )
    .await;

    warm.terminate().await;
    eventually(
        Duration::from_secs(20),
        "warm shutdown reported OFFLINE",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, false).await;
                (lifecycle_of(&r, "warm@life")? == pb::Lifecycle::Offline).then_some(())
            }
        },
    )
    .await;

    // A crash: the next inspect round finds it silent, UNRESPONSIVE but still ALIVE (the
    // clock has not moved, so its silence has not grown).
    crash.kill9().await;
    let r = eventually(
        Duration::from_secs(10),
        "SIGKILL noticed by the next inspect round",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, false).await;
                let w = find(&r, "crash@life")?;
                assert_ne!(
                    w.lifecycle(),
                    pb::Lifecycle::Offline,
                    "a crash is no goodbye"
                );
                (w.activity() == pb::Activity::Unresponsive).then_some(r)
            }
        },
    )
    .await;
    let crashed = find(&r, "crash@life").unwrap();
    assert_eq!(crashed.lifecycle(), pb::Lifecycle::Alive, "{crashed:?}");
    let interval = crashed
        .heartbeat_interval
        .map(|d| Duration::new(d.seconds as u64, d.nanos as u32))
        .expect("announced by its heartbeats");
    // Lateness counts from one heartbeat period after the last heartbeat. A marker heard at
    // the same instant (the clock's start) but announcing no period is judged in the same
    // evaluation pass: once it is LOST, crash@life was judged at the same time. The marker
    // comes through the broker's event stream, after everything crash@life sent before it
    // died: once warden knows the marker, no late heartbeat of crash@life can be applied
    // after the clock moves (which would move its last_seen with the clock).
    let marker = warden::celery::envelope::encode(
        &serde_json::json!({"type": "worker-online", "hostname": "marker@life", "timestamp": 1.0}),
        serde_json::json!({}),
        "celeryev",
        "worker.online",
        1,
    );
    redis
        .cli(&["PUBLISH", "/0.celeryev/worker.online", &marker])
        .await;
    eventually(Duration::from_secs(10), "the marker is known", || {
        let mut client = client.clone();
        async move { find(&list(&mut client, false).await, "marker@life").map(|_| ()) }
    })
    .await;

    // One second short of the critical lateness: not LOST yet.
    clock.advance(critical + interval - Duration::from_secs(1));
    let r = eventually(Duration::from_secs(10), "the marker LOST", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            (lifecycle_of(&r, "marker@life")? == pb::Lifecycle::Lost).then_some(r)
        }
    })
    .await;
    assert_eq!(
        lifecycle_of(&r, "crash@life"),
        Some(pb::Lifecycle::Alive),
        "LOST before the critical threshold"
    );

    // Past it: LOST.
    clock.advance(Duration::from_secs(2));
    // The owner re-derives lifecycles on a 1 s tick; a loaded machine can delay it, so the
    // deadline is generous (it is a deadline, not a wait). What the worker looked like at
    // each poll is printed, for a failure's diagnosis.
    let r = eventually(Duration::from_secs(30), "SIGKILL reported LOST", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            if let Some(w) = find(&r, "crash@life") {
                eprintln!(
                    "crash@life: lifecycle={:?} activity={:?} last_seen={:?} heartbeat_age={:?} interval={:?} stale={} sources={:?}",
                    w.lifecycle(), w.activity(), w.last_seen, w.heartbeat_age, w.heartbeat_interval, w.stale,
                    r.freshness.as_ref().map(|f| f.sources.iter().map(|s| (s.source.clone(), s.available)).collect::<Vec<_>>())
                );
            }
            (lifecycle_of(&r, "crash@life")? == pb::Lifecycle::Lost).then_some(r)
        }
    })
    .await;
    assert_eq!(
        lifecycle_of(&r, "warm@life"),
        Some(pb::Lifecycle::Offline),
        "still visible"
    );
    let lost = find(&r, "crash@life").unwrap();
    assert_eq!(lost.activity(), pb::Activity::Unresponsive);
    // Nothing evaluates health yet: absent, never a made-up verdict.
    assert!(lost.health.is_none(), "{lost:?}");
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fleet_streams_a_snapshot_then_changes_and_resumes() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _first = CeleryWorker::start(&broker, "first@watch", WorkerOptions::default());
    let warden = TestWarden::start(test_config(&broker)).await;
    let mut client = warden.client().await;
    eventually(Duration::from_secs(30), "first worker known", || {
        let mut client = client.clone();
        async move { find(&list(&mut client, false).await, "first@watch").map(|_| ()) }
    })
    .await;

    let mut stream = client
        .watch_fleet(pb::WatchFleetRequest::default())
        .await
        .unwrap()
        .into_inner();
    let snapshot = next_snapshot(&mut stream).await;
    assert_eq!(snapshot.reason, pb::SnapshotReason::Initial);
    assert!(snapshot.workers.iter().any(|w| w.id == "first@watch"));
    let mut last_revision = snapshot.revision;
    let mut last_token = snapshot.resume_token.clone();

    // A new worker appears within its first heartbeat.
    let started = Instant::now();
    let second = CeleryWorker::start(&broker, "second@watch", WorkerOptions::default());
    let (added_revision, token_before) = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let message = stream.next().await.unwrap().unwrap();
            if matches!(message.event, Some(Event::Bookmark(_))) {
                assert!(
                    message.revision >= last_revision,
                    "bookmarks do not go back"
                );
            } else {
                assert!(message.revision > last_revision, "revisions increase");
            }
            last_revision = message.revision;
            if let Some(Event::WorkerAdded(w)) = &message.event
                && w.id == "second@watch"
            {
                return (message.revision, last_token.clone());
            }
            assert!(!message.resume_token.is_empty(), "{message:?}");
            last_token = message.resume_token.clone();
        }
    })
    .await
    .expect("the new worker is streamed");
    eprintln!(
        "new worker streamed {:?} after its start",
        started.elapsed()
    );

    // A status change reaches the watcher within 5 s: a warm shutdown turns OFFLINE.
    second.terminate().await;
    let stopped = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let message = stream.next().await.unwrap().unwrap();
            if let Some(Event::WorkerUpdated(w)) = &message.event
                && w.id == "second@watch"
                && w.lifecycle() == pb::Lifecycle::Offline
            {
                return;
            }
        }
    })
    .await
    .expect("OFFLINE streamed within 5 s of the warm shutdown");
    eprintln!("OFFLINE streamed {:?} after SIGTERM", stopped.elapsed());

    // Resuming with the token of the message before the addition replays what came after
    // it, without a snapshot.
    let mut resumed = client
        .watch_fleet(pb::WatchFleetRequest {
            resume_token: token_before.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let replayed = resumed.next().await.unwrap().unwrap();
    assert_eq!(replayed.revision, added_revision, "{replayed:?}");
    assert!(matches!(&replayed.event, Some(Event::WorkerAdded(w)) if w.id == "second@watch"));

    // A token issued for another filter cannot be replayed here: a snapshot that says so.
    let mut other_filter = client
        .watch_fleet(pb::WatchFleetRequest {
            resume_token: token_before,
            include_queues: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let s = next_snapshot(&mut other_filter).await;
    assert_eq!(s.reason, pb::SnapshotReason::ResumeUnavailable);

    // A token warden did not issue is refused, naming the field.
    let err = client
        .watch_fleet(pb::WatchFleetRequest {
            resume_token: "42".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("resume_token"), "{err:?}");

    // Filters apply to the stream: only matching workers.
    let mut filtered = client
        .watch_fleet(pb::WatchFleetRequest {
            filter: Some(pb::WorkerFilter {
                name_glob: "second@*".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let s = next_snapshot(&mut filtered).await;
    let names: Vec<_> = s.workers.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(names, vec!["second@watch"]);
    warden.stop().await;
}
