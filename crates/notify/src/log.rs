//! The delivery log: the most recent deliveries, kept in memory, newest first on query.
//!
//! Bounded (oldest dropped first) so that a storm cannot grow memory without limit. Ids are
//! handed out in creation order, so "newest first" is "highest id first" and a page token is
//! the id of the last delivery returned: stable across pages while new ones arrive.
use std::{
    collections::VecDeque,
    fmt,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use crate::channel::ChannelKind;

/// Deliveries kept unless told otherwise.
pub const DEFAULT_LOG_CAPACITY: usize = 10_000;

/// A delivery's id: unique within the process, increasing in creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub u64);

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a delivery is (as `DeliveryState` in alerts.proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Queued, not tried yet.
    Pending,
    /// Accepted by the channel.
    Sent,
    /// Given up; see `last_error`.
    Failed,
    /// An attempt failed; another is scheduled at `next_attempt_at`.
    Retrying,
    /// Not sent on purpose; see `suppressed_reason`.
    Suppressed,
}

impl DeliveryState {
    /// Sent, failed and suppressed deliveries change no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryState::Sent | DeliveryState::Failed | DeliveryState::Suppressed
        )
    }
}

/// The transition notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifiedState {
    Firing,
    Resolved,
}

/// One notification to one receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: DeliveryId,
    /// The alerts it covers (resource names, `alerts/{id}`), as the notification listed them.
    pub alerts: Vec<String>,
    /// The notification group's key.
    pub group_key: String,
    /// The receiver's kind of channel; `None` when no receiver has the name.
    pub channel: Option<ChannelKind>,
    /// The configured receiver's name.
    pub receiver: String,
    pub notified_state: NotifiedState,
    /// An escalation of an unacknowledged alert.
    pub escalated: bool,
    pub state: DeliveryState,
    /// Attempts finished so far.
    pub attempts: u32,
    /// The last failed attempt's error: names the receiver, never a URL or secret.
    pub last_error: Option<String>,
    /// Why it was not sent (suppressed only).
    pub suppressed_reason: Option<String>,
    pub create_time: SystemTime,
    /// When the channel accepted it (sent only).
    pub sent_at: Option<SystemTime>,
    /// When the next attempt is due (retrying only).
    pub next_attempt_at: Option<SystemTime>,
}

/// What to list; every set filter narrows (AND).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryQuery {
    /// Only deliveries covering this alert (`alerts/{id}`).
    pub alert: Option<String>,
    /// Only these states; empty means all.
    pub states: Vec<DeliveryState>,
    /// Only these kinds of channel; empty means all.
    pub channels: Vec<ChannelKind>,
    /// At most this many (0 means no limit).
    pub limit: usize,
    /// Only deliveries older than this one (the previous page's `next`).
    pub before: Option<DeliveryId>,
}

/// One page of deliveries, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    /// Pass as `before` for the next page; `None` on the last page.
    pub next: Option<DeliveryId>,
}

/// The shared, bounded log. Cloning shares it.
#[derive(Clone)]
pub struct DeliveryLog {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    capacity: usize,
    next_id: u64,
    /// Ascending by id, contiguous: the entry for id `i` is at `i - front id`.
    entries: VecDeque<Delivery>,
}

impl fmt::Debug for DeliveryLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("DeliveryLog")
            .field("capacity", &inner.capacity)
            .field("len", &inner.entries.len())
            .finish()
    }
}

impl DeliveryLog {
    /// A log keeping the `capacity` most recent deliveries (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                capacity: capacity.max(1),
                next_id: 1,
                entries: VecDeque::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a delivery, giving it the next id (the `id` passed in is ignored).
    pub fn insert(&self, mut delivery: Delivery) -> DeliveryId {
        let mut inner = self.lock();
        let id = DeliveryId(inner.next_id);
        inner.next_id += 1;
        delivery.id = id;
        if inner.entries.len() == inner.capacity {
            inner.entries.pop_front();
        }
        inner.entries.push_back(delivery);
        id
    }

    /// Changes a delivery in place and returns its new value; `None` once it has been dropped
    /// from the log.
    pub fn update(&self, id: DeliveryId, change: impl FnOnce(&mut Delivery)) -> Option<Delivery> {
        let mut inner = self.lock();
        let index = inner.index_of(id)?;
        let entry = inner.entries.get_mut(index)?;
        change(entry);
        Some(entry.clone())
    }

    pub fn get(&self, id: DeliveryId) -> Option<Delivery> {
        let inner = self.lock();
        let index = inner.index_of(id)?;
        inner.entries.get(index).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Deliveries matching `query`, newest first.
    pub fn query(&self, query: &DeliveryQuery) -> DeliveryPage {
        let inner = self.lock();
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        let mut deliveries = Vec::new();
        let mut next = None;
        for d in inner.entries.iter().rev() {
            if query.before.is_some_and(|b| d.id >= b) {
                continue;
            }
            let matches = query.alert.as_ref().is_none_or(|a| d.alerts.contains(a))
                && (query.states.is_empty() || query.states.contains(&d.state))
                && (query.channels.is_empty()
                    || d.channel.is_some_and(|c| query.channels.contains(&c)));
            if !matches {
                continue;
            }
            if deliveries.len() == limit {
                // One more matches: the page is not the last.
                next = deliveries.last().map(|d: &Delivery| d.id);
                break;
            }
            deliveries.push(d.clone());
        }
        DeliveryPage { deliveries, next }
    }
}

impl Inner {
    fn index_of(&self, id: DeliveryId) -> Option<usize> {
        let front = self.entries.front()?.id.0;
        let index = id.0.checked_sub(front)?;
        usize::try_from(index)
            .ok()
            .filter(|&i| i < self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(alert: &str, channel: ChannelKind, state: DeliveryState) -> Delivery {
        Delivery {
            id: DeliveryId(0),
            alerts: vec![alert.to_owned()],
            group_key: "g".into(),
            channel: Some(channel),
            receiver: "r".into(),
            notified_state: NotifiedState::Firing,
            escalated: false,
            state,
            attempts: 0,
            last_error: None,
            suppressed_reason: None,
            create_time: SystemTime::UNIX_EPOCH,
            sent_at: None,
            next_attempt_at: None,
        }
    }

    #[test]
    fn keeps_the_most_recent_and_finds_by_id() {
        let log = DeliveryLog::new(3);
        let ids: Vec<DeliveryId> = (0..5)
            .map(|i| {
                log.insert(delivery(
                    &format!("alerts/{i}"),
                    ChannelKind::Slack,
                    DeliveryState::Pending,
                ))
            })
            .collect();
        assert_eq!(log.len(), 3);
        assert!(log.get(ids[1]).is_none());
        assert_eq!(log.get(ids[2]).unwrap().alerts, vec!["alerts/2"]);
        assert!(log.update(ids[0], |d| d.attempts = 9).is_none());
        assert_eq!(log.update(ids[4], |d| d.attempts = 2).unwrap().attempts, 2);
        assert!(log.get(DeliveryId(999)).is_none());
    }

    #[test]
    fn query_filters_and_pages_newest_first() {
        let log = DeliveryLog::new(100);
        use ChannelKind::*;
        use DeliveryState::*;
        let a = log.insert(delivery("alerts/a", Slack, Sent));
        let b = log.insert(delivery("alerts/b", Email, Failed));
        let c = log.insert(delivery("alerts/a", Email, Sent));
        let d = log.insert(delivery("alerts/a", Webhook, Suppressed));

        let all = log.query(&DeliveryQuery::default());
        let ids: Vec<_> = all.deliveries.iter().map(|d| d.id).collect();
        assert_eq!(ids, vec![d, c, b, a]);
        assert_eq!(all.next, None);

        let of_a = log.query(&DeliveryQuery {
            alert: Some("alerts/a".into()),
            states: vec![Sent],
            ..Default::default()
        });
        let ids: Vec<_> = of_a.deliveries.iter().map(|d| d.id).collect();
        assert_eq!(ids, vec![c, a]);

        let email = log.query(&DeliveryQuery {
            channels: vec![Email],
            ..Default::default()
        });
        assert_eq!(email.deliveries.len(), 2);

        let page1 = log.query(&DeliveryQuery {
            limit: 2,
            ..Default::default()
        });
        assert_eq!(
            page1.deliveries.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![d, c]
        );
        assert_eq!(page1.next, Some(c));
        // A new delivery between pages does not shift the next page.
        log.insert(delivery("alerts/z", Slack, Pending));
        let page2 = log.query(&DeliveryQuery {
            limit: 2,
            before: page1.next,
            ..Default::default()
        });
        assert_eq!(
            page2.deliveries.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![b, a]
        );
        assert_eq!(page2.next, None);
    }
}
