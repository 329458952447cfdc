//! Alerting end to end: a real warden watching real Celery workers on a real Redis, and real
//! receivers started here — an HTTP sink standing in for Slack, PagerDuty and a webhook (the
//! HMAC signature recomputed), aiosmtpd for email, and Debian's Alertmanager, whose API is
//! read back. Workers are killed with SIGKILL (a crash: no goodbye) and started again under
//! the same names.
//!
//! Heartbeat thresholds are short (3 s / 6 s) so that a killed worker turns LOST within
//! seconds; every wait is a condition with a deadline.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::IntoResponse,
};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, BufReader};
use warden::{
    config::Config,
    fleet::model::{self, Lifecycle},
};
use warden_alerts::{AlertFilter, AlertState, MatchOp, MatcherSpec, RuleConfig, SilenceSpec};
use warden_notify::{
    ChannelConfig, Delivery, DeliveryQuery, DeliveryState, ReceiverConfig, RetryPolicy, Secret,
    config::{
        AlertmanagerConfig, EmailConfig, PagerDutyConfig, SlackConfig, SmtpTls, WebhookConfig,
    },
};

use crate::support::*;

const HMAC_KEY: &str = "whsec-e2e-0123456789";
const ROUTING_KEY: &str = "R0UTINGKEYe2e456789abcdef012345";
/// The group every worker of these tests is in: the one queue they consume.
const GROUP: &str = "groups/celery/celery";

// -------------------------------------------------------------------------------------------
// Receivers

/// One request the HTTP sink received, and when.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// An HTTP server recording every request; it answers 200 at once, except under `/hang`,
/// where it never answers.
struct HttpSink {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(received): State<Arc<Mutex<Vec<Received>>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let path = uri.path().to_owned();
    received.lock().unwrap().push(Received {
        path: path.clone(),
        headers,
        body,
        at: Instant::now(),
    });
    if path.starts_with("/hang") {
        std::future::pending::<()>().await;
    }
    (StatusCode::OK, "ok").into_response()
}

impl HttpSink {
    async fn start() -> HttpSink {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let app = Router::new().fallback(record).with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the sink");
        let addr = listener.local_addr().expect("the sink's address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpSink {
            addr,
            received,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `n` requests reached `path`.
    async fn wait_requests(&self, path: &str, n: usize, within: Duration) -> Vec<Received> {
        eventually(within, &format!("{n} request(s) to {path}"), || async {
            let got = self.requests(path);
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// The test venv's Python, for aiosmtpd: WARDEN_TEST_VENV must name it.
fn smtp_python() -> PathBuf {
    let venv = std::env::var("WARDEN_TEST_VENV").unwrap_or_else(|_| {
        panic!(
            "WARDEN_TEST_VENV is not set: point it at the test venv (scripts/python/\
             requirements.txt installed, aiosmtpd among them), e.g. WARDEN_TEST_VENV=/work/main/.venv"
        )
    });
    let python = PathBuf::from(&venv).join("bin/python");
    assert!(python.exists(), "WARDEN_TEST_VENV={venv} has no bin/python");
    python
}

/// aiosmtpd (scripts/python/smtp_sink.py) on a free port; each message it receives is
/// kept as the JSON line the script prints.
struct SmtpSink {
    port: u16,
    _reserved: Port,
    mails: Arc<Mutex<Vec<Value>>>,
    _child: tokio::process::Child,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl SmtpSink {
    async fn start() -> SmtpSink {
        let reserved = reserve_port();
        let port = reserved.get();
        let mut child = tokio::process::Command::new(smtp_python())
            .arg(repo().join("scripts/python/smtp_sink.py"))
            .args(["--port", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start smtp_sink.py");
        let mut lines = BufReader::new(child.stdout.take().expect("its stdout")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("smtp_sink.py ready within 30 s")
            .expect("read smtp_sink.py");
        assert_eq!(
            ready.as_deref(),
            Some("READY"),
            "smtp_sink.py did not start (is aiosmtpd installed in WARDEN_TEST_VENV?)"
        );
        let mails: Arc<Mutex<Vec<Value>>> = Arc::default();
        let kept = mails.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mail = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                kept.lock().unwrap().push(mail);
            }
        });
        SmtpSink {
            port,
            _reserved: reserved,
            mails,
            _child: child,
            reader,
        }
    }

    async fn wait_mails(&self, n: usize, within: Duration) -> Vec<Value> {
        eventually(within, &format!("{n} mail(s)"), || async {
            let got = self.mails.lock().unwrap().clone();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// Debian's prometheus-alertmanager on a free port, clustering off.
struct Alertmanager {
    url: String,
    _reserved: Port,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    async fn start() -> Alertmanager {
        let binary = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "no Alertmanager binary: install Debian's prometheus-alertmanager \
                     (scripts/test does, via ensure_alertmanager in scripts/lib/prometheus.sh)"
                )
            });
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = dir.path().join("am.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: sink\nreceivers:\n  - name: sink\n",
        )
        .unwrap();
        let reserved = reserve_port();
        let port = reserved.get();
        let child = tokio::process::Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start alertmanager");
        let url = format!("http://127.0.0.1:{port}");
        let client = http_client();
        eventually(Duration::from_secs(30), "alertmanager ready", || async {
            let r = client.get(format!("{url}/-/ready")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        Alertmanager {
            url,
            _reserved: reserved,
            _child: child,
            _dir: dir,
        }
    }

    /// GET /api/v2/alerts: the alerts it holds (active, silenced, inhibited).
    async fn alerts(&self) -> Vec<Value> {
        http_client()
            .get(format!("{}/api/v2/alerts", self.url))
            .send()
            .await
            .expect("GET /api/v2/alerts")
            .json()
            .await
            .expect("a JSON array")
    }
}

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

// -------------------------------------------------------------------------------------------
// warden, workers and what alerting did

fn receiver(name: &str, channel: ChannelConfig) -> ReceiverConfig {
    ReceiverConfig {
        name: name.into(),
        channel,
        retry: None,
    }
}

fn webhook(name: &str, url: String) -> ReceiverConfig {
    receiver(
        name,
        ChannelConfig::Webhook(WebhookConfig {
            url: Secret::new(url),
            secret: Some(Secret::new(HMAC_KEY)),
            headers: BTreeMap::new(),
        }),
    )
}

/// A rule override sending its alerts to these receivers.
fn to(receivers: &[&str]) -> RuleConfig {
    RuleConfig {
        receivers: Some(receivers.iter().map(|r| r.to_string()).collect()),
        ..RuleConfig::default()
    }
}

/// warden with short heartbeat thresholds and a 1 s startup grace; only what a test routes
/// is notified (no receiver is called "default").
fn alerting_config(broker: &str) -> Config {
    let mut config = test_config(broker);
    config.heartbeat_warning = Duration::from_secs(3);
    config.heartbeat_critical = Duration::from_secs(6);
    config.alerts.startup_grace = Duration::from_secs(1);
    config
}

fn worker(broker: &str, name: &str) -> CeleryWorker {
    CeleryWorker::start(
        broker,
        name,
        WorkerOptions {
            concurrency: 1,
            ..WorkerOptions::default()
        },
    )
}

/// `workers/celery/default/{id}`: the `worker` label of its alerts.
fn worker_label(id: &str) -> String {
    format!("workers/celery/default/{id}")
}

/// Waits until warden sees each of these workers in this lifecycle, its group known (its
/// queues reported: the `group` label of its alerts).
async fn wait_lifecycle(warden: &TestWarden, ids: &[&str], lifecycle: Lifecycle, within: Duration) {
    let fleet = warden.inner().fleet.clone();
    eventually(within, &format!("{ids:?} {lifecycle:?}"), || {
        let snapshot = fleet.snapshot();
        let all = ids.iter().all(|id| {
            snapshot
                .workers
                .values()
                .any(|w| w.id() == *id && w.lifecycle == lifecycle && &*w.group != model::UNGROUPED)
        });
        async move { all.then_some(()) }
    })
    .await;
}

/// Every delivery recorded so far, oldest first.
fn deliveries(warden: &TestWarden) -> Vec<Delivery> {
    let mut all = warden
        .inner()
        .alerting
        .dispatcher
        .query(&DeliveryQuery {
            limit: 10_000,
            ..DeliveryQuery::default()
        })
        .deliveries;
    all.reverse();
    all
}

/// The alert of a rule about a worker (any state), by the worker's id.
fn alert_of(warden: &TestWarden, rule: &str, id: &str) -> Option<warden_alerts::Alert> {
    let label = worker_label(id);
    warden
        .inner()
        .alerting
        .engine()
        .list_alerts(&AlertFilter {
            states: vec![
                AlertState::Pending,
                AlertState::Firing,
                AlertState::Resolved,
            ],
            rule: Some(rule.into()),
            ..AlertFilter::default()
        })
        .into_iter()
        .find(|a| a.labels.get("worker") == Some(&label))
}

/// The `worker` labels of a webhook document's alerts, sorted.
fn hook_workers(doc: &Value) -> Vec<String> {
    let mut out: Vec<String> = doc["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            a["labels"]["worker"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    out.sort();
    out
}

fn check_signature(req: &Received) {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(HMAC_KEY.as_bytes()).unwrap();
    mac.update(&req.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        req.header("x-warden-signature"),
        Some(expected),
        "the signature is HMAC-SHA256 of the exact body"
    );
}

// -------------------------------------------------------------------------------------------
// Tests

/// Three workers killed at once: ONE notification per receiver listing the three, on Slack,
/// PagerDuty, the webhook, email and Alertmanager, while a sixth receiver that never answers
/// holds up none of them; the workers back, the resolve messages follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_killed_raise_one_grouped_notification_per_receiver_then_resolve() {
    let sink = HttpSink::start().await;
    let smtp = SmtpSink::start().await;
    let am = Alertmanager::start().await;
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let ids = ["lost-1@alerts", "lost-2@alerts", "lost-3@alerts"];
    let mut workers: Vec<CeleryWorker> = ids.iter().map(|id| worker(&broker, id)).collect();

    let mut config = alerting_config(&broker);
    config.notify.receivers = vec![
        receiver(
            "slack",
            ChannelConfig::Slack(SlackConfig {
                webhook_url: Secret::new(sink.url("/services/T0/B0/e2e")),
            }),
        ),
        receiver(
            "pager",
            ChannelConfig::Pagerduty(PagerDutyConfig {
                routing_key: Secret::new(ROUTING_KEY),
                url: sink.url("/v2/enqueue"),
            }),
        ),
        webhook("hook", sink.url("/hook")),
        receiver(
            "mail",
            ChannelConfig::Email(EmailConfig {
                host: "127.0.0.1".into(),
                port: smtp.port,
                tls: SmtpTls::None,
                username: None,
                password: None,
                from: "Warden <warden@example.com>".into(),
                to: vec!["oncall@example.com".into()],
                ca_file: None,
            }),
        ),
        receiver(
            "am",
            ChannelConfig::Alertmanager(AlertmanagerConfig {
                url: Secret::new(am.url.clone()),
                generator_url: None,
            }),
        ),
        ReceiverConfig {
            retry: Some(RetryPolicy {
                attempt_timeout: Duration::from_secs(90),
                max_attempts: 1,
                ..RetryPolicy::default()
            }),
            ..webhook("hang", sink.url("/hang"))
        },
    ];
    config.alerts.rules.insert(
        "worker_lost".into(),
        to(&["slack", "pager", "hook", "mail", "am", "hang"]),
    );
    let warden = TestWarden::start(config).await;
    wait_lifecycle(&warden, &ids, Lifecycle::Alive, Duration::from_secs(60)).await;

    for w in &mut workers {
        w.kill9().await;
    }
    // The receiver that hangs got the notification too: the clock for the others starts.
    let hang = sink
        .wait_requests("/hang", 1, Duration::from_secs(40))
        .await;
    let hung_at = hang[0].at;
    let within = Duration::from_secs(3);
    let slack = sink.wait_requests("/services/T0/B0/e2e", 1, within).await;
    let pager = sink.wait_requests("/v2/enqueue", 1, within).await;
    let hook = sink.wait_requests("/hook", 1, within).await;
    let mails = smtp.wait_mails(1, within).await;
    let am_alerts = eventually(within, "Alertmanager lists 3 alerts", || async {
        let alerts = am.alerts().await;
        (alerts.len() == 3).then_some(alerts)
    })
    .await;
    for (what, at) in [
        ("slack", slack[0].at),
        ("pagerduty", pager[0].at),
        ("webhook", hook[0].at),
    ] {
        let delay = at.saturating_duration_since(hung_at);
        assert!(
            delay < Duration::from_secs(2),
            "{what} waited {delay:?} behind the hanging receiver"
        );
    }
    let hang_delivery = deliveries(&warden)
        .into_iter()
        .find(|d| d.receiver == "hang")
        .expect("a delivery to the hanging receiver");
    assert!(
        !hang_delivery.state.is_final(),
        "still hanging while the others were delivered: {hang_delivery:?}"
    );
    for d in deliveries(&warden).iter().filter(|d| d.receiver != "hang") {
        assert_eq!(d.state, DeliveryState::Sent, "{d:?}");
    }

    let labels: Vec<String> = ids.iter().map(|id| worker_label(id)).collect();
    let group_key = format!("{{group={GROUP:?},rule=\"worker_lost\"}}");

    // The webhook: one signed document listing the three.
    let doc = hook[0].json();
    check_signature(&hook[0]);
    assert!(hook[0].header("x-warden-timestamp").is_some());
    assert_eq!(doc["version"], "1");
    assert_eq!(doc["status"], "firing");
    assert_eq!(doc["receiver"], "hook");
    assert_eq!(doc["group_key"], group_key.as_str());
    assert_eq!(doc["escalated"], false);
    assert_eq!(doc["common_labels"]["rule"], "worker_lost");
    assert_eq!(doc["common_labels"]["group"], GROUP);
    assert_eq!(doc["common_labels"]["severity"], "critical");
    assert_eq!(hook_workers(&doc), labels);
    let alert_names: BTreeSet<String> = doc["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(alert_names.len(), 3);
    for a in doc["alerts"].as_array().unwrap() {
        let id = a["labels"]["worker"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(a["rule"], "worker_lost");
        assert_eq!(a["severity"], "critical");
        assert_eq!(a["status"], "firing");
        assert_eq!(a["summary"], format!("{id} is lost"));
        assert_eq!(
            a["description"],
            format!("{id} of group celery stopped reporting without saying goodbye.")
        );
        assert!(a["resolved_at"].is_null(), "{a}");
    }

    // Slack: one message, a block per worker.
    let body = slack[0].json();
    assert_eq!(body["text"], "[FIRING:3] 3 alerts: worker_lost");
    let attachment = &body["attachments"][0];
    assert_eq!(attachment["color"], "#d00000");
    let blocks = attachment["blocks"].as_array().unwrap();
    assert_eq!(
        blocks.len(),
        5,
        "title, 3 alerts, common labels: {blocks:?}"
    );
    for id in ids {
        assert!(
            blocks[1..4].iter().any(|b| b["text"]["text"]
                .as_str()
                .unwrap()
                .starts_with(&format!("*[CRITICAL]* `worker_lost` {id} is lost (firing)"))),
            "{id} in {blocks:?}"
        );
    }

    // PagerDuty: one trigger, the group as its dedup key.
    let trigger = pager[0].json();
    assert_eq!(trigger["routing_key"], ROUTING_KEY);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], group_key.as_str());
    let p = &trigger["payload"];
    assert_eq!(p["summary"], "[FIRING:3] 3 alerts: worker_lost");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["source"], GROUP);
    assert_eq!(p["group"], GROUP);
    assert_eq!(p["class"], "worker_lost");
    let mut pd_workers: Vec<String> = p["custom_details"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["worker"].as_str().unwrap().to_owned())
        .collect();
    pd_workers.sort();
    assert_eq!(pd_workers, labels);

    // Email: one message naming the three.
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(
        mail["subject"],
        "[FIRING] critical: 3 alerts — 3 alerts: worker_lost"
    );
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["oncall@example.com"]));
    let text = mail["body"].as_str().unwrap();
    assert!(
        text.starts_with("3 alert(s) firing for receiver mail."),
        "{text}"
    );
    for id in ids {
        assert!(
            text.contains(&format!("[CRITICAL] worker_lost — {id} is lost (firing)")),
            "{id} in {text}"
        );
    }

    // Alertmanager: the three, active.
    let mut am_workers: Vec<String> = am_alerts
        .iter()
        .map(|a| {
            assert_eq!(a["labels"]["alertname"], "worker_lost", "{a}");
            assert_eq!(a["labels"]["group"], GROUP, "{a}");
            assert_eq!(a["labels"]["severity"], "critical", "{a}");
            assert_eq!(a["status"]["state"], "active", "{a}");
            a["labels"]["worker"].as_str().unwrap().to_owned()
        })
        .collect();
    am_workers.sort();
    assert_eq!(am_workers, labels);

    // Back under the same names: the alerts resolve, and the group's next flush (after
    // group_interval, 30 s by default) tells every receiver, once.
    let _back: Vec<CeleryWorker> = ids.iter().map(|id| worker(&broker, id)).collect();
    let within = Duration::from_secs(75);
    let pager = sink.wait_requests("/v2/enqueue", 2, within).await;
    assert_eq!(
        pager[1].json(),
        serde_json::json!({
            "routing_key": ROUTING_KEY,
            "event_action": "resolve",
            "dedup_key": group_key,
        })
    );
    let hook = sink.wait_requests("/hook", 2, within).await;
    check_signature(&hook[1]);
    let resolved = hook[1].json();
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["group_key"], group_key.as_str());
    assert_eq!(hook_workers(&resolved), labels);
    for a in resolved["alerts"].as_array().unwrap() {
        assert_eq!(a["status"], "resolved", "{a}");
        assert!(a["resolved_at"].is_string(), "{a}");
        assert!(alert_names.contains(a["name"].as_str().unwrap()), "{a}");
    }
    let slack = sink.wait_requests("/services/T0/B0/e2e", 2, within).await;
    assert_eq!(
        slack[1].json()["text"],
        "[RESOLVED:3] 3 alerts: worker_lost"
    );
    let mails = smtp.wait_mails(2, within).await;
    assert_eq!(
        mails[1]["subject"],
        "[RESOLVED] critical: 3 alerts — 3 alerts: worker_lost"
    );
    eventually(within, "Alertmanager holds none of them active", || async {
        let alerts = am.alerts().await;
        let active = alerts.iter().any(|a| a["status"]["state"] == "active");
        (!active).then_some(())
    })
    .await;
    // One notification each way, no more.
    for path in ["/services/T0/B0/e2e", "/v2/enqueue", "/hook"] {
        assert_eq!(sink.requests(path).len(), 2, "{path}");
    }
    assert_eq!(smtp.mails.lock().unwrap().len(), 2);
    warden.stop().await;
}

/// A silence on one worker: its alert fires but is not notified (a SUPPRESSED delivery,
/// "silenced by ..."), while another worker's alert is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_suppresses_exactly_the_matching_worker() {
    let sink = HttpSink::start().await;
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let (quiet, loud) = ("quiet@alerts", "loud@alerts");
    let mut workers = [worker(&broker, quiet), worker(&broker, loud)];
    let mut config = alerting_config(&broker);
    config.notify.receivers = vec![webhook("hook", sink.url("/hook"))];
    config
        .alerts
        .rules
        .insert("worker_lost".into(), to(&["hook"]));
    let warden = TestWarden::start(config).await;
    wait_lifecycle(
        &warden,
        &[quiet, loud],
        Lifecycle::Alive,
        Duration::from_secs(60),
    )
    .await;

    let now = warden.inner().alerting.clock.now();
    let silence = warden
        .inner()
        .alerting
        .engine()
        .create_silence(
            &SilenceSpec {
                matchers: vec![MatcherSpec {
                    label: "worker".into(),
                    op: MatchOp::Equal,
                    value: worker_label(quiet),
                }],
                duration: Some(Duration::from_secs(3600)),
                created_by: "e2e".into(),
                comment: "maintenance of quiet".into(),
                ..SilenceSpec::default()
            },
            now,
            false,
        )
        .expect("a silence")
        .silence;
    for w in &mut workers {
        w.kill9().await;
    }
    let hook = sink
        .wait_requests("/hook", 1, Duration::from_secs(40))
        .await;
    let doc = hook[0].json();
    check_signature(&hook[0]);
    assert_eq!(hook_workers(&doc), vec![worker_label(loud)], "{doc}");

    // Quiet's alert fires, silenced, and its delivery is recorded as suppressed.
    let quiet_alert = eventually(Duration::from_secs(20), "quiet's alert firing", || async {
        alert_of(&warden, "worker_lost", quiet).filter(|a| a.state == AlertState::Firing)
    })
    .await;
    assert_eq!(quiet_alert.silenced_by, vec![silence.name.clone()]);
    let suppressed = eventually(
        Duration::from_secs(10),
        "quiet's SUPPRESSED delivery",
        || async {
            deliveries(&warden).into_iter().find(|d| {
                d.state == DeliveryState::Suppressed && d.alerts == vec![quiet_alert.name.clone()]
            })
        },
    )
    .await;
    assert_eq!(suppressed.receiver, "hook");
    assert_eq!(
        suppressed.suppressed_reason.as_deref(),
        Some(format!("silenced by {}", silence.name).as_str())
    );
    let loud_alert = alert_of(&warden, "worker_lost", loud).expect("loud's alert");
    assert!(loud_alert.silenced_by.is_empty());
    let sent: Vec<Delivery> = deliveries(&warden)
        .into_iter()
        .filter(|d| d.state == DeliveryState::Sent)
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].alerts, vec![loud_alert.name.clone()]);
    assert!(
        !deliveries(&warden)
            .iter()
            .any(|d| d.alerts.contains(&loud_alert.name) && d.state == DeliveryState::Suppressed),
        "loud's alert is not suppressed"
    );
    // Nothing reached the sink about quiet.
    for r in sink.requests("/hook") {
        assert!(!hook_workers(&r.json()).contains(&worker_label(quiet)));
    }
    warden.stop().await;
}

/// The broker stopped: `broker_unreachable` fires and is notified; the per-worker
/// `queue_connection` alerts the outage causes are not (SUPPRESSED, "inhibited by" the
/// broker's alert), not while it lasts and not after the broker is back either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_inhibits_the_worker_alerts_it_causes() {
    let sink = HttpSink::start().await;
    let mut redis = RedisServer::start().await;
    let broker = redis.url(0);
    let ids = ["inh-1@alerts", "inh-2@alerts"];
    let _workers: Vec<CeleryWorker> = ids.iter().map(|id| worker(&broker, id)).collect();
    let mut config = test_config(&broker);
    config.alerts.startup_grace = Duration::from_secs(1);
    // Every alert goes to the sink.
    config.notify.receivers = vec![webhook("default", sink.url("/hook"))];
    // The health engine every second: queue_connection turns CRITICAL a second into the
    // outage, long before the broker's own alert has held for its `for`.
    config.health.interval = Duration::from_secs(1);
    config.alerts.rules.insert(
        "broker_unreachable".into(),
        RuleConfig {
            for_duration: Some(Duration::from_secs(5)),
            ..RuleConfig::default()
        },
    );
    let warden = TestWarden::start(config).await;
    wait_lifecycle(&warden, &ids, Lifecycle::Alive, Duration::from_secs(60)).await;
    broker_connected(&warden.client().await).await;

    redis.kill().await;
    let notified = sink
        .wait_requests("/hook", 1, Duration::from_secs(40))
        .await;
    let doc = notified[0].json();
    assert_eq!(doc["status"], "firing", "{doc}");
    assert_eq!(doc["common_labels"]["rule"], "broker_unreachable", "{doc}");
    let broker_alert = doc["alerts"][0]["name"].as_str().unwrap().to_owned();

    // Each worker's queue_connection alert fired and was held back by the broker's alert.
    for id in ids {
        let alert = eventually(
            Duration::from_secs(20),
            &format!("{id}'s queue_connection alert firing"),
            || async {
                alert_of(&warden, "queue_connection", id).filter(|a| a.state == AlertState::Firing)
            },
        )
        .await;
        let d = eventually(
            Duration::from_secs(10),
            &format!("{id}'s SUPPRESSED delivery"),
            || async {
                deliveries(&warden).into_iter().find(|d| {
                    d.state == DeliveryState::Suppressed && d.alerts == vec![alert.name.clone()]
                })
            },
        )
        .await;
        assert_eq!(
            d.suppressed_reason.as_deref(),
            Some(format!("inhibited by {broker_alert}").as_str()),
            "{d:?}"
        );
    }

    // The broker back: its alert resolves (notified); the workers' alerts resolve without
    // ever having been notified.
    redis.restart().await;
    let notified = sink
        .wait_requests("/hook", 2, Duration::from_secs(40))
        .await;
    let doc = notified[1].json();
    assert_eq!(doc["status"], "resolved", "{doc}");
    assert_eq!(doc["common_labels"]["rule"], "broker_unreachable", "{doc}");
    eventually(
        Duration::from_secs(60),
        "the queue_connection alerts resolved",
        || async {
            ids.iter()
                .all(|id| {
                    alert_of(&warden, "queue_connection", id)
                        .is_some_and(|a| a.state == AlertState::Resolved)
                })
                .then_some(())
        },
    )
    .await;
    for r in sink.requests("/hook") {
        let doc = r.json();
        for a in doc["alerts"].as_array().unwrap() {
            assert_eq!(a["rule"], "broker_unreachable", "only the broker: {doc}");
        }
    }
    for d in deliveries(&warden) {
        if d.state != DeliveryState::Suppressed {
            assert_eq!(d.alerts, vec![broker_alert.clone()], "{d:?}");
        }
    }
    warden.stop().await;
}

/// Restarted with one worker down meanwhile (remembered from history): during the startup
/// grace its alert fires but is held (SUPPRESSED, "held during startup grace"); when the
/// grace ends it is notified. A worker that was down too but came back within the grace is
/// never notified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_grace_holds_worker_down_alerts_then_notifies_the_one_still_down() {
    const GRACE: Duration = Duration::from_secs(20);
    let sink = HttpSink::start().await;
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("warden.db").display());
    let (down, back, up) = ("down@grace", "back@grace", "up@grace");
    let mut w_down = worker(&broker, down);
    let mut w_back = worker(&broker, back);
    let _w_up = worker(&broker, up);
    let config = |grace: Duration| {
        let mut config = alerting_config(&broker);
        config.database_url = warden::config::Secret::new(&database);
        config.sample_interval = Duration::from_secs(1);
        config.alerts.startup_grace = grace;
        config.notify.receivers = vec![webhook("hook", sink.url("/hook"))];
        config
            .alerts
            .rules
            .insert("worker_lost".into(), to(&["hook"]));
        config
    };

    // A first warden records the three, alive.
    let first = TestWarden::start(config(GRACE)).await;
    wait_lifecycle(
        &first,
        &[down, back, up],
        Lifecycle::Alive,
        Duration::from_secs(60),
    )
    .await;
    let store = warden::history::open(&config(GRACE))
        .await
        .expect("open the store")
        .expect("a store");
    eventually(Duration::from_secs(30), "the three in history", || async {
        let known = store.known_workers().await.ok()?;
        let alive = known
            .iter()
            .filter(|k| [down, back, up].contains(&&*k.key.id) && k.lifecycle == Lifecycle::Alive)
            .count();
        (alive == 3).then_some(())
    })
    .await;
    drop(store);
    first.stop().await;

    // Two of them die while no warden watches.
    w_down.kill9().await;
    w_back.kill9().await;
    let started = Instant::now();
    let warden = TestWarden::start(config(GRACE)).await;
    // Both turn LOST a critical period into the new warden's life: inside the grace.
    let held = |id: &'static str| {
        let warden = &warden;
        async move {
            let alert = eventually(
                Duration::from_secs(20),
                &format!("{id}'s worker_lost alert firing"),
                || async {
                    alert_of(warden, "worker_lost", id).filter(|a| a.state == AlertState::Firing)
                },
            )
            .await;
            eventually(
                Duration::from_secs(5),
                &format!("{id}'s delivery held during the grace"),
                || async {
                    deliveries(warden).into_iter().find(|d| {
                        d.state == DeliveryState::Suppressed
                            && d.alerts == vec![alert.name.clone()]
                            && d.suppressed_reason.as_deref() == Some("held during startup grace")
                    })
                },
            )
            .await;
            alert
        }
    };
    let down_alert = held(down).await;
    let back_alert = held(back).await;
    assert!(
        started.elapsed() < GRACE,
        "the machine is too slow for this test: LOST after {:?}",
        started.elapsed()
    );
    assert!(
        sink.requests("/hook").is_empty(),
        "nothing during the grace"
    );

    // One comes back within the grace: its alert resolves, never notified.
    let _w_back = worker(&broker, back);
    eventually(GRACE, "back's alert resolved", || async {
        alert_of(&warden, "worker_lost", back)
            .filter(|a| a.name == back_alert.name && a.state == AlertState::Resolved)
            .map(|_| ())
    })
    .await;
    assert!(
        started.elapsed() < GRACE,
        "the machine is too slow for this test: back after {:?}",
        started.elapsed()
    );
    assert!(
        sink.requests("/hook").is_empty(),
        "nothing during the grace"
    );

    // The grace ends: the one still down is notified, alone.
    let hook = sink
        .wait_requests("/hook", 1, GRACE + Duration::from_secs(10))
        .await;
    assert!(
        hook[0].at >= started + GRACE,
        "notified {:?} after the start, inside the grace",
        hook[0].at - started
    );
    let doc = hook[0].json();
    assert_eq!(doc["status"], "firing");
    assert_eq!(hook_workers(&doc), vec![worker_label(down)], "{doc}");
    assert_eq!(doc["alerts"][0]["name"], down_alert.name.as_str());
    // And only it: the sent deliveries carry down's alert alone.
    for d in deliveries(&warden) {
        assert!(!d.alerts.contains(&back_alert.name) || d.state == DeliveryState::Suppressed);
    }
    assert_eq!(sink.requests("/hook").len(), 1);
    warden.stop().await;
}

/// A rule's repeat interval (5 s): the group is notified again only once it has passed,
/// each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repeat_interval_spaces_repeated_notifications() {
    const REPEAT: Duration = Duration::from_secs(5);
    let sink = HttpSink::start().await;
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let id = "repeat@alerts";
    let mut w = worker(&broker, id);
    let mut config = alerting_config(&broker);
    config.notify.receivers = vec![webhook("hook", sink.url("/hook"))];
    // Groups are looked at every second (a repeat is due at a flush).
    config.alerts.group_interval = Duration::from_secs(1);
    config.alerts.rules.insert(
        "worker_lost".into(),
        RuleConfig {
            repeat_interval: Some(REPEAT),
            ..to(&["hook"])
        },
    );
    let warden = TestWarden::start(config).await;
    wait_lifecycle(&warden, &[id], Lifecycle::Alive, Duration::from_secs(60)).await;
    w.kill9().await;

    let hook = sink
        .wait_requests("/hook", 3, Duration::from_secs(60))
        .await;
    let first = hook[0].json();
    for r in &hook {
        let doc = r.json();
        assert_eq!(doc["status"], "firing");
        assert_eq!(hook_workers(&doc), vec![worker_label(id)]);
        assert_eq!(doc["alerts"][0]["name"], first["alerts"][0]["name"]);
    }
    // Evaluations run every second, and the last notification time is the evaluation's:
    // allow the delivery's own jitter.
    for pair in hook.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= REPEAT - Duration::from_millis(500),
            "repeated after {gap:?}, before the repeat interval"
        );
        assert!(
            gap < REPEAT + Duration::from_secs(3),
            "repeated after {gap:?}"
        );
    }
    warden.stop().await;
}

/// The target: condition true → notification at a local sink in < 5 s at default
/// alerting settings (evaluation every second, group_wait 1 s). Measured from the moment
/// warden's fleet marks a killed worker LOST to the sink receiving the POST, for 5 workers
/// killed one after another (each in a group of its own, so each notification waits its
/// group_wait). Prints the figures; run with
/// `cargo nextest run --test it alerting::notification_latency --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: prints figures"]
async fn notification_latency() {
    const RUNS: usize = 5;
    let sink = HttpSink::start().await;
    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let mut config = test_config(&broker);
    // Thresholds short so that a killed worker turns LOST within seconds; the alerting path
    // (rules, group_wait, group_interval, dispatcher, retries) at its defaults.
    config.heartbeat_warning = Duration::from_secs(3);
    config.heartbeat_critical = Duration::from_secs(6);
    config.alerts.startup_grace = Duration::ZERO;
    config.notify.receivers = vec![webhook("hook", sink.url("/hook"))];
    config
        .alerts
        .rules
        .insert("worker_lost".into(), to(&["hook"]));
    let warden = TestWarden::start(config).await;
    let fleet = warden.inner().fleet.clone();
    let mut from_lost = Vec::new();
    let mut from_kill = Vec::new();
    for i in 0..RUNS {
        let id = format!("lat-{i}@alerts");
        let queue = format!("lat{i}");
        let mut w = CeleryWorker::start(
            &broker,
            &id,
            WorkerOptions {
                queues: &[&queue],
                concurrency: 1,
                ..WorkerOptions::default()
            },
        );
        wait_lifecycle(&warden, &[&id], Lifecycle::Alive, Duration::from_secs(60)).await;
        w.kill9().await;
        let killed = Instant::now();
        // LOST as the fleet publishes it, polled every 5 ms.
        let lost = loop {
            let snapshot = fleet.snapshot();
            if snapshot
                .workers
                .values()
                .any(|x| x.id() == id && x.lifecycle == Lifecycle::Lost)
            {
                break Instant::now();
            }
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "{id} never LOST"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let got = sink
            .wait_requests("/hook", i + 1, Duration::from_secs(30))
            .await;
        let at = got[i].at;
        assert_eq!(hook_workers(&got[i].json()), vec![worker_label(&id)]);
        from_lost.push(at.saturating_duration_since(lost));
        from_kill.push(at - killed);
        eprintln!(
            "run {i}: LOST {:?} after the kill; notified {:?} after LOST",
            lost - killed,
            at.saturating_duration_since(lost)
        );
    }
    let stats = |mut v: Vec<Duration>| {
        v.sort();
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (min, median, max) = stats(from_lost);
    eprintln!("LOST → sink: min {min:?}, median {median:?}, max {max:?} ({RUNS} runs)");
    let (kmin, kmedian, kmax) = stats(from_kill);
    eprintln!(
        "kill → sink: min {kmin:?}, median {kmedian:?}, max {kmax:?} (heartbeat critical 6 s)"
    );
    assert!(max < Duration::from_secs(5), "the < 5 s target: {max:?}");
    warden.stop().await;
}
