//! The gRPC services. Handlers validate, call the fleet, convert; nothing here talks to the
//! broker. Errors become `tonic::Status` in one place (`error`).
pub mod auth;
pub mod control;
pub mod convert;
pub mod error;
pub mod logs;
pub mod paging;
pub mod worker_health;

pub use error::ApiError;
