//! The restart ledger: every restart of a worker in the last hour, manual and automatic, so
//! that auto-recovery can cap itself. The controller records each restart it carries out;
//! at boot the ledger is filled from the history store's restart events, so the cap holds
//! across a warden restart.
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use warden_core::history::{
    ACTION_RESTART, ATTR_ACTION, AttrValue, EventKind, EventQuery, HistoryStore,
};

/// The window the caps count over.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// Most restart events read back at boot.
const BOOT_READ_LIMIT: usize = 100_000;

/// Restart times per worker (resource name), within [`WINDOW`]. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RestartLedger {
    inner: Arc<Mutex<HashMap<String, VecDeque<SystemTime>>>>,
}

impl RestartLedger {
    /// Records one restart of `worker` at `at`.
    pub fn record(&self, worker: &str, at: SystemTime) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let times = inner.entry(worker.to_string()).or_default();
        // Kept sorted: boot entries and live ones may interleave.
        let pos = times.partition_point(|t| *t <= at);
        times.insert(pos, at);
    }

    /// Restarts of `worker` in the window ending at `now`.
    pub fn count(&self, worker: &str, now: SystemTime) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(times) = inner.get_mut(worker) else {
            return 0;
        };
        prune(times, now);
        times.len()
    }

    /// The latest restart of `worker` still in the ledger.
    pub fn last(&self, worker: &str) -> Option<SystemTime> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.get(worker).and_then(|t| t.back().copied())
    }

    /// Restarts of every worker in the window ending at `now`.
    pub fn total(&self, now: SystemTime) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.retain(|_, times| {
            prune(times, now);
            !times.is_empty()
        });
        inner.values().map(VecDeque::len).sum()
    }

    /// Fills the ledger from the store's restart events of the last window (control and
    /// recovery events with `action=restart`). Returns how many were read.
    pub async fn load(
        &self,
        store: &dyn HistoryStore,
        now: SystemTime,
    ) -> Result<usize, warden_core::ports::PortError> {
        let query = EventQuery {
            kinds: vec![EventKind::Control, EventKind::Recovery],
            since: Some(now - WINDOW),
            until: Some(now + Duration::from_secs(1)),
            limit: BOOT_READ_LIMIT,
            ..EventQuery::default()
        };
        let events = store.events(&query).await?;
        let mut read = 0;
        for stored in events {
            let e = &stored.event;
            let is_restart = e.attributes.iter().any(|(k, v)| {
                k == ATTR_ACTION && matches!(v, AttrValue::String(s) if s == ACTION_RESTART)
            });
            if let (true, Some(worker)) = (is_restart, &e.worker) {
                self.record(&worker.resource_name(), e.at);
                read += 1;
            }
        }
        Ok(read)
    }
}

fn prune(times: &mut VecDeque<SystemTime>, now: SystemTime) {
    while times.front().is_some_and(|t| *t + WINDOW <= now) {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_counts_for_exactly_one_hour() {
        let ledger = RestartLedger::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        ledger.record("workers/celery/a/w1", t0);
        ledger.record("workers/celery/a/w1", t0 + Duration::from_secs(60));
        ledger.record("workers/celery/a/w2", t0);
        assert_eq!(
            ledger.count(
                "workers/celery/a/w1",
                t0 + WINDOW - Duration::from_millis(1)
            ),
            2
        );
        assert_eq!(ledger.total(t0 + WINDOW - Duration::from_millis(1)), 3);
        assert_eq!(ledger.count("workers/celery/a/w1", t0 + WINDOW), 1);
        assert_eq!(ledger.total(t0 + WINDOW), 1);
        assert_eq!(ledger.count("workers/celery/a/w9", t0), 0);
    }
}
