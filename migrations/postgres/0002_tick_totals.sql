-- Per-tick totals of the worker samples (issue 14's targets), Postgres. The SQLite twin is
-- migrations/sqlite/0002_tick_totals.sql, which says what the rows hold.
CREATE TABLE tick_totals (
    at_ms            BIGINT           NOT NULL,
    samples          BIGINT           NOT NULL,
    alive            BIGINT           NOT NULL,
    active_tasks     BIGINT           NOT NULL,
    processed_total  BIGINT           NOT NULL,
    concurrency      BIGINT,
    util_active      BIGINT,
    util_concurrency BIGINT,
    interval_ms      BIGINT           NOT NULL,
    max_interval_ms  BIGINT           NOT NULL,
    received         BIGINT           NOT NULL,
    started          BIGINT           NOT NULL,
    succeeded        BIGINT           NOT NULL,
    failed           BIGINT           NOT NULL,
    retried          BIGINT           NOT NULL,
    rejected         BIGINT           NOT NULL,
    revoked          BIGINT           NOT NULL,
    cpu_percent      DOUBLE PRECISION,
    memory_rss_bytes BIGINT,
    runtime_n        BIGINT           NOT NULL,
    queue_wait_n     BIGINT           NOT NULL,
    fleet            SMALLINT         NOT NULL,
    grp              TEXT             NOT NULL,
    runtime          BYTEA,
    queue_wait       BYTEA
);
CREATE INDEX tick_totals_by_subject ON tick_totals (fleet, grp, at_ms);
CREATE INDEX tick_totals_by_time ON tick_totals (at_ms);

-- The rollup covers every tick at or after covered_from_ms (see the SQLite twin).
CREATE TABLE tick_totals_coverage (
    covered_from_ms BIGINT NOT NULL
);
INSERT INTO tick_totals_coverage (covered_from_ms)
SELECT COALESCE(MAX(at_ms) + 1, -9223372036854775807) FROM worker_samples;
