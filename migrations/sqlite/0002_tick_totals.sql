-- Per-tick totals of the worker samples (issue 14's targets), SQLite. The Postgres twin is
-- migrations/postgres/0002_tick_totals.sql.
--
-- A group's or the fleet's series sums the workers' rows of each sampling tick; over 7 days of
-- 1,000 workers that is 20 M rows to group, and a sketch per row to merge. The writer
-- therefore also writes, in the same transaction as the samples, one row per tick and group
-- (fleet = 0) and one per tick for the whole fleet (fleet = 1, grp = ''), holding what the
-- queries need: the sums of the sample columns (NULL when no row had a value, as SUM gives),
-- the workers alive, the parts of the rates (utilisation's active and concurrency over the
-- rows whose concurrency is known; the longest interval), and the tick's merged runtime and
-- queue-wait sketches with the number of sketches merged. Several rows for one tick and
-- subject are allowed (a tick written in more than one batch): queries sum them per tick
-- first, exactly as they sum worker rows.
CREATE TABLE tick_totals (
    at_ms            INTEGER NOT NULL,
    fleet            INTEGER NOT NULL,
    grp              TEXT    NOT NULL,
    samples          INTEGER NOT NULL,
    alive            INTEGER NOT NULL,
    active_tasks     INTEGER NOT NULL,
    processed_total  INTEGER NOT NULL,
    concurrency      INTEGER,
    util_active      INTEGER,
    util_concurrency INTEGER,
    interval_ms      INTEGER NOT NULL,
    max_interval_ms  INTEGER NOT NULL,
    received         INTEGER NOT NULL,
    started          INTEGER NOT NULL,
    succeeded        INTEGER NOT NULL,
    failed           INTEGER NOT NULL,
    retried          INTEGER NOT NULL,
    rejected         INTEGER NOT NULL,
    revoked          INTEGER NOT NULL,
    cpu_percent      REAL,
    memory_rss_bytes INTEGER,
    runtime_n        INTEGER NOT NULL,
    queue_wait_n     INTEGER NOT NULL,
    runtime          BLOB,
    queue_wait       BLOB
);
CREATE INDEX tick_totals_by_subject ON tick_totals (fleet, grp, at_ms);
CREATE INDEX tick_totals_by_time ON tick_totals (at_ms);

-- The rollup covers every tick at or after covered_from_ms. Samples written before this
-- migration are rolled up by the store after migrating (newest first, in bounded windows,
-- lowering the bound as it goes); until then a group or fleet series that starts before the
-- bound is read from the samples themselves.
CREATE TABLE tick_totals_coverage (
    covered_from_ms INTEGER NOT NULL
);
INSERT INTO tick_totals_coverage (covered_from_ms)
SELECT COALESCE(MAX(at_ms) + 1, -9223372036854775807) FROM worker_samples;
