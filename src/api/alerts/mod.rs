//! `warden.v1.Alerts`: what the alert engine raised, its rules, silences, and the
//! notification deliveries. Reads need `viewer`; acknowledgements and silences need
//! `operator`, are audited (allowed or refused, service "Alerts"), idempotent by `request_id`
//! and may be dry runs, like Control's verbs. The engine sits behind a plain mutex
//! (`crate::alerting`): every handler locks it briefly and never across an await.
mod convert;
mod lists;

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use prost::Message;
use tonic::{Request, Response, Status};
use tracing::{info, warn};
use warden_core::{
    audit::{AuditLog, AuditRecord},
    idempotency::Idempotency,
};

use super::{
    ApiError,
    auth::{self, Caller},
    control::{
        Audited,
        actions::{begin_key, fingerprint},
        authorize, common_fields, convert as control_convert, trace_id,
    },
};
use crate::{
    config::Role,
    proto::v1::{self as pb, alerts_server::Alerts},
};

#[derive(Clone)]
pub struct AlertsService {
    pub(crate) alerting: crate::alerting::Alerting,
    pub(crate) audit: Arc<dyn AuditLog>,
    keys: Idempotency,
}

impl AlertsService {
    pub fn new(alerting: crate::alerting::Alerting, audit: Arc<dyn AuditLog>) -> Self {
        let keys = Idempotency::new(alerting.clock.clone());
        Self {
            alerting,
            audit,
            keys,
        }
    }

    fn now(&self) -> SystemTime {
        self.alerting.clock.now()
    }
}

macro_rules! reads {
    ($($request:ty),*) => {$( impl Audited for $request {} )*};
}

reads!(
    pb::ListAlertsRequest,
    pb::GetAlertRequest,
    pb::ListAlertRulesRequest,
    pb::GetAlertRuleRequest,
    pb::ListSilencesRequest,
    pb::GetSilenceRequest,
    pb::ListDeliveriesRequest
);

/// What is known of a mutating call when it arrives.
struct Call {
    audit_id: String,
    action: &'static str,
    time: SystemTime,
    trace_id: String,
    reason: String,
    dry_run: bool,
    request_id: String,
    requested: Vec<String>,
}

/// `{collection}/{id}` with a non-empty id without `/`; else INVALID_ARGUMENT naming `field`.
pub(super) fn resource_name(field: &str, name: &str, collection: &str) -> Result<(), ApiError> {
    match name
        .strip_prefix(collection)
        .and_then(|r| r.strip_prefix('/'))
    {
        Some(id) if !id.is_empty() && !id.contains('/') && id.len() <= 255 => Ok(()),
        _ => Err(ApiError::invalid(
            field,
            format!("expected {collection}/{{id}}, got {name:?}"),
        )),
    }
}

impl AlertsService {
    /// The shared flow of the mutating calls: authorise (a refusal is audited), replay an
    /// idempotent repeat, check the shared fields, act, audit, remember the answer.
    async fn mutate<Req, Resp>(
        &self,
        request: Request<Req>,
        action: &'static str,
        act: impl FnOnce(&Self, &Req, &Caller, String) -> Result<(Resp, Vec<String>), ApiError>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Audited + Message,
        Resp: Message + Default,
    {
        let req = request.get_ref();
        let call = Call {
            audit_id: uuid::Uuid::new_v4().to_string(),
            action,
            time: self.now(),
            trace_id: trace_id(request.metadata()),
            reason: req.reason().to_string(),
            dry_run: req.dry_run(),
            request_id: req.request_id().to_string(),
            requested: req.targets(),
        };
        let caller = auth::caller(&request)?;
        if let Err(status) = auth::check_role(&caller, Role::Operator) {
            self.record(&call, &caller, false, call.requested.clone(), Some(&status))
                .await;
            return Err(status);
        }
        let req = request.into_inner();
        let fp = fingerprint(action, &req);
        match begin_key::<Resp>(&self.keys, &caller, &call.request_id, fp) {
            Ok(Some(replay)) => return Ok(Response::new(replay)),
            Ok(None) => {}
            Err(error) => {
                let status = Status::from(error);
                if status.code() == tonic::Code::AlreadyExists {
                    self.record(&call, &caller, true, call.requested.clone(), Some(&status))
                        .await;
                }
                return Err(status);
            }
        }
        let result = common_fields(&call.reason, &call.request_id, 1)
            .and_then(|_| act(self, &req, &caller, call.audit_id.clone()));
        match result {
            Ok((resp, targets)) => {
                self.record(&call, &caller, true, targets, None).await;
                if !call.request_id.is_empty() {
                    self.keys
                        .complete(&caller.name, &call.request_id, fp, resp.encode_to_vec());
                }
                Ok(Response::new(resp))
            }
            Err(error) => {
                if !call.request_id.is_empty() {
                    self.keys.abandon(&caller.name, &call.request_id);
                }
                let status = Status::from(error);
                self.record(&call, &caller, true, call.requested.clone(), Some(&status))
                    .await;
                Err(status)
            }
        }
    }

    /// Appends one audit entry (and writes it to the `warden::audit` log). A store that
    /// cannot take it does not undo the call: the failure is logged as a warning.
    async fn record(
        &self,
        call: &Call,
        caller: &Caller,
        allowed: bool,
        targets: Vec<String>,
        status: Option<&Status>,
    ) {
        let record = AuditRecord {
            seq: 0,
            id: call.audit_id.clone(),
            time: call.time,
            actor: caller.name.clone(),
            role: caller.role.to_string(),
            service: "Alerts".into(),
            action: call.action.into(),
            targets,
            reason: call.reason.clone(),
            dry_run: call.dry_run,
            request_id: call.request_id.clone(),
            allowed,
            code: status
                .map_or("OK", |s| control_convert::code_name(s.code()))
                .into(),
            message: status.map(|s| s.message().to_string()).unwrap_or_default(),
            counts: BTreeMap::new(),
            outcomes: Vec::new(),
            trace_id: call.trace_id.clone(),
            parameters: BTreeMap::new(),
            operation: String::new(),
        };
        info!(
            target: "warden::audit",
            audit_id = %record.id,
            actor = %record.actor,
            role = %record.role,
            action = %record.action,
            targets = ?record.targets,
            reason = %record.reason,
            dry_run = record.dry_run,
            request_id = %record.request_id,
            allowed = record.allowed,
            outcome = %record.code,
            "alerts call"
        );
        if let Err(err) = self.audit.append(&record).await {
            warn!(%err, audit_id = %record.id, "audit entry not stored (it is in the log above)");
        }
    }
}

#[tonic::async_trait]
impl Alerts for AlertsService {
    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        authorize(&request, "ListAlerts", Role::Viewer)?;
        Ok(Response::new(self.alerts_page(request.get_ref())?))
    }

    async fn get_alert(
        &self,
        request: Request<pb::GetAlertRequest>,
    ) -> Result<Response<pb::GetAlertResponse>, Status> {
        authorize(&request, "GetAlert", Role::Viewer)?;
        let name = &request.get_ref().name;
        resource_name("name", name, "alerts")?;
        let alert = self
            .alerting
            .engine()
            .get_alert(name)
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetAlertResponse {
            alert: Some(convert::alert(&alert)),
        }))
    }

    async fn acknowledge_alert(
        &self,
        request: Request<pb::AcknowledgeAlertRequest>,
    ) -> Result<Response<pb::AcknowledgeAlertResponse>, Status> {
        self.mutate(request, "AcknowledgeAlert", |svc, req, caller, audit_id| {
            resource_name("name", &req.name, "alerts")?;
            let now = svc.now();
            let alert =
                svc.alerting
                    .engine()
                    .acknowledge(&req.name, &caller.name, now, req.dry_run)?;
            if !req.dry_run {
                svc.alerting
                    .record_acknowledgement(&alert, &caller.name, &req.reason, true);
            }
            Ok((
                pb::AcknowledgeAlertResponse {
                    alert: Some(convert::alert(&alert)),
                    audit_id,
                    dry_run: req.dry_run,
                },
                vec![req.name.clone()],
            ))
        })
        .await
    }

    async fn unacknowledge_alert(
        &self,
        request: Request<pb::UnacknowledgeAlertRequest>,
    ) -> Result<Response<pb::UnacknowledgeAlertResponse>, Status> {
        self.mutate(
            request,
            "UnacknowledgeAlert",
            |svc, req, caller, audit_id| {
                resource_name("name", &req.name, "alerts")?;
                let alert = svc
                    .alerting
                    .engine()
                    .unacknowledge(&req.name, req.dry_run)?;
                if !req.dry_run {
                    svc.alerting
                        .record_acknowledgement(&alert, &caller.name, &req.reason, false);
                }
                Ok((
                    pb::UnacknowledgeAlertResponse {
                        alert: Some(convert::alert(&alert)),
                        audit_id,
                        dry_run: req.dry_run,
                    },
                    vec![req.name.clone()],
                ))
            },
        )
        .await
    }

    async fn list_alert_rules(
        &self,
        request: Request<pb::ListAlertRulesRequest>,
    ) -> Result<Response<pb::ListAlertRulesResponse>, Status> {
        authorize(&request, "ListAlertRules", Role::Viewer)?;
        Ok(Response::new(self.rules_page(request.get_ref())?))
    }

    async fn get_alert_rule(
        &self,
        request: Request<pb::GetAlertRuleRequest>,
    ) -> Result<Response<pb::GetAlertRuleResponse>, Status> {
        authorize(&request, "GetAlertRule", Role::Viewer)?;
        let name = &request.get_ref().name;
        resource_name("name", name, "alertRules")?;
        let engine = self.alerting.engine();
        let defaults = default_receivers(&engine);
        let rule = engine.rule(name).ok_or_else(|| ApiError::NotFound {
            resource_type: "warden.v1.AlertRule",
            name: name.clone(),
            message: format!("no alert rule named {name:?}"),
        })?;
        Ok(Response::new(pb::GetAlertRuleResponse {
            rule: Some(convert::rule(rule, &defaults)),
        }))
    }

    async fn create_silence(
        &self,
        request: Request<pb::CreateSilenceRequest>,
    ) -> Result<Response<pb::CreateSilenceResponse>, Status> {
        self.mutate(request, "CreateSilence", |svc, req, caller, audit_id| {
            let spec = silence_spec(req, caller)?;
            let now = svc.now();
            let created = svc
                .alerting
                .engine()
                .create_silence(&spec, now, req.dry_run)?;
            let targets = if created.silence.name.is_empty() {
                Vec::new()
            } else {
                vec![created.silence.name.clone()]
            };
            Ok((
                pb::CreateSilenceResponse {
                    silence: Some(convert::silence(&created.silence, now)),
                    alerts: created.alerts,
                    alerts_total: u32::try_from(created.alerts_total).unwrap_or(u32::MAX),
                    audit_id,
                    dry_run: req.dry_run,
                },
                targets,
            ))
        })
        .await
    }

    async fn list_silences(
        &self,
        request: Request<pb::ListSilencesRequest>,
    ) -> Result<Response<pb::ListSilencesResponse>, Status> {
        authorize(&request, "ListSilences", Role::Viewer)?;
        Ok(Response::new(self.silences_page(request.get_ref())?))
    }

    async fn get_silence(
        &self,
        request: Request<pb::GetSilenceRequest>,
    ) -> Result<Response<pb::GetSilenceResponse>, Status> {
        authorize(&request, "GetSilence", Role::Viewer)?;
        let name = &request.get_ref().name;
        resource_name("name", name, "silences")?;
        let silence = self
            .alerting
            .engine()
            .get_silence(name)
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetSilenceResponse {
            silence: Some(convert::silence(&silence, self.now())),
        }))
    }

    async fn expire_silence(
        &self,
        request: Request<pb::ExpireSilenceRequest>,
    ) -> Result<Response<pb::ExpireSilenceResponse>, Status> {
        self.mutate(request, "ExpireSilence", |svc, req, _, audit_id| {
            resource_name("name", &req.name, "silences")?;
            let now = svc.now();
            let silence = svc
                .alerting
                .engine()
                .expire_silence(&req.name, now, req.dry_run)?;
            Ok((
                pb::ExpireSilenceResponse {
                    silence: Some(convert::silence(&silence, now)),
                    audit_id,
                    dry_run: req.dry_run,
                },
                vec![req.name.clone()],
            ))
        })
        .await
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        authorize(&request, "ListDeliveries", Role::Viewer)?;
        Ok(Response::new(self.deliveries_page(request.get_ref())?))
    }
}

/// Where a rule's alerts go when it names no receiver: the default receiver, if configured.
fn default_receivers(engine: &warden_alerts::AlertEngine) -> Vec<String> {
    let default = &engine.config().default_receiver;
    if default.is_empty() {
        Vec::new()
    } else {
        vec![default.clone()]
    }
}

/// A CreateSilenceRequest in the engine's terms (the engine checks the values).
fn silence_spec(
    req: &pb::CreateSilenceRequest,
    caller: &Caller,
) -> Result<warden_alerts::SilenceSpec, ApiError> {
    use pb::create_silence_request::End;
    let (duration, ends_at) = match &req.end {
        Some(End::Duration(d)) => (Some(convert::span("duration", d)?), None),
        Some(End::EndsAt(t)) => (None, Some(convert::time("ends_at", t)?)),
        None => (None, None),
    };
    Ok(warden_alerts::SilenceSpec {
        matchers: convert::matchers(&req.matchers)?,
        starts_at: req
            .starts_at
            .as_ref()
            .map(|t| convert::time("starts_at", t))
            .transpose()?,
        duration,
        ends_at,
        created_by: caller.name.clone(),
        comment: req.comment.clone(),
        reason: req.reason.clone(),
    })
}
