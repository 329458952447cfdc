//! Why a worker's container last ended (OOMKilled, Error with its exit code), read from the
//! pod's container status, so that a lost worker can say why.
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};

/// A container's end, as the kubelet reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    pub pod: String,
    pub container: String,
    /// The kubelet's reason: `OOMKilled`, `Error`, `Completed`, `ContainerCannotRun`, ...
    pub reason: Option<String>,
    pub exit_code: i32,
    /// The signal that ended it, when the kubelet knows it.
    pub signal: Option<i32>,
    pub message: Option<String>,
    pub finished_at: Option<SystemTime>,
    /// How many times the kubelet restarted the container.
    pub restart_count: i32,
    /// True when the container is terminated now (not yet restarted); false when this is the
    /// previous run of a container that runs again.
    pub current: bool,
}

/// The status of the worker's container: the named one, else the first.
pub(crate) fn container_status<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)
}

/// The last termination of `container` in `pod`, if it ever ended.
pub(crate) fn last_termination(pod: &Pod, container: &str) -> Option<Termination> {
    let status = container_status(pod, container)?;
    let current = status.state.as_ref().and_then(|s| s.terminated.as_ref());
    let previous = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    let (t, is_current): (&ContainerStateTerminated, bool) = match (current, previous) {
        (Some(t), _) => (t, true),
        (None, Some(t)) => (t, false),
        (None, None) => return None,
    };
    Some(Termination {
        pod: pod.metadata.name.clone().unwrap_or_default(),
        container: status.name.clone(),
        reason: t.reason.clone(),
        exit_code: t.exit_code,
        signal: t.signal,
        message: t.message.clone(),
        finished_at: t.finished_at.as_ref().map(|at| SystemTime::from(at.0)),
        restart_count: status.restart_count,
        current: is_current,
    })
}
