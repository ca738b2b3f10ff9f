//! The HTTP proxy commands (`create --protocol http`, `maintenance`, `fault`, `requests`,
//! `--ttl`), run as the real binary against a real `downtime serve` on a free 127.0.0.1
//! port, with requests sent to the proxies over real sockets.
//!
//! Every wait is bounded: server start-up by `STARTUP`, each request by `IO_TIMEOUT`, each
//! poll by its own deadline, and each CLI run by the CLI's own request timeout. The only
//! processes killed are the servers these tests start, through their own handles.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

use crate::support::{Run, Server, cli, run};

impl Server {
    /// The fault `name` of proxy `proxy` as the API shows it.
    fn fault(&self, proxy: &str, name: &str) -> Value {
        let view = self.proxy(proxy);
        view["toxics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no fault {name} on {proxy}: {view}"))
    }

    /// Creates an HTTP stand-in on a free port and returns its address.
    fn stand_in(&self, name: &str) -> String {
        let out = self
            .run(&[
                "create",
                "--protocol",
                "http",
                "--listen",
                "127.0.0.1:0",
                name,
            ])
            .ok();
        assert!(
            out.stdout
                .starts_with(&format!("Created new http proxy {name} listening on ")),
            "{}",
            out.stdout
        );
        self.proxy(name)["listen"].as_str().unwrap().to_owned()
    }
}

/// One HTTP answer, read to the end of a `Connection: close` exchange.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `METHOD path` over a fresh connection and reads the whole answer; `None` when the
/// connection fails or no status line arrives in time.
fn request(address: &str, method: &str, path: &str) -> Option<Reply> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: cli-http-test\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).ok()?;
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut body = String::new();
    reader.read_to_string(&mut body).ok()?;
    Some(Reply {
        status,
        headers,
        body,
    })
}

fn get(address: &str, path: &str) -> Option<Reply> {
    request(address, "GET", path)
}

/// `GET` that must be answered.
fn must_get(address: &str, path: &str) -> Reply {
    get(address, path).unwrap_or_else(|| panic!("no answer from {address}{path}"))
}

/// The stand-in's default maintenance body for a proxy and the server's status page.
fn default_maintenance_body(server: &Server, proxy: &str) -> String {
    format!(
        "{{\"id\": \"maintenance\", \"message\": \"{proxy} is temporarily unavailable.\\n\
         For more information, visit: {}/status\"}}",
        server.url()
    )
}

/// A tiny upstream: answers every request with 200 and `hello from upstream`, closing the
/// connection after each answer. The thread ends with the test process.
fn upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.trim_end().is_empty() => break,
                    Ok(_) => {}
                }
            }
            let body = "hello from upstream";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    address
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        crate::support::pause(Duration::from_millis(50));
    }
}

/// A canned control API: answers each connection with the next `(status, body)` and records
/// the request line and body it got. Bounded by `IO_TIMEOUT` per connection.
struct FakeApi {
    port: u16,
    seen: std::sync::mpsc::Receiver<(String, String)>,
}

impl FakeApi {
    fn start(answers: Vec<(u16, &'static str)>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, seen) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for (status, body) in answers {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut request_body = vec![0; length];
                let _ = reader.read_exact(&mut request_body);
                let _ = tx.send((
                    request_line.trim_end().to_owned(),
                    String::from_utf8_lossy(&request_body).into_owned(),
                ));
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeApi { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next request the fake saw: request line and body.
    fn next(&self) -> (String, String) {
        self.seen.recv_timeout(IO_TIMEOUT).unwrap()
    }
}

#[test]
fn maintenance_on_puts_the_old_fault_back_when_the_replacement_is_refused() {
    const OLD: &str = r#"{"attributes":{"status":503,"api":"Old","message":"","status_page":"","headers":{},"retry_after":null},"name":"maintenance","type":"maintenance","stream":"downstream","toxicity":1}"#;
    let api = FakeApi::start(vec![
        (409, r#"{"error":"toxic already exists","status":409}"#),
        (200, OLD),
        (204, ""),
        (
            400,
            r#"{"error":"invalid value for attributes.status: nope","status":400}"#,
        ),
        (200, OLD),
    ]);
    let out = run(&api.url(), &["maintenance", "on", "api", "--status", "599"]).fails(1);
    assert_eq!(
        out.stderr,
        "downtime: turn maintenance on for proxy api: HTTP 400: invalid value for \
         attributes.status: nope\n"
    );
    let (line, body) = api.next();
    assert_eq!(line, "POST /proxies/api/toxics HTTP/1.1");
    let sent: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        sent,
        json!({"name": "maintenance", "type": "maintenance", "attributes": {"status": 599}})
    );
    assert_eq!(api.next().0, "GET /proxies/api/toxics/maintenance HTTP/1.1");
    assert_eq!(
        api.next().0,
        "DELETE /proxies/api/toxics/maintenance HTTP/1.1"
    );
    assert_eq!(api.next().0, "POST /proxies/api/toxics HTTP/1.1");
    let (line, body) = api.next();
    assert_eq!(line, "POST /proxies/api/toxics HTTP/1.1");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::from_str::<Value>(OLD).unwrap(),
        "the old fault is restored as it was"
    );
}

// --- end to end against `downtime serve` --------------------------------------------

#[test]
fn create_http_stand_in_prints_the_export_line() {
    let server = Server::start_with(&[], &["--seed", "7"]);
    let out = server
        .run(&[
            "create",
            "--protocol",
            "http",
            "-l",
            "127.0.0.1:0",
            "platform-api",
        ])
        .ok();
    let listen = server.proxy("platform-api")["listen"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        out.stdout,
        format!(
            "Created new http proxy platform-api listening on {listen}, a stand-in answering \
             from its faults (maintenance by default)\nexport PLATFORM_API_URL=http://{listen}\n"
        )
    );
    let view = server.proxy("platform-api");
    assert_eq!(view["protocol"], "http", "{view}");
    assert_eq!(view["upstream"], "", "{view}");

    // A TCP proxy is created exactly as before: no protocol field appears.
    server
        .run(&["create", "-l", "127.0.0.1:0", "-u", "127.0.0.1:9", "db"])
        .ok();
    assert!(server.proxy("db").get("protocol").is_none());

    let table = server.run(&["list"]).ok().stdout;
    let row = table
        .lines()
        .find(|l| l.starts_with("platform-api"))
        .unwrap();
    assert!(row.contains("(stand-in)"), "{table}");
    let details = server.run(&["inspect", "platform-api"]).ok().stdout;
    assert!(details.contains("Protocol:  http\n"), "{details}");
    assert!(details.contains("HTTP faults: none\n"), "{details}");
}

#[test]
fn maintenance_on_answers_503_with_the_body_and_off_restores_the_default() {
    let server = Server::start_with(&[], &["--seed", "7"]);
    let address = server.stand_in("platform-api");

    // Without faults the stand-in gives its default maintenance answer.
    let default = must_get(&address, "/apps/1");
    assert_eq!(default.status, 503);
    assert_eq!(
        default.body,
        default_maintenance_body(&server, "platform-api")
    );

    let on = server
        .run(&[
            "maintenance",
            "on",
            "platform-api",
            "--api",
            "Platform API",
            "--status-page",
            "https://status.example.test",
            "--retry-after",
            "2m",
            "--header",
            "X-Drill=yes",
        ])
        .ok();
    assert_eq!(
        on.stdout,
        "Maintenance on for proxy platform-api: 503 maintenance, Retry-After 120; every request\n"
    );
    let reply = must_get(&address, "/apps/1");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("retry-after"), Some("120"));
    assert_eq!(reply.header("x-drill"), Some("yes"));
    assert_eq!(
        reply.body,
        "{\"id\": \"maintenance\", \"message\": \"Platform API is temporarily unavailable.\\n\
         For more information, visit: https://status.example.test\"}"
    );

    // `on` again replaces the fault: nothing of the old settings survives.
    let again = server
        .run(&[
            "maintenance",
            "on",
            "platform-api",
            "--status",
            "502",
            "--message",
            "down for a drill",
        ])
        .ok();
    assert_eq!(
        again.stdout,
        "Maintenance on for proxy platform-api: 502 maintenance; every request \
         (replaced the previous maintenance fault)\n"
    );
    let reply = must_get(&address, "/");
    assert_eq!(reply.status, 502);
    assert_eq!(reply.header("retry-after"), None);
    assert_eq!(reply.header("x-drill"), None);
    assert_eq!(
        reply.body,
        "{\"id\": \"maintenance\", \"message\": \"down for a drill\"}"
    );
    let fault = server.fault("platform-api", "maintenance");
    assert_eq!(fault["type"], "maintenance");
    assert_eq!(fault["attributes"]["api"], "", "{fault}");

    let off = server.run(&["maintenance", "off", "platform-api"]).ok();
    assert_eq!(
        off.stdout,
        "Maintenance off for proxy platform-api; it has no upstream, so it still answers \
         with its default maintenance response\n"
    );
    let reply = must_get(&address, "/apps/1");
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.body,
        default_maintenance_body(&server, "platform-api")
    );

    // Off twice is fine (scripts run it in cleanup); an unknown proxy is not.
    let twice = server.run(&["maintenance", "off", "platform-api"]).ok();
    assert!(
        twice.stdout.starts_with("Maintenance was already off"),
        "{}",
        twice.stdout
    );
    let missing = server.run(&["maintenance", "off", "nope"]).fails(1);
    assert_eq!(
        missing.stderr,
        "downtime: turn maintenance off for proxy nope: HTTP 404: proxy not found\n"
    );
}

#[test]
fn maintenance_in_front_of_an_upstream_and_targeted() {
    let server = Server::start_with(&[], &["--seed", "7"]);
    let upstream = upstream();
    server
        .run(&[
            "create",
            "--protocol",
            "http",
            "-l",
            "127.0.0.1:0",
            "-u",
            &upstream,
            "billing",
        ])
        .ok();
    let address = server.proxy("billing")["listen"]
        .as_str()
        .unwrap()
        .to_owned();
    let through = must_get(&address, "/invoices");
    assert_eq!(
        (through.status, through.body.as_str()),
        (200, "hello from upstream")
    );

    server
        .run(&[
            "maintenance",
            "on",
            "billing",
            "--path",
            "/invoices/*",
            "--method",
            "post",
        ])
        .ok();
    assert_eq!(must_get(&address, "/invoices/1").status, 200);
    let posted = request(&address, "POST", "/invoices/1").unwrap();
    assert_eq!(posted.status, 503);
    assert!(
        posted.body.contains("billing is temporarily unavailable"),
        "{}",
        posted.body
    );

    let off = server.run(&["maintenance", "off", "billing"]).ok();
    assert_eq!(off.stdout, "Maintenance off for proxy billing\n");
    assert_eq!(
        request(&address, "POST", "/invoices/1").unwrap().status,
        200
    );
}

#[test]
fn first_n_fails_two_requests_then_the_default_and_the_journal_shows_it() {
    let server = Server::start_with(&[], &["--seed", "7"]);
    let address = server.stand_in("platform-api");
    let added = server
        .run(&[
            "fault",
            "add",
            "platform-api",
            "--type",
            "status",
            "--status",
            "500",
            "--body",
            r#"{"id": "internal_error"}"#,
            "--path",
            "/apps/*",
            "--first-n",
            "2",
        ])
        .ok();
    assert_eq!(
        added.stdout,
        "Added status fault status to proxy platform-api: 500 answer with body; \
         requests matching /apps/*, first 2\n"
    );
    let fault = server.fault("platform-api", "status");
    assert_eq!(fault["first_n"], 2, "{fault}");
    assert_eq!(fault["match"], json!({"path": "/apps/*"}), "{fault}");
    assert_eq!(fault["attributes"]["body"], json!({"id": "internal_error"}));

    // Not matching: the stand-in's default answer, and the fault's count is untouched.
    assert_eq!(must_get(&address, "/account").status, 503);
    let first = must_get(&address, "/apps/1");
    assert_eq!(first.status, 500);
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.body, r#"{"id":"internal_error"}"#);
    assert_eq!(must_get(&address, "/apps/2").status, 500);
    let third = must_get(&address, "/apps/3");
    assert_eq!(third.status, 503);
    assert_eq!(
        third.body,
        default_maintenance_body(&server, "platform-api")
    );

    let table = server.run(&["requests", "platform-api"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["TIME", "(UTC)", "METHOD", "PATH", "STATUS", "FAULT", "MS"],
        "{table}"
    );
    let rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().skip(1).take(4).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["GET", "/account", "503", "-"],
            ["GET", "/apps/1", "500", "status"],
            ["GET", "/apps/2", "500", "status"],
            ["GET", "/apps/3", "503", "-"],
        ],
        "{table}"
    );
    // Columns line up: every row has its status at the header's STATUS offset.
    let column = lines[0].find("STATUS").unwrap();
    for line in &lines[1..] {
        assert!(line[column..].starts_with('5'), "{table}");
    }

    let raw = server
        .run(&["requests", "platform-api", "--limit", "2", "--json"])
        .ok()
        .json();
    let raw = raw.as_array().unwrap();
    assert_eq!(raw.len(), 2, "{raw:?}");
    assert_eq!(raw[0]["path"], "/apps/2");
    assert_eq!(raw[1]["path"], "/apps/3");
    assert_eq!(raw[1]["fault"], Value::Null);

    let list = server.run(&["fault", "list", "platform-api"]).ok().stdout;
    assert!(list.starts_with("NAME "), "{list}");
    let row = list.lines().find(|l| l.starts_with("status ")).unwrap();
    assert!(row.contains("500 answer with body"), "{list}");
    assert!(row.contains("/apps/*"), "{list}");
    assert!(row.ends_with("first 2"), "{list}");

    let removed = server
        .run(&["fault", "remove", "platform-api", "status"])
        .ok();
    assert_eq!(
        removed.stdout,
        "Removed fault status from proxy platform-api\n"
    );
    let again = server
        .run(&["fault", "rm", "platform-api", "status"])
        .fails(1);
    assert_eq!(
        again.stderr,
        "downtime: remove fault status from proxy platform-api: HTTP 404: toxic not found\n"
    );
    let empty = server.run(&["f", "ls", "platform-api"]).ok().stdout;
    assert!(
        empty.starts_with("no HTTP faults on proxy platform-api"),
        "{empty}"
    );
}

#[test]
fn every_fault_type_reaches_the_api_with_its_flags() {
    let server = Server::start_with(&[], &["--seed", "7"]);
    let address = server.stand_in("api");
    let add = |args: &[&str]| {
        let mut all = vec!["fault", "add", "api"];
        all.extend_from_slice(args);
        server.run(&all).ok()
    };
    add(&[
        "-t",
        "http_latency",
        "--latency",
        "300ms",
        "--jitter",
        "0",
        "--distribution",
        "uniform",
        "--path",
        "/slow",
    ]);
    add(&["-t", "abort", "--mode", "empty-reply", "--path", "/cut"]);
    add(&[
        "-t",
        "rate-limit",
        "--limit",
        "2",
        "--period",
        "1m",
        "--burst",
        "2",
        "--key-header",
        "X-Api-Key",
        "--path",
        "/limited",
    ]);
    add(&[
        "-t",
        "router_timeout",
        "--timeout",
        "2m",
        "--idle",
        "55s",
        "--method",
        "DELETE",
    ]);
    add(&[
        "-t",
        "slow_body",
        "--rate",
        "64KB/s",
        "--query",
        "page=*",
        "--match-header",
        "X-Slow=yes",
    ]);
    add(&[
        "-t",
        "status",
        "-n",
        "teapot",
        "--status",
        "418",
        "--body",
        "short and stout",
        "--header",
        "X-Kind=teapot",
        "--every-nth",
        "3",
        "--toxicity",
        "1",
        "--path",
        "/tea",
    ]);

    let latency = server.fault("api", "http_latency");
    assert_eq!(
        latency["attributes"],
        json!({"latency": 300, "jitter": 0, "distribution": "uniform"})
    );
    assert_eq!(
        server.fault("api", "abort")["attributes"]["mode"],
        "empty_reply"
    );
    assert_eq!(
        server.fault("api", "rate_limit")["attributes"],
        json!({"limit": 2, "period_ms": 60000, "burst": 2, "key_header": "X-Api-Key"})
    );
    let router = server.fault("api", "router_timeout");
    assert_eq!(router["attributes"], json!({"timeout": 120, "idle": 55}));
    assert_eq!(router["match"], json!({"method": ["DELETE"]}));
    let slow = server.fault("api", "slow_body");
    assert_eq!(slow["attributes"], json!({"rate": 64}));
    assert_eq!(
        slow["match"],
        json!({"headers": {"X-Slow": "yes"}, "query": {"page": "*"}})
    );
    let teapot = server.fault("api", "teapot");
    assert_eq!(teapot["every_nth"], 3);
    assert_eq!(teapot["attributes"]["headers"], json!({"X-Kind": "teapot"}));

    // The faults act on real requests.
    let started = Instant::now();
    assert_eq!(must_get(&address, "/slow").status, 503);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(get(&address, "/cut").is_none_or(|r| r.status == 0));
    assert_eq!(must_get(&address, "/limited").status, 503);
    assert_eq!(must_get(&address, "/limited").status, 503);
    let limited = must_get(&address, "/limited");
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some(), "{limited:?}");
    let tea: Vec<u16> = (0..3).map(|_| must_get(&address, "/tea").status).collect();
    assert_eq!(tea, [503, 503, 418]);

    let list = server.run(&["fault", "list", "api"]).ok().stdout;
    for expected in [
        "delay 300ms",
        "abort: empty_reply",
        "2 per 1m, burst 2, per X-Api-Key",
        "H12 after 2m, H15 after 55s idle",
        "body at 64 KB/s",
        "418 answer with body",
        "every 3rd",
        "header X-Slow=yes query page=*",
    ] {
        assert!(list.contains(expected), "{expected:?} missing from\n{list}");
    }
    let journal = server.run(&["requests", "api"]).ok().stdout;
    assert!(
        journal
            .lines()
            .any(|l| l.contains(" 429 ") && l.contains("rate_limit")),
        "{journal}"
    );
}

#[test]
fn ttl_removes_faults_and_toxics_by_themselves() {
    let server = Server::start_with(&[], &["--seed", "7"]);
    let address = server.stand_in("api");
    let added = server
        .run(&[
            "fault", "add", "api", "-t", "status", "--status", "500", "--ttl", "300ms",
        ])
        .ok();
    assert!(
        added.stdout.ends_with("every request, ttl 300ms\n"),
        "{}",
        added.stdout
    );
    assert_eq!(server.fault("api", "status")["ttl"], 300);
    assert!(
        eventually(Duration::from_secs(10), || server.proxy("api")["toxics"]
            .as_array()
            .unwrap()
            .is_empty()),
        "the fault outlived its ttl"
    );
    assert_eq!(must_get(&address, "/").status, 503);

    server
        .run(&["create", "-l", "127.0.0.1:0", "-u", "127.0.0.1:9", "db"])
        .ok();
    let added = server
        .run(&[
            "toxic",
            "add",
            "db",
            "-t",
            "latency",
            "-a",
            "latency=5",
            "--ttl",
            "1m",
        ])
        .ok();
    assert_eq!(
        added.stdout,
        "Added downstream latency toxic latency_downstream to proxy db; it removes itself \
         after 1m\n"
    );
    assert_eq!(server.fault("db", "latency_downstream")["ttl"], 60_000);
    let updated = server
        .run(&[
            "toxic",
            "update",
            "db",
            "-n",
            "latency_downstream",
            "--ttl",
            "200ms",
        ])
        .ok();
    assert!(
        updated.stdout.ends_with(", ttl 200ms\n"),
        "{}",
        updated.stdout
    );
    assert!(
        eventually(Duration::from_secs(10), || server.proxy("db")["toxics"]
            .as_array()
            .unwrap()
            .is_empty()),
        "the toxic outlived its ttl"
    );
}

#[test]
fn server_refusals_are_reported_with_status_and_message() {
    let server = Server::start_with(&[], &["--seed", "7"]);
    server.stand_in("api");
    server
        .run(&["create", "-l", "127.0.0.1:0", "-u", "127.0.0.1:9", "db"])
        .ok();

    let tcp = server.run(&["maintenance", "on", "db"]).fails(1);
    assert!(
        tcp.stderr
            .starts_with("downtime: turn maintenance on for proxy db: HTTP 400: "),
        "{}",
        tcp.stderr
    );
    assert!(tcp.stderr.contains("http"), "{}", tcp.stderr);

    server.run(&["fault", "add", "api", "-t", "abort"]).ok();
    let twice = server.run(&["fault", "add", "api", "-t", "abort"]).fails(1);
    assert_eq!(
        twice.stderr,
        "downtime: add abort fault to proxy api: HTTP 409: toxic already exists; the proxy \
         has a fault named abort already, so give this one another name with --fault-name\n"
    );
    server
        .run(&[
            "fault",
            "add",
            "api",
            "-t",
            "abort",
            "--fault-name",
            "abort-2",
        ])
        .ok();

    let missing = server
        .run(&["fault", "add", "nope", "-t", "status"])
        .fails(1);
    assert_eq!(
        missing.stderr,
        "downtime: add status fault to proxy nope: HTTP 404: proxy not found\n"
    );
    let journal = server.run(&["requests", "nope"]).fails(1);
    assert_eq!(
        journal.stderr,
        "downtime: read the request journal of proxy nope: HTTP 404: proxy not found\n"
    );
    // Issue 14: a TCP proxy has no journal; saying so is an error (exit 1), not a result.
    let tcp_journal = server.run(&["requests", "db"]).fails(1);
    assert_eq!(
        tcp_journal.stderr,
        "downtime: read the request journal of proxy db: proxy db is a tcp proxy: only HTTP \
         proxies (create --protocol http) record requests\n"
    );
    assert_eq!(tcp_journal.stdout, "");
    let empty = server.run(&["req", "api"]).ok();
    assert_eq!(empty.stdout, "no requests recorded on proxy api yet\n");
}

#[test]
fn bad_flag_values_exit_2_naming_the_flag_and_the_value() {
    // Nothing listens on port 1: a usage error must stop the command before any request.
    let host = "127.0.0.1:1";
    for (args, flag, value) in [
        (
            &[
                "fault",
                "add",
                "api",
                "-t",
                "http_latency",
                "--latency",
                "5x",
            ][..],
            "--latency",
            "5x",
        ),
        (
            &[
                "fault",
                "add",
                "api",
                "-t",
                "http_latency",
                "--jitter",
                "50",
            ],
            "--jitter",
            "50",
        ),
        (
            &["fault", "add", "api", "-t", "status", "--ttl", "30"],
            "--ttl",
            "30",
        ),
        (
            &["fault", "add", "api", "-t", "status", "--ttl", "0s"],
            "--ttl",
            "0s",
        ),
        (
            &[
                "fault",
                "add",
                "api",
                "-t",
                "status",
                "--ttl",
                "99999999999999999999h",
            ],
            "--ttl",
            "99999999999999999999h",
        ),
        (
            &["fault", "add", "api", "-t", "status", "--status", "700"],
            "--status",
            "700",
        ),
        (
            &["fault", "add", "api", "-t", "status", "--first-n", "0"],
            "--first-n",
            "0",
        ),
        (
            &["fault", "add", "api", "-t", "status", "--every-nth", "x"],
            "--every-nth",
            "x",
        ),
        (
            &["fault", "add", "api", "-t", "status", "--toxicity", "1.5"],
            "--toxicity",
            "1.5",
        ),
        (
            &["fault", "add", "api", "-t", "status", "--path", "apps/*"],
            "--path",
            "apps/*",
        ),
        (
            &["fault", "add", "api", "-t", "status", "--header", "a b=c"],
            "--header",
            "a b=c",
        ),
        (
            &["fault", "add", "api", "-t", "status", "--query", "page"],
            "--query",
            "page",
        ),
        (
            &["fault", "add", "api", "-t", "status", "--method", "G T"],
            "--method",
            "G T",
        ),
        (
            &["fault", "add", "api", "-t", "rate_limit", "--limit", "0"],
            "--limit",
            "0",
        ),
        (
            &[
                "fault",
                "add",
                "api",
                "-t",
                "rate_limit",
                "--limit",
                "1",
                "--period",
                "0ms",
            ],
            "--period",
            "0ms",
        ),
        (
            &[
                "fault",
                "add",
                "api",
                "-t",
                "router_timeout",
                "--timeout",
                "1500ms",
            ],
            "--timeout",
            "1500ms",
        ),
        (
            &["fault", "add", "api", "-t", "slow_body", "--rate", "0"],
            "--rate",
            "0",
        ),
        (
            &["fault", "add", "api", "-t", "abort", "--mode", "explode"],
            "--mode",
            "explode",
        ),
        (
            &["fault", "add", "api", "-t", "teleport"],
            "--type",
            "teleport",
        ),
        (
            &["maintenance", "on", "api", "--retry-after", "1.5s"],
            "--retry-after",
            "1.5s",
        ),
        (
            &["maintenance", "on", "api", "--status", "99"],
            "--status",
            "99",
        ),
        (&["requests", "api", "--limit", "0"], "--limit", "0"),
        (&["requests", "api", "--limit", "5000"], "--limit", "5000"),
        (
            &["toxic", "add", "db", "-t", "latency", "--ttl", "2x"],
            "--ttl",
            "2x",
        ),
        (
            &["create", "--protocol", "ftp", "-l", "127.0.0.1:0", "x"],
            "--protocol",
            "ftp",
        ),
    ] {
        let out = run(host, args).fails(2);
        assert!(
            out.stderr.contains(&format!("'{value}'")) && out.stderr.contains(flag),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("could not reach"),
            "{args:?}: {}",
            out.stderr
        );
    }

    // A flag that belongs to another fault type is refused, not silently dropped.
    let out = run(
        host,
        &["fault", "add", "api", "-t", "status", "--latency", "5ms"],
    )
    .fails(2);
    assert_eq!(
        out.stderr,
        "downtime: --latency does not apply to --type status; it is for http_latency\n"
    );

    // Required per type, and for TCP proxies.
    for (args, flag) in [
        (&["fault", "add", "api", "-t", "rate_limit"][..], "--limit"),
        (&["fault", "add", "api", "-t", "slow_body"], "--rate"),
        (&["create", "-l", "127.0.0.1:0", "db"], "--upstream"),
        (
            &["create", "--protocol", "tcp", "-l", "127.0.0.1:0", "db"],
            "--upstream",
        ),
        (&["maintenance", "on"], "<PROXY>"),
        (&["fault", "remove", "api"], "<FAULT>"),
    ] {
        let out = run(host, args).fails(2);
        assert!(out.stderr.contains(flag), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn help_lists_the_http_commands() {
    let out = Run::from(cli().arg("--help").output().unwrap()).ok();
    for command in ["maintenance", "fault", "requests"] {
        assert!(out.stdout.contains(command), "{}", out.stdout);
    }
    let add = Run::from(cli().args(["fault", "add", "--help"]).output().unwrap()).ok();
    for flag in [
        "--first-n",
        "--every-nth",
        "--ttl",
        "--latency",
        "--key-header",
        "--idle",
    ] {
        assert!(add.stdout.contains(flag), "{flag}: {}", add.stdout);
    }
}
