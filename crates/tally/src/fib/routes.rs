//! The Fibonacci job API: `POST /api/v1/fib`, `GET /api/v1/fib/{index}`,
//! `GET /api/v1/fib/values`, `GET /api/v1/fib/indexes`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::submissions::{Submissions, SubmitError};
use super::{FibApi, FibStatus};
use crate::http::error::ApiError;
use crate::http::extract::{body_error, idempotency_key, require_json, Path, Query};
use crate::postgres::DatabaseError;
use crate::redis::RedisClient;

type AppState = Arc<FibApi>;

pub fn routes(api: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/fib",
            post(submit)
                .fallback(|| async { ApiError::method_not_allowed("POST") })
                .layer(DefaultBodyLimit::max(16 * 1024)),
        )
        .route("/api/v1/fib/values", get(values))
        .route("/api/v1/fib/indexes", get(indexes))
        .route("/api/v1/fib/{index}", get(status))
        .with_state(api)
}

impl From<DatabaseError> for ApiError {
    fn from(e: DatabaseError) -> Self {
        // The detail goes to the log, not to the client: it names internal hosts.
        tracing::warn!(error = %e, "job database unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the job database is unavailable; retry later",
        )
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Database(e) => e.into(),
            SubmitError::Queue(e) => e.into(),
            SubmitError::IdempotencyConflict => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
        }
    }
}

/// The job system needs Redis (queue, values) and Postgres (submissions).
fn parts(state: &AppState) -> Result<(&RedisClient, &Submissions), ApiError> {
    let redis = state.queue.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Fibonacci jobs need Redis (TALLY_REDIS_URL or TALLY_REDIS_SENTINELS)",
        )
    })?;
    let db = state.database.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Fibonacci jobs need Postgres (TALLY_DATABASE_URL)",
        )
    })?;
    Ok((redis, db))
}

/// The `index` of a submission body: a whole number, checked against the bound.
pub fn parse_index(body: &[u8], max: u32) -> Result<u32, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let index = value
        .get("index")
        .ok_or_else(|| ApiError::bad_request("missing field: index"))?;
    let out_of_range = || {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("index must be a whole number from 0 to {max}"),
        )
    };
    match index.as_i64() {
        Some(n) if (0..=i64::from(max)).contains(&n) => Ok(n as u32),
        Some(_) => Err(out_of_range()),
        None if index.is_number() => Err(out_of_range()),
        None => Err(ApiError::bad_request("index must be a number")),
    }
}

async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = body.map_err(|e| body_error(&e))?;
    let index = parse_index(&body, state.max_index)?;
    let key = idempotency_key(&headers)?;
    let (redis, db) = parts(&state)?;
    let deadline = state.request_timeout;
    let already = redis.fib_status(index, deadline).await?;
    let idem = key.map(|k| (k, state.idempotency_ttl));
    if let FibStatus::Done(value) = already {
        // Known already: record that it was asked for again, nothing to compute.
        db.submit(index, idem, deadline, || async { Ok(()) })
            .await?;
        return Ok(done(index, value));
    }
    let recorded = db
        .submit(index, idem, deadline, || async {
            redis.enqueue_fib(index, deadline).await.map(|_| ())
        })
        .await?;
    if !recorded {
        // An Idempotency-Key replay: answer with the job's state now, queue nothing.
        return match redis.fib_status(index, deadline).await? {
            FibStatus::Done(value) => Ok(done(index, value)),
            _ => Ok(pending(index)),
        };
    }
    Ok(pending(index))
}

fn done(index: u32, value: String) -> Response {
    Json(json!({ "index": index, "status": "done", "value": value })).into_response()
}

fn pending(index: u32) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({ "index": index, "status": "pending" })),
    )
        .into_response()
}

async fn status(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let index: u32 = raw
        .parse()
        .map_err(|_| ApiError::bad_request("index must be a whole number"))?;
    let redis = parts(&state)?.0;
    match redis.fib_status(index, state.request_timeout).await? {
        FibStatus::Done(value) => Ok(done(index, value)),
        FibStatus::Pending => Ok(pending(index)),
        FibStatus::Unknown => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this index was never requested",
        )),
    }
}

/// `?offset=&limit=` with bounds, for both listings.
fn page(
    query: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<(usize, usize), ApiError> {
    let number = |name: &str, default: usize, range: std::ops::RangeInclusive<usize>| match query
        .get(name)
    {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{name} must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ))
            }),
    };
    Ok((
        number("offset", 0, 0..=1_000_000)?,
        number("limit", default, 1..=max)?,
    ))
}

async fn values(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (offset, limit) = page(&query, 100, 1000)?;
    let redis = parts(&state)?.0;
    let values = redis
        .fib_values(offset, limit, state.request_timeout)
        .await?;
    let list: Vec<_> = values
        .into_iter()
        .map(|(index, value)| json!({ "index": index, "value": value }))
        .collect();
    Ok(Json(json!({ "values": list })).into_response())
}

async fn indexes(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (offset, limit) = page(&query, 100, 1000)?;
    let db = parts(&state)?.1;
    let rows = db
        .indexes(limit as i64, offset as i64, state.request_timeout)
        .await?;
    Ok(Json(json!({ "indexes": rows })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        assert_eq!(parse_index(br#"{"index":0}"#, 10).unwrap(), 0);
        assert_eq!(parse_index(br#"{"index":10}"#, 10).unwrap(), 10);
        for (body, status) in [
            (&br#"{"index":11}"#[..], 422),
            (br#"{"index":-1}"#, 422),
            (br#"{"index":1.5}"#, 422),
            (br#"{"index":1e300}"#, 422),
            (br#"{"index":"5"}"#, 400),
            (br#"{}"#, 400),
            (br#"{"#, 400),
        ] {
            let err = parse_index(body, 10).unwrap_err();
            assert_eq!(
                err.status().as_u16(),
                status,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let err = parse_index(br#"{"index":11}"#, 10).unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
