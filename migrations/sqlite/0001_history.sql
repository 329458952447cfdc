-- History (issue 14), SQLite. The Postgres twin is migrations/postgres/0001_history.sql: the
-- same tables, columns and indexes, with Postgres's types.
--
-- Conventions (crates/store/src/codes.rs): times are integer milliseconds since the Unix epoch
-- (`*_ms`); enums are small integer codes (backend, activity, lifecycle, health, severity) and
-- event kinds their names; distributions are warden_core::sketch encodings (NULL when empty);
-- a resource figure no source provided is NULL, never 0.

-- One row per worker per sampling tick.
CREATE TABLE worker_samples (
    at_ms            INTEGER NOT NULL,
    backend          INTEGER NOT NULL,
    scope            TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    grp              TEXT    NOT NULL,
    activity         INTEGER NOT NULL,
    lifecycle        INTEGER NOT NULL,
    health           INTEGER,
    active_tasks     INTEGER NOT NULL,
    processed_total  INTEGER NOT NULL,
    concurrency      INTEGER,
    interval_ms      INTEGER NOT NULL,
    received         INTEGER NOT NULL,
    started          INTEGER NOT NULL,
    succeeded        INTEGER NOT NULL,
    failed           INTEGER NOT NULL,
    retried          INTEGER NOT NULL,
    rejected         INTEGER NOT NULL,
    revoked          INTEGER NOT NULL,
    runtime          BLOB,
    queue_wait       BLOB,
    cpu_percent      REAL,
    memory_rss_bytes INTEGER
);
CREATE INDEX worker_samples_by_worker ON worker_samples (backend, scope, id, at_ms);
CREATE INDEX worker_samples_by_group ON worker_samples (grp, at_ms);
CREATE INDEX worker_samples_by_time ON worker_samples (at_ms);

-- One row per queue per sampling tick.
CREATE TABLE queue_samples (
    at_ms     INTEGER NOT NULL,
    queue     TEXT    NOT NULL,
    depth     INTEGER NOT NULL,
    unacked   INTEGER NOT NULL,
    consumers INTEGER NOT NULL
);
CREATE INDEX queue_samples_by_queue ON queue_samples (queue, at_ms);
CREATE INDEX queue_samples_by_time ON queue_samples (at_ms);

-- One row per worker group per sampling tick.
CREATE TABLE group_samples (
    at_ms   INTEGER NOT NULL,
    backend INTEGER NOT NULL,
    grp     TEXT    NOT NULL,
    workers INTEGER NOT NULL,
    alive   INTEGER NOT NULL
);
CREATE INDEX group_samples_by_group ON group_samples (grp, at_ms);
CREATE INDEX group_samples_by_time ON group_samples (at_ms);

-- What happened to the fleet; ids grow with insertion and are never reused (keyset paging).
-- attributes: a JSON array of {"k": name, "t": type, "v": value}.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms      INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    severity   INTEGER NOT NULL,
    backend    INTEGER,
    scope      TEXT,
    worker_id  TEXT,
    grp        TEXT,
    message    TEXT    NOT NULL,
    attributes TEXT    NOT NULL
);
CREATE INDEX events_by_time ON events (at_ms);
CREATE INDEX events_by_worker ON events (backend, scope, worker_id, id);
CREATE INDEX events_by_group ON events (grp, id);

-- The workers a restarted warden remembers.
CREATE TABLE workers (
    backend       INTEGER NOT NULL,
    scope         TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    grp           TEXT    NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    lifecycle     INTEGER NOT NULL,
    PRIMARY KEY (backend, scope, id)
);
