//! OTLP trace export (TALLY_OTLP_ENDPOINT) with real processes and a test OTLP/HTTP receiver
//! that decodes what they send with the OpenTelemetry protobuf definitions: one click through
//! web, API and worker is one trace of three spans, parent to child, with the ids of the log
//! lines; a caller's "not sampled" is honoured; a collector that is down costs requests nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use prost::Message;

use crate::support::postgres::{Postgres, PG_PASSWORD};
use crate::support::redis::{RedisProcess, PASSWORD};
use crate::support::BinaryApp;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    name: String,
    kind: i32,
    attributes: Vec<(String, String)>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP/HTTP receiver on 127.0.0.1: POST /v1/traces with a protobuf body.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let sink = sink.clone();
                async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let mut sink = sink.lock().unwrap();
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .map(text)
                            .unwrap_or_default();
                        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                            sink.push(Received {
                                service: service.clone(),
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_id: hex(&span.parent_span_id),
                                name: span.name,
                                kind: span.kind,
                                attributes: span
                                    .attributes
                                    .iter()
                                    .map(|kv| (kv.key.clone(), text(kv)))
                                    .collect(),
                            });
                        }
                    }
                    ExportTraceServiceResponse::default().encode_to_vec()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, spans }
    }

    /// Waits up to 15 s for a span matching `want`.
    async fn span(&self, what: &str, want: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.spans.lock().unwrap().iter().find(|s| want(s)) {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no span {what} among {:#?}",
                self.spans.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
// The protobuf's SpanKind: SERVER = 2, CONSUMER = 5.
const SERVER: i32 = 2;
const CONSUMER: i32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_is_one_exported_trace_through_web_api_and_worker() {
    let receiver = Receiver::start().await;
    let redis = RedisProcess::server("");
    let pg = Postgres::start();
    let store = ("TALLY_REDIS_URL", redis.url(PASSWORD));
    let export = [
        ("TALLY_OTLP_ENDPOINT", receiver.url.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ("TALLY_LOG_FORMAT", "json".into()),
    ];
    let api = BinaryApp::start(
        &[
            &export[..],
            &[
                store.clone(),
                ("TALLY_DATABASE_URL", pg.url()),
                ("TALLY_DATABASE_PASSWORD", PG_PASSWORD.into()),
            ],
        ]
        .concat(),
    );
    api.wait_for_job_routes().await;
    let _worker = BinaryApp::start_command(
        "worker",
        &[&export[..], &[store, ("TALLY_WORKER_NAME", "w".into())]].concat(),
    );
    let web = BinaryApp::start_command(
        "web",
        &[&export[..], &[("TALLY_API_URL", api.base.clone())]].concat(),
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let r = client
        .post(format!("{}/web/fib", web.base))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .form(&[("index", "25")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);

    let at_web = receiver
        .span("POST /web/fib from tally-web", |s| {
            s.trace_id == TRACE && s.name == "POST /web/fib"
        })
        .await;
    assert_eq!(at_web.service, "tally-web");
    assert_eq!(at_web.kind, SERVER);
    assert_eq!(
        at_web.parent_id, CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(at_web.attribute("http.request.method"), Some("POST"));
    assert_eq!(at_web.attribute("http.route"), Some("/web/fib"));
    assert_eq!(at_web.attribute("http.response.status_code"), Some("303"));

    let at_api = receiver
        .span("POST /api/v1/fib from tally-serve", |s| {
            s.trace_id == TRACE && s.name == "POST /api/v1/fib"
        })
        .await;
    assert_eq!(at_api.service, "tally-serve");
    assert_eq!(at_api.kind, SERVER);
    assert_eq!(
        at_api.parent_id, at_web.span_id,
        "web's span is the API's parent"
    );

    let job = receiver
        .span("the job's span from tally-worker", |s| {
            s.trace_id == TRACE && s.kind == CONSUMER
        })
        .await;
    assert_eq!(job.service, "tally-worker");
    assert_eq!(job.name, "process tally:fib:jobs");
    assert_eq!(
        job.parent_id, at_api.span_id,
        "the submitting request is the job's parent"
    );
    assert_eq!(job.attribute("tally.fib.index"), Some("25"));
    assert_eq!(job.attribute("tally.job.outcome"), Some("done"));

    // The exported ids are the log lines' ids.
    let access = api
        .output_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["route"] == "/api/v1/fib" && v["trace_id"] == TRACE)
        .expect("the API's access line");
    assert_eq!(access["span_id"], at_api.span_id.as_str());

    // A caller that does not sample gets no span; a request without a traceparent starts a
    // trace of its own, exported as a root.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let r = client
        .get(format!("{}/not-sampled", api.base))
        .header("traceparent", format!("00-{unsampled}-{CALLER_SPAN}-00"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{}/rooted", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let root = receiver
        .span("a root span for GET /{id}", |s| {
            s.service == "tally-serve" && s.name == "GET /{id}" && s.trace_id != TRACE
        })
        .await;
    assert_eq!(root.parent_id, "", "{root:?}");
    assert!(
        !receiver
            .spans
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.trace_id == unsampled),
        "an unsampled trace was exported"
    );
}

/// A collector that is down or hangs: spans are dropped in the background, answers do not wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_requests_nothing() {
    // A listener that accepts and never answers, and a port where nothing listens.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = crate::support::redis::free_port();
    for endpoint in [
        format!("http://{}", hung.local_addr().unwrap()),
        format!("http://127.0.0.1:{closed}"),
    ] {
        let mut app = BinaryApp::start(&[
            ("TALLY_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
            ("TALLY_SHUTDOWN_DELAY", "0s".into()),
        ]);
        let client = reqwest::Client::new();
        let started = Instant::now();
        for n in 1..=200 {
            let r = client
                .get(format!("{}/down", app.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                200,
                "request {n} with the collector at {endpoint}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "200 requests took {:?} with the collector at {endpoint}",
            started.elapsed()
        );
        // The last flush is bounded too (5 s): SIGTERM still ends the process.
        let stopping = Instant::now();
        app.signal("TERM");
        assert_eq!(app.wait_exit(Duration::from_secs(15)), Some(0));
        eprintln!(
            "exit after SIGTERM with the collector at {endpoint}: {:?}",
            stopping.elapsed()
        );
    }
}
