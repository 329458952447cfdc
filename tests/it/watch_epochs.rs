//! WatchFleet across process lives and quiet spells: a resume token from a previous warden
//! process gets a snapshot that says why (never a replay of another history); shutdown ends a
//! stream with UNAVAILABLE so that clients retry; a quiet, filtered stream gets bookmarks
//! whose tokens resume without a snapshot.
use std::time::Duration;

use crate::support::*;
use tokio_stream::StreamExt as _;
use tonic_types::StatusExt as _;
use warden::{
    fleet::{Backend, InspectReport, InspectRound, owner::FleetMessage},
    proto::v1::{self as pb, watch_fleet_response::Event},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_a_previous_process_gets_a_snapshot_saying_the_epoch_changed() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _worker = CeleryWorker::start(&broker, "w1@epochs", WorkerOptions::default());
    let first = TestWarden::start(test_config(&broker)).await;
    let mut client = first.client().await;
    eventually(Duration::from_secs(30), "worker known", || {
        let mut client = client.clone();
        async move { find(&list(&mut client, false).await, "w1@epochs").map(|_| ()) }
    })
    .await;
    let mut stream = client
        .watch_fleet(pb::WatchFleetRequest::default())
        .await
        .unwrap()
        .into_inner();
    let snapshot = next_snapshot(&mut stream).await;
    assert_eq!(snapshot.reason, pb::SnapshotReason::Initial);
    let token = snapshot.resume_token;
    drop(stream);
    first.stop().await;

    // Another life of warden on the same broker: the old token cannot be replayed.
    let second = TestWarden::start(test_config(&broker)).await;
    let mut client = second.client().await;
    let mut resumed = client
        .watch_fleet(pb::WatchFleetRequest {
            resume_token: token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let snapshot = next_snapshot(&mut resumed).await;
    assert_eq!(snapshot.reason, pb::SnapshotReason::EpochChanged);
    // The stream goes on in the new life: the worker arrives (in the snapshot or after it).
    if !snapshot.workers.iter().any(|w| w.id == "w1@epochs") {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let message = resumed.next().await.unwrap().unwrap();
                if let Some(Event::WorkerAdded(w)) = message.event
                    && w.id == "w1@epochs"
                {
                    return;
                }
            }
        })
        .await
        .expect("the worker is streamed by the new process");
    }
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_watch_with_unavailable_so_clients_retry() {
    let redis = RedisServer::start().await;
    let warden = TestWarden::start(test_config(&redis.url(0))).await;
    let mut client = warden.client().await;
    let mut stream = client
        .watch_fleet(pb::WatchFleetRequest::default())
        .await
        .unwrap()
        .into_inner();
    next_snapshot(&mut stream).await;
    warden.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream ends within 10 s of shutdown");
    let status = end.expect("an error status, not a clean end");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "SHUTTING_DOWN");
    assert!(details.retry_info().is_some());
}

fn inspect_round(names: &[&str]) -> FleetMessage {
    FleetMessage::Inspect(InspectRound {
        backend: Backend::Celery,
        scope: "default".into(),
        started_at: std::time::SystemTime::now(),
        targets: Some(Vec::new()),
        reports: names
            .iter()
            .map(|name| InspectReport {
                name: name.to_string(),
                ping: true,
                ..Default::default()
            })
            .collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_filtered_stream_gets_bookmarks_that_resume_without_a_snapshot() {
    let redis = RedisServer::start().await;
    let warden = TestWarden::start(test_config(&redis.url(0))).await;
    let fleet = warden.warden.as_ref().unwrap().fleet.clone();
    let mut client = warden.client().await;
    let request = pb::WatchFleetRequest {
        filter: Some(pb::WorkerFilter {
            name_glob: "watched@*".into(),
            ..Default::default()
        }),
        bookmark_interval: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    };
    let mut stream = client
        .watch_fleet(request.clone())
        .await
        .unwrap()
        .into_inner();
    let snapshot = next_snapshot(&mut stream).await;
    assert!(snapshot.workers.is_empty());

    // Changes the filter hides: the stream stays quiet but for bookmarks, which move on.
    fleet
        .observe(inspect_round(&["other1@bookmarks", "other2@bookmarks"]))
        .await
        .unwrap();
    let moved_to = fleet.barrier().await.unwrap();
    let bookmark = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let message = stream.next().await.unwrap().unwrap();
            match &message.event {
                Some(Event::Bookmark(_)) if message.revision >= moved_to => return message,
                Some(Event::Bookmark(_)) => continue,
                other => panic!("the filter hides these changes: {other:?}"),
            }
        }
    })
    .await
    .expect("a bookmark within 5 s (interval 1 s)");
    assert!(!bookmark.resume_token.is_empty());
    assert!(bookmark.revision > snapshot.revision);

    // Its token resumes the same stream without a snapshot; the next change arrives.
    let mut resumed = client
        .watch_fleet(pb::WatchFleetRequest {
            resume_token: bookmark.resume_token,
            ..request
        })
        .await
        .unwrap()
        .into_inner();
    fleet
        .observe(inspect_round(&["watched@bookmarks"]))
        .await
        .unwrap();
    let added = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let message = resumed.next().await.unwrap().unwrap();
            match &message.event {
                Some(Event::WorkerAdded(w)) => return w.clone(),
                Some(Event::Bookmark(_)) => continue,
                other => panic!("expected no snapshot after a bookmark token: {other:?}"),
            }
        }
    })
    .await
    .expect("the change within 5 s");
    assert_eq!(added.id, "watched@bookmarks");
    warden.stop().await;
}
