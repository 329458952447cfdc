//! The Kubernetes runtime: workers that run in pods.
//!
//! [`KubernetesRuntime`] implements the core's `Runtime` port over the Kubernetes API (kube-rs):
//! it finds the pod that runs a worker ([`PodMapping`]), restarts exactly that pod (delete with
//! a grace period, guarded by the pod's uid) or rolls its workload (the `restartedAt`
//! annotation kubectl sets, on the Deployment or StatefulSet found through ownerReferences),
//! scales workloads through their scale subresource, reads why a container last ended
//! ([`Termination`]) and streams a pod's log lines ([`PodLogs`]).
//!
//! Every API call runs under the configured timeout, and every failure becomes a `PortError`
//! in one place ([`error`]): 403 names the verb and resource, 404 is not found, an API server
//! that cannot be reached is `Unavailable { dependency: "kubernetes" }`.
#![forbid(unsafe_code)]

mod config;
pub mod error;
mod logs;
mod mapping;
pub mod metrics;
mod runtime;
mod termination;
mod watch;
mod workload;

pub use config::{DEFAULT_CALL_TIMEOUT, DEFAULT_GRACE, KubernetesConfig, MappingError, PodMapping};
pub use logs::{LogOptions, LogStream, PodLogs};
pub use metrics::PodMetricsSource;
pub use runtime::{KubernetesRuntime, PodInstance};
pub use termination::Termination;
pub use watch::{PodChange, PodChanges};
pub use workload::{Workload, WorkloadKind};
