//! The gRPC services. Handlers validate, call the core, convert; nothing here talks to the
//! broker. Errors become `tonic::Status` in one place (`error`), auth included.
pub mod alerts;
pub mod auth;
pub mod control;
pub mod convert;
pub mod error;
pub mod history;
pub mod logs;
pub mod paging;
pub mod streams_control;
pub mod watch_token;
pub mod worker_health;

pub use error::ApiError;
