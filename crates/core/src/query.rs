//! Reading the fleet: resolving names, selecting targets, summarising, grouping. Domain rules
//! that every API and subscriber shares, so that no handler holds its own version of them.
use std::{collections::BTreeMap, sync::Arc};

use crate::{
    filter::WorkerFilter,
    model::{Activity, Backend, HealthStatus, Lifecycle, UNGROUPED, Worker, WorkerKey},
    state::Snapshot,
};

/// Why a name did not resolve to one worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no worker named {0:?}")]
    NotFound(String),
    /// A short id that several workers share (across backends or scopes).
    #[error("{name:?} names {} workers; use a resource name", candidates.len())]
    Ambiguous {
        name: String,
        candidates: Vec<WorkerKey>,
    },
}

/// Which workers an action targets: exactly one kind is used.
#[derive(Debug, Clone)]
pub enum Selector {
    /// Resource names, or short ids where unambiguous.
    Workers(Vec<String>),
    Filter(Box<WorkerFilter>),
    /// Group ids.
    Groups(Vec<String>),
}

/// Why a selector could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("no group named {0:?}")]
    GroupNotFound(String),
    #[error("the selection matches {matched} workers; at most {max} may be targeted")]
    TooMany { matched: usize, max: usize },
}

/// Counts and totals over a set of workers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub workers: u32,
    pub active: u32,
    pub idle: u32,
    pub unresponsive: u32,
    pub alive: u32,
    pub offline: u32,
    pub lost: u32,
    /// Remembered across a restart and not heard from since.
    pub unknown: u32,
    pub healthy: u32,
    pub warning: u32,
    pub critical: u32,
    /// Workers whose health nothing has evaluated.
    pub health_unknown: u32,
    pub active_tasks: u64,
    pub processed_tasks: u64,
    /// Finished per minute over the last minute, summed.
    pub throughput_per_min: f64,
    /// Pool slots of alive workers.
    pub pool_capacity: u64,
    pub groups: u32,
    pub queued_messages: u64,
    pub unacked_messages: u64,
}

/// A worker group as the fleet shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    pub backend: Backend,
    pub id: Arc<str>,
    pub workers: u32,
    pub alive: u32,
    pub active: u32,
    pub idle: u32,
    pub unresponsive: u32,
    pub offline: u32,
    pub lost: u32,
    pub unknown: u32,
    pub active_tasks: u64,
    pub pool_capacity: u64,
    /// Queues its workers consume, sorted.
    pub queues: Vec<String>,
}

impl Snapshot {
    /// One worker by resource name, or by short id when only one worker has it.
    pub fn resolve(&self, name: &str) -> Result<Arc<Worker>, ResolveError> {
        if let Some(key) = WorkerKey::parse(name) {
            return self
                .workers
                .get(&key)
                .cloned()
                .ok_or_else(|| ResolveError::NotFound(name.to_string()));
        }
        let mut found = self.workers_with_id(name);
        let first = found
            .next()
            .cloned()
            .ok_or_else(|| ResolveError::NotFound(name.to_string()))?;
        let rest: Vec<WorkerKey> = found.map(|w| w.key.clone()).collect();
        if rest.is_empty() {
            return Ok(first);
        }
        let mut candidates = vec![first.key.clone()];
        candidates.extend(rest);
        Err(ResolveError::Ambiguous {
            name: name.to_string(),
            candidates,
        })
    }

    /// The workers a selector targets, in key order, without duplicates; at most `max`.
    pub fn select(&self, selector: &Selector, max: usize) -> Result<Vec<Arc<Worker>>, SelectError> {
        let mut chosen: BTreeMap<WorkerKey, Arc<Worker>> = BTreeMap::new();
        match selector {
            Selector::Workers(names) => {
                for name in names {
                    let worker = self.resolve(name)?;
                    chosen.insert(worker.key.clone(), worker);
                }
            }
            Selector::Filter(filter) => {
                for worker in self.workers.values().filter(|w| filter.matches(w)) {
                    chosen.insert(worker.key.clone(), worker.clone());
                }
            }
            Selector::Groups(groups) => {
                for group in groups {
                    let members: Vec<&Arc<Worker>> = self
                        .workers
                        .values()
                        .filter(|w| *w.group == **group && &*w.group != UNGROUPED)
                        .collect();
                    if members.is_empty() {
                        return Err(SelectError::GroupNotFound(group.clone()));
                    }
                    for worker in members {
                        chosen.insert(worker.key.clone(), worker.clone());
                    }
                }
            }
        }
        if chosen.len() > max {
            return Err(SelectError::TooMany {
                matched: chosen.len(),
                max,
            });
        }
        Ok(chosen.into_values().collect())
    }

    /// Counts and totals over the workers the filter selects; queue totals are fleet-wide.
    pub fn summary(&self, filter: &WorkerFilter) -> Summary {
        let mut s = Summary::default();
        let mut groups = std::collections::BTreeSet::new();
        for w in self.workers.values().filter(|w| filter.matches(w)) {
            s.workers += 1;
            match w.activity {
                Activity::Active => s.active += 1,
                Activity::Idle => s.idle += 1,
                Activity::Unresponsive => s.unresponsive += 1,
            }
            match w.lifecycle {
                Lifecycle::Alive => {
                    s.alive += 1;
                    s.pool_capacity += w.pool.as_ref().map_or(0, |p| u64::from(p.max_concurrency));
                }
                Lifecycle::Offline => s.offline += 1,
                Lifecycle::Lost => s.lost += 1,
                Lifecycle::Unknown => s.unknown += 1,
            }
            match w.health.as_ref().map(|h| h.status) {
                Some(HealthStatus::Healthy) => s.healthy += 1,
                Some(HealthStatus::Warning) => s.warning += 1,
                Some(HealthStatus::Critical) => s.critical += 1,
                None => s.health_unknown += 1,
            }
            if &*w.group != UNGROUPED {
                groups.insert((w.key.backend, w.group.clone()));
            }
            s.active_tasks += u64::from(w.active_tasks);
            s.processed_tasks += w.processed_total;
            s.throughput_per_min += w
                .task_stats
                .as_ref()
                .map_or(0.0, |t| t.overall[0].throughput_per_min());
        }
        s.groups = groups.len() as u32;
        for q in self.queues.values() {
            s.queued_messages += q.depth;
            s.unacked_messages += q.unacked;
        }
        s
    }

    /// Every known group, by backend and id.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let mut groups: BTreeMap<(Backend, Arc<str>), GroupInfo> = BTreeMap::new();
        for w in self.workers.values() {
            if &*w.group == UNGROUPED {
                continue;
            }
            let g = groups
                .entry((w.key.backend, w.group.clone()))
                .or_insert_with(|| GroupInfo {
                    backend: w.key.backend,
                    id: w.group.clone(),
                    workers: 0,
                    alive: 0,
                    active: 0,
                    idle: 0,
                    unresponsive: 0,
                    offline: 0,
                    lost: 0,
                    unknown: 0,
                    active_tasks: 0,
                    pool_capacity: 0,
                    queues: Vec::new(),
                });
            g.workers += 1;
            match w.lifecycle {
                Lifecycle::Alive => {
                    g.alive += 1;
                    g.pool_capacity += w.pool.as_ref().map_or(0, |p| u64::from(p.max_concurrency));
                }
                Lifecycle::Offline => g.offline += 1,
                Lifecycle::Lost => g.lost += 1,
                Lifecycle::Unknown => g.unknown += 1,
            }
            match w.activity {
                Activity::Active => g.active += 1,
                Activity::Idle => g.idle += 1,
                Activity::Unresponsive => g.unresponsive += 1,
            }
            g.active_tasks += u64::from(w.active_tasks);
            for q in &w.queues {
                if !g.queues.contains(&q.name) {
                    g.queues.push(q.name.clone());
                }
            }
        }
        let mut groups: Vec<GroupInfo> = groups.into_values().collect();
        for g in &mut groups {
            g.queues.sort();
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use imbl::OrdMap;

    use super::*;

    fn snapshot(workers: &[(Backend, &str, &str, &str)]) -> Snapshot {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        let mut map = OrdMap::new();
        for (backend, scope, id, group) in workers {
            let mut w = Worker::new(WorkerKey::new(*backend, *scope, *id), now);
            w.group = Arc::from(*group);
            map.insert(w.key.clone(), Arc::new(w));
        }
        Snapshot {
            epoch: 1,
            revision: 1,
            at: now,
            workers: map,
            queues: OrdMap::new(),
            recent: Default::default(),
            sources: OrdMap::new(),
            workers_refused: 0,
            tasks_sent: OrdMap::new(),
        }
    }

    #[test]
    fn short_ids_resolve_only_when_unambiguous() {
        let s = snapshot(&[
            (Backend::Celery, "default", "w1@h", "celery"),
            (
                Backend::RedisStreams,
                "orders:billing",
                "w1@h",
                "orders:billing",
            ),
            (Backend::Celery, "default", "w2@h", "celery"),
        ]);
        assert_eq!(&*s.resolve("w2@h").unwrap().key.id, "w2@h");
        match s.resolve("w1@h") {
            Err(ResolveError::Ambiguous { candidates, .. }) => assert_eq!(candidates.len(), 2),
            other => panic!("{other:?}"),
        }
        let by_name = s
            .resolve("workers/redis-streams/orders%3Abilling/w1@h")
            .unwrap();
        assert_eq!(by_name.key.backend, Backend::RedisStreams);
        assert!(matches!(s.resolve("zz"), Err(ResolveError::NotFound(_))));
    }

    #[test]
    fn selectors_resolve_groups_filters_and_respect_the_cap() {
        let s = snapshot(&[
            (Backend::Celery, "default", "a@h", "celery"),
            (Backend::Celery, "default", "b@h", "celery,emails"),
            (Backend::Celery, "default", "c@h", "celery"),
        ]);
        let in_group = s
            .select(&Selector::Groups(vec!["celery".into()]), 10)
            .unwrap();
        assert_eq!(in_group.len(), 2);
        assert_eq!(
            s.select(&Selector::Groups(vec!["nope".into()]), 10),
            Err(SelectError::GroupNotFound("nope".into()))
        );
        assert_eq!(
            s.select(&Selector::Filter(Box::default()), 2),
            Err(SelectError::TooMany { matched: 3, max: 2 })
        );
        let named = s
            .select(&Selector::Workers(vec!["a@h".into(), "a@h".into()]), 10)
            .unwrap();
        assert_eq!(named.len(), 1, "duplicates count once");
        let groups = s.groups();
        assert_eq!(groups.len(), 2);
        assert_eq!((&*groups[0].id, groups[0].workers), ("celery", 2));
        let summary = s.summary(&WorkerFilter::default());
        assert_eq!(
            (summary.workers, summary.groups, summary.health_unknown),
            (3, 2, 3)
        );
    }
}
