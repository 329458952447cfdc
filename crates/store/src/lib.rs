//! warden's history store: the [`HistoryStore`] port over SQLite (the embedded default, one
//! file) and Postgres (production), with sqlx.
//!
//! The two engines share their SQL wherever the dialects agree (almost everywhere: times are
//! integer milliseconds, sketches are blobs, placeholders are `$n`, which SQLite reads too);
//! what differs is the schema's types (`migrations/sqlite`, `migrations/postgres`), the row
//! identifier a bounded delete uses, and how the size on disk is read.
//!
//! - [`Store::connect`] opens a pool (`sqlite://PATH`, created if missing, WAL,
//!   `synchronous=NORMAL`, a busy timeout; or `postgres://…`); [`Store::migrate`] applies the
//!   embedded migrations (idempotent).
//! - Every call is bounded by [`StoreOptions::timeout`] (a sweep: each of its statements), and
//!   fails with [`StoreError::Timeout`], which the port sees as the store being unavailable.
//! - Passwords never reach an error or a log line: URLs are shown through [`redact_url`] and
//!   every error text is scrubbed of the URL's secrets.
//!
//! - A group's and the fleet's series come from per-tick totals (`tick_totals`) that the
//!   writer keeps in the transaction of the samples, so that they cost the same whatever the
//!   number of workers; they equal the series summed from the samples (see `totals.rs`).
//! - [`HistoryStore::size`] reports bytes on disk and rows per table: exact for tables of up
//!   to 10,000 rows, **estimates** above (SQLite: the span of row ids; Postgres: the planner's
//!   estimate), so that it stays cheap on tens of millions of rows.
//!
//! Conventions: times are stored in whole milliseconds (rounded down); a series covers
//! `start <= at < end`; retention deletes rows strictly older than `now - retention` (a row
//! exactly at the bound is kept); events are listed newest first by id (insertion order), a
//! `limit` of 0 meaning [`DEFAULT_EVENT_LIMIT`], at most [`MAX_EVENT_LIMIT`]; a NUL character
//! in stored text (names, messages) becomes U+FFFD, so that hostile names never fail a batch.
//! A metric asked of a kind of subject it does not cover is `PortError::NotSupported`.
#![forbid(unsafe_code)]

mod audit;
mod codes;
mod error;
mod events;
mod maintenance;
mod migrate;
mod series;
mod totals;
mod write;

use std::{future::Future, str::FromStr, time::Duration};

use sqlx::{
    Connection,
    postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
        SqliteSynchronous,
    },
};
use warden_core::{
    audit::{AuditLog, AuditQuery, AuditRecord},
    history::{
        Bucket, EventQuery, HistoryStore, KnownWorker, Retention, SeriesQuery, StoreSize,
        StoredEvent, SweepReport, WriteBatch,
    },
    ports::{BoxFuture, PortError},
};

pub use audit::MAX_AUDIT_LIMIT;
use error::{Secrets, classify};
pub use error::{StoreError, redact_url};
pub use events::{DEFAULT_EVENT_LIMIT, MAX_EVENT_LIMIT};

/// Defaults of [`StoreOptions`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MIGRATE_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4;
pub const DEFAULT_SWEEP_BATCH: u32 = 10_000;

/// How the store talks to its database.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    /// Bound on every call (connecting, a write, a query; for a sweep, each statement).
    pub timeout: Duration,
    /// Bound on [`Store::migrate`], which may rewrite large tables.
    pub migrate_timeout: Duration,
    /// Connections in the pool (SQLite: readers; its writes take turns in any case).
    pub max_connections: u32,
    /// Rows one statement of a sweep deletes at most.
    pub sweep_batch: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            migrate_timeout: DEFAULT_MIGRATE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            sweep_batch: DEFAULT_SWEEP_BATCH,
        }
    }
}

/// The database behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

#[derive(Clone)]
enum Pools {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the engine's pool and `$db` naming its sqlx database
/// type: the same code, compiled once per engine.
macro_rules! on_pool {
    ($store:expr, |$pool:ident, $db:ident| $body:block) => {
        match &$store.pools {
            $crate::Pools::Sqlite($pool) => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $body
            }
            $crate::Pools::Postgres($pool) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}
pub(crate) use on_pool;

/// What went wrong inside a call, before it is classified and scrubbed.
pub(crate) enum Fail {
    Sql(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

/// The history store: a pool on SQLite or Postgres. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Store {
    pools: Pools,
    engine: Engine,
    options: StoreOptions,
    /// The URL as it may be shown.
    shown_url: String,
    secrets: Secrets,
    /// Set once `tick_totals` is known to cover every tick (see `totals.rs`).
    totals_complete: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.engine)
            .field("url", &self.shown_url)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens a pool on `url`: `sqlite://PATH` (the file is created if missing) or
    /// `postgres://…` (`postgresql://` too). One connection is opened and closed first, so
    /// that a database that cannot be reached fails here, with its own reason
    /// ([`StoreError::Unavailable`], or [`StoreError::Timeout`] past the timeout); the pool
    /// then connects on demand, and reconnects by itself after an outage.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let secrets = Secrets::of_url(url);
        let shown_url = redact_url(url);
        let bad_url = |e: sqlx::Error| {
            StoreError::Config(format!(
                "database URL {shown_url}: {}",
                secrets.scrub(&e.to_string())
            ))
        };
        let (engine, connecting) = if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(bad_url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(options.timeout);
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .acquire_timeout(options.timeout);
            (
                Engine::Sqlite,
                Box::pin(async move {
                    SqliteConnection::connect_with(&connect)
                        .await?
                        .close()
                        .await?;
                    Ok(Pools::Sqlite(pool.connect_lazy_with(connect)))
                }) as BoxFuture<'_, Result<Pools, sqlx::Error>>,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(url)
                .map_err(bad_url)?
                .application_name("warden");
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .acquire_timeout(options.timeout);
            (
                Engine::Postgres,
                Box::pin(async move {
                    PgConnection::connect_with(&connect).await?.close().await?;
                    Ok(Pools::Postgres(pool.connect_lazy_with(connect)))
                }) as BoxFuture<'_, Result<Pools, sqlx::Error>>,
            )
        } else {
            return Err(StoreError::Config(format!(
                "database URL {shown_url}: expected sqlite://PATH or postgres://…"
            )));
        };
        let pools = match tokio::time::timeout(options.timeout, connecting).await {
            Err(_) => {
                return Err(StoreError::Timeout {
                    engine: engine.name(),
                    timeout: options.timeout,
                });
            }
            Ok(Err(e)) => return Err(classify(engine.name(), &e, &secrets)),
            Ok(Ok(pools)) => pools,
        };
        tracing::info!(engine = engine.name(), url = %shown_url, "history store connected");
        Ok(Store {
            pools,
            engine,
            options,
            shown_url,
            secrets,
            totals_complete: Default::default(),
        })
    }

    pub fn engine_kind(&self) -> Engine {
        self.engine
    }

    /// The URL with its password redacted.
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Applies the migrations this build embeds that the database has not seen yet (none on
    /// a second run).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrate::run(self).await
    }

    /// Closes the pool (waits for connections in use to come back).
    pub async fn close(&self) {
        on_pool!(self, |pool, _Db| { pool.close().await })
    }

    fn name(&self) -> &'static str {
        self.engine.name()
    }

    /// Runs one call under the timeout, classifying and scrubbing its error.
    pub(crate) async fn call<T>(
        &self,
        timeout: Duration,
        work: impl Future<Output = Result<T, Fail>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(timeout, work).await {
            Err(_) => Err(StoreError::Timeout {
                engine: self.name(),
                timeout,
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Fail::Sql(e))) => Err(classify(self.name(), &e, &self.secrets)),
            Ok(Err(Fail::Store(e))) => Err(e),
        }
    }

    pub(crate) fn failed(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Failed {
            engine: self.name(),
            reason: self.secrets.scrub(&reason.into()),
        }
    }
}

/// Hands a failure to the port (logged at debug: the caller decides what is worth a warning,
/// e.g. the writer during an outage).
fn port<T>(op: &'static str, r: Result<T, StoreError>) -> Result<T, PortError> {
    r.map_err(|e| {
        tracing::debug!(op, error = %e, "history store call failed");
        PortError::from(e)
    })
}

impl HistoryStore for Store {
    fn engine(&self) -> &'static str {
        self.name()
    }

    fn write<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move { port("write", write::write(self, batch).await) })
    }

    fn buckets<'a>(
        &'a self,
        query: &'a SeriesQuery,
    ) -> BoxFuture<'a, Result<Vec<Bucket>, PortError>> {
        Box::pin(async move { port("buckets", series::buckets(self, query).await) })
    }

    fn events<'a>(
        &'a self,
        query: &'a EventQuery,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, PortError>> {
        Box::pin(async move { port("events", events::list(self, query).await) })
    }

    fn known_workers<'a>(&'a self) -> BoxFuture<'a, Result<Vec<KnownWorker>, PortError>> {
        Box::pin(async move { port("known_workers", maintenance::known_workers(self).await) })
    }

    fn oldest<'a>(&'a self) -> BoxFuture<'a, Result<Option<std::time::SystemTime>, PortError>> {
        Box::pin(async move { port("oldest", maintenance::oldest(self).await) })
    }

    fn sweep<'a>(
        &'a self,
        now: std::time::SystemTime,
        retention: Retention,
    ) -> BoxFuture<'a, Result<SweepReport, PortError>> {
        Box::pin(async move { port("sweep", maintenance::sweep(self, now, retention).await) })
    }

    fn size<'a>(&'a self) -> BoxFuture<'a, Result<StoreSize, PortError>> {
        Box::pin(async move { port("size", maintenance::size(self).await) })
    }
}

impl AuditLog for Store {
    fn append<'a>(&'a self, record: &'a AuditRecord) -> BoxFuture<'a, Result<i64, PortError>> {
        Box::pin(async move { port("audit_append", audit::append(self, record).await) })
    }

    fn list<'a>(
        &'a self,
        query: &'a AuditQuery,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, PortError>> {
        Box::pin(async move { port("audit_list", audit::list(self, query).await) })
    }

    fn durable(&self) -> bool {
        true
    }
}
