//! `warden streams`: the Redis Streams consumer groups (lag, pending, oldest pending age,
//! consumers alive and stale, each consumer's pending and idle), and the Streams verbs
//! (`reclaim`, `discard`, `janitor`, each with `--dry-run`). `warden reclaim` is a shorthand.
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde_json::{Value, json};

use super::{
    ClientArgs, ClientError, Output, connect, human_duration, lifecycle_name, parse_duration,
    proto_duration, request,
};
use crate::proto::v1::{
    self as pb, control_client::ControlClient, worker_health_client::WorkerHealthClient,
};

#[derive(Debug, clap::Args)]
pub struct StreamsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub verb: Option<StreamsVerb>,
}

/// `warden reclaim STREAM GROUP`, the shorthand of `warden streams reclaim`.
#[derive(Debug, clap::Args)]
pub struct ReclaimCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub args: ReclaimArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum StreamsVerb {
    /// List the streams' consumer groups and their consumers (the default).
    List,
    /// Move dead consumers' pending entries to a live consumer (role operator).
    Reclaim(ReclaimArgs),
    /// Acknowledge and delete dead consumers' pending entries unprocessed (role admin).
    Discard(DiscardArgs),
    /// Run one janitor pass now: trim the streams, delete stale consumers (role admin).
    Janitor(JanitorArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReclaimArgs {
    /// The stream's key.
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// A dead consumer whose entries move (repeatable; default: every consumer with no live
    /// heartbeat).
    #[arg(long = "from")]
    pub from: Vec<String>,
    /// The live consumer that receives them (default: the one with the fewest pending).
    #[arg(long)]
    pub to: Option<String>,
    /// Only entries idle at least this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub min_idle: Duration,
    /// Most entries moved.
    #[arg(long, default_value_t = 1000)]
    pub max_entries: u32,
    /// Why, for the audit trail.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Say what would move; move nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct DiscardArgs {
    /// The stream's key.
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// A dead consumer whose entries go (repeatable; at least one).
    #[arg(long = "consumer", required = true)]
    pub consumers: Vec<String>,
    /// Only this entry id (repeatable; default: every qualifying entry).
    #[arg(long = "entry")]
    pub entries: Vec<String>,
    /// Only entries idle at least this long.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub min_idle: Duration,
    /// Most entries discarded.
    #[arg(long, default_value_t = 1000)]
    pub max_entries: u32,
    /// Why, for the audit trail.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Say what would go; discard nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct JanitorArgs {
    /// Delete consumers idle at least this long (default: the server's setting).
    #[arg(long, value_parser = parse_duration)]
    pub consumer_idle: Option<Duration>,
    /// Why, for the audit trail.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Say what the pass would do; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn secs(d: Option<&prost_types::Duration>) -> Value {
    proto_duration(d).map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

fn age(d: Option<&prost_types::Duration>) -> String {
    proto_duration(d).map_or_else(|| "-".into(), human_duration)
}

fn entries_json(entries: &[pb::PendingEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "consumer": e.consumer,
                    "idle_seconds": secs(e.idle.as_ref()),
                    "delivery_count": e.delivery_count,
                })
            })
            .collect(),
    )
}

fn entries_text(out: &mut String, verb: &str, entries: &[pb::PendingEntry]) {
    let _ = writeln!(out, "{verb} {} entries", entries.len());
    for e in entries {
        let _ = writeln!(
            out,
            "  {}  from {}  idle {}  delivered {}x",
            e.id,
            e.consumer,
            age(e.idle.as_ref()),
            e.delivery_count
        );
    }
}

/// Every Streams queue (consumer group), and every Streams consumer, paged to the end.
async fn fleet(client: &ClientArgs) -> Result<(Vec<pb::Queue>, Vec<pb::Worker>), ClientError> {
    let mut health = WorkerHealthClient::new(connect(client).await?);
    let mut queues = Vec::new();
    let mut token = String::new();
    loop {
        let page = health
            .list_queues(request(
                client,
                pb::ListQueuesRequest {
                    page_size: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                },
            )?)
            .await?
            .into_inner();
        queues.extend(
            page.queues
                .into_iter()
                .filter(|q| q.backend() == pb::Backend::RedisStreams),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut workers = Vec::new();
    token.clear();
    loop {
        let page = health
            .list_workers(request(
                client,
                pb::ListWorkersRequest {
                    filter: Some(pb::WorkerFilter {
                        backends: vec![pb::Backend::RedisStreams.into()],
                        ..Default::default()
                    }),
                    page_size: 1000,
                    page_token: token.clone(),
                    order_by: pb::WorkerOrder::Name.into(),
                    view: pb::WorkerView::Basic.into(),
                    ..Default::default()
                },
            )?)
            .await?
            .into_inner();
        workers.extend(page.workers);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok((queues, workers))
}

/// The groups table: one line per stream and group, then its consumers indented.
fn groups_table(queues: &[pb::Queue], workers: &[pb::Worker]) -> String {
    let mut by_group: BTreeMap<&str, Vec<&pb::Worker>> = BTreeMap::new();
    for w in workers {
        by_group.entry(w.scope.as_str()).or_default().push(w);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:>8} {:>8} {:>8} {:>14} {:>6} {:>6}",
        "STREAM:GROUP", "DEPTH", "LAG", "PENDING", "OLDEST PENDING", "ALIVE", "STALE"
    );
    for q in queues {
        let consumers = by_group.get(q.name.as_str()).map_or(&[][..], Vec::as_slice);
        let alive = consumers
            .iter()
            .filter(|w| w.lifecycle() == pb::Lifecycle::Alive)
            .count();
        let _ = writeln!(
            out,
            "{:<32} {:>8} {:>8} {:>8} {:>14} {:>6} {:>6}",
            q.name,
            q.depth,
            q.lag.map_or_else(|| "-".into(), |l| l.to_string()),
            q.unacked,
            age(q.oldest_pending_age.as_ref()),
            alive,
            consumers.len() - alive
        );
        for w in consumers {
            let s = w.streams.clone().unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<30} {:<8} pending {:>6}  idle {}",
                w.id,
                lifecycle_name(w.lifecycle),
                s.pending,
                age(s.idle.as_ref())
            );
        }
    }
    out
}

fn groups_json(queues: &[pb::Queue], workers: &[pb::Worker]) -> Value {
    Value::Array(
        queues
            .iter()
            .map(|q| {
                let consumers: Vec<Value> = workers
                    .iter()
                    .filter(|w| w.scope == q.name)
                    .map(|w| {
                        let s = w.streams.clone().unwrap_or_default();
                        json!({
                            "consumer": w.id,
                            "stream": s.stream,
                            "group": s.consumer_group,
                            "lifecycle": lifecycle_name(w.lifecycle),
                            "pending": s.pending,
                            "idle_seconds": secs(s.idle.as_ref()),
                        })
                    })
                    .collect();
                json!({
                    "queue": q.name,
                    "depth": q.depth,
                    "lag": q.lag,
                    "pending": q.unacked,
                    "oldest_pending_age_seconds": secs(q.oldest_pending_age.as_ref()),
                    "consumers": consumers,
                })
            })
            .collect(),
    )
}

pub async fn reclaim(client: &ClientArgs, args: &ReclaimArgs) -> Result<(), ClientError> {
    let mut control = ControlClient::new(connect(client).await?);
    let r = control
        .reclaim_pending(request(
            client,
            pb::ReclaimPendingRequest {
                stream: args.stream.clone(),
                group: args.group.clone(),
                from_consumers: args.from.clone(),
                to_consumer: args.to.clone().unwrap_or_default(),
                min_idle: Some(proto(args.min_idle)),
                max_entries: args.max_entries,
                reason: args.reason.clone(),
                dry_run: args.dry_run,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    match client.output {
        Output::Json => println!(
            "{}",
            json!({
                "dry_run": r.dry_run,
                "to_consumer": r.to_consumer,
                "entries": entries_json(&r.entries),
                "skipped_consumers": r.skipped_consumers,
                "truncated": r.truncated,
                "audit_id": r.audit_id,
            })
        ),
        Output::Table => {
            let mut out = String::new();
            let verb = if r.dry_run { "would move" } else { "moved" };
            entries_text(
                &mut out,
                &format!("{verb} to {}:", r.to_consumer),
                &r.entries,
            );
            for s in &r.skipped_consumers {
                let _ = writeln!(out, "skipped {s}: it has a live heartbeat");
            }
            if r.truncated {
                let _ = writeln!(out, "more entries qualify: run again");
            }
            let _ = writeln!(out, "audit id: {}", r.audit_id);
            print!("{out}");
        }
    }
    Ok(())
}

async fn discard(client: &ClientArgs, args: &DiscardArgs) -> Result<(), ClientError> {
    let mut control = ControlClient::new(connect(client).await?);
    let r = control
        .discard_pending(request(
            client,
            pb::DiscardPendingRequest {
                stream: args.stream.clone(),
                group: args.group.clone(),
                consumers: args.consumers.clone(),
                entry_ids: args.entries.clone(),
                min_idle: Some(proto(args.min_idle)),
                max_entries: args.max_entries,
                reason: args.reason.clone(),
                dry_run: args.dry_run,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    match client.output {
        Output::Json => println!(
            "{}",
            json!({
                "dry_run": r.dry_run,
                "entries": entries_json(&r.entries),
                "deleted_consumers": r.deleted_consumers,
                "skipped_consumers": r.skipped_consumers,
                "truncated": r.truncated,
                "audit_id": r.audit_id,
            })
        ),
        Output::Table => {
            let mut out = String::new();
            let verb = if r.dry_run {
                "would discard"
            } else {
                "discarded"
            };
            entries_text(&mut out, verb, &r.entries);
            for c in &r.deleted_consumers {
                let _ = writeln!(
                    out,
                    "{} consumer {c}",
                    if r.dry_run { "would delete" } else { "deleted" }
                );
            }
            for s in &r.skipped_consumers {
                let _ = writeln!(out, "skipped {s}: it has a live heartbeat");
            }
            let _ = writeln!(out, "audit id: {}", r.audit_id);
            print!("{out}");
        }
    }
    Ok(())
}

async fn janitor(client: &ClientArgs, args: &JanitorArgs) -> Result<(), ClientError> {
    let mut control = ControlClient::new(connect(client).await?);
    let r = control
        .run_janitor(request(
            client,
            pb::RunJanitorRequest {
                consumer_idle: args.consumer_idle.map(proto),
                reason: args.reason.clone(),
                dry_run: args.dry_run,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    match client.output {
        Output::Json => println!(
            "{}",
            json!({
                "dry_run": r.dry_run,
                "trims": r.trims.iter().map(|t| json!({
                    "stream": t.stream, "bound": t.bound, "entries": t.entries,
                })).collect::<Vec<_>>(),
                "deleted_consumers": r.deleted_consumers.iter().map(|c| json!({
                    "stream": c.stream, "group": c.group, "consumer": c.consumer,
                    "idle_seconds": secs(c.idle.as_ref()),
                })).collect::<Vec<_>>(),
                "audit_id": r.audit_id,
            })
        ),
        Output::Table => {
            let mut out = String::new();
            let (trim, delete) = if r.dry_run {
                ("would trim", "would delete")
            } else {
                ("trimmed", "deleted")
            };
            for t in &r.trims {
                if t.bound.is_empty() {
                    let _ = writeln!(out, "{}: no consumer group, not trimmed", t.stream);
                } else {
                    let _ = writeln!(
                        out,
                        "{}: {trim} {} entries below {}",
                        t.stream, t.entries, t.bound
                    );
                }
            }
            for c in &r.deleted_consumers {
                let _ = writeln!(
                    out,
                    "{delete} consumer {} of {}:{} (idle {})",
                    c.consumer,
                    c.stream,
                    c.group,
                    age(c.idle.as_ref())
                );
            }
            let _ = writeln!(out, "audit id: {}", r.audit_id);
            print!("{out}");
        }
    }
    Ok(())
}

/// `warden streams [VERB]`.
pub async fn run(args: &StreamsArgs) -> Result<(), ClientError> {
    match &args.verb {
        None | Some(StreamsVerb::List) => {
            let (queues, workers) = fleet(&args.client).await?;
            match args.client.output {
                Output::Json => println!("{}", groups_json(&queues, &workers)),
                Output::Table => print!("{}", groups_table(&queues, &workers)),
            }
            Ok(())
        }
        Some(StreamsVerb::Reclaim(a)) => reclaim(&args.client, a).await,
        Some(StreamsVerb::Discard(a)) => discard(&args.client, a).await,
        Some(StreamsVerb::Janitor(a)) => janitor(&args.client, a).await,
    }
}
