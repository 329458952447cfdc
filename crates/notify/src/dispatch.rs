//! The dispatcher: hands each notification to its receiver's own task, retries with backoff,
//! and records every delivery in the [`DeliveryLog`].
//!
//! One task and one bounded queue per receiver, so a receiver that hangs holds up only its
//! own queue; `dispatch` never waits: a full queue is recorded as a failed delivery. Within
//! a receiver, notifications go out one at a time in order (a resolve never overtakes its
//! trigger).
use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use warden_core::{
    clock::Clock,
    ports::{Notification, Notifier, PortError},
};

use crate::{
    channel::{
        BuildError, ChannelKind, alertmanager::AlertmanagerNotifier, email::EmailNotifier, invalid,
        pagerduty::PagerDutyNotifier, slack::SlackNotifier, webhook::WebhookNotifier,
    },
    config::{ChannelConfig, NotifyConfig, ReceiverConfig},
    log::{
        DEFAULT_LOG_CAPACITY, Delivery, DeliveryId, DeliveryLog, DeliveryPage, DeliveryQuery,
        DeliveryState, NotifiedState,
    },
    retry::RetryPolicy,
};

/// Notifications waiting per receiver before new ones are refused (and recorded as failed).
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;

/// Called with each delivery once it is final (sent, failed or suppressed), e.g. to journal
/// it. It runs on the receiver's task (or the caller's, for a refused or suppressed one):
/// it must not block.
pub type OutcomeHook = Arc<dyn Fn(&Delivery) + Send + Sync>;

/// The dispatcher's settings; [`Default`] gives the documented defaults.
#[derive(Clone)]
pub struct DispatcherSettings {
    /// Notifications waiting per receiver (default [`DEFAULT_QUEUE_CAPACITY`]).
    pub queue_capacity: usize,
    /// Deliveries kept in the log (default [`DEFAULT_LOG_CAPACITY`]).
    pub log_capacity: usize,
    /// Told each final outcome.
    pub on_outcome: Option<OutcomeHook>,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        Self {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            log_capacity: DEFAULT_LOG_CAPACITY,
            on_outcome: None,
        }
    }
}

impl fmt::Debug for DispatcherSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatcherSettings")
            .field("queue_capacity", &self.queue_capacity)
            .field("log_capacity", &self.log_capacity)
            .field("on_outcome", &self.on_outcome.is_some())
            .finish()
    }
}

/// A receiver ready to deliver: its notifier (whose `channel()` is the receiver's name), its
/// kind and its retry settings.
#[derive(Clone)]
pub struct Receiver {
    kind: ChannelKind,
    notifier: Arc<dyn Notifier>,
    retry: RetryPolicy,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.name())
            .field("kind", &self.kind)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Receiver {
    /// Any notifier (the configured channels are built by [`Receiver::from_config`]).
    pub fn new(kind: ChannelKind, notifier: Arc<dyn Notifier>, retry: RetryPolicy) -> Self {
        Self {
            kind,
            notifier,
            retry,
        }
    }

    /// Builds the configured channel; the receiver's own `retry` overrides `default_retry`.
    pub fn from_config(
        config: &ReceiverConfig,
        default_retry: RetryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BuildError> {
        let name = config.name.as_str();
        if name.trim().is_empty() {
            return Err(invalid(name, "a receiver needs a name"));
        }
        let retry = config.retry.unwrap_or(default_retry);
        retry.validate().map_err(|e| invalid(name, e))?;
        let timeout = retry.attempt_timeout;
        let notifier: Arc<dyn Notifier> = match &config.channel {
            ChannelConfig::Slack(c) => Arc::new(SlackNotifier::new(name, c, timeout)?),
            ChannelConfig::Pagerduty(c) => Arc::new(PagerDutyNotifier::new(name, c, timeout)?),
            ChannelConfig::Email(c) => Arc::new(EmailNotifier::new(name, c, timeout, clock)?),
            ChannelConfig::Webhook(c) => Arc::new(WebhookNotifier::new(name, c, timeout, clock)?),
            ChannelConfig::Alertmanager(c) => {
                Arc::new(AlertmanagerNotifier::new(name, c, timeout, clock)?)
            }
        };
        Ok(Self::new(config.channel.kind(), notifier, retry))
    }

    pub fn name(&self) -> &str {
        self.notifier.channel()
    }

    pub fn kind(&self) -> ChannelKind {
        self.kind
    }

    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }
}

/// Builds every configured receiver; refuses duplicate names.
pub fn build_receivers(
    configs: &[ReceiverConfig],
    default_retry: RetryPolicy,
    clock: Arc<dyn Clock>,
) -> Result<Vec<Receiver>, BuildError> {
    let mut seen = std::collections::HashSet::new();
    configs
        .iter()
        .map(|c| {
            if !seen.insert(c.name.as_str()) {
                return Err(invalid(&c.name, "two receivers have this name"));
            }
            Receiver::from_config(c, default_retry, clock.clone())
        })
        .collect()
}

impl NotifyConfig {
    /// Builds every receiver and starts the dispatcher (the binary's one call). Fails before
    /// anything starts when a receiver is invalid.
    pub fn start(
        &self,
        clock: Arc<dyn Clock>,
        on_outcome: Option<OutcomeHook>,
        cancel: CancellationToken,
    ) -> Result<Dispatcher, BuildError> {
        self.retry.validate().map_err(BuildError::Settings)?;
        let receivers = build_receivers(&self.receivers, self.retry, clock.clone())?;
        let settings = DispatcherSettings {
            queue_capacity: self.queue_capacity,
            log_capacity: self.log_capacity,
            on_outcome,
        };
        Ok(Dispatcher::spawn(receivers, settings, clock, cancel))
    }
}

struct Job {
    id: DeliveryId,
    notification: Notification,
}

struct Queue {
    kind: ChannelKind,
    sender: mpsc::Sender<Job>,
}

struct Shared {
    queues: HashMap<String, Queue>,
    log: DeliveryLog,
    clock: Arc<dyn Clock>,
    on_outcome: Option<OutcomeHook>,
    queue_capacity: usize,
    tasks: TaskTracker,
}

/// Delivers notifications to receivers. Cheap to clone; the receivers' tasks stop when the
/// cancellation token given to [`Dispatcher::spawn`] is cancelled, or once every clone is
/// dropped (their queues close).
#[derive(Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("receivers", &self.receivers())
            .field("log", &self.shared.log)
            .finish()
    }
}

impl Dispatcher {
    /// Starts one task per receiver. Must be called within a Tokio runtime.
    pub fn spawn(
        receivers: Vec<Receiver>,
        settings: DispatcherSettings,
        clock: Arc<dyn Clock>,
        cancel: CancellationToken,
    ) -> Dispatcher {
        let log = DeliveryLog::new(settings.log_capacity);
        let tasks = TaskTracker::new();
        let capacity = settings.queue_capacity.max(1);
        let mut queues = HashMap::new();
        let mut workers = Vec::new();
        for receiver in receivers {
            let (sender, receiver_queue) = mpsc::channel(capacity);
            queues.insert(
                receiver.name().to_owned(),
                Queue {
                    kind: receiver.kind,
                    sender,
                },
            );
            workers.push((receiver, receiver_queue));
        }
        let shared = Arc::new(Shared {
            queues,
            log,
            clock,
            on_outcome: settings.on_outcome,
            queue_capacity: capacity,
            tasks,
        });
        for (receiver, queue) in workers {
            let worker = Worker {
                receiver,
                log: shared.log.clone(),
                clock: shared.clock.clone(),
                on_outcome: shared.on_outcome.clone(),
                cancel: cancel.clone(),
            };
            shared.tasks.spawn(worker.run(queue));
        }
        shared.tasks.close();
        Dispatcher { shared }
    }

    /// Queues the notification for its receiver and returns the delivery's id at once. An
    /// unknown receiver, a full queue or a stopped dispatcher is recorded as a failed
    /// delivery (and reported to the outcome hook), never waited on.
    pub fn dispatch(&self, notification: Notification) -> DeliveryId {
        let queue = self.shared.queues.get(&notification.receiver);
        let mut delivery = self.new_delivery(&notification, queue.map(|q| q.kind));
        let Some(queue) = queue else {
            delivery.state = DeliveryState::Failed;
            delivery.last_error = Some(format!("no receiver named {}", notification.receiver));
            return self.record_final(delivery);
        };
        // The id must exist before the worker can see the job.
        let id = self.shared.log.insert(delivery);
        match queue.sender.try_send(Job { id, notification }) {
            Ok(()) => id,
            Err(e) => {
                let (reason, job) = match e {
                    mpsc::error::TrySendError::Full(job) => (
                        format!(
                            "the queue of {} receiver {} is full ({} waiting): dropped",
                            queue.kind, job.notification.receiver, self.shared.queue_capacity
                        ),
                        job,
                    ),
                    mpsc::error::TrySendError::Closed(job) => (
                        format!(
                            "{} receiver {} is stopped: dropped",
                            queue.kind, job.notification.receiver
                        ),
                        job,
                    ),
                };
                tracing::warn!(receiver = %job.notification.receiver, delivery = %id, "{reason}");
                let done = self.shared.log.update(id, |d| {
                    d.state = DeliveryState::Failed;
                    d.last_error = Some(reason);
                });
                if let (Some(done), Some(hook)) = (done, &self.shared.on_outcome) {
                    hook(&done);
                }
                id
            }
        }
    }

    /// Records a notification the alert engine chose not to send (silenced, acknowledged,
    /// grouped into another), with its reason, e.g. "silenced by silences/abc".
    pub fn record_suppressed(
        &self,
        notification: &Notification,
        reason: impl Into<String>,
    ) -> DeliveryId {
        let kind = self
            .shared
            .queues
            .get(&notification.receiver)
            .map(|q| q.kind);
        let mut delivery = self.new_delivery(notification, kind);
        delivery.state = DeliveryState::Suppressed;
        delivery.suppressed_reason = Some(reason.into());
        self.record_final(delivery)
    }

    /// The delivery log (shared: it keeps filling).
    pub fn log(&self) -> &DeliveryLog {
        &self.shared.log
    }

    pub fn get(&self, id: DeliveryId) -> Option<Delivery> {
        self.shared.log.get(id)
    }

    /// Deliveries matching `query`, newest first.
    pub fn query(&self, query: &DeliveryQuery) -> DeliveryPage {
        self.shared.log.query(query)
    }

    /// The receivers' names and kinds, sorted by name.
    pub fn receivers(&self) -> Vec<(String, ChannelKind)> {
        let mut out: Vec<_> = self
            .shared
            .queues
            .iter()
            .map(|(name, q)| (name.clone(), q.kind))
            .collect();
        out.sort();
        out
    }

    /// Waits until every receiver's task has ended (after the cancellation token fired).
    pub async fn stopped(&self) {
        self.shared.tasks.wait().await;
    }

    fn new_delivery(&self, n: &Notification, channel: Option<ChannelKind>) -> Delivery {
        Delivery {
            id: DeliveryId(0),
            alerts: n.alerts.iter().map(|a| a.name.clone()).collect(),
            group_key: n.group_key.clone(),
            channel,
            receiver: n.receiver.clone(),
            notified_state: if n.resolved {
                NotifiedState::Resolved
            } else {
                NotifiedState::Firing
            },
            escalated: n.escalated,
            state: DeliveryState::Pending,
            attempts: 0,
            last_error: None,
            suppressed_reason: None,
            create_time: self.shared.clock.now(),
            sent_at: None,
            next_attempt_at: None,
        }
    }

    fn record_final(&self, delivery: Delivery) -> DeliveryId {
        let id = self.shared.log.insert(delivery);
        if let (Some(hook), Some(done)) = (&self.shared.on_outcome, self.shared.log.get(id)) {
            hook(&done);
        }
        id
    }
}

/// One receiver's task.
struct Worker {
    receiver: Receiver,
    log: DeliveryLog,
    clock: Arc<dyn Clock>,
    on_outcome: Option<OutcomeHook>,
    cancel: CancellationToken,
}

/// Why the last attempt failed, and whether another may follow.
struct Failure {
    text: String,
    retryable: bool,
}

impl Worker {
    async fn run(self, mut queue: mpsc::Receiver<Job>) {
        loop {
            let job = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                job = queue.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
            };
            if !self.deliver(&job).await {
                break;
            }
        }
        // Stopping: what is still queued will not be sent.
        queue.close();
        while let Ok(job) = queue.try_recv() {
            self.finish_failed(job.id, "warden stopped before it was sent".to_owned());
        }
    }

    /// Tries until sent, given up, or cancelled; false when cancelled.
    async fn deliver(&self, job: &Job) -> bool {
        let retry = self.receiver.retry;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let outcome = tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    self.finish_failed(job.id, "warden stopped during an attempt".to_owned());
                    return false;
                }
                outcome = self.attempt(&job.notification, retry.attempt_timeout) => outcome,
            };
            let failure = match outcome {
                Ok(()) => {
                    let now = self.clock.now();
                    tracing::info!(
                        receiver = self.receiver.name(),
                        channel = %self.receiver.kind,
                        delivery = %job.id,
                        attempts = attempt,
                        "notification delivered"
                    );
                    self.finish(job.id, |d| {
                        d.state = DeliveryState::Sent;
                        d.attempts = attempt;
                        d.sent_at = Some(now);
                        d.next_attempt_at = None;
                    });
                    return true;
                }
                Err(failure) => failure,
            };
            if !(failure.retryable && retry.retries_after(attempt)) {
                tracing::warn!(
                    receiver = self.receiver.name(),
                    channel = %self.receiver.kind,
                    delivery = %job.id,
                    attempts = attempt,
                    error = %failure.text,
                    "notification not delivered: giving up"
                );
                self.finish(job.id, |d| {
                    d.state = DeliveryState::Failed;
                    d.attempts = attempt;
                    d.last_error = Some(failure.text);
                    d.next_attempt_at = None;
                });
                return true;
            }
            let wait = retry.backoff(attempt);
            let next = self.clock.now() + wait;
            tracing::warn!(
                receiver = self.receiver.name(),
                channel = %self.receiver.kind,
                delivery = %job.id,
                attempts = attempt,
                retry_in = %humantime::format_duration(wait),
                error = %failure.text,
                "notification attempt failed; retrying"
            );
            self.log.update(job.id, |d| {
                d.state = DeliveryState::Retrying;
                d.attempts = attempt;
                d.last_error = Some(failure.text);
                d.next_attempt_at = Some(next);
            });
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    self.finish_failed(job.id, "warden stopped before the next attempt".to_owned());
                    return false;
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One attempt, bounded by `timeout` whatever the notifier does.
    async fn attempt(&self, n: &Notification, timeout: Duration) -> Result<(), Failure> {
        match tokio::time::timeout(timeout, self.receiver.notifier.notify(n)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(PortError::Unavailable { reason, .. })) => Err(Failure {
                text: reason,
                retryable: true,
            }),
            Ok(Err(other)) => Err(Failure {
                text: other.to_string(),
                retryable: false,
            }),
            Err(_) => Err(Failure {
                text: format!(
                    "no answer from {} receiver {} within {}",
                    self.receiver.kind,
                    self.receiver.name(),
                    humantime::format_duration(timeout)
                ),
                retryable: true,
            }),
        }
    }

    fn finish(&self, id: DeliveryId, change: impl FnOnce(&mut Delivery)) {
        if let Some(done) = self.log.update(id, change)
            && let Some(hook) = &self.on_outcome
        {
            hook(&done);
        }
    }

    fn finish_failed(&self, id: DeliveryId, reason: String) {
        self.finish(id, |d| {
            d.state = DeliveryState::Failed;
            d.last_error = Some(reason);
            d.next_attempt_at = None;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use warden_core::clock::ManualClock;

    use super::*;

    #[tokio::test]
    async fn notify_config_starts_a_dispatcher_or_names_the_bad_setting() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let cancel = CancellationToken::new();
        let mut config = NotifyConfig::default();
        config.retry.max_attempts = 0;
        let err = config
            .start(clock.clone(), None, cancel.clone())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "notification settings: retry.max_attempts must be at least 1"
        );
        let d = NotifyConfig::default()
            .start(clock, None, cancel.clone())
            .unwrap();
        assert!(d.receivers().is_empty());
        cancel.cancel();
        d.stopped().await;
    }
}
