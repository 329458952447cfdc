//! `warden.v1.Control`: acting on workers. Every call is authorised here (so that refusals are
//! audited with the request) and every mutating call, allowed or denied, is audited.
//! ForgetWorkers is built; the other verbs answer UNIMPLEMENTED naming the capability that
//! brings them, after the same role check and audit.
use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{
    ApiError,
    auth::{self, Caller},
    convert,
    worker_health::resolve_error,
};
use crate::{
    config::Role,
    fleet::{self, FleetHandle, Lifecycle, SelectError, Selector, state::ForgetError},
    proto::v1::{self as pb, control_server::Control},
};

/// `max_targets` when the request leaves it at 0, and its ceiling.
const DEFAULT_MAX_TARGETS: usize = 1000;
const MAX_MAX_TARGETS: usize = 10_000;
const MAX_REASON_BYTES: usize = 1024;
const MAX_REQUEST_ID_BYTES: usize = 128;

#[derive(Clone)]
pub struct ControlService {
    fleet: FleetHandle,
    /// The Streams verbs' handle (see `streams_control`); `None` when Streams are off.
    pub(super) streams: Option<warden_streams::control::StreamsControl>,
}

impl ControlService {
    pub fn new(fleet: FleetHandle) -> Self {
        Self {
            fleet,
            streams: None,
        }
    }
}

/// What the audit trail records of a request.
pub trait Audited {
    fn reason(&self) -> &str {
        ""
    }
    fn targets(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Worker verbs: their targets are the selector's names (or its filter, resolved later).
macro_rules! audited_by_selector {
    ($($request:ty),*) => {$(
        impl Audited for $request {
            fn reason(&self) -> &str { &self.reason }
            fn targets(&self) -> Vec<String> {
                self.selector.as_ref().map(selector_targets).unwrap_or_default()
            }
        }
    )*};
}

/// Other mutating requests: a reason, and a name or group as their target.
macro_rules! audited_by_name {
    ($($request:ty => $field:ident),*) => {$(
        impl Audited for $request {
            fn reason(&self) -> &str { &self.reason }
            fn targets(&self) -> Vec<String> { vec![self.$field.to_string()] }
        }
    )*};
}

/// Reads: nothing to record but the call.
macro_rules! audited_read {
    ($($request:ty),*) => {$( impl Audited for $request {} )*};
}

audited_by_selector!(
    pb::RestartWorkersRequest,
    pb::DrainWorkersRequest,
    pb::ShutdownWorkersRequest,
    pb::PauseConsumingRequest,
    pb::ResumeConsumingRequest,
    pb::SetPoolSizeRequest,
    pb::SetRateLimitRequest,
    pb::SetTimeLimitRequest,
    pb::RevokeTasksRequest,
    pb::CordonWorkersRequest,
    pb::UncordonWorkersRequest,
    pb::ForgetWorkersRequest
);
audited_by_name!(
    pb::LaunchWorkersRequest => group,
    pb::ScaleGroupRequest => group,
    pb::CancelOperationRequest => name,
    pb::AcknowledgeAlertRequest => name,
    pb::UnacknowledgeAlertRequest => name,
    pb::ExpireSilenceRequest => name
);
audited_read!(
    pb::GetOperationRequest,
    pb::ListOperationsRequest,
    pb::WatchOperationRequest,
    pb::ListAuditRequest,
    pb::GetRecoveryPolicyRequest
);

impl Audited for pb::UpdateRecoveryPolicyRequest {
    fn reason(&self) -> &str {
        &self.reason
    }
}

impl Audited for pb::CreateSilenceRequest {
    fn reason(&self) -> &str {
        &self.reason
    }
}

fn selector_targets(s: &pb::Selector) -> Vec<String> {
    if !s.workers.is_empty() {
        s.workers.clone()
    } else if !s.groups.is_empty() {
        s.groups.iter().map(|g| format!("group:{g}")).collect()
    } else {
        vec!["filter".to_string()]
    }
}

/// Authenticated caller with at least `minimum`, or the refusal, audited.
pub fn authorize<T: Audited>(
    request: &Request<T>,
    action: &str,
    minimum: Role,
) -> Result<Caller, Status> {
    let caller = auth::caller(request)?;
    if let Err(status) = auth::check_role(&caller, minimum) {
        let req = request.get_ref();
        auth::audit(
            Some(&caller),
            action,
            &req.targets(),
            req.reason(),
            false,
            status.message(),
        );
        return Err(status);
    }
    Ok(caller)
}

/// The answer of a contract RPC that a later capability builds: authorised and audited
/// like the real thing, then UNIMPLEMENTED naming the capability.
pub fn not_yet<T: Audited, R>(
    request: &Request<T>,
    action: &str,
    minimum: Role,
    capability: &'static str,
) -> Result<R, Status> {
    let caller = authorize(request, action, minimum)?;
    let req = request.get_ref();
    auth::audit(
        Some(&caller),
        action,
        &req.targets(),
        req.reason(),
        true,
        "unimplemented",
    );
    Err(ApiError::unimplemented(capability).into())
}

const RUNTIMES: &str = "runtimes (Kubernetes, local processes)";
const CONTROL_ACTIONS: &str = "control actions";
const RECOVERY: &str = "auto-recovery";
const HISTORY_STORE: &str = "history store";

type OperationStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchOperationResponse, Status>> + Send>>;

/// The `Control` impl: the methods that only check, audit and answer UNIMPLEMENTED, plus
/// the built ones given as `$built` (async-trait must see every method in one impl).
macro_rules! control_impl {
    (built { $($built:tt)* } $($method:ident($request:ty) -> $response:ty, $action:literal, $role:expr, $capability:expr;)*) => {
        #[tonic::async_trait]
        impl Control for ControlService {
            $(
            async fn $method(&self, request: Request<$request>) -> Result<Response<$response>, Status> {
                not_yet(&request, $action, $role, $capability)
            }
            )*
            $($built)*
        }
    };
}

control_impl! {
    built {
        type WatchOperationStream = OperationStream;

        async fn watch_operation(
            &self,
            request: Request<pb::WatchOperationRequest>,
        ) -> Result<Response<OperationStream>, Status> {
            not_yet(&request, "WatchOperation", Role::Viewer, RUNTIMES)
        }

        async fn forget_workers(
            &self,
            request: Request<pb::ForgetWorkersRequest>,
        ) -> Result<Response<pb::ForgetWorkersResponse>, Status> {
            self.handle_forget(request).await
        }

        async fn reclaim_pending(&self, request: Request<pb::ReclaimPendingRequest>) -> Result<Response<pb::ReclaimPendingResponse>, Status> {
            self.handle_reclaim_pending(request).await
        }

        async fn discard_pending(&self, request: Request<pb::DiscardPendingRequest>) -> Result<Response<pb::DiscardPendingResponse>, Status> {
            self.handle_discard_pending(request).await
        }

        async fn run_janitor(&self, request: Request<pb::RunJanitorRequest>) -> Result<Response<pb::RunJanitorResponse>, Status> {
            self.handle_run_janitor(request).await
        }
    }
    restart_workers(pb::RestartWorkersRequest) -> pb::RestartWorkersResponse, "RestartWorkers", Role::Operator, RUNTIMES;
    drain_workers(pb::DrainWorkersRequest) -> pb::DrainWorkersResponse, "DrainWorkers", Role::Operator, RUNTIMES;
    shutdown_workers(pb::ShutdownWorkersRequest) -> pb::ShutdownWorkersResponse, "ShutdownWorkers", Role::Operator, CONTROL_ACTIONS;
    pause_consuming(pb::PauseConsumingRequest) -> pb::PauseConsumingResponse, "PauseConsuming", Role::Operator, CONTROL_ACTIONS;
    resume_consuming(pb::ResumeConsumingRequest) -> pb::ResumeConsumingResponse, "ResumeConsuming", Role::Operator, CONTROL_ACTIONS;
    set_pool_size(pb::SetPoolSizeRequest) -> pb::SetPoolSizeResponse, "SetPoolSize", Role::Operator, CONTROL_ACTIONS;
    set_rate_limit(pb::SetRateLimitRequest) -> pb::SetRateLimitResponse, "SetRateLimit", Role::Operator, CONTROL_ACTIONS;
    set_time_limit(pb::SetTimeLimitRequest) -> pb::SetTimeLimitResponse, "SetTimeLimit", Role::Operator, CONTROL_ACTIONS;
    revoke_tasks(pb::RevokeTasksRequest) -> pb::RevokeTasksResponse, "RevokeTasks", Role::Operator, CONTROL_ACTIONS;
    cordon_workers(pb::CordonWorkersRequest) -> pb::CordonWorkersResponse, "CordonWorkers", Role::Operator, CONTROL_ACTIONS;
    uncordon_workers(pb::UncordonWorkersRequest) -> pb::UncordonWorkersResponse, "UncordonWorkers", Role::Operator, CONTROL_ACTIONS;
    launch_workers(pb::LaunchWorkersRequest) -> pb::LaunchWorkersResponse, "LaunchWorkers", Role::Operator, RUNTIMES;
    scale_group(pb::ScaleGroupRequest) -> pb::ScaleGroupResponse, "ScaleGroup", Role::Operator, RUNTIMES;
    get_operation(pb::GetOperationRequest) -> pb::GetOperationResponse, "GetOperation", Role::Viewer, RUNTIMES;
    list_operations(pb::ListOperationsRequest) -> pb::ListOperationsResponse, "ListOperations", Role::Viewer, RUNTIMES;
    cancel_operation(pb::CancelOperationRequest) -> pb::CancelOperationResponse, "CancelOperation", Role::Operator, RUNTIMES;
    list_audit(pb::ListAuditRequest) -> pb::ListAuditResponse, "ListAudit", Role::Operator, HISTORY_STORE;
    get_recovery_policy(pb::GetRecoveryPolicyRequest) -> pb::GetRecoveryPolicyResponse, "GetRecoveryPolicy", Role::Viewer, RECOVERY;
    update_recovery_policy(pb::UpdateRecoveryPolicyRequest) -> pb::UpdateRecoveryPolicyResponse, "UpdateRecoveryPolicy", Role::Admin, RECOVERY;

}

impl ControlService {
    async fn handle_forget(
        &self,
        request: Request<pb::ForgetWorkersRequest>,
    ) -> Result<Response<pb::ForgetWorkersResponse>, Status> {
        let caller = authorize(&request, "ForgetWorkers", Role::Admin)?;
        let req = request.into_inner();
        let result = self.forget(&req).await;
        let (targets, outcome) = match &result {
            Ok((outcomes, _)) => (
                outcomes.iter().map(|o| o.worker.clone()).collect(),
                "ok".to_string(),
            ),
            Err(err) => (req.targets(), err.to_string()),
        };
        let audit_id = auth::audit(
            Some(&caller),
            "ForgetWorkers",
            &targets,
            &req.reason,
            true,
            &outcome,
        );
        let (outcomes, revision) = result?;
        Ok(Response::new(pb::ForgetWorkersResponse {
            audit_id,
            dry_run: req.dry_run,
            outcomes,
            revision,
        }))
    }
}

/// Checks the fields every mutating worker request shares; returns the target cap.
fn common_fields(reason: &str, request_id: &str, max_targets: u32) -> Result<usize, ApiError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::invalid(
            "reason",
            format!("longer than {MAX_REASON_BYTES} bytes"),
        ));
    }
    if request_id.len() > MAX_REQUEST_ID_BYTES {
        return Err(ApiError::invalid(
            "request_id",
            format!("longer than {MAX_REQUEST_ID_BYTES} bytes"),
        ));
    }
    Ok(match max_targets {
        0 => DEFAULT_MAX_TARGETS,
        n => (n as usize).min(MAX_MAX_TARGETS),
    })
}

/// A request's selector in domain terms: exactly one of workers, filter, groups.
fn selector(s: Option<&pb::Selector>) -> Result<Selector, ApiError> {
    let s = s.ok_or_else(|| ApiError::invalid("selector", "required"))?;
    match (
        !s.workers.is_empty(),
        s.filter.is_some(),
        !s.groups.is_empty(),
    ) {
        (true, false, false) => Ok(Selector::Workers(s.workers.clone())),
        (false, true, false) => Ok(Selector::Filter(Box::new(convert::worker_filter(
            s.filter.as_ref(),
            "selector.filter",
        )?))),
        (false, false, true) => Ok(Selector::Groups(
            s.groups
                .iter()
                .map(|g| convert::group_id("selector.groups", g))
                .collect::<Result<_, _>>()?,
        )),
        _ => Err(ApiError::invalid(
            "selector",
            "set exactly one of selector.workers, selector.filter and selector.groups",
        )),
    }
}

fn select_error(err: SelectError) -> ApiError {
    match err {
        SelectError::Resolve(e) => resolve_error("selector.workers", e),
        SelectError::GroupNotFound(group) => ApiError::NotFound {
            resource_type: "warden.v1.Group",
            message: format!("no group named {group:?}"),
            name: group,
        },
        SelectError::TooMany { matched, max } => ApiError::FailedPrecondition {
            reason: "TOO_MANY_TARGETS",
            subject: "selector".into(),
            message: format!(
                "the selector matches {matched} workers, more than max_targets ({max}); narrow it or raise max_targets"
            ),
        },
    }
}

impl ControlService {
    /// Resolves the selector, checks every worker may be forgotten, then forgets them.
    /// Returns the outcomes and the revision they leave the fleet at.
    async fn forget(
        &self,
        req: &pb::ForgetWorkersRequest,
    ) -> Result<(Vec<pb::TargetOutcome>, u64), ApiError> {
        let max = common_fields(&req.reason, &req.request_id, req.max_targets)?;
        let selector = selector(req.selector.as_ref())?;
        let snapshot = self.fleet.snapshot();
        if let Some(expected) = req.expected_revision
            && expected != snapshot.revision
            && selection_changed(&snapshot, &selector, expected)?
        {
            return Err(ApiError::FailedPrecondition {
                reason: "REVISION_CHANGED",
                subject: "expected_revision".into(),
                message: format!(
                    "the selected workers changed since revision {expected} (now {})",
                    snapshot.revision
                ),
            });
        }
        let targets = snapshot.select(&selector, max).map_err(select_error)?;
        if let Some(alive) = targets.iter().find(|w| w.lifecycle == Lifecycle::Alive) {
            let alive_count = targets
                .iter()
                .filter(|w| w.lifecycle == Lifecycle::Alive)
                .count();
            return Err(ApiError::FailedPrecondition {
                reason: "WORKER_ALIVE",
                subject: alive.key.resource_name(),
                message: format!(
                    "{} (and {} more) is ALIVE; only OFFLINE or LOST workers can be forgotten",
                    alive.key.resource_name(),
                    alive_count - 1
                ),
            });
        }
        let mut outcomes = Vec::with_capacity(targets.len());
        for worker in &targets {
            let (code, message) = if req.dry_run {
                (pb::OutcomeCode::WouldApply, "would be forgotten")
            } else {
                match self.fleet.forget(&worker.key).await {
                    Err(_) => {
                        return Err(ApiError::Unavailable {
                            dependency: "fleet",
                            reason: "shutting down".into(),
                        });
                    }
                    Ok(Ok(_)) => (pb::OutcomeCode::Applied, "forgotten"),
                    Ok(Err(ForgetError::NotFound)) => {
                        (pb::OutcomeCode::Skipped, "already forgotten")
                    }
                    Ok(Err(ForgetError::Alive)) => (pb::OutcomeCode::Failed, "came back to life"),
                }
            };
            outcomes.push(pb::TargetOutcome {
                worker: worker.key.resource_name(),
                code: code.into(),
                message: message.to_string(),
            });
        }
        let revision = if req.dry_run {
            snapshot.revision
        } else {
            self.fleet.barrier().await.unwrap_or(snapshot.revision)
        };
        Ok((outcomes, revision))
    }
}

/// Whether the workers a selector picks changed since `revision`: one was added, removed, or
/// changed lifecycle, group or labels. A worker's state at `revision` is its last recorded
/// change at or before it; where that is not kept, the answer is a conservative "changed".
/// REVISION_UNAVAILABLE when the changes since `revision` are no longer kept.
fn selection_changed(
    snapshot: &fleet::Snapshot,
    selector: &Selector,
    revision: u64,
) -> Result<bool, ApiError> {
    let changes = snapshot
        .changes_since(revision)
        .ok_or_else(|| ApiError::FailedPrecondition {
            reason: "REVISION_UNAVAILABLE",
            subject: "expected_revision".into(),
            message: format!(
                "revision {revision} is too old (or not from this process) to compare with"
            ),
        })?;
    let named = |key: &fleet::WorkerKey| match selector {
        Selector::Workers(names) => names
            .iter()
            .any(|n| *n == key.resource_name() || *n == *key.id),
        _ => false,
    };
    let selected = |w: &fleet::Worker| match selector {
        Selector::Workers(_) => named(&w.key),
        Selector::Filter(filter) => filter.matches(w),
        Selector::Groups(groups) => groups.iter().any(|g| *g == *w.group),
    };
    let traits = |w: &fleet::Worker| (w.lifecycle, w.group.clone(), w.labels.clone());
    let state_at = |key: &fleet::WorkerKey| {
        snapshot
            .recent
            .iter()
            .rev()
            .filter(|c| c.revision <= revision)
            .find_map(|c| match &c.kind {
                fleet::ChangeKind::WorkerAdded(w) | fleet::ChangeKind::WorkerUpdated(w)
                    if w.key == *key =>
                {
                    Some(Some(traits(w)))
                }
                fleet::ChangeKind::WorkerRemoved(k) if k == key => Some(None),
                _ => None,
            })
    };
    for change in &changes {
        let key = match &change.kind {
            fleet::ChangeKind::WorkerAdded(w) | fleet::ChangeKind::WorkerUpdated(w) => {
                let now_selected = snapshot.workers.get(&w.key).is_some_and(|n| selected(n));
                if !selected(w) && !now_selected {
                    continue;
                }
                &w.key
            }
            fleet::ChangeKind::WorkerRemoved(key) => {
                if matches!(selector, Selector::Workers(_)) && !named(key) {
                    continue;
                }
                key
            }
            fleet::ChangeKind::QueueUpdated(_) => continue,
        };
        let now = snapshot.workers.get(key).map(|w| traits(w));
        match state_at(key) {
            Some(before) if before == now => {}
            _ => return Ok(true),
        }
    }
    Ok(false)
}
