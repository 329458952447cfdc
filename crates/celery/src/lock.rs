//! Per-target locks in Redis, so that conflicting control actions on one worker, from this or
//! another warden replica, take turns.
//!
//! A lock is `SET key value NX PX ttl`; the value names its holder (a random token and the
//! holder's request id), so that only the holder releases it (compare-and-delete in a Lua
//! script) or extends it (compare-and-`PEXPIRE`). A holder that dies leaves a lock that expires
//! after the TTL. Long actions extend their locks while they run ([`LockGuard::extend`]).
use std::time::Duration;

use crate::broker::{Broker, BrokerError};

/// The default lock TTL.
pub const LOCK_TTL: Duration = Duration::from_secs(60);

const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                       return redis.call('DEL', KEYS[1]) else return 0 end";
const EXTEND: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                      return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// Locks on one Redis.
#[derive(Clone)]
pub struct Locks {
    broker: Broker,
    ttl: Duration,
}

/// A held lock. Release it with [`LockGuard::release`] when the action ends; a guard that is
/// dropped without it leaves the lock to expire.
#[derive(Debug, Clone)]
pub struct LockGuard {
    key: String,
    value: String,
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it; `holder` is its request id (empty when it gave none).
    #[error("locked by request {holder:?}")]
    Held { holder: String },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl Locks {
    pub fn new(broker: Broker, ttl: Duration) -> Self {
        Self { broker, ttl }
    }

    fn key(&self, target: &str) -> String {
        self.broker.keys().key(&format!("warden.lock.{target}"))
    }

    /// Takes the lock of `target` for `request_id` once, without waiting.
    pub async fn try_acquire(
        &self,
        target: &str,
        request_id: &str,
    ) -> Result<LockGuard, LockError> {
        let key = self.key(target);
        let value = format!("{}|{request_id}", uuid::Uuid::new_v4());
        let set: Option<String> = self
            .broker
            .query(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.ttl.as_millis() as u64),
            )
            .await?;
        if set.is_some() {
            return Ok(LockGuard { key, value });
        }
        let current: Option<String> = self.broker.query(redis::cmd("GET").arg(&key)).await?;
        Err(LockError::Held {
            holder: current
                .as_deref()
                .and_then(|v| v.split_once('|'))
                .map(|(_, id)| id.to_string())
                .unwrap_or_default(),
        })
    }

    /// Takes the lock, retrying every 100 ms for at most `wait`.
    pub async fn acquire(
        &self,
        target: &str,
        request_id: &str,
        wait: Duration,
    ) -> Result<LockGuard, LockError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.try_acquire(target, request_id).await {
                Err(LockError::Held { holder }) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(LockError::Held { holder });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// Releases the lock if it is still ours (compare-and-delete).
    pub async fn release(&self, guard: &LockGuard) -> Result<bool, BrokerError> {
        let deleted: i64 = self
            .broker
            .query(
                redis::cmd("EVAL")
                    .arg(RELEASE)
                    .arg(1)
                    .arg(&guard.key)
                    .arg(&guard.value),
            )
            .await?;
        Ok(deleted == 1)
    }

    /// Pushes the lock's expiry a TTL out, if it is still ours.
    pub async fn extend(&self, guard: &LockGuard) -> Result<bool, BrokerError> {
        let extended: i64 = self
            .broker
            .query(
                redis::cmd("EVAL")
                    .arg(EXTEND)
                    .arg(1)
                    .arg(&guard.key)
                    .arg(&guard.value)
                    .arg(self.ttl.as_millis() as u64),
            )
            .await?;
        Ok(extended == 1)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}
