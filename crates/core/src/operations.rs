//! Operations: long control actions (restart, drain, shutdown, ...) as resources that outlive
//! the RPC that started them.
//!
//! The registry keeps every operation in memory, each behind a `watch` channel so that
//! watchers see every state change and late watchers see the current state at once. The task
//! that carries an operation out holds an [`OperationHandle`] and reports per-target progress
//! through it; cancellation is a token the task checks before starting each target. Ended
//! operations are kept for at least [`RETENTION`] (swept when new ones are created), and at
//! most [`MAX_KEPT`] of them (the oldest ended ones go first).
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;

/// How long ended operations are kept.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Most operations kept (ended ones beyond it are dropped oldest first, even within the
/// retention; running ones are never dropped).
pub const MAX_KEPT: usize = 10_000;

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    PartiallySucceeded,
}

impl OperationState {
    pub fn is_done(self) -> bool {
        !matches!(self, OperationState::Pending | OperationState::Running)
    }
}

/// What happened, or would happen, to one target (the contract's `OutcomeCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Applied,
    WouldApply,
    Skipped,
    NotAlive,
    Locked,
    Throttled,
    NotSupported,
    Failed,
    Unknown,
    Cordoned,
    Pending,
    Running,
    Cancelled,
}

impl Outcome {
    /// Final: anything but PENDING and RUNNING.
    pub fn is_final(self) -> bool {
        !matches!(self, Outcome::Pending | Outcome::Running)
    }

    /// A final code that counts against the operation (makes it FAILED or PARTIALLY_SUCCEEDED).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::Locked
                | Outcome::Throttled
                | Outcome::NotSupported
                | Outcome::Failed
                | Outcome::Unknown
        )
    }

    /// The contract's enum value name without its prefix, e.g. `APPLIED`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Applied => "APPLIED",
            Outcome::WouldApply => "WOULD_APPLY",
            Outcome::Skipped => "SKIPPED",
            Outcome::NotAlive => "NOT_ALIVE",
            Outcome::Locked => "LOCKED",
            Outcome::Throttled => "THROTTLED",
            Outcome::NotSupported => "NOT_SUPPORTED",
            Outcome::Failed => "FAILED",
            Outcome::Unknown => "UNKNOWN",
            Outcome::Cordoned => "CORDONED",
            Outcome::Pending => "PENDING",
            Outcome::Running => "RUNNING",
            Outcome::Cancelled => "CANCELLED",
        }
    }

    pub fn from_name(name: &str) -> Option<Outcome> {
        ALL_OUTCOMES.iter().copied().find(|o| o.name() == name)
    }
}

const ALL_OUTCOMES: [Outcome; 13] = [
    Outcome::Applied,
    Outcome::WouldApply,
    Outcome::Skipped,
    Outcome::NotAlive,
    Outcome::Locked,
    Outcome::Throttled,
    Outcome::NotSupported,
    Outcome::Failed,
    Outcome::Unknown,
    Outcome::Cordoned,
    Outcome::Pending,
    Outcome::Running,
    Outcome::Cancelled,
];

/// Progress of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetProgress {
    /// Resource name of the worker (empty for group targets).
    pub worker: String,
    pub code: Outcome,
    /// The current step, or the outcome's detail.
    pub message: String,
    pub update_time: SystemTime,
    pub group: String,
    /// The runtime instance acted on (`pid:123`, `ns/pod`); empty when none.
    pub instance: String,
}

/// A long action, as watchers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// `operations/{id}`; empty for a dry run (not stored).
    pub name: String,
    pub verb: String,
    pub state: OperationState,
    pub create_time: SystemTime,
    pub update_time: SystemTime,
    pub end_time: Option<SystemTime>,
    pub actor: String,
    pub reason: String,
    pub dry_run: bool,
    pub request_id: String,
    pub targets: Vec<TargetProgress>,
    pub audit_id: String,
    pub revision: u64,
    pub message: String,
}

impl Operation {
    /// A new PENDING operation (not yet registered: see [`Operations::create`]).
    pub fn new(verb: &str, actor: &str, reason: &str, request_id: &str, now: SystemTime) -> Self {
        Self {
            name: String::new(),
            verb: verb.to_string(),
            state: OperationState::Pending,
            create_time: now,
            update_time: now,
            end_time: None,
            actor: actor.to_string(),
            reason: reason.to_string(),
            dry_run: false,
            request_id: request_id.to_string(),
            targets: Vec::new(),
            audit_id: String::new(),
            revision: 0,
            message: String::new(),
        }
    }

    /// Targets that reached a final code.
    pub fn done(&self) -> usize {
        self.targets.iter().filter(|t| t.code.is_final()).count()
    }

    pub fn total(&self) -> usize {
        self.targets.len()
    }

    /// The final state its targets imply (see the contract's OperationState), and a summary.
    pub fn verdict(&self) -> (OperationState, String) {
        let mut counts: BTreeMap<Outcome, usize> = BTreeMap::new();
        for t in &self.targets {
            *counts.entry(t.code).or_default() += 1;
        }
        let applied = counts.get(&Outcome::Applied).copied().unwrap_or(0);
        let failures: usize = counts
            .iter()
            .filter(|(c, _)| c.is_failure())
            .map(|(_, n)| n)
            .sum();
        let state = match (applied, failures) {
            (_, 0) => OperationState::Succeeded,
            (0, _) => OperationState::Failed,
            _ => OperationState::PartiallySucceeded,
        };
        let summary = counts
            .iter()
            .map(|(c, n)| format!("{n} {}", c.name().to_ascii_lowercase()))
            .collect::<Vec<_>>()
            .join(", ");
        (
            state,
            format!("{} of {}: {summary}", self.done(), self.total()),
        )
    }

    /// Whether `worker` (a resource name) is among its targets.
    pub fn targets_worker(&self, worker: &str) -> bool {
        self.targets.iter().any(|t| t.worker == worker)
    }
}

/// Why an operation cannot be cancelled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CancelError {
    #[error("no operation named {0:?}")]
    NotFound(String),
    #[error("the operation already ended {0:?}")]
    Done(OperationState),
}

/// Filters of [`Operations::list`] (AND of the set ones).
#[derive(Debug, Clone, Default)]
pub struct OperationQuery {
    pub states: Vec<OperationState>,
    pub verbs: Vec<String>,
    pub request_id: String,
    /// A worker resource name.
    pub worker: String,
    /// Only operations whose id sorts before this one (newest-first paging).
    pub before: Option<String>,
    pub limit: usize,
}

struct Entry {
    tx: watch::Sender<Operation>,
    cancel: CancellationToken,
}

/// The registry. Cheap to clone.
#[derive(Clone)]
pub struct Operations {
    inner: Arc<Mutex<BTreeMap<String, Entry>>>,
    seq: Arc<AtomicU64>,
    clock: Arc<dyn Clock>,
}

impl Operations {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::default(),
            seq: Arc::default(),
            clock,
        }
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Registers `op` under a fresh name and returns the handle that carries it out. Ids sort
    /// by creation (milliseconds, then a sequence number), so newest first is id descending.
    pub fn create(&self, mut op: Operation) -> OperationHandle {
        let ms = op
            .create_time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{ms:013}-{seq:08}");
        op.name = format!("operations/{id}");
        let (tx, _) = watch::channel(op);
        let cancel = CancellationToken::new();
        let mut inner = self.lock();
        self.sweep(&mut inner);
        inner.insert(
            id.clone(),
            Entry {
                tx: tx.clone(),
                cancel: cancel.clone(),
            },
        );
        OperationHandle {
            tx,
            cancel,
            clock: self.clock.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops ended operations past the retention, then the oldest ended ones above the cap.
    fn sweep(&self, inner: &mut BTreeMap<String, Entry>) {
        let now = self.clock.now();
        inner.retain(|_, e| {
            let op = e.tx.borrow();
            op.end_time
                .is_none_or(|end| now.duration_since(end).unwrap_or_default() <= RETENTION)
        });
        if inner.len() >= MAX_KEPT {
            let excess = inner.len() + 1 - MAX_KEPT;
            let old: Vec<String> = inner
                .iter()
                .filter(|(_, e)| e.tx.borrow().state.is_done())
                .take(excess)
                .map(|(k, _)| k.clone())
                .collect();
            for k in old {
                inner.remove(&k);
            }
        }
    }

    fn id_of(name: &str) -> &str {
        name.strip_prefix("operations/").unwrap_or(name)
    }

    pub fn get(&self, name: &str) -> Option<Operation> {
        self.lock()
            .get(Self::id_of(name))
            .map(|e| e.tx.borrow().clone())
    }

    /// A receiver that sees the current state at once and every later change.
    pub fn watch(&self, name: &str) -> Option<watch::Receiver<Operation>> {
        self.lock().get(Self::id_of(name)).map(|e| e.tx.subscribe())
    }

    /// Newest first; the id of the last one returned is the next `before`.
    pub fn list(&self, q: &OperationQuery) -> Vec<Operation> {
        let inner = self.lock();
        let mut out = Vec::new();
        let iter: Box<dyn Iterator<Item = (&String, &Entry)>> = match &q.before {
            Some(before) => Box::new(inner.range(..before.clone()).rev()),
            None => Box::new(inner.iter().rev()),
        };
        for (_, e) in iter {
            let op = e.tx.borrow();
            if (!q.states.is_empty() && !q.states.contains(&op.state))
                || (!q.verbs.is_empty() && !q.verbs.contains(&op.verb))
                || (!q.request_id.is_empty() && op.request_id != q.request_id)
                || (!q.worker.is_empty() && !op.targets_worker(&q.worker))
            {
                continue;
            }
            out.push(op.clone());
            if out.len() >= q.limit.max(1) {
                break;
            }
        }
        out
    }

    /// Stops the operation from starting new targets. Returns it as it is now.
    pub fn cancel(&self, name: &str, dry_run: bool) -> Result<Operation, CancelError> {
        let inner = self.lock();
        let entry = inner
            .get(Self::id_of(name))
            .ok_or_else(|| CancelError::NotFound(name.to_string()))?;
        let state = entry.tx.borrow().state;
        if state.is_done() {
            return Err(CancelError::Done(state));
        }
        if !dry_run {
            entry.cancel.cancel();
        }
        Ok(entry.tx.borrow().clone())
    }
}

/// What the task carrying an operation out holds.
#[derive(Clone)]
pub struct OperationHandle {
    tx: watch::Sender<Operation>,
    cancel: CancellationToken,
    clock: Arc<dyn Clock>,
}

impl OperationHandle {
    pub fn snapshot(&self) -> Operation {
        self.tx.borrow().clone()
    }

    pub fn name(&self) -> String {
        self.tx.borrow().name.clone()
    }

    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    fn update(&self, f: impl FnOnce(&mut Operation)) {
        let now = self.clock.now();
        self.tx.send_modify(|op| {
            f(op);
            op.update_time = now;
        });
    }

    pub fn set_running(&self) {
        self.update(|op| {
            if op.state == OperationState::Pending {
                op.state = OperationState::Running;
            }
        });
    }

    /// Sets one target's progress (code and step).
    pub fn target(&self, index: usize, code: Outcome, message: impl Into<String>) {
        let now = self.clock.now();
        let message = message.into();
        self.update(|op| {
            if let Some(t) = op.targets.get_mut(index) {
                t.code = code;
                t.message = message;
                t.update_time = now;
            }
        });
    }

    pub fn set_instance(&self, index: usize, instance: impl Into<String>) {
        let instance = instance.into();
        self.update(|op| {
            if let Some(t) = op.targets.get_mut(index) {
                t.instance = instance;
            }
        });
    }

    /// Ends the operation: targets still PENDING become CANCELLED; the state follows from the
    /// targets, or is CANCELLED when the operation was cancelled, or FAILED with `failure`.
    pub fn finish(&self, failure: Option<String>) {
        let now = self.clock.now();
        let cancelled = self.cancel.is_cancelled();
        self.update(|op| {
            for t in op.targets.iter_mut().filter(|t| !t.code.is_final()) {
                t.code = Outcome::Cancelled;
                t.message = "not started: the operation was stopped".into();
                t.update_time = now;
            }
            let (state, summary) = op.verdict();
            (op.state, op.message) = match (failure, cancelled) {
                (Some(reason), _) => (OperationState::Failed, format!("{summary}; {reason}")),
                (None, true) => (OperationState::Cancelled, format!("cancelled; {summary}")),
                (None, false) => (state, summary),
            };
            op.end_time = Some(now);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn registry() -> (Operations, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(
            UNIX_EPOCH + Duration::from_secs(1_000_000),
        ));
        (Operations::new(clock.clone()), clock)
    }

    fn op(ops: &Operations, targets: &[&str]) -> Operation {
        let mut op = Operation::new("RestartWorkers", "ci", "why", "r1", ops.now());
        op.targets = targets
            .iter()
            .map(|w| TargetProgress {
                worker: w.to_string(),
                code: Outcome::Pending,
                message: String::new(),
                update_time: ops.now(),
                group: String::new(),
                instance: String::new(),
            })
            .collect();
        op
    }

    #[tokio::test]
    async fn watchers_see_progress_to_the_end() {
        let (ops, _) = registry();
        let handle = ops.create(op(&ops, &["a", "b"]));
        let mut rx = ops.watch(&handle.name()).unwrap();
        assert_eq!(rx.borrow_and_update().state, OperationState::Pending);
        handle.set_running();
        handle.target(0, Outcome::Applied, "restarted");
        handle.target(1, Outcome::Failed, "no answer");
        handle.finish(None);
        rx.changed().await.unwrap();
        let end = rx.borrow().clone();
        assert_eq!(end.state, OperationState::PartiallySucceeded);
        assert_eq!(end.done(), 2);
        assert!(end.end_time.is_some());
    }

    #[test]
    fn cancel_leaves_unstarted_targets_cancelled() {
        let (ops, _) = registry();
        let handle = ops.create(op(&ops, &["a", "b"]));
        handle.target(0, Outcome::Applied, "");
        ops.cancel(&handle.name(), false).unwrap();
        assert!(handle.cancelled().is_cancelled());
        handle.finish(None);
        let end = ops.get(&handle.name()).unwrap();
        assert_eq!(end.state, OperationState::Cancelled);
        assert_eq!(end.targets[1].code, Outcome::Cancelled);
        assert!(matches!(
            ops.cancel(&handle.name(), false),
            Err(CancelError::Done(OperationState::Cancelled))
        ));
    }

    #[test]
    fn listing_is_newest_first_filtered_and_paged() {
        let (ops, clock) = registry();
        let mut names = Vec::new();
        for i in 0..5 {
            clock.advance(Duration::from_millis(10));
            let mut o = op(&ops, &["a"]);
            o.request_id = format!("r{i}");
            names.push(ops.create(o).name());
        }
        let page = ops.list(&OperationQuery {
            limit: 2,
            ..Default::default()
        });
        assert_eq!(page[0].name, names[4]);
        assert_eq!(page[1].name, names[3]);
        let next = ops.list(&OperationQuery {
            limit: 10,
            before: Some(page[1].name.trim_start_matches("operations/").to_string()),
            ..Default::default()
        });
        assert_eq!(next.len(), 3);
        let by_id = ops.list(&OperationQuery {
            request_id: "r2".into(),
            limit: 10,
            ..Default::default()
        });
        assert_eq!(by_id.len(), 1);
        assert_eq!(by_id[0].name, names[2]);
    }

    #[test]
    fn ended_operations_are_swept_after_the_retention() {
        let (ops, clock) = registry();
        let h = ops.create(op(&ops, &["a"]));
        h.finish(None);
        clock.advance(RETENTION + Duration::from_secs(1));
        ops.create(op(&ops, &["b"]));
        assert!(ops.get(&h.name()).is_none());
    }
}
