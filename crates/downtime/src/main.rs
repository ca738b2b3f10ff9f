//! The `downtime` binary: `serve` runs the server; every other command is a client of its API.

mod serve;

use std::process::ExitCode;

use clap::Parser;

/// Rehearse third-party outages: a Toxiproxy-compatible fault proxy that also speaks HTTP.
#[derive(Debug, Parser)]
#[command(name = "downtime", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the fault proxy and its control API.
    Serve(serve::ServeArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
    }
}
