//! ForgetWorker with real workers, through the CLI: an ALIVE worker cannot be forgotten; once
//! it is gone (OFFLINE after a warm shutdown, LOST after a crash), `warden forget` removes
//! it, and `--dry-run` changes nothing.

use std::{process::Command, time::Duration};

use crate::support::*;
use tonic::{Code, transport::Channel};
use warden::proto::v1::{self as pb, worker_health_client::WorkerHealthClient};

async fn forget(server: &str, name: &str, extra: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.env_remove("WARDEN_TOKEN")
        .args(["forget", name, "--server", server, "--reason", "test"])
        .args(extra);
    run(&mut cmd).await
}

async fn lifecycle(client: &mut WorkerHealthClient<Channel>, name: &str) -> pb::Lifecycle {
    client
        .get_worker(pb::GetWorkerRequest {
            name: name.into(),
            refresh: false,
            ..Default::default()
        })
        .await
        .expect("GetWorker")
        .into_inner()
        .worker
        .expect("worker")
        .lifecycle()
}

/// Waits until `name` is no longer ALIVE (LOST after `heartbeat_critical` of silence, or
/// OFFLINE if it said goodbye) and returns what it became.
async fn gone(client: &WorkerHealthClient<Channel>, name: &'static str) -> pb::Lifecycle {
    eventually(
        Duration::from_secs(20),
        "the worker is no longer ALIVE",
        || {
            let mut client = client.clone();
            async move {
                let l = lifecycle(&mut client, name).await;
                (l != pb::Lifecycle::Alive).then_some(l)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_refuses_alive_workers_and_removes_gone_ones() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let one = || WorkerOptions {
        concurrency: 1,
        ..WorkerOptions::default()
    };
    let _stays = CeleryWorker::start(&broker, "stays@forget", one());
    let stopped = CeleryWorker::start(&broker, "stopped@forget", one());
    let mut crashed = CeleryWorker::start(&broker, "crashed@forget", one());
    let mut config = test_config(&broker);
    config.inspect_interval = Duration::from_secs(1);
    config.inspect_timeout = Duration::from_millis(500);
    config.heartbeat_warning = Duration::from_secs(2);
    config.heartbeat_critical = Duration::from_secs(4);
    let warden = TestWarden::start(config).await;
    let server = warden.grpc_url.clone();
    let mut client = warden.client().await;
    let names = ["stays@forget", "stopped@forget", "crashed@forget"];
    eventually(Duration::from_secs(40), "all three listed", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            names.iter().all(|n| find(&r, n).is_some()).then_some(())
        }
    })
    .await;

    // ALIVE: FAILED_PRECONDITION, nothing changes.
    assert_eq!(
        lifecycle(&mut client, "stopped@forget").await,
        pb::Lifecycle::Alive
    );
    let (ok, stdout, stderr) = forget(&server, "stopped@forget", &[]).await;
    assert!(!ok, "forgot an ALIVE worker: {stdout}");
    assert!(
        stderr.contains("FAILED_PRECONDITION") && stderr.contains("ALIVE"),
        "{stderr}"
    );
    let (ok, _, stderr) = forget(&server, "stopped@forget", &["--dry-run"]).await;
    assert!(
        !ok && stderr.contains("FAILED_PRECONDITION"),
        "a dry run is refused the same way: {stderr}"
    );
    assert!(find(&list(&mut client, false).await, "stopped@forget").is_some());

    // Warm shutdown and a crash.
    stopped.terminate().await;
    crashed.kill9().await;
    let crashed_became = gone(&client, "crashed@forget").await;
    assert_eq!(
        crashed_became,
        pb::Lifecycle::Lost,
        "a crash says no goodbye"
    );
    // A warm shutdown says goodbye (worker-offline): OFFLINE, never LOST. (LOST would mean
    // the goodbye was missed and only the silence was noticed.)
    let stopped_became = gone(&client, "stopped@forget").await;
    assert_eq!(
        stopped_became,
        pb::Lifecycle::Offline,
        "a warm shutdown is a goodbye"
    );

    for name in ["stopped@forget", "crashed@forget"] {
        // A dry run says what would happen and leaves the worker listed.
        let (ok, stdout, stderr) = forget(&server, name, &["--dry-run"]).await;
        assert!(ok, "{stderr}");
        assert!(stdout.contains(&format!("{name}: would_apply")), "{stdout}");
        assert!(stdout.contains("audit id: "), "{stdout}");
        assert!(
            find(&list(&mut client, false).await, name).is_some(),
            "dry run removed {name}"
        );

        // For real.
        let (ok, stdout, stderr) = forget(&server, name, &[]).await;
        assert!(ok, "{stderr}");
        assert!(stdout.contains(&format!("{name}: applied")), "{stdout}");
        let r = list(&mut client, false).await;
        assert!(find(&r, name).is_none(), "{name} still listed: {r:?}");
        let err = client
            .get_worker(pb::GetWorkerRequest {
                name: name.into(),
                refresh: false,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");

        // Forgetting it again: NOT_FOUND.
        let (ok, _, stderr) = forget(&server, name, &[]).await;
        assert!(!ok && stderr.contains("NOT_FOUND"), "{stderr}");
    }

    // The live worker is untouched, and a later round does not bring the dead back.
    let r = list(&mut client, true).await;
    let names: Vec<&str> = r.workers.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(names, ["stays@forget"], "{r:?}");
    assert_eq!(
        lifecycle(&mut client, "stays@forget").await,
        pb::Lifecycle::Alive
    );
    warden.stop().await;
}
