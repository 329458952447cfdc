-- A worker's series from the index alone (issue 14's targets), Postgres. The SQLite twin is
-- migrations/sqlite/0003_worker_index.sql.
--
-- A worker's 7 days are 20,160 rows, each on a heap page of its own (a tick's 1,000 rows are
-- written together), but a few hundred pages of an index that carries the columns the series
-- read: an index-only scan. An index row has a bounded size (~2.7 kB) and a sketch's encoding
-- has not quite, so the index is partial: rows whose two sketches take at most 1,000 bytes
-- (all but freak ones; ~40 bytes is usual). The others are found by a small index of their
-- own, and read from the heap; a worker's series reads both (crates/store/src/series.rs, whose
-- predicates are these, word for word). An index-only scan skips the heap on pages the
-- visibility map marks all-visible, which vacuum does: insert-driven autovacuum runs here
-- after 1 % of the table was inserted (the default is 20 %), so that only the most recent rows
-- need a heap fetch.
--
-- Groups and the fleet read tick_totals (0002): the samples need no index by group any more.
DROP INDEX worker_samples_by_worker;
CREATE INDEX worker_samples_by_worker ON worker_samples (backend, scope, id, at_ms)
    INCLUDE (lifecycle, active_tasks, processed_total, concurrency, interval_ms, received, started, succeeded,
    failed, retried, rejected, revoked, cpu_percent, memory_rss_bytes, runtime, queue_wait)
    WHERE COALESCE(octet_length(runtime), 0) + COALESCE(octet_length(queue_wait), 0) <= 1000;
CREATE INDEX worker_samples_by_worker_large ON worker_samples (backend, scope, id, at_ms)
    WHERE COALESCE(octet_length(runtime), 0) + COALESCE(octet_length(queue_wait), 0) > 1000;
DROP INDEX worker_samples_by_group;
ALTER TABLE worker_samples SET (autovacuum_vacuum_insert_scale_factor = 0.01);
