//! [`KubernetesRuntime`]: the `Runtime` port over the Kubernetes API, plus what only pods
//! have (termination reasons, the owning workload, log streams) as inherent methods.
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet, StatefulSet},
        core::v1::Pod,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions},
    config::{KubeConfigOptions, Kubeconfig},
};
use warden_core::{
    model::{Backend, WorkerKey},
    ports::{
        BoxFuture, ExitRecord, ExitStatus, InstanceInfo, LogEvent, LogFeed, LogPage, LogPosition,
        PortError, RawLogLine, RestartMode, Runtime,
    },
};

use crate::{
    config::KubernetesConfig,
    error::{Call, DEPENDENCY, timed},
    logs::{self, LogOptions, PodLogs},
    mapping,
    termination::{self, Termination},
    workload::{self, Workload, WorkloadKind},
};

/// The field manager warden's patches are recorded under.
const FIELD_MANAGER: &str = "warden";

/// Workers in pods of one namespace.
#[derive(Clone)]
pub struct KubernetesRuntime {
    client: Client,
    namespace: String,
    config: KubernetesConfig,
}

impl std::fmt::Debug for KubernetesRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRuntime")
            .field("namespace", &self.namespace)
            .field("selector", &self.config.selector)
            .field("mapping", &self.config.mapping)
            .finish_non_exhaustive()
    }
}

/// What the runtime knows about the pod that runs a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInstance {
    pub pod: String,
    pub uid: String,
    pub container: String,
    /// The owning workload (its group), when the pod has one warden can restart and scale.
    pub workload: Option<Workload>,
    /// The pod's phase (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
    pub phase: Option<String>,
    /// The worker's container is running now.
    pub running: bool,
    /// The pod is being deleted.
    pub terminating: bool,
    pub started_at: Option<SystemTime>,
    /// How many times the kubelet restarted the worker's container.
    pub restart_count: i32,
    pub last_termination: Option<Termination>,
}

impl PodInstance {
    /// As a log line's source shows it: `pod/container`.
    pub fn source(&self) -> String {
        format!("{}/{}", self.pod, self.container)
    }
}

impl KubernetesRuntime {
    /// Connects as `config` says: its kubeconfig (and context) when given, else inferred
    /// (`$KUBECONFIG`, `~/.kube/config`, in-cluster). Nothing is called yet: an API server that
    /// is down now fails the first call, not this.
    pub async fn connect(config: KubernetesConfig) -> Result<Self, PortError> {
        let bad = |e: String| PortError::Failed(format!("kubernetes configuration: {e}"));
        let options = KubeConfigOptions {
            context: config.context.clone(),
            ..KubeConfigOptions::default()
        };
        let mut kube_config = match (&config.kubeconfig, &config.context) {
            (Some(path), _) => {
                let file = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| bad(e.to_string()))?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| bad(e.to_string()))?,
            (None, None) => kube::Config::infer()
                .await
                .map_err(|e| bad(e.to_string()))?,
        };
        kube_config.connect_timeout = Some(config.call_timeout);
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| kube_config.default_namespace.clone());
        let client = Client::try_from(kube_config).map_err(|e| bad(e.to_string()))?;
        Ok(Self::new(client, namespace, config))
    }

    /// A runtime over an existing client (the namespace already decided).
    pub fn new(client: Client, namespace: String, config: KubernetesConfig) -> Self {
        Self {
            client,
            namespace,
            config,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn config(&self) -> &KubernetesConfig {
        &self.config
    }

    fn call<'a>(&'a self, verb: &'static str, resource: &'static str, name: &'a str) -> Call<'a> {
        Call {
            verb,
            resource,
            name,
            namespace: &self.namespace,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The worker pods (those the selector picks).
    pub async fn pods(&self) -> Result<Vec<Pod>, PortError> {
        let mut params = ListParams::default();
        if !self.config.selector.is_empty() {
            params = params.labels(&self.config.selector);
        }
        let api = self.api::<Pod>();
        let list = timed(
            self.call("list", "pods", ""),
            self.config.call_timeout,
            api.list(&params),
        )
        .await?;
        Ok(list.items)
    }

    /// The pod that runs the worker, if any.
    pub async fn find_pod(&self, worker: &WorkerKey) -> Result<Option<Pod>, PortError> {
        let pods = self.pods().await?;
        Ok(mapping::pick(&self.config.mapping, &worker.id, &pods).cloned())
    }

    /// The names of the worker pods the mapping gives `id` (a short name such as
    /// `celery@host`): for resolving a worker the fleet has not seen yet.
    pub async fn find(&self, id: &str) -> Result<Vec<String>, PortError> {
        let pods = self.pods().await?;
        Ok(pods
            .iter()
            .filter(|p| mapping::matches(&self.config.mapping, id, p))
            .filter_map(|p| p.metadata.name.clone())
            .collect())
    }

    async fn pod_of(&self, worker: &WorkerKey) -> Result<Pod, PortError> {
        self.find_pod(worker).await?.ok_or_else(|| {
            PortError::NotFound(format!(
                "no pod runs worker {:?} in namespace {:?} (mapping {}, selector {:?})",
                &*worker.id, self.namespace, self.config.mapping, self.config.selector
            ))
        })
    }

    /// The worker's container in `pod`: the configured one, else the pod's first.
    fn container_of(&self, pod: &Pod) -> String {
        self.config.container.clone().unwrap_or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .map(|c| c.name.clone())
                .unwrap_or_default()
        })
    }

    /// What runs the worker: its pod, container state and workload.
    pub async fn instance(&self, worker: &WorkerKey) -> Result<PodInstance, PortError> {
        let pod = self.pod_of(worker).await?;
        let workload = self.workload_of(&pod).await?;
        let container = self.container_of(&pod);
        let status = termination::container_status(&pod, &container);
        let running = status.and_then(|s| s.state.as_ref()?.running.as_ref());
        Ok(PodInstance {
            pod: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            workload,
            phase: pod.status.as_ref().and_then(|s| s.phase.clone()),
            running: running.is_some(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            started_at: running
                .and_then(|r| r.started_at.as_ref())
                .map(|t| SystemTime::from(t.0)),
            restart_count: status.map_or(0, |s| s.restart_count),
            last_termination: termination::last_termination(&pod, &container),
            container,
        })
    }

    /// How the worker's container last ended (OOMKilled, Error + exit code), if it ever did.
    pub async fn last_termination(
        &self,
        worker: &WorkerKey,
    ) -> Result<Option<Termination>, PortError> {
        let pod = self.pod_of(worker).await?;
        let container = self.container_of(&pod);
        Ok(termination::last_termination(&pod, &container))
    }

    /// The worker's group: the workload that owns its pod.
    pub async fn workload(&self, worker: &WorkerKey) -> Result<Option<Workload>, PortError> {
        let pod = self.pod_of(worker).await?;
        self.workload_of(&pod).await
    }

    /// Pod → (ReplicaSet → Deployment | StatefulSet), through controller ownerReferences.
    async fn workload_of(&self, pod: &Pod) -> Result<Option<Workload>, PortError> {
        let Some(owner) = workload::controller(pod.metadata.owner_references.as_ref()) else {
            return Ok(None);
        };
        match owner.kind.as_str() {
            "StatefulSet" => Ok(Some(Workload {
                kind: WorkloadKind::StatefulSet,
                name: owner.name.clone(),
            })),
            "ReplicaSet" => {
                let api = self.api::<ReplicaSet>();
                let rs = timed(
                    self.call("get", "replicasets", &owner.name),
                    self.config.call_timeout,
                    api.get(&owner.name),
                )
                .await?;
                Ok(workload::controller(rs.metadata.owner_references.as_ref())
                    .filter(|o| o.kind == "Deployment")
                    .map(|o| Workload {
                        kind: WorkloadKind::Deployment,
                        name: o.name.clone(),
                    }))
            }
            _ => Ok(None),
        }
    }

    /// Deletes exactly the worker's pod, giving it `grace` to stop; the pod's uid is a
    /// precondition, so a pod that was already replaced under the same name is left alone.
    pub async fn delete_pod(&self, worker: &WorkerKey, grace: Duration) -> Result<(), PortError> {
        let pod = self.pod_of(worker).await?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            grace_period_seconds: Some(u32::try_from(grace.as_secs()).unwrap_or(u32::MAX)),
            preconditions: pod.metadata.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let api = self.api::<Pod>();
        timed(
            self.call("delete", "pods", &name),
            self.config.call_timeout,
            api.delete(&name, &params),
        )
        .await?;
        tracing::info!(pod = %name, namespace = %self.namespace, grace_s = grace.as_secs(), "deleted worker pod");
        Ok(())
    }

    /// Rolls the workload that owns the worker's pod (`kubectl rollout restart`).
    pub async fn rollout(&self, worker: &WorkerKey) -> Result<Workload, PortError> {
        let pod = self.pod_of(worker).await?;
        let workload = self.workload_of(&pod).await?.ok_or_else(|| {
            PortError::NotSupported(format!(
                "pod {:?} is owned by no Deployment or StatefulSet: nothing to roll",
                pod.metadata.name.as_deref().unwrap_or_default()
            ))
        })?;
        let at = Timestamp::from_second(Timestamp::now().as_second())
            .unwrap_or_else(|_| Timestamp::now())
            .to_string();
        let patch = Patch::Merge(workload::restart_patch(&at));
        let params = PatchParams::apply(FIELD_MANAGER);
        let name = workload.name.as_str();
        match workload.kind {
            WorkloadKind::Deployment => {
                let api = self.api::<Deployment>();
                timed(
                    self.call("patch", "deployments", name),
                    self.config.call_timeout,
                    api.patch(name, &params, &patch),
                )
                .await?;
            }
            WorkloadKind::StatefulSet => {
                let api = self.api::<StatefulSet>();
                timed(
                    self.call("patch", "statefulsets", name),
                    self.config.call_timeout,
                    api.patch(name, &params, &patch),
                )
                .await?;
            }
        }
        tracing::info!(workload = %workload, namespace = %self.namespace, "rollout restart");
        Ok(workload)
    }

    /// Sets a workload's replicas through its scale subresource.
    pub async fn scale_workload(
        &self,
        workload: &Workload,
        replicas: u32,
    ) -> Result<(), PortError> {
        let patch = Patch::Merge(workload::scale_patch(replicas));
        let params = PatchParams::apply(FIELD_MANAGER);
        let name = workload.name.as_str();
        match workload.kind {
            WorkloadKind::Deployment => {
                let api = self.api::<Deployment>();
                timed(
                    self.call("patch", "deployments/scale", name),
                    self.config.call_timeout,
                    api.patch_scale(name, &params, &patch),
                )
                .await?;
            }
            WorkloadKind::StatefulSet => {
                let api = self.api::<StatefulSet>();
                timed(
                    self.call("patch", "statefulsets/scale", name),
                    self.config.call_timeout,
                    api.patch_scale(name, &params, &patch),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Follows the worker pods (those the selector picks) as they change; the caller maps
    /// pods to workers with [`KubernetesRuntime::worker_pod`] and reads why a container
    /// ended with [`KubernetesRuntime::termination_of`].
    pub fn watch_pods(&self) -> crate::watch::PodChanges {
        crate::watch::changes(
            self.api::<Pod>(),
            &self.config.selector,
            self.namespace.clone(),
        )
    }

    /// Whether `pod` runs the worker `id` under the configured mapping.
    pub fn worker_pod(&self, id: &str, pod: &Pod) -> bool {
        mapping::matches(&self.config.mapping, id, pod)
    }

    /// How the worker's container in `pod` last ended, if it did.
    pub fn termination_of(&self, pod: &Pod) -> Option<Termination> {
        termination::last_termination(pod, &self.container_of(pod))
    }

    /// The worker's log lines (raw), from its pod's container. The opening call has the call
    /// timeout; a followed stream then stays open until the container or connection ends.
    pub async fn logs(&self, worker: &WorkerKey, opts: &LogOptions) -> Result<PodLogs, PortError> {
        let pod = self.pod_of(worker).await?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let container = self.container_of(&pod);
        let api = self.api::<Pod>();
        let params = logs::params(&container, opts);
        let reader = timed(
            self.call("get", "pods/log", &name),
            self.config.call_timeout,
            api.log_stream(&name, &params),
        )
        .await?;
        let lines = logs::lines(reader, format!("{name}/{container}"));
        Ok(PodLogs {
            pod: name,
            container,
            lines,
        })
    }
}

impl Runtime for KubernetesRuntime {
    fn name(&self) -> &'static str {
        DEPENDENCY
    }

    fn manages<'a>(&'a self, worker: &'a WorkerKey) -> BoxFuture<'a, Result<bool, PortError>> {
        Box::pin(async move { Ok(self.find_pod(worker).await?.is_some()) })
    }

    fn default_grace(&self) -> Duration {
        self.config.grace
    }

    fn restart<'a>(
        &'a self,
        worker: &'a WorkerKey,
        mode: RestartMode,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            match mode {
                RestartMode::Instance => self.delete_pod(worker, grace).await,
                RestartMode::Rollout => self.rollout(worker).await.map(drop),
            }
        })
    }

    fn scale<'a>(&'a self, group: &'a str, replicas: u32) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            let workload = Workload::parse_group(group)?;
            self.scale_workload(&workload, replicas).await
        })
    }

    fn find<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<WorkerKey>, PortError>> {
        Box::pin(async move {
            let pods = KubernetesRuntime::find(self, id).await?;
            // A pod runs a Celery worker of the default scope; the id is what was asked.
            Ok(if pods.is_empty() {
                Vec::new()
            } else {
                vec![WorkerKey::new(Backend::Celery, "default", id)]
            })
        })
    }

    /// Pods are stopped by scaling their workload: a pod deleted by hand comes back.
    fn stop<'a>(
        &'a self,
        _worker: &'a WorkerKey,
        _grace: Duration,
    ) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async {
            Err(PortError::NotSupported(
                "stopping one pod (its workload would replace it): scale the group".into(),
            ))
        })
    }

    fn start<'a>(&'a self, _worker: &'a WorkerKey) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async {
            Err(PortError::NotSupported(
                "starting one pod: scale the group".into(),
            ))
        })
    }

    fn instance<'a>(
        &'a self,
        worker: &'a WorkerKey,
    ) -> BoxFuture<'a, Result<InstanceInfo, PortError>> {
        Box::pin(async move {
            let pod = KubernetesRuntime::instance(self, worker).await?;
            let last_exit = pod.last_termination.as_ref().map(|t| ExitRecord {
                status: match t.signal {
                    Some(signal) => ExitStatus::Signal(signal),
                    None => ExitStatus::Code(t.exit_code),
                },
                at: t.finished_at.unwrap_or(SystemTime::UNIX_EPOCH),
                requested: false,
                reason: t.reason.clone(),
            });
            Ok(InstanceInfo {
                group: pod
                    .workload
                    .as_ref()
                    .map(Workload::group)
                    .unwrap_or_default(),
                source: pod.source(),
                running: pod.running,
                held_stopped: false,
                pid: None,
                started_at: pod.started_at,
                restarts: u32::try_from(pod.restart_count).unwrap_or(0),
                last_exit,
                cpu_percent: None,
                rss_bytes: None,
            })
        })
    }

    /// The container's current log, at most [`READ_BACK_LINES`] of its last lines, numbered
    /// from the first line read (segment: the container's restart count).
    fn read_log<'a>(
        &'a self,
        worker: &'a WorkerKey,
        after: Option<LogPosition>,
        max_lines: usize,
    ) -> BoxFuture<'a, Result<LogPage, PortError>> {
        Box::pin(async move {
            let pod = KubernetesRuntime::instance(self, worker).await?;
            let segment = u64::try_from(pod.restart_count).unwrap_or(0);
            let mut logs = self
                .logs(
                    worker,
                    &LogOptions {
                        tail_lines: Some(READ_BACK_LINES),
                        ..LogOptions::default()
                    },
                )
                .await?;
            let source = logs.source();
            let skip = match after {
                Some(p) if p.segment == segment => p.offset,
                _ => 0,
            };
            let mut page = LogPage {
                next: after.unwrap_or_default(),
                ..LogPage::default()
            };
            let mut offset = 0u64;
            while let Some(line) = logs.lines.next().await {
                let text = line?;
                offset += 1;
                if offset <= skip {
                    continue;
                }
                if page.lines.len() >= max_lines {
                    break;
                }
                let position = LogPosition { segment, offset };
                page.next = position;
                page.lines.push(RawLogLine {
                    position,
                    time: SystemTime::now(),
                    source: source.clone(),
                    text,
                    truncated: false,
                });
            }
            Ok(page)
        })
    }

    /// New lines from now on (`follow=true`, no tail). Their positions are above any read
    /// back (offsets from 2^32), so a reader that reads back after subscribing repeats none
    /// of them; a line written in between may be seen twice.
    fn follow_log<'a>(
        &'a self,
        worker: &'a WorkerKey,
    ) -> BoxFuture<'a, Result<Box<dyn LogFeed>, PortError>> {
        Box::pin(async move {
            let pod = KubernetesRuntime::instance(self, worker).await?;
            let logs = self
                .logs(
                    worker,
                    &LogOptions {
                        follow: true,
                        tail_lines: Some(0),
                        ..LogOptions::default()
                    },
                )
                .await?;
            Ok(Box::new(PodFeed {
                source: logs.source(),
                segment: u64::try_from(pod.restart_count).unwrap_or(0),
                offset: FOLLOW_OFFSET,
                lines: logs.lines,
                ended: false,
            }) as Box<dyn LogFeed>)
        })
    }
}

/// Lines read back per call, at most (the API reads a log from its end only).
pub const READ_BACK_LINES: u32 = 10_000;
/// Where followed lines are numbered from (above any line read back).
const FOLLOW_OFFSET: u64 = 1 << 32;

/// A followed pod log as the port's feed: lines, then the instance's end when the stream
/// closes (the container stopped or the connection broke).
struct PodFeed {
    source: String,
    segment: u64,
    offset: u64,
    lines: logs::LogStream,
    ended: bool,
}

impl LogFeed for PodFeed {
    fn next(&mut self) -> BoxFuture<'_, Option<LogEvent>> {
        Box::pin(async move {
            if self.ended {
                return None;
            }
            match self.lines.next().await {
                Some(Ok(text)) => {
                    self.offset += 1;
                    Some(LogEvent::Line(RawLogLine {
                        position: LogPosition {
                            segment: self.segment,
                            offset: self.offset,
                        },
                        time: SystemTime::now(),
                        source: self.source.clone(),
                        text,
                        truncated: false,
                    }))
                }
                Some(Err(_)) | None => {
                    self.ended = true;
                    None
                }
            }
        })
    }
}
