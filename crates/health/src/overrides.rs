//! Which thresholds apply to a worker.
//!
//! Levels, from least to most specific; a more specific level wins, value by value:
//! 1. the built-in defaults ([`Limits::default`]);
//! 2. `[health.defaults]`;
//! 3. overrides with `group = "..."` matching the worker's group;
//! 4. overrides with `queue = "..."` naming a queue the worker consumes;
//! 5. overrides with `worker = "pattern"` whose glob matches the worker's name.
//!
//! Within one level, when several overrides match (a worker consuming two overridden queues,
//! two patterns), they apply in file order: the later one wins.
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use warden_core::Worker;

use crate::config::{ConfigError, HealthConfig, Limits, Settings};

/// The overrides of a configuration, ready to match workers.
#[derive(Debug, Clone)]
pub struct Resolver {
    base: Arc<Limits>,
    groups: Vec<(String, Settings)>,
    queues: Vec<(String, Settings)>,
    patterns: GlobSet,
    pattern_settings: Vec<Settings>,
}

impl Resolver {
    pub fn new(config: &HealthConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut base = Limits::default();
        base.apply(&config.defaults);
        let mut groups = Vec::new();
        let mut queues = Vec::new();
        let mut builder = GlobSetBuilder::new();
        let mut pattern_settings = Vec::new();
        for (i, o) in config.overrides.iter().enumerate() {
            if let Some(g) = &o.group {
                groups.push((g.clone(), o.settings()));
            } else if let Some(q) = &o.queue {
                queues.push((q.clone(), o.settings()));
            } else if let Some(pattern) = &o.worker {
                let glob = Glob::new(pattern).map_err(|e| ConfigError::Invalid {
                    at: crate::config::override_label(i, o),
                    field: "worker",
                    reason: format!("bad glob pattern: {e}"),
                })?;
                builder.add(glob);
                pattern_settings.push(o.settings());
            }
        }
        let patterns = builder.build().map_err(|e| ConfigError::Invalid {
            at: "[[health.overrides]]".into(),
            field: "worker",
            reason: e.to_string(),
        })?;
        Ok(Self {
            base: Arc::new(base),
            groups,
            queues,
            patterns,
            pattern_settings,
        })
    }

    /// True when no override exists: every worker gets the same limits.
    pub fn is_uniform(&self) -> bool {
        self.groups.is_empty() && self.queues.is_empty() && self.pattern_settings.is_empty()
    }

    /// The limits for every worker no override matches.
    pub fn base(&self) -> &Arc<Limits> {
        &self.base
    }

    /// The limits that apply to `worker`.
    pub fn resolve(&self, worker: &Worker) -> Arc<Limits> {
        if self.is_uniform() {
            return self.base.clone();
        }
        let mut limits: Option<Limits> = None;
        let mut layer = |s: &Settings| {
            limits.get_or_insert_with(|| (*self.base).clone()).apply(s);
        };
        for (group, s) in &self.groups {
            if **group == *worker.group {
                layer(s);
            }
        }
        for (queue, s) in &self.queues {
            if worker.queues.iter().any(|q| q.name == *queue) {
                layer(s);
            }
        }
        if !self.pattern_settings.is_empty() {
            let mut matched = self.patterns.matches(worker.id());
            matched.sort_unstable();
            for i in matched {
                layer(&self.pattern_settings[i]);
            }
        }
        limits.map_or_else(|| self.base.clone(), Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use warden_core::{Backend, ConsumedQueue, WorkerKey};

    use super::*;
    use crate::config::Override;

    fn worker(id: &str, group: &str, queues: &[&str]) -> Worker {
        let mut w = Worker::new(
            WorkerKey::new(Backend::Celery, "b", id),
            UNIX_EPOCH + Duration::from_secs(1),
        );
        w.group = group.into();
        w.queues = queues
            .iter()
            .map(|q| ConsumedQueue {
                name: q.to_string(),
                ..Default::default()
            })
            .collect();
        w
    }

    fn config() -> HealthConfig {
        HealthConfig {
            defaults: Settings {
                cpu_warning: Some(70.0),
                ..Default::default()
            },
            overrides: vec![
                Override {
                    worker: Some("batch-*".into()),
                    cpu_warning: Some(90.0),
                    ..Default::default()
                },
                Override {
                    group: Some("video".into()),
                    cpu_warning: Some(75.0),
                    cpu_critical: Some(99.0),
                    ..Default::default()
                },
                Override {
                    queue: Some("gpu".into()),
                    cpu_warning: Some(85.0),
                    ..Default::default()
                },
                Override {
                    queue: Some("gpu2".into()),
                    cpu_warning: Some(86.0),
                    ..Default::default()
                },
                Override {
                    worker: Some("batch-7*".into()),
                    cpu_warning: Some(91.0),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_most_specific_level_wins_value_by_value() {
        let r = Resolver::new(&config()).unwrap();
        // Nothing matches: [health.defaults] over the built-in default.
        let l = r.resolve(&worker("a@h", "web", &["celery"]));
        assert_eq!((l.cpu_warning, l.cpu_critical), (70.0, 95.0));
        // Group over defaults; the group's critical stays when nothing else sets it.
        let l = r.resolve(&worker("a@h", "video", &["celery"]));
        assert_eq!((l.cpu_warning, l.cpu_critical), (75.0, 99.0));
        // Queue over group.
        let l = r.resolve(&worker("a@h", "video", &["gpu"]));
        assert_eq!((l.cpu_warning, l.cpu_critical), (85.0, 99.0));
        // Two queues: the later override in the file wins.
        let l = r.resolve(&worker("a@h", "video", &["gpu2", "gpu"]));
        assert_eq!(l.cpu_warning, 86.0);
        // Pattern over queue and group, even though it comes first in the file.
        let l = r.resolve(&worker("batch-1@h", "video", &["gpu"]));
        assert_eq!((l.cpu_warning, l.cpu_critical), (90.0, 99.0));
        // Two patterns: the later one wins.
        let l = r.resolve(&worker("batch-77@h", "web", &[]));
        assert_eq!(l.cpu_warning, 91.0);
    }

    #[test]
    fn without_overrides_every_worker_shares_the_base() {
        let r = Resolver::new(&HealthConfig::default()).unwrap();
        assert!(r.is_uniform());
        let a = r.resolve(&worker("a@h", "web", &[]));
        assert!(Arc::ptr_eq(&a, r.base()));
        assert_eq!(*a, Limits::default());
    }
}
