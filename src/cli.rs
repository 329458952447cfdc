//! The command line: `warden serve`, and client verbs that talk to a running warden over gRPC.
use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use serde_json::{Value, json};
use tonic::{
    Request,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

mod alerts;
mod streams;

use crate::{
    cli_control,
    config::ServeArgs,
    proto::v1::{
        self as pb, control_client::ControlClient, history_client::HistoryClient,
        logs_client::LogsClient, worker_health_client::WorkerHealthClient,
    },
};

#[derive(Debug, clap::Parser)]
#[command(
    name = "warden",
    version,
    about = "A control plane for fleets of background workers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the warden server.
    Serve(Box<ServeArgs>),
    /// List workers (a table, or JSON with --output json).
    Workers(WorkersArgs),
    /// Show one worker in detail.
    Worker(WorkerArgs),
    /// Print the live stream of fleet changes until interrupted.
    Watch(WatchArgs),
    /// Forget an OFFLINE or LOST worker (role admin).
    Forget(ForgetArgs),
    /// Chart a metric of a worker, a group, a queue or the fleet over time, from history.
    History(HistoryArgs),
    /// List fleet events (workers online, offline, lost, scaling), newest first.
    Events(EventsArgs),
    /// Apply pending database migrations to the history store, then exit.
    Migrate(MigrateArgs),
    /// Restart workers (--mode pod|rollout|pool|drain); returns an operation (--wait follows it).
    Restart(cli_control::RestartArgs),
    /// Shut workers down (warm; --force with a runtime, role admin).
    Shutdown(cli_control::ShutdownArgs),
    /// Make workers stop consuming queues (--queue Q; default every queue).
    Pause(cli_control::QueueArgs),
    /// Make workers consume queues again (default those warden paused).
    Resume(cli_control::QueueArgs),
    /// Set a group's number of workers.
    Scale(cli_control::ScaleArgs),
    /// Start more workers in a local launch group.
    Launch(cli_control::LaunchArgs),
    /// Cordon workers: auto-recovery and selector-based actions leave them alone.
    Cordon(cli_control::CordonArgs),
    /// Lift workers' cordons.
    Uncordon(cli_control::CordonArgs),
    /// List, follow or cancel operations (long control actions).
    Ops(cli_control::OpsArgs),
    /// The audit trail of control calls, newest first (role operator).
    Audit(cli_control::AuditArgs),
    /// Alerts: list, acknowledge, silence.
    Alerts(alerts::AlertsArgs),
    /// Redis Streams: consumer groups with lag, pending and consumers; reclaim, discard, janitor.
    Streams(streams::StreamsArgs),
    /// Move dead Streams consumers' pending entries to a live one (`streams reclaim`).
    Reclaim(streams::ReclaimCommand),
    /// Print a worker's log lines (role operator); with -f, keep following new ones.
    Logs(LogsArgs),
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The worker: short name where unambiguous, or resource name.
    pub name: String,
    /// Keep the stream open and print new lines as the worker writes them.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines at this level or more severe: TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL.
    #[arg(long)]
    pub level: Option<String>,
    /// How many past lines to print first (0: only new lines, with -f).
    #[arg(short = 'n', long, default_value_t = 100)]
    pub lines: u32,
    /// Only lines containing this text.
    #[arg(long)]
    pub grep: Option<String>,
    /// Only lines mentioning this task id.
    #[arg(long)]
    pub task: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// A worker (short name or resource name); or `fleet`, `group:ID`, `queue:NAME`.
    pub subject: String,
    /// Metric from the catalog (`throughput`, `runtime`, `active_tasks`, ...).
    #[arg(long, default_value = "throughput")]
    pub metric: String,
    /// How far back, e.g. 1h, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub since: Duration,
    /// Width of one point, e.g. 5m, 1h (default: chosen to fit `--points`).
    #[arg(long, value_parser = parse_duration)]
    pub step: Option<Duration>,
    /// avg, min, max, sum, last, count, p50, p90, p95, p99 (default: the metric's own).
    #[arg(long)]
    pub aggregation: Option<String>,
    /// Most points.
    #[arg(long, default_value_t = 200)]
    pub points: u32,
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// How far back, e.g. 1h, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub since: Duration,
    /// Only events of this worker (short name or resource name).
    #[arg(long)]
    pub worker: Option<String>,
    /// info, warning or critical.
    #[arg(long, default_value = "info")]
    pub min_severity: String,
    /// Most events.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// History store: sqlite://PATH or postgres://... [default: sqlite://warden.db]
    #[arg(
        long,
        env = "WARDEN_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        default_value = crate::config::DEFAULT_DATABASE_URL
    )]
    pub database_url: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30m, 24h, 7d)"))
}

#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// warden's gRPC address (https:// for TLS).
    #[arg(
        long,
        env = "WARDEN_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,
    /// Bearer token.
    #[arg(long, env = "WARDEN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust besides the system's, for https://.
    #[arg(long, env = "WARDEN_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only workers whose name matches this glob.
    #[arg(long)]
    pub name: Option<String>,
    /// Only workers of this group (id or resource name).
    #[arg(long)]
    pub group: Option<String>,
    /// Only workers with this label, as KEY=VALUE (repeatable; all must match).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Also show each worker's labels.
    #[arg(long)]
    pub show_labels: bool,
    /// Inspect the workers now instead of answering from the last round.
    #[arg(long)]
    pub refresh: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The worker: its short name (e.g. celery@host) where unambiguous, or its resource name.
    pub name: String,
    /// Inspect the worker now.
    #[arg(long)]
    pub refresh: bool,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only workers whose name matches this glob.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The worker: short name where unambiguous, or resource name.
    pub name: String,
    /// Why (recorded in the audit trail).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Say what would happen, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("{0}")]
    Input(String),
}

/// The canonical name of a gRPC status code (`FAILED_PRECONDITION`), which is what people
/// search for and what grpcurl prints; tonic's `Display` gives a sentence instead.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

pub(crate) async fn connect(args: &ClientArgs) -> Result<Channel, ClientError> {
    let fail = |e: &dyn std::fmt::Display| ClientError::Connect(args.server.clone(), e.to_string());
    let mut endpoint = Endpoint::from_shared(args.server.clone())
        .map_err(|e| fail(&e))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60));
    if args.server.starts_with("https://") {
        // The system's trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured), plus --ca-cert.
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(path) = &args.ca_cert {
            let pem = std::fs::read(path).map_err(|e| fail(&e))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| fail(&e))?;
    }
    endpoint.connect().await.map_err(|e| fail(&e))
}

pub(crate) fn request<T>(args: &ClientArgs, message: T) -> Result<Request<T>, ClientError> {
    let mut request = Request::new(message);
    if let Some(token) = &args.token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().map_err(|_| {
            ClientError::Input("the token has characters a header cannot carry".into())
        })?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

/// Runs a client verb, printing to stdout.
pub async fn run(command: Command) -> Result<(), ClientError> {
    match command {
        Command::Serve(_) => {
            return Err(ClientError::Input(
                "`serve` runs the server; it is not a client verb".into(),
            ));
        }
        Command::Workers(args) => {
            let mut client = WorkerHealthClient::new(connect(&args.client).await?);
            let mut workers = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_workers(request(
                        &args.client,
                        pb::ListWorkersRequest {
                            filter: Some(pb::WorkerFilter {
                                name_glob: args.name.clone().unwrap_or_default(),
                                groups: args.group.iter().cloned().collect(),
                                labels: args.labels.iter().cloned().collect(),
                                ..Default::default()
                            }),
                            page_size: 1000,
                            page_token: page_token.clone(),
                            refresh: args.refresh && page_token.is_empty(),
                            order_by: pb::WorkerOrder::Name.into(),
                            view: pb::WorkerView::Basic.into(),
                        },
                    )?)
                    .await?
                    .into_inner();
                workers.extend(page.workers);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            match args.client.output {
                Output::Json => println!(
                    "{}",
                    Value::Array(workers.iter().map(worker_json).collect())
                ),
                Output::Table => print!(
                    "{}",
                    workers_table(
                        &workers,
                        SystemTime::now(),
                        args.show_labels,
                        colour_output()
                    )
                ),
            }
        }
        Command::Worker(args) => {
            let mut client = WorkerHealthClient::new(connect(&args.client).await?);
            let response = client
                .get_worker(request(
                    &args.client,
                    pb::GetWorkerRequest {
                        name: args.name.clone(),
                        refresh: args.refresh,
                        view: pb::WorkerView::Full.into(),
                    },
                )?)
                .await?
                .into_inner();
            let worker = response.worker.unwrap_or_default();
            match args.client.output {
                Output::Json => println!("{}", worker_json(&worker)),
                Output::Table => print!("{}", worker_detail(&worker, SystemTime::now())),
            }
        }
        Command::Logs(args) => logs(args).await?,
        Command::Watch(args) => {
            let mut client = WorkerHealthClient::new(connect(&args.client).await?);
            let mut stream = client
                .watch_fleet(request(
                    &args.client,
                    pb::WatchFleetRequest {
                        filter: Some(pb::WorkerFilter {
                            name_glob: args.name.clone().unwrap_or_default(),
                            ..Default::default()
                        }),
                        resume_token: String::new(),
                        include_queues: true,
                        view: pb::WorkerView::Basic.into(),
                        bookmark_interval: None,
                    },
                )?)
                .await?
                .into_inner();
            // A snapshot arrives in chunks; it is printed as one line once complete.
            let mut snapshot: Option<(pb::SnapshotBegin, Vec<pb::Worker>)> = None;
            while let Some(message) = stream.message().await? {
                use pb::watch_fleet_response::Event;
                match message.event {
                    Some(Event::SnapshotBegin(begin)) => snapshot = Some((begin, Vec::new())),
                    Some(Event::SnapshotChunk(chunk)) => {
                        if let Some((_, workers)) = snapshot.as_mut() {
                            workers.extend(chunk.workers);
                        }
                    }
                    Some(Event::SnapshotEnd(_)) => {
                        if let Some((begin, workers)) = snapshot.take() {
                            println!(
                                "{}",
                                snapshot_line(
                                    &begin,
                                    &workers,
                                    message.revision,
                                    args.client.output
                                )
                            );
                        }
                    }
                    Some(Event::Bookmark(_)) => {}
                    _ => println!("{}", watch_line(&message, args.client.output)),
                }
            }
        }
        Command::Restart(args) => cli_control::restart(args).await?,
        Command::Shutdown(args) => cli_control::shutdown(args).await?,
        Command::Pause(args) => cli_control::pause(args, false).await?,
        Command::Resume(args) => cli_control::pause(args, true).await?,
        Command::Scale(args) => cli_control::scale(args).await?,
        Command::Launch(args) => cli_control::launch(args).await?,
        Command::Cordon(args) => cli_control::cordon(args, false).await?,
        Command::Uncordon(args) => cli_control::cordon(args, true).await?,
        Command::Ops(args) => cli_control::ops(args).await?,
        Command::Audit(args) => cli_control::audit(args).await?,
        Command::Alerts(args) => alerts::run(args).await?,
        Command::Streams(args) => streams::run(&args).await?,
        Command::Reclaim(c) => streams::reclaim(&c.client, &c.args).await?,
        Command::Forget(args) => {
            let mut client = ControlClient::new(connect(&args.client).await?);
            let response = client
                .forget_workers(request(
                    &args.client,
                    pb::ForgetWorkersRequest {
                        selector: Some(pb::Selector {
                            workers: vec![args.name.clone()],
                            ..Default::default()
                        }),
                        reason: args.reason.clone(),
                        dry_run: args.dry_run,
                        ..Default::default()
                    },
                )?)
                .await?
                .into_inner();
            for outcome in &response.outcomes {
                let name = pb::OutcomeCode::try_from(outcome.code)
                    .map(|o| {
                        o.as_str_name()
                            .trim_start_matches("OUTCOME_CODE_")
                            .to_lowercase()
                    })
                    .unwrap_or_default();
                println!("{}: {} ({})", outcome.worker, name, outcome.message);
            }
            println!("audit id: {}", response.audit_id);
        }
        Command::History(args) => {
            let mut client = HistoryClient::new(connect(&args.client).await?);
            let subject = history_subject(&args.subject);
            let aggregation = match &args.aggregation {
                None => pb::Aggregation::Unspecified,
                Some(a) => {
                    pb::Aggregation::from_str_name(&format!("AGGREGATION_{}", a.to_uppercase()))
                        .ok_or_else(|| ClientError::Input(format!("unknown aggregation {a:?}")))?
                }
            };
            let now = SystemTime::now();
            let response = client
                .query_history(request(
                    &args.client,
                    pb::QueryHistoryRequest {
                        subjects: vec![subject],
                        metrics: vec![args.metric.clone()],
                        start: Some((now - args.since).into()),
                        end: Some(now.into()),
                        step: args.step.map(|d| prost_types::Duration {
                            seconds: d.as_secs() as i64,
                            nanos: d.subsec_nanos() as i32,
                        }),
                        aggregation: aggregation.into(),
                        max_points: args.points,
                    },
                )?)
                .await?
                .into_inner();
            match args.client.output {
                Output::Json => println!("{}", history_json(&response)),
                Output::Table => {
                    for series in &response.series {
                        print!("{}", chart(series, terminal_width()));
                    }
                }
            }
        }
        Command::Events(args) => {
            let mut client = HistoryClient::new(connect(&args.client).await?);
            let severity = pb::Severity::from_str_name(&format!(
                "SEVERITY_{}",
                args.min_severity.to_uppercase()
            ))
            .ok_or_else(|| {
                ClientError::Input(format!("unknown severity {:?}", args.min_severity))
            })?;
            let now = SystemTime::now();
            let response = client
                .list_events(request(
                    &args.client,
                    pb::ListEventsRequest {
                        subject: args.worker.clone().map(|w| pb::Subject {
                            kind: Some(pb::subject::Kind::Worker(w)),
                        }),
                        min_severity: severity.into(),
                        since: Some((now - args.since).into()),
                        page_size: args.limit,
                        ..Default::default()
                    },
                )?)
                .await?
                .into_inner();
            match args.client.output {
                Output::Json => println!(
                    "{}",
                    Value::Array(response.events.iter().map(event_json).collect())
                ),
                Output::Table => {
                    for e in &response.events {
                        let when = proto_time(e.time.as_ref())
                            .map(|t| ago(t, now))
                            .unwrap_or_default();
                        let severity = enum_name(
                            pb::Severity::try_from(e.severity)
                                .ok()
                                .map(|s| s.as_str_name()),
                            "SEVERITY_",
                        );
                        println!("{when:>12}  {severity:<8}  {}", e.message);
                    }
                }
            }
        }
        Command::Migrate(_) => {
            return Err(ClientError::Input(
                "`migrate` talks to the database, not to a warden server".into(),
            ));
        }
    }
    Ok(())
}

/// `fleet`, `group:ID`, `queue:NAME`, or a worker.
fn history_subject(s: &str) -> pb::Subject {
    use pb::subject::Kind;
    let kind = if s == "fleet" {
        Kind::Fleet(true)
    } else if let Some(g) = s.strip_prefix("group:") {
        Kind::Group(g.to_string())
    } else if let Some(q) = s.strip_prefix("queue:") {
        Kind::Queue(q.to_string())
    } else {
        Kind::Worker(s.to_string())
    };
    pb::Subject { kind: Some(kind) }
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(80usize)
        .clamp(40, 300)
}

/// Human-readable number: 1234.5 -> "1.23k".
fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.2}k", v / 1e3)
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        // Up to 3 decimals, without trailing zeros (but one kept): 5.0, 0.25, 0.125.
        let text = format!("{v:.3}");
        let trimmed = text.trim_end_matches('0');
        if trimmed.ends_with('.') {
            format!("{trimmed}0")
        } else {
            trimmed.to_string()
        }
    }
}

/// A small terminal chart of one series: 8 rows of bars (people would rather look than
/// read), the range under it, and the summary line.
pub fn chart(series: &pb::Series, width: usize) -> String {
    const ROWS: usize = 8;
    const LEVELS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let aggregation = pb::Aggregation::try_from(series.aggregation)
        .map(|a| {
            a.as_str_name()
                .trim_start_matches("AGGREGATION_")
                .to_lowercase()
        })
        .unwrap_or_default();
    let mut out = format!("{} ({}, {aggregation})\n", series.metric, series.unit);
    if series.points.is_empty() {
        out.push_str("  no data in this range\n");
        return out;
    }
    let label_width = 9;
    let columns = width.saturating_sub(label_width + 2).max(10);
    // Points to columns: each column takes the maximum of the points that fall into it.
    let n = series.points.len();
    let cols = columns.min(n);
    let mut values = vec![f64::NAN; cols];
    for (i, p) in series.points.iter().enumerate() {
        let c = i * cols / n;
        values[c] = if values[c].is_nan() {
            p.value
        } else {
            values[c].max(p.value)
        };
    }
    let max = values
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f64::MIN, f64::max);
    let top = if max > 0.0 { max } else { 1.0 };
    for row in (0..ROWS).rev() {
        let label = if row == ROWS - 1 {
            short_number(max)
        } else if row == 0 {
            "0".to_string()
        } else {
            String::new()
        };
        let _ = write!(out, "{label:>label_width$} ┤");
        for v in &values {
            let eighths = if v.is_nan() {
                0.0
            } else {
                (v / top * (ROWS * 8) as f64).round()
            };
            let level = (eighths - (row * 8) as f64).clamp(0.0, 8.0) as usize;
            out.push(LEVELS[level]);
        }
        out.push('\n');
    }
    let first = series
        .points
        .first()
        .and_then(|p| proto_time(p.time.as_ref()));
    let last = series
        .points
        .last()
        .and_then(|p| proto_time(p.time.as_ref()));
    let stamp = |t: Option<SystemTime>| {
        t.map(|t| {
            // 2026-11-26T09:00:00Z -> 2026-11-26 09:00
            let s = humantime::format_rfc3339_seconds(t).to_string();
            s.get(..16).unwrap_or(&s).replace('T', " ")
        })
        .unwrap_or_default()
    };
    let _ = writeln!(
        out,
        "{:>label_width$}  {} .. {}",
        "",
        stamp(first),
        stamp(last)
    );
    if let Some(s) = &series.summary {
        let _ = writeln!(
            out,
            "{:>label_width$}  avg {}  min {}  max {}  last {}  ({} samples)",
            "",
            short_number(s.avg),
            short_number(s.min),
            short_number(s.max),
            short_number(s.last),
            s.count
        );
    }
    out
}

fn history_json(r: &pb::QueryHistoryResponse) -> Value {
    json!({
        "step_seconds": duration_json(r.step.as_ref()),
        "oldest_available": time_json(r.oldest_available.as_ref()),
        "series": r.series.iter().map(|s| json!({
            "metric": s.metric,
            "unit": s.unit,
            "points": s.points.iter().map(|p| json!([time_json(p.time.as_ref()), p.value])).collect::<Vec<_>>(),
            "summary": s.summary.as_ref().map(|m| json!({
                "avg": m.avg, "min": m.min, "max": m.max, "last": m.last, "count": m.count,
            })),
        })).collect::<Vec<_>>(),
    })
}

fn event_json(e: &pb::Event) -> Value {
    json!({
        "id": e.id,
        "time": time_json(e.time.as_ref()),
        "kind": enum_name(pb::EventKind::try_from(e.kind).ok().map(|k| k.as_str_name()), "EVENT_KIND_"),
        "severity": enum_name(pb::Severity::try_from(e.severity).ok().map(|s| s.as_str_name()), "SEVERITY_"),
        "worker": e.worker,
        "group": e.group,
        "message": e.message,
    })
}

fn enum_name(name: Option<&str>, prefix: &str) -> String {
    name.map(|n| n.trim_start_matches(prefix).to_lowercase())
        .unwrap_or_else(|| "unknown".into())
}

fn activity_name(v: i32) -> String {
    enum_name(
        pb::Activity::try_from(v).ok().map(|a| a.as_str_name()),
        "ACTIVITY_",
    )
}

fn lifecycle_name(v: i32) -> String {
    enum_name(
        pb::Lifecycle::try_from(v).ok().map(|a| a.as_str_name()),
        "LIFECYCLE_",
    )
}

fn proto_duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| {
        (d.seconds >= 0 && d.nanos >= 0).then(|| Duration::new(d.seconds as u64, d.nanos as u32))
    })
}

fn proto_time(t: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

/// A duration the way people read it: the two or three largest units (`2d 5h 30m`, `45s`).
pub fn human_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    parts.truncate(3);
    parts.join(" ")
}

/// How long ago a time was (`12s ago`), relative to `now`.
pub fn ago(t: SystemTime, now: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(d) if d.as_secs() == 0 => "just now".into(),
        Ok(d) => format!("{} ago", human_duration(Duration::from_secs(d.as_secs()))),
        Err(_) => "just now".into(),
    }
}

fn health_name(h: Option<&pb::Health>) -> String {
    match h {
        None => "-".into(),
        Some(h) => enum_name(
            pb::HealthStatus::try_from(h.status)
                .ok()
                .map(|s| s.as_str_name()),
            "HEALTH_STATUS_",
        ),
    }
}

/// A group's id from its resource name (`groups/celery/celery%2Cemails` -> `celery,emails`).
fn group_label(name: &str) -> String {
    name.rsplit_once('/')
        .and_then(|(_, id)| crate::fleet::percent_decode(id))
        .unwrap_or_else(|| "-".into())
}

/// Colours only on a terminal, and never when NO_COLOR is set (no-color.org).
fn colour_output() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A resource percentage for the table: one decimal, `(stale)` when its source is down, `-`
/// when unknown.
fn percent_cell(value: Option<f64>, stale: bool) -> (String, Option<f64>) {
    match value {
        None => ("-".into(), None),
        Some(v) => (
            format!("{v:.1}%{}", if stale { " (stale)" } else { "" }),
            Some(v),
        ),
    }
}

/// The ANSI colour of a usage: yellow from 80 %, red from 95 %.
fn usage_colour(value: f64) -> Option<&'static str> {
    if value >= 95.0 {
        Some("\x1b[31m")
    } else if value >= 80.0 {
        Some("\x1b[33m")
    } else {
        None
    }
}

const CPU_COLUMN: usize = 5;
const MEM_COLUMN: usize = 6;

fn workers_table(
    workers: &[pb::Worker],
    now: SystemTime,
    show_labels: bool,
    colour: bool,
) -> String {
    let mut header = vec![
        "NAME",
        "GROUP",
        "ACTIVITY",
        "LIFECYCLE",
        "ACTIVE",
        "CPU",
        "MEM",
        "PROCESSED",
        "POOL",
        "QUEUES",
        "UPTIME",
        "LAST SEEN",
    ];
    if show_labels {
        header.push("LABELS");
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    // The CPU and memory figures of each row, for colouring once cells are padded.
    let mut usage: Vec<[Option<f64>; 2]> = vec![[None, None]];
    for w in workers {
        let mut labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let stale = w.resources.as_ref().is_some_and(|r| r.stale);
        let (cpu, cpu_value) =
            percent_cell(w.resources.as_ref().and_then(|r| r.cpu_percent), stale);
        let (mem, mem_value) =
            percent_cell(w.resources.as_ref().and_then(|r| r.memory_percent), stale);
        usage.push([cpu_value, mem_value]);
        let mut row = vec![
            w.id.clone(),
            group_label(&w.group),
            activity_name(w.activity) + if w.stale { " (stale)" } else { "" },
            lifecycle_name(w.lifecycle),
            w.active_tasks.to_string(),
            cpu,
            mem,
            w.processed_tasks.to_string(),
            w.pool
                .as_ref()
                .map(|p| format!("{}/{}", p.implementation, p.max_concurrency))
                .unwrap_or_default(),
            w.queues
                .iter()
                .map(|q| q.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            proto_duration(w.uptime.as_ref())
                .map(human_duration)
                .unwrap_or_else(|| "-".into()),
            proto_time(w.last_seen.as_ref())
                .map(|t| ago(t, now))
                .unwrap_or_else(|| "-".into()),
        ];
        if show_labels {
            row.push(labels.join(","));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (row, usage) in rows.iter().zip(&usage) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                let padded = format!("{cell:<width$}");
                let value = match i {
                    CPU_COLUMN => usage[0],
                    MEM_COLUMN => usage[1],
                    _ => None,
                };
                match value.and_then(usage_colour) {
                    Some(code) if colour => format!("{code}{padded}\x1b[0m"),
                    _ => padded,
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn worker_detail(w: &pb::Worker, now: SystemTime) -> String {
    let mut out = String::new();
    let pool = w.pool.clone().unwrap_or_default();
    let _ = writeln!(out, "Name:        {}", w.id);
    let _ = writeln!(out, "Resource:    {}", w.name);
    let _ = writeln!(out, "Group:       {}", group_label(&w.group));
    let mut labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    let _ = writeln!(out, "Labels:      {}", labels.join(", "));
    let _ = writeln!(
        out,
        "Status:      {} / {}{}",
        activity_name(w.activity),
        lifecycle_name(w.lifecycle),
        if w.stale {
            format!(" (stale: {} unreachable)", w.stale_sources.join(", "))
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "Health:      {}",
        match &w.health {
            None => "not evaluated".to_string(),
            Some(h) => format!("{} (score {:.2})", health_name(Some(h)), h.score),
        }
    );
    let _ = writeln!(
        out,
        "Host / PID:  {} / {}",
        w.hostname,
        w.pid.map_or("-".to_string(), |p| p.to_string())
    );
    let _ = writeln!(
        out,
        "Uptime:      {}",
        proto_duration(w.uptime.as_ref())
            .map(human_duration)
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        out,
        "Last seen:   {}",
        proto_time(w.last_seen.as_ref())
            .map(|t| ago(t, now))
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        out,
        "Pool:        {} (concurrency {}, children {:?})",
        pool.implementation, pool.max_concurrency, pool.processes
    );
    let _ = writeln!(
        out,
        "Tasks:       {} active, {} processed",
        w.active_tasks, w.processed_tasks
    );
    let _ = writeln!(
        out,
        "Queues:      {}",
        w.queues
            .iter()
            .map(|q| q.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "Registered:  {}", w.registered_tasks.join(", "));
    if let Some(stats) = &w.task_stats {
        let _ = writeln!(out, "\nTask statistics:");
        let _ = write!(out, "{}", stats_table("(all)", &stats.windows));
        for by_task in &stats.by_task {
            let _ = write!(out, "{}", stats_table(&by_task.task_name, &by_task.windows));
        }
    }
    let _ = writeln!(out, "\nActive tasks: {}", w.active.len());
    for t in &w.active {
        let _ = writeln!(
            out,
            "  {} {} running for {}",
            t.name,
            t.id,
            proto_duration(t.runtime.as_ref())
                .map(human_duration)
                .unwrap_or_else(|| "?".into())
        );
    }
    out
}

/// One task name's windows: throughput, errors and runtime percentiles.
fn stats_table(task: &str, windows: &[pb::WindowStats]) -> String {
    let mut out = format!("  {task}\n");
    let seconds = |d: Option<&prost_types::Duration>| {
        proto_duration(d).map_or("-".to_string(), |d| format!("{:.3}s", d.as_secs_f64()))
    };
    for w in windows {
        let runtime = w.runtime.unwrap_or_default();
        let _ = writeln!(
            out,
            "    {:>4} (over {:>5}): {:>8.2}/min  errors {:>5.1}%  finished {:>6}  p50 {:>8}  p95 {:>8}  p99 {:>8}",
            proto_duration(w.window.as_ref()).map_or("-".into(), human_duration),
            proto_duration(w.covered.as_ref()).map_or("-".into(), human_duration),
            w.throughput_per_min,
            w.error_rate * 100.0,
            w.succeeded + w.failed,
            seconds(runtime.p50.as_ref()),
            seconds(runtime.p95.as_ref()),
            seconds(runtime.p99.as_ref()),
        );
    }
    out
}

fn duration_json(d: Option<&prost_types::Duration>) -> Value {
    proto_duration(d).map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

fn time_json(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.to_string()))
}

/// The same data as the table, for scripts: durations in seconds, times in RFC 3339.
pub fn worker_json(w: &pb::Worker) -> Value {
    json!({
        "name": w.name,
        "id": w.id,
        "group": w.group,
        "labels": w.labels,
        "health": w.health.as_ref().map(|h| json!({"status": health_name(Some(h)), "score": h.score})),
        "stale_sources": w.stale_sources,
        "activity": activity_name(w.activity),
        "lifecycle": lifecycle_name(w.lifecycle),
        "stale": w.stale,
        "hostname": w.hostname,
        "pid": w.pid,
        "uptime_seconds": duration_json(w.uptime.as_ref()),
        "last_seen": time_json(w.last_seen.as_ref()),
        "active_tasks": w.active_tasks,
        "processed_tasks": w.processed_tasks,
        "pool": w.pool.as_ref().map(|p| json!({
            "implementation": p.implementation,
            "max_concurrency": p.max_concurrency,
            "processes": p.processes,
        })),
        "queues": w.queues.iter().map(|q| q.name.clone()).collect::<Vec<_>>(),
        "registered_tasks": w.registered_tasks,
        "active": w.active.iter().map(|t| json!({
            "id": t.id, "name": t.name,
            "runtime_seconds": duration_json(t.runtime.as_ref()),
        })).collect::<Vec<_>>(),
        "task_stats": w.task_stats.as_ref().map(|t| json!({
            "windows": t.windows.iter().map(window_json).collect::<Vec<_>>(),
            "by_task": t.by_task.iter().map(|b| json!({
                "task_name": b.task_name,
                "windows": b.windows.iter().map(window_json).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
    })
}

fn window_json(w: &pb::WindowStats) -> Value {
    let runtime = w.runtime.unwrap_or_default();
    json!({
        "window_seconds": duration_json(w.window.as_ref()),
        "covered_seconds": duration_json(w.covered.as_ref()),
        "throughput_per_min": w.throughput_per_min,
        "succeeded": w.succeeded,
        "failed": w.failed,
        "error_rate": w.error_rate,
        "runtime_p50_seconds": duration_json(runtime.p50.as_ref()),
        "runtime_p95_seconds": duration_json(runtime.p95.as_ref()),
        "runtime_p99_seconds": duration_json(runtime.p99.as_ref()),
    })
}

fn snapshot_line(
    begin: &pb::SnapshotBegin,
    workers: &[pb::Worker],
    revision: u64,
    output: Output,
) -> String {
    let reason = begin
        .reason()
        .as_str_name()
        .trim_start_matches("SNAPSHOT_REASON_")
        .to_lowercase();
    match output {
        Output::Json => json!({
            "revision": revision,
            "kind": "snapshot",
            "data": {
                "reason": reason,
                "workers": workers.iter().map(worker_json).collect::<Vec<_>>(),
            },
        })
        .to_string(),
        Output::Table => format!(
            "#{:<6} {:<9} {} workers ({reason})",
            revision,
            "snapshot",
            workers.len()
        ),
    }
}

fn watch_line(message: &pb::WatchFleetResponse, output: Output) -> String {
    use pb::watch_fleet_response::Event;
    let (kind, body) = match &message.event {
        Some(
            Event::SnapshotBegin(_)
            | Event::SnapshotChunk(_)
            | Event::SnapshotEnd(_)
            | Event::Bookmark(_),
        ) => ("snapshot", Value::Null),
        Some(Event::WorkerAdded(w)) => ("added", worker_json(w)),
        Some(Event::WorkerUpdated(w)) => ("updated", worker_json(w)),
        Some(Event::WorkerRemoved(r)) => ("removed", json!({"name": r.name, "id": r.id})),
        Some(Event::QueueUpdated(q)) => ("queue", json!({"name": q.name, "depth": q.depth})),
        None => ("unknown", Value::Null),
    };
    match output {
        Output::Json => {
            json!({"revision": message.revision, "kind": kind, "data": body}).to_string()
        }
        Output::Table => {
            let detail = match &message.event {
                Some(
                    Event::SnapshotBegin(_)
                    | Event::SnapshotChunk(_)
                    | Event::SnapshotEnd(_)
                    | Event::Bookmark(_),
                ) => String::new(),
                Some(Event::WorkerAdded(w) | Event::WorkerUpdated(w)) => format!(
                    "{} {} {} active={} processed={}",
                    w.id,
                    activity_name(w.activity),
                    lifecycle_name(w.lifecycle),
                    w.active_tasks,
                    w.processed_tasks
                ),
                Some(Event::WorkerRemoved(r)) => r.name.clone(),
                Some(Event::QueueUpdated(q)) => format!("{} depth={}", q.name, q.depth),
                None => String::new(),
            };
            format!("#{:<6} {:<9} {}", message.revision, kind, detail)
        }
    }
}

/// `warden logs`: lines as text (`time level source text`), or one JSON object per line;
/// stream events go to stderr.
async fn logs(args: LogsArgs) -> Result<(), ClientError> {
    let min_level = match &args.level {
        None => 0,
        Some(name) => crate::logline::Level::from_name(name).ok_or_else(|| {
            ClientError::Input(format!(
                "unknown level {name:?} (TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL)"
            ))
        })? as i32,
    };
    let mut client = LogsClient::new(connect(&args.client).await?);
    let mut stream = client
        .tail(request(
            &args.client,
            pb::TailRequest {
                worker: args.name.clone(),
                tail_lines: Some(args.lines),
                follow: args.follow,
                min_level,
                contains: args.grep.clone().unwrap_or_default(),
                task_id: args.task.clone().unwrap_or_default(),
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    while let Some(message) = stream.message().await? {
        match message.payload {
            Some(pb::tail_response::Payload::Lines(batch)) => {
                for line in batch.lines {
                    match args.client.output {
                        Output::Json => println!("{}", log_line_json(&line)),
                        Output::Table => println!("{}", log_line_text(&line)),
                    }
                }
            }
            Some(pb::tail_response::Payload::Event(event)) => {
                let kind = pb::StreamEventKind::try_from(event.kind)
                    .unwrap_or(pb::StreamEventKind::Unspecified);
                if kind != pb::StreamEventKind::Heartbeat {
                    eprintln!("# {}: {}", kind.as_str_name(), event.message);
                }
            }
            None => {}
        }
    }
    Ok(())
}

fn level_name(level: i32) -> &'static str {
    match pb::LogLevel::try_from(level).unwrap_or(pb::LogLevel::Unspecified) {
        pb::LogLevel::Unspecified => "-",
        pb::LogLevel::Trace => "TRACE",
        pb::LogLevel::Debug => "DEBUG",
        pb::LogLevel::Info => "INFO",
        pb::LogLevel::Warning => "WARNING",
        pb::LogLevel::Error => "ERROR",
        pb::LogLevel::Critical => "CRITICAL",
    }
}

fn log_line_text(line: &pb::LogLine) -> String {
    let time = line
        .time
        .as_ref()
        .and_then(|t| {
            Some(
                SystemTime::UNIX_EPOCH
                    + Duration::new(t.seconds.try_into().ok()?, t.nanos.try_into().ok()?),
            )
        })
        .map(|t| humantime::format_rfc3339_millis(t).to_string())
        .unwrap_or_default();
    format!(
        "{time} {:<8} {} {}",
        level_name(line.level),
        line.source,
        line.text
    )
}

fn log_line_json(line: &pb::LogLine) -> Value {
    json!({
        "time": line.time.as_ref().map(|t| t.to_string()),
        "level": level_name(line.level),
        "worker": line.worker,
        "source": line.source,
        "text": line.text,
        "task_id": line.task_id,
        "truncated": line.truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_table_shows_cpu_and_memory_coloured_only_when_asked() {
        let worker = |id: &str, cpu: Option<f64>, mem: Option<f64>, stale: bool| pb::Worker {
            id: id.into(),
            resources: (cpu.is_some() || mem.is_some()).then(|| pb::ResourceUsage {
                cpu_percent: cpu,
                memory_percent: mem,
                stale,
                ..Default::default()
            }),
            ..Default::default()
        };
        let workers = [
            worker("calm@h", Some(12.0), Some(40.0), false),
            worker("busy@h", Some(85.0), Some(96.5), true),
            worker("unknown@h", None, None, false),
        ];
        let now = SystemTime::now();
        let plain = workers_table(&workers, now, false, false);
        assert!(!plain.contains('\x1b'), "{plain}");
        let lines: Vec<&str> = plain.lines().collect();
        assert!(
            lines[0].contains("CPU") && lines[0].contains("MEM"),
            "{plain}"
        );
        assert!(
            lines[1].contains("12.0%") && lines[1].contains("40.0%"),
            "{plain}"
        );
        assert!(lines[2].contains("96.5% (stale)"), "{plain}");
        let cols: Vec<&str> = lines[3].split_whitespace().collect();
        assert!(cols.contains(&"-"), "unknown is '-', never 0: {plain}");
        assert!(!lines[3].contains('%'), "{plain}");

        let coloured = workers_table(&workers, now, false, true);
        let lines: Vec<&str> = coloured.lines().collect();
        assert!(
            !lines[1].contains('\x1b'),
            "under 80 % is plain: {coloured}"
        );
        assert!(
            lines[2].contains("\x1b[33m85.0%"),
            "80 % .. 95 % is yellow: {coloured}"
        );
        assert!(
            lines[2].contains("\x1b[31m96.5% (stale)"),
            "95 % and over is red: {coloured}"
        );
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(
            human_duration(Duration::from_secs(2 * 86_400 + 5 * 3_600 + 30 * 60 + 7)),
            "2d 5h 30m"
        );
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(3_600)), "1h");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(ago(now - Duration::from_secs(12), now), "12s ago");
    }

    #[test]
    fn charts_scale_to_the_largest_value_and_keep_gaps_empty() {
        let t = |s: u64| {
            Some(prost_types::Timestamp::from(
                SystemTime::UNIX_EPOCH + Duration::from_secs(s),
            ))
        };
        let series = pb::Series {
            metric: "throughput".into(),
            unit: "tasks/min".into(),
            aggregation: pb::Aggregation::Avg.into(),
            points: vec![
                pb::Point {
                    time: t(0),
                    value: 10.0,
                },
                pb::Point {
                    time: t(60),
                    value: 5.0,
                },
                pb::Point {
                    time: t(120),
                    value: 0.0,
                },
            ],
            summary: Some(pb::SeriesSummary {
                avg: 5.0,
                min: 0.0,
                max: 10.0,
                last: 0.0,
                count: 3,
            }),
            ..Default::default()
        };
        let text = chart(&series, 80);
        let rows: Vec<&str> = text.lines().collect();
        assert!(rows[0].starts_with("throughput (tasks/min, avg)"), "{text}");
        // The top row: the 10.0 column is full, the 5.0 one empty.
        assert!(rows[1].ends_with("█  "), "{text}");
        // The bottom row: 10 and 5 have bars, 0 none.
        assert!(rows[8].ends_with("██ "), "{text}");
        assert!(text.contains("avg 5.0  min 0.0  max 10.0"), "{text}");
    }

    #[test]
    fn rpc_errors_name_the_status_code() {
        let err = ClientError::from(tonic::Status::failed_precondition("w@h is ALIVE"));
        assert_eq!(err.to_string(), "FAILED_PRECONDITION: w@h is ALIVE");
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
    }

    #[test]
    fn log_lines_print_time_level_source_and_text() {
        let line = pb::LogLine {
            time: Some(prost_types::Timestamp {
                seconds: 1_704_110_400,
                nanos: 0,
            }),
            level: pb::LogLevel::Error as i32,
            text: "boom".into(),
            source: "pid:7".into(),
            ..Default::default()
        };
        assert_eq!(
            log_line_text(&line),
            "2024-01-01T12:00:00.000Z ERROR    pid:7 boom"
        );
        assert_eq!(log_line_json(&line)["level"], "ERROR");
    }
}
