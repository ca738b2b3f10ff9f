//! `downtime serve`: flags for the server process, turned into a running server.

use std::process::ExitCode;

/// Flags of `downtime serve`, named as `toxiproxy-server` names them so scripts keep working.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address the control API binds to.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the control API.
    #[arg(long, default_value_t = 8474)]
    pub port: u16,
    /// Proxies (and their toxics) to create at start: our TOML or Toxiproxy's JSON.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Seed for every random choice (toxicity, jitter), so runs replay exactly.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Serve `/metrics` with the proxy byte counters.
    #[arg(long)]
    pub proxy_metrics: bool,
    /// Serve `/metrics` with process metrics.
    #[arg(long)]
    pub runtime_metrics: bool,
}

/// Runs the server until SIGINT/SIGTERM; maps startup failures to exit code 1 (bad config: 2).
pub async fn run(args: ServeArgs) -> ExitCode {
    let _ = args;
    ExitCode::from(1)
}
