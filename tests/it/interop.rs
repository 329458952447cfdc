//! Other languages and tools: the real grpcurl binary, and a Python client generated from
//! proto/ with grpcio-tools.

use std::{process::Command, time::Duration};

use crate::support::*;

async fn fleet_with_one_worker(name: &str) -> (RedisServer, CeleryWorker, TestWarden) {
    let redis = RedisServer::start().await;
    let worker = CeleryWorker::start(&redis.url(0), name, WorkerOptions::default());
    let warden = TestWarden::start(test_config(&redis.url(0))).await;
    let mut client = warden.client().await;
    let name = name.to_string();
    eventually(Duration::from_secs(30), "worker listed", || {
        let mut client = client.clone();
        let name = name.clone();
        // Listed with its inspect data (a heartbeat alone may list it a moment earlier).
        async move {
            find(&list(&mut client, false).await, &name)
                .filter(|w| w.pool.is_some())
                .map(|_| ())
        }
    })
    .await;
    let _ = &mut client;
    (redis, worker, warden)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_services_and_workers() {
    let (_redis, _worker, warden) = fleet_with_one_worker("w1@grpcurl").await;
    let addr = warden.grpc_url.trim_start_matches("http://").to_string();
    let grpcurl = venv().join("bin/grpcurl");

    let (ok, stdout, stderr) =
        run(Command::new(&grpcurl).args(["-plaintext", &addr, "list"])).await;
    assert!(ok, "{stderr}");
    for service in [
        "warden.v1.WorkerHealth",
        "warden.v1.Logs",
        "warden.v1.Control",
        "grpc.health.v1.Health",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim() == service),
            "{service} missing from:\n{stdout}"
        );
    }

    let (ok, stdout, stderr) = run(Command::new(&grpcurl).args([
        "-plaintext",
        "-d",
        r#"{"filter": {"name_glob": "w1@*"}}"#,
        &addr,
        "warden.v1.WorkerHealth/ListWorkers",
    ]))
    .await;
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("grpcurl prints JSON");
    let workers = json["workers"].as_array().expect("workers array");
    assert_eq!(workers.len(), 1, "{stdout}");
    assert_eq!(workers[0]["id"], "w1@grpcurl");
    assert_eq!(workers[0]["name"], "workers/celery/default/w1@grpcurl");
    assert_eq!(workers[0]["activity"], "ACTIVITY_IDLE");
    assert_eq!(workers[0]["pool"]["maxConcurrency"], 2);

    // The API reference travels with reflection: field docs are in the descriptors.
    let (ok, stdout, stderr) =
        run(Command::new(&grpcurl).args(["-plaintext", &addr, "describe", "warden.v1.Worker"]))
            .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("processed_tasks"), "{stdout}");
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_python_client_calls_list_workers() {
    let (_redis, _worker, warden) = fleet_with_one_worker("w1@python").await;
    let generated = tempfile::tempdir().unwrap();
    let python = venv().join("bin/python");
    let (ok, _, stderr) = run(Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(repo().join("proto"))
        .arg(format!("--python_out={}", generated.path().display()))
        .arg(format!("--grpc_python_out={}", generated.path().display()))
        .args([
            "warden/v1/common.proto",
            "warden/v1/worker_health.proto",
            "warden/v1/logs.proto",
            "warden/v1/control.proto",
            "warden/v1/history.proto",
            "warden/v1/alerts.proto",
        ]))
    .await;
    assert!(ok, "protoc failed: {stderr}");

    let addr = warden.grpc_url.trim_start_matches("http://").to_string();
    let (ok, stdout, stderr) = run(Command::new(&python)
        .arg(python_dir().join("list_workers_client.py"))
        .arg(generated.path())
        .arg(&addr))
    .await;
    assert!(ok, "python client failed: {stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    let workers = json["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 1, "{stdout}");
    assert_eq!(workers[0]["id"], "w1@python");
    assert_eq!(workers[0]["lifecycle"], "LIFECYCLE_ALIVE");
    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_watch_prints_the_live_stream() {
    use tokio::io::{AsyncBufReadExt as _, BufReader};
    let (_redis, _worker, warden) = fleet_with_one_worker("w1@cliwatch").await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["watch", "--output", "json", "--server", &warden.grpc_url])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a line within 10 s")
        .unwrap()
        .expect("a line");
    let json: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(json["kind"], "snapshot", "{first}");
    let workers = json["data"]["workers"].as_array().unwrap();
    assert!(workers.iter().any(|w| w["id"] == "w1@cliwatch"), "{first}");
    assert!(json["revision"].as_u64().unwrap() > 0);
    child.kill().await.unwrap();
    warden.stop().await;
}
