//! Fleet at scale (10,000 workers), in-process and over loopback gRPC:
//! - ListWorkers, page of 500: latency percentiles;
//! - memory of the fleet state (RSS growth while it is built, and the perf records' own count);
//! - one change delivered to 100 WatchFleet watchers: time until the last one has it.
//!
//! Not a criterion bench: it reports percentiles and memory, which criterion does not.
//! Run: `cargo bench --bench fleet_scale`.
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio_stream::StreamExt as _;
use tonic::Request;
use warden::{
    config::{Config, Secret},
    fleet::{
        Backend, ConsumedQueue, EventPayload, FleetEvent, InspectReport, InspectRound, Pool,
        TaskObservation, TaskOutcome, WorkerStats, owner::FleetMessage,
    },
    proto::v1::{self as pb, worker_health_client::WorkerHealthClient},
    server::Warden,
};

/// The allocator the warden binary uses, so that figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKERS: usize = 10_000;
const WATCHERS: usize = 100;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name}: n={} p50={:?} p90={:?} p99={:?} max={:?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

fn round(now: SystemTime) -> InspectRound {
    let registered: Vec<String> = (0..20).map(|i| format!("app.tasks.task_{i}")).collect();
    InspectRound {
        backend: Backend::Celery,
        scope: "default".into(),
        started_at: now,
        targets: None,
        reports: (0..WORKERS)
            .map(|i| InspectReport {
                name: format!("worker-{i:05}@host-{}", i % 100),
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
                    processed_by_task: registered
                        .iter()
                        .take(3)
                        .map(|t| (t.clone(), 100))
                        .collect(),
                    prefetch_count: Some(32),
                    cpu_seconds: None,
                }),
                active: Some(Vec::new()),
                queues: Some(vec![ConsumedQueue {
                    name: format!("queue-{}", i % 10),
                    exchange: "celery".into(),
                    routing_key: format!("queue-{}", i % 10),
                }]),
                registered: Some(registered.clone()),
            })
            .collect(),
    }
}

/// Thirty tasks (received, started, succeeded) of three task names for one worker.
fn task_events(i: usize, now: SystemTime) -> Vec<FleetEvent> {
    let worker = warden::fleet::WorkerKey::new(
        Backend::Celery,
        "default",
        format!("worker-{i:05}@host-{}", i % 100),
    );
    let mut events = Vec::with_capacity(90);
    for t in 0..30 {
        let id = format!("{i}-{t}");
        for (outcome, runtime) in [
            (TaskOutcome::Received, None),
            (TaskOutcome::Started, None),
            (
                TaskOutcome::Succeeded,
                Some(Duration::from_millis(20 + (t * 7) as u64 % 200)),
            ),
        ] {
            events.push(FleetEvent {
                worker: worker.clone(),
                payload: EventPayload::Task(TaskObservation {
                    outcome,
                    id: id.clone(),
                    name: Some(format!("app.tasks.task_{}", t % 3)),
                    timestamp: Some(now),
                    runtime,
                }),
            });
        }
    }
    events
}

/// Heap held by one busy worker's task records once every window slot is in use: an hour of
/// one task per second, three task names, runtimes spread over a decade.
fn steady_state_perf_bytes() -> usize {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut perf = warden::fleet::perf::WorkerPerf::default();
    for s in 0..3600u64 {
        let now = start + Duration::from_secs(s);
        let id = format!("t{s}");
        for (outcome, runtime) in [
            (TaskOutcome::Received, None),
            (TaskOutcome::Started, None),
            (
                TaskOutcome::Succeeded,
                Some(Duration::from_millis(20 + (s * 37) % 200)),
            ),
        ] {
            perf.record(
                &TaskObservation {
                    outcome,
                    id: id.clone(),
                    name: Some(format!("app.tasks.task_{}", s % 3)),
                    timestamp: Some(now),
                    runtime,
                },
                now,
            );
        }
    }
    perf.heap_bytes()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let steady = steady_state_perf_bytes();
    println!(
        "memory: one busy worker's task records in steady state (every slot in use): {:.1} KiB heap; x {WORKERS} = {:.0} MiB",
        steady as f64 / 1024.0,
        (steady * WORKERS) as f64 / 1048576.0
    );
    let rss_start = rss_bytes();
    // No broker: nothing else changes the fleet while we measure.
    let config = Config {
        broker_url: Secret::new("redis://127.0.0.1:1/0"),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        broker_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let warden = Warden::start(config).await.expect("warden starts");
    let fleet = warden.fleet.clone();
    let now = SystemTime::now();
    let built = Instant::now();
    fleet
        .observe(FleetMessage::Inspect(round(now)))
        .await
        .unwrap();
    fleet.barrier().await.unwrap();
    let rss_workers = rss_bytes();
    println!(
        "memory: {WORKERS} workers from inspect data (20 registered tasks, pool, queue): RSS +{:.1} MiB",
        rss_workers.saturating_sub(rss_start) as f64 / 1048576.0
    );
    // Streamed a worker at a time, so that no large temporary inflates the RSS figure.
    for i in 0..WORKERS {
        fleet
            .observe(FleetMessage::Events(task_events(i, now)))
            .await
            .unwrap();
    }
    fleet.barrier().await.unwrap();
    // Let the owner fold task statistics into the snapshot (once a second).
    let mut snapshots = fleet.snapshots();
    while snapshots
        .borrow_and_update()
        .workers
        .values()
        .filter(|w| w.task_stats.is_some())
        .count()
        < WORKERS
    {
        snapshots.changed().await.unwrap();
    }
    println!(
        "built a fleet of {WORKERS} workers (with task stats) in {:?}",
        built.elapsed()
    );
    let rss_fleet = rss_bytes();
    println!(
        "memory: + task statistics (30 tasks of 3 names per worker): RSS +{:.1} MiB; total growth {:.1} MiB (RSS now {:.1} MiB)",
        rss_fleet.saturating_sub(rss_workers) as f64 / 1048576.0,
        rss_fleet.saturating_sub(rss_start) as f64 / 1048576.0,
        rss_fleet as f64 / 1048576.0
    );

    // ListWorkers in-process: the service handler itself, no transport.
    let service = warden::api::worker_health::WorkerHealthService::new(
        fleet.clone(),
        None,
        Duration::from_secs(1),
        Duration::from_secs(15),
        tokio_util::task::TaskTracker::new(),
    );
    use warden::proto::v1::worker_health_server::WorkerHealth as _;
    let mut samples = Vec::new();
    for i in 0..2000 {
        let request = pb::ListWorkersRequest {
            page_size: 500,
            order_by: if i % 2 == 0 {
                pb::WorkerOrder::Name
            } else {
                pb::WorkerOrder::ProcessedTasks
            }
            .into(),
            ..Default::default()
        };
        let start = Instant::now();
        let response = service
            .list_workers(Request::new(request))
            .await
            .unwrap()
            .into_inner();
        samples.push(start.elapsed());
        assert_eq!(response.workers.len(), 500);
    }
    report("ListWorkers page=500 in-process", samples);

    // The same over loopback gRPC (encode, HTTP/2, decode).
    let mut client = WorkerHealthClient::connect(format!("http://{}", warden.grpc_addr))
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20);
    let mut samples = Vec::new();
    for _ in 0..500 {
        let start = Instant::now();
        let response = client
            .list_workers(pb::ListWorkersRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        samples.push(start.elapsed());
        assert_eq!(response.workers.len(), 500);
    }
    report("ListWorkers page=500 over gRPC", samples);

    // 100 watchers over gRPC; one change; time until every watcher has it.
    let mut streams = Vec::new();
    for _ in 0..WATCHERS {
        let mut stream = client
            .watch_fleet(pb::WatchFleetRequest {
                filter: Some(pb::WorkerFilter {
                    name_glob: "worker-0000*".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // The snapshot: begin, chunks, end.
        while !matches!(
            stream.next().await.unwrap().unwrap().event,
            Some(pb::watch_fleet_response::Event::SnapshotEnd(_))
        ) {}
        streams.push(stream);
    }
    let mut deliveries = Vec::new();
    for round_no in 0..20u32 {
        let sent = Instant::now();
        let change = InspectRound {
            backend: Backend::Celery,
            scope: "default".into(),
            started_at: SystemTime::now(),
            targets: Some(vec!["worker-00001@host-1".into()]),
            reports: vec![InspectReport {
                name: "worker-00001@host-1".into(),
                ping: true,
                active: Some(
                    (0..=round_no % 3)
                        .map(|k| warden::fleet::ActiveTask {
                            id: format!("t{round_no}-{k}"),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }],
        };
        fleet.observe(FleetMessage::Inspect(change)).await.unwrap();
        let waits = streams.iter_mut().map(|s| async move {
            loop {
                let m = s.next().await.unwrap().unwrap();
                if matches!(
                    m.event,
                    Some(pb::watch_fleet_response::Event::WorkerUpdated(_))
                ) {
                    return;
                }
            }
        });
        futures_join_all(waits).await;
        deliveries.push(sent.elapsed());
    }
    report(
        "one change delivered to all 100 watchers (gRPC)",
        deliveries,
    );
    let _ = Arc::new(());
    warden.shutdown().await;
}

/// Awaits every future (no extra dependency for join_all).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    for f in set {
        f.await;
    }
}
