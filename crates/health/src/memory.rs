//! What the engine remembers of each worker between cycles: the limits resolved for it, its
//! last sign of progress (for `stalled`), and recent resource samples (for `forecast`).
use std::{
    cmp::Ordering,
    collections::VecDeque,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use warden_core::{Worker, WorkerKey};

use crate::{config::Limits, overrides::Resolver};

/// Most samples kept per series, whatever the window (a fast source cannot grow memory).
const MAX_POINTS: usize = 512;

#[derive(Debug, Clone)]
pub struct WorkerMemory {
    /// The limits resolved for the group and queues it had then.
    limits: Option<CachedLimits>,
    /// What proves progress, as last seen.
    progress: Option<Progress>,
    /// When it last made progress (or the engine first saw it).
    pub last_progress: SystemTime,
    /// Since when a queue it consumes has held messages, as the engine saw it.
    pub backlog_since: Option<SystemTime>,
    /// Memory in bytes, by sample time.
    pub memory: Series,
    /// Disk use in percent, by sample time.
    pub disk: Series,
}

#[derive(Debug, Clone)]
struct CachedLimits {
    group: Arc<str>,
    queues: Vec<String>,
    limits: Arc<Limits>,
}

/// Counters that move when the worker does work: tasks it finished (as it reports them and
/// as warden counted their events), tasks started, and its Streams pending count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    processed: u64,
    started: u64,
    finished: u64,
    pending: u64,
}

impl Progress {
    fn of(worker: &Worker) -> Self {
        let (mut started, mut finished) = (0u64, 0u64);
        if let Some(stats) = &worker.task_stats {
            for (_, t) in &stats.totals {
                started = started.wrapping_add(t.started);
                finished = finished.wrapping_add(t.succeeded).wrapping_add(t.failed);
            }
        }
        Self {
            processed: worker.processed_total,
            started,
            finished,
            pending: worker.stream.as_ref().map_or(0, |s| s.pending),
        }
    }
}

impl WorkerMemory {
    pub(crate) fn new(now: SystemTime) -> Self {
        Self {
            limits: None,
            progress: None,
            last_progress: now,
            backlog_since: None,
            memory: Series::default(),
            disk: Series::default(),
        }
    }

    /// The limits for the worker, resolved again only when its group or queues changed.
    pub(crate) fn limits(&mut self, resolver: &Resolver, worker: &Worker) -> Arc<Limits> {
        if resolver.is_uniform() {
            return resolver.base().clone();
        }
        if let Some(c) = &self.limits
            && (Arc::ptr_eq(&c.group, &worker.group) || c.group == worker.group)
            && c.queues.len() == worker.queues.len()
            && c.queues
                .iter()
                .zip(&worker.queues)
                .all(|(a, b)| *a == b.name)
        {
            return c.limits.clone();
        }
        let limits = resolver.resolve(worker);
        self.limits = Some(CachedLimits {
            group: worker.group.clone(),
            queues: worker.queues.iter().map(|q| q.name.clone()).collect(),
            limits: limits.clone(),
        });
        limits
    }

    /// Takes this cycle's evidence: progress, backlog, resource samples.
    pub(crate) fn observe(
        &mut self,
        worker: &Worker,
        backlog: Option<u64>,
        limits: &Limits,
        now: SystemTime,
    ) {
        let progress = Progress::of(worker);
        if self.progress.is_some_and(|p| p != progress) || worker.active_tasks > 0 {
            self.last_progress = now;
        }
        self.progress = Some(progress);
        match backlog {
            Some(n) if n > 0 => {
                self.backlog_since.get_or_insert(now);
            }
            _ => self.backlog_since = None,
        }
        if let Some(usage) = &worker.resources {
            let at = secs(usage.sampled_at);
            if let Some(bytes) = usage.memory_bytes {
                self.memory.push(at, bytes as f64);
            }
            if let Some(disk) = usage.disk_percent.filter(|d| d.is_finite()) {
                self.disk.push(at, disk);
            }
        }
        let oldest = secs(now) - limits.forecast_window.as_secs_f64();
        self.memory.prune(oldest);
        self.disk.prune(oldest);
    }

    /// Since when the worker may be stalled: its last progress, or when its backlog began if
    /// later; `None` without a backlog.
    pub fn stall_since(&self) -> Option<SystemTime> {
        self.backlog_since.map(|b| b.max(self.last_progress))
    }
}

/// [`WorkerKey`]'s order, comparing shared strings by address first: the snapshot's keys and
/// the engine's copies of them share their strings, so that walking both in order costs no
/// string comparison.
pub(crate) fn cmp_keys(a: &WorkerKey, b: &WorkerKey) -> Ordering {
    fn cmp_str(a: &Arc<str>, b: &Arc<str>) -> Ordering {
        if Arc::ptr_eq(a, b) {
            Ordering::Equal
        } else {
            a.cmp(b)
        }
    }
    a.backend
        .cmp(&b.backend)
        .then_with(|| cmp_str(&a.scope, &b.scope))
        .then_with(|| cmp_str(&a.id, &b.id))
}

/// Seconds since the epoch, as the forecast's x axis.
pub(crate) fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Samples of one figure over time, oldest first, one per sample time.
#[derive(Debug, Clone, Default)]
pub struct Series {
    points: VecDeque<(f64, f64)>,
}

impl Series {
    /// Adds a sample newer than the last one (the same sample seen again is ignored).
    pub fn push(&mut self, at: f64, value: f64) {
        if self.points.back().is_some_and(|(last, _)| *last >= at) {
            return;
        }
        if self.points.len() == MAX_POINTS {
            self.points.pop_front();
        }
        self.points.push_back((at, value));
    }

    /// Drops samples older than `oldest`.
    pub fn prune(&mut self, oldest: f64) {
        while self.points.front().is_some_and(|(at, _)| *at < oldest) {
            self.points.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn points(&self) -> impl Iterator<Item = (f64, f64)> + Clone + '_ {
        self.points.iter().copied()
    }
}
