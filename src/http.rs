//! The small HTTP side port: `/healthz` (the process is up), `/readyz` (the broker answers)
//! and `/metrics` (warden's own families and the fleet's, in celery-exporter's names).
//!
//! `/metrics` speaks Prometheus text 0.0.4 unless the scraper asks for OpenMetrics in its
//! `Accept` header (Prometheus does; curl and promtool do not).
use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::sync::watch;
use warden_metrics::fleet::{ExportOptions, Format};

use crate::{
    fleet::{BrokerStatus, Snapshot},
    metrics::Metrics,
};

#[derive(Clone)]
struct HttpState {
    broker: watch::Receiver<BrokerStatus>,
    metrics: Metrics,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    export: ExportOptions,
}

pub fn router(
    broker: watch::Receiver<BrokerStatus>,
    metrics: Metrics,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    export: ExportOptions,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(HttpState {
            broker,
            metrics,
            snapshots,
            export,
        })
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let status = state.broker.borrow().clone();
    if status.connected {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", status.reason),
        )
    }
}

async fn metrics_text(State(state): State<HttpState>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (format, content_type) = if openmetrics {
        (
            Format::OpenMetrics,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (Format::Text, "text/plain; version=0.0.4; charset=utf-8")
    };
    let snapshot = state.snapshots.borrow().clone();
    // Rendering a large fleet takes milliseconds: off the async workers.
    let metrics = state.metrics.clone();
    let export = state.export;
    let body =
        tokio::task::spawn_blocking(move || metrics.exposition(Some((&snapshot, export)), format))
            .await
            .unwrap_or_default();
    ([(header::CONTENT_TYPE, content_type)], body)
}
