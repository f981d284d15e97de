//! One layer around every public request: a request id (the caller's `X-Request-Id` when it is
//! sane, else a new one, echoed back), a span of the caller's W3C trace (`telemetry::trace`),
//! one structured access-log line, and the HTTP metrics.
//! Oversized headers are refused with 431 before any handler runs; an error answer that is not
//! JSON is made JSON.
//! Metrics use the route template (`/{id}`), never the raw path, and fixed sets of methods and
//! statuses, so clients cannot explode label cardinality.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};

use super::error::ApiError;
use crate::trace::{self, TraceContext, TRACEPARENT, TRACESTATE};

/// A name, not a `&str`: lookups by string parse the name each time.
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Far above what browsers and load balancers send, far below hyper's ~400 KB buffer limit.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
const MAX_REQUEST_ID_BYTES: usize = 128;

/// The layer, for `Router::layer`. Written out as a `tower` service rather than with
/// `axum::middleware::from_fn`: that one boxes the middleware's future and a clone of the inner
/// service on every request, which cost 1,200–1,900 instructions per request on either store
/// (callgrind, bench/README.md, "The edge layer as a tower service").
#[derive(Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
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
        // This span is the parent of whatever the request calls: the proxy and the API client
        // take its `traceparent` from the task's scope (`trace::outgoing`), the job queue too.
        // The request's own headers stay as the caller sent them.
        let span = TraceContext::continue_from(
            headers.get(&TRACEPARENT).map(HeaderValue::as_bytes),
            headers.get(&TRACESTATE),
        );
        let header_bytes: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        let seen = Seen {
            started,
            method: request.method().clone(),
            // MatchedPath is an Arc inside: cloning it costs no allocation.
            matched: request.extensions().get::<MatchedPath>().cloned(),
            request_id,
            span: span.clone(),
        };
        let answer = if header_bytes > MAX_HEADER_BYTES {
            let refusal = ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "request headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"
                ),
            );
            Answer::Refused {
                response: Some(refusal.into_response()),
            }
        } else {
            // The inner service's future does its work when polled, inside the span's scope.
            Answer::Running {
                future: trace::scoped(span, self.inner.call(request)),
            }
        };
        ObserveFuture {
            answer,
            seen: Some(seen),
        }
    }
}

pin_project! {
    pub struct ObserveFuture<F> {
        #[pin]
        answer: Answer<F>,
        seen: Option<Seen>,
    }
}

pin_project! {
    #[project = AnswerProj]
    enum Answer<F> {
        Running { #[pin] future: TaskLocalFuture<TraceContext, F> },
        Refused { response: Option<Response> },
    }
}

impl<F> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.answer.project() {
            AnswerProj::Running { future } => match ready!(future.poll(cx)) {
                Ok(mut response) => {
                    super::extract::json_error_body(&mut response);
                    response
                }
                Err(never) => match never {},
            },
            AnswerProj::Refused { response } => response.take().expect("polled after it ended"),
        };
        this.seen
            .take()
            .expect("polled after it ended")
            .record(&mut response);
        Poll::Ready(Ok(response))
    }
}

/// What the layer saw of a request, for its log line, metrics and span once it is answered.
struct Seen {
    started: Instant,
    method: Method,
    matched: Option<MatchedPath>,
    request_id: HeaderValue,
    span: TraceContext,
}

impl Seen {
    fn record(self, response: &mut Response) {
        let elapsed = self.started.elapsed();
        let status = response.status().as_u16();
        let route = self
            .matched
            .as_ref()
            .map_or("unmatched", MatchedPath::as_str);
        crate::metrics::http_request(route, &self.method, status, elapsed);
        if trace::export::enabled() {
            export_span(
                &self.span,
                &self.method,
                self.matched.as_ref(),
                status,
                &self.request_id,
            );
        }
        // The ids are formatted only for a line that is written.
        if crate::telemetry::access_enabled() {
            crate::telemetry::access(&crate::telemetry::AccessEntry {
                method: self.method.as_str(),
                route,
                status,
                latency: elapsed,
                request_id: self.request_id.to_str().unwrap_or_default(),
                trace_id: self.span.trace_id_hex().as_str(),
                span_id: self.span.span_id_hex().as_str(),
            });
        }
        response.headers_mut().insert(&REQUEST_ID, self.request_id);
    }
}

/// The request's server span, named and described as the OpenTelemetry HTTP conventions ask
/// (docs/monitoring.md): `GET /{id}`, or the method alone when no route matched.
fn export_span(
    span: &TraceContext,
    method: &Method,
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
