//! Worker discovery over a real broker: two real Celery workers, counted tasks, a crash.

use std::time::Duration;

use crate::support::*;
use tonic::Code;
use warden::proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_are_discovered_counted_and_a_killed_one_turns_unresponsive() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let mut w1 = CeleryWorker::start(&broker, "w1@discovery", WorkerOptions::default());
    let _w2 = CeleryWorker::start(
        &broker,
        "w2@discovery",
        WorkerOptions {
            queues: &["celery", "emails"],
            concurrency: 3,
            ..WorkerOptions::default()
        },
    );
    let mut config = test_config(&broker);
    config.inspect_interval = Duration::from_secs(3);
    config.inspect_timeout = Duration::from_secs(1);
    let warden = TestWarden::start(config).await;
    let mut client = warden.client().await;

    let listed = eventually(
        Duration::from_secs(30),
        "both workers listed with stats",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, false).await;
                let both = ["w1@discovery", "w2@discovery"]
                    .iter()
                    .all(|n| find(&r, n).is_some_and(|w| w.pool.is_some()));
                both.then_some(r)
            }
        },
    )
    .await;
    let w1_info = find(&listed, "w1@discovery").unwrap();
    let w2_info = find(&listed, "w2@discovery").unwrap();
    for w in [w1_info, w2_info] {
        assert!(
            w.uptime
                .as_ref()
                .is_some_and(|u| u.seconds > 0 || u.nanos > 0),
            "{w:?}"
        );
        assert!(w.pid.unwrap_or(0) > 0);
        assert!(w.last_seen.is_some());
        assert_eq!(w.backend(), pb::Backend::Celery);
        assert!(matches!(
            w.activity(),
            pb::Activity::Idle | pb::Activity::Active
        ));
        assert!(
            w.registered_tasks
                .contains(&"warden_test_app.add".to_string()),
            "{w:?}"
        );
    }
    assert_eq!(w1_info.pid, Some(w1.pid()));
    let pool1 = w1_info.pool.as_ref().unwrap();
    assert_eq!(
        (pool1.implementation.as_str(), pool1.max_concurrency),
        ("prefork", 2)
    );
    assert_eq!(pool1.processes.len(), 2);
    assert_eq!(w2_info.pool.as_ref().unwrap().max_concurrency, 3);
    let queues = |w: &pb::Worker| w.queues.iter().map(|q| q.name.clone()).collect::<Vec<_>>();
    assert_eq!(queues(w1_info), vec!["celery"]);
    let mut q2 = queues(w2_info);
    q2.sort();
    assert_eq!(q2, vec!["celery", "emails"]);

    // Ground truth: N tasks run, N counted (summed over both workers).
    const N: u64 = 12;
    submit(&broker, "add", N as u32, &["1", "2"], &[]).await;
    eventually(Duration::from_secs(30), "processed_tasks sums to N", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, true).await;
            let total: u64 = r.workers.iter().map(|w| w.processed_tasks).sum();
            assert!(total <= N, "counted {total} > {N} tasks");
            (total == N).then_some(())
        }
    })
    .await;

    // Detail and NOT_FOUND.
    let detail = client
        .get_worker(pb::GetWorkerRequest {
            name: "w2@discovery".into(),
            refresh: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let worker = detail.worker.unwrap();
    assert_eq!(
        worker.processed_tasks,
        worker.processed_by_task.values().sum::<u64>()
    );
    let err = client
        .get_worker(pb::GetWorkerRequest {
            name: "nobody@nowhere".into(),
            refresh: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // A crash: w1 is reported UNRESPONSIVE within two inspect intervals, w2 is not.
    w1.kill9().await;
    let killed_at = std::time::Instant::now();
    eventually(
        Duration::from_secs(6),
        "w1 unresponsive within two intervals",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, false).await;
                let w1 = find(&r, "w1@discovery")?;
                (w1.activity() == pb::Activity::Unresponsive).then_some(())
            }
        },
    )
    .await;
    let r = list(&mut client, false).await;
    let w2 = find(&r, "w2@discovery").expect("w2 still listed");
    assert!(
        matches!(w2.activity(), pb::Activity::Idle | pb::Activity::Active),
        "{w2:?}"
    );
    let w1 = find(&r, "w1@discovery").expect("a dead worker stays visible");
    assert_eq!(
        w1.processed_tasks + w2.processed_tasks,
        N,
        "last figures are kept"
    );
    eprintln!("w1 unresponsive {:?} after SIGKILL", killed_at.elapsed());

    // The CLI shows the same fleet.
    let (ok, stdout, stderr) = run(std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["workers", "--server", &warden.grpc_url]))
    .await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("w1@discovery") && stdout.contains("unresponsive"),
        "{stdout}"
    );
    assert!(
        stdout.contains("w2@discovery") && stdout.contains("prefork/3"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = run(std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["worker", "w2@discovery", "--server", &warden.grpc_url]))
    .await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("celery, emails") && stdout.contains("warden_test_app.add"),
        "{stdout}"
    );
    warden.stop().await;
}
