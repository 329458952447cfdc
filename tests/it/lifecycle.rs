//! Lifecycle from evidence, and the WatchFleet stream: a warm shutdown is OFFLINE, a SIGKILL
//! becomes LOST after the critical threshold, a new worker appears in a watch within its
//! first heartbeat, and revisions can be resumed from.

use std::time::{Duration, Instant};

use crate::support::*;
use tokio_stream::StreamExt as _;
use warden::proto::v1::{self as pb, watch_fleet_response::Event};

fn lifecycle_of(r: &pb::ListWorkersResponse, name: &str) -> Option<pb::Lifecycle> {
    find(r, name).map(|w| w.lifecycle())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_shutdown_is_offline_and_sigkill_is_lost_after_the_critical_threshold() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let warm = CeleryWorker::start(&broker, "warm@life", WorkerOptions::default());
    let mut crash = CeleryWorker::start(&broker, "crash@life", WorkerOptions::default());
    let mut config = test_config(&broker);
    config.heartbeat_warning = Duration::from_secs(4);
    config.heartbeat_critical = Duration::from_secs(8);
    let critical = config.heartbeat_critical;
    let warden = TestWarden::start(config).await;
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

    crash.kill9().await;
    let killed = Instant::now();
    let lost_after = eventually(
        critical + Duration::from_secs(6),
        "SIGKILL reported LOST",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, false).await;
                match lifecycle_of(&r, "crash@life")? {
                    pb::Lifecycle::Lost => Some(killed.elapsed()),
                    pb::Lifecycle::Offline => panic!("a crash is not a goodbye"),
                    _ => None,
                }
            }
        },
    )
    .await;
    // Heartbeats come every 2 s, so the last one was at most 2 s before the kill.
    assert!(
        lost_after + Duration::from_millis(2500) >= critical,
        "LOST after {lost_after:?}, before the critical threshold {critical:?}"
    );
    let r = list(&mut client.clone(), false).await;
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
