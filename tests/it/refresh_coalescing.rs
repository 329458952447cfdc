//! A burst of `refresh: true` requests shares one inspect broadcast instead of sending one
//! each to every worker.

use std::time::Duration;

use crate::support::*;
use warden::proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_share_one_broadcast() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _worker = CeleryWorker::start(&broker, "w1@coalesce", WorkerOptions::default());
    let mut config = test_config(&broker);
    // No periodic round while we count.
    config.inspect_interval = Duration::from_secs(600);
    let warden = TestWarden::start(config).await;
    let metrics = warden.metrics().clone();
    let client = warden.client().await;
    eventually(Duration::from_secs(30), "worker inspected", || {
        let mut client = client.clone();
        async move {
            find(&list(&mut client, false).await, "w1@coalesce")
                .filter(|w| w.pool.is_some())
                .map(|_| ())
        }
    })
    .await;
    // The greeting rounds stop once the pool is known, which it now is.
    let before = metrics.inspect_round_count("ok");

    let calls = (0..10).map(|_| {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .list_workers(pb::ListWorkersRequest {
                    refresh: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
        })
    });
    let mut responses = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        responses.push(call.await.unwrap());
    }
    for r in &responses {
        assert!(find(r, "w1@coalesce").is_some());
        assert!(
            r.freshness.as_ref().unwrap().reason.is_empty(),
            "{:?}",
            r.freshness
        );
    }
    let rounds = metrics.inspect_round_count("ok") - before;
    assert!(
        (1..=2).contains(&rounds),
        "10 concurrent refreshes ran {rounds} rounds (one shared round, or two if a request arrived just as the first ended)"
    );
    warden.stop().await;
}
