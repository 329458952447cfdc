//! Watching the fleet: a snapshot, then revisioned changes, for every kind of subscriber (the
//! gRPC stream, the history writer, the alert engine) with one set of rules:
//! - a filter is applied per watcher; a worker that starts or stops matching it arrives as
//!   added or removed;
//! - a position (epoch + revision) resumes a watch without a gap or a repeat; a position from
//!   another life of the process, or one no longer buffered, gets a fresh snapshot saying why;
//! - a watcher that falls behind gets a fresh snapshot, never silently missing changes;
//! - a bookmark carries the current position when nothing else was sent for a while, so that
//!   a quiet, filtered watcher does not fall out of the replay buffer;
//! - the watch ends (`None`) when the fleet owner stops.
use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::{
    filter::WorkerFilter,
    model::{QueueInfo, Worker, WorkerKey},
    owner::FleetHandle,
    state::{ChangeKind, FleetChange, Snapshot},
};

/// Where a watcher is: the process life (epoch) and the last revision it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub epoch: u64,
    pub revision: u64,
}

/// Why a snapshot was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotReason {
    /// The first message of a new watch.
    Initial,
    /// The watcher asked to resume from a revision that is no longer buffered.
    ResumeUnavailable,
    /// The watcher fell behind; this snapshot replaces the changes it missed.
    Resync,
    /// The position came from another life of the process (or another replica).
    EpochChanged,
}

/// Default time between bookmarks on a quiet watch.
pub const DEFAULT_BOOKMARK_EVERY: Duration = Duration::from_secs(15);

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub filter: WorkerFilter,
    /// Resume after this position; `None` starts with a snapshot.
    pub resume: Option<Position>,
    pub include_queues: bool,
    pub bookmark_every: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            filter: WorkerFilter::default(),
            resume: None,
            include_queues: false,
            bookmark_every: DEFAULT_BOOKMARK_EVERY,
        }
    }
}

/// One thing a watcher learns.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// The whole (filtered) fleet.
    Snapshot {
        reason: SnapshotReason,
        workers: Vec<Arc<Worker>>,
        queues: Vec<Arc<QueueInfo>>,
    },
    /// A worker appeared, or newly matches the filter.
    WorkerAdded(Arc<Worker>),
    WorkerUpdated(Arc<Worker>),
    /// A worker was forgotten, or no longer matches the filter.
    WorkerRemoved(WorkerKey),
    QueueUpdated(Arc<QueueInfo>),
    /// Nothing happened that this watcher sees; here is the current position.
    Bookmark,
}

/// An event with the position it leaves the watcher at.
#[derive(Debug, Clone)]
pub struct WatchItem {
    pub position: Position,
    /// When the change happened (for a bookmark: now).
    pub at: SystemTime,
    pub event: WatchEvent,
    /// The latest snapshot when the item was made: source status, for freshness.
    pub snapshot: Arc<Snapshot>,
}

/// A live watch; call [`Watch::next`] until it returns `None`.
pub struct Watch {
    fleet: FleetHandle,
    options: WatchOptions,
    changes: broadcast::Receiver<Arc<FleetChange>>,
    /// The workers this watcher currently holds (those that matched when last sent).
    held: HashSet<WorkerKey>,
    epoch: u64,
    revision: u64,
    /// Items decided but not yet returned (the start of a watch may produce many).
    pending: std::collections::VecDeque<WatchItem>,
    last_sent: tokio::time::Instant,
    stopped: CancellationToken,
}

impl FleetHandle {
    /// Starts watching: subscribes first, then reads the snapshot, so that no change falls
    /// between the two.
    pub fn watch(&self, options: WatchOptions) -> Watch {
        let (changes, snapshot) = self.subscribe();
        let mut watch = Watch {
            fleet: self.clone(),
            changes,
            held: HashSet::new(),
            epoch: snapshot.epoch,
            revision: 0,
            pending: Default::default(),
            last_sent: tokio::time::Instant::now(),
            stopped: self.stopped().clone(),
            options,
        };
        watch.start(snapshot);
        watch
    }
}

impl Watch {
    fn start(&mut self, snapshot: Arc<Snapshot>) {
        let reason = match self.options.resume {
            None => SnapshotReason::Initial,
            Some(from) if from.epoch != snapshot.epoch => SnapshotReason::EpochChanged,
            Some(from) => match snapshot.changes_since(from.revision) {
                Some(replay) => {
                    self.revision = from.revision;
                    // The watcher holds the state as of its revision: rebuild which workers
                    // it has from the snapshot, undoing the changes it has not seen.
                    self.held = self.matching(&snapshot);
                    for change in replay.iter().rev() {
                        match &change.kind {
                            ChangeKind::WorkerAdded(w) => {
                                self.held.remove(&w.key);
                            }
                            ChangeKind::WorkerRemoved(key) => {
                                self.held.insert(key.clone());
                            }
                            ChangeKind::WorkerUpdated(_) | ChangeKind::QueueUpdated(_) => {}
                        }
                    }
                    for change in replay {
                        if let Some(item) = self.change(&change, &snapshot) {
                            self.pending.push_back(item);
                        }
                    }
                    // Replayed changes the filter hid still moved the position.
                    self.revision = snapshot.revision;
                    return;
                }
                None => SnapshotReason::ResumeUnavailable,
            },
        };
        let item = self.snapshot(snapshot, reason);
        self.pending.push_back(item);
    }

    /// The next item; `None` once the fleet owner has stopped (shutdown).
    pub async fn next(&mut self) -> Option<WatchItem> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                self.last_sent = tokio::time::Instant::now();
                return Some(item);
            }
            let bookmark_due = self.last_sent + self.options.bookmark_every;
            let received = tokio::select! {
                biased;
                _ = self.stopped.cancelled() => return None,
                received = self.changes.recv() => received,
                _ = tokio::time::sleep_until(bookmark_due) => {
                    let snapshot = self.fleet.snapshot();
                    self.last_sent = tokio::time::Instant::now();
                    return Some(WatchItem {
                        position: self.position(),
                        at: self.fleet.clock().now(),
                        event: WatchEvent::Bookmark,
                        snapshot,
                    });
                }
            };
            match received {
                Ok(change) => {
                    if change.revision <= self.revision {
                        continue;
                    }
                    let latest = self.fleet.snapshot();
                    match self.change(&change, &latest) {
                        Some(item) => self.pending.push_back(item),
                        // Filtered out: the position still moved.
                        None => self.revision = change.revision,
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let latest = self.fleet.snapshot();
                    let item = self.snapshot(latest, SnapshotReason::Resync);
                    self.pending.push_back(item);
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Where this watcher is now.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            revision: self.revision,
        }
    }

    fn matching(&self, snapshot: &Snapshot) -> HashSet<WorkerKey> {
        snapshot
            .workers
            .values()
            .filter(|w| self.options.filter.matches(w))
            .map(|w| w.key.clone())
            .collect()
    }

    fn snapshot(&mut self, snapshot: Arc<Snapshot>, reason: SnapshotReason) -> WatchItem {
        self.held = self.matching(&snapshot);
        self.epoch = snapshot.epoch;
        self.revision = snapshot.revision;
        let workers = snapshot
            .workers
            .values()
            .filter(|w| self.held.contains(&w.key))
            .cloned()
            .collect();
        let queues = if self.options.include_queues {
            snapshot.queues.values().cloned().collect()
        } else {
            Vec::new()
        };
        WatchItem {
            position: self.position(),
            at: snapshot.at,
            event: WatchEvent::Snapshot {
                reason,
                workers,
                queues,
            },
            snapshot,
        }
    }

    /// The item for one change as this watcher sees it through its filter, if any.
    fn change(&mut self, change: &FleetChange, latest: &Arc<Snapshot>) -> Option<WatchItem> {
        let event = match &change.kind {
            ChangeKind::WorkerAdded(w) | ChangeKind::WorkerUpdated(w) => {
                let matches = self.options.filter.matches(w);
                match (self.held.contains(&w.key), matches) {
                    (false, true) => {
                        self.held.insert(w.key.clone());
                        WatchEvent::WorkerAdded(w.clone())
                    }
                    (true, true) => WatchEvent::WorkerUpdated(w.clone()),
                    (true, false) => {
                        self.held.remove(&w.key);
                        WatchEvent::WorkerRemoved(w.key.clone())
                    }
                    (false, false) => return None,
                }
            }
            ChangeKind::QueueUpdated(queue) => {
                if !self.options.include_queues {
                    return None;
                }
                WatchEvent::QueueUpdated(queue.clone())
            }
            ChangeKind::WorkerRemoved(key) => {
                if !self.held.remove(key) {
                    return None;
                }
                WatchEvent::WorkerRemoved(key.clone())
            }
        };
        self.revision = change.revision;
        Some(WatchItem {
            position: self.position(),
            at: change.at,
            event,
            snapshot: latest.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::{
        clock::ManualClock,
        model::{Backend, InspectReport, InspectRound, Thresholds},
        owner::{FleetMessage, FleetSettings, spawn},
        ports::NoGauges,
    };

    const DEADLINE: Duration = Duration::from_secs(5);

    fn fleet() -> (FleetHandle, CancellationToken) {
        let cancel = CancellationToken::new();
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let (fleet, _task) = spawn(
            FleetSettings {
                thresholds: Thresholds {
                    warning: Duration::from_secs(30),
                    critical: Duration::from_secs(60),
                },
                evaluate_every: Duration::from_secs(3600),
                max_workers: 100,
            },
            Arc::new(clock),
            Arc::new(NoGauges),
            cancel.clone(),
        );
        (fleet, cancel)
    }

    async fn announce(fleet: &FleetHandle, ids: &[&str]) {
        let round = InspectRound {
            backend: Backend::Celery,
            scope: Arc::from("default"),
            started_at: fleet.clock().now(),
            targets: Some(ids.iter().map(|s| s.to_string()).collect()),
            reports: ids
                .iter()
                .map(|id| InspectReport {
                    name: id.to_string(),
                    ping: true,
                    ..InspectReport::default()
                })
                .collect(),
        };
        fleet.observe(FleetMessage::Inspect(round)).await.unwrap();
        fleet.barrier().await.unwrap();
    }

    async fn next(watch: &mut Watch) -> WatchItem {
        tokio::time::timeout(DEADLINE, watch.next())
            .await
            .expect("an item within the deadline")
            .expect("the watch is still open")
    }

    fn glob(pattern: &str) -> WorkerFilter {
        WorkerFilter {
            name_glob: Some(WorkerFilter::glob(pattern).unwrap()),
            ..WorkerFilter::default()
        }
    }

    #[tokio::test]
    async fn a_filtered_quiet_watch_gets_bookmarks_that_move_its_position() {
        let (fleet, _cancel) = fleet();
        announce(&fleet, &["a@h", "b@h"]).await;
        let mut watch = fleet.watch(WatchOptions {
            filter: glob("a*"),
            bookmark_every: Duration::from_millis(50),
            ..WatchOptions::default()
        });
        let first = next(&mut watch).await;
        let WatchEvent::Snapshot {
            reason, workers, ..
        } = &first.event
        else {
            panic!("{first:?}")
        };
        assert_eq!(*reason, SnapshotReason::Initial);
        assert_eq!(workers.len(), 1);
        assert_eq!(&*workers[0].key.id, "a@h");
        // A change the filter hides: nothing but a bookmark, at the new revision.
        announce(&fleet, &["c@h"]).await;
        let bookmark = next(&mut watch).await;
        assert!(
            matches!(bookmark.event, WatchEvent::Bookmark),
            "{bookmark:?}"
        );
        assert_eq!(bookmark.position.revision, fleet.snapshot().revision);
        assert!(bookmark.position.revision > first.position.revision);
    }

    #[tokio::test]
    async fn resume_replays_within_the_epoch_and_snapshots_across_epochs() {
        let (fleet, _cancel) = fleet();
        announce(&fleet, &["a@h"]).await;
        let position = fleet.snapshot().epoch;
        let at = Position {
            epoch: position,
            revision: fleet.snapshot().revision,
        };
        announce(&fleet, &["b@h"]).await;
        // Same epoch: the change after the position, and no snapshot.
        let mut resumed = fleet.watch(WatchOptions {
            resume: Some(at),
            ..WatchOptions::default()
        });
        let item = next(&mut resumed).await;
        match &item.event {
            WatchEvent::WorkerAdded(w) => assert_eq!(&*w.key.id, "b@h"),
            other => panic!("{other:?}"),
        }
        // A position of another life of the process: a snapshot saying so.
        let mut other_life = fleet.watch(WatchOptions {
            resume: Some(Position {
                epoch: at.epoch ^ 0xff,
                revision: at.revision,
            }),
            ..WatchOptions::default()
        });
        let item = next(&mut other_life).await;
        match &item.event {
            WatchEvent::Snapshot {
                reason, workers, ..
            } => {
                assert_eq!(*reason, SnapshotReason::EpochChanged);
                assert_eq!(workers.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        // A revision no longer (or never) buffered.
        let mut ahead = fleet.watch(WatchOptions {
            resume: Some(Position {
                epoch: at.epoch,
                revision: at.revision + 1000,
            }),
            ..WatchOptions::default()
        });
        let item = next(&mut ahead).await;
        assert!(matches!(
            item.event,
            WatchEvent::Snapshot {
                reason: SnapshotReason::ResumeUnavailable,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn the_watch_ends_when_the_owner_stops() {
        let (fleet, cancel) = fleet();
        let mut watch = fleet.watch(WatchOptions::default());
        next(&mut watch).await;
        cancel.cancel();
        let end = tokio::time::timeout(DEADLINE, watch.next()).await.unwrap();
        assert!(end.is_none());
    }
}
