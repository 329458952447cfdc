//! Failures: an outage is "unavailable" within the timeout and the store recovers on its own;
//! a batch is written whole or not at all; passwords never appear in errors; hostile text does
//! not poison a batch.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::Connection;
use warden_core::{
    history::{
        EventKind, EventQuery, HistoryEvent, HistoryStore, KnownWorker, SampleBatch, Severity,
        Subject, WriteBatch,
    },
    model::{Backend, Lifecycle, WorkerKey},
    ports::PortError,
};
use warden_store::{Store, StoreError, StoreOptions};

use crate::{
    postgres::PostgresCluster,
    support::{at, both, sample, series, sqlite_with, worker},
};

fn samples_at(at_ms: i64) -> WriteBatch {
    let w = worker("a");
    let mut s = sample(&w, "g", at_ms);
    s.active_tasks = 1;
    WriteBatch {
        samples: SampleBatch {
            workers: vec![s],
            ..SampleBatch::default()
        },
        ..WriteBatch::default()
    }
}

async fn ticks(store: &Store) -> u64 {
    store
        .buckets(&series(
            Subject::Worker(worker("a")),
            "active_tasks",
            0,
            10_000_000,
            10_000_000,
        ))
        .await
        .unwrap()
        .first()
        .map_or(0, |b| b.count)
}

fn is_unavailable(r: &Result<impl std::fmt::Debug, PortError>) -> bool {
    matches!(
        r,
        Err(PortError::Unavailable {
            dependency: "store",
            ..
        })
    )
}

#[tokio::test]
async fn a_postgres_outage_is_unavailable_within_the_timeout_then_recovers() {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(PostgresCluster::start_new)
            .await
            .unwrap(),
    );
    let url = {
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.database())
            .await
            .unwrap()
    };
    let timeout = Duration::from_secs(2);
    let store = Store::connect(
        &url,
        StoreOptions {
            timeout,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store.write(&samples_at(1_000)).await.unwrap();

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop()).await.unwrap();
    let began = Instant::now();
    let failed = store.write(&samples_at(2_000)).await;
    assert!(is_unavailable(&failed), "{failed:?}");
    let read = store.known_workers().await;
    assert!(is_unavailable(&read), "{read:?}");
    assert!(
        began.elapsed() < 2 * timeout + Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start())
        .await
        .unwrap();
    // The pool reconnects by itself: the write that failed goes through on a retry.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.write(&samples_at(2_000)).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, PortError::Unavailable { .. }), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    }
    assert_eq!(ticks(&store).await, 2);
}

#[tokio::test]
async fn a_locked_sqlite_file_is_unavailable_within_the_timeout() {
    let timeout = Duration::from_millis(500);
    let db = sqlite_with(StoreOptions {
        timeout,
        ..StoreOptions::default()
    })
    .await;
    // Another writer holds the file's write lock.
    let mut other = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let began = Instant::now();
    let failed = db.store.write(&samples_at(1_000)).await;
    assert!(is_unavailable(&failed), "{failed:?}");
    assert!(
        began.elapsed() < timeout + Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    db.store.write(&samples_at(1_000)).await.unwrap();
    assert_eq!(ticks(&db.store).await, 1);
}

/// A trigger that refuses the event whose message is "boom", after the batch's samples and
/// before its known workers are written.
async fn refuse_boom(engine: &str, url: &str) {
    match engine {
        "sqlite" => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::raw_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.message = 'boom' \
                 BEGIN SELECT RAISE(ABORT, 'boom refused'); END;",
            )
            .execute(&mut c)
            .await
            .unwrap();
        }
        _ => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql(
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                   IF NEW.message = 'boom' THEN RAISE EXCEPTION 'boom refused'; END IF; \
                   RETURN NEW; END $$; \
                 CREATE TRIGGER boom BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION boom();",
            )
            .execute(&mut c)
            .await
            .unwrap();
        }
    }
}

#[tokio::test]
async fn a_batch_is_written_whole_or_not_at_all() {
    for db in both().await {
        let engine = db.engine;
        refuse_boom(engine, &db.url).await;
        let mut batch = samples_at(1_000);
        batch.events.push(HistoryEvent {
            at: at(1_000),
            kind: EventKind::Alert,
            severity: Severity::Critical,
            worker: None,
            group: None,
            message: "boom".into(),
            attributes: vec![],
        });
        batch.workers.push(KnownWorker {
            key: worker("a"),
            group: "g".into(),
            first_seen: at(0),
            last_seen: at(1_000),
            lifecycle: Lifecycle::Alive,
        });
        let failed = db.store.write(&batch).await;
        assert!(
            matches!(&failed, Err(PortError::Failed(m)) if m.contains("boom refused")),
            "{engine}: {failed:?}"
        );
        assert_eq!(ticks(&db.store).await, 0, "{engine}: samples rolled back");
        assert_eq!(db.store.known_workers().await.unwrap(), vec![], "{engine}");
        assert_eq!(
            db.store.events(&EventQuery::default()).await.unwrap(),
            vec![],
            "{engine}"
        );
        batch.events[0].message = "fine".into();
        db.store.write(&batch).await.unwrap();
        assert_eq!(ticks(&db.store).await, 1, "{engine}");
    }
}

#[tokio::test]
async fn nul_characters_in_names_do_not_poison_a_batch() {
    for db in both().await {
        let engine = db.engine;
        let hostile = WorkerKey::new(Backend::Celery, "sco\0pe", "celery@h\0st");
        let mut batch = WriteBatch::default();
        batch
            .samples
            .workers
            .push(sample(&hostile, "gr\0up", 1_000));
        batch.events.push(HistoryEvent {
            at: at(1_000),
            kind: EventKind::Lifecycle,
            severity: Severity::Info,
            worker: Some(hostile.clone()),
            group: Some("gr\0up".into()),
            message: "m\0".into(),
            attributes: vec![(
                "k\0".into(),
                warden_core::history::AttrValue::String("v\0".into()),
            )],
        });
        db.store.write(&batch).await.unwrap();
        // Asked for by the same name, it is found.
        let events = db
            .store
            .events(&EventQuery {
                worker: Some(hostile.clone()),
                group: Some("gr\0up".into()),
                ..EventQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{engine}");
        assert_eq!(
            &*events[0].event.worker.as_ref().unwrap().id,
            "celery@h\u{FFFD}st"
        );
        // Attributes are JSON: their NULs are escaped, not replaced.
        assert_eq!(
            events[0].event.attributes,
            vec![(
                "k\0".into(),
                warden_core::history::AttrValue::String("v\0".into())
            )]
        );
        let q = series(Subject::Worker(hostile), "alive_workers", 0, 60_000, 60_000);
        assert_eq!(db.store.buckets(&q).await.unwrap().len(), 1, "{engine}");
    }
}

const SECRET: &str = "s3cr%2Ft-pw";
const DECODED: &str = "s3cr/t-pw";

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET) && !text.contains(DECODED),
        "{what}: {text}"
    );
}

#[tokio::test]
async fn passwords_never_appear_in_errors_or_debug_output() {
    // Nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgres://warden:{SECRET}@127.0.0.1:{closed}/warden");
    let e = Store::connect(&url, StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("refused"), "{e}");
    assert_no_secret(
        "unreachable",
        &format!("{e} {e:?} {:?}", PortError::from(e.clone())),
    );

    let cluster = tokio::task::spawn_blocking(PostgresCluster::shared)
        .await
        .unwrap();
    // Reached, but no such database.
    let url = format!(
        "postgres://postgres:{SECRET}@127.0.0.1:{}/no_such_db",
        cluster.port()
    );
    let e = Store::connect(&url, StoreOptions::default())
        .await
        .unwrap_err();
    assert_no_secret("no database", &format!("{e} {e:?}"));

    // Connected (the test cluster trusts local users, so the password is not checked): the
    // store shows its URL redacted.
    let url = format!(
        "postgres://postgres:{SECRET}@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let store = Store::connect(&url, StoreOptions::default()).await.unwrap();
    assert_eq!(
        store.url(),
        format!(
            "postgres://postgres:***@127.0.0.1:{}/postgres",
            cluster.port()
        )
    );
    assert_no_secret("store", &format!("{store:?}"));

    for url in [
        format!("mysql://warden:{SECRET}@db/warden"),
        format!("postgres://warden:{SECRET}@[::1/warden"),
        format!("postgres://db/warden?password={SECRET}&sslmode=bogus"),
    ] {
        let e = Store::connect(&url, StoreOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Config(_)), "{url}: {e:?}");
        assert_no_secret(&url, &format!("{e} {e:?}"));
    }
}
