//! The checks, the verdict and the evaluator at fixed times (no clock, no sleeping).
use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use imbl::{OrdMap, Vector};
use warden_core::{
    Backend, ConsumedQueue, Finding, Health, HealthStatus, Lifecycle, Pool, QueueInfo,
    ResourceUsage, SourceStatus, TaskStats, WindowReport, Worker, WorkerKey,
    perf::{Counts, DistributionReport, TaskTotals},
    state::Snapshot,
};

use crate::{
    Baseline, Baselines, CycleSummary, Evaluator, HealthConfig, Override, Settings,
    checks::{CHECKS, Check, CheckError, Context, Outcome},
    verdict::{Weights, score, status},
};

const START: u64 = 1_700_000_000;

fn t(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(START) + Duration::from_secs_f64(secs)
}

fn key(id: &str) -> WorkerKey {
    WorkerKey::new(Backend::Celery, "redis://b", id)
}

/// An alive worker heard from at 0 s, consuming `celery`, in group `default`.
fn worker(id: &str) -> Worker {
    let mut w = Worker::new(key(id), t(0.0));
    w.group = "default".into();
    w.queues = vec![queue("celery")];
    w
}

fn queue(name: &str) -> ConsumedQueue {
    ConsumedQueue {
        name: name.into(),
        ..Default::default()
    }
}

fn depth(name: &str, messages: u64) -> QueueInfo {
    QueueInfo {
        name: name.into(),
        backend: Backend::Celery,
        depth: messages,
        lag: None,
        oldest_pending_age: None,
        by_priority: vec![(0, messages)],
        unacked: 0,
        consumers: Vec::new(),
        updated_at: t(0.0),
    }
}

fn broker(connected: bool) -> SourceStatus {
    SourceStatus {
        source: "broker",
        backends: vec![Backend::Celery],
        connected,
        reason: if connected {
            String::new()
        } else {
            "connection refused".into()
        },
        last_ok: Some(t(0.0)),
    }
}

fn snapshot(workers: Vec<Worker>, queues: Vec<QueueInfo>, sources: Vec<SourceStatus>) -> Snapshot {
    Snapshot {
        epoch: 1,
        revision: 1,
        at: t(0.0),
        workers: workers
            .into_iter()
            .map(|w| (w.key.clone(), Arc::new(w)))
            .collect::<OrdMap<_, _>>(),
        queues: queues
            .into_iter()
            .map(|q| ((q.backend, q.name.clone()), Arc::new(q)))
            .collect(),
        recent: Vector::new(),
        sources: sources.into_iter().map(|s| (s.source, s)).collect(),
        workers_refused: 0,
        tasks_sent: Default::default(),
    }
}

fn usage(f: impl FnOnce(&mut ResourceUsage)) -> Option<Arc<ResourceUsage>> {
    let mut u = ResourceUsage {
        source: "proc",
        sampled_at: t(0.0),
        cpu_percent: None,
        memory_bytes: None,
        memory_limit_bytes: None,
        gpu_util_percent: None,
        gpu_memory_percent: None,
        disk_percent: None,
    };
    f(&mut u);
    Some(Arc::new(u))
}

/// Task stats whose 5 min window (fully covered) holds `succeeded` and `failed` tasks with
/// the given p95 runtime.
fn stats(succeeded: u32, failed: u32, p95: f32) -> Option<Arc<TaskStats>> {
    let report = |window_secs| WindowReport {
        window_secs,
        covered_secs: window_secs,
        counts: Counts {
            succeeded,
            failed,
            started: succeeded + failed,
            ..Default::default()
        },
        runtime: DistributionReport {
            count: u64::from(succeeded + failed),
            p95,
            ..Default::default()
        },
        queue_wait: DistributionReport::default(),
    };
    Some(Arc::new(TaskStats {
        overall: [report(60), report(300), report(3600)],
        by_task: Vec::new(),
        totals: vec![(
            Arc::from("app.task"),
            TaskTotals {
                started: u64::from(succeeded + failed),
                succeeded: u64::from(succeeded),
                failed: u64::from(failed),
                ..Default::default()
            },
        )],
    }))
}

/// One worker, one evaluation with the default config at `now`.
fn judge(w: Worker, now: f64) -> Health {
    judge_with(
        &HealthConfig::default(),
        w,
        vec![],
        vec![broker(true)],
        &Baselines::default(),
        now,
    )
}

fn judge_with(
    config: &HealthConfig,
    w: Worker,
    queues: Vec<QueueInfo>,
    sources: Vec<SourceStatus>,
    baselines: &Baselines,
    now: f64,
) -> Health {
    let mut evaluator = Evaluator::new(config).unwrap();
    let k = w.key.clone();
    let verdicts = evaluator.evaluate(&snapshot(vec![w], queues, sources), baselines, t(now));
    verdicts
        .into_iter()
        .find(|(key, _)| *key == k)
        .map(|(_, h)| h)
        .expect("a verdict")
}

fn finding<'a>(h: &'a Health, check: &str) -> Option<&'a Finding> {
    h.findings.iter().find(|f| f.check == check)
}

fn status_of(h: &Health, check: &str) -> Option<HealthStatus> {
    finding(h, check).map(|f| f.status)
}

fn passes(h: &Health, check: &str) -> bool {
    h.passing.contains(&check)
}

// ---- CPU ------------------------------------------------------------------------------

fn cpu_worker(percent: f64) -> Worker {
    let mut w = worker("cpu@h");
    w.resources = usage(|u| u.cpu_percent = Some(percent));
    w
}

#[test]
fn cpu_fires_at_its_thresholds() {
    let h = judge(cpu_worker(79.9), 1.0);
    assert!(passes(&h, "cpu") && finding(&h, "cpu").is_none(), "{h:?}");
    let h = judge(cpu_worker(80.0), 1.0);
    let f = finding(&h, "cpu").unwrap();
    assert_eq!(
        (f.status, f.observed, f.threshold, f.unit),
        (HealthStatus::Warning, 80.0, 80.0, "percent")
    );
    assert_eq!(f.message, "CPU 80 % (warning at 80 %)");
    assert!(!passes(&h, "cpu"));
    assert_eq!(
        status_of(&judge(cpu_worker(94.9), 1.0), "cpu"),
        Some(HealthStatus::Warning)
    );
    let h = judge(cpu_worker(95.0), 1.0);
    assert_eq!(status_of(&h, "cpu"), Some(HealthStatus::Critical));
    assert_eq!(finding(&h, "cpu").unwrap().threshold, 95.0);
    assert_eq!(
        status_of(&judge(cpu_worker(95.1), 1.0), "cpu"),
        Some(HealthStatus::Critical)
    );
}

#[test]
fn cpu_is_judged_per_allowed_core() {
    // A 4-process prefork pool: 380 % of one core is 95 % of its 4 cores.
    let mut w = cpu_worker(380.0);
    w.pool = Some(Pool {
        implementation: "prefork".into(),
        max_concurrency: 4,
        ..Default::default()
    });
    let h = judge(w.clone(), 1.0);
    let f = finding(&h, "cpu").unwrap();
    assert_eq!((f.status, f.observed), (HealthStatus::Critical, 95.0));
    assert_eq!(
        f.message,
        "CPU 95 % of 4 cores (380 % of one core) (critical at 95 %)"
    );
    // 316 % of one core is 79 % of 4: fine.
    w.resources = usage(|u| u.cpu_percent = Some(316.0));
    assert!(passes(&judge(w.clone(), 1.0), "cpu"));
    // A threads pool runs behind one interpreter lock: one core.
    w.pool = Some(Pool {
        implementation: "threads".into(),
        max_concurrency: 8,
        ..Default::default()
    });
    w.resources = usage(|u| u.cpu_percent = Some(96.0));
    assert_eq!(
        status_of(&judge(w.clone(), 1.0), "cpu"),
        Some(HealthStatus::Critical)
    );
    // Configured cores win over the pool.
    let config = HealthConfig {
        defaults: Settings {
            cpu_cores: Some(2.0),
            ..Default::default()
        },
        ..Default::default()
    };
    w.resources = usage(|u| u.cpu_percent = Some(160.0));
    let h = judge_with(&config, w, vec![], vec![], &Baselines::default(), 1.0);
    assert_eq!(finding(&h, "cpu").unwrap().observed, 80.0);
}

#[test]
fn no_resource_source_is_neither_a_finding_nor_a_pass() {
    let h = judge(worker("bare@h"), 1.0);
    for check in ["cpu", "memory", "gpu", "disk", "forecast"] {
        assert!(!passes(&h, check), "{check}: {h:?}");
        assert!(finding(&h, check).is_none(), "{check}: {h:?}");
    }
    assert_eq!(h.status, HealthStatus::Healthy);
    // A figure the source does not give is not passing either.
    let mut w = worker("cpu-only@h");
    w.resources = usage(|u| u.cpu_percent = Some(10.0));
    let h = judge(w, 1.0);
    assert!(passes(&h, "cpu"));
    assert!(!passes(&h, "memory") && !passes(&h, "gpu") && !passes(&h, "disk"));
}

// ---- Memory, GPU, disk ------------------------------------------------------------------

fn memory_worker(used: u64, limit: Option<u64>) -> Worker {
    let mut w = worker("mem@h");
    w.resources = usage(|u| {
        u.memory_bytes = Some(used);
        u.memory_limit_bytes = limit;
    });
    w
}

#[test]
fn memory_fires_at_its_thresholds() {
    let limit = Some(1000);
    assert!(passes(&judge(memory_worker(849, limit), 1.0), "memory"));
    let h = judge(memory_worker(850, limit), 1.0);
    let f = finding(&h, "memory").unwrap();
    assert_eq!(
        (f.status, f.observed, f.threshold),
        (HealthStatus::Warning, 85.0, 85.0)
    );
    assert_eq!(
        status_of(&judge(memory_worker(949, limit), 1.0), "memory"),
        Some(HealthStatus::Warning)
    );
    assert_eq!(
        status_of(&judge(memory_worker(950, limit), 1.0), "memory"),
        Some(HealthStatus::Critical)
    );
    // No limit reported and no absolute one configured: nothing to judge against.
    let h = judge(memory_worker(10 << 30, None), 1.0);
    assert!(!passes(&h, "memory") && finding(&h, "memory").is_none());
}

#[test]
fn the_absolute_memory_limit_is_critical_when_reached() {
    let config = HealthConfig {
        defaults: Settings {
            memory_bytes: Some(1 << 30),
            ..Default::default()
        },
        ..Default::default()
    };
    let run = |used, limit| {
        judge_with(
            &config,
            memory_worker(used, limit),
            vec![],
            vec![],
            &Baselines::default(),
            1.0,
        )
    };
    assert!(passes(&run((1 << 30) - 1, None), "memory"));
    let h = run(1 << 30, None);
    let f = finding(&h, "memory").unwrap();
    assert_eq!(
        (f.status, f.unit, f.observed, f.threshold),
        (HealthStatus::Critical, "bytes", 1073741824.0, 1073741824.0)
    );
    assert_eq!(f.message, "memory 1 GiB (critical at 1 GiB)");
    // Below the percent warning but at the absolute limit: one critical finding.
    let h = run(1 << 30, Some(4 << 30));
    assert_eq!(h.findings.len(), 1, "{h:?}");
    assert_eq!(h.status, HealthStatus::Critical);
    // Both critical: still one finding (the percent one).
    let h = run(1 << 30, Some(1 << 30));
    assert_eq!(h.findings.len(), 1, "{h:?}");
    assert_eq!(h.findings[0].unit, "percent");
}

#[test]
fn gpu_and_disk_fire_at_their_thresholds() {
    let gpu = |p| {
        let mut w = worker("gpu@h");
        w.resources = usage(|u| u.gpu_memory_percent = Some(p));
        judge(w, 1.0)
    };
    assert!(passes(&gpu(89.9), "gpu"));
    assert_eq!(status_of(&gpu(90.0), "gpu"), Some(HealthStatus::Critical));
    let disk = |p| {
        let mut w = worker("disk@h");
        w.resources = usage(|u| u.disk_percent = Some(p));
        judge(w, 1.0)
    };
    assert!(passes(&disk(89.9), "disk"));
    assert_eq!(status_of(&disk(90.0), "disk"), Some(HealthStatus::Warning));
    assert_eq!(status_of(&disk(94.9), "disk"), Some(HealthStatus::Warning));
    assert_eq!(status_of(&disk(95.0), "disk"), Some(HealthStatus::Critical));
}

// ---- Heartbeat and lifecycle -------------------------------------------------------------

#[test]
fn heartbeat_fires_at_its_thresholds() {
    let w = worker("hb@h");
    let h = judge(w.clone(), 29.999);
    assert!(passes(&h, "heartbeat"), "{h:?}");
    let h = judge(w.clone(), 30.0);
    let f = finding(&h, "heartbeat").unwrap();
    assert_eq!(
        (f.status, f.observed, f.threshold, f.unit),
        (HealthStatus::Warning, 30.0, 30.0, "s")
    );
    assert_eq!(f.message, "heartbeat 30 s late (warning at 30 s)");
    assert_eq!(
        status_of(&judge(w.clone(), 59.999), "heartbeat"),
        Some(HealthStatus::Warning)
    );
    let h = judge(w.clone(), 60.0);
    assert_eq!(status_of(&h, "heartbeat"), Some(HealthStatus::Critical));
    assert_eq!(
        finding(&h, "heartbeat").unwrap().message,
        "heartbeat 60 s late (critical at 60 s)"
    );
    // Lateness is silence beyond the announced heartbeat period.
    let mut w2 = w;
    w2.heartbeat_interval = Some(Duration::from_secs(2));
    assert!(passes(&judge(w2.clone(), 31.999), "heartbeat"));
    assert_eq!(
        status_of(&judge(w2, 32.0), "heartbeat"),
        Some(HealthStatus::Warning)
    );
}

#[test]
fn lost_workers_get_one_critical_finding_and_offline_ones_none() {
    let mut lost = worker("lost@h");
    lost.lifecycle = Lifecycle::Lost;
    let mut offline = worker("offline@h");
    offline.lifecycle = Lifecycle::Offline;
    offline.offline_at = Some(t(1.0));
    let mut unknown = worker("unknown@h");
    unknown.lifecycle = Lifecycle::Unknown;
    unknown.resources = usage(|u| u.cpu_percent = Some(99.0));
    let mut evaluator = Evaluator::new(&HealthConfig::default()).unwrap();
    let verdicts = evaluator.evaluate(
        &snapshot(vec![lost, offline, unknown], vec![], vec![broker(true)]),
        &Baselines::default(),
        t(95.0),
    );
    assert_eq!(verdicts.len(), 2, "offline is not evaluated");
    let lost = &verdicts
        .iter()
        .find(|(k, _)| *k == key("lost@h"))
        .unwrap()
        .1;
    assert_eq!(lost.findings.len(), 1);
    let f = &lost.findings[0];
    assert_eq!(
        (f.check, f.status, f.observed),
        ("heartbeat", HealthStatus::Critical, 95.0)
    );
    assert_eq!(f.message, "lost: heartbeat 95 s late (critical at 60 s)");
    assert_eq!((lost.status, lost.score), (HealthStatus::Critical, 0.5));
    assert!(lost.passing.is_empty());
    let unknown = &verdicts
        .iter()
        .find(|(k, _)| *k == key("unknown@h"))
        .unwrap()
        .1;
    assert_eq!(status_of(unknown, "cpu"), Some(HealthStatus::Critical));
    let s = evaluator.summary();
    assert_eq!((s.evaluated, s.skipped, s.critical), (2, 1, 2));
    assert_eq!(s.evaluated_at, Some(t(95.0)));
}

// ---- Task performance --------------------------------------------------------------------

fn tasks_worker(succeeded: u32, failed: u32) -> Worker {
    let mut w = worker("tasks@h");
    w.task_stats = stats(succeeded, failed, 1.0);
    w
}

#[test]
fn error_rate_fires_at_its_thresholds() {
    let rate = |failed| judge(tasks_worker(1000 - failed, failed), 1.0);
    let h = rate(99);
    assert!(passes(&h, "error_rate"), "{h:?}");
    let h = rate(100);
    let f = finding(&h, "error_rate").unwrap();
    assert_eq!(
        (f.status, f.observed, f.threshold, f.unit),
        (HealthStatus::Warning, 0.1, 0.1, "ratio")
    );
    assert_eq!(
        f.message,
        "error rate 10 % over 5 min (100 of 1000 tasks failed; warning at 10 %)"
    );
    assert_eq!(
        status_of(&rate(199), "error_rate"),
        Some(HealthStatus::Warning)
    );
    assert_eq!(
        status_of(&rate(200), "error_rate"),
        Some(HealthStatus::Critical)
    );
}

#[test]
fn error_rate_needs_enough_finished_tasks() {
    // One failure of two is no evidence: nothing said, and not passing.
    let h = judge(tasks_worker(1, 1), 1.0);
    assert!(finding(&h, "error_rate").is_none() && !passes(&h, "error_rate"));
    let h = judge(tasks_worker(4, 5), 1.0);
    assert!(finding(&h, "error_rate").is_none() && !passes(&h, "error_rate"));
    // Ten finished: judged.
    let h = judge(tasks_worker(5, 5), 1.0);
    assert_eq!(status_of(&h, "error_rate"), Some(HealthStatus::Critical));
    // No task at all: not passing.
    assert!(!passes(&judge(tasks_worker(0, 0), 1.0), "error_rate"));
    // A configured minimum.
    let config = HealthConfig {
        defaults: Settings {
            min_tasks: Some(2),
            ..Default::default()
        },
        ..Default::default()
    };
    let h = judge_with(
        &config,
        tasks_worker(1, 1),
        vec![],
        vec![],
        &Baselines::default(),
        1.0,
    );
    assert_eq!(status_of(&h, "error_rate"), Some(HealthStatus::Critical));
}

fn baselines(p95: Option<f64>, per_min: Option<f64>) -> Baselines {
    let mut b = Baselines::default();
    for id in ["tasks@h", "stall@h"] {
        b.workers.insert(
            key(id),
            Baseline {
                p95_runtime_secs: p95,
                throughput_per_min: per_min,
            },
        );
    }
    b
}

#[test]
fn latency_fires_at_twice_the_baseline() {
    let run = |p95: f32, b: &Baselines| {
        let mut w = worker("tasks@h");
        w.task_stats = stats(100, 0, p95);
        judge_with(&HealthConfig::default(), w, vec![], vec![], b, 1.0)
    };
    let b = baselines(Some(1.0), None);
    assert!(passes(&run(1.999, &b), "latency"));
    let h = run(2.0, &b);
    let f = finding(&h, "latency").unwrap();
    assert_eq!(
        (f.status, f.observed, f.threshold, f.unit),
        (HealthStatus::Warning, 2.0, 2.0, "s")
    );
    assert_eq!(
        f.message,
        "p95 runtime 2 s over 5 min is 2× its 24 h baseline 1 s (warning at 2×)"
    );
    // No baseline: skipped, not passing.
    let h = run(50.0, &Baselines::default());
    assert!(finding(&h, "latency").is_none() && !passes(&h, "latency"));
    // Too few tasks: skipped.
    let mut w = worker("tasks@h");
    w.task_stats = stats(5, 0, 50.0);
    let h = judge_with(&HealthConfig::default(), w, vec![], vec![], &b, 1.0);
    assert!(finding(&h, "latency").is_none() && !passes(&h, "latency"));
}

#[test]
fn throughput_fires_at_half_the_baseline_while_work_waits() {
    let b = baselines(None, Some(10.0));
    // 5 min window: 25 tasks = 5/min, exactly half the baseline.
    let run = |finished: u32, waiting: u64| {
        judge_with(
            &HealthConfig::default(),
            tasks_worker(finished, 0),
            vec![depth("celery", waiting)],
            vec![broker(true)],
            &b,
            1.0,
        )
    };
    let h = run(25, 40);
    let f = finding(&h, "throughput").unwrap();
    assert_eq!(
        (f.status, f.observed, f.threshold, f.unit),
        (HealthStatus::Warning, 5.0, 5.0, "per_min")
    );
    assert!(
        f.message
            .contains("while queue \"celery\" holds 40 messages"),
        "{}",
        f.message
    );
    assert!(passes(&run(26, 40), "throughput"));
    // An empty queue: a slow worker with nothing to do is fine.
    assert!(passes(&run(0, 0), "throughput"));
    // A worker observed for less than the window has no rate yet.
    let mut young = tasks_worker(0, 0);
    let mut s = (*young.task_stats.take().unwrap()).clone();
    s.overall[1].covered_secs = 299;
    young.task_stats = Some(Arc::new(s));
    let h = judge_with(
        &HealthConfig::default(),
        young,
        vec![depth("celery", 40)],
        vec![broker(true)],
        &b,
        1.0,
    );
    assert!(finding(&h, "throughput").is_none() && !passes(&h, "throughput"));
}

// ---- Queue connection --------------------------------------------------------------------

#[test]
fn queue_connection_needs_the_broker_and_the_right_queues() {
    let h = judge(worker("q@h"), 1.0);
    assert!(passes(&h, "queue_connection"), "{h:?}");
    // Broker down: critical.
    let h = judge_with(
        &HealthConfig::default(),
        worker("q@h"),
        vec![],
        vec![broker(false)],
        &Baselines::default(),
        45.0,
    );
    let f = finding(&h, "queue_connection").unwrap();
    assert_eq!(f.status, HealthStatus::Critical);
    assert_eq!(f.message, "broker unreachable for 45 s: connection refused");
    // No broker status known: not passing (nothing says it is reachable).
    let h = judge_with(
        &HealthConfig::default(),
        worker("q@h"),
        vec![],
        vec![],
        &Baselines::default(),
        1.0,
    );
    assert!(!passes(&h, "queue_connection") && finding(&h, "queue_connection").is_none());
    // Expected queues of its group.
    let config = HealthConfig {
        overrides: vec![Override {
            group: Some("default".into()),
            expected_queues: Some(vec!["celery".into(), "priority".into()]),
            ..Default::default()
        }],
        ..Default::default()
    };
    let run = |w: Worker| {
        judge_with(
            &config,
            w,
            vec![],
            vec![broker(true)],
            &Baselines::default(),
            1.0,
        )
    };
    let f = run(worker("q@h"))
        .findings
        .into_iter()
        .find(|f| f.check == "queue_connection")
        .unwrap();
    assert_eq!((f.status, f.observed), (HealthStatus::Warning, 0.5));
    assert_eq!(
        f.message,
        "not consuming expected queue priority (1 of 2 consumed)"
    );
    let mut w = worker("q@h");
    w.queues = vec![queue("other")];
    assert_eq!(
        status_of(&run(w.clone()), "queue_connection"),
        Some(HealthStatus::Critical)
    );
    w.queues = vec![queue("priority"), queue("celery")];
    assert!(passes(&run(w), "queue_connection"));
    // Without expected queues: a worker whose queues are known must consume one.
    let mut none = worker("q@h");
    none.queues.clear();
    let h = judge(none.clone(), 1.0);
    assert_eq!(
        finding(&h, "queue_connection").unwrap().message,
        "consumes no queue"
    );
    // Queues not reported yet (no group): no verdict on them.
    none.group = warden_core::UNGROUPED.into();
    let h = judge(none, 1.0);
    assert!(!passes(&h, "queue_connection") && finding(&h, "queue_connection").is_none());
}

// ---- Stalled -------------------------------------------------------------------------------

/// Runs the evaluator over a sequence of (time, worker, queue depth) and returns the verdicts.
fn cycles(evaluator: &mut Evaluator, steps: &[(f64, &Worker, u64)]) -> Vec<Health> {
    steps
        .iter()
        .map(|(now, w, waiting)| {
            let snap = snapshot(
                vec![(*w).clone()],
                vec![depth("celery", *waiting)],
                vec![broker(true)],
            );
            let mut v = evaluator.evaluate(&snap, &Baselines::default(), t(*now));
            v.remove(0).1
        })
        .collect()
}

fn seen_at(mut w: Worker, at: f64) -> Worker {
    w.last_seen = t(at);
    w
}

#[test]
fn stalled_fires_after_a_minute_without_progress() {
    let mut e = Evaluator::new(&HealthConfig::default()).unwrap();
    let w = worker("stall@h");
    let h = cycles(
        &mut e,
        &[
            (0.0, &w, 10),
            (30.0, &seen_at(w.clone(), 30.0), 10),
            (59.999, &seen_at(w.clone(), 59.0), 10),
            (60.0, &seen_at(w.clone(), 59.0), 10),
        ],
    );
    assert!(passes(&h[0], "stalled"));
    assert!(passes(&h[2], "stalled"), "{:?}", h[2]);
    let f = finding(&h[3], "stalled").unwrap();
    assert_eq!(
        (f.status, f.observed, f.threshold, f.unit),
        (HealthStatus::Critical, 60.0, 60.0, "s")
    );
    assert_eq!(
        f.message,
        "stalled: queue \"celery\" holds 10 messages and no task started for 60 s (critical at 60 s)"
    );
}

#[test]
fn progress_or_an_active_task_resets_the_stall() {
    let mut e = Evaluator::new(&HealthConfig::default()).unwrap();
    let w = worker("stall@h");
    let mut progressed = seen_at(w.clone(), 40.0);
    progressed.processed_total = 1;
    let mut busy = seen_at(w.clone(), 100.0);
    busy.processed_total = 1;
    busy.active_tasks = 1;
    let mut idle = seen_at(w.clone(), 150.0);
    idle.processed_total = 1;
    let h = cycles(
        &mut e,
        &[
            (0.0, &w, 10),
            (40.0, &progressed, 10),
            (99.999, &seen_at(progressed.clone(), 99.0), 10),
            (100.0, &busy, 10),
            (159.999, &idle, 10),
            (160.0, &idle, 10),
        ],
    );
    assert!(passes(&h[2], "stalled"), "progress at 40 s: {:?}", h[2]);
    assert!(passes(&h[3], "stalled"), "a running task is not a stall");
    assert!(passes(&h[4], "stalled"), "it ran a task at 100 s");
    assert_eq!(status_of(&h[5], "stalled"), Some(HealthStatus::Critical));
}

#[test]
fn the_stall_counts_from_when_work_arrived() {
    let mut e = Evaluator::new(&HealthConfig::default()).unwrap();
    let w = worker("stall@h");
    let at = |s: f64| seen_at(w.clone(), s);
    // Idle with an empty queue for 10 minutes, then messages arrive at 600 s.
    let h = cycles(
        &mut e,
        &[
            (0.0, &w, 0),
            (300.0, &at(300.0), 0),
            (600.0, &at(600.0), 5),
            (659.999, &at(659.0), 5),
            (660.0, &at(659.0), 5),
        ],
    );
    assert!(passes(&h[2], "stalled"), "{:?}", h[2]);
    assert!(passes(&h[3], "stalled"));
    assert_eq!(status_of(&h[4], "stalled"), Some(HealthStatus::Critical));
}

#[test]
fn stalled_is_not_judged_without_queue_figures_or_when_not_alive() {
    let mut w = worker("stall@h");
    w.lifecycle = Lifecycle::Unknown;
    let h = judge(w, 120.0);
    assert!(!passes(&h, "stalled") && finding(&h, "stalled").is_none());
    let h = judge(worker("stall@h"), 1.0); // no depth for its queue
    assert!(!passes(&h, "stalled") && finding(&h, "stalled").is_none());
}

// ---- Forecast -------------------------------------------------------------------------------

const MIB: f64 = 1024.0 * 1024.0;

/// A worker sampled at `at` using `bytes` of a 1000 MiB limit.
fn sampled(at: f64, bytes: f64) -> Worker {
    let mut w = seen_at(worker("fc@h"), at);
    w.resources = usage(|u| {
        u.sampled_at = t(at);
        u.memory_bytes = Some(bytes as u64);
        u.memory_limit_bytes = Some((1000.0 * MIB) as u64);
    });
    w
}

fn forecast_run(points: usize, every: f64, value: impl Fn(f64) -> f64) -> Health {
    let mut e = Evaluator::new(&HealthConfig::default()).unwrap();
    let mut last = None;
    for i in 0..points {
        let at = i as f64 * every;
        let snap = snapshot(vec![sampled(at, value(at))], vec![], vec![broker(true)]);
        last = Some(e.evaluate(&snap, &Baselines::default(), t(at)).remove(0).1);
    }
    last.unwrap()
}

#[test]
fn a_steady_rise_predicts_when_memory_runs_out() {
    // 500 MiB rising 20 MiB/min, sampled every 30 s for 10 min (21 samples): at 600 s it
    // holds 700 MiB; the 300 MiB left take 15 min.
    let h = forecast_run(21, 30.0, |at| 500.0 * MIB + at / 60.0 * 20.0 * MIB);
    let f = finding(&h, "forecast").unwrap();
    assert_eq!(
        (f.status, f.unit, f.threshold),
        (HealthStatus::Warning, "s", 1800.0)
    );
    assert!((f.observed - 900.0).abs() < 1e-6, "{}", f.observed);
    assert_eq!(
        f.message,
        "memory reaches its limit 1000 MiB in 15 min (+20 MiB/min over the last 10 min; \
         warning within 30 min)"
    );
    // Slower: 500 MiB left at 10 MiB/min is 50 min, beyond the horizon: passing.
    let h = forecast_run(21, 30.0, |at| 400.0 * MIB + at / 60.0 * 10.0 * MIB);
    assert!(
        finding(&h, "forecast").is_none() && passes(&h, "forecast"),
        "{h:?}"
    );
}

#[test]
fn flat_falling_or_sparse_series_predict_nothing() {
    let h = forecast_run(21, 30.0, |_| 900.0 * MIB);
    assert!(finding(&h, "forecast").is_none() && passes(&h, "forecast"));
    let h = forecast_run(21, 30.0, |at| 900.0 * MIB - at * 1000.0);
    assert!(finding(&h, "forecast").is_none() && passes(&h, "forecast"));
    // Four samples: too few (min 5) — not judged, not passing.
    let h = forecast_run(4, 30.0, |at| 500.0 * MIB + at * MIB);
    assert!(finding(&h, "forecast").is_none() && !passes(&h, "forecast"));
    // Five: judged (and 1 MiB/s fills the rest within minutes).
    let h = forecast_run(5, 30.0, |at| 500.0 * MIB + at * MIB);
    assert!(finding(&h, "forecast").is_some(), "{h:?}");
}

#[test]
fn only_the_window_is_fitted() {
    // A fast rise long ago, flat for the last 10 minutes: no forecast.
    let h = forecast_run(60, 30.0, |at| {
        if at < 1170.0 {
            100.0 * MIB + at * 0.5 * MIB
        } else {
            700.0 * MIB
        }
    });
    assert!(
        finding(&h, "forecast").is_none() && passes(&h, "forecast"),
        "{h:?}"
    );
}

#[test]
fn the_fit_is_least_squares() {
    use crate::checks::forecast::fit;
    // y = 2x + 1 with noise that cancels: slope 2, value at x = 10 is 21.
    let points = [(0.0, 1.5), (1.0, 2.5), (2.0, 4.5), (3.0, 7.5)];
    let line = fit(points.iter().copied(), 10.0).unwrap();
    assert!((line.slope - 2.0).abs() < 1e-9, "{line:?}");
    assert!((line.value_now - 21.0).abs() < 1e-9, "{line:?}");
    assert!(fit([(5.0, 1.0), (5.0, 2.0)].iter().copied(), 5.0).is_none());
}

#[test]
fn the_forecast_fires_within_the_horizon() {
    use crate::{checks::forecast::eta, memory::Series};
    let mut s = Series::default();
    // 1 per second; at 10 s the value is 10; limit 1810 is reached in exactly 1800 s.
    for i in 0..=10 {
        s.push(i as f64, i as f64);
    }
    let (eta, _) = eta(&s, 10.0, 1810.0, 5).unwrap();
    assert!((eta - 1800.0).abs() < 1e-9, "{eta}");
    // Already at the limit: 0.
    assert_eq!(
        super::checks::forecast::eta(&s, 10.0, 5.0, 5).unwrap().0,
        0.0
    );
}

// ---- Overrides through the evaluator ---------------------------------------------------------

#[test]
fn a_pattern_beats_the_group_which_beats_the_defaults() {
    let config = HealthConfig {
        defaults: Settings {
            cpu_warning: Some(80.0),
            ..Default::default()
        },
        overrides: vec![
            Override {
                worker: Some("batch-*".into()),
                cpu_warning: Some(85.0),
                ..Default::default()
            },
            Override {
                group: Some("video".into()),
                cpu_warning: Some(90.0),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let mut plain = worker("web@h");
    plain.resources = usage(|u| u.cpu_percent = Some(86.0));
    let mut video = plain.clone();
    video.key = key("video@h");
    video.group = "video".into();
    let mut batch = video.clone();
    batch.key = key("batch-1@h");
    let mut e = Evaluator::new(&config).unwrap();
    let v = e.evaluate(
        &snapshot(vec![plain, video, batch], vec![], vec![broker(true)]),
        &Baselines::default(),
        t(1.0),
    );
    let cpu = |id: &str| {
        let h = &v.iter().find(|(k, _)| *k == key(id)).unwrap().1;
        (status_of(h, "cpu"), finding(h, "cpu").map(|f| f.threshold))
    };
    assert_eq!(cpu("web@h"), (Some(HealthStatus::Warning), Some(80.0)));
    assert_eq!(cpu("video@h"), (None, None));
    assert_eq!(cpu("batch-1@h"), (Some(HealthStatus::Warning), Some(85.0)));
}

#[test]
fn a_disabled_check_does_not_run() {
    let config = HealthConfig {
        defaults: Settings {
            disable: Some(vec!["cpu".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let h = judge_with(
        &config,
        cpu_worker(99.0),
        vec![],
        vec![broker(true)],
        &Baselines::default(),
        1.0,
    );
    assert!(finding(&h, "cpu").is_none() && !passes(&h, "cpu"));
    assert!(passes(&h, "heartbeat"));
}

// ---- Score and verdict --------------------------------------------------------------------

fn f(status: HealthStatus, error: bool) -> Finding {
    Finding {
        check: "x",
        status,
        message: String::new(),
        observed: 0.0,
        threshold: 0.0,
        unit: "s",
        error,
    }
}

#[test]
fn the_score_is_one_minus_the_weights_clamped() {
    use HealthStatus::*;
    let w = Weights::default();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert_eq!(score(&[], w), 1.0);
    assert!(close(score(&[f(Warning, false)], w), 0.85));
    assert!(close(
        score(&[f(Warning, false), f(Warning, false)], w),
        0.70
    ));
    assert!(close(
        score(&[f(Warning, false), f(Critical, false)], w),
        0.35
    ));
    assert_eq!(score(&[f(Critical, false), f(Critical, false)], w), 0.0);
    assert_eq!(
        score(
            &[f(Critical, false), f(Critical, false), f(Warning, false)],
            w
        ),
        0.0,
        "clamped at 0"
    );
    // Informational and error findings weigh nothing.
    assert_eq!(score(&[f(Healthy, false), f(Critical, true)], w), 1.0);
    assert_eq!(status(&[f(Critical, true), f(Warning, false)]), Warning);
    assert_eq!(status(&[f(Critical, true)]), Healthy);
    // Configured weights.
    let config = HealthConfig {
        warning_weight: 0.3,
        critical_weight: 1.0,
        ..Default::default()
    };
    let h = judge_with(
        &config,
        cpu_worker(85.0),
        vec![],
        vec![broker(true)],
        &Baselines::default(),
        1.0,
    );
    assert!(close(h.score, 0.7), "{}", h.score);
}

#[test]
fn the_verdict_is_the_worst_finding() {
    // CPU warning and heartbeat critical: critical, 1 - 0.15 - 0.5.
    let h = judge(cpu_worker(85.0), 60.0);
    assert_eq!(h.status, HealthStatus::Critical);
    assert!((h.score - 0.35).abs() < 1e-12);
    assert_eq!(h.evaluated_at, t(60.0));
    assert_eq!(h.passing, vec!["queue_connection"]);
}

// ---- Failing checks ---------------------------------------------------------------------------

#[test]
fn a_check_that_fails_yields_an_error_finding_and_the_others_still_decide() {
    let mut w = worker("broken@h");
    w.resources = usage(|u| {
        u.cpu_percent = Some(f64::NAN);
        u.memory_bytes = Some(960);
        u.memory_limit_bytes = Some(1000);
    });
    let mut e = Evaluator::new(&HealthConfig::default()).unwrap();
    let v = e.evaluate(
        &snapshot(vec![w], vec![], vec![broker(true)]),
        &Baselines::default(),
        t(31.0),
    );
    let h = &v[0].1;
    let cpu = finding(h, "cpu").unwrap();
    assert!(cpu.error, "{cpu:?}");
    assert_eq!(cpu.message, "unusable figure: cpu_percent is NaN");
    assert!(!passes(h, "cpu"));
    // Memory critical and heartbeat warning still decide.
    assert_eq!(status_of(h, "memory"), Some(HealthStatus::Critical));
    assert_eq!(status_of(h, "heartbeat"), Some(HealthStatus::Warning));
    assert_eq!(h.status, HealthStatus::Critical);
    assert!((h.score - 0.35).abs() < 1e-12, "{}", h.score);
    let s: &CycleSummary = e.summary();
    assert_eq!(
        (s.failed_checks, s.workers_failed, s.unobservable_checks),
        (1, 1, 0)
    );
    assert_eq!(s.failed_share(), 1.0);
}

fn panics(_: &Context<'_>) -> Result<Outcome, CheckError> {
    panic!("index out of bounds")
}

#[test]
fn a_panicking_check_is_contained() {
    let mut checks: Vec<Check> = CHECKS.to_vec();
    checks.insert(
        0,
        Check {
            id: "cpu",
            unit: "percent",
            run: panics,
        },
    );
    let mut e = Evaluator::with_checks(&HealthConfig::default(), checks).unwrap();
    let healthy = worker("fine@h");
    let v = e.evaluate(
        &snapshot(vec![healthy, worker("late@h")], vec![], vec![broker(true)]),
        &Baselines::default(),
        t(45.0),
    );
    for (_, h) in &v {
        let failed = &h.findings[0];
        assert!(
            failed.error && failed.message.contains("index out of bounds"),
            "{failed:?}"
        );
        assert_eq!(status_of(h, "heartbeat"), Some(HealthStatus::Warning));
    }
    assert_eq!(e.summary().workers_failed, 2);
}

#[test]
fn a_source_down_is_an_error_finding_but_not_an_engine_failure() {
    let mut w = cpu_worker(99.0);
    let down = SourceStatus {
        source: "proc",
        backends: vec![],
        connected: false,
        reason: "timed out".into(),
        last_ok: None,
    };
    w.last_seen = t(0.0);
    let h = judge_with(
        &HealthConfig::default(),
        w.clone(),
        vec![],
        vec![broker(true), down],
        &Baselines::default(),
        1.0,
    );
    let cpu = finding(&h, "cpu").unwrap();
    assert!(cpu.error);
    assert_eq!(cpu.message, "proc is down (timed out): not checked");
    assert_eq!(
        h.status,
        HealthStatus::Healthy,
        "stale figures do not decide"
    );
    // The broker down: the heartbeat cannot be judged, the connection is critical.
    let mut e = Evaluator::new(&HealthConfig::default()).unwrap();
    let v = e.evaluate(
        &snapshot(
            vec![worker("b@h")],
            vec![depth("celery", 3)],
            vec![broker(false)],
        ),
        &Baselines::default(),
        t(90.0),
    );
    let h = &v[0].1;
    assert!(finding(h, "heartbeat").unwrap().error);
    assert!(finding(h, "stalled").unwrap().error);
    assert_eq!(
        status_of(h, "queue_connection"),
        Some(HealthStatus::Critical)
    );
    let s = e.summary();
    assert_eq!(
        (s.failed_checks, s.workers_failed, s.unobservable_checks),
        (0, 0, 2)
    );
}

#[test]
fn memory_of_workers_gone_is_dropped() {
    let mut e = Evaluator::new(&HealthConfig::default()).unwrap();
    let w = worker("stall@h");
    cycles(
        &mut e,
        &[(0.0, &w, 10), (50.0, &seen_at(w.clone(), 50.0), 10)],
    );
    // It disappears for one cycle, then comes back: its stall counts afresh.
    e.evaluate(
        &snapshot(vec![], vec![], vec![broker(true)]),
        &Baselines::default(),
        t(55.0),
    );
    let h = cycles(
        &mut e,
        &[
            (70.0, &seen_at(w.clone(), 70.0), 10),
            (129.0, &seen_at(w, 129.0), 10),
        ],
    );
    assert!(passes(&h[1], "stalled"), "{:?}", h[1]);
}

#[test]
fn memories_and_baselines_follow_their_workers_as_the_fleet_changes() {
    let mut e = Evaluator::new(&HealthConfig::default()).unwrap();
    // Every worker with the same task figures all along (no progress), slow ones.
    let w = |id: &str, at: f64| {
        let mut x = seen_at(worker(id), at);
        x.task_stats = stats(20, 0, 1.0);
        x
    };
    let run = |e: &mut Evaluator, workers: Vec<Worker>, b: &Baselines, now: f64| {
        let snap = snapshot(workers, vec![depth("celery", 10)], vec![broker(true)]);
        e.evaluate(&snap, b, t(now))
            .into_iter()
            .map(|(k, h)| (k.id.to_string(), h))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let none = Baselines::default();
    run(
        &mut e,
        vec![w("a@h", 0.0), w("c@h", 0.0), w("e@h", 0.0)],
        &none,
        0.0,
    );
    // b arrives between a and c, c leaves.
    run(
        &mut e,
        vec![w("a@h", 30.0), w("b@h", 30.0), w("e@h", 30.0)],
        &none,
        30.0,
    );
    // Only b and e have baselines (a slow p95 for both).
    let mut b = Baselines::default();
    for id in ["b@h", "e@h"] {
        b.workers.insert(
            key(id),
            Baseline {
                p95_runtime_secs: Some(0.1),
                throughput_per_min: None,
            },
        );
    }
    let slow = |id: &str| w(id, 60.0);
    let v = run(
        &mut e,
        vec![slow("a@h"), slow("b@h"), slow("c@h"), slow("e@h")],
        &b,
        60.0,
    );
    // a and e: seen with the backlog since 0 s, stalled at 60 s. b: since 30 s. c: back
    // after a gap, afresh.
    assert_eq!(
        status_of(&v["a@h"], "stalled"),
        Some(HealthStatus::Critical)
    );
    assert_eq!(
        status_of(&v["e@h"], "stalled"),
        Some(HealthStatus::Critical)
    );
    assert!(passes(&v["b@h"], "stalled"));
    assert!(passes(&v["c@h"], "stalled"));
    // Baselines reach exactly their workers.
    assert_eq!(status_of(&v["b@h"], "latency"), Some(HealthStatus::Warning));
    assert_eq!(status_of(&v["e@h"], "latency"), Some(HealthStatus::Warning));
    assert!(finding(&v["a@h"], "latency").is_none() && !passes(&v["a@h"], "latency"));
    assert!(finding(&v["c@h"], "latency").is_none());
}

#[test]
fn the_check_ids_are_the_checks() {
    let ids: Vec<&str> = CHECKS.iter().map(|c| c.id).collect();
    assert_eq!(ids, crate::CHECK_IDS);
}
