//! Forward mode: downtime as the `HTTP_PROXY`/`HTTPS_PROXY` of an app, so every outbound
//! call of any SDK passes its faults with no code change.
//!
//! Plain requests arrive in absolute form (`GET http://host/path`) and go to that host.
//! `CONNECT host:443` opens a tunnel: for a host the proxy intercepts, downtime answers
//! the TLS handshake itself with a leaf for that host from its local CA (which the app
//! trusts), serves HTTP on it with the proxy's faults matched by `match.host`, and forwards
//! each request to the real host over TLS; any other host is tunnelled byte for byte. The
//! TCP toxics beneath the client connection apply either way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use downtime_model::http_fault::glob_match;
use http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::HttpShared;
use super::answers::error_response;
use super::body::{ResponseBody, full};
use crate::tls::LocalCa;

/// Distinct intercepted hosts whose TLS configuration is kept; past it the cache restarts.
const MAX_CACHED_HOSTS: usize = 10_000;

/// Where a request goes when it is not the reverse proxy's one upstream.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// `host:port`.
    pub(crate) authority: Arc<str>,
    /// Reached over TLS (an intercepted `CONNECT`).
    pub(crate) tls: bool,
}

/// What a forward proxy shares across its connections.
pub(crate) struct Forwarding {
    /// Host patterns to intercept; `None` intercepts all.
    intercept: Option<Vec<String>>,
    ca: Arc<LocalCa>,
    configs: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

impl Forwarding {
    /// Forwarding that issues leaves from `ca` for the hosts `intercept` names.
    pub(crate) fn new(intercept: Option<Vec<String>>, ca: Arc<LocalCa>) -> Self {
        let intercept = intercept.map(|p| p.iter().map(|p| p.to_ascii_lowercase()).collect());
        Forwarding {
            intercept,
            ca,
            configs: Mutex::default(),
        }
    }

    fn intercepts(&self, host: &str) -> bool {
        match &self.intercept {
            None => true,
            Some(patterns) => patterns.iter().any(|p| glob_match(p, host)),
        }
    }

    /// The TLS server configuration that answers as `host` (issued once, then cached).
    fn config_for(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut configs = self
            .configs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = configs.get(host) {
            return Ok(c.clone());
        }
        let options = downtime_model::tls_options::TlsOptions {
            names: vec![host.to_owned()],
            cert: None,
            key: None,
        };
        let config = crate::tls::server_config(&options, Some(&self.ca))?;
        if configs.len() >= MAX_CACHED_HOSTS {
            configs.clear();
        }
        configs.insert(host.to_owned(), config.clone());
        Ok(config)
    }
}

/// `host:port` of a `CONNECT` target, with the port defaulting to 443.
fn authority_of(target: &http::Uri) -> Option<(String, u16)> {
    let authority = target.authority()?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    Some((host, authority.port_u16().unwrap_or(443)))
}

/// Answers a `CONNECT`: 200, then (once hyper hands over the connection) either serves
/// the intercepted host's HTTP on a TLS session downtime terminates, or tunnels the bytes.
pub(crate) fn connect(
    mut parts: http::request::Parts,
    shared: &Arc<HttpShared>,
    peer: SocketAddr,
    reset: Arc<std::sync::atomic::AtomicBool>,
) -> Response<ResponseBody> {
    let Some(forwarding) = &shared.forward else {
        return super::answers::connect_refused(&parts.uri.to_string());
    };
    let Some((host, port)) = authority_of(&parts.uri) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "CONNECT needs a host:port target",
        );
    };
    let Some(upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "this connection cannot be tunnelled",
        );
    };
    let authority: Arc<str> = if host.contains(':') {
        format!("[{host}]:{port}").into()
    } else {
        format!("{host}:{port}").into()
    };
    let intercept = forwarding.intercepts(&host);
    let config = if intercept {
        match forwarding.config_for(&host) {
            Ok(c) => Some(c),
            Err(e) => {
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    &format!("cannot issue a certificate for {host}: {e}"),
                );
            }
        }
    } else {
        None
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let cancel = shared.cancel.clone();
        let tunnel = async {
            let client = TokioIo::new(upgrade.await?);
            match config {
                Some(config) => {
                    let names = [host.clone()];
                    let Some(tls) =
                        super::tls_accept::accept(client, &shared, config, &names).await
                    else {
                        return Ok(());
                    };
                    let origin = Arc::new(Origin {
                        authority,
                        tls: true,
                    });
                    super::serve_connection(tls, reset, peer, shared, Some(origin)).await;
                }
                None => {
                    let mut client = client;
                    let mut upstream = TcpStream::connect(&*authority).await?;
                    let _ = upstream.set_nodelay(true);
                    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
                }
            }
            Ok::<(), super::body::BoxError>(())
        };
        tokio::select! {
            () = cancel.cancelled() => {}
            ended = tunnel => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "forward tunnel ended");
                }
            }
        }
    });
    let mut response = Response::new(full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::OK;
    response
}
