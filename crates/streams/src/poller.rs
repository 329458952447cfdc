//! One poll of the watched streams, pipelined, and the loop that repeats it. Round trips per
//! poll: three pipelines (groups and lengths; consumers and pending summaries; heartbeats and
//! markers), whatever the number of streams, plus, every [`DISCOVERY_EVERY`] polls, the SCANs
//! that find the streams and the heartbeat keys (see [`Discovery`]).
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::{Value, aio::MultiplexedConnection};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use warden_core::{
    Backend, ConsumedQueue, FleetHandle, LeaseReport, LeaseRound, QueueDepth, SourceStatus,
    StreamConsumer, owner::FleetMessage,
};

use crate::{SOURCE, heartbeat, scope_of};

/// Keys asked per SCAN step.
const SCAN_COUNT: u32 = 1000;

/// What the Streams adapter watches and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsSettings {
    /// Redis holding the streams.
    pub redis_url: String,
    /// Stream names or globs.
    pub streams: Vec<String>,
    pub heartbeat_prefix: String,
    pub shutdown_prefix: String,
    pub poll_interval: Duration,
    /// Longest one poll (or janitor pass) may take.
    pub timeout: Duration,
    /// The periodic janitor.
    pub janitor: crate::janitor::JanitorSettings,
    /// Run ReclaimPending's logic for every group every 10 s ([`crate::reclaimer`]).
    pub auto_reclaim: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// A consumer group as `XINFO GROUPS` shows it.
#[derive(Debug, Clone, Default)]
struct Group {
    stream: String,
    name: String,
    pending: u64,
    last_delivered_id: String,
    lag: Option<u64>,
}

/// The keyspace SCANs' results (the watched streams, the heartbeat keys), reused between
/// refreshes: a SCAN walks the whole keyspace of the Redis, which may hold far more than the
/// fleet (100,000 unrelated keys made a poll of 1,000 consumers 20× slower, see
/// docs/performance.md). Between refreshes, known consumers are still read every poll (from
/// `XINFO CONSUMERS` and their heartbeat keys); only a new stream, or a heartbeat of a consumer
/// that has not read yet, waits for the next refresh.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Refresh at every this many polls (1: every poll).
    pub refresh_every: u32,
    polls: u32,
    fresh: bool,
    streams: Vec<String>,
    heartbeat_keys: Vec<String>,
}

impl Discovery {
    /// SCANs at the first poll and then every `refresh_every` polls.
    pub fn new(refresh_every: u32) -> Self {
        Self {
            refresh_every: refresh_every.max(1),
            ..Self::default()
        }
    }

    /// Forgets what it found: the next poll SCANs (e.g. after a connection error).
    pub fn invalidate(&mut self) {
        self.fresh = false;
    }
}

/// Polls between two discovery SCANs by default: 10 × the 3 s poll = 30 s.
pub const DISCOVERY_EVERY: u32 = 10;

/// What one poll found: the leases per scope and the queue depths.
#[derive(Debug, Default)]
pub struct Poll {
    pub round: Vec<(Arc<str>, Vec<LeaseReport>)>,
    pub depths: Vec<QueueDepth>,
}

pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// The fields of a RESP3 map or a RESP2 flat array of pairs.
pub(crate) fn fields(v: &Value) -> BTreeMap<String, &Value> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v)))
            .collect(),
        Value::Array(items) => items
            .chunks_exact(2)
            .filter_map(|p| Some((text(&p[0])?, &p[1])))
            .collect(),
        _ => BTreeMap::new(),
    }
}

pub(crate) fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

/// Escapes glob metacharacters so that a literal prefix can lead a MATCH pattern.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(crate) async fn scan(
    con: &mut MultiplexedConnection,
    pattern: &str,
    kind: Option<&str>,
) -> Result<Vec<String>, PollError> {
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        if let Some(kind) = kind {
            cmd.arg("TYPE").arg(kind);
        }
        let (next, keys): (u64, Vec<Vec<u8>>) = cmd.query_async(con).await?;
        out.extend(
            keys.into_iter()
                .map(|k| String::from_utf8_lossy(&k).into_owned()),
        );
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// The streams that exist and match `patterns` (names or globs), sorted, without duplicates.
pub async fn resolve(
    con: &mut MultiplexedConnection,
    patterns: &[String],
) -> Result<Vec<String>, PollError> {
    let mut streams = BTreeSet::new();
    for pattern in patterns {
        streams.extend(scan(con, pattern, Some("stream")).await?);
    }
    Ok(streams.into_iter().collect())
}

/// The ms timestamp of a stream entry id (`{ms}-{seq}`).
fn id_time(id: &str) -> Option<SystemTime> {
    let ms: u64 = id.split('-').next()?.parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(ms))
}

/// One poll. `now` is the fleet clock's (for ages).
/// `leased` holds the consumers that held a heartbeat at the last poll, (stream, consumer) ->
/// group: one that vanished since (heartbeat gone, and not a consumer of its group any more) is
/// still reported once, so that the transition is decided.
pub async fn poll(
    con: &mut MultiplexedConnection,
    settings: &StreamsSettings,
    now: SystemTime,
    leased: &mut BTreeMap<(String, String), String>,
    discovery: &mut Discovery,
) -> Result<Poll, PollError> {
    if !discovery.fresh || discovery.polls >= discovery.refresh_every.max(1) {
        discovery.streams = resolve(con, &settings.streams).await?;
        discovery.heartbeat_keys = scan(
            con,
            &format!("{}*", escape_glob(&settings.heartbeat_prefix)),
            None,
        )
        .await?;
        // Nothing found yet (the streams are being created): look again at the next poll.
        discovery.fresh = !discovery.streams.is_empty();
        discovery.polls = 0;
    }
    discovery.polls += 1;
    let streams = discovery.streams.clone();
    if streams.is_empty() {
        return Ok(Poll::default());
    }

    // Lengths and groups.
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for s in &streams {
        pipe.cmd("XLEN").arg(s).cmd("XINFO").arg("GROUPS").arg(s);
    }
    let replies: Vec<Value> = pipe.query_async(con).await?;
    let mut lengths = BTreeMap::new();
    let mut groups = Vec::new();
    for (s, pair) in streams.iter().zip(replies.chunks_exact(2)) {
        lengths.insert(s.clone(), number(&pair[0]).unwrap_or(0));
        for g in items(&pair[1]) {
            let f = fields(g);
            let Some(name) = f.get("name").and_then(|v| text(v)) else {
                continue;
            };
            groups.push(Group {
                stream: s.clone(),
                name,
                pending: f.get("pending").and_then(|v| number(v)).unwrap_or(0),
                last_delivered_id: f
                    .get("last-delivered-id")
                    .and_then(|v| text(v))
                    .filter(|id| id != "0-0")
                    .unwrap_or_default(),
                lag: f.get("lag").and_then(|v| number(v)),
            });
        }
    }

    // Consumers and pending summaries, per group.
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for g in &groups {
        pipe.cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&g.stream)
            .arg(&g.name)
            .cmd("XPENDING")
            .arg(&g.stream)
            .arg(&g.name);
    }
    let replies: Vec<Value> = if groups.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(con).await?
    };
    // (stream, group) -> consumers (name, pending, idle).
    let mut consumers: Vec<Vec<(String, u64, Duration)>> = Vec::new();
    let mut oldest: Vec<Option<Duration>> = Vec::new();
    for pair in replies.chunks_exact(2) {
        consumers.push(
            items(&pair[0])
                .iter()
                .filter_map(|c| {
                    let f = fields(c);
                    Some((
                        text(f.get("name")?)?,
                        f.get("pending").and_then(|v| number(v)).unwrap_or(0),
                        Duration::from_millis(f.get("idle").and_then(|v| number(v)).unwrap_or(0)),
                    ))
                })
                .collect(),
        );
        let summary = items(&pair[1]);
        oldest.push(
            summary
                .get(1)
                .and_then(text)
                .and_then(|id| id_time(&id))
                .map(|t| now.duration_since(t).unwrap_or_default()),
        );
    }

    // Heartbeat keys, matched to the watched streams (the longest stream name that fits).
    let mut candidates: BTreeSet<(String, String)> = BTreeSet::new();
    for key in &discovery.heartbeat_keys {
        let Some(rest) = key.strip_prefix(&settings.heartbeat_prefix) else {
            continue;
        };
        let stream = streams
            .iter()
            .filter(|s| rest.len() > s.len() + 1 && rest.starts_with(s.as_str()))
            .filter(|s| rest.as_bytes()[s.len()] == b':')
            .max_by_key(|s| s.len());
        if let Some(stream) = stream {
            candidates.insert((stream.clone(), rest[stream.len() + 1..].to_string()));
        }
    }
    for (g, list) in groups.iter().zip(&consumers) {
        for (name, _, _) in list {
            candidates.insert((g.stream.clone(), name.clone()));
        }
    }

    candidates.extend(leased.keys().cloned());
    // Heartbeats and markers.
    let candidates: Vec<(String, String)> = candidates.into_iter().collect();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for (stream, consumer) in &candidates {
        pipe.cmd("GET")
            .arg(format!("{}{stream}:{consumer}", settings.heartbeat_prefix))
            .cmd("EXISTS")
            .arg(format!("{}{stream}:{consumer}", settings.shutdown_prefix));
    }
    let replies: Vec<Value> = if candidates.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(con).await?
    };
    let mut beats = BTreeMap::new();
    for (candidate, pair) in candidates.iter().zip(replies.chunks_exact(2)) {
        let lease = match &pair[0] {
            Value::BulkString(b) => Some(heartbeat::parse(b)),
            Value::SimpleString(s) => Some(heartbeat::parse(s.as_bytes())),
            _ => None,
        };
        let goodbye = number(&pair[1]).unwrap_or(0) > 0;
        beats.insert(candidate.clone(), (lease, goodbye));
    }

    let mut poll = Poll::default();
    let mut placed: BTreeSet<(String, String)> = BTreeSet::new();
    let mut scopes: BTreeMap<(String, String), Vec<LeaseReport>> = BTreeMap::new();
    for (g, list) in groups.iter().zip(&consumers) {
        let scope = scope_of(&g.stream, &g.name);
        let reports = scopes
            .entry((g.stream.clone(), g.name.clone()))
            .or_default();
        for (name, pending, idle) in list {
            let (lease, goodbye) = beats
                .get(&(g.stream.clone(), name.clone()))
                .cloned()
                .unwrap_or((None, false));
            placed.insert((g.stream.clone(), name.clone()));
            reports.push(LeaseReport {
                name: name.clone(),
                group: scope.clone(),
                lease: lease.map(|(l, _)| l),
                goodbye,
                idle: Some(*idle),
                queues: vec![ConsumedQueue {
                    name: scope.clone(),
                    ..ConsumedQueue::default()
                }],
                stream: Some(StreamConsumer {
                    stream: g.stream.clone(),
                    group: g.name.clone(),
                    pending: *pending,
                    idle: *idle,
                    last_delivered_id: g.last_delivered_id.clone(),
                }),
            });
        }
    }
    // Heartbeats of consumers that have not read yet: in the group they name, else in the
    // stream's only group.
    for ((stream, consumer), (lease, goodbye)) in &beats {
        let Some((lease, named)) = lease else {
            continue;
        };
        if placed.contains(&(stream.clone(), consumer.clone())) {
            continue;
        }
        let of_stream: Vec<&Group> = groups.iter().filter(|g| &g.stream == stream).collect();
        let named = named
            .as_ref()
            .or_else(|| leased.get(&(stream.clone(), consumer.clone())));
        let group = match named {
            Some(named) => of_stream.iter().find(|g| &g.name == named),
            None if of_stream.len() == 1 => of_stream.first(),
            None => None,
        };
        let Some(group) = group else {
            debug!(%stream, %consumer, "a heartbeat without a consumer group: not placed yet");
            continue;
        };
        placed.insert((stream.clone(), consumer.clone()));
        let scope = scope_of(stream, &group.name);
        scopes
            .entry((stream.clone(), group.name.clone()))
            .or_default()
            .push(LeaseReport {
                name: consumer.clone(),
                group: scope.clone(),
                lease: Some(lease.clone()),
                goodbye: *goodbye,
                idle: None,
                queues: vec![ConsumedQueue {
                    name: scope.clone(),
                    ..ConsumedQueue::default()
                }],
                stream: Some(StreamConsumer {
                    stream: stream.clone(),
                    group: group.name.clone(),
                    last_delivered_id: group.last_delivered_id.clone(),
                    ..StreamConsumer::default()
                }),
            });
    }
    // Consumers that held a heartbeat and vanished: reported once more, without it.
    for ((stream, consumer), group) in leased.iter() {
        if placed.contains(&(stream.clone(), consumer.clone())) {
            continue;
        }
        let (lease, goodbye) = beats
            .get(&(stream.clone(), consumer.clone()))
            .cloned()
            .unwrap_or((None, false));
        scopes
            .entry((stream.clone(), group.clone()))
            .or_default()
            .push(LeaseReport {
                name: consumer.clone(),
                group: scope_of(stream, group),
                lease: lease.map(|(l, _)| l),
                goodbye,
                ..LeaseReport::default()
            });
    }
    leased.clear();
    for ((stream, group), reports) in &scopes {
        for report in reports.iter().filter(|r| r.lease.is_some()) {
            leased.insert((stream.clone(), report.name.clone()), group.clone());
        }
    }
    for ((stream, group), reports) in scopes {
        poll.round
            .push((Arc::from(scope_of(&stream, &group)), reports));
    }
    for (g, oldest) in groups.iter().zip(oldest) {
        let depth = g
            .lag
            .unwrap_or_else(|| lengths.get(&g.stream).copied().unwrap_or(0));
        poll.depths.push(QueueDepth {
            name: scope_of(&g.stream, &g.name),
            backend: Backend::RedisStreams,
            by_priority: if depth > 0 {
                vec![(0, depth)]
            } else {
                Vec::new()
            },
            unacked: g.pending,
            lag: g.lag,
            oldest_pending_age: oldest,
        });
    }
    Ok(poll)
}

/// Polls every `poll_interval` until `cancel`, feeding the fleet and reporting the Streams
/// source's status (its outage marks only Streams workers stale).
pub async fn run(settings: StreamsSettings, fleet: FleetHandle, cancel: CancellationToken) {
    let client = match redis::Client::open(settings.redis_url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            warn!(error = %e, "streams: invalid Redis URL; the Streams backend is off");
            return;
        }
    };
    let mut tick = warden_core::clock::ticker(settings.poll_interval);
    let mut con: Option<MultiplexedConnection> = None;
    let mut last_ok = None;
    let mut leased = BTreeMap::new();
    let mut discovery = Discovery::new(DISCOVERY_EVERY);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let attempt = async {
            if con.is_none() {
                con = Some(client.get_multiplexed_async_connection().await?);
            }
            let con = con.as_mut().expect("connected");
            poll(
                con,
                &settings,
                fleet.clock().now(),
                &mut leased,
                &mut discovery,
            )
            .await
        };
        let result = match tokio::time::timeout(settings.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(PollError::Timeout(settings.timeout)),
        };
        let status = match result {
            Ok(found) => {
                if failing {
                    tracing::info!("streams: Redis answers again");
                    failing = false;
                }
                last_ok = Some(fleet.clock().now());
                let sent = async {
                    fleet
                        .observe(FleetMessage::Leases(LeaseRound {
                            backend: Backend::RedisStreams,
                            scopes: found.round,
                        }))
                        .await?;
                    fleet.observe(FleetMessage::Queues(found.depths)).await
                };
                if sent.await.is_err() {
                    return;
                }
                SourceStatus {
                    source: SOURCE,
                    backends: vec![Backend::RedisStreams],
                    connected: true,
                    reason: String::new(),
                    last_ok,
                }
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "streams: poll failed");
                    failing = true;
                }
                con = None;
                discovery.invalidate();
                SourceStatus {
                    source: SOURCE,
                    backends: vec![Backend::RedisStreams],
                    connected: false,
                    reason: e.to_string(),
                    last_ok,
                }
            }
        };
        if fleet.observe(FleetMessage::Source(status)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_and_resp3_fields_read_alike() {
        let resp2 = Value::Array(vec![
            Value::BulkString(b"name".to_vec()),
            Value::BulkString(b"g".to_vec()),
            Value::BulkString(b"pending".to_vec()),
            Value::Int(3),
        ]);
        let resp3 = Value::Map(vec![
            (
                Value::SimpleString("name".into()),
                Value::BulkString(b"g".to_vec()),
            ),
            (Value::SimpleString("pending".into()), Value::Int(3)),
        ]);
        for v in [resp2, resp3] {
            let f = fields(&v);
            assert_eq!(text(f["name"]).as_deref(), Some("g"));
            assert_eq!(number(f["pending"]), Some(3));
        }
        assert_eq!(escape_glob("a*b:"), "a\\*b:");
        assert_eq!(
            id_time("1700000000123-4"),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
    }
}
