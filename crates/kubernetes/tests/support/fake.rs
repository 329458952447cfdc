//! A fake Kubernetes API server: the real paths, JSON objects and `Status` errors, for the
//! calls the runtime makes (pods, their logs, replicasets, deployments, statefulsets and the
//! scale subresource). It records every request so that tests can assert what was sent, and
//! a followed log stays open (chunked) and delivers lines appended after the call began.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_stream::{StreamExt, wrappers::BroadcastStream};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
}

struct Log {
    lines: Vec<String>,
    tx: broadcast::Sender<String>,
}

#[derive(Default)]
struct Objects {
    pods: BTreeMap<String, Value>,
    /// PodMetrics `containers` by pod (metrics-server's view).
    pod_metrics: BTreeMap<String, Value>,
    replicasets: BTreeMap<String, Value>,
    deployments: BTreeMap<String, Value>,
    statefulsets: BTreeMap<String, Value>,
    logs: BTreeMap<String, Log>,
    /// (verb, resource) pairs answered with 403.
    forbidden: Vec<(String, String)>,
    /// Listing pods never answers (an API server that accepted the connection and hangs).
    stalled: bool,
    /// The resource version of the last change to a pod.
    rv: u64,
    /// Every pod change as a watch event line, with its resource version (a watch from
    /// version N replays those after N, as the API server does from its cache).
    events: Vec<(u64, String)>,
    watchers: Vec<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl Objects {
    /// Records a pod change: bumps the resource version and tells the watchers.
    fn pod_event(&mut self, kind: &str, pod: &mut Value) {
        self.rv += 1;
        pod["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let line = json!({"type": kind, "object": pod}).to_string() + "\n";
        self.events.push((self.rv, line.clone()));
        self.watchers.retain(|w| w.send(line.clone()).is_ok());
    }
}

#[derive(Clone, Default)]
pub struct Fake {
    objects: Arc<Mutex<Objects>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

pub const NAMESPACE: &str = "workers";

impl Fake {
    pub fn add_pod(&self, mut pod: Value) {
        let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        let mut o = self.objects.lock().unwrap();
        let kind = if o.pods.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        o.pod_event(kind, &mut pod);
        o.pods.insert(name, pod);
    }

    /// Replaces a pod's status (the kubelet reporting), as a MODIFIED event.
    pub fn set_pod_status(&self, name: &str, status: Value) {
        let mut pod = self.get("pods", name).unwrap();
        pod["status"] = status;
        self.add_pod(pod);
    }

    pub fn add(&self, kind: &str, obj: Value) {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let mut o = self.objects.lock().unwrap();
        let map = match kind {
            "replicasets" => &mut o.replicasets,
            "deployments" => &mut o.deployments,
            "statefulsets" => &mut o.statefulsets,
            other => panic!("kind {other}"),
        };
        map.insert(name, obj);
    }

    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let o = self.objects.lock().unwrap();
        match kind {
            "pods" => o.pods.get(name).cloned(),
            "deployments" => o.deployments.get(name).cloned(),
            "statefulsets" => o.statefulsets.get(name).cloned(),
            _ => None,
        }
    }

    /// Answers `verb` on `resource` (e.g. "delete", "pods") with 403 from now on.
    pub fn forbid(&self, verb: &str, resource: &str) {
        self.objects
            .lock()
            .unwrap()
            .forbidden
            .push((verb.to_owned(), resource.to_owned()));
    }

    /// Sets a pod's PodMetrics containers (`[{"name", "usage": {"cpu", "memory"}}]`).
    pub fn set_pod_metrics(&self, pod: &str, containers: Value) {
        self.objects
            .lock()
            .unwrap()
            .pod_metrics
            .insert(pod.to_owned(), containers);
    }

    /// Makes pod listings hang from now on.
    pub fn stall(&self) {
        self.objects.lock().unwrap().stalled = true;
    }

    /// Appends a line to a pod's log: followers receive it.
    pub fn append_log(&self, pod: &str, line: &str) {
        let mut o = self.objects.lock().unwrap();
        let log = o.logs.entry(pod.to_owned()).or_insert_with(new_log);
        log.lines.push(line.to_owned());
        let _ = log.tx.send(line.to_owned());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests other than GETs (the ones that change something).
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != Method::GET)
            .collect()
    }

    /// Serves on 127.0.0.1:0; returns the address.
    pub async fn start(&self) -> SocketAddr {
        let app = Router::new()
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            .route(
                "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods",
                get(list_pod_metrics),
            )
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                get(get_pod).delete(delete_pod),
            )
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
            .route(
                "/apis/apps/v1/namespaces/{ns}/{kind}/{name}",
                get(get_apps).patch(patch_apps),
            )
            .route(
                "/apis/apps/v1/namespaces/{ns}/{kind}/{name}/scale",
                get(get_scale).patch(patch_scale),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn record(&self, method: Method, path: String, query: &BTreeMap<String, String>, body: &Bytes) {
        let body = serde_json::from_slice(body).unwrap_or(Value::Null);
        self.requests.lock().unwrap().push(Recorded {
            method,
            path,
            query: query.clone(),
            body,
        });
    }

    /// The 403 the API server gives when RBAC denies `verb` on `resource`, if it does.
    fn denied(&self, verb: &str, resource: &str, group: &str, name: &str) -> Option<Response> {
        let o = self.objects.lock().unwrap();
        if o.forbidden.iter().any(|(v, r)| v == verb && r == resource) {
            let (kind, sub) = resource.split_once('/').unwrap_or((resource, ""));
            let sub = if sub.is_empty() {
                String::new()
            } else {
                format!("/{sub}")
            };
            let msg = format!(
                "{kind} {name:?} is forbidden: User \"system:serviceaccount:{NAMESPACE}:warden\" cannot {verb} resource \"{kind}{sub}\" in API group \"{group}\" in the namespace \"{NAMESPACE}\""
            );
            return Some(status(403, "Forbidden", &msg, name, kind));
        }
        None
    }
}

fn new_log() -> Log {
    Log {
        lines: Vec::new(),
        tx: broadcast::channel(1024).0,
    }
}

/// A `Status` object, as the API server writes it for an error.
pub fn status(code: u16, reason: &str, message: &str, name: &str, kind: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason,
        "details": {"name": name, "kind": kind}, "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

fn not_found(kind: &str, group: &str, name: &str) -> Response {
    let qualified = if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    };
    status(
        404,
        "NotFound",
        &format!("{qualified} {name:?} not found"),
        name,
        kind,
    )
}

type Q = Query<BTreeMap<String, String>>;

async fn list_pods(State(f): State<Fake>, Path(ns): Path<String>, Query(q): Q) -> Response {
    f.record(
        Method::GET,
        format!("/api/v1/namespaces/{ns}/pods"),
        &q,
        &Bytes::new(),
    );
    if let Some(r) = f.denied("list", "pods", "", "") {
        return r;
    }
    if f.objects.lock().unwrap().stalled {
        std::future::pending::<()>().await;
    }
    if q.get("watch").is_some_and(|w| w == "true") {
        return watch_pods(&f, &q);
    }
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    let o = f.objects.lock().unwrap();
    let rv = o.rv.to_string();
    let items: Vec<Value> = o
        .pods
        .values()
        .filter(|p| selects(&selector, &p["metadata"]["labels"]))
        .cloned()
        .collect();
    Json(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}))
        .into_response()
}

/// metrics-server's PodMetricsList: one item per pod with metrics (and selected by labels).
async fn list_pod_metrics(State(f): State<Fake>, Path(ns): Path<String>, Query(q): Q) -> Response {
    f.record(
        Method::GET,
        format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods"),
        &q,
        &Bytes::new(),
    );
    if let Some(r) = f.denied("list", "pods", "metrics.k8s.io", "") {
        return r;
    }
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    let o = f.objects.lock().unwrap();
    let items: Vec<Value> = o
        .pod_metrics
        .iter()
        .filter_map(|(name, containers)| {
            let pod = o.pods.get(name)?;
            let labels = &pod["metadata"]["labels"];
            selects(&selector, labels).then(|| {
                json!({
                    "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
                    "metadata": {"name": name, "namespace": ns, "labels": labels},
                    "timestamp": "2026-11-26T12:00:00Z", "window": "15s",
                    "containers": containers,
                })
            })
        })
        .collect();
    Json(json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}))
        .into_response()
}

/// A watch: the changes after the asked resource version, then each new one, one JSON event
/// per line on a chunked response that stays open.
fn watch_pods(f: &Fake, q: &BTreeMap<String, String>) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    {
        let mut o = f.objects.lock().unwrap();
        for (_, line) in o.events.iter().filter(|(rv, _)| *rv > from) {
            let _ = tx.send(line.clone());
        }
        o.watchers.push(tx);
    }
    let lines = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
        .filter(move |line| {
            let event: Value = serde_json::from_str(line).unwrap();
            selects(&selector, &event["object"]["metadata"]["labels"])
        })
        .map(|line| Ok::<_, std::io::Error>(Bytes::from(line)));
    Body::from_stream(lines).into_response()
}

/// Equality selectors only (`a=b,c=d`): what the tests use.
fn selects(selector: &str, labels: &Value) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap();
        labels[k].as_str() == Some(v)
    })
}

async fn get_pod(State(f): State<Fake>, Path((ns, name)): Path<(String, String)>) -> Response {
    f.record(
        Method::GET,
        format!("/api/v1/namespaces/{ns}/pods/{name}"),
        &BTreeMap::new(),
        &Bytes::new(),
    );
    if let Some(r) = f.denied("get", "pods", "", &name) {
        return r;
    }
    match f.get("pods", &name) {
        Some(p) => Json(p).into_response(),
        None => not_found("pods", "", &name),
    }
}

async fn delete_pod(
    State(f): State<Fake>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Q,
    body: Bytes,
) -> Response {
    f.record(
        Method::DELETE,
        format!("/api/v1/namespaces/{ns}/pods/{name}"),
        &q,
        &body,
    );
    if let Some(r) = f.denied("delete", "pods", "", &name) {
        return r;
    }
    let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut o = f.objects.lock().unwrap();
    let Some(pod) = o.pods.get(&name).cloned() else {
        return not_found("pods", "", &name);
    };
    if let Some(uid) = options["preconditions"]["uid"].as_str()
        && pod["metadata"]["uid"].as_str() != Some(uid)
    {
        let msg = format!(
            "Operation cannot be fulfilled on pods {name:?}: Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            pod["metadata"]["uid"].as_str().unwrap_or_default()
        );
        return status(409, "Conflict", &msg, &name, "pods");
    }
    o.pods.remove(&name);
    let mut gone = pod.clone();
    o.pod_event("DELETED", &mut gone);
    Json(pod).into_response()
}

async fn pod_log(
    State(f): State<Fake>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    f.record(
        Method::GET,
        format!("/api/v1/namespaces/{ns}/pods/{name}/log"),
        &q,
        &Bytes::new(),
    );
    if let Some(r) = f.denied("get", "pods/log", "", &name) {
        return r;
    }
    let follow = q.get("follow").is_some_and(|v| v == "true");
    let tail: Option<usize> = q.get("tailLines").map(|t| t.parse().unwrap());
    let (backlog, rx) = {
        let mut o = f.objects.lock().unwrap();
        if !o.pods.contains_key(&name) {
            return not_found("pods", "", &name);
        }
        let log = o.logs.entry(name.clone()).or_insert_with(new_log);
        let skip = tail.map_or(0, |t| log.lines.len().saturating_sub(t));
        let backlog: Vec<String> = log.lines[skip..].to_vec();
        (backlog, follow.then(|| log.tx.subscribe()))
    };
    let first = tokio_stream::iter(
        backlog
            .into_iter()
            .map(|l| Ok::<_, std::io::Error>(Bytes::from(l + "\n"))),
    );
    match rx {
        None => Body::from_stream(first).into_response(),
        Some(rx) => {
            let rest = BroadcastStream::new(rx)
                .filter_map(|r| r.ok())
                .map(|l| Ok::<_, std::io::Error>(Bytes::from(l + "\n")));
            Body::from_stream(first.chain(rest)).into_response()
        }
    }
}

fn apps_kind(kind: &str) -> Option<&'static str> {
    match kind {
        "deployments" => Some("Deployment"),
        "statefulsets" => Some("StatefulSet"),
        "replicasets" => Some("ReplicaSet"),
        _ => None,
    }
}

fn apps_map<'a>(o: &'a mut Objects, kind: &str) -> &'a mut BTreeMap<String, Value> {
    match kind {
        "deployments" => &mut o.deployments,
        "statefulsets" => &mut o.statefulsets,
        _ => &mut o.replicasets,
    }
}

async fn get_apps(
    State(f): State<Fake>,
    Path((ns, kind, name)): Path<(String, String, String)>,
) -> Response {
    f.record(
        Method::GET,
        format!("/apis/apps/v1/namespaces/{ns}/{kind}/{name}"),
        &BTreeMap::new(),
        &Bytes::new(),
    );
    if apps_kind(&kind).is_none() {
        return not_found(&kind, "apps", &name);
    }
    let resource: &'static str = match kind.as_str() {
        "deployments" => "deployments",
        "statefulsets" => "statefulsets",
        _ => "replicasets",
    };
    if let Some(r) = f.denied("get", resource, "apps", &name) {
        return r;
    }
    let mut o = f.objects.lock().unwrap();
    match apps_map(&mut o, &kind).get(&name) {
        Some(obj) => Json(obj.clone()).into_response(),
        None => not_found(&kind, "apps", &name),
    }
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

async fn patch_apps(
    State(f): State<Fake>,
    Path((ns, kind, name)): Path<(String, String, String)>,
    Query(q): Q,
    body: Bytes,
) -> Response {
    f.record(
        Method::PATCH,
        format!("/apis/apps/v1/namespaces/{ns}/{kind}/{name}"),
        &q,
        &body,
    );
    let resource: &'static str = match kind.as_str() {
        "deployments" => "deployments",
        "statefulsets" => "statefulsets",
        _ => {
            return status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                &name,
                &kind,
            );
        }
    };
    if let Some(r) = f.denied("patch", resource, "apps", &name) {
        return r;
    }
    let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut o = f.objects.lock().unwrap();
    match apps_map(&mut o, &kind).get_mut(&name) {
        Some(obj) => {
            merge(obj, &patch);
            Json(obj.clone()).into_response()
        }
        None => not_found(&kind, "apps", &name),
    }
}

fn scale_of(ns: &str, name: &str, obj: &Value) -> Value {
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": obj["spec"]["replicas"]},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0)},
    })
}

async fn get_scale(
    State(f): State<Fake>,
    Path((ns, kind, name)): Path<(String, String, String)>,
) -> Response {
    f.record(
        Method::GET,
        format!("/apis/apps/v1/namespaces/{ns}/{kind}/{name}/scale"),
        &BTreeMap::new(),
        &Bytes::new(),
    );
    let mut o = f.objects.lock().unwrap();
    match apps_map(&mut o, &kind).get(&name) {
        Some(obj) => Json(scale_of(&ns, &name, obj)).into_response(),
        None => not_found(&kind, "apps", &name),
    }
}

async fn patch_scale(
    State(f): State<Fake>,
    Path((ns, kind, name)): Path<(String, String, String)>,
    Query(q): Q,
    body: Bytes,
) -> Response {
    f.record(
        Method::PATCH,
        format!("/apis/apps/v1/namespaces/{ns}/{kind}/{name}/scale"),
        &q,
        &body,
    );
    let resource: &'static str = match kind.as_str() {
        "deployments" => "deployments/scale",
        "statefulsets" => "statefulsets/scale",
        _ => return not_found(&kind, "apps", &name),
    };
    if let Some(r) = f.denied("patch", resource, "apps", &name) {
        return r;
    }
    let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut o = f.objects.lock().unwrap();
    match apps_map(&mut o, &kind).get_mut(&name) {
        Some(obj) => {
            if let Some(r) = patch["spec"]["replicas"].as_i64() {
                obj["spec"]["replicas"] = json!(r);
            }
            Json(scale_of(&ns, &name, obj)).into_response()
        }
        None => not_found(&kind, "apps", &name),
    }
}

/// A kubeconfig that points kube-rs at `server` (namespace [`NAMESPACE`]), written into `dir`.
pub fn kubeconfig(dir: &std::path::Path, server: &str) -> PathBuf {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server}
users:
- name: warden
  user: {{}}
contexts:
- name: fake
  context:
    cluster: fake
    user: warden
    namespace: {NAMESPACE}
current-context: fake
"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}
