//! warden: a control plane for fleets of background workers, served over gRPC.
//!
//! Data flows one way: adapters (`celery`) observe the broker and send observations to the
//! `fleet` owner, which keeps the live state; the `api` services read its snapshots.
#![forbid(unsafe_code)]

pub mod api;
pub mod celery;
pub mod cli;
pub mod config;
pub mod fleet;
pub mod http;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod telemetry;
