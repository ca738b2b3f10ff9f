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
    /// Check the --config file (proxies, toxics, schedules, `${VAR}` references) and exit
    /// without starting: 0 when it is valid, 2 with the problem otherwise.
    #[arg(long, requires = "config")]
    pub check: bool,
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
    /// Also trust the CA certificates in FILE (PEM) for https:// upstreams, webhook
    /// deliveries and drill probes, besides the system's roots. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub extra_ca: Vec<std::path::PathBuf>,
    /// The local CA's directory, issuing the certificates of TLS proxies and of the
    /// forward proxy's interception (see `downtime ca`).
    #[arg(long, value_name = "DIR", env = "DOWNTIME_CA_DIR")]
    pub ca_dir: Option<std::path::PathBuf>,
    /// Require `Authorization: Bearer TOKEN` (or basic auth with TOKEN as password) on the
    /// control API; needed to bind it off loopback. The status routes stay public.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DOWNTIME_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// Serve the control API over TLS with a certificate from the local CA.
    #[arg(long)]
    pub api_tls: bool,
    /// Serve the control API over TLS with this certificate chain (PEM; with --api-tls-key).
    #[arg(long, value_name = "FILE", requires = "api_tls_key")]
    pub api_tls_cert: Option<std::path::PathBuf>,
    /// The private key of --api-tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "api_tls_cert")]
    pub api_tls_key: Option<std::path::PathBuf>,
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
    let (proxies, schedules) = match &args.config {
        Some(path) => match load_config(path) {
            Ok(loaded) => loaded,
            Err(e) => {
                eprintln!("downtime: {e}");
                return ExitCode::from(2);
            }
        },
        None => (Vec::new(), Vec::new()),
    };
    if args.check {
        print!(
            "{}",
            check_text(args.config.as_deref(), &proxies, &schedules)
        );
        return ExitCode::SUCCESS;
    }
    downtime_server::api::listener::raise_nofile_limit();
    if !is_loopback_host(&args.host) && args.api_token.is_some() && !args.api_tls {
        tracing::warn!(
            host = ?args.host,
            "the control API is bound off loopback without TLS: its token crosses the network \
             in clear; add --api-tls"
        );
    }
    // (name, listen) of each configured proxy, to name the one whose port is taken.
    let configured: Vec<(String, String)> = proxies
        .iter()
        .map(|(c, _)| (c.name.clone(), c.listen.clone()))
        .collect();
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
    let status_page = match (&args.status_url, status_bound) {
        (Some(url), _) => url.clone(),
        (None, Some(addr)) => format!("http://{}/status", reachable(addr)),
        (None, None) => format!("http://{bound}/status"),
    };
    let history_file = (args.db.as_os_str() != ":memory:").then(|| absolute(&args.db));
    let banner = Banner {
        api: format!("http://{bound}"),
        status_page,
        status_listener: status_bound.map(|a| a.to_string()),
        history_file: history_file.clone(),
        ca_cert: Some(
            args.ca_dir
                .clone()
                .unwrap_or_else(downtime_proxy::tls::default_ca_dir)
                .join("downtime-ca.pem"),
        ),
    };
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
        // Printed once the history file is open and every configured proxy listens, so a
        // start-up failure is reported before anything says "listening".
        on_ready: Some(Box::new(move |proxies| banner.print(proxies))),
        history: history_file,
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
        extra_ca: args.extra_ca,
        ca_dir: args.ca_dir,
        api_token: args.api_token,
        api_tls: match (args.api_tls_cert, args.api_tls_key, args.api_tls) {
            (Some(cert), Some(key), _) => Some(downtime_server::tls::ApiTls::Files { cert, key }),
            (_, _, true) => Some(downtime_server::tls::ApiTls::LocalCa { names: Vec::new() }),
            _ => None,
        },
    };
    match downtime_server::run(listener, options, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(downtime_server::ServeError::Populate(e)) => {
            let detail = e.to_string();
            match failed_proxy(&configured, &detail) {
                Some(name) => {
                    eprintln!("downtime: cannot start proxy {name:?} of the config: {detail}")
                }
                None => eprintln!("downtime: cannot start a proxy of the config: {detail}"),
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("downtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// Proxies of a config file, with the toxics created with them.
type Proxies = Vec<(downtime_model::ProxyConfig, Vec<downtime_model::Toxic>)>;

/// Reads the config file once (with `${VAR}` substitution) into its proxies and, for our
/// TOML, its scheduled drills.
fn load_config(
    path: &std::path::Path,
) -> Result<
    (Proxies, Vec<downtime_server::drills::schedule::Schedule>),
    downtime_server::config::ConfigError,
> {
    let text = downtime_server::config::read(path)?;
    let fail = |detail: String| downtime_server::config::ConfigError {
        path: path.display().to_string(),
        detail,
    };
    let extension = path.extension().and_then(|e| e.to_str());
    let proxies = downtime_server::config::parse(&text, extension).map_err(fail)?;
    let schedules = if extension == Some("json") {
        Vec::new()
    } else {
        let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
        downtime_server::drills::schedule::parse(&text, dir).map_err(fail)?
    };
    Ok((proxies, schedules))
}

/// What `serve --check` prints for a valid config.
fn check_text(
    path: Option<&std::path::Path>,
    proxies: &Proxies,
    schedules: &[downtime_server::drills::schedule::Schedule],
) -> String {
    let file = path.map_or_else(String::new, |p| p.display().to_string());
    let mut out = format!(
        "config {file}: valid: {} prox{}, {} scheduled drill{}\n",
        proxies.len(),
        if proxies.len() == 1 { "y" } else { "ies" },
        schedules.len(),
        if schedules.len() == 1 { "" } else { "s" },
    );
    for (c, toxics) in proxies {
        out.push_str(&format!(
            "  {}: {} ({} toxic{})\n",
            c.name,
            route(c),
            toxics.len(),
            if toxics.len() == 1 { "" } else { "s" }
        ));
    }
    out
}

/// The configured proxy a populate error is about: the one whose listen address it names
/// (`listen tcp 127.0.0.1:5080: bind: ...`), else the one with the same port.
fn failed_proxy<'a>(configured: &'a [(String, String)], detail: &str) -> Option<&'a str> {
    configured
        .iter()
        .find(|(_, listen)| detail.contains(&format!("tcp {listen}:")))
        .or_else(|| {
            configured.iter().find(|(_, listen)| {
                listen
                    .rsplit_once(':')
                    .is_some_and(|(_, port)| port != "0" && detail.contains(&format!(":{port}:")))
            })
        })
        .map(|(name, _)| name.as_str())
}

/// `path` made absolute against the working directory (as the history store will open it),
/// so the start-up lines say where the file is.
fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `addr` with a wildcard IP replaced by loopback, the address this machine can reach.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// What `serve` prints on stdout once it is up: where everything is, and the line to
/// paste for each proxy.
struct Banner {
    api: String,
    status_page: String,
    status_listener: Option<String>,
    history_file: Option<std::path::PathBuf>,
    /// The local CA's certificate, for the trust lines of forward proxies.
    ca_cert: Option<std::path::PathBuf>,
}

impl Banner {
    fn print(&self, proxies: &[downtime_model::ProxyView]) {
        print!("{}", self.text(proxies));
    }

    fn text(&self, proxies: &[downtime_model::ProxyView]) -> String {
        // The first line is read by scripts (and tests using --port 0) for the bound port.
        let mut out = format!("downtime API listening on {}\n", self.api);
        if let Some(addr) = &self.status_listener {
            // The status page's own listener (--status-listen), as bound.
            out.push_str(&format!("downtime status page on http://{addr}/status\n"));
        }
        out.push_str(&format!("status page: {}\n", self.status_page));
        match &self.history_file {
            Some(file) => out.push_str(&format!(
                "history: {} (with -wal and -shm next to it; --db :memory: keeps none)\n",
                file.display()
            )),
            None => out.push_str("history: in memory, kept nowhere (--db :memory:)\n"),
        }
        if proxies.is_empty() {
            out.push_str("no proxies yet: create one with `downtime create` or --config FILE\n");
        }
        for p in proxies {
            let c = &p.config;
            out.push_str(&format!("proxy {}: {}\n", c.name, route(c)));
            if c.mode == Some(downtime_model::proxy::ProxyMode::Forward) {
                // The one-variable switch: every outbound call of the app goes through.
                out.push_str(&format!(
                    "  export HTTPS_PROXY=http://{0} HTTP_PROXY=http://{0}\n",
                    c.listen
                ));
                if let Some(cert) = &self.ca_cert {
                    out.push_str(&crate::ca::trust_lines(cert));
                }
            } else if c.protocol == downtime_model::Protocol::Http {
                let scheme = if c.tls.is_some() { "https" } else { "http" };
                out.push_str(&format!(
                    "  export {}={scheme}://{}\n",
                    env_name(&c.name, "URL"),
                    c.listen
                ));
            } else {
                out.push_str(&format!(
                    "  export {}={}\n",
                    env_name(&c.name, "ADDR"),
                    c.listen
                ));
            }
        }
        out
    }
}

/// `127.0.0.1:5080 -> 127.0.0.1:5001 (http)`, or `... (http stand-in, no upstream)`;
/// `, disabled` when it does not listen.
fn route(c: &downtime_model::ProxyConfig) -> String {
    let http = c.protocol == downtime_model::Protocol::Http;
    let mut text = if c.mode == Some(downtime_model::proxy::ProxyMode::Forward) {
        let intercept = match &c.intercept {
            Some(p) => p.join(", "),
            None => "every host".to_owned(),
        };
        format!(
            "{} (forward proxy, HTTPS intercepted for {intercept})",
            c.listen
        )
    } else if http && c.upstream.is_empty() {
        format!(
            "{} (http stand-in, no upstream: answers from its faults, maintenance by default)",
            c.listen
        )
    } else {
        format!(
            "{} -> {} ({})",
            c.listen,
            c.upstream,
            if http { "http" } else { "tcp" }
        )
    };
    if !c.enabled {
        text.push_str(", disabled");
    }
    text
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

/// `platform-api`, `URL` → `PLATFORM_API_URL`.
fn env_name(proxy: &str, suffix: &str) -> String {
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
    name.push('_');
    name.push_str(suffix);
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
        assert_eq!(super::env_name("platform-api", "URL"), "PLATFORM_API_URL");
        assert_eq!(super::env_name("3ds", "ADDR"), "_3DS_ADDR");
    }

    #[test]
    fn port_in_use_names_the_proxy() {
        let configured = vec![
            ("a".to_owned(), "127.0.0.1:5080".to_owned()),
            ("b".to_owned(), "localhost:5081".to_owned()),
        ];
        let named = |detail: &str| super::failed_proxy(&configured, detail);
        assert_eq!(
            named("listen tcp 127.0.0.1:5080: bind: address already in use"),
            Some("a")
        );
        assert_eq!(
            named("listen tcp 127.0.0.1:5081: bind: address already in use"),
            Some("b")
        );
        assert_eq!(named("something else"), None);
    }
}
