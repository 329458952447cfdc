//! The Kubernetes runtime wired into warden: `--kubernetes` with a kubeconfig pointing at a
//! fake API server (the only fake: Redis and the Celery workers are real, named
//! `celery@<pod>`). A POD restart through Control deletes exactly that pod with the configured
//! grace period (`kubernetes_grace`); RBAC denying the delete fails the target naming the verb and resource.
use std::time::Duration;

use axum::http::Method;
use serde_json::{Value, json};
use tonic::transport::Channel;
use warden::proto::v1::{self as pb, control_client::ControlClient};
use warden_kubernetes::KubernetesConfig;

use crate::support::*;

#[path = "../../crates/kubernetes/tests/support/fake.rs"]
#[allow(dead_code)]
mod fake;

use fake::{Fake, NAMESPACE};

/// A running worker pod (of a ReplicaSet) whose hostname is its name.
fn pod(name: &str, uid: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid, "labels": {"app": "celery"}},
        "spec": {"containers": [{"name": "worker", "image": "celery-worker:1"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "worker", "ready": true, "restartCount": 0, "image": "celery-worker:1", "imageID": "",
             "state": {"running": {"startedAt": "2026-11-26T10:00:00Z"}}}
        ]},
    })
}

async fn alive(warden: &TestWarden, name: &'static str) {
    let client = warden.client().await;
    eventually(Duration::from_secs(40), "the worker is ALIVE", || {
        let mut client = client.clone();
        async move {
            let r = list(&mut client, false).await;
            find(&r, name)
                .filter(|w| w.lifecycle() == pb::Lifecycle::Alive)
                .map(|_| ())
        }
    })
    .await
}

async fn restart_pod(control: &mut ControlClient<Channel>, worker: &str) -> pb::Operation {
    control
        .restart_workers(pb::RestartWorkersRequest {
            selector: Some(pb::Selector {
                workers: vec![worker.to_owned()],
                ..Default::default()
            }),
            mode: pb::RestartMode::Pod.into(),
            reason: "kubernetes test".into(),
            ..Default::default()
        })
        .await
        .expect("restart")
        .into_inner()
        .operation
        .expect("an operation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_restart_deletes_the_workers_pod_and_a_403_names_the_verb_and_resource() {
    let fake = Fake::default();
    fake.add_pod(pod("celery-7d9f-aaaaa", "p-1"));
    fake.add_pod(pod("celery-7d9f-bbbbb", "p-2"));
    let api = fake.start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake::kubeconfig(dir.path(), &format!("http://{api}"));

    let redis = RedisServer::start().await;
    let broker = redis.url(0);
    let one = |name| {
        CeleryWorker::start(
            &broker,
            name,
            WorkerOptions {
                concurrency: 1,
                ..WorkerOptions::default()
            },
        )
    };
    let _a = one("celery@celery-7d9f-aaaaa");
    let _b = one("celery@celery-7d9f-bbbbb");
    let config = warden::config::Config {
        kubernetes: Some(KubernetesConfig {
            kubeconfig: Some(kubeconfig),
            selector: "app=celery".into(),
            call_timeout: Duration::from_secs(5),
            // Not the 30 s default: the restart must use what is configured.
            grace: Duration::from_secs(45),
            ..KubernetesConfig::default()
        }),
        ..test_config(&broker)
    };
    config.validate().expect("a valid config");
    let warden = TestWarden::start(config).await;
    assert_eq!(
        warden.inner().runtime.as_ref().map(|r| r.name()),
        Some("kubernetes")
    );
    alive(&warden, "celery@celery-7d9f-aaaaa").await;
    alive(&warden, "celery@celery-7d9f-bbbbb").await;
    let mut control = ControlClient::new(warden.channel().await);

    // No Prometheus: the metrics API (metrics-server's PodMetrics) gives the pods' figures.
    fake.set_pod_metrics(
        "celery-7d9f-bbbbb",
        json!([{"name": "worker", "usage": {"cpu": "750m", "memory": "300Mi"}}]),
    );
    let client = warden.client().await;
    let usage = eventually(
        Duration::from_secs(60),
        "figures from metrics.k8s.io",
        || {
            let mut client = client.clone();
            async move {
                let r = list(&mut client, false).await;
                // The worker's own rusage (source celery) may come first: the API's
                // figures replace it.
                find(&r, "celery@celery-7d9f-bbbbb")?
                    .resources
                    .clone()
                    .filter(|u| u.source != "celery")
            }
        },
    )
    .await;
    assert_eq!(usage.source, "metrics.k8s.io", "{usage:?}");
    assert!(
        (usage.cpu_percent.unwrap() - 75.0).abs() < 1e-9,
        "{usage:?}"
    );
    assert_eq!(usage.memory_rss_bytes, Some(300 * 1024 * 1024));

    // POD restart: exactly one DELETE, of that pod, with the configured grace, guarded by its uid.
    restart_pod(&mut control, "celery@celery-7d9f-aaaaa").await;
    let writes = eventually(Duration::from_secs(20), "the pod is deleted", || {
        let fake = fake.clone();
        async move {
            let writes = fake.writes();
            (!writes.is_empty()).then_some(writes)
        }
    })
    .await;
    assert_eq!(writes.len(), 1, "{writes:?}");
    let delete = &writes[0];
    assert_eq!(delete.method, Method::DELETE);
    assert_eq!(
        delete.path,
        format!("/api/v1/namespaces/{NAMESPACE}/pods/celery-7d9f-aaaaa")
    );
    assert_eq!(
        delete.body["gracePeriodSeconds"], 45,
        "the configured grace"
    );
    assert_eq!(delete.body["preconditions"]["uid"], "p-1");
    assert!(fake.get("pods", "celery-7d9f-aaaaa").is_none());
    assert!(fake.get("pods", "celery-7d9f-bbbbb").is_some());

    // RBAC denies the delete: the target fails, naming the verb and the resource.
    fake.forbid("delete", "pods");
    let op = restart_pod(&mut control, "celery@celery-7d9f-bbbbb").await;
    let target = eventually(Duration::from_secs(20), "the target fails", || {
        let mut control = control.clone();
        let name = op.name.clone();
        async move {
            let op = control
                .get_operation(pb::GetOperationRequest { name })
                .await
                .ok()?
                .into_inner()
                .operation?;
            op.targets
                .into_iter()
                .find(|t| t.code() == pb::OutcomeCode::Failed)
        }
    })
    .await;
    assert!(
        target.message.contains("delete pods \"celery-7d9f-bbbbb\""),
        "{target:?}"
    );
    assert!(fake.get("pods", "celery-7d9f-bbbbb").is_some());
    assert_eq!(
        fake.writes()
            .iter()
            .filter(|w| w.method == Method::DELETE)
            .count(),
        2,
        "the refused delete was the only other write"
    );
    warden.stop().await;
}

#[tokio::test]
async fn an_unreadable_kubeconfig_fails_the_start_with_a_clear_error() {
    let redis = RedisServer::start().await;
    let config = warden::config::Config {
        kubernetes: Some(KubernetesConfig {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            ..KubernetesConfig::default()
        }),
        ..test_config(&redis.url(0))
    };
    let Err(err) = warden::server::Warden::start(config).await else {
        panic!("warden started without a kubeconfig");
    };
    let text = err.to_string();
    assert!(
        text.contains("kubernetes") && text.contains("/nonexistent/kubeconfig"),
        "{text}"
    );
}
