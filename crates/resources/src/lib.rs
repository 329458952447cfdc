//! Resource sources behind the core's [`MetricSource`] port, and the loop that feeds their
//! samples to the fleet.
//!
//! Prometheus ([`prometheus`]; a worker is matched to its pod by the host part of its Celery
//! node name, `celery@<pod>`, the Kubernetes default), and the runtime that runs the workers
//! ([`runtime`]: the local runtime's /proc figures).
#![forbid(unsafe_code)]

pub mod collector;
pub mod prometheus;
pub mod runtime;

pub use collector::run;
pub use prometheus::{Auth, HeaderHook, PrometheusSettings, PrometheusSource, Queries};
pub use runtime::RuntimeSource;
pub use warden_core::ports::MetricSource;
