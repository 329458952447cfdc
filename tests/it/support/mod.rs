//! Real parts for integration tests: a private redis-server on a reserved port, real Celery
//! workers from the test venv, and warden itself, in-process on ephemeral ports.
//!
//! Everything a `#[tokio::test]` calls while warden runs in the same runtime is async: a
//! blocking call (a `redis-cli` run to completion, `std::thread::sleep`, a thread join) would
//! hold a runtime thread that the server under test needs. Each process started here logs
//! into a [`LogDir`] of its own, kept and printed when the test fails.

mod logs;
mod ports;

pub use logs::LogDir;
pub use ports::{Port, reserve_port};

use std::{
    future::Future,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use tonic::transport::Channel;
use warden::{
    config::{Config, Secret},
    fleet::{
        Clock, EventPayload, FleetEvent, WorkerEvent, WorkerEventKind, WorkerKey,
        owner::FleetMessage,
    },
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
pub async fn wait_for_port(port: u16, deadline: Duration, what: &str) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < deadline,
            "{what} did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `sig` (e.g. "-TERM") to one process.
async fn signal(pid: u32, sig: &str) {
    let _ = tokio::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .await;
}

/// Sends `sig` to a whole process group (from `Drop`, which cannot wait on a future).
fn signal_group_now(pgid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// Waits for a child that was told to exit, without blocking a runtime thread.
async fn reap(child: &mut Child) {
    while let Ok(None) = child.try_wait() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs a command to completion: (success, stdout, stderr). The child is waited for on a
/// blocking-pool thread, so that the runtime (and warden in it) keeps running meanwhile.
pub async fn run(cmd: &mut Command) -> (bool, String, String) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("command runs");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("the waiting thread")
        .expect("command output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run`] for plain `#[test]`s, which have no runtime to keep running.
pub fn run_blocking(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("command runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The major version of the installed redis-server.
pub async fn redis_major_version() -> u32 {
    static VERSION: tokio::sync::OnceCell<u32> = tokio::sync::OnceCell::const_new();
    *VERSION
        .get_or_init(|| async {
            let out = tokio::process::Command::new("redis-server")
                .arg("--version")
                .output()
                .await
                .expect("redis-server is installed (scripts/test installs it)");
            // "Redis server v=7.0.15 sha=..."
            String::from_utf8_lossy(&out.stdout)
                .split("v=")
                .nth(1)
                .and_then(|v| v.split('.').next())
                .and_then(|major| major.parse().ok())
                .unwrap_or(0)
        })
        .await
}

/// Why a redis-server did not come up.
enum StartError {
    /// Something else took its port first: worth another try on another port.
    AddressInUse,
}

/// A redis-server of the test's own, on a reserved port, keeping nothing on disk, logging into
/// its own [`LogDir`].
pub struct RedisServer {
    port: Port,
    password: Option<String>,
    /// More redis-server arguments (e.g. a data directory to load).
    extra_args: Vec<String>,
    child: Option<Child>,
    logs: LogDir,
    /// Kept alive while the server may read it.
    _dir: Option<tempfile::TempDir>,
}

/// Tries at a fresh port when a redis-server finds its port taken.
const START_ATTEMPTS: usize = 5;

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(None, &[]).await
    }

    pub async fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password.to_string()), &[]).await
    }

    /// A server with more redis-server arguments (e.g. `--rename-command HELLO ""`).
    pub async fn start_with_args(args: &[&str]) -> Self {
        Self::start_with(None, args).await
    }

    async fn start_with(password: Option<String>, args: &[&str]) -> Self {
        let mut server = Self::not_started();
        server.password = password;
        server.extra_args = args.iter().map(|a| a.to_string()).collect();
        server.launch(true).await;
        server
    }

    /// A server that is not running yet, on a reserved port (for "broker down at start").
    pub fn not_started() -> Self {
        Self {
            port: reserve_port(),
            password: None,
            extra_args: Vec::new(),
            child: None,
            logs: LogDir::new("redis-server"),
            _dir: None,
        }
    }

    /// A server that spends its first seconds loading a dataset of `keys` keys, answering
    /// `LOADING` to every data command meanwhile (Redis >= 7, whose debug settings slow the
    /// load down: about 130 µs per key).
    pub async fn start_loading(keys: u32) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let dir_arg = dir.path().to_string_lossy().into_owned();
        // Write the dataset with a first server on the same directory.
        let mut writer = Self::not_started();
        writer.extra_args = vec!["--dir".into(), dir_arg.clone()];
        writer.launch(true).await;
        assert_eq!(
            writer.cli(&["DEBUG", "POPULATE", &keys.to_string()]).await,
            "OK"
        );
        assert_eq!(writer.cli(&["SAVE"]).await, "OK");
        writer.kill().await;
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
        server.launch(true).await;
        server
    }

    pub fn port(&self) -> u16 {
        self.port.get()
    }

    pub fn url(&self, db: u8) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/{db}", self.port),
            None => format!("redis://127.0.0.1:{}/{db}", self.port),
        }
    }

    /// Starts (again) on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill().await;
        // Its URL is out: the port cannot move any more.
        self.launch(false).await;
    }

    /// Starts the server and waits until it answers. Where nobody knows its URL yet
    /// (`may_move`), a port that something else took meanwhile is exchanged for a fresh one.
    async fn launch(&mut self, may_move: bool) {
        for attempt in 1..=START_ATTEMPTS {
            match self.try_launch().await {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(StartError::AddressInUse) if may_move && attempt < START_ATTEMPTS => {
                    eprintln!("port {} was taken; redis-server tries another", self.port);
                    self.port = reserve_port();
                }
                Err(StartError::AddressInUse) => panic!(
                    "redis-server could not bind port {}:\n{}",
                    self.port,
                    self.logs.tail("redis.log", 20)
                ),
            }
        }
    }

    async fn try_launch(&self) -> Result<Child, StartError> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--logfile")
            .arg(self.logs.file("redis.log"))
            .stdout(self.logs.stdio("redis.out"))
            .stderr(self.logs.stdio("redis.out"));
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        if redis_major_version().await >= 7 {
            // DEBUG (SLEEP, to make the server hang) is off by default since Redis 7.
            cmd.args(["--enable-debug-command", "local"]);
        }
        cmd.args(&self.extra_args);
        let mut child = cmd
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = self.logs.tail("redis.log", 20);
                if log.contains("Address already in use") {
                    return Err(StartError::AddressInUse);
                }
                panic!(
                    "redis-server exited ({status}):\n{log}\n{}",
                    self.logs.tail("redis.out", 20)
                );
            }
            if self.answers().await {
                return Ok(child);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                reap(&mut child).await;
                panic!(
                    "redis-server did not answer on port {} within 10 s:\n{}",
                    self.port,
                    self.logs.tail("redis.log", 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn cli_command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if let Some(pw) = &self.password {
            cmd.args(["--no-auth-warning", "-a", pw]);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs one `redis-cli` command against this server; its trimmed output.
    pub async fn cli(&self, args: &[&str]) -> String {
        let out = self
            .cli_command()
            .args(args)
            .output()
            .await
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Makes the server hang (`DEBUG SLEEP`) for `seconds`, from a task of its own; the task
    /// ends, with the server's answer, once the server answers again.
    pub fn hang(&self, seconds: u32) -> tokio::task::JoinHandle<String> {
        let mut cmd = self.cli_command();
        cmd.args(["DEBUG", "SLEEP", &seconds.to_string()]);
        tokio::spawn(async move {
            let out = cmd.output().await.expect("redis-cli");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
    }

    /// It answers, even if only to say that it is loading.
    async fn answers(&self) -> bool {
        let reply = self.cli(&["PING"]).await;
        reply == "PONG" || reply.starts_with("LOADING")
    }

    /// Whether it is still loading its dataset.
    pub async fn loading(&self) -> bool {
        self.cli(&["INFO", "persistence"])
            .await
            .contains("loading:1")
    }

    /// SIGKILL: the broker vanishes mid-run. The port stays reserved for a restart.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            reap(&mut child).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A real Celery worker (prefork) running the test app, logging into its own [`LogDir`].
pub struct CeleryWorker {
    child: Child,
    /// Kept (and its tail printed) if the test fails.
    _logs: LogDir,
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
    /// Starts the worker (spawning only: nothing here waits for it).
    pub fn start(broker_url: &str, name: &str, options: WorkerOptions<'_>) -> Self {
        let venv = options.venv.clone().unwrap_or_else(venv);
        let logs = LogDir::new(&format!("celery {name}"));
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
            .stdout(logs.stdio("celery.log"))
            .stderr(logs.stdio("celery.log"))
            .process_group(0);
        if options.events {
            cmd.arg("-E");
        }
        for (k, v) in options.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("celery from the test venv");
        Self { child, _logs: logs }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL of the main process only: a crash, no goodbye.
    pub async fn kill9(&mut self) {
        let _ = self.child.kill();
        reap(&mut self.child).await;
    }

    /// SIGTERM: Celery's warm shutdown, which says goodbye (`worker-offline`).
    pub async fn terminate(&self) {
        signal(self.pid(), "-TERM").await;
    }
}

impl Drop for CeleryWorker {
    fn drop(&mut self) {
        signal_group_now(self.pid(), "-KILL");
        let _ = self.child.wait();
    }
}

/// Sends `count` tasks of the test app (runs tests/python/submit.py).
/// A Redis Streams worker (tests/python/streams_worker.py): reads a stream through a consumer
/// group, heartbeats every `period` (TTL 3× the period), writes its shutdown marker on SIGTERM.
pub struct StreamsWorker {
    child: Child,
    _logs: LogDir,
}

impl StreamsWorker {
    /// Starts the worker (spawning only: nothing here waits for it).
    pub fn start(
        redis_url: &str,
        stream: &str,
        group: &str,
        consumer: &str,
        period: Duration,
        no_ack: bool,
    ) -> Self {
        Self::start_with(redis_url, stream, group, consumer, period, no_ack, &[])
    }

    /// [`Self::start`] with more arguments (e.g. `--work 0.02`).
    pub fn start_with(
        redis_url: &str,
        stream: &str,
        group: &str,
        consumer: &str,
        period: Duration,
        no_ack: bool,
        extra: &[&str],
    ) -> Self {
        let logs = LogDir::new(&format!("streams {consumer}"));
        let mut cmd = Command::new(venv().join("bin/python"));
        cmd.arg(python_dir().join("streams_worker.py"))
            .args(["--redis", redis_url, "--stream", stream, "--group", group])
            .args(["--consumer", consumer])
            .args(["--period", &period.as_secs_f64().to_string()])
            .stdin(Stdio::null())
            .stdout(logs.stdio("worker.log"))
            .stderr(logs.stdio("worker.log"))
            .process_group(0);
        if no_ack {
            cmd.arg("--no-ack");
        }
        cmd.args(extra);
        let child = cmd.spawn().expect("python from the test venv");
        Self { child, _logs: logs }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: a crash, no marker.
    pub async fn kill9(&mut self) {
        let _ = self.child.kill();
        reap(&mut self.child).await;
    }

    /// SIGTERM: a clean stop, which writes the shutdown marker; waits for the exit.
    pub async fn terminate(&mut self) {
        signal(self.pid(), "-TERM").await;
        reap(&mut self.child).await;
    }
}

impl Drop for StreamsWorker {
    fn drop(&mut self) {
        signal_group_now(self.pid(), "-KILL");
        let _ = self.child.wait();
    }
}

pub async fn submit(broker_url: &str, task: &str, count: u32, args: &[&str], extra: &[&str]) {
    submit_with_env(broker_url, task, count, args, extra, &[]).await;
}

/// [`submit`] with extra environment for the producer (e.g. `WARDEN_TEST_KEYPREFIX`).
pub async fn submit_with_env(
    broker_url: &str,
    task: &str,
    count: u32,
    args: &[&str],
    extra: &[&str],
    env: &[(&str, &str)],
) {
    let out = tokio::process::Command::new(venv().join("bin/python"))
        .arg(python_dir().join("submit.py"))
        .args([task, &count.to_string()])
        .args(args)
        .args(extra)
        .env("WARDEN_TEST_BROKER", broker_url)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
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
        // History only where a test asks for it (tests/it/history.rs).
        database_url: Secret::new(warden::config::NO_DATABASE),
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
        Self::wrap(Warden::start(config).await.expect("warden starts"))
    }

    /// With an injected clock (e.g. a `ManualClock`): thresholds and windows move when the
    /// test says so, not with the wall clock.
    pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Self {
        Self::wrap(
            Warden::start_with_clock(config, clock)
                .await
                .expect("warden starts"),
        )
    }

    fn wrap(warden: Warden) -> Self {
        Self {
            grpc_url: format!("http://{}", warden.grpc_addr),
            http_url: format!("http://{}", warden.http_addr),
            warden: Some(warden),
        }
    }

    /// The running warden.
    pub fn inner(&self) -> &Warden {
        self.warden.as_ref().expect("running")
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
        &self.inner().metrics
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

/// A worker event as an adapter would report it, for feeding the fleet directly
/// (`warden.fleet.observe(...)`): `kind` from `worker`, announcing a heartbeat every `freq`.
/// Give a Celery worker a scope of the test's own: the inspect rounds address the default
/// scope, and would mark a worker that cannot answer as having missed its ping.
pub fn worker_event(
    worker: WorkerKey,
    kind: WorkerEventKind,
    freq: Option<Duration>,
) -> FleetMessage {
    FleetMessage::Events(vec![FleetEvent {
        worker,
        payload: EventPayload::Worker(WorkerEvent {
            kind,
            freq,
            active: Some(0),
            processed: Some(0),
            load_average: None,
            software: None,
            pid: Some(4242),
        }),
    }])
}

/// The broker's entry in a response's `freshness.sources` (there once a probe has run).
pub fn broker_source(r: &pb::ListWorkersResponse) -> Option<&pb::SourceStatus> {
    r.freshness
        .as_ref()?
        .sources
        .iter()
        .find(|s| s.source == "broker")
}

/// Waits until warden's last probe found the broker up: from then on, silence counts
/// against the broker's workers.
pub async fn broker_connected(client: &WorkerHealthClient<Channel>) {
    eventually(Duration::from_secs(15), "the broker connected", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            broker_source(&r).is_some_and(|s| s.available).then_some(())
        }
    })
    .await;
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

/// One whole WatchFleet snapshot: begin, chunks, end.
#[derive(Debug, Default)]
pub struct WatchSnapshot {
    pub reason: pb::SnapshotReason,
    pub workers: Vec<pb::Worker>,
    pub queues: Vec<pb::Queue>,
    /// The revision and resume token of the snapshot_end message.
    pub revision: u64,
    pub resume_token: String,
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
        ..WatchSnapshot::default()
    };
    loop {
        let message = stream
            .next()
            .await
            .expect("a message")
            .expect("stream open");
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
