//! The local runtime with real Celery workers (solo pool, the test app):
//! - launch time: 30 workers from warden's start until all are alive in ListWorkers;
//! - restart-to-back: a runtime restart of one worker until ListWorkers shows its new pid;
//! - Logs.Tail throughput to one client: following a process that writes 200,000 lines, and
//!   reading back the last 10,000 of them.
//!
//! Not a criterion bench (one-shot wall-clock figures). Needs redis-server on PATH and the test
//! venv (WARDEN_TEST_VENV, default .venv). Run: `cargo bench --bench local_runtime`.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_stream::StreamExt as _;
use warden::{
    config::{Config, NO_DATABASE, Secret},
    fleet::{
        Backend, WorkerKey,
        ports::{RestartMode, Runtime},
    },
    proto::v1::{self as pb, logs_client::LogsClient, worker_health_client::WorkerHealthClient},
    server::Warden,
};
use warden_runtime::{GroupSpec, LocalSettings};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKERS: u32 = 30;
const RESTARTS: usize = 5;
const SPEW_LINES: u32 = 200_000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn celery_group(name: &str, count: u32, broker: &str) -> GroupSpec {
    let venv = std::env::var_os("WARDEN_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"));
    let python = repo().join("tests/python");
    GroupSpec {
        name: name.into(),
        command: venv.join("bin/celery").display().to_string(),
        args: [
            "-A",
            "warden_test_app",
            "worker",
            "-n",
            "{node}",
            "-P",
            "solo",
            "-E",
            "-Q",
            "bench",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "info",
        ]
        .map(String::from)
        .to_vec(),
        env: [
            ("WARDEN_TEST_BROKER".to_string(), broker.to_string()),
            ("PYTHONPATH".to_string(), python.display().to_string()),
        ]
        .into(),
        working_dir: Some(python),
        count,
        node_name: Some("{group}-{index}@bench".into()),
    }
}

fn spew_group() -> GroupSpec {
    GroupSpec {
        name: "spew".into(),
        command: "sh".into(),
        args: vec![
            "-c".into(),
            // Waits for the follower (a file appears), writes the lines, then idles.
            format!(
                "while [ ! -e \"$GO\" ]; do sleep 0.05; done; seq 1 {SPEW_LINES} | \
                 sed 's/^/[2024-01-01 12:00:00,000: INFO\\/MainProcess] line /'; exec sleep 100000"
            ),
        ],
        env: Default::default(),
        working_dir: None,
        count: 1,
        node_name: Some("spew-{index}@bench".into()),
    }
}

async fn alive_pids(
    client: &mut WorkerHealthClient<tonic::transport::Channel>,
) -> Vec<(String, Option<u32>)> {
    client
        .list_workers(pb::ListWorkersRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .workers
        .into_iter()
        .filter(|w| w.lifecycle == pb::Lifecycle::Alive as i32)
        .map(|w| (w.id, w.pid))
        .collect()
}

#[tokio::main]
async fn main() {
    let port = free_port();
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let broker = format!("redis://127.0.0.1:{port}/0");
    let logs = tempfile::tempdir().unwrap();
    let go = logs.path().join("go");
    let mut spew = spew_group();
    spew.env.insert("GO".into(), go.display().to_string());
    let config = Config {
        broker_url: Secret::new(broker.clone()),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: Secret::new(NO_DATABASE),
        inspect_interval: Duration::from_secs(2),
        inspect_timeout: Duration::from_millis(800),
        local: Some(LocalSettings {
            groups: vec![celery_group("bench", WORKERS, &broker), spew],
            log_dir: logs.path().join("logs"),
            log_file_bytes: 64 * 1024 * 1024,
            stop_grace: Duration::from_secs(5),
            ..Default::default()
        }),
        ..Config::default()
    };

    // Launch.
    let began = Instant::now();
    let warden = Warden::start(config).await.unwrap();
    let runtime: Arc<dyn Runtime> = warden.runtime.clone().unwrap();
    let url = format!("http://{}", warden.grpc_addr);
    let mut client = WorkerHealthClient::connect(url.clone()).await.unwrap();
    loop {
        let alive = alive_pids(&mut client).await;
        if alive
            .iter()
            .filter(|(id, _)| id.starts_with("bench-"))
            .count()
            == WORKERS as usize
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "launch: {WORKERS} workers alive in ListWorkers after {:?}",
        began.elapsed()
    );

    // Restart to back.
    let key = WorkerKey::new(Backend::Celery, "default", "bench-0@bench");
    let mut samples = Vec::new();
    for _ in 0..RESTARTS {
        let began = Instant::now();
        runtime
            .restart(&key, RestartMode::Instance, Duration::from_secs(10))
            .await
            .unwrap();
        let pid = runtime.instance(&key).await.unwrap().pid.unwrap();
        let respawned = began.elapsed();
        loop {
            let alive = alive_pids(&mut client).await;
            if alive
                .iter()
                .any(|(id, p)| id == "bench-0@bench" && *p == Some(pid))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        samples.push((respawned, began.elapsed()));
    }
    for (respawned, back) in &samples {
        println!("restart: new process after {respawned:?}, back in ListWorkers after {back:?}");
    }

    // Tail: follow a process writing SPEW_LINES lines.
    let mut logs_client = LogsClient::connect(url).await.unwrap();
    let mut stream = logs_client
        .tail(pb::TailRequest {
            worker: "spew-0@bench".into(),
            tail_lines: Some(0),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    std::fs::write(&go, b"").unwrap();
    let began = Instant::now();
    let (mut received, mut dropped) = (0u64, 0u64);
    while received + dropped < u64::from(SPEW_LINES) {
        match stream.next().await {
            Some(Ok(m)) => match m.payload {
                Some(pb::tail_response::Payload::Lines(b)) => received += b.lines.len() as u64,
                Some(pb::tail_response::Payload::Event(e))
                    if e.kind == pb::StreamEventKind::LinesDropped as i32 =>
                {
                    dropped += e.dropped
                }
                _ => {}
            },
            _ => break,
        }
    }
    let elapsed = began.elapsed();
    println!(
        "tail follow: {received} lines received, {dropped} dropped, in {elapsed:?}: {:.0} lines/s",
        received as f64 / elapsed.as_secs_f64()
    );
    drop(stream);

    // Tail: read back the last 10,000 of them (non-follow), ERROR filter (none match) and none.
    for (what, min_level) in [("no filter", 0), ("min_level ERROR (scans all)", 5)] {
        let began = Instant::now();
        let mut stream = logs_client
            .tail(pb::TailRequest {
                worker: "spew-0@bench".into(),
                tail_lines: Some(5_000),
                min_level,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(Ok(m)) = stream.next().await {
            if let Some(pb::tail_response::Payload::Lines(b)) = m.payload {
                n += b.lines.len();
            }
        }
        println!(
            "tail read-back of {SPEW_LINES} stored lines, {what}: {n} lines sent in {:?}",
            began.elapsed()
        );
    }

    warden.shutdown().await;
    let _ = redis.kill();
    let _ = redis.wait();
}
