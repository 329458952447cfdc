//! warden's health engine (issue 18, items 1 and 2): every worker checked, scored and
//! explained.
//!
//! Every `interval` (default 30 s) the engine reads the fleet's latest snapshot, runs the
//! checks on each worker, and sends the verdicts to the fleet owner
//! ([`warden_core::owner::FleetMessage::Health`]), which stores them on the workers.
//!
//! # Checks
//! | id | judges | unit | default thresholds |
//! |---|---|---|---|
//! | `heartbeat` | lateness: silence beyond the announced heartbeat period | s | warning 30 s, critical 60 s |
//! | `cpu` | CPU in % of the worker's allowed cores | percent | warning 80, critical 95 |
//! | `memory` | memory in % of its limit; absolute `memory_bytes` | percent / bytes | warning 85, critical 95; bytes: critical |
//! | `gpu` | GPU memory % | percent | critical 90 |
//! | `disk` | disk use % | percent | warning 90, critical 95 |
//! | `error_rate` | failed / finished over 5 min, once `min_tasks` (10) finished | ratio | warning 0.10, critical 0.20 |
//! | `latency` | p95 runtime over 5 min vs the 24 h baseline | s | warning at 2× |
//! | `throughput` | tasks/min over 5 min vs the 24 h baseline, while a queue holds messages | per_min | warning at 0.5× |
//! | `queue_connection` | broker reachable; consuming the queues it should | ratio | critical (broker down, no queue), warning (some expected queues missing) |
//! | `stalled` | backlog, alive, no task running or started for 60 s | s | critical |
//! | `forecast` | memory or disk reaches its limit within 30 min (linear fit over 10 min, ≥ 5 points) | s (time left) | warning |
//!
//! **Thresholds fire when reached**: a ceiling at `observed >= threshold` (80.0 % CPU is a
//! warning, 79.9 % is not; a heartbeat exactly 30 s late is a warning), a floor (throughput)
//! at `observed <= threshold`, a forecast at `time left <= horizon`. CRITICAL is judged before
//! WARNING.
//!
//! **CPU** is measured in percent of one core (a prefork worker and its children can exceed
//! 100). The check divides it by the worker's allowed cores: `cpu_cores` when configured
//! (e.g. the container's CPU limit), else the pool concurrency of a process pool (prefork),
//! else 1 (solo, threads, gevent, eventlet, unknown pools, Redis Streams workers). A
//! 4-process prefork worker at 380 % of one core is at 95 %: critical.
//!
//! **Absent data is never a pass.** A check whose data is missing (no resource source, a
//! figure the source does not give, fewer than `min_tasks` finished, no baseline, queues not
//! known yet, too few samples for a forecast) reports nothing and is not in
//! `Health.passing`: `passing` lists exactly the checks that ran and passed. (No
//! informational "no source" finding is produced: the check's absence from both lists says
//! it.) A check that cannot run — its source is down (its figures are stale), a figure is not
//! a number, or the check panicked — yields one finding with `error: true` and status
//! HEALTHY; it weighs nothing, and the other checks still decide the verdict.
//!
//! # Verdict
//! `status` = the worst finding (HEALTHY without any), `score` = 1 − Σ weights (each WARNING
//! finding 0.15, each CRITICAL 0.5; configurable) clamped to [0, 1], `passing`,
//! `evaluated_at` (the fleet clock's time). ALIVE and UNKNOWN workers are evaluated; LOST
//! ones get one critical `heartbeat` finding; OFFLINE ones (they said goodbye) are not
//! evaluated.
//!
//! # Memory between cycles
//! The [`Evaluator`] remembers, per worker, its last sign of progress (a change in its
//! processed count, its task counters or its Streams pending count, or a task running), since
//! when its queues hold messages, and the resource samples of the forecast window. The
//! engine's first sight of a worker counts as progress: after a warden restart a stall is
//! found `stalled_after` later at the earliest. A worker that disappears, goes LOST or
//! OFFLINE loses its memory. `throughput` is judged once the worker has been observed for the
//! whole 5 min window (a worker that just started has no rate yet).
//!
//! # Configuration (`[health]` in the binary's TOML)
//! ```toml
//! [health]
//! interval = "30s"          # default
//! warning_weight = 0.15     # default
//! critical_weight = 0.5     # default
//!
//! [health.defaults]         # every worker; any threshold of `Limits`
//! cpu_warning = 85
//! memory_bytes = 2147483648 # 2 GiB absolute limit (default 0 = none)
//!
//! [[health.overrides]]      # exactly one of group / queue / worker
//! group = "video"
//! cpu_cores = 4
//! expected_queues = ["video", "video.priority"]
//!
//! [[health.overrides]]
//! queue = "gpu"
//! gpu_memory_critical = 97.5
//!
//! [[health.overrides]]
//! worker = "batch-*@*"      # glob on the worker's name
//! stalled_after = "5m"
//! disable = ["throughput"]
//! ```
//! Most specific wins, value by value: built-in default < `[health.defaults]` < group <
//! queue < worker pattern; several matching overrides of one level apply in file order (the
//! later wins). See [`overrides`].
pub mod baseline;
pub mod checks;
pub mod config;
pub mod engine;
pub mod evaluator;
pub mod format;
pub mod memory;
pub mod overrides;
pub mod verdict;

pub use baseline::{Baseline, Baselines};
pub use checks::{CHECK_IDS, CheckError, Outcome};
pub use config::{ConfigError, HealthConfig, Limits, Override, Settings};
pub use engine::{HealthEngine, spawn};
pub use evaluator::{CycleSummary, Evaluator};
pub use verdict::Weights;

#[cfg(test)]
mod tests;
