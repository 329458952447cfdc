//! The fleet state and the pure rules that change it. No I/O, no clock of its own: the owner
//! passes `now` in, so every rule here is tested with exact times.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use imbl::{OrdMap, Vector};

use super::{
    model::{
        ActiveTask, Activity, Backend, BrokerStatus, EventPayload, FleetEvent, InspectRound,
        Lifecycle, QueueDepth, QueueInfo, Thresholds, Worker, WorkerEventKind,
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
    WorkerRemoved { name: String, backend: Backend },
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
    pub revision: u64,
    pub at: SystemTime,
    pub workers: OrdMap<String, Arc<Worker>>,
    pub queues: OrdMap<String, Arc<QueueInfo>>,
    /// The last changes (at most [`REPLAY_CAPACITY`]), oldest first, for resuming watchers.
    pub recent: Vector<Arc<FleetChange>>,
    pub broker: BrokerStatus,
}

impl Snapshot {
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
    perf: HashMap<String, WorkerPerf>,
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
        Self {
            snapshot: Snapshot {
                revision: 0,
                at: now,
                workers: OrdMap::new(),
                queues: OrdMap::new(),
                recent: Vector::new(),
                broker: BrokerStatus::unknown(),
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

    pub fn perf(&self) -> &HashMap<String, WorkerPerf> {
        &self.perf
    }

    /// Applies one event from a worker's event stream.
    pub fn apply_event(&mut self, event: FleetEvent, now: SystemTime, thresholds: Thresholds) {
        match event.payload {
            EventPayload::Task(task) => {
                // Cheap on purpose (the hot path): the worker's snapshot entry is refreshed
                // from its performance record once a second, not per task event.
                self.perf
                    .entry(event.worker)
                    .or_default()
                    .record(&task, now);
            }
            EventPayload::Worker(ev) => {
                let existing = self.snapshot.workers.get(&event.worker).cloned();
                let mut worker = existing
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| Worker::new(&event.worker, Backend::Celery, now));
                let mut changed = existing.is_none();
                worker.last_seen = worker.last_seen.max(now);
                worker.last_heartbeat = Some(now);
                changed |= replace(&mut worker.missed_ping, false);
                match ev.kind {
                    // A worker that said goodbye is back only when it says hello, or when
                    // another process speaks under its name: a last heartbeat sent during the
                    // warm shutdown must not revive it.
                    WorkerEventKind::Online => {
                        if worker.offline_at.take().is_some() {
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
                    .get(&worker.name)
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
        let due: Vec<String> = self
            .perf
            .iter()
            .filter(|(_, p)| p.dirty || (idle_due && p.windows_moved(now)))
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            let Some(perf) = self.perf.get_mut(&name) else {
                continue;
            };
            perf.dirty = false;
            perf.summarised_at = Some(now);
            // Rates are over the time warden has watched the worker (issue 13 §6).
            let observed_since = self
                .snapshot
                .workers
                .get(&name)
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
            let existing = self.snapshot.workers.get(&name).cloned();
            let mut worker = existing
                .as_deref()
                .cloned()
                .unwrap_or_else(|| Worker::new(&name, Backend::Celery, now));
            let mut changed = existing.is_none();
            if let Some(t) = last_event {
                worker.last_seen = worker.last_seen.max(t);
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
    pub fn apply_queues(&mut self, depths: Vec<QueueDepth>, now: SystemTime) {
        for depth in depths {
            let mut consumers: Vec<String> = self
                .snapshot
                .workers
                .values()
                .filter(|w| {
                    w.lifecycle == Lifecycle::Alive && w.queues.iter().any(|q| q.name == depth.name)
                })
                .map(|w| w.name.clone())
                .collect();
            consumers.sort();
            let info = QueueInfo {
                depth: depth.by_priority.iter().map(|(_, n)| n).sum(),
                name: depth.name,
                by_priority: depth.by_priority,
                unacked: depth.unacked,
                consumers,
                updated_at: now,
            };
            let existing = self.snapshot.queues.get(&info.name).cloned();
            let changed = existing.as_deref().is_none_or(|e| {
                (e.depth, &e.by_priority, e.unacked, &e.consumers)
                    != (info.depth, &info.by_priority, info.unacked, &info.consumers)
            });
            let info = Arc::new(info);
            self.snapshot.queues.insert(info.name.clone(), info.clone());
            self.dirty = true;
            if changed {
                self.pending.push(ChangeKind::QueueUpdated(info));
            }
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn set_broker(&mut self, status: BrokerStatus) {
        self.snapshot.broker = status;
        self.dirty = true;
    }

    fn put(&mut self, worker: Worker, existed: bool) {
        let worker = Arc::new(worker);
        self.snapshot
            .workers
            .insert(worker.name.clone(), worker.clone());
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
            .insert(worker.name.clone(), Arc::new(worker));
        self.dirty = true;
    }

    /// Applies the replies of an inspect round. Workers that were addressed but did not
    /// answer the ping are marked as having missed it.
    pub fn apply_inspect(&mut self, round: &InspectRound, now: SystemTime, thresholds: Thresholds) {
        for report in &round.reports {
            let existing = self.snapshot.workers.get(&report.name).cloned();
            let mut worker = existing
                .as_deref()
                .cloned()
                .unwrap_or_else(|| Worker::new(&report.name, round.backend, now));
            let mut changed = existing.is_none();
            worker.last_seen = worker.last_seen.max(now);
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
            }
            if let Some(active) = &report.active {
                changed |= replace(&mut worker.active_tasks, active.len() as u32);
                changed |= replace(&mut worker.active, active.clone());
            }
            if let Some(queues) = &report.queues {
                changed |= replace(&mut worker.queues, queues.clone());
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
        let answered = |name: &str| round.reports.iter().any(|r| r.name == name && r.ping);
        let addressed: Vec<String> = match &round.targets {
            Some(targets) => targets.clone(),
            None => self
                .snapshot
                .workers
                .values()
                .filter(|w| w.backend == round.backend && w.lifecycle == Lifecycle::Alive)
                .map(|w| w.name.clone())
                .collect(),
        };
        for name in addressed {
            if answered(&name) {
                continue;
            }
            let Some(existing) = self.snapshot.workers.get(&name).cloned() else {
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

    /// Re-derives activity and lifecycle of every worker at `now`. While the broker is down
    /// nothing can be heard, so silence is not held against the workers.
    pub fn evaluate_all(&mut self, now: SystemTime, thresholds: Thresholds) {
        if !self.snapshot.broker.connected {
            return;
        }
        let changed: Vec<Worker> = self
            .snapshot
            .workers
            .values()
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
    pub fn forget(&mut self, name: &str) -> Result<Arc<Worker>, ForgetError> {
        let worker = self
            .snapshot
            .workers
            .get(name)
            .cloned()
            .ok_or(ForgetError::NotFound)?;
        if worker.lifecycle == Lifecycle::Alive {
            return Err(ForgetError::Alive);
        }
        self.snapshot.workers.remove(name);
        self.perf.remove(name);
        self.dirty = true;
        self.pending.push(ChangeKind::WorkerRemoved {
            name: worker.name.clone(),
            backend: worker.backend,
        });
        Ok(worker)
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
pub fn derive(worker: &Worker, now: SystemTime, thresholds: Thresholds) -> (Lifecycle, Activity) {
    // Lateness: silence beyond the heartbeat period the worker announced (Celery `freq`).
    let silence = worker
        .silence(now)
        .saturating_sub(worker.heartbeat_interval.unwrap_or_default());
    if worker.offline_at.is_some() {
        (Lifecycle::Offline, Activity::Unresponsive)
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

    fn state() -> FleetState {
        let mut s = FleetState::new(t0());
        s.set_broker(BrokerStatus {
            connected: true,
            reason: String::new(),
            last_ok: Some(t0()),
        });
        s
    }

    #[test]
    fn a_worker_that_misses_a_ping_is_unresponsive_then_lost() {
        let mut s = state();
        s.apply_inspect(&round(t0(), &["a@h", "b@h"]), t0(), T);
        let changes = s.commit(t0());
        assert_eq!(changes.len(), 2);
        assert_eq!(s.snapshot().workers["a@h"].processed_total, 5);
        assert_eq!(s.snapshot().workers["a@h"].activity, Activity::Idle);

        let t1 = t0() + Duration::from_secs(5);
        s.apply_inspect(&round(t1, &["b@h"]), t1, T);
        s.commit(t1);
        let a = &s.snapshot().workers["a@h"];
        assert_eq!(
            (a.activity, a.lifecycle),
            (Activity::Unresponsive, Lifecycle::Alive)
        );
        assert_eq!(s.snapshot().workers["b@h"].activity, Activity::Idle);

        let t2 = t0() + Duration::from_secs(61);
        s.evaluate_all(t2, T);
        s.commit(t2);
        assert_eq!(s.snapshot().workers["a@h"].lifecycle, Lifecycle::Lost);
        // Still listed, with its last figures.
        assert_eq!(s.snapshot().workers["a@h"].processed_total, 5);
        assert_eq!(
            s.snapshot().workers["a@h"].uptime(t2),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn silence_while_the_broker_is_down_is_not_held_against_workers() {
        let mut s = state();
        s.apply_inspect(&round(t0(), &["a@h"]), t0(), T);
        s.commit(t0());
        s.set_broker(BrokerStatus::unknown());
        s.evaluate_all(t0() + Duration::from_secs(120), T);
        assert!(s.commit(t0()).is_empty());
        assert_eq!(s.snapshot().workers["a@h"].lifecycle, Lifecycle::Alive);
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
            worker: "a@h".into(),
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
        assert_eq!(s.snapshot().workers["a@h"].lifecycle, Lifecycle::Offline);
        // A new process under the same name is alive.
        s.apply_event(event(WorkerEventKind::Heartbeat, 11), t0(), T);
        s.commit(t0());
        assert_eq!(s.snapshot().workers["a@h"].lifecycle, Lifecycle::Alive);
        s.apply_event(event(WorkerEventKind::Offline, 11), t0(), T);
        s.apply_event(event(WorkerEventKind::Online, 11), t0(), T);
        s.commit(t0());
        assert_eq!(s.snapshot().workers["a@h"].lifecycle, Lifecycle::Alive);
    }

    #[test]
    fn forget_refuses_alive_workers() {
        let mut s = state();
        s.apply_inspect(&round(t0(), &["a@h"]), t0(), T);
        s.commit(t0());
        assert_eq!(s.forget("a@h"), Err(ForgetError::Alive));
        assert_eq!(s.forget("zz@h"), Err(ForgetError::NotFound));
        s.evaluate_all(t0() + Duration::from_secs(61), T);
        s.commit(t0());
        assert!(s.forget("a@h").is_ok());
        let changes = s.commit(t0());
        assert!(matches!(changes[0].kind, ChangeKind::WorkerRemoved { .. }));
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
}
