//! The integration tests: one binary (every file under `tests/` would otherwise link the
//! whole dependency graph again), one module per area. They run against real parts: Redis
//! servers and Celery workers started on free ports, the real grpcurl, a generated Python
//! client.
mod support;

mod alerting;
mod alerts_api;
mod auth;
mod broker_outage;
mod broker_timeouts;
mod broker_url;
mod celery_versions;
mod cli;
mod clocked;
mod control;
mod demo;
mod deploy;
mod discovery;
mod event_backpressure;
mod exporter;
mod forget;
mod health;
mod history;
mod hostile_flood;
mod hostile_input;
mod hostile_replies;
mod interop;
mod kubernetes;
mod lifecycle;
mod local_control;
mod local_runtime;
mod otel;
mod queues;
mod readiness;
mod recovery;
mod refresh_coalescing;
mod resources;
mod scale_interop;
mod streams;
mod streams_control;
mod streams_janitor;
mod task_stats;
mod tls;
mod validation;
mod watch_epochs;
mod watch_resync;
