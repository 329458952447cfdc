//! A group's and the fleet's series come from the per-tick totals the writer keeps
//! (`tick_totals`); they must equal the series summed from the worker samples themselves, on
//! both engines: the same steps, counts, sums, min, max, last, rate parts and merged sketches.
//! The samples' answer is read by marking the totals as not covering the range (the store then
//! reads the samples, as it does while older samples are rolled up); the backfill that rolls
//! up samples written before the totals existed must give the same totals again.
use std::{collections::BTreeMap, time::Duration};

use warden_core::{
    history::{Bucket, CATALOG, HistoryStore, SampleBatch, Subject, SubjectKind, WriteBatch},
    model::{Activity, Lifecycle},
    sketch::Sketch,
};
use warden_store::{Store, StoreOptions};

use crate::support::{Db, both, close, sample, series, worker};

const T0: i64 = 1_700_002_800_000;
const TICK: i64 = 30_000;
/// 3 h of ticks.
const TICKS: i64 = 360;
const GROUPS: [&str; 3] = ["g1", "g2", "g\0odd"];

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// 12 workers in 3 groups, with everything the sums must respect: absent CPU and memory
/// (NULL, not 0), unknown and zero concurrency, offline workers, a new worker's short first
/// interval, empty sketches (NULL), workers coming and going; every 7th tick is written in two
/// batches (so a tick has several totals rows), every 11th tick has no samples at all.
fn batches() -> Vec<WriteBatch> {
    let mut out = Vec::new();
    for tick in 0..TICKS {
        if tick % 11 == 5 {
            continue;
        }
        let at_ms = T0 + tick * TICK;
        let mut workers = Vec::new();
        for w in 0..12u64 {
            // Worker 11 joins at tick 100; worker 10 leaves at tick 250.
            if (w == 11 && tick < 100) || (w == 10 && tick >= 250) {
                continue;
            }
            let r = mix((tick as u64) << 8 | w);
            let key = worker(&format!("w{w}"));
            let mut s = sample(&key, GROUPS[(w % 3) as usize], at_ms);
            s.interval = Duration::from_millis(if w == 11 && tick == 100 {
                7_000
            } else {
                30_000
            });
            s.lifecycle = if r.is_multiple_of(13) {
                Lifecycle::Offline
            } else {
                Lifecycle::Alive
            };
            s.activity = Activity::Active;
            s.active_tasks = (r % 9) as u32;
            s.processed_total = tick as u64 * 10 + w;
            s.concurrency = match w % 4 {
                0 => None,
                1 if tick % 3 == 0 => Some(0),
                _ => Some(8),
            };
            let finished = (r >> 8) % 25;
            s.tasks.received = finished as u32 + 1;
            s.tasks.started = finished as u32;
            s.tasks.failed = ((r >> 16) % 4).min(finished) as u32;
            s.tasks.succeeded = finished as u32 - s.tasks.failed;
            s.tasks.retried = ((r >> 20) % 2) as u32;
            s.cpu_percent = (w % 3 != 0 && !(r >> 24).is_multiple_of(5))
                .then(|| ((r >> 28) % 1000) as f64 / 7.0);
            s.memory_rss_bytes = (w % 4 == 1).then_some(100_000_000 + (r >> 30) % 1_000_000);
            let mut runtime = Sketch::default();
            for k in 0..finished {
                let ms = if (r >> 40).is_multiple_of(10) {
                    3_000
                } else {
                    10
                } + mix(r ^ k) % 400;
                runtime.record(Duration::from_millis(ms));
            }
            s.runtime = runtime;
            if w % 2 == 0 {
                let mut wait = Sketch::default();
                for k in 0..finished / 2 {
                    wait.record(Duration::from_micros(100 + mix(r ^ k ^ 77) % 90_000));
                }
                s.queue_wait = wait;
            }
            workers.push(s);
        }
        if tick % 7 == 3 {
            let second = workers.split_off(workers.len() / 2);
            for part in [workers, second] {
                out.push(WriteBatch {
                    samples: SampleBatch {
                        workers: part,
                        ..SampleBatch::default()
                    },
                    ..WriteBatch::default()
                });
            }
        } else {
            out.push(WriteBatch {
                samples: SampleBatch {
                    workers,
                    ..SampleBatch::default()
                },
                ..WriteBatch::default()
            });
        }
    }
    out
}

fn same(engine: &str, what: &str, a: &[Bucket], b: &[Bucket]) {
    assert_eq!(a.len(), b.len(), "{engine} {what}: steps");
    for (x, y) in a.iter().zip(b) {
        let ctx = format!("{engine} {what} step {:?}", x.start);
        assert_eq!(x.start, y.start, "{ctx}");
        assert_eq!(x.count, y.count, "{ctx}: count");
        for (field, p, q) in [
            ("sum", x.sum, y.sum),
            ("min", x.min, y.min),
            ("max", x.max, y.max),
            ("last", x.last, y.last),
            ("numerator", x.numerator, y.numerator),
            ("denominator", x.denominator, y.denominator),
        ] {
            assert!(close(p, q), "{ctx}: {field} {p} vs {q}");
        }
        // Sketches merge exactly: the same bins in any order.
        assert_eq!(x.distribution, y.distribution, "{ctx}: distribution");
    }
}

/// Every group and fleet metric over several ranges and steps.
async fn answers(store: &Store) -> BTreeMap<String, Vec<Bucket>> {
    let end = T0 + TICKS * TICK;
    let mut subjects: Vec<(String, Subject)> = GROUPS
        .iter()
        .map(|g| (format!("group {g:?}"), Subject::Group((*g).into())))
        .collect();
    subjects.push(("fleet".into(), Subject::Fleet));
    subjects.push(("no such group".into(), Subject::Group("nope".into())));
    let mut out = BTreeMap::new();
    for (what, subject) in &subjects {
        for m in CATALOG
            .iter()
            .filter(|m| m.subjects.contains(&subject.kind()))
        {
            for (start, stop, step) in [
                (T0 - 3_600_000, end + 3_600_000, 3_600_000),
                (T0 + 7 * TICK + 1, end - 13 * TICK, 600_000),
                (T0, end, 7 * 60_000),
                (T0 + 40 * TICK, T0 + 41 * TICK, 30_000),
            ] {
                let q = series(subject.clone(), m.name, start, stop, step);
                let got = store.buckets(&q).await.unwrap();
                out.insert(format!("{what} {} {start}..{stop}/{step}", m.name), got);
            }
        }
    }
    assert!(
        subjects
            .iter()
            .all(|(_, s)| matches!(s.kind(), SubjectKind::Group | SubjectKind::Fleet))
    );
    out
}

/// Runs SQL on the store's database, outside the store.
async fn execute(db: &Db, sql: &str) {
    if db.engine == "sqlite" {
        let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

async fn reopen(db: &Db) -> Store {
    Store::connect(&db.url, StoreOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn group_and_fleet_series_from_the_totals_equal_those_from_the_samples() {
    let batches = batches();
    for db in both().await {
        for b in &batches {
            db.store.write(b).await.unwrap();
        }
        let from_totals = answers(&db.store).await;
        assert!(
            from_totals.values().filter(|b| !b.is_empty()).count() > 50,
            "{}: the series are not empty",
            db.engine
        );
        // The totals no longer cover anything: a new store reads the samples.
        execute(
            &db,
            "UPDATE tick_totals_coverage SET covered_from_ms = 9223372036854775807",
        )
        .await;
        let raw = reopen(&db).await;
        let from_samples = answers(&raw).await;
        assert_eq!(
            from_totals.keys().collect::<Vec<_>>(),
            from_samples.keys().collect::<Vec<_>>()
        );
        for (what, buckets) in &from_totals {
            same(db.engine, what, buckets, &from_samples[what]);
        }

        // As for samples written before the totals existed: none left, then the migration's
        // backfill rolls them up again, in windows, and the series read from them are the same.
        execute(&db, "DELETE FROM tick_totals").await;
        raw.migrate().await.unwrap();
        let backfilled = reopen(&db).await;
        let again = answers(&backfilled).await;
        for (what, buckets) in &from_samples {
            same(
                db.engine,
                &format!("{what} (backfilled)"),
                &again[what],
                buckets,
            );
        }
        // A backfill interrupted half way leaves the store exact too: a series starting below
        // the bound is read from the samples, one starting above it from the totals.
        execute(
            &db,
            &format!(
                "DELETE FROM tick_totals WHERE at_ms < {mid}; \
                 UPDATE tick_totals_coverage SET covered_from_ms = {mid}",
                mid = T0 + 200 * TICK
            ),
        )
        .await;
        let partial = reopen(&db).await;
        let mixed = answers(&partial).await;
        for (what, buckets) in &from_samples {
            same(
                db.engine,
                &format!("{what} (partly covered)"),
                &mixed[what],
                buckets,
            );
        }
        // A batch of an old tick written after the totals (a late flush) is counted once,
        // whether the backfill runs before or after it.
        let late = batches[10].clone();
        partial.write(&late).await.unwrap();
        let late_view = answers(&partial).await;
        partial.migrate().await.unwrap();
        let after = answers(&reopen(&db).await).await;
        for (what, buckets) in &late_view {
            same(
                db.engine,
                &format!("{what} (late batch)"),
                &after[what],
                buckets,
            );
        }
        execute(
            &db,
            "UPDATE tick_totals_coverage SET covered_from_ms = 9223372036854775807",
        )
        .await;
        let raw_late = answers(&reopen(&db).await).await;
        for (what, buckets) in &raw_late {
            same(
                db.engine,
                &format!("{what} (late batch, samples)"),
                &after[what],
                buckets,
            );
        }
    }
}
