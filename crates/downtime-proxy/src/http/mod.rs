//! HTTP proxies: each accepted connection is served by hyper; each request passes through the
//! proxy's HTTP faults, then to the upstream (pooled, keep-alive, streamed bodies) — or, for a
//! stand-in without upstream, is answered by the maintenance fault.
//!
//! Faults compose in this fixed order, whatever order they were added in:
//! 1. `rate_limit` — counts every request that arrives; over the limit answers 429;
//! 2. `http_latency` — delays the response start (several add up);
//! 3. `router_timeout` — bounds everything below: no response start in time → 503 (H12);
//!    then a body idle too long is cut (H15);
//! 4. `abort` — `reset`/`empty_reply` end the connection instead of answering;
//!    `close_after_headers`/`close_mid_body` cut the answer below;
//! 5. `maintenance` / `status` — the first one (in insertion order) answers instead of the
//!    upstream;
//! 6. the upstream, or the default maintenance answer for a stand-in;
//! 7. `slow_body` — paces the response body.

pub mod body;
pub mod faults;
pub mod journal;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use body::{CutAfter, IdleWatch, Paced, ResponseBody, full};
use bytes::Bytes;
use downtime_model::ToxicKind;
use downtime_model::http_fault::{
    AbortMode, HttpAction, Maintenance, StatusReply, maintenance_body,
};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use journal::{Journal, JournalEntry};
use rand::rngs::SmallRng;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::toxics::{Chain, ChainEntry};

/// What every connection of one HTTP proxy shares.
pub(crate) struct HttpShared {
    pub(crate) name: Arc<str>,
    pub(crate) upstream: Option<Arc<str>>,
    pub(crate) faults: watch::Receiver<Arc<Chain>>,
    pub(crate) client: Client<HttpConnector, Incoming>,
    pub(crate) journal: Arc<Journal>,
    pub(crate) rng: Mutex<SmallRng>,
    pub(crate) status_page: Arc<str>,
    /// Connections relayed through the TCP toxics to the internal listener arrive from
    /// loopback: their relay socket's local address → the real client's address, so that
    /// rate limits per IP and router logs still see the client.
    pub(crate) relayed: Mutex<std::collections::HashMap<SocketAddr, SocketAddr>>,
}

impl HttpShared {
    /// The real client of a connection accepted on the internal listener (`peer` itself
    /// when it was not relayed by this proxy).
    pub(crate) fn client_of(&self, peer: SocketAddr) -> SocketAddr {
        let relayed = self
            .relayed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        relayed.get(&peer).copied().unwrap_or(peer)
    }
}

/// Dials the internal listener `hop` for the client at `client`, recording the relay
/// socket's address before it connects, so the internal accept always finds it. The guard
/// forgets it when the relayed connection ends.
pub(crate) async fn dial_relay(
    shared: &Arc<HttpShared>,
    hop: &str,
    client: SocketAddr,
) -> std::io::Result<(TcpStream, RelayGuard)> {
    let hop: SocketAddr = hop
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = if hop.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(hop.ip(), 0))?;
    let local = socket.local_addr()?;
    shared
        .relayed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(local, client);
    let guard = RelayGuard {
        shared: shared.clone(),
        local,
    };
    let stream = socket.connect(hop).await?;
    Ok((stream, guard))
}

/// Removes a relayed connection's entry from [`HttpShared::relayed`] when dropped.
pub(crate) struct RelayGuard {
    shared: Arc<HttpShared>,
    local: SocketAddr,
}

impl Drop for RelayGuard {
    fn drop(&mut self) {
        self.shared
            .relayed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.local);
    }
}

/// A pooled keep-alive client for upstream requests.
pub(crate) fn upstream_client() -> Client<HttpConnector, Incoming> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// Lets a request handler end its connection abruptly (a reset or an empty reply).
#[derive(Default)]
struct AbortSignal {
    mode: AtomicU8,
    notify: Notify,
}

const ABORT_CLOSE: u8 = 1;
const ABORT_RESET: u8 = 2;

impl AbortSignal {
    fn fire(&self, reset: bool) {
        self.mode.store(
            if reset { ABORT_RESET } else { ABORT_CLOSE },
            Ordering::SeqCst,
        );
        self.notify.notify_one();
    }
}

/// Serves one client connection until it closes, the proxy stops, or a fault aborts it.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<HttpShared>,
    cancel: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // A second handle on the socket, so an abort can turn the close into a reset.
    let Ok(std) = stream.into_std() else { return };
    let spare = std.try_clone().ok();
    let Ok(stream) = TcpStream::from_std(std) else {
        return;
    };
    let abort = Arc::new(AbortSignal::default());
    let handler_abort = abort.clone();
    let service = hyper::service::service_fn(move |req| {
        handle(req, shared.clone(), peer, handler_abort.clone())
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        () = cancel.cancelled() => {}
        () = abort.notify.notified() => {
            if abort.mode.load(Ordering::SeqCst) == ABORT_RESET
                && let Some(s) = &spare {
                    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                }
        }
    }
    drop(spare);
}

fn action(entry: &ChainEntry) -> Option<&HttpAction> {
    match &entry.toxic.kind {
        ToxicKind::Http(a) => Some(a),
        _ => None,
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<HttpShared>,
    peer: SocketAddr,
    abort: Arc<AbortSignal>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let chain = shared.faults.borrow().clone();
    let selected = faults::select(&chain, &parts, &shared.rng);
    let entry = JournalEntry {
        seq: 0,
        at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        headers: journal_headers(&parts.headers),
        status: 0,
        fault: None,
        duration_ms: 0,
    };
    let log = RouterLog {
        method: entry.method.clone(),
        path: entry.path.clone(),
        host: parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        peer,
    };

    // 1. Rate limits: every arriving request takes a token.
    let mut rate_headers = None;
    for e in &selected {
        if let Some(HttpAction::RateLimit(cfg)) = action(e) {
            let key = match &cfg.key_header {
                Some(h) => parts
                    .headers
                    .get(h.as_str())
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned(),
                None => peer.ip().to_string(),
            };
            let decision = e.state.take_token(cfg, &key, Instant::now());
            if !decision.allowed {
                let mut response = json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    r#"{"id": "rate_limit", "message": "Your account reached the API rate limit. Please wait a few minutes before making new requests."}"#,
                );
                add_rate_headers(response.headers_mut(), decision, true);
                return Ok(finish(
                    &shared,
                    entry,
                    response,
                    Some(&e.toxic.name),
                    started,
                ));
            }
            rate_headers = Some(decision);
        }
    }

    // 2. Per-request latency, added up.
    let delay = selected
        .iter()
        .filter_map(|e| match action(e) {
            Some(HttpAction::Latency(cfg)) => Some(faults::draw_latency(cfg, &shared.rng)),
            _ => None,
        })
        .fold(Duration::ZERO, Duration::saturating_add);

    // 3. Router deadlines around everything that produces the response.
    let router = selected.iter().find_map(|e| match action(e) {
        Some(HttpAction::RouterTimeout(cfg)) => Some((*cfg, e.toxic.name.clone())),
        _ => None,
    });
    let respond = async {
        if !delay.is_zero() {
            let now = tokio::time::Instant::now();
            crate::precise::sleep_until(crate::toxics::saturating_at(now, delay)).await;
        }
        produce(parts, body, &selected, &shared, &abort, (&entry, started)).await
    };
    let (mut response, fault) = match &router {
        Some((cfg, name)) => {
            let limit = Duration::from_secs(cfg.timeout);
            match tokio::time::timeout(limit, respond).await {
                Ok(r) => r,
                Err(_) => {
                    log.emit("H12", "Request timeout", started);
                    (h12_response(), Some(name.clone()))
                }
            }
        }
        None => respond.await,
    };
    if let Some((cfg, _)) = &router {
        let idle = Duration::from_secs(cfg.idle);
        let log = log.clone();
        let body = std::mem::replace(response.body_mut(), full(Bytes::new()));
        *response.body_mut() = ResponseBody::new(IdleWatch::new(
            body,
            idle,
            Box::new(move || log.emit("H15", "Idle connection", started)),
        ));
    }
    if let Some(decision) = rate_headers {
        add_rate_headers(response.headers_mut(), decision, false);
    }
    // The journal names the fault that answered or changed the answer; a rate limit that
    // let the request through, or a router deadline that did not fire, did neither.
    let fault = fault.or_else(|| {
        selected
            .iter()
            .find(|e| matches!(action(e), Some(HttpAction::Latency(_))))
            .map(|e| e.toxic.name.clone())
    });
    Ok(finish(&shared, entry, response, fault.as_deref(), started))
}

/// Steps 4–7: abort, answer or forward, then pace the body.
async fn produce(
    parts: http::request::Parts,
    body: Incoming,
    selected: &[&ChainEntry],
    shared: &HttpShared,
    abort: &AbortSignal,
    (entry, started): (&JournalEntry, Instant),
) -> (Response<ResponseBody>, Option<String>) {
    let abort_fault = selected.iter().find_map(|e| match action(e) {
        Some(HttpAction::Abort(a)) => Some((a.mode, e.toxic.name.clone())),
        _ => None,
    });
    if let Some((mode @ (AbortMode::Reset | AbortMode::EmptyReply), name)) = &abort_fault {
        // No answer will be sent: journal the request now, with status 0.
        let mut cut = entry.clone();
        cut.fault = Some(name.clone());
        cut.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        shared.journal.push(cut);
        abort.fire(*mode == AbortMode::Reset);
        // The connection task drops this request with the connection.
        std::future::pending::<()>().await;
    }
    let answer = selected.iter().find_map(|e| match action(e) {
        Some(HttpAction::Maintenance(m)) => Some((maintenance(m, shared), e.toxic.name.clone())),
        Some(HttpAction::Status(s)) => Some((status_reply(s), e.toxic.name.clone())),
        _ => None,
    });
    let (mut response, mut fault) = match (answer, &shared.upstream) {
        (Some((response, name)), _) => (response, Some(name)),
        (None, Some(upstream)) => (forward(parts, body, upstream, &shared.client).await, None),
        (None, None) => (maintenance(&default_maintenance(), shared), None),
    };
    if let Some((mode, name)) = abort_fault {
        let allowed = match mode {
            AbortMode::CloseAfterHeaders => 0,
            _ => {
                let len = http_body::Body::size_hint(response.body())
                    .exact()
                    .unwrap_or(2);
                usize::try_from(len / 2).unwrap_or(usize::MAX).max(1)
            }
        };
        let inner = std::mem::replace(response.body_mut(), full(Bytes::new()));
        *response.body_mut() = ResponseBody::new(CutAfter::new(inner, allowed));
        fault = Some(name);
    }
    if let Some((rate, name)) = selected.iter().find_map(|e| match action(e) {
        Some(HttpAction::SlowBody(s)) => Some((s.rate, e.toxic.name.clone())),
        _ => None,
    }) {
        let inner = std::mem::replace(response.body_mut(), full(Bytes::new()));
        *response.body_mut() = ResponseBody::new(Paced::new(inner, rate.saturating_mul(1000)));
        fault = fault.or(Some(name));
    }
    (response, fault)
}

fn default_maintenance() -> Maintenance {
    Maintenance {
        status: 503,
        api: String::new(),
        message: String::new(),
        status_page: String::new(),
        headers: Default::default(),
        retry_after: None,
    }
}

fn finish(
    shared: &HttpShared,
    mut entry: JournalEntry,
    response: Response<ResponseBody>,
    fault: Option<&str>,
    started: Instant,
) -> Response<ResponseBody> {
    entry.status = response.status().as_u16();
    entry.fault = fault.map(str::to_owned);
    entry.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    shared.journal.push(entry);
    response
}

/// Headers kept in the journal: enough to tell clients and retries apart, never secrets.
fn journal_headers(headers: &HeaderMap) -> std::collections::BTreeMap<String, String> {
    const KEEP: &[&str] = &[
        "user-agent",
        "content-type",
        "x-request-id",
        "idempotency-key",
        "retry-attempt",
        "x-retry-count",
    ];
    KEEP.iter()
        .filter_map(|name| {
            let v = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), v.to_owned()))
        })
        .collect()
}

fn json_response(status: StatusCode, body: &str) -> Response<ResponseBody> {
    let mut response = Response::new(full(body.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn add_rate_headers(headers: &mut HeaderMap, d: faults::RateDecision, limited: bool) {
    headers.insert("ratelimit-limit", HeaderValue::from(d.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(d.reset_secs));
    if limited {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(d.reset_secs));
    }
}

fn insert_headers(target: &mut HeaderMap, extra: &std::collections::BTreeMap<String, String>) {
    for (name, value) in extra {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            target.insert(n, v);
        }
    }
}

fn maintenance(m: &Maintenance, shared: &HttpShared) -> Response<ResponseBody> {
    let message = if m.message.is_empty() {
        let api = if m.api.is_empty() {
            &*shared.name
        } else {
            m.api.as_str()
        };
        let link = if m.status_page.is_empty() {
            &*shared.status_page
        } else {
            m.status_page.as_str()
        };
        format!("{api} is temporarily unavailable.\nFor more information, visit: {link}")
    } else {
        m.message.clone()
    };
    let status = StatusCode::from_u16(m.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = json_response(status, &maintenance_body(&message));
    if let Some(secs) = m.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    insert_headers(response.headers_mut(), &m.headers);
    response
}

fn status_reply(s: &StatusReply) -> Response<ResponseBody> {
    let (body, content_type) = match &s.body {
        serde_json::Value::Null => (String::new(), None),
        serde_json::Value::String(text) => (text.clone(), Some("text/plain; charset=utf-8")),
        other => (other.to_string(), Some("application/json")),
    };
    let mut response = Response::new(full(body));
    *response.status_mut() =
        StatusCode::from_u16(s.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    insert_headers(response.headers_mut(), &s.headers);
    response
}

fn h12_response() -> Response<ResponseBody> {
    let page = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Application Error</title></head>\
<body><h1>Application error</h1><p>An error occurred in the application and your page could not be served. \
The request timed out (H12) waiting for the application to answer.</p></body></html>\n";
    let mut response = Response::new(full(page));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// What a router log line says about the request.
#[derive(Clone)]
struct RouterLog {
    method: String,
    path: String,
    host: String,
    peer: SocketAddr,
}

impl RouterLog {
    fn emit(&self, code: &str, desc: &str, started: Instant) {
        let service = started.elapsed().as_millis();
        tracing::warn!(
            target: "downtime::router",
            "at=error code={code} desc=\"{desc}\" method={} path=\"{}\" host={} fwd=\"{}\" service={service}ms status=503",
            self.method,
            self.path,
            self.host,
            self.peer.ip()
        );
    }
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .filter(|s| !s.is_empty())
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
    {
        headers.remove(name);
    }
}

async fn forward(
    mut parts: http::request::Parts,
    body: Incoming,
    upstream: &str,
    client: &Client<HttpConnector, Incoming>,
) -> Response<ResponseBody> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("http://{upstream}{path}").parse::<http::Uri>() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            r#"{"id": "bad_request", "message": "the request target is not a valid path"}"#,
        );
    };
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Ok(host) = HeaderValue::from_str(upstream) {
        parts.headers.insert(header::HOST, host);
    }
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut head, body) = response.into_parts();
            strip_hop_by_hop(&mut head.headers);
            Response::from_parts(head, body.map_err(body::BoxError::from).boxed())
        }
        Err(e) => {
            tracing::debug!(upstream, error = %e, "upstream request failed");
            let message = format!("downtime could not reach the upstream {upstream}: {e}");
            let body = format!(
                "{{\"id\": \"bad_gateway\", \"message\": {}}}",
                serde_json::to_string(&message).unwrap_or_default()
            );
            json_response(StatusCode::BAD_GATEWAY, &body)
        }
    }
}
