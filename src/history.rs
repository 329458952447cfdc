//! The history store as the binary opens it: from the config's `database_url`, migrated
//! unless `no_migrate`, handed to the recorder and the History service behind the core's
//! `HistoryStore` port.
use std::sync::Arc;

use warden_core::history::HistoryStore;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history store: {0}")]
    Store(String),
}

/// Opens the store the config names (None when history is off), applying migrations first
/// unless `no_migrate`.
pub async fn open(config: &Config) -> Result<Option<Arc<dyn HistoryStore>>, HistoryError> {
    if !config.history_enabled() {
        return Ok(None);
    }
    Err(HistoryError::Store(
        "the store adapter is not wired yet".into(),
    ))
}

/// `warden migrate`: applies pending migrations and reports what it did.
pub async fn migrate(_url: &str) -> Result<(), HistoryError> {
    Err(HistoryError::Store(
        "the store adapter is not wired yet".into(),
    ))
}
