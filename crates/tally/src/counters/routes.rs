//! The counter routes: `GET /{id}` and `GET /count/{id}` increment, `GET /api/v1/counters/{id}`
//! reads. Only GET increments: HEAD and the rest get 405, since a probe or a prefetch that
//! sends HEAD must not change a count.

use std::sync::Arc;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use serde::Serialize;

use super::{CounterId, CountersApi};
use crate::http::error::ApiError;
use crate::http::extract::idempotency_key;
use crate::store::Idempotency;

type AppState = Arc<CountersApi>;

pub fn routes(api: AppState) -> Router {
    Router::new()
        .route("/{id}", increment_route())
        .route("/count/{id}", increment_route())
        .route(
            "/api/v1/counters/{id}",
            get(read).fallback(|| async { ApiError::method_not_allowed("GET, HEAD") }),
        )
        .with_state(api)
}

fn increment_route() -> MethodRouter<AppState> {
    // axum answers HEAD with the GET handler unless HEAD has its own.
    get(increment)
        .head(|| async { ApiError::method_not_allowed("GET") })
        .fallback(|| async { ApiError::method_not_allowed("GET") })
}

#[derive(Serialize)]
struct CounterView<'a> {
    id: &'a str,
    count: i64,
}

async fn increment(
    State(state): State<AppState>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    // The request, not a `HeaderMap`: that extractor clones every header (two vectors and their
    // entries) for the one header read here.
    request: Request,
) -> Result<Response, ApiError> {
    let id = id_param(params)?;
    let key = idempotency_key(request.headers())?;
    let idem = key.map(|key| Idempotency {
        key,
        ttl: state.idempotency_ttl,
    });
    let done = state.store.incr(&id, idem, state.request_timeout).await?;
    // The hot path: a fixed shape, written directly rather than through serde or fmt.
    let mut body = String::with_capacity(32);
    body.push_str("{\"count\":");
    body.push_str(itoa::Buffer::new().format(done.count));
    body.push('}');
    let mut response =
        no_store(([(header::CONTENT_TYPE, "application/json")], body).into_response());
    if done.replayed {
        crate::metrics::idempotent_replay();
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn read(
    State(state): State<AppState>,
    params: Result<RawPathParams, RawPathParamsRejection>,
) -> Result<Response, ApiError> {
    let id = id_param(params)?;
    let count = state.store.get(&id, state.request_timeout).await?;
    Ok(no_store(
        Json(CounterView {
            id: id.as_str(),
            count,
        })
        .into_response(),
    ))
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The route's single `{id}` capture, percent-decoded by the router, then parsed.
fn id_param(params: Result<RawPathParams, RawPathParamsRejection>) -> Result<CounterId, ApiError> {
    let params = params
        .map_err(|_| ApiError::bad_request("id must be valid UTF-8 after percent-decoding"))?;
    let (_, raw) = params
        .iter()
        .next()
        .ok_or_else(|| ApiError::bad_request("missing id"))?;
    CounterId::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn idempotency_key_rules() {
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h).unwrap(), None);
        h.insert("idempotency-key", HeaderValue::from_static("abc-123"));
        assert_eq!(idempotency_key(&h).unwrap(), Some("abc-123"));
        h.insert("idempotency-key", HeaderValue::from_static("has space"));
        assert!(idempotency_key(&h).is_err());
        h.insert(
            "idempotency-key",
            HeaderValue::from_str(&"k".repeat(256)).unwrap(),
        );
        assert!(idempotency_key(&h).is_err());
    }
}
