//! Series: one subject and metric over a range, grouped by step in SQL.
//!
//! A step's bucket is `at_ms / step_ms * step_ms` (steps start at multiples of the step since
//! the epoch). Rows are first turned into ticks: a worker's or a queue's rows as they are; for a
//! group or the fleet, the workers' rows summed per sampling tick (`GROUP BY at_ms`). Then each
//! bucket gets COUNT/SUM/MIN/MAX of the tick values (NULLs excluded: absent is not 0), the
//! value at its latest tick that has one, and the sums of the numerators and denominators of
//! rates and ratios. Only distributions leave SQL: the step's sketches are merged here.
//!
//! Per-tick values by [`Source`]:
//! - `WorkerGauge(c)`, `WorkerCount(c)`: the column (summed over workers);
//! - `Alive`: 1 when the lifecycle is ALIVE, else 0 (summed: alive workers);
//! - `Throughput`: finished (succeeded + failed) over the tick's minutes; a tick's minutes are
//!   the longest interval among its rows (the sampling interval: a group's tasks per minute are
//!   the sum over its workers, not their mean); numerator and denominator are finished and
//!   minutes;
//! - `ErrorRate`: failed over finished (absent when nothing finished);
//! - `Utilisation`: active over concurrency, rows whose concurrency is unknown (or 0) left out
//!   of both;
//! - `QueueGauge(c)`: the queue's column;
//! - `Distribution(c)`: the non-NULL sketches of the step, merged.
//!
//! A step with no row, or whose rows hold no value, is left out.
//!
//! A group's or the fleet's tick is the rows that share an `at_ms`: the sampler stamps every
//! sample of a tick with the tick's time (see `SampleBatch`).
//!
//! Where `tick_totals` covers the range (always, once the samples written before it existed
//! are rolled up), a group's or the fleet's ticks are read from it instead: its rows hold the
//! same per-tick sums under the same column names (plus `alive`, `max_interval_ms`,
//! `util_active`, `util_concurrency` and the merged sketches with their counts), summed again
//! per tick in case a tick was written in several batches; everything after that is the same
//! SQL. A worker's ticks are read through `worker_samples_by_worker`, which carries the
//! columns the series read (`migrations/*/0003_worker_index.sql`); on Postgres, a worker's
//! numeric series read the narrower `worker_samples_numeric` (`0004`), without the sketches.
use futures_util::TryStreamExt;
use sqlx::{AssertSqlSafe, Row};
use warden_core::{
    history::{Bucket, SeriesQuery, Source, Subject},
    sketch::Sketch,
};

use crate::{Engine, Fail, Store, StoreError, codes, on_pool, totals};

/// Worker-sample columns a gauge or count may name.
const WORKER_COLUMNS: &[&str] = &[
    "active_tasks",
    "processed_total",
    "concurrency",
    "interval_ms",
    "cpu_percent",
    "memory_rss_bytes",
    "received",
    "started",
    "succeeded",
    "failed",
    "retried",
    "rejected",
    "revoked",
];
const DISTRIBUTION_COLUMNS: &[&str] = &["runtime", "queue_wait"];
const QUEUE_COLUMNS: &[&str] = &["depth", "unacked", "consumers"];

const D: &str = "DOUBLE PRECISION";

/// A bound value of the subject's filter.
enum Bind {
    Small(i16),
    Text(String),
}

/// How one metric is read: per-row expressions, and whether the tick value is a ratio.
struct Exprs {
    table: &'static str,
    value: String,
    numerator: String,
    denominator: String,
    /// How a group's rows combine into the tick's denominator.
    denominator_over_workers: &'static str,
    ratio: bool,
}

fn column(name: &'static str, allowed: &[&str]) -> Result<&'static str, StoreError> {
    allowed
        .contains(&name)
        .then_some(name)
        .ok_or_else(|| StoreError::NotSupported(format!("no stored column {name:?}")))
}

/// The expressions of `source`, over worker samples, or over `tick_totals` when `totals` (whose
/// columns hold the workers' sums under the same names, plus `alive`, `max_interval_ms`,
/// `util_active` and `util_concurrency`).
fn exprs(source: Source, totals: bool) -> Result<Exprs, StoreError> {
    let samples = if totals {
        "tick_totals"
    } else {
        "worker_samples"
    };
    let zero = format!("CAST(0 AS {D})");
    let null = format!("CAST(NULL AS {D})");
    let plain = |table, value: String| Exprs {
        table,
        value,
        numerator: zero.clone(),
        denominator: zero.clone(),
        denominator_over_workers: "SUM",
        ratio: false,
    };
    let ratio = |numerator: String, denominator: String, over: &'static str| Exprs {
        table: samples,
        value: null.clone(),
        numerator,
        denominator,
        denominator_over_workers: over,
        ratio: true,
    };
    Ok(match source {
        Source::WorkerGauge(c) | Source::WorkerCount(c) => plain(
            samples,
            format!("CAST({} AS {D})", column(c, WORKER_COLUMNS)?),
        ),
        Source::Alive if totals => plain(samples, format!("CAST(alive AS {D})")),
        Source::Alive => plain(
            samples,
            format!(
                "CAST(CASE WHEN lifecycle = {} THEN 1 ELSE 0 END AS {D})",
                codes::LIFECYCLE_ALIVE
            ),
        ),
        Source::QueueGauge(c) => plain(
            "queue_samples",
            format!("CAST({} AS {D})", column(c, QUEUE_COLUMNS)?),
        ),
        Source::Throughput => ratio(
            format!("CAST(succeeded + failed AS {D})"),
            format!(
                "CAST({} AS {D}) / CAST(60000 AS {D})",
                if totals {
                    "max_interval_ms"
                } else {
                    "interval_ms"
                }
            ),
            "MAX",
        ),
        Source::ErrorRate => ratio(
            format!("CAST(failed AS {D})"),
            format!("CAST(succeeded + failed AS {D})"),
            "SUM",
        ),
        Source::Utilisation if totals => ratio(
            format!("CAST(util_active AS {D})"),
            format!("CAST(util_concurrency AS {D})"),
            "SUM",
        ),
        Source::Utilisation => ratio(
            format!("CAST(CASE WHEN concurrency > 0 THEN active_tasks END AS {D})"),
            format!("CAST(CASE WHEN concurrency > 0 THEN concurrency END AS {D})"),
            "SUM",
        ),
        Source::Distribution(c) => {
            return Err(StoreError::NotSupported(format!(
                "distribution {c:?} is not a tick value"
            )));
        }
    })
}

/// The subject's filter (parameters from `$4`), and whether its rows are summed per tick.
fn filter(subject: &Subject) -> (String, Vec<Bind>, bool) {
    match subject {
        Subject::Worker(w) => (
            " AND backend = $4 AND scope = $5 AND id = $6".into(),
            vec![
                Bind::Small(codes::backend(w.backend)),
                Bind::Text(codes::text(&w.scope).into_owned()),
                Bind::Text(codes::text(&w.id).into_owned()),
            ],
            false,
        ),
        Subject::Group(g) => (
            " AND grp = $4".into(),
            vec![Bind::Text(codes::text(g).into_owned())],
            true,
        ),
        Subject::Queue(q) => (
            " AND queue = $4".into(),
            vec![Bind::Text(codes::text(q).into_owned())],
            false,
        ),
        Subject::Fleet => (String::new(), vec![], true),
    }
}

/// The filter of a group's or the fleet's rows of `tick_totals` (parameters from `$4`).
fn totals_filter(subject: &Subject) -> (String, Vec<Bind>) {
    match subject {
        Subject::Group(g) => (
            " AND fleet = 0 AND grp = $4".into(),
            vec![Bind::Text(codes::text(g).into_owned())],
        ),
        _ => (" AND fleet = 1 AND grp = ''".into(), vec![]),
    }
}

/// The SQL of a tick-valued metric. Parameters: `$1` start, `$2` end (ms), `$3` step (ms),
/// then the subject's.
fn ticks_sql(e: &Exprs, filter: &str, summed: bool, parts: &[&str], engine: Engine) -> String {
    let range = "at_ms >= $1 AND at_ms < $2";
    let ticks = if summed {
        format!(
            "SELECT at_ms AS t, SUM({v}) AS v, SUM({n}) AS num, {over}({d}) AS den \
             FROM {table} WHERE {range}{filter} GROUP BY at_ms",
            v = e.value,
            n = e.numerator,
            d = e.denominator,
            over = e.denominator_over_workers,
            table = e.table,
        )
    } else {
        parts
            .iter()
            .map(|part| {
                format!(
                    "SELECT at_ms AS t, {v} AS v, {n} AS num, {d} AS den \
                     FROM {table} WHERE {range}{filter}{part}",
                    v = e.value,
                    n = e.numerator,
                    d = e.denominator,
                    table = e.table,
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    };
    let value = if e.ratio {
        "CASE WHEN den > 0 THEN num / den END"
    } else {
        "v"
    };
    let valued =
        format!("SELECT t, t / $3 * $3 AS b, {value} AS v, num, den FROM ({ticks}) AS ticks");
    match engine {
        // The step's last value as an aggregate: the greatest (time, value) pair among the
        // ticks that have a value (a time in ms is exact in a double). No window, no sort: a
        // worker's rows arrive in time order from its index and are grouped as they come.
        Engine::Postgres => format!(
            "SELECT b, COUNT(v) AS n, SUM(v) AS total, MIN(v) AS lo, MAX(v) AS hi, \
                 SUM(num) AS num, SUM(den) AS den, \
                 (MAX(ARRAY[CAST(t AS {D}), v]) FILTER (WHERE v IS NOT NULL))[2] AS latest \
             FROM ({valued}) AS valued \
             GROUP BY b HAVING COUNT(v) > 0 ORDER BY b"
        ),
        // SQLite has no arrays: the value at the step's latest valued tick, by a window.
        Engine::Sqlite => format!(
            "SELECT b, COUNT(v) AS n, SUM(v) AS total, MIN(v) AS lo, MAX(v) AS hi, \
                 SUM(num) AS num, SUM(den) AS den, MAX(latest) AS latest \
             FROM (SELECT b, v, num, den, FIRST_VALUE(v) OVER (PARTITION BY b \
                       ORDER BY CASE WHEN v IS NULL THEN 1 ELSE 0 END, t DESC) AS latest \
                   FROM ({valued}) AS valued) AS bucketed \
             GROUP BY b HAVING COUNT(v) > 0 ORDER BY b"
        ),
    }
}

/// A distribution's sketches in time order, each with the number of sketches it merges (1
/// for a worker row; `tick_totals` keeps the count).
fn distribution_sql(col: &str, filter: &str, totals: bool, parts: &[&str]) -> String {
    let (table, n) = if totals {
        ("tick_totals", format!("{col}_n"))
    } else {
        ("worker_samples", "CAST(1 AS BIGINT)".to_owned())
    };
    let rows = parts
        .iter()
        .map(|part| {
            format!(
                "SELECT at_ms AS t, {col} AS d, {n} AS n FROM {table} \
                 WHERE at_ms >= $1 AND at_ms < $2 AND {col} IS NOT NULL{filter}{part}"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    format!("SELECT t / $3 * $3 AS b, d, n FROM ({rows}) AS sketches ORDER BY t")
}

/// Postgres: a worker's rows whose sketches fit in its covering index, which is partial
/// (`migrations/postgres/0003_worker_index.sql`: an index row has a bounded size), and the
/// others, found by a small index of their own. A worker's distribution series reads both, one index-only
/// scan and one that is empty unless a sketch was unusually large. The predicates are the
/// indexes' own, word for word, so that the planner can prove them.
pub(crate) const SMALL_SKETCHES: &str =
    "COALESCE(octet_length(runtime), 0) + COALESCE(octet_length(queue_wait), 0) <= 1000";
pub(crate) const LARGE_SKETCHES: &str =
    "COALESCE(octet_length(runtime), 0) + COALESCE(octet_length(queue_wait), 0) > 1000";

pub(crate) async fn buckets(store: &Store, q: &SeriesQuery) -> Result<Vec<Bucket>, StoreError> {
    if !q.metric.subjects.contains(&q.subject.kind()) {
        return Err(StoreError::NotSupported(format!(
            "metric {} for a {:?} subject",
            q.metric.name,
            q.subject.kind()
        )));
    }
    let step = i64::try_from(q.step.as_millis()).unwrap_or(i64::MAX);
    if step <= 0 {
        return Err(StoreError::NotSupported("a step shorter than 1 ms".into()));
    }
    let (start, end) = (codes::ms(q.start), codes::ms(q.end));
    if start >= end {
        return Ok(Vec::new());
    }
    let (filter, binds, summed) = filter(&q.subject);
    // A group's or the fleet's worker figures come from the per-tick totals where they cover
    // the range (see `totals.rs`): the same ticks, summed once at write time.
    let totals = summed
        && !matches!(q.metric.source, Source::QueueGauge(_))
        && totals::covers(store, start).await?;
    let (filter, binds) = if totals {
        totals_filter(&q.subject)
    } else {
        (filter, binds)
    };
    let distribution = match q.metric.source {
        Source::Distribution(c) => Some(column(c, DISTRIBUTION_COLUMNS)?),
        _ => None,
    };
    let split = [
        format!(" AND {SMALL_SKETCHES}"),
        format!(" AND {LARGE_SKETCHES}"),
    ];
    // A worker's sketches on Postgres come from the pair of partial indexes; its numeric
    // series from the narrow numeric index, which needs no predicate (0004).
    let parts: Vec<&str> = match (&q.subject, store.engine, distribution) {
        (Subject::Worker(_), Engine::Postgres, Some(_)) => {
            split.iter().map(String::as_str).collect()
        }
        _ => vec![""],
    };
    let sql = match distribution {
        Some(col) => distribution_sql(col, &filter, totals, &parts),
        None => ticks_sql(
            &exprs(q.metric.source, totals)?,
            &filter,
            summed,
            &parts,
            store.engine,
        ),
    };
    store
        .call(store.options.timeout, async {
            on_pool!(store, |pool, _Db| {
                let mut query = sqlx::query(AssertSqlSafe(sql.as_str()))
                    .bind(start)
                    .bind(end)
                    .bind(step);
                for b in &binds {
                    query = match b {
                        Bind::Small(v) => query.bind(*v),
                        Bind::Text(v) => query.bind(v.as_str()),
                    };
                }
                let mut out: Vec<Bucket> = Vec::new();
                if distribution.is_some() {
                    let mut rows = query.fetch(pool);
                    let mut current: Option<(i64, Sketch, u64)> = None;
                    while let Some(row) = rows.try_next().await? {
                        let b: i64 = row.try_get(0)?;
                        let bytes: &[u8] = row.try_get(1)?;
                        let merges = u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0);
                        let Some(sketch) = Sketch::decode(bytes) else {
                            tracing::warn!(bucket = b, "skipping an unreadable stored sketch");
                            continue;
                        };
                        match &mut current {
                            Some((at, merged, n)) if *at == b => {
                                merged.merge(&sketch);
                                *n += merges;
                            }
                            _ => {
                                out.extend(current.take().map(distribution_bucket));
                                current = Some((b, sketch, merges));
                            }
                        }
                    }
                    out.extend(current.take().map(distribution_bucket));
                } else {
                    let rows = query.fetch_all(pool).await?;
                    for row in rows {
                        let b: i64 = row.try_get(0)?;
                        let n: i64 = row.try_get(1)?;
                        let f =
                            |i: usize| row.try_get::<Option<f64>, _>(i).map(|v| v.unwrap_or(0.0));
                        out.push(Bucket {
                            start: codes::time(b),
                            count: u64::try_from(n).unwrap_or(0),
                            sum: f(2)?,
                            min: f(3)?,
                            max: f(4)?,
                            numerator: f(5)?,
                            denominator: f(6)?,
                            last: f(7)?,
                            distribution: None,
                        });
                    }
                }
                Ok::<_, Fail>(out)
            })
        })
        .await
}

/// A step of a distribution: its merged sketch; `count` is the number of sketches merged.
fn distribution_bucket((start, merged, n): (i64, Sketch, u64)) -> Bucket {
    Bucket {
        start: codes::time(start),
        count: n,
        distribution: (!merged.is_empty()).then_some(merged),
        ..Bucket::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker query's predicates are those of the Postgres indexes, or the planner cannot
    /// use them (and a worker's series reads the heap again).
    #[test]
    fn the_split_predicates_are_the_indexes_own() {
        let migration = include_str!("../../../migrations/postgres/0003_worker_index.sql");
        let flat = migration.split_whitespace().collect::<Vec<_>>().join(" ");
        for predicate in [SMALL_SKETCHES, LARGE_SKETCHES] {
            assert!(flat.contains(&format!("WHERE {predicate};")), "{predicate}");
        }
    }
}
