//! One health cycle over 10,000 workers (issue 18 target: < 50 ms).
//!
//! Realistic data: every worker has task statistics (3 task names, the three windows), a
//! baseline, resources (CPU, memory and its limit, disk) and two of 40 queues (half of them
//! holding messages); 20 groups, a group override and a name-pattern override; a few percent
//! of workers are unhealthy (CPU, error rate, slow tasks, late heartbeat, memory rising,
//! missing queues) so that findings and their messages are built. The evaluator is warmed with 20 cycles (10 min of samples at
//! 30 s, so every forecast fits 20 points) before the measured cycles, which then run on the
//! last snapshot.
//!
//! Also measured: what the fleet owner spends applying one cycle's 10,000 verdicts
//! (`FleetState::apply_health` + `commit`), the other half of a cycle's cost.
//!
//! Run: `cargo bench -p warden-health --bench health_cycle`
use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use imbl::{OrdMap, Vector};
use warden_core::{
    Backend, ConsumedQueue, InspectReport, InspectRound, Pool, QueueInfo, ResourceUsage,
    SourceStatus, TaskStats, Thresholds, WindowReport, Worker, WorkerKey, WorkerStats,
    perf::{Counts, DistributionReport, TaskTotals},
    state::{FleetState, Snapshot},
};
use warden_health::{Baseline, Baselines, Evaluator, HealthConfig, Override, Settings};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKERS: usize = 10_000;
const QUEUES: usize = 40;
const GROUPS: usize = 20;
const TASKS: [&str; 3] = [
    "app.tasks.resize_image",
    "app.tasks.send_email",
    "app.tasks.sync_account",
];
const WARMUP_CYCLES: u64 = 20;
const START: u64 = 1_700_000_000;
const MIB: u64 = 1024 * 1024;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(START + secs)
}

fn report(window_secs: u32, finished: u32, failed: u32, p95: f32) -> WindowReport {
    let scale = window_secs / 60;
    let runtime = DistributionReport {
        count: u64::from(finished * scale),
        mean: p95 / 2.0,
        min: 0.01,
        max: p95 * 1.5,
        p50: p95 / 2.0,
        p90: p95 * 0.9,
        p95,
        p99: p95 * 1.2,
    };
    WindowReport {
        window_secs,
        covered_secs: window_secs,
        counts: Counts {
            received: finished * scale,
            started: finished * scale,
            succeeded: (finished - failed) * scale,
            failed: failed * scale,
            ..Default::default()
        },
        runtime,
        queue_wait: runtime,
    }
}

fn task_stats(i: usize, cycle: u64) -> Arc<TaskStats> {
    // 2 % of workers fail a quarter of their tasks; 1 % run 2.5 times slower than usual.
    let failed = if i % 50 == 7 { 15 } else { (i % 3) as u32 };
    let p95 = if i % 100 == 13 { 1.0 } else { 0.4 };
    let windows = [
        report(60, 60, failed, p95),
        report(300, 60, failed, p95),
        report(3600, 60, failed, p95),
    ];
    Arc::new(TaskStats {
        overall: windows,
        by_task: TASKS
            .iter()
            .map(|t| (Arc::from(*t), [report(60, 20, 0, 0.4); 3]))
            .collect(),
        totals: TASKS
            .iter()
            .map(|t| {
                let n = 1000 + cycle * 30;
                (
                    Arc::from(*t),
                    TaskTotals {
                        received: n,
                        started: n,
                        succeeded: n - 5,
                        failed: 5,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    })
}

fn worker(i: usize, cycle: u64, registered: &Arc<Vec<String>>) -> Worker {
    let now = cycle * 30;
    let key = WorkerKey::new(
        Backend::Celery,
        "redis://broker:6379/0",
        format!("w{i}@host{}", i % 200),
    );
    let mut w = Worker::new(key, at(0));
    w.group = Arc::from(format!("group-{}", i % GROUPS));
    // 1 % of workers are 40 s late.
    w.last_seen = at(if i % 100 == 3 {
        now.saturating_sub(40)
    } else {
        now.saturating_sub(1)
    });
    w.last_heartbeat = Some(w.last_seen);
    w.heartbeat_interval = Some(Duration::from_secs(2));
    w.started_at = Some(at(0));
    w.pid = Some(1000 + i as u32);
    w.active_tasks = (i % 4) as u32;
    w.processed_total = 3000 + cycle * 90;
    w.pool = Some(Pool {
        implementation: "prefork".into(),
        max_concurrency: 4,
        processes: vec![1, 2, 3, 4],
        max_tasks_per_child: 0,
    });
    w.queues = vec![
        ConsumedQueue {
            name: format!("queue-{}", i % QUEUES),
            exchange: "celery".into(),
            routing_key: "celery".into(),
        },
        ConsumedQueue {
            name: format!("queue-{}", (i + 1) % QUEUES),
            exchange: "celery".into(),
            routing_key: "celery".into(),
        },
    ];
    w.registered = registered.clone();
    w.task_stats = Some(task_stats(i, cycle));
    // 3 % run hot; 1 % grow their memory 32 MiB per sample towards a 2 GiB limit.
    let cpu = if i % 33 == 5 {
        390.0
    } else {
        40.0 + (i % 50) as f64
    };
    let memory = if i % 100 == 11 {
        1024 * MIB + cycle * 32 * MIB
    } else {
        600 * MIB + (i as u64 % 7) * MIB
    };
    w.resources = Some(Arc::new(ResourceUsage {
        source: "prometheus",
        sampled_at: at(now),
        cpu_percent: Some(cpu),
        memory_bytes: Some(memory),
        memory_limit_bytes: Some(2048 * MIB),
        gpu_util_percent: None,
        gpu_memory_percent: None,
        disk_percent: Some(40.0),
    }));
    w
}

fn snapshot(cycle: u64, registered: &Arc<Vec<String>>) -> Snapshot {
    let workers: OrdMap<WorkerKey, Arc<Worker>> = (0..WORKERS)
        .map(|i| {
            let w = worker(i, cycle, registered);
            (w.key.clone(), Arc::new(w))
        })
        .collect();
    let queues = (0..QUEUES)
        .map(|q| {
            let depth = if q % 2 == 0 { 120 } else { 0 };
            let info = QueueInfo {
                name: format!("queue-{q}"),
                backend: Backend::Celery,
                depth,
                lag: None,
                oldest_pending_age: None,
                by_priority: vec![(0, depth)],
                unacked: 3,
                consumers: Vec::new(),
                updated_at: at(cycle * 30),
            };
            ((Backend::Celery, info.name.clone()), Arc::new(info))
        })
        .collect();
    let sources = [
        SourceStatus {
            connected: true,
            reason: String::new(),
            last_ok: Some(at(cycle * 30)),
            ..SourceStatus::unknown()
        },
        SourceStatus {
            connected: true,
            reason: String::new(),
            last_ok: Some(at(cycle * 30)),
            ..SourceStatus::unknown_source("prometheus", Vec::new())
        },
    ]
    .into_iter()
    .map(|s| (s.source, s))
    .collect();
    Snapshot {
        epoch: 1,
        revision: cycle,
        at: at(cycle * 30),
        workers,
        queues,
        recent: Vector::new(),
        sources,
        workers_refused: 0,
        tasks_sent: Default::default(),
    }
}

fn baselines(snapshot: &Snapshot) -> Baselines {
    Baselines {
        computed_at: Some(snapshot.at),
        workers: snapshot
            .workers
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    Baseline {
                        p95_runtime_secs: Some(0.35),
                        throughput_per_min: Some(55.0),
                    },
                )
            })
            .collect(),
    }
}

fn config() -> HealthConfig {
    HealthConfig {
        overrides: vec![
            Override {
                group: Some("group-3".into()),
                cpu_warning: Some(90.0),
                expected_queues: Some(vec!["queue-3".into(), "queue-4".into()]),
                ..Default::default()
            },
            Override {
                worker: Some("w1*@host1*".into()),
                stalled_after: Some(Duration::from_secs(120)),
                ..Default::default()
            },
        ],
        defaults: Settings {
            memory_bytes: Some(3 << 30),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn health_cycle(c: &mut Criterion) {
    let registered: Arc<Vec<String>> =
        Arc::new((0..20).map(|i| format!("app.tasks.t{i}")).collect());
    let mut evaluator = Evaluator::new(&config()).expect("valid config");
    let mut last = None;
    for cycle in 0..=WARMUP_CYCLES {
        let snap = snapshot(cycle, &registered);
        let b = baselines(&snap);
        evaluator.evaluate(&snap, &b, at(cycle * 30));
        last = Some((snap, b));
    }
    let (snap, b) = last.expect("warmed up");
    let now = at(WARMUP_CYCLES * 30);

    // One cycle timed by hand too, with what it found (to see the data is realistic).
    let started = Instant::now();
    let verdicts = evaluator.evaluate(&snap, &b, now);
    let took = started.elapsed();
    let s = evaluator.summary();
    let findings: usize = verdicts.iter().map(|(_, h)| h.findings.len()).sum();
    println!(
        "one cycle: {took:?} for {} workers ({} healthy, {} warning, {} critical; {findings} \
         findings; {} failed checks)",
        s.evaluated, s.healthy, s.warning, s.critical, s.failed_checks
    );
    let mut by_check = std::collections::BTreeMap::<&str, usize>::new();
    for f in verdicts.iter().flat_map(|(_, h)| &h.findings) {
        *by_check.entry(f.check).or_default() += 1;
    }
    println!("findings by check: {by_check:?}");
    assert_eq!(s.evaluated, WORKERS);
    assert!(s.warning > 0 && s.critical > 0, "{s:?}");
    drop(verdicts);

    let mut group = c.benchmark_group("health");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("evaluate_10k_workers", |bench| {
        bench.iter(|| black_box(evaluator.evaluate(black_box(&snap), &b, now)))
    });
    group.finish();
}

/// The owner's side: 10,000 workers known (from one inspect round), one cycle's verdicts
/// applied and committed.
fn apply_verdicts(c: &mut Criterion) {
    let thresholds = Thresholds {
        warning: Duration::from_secs(30),
        critical: Duration::from_secs(60),
    };
    let mut state = FleetState::new(at(0));
    let registered: Vec<String> = (0..20).map(|i| format!("app.tasks.t{i}")).collect();
    let round = InspectRound {
        backend: Backend::Celery,
        scope: Arc::from("redis://broker:6379/0"),
        started_at: at(0),
        targets: None,
        reports: (0..WORKERS)
            .map(|i| InspectReport {
                name: format!("w{i}@host{}", i % 200),
                ping: true,
                stats: Some(WorkerStats {
                    pid: Some(1000 + i as u32),
                    uptime: Some(Duration::from_secs(600)),
                    pool: None,
                    processed_by_task: TASKS.iter().map(|t| (t.to_string(), 1000)).collect(),
                    prefetch_count: Some(16),
                    cpu_seconds: None,
                }),
                active: Some(Vec::new()),
                queues: Some(vec![ConsumedQueue {
                    name: format!("queue-{}", i % QUEUES),
                    exchange: "celery".into(),
                    routing_key: "celery".into(),
                }]),
                registered: Some(registered.clone()),
            })
            .collect(),
    };
    state.apply_inspect(&round, at(1), thresholds);
    state.commit(at(1));
    let snap = state.snapshot().clone();
    let mut evaluator = Evaluator::new(&HealthConfig::default()).expect("valid config");
    let verdicts = evaluator.evaluate(&snap, &Baselines::default(), at(5));
    assert_eq!(verdicts.len(), WORKERS);
    // The first application changes every verdict; later ones are the same verdicts again
    // (the common case: only `evaluated_at` moves), measured here.
    state.apply_health(verdicts.clone());
    state.commit(at(5));
    let mut group = c.benchmark_group("health");
    group.sample_size(20);
    group.bench_function("owner_applies_10k_verdicts", |bench| {
        bench.iter_batched(
            || verdicts.clone(),
            |v| {
                state.apply_health(v);
                black_box(state.commit(at(5)))
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, health_cycle, apply_verdicts);
criterion_main!(benches);
