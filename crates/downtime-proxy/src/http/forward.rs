//! Forwarding a request to the upstream as a reverse proxy should: hop-by-hop headers
//! removed (and only those), the client's `Host` kept, `X-Forwarded-*`/`Forwarded` added,
//! redirects that name the upstream brought back through the proxy, trailers passed both
//! ways, upgrades (WebSocket) spliced into a tunnel, and every failure answered with a JSON
//! body naming the upstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use downtime_model::http_options::{HostHeader, HttpOptions, UpstreamProtocol};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::CancellationToken;

use super::answers::{closing, error_response};
use super::body::{self, ResponseBody};
use super::metered::{BodyFailure, BodyOutcome, Counted};

/// How long the upstream may take to start its answer before the client gets a 504.
pub(crate) const UPSTREAM_HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// The body type requests to the upstream carry.
pub(crate) type RequestBody = Counted;

/// Pooled keep-alive clients to the upstream, one per HTTP version, and one over TLS
/// (ALPN picks HTTP/2 or HTTP/1.1) for `https://` upstreams.
pub(crate) struct UpstreamClients {
    http1: Client<HttpConnector, RequestBody>,
    http2: Client<HttpConnector, RequestBody>,
    https: Option<Client<HttpsConnector<HttpConnector>, RequestBody>>,
}

impl UpstreamClients {
    /// Clients with no connection yet; they dial on first use. `tls` (for an `https://`
    /// upstream) verifies the upstream's certificate.
    pub(crate) fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(true)
            .build(connector.clone());
        let https = tls.map(|config| {
            connector.enforce_http(false);
            let tls = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((*config).clone())
                .https_only()
                .enable_http1()
                .enable_http2()
                .wrap_connector(connector);
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(tls)
        });
        UpstreamClients {
            http1,
            http2,
            https,
        }
    }
}

/// Everything [`forward`] needs about the request beyond its parts and body.
pub(crate) struct Forward<'a> {
    pub(crate) upstream: &'a str,
    /// The upstream is reached over TLS.
    pub(crate) upstream_tls: bool,
    /// The client reached this proxy over TLS.
    pub(crate) client_tls: bool,
    pub(crate) options: &'a HttpOptions,
    pub(crate) clients: &'a UpstreamClients,
    pub(crate) peer: SocketAddr,
    /// How the request body ended, if it failed on the client's side.
    pub(crate) body: Arc<BodyOutcome>,
    /// Ends tunnels when the proxy stops.
    pub(crate) cancel: &'a CancellationToken,
}

/// Headers that describe one hop, never forwarded (parsed once: removal by name is a
/// hash lookup, not a parse).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names. `TE:
/// trailers` is end-to-end in effect (gRPC needs it) and is kept. Allocates only when a
/// `Connection` header names others.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = if headers.contains_key(header::CONNECTION) {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    let trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("trailers"))
    });
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    for name in &named {
        headers.remove(name.as_str());
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The protocol a request asks to switch to (`Connection: upgrade` with `Upgrade`).
fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Whether a request is a gRPC call.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The host the client addressed: its `Host` header, or an HTTP/2 request's authority.
pub(crate) fn client_host(parts: &http::request::Parts) -> Option<String> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()))
}

/// Adds `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host` and
/// `Forwarded` (appended), describing the hop from the client to this proxy.
fn add_forwarded(headers: &mut HeaderMap, peer: SocketAddr, host: Option<&str>, https: bool) {
    let proto = if https { "https" } else { "http" };
    let ip = peer.ip().to_canonical();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
        _ => ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    let node = if ip.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip.to_string()
    };
    let mut element = format!("for={node};proto={proto}");
    if let Some(host) = host {
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert("x-forwarded-host", v);
        }
        element.push_str(&format!(";host=\"{}\"", host.replace(['"', '\\'], "")));
    }
    let forwarded = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {element}"),
        _ => element,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
}

/// Points `Location`/`Content-Location` that name the upstream back at the proxy, as the
/// client addressed it, so that a redirect keeps the client inside downtime.
fn rewrite_locations(headers: &mut HeaderMap, upstream: &str, client_host: &str, scheme: &str) {
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Some(rest) = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"))
            .and_then(|r| r.strip_prefix(upstream))
        else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{scheme}://{client_host}{rest}")) {
            headers.insert(name, v);
        }
    }
}

fn bad_gateway(upstream: &str, why: &str) -> Response<ResponseBody> {
    let message = format!("downtime could not reach the upstream {upstream}: {why}");
    error_response(StatusCode::BAD_GATEWAY, "bad_gateway", &message)
}

/// Sends the request to the upstream and shapes its answer for the client.
pub(crate) async fn forward(
    mut parts: http::request::Parts,
    body: RequestBody,
    f: Forward<'_>,
) -> Response<ResponseBody> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let scheme = if f.upstream_tls { "https" } else { "http" };
    let Ok(uri) = format!("{scheme}://{}{path}", f.upstream).parse::<http::Uri>() else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request target is not a valid path",
        );
    };
    let host = client_host(&parts);
    let upgrade = upgrade_of(&parts.headers);
    let client_upgrade = parts.extensions.remove::<OnUpgrade>();
    let use_http2 = upgrade.is_none()
        && match f.options.upstream_protocol {
            // gRPC needs HTTP/2 end to end; anything else reaches every server as HTTP/1.1.
            UpstreamProtocol::Auto => parts.version == Version::HTTP_2 && is_grpc(&parts.headers),
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
        };
    parts.uri = uri;
    strip_hop_by_hop(&mut parts.headers);
    if f.options.forwarded {
        add_forwarded(&mut parts.headers, f.peer, host.as_deref(), f.client_tls);
    }
    let client = if use_http2 {
        parts.version = Version::HTTP_2;
        // The authority is the upstream's (the URI); HTTP/2 carries no Host header.
        parts.headers.remove(header::HOST);
        &f.clients.http2
    } else {
        parts.version = Version::HTTP_11;
        let sent_host = match (f.options.host, &host) {
            (HostHeader::Client, Some(h)) => h.as_str(),
            _ => f.upstream,
        };
        if let Ok(v) = HeaderValue::from_str(sent_host) {
            parts.headers.insert(header::HOST, v);
        }
        if let Some(protocol) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol.clone());
        }
        &f.clients.http1
    };
    let request = Request::from_parts(parts, body);
    let sent = match (&f.clients.https, f.upstream_tls) {
        (Some(https), true) => {
            tokio::time::timeout(UPSTREAM_HEAD_TIMEOUT, https.request(request)).await
        }
        _ => tokio::time::timeout(UPSTREAM_HEAD_TIMEOUT, client.request(request)).await,
    };
    let response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            match f.body.get() {
                BodyFailure::Broken => {
                    return closing(error_response(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "the request body could not be read (invalid chunked framing, or the client stopped sending it)",
                    ));
                }
                BodyFailure::Stalled => {
                    let message = format!(
                        "the request body stalled: no byte for {} ms (proxy option http.body_timeout_ms)",
                        f.options.body_timeout_ms
                    );
                    return closing(error_response(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        &message,
                    ));
                }
                BodyFailure::None => {}
            }
            tracing::debug!(upstream = f.upstream, error = %e, "upstream request failed");
            let why = std::error::Error::source(&e)
                .map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
            return bad_gateway(f.upstream, &why);
        }
        Err(_) => {
            let message = format!(
                "the upstream {} did not start its answer within {} s",
                f.upstream,
                UPSTREAM_HEAD_TIMEOUT.as_secs()
            );
            return error_response(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", &message);
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return switch_protocols(response, client_upgrade, f.cancel.clone());
    }
    let (mut head, body) = response.into_parts();
    strip_hop_by_hop(&mut head.headers);
    if f.options.rewrite_location
        && let Some(h) = &host
    {
        let scheme = if f.client_tls { "https" } else { "http" };
        rewrite_locations(&mut head.headers, f.upstream, h, scheme);
    }
    Response::from_parts(head, body.map_err(body::BoxError::from).boxed())
}

/// Answers 101 to the client and splices both upgraded connections once each side has
/// switched. The client's side still runs over the TCP-toxic layer, so toxics apply to the
/// tunnel's bytes.
fn switch_protocols(
    mut upstream_response: Response<hyper::body::Incoming>,
    client_upgrade: Option<OnUpgrade>,
    cancel: CancellationToken,
) -> Response<ResponseBody> {
    let upstream_upgrade = hyper::upgrade::on(&mut upstream_response);
    let (head, _) = upstream_response.into_parts();
    let Some(client_upgrade) = client_upgrade else {
        return error_response(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "the upstream switched protocols on a request that cannot be upgraded",
        );
    };
    tokio::spawn(async move {
        let tunnel = async {
            let (client, upstream) = tokio::try_join!(client_upgrade, upstream_upgrade)?;
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            Ok::<(), body::BoxError>(())
        };
        tokio::select! {
            () = cancel.cancelled() => {}
            ended = tunnel => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "upgraded tunnel ended");
                }
            }
        }
    });
    Response::from_parts(head, body::full(bytes::Bytes::new()))
}
