//! `warden.v1.Control`: actions on workers. Every call, allowed or denied, is audited.
use std::collections::BTreeSet;

use tonic::{Request, Response, Status};

use super::{
    ApiError,
    auth::{self, Caller},
    convert,
};
use crate::{
    config::Role,
    fleet::{FleetHandle, Thresholds, state::ForgetError},
    proto::v1::{self as pb, control_server::Control},
};

/// Most workers one request may act on.
const MAX_TARGETS: usize = 1000;
const MAX_REASON_BYTES: usize = 1024;

#[derive(Clone)]
pub struct ControlService {
    fleet: FleetHandle,
    thresholds: Thresholds,
}

impl ControlService {
    pub fn new(fleet: FleetHandle, thresholds: Thresholds) -> Self {
        Self { fleet, thresholds }
    }
}

/// What the audit needs from a request.
trait Audited {
    fn reason(&self) -> &str;
    fn targets(&self) -> Vec<String>;
}

macro_rules! audited_by_target {
    ($($request:ty),*) => {$(
        impl Audited for $request {
            fn reason(&self) -> &str { &self.reason }
            fn targets(&self) -> Vec<String> {
                self.target.as_ref().map(|t| t.names.clone()).unwrap_or_default()
            }
        }
    )*};
}

audited_by_target!(
    pb::RestartWorkerRequest,
    pb::PauseConsumingRequest,
    pb::ResumeConsumingRequest,
    pb::ShutdownRequest,
    pb::ScalePoolRequest,
    pb::SetRateLimitRequest,
    pb::SetTimeLimitRequest,
    pb::RevokeTaskRequest,
    pb::ForgetWorkerRequest
);

impl Audited for pb::AcknowledgeAlertRequest {
    fn reason(&self) -> &str {
        &self.reason
    }
    fn targets(&self) -> Vec<String> {
        vec![format!("alert:{}", self.alert_id)]
    }
}

impl Audited for pb::CreateSilenceRequest {
    fn reason(&self) -> &str {
        &self.reason
    }
    fn targets(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Audited for pb::ListAuditRequest {
    fn reason(&self) -> &str {
        ""
    }
    fn targets(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Checks the caller's role; a refusal is audited here, an allowed call by its handler.
fn authorize<T: Audited>(
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

/// Writes the `Control` impl: actions that later issues build are authorised and audited
/// like the real ones, then answer UNIMPLEMENTED; built ones delegate to `ControlService`.
/// (A macro inside an `async_trait` impl is not expanded in time, so it writes the whole impl.)
macro_rules! control_impl {
    ($($method:ident($request:ty) -> $response:ty, $action:literal, $role:expr, $why:literal;)*) => {
        #[tonic::async_trait]
        impl Control for ControlService {
            $(
            async fn $method(&self, request: Request<$request>) -> Result<Response<$response>, Status> {
                let caller = authorize(&request, $action, $role)?;
                let req = request.get_ref();
                auth::audit(Some(&caller), $action, &req.targets(), req.reason(), true, "unimplemented");
                Err(ApiError::Unimplemented($why).into())
            }
            )*

            async fn forget_worker(
                &self,
                request: Request<pb::ForgetWorkerRequest>,
            ) -> Result<Response<pb::ControlResponse>, Status> {
                self.handle_forget(request).await
            }
        }
    };
}

control_impl! {
    restart_worker(pb::RestartWorkerRequest) -> pb::ControlResponse, "RestartWorker", Role::Operator,
        "RestartWorker arrives with the runtimes (Kubernetes, local processes)";
    pause_consuming(pb::PauseConsumingRequest) -> pb::ControlResponse, "PauseConsuming", Role::Operator,
        "PauseConsuming arrives with the control actions";
    resume_consuming(pb::ResumeConsumingRequest) -> pb::ControlResponse, "ResumeConsuming", Role::Operator,
        "ResumeConsuming arrives with the control actions";
    shutdown(pb::ShutdownRequest) -> pb::ControlResponse, "Shutdown", Role::Operator,
        "Shutdown arrives with the control actions";
    scale_pool(pb::ScalePoolRequest) -> pb::ControlResponse, "ScalePool", Role::Operator,
        "ScalePool arrives with the control actions";
    set_rate_limit(pb::SetRateLimitRequest) -> pb::ControlResponse, "SetRateLimit", Role::Operator,
        "SetRateLimit arrives with the control actions";
    set_time_limit(pb::SetTimeLimitRequest) -> pb::ControlResponse, "SetTimeLimit", Role::Operator,
        "SetTimeLimit arrives with the control actions";
    revoke_task(pb::RevokeTaskRequest) -> pb::ControlResponse, "RevokeTask", Role::Operator,
        "RevokeTask arrives with the control actions";
    acknowledge_alert(pb::AcknowledgeAlertRequest) -> pb::ControlResponse, "AcknowledgeAlert", Role::Operator,
        "AcknowledgeAlert arrives with the alerting engine";
    create_silence(pb::CreateSilenceRequest) -> pb::ControlResponse, "CreateSilence", Role::Operator,
        "CreateSilence arrives with the alerting engine";
    list_audit(pb::ListAuditRequest) -> pb::ListAuditResponse, "ListAudit", Role::Operator,
        "ListAudit arrives with the audit store; until then the audit trail is the warden::audit log";
}

impl ControlService {
    async fn handle_forget(
        &self,
        request: Request<pb::ForgetWorkerRequest>,
    ) -> Result<Response<pb::ControlResponse>, Status> {
        let caller = authorize(&request, "ForgetWorker", Role::Admin)?;
        let req = request.into_inner();
        let result = self.forget(&req).await;
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(err) => err.to_string(),
        };
        let audit_id = auth::audit(
            Some(&caller),
            "ForgetWorker",
            &req.targets(),
            &req.reason,
            true,
            &outcome,
        );
        let outcomes = result?;
        Ok(Response::new(pb::ControlResponse {
            audit_id,
            dry_run: req.dry_run,
            outcomes,
            silence_id: String::new(),
        }))
    }
}

impl ControlService {
    /// Resolves the target, checks every worker may be forgotten, then forgets them.
    async fn forget(
        &self,
        req: &pb::ForgetWorkerRequest,
    ) -> Result<Vec<pb::TargetOutcome>, ApiError> {
        if req.reason.len() > MAX_REASON_BYTES {
            return Err(ApiError::invalid("reason", "longer than 1024 bytes"));
        }
        let names = self.resolve(req.target.as_ref())?;
        let snapshot = self.fleet.snapshot();
        for name in &names {
            let worker = snapshot
                .workers
                .get(name)
                .ok_or_else(|| ApiError::NotFound(format!("no worker named {name:?}")))?;
            if worker.lifecycle == crate::fleet::Lifecycle::Alive {
                return Err(ApiError::FailedPrecondition(format!(
                    "{name} is ALIVE; only OFFLINE or LOST workers can be forgotten"
                )));
            }
        }
        let mut outcomes = Vec::with_capacity(names.len());
        for name in names {
            let (outcome, message) = if req.dry_run {
                (pb::Outcome::WouldApply, "would be forgotten".to_string())
            } else {
                match self.fleet.forget(&name).await {
                    Err(_) => {
                        return Err(ApiError::Unavailable {
                            backend: "fleet",
                            reason: "shutting down".into(),
                        });
                    }
                    Ok(Ok(_)) => (pb::Outcome::Applied, "forgotten".to_string()),
                    Ok(Err(ForgetError::NotFound)) => {
                        (pb::Outcome::Skipped, "already forgotten".to_string())
                    }
                    Ok(Err(ForgetError::Alive)) => {
                        (pb::Outcome::Failed, "came back to life".to_string())
                    }
                }
            };
            outcomes.push(pb::TargetOutcome {
                worker: name,
                outcome: outcome.into(),
                message,
                alert_id: String::new(),
            });
        }
        Ok(outcomes)
    }

    /// The worker names a target selects, validated.
    fn resolve(&self, target: Option<&pb::Target>) -> Result<Vec<String>, ApiError> {
        let target = target.ok_or_else(|| ApiError::invalid("target", "required"))?;
        let names: Vec<String> = match (&target.filter, target.names.is_empty()) {
            (None, false) => {
                let unique: BTreeSet<&String> = target.names.iter().collect();
                unique.into_iter().cloned().collect()
            }
            (Some(filter), true) => {
                let filter = convert::worker_filter(Some(filter), "target.filter")?;
                let snapshot = self.fleet.snapshot();
                let now = self.fleet.clock().now();
                snapshot
                    .workers
                    .values()
                    .filter(|w| filter.matches(w, now, self.thresholds))
                    .map(|w| w.name.clone())
                    .collect()
            }
            _ => {
                return Err(ApiError::invalid(
                    "target",
                    "set exactly one of target.names and target.filter",
                ));
            }
        };
        if names.len() > MAX_TARGETS {
            return Err(ApiError::invalid(
                "target",
                format!("selects {} workers; at most {MAX_TARGETS}", names.len()),
            ));
        }
        Ok(names)
    }
}
