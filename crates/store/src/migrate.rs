//! The migrations under the top-level `migrations/` folder, embedded in the binary (no
//! database is needed to build, and none of sqlx's macros), applied with sqlx's migrator so
//! that they are recorded in its `_sqlx_migrations` table like any sqlx migration.
use std::borrow::Cow;

use sqlx::{
    AssertSqlSafe, SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
};

use crate::{Engine, Fail, Store, StoreError, on_pool};

/// (version, description, SQL), as named in the folder: `<version>_<description>.sql`.
type Embedded = (i64, &'static str, &'static str);

const SQLITE: &[Embedded] = &[
    (
        1,
        "history",
        include_str!("../../../migrations/sqlite/0001_history.sql"),
    ),
    (
        2,
        "tick_totals",
        include_str!("../../../migrations/sqlite/0002_tick_totals.sql"),
    ),
    (
        3,
        "worker_index",
        include_str!("../../../migrations/sqlite/0003_worker_index.sql"),
    ),
    (
        4,
        "worker_numeric_index",
        include_str!("../../../migrations/sqlite/0004_worker_numeric_index.sql"),
    ),
    (
        5,
        "audit",
        include_str!("../../../migrations/sqlite/0005_audit.sql"),
    ),
];

const POSTGRES: &[Embedded] = &[
    (
        1,
        "history",
        include_str!("../../../migrations/postgres/0001_history.sql"),
    ),
    (
        2,
        "tick_totals",
        include_str!("../../../migrations/postgres/0002_tick_totals.sql"),
    ),
    (
        3,
        "worker_index",
        include_str!("../../../migrations/postgres/0003_worker_index.sql"),
    ),
    (
        4,
        "worker_numeric_index",
        include_str!("../../../migrations/postgres/0004_worker_numeric_index.sql"),
    ),
    (
        5,
        "audit",
        include_str!("../../../migrations/postgres/0005_audit.sql"),
    ),
];

fn embedded(engine: Engine) -> &'static [Embedded] {
    match engine {
        Engine::Sqlite => SQLITE,
        Engine::Postgres => POSTGRES,
    }
}

fn migrator(engine: Engine) -> Migrator {
    Migrator::with_migrations(
        embedded(engine)
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    AssertSqlSafe(*sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

pub(crate) async fn run(store: &Store) -> Result<(), StoreError> {
    let migrator = migrator(store.engine);
    let engine = store.engine.name();
    let result = store
        .call(store.options.migrate_timeout, async {
            let applied = on_pool!(store, |pool, _Db| { migrator.run(pool).await });
            applied.map_err(|e| {
                Fail::Store(StoreError::Migrate {
                    engine,
                    reason: store.secrets.scrub(&e.to_string()),
                })
            })
        })
        .await;
    result?;
    // Samples written before `tick_totals` existed (none on a new database).
    crate::totals::backfill(store).await?;
    tracing::info!(engine, url = %store.shown_url, "history store migrated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `migrations/<engine>/` is embedded, under its own version and name, and
    /// both engines have the same versions.
    #[test]
    fn the_embedded_list_matches_the_folders() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        for (engine, folder) in [(Engine::Sqlite, "sqlite"), (Engine::Postgres, "postgres")] {
            let mut files: Vec<(String, String)> = std::fs::read_dir(root.join(folder))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .map(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    (name, std::fs::read_to_string(&p).unwrap())
                })
                .collect();
            files.sort();
            let listed: Vec<(String, String)> = embedded(engine)
                .iter()
                .map(|(v, d, sql)| (format!("{v:04}_{d}.sql"), (*sql).to_owned()))
                .collect();
            assert_eq!(files, listed, "{folder}");
        }
        let versions = |e| embedded(e).iter().map(|m| m.0).collect::<Vec<_>>();
        assert_eq!(versions(Engine::Sqlite), versions(Engine::Postgres));
    }
}
