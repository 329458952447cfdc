//! Each worker's own normal, against which its current figures are judged.
use std::{collections::BTreeMap, time::SystemTime};

use warden_core::WorkerKey;

/// A worker's figures over the last 24 h, computed by the caller from history (the binary
/// every few minutes). A figure that is `None` (or not above 0) skips the check that needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Baseline {
    /// p95 task runtime, in seconds (for the `latency` check).
    pub p95_runtime_secs: Option<f64>,
    /// Tasks finished (succeeded + failed) per minute (for the `throughput` check).
    pub throughput_per_min: Option<f64>,
}

/// Every worker's baseline. A worker without one skips the `latency` and `throughput` checks
/// (they report nothing and are not passing).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baselines {
    /// When the caller computed them (for display and staleness logs; not used by checks).
    pub computed_at: Option<SystemTime>,
    /// By worker (ordered: a cycle walks it alongside the snapshot's workers instead of
    /// hashing every key).
    pub workers: BTreeMap<WorkerKey, Baseline>,
}

impl Baselines {
    pub fn get(&self, key: &WorkerKey) -> Option<&Baseline> {
        self.workers.get(key)
    }
}
