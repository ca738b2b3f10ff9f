//! The control plane of downtime: the Toxiproxy-compatible API, configuration loading and
//! the server's lifecycle.
//!
//! # Layout
//! - [`api`]: the HTTP API (routes, error shape, metrics); handlers only call the registry;
//! - [`config`]: startup files (our TOML, Toxiproxy's JSON) into validated proxies;
//! - [`drills`]: the drill runner (timeline, probes, verdict, reports), an API client;
//! - [`history`]: the history store (SQLite): events, drills, component minutes, uptime,
//!   incidents;
//! - [`web`]: the public status page, its live updates, feed and Statuspage-style JSON;
//! - [`webhooks`]: signed notifications of status changes, with retries and a delivery log;
//! - [`tls`]: TLS clients of probes and webhooks, and the API's TLS (`--api-tls`);
//! - [`run`]: wires the registry, the API and the status page's optional listener of its
//!   own, and drains them on shutdown.

pub mod api;
pub mod config;
pub mod drills;
pub mod history;
pub mod tls;
pub mod web;
pub mod webhooks;

use std::future::Future;
use std::time::Duration;

use downtime_model::{ProxyConfig, Toxic};
use downtime_proxy::Registry;
use tokio::net::TcpListener;

pub use api::MetricsOptions;
pub use api::listener::HttpLimits;

/// Called once the configured proxies are listening, with their views.
pub type OnReady = Box<dyn FnOnce(&[downtime_model::ProxyView]) + Send>;

/// Everything `run` needs besides the bound API listener.
#[derive(Default)]
pub struct ServeOptions {
    /// Seed for every random choice; `None` draws one.
    pub seed: Option<u64>,
    /// Which metric groups `/metrics` exposes.
    pub metrics: MetricsOptions,
    /// Proxies (with toxics) to create before the API answers.
    pub proxies: Vec<(ProxyConfig, Vec<Toxic>)>,
    /// How long shutdown waits for requests and connections to finish.
    pub grace: Duration,
    /// Public URL of the status page: the link in maintenance answers, the feed, the JSON
    /// and webhooks. Defaults to `http://<status listener address>/status` when there is a
    /// status listener (loopback for a wildcard bind, which has no public name), else to
    /// `http://<api address>/status`.
    pub status_page: Option<String>,
    /// A second listener that serves only the status routes (no control routes), so that
    /// the page can be published while the control API stays on loopback. The status
    /// routes stay on the API listener too. A std listener, so that callers can bind it
    /// before (or outside) the runtime `run` is given; `run` serves it on that runtime.
    pub status_listener: Option<std::net::TcpListener>,
    /// Told which proxies are up once the config is applied (e.g. to print their URLs).
    pub on_ready: Option<OnReady>,
    /// History database file (SQLite, WAL); `None` keeps history in memory (tests).
    pub history: Option<std::path::PathBuf>,
    /// Sampling, retention and queue settings of the history store.
    pub history_settings: history::HistorySettings,
    /// Drills to run on their schedules, against this server's own API.
    pub schedules: Vec<drills::schedule::Schedule>,
    /// Timeouts and connection cap of the API listener.
    pub api_limits: HttpLimits,
    /// Timeouts and connection cap of the status listener (its cap is lowered at start
    /// when the open-files limit could not hold it next to the API's and a reserve).
    pub status_limits: HttpLimits,
    /// Host names (or IPs) the control API answers besides loopback and its own address
    /// (`--api-allow-host`); any other `Host` gets 403.
    pub api_allow_hosts: Vec<String>,
    /// Webhook targets permitted beyond the defaults (`--webhook-allow`).
    pub webhook_allow: Vec<webhooks::AllowRule>,
    /// CA files (PEM) trusted besides the system's roots by `https://` upstreams, webhook
    /// deliveries and drill probes (`--extra-ca`, repeatable); each is read at start.
    pub extra_ca: Vec<std::path::PathBuf>,
    /// Directory of the local CA (`--ca-dir`, `DOWNTIME_CA_DIR`): opened (or created) at
    /// start when given; else the default one is opened on first need.
    pub ca_dir: Option<std::path::PathBuf>,
    /// Token every control request must carry (`--api-token`, `DOWNTIME_API_TOKEN`):
    /// `Authorization: Bearer TOKEN` or basic auth with it as password. Required when the
    /// API is bound off loopback. The status routes stay public.
    pub api_token: Option<String>,
    /// Serve the control API over TLS (`--api-tls`).
    pub api_tls: Option<tls::ApiTls>,
}

/// Descriptors kept free beyond the two HTTP listeners' caps (history file, proxy
/// listeners, logs) when the status listener's cap is fitted to the open-files limit.
const FD_RESERVE: u64 = 256;

/// `status` with its cap lowered, if needed, so that it, the API's cap and
/// [`FD_RESERVE`] fit in `nofile` descriptors: the API always keeps its own room.
fn fit_status_cap(status: HttpLimits, api: &HttpLimits, nofile: Option<u64>) -> HttpLimits {
    let Some(nofile) = nofile else {
        return status;
    };
    let room = nofile.saturating_sub(FD_RESERVE + api.max_connections as u64);
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    if status.max_connections > room {
        tracing::warn!(
            asked = status.max_connections,
            allowed = room,
            open_files_limit = nofile,
            "status listener connection cap lowered to keep room for the API"
        );
        return HttpLimits {
            max_connections: room,
            ..status
        };
    }
    status
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A proxy of the config file could not start (for example its port is taken).
    #[error("cannot start proxy from config: {0}")]
    Populate(#[source] downtime_model::Error),
    /// The API server failed.
    #[error("api server: {0}")]
    Io(#[from] std::io::Error),
    /// The history store could not be opened.
    #[error("{0}")]
    History(#[from] history::HistoryError),
    /// The status page's own listener could not be served.
    #[error("status page server: {0}")]
    Status(#[source] std::io::Error),
    /// The control API is bound off loopback and no token is set.
    #[error(
        "the control API would listen on {0}, which is not a loopback address, without a \
         token: anyone who can reach it could reconfigure every proxy. Set a token with \
         --api-token TOKEN (or the DOWNTIME_API_TOKEN environment variable); clients then \
         send \"Authorization: Bearer TOKEN\" or use http://:TOKEN@HOST:PORT. Or bind the \
         API to 127.0.0.1"
    )]
    ApiWithoutToken(std::net::SocketAddr),
    /// The API token given is unusable.
    #[error("--api-token: {0}")]
    ApiToken(&'static str),
    /// A CA directory, extra CA file or the API's certificate is unusable.
    #[error("{0}")]
    Tls(String),
}

/// Refuses a control API bound to `addr` off loopback (a wildcard included) without a
/// token, and an empty token; loopback without a token is Toxiproxy's setup and passes.
pub fn check_api_exposure(
    addr: std::net::SocketAddr,
    token: Option<&str>,
) -> Result<(), ServeError> {
    match token {
        Some(t) if t.trim().is_empty() => Err(ServeError::ApiToken("the token is empty")),
        Some(t) if t.chars().any(char::is_control) => Err(ServeError::ApiToken(
            "the token contains control characters",
        )),
        Some(_) => Ok(()),
        None if api::guard::is_loopback(addr.ip()) => Ok(()),
        None => Err(ServeError::ApiWithoutToken(addr)),
    }
}

/// Serves the API on `listener` (and the status page on `options.status_listener`, if any)
/// until `shutdown` completes, then stops every proxy and waits at most `options.grace` for
/// in-flight work.
pub async fn run(
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let api_addr = listener.local_addr()?;
    check_api_exposure(api_addr, options.api_token.as_deref())?;
    let registry = Registry::new(options.seed);
    let ca = match &options.ca_dir {
        Some(dir) => Some(registry.set_ca_dir(dir).map_err(ServeError::Tls)?),
        None => None,
    };
    if !options.extra_ca.is_empty() {
        registry
            .set_extra_ca(options.extra_ca.clone())
            .map_err(ServeError::Tls)?;
    }
    let api_tls = match &options.api_tls {
        Some(settings) => Some(
            tls::api_server_config(
                settings,
                || match ca {
                    Some(ca) => Ok(ca),
                    None => {
                        downtime_proxy::tls::LocalCa::open(&downtime_proxy::tls::default_ca_dir())
                            .map(std::sync::Arc::new)
                    }
                },
                api_addr,
            )
            .map_err(ServeError::Tls)?,
        ),
        None => None,
    };
    let history = match &options.history {
        Some(path) => history::History::open(path, options.history_settings.clone()).await?,
        None => history::History::memory(options.history_settings.clone()).await?,
    };
    // Stops the status monitor, webhook deliveries and open event streams at shutdown, so
    // that long-lived event streams do not hold the graceful drain open.
    let stop_web = tokio_util::sync::CancellationToken::new();
    // With a history file, webhooks are kept in it (and the stored ones start now); with
    // an in-memory history they stay in memory, as they would not survive anyway.
    let hooks = webhooks::Webhooks::open(
        webhooks::WebhookOptions {
            policy: webhooks::TargetPolicy {
                allow: options.webhook_allow.clone(),
                own_api: vec![listener.local_addr()?],
            },
            extra_ca: options.extra_ca.clone(),
            ..webhooks::WebhookOptions::default()
        },
        stop_web.clone(),
        options.history.is_some().then(|| history.clone()),
    )
    .await?;
    let status_listener = match options.status_listener {
        Some(std_listener) => {
            // `from_std` needs a non-blocking socket; a caller's plain std bind is not.
            std_listener
                .set_nonblocking(true)
                .map_err(ServeError::Status)?;
            Some(TcpListener::from_std(std_listener).map_err(ServeError::Status)?)
        }
        None => None,
    };
    let status_page = match (options.status_page, &status_listener) {
        (Some(url), _) => url,
        (None, Some(status)) => {
            let addr = status.local_addr().map_err(ServeError::Status)?;
            format!("http://{}/status", reachable(addr))
        }
        (None, None) => format!("http://{}/status", listener.local_addr()?),
    };
    registry.set_status_page(&status_page);
    let ready = if options.proxies.is_empty() {
        Vec::new()
    } else {
        registry
            .populate(options.proxies)
            .await
            .map_err(|e| ServeError::Populate(e.error))?
    };
    for view in &ready {
        history.record(history::Event::proxy(
            history::EventKind::ProxyPopulated,
            history::Actor::System,
            view,
        ));
    }
    let history_tasks = history::spawn_tasks(&history, &registry);
    if let Some(on_ready) = options.on_ready {
        on_ready(&ready);
    }
    let web_state = web::WebState::start(
        web::Source::new(registry.clone(), Some(history.clone())),
        web::WebOptions {
            status_url: status_page.clone(),
            ..web::WebOptions::default()
        },
        Some(hooks.clone()),
        stop_web.clone(),
    );
    let status_web = web_state.clone();
    let guard = std::sync::Arc::new(
        api::guard::Guard::new(Some(listener.local_addr()?), &options.api_allow_hosts)
            .with_token(options.api_token.as_deref()),
    );
    let state = api::AppState {
        registry: registry.clone(),
        metrics: options.metrics,
        history: history.clone(),
        webhooks: hooks,
        guard: guard.clone(),
    };
    // The status routes have their own router without the API's browser refusal: see `web`.
    let runs = drills::schedule::Runs::default();
    let app = api::router(state)
        .merge(web::router(web_state))
        .merge(api::guard::protect(
            drills::schedule::router(runs.clone()),
            guard,
        ));
    // Scheduled drills reach the API without its token (the drill runner has no way to send
    // one yet), so with a token their API calls are refused.
    let own_api = own_api_url(listener.local_addr()?, api_tls.is_some());
    let stop_api = tokio_util::sync::CancellationToken::new();
    let server =
        serve_api_on_own_thread(listener, app, options.api_limits, api_tls, stop_api.clone())?;
    // Served on this (the main) runtime, like the snapshots and renders of the page.
    let status_limits = fit_status_cap(
        options.status_limits,
        &options.api_limits,
        api::listener::nofile_limit(),
    );
    let status_server = status_listener.map(|status| {
        serve_status(
            status,
            web::router(status_web),
            status_limits,
            stop_web.clone(),
        )
    });
    let scheduler = drills::schedule::start(
        options.schedules,
        own_api,
        runs,
        (options.extra_ca.clone(), options.api_token.clone()),
    );
    shutdown.await;
    tracing::debug!("shutting down");
    // Scheduled drills abort and clean up through the API, so before the API stops.
    scheduler
        .stop(options.grace.max(Duration::from_secs(15)))
        .await;
    stop_api.cancel();
    stop_web.cancel();
    registry.shutdown(options.grace).await;
    history_tasks.stop().await;
    // Both servers have been draining since their signals: one deadline for the two.
    let deadline = tokio::time::Instant::now() + options.grace;
    let mut result = Ok(());
    match tokio::time::timeout_at(deadline, server).await {
        Ok(Ok(Err(e))) => result = Err(ServeError::Io(e)),
        Ok(Ok(Ok(()))) => {}
        Ok(Err(_)) => tracing::warn!("api server thread ended without a result"),
        Err(_) => tracing::warn!("api requests still running after the grace period"),
    }
    if let Some(mut status_server) = status_server {
        match tokio::time::timeout_at(deadline, &mut status_server).await {
            Ok(Ok(Err(e))) => {
                if result.is_ok() {
                    result = Err(ServeError::Status(e));
                }
            }
            Ok(Ok(Ok(()))) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "status page server task failed"),
            Err(_) => {
                tracing::warn!("status page requests still running after the grace period");
                status_server.abort();
            }
        }
    }
    history.shutdown().await;
    result
}

/// Serves the status routes alone on `listener`, as a task of the current (main) runtime,
/// until `stop` is cancelled, within `limits` (see [`api::listener`]). The same token ends
/// open event streams, so the drain is not held open by them.
fn serve_status(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(api::listener::serve("status", listener, app, limits, stop))
}

/// `addr` with a wildcard IP (`0.0.0.0`, `[::]`) replaced by loopback of the same family: a
/// wildcard is not an address anyone can connect to, and this machine is the one place
/// sure to reach it.
fn reachable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    std::net::SocketAddr::new(ip, addr.port())
}

/// The URL this server's own drills use to reach its API (loopback for a wildcard bind).
fn own_api_url(addr: std::net::SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", reachable(addr))
}

/// Serves the API on a thread of its own with a single-threaded runtime, so that no amount
/// of connection work on the data-plane runtime can delay an API answer: the operating
/// system schedules this thread as soon as a request arrives.
fn serve_api_on_own_thread(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>> {
    let listener = listener.into_std()?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("downtime-api".to_owned())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| {
                    runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        api::listener::serve_tls("api", listener, app, limits, tls, stop).await
                    })
                });
            let _ = done_tx.send(result);
        })?;
    Ok(done_rx)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn wildcard_binds_become_loopback_of_their_family() {
        assert_eq!(
            super::reachable(addr("0.0.0.0:8080")),
            addr("127.0.0.1:8080")
        );
        assert_eq!(super::reachable(addr("[::]:8080")), addr("[::1]:8080"));
        assert_eq!(super::reachable(addr("10.1.2.3:80")), addr("10.1.2.3:80"));
        assert_eq!(
            super::own_api_url(addr("0.0.0.0:8474"), false),
            "http://127.0.0.1:8474"
        );
    }

    #[test]
    fn off_loopback_needs_a_token() {
        use super::{ServeError, check_api_exposure};
        for ok in [
            "127.0.0.1:8474",
            "127.0.0.2:1",
            "[::1]:8474",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(check_api_exposure(addr(ok), None).is_ok(), "{ok}");
        }
        for exposed in ["0.0.0.0:8474", "[::]:8474", "10.1.2.3:8474"] {
            let err = check_api_exposure(addr(exposed), None).unwrap_err();
            assert!(matches!(err, ServeError::ApiWithoutToken(_)), "{exposed}");
            let text = err.to_string();
            assert!(text.contains("--api-token") && text.contains("DOWNTIME_API_TOKEN"));
            assert!(check_api_exposure(addr(exposed), Some("t0ken")).is_ok());
        }
        assert!(matches!(
            check_api_exposure(addr("127.0.0.1:1"), Some(" ")),
            Err(ServeError::ApiToken(_))
        ));
    }
}
