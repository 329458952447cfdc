//! Worker CPU and memory from a real Prometheus: it scrapes a small in-test exporter serving
//! cAdvisor-shaped series for the test's workers (and warden's own `/metrics`); warden's
//! Prometheus source reads the figures back with the shipped query templates. Stopping
//! Prometheus leaves the last figures in place, marked stale, and nothing else degrades.

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{exporter::value, support::*};
use tonic::transport::Channel;
use warden::{
    config::Secret,
    proto::v1::{self as pb, worker_health_client::WorkerHealthClient},
};

const MIB: u64 = 1024 * 1024;

/// (pod, CPU cores busy, working set, memory limit; 0 = none).
const PODS: [(&str, f64, u64, u64); 3] = [
    ("pod-a", 0.5, 200 * MIB, 1024 * MIB),
    ("pod-b", 1.5, 512 * MIB, 0),
    // Not a worker of this fleet: never asked for, never shown.
    ("pod-z", 3.0, 64 * MIB, 128 * MIB),
];

/// Serves cAdvisor's three series for `pods`; CPU counters grow at their pods' rates.
async fn start_cadvisor(pods: Vec<(String, f64, u64, u64)>) -> (u16, tokio::task::JoinHandle<()>) {
    let pods = Arc::new(pods);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Arc::new(Instant::now());
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let started = started.clone();
            let pods = pods.clone();
            async move {
                let elapsed = started.elapsed().as_secs_f64();
                let mut out = String::new();
                out.push_str("# TYPE container_cpu_usage_seconds_total counter\n");
                for (pod, cores, _, _) in pods.iter() {
                    // The pause container's series must be left out by the templates.
                    out.push_str(&format!(
                        "container_cpu_usage_seconds_total{{namespace=\"t\",pod=\"{pod}\",container=\"worker\"}} {}\n\
                         container_cpu_usage_seconds_total{{namespace=\"t\",pod=\"{pod}\",container=\"POD\"}} {}\n",
                        100.0 + cores * elapsed,
                        9.0 * elapsed
                    ));
                }
                out.push_str("# TYPE container_memory_working_set_bytes gauge\n");
                for (pod, _, used, _) in pods.iter() {
                    out.push_str(&format!(
                        "container_memory_working_set_bytes{{namespace=\"t\",pod=\"{pod}\",container=\"worker\"}} {used}\n"
                    ));
                }
                out.push_str("# TYPE container_spec_memory_limit_bytes gauge\n");
                for (pod, _, _, limit) in pods.iter() {
                    out.push_str(&format!(
                        "container_spec_memory_limit_bytes{{namespace=\"t\",pod=\"{pod}\",container=\"worker\"}} {limit}\n"
                    ));
                }
                // pod-a alone has a GPU (two, per NVIDIA's DCGM exporter) and a filesystem
                // figure: the others' GPU and disk figures must stay absent, not 0.
                if pods.iter().any(|p| p.0 == "pod-a") {
                    out.push_str(
                        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n\
                         DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",pod=\"pod-a\"} 70\n\
                         DCGM_FI_DEV_GPU_UTIL{gpu=\"1\",pod=\"pod-a\"} 90\n\
                         # TYPE DCGM_FI_DEV_FB_USED gauge\n\
                         DCGM_FI_DEV_FB_USED{gpu=\"0\",pod=\"pod-a\"} 30000\n\
                         DCGM_FI_DEV_FB_USED{gpu=\"1\",pod=\"pod-a\"} 10000\n\
                         # TYPE DCGM_FI_DEV_FB_FREE gauge\n\
                         DCGM_FI_DEV_FB_FREE{gpu=\"0\",pod=\"pod-a\"} 10000\n\
                         DCGM_FI_DEV_FB_FREE{gpu=\"1\",pod=\"pod-a\"} 30000\n\
                         # TYPE container_fs_usage_bytes gauge\n\
                         container_fs_usage_bytes{namespace=\"t\",pod=\"pod-a\",container=\"worker\"} 910\n\
                         # TYPE container_fs_limit_bytes gauge\n\
                         container_fs_limit_bytes{namespace=\"t\",pod=\"pod-a\",container=\"worker\"} 1000\n",
                    );
                }
                out
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, task)
}

/// A real Prometheus on `port`, scraping every second.
struct Prometheus {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(port: u16, targets: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, target) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ));
        }
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus runs (scripts/lib/prometheus.sh installs it)");
        Self { child, _dir: dir }
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// One instant query's vector, as (labels, value).
async fn query(port: u16, promql: &str) -> Vec<(serde_json::Value, f64)> {
    let Ok(response) = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/query"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("query={}", form_encode(promql)))
        .send()
        .await
    else {
        return Vec::new();
    };
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let v = s["value"][1].as_str()?.parse().ok()?;
            Some((s["metric"].clone(), v))
        })
        .collect()
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn resources(
    client: &mut WorkerHealthClient<Channel>,
    name: &str,
) -> Option<(pb::Worker, pb::ResourceUsage)> {
    let worker = client
        .get_worker(pb::GetWorkerRequest {
            name: name.into(),
            refresh: false,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner()
        .worker?;
    let r = worker.resources.clone()?;
    Some((worker, r))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_come_from_prometheus_and_go_stale_when_it_stops() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _a = CeleryWorker::start(&broker, "celery@pod-a", WorkerOptions::default());
    let _b = CeleryWorker::start(&broker, "celery@pod-b", WorkerOptions::default());
    let pods = PODS
        .iter()
        .map(|(p, c, u, l)| (p.to_string(), *c, *u, *l))
        .collect();
    let (cadvisor, _exporter) = start_cadvisor(pods).await;
    let prometheus_port = reserve_port();
    let mut config = test_config(&broker);
    config.prometheus_url = Some(Secret::new(format!(
        "http://127.0.0.1:{}",
        prometheus_port.get()
    )));
    config.resource_interval = Duration::from_millis(500);
    config.prometheus_timeout = Duration::from_secs(2);
    // The shipped template with a 5 s rate window instead of 2 minutes (a rate divides by its
    // window: it is right once the window is full of samples).
    assert!(config.prometheus_query_cpu.contains("[2m]"));
    config.prometheus_query_cpu = config.prometheus_query_cpu.replace("[2m]", "[5s]");
    // Started before Prometheus: the source is down at first, and recovers.
    let warden = TestWarden::start(config).await;
    let http = warden.http_url.clone();
    let mut prometheus = Prometheus::start(
        prometheus_port.get(),
        &[
            ("cadvisor", format!("127.0.0.1:{cadvisor}")),
            ("warden", http.trim_start_matches("http://").to_string()),
        ],
    );
    let client = warden.client().await;

    // Wait for a full rate window in Prometheus, then for warden's next figures.
    eventually(Duration::from_secs(60), "5 s of CPU samples", || async {
        let n = query(
            prometheus_port.get(),
            r#"count_over_time(container_cpu_usage_seconds_total{pod="pod-a",container="worker"}[5s])"#,
        )
        .await;
        n.first().is_some_and(|(_, v)| *v >= 5.0).then_some(())
    })
    .await;
    let window_full = std::time::SystemTime::now() + Duration::from_secs(1);

    // Figures as exported: CPU from the counter's rate (cores x 100), memory as served, the
    // limit only where there is one.
    let read = |name: &'static str| {
        let client = client.clone();
        async move {
            eventually(Duration::from_secs(60), "resource figures", || {
                let mut client = client.clone();
                async move {
                    let (_, r) = resources(&mut client, name).await?;
                    let at = r.sampled_at?;
                    let at =
                        std::time::UNIX_EPOCH + Duration::new(at.seconds as u64, at.nanos as u32);
                    (at >= window_full && r.cpu_percent.is_some() && r.memory_rss_bytes.is_some())
                        .then_some(r)
                }
            })
            .await
        }
    };
    let a = read("celery@pod-a").await;
    let b = read("celery@pod-b").await;
    assert_eq!(a.source, "prometheus");
    assert!(!a.stale && !b.stale);
    let cpu_a = a.cpu_percent.unwrap();
    let cpu_b = b.cpu_percent.unwrap();
    assert!((45.0..55.0).contains(&cpu_a), "pod-a CPU {cpu_a}");
    assert!((140.0..160.0).contains(&cpu_b), "pod-b CPU {cpu_b}");
    assert_eq!(a.memory_rss_bytes, Some(200 * MIB));
    assert_eq!(a.memory_limit_bytes, Some(1024 * MIB));
    let pct = a.memory_percent.unwrap();
    assert!((pct - 200.0 * 100.0 / 1024.0).abs() < 1e-9, "{pct}");
    assert_eq!(b.memory_rss_bytes, Some(512 * MIB));
    assert_eq!(b.memory_limit_bytes, None, "no limit is absent, not 0");
    assert_eq!(b.memory_percent, None);
    // GPU (DCGM: average utilisation, the fullest GPU's memory) and disk (cAdvisor fs).
    let gpu = eventually(Duration::from_secs(30), "pod-a's GPU figures", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            find(&r, "celery@pod-a")?
                .resources
                .clone()
                .filter(|u| !u.gpus.is_empty() && !u.disks.is_empty())
        }
    })
    .await;
    assert_eq!(gpu.gpus.len(), 1, "{gpu:?}");
    let near = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() < 1e-6);
    assert!(near(gpu.gpus[0].utilization_percent, 80.0), "{gpu:?}");
    assert!(near(gpu.gpus[0].memory_percent, 75.0), "{gpu:?}");
    assert!(near(gpu.disks[0].used_percent, 91.0), "{gpu:?}");
    assert_eq!(gpu.disks[0].mount_point, "/");
    assert!(
        b.gpus.is_empty() && b.disks.is_empty(),
        "absent, not 0: {b:?}"
    );
    let text = crate::exporter::scrape(&http, false).await;
    assert_eq!(
        value(&text, "warden_source_up", &[("source", "prometheus")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "warden_worker_memory_bytes",
            &[("worker", "celery@pod-a")]
        ),
        Some((200 * MIB) as f64)
    );
    assert!(!text.contains("pod-z"));

    // The same Prometheus scraped warden's /metrics (it asks for OpenMetrics): celery-exporter's
    // series are there for both workers.
    eventually(
        Duration::from_secs(30),
        "warden scraped by Prometheus",
        || async {
            let up = query(prometheus_port.get(), "celery_worker_up == 1").await;
            (up.len() == 2).then_some(())
        },
    )
    .await;

    // Prometheus stops: last figures stay, marked stale with a growing age; the source is
    // down; workers, the broker and readiness are untouched.
    prometheus.stop().await;
    let stale = eventually(Duration::from_secs(30), "figures marked stale", || {
        let mut client = client.clone();
        async move {
            let (w, r) = resources(&mut client, "celery@pod-a").await?;
            r.stale.then_some((w, r))
        }
    })
    .await;
    let (worker, r) = stale;
    assert_eq!(r.memory_rss_bytes, Some(200 * MIB));
    assert!(r.cpu_percent.is_some());
    assert!(r.age.is_some());
    assert_eq!(worker.lifecycle(), pb::Lifecycle::Alive);
    assert!(
        !worker.stale,
        "a resource source is not what the worker is observed through"
    );
    assert!(
        worker.stale_sources.is_empty(),
        "{:?}",
        worker.stale_sources
    );
    let text = eventually(Duration::from_secs(10), "source down in /metrics", || {
        let http = http.clone();
        async move {
            let text = crate::exporter::scrape(&http, false).await;
            (value(&text, "warden_source_up", &[("source", "prometheus")]) == Some(0.0))
                .then_some(text)
        }
    })
    .await;
    assert_eq!(
        value(&text, "warden_source_up", &[("source", "broker")]),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "celery_worker_up", &[("hostname", "pod-b")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "warden_worker_memory_bytes",
            &[("worker", "celery@pod-b")]
        ),
        Some((512 * MIB) as f64),
        "last figures stay exported"
    );
    let ready = reqwest::get(format!("{http}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    // The age grows while it is down.
    let first_age = r.age.unwrap();
    let later = eventually(Duration::from_secs(10), "age grows", || {
        let mut client = client.clone();
        async move {
            let (_, r) = resources(&mut client, "celery@pod-b").await?;
            let age = r.age?;
            (r.stale && (age.seconds, age.nanos) > (first_age.seconds + 1, first_age.nanos))
                .then_some(r)
        }
    })
    .await;
    assert_eq!(later.memory_rss_bytes, Some(512 * MIB));
    warden.stop().await;
}

/// CPU time (user + system) of the calling thread, from /proc (clock ticks of 10 ms).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Resource collection for 1,000 workers: queries per round, wall time and CPU of a round.
/// A measurement, not a check: `cargo nextest run --test it --run-ignored only -E
/// 'test(/collect_1000/)' --no-capture` (figures in docs/performance.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn collect_1000_workers_per_round() {
    const WORKERS: usize = 1_000;
    const ROUNDS: u32 = 20;
    let pods: Vec<(String, f64, u64, u64)> = (0..WORKERS)
        .map(|i| {
            (
                format!("pod-{i:04}"),
                0.25,
                100 * MIB + i as u64,
                1024 * MIB,
            )
        })
        .collect();
    let (cadvisor, _exporter) = start_cadvisor(pods).await;
    let port = reserve_port();
    let _prometheus =
        Prometheus::start(port.get(), &[("cadvisor", format!("127.0.0.1:{cadvisor}"))]);
    let config = warden::config::Config::default();
    let settings = warden::resources::PrometheusSettings {
        url: format!("http://127.0.0.1:{}", port.get()),
        timeout: Duration::from_secs(5),
        auth: None,
        queries: warden::resources::Queries {
            cpu_percent: config.prometheus_query_cpu.replace("[2m]", "[5s]"),
            memory_bytes: config.prometheus_query_memory.clone(),
            memory_limit_bytes: config.prometheus_query_memory_limit.clone(),
            // The bench measures the three cAdvisor metrics (one query each).
            gpu_util_percent: String::new(),
            gpu_memory_percent: String::new(),
            disk_percent: String::new(),
        },
    };
    let queries = 3;
    let keys: Vec<warden::fleet::WorkerKey> = (0..WORKERS)
        .map(|i| {
            warden::fleet::WorkerKey::new(
                warden::fleet::Backend::Celery,
                "",
                format!("celery@pod-{i:04}"),
            )
        })
        .collect();
    // One thread, one current-thread runtime: the thread's CPU is the collection's alone.
    let figures = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use warden::resources::MetricSource;
            let source = warden::resources::PrometheusSource::new(settings).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let samples = source.collect(&keys).await.unwrap_or_default();
                if samples.len() == WORKERS && samples.iter().all(|s| s.metrics.len() == 3) {
                    break;
                }
                assert!(Instant::now() < deadline, "Prometheus never had every pod");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let (cpu0, wall0) = (thread_cpu(), Instant::now());
            let mut slowest = Duration::ZERO;
            for _ in 0..ROUNDS {
                let t = Instant::now();
                let samples = source.collect(&keys).await.unwrap();
                slowest = slowest.max(t.elapsed());
                assert_eq!(samples.len(), WORKERS);
            }
            (
                wall0.elapsed() / ROUNDS,
                slowest,
                (thread_cpu() - cpu0) / ROUNDS,
            )
        })
    })
    .await
    .unwrap();
    let (mean, slowest, cpu) = figures;
    let at_default = cpu.as_secs_f64() / 15.0 * 100.0;
    println!(
        "collect {WORKERS} workers: {queries} queries per round, wall mean {mean:?} (slowest {slowest:?}), \
         CPU {cpu:?} per round = {at_default:.3} % of one core at the default 15 s interval"
    );
}

/// With no Prometheus and no runtime, a real Celery worker's own `rusage` (from `stats`) is
/// the last resort: a CPU figure from two readings, marked with the source `celery`, and no
/// memory figure (the report covers the main process only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_other_sources_a_celery_workers_rusage_gives_its_cpu() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let _worker = CeleryWorker::start(&broker, "ru@h", WorkerOptions::default());
    let warden = TestWarden::start(test_config(&broker)).await;
    let client = warden.client().await;
    let usage = eventually(Duration::from_secs(60), "a CPU figure from rusage", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            find(&r, "ru@h")?
                .resources
                .clone()
                .filter(|u| u.cpu_percent.is_some())
        }
    })
    .await;
    assert_eq!(usage.source, "celery", "{usage:?}");
    let cpu = usage.cpu_percent.unwrap();
    assert!((0.0..=400.0).contains(&cpu), "{usage:?}");
    assert_eq!(usage.memory_rss_bytes, None, "{usage:?}");
    warden.stop().await;
}
