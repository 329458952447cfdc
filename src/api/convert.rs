//! Domain types to protobuf and back (enums from requests), in one place.
use std::time::{Duration, SystemTime};

use crate::{
    api::ApiError,
    fleet::{self, Snapshot},
    proto::v1 as pb,
};

/// A worker's resource usage; stale while its source is down.
pub fn resources(
    r: &fleet::ResourceUsage,
    now: SystemTime,
    snapshot: &Snapshot,
) -> pb::ResourceUsage {
    pb::ResourceUsage {
        cpu_percent: r.cpu_percent,
        memory_rss_bytes: r.memory_bytes,
        memory_limit_bytes: r.memory_limit_bytes,
        memory_percent: r.memory_percent(),
        gpus: if r.gpu_util_percent.is_some() || r.gpu_memory_percent.is_some() {
            vec![pb::GpuUsage {
                utilization_percent: r.gpu_util_percent,
                memory_percent: r.gpu_memory_percent,
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        // Sources report the worker's container filesystem as one figure: its root.
        disks: r
            .disk_percent
            .map(|p| pb::DiskUsage {
                mount_point: "/".into(),
                used_percent: Some(p),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        sampled_at: Some(timestamp(r.sampled_at)),
        source: r.source.to_string(),
        stale: snapshot.sources.get(r.source).is_some_and(|s| !s.connected),
        age: Some(duration(
            now.duration_since(r.sampled_at).unwrap_or_default(),
        )),
    }
}

pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    t.into()
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn activity(a: fleet::Activity) -> pb::Activity {
    match a {
        fleet::Activity::Active => pb::Activity::Active,
        fleet::Activity::Idle => pb::Activity::Idle,
        fleet::Activity::Unresponsive => pb::Activity::Unresponsive,
    }
}

pub fn lifecycle(l: fleet::Lifecycle) -> pb::Lifecycle {
    match l {
        fleet::Lifecycle::Alive => pb::Lifecycle::Alive,
        fleet::Lifecycle::Offline => pb::Lifecycle::Offline,
        fleet::Lifecycle::Lost => pb::Lifecycle::Lost,
        fleet::Lifecycle::Unknown => pb::Lifecycle::Unknown,
    }
}

pub fn backend(b: fleet::Backend) -> pb::Backend {
    match b {
        fleet::Backend::Celery => pb::Backend::Celery,
        fleet::Backend::RedisStreams => pb::Backend::RedisStreams,
    }
}

pub fn health_status(h: fleet::HealthStatus) -> pb::HealthStatus {
    match h {
        fleet::HealthStatus::Healthy => pb::HealthStatus::Healthy,
        fleet::HealthStatus::Warning => pb::HealthStatus::Warning,
        fleet::HealthStatus::Critical => pb::HealthStatus::Critical,
    }
}

fn severity(h: fleet::HealthStatus) -> pb::Severity {
    match h {
        fleet::HealthStatus::Healthy => pb::Severity::Info,
        fleet::HealthStatus::Warning => pb::Severity::Warning,
        fleet::HealthStatus::Critical => pb::Severity::Critical,
    }
}

/// How much of a worker to send (`WorkerView`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Identity, state, counts: no task lists, no per-task breakdown, no findings.
    Basic,
    Full,
}

/// Reads a request's `view`; UNSPECIFIED means the RPC's own default.
pub fn view(raw: i32, default: View) -> Result<View, ApiError> {
    match pb::WorkerView::try_from(raw) {
        Ok(pb::WorkerView::Unspecified) => Ok(default),
        Ok(pb::WorkerView::Basic) => Ok(View::Basic),
        Ok(pb::WorkerView::Full) => Ok(View::Full),
        Err(_) => Err(ApiError::invalid("view", format!("unknown value {raw}"))),
    }
}

/// `groups/{backend}/{id}`; empty for a worker whose group is not known yet.
pub fn group_name(backend: fleet::Backend, id: &str) -> String {
    if id == fleet::UNGROUPED || id.is_empty() {
        return String::new();
    }
    format!("groups/{}/{}", backend.slug(), fleet::percent_encode(id))
}

/// A group as a request names it (resource name or bare id) -> its id.
pub fn group_id(field: &str, name: &str) -> Result<String, ApiError> {
    let Some(rest) = name.strip_prefix("groups/") else {
        return Ok(name.to_string());
    };
    let (slug, id) = rest
        .split_once('/')
        .ok_or_else(|| ApiError::invalid(field, "expected groups/{backend}/{id}"))?;
    fleet::Backend::from_slug(slug)
        .ok_or_else(|| ApiError::invalid(field, format!("unknown backend {slug:?}")))?;
    fleet::percent_decode(id).ok_or_else(|| ApiError::invalid(field, "malformed percent-encoding"))
}

pub fn finding(f: &fleet::Finding) -> pb::Finding {
    pb::Finding {
        check: f.check.to_string(),
        severity: severity(f.status).into(),
        message: f.message.clone(),
        observed: f.observed,
        threshold: f.threshold,
        unit: f.unit.to_string(),
        check_failed: f.error,
    }
}

pub fn worker(w: &fleet::Worker, now: SystemTime, snapshot: &Snapshot, view: View) -> pb::Worker {
    let full = view == View::Full;
    let stale_sources: Vec<String> = snapshot
        .stale_sources(w.backend())
        .iter()
        .map(|s| s.source.to_string())
        .collect();
    pb::Worker {
        // Asked of the runtime by GetWorker only (see `instance`).
        instance: None,
        name: w.key.resource_name(),
        id: w.id().to_string(),
        backend: backend(w.backend()).into(),
        scope: w.key.scope.to_string(),
        group: group_name(w.backend(), &w.group),
        labels: w
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        activity: activity(w.activity).into(),
        lifecycle: lifecycle(w.lifecycle).into(),
        health: w.health.as_ref().map(|h| pb::Health {
            status: health_status(h.status).into(),
            score: h.score,
            findings: if full {
                h.findings.iter().map(finding).collect()
            } else {
                Vec::new()
            },
            evaluated_at: Some(timestamp(h.evaluated_at)),
            passing_checks: if full {
                h.passing.iter().map(|c| c.to_string()).collect()
            } else {
                Vec::new()
            },
        }),
        hostname: w.hostname.clone(),
        pid: w.pid,
        uptime: w.uptime(now).map(duration),
        first_seen: Some(timestamp(w.first_seen)),
        last_seen: Some(timestamp(w.last_seen)),
        heartbeat_age: w
            .last_heartbeat
            .map(|t| duration(now.duration_since(t).unwrap_or_default())),
        heartbeat_interval: w.heartbeat_interval.map(duration),
        active_tasks: w.active_tasks,
        processed_tasks: w.processed_total,
        pool: w.pool.as_ref().map(|p| pb::Pool {
            implementation: p.implementation.clone(),
            max_concurrency: p.max_concurrency,
            processes: p.processes.clone(),
            max_tasks_per_child: (p.max_tasks_per_child > 0).then_some(p.max_tasks_per_child),
        }),
        queues: w
            .queues
            .iter()
            .map(|q| pb::ConsumedQueue {
                name: q.name.clone(),
                exchange: q.exchange.clone(),
                routing_key: q.routing_key.clone(),
            })
            .collect(),
        registered_tasks: if full {
            w.registered.to_vec()
        } else {
            Vec::new()
        },
        active: if full {
            w.active
                .iter()
                .map(|t| pb::ActiveTask {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    started: t.started.map(timestamp),
                    runtime: t
                        .started
                        .map(|s| duration(now.duration_since(s).unwrap_or_default())),
                    worker_pid: (t.worker_pid > 0).then_some(t.worker_pid),
                    args: t.args.clone(),
                    kwargs: t.kwargs.clone(),
                    acknowledged: t.acknowledged,
                })
                .collect()
        } else {
            Vec::new()
        },
        load_average: w.load_average.map(|[one, five, fifteen]| pb::LoadAverage {
            one,
            five,
            fifteen,
        }),
        task_stats: w.task_stats.as_ref().map(|t| task_stats(t, view)),
        software: w.software.as_ref().map(|s| pb::Software {
            ident: s.ident.clone(),
            version: s.version.clone(),
            system: s.system.clone(),
        }),
        processed_by_task: if full {
            w.processed_by_task
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        } else {
            Default::default()
        },
        stale: !stale_sources.is_empty(),
        stale_sources,
        prefetch_count: w.prefetch_count,
        resources: w.resources.as_deref().map(|r| resources(r, now, snapshot)),
        control: None,
        recovery: None,
        streams: w.stream.as_ref().map(|s| pb::StreamsConsumer {
            stream: s.stream.clone(),
            consumer_group: s.group.clone(),
            pending: s.pending,
            idle: Some(duration(s.idle)),
            last_delivered_id: s.last_delivered_id.clone(),
        }),
    }
}

/// Whether the answer is current: every source's status, and a refresh that failed.
pub fn freshness(snapshot: &Snapshot, refresh_error: Option<&str>) -> pb::Freshness {
    let broker = snapshot.broker();
    // Only sources that workers are observed through make live data stale (the history
    // store being down does not); every source is listed.
    let mut reasons: Vec<String> = snapshot
        .sources
        .values()
        .filter(|s| !s.connected && !s.backends.is_empty())
        .map(|s| format!("{}: {}", s.source, s.reason))
        .collect();
    if snapshot.sources.is_empty() {
        reasons.push(format!("broker: {}", broker.reason));
    }
    if let Some(err) = refresh_error {
        reasons.push(format!("refresh failed: {err}"));
    }
    pb::Freshness {
        stale: !reasons.is_empty(),
        reason: reasons.join("; "),
        updated_at: broker.last_ok.map(timestamp),
        sources: snapshot
            .sources
            .values()
            .map(|s| pb::SourceStatus {
                source: s.source.to_string(),
                available: s.connected,
                reason: s.reason.clone(),
                last_ok: s.last_ok.map(timestamp),
            })
            .collect(),
    }
}

/// Reads a repeated enum field, rejecting values this server does not know.
pub fn enum_values<E, D>(
    field: &str,
    raw: &[i32],
    known: impl Fn(i32) -> Option<E>,
    domain: impl Fn(E) -> Option<D>,
) -> Result<Vec<D>, ApiError> {
    raw.iter()
        .map(|&v| {
            known(v).and_then(&domain).ok_or_else(|| {
                ApiError::invalid(field, format!("unknown or unspecified value {v}"))
            })
        })
        .collect()
}

/// Longest name glob accepted (globs compile to regexes: bound the work).
const MAX_GLOB_BYTES: usize = 256;

/// Compiles a request's name glob; empty means no glob. Errors name `field`.
pub fn glob(field: &str, pattern: &str) -> Result<Option<globset::GlobMatcher>, ApiError> {
    if pattern.is_empty() {
        return Ok(None);
    }
    if pattern.len() > MAX_GLOB_BYTES {
        return Err(ApiError::invalid(
            field,
            format!("longer than {MAX_GLOB_BYTES} bytes"),
        ));
    }
    fleet::WorkerFilter::glob(pattern)
        .map(Some)
        .map_err(|e| ApiError::invalid(field, e.to_string()))
}

/// Most labels and groups a filter may name; longest queue name.
const MAX_FILTER_LABELS: usize = 32;
const MAX_FILTER_GROUPS: usize = 100;
const MAX_QUEUE_BYTES: usize = 255;

/// Converts and validates a request's worker filter; errors name `field.<part>`.
pub fn worker_filter(
    f: Option<&pb::WorkerFilter>,
    field: &str,
) -> Result<fleet::WorkerFilter, ApiError> {
    let Some(f) = f else {
        return Ok(fleet::WorkerFilter::default());
    };
    let activities = enum_values(
        &format!("{field}.activities"),
        &f.activities,
        |v| pb::Activity::try_from(v).ok(),
        |a| match a {
            pb::Activity::Active => Some(fleet::Activity::Active),
            pb::Activity::Idle => Some(fleet::Activity::Idle),
            pb::Activity::Unresponsive => Some(fleet::Activity::Unresponsive),
            pb::Activity::Unspecified => None,
        },
    )?;
    let lifecycles = enum_values(
        &format!("{field}.lifecycles"),
        &f.lifecycles,
        |v| pb::Lifecycle::try_from(v).ok(),
        |l| match l {
            pb::Lifecycle::Alive => Some(fleet::Lifecycle::Alive),
            pb::Lifecycle::Offline => Some(fleet::Lifecycle::Offline),
            pb::Lifecycle::Lost => Some(fleet::Lifecycle::Lost),
            pb::Lifecycle::Unknown => Some(fleet::Lifecycle::Unknown),
            pb::Lifecycle::Unspecified => None,
        },
    )?;
    let health = enum_values(
        &format!("{field}.health"),
        &f.health,
        |v| pb::HealthStatus::try_from(v).ok(),
        |h| match h {
            pb::HealthStatus::Healthy => Some(fleet::HealthStatus::Healthy),
            pb::HealthStatus::Warning => Some(fleet::HealthStatus::Warning),
            pb::HealthStatus::Critical => Some(fleet::HealthStatus::Critical),
            pb::HealthStatus::Unspecified => None,
        },
    )?;
    let backends = enum_values(
        &format!("{field}.backends"),
        &f.backends,
        |v| pb::Backend::try_from(v).ok(),
        backend_from_pb,
    )?;
    if f.labels.len() > MAX_FILTER_LABELS {
        return Err(ApiError::invalid(
            format!("{field}.labels"),
            format!("at most {MAX_FILTER_LABELS} labels"),
        ));
    }
    if f.groups.len() > MAX_FILTER_GROUPS {
        return Err(ApiError::invalid(
            format!("{field}.groups"),
            format!("at most {MAX_FILTER_GROUPS} groups"),
        ));
    }
    if f.queue.len() > MAX_QUEUE_BYTES {
        return Err(ApiError::invalid(
            format!("{field}.queue"),
            format!("longer than {MAX_QUEUE_BYTES} bytes"),
        ));
    }
    let groups = f
        .groups
        .iter()
        .map(|g| group_id(&format!("{field}.groups"), g))
        .collect::<Result<_, _>>()?;
    let name_glob = glob(&format!("{field}.name_glob"), &f.name_glob)?;
    Ok(fleet::WorkerFilter {
        activities,
        lifecycles,
        health,
        backends,
        groups,
        labels: f
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        queue: (!f.queue.is_empty()).then(|| f.queue.clone()),
        name_glob,
    })
}

pub fn backend_from_pb(b: pb::Backend) -> Option<fleet::Backend> {
    match b {
        pb::Backend::Celery => Some(fleet::Backend::Celery),
        pb::Backend::RedisStreams => Some(fleet::Backend::RedisStreams),
        pb::Backend::Unspecified => None,
    }
}

fn distribution(d: &fleet::DistributionReport) -> pb::Distribution {
    let at = |secs: f32| (d.count > 0).then(|| duration(Duration::from_secs_f32(secs.max(0.0))));
    pb::Distribution {
        count: d.count,
        mean: at(d.mean),
        min: at(d.min),
        max: at(d.max),
        p50: at(d.p50),
        p90: at(d.p90),
        p95: at(d.p95),
        p99: at(d.p99),
    }
}

fn window(w: &fleet::WindowReport) -> pb::WindowStats {
    pb::WindowStats {
        window: Some(duration(w.window())),
        covered: Some(duration(w.covered())),
        throughput_per_min: w.throughput_per_min(),
        succeeded_per_min: w.succeeded_per_min(),
        received: w.counts.received.into(),
        started: w.counts.started.into(),
        succeeded: w.counts.succeeded.into(),
        failed: w.counts.failed.into(),
        retried: w.counts.retried.into(),
        rejected: w.counts.rejected.into(),
        revoked: w.counts.revoked.into(),
        error_rate: w.error_rate(),
        runtime: Some(distribution(&w.runtime)),
        queue_wait: Some(distribution(&w.queue_wait)),
    }
}

pub fn task_stats(t: &fleet::TaskStats, view: View) -> pb::TaskStats {
    pb::TaskStats {
        windows: t.overall.iter().map(window).collect(),
        by_task: if view == View::Full {
            t.by_task
                .iter()
                .map(|(name, windows)| pb::TaskNameStats {
                    task_name: name.to_string(),
                    windows: windows.iter().map(window).collect(),
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

pub fn queue(q: &fleet::QueueInfo) -> pb::Queue {
    pb::Queue {
        name: q.name.clone(),
        backend: backend(q.backend).into(),
        depth: q.depth,
        by_priority: q
            .by_priority
            .iter()
            .map(|(priority, depth)| pb::PriorityDepth {
                priority: *priority,
                depth: *depth,
            })
            .collect(),
        unacked: q.unacked,
        consumers: q.consumers.len() as u32,
        consumer_names: q.consumers.iter().map(|k| k.resource_name()).collect(),
        updated_at: Some(timestamp(q.updated_at)),
        lag: q.lag,
        oldest_pending_age: q.oldest_pending_age.map(duration),
        oldest_message_age: None,
    }
}

pub fn group(g: &fleet::GroupInfo) -> pb::Group {
    pb::Group {
        name: group_name(g.backend, &g.id),
        id: g.id.to_string(),
        backend: backend(g.backend).into(),
        kind: match g.backend {
            fleet::Backend::Celery => pb::GroupKind::CeleryQueues,
            fleet::Backend::RedisStreams => pb::GroupKind::StreamsConsumerGroup,
        }
        .into(),
        labels: Default::default(),
        workers: g.workers,
        alive: g.alive,
        active: g.active,
        idle: g.idle,
        unresponsive: g.unresponsive,
        offline: g.offline,
        lost: g.lost,
        desired_replicas: None,
        queues: g.queues.clone(),
        active_tasks: g.active_tasks,
        pool_capacity: g.pool_capacity,
        unknown: g.unknown,
    }
}

pub fn summary(s: &fleet::Summary) -> pb::FleetSummary {
    pb::FleetSummary {
        workers: s.workers,
        active: s.active,
        idle: s.idle,
        unresponsive: s.unresponsive,
        alive: s.alive,
        offline: s.offline,
        lost: s.lost,
        healthy: s.healthy,
        warning: s.warning,
        critical: s.critical,
        health_unknown: s.health_unknown,
        active_tasks: s.active_tasks,
        processed_tasks: s.processed_tasks,
        throughput_per_min: s.throughput_per_min,
        queued_messages: s.queued_messages,
        unacked_messages: s.unacked_messages,
        pool_capacity: s.pool_capacity,
        groups: s.groups,
        unknown: s.unknown,
    }
}

/// A runtime's view of a worker's instance.
pub fn instance(runtime: &str, i: &fleet::ports::InstanceInfo) -> pb::RuntimeInstance {
    use fleet::ports::ExitStatus;
    pb::RuntimeInstance {
        runtime: runtime.to_string(),
        source: i.source.clone(),
        running: i.running,
        restarts: i.restarts,
        start_time: i.started_at.map(timestamp),
        last_exit: i.last_exit.as_ref().map(|e| pb::InstanceExit {
            exit_code: match e.status {
                ExitStatus::Code(c) => Some(c),
                ExitStatus::Signal(_) => None,
            },
            signal: match e.status {
                ExitStatus::Signal(s) => Some(s),
                ExitStatus::Code(_) => None,
            },
            reason: e.reason.clone().unwrap_or_default(),
            time: Some(timestamp(e.at)),
            requested: e.requested,
        }),
        group: i.group.clone(),
    }
}
