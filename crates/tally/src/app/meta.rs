//! `GET /`: what this service is. Load balancers that health-check `/` on the serving port
//! get 200 here; it is not a counter.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::http::error::ApiError;

pub fn routes() -> Router {
    Router::new()
        .route(
            "/",
            get(info).fallback(|| async { ApiError::method_not_allowed("GET, HEAD") }),
        )
        .fallback(|| async { ApiError::not_found() })
}

async fn info() -> Json<Value> {
    Json(json!({
        "service": "tally",
        "version": env!("CARGO_PKG_VERSION"),
        "endpoints": {
            "increment": "GET /{id}",
            "increment_legacy": "GET /count/{id}",
            "read": "GET /api/v1/counters/{id}",
            "messages": "GET|POST /api/v1/messages"
        }
    }))
}
