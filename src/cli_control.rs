//! The control verbs of the command line (`restart`, `shutdown`, `pause`, `resume`, `scale`, `launch`,
//! `cordon`, `uncordon`, `ops`, `audit`), kubectl-like: workers by name, or a selector
//! (`-l key=value`, `--group`, `--all`); every acting verb takes `--dry-run`, `--reason`,
//! `--request-id` and `--wait` (follow the operation to its end), and prints a table or, with
//! `--output json`, JSON.
use serde_json::{Value, json};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use crate::{
    cli::{ClientArgs, ClientError, Output, connect, request},
    proto::v1::{self as pb, control_client::ControlClient},
};

/// Which workers a verb acts on.
#[derive(Debug, Clone, clap::Args)]
pub struct Targets {
    /// Workers by short name (where unambiguous) or resource name.
    pub names: Vec<String>,
    /// Instead of names: the workers with this label, as KEY=VALUE (repeatable; all must
    /// match).
    #[arg(short = 'l', long = "selector", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Instead of names: every worker of these groups (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Instead of names: every known worker.
    #[arg(long)]
    pub all: bool,
    /// Refuse (TOO_MANY_TARGETS) when the selection is larger; 0 means the server's 1000.
    #[arg(long, default_value_t = 0)]
    pub max_targets: u32,
}

/// What every acting verb takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Acting {
    /// Say what would happen, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why (recorded in the audit trail).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Idempotency key: the same key again within 24 h is not acted on twice.
    #[arg(long, default_value = "")]
    pub request_id: String,
    /// For long actions: follow the operation until it ends (exit status 1 unless it
    /// succeeded). Synchronous verbs always wait.
    #[arg(long)]
    pub wait: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Restart the worker's instance (pod or process; needs a runtime).
    Pod,
    /// Roll the whole workload (Kubernetes).
    Rollout,
    /// Restart the Celery pool in place (`pool_restart`).
    Pool,
    /// Stop consuming, wait for running tasks, then restart (the pool without a runtime:
    /// `--drain-mode`).
    Drain,
}

#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub targets: Targets,
    #[command(flatten)]
    pub acting: Acting,
    /// How to restart.
    #[arg(long, value_enum, default_value = "pod")]
    pub mode: Mode,
    /// With `--mode drain`: how to restart once drained (pod or pool).
    #[arg(long, value_enum, default_value = "pod")]
    pub drain_mode: Mode,
    /// With `--mode drain`: longest wait for running tasks (e.g. 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Targets acted on together.
    #[arg(long, default_value_t = 0)]
    pub batch_size: u32,
    /// Most targets unavailable at once.
    #[arg(long, default_value_t = 0)]
    pub max_unavailable: u32,
}

#[derive(Debug, clap::Args)]
pub struct ShutdownArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub targets: Targets,
    #[command(flatten)]
    pub acting: Acting,
    /// Stop at once, interrupting running tasks (role admin; needs a runtime).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub targets: Targets,
    #[command(flatten)]
    pub acting: Acting,
    /// A queue (repeatable). Pause: default every queue; resume: default those paused.
    #[arg(long = "queue", short = 'q')]
    pub queues: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct CordonArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub targets: Targets,
    #[command(flatten)]
    pub acting: Acting,
}

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub acting: Acting,
    /// The group (id or resource name).
    pub group: String,
    /// How many workers it should have.
    pub replicas: u32,
}

#[derive(Debug, clap::Args)]
pub struct LaunchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub acting: Acting,
    /// The launch group (a `[local]` group's name).
    pub group: String,
    /// How many workers to add to it (1 to 100).
    #[arg(short = 'n', long, default_value_t = 1)]
    pub count: u32,
}

#[derive(Debug, clap::Args)]
pub struct OpsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: OpsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum OpsCommand {
    /// List operations, newest first.
    List {
        /// Only the operation of this request id.
        #[arg(long, default_value = "")]
        request_id: String,
        /// Only operations with this worker among their targets.
        #[arg(long, default_value = "")]
        worker: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Follow an operation until it ends.
    Watch {
        /// `operations/{id}`.
        name: String,
    },
    /// Cancel an operation: targets not started are not started.
    Cancel {
        /// `operations/{id}`.
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only entries by this actor (token name).
    #[arg(long, default_value = "")]
    pub actor: String,
    /// Only entries of this RPC (e.g. PauseConsuming).
    #[arg(long, default_value = "")]
    pub action: String,
    /// Only entries that targeted this worker.
    #[arg(long, default_value = "")]
    pub worker: String,
    /// Only entries that ended with this status code (OK, PERMISSION_DENIED, ...).
    #[arg(long, default_value = "")]
    pub outcome: String,
    /// Only entries of this request id.
    #[arg(long, default_value = "")]
    pub request_id: String,
    /// At most this many entries.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

fn selector(t: &Targets) -> Result<pb::Selector, ClientError> {
    let chosen = [
        !t.names.is_empty(),
        !t.labels.is_empty() || t.all,
        !t.groups.is_empty(),
    ];
    if chosen.iter().filter(|c| **c).count() != 1 || (t.all && !t.labels.is_empty()) {
        return Err(ClientError::Input(
            "name the workers, or select them with one of -l KEY=VALUE, --group, --all".into(),
        ));
    }
    Ok(pb::Selector {
        workers: t.names.clone(),
        filter: (!t.labels.is_empty() || t.all).then(|| pb::WorkerFilter {
            labels: t.labels.iter().cloned().collect(),
            ..Default::default()
        }),
        groups: t.groups.clone(),
    })
}

fn code(code: i32) -> String {
    pb::OutcomeCode::try_from(code)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("OUTCOME_CODE_")
                .to_string()
        })
        .unwrap_or_default()
}

fn state(state: i32) -> String {
    pb::OperationState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("OPERATION_STATE_")
                .to_string()
        })
        .unwrap_or_default()
}

fn outcomes_json(outcomes: &[pb::TargetOutcome]) -> Value {
    outcomes
        .iter()
        .map(|o| json!({"worker": o.worker, "code": code(o.code), "message": o.message}))
        .collect()
}

fn operation_json(op: &pb::Operation) -> Value {
    json!({
        "name": op.name,
        "verb": op.verb,
        "state": state(op.state),
        "actor": op.actor,
        "reason": op.reason,
        "dry_run": op.dry_run,
        "request_id": op.request_id,
        "done": op.done,
        "total": op.total,
        "audit_id": op.audit_id,
        "message": op.message,
        "targets": op.targets.iter().map(|t| json!({
            "worker": t.worker, "code": code(t.code), "message": t.message, "instance": t.instance,
        })).collect::<Vec<_>>(),
    })
}

fn print_sync(
    output: Output,
    audit_id: &str,
    dry_run: bool,
    outcomes: &[pb::TargetOutcome],
    revision: u64,
) {
    match output {
        Output::Json => println!(
            "{}",
            json!({"audit_id": audit_id, "dry_run": dry_run, "revision": revision,
                   "outcomes": outcomes_json(outcomes)})
        ),
        Output::Table => {
            for o in outcomes {
                println!("{}: {} ({})", o.worker, code(o.code), o.message);
            }
            if outcomes.is_empty() {
                println!("no workers selected");
            }
            println!(
                "audit id: {audit_id}{}",
                if dry_run { " (dry run)" } else { "" }
            );
        }
    }
}

fn print_operation(output: Output, op: &pb::Operation) {
    match output {
        Output::Json => println!("{}", operation_json(op)),
        Output::Table => {
            println!(
                "{} {}: {} ({}/{}) {}",
                if op.name.is_empty() {
                    "(dry run)"
                } else {
                    &op.name
                },
                op.verb,
                state(op.state),
                op.done,
                op.total,
                op.message
            );
            for t in &op.targets {
                println!("  {}: {} ({})", t.worker, code(t.code), t.message);
            }
        }
    }
}

/// Prints the operation, and with `wait`, follows it to its end; an operation that did not
/// succeed is an error (exit status 1).
async fn operation(
    client: &mut ControlClient<Channel>,
    args: &ClientArgs,
    op: pb::Operation,
    wait: bool,
) -> Result<(), ClientError> {
    if !wait || op.name.is_empty() {
        print_operation(args.output, &op);
        return Ok(());
    }
    follow(client, args, &op.name).await
}

async fn follow(
    client: &mut ControlClient<Channel>,
    args: &ClientArgs,
    name: &str,
) -> Result<(), ClientError> {
    let mut stream = client
        .watch_operation(request(
            args,
            pb::WatchOperationRequest {
                name: name.to_string(),
            },
        )?)
        .await?
        .into_inner();
    let mut last = None;
    while let Some(message) = stream.next().await {
        let Some(op) = message?.operation else {
            continue;
        };
        if args.output == Output::Table {
            println!(
                "{}: {} ({}/{}) {}",
                op.name,
                state(op.state),
                op.done,
                op.total,
                op.message
            );
        }
        last = Some(op);
    }
    let Some(op) = last else {
        return Err(ClientError::Input(
            "the operation stream ended empty".into(),
        ));
    };
    print_operation(args.output, &op);
    if op.state() == pb::OperationState::Succeeded {
        Ok(())
    } else {
        Err(ClientError::Input(format!(
            "{} ended {}",
            op.name,
            state(op.state)
        )))
    }
}

fn pacing(batch_size: u32, max_unavailable: u32) -> Option<pb::Pacing> {
    Some(pb::Pacing {
        batch_size,
        max_unavailable,
        ..Default::default()
    })
}

fn restart_mode(mode: Mode) -> pb::RestartMode {
    match mode {
        Mode::Pod | Mode::Drain => pb::RestartMode::Pod,
        Mode::Rollout => pb::RestartMode::Rollout,
        Mode::Pool => pb::RestartMode::Pool,
    }
}

pub async fn restart(args: RestartArgs) -> Result<(), ClientError> {
    let mut client = ControlClient::new(connect(&args.client).await?);
    let sel = Some(selector(&args.targets)?);
    let a = &args.acting;
    let op = if args.mode == Mode::Drain {
        client
            .drain_workers(request(
                &args.client,
                pb::DrainWorkersRequest {
                    selector: sel,
                    reason: a.reason.clone(),
                    dry_run: a.dry_run,
                    request_id: a.request_id.clone(),
                    max_targets: args.targets.max_targets,
                    pacing: pacing(args.batch_size, args.max_unavailable),
                    timeout: args.timeout.map(|t| prost_types::Duration {
                        seconds: t.as_secs() as i64,
                        nanos: t.subsec_nanos() as i32,
                    }),
                    mode: restart_mode(args.drain_mode).into(),
                    ..Default::default()
                },
            )?)
            .await?
            .into_inner()
            .operation
    } else {
        client
            .restart_workers(request(
                &args.client,
                pb::RestartWorkersRequest {
                    selector: sel,
                    reason: a.reason.clone(),
                    dry_run: a.dry_run,
                    request_id: a.request_id.clone(),
                    max_targets: args.targets.max_targets,
                    pacing: pacing(args.batch_size, args.max_unavailable),
                    mode: restart_mode(args.mode).into(),
                    ..Default::default()
                },
            )?)
            .await?
            .into_inner()
            .operation
    };
    let op = op.ok_or_else(|| ClientError::Input("no operation in the answer".into()))?;
    operation(&mut client, &args.client, op, a.wait).await
}

pub async fn shutdown(args: ShutdownArgs) -> Result<(), ClientError> {
    let mut client = ControlClient::new(connect(&args.client).await?);
    let a = &args.acting;
    let op = client
        .shutdown_workers(request(
            &args.client,
            pb::ShutdownWorkersRequest {
                selector: Some(selector(&args.targets)?),
                reason: a.reason.clone(),
                dry_run: a.dry_run,
                request_id: a.request_id.clone(),
                max_targets: args.targets.max_targets,
                force: args.force,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner()
        .operation
        .ok_or_else(|| ClientError::Input("no operation in the answer".into()))?;
    operation(&mut client, &args.client, op, a.wait).await
}

pub async fn pause(args: QueueArgs, resume: bool) -> Result<(), ClientError> {
    let mut client = ControlClient::new(connect(&args.client).await?);
    let a = &args.acting;
    let sel = Some(selector(&args.targets)?);
    let (audit_id, dry_run, outcomes, revision) = if resume {
        let r = client
            .resume_consuming(request(
                &args.client,
                pb::ResumeConsumingRequest {
                    selector: sel,
                    reason: a.reason.clone(),
                    dry_run: a.dry_run,
                    request_id: a.request_id.clone(),
                    max_targets: args.targets.max_targets,
                    queues: args.queues.clone(),
                    ..Default::default()
                },
            )?)
            .await?
            .into_inner();
        (r.audit_id, r.dry_run, r.outcomes, r.revision)
    } else {
        let r = client
            .pause_consuming(request(
                &args.client,
                pb::PauseConsumingRequest {
                    selector: sel,
                    reason: a.reason.clone(),
                    dry_run: a.dry_run,
                    request_id: a.request_id.clone(),
                    max_targets: args.targets.max_targets,
                    queues: args.queues.clone(),
                    ..Default::default()
                },
            )?)
            .await?
            .into_inner();
        (r.audit_id, r.dry_run, r.outcomes, r.revision)
    };
    print_sync(args.client.output, &audit_id, dry_run, &outcomes, revision);
    Ok(())
}

pub async fn cordon(args: CordonArgs, uncordon: bool) -> Result<(), ClientError> {
    let mut client = ControlClient::new(connect(&args.client).await?);
    let a = &args.acting;
    let sel = Some(selector(&args.targets)?);
    let (audit_id, dry_run, outcomes, revision) = if uncordon {
        let r = client
            .uncordon_workers(request(
                &args.client,
                pb::UncordonWorkersRequest {
                    selector: sel,
                    reason: a.reason.clone(),
                    dry_run: a.dry_run,
                    request_id: a.request_id.clone(),
                    max_targets: args.targets.max_targets,
                    ..Default::default()
                },
            )?)
            .await?
            .into_inner();
        (r.audit_id, r.dry_run, r.outcomes, r.revision)
    } else {
        let r = client
            .cordon_workers(request(
                &args.client,
                pb::CordonWorkersRequest {
                    selector: sel,
                    reason: a.reason.clone(),
                    dry_run: a.dry_run,
                    request_id: a.request_id.clone(),
                    max_targets: args.targets.max_targets,
                    ..Default::default()
                },
            )?)
            .await?
            .into_inner();
        (r.audit_id, r.dry_run, r.outcomes, r.revision)
    };
    print_sync(args.client.output, &audit_id, dry_run, &outcomes, revision);
    Ok(())
}

pub async fn scale(args: ScaleArgs) -> Result<(), ClientError> {
    let mut client = ControlClient::new(connect(&args.client).await?);
    let a = &args.acting;
    let op = client
        .scale_group(request(
            &args.client,
            pb::ScaleGroupRequest {
                reason: a.reason.clone(),
                dry_run: a.dry_run,
                request_id: a.request_id.clone(),
                group: args.group.clone(),
                replicas: args.replicas,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner()
        .operation
        .ok_or_else(|| ClientError::Input("no operation in the answer".into()))?;
    operation(&mut client, &args.client, op, a.wait).await
}

pub async fn launch(args: LaunchArgs) -> Result<(), ClientError> {
    let mut client = ControlClient::new(connect(&args.client).await?);
    let a = &args.acting;
    let op = client
        .launch_workers(request(
            &args.client,
            pb::LaunchWorkersRequest {
                reason: a.reason.clone(),
                dry_run: a.dry_run,
                request_id: a.request_id.clone(),
                group: args.group.clone(),
                count: args.count,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner()
        .operation
        .ok_or_else(|| ClientError::Input("no operation in the answer".into()))?;
    operation(&mut client, &args.client, op, a.wait).await
}

pub async fn ops(args: OpsArgs) -> Result<(), ClientError> {
    let mut client = ControlClient::new(connect(&args.client).await?);
    match &args.command {
        OpsCommand::List {
            request_id,
            worker,
            limit,
        } => {
            let r = client
                .list_operations(request(
                    &args.client,
                    pb::ListOperationsRequest {
                        request_id: request_id.clone(),
                        worker: worker.clone(),
                        page_size: *limit,
                        ..Default::default()
                    },
                )?)
                .await?
                .into_inner();
            match args.client.output {
                Output::Json => println!(
                    "{}",
                    Value::Array(r.operations.iter().map(operation_json).collect())
                ),
                Output::Table => {
                    println!(
                        "{:<36} {:<16} {:<20} {:>7}  MESSAGE",
                        "NAME", "VERB", "STATE", "DONE"
                    );
                    for op in &r.operations {
                        println!(
                            "{:<36} {:<16} {:<20} {:>3}/{:<3}  {}",
                            op.name,
                            op.verb,
                            state(op.state),
                            op.done,
                            op.total,
                            op.message
                        );
                    }
                }
            }
            Ok(())
        }
        OpsCommand::Watch { name } => follow(&mut client, &args.client, name).await,
        OpsCommand::Cancel { name, reason } => {
            let r = client
                .cancel_operation(request(
                    &args.client,
                    pb::CancelOperationRequest {
                        name: name.clone(),
                        reason: reason.clone(),
                        ..Default::default()
                    },
                )?)
                .await?
                .into_inner();
            if let Some(op) = r.operation {
                print_operation(args.client.output, &op);
            }
            Ok(())
        }
    }
}

pub async fn audit(args: AuditArgs) -> Result<(), ClientError> {
    let mut client = ControlClient::new(connect(&args.client).await?);
    let r = client
        .list_audit(request(
            &args.client,
            pb::ListAuditRequest {
                page_size: args.limit,
                worker: args.worker.clone(),
                actor: args.actor.clone(),
                action: args.action.clone(),
                request_id: args.request_id.clone(),
                outcome: args.outcome.clone(),
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    match args.client.output {
        Output::Json => println!(
            "{}",
            json!({
                "durable": r.durable,
                "entries": r.entries.iter().map(|e| {
                    let outcome = e.outcome.clone().unwrap_or_default();
                    json!({
                        "id": e.id,
                        "time": e.time.map(|t| t.seconds),
                        "actor": e.actor,
                        "action": e.action,
                        "targets": e.targets,
                        "reason": e.reason,
                        "dry_run": e.dry_run,
                        "request_id": e.request_id,
                        "allowed": e.allowed,
                        "code": outcome.code,
                        "message": outcome.message,
                        "operation": e.operation,
                        "trace_id": e.trace_id,
                        "outcomes": outcomes_json(&e.target_outcomes),
                    })
                }).collect::<Vec<_>>(),
            })
        ),
        Output::Table => {
            if !r.durable {
                println!("(no history store: the audit trail is kept in memory, newest 10,000)");
            }
            println!(
                "{:<20} {:<16} {:<18} {:<20} {:<8} TARGETS / REASON",
                "TIME", "ACTOR", "ACTION", "OUTCOME", "DRY RUN"
            );
            for e in &r.entries {
                let time = e
                    .time
                    .map(|t| {
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH
                                + std::time::Duration::from_secs(t.seconds.max(0) as u64),
                        )
                        .to_string()
                    })
                    .unwrap_or_default();
                println!(
                    "{:<20} {:<16} {:<18} {:<20} {:<8} {} {}",
                    time.trim_end_matches('Z'),
                    e.actor,
                    e.action,
                    e.outcome.as_ref().map(|o| o.code.as_str()).unwrap_or(""),
                    e.dry_run,
                    e.targets.join(","),
                    e.reason
                );
            }
        }
    }
    Ok(())
}
