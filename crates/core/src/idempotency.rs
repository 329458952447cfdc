//! Idempotency keys: a request repeated with the same `request_id` by the same caller is not
//! acted on again; it gets the first call's answer.
//!
//! Kept in memory for [`IDEMPOTENCY_TTL`] (at most [`MAX_KEYS`] keys, the oldest dropped
//! first), per process: a replica that did not see the first call acts again, and the target
//! lock (held by the first call while it acts) is what serialises replicas. Only calls that
//! answered OK are remembered, so a failed call may be retried with the same id.
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use crate::clock::Clock;

/// How long a key is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most keys remembered.
pub const MAX_KEYS: usize = 100_000;

/// What a key maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// First time: the caller acts, then calls [`Idempotency::complete`] or
    /// [`Idempotency::abandon`].
    New,
    /// The first call is still being handled.
    InProgress,
    /// The same id came with a different request.
    Reused,
    /// The first call's answer (encoded).
    Done(Vec<u8>),
}

enum Slot {
    InProgress { fingerprint: u64 },
    Done { fingerprint: u64, answer: Vec<u8> },
}

type Key = (String, String);

/// The key table. Cheap to clone.
#[derive(Clone)]
pub struct Idempotency {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<Key, (SystemTime, Slot)>,
    order: VecDeque<(SystemTime, Key)>,
}

impl Idempotency {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::default(),
            clock,
        }
    }

    /// Looks `(caller, request_id)` up; for a new key, marks it in progress.
    pub fn begin(&self, caller: &str, request_id: &str, fingerprint: u64) -> Seen {
        let now = self.clock.now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Expire old keys (and keep the table bounded).
        while let Some((at, key)) = inner.order.front().cloned() {
            let expired = now.duration_since(at).unwrap_or_default() > IDEMPOTENCY_TTL;
            if !expired && inner.order.len() <= MAX_KEYS {
                break;
            }
            inner.order.pop_front();
            if inner.slots.get(&key).is_some_and(|(t, _)| *t == at) {
                inner.slots.remove(&key);
            }
        }
        let key = (caller.to_string(), request_id.to_string());
        match inner.slots.get(&key) {
            Some((_, Slot::InProgress { fingerprint: f })) if *f == fingerprint => Seen::InProgress,
            Some((
                _,
                Slot::Done {
                    fingerprint: f,
                    answer,
                },
            )) if *f == fingerprint => Seen::Done(answer.clone()),
            Some(_) => Seen::Reused,
            None => {
                inner
                    .slots
                    .insert(key.clone(), (now, Slot::InProgress { fingerprint }));
                inner.order.push_back((now, key));
                Seen::New
            }
        }
    }

    /// Remembers the answer of a call that answered OK.
    pub fn complete(&self, caller: &str, request_id: &str, fingerprint: u64, answer: Vec<u8>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, slot)) = inner
            .slots
            .get_mut(&(caller.to_string(), request_id.to_string()))
        {
            *slot = Slot::Done {
                fingerprint,
                answer,
            };
        }
    }

    /// Forgets a call that failed, so that it may be retried with the same id.
    pub fn abandon(&self, caller: &str, request_id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (caller.to_string(), request_id.to_string());
        if matches!(inner.slots.get(&key), Some((_, Slot::InProgress { .. }))) {
            inner.slots.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn a_key_acts_once_then_replays_then_expires() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let keys = Idempotency::new(clock.clone());
        assert_eq!(keys.begin("ci", "r1", 7), Seen::New);
        assert_eq!(keys.begin("ci", "r1", 7), Seen::InProgress);
        assert_eq!(keys.begin("ci", "r1", 8), Seen::Reused);
        // Another caller's key is its own.
        assert_eq!(keys.begin("other", "r1", 8), Seen::New);
        keys.complete("ci", "r1", 7, b"answer".to_vec());
        assert_eq!(keys.begin("ci", "r1", 7), Seen::Done(b"answer".to_vec()));
        clock.advance(IDEMPOTENCY_TTL + Duration::from_secs(1));
        assert_eq!(keys.begin("ci", "r1", 7), Seen::New);
    }

    #[test]
    fn a_failed_call_may_be_retried() {
        let keys = Idempotency::new(Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH)));
        assert_eq!(keys.begin("ci", "r1", 1), Seen::New);
        keys.abandon("ci", "r1");
        assert_eq!(keys.begin("ci", "r1", 1), Seen::New);
    }
}
