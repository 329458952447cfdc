//! History against real parts: a live warden watching real Celery workers writes samples and
//! events to a real SQLite file and a real Postgres (a private cluster the test starts), and
//! they come back through the History RPCs and the CLI; history survives a restart; a
//! Postgres outage loses nothing within the buffer.
use std::{
    process::Command,
    time::{Duration, SystemTime},
};

use crate::support::*;
use tonic::transport::Channel;
use warden::proto::v1::{self as pb, history_client::HistoryClient};

/// A warden keeping history in `database_url`, sampling every second.
fn history_config(broker: &str, database_url: &str) -> warden::config::Config {
    let mut config = test_config(broker);
    config.database_url = warden::config::Secret::new(database_url);
    config.sample_interval = Duration::from_secs(1);
    config
}

async fn history_client(warden: &TestWarden) -> HistoryClient<Channel> {
    HistoryClient::new(warden.channel().await)
}

fn worker_subject(name: &str) -> pb::Subject {
    pb::Subject {
        kind: Some(pb::subject::Kind::Worker(name.into())),
    }
}

/// A worker's metric summed over the last 10 minutes, step by step, as the store groups it.
async fn sum(client: &mut HistoryClient<Channel>, worker: &str, metric: &str) -> Option<f64> {
    let now = SystemTime::now();
    let response = client
        .query_history(pb::QueryHistoryRequest {
            subjects: vec![worker_subject(worker)],
            metrics: vec![metric.into()],
            start: Some((now - Duration::from_secs(600)).into()),
            end: Some((now + Duration::from_secs(5)).into()),
            aggregation: pb::Aggregation::Sum.into(),
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    let series = response.series.first()?;
    Some(series.points.iter().map(|p| p.value).sum())
}

/// Writes, reads back through the RPCs and the CLI, restarts on the same database.
async fn records_and_serves_history(database_url: &str) {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    // Task events from the start (`-E`): what ran before warden's enable_events would
    // otherwise be invisible to it, and to history.
    let mut worker = CeleryWorker::start(
        &broker,
        "w1@history",
        WorkerOptions {
            events: true,
            ..WorkerOptions::default()
        },
    );
    let warden = TestWarden::start(history_config(&broker, database_url)).await;
    let client = warden.client().await;
    eventually(Duration::from_secs(30), "worker known", || {
        let mut client = client.clone();
        async move { find(&list(&mut client, false).await, "w1@history").map(|_| ()) }
    })
    .await;
    const N: u32 = 6;
    submit(&broker, "add", N, &["1", "2"], &[]).await;
    submit(&broker, "fail", 2, &[], &[]).await;
    let mut history = history_client(&warden).await;
    // Succeeded and failed per interval, summed over the range, equal what ran.
    eventually(Duration::from_secs(40), "task outcomes in history", || {
        let mut history = history.clone();
        async move {
            let succeeded = sum(&mut history, "w1@history", "succeeded").await?;
            let failed = sum(&mut history, "w1@history", "failed").await?;
            assert!(succeeded <= f64::from(N) && failed <= 2.0, "over-counted");
            (succeeded == f64::from(N) && failed == 2.0).then_some(())
        }
    })
    .await;

    // The runtime distribution: percentiles from merged sketches, within the sketch error.
    let now = SystemTime::now();
    let runtime = history
        .query_history(pb::QueryHistoryRequest {
            subjects: vec![
                worker_subject("w1@history"),
                pb::Subject {
                    kind: Some(pb::subject::Kind::Fleet(true)),
                },
            ],
            metrics: vec!["runtime".into(), "alive_workers".into()],
            start: Some((now - Duration::from_secs(600)).into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(runtime.series.len(), 4, "two metrics for two subjects");
    let fleet_alive = runtime
        .series
        .iter()
        .find(|s| {
            s.metric == "alive_workers"
                && matches!(
                    s.subject.as_ref().and_then(|s| s.kind.as_ref()),
                    Some(pb::subject::Kind::Fleet(_))
                )
        })
        .unwrap();
    assert!(
        fleet_alive.points.iter().all(|p| p.value == 1.0),
        "{fleet_alive:?}"
    );
    assert!(runtime.oldest_available.is_some());
    assert!(runtime.step.is_some());

    // Events: the worker appeared and came online.
    let events = history
        .list_events(pb::ListEventsRequest {
            subject: Some(worker_subject("w1@history")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        events.events.iter().any(|e| e.message.contains("appeared")),
        "{events:?}"
    );

    // The same through the CLI.
    let (ok, stdout, stderr) = run(Command::new(env!("CARGO_BIN_EXE_warden")).args([
        "history",
        "w1@history",
        "--metric",
        "succeeded",
        "--aggregation",
        "sum",
        "--since",
        "10m",
        "--output",
        "json",
        "--server",
        &warden.grpc_url,
    ]))
    .await;
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let total: f64 = json["series"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .sum();
    assert_eq!(total, f64::from(N), "{stdout}");
    let (ok, stdout, stderr) = run(Command::new(env!("CARGO_BIN_EXE_warden")).args([
        "history",
        "w1@history",
        "--metric",
        "active_tasks",
        "--since",
        "10m",
        "--server",
        &warden.grpc_url,
    ]))
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("active_tasks (tasks, avg)"), "{stdout}");
    assert!(stdout.contains('┤'), "a chart: {stdout}");
    let (ok, stdout, stderr) = run(Command::new(env!("CARGO_BIN_EXE_warden")).args([
        "events",
        "--since",
        "10m",
        "--output",
        "json",
        "--server",
        &warden.grpc_url,
    ]))
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("w1@history appeared"), "{stdout}");

    // A second worker that stops cleanly: a clean stop in the summary, not a crash.
    let second = CeleryWorker::start(&broker, "w2@history", WorkerOptions::default());
    eventually(Duration::from_secs(30), "w2 alive", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            (find(&r, "w2@history")?.lifecycle() == pb::Lifecycle::Alive).then_some(())
        }
    })
    .await;
    second.terminate().await;
    eventually(
        Duration::from_secs(30),
        "w2's clean stop in history",
        || {
            let mut history = history.clone();
            async move {
                let events = history
                    .list_events(pb::ListEventsRequest {
                        subject: Some(worker_subject("w2@history")),
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                events
                    .events
                    .iter()
                    .any(|e| e.message.contains("clean shutdown"))
                    .then_some(())
            }
        },
    )
    .await;

    // A fleet summary over the range adds the tasks up, and counts the clean stop.
    let summary = history
        .get_fleet_history_summary(pb::GetFleetHistorySummaryRequest {
            start: Some((SystemTime::now() - Duration::from_secs(600)).into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap()
        .totals
        .unwrap();
    assert_eq!(
        (summary.tasks_finished, summary.tasks_failed),
        (u64::from(N) + 2, 2),
        "{summary:?}"
    );
    assert!(summary.runtime.is_some_and(|r| r.count >= u64::from(N)));
    assert_eq!(summary.workers_seen, 2, "{summary:?}");
    assert_eq!((summary.clean_stops, summary.lost), (1, 0), "{summary:?}");

    // Restart on the same database while the worker is gone (it died while warden was
    // down: no goodbye was seen). History and the worker are still there; the worker is
    // UNKNOWN at first, never LOST at the first instant, and LOST once a critical period of
    // silence has passed (on the injected clock, not real seconds).
    warden.stop().await;
    worker.kill9().await;
    let clock = warden::fleet::ManualClock::new(SystemTime::now());
    let config = history_config(&broker, database_url);
    let critical = config.heartbeat_critical;
    let warden = TestWarden::start_with_clock(config, std::sync::Arc::new(clock.clone())).await;
    let client = warden.client().await;
    let remembered = eventually(Duration::from_secs(10), "worker remembered", || {
        let mut client = client.clone();
        async move { find(&list(&mut client, false).await, "w1@history").cloned() }
    })
    .await;
    assert_eq!(
        remembered.lifecycle(),
        pb::Lifecycle::Unknown,
        "{remembered:?}"
    );
    let mut history = history_client(&warden).await;
    assert_eq!(
        sum(&mut history, "w1@history", "succeeded").await,
        Some(f64::from(N))
    );
    let events = history
        .list_events(pb::ListEventsRequest {
            subject: Some(worker_subject("w1@history")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        events.events.iter().any(|e| e.message.contains("appeared")),
        "events survive the restart: {events:?}"
    );
    clock.advance(critical + Duration::from_secs(1));
    eventually(
        Duration::from_secs(10),
        "LOST after the critical period",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, false).await;
                (find(&r, "w1@history")?.lifecycle() == pb::Lifecycle::Lost).then_some(())
            }
        },
    )
    .await;
    // The crash is counted in the fleet summary once its event is written.
    eventually(Duration::from_secs(20), "the crash in the summary", || {
        let mut history = history.clone();
        async move {
            let totals = history
                .get_fleet_history_summary(pb::GetFleetHistorySummaryRequest {
                    start: Some((SystemTime::now() - Duration::from_secs(900)).into()),
                    end: Some((SystemTime::now() + Duration::from_secs(900)).into()),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .summary?
                .totals?;
            assert!(totals.lost <= 1, "{totals:?}");
            (totals.lost == 1 && totals.clean_stops == 1).then_some(())
        }
    })
    .await;
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_records_history_and_keeps_it_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("warden.db").display());
    records_and_serves_history(&url).await;
    assert!(dir.path().join("warden.db").exists());
}

#[path = "../../crates/store/tests/store/postgres.rs"]
mod postgres;

use postgres::PostgresCluster;

/// A private cluster of this test's own (so that it can be cut), started off the runtime.
async fn own_cluster() -> std::sync::Arc<PostgresCluster> {
    tokio::task::spawn_blocking(|| std::sync::Arc::new(PostgresCluster::start_new()))
        .await
        .expect("postgres starts")
}

async fn new_database(cluster: &std::sync::Arc<PostgresCluster>) -> String {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || cluster.database())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_records_history_and_keeps_it_across_restarts() {
    let cluster = own_cluster().await;
    let url = new_database(&cluster).await;
    records_and_serves_history(&url).await;
}

/// Sampling ticks of the fleet in [start, end), counted in the store.
async fn ticks(client: &mut HistoryClient<Channel>, start: SystemTime, end: SystemTime) -> f64 {
    let response = client
        .query_history(pb::QueryHistoryRequest {
            subjects: vec![pb::Subject {
                kind: Some(pb::subject::Kind::Fleet(true)),
            }],
            metrics: vec!["alive_workers".into()],
            start: Some(start.into()),
            end: Some(end.into()),
            aggregation: pb::Aggregation::Count.into(),
            step: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("history answers")
        .into_inner();
    response.series[0].points.iter().map(|p| p.value).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_degrades_and_loses_no_sample_within_the_buffer() {
    let cluster = own_cluster().await;
    let url = new_database(&cluster).await;
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _worker = CeleryWorker::start(&broker, "w1@outage", WorkerOptions::default());
    let warden = TestWarden::start(history_config(&broker, &url)).await;
    let metrics = warden.metrics().clone();
    let client = warden.client().await;
    let mut history = history_client(&warden).await;
    eventually(
        Duration::from_secs(30),
        "samples of the worker written",
        || {
            let mut client = client.clone();
            let mut history = history.clone();
            async move {
                find(&list(&mut client, false).await, "w1@outage")?;
                let now = SystemTime::now();
                (ticks(&mut history, now - Duration::from_secs(60), now).await >= 2.0).then_some(())
            }
        },
    )
    .await;

    // Cut the database.
    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();
    let outage_start = SystemTime::now();
    let failed_before = metrics.store_write_count("error");
    eventually(
        Duration::from_secs(30),
        "writes failing and buffered",
        || {
            let metrics = metrics.clone();
            async move { (metrics.store_write_count("error") >= failed_before + 3).then_some(()) }
        },
    )
    .await;
    // The live fleet is served, and not stale: the store is nobody's source of evidence.
    let live = list(&mut client.clone(), false).await;
    let w = find(&live, "w1@outage").expect("still listed");
    assert_eq!(w.lifecycle(), pb::Lifecycle::Alive);
    assert!(!w.stale, "{w:?}");
    let store_source = live
        .freshness
        .as_ref()
        .unwrap()
        .sources
        .iter()
        .find(|s| s.source == "store")
        .expect("the store is listed as a source");
    assert!(!store_source.available);
    // History says what is wrong.
    let err = history
        .query_history(pb::QueryHistoryRequest {
            subjects: vec![worker_subject("w1@outage")],
            metrics: vec!["alive_workers".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("store"), "{err:?}");

    // Bring it back: the buffer drains, and the outage left no gap in the samples.
    let starting = cluster.clone();
    tokio::task::spawn_blocking(move || starting.start())
        .await
        .unwrap();
    let outage_end = SystemTime::now();
    eventually(Duration::from_secs(30), "the buffer drained", || {
        let metrics = metrics.clone();
        async move {
            let text = metrics.encode();
            text.lines()
                .any(|l| l == "warden_store_buffered_rows 0")
                .then_some(())
        }
    })
    .await;
    let outage = outage_end
        .duration_since(outage_start)
        .unwrap()
        .as_secs_f64();
    let counted = ticks(&mut history, outage_start, outage_end).await;
    assert!(
        counted >= outage.floor() - 1.0,
        "{counted} ticks over a {outage:.1} s outage at one per second"
    );
    assert_eq!(metrics.store_rows_dropped(), 0);
    warden.stop().await;
}

#[test]
fn migrate_applies_the_schema_idempotently_and_hides_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("history.db").display());
    for _ in 0..2 {
        let (ok, stdout, stderr) = run_blocking(Command::new(env!("CARGO_BIN_EXE_warden")).args([
            "migrate",
            "--database-url",
            &url,
        ]));
        assert!(ok, "{stderr}");
        assert!(stdout.contains("migrations applied"), "{stdout}");
    }
    assert!(dir.path().join("history.db").exists());
    // A database warden cannot use is refused with its reason, without the password.
    let (ok, _, stderr) = run_blocking(Command::new(env!("CARGO_BIN_EXE_warden")).args([
        "migrate",
        "--database-url",
        "postgres://warden:s3cret@127.0.0.1:1/warden",
    ]));
    assert!(!ok);
    assert!(!stderr.contains("s3cret"), "{stderr}");
    assert!(
        stderr.contains("unavailable") || stderr.contains("refused"),
        "{stderr}"
    );
}
