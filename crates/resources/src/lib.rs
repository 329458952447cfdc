//! Resource sources behind the core's [`MetricSource`] port, and the loop that feeds their
//! samples to the fleet.
//!
//! Only Prometheus for now ([`prometheus`]). A worker is matched to its pod by the host part
//! of its Celery node name (`celery@<pod>`, the Kubernetes default).
#![forbid(unsafe_code)]

pub mod collector;
pub mod prometheus;

pub use collector::run;
pub use prometheus::{Auth, HeaderHook, PrometheusSettings, PrometheusSource, Queries};
pub use warden_core::ports::MetricSource;
