//! HTTP proxies: one stack per accepted connection, with no hop in between —
//! the socket → the proxy's TCP toxics as an I/O layer ([`crate::toxic_io`]) → hyper
//! (HTTP/1.1 or HTTP/2 with prior knowledge, detected from the first bytes) → the HTTP
//! faults of each request (`pipeline`) → the upstream (`forward`), or the maintenance
//! answer of a stand-in without upstream.
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

mod answers;
pub mod body;
pub mod faults;
mod forward;
mod forward_proxy;
pub mod journal;
mod metered;
mod pipeline;
mod tls_accept;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use downtime_model::http_options::{HttpOptions, MAX_HEAD_BYTES_LIMIT, MAX_HEADERS_LIMIT};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use journal::Journal;
use rand::rngs::SmallRng;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::toxic_io::ToxicIo;
use crate::toxics::Chain;
pub(crate) use forward::UpstreamClients;
pub(crate) use forward_proxy::Forwarding;

/// What every connection of one HTTP proxy shares.
pub(crate) struct HttpShared {
    pub(crate) name: Arc<str>,
    /// The upstream's `host:port` (without scheme); `None` for a stand-in.
    pub(crate) upstream: Option<Arc<str>>,
    /// Whether the upstream is reached over TLS (`https://`).
    pub(crate) upstream_tls: bool,
    /// TLS termination on the listener, if the proxy has `tls`.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// The names of the proxy's certificate (what a broken one of a TLS fault is made for).
    pub(crate) tls_names: Vec<String>,
    /// The local CA, for TLS proxies and forward proxies (issues broken leaves too).
    pub(crate) ca: Option<Arc<crate::tls::LocalCa>>,
    /// Forward mode (`HTTPS_PROXY`): interception settings and the CA.
    pub(crate) forward: Option<forward_proxy::Forwarding>,
    pub(crate) options: HttpOptions,
    pub(crate) faults: watch::Receiver<Arc<Chain>>,
    pub(crate) clients: UpstreamClients,
    pub(crate) journal: Arc<Journal>,
    pub(crate) rng: Mutex<SmallRng>,
    pub(crate) status_page: Arc<str>,
    pub(crate) counters: Arc<HttpCounters>,
    /// The proxy's cancellation: ends connections and upgraded tunnels when it stops.
    pub(crate) cancel: CancellationToken,
    /// hyper's settings, built once per proxy start from `options`.
    pub(crate) server: auto::Builder<TokioExecutor>,
}

/// Requests an HTTP proxy answered, by status and by the fault that answered or altered
/// them, for `/metrics`. Statuses are a fixed array (no lock per request); fault names go
/// through a small map touched only by faulted requests.
#[derive(Debug)]
pub struct HttpCounters {
    by_status: Box<[AtomicU64]>,
    by_fault: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// Distinct fault names counted per proxy; later ones share [`OTHER_FAULTS`].
const MAX_FAULT_NAMES: usize = 1000;
/// The series that counts faults past [`MAX_FAULT_NAMES`].
const OTHER_FAULTS: &str = "(other)";

/// Statuses counted: 100 to 999; index 0 counts requests cut without an answer.
const STATUS_SLOTS: usize = 1000;

impl Default for HttpCounters {
    fn default() -> Self {
        HttpCounters {
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            by_fault: Mutex::default(),
        }
    }
}

impl HttpCounters {
    pub(crate) fn record(&self, status: u16, fault: Option<&str>) {
        if let Some(slot) = self.by_status.get(usize::from(status)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(fault) = fault {
            let mut map = self
                .by_fault
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Fault names come and go: past MAX_FAULT_NAMES new ones count under "(other)".
            let key = if map.contains_key(fault) || map.len() < MAX_FAULT_NAMES {
                fault
            } else {
                OTHER_FAULTS
            };
            match map.get_mut(key) {
                Some(n) => *n += 1,
                None => {
                    map.insert(key.to_owned(), 1);
                }
            }
        }
    }

    /// `(status, requests)` for every status seen; status 0 means cut without an answer.
    pub fn by_status(&self) -> Vec<(u16, u64)> {
        self.by_status
            .iter()
            .enumerate()
            .filter_map(|(status, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| (u16::try_from(status).unwrap_or(0), n))
            })
            .collect()
    }

    /// `(fault name, requests)` for every fault that answered or altered a request.
    pub fn by_fault(&self) -> Vec<(String, u64)> {
        self.by_fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Lets a request handler end its connection abruptly (a reset or an empty reply).
#[derive(Default)]
pub(crate) struct AbortSignal {
    mode: AtomicU8,
    notify: Notify,
}

const ABORT_CLOSE: u8 = 1;
const ABORT_RESET: u8 = 2;

impl AbortSignal {
    pub(crate) fn fire(&self, reset: bool) {
        self.mode.store(
            if reset { ABORT_RESET } else { ABORT_CLOSE },
            Ordering::SeqCst,
        );
        self.notify.notify_one();
    }
}

/// hyper's own header-count ceiling: a little above the proxy's limit, so that a request
/// just over it still reaches the pipeline and gets the JSON 431 naming the setting, while
/// the per-request header array hyper allocates stays small (a ceiling of 1,000 cost the
/// stand-in ~8 % of its CPU). Far over it, hyper answers a bare 431 itself.
fn hyper_header_ceiling(max_headers: u32) -> usize {
    (max_headers.saturating_add(64)).min(MAX_HEADERS_LIMIT) as usize
}

/// Streams one HTTP/2 connection may have open at once.
const MAX_H2_STREAMS: u32 = 256;
/// How often an HTTP/2 connection is pinged, and how long the answer may take.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);

/// hyper's settings for every connection of a proxy. Its own ceilings sit at the largest
/// values the proxy options accept, so that a head over the proxy's configured limits still
/// reaches the pipeline, which answers with a JSON body naming the setting.
pub(crate) fn builder(options: &HttpOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // From accept and again after each answer: also the idle keep-alive timeout.
        .header_read_timeout(Duration::from_millis(options.header_timeout_ms))
        // A client that half-closes after a complete request still gets its answer.
        .half_close(true)
        .max_headers(hyper_header_ceiling(options.max_headers))
        .max_buf_size(MAX_HEAD_BYTES_LIMIT as usize + 64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES_LIMIT)
        .max_concurrent_streams(MAX_H2_STREAMS)
        // A peer that stops answering pings is gone: free its connection.
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_INTERVAL);
    builder
}

/// Serves one accepted client: through TLS first when the proxy terminates it (the
/// handshake under the TLS faults, bounded by the head timeout), then hyper.
pub(crate) async fn serve_client(io: ToxicIo, peer: SocketAddr, shared: Arc<HttpShared>) {
    let reset = io.reset_handle();
    let Some(config) = shared.tls.clone() else {
        return serve_connection(io, reset, peer, shared, None).await;
    };
    // Each step bounds itself (a stalled-handshake fault holds on purpose).
    let handshake = async {
        let names = shared.tls_names.clone();
        tls_accept::accept(io, &shared, config, &names).await
    };
    let stream = tokio::select! {
        () = shared.cancel.cancelled() => return,
        stream = handshake => stream,
    };
    if let Some(stream) = stream {
        serve_connection(stream, reset, peer, shared, None).await;
    }
}

/// Serves hyper on `io` (plain or TLS) until it closes, the proxy stops, or a fault aborts
/// it; `reset` makes the socket close with a reset. `origin` is where requests go inside
/// an intercepted `CONNECT` tunnel.
async fn serve_connection<I>(
    io: I,
    reset: Arc<std::sync::atomic::AtomicBool>,
    peer: SocketAddr,
    shared: Arc<HttpShared>,
    origin: Option<Arc<forward_proxy::Origin>>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let cancel = shared.cancel.clone();
    let server = shared.clone();
    let server = &server.server;
    let abort = Arc::new(AbortSignal::default());
    let handler_abort = abort.clone();
    // hyper's head timeout starts only once it has told HTTP/1 from HTTP/2, which waits
    // for the first bytes: until a first request arrives, this deadline closes a client
    // that sends nothing (or too little to tell).
    let first_request = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = first_request.clone();
    let head_timeout = Duration::from_millis(shared.options.header_timeout_ms);
    let handler_reset = reset.clone();
    let service = hyper::service::service_fn(move |req| {
        seen.store(true, Ordering::Relaxed);
        let context = pipeline::Context {
            peer,
            abort: handler_abort.clone(),
            reset: handler_reset.clone(),
            origin: origin.clone(),
        };
        pipeline::handle(req, shared.clone(), context)
    });
    let silent = async {
        tokio::time::sleep(head_timeout).await;
        if first_request.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    let conn = server.serve_connection_with_upgrades(TokioIo::new(io), service);
    // Pinned here, not moved into the select: the socket must outlive the reset choice.
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = &mut conn => {}
        () = cancel.cancelled() => {}
        () = silent => {}
        () = abort.notify.notified() => {
            if abort.mode.load(Ordering::SeqCst) == ABORT_RESET {
                reset.store(true, Ordering::Relaxed);
            }
        }
    }
    // Dropping the connection drops the socket, with a reset when one was asked for.
}
