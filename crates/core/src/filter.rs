//! Selecting workers: the filter shared by ListWorkers, WatchFleet, summaries and control
//! targets, and the heartbeat-based health verdict it can filter on.
use std::time::SystemTime;

use globset::{Glob, GlobMatcher};

use super::model::{Activity, Backend, Lifecycle, Thresholds, Worker};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HealthStatus {
    Healthy,
    Warning,
    Critical,
}

/// One reason behind a health verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub check: &'static str,
    pub status: HealthStatus,
    pub message: String,
    pub observed: f64,
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: HealthStatus,
    pub score: f64,
    pub findings: Vec<Finding>,
}

/// The heartbeat check: silence against the warning and critical thresholds. (The full
/// health engine adds resource and task checks.)
pub fn health(worker: &Worker, now: SystemTime, thresholds: Thresholds) -> Health {
    let silence = worker.silence(now).as_secs_f64();
    let (status, threshold, message) = match worker.lifecycle {
        Lifecycle::Offline => (HealthStatus::Healthy, 0.0, "left cleanly".to_string()),
        Lifecycle::Lost => (
            HealthStatus::Critical,
            thresholds.critical.as_secs_f64(),
            format!("not heard from for {silence:.0}s: lost"),
        ),
        Lifecycle::Alive if worker.activity == Activity::Unresponsive => (
            HealthStatus::Warning,
            thresholds.warning.as_secs_f64(),
            if worker.missed_ping {
                "did not answer the last ping".to_string()
            } else {
                format!("not heard from for {silence:.0}s")
            },
        ),
        Lifecycle::Alive => (
            HealthStatus::Healthy,
            thresholds.warning.as_secs_f64(),
            "heartbeat on time".to_string(),
        ),
    };
    let score = match status {
        HealthStatus::Healthy => 1.0,
        HealthStatus::Warning => 0.5,
        HealthStatus::Critical => 0.0,
    };
    let findings = if status == HealthStatus::Healthy {
        Vec::new()
    } else {
        vec![Finding {
            check: "heartbeat",
            status,
            message,
            observed: silence,
            threshold,
        }]
    };
    Health {
        status,
        score,
        findings,
    }
}

/// Which workers to select; every set part narrows the selection.
#[derive(Debug, Clone, Default)]
pub struct WorkerFilter {
    pub activities: Vec<Activity>,
    pub lifecycles: Vec<Lifecycle>,
    pub health: Vec<HealthStatus>,
    pub backends: Vec<Backend>,
    pub queue: Option<String>,
    pub name_glob: Option<GlobMatcher>,
}

impl WorkerFilter {
    /// Compiles a shell-style glob (`*`, `?`, `[a-z]`, `{a,b}`).
    pub fn glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
        Ok(Glob::new(pattern)?.compile_matcher())
    }

    pub fn matches(&self, worker: &Worker, now: SystemTime, thresholds: Thresholds) -> bool {
        (self.activities.is_empty() || self.activities.contains(&worker.activity))
            && (self.lifecycles.is_empty() || self.lifecycles.contains(&worker.lifecycle))
            && (self.backends.is_empty() || self.backends.contains(&worker.backend))
            && self
                .queue
                .as_ref()
                .is_none_or(|q| worker.queues.iter().any(|c| &c.name == q))
            && self
                .name_glob
                .as_ref()
                .is_none_or(|g| g.is_match(&worker.name))
            && (self.health.is_empty()
                || self
                    .health
                    .contains(&health(worker, now, thresholds).status))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn glob_and_activity_narrow_the_selection() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let t = Thresholds {
            warning: Duration::from_secs(30),
            critical: Duration::from_secs(60),
        };
        let w = Worker::new("w1@host-a", Backend::Celery, now);
        let filter = WorkerFilter {
            name_glob: Some(WorkerFilter::glob("w?@host-{a,b}").unwrap()),
            ..WorkerFilter::default()
        };
        assert!(filter.matches(&w, now, t));
        let filter = WorkerFilter {
            activities: vec![Activity::Active],
            ..filter
        };
        assert!(!filter.matches(&w, now, t));
        assert!(WorkerFilter::glob("w[").is_err());
        assert_eq!(health(&w, now, t).status, HealthStatus::Healthy);
    }
}
