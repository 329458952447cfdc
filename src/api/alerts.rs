//! `warden.v1.Alerts`: alerts, rules, silences, deliveries. Specified in the contract; every
//! RPC answers UNIMPLEMENTED until the alerting engine is built, after the role check (and,
//! for changes, the audit) it will have.
use tonic::{Request, Response, Status};

use super::control::not_yet;
use crate::{
    config::Role,
    proto::v1::{self as pb, alerts_server::Alerts},
};

const ALERTING: &str = "alerting engine";

#[derive(Clone)]
pub struct AlertsService {
    pub(crate) alerting: crate::alerting::Alerting,
    pub(crate) audit: std::sync::Arc<dyn warden_core::audit::AuditLog>,
}

impl AlertsService {
    pub fn new(
        alerting: crate::alerting::Alerting,
        audit: std::sync::Arc<dyn warden_core::audit::AuditLog>,
    ) -> Self {
        Self { alerting, audit }
    }
}

macro_rules! alerts_impl {
    ($($method:ident($request:ty) -> $response:ty, $action:literal, $role:expr;)*) => {
        #[tonic::async_trait]
        impl Alerts for AlertsService {
            $(
            async fn $method(&self, request: Request<$request>) -> Result<Response<$response>, Status> {
                not_yet(&request, $action, $role, ALERTING)
            }
            )*
        }
    };
}

macro_rules! reads {
    ($($request:ty),*) => {$( impl super::control::Audited for $request {} )*};
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

alerts_impl! {
        list_alerts(pb::ListAlertsRequest) -> pb::ListAlertsResponse, "ListAlerts", Role::Viewer;
        get_alert(pb::GetAlertRequest) -> pb::GetAlertResponse, "GetAlert", Role::Viewer;
        acknowledge_alert(pb::AcknowledgeAlertRequest) -> pb::AcknowledgeAlertResponse, "AcknowledgeAlert", Role::Operator;
        unacknowledge_alert(pb::UnacknowledgeAlertRequest) -> pb::UnacknowledgeAlertResponse, "UnacknowledgeAlert", Role::Operator;
        list_alert_rules(pb::ListAlertRulesRequest) -> pb::ListAlertRulesResponse, "ListAlertRules", Role::Viewer;
        get_alert_rule(pb::GetAlertRuleRequest) -> pb::GetAlertRuleResponse, "GetAlertRule", Role::Viewer;
        create_silence(pb::CreateSilenceRequest) -> pb::CreateSilenceResponse, "CreateSilence", Role::Operator;
        list_silences(pb::ListSilencesRequest) -> pb::ListSilencesResponse, "ListSilences", Role::Viewer;
        get_silence(pb::GetSilenceRequest) -> pb::GetSilenceResponse, "GetSilence", Role::Viewer;
        expire_silence(pb::ExpireSilenceRequest) -> pb::ExpireSilenceResponse, "ExpireSilence", Role::Operator;
    list_deliveries(pb::ListDeliveriesRequest) -> pb::ListDeliveriesResponse, "ListDeliveries", Role::Viewer;
}
