//! Workloads: what owns a worker's pod (and is its group), and the names groups go by.
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};
use warden_core::ports::PortError;

/// The annotation `kubectl rollout restart` sets on a pod template: changing it rolls the
/// workload's pods.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// The kinds of workload warden restarts and scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    /// The lower-case kind, as group names and kubectl spell it.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::StatefulSet => "statefulset",
        }
    }
}

/// A Deployment or StatefulSet by name (in the runtime's namespace). Its group name is
/// `deployment/NAME` or `statefulset/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
}

impl Workload {
    /// Parses a group name: `deployment/NAME`, `statefulset/NAME` (also `deploy/`, `sts/`,
    /// plurals, any case), or a bare `NAME` for a Deployment.
    pub fn parse_group(group: &str) -> Result<Self, PortError> {
        let (kind, name) = match group.split_once('/') {
            None => (WorkloadKind::Deployment, group),
            Some((kind, name)) => {
                let kind = match kind.to_ascii_lowercase().as_str() {
                    "deployment" | "deployments" | "deploy" => WorkloadKind::Deployment,
                    "statefulset" | "statefulsets" | "sts" => WorkloadKind::StatefulSet,
                    _ => {
                        return Err(PortError::NotSupported(format!(
                            "group {group:?}: kubernetes scales deployment/NAME or statefulset/NAME"
                        )));
                    }
                };
                (kind, name)
            }
        };
        if name.is_empty() || name.contains('/') {
            return Err(PortError::NotSupported(format!(
                "group {group:?}: expected deployment/NAME or statefulset/NAME"
            )));
        }
        Ok(Self {
            kind,
            name: name.to_owned(),
        })
    }

    /// The group name (`deployment/NAME`).
    pub fn group(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.slug(), self.name)
    }
}

/// The controlling owner among `refs` (the one with `controller: true`).
pub(crate) fn controller(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    refs?.iter().find(|r| r.controller == Some(true))
}

/// The merge patch that rolls a workload's pods, as `kubectl rollout restart` does.
pub(crate) fn restart_patch(at: &str) -> Value {
    json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}})
}

/// The merge patch of a scale subresource.
pub(crate) fn scale_patch(replicas: u32) -> Value {
    json!({"spec": {"replicas": replicas}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_parse() {
        let d = Workload::parse_group("deployment/celery").unwrap();
        assert_eq!(
            (d.kind, d.name.as_str()),
            (WorkloadKind::Deployment, "celery")
        );
        assert_eq!(d.group(), "deployment/celery");
        assert_eq!(Workload::parse_group("celery").unwrap(), d);
        assert_eq!(Workload::parse_group("Deployments/celery").unwrap(), d);
        let s = Workload::parse_group("sts/img").unwrap();
        assert_eq!(s.group(), "statefulset/img");
        for bad in ["daemonset/x", "deployment/", "deployment/a/b", ""] {
            assert!(
                matches!(Workload::parse_group(bad), Err(PortError::NotSupported(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn restart_patch_sets_the_annotation() {
        let p = restart_patch("2026-11-26T12:00:00Z");
        assert_eq!(
            p["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
            "2026-11-26T12:00:00Z"
        );
    }
}
