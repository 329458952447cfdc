//! Queue depths on Redis, measured the way kombu stores queues: a list per queue plus one per
//! priority step (all summed into the depth), and delivered-but-unacknowledged messages in
//! the `unacked` hash (reported separately).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use serde::de::IgnoredAny;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::broker::{Broker, BrokerError, KOMBU_SEP, PRIORITY_STEPS};
use warden_core::{BrokerStatus, FleetHandle, QueueDepth, owner::FleetMessage};
use warden_metrics::Metrics;

/// At most this many queues are measured per round.
pub const MAX_QUEUES: usize = 10_000;
/// Exchanges of kombu's own machinery, not task queues.
const INTERNAL_EXCHANGES: [&str; 3] = ["celery.pidbox", "reply.celery.pidbox", "celeryev"];

/// Queues declared on the broker: queue names, and how each exchange routes to them.
#[derive(Debug, Default)]
struct Bindings {
    queues: BTreeSet<String>,
    /// exchange -> routing key -> queues
    routes: HashMap<String, HashMap<String, Vec<String>>>,
}

/// Escapes glob characters so that a key prefix matches literally in SCAN.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

async fn read_bindings(broker: &Broker) -> Result<Bindings, BrokerError> {
    let prefix = broker.keys().key("_kombu.binding.");
    let pattern = format!("{}*", glob_escape(&prefix));
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = broker
            .query(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000),
            )
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 || keys.len() > MAX_QUEUES {
            break;
        }
    }
    let mut bindings = Bindings::default();
    for key in keys {
        let exchange = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
        if INTERNAL_EXCHANGES.contains(&exchange.as_str()) {
            continue;
        }
        let members: Vec<String> = broker.query(redis::cmd("SMEMBERS").arg(&key)).await?;
        for member in members {
            let mut parts = member.split(KOMBU_SEP);
            let (Some(routing_key), Some(_pattern), Some(queue)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if queue.is_empty() || queue.ends_with(".pidbox") {
                continue;
            }
            bindings.queues.insert(queue.to_string());
            bindings
                .routes
                .entry(exchange.clone())
                .or_default()
                .entry(routing_key.to_string())
                .or_default()
                .push(queue.to_string());
        }
    }
    Ok(bindings)
}

/// Counts unacknowledged messages per queue from kombu's `unacked` hash, whose values are
/// `[message, exchange, routing_key]`.
fn unacked_by_queue(
    values: &[Vec<u8>],
    bindings: &Bindings,
    metrics: &Metrics,
) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for value in values {
        let Ok((_, exchange, routing_key)) =
            serde_json::from_slice::<(IgnoredAny, String, String)>(value)
        else {
            metrics.message_rejected("unacked", "malformed");
            continue;
        };
        let queues: Vec<String> = if exchange.is_empty() {
            vec![routing_key]
        } else {
            bindings
                .routes
                .get(&exchange)
                .and_then(|r| r.get(&routing_key))
                .cloned()
                .unwrap_or_default()
        };
        for queue in queues {
            *counts.entry(queue).or_insert(0) += 1;
        }
    }
    counts
}

/// Most entries of kombu's `unacked` hash read per round. Beyond it the counts cover only
/// the entries read (counted as `unacked`/`truncated`): a hash of millions of messages must
/// not be loaded at once.
pub const MAX_UNACKED_SCANNED: usize = 100_000;
/// Entries asked for per HSCAN call.
const UNACKED_SCAN_BATCH: usize = 1_000;

/// One field and value of a hash, as HSCAN returns them.
type HashEntry = (Vec<u8>, Vec<u8>);

/// Counts unacknowledged messages per queue, reading the hash in bounded HSCAN batches.
async fn read_unacked(
    broker: &Broker,
    bindings: &Bindings,
    metrics: &Metrics,
) -> Result<HashMap<String, u64>, BrokerError> {
    let key = broker.keys().key("unacked");
    let mut counts = HashMap::new();
    let mut cursor: u64 = 0;
    let mut scanned = 0usize;
    loop {
        let (next, entries): (u64, Vec<HashEntry>) = broker
            .query(
                redis::cmd("HSCAN")
                    .arg(&key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(UNACKED_SCAN_BATCH),
            )
            .await?;
        scanned += entries.len();
        let values: Vec<Vec<u8>> = entries.into_iter().map(|(_, v)| v).collect();
        for (queue, n) in unacked_by_queue(&values, bindings, metrics) {
            *counts.entry(queue).or_insert(0) += n;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
        if scanned >= MAX_UNACKED_SCANNED {
            metrics.message_rejected("unacked", "truncated");
            break;
        }
    }
    Ok(counts)
}

/// Measures every queue the workers consume or the broker declares.
pub async fn measure(
    broker: &Broker,
    fleet: &FleetHandle,
    metrics: &Metrics,
) -> Result<Vec<QueueDepth>, BrokerError> {
    let bindings = read_bindings(broker).await?;
    let mut names: BTreeSet<String> = bindings.queues.clone();
    // Celery workers' queues only: a Streams consumer's queue is its stream and group, measured
    // by the Streams adapter (and LLEN of a stream key is an error).
    for worker in fleet.snapshot().workers.values() {
        if worker.key.backend == warden_core::Backend::Celery {
            names.extend(worker.queues.iter().map(|q| q.name.clone()));
        }
    }
    let names: Vec<String> = names.into_iter().take(MAX_QUEUES).collect();
    let keys = broker.keys();
    let mut pipe = redis::pipe();
    for name in &names {
        for step in PRIORITY_STEPS {
            pipe.cmd("LLEN").arg(keys.queue_list(name, step));
        }
    }
    let lengths: Vec<u64> = if names.is_empty() {
        Vec::new()
    } else {
        broker.query_pipe(&pipe).await?
    };
    let unacked = read_unacked(broker, &bindings, metrics).await?;
    let mut depths: BTreeMap<String, QueueDepth> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let by_priority = PRIORITY_STEPS
            .iter()
            .zip(&lengths[i * PRIORITY_STEPS.len()..(i + 1) * PRIORITY_STEPS.len()])
            .filter(|(_, n)| **n > 0)
            .map(|(step, n)| (*step, *n))
            .collect();
        depths.insert(
            name.clone(),
            QueueDepth {
                name: name.clone(),
                by_priority,
                unacked: unacked.get(name).copied().unwrap_or(0),
                ..QueueDepth::default()
            },
        );
    }
    Ok(depths.into_values().collect())
}

/// Measures every `interval` while the broker is up, until `cancel`.
pub async fn run(
    broker: Broker,
    fleet: FleetHandle,
    metrics: Metrics,
    interval: Duration,
    broker_status: watch::Receiver<BrokerStatus>,
    cancel: CancellationToken,
) {
    let mut tick = warden_core::clock::ticker(interval);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !broker_status.borrow().connected {
            continue;
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = measure(&broker, &fleet, &metrics) => r,
        };
        match result {
            Ok(depths) => {
                if failing {
                    debug!("queue measurement works again");
                }
                failing = false;
                if fleet.observe(FleetMessage::Queues(depths)).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                if !failing {
                    warn!(%err, "queue measurement failed");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacked_entries_are_attributed_to_their_queue() {
        let mut bindings = Bindings::default();
        bindings
            .routes
            .entry("media".into())
            .or_default()
            .insert("video".into(), vec!["transcode".into()]);
        let values = vec![
            br#"[{"body": "..."}, "", "celery"]"#.to_vec(),
            br#"[{"body": "..."}, "", "celery"]"#.to_vec(),
            br#"[{"body": "..."}, "media", "video"]"#.to_vec(),
            b"not json".to_vec(),
        ];
        let metrics = Metrics::new();
        let counts = unacked_by_queue(&values, &bindings, &metrics);
        assert_eq!(counts["celery"], 2);
        assert_eq!(counts["transcode"], 1);
        assert_eq!(metrics.rejected_count("unacked", "malformed"), 1);
    }

    #[test]
    fn prefixes_are_escaped_for_scan() {
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }
}
