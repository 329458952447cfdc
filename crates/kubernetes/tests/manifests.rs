//! deploy/: every Kubernetes manifest parses into its k8s-openapi type (unknown fields are
//! refused), the Role grants exactly the least-privilege set, and the pieces name each other
//! consistently; compose.yaml runs warden beside Redis and a Celery worker.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use serde::de::DeserializeOwned;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(name: &str) -> String {
    let path = deploy().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses a manifest into `T`, refusing fields `T` does not have (a typo such as
/// `serviceAcountName` would otherwise be dropped silently, here and by a lenient server).
fn parse<T: DeserializeOwned + serde::Serialize>(name: &str) -> T {
    let text = read(name);
    let typed: T = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let raw: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    assert_no_dropped_fields(name, "", &raw, &back);
    typed
}

fn assert_no_dropped_fields(
    file: &str,
    at: &str,
    raw: &serde_json::Value,
    typed: &serde_json::Value,
) {
    use serde_json::Value;
    match (raw, typed) {
        (Value::Object(r), Value::Object(t)) => {
            for (k, v) in r {
                let here = format!("{at}.{k}");
                let t = t
                    .get(k)
                    .unwrap_or_else(|| panic!("{file}: unknown field {here}"));
                assert_no_dropped_fields(file, &here, v, t);
            }
        }
        (Value::Array(r), Value::Array(t)) => {
            for (i, (r, t)) in r.iter().zip(t).enumerate() {
                assert_no_dropped_fields(file, &format!("{at}[{i}]"), r, t);
            }
        }
        _ => {}
    }
}

/// Manifests of custom resources, not parsed here.
const CUSTOM_RESOURCES: [&str; 2] = ["keda-scaledobject.yaml", "servicemonitor.yaml"];

#[test]
fn every_manifest_parses_into_its_type() {
    let dir = deploy().join("kubernetes");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        // Custom resources (Prometheus Operator, KEDA) have no k8s-openapi type: their queries
        // are checked against warden's metrics by tests/it/deploy.rs.
        .filter(|n| !CUSTOM_RESOURCES.contains(&n.as_str()))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "deployment.yaml",
            "role.yaml",
            "rolebinding.yaml",
            "service.yaml",
            "serviceaccount.yaml"
        ],
        "a new manifest needs a line in this test"
    );
    let sa: ServiceAccount = parse("kubernetes/serviceaccount.yaml");
    let role: Role = parse("kubernetes/role.yaml");
    let binding: RoleBinding = parse("kubernetes/rolebinding.yaml");
    let deployment: Deployment = parse("kubernetes/deployment.yaml");
    let service: Service = parse("kubernetes/service.yaml");

    let ns = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.namespace.clone().unwrap()
    };
    let namespace = ns(&sa.metadata);
    for other in [
        &role.metadata,
        &binding.metadata,
        &deployment.metadata,
        &service.metadata,
    ] {
        assert_eq!(ns(other), namespace, "every object in one namespace");
    }

    // The binding gives the Role to the ServiceAccount the Deployment runs as.
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("Role", "warden")
    );
    assert_eq!(role.metadata.name.as_deref(), Some("warden"));
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), Some(subject.name.as_str())),
        ("ServiceAccount", sa.metadata.name.as_deref())
    );
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        sa.metadata.name.as_deref()
    );

    // The Service selects the Deployment's pods and targets its named ports.
    let labels = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let selector = service.spec.as_ref().unwrap().selector.clone().unwrap();
    assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let container = &pod.containers[0];
    let ports: BTreeSet<_> = container
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect();
    for p in service.spec.as_ref().unwrap().ports.iter().flatten() {
        let target = match p.target_port.as_ref().unwrap() {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
            other => panic!("named target ports only: {other:?}"),
        };
        assert!(
            ports.contains(&target),
            "service port {target} is a container port"
        );
    }
    // Probes hit warden's HTTP port.
    for probe in [&container.readiness_probe, &container.liveness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert!(matches!(get.path.as_deref(), Some("/readyz" | "/healthz")));
    }
}

#[test]
fn the_role_grants_exactly_least_privilege() {
    let role: Role = parse("kubernetes/role.yaml");
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role.rules.unwrap() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.clone().unwrap() {
            for resource in rule.resources.clone().unwrap() {
                let verbs = granted.entry((group.clone(), resource)).or_default();
                verbs.extend(rule.verbs.iter().cloned());
            }
        }
    }
    let want: BTreeMap<(String, String), BTreeSet<String>> = [
        ("", "pods", &["get", "list", "watch", "delete"][..]),
        ("", "pods/log", &["get"]),
        ("apps", "deployments", &["get", "patch"]),
        ("apps", "statefulsets", &["get", "patch"]),
        ("apps", "replicasets", &["get"]),
        ("apps", "deployments/scale", &["get", "patch", "update"]),
        ("apps", "statefulsets/scale", &["get", "patch", "update"]),
    ]
    .into_iter()
    .map(|(g, r, v)| {
        (
            (g.to_owned(), r.to_owned()),
            v.iter().map(|s| s.to_string()).collect(),
        )
    })
    .collect();
    assert_eq!(granted, want);
    assert!(
        granted.values().flatten().all(|v| v != "*"),
        "no wildcard verbs"
    );
}

#[test]
fn compose_runs_warden_beside_redis_and_a_celery_worker() {
    let compose: serde_json::Value = serde_norway::from_str(&read("compose.yaml")).unwrap();
    let services = compose["services"].as_object().unwrap();
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["redis", "warden", "worker"]));
    let warden = &services["warden"];
    assert_eq!(warden["build"]["dockerfile"], "deploy/Dockerfile");
    assert!(deploy().join("Dockerfile").is_file());
    assert_eq!(
        warden["environment"]["WARDEN_BROKER_URL"],
        "redis://redis:6379/0"
    );
    assert_eq!(
        services["worker"]["environment"]["CELERY_BROKER_URL"],
        "redis://redis:6379/0"
    );
    // Published on loopback only (warden runs without tokens here).
    for p in warden["ports"].as_array().unwrap() {
        assert!(p.as_str().unwrap().starts_with("127.0.0.1:"), "{p}");
    }
    let app = services["worker"]["volumes"][0]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert!(
        deploy().join(app).is_file(),
        "the worker's app is in deploy/"
    );
}
