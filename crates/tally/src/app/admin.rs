//! The admin listener: liveness, readiness and metrics, on their own port so probes and
//! scrapes never collide with ids and can be firewalled apart from the public port. Shared by
//! `serve` (readiness follows the store) and `web` (readiness follows the API).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use super::health::Health;
use crate::http::error::ApiError;

#[derive(Clone)]
pub struct AdminState {
    pub health: Health,
    pub metrics: PrometheusHandle,
    /// What readiness follows, for the `/readyz` body: ("store", "redis"), ("api", url)…
    pub dependency: (&'static str, String),
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found() })
        .with_state(state)
}

/// 200 while the process serves requests at all; a restart would not help otherwise.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 only when the dependency answered its last probe and the process is not draining.
async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let (up, draining) = (state.health.dependency_up(), state.health.is_draining());
    let status = if up && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let (name, kind) = &state.dependency;
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "not ready" },
        *name: { "kind": kind, "up": up },
        "draining": draining,
    });
    (status, Json(body))
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
