//! Celery's event stream (the `celeryev` fanout): decoding, and the task that follows it.
//!
//! Workers publish `worker.*` events one per message and batch task events as a JSON array
//! (`task.multi`). Every message is decoded on its own: a malformed one is counted and
//! skipped, the stream goes on.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    broker::{Broker, BrokerError},
    envelope::{self, DecodeError},
    pidbox::{Command, Pidbox},
};
use warden_core::{
    Backend, BrokerStatus, EventPayload, FleetEvent, FleetHandle, Refresher, Software,
    TaskObservation, TaskOutcome, WorkerEvent, WorkerEventKind, WorkerKey, owner::FleetMessage,
};
use warden_metrics::Metrics;

/// Why an event was not applied. Each is a metric label.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error(transparent)]
    Envelope(#[from] DecodeError),
    #[error("event body is neither an object nor an array of objects")]
    Shape,
    #[error("event lacks `{0}`")]
    Missing(&'static str),
    #[error("event hostname is empty, too long or holds control characters")]
    Hostname,
    #[error("an array of events outside a task.multi batch, or a worker event inside one")]
    NotABatch,
}

impl EventError {
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::Envelope(e) => e.reason(),
            EventError::Shape => "event_shape",
            EventError::Missing(_) => "event_field",
            EventError::Hostname => "event_hostname",
            EventError::NotABatch => "event_not_a_batch",
        }
    }
}

/// The fields warden reads; everything else (args, kwargs, tracebacks) is skipped unparsed.
#[derive(Debug, Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    timestamp: Option<f64>,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    runtime: Option<f64>,
    #[serde(default)]
    freq: Option<f64>,
    #[serde(default)]
    active: Option<u32>,
    #[serde(default)]
    processed: Option<u64>,
    #[serde(default)]
    loadavg: Option<Vec<f64>>,
    #[serde(default)]
    sw_ident: Option<String>,
    #[serde(default)]
    sw_ver: Option<String>,
    #[serde(default)]
    sw_sys: Option<String>,
    #[serde(default)]
    pid: Option<u32>,
}

fn seconds(value: f64) -> Option<Duration> {
    (value.is_finite() && (0.0..1e9).contains(&value)).then(|| Duration::from_secs_f64(value))
}

fn epoch(value: f64) -> Option<SystemTime> {
    (value.is_finite() && value > 0.0 && value < 1e11)
        .then(|| UNIX_EPOCH + Duration::from_secs_f64(value))
}

/// The routing key of Celery's batched task events: the only messages whose body is an array.
const BATCH_ROUTING_KEY: &str = "task.multi";

/// What one event becomes: applied, or deliberately ignored (e.g. a producer's task-sent).
/// `in_batch`: the event came inside a `task.multi` array, where Celery puts only task events.
fn convert(
    raw: RawEvent,
    scope: &Arc<str>,
    in_batch: bool,
) -> Result<Option<FleetEvent>, EventError> {
    let worker_kind = match raw.kind.as_str() {
        "worker-online" => Some(WorkerEventKind::Online),
        "worker-heartbeat" => Some(WorkerEventKind::Heartbeat),
        "worker-offline" => Some(WorkerEventKind::Offline),
        _ => None,
    };
    let task_outcome = match raw.kind.as_str() {
        "task-received" => Some(TaskOutcome::Received),
        "task-started" => Some(TaskOutcome::Started),
        "task-succeeded" => Some(TaskOutcome::Succeeded),
        "task-failed" => Some(TaskOutcome::Failed),
        "task-retried" => Some(TaskOutcome::Retried),
        "task-rejected" => Some(TaskOutcome::Rejected),
        "task-revoked" => Some(TaskOutcome::Revoked),
        _ => None,
    };
    if raw.kind == "task-sent" {
        // From a producer, not a worker: counted per task name and producer. Without a name
        // there is nothing to count.
        let (Some(name), Some(hostname)) = (raw.name, raw.hostname) else {
            return Ok(None);
        };
        if !crate::pidbox::valid_node_name(&hostname) {
            return Err(EventError::Hostname);
        }
        return Ok(Some(FleetEvent {
            worker: WorkerKey::new(Backend::Celery, scope.clone(), hostname),
            payload: EventPayload::Sent { name },
        }));
    }
    if worker_kind.is_none() && task_outcome.is_none() {
        // Custom events are not ours.
        return Ok(None);
    }
    if in_batch && worker_kind.is_some() {
        return Err(EventError::NotABatch);
    }
    let hostname = raw.hostname.ok_or(EventError::Missing("hostname"))?;
    if !crate::pidbox::valid_node_name(&hostname) {
        return Err(EventError::Hostname);
    }
    let worker = WorkerKey::new(Backend::Celery, scope.clone(), hostname);
    let payload = if let Some(kind) = worker_kind {
        EventPayload::Worker(WorkerEvent {
            kind,
            freq: raw.freq.and_then(seconds),
            active: raw.active,
            processed: raw.processed,
            load_average: raw
                .loadavg
                .filter(|l| l.len() == 3)
                .map(|l| [l[0], l[1], l[2]]),
            software: raw.sw_ident.map(|ident| Software {
                ident,
                version: raw.sw_ver.unwrap_or_default(),
                system: raw.sw_sys.unwrap_or_default(),
            }),
            pid: raw.pid,
        })
    } else {
        EventPayload::Task(TaskObservation {
            outcome: task_outcome.ok_or(EventError::Shape)?,
            id: raw.uuid.ok_or(EventError::Missing("uuid"))?,
            name: raw.name,
            timestamp: raw.timestamp.and_then(epoch),
            runtime: raw.runtime.and_then(seconds),
        })
    };
    Ok(Some(FleetEvent { worker, payload }))
}

/// Decodes one message of the event stream into the events it carries, as workers of
/// `scope`. A batch with one bad element keeps its good elements; the bad ones are returned as
/// errors. An array is accepted only as a `task.multi` batch of task events, as Celery sends.
pub fn decode(
    bytes: &[u8],
    scope: &Arc<str>,
) -> Result<(Vec<FleetEvent>, Vec<EventError>), EventError> {
    let (delivery, body) = envelope::decode_body_bytes(bytes)?;
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let mut events = Vec::new();
    let mut errors = Vec::new();
    match first {
        Some(b'{') => {
            let raw: RawEvent = serde_json::from_slice(&body)
                .map_err(|e| EventError::Envelope(DecodeError::Body(e.to_string())))?;
            if let Some(event) = convert(raw, scope, false)? {
                events.push(event);
            }
        }
        Some(b'[') if delivery.routing_key != BATCH_ROUTING_KEY => {
            return Err(EventError::NotABatch);
        }
        Some(b'[') => {
            let raws: Vec<RawEvent> = match serde_json::from_slice(&body) {
                Ok(raws) => raws,
                Err(_) => {
                    // Slow path: find the good elements one by one.
                    let values: Vec<serde_json::Value> = serde_json::from_slice(&body)
                        .map_err(|e| EventError::Envelope(DecodeError::Body(e.to_string())))?;
                    let mut raws = Vec::with_capacity(values.len());
                    for value in values {
                        match serde_json::from_value(value) {
                            Ok(raw) => raws.push(raw),
                            Err(_) => errors.push(EventError::Shape),
                        }
                    }
                    raws
                }
            };
            for raw in raws {
                match convert(raw, scope, true) {
                    Ok(Some(event)) => events.push(event),
                    Ok(None) => {}
                    Err(err) => errors.push(err),
                }
            }
        }
        _ => return Err(EventError::Shape),
    }
    Ok((events, errors))
}

/// Decodes a message, counting what is skipped.
fn decode_counted(bytes: &[u8], scope: &Arc<str>, metrics: &Metrics) -> Vec<FleetEvent> {
    match decode(bytes, scope) {
        Ok((events, errors)) => {
            for err in errors {
                metrics.message_rejected("event", err.reason());
            }
            events
        }
        Err(err) => {
            debug!(%err, "event skipped");
            metrics.message_rejected("event", err.reason());
            Vec::new()
        }
    }
}

/// Follows the event stream until `cancel`, resubscribing with backoff after any failure.
pub struct EventFollower {
    pub broker: Broker,
    /// Where the broker's node names are unique (see `WorkerKey`).
    pub scope: Arc<str>,
    pub fleet: FleetHandle,
    pub pidbox: Pidbox,
    pub metrics: Metrics,
    /// Cast `enable_events` to each worker that comes online.
    pub enable_events: bool,
    /// Inspects each worker that comes online at once, so that its pool, queues and
    /// registered tasks are known within the inspect timeout rather than the next round.
    pub refresher: Option<Arc<dyn Refresher>>,
    /// Set once the broker turned out not to speak RESP3.
    pub resp2_only: AtomicBool,
    /// Greetings in flight, bounded (`MAX_GREETINGS`): a flood of forged worker-online
    /// events must not start a broadcast each. A worker not greeted is found by the next
    /// inspect round.
    pub greetings: Arc<tokio::sync::Semaphore>,
    /// Owns the greeting tasks, so that shutdown waits for them.
    pub tracker: tokio_util::task::TaskTracker,
}

/// Most greetings (inspects of a worker that just came online) in flight at once.
pub const MAX_GREETINGS: usize = 16;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl EventFollower {
    pub async fn run(
        self,
        mut broker_status: watch::Receiver<BrokerStatus>,
        cancel: CancellationToken,
    ) {
        let this = Arc::new(self);
        let mut backoff = BACKOFF_START;
        let mut failing = false;
        loop {
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                r = this.follow(&mut broker_status, &cancel) => r,
            };
            match outcome {
                Ok(()) => backoff = BACKOFF_START,
                Err(err) => {
                    if !failing {
                        warn!(%err, "event stream unavailable; retrying");
                    }
                    failing = true;
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
            failing = false;
        }
    }

    /// Subscribes: RESP3 with a bounded queue, or RESP2 pub/sub where the server has no RESP3.
    async fn subscribe(&self) -> Result<Subscription, BrokerError> {
        let pattern = self.broker.keys().event_pattern();
        if !self.resp2_only.load(Ordering::Relaxed) {
            let metrics = self.metrics.clone();
            let overflow = move || metrics.message_rejected("event", "warden_behind");
            match self
                .broker
                .subscribe_bounded(&pattern, EVENT_QUEUE, overflow)
                .await
            {
                Ok((conn, pushes)) => {
                    info!(
                        pattern,
                        "following the Celery event stream (RESP3, bounded queue)"
                    );
                    return Ok(Subscription::Bounded {
                        _conn: conn,
                        pushes,
                    });
                }
                // Only a server that does not know HELLO (Redis < 6) or refuses protocol 3
                // means RESP2; any other error is retried as it is.
                Err(BrokerError::Other(reason)) if lacks_resp3(&reason) => {
                    warn!(%reason, "no RESP3 on this broker; following events over RESP2 pub/sub");
                    self.resp2_only.store(true, Ordering::Relaxed);
                }
                Err(err) => return Err(err),
            }
        }
        let timeout = self.broker.timeout();
        let mut pubsub = self.broker.pubsub().await?;
        tokio::time::timeout(timeout, pubsub.psubscribe(&pattern))
            .await
            .map_err(|_| BrokerError::Timeout(timeout))?
            .map_err(|e| BrokerError::from_redis(&e, timeout))?;
        info!(pattern, "following the Celery event stream (RESP2)");
        Ok(Subscription::Unbounded(pubsub.into_on_message()))
    }

    /// One subscription: returns when the connection ends or the broker is reported down.
    async fn follow(
        self: &Arc<Self>,
        broker_status: &mut watch::Receiver<BrokerStatus>,
        cancel: &CancellationToken,
    ) -> Result<(), BrokerError> {
        let mut subscription = self.subscribe().await?;
        broker_status.mark_unchanged();
        loop {
            let payload = tokio::select! {
                m = subscription.next() => m,
                changed = broker_status.changed() => {
                    if changed.is_err() || !broker_status.borrow().connected {
                        // The probe says the broker is gone: this connection may be half-open.
                        return Err(BrokerError::Unreachable("broker reported down".into()));
                    }
                    continue;
                }
            };
            let Some(payload) = payload else {
                return Err(BrokerError::Unreachable("event subscription closed".into()));
            };
            let events = decode_counted(&payload, &self.scope, &self.metrics);
            if events.is_empty() {
                continue;
            }
            for event in &events {
                self.metrics.event_applied(event_label(event));
                if matches!(&event.payload, EventPayload::Worker(w) if w.kind == WorkerEventKind::Online)
                {
                    self.greet(&event.worker, cancel);
                }
            }
            if self
                .fleet
                .observe(FleetMessage::Events(events))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    }
}

/// Whether a failed HELLO says the server has no RESP3: `unknown command 'HELLO'` (Redis
/// before 6) or `NOPROTO`.
fn lacks_resp3(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    (reason.contains("unknown command") && reason.contains("hello")) || reason.contains("noproto")
}

/// Inspect attempts for a worker that just came online (0.25 s, 0.5 s, 1 s, 2 s apart).
const GREETING_ATTEMPTS: u32 = 5;

/// Messages queued between the broker connection and the decoder (about 1 s of a busy
/// fleet's `task.multi` traffic, ~20 MB at most): beyond it, messages are dropped and counted
/// (`warden_broker_messages_rejected_total{reason="warden_behind"}`).
pub const EVENT_QUEUE: usize = 4096;

/// Where event messages come from.
enum Subscription {
    /// RESP3: pushes through a bounded queue.
    Bounded {
        _conn: redis::aio::MultiplexedConnection,
        pushes: tokio::sync::mpsc::Receiver<redis::PushInfo>,
    },
    /// RESP2 pub/sub (Redis < 6): the redis crate's own, unbounded, queue.
    Unbounded(redis::aio::PubSubStream),
}

impl Subscription {
    /// The next message's payload; `None` when the connection is gone.
    async fn next(&mut self) -> Option<Vec<u8>> {
        match self {
            Subscription::Bounded { pushes, .. } => loop {
                let push = pushes.recv().await?;
                match push.kind {
                    redis::PushKind::PMessage | redis::PushKind::Message => {
                        if let Some(redis::Value::BulkString(payload)) =
                            push.data.into_iter().last()
                        {
                            return Some(payload);
                        }
                    }
                    redis::PushKind::Disconnection => return None,
                    _ => {}
                }
            },
            Subscription::Unbounded(stream) => {
                stream.next().await.map(|m| m.get_payload_bytes().to_vec())
            }
        }
    }
}

impl EventFollower {
    /// A worker came online: switch its task events on and inspect it now (in the
    /// background: the event stream must not wait on a broadcast).
    /// A worker announces itself before its remote-control consumer is ready, so the first
    /// inspect may go unanswered: it is retried with backoff until the worker's pool is known.
    fn greet(&self, worker: &WorkerKey, cancel: &CancellationToken) {
        let Ok(permit) = self.greetings.clone().try_acquire_owned() else {
            self.metrics.message_rejected("event", "greeting_skipped");
            return;
        };
        let pidbox = self.pidbox.clone();
        let refresher = self.refresher.clone();
        let fleet = self.fleet.clone();
        let enable_events = self.enable_events;
        let key = worker.clone();
        let name = worker.id.to_string();
        let cancel = cancel.clone();
        let greeting = async move {
            let _permit = permit;
            let destination = vec![name.clone()];
            if enable_events {
                let _ = pidbox
                    .cast(&Command::new("enable_events"), Some(&destination))
                    .await;
            }
            let Some(refresher) = refresher else { return };
            for attempt in 0..GREETING_ATTEMPTS {
                let _ = refresher.refresh(Some(destination.clone())).await;
                let inspected = fleet
                    .snapshot()
                    .workers
                    .get(&key)
                    .is_some_and(|w| w.pool.is_some());
                if inspected {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
        };
        self.tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = greeting => {}
            }
        });
    }
}

fn event_label(event: &FleetEvent) -> &'static str {
    match &event.payload {
        EventPayload::Worker(w) => match w.kind {
            WorkerEventKind::Online => "worker-online",
            WorkerEventKind::Heartbeat => "worker-heartbeat",
            WorkerEventKind::Offline => "worker-offline",
        },
        EventPayload::Task(t) => match t.outcome {
            TaskOutcome::Received => "task-received",
            TaskOutcome::Started => "task-started",
            TaskOutcome::Succeeded => "task-succeeded",
            TaskOutcome::Failed => "task-failed",
            TaskOutcome::Retried => "task-retried",
            TaskOutcome::Rejected => "task-rejected",
            TaskOutcome::Revoked => "task-revoked",
        },
        EventPayload::Sent { .. } => "task-sent",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn scope() -> Arc<str> {
        Arc::from("default")
    }

    fn message(body: serde_json::Value, routing_key: &str) -> Vec<u8> {
        envelope::encode(
            &body,
            json!({"hostname": "w1@h"}),
            "celeryev",
            routing_key,
            1,
        )
        .into_bytes()
    }

    #[test]
    fn heartbeat_as_celery_sends_it() {
        let bytes = message(
            json!({"hostname": "w1@h", "utcoffset": 0, "pid": 42, "clock": 7, "freq": 2.0,
                   "active": 1, "processed": 10, "loadavg": [0.5, 0.25, 0.1],
                   "sw_ident": "py-celery", "sw_ver": "5.7.0", "sw_sys": "Linux",
                   "timestamp": 1700000000.5, "type": "worker-heartbeat"}),
            "worker.heartbeat",
        );
        let (events, errors) = decode(&bytes, &scope()).unwrap();
        assert!(errors.is_empty());
        let EventPayload::Worker(w) = &events[0].payload else {
            panic!()
        };
        assert_eq!(w.kind, WorkerEventKind::Heartbeat);
        assert_eq!(
            (w.active, w.processed, w.pid),
            (Some(1), Some(10), Some(42))
        );
        assert_eq!(w.freq, Some(Duration::from_secs(2)));
        assert_eq!(w.software.as_ref().unwrap().version, "5.7.0");
    }

    #[test]
    fn task_multi_batches_are_arrays_and_bad_elements_do_not_spoil_good_ones() {
        let bytes = message(
            json!([
                {"type": "task-received", "uuid": "u1", "name": "app.add", "hostname": "w1@h",
                 "timestamp": 1700000000.0, "args": "(1, 2)", "kwargs": "{}"},
                {"type": "task-started", "uuid": "u1", "hostname": "w1@h", "timestamp": 1700000000.1},
                {"type": "task-succeeded", "uuid": "u1", "hostname": "w1@h", "runtime": 0.25,
                 "result": "3", "timestamp": 1700000000.35},
                {"type": "task-failed", "hostname": "w1@h"},
                {"no-type": true},
                {"type": "task-sent", "uuid": "u2", "hostname": "gen1@h"}
            ]),
            "task.multi",
        );
        let (events, errors) = decode(&bytes, &scope()).unwrap();
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(errors.len(), 2, "{errors:?}");
        let EventPayload::Task(t) = &events[2].payload else {
            panic!()
        };
        assert_eq!(t.outcome, TaskOutcome::Succeeded);
        assert_eq!(t.runtime, Some(Duration::from_millis(250)));
    }

    #[test]
    fn a_producers_task_sent_is_counted_by_name_and_never_a_worker() {
        let bytes = message(
            json!({"type": "task-sent", "uuid": "u9", "name": "app.add", "hostname": "gen1@h",
                   "timestamp": 1700000000.0, "queue": "celery"}),
            "task.sent",
        );
        let (events, errors) = decode(&bytes, &scope()).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(&*events[0].worker.id, "gen1@h");
        assert_eq!(
            events[0].payload,
            EventPayload::Sent {
                name: "app.add".into()
            }
        );
        let mut state = warden_core::state::FleetState::new(std::time::UNIX_EPOCH);
        let thresholds = warden_core::model::Thresholds {
            warning: Duration::from_secs(30),
            critical: Duration::from_secs(60),
        };
        for _ in 0..3 {
            state.apply_event(events[0].clone(), std::time::UNIX_EPOCH, thresholds);
        }
        let snapshot = state.snapshot();
        assert!(snapshot.workers.is_empty(), "a producer is not a worker");
        assert_eq!(
            snapshot
                .tasks_sent
                .get(&(Arc::from("app.add"), Arc::from("gen1@h"))),
            Some(&3)
        );
    }

    #[test]
    fn malformed_messages_are_errors_never_panics() {
        let huge = "x".repeat(1 << 20);
        let cases: Vec<Vec<u8>> = vec![
            b"{".to_vec(),
            message(json!("a string"), "x"),
            message(json!(42), "x"),
            message(json!([1, 2, 3]), "x"),
            message(json!({"type": 5}), "x"),
            message(json!({"type": "worker-heartbeat"}), "x"),
            message(
                json!({"type": "worker-heartbeat", "hostname": "h", "freq": 1e308, "active": -1}),
                "x",
            ),
            message(
                json!({"type": "task-started", "hostname": "h", "uuid": huge}),
                "x",
            ),
        ];
        for case in cases {
            match decode(&case, &scope()) {
                Ok((events, _)) => {
                    for e in events {
                        // Accepted events are well-formed.
                        assert!(!e.worker.id.is_empty());
                    }
                }
                Err(err) => assert!(!err.reason().is_empty()),
            }
        }
        assert!(decode(b"{", &scope()).is_err());
    }

    #[test]
    fn only_a_server_without_hello_means_resp2() {
        assert!(lacks_resp3(
            "broker error: ERR unknown command 'HELLO', with args beginning with: '3'"
        ));
        assert!(lacks_resp3(
            "broker error: ERR unknown command `HELLO`, with args"
        ));
        assert!(lacks_resp3(
            "NOPROTO sorry, this protocol version is not supported"
        ));
        assert!(!lacks_resp3(
            "broker error: ERR max number of clients reached"
        ));
        assert!(!lacks_resp3("broker error: OOM command not allowed"));
    }

    #[test]
    fn arrays_only_as_task_multi_batches_of_task_events_and_hostnames_validated() {
        let online = json!({"type": "worker-online", "hostname": "w1@h", "freq": 2.0});
        // An array under another routing key is refused whole.
        let bytes = message(json!([online.clone()]), "worker.online");
        assert_eq!(decode(&bytes, &scope()).unwrap_err(), EventError::NotABatch);
        // A worker event smuggled into a task.multi batch is refused, its neighbours kept.
        let task = json!({"type": "task-received", "uuid": "u1", "hostname": "w1@h"});
        let bytes = message(json!([online, task]), "task.multi");
        let (events, errors) = decode(&bytes, &scope()).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(errors, vec![EventError::NotABatch]);
        // Hostnames as pidbox reply names: not empty, bounded, no control characters.
        for bad in ["", "w\u{1}@h", &"x".repeat(600)] {
            let bytes = message(
                json!({"type": "worker-online", "hostname": bad}),
                "worker.online",
            );
            assert_eq!(
                decode(&bytes, &scope()).unwrap_err(),
                EventError::Hostname,
                "{bad:?}"
            );
        }
        let bytes = message(
            json!({"type": "worker-online", "hostname": "w1@h"}),
            "worker.online",
        );
        let (events, _) = decode(&bytes, &scope()).unwrap();
        assert_eq!(
            events[0].worker,
            WorkerKey::new(Backend::Celery, "default", "w1@h")
        );
    }
}
