//! `/metrics` in celery-exporter's names and labels, against real Celery workers: task
//! totals per name equal what was run, a killed worker's `celery_worker_up` drops to 0, a
//! forgotten worker's series disappear, and `promtool check metrics` accepts the text.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use crate::support::*;

/// The scraped text, as Prometheus text 0.0.4 (no Accept header) or OpenMetrics.
pub async fn scrape(http_url: &str, openmetrics: bool) -> String {
    let mut request = reqwest::Client::new().get(format!("{http_url}/metrics"));
    if openmetrics {
        request = request.header("accept", "application/openmetrics-text; version=1.0.0");
    }
    request
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics body")
}

/// The value of the one sample named `name` whose labels include every `labels` pair.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split(['{', ' ']).next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// promtool's verdict on exposition text: (passed, what it said).
pub fn promtool_check_metrics(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/lib/prometheus.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The only lint findings promtool may report: two of celery-exporter's names, kept as they
/// are so that its dashboards and alerts work unchanged (promtool's naming convention
/// reserves `_count` for histograms and summaries).
const INHERITED_NAMES: [&str; 2] = ["celery_active_consumer_count", "celery_active_worker_count"];

/// `promtool check metrics` parses the text, and lints nothing but [`INHERITED_NAMES`].
pub fn assert_promtool_accepts(text: &str) {
    let (ok, said) = promtool_check_metrics(text);
    if ok {
        return;
    }
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        let inherited = INHERITED_NAMES
            .iter()
            .any(|n| line.starts_with(&format!("{n} ")) && line.contains("\"_count\" suffix"));
        assert!(inherited, "promtool check metrics: {line}\n{said}\n{text}");
    }
}

const FAIL: &str = "warden_test_app.fail";
const SLEEP: &str = "warden_test_app.sleep_for";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_exporter_series_follow_ground_truth_and_the_fleet() {
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let events = |queue: &'static [&'static str]| WorkerOptions {
        queues: queue,
        events: true,
        ..WorkerOptions::default()
    };
    let _a = CeleryWorker::start(&broker, "w@mx-a", events(&["q1"]));
    let mut b = CeleryWorker::start(&broker, "w@mx-b", events(&["q2"]));
    let mut config = test_config(&broker);
    config.heartbeat_warning = Duration::from_secs(3);
    config.heartbeat_critical = Duration::from_secs(6);
    let warden = TestWarden::start(config).await;
    let http = warden.http_url.clone();

    // Warm up until each worker's task events reach warden (a task name the known set
    // does not use, so that the known set's totals are exact).
    for (host, queue) in [("mx-a", "q1"), ("mx-b", "q2")] {
        eventually(Duration::from_secs(40), "task events flowing", || {
            let (http, broker) = (http.clone(), broker.clone());
            async move {
                let text = scrape(&http, false).await;
                let name = "warden_test_app.add";
                if value(
                    &text,
                    "celery_task_succeeded_total",
                    &[("name", name), ("hostname", host)],
                )
                .is_some_and(|v| v > 0.0)
                {
                    return Some(());
                }
                submit(&broker, "add", 1, &["1", "1"], &["--queue", queue]).await;
                None
            }
        })
        .await;
    }

    // The known set: 3 failures on mx-a, 4 successes of 0.2 s on mx-b.
    // The failures' producer publishes task-sent events (celery_task_sent_total).
    submit_with_env(
        &broker,
        "fail",
        3,
        &[],
        &["--queue", "q1"],
        &[("WARDEN_TEST_SENT_EVENT", "1")],
    )
    .await;
    submit(&broker, "sleep_for", 4, &["0.2"], &["--queue", "q2"]).await;
    let text = eventually(Duration::from_secs(60), "the known set counted", || {
        let http = http.clone();
        async move {
            let text = scrape(&http, false).await;
            let failed = value(
                &text,
                "celery_task_failed_total",
                &[("name", FAIL), ("hostname", "mx-a")],
            );
            let succeeded = value(
                &text,
                "celery_task_succeeded_total",
                &[("name", SLEEP), ("hostname", "mx-b")],
            );
            assert!(
                failed.unwrap_or(0.0) <= 3.0 && succeeded.unwrap_or(0.0) <= 4.0,
                "over-counted"
            );
            let sent = value(&text, "celery_task_sent_total", &[("name", FAIL)]);
            (failed == Some(3.0) && succeeded == Some(4.0) && sent == Some(3.0)).then_some(text)
        }
    })
    .await;
    let fail_labels = [("name", FAIL), ("hostname", "mx-a")];
    let sleep_labels = [("name", SLEEP), ("hostname", "mx-b")];
    assert_eq!(
        value(&text, "celery_task_succeeded_total", &fail_labels),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "celery_task_received_total", &fail_labels),
        Some(3.0)
    );
    assert_eq!(
        value(&text, "celery_task_started_total", &sleep_labels),
        Some(4.0)
    );
    assert_eq!(
        value(&text, "celery_task_failed_total", &sleep_labels),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "celery_task_failed_total",
            &[("name", FAIL), ("hostname", "mx-b")]
        ),
        None,
        "mx-b ran no failing task"
    );
    // Runtime histogram: four runs of about 0.2 s, all under the 0.25 s bound, none under 0.1 s.
    assert_eq!(
        value(&text, "celery_task_runtime_count", &sleep_labels),
        Some(4.0)
    );
    let le = |bound: &'static str| {
        let mut labels = sleep_labels.to_vec();
        labels.push(("le", bound));
        value(&text, "celery_task_runtime_bucket", &labels)
    };
    // (A loaded machine may stretch a run past 0.25 s: the buckets are checked for what holds
    // whatever the load: none under the sleep, cumulative, all four by 10 s.)
    assert_eq!(le("0.1"), Some(0.0));
    let cumulative: Vec<f64> = ["0.1", "0.25", "0.5", "1.0", "10.0", "+Inf"]
        .into_iter()
        .map(|b| le(b).unwrap_or_else(|| panic!("bucket le={b}")))
        .collect();
    assert!(
        cumulative.windows(2).all(|w| w[0] <= w[1]),
        "{cumulative:?}"
    );
    assert_eq!(le("10.0"), Some(4.0));
    assert_eq!(le("+Inf"), Some(4.0));
    let sum = value(&text, "celery_task_runtime_sum", &sleep_labels).unwrap();
    assert!((0.79..40.0).contains(&sum), "runtime sum {sum}");
    for host in ["mx-a", "mx-b"] {
        assert_eq!(
            value(&text, "celery_worker_up", &[("hostname", host)]),
            Some(1.0)
        );
        assert!(value(&text, "celery_worker_tasks_active", &[("hostname", host)]).is_some());
    }
    assert_eq!(
        value(&text, "warden_source_up", &[("source", "broker")]),
        Some(1.0)
    );
    // The broker's own figures, from its INFO (read on the first probe, then every 15 s):
    // memory in use, and at least warden's own connection.
    let info = |field: &str| value(&text, "warden_broker_info", &[("field", field)]);
    assert!(info("used_memory").is_some_and(|v| v > 100_000.0), "{text}");
    assert!(
        info("connected_clients").is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(info("instantaneous_ops_per_sec").is_some(), "{text}");
    assert!(
        value(&text, "celery_queue_length", &[("queue_name", "q1")]).is_some(),
        "{text}"
    );
    assert_eq!(
        value(&text, "celery_active_worker_count", &[("queue_name", "q2")]),
        Some(1.0)
    );

    // Both formats are valid: promtool reads the text format; OpenMetrics names counter
    // families without `_total` and ends with `# EOF`.
    assert_promtool_accepts(&text);
    let om = scrape(&http, true).await;
    assert!(om.contains("# TYPE celery_task_failed counter\n"), "{om}");
    assert!(
        om.contains("# TYPE warden_inspect_rounds counter\n"),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(text.contains("# TYPE celery_task_failed_total counter\n"));
    assert!(
        text.contains("# TYPE warden_inspect_rounds_total counter\n"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));

    // A killed worker is down; the other stays up.
    b.kill9().await;
    eventually(Duration::from_secs(30), "mx-b down", || {
        let http = http.clone();
        async move {
            let text = scrape(&http, false).await;
            (value(&text, "celery_worker_up", &[("hostname", "mx-b")]) == Some(0.0)).then_some(())
        }
    })
    .await;
    let text = scrape(&http, false).await;
    assert_eq!(
        value(&text, "celery_worker_up", &[("hostname", "mx-a")]),
        Some(1.0)
    );

    // Once lost and forgotten, every series of mx-b is gone; mx-a's remain.
    let server = warden.grpc_url.clone();
    eventually(Duration::from_secs(30), "mx-b forgotten", || {
        let server = server.clone();
        async move {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
            cmd.env_remove("WARDEN_TOKEN")
                .args(["forget", "w@mx-b", "--server", &server, "--reason", "test"]);
            run(&mut cmd).await.0.then_some(())
        }
    })
    .await;
    let text = eventually(Duration::from_secs(10), "mx-b's series removed", || {
        let http = http.clone();
        async move {
            let text = scrape(&http, false).await;
            (!text.contains("hostname=\"mx-b\"")).then_some(text)
        }
    })
    .await;
    assert_eq!(
        value(&text, "celery_task_failed_total", &fail_labels),
        Some(3.0)
    );
    assert_eq!(
        value(&text, "celery_worker_up", &[("hostname", "mx-a")]),
        Some(1.0)
    );
    assert_promtool_accepts(&text);
    warden.stop().await;
}
