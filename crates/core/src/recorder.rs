//! The history recorder: a subscriber of the fleet that writes samples, events and known
//! workers to the history store, without ever stalling ingestion.
//!
//! - Samples come from the owner's sampling ticks (a subscription the owner never waits
//!   on); events and known-worker updates from the fleet's `watch`, like any subscriber.
//! - Writes are batched (one transaction per flush). When the store is down, batches wait in
//!   a bounded buffer (rows; the oldest batches are dropped first, counted and logged) and
//!   are written when it returns; the store's status is reported as a source (`store`) that
//!   no worker depends on, so an outage never marks live data stale.
//! - Events that do not come from the fleet (control actions, operations, alerts) arrive
//!   through the [`journal`](crate::journal) and are written with the rest.
//! - At start, the workers the store remembers are handed to the fleet (UNKNOWN until heard
//!   from); a sweeper deletes what retention no longer keeps.
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    history::{
        AttrValue, EventKind, HistoryEvent, HistoryStore, KnownWorker, Retention, SampleBatch,
        Severity, StoreSize, WriteBatch,
    },
    journal::JournalInbox,
    model::{Backend, HealthStatus, Lifecycle, SourceStatus, Worker, WorkerKey},
    owner::{FleetHandle, FleetMessage},
    ports::{BoxFuture, PortError},
    watch::{SnapshotReason, WatchEvent, WatchOptions},
};

/// The name of the store's source status.
pub const STORE: &str = "store";

#[derive(Debug, Clone, PartialEq)]
pub struct RecorderSettings {
    /// How often workers, queues and groups are sampled.
    pub sample_every: Duration,
    /// How often pending events are written (samples are written as they come).
    pub flush_every: Duration,
    /// Most rows waiting while the store is down; the oldest batches go first beyond it.
    pub buffer_rows: usize,
    pub retention: Retention,
    /// How often the sweeper runs.
    pub sweep_every: Duration,
}

impl Default for RecorderSettings {
    fn default() -> Self {
        Self {
            sample_every: Duration::from_secs(30),
            flush_every: Duration::from_secs(1),
            buffer_rows: 500_000,
            retention: Retention::default(),
            sweep_every: Duration::from_secs(600),
        }
    }
}

/// Figures the recorder keeps current (implemented by the metrics registry).
pub trait RecorderGauges: Send + Sync + 'static {
    fn buffered_rows(&self, _rows: usize) {}
    fn rows_dropped(&self, _rows: u64) {}
    fn write(&self, _ok: bool, _rows: usize) {}
    fn store_size(&self, _size: &StoreSize) {}
}

/// Gauges nobody reads.
pub struct NoRecorderGauges;
impl RecorderGauges for NoRecorderGauges {}

/// Runs until `cancel`; flushes what it can on the way out.
pub async fn run(
    fleet: FleetHandle,
    store: Arc<dyn HistoryStore>,
    settings: RecorderSettings,
    gauges: Arc<dyn RecorderGauges>,
    mut journal: JournalInbox,
    cancel: CancellationToken,
) {
    let mut journal_open = true;
    let (sample_every, flush_every, sweep_every) = (
        settings.sample_every,
        settings.flush_every,
        settings.sweep_every,
    );
    let mut recorder = Recorder {
        fleet: fleet.clone(),
        store,
        settings,
        gauges,
        pending: WriteBatch::default(),
        buffer: VecDeque::new(),
        buffered_rows: 0,
        dropped_rows: 0,
        lifecycles: HashMap::new(),
        healths: HashMap::new(),
        group_alive: HashMap::new(),
        store_up: None,
        last_ok: None,
    };
    // Watch first, so that nothing that happens while the store is reached is missed.
    let mut watch = fleet.watch(WatchOptions::default());
    let mut remembered = recorder.remember().await;
    // Room for a minute of ticks at 1 s: the recorder never waits on the store while
    // receiving, but a sweep or a first connection may take a store timeout.
    let (samples_tx, mut samples) = mpsc::channel(64);
    if fleet
        .observe(FleetMessage::SubscribeSamples {
            every: sample_every,
            sender: samples_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let mut flush = crate::clock::ticker(flush_every);
    let mut sweep = crate::clock::ticker(sweep_every);
    // The write of the oldest buffered batch, when one is under way: polled beside the
    // inputs, so that a store that hangs for its timeout holds nothing else up.
    let mut in_flight: Option<InFlight> = None;
    // After a failed write, the next attempt waits for the next flush tick.
    let mut backing_off = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            batch = samples.recv() => {
                let Some(batch) = batch else { break };
                recorder.sampled(batch);
                recorder.enqueue(in_flight.is_some());
            }
            item = watch.next() => {
                let Some(item) = item else { break };
                recorder.observed(item.event, item.at);
            }
            event = journal.recv(), if journal_open => match event {
                Some(event) => recorder.pending.events.push(event),
                None => journal_open = false,
            },
            result = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                in_flight = None;
                backing_off = !recorder.written(result).await;
            }
            _ = flush.tick() => {
                if !remembered {
                    remembered = recorder.remember().await;
                }
                recorder.enqueue(in_flight.is_some());
                backing_off = false;
            }
            _ = sweep.tick() => recorder.sweep().await,
        }
        if in_flight.is_none() && !backing_off {
            in_flight = recorder.start_write();
        }
    }
    // What is left, bounded: shutdown must not hang on a dead store.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        if let Some(write) = in_flight.take()
            && !recorder.written(write.await).await
        {
            return;
        }
        recorder.enqueue(false);
        while let Some(write) = recorder.start_write() {
            if !recorder.written(write.await).await {
                return;
            }
        }
    })
    .await;
}

/// A write of the oldest buffered batch under way.
type InFlight = BoxFuture<'static, Result<(), PortError>>;

struct Recorder {
    fleet: FleetHandle,
    store: Arc<dyn HistoryStore>,
    settings: RecorderSettings,
    gauges: Arc<dyn RecorderGauges>,
    /// What accumulates until the next flush.
    pending: WriteBatch,
    /// Batches the store did not take yet, oldest first.
    buffer: VecDeque<WriteBatch>,
    buffered_rows: usize,
    dropped_rows: u64,
    /// Each worker's last lifecycle seen, to turn changes into events.
    lifecycles: HashMap<WorkerKey, Lifecycle>,
    /// Each worker's last health status, to record its changes.
    healths: HashMap<WorkerKey, HealthStatus>,
    /// Each group's alive workers at the last tick, for scaling events.
    group_alive: HashMap<(Backend, Arc<str>), u32>,
    /// The store's status as last reported (None: not yet).
    store_up: Option<bool>,
    last_ok: Option<SystemTime>,
}

impl Recorder {
    /// Hands the workers the store remembers to the fleet (those it does not know yet);
    /// returns false while the store is down, to be tried again at the next flush: nothing
    /// else waits for it.
    async fn remember(&mut self) -> bool {
        match self.store.known_workers().await {
            Ok(known) => {
                if !known.is_empty() {
                    info!(workers = known.len(), "remembered workers from history");
                }
                for k in &known {
                    self.lifecycles.entry(k.key.clone()).or_insert(k.lifecycle);
                }
                let _ = self.fleet.observe(FleetMessage::Remember(known)).await;
                self.report(true, String::new()).await;
                true
            }
            Err(err) => {
                self.report(false, err.to_string()).await;
                false
            }
        }
    }

    fn sampled(&mut self, batch: SampleBatch) {
        let now = batch
            .workers
            .first()
            .map(|s| s.at)
            .or_else(|| batch.groups.first().map(|g| g.at))
            .unwrap_or_else(|| self.fleet.clock().now());
        for g in &batch.groups {
            let key = (g.backend, g.group.clone());
            if let Some(before) = self.group_alive.insert(key, g.alive)
                && before != g.alive
            {
                self.pending.events.push(HistoryEvent {
                    at: now,
                    kind: EventKind::Scaling,
                    severity: if g.alive < before {
                        Severity::Warning
                    } else {
                        Severity::Info
                    },
                    worker: None,
                    group: Some(g.group.to_string()),
                    message: format!(
                        "group {} scaled {} from {before} to {} alive workers",
                        g.group,
                        if g.alive > before { "up" } else { "down" },
                        g.alive
                    ),
                    attributes: vec![
                        ("before".into(), AttrValue::Int(i64::from(before))),
                        ("after".into(), AttrValue::Int(i64::from(g.alive))),
                    ],
                });
            }
        }
        // Known workers are refreshed every tick (last seen moves), by key.
        let snapshot = self.fleet.snapshot();
        self.pending.workers = snapshot.workers.values().map(|w| known(w)).collect();
        self.pending.samples.workers.extend(batch.workers);
        self.pending.samples.queues.extend(batch.queues);
        self.pending.samples.groups.extend(batch.groups);
    }

    /// Turns a fleet change into events and known-worker updates.
    fn observed(&mut self, event: WatchEvent, at: SystemTime) {
        match event {
            WatchEvent::Snapshot {
                reason, workers, ..
            } => {
                // A resynchronisation may hide changes: compare with what was known.
                for w in &workers {
                    let before = self.lifecycles.get(&w.key).copied();
                    if reason != SnapshotReason::Initial || before.is_some() {
                        self.transition(w, before, at);
                    } else {
                        self.lifecycles.insert(w.key.clone(), w.lifecycle);
                    }
                }
            }
            WatchEvent::WorkerAdded(w) => {
                let before = self.lifecycles.get(&w.key).copied();
                if before.is_none() {
                    self.pending.events.push(event_for(
                        &w,
                        at,
                        Severity::Info,
                        format!("worker {} appeared", w.id()),
                    ));
                }
                self.transition(&w, before, at);
            }
            WatchEvent::WorkerUpdated(w) => {
                let before = self.lifecycles.get(&w.key).copied();
                self.transition(&w, before, at);
            }
            WatchEvent::WorkerRemoved(key) => {
                self.lifecycles.remove(&key);
                self.healths.remove(&key);
                self.pending.forgotten.push(key.clone());
                self.pending.workers.retain(|k| k.key != key);
                self.pending.events.push(HistoryEvent {
                    at,
                    kind: EventKind::Lifecycle,
                    severity: Severity::Info,
                    message: format!("worker {} forgotten", key.id),
                    worker: Some(key),
                    group: None,
                    attributes: Vec::new(),
                });
            }
            WatchEvent::QueueUpdated(_) | WatchEvent::Bookmark => {}
        }
    }

    /// Records a health event when the worker's evaluated status changed (its first verdict
    /// counts as a change only when it is not HEALTHY: a healthy fleet writes no events).
    fn health_transition(&mut self, w: &Worker, at: SystemTime) {
        let Some(health) = &w.health else { return };
        let before = self.healths.insert(w.key.clone(), health.status);
        if before == Some(health.status)
            || (before.is_none() && health.status == HealthStatus::Healthy)
        {
            return;
        }
        let name = |s: HealthStatus| match s {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
        };
        let severity = match health.status {
            HealthStatus::Healthy => Severity::Info,
            HealthStatus::Warning => Severity::Warning,
            HealthStatus::Critical => Severity::Critical,
        };
        let reasons: Vec<&str> = health
            .findings
            .iter()
            .filter(|f| !f.error && f.status != HealthStatus::Healthy)
            .map(|f| f.message.as_str())
            .collect();
        let mut message = format!(
            "worker {} is {}",
            w.id(),
            name(health.status).to_uppercase()
        );
        if !reasons.is_empty() {
            message = format!("{message}: {}", reasons.join("; "));
        }
        let mut event = event_for(w, at, severity, message);
        event.kind = EventKind::Health;
        if let Some(before) = before {
            event
                .attributes
                .push(("from".into(), AttrValue::String(name(before).into())));
        }
        event
            .attributes
            .push(("to".into(), AttrValue::String(name(health.status).into())));
        event
            .attributes
            .push(("score".into(), AttrValue::Double(health.score)));
        self.pending.events.push(event);
    }

    /// Records an event when the worker's lifecycle changed from `before`.
    fn transition(&mut self, w: &Worker, before: Option<Lifecycle>, at: SystemTime) {
        self.health_transition(w, at);
        self.lifecycles.insert(w.key.clone(), w.lifecycle);
        if before == Some(w.lifecycle) {
            return;
        }
        let (severity, message) = match w.lifecycle {
            Lifecycle::Alive => (Severity::Info, format!("worker {} is online", w.id())),
            Lifecycle::Offline => (
                Severity::Info,
                format!("worker {} went offline (a clean shutdown)", w.id()),
            ),
            Lifecycle::Lost => (
                Severity::Critical,
                format!("worker {} was lost (silent without a goodbye)", w.id()),
            ),
            Lifecycle::Unknown => return,
        };
        let mut event = event_for(w, at, severity, message);
        if let Some(before) = before {
            event.attributes.push((
                "from".into(),
                AttrValue::String(lifecycle_name(before).into()),
            ));
        }
        event.attributes.push((
            "to".into(),
            AttrValue::String(lifecycle_name(w.lifecycle).into()),
        ));
        self.pending.events.push(event);
    }

    /// Moves what is pending into the buffer (bounded). `writing`: the oldest buffered batch
    /// is being written, so it is not the one to drop.
    fn enqueue(&mut self, writing: bool) {
        if !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            self.buffered_rows += batch.rows();
            self.buffer.push_back(batch);
            self.bound(writing);
        }
        self.gauges.buffered_rows(self.buffered_rows);
    }

    /// Starts writing the oldest buffered batch, if any.
    fn start_write(&self) -> Option<InFlight> {
        let batch = self.buffer.front()?.clone();
        let store = self.store.clone();
        Some(Box::pin(async move { store.write(&batch).await }))
    }

    /// Takes the outcome of the write of the oldest batch; returns whether it went through.
    async fn written(&mut self, result: Result<(), PortError>) -> bool {
        let rows = self.buffer.front().map_or(0, WriteBatch::rows);
        match result {
            Ok(()) => {
                self.buffer.pop_front();
                self.buffered_rows -= rows;
                self.gauges.write(true, rows);
                self.gauges.buffered_rows(self.buffered_rows);
                self.report(true, String::new()).await;
                true
            }
            Err(err) => {
                self.gauges.write(false, rows);
                self.report(false, err.to_string()).await;
                false
            }
        }
    }

    /// Keeps the buffer within its bound, dropping the oldest batches (counted, logged) but
    /// the one being written.
    fn bound(&mut self, writing: bool) {
        let keep = usize::from(writing);
        while self.buffered_rows > self.settings.buffer_rows && self.buffer.len() > keep + 1 {
            let Some(oldest) = self.buffer.remove(keep) else {
                break;
            };
            let rows = oldest.rows();
            self.buffered_rows -= rows;
            self.dropped_rows += rows as u64;
            self.gauges.rows_dropped(rows as u64);
            warn!(
                rows,
                dropped_total = self.dropped_rows,
                buffer_rows = self.settings.buffer_rows,
                "history buffer full while the store is down: the oldest rows were dropped"
            );
        }
    }

    async fn sweep(&mut self) {
        let now = self.fleet.clock().now();
        match self.store.sweep(now, self.settings.retention.clone()).await {
            Ok(report) => {
                let deleted: u64 = report.deleted.iter().map(|(_, n)| n).sum();
                if deleted > 0 {
                    info!(?report.deleted, "history retention sweep");
                }
            }
            Err(err) => warn!(%err, "history retention sweep failed"),
        }
        if let Ok(size) = self.store.size().await {
            self.gauges.store_size(&size);
        }
    }

    /// Reports the store's status to the fleet (no worker depends on it); logs changes.
    async fn report(&mut self, up: bool, reason: String) {
        if self.store_up != Some(up) {
            if up {
                info!(engine = self.store.engine(), "history store available");
            } else {
                warn!(engine = self.store.engine(), %reason, "history store unavailable; buffering");
            }
        }
        self.store_up = Some(up);
        let now = self.fleet.clock().now();
        if up {
            self.last_ok = Some(now);
        }
        let status = SourceStatus {
            source: STORE,
            backends: Vec::new(),
            connected: up,
            reason,
            last_ok: self.last_ok,
        };
        let _ = self.fleet.observe(FleetMessage::Source(status)).await;
    }
}

fn known(w: &Worker) -> KnownWorker {
    KnownWorker {
        key: w.key.clone(),
        group: w.group.clone(),
        first_seen: w.first_seen,
        last_seen: w.last_seen,
        lifecycle: w.lifecycle,
    }
}

fn event_for(w: &Worker, at: SystemTime, severity: Severity, message: String) -> HistoryEvent {
    HistoryEvent {
        at,
        kind: EventKind::Lifecycle,
        severity,
        worker: Some(w.key.clone()),
        group: (&*w.group != crate::model::UNGROUPED).then(|| w.group.to_string()),
        message,
        attributes: Vec::new(),
    }
}

fn lifecycle_name(l: Lifecycle) -> &'static str {
    match l {
        Lifecycle::Alive => "alive",
        Lifecycle::Offline => "offline",
        Lifecycle::Lost => "lost",
        Lifecycle::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Mutex,
            atomic::{AtomicBool, Ordering},
        },
        time::UNIX_EPOCH,
    };

    use super::*;
    use crate::{
        clock::ManualClock,
        history::{Bucket, EventQuery, SeriesQuery, StoredEvent, SweepReport},
        model::{EventPayload, FleetEvent, Thresholds, WorkerEvent, WorkerEventKind},
        owner::{FleetSettings, spawn},
        ports::{BoxFuture, NoGauges, PortError},
    };

    /// An in-memory store that can be switched off, for the recorder's own rules (the real
    /// engines are tested in crates/store and tests/it).
    #[derive(Default)]
    struct MemoryStore {
        down: AtomicBool,
        written: Mutex<Vec<WriteBatch>>,
        known: Mutex<Vec<KnownWorker>>,
    }

    impl HistoryStore for MemoryStore {
        fn engine(&self) -> &'static str {
            "memory"
        }
        fn write<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<(), PortError>> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err(PortError::Unavailable {
                        dependency: "store",
                        reason: "connection refused".into(),
                    });
                }
                self.written.lock().unwrap().push(batch.clone());
                Ok(())
            })
        }
        fn buckets<'a>(
            &'a self,
            _: &'a SeriesQuery,
        ) -> BoxFuture<'a, Result<Vec<Bucket>, PortError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn events<'a>(
            &'a self,
            _: &'a EventQuery,
        ) -> BoxFuture<'a, Result<Vec<StoredEvent>, PortError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn known_workers<'a>(&'a self) -> BoxFuture<'a, Result<Vec<KnownWorker>, PortError>> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err(PortError::Unavailable {
                        dependency: "store",
                        reason: "connection refused".into(),
                    });
                }
                Ok(self.known.lock().unwrap().clone())
            })
        }
        fn oldest<'a>(&'a self) -> BoxFuture<'a, Result<Option<SystemTime>, PortError>> {
            Box::pin(async { Ok(None) })
        }
        fn sweep<'a>(
            &'a self,
            _: SystemTime,
            _: Retention,
        ) -> BoxFuture<'a, Result<SweepReport, PortError>> {
            Box::pin(async { Ok(SweepReport::default()) })
        }
        fn size<'a>(&'a self) -> BoxFuture<'a, Result<StoreSize, PortError>> {
            Box::pin(async { Ok(StoreSize::default()) })
        }
    }

    const T: Thresholds = Thresholds {
        warning: Duration::from_secs(30),
        critical: Duration::from_secs(60),
    };

    async fn until<F: Fn() -> bool>(what: &str, check: F) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn heartbeat(id: &str, kind: WorkerEventKind) -> FleetMessage {
        FleetMessage::Events(vec![FleetEvent {
            worker: WorkerKey::new(Backend::Celery, "default", id),
            payload: EventPayload::Worker(WorkerEvent {
                kind,
                freq: Some(Duration::from_secs(2)),
                active: Some(0),
                processed: Some(0),
                load_average: None,
                software: None,
                pid: Some(1),
            }),
        }])
    }

    #[tokio::test]
    async fn an_outage_buffers_then_everything_is_written_in_order() {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let cancel = CancellationToken::new();
        let (fleet, _owner) = spawn(
            FleetSettings {
                thresholds: T,
                evaluate_every: Duration::from_millis(10),
                max_workers: 100,
            },
            Arc::new(clock.clone()),
            Arc::new(NoGauges),
            cancel.clone(),
        );
        let store = Arc::new(MemoryStore::default());
        store.down.store(true, Ordering::SeqCst);
        let settings = RecorderSettings {
            sample_every: Duration::from_millis(30),
            flush_every: Duration::from_millis(10),
            ..RecorderSettings::default()
        };
        // The store is down at start: the recorder waits for it without holding the fleet.
        let (journal, inbox) = crate::journal::Journal::channel(16);
        let recorder = tokio::spawn(run(
            fleet.clone(),
            store.clone(),
            settings,
            Arc::new(NoRecorderGauges),
            inbox,
            cancel.clone(),
        ));
        // An event from outside the fleet (a control action) waits with the rest.
        journal.record(HistoryEvent {
            at: crate::clock::Clock::now(&clock),
            kind: EventKind::Control,
            severity: Severity::Info,
            worker: None,
            group: None,
            message: "restart requested".into(),
            attributes: vec![],
        });
        // Reported once the recorder watches the fleet.
        until("the store reported down", || {
            fleet
                .snapshot()
                .sources
                .get(STORE)
                .is_some_and(|s| !s.connected)
        })
        .await;
        fleet
            .observe(heartbeat("a@h", WorkerEventKind::Online))
            .await
            .unwrap();
        fleet.barrier().await.unwrap();
        // Live reads are not stale for a store outage.
        assert!(fleet.snapshot().stale_sources(Backend::Celery).is_empty());
        store.down.store(false, Ordering::SeqCst);
        until("samples written", || {
            store
                .written
                .lock()
                .unwrap()
                .iter()
                .any(|b| !b.samples.workers.is_empty())
        })
        .await;
        // A crash while the store is down again: the LOST event waits, then arrives.
        store.down.store(true, Ordering::SeqCst);
        clock.advance(Duration::from_secs(120));
        until("a@h lost", || {
            fleet
                .snapshot()
                .workers
                .values()
                .any(|w| w.lifecycle == Lifecycle::Lost)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await; // outage lasts a few flushes
        let before = store.written.lock().unwrap().len();
        store.down.store(false, Ordering::SeqCst);
        until("the LOST event written", || {
            store.written.lock().unwrap().iter().any(|b| {
                b.events
                    .iter()
                    .any(|e| e.severity == Severity::Critical && e.message.contains("lost"))
            })
        })
        .await;
        let written = store.written.lock().unwrap().clone();
        assert!(written.len() > before, "buffered batches were written");
        // Sample times never go back: batches were written oldest first.
        let times: Vec<SystemTime> = written
            .iter()
            .flat_map(|b| b.samples.workers.iter().map(|s| s.at))
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        let online = written
            .iter()
            .flat_map(|b| &b.events)
            .filter(|e| e.message.contains("appeared"))
            .count();
        assert_eq!(online, 1, "one appearance");
        let journaled = written
            .iter()
            .flat_map(|b| &b.events)
            .filter(|e| e.kind == EventKind::Control && e.message == "restart requested")
            .count();
        assert_eq!(journaled, 1, "the journal's event, written once");
        cancel.cancel();
        let _ = recorder.await;
    }

    #[tokio::test]
    async fn a_change_of_health_status_is_an_event_and_a_steady_one_is_not() {
        use crate::model::{Finding, Health};
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let cancel = CancellationToken::new();
        let (fleet, _owner) = spawn(
            FleetSettings {
                thresholds: T,
                evaluate_every: Duration::from_millis(10),
                max_workers: 100,
            },
            Arc::new(clock.clone()),
            Arc::new(NoGauges),
            cancel.clone(),
        );
        let store = Arc::new(MemoryStore::default());
        let settings = RecorderSettings {
            sample_every: Duration::from_secs(3600),
            flush_every: Duration::from_millis(10),
            ..RecorderSettings::default()
        };
        let (_journal, inbox) = crate::journal::Journal::channel(16);
        let recorder = tokio::spawn(run(
            fleet.clone(),
            store.clone(),
            settings,
            Arc::new(NoRecorderGauges),
            inbox,
            cancel.clone(),
        ));
        fleet
            .observe(heartbeat("a@h", WorkerEventKind::Online))
            .await
            .unwrap();
        let key = WorkerKey::new(Backend::Celery, "default", "a@h");
        let verdict = |status, score: f64, n: u64| Health {
            status,
            score,
            findings: if status == HealthStatus::Healthy {
                vec![]
            } else {
                vec![Finding {
                    check: "cpu",
                    status,
                    message: "cpu 96 % (critical at 95 %)".into(),
                    observed: 96.0,
                    threshold: 95.0,
                    unit: "percent",
                    error: false,
                }]
            },
            passing: vec!["heartbeat"],
            evaluated_at: UNIX_EPOCH + Duration::from_secs(n),
        };
        let health_events = || {
            store
                .written
                .lock()
                .unwrap()
                .iter()
                .flat_map(|b| b.events.clone())
                .filter(|e| e.kind == EventKind::Health)
                .collect::<Vec<_>>()
        };
        // Healthy at first: nothing. The same verdict again: nothing. Critical: one event.
        for (n, status, score) in [
            (1, HealthStatus::Healthy, 1.0),
            (2, HealthStatus::Healthy, 1.0),
            (3, HealthStatus::Critical, 0.5),
            (4, HealthStatus::Critical, 0.5),
        ] {
            fleet
                .observe(FleetMessage::Health(vec![(
                    key.clone(),
                    verdict(status, score, n),
                )]))
                .await
                .unwrap();
            fleet.barrier().await.unwrap();
        }
        until("the health event written", || !health_events().is_empty()).await;
        fleet
            .observe(FleetMessage::Health(vec![(
                key.clone(),
                verdict(HealthStatus::Healthy, 1.0, 5),
            )]))
            .await
            .unwrap();
        until("the recovery written", || health_events().len() == 2).await;
        let events = health_events();
        assert_eq!(events[0].severity, Severity::Critical);
        assert_eq!(
            events[0].message,
            "worker a@h is CRITICAL: cpu 96 % (critical at 95 %)"
        );
        assert!(
            events[0]
                .attributes
                .contains(&("to".to_string(), AttrValue::String("critical".into())))
        );
        assert!(
            events[1]
                .attributes
                .contains(&("from".to_string(), AttrValue::String("critical".into())))
        );
        assert_eq!(events[1].message, "worker a@h is HEALTHY");
        cancel.cancel();
        let _ = recorder.await;
    }

    #[tokio::test]
    async fn remembered_workers_come_back_unknown_then_lost_after_the_critical_period() {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let cancel = CancellationToken::new();
        let (fleet, _owner) = spawn(
            FleetSettings {
                thresholds: T,
                evaluate_every: Duration::from_millis(10),
                max_workers: 100,
            },
            Arc::new(clock.clone()),
            Arc::new(NoGauges),
            cancel.clone(),
        );
        let store = Arc::new(MemoryStore::default());
        let long_ago = crate::clock::Clock::now(&clock) - Duration::from_secs(3600);
        let key = |id: &str| WorkerKey::new(Backend::Celery, "default", id);
        *store.known.lock().unwrap() = vec![
            KnownWorker {
                key: key("was-alive@h"),
                group: Arc::from("celery"),
                first_seen: long_ago,
                last_seen: long_ago,
                lifecycle: Lifecycle::Alive,
            },
            KnownWorker {
                key: key("said-bye@h"),
                group: Arc::from("celery"),
                first_seen: long_ago,
                last_seen: long_ago,
                lifecycle: Lifecycle::Offline,
            },
            KnownWorker {
                key: key("comes-back@h"),
                group: Arc::from("celery"),
                first_seen: long_ago,
                last_seen: long_ago,
                lifecycle: Lifecycle::Alive,
            },
        ];
        let recorder = tokio::spawn(run(
            fleet.clone(),
            store.clone(),
            RecorderSettings::default(),
            Arc::new(NoRecorderGauges),
            crate::journal::Journal::channel(1).1,
            cancel.clone(),
        ));
        let lifecycle = |id: &str| fleet.snapshot().workers.get(&key(id)).map(|w| w.lifecycle);
        until("remembered", || lifecycle("was-alive@h").is_some()).await;
        // Silent for an hour before the restart, but never LOST at its first instant.
        assert_eq!(lifecycle("was-alive@h"), Some(Lifecycle::Unknown));
        assert_eq!(lifecycle("said-bye@h"), Some(Lifecycle::Offline));
        fleet
            .observe(heartbeat("comes-back@h", WorkerEventKind::Heartbeat))
            .await
            .unwrap();
        fleet.barrier().await.unwrap();
        assert_eq!(lifecycle("comes-back@h"), Some(Lifecycle::Alive));
        clock.advance(Duration::from_secs(59));
        fleet.barrier().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await; // a few evaluation ticks
        assert_eq!(lifecycle("was-alive@h"), Some(Lifecycle::Unknown));
        clock.advance(Duration::from_secs(2));
        until("LOST after the critical period", || {
            lifecycle("was-alive@h") == Some(Lifecycle::Lost)
        })
        .await;
        cancel.cancel();
        let _ = recorder.await;
    }
}
