//! The flow every mutating verb shares: authorise, check the request, replay an idempotent
//! repeat, resolve the selector, act, record, answer.
use prost::Message;
use tonic::{Request, Response, Status};
use warden_core::{
    idempotency::{Idempotency, Seen},
    operations::{OperationQuery, Outcome},
};

use super::{
    ControlService, SelectorRequest, audit::CallInfo, common_fields, convert, op_not_found,
    requests, select_error, selection_changed, selector,
};
use crate::{
    api::{
        ApiError,
        auth::Caller,
        paging::{self, Cursor},
    },
    config::Role,
    control::{LongAction, Origin, Resize, SyncAction, Target, TargetResult},
    proto::v1 as pb,
};

/// What a synchronous verb's response is made of.
pub struct Done {
    pub audit_id: String,
    pub dry_run: bool,
    pub outcomes: Vec<pb::TargetOutcome>,
    pub revision: u64,
}

/// A failure after authorisation: the status, and the targets it concerned.
pub(super) struct Failure {
    pub error: ApiError,
    pub targets: Vec<String>,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure {
            error,
            targets: Vec::new(),
        }
    }
}

pub(in crate::api) fn fingerprint<M: Message>(action: &str, req: &M) -> u64 {
    paging::fingerprint(&[action.as_bytes(), &req.encode_to_vec()])
}

/// Idempotency: `Ok(Some(answer))` replays the first call's answer; `Ok(None)` proceeds
/// (shared by Control and Alerts).
pub(in crate::api) fn begin_key<Resp: Message + Default>(
    keys: &Idempotency,
    caller: &Caller,
    request_id: &str,
    fp: u64,
) -> Result<Option<Resp>, ApiError> {
    if request_id.is_empty() {
        return Ok(None);
    }
    match keys.begin(&caller.name, request_id, fp) {
        Seen::New => Ok(None),
        Seen::Done(bytes) => {
            Resp::decode(&bytes[..])
                .map(Some)
                .map_err(|_| ApiError::Unavailable {
                    dependency: "warden",
                    reason: "a remembered answer could not be read".into(),
                })
        }
        Seen::InProgress => Err(ApiError::Aborted {
            reason: "REQUEST_IN_PROGRESS",
            holder: request_id.to_string(),
            message: format!("request {request_id:?} is still being handled; retry shortly"),
        }),
        Seen::Reused => Err(ApiError::AlreadyExists {
            reason: "REQUEST_ID_REUSED",
            message: format!(
                "request_id {request_id:?} was used for a different request; use a new id"
            ),
        }),
    }
}

impl ControlService {
    /// Idempotency: `Ok(Some(answer))` replays the first call's answer; `Ok(None)` proceeds.
    pub(super) fn begin_key<Resp: Message + Default>(
        &self,
        caller: &Caller,
        request_id: &str,
        fp: u64,
    ) -> Result<Option<Resp>, ApiError> {
        begin_key(&self.keys, caller, request_id, fp)
    }

    /// Checks the shared fields and resolves the selector into targets (with the revision).
    fn resolve<Req: SelectorRequest>(
        &self,
        req: &Req,
    ) -> Result<(Vec<Target>, u64, usize), Failure> {
        let max = common_fields(req.reason(), req.request_id(), req.max_targets())?;
        let selector = selector(req.selector())?;
        let snapshot = self.fleet.snapshot();
        if let Some(expected) = req.expected_revision()
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
            }
            .into());
        }
        let named = matches!(selector, fleet::Selector::Workers(_));
        let workers = snapshot.select(&selector, max).map_err(select_error)?;
        let targets = workers
            .into_iter()
            .map(|worker| Target { worker, named })
            .collect();
        Ok((targets, snapshot.revision, max))
    }

    /// Ends a call: records it, remembers an OK answer under its key, answers.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn conclude<Resp: Message>(
        &self,
        call: &CallInfo,
        caller: &Caller,
        fp: u64,
        result: Result<(Resp, Vec<String>, Vec<TargetResult>, String), Failure>,
    ) -> Result<Response<Resp>, Status> {
        match result {
            Ok((resp, targets, outcomes, operation)) => {
                self.record(
                    call,
                    Some(caller),
                    true,
                    targets,
                    None,
                    &outcomes,
                    &operation,
                )
                .await;
                if !call.request_id.is_empty() {
                    self.keys
                        .complete(&caller.name, &call.request_id, fp, resp.encode_to_vec());
                }
                Ok(Response::new(resp))
            }
            Err(Failure { error, targets }) => {
                if !call.request_id.is_empty() {
                    self.keys.abandon(&caller.name, &call.request_id);
                }
                let status = Status::from(error);
                let targets = if targets.is_empty() {
                    call.requested.clone()
                } else {
                    targets
                };
                self.record(call, Some(caller), true, targets, Some(&status), &[], "")
                    .await;
                Err(status)
            }
        }
    }

    pub(super) async fn sync_verb<Req, Resp>(
        &self,
        request: Request<Req>,
        action: &'static str,
        build: fn(&Req) -> Result<SyncAction, ApiError>,
        respond: impl FnOnce(Done) -> Resp + Send,
    ) -> Result<Response<Resp>, Status>
    where
        Req: SelectorRequest + Sync,
        Resp: Message + Default,
    {
        let call = self.call_info(&request, action);
        let caller = self
            .authorize(&request, action, Role::Operator, true)
            .await?;
        let req = request.into_inner();
        let fp = fingerprint(action, &req);
        match self.begin_key::<Resp>(&caller, &call.request_id, fp) {
            Ok(Some(replay)) => return Ok(Response::new(replay)),
            Ok(None) => {}
            Err(error) => {
                let status = Status::from(error);
                if status.code() == tonic::Code::AlreadyExists {
                    self.record(
                        &call,
                        Some(&caller),
                        true,
                        call.requested.clone(),
                        Some(&status),
                        &[],
                        "",
                    )
                    .await;
                }
                return Err(status);
            }
        }
        let result = async {
            let sync_action = build(&req)?;
            let (targets, revision, _) = self.resolve(&req)?;
            let names: Vec<String> = targets.iter().map(Target::name).collect();
            let results = self
                .controller
                .run_sync(&sync_action, &targets, req.dry_run(), &call.request_id)
                .await
                .map_err(|e| Failure {
                    error: e.into(),
                    targets: names.clone(),
                })?;
            let resp = respond(Done {
                audit_id: call.audit_id.clone(),
                dry_run: req.dry_run(),
                outcomes: results.iter().map(convert::target_outcome).collect(),
                revision,
            });
            Ok((resp, names, results, String::new()))
        }
        .await;
        self.conclude(&call, &caller, fp, result).await
    }

    /// The shared flow of RestartWorkers, DrainWorkers and ShutdownWorkers.
    async fn long_verb<Req>(
        &self,
        request: Request<Req>,
        action: &'static str,
        role: Role,
        build: impl FnOnce(&Req) -> Result<LongAction, ApiError> + Send,
        pacing: Option<pb::Pacing>,
        wrap: fn(pb::Operation) -> Req::Answer,
    ) -> Result<Response<Req::Answer>, Status>
    where
        Req: SelectorRequest + OperationRequest + Sync,
    {
        let call = self.call_info(&request, action);
        let caller = self.authorize(&request, action, role, true).await?;
        let req = request.into_inner();
        let fp = fingerprint(action, &req);
        match self.begin_key::<Req::Answer>(&caller, &call.request_id, fp) {
            // A replay gets the operation in its current state.
            Ok(Some(replay)) => {
                let name = Req::operation_name(&replay);
                let current = self
                    .controller
                    .operations
                    .get(&name)
                    .map(|op| convert::operation(&op));
                return Ok(Response::new(match current {
                    Some(op) => wrap(op),
                    None => replay,
                }));
            }
            Ok(None) => {}
            Err(error) => return Err(error.into()),
        }
        let result = async {
            let long = build(&req)?;
            let (targets, revision, max) = self.resolve(&req)?;
            let pacing = requests::pacing(pacing.as_ref(), max)?;
            let names: Vec<String> = targets.iter().map(Target::name).collect();
            let op = self
                .controller
                .start_operation(
                    long,
                    targets,
                    pacing,
                    req.dry_run(),
                    Origin {
                        actor: &caller.name,
                        reason: req.reason(),
                        request_id: &call.request_id,
                        audit_id: &call.audit_id,
                        revision,
                    },
                )
                .await
                .map_err(|e| Failure {
                    error: e.into(),
                    targets: names.clone(),
                })?;
            let name = op.name.clone();
            Ok((wrap(convert::operation(&op)), names, Vec::new(), name))
        }
        .await;
        self.conclude(&call, &caller, fp, result).await
    }

    pub(super) async fn restart(
        &self,
        request: Request<pb::RestartWorkersRequest>,
    ) -> Result<Response<pb::RestartWorkersResponse>, Status> {
        let role = if request.get_ref().bypass_recovery_policy {
            Role::Admin
        } else {
            Role::Operator
        };
        let pacing = request.get_ref().pacing;
        self.long_verb(
            request,
            "RestartWorkers",
            role,
            requests::restart,
            pacing,
            |op| pb::RestartWorkersResponse {
                operation: Some(op),
            },
        )
        .await
    }

    pub(super) async fn drain(
        &self,
        request: Request<pb::DrainWorkersRequest>,
    ) -> Result<Response<pb::DrainWorkersResponse>, Status> {
        let role = if request.get_ref().bypass_recovery_policy {
            Role::Admin
        } else {
            Role::Operator
        };
        let pacing = request.get_ref().pacing;
        self.long_verb(
            request,
            "DrainWorkers",
            role,
            requests::drain,
            pacing,
            |op| pb::DrainWorkersResponse {
                operation: Some(op),
            },
        )
        .await
    }

    pub(super) async fn shutdown(
        &self,
        request: Request<pb::ShutdownWorkersRequest>,
    ) -> Result<Response<pb::ShutdownWorkersResponse>, Status> {
        let r = request.get_ref();
        let role = if r.force { Role::Admin } else { Role::Operator };
        let pacing = r.pacing;
        let has_runtime = self.controller.has_runtime();
        let build = move |r: &pb::ShutdownWorkersRequest| {
            if (r.force || r.grace_period.is_some()) && !has_runtime {
                return Err(ApiError::FailedPrecondition {
                    reason: "NO_RUNTIME",
                    subject: if r.force { "force" } else { "grace_period" }.into(),
                    message: "`force` and `grace_period` need a runtime (Kubernetes or local \
                              processes) and none is configured"
                        .into(),
                });
            }
            if r.force {
                return Err(ApiError::FailedPrecondition {
                    reason: "NOT_SUPPORTED",
                    subject: "force".into(),
                    message: "a forced shutdown through the runtime is not built yet".into(),
                });
            }
            requests::shutdown(r)
        };
        self.long_verb(request, "ShutdownWorkers", role, build, pacing, |op| {
            pb::ShutdownWorkersResponse {
                operation: Some(op),
            }
        })
        .await
    }

    pub(super) async fn scale(
        &self,
        request: Request<pb::ScaleGroupRequest>,
    ) -> Result<Response<pb::ScaleGroupResponse>, Status> {
        self.group_verb(request).await
    }

    /// LaunchWorkers: more workers in an existing launch group (the runtime's groups, e.g.
    /// `[local]` groups); a new group from a template is not supported yet.
    pub(super) async fn launch(
        &self,
        request: Request<pb::LaunchWorkersRequest>,
    ) -> Result<Response<pb::LaunchWorkersResponse>, Status> {
        self.group_verb(request).await
    }

    /// A verb on one group through the runtime (ScaleGroup, LaunchWorkers): authorised,
    /// idempotent, validated, started as an operation and audited like the others.
    async fn group_verb<Req: GroupRequest>(
        &self,
        request: Request<Req>,
    ) -> Result<Response<Req::Answer>, Status> {
        let action = Req::ACTION;
        let call = self.call_info(&request, action);
        let caller = self
            .authorize(&request, action, Role::Operator, true)
            .await?;
        let req = request.into_inner();
        let fp = fingerprint(action, &req);
        match self.begin_key::<Req::Answer>(&caller, &call.request_id, fp) {
            Ok(Some(replay)) => return Ok(Response::new(replay)),
            Ok(None) => {}
            Err(error) => return Err(error.into()),
        }
        let result = async {
            common_fields(req.reason(), req.request_id(), 1)?;
            let group = req.group().trim();
            if group.is_empty() {
                return Err(ApiError::invalid("group", "required").into());
            }
            let (verb, resize) = req.plan()?;
            let op = self
                .controller
                .resize(
                    verb,
                    group,
                    resize,
                    req.dry_run(),
                    Origin {
                        actor: &caller.name,
                        reason: req.reason(),
                        request_id: &call.request_id,
                        audit_id: &call.audit_id,
                        revision: self.fleet.snapshot().revision,
                    },
                )
                .await
                .map_err(|e| Failure {
                    error: e.into(),
                    targets: vec![group.to_string()],
                })?;
            let name = op.name.clone();
            Ok((
                Req::answer(convert::operation(&op)),
                vec![group.to_string()],
                Vec::new(),
                name,
            ))
        }
        .await;
        self.conclude(&call, &caller, fp, result).await
    }

    pub(super) fn operation(
        &self,
        name: &str,
    ) -> Result<warden_core::operations::Operation, ApiError> {
        if !name.starts_with("operations/") || name.len() <= "operations/".len() {
            return Err(ApiError::invalid("name", "expected operations/{id}"));
        }
        self.controller
            .operations
            .get(name)
            .ok_or_else(|| op_not_found(name))
    }

    pub(super) fn list_ops(
        &self,
        req: &pb::ListOperationsRequest,
    ) -> Result<pb::ListOperationsResponse, ApiError> {
        let mut states = Vec::new();
        for (i, s) in req.states.iter().enumerate() {
            let state = pb::OperationState::try_from(*s)
                .ok()
                .and_then(convert::state_from)
                .ok_or_else(|| ApiError::invalid(format!("states[{i}]"), "unknown state"))?;
            states.push(state);
        }
        let worker = if req.worker.is_empty() || req.worker.starts_with("workers/") {
            req.worker.clone()
        } else {
            self.fleet
                .snapshot()
                .resolve(&req.worker)
                .map(|w| w.key.resource_name())
                .unwrap_or_else(|_| req.worker.clone())
        };
        let fp = paging::fingerprint(&[
            format!("{:?}", req.states).as_bytes(),
            req.verbs.join(",").as_bytes(),
            req.request_id.as_bytes(),
            worker.as_bytes(),
        ]);
        let cursor = paging::decode(&req.page_token, fp)?;
        let limit = paging::page_size(req.page_size);
        let mut ops = self.controller.operations.list(&OperationQuery {
            states,
            verbs: req.verbs.clone(),
            request_id: req.request_id.clone(),
            worker,
            before: cursor.map(|c| c.name),
            limit: limit + 1,
        });
        let next_page_token = if ops.len() > limit {
            ops.truncate(limit);
            let last = ops
                .last()
                .map(|o| o.name.trim_start_matches("operations/").to_string());
            paging::encode(
                fp,
                Cursor {
                    rank: 0,
                    name: last.unwrap_or_default(),
                },
            )
        } else {
            String::new()
        };
        Ok(pb::ListOperationsResponse {
            operations: ops.iter().map(convert::operation).collect(),
            next_page_token,
        })
    }

    pub(super) async fn cancel(
        &self,
        request: Request<pb::CancelOperationRequest>,
    ) -> Result<Response<pb::CancelOperationResponse>, Status> {
        let call = self.call_info(&request, "CancelOperation");
        let caller = self
            .authorize(&request, "CancelOperation", Role::Operator, true)
            .await?;
        let req = request.into_inner();
        let result = (|| {
            common_fields(&req.reason, &req.request_id, 0)?;
            self.operation(&req.name)?;
            self.controller
                .operations
                .cancel(&req.name, req.dry_run)
                .map_err(|e| match e {
                    warden_core::operations::CancelError::NotFound(n) => op_not_found(&n),
                    warden_core::operations::CancelError::Done(state) => {
                        ApiError::FailedPrecondition {
                            reason: "OPERATION_DONE",
                            subject: req.name.clone(),
                            message: format!("the operation already ended {state:?}"),
                        }
                    }
                })
        })();
        match result {
            Ok(op) => {
                self.record(
                    &call,
                    Some(&caller),
                    true,
                    vec![req.name.clone()],
                    None,
                    &[],
                    &req.name,
                )
                .await;
                Ok(Response::new(pb::CancelOperationResponse {
                    operation: Some(convert::operation(&op)),
                    audit_id: call.audit_id,
                }))
            }
            Err(error) => {
                let status = Status::from(error);
                self.record(
                    &call,
                    Some(&caller),
                    true,
                    vec![req.name.clone()],
                    Some(&status),
                    &[],
                    &req.name,
                )
                .await;
                Err(status)
            }
        }
    }

    /// ForgetWorkers: resolved, checked (every worker must be dead), then forgotten.
    pub(super) async fn handle_forget(
        &self,
        request: Request<pb::ForgetWorkersRequest>,
    ) -> Result<Response<pb::ForgetWorkersResponse>, Status> {
        let call = self.call_info(&request, "ForgetWorkers");
        let caller = self
            .authorize(&request, "ForgetWorkers", Role::Admin, true)
            .await?;
        let req = request.into_inner();
        let fp = fingerprint("ForgetWorkers", &req);
        match self.begin_key::<pb::ForgetWorkersResponse>(&caller, &call.request_id, fp) {
            Ok(Some(replay)) => return Ok(Response::new(replay)),
            Ok(None) => {}
            Err(error) => return Err(error.into()),
        }
        let result = self.forget(&req).await.map(|(outcomes, revision)| {
            let names: Vec<String> = outcomes.iter().map(|o| o.worker.clone()).collect();
            let results: Vec<TargetResult> = outcomes
                .iter()
                .map(|o| TargetResult {
                    worker: o.worker.clone(),
                    code: outcome_of(o.code),
                    message: o.message.clone(),
                })
                .collect();
            (
                pb::ForgetWorkersResponse {
                    audit_id: call.audit_id.clone(),
                    dry_run: req.dry_run,
                    outcomes,
                    revision,
                },
                names,
                results,
                String::new(),
            )
        });
        self.conclude(&call, &caller, fp, result.map_err(Failure::from))
            .await
    }
}

fn outcome_of(code: i32) -> Outcome {
    match pb::OutcomeCode::try_from(code) {
        Ok(pb::OutcomeCode::Applied) => Outcome::Applied,
        Ok(pb::OutcomeCode::WouldApply) => Outcome::WouldApply,
        Ok(pb::OutcomeCode::Skipped) => Outcome::Skipped,
        _ => Outcome::Failed,
    }
}

/// Requests answered with an operation.
pub trait OperationRequest {
    type Answer: Message + Default;
    fn operation_name(answer: &Self::Answer) -> String;
}

macro_rules! operation_request {
    ($($request:ty => $answer:ty),*) => {$(
        impl OperationRequest for $request {
            type Answer = $answer;
            fn operation_name(answer: &$answer) -> String {
                answer.operation.as_ref().map(|o| o.name.clone()).unwrap_or_default()
            }
        }
    )*};
}

operation_request!(
    pb::RestartWorkersRequest => pb::RestartWorkersResponse,
    pb::DrainWorkersRequest => pb::DrainWorkersResponse,
    pb::ShutdownWorkersRequest => pb::ShutdownWorkersResponse
);

use crate::fleet;

/// Requests that resize one group through the runtime.
trait GroupRequest: super::Audited + Message + Default + Send + Sync + 'static {
    type Answer: Message + Default;
    const ACTION: &'static str;
    fn group(&self) -> &str;
    /// The operation's verb and the size asked for, once the request's own fields are checked.
    fn plan(&self) -> Result<(&'static str, Resize), ApiError>;
    fn answer(op: pb::Operation) -> Self::Answer;
}

impl GroupRequest for pb::ScaleGroupRequest {
    type Answer = pb::ScaleGroupResponse;
    const ACTION: &'static str = "ScaleGroup";
    fn group(&self) -> &str {
        &self.group
    }
    fn plan(&self) -> Result<(&'static str, Resize), ApiError> {
        if self.replicas > 1000 {
            return Err(ApiError::invalid("replicas", "at most 1000"));
        }
        Ok(("scale", Resize::To(self.replicas)))
    }
    fn answer(op: pb::Operation) -> Self::Answer {
        pb::ScaleGroupResponse {
            operation: Some(op),
        }
    }
}

impl GroupRequest for pb::LaunchWorkersRequest {
    type Answer = pb::LaunchWorkersResponse;
    const ACTION: &'static str = "LaunchWorkers";
    fn group(&self) -> &str {
        &self.group
    }
    fn plan(&self) -> Result<(&'static str, Resize), ApiError> {
        if !(1..=100).contains(&self.count) {
            return Err(ApiError::invalid("count", "1 to 100"));
        }
        for (field, set) in [
            ("template", !self.template.is_empty()),
            ("queues", !self.queues.is_empty()),
            ("concurrency", self.concurrency.is_some()),
            ("labels", !self.labels.is_empty()),
            ("env", !self.env.is_empty()),
        ] {
            if set {
                return Err(ApiError::FailedPrecondition {
                    reason: "NOT_SUPPORTED",
                    subject: field.into(),
                    message: format!(
                        "{field}: launching adds workers to an existing launch group as \
                         configured; per-launch settings are not supported yet"
                    ),
                });
            }
        }
        Ok(("launch", Resize::More(self.count)))
    }
    fn answer(op: pb::Operation) -> Self::Answer {
        pb::LaunchWorkersResponse {
            operation: Some(op),
        }
    }
}
