//! The API's error type and its one mapping to gRPC status codes.
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is wrong; `field` is its path in the request (e.g. `filter.name_glob`).
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{backend} unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Unimplemented(&'static str),
    /// Details are logged, never sent: they may name internals.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        let message = err.to_string();
        match err {
            ApiError::InvalidArgument { field, reason } => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request_violation(field, reason),
            ),
            ApiError::NotFound(_) => Status::not_found(message),
            ApiError::FailedPrecondition(_) => Status::failed_precondition(message),
            ApiError::PermissionDenied(_) => Status::permission_denied(message),
            ApiError::Unavailable { .. } => Status::unavailable(message),
            ApiError::Unimplemented(_) => Status::unimplemented(message),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::internal(message)
            }
        }
    }
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
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let status: Status = ApiError::Internal("redis://:pw@host".into()).into();
        assert!(!status.message().contains("pw"));
    }
}
