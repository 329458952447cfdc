//! The Streams janitor against a real redis-server: a property test over random interleavings
//! of add / create group / read / ack / claim / set-id / trim asserts that a trim never removes
//! a pending or undelivered entry of any group, and removes everything below the bound; random
//! consumer states show a consumer is deleted only when it has no heartbeat, nothing pending and
//! is idle past the threshold; and the periodic janitor inside warden does both next to real
//! worker processes.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use redis::{AsyncCommands as _, Value, aio::MultiplexedConnection};
use warden_streams::janitor;

use crate::support::*;

/// A stream entry id, ordered as Redis orders them.
type Id = (u64, u64);

fn parse_id(s: &str) -> Id {
    let (ms, seq) = s.split_once('-').expect("ms-seq");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

fn show(id: Id) -> String {
    format!("{}-{}", id.0, id.1)
}

/// A small deterministic generator (xorshift64*), so that a failing case is replayed from the
/// seed printed with it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

async fn connect(redis: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(redis.url(0))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

async fn entries(con: &mut MultiplexedConnection, stream: &str) -> Vec<Id> {
    let reply: Vec<(String, Value)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .unwrap();
    reply.into_iter().map(|(id, _)| parse_id(&id)).collect()
}

/// Per group: last-delivered id and pending ids.
async fn groups(con: &mut MultiplexedConnection, stream: &str) -> BTreeMap<String, (Id, Vec<Id>)> {
    let info: Vec<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(con)
        .await
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for g in info {
        let fields: BTreeMap<String, Value> = redis::from_redis_value(g).unwrap();
        let name: String = redis::from_redis_value(fields["name"].clone()).unwrap();
        let last: String = redis::from_redis_value(fields["last-delivered-id"].clone()).unwrap();
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(&name)
            .arg("-")
            .arg("+")
            .arg(100_000)
            .query_async(con)
            .await
            .unwrap();
        out.insert(
            name,
            (
                parse_id(&last),
                pending.into_iter().map(|p| parse_id(&p.0)).collect(),
            ),
        );
    }
    out
}

fn successor(id: Id) -> Id {
    if id.1 == u64::MAX {
        (id.0 + 1, 0)
    } else {
        (id.0, id.1 + 1)
    }
}

/// One random operation on `stream`, as a worker fleet or an operator would do it.
async fn random_op(
    con: &mut MultiplexedConnection,
    rng: &mut Rng,
    stream: &str,
    log: &mut Vec<String>,
) {
    let known = groups(con, stream).await;
    let names: Vec<String> = known.keys().cloned().collect();
    let consumers = ["c1", "c2", "c3"];
    let ids = entries(con, stream).await;
    match rng.below(10) {
        0..=2 => {
            let n = 1 + rng.below(4);
            for _ in 0..n {
                let _: String = con.xadd(stream, "*", &[("f", "v")]).await.unwrap();
            }
            log.push(format!("add {n}"));
        }
        3 if names.len() < 3 => {
            let name = format!("g{}", names.len() + 1);
            let start = match rng.below(3) {
                0 => "0".to_string(),
                1 => "$".to_string(),
                _ => rng.pick(&ids).map_or("0".to_string(), |id| show(*id)),
            };
            let _: Result<(), _> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(&name)
                .arg(&start)
                .arg("MKSTREAM")
                .query_async(con)
                .await;
            log.push(format!("create {name} at {start}"));
        }
        4..=5 => {
            if let Some(g) = rng.pick(&names) {
                let c = consumers[rng.below(3)];
                let n = 1 + rng.below(3);
                let _: Value = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(g)
                    .arg(c)
                    .arg("COUNT")
                    .arg(n)
                    .arg("STREAMS")
                    .arg(stream)
                    .arg(">")
                    .query_async(con)
                    .await
                    .unwrap();
                log.push(format!("read {g} {c} {n}"));
            }
        }
        6..=7 => {
            if let Some(g) = rng.pick(&names)
                && let Some(id) = rng.pick(&known[g].1)
            {
                let _: u64 = con.xack(stream, g, &[show(*id)]).await.unwrap();
                log.push(format!("ack {g} {}", show(*id)));
            }
        }
        8 => {
            if let Some(g) = rng.pick(&names)
                && let Some(id) = rng.pick(&known[g].1)
            {
                let c = consumers[rng.below(3)];
                let _: Value = redis::cmd("XCLAIM")
                    .arg(stream)
                    .arg(g)
                    .arg(c)
                    .arg(0)
                    .arg(show(*id))
                    .query_async(con)
                    .await
                    .unwrap();
                log.push(format!("claim {g} {} -> {c}", show(*id)));
            }
        }
        _ => {
            // An operator rewinds (or moves) a group: entries after the new id are
            // undelivered again for it, and must survive.
            if let Some(g) = rng.pick(&names) {
                let to = rng.pick(&ids).map_or("0".to_string(), |id| show(*id));
                let _: () = redis::cmd("XGROUP")
                    .arg("SETID")
                    .arg(stream)
                    .arg(g)
                    .arg(&to)
                    .query_async(con)
                    .await
                    .unwrap();
                log.push(format!("setid {g} {to}"));
            }
        }
    }
}

/// A trim (or dry run) checked against what every group needed just before it.
async fn checked_trim(con: &mut MultiplexedConnection, stream: &str, dry_run: bool, context: &str) {
    let before = entries(con, stream).await;
    let state = groups(con, stream).await;
    // What each group still needs: its pending entries and everything after its last delivery.
    let mut needed: BTreeSet<Id> = BTreeSet::new();
    let mut bound: Option<Id> = None;
    for (last, pending) in state.values() {
        needed.extend(pending.iter().copied());
        needed.extend(before.iter().copied().filter(|id| id > last));
        let b = pending
            .iter()
            .copied()
            .chain([successor(*last)])
            .min()
            .unwrap();
        bound = Some(bound.map_or(b, |x: Id| x.min(b)));
    }
    let expected: Vec<Id> = match bound {
        Some(b) if !dry_run => before.iter().copied().filter(|id| *id >= b).collect(),
        _ => before.clone(),
    };
    let report = janitor::pass(
        con,
        &[stream.to_string()],
        "hb:",
        Duration::from_secs(3600),
        dry_run,
    )
    .await
    .expect("janitor pass");
    let after = entries(con, stream).await;
    let kept: BTreeSet<Id> = after.iter().copied().collect();
    for id in &needed {
        assert!(
            kept.contains(id),
            "{context}: {} was pending or undelivered and is gone (bound {:?})",
            show(*id),
            report.trims
        );
    }
    assert_eq!(after, expected, "{context}: entries after the trim");
    let Some(trim) = report.trims.iter().find(|t| t.stream == stream) else {
        // Only a stream that does not exist (yet) goes unreported.
        let exists: bool = con.exists(stream).await.unwrap();
        assert!(
            !exists,
            "{context}: no trim reported for an existing stream"
        );
        return;
    };
    assert_eq!(trim.bound, bound.map(show), "{context}: bound");
    let below = bound.map_or(0, |b| before.iter().filter(|id| **id < b).count() as u64);
    assert_eq!(trim.entries, below, "{context}: entries reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trims_never_remove_a_pending_or_undelivered_entry_over_random_interleavings() {
    let redis = RedisServer::start().await;
    let mut con = connect(&redis).await;
    for case in 0..40u64 {
        let seed = 0x9E37_79B9_7F4A_7C15 ^ (case + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut rng = Rng(seed);
        let stream = format!("prop:{case}");
        let mut log = Vec::new();
        for step in 0..40 {
            if rng.below(5) == 0 {
                let dry_run = rng.below(4) == 0;
                let context = format!("seed {seed:#x}, step {step}, ops {log:?}");
                checked_trim(&mut con, &stream, dry_run, &context).await;
                log.push(format!("trim dry_run={dry_run}"));
            } else {
                random_op(&mut con, &mut rng, &stream, &mut log).await;
            }
        }
        let context = format!("seed {seed:#x}, final, ops {log:?}");
        checked_trim(&mut con, &stream, false, &context).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_groups_is_never_trimmed() {
    let redis = RedisServer::start().await;
    let mut con = connect(&redis).await;
    for _ in 0..5 {
        let _: String = con.xadd("lonely", "*", &[("f", "v")]).await.unwrap();
    }
    let report = janitor::pass(&mut con, &["lon*".into()], "hb:", Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(report.trims.len(), 1);
    assert_eq!(report.trims[0].bound, None);
    assert_eq!(report.trims[0].entries, 0);
    assert_eq!(entries(&mut con, "lonely").await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_are_deleted_only_without_heartbeat_and_pending_and_when_idle() {
    let redis = RedisServer::start().await;
    let mut con = connect(&redis).await;
    for case in 0..8u64 {
        let mut rng = Rng(0xA076_1D64_78BD_642F ^ (case + 1).wrapping_mul(0xE703_7ED1_A0B4_28DB));
        let stream = format!("jobs:{case}");
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg("g")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut con)
            .await
            .unwrap();
        // (consumer, has a heartbeat, holds pending entries)
        let mut states = Vec::new();
        for i in 0..6 {
            let name = format!("c{i}");
            let beat = rng.below(2) == 0;
            let pending = rng.below(2) == 0;
            if pending {
                let _: String = con.xadd(&stream, "*", &[("f", "v")]).await.unwrap();
            }
            let _: u64 = redis::cmd("XGROUP")
                .arg("CREATECONSUMER")
                .arg(&stream)
                .arg("g")
                .arg(&name)
                .query_async(&mut con)
                .await
                .unwrap();
            // Reading one new entry, if any, makes it pending for this consumer.
            let _: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg(&name)
                .arg("COUNT")
                .arg(1)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query_async(&mut con)
                .await
                .unwrap();
            if beat {
                let _: () = con
                    .set_ex(format!("hb:{stream}:{name}"), "1700000000", 60)
                    .await
                    .unwrap();
            }
            states.push((name, beat, pending));
        }
        let consumers = |con: &mut MultiplexedConnection| {
            let mut con = con.clone();
            let stream = stream.clone();
            async move {
                let info: Vec<Value> = redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&stream)
                    .arg("g")
                    .query_async(&mut con)
                    .await
                    .unwrap();
                info.into_iter()
                    .map(|c| {
                        let f: BTreeMap<String, Value> = redis::from_redis_value(c).unwrap();
                        redis::from_redis_value::<String>(f["name"].clone()).unwrap()
                    })
                    .collect::<BTreeSet<String>>()
            }
        };
        let all: BTreeSet<String> = states.iter().map(|s| s.0.clone()).collect();
        assert_eq!(consumers(&mut con).await, all);
        let patterns = [stream.clone()];

        // Not idle long enough: nobody goes, whatever else holds.
        let r = janitor::pass(&mut con, &patterns, "hb:", Duration::from_secs(3600), false)
            .await
            .unwrap();
        assert!(r.deleted.is_empty(), "case {case}: {r:?}");
        assert_eq!(consumers(&mut con).await, all);

        let stale: BTreeSet<String> = states
            .iter()
            .filter(|(_, beat, pending)| !beat && !pending)
            .map(|s| s.0.clone())
            .collect();
        // A dry run names exactly them and deletes nothing.
        let r = janitor::pass(&mut con, &patterns, "hb:", Duration::ZERO, true)
            .await
            .unwrap();
        let named: BTreeSet<String> = r.deleted.iter().map(|c| c.consumer.clone()).collect();
        assert_eq!(named, stale, "case {case}: dry run, states {states:?}");
        assert_eq!(consumers(&mut con).await, all);

        // The real pass deletes exactly them.
        let r = janitor::pass(&mut con, &patterns, "hb:", Duration::ZERO, false)
            .await
            .unwrap();
        let deleted: BTreeSet<String> = r.deleted.iter().map(|c| c.consumer.clone()).collect();
        assert_eq!(deleted, stale, "case {case}: states {states:?}");
        let left = consumers(&mut con).await;
        assert_eq!(
            left,
            all.difference(&stale).cloned().collect::<BTreeSet<_>>(),
            "case {case}"
        );
        // Pending entries are all still pending.
        let summary: Vec<Value> = redis::cmd("XPENDING")
            .arg(&stream)
            .arg("g")
            .query_async(&mut con)
            .await
            .unwrap();
        let expected_pending = states.iter().filter(|s| s.2).count() as i64;
        assert_eq!(summary[0], Value::Int(expected_pending), "case {case}");
    }
}

/// The periodic janitor inside warden, next to real workers: the stream is trimmed up to what a
/// crashed consumer still holds, that consumer (pending entries, heartbeat gone) is kept, an idle
/// heartbeat-less consumer with nothing pending is deleted, live workers are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_janitor_trims_to_what_a_crashed_consumer_holds_and_keeps_it() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let mut con = connect(&redis).await;
    let period = Duration::from_millis(300);
    let mut holder = StreamsWorker::start(&broker, "jobs", "billing", "holder", period, true);
    let _live = StreamsWorker::start(&broker, "jobs", "billing", "live", period, false);
    eventually(Duration::from_secs(20), "both workers heartbeat", || {
        let mut con = con.clone();
        async move {
            let a: bool = con.exists("worker:heartbeat:jobs:holder").await.unwrap();
            let b: bool = con.exists("worker:heartbeat:jobs:live").await.unwrap();
            (a && b).then_some(())
        }
    })
    .await;
    // The holder reads without acking: wait until it holds entries.
    for _ in 0..20 {
        let _: String = con.xadd("jobs", "*", &[("f", "v")]).await.unwrap();
    }
    let held = eventually(
        Duration::from_secs(20),
        "the holder holds pending entries",
        || {
            let mut con = con.clone();
            async move {
                let g = groups(&mut con, "jobs").await;
                let (_, pending) = g.get("billing")?;
                let entries = entries(&mut con, "jobs").await;
                // Everything delivered (the live worker acks its share).
                (!pending.is_empty() && g["billing"].0 == *entries.last()?).then(|| pending.clone())
            }
        },
    )
    .await;
    holder.kill9().await;
    // What the holder holds, and only that: the group's pending list above may also show
    // entries the live worker had read and not acked yet.
    let held: Vec<Id> = {
        let reply: Vec<Vec<Value>> = redis::cmd("XPENDING")
            .arg("jobs")
            .arg("billing")
            .arg("-")
            .arg("+")
            .arg(1000)
            .arg("holder")
            .query_async(&mut con)
            .await
            .unwrap();
        let ids: Vec<Id> = reply
            .iter()
            .map(|e| parse_id(&redis::from_redis_value::<String>(e[0].clone()).unwrap()))
            .collect();
        assert!(!ids.is_empty() && ids.iter().all(|id| held.contains(id)));
        ids
    };
    // An idle consumer with no heartbeat and nothing pending.
    let _: u64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg("jobs")
        .arg("billing")
        .arg("idler")
        .query_async(&mut con)
        .await
        .unwrap();
    let all_before = entries(&mut con, "jobs").await;
    let oldest_held = *held.iter().min().unwrap();

    let config = warden::config::Config {
        streams: vec!["jobs".into()],
        streams_poll_interval: Duration::from_millis(300),
        streams_janitor_interval: Duration::from_millis(300),
        streams_consumer_idle: Duration::from_secs(1),
        ..test_config(&broker)
    };
    let _warden = TestWarden::start(config).await;

    eventually(
        Duration::from_secs(30),
        "the idler deleted and the stream trimmed to the oldest held entry",
        || {
            let mut con = con.clone();
            async move {
                let info: Vec<Value> = redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg("jobs")
                    .arg("billing")
                    .query_async(&mut con)
                    .await
                    .unwrap();
                let names: BTreeSet<String> = info
                    .into_iter()
                    .map(|c| {
                        let f: BTreeMap<String, Value> = redis::from_redis_value(c).unwrap();
                        redis::from_redis_value::<String>(f["name"].clone()).unwrap()
                    })
                    .collect();
                let first = *entries(&mut con, "jobs").await.first()?;
                (!names.contains("idler") && first == oldest_held).then_some(names)
            }
        },
    )
    .await;
    let names = groups(&mut con, "jobs").await;
    let (_, pending) = &names["billing"];
    assert_eq!(
        pending.iter().copied().collect::<BTreeSet<_>>(),
        held.iter().copied().collect::<BTreeSet<_>>(),
        "every entry the crashed holder held is still pending"
    );
    let remaining = entries(&mut con, "jobs").await;
    assert_eq!(
        remaining,
        all_before
            .iter()
            .copied()
            .filter(|id| *id >= oldest_held)
            .collect::<Vec<_>>()
    );
    let info: Vec<Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("jobs")
        .arg("billing")
        .query_async(&mut con)
        .await
        .unwrap();
    let names: BTreeSet<String> = info
        .into_iter()
        .map(|c| {
            let f: BTreeMap<String, Value> = redis::from_redis_value(c).unwrap();
            redis::from_redis_value::<String>(f["name"].clone()).unwrap()
        })
        .collect();
    assert!(
        names.contains("holder"),
        "the holder keeps its pending entries: {names:?}"
    );
    assert!(names.contains("live"), "a live worker is kept: {names:?}");
}

/// A string attribute of a history event.
fn attr<'a>(event: &'a warden::proto::v1::Event, name: &str) -> Option<&'a str> {
    use warden::proto::v1::attribute_value::Value as V;
    match event.attributes.get(name)?.value.as_ref()? {
        V::StringValue(s) => Some(s),
        _ => None,
    }
}

/// An integer attribute of a history event.
fn int_attr(event: &warden::proto::v1::Event, name: &str) -> Option<i64> {
    use warden::proto::v1::attribute_value::Value as V;
    match event.attributes.get(name)?.value.as_ref()? {
        V::IntValue(n) => Some(*n),
        _ => None,
    }
}

/// Each action of the periodic janitor is a control event in history: the trim (with the
/// entries it removed) and the deletion of a stale consumer are found with ListEvents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn janitor_actions_are_history_events() {
    use warden::proto::v1 as pb;
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let mut con = connect(&redis).await;
    // Five entries read and acked by a consumer that then went away (no heartbeat): all five
    // are below the trim bound, and the consumer is stale.
    for _ in 0..5 {
        let _: String = con.xadd("logs", "*", &[("f", "v")]).await.unwrap();
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("logs")
        .arg("g")
        .arg("0")
        .query_async(&mut con)
        .await
        .unwrap();
    let read: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("gone")
        .arg("STREAMS")
        .arg("logs")
        .arg(">")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_ne!(read, Value::Nil);
    let ids = entries(&mut con, "logs").await;
    for id in &ids {
        let _: u64 = con.xack("logs", "g", &[show(*id)]).await.unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let mut config = warden::config::Config {
        streams: vec!["logs".into()],
        streams_poll_interval: Duration::from_millis(300),
        streams_janitor_interval: Duration::from_millis(300),
        streams_consumer_idle: Duration::from_secs(1),
        ..test_config(&broker)
    };
    config.database_url = warden::config::Secret::new(format!(
        "sqlite://{}",
        dir.path().join("history.db").display()
    ));
    let warden = TestWarden::start(config).await;
    let history = pb::history_client::HistoryClient::new(warden.channel().await);

    let events = eventually(
        Duration::from_secs(30),
        "the trim and the deletion in history",
        || {
            let mut history = history.clone();
            async move {
                let events = history
                    .list_events(pb::ListEventsRequest {
                        kinds: vec![pb::EventKind::Control.into()],
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .events;
                let done = |action: &str| events.iter().any(|e| attr(e, "action") == Some(action));
                (done("janitor_trim") && done("janitor_delete_consumer")).then_some(events)
            }
        },
    )
    .await;
    let trims: Vec<_> = events
        .iter()
        .filter(|e| attr(e, "action") == Some("janitor_trim"))
        .collect();
    assert_eq!(trims.len(), 1, "later passes trim nothing: {trims:?}");
    assert_eq!(attr(trims[0], "stream"), Some("logs"));
    assert_eq!(int_attr(trims[0], "entries"), Some(ids.len() as i64));
    assert!(
        entries(&mut con, "logs").await.is_empty(),
        "the stream was trimmed"
    );
    let deletion = events
        .iter()
        .find(|e| attr(e, "action") == Some("janitor_delete_consumer"))
        .unwrap();
    assert_eq!(attr(deletion, "stream"), Some("logs"));
    assert_eq!(attr(deletion, "group"), Some("g"));
    assert_eq!(attr(deletion, "consumer"), Some("gone"));
    assert_eq!(deletion.worker, "workers/redis-streams/logs%3Ag/gone");
}
