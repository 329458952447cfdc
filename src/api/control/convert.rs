//! Operations, outcomes and audit records to and from their contract messages.
use tonic::Code;
use warden_core::{
    audit::AuditRecord,
    operations::{Operation, OperationState, Outcome},
};

use crate::{api::convert::timestamp, control::TargetResult, proto::v1 as pb};

pub fn outcome(o: Outcome) -> pb::OutcomeCode {
    match o {
        Outcome::Applied => pb::OutcomeCode::Applied,
        Outcome::WouldApply => pb::OutcomeCode::WouldApply,
        Outcome::Skipped => pb::OutcomeCode::Skipped,
        Outcome::NotAlive => pb::OutcomeCode::NotAlive,
        Outcome::Locked => pb::OutcomeCode::Locked,
        Outcome::Throttled => pb::OutcomeCode::Throttled,
        Outcome::NotSupported => pb::OutcomeCode::NotSupported,
        Outcome::Failed => pb::OutcomeCode::Failed,
        Outcome::Unknown => pb::OutcomeCode::Unknown,
        Outcome::Cordoned => pb::OutcomeCode::Cordoned,
        Outcome::Pending => pb::OutcomeCode::Pending,
        Outcome::Running => pb::OutcomeCode::Running,
        Outcome::Cancelled => pb::OutcomeCode::Cancelled,
    }
}

pub fn state(s: OperationState) -> pb::OperationState {
    match s {
        OperationState::Pending => pb::OperationState::Pending,
        OperationState::Running => pb::OperationState::Running,
        OperationState::Succeeded => pb::OperationState::Succeeded,
        OperationState::Failed => pb::OperationState::Failed,
        OperationState::Cancelled => pb::OperationState::Cancelled,
        OperationState::PartiallySucceeded => pb::OperationState::PartiallySucceeded,
    }
}

pub fn state_from(s: pb::OperationState) -> Option<OperationState> {
    Some(match s {
        pb::OperationState::Unspecified => return None,
        pb::OperationState::Pending => OperationState::Pending,
        pb::OperationState::Running => OperationState::Running,
        pb::OperationState::Succeeded => OperationState::Succeeded,
        pb::OperationState::Failed => OperationState::Failed,
        pb::OperationState::Cancelled => OperationState::Cancelled,
        pb::OperationState::PartiallySucceeded => OperationState::PartiallySucceeded,
    })
}

pub fn target_outcome(r: &TargetResult) -> pb::TargetOutcome {
    pb::TargetOutcome {
        worker: r.worker.clone(),
        code: outcome(r.code).into(),
        message: r.message.clone(),
    }
}

pub fn operation(op: &Operation) -> pb::Operation {
    pb::Operation {
        name: op.name.clone(),
        verb: op.verb.clone(),
        state: state(op.state).into(),
        create_time: Some(timestamp(op.create_time)),
        update_time: Some(timestamp(op.update_time)),
        end_time: op.end_time.map(timestamp),
        actor: op.actor.clone(),
        reason: op.reason.clone(),
        dry_run: op.dry_run,
        request_id: op.request_id.clone(),
        targets: op
            .targets
            .iter()
            .map(|t| pb::TargetProgress {
                worker: t.worker.clone(),
                code: outcome(t.code).into(),
                message: t.message.clone(),
                update_time: Some(timestamp(t.update_time)),
                group: t.group.clone(),
                instance: t.instance.clone(),
            })
            .collect(),
        done: op.done() as u32,
        total: op.total() as u32,
        audit_id: op.audit_id.clone(),
        revision: op.revision,
        message: op.message.clone(),
    }
}

pub fn role(name: &str) -> pb::Role {
    match name {
        "viewer" => pb::Role::Viewer,
        "operator" => pb::Role::Operator,
        "admin" => pb::Role::Admin,
        _ => pb::Role::Unspecified,
    }
}

pub fn audit_entry(r: &AuditRecord) -> pb::AuditEntry {
    pb::AuditEntry {
        id: r.id.clone(),
        time: Some(timestamp(r.time)),
        actor: r.actor.clone(),
        role: role(&r.role).into(),
        action: r.action.clone(),
        targets: r.targets.clone(),
        reason: r.reason.clone(),
        dry_run: r.dry_run,
        request_id: r.request_id.clone(),
        allowed: r.allowed,
        outcome: Some(pb::AuditOutcome {
            code: r.code.clone(),
            message: r.message.clone(),
            counts: r
                .counts
                .iter()
                .filter_map(|(name, n)| {
                    Some(pb::OutcomeCount {
                        code: outcome(Outcome::from_name(name)?).into(),
                        count: *n,
                    })
                })
                .collect(),
        }),
        trace_id: r.trace_id.clone(),
        parameters: r.parameters.clone().into_iter().collect(),
        service: r.service.clone(),
        operation: r.operation.clone(),
        target_outcomes: r
            .outcomes
            .iter()
            .map(|(worker, code, message)| pb::TargetOutcome {
                worker: worker.clone(),
                code: Outcome::from_name(code)
                    .map(outcome)
                    .unwrap_or(pb::OutcomeCode::Unspecified)
                    .into(),
                message: message.clone(),
            })
            .collect(),
    }
}

/// The gRPC status code's canonical name, as the audit trail records it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
