//! One request through an HTTP proxy: its limits, its faults in their fixed order (see the
//! module above), then the upstream or the stand-in's answer, and its journal entry, which
//! its response body completes when the last byte leaves (or the answer is cut).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use downtime_model::ToxicKind;
use downtime_model::http_fault::{AbortMode, HttpAction};
use http::header::HeaderMap;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::answers::{self, add_rate_headers};
use super::body::{CutAfter, IdleWatch, Paced, ResponseBody, full};
use super::forward::{self, Forward};
use super::forward_proxy::{self, Origin};
use super::journal::JournalEntry;
use super::metered::{BodyOutcome, Counted, Recorded};
use super::{AbortSignal, HttpShared, faults};
use crate::toxics::ChainEntry;

fn action(entry: &ChainEntry) -> Option<&HttpAction> {
    match &entry.toxic.kind {
        ToxicKind::Http(a) => Some(a),
        _ => None,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A request and what it needs until its answer is journaled.
struct Ongoing {
    entry: JournalEntry,
    started: Instant,
    bytes_in: Arc<AtomicU64>,
}

impl Ongoing {
    /// Journals the answer's head and wraps its body so that the entry is completed when
    /// the body ends.
    fn finish(
        self,
        shared: &HttpShared,
        mut response: Response<ResponseBody>,
        fault: Option<&str>,
    ) -> Response<ResponseBody> {
        let Ongoing {
            mut entry,
            started,
            bytes_in,
        } = self;
        entry.status = response.status().as_u16();
        entry.fault = fault.map(str::to_owned);
        entry.headers_ms = millis(started.elapsed());
        entry.duration_ms = entry.headers_ms;
        shared.counters.record(entry.status, fault);
        let status = response.status();
        let expected = if entry.method == "HEAD"
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Some(0)
        } else {
            response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .or_else(|| http_body::Body::size_hint(response.body()).exact())
        };
        let seq = shared.journal.push(entry);
        let body = std::mem::replace(response.body_mut(), full(Bytes::new()));
        *response.body_mut() = ResponseBody::new(Recorded::new(
            body,
            shared.journal.clone(),
            (seq, started),
            bytes_in,
            expected,
        ));
        response
    }

    /// Journals a request that gets no answer at all (an abort fault).
    fn cut(self, shared: &HttpShared, fault: &str) {
        let mut entry = self.entry;
        entry.fault = Some(fault.to_owned());
        entry.headers_ms = 0;
        entry.duration_ms = millis(self.started.elapsed());
        entry.cut = Some("abort");
        shared.counters.record(0, Some(fault));
        shared.journal.push(entry);
    }
}

/// The request target as the journal shows it: path and query, or a `CONNECT` authority.
fn target(parts: &http::request::Parts) -> String {
    if parts.method == Method::CONNECT {
        return parts.uri.to_string();
    }
    parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
}

/// A head over the proxy's limits, answered before any fault or the upstream sees it.
fn over_limits(
    parts: &http::request::Parts,
    o: &downtime_model::http_options::HttpOptions,
) -> Option<Response<ResponseBody>> {
    let target = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > o.max_uri_bytes as usize {
        return Some(answers::over_limit(
            StatusCode::URI_TOO_LONG,
            "target",
            target,
            "max_uri_bytes",
            o.max_uri_bytes,
        ));
    }
    let count = parts.headers.len();
    if count > o.max_headers as usize {
        return Some(answers::over_limit(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header count",
            count,
            "max_headers",
            o.max_headers,
        ));
    }
    let head: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + target;
    if head > o.max_head_bytes as usize {
        return Some(answers::over_limit(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "head",
            head,
            "max_head_bytes",
            o.max_head_bytes,
        ));
    }
    None
}

/// What a request knows of its connection.
pub(crate) struct Context {
    pub(crate) peer: SocketAddr,
    pub(crate) abort: Arc<AbortSignal>,
    /// The client socket's reset flag (a tunnel inherits its connection's).
    pub(crate) reset: Arc<std::sync::atomic::AtomicBool>,
    /// Inside an intercepted `CONNECT` tunnel: the host requests go to.
    pub(crate) origin: Option<Arc<Origin>>,
}

/// Where a request goes: `host:port`, and whether over TLS.
type Destination = (Arc<str>, bool);

/// Where the request goes; `None` for a stand-in.
fn destination(
    parts: &http::request::Parts,
    shared: &HttpShared,
    origin: Option<&Origin>,
) -> Result<Option<Destination>, Box<Response<ResponseBody>>> {
    if let Some(o) = origin {
        return Ok(Some((o.authority.clone(), o.tls)));
    }
    if shared.forward.is_none() {
        return Ok(shared.upstream.clone().map(|u| (u, shared.upstream_tls)));
    }
    let (Some(authority), Some("http") | None) = (parts.uri.authority(), parts.uri.scheme_str())
    else {
        return Err(Box::new(answers::error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a forward proxy takes requests in absolute form (GET http://host/path) and CONNECT host:port",
        )));
    };
    let authority = match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:80", authority.as_str()),
    };
    Ok(Some((authority.into(), false)))
}

pub(crate) async fn handle(
    req: Request<Incoming>,
    shared: Arc<HttpShared>,
    context: Context,
) -> Result<Response<ResponseBody>, Infallible> {
    let Context {
        peer,
        abort,
        reset,
        origin,
    } = context;
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let ongoing = Ongoing {
        entry: JournalEntry {
            seq: 0,
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            method: parts.method.to_string(),
            path: target(&parts),
            host: faults::target_host(&parts),
            headers: journal_headers(&parts.headers),
            status: 0,
            fault: None,
            duration_ms: 0,
            headers_ms: 0,
            bytes_in: 0,
            bytes_out: 0,
            cut: None,
        },
        started,
        bytes_in: Arc::new(AtomicU64::new(0)),
    };
    if parts.method == Method::CONNECT {
        let answer = forward_proxy::connect(parts, &shared, peer, reset);
        return Ok(ongoing.finish(&shared, answer, None));
    }
    if let Some(refused) = over_limits(&parts, &shared.options) {
        return Ok(ongoing.finish(&shared, refused, None));
    }
    let dest = match destination(&parts, &shared, origin.as_deref()) {
        Ok(dest) => dest,
        Err(refused) => return Ok(ongoing.finish(&shared, *refused, None)),
    };
    let chain = shared.faults.borrow().clone();
    let selected = faults::select(&chain, &parts, &shared.rng);
    let log = RouterLog {
        method: ongoing.entry.method.clone(),
        path: ongoing.entry.path.clone(),
        host: forward::client_host(&parts).unwrap_or_default(),
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
                let mut response = answers::rate_limited();
                add_rate_headers(response.headers_mut(), decision, true);
                return Ok(ongoing.finish(&shared, response, Some(&e.toxic.name)));
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
        produce(
            parts,
            body,
            &selected,
            &shared,
            (&abort, peer, dest),
            &ongoing,
        )
        .await
    };
    let produced = match &router {
        Some((cfg, name)) => {
            let limit = Duration::from_secs(cfg.timeout);
            match tokio::time::timeout(limit, respond).await {
                Ok(r) => r,
                Err(_) => {
                    log.emit("H12", "Request timeout", started);
                    Some((answers::h12_response(), Some(name.clone())))
                }
            }
        }
        None => respond.await,
    };
    let Some((mut response, fault)) = produced else {
        // An abort fault answers nothing: the connection task drops the connection.
        let name = selected
            .iter()
            .find(|e| matches!(action(e), Some(HttpAction::Abort(_))))
            .map_or_else(String::new, |e| e.toxic.name.clone());
        ongoing.cut(&shared, &name);
        return Ok(std::future::pending().await);
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
    Ok(ongoing.finish(&shared, response, fault.as_deref()))
}

/// Steps 4–7: abort, answer or forward, then pace the body. `None`: an abort fault ends
/// the connection instead of answering.
async fn produce(
    parts: http::request::Parts,
    body: Incoming,
    selected: &[&ChainEntry],
    shared: &HttpShared,
    (abort, peer, dest): (&AbortSignal, SocketAddr, Option<Destination>),
    ongoing: &Ongoing,
) -> Option<(Response<ResponseBody>, Option<String>)> {
    let abort_fault = selected.iter().find_map(|e| match action(e) {
        Some(HttpAction::Abort(a)) => Some((a.mode, e.toxic.name.clone())),
        _ => None,
    });
    if let Some((mode @ (AbortMode::Reset | AbortMode::EmptyReply), _)) = &abort_fault {
        abort.fire(*mode == AbortMode::Reset);
        return None;
    }
    let grpc = forward::is_grpc(&parts.headers);
    let answer = selected.iter().find_map(|e| match action(e) {
        Some(HttpAction::Maintenance(m)) => {
            Some((answers::maintenance(m, shared), e.toxic.name.clone()))
        }
        Some(HttpAction::Status(s)) if grpc => {
            Some((answers::grpc_status_reply(s.status), e.toxic.name.clone()))
        }
        Some(HttpAction::Status(s)) => Some((answers::status_reply(s), e.toxic.name.clone())),
        _ => None,
    });
    let (mut response, mut fault) = match (answer, &dest) {
        (Some((response, name)), _) => (response, Some(name)),
        (None, Some((upstream, upstream_tls))) => {
            let outcome = Arc::new(BodyOutcome::default());
            let idle = Duration::from_millis(shared.options.body_timeout_ms);
            let body = Counted::new(body, ongoing.bytes_in.clone(), outcome.clone(), idle);
            let f = Forward {
                upstream,
                upstream_tls: *upstream_tls,
                client_tls: shared.tls.is_some(),
                options: &shared.options,
                clients: &shared.clients,
                peer,
                body: outcome,
                cancel: &shared.cancel,
            };
            (forward::forward(parts, body, f).await, None)
        }
        (None, None) => (
            answers::maintenance(&answers::default_maintenance(), shared),
            None,
        ),
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
    Some((response, fault))
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
        "upgrade",
    ];
    KEEP.iter()
        .filter_map(|name| {
            let v = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), v.to_owned()))
        })
        .collect()
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
            self.path.escape_debug(),
            self.host.escape_debug(),
            self.peer.ip()
        );
    }
}
