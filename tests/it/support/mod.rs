//! Real parts for integration tests: a private redis-server on a free port, real Celery
//! workers from the test venv, and warden itself, in-process on ephemeral ports.
#![allow(dead_code)]

use std::{
    future::Future,
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tonic::transport::Channel;
use warden::{
    config::{Config, Secret},
    proto::v1::{self as pb, worker_health_client::WorkerHealthClient},
    server::Warden,
};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python venv with celery, grpcio-tools and grpcurl (made by scripts/test).
pub fn venv() -> PathBuf {
    let venv = std::env::var_os("WARDEN_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"));
    assert!(
        venv.join("bin/celery").exists(),
        "no test venv at {} (scripts/test creates it)",
        venv.display()
    );
    venv
}

pub fn python_dir() -> PathBuf {
    repo().join("tests/python")
}

/// A port nobody listens on right now (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until `check` returns `Some`, polling every 100 ms; panics with `what` at the deadline.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until something accepts connections on 127.0.0.1:`port` (a process we started is
/// listening); panics naming `what` after `deadline`.
pub fn wait_for_port(port: u16, deadline: Duration, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < deadline,
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn signal_group(pgid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// The major version of the installed redis-server.
pub fn redis_major_version() -> u32 {
    static VERSION: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let out = Command::new("redis-server")
            .arg("--version")
            .output()
            .expect("redis-server is installed (scripts/test installs it)");
        // "Redis server v=7.0.15 sha=..."
        String::from_utf8_lossy(&out.stdout)
            .split("v=")
            .nth(1)
            .and_then(|v| v.split('.').next())
            .and_then(|major| major.parse().ok())
            .unwrap_or(0)
    })
}

/// A redis-server of the test's own, on a free port, keeping nothing on disk.
pub struct RedisServer {
    pub port: u16,
    password: Option<String>,
    child: Option<Child>,
    /// More redis-server arguments (e.g. a data directory to load).
    extra_args: Vec<String>,
    /// Kept alive while the server may read it.
    _dir: Option<tempfile::TempDir>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on(free_port(), None)
    }

    pub fn start_with_password(password: &str) -> Self {
        Self::start_on(free_port(), Some(password.to_string()))
    }

    /// A server that is not running yet, on a reserved port (for "broker down at start").
    pub fn not_started() -> Self {
        Self {
            port: free_port(),
            password: None,
            child: None,
            extra_args: Vec::new(),
            _dir: None,
        }
    }

    /// A server that spends its first seconds loading a dataset of `keys` keys, answering
    /// `LOADING` to every data command meanwhile (Redis >= 7, whose debug settings slow the
    /// load down: about 130 µs per key).
    pub fn start_loading(keys: u32) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let dir_arg = dir.path().to_string_lossy().into_owned();
        // Write the dataset with a first server on the same directory.
        let mut writer = Self::not_started();
        writer.extra_args = vec!["--dir".into(), dir_arg.clone()];
        writer.restart();
        assert_eq!(writer.cli(&["DEBUG", "POPULATE", &keys.to_string()]), "OK");
        assert_eq!(writer.cli(&["SAVE"]), "OK");
        writer.kill();
        let mut server = Self::not_started();
        server.extra_args = [
            "--dir",
            &dir_arg,
            "--key-load-delay",
            "50",
            "--loading-process-events-interval-bytes",
            "1024",
        ]
        .map(String::from)
        .to_vec();
        server._dir = Some(dir);
        server.restart();
        server
    }

    pub fn start_on(port: u16, password: Option<String>) -> Self {
        let mut server = Self {
            port,
            password,
            child: None,
            extra_args: Vec::new(),
            _dir: None,
        };
        server.restart();
        server
    }

    pub fn url(&self, db: u8) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/{db}", self.port),
            None => format!("redis://127.0.0.1:{}/{db}", self.port),
        }
    }

    /// Starts (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        if redis_major_version() >= 7 {
            // DEBUG (SLEEP, to make the server hang) is off by default since Redis 7.
            cmd.args(["--enable-debug-command", "local"]);
        }
        cmd.args(&self.extra_args);
        self.child = Some(
            cmd.spawn()
                .expect("redis-server is installed (scripts/test installs it)"),
        );
        let start = Instant::now();
        while !self.answers() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if let Some(pw) = &self.password {
            cmd.args(["--no-auth-warning", "-a", pw]);
        }
        let out = cmd.args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Makes the server hang (`DEBUG SLEEP`) for `seconds`, from a thread of its own; the
    /// handle joins once the server answers again.
    pub fn hang(&self, seconds: u32) -> std::thread::JoinHandle<String> {
        let port = self.port;
        let password = self.password.clone();
        std::thread::spawn(move || {
            let mut cmd = Command::new("redis-cli");
            cmd.args(["-p", &port.to_string()]);
            if let Some(pw) = &password {
                cmd.args(["--no-auth-warning", "-a", pw]);
            }
            let out = cmd
                .args(["DEBUG", "SLEEP", &seconds.to_string()])
                .output()
                .expect("redis-cli");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
    }

    /// It answers, even if only to say that it is loading.
    fn answers(&self) -> bool {
        let reply = self.cli(&["PING"]);
        reply == "PONG" || reply.starts_with("LOADING")
    }

    /// Whether it is still loading its dataset.
    pub fn loading(&self) -> bool {
        self.cli(&["INFO", "persistence"]).contains("loading:1")
    }

    /// SIGKILL: the broker vanishes mid-run.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real Celery worker (prefork) running the test app.
pub struct CeleryWorker {
    pub name: String,
    child: Child,
}

pub struct WorkerOptions<'a> {
    pub queues: &'a [&'a str],
    pub concurrency: u32,
    pub events: bool,
    pub env: Vec<(&'a str, String)>,
    /// Another venv to run Celery from (e.g. [`old_celery_venv`]); default the test venv.
    pub venv: Option<PathBuf>,
}

impl Default for WorkerOptions<'_> {
    fn default() -> Self {
        Self {
            queues: &["celery"],
            concurrency: 2,
            events: false,
            env: Vec::new(),
            venv: None,
        }
    }
}

/// The venv with the oldest supported Celery (5.3), made by scripts/test.
pub fn old_celery_venv() -> PathBuf {
    let venv = std::env::var_os("WARDEN_TEST_VENV_CELERY53")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-celery53"));
    assert!(
        venv.join("bin/celery").exists(),
        "no Celery 5.3 venv at {} (scripts/test creates it)",
        venv.display()
    );
    venv
}

impl CeleryWorker {
    pub fn start(broker_url: &str, name: &str, options: WorkerOptions<'_>) -> Self {
        let venv = options.venv.clone().unwrap_or_else(venv);
        let log = std::env::temp_dir().join(format!("warden-test-{name}.log"));
        let mut cmd = Command::new(venv.join("bin/celery"));
        cmd.current_dir(python_dir())
            .env("PYTHONPATH", python_dir())
            .env("WARDEN_TEST_BROKER", broker_url)
            .args([
                "-A",
                "warden_test_app",
                "worker",
                "-n",
                name,
                "-P",
                "prefork",
            ])
            .args(["-c", &options.concurrency.to_string()])
            .args(["-Q", &options.queues.join(",")])
            .args(["--without-mingle", "--without-gossip", "-l", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .process_group(0);
        if options.events {
            cmd.arg("-E");
        }
        for (k, v) in options.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("celery from the test venv");
        Self {
            name: name.to_string(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL of the main process only: a crash, no goodbye.
    pub fn kill9(&mut self) {
        signal(self.pid(), "-KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM: Celery's warm shutdown, which says goodbye (`worker-offline`).
    pub fn terminate(&mut self) {
        signal(self.pid(), "-TERM");
    }
}

impl Drop for CeleryWorker {
    fn drop(&mut self) {
        signal_group(self.pid(), "-KILL");
        let _ = self.child.wait();
    }
}

/// Sends `count` tasks of the test app (runs tests/python/submit.py).
pub fn submit(broker_url: &str, task: &str, count: u32, args: &[&str], extra: &[&str]) {
    submit_with_env(broker_url, task, count, args, extra, &[]);
}

/// [`submit`] with extra environment for the producer (e.g. `WARDEN_TEST_KEYPREFIX`).
pub fn submit_with_env(
    broker_url: &str,
    task: &str,
    count: u32,
    args: &[&str],
    extra: &[&str],
    env: &[(&str, &str)],
) {
    let out = Command::new(venv().join("bin/python"))
        .arg(python_dir().join("submit.py"))
        .args([task, &count.to_string()])
        .args(args)
        .args(extra)
        .env("WARDEN_TEST_BROKER", broker_url)
        .envs(env.iter().copied())
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A config for tests: ephemeral ports, fast rounds.
pub fn test_config(broker_url: &str) -> Config {
    Config {
        broker_url: Secret::new(broker_url),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        inspect_interval: Duration::from_secs(2),
        inspect_timeout: Duration::from_millis(800),
        broker_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

/// warden, in-process.
pub struct TestWarden {
    pub warden: Option<Warden>,
    pub grpc_url: String,
    pub http_url: String,
}

impl TestWarden {
    pub async fn start(config: Config) -> Self {
        let warden = Warden::start(config).await.expect("warden starts");
        Self {
            grpc_url: format!("http://{}", warden.grpc_addr),
            http_url: format!("http://{}", warden.http_addr),
            warden: Some(warden),
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.grpc_url.clone())
            .unwrap()
            .connect()
            .await
            .expect("connect to warden")
    }

    /// The running warden's own metrics.
    pub fn metrics(&self) -> &warden::metrics::Metrics {
        &self.warden.as_ref().expect("running").metrics
    }

    pub async fn client(&self) -> WorkerHealthClient<Channel> {
        WorkerHealthClient::new(self.channel().await)
    }

    pub async fn stop(mut self) {
        if let Some(w) = self.warden.take() {
            w.shutdown().await;
        }
    }
}

/// Lists every worker (first page of up to 1000).
pub async fn list(
    client: &mut WorkerHealthClient<Channel>,
    refresh: bool,
) -> pb::ListWorkersResponse {
    client
        .list_workers(pb::ListWorkersRequest {
            page_size: 1000,
            refresh,
            view: pb::WorkerView::Full.into(),
            ..Default::default()
        })
        .await
        .expect("ListWorkers")
        .into_inner()
}

pub fn find<'a>(response: &'a pb::ListWorkersResponse, name: &str) -> Option<&'a pb::Worker> {
    response
        .workers
        .iter()
        .find(|w| w.id == name || w.name == name)
}

pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("command runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// One whole WatchFleet snapshot: begin, chunks, end.
#[derive(Debug, Default)]
pub struct WatchSnapshot {
    pub reason: pb::SnapshotReason,
    pub workers: Vec<pb::Worker>,
    pub queues: Vec<pb::Queue>,
    /// The revision and resume token of the snapshot_end message.
    pub revision: u64,
    pub resume_token: String,
    /// Messages it took (begin and end included).
    pub messages: usize,
}

/// Reads a snapshot from a WatchFleet stream whose next message must be snapshot_begin.
pub async fn next_snapshot<S>(stream: &mut S) -> WatchSnapshot
where
    S: tokio_stream::Stream<Item = Result<pb::WatchFleetResponse, tonic::Status>> + Unpin,
{
    use tokio_stream::StreamExt as _;
    let first = stream
        .next()
        .await
        .expect("a message")
        .expect("stream open");
    rest_of_snapshot(&first, stream).await
}

/// Reads the rest of a snapshot whose snapshot_begin is `begin`.
pub async fn rest_of_snapshot<S>(begin: &pb::WatchFleetResponse, stream: &mut S) -> WatchSnapshot
where
    S: tokio_stream::Stream<Item = Result<pb::WatchFleetResponse, tonic::Status>> + Unpin,
{
    use pb::watch_fleet_response::Event;
    use tokio_stream::StreamExt as _;
    let Some(Event::SnapshotBegin(b)) = &begin.event else {
        panic!("expected snapshot_begin, got {begin:?}")
    };
    assert!(begin.resume_token.is_empty(), "no token before the end");
    let mut snapshot = WatchSnapshot {
        reason: b.reason(),
        messages: 1,
        ..WatchSnapshot::default()
    };
    loop {
        let message = stream
            .next()
            .await
            .expect("a message")
            .expect("stream open");
        snapshot.messages += 1;
        match message.event {
            Some(Event::SnapshotChunk(c)) => {
                assert!(
                    !c.workers.is_empty() || !c.queues.is_empty(),
                    "no empty chunk"
                );
                snapshot.workers.extend(c.workers);
                snapshot.queues.extend(c.queues);
            }
            Some(Event::SnapshotEnd(_)) => {
                assert!(
                    !message.resume_token.is_empty(),
                    "snapshot_end carries a token"
                );
                snapshot.revision = message.revision;
                snapshot.resume_token = message.resume_token;
                assert_eq!(snapshot.workers.len() as u32, b.total_workers);
                assert_eq!(snapshot.queues.len() as u32, b.total_queues);
                return snapshot;
            }
            other => panic!("inside a snapshot: {other:?}"),
        }
    }
}
