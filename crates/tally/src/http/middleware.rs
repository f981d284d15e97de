//! One layer around every public request: a request id (the caller's `X-Request-Id` when it is
//! sane, else a new one, echoed back), a span of the caller's W3C trace (`telemetry::trace`),
//! one structured access-log line, and the HTTP metrics.
//! Oversized headers are refused with 431 before any handler runs; an error answer that is not
//! JSON is made JSON.
//! Metrics use the route template (`/{id}`), never the raw path, and fixed sets of methods and
//! statuses, so clients cannot explode label cardinality.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::trace::{self, TraceContext, TRACEPARENT, TRACESTATE};

/// A name, not a `&str`: lookups by string parse the name each time.
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Far above what browsers and load balancers send, far below hyper's ~400 KB buffer limit.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
const MAX_REQUEST_ID_BYTES: usize = 128;

pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| is_sane_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(new_request_id);
    // Handlers that call other services (the web tier's proxy) pass the same id along.
    request
        .headers_mut()
        .insert(&REQUEST_ID, request_id.clone());
    let headers = request.headers();
    // This span is the parent of whatever the request calls: the proxy and the API client take
    // its `traceparent` from the task's scope (`trace::outgoing`), the job queue too. The
    // request's own headers stay as the caller sent them.
    let span = TraceContext::continue_from(
        headers.get(&TRACEPARENT).map(HeaderValue::as_bytes),
        headers.get(&TRACESTATE),
    );
    let method = request.method().clone();
    // MatchedPath is an Arc inside: cloning it costs no allocation.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);

    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    let mut response = if header_bytes > MAX_HEADER_BYTES {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("request headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"),
        )
        .into_response()
    } else {
        let mut response = trace::scope(span.clone(), next.run(request)).await;
        super::extract::json_error_body(&mut response);
        response
    };

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    crate::metrics::http_request(route, &method, status, elapsed);
    if trace::export::enabled() {
        export_span(&span, &method, matched.as_ref(), status, &request_id);
    }
    // The ids are formatted only for a line that is written.
    if crate::telemetry::access_enabled() {
        crate::telemetry::access(&crate::telemetry::AccessEntry {
            method: method.as_str(),
            route,
            status,
            latency: elapsed,
            request_id: request_id.to_str().unwrap_or_default(),
            trace_id: span.trace_id_hex().as_str(),
            span_id: span.span_id_hex().as_str(),
        });
    }
    response.headers_mut().insert(&REQUEST_ID, request_id);
    response
}

/// The request's server span, named and described as the OpenTelemetry HTTP conventions ask
/// (docs/monitoring.md): `GET /{id}`, or the method alone when no route matched.
fn export_span(
    span: &TraceContext,
    method: &axum::http::Method,
    matched: Option<&MatchedPath>,
    status: u16,
    request_id: &HeaderValue,
) {
    use opentelemetry::KeyValue;
    // The conventions' name for a method outside the known set.
    let method = match crate::metrics::method_label(method) {
        "other" => "_OTHER",
        known => known,
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.response.status_code", i64::from(status)),
        KeyValue::new(
            "tally.request_id",
            request_id.to_str().unwrap_or_default().to_owned(),
        ),
    ];
    let name = match matched {
        Some(route) => {
            attributes.push(KeyValue::new("http.route", route.as_str().to_owned()));
            format!("{method} {}", route.as_str())
        }
        None if method == "_OTHER" => "HTTP".to_owned(),
        None => method.to_owned(),
    };
    let kind = opentelemetry::trace::SpanKind::Server;
    trace::export::span(span, name, kind, attributes, status >= 500);
}

fn is_sane_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_BYTES && id.iter().all(|b| b.is_ascii_graphic())
}

fn new_request_id() -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(id).expect("a UUID is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_and_printable() {
        assert!(is_sane_request_id(b"abc-123"));
        assert!(!is_sane_request_id(b""));
        assert!(!is_sane_request_id(b"has space"));
        assert!(!is_sane_request_id(&[b'a'; 129]));
        assert_eq!(new_request_id().len(), 36);
    }
}
