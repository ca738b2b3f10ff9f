//! The HTTP data path with real clients and servers on loopback: WebSockets, redirects,
//! trailers, HTTP/2, limits, CONNECT, half-closed clients, bad framing, and TCP toxics on
//! live keep-alive connections — through the registry, with no API in between.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use downtime_model::{ProxyRequest, ToxicRequest};
use downtime_proxy::Registry;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Generous bound for anything that should be immediate (never a timing assertion).
const LIMIT: Duration = Duration::from_secs(10);

async fn http_proxy(
    registry: &Registry,
    name: &str,
    upstream: Option<SocketAddr>,
    extra: Value,
) -> SocketAddr {
    let mut body = json!({"name": name, "listen": "127.0.0.1:0", "protocol": "http"});
    if let Some(up) = upstream {
        body["upstream"] = json!(up.to_string());
    }
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let request: ProxyRequest = serde_json::from_value(body).unwrap();
    let (config, toxics) = request.validate(None).unwrap();
    let view = registry.create(config, toxics).await.unwrap();
    view.config.listen.parse().unwrap()
}

async fn add(registry: &Registry, proxy: &str, toxic: Value) {
    let request: ToxicRequest = serde_json::from_value(toxic).unwrap();
    registry.add_toxic(proxy, request).await.unwrap();
}

/// The upstream's answers: `/echo` returns the request head it received; `/redirect`
/// answers 302 to its own address; `/trailers` streams a body with trailers; `/sum`
/// reads the request body and its trailers.
async fn handle(
    req: Request<Incoming>,
    me: SocketAddr,
) -> Result<Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>, Infallible> {
    let path = req.uri().path().to_owned();
    let boxed = |b: &str| Full::new(Bytes::from(b.to_owned())).boxed();
    Ok(match path.as_str() {
        "/redirect" => Response::builder()
            .status(302)
            .header("location", format!("http://{me}/landed?x=1"))
            .body(boxed(""))
            .unwrap(),
        "/trailers" => {
            let frames = vec![
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"part one, "))),
                Ok(Frame::data(Bytes::from_static(b"part two"))),
                Ok(Frame::trailers({
                    let mut t = http::HeaderMap::new();
                    t.insert("x-checksum", "c0ffee".parse().unwrap());
                    t
                })),
            ];
            Response::builder()
                .header("trailer", "x-checksum")
                .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                    frames,
                ))))
                .unwrap()
        }
        "/sum" => {
            let collected = req.into_body().collect().await.unwrap();
            let trailer = collected
                .trailers()
                .and_then(|t| t.get("x-sum"))
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = collected.to_bytes();
            Response::new(boxed(&format!("{} bytes, trailer {trailer}", body.len())))
        }
        _ => {
            let mut head = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            for (k, v) in req.headers() {
                head.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
            }
            Response::new(boxed(&head))
        }
    })
}

/// A real hyper server (HTTP/1.1 and HTTP/2 with prior knowledge) on a free port.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let me = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, me));
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                // Accepts more headers than hyper's default, as many servers do.
                builder.http1().max_headers(400);
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    me
}

/// A WebSocket echo server (tungstenite does its own handshake).
async fn ws_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let me = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    me
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(LIMIT)
        .build()
        .unwrap()
}

/// Sends raw bytes and reads until the server closes or `LIMIT`.
async fn raw_exchange(addr: SocketAddr, request: &[u8], half_close: bool) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    if half_close {
        stream.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_passes_with_and_without_tcp_toxics_and_a_fault_can_refuse_it() {
    let registry = Registry::new(Some(7));
    let up = ws_upstream().await;
    let addr = http_proxy(&registry, "ws", Some(up), json!({})).await;

    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/socket"))
        .await
        .expect("the websocket opens through the proxy");
    assert_eq!(response.status(), 101);
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));

    // A TCP toxic added now applies to the open tunnel's next bytes.
    add(
        &registry,
        "ws",
        json!({"type": "latency", "stream": "downstream", "attributes": {"latency": 200}}),
    )
    .await;
    let t = Instant::now();
    ws.send(Message::text("slow")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("slow"));
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    drop(ws);

    // A status fault on the upgrade request refuses the websocket; the journal records it.
    add(
        &registry,
        "ws",
        json!({"name": "down", "type": "status", "attributes": {"status": 503}}),
    )
    .await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/socket")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected a 503 refusal, got {other:?}"),
    }
    let journal = registry.journal("ws", 10).await.unwrap();
    let last = journal.last().unwrap();
    assert_eq!(last.status, 503);
    assert_eq!(last.fault.as_deref(), Some("down"));
    assert_eq!(
        last.headers.get("upgrade").map(String::as_str),
        Some("websocket")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_kept_and_redirects_to_the_upstream_come_back_through_the_proxy() {
    let registry = Registry::new(Some(7));
    let up = upstream().await;
    let addr = http_proxy(&registry, "redir", Some(up), json!({})).await;
    let c = client();
    let r = c
        .get(format!("http://{addr}/redirect"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        format!("http://{addr}/landed?x=1").as_str()
    );
    let echo = c
        .get(format!("http://{addr}/echo"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(echo.contains(&format!("host: {addr}\n")), "{echo}");
    assert!(echo.contains("x-forwarded-for: 127.0.0.1\n"), "{echo}");

    // Options: the upstream's own Host, no forwarding headers, no rewrite.
    let plain = http_proxy(
        &registry,
        "plain",
        Some(up),
        json!({"http": {"host": "upstream", "forwarded": false, "rewrite_location": false}}),
    )
    .await;
    let echo = c
        .get(format!("http://{plain}/echo"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(echo.contains(&format!("host: {up}\n")), "{echo}");
    assert!(!echo.contains("x-forwarded"), "{echo}");
    let r = c
        .get(format!("http://{plain}/redirect"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["location"],
        format!("http://{up}/landed?x=1").as_str()
    );
}

/// An HTTP/1.1 client on one connection, reading bodies with their trailers.
async fn h1_client(addr: SocketAddr) -> Sender {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

type Sender = hyper::client::conn::http1::SendRequest<
    http_body_util::combinators::BoxBody<Bytes, Infallible>,
>;

/// Sends one request on the connection once it is ready for it.
async fn send_on(
    send: &mut Sender,
    request: Request<http_body_util::combinators::BoxBody<Bytes, Infallible>>,
) -> Response<Incoming> {
    send.ready().await.unwrap();
    send.send_request(request).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_are_forwarded_both_ways() {
    let registry = Registry::new(Some(7));
    let up = upstream().await;
    let addr = http_proxy(&registry, "trail", Some(up), json!({})).await;
    let mut send = h1_client(addr).await;

    let request = Request::get("/trailers")
        .header("host", "trail.test")
        .header("te", "trailers")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    let response = send_on(&mut send, request).await;
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reach the client");
    assert_eq!(trailers["x-checksum"], "c0ffee");
    assert_eq!(collected.to_bytes(), "part one, part two");

    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"12345"))),
        Ok(Frame::trailers({
            let mut t = http::HeaderMap::new();
            t.insert("x-sum", "15".parse().unwrap());
            t
        })),
    ];
    let request = Request::post("/sum")
        .header("host", "trail.test")
        .header("trailer", "x-sum")
        .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
            frames,
        ))))
        .unwrap();
    let response = send_on(&mut send, request).await;
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, "5 bytes, trailer 15");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served_and_reach_an_http1_upstream() {
    let registry = Registry::new(Some(7));
    let up = upstream().await;
    let addr = http_proxy(&registry, "h2", Some(up), json!({})).await;
    let standin = http_proxy(&registry, "h2-standin", None, json!({})).await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(LIMIT)
        .build()
        .unwrap();
    let r = c.get(format!("http://{addr}/echo")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let echo = r.text().await.unwrap();
    assert!(echo.starts_with("GET /echo HTTP/1.1"), "{echo}");
    let r = c.get(format!("http://{standin}/")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 503);
    // Forced HTTP/2 to the upstream, with prior knowledge.
    let forced = http_proxy(
        &registry,
        "h2-up",
        Some(up),
        json!({"http": {"upstream_protocol": "http2"}}),
    )
    .await;
    let echo = client()
        .get(format!("http://{forced}/echo"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        echo.starts_with("GET http://"),
        "h2 requests carry an absolute URI: {echo}"
    );
    assert!(echo.lines().next().unwrap().ends_with("HTTP/2.0"), "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_toxic_added_on_an_open_keep_alive_connection_applies_to_its_next_bytes() {
    let registry = Registry::new(Some(7));
    let up = upstream().await;
    let addr = http_proxy(&registry, "ka", Some(up), json!({})).await;
    let mut send = h1_client(addr).await;
    let get = || {
        Request::get("/echo")
            .header("host", "ka.test")
            .body(Full::new(Bytes::new()).boxed())
            .unwrap()
    };
    let t = Instant::now();
    send_on(&mut send, get())
        .await
        .into_body()
        .collect()
        .await
        .unwrap();
    let before = t.elapsed();
    add(
        &registry,
        "ka",
        json!({"type": "latency", "stream": "downstream", "attributes": {"latency": 300}}),
    )
    .await;
    let t = Instant::now();
    send_on(&mut send, get())
        .await
        .into_body()
        .collect()
        .await
        .unwrap();
    let after = t.elapsed();
    assert!(
        after >= Duration::from_millis(300),
        "before {before:?}, after {after:?}"
    );
    // Removed: the same connection is fast again (well under the toxic's 300 ms).
    registry
        .remove_toxic("ka", "latency_downstream")
        .await
        .unwrap();
    send_on(&mut send, get())
        .await
        .into_body()
        .collect()
        .await
        .unwrap();
    let t = Instant::now();
    send_on(&mut send, get())
        .await
        .into_body()
        .collect()
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    // Bytes are counted for HTTP proxies too.
    let counters = registry.counters().await;
    let ka = counters.iter().find(|c| c.name == "ka").unwrap();
    assert!(
        ka.stats
            .downstream
            .sent
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert_eq!(
        ka.stats
            .connections_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let http = ka.http.as_ref().unwrap();
    assert_eq!(http.by_status(), vec![(200, 4)]);
}

/// Listening TCP sockets of this process (from /proc), to prove there is no hidden hop.
fn listening_sockets() -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")
                .map(|s| s.trim_end_matches(']').to_owned())
        })
        .collect();
    ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(3) == Some(&"0A") && f.get(9).is_some_and(|i| inodes.contains(*i))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_listening_port_per_http_proxy_even_with_tcp_toxics() {
    let registry = Registry::new(Some(7));
    let up = upstream().await;
    let before = listening_sockets();
    let addr = http_proxy(&registry, "one", Some(up), json!({})).await;
    add(
        &registry,
        "one",
        json!({"type": "latency", "attributes": {"latency": 1}}),
    )
    .await;
    let r = client()
        .get(format!("http://{addr}/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(listening_sockets(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_accept_what_servers_accept_and_name_the_setting_beyond() {
    let registry = Registry::new(Some(7));
    let up = upstream().await;
    let addr = http_proxy(&registry, "lim", Some(up), json!({})).await;
    let c = client();
    let long = format!("http://{addr}/echo?q={}", "a".repeat(60_000));
    let r = c.get(&long).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let mut many = c.get(format!("http://{addr}/echo"));
    for i in 0..150 {
        many = many.header(format!("x-h{i}"), "v");
    }
    assert_eq!(many.send().await.unwrap().status(), 200);

    let tight = http_proxy(
        &registry,
        "tight",
        Some(up),
        json!({"http": {"max_headers": 20, "max_uri_bytes": 100}}),
    )
    .await;
    let mut many = c.get(format!("http://{tight}/echo"));
    for i in 0..30 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let r = many.send().await.unwrap();
    assert_eq!(r.status(), 431);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("http.max_headers"),
        "{body}"
    );
    let r = c
        .get(format!("http://{tight}/{}", "p".repeat(200)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 414);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("http.max_uri_bytes"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_with_a_body_and_journaled_with_its_target() {
    let registry = Registry::new(Some(7));
    let addr = http_proxy(&registry, "conn", None, json!({})).await;
    let answer = raw_exchange(
        addr,
        b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n",
        false,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.contains("not a forward proxy"), "{answer}");
    let journal = registry.journal("conn", 1).await.unwrap();
    assert_eq!(journal[0].method, "CONNECT");
    assert_eq!(journal[0].path, "api.example.com:443");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let registry = Registry::new(Some(7));
    let up = upstream().await;
    let standin = http_proxy(&registry, "half-standin", None, json!({})).await;
    let forwarding = http_proxy(&registry, "half", Some(up), json!({})).await;
    for _ in 0..20 {
        let a = raw_exchange(standin, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true).await;
        assert!(a.starts_with("HTTP/1.1 503"), "{a}");
        let a = raw_exchange(forwarding, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", true).await;
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunked_framing_gets_a_400_not_a_502_blaming_the_upstream() {
    let registry = Registry::new(Some(7));
    let up = upstream().await;
    let addr = http_proxy(&registry, "chunk", Some(up), json!({})).await;
    let a = raw_exchange(
        addr,
        b"POST /sum HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        false,
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 400"), "{a}");
    // Smuggling shapes never reach the upstream ambiguously.
    let a = raw_exchange(
        addr,
        b"POST /sum HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
        false,
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 400"), "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stand_in_can_be_disabled_enabled_and_given_an_upstream() {
    let registry = Registry::new(Some(7));
    let up = upstream().await;
    let addr = http_proxy(&registry, "si", None, json!({})).await;
    let patch = |v: Value| serde_json::from_value::<downtime_model::ProxyPatch>(v).unwrap();
    let view = registry
        .update("si", patch(json!({"enabled": false})))
        .await
        .unwrap();
    assert!(!view.config.enabled);
    let view = registry
        .update("si", patch(json!({"enabled": true})))
        .await
        .unwrap();
    assert!(view.config.enabled);
    let view = registry
        .update("si", patch(json!({"upstream": up.to_string()})))
        .await
        .unwrap();
    let now: SocketAddr = view.config.listen.parse().unwrap();
    let r = client()
        .get(format!("http://{now}/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "was {addr}");
}

/// The Python with grpcio: the compat suites' virtualenv (tests/compat/install.sh), else
/// the system's. `None` (the test skips) unless CI asks for every real client.
fn grpc_python() -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join("tests/compat/python/.venv/bin/python");
    let python = if venv.exists() {
        venv
    } else {
        "python3".into()
    };
    let ok = std::process::Command::new(&python)
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("DOWNTIME_REQUIRE_COMPAT").is_none(),
        "grpcio is required (run tests/compat/install.sh)"
    );
    eprintln!("skipping: grpcio is not installed (tests/compat/install.sh)");
    None
}

fn grpc_call(python: &std::path::Path, target: SocketAddr) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/echo.py");
    let out = std::process::Command::new(python)
        .args([script, "call", &target.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_streaming_calls_pass_and_a_status_fault_is_a_grpc_error() {
    let Some(python) = grpc_python() else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/echo.py");
    let mut server = std::process::Command::new(&python)
        .args([script, "serve"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let up: SocketAddr = format!("127.0.0.1:{}", port.trim()).parse().unwrap();
    let registry = Registry::new(Some(7));
    let addr = http_proxy(&registry, "grpc", Some(up), json!({})).await;

    let py = python.clone();
    let passed = tokio::task::spawn_blocking(move || grpc_call(&py, addr))
        .await
        .unwrap();
    assert_eq!(passed["say"], "echo: hello", "{passed}");
    assert_eq!(
        passed["count"],
        json!(["0", "1", "2", "3", "4"]),
        "{passed}"
    );

    // With a TCP toxic beneath, and then a status fault on the service's path.
    add(
        &registry,
        "grpc",
        json!({"type": "latency", "attributes": {"latency": 20}}),
    )
    .await;
    let py = python.clone();
    let slowed = tokio::task::spawn_blocking(move || grpc_call(&py, addr))
        .await
        .unwrap();
    assert_eq!(slowed["say"], "echo: hello", "{slowed}");
    add(
        &registry,
        "grpc",
        json!({"name": "down", "type": "status", "attributes": {"status": 503}, "match": {"path": "/echo.Echo/*"}}),
    )
    .await;
    let py = python.clone();
    let failed = tokio::task::spawn_blocking(move || grpc_call(&py, addr))
        .await
        .unwrap();
    assert_eq!(failed["error"]["code"], "UNAVAILABLE", "{failed}");
    drop(server.stdin.take());
    let _ = server.kill();
    let _ = server.wait();
}

/// Reads until the peer closes (true) or `within` passes (false).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> (bool, String) {
    let mut out = Vec::new();
    let done = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    (done.is_ok(), String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_are_closed_and_a_stalled_body_gets_408() {
    let registry = Registry::new(Some(7));
    let up = upstream().await;
    let addr = http_proxy(
        &registry,
        "slow",
        Some(up),
        json!({"http": {"header_timeout_ms": 500, "body_timeout_ms": 500}}),
    )
    .await;
    // Silent after connecting.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await.0,
        "an idle client stays"
    );
    // Slowloris: a byte of head every 200 ms (10 s for the whole head) is cut long before.
    let slow = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = slow.into_split();
    tokio::spawn(async move {
        for _ in 0..50 {
            if write.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut sink = Vec::new();
    let cut = tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut sink)).await;
    assert!(cut.is_ok(), "the trickling client was not cut within 5 s");
    // Kept alive after an answer, then silent: closed too.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (closed, text) = closed_within(&mut kept, Duration::from_secs(5)).await;
    assert!(closed && text.starts_with("HTTP/1.1 200"), "{text}");
    // A body that stops arriving: 408 naming the setting, and the connection closed.
    let answer = {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /sum HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
            .await
            .unwrap();
        closed_within(&mut s, Duration::from_secs(5)).await
    };
    assert!(
        answer.0 && answer.1.starts_with("HTTP/1.1 408"),
        "{}",
        answer.1
    );
    assert!(answer.1.contains("http.body_timeout_ms"), "{}", answer.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_proxy_at_its_connection_cap_answers_503_and_recovers() {
    let registry = Registry::new(Some(7));
    let up = upstream().await;
    let addr = http_proxy(&registry, "capped", Some(up), json!({"max_connections": 3})).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let refused = raw_exchange(addr, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("max_connections"), "{refused}");
    held.pop();
    // The slot comes back once the server has seen the close.
    let mut ok = false;
    for _ in 0..50 {
        let a = raw_exchange(
            addr,
            b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            false,
        )
        .await;
        if a.starts_with("HTTP/1.1 200") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a freed slot is used again");
    let counters = registry.counters().await;
    let capped = counters.iter().find(|c| c.name == "capped").unwrap();
    assert!(
        capped
            .stats
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}
