//! Prometheus metrics. Every metric is described here and documented in docs/metrics.md.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub mod baseline;
pub use baseline::Tier;

/// Latency buckets in seconds: sub-millisecond Redis round trips up to the request deadline.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the process-wide recorder once and returns the handle that renders `/metrics`.
/// Several servers in one process (tests) share it.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("tally_group_commit_batch_size".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                )
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            gauge!("tally_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

/// The handle of a process of `tier`, with the tier's series registered at 0 (`baseline`).
pub fn handle_for(tier: Tier) -> PrometheusHandle {
    let handle = handle();
    baseline::register(tier);
    handle
}

/// What a metric is, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// Every metric tally records, with its `# HELP` text. A test holds this list against the code
/// that records metrics and against docs/metrics.md, so neither can drift from it.
pub const CATALOGUE: &[(&str, Kind, &str)] = &[
    ("http_requests_total", Kind::Counter, "HTTP requests answered, by route template, method and status"),
    ("http_request_duration_seconds", Kind::Histogram, "Time from request to response, by route template and method"),
    ("tally_store_command_duration_seconds", Kind::Histogram, "Store command latency including connection setup, by command"),
    ("tally_store_errors_total", Kind::Counter, "Failed store commands, by command and error kind"),
    ("tally_store_retries_total", Kind::Counter, "Store commands sent again because the first try certainly did not run (READONLY, NOREPLICAS; in Cluster mode also MOVED, ASK, TRYAGAIN, CLUSTERDOWN)"),
    ("tally_cluster_shards", Kind::Gauge, "Cluster mode: masters in the slot map (state=known) and those that answered the last readiness ping (state=up)"),
    ("tally_cluster_shard_commands_total", Kind::Counter, "Cluster mode: store commands by shard (its first slot) and outcome (ok, error)"),
    ("tally_cluster_redirects_total", Kind::Counter, "Cluster mode: redirects followed, by kind (moved, ask, later: TRYAGAIN or CLUSTERDOWN)"),
    ("tally_store_connections_total", Kind::Counter, "Store connections opened (each replaces a dropped one)"),
    ("tally_store_up", Kind::Gauge, "1 when the last readiness ping of the store succeeded, else 0"),
    ("tally_api_up", Kind::Gauge, "tally web: 1 when the last probe of the API succeeded, else 0"),
    ("tally_master_changes_total", Kind::Counter, "Sentinel mode: master changes the sentinels announced (+switch-master), each once however many sentinels announce it"),
    ("tally_wait_timeouts_total", Kind::Counter, "WAIT calls that returned before enough replicas confirmed (their increments got 503)"),
    ("tally_group_commit_batch_size", Kind::Histogram, "Increments covered by one WAIT"),
    ("tally_idempotent_replays_total", Kind::Counter, "Requests answered from an earlier request with the same Idempotency-Key"),
    ("tally_combined_increments_total", Kind::Counter, "Increments that rode in another request's INCRBY of the same counter (hot-id combining)"),
    ("tally_build_info", Kind::Gauge, "Always 1; the version label names the running build"),
    ("tally_connections_open", Kind::Gauge, "Connections open, by listener (public, admin)"),
    ("tally_connections_refused_total", Kind::Counter, "Connections answered 503 and closed at once because the listener's cap was reached"),
    ("tally_connections_closed_total", Kind::Counter, "Connections the server closed on a client that stalled or idled, by listener and reason (header_timeout, idle_timeout, write_timeout, drain)"),
    ("tally_accept_errors_total", Kind::Counter, "Errors accepting a connection (such as EMFILE), after each of which the listener pauses"),
    ("tally_rate_limited_total", Kind::Counter, "Requests answered 429 by the per-client rate limit"),
    ("tally_jobs_total", Kind::Counter, "tally worker: jobs by outcome (done, failed, reclaimed, dead_lettered)"),
    ("tally_job_duration_seconds", Kind::Histogram, "tally worker: time to compute and store one job"),
    ("tally_jobs_pending", Kind::Gauge, "tally worker: jobs delivered to a worker and not yet acknowledged"),
    ("tally_jobs_lag", Kind::Gauge, "tally worker: jobs in the stream not yet delivered to any worker"),
];

fn describe() {
    for &(name, kind, help) in CATALOGUE {
        match kind {
            Kind::Counter => describe_counter!(name, help),
            Kind::Gauge => describe_gauge!(name, help),
            Kind::Histogram if name.ends_with("_seconds") => {
                describe_histogram!(name, Unit::Seconds, help)
            }
            Kind::Histogram => describe_histogram!(name, help),
        }
    }
}

/// Series handles are looked up in the registry once per (route, method, status) and thread,
/// then reused: registering on every request (label allocation, hashing) was 15 % of the
/// instructions of a counter request (bench/README.md). Bounded, in case of a label explosion.
const MAX_CACHED_SERIES: usize = 256;

struct HttpSeries {
    route: String,
    method: &'static str,
    /// The code answered; its label (`status_label`) is looked up only when registering.
    status: u16,
    requests: Counter,
    duration: Histogram,
}

thread_local! {
    static HTTP_SERIES: RefCell<Vec<HttpSeries>> = const { RefCell::new(Vec::new()) };
    static STORE_SERIES: RefCell<Vec<(&'static str, Histogram)>> = const { RefCell::new(Vec::new()) };
}

/// The `method` label: the methods of RFC 9110 and PATCH; anything else is `other`, so invented
/// methods cannot add series.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The `status` label: the codes tally answers with, else the code's class (`4xx`).
pub fn status_label(status: u16) -> &'static str {
    const KNOWN: &[(u16, &str)] = &[
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (301, "301"),
        (302, "302"),
        (303, "303"),
        (304, "304"),
        (307, "307"),
        (308, "308"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (408, "408"),
        (409, "409"),
        (413, "413"),
        (415, "415"),
        (422, "422"),
        (429, "429"),
        (431, "431"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
        (507, "507"),
    ];
    if let Some((_, label)) = KNOWN.iter().find(|(code, _)| *code == status) {
        return label;
    }
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

/// Records one answered request. `route` must be a route template (or `unmatched`), never a
/// raw path: with the method and status labels from fixed sets, the series stay bounded.
pub fn http_request(route: &str, method: &axum::http::Method, status: u16, elapsed: Duration) {
    let method = method_label(method);
    let seconds = elapsed.as_secs_f64();
    HTTP_SERIES.with_borrow_mut(|cache| {
        let known = cache
            .iter()
            .find(|s| s.status == status && s.route == route && s.method == method);
        if let Some(s) = known {
            s.requests.increment(1);
            s.duration.record(seconds);
            return;
        }
        let r = route.to_owned();
        let series = HttpSeries {
            requests: counter!("http_requests_total", "route" => r.clone(), "method" => method, "status" => status_label(status)),
            duration: histogram!("http_request_duration_seconds", "route" => r.clone(), "method" => method),
            route: r,
            method,
            status,
        };
        series.requests.increment(1);
        series.duration.record(seconds);
        if cache.len() < MAX_CACHED_SERIES {
            cache.push(series);
        }
    });
}

/// Records one store command; `failure` is the `kind` label of a failure of the store itself
/// (`None` on success and on the client's mistakes, which must not page anyone).
pub fn store_command(command: &'static str, elapsed: Duration, failure: Option<&'static str>) {
    STORE_SERIES.with_borrow_mut(|cache| {
        let at = match cache.iter().position(|(c, _)| *c == command) {
            Some(at) => at,
            None => {
                let h = histogram!("tally_store_command_duration_seconds", "command" => command);
                cache.push((command, h));
                cache.len() - 1
            }
        };
        cache[at].1.record(elapsed.as_secs_f64());
    });
    if let Some(kind) = failure {
        counter!("tally_store_errors_total", "command" => command, "kind" => kind).increment(1);
    }
}

pub fn store_retry(command: &'static str) {
    counter!("tally_store_retries_total", "command" => command).increment(1);
}

pub fn cluster_shards(known: usize, up: usize) {
    gauge!("tally_cluster_shards", "state" => "known").set(known as f64);
    gauge!("tally_cluster_shards", "state" => "up").set(up as f64);
}

/// `shard` is the shard's first slot: bounded by the number of shards, stable over failovers.
pub fn cluster_shard_command(shard: u16, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    counter!("tally_cluster_shard_commands_total", "shard" => shard.to_string(), "outcome" => outcome)
        .increment(1);
}

pub fn cluster_redirect(kind: &'static str) {
    debug_assert!(baseline::REDIRECT_KINDS.contains(&kind), "{kind}");
    counter!("tally_cluster_redirects_total", "kind" => kind).increment(1);
}

pub fn store_connected() {
    counter!("tally_store_connections_total").increment(1);
}

/// `gauge` is `tally_store_up` (serve) or `tally_api_up` (web).
pub fn dependency_up(gauge: &'static str, up: bool) {
    gauge!(gauge).set(if up { 1.0 } else { 0.0 });
}

pub fn idempotent_replay() {
    counter!("tally_idempotent_replays_total").increment(1);
}

pub fn combined_increments(n: u64) {
    counter!("tally_combined_increments_total").increment(n);
}

pub fn master_change() {
    counter!("tally_master_changes_total").increment(1);
}

pub fn wait_timeout() {
    counter!("tally_wait_timeouts_total").increment(1);
}

pub fn group_commit(batch: usize) {
    histogram!("tally_group_commit_batch_size").record(batch as f64);
}

pub fn job(outcome: &'static str) {
    debug_assert!(baseline::JOB_OUTCOMES.contains(&outcome), "{outcome}");
    counter!("tally_jobs_total", "outcome" => outcome).increment(1);
}

pub fn job_duration(elapsed: Duration) {
    histogram!("tally_job_duration_seconds").record(elapsed.as_secs_f64());
}

pub fn job_backlog(pending: u64, lag: u64) {
    gauge!("tally_jobs_pending").set(pending as f64);
    gauge!("tally_jobs_lag").set(lag as f64);
}

/// The open-connection gauge of one listener (its handle is kept by the listener).
pub fn connections_open(listener: &'static str) -> Gauge {
    gauge!("tally_connections_open", "listener" => listener)
}

pub fn connection_refused(listener: &'static str) {
    counter!("tally_connections_refused_total", "listener" => listener).increment(1);
}

pub fn connection_closed(listener: &'static str, reason: &'static str) {
    debug_assert!(baseline::CLOSE_REASONS.contains(&reason), "{reason}");
    counter!("tally_connections_closed_total", "listener" => listener, "reason" => reason)
        .increment(1);
}

pub fn accept_error(listener: &'static str) {
    counter!("tally_accept_errors_total", "listener" => listener).increment(1);
}

pub fn rate_limited() {
    counter!("tally_rate_limited_total").increment(1);
}
