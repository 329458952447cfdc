//! The history store as the binary opens it: from the config's `database_url`, migrated
//! unless `no_migrate`, behind the core's `HistoryStore` port.
//!
//! A database that cannot be reached at start does not stop warden: the store connects
//! (and migrates) on first use and keeps trying on every later call, while the recorder
//! buffers and the History RPCs answer UNAVAILABLE naming the store. A URL that cannot work
//! at all (bad scheme) is refused at start by the config's validation.
use std::{sync::Arc, time::SystemTime};

use tokio::sync::OnceCell;
use tracing::{info, warn};
use warden_core::{
    audit::{AuditLog, AuditQuery, AuditRecord},
    history::{
        Bucket, EventQuery, HistoryStore, KnownWorker, Retention, SeriesQuery, StoreSize,
        StoredEvent, SweepReport, WriteBatch,
    },
    ports::{BoxFuture, PortError},
};
use warden_store::{Store, StoreError, StoreOptions, redact_url};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history store: {0}")]
    Store(#[from] StoreError),
}

/// A store that connects on first use (and after a failed attempt, on the next use).
pub struct LazyStore {
    url: String,
    options: StoreOptions,
    migrate: bool,
    engine: &'static str,
    store: OnceCell<Store>,
}

impl LazyStore {
    pub fn new(url: &str, migrate: bool) -> Self {
        let engine = if url.starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgres"
        };
        Self {
            url: url.to_string(),
            options: StoreOptions::default(),
            migrate,
            engine,
            store: OnceCell::new(),
        }
    }

    async fn store(&self) -> Result<&Store, PortError> {
        self.store
            .get_or_try_init(|| async {
                let store = Store::connect(&self.url, self.options.clone()).await?;
                if self.migrate {
                    store.migrate().await?;
                }
                info!(
                    engine = self.engine,
                    url = %redact_url(&self.url),
                    migrated = self.migrate,
                    "history store connected"
                );
                Ok::<_, StoreError>(store)
            })
            .await
            .map_err(PortError::from)
    }
}

impl HistoryStore for LazyStore {
    fn engine(&self) -> &'static str {
        self.engine
    }

    fn write<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move { self.store().await?.write(batch).await })
    }

    fn buckets<'a>(
        &'a self,
        query: &'a SeriesQuery,
    ) -> BoxFuture<'a, Result<Vec<Bucket>, PortError>> {
        Box::pin(async move { self.store().await?.buckets(query).await })
    }

    fn events<'a>(
        &'a self,
        query: &'a EventQuery,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, PortError>> {
        Box::pin(async move { self.store().await?.events(query).await })
    }

    fn known_workers<'a>(&'a self) -> BoxFuture<'a, Result<Vec<KnownWorker>, PortError>> {
        Box::pin(async move { self.store().await?.known_workers().await })
    }

    fn oldest<'a>(&'a self) -> BoxFuture<'a, Result<Option<SystemTime>, PortError>> {
        Box::pin(async move { self.store().await?.oldest().await })
    }

    fn sweep<'a>(
        &'a self,
        now: SystemTime,
        retention: Retention,
    ) -> BoxFuture<'a, Result<SweepReport, PortError>> {
        Box::pin(async move { self.store().await?.sweep(now, retention).await })
    }

    fn size<'a>(&'a self) -> BoxFuture<'a, Result<StoreSize, PortError>> {
        Box::pin(async move { self.store().await?.size().await })
    }
}

impl AuditLog for LazyStore {
    fn append<'a>(&'a self, record: &'a AuditRecord) -> BoxFuture<'a, Result<i64, PortError>> {
        Box::pin(async move { AuditLog::append(self.store().await?, record).await })
    }

    fn list<'a>(
        &'a self,
        query: &'a AuditQuery,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, PortError>> {
        Box::pin(async move { AuditLog::list(self.store().await?, query).await })
    }

    fn durable(&self) -> bool {
        true
    }
}

/// The store the config names (None when history is off). Tries to connect once, so that
/// the log says at start whether history is being written; an unreachable database is not
/// an error here (see the module's doc).
pub async fn open(config: &Config) -> Result<Option<Arc<dyn HistoryStore>>, HistoryError> {
    Ok(open_with_audit(config).await?.0)
}

/// [`open`], plus the same store as the audit trail (None when history is off: the audit
/// trail is then kept in memory).
pub async fn open_with_audit(
    config: &Config,
) -> Result<(Option<Arc<dyn HistoryStore>>, Option<Arc<dyn AuditLog>>), HistoryError> {
    if !config.history_enabled() {
        info!("history is off (database_url = none)");
        return Ok((None, None));
    }
    let store = LazyStore::new(config.database_url.expose(), !config.no_migrate);
    if let Err(err) = store.store().await {
        warn!(
            url = %redact_url(config.database_url.expose()),
            %err,
            "history store unavailable at start; history is buffered until it answers"
        );
    }
    let store = Arc::new(store);
    Ok((Some(store.clone()), Some(store)))
}

/// `warden migrate`: applies pending migrations, then exits.
pub async fn migrate(url: &str) -> Result<(), HistoryError> {
    let store = Store::connect(url, StoreOptions::default()).await?;
    store.migrate().await?;
    println!(
        "{}: migrations applied ({})",
        redact_url(url),
        store.engine_kind().name()
    );
    store.close().await;
    Ok(())
}
