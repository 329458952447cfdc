//! Queue depths as kombu stores them on Redis: priority sub-lists summed, unacknowledged
//! messages reported separately, changes streamed to watchers.

use std::time::{Duration, Instant};

use crate::support::*;
use tokio_stream::StreamExt as _;
use warden::proto::v1::{self as pb, watch_fleet_response::Event};

async fn queue(
    client: &mut pb::worker_health_client::WorkerHealthClient<tonic::transport::Channel>,
    name: &str,
) -> Option<pb::Queue> {
    client
        .list_queues(pb::ListQueuesRequest::default())
        .await
        .ok()?
        .into_inner()
        .queues
        .into_iter()
        .find(|q| q.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_sub_queues_are_summed_exactly_and_changes_are_streamed() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    // No worker consumes "nobody": warden finds it through kombu's binding.
    for (priority, count) in [(0, 3), (3, 2), (6, 4), (9, 1)] {
        submit(
            &broker,
            "add",
            count,
            &["1", "1"],
            &["--queue", "nobody", "--priority", &priority.to_string()],
        )
        .await;
    }
    let warden = TestWarden::start(test_config(&broker)).await;
    let client = warden.client().await;
    let nobody = eventually(Duration::from_secs(15), "queue measured", || {
        let mut client = client.clone();
        async move { queue(&mut client, "nobody").await }
    })
    .await;
    assert_eq!(nobody.depth, 10, "{nobody:?}");
    let by_priority: Vec<(u32, u64)> = nobody
        .by_priority
        .iter()
        .map(|p| (p.priority, p.depth))
        .collect();
    assert_eq!(by_priority, vec![(0, 3), (3, 2), (6, 4), (9, 1)]);
    assert_eq!((nobody.unacked, nobody.consumers), (0, 0));
    // Ground truth from Redis itself.
    let mut total = 0;
    for key in [
        "nobody",
        "nobody\x06\x163",
        "nobody\x06\x166",
        "nobody\x06\x169",
    ] {
        total += redis.cli(&["LLEN", key]).await.parse::<u64>().unwrap();
    }
    assert_eq!(total, 10);

    // A depth change reaches a watcher within 5 s (the poll interval is 2 s).
    let mut stream = client
        .clone()
        .watch_fleet(pb::WatchFleetRequest {
            include_queues: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let s = next_snapshot(&mut stream).await;
    assert!(s.queues.iter().any(|q| q.name == "nobody" && q.depth == 10));
    let sent = Instant::now();
    submit(&broker, "add", 2, &["1", "1"], &["--queue", "nobody"]).await;
    let updated = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let message = stream.next().await.unwrap().unwrap();
            if let Some(Event::QueueUpdated(q)) = message.event
                && q.name == "nobody"
            {
                return q;
            }
        }
    })
    .await
    .expect("queue change streamed within 5 s");
    assert_eq!(updated.depth, 12);
    eprintln!(
        "queue change streamed {:?} after the tasks were sent",
        sent.elapsed()
    );

    // The summary adds the queues up.
    let summary = client
        .clone()
        .get_fleet_summary(pb::GetFleetSummaryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(summary.queued_messages, 12);
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_unacked_messages_are_reported_separately() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    // One process, prefetch 4: one task runs (acknowledged at start), four wait unacked.
    let _worker = CeleryWorker::start(
        &broker,
        "slow@queues",
        WorkerOptions {
            queues: &["slowq"],
            concurrency: 1,
            env: vec![("WARDEN_TEST_PREFETCH", "4".into())],
            ..WorkerOptions::default()
        },
    );
    let warden = TestWarden::start(test_config(&broker)).await;
    let client = warden.client().await;
    eventually(Duration::from_secs(30), "worker consuming slowq", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            find(&r, "slow@queues")
                .filter(|w| !w.queues.is_empty())
                .map(|_| ())
        }
    })
    .await;
    submit(&broker, "sleep_for", 7, &["20"], &["--queue", "slowq"]).await;
    let slowq = eventually(
        Duration::from_secs(20),
        "prefetched messages unacked",
        || {
            let mut client = client.clone();
            async move {
                queue(&mut client, "slowq")
                    .await
                    .filter(|q| q.unacked == 4 && q.depth == 2)
            }
        },
    )
    .await;
    assert_eq!(slowq.consumers, 1);
    assert_eq!(
        slowq.consumer_names,
        vec!["workers/celery/default/slow@queues"]
    );
    // Redis agrees: the unacked hash holds exactly the prefetched messages.
    assert_eq!(redis.cli(&["HLEN", "unacked"]).await, "4");
    assert_eq!(redis.cli(&["LLEN", "slowq"]).await, "2");
    warden.stop().await;
}
