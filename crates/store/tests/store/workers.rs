//! Known workers are upserted and forgotten; migrations are idempotent; a reopened SQLite file
//! keeps everything.
use std::time::Duration;

use warden_core::{
    history::{
        EventKind, EventQuery, HistoryEvent, HistoryStore, KnownWorker, SampleBatch, Severity,
        WriteBatch,
    },
    model::{Lifecycle, WorkerKey},
};
use warden_store::{Store, StoreOptions};

use crate::support::{at, both, sample, series, sqlite_with, worker};
use warden_core::history::Subject;

fn known(key: WorkerKey, group: &str, first: i64, last: i64, lifecycle: Lifecycle) -> KnownWorker {
    KnownWorker {
        key,
        group: group.into(),
        first_seen: at(first),
        last_seen: at(last),
        lifecycle,
    }
}

#[tokio::test]
async fn known_workers_are_upserted_and_forgotten() {
    for db in both().await {
        let engine = db.engine;
        let (a, b, c) = (worker("a"), worker("b"), worker("c"));
        db.store
            .write(&WriteBatch {
                workers: vec![
                    known(a.clone(), "g1", 1_000, 2_000, Lifecycle::Alive),
                    known(b.clone(), "g1", 1_000, 2_000, Lifecycle::Alive),
                    known(c.clone(), "g2", 1_500, 2_500, Lifecycle::Alive),
                ],
                ..WriteBatch::default()
            })
            .await
            .unwrap();
        db.store
            .write(&WriteBatch {
                workers: vec![
                    // Seen again later, now lost, moved group: first sighting kept.
                    known(a.clone(), "g3", 1_800, 9_000, Lifecycle::Lost),
                    // Twice in one batch: the later state wins, the earlier first sighting stays.
                    known(c.clone(), "g2", 1_200, 3_000, Lifecycle::Offline),
                    known(c.clone(), "g2", 1_400, 4_000, Lifecycle::Alive),
                ],
                forgotten: vec![b.clone(), worker("never-known")],
                ..WriteBatch::default()
            })
            .await
            .unwrap();
        assert_eq!(
            db.store.known_workers().await.unwrap(),
            vec![
                known(a.clone(), "g3", 1_000, 9_000, Lifecycle::Lost),
                known(c.clone(), "g2", 1_200, 4_000, Lifecycle::Alive),
            ],
            "{engine}"
        );
        // Upserted and forgotten in one batch: forgotten.
        db.store
            .write(&WriteBatch {
                workers: vec![known(b.clone(), "g1", 1_000, 10_000, Lifecycle::Alive)],
                forgotten: vec![b.clone(), a.clone()],
                ..WriteBatch::default()
            })
            .await
            .unwrap();
        assert_eq!(
            db.store.known_workers().await.unwrap(),
            vec![known(c, "g2", 1_200, 4_000, Lifecycle::Alive)],
            "{engine}"
        );
    }
}

/// Writes one of everything.
fn one_of_everything() -> WriteBatch {
    let w = worker("a");
    let mut s = sample(&w, "g", 60_000);
    s.active_tasks = 3;
    WriteBatch {
        samples: SampleBatch {
            workers: vec![s],
            ..SampleBatch::default()
        },
        events: vec![HistoryEvent {
            at: at(60_000),
            kind: EventKind::Lifecycle,
            severity: Severity::Warning,
            worker: Some(w.clone()),
            group: Some("g".into()),
            message: "went offline".into(),
            attributes: vec![],
        }],
        workers: vec![known(w, "g", 0, 60_000, Lifecycle::Offline)],
        forgotten: vec![],
    }
}

async fn assert_holds_everything(store: &Store, what: &str) {
    let active = store
        .buckets(&series(
            Subject::Worker(worker("a")),
            "active_tasks",
            0,
            120_000,
            60_000,
        ))
        .await
        .unwrap();
    assert_eq!(active.len(), 1, "{what}");
    assert_eq!(active[0].sum, 3.0, "{what}");
    let events = store.events(&EventQuery::default()).await.unwrap();
    assert_eq!(events.len(), 1, "{what}");
    assert_eq!(events[0].event.message, "went offline", "{what}");
    assert_eq!(
        store.known_workers().await.unwrap(),
        vec![known(worker("a"), "g", 0, 60_000, Lifecycle::Offline)],
        "{what}"
    );
}

#[tokio::test]
async fn migrating_twice_changes_nothing() {
    for db in both().await {
        db.store.write(&one_of_everything()).await.unwrap();
        db.store.migrate().await.unwrap();
        db.store.migrate().await.unwrap();
        assert_holds_everything(&db.store, db.engine).await;
        // A second store on the same database migrates (nothing) too.
        let other = Store::connect(&db.url, StoreOptions::default())
            .await
            .unwrap();
        other.migrate().await.unwrap();
        assert_holds_everything(&other, db.engine).await;
    }
}

#[tokio::test]
async fn a_reopened_sqlite_file_keeps_everything() {
    let db = sqlite_with(StoreOptions::default()).await;
    db.store.write(&one_of_everything()).await.unwrap();
    db.store.close().await;
    drop(db.store);
    let path = db.dir.as_ref().unwrap().path().join("history.db");
    assert!(path.exists());
    let reopened = Store::connect(&db.url, StoreOptions::default())
        .await
        .unwrap();
    reopened.migrate().await.unwrap();
    assert_holds_everything(&reopened, "reopened").await;
    // And it keeps taking writes.
    let mut more = one_of_everything();
    more.samples.workers[0].at = at(60_000) + Duration::from_secs(30);
    more.events.clear();
    reopened.write(&more).await.unwrap();
    let active = reopened
        .buckets(&series(
            Subject::Worker(worker("a")),
            "active_tasks",
            0,
            120_000,
            60_000,
        ))
        .await
        .unwrap();
    assert_eq!(active[0].count, 2);
}
