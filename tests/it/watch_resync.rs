//! A WatchFleet client that falls behind is resynchronised with a fresh snapshot, never
//! silently skipped. Driven in-process: the stream is not polled while thousands of changes
//! are applied, then read.

use std::time::{Duration, SystemTime};

use tokio_stream::StreamExt as _;
use tonic::Request;
use warden::{
    api::worker_health::WorkerHealthService,
    fleet::{Backend, InspectReport, InspectRound, owner::FleetMessage},
    proto::v1::{self as pb, watch_fleet_response::Event, worker_health_server::WorkerHealth as _},
};

fn round(names: impl Iterator<Item = String>) -> InspectRound {
    InspectRound {
        backend: Backend::Celery,
        scope: "default".into(),
        started_at: SystemTime::now(),
        targets: Some(Vec::new()),
        reports: names
            .map(|name| InspectReport {
                name,
                ping: true,
                ..Default::default()
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_falls_behind_gets_a_resync_snapshot() {
    // No broker is needed: the fleet is fed directly.
    let nobody = crate::support::reserve_port();
    let mut config = crate::support::test_config(&format!("redis://127.0.0.1:{nobody}/0"));
    config.broker_timeout = Duration::from_millis(200);
    let warden = warden::server::Warden::start(config).await.unwrap();
    let fleet = warden.fleet.clone();
    let service = WorkerHealthService::new(
        fleet.clone(),
        None,
        Duration::from_secs(1),
        Duration::from_secs(15),
        tokio_util::task::TaskTracker::new(),
    );
    let mut stream = service
        .watch_fleet(Request::new(pb::WatchFleetRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let first = crate::support::next_snapshot(&mut stream).await;
    assert_eq!(first.reason, pb::SnapshotReason::Initial);

    // Far more changes than a watcher may buffer, while this one reads nothing.
    let burst = warden::fleet::owner::WATCH_BUFFER + 1000;
    fleet
        .observe(FleetMessage::Inspect(round(
            (0..burst).map(|i| format!("w{i:05}@burst")),
        )))
        .await
        .unwrap();
    let revision = fleet.barrier().await.unwrap();

    let snapshot = tokio::time::timeout(
        Duration::from_secs(10),
        crate::support::next_snapshot(&mut stream),
    )
    .await
    .expect("a resync snapshot");
    assert_eq!(snapshot.reason, pb::SnapshotReason::Resync);
    assert_eq!(
        snapshot.workers.len(),
        burst,
        "the snapshot holds every worker"
    );
    assert!(snapshot.revision >= revision);

    // After the resync the stream carries on with changes newer than the snapshot. (The
    // receiver may still sit on the oldest buffered change, which the next change evicts:
    // then it is resynchronised once more, with a snapshot that already holds the worker.)
    fleet
        .observe(FleetMessage::Inspect(round(std::iter::once(
            "late@burst".to_string(),
        ))))
        .await
        .unwrap();
    let next_revision = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = stream.next().await.unwrap().unwrap();
            match &m.event {
                Some(Event::WorkerAdded(w)) if w.id == "late@burst" => return m.revision,
                Some(Event::SnapshotBegin(_)) => {
                    let s = crate::support::rest_of_snapshot(&m, &mut stream).await;
                    assert_eq!(s.reason, pb::SnapshotReason::Resync);
                    if s.workers.iter().any(|w| w.id == "late@burst") {
                        return s.revision;
                    }
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(next_revision > snapshot.revision);
    warden.shutdown().await;
}
