//! `warden.v1.Control`: acting on workers. Every call is authorised here (so that refusals are
//! audited with the request) and every mutating call, allowed, denied, dry run or failed, is
//! recorded in the audit trail (the history store's append-only table, or a bounded log in
//! memory without one). Synchronous verbs answer per-target outcomes; long ones return an
//! operation that carries on in the background (`crate::control`). The recovery policy is
//! auto-recovery's settings (`recovery.rs`).
pub(super) mod actions;
mod audit;
pub(super) mod convert;
mod recovery;
mod requests;

use std::{pin::Pin, sync::Arc};

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use warden_core::{audit::AuditLog, idempotency::Idempotency};

use super::{
    ApiError,
    auth::{self, Caller},
    convert as api_convert,
    worker_health::resolve_error,
};
use crate::{
    config::Role,
    control::{ControlError, Controller},
    fleet::{self, FleetHandle, Lifecycle, SelectError, Selector, state::ForgetError},
    proto::v1::{self as pb, control_server::Control},
};

pub use audit::trace_id;

/// `max_targets` when the request leaves it at 0, and its ceiling.
const DEFAULT_MAX_TARGETS: usize = 1000;
const MAX_MAX_TARGETS: usize = 10_000;
const MAX_REASON_BYTES: usize = 1024;
const MAX_REQUEST_ID_BYTES: usize = 128;

#[derive(Clone)]
pub struct ControlService {
    fleet: FleetHandle,
    controller: Controller,
    audit: Arc<dyn AuditLog>,
    keys: Idempotency,
    /// The Streams verbs' handle (see `streams_control`); `None` when Streams are off.
    pub(super) streams: Option<warden_streams::control::StreamsControl>,
    /// Auto-recovery's policy (GetRecoveryPolicy, UpdateRecoveryPolicy).
    pub(super) recovery: Option<crate::recovery::SharedPolicy>,
    /// The health engine's interval: `critical_for` is CRITICAL checks in a row times it.
    pub(super) health_interval: std::time::Duration,
}

impl ControlService {
    /// Serves auto-recovery's policy; `health_interval` is the health engine's interval
    /// (`critical_for` is expressed in it).
    pub fn with_recovery(
        mut self,
        policy: crate::recovery::SharedPolicy,
        health_interval: std::time::Duration,
    ) -> Self {
        self.recovery = Some(policy);
        self.health_interval = health_interval;
        self
    }

    pub fn new(fleet: FleetHandle, controller: Controller, audit: Arc<dyn AuditLog>) -> Self {
        let keys = Idempotency::new(fleet.clock().clone());
        Self {
            fleet,
            controller,
            audit,
            keys,
            streams: None,
            recovery: None,
            health_interval: std::time::Duration::from_secs(30),
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
    fn dry_run(&self) -> bool {
        false
    }
    fn request_id(&self) -> &str {
        ""
    }
}

/// The fields every request that acts on selected workers shares.
pub trait SelectorRequest: Audited + prost::Message + Default + Clone + Send + 'static {
    fn selector(&self) -> Option<&pb::Selector>;
    fn expected_revision(&self) -> Option<u64>;
    fn max_targets(&self) -> u32;
}

/// Worker verbs: their targets are the selector's names (or its filter, resolved later).
macro_rules! audited_by_selector {
    ($($request:ty),*) => {$(
        impl Audited for $request {
            fn reason(&self) -> &str { &self.reason }
            fn targets(&self) -> Vec<String> {
                self.selector.as_ref().map(selector_targets).unwrap_or_default()
            }
            fn dry_run(&self) -> bool { self.dry_run }
            fn request_id(&self) -> &str { &self.request_id }
        }
        impl SelectorRequest for $request {
            fn selector(&self) -> Option<&pb::Selector> { self.selector.as_ref() }
            fn expected_revision(&self) -> Option<u64> { self.expected_revision }
            fn max_targets(&self) -> u32 { self.max_targets }
        }
    )*};
}

/// Other mutating requests of Control: a reason, a name or group as their target, a dry run
/// flag and an idempotency key.
macro_rules! audited_by_name_keyed {
    ($($request:ty => $field:ident),*) => {$(
        impl Audited for $request {
            fn reason(&self) -> &str { &self.reason }
            fn targets(&self) -> Vec<String> { vec![self.$field.to_string()] }
            fn dry_run(&self) -> bool { self.dry_run }
            fn request_id(&self) -> &str { &self.request_id }
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
audited_by_name_keyed!(
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
    fn targets(&self) -> Vec<String> {
        vec!["recoveryPolicy".to_string()]
    }
    fn dry_run(&self) -> bool {
        self.dry_run
    }
    fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl Audited for pb::CreateSilenceRequest {
    fn reason(&self) -> &str {
        &self.reason
    }
    fn dry_run(&self) -> bool {
        self.dry_run
    }
    fn request_id(&self) -> &str {
        &self.request_id
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

/// Authenticated caller with at least `minimum`, or the refusal, logged (the Alerts service's
/// check; Control's own calls go through [`ControlService::authorize`], which also records
/// the refusal in the audit trail).
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

pub(super) const RECOVERY: &str = "auto-recovery";

type OperationStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchOperationResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    type WatchOperationStream = OperationStream;

    async fn restart_workers(
        &self,
        request: Request<pb::RestartWorkersRequest>,
    ) -> Result<Response<pb::RestartWorkersResponse>, Status> {
        self.restart(request).await
    }

    async fn reclaim_pending(
        &self,
        request: Request<pb::ReclaimPendingRequest>,
    ) -> Result<Response<pb::ReclaimPendingResponse>, Status> {
        self.handle_reclaim_pending(request).await
    }

    async fn discard_pending(
        &self,
        request: Request<pb::DiscardPendingRequest>,
    ) -> Result<Response<pb::DiscardPendingResponse>, Status> {
        self.handle_discard_pending(request).await
    }

    async fn run_janitor(
        &self,
        request: Request<pb::RunJanitorRequest>,
    ) -> Result<Response<pb::RunJanitorResponse>, Status> {
        self.handle_run_janitor(request).await
    }

    async fn drain_workers(
        &self,
        request: Request<pb::DrainWorkersRequest>,
    ) -> Result<Response<pb::DrainWorkersResponse>, Status> {
        self.drain(request).await
    }

    async fn shutdown_workers(
        &self,
        request: Request<pb::ShutdownWorkersRequest>,
    ) -> Result<Response<pb::ShutdownWorkersResponse>, Status> {
        self.shutdown(request).await
    }

    async fn pause_consuming(
        &self,
        request: Request<pb::PauseConsumingRequest>,
    ) -> Result<Response<pb::PauseConsumingResponse>, Status> {
        self.sync_verb(request, "PauseConsuming", requests::pause, |d| {
            pb::PauseConsumingResponse {
                audit_id: d.audit_id,
                dry_run: d.dry_run,
                outcomes: d.outcomes,
                revision: d.revision,
            }
        })
        .await
    }

    async fn resume_consuming(
        &self,
        request: Request<pb::ResumeConsumingRequest>,
    ) -> Result<Response<pb::ResumeConsumingResponse>, Status> {
        self.sync_verb(request, "ResumeConsuming", requests::resume, |d| {
            pb::ResumeConsumingResponse {
                audit_id: d.audit_id,
                dry_run: d.dry_run,
                outcomes: d.outcomes,
                revision: d.revision,
            }
        })
        .await
    }

    async fn set_pool_size(
        &self,
        request: Request<pb::SetPoolSizeRequest>,
    ) -> Result<Response<pb::SetPoolSizeResponse>, Status> {
        self.sync_verb(request, "SetPoolSize", requests::pool_size, |d| {
            pb::SetPoolSizeResponse {
                audit_id: d.audit_id,
                dry_run: d.dry_run,
                outcomes: d.outcomes,
                revision: d.revision,
            }
        })
        .await
    }

    async fn set_rate_limit(
        &self,
        request: Request<pb::SetRateLimitRequest>,
    ) -> Result<Response<pb::SetRateLimitResponse>, Status> {
        self.sync_verb(request, "SetRateLimit", requests::rate_limit, |d| {
            pb::SetRateLimitResponse {
                audit_id: d.audit_id,
                dry_run: d.dry_run,
                outcomes: d.outcomes,
                revision: d.revision,
            }
        })
        .await
    }

    async fn set_time_limit(
        &self,
        request: Request<pb::SetTimeLimitRequest>,
    ) -> Result<Response<pb::SetTimeLimitResponse>, Status> {
        self.sync_verb(request, "SetTimeLimit", requests::time_limit, |d| {
            pb::SetTimeLimitResponse {
                audit_id: d.audit_id,
                dry_run: d.dry_run,
                outcomes: d.outcomes,
                revision: d.revision,
            }
        })
        .await
    }

    async fn revoke_tasks(
        &self,
        request: Request<pb::RevokeTasksRequest>,
    ) -> Result<Response<pb::RevokeTasksResponse>, Status> {
        self.sync_verb(request, "RevokeTasks", requests::revoke, |d| {
            pb::RevokeTasksResponse {
                audit_id: d.audit_id,
                dry_run: d.dry_run,
                outcomes: d.outcomes,
                revision: d.revision,
            }
        })
        .await
    }

    async fn cordon_workers(
        &self,
        request: Request<pb::CordonWorkersRequest>,
    ) -> Result<Response<pb::CordonWorkersResponse>, Status> {
        self.sync_verb(request, "CordonWorkers", requests::cordon, |d| {
            pb::CordonWorkersResponse {
                audit_id: d.audit_id,
                dry_run: d.dry_run,
                outcomes: d.outcomes,
                revision: d.revision,
            }
        })
        .await
    }

    async fn uncordon_workers(
        &self,
        request: Request<pb::UncordonWorkersRequest>,
    ) -> Result<Response<pb::UncordonWorkersResponse>, Status> {
        self.sync_verb(request, "UncordonWorkers", requests::uncordon, |d| {
            pb::UncordonWorkersResponse {
                audit_id: d.audit_id,
                dry_run: d.dry_run,
                outcomes: d.outcomes,
                revision: d.revision,
            }
        })
        .await
    }

    async fn forget_workers(
        &self,
        request: Request<pb::ForgetWorkersRequest>,
    ) -> Result<Response<pb::ForgetWorkersResponse>, Status> {
        self.handle_forget(request).await
    }

    async fn launch_workers(
        &self,
        request: Request<pb::LaunchWorkersRequest>,
    ) -> Result<Response<pb::LaunchWorkersResponse>, Status> {
        self.launch(request).await
    }

    async fn scale_group(
        &self,
        request: Request<pb::ScaleGroupRequest>,
    ) -> Result<Response<pb::ScaleGroupResponse>, Status> {
        self.scale(request).await
    }

    async fn get_operation(
        &self,
        request: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::GetOperationResponse>, Status> {
        self.authorize(&request, "GetOperation", Role::Viewer, false)
            .await?;
        let op = self.operation(&request.get_ref().name)?;
        Ok(Response::new(pb::GetOperationResponse {
            operation: Some(convert::operation(&op)),
        }))
    }

    async fn list_operations(
        &self,
        request: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        self.authorize(&request, "ListOperations", Role::Viewer, false)
            .await?;
        Ok(Response::new(self.list_ops(request.get_ref())?))
    }

    async fn cancel_operation(
        &self,
        request: Request<pb::CancelOperationRequest>,
    ) -> Result<Response<pb::CancelOperationResponse>, Status> {
        self.cancel(request).await
    }

    async fn watch_operation(
        &self,
        request: Request<pb::WatchOperationRequest>,
    ) -> Result<Response<OperationStream>, Status> {
        self.authorize(&request, "WatchOperation", Role::Viewer, false)
            .await?;
        let name = &request.get_ref().name;
        self.operation(name)?;
        let mut rx = self
            .controller
            .operations
            .watch(name)
            .ok_or_else(|| Status::from(op_not_found(name)))?;
        let cancel = self.fleet.stopped().clone();
        let stream = async_stream::stream! {
            loop {
                let op = rx.borrow_and_update().clone();
                let done = op.state.is_done();
                yield Ok(pb::WatchOperationResponse { operation: Some(convert::operation(&op)) });
                if done {
                    break;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { break },
                    _ = cancel.cancelled() => {
                        yield Err(super::error::shutting_down());
                        break;
                    }
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.authorize(&request, "ListAudit", Role::Operator, false)
            .await?;
        Ok(Response::new(self.list_trail(request.get_ref()).await?))
    }

    async fn get_recovery_policy(
        &self,
        request: Request<pb::GetRecoveryPolicyRequest>,
    ) -> Result<Response<pb::GetRecoveryPolicyResponse>, Status> {
        self.get_policy(request).await
    }

    async fn update_recovery_policy(
        &self,
        request: Request<pb::UpdateRecoveryPolicyRequest>,
    ) -> Result<Response<pb::UpdateRecoveryPolicyResponse>, Status> {
        self.update_policy(request).await
    }
}

fn op_not_found(name: &str) -> ApiError {
    ApiError::NotFound {
        resource_type: "warden.v1.Operation",
        name: name.to_string(),
        message: format!("no operation named {name:?} (unknown, or ended more than 24 h ago)"),
    }
}

impl From<ControlError> for ApiError {
    fn from(err: ControlError) -> Self {
        let message = err.to_string();
        match err {
            ControlError::Locked { holder, .. } => ApiError::Aborted {
                reason: "TARGET_LOCKED",
                message,
                holder,
            },
            ControlError::NoRuntime(_) => ApiError::FailedPrecondition {
                reason: "NO_RUNTIME",
                subject: "runtime".into(),
                message,
            },
            ControlError::ShuttingDown => ApiError::Unavailable {
                dependency: "warden",
                reason: "shutting down".into(),
            },
        }
    }
}

/// Checks the fields every mutating worker request shares; returns the target cap.
pub(super) fn common_fields(
    reason: &str,
    request_id: &str,
    max_targets: u32,
) -> Result<usize, ApiError> {
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
        (false, true, false) => Ok(Selector::Filter(Box::new(api_convert::worker_filter(
            s.filter.as_ref(),
            "selector.filter",
        )?))),
        (false, false, true) => Ok(Selector::Groups(
            s.groups
                .iter()
                .map(|g| api_convert::group_id("selector.groups", g))
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
