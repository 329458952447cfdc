//! A measurement, not a check (ignored by default): the writer's cost for 1,000 workers per
//! tick on both engines, with durable settings.
//!
//! `CARGO_TARGET_DIR=… cargo test --release -p warden-store --test store -- --ignored --nocapture write_throughput`
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use warden_core::{
    history::{GroupSample, HistoryStore, QueueSample, WriteBatch},
    model::{Backend, HealthStatus, WorkerKey},
    sketch::Sketch,
};
use warden_store::{Store, StoreOptions};

use crate::{
    postgres::PostgresCluster,
    support::{at, sample},
};

const WORKERS: usize = 1_000;
const BATCHES: usize = 60;
const TICK_MS: i64 = 30_000;

fn batch(tick: usize) -> WriteBatch {
    let at_ms = 1_700_000_000_000 + tick as i64 * TICK_MS;
    let mut b = WriteBatch::default();
    for w in 0..WORKERS {
        let key = WorkerKey::new(Backend::Celery, "default", format!("celery@worker-{w:04}"));
        let mut s = sample(&key, &format!("group-{}", w % 10), at_ms);
        s.active_tasks = (w % 8) as u32;
        s.processed_total = (tick * 30 + w) as u64;
        s.concurrency = Some(8);
        s.health = Some(HealthStatus::Healthy);
        s.tasks.received = 30;
        s.tasks.started = 30;
        s.tasks.succeeded = 29;
        s.tasks.failed = 1;
        let (mut runtime, mut wait) = (Sketch::default(), Sketch::default());
        for k in 0..30u64 {
            runtime.record(Duration::from_millis(20 + (k * 37 + w as u64) % 400));
            wait.record(Duration::from_millis(1 + (k * 13 + w as u64) % 50));
        }
        s.runtime = runtime;
        s.queue_wait = wait;
        s.cpu_percent = Some(12.5);
        s.memory_rss_bytes = Some(150_000_000);
        b.samples.workers.push(s);
    }
    for q in 0..10 {
        b.samples.queues.push(QueueSample {
            queue: format!("queue-{q}"),
            at: at(at_ms),
            depth: 100,
            unacked: 8,
            consumers: 100,
        });
        b.samples.groups.push(GroupSample {
            backend: Backend::Celery,
            group: Arc::from(format!("group-{q}")),
            at: at(at_ms),
            workers: 100,
            alive: 100,
        });
    }
    b
}

fn clock_ticks() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks, and its parent.
fn cpu(pid: &str) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ppid = fields[1].parse().ok()?;
    Some((
        fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?,
        ppid,
    ))
}

/// CPU ticks of a postmaster and its children (the server's backends and workers).
fn server_cpu(postmaster: u32) -> u64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().into_string().ok()?;
            let (ticks, ppid) = cpu(&pid)?;
            (pid == postmaster.to_string() || ppid == postmaster).then_some(ticks)
        })
        .sum()
}

async fn measure(engine: &str, store: &Store, server: Option<u32>) {
    let batches: Vec<WriteBatch> = (0..BATCHES).map(batch).collect();
    // One warm-up batch (statement preparation, first pages).
    store.write(&batch(BATCHES + 1)).await.unwrap();
    let hz = clock_ticks();
    let (me_before, server_before) = (cpu("self").unwrap().0, server.map(server_cpu));
    let mut times = Vec::with_capacity(BATCHES);
    let began = Instant::now();
    for b in &batches {
        let t = Instant::now();
        store.write(b).await.unwrap();
        times.push(t.elapsed());
    }
    let total = began.elapsed();
    let me = (cpu("self").unwrap().0 - me_before) as f64 / hz;
    times.sort();
    let rows = (BATCHES * WORKERS) as f64;
    let size = store.size().await.unwrap();
    // The rows written (the warm-up batch too): `size` estimates tables this large.
    let sample_rows = ((BATCHES + 1) * WORKERS) as f64;
    println!(
        "{engine}: {BATCHES} batches of {WORKERS} worker samples (+20 queue/group rows): \
         {:.0} worker rows/s; per batch mean {:.1} ms, p50 {:.1} ms, max {:.1} ms; \
         CPU per batch: this process {:.1} ms{}; {:.0} bytes on disk per worker-sample row \
         ({} bytes, {} rows)",
        rows / total.as_secs_f64(),
        total.as_secs_f64() * 1000.0 / BATCHES as f64,
        times[BATCHES / 2].as_secs_f64() * 1000.0,
        times[BATCHES - 1].as_secs_f64() * 1000.0,
        me * 1000.0 / BATCHES as f64,
        match (server, server_before) {
            (Some(pm), Some(before)) => format!(
                ", Postgres server {:.1} ms",
                (server_cpu(pm) - before) as f64 / hz * 1000.0 / BATCHES as f64
            ),
            _ => String::new(),
        },
        size.bytes as f64 / sample_rows,
        size.bytes,
        sample_rows,
    );
    println!(
        "{engine}: at one batch per 30 s that is {:.2} % of one core in this process",
        me / BATCHES as f64 / 30.0 * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --release -- --ignored --nocapture write_throughput"]
async fn write_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let sqlite = Store::connect(&url, StoreOptions::default()).await.unwrap();
    sqlite.migrate().await.unwrap();
    measure("sqlite", &sqlite, None).await;

    let cluster = tokio::task::spawn_blocking(|| {
        PostgresCluster::start_new_with(&[
            "fsync=on",
            "synchronous_commit=on",
            "full_page_writes=on",
        ])
    })
    .await
    .unwrap();
    let url = cluster.database();
    let postgres = Store::connect(&url, StoreOptions::default()).await.unwrap();
    postgres.migrate().await.unwrap();
    measure("postgres", &postgres, cluster.server_pid()).await;
}
