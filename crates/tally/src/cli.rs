//! The `tally` command line. `serve` is the default subcommand, so `tally` alone (and
//! `cargo run --release`) starts the service.

use clap::{Parser, Subcommand};

use std::num::NonZeroUsize;
use std::process::ExitCode;

use crate::app::worker::WorkerArgs;
use crate::check::CheckArgs;
use crate::config::{ServeArgs, ServeConfig};
use crate::web::{WebArgs, WebServer};

#[derive(Parser, Debug)]
#[command(
    name = "tally",
    version,
    about = "A per-id counter service on Redis that proves its claims"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// `tally` without a subcommand takes the flags of `tally serve`.
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Threads that run requests. Default: the CPUs this process may use (a container's CPU
    /// limit counts). One thread per CPU of the limit is the efficient setting; with one, tally
    /// runs a single-threaded scheduler, which batches Redis commands best (bench/README.md).
    // Named runtime threads here: "worker" in tally means the job consumer (`tally worker`); the
    // flag keeps the name Tokio gives these threads.
    #[arg(
        long = "worker-threads",
        global = true,
        env = "TALLY_WORKER_THREADS",
        value_name = "N"
    )]
    pub runtime_threads: Option<NonZeroUsize>,
}

impl Cli {
    /// The Tokio runtime every subcommand runs on.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let threads = self
            .runtime_threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get);
        let mut builder = if threads == 1 {
            // Work-stealing buys nothing on one thread, and its LIFO slot runs the Redis
            // connection task right after each request that woke it: one write per command.
            // The single-threaded scheduler runs woken tasks in order, so the connection task
            // runs after the requests that are ready and sends their commands in one write.
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        };
        builder.enable_all().build()
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the counter API (the default).
    Serve(Box<ServeArgs>),
    /// Load a running tally and check every answer: lost, duplicated and over-counted
    /// increments, availability, latency. Exits 1 when a check fails.
    Check(CheckArgs),
    /// Serve the web front end (guestbook and counter page) in front of the API tier.
    Web(WebArgs),
    /// Compute Fibonacci jobs from the Redis Stream (needs Redis, not Postgres).
    Worker(Box<WorkerArgs>),
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let args = match cli.command {
        Some(Command::Serve(args)) => *args,
        Some(Command::Check(args)) => {
            let passed = crate::check::run(args).await?;
            return Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Some(Command::Web(args)) => return web(args).await.map(|()| ExitCode::SUCCESS),
        Some(Command::Worker(args)) => {
            let _log = crate::telemetry::init(args.common.log_format);
            let open_files = crate::listener::raise_open_file_limit();
            tracing::debug!(open_files, "open-file limit");
            let traces = export_traces(&args.common, "tally-worker")?;
            let result = crate::app::worker::run(*args).await;
            stop_traces(traces).await;
            return result.map(|()| ExitCode::SUCCESS);
        }
        None => cli.serve,
    };
    serve(args).await.map(|()| ExitCode::SUCCESS)
}

async fn web(args: WebArgs) -> anyhow::Result<()> {
    let _log = crate::telemetry::init(args.common.log_format);
    let api_url = args.resolve_api_url(&|name| std::env::var(name).ok())?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %args.listen,
        admin_listen = %args.admin_listen,
        api_url = crate::web::redact(&api_url),
        request_timeout = ?args.common.request_timeout,
        open_files = crate::listener::raise_open_file_limit(),
        "starting tally web"
    );
    let traces = export_traces(&args.common, "tally-web")?;
    let result = async {
        let server = WebServer::bind(args, &api_url).await?;
        tracing::info!(public = %server.public_addr(), admin = %server.admin_addr(), "listening");
        server.run(crate::app::lifecycle::shutdown_signal()).await
    }
    .await;
    stop_traces(traces).await;
    result
}

/// OTLP export when `--otlp-endpoint` names a collector (crate::trace::export).
fn export_traces(
    common: &crate::config::CommonArgs,
    service: &'static str,
) -> anyhow::Result<Option<crate::trace::export::ExportGuard>> {
    common
        .otlp_endpoint
        .as_ref()
        .map(|endpoint| crate::trace::export::install(endpoint, service))
        .transpose()
}

/// Sends the last spans, once the server has drained.
async fn stop_traces(traces: Option<crate::trace::export::ExportGuard>) {
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let _log = crate::telemetry::init(args.common.log_format);
    let config = ServeConfig::resolve(&args, &|name| std::env::var(name).ok())?;
    let open_files = crate::listener::raise_open_file_limit();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %config.listen,
        admin_listen = %config.admin_listen,
        store = %config.store,
        durability = ?config.durability,
        key_prefix = %config.key_prefix,
        request_timeout = ?config.request_timeout,
        idempotency_ttl = ?config.idempotency_ttl,
        shutdown_delay = ?config.drain.delay,
        shutdown_timeout = ?config.drain.timeout,
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        header_timeout = ?config.limits.public.header_timeout,
        idle_timeout = ?config.limits.public.idle_timeout,
        max_connections = config.limits.public.max_connections,
        rate_limit = ?config.rate_limit.as_ref().map(|r| (r.per_second, r.burst)),
        open_files,
        "starting tally serve"
    );
    let wanted =
        (config.limits.public.max_connections + config.limits.admin.max_connections) as u64;
    if open_files.is_some_and(|files| files < wanted + 64) {
        tracing::warn!(
            open_files,
            wanted,
            "the open-file limit is below the connection caps: accepts will fail (EMFILE) before the cap"
        );
    }
    let traces = export_traces(&args.common, "tally-serve")?;
    let result = async {
        let server = crate::app::serve::Server::bind(config).await?;
        tracing::info!(public = %server.public_addr(), admin = %server.admin_addr(), "listening");
        server.run(crate::app::lifecycle::shutdown_signal()).await
    }
    .await;
    stop_traces(traces).await;
    result
}
