//! The admin listener: liveness, readiness and metrics, on their own port so probes and
//! scrapes never collide with ids and can be firewalled apart from the public port.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::AppState;

pub fn router(state: AppState) -> Router {
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

/// 200 only when the store answered its last ping and the process is not draining.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (store_up, draining) = (state.health.store_up(), state.health.is_draining());
    let status = if store_up && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "not ready" },
        "store": { "kind": state.store.kind(), "up": store_up },
        "draining": draining,
    });
    (status, Json(body))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
