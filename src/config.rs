//! The one typed configuration of `warden serve`.
//!
//! Layers, lowest first: built-in defaults (the `DEFAULT_*` constants) < TOML file (`--config`)
//! < `WARDEN_*` environment variables < command-line flags. Clap merges the last two; this
//! module merges the file under them and validates the result before anything starts.
use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use serde::Deserialize;

pub const DEFAULT_BROKER_URL: &str = "redis://127.0.0.1:6379/0";
pub const DEFAULT_BROKER_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:50052";
pub const DEFAULT_INSPECT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_INSPECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_QUEUE_POLL_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_HEARTBEAT_WARNING: Duration = Duration::from_secs(30);
pub const DEFAULT_HEARTBEAT_CRITICAL: Duration = Duration::from_secs(60);
pub const DEFAULT_ENABLE_EVENTS: bool = true;
pub const DEFAULT_MAX_WORKERS: usize = warden_core::state::DEFAULT_MAX_WORKERS;
pub const DEFAULT_WATCH_BOOKMARK_INTERVAL: Duration = warden_core::watch::DEFAULT_BOOKMARK_EVERY;
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_STREAMS_HEARTBEAT_PREFIX: &str = "worker:heartbeat:";
pub const DEFAULT_STREAMS_SHUTDOWN_PREFIX: &str = "worker:shutdown:";
pub const DEFAULT_STREAMS_POLL_INTERVAL: Duration = Duration::from_secs(3);
pub const DEFAULT_STREAMS_JANITOR_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_STREAMS_CONSUMER_IDLE: Duration = Duration::from_secs(3600);
/// The embedded history store: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://warden.db";
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_HISTORY_BUFFER_ROWS: usize = 500_000;
pub const DEFAULT_RETENTION_SAMPLES: Duration = Duration::from_secs(7 * 86_400);
pub const DEFAULT_RETENTION_EVENTS: Duration = Duration::from_secs(30 * 86_400);
/// `/metrics` labels task series with the worker's hostname, as celery-exporter does.
pub const DEFAULT_METRICS_TASK_HOSTNAME: bool = true;
/// `/metrics` leaves out workers gone (not alive, not heard of) for longer than this.
pub const DEFAULT_METRICS_GONE_AFTER: Duration = Duration::from_secs(600);
/// How often resource figures are read from their source (one query per metric per round).
pub const DEFAULT_RESOURCE_INTERVAL: Duration = Duration::from_secs(15);
pub const DEFAULT_PROMETHEUS_TIMEOUT: Duration = warden_resources::prometheus::DEFAULT_TIMEOUT;
pub const DEFAULT_PROMETHEUS_QUERY_CPU: &str = warden_resources::prometheus::DEFAULT_CPU_QUERY;
pub const DEFAULT_PROMETHEUS_QUERY_MEMORY: &str =
    warden_resources::prometheus::DEFAULT_MEMORY_QUERY;
pub const DEFAULT_PROMETHEUS_QUERY_MEMORY_LIMIT: &str =
    warden_resources::prometheus::DEFAULT_MEMORY_LIMIT_QUERY;
pub const DEFAULT_PROMETHEUS_QUERY_GPU_UTIL: &str =
    warden_resources::prometheus::DEFAULT_GPU_UTIL_QUERY;
pub const DEFAULT_PROMETHEUS_QUERY_GPU_MEMORY: &str =
    warden_resources::prometheus::DEFAULT_GPU_MEMORY_QUERY;
pub const DEFAULT_PROMETHEUS_QUERY_DISK: &str = warden_resources::prometheus::DEFAULT_DISK_QUERY;
/// `database_url` value that turns history off.
pub const NO_DATABASE: &str = "none";
/// The pod mapping the Kubernetes runtime uses unless told: `celery@<hostname>` → the pod.
pub const DEFAULT_KUBERNETES_POD_MAPPING: &str = "hostname";
pub const DEFAULT_KUBERNETES_GRACE: Duration = warden_kubernetes::DEFAULT_GRACE;
pub const DEFAULT_KUBERNETES_TIMEOUT: Duration = warden_kubernetes::DEFAULT_CALL_TIMEOUT;

/// Where a configuration value is wrong: the key (as in the TOML file), and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value for `{key}` ({value}): {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

fn invalid(key: &'static str, value: impl fmt::Display, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// A string that must never be printed: tokens, passwords.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// A role, in increasing order of power: each role can do what the ones before it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read the fleet.
    Viewer,
    /// Also read logs and take control actions.
    Operator,
    /// Also destructive actions (forget a worker).
    Admin,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?} (expected viewer, operator or admin)"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

/// A bearer token and who holds it. The name is what logs and the audit show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub secret: Secret,
}

/// Parses token entries `name:role:secret`, separated by newlines or commas; `#` starts a
/// comment line. The error never contains the secret.
pub fn parse_tokens(text: &str, key: &'static str) -> Result<Vec<Token>, ConfigError> {
    let mut tokens = Vec::new();
    for (index, entry) in text
        .split(['\n', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with('#'))
        .enumerate()
    {
        let mut parts = entry.splitn(3, ':');
        let (Some(name), Some(role), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid(
                key,
                format!("entry {}", index + 1),
                "expected name:role:token",
            ));
        };
        let role = role
            .parse()
            .map_err(|e| invalid(key, format!("entry {} ({name})", index + 1), e))?;
        if name.is_empty() || secret.len() < 16 {
            return Err(invalid(
                key,
                format!("entry {} ({name})", index + 1),
                "a token needs a name and a secret of at least 16 characters",
            ));
        }
        tokens.push(Token {
            name: name.to_string(),
            role,
            secret: Secret::new(secret),
        });
    }
    Ok(tokens)
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The validated configuration of a running warden.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Redis broker the Celery workers use (`redis://` or `rediss://`, with password and db).
    pub broker_url: Secret,
    /// Connect and command timeout for every broker call.
    pub broker_timeout: Duration,
    /// kombu's `global_keyprefix` transport option, if the workers set one.
    pub global_keyprefix: String,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// How often to broadcast inspect (ping, stats, active, active_queues, registered).
    pub inspect_interval: Duration,
    /// How long to gather inspect replies.
    pub inspect_timeout: Duration,
    /// How often to measure queue depths.
    pub queue_poll_interval: Duration,
    /// Heartbeat lateness that makes a worker UNRESPONSIVE.
    pub heartbeat_warning: Duration,
    /// Heartbeat lateness that makes a worker LOST.
    pub heartbeat_critical: Duration,
    /// Send `enable_events` to workers so that they publish task events.
    pub enable_events: bool,
    /// Most workers known at once; new ones beyond it are refused and counted
    /// (`warden_workers_refused_total`), so forged messages cannot exhaust memory.
    pub max_workers: usize,
    /// Default time between WatchFleet bookmarks on a quiet stream (clients may ask for
    /// another, within 1 s .. 5 min).
    pub watch_bookmark_interval: Duration,
    /// The history store: `sqlite://PATH`, `postgres://...`, or `none`.
    pub database_url: Secret,
    /// Do not apply pending migrations at start.
    pub no_migrate: bool,
    /// How often workers, queues and groups are sampled into history.
    pub sample_interval: Duration,
    /// Most rows held while the store is down (oldest dropped first beyond it).
    pub history_buffer_rows: usize,
    /// How long samples are kept.
    pub retention_samples: Duration,
    /// How long events are kept.
    pub retention_events: Duration,
    /// Per-table retention overrides (own time bound, row cap).
    pub retention_tables: Vec<warden_core::history::TableRetention>,
    pub log_format: LogFormat,
    /// `RUST_LOG`-style filter.
    pub log_level: String,
    /// Allow a non-loopback gRPC address without tokens.
    pub insecure: bool,
    /// Bearer tokens; empty means no authentication (loopback only).
    pub tokens: Vec<Token>,
    pub tls: Option<TlsFiles>,
    /// Redis Streams to watch (names or globs); empty turns the Streams backend off.
    pub streams: Vec<String>,
    /// Redis holding the streams; `None` means the broker.
    pub streams_redis: Option<Secret>,
    /// Heartbeat keys are `{prefix}{stream}:{consumer}`.
    pub streams_heartbeat_prefix: String,
    /// Shutdown markers are `{prefix}{stream}:{consumer}`.
    pub streams_shutdown_prefix: String,
    /// How often the streams, groups, consumers and heartbeats are polled.
    pub streams_poll_interval: Duration,
    /// How often the janitor trims the streams and deletes stale consumers; 0 turns it off.
    pub streams_janitor_interval: Duration,
    /// A consumer with no heartbeat, nothing pending and idle this long is deleted.
    pub streams_consumer_idle: Duration,
    /// Every 10 s, move the idle (30 s) pending entries of dead consumers to a live one, in
    /// every watched group (ReclaimPending's logic); off by default, as it retries entries
    /// without an operator deciding to.
    pub streams_auto_reclaim: bool,
    /// Label `/metrics` task series with the worker's hostname; `false` sums them over the
    /// fleet per task name (far fewer series).
    pub metrics_task_hostname: bool,
    /// Workers gone for longer than this leave `/metrics` (bounded cardinality).
    pub metrics_gone_after: Duration,
    /// Prometheus to read worker CPU and memory from; `None` turns resource figures off.
    pub prometheus_url: Option<Secret>,
    /// Timeout of each Prometheus query.
    pub prometheus_timeout: Duration,
    /// Bearer token for Prometheus.
    pub prometheus_bearer_token: Option<Secret>,
    /// Basic-auth user for Prometheus (with `prometheus_password`).
    pub prometheus_username: Option<String>,
    pub prometheus_password: Option<Secret>,
    /// PromQL templates (`{pods}` = a regex of the fleet's pods); empty turns a metric off.
    pub prometheus_query_cpu: String,
    pub prometheus_query_memory: String,
    pub prometheus_query_memory_limit: String,
    /// GPU utilisation % by pod (NVIDIA DCGM); empty turns it off.
    pub prometheus_query_gpu_util: String,
    /// GPU memory % by pod (DCGM framebuffer used / total); empty turns it off.
    pub prometheus_query_gpu_memory: String,
    /// Disk % by pod (cAdvisor container filesystem); empty turns it off.
    pub prometheus_query_disk: String,
    /// How often resource figures are collected.
    pub resource_interval: Duration,
    /// The local runtime (`[local]`): worker processes warden launches itself. `None` (the
    /// default) unless at least one group is configured.
    pub local: Option<warden_runtime::LocalSettings>,
    /// The Kubernetes runtime (`--kubernetes`): workers in pods. `None` (the default) unless
    /// turned on; one runtime per warden, so not with `[local]` groups.
    pub kubernetes: Option<warden_kubernetes::KubernetesConfig>,
    /// Auto-recovery (`[recovery]`): off unless groups are opted in.
    pub recovery: crate::recovery::RecoverySettings,
    /// Health checks, thresholds and overrides (`[health]`).
    pub health: warden_health::HealthConfig,
    /// Alert rules, routing, inhibition, grace, escalation (`[alerts]`): the built-in rules
    /// with their defaults unless changed.
    pub alerts: warden_alerts::AlertsConfig,
    /// Notification receivers and retries (`[notify]`): none by default (alerts are listed,
    /// not sent).
    pub notify: warden_notify::NotifyConfig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            broker_url: Secret::new(DEFAULT_BROKER_URL),
            broker_timeout: DEFAULT_BROKER_TIMEOUT,
            global_keyprefix: String::new(),
            grpc_addr: DEFAULT_GRPC_ADDR.parse().expect("valid default"),
            http_addr: DEFAULT_HTTP_ADDR.parse().expect("valid default"),
            inspect_interval: DEFAULT_INSPECT_INTERVAL,
            inspect_timeout: DEFAULT_INSPECT_TIMEOUT,
            queue_poll_interval: DEFAULT_QUEUE_POLL_INTERVAL,
            heartbeat_warning: DEFAULT_HEARTBEAT_WARNING,
            heartbeat_critical: DEFAULT_HEARTBEAT_CRITICAL,
            enable_events: DEFAULT_ENABLE_EVENTS,
            max_workers: DEFAULT_MAX_WORKERS,
            watch_bookmark_interval: DEFAULT_WATCH_BOOKMARK_INTERVAL,
            database_url: Secret::new(DEFAULT_DATABASE_URL),
            no_migrate: false,
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
            history_buffer_rows: DEFAULT_HISTORY_BUFFER_ROWS,
            retention_samples: DEFAULT_RETENTION_SAMPLES,
            retention_events: DEFAULT_RETENTION_EVENTS,
            retention_tables: Vec::new(),
            log_format: LogFormat::Pretty,
            log_level: DEFAULT_LOG_LEVEL.to_string(),
            insecure: false,
            tokens: Vec::new(),
            tls: None,
            streams: Vec::new(),
            streams_redis: None,
            streams_heartbeat_prefix: DEFAULT_STREAMS_HEARTBEAT_PREFIX.to_string(),
            streams_shutdown_prefix: DEFAULT_STREAMS_SHUTDOWN_PREFIX.to_string(),
            streams_poll_interval: DEFAULT_STREAMS_POLL_INTERVAL,
            streams_janitor_interval: DEFAULT_STREAMS_JANITOR_INTERVAL,
            streams_consumer_idle: DEFAULT_STREAMS_CONSUMER_IDLE,
            streams_auto_reclaim: false,
            metrics_task_hostname: DEFAULT_METRICS_TASK_HOSTNAME,
            metrics_gone_after: DEFAULT_METRICS_GONE_AFTER,
            prometheus_url: None,
            prometheus_timeout: DEFAULT_PROMETHEUS_TIMEOUT,
            prometheus_bearer_token: None,
            prometheus_username: None,
            prometheus_password: None,
            prometheus_query_cpu: DEFAULT_PROMETHEUS_QUERY_CPU.to_string(),
            prometheus_query_memory: DEFAULT_PROMETHEUS_QUERY_MEMORY.to_string(),
            prometheus_query_memory_limit: DEFAULT_PROMETHEUS_QUERY_MEMORY_LIMIT.to_string(),
            prometheus_query_gpu_util: DEFAULT_PROMETHEUS_QUERY_GPU_UTIL.to_string(),
            prometheus_query_gpu_memory: DEFAULT_PROMETHEUS_QUERY_GPU_MEMORY.to_string(),
            prometheus_query_disk: DEFAULT_PROMETHEUS_QUERY_DISK.to_string(),
            resource_interval: DEFAULT_RESOURCE_INTERVAL,
            local: None,
            kubernetes: None,
            recovery: crate::recovery::RecoverySettings::default(),
            health: warden_health::HealthConfig::default(),
            alerts: warden_alerts::AlertsConfig::default(),
            notify: warden_notify::NotifyConfig::default(),
        }
    }
}

/// `warden serve` flags. Each flag also reads its `WARDEN_*` variable; unset ones fall back to
/// the config file, then to the default shown.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file (keys as in warden.example.toml).
    #[arg(long, env = "WARDEN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Redis broker URL; db index, password and rediss:// are honoured [default: redis://127.0.0.1:6379/0]
    #[arg(
        long = "broker",
        env = "WARDEN_BROKER_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub broker_url: Option<String>,
    /// Connect and command timeout for broker calls [default: 5s]
    #[arg(long, env = "WARDEN_BROKER_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub broker_timeout: Option<Duration>,
    /// kombu global_keyprefix transport option of the workers [default: none]
    #[arg(long, env = "WARDEN_GLOBAL_KEYPREFIX", value_name = "PREFIX")]
    pub global_keyprefix: Option<String>,
    /// gRPC listen address [default: 127.0.0.1:50051]
    #[arg(long, env = "WARDEN_GRPC_ADDR", value_name = "ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP address for /healthz, /readyz and /metrics [default: 127.0.0.1:50052]
    #[arg(long, env = "WARDEN_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// How often to inspect the workers [default: 30s]
    #[arg(long, env = "WARDEN_INSPECT_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub inspect_interval: Option<Duration>,
    /// How long to gather inspect replies [default: 1s]
    #[arg(long, env = "WARDEN_INSPECT_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub inspect_timeout: Option<Duration>,
    /// How often to measure queue depths [default: 2s]
    #[arg(long, env = "WARDEN_QUEUE_POLL_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub queue_poll_interval: Option<Duration>,
    /// Heartbeat lateness that makes a worker UNRESPONSIVE [default: 30s]
    #[arg(long, env = "WARDEN_HEARTBEAT_WARNING", value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_warning: Option<Duration>,
    /// Heartbeat lateness that makes a worker LOST [default: 60s]
    #[arg(long, env = "WARDEN_HEARTBEAT_CRITICAL", value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_critical: Option<Duration>,
    /// Ask workers to send task events (enable_events broadcast) [default: true]
    #[arg(long, env = "WARDEN_ENABLE_EVENTS", value_name = "BOOL")]
    pub enable_events: Option<bool>,
    /// Most workers known at once; new ones beyond it are refused and counted [default: 50000]
    #[arg(long, env = "WARDEN_MAX_WORKERS", value_name = "COUNT")]
    pub max_workers: Option<usize>,
    /// Time between WatchFleet bookmarks on a quiet stream [default: 15s]
    #[arg(long, env = "WARDEN_WATCH_BOOKMARK_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub watch_bookmark_interval: Option<Duration>,
    /// History store: sqlite://PATH (embedded), postgres://USER:PASSWORD@HOST/DB, or `none` [default: sqlite://warden.db]
    #[arg(
        long,
        env = "WARDEN_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Do not apply pending database migrations at start (see `warden migrate`) [default: false]
    #[arg(long, env = "WARDEN_NO_MIGRATE")]
    pub no_migrate: bool,
    /// How often workers, queues and groups are sampled into history [default: 30s]
    #[arg(long, env = "WARDEN_SAMPLE_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub sample_interval: Option<Duration>,
    /// Most history rows held while the store is down; the oldest are dropped beyond it [default: 500000]
    #[arg(long, env = "WARDEN_HISTORY_BUFFER_ROWS", value_name = "ROWS")]
    pub history_buffer_rows: Option<usize>,
    /// How long samples are kept [default: 7d]
    #[arg(long, env = "WARDEN_RETENTION_SAMPLES", value_name = "DURATION", value_parser = parse_duration)]
    pub retention_samples: Option<Duration>,
    /// How long events are kept [default: 30d]
    #[arg(long, env = "WARDEN_RETENTION_EVENTS", value_name = "DURATION", value_parser = parse_duration)]
    pub retention_events: Option<Duration>,
    /// Per-table retention, comma-separated `TABLE:keep=DURATION:max_rows=N` (either setting
    /// may be left out); tables: worker_samples, queue_samples, group_samples, events. A row
    /// cap deletes the oldest sampling ticks beyond it [default: none]
    #[arg(
        long,
        env = "WARDEN_RETENTION_TABLES",
        value_name = "TABLE:SETTINGS",
        value_delimiter = ',',
        value_parser = parse_table_retention
    )]
    pub retention_tables: Option<Vec<warden_core::history::TableRetention>>,
    /// Log format [default: pretty]
    #[arg(long, env = "WARDEN_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, RUST_LOG syntax (e.g. `info,warden=debug`) [default: info]
    #[arg(long, env = "WARDEN_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Allow listening on a non-loopback address without tokens [default: false]
    #[arg(long, env = "WARDEN_INSECURE")]
    pub insecure: bool,
    /// File of bearer tokens, one `name:role:token` per line (roles: viewer, operator, admin).
    /// Tokens may also come from WARDEN_TOKENS (same entries, comma-separated) [default: none]
    #[arg(long, env = "WARDEN_TOKENS_FILE", value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// PEM certificate chain; enables TLS on the gRPC port (with --tls-key) [default: none]
    #[arg(long, env = "WARDEN_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert [default: none]
    #[arg(long, env = "WARDEN_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Redis Streams to watch, comma-separated names or globs; none turns the Streams backend off [default: none]
    #[arg(
        long,
        env = "WARDEN_STREAMS",
        value_name = "STREAMS",
        value_delimiter = ','
    )]
    pub streams: Option<Vec<String>>,
    /// Redis holding the streams [default: the broker URL]
    #[arg(
        long,
        env = "WARDEN_STREAMS_REDIS",
        value_name = "URL",
        hide_env_values = true
    )]
    pub streams_redis: Option<String>,
    /// Heartbeat keys of Streams workers are PREFIX{stream}:{consumer} [default: worker:heartbeat:]
    #[arg(long, env = "WARDEN_STREAMS_HEARTBEAT_PREFIX", value_name = "PREFIX")]
    pub streams_heartbeat_prefix: Option<String>,
    /// Shutdown markers of Streams workers are PREFIX{stream}:{consumer} [default: worker:shutdown:]
    #[arg(long, env = "WARDEN_STREAMS_SHUTDOWN_PREFIX", value_name = "PREFIX")]
    pub streams_shutdown_prefix: Option<String>,
    /// How often to poll the streams, their groups, consumers and heartbeats [default: 3s]
    #[arg(long, env = "WARDEN_STREAMS_POLL_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub streams_poll_interval: Option<Duration>,
    /// How often the Streams janitor trims streams (XTRIM MINID at the oldest entry any group needs) and deletes stale consumers; 0s turns it off [default: 5m]
    #[arg(long, env = "WARDEN_STREAMS_JANITOR_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub streams_janitor_interval: Option<Duration>,
    /// The janitor deletes a consumer with no heartbeat, no pending entries and idle this long [default: 1h]
    #[arg(long, env = "WARDEN_STREAMS_CONSUMER_IDLE", value_name = "DURATION", value_parser = parse_duration)]
    pub streams_consumer_idle: Option<Duration>,
    /// Every 10 s, move the pending entries of dead consumers (idle 30 s) to a live consumer in every watched group [default: false]
    #[arg(long, env = "WARDEN_STREAMS_AUTO_RECLAIM", value_name = "BOOL")]
    pub streams_auto_reclaim: Option<bool>,
    /// Label /metrics task series with the worker's hostname; false sums them per task name [default: true]
    #[arg(long, env = "WARDEN_METRICS_TASK_HOSTNAME", value_name = "BOOL")]
    pub metrics_task_hostname: Option<bool>,
    /// Workers gone (not alive) for longer than this leave /metrics [default: 10m]
    #[arg(long, env = "WARDEN_METRICS_GONE_AFTER", value_name = "DURATION", value_parser = parse_duration)]
    pub metrics_gone_after: Option<Duration>,
    /// Prometheus to read worker CPU and memory from (http:// or https://); none turns resource figures off [default: none]
    #[arg(
        long,
        env = "WARDEN_PROMETHEUS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub prometheus_url: Option<String>,
    /// Timeout of each Prometheus query [default: 5s]
    #[arg(long, env = "WARDEN_PROMETHEUS_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub prometheus_timeout: Option<Duration>,
    /// Bearer token for Prometheus [default: none]
    #[arg(
        long,
        env = "WARDEN_PROMETHEUS_BEARER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub prometheus_bearer_token: Option<String>,
    /// Basic-auth user for Prometheus, with --prometheus-password [default: none]
    #[arg(long, env = "WARDEN_PROMETHEUS_USERNAME", value_name = "USER")]
    pub prometheus_username: Option<String>,
    /// Basic-auth password for Prometheus [default: none]
    #[arg(
        long,
        env = "WARDEN_PROMETHEUS_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub prometheus_password: Option<String>,
    /// PromQL giving CPU % by pod; {pods} is a regex of the fleet's pods; empty turns it off [default: cAdvisor's container_cpu_usage_seconds_total rate]
    #[arg(long, env = "WARDEN_PROMETHEUS_QUERY_CPU", value_name = "PROMQL")]
    pub prometheus_query_cpu: Option<String>,
    /// PromQL giving memory bytes by pod [default: cAdvisor's container_memory_working_set_bytes]
    #[arg(long, env = "WARDEN_PROMETHEUS_QUERY_MEMORY", value_name = "PROMQL")]
    pub prometheus_query_memory: Option<String>,
    /// PromQL giving the memory limit bytes by pod [default: cAdvisor's container_spec_memory_limit_bytes]
    #[arg(
        long,
        env = "WARDEN_PROMETHEUS_QUERY_MEMORY_LIMIT",
        value_name = "PROMQL"
    )]
    pub prometheus_query_memory_limit: Option<String>,
    /// PromQL giving GPU utilisation % by pod [default: DCGM's DCGM_FI_DEV_GPU_UTIL]
    #[arg(long, env = "WARDEN_PROMETHEUS_QUERY_GPU_UTIL", value_name = "PROMQL")]
    pub prometheus_query_gpu_util: Option<String>,
    /// PromQL giving GPU memory % by pod [default: DCGM's framebuffer used / (used + free)]
    #[arg(
        long,
        env = "WARDEN_PROMETHEUS_QUERY_GPU_MEMORY",
        value_name = "PROMQL"
    )]
    pub prometheus_query_gpu_memory: Option<String>,
    /// PromQL giving disk % by pod [default: cAdvisor's container_fs_usage_bytes / container_fs_limit_bytes]
    #[arg(long, env = "WARDEN_PROMETHEUS_QUERY_DISK", value_name = "PROMQL")]
    pub prometheus_query_disk: Option<String>,
    /// How often worker resource figures are collected [default: 15s]
    #[arg(long, env = "WARDEN_RESOURCE_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub resource_interval: Option<Duration>,
    /// Turn the Kubernetes runtime on: workers run in pods (not with [local] groups) [default: false]
    #[arg(long, env = "WARDEN_KUBERNETES")]
    pub kubernetes: bool,
    /// kubeconfig file of the Kubernetes runtime [default: $KUBECONFIG, ~/.kube/config, else in-cluster]
    #[arg(long, env = "WARDEN_KUBERNETES_KUBECONFIG", value_name = "FILE")]
    pub kubernetes_kubeconfig: Option<PathBuf>,
    /// kubeconfig context [default: its current context]
    #[arg(long, env = "WARDEN_KUBERNETES_CONTEXT", value_name = "CONTEXT")]
    pub kubernetes_context: Option<String>,
    /// Namespace of the worker pods [default: the context's namespace (in-cluster: the service account's), else default]
    #[arg(long, env = "WARDEN_KUBERNETES_NAMESPACE", value_name = "NAMESPACE")]
    pub kubernetes_namespace: Option<String>,
    /// Label selector of the worker pods; empty = every pod in the namespace [default: ""]
    #[arg(long, env = "WARDEN_KUBERNETES_SELECTOR", value_name = "SELECTOR")]
    pub kubernetes_selector: Option<String>,
    /// How a worker id names its pod: hostname, label:KEY or annotation:KEY [default: hostname]
    #[arg(long, env = "WARDEN_KUBERNETES_POD_MAPPING", value_name = "MAPPING")]
    pub kubernetes_pod_mapping: Option<String>,
    /// The worker's container in its pod [default: the pod's first container]
    #[arg(long, env = "WARDEN_KUBERNETES_CONTAINER", value_name = "NAME")]
    pub kubernetes_container: Option<String>,
    /// Grace period of a pod restart when the caller names none [default: 30s]
    #[arg(long, env = "WARDEN_KUBERNETES_GRACE", value_name = "DURATION", value_parser = parse_duration)]
    pub kubernetes_grace: Option<Duration>,
    /// Limit on every Kubernetes API call [default: 10s]
    #[arg(long, env = "WARDEN_KUBERNETES_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub kubernetes_timeout: Option<Duration>,
}

/// One `TABLE:keep=DURATION:max_rows=N` entry of `--retention-tables`.
fn parse_table_retention(s: &str) -> Result<warden_core::history::TableRetention, String> {
    use warden_core::history::{RETAINED_TABLES, TableRetention};
    let mut parts = s.trim().split(':');
    let table = parts.next().unwrap_or_default().trim();
    if !RETAINED_TABLES.contains(&table) {
        return Err(format!(
            "unknown table {table:?} (one of {})",
            RETAINED_TABLES.join(", ")
        ));
    }
    let mut out = TableRetention {
        table: table.to_owned(),
        keep: None,
        max_rows: None,
    };
    for setting in parts {
        match setting.trim().split_once('=') {
            Some(("keep", v)) => {
                let keep = parse_duration(v.trim())?;
                if keep.is_zero() {
                    return Err(format!("{table}: keep must be greater than zero"));
                }
                out.keep = Some(keep);
            }
            Some(("max_rows", v)) => {
                let rows: u64 = v
                    .trim()
                    .parse()
                    .map_err(|e| format!("{table}: max_rows {v:?}: {e}"))?;
                if rows == 0 {
                    return Err(format!("{table}: max_rows must be greater than zero"));
                }
                out.max_rows = Some(rows);
            }
            _ => {
                return Err(format!(
                    "{table}: unknown setting {setting:?} (keep=DURATION or max_rows=N)"
                ));
            }
        }
    }
    if out.keep.is_none() && out.max_rows.is_none() {
        return Err(format!("{table}: give keep=DURATION, max_rows=N or both"));
    }
    Ok(out)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 2s, 1m30s)"))
}

/// The TOML file: the same keys as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    broker_url: Option<String>,
    broker_timeout: Option<String>,
    global_keyprefix: Option<String>,
    grpc_addr: Option<String>,
    http_addr: Option<String>,
    inspect_interval: Option<String>,
    inspect_timeout: Option<String>,
    queue_poll_interval: Option<String>,
    heartbeat_warning: Option<String>,
    heartbeat_critical: Option<String>,
    enable_events: Option<bool>,
    max_workers: Option<usize>,
    watch_bookmark_interval: Option<String>,
    database_url: Option<String>,
    no_migrate: Option<bool>,
    sample_interval: Option<String>,
    history_buffer_rows: Option<usize>,
    retention_samples: Option<String>,
    retention_events: Option<String>,
    retention_tables: Option<Vec<String>>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    insecure: Option<bool>,
    tokens_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    streams: Option<Vec<String>>,
    streams_redis: Option<String>,
    streams_heartbeat_prefix: Option<String>,
    streams_shutdown_prefix: Option<String>,
    streams_poll_interval: Option<String>,
    streams_janitor_interval: Option<String>,
    streams_consumer_idle: Option<String>,
    streams_auto_reclaim: Option<bool>,
    metrics_task_hostname: Option<bool>,
    metrics_gone_after: Option<String>,
    prometheus_url: Option<String>,
    prometheus_timeout: Option<String>,
    prometheus_bearer_token: Option<String>,
    prometheus_username: Option<String>,
    prometheus_password: Option<String>,
    prometheus_query_cpu: Option<String>,
    prometheus_query_memory: Option<String>,
    prometheus_query_memory_limit: Option<String>,
    prometheus_query_gpu_util: Option<String>,
    prometheus_query_gpu_memory: Option<String>,
    prometheus_query_disk: Option<String>,
    resource_interval: Option<String>,
    local: Option<LocalFile>,
    recovery: Option<RecoveryFile>,
    health: Option<warden_health::HealthConfig>,
    alerts: Option<warden_alerts::AlertsConfig>,
    notify: Option<warden_notify::NotifyConfig>,
    kubernetes: Option<bool>,
    kubernetes_kubeconfig: Option<PathBuf>,
    kubernetes_context: Option<String>,
    kubernetes_namespace: Option<String>,
    kubernetes_selector: Option<String>,
    kubernetes_pod_mapping: Option<String>,
    kubernetes_container: Option<String>,
    kubernetes_grace: Option<String>,
    kubernetes_timeout: Option<String>,
}

/// The `kubernetes*` keys one layer (file, or flags and environment) gives. The runtime is on
/// when any layer turns it on, and then takes every layer's values, so a file may hold the
/// settings and `--kubernetes` turn them on.
#[derive(Debug, Default, Clone)]
struct KubernetesLayer {
    enabled: Option<bool>,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    namespace: Option<String>,
    selector: Option<String>,
    pod_mapping: Option<String>,
    container: Option<String>,
    grace: Option<Duration>,
    timeout: Option<Duration>,
}

impl KubernetesLayer {
    fn from_file(f: &FileConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            enabled: f.kubernetes,
            kubeconfig: f.kubernetes_kubeconfig.clone(),
            context: f.kubernetes_context.clone(),
            namespace: f.kubernetes_namespace.clone(),
            selector: f.kubernetes_selector.clone(),
            pod_mapping: f.kubernetes_pod_mapping.clone(),
            container: f.kubernetes_container.clone(),
            grace: file_duration("kubernetes_grace", f.kubernetes_grace.clone())?,
            timeout: file_duration("kubernetes_timeout", f.kubernetes_timeout.clone())?,
        })
    }

    fn from_args(a: &ServeArgs) -> Self {
        Self {
            // A switch: absent means "not said here", so a file's `kubernetes = true` stands.
            enabled: a.kubernetes.then_some(true),
            kubeconfig: a.kubernetes_kubeconfig.clone(),
            context: a.kubernetes_context.clone(),
            namespace: a.kubernetes_namespace.clone(),
            selector: a.kubernetes_selector.clone(),
            pod_mapping: a.kubernetes_pod_mapping.clone(),
            container: a.kubernetes_container.clone(),
            grace: a.kubernetes_grace,
            timeout: a.kubernetes_timeout,
        }
    }

    /// `self` with `over`'s values on top.
    fn under(self, over: Self) -> Self {
        Self {
            enabled: over.enabled.or(self.enabled),
            kubeconfig: over.kubeconfig.or(self.kubeconfig),
            context: over.context.or(self.context),
            namespace: over.namespace.or(self.namespace),
            selector: over.selector.or(self.selector),
            pod_mapping: over.pod_mapping.or(self.pod_mapping),
            container: over.container.or(self.container),
            grace: over.grace.or(self.grace),
            timeout: over.timeout.or(self.timeout),
        }
    }

    /// The runtime's settings, or `None` when it is not turned on. Empty strings mean unset.
    fn settings(self) -> Result<Option<warden_kubernetes::KubernetesConfig>, ConfigError> {
        if self.enabled != Some(true) {
            return Ok(None);
        }
        let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let mapping = self
            .pod_mapping
            .as_deref()
            .unwrap_or(DEFAULT_KUBERNETES_POD_MAPPING);
        let mapping = mapping
            .trim()
            .parse::<warden_kubernetes::PodMapping>()
            .map_err(|e| invalid("kubernetes_pod_mapping", mapping, e))?;
        Ok(Some(warden_kubernetes::KubernetesConfig {
            kubeconfig: self.kubeconfig.filter(|p| !p.as_os_str().is_empty()),
            context: non_empty(self.context),
            namespace: non_empty(self.namespace),
            selector: self.selector.unwrap_or_default().trim().to_owned(),
            mapping,
            container: non_empty(self.container),
            grace: self.grace.unwrap_or(DEFAULT_KUBERNETES_GRACE),
            call_timeout: self.timeout.unwrap_or(DEFAULT_KUBERNETES_TIMEOUT),
        }))
    }
}

/// `[recovery]`: auto-recovery. Only in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoveryFile {
    #[serde(default)]
    groups: Vec<String>,
    after_critical_checks: Option<u32>,
    max_per_worker: Option<u32>,
    max_fleet: Option<u32>,
    startup_grace: Option<String>,
    interval: Option<String>,
    cooldown: Option<String>,
    restart_lost: Option<bool>,
    max_unavailable_per_group: Option<u32>,
}

impl RecoveryFile {
    fn settings(self) -> Result<crate::recovery::RecoverySettings, ConfigError> {
        let mut s = crate::recovery::RecoverySettings {
            groups: self.groups,
            ..Default::default()
        };
        for g in &s.groups {
            globset::Glob::new(g).map_err(|e| invalid("recovery.groups", g, e.kind()))?;
        }
        set(&mut s.after_critical_checks, self.after_critical_checks);
        set(&mut s.max_per_worker, self.max_per_worker);
        set(&mut s.max_fleet, self.max_fleet);
        if s.after_critical_checks == 0 {
            return Err(invalid(
                "recovery.after_critical_checks",
                0,
                "must be at least 1",
            ));
        }
        set(
            &mut s.startup_grace,
            file_duration("recovery.startup_grace", self.startup_grace)?,
        );
        set(
            &mut s.interval,
            file_duration("recovery.interval", self.interval)?,
        );
        if s.interval.is_zero() {
            return Err(invalid("recovery.interval", "0s", "must be more than 0"));
        }
        set(
            &mut s.cooldown,
            file_duration("recovery.cooldown", self.cooldown)?,
        );
        set(&mut s.restart_lost, self.restart_lost);
        set(
            &mut s.max_unavailable_per_group,
            self.max_unavailable_per_group,
        );
        if s.max_unavailable_per_group == 0 {
            return Err(invalid(
                "recovery.max_unavailable_per_group",
                0,
                "must be at least 1",
            ));
        }
        Ok(s)
    }
}

/// `[local]`: the local runtime. Only in the file (groups do not fit in flags).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalFile {
    log_dir: Option<PathBuf>,
    log_file_bytes: Option<u64>,
    log_files: Option<u32>,
    stop_grace: Option<String>,
    backoff_initial: Option<String>,
    backoff_max: Option<String>,
    sample_interval: Option<String>,
    #[serde(default)]
    groups: Vec<warden_runtime::GroupSpec>,
}

impl LocalFile {
    /// The runtime's settings, or `None` when no group is configured.
    fn settings(self) -> Result<Option<warden_runtime::LocalSettings>, ConfigError> {
        if self.groups.is_empty() {
            return Ok(None);
        }
        let mut s = warden_runtime::LocalSettings {
            groups: self.groups,
            ..Default::default()
        };
        set(&mut s.log_dir, self.log_dir);
        set(&mut s.log_file_bytes, self.log_file_bytes);
        set(&mut s.log_files, self.log_files);
        set(
            &mut s.stop_grace,
            file_duration("local.stop_grace", self.stop_grace)?,
        );
        set(
            &mut s.backoff_initial,
            file_duration("local.backoff_initial", self.backoff_initial)?,
        );
        set(
            &mut s.backoff_max,
            file_duration("local.backoff_max", self.backoff_max)?,
        );
        set(
            &mut s.sample_interval,
            file_duration("local.sample_interval", self.sample_interval)?,
        );
        s.validate()
            .map_err(|(key, reason)| invalid("local", key, reason))?;
        Ok(Some(s))
    }
}

/// Stream names or globs, trimmed, empty entries dropped.
fn clean_streams(streams: Vec<String>) -> Vec<String> {
    streams
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn file_duration(
    key: &'static str,
    value: Option<String>,
) -> Result<Option<Duration>, ConfigError> {
    value
        .map(|v| parse_duration(&v).map_err(|e| invalid(key, &v, e)))
        .transpose()
}

fn file_addr(key: &'static str, value: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    value
        .map(|v| v.parse().map_err(|e| invalid(key, &v, e)))
        .transpose()
}

impl Config {
    /// Builds the configuration from flags/env (already merged by clap), the file they name,
    /// and the `WARDEN_TOKENS` variable, then validates it.
    pub fn load(args: &ServeArgs, tokens_env: Option<&str>) -> Result<Config, ConfigError> {
        let mut file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let tokens_file = args.tokens_file.clone().or(file.tokens_file.take());
        let kubernetes = KubernetesLayer::from_file(&file)?;
        let mut config = Config::default();
        config.apply_file(file)?;
        config.apply_args(args);
        config.kubernetes = kubernetes
            .under(KubernetesLayer::from_args(args))
            .settings()?;
        if let Some(path) = tokens_file {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            config.tokens.extend(parse_tokens(&text, "tokens_file")?);
        }
        if let Some(text) = tokens_env {
            config.tokens.extend(parse_tokens(text, "WARDEN_TOKENS")?);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document over the defaults (used by `load` and by tests of the example).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::File {
            path: PathBuf::from("<toml>"),
            reason: e.to_string(),
        })?;
        let mut config = Config::default();
        config.apply_file(file)?;
        Ok(config)
    }

    fn apply_file(&mut self, f: FileConfig) -> Result<(), ConfigError> {
        let kubernetes = KubernetesLayer::from_file(&f)?;
        if let Some(v) = f.broker_url {
            self.broker_url = Secret::new(v);
        }
        set(
            &mut self.broker_timeout,
            file_duration("broker_timeout", f.broker_timeout)?,
        );
        set(&mut self.global_keyprefix, f.global_keyprefix);
        set(&mut self.grpc_addr, file_addr("grpc_addr", f.grpc_addr)?);
        set(&mut self.http_addr, file_addr("http_addr", f.http_addr)?);
        set(
            &mut self.inspect_interval,
            file_duration("inspect_interval", f.inspect_interval)?,
        );
        set(
            &mut self.inspect_timeout,
            file_duration("inspect_timeout", f.inspect_timeout)?,
        );
        set(
            &mut self.queue_poll_interval,
            file_duration("queue_poll_interval", f.queue_poll_interval)?,
        );
        set(
            &mut self.heartbeat_warning,
            file_duration("heartbeat_warning", f.heartbeat_warning)?,
        );
        set(
            &mut self.heartbeat_critical,
            file_duration("heartbeat_critical", f.heartbeat_critical)?,
        );
        set(&mut self.enable_events, f.enable_events);
        set(&mut self.max_workers, f.max_workers);
        set(
            &mut self.watch_bookmark_interval,
            file_duration("watch_bookmark_interval", f.watch_bookmark_interval)?,
        );
        if let Some(v) = f.database_url {
            self.database_url = Secret::new(v);
        }
        set(&mut self.no_migrate, f.no_migrate);
        set(
            &mut self.sample_interval,
            file_duration("sample_interval", f.sample_interval)?,
        );
        set(&mut self.history_buffer_rows, f.history_buffer_rows);
        set(
            &mut self.retention_samples,
            file_duration("retention_samples", f.retention_samples)?,
        );
        set(
            &mut self.retention_events,
            file_duration("retention_events", f.retention_events)?,
        );
        if let Some(entries) = f.retention_tables {
            self.retention_tables = entries
                .iter()
                .map(|e| {
                    parse_table_retention(e).map_err(|why| invalid("retention_tables", e, why))
                })
                .collect::<Result<_, _>>()?;
        }
        set(&mut self.log_format, f.log_format);
        set(&mut self.log_level, f.log_level);
        set(&mut self.insecure, f.insecure);
        self.tls = tls_files(f.tls_cert, f.tls_key, self.tls.take());
        set(&mut self.streams, f.streams.map(clean_streams));
        if let Some(v) = f.streams_redis {
            self.streams_redis = Some(Secret::new(v));
        }
        set(
            &mut self.streams_heartbeat_prefix,
            f.streams_heartbeat_prefix,
        );
        set(&mut self.streams_shutdown_prefix, f.streams_shutdown_prefix);
        set(
            &mut self.streams_poll_interval,
            file_duration("streams_poll_interval", f.streams_poll_interval)?,
        );
        set(
            &mut self.streams_janitor_interval,
            file_duration("streams_janitor_interval", f.streams_janitor_interval)?,
        );
        set(
            &mut self.streams_consumer_idle,
            file_duration("streams_consumer_idle", f.streams_consumer_idle)?,
        );
        set(&mut self.streams_auto_reclaim, f.streams_auto_reclaim);
        set(&mut self.metrics_task_hostname, f.metrics_task_hostname);
        set(
            &mut self.metrics_gone_after,
            file_duration("metrics_gone_after", f.metrics_gone_after)?,
        );
        set_secret(&mut self.prometheus_url, f.prometheus_url);
        set(
            &mut self.prometheus_timeout,
            file_duration("prometheus_timeout", f.prometheus_timeout)?,
        );
        set_secret(&mut self.prometheus_bearer_token, f.prometheus_bearer_token);
        if f.prometheus_username.is_some() {
            self.prometheus_username = f.prometheus_username;
        }
        set_secret(&mut self.prometheus_password, f.prometheus_password);
        set(&mut self.prometheus_query_cpu, f.prometheus_query_cpu);
        set(&mut self.prometheus_query_memory, f.prometheus_query_memory);
        set(
            &mut self.prometheus_query_memory_limit,
            f.prometheus_query_memory_limit,
        );
        set(
            &mut self.prometheus_query_gpu_util,
            f.prometheus_query_gpu_util,
        );
        set(
            &mut self.prometheus_query_gpu_memory,
            f.prometheus_query_gpu_memory,
        );
        set(&mut self.prometheus_query_disk, f.prometheus_query_disk);
        set(
            &mut self.resource_interval,
            file_duration("resource_interval", f.resource_interval)?,
        );
        self.kubernetes = kubernetes.settings()?;
        if let Some(local) = f.local {
            self.local = local.settings()?;
        }
        if let Some(recovery) = f.recovery {
            self.recovery = recovery.settings()?;
        }
        if let Some(health) = f.health {
            health.validate().map_err(|e| invalid("health", "", e))?;
            self.health = health;
        }
        if let Some(alerts) = f.alerts {
            self.alerts = alerts;
        }
        if let Some(notify) = f.notify {
            self.notify = notify;
        }
        Ok(())
    }

    fn apply_args(&mut self, a: &ServeArgs) {
        if let Some(v) = &a.broker_url {
            self.broker_url = Secret::new(v.clone());
        }
        set(&mut self.broker_timeout, a.broker_timeout);
        set(&mut self.global_keyprefix, a.global_keyprefix.clone());
        set(&mut self.grpc_addr, a.grpc_addr);
        set(&mut self.http_addr, a.http_addr);
        set(&mut self.inspect_interval, a.inspect_interval);
        set(&mut self.inspect_timeout, a.inspect_timeout);
        set(&mut self.queue_poll_interval, a.queue_poll_interval);
        set(&mut self.heartbeat_warning, a.heartbeat_warning);
        set(&mut self.heartbeat_critical, a.heartbeat_critical);
        set(&mut self.enable_events, a.enable_events);
        set(&mut self.max_workers, a.max_workers);
        set(&mut self.watch_bookmark_interval, a.watch_bookmark_interval);
        if let Some(v) = &a.database_url {
            self.database_url = Secret::new(v.clone());
        }
        self.no_migrate |= a.no_migrate;
        set(&mut self.sample_interval, a.sample_interval);
        set(&mut self.history_buffer_rows, a.history_buffer_rows);
        set(&mut self.retention_samples, a.retention_samples);
        set(&mut self.retention_events, a.retention_events);
        set(&mut self.retention_tables, a.retention_tables.clone());
        set(&mut self.log_format, a.log_format);
        set(&mut self.log_level, a.log_level.clone());
        self.insecure |= a.insecure;
        self.tls = tls_files(a.tls_cert.clone(), a.tls_key.clone(), self.tls.take());
        set(&mut self.streams, a.streams.clone().map(clean_streams));
        if let Some(v) = &a.streams_redis {
            self.streams_redis = Some(Secret::new(v.clone()));
        }
        set(
            &mut self.streams_heartbeat_prefix,
            a.streams_heartbeat_prefix.clone(),
        );
        set(
            &mut self.streams_shutdown_prefix,
            a.streams_shutdown_prefix.clone(),
        );
        set(&mut self.streams_poll_interval, a.streams_poll_interval);
        set(
            &mut self.streams_janitor_interval,
            a.streams_janitor_interval,
        );
        set(&mut self.streams_consumer_idle, a.streams_consumer_idle);
        set(&mut self.streams_auto_reclaim, a.streams_auto_reclaim);
        set(&mut self.metrics_task_hostname, a.metrics_task_hostname);
        set(&mut self.metrics_gone_after, a.metrics_gone_after);
        set_secret(&mut self.prometheus_url, a.prometheus_url.clone());
        set(&mut self.prometheus_timeout, a.prometheus_timeout);
        set_secret(
            &mut self.prometheus_bearer_token,
            a.prometheus_bearer_token.clone(),
        );
        if a.prometheus_username.is_some() {
            self.prometheus_username = a.prometheus_username.clone();
        }
        set_secret(&mut self.prometheus_password, a.prometheus_password.clone());
        set(
            &mut self.prometheus_query_cpu,
            a.prometheus_query_cpu.clone(),
        );
        set(
            &mut self.prometheus_query_memory,
            a.prometheus_query_memory.clone(),
        );
        set(
            &mut self.prometheus_query_memory_limit,
            a.prometheus_query_memory_limit.clone(),
        );
        set(
            &mut self.prometheus_query_gpu_util,
            a.prometheus_query_gpu_util.clone(),
        );
        set(
            &mut self.prometheus_query_gpu_memory,
            a.prometheus_query_gpu_memory.clone(),
        );
        set(
            &mut self.prometheus_query_disk,
            a.prometheus_query_disk.clone(),
        );
        set(&mut self.resource_interval, a.resource_interval);
    }

    /// The health engine's settings: `[health]`, whose heartbeat thresholds follow the
    /// lifecycle's (`heartbeat_warning`, `heartbeat_critical`) unless `[health.defaults]` sets
    /// them, so that a worker LOST after 60 s of silence is judged against those 60 s.
    pub fn health_config(&self) -> warden_health::HealthConfig {
        let mut health = self.health.clone();
        let d = &mut health.defaults;
        if d.heartbeat_warning.is_none() && d.heartbeat_critical.is_none() {
            d.heartbeat_warning = Some(self.heartbeat_warning);
            d.heartbeat_critical = Some(self.heartbeat_critical);
        }
        health
    }

    /// The Prometheus resource source's settings, or `None` when no Prometheus is set.
    pub fn prometheus_settings(&self) -> Option<warden_resources::PrometheusSettings> {
        let url = self.prometheus_url.as_ref()?;
        let auth = match (&self.prometheus_bearer_token, &self.prometheus_username) {
            (Some(token), _) => Some(warden_resources::Auth::Bearer(token.expose().to_string())),
            (None, Some(username)) => Some(warden_resources::Auth::Basic {
                username: username.clone(),
                password: self
                    .prometheus_password
                    .as_ref()
                    .map(|p| p.expose().to_string())
                    .unwrap_or_default(),
            }),
            (None, None) => None,
        };
        Some(warden_resources::PrometheusSettings {
            url: url.expose().to_string(),
            timeout: self.prometheus_timeout,
            auth,
            queries: warden_resources::Queries {
                cpu_percent: self.prometheus_query_cpu.clone(),
                memory_bytes: self.prometheus_query_memory.clone(),
                memory_limit_bytes: self.prometheus_query_memory_limit.clone(),
                gpu_util_percent: self.prometheus_query_gpu_util.clone(),
                gpu_memory_percent: self.prometheus_query_gpu_memory.clone(),
                disk_percent: self.prometheus_query_disk.clone(),
            },
        })
    }

    /// What `/metrics` exports of the fleet.
    pub fn export_options(&self) -> warden_metrics::fleet::ExportOptions {
        warden_metrics::fleet::ExportOptions {
            task_hostname: self.metrics_task_hostname,
            gone_after: self.metrics_gone_after,
        }
    }

    /// The Streams adapter's settings, or `None` when no stream is watched.
    pub fn streams_settings(&self) -> Option<warden_streams::StreamsSettings> {
        if self.streams.is_empty() {
            return None;
        }
        Some(warden_streams::StreamsSettings {
            redis_url: self
                .streams_redis
                .as_ref()
                .unwrap_or(&self.broker_url)
                .expose()
                .to_string(),
            streams: self.streams.clone(),
            heartbeat_prefix: self.streams_heartbeat_prefix.clone(),
            shutdown_prefix: self.streams_shutdown_prefix.clone(),
            poll_interval: self.streams_poll_interval,
            timeout: self.broker_timeout,
            janitor: warden_streams::janitor::JanitorSettings {
                interval: (!self.streams_janitor_interval.is_zero())
                    .then_some(self.streams_janitor_interval),
                consumer_idle: self.streams_consumer_idle,
            },
            auto_reclaim: self.streams_auto_reclaim,
        })
    }

    /// The Celery adapter's broker settings, validated by the adapter itself.
    pub fn broker_settings(&self) -> Result<crate::celery::broker::BrokerSettings, String> {
        crate::celery::broker::BrokerSettings::new(
            self.broker_url.expose(),
            &self.global_keyprefix,
            self.broker_timeout,
        )
    }

    /// Checks what types cannot: relations between values and the security rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.broker_url.expose();
        self.broker_settings()
            .map_err(|e| invalid("broker_url", crate::celery::broker::redact_url(url), e))?;
        for (key, value) in [
            ("broker_timeout", self.broker_timeout),
            ("inspect_interval", self.inspect_interval),
            ("inspect_timeout", self.inspect_timeout),
            ("queue_poll_interval", self.queue_poll_interval),
            ("heartbeat_warning", self.heartbeat_warning),
            ("heartbeat_critical", self.heartbeat_critical),
            ("watch_bookmark_interval", self.watch_bookmark_interval),
            ("sample_interval", self.sample_interval),
            ("retention_samples", self.retention_samples),
            ("retention_events", self.retention_events),
            ("streams_poll_interval", self.streams_poll_interval),
            ("metrics_gone_after", self.metrics_gone_after),
            ("prometheus_timeout", self.prometheus_timeout),
            ("resource_interval", self.resource_interval),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "0s", "must be greater than zero"));
            }
        }
        if let Some(url) = &self.prometheus_url {
            let u = url.expose();
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(invalid(
                    "prometheus_url",
                    crate::celery::broker::redact_url(u),
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if let Some(url) = &self.streams_redis {
            warden_streams::check_url(url.expose()).map_err(|e| {
                invalid(
                    "streams_redis",
                    crate::celery::broker::redact_url(url.expose()),
                    e,
                )
            })?;
        }
        if let Some(k) = &self.kubernetes {
            for (key, value) in [
                ("kubernetes_grace", k.grace),
                ("kubernetes_timeout", k.call_timeout),
            ] {
                if value.is_zero() {
                    return Err(invalid(key, "0s", "must be greater than zero"));
                }
            }
            if self.local.is_some() {
                return Err(invalid(
                    "kubernetes",
                    true,
                    "one runtime per warden: turn the Kubernetes runtime off or remove the [local] groups",
                ));
            }
        }
        if self.recovery.enabled() && self.local.is_none() && self.kubernetes.is_none() {
            return Err(invalid(
                "recovery.groups",
                self.recovery.groups.join(", "),
                "auto-recovery restarts through a runtime: configure [local] groups or turn on `kubernetes`",
            ));
        }
        if self.inspect_timeout >= self.inspect_interval {
            return Err(invalid(
                "inspect_timeout",
                humantime::format_duration(self.inspect_timeout),
                format!(
                    "must be shorter than inspect_interval ({})",
                    humantime::format_duration(self.inspect_interval)
                ),
            ));
        }
        let db = self.database_url.expose();
        if !(db == NO_DATABASE
            || db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                redact_database_url(db),
                "expected sqlite://PATH, postgres://... or none",
            ));
        }
        if self.history_buffer_rows == 0 {
            return Err(invalid("history_buffer_rows", 0, "must be at least 1"));
        }
        if self.max_workers == 0 {
            return Err(invalid("max_workers", 0, "must be at least 1"));
        }
        if self.heartbeat_warning >= self.heartbeat_critical {
            return Err(invalid(
                "heartbeat_warning",
                humantime::format_duration(self.heartbeat_warning),
                format!(
                    "must be shorter than heartbeat_critical ({})",
                    humantime::format_duration(self.heartbeat_critical)
                ),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| invalid("log_level", &self.log_level, e))?;
        if self.tokens.is_empty() && !self.grpc_addr.ip().is_loopback() && !self.insecure {
            return Err(invalid(
                "grpc_addr",
                self.grpc_addr,
                "no tokens are configured, so warden only listens on loopback; \
                 configure tokens (tokens_file / WARDEN_TOKENS) or pass --insecure",
            ));
        }
        if self.tokens.is_empty() && !self.http_addr.ip().is_loopback() && !self.insecure {
            return Err(invalid(
                "http_addr",
                self.http_addr,
                "no tokens are configured, so warden only listens on loopback; pass --insecure",
            ));
        }
        Ok(())
    }
}

/// A database URL with its password hidden, for errors and logs.
pub fn redact_database_url(url: &str) -> String {
    crate::celery::broker::redact_url(url)
}

impl Config {
    /// Whether history is kept at all (`database_url = "none"` turns it off).
    pub fn history_enabled(&self) -> bool {
        self.database_url.expose() != NO_DATABASE
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Sets a secret when the layer gives one (an empty value unsets it).
fn set_secret(slot: &mut Option<Secret>, value: Option<String>) {
    if let Some(v) = value {
        *slot = (!v.is_empty()).then(|| Secret::new(v));
    }
}

fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    previous: Option<TlsFiles>,
) -> Option<TlsFiles> {
    match (cert, key, previous) {
        (Some(cert), Some(key), _) => Some(TlsFiles { cert, key }),
        (Some(cert), None, prev) => Some(TlsFiles {
            cert,
            key: prev.map(|p| p.key).unwrap_or_default(),
        }),
        (None, Some(key), prev) => Some(TlsFiles {
            cert: prev.map(|p| p.cert).unwrap_or_default(),
            key,
        }),
        (None, None, prev) => prev,
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_retention_entries_parse_and_bad_ones_name_what_is_wrong() {
        let t = parse_table_retention("worker_samples:keep=3d:max_rows=5000000").unwrap();
        assert_eq!(t.table, "worker_samples");
        assert_eq!(t.keep, Some(Duration::from_secs(3 * 86_400)));
        assert_eq!(t.max_rows, Some(5_000_000));
        let t = parse_table_retention("events:max_rows=10").unwrap();
        assert_eq!((t.keep, t.max_rows), (None, Some(10)));
        for (entry, says) in [
            ("workers:keep=1d", "unknown table"),
            ("events", "give keep"),
            ("events:max_rows=0", "greater than zero"),
            ("events:keep=0s", "greater than zero"),
            ("events:rows=5", "unknown setting"),
            ("events:max_rows=many", "max_rows"),
        ] {
            let err = parse_table_retention(entry).unwrap_err();
            assert!(err.contains(says), "{entry}: {err}");
        }
    }

    #[test]
    fn tokens_parse_and_never_print_their_secret() {
        let tokens = parse_tokens(
            "# comment\nalice:admin:aaaaaaaaaaaaaaaaaaaa\nbob:viewer:bbbbbbbbbbbbbbbbbbbb",
            "t",
        )
        .unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].role, Role::Admin);
        let printed = format!("{tokens:?}");
        assert!(!printed.contains("aaaaaaaa"), "{printed}");
    }

    #[test]
    fn bad_token_entry_names_the_key_not_the_secret() {
        let err = parse_tokens("carol:root:cccccccccccccccccccc", "WARDEN_TOKENS").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("WARDEN_TOKENS") && text.contains("unknown role"),
            "{text}"
        );
        assert!(!text.contains("cccccccc"), "{text}");
    }

    #[test]
    fn non_loopback_without_tokens_is_refused_unless_insecure() {
        let mut config = Config {
            grpc_addr: "0.0.0.0:50051".parse().unwrap(),
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("grpc_addr") && err.contains("0.0.0.0:50051"),
            "{err}"
        );
        config.insecure = true;
        config.validate().unwrap();
    }

    #[test]
    fn inspect_timeout_must_be_shorter_than_interval() {
        let config = Config {
            inspect_timeout: Duration::from_secs(40),
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("inspect_timeout") && err.contains("40s"),
            "{err}"
        );
    }

    #[test]
    fn file_values_are_overridden_by_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(
            &path,
            "inspect_interval = \"10s\"\ngrpc_addr = \"127.0.0.1:7000\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            grpc_addr: Some("127.0.0.1:7001".parse().unwrap()),
            ..ServeArgs::default()
        };
        let config = Config::load(&args, None).unwrap();
        assert_eq!(config.inspect_interval, Duration::from_secs(10));
        assert_eq!(config.grpc_addr.port(), 7001);
    }

    #[test]
    fn the_example_file_lists_exactly_the_defaults() {
        let text = include_str!("../warden.example.toml");
        assert_eq!(Config::from_toml(text).unwrap(), Config::default());
        // Every key of the file type appears in the example, commented or not.
        for key in [
            "broker_url",
            "broker_timeout",
            "global_keyprefix",
            "grpc_addr",
            "http_addr",
            "inspect_interval",
            "inspect_timeout",
            "queue_poll_interval",
            "heartbeat_warning",
            "heartbeat_critical",
            "enable_events",
            "max_workers",
            "watch_bookmark_interval",
            "database_url",
            "no_migrate",
            "sample_interval",
            "history_buffer_rows",
            "retention_samples",
            "retention_events",
            "retention_tables",
            "log_format",
            "log_level",
            "insecure",
            "tokens_file",
            "tls_cert",
            "tls_key",
            "streams",
            "streams_redis",
            "streams_heartbeat_prefix",
            "streams_shutdown_prefix",
            "streams_poll_interval",
            "streams_janitor_interval",
            "streams_consumer_idle",
            "streams_auto_reclaim",
            "metrics_task_hostname",
            "metrics_gone_after",
            "prometheus_url",
            "prometheus_timeout",
            "prometheus_bearer_token",
            "prometheus_username",
            "prometheus_password",
            "prometheus_query_cpu",
            "prometheus_query_memory",
            "prometheus_query_memory_limit",
            "prometheus_query_gpu_util",
            "prometheus_query_gpu_memory",
            "prometheus_query_disk",
            "resource_interval",
            "kubernetes",
            "kubernetes_kubeconfig",
            "kubernetes_context",
            "kubernetes_namespace",
            "kubernetes_selector",
            "kubernetes_pod_mapping",
            "kubernetes_container",
            "kubernetes_grace",
            "kubernetes_timeout",
        ] {
            assert!(text.contains(&format!("{key} = ")), "example lacks {key}");
            let env = format!("WARDEN_{}", key.to_uppercase());
            let env = if key == "broker_url" {
                "WARDEN_BROKER_URL".to_string()
            } else {
                env
            };
            assert!(text.contains(&env), "example lacks {env}");
        }
    }

    #[test]
    fn local_groups_turn_the_local_runtime_on() {
        assert_eq!(Config::default().local, None);
        let config = Config::from_toml(
            r#"
            [local]
            stop_grace = "3s"
            [[local.groups]]
            name = "default"
            command = "celery"
            args = ["-A", "app", "worker", "-n", "{node}"]
            env = { BROKER = "redis://:secret@h/0" }
            count = 4
            "#,
        )
        .unwrap();
        let local = config.local.unwrap();
        assert_eq!(local.groups[0].count, 4);
        assert_eq!(local.stop_grace, Duration::from_secs(3));
        assert_eq!(
            local.log_dir,
            PathBuf::from(warden_runtime::local::DEFAULT_LOG_DIR)
        );
        let err = Config::from_toml("[local]\n[[local.groups]]\nname = \"x\"\ncommand = \"\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("local.groups[0].command"), "{err}");
    }

    #[test]
    fn streams_are_off_by_default_and_use_the_broker_unless_told() {
        assert!(Config::default().streams_settings().is_none());
        let config = Config::from_toml(
            "broker_url = \"redis://b:6379/2\"\nstreams = [\"orders\", \" jobs:* \", \"\"]\n",
        )
        .unwrap();
        let settings = config.streams_settings().unwrap();
        assert_eq!(settings.streams, ["orders", "jobs:*"]);
        assert_eq!(settings.redis_url, "redis://b:6379/2");
        assert_eq!(settings.heartbeat_prefix, "worker:heartbeat:");
        assert_eq!(settings.poll_interval, Duration::from_secs(3));
        let config =
            Config::from_toml("streams = [\"s\"]\nstreams_redis = \"redis://other:6380/0\"\n")
                .unwrap();
        assert_eq!(
            config.streams_settings().unwrap().redis_url,
            "redis://other:6380/0"
        );
        let bad = Config {
            streams_redis: Some(Secret::new("http://nope")),
            ..Config::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("streams_redis"), "{err}");
    }

    #[test]
    fn prometheus_is_off_by_default_and_its_auth_and_url_are_checked() {
        assert!(Config::default().prometheus_settings().is_none());
        let config = Config::from_toml(
            "prometheus_url = \"https://prom:9090\"\nprometheus_username = \"u\"\nprometheus_password = \"p\"\nprometheus_query_memory = \"\"\n",
        )
        .unwrap();
        config.validate().unwrap();
        let settings = config.prometheus_settings().unwrap();
        assert_eq!(
            settings.auth,
            Some(warden_resources::Auth::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(settings.timeout, Duration::from_secs(5));
        assert!(settings.queries.memory_bytes.is_empty());
        assert!(
            settings
                .queries
                .cpu_percent
                .contains("container_cpu_usage_seconds_total")
        );
        // A bearer token wins over basic auth, and never shows in Debug output.
        let config = Config {
            prometheus_bearer_token: Some(Secret::new("tok-123")),
            ..config
        };
        let settings = config.prometheus_settings().unwrap();
        assert!(matches!(
            settings.auth,
            Some(warden_resources::Auth::Bearer(_))
        ));
        assert!(!format!("{settings:?}{config:?}").contains("tok-123"));
        let bad = Config {
            prometheus_url: Some(Secret::new("prom:9090")),
            ..Config::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("prometheus_url"), "{err}");
    }

    #[test]
    fn kubernetes_is_off_by_default_and_takes_every_layer_when_on() {
        assert_eq!(Config::default().kubernetes, None);
        // Settings without the switch leave it off.
        let config = Config::from_toml("kubernetes_namespace = \"jobs\"\n").unwrap();
        assert_eq!(config.kubernetes, None);
        let config = Config::from_toml("kubernetes = true\n").unwrap();
        assert_eq!(
            config.kubernetes,
            Some(warden_kubernetes::KubernetesConfig::default())
        );
        // The file holds the settings, the flag turns them on and overrides one.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(
            &path,
            "kubernetes_namespace = \"jobs\"\nkubernetes_selector = \"app=celery\"\n\
             kubernetes_pod_mapping = \"label:worker\"\nkubernetes_grace = \"5s\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            kubernetes: true,
            kubernetes_kubeconfig: Some("/etc/kube/config".into()),
            kubernetes_context: Some("prod".into()),
            kubernetes_container: Some("worker".into()),
            kubernetes_grace: Some(Duration::from_secs(7)),
            kubernetes_timeout: Some(Duration::from_secs(3)),
            ..ServeArgs::default()
        };
        let k = Config::load(&args, None).unwrap().kubernetes.unwrap();
        assert_eq!(
            k,
            warden_kubernetes::KubernetesConfig {
                kubeconfig: Some("/etc/kube/config".into()),
                context: Some("prod".into()),
                namespace: Some("jobs".into()),
                selector: "app=celery".into(),
                mapping: warden_kubernetes::PodMapping::Label("worker".into()),
                container: Some("worker".into()),
                grace: Duration::from_secs(7),
                call_timeout: Duration::from_secs(3),
            }
        );
    }

    #[test]
    fn bad_kubernetes_values_name_their_key() {
        let err = Config::from_toml("kubernetes = true\nkubernetes_pod_mapping = \"env:X\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kubernetes_pod_mapping") && err.contains("env:X"),
            "{err}"
        );
        let args = ServeArgs {
            kubernetes: true,
            kubernetes_pod_mapping: Some("label:".into()),
            ..ServeArgs::default()
        };
        let err = Config::load(&args, None).unwrap_err().to_string();
        assert!(err.contains("kubernetes_pod_mapping"), "{err}");
        for key in ["kubernetes_grace", "kubernetes_timeout"] {
            let config =
                Config::from_toml(&format!("kubernetes = true\n{key} = \"0s\"\n")).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let err = Config::from_toml("kubernetes = true\nkubernetes_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kubernetes_timeout"), "{err}");
    }

    #[test]
    fn the_health_heartbeat_thresholds_follow_the_lifecycles_unless_set() {
        let config =
            Config::from_toml("heartbeat_warning = \"3s\"\nheartbeat_critical = \"6s\"\n").unwrap();
        let h = config.health_config();
        assert_eq!(h.defaults.heartbeat_warning, Some(Duration::from_secs(3)));
        assert_eq!(h.defaults.heartbeat_critical, Some(Duration::from_secs(6)));
        let own = Config::from_toml(
            "heartbeat_critical = \"6s\"\n[health.defaults]\nheartbeat_warning = \"20s\"\nheartbeat_critical = \"40s\"\n",
        )
        .unwrap()
        .health_config();
        assert_eq!(
            own.defaults.heartbeat_critical,
            Some(Duration::from_secs(40))
        );
    }

    #[test]
    fn the_commented_health_alerts_notify_and_recovery_examples_parse() {
        let text = include_str!("../warden.example.toml");
        let start = text.find("# [recovery]").expect("a [recovery] example");
        // Uncomment the example lines (keys and tables), leaving the prose out.
        let uncommented: String = text[start..]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| !l.starts_with(' ') && (l.starts_with('[') || l.contains(" = ")))
            .map(|l| format!("{l}\n"))
            .collect();
        let config = Config::from_toml(&format!("kubernetes = true\n{uncommented}"))
            .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert!(config.recovery.enabled());
        assert_eq!(config.notify.receivers.len(), 5);
        assert_eq!(config.health.overrides.len(), 1);
        assert_eq!(config.alerts.routes.len(), 1);
        config.validate().unwrap();
    }

    #[test]
    fn the_recovery_section_opts_groups_in_and_names_a_bad_value() {
        assert!(!Config::default().recovery.enabled());
        let config = Config::from_toml(
            "kubernetes = true\n[recovery]\ngroups = [\"batch-*\"]\nmax_per_worker = 2\nstartup_grace = \"1s\"\n",
        )
        .unwrap();
        config.validate().unwrap();
        let err = Config::from_toml("[recovery]\ngroups = [\"b\"]\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("recovery.groups") && err.contains("runtime"),
            "{err}"
        );
        assert!(config.recovery.enabled());
        assert_eq!(config.recovery.max_per_worker, 2);
        assert_eq!(
            config.recovery.max_fleet,
            crate::recovery::DEFAULT_MAX_FLEET
        );
        assert_eq!(config.recovery.startup_grace, Duration::from_secs(1));
        let err = Config::from_toml("[recovery]\ngroups = [\"[\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("recovery.groups"), "{err}");
        let err = Config::from_toml("[recovery]\nafter_critical_checks = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("recovery.after_critical_checks"), "{err}");
    }

    #[test]
    fn kubernetes_and_local_groups_are_one_runtime_too_many() {
        let config = Config::from_toml(
            "kubernetes = true\n[local]\n[[local.groups]]\nname = \"x\"\ncommand = \"celery\"\n",
        )
        .unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("`kubernetes`") && err.contains("[local]"),
            "{err}"
        );
    }

    #[test]
    fn bad_file_value_names_key_and_value() {
        let err = Config::from_toml("inspect_interval = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("inspect_interval") && err.contains("soon"),
            "{err}"
        );
        let err = Config::from_toml("no_such_key = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_such_key"), "{err}");
    }
}
