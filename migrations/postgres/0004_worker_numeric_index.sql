-- A worker's numeric series from a narrow index (issue 14's one-worker target on Postgres's
-- default 128 MB of shared buffers), Postgres. The SQLite twin is a no-op: its covering index
-- (0003) already answers these queries within the target.
--
-- 0003's covering index carries the sketches too, which doubles its rows (543 bytes per
-- sample row): a worker's 7-day throughput read 20,160 of those rows, ~11 MB, and missed
-- 50 ms whenever they were not in shared buffers. The numeric series (throughput, active
-- tasks, utilisation, error rate, CPU, memory, counts) need none of the sketches, so they
-- read this index instead: the same key, only the numeric columns, about a quarter of the
-- size. A worker's distribution series still read 0003's pair of partial indexes
-- (crates/store/src/series.rs chooses).
CREATE INDEX worker_samples_numeric ON worker_samples (backend, scope, id, at_ms)
    INCLUDE (lifecycle, active_tasks, processed_total, concurrency, interval_ms, received, started, succeeded,
    failed, retried, rejected, revoked, cpu_percent, memory_rss_bytes);
