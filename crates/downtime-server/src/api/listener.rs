//! How the API and status listeners are served: bounded time per connection phase and a
//! bounded number of connections per listener, so that idle or slow clients on one
//! listener (the status page's, published on `0.0.0.0`) cannot lock out the control API.
//!
//! Each listener has its own accept loop and its own connection count, so a flood on the
//! status listener never takes a slot of the API's. Per connection (hyper's HTTP/1):
//! - the **header-read timeout** ([`HttpLimits::header_read_timeout`]) runs from the moment
//!   the connection waits for a request head: right after accept and again after every
//!   answer, so it is also the **idle keep-alive timeout**: a kept-alive connection that
//!   sends no new request within it is closed, as is one that trickles a head;
//! - the **body-read inactivity timeout** ([`HttpLimits::body_timeout`]) fails the read of
//!   a request body when no part of it arrives within the limit (reset by each part), and
//!   the connection is closed after the answer;
//! - over the cap ([`HttpLimits::max_connections`]) a new connection is answered `503` with
//!   a JSON body and `Connection: close` (after reading its request head, at most
//!   [`REFUSAL_WAIT`], so that the close does not reset the answer away), then closed. At
//!   most [`MAX_REFUSING`] such answers are in progress; beyond that, connections are
//!   closed at once. Either way the descriptors in use stay bounded by the cap plus that
//!   number. We answer rather than stop accepting because an HTTP client then gets a
//!   reason instead of a connect that hangs in the kernel's backlog.
//!
//! With TLS ([`serve_tls`], the API's `--api-tls`), the handshake must end within the
//! header-read timeout (it is part of sending the first request head); an over-cap
//! connection gets its `503` after a handshake bounded by [`REFUSAL_WAIT`].
//!
//! Accept errors (`EMFILE` when the process is out of descriptors) are logged and the loop
//! waits before the next accept, doubling the wait up to a second, so it never spins.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::timeout::TimeoutBody;

/// Most over-cap connections being answered `503` at once, per listener.
pub const MAX_REFUSING: usize = 64;
/// How long an over-cap connection is given to send its request head before its `503`.
pub const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// Time and connection limits of one HTTP listener (the API's or the status page's).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time a client has to send a whole request head, counted from accept and from the
    /// end of each answer (so also the idle keep-alive timeout). Default 10 s.
    pub header_read_timeout: Duration,
    /// Longest wait for the next part of a request body. Default 10 s.
    pub body_timeout: Duration,
    /// Connections served at once on this listener; more are answered 503. Default 1024.
    pub max_connections: usize,
}

/// The default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `stop` is cancelled, then stops
/// accepting, asks every open connection to close after its current answer and waits for
/// them (the caller bounds that wait). `name` labels log lines (`api`, `status`).
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    serve_tls(name, listener, app, limits, None, stop).await
}

/// [`serve`], over TLS when `tls` is given.
pub async fn serve_tls(
    name: &'static str,
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let active = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::new(AtomicUsize::new(0));
    let tracker = TaskTracker::new();
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tracing::warn!(listener = name, error = %e, wait = ?backoff, "accept failed");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if active.load(Ordering::Acquire) >= limits.max_connections {
            refuse(name, stream, acceptor.clone(), &refusing, &tracker);
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(active.clone());
        let (app, stop) = (app.clone(), stop.clone());
        match acceptor.clone() {
            None => {
                tracker.spawn(connection(stream, app, limits, stop, slot));
            }
            Some(acceptor) => {
                tracker.spawn(async move {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => connection(tls, app, limits, stop, slot).await,
                        Ok(Err(e)) => {
                            tracing::debug!(listener = name, error = %e, "tls handshake failed");
                        }
                        Err(_) => tracing::debug!(listener = name, "tls handshake timed out"),
                    }
                });
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Gives a connection slot back when the connection ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn connection<S>(
    stream: S,
    app: Router,
    limits: HttpLimits,
    stop: CancellationToken,
    _slot: Slot,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = limits.body_timeout;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut app = app.clone();
        let request = request.map(|body| Body::new(TimeoutBody::new(body_timeout, body)));
        async move {
            let response = tower::Service::call(&mut app, request).await;
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts and clients hanging up are routine; nothing to tell the operator.
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

/// The answer to a connection over the cap.
fn refusal_body(name: &str) -> String {
    let body = serde_json::json!({
        "error": format!("too many connections to the {name} listener; try again later"),
        "status": 503,
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         connection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}\n",
        body.len() + 1
    )
}

fn refuse(
    name: &'static str,
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    refusing: &Arc<AtomicUsize>,
    tracker: &TaskTracker,
) {
    if refusing.load(Ordering::Acquire) >= MAX_REFUSING {
        // Too many answers in progress already: close at once, keeping descriptors bounded.
        drop(stream);
        return;
    }
    refusing.fetch_add(1, Ordering::AcqRel);
    let slot = Slot(refusing.clone());
    tracker.spawn(async move {
        let _slot = slot;
        match tls {
            None => answer_refusal(name, stream).await,
            Some(acceptor) => {
                if let Ok(Ok(stream)) =
                    tokio::time::timeout(REFUSAL_WAIT, acceptor.accept(stream)).await
                {
                    answer_refusal(name, stream).await;
                }
            }
        }
    });
}

/// Reads a refused connection's request head (bounded), answers 503 and closes.
async fn answer_refusal<S>(name: &'static str, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    {
        let mut stream = stream;
        // Read what the client sent (its request head, usually) so that closing does not
        // reset the connection and lose the answer, then answer and close.
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(REFUSAL_WAIT, async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.len() > 16 * 1024 {
                    break;
                }
            }
        })
        .await;
        let _ = tokio::time::timeout(REFUSAL_WAIT, async {
            let _ = stream.write_all(refusal_body(name).as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
        tracing::debug!(listener = name, "connection over the cap answered 503");
    }
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit, so that
/// connections are bounded by our caps and not by a small default; logs both. Returns the
/// soft limit in force afterwards.
pub fn raise_nofile_limit() -> Option<u64> {
    let (soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit");
            return None;
        }
    };
    match rlimit::increase_nofile_limit(hard) {
        Ok(now) => {
            tracing::info!(
                soft_before = soft,
                hard,
                soft = now,
                "open-files limit (RLIMIT_NOFILE)"
            );
            Some(now)
        }
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "cannot raise the open-files limit");
            Some(soft)
        }
    }
}

/// The soft open-files limit now in force, if it can be read.
pub fn nofile_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}
