//! Following the event stream with bounded memory: when warden falls behind, messages beyond
//! the queue are dropped and counted (not buffered without bound); and a broker without RESP3
//! (Redis < 6) is still followed, over RESP2 pub/sub.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::support::*;
use serde_json::json;
use warden::{
    celery::{broker::Broker, envelope},
    config::{Config, Secret},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_falls_behind_drops_and_counts_instead_of_buffering() {
    let redis = RedisServer::start().await;
    let config = Config {
        broker_url: Secret::new(redis.url(0)),
        ..Config::default()
    };
    let broker = Broker::new(config.broker_settings().unwrap());
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = dropped.clone();
    let (_conn, mut pushes) = broker
        .subscribe_bounded("/0.celeryev/*", 8, move || {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .await
        .expect("RESP3 subscription");
    let confirmation = pushes.recv().await.unwrap();
    assert_eq!(confirmation.kind, redis::PushKind::PSubscribe);
    // Nobody reads while 100 messages arrive.
    for i in 0..100 {
        let n = redis
            .cli(&["PUBLISH", "/0.celeryev/worker.heartbeat", &format!("m{i}")])
            .await;
        assert_eq!(n, "1", "one subscriber");
    }
    eventually(
        Duration::from_secs(5),
        "every message queued or counted",
        || {
            let dropped = dropped.clone();
            let queued = pushes.len() as u64;
            async move { (queued + dropped.load(Ordering::Relaxed) >= 100).then_some(()) }
        },
    )
    .await;
    assert!(pushes.len() <= 8, "the queue is bounded");
    assert_eq!(pushes.len() as u64 + dropped.load(Ordering::Relaxed), 100);
    // The connection is still subscribed: new messages flow once the reader catches up.
    while pushes.try_recv().is_ok() {}
    redis
        .cli(&["PUBLISH", "/0.celeryev/worker.heartbeat", "after"])
        .await;
    let push = tokio::time::timeout(Duration::from_secs(5), pushes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        push.data.last(),
        Some(&redis::Value::BulkString(b"after".to_vec()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_resp3_is_followed_over_resp2() {
    // HELLO renamed away: what a Redis older than 6 answers to RESP3.
    let redis = RedisServer::start_with_args(&["--rename-command", "HELLO", ""]).await;
    let url = redis.url(0);
    let warden = TestWarden::start(test_config(&url)).await;
    let metrics = warden.metrics();
    let client = warden.client().await;
    let heartbeat = envelope::encode(
        &json!({"hostname": "old@resp2", "freq": 2.0, "active": 0, "processed": 3, "pid": 7,
                "timestamp": 1.0, "type": "worker-heartbeat"}),
        json!({}),
        "celeryev",
        "worker.heartbeat",
        1,
    );
    eventually(
        Duration::from_secs(15),
        "events followed over RESP2",
        || {
            let mut client = client.clone();
            let heartbeat = heartbeat.clone();
            let redis = &redis;
            async move {
                redis
                    .cli(&["PUBLISH", "/0.celeryev/worker.heartbeat", &heartbeat])
                    .await;
                find(&list(&mut client, false).await, "old@resp2").map(|_| ())
            }
        },
    )
    .await;
    assert_eq!(metrics.rejected_count("event", "warden_behind"), 0);
    // The subscriber really is a RESP2 connection.
    let clients = redis.cli(&["CLIENT", "LIST"]).await;
    let subscriber = clients
        .lines()
        .find(|l| l.contains("psub=1"))
        .expect("warden's subscription");
    assert!(subscriber.contains("resp=2"), "{subscriber}");
    warden.stop().await;
}
