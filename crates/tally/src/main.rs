use clap::Parser;

// mimalloc: a third of tally's user-space instructions per request were glibc malloc/free;
// preloading mimalloc cut them by 22 % under callgrind (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = tally::cli::Cli::parse();
    let runtime = match cli.runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tally: error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(tally::cli::run(cli));
    // Tasks still running end here, so their last log lines are in before the final flush.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let code = match outcome {
        Ok(code) => code,
        Err(e) => {
            // Errors are built never to contain secrets (see config::Secret).
            eprintln!("tally: error: {e:#}");
            tracing::error!(error = format!("{e:#}"), "exiting");
            std::process::ExitCode::from(2)
        }
    };
    tally::telemetry::flush();
    code
}
