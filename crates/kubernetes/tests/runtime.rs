//! The Kubernetes runtime against a fake API server (real paths, JSON objects and `Status`
//! errors) that kube-rs reaches through a generated kubeconfig.
mod support;

use std::time::Duration;

use axum::http::Method;
use serde_json::{Value, json};
use support::fake::{Fake, NAMESPACE, kubeconfig};
use tokio_stream::StreamExt;
use warden_core::{
    model::{Backend, WorkerKey},
    ports::{PortError, RestartMode, Runtime},
};
use warden_kubernetes::{
    KubernetesConfig, KubernetesRuntime, LogOptions, PodChange, PodMetricsSource, WorkloadKind,
};

const DEADLINE: Duration = Duration::from_secs(10);

fn worker(id: &str) -> WorkerKey {
    WorkerKey::new(Backend::Celery, "default", id)
}

fn owner(kind: &str, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}])
}

fn pod(name: &str, uid: &str, labels: Value, owners: Value, status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid, "labels": labels, "ownerReferences": owners},
        "spec": {"containers": [{"name": "worker", "image": "celery-worker:1"}, {"name": "sidecar", "image": "proxy:1"}]},
        "status": status,
    })
}

fn running() -> Value {
    json!({"phase": "Running", "containerStatuses": [
        {"name": "worker", "ready": true, "restartCount": 0, "image": "celery-worker:1", "imageID": "", "state": {"running": {"startedAt": "2026-11-26T10:00:00Z"}}}
    ]})
}

/// A Deployment `celery` (ReplicaSet `celery-7d9f`) with two pods, a StatefulSet `images`
/// with one, and a pod the selector leaves out.
fn cluster() -> Fake {
    let fake = Fake::default();
    fake.add("deployments", json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "celery", "namespace": NAMESPACE, "uid": "d-1"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "celery"}}, "template": {"metadata": {"labels": {"app": "celery"}}, "spec": {"containers": [{"name": "worker"}]}}},
        "status": {"replicas": 2},
    }));
    fake.add("replicasets", json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "celery-7d9f", "namespace": NAMESPACE, "uid": "rs-1", "ownerReferences": owner("Deployment", "celery", "d-1")},
        "spec": {"selector": {"matchLabels": {"app": "celery"}}},
    }));
    fake.add("statefulsets", json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "images", "namespace": NAMESPACE, "uid": "s-1"},
        "spec": {"replicas": 1, "serviceName": "images", "selector": {"matchLabels": {"app": "celery"}}, "template": {"metadata": {"labels": {"app": "celery"}}, "spec": {"containers": [{"name": "worker"}]}}},
    }));
    let labels = json!({"app": "celery"});
    fake.add_pod(pod(
        "celery-7d9f-aaaaa",
        "p-1",
        labels.clone(),
        owner("ReplicaSet", "celery-7d9f", "rs-1"),
        running(),
    ));
    fake.add_pod(pod(
        "celery-7d9f-bbbbb",
        "p-2",
        labels.clone(),
        owner("ReplicaSet", "celery-7d9f", "rs-1"),
        json!({"phase": "Running", "containerStatuses": [
            {"name": "worker", "ready": true, "restartCount": 3, "image": "celery-worker:1", "imageID": "",
             "state": {"running": {"startedAt": "2026-11-26T11:00:00Z"}},
             "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": "2026-11-26T10:00:00Z", "finishedAt": "2026-11-26T10:59:58Z"}}}
        ]}),
    ));
    fake.add_pod(pod("images-0", "p-3", labels, owner("StatefulSet", "images", "s-1"), json!({"phase": "Running", "containerStatuses": [
        {"name": "worker", "ready": false, "restartCount": 1, "image": "celery-worker:1", "imageID": "",
         "state": {"terminated": {"exitCode": 2, "reason": "Error", "finishedAt": "2026-11-26T11:30:00Z"}}}
    ]})));
    fake.add_pod(pod(
        "web-1",
        "p-9",
        json!({"app": "web"}),
        json!([]),
        running(),
    ));
    fake
}

struct Setup {
    fake: Fake,
    runtime: KubernetesRuntime,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let fake = cluster();
    let addr = fake.start().await;
    let runtime = connect(&format!("http://{addr}")).await;
    let (runtime, dir) = runtime;
    Setup {
        fake,
        runtime,
        _dir: dir,
    }
}

async fn connect(server: &str) -> (KubernetesRuntime, tempfile::TempDir) {
    connect_with(server, Duration::from_secs(5)).await
}

async fn connect_with(
    server: &str,
    call_timeout: Duration,
) -> (KubernetesRuntime, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = KubernetesConfig {
        kubeconfig: Some(kubeconfig(dir.path(), server)),
        selector: "app=celery".into(),
        call_timeout,
        ..KubernetesConfig::default()
    };
    (KubernetesRuntime::connect(config).await.unwrap(), dir)
}

#[tokio::test]
async fn the_namespace_comes_from_the_kubeconfig_context() {
    let s = setup().await;
    assert_eq!(s.runtime.namespace(), NAMESPACE);
    assert!(
        s.runtime
            .manages(&worker("celery@celery-7d9f-aaaaa"))
            .await
            .unwrap()
    );
    assert!(
        s.runtime
            .manages(&worker("w2@images-0.images.workers.svc.cluster.local"))
            .await
            .unwrap()
    );
    // A pod the selector leaves out is not a worker's.
    assert!(!s.runtime.manages(&worker("celery@web-1")).await.unwrap());
    let list = s
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/pods"))
        .unwrap();
    assert_eq!(
        list.query.get("labelSelector").map(String::as_str),
        Some("app=celery")
    );
}

#[tokio::test]
async fn pod_restart_deletes_exactly_the_mapped_pod_with_the_grace_period() {
    let s = setup().await;
    s.runtime
        .restart(
            &worker("celery@celery-7d9f-aaaaa"),
            RestartMode::Instance,
            Duration::from_secs(45),
        )
        .await
        .unwrap();
    let writes = s.fake.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let delete = &writes[0];
    assert_eq!(delete.method, Method::DELETE);
    assert_eq!(
        delete.path,
        format!("/api/v1/namespaces/{NAMESPACE}/pods/celery-7d9f-aaaaa")
    );
    assert_eq!(delete.body["gracePeriodSeconds"], 45);
    assert_eq!(
        delete.body["preconditions"]["uid"], "p-1",
        "guarded by the pod's uid"
    );
    assert!(s.fake.get("pods", "celery-7d9f-aaaaa").is_none());
    assert!(
        s.fake.get("pods", "celery-7d9f-bbbbb").is_some(),
        "the sibling pod is untouched"
    );
    assert_eq!(
        s.fake.get("deployments", "celery").unwrap()["spec"]["template"]["metadata"]
            .get("annotations"),
        None
    );
}

#[tokio::test]
async fn rollout_patches_the_deployment_found_through_owner_references() {
    let s = setup().await;
    s.runtime
        .restart(
            &worker("celery@celery-7d9f-bbbbb"),
            RestartMode::Rollout,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let requests = s.fake.requests();
    assert!(
        requests.iter().any(|r| r.method == Method::GET
            && r.path == format!("/apis/apps/v1/namespaces/{NAMESPACE}/replicasets/celery-7d9f")),
        "the ReplicaSet was read to find its Deployment: {requests:?}"
    );
    let writes = s.fake.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let patch = &writes[0];
    assert_eq!(patch.method, Method::PATCH);
    assert_eq!(
        patch.path,
        format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/celery")
    );
    let at = patch.body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
        .as_str()
        .expect("restartedAt in the patch body");
    at.parse::<k8s_openapi::jiff::Timestamp>()
        .expect("an RFC 3339 time");
    // The patched object carries it; no pod was deleted.
    let d = s.fake.get("deployments", "celery").unwrap();
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        at
    );
    assert!(s.fake.get("pods", "celery-7d9f-bbbbb").is_some());
}

#[tokio::test]
async fn rollout_of_a_statefulset_pod_patches_the_statefulset() {
    let s = setup().await;
    let w = worker("celery@images-0");
    let workload = s.runtime.workload(&w).await.unwrap().unwrap();
    assert_eq!(
        (workload.kind, workload.group()),
        (WorkloadKind::StatefulSet, "statefulset/images".to_owned())
    );
    s.runtime
        .restart(&w, RestartMode::Rollout, Duration::from_secs(30))
        .await
        .unwrap();
    let writes = s.fake.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        writes[0].path,
        format!("/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets/images")
    );
    assert!(writes[0].body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string());
}

#[tokio::test]
async fn scale_patches_the_scale_subresource() {
    let s = setup().await;
    s.runtime.scale("deployment/celery", 5).await.unwrap();
    s.runtime.scale("statefulset/images", 0).await.unwrap();
    let writes = s.fake.writes();
    assert_eq!(writes.len(), 2);
    assert_eq!(
        writes[0].path,
        format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/celery/scale")
    );
    assert_eq!(writes[0].body, json!({"spec": {"replicas": 5}}));
    assert_eq!(
        writes[1].path,
        format!("/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets/images/scale")
    );
    assert_eq!(
        s.fake.get("deployments", "celery").unwrap()["spec"]["replicas"],
        5
    );
    assert_eq!(
        s.fake.get("statefulsets", "images").unwrap()["spec"]["replicas"],
        0
    );
    assert!(matches!(
        s.runtime.scale("daemonset/x", 1).await,
        Err(PortError::NotSupported(_))
    ));
}

#[tokio::test]
async fn forbidden_is_permission_denied_naming_the_verb_and_resource() {
    let s = setup().await;
    s.fake.forbid("delete", "pods");
    let err = s
        .runtime
        .restart(
            &worker("celery@celery-7d9f-aaaaa"),
            RestartMode::Instance,
            Duration::from_secs(30),
        )
        .await
        .unwrap_err();
    let PortError::PermissionDenied(text) = &err else {
        panic!("{err:?}")
    };
    assert!(text.contains("delete pods \"celery-7d9f-aaaaa\""), "{text}");
    assert!(text.contains(NAMESPACE), "{text}");
    assert!(s.fake.get("pods", "celery-7d9f-aaaaa").is_some());

    s.fake.forbid("patch", "deployments/scale");
    let err = s.runtime.scale("deployment/celery", 3).await.unwrap_err();
    let PortError::PermissionDenied(text) = &err else {
        panic!("{err:?}")
    };
    assert!(
        text.contains("patch deployments/scale \"celery\""),
        "{text}"
    );
}

#[tokio::test]
async fn missing_objects_are_not_found() {
    let s = setup().await;
    // The API server's own 404.
    let err = s.runtime.scale("deployment/missing", 3).await.unwrap_err();
    let PortError::NotFound(text) = &err else {
        panic!("{err:?}")
    };
    assert!(text.contains("deployments/scale \"missing\""), "{text}");
    // No pod runs this worker.
    let w = worker("celery@gone-1");
    assert!(!s.runtime.manages(&w).await.unwrap());
    let err = s
        .runtime
        .restart(&w, RestartMode::Instance, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, PortError::NotFound(_)), "{err:?}");
    assert!(
        s.fake.writes().iter().all(|r| r.method != Method::DELETE),
        "nothing deleted"
    );
}

#[tokio::test]
async fn an_unreachable_api_is_unavailable_naming_kubernetes() {
    // A port that was just free and is now closed: the connection is refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (runtime, _dir) = connect(&format!("http://{closed}")).await;
    for err in [
        runtime.manages(&worker("celery@a")).await.unwrap_err(),
        runtime
            .restart(
                &worker("celery@a"),
                RestartMode::Instance,
                Duration::from_secs(1),
            )
            .await
            .unwrap_err(),
        runtime.scale("deployment/celery", 1).await.unwrap_err(),
    ] {
        let PortError::Unavailable { dependency, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*dependency, "kubernetes");
        assert!(
            err.to_string().starts_with("kubernetes unavailable"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn an_api_server_that_hangs_is_unavailable_after_the_call_timeout() {
    let fake = cluster();
    let addr = fake.start().await;
    fake.stall();
    let (runtime, _dir) = connect_with(&format!("http://{addr}"), Duration::from_millis(300)).await;
    let err = runtime
        .manages(&worker("celery@celery-7d9f-aaaaa"))
        .await
        .unwrap_err();
    let PortError::Unavailable { dependency, reason } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*dependency, "kubernetes");
    assert!(
        reason.contains("list pods") && reason.contains("no answer within"),
        "{reason}"
    );
}

#[tokio::test]
async fn followed_logs_arrive_line_by_line_as_the_pod_writes_them() {
    let s = setup().await;
    let pod = "celery-7d9f-aaaaa";
    for i in 1..=3 {
        s.fake.append_log(
            pod,
            &format!("[2026-11-26 10:00:0{i},000: INFO/MainProcess] old {i}"),
        );
    }
    let opts = LogOptions {
        follow: true,
        tail_lines: Some(2),
        since: Some(Duration::from_secs(600)),
        previous: false,
    };
    let mut logs = s
        .runtime
        .logs(&worker("celery@celery-7d9f-aaaaa"), &opts)
        .await
        .unwrap();
    assert_eq!(logs.source(), "celery-7d9f-aaaaa/worker");
    let query = &s
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/log"))
        .unwrap()
        .query;
    assert_eq!(query.get("follow").map(String::as_str), Some("true"));
    assert_eq!(query.get("tailLines").map(String::as_str), Some("2"));
    assert_eq!(query.get("sinceSeconds").map(String::as_str), Some("600"));
    assert_eq!(query.get("container").map(String::as_str), Some("worker"));

    let mut next = async || {
        tokio::time::timeout(DEADLINE, logs.lines.next())
            .await
            .expect("a line in time")
            .unwrap()
            .unwrap()
    };
    assert!(next().await.ends_with("old 2"));
    assert!(next().await.ends_with("old 3"));
    // Lines written after the call began arrive one by one, while the stream stays open.
    for i in 1..=3 {
        let line = format!("[2026-11-26 10:01:0{i},000: ERROR/ForkPoolWorker-1] new {i}");
        s.fake.append_log(pod, &line);
        assert_eq!(next().await, line);
    }
}

#[tokio::test]
async fn the_last_termination_reason_is_read() {
    let s = setup().await;
    let t = s
        .runtime
        .last_termination(&worker("celery@celery-7d9f-bbbbb"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(t.exit_code, 137);
    assert_eq!(
        (t.restart_count, t.current, t.container.as_str()),
        (3, false, "worker")
    );
    assert!(t.finished_at.is_some());

    let i = s
        .runtime
        .instance(&worker("celery@celery-7d9f-bbbbb"))
        .await
        .unwrap();
    assert!(i.running);
    assert_eq!(i.workload.unwrap().group(), "deployment/celery");
    assert_eq!(
        i.last_termination.unwrap().reason.as_deref(),
        Some("OOMKilled")
    );

    let t = s
        .runtime
        .last_termination(&worker("celery@images-0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.reason.as_deref(), t.exit_code, t.current),
        (Some("Error"), 2, true)
    );
    assert_eq!(
        s.runtime
            .last_termination(&worker("celery@celery-7d9f-aaaaa"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn pod_changes_are_followed_with_termination_reasons() {
    let s = setup().await;
    let mut changes = s.runtime.watch_pods();
    let mut next = async || {
        tokio::time::timeout(DEADLINE, changes.next())
            .await
            .expect("a change in time")
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next().await, PodChange::Resync));
    let mut listed = Vec::new();
    loop {
        match next().await {
            PodChange::Applied(p) => listed.push(p.metadata.name.unwrap()),
            PodChange::Synced => break,
            other => panic!("{other:?}"),
        }
    }
    listed.sort();
    assert_eq!(
        listed,
        ["celery-7d9f-aaaaa", "celery-7d9f-bbbbb", "images-0"],
        "the selector's pods"
    );

    // The kubelet reports the worker's container OOMKilled: the change carries the reason.
    s.fake.set_pod_status("celery-7d9f-aaaaa", json!({"phase": "Running", "containerStatuses": [
        {"name": "worker", "ready": false, "restartCount": 1, "image": "celery-worker:1", "imageID": "",
         "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-11-26T12:00:00Z"}}}
    ]}));
    let PodChange::Applied(pod) = next().await else {
        panic!("an applied pod")
    };
    assert!(s.runtime.worker_pod("celery@celery-7d9f-aaaaa", &pod));
    let t = s.runtime.termination_of(&pod).unwrap();
    assert_eq!(
        (t.reason.as_deref(), t.exit_code, t.restart_count),
        (Some("OOMKilled"), 137, 1)
    );

    // A pod restart shows up as the pod's deletion.
    s.runtime
        .restart(
            &worker("celery@celery-7d9f-aaaaa"),
            RestartMode::Instance,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let PodChange::Deleted(pod) = next().await else {
        panic!("a deleted pod")
    };
    assert_eq!(pod.metadata.name.as_deref(), Some("celery-7d9f-aaaaa"));
}

/// CPU and memory from the metrics API: two calls per round whatever the fleet; the pod's
/// containers summed (cores × 100 as CPU %), the memory limit from the pod spec when every
/// counted container has one; a pod without metrics gives nothing (absent, not 0); a 403 names
/// the verb and the resource.
#[tokio::test]
async fn pod_metrics_give_cpu_and_memory_per_worker_from_two_calls() {
    use warden_core::{model::metric, ports::MetricSource};
    let s = setup().await;
    s.fake.add_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "limited-0", "namespace": NAMESPACE, "uid": "p-4", "labels": {"app": "celery"}},
        "spec": {"containers": [{"name": "worker", "image": "celery-worker:1",
                 "resources": {"limits": {"memory": "1Gi", "cpu": "2"}}}]},
        "status": running(),
    }));
    s.fake.set_pod_metrics(
        "celery-7d9f-aaaaa",
        json!([
            {"name": "worker", "usage": {"cpu": "250m", "memory": "200Mi"}},
            {"name": "sidecar", "usage": {"cpu": "50m", "memory": "10Mi"}},
        ]),
    );
    s.fake.set_pod_metrics(
        "limited-0",
        json!([{"name": "worker", "usage": {"cpu": "1500000000n", "memory": "524288Ki"}}]),
    );
    let source = PodMetricsSource::new(s.runtime.clone());
    assert_eq!(source.name(), "metrics.k8s.io");
    let before = s.fake.requests().len();
    let asked = [
        worker("celery@celery-7d9f-aaaaa"),
        worker("celery@limited-0"),
        worker("celery@images-0"),
        worker("celery@nowhere"),
    ];
    let mut samples = source.collect(&asked).await.unwrap();
    assert_eq!(
        s.fake.requests().len() - before,
        2,
        "one pod list, one metrics list"
    );
    samples.sort_by(|a, b| a.worker.id.cmp(&b.worker.id));
    assert_eq!(samples.len(), 2, "{samples:?}");
    let get = |i: usize, name: &str| {
        samples[i]
            .metrics
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    };
    assert_eq!(&*samples[0].worker.id, "celery@celery-7d9f-aaaaa");
    assert!((get(0, metric::CPU_PERCENT).unwrap() - 30.0).abs() < 1e-9);
    assert_eq!(get(0, metric::MEMORY_BYTES), Some(210.0 * 1024.0 * 1024.0));
    assert_eq!(
        get(0, metric::MEMORY_LIMIT_BYTES),
        None,
        "the sidecar has no limit"
    );
    assert_eq!(&*samples[1].worker.id, "celery@limited-0");
    assert!((get(1, metric::CPU_PERCENT).unwrap() - 150.0).abs() < 1e-9);
    assert_eq!(get(1, metric::MEMORY_BYTES), Some(512.0 * 1024.0 * 1024.0));
    assert_eq!(
        get(1, metric::MEMORY_LIMIT_BYTES),
        Some(1024.0 * 1024.0 * 1024.0)
    );
    assert!(samples.iter().all(|x| x.source == "metrics.k8s.io"));

    s.fake.forbid("list", "pods");
    let err = source.collect(&asked).await.unwrap_err();
    assert!(matches!(err, PortError::PermissionDenied(_)), "{err:?}");
}
