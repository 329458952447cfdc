//! Real receivers for the tests: an HTTP sink (axum on 127.0.0.1:0), an SMTP sink (aiosmtpd,
//! `scripts/python/smtp_sink.py`) and a real Alertmanager; plus fixtures and a deadline wait.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::IntoResponse,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
    sync::Notify,
};
use warden_core::{
    history::Severity,
    ports::{Notification, NotifiedAlert},
};

/// Polls `probe` until it gives a value; fails the test after `within`.
pub async fn wait_until<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A port free right now (for servers that cannot be told to pick one and report it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn alert(
    id: &str,
    rule: &str,
    severity: Severity,
    worker: &str,
    started: SystemTime,
) -> NotifiedAlert {
    let sev = match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    };
    NotifiedAlert {
        name: format!("alerts/{id}"),
        rule: rule.into(),
        severity,
        firing: true,
        summary: format!("Worker {worker} lost"),
        description: format!("No heartbeat from {worker} for 60s"),
        labels: BTreeMap::from([
            ("rule".to_owned(), rule.to_owned()),
            ("severity".to_owned(), sev.to_owned()),
            ("worker".to_owned(), worker.to_owned()),
            ("group".to_owned(), "payments".to_owned()),
        ]),
        annotations: BTreeMap::from([(
            "runbook".to_owned(),
            "https://runbooks.example/lost".to_owned(),
        )]),
        started_at: started,
        resolved_at: None,
    }
}

pub fn notification(receiver: &str, alerts: Vec<NotifiedAlert>) -> Notification {
    Notification {
        group_key: "{}:{group=\"payments\"}".into(),
        receiver: receiver.into(),
        resolved: false,
        escalated: false,
        common_labels: BTreeMap::from([("group".to_owned(), "payments".to_owned())]),
        alerts,
    }
}

pub fn resolved(mut n: Notification, at: SystemTime) -> Notification {
    n.resolved = true;
    for a in &mut n.alerts {
        a.firing = false;
        a.resolved_at = Some(at);
    }
    n
}

/// What the HTTP sink does with the next request to a path.
pub enum Step {
    /// Answer this status (with a short body).
    Status(u16),
    /// Wait for the notify, then answer 200.
    Gate(Arc<Notify>),
    /// Never answer.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

#[derive(Default)]
struct SinkState {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<HashMap<String, VecDeque<Step>>>,
}

/// An HTTP server that records every request and answers 200 unless scripted otherwise.
pub struct HttpSink {
    pub addr: SocketAddr,
    state: Arc<SinkState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(state): State<Arc<SinkState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let path = uri.path().to_owned();
    state.requests.lock().unwrap().push(Recorded {
        method,
        path: path.clone(),
        headers,
        body,
    });
    let step = state
        .script
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front);
    match step {
        None => (StatusCode::OK, "ok").into_response(),
        Some(Step::Status(code)) => {
            let status = StatusCode::from_u16(code).expect("a status");
            (status, format!("sink says {code}")).into_response()
        }
        Some(Step::Gate(gate)) => {
            gate.notified().await;
            (StatusCode::OK, "ok").into_response()
        }
        Some(Step::Hang) => std::future::pending().await,
    }
}

impl HttpSink {
    pub async fn start() -> HttpSink {
        let state = Arc::new(SinkState::default());
        let app = Router::new().fallback(record).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the sink");
        let addr = listener.local_addr().expect("the sink's address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpSink {
            addr,
            state,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn script(&self, path: &str, steps: Vec<Step>) {
        self.state
            .script
            .lock()
            .unwrap()
            .insert(path.to_owned(), steps.into());
    }

    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `n` requests reached `path`.
    pub async fn wait_requests(&self, path: &str, n: usize) -> Vec<Recorded> {
        wait_until(
            &format!("{n} request(s) to {path}"),
            Duration::from_secs(10),
            || {
                let got = self.requests(path);
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

/// The Python of the test venv: WARDEN_TEST_VENV must be set (scripts/test sets it).
pub fn venv_python() -> PathBuf {
    let venv = std::env::var("WARDEN_TEST_VENV").unwrap_or_else(|_| {
        panic!(
            "WARDEN_TEST_VENV is not set: point it at a venv with scripts/python/requirements.txt \
             installed (aiosmtpd), e.g. run scripts/test, or \
             WARDEN_TEST_VENV=/work/main/.venv cargo nextest run -p warden-notify"
        )
    });
    let python = PathBuf::from(&venv).join("bin/python");
    assert!(python.exists(), "WARDEN_TEST_VENV={venv} has no bin/python");
    python
}

/// One message the SMTP sink received.
#[derive(Debug, serde::Deserialize)]
pub struct Mail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub subject: String,
    pub from: String,
    pub to: String,
    pub body: Option<String>,
    pub auth_login: Option<String>,
    pub tls: bool,
}

/// aiosmtpd on a free port; killed when dropped.
pub struct SmtpSink {
    pub port: u16,
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl SmtpSink {
    /// `tls`: (cert, key) PEM files for STARTTLS; `auth`: "user:password".
    pub async fn start(
        tls: Option<(&std::path::Path, &std::path::Path)>,
        auth: Option<&str>,
    ) -> SmtpSink {
        let python = venv_python();
        let port = free_port();
        let mut command = Command::new(python);
        command
            .arg(repo_root().join("scripts/python/smtp_sink.py"))
            .arg("--port")
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if let Some((cert, key)) = tls {
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        if let Some(auth) = auth {
            command.arg("--auth").arg(auth);
        }
        let mut child = command.spawn().expect("start smtp_sink.py");
        let stdout = child.stdout.take().expect("its stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("smtp_sink.py ready within 20 s")
            .expect("read smtp_sink.py");
        assert_eq!(
            ready.as_deref(),
            Some("READY"),
            "smtp_sink.py did not start (is aiosmtpd installed in WARDEN_TEST_VENV?)"
        );
        SmtpSink {
            port,
            _child: child,
            lines,
        }
    }

    /// The next message, within 10 s.
    pub async fn next_mail(&mut self) -> Mail {
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("a message within 10 s")
            .expect("read smtp_sink.py")
            .expect("smtp_sink.py still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

/// A self-signed certificate for 127.0.0.1 (openssl), usable as its own trust root.
pub fn self_signed_cert(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

/// Debian's prometheus-alertmanager on a free port, clustering off; killed when dropped.
pub struct Alertmanager {
    pub url: String,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    pub async fn start() -> Alertmanager {
        let _ = rustls::crypto::ring::default_provider().install_default();
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
        let port = free_port();
        let child = Command::new(binary)
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
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{url}/-/ready")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Alertmanager {
            url,
            _child: child,
            _dir: dir,
        }
    }

    /// GET /api/v2/alerts.
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        client
            .get(format!("{}/api/v2/alerts", self.url))
            .send()
            .await
            .expect("GET /api/v2/alerts")
            .json()
            .await
            .expect("a JSON array")
    }
}

/// A dispatcher over `configs`, every receiver with `retry`.
pub fn dispatcher(
    configs: &[warden_notify::ReceiverConfig],
    retry: warden_notify::RetryPolicy,
    clock: Arc<dyn warden_core::clock::Clock>,
    settings: warden_notify::DispatcherSettings,
) -> (
    warden_notify::Dispatcher,
    tokio_util::sync::CancellationToken,
) {
    let receivers =
        warden_notify::build_receivers(configs, retry, clock.clone()).expect("receivers");
    let cancel = tokio_util::sync::CancellationToken::new();
    let d = warden_notify::Dispatcher::spawn(receivers, settings, clock, cancel.clone());
    (d, cancel)
}

/// Waits until the delivery is sent, failed or suppressed.
pub async fn wait_final(
    d: &warden_notify::Dispatcher,
    id: warden_notify::DeliveryId,
    within: Duration,
) -> warden_notify::Delivery {
    wait_until(&format!("delivery {id} final"), within, || {
        d.get(id).filter(|x| x.state.is_final())
    })
    .await
}

/// Retries fast enough for tests (the schedule itself is unit-tested).
pub fn quick_retry(max_attempts: u32, attempt_timeout: Duration) -> warden_notify::RetryPolicy {
    warden_notify::RetryPolicy {
        attempt_timeout,
        max_attempts,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
    }
}

/// Captures this thread's log output (a current-thread test runtime runs every task here).
pub struct LogCapture {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    pub fn start() -> LogCapture {
        let buffer: Arc<Mutex<Vec<u8>>> = Arc::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || CaptureWriter(writer.clone()))
            .finish();
        LogCapture {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}
