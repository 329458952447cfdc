//! Celery remote-control commands addressed to one worker, and their answers.
//!
//! Each is a pidbox broadcast with `destination = [node]` that waits for that node's reply
//! (Celery answers `{"ok": ...}` or `{"error": ...}`; kombu turns an exception raised by the
//! handler into `{"error": "<repr>"}`). Names and arguments are those of
//! `celery/worker/control.py` (5.3 to 5.7).
use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    broker::BrokerError,
    pidbox::{Command, Pidbox},
};

/// A worker's answer to one command.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `{"ok": value}` (or any reply without `error`).
    Ok(Value),
    /// `{"error": message}`: the worker refused; nothing happened.
    Error(String),
    /// No reply within the timeout: it may or may not have happened.
    NoReply,
}

/// Remote control of single workers.
#[derive(Clone)]
pub struct Control {
    pidbox: Pidbox,
    timeout: Duration,
}

impl Control {
    /// `timeout`: how long to wait for a worker's reply to one command.
    pub fn new(pidbox: Pidbox, timeout: Duration) -> Self {
        Self { pidbox, timeout }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `method(arguments)` to `node` and waits for its reply.
    pub async fn call(
        &self,
        node: &str,
        method: &'static str,
        arguments: Value,
    ) -> Result<Answer, BrokerError> {
        let command = Command { method, arguments };
        let destination = [node.to_string()];
        let replies = self
            .pidbox
            .broadcast(&[command], Some(&destination), self.timeout, Some(1))
            .await?;
        Ok(match replies.into_iter().find(|r| r.node == node) {
            None => Answer::NoReply,
            Some(reply) => answer(reply.value),
        })
    }

    /// Sends a command that has no reply (e.g. `shutdown`, which ends the worker).
    pub async fn cast(
        &self,
        node: &str,
        method: &'static str,
        arguments: Value,
    ) -> Result<(), BrokerError> {
        let destination = [node.to_string()];
        self.pidbox
            .cast(&Command { method, arguments }, Some(&destination))
            .await
    }

    pub async fn ping(&self, node: &str) -> Result<bool, BrokerError> {
        Ok(matches!(
            self.call(node, "ping", json!({})).await?,
            Answer::Ok(_)
        ))
    }

    /// The queues the worker consumes now (`active_queues`), by name.
    pub async fn active_queues(&self, node: &str) -> Result<Option<Vec<String>>, BrokerError> {
        Ok(match self.call(node, "active_queues", json!({})).await? {
            Answer::Ok(Value::Array(queues)) => Some(
                queues
                    .iter()
                    .filter_map(|q| q.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
    }

    /// Tasks the worker is running plus those it holds prefetched (`active` + `reserved`);
    /// `None` when it did not answer both.
    pub async fn busy(&self, node: &str) -> Result<Option<usize>, BrokerError> {
        let count = |a: Answer| match a {
            Answer::Ok(Value::Array(tasks)) => Some(tasks.len()),
            _ => None,
        };
        let active = count(self.call(node, "active", json!({})).await?);
        let reserved = count(self.call(node, "reserved", json!({})).await?);
        Ok(active.zip(reserved).map(|(a, r)| a + r))
    }

    /// The pool's current number of processes (`stats` → `pool.processes`), or its
    /// `max-concurrency` when it lists no processes (threads, gevent); `None` when unknown.
    pub async fn pool_size(&self, node: &str) -> Result<Option<(String, usize)>, BrokerError> {
        Ok(match self.call(node, "stats", json!({})).await? {
            Answer::Ok(stats) => {
                let pool = &stats["pool"];
                let implementation = pool["implementation"].as_str().unwrap_or("").to_string();
                let size = pool["processes"]
                    .as_array()
                    .map(Vec::len)
                    .or_else(|| pool["max-concurrency"].as_u64().map(|n| n as usize));
                size.map(|s| (implementation, s))
            }
            _ => None,
        })
    }
}

/// Reads a reply value: `{"error": ...}` is a refusal; anything else an answer.
fn answer(value: Value) -> Answer {
    match value.get("error") {
        Some(err) => Answer::Error(
            err.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| err.to_string()),
        ),
        None => Answer::Ok(value.get("ok").cloned().unwrap_or(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_as_celery_writes_them() {
        assert_eq!(
            answer(json!({"ok": "no longer consuming from q"})),
            Answer::Ok(json!("no longer consuming from q"))
        );
        assert_eq!(
            answer(json!({"error": "unknown task"})),
            Answer::Error("unknown task".into())
        );
        assert_eq!(
            answer(json!({"error": {"x": 1}})),
            Answer::Error("{\"x\":1}".into())
        );
        // `active` and `active_queues` reply with a bare list.
        assert_eq!(answer(json!([1, 2])), Answer::Ok(json!([1, 2])));
    }
}
