//! Every error answer is JSON: `{"error": "..."}` with a status that tells the client what to do.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    allow: Option<&'static str>,
    /// Seconds for Retry-After: 1 for a 503 unless said otherwise.
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            allow: None,
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
        }
    }

    /// 429: this client sent more than its rate; it may send again after `wait`.
    pub fn rate_limited(wait: std::time::Duration) -> Self {
        Self {
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests from this client; retry later",
            )
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "no such route")
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method not allowed; this route accepts {allow}"),
            )
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Unavailable { kind, detail } => {
                // The detail goes to the log, not to the client: it names internal hosts.
                tracing::warn!(kind = %kind, detail = %detail, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unavailable; retry later",
                )
            }
            StoreError::IdempotencyConflict => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            StoreError::NotACounter | StoreError::Overflow => {
                Self::new(StatusCode::CONFLICT, e.to_string())
            }
            StoreError::Full => {
                tracing::warn!(kind = "full", "store full: a write was refused");
                // No Retry-After: retrying soon will not help, and a storm of retries would
                // only add load. Existing counters keep counting (see counters::redis).
                Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "the store is full and takes no new data (new ids, messages, jobs, \
                     idempotency records) until space is freed; existing counters still count",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
