//! The guestbook API: `POST /api/v1/messages`, `GET /api/v1/messages?limit=N`,
//! `GET /api/v1/messages/{id}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::wire::{MessageJson, MessagePage};
use super::{GuestbookApi, MessageId};
use crate::http::error::ApiError;
use crate::http::extract::{body_error, idempotency_key, require_json, Path, Query};
use crate::store::Idempotency;

type AppState = Arc<GuestbookApi>;

pub const MAX_BODY_BYTES: usize = 16 * 1024;
pub const MAX_TEXT_CHARS: usize = 500;
/// The original guestbook's MAX_MSG_GET.
pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 100;

pub fn routes(api: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/messages",
            get(list)
                .post(post)
                .fallback(|| async { ApiError::method_not_allowed("GET, HEAD, POST") })
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .route(
            "/api/v1/messages/{id}",
            get(show).fallback(|| async { ApiError::method_not_allowed("GET, HEAD") }),
        )
        .with_state(api)
}

async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        ),
        _ => body_error(&e),
    })?;
    let text = parse_text(&body).map_err(ApiError::bad_request)?;
    let key = idempotency_key(&headers)?;
    let idem = key.map(|key| Idempotency {
        key,
        ttl: state.idempotency_ttl,
    });
    let posted = state
        .store
        .post_message(&text, idem, state.request_timeout)
        .await?;
    let location = format!("/api/v1/messages/{}", posted.message.id);
    let mut response = (
        StatusCode::CREATED,
        Json(MessageJson::from(&posted.message)),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    if posted.replayed {
        crate::metrics::idempotent_replay();
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The `text` of a post body: CRLF folded to LF (what browsers send from a textarea), trimmed,
/// 1–500 characters, no control characters but newlines.
pub fn parse_text(body: &[u8]) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let object = value.as_object().ok_or("the body must be a JSON object")?;
    let text = match object.get("text") {
        None => return Err("missing field: text".into()),
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err("text must be a string".into()),
    };
    let text = text.replace("\r\n", "\n");
    let text = text.trim();
    if text.is_empty() {
        return Err("text is empty".into());
    }
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(format!(
            "text is {chars} characters; the limit is {MAX_TEXT_CHARS}"
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err("text must not contain control characters other than newlines".into());
    }
    Ok(text.to_owned())
}

async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}"
                ))
            })?,
    };
    let before = match query.get("before") {
        None => None,
        // Nothing is older than 0-0, and Redis refuses it as an exclusive bound.
        Some(raw) => Some(
            raw.parse::<MessageId>()
                .ok()
                .filter(|id| *id > MessageId { millis: 0, seq: 0 })
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "before must be a message id after 0-0, like 1700000000000-0",
                    )
                })?,
        ),
    };
    let messages = state
        .store
        .list_messages(limit, before, state.request_timeout)
        .await?;
    // A full page may have more behind it: `next` is the cursor of the following page.
    let next = (messages.len() == limit)
        .then(|| messages.last().map(|m| m.id.clone()))
        .flatten();
    let messages = messages.iter().map(MessageJson::from).collect();
    Ok(Json(MessagePage { messages, next }).into_response())
}

async fn show(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id: MessageId = raw
        .parse()
        .map_err(|_| ApiError::bad_request("a message id looks like 1700000000000-0"))?;
    match state.store.get_message(id, state.request_timeout).await? {
        Some(message) => Ok(Json(MessageJson::from(&message)).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "no such message")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        assert_eq!(parse_text(br#"{"text":"  hi  "}"#).unwrap(), "hi");
        assert_eq!(parse_text(b"{\"text\":\"a\\r\\nb\"}").unwrap(), "a\nb");
        assert_eq!(
            parse_text(&format!(r#"{{"text":"{}"}}"#, "é".repeat(500)).into_bytes())
                .unwrap()
                .chars()
                .count(),
            500
        );
        let cases: [(&[u8], &str); 7] = [
            (b"{", "malformed JSON"),
            (b"[1]", "JSON object"),
            (b"{}", "missing field: text"),
            (br#"{"text":5}"#, "must be a string"),
            (br#"{"text":"   "}"#, "empty"),
            (br#"{"text":"a\u0007"}"#, "control"),
            (br#"{"text":"a\tb"}"#, "control"),
        ];
        for (body, why) in cases {
            let err = parse_text(body).unwrap_err();
            assert!(
                err.contains(why),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
        let long = format!(r#"{{"text":"{}"}}"#, "x".repeat(501));
        assert!(parse_text(long.as_bytes())
            .unwrap_err()
            .contains("limit is 500"));
    }
}
