-- A worker's series from the index alone (issue 14's targets), SQLite. The Postgres twin is
-- migrations/postgres/0003_worker_index.sql.
--
-- A worker's 7 days are 20,160 rows spread over the whole table (a tick's 1,000 rows are
-- written together), but neighbours in an index that carries the columns the series read: a
-- covering index, the table is not read. The sketches are in it too (SQLite bounds no index
-- entry; Postgres's index is partial for that): ~40 bytes a row for runtime and queue-wait series
-- of a worker that read ~600 pages instead of 20,000.
--
-- Groups and the fleet read tick_totals (0002): the samples need no index by group any more.
DROP INDEX worker_samples_by_worker;
CREATE INDEX worker_samples_by_worker ON worker_samples (backend, scope, id, at_ms,
    lifecycle, active_tasks, processed_total, concurrency, interval_ms, received, started, succeeded,
    failed, retried, rejected, revoked, cpu_percent, memory_rss_bytes, runtime, queue_wait);
DROP INDEX worker_samples_by_group;
