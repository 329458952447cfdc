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
    pub received: u64,
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    pub rejected: u64,
    pub revoked: u64,
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
        *slot += 1;
    }

    fn merge(&mut self, o: &Counts) {
        self.received += o.received;
        self.started += o.started;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.retried += o.retried;
        self.rejected += o.rejected;
        self.revoked += o.revoked;
    }
}

#[derive(Debug, Clone, Default)]
struct Slot {
    /// Which slot of time this is (seconds since the epoch / slot width); stale when behind.
    epoch: u64,
    counts: Counts,
    runtime: Sketch,
    queue_wait: Sketch,
}

#[derive(Debug, Clone)]
struct Ring {
    width: u64,
    slots: Vec<Slot>,
}

impl Ring {
    fn new(width: Duration, len: usize) -> Self {
        Self {
            width: width.as_secs().max(1),
            slots: vec![Slot::default(); len],
        }
    }

    fn slot(&mut self, now: u64) -> &mut Slot {
        let epoch = now / self.width;
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(epoch % len) as usize];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                ..Slot::default()
            };
        }
        slot
    }

    fn live(&self, now: u64) -> impl Iterator<Item = &Slot> {
        let current = now / self.width;
        let len = self.slots.len() as u64;
        self.slots
            .iter()
            .filter(move |s| s.epoch <= current && s.epoch + len > current && s.epoch > 0)
    }
}

/// The figures of one window, ready to report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowSummary {
    pub window: Duration,
    pub counts: Counts,
    pub runtime: Sketch,
    pub queue_wait: Sketch,
}

impl WindowSummary {
    /// Tasks finished (succeeded + failed) per minute over the window.
    pub fn throughput_per_min(&self) -> f64 {
        (self.counts.succeeded + self.counts.failed) as f64 / self.minutes()
    }

    pub fn succeeded_per_min(&self) -> f64 {
        self.counts.succeeded as f64 / self.minutes()
    }

    /// failed / (succeeded + failed), 0 when nothing finished.
    pub fn error_rate(&self) -> f64 {
        let finished = self.counts.succeeded + self.counts.failed;
        if finished == 0 {
            0.0
        } else {
            self.counts.failed as f64 / finished as f64
        }
    }

    fn minutes(&self) -> f64 {
        self.window.as_secs_f64() / 60.0
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

    pub fn summaries(&self, now: SystemTime) -> Vec<WindowSummary> {
        let now = seconds(now);
        self.rings
            .iter()
            .zip(WINDOWS)
            .map(|(ring, (window, _, _))| {
                let mut summary = WindowSummary {
                    window,
                    ..WindowSummary::default()
                };
                for slot in ring.live(now) {
                    summary.counts.merge(&slot.counts);
                    summary.runtime.merge(&slot.runtime);
                    summary.queue_wait.merge(&slot.queue_wait);
                }
                summary
            })
            .collect()
    }

    pub fn heap_bytes(&self) -> usize {
        self.rings
            .iter()
            .flat_map(|r| &r.slots)
            .map(|s| {
                std::mem::size_of::<Slot>() + s.runtime.heap_bytes() + s.queue_wait.heap_bytes()
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
        let s = p.overall.summaries(at(110));
        assert_eq!(s[0].window, Duration::from_secs(60));
        assert_eq!(s[0].counts.succeeded, 8);
        assert_eq!(s[0].counts.failed, 2);
        assert_eq!(s[0].throughput_per_min(), 10.0);
        assert_eq!(s[0].succeeded_per_min(), 8.0);
        assert!((s[0].error_rate() - 0.2).abs() < 1e-9);
        assert_eq!(s[0].runtime.count(), 8);
        assert_eq!(s[0].queue_wait.quantile(0.5).unwrap().as_secs(), 2);
        assert_eq!(s[2].throughput_per_min(), 10.0 / 60.0);
        let by_name = p.by_task[&Arc::<str>::from("app.add")].summaries(at(110));
        assert_eq!(
            by_name[0].counts.failed, 2,
            "finished events are attributed by id"
        );
        assert!(p.in_flight.is_empty());
        // Two minutes later the 1-minute window is empty, the others are not.
        let later = p.overall.summaries(at(230));
        assert_eq!(later[0].counts, Counts::default());
        assert_eq!(later[1].counts.succeeded, 8);
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
