//! Per-worker CPU and memory read from Prometheus (`/api/v1/query`).
//!
//! One instant query per metric for the whole fleet, never one per worker: each template is
//! expected to aggregate `by (pod)`, and `{pods}` in it becomes a regex matching the fleet's
//! pods (so that the answer is no larger than the fleet). The shipped templates read
//! cAdvisor's series as the kubelet exposes them.
use std::{collections::HashMap, sync::Arc, time::Duration};

use serde::Deserialize;
use tracing::Instrument as _;
use warden_core::{
    model::{Sample, WorkerKey, metric},
    ports::{BoxFuture, MetricSource, PortError},
};

/// The source's name, carried by its samples and its status.
pub const SOURCE: &str = "prometheus";

/// CPU in percent of one core: the rate of cAdvisor's CPU counter over 2 minutes.
pub const DEFAULT_CPU_QUERY: &str = r#"sum by (pod) (rate(container_cpu_usage_seconds_total{container!="",container!="POD",pod=~"{pods}"}[2m])) * 100"#;
/// Memory in use: cAdvisor's working set (what the OOM killer looks at).
pub const DEFAULT_MEMORY_QUERY: &str = r#"sum by (pod) (container_memory_working_set_bytes{container!="",container!="POD",pod=~"{pods}"})"#;
/// The memory limit: cAdvisor's spec limit (0 means none, and is dropped).
pub const DEFAULT_MEMORY_LIMIT_QUERY: &str = r#"sum by (pod) (container_spec_memory_limit_bytes{container!="",container!="POD",pod=~"{pods}"}) > 0"#;
/// GPU utilisation: NVIDIA DCGM exporter's gauge, averaged over the pod's GPUs.
pub const DEFAULT_GPU_UTIL_QUERY: &str = r#"avg by (pod) (DCGM_FI_DEV_GPU_UTIL{pod=~"{pods}"})"#;
/// GPU memory in use, in percent: DCGM's framebuffer used over used + free, the fullest GPU.
pub const DEFAULT_GPU_MEMORY_QUERY: &str = r#"max by (pod) (DCGM_FI_DEV_FB_USED{pod=~"{pods}"} / (DCGM_FI_DEV_FB_USED{pod=~"{pods}"} + DCGM_FI_DEV_FB_FREE{pod=~"{pods}"}) * 100)"#;
/// Disk in use, in percent: cAdvisor's container filesystem usage over its limit, the fullest.
pub const DEFAULT_DISK_QUERY: &str = r#"max by (pod) (container_fs_usage_bytes{container!="",container!="POD",pod=~"{pods}"} / container_fs_limit_bytes{container!="",container!="POD",pod=~"{pods}"} * 100)"#;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// PromQL templates, one per metric; an empty template turns its metric off. `{pods}` is
/// replaced by a regex that matches the fleet's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queries {
    pub cpu_percent: String,
    pub memory_bytes: String,
    pub memory_limit_bytes: String,
    pub gpu_util_percent: String,
    pub gpu_memory_percent: String,
    pub disk_percent: String,
}

impl Default for Queries {
    fn default() -> Self {
        Self {
            cpu_percent: DEFAULT_CPU_QUERY.into(),
            memory_bytes: DEFAULT_MEMORY_QUERY.into(),
            memory_limit_bytes: DEFAULT_MEMORY_LIMIT_QUERY.into(),
            gpu_util_percent: DEFAULT_GPU_UTIL_QUERY.into(),
            gpu_memory_percent: DEFAULT_GPU_MEMORY_QUERY.into(),
            disk_percent: DEFAULT_DISK_QUERY.into(),
        }
    }
}

/// How to authenticate to Prometheus.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    Bearer(String),
    Basic { username: String, password: String },
}

impl std::fmt::Debug for Auth {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
        }
    }
}

#[derive(Clone)]
pub struct PrometheusSettings {
    /// Base URL, e.g. `http://prometheus:9090` (a path prefix is kept).
    pub url: String,
    pub timeout: Duration,
    pub auth: Option<Auth>,
    pub queries: Queries,
}

impl std::fmt::Debug for PrometheusSettings {
    // The URL may carry credentials: they never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSettings")
            .field("url", &redact(&self.url))
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .field("queries", &self.queries)
            .finish()
    }
}

/// Why the source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("not an http(s) URL: {0}")]
    Url(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Adds headers to each outgoing request, called inside the request's span: the binary
/// passes one that writes the W3C trace context, so that Prometheus (and proxies in front of
/// it) join warden's trace without this crate depending on OpenTelemetry.
pub type HeaderHook = Arc<dyn Fn(&mut reqwest::header::HeaderMap) + Send + Sync>;

pub struct PrometheusSource {
    client: reqwest::Client,
    endpoint: String,
    auth: Option<Auth>,
    queries: Vec<(&'static str, String)>,
    header_hook: Option<HeaderHook>,
}

impl PrometheusSource {
    pub fn new(settings: PrometheusSettings) -> Result<Self, BuildError> {
        let base = settings.url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(BuildError::Url(redact(base)));
        }
        // reqwest is built without a default crypto provider: the process shares ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()
            .map_err(|e| BuildError::Client(e.to_string()))?;
        let queries = [
            (metric::CPU_PERCENT, settings.queries.cpu_percent),
            (metric::MEMORY_BYTES, settings.queries.memory_bytes),
            (
                metric::MEMORY_LIMIT_BYTES,
                settings.queries.memory_limit_bytes,
            ),
            (metric::GPU_UTIL_PERCENT, settings.queries.gpu_util_percent),
            (
                metric::GPU_MEMORY_PERCENT,
                settings.queries.gpu_memory_percent,
            ),
            (metric::DISK_PERCENT, settings.queries.disk_percent),
        ]
        .into_iter()
        .filter(|(_, q)| !q.trim().is_empty())
        .collect();
        Ok(Self {
            client,
            endpoint: format!("{base}/api/v1/query"),
            auth: settings.auth,
            queries,
            header_hook: None,
        })
    }

    /// Sets the hook that adds headers to every request (e.g. `traceparent`).
    #[must_use]
    pub fn with_header_hook(mut self, hook: HeaderHook) -> Self {
        self.header_hook = Some(hook);
        self
    }

    /// One instant query: (pod, value, sample time in seconds) per series with a `pod` label.
    async fn query(&self, promql: &str) -> Result<Vec<(String, f64, f64)>, PortError> {
        let mut request = self
            .client
            .post(&self.endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("query={}", form_encode(promql)));
        request = match &self.auth {
            Some(Auth::Bearer(token)) => request.bearer_auth(token),
            Some(Auth::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            None => request,
        };
        if let Some(hook) = &self.header_hook {
            let mut headers = reqwest::header::HeaderMap::new();
            hook(&mut headers);
            request = request.headers(headers);
        }
        let response = request.send().await.map_err(|e| unavailable(&e))?;
        let status = response.status();
        let body: QueryResponse = response.json().await.map_err(|e| {
            if status.is_success() {
                PortError::Failed(format!(
                    "prometheus answered something else than a query result: {}",
                    e.without_url()
                ))
            } else {
                PortError::Unavailable {
                    dependency: SOURCE,
                    reason: format!("HTTP {status}"),
                }
            }
        })?;
        if body.status != "success" {
            return Err(PortError::Failed(format!(
                "query failed ({}): {}",
                body.error_type.unwrap_or_default(),
                body.error.unwrap_or_default()
            )));
        }
        let data = body.data.unwrap_or_default();
        if data.result_type != "vector" {
            return Err(PortError::Failed(format!(
                "a query template must give an instant vector, not a {}",
                data.result_type
            )));
        }
        Ok(data
            .result
            .into_iter()
            .filter_map(|s| {
                let pod = s.metric.get("pod")?.clone();
                let (at, value) = s.value?;
                let value: f64 = value.parse().ok()?;
                value.is_finite().then_some((pod, value, at))
            })
            .collect())
    }
}

impl MetricSource for PrometheusSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn collect<'a>(
        &'a self,
        workers: &'a [WorkerKey],
    ) -> BoxFuture<'a, Result<Vec<Sample>, PortError>> {
        let span = tracing::info_span!(
            "resources.collect",
            source = SOURCE,
            workers = workers.len()
        );
        Box::pin(
            async move {
                let mut by_pod: HashMap<&str, Vec<&WorkerKey>> = HashMap::new();
                for w in workers {
                    by_pod.entry(pod_of(w)).or_default().push(w);
                }
                if by_pod.is_empty() {
                    return Ok(Vec::new());
                }
                let mut pods: Vec<&str> = by_pod.keys().copied().collect();
                pods.sort_unstable();
                let pods_regex = pods
                    .iter()
                    .map(|p| regex_escape(p))
                    .collect::<Vec<_>>()
                    .join("|");
                let mut samples: HashMap<&str, Sample> = HashMap::new();
                for (metric, template) in &self.queries {
                    let promql = template.replace("{pods}", &pods_regex);
                    let span = tracing::info_span!("prometheus.query", metric = *metric);
                    for (pod, value, at) in self.query(&promql).instrument(span).await? {
                        let Some((pod, workers)) = by_pod.get_key_value(pod.as_str()) else {
                            continue;
                        };
                        let at = std::time::UNIX_EPOCH + Duration::from_secs_f64(at.max(0.0));
                        let sample = samples.entry(pod).or_insert_with(|| Sample {
                            worker: workers[0].clone(),
                            at,
                            source: SOURCE,
                            metrics: Vec::new(),
                        });
                        sample.at = sample.at.max(at);
                        sample.metrics.push((metric, value));
                    }
                }
                // A pod's figures go to every worker in it.
                Ok(samples
                    .into_iter()
                    .flat_map(|(pod, sample)| {
                        by_pod[pod].iter().map(move |w| Sample {
                            worker: (*w).clone(),
                            ..sample.clone()
                        })
                    })
                    .collect())
            }
            .instrument(span),
        )
    }
}

/// The pod a worker runs in: the host part of its node name (`celery@<pod>`), or the whole
/// id when it has none.
pub fn pod_of(worker: &WorkerKey) -> &str {
    worker.id.split_once('@').map_or(&*worker.id, |(_, h)| h)
}

/// Escapes RE2 metacharacters, doubled for a PromQL double-quoted string.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if ".+*?()[]{}|^$\\".contains(c) {
            out.push_str("\\\\");
        } else if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn unavailable(e: &reqwest::Error) -> PortError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    PortError::Unavailable {
        dependency: SOURCE,
        reason: kind.to_string(),
    }
}

/// A URL without its credentials, for errors.
fn redact(url: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(s, r)| Some((s, r.split_once('@')?.1)))
    {
        Some((scheme, rest)) => format!("{scheme}://***@{rest}"),
        None => url.to_string(),
    }
}

#[derive(Deserialize)]
struct QueryResponse {
    status: String,
    #[serde(default)]
    data: Option<QueryData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize, Default)]
struct QueryData {
    #[serde(rename = "resultType", default)]
    result_type: String,
    #[serde(default)]
    result: Vec<VectorSample>,
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: HashMap<String, String>,
    /// `[unix seconds, "value"]`.
    value: Option<(f64, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_become_one_escaped_regex_and_the_query_is_form_encoded() {
        assert_eq!(regex_escape("web-1.a"), "web-1\\\\.a");
        assert_eq!(form_encode("a b{\"x\"}"), "a%20b%7B%22x%22%7D");
        let w = WorkerKey::new(warden_core::model::Backend::Celery, "", "celery@pod-7");
        assert_eq!(pod_of(&w), "pod-7");
        assert_eq!(redact("http://u:p@h:9090"), "http://***@h:9090");
        let settings = PrometheusSettings {
            url: "http://u:secret@h:9090".into(),
            timeout: DEFAULT_TIMEOUT,
            auth: Some(Auth::Basic {
                username: "u".into(),
                password: "hunter2".into(),
            }),
            queries: Queries::default(),
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn a_bad_url_is_refused_without_its_credentials() {
        let err = PrometheusSource::new(PrometheusSettings {
            url: "ftp://user:secret@h".into(),
            timeout: DEFAULT_TIMEOUT,
            auth: None,
            queries: Queries::default(),
        })
        .err()
        .unwrap()
        .to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
