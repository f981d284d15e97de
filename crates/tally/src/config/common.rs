//! Flags every long-running subcommand (serve, web, worker) shares, declared and validated once.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::limits::{ListenerArgs, RateLimitArgs};

/// The deadline, log format and connection limits of `serve`, `web` and `worker`.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Deadline of one request's work: the store's commands (serve, worker), or each call to
    /// the API (web). Past it the request gets 503.
    #[arg(long, env = "TALLY_REQUEST_TIMEOUT", default_value = "2s", value_parser = positive_duration)]
    pub request_timeout: Duration,

    /// Log format: json (default when stdout is not a terminal) or text.
    #[arg(long, env = "TALLY_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    #[command(flatten)]
    pub listener: ListenerArgs,

    /// Export a span per request (and per job) to this OpenTelemetry collector over OTLP/HTTP,
    /// e.g. http://otel-collector:4318 (`/v1/traces` is appended). Off when unset.
    /// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and OTEL_BSP_* apply.
    #[arg(long, env = "TALLY_OTLP_ENDPOINT", value_parser = otlp_endpoint)]
    pub otlp_endpoint: Option<url::Url>,
}

/// Flags of the subcommands that serve clients (`serve`, `web`): readiness, the drain and the
/// rate limit.
#[derive(Args, Debug, Clone)]
pub struct ServingArgs {
    /// How often readiness checks its dependency (the store for serve, the API for web);
    /// probes read the cached result.
    #[arg(long, env = "TALLY_READINESS_INTERVAL", default_value = "1s", value_parser = positive_duration)]
    pub readiness_interval: Duration,

    #[command(flatten)]
    pub drain: Drain,

    #[command(flatten)]
    pub rate_limit: RateLimitArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// The shutdown timing, as flags of `serve` and `web`.
#[derive(Args, Debug, Clone, Copy)]
pub struct Drain {
    /// After SIGTERM, /readyz answers 503 and requests are still served this long, so load
    /// balancers stop sending traffic before the listener closes.
    #[arg(long = "shutdown-delay", env = "TALLY_SHUTDOWN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub delay: Duration,

    /// After the delay, how long in-flight requests get to finish before the process exits.
    #[arg(long = "shutdown-timeout", env = "TALLY_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The Fibonacci bound, shared by the API (which refuses larger indexes) and the worker (which
/// dead-letters them), so the two cannot disagree on what is valid.
#[derive(Args, Debug, Clone, Copy)]
pub struct FibArgs {
    /// Largest Fibonacci index accepted.
    #[arg(long, env = "TALLY_FIB_MAX_INDEX", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub fib_max_index: u32,
}

/// An http(s) URL with a host: where a collector listens for OTLP/HTTP.
fn otlp_endpoint(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or a fragment".into());
    }
    Ok(url)
}

/// A humantime duration above zero: a zero deadline would fail every request.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(duration)
}
