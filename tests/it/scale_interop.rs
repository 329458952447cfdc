//! A large fleet through default-configured clients: a 10,000-worker WatchFleet snapshot
//! (with task statistics, several MiB in all) and a 1,000-worker ListWorkers page arrive
//! through the real grpcurl, a Python client generated from proto/ and tonic's own client,
//! each with its default 4 MiB message limit. The fleet is fed to warden directly (10,000
//! Celery processes do not fit on a test machine); everything after the fleet is real.
use std::{process::Command, time::Duration};

use crate::support::*;
use prost::Message as _;
use serde_json::Value;
use tokio::io::AsyncReadExt as _;
use tokio_stream::StreamExt as _;
use warden::{
    fleet::{
        Backend, ConsumedQueue, EventPayload, FleetEvent, InspectReport, InspectRound, Pool,
        TaskObservation, TaskOutcome, WorkerKey, WorkerStats, owner::FleetMessage,
    },
    proto::v1::{self as pb, watch_fleet_response::Event},
};

const WORKERS: usize = 10_000;
/// gRPC's default limit on a received message, in grpcurl, grpcio and tonic alike.
const DEFAULT_LIMIT: usize = 4 << 20;

fn name(i: usize) -> String {
    format!("worker-{i:05}@host-{:03}.example.internal", i % 500)
}

/// A fleet like a real one: pools, queues, registered tasks, task statistics for three
/// task names per worker.
async fn big_fleet() -> (TestWarden, String, Port) {
    // No broker is needed (nobody listens on a reserved port): the fleet is fed directly.
    let nobody = reserve_port();
    let mut config = test_config(&format!("redis://127.0.0.1:{}/0", nobody.get()));
    config.broker_timeout = Duration::from_millis(200);
    config.max_workers = 20_000;
    let warden = TestWarden::start(config).await;
    let fleet = warden.warden.as_ref().unwrap().fleet.clone();
    let registered: Vec<String> = (0..20).map(|t| format!("app.tasks.task_{t}")).collect();
    let reports = (0..WORKERS)
        .map(|i| InspectReport {
            name: name(i),
            ping: true,
            stats: Some(WorkerStats {
                pid: Some(10_000 + i as u32),
                uptime: Some(Duration::from_secs(3600)),
                pool: Some(Pool {
                    implementation: "prefork".into(),
                    max_concurrency: 8,
                    processes: (0..8).map(|p| 20_000 + p).collect(),
                    max_tasks_per_child: 0,
                }),
                processed_by_task: registered.iter().map(|t| (t.clone(), 17)).collect(),
                prefetch_count: Some(32),
                cpu_seconds: None,
            }),
            queues: Some(vec![ConsumedQueue {
                name: format!("queue-{}", i % 7),
                exchange: format!("queue-{}", i % 7),
                routing_key: format!("queue-{}", i % 7),
            }]),
            registered: Some(registered.clone()),
            active: Some(Vec::new()),
        })
        .collect();
    fleet
        .observe(FleetMessage::Inspect(InspectRound {
            backend: Backend::Celery,
            scope: "default".into(),
            started_at: std::time::SystemTime::now(),
            targets: Some(Vec::new()),
            reports,
        }))
        .await
        .unwrap();
    for chunk in (0..WORKERS).collect::<Vec<_>>().chunks(500) {
        let mut events = Vec::new();
        for &i in chunk {
            let worker = WorkerKey::new(Backend::Celery, "default", name(i));
            for t in 0..3 {
                for outcome in [TaskOutcome::Received, TaskOutcome::Succeeded] {
                    events.push(FleetEvent {
                        worker: worker.clone(),
                        payload: EventPayload::Task(TaskObservation {
                            outcome,
                            id: format!("{i}-{t}"),
                            name: Some(format!("app.tasks.task_{t}")),
                            timestamp: None,
                            runtime: Some(Duration::from_millis(40 + t * 10)),
                        }),
                    });
                }
            }
        }
        fleet.observe(FleetMessage::Events(events)).await.unwrap();
    }
    fleet.barrier().await.unwrap();
    // Task statistics are folded into the snapshot on the owner's next tick.
    eventually(
        Duration::from_secs(20),
        "task statistics summarised",
        || {
            let fleet = fleet.clone();
            async move {
                let snapshot = fleet.snapshot();
                (snapshot.workers.len() == WORKERS
                    && snapshot.workers.values().all(|w| w.task_stats.is_some()))
                .then_some(())
            }
        },
    )
    .await;
    let addr = warden.grpc_url.trim_start_matches("http://").to_string();
    (warden, addr, nobody)
}

/// Python modules generated from proto/ into a temporary directory.
async fn generated_python() -> tempfile::TempDir {
    let generated = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run(Command::new(venv().join("bin/python"))
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(repo().join("proto"))
        .arg(format!("--python_out={}", generated.path().display()))
        .arg(format!("--grpc_python_out={}", generated.path().display()))
        .args(["warden/v1/common.proto", "warden/v1/worker_health.proto"]))
    .await;
    assert!(ok, "protoc failed: {stderr}");
    generated
}

async fn python(generated: &tempfile::TempDir, args: &[&str]) -> Value {
    let (ok, stdout, stderr) = run(Command::new(venv().join("bin/python"))
        .arg(python_dir().join("scale_client.py"))
        .arg(generated.path())
        .args(args))
    .await;
    assert!(ok, "python client failed: {stderr}");
    serde_json::from_str(stdout.trim()).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10000_worker_snapshot_and_a_1000_worker_page_fit_default_clients() {
    let (warden, addr, _nobody) = big_fleet().await;

    // tonic's client, default limits: the snapshot is larger than one message may be, and
    // arrives in chunks that each fit.
    let mut client = warden.client().await;
    let mut stream = client
        .watch_fleet(pb::WatchFleetRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut total = 0;
    let mut largest = 0;
    let mut workers = 0;
    let mut messages = 0;
    loop {
        let message = stream
            .next()
            .await
            .unwrap()
            .expect("fits the default limit");
        let size = message.encoded_len();
        messages += 1;
        total += size;
        largest = largest.max(size);
        match message.event {
            Some(Event::SnapshotChunk(c)) => workers += c.workers.len(),
            Some(Event::SnapshotEnd(_)) => break,
            _ => {}
        }
    }
    drop(stream);
    assert_eq!(workers, WORKERS);
    assert!(
        total > DEFAULT_LIMIT,
        "the test must exceed one message's limit to prove anything: {total} bytes"
    );
    assert!(
        largest < DEFAULT_LIMIT / 2,
        "largest message {largest} bytes"
    );
    eprintln!(
        "snapshot of {WORKERS} workers: {total} bytes in {messages} messages, largest {largest} bytes"
    );

    // The Python client generated from proto/, grpcio's defaults.
    let generated = generated_python().await;
    let watched = python(&generated, &[&addr, "watch"]).await;
    assert_eq!(watched["workers"], WORKERS, "{watched}");
    assert_eq!(watched["reason"], "SNAPSHOT_REASON_INITIAL");
    assert_eq!(watched["ended_with_token"], true);
    let page = python(&generated, &[&addr, "list", "1000"]).await;
    assert_eq!(page["workers"], 1000, "{page}");
    assert_eq!(page["total_size"], WORKERS);
    assert_eq!(page["next_page_token"], true);

    // The real grpcurl: a page of 1000, then the snapshot of the stream (read until its end).
    let grpcurl = venv().join("bin/grpcurl");
    let (ok, stdout, stderr) = run(Command::new(&grpcurl).args([
        "-plaintext",
        "-d",
        r#"{"pageSize": 1000}"#,
        &addr,
        "warden.v1.WorkerHealth/ListWorkers",
    ]))
    .await;
    assert!(ok, "{stderr}");
    let page: Value = serde_json::from_str(&stdout).expect("grpcurl prints JSON");
    assert_eq!(page["workers"].as_array().unwrap().len(), 1000);

    let mut child = tokio::process::Command::new(&grpcurl)
        .args([
            "-plaintext",
            "-d",
            "{}",
            &addr,
            "warden.v1.WorkerHealth/WatchFleet",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut output = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = vec![0; 1 << 16];
        loop {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "grpcurl ended early:\n{}", tail(&output));
            output.push_str(&String::from_utf8_lossy(&buf[..n]));
            if output.contains("\"snapshotEnd\"") {
                return;
            }
        }
    })
    .await
    .expect("grpcurl prints the whole snapshot within 60 s");
    child.kill().await.unwrap();
    let mut seen = 0;
    // The last object may be cut where the read stopped; every complete one counts.
    for message in serde_json::Deserializer::from_str(&output).into_iter::<Value>() {
        let Ok(message) = message else { break };
        if let Some(chunk) = message.get("snapshotChunk") {
            seen += chunk["workers"].as_array().map_or(0, Vec::len);
        }
    }
    assert_eq!(seen, WORKERS);
    warden.stop().await;
}

fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(2000)..]
}
