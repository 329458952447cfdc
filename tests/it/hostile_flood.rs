//! A flood of forged worker announcements cannot grow the fleet without bound: 100,000
//! worker-online messages under distinct names, and arrays of them, leave at most
//! `max_workers` known workers, and every message is accounted for: admitted, refused at the
//! cap, refused as not a Celery batch, or dropped because warden fell behind. All counted.
//! (Memory under the same flood is measured by `scripts/bench-flood`, not asserted here.)
use std::time::Duration;

use crate::support::*;
use serde_json::json;
use warden::celery::envelope;

const CAP: usize = 1_000;
const FORGED: usize = 100_000;
const BATCH: usize = 5_000;

fn online(hostname: &str) -> serde_json::Value {
    json!({"type": "worker-online", "hostname": hostname, "freq": 2.0, "timestamp": 1.0})
}

fn message(body: &serde_json::Value, routing_key: &str) -> String {
    envelope::encode(body, json!({}), "celeryev", routing_key, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_announcements_stop_at_the_cap_and_every_one_is_counted() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let mut config = test_config(&broker);
    config.max_workers = CAP;
    config.enable_events = false;
    let warden = TestWarden::start(config).await;
    let metrics = warden.metrics().clone();
    let fleet = warden.warden.as_ref().unwrap().fleet.clone();
    let client = redis::Client::open(broker.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    // Once warden follows the stream (a first announcement is admitted), flood it.
    eventually(Duration::from_secs(15), "warden follows events", || {
        let mut conn = conn.clone();
        let fleet = fleet.clone();
        async move {
            let _: i64 = redis::cmd("PUBLISH")
                .arg("/0.celeryev/worker.online")
                .arg(message(&online("probe@flood"), "worker.online"))
                .query_async(&mut conn)
                .await
                .unwrap();
            (!fleet.snapshot().workers.is_empty()).then_some(())
        }
    })
    .await;
    let accounted = || {
        let known = fleet.snapshot().workers.len() as u64;
        known + metrics.workers_refused() + metrics.rejected_count("event", "warden_behind")
    };
    let baseline = accounted();
    let mut published = 0u64;
    for batch in 0..FORGED / BATCH {
        let mut pipe = redis::pipe();
        for i in 0..BATCH {
            let name = format!("forged-{}@flood", batch * BATCH + i);
            pipe.cmd("PUBLISH")
                .arg("/0.celeryev/worker.online")
                .arg(message(&online(&name), "worker.online"))
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
        published += BATCH as u64;
        // Every announcement ends admitted, refused at the cap, or dropped (and counted).
        eventually(
            Duration::from_secs(30),
            "the batch is accounted for",
            || {
                let done = accounted() >= baseline + published;
                async move { done.then_some(()) }
            },
        )
        .await;
    }
    assert_eq!(accounted(), baseline + published, "nothing counted twice");
    let known = fleet.snapshot().workers.len();
    assert_eq!(known, CAP, "the cap holds, and is reached");
    assert!(metrics.workers_refused() > 0);
    assert!(
        metrics.encode().contains("warden_workers_refused_total"),
        "refusals are exported"
    );

    // Arrays: under another routing key than task.multi, refused whole; inside task.multi,
    // worker events are refused one by one; one array of 100,000 is over the size limit.
    let many: Vec<serde_json::Value> = (0..20_000).map(|i| online(&format!("a{i}@f"))).collect();
    let many = serde_json::Value::Array(many);
    let huge: Vec<serde_json::Value> = (0..FORGED).map(|i| online(&format!("h{i}@f"))).collect();
    let huge = serde_json::Value::Array(huge);
    let not_a_batch = metrics.rejected_count("event", "event_not_a_batch");
    let too_large = metrics.rejected_count("event", "too_large");
    for (body, routing_key) in [
        (&many, "worker.online"),
        (&many, "task.multi"),
        (&huge, "task.multi"),
    ] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("/0.celeryev/{routing_key}"))
            .arg(message(body, routing_key))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(30), "arrays counted", || {
        let metrics = metrics.clone();
        async move {
            (metrics.rejected_count("event", "event_not_a_batch") == not_a_batch + 1 + 20_000
                && metrics.rejected_count("event", "too_large") == too_large + 1)
                .then_some(())
        }
    })
    .await;
    assert_eq!(fleet.snapshot().workers.len(), CAP);
    warden.stop().await;
}
