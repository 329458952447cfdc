//! Domain types to protobuf and back (enums from requests), in one place.
use std::time::{Duration, SystemTime};

use crate::{
    api::ApiError,
    fleet::{self, BrokerStatus, Snapshot, Thresholds},
    proto::v1 as pb,
};

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

/// How much of a worker to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// ListWorkers, WatchFleet: no active task list, no per-task breakdown.
    Summary,
    /// GetWorker: everything.
    Full,
}

pub fn worker(
    w: &fleet::Worker,
    now: SystemTime,
    thresholds: Thresholds,
    broker: &BrokerStatus,
    detail: Detail,
) -> pb::Worker {
    let health = fleet::filter::health(w, now, thresholds);
    pb::Worker {
        name: w.name.clone(),
        backend: backend(w.backend).into(),
        activity: activity(w.activity).into(),
        lifecycle: lifecycle(w.lifecycle).into(),
        health: Some(pb::Health {
            status: health_status(health.status).into(),
            score: health.score,
            findings: health
                .findings
                .into_iter()
                .map(|f| pb::Finding {
                    check: f.check.to_string(),
                    severity: severity(f.status).into(),
                    message: f.message,
                    observed: f.observed,
                    threshold: f.threshold,
                })
                .collect(),
        }),
        hostname: w.hostname.clone(),
        pid: w.pid.unwrap_or(0),
        uptime: w.uptime(now).map(duration),
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
            max_tasks_per_child: p.max_tasks_per_child,
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
        registered_tasks: w.registered.to_vec(),
        active: if detail == Detail::Full {
            w.active
                .iter()
                .map(|t| pb::ActiveTask {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    started: t.started.map(timestamp),
                    runtime: t
                        .started
                        .map(|s| duration(now.duration_since(s).unwrap_or_default())),
                    worker_pid: t.worker_pid,
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
        task_stats: w.task_stats.as_ref().map(|t| task_stats(t, detail)),
        software: w.software.as_ref().map(|s| pb::Software {
            ident: s.ident.clone(),
            version: s.version.clone(),
            system: s.system.clone(),
        }),
        processed_by_task: w
            .processed_by_task
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        stale: !broker.connected,
        first_seen: Some(timestamp(w.first_seen)),
        prefetch_count: w.prefetch_count.unwrap_or(0),
    }
}

pub fn freshness(snapshot: &Snapshot, refresh_error: Option<&str>) -> pb::Freshness {
    let broker = &snapshot.broker;
    let mut reason = broker.reason.clone();
    if let Some(err) = refresh_error {
        if !reason.is_empty() {
            reason.push_str("; ");
        }
        reason.push_str("refresh failed: ");
        reason.push_str(err);
    }
    pb::Freshness {
        stale: !broker.connected,
        reason: if broker.connected && refresh_error.is_none() {
            String::new()
        } else {
            reason
        },
        updated_at: broker.last_ok.map(timestamp),
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

/// Converts and validates a request's worker filter.
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
        |b| match b {
            pb::Backend::Celery => Some(fleet::Backend::Celery),
            pb::Backend::RedisStreams => Some(fleet::Backend::RedisStreams),
            pb::Backend::Unspecified => None,
        },
    )?;
    let name_glob = glob(&format!("{field}.name_glob"), &f.name_glob)?;
    Ok(fleet::WorkerFilter {
        activities,
        lifecycles,
        health,
        backends,
        queue: (!f.queue.is_empty()).then(|| f.queue.clone()),
        name_glob,
    })
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

pub fn task_stats(t: &fleet::TaskStats, detail: Detail) -> pb::TaskStats {
    pb::TaskStats {
        windows: t.overall.iter().map(window).collect(),
        by_task: if detail == Detail::Full {
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
        consumer_names: q.consumers.clone(),
        updated_at: Some(timestamp(q.updated_at)),
    }
}
