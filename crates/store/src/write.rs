//! Writes: one transaction per batch, multi-row inserts (a statement per [`ROWS_PER_INSERT`]
//! rows, not per row), the worker samples' per-tick totals first (`totals.rs`), known workers
//! upserted, forgotten workers deleted (after the upserts:
//! a worker both upserted and forgotten in one batch ends forgotten). Text goes through
//! [`codes::text`] (NUL characters replaced).
use std::{borrow::Cow, collections::HashMap};

use sqlx::QueryBuilder;
use warden_core::{
    history::{KnownWorker, WriteBatch},
    model::WorkerKey,
    sketch::Sketch,
};

use crate::{Fail, Store, StoreError, codes, events, on_pool, totals};

/// Rows per INSERT statement: 1,000 worker samples (23 columns) stay under SQLite's 32,766
/// variables and Postgres's 65,535 parameters.
pub(crate) const ROWS_PER_INSERT: usize = 1_000;

const WORKER_SAMPLES: &str = "INSERT INTO worker_samples (at_ms, backend, scope, id, grp, \
     activity, lifecycle, health, active_tasks, processed_total, concurrency, interval_ms, \
     received, started, succeeded, failed, retried, rejected, revoked, runtime, queue_wait, \
     cpu_percent, memory_rss_bytes) ";
const QUEUE_SAMPLES: &str = "INSERT INTO queue_samples (at_ms, queue, depth, unacked, consumers) ";
const GROUP_SAMPLES: &str = "INSERT INTO group_samples (at_ms, backend, grp, workers, alive) ";
const EVENTS: &str = "INSERT INTO events (at_ms, kind, severity, backend, scope, worker_id, grp, \
     message, attributes) ";
const WORKERS: &str = "INSERT INTO workers (backend, scope, id, grp, first_seen_ms, last_seen_ms, \
     lifecycle) ";
const WORKERS_UPSERT: &str = " ON CONFLICT (backend, scope, id) DO UPDATE SET \
     grp = excluded.grp, \
     first_seen_ms = CASE WHEN workers.first_seen_ms < excluded.first_seen_ms \
         THEN workers.first_seen_ms ELSE excluded.first_seen_ms END, \
     last_seen_ms = CASE WHEN workers.last_seen_ms > excluded.last_seen_ms \
         THEN workers.last_seen_ms ELSE excluded.last_seen_ms END, \
     lifecycle = excluded.lifecycle";
const FORGET: &str = "DELETE FROM workers WHERE backend = $1 AND scope = $2 AND id = $3";

pub(crate) fn blob(s: &Sketch) -> Option<Vec<u8>> {
    (!s.is_empty()).then(|| {
        let mut out = Vec::new();
        s.encode(&mut out);
        out
    })
}

/// One worker sample as bound: plain values, sketches encoded.
struct WorkerRow<'a> {
    at: i64,
    backend: i16,
    scope: Cow<'a, str>,
    id: Cow<'a, str>,
    grp: Cow<'a, str>,
    activity: i16,
    lifecycle: i16,
    health: Option<i16>,
    active: i32,
    processed: i64,
    concurrency: Option<i32>,
    interval: i32,
    counts: [i32; 7],
    runtime: Option<Vec<u8>>,
    queue_wait: Option<Vec<u8>>,
    cpu: Option<f64>,
    rss: Option<i64>,
}

struct EventRow<'a> {
    at: i64,
    kind: &'static str,
    severity: i16,
    backend: Option<i16>,
    scope: Option<Cow<'a, str>>,
    worker: Option<Cow<'a, str>>,
    grp: Option<Cow<'a, str>>,
    message: Cow<'a, str>,
    attributes: String,
}

/// Known workers with one row per key (a batch may name a key twice: the later state wins,
/// the earlier first sighting is kept), so that one upsert never touches a row twice.
fn dedup(workers: &[KnownWorker]) -> Vec<KnownWorker> {
    let mut at: HashMap<&WorkerKey, usize> = HashMap::new();
    let mut out: Vec<KnownWorker> = Vec::with_capacity(workers.len());
    for w in workers {
        match at.get(&w.key) {
            Some(&i) => {
                let first_seen = out[i].first_seen.min(w.first_seen);
                out[i] = KnownWorker {
                    first_seen,
                    ..w.clone()
                };
            }
            None => {
                at.insert(&w.key, out.len());
                out.push(w.clone());
            }
        }
    }
    out
}

pub(crate) async fn write(store: &Store, batch: &WriteBatch) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let workers: Vec<WorkerRow<'_>> = batch
        .samples
        .workers
        .iter()
        .map(|s| WorkerRow {
            at: codes::ms(s.at),
            backend: codes::backend(s.worker.backend),
            scope: codes::text(&s.worker.scope),
            id: codes::text(&s.worker.id),
            grp: codes::text(&s.group),
            activity: codes::activity(s.activity),
            lifecycle: codes::lifecycle(s.lifecycle),
            health: s.health.map(codes::health),
            active: codes::i32_of(s.active_tasks),
            processed: codes::i64_of(s.processed_total),
            concurrency: s.concurrency.map(codes::i32_of),
            interval: codes::ms_i32(s.interval),
            counts: [
                s.tasks.received,
                s.tasks.started,
                s.tasks.succeeded,
                s.tasks.failed,
                s.tasks.retried,
                s.tasks.rejected,
                s.tasks.revoked,
            ]
            .map(codes::i32_of),
            runtime: blob(&s.runtime),
            queue_wait: blob(&s.queue_wait),
            cpu: s.cpu_percent,
            rss: s.memory_rss_bytes.map(codes::i64_of),
        })
        .collect();
    let event_rows: Vec<EventRow<'_>> = batch
        .events
        .iter()
        .map(|e| EventRow {
            at: codes::ms(e.at),
            kind: codes::kind(e.kind),
            severity: codes::severity(e.severity),
            backend: e.worker.as_ref().map(|w| codes::backend(w.backend)),
            scope: e.worker.as_ref().map(|w| codes::text(&w.scope)),
            worker: e.worker.as_ref().map(|w| codes::text(&w.id)),
            grp: e.group.as_deref().map(codes::text),
            message: codes::text(&e.message),
            attributes: events::encode_attributes(&e.attributes),
        })
        .collect();
    let known = dedup(&batch.workers);
    let groups: Vec<Cow<'_, str>> = workers.iter().map(|r| r.grp.clone()).collect();
    let tick_totals = totals::of_samples(&batch.samples.workers, &groups);
    store
        .call(store.options.timeout, async {
            on_pool!(store, |pool, Db| {
                let mut tx = pool.begin().await?;
                // The totals first: a backfill of older ticks (`totals::backfill`) that locks
                // them then sees either none of this batch or all of it.
                totals::insert_totals!(tx, Db, tick_totals);
                for chunk in workers.chunks(ROWS_PER_INSERT) {
                    let mut q = QueryBuilder::<Db>::new(WORKER_SAMPLES);
                    q.push_values(chunk, |mut b, r| {
                        b.push_bind(r.at)
                            .push_bind(r.backend)
                            .push_bind(r.scope.as_ref())
                            .push_bind(r.id.as_ref())
                            .push_bind(r.grp.as_ref())
                            .push_bind(r.activity)
                            .push_bind(r.lifecycle)
                            .push_bind(r.health)
                            .push_bind(r.active)
                            .push_bind(r.processed)
                            .push_bind(r.concurrency)
                            .push_bind(r.interval);
                        for n in r.counts {
                            b.push_bind(n);
                        }
                        b.push_bind(r.runtime.as_deref())
                            .push_bind(r.queue_wait.as_deref())
                            .push_bind(r.cpu)
                            .push_bind(r.rss);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                for chunk in batch.samples.queues.chunks(ROWS_PER_INSERT) {
                    let mut q = QueryBuilder::<Db>::new(QUEUE_SAMPLES);
                    q.push_values(chunk, |mut b, s| {
                        b.push_bind(codes::ms(s.at))
                            .push_bind(codes::text(&s.queue).into_owned())
                            .push_bind(codes::i64_of(s.depth))
                            .push_bind(codes::i64_of(s.unacked))
                            .push_bind(codes::i32_of(s.consumers));
                    });
                    q.build().execute(&mut *tx).await?;
                }
                for chunk in batch.samples.groups.chunks(ROWS_PER_INSERT) {
                    let mut q = QueryBuilder::<Db>::new(GROUP_SAMPLES);
                    q.push_values(chunk, |mut b, s| {
                        b.push_bind(codes::ms(s.at))
                            .push_bind(codes::backend(s.backend))
                            .push_bind(codes::text(&s.group).into_owned())
                            .push_bind(codes::i32_of(s.workers))
                            .push_bind(codes::i32_of(s.alive));
                    });
                    q.build().execute(&mut *tx).await?;
                }
                for chunk in event_rows.chunks(ROWS_PER_INSERT) {
                    let mut q = QueryBuilder::<Db>::new(EVENTS);
                    q.push_values(chunk, |mut b, e| {
                        b.push_bind(e.at)
                            .push_bind(e.kind)
                            .push_bind(e.severity)
                            .push_bind(e.backend)
                            .push_bind(e.scope.as_deref())
                            .push_bind(e.worker.as_deref())
                            .push_bind(e.grp.as_deref())
                            .push_bind(e.message.as_ref())
                            .push_bind(e.attributes.as_str());
                    });
                    q.build().execute(&mut *tx).await?;
                }
                for chunk in known.chunks(ROWS_PER_INSERT) {
                    let mut q = QueryBuilder::<Db>::new(WORKERS);
                    q.push_values(chunk, |mut b, w| {
                        b.push_bind(codes::backend(w.key.backend))
                            .push_bind(codes::text(&w.key.scope).into_owned())
                            .push_bind(codes::text(&w.key.id).into_owned())
                            .push_bind(codes::text(&w.group).into_owned())
                            .push_bind(codes::ms(w.first_seen))
                            .push_bind(codes::ms(w.last_seen))
                            .push_bind(codes::lifecycle(w.lifecycle));
                    });
                    q.push(WORKERS_UPSERT);
                    q.build().execute(&mut *tx).await?;
                }
                for key in &batch.forgotten {
                    sqlx::query(FORGET)
                        .bind(codes::backend(key.backend))
                        .bind(codes::text(&key.scope).into_owned())
                        .bind(codes::text(&key.id).into_owned())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok::<(), Fail>(())
            })
        })
        .await
}
