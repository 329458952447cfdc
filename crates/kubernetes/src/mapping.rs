//! Which pod runs a worker: pure rules over a pod's metadata, so they are tested without a
//! cluster.
use k8s_openapi::api::core::v1::Pod;

use crate::config::PodMapping;

/// The part of a worker id after its last `@` (Celery's `%h`), or the whole id.
pub(crate) fn host_part(id: &str) -> &str {
    id.rsplit_once('@').map_or(id, |(_, host)| host)
}

/// Whether `pod` runs the worker `id` under `mapping`.
pub(crate) fn matches(mapping: &PodMapping, id: &str, pod: &Pod) -> bool {
    let meta = &pod.metadata;
    match mapping {
        PodMapping::HostnameSuffix => {
            let host = host_part(id);
            // A fully qualified hostname (`%h` can be one) matches on its first label.
            let short = host.split('.').next().unwrap_or(host);
            let hostname = pod.spec.as_ref().and_then(|s| s.hostname.as_deref());
            [meta.name.as_deref(), hostname]
                .into_iter()
                .flatten()
                .any(|n| n == host || n == short)
        }
        PodMapping::Label(key) => meta
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .is_some_and(|v| v == id || v == host_part(id)),
        PodMapping::Annotation(key) => meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .is_some_and(|v| v == id),
    }
}

/// The pod for a worker among `pods`: a running one before one being deleted (a StatefulSet
/// reuses the name; a rollout briefly has both).
pub(crate) fn pick<'a>(mapping: &PodMapping, id: &str, pods: &'a [Pod]) -> Option<&'a Pod> {
    let mut found = pods.iter().filter(|p| matches(mapping, id, p));
    let first = found.next()?;
    if first.metadata.deletion_timestamp.is_none() {
        return Some(first);
    }
    found
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .or(Some(first))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PodSpec;
    use kube::api::ObjectMeta;

    use super::*;

    fn pod(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: map(labels),
                annotations: map(annotations),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: None,
        }
    }

    #[test]
    fn hostname_suffix_matches_the_pod_name_or_its_hostname() {
        let p = pod("worker-7d9f-abcde", &[], &[]);
        let m = PodMapping::HostnameSuffix;
        assert!(matches(&m, "celery@worker-7d9f-abcde", &p));
        assert!(matches(
            &m,
            "w1@worker-7d9f-abcde.jobs.svc.cluster.local",
            &p
        ));
        assert!(matches(&m, "worker-7d9f-abcde", &p));
        assert!(!matches(&m, "celery@worker-7d9f-abcdx", &p));
        assert!(!matches(&m, "celery@worker-7d9f", &p));
        let mut with_hostname = pod("x", &[], &[]);
        with_hostname.spec.as_mut().unwrap().hostname = Some("img-0".into());
        assert!(matches(&m, "celery@img-0", &with_hostname));
    }

    #[test]
    fn label_and_annotation_hold_the_id() {
        let p = pod(
            "x",
            &[("worker", "host-1")],
            &[("warden.io/worker", "celery@host-1")],
        );
        assert!(matches(
            &PodMapping::Label("worker".into()),
            "celery@host-1",
            &p
        ));
        assert!(!matches(
            &PodMapping::Label("worker".into()),
            "celery@host-2",
            &p
        ));
        assert!(!matches(
            &PodMapping::Label("other".into()),
            "celery@host-1",
            &p
        ));
        let a = PodMapping::Annotation("warden.io/worker".into());
        assert!(matches(&a, "celery@host-1", &p));
        assert!(!matches(&a, "host-1", &p));
    }

    #[test]
    fn a_live_pod_is_picked_over_one_being_deleted() {
        let mut old = pod("w-0", &[], &[]);
        old.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        old.metadata.uid = Some("old".into());
        let mut new = pod("w-0", &[], &[]);
        new.metadata.uid = Some("new".into());
        let pods = [old, new];
        let got = pick(&PodMapping::HostnameSuffix, "celery@w-0", &pods).unwrap();
        assert_eq!(got.metadata.uid.as_deref(), Some("new"));
        assert!(pick(&PodMapping::HostnameSuffix, "celery@w-1", &pods).is_none());
    }
}
