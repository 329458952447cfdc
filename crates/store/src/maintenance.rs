//! Known workers, the oldest sample, retention and size.
use std::time::{Duration, SystemTime};

use sqlx::{AssertSqlSafe, Row};
use warden_core::{
    history::{KnownWorker, Retention, StoreSize, SweepReport},
    model::WorkerKey,
};

use crate::{Engine, Fail, Store, StoreError, codes, on_pool};

/// Every table, in the order sizes report them.
pub(crate) const TABLES: [&str; 6] = [
    "worker_samples",
    "queue_samples",
    "group_samples",
    "events",
    "workers",
    "tick_totals",
];

/// Tables of at most this many rows are counted exactly by [`size`]; larger ones estimated.
pub(crate) const EXACT_ROWS_UP_TO: i64 = 10_000;

pub(crate) async fn known_workers(store: &Store) -> Result<Vec<KnownWorker>, StoreError> {
    const SQL: &str = "SELECT backend, scope, id, grp, first_seen_ms, last_seen_ms, lifecycle \
         FROM workers ORDER BY backend, scope, id";
    store
        .call(store.options.timeout, async {
            on_pool!(store, |pool, _Db| {
                let rows = sqlx::query(SQL).fetch_all(pool).await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let backend: i16 = row.try_get(0)?;
                    let lifecycle: i16 = row.try_get(6)?;
                    let (Some(backend), Some(lifecycle)) = (
                        codes::backend_from(backend),
                        codes::lifecycle_from(lifecycle),
                    ) else {
                        return Err(Fail::Store(store.failed(format!(
                            "unreadable known worker (backend {backend}, lifecycle {lifecycle})"
                        ))));
                    };
                    out.push(KnownWorker {
                        key: WorkerKey::new(
                            backend,
                            row.try_get::<String, _>(1)?,
                            row.try_get::<String, _>(2)?,
                        ),
                        group: row.try_get::<String, _>(3)?.into(),
                        first_seen: codes::time(row.try_get(4)?),
                        last_seen: codes::time(row.try_get(5)?),
                        lifecycle,
                    });
                }
                Ok::<_, Fail>(out)
            })
        })
        .await
}

pub(crate) async fn oldest(store: &Store) -> Result<Option<SystemTime>, StoreError> {
    store
        .call(store.options.timeout, async {
            let min: Option<i64> = on_pool!(store, |pool, _Db| {
                sqlx::query_scalar("SELECT MIN(at_ms) FROM worker_samples")
                    .fetch_one(pool)
                    .await?
            });
            Ok::<_, Fail>(min.map(codes::time))
        })
        .await
}

/// Deletes, table by table, rows with `at_ms < now - retention` (a row exactly at the bound
/// stays), at most `sweep_batch` rows per statement, until a statement deletes fewer. Each
/// statement is its own transaction and has the store's timeout: a long sweep never holds a
/// lock for long.
pub(crate) async fn sweep(
    store: &Store,
    now: SystemTime,
    retention: Retention,
) -> Result<SweepReport, StoreError> {
    let bound = |keep: Duration| codes::ms(now.checked_sub(keep).unwrap_or(SystemTime::UNIX_EPOCH));
    let batch = i64::from(store.options.sweep_batch.max(1));
    let mut report = SweepReport::default();
    for table in [
        "worker_samples",
        "queue_samples",
        "group_samples",
        "events",
        "tick_totals",
    ] {
        let keep = if table == "tick_totals" {
            retention.keep("worker_samples")
        } else {
            retention.keep(table)
        };
        let mut before = bound(keep);
        if let Some(cap) = retention.max_rows(table) {
            // The oldest kept row's time under the cap: rows at or before the (cap + 1)-th
            // newest go, so that at most `cap` rows remain.
            if let Some(over) = cap_bound(store, table, cap).await? {
                before = before.max(over + 1);
            }
        }
        let deleted = delete_before(store, table, before, batch).await?;
        if deleted > 0 {
            tracing::debug!(table, deleted, "history swept");
        }
        report.deleted.push((table, deleted));
    }
    Ok(report)
}

/// Deletes `table`'s rows with `at_ms < before`, `batch` at a time.
async fn delete_before(
    store: &Store,
    table: &'static str,
    before: i64,
    batch: i64,
) -> Result<u64, StoreError> {
    let sql = delete_sql(store.engine, table);
    let mut deleted = 0u64;
    loop {
        let n = store
            .call(store.options.timeout, async {
                let n = on_pool!(store, |pool, _Db| {
                    sqlx::query(AssertSqlSafe(sql.as_str()))
                        .bind(before)
                        .bind(batch)
                        .execute(pool)
                        .await?
                        .rows_affected()
                });
                Ok::<_, Fail>(n)
            })
            .await?;
        deleted += n;
        if n < batch.unsigned_abs() {
            return Ok(deleted);
        }
    }
}

/// The time of `table`'s (cap + 1)-th newest row, if it has that many: the newest time a
/// row cap deletes. Read through the table's time index (every retained table has one).
async fn cap_bound(store: &Store, table: &str, cap: u64) -> Result<Option<i64>, StoreError> {
    let offset = i64::try_from(cap).unwrap_or(i64::MAX);
    let sql = format!("SELECT at_ms FROM {table} ORDER BY at_ms DESC LIMIT 1 OFFSET $1");
    store
        .call(store.options.timeout, async {
            let at: Option<i64> = on_pool!(store, |pool, _Db| {
                sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
                    .bind(offset)
                    .fetch_optional(pool)
                    .await?
            });
            Ok::<_, Fail>(at)
        })
        .await
}

/// A bounded delete of rows older than `$1`, at most `$2` of them: by row identifier, which
/// is the one place the dialects differ (SQLite's `rowid`, Postgres's `ctid`, read through a
/// TID scan).
fn delete_sql(engine: Engine, table: &str) -> String {
    match engine {
        Engine::Sqlite => format!(
            "DELETE FROM {table} WHERE rowid IN \
             (SELECT rowid FROM {table} WHERE at_ms < $1 LIMIT $2)"
        ),
        Engine::Postgres => format!(
            "DELETE FROM {table} WHERE ctid = ANY(ARRAY( \
             SELECT ctid FROM {table} WHERE at_ms < $1 LIMIT $2))"
        ),
    }
}

/// An estimate of a large table's rows, cheap whatever its size: SQLite, the span of its row
/// ids (rows are appended with increasing ids and retention deletes the oldest, so this is
/// exact until rows in the middle are deleted, and never below the count); Postgres, the
/// planner's own estimate (`reltuples` per page times the pages the table has now), or, for
/// a table never vacuumed nor analysed, the statistics' live rows.
fn estimate_sql(engine: Engine, table: &str) -> String {
    match engine {
        // One MIN or MAX per SELECT: SQLite reads each from the end of the b-tree only then
        // (both in one SELECT scan the table).
        Engine::Sqlite => format!(
            "SELECT COALESCE((SELECT MAX(rowid) FROM {table}) - (SELECT MIN(rowid) FROM {table}) + 1, 0)"
        ),
        Engine::Postgres => format!(
            "SELECT CAST(CASE WHEN c.reltuples > 0 AND c.relpages > 0 \
                 THEN c.reltuples / c.relpages * (pg_relation_size(c.oid) \
                     / CAST(current_setting('block_size') AS BIGINT)) \
                 ELSE COALESCE(pg_stat_get_live_tuples(c.oid), 0) END AS BIGINT) \
             FROM pg_class AS c WHERE c.oid = to_regclass('{table}')"
        ),
    }
}

/// Bytes on disk, and rows per table: counted exactly up to [`EXACT_ROWS_UP_TO`] (a bounded
/// count), estimated above ([`estimate_sql`]), so that the cost does not grow with the store.
pub(crate) async fn size(store: &Store) -> Result<StoreSize, StoreError> {
    let bytes_sql = match store.engine {
        Engine::Sqlite => {
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()".to_owned()
        }
        Engine::Postgres => format!(
            "SELECT CAST(COALESCE(SUM(pg_total_relation_size(CAST(t AS regclass))), 0) AS BIGINT) \
             FROM (VALUES {}) AS tables(t)",
            TABLES
                .iter()
                .map(|t| format!("('{t}')"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    store
        .call(store.options.timeout, async {
            on_pool!(store, |pool, _Db| {
                let bytes: i64 = sqlx::query_scalar(AssertSqlSafe(bytes_sql.as_str()))
                    .fetch_one(pool)
                    .await?;
                let mut rows = Vec::with_capacity(TABLES.len());
                for table in TABLES {
                    let counted: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                        "SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT {}) AS bounded",
                        EXACT_ROWS_UP_TO + 1
                    )))
                    .fetch_one(pool)
                    .await?;
                    let n = if counted <= EXACT_ROWS_UP_TO {
                        counted
                    } else {
                        let estimate: Option<i64> =
                            sqlx::query_scalar(AssertSqlSafe(estimate_sql(store.engine, table)))
                                .fetch_one(pool)
                                .await?;
                        estimate.unwrap_or(0).max(counted)
                    };
                    rows.push((table, n.unsigned_abs()));
                }
                Ok::<_, Fail>(StoreSize {
                    bytes: bytes.unsigned_abs(),
                    rows,
                })
            })
        })
        .await
}
