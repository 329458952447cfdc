//! The single owner of the live fleet state.
//!
//! Observers send [`FleetMessage`]s on a bounded channel. The owner applies them in batches,
//! then publishes one snapshot (a `watch`) and the batch's changes (a `broadcast`). Readers
//! only ever clone the latest snapshot: they never wait on the ingest path.
use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::{
    clock::Clock,
    model::{
        FleetEvent, InspectRound, LeaseRound, QueueDepth, SourceStatus, Thresholds, Worker,
        WorkerKey,
    },
    state::{FleetChange, FleetState, ForgetError, Snapshot},
};
use crate::ports::FleetGauges;

/// Capacity of the observation channel; observers wait (backpressure) when it is full.
const INBOX_CAPACITY: usize = 4096;
/// Changes buffered per watcher before it is declared lagging and resynchronised.
pub const WATCH_BUFFER: usize = 4096;
/// Most messages applied before a snapshot is published.
const BATCH: usize = 1024;

pub enum FleetMessage {
    Inspect(InspectRound),
    Events(Vec<FleetEvent>),
    Queues(Vec<QueueDepth>),
    /// One poll of a lease-based backend (Redis Streams heartbeats and consumer groups).
    Leases(LeaseRound),
    /// A source of observations was probed (sent on every probe, so that `last_ok` moves).
    Source(SourceStatus),
    /// One successful collection of a metric source: the workers it was asked about, and
    /// its samples.
    Samples {
        source: &'static str,
        asked: Vec<WorkerKey>,
        samples: Vec<crate::model::Sample>,
    },
    /// The health engine's verdicts of one cycle.
    Health(Vec<(WorkerKey, crate::model::Health)>),
    /// Workers remembered from history (at boot).
    Remember(Vec<crate::history::KnownWorker>),
    /// From now on, send a sampling tick for history every `every` (the latest subscriber
    /// replaces an earlier one). A tick the subscriber cannot take at once is dropped and
    /// counted, never waited for: the owner must not stall on a slow store.
    SubscribeSamples {
        every: Duration,
        sender: mpsc::Sender<crate::history::SampleBatch>,
    },
    Forget {
        key: WorkerKey,
        reply: oneshot::Sender<Result<Arc<Worker>, ForgetError>>,
    },
    /// Answered once every message sent before it is applied and published.
    Barrier(oneshot::Sender<u64>),
}

#[derive(Debug, Clone, Copy)]
pub struct FleetSettings {
    pub thresholds: Thresholds,
    /// How often activity and lifecycle are re-derived from the clock.
    pub evaluate_every: Duration,
    /// Most workers known at once; a new worker beyond it is refused and counted, so that
    /// forged messages cannot grow memory without bound.
    pub max_workers: usize,
}

/// A cheap handle to the fleet owner.
#[derive(Clone)]
pub struct FleetHandle {
    inbox: mpsc::Sender<FleetMessage>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    changes: broadcast::Sender<Arc<FleetChange>>,
    clock: Arc<dyn Clock>,
    /// Fires when the owner stops (shutdown): ends every watch.
    stopped: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
#[error("the fleet owner has stopped")]
pub struct FleetStopped;

impl FleetHandle {
    /// The latest published snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// Subscribes to changes, then reads the snapshot: every change after the snapshot's
    /// revision will arrive on the receiver.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<FleetChange>>, Arc<Snapshot>) {
        let receiver = self.changes.subscribe();
        (receiver, self.snapshot())
    }

    /// A receiver of snapshot publications (for waiting on a condition).
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub async fn observe(&self, message: FleetMessage) -> Result<(), FleetStopped> {
        self.inbox.send(message).await.map_err(|_| FleetStopped)
    }

    /// Waits until everything observed before this call is visible in the snapshot.
    pub async fn barrier(&self) -> Result<u64, FleetStopped> {
        let (tx, rx) = oneshot::channel();
        self.observe(FleetMessage::Barrier(tx)).await?;
        rx.await.map_err(|_| FleetStopped)
    }

    /// Fires when the owner stops.
    pub fn stopped(&self) -> &CancellationToken {
        &self.stopped
    }

    pub async fn forget(
        &self,
        key: &WorkerKey,
    ) -> Result<Result<Arc<Worker>, ForgetError>, FleetStopped> {
        let (reply, rx) = oneshot::channel();
        self.observe(FleetMessage::Forget {
            key: key.clone(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| FleetStopped)
    }
}

/// Starts the owner task. It stops when `cancel` fires.
pub fn spawn(
    settings: FleetSettings,
    clock: Arc<dyn Clock>,
    gauges: Arc<dyn FleetGauges>,
    cancel: CancellationToken,
) -> (FleetHandle, JoinHandle<()>) {
    let state = FleetState::with_limits(clock.now(), new_epoch(), settings.max_workers);
    let (inbox, rx) = mpsc::channel(INBOX_CAPACITY);
    let (snapshot_tx, snapshots) = watch::channel(Arc::new(state.snapshot().clone()));
    let (changes, _) = broadcast::channel(WATCH_BUFFER);
    let stopped = cancel.child_token();
    let owner = Owner {
        state,
        settings,
        clock: clock.clone(),
        gauges,
        refusals_logged: 0,
        sampling: None,
        samples_dropped: 0,
        snapshot_tx,
        changes: changes.clone(),
    };
    let done = stopped.clone();
    let task = tokio::spawn(async move {
        owner.run(rx, cancel).await;
        // Dropping the owner closes the change channel too; watchers see both.
        done.cancel();
    });
    (
        FleetHandle {
            inbox,
            snapshots,
            changes,
            clock,
            stopped,
        },
        task,
    )
}

/// The next sampling tick, or never when nobody subscribed.
async fn sample_tick(
    sampling: &mut Option<(
        tokio::time::Interval,
        mpsc::Sender<crate::history::SampleBatch>,
    )>,
) {
    match sampling {
        Some((tick, _)) => {
            tick.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A number that differs between two lives of the process (and between replicas), so that
/// a resume token from another life is never taken for one of this life. Random, from the
/// standard library's per-process hasher keys.
fn new_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish() | 1
}

struct Owner {
    state: FleetState,
    settings: FleetSettings,
    clock: Arc<dyn Clock>,
    gauges: Arc<dyn FleetGauges>,
    /// Refusals at the known-worker cap already logged.
    refusals_logged: u64,
    /// History's sampling subscription.
    sampling: Option<(
        tokio::time::Interval,
        mpsc::Sender<crate::history::SampleBatch>,
    )>,
    /// Sampling ticks dropped because the subscriber was busy.
    samples_dropped: u64,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    changes: broadcast::Sender<Arc<FleetChange>>,
}

impl Owner {
    async fn run(mut self, mut rx: mpsc::Receiver<FleetMessage>, cancel: CancellationToken) {
        let mut tick = crate::clock::ticker(self.settings.evaluate_every);
        let mut barriers = Vec::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                message = rx.recv() => {
                    let Some(message) = message else { break };
                    self.apply(message, &mut barriers);
                    for _ in 1..BATCH {
                        match rx.try_recv() {
                            Ok(message) => self.apply(message, &mut barriers),
                            Err(_) => break,
                        }
                    }
                }
                _ = sample_tick(&mut self.sampling) => {
                    let batch = self.state.take_samples(self.clock.now());
                    if let Some((_, sender)) = &self.sampling {
                        match sender.try_send(batch) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                self.samples_dropped += 1;
                                tracing::warn!(
                                    dropped = self.samples_dropped,
                                    "history is behind: a sampling tick was dropped"
                                );
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => self.sampling = None,
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = self.clock.now();
                    self.state.summarise_tasks(now, self.settings.thresholds);
                    self.state.evaluate_all(now, self.settings.thresholds);
                }
            }
            let revision = self.publish();
            for barrier in barriers.drain(..) {
                let _ = barrier.send(revision);
            }
        }
    }

    fn apply(&mut self, message: FleetMessage, barriers: &mut Vec<oneshot::Sender<u64>>) {
        let now = self.clock.now();
        match message {
            FleetMessage::Inspect(round) => {
                self.state
                    .apply_inspect(&round, now, self.settings.thresholds)
            }
            FleetMessage::Events(events) => {
                for event in events {
                    self.state.apply_event(event, now, self.settings.thresholds);
                }
            }
            FleetMessage::Queues(depths) => self.state.apply_queues(depths, now),
            FleetMessage::Leases(round) => {
                self.state
                    .apply_leases(round, now, self.settings.thresholds)
            }
            FleetMessage::Source(status) => self.state.set_source(status),
            FleetMessage::Samples {
                source,
                asked,
                samples,
            } => self.state.apply_samples(source, &asked, samples),
            FleetMessage::Health(verdicts) => self.state.apply_health(verdicts),
            FleetMessage::Remember(workers) => {
                self.state.remember(workers, now);
                self.state.evaluate_all(now, self.settings.thresholds);
            }
            FleetMessage::SubscribeSamples { every, sender } => {
                let mut tick = crate::clock::ticker(every);
                // The first tick of an interval is immediate; history's first tick is not.
                tick.reset();
                self.sampling = Some((tick, sender));
            }
            FleetMessage::Forget { key, reply } => {
                let _ = reply.send(self.state.forget(&key));
            }
            FleetMessage::Barrier(reply) => barriers.push(reply),
        }
    }

    fn force_publish(&mut self) {
        self.snapshot_tx
            .send_replace(Arc::new(self.state.snapshot().clone()));
    }

    /// Commits pending changes; publishes the snapshot if anything changed, then the changes.
    fn publish(&mut self) -> u64 {
        let changes = self.state.commit(self.clock.now());
        if self.state.take_dirty() {
            let snapshot = self.state.snapshot();
            self.gauges.set_workers(snapshot.workers.len());
            self.gauges.set_workers_refused(snapshot.workers_refused);
            if snapshot.workers_refused > self.refusals_logged {
                // Logged at the first refusal and at every tenfold after it, not per message.
                if self.refusals_logged == 0
                    || snapshot.workers_refused >= self.refusals_logged * 10
                {
                    tracing::warn!(
                        refused = snapshot.workers_refused,
                        max_workers = self.settings.max_workers,
                        "known-worker cap reached: new workers are refused (max_workers)"
                    );
                    self.refusals_logged = snapshot.workers_refused;
                }
            }
            self.force_publish();
        }
        for change in changes {
            // No receivers is fine: nobody is watching.
            let _ = self.changes.send(change);
        }
        self.state.snapshot().revision
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::{
        clock::ManualClock,
        model::{Backend, EventPayload, TaskObservation, TaskOutcome},
        ports::NoGauges,
    };

    /// A worker watched for 34 s that finished one task a second shows 60 per minute in
    /// every window, over a covered span of 34 s: not a fifth or a hundredth of its rate.
    #[tokio::test]
    async fn throughput_of_a_young_worker_is_its_real_rate() {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let cancel = CancellationToken::new();
        let (fleet, _task) = spawn(
            FleetSettings {
                thresholds: Thresholds {
                    warning: Duration::from_secs(30),
                    critical: Duration::from_secs(60),
                },
                evaluate_every: Duration::from_millis(10),
                max_workers: 10,
            },
            Arc::new(clock.clone()),
            Arc::new(NoGauges),
            cancel.clone(),
        );
        let key = WorkerKey::new(Backend::Celery, "default", "young@h");
        let event = |i: u32, outcome| FleetEvent {
            worker: key.clone(),
            payload: EventPayload::Task(TaskObservation {
                outcome,
                id: format!("t{i}"),
                name: Some("app.add".into()),
                timestamp: None,
                runtime: Some(Duration::from_millis(100)),
            }),
        };
        fleet
            .observe(FleetMessage::Events(vec![event(0, TaskOutcome::Received)]))
            .await
            .unwrap();
        // Applied at the clock's current time: wait for it before the clock moves.
        fleet.barrier().await.unwrap();
        for i in 1..=34 {
            clock.advance(Duration::from_secs(1));
            fleet
                .observe(FleetMessage::Events(vec![event(i, TaskOutcome::Succeeded)]))
                .await
                .unwrap();
            fleet.barrier().await.unwrap();
        }
        // The owner folds task statistics into the snapshot on its tick.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let stats = loop {
            fleet.barrier().await.unwrap();
            let stats = fleet
                .snapshot()
                .workers
                .get(&key)
                .and_then(|w| w.task_stats.clone());
            if let Some(stats) = stats.filter(|s| s.overall[0].counts.succeeded == 34) {
                break stats;
            }
            assert!(tokio::time::Instant::now() < deadline, "no summary in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        for window in &stats.overall {
            assert_eq!(window.covered(), Duration::from_secs(34), "{window:?}");
            assert!(
                (window.throughput_per_min() - 60.0).abs() < 1e-9,
                "{window:?}"
            );
        }
        cancel.cancel();
    }
}
