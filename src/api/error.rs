//! The API's error type and its one mapping to gRPC status codes, auth included.
//!
//! Every status carries `google.rpc` details so that a program can act on it without parsing
//! the message: `ErrorInfo` (reason, domain `warden.dev`) always; `BadRequest` naming the field
//! for INVALID_ARGUMENT; `ResourceInfo` for NOT_FOUND; `PreconditionFailure` for
//! FAILED_PRECONDITION; `RetryInfo` for UNAVAILABLE and ABORTED.
use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, PreconditionViolation, StatusExt};

/// The `ErrorInfo.domain` of every warden error.
pub const DOMAIN: &str = "warden.dev";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is wrong; `field` is its path in the request (e.g. `filter.name_glob`).
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// A short name several workers (or groups) share; the candidates' resource names.
    #[error("invalid {field}: {name:?} is ambiguous; use one of: {}", candidates.join(", "))]
    Ambiguous {
        field: String,
        name: String,
        candidates: Vec<String>,
    },
    /// A page or resume token this server did not issue for this request.
    #[error("invalid {field}: {reason}")]
    BadToken { field: &'static str, reason: String },
    /// No such resource; `resource_type` is e.g. "warden.v1.Worker".
    #[error("{message}")]
    NotFound {
        resource_type: &'static str,
        name: String,
        message: String,
    },
    /// The system is not in a state that allows the call; `reason` is an UPPER_SNAKE code
    /// (e.g. `WORKER_ALIVE`), `subject` what it concerns.
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        subject: String,
        message: String,
    },
    /// `reason` is TOKEN_MISSING or TOKEN_UNKNOWN.
    #[error("{message}")]
    Unauthenticated {
        reason: &'static str,
        message: String,
    },
    #[error("role {required} required; {caller} has role {role}")]
    PermissionDenied {
        required: String,
        caller: String,
        role: String,
    },
    /// A dependency refused warden itself (e.g. Kubernetes RBAC forbids deleting pods); the
    /// message names the verb and resource to grant.
    #[error("{message}")]
    DependencyForbidden { message: String },
    /// A dependency is down; `dependency` names it ("broker", "kubernetes", "store").
    #[error("{dependency} unavailable: {reason}")]
    Unavailable {
        dependency: &'static str,
        reason: String,
    },
    /// The call conflicts with another in progress; `reason` is e.g. `TARGET_LOCKED` or
    /// `REQUEST_IN_PROGRESS`, `holder` the request id of the call in the way (if known).
    #[error("{message}")]
    Aborted {
        reason: &'static str,
        holder: String,
        message: String,
    },
    /// `reason` is e.g. `REQUEST_ID_REUSED`.
    #[error("{message}")]
    AlreadyExists {
        reason: &'static str,
        message: String,
    },
    /// Specified in the contract, built by a later capability (named in the message).
    #[error("not implemented yet: arrives with the {capability}")]
    Unimplemented { capability: &'static str },
}

/// A runtime's failure (the `Runtime` port) as the API says it: NotFound → NOT_FOUND,
/// NotSupported → FAILED_PRECONDITION `NOT_MANAGED`, PermissionDenied → PERMISSION_DENIED
/// naming what to grant, Unavailable → UNAVAILABLE naming the dependency.
impl From<warden_core::ports::PortError> for ApiError {
    fn from(err: warden_core::ports::PortError) -> Self {
        use warden_core::ports::PortError;
        match err {
            PortError::Unavailable { dependency, reason } => {
                ApiError::Unavailable { dependency, reason }
            }
            PortError::NotFound(name) => ApiError::worker_not_found(name),
            PortError::NotSupported(what) => ApiError::FailedPrecondition {
                reason: "NOT_MANAGED",
                subject: String::new(),
                message: what,
            },
            PortError::PermissionDenied(message) => ApiError::DependencyForbidden { message },
            PortError::Failed(reason) => ApiError::Unavailable {
                dependency: "runtime",
                reason,
            },
        }
    }
}

/// The alert engine's refusals as the API says them: a bad field → INVALID_ARGUMENT naming
/// it, an unknown alert or silence → NOT_FOUND with its resource type, a resolved alert →
/// FAILED_PRECONDITION `ALERT_RESOLVED`.
impl From<warden_alerts::AlertError> for ApiError {
    fn from(err: warden_alerts::AlertError) -> Self {
        use warden_alerts::AlertError;
        let message = err.to_string();
        match err {
            AlertError::InvalidArgument { field, message } => ApiError::InvalidArgument {
                field,
                reason: message,
            },
            AlertError::AlertNotFound(name) => ApiError::NotFound {
                resource_type: "warden.v1.Alert",
                name,
                message,
            },
            AlertError::SilenceNotFound(name) => ApiError::NotFound {
                resource_type: "warden.v1.Silence",
                name,
                message,
            },
            AlertError::AlertResolved(name) => ApiError::FailedPrecondition {
                reason: "ALERT_RESOLVED",
                subject: name,
                message,
            },
        }
    }
}

/// How long a client should wait before retrying an UNAVAILABLE call.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl ApiError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn unimplemented(capability: &'static str) -> Self {
        ApiError::Unimplemented { capability }
    }

    pub fn worker_not_found(name: impl Into<String>) -> Self {
        let name = name.into();
        ApiError::NotFound {
            resource_type: "warden.v1.Worker",
            message: format!("no worker named {name:?}"),
            name,
        }
    }

    /// The `ErrorInfo.reason`: a stable UPPER_SNAKE code per kind of error.
    fn reason(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument { .. } => "FIELD_INVALID",
            ApiError::Ambiguous { .. } => "AMBIGUOUS_NAME",
            ApiError::BadToken { .. } => "PAGE_TOKEN_INVALID",
            ApiError::NotFound { .. } => "RESOURCE_NOT_FOUND",
            ApiError::FailedPrecondition { reason, .. } => reason,
            ApiError::Unauthenticated { reason, .. } => reason,
            ApiError::PermissionDenied { .. } => "ROLE_INSUFFICIENT",
            ApiError::DependencyForbidden { .. } => "DEPENDENCY_FORBIDDEN",
            ApiError::Unavailable { .. } => "SOURCE_UNAVAILABLE",
            ApiError::Unimplemented { .. } => "NOT_IMPLEMENTED",
            ApiError::Aborted { reason, .. } => reason,
            ApiError::AlreadyExists { reason, .. } => reason,
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        let message = err.to_string();
        let mut metadata = HashMap::new();
        let mut details = ErrorDetails::new();
        let code = match &err {
            ApiError::InvalidArgument { field, reason } => {
                details.add_bad_request_violation(field.clone(), reason.clone());
                metadata.insert("field".to_string(), field.clone());
                Code::InvalidArgument
            }
            ApiError::Ambiguous {
                field, candidates, ..
            } => {
                details.add_bad_request_violation(
                    field.clone(),
                    format!("ambiguous; one of: {}", candidates.join(", ")),
                );
                metadata.insert("field".to_string(), field.clone());
                Code::InvalidArgument
            }
            ApiError::BadToken { field, reason } => {
                details.add_bad_request_violation(*field, reason.clone());
                metadata.insert("field".to_string(), field.to_string());
                Code::InvalidArgument
            }
            ApiError::NotFound {
                resource_type,
                name,
                ..
            } => {
                details.set_resource_info(*resource_type, name.clone(), "", message.clone());
                Code::NotFound
            }
            ApiError::FailedPrecondition {
                reason, subject, ..
            } => {
                details.set_precondition_failure(vec![PreconditionViolation::new(
                    *reason,
                    subject.clone(),
                    message.clone(),
                )]);
                Code::FailedPrecondition
            }
            ApiError::Unauthenticated { .. } => Code::Unauthenticated,
            ApiError::DependencyForbidden { .. } => Code::PermissionDenied,
            ApiError::PermissionDenied { required, .. } => {
                metadata.insert("required_role".to_string(), required.clone());
                Code::PermissionDenied
            }
            ApiError::Unavailable { dependency, .. } => {
                details.set_retry_info(Some(RETRY_AFTER));
                metadata.insert("source".to_string(), dependency.to_string());
                Code::Unavailable
            }
            ApiError::Aborted { holder, .. } => {
                details.set_retry_info(Some(RETRY_AFTER));
                if !holder.is_empty() {
                    metadata.insert("holder_request_id".to_string(), holder.clone());
                }
                Code::Aborted
            }
            ApiError::AlreadyExists { .. } => Code::AlreadyExists,
            ApiError::Unimplemented { capability } => {
                metadata.insert("capability".to_string(), capability.to_string());
                Code::Unimplemented
            }
        };
        details.set_error_info(err.reason(), DOMAIN, metadata);
        Status::with_error_details(code, message, details)
    }
}

/// The status that ends a stream at shutdown: clients retry it (with their resume token).
pub fn shutting_down() -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info("SHUTTING_DOWN", DOMAIN, HashMap::new());
    details.set_retry_info(Some(RETRY_AFTER));
    Status::with_error_details(Code::Unavailable, "warden is shutting down", details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field_in_message_and_details() {
        let status: Status = ApiError::invalid("page_size", "at most 1000").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("page_size"));
        let details = status.get_error_details();
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "page_size");
        let info = details.error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("FIELD_INVALID", DOMAIN)
        );
    }

    #[test]
    fn alert_engine_refusals_map_to_their_codes() {
        use warden_alerts::AlertError;
        let status: Status = ApiError::from(AlertError::InvalidArgument {
            field: "matchers[0].value".into(),
            message: "bad regex".into(),
        })
        .into();
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "matchers[0].value"
        );
        for (err, kind) in [
            (
                AlertError::AlertNotFound("alerts/x".into()),
                "warden.v1.Alert",
            ),
            (
                AlertError::SilenceNotFound("silences/x".into()),
                "warden.v1.Silence",
            ),
        ] {
            let status: Status = ApiError::from(err).into();
            assert_eq!(status.code(), Code::NotFound);
            assert_eq!(
                status
                    .get_error_details()
                    .resource_info()
                    .unwrap()
                    .resource_type,
                kind
            );
        }
        let status: Status = ApiError::from(AlertError::AlertResolved("alerts/x".into())).into();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "ALERT_RESOLVED"
        );
    }

    #[test]
    fn every_kind_carries_error_info_and_its_own_detail() {
        let status: Status = ApiError::worker_not_found("workers/celery/default/x@h").into();
        let details = status.get_error_details();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            details.resource_info().unwrap().resource_name,
            "workers/celery/default/x@h"
        );
        assert_eq!(details.error_info().unwrap().reason, "RESOURCE_NOT_FOUND");

        let status: Status = ApiError::FailedPrecondition {
            reason: "WORKER_ALIVE",
            subject: "workers/celery/default/x@h".into(),
            message: "alive".into(),
        }
        .into();
        let details = status.get_error_details();
        assert_eq!(
            details.precondition_failure().unwrap().violations[0].r#type,
            "WORKER_ALIVE"
        );
        assert_eq!(details.error_info().unwrap().reason, "WORKER_ALIVE");

        let status: Status = ApiError::Unavailable {
            dependency: "broker",
            reason: "connection refused".into(),
        }
        .into();
        let details = status.get_error_details();
        assert!(details.retry_info().is_some());
        assert_eq!(details.error_info().unwrap().metadata["source"], "broker");
        let status: Status = ApiError::unimplemented("history store").into();
        assert_eq!(status.code(), Code::Unimplemented);
        assert_eq!(
            status.get_error_details().error_info().unwrap().metadata["capability"],
            "history store"
        );
        let status = shutting_down();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.get_error_details().retry_info().is_some());
    }
}
