//! The `tally` command line. `serve` is the default subcommand, so `tally` alone (and
//! `cargo run --release`) starts the service.

use clap::{Parser, Subcommand};

use crate::config::{ServeArgs, ServeConfig};

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
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the counter API (the default).
    Serve(ServeArgs),
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    crate::telemetry::init(args.log_format);
    let config = ServeConfig::resolve(&args, &|name| std::env::var(name).ok())?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %config.listen,
        admin_listen = %config.admin_listen,
        store = %config.store,
        durability = ?config.durability,
        key_prefix = %config.key_prefix,
        request_timeout = ?config.request_timeout,
        idempotency_ttl = ?config.idempotency_ttl,
        shutdown_delay = ?config.shutdown_delay,
        shutdown_timeout = ?config.shutdown_timeout,
        "starting tally serve"
    );
    let server = crate::serve::Server::bind(config).await?;
    tracing::info!(public = %server.public_addr(), admin = %server.admin_addr(), "listening");
    server.run(crate::serve::shutdown_signal()).await
}
