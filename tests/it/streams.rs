//! The Redis Streams backend against a real redis-server and real worker processes
//! (tests/python/streams_worker.py): consumers are discovered and served like Celery workers,
//! a clean stop is OFFLINE and a crash LOST (decided when the heartbeat goes and kept), and the
//! figures warden reports are Redis's own.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::support::*;
use warden::{config::Config, proto::v1 as pb};

const PERIOD: Duration = Duration::from_millis(500);

fn streams_config(broker: &str, streams: &[&str]) -> Config {
    Config {
        streams: streams.iter().map(|s| s.to_string()).collect(),
        streams_poll_interval: Duration::from_millis(300),
        ..test_config(broker)
    }
}

/// redis-cli's flat `key value` lines as records, a new record at each `name`.
fn records(output: &str) -> Vec<BTreeMap<String, String>> {
    let lines: Vec<&str> = output.lines().collect();
    let mut out: Vec<BTreeMap<String, String>> = Vec::new();
    for pair in lines.chunks_exact(2) {
        if pair[0] == "name" {
            out.push(BTreeMap::new());
        }
        if let Some(record) = out.last_mut() {
            record.insert(pair[0].to_string(), pair[1].to_string());
        }
    }
    out
}

async fn queues(
    client: &mut pb::worker_health_client::WorkerHealthClient<tonic::transport::Channel>,
) -> Vec<pb::Queue> {
    client
        .list_queues(pb::ListQueuesRequest::default())
        .await
        .expect("ListQueues")
        .into_inner()
        .queues
}

fn streams_worker<'a>(
    r: &'a pb::ListWorkersResponse,
    scope: &str,
    id: &str,
) -> Option<&'a pb::Worker> {
    r.workers
        .iter()
        .find(|w| w.backend() == pb::Backend::RedisStreams && w.scope == scope && w.id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_are_discovered_beside_celery_with_redis_own_figures() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _c1 = StreamsWorker::start(&broker, "orders", "billing", "c1", PERIOD, false);
    let _c2 = StreamsWorker::start(&broker, "orders", "billing", "c2", PERIOD, true);
    let _celery = CeleryWorker::start(&broker, "beside@streams", WorkerOptions::default());
    let warden = TestWarden::start(streams_config(&broker, &["ord*"])).await;
    let client = warden.client().await;

    let r = eventually(
        Duration::from_secs(30),
        "both consumers and the Celery worker alive",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, false).await;
                let ok = ["c1", "c2"].iter().all(|c| {
                    streams_worker(&r, "orders:billing", c)
                        .is_some_and(|w| w.lifecycle() == pb::Lifecycle::Alive)
                }) && find(&r, "beside@streams").is_some_and(|w| {
                    w.backend() == pb::Backend::Celery && w.lifecycle() == pb::Lifecycle::Alive
                });
                ok.then_some(r)
            }
        },
    )
    .await;
    let c1 = streams_worker(&r, "orders:billing", "c1").unwrap();
    assert_eq!(c1.name, "workers/redis-streams/orders%3Abilling/c1");
    assert_eq!(c1.group, "groups/redis-streams/orders%3Abilling");
    assert_eq!(c1.pool.as_ref().map(|p| p.max_concurrency), Some(4));
    assert!(c1.pid.is_some() && c1.uptime.is_some(), "{c1:?}");
    let source = r
        .freshness
        .as_ref()
        .unwrap()
        .sources
        .iter()
        .find(|s| s.source == "streams")
        .expect("the streams source is reported");
    assert!(source.available, "{source:?}");

    // Ten entries: c2 leaves what it reads pending; a second group without consumers lags
    // by the whole stream.
    redis
        .cli(&["XGROUP", "CREATE", "orders", "audit", "0"])
        .await;
    for i in 0..10 {
        redis
            .cli(&["XADD", "orders", "*", "n", &i.to_string()])
            .await;
    }
    let xlen: u64 = redis.cli(&["XLEN", "orders"]).await.parse().unwrap();
    assert_eq!(xlen, 10);
    // All read by someone (lag 0) and stable: c1 acked its share, c2 holds the rest.
    let pending: u64 = eventually(Duration::from_secs(20), "every entry read", || {
        let redis = &redis;
        async move {
            let groups = records(&redis.cli(&["XINFO", "GROUPS", "orders"]).await);
            let billing = groups.iter().find(|g| g["name"] == "billing")?;
            (billing["lag"] == "0").then(|| billing["pending"].parse().unwrap())
        }
    })
    .await;
    let summary = redis.cli(&["XPENDING", "orders", "billing"]).await;
    let summary_count: u64 = summary.lines().next().unwrap().parse().unwrap();
    assert_eq!(summary_count, pending);

    let started = Instant::now();
    let (q, r) = eventually(
        Duration::from_secs(20),
        "warden's queues and consumers agree with Redis",
        || {
            let mut client = client.clone();
            let redis = &redis;
            async move {
                let qs = queues(&mut client).await;
                let billing = qs.iter().find(|q| q.name == "orders:billing")?.clone();
                let audit = qs.iter().find(|q| q.name == "orders:audit")?.clone();
                let r = list(&mut client, false).await;
                let consumers = records(
                    &redis
                        .cli(&["XINFO", "CONSUMERS", "orders", "billing"])
                        .await,
                );
                let ok = billing.unacked == pending
                    && billing.depth == 0
                    && billing.lag == Some(0)
                    && billing.consumers == 2
                    && audit.depth == xlen
                    && audit.lag == Some(xlen)
                    && consumers.iter().all(|c| {
                        streams_worker(&r, "orders:billing", &c["name"])
                            .and_then(|w| w.streams.as_ref())
                            .is_some_and(|s| s.pending.to_string() == c["pending"])
                    });
                ok.then_some(((billing, audit), r))
            }
        },
    )
    .await;
    let (billing, audit) = q;
    assert_eq!(billing.backend(), pb::Backend::RedisStreams);
    // The Celery poller does not measure a Streams group as a Celery list of the same name.
    let named: Vec<pb::Backend> = queues(&mut client.clone())
        .await
        .iter()
        .filter(|q| q.name == "orders:billing")
        .map(|q| q.backend())
        .collect();
    assert_eq!(named, [pb::Backend::RedisStreams]);
    assert!(
        billing.oldest_pending_age.is_some() == (pending > 0),
        "{billing:?}"
    );
    assert_eq!(audit.consumers, 0);
    assert_eq!(audit.unacked, 0);
    // Per consumer: pending exactly, idle within a poll (plus the time these reads took).
    let consumers = records(
        &redis
            .cli(&["XINFO", "CONSUMERS", "orders", "billing"])
            .await,
    );
    assert_eq!(consumers.len(), 2);
    let slack = Duration::from_millis(300) + started.elapsed() + Duration::from_secs(1);
    let last_delivered = records(&redis.cli(&["XINFO", "GROUPS", "orders"]).await)
        .into_iter()
        .find(|g| g["name"] == "billing")
        .unwrap()["last-delivered-id"]
        .clone();
    for c in &consumers {
        let w = streams_worker(&r, "orders:billing", &c["name"]).unwrap();
        let s = w.streams.as_ref().unwrap();
        assert_eq!(s.stream, "orders");
        assert_eq!(s.consumer_group, "billing");
        assert_eq!(s.pending.to_string(), c["pending"]);
        assert_eq!(s.last_delivered_id, last_delivered);
        let idle = s.idle.as_ref().unwrap();
        let warden_idle = Duration::new(idle.seconds as u64, idle.nanos as u32);
        let redis_idle = Duration::from_millis(c["idle"].parse().unwrap());
        let gap = warden_idle.abs_diff(redis_idle);
        assert!(
            gap <= slack,
            "{}: idle {warden_idle:?} vs {redis_idle:?}",
            c["name"]
        );
    }
    // c2 never acks: it holds everything it read.
    let c2 = streams_worker(&r, "orders:billing", "c2").unwrap();
    let c1 = streams_worker(&r, "orders:billing", "c1").unwrap();
    assert_eq!(c1.streams.as_ref().unwrap().pending, 0);
    assert_eq!(c2.streams.as_ref().unwrap().pending, pending);
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_offline_and_sigkill_is_lost_once_the_heartbeat_expires() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let mut clean = StreamsWorker::start(&broker, "jobs", "workers", "clean", PERIOD, false);
    let mut crash = StreamsWorker::start(&broker, "jobs", "workers", "crash", PERIOD, false);
    // Default thresholds (30 s / 60 s): LOST within seconds can only come from the heartbeat.
    let warden = TestWarden::start(streams_config(&broker, &["jobs"])).await;
    let client = warden.client().await;
    let lifecycle = |id: &'static str| {
        let client = client.clone();
        async move {
            let mut client = client.clone();
            let r = list(&mut client, false).await;
            streams_worker(&r, "jobs:workers", id).map(|w| w.lifecycle())
        }
    };
    eventually(Duration::from_secs(30), "both consumers alive", || async {
        (lifecycle("clean").await == Some(pb::Lifecycle::Alive)
            && lifecycle("crash").await == Some(pb::Lifecycle::Alive))
        .then_some(())
    })
    .await;

    clean.terminate().await;
    eventually(
        Duration::from_secs(10),
        "a clean stop is OFFLINE",
        || async { (lifecycle("clean").await == Some(pb::Lifecycle::Offline)).then_some(()) },
    )
    .await;
    assert_eq!(
        redis.cli(&["EXISTS", "worker:shutdown:jobs:clean"]).await,
        "1"
    );

    let killed = Instant::now();
    crash.kill9().await;
    eventually(Duration::from_secs(15), "a crash is LOST", || async {
        (lifecycle("crash").await == Some(pb::Lifecycle::Lost)).then_some(())
    })
    .await;
    // Not before the heartbeat expired (TTL 3 × the period).
    assert!(killed.elapsed() >= PERIOD * 2, "{:?}", killed.elapsed());
    assert_eq!(
        redis.cli(&["EXISTS", "worker:heartbeat:jobs:crash"]).await,
        "0"
    );
    assert_eq!(
        redis.cli(&["EXISTS", "worker:shutdown:jobs:crash"]).await,
        "0"
    );

    // The decision is kept: the marker going away later does not make the clean stop LOST,
    // nor does a marker appearing later make the crash OFFLINE.
    redis.cli(&["DEL", "worker:shutdown:jobs:clean"]).await;
    redis
        .cli(&["SET", "worker:shutdown:jobs:crash", "late"])
        .await;
    let mut client2 = client.clone();
    let changed_at = std::time::SystemTime::now();
    eventually(
        Duration::from_secs(10),
        "three polls after the markers moved",
        || {
            let mut client = client2.clone();
            async move {
                let qs = queues(&mut client).await;
                let q = qs.iter().find(|q| q.name == "jobs:workers")?;
                let at = q.updated_at.as_ref()?;
                let at = std::time::UNIX_EPOCH + Duration::new(at.seconds as u64, at.nanos as u32);
                (at > changed_at + Duration::from_millis(900)).then_some(())
            }
        },
    )
    .await;
    assert_eq!(lifecycle("clean").await, Some(pb::Lifecycle::Offline));
    assert_eq!(lifecycle("crash").await, Some(pb::Lifecycle::Lost));
    let r = list(&mut client2, false).await;
    assert_eq!(
        r.workers
            .iter()
            .filter(|w| w.backend() == pb::Backend::RedisStreams)
            .count(),
        2
    );
    warden.stop().await;
}

/// Streams on a Redis of their own (`--streams-redis`): when it goes down, only the Streams
/// workers are stale (source `streams`) and kept ALIVE (their silence is not held against
/// them); Celery workers on the broker are not stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_streams_redis_marks_only_streams_workers_stale() {
    use warden::fleet::{Backend, WorkerEventKind, WorkerKey};
    let broker_redis = RedisServer::start().await;
    let mut streams_redis = RedisServer::start().await;
    let broker = broker_redis.url(0);
    let _w = StreamsWorker::start(
        &streams_redis.url(0),
        "events",
        "readers",
        "r1",
        PERIOD,
        false,
    );
    let config = Config {
        streams_redis: Some(warden::config::Secret::new(streams_redis.url(0))),
        ..streams_config(&broker, &["events"])
    };
    let warden = TestWarden::start(config).await;
    let client = warden.client().await;
    broker_connected(&client).await;
    // A Celery worker in a scope of its own (the inspect rounds address the default scope).
    let celery = WorkerKey::new(Backend::Celery, "own-scope", "celery@beside");
    warden
        .inner()
        .fleet
        .observe(worker_event(
            celery.clone(),
            WorkerEventKind::Online,
            Some(Duration::from_secs(2)),
        ))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the consumer alive, not stale",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, false).await;
                let w = streams_worker(&r, "events:readers", "r1")?;
                (w.lifecycle() == pb::Lifecycle::Alive
                    && !w.stale
                    && find(&r, "celery@beside").is_some())
                .then_some(())
            }
        },
    )
    .await;

    streams_redis.kill().await;
    let r = eventually(Duration::from_secs(20), "the Streams worker stale", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            let w = streams_worker(&r, "events:readers", "r1")?;
            (w.stale && w.stale_sources.iter().any(|s| s == "streams")).then_some(r)
        }
    })
    .await;
    let w = streams_worker(&r, "events:readers", "r1").unwrap();
    assert_eq!(w.lifecycle(), pb::Lifecycle::Alive, "{w:?}");
    let c = find(&r, "celery@beside").unwrap();
    assert!(!c.stale, "{c:?}");
    let source = r
        .freshness
        .as_ref()
        .unwrap()
        .sources
        .iter()
        .find(|s| s.source == "streams")
        .unwrap();
    assert!(!source.available, "{source:?}");
    assert!(broker_source(&r).is_some_and(|s| s.available));
    warden.stop().await;
}

/// A consumer without heartbeats is listed from XINFO CONSUMERS (alive by its idle time); a
/// bare-timestamp heartbeat counts, and its expiry without a marker is LOST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_without_heartbeats_appear_and_a_bare_timestamp_is_a_heartbeat() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    redis
        .cli(&["XGROUP", "CREATE", "plain", "g", "$", "MKSTREAM"])
        .await;
    redis.cli(&["XADD", "plain", "*", "k", "v"]).await;
    redis
        .cli(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "bare",
            "COUNT",
            "5",
            "STREAMS",
            "plain",
            ">",
        ])
        .await;
    let warden = TestWarden::start(streams_config(&broker, &["plain"])).await;
    let client = warden.client().await;
    let w = eventually(Duration::from_secs(20), "the bare consumer listed", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            streams_worker(&r, "plain:g", "bare").cloned()
        }
    })
    .await;
    assert_eq!(w.lifecycle(), pb::Lifecycle::Alive, "{w:?}");
    assert!(w.heartbeat_age.is_none(), "{w:?}");
    assert_eq!(w.streams.as_ref().map(|s| s.pending), Some(1));

    redis
        .cli(&[
            "SET",
            "worker:heartbeat:plain:bare",
            "1700000000.5",
            "PX",
            "1500",
        ])
        .await;
    eventually(
        Duration::from_secs(10),
        "the bare timestamp is a heartbeat",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, false).await;
                let w = streams_worker(&r, "plain:g", "bare")?;
                (w.heartbeat_age.is_some() && w.lifecycle() == pb::Lifecycle::Alive).then_some(())
            }
        },
    )
    .await;
    eventually(Duration::from_secs(10), "its expiry is LOST", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            let w = streams_worker(&r, "plain:g", "bare")?;
            (w.lifecycle() == pb::Lifecycle::Lost).then_some(())
        }
    })
    .await;
    warden.stop().await;
}

/// The median of a heartbeat's latency histogram, read the way warden reads it: the upper
/// bound of the bucket holding the middle observation.
fn median_bound(latency: &serde_json::Value) -> f64 {
    let bounds: Vec<f64> = serde_json::from_value(latency["buckets"].clone()).unwrap();
    let counts: Vec<u64> = serde_json::from_value(latency["counts"].clone()).unwrap();
    let total: u64 = counts.iter().sum();
    let mut seen = 0;
    for (bound, n) in bounds.iter().zip(&counts) {
        seen += n;
        if seen * 2 >= total {
            return *bound;
        }
    }
    *bounds.last().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_counters_give_streams_workers_throughput_error_rate_and_percentiles() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _w = StreamsWorker::start_with(
        &broker,
        "tasks",
        "runners",
        "w1",
        PERIOD,
        false,
        &["--work", "0.02"],
    );
    let warden = TestWarden::start(streams_config(&broker, &["tasks"])).await;
    let client = warden.client().await;
    // Alive first: its first heartbeat (nothing processed yet) is warden's baseline.
    eventually(Duration::from_secs(30), "the worker alive", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            streams_worker(&r, "tasks:runners", "w1")
                .is_some_and(|w| w.lifecycle() == pb::Lifecycle::Alive)
                .then_some(())
        }
    })
    .await;
    const ENTRIES: u64 = 30;
    const FAILING: u64 = 6;
    for i in 0..ENTRIES {
        let field = if i % 5 == 0 { "fail" } else { "n" };
        redis
            .cli(&["XADD", "tasks", "*", field, &i.to_string()])
            .await;
    }
    // The worker's own account, once it has processed everything and heartbeat it.
    let beat = eventually(
        Duration::from_secs(30),
        "the worker heartbeats all it processed",
        || {
            let redis = &redis;
            async move {
                let value = redis.cli(&["GET", "worker:heartbeat:tasks:w1"]).await;
                let beat: serde_json::Value = serde_json::from_str(value.trim()).ok()?;
                (beat["processed"] == ENTRIES).then_some(beat)
            }
        },
    )
    .await;
    assert_eq!(beat["failed"], FAILING, "{beat}");
    let expected_p50 = median_bound(&beat["latency"]);
    assert!(
        expected_p50 >= 0.02,
        "each entry took at least 20 ms: {beat}"
    );

    let w = eventually(
        Duration::from_secs(30),
        "warden counts what the heartbeat says",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, false).await;
                let w = streams_worker(&r, "tasks:runners", "w1")?.clone();
                let minute = *w.task_stats.as_ref()?.windows.first()?;
                (w.processed_tasks == ENTRIES && minute.succeeded + minute.failed == ENTRIES)
                    .then_some(w)
            }
        },
    )
    .await;
    let minute = &w.task_stats.as_ref().unwrap().windows[0];
    assert_eq!(minute.failed, FAILING, "{minute:?}");
    assert_eq!(minute.succeeded, ENTRIES - FAILING, "{minute:?}");
    assert!(
        (minute.error_rate - FAILING as f64 / ENTRIES as f64).abs() < 1e-9,
        "{minute:?}"
    );
    assert!(minute.throughput_per_min > 0.0, "{minute:?}");
    let runtime = minute.runtime.as_ref().expect("a latency distribution");
    assert_eq!(runtime.count, ENTRIES, "{runtime:?}");
    let p50 = runtime.p50.as_ref().expect("p50");
    let p50 = p50.seconds as f64 + f64::from(p50.nanos) / 1e9;
    assert!(
        (p50 - expected_p50).abs() <= expected_p50 * 0.02,
        "p50 {p50} s, the heartbeat's median bucket {expected_p50} s"
    );
    assert!(runtime.p99.is_some(), "{runtime:?}");
}
