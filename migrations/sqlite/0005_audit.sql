-- The audit trail (issue 15), SQLite. The Postgres twin is migrations/postgres/0005_audit.sql.
-- One row per mutating control call, allowed or denied; append-only (triggers refuse UPDATE
-- and DELETE). `seq` grows with insertion (keyset paging, newest first); lists are JSON text:
-- targets an array of names, outcomes an array of [worker, code, message], counts and
-- parameters objects.
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    audit_id   TEXT    NOT NULL UNIQUE,
    at_ms      INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    service    TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    targets    TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    dry_run    INTEGER NOT NULL,
    request_id TEXT    NOT NULL,
    allowed    INTEGER NOT NULL,
    code       TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    counts     TEXT    NOT NULL,
    outcomes   TEXT    NOT NULL,
    trace_id   TEXT    NOT NULL,
    parameters TEXT    NOT NULL,
    operation  TEXT    NOT NULL
);
CREATE INDEX audit_by_actor ON audit (actor, seq);
CREATE INDEX audit_by_action ON audit (action, seq);
CREATE INDEX audit_by_request ON audit (request_id, seq);
CREATE INDEX audit_by_time ON audit (at_ms);

-- Which targets each entry names, for the `worker` filter.
CREATE TABLE audit_targets (
    seq    INTEGER NOT NULL REFERENCES audit (seq),
    target TEXT    NOT NULL
);
CREATE INDEX audit_targets_by_target ON audit_targets (target, seq);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
