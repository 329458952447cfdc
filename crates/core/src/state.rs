//! The fleet state and the pure rules that change it. No I/O, no clock of its own: the owner
//! passes `now` in, so every rule here is tested with exact times.
use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, SystemTime},
};

use imbl::{OrdMap, Vector};

use super::{
    model::{
        ActiveTask, Activity, Backend, ConsumedQueue, EventPayload, FleetEvent, Health,
        InspectRound, LeaseRound, Lifecycle, QueueDepth, QueueInfo, ResourceUsage, Sample,
        SourceStatus, Thresholds, UNGROUPED, Worker, WorkerEventKind, WorkerKey,
    },
    perf::WorkerPerf,
};

/// Task figures of a worker without fresh events are re-summarised this often (windows slide).
const IDLE_SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Task events newer than this make the event stream the source of a worker's active tasks.
const EVENTS_FRESH: Duration = Duration::from_secs(30);

/// How many recent changes are kept for watchers that resume from a revision.
pub const REPLAY_CAPACITY: usize = 8192;

#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    WorkerAdded(Arc<Worker>),
    WorkerUpdated(Arc<Worker>),
    WorkerRemoved(WorkerKey),
    QueueUpdated(Arc<QueueInfo>),
}

/// One change, with the fleet revision it produced.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetChange {
    pub revision: u64,
    pub at: SystemTime,
    pub kind: ChangeKind,
}

/// An immutable view of the fleet at one revision. Cloning is O(1).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// This process's life: revisions of another epoch are another history.
    pub epoch: u64,
    pub revision: u64,
    pub at: SystemTime,
    pub workers: OrdMap<WorkerKey, Arc<Worker>>,
    /// Keyed by backend and name: a Celery queue and a Streams group may share a name.
    pub queues: OrdMap<(Backend, String), Arc<QueueInfo>>,
    /// The last changes (at most [`REPLAY_CAPACITY`]), oldest first, for resuming watchers.
    pub recent: Vector<Arc<FleetChange>>,
    /// Every source of observations, by name.
    pub sources: OrdMap<&'static str, SourceStatus>,
    /// New workers refused because the known-worker cap was reached.
    pub workers_refused: u64,
    /// Tasks published, by (task name, producer hostname), from `task-sent` events; at most
    /// [`MAX_SENT_SERIES`] series (a new one beyond it is not counted).
    pub tasks_sent: OrdMap<(Arc<str>, Arc<str>), u64>,
}

/// Most (task name, producer) series counted from `task-sent` events: producers are not
/// workers and nothing else bounds them.
pub const MAX_SENT_SERIES: usize = 10_000;

impl Snapshot {
    /// The sources a worker depends on that are down now: its data cannot be refreshed.
    pub fn stale_sources(&self, backend: Backend) -> Vec<&SourceStatus> {
        self.sources
            .values()
            .filter(|s| !s.connected && s.backends.contains(&backend))
            .collect()
    }

    /// The broker's status (unknown before the first probe).
    pub fn broker(&self) -> SourceStatus {
        self.sources
            .get(crate::model::BROKER)
            .cloned()
            .unwrap_or_else(SourceStatus::unknown)
    }

    /// The workers whose backend-local id is `id` (several only across backends or scopes).
    pub fn workers_with_id<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Arc<Worker>> {
        self.workers.values().filter(move |w| w.id() == id)
    }

    /// The changes after `revision`, if all of them are still kept.
    pub fn changes_since(&self, revision: u64) -> Option<Vec<Arc<FleetChange>>> {
        if revision > self.revision {
            return None;
        }
        if revision == self.revision {
            return Some(Vec::new());
        }
        let oldest = self.recent.front()?.revision;
        if oldest > revision + 1 {
            return None;
        }
        Some(
            self.recent
                .iter()
                .filter(|c| c.revision > revision)
                .cloned()
                .collect(),
        )
    }
}

/// The mutable state, owned by one task.
#[derive(Debug, Clone)]
pub struct FleetState {
    snapshot: Snapshot,
    /// Task performance per worker: mutable, owner-only, summarised into the snapshot.
    perf: HashMap<WorkerKey, WorkerPerf>,
    /// Most workers known at once; new ones beyond it are refused and counted.
    max_workers: usize,
    /// When history last sampled the fleet.
    last_sample: Option<SystemTime>,
    /// When this state was made: the first sampling interval starts here at the earliest
    /// (a worker remembered from before a restart was not observed before it).
    created: SystemTime,
    last_idle_summary: Option<SystemTime>,
    /// Distinct registered-task lists seen lately (see `intern_registered`).
    registered_lists: Vec<Arc<Vec<String>>>,
    pending: Vec<ChangeKind>,
    /// The snapshot changed since the last commit (possibly only in fields that are not
    /// reported as changes, such as `last_seen`).
    dirty: bool,
}

impl FleetState {
    pub fn new(now: SystemTime) -> Self {
        Self::with_limits(now, 0, DEFAULT_MAX_WORKERS)
    }

    pub fn with_limits(now: SystemTime, epoch: u64, max_workers: usize) -> Self {
        Self {
            max_workers,
            last_sample: None,
            created: now,
            snapshot: Snapshot {
                epoch,
                revision: 0,
                at: now,
                workers: OrdMap::new(),
                queues: OrdMap::new(),
                recent: Vector::new(),
                sources: OrdMap::new(),
                workers_refused: 0,
                tasks_sent: OrdMap::new(),
            },
            pending: Vec::new(),
            dirty: false,
            perf: HashMap::new(),
            last_idle_summary: None,
            registered_lists: Vec::new(),
        }
    }

    /// The shared copy of a registered-task list, so that a fleet running one app holds it once.
    fn intern_registered(&mut self, registered: &[String]) -> Arc<Vec<String>> {
        if let Some(shared) = self
            .registered_lists
            .iter()
            .find(|l| l.as_slice() == registered)
        {
            return shared.clone();
        }
        let shared = Arc::new(registered.to_vec());
        if self.registered_lists.len() >= 64 {
            self.registered_lists.remove(0);
        }
        self.registered_lists.push(shared.clone());
        shared
    }

    pub fn perf(&self) -> &HashMap<WorkerKey, WorkerPerf> {
        &self.perf
    }

    /// Whether a worker not yet known may be added; counts a refusal when not.
    fn admit(&mut self, key: &WorkerKey) -> bool {
        if self.snapshot.workers.contains_key(key) || self.snapshot.workers.len() < self.max_workers
        {
            return true;
        }
        self.snapshot.workers_refused += 1;
        self.dirty = true;
        false
    }

    /// Applies one event from a worker's event stream.
    pub fn apply_event(&mut self, event: FleetEvent, now: SystemTime, thresholds: Thresholds) {
        match event.payload {
            EventPayload::Sent { name } => {
                let key = (Arc::from(name), event.worker.id.clone());
                let sent = &mut self.snapshot.tasks_sent;
                if let Some(n) = sent.get_mut(&key) {
                    *n += 1;
                } else if sent.len() < MAX_SENT_SERIES {
                    sent.insert(key, 1);
                } else {
                    return;
                }
                self.dirty = true;
            }
            EventPayload::Task(task) => {
                // Cheap on purpose (the hot path): the worker's snapshot entry is refreshed
                // from its performance record once a second, not per task event.
                if let Some(perf) = self.perf.get_mut(&event.worker) {
                    perf.record(&task, now);
                    return;
                }
                if !self.snapshot.workers.contains_key(&event.worker) {
                    if !self.admit(&event.worker) {
                        return;
                    }
                    // Known from its first task event on, so that it counts against the cap
                    // at once (not only when its figures are first summarised).
                    self.put(Worker::new(event.worker.clone(), now), false);
                }
                self.perf
                    .entry(event.worker)
                    .or_default()
                    .record(&task, now);
            }
            EventPayload::Worker(ev) => {
                let existing = self.snapshot.workers.get(&event.worker).cloned();
                if existing.is_none() && !self.admit(&event.worker) {
                    return;
                }
                let mut worker = existing
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| Worker::new(event.worker.clone(), now));
                let mut changed = existing.is_none();
                worker.last_seen = worker.last_seen.max(now);
                worker.last_heartbeat = Some(now);
                changed |= replace(&mut worker.remembered, None);
                changed |= replace(&mut worker.missed_ping, false);
                match ev.kind {
                    // A worker that said goodbye is back only when it says hello, or when
                    // another process speaks under its name: a last heartbeat sent during the
                    // warm shutdown must not revive it.
                    WorkerEventKind::Online => {
                        if worker.offline_at.take().is_some() | worker.lost_at.take().is_some() {
                            changed = true;
                        }
                    }
                    WorkerEventKind::Heartbeat => {
                        if worker.offline_at.is_some() && restarted(&worker, ev.pid) {
                            worker.offline_at = None;
                            changed = true;
                        }
                    }
                    WorkerEventKind::Offline => {
                        if worker.offline_at.is_none() {
                            worker.offline_at = Some(now);
                            changed = true;
                        }
                    }
                }
                let interval = ev.freq.or(worker.heartbeat_interval);
                changed |= replace(&mut worker.heartbeat_interval, interval);
                let pid = ev.pid.or(worker.pid);
                changed |= replace(&mut worker.pid, pid);
                if let Some(software) = ev.software {
                    changed |= replace(&mut worker.software, Some(software));
                }
                worker.load_average = ev.load_average.or(worker.load_average);
                let events_fresh = self
                    .perf
                    .get(&worker.key)
                    .and_then(|p| p.last_event)
                    .is_some_and(|t| now.duration_since(t).unwrap_or_default() < EVENTS_FRESH);
                if let (Some(active), false) = (ev.active, events_fresh) {
                    changed |= replace(&mut worker.active_tasks, active);
                }
                if let Some(processed) = ev.processed {
                    changed |= replace(&mut worker.processed_total, processed);
                }
                changed |= evaluate(&mut worker, now, thresholds);
                if changed {
                    self.put(worker, existing.is_some());
                } else {
                    self.touch(worker);
                }
            }
        }
    }

    /// Folds task performance into the workers' snapshot entries: those with new events, and
    /// those whose windows moved past a slot that held something since they were last folded
    /// (checked every `IDLE_SUMMARY_EVERY`; windows change in slot steps, so nothing else can
    /// have changed).
    pub fn summarise_tasks(&mut self, now: SystemTime, thresholds: Thresholds) {
        let idle_due = self
            .last_idle_summary
            .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= IDLE_SUMMARY_EVERY);
        if idle_due {
            self.last_idle_summary = Some(now);
        }
        let due: Vec<WorkerKey> = self
            .perf
            .iter()
            .filter(|(_, p)| p.dirty || (idle_due && p.windows_moved(now)))
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            let Some(perf) = self.perf.get_mut(&key) else {
                continue;
            };
            perf.dirty = false;
            perf.summarised_at = Some(now);
            // Rates are over the time warden has watched the worker (issue 13 §6).
            let observed_since = self
                .snapshot
                .workers
                .get(&key)
                .map(|w| w.first_seen)
                .into_iter()
                .chain(perf.first_event)
                .min()
                .unwrap_or(now);
            let stats = perf.task_stats(now, observed_since);
            let events_fresh = perf
                .last_event
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() < EVENTS_FRESH);
            let running: Option<Vec<ActiveTask>> = events_fresh.then(|| {
                let mut running: Vec<ActiveTask> = perf
                    .running()
                    .map(|(id, t)| ActiveTask {
                        id: id.clone(),
                        name: t.name.as_deref().unwrap_or_default().to_string(),
                        started: t.started_at,
                        ..ActiveTask::default()
                    })
                    .collect();
                running.sort_by(|a, b| a.id.cmp(&b.id));
                running
            });
            let last_event = perf.last_event;
            let existing = self.snapshot.workers.get(&key).cloned();
            let mut worker = existing
                .as_deref()
                .cloned()
                .unwrap_or_else(|| Worker::new(key.clone(), now));
            let mut changed = existing.is_none();
            if let Some(t) = last_event {
                worker.last_seen = worker.last_seen.max(t);
                changed |= replace(&mut worker.remembered, None);
            }
            if worker.task_stats.as_deref() != Some(&stats) {
                worker.task_stats = Some(Arc::new(stats));
                changed = true;
            }
            if let Some(running) = running {
                changed |= replace(&mut worker.active_tasks, running.len() as u32);
                // Keep the richer inspect entries (args, pid) for tasks both sources know.
                let merged: Vec<ActiveTask> = running
                    .into_iter()
                    .map(|t| {
                        worker
                            .active
                            .iter()
                            .find(|a| a.id == t.id)
                            .cloned()
                            .unwrap_or(t)
                    })
                    .collect();
                changed |= replace(&mut worker.active, merged);
            }
            changed |= evaluate(&mut worker, now, thresholds);
            if changed {
                self.put(worker, existing.is_some());
            } else {
                self.touch(worker);
            }
        }
    }

    /// Records measured queue depths; consumers are the ALIVE workers that consume each queue.
    /// One pass over the workers builds every queue's consumers (not one pass per queue).
    pub fn apply_queues(&mut self, depths: Vec<QueueDepth>, now: SystemTime) {
        let mut consumers_of: HashMap<(Backend, &str), Vec<WorkerKey>> = HashMap::new();
        for w in self.snapshot.workers.values() {
            if w.lifecycle != Lifecycle::Alive {
                continue;
            }
            for q in &w.queues {
                consumers_of
                    .entry((w.key.backend, q.name.as_str()))
                    .or_default()
                    .push(w.key.clone());
            }
        }
        // Workers are visited in key order, so each list is sorted already.
        let mut consumers_of: HashMap<(Backend, String), Vec<WorkerKey>> = consumers_of
            .into_iter()
            .map(|((backend, name), keys)| ((backend, name.to_string()), keys))
            .collect();
        for depth in depths {
            let consumers = consumers_of
                .remove(&(depth.backend, depth.name.clone()))
                .unwrap_or_default();
            let info = QueueInfo {
                depth: depth.by_priority.iter().map(|(_, n)| n).sum(),
                backend: depth.backend,
                lag: depth.lag,
                oldest_pending_age: depth.oldest_pending_age,
                name: depth.name,
                by_priority: depth.by_priority,
                unacked: depth.unacked,
                consumers,
                updated_at: now,
            };
            let key = (info.backend, info.name.clone());
            let existing = self.snapshot.queues.get(&key).cloned();
            let changed = existing.as_deref().is_none_or(|e| {
                (e.depth, &e.by_priority, e.unacked, &e.consumers, e.lag)
                    != (
                        info.depth,
                        &info.by_priority,
                        info.unacked,
                        &info.consumers,
                        info.lag,
                    )
            });
            let info = Arc::new(info);
            self.snapshot.queues.insert(key, info.clone());
            self.dirty = true;
            if changed {
                self.pending.push(ChangeKind::QueueUpdated(info));
            }
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Applies one poll of a lease-based backend. A lease that exists is evidence of life;
    /// when a worker's lease is gone, the transition decides once and for all: OFFLINE when a
    /// goodbye marker exists then, LOST otherwise. Workers that never held a lease live by
    /// their idle time (silence, judged by the thresholds).
    pub fn apply_leases(&mut self, round: LeaseRound, now: SystemTime, thresholds: Thresholds) {
        for (scope, reports) in round.scopes {
            for report in reports {
                let key = WorkerKey::new(round.backend, scope.clone(), report.name.as_str());
                let existing = self.snapshot.workers.get(&key).cloned();
                if existing.is_none() && !self.admit(&key) {
                    continue;
                }
                let mut worker = existing
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| Worker::new(key, now));
                let mut changed = existing.is_none();
                if &*worker.group != report.group.as_str() && !report.group.is_empty() {
                    worker.group = Arc::from(report.group.as_str());
                    changed = true;
                }
                let fresh = report.lease.as_ref().filter(|l| {
                    l.renewed_at.is_none_or(|t| {
                        now.duration_since(t).unwrap_or_default() <= thresholds.critical
                    })
                });
                match fresh {
                    Some(lease) => {
                        worker.last_seen = worker.last_seen.max(now);
                        worker.last_heartbeat = Some(now);
                        changed |= replace(&mut worker.remembered, None);
                        changed |= replace(&mut worker.offline_at, None);
                        changed |= replace(&mut worker.lost_at, None);
                        if lease.period.is_some() {
                            changed |= replace(&mut worker.heartbeat_interval, lease.period);
                        }
                        if lease.pid.is_some() {
                            changed |= replace(&mut worker.pid, lease.pid);
                        }
                        if lease.started_at.is_some() {
                            changed |= replace(&mut worker.started_at, lease.started_at);
                        }
                        if let Some(counters) = &lease.tasks {
                            changed |= replace(&mut worker.processed_total, counters.processed);
                            self.perf
                                .entry(worker.key.clone())
                                .or_default()
                                .observe_counters(now, counters.clone());
                        }
                        if let Some(capacity) = lease.capacity {
                            let pool = Some(crate::model::Pool {
                                implementation: "streams".into(),
                                max_concurrency: capacity,
                                ..Default::default()
                            });
                            changed |= replace(&mut worker.pool, pool);
                        }
                        if let Some(host) = &lease.host
                            && worker.hostname != *host
                        {
                            worker.hostname = host.clone();
                            Arc::make_mut(&mut worker.labels).insert("host".into(), host.clone());
                            changed = true;
                        }
                        if let Some(version) = &lease.version {
                            let software = Some(crate::model::Software {
                                ident: round.backend.slug().into(),
                                version: version.clone(),
                                system: String::new(),
                            });
                            changed |= replace(&mut worker.software, software);
                        }
                    }
                    None if worker.last_heartbeat.is_some() => {
                        if worker.offline_at.is_none() && worker.lost_at.is_none() {
                            if report.goodbye {
                                worker.offline_at = Some(now);
                            } else {
                                worker.lost_at = Some(now);
                            }
                            changed = true;
                        }
                    }
                    None => {
                        if let Some(seen) = report.idle.and_then(|idle| now.checked_sub(idle))
                            && seen > worker.last_seen
                        {
                            worker.last_seen = seen;
                            changed |= replace(&mut worker.remembered, None);
                        }
                    }
                }
                if !report.queues.is_empty() {
                    changed |= replace(&mut worker.queues, report.queues);
                }
                if let Some(stream) = report.stream {
                    // Idle time moves on every poll: reported, but not a change worth a watch
                    // event.
                    changed |= worker.stream.as_ref().is_none_or(|s| {
                        (s.pending, &s.last_delivered_id)
                            != (stream.pending, &stream.last_delivered_id)
                    });
                    worker.stream = Some(stream);
                }
                changed |= evaluate(&mut worker, now, thresholds);
                if changed {
                    self.put(worker, existing.is_some());
                } else {
                    self.touch(worker);
                }
            }
        }
    }

    /// Records the status of one source of observations.
    pub fn set_source(&mut self, status: SourceStatus) {
        if self.snapshot.sources.get(status.source) != Some(&status) {
            self.snapshot.sources.insert(status.source, status);
            self.dirty = true;
        }
    }

    /// Applies one successful collection of `source` for the workers `asked`: each worker's
    /// usage becomes its sample's, and an asked worker the source had nothing for loses the
    /// figures that source gave before (absent, not old). While a source is down nothing is
    /// applied: its last figures stay, and its status marks them stale.
    pub fn apply_samples(
        &mut self,
        source: &'static str,
        asked: &[WorkerKey],
        samples: Vec<Sample>,
    ) {
        let sampled: std::collections::HashSet<&WorkerKey> =
            samples.iter().map(|s| &s.worker).collect();
        let cleared: Vec<Worker> = asked
            .iter()
            .filter(|k| !sampled.contains(k))
            .filter_map(|k| self.snapshot.workers.get(k))
            .filter(|w| w.resources.as_ref().is_some_and(|r| r.source == source))
            .map(|w| {
                let mut w = (**w).clone();
                w.resources = None;
                w
            })
            .collect();
        for worker in cleared {
            self.put(worker, true);
        }
        for sample in samples {
            let Some(existing) = self.snapshot.workers.get(&sample.worker) else {
                continue;
            };
            let usage = ResourceUsage::from_sample(&sample);
            if existing.resources.as_deref() == Some(&usage) {
                continue;
            }
            let mut worker = (**existing).clone();
            worker.resources = Some(Arc::new(usage));
            self.put(worker, true);
        }
    }

    /// Applies the health engine's verdicts. A changed verdict wakes watchers; the same
    /// verdict only refreshes `evaluated_at` for readers. Workers forgotten since are skipped.
    pub fn apply_health(&mut self, verdicts: Vec<(WorkerKey, Health)>) {
        for (key, health) in verdicts {
            let Some(existing) = self.snapshot.workers.get(&key) else {
                continue;
            };
            let changed = !existing
                .health
                .as_ref()
                .is_some_and(|h| h.same_verdict(&health));
            let mut worker = (**existing).clone();
            worker.health = Some(health);
            if changed {
                self.put(worker, true);
            } else {
                self.touch(worker);
            }
        }
    }

    fn put(&mut self, worker: Worker, existed: bool) {
        let worker = Arc::new(worker);
        self.snapshot
            .workers
            .insert(worker.key.clone(), worker.clone());
        self.dirty = true;
        self.pending.push(if existed {
            ChangeKind::WorkerUpdated(worker)
        } else {
            ChangeKind::WorkerAdded(worker)
        });
    }

    /// Stores a worker whose reported fields did not change (only its evidence times did):
    /// readers see it, watchers are not woken.
    fn touch(&mut self, worker: Worker) {
        self.snapshot
            .workers
            .insert(worker.key.clone(), Arc::new(worker));
        self.dirty = true;
    }

    /// Applies the replies of an inspect round. Workers that were addressed but did not
    /// answer the ping are marked as having missed it.
    pub fn apply_inspect(&mut self, round: &InspectRound, now: SystemTime, thresholds: Thresholds) {
        let key_of = |id: &str| WorkerKey::new(round.backend, round.scope.clone(), id);
        for report in &round.reports {
            let key = key_of(&report.name);
            let existing = self.snapshot.workers.get(&key).cloned();
            if existing.is_none() && !self.admit(&key) {
                continue;
            }
            let mut worker = existing
                .as_deref()
                .cloned()
                .unwrap_or_else(|| Worker::new(key, now));
            let mut changed = existing.is_none();
            worker.last_seen = worker.last_seen.max(now);
            changed |= replace(&mut worker.remembered, None);
            // As for heartbeats: replies during a warm shutdown do not revive the worker.
            let pid = report.stats.as_ref().and_then(|s| s.pid);
            if worker.offline_at.is_some() && restarted(&worker, pid) {
                worker.offline_at = None;
                changed = true;
            }
            changed |= replace(&mut worker.missed_ping, false);
            if let Some(stats) = &report.stats {
                let pid = stats.pid.or(worker.pid);
                changed |= replace(&mut worker.pid, pid);
                if let Some(uptime) = stats.uptime {
                    let started = now.checked_sub(uptime);
                    // Uptime is reported in whole seconds: only a real restart moves it by more.
                    let moved = match (worker.started_at, started) {
                        (Some(a), Some(b)) => {
                            a.max(b)
                                .duration_since(a.min(b))
                                .unwrap_or_default()
                                .as_secs()
                                > 2
                        }
                        _ => true,
                    };
                    if moved {
                        worker.started_at = started;
                        changed = true;
                    }
                }
                if stats.pool.is_some() {
                    changed |= replace(&mut worker.pool, stats.pool.clone());
                }
                let processed: u64 = stats.processed_by_task.values().sum();
                changed |= replace(&mut worker.processed_total, processed);
                changed |= replace(
                    &mut worker.processed_by_task,
                    stats.processed_by_task.clone(),
                );
                changed |= replace(&mut worker.prefetch_count, stats.prefetch_count);
                if let Some(cpu) = stats.cpu_seconds {
                    changed |= rusage_cpu(&mut worker, round.started_at, cpu);
                }
            }
            if let Some(active) = &report.active {
                changed |= replace(&mut worker.active_tasks, active.len() as u32);
                changed |= replace(&mut worker.active, active.clone());
            }
            if let Some(queues) = &report.queues {
                changed |= replace(&mut worker.queues, queues.clone());
                // The first queue set learnt fixes the group: pausing a queue later does not
                // move a worker to another group.
                if &*worker.group == UNGROUPED && !queues.is_empty() {
                    worker.group = Arc::from(group_of(queues));
                    changed = true;
                }
            }
            if let Some(pool) = worker.pool.as_ref().map(|p| p.implementation.clone())
                && !pool.is_empty()
                && worker.labels.get("pool") != Some(&pool)
            {
                Arc::make_mut(&mut worker.labels).insert("pool".into(), pool);
                changed = true;
            }
            if let Some(registered) = &report.registered
                && *worker.registered != *registered
            {
                worker.registered = self.intern_registered(registered);
                changed = true;
            }
            changed |= evaluate(&mut worker, now, thresholds);
            if changed {
                self.put(worker, existing.is_some());
            } else {
                self.touch(worker);
            }
        }
        let answered: BTreeSet<&str> = round
            .reports
            .iter()
            .filter(|r| r.ping)
            .map(|r| r.name.as_str())
            .collect();
        let addressed: Vec<WorkerKey> = match &round.targets {
            Some(targets) => targets.iter().map(|id| key_of(id)).collect(),
            None => self
                .snapshot
                .workers
                .values()
                .filter(|w| {
                    w.key.backend == round.backend
                        && w.key.scope == round.scope
                        && w.lifecycle == Lifecycle::Alive
                })
                .map(|w| w.key.clone())
                .collect(),
        };
        for key in addressed {
            if answered.contains(&*key.id) {
                continue;
            }
            let Some(existing) = self.snapshot.workers.get(&key).cloned() else {
                continue;
            };
            // Heard from since the round began (e.g. a heartbeat): not evidence of silence.
            if existing.last_seen > round.started_at || existing.missed_ping {
                continue;
            }
            let mut worker = (*existing).clone();
            worker.missed_ping = true;
            evaluate(&mut worker, now, thresholds);
            self.put(worker, true);
        }
    }

    /// Re-derives activity and lifecycle of every worker at `now`. While a source a worker is
    /// observed through is down nothing can be heard from it, so its silence is not held
    /// against it (workers of other backends are still judged).
    pub fn evaluate_all(&mut self, now: SystemTime, thresholds: Thresholds) {
        let changed: Vec<Worker> = self
            .snapshot
            .workers
            .values()
            .filter(|w| observed(&self.snapshot, w.key.backend))
            .filter(|w| derive(w, now, thresholds) != (w.lifecycle, w.activity))
            .map(|w| {
                let mut worker = (**w).clone();
                evaluate(&mut worker, now, thresholds);
                worker
            })
            .collect();
        for worker in changed {
            self.put(worker, true);
        }
    }

    /// Removes a worker that is no longer alive. Returns what it was, or why not.
    pub fn forget(&mut self, key: &WorkerKey) -> Result<Arc<Worker>, ForgetError> {
        let worker = self
            .snapshot
            .workers
            .get(key)
            .cloned()
            .ok_or(ForgetError::NotFound)?;
        if worker.lifecycle == Lifecycle::Alive {
            return Err(ForgetError::Alive);
        }
        self.snapshot.workers.remove(key);
        self.perf.remove(key);
        self.dirty = true;
        self.pending.push(ChangeKind::WorkerRemoved(key.clone()));
        Ok(worker)
    }

    /// Brings back workers remembered from history (at boot): each is UNKNOWN until it is
    /// heard from, or LOST after a critical period of silence counted from `now`; one that
    /// had said goodbye stays OFFLINE, one that was LOST stays LOST. Workers already known
    /// are left alone; the cap applies.
    pub fn remember(&mut self, workers: Vec<crate::history::KnownWorker>, now: SystemTime) {
        for known in workers {
            if self.snapshot.workers.contains_key(&known.key) || !self.admit(&known.key) {
                continue;
            }
            let mut worker = Worker::new(known.key, known.first_seen);
            worker.group = known.group;
            worker.last_seen = known.last_seen;
            worker.remembered = Some(now);
            worker.activity = Activity::Unresponsive;
            worker.lifecycle = match known.lifecycle {
                Lifecycle::Offline => {
                    worker.offline_at = Some(known.last_seen);
                    Lifecycle::Offline
                }
                Lifecycle::Lost => Lifecycle::Lost,
                Lifecycle::Alive | Lifecycle::Unknown => Lifecycle::Unknown,
            };
            self.put(worker, false);
        }
    }

    /// One sampling tick for history: every worker's state and what its tasks did since the
    /// previous tick (the interval accumulators are reset), every queue, every group.
    pub fn take_samples(&mut self, now: SystemTime) -> crate::history::SampleBatch {
        use crate::history::{GroupSample, QueueSample, SampleBatch, WorkerSample};
        let previous = self.last_sample.replace(now);
        let mut batch = SampleBatch::default();
        for w in self.snapshot.workers.values() {
            let interval = self
                .perf
                .get_mut(&w.key)
                .map(|p| p.take_interval())
                .unwrap_or_default();
            let since = previous.unwrap_or(self.created).max(w.first_seen);
            batch.workers.push(WorkerSample {
                worker: w.key.clone(),
                group: w.group.clone(),
                at: now,
                interval: now.duration_since(since).unwrap_or_default(),
                activity: w.activity,
                lifecycle: w.lifecycle,
                health: w.health.as_ref().map(|h| h.status),
                active_tasks: w.active_tasks,
                processed_total: w.processed_total,
                concurrency: w.pool.as_ref().map(|p| p.max_concurrency),
                tasks: interval.counts,
                runtime: interval.runtime,
                queue_wait: interval.queue_wait,
                cpu_percent: None,
                memory_rss_bytes: None,
            });
        }
        for q in self.snapshot.queues.values() {
            batch.queues.push(QueueSample {
                queue: q.name.clone(),
                at: now,
                depth: q.depth,
                unacked: q.unacked,
                consumers: q.consumers.len() as u32,
            });
        }
        for g in self.snapshot.groups() {
            batch.groups.push(GroupSample {
                backend: g.backend,
                group: g.id,
                at: now,
                workers: g.workers,
                alive: g.alive,
            });
        }
        batch
    }

    /// Whether the snapshot changed since the last commit; clears the mark.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Gives the pending changes their revisions and records them in the snapshot.
    pub fn commit(&mut self, now: SystemTime) -> Vec<Arc<FleetChange>> {
        self.snapshot.at = now;
        let changes: Vec<Arc<FleetChange>> = self
            .pending
            .drain(..)
            .map(|kind| {
                self.snapshot.revision += 1;
                Arc::new(FleetChange {
                    revision: self.snapshot.revision,
                    at: now,
                    kind,
                })
            })
            .collect();
        for change in &changes {
            if self.snapshot.recent.len() >= REPLAY_CAPACITY {
                self.snapshot.recent.pop_front();
            }
            self.snapshot.recent.push_back(change.clone());
        }
        changes
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    #[error("no such worker")]
    NotFound,
    #[error("the worker is alive; only OFFLINE or LOST workers can be forgotten")]
    Alive,
}

/// Most workers known at once by default (`max_workers`).
pub const DEFAULT_MAX_WORKERS: usize = 50_000;

/// Whether a backend's workers have a source that was ever probed and that is up now; a
/// backend with no registered source (tests, in-memory adapters) is always observed.
fn observed(snapshot: &Snapshot, backend: Backend) -> bool {
    let mut sources = snapshot
        .sources
        .values()
        .filter(|s| s.backends.contains(&backend))
        .peekable();
    sources.peek().is_none() || sources.all(|s| s.connected)
}

/// A worker group for workers that share their queues: the sorted, distinct queue names.
fn group_of(queues: &[ConsumedQueue]) -> String {
    let names: BTreeSet<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    if names.is_empty() {
        return UNGROUPED.to_string();
    }
    names.into_iter().collect::<Vec<_>>().join(",")
}

fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    if *slot == value {
        false
    } else {
        *slot = value;
        true
    }
}

/// Whether `pid` shows another process than the one warden knew under this name.
fn restarted(worker: &Worker, pid: Option<u32>) -> bool {
    matches!((worker.pid, pid), (Some(known), Some(now)) if known != now)
}

/// Activity and lifecycle as the evidence says they are at `now`.
/// Turns two `rusage` CPU readings into a CPU figure (percent of one core over the interval
/// between them), as the worker's resources when no other source measures it. Returns
/// whether the worker changed. A reading that went down means a restart: it starts over.
fn rusage_cpu(worker: &mut Worker, at: SystemTime, cpu_seconds: f64) -> bool {
    if !cpu_seconds.is_finite() || cpu_seconds < 0.0 {
        return false;
    }
    let previous = worker.rusage.replace((at, cpu_seconds));
    let Some((then, before)) = previous else {
        return false;
    };
    let Ok(elapsed) = at.duration_since(then) else {
        return false;
    };
    if elapsed.is_zero() || cpu_seconds < before {
        return false;
    }
    let other_source = worker
        .resources
        .as_ref()
        .is_some_and(|r| r.source != crate::model::RUSAGE_SOURCE);
    if other_source {
        return false;
    }
    let percent = (cpu_seconds - before) * 100.0 / elapsed.as_secs_f64();
    worker.resources = Some(Arc::new(ResourceUsage {
        source: crate::model::RUSAGE_SOURCE,
        sampled_at: at,
        cpu_percent: Some(percent),
        memory_bytes: None,
        memory_limit_bytes: None,
        gpu_util_percent: None,
        gpu_memory_percent: None,
        disk_percent: None,
    }));
    true
}

pub fn derive(worker: &Worker, now: SystemTime, thresholds: Thresholds) -> (Lifecycle, Activity) {
    // Lateness: silence beyond the heartbeat period the worker announced (Celery `freq`).
    let silence = worker
        .silence(now)
        .saturating_sub(worker.heartbeat_interval.unwrap_or_default());
    let remembered = worker.remembered.is_some();
    if worker.offline_at.is_some() {
        (Lifecycle::Offline, Activity::Unresponsive)
    } else if worker.lost_at.is_some()
        || silence > thresholds.critical
        || (remembered && worker.lifecycle == Lifecycle::Lost)
    {
        (Lifecycle::Lost, Activity::Unresponsive)
    } else if remembered {
        // Known from before a restart, silent since: a verdict needs evidence or a full
        // critical period of silence (never LOST at the first instant of a restart).
        (Lifecycle::Unknown, Activity::Unresponsive)
    } else if silence > thresholds.critical {
        (Lifecycle::Lost, Activity::Unresponsive)
    } else if worker.missed_ping || silence > thresholds.warning {
        (Lifecycle::Alive, Activity::Unresponsive)
    } else if worker.active_tasks > 0 {
        (Lifecycle::Alive, Activity::Active)
    } else {
        (Lifecycle::Alive, Activity::Idle)
    }
}

/// Applies [`derive()`] to the worker. Returns whether either changed.
pub fn evaluate(worker: &mut Worker, now: SystemTime, thresholds: Thresholds) -> bool {
    let (lifecycle, activity) = derive(worker, now, thresholds);
    replace(&mut worker.lifecycle, lifecycle) | replace(&mut worker.activity, activity)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{InspectReport, WorkerStats};

    fn key(id: &str) -> WorkerKey {
        WorkerKey::new(Backend::Celery, "default", id)
    }

    const T: Thresholds = Thresholds {
        warning: Duration::from_secs(30),
        critical: Duration::from_secs(60),
    };

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn round(at: SystemTime, names: &[&str]) -> InspectRound {
        InspectRound {
            backend: Backend::Celery,
            scope: Arc::from("default"),
            started_at: at,
            targets: None,
            reports: names
                .iter()
                .map(|n| InspectReport {
                    name: n.to_string(),
                    ping: true,
                    stats: Some(WorkerStats {
                        uptime: Some(Duration::from_secs(10)),
                        processed_by_task: [("a".to_string(), 2), ("b".to_string(), 3)].into(),
                        ..WorkerStats::default()
                    }),
                    ..InspectReport::default()
                })
                .collect(),
        }
    }

    #[test]
    fn rusage_readings_give_a_cpu_figure_only_when_no_other_source_measures() {
        let mut s = state();
        let with_cpu = |at: SystemTime, cpu: f64| {
            let mut r = round(at, &["w@h"]);
            r.reports[0].stats.as_mut().unwrap().cpu_seconds = Some(cpu);
            r
        };
        s.apply_inspect(&with_cpu(t0(), 10.0), t0(), T);
        let w = &s.snapshot().workers[&key("w@h")];
        assert!(w.resources.is_none(), "one reading is no figure");
        let t1 = t0() + Duration::from_secs(30);
        s.apply_inspect(&with_cpu(t1, 13.0), t1, T);
        let r = s.snapshot().workers[&key("w@h")].resources.clone().unwrap();
        assert_eq!(r.source, crate::model::RUSAGE_SOURCE);
        assert_eq!(r.cpu_percent, Some(10.0), "3 s of CPU in 30 s");
        assert_eq!(r.memory_bytes, None);
        // A restart (the counter went down) starts over: no figure from it.
        let t2 = t1 + Duration::from_secs(30);
        s.apply_inspect(&with_cpu(t2, 1.0), t2, T);
        let r2 = s.snapshot().workers[&key("w@h")].resources.clone().unwrap();
        assert_eq!(r2.sampled_at, t1);
        // Another source's figures are never replaced by the fallback.
        s.apply_samples(
            "runtime",
            &[key("w@h")],
            vec![Sample {
                worker: key("w@h"),
                at: t2,
                source: "runtime",
                metrics: vec![(crate::model::metric::CPU_PERCENT, 55.0)],
            }],
        );
        let t3 = t2 + Duration::from_secs(30);
        s.apply_inspect(&with_cpu(t3, 31.0), t3, T);
        let r3 = s.snapshot().workers[&key("w@h")].resources.clone().unwrap();
        assert_eq!((r3.source, r3.cpu_percent), ("runtime", Some(55.0)));
    }

    fn state() -> FleetState {
        let mut s = FleetState::new(t0());
        s.set_source(SourceStatus {
            connected: true,
            reason: String::new(),
            last_ok: Some(t0()),
            ..SourceStatus::unknown()
        });
        s
    }

    fn leases(reports: Vec<crate::model::LeaseReport>) -> LeaseRound {
        LeaseRound {
            backend: Backend::RedisStreams,
            scopes: vec![(Arc::from("s:g"), reports)],
        }
    }

    fn lease_report(name: &str, leased: bool, goodbye: bool) -> crate::model::LeaseReport {
        crate::model::LeaseReport {
            name: name.into(),
            group: "s:g".into(),
            lease: leased.then(crate::model::Lease::default),
            goodbye,
            idle: Some(Duration::from_secs(1)),
            ..Default::default()
        }
    }

    /// When a lease goes, a goodbye marker then means OFFLINE, none LOST; the verdict stays
    /// when the marker comes or goes later, and a new lease revives the worker.
    #[test]
    fn a_lease_that_goes_decides_offline_or_lost_once() {
        let mut s = FleetState::new(t0());
        let k = |id: &str| WorkerKey::new(Backend::RedisStreams, "s:g", id);
        let lifecycle = |s: &FleetState, id: &str| s.snapshot().workers[&k(id)].lifecycle;
        s.apply_leases(
            leases(vec![
                lease_report("clean", true, false),
                lease_report("crash", true, false),
                lease_report("plain", false, false),
            ]),
            t0(),
            T,
        );
        assert_eq!(lifecycle(&s, "clean"), Lifecycle::Alive);
        assert_eq!(lifecycle(&s, "plain"), Lifecycle::Alive);
        assert_eq!(&*s.snapshot().workers[&k("clean")].group, "s:g");
        let t1 = t0() + Duration::from_secs(3);
        s.apply_leases(
            leases(vec![
                lease_report("clean", false, true),
                lease_report("crash", false, false),
            ]),
            t1,
            T,
        );
        assert_eq!(lifecycle(&s, "clean"), Lifecycle::Offline);
        assert_eq!(lifecycle(&s, "crash"), Lifecycle::Lost);
        let t2 = t1 + Duration::from_secs(3);
        s.apply_leases(
            leases(vec![
                lease_report("clean", false, false),
                lease_report("crash", false, true),
            ]),
            t2,
            T,
        );
        s.evaluate_all(t2, T);
        assert_eq!(lifecycle(&s, "clean"), Lifecycle::Offline);
        assert_eq!(lifecycle(&s, "crash"), Lifecycle::Lost);
        // A lease renewed longer ago than the critical threshold is stale: gone.
        let mut stale = lease_report("stale", true, false);
        s.apply_leases(leases(vec![stale.clone()]), t2, T);
        assert_eq!(lifecycle(&s, "stale"), Lifecycle::Alive);
        stale.lease.as_mut().unwrap().renewed_at = Some(t2);
        let t3 = t2 + T.critical + Duration::from_secs(1);
        s.apply_leases(leases(vec![stale]), t3, T);
        assert_eq!(lifecycle(&s, "stale"), Lifecycle::Lost);
        // Without a lease, liveness is the idle time: LOST after the critical silence.
        let late = t0() + T.critical + Duration::from_secs(5);
        s.evaluate_all(late, T);
        assert_eq!(lifecycle(&s, "plain"), Lifecycle::Lost);
        s.apply_leases(leases(vec![lease_report("crash", true, false)]), late, T);
        assert_eq!(lifecycle(&s, "crash"), Lifecycle::Alive);
    }

    #[test]
    fn a_worker_that_misses_a_ping_is_unresponsive_then_lost() {
        let mut s = state();
        s.apply_inspect(&round(t0(), &["a@h", "b@h"]), t0(), T);
        let changes = s.commit(t0());
        assert_eq!(changes.len(), 2);
        assert_eq!(s.snapshot().workers[&key("a@h")].processed_total, 5);
        assert_eq!(s.snapshot().workers[&key("a@h")].activity, Activity::Idle);

        let t1 = t0() + Duration::from_secs(5);
        s.apply_inspect(&round(t1, &["b@h"]), t1, T);
        s.commit(t1);
        let a = &s.snapshot().workers[&key("a@h")];
        assert_eq!(
            (a.activity, a.lifecycle),
            (Activity::Unresponsive, Lifecycle::Alive)
        );
        assert_eq!(s.snapshot().workers[&key("b@h")].activity, Activity::Idle);

        let t2 = t0() + Duration::from_secs(61);
        s.evaluate_all(t2, T);
        s.commit(t2);
        assert_eq!(s.snapshot().workers[&key("a@h")].lifecycle, Lifecycle::Lost);
        // Still listed, with its last figures.
        assert_eq!(s.snapshot().workers[&key("a@h")].processed_total, 5);
        assert_eq!(
            s.snapshot().workers[&key("a@h")].uptime(t2),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn silence_while_the_broker_is_down_is_not_held_against_workers() {
        let mut s = state();
        s.apply_inspect(&round(t0(), &["a@h"]), t0(), T);
        s.commit(t0());
        s.set_source(SourceStatus::unknown());
        s.evaluate_all(t0() + Duration::from_secs(120), T);
        assert!(s.commit(t0()).is_empty());
        assert_eq!(
            s.snapshot().workers[&key("a@h")].lifecycle,
            Lifecycle::Alive
        );
    }

    #[test]
    fn revisions_increase_and_resume_replays_only_what_is_kept() {
        let mut s = state();
        s.apply_inspect(&round(t0(), &["a@h", "b@h"]), t0(), T);
        s.commit(t0());
        let snap = s.snapshot().clone();
        assert_eq!(snap.revision, 2);
        assert_eq!(snap.changes_since(0).unwrap().len(), 2);
        assert_eq!(snap.changes_since(1).unwrap()[0].revision, 2);
        assert!(snap.changes_since(2).unwrap().is_empty());
        assert!(
            snap.changes_since(3).is_none(),
            "a future revision cannot be resumed"
        );
    }

    #[test]
    fn a_goodbye_holds_until_hello_or_a_new_process() {
        use crate::model::{EventPayload, FleetEvent, WorkerEvent};
        let mut s = state();
        let event = |kind, pid| FleetEvent {
            worker: key("a@h"),
            payload: EventPayload::Worker(WorkerEvent {
                kind,
                freq: Some(Duration::from_secs(2)),
                active: Some(0),
                processed: Some(1),
                load_average: None,
                software: None,
                pid: Some(pid),
            }),
        };
        s.apply_event(event(WorkerEventKind::Online, 10), t0(), T);
        s.apply_event(event(WorkerEventKind::Offline, 10), t0(), T);
        // A heartbeat sent during the warm shutdown, and a late inspect reply, by the same pid.
        s.apply_event(event(WorkerEventKind::Heartbeat, 10), t0(), T);
        let mut late = round(t0(), &["a@h"]);
        late.reports[0].stats.as_mut().unwrap().pid = Some(10);
        s.apply_inspect(&late, t0(), T);
        s.commit(t0());
        assert_eq!(
            s.snapshot().workers[&key("a@h")].lifecycle,
            Lifecycle::Offline
        );
        // A new process under the same name is alive.
        s.apply_event(event(WorkerEventKind::Heartbeat, 11), t0(), T);
        s.commit(t0());
        assert_eq!(
            s.snapshot().workers[&key("a@h")].lifecycle,
            Lifecycle::Alive
        );
        s.apply_event(event(WorkerEventKind::Offline, 11), t0(), T);
        s.apply_event(event(WorkerEventKind::Online, 11), t0(), T);
        s.commit(t0());
        assert_eq!(
            s.snapshot().workers[&key("a@h")].lifecycle,
            Lifecycle::Alive
        );
    }

    #[test]
    fn resource_samples_set_figures_and_an_empty_answer_clears_that_sources_figures() {
        use crate::model::{Sample, metric};
        let mut s = state();
        s.apply_inspect(&round(t0(), &["a@h", "b@h"]), t0(), T);
        s.commit(t0());
        let sample = |id: &str| Sample {
            worker: key(id),
            at: t0(),
            source: "prometheus",
            metrics: vec![(metric::CPU_PERCENT, 42.0), (metric::MEMORY_BYTES, 1e6)],
        };
        let asked = [key("a@h"), key("b@h")];
        s.apply_samples("prometheus", &asked, vec![sample("a@h"), sample("b@h")]);
        let a = s.snapshot().workers[&key("a@h")].resources.clone().unwrap();
        assert_eq!(
            (a.cpu_percent, a.memory_bytes),
            (Some(42.0), Some(1_000_000))
        );
        assert_eq!(a.memory_limit_bytes, None, "not given: absent, not 0");
        assert_eq!(a.memory_percent(), None);
        // The next answer has nothing for b: its old figures go; a's stay.
        s.apply_samples("prometheus", &asked, vec![sample("a@h")]);
        assert!(s.snapshot().workers[&key("b@h")].resources.is_none());
        assert!(s.snapshot().workers[&key("a@h")].resources.is_some());
        // Another source's answer does not clear this source's figures.
        s.apply_samples("procfs", &asked, Vec::new());
        assert!(s.snapshot().workers[&key("a@h")].resources.is_some());
    }

    #[test]
    fn forget_refuses_alive_workers() {
        let mut s = state();
        s.apply_inspect(&round(t0(), &["a@h"]), t0(), T);
        s.commit(t0());
        assert_eq!(s.forget(&key("a@h")), Err(ForgetError::Alive));
        assert_eq!(s.forget(&key("zz@h")), Err(ForgetError::NotFound));
        s.evaluate_all(t0() + Duration::from_secs(61), T);
        s.commit(t0());
        assert!(s.forget(&key("a@h")).is_ok());
        let changes = s.commit(t0());
        assert!(matches!(changes[0].kind, ChangeKind::WorkerRemoved(_)));
        assert!(s.snapshot().workers.is_empty());
    }

    #[test]
    fn unchanged_reports_produce_no_change() {
        let mut s = state();
        s.apply_inspect(&round(t0(), &["a@h"]), t0(), T);
        s.commit(t0());
        let t1 = t0() + Duration::from_secs(1);
        let mut again = round(t1, &["a@h"]);
        again.reports[0].stats.as_mut().unwrap().uptime = Some(Duration::from_secs(11));
        s.apply_inspect(&again, t1, T);
        assert!(s.commit(t1).is_empty());
    }

    #[test]
    fn new_workers_beyond_the_cap_are_refused_and_counted() {
        let mut s = FleetState::with_limits(t0(), 1, 2);
        let names: Vec<String> = (0..5).map(|i| format!("w{i}@h")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        s.apply_inspect(&round(t0(), &names), t0(), T);
        use crate::model::{EventPayload, FleetEvent, TaskObservation, TaskOutcome};
        for i in 0..100 {
            let event = FleetEvent {
                worker: key(&format!("forged{i}@h")),
                payload: EventPayload::Task(TaskObservation {
                    outcome: TaskOutcome::Received,
                    id: format!("t{i}"),
                    name: None,
                    timestamp: None,
                    runtime: None,
                }),
            };
            s.apply_event(event, t0(), T);
        }
        s.summarise_tasks(t0(), T);
        s.commit(t0());
        assert_eq!(s.snapshot().workers.len(), 2);
        assert_eq!(s.perf().len(), 0, "no task record for a refused worker");
        // Task events of new workers count against the cap when they arrive, not when
        // summarised: below it, the worker is known at once; at it, refused.
        let mut small = FleetState::with_limits(t0(), 1, 3);
        small.apply_inspect(&round(t0(), &["w0@h", "w1@h"]), t0(), T);
        let task = |host: &str| FleetEvent {
            worker: key(host),
            payload: EventPayload::Task(TaskObservation {
                outcome: TaskOutcome::Received,
                id: "t".into(),
                name: None,
                timestamp: None,
                runtime: None,
            }),
        };
        small.apply_event(task("busy@h"), t0(), T);
        small.apply_event(task("late@h"), t0(), T);
        assert_eq!(small.snapshot().workers.len(), 3);
        assert!(small.snapshot().workers.contains_key(&key("busy@h")));
        assert_eq!(small.perf().len(), 1);
        assert_eq!(small.snapshot().workers_refused, 1);
        assert_eq!(s.snapshot().workers_refused, 3 + 100);
        // Known workers are still updated at the cap.
        s.apply_inspect(&round(t0(), &["w0@h"]), t0(), T);
        assert_eq!(s.snapshot().workers.len(), 2);
    }

    #[test]
    fn one_source_down_makes_only_its_backends_workers_stale() {
        let mut s = state();
        s.apply_inspect(&round(t0(), &["a@h"]), t0(), T);
        let streams = WorkerKey::new(Backend::RedisStreams, "orders:billing", "c1");
        let mut round = round(t0(), &["c1"]);
        round.backend = Backend::RedisStreams;
        round.scope = Arc::from("orders:billing");
        s.apply_inspect(&round, t0(), T);
        s.set_source(SourceStatus {
            connected: false,
            reason: "connection refused".into(),
            ..SourceStatus::unknown_source("streams", vec![Backend::RedisStreams])
        });
        s.commit(t0());
        let snap = s.snapshot();
        assert!(snap.stale_sources(Backend::Celery).is_empty());
        let stale: Vec<&str> = snap
            .stale_sources(Backend::RedisStreams)
            .iter()
            .map(|s| s.source)
            .collect();
        assert_eq!(stale, ["streams"]);
        // Silence is held against the Celery worker, not the Streams one.
        let later = t0() + Duration::from_secs(120);
        s.evaluate_all(later, T);
        s.commit(later);
        assert_eq!(s.snapshot().workers[&key("a@h")].lifecycle, Lifecycle::Lost);
        assert_eq!(s.snapshot().workers[&streams].lifecycle, Lifecycle::Alive);
    }

    #[test]
    fn a_celery_queue_and_a_streams_group_of_the_same_name_are_two_queues() {
        let mut s = state();
        let q = |n: &str| ConsumedQueue {
            name: n.into(),
            ..ConsumedQueue::default()
        };
        let mut celery = round(t0(), &["a@h"]);
        celery.reports[0].queues = Some(vec![q("orders:billing")]);
        s.apply_inspect(&celery, t0(), T);
        let mut streams = round(t0(), &["c1"]);
        streams.backend = Backend::RedisStreams;
        streams.scope = Arc::from("orders:billing");
        streams.reports[0].queues = Some(vec![q("orders:billing")]);
        s.apply_inspect(&streams, t0(), T);
        s.apply_queues(
            vec![
                QueueDepth {
                    name: "orders:billing".into(),
                    by_priority: vec![(0, 5)],
                    ..QueueDepth::default()
                },
                QueueDepth {
                    name: "orders:billing".into(),
                    backend: Backend::RedisStreams,
                    by_priority: vec![(0, 7)],
                    lag: Some(7),
                    ..QueueDepth::default()
                },
            ],
            t0(),
        );
        s.commit(t0());
        let queues = &s.snapshot().queues;
        assert_eq!(queues.len(), 2);
        let celery = &queues[&(Backend::Celery, "orders:billing".to_string())];
        let streams = &queues[&(Backend::RedisStreams, "orders:billing".to_string())];
        assert_eq!((celery.depth, celery.lag), (5, None));
        assert_eq!((streams.depth, streams.lag), (7, Some(7)));
        assert_eq!(celery.consumers, vec![key("a@h")]);
        assert_eq!(
            streams.consumers,
            vec![WorkerKey::new(
                Backend::RedisStreams,
                "orders:billing",
                "c1"
            )]
        );
    }

    #[test]
    fn workers_consuming_the_same_queues_form_a_group() {
        use crate::model::ConsumedQueue;
        let mut s = state();
        let mut r = round(t0(), &["a@h", "b@h", "c@h"]);
        let q = |n: &str| ConsumedQueue {
            name: n.into(),
            ..ConsumedQueue::default()
        };
        r.reports[0].queues = Some(vec![q("emails"), q("celery")]);
        r.reports[1].queues = Some(vec![q("celery"), q("emails")]);
        r.reports[2].queues = Some(vec![q("celery")]);
        s.apply_inspect(&r, t0(), T);
        s.commit(t0());
        let group = |n: &str| s.snapshot().workers[&key(n)].group.to_string();
        assert_eq!(group("a@h"), "celery,emails");
        assert_eq!(group("b@h"), "celery,emails");
        assert_eq!(group("c@h"), "celery");
        assert!(
            s.snapshot().workers[&key("a@h")].health.is_none(),
            "nothing evaluated health"
        );
    }

    #[test]
    fn sampling_takes_each_intervals_tasks_once_over_the_span_observed() {
        use crate::{
            history::KnownWorker,
            model::{EventPayload, FleetEvent, TaskObservation, TaskOutcome},
        };
        let mut s = FleetState::with_limits(t0(), 1, 100);
        s.set_source(SourceStatus {
            connected: true,
            ..SourceStatus::unknown()
        });
        s.remember(
            vec![KnownWorker {
                key: key("old@h"),
                group: Arc::from("celery"),
                first_seen: t0() - Duration::from_secs(86_400),
                last_seen: t0() - Duration::from_secs(3600),
                lifecycle: Lifecycle::Alive,
            }],
            t0(),
        );
        let t1 = t0() + Duration::from_secs(10);
        s.apply_inspect(&round(t1, &["new@h"]), t1, T);
        let done = |id: &str, outcome| FleetEvent {
            worker: key("new@h"),
            payload: EventPayload::Task(TaskObservation {
                outcome,
                id: id.into(),
                name: Some("x".into()),
                timestamp: None,
                runtime: Some(Duration::from_millis(100)),
            }),
        };
        s.apply_event(done("a", TaskOutcome::Succeeded), t1, T);
        s.apply_event(done("b", TaskOutcome::Failed), t1, T);
        let t2 = t0() + Duration::from_secs(30);
        let batch = s.take_samples(t2);
        let sample = |b: &crate::history::SampleBatch, id: &str| {
            b.workers
                .iter()
                .find(|w| &*w.worker.id == id)
                .cloned()
                .unwrap()
        };
        // A remembered worker's first interval starts at the restart, not when it was first
        // seen a day ago; a new one's when it appeared.
        assert_eq!(sample(&batch, "old@h").interval, Duration::from_secs(30));
        assert_eq!(sample(&batch, "old@h").lifecycle, Lifecycle::Unknown);
        let new = sample(&batch, "new@h");
        assert_eq!(new.interval, Duration::from_secs(20));
        assert_eq!((new.tasks.succeeded, new.tasks.failed), (1, 1));
        assert_eq!(new.runtime.count(), 1);
        // Taken once: the next tick starts afresh.
        let t3 = t2 + Duration::from_secs(30);
        let next = s.take_samples(t3);
        let new = sample(&next, "new@h");
        assert_eq!(new.interval, Duration::from_secs(30));
        assert_eq!((new.tasks.succeeded, new.tasks.failed), (0, 0));
    }
}
