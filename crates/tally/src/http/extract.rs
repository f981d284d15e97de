//! Extractors whose rejections are JSON errors like every other client mistake, and the one
//! mapping of body-read failures (too large: 413, too slow: 408).

use axum::extract::rejection::{BytesRejection, FormRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// `axum::extract::Path`, rejecting with a JSON 400.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|e: PathRejection| ApiError::new(e.status(), e.body_text()))
    }
}

/// `axum::extract::Query`, rejecting with a JSON 400.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|e: QueryRejection| ApiError::new(e.status(), e.body_text()))
    }
}

/// `axum::extract::Form`, rejecting with a JSON error (415 for another content type, 413, 408).
pub struct Form<T>(pub T);

impl<T, S> FromRequest<S> for Form<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Form::<T>::from_request(request, state).await {
            Ok(axum::extract::Form(value)) => Ok(Self(value)),
            Err(FormRejection::BytesRejection(e)) => Err(body_error(&e)),
            Err(e) => Err(ApiError::new(e.status(), e.body_text())),
        }
    }
}

/// Why a body could not be read, as the client should hear it.
pub fn body_error(rejection: &BytesRejection) -> ApiError {
    use std::error::Error as _;
    let slow = rejection
        .source()
        .is_some_and(crate::listener::body_timed_out);
    match rejection.status() {
        _ if slow => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive within the request deadline",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is too large",
        ),
        status => ApiError::new(status, "could not read the request body"),
    }
}

/// The last line of defence: an error answer that is not JSON (axum's own 405 for a route
/// without a fallback, say) gets `{"error": "<reason>"}` with the same status. HTML pages of the
/// web tier are left alone. `middleware::ObserveLayer` calls it on every answer: one comparison for
/// a success.
pub fn json_error_body(response: &mut Response) {
    let status = response.status();
    if status.as_u16() < 400 {
        return;
    }
    let plain = match response.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(v) => v.as_bytes().starts_with(b"text/plain"),
    };
    if !plain {
        return;
    }
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let mut json = ApiError::new(status, reason).into_response();
    // Keep what the original said about retrying or allowed methods.
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = response.headers_mut().remove(&name) {
            json.headers_mut().insert(name, value);
        }
    }
    json.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    *response = json;
}

pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// The optional `Idempotency-Key` header: 1–255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    // A name, not a `&str`: lookups by string parse the name each time.
    static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(format!(
            "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters"
        ))
    };
    let key = value.to_str().map_err(|_| bad())?;
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES || !visible {
        return Err(bad());
    }
    Ok(Some(key))
}

/// 415 unless the body is declared as JSON.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ))
    }
}
