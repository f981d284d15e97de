//! The web tier's routes: the page, its two form endpoints, static assets, and a proxy that
//! sends `/api/…` and the counter routes to the API tier, so one address serves the whole app.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::Router;

use super::api::{encode, with_trace, ApiClient, CallError};
use super::page::{render, Calculator, Page};
use crate::config::RateLimit;
use crate::http::extract::{Form, Query};
use crate::http::ApiError;
use crate::listener::{body_timed_out, Peer};

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");
const ICON: &str = include_str!("assets/icon.svg");
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Headers passed through the proxy, both ways. Hop-by-hop headers are never forwarded.
const FORWARDED: &[&str] = &[
    "content-type",
    "accept",
    "idempotency-key",
    "x-request-id",
    "location",
    "retry-after",
    "allow",
    "idempotent-replayed",
    "cache-control",
];

pub fn public_router(api: ApiClient, rate_limit: Option<&RateLimit>) -> Router {
    let routes = Router::new()
        .route("/", get(index))
        .route("/web/messages", post(post_message))
        .route("/web/counter", post(increment))
        .route("/web/fib", post(calculate))
        .route(
            "/static/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
        .route(
            "/static/app.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route("/static/icon.svg", get(|| asset("image/svg+xml", ICON)))
        // Browsers ask for it on their own; it must not become a counter named favicon.ico.
        .route(
            "/favicon.ico",
            get(|| async { Redirect::permanent("/static/icon.svg") }),
        )
        .route("/api/{*rest}", any(proxy))
        .route("/{id}", any(proxy))
        .route("/count/{id}", any(proxy))
        .fallback(|| async { ApiError::not_found() })
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn(security_headers));
    crate::http::with_edge_layers(routes, rate_limit).with_state(api)
}

/// A strict Content-Security-Policy (no inline script or style, nothing from elsewhere) and
/// the usual hardening headers, on every response.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
               connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "public, max-age=300"),
    ];
    (headers, body).into_response()
}

const DEFAULT_COUNTER: &str = "demo";

async fn index(
    State(api): State<ApiClient>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let counter_id = query
        .get("counter")
        .filter(|id| crate::counters::CounterId::parse(id).is_ok())
        .cloned()
        .unwrap_or_else(|| DEFAULT_COUNTER.to_owned());
    page(&api, counter_id, Problem::None).await
}

/// Something the user did that did not work, shown on the page with its status.
enum Problem {
    None,
    /// A post that was refused: the text (to show it back) and why.
    Post(String, String, StatusCode),
    /// A counter id that was refused, and why.
    Counter(String, StatusCode),
    /// A calculator submission that was refused, and why.
    Fib(String, StatusCode),
}

/// Renders the page: 503 when any part of it could not be fetched, else the problem's status.
async fn page(api: &ApiClient, counter_id: String, problem: Problem) -> Response {
    let (messages, count, fib) = tokio::join!(
        api.recent_messages(10),
        api.read_counter(&counter_id),
        api.fib_recent(10)
    );
    let api_unavailable = [messages.as_ref().err(), count.as_ref().err()]
        .into_iter()
        .any(|e| matches!(e, Some(CallError::Unavailable(_))));
    let status = match &problem {
        Problem::Post(_, _, status) | Problem::Counter(_, status) | Problem::Fib(_, status) => {
            *status
        }
        Problem::None if api_unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Problem::None => StatusCode::OK,
    };
    let (mut draft, mut counter_problem, mut fib_problem) = (None, None, None);
    match problem {
        Problem::None => {}
        Problem::Post(text, why, _) => draft = Some((text, why)),
        Problem::Counter(why, _) => counter_problem = Some(why),
        Problem::Fib(why, _) => fib_problem = Some(why),
    }
    let page = Page {
        messages: messages.map_err(|e| short(&e)),
        counter_id,
        count: Some(count.map_err(|e| short(&e))),
        draft,
        counter_problem,
        api_unavailable,
        // The calculator is optional (it needs Postgres): its failure never fails the page.
        fib: fib.map(|seen| Calculator { seen }).map_err(|e| short(&e)),
        fib_problem,
    };
    let mut response = (status, Html(render(&page).into_string())).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What the page shows about a failure: never internal details.
fn short(e: &CallError) -> String {
    match e {
        CallError::Unavailable(_) => "the API is unavailable".to_owned(),
        CallError::Rejected { message, .. } => message.clone(),
    }
}

/// The form post, without JavaScript: POST, then redirect to the page (POST-redirect-GET).
async fn post_message(
    State(api): State<ApiClient>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let text = form.get("text").cloned().unwrap_or_default();
    let key = form
        .get("idempotency_key")
        .filter(|k| !k.is_empty() && k.len() <= 255);
    match api.post_message(&text, key.map(String::as_str)).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(CallError::Rejected { status, message }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            page(
                &api,
                DEFAULT_COUNTER.to_owned(),
                Problem::Post(text, message, status),
            )
            .await
        }
        Err(e @ CallError::Unavailable(_)) => {
            tracing::warn!(error = %e, "posting a message failed");
            let why =
                "The API is unavailable right now; your message was not posted. Try again shortly.";
            let problem = Problem::Post(text, why.to_owned(), StatusCode::SERVICE_UNAVAILABLE);
            page(&api, DEFAULT_COUNTER.to_owned(), problem).await
        }
    }
}

/// The counter button, without JavaScript.
async fn increment(
    State(api): State<ApiClient>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let id = form
        .get("id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if let Err(why) = crate::counters::CounterId::parse(&id) {
        let problem = Problem::Counter(why.to_string(), StatusCode::BAD_REQUEST);
        return page(&api, DEFAULT_COUNTER.to_owned(), problem).await;
    }
    match api.increment(&id).await {
        Ok(_) => Redirect::to(&format!("/?counter={}", encode(&id))).into_response(),
        Err(CallError::Rejected { status, message }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            page(&api, id, Problem::Counter(message, status)).await
        }
        Err(e @ CallError::Unavailable(_)) => {
            tracing::warn!(error = %e, "increment failed");
            let why = "The API is unavailable right now; the click may not have counted. Try again shortly.";
            page(
                &api,
                id,
                Problem::Counter(why.to_owned(), StatusCode::SERVICE_UNAVAILABLE),
            )
            .await
        }
    }
}

/// Forwards the request to the API tier as it came (method, path, query, body, the headers
/// that matter) and its answer back. An unreachable API is a JSON 503, as the API itself
/// would answer when its store is down.
async fn proxy(
    State(api): State<ApiClient>,
    method: Method,
    headers: HeaderMap,
    request: Request,
) -> Response {
    if has_dot_segment(request.uri().path()) {
        // The client that builds the upstream URL would resolve it: /api/v1/../../metrics
        // would reach another route than the one asked for.
        return ApiError::bad_request("the path must not contain '.' or '..' segments")
            .into_response();
    }
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let forwarded_for = forwarded_for(&headers, request.extensions().get::<Peer>());
    let body = match axum::body::to_bytes(request.into_body(), MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(e) if body_timed_out(&e) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive within the request deadline",
            )
            .into_response()
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_FORM_BYTES} bytes"),
            )
            .into_response()
        }
    };
    let mut outgoing = api
        .http()
        .request(method, format!("{}{path_and_query}", api.base()));
    for name in FORWARDED {
        if let Some(value) = headers.get(*name) {
            outgoing = outgoing.header(*name, value);
        }
    }
    if let Some(value) = forwarded_for {
        outgoing = outgoing.header("x-forwarded-for", value);
    }
    // Not the caller's traceparent: this request's span is the API's parent.
    outgoing = with_trace(outgoing);
    let upstream = match outgoing.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(
                error = super::api::describe(&e),
                "proxy: the API did not answer"
            );
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the API is unavailable; retry later",
            )
            .into_response();
        }
    };
    let status = upstream.status();
    let mut response_headers = HeaderMap::new();
    for name in FORWARDED {
        if let Some(value) = upstream.headers().get(*name) {
            response_headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    let body: Bytes = match upstream.bytes().await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the API answer broke off; retry later",
            )
            .into_response()
        }
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = response_headers;
    response
}

/// True when a segment of `path` is `.` or `..` once percent-decoded (`%2e%2e` too), or the path
/// holds a backslash, which URL parsers may read as a slash.
fn has_dot_segment(path: &str) -> bool {
    path.contains('\\')
        || path.split('/').any(|segment| {
            let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
            decoded == "." || decoded == ".."
        })
}

/// X-Forwarded-For for the API: what came in, with this hop's peer appended, so an API that
/// trusts the web tier (TALLY_TRUSTED_PROXIES) can rate-limit the real client.
fn forwarded_for(headers: &HeaderMap, peer: Option<&Peer>) -> Option<HeaderValue> {
    let peer = peer?.0.ip().to_canonical().to_string();
    let earlier: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if earlier.is_empty() {
        peer
    } else {
        format!("{}, {peer}", earlier.join(", "))
    };
    HeaderValue::from_str(&value).ok()
}

/// The calculator form, without JavaScript.
async fn calculate(
    State(api): State<ApiClient>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(index) = form.get("index").and_then(|i| i.trim().parse::<u32>().ok()) else {
        let problem = Problem::Fib(
            "the index must be a whole number".into(),
            StatusCode::BAD_REQUEST,
        );
        return page(&api, DEFAULT_COUNTER.to_owned(), problem).await;
    };
    match api.submit_fib(index).await {
        Ok(()) => Redirect::to("/").into_response(),
        Err(CallError::Rejected { status, message }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            page(
                &api,
                DEFAULT_COUNTER.to_owned(),
                Problem::Fib(message, status),
            )
            .await
        }
        Err(e @ CallError::Unavailable(_)) => {
            tracing::warn!(error = %e, "submitting a Fibonacci job failed");
            let why = "The calculator is unavailable right now; try again shortly.".to_owned();
            page(
                &api,
                DEFAULT_COUNTER.to_owned(),
                Problem::Fib(why, StatusCode::SERVICE_UNAVAILABLE),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_in_any_spelling_are_found() {
        for bad in [
            "/api/v1/../../metrics",
            "/api/v1/%2e%2e/metrics",
            "/api/%2E%2e/x",
            "/api/./x",
            "/api/%2e/x",
            "/api/v1/..\\metrics",
            "/..",
        ] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for good in [
            "/api/v1/messages",
            "/a..b",
            "/api/v1/counters/...",
            "/%2e%2e%2fx",
        ] {
            assert!(!has_dot_segment(good), "{good}");
        }
    }

    #[test]
    fn forwarded_for_appends_this_hop() {
        let peer: Peer =
            axum::extract::ConnectInfo("192.0.2.9:5555".parse::<std::net::SocketAddr>().unwrap());
        let mut h = HeaderMap::new();
        assert_eq!(forwarded_for(&h, Some(&peer)).unwrap(), "192.0.2.9");
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.1"));
        assert_eq!(
            forwarded_for(&h, Some(&peer)).unwrap(),
            "203.0.113.1, 192.0.2.9"
        );
        assert!(forwarded_for(&h, None).is_none());
    }
}
