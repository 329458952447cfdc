//! The broker as real deployments configure it: a database other than 0, a password, and
//! kombu's `global_keyprefix`, all at once. Every path (inspect, events, queue depths) must
//! use the same names the workers use.

use std::time::Duration;

use crate::support::*;

const PREFIX: &str = "pfx:";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_index_password_and_global_keyprefix_are_honoured() {
    let redis = RedisServer::start_with_password("s3cret-broker-password").await;
    let broker = redis.url(3);
    let env = vec![("WARDEN_TEST_KEYPREFIX", PREFIX.to_string())];
    let _worker = CeleryWorker::start(
        &broker,
        "prefixed@url",
        WorkerOptions {
            queues: &["pq"],
            env: env.clone(),
            ..WorkerOptions::default()
        },
    );
    let mut config = test_config(&broker);
    config.global_keyprefix = PREFIX.into();
    let warden = TestWarden::start(config).await;
    let client = warden.client().await;

    // Inspect (prefixed pidbox channel and reply binding) finds the worker and its queue.
    eventually(Duration::from_secs(30), "prefixed worker inspected", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            let w = find(&r, "prefixed@url")?;
            (w.pool.is_some() && w.queues.iter().any(|q| q.name == "pq")).then_some(())
        }
    })
    .await;

    // Events (prefixed celeryev pattern) count its tasks; a queue nobody consumes is measured
    // under the prefix.
    let producer_env = [("WARDEN_TEST_KEYPREFIX", PREFIX)];
    submit_with_env(
        &broker,
        "add",
        2,
        &["1", "1"],
        &["--queue", "pq"],
        &producer_env,
    )
    .await;
    submit_with_env(
        &broker,
        "add",
        5,
        &["1", "1"],
        &["--queue", "parked"],
        &producer_env,
    )
    .await;
    eventually(
        Duration::from_secs(40),
        "task events and queue depth under the prefix",
        || {
            let mut client = client.clone();
            let broker = broker.clone();
            async move {
                let r = list(&mut client, false).await;
                let w = find(&r, "prefixed@url")?;
                let succeeded = w.task_stats.as_ref()?.windows.get(2)?.succeeded;
                if succeeded == 0 {
                    // Task events are switched on by warden; tasks before that are not seen.
                    submit_with_env(
                        &broker,
                        "add",
                        1,
                        &["1", "1"],
                        &["--queue", "pq"],
                        &producer_env,
                    )
                    .await;
                    return None;
                }
                let queues = client
                    .list_queues(warden::proto::v1::ListQueuesRequest::default())
                    .await
                    .ok()?
                    .into_inner()
                    .queues;
                let parked = queues.iter().find(|q| q.name == "parked")?;
                (parked.depth == 5).then_some(())
            }
        },
    )
    .await;

    // The keys really are prefixed, in database 3: this test exercised the prefix.
    for (command, expected) in [
        (["LLEN", "pfx:parked"], "5"),
        (["EXISTS", "parked"], "0"),
        (["EXISTS", "pfx:_kombu.binding.parked"], "1"),
    ] {
        let [verb, key] = command;
        assert_eq!(
            redis.cli(&["-n", "3", verb, key]).await,
            expected,
            "{command:?}"
        );
    }
    warden.stop().await;
}
