//! What the Kubernetes runtime is told: where the API is, which pods are workers, how a worker
//! maps to its pod, and the time limits.
use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

/// The grace period a pod restart gives the worker when the caller names none: Kubernetes'
/// own default for a pod (`terminationGracePeriodSeconds`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// The limit on every API call (a log stream's opening; not the followed stream itself).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How a worker id names its pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PodMapping {
    /// The part of the worker id after its last `@` is the pod's hostname: Celery's default
    /// node name is `celery@<hostname>`, and a pod's hostname is its name (or `spec.hostname`).
    /// A fully qualified hostname matches on its first label.
    #[default]
    HostnameSuffix,
    /// A pod label holds the worker id. Label values cannot hold `@`, so the value may also be
    /// the id's part after its last `@`.
    Label(String),
    /// A pod annotation holds the worker id exactly.
    Annotation(String),
}

/// A mapping that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod mapping {0:?}: expected `hostname`, `label:KEY` or `annotation:KEY`")]
pub struct MappingError(pub String);

impl FromStr for PodMapping {
    type Err = MappingError;

    /// `hostname`, `label:KEY` or `annotation:KEY` (the form config files and flags use).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MappingError(s.to_owned());
        match s.split_once(':') {
            None if s == "hostname" => Ok(Self::HostnameSuffix),
            Some(("label", key)) if !key.is_empty() => Ok(Self::Label(key.to_owned())),
            Some(("annotation", key)) if !key.is_empty() => Ok(Self::Annotation(key.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for PodMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HostnameSuffix => f.write_str("hostname"),
            Self::Label(k) => write!(f, "label:{k}"),
            Self::Annotation(k) => write!(f, "annotation:{k}"),
        }
    }
}

/// The Kubernetes runtime's settings; every field has a default (see [`Default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// A kubeconfig file; `None` infers: `$KUBECONFIG` or `~/.kube/config`, else the in-cluster
    /// service account.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; `None` = its current context.
    pub context: Option<String>,
    /// The namespace of the worker pods; `None` = the context's namespace (in-cluster: the
    /// service account's), else `default`.
    pub namespace: Option<String>,
    /// A label selector for worker pods (e.g. `app.kubernetes.io/component=celery-worker`);
    /// empty = every pod in the namespace.
    pub selector: String,
    /// How a worker id names its pod.
    pub mapping: PodMapping,
    /// The worker's container in its pod; `None` = the pod's first container.
    pub container: Option<String>,
    /// The grace period a pod restart uses when the caller names none.
    pub grace: Duration,
    /// The limit on every API call.
    pub call_timeout: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            namespace: None,
            selector: String::new(),
            mapping: PodMapping::default(),
            container: None,
            grace: DEFAULT_GRACE,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_parses_and_prints() {
        for s in [
            "hostname",
            "label:app.kubernetes.io/instance",
            "annotation:warden.io/worker",
        ] {
            assert_eq!(s.parse::<PodMapping>().unwrap().to_string(), s);
        }
        for bad in ["", "host", "label:", "annotation", "env:X"] {
            assert!(bad.parse::<PodMapping>().is_err(), "{bad}");
        }
    }
}
