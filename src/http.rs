//! The small HTTP side port: `/healthz` (the process is up), `/readyz` (the broker answers)
//! and `/metrics` (OpenMetrics text).
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::sync::watch;

use crate::{fleet::BrokerStatus, metrics::Metrics};

#[derive(Clone)]
struct HttpState {
    broker: watch::Receiver<BrokerStatus>,
    metrics: Metrics,
}

pub fn router(broker: watch::Receiver<BrokerStatus>, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(HttpState { broker, metrics })
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

async fn metrics_text(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
