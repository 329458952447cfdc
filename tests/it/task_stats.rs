//! Task figures against ground truth: a known set of tasks (some failing, some sleeping for
//! known durations, one retrying twice) on two real workers, one started without events.

use std::time::Duration;

use crate::support::*;
use tonic::transport::Channel;
use warden::proto::v1::{self as pb, worker_health_client::WorkerHealthClient};

async fn detail(client: &mut WorkerHealthClient<Channel>, name: &str) -> Option<pb::Worker> {
    client
        .get_worker(pb::GetWorkerRequest {
            name: name.into(),
            refresh: false,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner()
        .worker
}

/// The stats of one task name in one window (0 = 1 min, 1 = 5 min, 2 = 1 h).
fn by_task(worker: &pb::Worker, task: &str, window: usize) -> Option<pb::WindowStats> {
    worker
        .task_stats
        .as_ref()?
        .by_task
        .iter()
        .find(|t| t.task_name == format!("warden_test_app.{task}"))?
        .windows
        .get(window)
        .cloned()
}

fn secs(d: &Option<prost_types::Duration>) -> f64 {
    d.as_ref()
        .map_or(-1.0, |d| d.seconds as f64 + d.nanos as f64 / 1e9)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_worker_counts_and_runtime_percentiles_match_ground_truth() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    // w1 sends task events from the start (-E); w2 only once warden asks it to.
    let _w1 = CeleryWorker::start(
        &broker,
        "w1@stats",
        WorkerOptions {
            queues: &["q1"],
            events: true,
            ..WorkerOptions::default()
        },
    );
    let _w2 = CeleryWorker::start(
        &broker,
        "w2@stats",
        WorkerOptions {
            queues: &["q2"],
            ..WorkerOptions::default()
        },
    );
    let warden = TestWarden::start(test_config(&broker)).await;
    let client = warden.client().await;

    // Warm up until both workers' task events reach warden (w2's after enable_events).
    for (worker, queue) in [("w1@stats", "q1"), ("w2@stats", "q2")] {
        eventually(Duration::from_secs(40), "task events flowing", || {
            let mut client = client.clone();
            let broker = broker.clone();
            async move {
                let w = detail(&mut client, worker).await;
                if w.as_ref()
                    .and_then(|w| by_task(w, "add", 2))
                    .is_some_and(|s| s.succeeded > 0)
                {
                    return Some(());
                }
                submit(&broker, "add", 1, &["1", "1"], &["--queue", queue]).await;
                None
            }
        })
        .await;
    }

    // The known set.
    submit(&broker, "fail", 4, &[], &["--queue", "q1"]).await;
    submit(&broker, "retry_twice", 1, &[], &["--queue", "q1"]).await;
    submit(&broker, "sleep_for", 6, &["0.3"], &["--queue", "q2"]).await;
    submit(&broker, "sleep_for", 4, &["0.9"], &["--queue", "q2"]).await;

    let (w1, w2) = eventually(Duration::from_secs(60), "every known task counted", || {
        let mut client = client.clone();
        async move {
            let w1 = detail(&mut client, "w1@stats").await?;
            let w2 = detail(&mut client, "w2@stats").await?;
            let fails = by_task(&w1, "fail", 1)?;
            let retries = by_task(&w1, "retry_twice", 1)?;
            let sleeps = by_task(&w2, "sleep_for", 1)?;
            assert!(
                fails.failed <= 4 && retries.retried <= 2 && sleeps.succeeded <= 10,
                "over-counted"
            );
            (fails.failed == 4 && retries.succeeded == 1 && sleeps.succeeded == 10)
                .then_some((w1, w2))
        }
    })
    .await;

    // Exact counts.
    let fails = by_task(&w1, "fail", 1).unwrap();
    assert_eq!((fails.succeeded, fails.failed, fails.retried), (0, 4, 0));
    assert_eq!(fails.error_rate, 1.0);
    let retries = by_task(&w1, "retry_twice", 1).unwrap();
    assert_eq!(
        (retries.succeeded, retries.failed, retries.retried),
        (1, 0, 2)
    );
    assert_eq!(retries.received, 3, "received once per attempt");
    let sleeps = by_task(&w2, "sleep_for", 1).unwrap();
    assert_eq!(
        (sleeps.succeeded, sleeps.failed, sleeps.retried),
        (10, 0, 0)
    );
    assert!(by_task(&w2, "fail", 1).is_none(), "w2 ran no failing task");

    // Rates over the 1-minute window: finished (and succeeded) per minute over the time the
    // window really covers (these workers are younger than a minute when first summarised, and
    // a rate over the nominal minute would understate them).
    for w in [
        by_task(&w1, "fail", 0).unwrap(),
        by_task(&w2, "sleep_for", 0).unwrap(),
    ] {
        let (expect_finished, expect_succeeded) =
            ((w.succeeded + w.failed) as f64, w.succeeded as f64);
        assert!(expect_finished > 0.0, "{w:?}");
        let covered = secs(&w.covered);
        let window = secs(&w.window);
        assert!(covered > 0.0 && covered <= window, "{w:?}");
        let minutes = covered / 60.0;
        assert!(
            (w.throughput_per_min - expect_finished / minutes).abs() < 1e-6,
            "{w:?}"
        );
        assert!(
            (w.succeeded_per_min - expect_succeeded / minutes).abs() < 1e-6,
            "{w:?}"
        );
    }

    // Runtimes: six of 0.3 s and four of 0.9 s.
    let runtime = sleeps.runtime.unwrap();
    assert_eq!(runtime.count, 10);
    let (p50, p90, p99) = (secs(&runtime.p50), secs(&runtime.p90), secs(&runtime.p99));
    assert!((0.29..0.45).contains(&p50), "p50 {p50}");
    assert!((0.89..1.05).contains(&p90), "p90 {p90}");
    assert!((0.89..1.05).contains(&p99), "p99 {p99}");
    assert!(
        secs(&runtime.min) >= 0.299 && secs(&runtime.min) < 0.45,
        "{runtime:?}"
    );
    assert!(secs(&runtime.max) >= 0.899 && secs(&runtime.max) < 1.05);
    let mean = secs(&runtime.mean);
    assert!((mean - 0.54).abs() < 0.06, "mean {mean}");
    // Queue wait is measured (received -> started), and bounded by the run.
    let wait = sleeps.queue_wait.unwrap();
    assert_eq!(wait.count, 10);
    assert!(secs(&wait.max) < 10.0);

    // The fleet summary adds the workers' 1-minute throughput up.
    let summary = client
        .clone()
        .get_fleet_summary(pb::GetFleetSummaryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert!(summary.throughput_per_min >= 14.0, "{summary:?}");
    assert_eq!(summary.workers, 2);
    warden.stop().await;
}
