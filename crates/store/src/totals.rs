//! Per-tick totals (`tick_totals`): what a group's or the fleet's series needs of each sampling
//! tick, summed over the workers once, when the tick is written, instead of at every query.
//!
//! The writer adds, in the transaction of the samples, one row per tick and group and one per
//! tick for the fleet ([`of_samples`]). The figures are those the series SQL sums per tick from
//! the worker rows (`series.rs`), so a series read from the totals equals the one read from
//! the samples: integer sums are exact, NULL stays NULL when no row had a value, the longest
//! interval is kept for throughput, and the sketches are merged exactly (bin counts add), with
//! the number of sketches merged. A tick may have several rows per subject (written in several
//! batches): queries sum them per tick first.
//!
//! Samples written before the totals existed are rolled up by [`backfill`], run by
//! `Store::migrate`: newest first, one window of [`BACKFILL_WINDOW_MS`] per transaction, each
//! recomputed from the samples (its totals deleted and written again, so that totals written
//! meanwhile by a writer are not counted twice), lowering `tick_totals_coverage` as it goes.
//! A series whose range starts below that bound is read from the samples ([`covers`]).
use std::collections::{BTreeMap, HashMap};

use sqlx::Row;
use warden_core::{history::WorkerSample, sketch::Sketch};

use crate::{Engine, Fail, Store, StoreError, codes, on_pool};

/// The coverage bound once every sample is rolled up.
pub(crate) const COVERS_ALL: i64 = -9_223_372_036_854_775_807;

/// Samples rolled up per backfill transaction: 15 minutes of ticks.
pub(crate) const BACKFILL_WINDOW_MS: i64 = 15 * 60_000;

/// One tick of one subject, summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Totals {
    pub samples: i64,
    pub alive: i64,
    pub active_tasks: i64,
    pub processed_total: i64,
    pub concurrency: Option<i64>,
    pub util_active: Option<i64>,
    pub util_concurrency: Option<i64>,
    pub interval_ms: i64,
    pub max_interval_ms: i64,
    /// received, started, succeeded, failed, retried, rejected, revoked.
    pub counts: [i64; 7],
    pub cpu_percent: Option<f64>,
    pub memory_rss_bytes: Option<i64>,
    pub runtime_n: i64,
    pub runtime: Sketch,
    pub queue_wait_n: i64,
    pub queue_wait: Sketch,
}

/// One worker row's figures, as stored.
pub(crate) struct Figures<'a> {
    pub lifecycle: i16,
    pub active_tasks: i64,
    pub processed_total: i64,
    pub concurrency: Option<i64>,
    pub interval_ms: i64,
    pub counts: [i64; 7],
    pub cpu_percent: Option<f64>,
    pub memory_rss_bytes: Option<i64>,
    /// Sketches as stored: None for an empty one (stored as NULL).
    pub runtime: Option<&'a Sketch>,
    pub queue_wait: Option<&'a Sketch>,
}

/// SUM's rule: NULL plus NULL is NULL, NULL is left out otherwise.
fn add_opt<T: std::ops::Add<Output = T>>(sum: &mut Option<T>, value: Option<T>) {
    if let Some(v) = value {
        *sum = Some(match sum.take() {
            Some(s) => s + v,
            None => v,
        });
    }
}

impl Totals {
    pub(crate) fn add_row(&mut self, r: &Figures<'_>) {
        self.samples += 1;
        self.alive += i64::from(r.lifecycle == codes::LIFECYCLE_ALIVE);
        self.active_tasks += r.active_tasks;
        self.processed_total += r.processed_total;
        add_opt(&mut self.concurrency, r.concurrency);
        if let Some(c) = r.concurrency.filter(|c| *c > 0) {
            add_opt(&mut self.util_active, Some(r.active_tasks));
            add_opt(&mut self.util_concurrency, Some(c));
        }
        self.interval_ms += r.interval_ms;
        self.max_interval_ms = self.max_interval_ms.max(r.interval_ms);
        for (sum, n) in self.counts.iter_mut().zip(r.counts) {
            *sum += n;
        }
        add_opt(&mut self.cpu_percent, r.cpu_percent);
        add_opt(&mut self.memory_rss_bytes, r.memory_rss_bytes);
        if let Some(s) = r.runtime {
            self.runtime_n += 1;
            self.runtime.merge(s);
        }
        if let Some(s) = r.queue_wait {
            self.queue_wait_n += 1;
            self.queue_wait.merge(s);
        }
    }

    pub(crate) fn add(&mut self, o: &Totals) {
        self.samples += o.samples;
        self.alive += o.alive;
        self.active_tasks += o.active_tasks;
        self.processed_total += o.processed_total;
        add_opt(&mut self.concurrency, o.concurrency);
        add_opt(&mut self.util_active, o.util_active);
        add_opt(&mut self.util_concurrency, o.util_concurrency);
        self.interval_ms += o.interval_ms;
        self.max_interval_ms = self.max_interval_ms.max(o.max_interval_ms);
        for (sum, n) in self.counts.iter_mut().zip(o.counts) {
            *sum += n;
        }
        add_opt(&mut self.cpu_percent, o.cpu_percent);
        add_opt(&mut self.memory_rss_bytes, o.memory_rss_bytes);
        self.runtime_n += o.runtime_n;
        self.runtime.merge(&o.runtime);
        self.queue_wait_n += o.queue_wait_n;
        self.queue_wait.merge(&o.queue_wait);
    }
}

/// A row of `tick_totals`: a group's (`grp`) or the fleet's (`grp` None) tick.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TotalsRow {
    pub at_ms: i64,
    pub grp: Option<String>,
    pub totals: Totals,
}

/// Groups' rows, then the fleet's, per tick: from `(at_ms, group, figures)` of worker rows.
fn rollup<'a>(rows: impl Iterator<Item = (i64, &'a str, Figures<'a>)>) -> Vec<TotalsRow> {
    let mut groups: HashMap<(i64, &str), Totals> = HashMap::new();
    for (at, grp, figures) in rows {
        groups.entry((at, grp)).or_default().add_row(&figures);
    }
    let mut groups: Vec<((i64, &str), Totals)> = groups.into_iter().collect();
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let mut fleet: BTreeMap<i64, Totals> = BTreeMap::new();
    for ((at, _), t) in &groups {
        fleet.entry(*at).or_default().add(t);
    }
    groups
        .into_iter()
        .map(|((at_ms, grp), totals)| TotalsRow {
            at_ms,
            grp: Some(grp.to_owned()),
            totals,
        })
        .chain(fleet.into_iter().map(|(at_ms, totals)| TotalsRow {
            at_ms,
            grp: None,
            totals,
        }))
        .collect()
}

/// The totals of the samples a batch writes.
pub(crate) fn of_samples(
    samples: &[WorkerSample],
    text: &[std::borrow::Cow<'_, str>],
) -> Vec<TotalsRow> {
    rollup(samples.iter().zip(text).map(|(s, grp)| {
        (
            codes::ms(s.at),
            grp.as_ref(),
            Figures {
                lifecycle: codes::lifecycle(s.lifecycle),
                active_tasks: i64::from(codes::i32_of(s.active_tasks)),
                processed_total: codes::i64_of(s.processed_total),
                concurrency: s.concurrency.map(|c| i64::from(codes::i32_of(c))),
                interval_ms: i64::from(codes::ms_i32(s.interval)),
                counts: [
                    s.tasks.received,
                    s.tasks.started,
                    s.tasks.succeeded,
                    s.tasks.failed,
                    s.tasks.retried,
                    s.tasks.rejected,
                    s.tasks.revoked,
                ]
                .map(|n| i64::from(codes::i32_of(n))),
                cpu_percent: s.cpu_percent,
                memory_rss_bytes: s.memory_rss_bytes.map(codes::i64_of),
                runtime: (!s.runtime.is_empty()).then_some(&s.runtime),
                queue_wait: (!s.queue_wait.is_empty()).then_some(&s.queue_wait),
            },
        )
    }))
}

pub(crate) const INSERT_SQL: &str = "INSERT INTO tick_totals (at_ms, fleet, grp, samples, alive, active_tasks, \
     processed_total, concurrency, util_active, util_concurrency, interval_ms, max_interval_ms, \
     received, started, succeeded, failed, retried, rejected, revoked, cpu_percent, \
     memory_rss_bytes, runtime_n, queue_wait_n, runtime, queue_wait) ";

/// Inserts `rows` within the caller's transaction.
macro_rules! insert_totals {
    ($tx:expr, $Db:ty, $rows:expr) => {{
        let encoded: Vec<(Option<Vec<u8>>, Option<Vec<u8>>)> = $rows
            .iter()
            .map(|r| {
                (
                    $crate::write::blob(&r.totals.runtime),
                    $crate::write::blob(&r.totals.queue_wait),
                )
            })
            .collect();
        let all: Vec<(
            &$crate::totals::TotalsRow,
            &(Option<Vec<u8>>, Option<Vec<u8>>),
        )> = $rows.iter().zip(&encoded).collect();
        for chunk in all.chunks($crate::write::ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::<$Db>::new($crate::totals::INSERT_SQL);
            q.push_values(chunk, |mut b, (r, (runtime, wait))| {
                let t = &r.totals;
                b.push_bind(r.at_ms)
                    .push_bind(i16::from(r.grp.is_none()))
                    .push_bind(r.grp.as_deref().unwrap_or(""))
                    .push_bind(t.samples)
                    .push_bind(t.alive)
                    .push_bind(t.active_tasks)
                    .push_bind(t.processed_total)
                    .push_bind(t.concurrency)
                    .push_bind(t.util_active)
                    .push_bind(t.util_concurrency)
                    .push_bind(t.interval_ms)
                    .push_bind(t.max_interval_ms);
                for n in t.counts {
                    b.push_bind(n);
                }
                b.push_bind(t.cpu_percent)
                    .push_bind(t.memory_rss_bytes)
                    .push_bind(t.runtime_n)
                    .push_bind(t.queue_wait_n)
                    .push_bind(runtime.as_deref())
                    .push_bind(wait.as_deref());
            });
            q.build().execute(&mut *$tx).await?;
        }
    }};
}
pub(crate) use insert_totals;

/// The coverage bound: totals hold every tick at or after it.
pub(crate) async fn covered_from(store: &Store) -> Result<i64, StoreError> {
    store
        .call(store.options.timeout, async {
            let from: Option<i64> = on_pool!(store, |pool, _Db| {
                sqlx::query_scalar("SELECT MIN(covered_from_ms) FROM tick_totals_coverage")
                    .fetch_one(pool)
                    .await?
            });
            Ok::<_, Fail>(from.unwrap_or(COVERS_ALL))
        })
        .await
}

/// Whether a series starting at `start_ms` may be read from the totals.
pub(crate) async fn covers(store: &Store, start_ms: i64) -> Result<bool, StoreError> {
    use std::sync::atomic::Ordering;
    if store.totals_complete.load(Ordering::Relaxed) {
        return Ok(true);
    }
    let from = covered_from(store).await?;
    if from <= COVERS_ALL {
        store.totals_complete.store(true, Ordering::Relaxed);
    }
    Ok(from <= start_ms)
}

const RAW: &str = "SELECT at_ms, grp, CAST(lifecycle AS BIGINT), CAST(active_tasks AS BIGINT), \
     processed_total, CAST(concurrency AS BIGINT), CAST(interval_ms AS BIGINT), \
     CAST(received AS BIGINT), CAST(started AS BIGINT), CAST(succeeded AS BIGINT), \
     CAST(failed AS BIGINT), CAST(retried AS BIGINT), CAST(rejected AS BIGINT), \
     CAST(revoked AS BIGINT), cpu_percent, memory_rss_bytes, runtime, queue_wait \
     FROM worker_samples WHERE at_ms >= $1 AND at_ms < $2";

/// Rolls up the samples below the coverage bound (see the module); returns the windows done.
pub(crate) async fn backfill(store: &Store) -> Result<u64, StoreError> {
    let mut windows = 0u64;
    let mut rows_done = 0u64;
    loop {
        let done = store
            .call(store.options.migrate_timeout, async {
                let n = on_pool!(store, |pool, Db| {
                    let mut tx = pool.begin().await?;
                    // Writers first. On SQLite this UPDATE takes the write lock before anything
                    // is read (no stale snapshot). On Postgres, once the table lock is ours
                    // every writer that wrote totals has committed, and none writes more until
                    // we commit (a writer inserts its totals before its samples).
                    sqlx::query(
                        "UPDATE tick_totals_coverage SET covered_from_ms = covered_from_ms",
                    )
                    .execute(&mut *tx)
                    .await?;
                    if store.engine == Engine::Postgres {
                        sqlx::query("LOCK TABLE tick_totals IN SHARE ROW EXCLUSIVE MODE")
                            .execute(&mut *tx)
                            .await?;
                    }
                    let from: Option<i64> =
                        sqlx::query_scalar("SELECT MIN(covered_from_ms) FROM tick_totals_coverage")
                            .fetch_one(&mut *tx)
                            .await?;
                    let from = from.unwrap_or(COVERS_ALL);
                    if from <= COVERS_ALL {
                        tx.commit().await?;
                        return Ok(None);
                    }
                    let newest: Option<i64> = sqlx::query_scalar(
                        "SELECT MAX(at_ms) FROM worker_samples WHERE at_ms < $1",
                    )
                    .bind(from)
                    .fetch_one(&mut *tx)
                    .await?;
                    let Some(newest) = newest else {
                        sqlx::query("UPDATE tick_totals_coverage SET covered_from_ms = $1")
                            .bind(COVERS_ALL)
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await?;
                        return Ok(None);
                    };
                    let hi = newest + 1;
                    let lo = hi.saturating_sub(BACKFILL_WINDOW_MS);
                    sqlx::query("DELETE FROM tick_totals WHERE at_ms >= $1 AND at_ms < $2")
                        .bind(lo)
                        .bind(hi)
                        .execute(&mut *tx)
                        .await?;
                    let raw = sqlx::query(RAW)
                        .bind(lo)
                        .bind(hi)
                        .fetch_all(&mut *tx)
                        .await?;
                    let mut decoded = Vec::with_capacity(raw.len());
                    for row in &raw {
                        let sketch = |i: usize| -> Result<Option<Sketch>, sqlx::Error> {
                            let bytes: Option<&[u8]> = row.try_get(i)?;
                            Ok(bytes.and_then(|b| {
                                let s = Sketch::decode(b);
                                if s.is_none() {
                                    tracing::warn!("skipping an unreadable stored sketch");
                                }
                                s
                            }))
                        };
                        let mut counts = [0i64; 7];
                        for (k, c) in counts.iter_mut().enumerate() {
                            *c = row.try_get(7 + k)?;
                        }
                        decoded.push((
                            row.try_get::<i64, _>(0)?,
                            row.try_get::<String, _>(1)?,
                            row.try_get::<i64, _>(2)?,
                            row.try_get::<i64, _>(3)?,
                            row.try_get::<i64, _>(4)?,
                            row.try_get::<Option<i64>, _>(5)?,
                            row.try_get::<i64, _>(6)?,
                            counts,
                            row.try_get::<Option<f64>, _>(14)?,
                            row.try_get::<Option<i64>, _>(15)?,
                            sketch(16)?,
                            sketch(17)?,
                        ));
                    }
                    let rows = rollup(decoded.iter().map(|d| {
                        (
                            d.0,
                            d.1.as_str(),
                            Figures {
                                lifecycle: i16::try_from(d.2).unwrap_or(0),
                                active_tasks: d.3,
                                processed_total: d.4,
                                concurrency: d.5,
                                interval_ms: d.6,
                                counts: d.7,
                                cpu_percent: d.8,
                                memory_rss_bytes: d.9,
                                runtime: d.10.as_ref(),
                                queue_wait: d.11.as_ref(),
                            },
                        )
                    }));
                    insert_totals!(tx, Db, rows);
                    sqlx::query("UPDATE tick_totals_coverage SET covered_from_ms = $1")
                        .bind(lo)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Some(raw.len() as u64)
                });
                Ok::<_, Fail>(n)
            })
            .await?;
        let Some(n) = done else { break };
        windows += 1;
        rows_done += n;
        if windows.is_multiple_of(100) {
            tracing::info!(
                engine = store.engine.name(),
                windows,
                rows = rows_done,
                "rolling up the samples written before tick totals existed"
            );
        }
    }
    if windows > 0 {
        tracing::info!(
            engine = store.engine.name(),
            windows,
            rows = rows_done,
            "samples rolled up into tick totals"
        );
    }
    Ok(windows)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sketch(ms: &[u64]) -> Sketch {
        let mut s = Sketch::default();
        for v in ms {
            s.record(Duration::from_millis(*v));
        }
        s
    }

    #[test]
    fn totals_follow_sums_rules() {
        let (a, b) = (sketch(&[10, 20]), sketch(&[500]));
        let row = |lifecycle, concurrency, cpu, runtime| Figures {
            lifecycle,
            active_tasks: 3,
            processed_total: 100,
            concurrency,
            interval_ms: 30_000,
            counts: [1, 2, 3, 4, 5, 6, 7],
            cpu_percent: cpu,
            memory_rss_bytes: None,
            runtime,
            queue_wait: None,
        };
        let rows = rollup(
            [
                (
                    1_000,
                    "g1",
                    row(codes::LIFECYCLE_ALIVE, Some(8), None, Some(&a)),
                ),
                (1_000, "g1", row(2, None, Some(1.5), Some(&b))),
                (
                    1_000,
                    "g2",
                    row(codes::LIFECYCLE_ALIVE, Some(0), Some(2.0), None),
                ),
            ]
            .into_iter(),
        );
        assert_eq!(rows.len(), 3);
        let g1 = &rows[0].totals;
        assert_eq!(rows[0].grp.as_deref(), Some("g1"));
        assert_eq!((g1.samples, g1.alive, g1.active_tasks), (2, 1, 6));
        assert_eq!(g1.concurrency, Some(8));
        assert_eq!((g1.util_active, g1.util_concurrency), (Some(3), Some(8)));
        assert_eq!(g1.cpu_percent, Some(1.5));
        assert_eq!(g1.memory_rss_bytes, None);
        assert_eq!(g1.runtime_n, 2);
        assert_eq!(g1.runtime.count(), 3);
        assert_eq!(g1.queue_wait_n, 0);
        let g2 = &rows[1].totals;
        // Concurrency 0 is left out of utilisation, as the SQL does.
        assert_eq!((g2.util_active, g2.util_concurrency), (None, None));
        assert_eq!(g2.concurrency, Some(0));
        let fleet = &rows[2];
        assert_eq!(fleet.grp, None);
        assert_eq!(fleet.totals.samples, 3);
        assert_eq!(fleet.totals.counts[3], 12);
        assert_eq!(fleet.totals.cpu_percent, Some(3.5));
        assert_eq!(fleet.totals.runtime_n, 2);
        assert_eq!(fleet.totals.max_interval_ms, 30_000);
    }
}
