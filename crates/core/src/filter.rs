//! Selecting workers: the filter shared by ListWorkers, WatchFleet, summaries, control
//! selectors and every core subscriber.
use std::collections::BTreeMap;

use globset::{Glob, GlobMatcher};

use crate::model::{Activity, Backend, HealthStatus, Lifecycle, Worker};

/// Which workers to select; every set part narrows the selection (AND), and a list matches
/// any of its values (OR).
#[derive(Debug, Clone, Default)]
pub struct WorkerFilter {
    pub activities: Vec<Activity>,
    pub lifecycles: Vec<Lifecycle>,
    /// A worker whose health was never evaluated matches no health status.
    pub health: Vec<HealthStatus>,
    pub backends: Vec<Backend>,
    pub groups: Vec<String>,
    /// Every label must be present with this value.
    pub labels: BTreeMap<String, String>,
    pub queue: Option<String>,
    /// On the backend-local id (`w1@host`), not the resource name.
    pub name_glob: Option<GlobMatcher>,
}

impl WorkerFilter {
    /// Compiles a shell-style glob (`*`, `?`, `[a-z]`, `{a,b}`).
    pub fn glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
        Ok(Glob::new(pattern)?.compile_matcher())
    }

    pub fn matches(&self, worker: &Worker) -> bool {
        (self.activities.is_empty() || self.activities.contains(&worker.activity))
            && (self.lifecycles.is_empty() || self.lifecycles.contains(&worker.lifecycle))
            && (self.backends.is_empty() || self.backends.contains(&worker.backend()))
            && (self.groups.is_empty() || self.groups.iter().any(|g| **g == *worker.group))
            && self
                .labels
                .iter()
                .all(|(k, v)| worker.labels.get(k) == Some(v))
            && self
                .queue
                .as_ref()
                .is_none_or(|q| worker.queues.iter().any(|c| &c.name == q))
            && self
                .name_glob
                .as_ref()
                .is_none_or(|g| g.is_match(worker.id()))
            && (self.health.is_empty()
                || worker
                    .health
                    .as_ref()
                    .is_some_and(|h| self.health.contains(&h.status)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::model::WorkerKey;

    #[test]
    fn glob_labels_and_activity_narrow_the_selection() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let w = Worker::new(WorkerKey::new(Backend::Celery, "default", "w1@host-a"), now);
        let filter = WorkerFilter {
            name_glob: Some(WorkerFilter::glob("w?@host-{a,b}").unwrap()),
            labels: [("host".to_string(), "host-a".to_string())].into(),
            ..WorkerFilter::default()
        };
        assert!(filter.matches(&w));
        let other_host = WorkerFilter {
            labels: [("host".to_string(), "host-b".to_string())].into(),
            ..WorkerFilter::default()
        };
        assert!(!other_host.matches(&w));
        let filter = WorkerFilter {
            activities: vec![Activity::Active],
            ..filter
        };
        assert!(!filter.matches(&w));
        assert!(WorkerFilter::glob("w[").is_err());
    }

    #[test]
    fn a_worker_without_health_matches_no_health_status() {
        let now = SystemTime::UNIX_EPOCH;
        let w = Worker::new(WorkerKey::new(Backend::Celery, "default", "w1@h"), now);
        for status in [
            HealthStatus::Healthy,
            HealthStatus::Warning,
            HealthStatus::Critical,
        ] {
            let filter = WorkerFilter {
                health: vec![status],
                ..WorkerFilter::default()
            };
            assert!(!filter.matches(&w), "{status:?}");
        }
        assert!(WorkerFilter::default().matches(&w));
    }
}
