//! The oldest and the newest supported Celery on one broker: kombu 5.3 and 5.7 differ in how
//! reply bindings are written and expired (5.7 adds binding deadlines and sweeps expired
//! binding sets); warden must get inspect replies and events from both.

use std::time::Duration;

use crate::support::*;
use warden::proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_5_3_and_5_7_workers_side_by_side() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _old = CeleryWorker::start(
        &broker,
        "old@versions",
        WorkerOptions {
            queues: &["old"],
            venv: Some(old_celery_venv()),
            ..WorkerOptions::default()
        },
    );
    let _new = CeleryWorker::start(
        &broker,
        "new@versions",
        WorkerOptions {
            queues: &["new"],
            ..WorkerOptions::default()
        },
    );
    let warden = TestWarden::start(test_config(&broker)).await;
    let client = warden.client().await;

    let listed = eventually(Duration::from_secs(40), "both versions inspected", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, true).await;
            let ready = ["old@versions", "new@versions"].iter().all(|n| {
                find(&r, n).is_some_and(|w| w.pool.is_some() && !w.registered_tasks.is_empty())
            });
            ready.then_some(r)
        }
    })
    .await;
    let old = find(&listed, "old@versions").unwrap();
    let new = find(&listed, "new@versions").unwrap();
    assert_eq!(
        old.software.as_ref().map(|s| s.version.as_str()),
        Some("5.3.6"),
        "{old:?}"
    );
    assert_eq!(
        new.software.as_ref().map(|s| s.version.as_str()),
        Some("5.7.0"),
        "{new:?}"
    );
    for w in [old, new] {
        assert_eq!(w.pool.as_ref().unwrap().max_concurrency, 2);
        assert!(
            w.registered_tasks
                .contains(&"warden_test_app.add".to_string())
        );
    }

    // Task events from both (switched on by warden's enable_events), counted per worker.
    submit(&broker, "add", 3, &["1", "2"], &["--queue", "old"]).await;
    submit(&broker, "add", 4, &["1", "2"], &["--queue", "new"]).await;
    eventually(
        Duration::from_secs(40),
        "tasks counted on both versions",
        || {
            let mut client = client.clone();
            let broker = broker.clone();
            async move {
                let r = list(&mut client, false).await;
                let succeeded = |name: &str| {
                    find(&r, name)
                        .and_then(|w| w.task_stats.as_ref())
                        .and_then(|t| t.windows.get(2))
                        .map_or(0, |w| w.succeeded)
                };
                let processed = |name: &str| find(&r, name).map_or(0, |w| w.processed_tasks);
                if processed("old@versions") >= 3 && succeeded("old@versions") == 0 {
                    // Events were switched on after the first tasks ran: run more.
                    submit(&broker, "add", 1, &["1", "2"], &["--queue", "old"]).await;
                }
                (processed("old@versions") >= 3
                    && processed("new@versions") == 4
                    && succeeded("old@versions") > 0
                    && succeeded("new@versions") > 0)
                    .then_some(())
            }
        },
    )
    .await;

    // Inspect keeps working round after round (kombu 5.7's binding sweep must not remove the
    // binding a round relies on).
    for _ in 0..3 {
        let r = list(&mut client.clone(), true).await;
        assert!(!r.freshness.as_ref().unwrap().stale);
        for name in ["old@versions", "new@versions"] {
            assert_ne!(
                find(&r, name).unwrap().activity(),
                pb::Activity::Unresponsive,
                "{name}"
            );
        }
    }
    warden.stop().await;
}
