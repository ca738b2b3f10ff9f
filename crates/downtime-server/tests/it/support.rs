//! Builders shared by the integration tests: the server under test, fake upstreams and an
//! HTTP client, all on real loopback sockets bound to `127.0.0.1:0`.
//!
//! The server runs on its own thread with its own tokio runtime, as it would in its own
//! process, so a test's load (a thousand client tasks) competes with it for CPU but never
//! for the test runtime's scheduler. Every wait here is bounded by [`LONG`] or an explicit
//! deadline, so a hang fails the test instead of stalling the suite.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use downtime_server::{MetricsOptions, ServeOptions};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Upper bound for anything that should happen "soon" (a close, a flushed chunk).
pub const LONG: Duration = Duration::from_secs(10);

// --- the server under test -----------------------------------------------------------

/// A running server; stopped (through its shutdown future) on drop.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    /// The server's thread, joined by [`Server::stop_and_wait`].
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Options for [`Server::start_with`].
#[derive(Default)]
pub struct ServerBuilder {
    seed: Option<u64>,
    metrics: MetricsOptions,
}

impl ServerBuilder {
    /// Fixes the seed of every random choice.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Selects which metric groups `/metrics` serves.
    pub fn metrics(mut self, proxy: bool, runtime: bool) -> Self {
        self.metrics = MetricsOptions { proxy, runtime };
        self
    }

    /// Starts the server.
    pub fn start(self) -> Server {
        let options = ServeOptions {
            seed: self.seed,
            metrics: self.metrics,
            grace: Duration::from_secs(2),
            ..ServeOptions::default()
        };
        Server::start_with(options)
    }
}

impl Server {
    /// A server with default options (random seed, no metrics).
    pub fn start() -> Server {
        ServerBuilder::default().start()
    }

    /// Builder for non-default options.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Starts `downtime_server::run` on a fresh `127.0.0.1:0` listener on its own runtime.
    pub fn start_with(options: ServeOptions) -> Server {
        Server::start_at("127.0.0.1:0", "http", options)
    }

    /// Starts `downtime_server::run` on a listener bound to `bind`; `base` is then
    /// `SCHEME://ADDR` (`https` for an API served over TLS). Its own client is plain.
    pub fn start_at(bind: &str, scheme: &str, options: ServeOptions) -> Server {
        let bind = bind.to_owned();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("downtime-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::bind(bind).await.expect("bind api");
                    addr_tx
                        .send(listener.local_addr().expect("api addr"))
                        .expect("report api addr");
                    let shutdown = async move {
                        let _ = stop_rx.await;
                    };
                    if let Err(e) = downtime_server::run(listener, options, shutdown).await {
                        eprintln!("server ended with an error: {e}");
                    }
                });
                // Connection tasks left behind are dropped with the runtime.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn server thread");
        let addr = addr_rx.recv_timeout(LONG).expect("server did not start");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        Server {
            base: format!("{scheme}://{addr}"),
            client,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Asks the server to stop and waits (at most 15 s) until its thread has ended, so that
    /// what it held (its history file) is closed, as after a process exit.
    pub async fn stop_and_wait(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "server did not stop within 15 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        thread.join().expect("server thread panicked");
    }

    /// Sends one request; `body` is sent verbatim when given.
    pub async fn request(&self, method: Method, path: &str, body: Option<&str>) -> Resp {
        self.request_with(method, path, body, None).await
    }

    /// Like [`Server::request`] with an optional User-Agent.
    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        user_agent: Option<&str>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.body(b.to_owned());
        }
        if let Some(ua) = user_agent {
            req = req.header(reqwest::header::USER_AGENT, ua);
        }
        let started = Instant::now();
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: body: {e}"));
        Resp {
            status,
            headers,
            body,
            elapsed: started.elapsed(),
        }
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, None).await
    }

    /// POST `path` with a raw body.
    pub async fn post(&self, path: &str, body: &str) -> Resp {
        self.request(Method::POST, path, Some(body)).await
    }

    /// PATCH `path` with a raw body.
    pub async fn patch(&self, path: &str, body: &str) -> Resp {
        self.request(Method::PATCH, path, Some(body)).await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> Resp {
        self.request(Method::DELETE, path, None).await
    }

    /// Creates a proxy listening on `127.0.0.1:0`; returns its bound address.
    pub async fn proxy(&self, name: &str, upstream: SocketAddr) -> SocketAddr {
        let body = serde_json::json!({
            "name": name, "listen": "127.0.0.1:0", "upstream": upstream.to_string(),
        });
        let resp = self.post("/proxies", &body.to_string()).await;
        assert_eq!(resp.status, 201, "create proxy {name}: {}", resp.body);
        listen_of(&resp.json())
    }

    /// Creates a proxy with toxics in the same request (our extension).
    pub async fn proxy_with_toxics(
        &self,
        name: &str,
        upstream: SocketAddr,
        toxics: Value,
    ) -> SocketAddr {
        let body = serde_json::json!({
            "name": name, "listen": "127.0.0.1:0", "upstream": upstream.to_string(),
            "toxics": toxics,
        });
        let resp = self.post("/proxies", &body.to_string()).await;
        assert_eq!(resp.status, 201, "create proxy {name}: {}", resp.body);
        listen_of(&resp.json())
    }

    /// Adds a toxic; panics unless the server answers 200.
    pub async fn toxic(&self, proxy: &str, toxic: Value) -> Value {
        let resp = self
            .post(&format!("/proxies/{proxy}/toxics"), &toxic.to_string())
            .await;
        assert_eq!(resp.status, 200, "add toxic {toxic}: {}", resp.body);
        resp.json()
    }

    /// Updates a toxic with PATCH; panics unless the server answers 200.
    pub async fn update_toxic(&self, proxy: &str, toxic: &str, patch: Value) -> Value {
        let resp = self
            .patch(
                &format!("/proxies/{proxy}/toxics/{toxic}"),
                &patch.to_string(),
            )
            .await;
        assert_eq!(resp.status, 200, "update toxic {toxic}: {}", resp.body);
        resp.json()
    }

    /// Removes a toxic; panics unless the server answers 204.
    pub async fn remove_toxic(&self, proxy: &str, toxic: &str) -> Resp {
        let resp = self
            .delete(&format!("/proxies/{proxy}/toxics/{toxic}"))
            .await;
        assert_eq!(resp.status, 204, "remove toxic {toxic}: {}", resp.body);
        resp
    }

    /// Enables or disables a proxy; panics unless the server answers 200.
    pub async fn set_enabled(&self, proxy: &str, enabled: bool) -> Value {
        let resp = self
            .post(
                &format!("/proxies/{proxy}"),
                &serde_json::json!({ "enabled": enabled }).to_string(),
            )
            .await;
        assert_eq!(resp.status, 200, "toggle {proxy}: {}", resp.body);
        resp.json()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The bound address in a proxy's `listen` field.
pub fn listen_of(proxy: &Value) -> SocketAddr {
    proxy["listen"]
        .as_str()
        .unwrap_or_else(|| panic!("no listen in {proxy}"))
        .parse()
        .unwrap_or_else(|e| panic!("listen of {proxy} is not an address: {e}"))
}

/// One HTTP answer, with the body as received.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body, byte for byte.
    pub body: String,
    /// Time from sending the request to having the whole body.
    pub elapsed: Duration,
}

impl Resp {
    /// The body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the exact error answer of Toxiproxy: status, JSON body plus newline, and the
    /// `text/plain` content type with nosniff.
    pub fn assert_error(&self, status: u16, message: &str) {
        let expected = format!(
            "{}\n",
            serde_json::json!({ "error": message, "status": status })
        );
        assert_eq!(
            (self.status, self.body.as_str()),
            (status, expected.as_str()),
            "error answer"
        );
        self.assert_error_headers();
    }

    /// Asserts the status and that the error text starts with `prefix` and contains every
    /// string of `contains`; returns the error text.
    pub fn assert_error_like(&self, status: u16, prefix: &str, contains: &[&str]) -> String {
        assert_eq!(self.status, status, "status of {:?}", self.body);
        assert!(
            self.body.ends_with("}\n"),
            "no trailing newline: {:?}",
            self.body
        );
        let v = self.json();
        let error = v["error"].as_str().unwrap_or_default().to_owned();
        assert_eq!(v["status"], status, "{v}");
        assert!(
            error.starts_with(prefix),
            "{error:?} should start with {prefix:?}"
        );
        for c in contains {
            assert!(error.contains(c), "{error:?} should mention {c:?}");
        }
        self.assert_error_headers();
        error
    }

    fn assert_error_headers(&self) {
        assert_eq!(
            self.header("content-type"),
            Some("text/plain; charset=utf-8"),
            "content type of an error"
        );
        assert_eq!(self.header("x-content-type-options"), Some("nosniff"));
    }
}

// --- fake upstreams ----------------------------------------------------------------

/// A fake upstream server; its accept loop is aborted on drop.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn upstream<F, Fut>(handler: F) -> Upstream
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(handler(stream));
        }
    });
    Upstream {
        addr,
        accepted,
        task,
    }
}

/// Echoes every byte back until the client closes.
pub async fn echo_upstream() -> Upstream {
    upstream(|mut stream| async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await
}

/// Sends `payload` to each client as soon as it connects, then closes.
pub async fn sending_upstream(payload: Vec<u8>) -> Upstream {
    let payload: Arc<[u8]> = payload.into();
    upstream(move |mut stream| {
        let payload = payload.clone();
        async move {
            let _ = stream.write_all(&payload).await;
            let _ = stream.shutdown().await;
        }
    })
    .await
}

/// What a [`recording_upstream`] saw on one connection.
#[derive(Debug)]
pub struct Recorded {
    /// When the first byte arrived (None: the client sent nothing).
    pub first_byte: Option<Instant>,
    /// Every byte received until end of stream or error.
    pub bytes: Vec<u8>,
    /// Whether the stream ended with an error (e.g. a reset) instead of EOF.
    pub error: Option<io::ErrorKind>,
}

/// Sends `greeting` on connect, then records what the client sends until it closes; each
/// connection's record is sent on the returned channel.
pub async fn recording_upstream(greeting: &[u8]) -> (Upstream, mpsc::UnboundedReceiver<Recorded>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let greeting: Arc<[u8]> = greeting.into();
    let up = upstream(move |mut stream| {
        let tx = tx.clone();
        let greeting = greeting.clone();
        async move {
            let _ = stream.write_all(&greeting).await;
            let mut rec = Recorded {
                first_byte: None,
                bytes: Vec::new(),
                error: None,
            };
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        rec.first_byte.get_or_insert_with(Instant::now);
                        rec.bytes.extend_from_slice(&buf[..n]);
                    }
                    Err(e) => {
                        rec.error = Some(e.kind());
                        break;
                    }
                }
            }
            let _ = tx.send(rec);
        }
    })
    .await;
    (up, rx)
}

/// An address nothing listens on (bound, read back, released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

// --- client side -------------------------------------------------------------------

/// Connects with a bound on the wait.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = tokio::time::timeout(LONG, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let _ = stream.set_nodelay(true);
    stream
}

/// Reads exactly `n` bytes within `limit`.
pub async fn read_n(stream: &mut TcpStream, n: usize, limit: Duration) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(limit, stream.read_exact(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("reading {n} bytes timed out after {limit:?}"))
        .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// How a read ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Orderly close (FIN).
    Eof,
    /// An error such as `ConnectionReset`.
    Error(io::ErrorKind),
    /// Nothing happened within the limit.
    TimedOut,
}

/// Reads until the stream ends or `limit` passes; returns the bytes and how it ended.
pub async fn read_to_end(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, End) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, End::TimedOut),
            Ok(Ok(0)) => return (out, End::Eof),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (out, End::Error(e.kind())),
        }
    }
}

/// Waits until the stream is closed (EOF or error) and returns how; data is discarded.
pub async fn wait_closed(stream: &mut TcpStream, limit: Duration) -> End {
    read_to_end(stream, limit).await.1
}

/// Asserts that nothing arrives within `quiet` and the connection stays open.
pub async fn assert_silent(stream: &mut TcpStream, quiet: Duration) {
    let (data, end) = read_to_end(stream, quiet).await;
    assert_eq!(
        (data.len(), end),
        (0, End::TimedOut),
        "expected an open, silent connection"
    );
}

/// Writes `data` and reads the same number of bytes back; returns them and the round trip.
pub async fn round_trip(
    stream: &mut TcpStream,
    data: &[u8],
    limit: Duration,
) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    tokio::time::timeout(limit, stream.write_all(data))
        .await
        .expect("write timed out")
        .expect("write");
    let back = read_n(stream, data.len(), limit).await;
    (back, started.elapsed())
}

/// `len` bytes of a deterministic, non-periodic pattern (SplitMix64 output).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Polls `check` every 20 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `request` (raw HTTP/1.1, sent as written) to `addr` and returns everything the
/// server sent until it closed the connection (bounded by [`LONG`]).
pub async fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut stream = connect(addr).await;
    tokio::time::timeout(LONG, stream.write_all(request.as_bytes()))
        .await
        .expect("write timed out")
        .expect("write");
    let (bytes, end) = read_to_end(&mut stream, LONG).await;
    assert_ne!(end, End::TimedOut, "no close after {request:?}");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A `Connection: close` request with the given extra header lines (each `Name: value`).
pub fn raw_request(method: &str, path: &str, headers: &[&str]) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    text
}

/// The status code of a raw answer (`HTTP/1.1 403 Forbidden` → 403; 0 when unparsable).
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The body of a raw answer (after the blank line).
pub fn raw_body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

impl Server {
    /// The API's address.
    pub fn addr(&self) -> SocketAddr {
        self.base
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .expect("api address")
    }
}

// --- an HTTPS receiver with its own CA -------------------------------------------------

/// One request an [`HttpsReceiver`] got.
#[derive(Debug)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: bytes::Bytes,
}

/// A local HTTPS server whose certificate (for `127.0.0.1` and `localhost`) is issued by a
/// CA of its own, in the directory it was given; answers every request `200 ok`.
pub struct HttpsReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The PEM file of its CA (what a client must trust).
    pub ca_cert: std::path::PathBuf,
    /// The requests it got, in order.
    pub requests: mpsc::UnboundedReceiver<Received>,
}

#[derive(Debug)]
struct AlwaysCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for AlwaysCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl HttpsReceiver {
    /// Starts one on `127.0.0.1:0` with a CA created in `ca_dir`.
    pub async fn start(ca_dir: &std::path::Path) -> HttpsReceiver {
        use http_body_util::BodyExt;
        let ca = downtime_proxy::tls::LocalCa::open(ca_dir).expect("test CA");
        let leaf = ca
            .leaf(&["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("leaf");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(AlwaysCert(leaf)));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let (tx, requests) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let tx = tx.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let headers = req.headers().clone();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(http_body_util::Collected::to_bytes)
                                    .unwrap_or_default();
                                let _ = tx.send(Received {
                                    path,
                                    headers,
                                    body,
                                });
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        HttpsReceiver {
            addr,
            ca_cert: ca.cert_path(),
            requests,
        }
    }
}
