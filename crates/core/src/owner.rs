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
    model::{BrokerStatus, FleetEvent, InspectRound, QueueDepth, Thresholds, Worker},
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
    Forget {
        name: String,
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
}

/// A cheap handle to the fleet owner.
#[derive(Clone)]
pub struct FleetHandle {
    inbox: mpsc::Sender<FleetMessage>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    changes: broadcast::Sender<Arc<FleetChange>>,
    clock: Arc<dyn Clock>,
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

    pub async fn forget(
        &self,
        name: &str,
    ) -> Result<Result<Arc<Worker>, ForgetError>, FleetStopped> {
        let (reply, rx) = oneshot::channel();
        self.observe(FleetMessage::Forget {
            name: name.to_string(),
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
    broker: watch::Receiver<BrokerStatus>,
    gauges: Arc<dyn FleetGauges>,
    cancel: CancellationToken,
) -> (FleetHandle, JoinHandle<()>) {
    let state = FleetState::new(clock.now());
    let (inbox, rx) = mpsc::channel(INBOX_CAPACITY);
    let (snapshot_tx, snapshots) = watch::channel(Arc::new(state.snapshot().clone()));
    let (changes, _) = broadcast::channel(WATCH_BUFFER);
    let owner = Owner {
        state,
        settings,
        clock: clock.clone(),
        broker,
        gauges,
        snapshot_tx,
        changes: changes.clone(),
    };
    let task = tokio::spawn(owner.run(rx, cancel));
    (
        FleetHandle {
            inbox,
            snapshots,
            changes,
            clock,
        },
        task,
    )
}

struct Owner {
    state: FleetState,
    settings: FleetSettings,
    clock: Arc<dyn Clock>,
    broker: watch::Receiver<BrokerStatus>,
    gauges: Arc<dyn FleetGauges>,
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
                changed = self.broker.changed() => {
                    if changed.is_err() {
                        // The probe stopped: only happens at shutdown.
                        cancel.cancelled().await;
                        break;
                    }
                    let status = self.broker.borrow_and_update().clone();
                    self.state.set_broker(status);
                }
                _ = tick.tick() => {
                    let now = self.clock.now();
                    // The probe refreshes last_ok without notifying; carry it into snapshots.
                    let status = self.broker.borrow().clone();
                    if status != self.state.snapshot().broker {
                        self.state.set_broker(status);
                    }
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
            FleetMessage::Forget { name, reply } => {
                let _ = reply.send(self.state.forget(&name));
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
            self.gauges.set_workers(self.state.snapshot().workers.len());
            self.force_publish();
        }
        for change in changes {
            // No receivers is fine: nobody is watching.
            let _ = self.changes.send(change);
        }
        self.state.snapshot().revision
    }
}
