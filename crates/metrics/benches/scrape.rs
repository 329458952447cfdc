//! `/metrics` for a large fleet: 1,000 Celery workers, each with totals for 20 task names (and
//! a health verdict and resource figures), rendered as Prometheus text and as OpenMetrics.
//! Prints the size of one scrape; criterion measures the time.
//!
//! `cargo bench -p warden-metrics --bench scrape`
use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, SystemTime},
};

use criterion::{Criterion, criterion_group, criterion_main};
use warden_core::{
    model::{Backend, Health, HealthStatus, ResourceUsage, TaskStats, Worker, WorkerKey},
    perf::{RUNTIME_BUCKETS, TaskTotals, WindowReport},
    state::{FleetState, Snapshot},
};
use warden_metrics::{
    Metrics,
    fleet::{ExportOptions, Format},
};

const WORKERS: usize = 1_000;
const TASK_NAMES: usize = 20;

fn fleet() -> Snapshot {
    let now = SystemTime::now();
    let mut snapshot = FleetState::with_limits(now, 1, WORKERS * 2)
        .snapshot()
        .clone();
    for i in 0..WORKERS {
        let key = WorkerKey::new(Backend::Celery, "", format!("celery@worker-{i:04}"));
        let mut w = Worker::new(key, now);
        let totals = (0..TASK_NAMES)
            .map(|t| {
                let mut totals = TaskTotals {
                    received: 1000 + t as u64,
                    started: 1000,
                    succeeded: 990,
                    failed: 10,
                    runtime_sum: 123.4,
                    ..TaskTotals::default()
                };
                for (b, slot) in totals.runtime_buckets.iter_mut().enumerate() {
                    *slot = (b * 7) as u64;
                }
                (Arc::<str>::from(format!("app.tasks.task_{t:02}")), totals)
            })
            .collect();
        w.task_stats = Some(Arc::new(TaskStats {
            overall: [WindowReport::default(); 3],
            by_task: Vec::new(),
            totals,
        }));
        w.health = Some(Health {
            status: HealthStatus::Healthy,
            score: 0.97,
            findings: Vec::new(),
            passing: Vec::new(),
            evaluated_at: now,
        });
        w.resources = Some(Arc::new(ResourceUsage {
            source: "prometheus",
            sampled_at: now - Duration::from_secs(5),
            cpu_percent: Some(42.5),
            memory_bytes: Some(300 << 20),
            memory_limit_bytes: Some(1 << 30),
            gpu_util_percent: None,
            gpu_memory_percent: None,
            disk_percent: None,
        }));
        w.active_tasks = 3;
        snapshot.workers.insert(w.key.clone(), Arc::new(w));
    }
    snapshot
}

fn scrape(c: &mut Criterion) {
    assert_eq!(RUNTIME_BUCKETS.len(), 14);
    let snapshot = fleet();
    let metrics = Metrics::new();
    for (label, options) in [
        ("hostname", ExportOptions::default()),
        (
            "no_hostname",
            ExportOptions {
                task_hostname: false,
                ..ExportOptions::default()
            },
        ),
    ] {
        for (format_name, format) in [("text", Format::Text), ("openmetrics", Format::OpenMetrics)]
        {
            let body = metrics.exposition(Some((&snapshot, options)), format);
            println!(
                "scrape {label}/{format_name}: {} bytes, {} lines",
                body.len(),
                body.lines().count()
            );
            c.bench_function(&format!("scrape_1000x20/{label}/{format_name}"), |b| {
                b.iter(|| black_box(metrics.exposition(Some((&snapshot, options)), format)))
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = scrape
}
criterion_main!(benches);
