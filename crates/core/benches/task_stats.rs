//! Task records at fleet scale (issue 13 §7): 10,000 workers, each busy with 3 task names at
//! 1 task/s for 65 minutes of simulated time (explicit `now` values, time-major like a live
//! fleet: every worker's task of second s, then second s + 1), so that every slot of every
//! window holds something. Prints the heap held per worker (`WorkerPerf::heap_bytes`), the
//! process RSS before and after, and how far the reported percentiles are from the exact ones
//! computed from the raw samples (regenerated afterwards from the same seeds, so that they do
//! not weigh on the RSS figure); asserts that every count is exact.
//!
//! `CARGO_TARGET_DIR=/work/target-perf cargo bench -p warden-core --bench task_stats`
use std::{
    collections::HashMap,
    hint::black_box,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use mimalloc::MiMalloc;
use warden_core::perf::{TaskObservation, TaskOutcome, WINDOWS, WindowReport, WorkerPerf};

// As in the binary.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// `TASK_STATS_WORKERS` overrides (for profiling).
const WORKERS: usize = 10_000;
const NAMES: [&str; 3] = [
    "app.tasks.resize_image",
    "app.tasks.send_email",
    "app.tasks.sync_account",
];
/// 65 minutes: the 12 five-minute slots of the 1 h window all full when read at the end.
const SECONDS: u64 = 3900;
/// On an hour boundary, so that every slot is whole.
const START: u64 = 1_699_999_200;
const QUANTILES: [f64; 4] = [0.50, 0.90, 0.95, 0.99];
/// The target: percentiles within 2 % of the exact values.
const MAX_ERROR: f64 = 0.02;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn seeded(worker: usize) -> Self {
        Rng(0x5eed_0000 + worker as u64)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

/// The known distributions, per task name: (runtime, queue wait).
const DISTRIBUTIONS: [(&str, &str); 3] = [
    ("uniform 10..100 ms", "exponential, mean 20 ms"),
    (
        "log-normal, median 80 ms, sigma 0.8",
        "log-normal, median 5 ms, sigma 1.2",
    ),
    ("log-uniform 1 ms..1 s", "uniform 0..50 ms"),
];

/// One task of `worker` at second `s`: (task name, runtime, queue wait).
fn task(worker: usize, s: u64, rng: &mut Rng) -> (usize, Duration, Duration) {
    let name = ((s + worker as u64) % 3) as usize;
    let (runtime, wait) = match name {
        0 => (0.010 + 0.090 * rng.unit(), -0.020 * rng.unit().ln()),
        1 => (
            0.080 * (0.8 * rng.normal()).exp(),
            0.005 * (1.2 * rng.normal()).exp(),
        ),
        _ => (0.001 * 1000f64.powf(rng.unit()), 0.050 * rng.unit()),
    };
    (
        name,
        Duration::from_secs_f64(runtime),
        Duration::from_secs_f64(wait),
    )
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Resident set size, from /proc/self/statm (in 4 KiB pages).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Peak RSS (VmHWM), bytes.
fn peak_rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// The largest relative errors seen, per figure.
#[derive(Default)]
struct Errors {
    quantiles: [f64; 4],
    mean: f64,
    min: f64,
    max: f64,
    compared: usize,
}

impl Errors {
    fn check(&mut self, report: &warden_core::DistributionReport, values: &mut [f64]) {
        values.sort_by(f64::total_cmp);
        assert_eq!(report.count, values.len() as u64, "count");
        let relative = |got: f32, exact: f64| {
            if exact == 0.0 {
                f64::from(got).abs()
            } else {
                (f64::from(got) - exact).abs() / exact
            }
        };
        let got = [report.p50, report.p90, report.p95, report.p99];
        for ((worst, q), got) in self.quantiles.iter_mut().zip(QUANTILES).zip(got) {
            // The rank the sketch reports: round(q (n - 1)).
            let exact = values[(q * (values.len() - 1) as f64).round() as usize];
            *worst = worst.max(relative(got, exact));
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        self.mean = self.mean.max(relative(report.mean, mean));
        self.min = self.min.max(relative(report.min, values[0]));
        self.max = self.max.max(relative(report.max, values[values.len() - 1]));
        self.compared += 1;
    }
}

fn main() {
    let workers = std::env::var("TASK_STATS_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WORKERS);
    let rss_start = rss_bytes();
    println!(
        "task_stats: {workers} workers x 3 task names, 1 task/s per worker for {SECONDS} s ({} min) of simulated time",
        SECONDS / 60
    );
    for (name, (runtime, wait)) in NAMES.iter().zip(DISTRIBUTIONS) {
        println!("  {name}: runtime {runtime}; queue wait {wait}");
    }
    println!("RSS before: {:.1} MiB", mib(rss_start));

    let names: Vec<String> = (0..workers)
        .map(|i| format!("celery@worker-{i:05}.example.internal"))
        .collect();
    // As the fleet state keeps them.
    let mut fleet: HashMap<String, WorkerPerf> = names
        .iter()
        .map(|n| (n.clone(), WorkerPerf::default()))
        .collect();
    let mut rngs: Vec<Rng> = (0..workers).map(Rng::seeded).collect();
    let built = Instant::now();
    let mut events = 0u64;
    for s in 0..SECONDS {
        let now = at(START + s);
        for (w, (name, rng)) in names.iter().zip(&mut rngs).enumerate() {
            let (n, runtime, wait) = task(w, s, rng);
            let perf = fleet.get_mut(name.as_str()).expect("every worker");
            // A Celery task id is a UUID.
            let mut event = TaskObservation {
                outcome: TaskOutcome::Received,
                id: format!("{w:08x}-0000-4000-8000-{s:012x}"),
                name: Some(NAMES[n].to_string()),
                timestamp: Some(now),
                runtime: None,
            };
            perf.record(&event, now);
            event.outcome = TaskOutcome::Started;
            event.name = None;
            event.timestamp = Some(now + wait);
            perf.record(&event, now);
            event.outcome = TaskOutcome::Succeeded;
            event.timestamp = Some(now + wait + runtime);
            event.runtime = Some(runtime);
            perf.record(&event, now);
            events += 3;
        }
    }
    let build_time = built.elapsed();
    drop(rngs);
    let rss_after = rss_bytes();
    let peak = peak_rss_bytes();
    println!(
        "recorded {events} task events in {:.1} s: {:.0} ns/event (WorkerPerf::record, with the task id and name strings of each event)",
        build_time.as_secs_f64(),
        build_time.as_nanos() as f64 / events as f64
    );

    let heaps: Vec<usize> = fleet.values().map(WorkerPerf::heap_bytes).collect();
    let total_heap: usize = heaps.iter().sum();
    let per_worker = total_heap as f64 / workers as f64;
    let max_heap = heaps.iter().copied().max().unwrap_or(0);
    println!(
        "heap per worker (WorkerPerf::heap_bytes, every allocation): mean {:.2} KiB, max {:.2} KiB; x {workers} = {:.1} MiB",
        per_worker / 1024.0,
        max_heap as f64 / 1024.0,
        mib(total_heap)
    );
    // The fleet's own table: one bucket (key + WorkerPerf inline) per worker, and the keys.
    let buckets = (fleet.capacity() / 7 * 8).max(fleet.capacity() + 1);
    let table = buckets * (std::mem::size_of::<(String, WorkerPerf)>() + 1)
        + names.iter().map(String::len).sum::<usize>();
    println!(
        "  + the fleet's table holding them ({} B per WorkerPerf inline, {} buckets, names): {:.1} MiB",
        std::mem::size_of::<WorkerPerf>(),
        buckets,
        mib(table)
    );
    println!(
        "RSS after: {:.1} MiB (+{:.1} MiB for the whole state of {workers} workers); peak RSS while building {:.1} MiB",
        mib(rss_after),
        mib(rss_after.saturating_sub(rss_start)),
        mib(peak)
    );
    assert!(
        per_worker <= 8.0 * 1024.0,
        "target: <= 8 KiB of task records per worker"
    );
    assert!(
        rss_after <= 150 * 1_048_576,
        "target: process RSS <= 150 MiB"
    );

    // Accuracy: every worker, every window, each name and overall, against its raw samples.
    let now_secs = START + SECONDS - 1;
    let now = at(now_secs);
    let observed_since = at(START);
    let (mut runtime_errors, mut wait_errors) = (Errors::default(), Errors::default());
    let mut counts_checked = 0usize;
    let mut summarise = Duration::ZERO;
    let mut samples: Vec<(u64, usize, f64, f64)> = Vec::with_capacity(SECONDS as usize);
    for (w, name) in names.iter().enumerate() {
        let perf = &fleet[name.as_str()];
        let started = Instant::now();
        let stats = black_box(perf.task_stats(now, observed_since));
        summarise += started.elapsed();
        let mut rng = Rng::seeded(w);
        samples.clear();
        for s in 0..SECONDS {
            let (n, runtime, wait) = task(w, s, &mut rng);
            samples.push((START + s, n, runtime.as_secs_f64(), wait.as_secs_f64()));
        }
        let streams = std::iter::once((None, &stats.overall)).chain(NAMES.iter().enumerate().map(
            |(n, task)| {
                let (_, reports) = stats
                    .by_task
                    .iter()
                    .find(|(k, _)| &**k == *task)
                    .expect("every name reported");
                (Some(n), reports)
            },
        ));
        for (name, reports) in streams {
            for (report, (_, width, len)) in reports.iter().zip(WINDOWS) {
                let width = width.as_secs();
                let inside: Vec<&(u64, usize, f64, f64)> = samples
                    .iter()
                    .filter(|(t, n, ..)| {
                        t / width + len as u64 > now_secs / width && name.is_none_or(|m| m == *n)
                    })
                    .collect();
                check_counts(report, inside.len() as u32);
                counts_checked += 1;
                let mut runtimes: Vec<f64> = inside.iter().map(|s| s.2).collect();
                runtime_errors.check(&report.runtime, &mut runtimes);
                let mut waits: Vec<f64> = inside.iter().map(|s| s.3).collect();
                wait_errors.check(&report.queue_wait, &mut waits);
            }
        }
        if w == 0 {
            for (r, expected) in stats.overall.iter().zip([60, 300, 3600]) {
                assert_eq!(r.covered_secs, expected);
                assert!((r.throughput_per_min() - 60.0).abs() < 1e-9, "{r:?}");
            }
        }
    }
    println!(
        "counts exact: {counts_checked} windows (3 windows x (3 names + overall) x {workers} workers) checked, received = started = succeeded = tasks in the window; 1 h window of each worker = 3600 tasks, 60/min"
    );
    for (what, e) in [("runtime", &runtime_errors), ("queue wait", &wait_errors)] {
        println!(
            "max relative error, {what} ({} distributions compared): p50 {:.3} %, p90 {:.3} %, p95 {:.3} %, p99 {:.3} %; mean {:.3} %, min {:.3} %, max {:.3} %",
            e.compared,
            100.0 * e.quantiles[0],
            100.0 * e.quantiles[1],
            100.0 * e.quantiles[2],
            100.0 * e.quantiles[3],
            100.0 * e.mean,
            100.0 * e.min,
            100.0 * e.max,
        );
    }
    let worst = runtime_errors
        .quantiles
        .iter()
        .chain(&wait_errors.quantiles)
        .fold(0f64, |a, b| a.max(*b));
    println!(
        "max relative error of p50/p90/p95/p99 overall: {:.3} % (target <= 2 %)",
        100.0 * worst
    );
    assert!(worst <= MAX_ERROR, "percentiles beyond 2 %");
    println!(
        "summary of one worker (task_stats: 3 names + overall, 3 windows): {:.1} us",
        summarise.as_secs_f64() * 1e6 / workers as f64
    );
}

fn check_counts(report: &WindowReport, tasks: u32) {
    let c = report.counts;
    assert_eq!(
        (c.received, c.started, c.succeeded, c.failed),
        (tasks, tasks, tasks, 0),
        "counts"
    );
    assert_eq!(report.runtime.count, u64::from(tasks));
    assert_eq!(report.queue_wait.count, u64::from(tasks));
}
