use clap::Parser;

// mimalloc: a third of tally's user-space instructions per request were glibc malloc/free;
// preloading mimalloc cut them by 22 % under callgrind (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = tally::cli::Cli::parse();
    match tally::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            // Errors are built never to contain secrets (see config::Secret).
            eprintln!("tally: error: {e:#}");
            tracing::error!(error = format!("{e:#}"), "exiting");
            std::process::ExitCode::from(2)
        }
    }
}
