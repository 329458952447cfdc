//! Recording calls in the audit trail, checking roles (refusals recorded too), and ListAudit.
use std::collections::BTreeMap;

use tonic::{Request, Status, metadata::MetadataMap};
use tracing::{info, warn};
use warden_core::audit::{AuditQuery, AuditRecord};

use super::{Audited, ControlService, convert};
use crate::{
    api::{
        ApiError,
        auth::{self, Caller},
        paging::{self, Cursor},
    },
    config::Role,
    control::TargetResult,
    proto::v1 as pb,
};

/// Every RPC name of Control and Alerts (ListAudit's `action` filter accepts only these).
const ACTIONS: &[&str] = &[
    "RestartWorkers",
    "DrainWorkers",
    "ShutdownWorkers",
    "PauseConsuming",
    "ResumeConsuming",
    "SetPoolSize",
    "SetRateLimit",
    "SetTimeLimit",
    "RevokeTasks",
    "CordonWorkers",
    "UncordonWorkers",
    "ForgetWorkers",
    "LaunchWorkers",
    "ScaleGroup",
    "CancelOperation",
    "UpdateRecoveryPolicy",
    "AcknowledgeAlert",
    "UnacknowledgeAlert",
    "CreateSilence",
    "ExpireSilence",
    "ReclaimPending",
    "DiscardPending",
    "RunJanitor",
];

/// The W3C trace id of the call, from its `traceparent` header (`00-<trace id>-<span>-<flags>`);
/// empty when the caller sent none.
pub fn trace_id(metadata: &MetadataMap) -> String {
    metadata
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .unwrap_or_default()
}

/// What is known of a call when it arrives.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub audit_id: String,
    pub action: &'static str,
    pub time: std::time::SystemTime,
    pub trace_id: String,
    pub reason: String,
    pub dry_run: bool,
    pub request_id: String,
    /// The targets as requested (names, `group:…`, `filter`), before resolution.
    pub requested: Vec<String>,
}

impl ControlService {
    pub(super) fn call_info<T: Audited>(
        &self,
        request: &Request<T>,
        action: &'static str,
    ) -> CallInfo {
        let req = request.get_ref();
        CallInfo {
            audit_id: uuid::Uuid::new_v4().to_string(),
            action,
            time: self.fleet.clock().now(),
            trace_id: trace_id(request.metadata()),
            reason: req.reason().to_string(),
            dry_run: req.dry_run(),
            request_id: req.request_id().to_string(),
            requested: req.targets(),
        }
    }

    /// The caller, if it has at least `minimum`; a refusal of a mutating call (`mutating`) is
    /// recorded in the audit trail.
    pub(super) async fn authorize<T: Audited>(
        &self,
        request: &Request<T>,
        action: &'static str,
        minimum: Role,
        mutating: bool,
    ) -> Result<Caller, Status> {
        let caller = auth::caller(request)?;
        if let Err(status) = auth::check_role(&caller, minimum) {
            if mutating {
                let call = self.call_info(request, action);
                let targets = call.requested.clone();
                self.record(&call, Some(&caller), false, targets, Some(&status), &[], "")
                    .await;
            }
            return Err(status);
        }
        Ok(caller)
    }

    /// Appends one entry (and writes it to the `warden::audit` log). A store that cannot take it
    /// does not undo the call: the failure is logged as a warning.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record(
        &self,
        call: &CallInfo,
        caller: Option<&Caller>,
        allowed: bool,
        targets: Vec<String>,
        status: Option<&Status>,
        outcomes: &[TargetResult],
        operation: &str,
    ) {
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for o in outcomes {
            *counts.entry(o.code.name().to_string()).or_default() += 1;
        }
        let record = AuditRecord {
            seq: 0,
            id: call.audit_id.clone(),
            time: call.time,
            actor: caller.map_or("unknown".into(), |c| c.name.clone()),
            role: caller.map(|c| c.role.to_string()).unwrap_or_default(),
            service: "Control".into(),
            action: call.action.into(),
            targets,
            reason: call.reason.clone(),
            dry_run: call.dry_run,
            request_id: call.request_id.clone(),
            allowed,
            code: status.map_or("OK", |s| convert::code_name(s.code())).into(),
            message: status.map(|s| s.message().to_string()).unwrap_or_default(),
            counts,
            outcomes: outcomes
                .iter()
                .map(|o| {
                    (
                        o.worker.clone(),
                        o.code.name().to_string(),
                        o.message.clone(),
                    )
                })
                .collect(),
            trace_id: call.trace_id.clone(),
            parameters: BTreeMap::new(),
            operation: operation.to_string(),
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
            operation = %record.operation,
            "control call"
        );
        if record.allowed && !record.dry_run && record.code == "OK" {
            self.controller.journal.record(journal_event(&record));
        }
        if let Err(err) = self.audit.append(&record).await {
            warn!(%err, audit_id = %record.id, "audit entry not stored (it is in the log above)");
        }
    }

    pub(super) async fn list_trail(
        &self,
        req: &pb::ListAuditRequest,
    ) -> Result<pb::ListAuditResponse, ApiError> {
        if !req.action.is_empty() && !ACTIONS.contains(&req.action.as_str()) {
            return Err(ApiError::invalid(
                "action",
                format!(
                    "unknown action {:?}; one of: {}",
                    req.action,
                    ACTIONS.join(", ")
                ),
            ));
        }
        let since = req.since.map(time_of).transpose()?;
        let until = req.until.map(time_of).transpose()?;
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            return Err(ApiError::invalid("until", "must be after `since`"));
        }
        let target = if req.worker.is_empty() || req.worker.starts_with("workers/") {
            req.worker.clone()
        } else {
            let snapshot = self.fleet.snapshot();
            snapshot
                .resolve(&req.worker)
                .map(|w| w.key.resource_name())
                .unwrap_or_else(|_| req.worker.clone())
        };
        let fp = paging::fingerprint(&[
            target.as_bytes(),
            req.actor.as_bytes(),
            req.action.as_bytes(),
            req.request_id.as_bytes(),
            req.operation.as_bytes(),
            req.outcome.as_bytes(),
            format!("{since:?}{until:?}").as_bytes(),
        ]);
        let cursor = paging::decode(&req.page_token, fp)?;
        let limit = paging::page_size(req.page_size);
        let query = AuditQuery {
            target,
            actor: req.actor.clone(),
            action: req.action.clone(),
            code: req.outcome.clone(),
            request_id: req.request_id.clone(),
            operation: req.operation.clone(),
            since,
            until,
            before_seq: cursor.map(|c| c.rank),
            limit: limit + 1,
        };
        let mut records = self
            .audit
            .list(&query)
            .await
            .map_err(|e| ApiError::Unavailable {
                dependency: "store",
                reason: e.to_string(),
            })?;
        let next_page_token = if records.len() > limit {
            records.truncate(limit);
            let last = records.last().map_or(0, |r| r.seq);
            paging::encode(
                fp,
                Cursor {
                    rank: last,
                    name: String::new(),
                },
            )
        } else {
            String::new()
        };
        Ok(pb::ListAuditResponse {
            entries: records.iter().map(convert::audit_entry).collect(),
            next_page_token,
            durable: self.audit.durable(),
        })
    }
}

fn time_of(t: prost_types::Timestamp) -> Result<std::time::SystemTime, ApiError> {
    let secs = u64::try_from(t.seconds).map_err(|_| ApiError::invalid("since", "before 1970"))?;
    let nanos = u32::try_from(t.nanos).map_err(|_| ApiError::invalid("since", "bad nanos"))?;
    Ok(std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos))
}

/// A control call as a history event (what ListEvents shows beside the workers' own): the
/// verb, who, and the per-target outcomes. Restarts are also recorded per target as they
/// finish (`control::long`), which is what the fleet summary counts.
fn journal_event(record: &AuditRecord) -> warden_core::history::HistoryEvent {
    use warden_core::history::{ATTR_ACTION, AttrValue, EventKind, HistoryEvent, Severity};
    let worker = match record.targets.as_slice() {
        [one] => warden_core::WorkerKey::parse(one),
        _ => None,
    };
    let counts = record
        .counts
        .iter()
        .map(|(k, n)| format!("{n} {}", k.to_lowercase()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut attributes = vec![
        (ATTR_ACTION.into(), AttrValue::String(record.action.clone())),
        ("actor".into(), AttrValue::String(record.actor.clone())),
        ("audit_id".into(), AttrValue::String(record.id.clone())),
    ];
    if !record.request_id.is_empty() {
        attributes.push((
            "request_id".into(),
            AttrValue::String(record.request_id.clone()),
        ));
    }
    HistoryEvent {
        at: record.time,
        kind: EventKind::Control,
        severity: Severity::Info,
        worker,
        group: None,
        message: format!(
            "{} by {} on {} target(s){}{}",
            record.action,
            record.actor,
            record.targets.len(),
            if counts.is_empty() {
                String::new()
            } else {
                format!(": {counts}")
            },
            if record.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", record.reason)
            }
        ),
        attributes,
    }
}
