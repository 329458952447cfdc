//! Worker CPU and memory from the Kubernetes metrics API (`metrics.k8s.io/v1beta1` PodMetrics,
//! served by metrics-server), for clusters where warden reads no Prometheus.
//!
//! One round is two calls whatever the fleet's size: the worker pods (for the mapping and the
//! memory limits in their specs) and their PodMetrics. A worker whose pod has no metrics yet is
//! left out (absent, not 0).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};
use warden_core::{
    model::{Sample, WorkerKey, metric},
    ports::{BoxFuture, MetricSource, PortError},
};

use crate::{KubernetesRuntime, error::Call, error::timed, mapping};

/// The source name samples carry.
pub const SOURCE: &str = "metrics.k8s.io";

/// The metrics API as a resource source.
pub struct PodMetricsSource {
    runtime: KubernetesRuntime,
}

impl PodMetricsSource {
    pub fn new(runtime: KubernetesRuntime) -> Self {
        Self { runtime }
    }

    async fn pod_metrics(&self) -> Result<Vec<DynamicObject>, PortError> {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
            "pods",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.runtime.client().clone(),
            self.runtime.namespace(),
            &resource,
        );
        let mut params = ListParams::default();
        if !self.runtime.config().selector.is_empty() {
            params = params.labels(&self.runtime.config().selector);
        }
        let call = Call {
            verb: "list",
            resource: "pods.metrics.k8s.io",
            name: "",
            namespace: self.runtime.namespace(),
        };
        let list = timed(call, self.runtime.config().call_timeout, api.list(&params)).await?;
        Ok(list.items)
    }
}

impl MetricSource for PodMetricsSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn collect<'a>(
        &'a self,
        workers: &'a [WorkerKey],
    ) -> BoxFuture<'a, Result<Vec<Sample>, PortError>> {
        Box::pin(async move {
            let pods = self.runtime.pods().await?;
            let metrics = self.pod_metrics().await?;
            let by_pod: BTreeMap<&str, &DynamicObject> = metrics
                .iter()
                .filter_map(|m| Some((m.metadata.name.as_deref()?, m)))
                .collect();
            let container = self.runtime.config().container.as_deref();
            let mut samples = Vec::new();
            for worker in workers {
                let Some(pod) = mapping::pick(&self.runtime.config().mapping, &worker.id, &pods)
                else {
                    continue;
                };
                let Some(name) = pod.metadata.name.as_deref() else {
                    continue;
                };
                let Some(m) = by_pod.get(name) else { continue };
                if let Some(sample) = sample(worker, m, pod, container) {
                    samples.push(sample);
                }
            }
            Ok(samples)
        })
    }
}

/// The worker's sample from its pod's metrics: the worker's container's (when configured) or
/// the pod's containers summed; the memory limit from the pod's spec when every counted
/// container has one.
fn sample(
    worker: &WorkerKey,
    metrics: &DynamicObject,
    pod: &Pod,
    container: Option<&str>,
) -> Option<Sample> {
    let counted = |name: &str| container.is_none_or(|c| c == name);
    let mut cpu_cores = None::<f64>;
    let mut memory = None::<f64>;
    for c in metrics.data.get("containers")?.as_array()? {
        let Some(name) = c.get("name").and_then(|n| n.as_str()) else {
            continue;
        };
        if !counted(name) {
            continue;
        }
        let usage = c.get("usage");
        if let Some(v) = usage
            .and_then(|u| u.get("cpu"))
            .and_then(|v| v.as_str())
            .and_then(quantity)
        {
            *cpu_cores.get_or_insert(0.0) += v;
        }
        if let Some(v) = usage
            .and_then(|u| u.get("memory"))
            .and_then(|v| v.as_str())
            .and_then(quantity)
        {
            *memory.get_or_insert(0.0) += v;
        }
    }
    let limit = pod.spec.as_ref().and_then(|spec| {
        let limits: Vec<Option<f64>> = spec
            .containers
            .iter()
            .filter(|c| counted(&c.name))
            .map(|c| {
                c.resources
                    .as_ref()?
                    .limits
                    .as_ref()?
                    .get("memory")
                    .and_then(|q| quantity(&q.0))
            })
            .collect();
        (!limits.is_empty() && limits.iter().all(Option::is_some))
            .then(|| limits.iter().flatten().sum::<f64>())
    });
    // When it was read (metrics-server's own `timestamp` is at most its window older).
    let at = std::time::SystemTime::now();
    let mut values = Vec::new();
    if let Some(cores) = cpu_cores {
        values.push((metric::CPU_PERCENT, cores * 100.0));
    }
    if let Some(bytes) = memory {
        values.push((metric::MEMORY_BYTES, bytes));
    }
    if let Some(limit) = limit.filter(|l| *l > 0.0) {
        values.push((metric::MEMORY_LIMIT_BYTES, limit));
    }
    (!values.is_empty()).then(|| Sample {
        worker: worker.clone(),
        at,
        source: SOURCE,
        metrics: values,
    })
}

/// A Kubernetes quantity as a number: "250m" → 0.25, "1500000n" → 0.0015, "128Mi" →
/// 134217728, "1G" → 1e9, "2" → 2, "1e3" → 1000. `None` for anything else.
pub fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = text.strip_suffix(suffix) {
            return number
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(|v| v * factor);
        }
    }
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::quantity;

    #[test]
    fn quantities_parse_as_the_api_writes_them() {
        let near = |q: &str, want: f64| {
            let got = quantity(q).unwrap_or(f64::NAN);
            assert!(
                (got - want).abs() <= want.abs() * 1e-12,
                "{q}: {got} vs {want}"
            );
        };
        near("250m", 0.25);
        near("1500000n", 0.0015);
        near("12u", 0.000012);
        near("2", 2.0);
        near("128Mi", 134_217_728.0);
        near("204800Ki", 209_715_200.0);
        near("1G", 1e9);
        near("1e3", 1000.0);
        assert_eq!(quantity("lots"), None);
        assert_eq!(quantity("-1Mi"), None);
        assert_eq!(quantity(""), None);
    }
}
