//! `downtime serve`: flags for the server process, turned into a running server.

use std::process::ExitCode;
use std::time::Duration;

use downtime_server::{MetricsOptions, ServeOptions};

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
    /// History database (SQLite, created if missing): fault and proxy events with who made
    /// them, drills, probe results, uptime and incidents. `:memory:` keeps it in memory.
    #[arg(long, value_name = "FILE", default_value = "downtime.db")]
    pub db: std::path::PathBuf,
    /// Days of raw history (events, per-minute component states, probe results) kept in the
    /// database; daily rollups (the uptime bars) are kept for a year.
    #[arg(long, value_name = "DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub history_days: u32,
}

/// Runs the server until SIGINT/SIGTERM. Exit codes: 0 after a clean shutdown, 2 for a bad
/// config file, 1 when the API or a configured proxy cannot bind.
pub async fn run(args: ServeArgs) -> ExitCode {
    let proxies = match &args.config {
        Some(path) => match downtime_server::config::load(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("downtime: {e}");
                return ExitCode::from(2);
            }
        },
        None => Vec::new(),
    };
    let schedules = match &args.config {
        Some(path) => match downtime_server::drills::schedule::load(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("downtime: {e}");
                return ExitCode::from(2);
            }
        },
        None => Vec::new(),
    };
    let address = format!("{}:{}", args.host, args.port);
    let listener = match tokio::net::TcpListener::bind(&address).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("downtime: cannot listen on {address} for the API: {e}");
            if e.kind() == std::io::ErrorKind::AddrInUse {
                eprintln!(
                    "hint: another downtime or toxiproxy-server may be running; pick another --port"
                );
            }
            return ExitCode::from(1);
        }
    };
    let bound = listener.local_addr().map_or(address, |a| a.to_string());
    let options = ServeOptions {
        seed: args.seed,
        metrics: MetricsOptions {
            proxy: args.proxy_metrics,
            runtime: args.runtime_metrics,
        },
        proxies,
        grace: Duration::from_secs(5),
        status_page: None,
        on_ready: Some(Box::new(print_proxies)),
        history: (args.db.as_os_str() != ":memory:").then(|| args.db.clone()),
        history_settings: downtime_server::history::HistorySettings {
            raw_days: args.history_days,
            ..downtime_server::history::HistorySettings::default()
        },
        schedules,
    };
    // Printed on stdout so scripts (and tests using --port 0) can read the bound address.
    println!("downtime API listening on http://{bound}");
    match downtime_server::run(listener, options, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("downtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Lists the configured proxies; for each HTTP proxy, the line to paste into the app.
fn print_proxies(proxies: &[downtime_model::ProxyView]) {
    for p in proxies {
        let c = &p.config;
        if c.protocol == downtime_model::Protocol::Http {
            let what = if c.upstream.is_empty() {
                "stand-in".to_owned()
            } else {
                format!("-> {}", c.upstream)
            };
            println!("proxy {} (http {what}) on {}", c.name, c.listen);
            println!("export {}=http://{}", env_name(&c.name), c.listen);
        } else {
            println!("proxy {} (tcp -> {}) on {}", c.name, c.upstream, c.listen);
        }
    }
}

/// `platform-api` → `PLATFORM_API_URL`.
fn env_name(proxy: &str) -> String {
    let mut name: String = proxy
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name.push_str("_URL");
    name
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_names() {
        assert_eq!(super::env_name("platform-api"), "PLATFORM_API_URL");
        assert_eq!(super::env_name("3ds"), "_3DS_URL");
    }
}
