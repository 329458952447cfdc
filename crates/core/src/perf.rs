//! Task performance over sliding windows (1 min, 5 min, 1 h), per worker and per task name,
//! in memory that does not grow with the task volume.
//!
//! A window is the sum of its live time slots: 1 min = 6 × 10 s, 5 min = 5 × 1 min,
//! 1 h = 12 × 5 min; it covers its nominal length, give or take one slot. An event is recorded
//! once, into its 10 s slot. A minute is rolled up (its six 10 s slots merged) when the first
//! event of a later minute arrives, and a 5 min block (its five minutes) when the first minute
//! of a later block is rolled up. Until then, reports read the open minute from the 10 s slots
//! and the open block from the minutes, so every window holds exactly the events of its slots.
//! Percentiles come from the merged distribution of the window, never from per-slot figures.
//!
//! Storage: each ring of slots is one byte string; a slot is its counts (varints) and two
//! sketches (runtime, queue wait) in their compact encoding ([`crate::sketch`]). Only the
//! streams of task names are kept (plus one for events whose task name is unknown): a worker's
//! overall figures are merged from them when reported. A worker busy with 3 task names at
//! 1 task/s holds ~4.5 KiB once every slot is in use (`benches/task_stats.rs`).
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{
    model::TaskStats,
    sketch::{Reader, Sketch, put_varint, varint_len},
};

/// The windows reported, with their slot width and slot count.
pub const WINDOWS: [(Duration, Duration, usize); 3] = [
    (
        Duration::from_secs(60),
        Duration::from_secs(FINE_SECS),
        FINE_SLOTS as usize,
    ),
    (
        Duration::from_secs(300),
        Duration::from_secs(FINE_SECS * FINE_PER_MINUTE as u64),
        MINUTE_SLOTS as usize,
    ),
    (
        Duration::from_secs(3600),
        Duration::from_secs(FINE_SECS * (FINE_PER_MINUTE * MINUTES_PER_BLOCK) as u64),
        BLOCK_SLOTS as usize,
    ),
];
const FINE_SECS: u64 = 10;
const FINE_SLOTS: u32 = 6;
const FINE_PER_MINUTE: u32 = 6;
const MINUTE_SLOTS: u32 = 5;
const MINUTES_PER_BLOCK: u32 = 5;
const BLOCK_SLOTS: u32 = 12;
/// Task names tracked separately per worker; more are counted under [`OTHER_TASKS`].
pub const MAX_TASK_NAMES: usize = 200;
pub const OTHER_TASKS: &str = "(other)";
/// The name totals of events whose task name is unknown are kept under.
pub const UNNAMED_TASKS: &str = "(unknown)";
/// Upper bounds (seconds) of the cumulative runtime histogram: the Prometheus client's
/// defaults, which celery-exporter uses, so that dashboards built for it read ours unchanged.
pub const RUNTIME_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Cumulative counts of one task name on one worker since warden first saw it: what the
/// Prometheus exporter serves as counters (the windowed figures cannot give totals).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TaskTotals {
    pub received: u64,
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    pub rejected: u64,
    pub revoked: u64,
    /// Runtimes of succeeded tasks at or under each of [`RUNTIME_BUCKETS`] (not cumulative:
    /// one count per bucket; the exporter sums them up).
    pub runtime_buckets: [u64; RUNTIME_BUCKETS.len()],
    /// Runtimes over the last bound.
    pub runtime_over: u64,
    /// Sum of the runtimes, in seconds.
    pub runtime_sum: f64,
}

impl TaskTotals {
    fn add(&mut self, outcome: TaskOutcome, runtime: Option<Duration>) {
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
        if let Some(runtime) = runtime {
            let secs = runtime.as_secs_f64();
            self.runtime_sum += secs;
            match RUNTIME_BUCKETS.iter().position(|le| secs <= *le) {
                Some(i) => self.runtime_buckets[i] += 1,
                None => self.runtime_over += 1,
            }
        }
    }

    /// Adds another's counts (several workers under one label set).
    pub fn merge(&mut self, other: &TaskTotals) {
        self.received += other.received;
        self.started += other.started;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.retried += other.retried;
        self.rejected += other.rejected;
        self.revoked += other.revoked;
        for (a, b) in self.runtime_buckets.iter_mut().zip(other.runtime_buckets) {
            *a += b;
        }
        self.runtime_over += other.runtime_over;
        self.runtime_sum += other.runtime_sum;
    }

    /// Runtimes observed (succeeded tasks that reported one).
    pub fn runtime_count(&self) -> u64 {
        self.runtime_buckets.iter().sum::<u64>() + self.runtime_over
    }
}
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

    fn fields(&self) -> [u32; 7] {
        [
            self.received,
            self.started,
            self.succeeded,
            self.failed,
            self.retried,
            self.rejected,
            self.revoked,
        ]
    }

    fn fields_mut(&mut self) -> [&mut u32; 7] {
        [
            &mut self.received,
            &mut self.started,
            &mut self.succeeded,
            &mut self.failed,
            &mut self.retried,
            &mut self.rejected,
            &mut self.revoked,
        ]
    }

    fn merge(&mut self, o: &Counts) {
        for (mine, theirs) in self.fields_mut().into_iter().zip(o.fields()) {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// A byte with a bit per non-zero field, then those fields as varints.
    fn encode(&self, out: &mut Vec<u8>) {
        let fields = self.fields();
        let mask = fields
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .fold(0u8, |mask, (i, _)| mask | 1 << i);
        out.push(mask);
        for n in fields.into_iter().filter(|n| *n > 0) {
            put_varint(out, u64::from(n));
        }
    }

    /// Adds the counts encoded at the start of `r`.
    fn merge_encoded(&mut self, r: &mut Reader<'_>) -> Option<()> {
        let mask = r.u8()?;
        for (i, field) in self.fields_mut().into_iter().enumerate() {
            if mask & 1 << i != 0 {
                let n = u32::try_from(r.varint()?).unwrap_or(u32::MAX);
                *field = field.saturating_add(n);
            }
        }
        Some(())
    }
}

/// What one slot of time, or a window, counted.
#[derive(Debug, Clone, Default, PartialEq)]
struct SlotData {
    counts: Counts,
    runtime: Sketch,
    queue_wait: Sketch,
}

impl SlotData {
    fn merge(&mut self, o: &SlotData) {
        self.counts.merge(&o.counts);
        self.runtime.merge(&o.runtime);
        self.queue_wait.merge(&o.queue_wait);
    }

    /// Adds a slot encoded by [`SlotData::encode`].
    fn merge_encoded(&mut self, bytes: &[u8]) {
        let mut r = Reader::new(bytes);
        let decoded = self.counts.merge_encoded(&mut r).and_then(|()| {
            self.runtime.merge_encoded(&mut r)?;
            self.queue_wait.merge_encoded(&mut r)
        });
        debug_assert!(
            decoded.is_some() && r.is_done(),
            "a slot that does not decode"
        );
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        self.counts.encode(&mut out);
        self.runtime.encode(&mut out);
        self.queue_wait.encode(&mut out);
        out
    }
}

/// A ring of time slots as one byte string: the newest slot number (u32 LE), then, oldest
/// first, one entry per slot that holds something: `[age: u8 (newest − slot)][length: varint]
/// [slot encoded by SlotData::encode]`. Writing drops the slots that fell out of the ring.
/// Empty (no allocation) until the first write.
#[derive(Debug, Clone, Default)]
struct Ring(Box<[u8]>);

impl Ring {
    fn head(&self) -> Option<u32> {
        Reader::new(&self.0).u32()
    }

    /// (slot number, encoded slot), oldest first.
    fn entries(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        let mut r = Reader::new(&self.0);
        let head = r.u32().unwrap_or(0);
        std::iter::from_fn(move || {
            let age = r.u8()?;
            let len = usize::try_from(r.varint()?).ok()?;
            Some((head.wrapping_sub(u32::from(age)), r.take(len)?))
        })
    }

    fn get(&self, slot: u32) -> Option<&[u8]> {
        self.entries().find(|(s, _)| *s == slot).map(|(_, p)| p)
    }

    /// Writes (or replaces) `slot`, in a ring of `len` slots.
    fn put(&mut self, slot: u32, data: &[u8], len: u32) {
        let head = self.head().map_or(slot, |h| h.max(slot));
        let live = |s: u32| s.saturating_add(len) > head;
        if !live(slot) {
            return;
        }
        let entry_len = |payload: &[u8]| 1 + varint_len(payload.len() as u64) + payload.len();
        let kept = || self.entries().filter(|(s, _)| *s != slot && live(*s));
        let size = 4 + entry_len(data) + kept().map(|(_, p)| entry_len(p)).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&head.to_le_bytes());
        let write = |out: &mut Vec<u8>, s: u32, payload: &[u8]| {
            out.push((head - s) as u8);
            put_varint(out, payload.len() as u64);
            out.extend_from_slice(payload);
        };
        let mut written = false;
        for (s, payload) in kept() {
            if !written && s > slot {
                write(&mut out, slot, data);
                written = true;
            }
            write(&mut out, s, payload);
        }
        if !written {
            write(&mut out, slot, data);
        }
        debug_assert_eq!(out.len(), size);
        self.0 = out.into_boxed_slice();
    }

    fn heap_bytes(&self) -> usize {
        self.0.len()
    }
}

/// A latency distribution reduced to the figures reported (seconds; all 0 when count is 0).
/// Percentiles, mean, min and max are within [`crate::sketch::RELATIVE_ERROR`] (1.95 %) of the
/// exact figures; the count is exact.
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
        // In f64 seconds, not through Duration (whole nanoseconds), down to 1 ns values.
        let Some(summary) = s.summary([0.50, 0.90, 0.95, 0.99]) else {
            return Self::default();
        };
        let [p50, p90, p95, p99] = summary.quantiles.map(|v| v as f32);
        Self {
            count: summary.count,
            mean: summary.mean as f32,
            min: summary.min as f32,
            max: summary.max as f32,
            p50,
            p90,
            p95,
            p99,
        }
    }
}

/// The figures of one window, ready to report; small, because every worker's snapshot
/// entry holds a few of them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowReport {
    pub window_secs: u32,
    /// The part of the window warden has observed the worker for: the window, or less when
    /// the worker was first seen more recently (at least 1 s). Rates are over this span.
    pub covered_secs: u32,
    pub counts: Counts,
    pub runtime: DistributionReport,
    pub queue_wait: DistributionReport,
}

impl WindowReport {
    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.window_secs))
    }

    /// The span the window really has data for: the window, or less for a worker observed
    /// for less than it.
    pub fn covered(&self) -> Duration {
        Duration::from_secs(u64::from(self.covered_secs))
    }

    /// Tasks finished (succeeded + failed) per minute over the span covered.
    pub fn throughput_per_min(&self) -> f64 {
        (f64::from(self.counts.succeeded) + f64::from(self.counts.failed)) / self.minutes()
    }

    /// Tasks succeeded per minute over the span covered.
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
        f64::from(self.covered_secs.max(1)) / 60.0
    }
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The three windows' figures, from what they merged.
fn window_reports(
    windows: &[SlotData; 3],
    now: SystemTime,
    observed_since: SystemTime,
) -> [WindowReport; 3] {
    let observed = now
        .duration_since(observed_since)
        .unwrap_or_default()
        .as_secs_f64()
        .round();
    std::array::from_fn(|i| {
        let window = WINDOWS[i].0.as_secs() as u32;
        let w = &windows[i];
        WindowReport {
            window_secs: window,
            covered_secs: observed.clamp(1.0, f64::from(window)) as u32,
            counts: w.counts,
            runtime: DistributionReport::from_sketch(&w.runtime),
            queue_wait: DistributionReport::from_sketch(&w.queue_wait),
        }
    })
}

/// Sliding windows of one stream of task events.
#[derive(Debug, Clone, Default)]
pub struct Windowed {
    /// 10 s slots, the last 6: the 1 min window, and the open minute.
    fine: Ring,
    /// Rolled-up minutes, the last 5: the 5 min window (with the open minute), and the open
    /// block (the newest one's).
    minutes: Ring,
    /// Rolled-up 5 min blocks, the last 12: the 1 h window (with the open block and minute).
    blocks: Ring,
}

/// Whether `slot` is one of the `len` slots up to `current`.
fn live(slot: u32, current: u32, len: u32) -> bool {
    slot <= current && slot.saturating_add(len) > current
}

impl Windowed {
    pub fn record(
        &mut self,
        now: SystemTime,
        outcome: TaskOutcome,
        runtime: Option<Duration>,
        wait: Option<Duration>,
    ) {
        let slot = self.slot_for(now);
        let mut data = SlotData::default();
        data.counts.add(outcome);
        if let Some(runtime) = runtime {
            data.runtime.record(runtime);
        }
        if let Some(wait) = wait {
            data.queue_wait.record(wait);
        }
        self.put(slot, data);
    }

    /// Counts a batch of outcomes (and their runtimes) at `now`.
    pub fn record_batch(&mut self, now: SystemTime, counts: Counts, runtime: &Sketch) {
        let slot = self.slot_for(now);
        self.put(
            slot,
            SlotData {
                counts,
                runtime: runtime.clone(),
                queue_wait: Sketch::default(),
            },
        );
    }

    /// The 10 s slot of `now`, rolling up the minute before it when `now` starts a new one.
    fn slot_for(&mut self, now: SystemTime) -> u32 {
        let mut slot = (seconds(now) / FINE_SECS) as u32;
        if let Some(head) = self.fine.head() {
            // A clock that stepped back counts in the newest slot.
            slot = slot.max(head);
            if slot / FINE_PER_MINUTE != head / FINE_PER_MINUTE {
                self.roll_up_minute(head / FINE_PER_MINUTE);
            }
        }
        slot
    }

    /// Adds `data` to the 10 s slot `slot`.
    fn put(&mut self, slot: u32, mut data: SlotData) {
        if let Some(bytes) = self.fine.get(slot) {
            data.merge_encoded(bytes);
        }
        self.fine.put(slot, &data.encode(), FINE_SLOTS);
    }

    /// Merges the 10 s slots of `minute` (the open one) into a minute slot.
    fn roll_up_minute(&mut self, minute: u32) {
        let mut data = SlotData::default();
        for (_, bytes) in self
            .fine
            .entries()
            .filter(|(s, _)| s / FINE_PER_MINUTE == minute)
        {
            data.merge_encoded(bytes);
        }
        if let Some(head) = self.minutes.head()
            && head / MINUTES_PER_BLOCK != minute / MINUTES_PER_BLOCK
        {
            self.roll_up_block(head / MINUTES_PER_BLOCK);
        }
        self.minutes.put(minute, &data.encode(), MINUTE_SLOTS);
    }

    /// Merges the minutes of `block` (the open one) into a block slot.
    fn roll_up_block(&mut self, block: u32) {
        let mut data = SlotData::default();
        for (_, bytes) in self
            .minutes
            .entries()
            .filter(|(s, _)| s / MINUTES_PER_BLOCK == block)
        {
            data.merge_encoded(bytes);
        }
        self.blocks.put(block, &data.encode(), BLOCK_SLOTS);
    }

    /// What the 1 min, 5 min and 1 h windows hold as of `now`.
    fn windows(&self, now: SystemTime) -> [SlotData; 3] {
        let mut windows: [SlotData; 3] = Default::default();
        // The newest 10 s slot is the newest event's: none, nothing at all.
        let Some(newest) = self.fine.head() else {
            return windows;
        };
        let now = seconds(now).max(u64::from(newest) * FINE_SECS) / FINE_SECS;
        let fine_now = now as u32;
        let minute_now = fine_now / FINE_PER_MINUTE;
        let block_now = minute_now / MINUTES_PER_BLOCK;
        let open_minute = newest / FINE_PER_MINUTE;
        // The minutes not rolled up into a block yet: the newest one's block.
        let open_block = self.minutes.head().map(|m| m / MINUTES_PER_BLOCK);
        // Decoded once, merged where they count.
        let mut decoded = SlotData::default();
        let mut add = |bytes: &[u8], into: &mut [&mut SlotData]| match into {
            [] => {}
            [only] => only.merge_encoded(bytes),
            _ => {
                decoded = SlotData::default();
                decoded.merge_encoded(bytes);
                for window in into {
                    window.merge(&decoded);
                }
            }
        };
        let mut open = SlotData::default();
        for (slot, bytes) in self.fine.entries() {
            let [one_min, ..] = &mut windows;
            match (
                live(slot, fine_now, FINE_SLOTS),
                slot / FINE_PER_MINUTE == open_minute,
            ) {
                (true, true) => add(bytes, &mut [one_min, &mut open]),
                (true, false) => add(bytes, &mut [one_min]),
                (false, true) => add(bytes, &mut [&mut open]),
                (false, false) => {}
            }
        }
        if live(open_minute, minute_now, MINUTE_SLOTS) {
            windows[1].merge(&open);
        }
        if live(open_minute / MINUTES_PER_BLOCK, block_now, BLOCK_SLOTS) {
            windows[2].merge(&open);
        }
        for (minute, bytes) in self.minutes.entries() {
            let [_, five_min, hour] = &mut windows;
            let block = minute / MINUTES_PER_BLOCK;
            match (
                live(minute, minute_now, MINUTE_SLOTS),
                Some(block) == open_block && live(block, block_now, BLOCK_SLOTS),
            ) {
                (true, true) => add(bytes, &mut [five_min, hour]),
                (true, false) => add(bytes, &mut [five_min]),
                (false, true) => add(bytes, &mut [hour]),
                (false, false) => {}
            }
        }
        for (block, bytes) in self.blocks.entries() {
            if live(block, block_now, BLOCK_SLOTS) {
                windows[2].merge_encoded(bytes);
            }
        }
        windows
    }

    /// The 1 min, 5 min and 1 h windows as of `now`, for a worker observed since
    /// `observed_since` (rates are over the part of each window since then).
    pub fn reports(&self, now: SystemTime, observed_since: SystemTime) -> [WindowReport; 3] {
        window_reports(&self.windows(now), now, observed_since)
    }

    /// Whether a slot that holds something left one of the windows in (after, until].
    fn moved_between(&self, after: u64, until: u64) -> bool {
        let leaves =
            |slot: u32, slot_secs: u64, len: u32| (u64::from(slot) + u64::from(len)) * slot_secs;
        let minute_secs = FINE_SECS * u64::from(FINE_PER_MINUTE);
        let block_secs = minute_secs * u64::from(MINUTES_PER_BLOCK);
        let minute_leaves = |m: u32| {
            [
                leaves(m, minute_secs, MINUTE_SLOTS),
                leaves(m / MINUTES_PER_BLOCK, block_secs, BLOCK_SLOTS),
            ]
        };
        let fine = self.fine.entries().flat_map(|(s, _)| {
            let [a, b] = minute_leaves(s / FINE_PER_MINUTE);
            [leaves(s, FINE_SECS, FINE_SLOTS), a, b]
        });
        let minutes = self.minutes.entries().flat_map(|(m, _)| minute_leaves(m));
        let blocks = self
            .blocks
            .entries()
            .map(|(b, _)| leaves(b, block_secs, BLOCK_SLOTS));
        fine.chain(minutes)
            .chain(blocks)
            .any(|t| t > after && t <= until)
    }

    /// Heap bytes held (exactly what was asked of the allocator).
    pub fn heap_bytes(&self) -> usize {
        self.fine.heap_bytes() + self.minutes.heap_bytes() + self.blocks.heap_bytes()
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

/// Task performance of one worker: by task name, and the tasks in flight. The worker's overall
/// figures are merged from the names' (and `unnamed`) when reported.
#[derive(Debug, Clone, Default)]
pub struct WorkerPerf {
    /// At most [`MAX_TASK_NAMES`] names, then [`OTHER_TASKS`] for the rest.
    pub by_task: HashMap<Arc<str>, Windowed>,
    /// Cumulative counts by the same names, plus [`UNNAMED_TASKS`].
    pub totals: HashMap<Arc<str>, TaskTotals>,
    /// Events whose task name is unknown: counted in the overall figures only.
    pub unnamed: Windowed,
    pub in_flight: HashMap<String, TrackedTask>,
    /// When the first task event arrived (warden's clock).
    pub first_event: Option<SystemTime>,
    /// When the last task event arrived (warden's clock).
    pub last_event: Option<SystemTime>,
    /// Set by every event; cleared when the worker's summary is refreshed.
    pub dirty: bool,
    /// When the summary was last refreshed.
    pub summarised_at: Option<SystemTime>,
    /// What the tasks did since history last sampled this worker (absent when nothing did):
    /// taken and reset at every sampling tick.
    pub interval: Option<Box<IntervalTasks>>,
    /// The cumulative counters of the worker's last heartbeat (lease-based workers).
    pub counters: Option<crate::model::TaskCounters>,
}

/// Task outcomes and distributions within one sampling interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntervalTasks {
    pub counts: Counts,
    pub runtime: Sketch,
    pub queue_wait: Sketch,
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
    /// What the tasks did since the last call (for history's samples), and starts afresh.
    pub fn take_interval(&mut self) -> IntervalTasks {
        self.interval.take().map(|b| *b).unwrap_or_default()
    }

    /// Counts one task event at `now` (warden's clock).
    pub fn record(&mut self, task: &TaskObservation, now: SystemTime) {
        self.first_event.get_or_insert(now);
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
        let interval = self.interval.get_or_insert_with(Box::default);
        interval.counts.add(task.outcome);
        if let Some(runtime) = runtime {
            interval.runtime.record(runtime);
        }
        if let Some(wait) = wait {
            interval.queue_wait.record(wait);
        }
        let stream = match name {
            Some(name) => {
                let key = if self.by_task.contains_key(&name) || self.by_task.len() < MAX_TASK_NAMES
                {
                    name
                } else {
                    Arc::from(OTHER_TASKS)
                };
                self.totals
                    .entry(key.clone())
                    .or_default()
                    .add(task.outcome, runtime);
                self.by_task.entry(key).or_default()
            }
            None => {
                self.totals
                    .entry(Arc::from(UNNAMED_TASKS))
                    .or_default()
                    .add(task.outcome, runtime);
                &mut self.unnamed
            }
        };
        stream.record(now, task.outcome, runtime, wait);
    }

    /// Takes a heartbeat's cumulative counters: counts their increase since the previous
    /// heartbeat. The first heartbeat seen is only a baseline (when those tasks ran is
    /// unknown); a counter that went down means a restart, counted from 0; latencies are
    /// counted at their bucket's upper bound (the last bound for those over it), the
    /// conservative reading of a fixed-bucket histogram.
    pub fn observe_counters(&mut self, now: SystemTime, counters: crate::model::TaskCounters) {
        let Some(last) = self.counters.replace(counters.clone()) else {
            return;
        };
        let restarted = counters.processed < last.processed || counters.failed < last.failed;
        let (processed, failed) = if restarted {
            (counters.processed, counters.failed)
        } else {
            (
                counters.processed - last.processed,
                counters.failed - last.failed,
            )
        };
        let failed = failed.min(processed);
        let mut runtime = Sketch::default();
        if let Some(now_h) = &counters.latency {
            let before = last
                .latency
                .as_ref()
                .filter(|b| !restarted && b.bounds == now_h.bounds)
                .filter(|b| {
                    b.over <= now_h.over && b.counts.iter().zip(&now_h.counts).all(|(a, b)| a <= b)
                });
            let base = |i: usize| before.and_then(|b| b.counts.get(i)).copied().unwrap_or(0);
            for (i, (bound, n)) in now_h.bounds.iter().zip(&now_h.counts).enumerate() {
                let d = n.saturating_sub(base(i));
                runtime.record_n(*bound, u32::try_from(d).unwrap_or(u32::MAX));
            }
            if let Some(last_bound) = now_h.bounds.last() {
                let d = now_h.over.saturating_sub(before.map_or(0, |b| b.over));
                runtime.record_n(*last_bound, u32::try_from(d).unwrap_or(u32::MAX));
            }
        }
        let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        self.record_counts(now, clamp(processed - failed), clamp(failed), &runtime);
    }

    /// Counts what a worker's cumulative counters say it finished since its last report
    /// (`succeeded`, `failed`, and the runtimes of both): kept under [`UNNAMED_TASKS`], as
    /// such a worker does not name its tasks.
    pub fn record_counts(
        &mut self,
        now: SystemTime,
        succeeded: u32,
        failed: u32,
        runtime: &Sketch,
    ) {
        if succeeded == 0 && failed == 0 && runtime.is_empty() {
            return;
        }
        self.first_event.get_or_insert(now);
        self.last_event = Some(now);
        self.dirty = true;
        let counts = Counts {
            succeeded,
            failed,
            ..Counts::default()
        };
        let interval = self.interval.get_or_insert_with(Box::default);
        interval.counts.merge(&counts);
        interval.runtime.merge(runtime);
        let totals = self.totals.entry(Arc::from(UNNAMED_TASKS)).or_default();
        totals.succeeded += u64::from(succeeded);
        totals.failed += u64::from(failed);
        self.unnamed.record_batch(now, counts, runtime);
    }

    /// The worker's figures as of `now`, overall and by task name (sorted by name), for a
    /// worker observed since `observed_since` (rates are over the part of each window since
    /// then: pass the earlier of when the worker was first seen and [`Self::first_event`]).
    pub fn task_stats(&self, now: SystemTime, observed_since: SystemTime) -> TaskStats {
        let mut overall = self.unnamed.windows(now);
        let mut by_task: Vec<(Arc<str>, [WindowReport; 3])> = self
            .by_task
            .iter()
            .map(|(name, stream)| {
                let windows = stream.windows(now);
                for (all, one) in overall.iter_mut().zip(&windows) {
                    all.merge(one);
                }
                (name.clone(), window_reports(&windows, now, observed_since))
            })
            .collect();
        by_task.sort_by(|a, b| a.0.cmp(&b.0));
        let mut totals: Vec<(Arc<str>, TaskTotals)> = self
            .totals
            .iter()
            .map(|(name, t)| (name.clone(), *t))
            .collect();
        totals.sort_by(|a, b| a.0.cmp(&b.0));
        TaskStats {
            overall: window_reports(&overall, now, observed_since),
            by_task,
            totals,
        }
    }

    /// The overall figures alone (see [`Self::task_stats`]).
    pub fn overall_reports(
        &self,
        now: SystemTime,
        observed_since: SystemTime,
    ) -> [WindowReport; 3] {
        let mut overall = self.unnamed.windows(now);
        for stream in self.by_task.values() {
            for (all, one) in overall.iter_mut().zip(stream.windows(now)) {
                all.merge(&one);
            }
        }
        window_reports(&overall, now, observed_since)
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
        self.unnamed.moved_between(after, until)
            || self.by_task.values().any(|w| w.moved_between(after, until))
    }

    /// Tasks started and not finished, as far as the events tell.
    pub fn running(&self) -> impl Iterator<Item = (&String, &TrackedTask)> {
        self.in_flight
            .iter()
            .filter(|(_, t)| t.started_at.is_some())
    }

    /// Heap bytes held: every allocation (the tables' buckets and control bytes, the keys,
    /// the task names held in flight, the rings), as asked of the allocator.
    pub fn heap_bytes(&self) -> usize {
        let arc_str = |s: &str| 2 * std::mem::size_of::<usize>() + s.len();
        table_bytes(&self.by_task)
            + self
                .by_task
                .iter()
                .map(|(name, stream)| arc_str(name) + stream.heap_bytes())
                .sum::<usize>()
            + self.unnamed.heap_bytes()
            + table_bytes(&self.in_flight)
            + self
                .in_flight
                .iter()
                .map(|(id, t)| id.capacity() + t.name.as_deref().map_or(0, arc_str))
                .sum::<usize>()
            + self.interval.as_deref().map_or(0, |i| {
                std::mem::size_of::<IntervalTasks>()
                    + i.runtime.heap_bytes()
                    + i.queue_wait.heap_bytes()
            })
    }
}

/// The allocation of a std (hashbrown) table: buckets (a power of two, ⅞ usable from 8 on;
/// 4 for up to 3 entries), then a control byte per bucket plus a group of 16.
fn table_bytes<K, V>(map: &HashMap<K, V>) -> usize {
    const GROUP: usize = 16;
    let capacity = map.capacity();
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        capacity + 1
    } else {
        capacity / 7 * 8
    };
    let align = std::mem::align_of::<(K, V)>().max(GROUP);
    (buckets * std::mem::size_of::<(K, V)>()).next_multiple_of(align) + buckets + GROUP
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::{
        RELATIVE_ERROR,
        tests::{Rng, distributions, exact_quantile},
    };

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    /// Observed for longer than any window: rates over the whole window.
    const LONG_AGO: SystemTime = UNIX_EPOCH;

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

    fn counters(
        processed: u64,
        failed: u64,
        counts: [u64; 2],
        over: u64,
    ) -> crate::model::TaskCounters {
        crate::model::TaskCounters {
            processed,
            failed,
            latency: Some(crate::model::LatencyHistogram {
                bounds: vec![Duration::from_millis(10), Duration::from_millis(100)],
                counts: counts.to_vec(),
                over,
            }),
        }
    }

    #[test]
    fn heartbeat_counters_count_their_increase_and_a_restart_from_zero() {
        let mut p = WorkerPerf::default();
        // The first heartbeat is a baseline: nothing counted.
        p.observe_counters(at(0), counters(100, 10, [50, 50], 0));
        assert!(p.first_event.is_none());
        // +20 processed, +5 failed; latencies: 0 in the first bucket, 18 in the second, 2 over.
        p.observe_counters(at(5), counters(120, 15, [50, 68], 2));
        // A restart (the counter went down): counted from 0.
        p.observe_counters(at(10), counters(4, 1, [4, 0], 0));
        let stats = p.task_stats(at(10), LONG_AGO);
        let minute = stats.overall[0];
        assert_eq!(minute.counts.succeeded, 15 + 3);
        assert_eq!(minute.counts.failed, 5 + 1);
        assert!((minute.error_rate() - 6.0 / 24.0).abs() < 1e-9);
        assert_eq!(minute.runtime.count, 24);
        let totals = &stats.totals[0].1;
        assert_eq!((totals.succeeded, totals.failed), (18, 6));
        // 4 at 10 ms, 18 at 100 ms, 2 over (at the last bound): the median is 100 ms.
        let p50 = f64::from(minute.runtime.p50);
        assert!((p50 - 0.1).abs() < 0.1 * RELATIVE_ERROR * 2.0, "{p50}");
    }

    #[test]
    fn totals_are_cumulative_by_resolved_name_with_a_runtime_histogram() {
        let mut p = WorkerPerf::default();
        p.record(
            &obs(TaskOutcome::Received, "a", Some("add"), 0, None),
            at(0),
        );
        // Celery's succeeded event has no name: it is resolved from the received one.
        p.record(&obs(TaskOutcome::Succeeded, "a", None, 1, Some(0.2)), at(1));
        p.record(
            &obs(TaskOutcome::Received, "b", Some("add"), 2, None),
            at(2),
        );
        p.record(
            &obs(TaskOutcome::Succeeded, "b", None, 3, Some(20.0)),
            at(3),
        );
        p.record(&obs(TaskOutcome::Failed, "zz", None, 4, None), at(4));
        // Long after every window: totals do not age.
        let stats = p.task_stats(at(10_000), LONG_AGO);
        let add = stats.totals.iter().find(|(n, _)| &**n == "add").unwrap().1;
        assert_eq!((add.received, add.succeeded, add.failed), (2, 2, 0));
        assert_eq!(add.runtime_count(), 2);
        assert_eq!(add.runtime_over, 1, "20 s is over the last bound (10 s)");
        let le_025 = RUNTIME_BUCKETS.iter().position(|b| *b == 0.25).unwrap();
        assert_eq!(add.runtime_buckets[le_025], 1);
        assert!((add.runtime_sum - 20.2).abs() < 1e-9);
        let unknown = stats
            .totals
            .iter()
            .find(|(n, _)| &**n == UNNAMED_TASKS)
            .unwrap()
            .1;
        assert_eq!(unknown.failed, 1);
    }

    #[test]
    fn windows_table_matches_the_rings() {
        let slot_secs: Vec<u64> = WINDOWS.iter().map(|(_, w, _)| w.as_secs()).collect();
        assert_eq!(slot_secs, [10, 60, 300]);
        for (window, width, len) in WINDOWS {
            assert_eq!(width * len as u32, window);
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
        let s = p.overall_reports(at(110), LONG_AGO);
        assert_eq!(s[0].window(), Duration::from_secs(60));
        assert_eq!(s[0].covered_secs, 60);
        assert_eq!(s[0].counts.succeeded, 8);
        assert_eq!(s[0].counts.failed, 2);
        assert_eq!(s[0].throughput_per_min(), 10.0);
        assert_eq!(s[0].succeeded_per_min(), 8.0);
        assert!((s[0].error_rate() - 0.2).abs() < 1e-9);
        assert_eq!(s[0].runtime.count, 8);
        assert!((s[0].queue_wait.p50 - 2.0).abs() / 2.0 <= RELATIVE_ERROR as f32);
        assert!((s[0].runtime.mean - 0.5).abs() / 0.5 <= RELATIVE_ERROR as f32);
        assert_eq!(s[2].throughput_per_min(), 10.0 / 60.0);
        let by_name = p.by_task[&Arc::<str>::from("app.add")].reports(at(110), LONG_AGO);
        assert_eq!(
            by_name[0].counts.failed, 2,
            "finished events are attributed by id"
        );
        assert_eq!(by_name, s, "one name: the overall figures are its own");
        assert!(p.in_flight.is_empty());
        // Two minutes later the 1-minute window is empty, the others are not.
        let later = p.overall_reports(at(230), LONG_AGO);
        assert_eq!(later[0].counts, Counts::default());
        assert_eq!(later[1].counts.succeeded, 8);
        let stats = p.task_stats(at(230), LONG_AGO);
        assert_eq!(stats.overall, later);
        assert_eq!(stats.by_task.len(), 1);
    }

    /// A worker seen for 34 s that finished 34 tasks runs at 60/min, in every window.
    #[test]
    fn rates_are_over_the_span_observed() {
        let mut p = WorkerPerf::default();
        for i in 1..=34 {
            let id = format!("t{i}");
            p.record(
                &obs(TaskOutcome::Received, &id, Some("x"), 1000 + i, None),
                at(1000 + i),
            );
            p.record(
                &obs(TaskOutcome::Succeeded, &id, None, 1000 + i, Some(0.1)),
                at(1000 + i),
            );
        }
        let stats = p.task_stats(at(1034), at(1000));
        for reports in [stats.overall, stats.by_task[0].1] {
            for r in reports {
                assert_eq!(r.covered_secs, 34, "{r:?}");
                assert_eq!(r.counts.succeeded, 34);
                assert!((r.throughput_per_min() - 60.0).abs() < 1e-9, "{r:?}");
                assert!((r.succeeded_per_min() - 60.0).abs() < 1e-9);
            }
        }
        let two_hours = at(1034) - Duration::from_secs(7200);
        let long = p.overall_reports(at(1034), two_hours);
        assert_eq!(long.map(|r| r.covered_secs), [60, 300, 3600]);
        assert_eq!(
            long.map(|r| r.throughput_per_min()),
            [34.0, 34.0 / 5.0, 34.0 / 60.0]
        );
        // A clock ahead of warden's: at least 1 s.
        assert_eq!(p.overall_reports(at(1034), at(2000))[0].covered_secs, 1);
    }

    #[test]
    fn overall_counts_every_event_once_with_or_without_a_name() {
        let mut p = WorkerPerf::default();
        let mut finished = 0;
        for i in 0..(MAX_TASK_NAMES + 5) {
            let id = format!("t{i}");
            let name = format!("task{i}");
            p.record(
                &obs(TaskOutcome::Received, &id, Some(&name), 10, None),
                at(10),
            );
            p.record(
                &obs(TaskOutcome::Succeeded, &id, None, 11, Some(0.2)),
                at(11),
            );
            finished += 1;
        }
        // Never received: no name known.
        for i in 0..7 {
            let id = format!("lost{i}");
            p.record(&obs(TaskOutcome::Failed, &id, None, 12, None), at(12));
            p.record(
                &obs(TaskOutcome::Succeeded, &id, None, 12, Some(1.0)),
                at(12),
            );
            finished += 2;
        }
        assert_eq!(p.by_task.len(), MAX_TASK_NAMES + 1);
        let stats = p.task_stats(at(20), LONG_AGO);
        let other = stats
            .by_task
            .iter()
            .find(|(name, _)| &**name == OTHER_TASKS)
            .unwrap();
        assert_eq!(other.1[0].counts.received, 5);
        for w in stats.overall {
            assert_eq!(w.counts.received, MAX_TASK_NAMES as u32 + 5);
            assert_eq!(w.counts.succeeded + w.counts.failed, finished);
            assert_eq!(w.runtime.count, u64::from(w.counts.succeeded));
        }
        let summed: u32 = stats
            .by_task
            .iter()
            .map(|(_, w)| w[2].counts.succeeded)
            .sum();
        assert_eq!(summed + 7, stats.overall[2].counts.succeeded);
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

    #[test]
    fn a_clock_that_steps_back_counts_in_the_newest_slot() {
        let mut w = Windowed::default();
        w.record(at(100), TaskOutcome::Succeeded, None, None);
        w.record(at(30), TaskOutcome::Failed, None, None);
        let r = w.reports(at(100), LONG_AGO);
        assert_eq!((r[0].counts.succeeded, r[0].counts.failed), (1, 1));
        assert_eq!(
            w.reports(at(40), LONG_AGO),
            r,
            "read as of the newest event"
        );
    }

    struct Logged {
        t: u64,
        outcome: TaskOutcome,
        runtime: Option<Duration>,
        wait: Option<Duration>,
    }

    /// What each window holds at `now` by definition: every event whose slot is live.
    fn by_definition(log: &[Logged], now: u64) -> [SlotData; 3] {
        let mut windows: [SlotData; 3] = Default::default();
        for (window, (_, width, len)) in windows.iter_mut().zip(WINDOWS) {
            let (width, current) = (width.as_secs(), now / width.as_secs());
            for e in log.iter().filter(|e| e.t / width + len as u64 > current) {
                window.counts.add(e.outcome);
                if let Some(r) = e.runtime {
                    window.runtime.record(r);
                }
                if let Some(w) = e.wait {
                    window.queue_wait.record(w);
                }
            }
        }
        windows
    }

    /// Events at irregular times over hours (bursts, pauses of minutes, idle spells of up to
    /// an hour): every window, read at any time, holds exactly its slots' events, and the
    /// windows move exactly when a slot with data leaves one.
    #[test]
    fn rolled_up_windows_equal_their_definition() {
        const OUTCOMES: [TaskOutcome; 7] = [
            TaskOutcome::Received,
            TaskOutcome::Started,
            TaskOutcome::Succeeded,
            TaskOutcome::Failed,
            TaskOutcome::Retried,
            TaskOutcome::Rejected,
            TaskOutcome::Revoked,
        ];
        let mut rng = Rng(11);
        let mut t = 1_700_000_123u64;
        let mut times = Vec::new();
        for _ in 0..4000 {
            t += match rng.next_u64() % 200 {
                0 => 600 + rng.next_u64() % 3600,
                1..=8 => 30 + rng.next_u64() % 400,
                _ => rng.next_u64() % 7,
            };
            times.push(t);
        }
        let secs = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let mut w = Windowed::default();
        let mut log: Vec<Logged> = Vec::new();
        for (i, &t) in times.iter().enumerate() {
            let e = Logged {
                t,
                outcome: OUTCOMES[(rng.next_u64() % 7) as usize],
                runtime: (!rng.next_u64().is_multiple_of(3))
                    .then(|| Duration::from_secs_f64(0.01 * 100f64.powf(rng.unit()))),
                wait: (!rng.next_u64().is_multiple_of(2))
                    .then(|| Duration::from_secs_f64(0.001 * 1000f64.powf(rng.unit()))),
            };
            w.record(secs(t), e.outcome, e.runtime, e.wait);
            log.push(e);
            // Only the last ~hour and a block can be live.
            let recent = log.partition_point(|e| e.t + 4000 < t);
            let next = times.get(i + 1).copied().unwrap_or(t + 5000);
            let later = t + rng.next_u64() % (next - t + 1);
            for now in [t, later] {
                assert_eq!(
                    w.windows(secs(now)),
                    by_definition(&log[recent..], now),
                    "event {i} at {t}, read at {now}"
                );
            }
            assert_eq!(
                w.moved_between(t, later),
                w.windows(secs(t)) != w.windows(secs(later)),
                "event {i} at {t}, until {later}"
            );
        }
    }

    /// An hour and more of 1 task/s spread over 3 names, every slot in use: a few KiB, counts
    /// exact, percentiles within 2 % of the exact ones, per name and overall.
    #[test]
    fn a_busy_worker_is_small_and_accurate() {
        let draws = distributions();
        let names = ["app.a", "app.b", "app.c"];
        let mut p = WorkerPerf::default();
        let mut rng = Rng(3);
        // (t, name, runtime, wait)
        let mut samples: Vec<(u64, usize, f64, f64)> = Vec::new();
        let start = 1_700_000_000u64;
        for s in 0..3900u64 {
            let t = start + s;
            let n = (s % 3) as usize;
            let runtime = Duration::from_secs_f64(draws[n].1(&mut rng));
            let wait = Duration::from_secs_f64(draws[n + 2].1(&mut rng));
            let id = format!("t{s}");
            let now = UNIX_EPOCH + Duration::from_secs(t);
            let mut event = TaskObservation {
                outcome: TaskOutcome::Received,
                id,
                name: Some(names[n].into()),
                timestamp: Some(now),
                runtime: None,
            };
            p.record(&event, now);
            event.outcome = TaskOutcome::Started;
            event.name = None;
            event.timestamp = Some(now + wait);
            p.record(&event, now);
            event.outcome = TaskOutcome::Succeeded;
            event.runtime = Some(runtime);
            p.record(&event, now);
            samples.push((t, n, runtime.as_secs_f64(), wait.as_secs_f64()));
        }
        let heap = p.heap_bytes();
        assert!(heap <= 8 * 1024, "{heap} bytes");
        let now_secs = start + 3899;
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        let stats = p.task_stats(now, LONG_AGO);
        let check = |reports: &[WindowReport; 3], name: Option<usize>| {
            for (r, (_, width, len)) in reports.iter().zip(WINDOWS) {
                let width = width.as_secs();
                let inside: Vec<_> = samples
                    .iter()
                    .filter(|(t, n, ..)| {
                        t / width + len as u64 > now_secs / width && name.is_none_or(|m| m == *n)
                    })
                    .collect();
                let count = inside.len() as u32;
                assert_eq!(
                    (r.counts.received, r.counts.started, r.counts.succeeded),
                    (count, count, count)
                );
                for (dist, pick) in [(&r.runtime, 2usize), (&r.queue_wait, 3usize)] {
                    let mut values: Vec<f64> = inside
                        .iter()
                        .map(|s| if pick == 2 { s.2 } else { s.3 })
                        .collect();
                    values.sort_by(f64::total_cmp);
                    assert_eq!(dist.count, values.len() as u64);
                    for (q, got) in [
                        (0.5, dist.p50),
                        (0.9, dist.p90),
                        (0.95, dist.p95),
                        (0.99, dist.p99),
                    ] {
                        let exact = exact_quantile(&values, q);
                        let e = (f64::from(got) - exact).abs() / exact;
                        assert!(
                            e <= 0.02,
                            "{name:?} {}s q{q}: {got} vs {exact}",
                            r.window_secs
                        );
                    }
                }
            }
        };
        check(&stats.overall, None);
        for (n, name) in names.iter().enumerate() {
            let (_, reports) = stats.by_task.iter().find(|(k, _)| &**k == *name).unwrap();
            check(reports, Some(n));
        }
    }
}
