//! The two engines, and the small builders the tests share.
use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tempfile::TempDir;
use warden_core::{
    history::{SeriesQuery, Subject, WorkerSample, metric},
    model::{Activity, Backend, Lifecycle, WorkerKey},
    perf::Counts,
    sketch::Sketch,
};
use warden_store::{Store, StoreOptions};

use crate::postgres::PostgresCluster;

/// A migrated store on one engine, and what keeps it alive.
pub struct Db {
    pub engine: &'static str,
    pub store: Store,
    pub url: String,
    /// The SQLite file's directory.
    pub dir: Option<TempDir>,
}

pub async fn sqlite_with(options: StoreOptions) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("history.db").display());
    let store = Store::connect(&url, options).await.unwrap();
    store.migrate().await.unwrap();
    Db {
        engine: "sqlite",
        store,
        url,
        dir: Some(dir),
    }
}

pub async fn postgres_with(options: StoreOptions) -> Db {
    let url = tokio::task::spawn_blocking(|| PostgresCluster::shared().database())
        .await
        .unwrap();
    let store = Store::connect(&url, options).await.unwrap();
    store.migrate().await.unwrap();
    Db {
        engine: "postgres",
        store,
        url,
        dir: None,
    }
}

/// A fresh, migrated store on each engine.
pub async fn both_with(options: StoreOptions) -> [Db; 2] {
    [
        sqlite_with(options.clone()).await,
        postgres_with(options).await,
    ]
}

pub async fn both() -> [Db; 2] {
    both_with(StoreOptions::default()).await
}

pub fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.try_into().unwrap())
}

pub fn worker(id: &str) -> WorkerKey {
    WorkerKey::new(Backend::Celery, "default", id)
}

/// An idle, alive worker sample with nothing else to say.
pub fn sample(worker: &WorkerKey, group: &str, at_ms: i64) -> WorkerSample {
    WorkerSample {
        worker: worker.clone(),
        group: Arc::from(group),
        at: at(at_ms),
        interval: Duration::from_secs(30),
        activity: Activity::Idle,
        lifecycle: Lifecycle::Alive,
        health: None,
        active_tasks: 0,
        processed_total: 0,
        concurrency: None,
        tasks: Counts::default(),
        runtime: Sketch::default(),
        queue_wait: Sketch::default(),
        cpu_percent: None,
        memory_rss_bytes: None,
    }
}

pub fn series(
    subject: Subject,
    name: &str,
    start_ms: i64,
    end_ms: i64,
    step_ms: u64,
) -> SeriesQuery {
    SeriesQuery {
        subject,
        metric: metric(name).unwrap_or_else(|| panic!("no metric {name}")),
        start: at(start_ms),
        end: at(end_ms),
        step: Duration::from_millis(step_ms),
    }
}

/// `a` and `b` equal within a relative 1e-9 (sums of doubles in another order).
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

pub fn ms_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}
