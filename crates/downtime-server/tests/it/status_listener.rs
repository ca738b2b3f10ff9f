//! The status page's own listener (`ServeOptions::status_listener`): it answers the
//! read-only status routes to browsers and nothing else, the API listener keeps serving
//! everything it did, the maintenance link points at it, and shutdown closes it.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{LONG, Resp, Server};
use downtime_server::ServeOptions;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)";

/// A server whose status listener is bound to `127.0.0.1:0`; returns it with that address.
fn start(status_page: Option<&str>) -> (Server, SocketAddr) {
    let status = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = status.local_addr().unwrap();
    let server = Server::start_with(ServeOptions {
        grace: Duration::from_secs(2),
        status_page: status_page.map(str::to_owned),
        status_listener: Some(status),
        ..ServeOptions::default()
    });
    (server, addr)
}

/// One request to `http://{addr}{path}`, as a browser when `user_agent` is given.
async fn fetch(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<&str>,
    user_agent: Option<&str>,
) -> Resp {
    let client = reqwest::Client::builder().timeout(LONG).build().unwrap();
    let mut req = client.request(method.clone(), format!("http://{addr}{path}"));
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    if let Some(ua) = user_agent {
        req = req.header(reqwest::header::USER_AGENT, ua);
    }
    let started = std::time::Instant::now();
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    Resp {
        status,
        headers,
        body,
        elapsed: started.elapsed(),
    }
}

/// The address in `http://ADDR` (the test server's API base).
fn addr_of(base: &str) -> SocketAddr {
    base.strip_prefix("http://").unwrap().parse().unwrap()
}

/// Creates an HTTP stand-in proxy named `platform` with a default `maintenance` fault and
/// returns what it answers to an app.
async fn maintenance_answer(server: &Server) -> String {
    let body =
        json!({"name": "platform", "listen": "127.0.0.1:0", "upstream": "", "protocol": "http"});
    let r = server.post("/proxies", &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let listen = r.json()["listen"].as_str().unwrap().to_owned();
    let r = server
        .post(
            "/proxies/platform/toxics",
            &json!({"type": "maintenance"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    reqwest::get(format!("http://{listen}/anything"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn status_listener_serves_the_page_to_browsers() {
    let (_server, status) = start(None);
    let page = fetch(status, Method::GET, "/status", None, Some(BROWSER)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.header("content-type")
            .is_some_and(|ct| ct.starts_with("text/html")),
        "{:?}",
        page.headers
    );
    assert!(page.body.contains("</html>"), "{}", page.body);
    for path in [
        "/status/assets/status.css",
        "/status/assets/status.js",
        "/status/feed.atom",
        "/api/v2/status.json",
        "/api/v2/components.json",
        "/api/v2/incidents.json",
    ] {
        let r = fetch(status, Method::GET, path, None, Some(BROWSER)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let summary = fetch(status, Method::GET, "/api/v2/summary.json", None, None).await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert_eq!(
        summary.json()["page"]["url"],
        format!("http://{status}/status"),
        "links in the JSON name the status listener"
    );
}

#[tokio::test]
async fn status_listener_has_no_control_routes() {
    let (server, status) = start(None);
    let proxy = json!({"name": "db", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"});
    let incident = json!({
        "title": "t", "status": "investigating", "impact": "minor",
        "components": ["db"], "body": "looking into it",
    });
    let hook = json!({"url": "http://127.0.0.1:1/hook", "secret": "s"});
    let cases: [(Method, &str, Option<String>); 15] = [
        (Method::GET, "/proxies", None),
        (Method::POST, "/proxies", Some(proxy.to_string())),
        (Method::GET, "/webhooks", None),
        (Method::POST, "/webhooks", Some(hook.to_string())),
        (Method::GET, "/incidents", None),
        (Method::POST, "/incidents", Some(incident.to_string())),
        (Method::GET, "/proxies/db", None),
        (Method::POST, "/proxies/db/toxics", Some("{}".to_owned())),
        (Method::POST, "/reset", None),
        (Method::GET, "/halt", None),
        (Method::POST, "/halt", Some("{}".to_owned())),
        (Method::POST, "/populate", Some("[]".to_owned())),
        (Method::GET, "/version", None),
        (Method::GET, "/metrics", None),
        (Method::GET, "/drills/runs", None),
    ];
    for (method, path, body) in cases {
        for ua in [None, Some(BROWSER)] {
            let r = fetch(status, method.clone(), path, body.as_deref(), ua).await;
            assert_eq!(
                r.status, 404,
                "{method} {path} (user agent {ua:?}): {}",
                r.body
            );
        }
    }
    // Nothing sent to the status listener reached the control plane.
    assert_eq!(server.get("/proxies").await.json(), json!({}));
    assert_eq!(server.get("/incidents").await.json(), json!([]));
    assert_eq!(server.get("/webhooks").await.json(), json!([]));
}

#[tokio::test]
async fn api_listener_still_serves_everything() {
    let (server, _status) = start(None);
    assert_eq!(server.get("/version").await.status, 200);
    assert_eq!(server.get("/proxies").await.status, 200);
    let proxy = json!({"name": "db", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"});
    let r = server.post("/proxies", &proxy.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let incident = json!({
        "title": "t", "status": "investigating", "impact": "minor",
        "components": ["db"], "body": "looking into it",
    });
    let r = server.post("/incidents", &incident.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(server.get("/incidents").await.status, 200);
    assert_eq!(server.get("/webhooks").await.status, 200);
    assert_eq!(server.get("/drills/runs").await.status, 200);
    // The status routes stay on the API listener, for browsers too.
    let page = server
        .request_with(Method::GET, "/status", None, Some(BROWSER))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("data-component-id=\"proxy:db\""));
    assert_eq!(server.get("/api/v2/summary.json").await.status, 200);
    // And the control routes still refuse browsers there.
    let r = server
        .request_with(Method::GET, "/proxies", None, Some(BROWSER))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
}

#[tokio::test]
async fn maintenance_links_to_the_status_listener() {
    let (server, status) = start(None);
    let answer = maintenance_answer(&server).await;
    let link = format!("http://{status}/status");
    assert!(answer.contains(&link), "{answer}");
    assert!(
        !answer.contains(&format!("{}/status", server.base)),
        "the link must not name the API listener: {answer}"
    );
    assert_ne!(addr_of(&server.base), status);
    let page = fetch(status, Method::GET, "/status", None, Some(BROWSER)).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("data-component-id=\"proxy:platform\" data-state=\"maintenance\""),
        "the page behind the link must show the maintenance"
    );
}

#[tokio::test]
async fn an_explicit_status_page_url_wins_over_the_listener() {
    let url = "https://status.example.com/status";
    let (server, status) = start(Some(url));
    let answer = maintenance_answer(&server).await;
    assert!(answer.contains(url), "{answer}");
    assert!(!answer.contains(&status.to_string()), "{answer}");
    let summary = fetch(status, Method::GET, "/api/v2/summary.json", None, None).await;
    assert_eq!(summary.json()["page"]["url"], Value::from(url));
}

#[tokio::test]
async fn shutdown_stops_the_status_listener_and_its_event_streams() {
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let status = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let status_addr = status.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // A grace period far longer than the bound below: the drain must not wait it out.
    let options = ServeOptions {
        grace: Duration::from_secs(60),
        status_listener: Some(status),
        ..ServeOptions::default()
    };
    let server = tokio::spawn(downtime_server::run(api, options, async move {
        let _ = stopped.await;
    }));
    // An open page's event stream, on the status listener, held across the shutdown.
    let mut events = reqwest::Client::new()
        .get(format!("http://{status_addr}/status/events"))
        .header(reqwest::header::USER_AGENT, BROWSER)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert!(events.chunk().await.unwrap().is_some(), "first event");
    stop.send(()).unwrap();
    let ended = tokio::time::timeout(LONG, server).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "run must end cleanly and soon: {ended:?}"
    );
    let rest = tokio::time::timeout(LONG, async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the event stream must end at shutdown");
    assert!(
        tokio::net::TcpStream::connect(status_addr).await.is_err(),
        "the status listener still accepts after shutdown"
    );
}

// --- issue 10: bounded time and connections per listener -----------------------------

/// Limits with a short header timeout, for tests that wait for it.
fn quick(max_connections: usize) -> downtime_server::HttpLimits {
    downtime_server::HttpLimits {
        header_read_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        max_connections,
    }
}

/// Enough open files for `n` client connections and the server's side of them.
fn room_for(n: u64) {
    let _ = rlimit::increase_nofile_limit(2 * n + 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_on_the_status_listener_leaves_the_api_answering() {
    const IDLE: usize = 1_000;
    const CAP: usize = 200;
    room_for(IDLE as u64);
    let status = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let status_addr = status.local_addr().unwrap();
    let server = Server::start_with(ServeOptions {
        grace: Duration::from_secs(2),
        status_listener: Some(status),
        status_limits: quick(CAP),
        ..ServeOptions::default()
    });
    // A thousand connections that never send a byte, opened 50 at a time.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE / 50 {
        let batch: Vec<_> = (0..50)
            .map(|_| tokio::spawn(tokio::net::TcpStream::connect(status_addr)))
            .collect();
        for c in batch {
            idle.push(c.await.unwrap().unwrap());
        }
    }
    // The API answers at once, and so does a page view within the cap.
    let started = std::time::Instant::now();
    let r = server.get("/version").await;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "/version took {:?} during the flood",
        started.elapsed()
    );
    // Every idle connection is closed: over the cap with a 503 (or at once), the others
    // after the 1 s header timeout. Bounded at 10x the timeout.
    let mut refused = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in idle {
        tasks
            .spawn(async move { support::read_to_end(&mut stream, Duration::from_secs(10)).await });
    }
    while let Some(result) = tasks.join_next().await {
        let (bytes, end) = result.unwrap();
        assert_ne!(
            end,
            support::End::TimedOut,
            "an idle connection stayed open"
        );
        let text = String::from_utf8_lossy(&bytes);
        if text.starts_with("HTTP/1.1 503") {
            assert!(
                text.to_ascii_lowercase().contains("connection: close"),
                "{text}"
            );
            let body: Value = serde_json::from_str(support::raw_body(&text).trim()).unwrap();
            assert_eq!(body["status"], 503, "{body}");
            refused += 1;
        } else {
            // Closed by the header timeout: hyper answers nothing or a 408.
            assert!(
                text.is_empty() || text.starts_with("HTTP/1.1 408"),
                "{text}"
            );
        }
    }
    assert!(refused > 0, "no connection over the cap was answered 503");
    assert_eq!(server.get("/version").await.status, 200);
    let page = fetch(status_addr, Method::GET, "/status", None, Some(BROWSER)).await;
    assert_eq!(page.status, 200, "the status listener serves again");
}

#[tokio::test]
async fn over_the_cap_a_request_gets_a_json_503_and_connection_close() {
    let status = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let status_addr = status.local_addr().unwrap();
    let _server = Server::start_with(ServeOptions {
        grace: Duration::from_secs(2),
        status_listener: Some(status),
        status_limits: downtime_server::HttpLimits {
            max_connections: 2,
            ..downtime_server::HttpLimits::default()
        },
        ..ServeOptions::default()
    });
    let _a = support::connect(status_addr).await;
    let _b = support::connect(status_addr).await;
    // Give the server a moment to count the two before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = support::raw_http(
        status_addr,
        &support::raw_request("GET", "/api/v2/status.json", &["Host: x"]),
    )
    .await;
    assert_eq!(support::raw_status(&answer), 503, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("content-type: application/json"),
        "{answer}"
    );
    let body: Value = serde_json::from_str(support::raw_body(&answer).trim()).unwrap();
    assert_eq!(body["status"], 503);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many connections"),
        "{body}"
    );
}

#[tokio::test]
async fn idle_slow_and_kept_alive_connections_are_closed_after_the_header_timeout() {
    let server = Server::start_with(ServeOptions {
        grace: Duration::from_secs(2),
        api_limits: quick(100),
        ..ServeOptions::default()
    });
    let addr = server.addr();
    // 1 s timeouts; each close must come within 5 s.
    let bound = Duration::from_secs(5);
    let mut silent = support::connect(addr).await;
    let mut trickle = support::connect(addr).await;
    trickle
        .write_all(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut kept = support::connect(addr).await;
    kept.write_all(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut slow_body = support::connect(addr).await;
    slow_body
        .write_all(
            b"POST /proxies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"name\":",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for (what, stream) in [
        ("silent", &mut silent),
        ("trickled head", &mut trickle),
        ("kept alive", &mut kept),
        ("stalled body", &mut slow_body),
    ] {
        let (bytes, end) = support::read_to_end(stream, bound).await;
        assert_ne!(end, support::End::TimedOut, "{what} connection still open");
        let text = String::from_utf8_lossy(&bytes);
        match what {
            "kept alive" => assert!(text.starts_with("HTTP/1.1 200"), "{text}"),
            "stalled body" => assert!(
                text.is_empty() || text.starts_with("HTTP/1.1 4"),
                "a stalled body must not be served: {text}"
            ),
            _ => {}
        }
    }
    assert!(started.elapsed() < bound * 2);
    assert_eq!(
        server.get("/proxies").await.body,
        "{}",
        "the stalled create did nothing"
    );
}
