//! `downtime serve`: flags for the server process, turned into a running server.

use std::net::SocketAddr;
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
    /// Also serve the status page, and nothing else, on this address (IP:PORT, e.g.
    /// 0.0.0.0:8080), to publish it while the control API stays on loopback.
    ///
    /// Only the read-only status routes answer there (`/status`, `/status/*`, `/api/v2/*`);
    /// control routes such as `/proxies` get 404. The page stays on the API address too.
    /// The maintenance link then points at this listener (at 127.0.0.1 or [::1] for a
    /// wildcard address: pass --status-url to give the public name).
    #[arg(long, value_name = "ADDR", value_parser = parse_status_listen)]
    pub status_listen: Option<SocketAddr>,
    /// Public URL of the status page, as visitors reach it (e.g. through a DNS name or a
    /// reverse proxy): the link in maintenance answers, the feed, the JSON and webhooks.
    ///
    /// Default: http://<--status-listen address>/status, or http://<API address>/status
    /// without --status-listen.
    #[arg(long, value_name = "URL", value_parser = parse_status_url)]
    pub status_url: Option<String>,
    /// Connections served at once on each HTTP listener of the server (the API's and the
    /// status page's, each its own count); more are answered 503 with a JSON body.
    #[arg(long, value_name = "N", default_value_t = downtime_server::api::listener::DEFAULT_MAX_CONNECTIONS,
          value_parser = parse_max_connections)]
    pub max_connections: usize,
    /// Also answer control API requests whose Host is NAME (a host name or IP), besides
    /// loopback names and the address the API is bound to. Repeatable.
    #[arg(long, value_name = "NAME")]
    pub api_allow_host: Vec<String>,
    /// Let webhooks target CIDR_OR_HOST (e.g. 169.254.169.254/32 or hooks.internal), which
    /// is refused by default: link-local and unspecified addresses and this server's own
    /// API. Repeatable.
    #[arg(long, value_name = "CIDR_OR_HOST")]
    pub webhook_allow: Vec<downtime_server::webhooks::AllowRule>,
}

/// Parses `--max-connections`: 1 to 1,000,000.
fn parse_max_connections(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err("expected a number of connections from 1 to 1000000".to_owned()),
    }
}

/// Whether the API's `--host` is a loopback address or name (the only place the API is
/// safe without authentication).
fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses `--status-listen`: an IP address and a port, as a listener binds them. Host names
/// are refused rather than resolved, so the address bound is the one written.
fn parse_status_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        "expected an IP address and port such as 0.0.0.0:8080, [::]:8080 or 127.0.0.1:0".to_owned()
    })
}

/// Parses `--status-url`: an absolute http(s) URL with a host, and nothing that could break
/// the texts it is written into (spaces, control characters).
fn parse_status_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    let well_formed = rest.is_some_and(|rest| {
        !rest.is_empty()
            && !rest.starts_with('/')
            && !text.chars().any(|c| c.is_whitespace() || c.is_control())
    });
    if well_formed {
        Ok(text.to_owned())
    } else {
        Err("expected an absolute http:// or https:// URL such as https://status.example.com/status"
            .to_owned())
    }
}

/// Runs the server until SIGINT/SIGTERM. Exit codes: 0 after a clean shutdown, 2 for a bad
/// config file (or, through clap, a bad flag such as `--status-listen`), 1 when the API, the
/// status page's listener or a configured proxy cannot bind.
pub async fn run(args: ServeArgs) -> ExitCode {
    downtime_server::api::listener::raise_nofile_limit();
    if !is_loopback_host(&args.host) {
        // No API token yet (it comes with TLS): anyone who reaches this address can
        // reconfigure every proxy. Said on every start.
        tracing::warn!(
            host = ?args.host,
            "the control API is bound off loopback and has no authentication: anyone who \
             can reach it can change or stop every proxy; keep it on 127.0.0.1 or firewall it \
             (clients naming it by another host need --api-allow-host NAME)"
        );
    }
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
    let status_listener = match args.status_listen {
        Some(addr) => match bind_status(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!(
                    "downtime: cannot listen on {addr} for the status page (--status-listen): {e}"
                );
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let status_bound = status_listener
        .as_ref()
        .zip(args.status_listen)
        .map(|(l, addr)| l.local_addr().unwrap_or(addr));
    let options = ServeOptions {
        seed: args.seed,
        metrics: MetricsOptions {
            proxy: args.proxy_metrics,
            runtime: args.runtime_metrics,
        },
        proxies,
        grace: Duration::from_secs(5),
        status_page: args.status_url,
        status_listener,
        on_ready: Some(Box::new(print_proxies)),
        history: (args.db.as_os_str() != ":memory:").then(|| args.db.clone()),
        history_settings: downtime_server::history::HistorySettings {
            raw_days: args.history_days,
            ..downtime_server::history::HistorySettings::default()
        },
        schedules,
        api_limits: downtime_server::HttpLimits {
            max_connections: args.max_connections,
            ..downtime_server::HttpLimits::default()
        },
        status_limits: downtime_server::HttpLimits {
            max_connections: args.max_connections,
            ..downtime_server::HttpLimits::default()
        },
        api_allow_hosts: args.api_allow_host,
        webhook_allow: args.webhook_allow,
    };
    // Printed on stdout so scripts (and tests using --port 0) can read the bound address.
    println!("downtime API listening on http://{bound}");
    if let Some(status) = status_bound {
        println!("downtime status page on http://{status}/status");
    }
    match downtime_server::run(listener, options, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("downtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// Binds the status page's listener with tokio's defaults (as the API's, `SO_REUSEADDR` on
/// Unix, so a restart does not wait for old connections) and hands it over as a std
/// listener, the form [`ServeOptions`] takes.
async fn bind_status(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await?.into_std()
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
    fn status_listen_takes_ip_and_port_only() {
        assert!(super::parse_status_listen("0.0.0.0:8080").is_ok());
        assert!(super::parse_status_listen("[::]:8080").is_ok());
        for bad in [
            "localhost:8080",
            "8080",
            ":8080",
            "0.0.0.0",
            "0.0.0.0:99999",
            "",
        ] {
            assert!(super::parse_status_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_url_must_be_absolute_http() {
        assert!(super::parse_status_url("https://status.example.com/status").is_ok());
        assert!(super::parse_status_url("http://10.0.0.5:8080/status").is_ok());
        for bad in [
            "status.example.com",
            "ftp://x/",
            "http://",
            "https:///x",
            "http://a b/",
        ] {
            assert!(super::parse_status_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LocalHost",
        ] {
            assert!(super::is_loopback_host(host), "{host}");
        }
        for host in ["0.0.0.0", "::", "10.0.0.5", "example.com"] {
            assert!(!super::is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn env_names() {
        assert_eq!(super::env_name("platform-api"), "PLATFORM_API_URL");
        assert_eq!(super::env_name("3ds"), "_3DS_URL");
    }
}
