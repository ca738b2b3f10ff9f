//! The `downtime` binary: `serve` runs the server; every other command is a client of its API.

mod client;
mod drill;
mod serve;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: a proxy allocates and frees many short-lived
/// buffers on several threads, and glibc keeps what busy threads freed in per-thread
/// arenas (hundreds of MiB after a latency toxic on 1,000 streaming connections), while
/// mimalloc returns freed pages to the system and allocates small objects faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{ArgAction, Parser};

/// Rehearse third-party outages: a Toxiproxy-compatible fault proxy that also speaks HTTP.
///
/// The client commands take the same names, aliases and flags as toxiproxy-cli. As there,
/// `-h` is `--host` (the server to talk to), so help is `--help` only.
#[derive(Debug, Parser)]
#[command(name = "downtime", version, disable_help_flag = true)]
struct Cli {
    #[command(flatten)]
    global: client::GlobalOptions,
    /// Print help (in client commands `-h` is --host, as in toxiproxy-cli).
    #[arg(long, action = ArgAction::Help, global = true, display_order = 1000)]
    help: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

/// Every command of the binary: the server, then the toxiproxy-cli compatible client.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the fault proxy and its control API.
    Serve(serve::ServeArgs),
    /// Run or check a drill: an outage scenario with probes and a verdict.
    #[command(subcommand)]
    Drill(drill::DrillCommand),
    #[command(flatten)]
    Client(client::Command),
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
        Command::Drill(command) => drill::run(command).await,
        Command::Client(command) => client::run(cli.global, command).await,
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
