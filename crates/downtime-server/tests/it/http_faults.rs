//! HTTP proxies and HTTP faults end to end (issue 3): real HTTP clients (reqwest, and raw
//! sockets where bytes matter) talk over loopback to a real `downtime_server::run`, which
//! forwards to a small upstream HTTP server written here on a raw tokio socket.
//!
//! Every fault type (`maintenance`, `status`, `http_latency`, `abort`, `rate_limit`,
//! `router_timeout`, `slow_body`) and every bound (`match`, `toxicity` under a fixed seed,
//! `first_n`, `every_nth`, `ttl`) is exercised, plus pass-through (keep-alive, Host and
//! hop-by-hop headers, streamed bodies, upstream down), the request journal, refused input
//! and TCP toxics on HTTP proxies.
//!
//! Timing assertions are generous (the suite runs in parallel on small machines) but each
//! has an upper and a lower bound, so a fault that does nothing or hangs fails. Every wait
//! and loop is bounded in count and time; only 127.0.0.1 is bound.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use downtime_server::ServeOptions;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Upper bound for anything that should happen "soon".
const LIMIT: Duration = Duration::from_secs(10);

// --- the server under test ---------------------------------------------------------------

/// A running downtime server on its own thread and runtime (as in its own process), so the
/// test's own work never starves it; stopped when dropped.
struct Server {
    api: String,
    api_addr: SocketAddr,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Server {
    fn start() -> Server {
        Server::with_seed(None)
    }

    fn with_seed(seed: Option<u64>) -> Server {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let api_addr = std_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                let options = ServeOptions {
                    seed,
                    grace: Duration::from_secs(1),
                    metrics: downtime_server::MetricsOptions {
                        proxy: true,
                        runtime: false,
                    },
                    ..ServeOptions::default()
                };
                let shutdown = async move {
                    let _ = stopped.await;
                };
                let _ = downtime_server::run(listener, options, shutdown).await;
            });
        });
        Server {
            api: format!("http://{api_addr}"),
            api_addr,
            http: client(),
            stop: Some(stop),
        }
    }

    /// One API call: (status, body text).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.api));
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Creates a proxy and returns its base URL (`http://127.0.0.1:PORT`).
    async fn proxy(&self, body: Value) -> String {
        let (status, text) = self.call("POST", "/proxies", Some(body)).await;
        assert_eq!(status, 201, "{text}");
        let view: Value = serde_json::from_str(&text).unwrap();
        format!("http://{}", view["listen"].as_str().unwrap())
    }

    /// An HTTP stand-in (no upstream).
    async fn standin(&self, name: &str) -> String {
        self.proxy(json!({"name": name, "listen": "127.0.0.1:0", "protocol": "http"}))
            .await
    }

    /// An HTTP proxy forwarding to `upstream`.
    async fn forwarding(&self, name: &str, upstream: SocketAddr) -> String {
        self.proxy(
            json!({"name": name, "listen": "127.0.0.1:0", "protocol": "http",
            "upstream": upstream.to_string()}),
        )
        .await
    }

    /// Adds a fault or toxic, which must succeed; returns its JSON.
    async fn fault(&self, proxy: &str, body: Value) -> Value {
        let (status, text) = self
            .call("POST", &format!("/proxies/{proxy}/toxics"), Some(body))
            .await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn remove(&self, proxy: &str, toxic: &str) {
        let (status, text) = self
            .call("DELETE", &format!("/proxies/{proxy}/toxics/{toxic}"), None)
            .await;
        assert_eq!(status, 204, "{text}");
    }

    async fn toxics(&self, proxy: &str) -> Vec<Value> {
        let (status, text) = self
            .call("GET", &format!("/proxies/{proxy}/toxics"), None)
            .await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn toxic_names(&self, proxy: &str) -> Vec<String> {
        self.toxics(proxy)
            .await
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn journal(&self, proxy: &str, limit: Option<usize>) -> Vec<Value> {
        let query = limit.map_or_else(String::new, |n| format!("?limit={n}"));
        let (status, text) = self
            .call("GET", &format!("/proxies/{proxy}/requests{query}"), None)
            .await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The default maintenance body of stand-in `name`.
    fn maintenance_body(&self, name: &str) -> String {
        format!(
            "{{\"id\": \"maintenance\", \"message\": \"{name} is temporarily unavailable.\\nFor more information, visit: http://{}/status\"}}",
            self.api_addr
        )
    }
}

/// A pooled keep-alive client (no system proxy).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(LIMIT)
        .build()
        .unwrap()
}

/// A client that opens a new connection for every request.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(LIMIT)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn get_status(client: &reqwest::Client, url: &str) -> u16 {
    client.get(url).send().await.unwrap().status().as_u16()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

fn header_u64(response: &reqwest::Response, name: &str) -> u64 {
    header(response, name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .parse()
        .unwrap()
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

// --- a small upstream HTTP server on a raw socket -----------------------------------------

/// A request or response head as read off a socket.
#[derive(Debug, Clone)]
struct Head {
    first: String,
    headers: Vec<(String, String)>,
    raw: String,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a head; `None` on a clean end of stream before any byte.
async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<Head>> {
    let mut first = String::new();
    if r.read_line(&mut first).await? == 0 {
        return Ok(None);
    }
    let mut raw = first.clone();
    let mut headers = Vec::new();
    for _ in 0..1000 {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        raw.push_str(&line);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok(Some(Head {
                first: first.trim_end().to_owned(),
                headers,
                raw,
            }));
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    Err(io::ErrorKind::InvalidData.into())
}

/// The 1 MiB body of `/big`: a pattern that a shifted or dropped byte breaks.
fn big_body() -> Vec<u8> {
    (0..1usize << 20).map(|i| (i % 251) as u8).collect()
}

struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

/// Starts the upstream. Routes: `/slow-start` answers after 3 s; `/stall` sends its head and
/// a first chunk, then nothing for 5 s; `/big` 1 MiB in 16 KiB writes; `/bytes?n=N` N bytes;
/// `/echo` returns the request head it received (and hop-by-hop response headers); anything
/// else `200 upstream <method> <target>`.
async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(upstream_connection(stream, r.clone()));
        }
    });
    Upstream {
        addr,
        connections,
        requests,
    }
}

async fn upstream_connection(stream: TcpStream, requests: Arc<AtomicUsize>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let Ok(Some(head)) = read_head(&mut read).await else {
            return;
        };
        requests.fetch_add(1, Ordering::SeqCst);
        let Ok(body) = read_body(&head, &mut read).await else {
            return;
        };
        if upstream_respond(&head, &body, &mut write).await.is_err() {
            return;
        }
        if head
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            return;
        }
    }
}

async fn send_simple(
    w: &mut OwnedWriteHalf,
    content_type: &str,
    extra: &str,
    body: &[u8],
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

async fn upstream_respond(head: &Head, body: &[u8], w: &mut OwnedWriteHalf) -> io::Result<()> {
    let mut parts = head.first.split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("/").to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    match path {
        "/slow-start" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            send_simple(w, "text/plain", "", b"late").await
        }
        "/stall" => {
            w.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
            )
            .await?;
            w.flush().await?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            w.write_all(b"4\r\nlast\r\n0\r\n\r\n").await?;
            w.flush().await
        }
        "/big" => {
            let body = big_body();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            w.write_all(head.as_bytes()).await?;
            for piece in body.chunks(16 * 1024) {
                w.write_all(piece).await?;
            }
            w.flush().await
        }
        "/bytes" => {
            let n: usize = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            send_simple(w, "application/octet-stream", "", &vec![b'x'; n]).await
        }
        "/upload" => {
            let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
            let text = format!("{} {sum} {}", body.len(), u8::from(body == big_body()));
            send_simple(w, "text/plain", "", text.as_bytes()).await
        }
        "/echo" => {
            send_simple(
                w,
                "text/plain",
                "Connection: keep-alive, x-upstream-hop\r\nX-Upstream-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-End-To-End: kept\r\n",
                head.raw.as_bytes(),
            )
            .await
        }
        _ => {
            let body = format!("upstream {method} {target}");
            send_simple(w, "text/plain", "X-Upstream: yes\r\n", body.as_bytes()).await
        }
    }
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// --- a raw HTTP client for byte-level checks ----------------------------------------------

struct Raw {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

#[derive(Debug)]
struct RawResponse {
    head: Head,
    status: u16,
    body: Vec<u8>,
}

impl Raw {
    async fn connect(base: &str) -> Raw {
        let addr = base.strip_prefix("http://").unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, write) = stream.into_split();
        Raw {
            read: BufReader::new(read),
            write,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
        self.write.flush().await.unwrap();
    }

    async fn get(&mut self, path: &str) -> RawResponse {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: downtime.test\r\n\r\n").as_bytes())
            .await;
        self.response().await.unwrap()
    }

    /// One whole response (Content-Length or chunked body).
    async fn response(&mut self) -> io::Result<RawResponse> {
        tokio::time::timeout(LIMIT, read_response(&mut self.read))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }

    /// Everything until the peer closes (or fails): the bytes and how it ended.
    async fn until_closed(&mut self) -> (Vec<u8>, io::Result<()>) {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            match tokio::time::timeout_at(deadline, self.read.read(&mut buf)).await {
                Err(_) => return (bytes, Err(io::ErrorKind::TimedOut.into())),
                Ok(Ok(0)) => return (bytes, Ok(())),
                Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => return (bytes, Err(e)),
            }
        }
    }
}

/// The body after `head`: chunked, Content-Length, or none.
async fn read_body<R: AsyncBufRead + Unpin>(head: &Head, r: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        for _ in 0..100_000 {
            let mut size = String::new();
            r.read_line(&mut size).await?;
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).await?;
            chunk.truncate(size);
            body.extend_from_slice(&chunk);
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = head.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        body.resize(len, 0);
        r.read_exact(&mut body).await?;
    }
    Ok(body)
}

async fn read_response<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<RawResponse> {
    let head = read_head(r)
        .await?
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
    let status = head
        .first
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
    let body = read_body(&head, r).await?;
    Ok(RawResponse { head, status, body })
}

// --- log capture (router H12/H15 lines) ---------------------------------------------------

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.0.lock() {
            Ok(mut logs) => logs.extend_from_slice(bytes),
            Err(poisoned) => poisoned.into_inner().extend_from_slice(bytes),
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs (once per test binary) a global subscriber that keeps every warning.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        logs
    })
    .clone()
}

/// The first log line containing every needle, waiting up to `within`.
async fn wait_for_log(needles: &[&str], within: Duration) -> Option<String> {
    let logs = capture_logs();
    let deadline = Instant::now() + within;
    loop {
        let text = {
            let guard = match logs.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            String::from_utf8_lossy(&guard).into_owned()
        };
        if let Some(line) = text
            .lines()
            .find(|line| needles.iter().all(|n| line.contains(n)))
        {
            return Some(line.to_owned());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `service=NNNms` value of a router log line.
fn service_ms(line: &str) -> u64 {
    let rest = line.split("service=").nth(1).unwrap();
    rest.split("ms").next().unwrap().parse().unwrap()
}

// --- maintenance ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standin_answers_the_default_maintenance_byte_for_byte() {
    let s = Server::start();
    let (status, text) = s
        .call(
            "POST",
            "/proxies",
            Some(json!({"name": "platform-api", "listen": "127.0.0.1:0", "protocol": "http"})),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let view: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(view["protocol"], "http");
    assert_eq!(view["upstream"], "");
    let base = format!("http://{}", view["listen"].as_str().unwrap());
    let expected = s.maintenance_body("platform-api");

    let mut raw = Raw::connect(&base).await;
    let response = raw.get("/apps/123?x=1").await;
    assert_eq!(response.head.first, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(
        response.head.header("content-type"),
        Some("application/json")
    );
    assert_eq!(
        response.head.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    assert_eq!(String::from_utf8(response.body).unwrap(), expected);
    assert!(response.head.header("retry-after").is_none());

    // Every method and path gets the same answer, over the same keep-alive connection.
    raw.send(b"POST /v1/things HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        .await;
    let response = raw.response().await.unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(response.body, expected.as_bytes());

    let response = client().delete(format!("{base}/x")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    assert_eq!(response.text().await.unwrap(), expected);

    // The journal records the stand-in answers without a fault name.
    let journal = s.journal("platform-api", None).await;
    assert_eq!(journal.len(), 3);
    assert!(
        journal
            .iter()
            .all(|e| e["status"] == 503 && e["fault"].is_null())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_maintenance_status_message_api_link_headers_retry_after() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("platform", up.addr).await;
    let c = client();
    assert_eq!(get_status(&c, &format!("{base}/apps")).await, 200);

    let created = s
        .fault(
            "platform",
            json!({"name": "maint", "type": "maintenance", "attributes": {
                "api": "Platform API", "status_page": "https://status.example.com",
                "headers": {"X-Maintenance": "planned", "Cache-Control": "no-store"},
                "retry_after": 120}}),
        )
        .await;
    assert_eq!(created["type"], "maintenance");
    assert_eq!(created["attributes"]["status"], 503);
    let response = c.get(format!("{base}/apps")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    assert_eq!(header(&response, "retry-after"), Some("120"));
    assert_eq!(header(&response, "x-maintenance"), Some("planned"));
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    assert_eq!(
        response.text().await.unwrap(),
        "{\"id\": \"maintenance\", \"message\": \"Platform API is temporarily unavailable.\\nFor more information, visit: https://status.example.com\"}"
    );

    // A whole message and another status replace the default ones.
    let (status, text) = s
        .call(
            "POST",
            "/proxies/platform/toxics/maint",
            Some(json!({"attributes": {"status": 500, "message": "Back at 10:00 \"UTC\"."}})),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let response = c.get(format!("{base}/apps")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(header(&response, "retry-after"), Some("120"));
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"id": "maintenance", "message": "Back at 10:00 \"UTC\"."}"#
    );

    // Maintenance answers instead of the upstream, which saw only the first request.
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    s.remove("platform", "maint").await;
    let response = c.get(format!("{base}/apps")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "upstream GET /apps");
}

// --- status --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_fault_answers_json_text_or_empty_bodies_with_headers() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("api", up.addr).await;
    let c = client();

    s.fault(
        "api",
        json!({"name": "err", "type": "status", "attributes": {
            "status": 422, "headers": {"X-Error": "yes"},
            "body": {"id": "invalid_params", "message": "nope", "n": [1, 2]}}}),
    )
    .await;
    let response = c.get(format!("{base}/things")).send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    assert_eq!(header(&response, "x-error"), Some("yes"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"id": "invalid_params", "message": "nope", "n": [1, 2]})
    );

    s.call(
        "POST",
        "/proxies/api/toxics/err",
        Some(json!({"attributes": {"status": 404, "body": "no such thing\n", "headers": {}}})),
    )
    .await;
    let response = c.get(format!("{base}/things")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        header(&response, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(header(&response, "x-error").is_none());
    assert_eq!(response.text().await.unwrap(), "no such thing\n");

    // Configured headers win over the default content type; no body means an empty one.
    s.call(
        "POST",
        "/proxies/api/toxics/err",
        Some(
            json!({"attributes": {"status": 500, "body": {"type": "about:blank"},
            "headers": {"Content-Type": "application/problem+json"}}}),
        ),
    )
    .await;
    let response = c.get(format!("{base}/things")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(
        header(&response, "content-type"),
        Some("application/problem+json")
    );
    s.remove("api", "err").await;
    s.fault(
        "api",
        json!({"name": "bare", "type": "status", "attributes": {"status": 204}}),
    )
    .await;
    let mut raw = Raw::connect(&base).await;
    let response = raw.get("/x").await;
    assert_eq!(response.status, 204);
    assert!(response.body.is_empty());
    // A 599 is within range and passes through as is.
    s.call(
        "POST",
        "/proxies/api/toxics/bare",
        Some(json!({"attributes": {"status": 599}})),
    )
    .await;
    assert_eq!(raw.get("/x").await.status, 599);
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);
}

// --- http_latency --------------------------------------------------------------------------

/// Times `n` sequential requests through `base`.
async fn timings(c: &reqwest::Client, base: &str, n: usize) -> Vec<u128> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let response = c.get(format!("{base}/t/{i}")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        out.push(ms(t.elapsed()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_latency_fixed_uniform_and_normal() {
    let s = Server::with_seed(Some(7));
    let up = upstream().await;
    let fixed = s.forwarding("fixed", up.addr).await;
    let uniform = s.forwarding("uniform", up.addr).await;
    let normal = s.forwarding("normal", up.addr).await;
    let c = client();
    // Baseline: no delay without the fault.
    let base_times = timings(&c, &fixed, 3).await;
    assert!(base_times.iter().all(|t| *t < 250), "{base_times:?}");

    s.fault(
        "fixed",
        json!({"type": "http_latency", "attributes": {"latency": 300}}),
    )
    .await;
    s.fault(
        "uniform",
        json!({"type": "http_latency", "attributes": {"latency": 300, "jitter": 150, "distribution": "uniform"}}),
    )
    .await;
    s.fault(
        "normal",
        json!({"type": "http_latency", "attributes": {"latency": 300, "jitter": 50, "distribution": "normal"}}),
    )
    .await;
    let (f, u, n) = tokio::join!(
        timings(&c, &fixed, 5),
        timings(&c, &uniform, 10),
        timings(&c, &normal, 12)
    );
    assert!(f.iter().all(|t| (295..1300).contains(t)), "fixed {f:?}");
    assert!(
        u.iter().all(|t| (145..1450).contains(t)),
        "uniform within latency±jitter (+ slack): {u:?}"
    );
    let spread = u.iter().max().unwrap() - u.iter().min().unwrap();
    assert!(spread >= 30, "uniform delays should vary: {u:?}");
    let mean = n.iter().sum::<u128>() / n.len() as u128;
    assert!((220..700).contains(&mean), "normal mean {mean}: {n:?}");
    let spread = n.iter().max().unwrap() - n.iter().min().unwrap();
    assert!(spread >= 10, "normal delays should vary: {n:?}");

    // The journal's duration covers the delay.
    let journal = s.journal("fixed", Some(1)).await;
    assert!(
        journal[0]["duration_ms"].as_u64().unwrap() >= 290,
        "{journal:?}"
    );
    assert_eq!(journal[0]["fault"], "http_latency_downstream");
}

// --- abort ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_reset_resets_the_connection() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("ab", up.addr).await;
    s.fault(
        "ab",
        json!({"name": "rst", "type": "abort", "attributes": {"mode": "reset"}}),
    )
    .await;

    let mut raw = Raw::connect(&base).await;
    raw.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let t = Instant::now();
    let (bytes, end) = raw.until_closed().await;
    assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(
        end.unwrap_err().kind(),
        io::ErrorKind::ConnectionReset,
        "a reset, not a clean close"
    );
    assert!(t.elapsed() < Duration::from_secs(2));

    let t = Instant::now();
    let err = fresh_client()
        .get(format!("{base}/y"))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);

    // The journal counts the attempts that got no answer (status 0), so a retry test can.
    let journal = s.journal("ab", None).await;
    assert!(!journal.is_empty());
    assert!(
        journal
            .iter()
            .all(|e| e["status"] == 0 && e["fault"] == "rst"),
        "{journal:?}"
    );
    assert_eq!(journal[0]["path"], "/x");

    // Removed: the next connection passes.
    s.remove("ab", "rst").await;
    assert_eq!(get_status(&fresh_client(), &format!("{base}/z")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_empty_reply_closes_without_answer() {
    let s = Server::start();
    let base = s.standin("ab").await;
    s.fault(
        "ab",
        json!({"name": "empty", "type": "abort", "attributes": {"mode": "empty_reply"}}),
    )
    .await;
    let mut raw = Raw::connect(&base).await;
    raw.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (bytes, end) = raw.until_closed().await;
    assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
    end.unwrap();

    let err = fresh_client()
        .get(format!("{base}/y"))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    let journal = s.journal("ab", Some(1)).await;
    assert_eq!(journal[0]["status"], 0);
    assert_eq!(journal[0]["fault"], "empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_close_after_headers_sends_the_head_only() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("ab", up.addr).await;
    s.fault(
        "ab",
        json!({"name": "cut", "type": "abort", "attributes": {"mode": "close_after_headers"}}),
    )
    .await;

    let mut raw = Raw::connect(&base).await;
    raw.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let head = tokio::time::timeout(LIMIT, read_head(&mut raw.read))
        .await
        .unwrap()
        .unwrap()
        .expect("the head is sent");
    assert_eq!(head.first, "HTTP/1.1 200 OK");
    assert_eq!(head.header("x-upstream"), Some("yes"));
    let promised: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(promised > 0);
    let (bytes, _) = raw.until_closed().await;
    assert!(bytes.is_empty(), "no body byte: {bytes:?}");

    // reqwest sees the status, then a body error.
    let response = fresh_client()
        .get(format!("{base}/y"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let err = response.bytes().await.unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");

    let journal = s.journal("ab", Some(1)).await;
    assert_eq!(journal[0]["status"], 200);
    assert_eq!(journal[0]["fault"], "cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_close_mid_body_sends_half_the_body() {
    let s = Server::start();
    let up = upstream().await;
    let standin = s.standin("half").await;
    let forwarding = s.forwarding("halfbig", up.addr).await;
    let fault = json!({"name": "mid", "type": "abort", "attributes": {"mode": "close_mid_body"}});
    s.fault("half", fault.clone()).await;
    s.fault("halfbig", fault).await;

    // A stand-in answer of known length: exactly the first half arrives.
    let full = s.maintenance_body("half");
    let mut raw = Raw::connect(&standin).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let head = read_head(&mut raw.read).await.unwrap().unwrap();
    assert_eq!(head.first, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(
        head.header("content-length"),
        Some(full.len().to_string().as_str())
    );
    let (bytes, _) = raw.until_closed().await;
    assert_eq!(bytes.len(), full.len() / 2);
    assert_eq!(bytes, full.as_bytes()[..full.len() / 2]);

    // A streamed 1 MiB upstream body: headers, the first 512 KiB intact, then an error.
    let mut response = fresh_client()
        .get(format!("{forwarding}/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut got = Vec::new();
    let mut failed = false;
    for _ in 0..100_000 {
        match response.chunk().await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                assert!(!e.is_timeout(), "{e:?}");
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body must end in an error");
    assert_eq!(got.len(), 512 * 1024);
    assert_eq!(got, big_body()[..512 * 1024]);
}

// --- rate_limit ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_passes_exactly_limit_then_429_with_headers() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("rl", up.addr).await;
    s.fault(
        "rl",
        json!({"name": "rl", "type": "rate_limit", "attributes": {"limit": 5, "period_ms": 60000}}),
    )
    .await;
    let c = client();
    for expected_remaining in (0..5).rev() {
        let response = c.get(format!("{base}/r")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header_u64(&response, "ratelimit-limit"), 5);
        assert_eq!(
            header_u64(&response, "ratelimit-remaining"),
            expected_remaining
        );
        assert!(header(&response, "retry-after").is_none());
        assert_eq!(response.text().await.unwrap(), "upstream GET /r");
    }
    for _ in 0..3 {
        let response = c.get(format!("{base}/r")).send().await.unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(header(&response, "content-type"), Some("application/json"));
        assert_eq!(header_u64(&response, "ratelimit-limit"), 5);
        assert_eq!(header_u64(&response, "ratelimit-remaining"), 0);
        let retry = header_u64(&response, "retry-after");
        let reset = header_u64(&response, "ratelimit-reset");
        // One token per 12 s.
        assert!((1..=12).contains(&retry), "{retry}");
        assert_eq!(retry, reset);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["id"], "rate_limit");
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 5);
    let statuses: Vec<u64> = s
        .journal("rl", None)
        .await
        .iter()
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let journal = s.journal("rl", Some(1)).await;
    assert_eq!(journal[0]["fault"], "rl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_keys_on_a_header_or_the_client_ip() {
    let s = Server::start();
    let by_header = s.standin("by-header").await;
    let by_ip = s.standin("by-ip").await;
    s.fault(
        "by-header",
        json!({"type": "rate_limit", "attributes": {"limit": 2, "period_ms": 60000, "key_header": "X-Api-Key"}}),
    )
    .await;
    s.fault(
        "by-ip",
        json!({"type": "rate_limit", "attributes": {"limit": 2, "period_ms": 60000}}),
    )
    .await;
    let c = client();
    let hit = |base: &str, key: Option<&str>| {
        let mut request = c.get(format!("{base}/x"));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Each key has its own bucket (503 is the stand-in's maintenance answer: allowed).
    let mut seen = Vec::new();
    for key in ["alice", "alice", "alice", "bob", "bob", "bob"] {
        seen.push(hit(&by_header, Some(key)).await);
    }
    assert_eq!(seen, [503, 503, 429, 503, 503, 429]);
    assert_eq!(hit(&by_header, None).await, 503, "no header is its own key");

    // Keyed by client IP: every request here comes from 127.0.0.1, whatever its header.
    let mut seen = Vec::new();
    for key in ["alice", "bob", "carol"] {
        seen.push(hit(&by_ip, Some(key)).await);
    }
    assert_eq!(seen, [503, 503, 429]);
    // A new connection from the same address shares the bucket.
    assert_eq!(
        get_status(&fresh_client(), &format!("{by_ip}/y")).await,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refills_after_the_period() {
    let s = Server::start();
    let base = s.standin("refill").await;
    s.fault(
        "refill",
        json!({"type": "rate_limit", "attributes": {"limit": 2, "period_ms": 500}}),
    )
    .await;
    let c = client();
    let url = format!("{base}/x");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(get_status(&c, &url).await);
    }
    assert_eq!(seen, [503, 503, 429]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(get_status(&c, &url).await);
    }
    assert_eq!(
        seen,
        [503, 503, 429],
        "a full bucket after one period, no more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_burst_sets_the_bucket_size() {
    let s = Server::start();
    let base = s.standin("burst").await;
    s.fault(
        "burst",
        json!({"type": "rate_limit", "attributes": {"limit": 1, "period_ms": 60000, "burst": 3}}),
    )
    .await;
    let c = client();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let response = c.get(format!("{base}/x")).send().await.unwrap();
        seen.push((
            response.status().as_u16(),
            header_u64(&response, "ratelimit-limit"),
            header_u64(&response, "ratelimit-remaining"),
        ));
    }
    assert_eq!(seen, [(503, 3, 2), (503, 3, 1), (503, 3, 0), (429, 3, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_accuracy_over_time() {
    let s = Server::start();
    let base = s.standin("steady").await;
    s.fault(
        "steady",
        json!({"type": "rate_limit", "attributes": {"limit": 10, "period_ms": 1000}}),
    )
    .await;
    let c = client();
    let url = format!("{base}/x");
    let started = Instant::now();
    let (mut passed, mut last) = (0u64, Duration::ZERO);
    for _ in 0..400 {
        if started.elapsed() >= Duration::from_millis(2000) {
            break;
        }
        let status = get_status(&c, &url).await;
        last = started.elapsed();
        match status {
            503 => passed += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Burst of 10, then 10 per second of elapsed time (the last request's arrival).
    let expected = 10.0 + 10.0 * last.as_secs_f64();
    assert!(
        (passed as f64 - expected).abs() <= 2.5,
        "passed {passed}, expected about {expected:.1}"
    );
}

// --- router_timeout ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_timeout_h12_answers_503_after_timeout() {
    capture_logs();
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("router12", up.addr).await;
    s.fault(
        "router12",
        json!({"name": "router", "type": "router_timeout", "attributes": {"timeout": 1}}),
    )
    .await;
    let c = client();
    // A prompt answer is untouched.
    let response = c.get(format!("{base}/fast")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "upstream GET /fast");

    let t = Instant::now();
    let response = c
        .get(format!("{base}/slow-start?probe=h12-test"))
        .send()
        .await
        .unwrap();
    let took = t.elapsed();
    assert_eq!(response.status(), 503);
    assert!(
        header(&response, "content-type")
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        response.headers()
    );
    assert!(
        (900..2500).contains(&ms(took)),
        "H12 after {took:?}, expected about 1 s"
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("<html") && page.contains("H12"), "{page}");

    let line = wait_for_log(
        &[
            "code=H12",
            "desc=\"Request timeout\"",
            "path=\"/slow-start?probe=h12-test\"",
        ],
        Duration::from_secs(3),
    )
    .await
    .expect("an H12 log line");
    assert!(line.contains("at=error"), "{line}");
    assert!(line.contains("method=GET"), "{line}");
    assert!(line.contains("status=503"), "{line}");
    assert!((900..2500).contains(&service_ms(&line)), "{line}");

    let journal = s.journal("router12", Some(1)).await;
    assert_eq!(journal[0]["status"], 503);
    assert_eq!(journal[0]["fault"], "router");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_timeout_bounds_injected_latency_too() {
    let s = Server::start();
    let base = s.standin("router-lat").await;
    // Added before the latency, but the router deadline wraps it (documented order).
    s.fault(
        "router-lat",
        json!({"name": "router", "type": "router_timeout", "attributes": {"timeout": 1}}),
    )
    .await;
    s.fault(
        "router-lat",
        json!({"type": "http_latency", "attributes": {"latency": 5000}}),
    )
    .await;
    let t = Instant::now();
    let response = client().get(format!("{base}/x")).send().await.unwrap();
    let took = t.elapsed();
    assert_eq!(response.status(), 503);
    assert!(
        header(&response, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!((900..2500).contains(&ms(took)), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_timeout_h15_cuts_an_idle_body() {
    capture_logs();
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("router15", up.addr).await;
    s.fault(
        "router15",
        json!({"type": "router_timeout", "attributes": {"timeout": 30, "idle": 1}}),
    )
    .await;
    let mut response = client()
        .get(format!("{base}/stall?probe=h15-test"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut got = Vec::new();
    for _ in 0..10 {
        if got.len() >= 5 {
            break;
        }
        got.extend_from_slice(&response.chunk().await.unwrap().unwrap());
    }
    assert_eq!(got, b"first");
    let t = Instant::now();
    let err = response.chunk().await.unwrap_err();
    let took = t.elapsed();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(
        (700..2500).contains(&ms(took)),
        "cut after {took:?}, expected about 1 s"
    );
    let line = wait_for_log(
        &[
            "code=H15",
            "desc=\"Idle connection\"",
            "path=\"/stall?probe=h15-test\"",
        ],
        Duration::from_secs(3),
    )
    .await
    .expect("an H15 log line");
    assert!(line.contains("method=GET"), "{line}");
}

// --- slow_body -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_limits_the_body_rate() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("slow", up.addr).await;
    let c = client();
    let url = format!("{base}/bytes?n=100000");
    let t = Instant::now();
    let body = c.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(body.len(), 100_000);
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );

    s.fault(
        "slow",
        json!({"type": "slow_body", "attributes": {"rate": 50}}),
    )
    .await;
    let t = Instant::now();
    let response = c.get(&url).send().await.unwrap();
    let head_after = t.elapsed();
    let body = response.bytes().await.unwrap();
    let took = t.elapsed();
    assert_eq!(body.len(), 100_000);
    assert!(body.iter().all(|b| *b == b'x'));
    // 100 kB at 50 kB/s: 2 s, while the head comes at once.
    assert!(head_after < Duration::from_millis(800), "{head_after:?}");
    assert!(
        (1700..4000).contains(&ms(took)),
        "100 kB at 50 kB/s took {took:?}"
    );
}

// --- targeting -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeting_on_method_path_header_and_query() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("tgt", up.addr).await;
    let c = client();
    let send = |method: &str, path: &str, team: Option<&str>| {
        let mut request = c.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{base}{path}"),
        );
        if let Some(team) = team {
            request = request.header("x-team", team);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };

    // One condition at a time: (match, requests that match, requests that do not).
    type Case<'a> = (
        Value,
        Vec<(&'a str, &'a str, Option<&'a str>)>,
        Vec<(&'a str, &'a str, Option<&'a str>)>,
    );
    let cases: Vec<Case> = vec![
        (
            json!({"method": ["post", "PUT"]}),
            vec![("POST", "/a", None), ("PUT", "/b", None)],
            vec![("GET", "/a", None), ("DELETE", "/a", None)],
        ),
        (
            json!({"path": "/apps/*"}),
            vec![("GET", "/apps/1", None), ("GET", "/apps/1/dynos?x=1", None)],
            vec![("GET", "/account", None), ("GET", "/apps", None)],
        ),
        (
            json!({"headers": {"x-team": "a*"}}),
            vec![("GET", "/", Some("alpha")), ("GET", "/", Some("a"))],
            vec![("GET", "/", Some("beta")), ("GET", "/", None)],
        ),
        (
            json!({"query": {"page": "2"}}),
            vec![
                ("GET", "/l?page=2", None),
                ("GET", "/l?sort=x&page=2", None),
            ],
            vec![
                ("GET", "/l?page=3", None),
                ("GET", "/l", None),
                ("GET", "/page/2", None),
            ],
        ),
    ];
    for (matcher, hits, misses) in cases {
        s.fault(
            "tgt",
            json!({"name": "m", "type": "status", "match": matcher.clone(), "attributes": {"status": 418}}),
        )
        .await;
        for (method, path, team) in hits {
            assert_eq!(
                send(method, path, team).await,
                418,
                "{matcher} {method} {path}"
            );
        }
        for (method, path, team) in misses {
            assert_eq!(
                send(method, path, team).await,
                200,
                "{matcher} {method} {path}"
            );
        }
        s.remove("tgt", "m").await;
    }

    // All conditions together must hold at once.
    let created = s
        .fault(
            "tgt",
            json!({"name": "all", "type": "status", "attributes": {"status": 418},
                "match": {"method": "POST", "path": "/apps/*", "headers": {"x-team": "a*"}, "query": {"page": "2"}}}),
        )
        .await;
    assert_eq!(created["match"]["method"], json!(["POST"]));
    assert_eq!(send("POST", "/apps/1?page=2", Some("alpha")).await, 418);
    assert_eq!(send("GET", "/apps/1?page=2", Some("alpha")).await, 200);
    assert_eq!(send("POST", "/account?page=2", Some("alpha")).await, 200);
    assert_eq!(send("POST", "/apps/1?page=3", Some("alpha")).await, 200);
    assert_eq!(send("POST", "/apps/1?page=2", None).await, 200);
}

// --- toxicity under a seed -------------------------------------------------------------------

/// Indices of the requests (of 1000, sequential) that a 0.3-toxicity fault answered.
async fn faulted_indices(seed: u64) -> Vec<usize> {
    let s = Server::with_seed(Some(seed));
    let base = s.standin("seeded").await;
    s.fault(
        "seeded",
        json!({"name": "flaky", "type": "status", "toxicity": 0.3, "attributes": {"status": 500}}),
    )
    .await;
    let c = client();
    let mut hits = Vec::new();
    for i in 0..1000 {
        match get_status(&c, &format!("{base}/r/{i}")).await {
            500 => hits.push(i),
            503 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxicity_follows_the_probability_and_replays_with_the_seed() {
    let first = faulted_indices(20_240_601).await;
    let rate = first.len() as f64 / 1000.0;
    assert!((0.25..=0.35).contains(&rate), "toxicity 0.3 gave {rate}");
    let again = faulted_indices(20_240_601).await;
    assert_eq!(first, again, "the same seed replays the same requests");
    let other = faulted_indices(99).await;
    let rate = other.len() as f64 / 1000.0;
    assert!((0.25..=0.35).contains(&rate), "toxicity 0.3 gave {rate}");
    assert_ne!(first, other, "another seed, another sequence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxicity_zero_never_and_one_always() {
    let s = Server::start();
    let base = s.standin("edges").await;
    s.fault(
        "edges",
        json!({"name": "never", "type": "status", "toxicity": 0, "attributes": {"status": 500}}),
    )
    .await;
    let c = client();
    for i in 0..50 {
        assert_eq!(get_status(&c, &format!("{base}/{i}")).await, 503);
    }
    s.fault(
        "edges",
        json!({"name": "always", "type": "status", "toxicity": 1, "attributes": {"status": 502}}),
    )
    .await;
    for i in 0..50 {
        assert_eq!(get_status(&c, &format!("{base}/{i}")).await, 502);
    }
}

// --- first_n / every_nth -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_n_fails_the_first_matching_requests_so_a_retry_succeeds() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("retry", up.addr).await;
    s.fault(
        "retry",
        json!({"name": "flap", "type": "status", "first_n": 2, "match": {"path": "/apps/*"},
            "attributes": {"status": 500}}),
    )
    .await;
    let c = client();
    // A request that does not match neither fails nor uses up the count.
    assert_eq!(get_status(&c, &format!("{base}/other")).await, 200);

    // A client retrying with backoff succeeds on its third attempt.
    let mut attempts = 0;
    let mut statuses = Vec::new();
    for attempt in 1..=5u32 {
        attempts = attempt;
        let response = c
            .get(format!("{base}/apps/1"))
            .header("retry-attempt", attempt.to_string())
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status().is_success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
    }
    assert_eq!(attempts, 3);
    assert_eq!(statuses, [500, 500, 200]);
    // Then it keeps passing.
    for _ in 0..3 {
        assert_eq!(get_status(&c, &format!("{base}/apps/2")).await, 200);
    }
    let journal = s.journal("retry", Some(6)).await;
    let summary: Vec<(String, u64, Value, Value)> = journal
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_owned(),
                e["status"].as_u64().unwrap(),
                e["fault"].clone(),
                e["headers"]["retry-attempt"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary[..3],
        [
            ("/apps/1".to_owned(), 500, json!("flap"), json!("1")),
            ("/apps/1".to_owned(), 500, json!("flap"), json!("2")),
            ("/apps/1".to_owned(), 200, Value::Null, json!("3")),
        ]
    );
    assert_eq!(up.requests.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nth_faults_every_nth_matching_request() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("nth", up.addr).await;
    s.fault(
        "nth",
        json!({"name": "third", "type": "status", "every_nth": 3, "match": {"method": "GET"},
            "attributes": {"status": 503}}),
    )
    .await;
    let c = client();
    let mut faulted = Vec::new();
    for i in 1..=10 {
        // POSTs in between do not match and do not count.
        assert_eq!(
            c.post(format!("{base}/p")).send().await.unwrap().status(),
            200
        );
        if get_status(&c, &format!("{base}/g")).await == 503 {
            faulted.push(i);
        }
    }
    assert_eq!(faulted, [3, 6, 9]);
}

// --- ttl -----------------------------------------------------------------------------------

/// How long until `proxy` has none of `names` left (bounded by 5 s).
async fn time_until_gone(s: &Server, proxy: &str, names: &[&str], since: Instant) -> Duration {
    for _ in 0..200 {
        let present = s.toxic_names(proxy).await;
        if names.iter().all(|n| !present.iter().any(|p| p == n)) {
            return since.elapsed();
        }
        if since.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{names:?} still on {proxy} after {:?}", since.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_removes_http_faults_and_tcp_toxics() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.standin("ttl-http").await;
    s.proxy(json!({"name": "ttl-tcp", "listen": "127.0.0.1:0", "upstream": up.addr.to_string()}))
        .await;

    let since = Instant::now();
    let fault = s
        .fault(
            "ttl-http",
            json!({"name": "brief", "type": "status", "ttl": 800, "attributes": {"status": 500}}),
        )
        .await;
    assert_eq!(fault["ttl"], 800);
    let toxic = s
        .fault(
            "ttl-http",
            json!({"name": "brief-tcp", "type": "latency", "ttl": 800, "attributes": {"latency": 1}}),
        )
        .await;
    assert_eq!(toxic["ttl"], 800);
    s.fault(
        "ttl-tcp",
        json!({"name": "brief-tcp", "type": "latency", "ttl": 800, "attributes": {"latency": 1}}),
    )
    .await;
    s.fault("ttl-http", json!({"name": "stays", "type": "noop"}))
        .await;
    assert_eq!(
        s.toxic_names("ttl-http").await.len(),
        3,
        "present right after creation"
    );
    assert_eq!(get_status(&fresh_client(), &format!("{base}/x")).await, 500);

    let took = time_until_gone(&s, "ttl-http", &["brief", "brief-tcp"], since).await;
    assert!(took >= Duration::from_millis(700), "gone after {took:?}");
    assert!(took < Duration::from_secs(3), "gone after {took:?}");
    assert_eq!(s.toxic_names("ttl-http").await, ["stays"]);
    let took = time_until_gone(&s, "ttl-tcp", &["brief-tcp"], since).await;
    assert!(took < Duration::from_secs(3), "gone after {took:?}");
    assert_eq!(get_status(&fresh_client(), &format!("{base}/x")).await, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_show_the_time_left_of_a_ttl() {
    let s = Server::start();
    let up = upstream().await;
    s.forwarding("ttl-left", up.addr).await;
    let left = |toxic: &Value| {
        toxic["ttl_left"]
            .as_u64()
            .unwrap_or_else(|| panic!("{toxic}"))
    };

    let created = s
        .fault(
            "ttl-left",
            json!({"name": "brief", "type": "latency", "ttl": 600_000, "attributes": {"latency": 1}}),
        )
        .await;
    assert_eq!(created["ttl"], 600_000);
    assert!((590_000..=600_000).contains(&left(&created)), "{created}");
    let plain = s
        .fault("ttl-left", json!({"name": "plain", "type": "noop"}))
        .await;
    assert!(
        plain.get("ttl_left").is_none(),
        "no ttl, no time left: {plain}"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let listed = &s.toxics("ttl-left").await[0];
    assert!(
        left(listed) <= left(&created) - 250,
        "the clock runs: {listed}"
    );
    let (status, proxies) = s.call("GET", "/proxies", None).await;
    assert_eq!(status, 200, "{proxies}");
    let proxies: Value = serde_json::from_str(&proxies).unwrap();
    assert!(left(&proxies["ttl-left"]["toxics"][0]) <= left(listed));

    // An update restarts the ttl from the update, with the new value.
    let (status, updated) = s
        .call(
            "POST",
            "/proxies/ttl-left/toxics/brief",
            Some(json!({"ttl": 30_000})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    let updated: Value = serde_json::from_str(&updated).unwrap();
    assert!((20_000..=30_000).contains(&left(&updated)), "{updated}");
}

// --- pass-through --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connection_sees_faults_switched_on_and_off() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("ka", up.addr).await;
    let mut raw = Raw::connect(&base).await;
    let mut seen = Vec::new();
    for round in 0..3 {
        let r = raw.get(&format!("/r{round}")).await;
        assert_eq!(r.body, format!("upstream GET /r{round}").as_bytes());
        seen.push(r.status);
        s.fault("ka", json!({"name": "maint", "type": "maintenance"}))
            .await;
        let r = raw.get("/m").await;
        assert_eq!(r.body, s.maintenance_body("ka").as_bytes());
        seen.push(r.status);
        s.remove("ka", "maint").await;
    }
    assert_eq!(seen, [200, 503, 200, 503, 200, 503]);
    let r = raw.get("/last").await;
    assert_eq!(r.status, 200);
    // One client connection throughout, and one pooled upstream connection.
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);

    // The same with a pooled reqwest client.
    let c = client();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(get_status(&c, &format!("{base}/a")).await);
        s.fault(
            "ka",
            json!({"name": "err", "type": "status", "attributes": {"status": 500}}),
        )
        .await;
        seen.push(get_status(&c, &format!("{base}/a")).await);
        s.remove("ka", "err").await;
    }
    assert_eq!(seen, [200, 500, 200, 500, 200, 500]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_kept_forwarded_headers_added_and_hop_by_hop_headers_removed() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("hop", up.addr).await;
    let mut raw = Raw::connect(&base).await;
    raw.send(
        b"GET /echo?q=1 HTTP/1.1\r\nHost: app.example.com\r\nConnection: keep-alive, x-drop-me\r\nX-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic Zm9v\r\nProxy-Connection: keep-alive\r\nX-Keep-Me: yes\r\nUser-Agent: hop-test\r\n\r\n",
    )
    .await;
    let response = raw.response().await.unwrap();
    assert_eq!(response.status, 200);
    let seen = String::from_utf8(response.body).unwrap();
    let mut lines = seen.lines();
    assert_eq!(lines.next(), Some("GET /echo?q=1 HTTP/1.1"));
    let received: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| {
        received
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("host"), ["app.example.com"], "{seen}");
    assert_eq!(get("x-forwarded-for"), ["127.0.0.1"], "{seen}");
    assert_eq!(get("x-forwarded-proto"), ["http"], "{seen}");
    assert_eq!(get("x-forwarded-host"), ["app.example.com"], "{seen}");
    assert_eq!(
        get("forwarded"),
        ["for=127.0.0.1;proto=http;host=\"app.example.com\""],
        "{seen}"
    );
    for gone in [
        "connection",
        "x-drop-me",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(get(gone).is_empty(), "{gone} reached the upstream: {seen}");
    }
    assert_eq!(get("x-keep-me"), ["yes"]);
    assert_eq!(get("user-agent"), ["hop-test"]);

    // And on the way back.
    for gone in ["x-upstream-hop", "keep-alive", "proxy-authenticate"] {
        assert!(
            response.head.header(gone).is_none(),
            "{gone} reached the client: {}",
            response.head.raw
        );
    }
    assert_eq!(response.head.header("x-end-to-end"), Some("kept"));
    // The connection is still usable.
    assert_eq!(raw.get("/again").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_one_mib_body_arrives_intact() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("big", up.addr).await;
    let c = client();
    for _ in 0..2 {
        let mut response = c.get(format!("{base}/big")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header_u64(&response, "content-length"), 1 << 20);
        let mut got = Vec::with_capacity(1 << 20);
        let mut chunks = 0;
        for _ in 0..100_000 {
            match response.chunk().await.unwrap() {
                Some(chunk) => {
                    chunks += 1;
                    got.extend_from_slice(&chunk);
                }
                None => break,
            }
        }
        assert!(chunks > 1, "streamed, not one buffer");
        assert_eq!(got.len(), 1 << 20);
        assert!(got == big_body(), "body differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_to_the_upstream() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("upload", up.addr).await;
    let body = big_body();
    let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();

    // With a Content-Length, through reqwest.
    let response = client()
        .post(format!("{base}/upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        format!("{} {sum} 1", 1 << 20)
    );

    // Chunked, from a raw socket, in pieces.
    let mut raw = Raw::connect(&base).await;
    raw.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    for piece in body.chunks(100_000) {
        raw.send(format!("{:x}\r\n", piece.len()).as_bytes()).await;
        raw.send(piece).await;
        raw.send(b"\r\n").await;
    }
    raw.send(b"0\r\n\r\n").await;
    let response = raw.response().await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        String::from_utf8(response.body).unwrap(),
        format!("{} {sum} 1", 1 << 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_answers_502_json() {
    let s = Server::start();
    let dead = closed_port().await;
    let base = s.forwarding("down", dead).await;
    let response = client().get(format!("{base}/x")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "bad_gateway");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&dead.to_string()),
        "{body}"
    );
    let journal = s.journal("down", None).await;
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0]["status"], 502);
}

// --- journal -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_lists_the_last_requests_in_order() {
    let s = Server::start();
    let base = s.standin("jr").await;
    s.fault(
        "jr",
        json!({"name": "not-found", "type": "status", "match": {"path": "/missing*"},
            "attributes": {"status": 404}}),
    )
    .await;
    let c = client();
    assert_eq!(get_status(&c, &format!("{base}/a")).await, 503);
    let response = c
        .post(format!("{base}/missing/1?x=1"))
        .header("user-agent", "journal-test/1")
        .header("x-request-id", "r-1")
        .header("authorization", "Bearer secret")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        c.delete(format!("{base}/b")).send().await.unwrap().status(),
        503
    );

    let all = s.journal("jr", None).await;
    assert_eq!(all.len(), 3);
    let summary: Vec<(u64, &str, &str, u64, Value)> = all
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["method"].as_str().unwrap(),
                e["path"].as_str().unwrap(),
                e["status"].as_u64().unwrap(),
                e["fault"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "GET", "/a", 503, Value::Null),
            (2, "POST", "/missing/1?x=1", 404, json!("not-found")),
            (3, "DELETE", "/b", 503, Value::Null),
        ]
    );
    let headers = &all[1]["headers"];
    assert_eq!(headers["user-agent"], "journal-test/1");
    assert_eq!(headers["x-request-id"], "r-1");
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert!(
        all.iter()
            .all(|e| e["duration_ms"].is_u64() && e["at_ms"].is_u64())
    );
    assert!(all[0]["at_ms"].as_u64() <= all[2]["at_ms"].as_u64());

    let last_two = s.journal("jr", Some(2)).await;
    assert_eq!(last_two.len(), 2);
    assert_eq!(last_two[0]["seq"], 2);
    assert_eq!(last_two[1]["seq"], 3);
    assert!(s.journal("jr", Some(0)).await.is_empty());
    assert_eq!(s.journal("jr", Some(50)).await.len(), 3);

    let (status, text) = s.call("GET", "/proxies/jr/requests?limit=abc", None).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("limit"), "{text}");
    let (status, _) = s.call("GET", "/proxies/nope/requests", None).await;
    assert_eq!(status, 404);
}

// --- refused input -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_fault_values_are_refused_naming_the_field() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.standin("web").await;
    s.proxy(json!({"name": "plain", "listen": "127.0.0.1:0", "upstream": up.addr.to_string()}))
        .await;
    s.fault(
        "web",
        json!({"name": "existing", "type": "status", "attributes": {"status": 500}}),
    )
    .await;
    let before = s.toxics("web").await;

    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"type": "status", "attributes": {"status": 700}}),
            "attributes.status",
        ),
        (
            json!({"type": "status", "attributes": {"status": 99}}),
            "attributes.status",
        ),
        (
            json!({"type": "maintenance", "attributes": {"status": 600}}),
            "attributes.status",
        ),
        (
            json!({"type": "http_latency", "attributes": {"latency": -5}}),
            "attributes.latency",
        ),
        (
            json!({"type": "http_latency", "attributes": {"jitter": -1}}),
            "attributes.jitter",
        ),
        (
            json!({"type": "http_latency", "attributes": {"distribution": "pareto"}}),
            "distribution",
        ),
        (
            json!({"type": "status", "attributes": {"headers": {"bad name": "x"}}}),
            "bad name",
        ),
        (
            json!({"type": "status", "attributes": {"headers": {"x-ok": "line\r\nbreak"}}}),
            "attributes.headers",
        ),
        (
            json!({"type": "maintenance", "attributes": {"headers": {"": "x"}}}),
            "attributes.headers",
        ),
        (
            json!({"type": "status", "attributes": {"stauts": 500}}),
            "stauts",
        ),
        (
            json!({"type": "maintenance", "attributes": {"retry_after": -3}}),
            "retry_after",
        ),
        (
            json!({"type": "abort", "attributes": {"mode": "explode"}}),
            "mode",
        ),
        (
            json!({"type": "rate_limit", "attributes": {"limit": 0}}),
            "attributes.limit",
        ),
        (
            json!({"type": "rate_limit", "attributes": {"limit": 5, "period_ms": 0}}),
            "attributes.period_ms",
        ),
        (json!({"type": "rate_limit", "attributes": {}}), "limit"),
        (
            json!({"type": "router_timeout", "attributes": {"timeout": 0}}),
            "attributes.timeout",
        ),
        (
            json!({"type": "slow_body", "attributes": {"rate": 0}}),
            "attributes.rate",
        ),
        (json!({"type": "status", "first_n": 0}), "first_n"),
        (json!({"type": "status", "every_nth": 0}), "every_nth"),
        (json!({"type": "status", "ttl": 0}), "ttl"),
        (json!({"type": "status", "ttl": -100}), "ttl"),
        (json!({"type": "status", "match": {"paht": "/x"}}), "paht"),
        (json!({"type": "status", "match": {"method": 5}}), "match"),
        (json!({"type": "latency", "match": {"path": "/x"}}), "match"),
        (
            json!({"type": "status", "attributes": {"body": "hello", "headers": {"Content-Length": "2"}}}),
            "attributes.headers.Content-Length",
        ),
        (
            json!({"type": "maintenance", "attributes": {"headers": {"transfer-encoding": "chunked"}}}),
            "attributes.headers.transfer-encoding",
        ),
        (
            json!({"type": "status", "attributes": {"headers": {"connection": "close"}}}),
            "attributes.headers.connection",
        ),
        (
            json!({"type": "rate_limit", "attributes": {"limit": 1, "key_header": "bad name"}}),
            "attributes.key_header",
        ),
        (
            json!({"type": "status", "match": {"headers": {"bad name": "x"}}}),
            "match.headers",
        ),
        (
            json!({"type": "status", "match": {"method": "G E T"}}),
            "match.method",
        ),
    ];
    for (body, field) in cases {
        let (status, text) = s
            .call("POST", "/proxies/web/toxics", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body} → {text}");
        assert!(text.contains(field), "{body} → {text} should name {field}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["status"], 400);
    }

    // A bad update leaves the fault as it was.
    for patch in [
        json!({"attributes": {"status": 700}}),
        json!({"attributes": {"headers": {"bad name": "x"}}}),
        json!({"attributes": {"nope": 1}}),
        json!({"first_n": 0}),
    ] {
        let (status, text) = s
            .call("POST", "/proxies/web/toxics/existing", Some(patch.clone()))
            .await;
        assert_eq!(status, 400, "{patch} → {text}");
    }

    // An HTTP fault on a tcp proxy.
    let (status, text) = s
        .call(
            "POST",
            "/proxies/plain/toxics",
            Some(json!({"type": "maintenance"})),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("type") && text.contains("tcp proxy"),
        "{text}"
    );
    assert!(s.toxics("plain").await.is_empty());
    let (status, text) = s
        .call(
            "POST",
            "/proxies",
            Some(json!({"name": "tcp-with-fault", "listen": "127.0.0.1:0",
                "upstream": up.addr.to_string(), "toxics": [{"type": "status"}]})),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("toxics[0].type"), "{text}");
    let (status, _) = s.call("GET", "/proxies/tcp-with-fault", None).await;
    assert_eq!(status, 404, "not created");

    // Nothing changed.
    assert_eq!(s.toxics("web").await, before);
    assert_eq!(get_status(&client(), &format!("{base}/x")).await, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxicity_outside_zero_to_one_is_refused_for_http_faults() {
    let s = Server::start();
    s.standin("web").await;
    for toxicity in [1.5, -0.1] {
        let body = json!({"type": "status", "toxicity": toxicity});
        let (status, text) = s.call("POST", "/proxies/web/toxics", Some(body)).await;
        assert_eq!(status, 400, "toxicity {toxicity} → {text}");
        assert!(text.contains("toxicity"), "{text}");
    }
    assert!(s.toxics("web").await.is_empty());
}

// --- malformed requests from the client ----------------------------------------------------

/// Sends `request` on a new connection (from a separate task, so a server that stops
/// reading cannot block us) and returns what came back before the close.
async fn exchange(base: &str, request: Vec<u8>) -> (String, Duration) {
    let raw = Raw::connect(base).await;
    let Raw {
        mut read,
        mut write,
    } = raw;
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        let _ = write.flush().await;
        // Keep the write half open until the server closes.
        tokio::time::sleep(LIMIT).await;
        drop(write);
    });
    let t = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
            Err(_) => panic!(
                "no close within 5 s; got {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    writer.abort();
    (String::from_utf8_lossy(&bytes).into_owned(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_or_431_and_a_close() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("mal", up.addr).await;

    let (reply, _) = exchange(&base, b"GARBAGE\r\n\r\n".to_vec()).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");

    let (reply, _) = exchange(
        &base,
        b"GET / HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n".to_vec(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");

    let (reply, _) = exchange(
        &base,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nxyz".to_vec(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");

    let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..300 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let (reply, _) = exchange(&base, many).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply:?}");

    let mut huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge.extend_from_slice(b"\r\n\r\n");
    let (reply, _) = exchange(&base, huge).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply:?}");

    // Nothing reached the upstream, and the proxy still serves.
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);
    assert_eq!(get_status(&client(), &format!("{base}/ok")).await, 200);
}

// --- TCP toxics on HTTP proxies ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_latency_toxic_delays_http_answers_on_new_connections() {
    let s = Server::start();
    let base = s.standin("tcpish").await;
    let expected = s.maintenance_body("tcpish");
    let time_one = || async {
        let t = Instant::now();
        let response = fresh_client()
            .get(format!("{base}/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.text().await.unwrap(), expected);
        t.elapsed()
    };
    let before = time_one().await;
    assert!(before < Duration::from_millis(300), "{before:?}");

    s.fault(
        "tcpish",
        json!({"name": "slow", "type": "latency", "attributes": {"latency": 500}}),
    )
    .await;
    let during = time_one().await;
    assert!(
        (Duration::from_millis(480)..Duration::from_secs(3)).contains(&during),
        "{during:?}"
    );
    // The HTTP layer still answers (and journals) behind the TCP toxic.
    let journal = s.journal("tcpish", Some(1)).await;
    assert_eq!(journal[0]["status"], 503);

    s.remove("tcpish", "slow").await;
    let after = time_one().await;
    assert!(after < Duration::from_millis(300), "{after:?}");

    // HTTP faults and TCP toxics together: the fault answers, the toxic delays it.
    s.fault(
        "tcpish",
        json!({"name": "slow-up", "type": "latency", "stream": "upstream", "attributes": {"latency": 400}}),
    )
    .await;
    s.fault(
        "tcpish",
        json!({"name": "teapot", "type": "status", "attributes": {"status": 418}}),
    )
    .await;
    let t = Instant::now();
    let status = get_status(&fresh_client(), &format!("{base}/x")).await;
    assert_eq!(status, 418);
    assert!(
        t.elapsed() >= Duration::from_millis(380),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_toxics_keep_the_client_ip_for_rate_limits() {
    let s = Server::start();
    let base = s.standin("relayed").await;
    // Any TCP toxic sends new connections through the internal hop on loopback.
    s.fault(
        "relayed",
        json!({"name": "hop", "type": "latency", "attributes": {"latency": 1}}),
    )
    .await;
    s.fault(
        "relayed",
        json!({"name": "rl", "type": "rate_limit", "attributes": {"limit": 1, "period_ms": 60000}}),
    )
    .await;
    // Clients from two loopback addresses, a new connection per request.
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().ok())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let (a, b) = (from("127.0.0.2"), from("127.0.0.3"));
    let url = format!("{base}/x");
    assert_eq!(
        get_status(&a, &url).await,
        503,
        "first request of 127.0.0.2"
    );
    assert_eq!(get_status(&a, &url).await, 429, "same address, same bucket");
    // Keyed on the hop's loopback address, 127.0.0.3 would share 127.0.0.2's bucket.
    assert_eq!(
        get_status(&b, &url).await,
        503,
        "another address, its own bucket"
    );
    assert_eq!(get_status(&b, &url).await, 429);
}

// --- composition order ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_comes_before_answers_whatever_the_insertion_order() {
    let s = Server::start();
    let base = s.standin("order").await;
    s.fault(
        "order",
        json!({"name": "teapot", "type": "status", "attributes": {"status": 418}}),
    )
    .await;
    s.fault(
        "order",
        json!({"name": "rl", "type": "rate_limit", "attributes": {"limit": 2, "period_ms": 60000}}),
    )
    .await;
    let c = client();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let response = c.get(format!("{base}/x")).send().await.unwrap();
        seen.push((
            response.status().as_u16(),
            header(&response, "ratelimit-remaining").map(str::to_owned),
        ));
    }
    assert_eq!(
        seen,
        [
            (418, Some("1".to_owned())),
            (418, Some("0".to_owned())),
            (429, Some("0".to_owned())),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_http_bytes_connections_and_requests_by_status_and_fault() {
    let s = Server::start();
    let base = s.standin("metered").await;
    let c = fresh_client();
    assert_eq!(get_status(&c, &format!("{base}/a")).await, 503);
    s.fault(
        "metered",
        json!({"name": "teapot", "type": "status", "attributes": {"status": 418}}),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get_status(&c, &format!("{base}/b")).await, 418);
    }
    let (status, text) = s.call("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let line = |needle: &[&str]| {
        text.lines()
            .find(|l| !l.starts_with('#') && needle.iter().all(|n| l.contains(n)))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
    };
    assert_eq!(
        line(&[
            "downtime_http_requests_total",
            "proxy=\"metered\"",
            "status=\"503\""
        ]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        line(&[
            "downtime_http_requests_total",
            "proxy=\"metered\"",
            "status=\"418\""
        ]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        line(&["downtime_http_faulted_requests_total", "fault=\"teapot\""]),
        Some(3.0),
        "{text}"
    );
    let sent = line(&[
        "toxiproxy_proxy_sent_bytes_total",
        "direction=\"downstream\"",
        "proxy=\"metered\"",
    ]);
    assert!(sent.is_some_and(|b| b > 0.0), "{text}");
    assert!(
        line(&["downtime_proxy_connections_total", "proxy=\"metered\""]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_times_the_whole_body_and_counts_bytes_and_cuts() {
    let s = Server::start();
    let up = upstream().await;
    let base = s.forwarding("timed", up.addr).await;
    s.fault(
        "timed",
        json!({"name": "slow", "type": "slow_body", "attributes": {"rate": 1000}}),
    )
    .await;
    let body = fresh_client()
        .post(format!("{base}/big"))
        .body(vec![b'x'; 1234])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let journal = s.journal("timed", None).await;
    let entry = journal.last().unwrap();
    assert_eq!(entry["bytes_out"], body.len() as u64, "{entry}");
    assert_eq!(entry["bytes_in"], 1234, "{entry}");
    assert!(entry.get("cut").is_none(), "{entry}");
    // 1 MiB at 1000 KB/s takes about a second; the head came at once.
    let (headers, whole) = (
        entry["headers_ms"].as_u64().unwrap(),
        entry["duration_ms"].as_u64().unwrap(),
    );
    assert!(whole > headers + 500, "{entry}");

    // A client that goes away mid-body is journaled as such.
    s.remove("timed", "slow").await;
    s.fault(
        "timed",
        json!({"name": "slower", "type": "slow_body", "attributes": {"rate": 10}}),
    )
    .await;
    let mut raw = Raw::connect(&base).await;
    raw.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(raw);
    let cut = eventually_journal(&s, "timed", |e| e["cut"] == "client_gone").await;
    assert!(cut, "{:?}", s.journal("timed", None).await);
}

async fn eventually_journal(s: &Server, proxy: &str, check: impl Fn(&Value) -> bool) -> bool {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        if s.journal(proxy, None).await.iter().any(&check) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
