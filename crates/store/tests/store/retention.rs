//! Retention deletes exactly what is older than the bound: a row at `bound - 1 ms` goes, a row
//! at `bound` stays (rows strictly older than `now - retention` are deleted), samples and
//! events each by their own bound, in bounded batches that loop until done.
use std::{sync::Arc, time::Duration};

use warden_core::{
    history::{
        EventKind, EventQuery, GroupSample, HistoryEvent, HistoryStore, QueueSample, Retention,
        Severity, TableRetention, WriteBatch,
    },
    model::Backend,
};
use warden_store::StoreOptions;

use crate::support::{at, both_with, ms_of, sample, worker};

const NOW: i64 = 1_700_000_000_000;
const SAMPLES: Duration = Duration::from_secs(3_600);
const EVENTS: Duration = Duration::from_secs(7_200);

fn event(at_ms: i64) -> HistoryEvent {
    HistoryEvent {
        at: at(at_ms),
        kind: EventKind::Lifecycle,
        severity: Severity::Info,
        worker: None,
        group: None,
        message: format!("at {at_ms}"),
        attributes: vec![],
    }
}

#[tokio::test]
async fn retention_deletes_exactly_what_is_older_than_the_bound() {
    let options = StoreOptions {
        // Small batches: 31 old rows per table take 5 statements.
        sweep_batch: 7,
        ..StoreOptions::default()
    };
    let samples_bound = NOW - SAMPLES.as_millis() as i64;
    let events_bound = NOW - EVENTS.as_millis() as i64;
    // 30 rows well before the bound, one just before it, one at it, one after.
    let times = |bound: i64| -> Vec<i64> {
        (1..=30)
            .map(|k| bound - k * 60_000)
            .chain([bound - 1, bound, bound + 1])
            .collect()
    };
    for db in both_with(options).await {
        let engine = db.engine;
        let w = worker("w");
        let mut batch = WriteBatch::default();
        for t in times(samples_bound) {
            batch.samples.workers.push(sample(&w, "g", t));
            batch.samples.queues.push(QueueSample {
                queue: "q".into(),
                at: at(t),
                depth: 1,
                unacked: 0,
                consumers: 1,
            });
            batch.samples.groups.push(GroupSample {
                backend: Backend::Celery,
                group: Arc::from("g"),
                at: at(t),
                workers: 1,
                alive: 1,
            });
        }
        // Events are kept longer: some are older than the samples' bound and stay.
        batch.events = times(events_bound)
            .into_iter()
            .chain([samples_bound - 5, NOW])
            .map(event)
            .collect();
        db.store.write(&batch).await.unwrap();

        let report = db
            .store
            .sweep(
                at(NOW),
                Retention {
                    samples: SAMPLES,
                    events: EVENTS,
                    tables: vec![],
                },
            )
            .await
            .unwrap();
        assert_eq!(
            report.deleted,
            vec![
                ("worker_samples", 31),
                ("queue_samples", 31),
                ("group_samples", 31),
                ("events", 31),
                // A group's row and the fleet's per tick.
                ("tick_totals", 62),
            ],
            "{engine}"
        );
        assert_eq!(
            db.store.oldest().await.unwrap(),
            Some(at(samples_bound)),
            "{engine}"
        );
        let size = db.store.size().await.unwrap();
        assert_eq!(
            size.rows,
            vec![
                ("worker_samples", 2),
                ("queue_samples", 2),
                ("group_samples", 2),
                ("events", 4),
                ("workers", 0),
                ("tick_totals", 4),
            ],
            "{engine}"
        );
        assert!(size.bytes > 0, "{engine}");
        let left: Vec<i64> = db
            .store
            .events(&EventQuery::default())
            .await
            .unwrap()
            .iter()
            .map(|e| ms_of(e.event.at))
            .collect();
        assert_eq!(
            left,
            vec![NOW, samples_bound - 5, events_bound + 1, events_bound],
            "{engine}"
        );

        // Nothing more to do: a second sweep deletes nothing.
        let again = db
            .store
            .sweep(
                at(NOW),
                Retention {
                    samples: SAMPLES,
                    events: EVENTS,
                    tables: vec![],
                },
            )
            .await
            .unwrap();
        assert!(
            again.deleted.iter().all(|(_, n)| *n == 0),
            "{engine}: {again:?}"
        );
    }
}

#[tokio::test]
async fn an_empty_store_has_no_oldest_sample_and_sweeps_nothing() {
    for db in both_with(StoreOptions::default()).await {
        assert_eq!(db.store.oldest().await.unwrap(), None);
        let report = db.store.sweep(at(NOW), Retention::default()).await.unwrap();
        assert_eq!(report.deleted.len(), 5);
        assert!(report.deleted.iter().all(|(_, n)| *n == 0));
        let size = db.store.size().await.unwrap();
        assert!(size.rows.iter().all(|(_, n)| *n == 0), "{}", db.engine);
    }
}

/// A per-table override: one table's own time bound and a row cap that deletes the oldest
/// whole ticks beyond it, while the other tables keep their kind's bound.
#[tokio::test]
async fn a_row_cap_keeps_the_newest_ticks_and_a_table_bound_overrides_its_kind() {
    let options = StoreOptions {
        sweep_batch: 4,
        ..StoreOptions::default()
    };
    for db in both_with(options).await {
        let engine = db.engine;
        let mut batch = WriteBatch::default();
        // 10 ticks, one minute apart, of 3 workers each (30 rows), all inside retention.
        for k in 0..10 {
            let t = NOW - k * 60_000;
            for w in ["a", "b", "c"] {
                batch.samples.workers.push(sample(&worker(w), "g", t));
            }
            batch.samples.queues.push(QueueSample {
                queue: "q".into(),
                at: at(t),
                depth: 1,
                unacked: 0,
                consumers: 1,
            });
        }
        db.store.write(&batch).await.unwrap();

        let retention = Retention {
            samples: SAMPLES,
            events: EVENTS,
            tables: vec![
                // 8 rows allowed: the ninth-newest row is in the third tick, so whole ticks
                // from there back go and two ticks (6 rows) stay.
                TableRetention {
                    table: "worker_samples".into(),
                    keep: None,
                    max_rows: Some(8),
                },
                // Queue samples: 4.5 minutes, so the five ticks within it stay.
                TableRetention {
                    table: "queue_samples".into(),
                    keep: Some(Duration::from_secs(270)),
                    max_rows: None,
                },
            ],
        };
        let report = db.store.sweep(at(NOW), retention.clone()).await.unwrap();
        let deleted = |table: &str| {
            report
                .deleted
                .iter()
                .find(|(t, _)| *t == table)
                .map(|(_, n)| *n)
        };
        assert_eq!(deleted("worker_samples"), Some(24), "{engine}");
        assert_eq!(deleted("queue_samples"), Some(5), "{engine}");
        let size = db.store.size().await.unwrap();
        let rows = |table: &str| size.rows.iter().find(|(t, _)| *t == table).map(|(_, n)| *n);
        assert_eq!(rows("worker_samples"), Some(6), "{engine}");
        assert_eq!(rows("queue_samples"), Some(5), "{engine}");
        // The two newest ticks are what remains.
        assert_eq!(
            db.store.oldest().await.unwrap(),
            Some(at(NOW - 60_000)),
            "{engine}"
        );
        // Under the cap already: nothing more goes.
        let again = db.store.sweep(at(NOW), retention).await.unwrap();
        assert!(
            again.deleted.iter().all(|(_, n)| *n == 0),
            "{engine}: {again:?}"
        );
    }
}
