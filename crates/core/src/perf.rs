//! Task performance over sliding windows (1 min, 5 min, 1 h), per worker and per task name,
//! in memory that does not grow with the task volume.
//!
//! Each window is a ring of time slots (1 min = 6 × 10 s, 5 min = 5 × 1 min, 1 h = 12 × 5 min);
//! an event is counted in the current slot of every ring, and a window is the sum of its
//! ring's live slots. A window therefore covers its nominal length, give or take one slot.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::sketch::Sketch;

/// The windows reported, with their slot width and slot count.
pub const WINDOWS: [(Duration, Duration, usize); 3] = [
    (Duration::from_secs(60), Duration::from_secs(10), 6),
    (Duration::from_secs(300), Duration::from_secs(60), 5),
    (Duration::from_secs(3600), Duration::from_secs(300), 12),
];
/// Task names tracked separately per worker; more are counted under [`OTHER_TASKS`].
pub const MAX_TASK_NAMES: usize = 200;
pub const OTHER_TASKS: &str = "(other)";
/// Tasks remembered between received and started/finished, per worker.
pub const MAX_TRACKED_TASKS: usize = 10_000;

/// What happened to a task, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    Received,
    Started,
    Succeeded,
    Failed,
    Retried,
    Rejected,
    Revoked,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub received: u32,
    pub started: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub retried: u32,
    pub rejected: u32,
    pub revoked: u32,
}

impl Counts {
    fn add(&mut self, outcome: TaskOutcome) {
        let slot = match outcome {
            TaskOutcome::Received => &mut self.received,
            TaskOutcome::Started => &mut self.started,
            TaskOutcome::Succeeded => &mut self.succeeded,
            TaskOutcome::Failed => &mut self.failed,
            TaskOutcome::Retried => &mut self.retried,
            TaskOutcome::Rejected => &mut self.rejected,
            TaskOutcome::Revoked => &mut self.revoked,
        };
        *slot = slot.saturating_add(1);
    }

    fn merge(&mut self, o: &Counts) {
        self.received = self.received.saturating_add(o.received);
        self.started = self.started.saturating_add(o.started);
        self.succeeded = self.succeeded.saturating_add(o.succeeded);
        self.failed = self.failed.saturating_add(o.failed);
        self.retried = self.retried.saturating_add(o.retried);
        self.rejected = self.rejected.saturating_add(o.rejected);
        self.revoked = self.revoked.saturating_add(o.revoked);
    }
}

/// What one slot of time counted. Boxed and absent until something happens in the slot,
/// so that idle workers cost almost nothing.
#[derive(Debug, Clone, Default)]
struct SlotData {
    counts: Counts,
    runtime: Sketch,
    queue_wait: Sketch,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    /// Which slot of time this is (seconds since the epoch / slot width); stale when behind.
    epoch: u64,
    data: Option<Box<SlotData>>,
}

#[derive(Debug, Clone)]
struct Ring {
    width: u64,
    slots: Box<[Slot]>,
}

impl Ring {
    fn new(width: Duration, len: usize) -> Self {
        Self {
            width: width.as_secs().max(1),
            slots: vec![Slot::default(); len].into_boxed_slice(),
        }
    }

    fn slot(&mut self, now: u64) -> &mut SlotData {
        let epoch = now / self.width;
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(epoch % len) as usize];
        if slot.epoch != epoch {
            slot.epoch = epoch;
            slot.data = None;
        }
        slot.data.get_or_insert_with(Box::default)
    }

    fn live(&self, now: u64) -> impl Iterator<Item = &SlotData> {
        let current = now / self.width;
        let len = self.slots.len() as u64;
        self.slots
            .iter()
            .filter(move |s| s.epoch <= current && s.epoch + len > current)
            .filter_map(|s| s.data.as_deref())
    }
}

/// A latency distribution reduced to the figures reported (seconds; all 0 when count is 0).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DistributionReport {
    pub count: u64,
    pub mean: f32,
    pub min: f32,
    pub max: f32,
    pub p50: f32,
    pub p90: f32,
    pub p95: f32,
    pub p99: f32,
}

impl DistributionReport {
    fn from_sketch(s: &Sketch) -> Self {
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f32());
        Self {
            count: s.count(),
            mean: secs(s.mean()),
            min: secs(s.min()),
            max: secs(s.max()),
            p50: secs(s.quantile(0.50)),
            p90: secs(s.quantile(0.90)),
            p95: secs(s.quantile(0.95)),
            p99: secs(s.quantile(0.99)),
        }
    }
}

/// The figures of one window, ready to report; small, because every worker's snapshot
/// entry holds a few of them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowReport {
    pub window_secs: u32,
    pub counts: Counts,
    pub runtime: DistributionReport,
    pub queue_wait: DistributionReport,
}

impl WindowReport {
    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.window_secs))
    }

    /// The span the window really has data for (see the perf branch).
    pub fn covered(&self) -> Duration {
        self.window()
    }

    /// Tasks finished (succeeded + failed) per minute over the window.
    pub fn throughput_per_min(&self) -> f64 {
        (f64::from(self.counts.succeeded) + f64::from(self.counts.failed)) / self.minutes()
    }

    pub fn succeeded_per_min(&self) -> f64 {
        f64::from(self.counts.succeeded) / self.minutes()
    }

    /// failed / (succeeded + failed), 0 when nothing finished.
    pub fn error_rate(&self) -> f64 {
        let finished = f64::from(self.counts.succeeded) + f64::from(self.counts.failed);
        if finished == 0.0 {
            0.0
        } else {
            f64::from(self.counts.failed) / finished
        }
    }

    fn minutes(&self) -> f64 {
        f64::from(self.window_secs.max(1)) / 60.0
    }
}

/// Sliding windows of one stream of task events.
#[derive(Debug, Clone)]
pub struct Windowed {
    rings: [Ring; 3],
}

impl Default for Windowed {
    fn default() -> Self {
        Self {
            rings: WINDOWS.map(|(_, width, len)| Ring::new(width, len)),
        }
    }
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl Windowed {
    pub fn record(
        &mut self,
        now: SystemTime,
        outcome: TaskOutcome,
        runtime: Option<Duration>,
        wait: Option<Duration>,
    ) {
        let now = seconds(now);
        for ring in &mut self.rings {
            let slot = ring.slot(now);
            slot.counts.add(outcome);
            if let Some(runtime) = runtime {
                slot.runtime.record(runtime);
            }
            if let Some(wait) = wait {
                slot.queue_wait.record(wait);
            }
        }
    }

    /// The 1 min, 5 min and 1 h windows as of `now`.
    pub fn reports(&self, now: SystemTime) -> [WindowReport; 3] {
        let now = seconds(now);
        let mut reports = [WindowReport::default(); 3];
        for ((report, ring), (window, _, _)) in reports.iter_mut().zip(&self.rings).zip(WINDOWS) {
            let (mut counts, mut runtime, mut wait) =
                (Counts::default(), Sketch::default(), Sketch::default());
            for slot in ring.live(now) {
                counts.merge(&slot.counts);
                runtime.merge(&slot.runtime);
                wait.merge(&slot.queue_wait);
            }
            *report = WindowReport {
                window_secs: window.as_secs() as u32,
                counts,
                runtime: DistributionReport::from_sketch(&runtime),
                queue_wait: DistributionReport::from_sketch(&wait),
            };
        }
        reports
    }

    /// Whether a slot that holds something left one of the windows in (after, until].
    fn moved_between(&self, after: u64, until: u64) -> bool {
        self.rings.iter().any(|ring| {
            let len = ring.slots.len() as u64;
            ring.slots.iter().any(|slot| {
                let leaves = (slot.epoch + len) * ring.width;
                slot.data.is_some() && leaves > after && leaves <= until
            })
        })
    }

    pub fn heap_bytes(&self) -> usize {
        self.rings
            .iter()
            .map(|r| {
                r.slots.len() * std::mem::size_of::<Slot>()
                    + r.slots
                        .iter()
                        .filter_map(|s| s.data.as_deref())
                        .map(|d| {
                            std::mem::size_of::<SlotData>()
                                + d.runtime.heap_bytes()
                                + d.queue_wait.heap_bytes()
                        })
                        .sum::<usize>()
            })
            .sum()
    }
}

/// A task between received and finished.
#[derive(Debug, Clone)]
pub struct TrackedTask {
    pub name: Option<Arc<str>>,
    /// The worker's own timestamps (so that waits are not skewed by clock differences).
    pub received_at: Option<SystemTime>,
    pub started_at: Option<SystemTime>,
}

/// Task performance of one worker: overall, by task name, and the tasks in flight.
#[derive(Debug, Clone, Default)]
pub struct WorkerPerf {
    pub overall: Windowed,
    pub by_task: HashMap<Arc<str>, Windowed>,
    pub in_flight: HashMap<String, TrackedTask>,
    /// When the last task event arrived (warden's clock).
    pub last_event: Option<SystemTime>,
    /// Set by every event; cleared when the worker's summary is refreshed.
    pub dirty: bool,
    /// When the summary was last refreshed.
    pub summarised_at: Option<SystemTime>,
}

/// One task event as the performance tracker needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskObservation {
    pub outcome: TaskOutcome,
    pub id: String,
    pub name: Option<String>,
    /// The event's timestamp (worker clock).
    pub timestamp: Option<SystemTime>,
    /// `runtime` of task-succeeded.
    pub runtime: Option<Duration>,
}

impl WorkerPerf {
    /// Counts one task event at `now` (warden's clock).
    pub fn record(&mut self, task: &TaskObservation, now: SystemTime) {
        self.last_event = Some(now);
        self.dirty = true;
        let tracked = self.track(task);
        let name = task
            .name
            .as_deref()
            .map(Arc::<str>::from)
            .or_else(|| tracked.as_ref().and_then(|t| t.name.clone()));
        let wait = match (task.outcome, &tracked) {
            (TaskOutcome::Started, Some(t)) => match (t.received_at, task.timestamp) {
                (Some(r), Some(s)) => s.duration_since(r).ok(),
                _ => None,
            },
            _ => None,
        };
        let runtime = task
            .runtime
            .filter(|_| task.outcome == TaskOutcome::Succeeded);
        self.overall.record(now, task.outcome, runtime, wait);
        if let Some(name) = name {
            let key = if self.by_task.contains_key(&name) || self.by_task.len() < MAX_TASK_NAMES {
                name
            } else {
                Arc::from(OTHER_TASKS)
            };
            self.by_task
                .entry(key)
                .or_default()
                .record(now, task.outcome, runtime, wait);
        }
    }

    /// Updates the in-flight table; returns what was known of the task before this event.
    fn track(&mut self, task: &TaskObservation) -> Option<TrackedTask> {
        match task.outcome {
            TaskOutcome::Received => {
                if self.in_flight.len() >= MAX_TRACKED_TASKS
                    && !self.in_flight.contains_key(&task.id)
                    && let Some(evict) = self.in_flight.keys().next().cloned()
                {
                    self.in_flight.remove(&evict);
                }
                self.in_flight.insert(
                    task.id.clone(),
                    TrackedTask {
                        name: task.name.as_deref().map(Arc::from),
                        received_at: task.timestamp,
                        started_at: None,
                    },
                )
            }
            TaskOutcome::Started => {
                let previous = self.in_flight.get(&task.id).cloned();
                if let Some(t) = self.in_flight.get_mut(&task.id) {
                    t.started_at = task.timestamp;
                } else if self.in_flight.len() < MAX_TRACKED_TASKS {
                    self.in_flight.insert(
                        task.id.clone(),
                        TrackedTask {
                            name: task.name.as_deref().map(Arc::from),
                            received_at: None,
                            started_at: task.timestamp,
                        },
                    );
                }
                previous
            }
            // A retried task comes back as a new task-received with the same id, sometimes
            // before its task-retried: keep the entry for the next attempt.
            TaskOutcome::Retried => self.in_flight.get(&task.id).cloned(),
            _ => self.in_flight.remove(&task.id),
        }
    }

    /// Whether any window dropped a slot with data since the last summary.
    pub fn windows_moved(&self, now: SystemTime) -> bool {
        let after = self.summarised_at.map_or(0, seconds);
        let until = seconds(now);
        self.overall.moved_between(after, until)
            || self.by_task.values().any(|w| w.moved_between(after, until))
    }

    /// Tasks started and not finished, as far as the events tell.
    pub fn running(&self) -> impl Iterator<Item = (&String, &TrackedTask)> {
        self.in_flight
            .iter()
            .filter(|(_, t)| t.started_at.is_some())
    }

    pub fn heap_bytes(&self) -> usize {
        self.overall.heap_bytes()
            + self
                .by_task
                .iter()
                .map(|(k, w)| k.len() + w.heap_bytes())
                .sum::<usize>()
            + self.in_flight.len() * 128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn obs(
        outcome: TaskOutcome,
        id: &str,
        name: Option<&str>,
        ts: u64,
        runtime: Option<f64>,
    ) -> TaskObservation {
        TaskObservation {
            outcome,
            id: id.into(),
            name: name.map(String::from),
            timestamp: Some(at(ts)),
            runtime: runtime.map(Duration::from_secs_f64),
        }
    }

    #[test]
    fn counts_rates_and_waits_per_window_and_name() {
        let mut p = WorkerPerf::default();
        for i in 0..10 {
            let id = format!("t{i}");
            p.record(
                &obs(TaskOutcome::Received, &id, Some("app.add"), 100, None),
                at(100),
            );
            p.record(&obs(TaskOutcome::Started, &id, None, 102, None), at(102));
            let outcome = if i < 8 {
                TaskOutcome::Succeeded
            } else {
                TaskOutcome::Failed
            };
            p.record(&obs(outcome, &id, None, 103, Some(0.5)), at(103));
        }
        let s = p.overall.reports(at(110));
        assert_eq!(s[0].window(), Duration::from_secs(60));
        assert_eq!(s[0].counts.succeeded, 8);
        assert_eq!(s[0].counts.failed, 2);
        assert_eq!(s[0].throughput_per_min(), 10.0);
        assert_eq!(s[0].succeeded_per_min(), 8.0);
        assert!((s[0].error_rate() - 0.2).abs() < 1e-9);
        assert_eq!(s[0].runtime.count, 8);
        assert!((s[0].queue_wait.p50 - 2.0).abs() < 0.03);
        assert_eq!(s[2].throughput_per_min(), 10.0 / 60.0);
        let by_name = p.by_task[&Arc::<str>::from("app.add")].reports(at(110));
        assert_eq!(
            by_name[0].counts.failed, 2,
            "finished events are attributed by id"
        );
        assert!(p.in_flight.is_empty());
        // Two minutes later the 1-minute window is empty, the others are not.
        let later = p.overall.reports(at(230));
        assert_eq!(later[0].counts, Counts::default());
        assert_eq!(later[1].counts.succeeded, 8);
    }

    #[test]
    fn windows_move_only_when_a_slot_with_data_leaves() {
        let mut p = WorkerPerf::default();
        p.record(
            &obs(TaskOutcome::Received, "t", Some("x"), 100, None),
            at(100),
        );
        p.summarised_at = Some(at(101));
        assert!(
            !p.windows_moved(at(150)),
            "nothing left the 1 min window yet"
        );
        assert!(
            p.windows_moved(at(170)),
            "the 10 s slot of t=100 left the 1 min window"
        );
        p.summarised_at = Some(at(170));
        assert!(!p.windows_moved(at(200)));
    }

    #[test]
    fn in_flight_table_is_bounded() {
        let mut p = WorkerPerf::default();
        for i in 0..(MAX_TRACKED_TASKS + 500) {
            p.record(
                &obs(TaskOutcome::Received, &format!("t{i}"), Some("x"), 1, None),
                at(1),
            );
        }
        assert_eq!(p.in_flight.len(), MAX_TRACKED_TASKS);
    }
}
