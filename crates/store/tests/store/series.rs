//! Downsampling is exact: a known synthetic series is written through `write` and read back
//! grouped by step; every figure is checked against a reference computed here from the rows
//! (sum over workers per tick first, then per step), and percentiles against the exact
//! quantiles of every value in the step.
use std::{collections::BTreeMap, time::Duration};

use warden_core::{
    history::{
        Aggregation, Bucket, HistoryStore, QueueSample, SampleBatch, Source, Subject, WriteBatch,
        metric,
    },
    model::{Lifecycle, WorkerKey},
    ports::PortError,
    sketch::{RELATIVE_ERROR, Sketch},
};

use crate::support::{Db, at, both, close, sample, series, worker};

/// A multiple of the step: steps start at T0 + k·STEP.
const T0: i64 = 1_700_000_400_000;
const STEP: i64 = 600_000;
/// The first tick, half way through a step: the first and last steps are partial.
const FIRST: i64 = T0 + 300_000;
/// 2 h of ticks every 30 s.
const TICKS: i64 = 240;
const TICK: i64 = 30_000;
/// The step in which worker a reports no CPU at all.
const NO_CPU_STEP: i64 = T0 + 5 * STEP;

/// One worker at one tick, as written.
#[derive(Debug, Clone)]
struct Row {
    worker: WorkerKey,
    group: &'static str,
    at: i64,
    active: u32,
    succeeded: u32,
    failed: u32,
    interval_ms: u64,
    concurrency: Option<u32>,
    alive: bool,
    cpu: Option<f64>,
    runtimes_ms: Vec<u64>,
}

/// Workers a and b in group g1 (b only for the first hour), c in g2.
fn synthetic() -> Vec<Row> {
    let mut rows = Vec::new();
    for i in 0..TICKS {
        let at = FIRST + i * TICK;
        let u = i as u32;
        let cpu_a = if at / STEP * STEP == NO_CPU_STEP || i % 3 == 0 {
            None
        } else {
            Some(i as f64 * 0.5 + 0.25)
        };
        rows.push(Row {
            worker: worker("a"),
            group: "g1",
            at,
            active: (u * 7 + 3) % 13,
            succeeded: (u * 5) % 11,
            failed: if i % 6 == 0 {
                3
            } else {
                u32::from(i % 17 == 0)
            },
            // A new worker's first interval is shorter.
            interval_ms: if i == 0 { 12_000 } else { 30_000 },
            concurrency: (i % 10 != 4).then_some(16),
            alive: i % 37 != 5,
            cpu: cpu_a,
            // Skewed: every 8th tick is slow.
            runtimes_ms: if i % 8 == 3 {
                (0..20).map(|k| 2_000 + k * 7).collect()
            } else {
                (0..20).map(|k| 10 + (k * i.unsigned_abs()) % 20).collect()
            },
        });
        if i < TICKS / 2 {
            rows.push(Row {
                worker: worker("b"),
                group: "g1",
                at,
                active: u * 3 % 5,
                succeeded: u % 4,
                failed: 2 * u32::from(i % 9 == 0),
                interval_ms: 30_000,
                concurrency: Some(8),
                alive: true,
                cpu: None,
                runtimes_ms: (0..5).map(|k| 100 + (k * i.unsigned_abs()) % 50).collect(),
            });
        }
        rows.push(Row {
            worker: worker("c"),
            group: "g2",
            at,
            active: u % 4,
            succeeded: 10,
            failed: u32::from(i % 3 == 0),
            interval_ms: if i == 0 { 20_000 } else { 30_000 },
            concurrency: None,
            alive: i < 200,
            cpu: Some(50.0),
            runtimes_ms: vec![500 + i.unsigned_abs() % 100],
        });
    }
    rows
}

fn sketch_of(ms: &[u64]) -> Sketch {
    let mut s = Sketch::default();
    for v in ms {
        s.record(Duration::from_millis(*v));
    }
    s
}

/// Writes the series one tick per batch, as the sampler would, with the queue's samples.
async fn load(db: &Db, rows: &[Row]) {
    let mut by_tick: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by_tick.entry(r.at).or_default().push(r);
    }
    for (at_ms, tick) in by_tick {
        let workers = tick
            .iter()
            .map(|r| {
                let mut s = sample(&r.worker, r.group, r.at);
                s.active_tasks = r.active;
                s.tasks.succeeded = r.succeeded;
                s.tasks.failed = r.failed;
                s.interval = Duration::from_millis(r.interval_ms);
                s.concurrency = r.concurrency;
                s.lifecycle = if r.alive {
                    Lifecycle::Alive
                } else {
                    Lifecycle::Offline
                };
                s.cpu_percent = r.cpu;
                s.runtime = sketch_of(&r.runtimes_ms);
                s
            })
            .collect();
        let batch = WriteBatch {
            samples: SampleBatch {
                workers,
                queues: vec![QueueSample {
                    queue: "celery".into(),
                    at: at(at_ms),
                    depth: queue_depth(at_ms),
                    unacked: 1,
                    consumers: 2,
                }],
                groups: vec![],
            },
            ..WriteBatch::default()
        };
        db.store.write(&batch).await.unwrap();
    }
}

fn queue_depth(at_ms: i64) -> u64 {
    ((at_ms - FIRST) / TICK * 13 % 101) as u64
}

/// One tick of the reference: the rows of the subject at one time, summed.
#[derive(Debug, Default)]
struct Tick {
    value: Option<f64>,
    numerator: f64,
    denominator: f64,
    values: Vec<f64>,
}

fn tick(name: &str, rows: &[&Row]) -> Tick {
    let sum = |f: &dyn Fn(&Row) -> f64| rows.iter().map(|r| f(r)).sum::<f64>();
    let ratio = |n: f64, d: f64| Tick {
        value: (d > 0.0).then(|| n / d),
        numerator: n,
        denominator: d,
        values: vec![],
    };
    let gauge = |v: Option<f64>| Tick {
        value: v,
        ..Tick::default()
    };
    match name {
        "active_tasks" => gauge(Some(sum(&|r| r.active.into()))),
        "succeeded" => gauge(Some(sum(&|r| r.succeeded.into()))),
        "failed" => gauge(Some(sum(&|r| r.failed.into()))),
        "alive_workers" => gauge(Some(sum(&|r| if r.alive { 1.0 } else { 0.0 }))),
        "cpu_percent" => gauge(rows.iter().filter_map(|r| r.cpu).reduce(|a, b| a + b)),
        "throughput" => {
            let minutes = rows.iter().map(|r| r.interval_ms).max().unwrap() as f64 / 60_000.0;
            ratio(sum(&|r| f64::from(r.succeeded + r.failed)), minutes)
        }
        "error_rate" => ratio(
            sum(&|r| r.failed.into()),
            sum(&|r| f64::from(r.succeeded + r.failed)),
        ),
        "utilisation" => ratio(
            sum(&|r| {
                if r.concurrency.is_some() {
                    r.active.into()
                } else {
                    0.0
                }
            }),
            sum(&|r| r.concurrency.unwrap_or(0).into()),
        ),
        "runtime" => Tick {
            values: rows
                .iter()
                .flat_map(|r| r.runtimes_ms.iter().map(|ms| *ms as f64 / 1000.0))
                .collect(),
            ..Tick::default()
        },
        other => panic!("no reference for {other}"),
    }
}

/// What a step should hold.
#[derive(Debug, Default)]
struct Expected {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    numerator: f64,
    denominator: f64,
    values: Vec<f64>,
    /// Each tick's own p99 (to show that averaging them is wrong).
    tick_p99s: Vec<f64>,
}

fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64).round() as usize]
}

fn reference(
    rows: &[Row],
    subject: &Subject,
    name: &str,
    (start, end): (i64, i64),
) -> BTreeMap<i64, Expected> {
    let mut ticks: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.at >= start && r.at < end) {
        let mine = match subject {
            Subject::Worker(w) => r.worker == *w,
            Subject::Group(g) => r.group == g,
            Subject::Fleet => true,
            Subject::Queue(_) => unreachable!(),
        };
        if mine {
            ticks.entry(r.at).or_default().push(r);
        }
    }
    let mut steps: BTreeMap<i64, Expected> = BTreeMap::new();
    for (t, rows) in ticks {
        let tick = tick(name, &rows);
        let e = steps.entry(t / STEP * STEP).or_default();
        e.numerator += tick.numerator;
        e.denominator += tick.denominator;
        if !tick.values.is_empty() {
            let mut sorted = tick.values.clone();
            sorted.sort_by(f64::total_cmp);
            e.tick_p99s.push(exact_quantile(&sorted, 0.99));
            e.values.extend(tick.values);
        }
        if let Some(v) = tick.value {
            e.min = if e.count == 0 { v } else { e.min.min(v) };
            e.max = if e.count == 0 { v } else { e.max.max(v) };
            e.count += 1;
            e.sum += v;
            e.last = v;
        }
    }
    steps.retain(|_, e| e.count > 0 || !e.values.is_empty());
    steps
}

/// Checks a series from the store against the reference, figure by figure, and through
/// `Bucket::value` for each aggregation the metric offers.
fn check(engine: &str, what: &str, name: &str, got: &[Bucket], want: &BTreeMap<i64, Expected>) {
    let m = metric(name).unwrap();
    let starts: Vec<_> = got.iter().map(|b| b.start).collect();
    let want_starts: Vec<_> = want.keys().map(|b| at(*b)).collect();
    assert_eq!(starts, want_starts, "{engine} {what} {name}: steps");
    for (b, (start, e)) in got.iter().zip(want) {
        let ctx = format!("{engine} {what} {name} step {}", (start - T0) / STEP);
        if let Source::Distribution(_) = m.source {
            let mut sorted = e.values.clone();
            sorted.sort_by(f64::total_cmp);
            let d = b.distribution.as_ref().expect("a merged distribution");
            assert_eq!(d.count(), sorted.len() as u64, "{ctx}: values");
            for (agg, q) in [
                (Aggregation::P50, 0.5),
                (Aggregation::P90, 0.9),
                (Aggregation::P95, 0.95),
                (Aggregation::P99, 0.99),
            ] {
                let exact = exact_quantile(&sorted, q);
                let got = b.value(m.source, agg).unwrap();
                assert!(
                    (got - exact).abs() / exact <= RELATIVE_ERROR,
                    "{ctx}: {agg:?} {got} vs exact {exact}"
                );
            }
            let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
            let got_mean = b.value(m.source, Aggregation::Avg).unwrap();
            assert!(
                (got_mean - mean).abs() / mean <= RELATIVE_ERROR,
                "{ctx}: mean"
            );
            assert_eq!(
                b.value(m.source, Aggregation::Count),
                Some(sorted.len() as f64),
                "{ctx}"
            );
            continue;
        }
        assert_eq!(b.count, e.count, "{ctx}: count");
        for (field, got, want) in [
            ("sum", b.sum, e.sum),
            ("min", b.min, e.min),
            ("max", b.max, e.max),
            ("last", b.last, e.last),
            ("numerator", b.numerator, e.numerator),
            ("denominator", b.denominator, e.denominator),
        ] {
            assert!(close(got, want), "{ctx}: {field} {got} vs {want}");
        }
        for agg in m.aggregations {
            let want = match (m.source, agg) {
                (
                    Source::Throughput | Source::ErrorRate | Source::Utilisation,
                    Aggregation::Avg,
                ) => e.numerator / e.denominator,
                (_, Aggregation::Avg) => e.sum / e.count as f64,
                (_, Aggregation::Min) => e.min,
                (_, Aggregation::Max) => e.max,
                (_, Aggregation::Sum) => e.sum,
                (_, Aggregation::Last) => e.last,
                (_, Aggregation::Count) => e.count as f64,
                _ => unreachable!(),
            };
            let got = b.value(m.source, *agg).unwrap();
            assert!(close(got, want), "{ctx}: {agg:?} {got} vs {want}");
        }
    }
}

const METRICS: &[&str] = &[
    "active_tasks",
    "succeeded",
    "failed",
    "throughput",
    "error_rate",
    "utilisation",
    "alive_workers",
    "cpu_percent",
    "runtime",
];

async fn loaded() -> ([Db; 2], Vec<Row>) {
    let rows = synthetic();
    let dbs = both().await;
    for db in &dbs {
        load(db, &rows).await;
    }
    (dbs, rows)
}

async fn check_subjects(subjects: &[(&str, Subject)]) {
    let (dbs, rows) = loaded().await;
    let last = FIRST + TICKS * TICK;
    // The whole range; then a range starting mid-step and ending exactly on a tick (which is
    // left out: ranges are half-open).
    let ranges = [
        (T0, last + STEP),
        (FIRST + 4 * TICK + 1, FIRST + 200 * TICK),
    ];
    for db in &dbs {
        for (what, subject) in subjects {
            for name in METRICS {
                for range in ranges {
                    let q = series(subject.clone(), name, range.0, range.1, STEP as u64);
                    let got = db.store.buckets(&q).await.unwrap();
                    // (Empty for g2's utilisation: c's concurrency is unknown.)
                    let want = reference(&rows, subject, name, range);
                    check(db.engine, what, name, &got, &want);
                }
            }
        }
    }
}

#[tokio::test]
async fn downsampling_one_worker_is_exact() {
    check_subjects(&[("worker a", Subject::Worker(worker("a")))]).await;
}

#[tokio::test]
async fn downsampling_a_group_and_the_fleet_sums_workers_per_tick_first() {
    check_subjects(&[
        ("group g1", Subject::Group("g1".into())),
        ("group g2", Subject::Group("g2".into())),
        ("fleet", Subject::Fleet),
    ])
    .await;
}

#[tokio::test]
async fn percentiles_come_from_merged_sketches_not_averaged_percentiles() {
    let (dbs, rows) = loaded().await;
    let subject = Subject::Worker(worker("a"));
    let range = (T0, T0 + 13 * STEP);
    let want = reference(&rows, &subject, "runtime", range);
    for db in &dbs {
        let q = series(subject.clone(), "runtime", range.0, range.1, STEP as u64);
        let got = db.store.buckets(&q).await.unwrap();
        assert_eq!(got.len(), want.len());
        for (b, e) in got.iter().zip(want.values()) {
            let p99 = b
                .value(Source::Distribution("runtime"), Aggregation::P99)
                .unwrap();
            let averaged = e.tick_p99s.iter().sum::<f64>() / e.tick_p99s.len() as f64;
            // Slow ticks are ~12 % of the values: the true p99 is a slow one (~2 s), the mean of
            // the ticks' p99s is pulled towards the fast ones (< 0.4 s).
            assert!(p99 > 1.9, "{}: p99 {p99}", db.engine);
            assert!(averaged < 0.4, "{}: averaged {averaged}", db.engine);
        }
    }
}

#[tokio::test]
async fn absent_resources_stay_absent() {
    let (dbs, rows) = loaded().await;
    let range = (T0, T0 + 13 * STEP);
    for db in &dbs {
        let engine = db.engine;
        let a = Subject::Worker(worker("a"));
        let q = series(a.clone(), "cpu_percent", range.0, range.1, STEP as u64);
        let got = db.store.buckets(&q).await.unwrap();
        // The step where a never reported CPU is left out, not a 0.
        assert!(got.iter().all(|b| b.start != at(NO_CPU_STEP)), "{engine}");
        assert_eq!(got.len(), 12, "{engine}");
        for b in &got {
            let start = crate::support::ms_of(b.start);
            let in_step: Vec<&Row> = rows
                .iter()
                .filter(|r| r.worker == worker("a") && r.at / STEP * STEP == start)
                .collect();
            let present: Vec<f64> = in_step.iter().filter_map(|r| r.cpu).collect();
            // Ticks without a figure are not counted: the average is over those with one.
            assert!(present.len() < in_step.len(), "{engine}");
            assert_eq!(b.count, present.len() as u64, "{engine}");
            let avg = b
                .value(Source::WorkerGauge("cpu_percent"), Aggregation::Avg)
                .unwrap();
            assert!(
                close(avg, present.iter().sum::<f64>() / present.len() as f64),
                "{engine}"
            );
        }
        // Nobody ever reported memory: no step at all, for a worker, a group or the fleet.
        for subject in [a, Subject::Group("g1".into()), Subject::Fleet] {
            let q = series(subject, "memory_rss_bytes", range.0, range.1, STEP as u64);
            assert_eq!(db.store.buckets(&q).await.unwrap(), vec![], "{engine}");
        }
        // b never reported CPU either: g1's CPU is a's alone, and absent where a's is.
        let q = series(
            Subject::Group("g1".into()),
            "cpu_percent",
            range.0,
            range.1,
            STEP as u64,
        );
        let g1 = db.store.buckets(&q).await.unwrap();
        assert_eq!(g1, got, "{engine}");
        // A step holding only NULLs, had it been returned, says nothing.
        let empty = Bucket::default();
        assert_eq!(
            empty.value(Source::WorkerGauge("cpu_percent"), Aggregation::Avg),
            None
        );
    }
}

#[tokio::test]
async fn queue_series_read_the_queue_samples() {
    let (dbs, _) = loaded().await;
    for db in &dbs {
        let q = series(
            Subject::Queue("celery".into()),
            "queue_depth",
            T0,
            T0 + 13 * STEP,
            STEP as u64,
        );
        let got = db.store.buckets(&q).await.unwrap();
        assert_eq!(got.len(), 13, "{}", db.engine);
        for b in &got {
            let start = crate::support::ms_of(b.start);
            let depths: Vec<f64> = (0..TICKS)
                .map(|i| FIRST + i * TICK)
                .filter(|t| t / STEP * STEP == start)
                .map(|t| queue_depth(t) as f64)
                .collect();
            assert_eq!(b.count, depths.len() as u64);
            assert_eq!(b.sum, depths.iter().sum::<f64>());
            assert_eq!(b.max, depths.iter().copied().fold(f64::MIN, f64::max));
            assert_eq!(b.min, depths.iter().copied().fold(f64::MAX, f64::min));
            assert_eq!(b.last, *depths.last().unwrap());
        }
        let other = series(
            Subject::Queue("other".into()),
            "queue_depth",
            T0,
            T0 + 13 * STEP,
            60_000,
        );
        assert_eq!(db.store.buckets(&other).await.unwrap(), vec![]);
    }
}

#[tokio::test]
async fn a_metric_asked_of_the_wrong_kind_of_subject_is_not_supported() {
    for db in both().await {
        let q = series(
            Subject::Worker(worker("a")),
            "queue_depth",
            T0,
            T0 + STEP,
            60_000,
        );
        assert!(matches!(
            db.store.buckets(&q).await,
            Err(PortError::NotSupported(_))
        ));
        let q = series(Subject::Fleet, "processed_total", T0, T0 + STEP, 60_000);
        assert!(matches!(
            db.store.buckets(&q).await,
            Err(PortError::NotSupported(_))
        ));
    }
}

/// A worker row whose sketches are unusually large (Postgres keeps such rows out of the worker
/// index, which is partial, and reads them from the table) is in the worker's series all the
/// same, beside ordinary rows.
#[tokio::test]
async fn a_worker_row_with_huge_sketches_is_counted() {
    let mut huge = Sketch::default();
    for i in 0..900u32 {
        let value = Duration::from_nanos((1_000.0 * 1.035f64.powi(i as i32)) as u64);
        for _ in 0..(i * 7_919 % 9_973 + 1) {
            huge.record(value);
        }
    }
    let mut encoded = Vec::new();
    huge.encode(&mut encoded);
    assert!(encoded.len() > 1_000, "{} bytes", encoded.len());
    let w = worker("big");
    for db in both().await {
        for (i, t) in [FIRST, FIRST + TICK, FIRST + 2 * TICK]
            .into_iter()
            .enumerate()
        {
            let mut s = sample(&w, "g", t);
            s.tasks.succeeded = 10;
            s.runtime = if i == 1 {
                huge.clone()
            } else {
                sketch_of(&[100; 10])
            };
            s.queue_wait = if i == 1 {
                huge.clone()
            } else {
                Sketch::default()
            };
            let batch = WriteBatch {
                samples: SampleBatch {
                    workers: vec![s],
                    ..SampleBatch::default()
                },
                ..WriteBatch::default()
            };
            db.store.write(&batch).await.unwrap();
        }
        let range = (T0, T0 + STEP);
        let q = series(
            Subject::Worker(w.clone()),
            "runtime",
            range.0,
            range.1,
            STEP as u64,
        );
        let got = db.store.buckets(&q).await.unwrap();
        assert_eq!(got.len(), 1, "{}", db.engine);
        assert_eq!(got[0].count, 3, "{}: sketches merged", db.engine);
        assert_eq!(
            got[0].distribution.as_ref().map(Sketch::count),
            Some(huge.count() + 20),
            "{}",
            db.engine
        );
        let q = series(
            Subject::Worker(w.clone()),
            "succeeded",
            range.0,
            range.1,
            STEP as u64,
        );
        let got = db.store.buckets(&q).await.unwrap();
        assert_eq!((got[0].count, got[0].sum), (3, 30.0), "{}", db.engine);
        let q = series(
            Subject::Worker(w.clone()),
            "queue_wait",
            range.0,
            range.1,
            STEP as u64,
        );
        let got = db.store.buckets(&q).await.unwrap();
        assert_eq!(got[0].count, 1, "{}", db.engine);
    }
}
