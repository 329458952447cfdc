//! A real fleet state (warden_core's `FleetState`) driven through its public API, and an
//! engine evaluated against its snapshots at exact times.
#![allow(dead_code)]
use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use warden_alerts::{AlertEngine, AlertsConfig, Evaluation, MonitoringStatus};
use warden_core::{
    model::{
        Backend, Finding, Health, HealthStatus, Lease, LeaseReport, LeaseRound, QueueDepth, Sample,
        SourceStatus, Thresholds, WorkerKey,
    },
    state::FleetState,
};

pub const T: Thresholds = Thresholds {
    warning: Duration::from_secs(30),
    critical: Duration::from_secs(60),
};

pub const SCOPE: &str = "jobs";

pub fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn key(name: &str) -> WorkerKey {
    WorkerKey::new(Backend::RedisStreams, SCOPE, name)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Up {
    Alive,
    /// Lease gone without a goodbye: LOST.
    Crashed,
    /// Lease gone with a goodbye marker: OFFLINE.
    Goodbye,
}

pub struct Fleet {
    pub state: FleetState,
}

impl Fleet {
    pub fn new(now: SystemTime) -> Self {
        Self {
            state: FleetState::new(now),
        }
    }

    /// One lease poll: each named worker of `group` is alive, crashed or said goodbye.
    pub fn poll(&mut self, now: SystemTime, group: &str, workers: &[(&str, Up)]) {
        let reports = workers
            .iter()
            .map(|(name, up)| LeaseReport {
                name: name.to_string(),
                group: group.to_string(),
                lease: (*up == Up::Alive).then(Lease::default),
                goodbye: *up == Up::Goodbye,
                ..Default::default()
            })
            .collect();
        self.state.apply_leases(
            LeaseRound {
                backend: Backend::RedisStreams,
                scopes: vec![(Arc::from(SCOPE), reports)],
            },
            now,
            T,
        );
    }

    pub fn health(&mut self, now: SystemTime, name: &str, findings: Vec<Finding>) {
        let status = findings
            .iter()
            .map(|f| f.status)
            .max()
            .unwrap_or(HealthStatus::Healthy);
        self.state.apply_health(vec![(
            key(name),
            Health {
                status,
                score: 1.0,
                findings,
                passing: Vec::new(),
                evaluated_at: now,
            },
        )]);
    }

    pub fn cpu(&mut self, now: SystemTime, name: &str, percent: f64) {
        self.state.apply_samples(
            "proc",
            &[key(name)],
            vec![Sample {
                worker: key(name),
                at: now,
                source: "proc",
                metrics: vec![("cpu_percent", percent)],
            }],
        );
    }

    pub fn broker(&mut self, connected: bool) {
        self.state.set_source(SourceStatus {
            source: "broker",
            backends: vec![Backend::RedisStreams],
            connected,
            reason: if connected {
                String::new()
            } else {
                "connection refused".into()
            },
            last_ok: None,
        });
    }

    pub fn queue(&mut self, now: SystemTime, name: &str, depth: u64) {
        self.state.apply_queues(
            vec![QueueDepth {
                name: name.into(),
                backend: Backend::RedisStreams,
                by_priority: vec![(0, depth)],
                ..Default::default()
            }],
            now,
        );
    }
}

pub fn finding(
    check: &'static str,
    status: HealthStatus,
    observed: f64,
    threshold: f64,
) -> Finding {
    Finding {
        check,
        status,
        message: format!("{check} at {observed}"),
        observed,
        threshold,
        unit: "percent",
        error: false,
    }
}

/// Defaults, but no startup grace (tests of other timings).
pub fn config() -> AlertsConfig {
    AlertsConfig {
        startup_grace: Duration::ZERO,
        ..AlertsConfig::default()
    }
}

pub fn config_toml(text: &str) -> AlertsConfig {
    #[derive(serde::Deserialize)]
    struct File {
        alerts: AlertsConfig,
    }
    toml::from_str::<File>(text).expect("valid config").alerts
}

pub fn engine(config: AlertsConfig) -> AlertEngine {
    AlertEngine::new(config, t0()).expect("valid config")
}

pub fn eval(engine: &mut AlertEngine, fleet: &Fleet, now: SystemTime) -> Evaluation {
    engine.evaluate(now, fleet.state.snapshot(), &MonitoringStatus::default())
}

pub fn eval_with(
    engine: &mut AlertEngine,
    fleet: &Fleet,
    now: SystemTime,
    monitoring: MonitoringStatus,
) -> Evaluation {
    engine.evaluate(now, fleet.state.snapshot(), &monitoring)
}

/// The worker names (short ids) in a notification, sorted.
pub fn workers_in(n: &warden_core::ports::Notification) -> Vec<String> {
    let mut out: Vec<String> = n
        .alerts
        .iter()
        .filter_map(|a| a.labels.get("worker"))
        .filter_map(|w| WorkerKey::parse(w))
        .map(|k| k.id.to_string())
        .collect();
    out.sort();
    out
}
