//! Optional OTLP trace export (`TALLY_OTLP_ENDPOINT`, off by default): one span per request
//! (kind server) and per job (kind consumer), sent to an OpenTelemetry collector over OTLP/HTTP
//! with protobuf bodies.
//!
//! The spans carry the ids of `TraceContext`, the ones in the log lines, so a trace id found in
//! Loki opens the same trace in Tempo or Jaeger. That is why spans are built here as finished
//! `SpanData` and handed to the SDK's batch processor, instead of through `tracing` spans and
//! tracing-opentelemetry: the SDK's tracer draws its own span ids, and a `tracing` span per
//! request would cost every request even with export off.
//!
//! The batch processor exports from a thread of its own with a bounded queue (2048 spans,
//! `OTEL_BSP_MAX_QUEUE_SIZE`): when the collector is slow or down, spans are dropped, requests
//! never wait. Its HTTP calls run on a one-thread runtime of their own, so an export never
//! competes with requests for the server's runtime, and shutdown cannot deadlock on it.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};
use opentelemetry_sdk::Resource;

use super::TraceContext;

/// The processor, once `install` ran; spans are dropped while it is unset.
static PROCESSOR: OnceLock<BatchSpanProcessor> = OnceLock::new();

/// Collector answers are a few bytes; a larger body is not read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// One export call's deadline.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Flushes and stops the export at the end of the process (`shutdown`).
#[must_use = "call shutdown() at the end, or the last spans are lost"]
pub struct ExportGuard(());

impl ExportGuard {
    /// Sends what is queued (within the processor's export timeout) and stops. Runs on a
    /// blocking thread: the processor's shutdown waits for its export thread.
    pub async fn shutdown(self) {
        if let Some(processor) = PROCESSOR.get() {
            let done = tokio::task::spawn_blocking(|| processor.shutdown()).await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "OTLP export: the last spans may be lost");
            }
        }
    }
}

/// Starts exporting spans to `endpoint` (the collector's base URL: `/v1/traces` is appended)
/// as `service` (unless `OTEL_SERVICE_NAME` names it). `OTEL_RESOURCE_ATTRIBUTES` and the
/// batch processor's `OTEL_BSP_*` variables apply.
pub fn install(endpoint: &url::Url, service: &'static str) -> anyhow::Result<ExportGuard> {
    let mut traces = endpoint.clone();
    traces.set_path(&format!(
        "{}/v1/traces",
        endpoint.path().trim_end_matches('/')
    ));
    let client = RuntimeClient::new()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(traces.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let mut processor = BatchSpanProcessor::builder(exporter).build();
    processor.set_resource(&resource);
    if PROCESSOR.set(processor).is_err() {
        anyhow::bail!("OTLP export is already installed");
    }
    tracing::info!(endpoint = %redacted(&traces), "exporting traces over OTLP/HTTP");
    Ok(ExportGuard(()))
}

/// Whether spans are exported (the caller can skip building attributes when not).
pub fn enabled() -> bool {
    PROCESSOR.get().is_some()
}

/// A finished span of `context`, from its start until now. Only sampled spans are exported, as
/// the caller's `traceparent` asked.
pub fn span(
    context: &TraceContext,
    name: String,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    error: bool,
) {
    let Some(processor) = PROCESSOR.get() else {
        return;
    };
    if !context.sampled {
        return;
    }
    let flags = TraceFlags::SAMPLED;
    let state = context
        .state
        .as_ref()
        .and_then(|s| s.to_str().ok())
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    processor.on_end(SpanData {
        span_context: SpanContext::new(
            TraceId::from(context.trace_id),
            SpanId::from(context.span_id),
            flags,
            false,
            state,
        ),
        parent_span_id: context.parent_id.map_or(SpanId::INVALID, SpanId::from),
        // Every parent tally knows came from another process: a header or a job.
        parent_span_is_remote: context.parent_id.is_some(),
        span_kind: kind,
        name: Cow::Owned(name),
        start_time: context.started,
        end_time: SystemTime::now(),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if error {
            Status::error("")
        } else {
            Status::Unset
        },
        instrumentation_scope: scope().clone(),
    });
}

fn scope() -> &'static InstrumentationScope {
    static SCOPE: OnceLock<InstrumentationScope> = OnceLock::new();
    SCOPE.get_or_init(|| {
        InstrumentationScope::builder("tally")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build()
    })
}

/// The endpoint without user information, for the log.
fn redacted(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// The exporter's HTTP client: our reqwest client, on a one-thread runtime of its own (the batch
/// processor calls it from a plain thread, outside any runtime).
#[derive(Debug)]
struct RuntimeClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl RuntimeClient {
    fn new() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tally-otlp")
            .enable_all()
            .build()?;
        let http = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(Self { http, runtime })
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        let sent = self.runtime.spawn(async move {
            let mut answer = http.execute(request).await?;
            let mut response = Response::builder().status(answer.status());
            let mut body = Vec::new();
            while let Some(chunk) = answer.chunk().await? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            if let Some(headers) = response.headers_mut() {
                *headers = answer.headers().clone();
            }
            Ok::<_, HttpError>(response.body(Bytes::from(body))?)
        });
        let result = sent.await?;
        match &result {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => warn_export_failed(&format!("the collector answered {}", r.status())),
            Err(e) => warn_export_failed(&e.to_string()),
        }
        result
    }
}

/// Logs a failed export at most once a minute: a collector that is down must not flood the log.
fn warn_export_failed(why: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            error = why,
            "OTLP export failed; spans are dropped until the collector answers"
        );
    }
}
