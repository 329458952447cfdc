-- Nothing to do on SQLite: its covering index of worker samples (0003) carries the numeric
-- columns and the sketches, and answers a worker's 7-day numeric series within issue 14's
-- target. The Postgres twin (migrations/postgres/0004_worker_numeric_index.sql) adds a narrow
-- numeric index; the file is here so that both engines have the same versions.
SELECT 1;
