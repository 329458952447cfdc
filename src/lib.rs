//! warden: a control plane for fleets of background workers, served over gRPC.
//!
//! Data flows one way: adapters (`celery`) observe the broker and send observations to the
//! `fleet` owner, which keeps the live state; the `api` services read its snapshots.
#![forbid(unsafe_code)]

pub mod alerting;
pub mod api;
pub mod baselines;
pub mod cli;
pub mod cli_control;
pub mod config;
pub mod control;
pub mod history;
pub mod http;
pub mod logline;
pub mod proto;
pub mod recovery;
pub mod server;
pub mod telemetry;

/// The layers, re-exported under the names the binary's modules use.
pub use warden_celery as celery;
pub use warden_core as fleet;
pub use warden_metrics as metrics;
pub use warden_resources as resources;
