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

use crate::{
    config::ServeArgs,
    proto::v1::{
        self as pb, control_client::ControlClient, worker_health_client::WorkerHealthClient,
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
    /// Inspect the workers now instead of answering from the last round.
    #[arg(long)]
    pub refresh: bool,
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The worker's name, e.g. celery@host.
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
    /// The worker's name.
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

async fn connect(args: &ClientArgs) -> Result<Channel, ClientError> {
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

fn request<T>(args: &ClientArgs, message: T) -> Result<Request<T>, ClientError> {
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
        Command::Serve(_) => unreachable_serve(),
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
                                ..Default::default()
                            }),
                            page_size: 1000,
                            page_token: page_token.clone(),
                            refresh: args.refresh && page_token.is_empty(),
                            order_by: pb::WorkerOrder::Name.into(),
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
                Output::Table => print!("{}", workers_table(&workers, SystemTime::now())),
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
                        resume_from_revision: 0,
                        include_queues: true,
                    },
                )?)
                .await?
                .into_inner();
            while let Some(message) = stream.message().await? {
                println!("{}", watch_line(&message, args.client.output));
            }
        }
        Command::Forget(args) => {
            let mut client = ControlClient::new(connect(&args.client).await?);
            let response = client
                .forget_worker(request(
                    &args.client,
                    pb::ForgetWorkerRequest {
                        target: Some(pb::Target {
                            names: vec![args.name.clone()],
                            filter: None,
                        }),
                        reason: args.reason.clone(),
                        dry_run: args.dry_run,
                        request_id: String::new(),
                    },
                )?)
                .await?
                .into_inner();
            for outcome in &response.outcomes {
                let name = pb::Outcome::try_from(outcome.outcome)
                    .map(|o| {
                        o.as_str_name()
                            .trim_start_matches("OUTCOME_")
                            .to_lowercase()
                    })
                    .unwrap_or_default();
                println!("{}: {} ({})", outcome.worker, name, outcome.message);
            }
            println!("audit id: {}", response.audit_id);
        }
    }
    Ok(())
}

fn unreachable_serve() {
    // `serve` is dispatched by main before client verbs; nothing to do here.
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

fn workers_table(workers: &[pb::Worker], now: SystemTime) -> String {
    let mut rows = vec![
        [
            "NAME",
            "ACTIVITY",
            "LIFECYCLE",
            "ACTIVE",
            "PROCESSED",
            "POOL",
            "QUEUES",
            "UPTIME",
            "LAST SEEN",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for w in workers {
        rows.push(vec![
            w.name.clone(),
            activity_name(w.activity) + if w.stale { " (stale)" } else { "" },
            lifecycle_name(w.lifecycle),
            w.active_tasks.to_string(),
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
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn worker_detail(w: &pb::Worker, now: SystemTime) -> String {
    let mut out = String::new();
    let pool = w.pool.clone().unwrap_or_default();
    let _ = writeln!(out, "Name:        {}", w.name);
    let _ = writeln!(
        out,
        "Status:      {} / {}{}",
        activity_name(w.activity),
        lifecycle_name(w.lifecycle),
        if w.stale {
            " (stale: broker unreachable)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "Host / PID:  {} / {}", w.hostname, w.pid);
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
    for t in &w.active {
        let _ = writeln!(
            out,
            "  running {} {} for {}",
            t.name,
            t.id,
            proto_duration(t.runtime.as_ref())
                .map(human_duration)
                .unwrap_or_else(|| "?".into())
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
    })
}

fn watch_line(message: &pb::WatchFleetResponse, output: Output) -> String {
    use pb::watch_fleet_response::Event;
    let (kind, body) = match &message.event {
        Some(Event::Snapshot(s)) => (
            "snapshot",
            json!({"workers": s.workers.iter().map(worker_json).collect::<Vec<_>>()}),
        ),
        Some(Event::WorkerAdded(w)) => ("added", worker_json(w)),
        Some(Event::WorkerUpdated(w)) => ("updated", worker_json(w)),
        Some(Event::WorkerRemoved(r)) => ("removed", json!({"name": r.name})),
        Some(Event::QueueUpdated(q)) => ("queue", json!({"name": q.name, "depth": q.depth})),
        None => ("unknown", Value::Null),
    };
    match output {
        Output::Json => {
            json!({"revision": message.revision, "kind": kind, "data": body}).to_string()
        }
        Output::Table => {
            let detail = match &message.event {
                Some(Event::Snapshot(s)) => format!("{} workers", s.workers.len()),
                Some(Event::WorkerAdded(w) | Event::WorkerUpdated(w)) => format!(
                    "{} {} {} active={} processed={}",
                    w.name,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn rpc_errors_name_the_status_code() {
        let err = ClientError::from(tonic::Status::failed_precondition("w@h is ALIVE"));
        assert_eq!(err.to_string(), "FAILED_PRECONDITION: w@h is ALIVE");
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
    }
}
