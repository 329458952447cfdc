//! Broker messages warden must not trust: non-JSON serializers (pickle, yaml, msgpack) and
//! garbage are counted and skipped; valid events beside them are still applied.

use std::time::Duration;

use crate::support::*;
use serde_json::json;
use warden::celery::envelope;

fn heartbeat(hostname: &str) -> serde_json::Value {
    json!({"hostname": hostname, "utcoffset": 0, "pid": 4242, "clock": 1, "freq": 2.0,
           "active": 0, "processed": 7, "loadavg": [0.1, 0.1, 0.1], "sw_ident": "py-celery",
           "sw_ver": "5.7.0", "sw_sys": "Linux", "timestamp": 1.0, "type": "worker-heartbeat"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_bodies_are_counted_and_skipped_while_valid_events_apply() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let warden = TestWarden::start(test_config(&broker)).await;
    let metrics = warden.warden.as_ref().unwrap().metrics.clone();
    let client = warden.client().await;
    let channel = "/0.celeryev/worker.heartbeat";
    // Wait until warden follows the stream (it counts a valid heartbeat).
    eventually(
        Duration::from_secs(15),
        "warden follows the event stream",
        || {
            let mut client = client.clone();
            let redis = &redis;
            async move {
                let valid = envelope::encode(
                    &heartbeat("good@hostile"),
                    json!({}),
                    "celeryev",
                    "worker.heartbeat",
                    1,
                );
                redis.cli(&["PUBLISH", channel, &valid]).await;
                find(&list(&mut client, false).await, "good@hostile").map(|_| ())
            }
        },
    )
    .await;

    let valid = envelope::encode(
        &heartbeat("good@hostile"),
        json!({}),
        "celeryev",
        "worker.heartbeat",
        1,
    );
    for content_type in [
        "application/x-python-serialize",
        "application/x-yaml",
        "application/x-msgpack",
    ] {
        // A body that would be dangerous to deserialize, under a worker name of its own.
        let hostile = envelope::encode(
            &heartbeat("evil@hostile"),
            json!({}),
            "celeryev",
            "worker.heartbeat",
            1,
        )
        .replace("application/json", content_type);
        redis.cli(&["PUBLISH", channel, &hostile]).await;
        redis.cli(&["PUBLISH", channel, &valid]).await;
    }
    redis
        .cli(&["PUBLISH", channel, "not an envelope at all"])
        .await;
    redis
        .cli(&[
            "PUBLISH",
            "/0.celeryev/task.multi",
            r#"{"body": "!!!", "content-type": "application/json"}"#,
        ])
        .await;
    redis.cli(&["PUBLISH", channel, &valid]).await;

    eventually(Duration::from_secs(10), "hostile messages counted", || {
        let metrics = metrics.clone();
        async move {
            let refused = metrics.rejected_count("event", "content_type");
            assert!(refused <= 3);
            (refused == 3
                && metrics.rejected_count("event", "envelope") == 1
                && metrics.rejected_count("event", "base64") == 1)
                .then_some(())
        }
    })
    .await;
    let r = list(&mut client.clone(), false).await;
    assert!(find(&r, "good@hostile").is_some());
    assert!(
        find(&r, "evil@hostile").is_none(),
        "a non-JSON body never reaches the fleet"
    );
    let good = find(&r, "good@hostile").unwrap();
    assert_eq!(good.processed_tasks, 7);
    assert!(
        metrics
            .encode()
            .contains("warden_broker_messages_rejected_total")
    );
    // warden follows the stream over RESP3, whose queue is bounded (tests/event_backpressure.rs).
    let clients = redis.cli(&["CLIENT", "LIST"]).await;
    let subscriber = clients
        .lines()
        .find(|l| l.contains("psub=1"))
        .expect("warden's subscription");
    assert!(subscriber.contains("resp=3"), "{subscriber}");
    warden.stop().await;
}
