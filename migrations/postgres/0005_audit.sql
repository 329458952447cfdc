-- The audit trail (issue 15), Postgres. The SQLite twin is migrations/sqlite/0005_audit.sql:
-- the same tables, columns and indexes, with Postgres's types. Append-only: a trigger refuses
-- UPDATE and DELETE.
CREATE TABLE audit (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    audit_id   TEXT     NOT NULL UNIQUE,
    at_ms      BIGINT   NOT NULL,
    actor      TEXT     NOT NULL,
    role       TEXT     NOT NULL,
    service    TEXT     NOT NULL,
    action     TEXT     NOT NULL,
    targets    TEXT     NOT NULL,
    reason     TEXT     NOT NULL,
    dry_run    SMALLINT NOT NULL,
    request_id TEXT     NOT NULL,
    allowed    SMALLINT NOT NULL,
    code       TEXT     NOT NULL,
    message    TEXT     NOT NULL,
    counts     TEXT     NOT NULL,
    outcomes   TEXT     NOT NULL,
    trace_id   TEXT     NOT NULL,
    parameters TEXT     NOT NULL,
    operation  TEXT     NOT NULL
);
CREATE INDEX audit_by_actor ON audit (actor, seq);
CREATE INDEX audit_by_action ON audit (action, seq);
CREATE INDEX audit_by_request ON audit (request_id, seq);
CREATE INDEX audit_by_time ON audit (at_ms);

-- Which targets each entry names, for the `worker` filter.
CREATE TABLE audit_targets (
    seq    BIGINT NOT NULL REFERENCES audit (seq),
    target TEXT   NOT NULL
);
CREATE INDEX audit_targets_by_target ON audit_targets (target, seq);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only';
END
$$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
