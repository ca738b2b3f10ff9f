//! The toxiproxy-cli compatible client commands, run as the real binary.
//!
//! Two kinds of tests:
//! - against a real `downtime serve` on a free 127.0.0.1 port (`Server`, killed by its own
//!   pid on drop), checking what users see end to end;
//! - against `FakeApi`, a one-shot canned HTTP responder, checking exactly what the CLI sends
//!   (User-Agent, bodies) and how it words server errors, independent of the server.
//!
//! Every wait is bounded: server start-up by `STARTUP`, the fake API by `FAKE_TIMEOUT`, and
//! each CLI run by the CLI's own request timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const FAKE_TIMEOUT: Duration = Duration::from_secs(20);

use crate::support;

use crate::support::{Run, Server, cli, free_port, run};

// --- the fake API --------------------------------------------------------------------

/// A request as the fake API saw it.
#[derive(Debug)]
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// Answers the next requests with the given `(status, body)` pairs, one per connection,
/// and reports what it received.
struct FakeApi {
    port: u16,
    seen: mpsc::Receiver<Seen>,
}

impl FakeApi {
    fn start(answers: Vec<(u16, &'static str)>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (tx, seen) = mpsc::channel();
        thread::spawn(move || {
            let deadline = Instant::now() + FAKE_TIMEOUT;
            for (status, body) in answers {
                let stream = loop {
                    match listener.accept() {
                        Ok((stream, _)) => break stream,
                        Err(_) if Instant::now() < deadline => {
                            crate::support::pause(Duration::from_millis(10));
                        }
                        Err(_) => return,
                    }
                };
                match answer(stream, status, body) {
                    Some(request) => {
                        if tx.send(request).is_err() {
                            return;
                        }
                    }
                    None => return,
                }
            }
        });
        FakeApi { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn next(&self) -> Seen {
        self.seen.recv_timeout(FAKE_TIMEOUT).unwrap()
    }
}

/// Reads one request from `stream` and writes a canned answer.
fn answer(stream: TcpStream, status: u16, body: &str) -> Option<Seen> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(FAKE_TIMEOUT)).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (key, value) = line.split_once(':')?;
        headers.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut request_body = vec![0; length];
    reader.read_exact(&mut request_body).ok()?;
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Whatever",
    };
    let mut stream = stream;
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).ok()?;
    Some(Seen {
        request_line: request_line.trim_end().to_owned(),
        headers,
        body: String::from_utf8_lossy(&request_body).into_owned(),
    })
}

const PROXY_JSON: &str = r#"{"name":"db","listen":"127.0.0.1:5555","upstream":"127.0.0.1:5432","enabled":true,"toxics":[]}"#;
const TOXIC_JSON: &str = r#"{"attributes":{"latency":1000,"jitter":0},"name":"slow","type":"latency","stream":"downstream","toxicity":0.5}"#;

// --- what the CLI sends (fake API) -----------------------------------------------------

#[test]
fn sends_a_cli_user_agent_not_a_browser_one() {
    let api = FakeApi::start(vec![(200, "{}")]);
    run(&api.url(), &["list"]).ok();
    let seen = api.next();
    assert_eq!(seen.request_line, "GET /proxies HTTP/1.1");
    let agent = seen.header("user-agent").unwrap();
    assert_eq!(agent, format!("downtime-cli/{}", env!("CARGO_PKG_VERSION")));
    assert!(!agent.starts_with("Mozilla/"));
}

#[test]
fn toxic_add_sends_numbers_stream_and_toxicity() {
    let api = FakeApi::start(vec![(200, TOXIC_JSON)]);
    let out = run(
        &api.url(),
        &[
            "toxic",
            "add",
            "-t",
            "latency",
            "-n",
            "slow",
            "--tox",
            "0.5",
            "-u",
            "-a",
            "latency=1000",
            "-a",
            "jitter=10",
            "-a",
            "label=big one",
            "db",
        ],
    )
    .ok();
    let seen = api.next();
    assert_eq!(seen.request_line, "POST /proxies/db/toxics HTTP/1.1");
    assert_eq!(
        seen.json(),
        json!({
            "name": "slow", "type": "latency", "stream": "upstream", "toxicity": 0.5,
            "attributes": {"latency": 1000, "jitter": 10, "label": "big one"}
        })
    );
    assert!(out.stdout.contains("toxic slow"), "{}", out.stdout);
}

#[test]
fn toxic_add_defaults_to_downstream_always_and_lets_the_server_name_it() {
    let api = FakeApi::start(vec![(200, TOXIC_JSON)]);
    run(&api.url(), &["t", "a", "-t", "latency", "db"]).ok();
    assert_eq!(
        api.next().json(),
        json!({"type": "latency", "stream": "downstream", "toxicity": 1.0, "attributes": {}})
    );
}

#[test]
fn toxic_update_sends_toxicity_only_when_given() {
    let api = FakeApi::start(vec![(200, TOXIC_JSON), (200, TOXIC_JSON)]);
    run(
        &api.url(),
        &["toxic", "update", "-n", "slow", "-a", "latency=5", "db"],
    )
    .ok();
    let seen = api.next();
    assert_eq!(seen.request_line, "POST /proxies/db/toxics/slow HTTP/1.1");
    assert_eq!(seen.json(), json!({"attributes": {"latency": 5}}));

    run(
        &api.url(),
        &["t", "u", "--toxicName", "slow", "--toxicity", "0", "db"],
    )
    .ok();
    assert_eq!(api.next().json(), json!({"toxicity": 0.0}));
}

#[test]
fn create_sends_an_enabled_proxy() {
    let api = FakeApi::start(vec![(201, PROXY_JSON)]);
    let out = run(
        &api.url(),
        &[
            "create",
            "-l",
            "127.0.0.1:5555",
            "-u",
            "127.0.0.1:5432",
            "db",
        ],
    )
    .ok();
    let seen = api.next();
    assert_eq!(seen.request_line, "POST /proxies HTTP/1.1");
    assert_eq!(
        seen.json(),
        json!({"name": "db", "listen": "127.0.0.1:5555", "upstream": "127.0.0.1:5432",
               "enabled": true})
    );
    assert!(
        out.stdout.starts_with("Created new proxy db"),
        "{}",
        out.stdout
    );
}

#[test]
fn proxy_names_are_percent_encoded_in_paths() {
    let api = FakeApi::start(vec![(204, "")]);
    run(&api.url(), &["delete", "a b/c"]).ok();
    assert_eq!(
        api.next().request_line,
        "DELETE /proxies/a%20b%2Fc HTTP/1.1"
    );
}

#[test]
fn api_errors_are_one_line_with_status_and_message() {
    let api = FakeApi::start(vec![(
        409,
        "{\"error\":\"proxy already exists\",\"status\":409}\n",
    )]);
    let out = run(
        &api.url(),
        &["create", "-l", "127.0.0.1:0", "-u", "127.0.0.1:1", "db"],
    )
    .fails(1);
    assert_eq!(
        out.stderr,
        "downtime: create proxy db: HTTP 409: proxy already exists\n"
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn json_flag_prints_the_raw_answer_wherever_it_is_given() {
    let api = FakeApi::start(vec![(200, TOXIC_JSON), (200, TOXIC_JSON)]);
    let before = run(
        &api.url(),
        &[
            "--json", "toxic", "update", "-n", "slow", "--tox", "0.5", "db",
        ],
    )
    .ok();
    let after = run(
        &api.url(),
        &[
            "toxic", "update", "-n", "slow", "--tox", "0.5", "db", "--json",
        ],
    )
    .ok();
    for out in [before, after] {
        assert_eq!(out.stdout, format!("{TOXIC_JSON}\n"));
    }
}

// --- usage and connection errors (no server needed) ----------------------------------

#[test]
fn unreachable_server_says_where_and_what_to_do() {
    let port = free_port();
    let out = run(&format!("127.0.0.1:{port}"), &["list"]).fails(1);
    assert!(
        out.stderr.starts_with(&format!(
            "downtime: list proxies: could not reach the server at http://127.0.0.1:{port}: "
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("downtime serve"), "{}", out.stderr);
    assert!(
        out.stderr.contains("--host/TOXIPROXY_URL"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn toxicity_outside_zero_to_one_is_a_usage_error() {
    for args in [
        &["toxic", "add", "-t", "latency", "--toxicity", "1.5", "db"][..],
        &["toxic", "add", "-t", "latency", "--tox", "-0.5", "db"],
        &["toxic", "update", "-n", "x", "--toxicity", "2", "db"],
    ] {
        let out = run("127.0.0.1:1", args).fails(2);
        let value = args[args.len() - 2];
        assert!(
            out.stderr.contains(&format!("invalid value '{value}'")),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("--toxicity"), "{}", out.stderr);
        assert!(out.stderr.contains("between 0 and 1"), "{}", out.stderr);
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["create", "-l", "127.0.0.1:0", "db"][..],
        &["toxic", "add", "db"],
        &["toxic", "add", "-t", "latency", "-u", "-d", "db"],
        &["toxic", "add", "-t", "latency", "-a", "novalue", "db"],
        &["toxic", "update", "-n", "slow", "db"],
        &["toxic", "remove", "db"],
        &["inspect"],
        &["frobnicate"],
    ] {
        run("127.0.0.1:1", args).fails(2);
    }
    let out = Run::from(cli().args(["--host", "ftp://x", "list"]).output().unwrap()).fails(2);
    assert_eq!(
        out.stderr,
        "downtime: invalid value 'ftp://x' for --host/TOXIPROXY_URL: \
         unsupported scheme 'ftp'; use http://HOST:PORT\n"
    );
    let out = Run::from(
        cli()
            .args(["list", "--host", "https://x"])
            .output()
            .unwrap(),
    )
    .fails(2);
    assert!(
        out.stderr.contains("invalid value 'https://x'"),
        "{}",
        out.stderr
    );
    let out = Run::from(
        cli()
            .env("TOXIPROXY_URL", "ftp://x")
            .arg("ls")
            .output()
            .unwrap(),
    )
    .fails(2);
    assert!(out.stderr.contains("TOXIPROXY_URL"), "{}", out.stderr);
}

#[test]
fn help_is_long_only_because_h_is_host() {
    let out = Run::from(cli().arg("--help").output().unwrap()).ok();
    assert!(out.stdout.contains("-h, --host <URL>"), "{}", out.stdout);
    assert!(out.stdout.contains("TOXIPROXY_URL"), "{}", out.stdout);
    for command in ["list", "toxic"] {
        Run::from(cli().args([command, "--help"]).output().unwrap()).ok();
    }
}

// --- end to end against `downtime serve` --------------------------------------------

#[test]
fn proxy_lifecycle_with_aliases() {
    let server = Server::start();
    let empty = server.run(&["list"]).ok();
    assert!(empty.stdout.starts_with("no proxies"), "{}", empty.stdout);
    assert_eq!(server.run(&["ls", "--json"]).ok().json(), json!({}));

    let created = server
        .run(&[
            "create",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
            "db",
        ])
        .ok();
    assert!(
        created.stdout.starts_with("Created new proxy db"),
        "{}",
        created.stdout
    );
    server
        .run(&["new", "-l", "127.0.0.1:0", "-u", "localhost:6379", "cache"])
        .ok();

    let table = server.run(&["l"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(lines[1].starts_with("cache "), "{table}");
    assert!(lines[1].contains("localhost:6379"), "{table}");
    assert!(lines[2].starts_with("db "), "{table}");
    // Columns line up: each row has the upstream at the header's UPSTREAM offset.
    let column = lines[0].find("UPSTREAM").unwrap();
    assert_eq!(lines[2].find("127.0.0.1:9").unwrap(), column, "{table}");

    let listed = server.run(&["--json", "li"]).ok().json();
    assert_eq!(listed["db"]["upstream"], "127.0.0.1:9");
    assert_eq!(listed["db"]["enabled"], true);

    let off = server.run(&["toggle", "db"]).ok();
    assert_eq!(off.stdout, "Proxy db is now disabled\n");
    assert_eq!(server.proxy("db")["enabled"], false);
    let on = server.run(&["tog", "db"]).ok();
    assert_eq!(on.stdout, "Proxy db is now enabled\n");
    assert_eq!(server.proxy("db")["enabled"], true);

    let details = server.run(&["i", "db"]).ok().stdout;
    assert!(details.contains("Name:      db\n"), "{details}");
    assert!(details.contains("Enabled:   yes\n"), "{details}");

    assert_eq!(
        server.run(&["delete", "db"]).ok().stdout,
        "Deleted proxy db\n"
    );
    server.run(&["d", "cache"]).ok();
    assert_eq!(server.run(&["ls", "--json"]).ok().json(), json!({}));
}

#[test]
fn toxic_lifecycle() {
    let server = Server::start();
    server
        .run(&["c", "-l", "127.0.0.1:0", "-u", "127.0.0.1:9", "db"])
        .ok();

    let added = server
        .run(&[
            "toxic",
            "add",
            "--type",
            "latency",
            "--toxicName",
            "slow",
            "--toxicity",
            "0.5",
            "--attribute",
            "latency=1000",
            "db",
        ])
        .ok();
    assert!(
        added.stdout.contains("downstream latency toxic slow"),
        "{}",
        added.stdout
    );
    server
        .run(&["t", "a", "-t", "timeout", "-u", "-a", "timeout=0", "db"])
        .ok();

    let proxy = server.proxy("db");
    let toxics = proxy["toxics"].as_array().unwrap();
    assert_eq!(toxics.len(), 2, "{proxy}");
    let slow = toxics.iter().find(|t| t["name"] == "slow").unwrap();
    assert_eq!(slow["attributes"]["latency"], 1000, "{proxy}");
    assert!(
        slow["attributes"]["latency"].is_u64(),
        "number, not string: {proxy}"
    );
    assert_eq!(slow["stream"], "downstream");
    assert_eq!(slow["toxicity"].as_f64(), Some(0.5));
    let timeout = toxics.iter().find(|t| t["type"] == "timeout").unwrap();
    assert_eq!(timeout["name"], "timeout_upstream", "default name: {proxy}");
    assert_eq!(timeout["stream"], "upstream");

    let details = server.run(&["inspect", "db"]).ok().stdout;
    let (up, down) = details.split_once("Downstream toxics").unwrap();
    assert!(up.contains("timeout_upstream"), "{details}");
    assert!(
        down.contains("slow") && down.contains("latency=1000"),
        "{details}"
    );

    // Updating an attribute keeps the toxicity (toxiproxy-cli would reset it to 1).
    server
        .run(&["toxic", "update", "-n", "slow", "-a", "latency=20", "db"])
        .ok();
    let slow = server.run(&["--json", "inspect", "db"]).ok().json()["toxics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "slow")
        .cloned()
        .unwrap();
    assert_eq!(slow["attributes"]["latency"], 20);
    assert_eq!(slow["toxicity"].as_f64(), Some(0.5));

    server
        .run(&["t", "u", "-n", "slow", "--tox", "1", "db"])
        .ok();
    let toxics = server.proxy("db")["toxics"].clone();
    let slow = toxics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "slow")
        .unwrap();
    assert_eq!(slow["toxicity"].as_f64(), Some(1.0));
    assert_eq!(slow["attributes"]["latency"], 20);

    let removed = server.run(&["toxic", "remove", "-n", "slow", "db"]).ok();
    assert_eq!(removed.stdout, "Removed toxic slow from proxy db\n");
    server.run(&["t", "r", "-n", "timeout_upstream", "db"]).ok();
    assert_eq!(server.proxy("db")["toxics"], json!([]));
}

#[test]
fn server_errors_are_reported_with_status_and_message() {
    let server = Server::start();
    let missing = server.run(&["inspect", "nope"]).fails(1);
    assert_eq!(
        missing.stderr,
        "downtime: inspect proxy nope: HTTP 404: proxy not found\n"
    );

    server
        .run(&["create", "-l", "127.0.0.1:0", "-u", "127.0.0.1:9", "db"])
        .ok();
    let duplicate = server
        .run(&["create", "-l", "127.0.0.1:0", "-u", "127.0.0.1:9", "db"])
        .fails(1);
    assert_eq!(
        duplicate.stderr,
        "downtime: create proxy db: HTTP 409: proxy already exists\n"
    );

    let no_toxic = server
        .run(&["toxic", "remove", "-n", "ghost", "db"])
        .fails(1);
    assert_eq!(
        no_toxic.stderr,
        "downtime: remove toxic ghost from proxy db: HTTP 404: toxic not found\n"
    );
    let bad_type = server.run(&["toxic", "add", "-t", "bogus", "db"]).fails(1);
    assert_eq!(
        bad_type.stderr,
        "downtime: add bogus toxic to proxy db: HTTP 400: invalid toxic type\n"
    );
    server
        .run(&["toxic", "add", "-t", "noop", "-n", "once", "db"])
        .ok();
    let twice = server
        .run(&["toxic", "add", "-t", "noop", "-n", "once", "-u", "db"])
        .fails(1);
    assert_eq!(
        twice.stderr,
        "downtime: add toxic once to proxy db: HTTP 409: toxic already exists\n"
    );
    let toggle_missing = server.run(&["toggle", "nope"]).fails(1);
    assert!(toggle_missing.stderr.contains("HTTP 404: proxy not found"));
}

#[test]
fn server_url_comes_from_env_or_flags_in_any_position() {
    let server = Server::start();
    let bare = format!("127.0.0.1:{}", server.port);
    let from_env = Run::from(
        cli()
            .env("TOXIPROXY_URL", &bare)
            .args(["list", "--json"])
            .output()
            .unwrap(),
    )
    .ok();
    assert_eq!(from_env.json(), json!({}));

    let short = Run::from(cli().args(["-h", &bare, "ls"]).output().unwrap()).ok();
    assert!(short.stdout.starts_with("no proxies"), "{}", short.stdout);

    // A flag after the command wins over TOXIPROXY_URL.
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let after = Run::from(
        cli()
            .env("TOXIPROXY_URL", &unreachable)
            .args(["ls", "-h", &server.url(), "--json"])
            .output()
            .unwrap(),
    )
    .ok();
    assert_eq!(after.json(), json!({}));
}

#[test]
fn a_bad_toxiproxy_url_does_not_stop_serve() {
    // TOXIPROXY_URL is for the client; the server must start whatever it says.
    let server = Server::start_with_env(&[("TOXIPROXY_URL", "ftp://not-a-server")]);
    assert_eq!(server.run(&["ls", "--json"]).ok().json(), json!({}));
}

// --- issue 10: serve off loopback, log lines, new flags --------------------------------

/// `downtime serve --host 0.0.0.0 --port 0` with info logs into a file; returns the child,
/// its port and the log path. Killed by its handle by the caller.
fn serve_on_all_interfaces(name: &str) -> (std::process::Child, u16, std::path::PathBuf) {
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{name}-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let mut child = cli()
        .env("LOG_LEVEL", "info")
        .env("NO_COLOR", "1")
        .args([
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--db",
            ":memory:",
            "--api-token",
            "s3cret",
        ])
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let port = text.lines().find_map(|l| {
            l.strip_prefix("downtime API listening on http://0.0.0.0:")
                .and_then(|p| p.trim().parse::<u16>().ok())
        });
        // The API needs the token now, so the port line (printed once it listens) is enough.
        if let Some(port) = port {
            return (child, port, log);
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not start:\n{text}");
        }
        crate::support::pause(Duration::from_millis(25));
    }
}

/// One raw request to 127.0.0.1:`port`; the whole answer.
fn raw(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn serve_off_loopback_needs_a_token() {
    let out = cli()
        .args([
            "serve", "--host", "0.0.0.0", "--port", "0", "--db", ":memory:",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--api-token"), "{err}");
}

#[test]
fn serve_off_loopback_warns_and_user_text_never_starts_a_log_line() {
    let (mut child, port, log) = serve_on_all_interfaces("off-loopback");
    let post = |path: &str, body: &str| {
        raw(
            port,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\
                 Authorization: Bearer s3cret\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let created = post(
        "/proxies",
        r#"{"name":"p","listen":"127.0.0.1:0","upstream":"127.0.0.1:9"}"#,
    );
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    // A toxic whose name holds a forged log line; its expiry is logged with the name.
    let toxic = json!({
        "type": "latency", "name": "evil\nFORGED  INFO downtime: all good", "ttl": 200,
        "attributes": {"latency": 1},
    });
    let added = post("/proxies/p/toxics", &toxic.to_string());
    assert!(added.starts_with("HTTP/1.1 200"), "{added}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("toxic expired") || Instant::now() > deadline {
            break text;
        }
        crate::support::pause(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
    assert!(text.contains("bound off loopback without TLS"), "{text}");
    assert!(!text.contains("s3cret"), "the token was logged: {text}");
    assert!(text.contains("open-files limit"), "{text}");
    assert!(text.contains("toxic expired"), "{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED")),
        "a log line was forged:\n{text}"
    );
    assert!(text.contains("evil\\nFORGED"), "{text}");
}

#[test]
fn new_serve_flags_are_checked() {
    for (flag, value) in [
        ("--max-connections", "0"),
        ("--max-connections", "many"),
        ("--webhook-allow", "10.0.0.0/99"),
        ("--webhook-allow", "not a host"),
    ] {
        let out = Run::from(
            cli()
                .args(["serve", "--port", "0", "--db", ":memory:", flag, value])
                .output()
                .unwrap(),
        )
        .fails(2);
        assert!(out.stderr.contains(flag), "{flag} {value}: {}", out.stderr);
    }
}

// --- issue 14: a first run that explains itself ---------------------------------------

/// A fresh directory under the target's temporary directory.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn serve_says_where_the_api_page_history_and_proxies_are() {
    let dir = scratch("banner");
    std::fs::write(
        dir.join("downtime.toml"),
        "# ${UNSET_IN_A_COMMENT} is fine\n\
         [[proxy]]\nname = \"platform-api\"\nprotocol = \"http\"\n\
         listen = \"127.0.0.1:${BANNER_STANDIN_PORT:-0}\"\n\
         [[proxy]]\nname = \"db\"\nlisten = \"127.0.0.1:${BANNER_DB_PORT}\"\nupstream = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let log = dir.join("serve.log");
    let mut command = cli();
    command
        .current_dir(&dir)
        .env("LOG_LEVEL", "warn")
        .env("BANNER_DB_PORT", "0");
    let (mut child, port) = support::spawn_serve(
        command,
        &["--config", "downtime.toml", "--db", "history.db"],
        &log,
    )
    .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("downtime API listening on http://127.0.0.1:{port}"),
        "{text}"
    );
    assert_eq!(
        lines[1],
        format!("status page: http://127.0.0.1:{port}/status"),
        "{text}"
    );
    let history = dir.join("history.db");
    assert_eq!(
        lines[2],
        format!(
            "history: {} (with -wal and -shm next to it; --db :memory: keeps none)",
            history.display()
        ),
        "{text}"
    );
    assert!(history.exists(), "{text}");
    let standin = lines
        .iter()
        .position(|l| l.starts_with("proxy platform-api: 127.0.0.1:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(lines[standin].contains("stand-in"), "{text}");
    let url = lines[standin + 1]
        .strip_prefix("  export PLATFORM_API_URL=http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{text}"));
    assert_ne!(url, "0", "the bound port is shown: {text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("proxy db: 127.0.0.1:") && l.ends_with(" -> 127.0.0.1:9 (tcp)")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  export DB_ADDR=127.0.0.1:")),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn start_up_failures_are_reported_before_anything_says_listening() {
    let dir = scratch("failures");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    std::fs::write(
        dir.join("taken.toml"),
        format!(
            "[[proxy]]\nname = \"free\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:9\"\n\
             [[proxy]]\nname = \"payments\"\nlisten = \"127.0.0.1:{port}\"\nupstream = \"127.0.0.1:9\"\n"
        ),
    )
    .unwrap();
    let serve = |args: &[&str]| {
        Run::from(
            cli()
                .current_dir(&dir)
                .env("LOG_LEVEL", "warn")
                .args(["serve", "--port", "0"])
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let out = serve(&["--db", ":memory:", "--config", "taken.toml"]).fails(1);
    assert!(!out.stdout.contains("listening"), "{}", out.stdout);
    assert!(
        out.stderr.contains("proxy \"payments\"") && out.stderr.contains("address already in use"),
        "{}",
        out.stderr
    );
    let out = serve(&["--db", "no-such-dir/history.db"]).fails(1);
    assert!(!out.stdout.contains("listening"), "{}", out.stdout);
    assert!(
        out.stderr.contains("no-such-dir/history.db"),
        "{}",
        out.stderr
    );
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_check_validates_a_config_without_starting() {
    let dir = scratch("check");
    // The API port is taken: a check never binds it.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let api_port = taken.local_addr().unwrap().port().to_string();
    std::fs::write(
        dir.join("ok.toml"),
        "[[proxy]]\nname = \"api\"\nprotocol = \"http\"\nlisten = \"127.0.0.1:${CHECK_PORT:-5080}\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("unset.toml"),
        "[[proxy]]\nname = \"api\"\nprotocol = \"http\"\n\nlisten = \"127.0.0.1:${CHECK_UNSET_PORT}\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        "[[proxy]]\nname = \"api\"\nupstream = \"x:1\"\nlisen = \"oops\"\n",
    )
    .unwrap();
    let check = |file: &str| {
        Run::from(
            cli()
                .current_dir(&dir)
                .env("CHECK_PORT", "6123")
                .env_remove("CHECK_UNSET_PORT")
                .args([
                    "serve", "--port", &api_port, "--db", "never.db", "--check", "--config", file,
                ])
                .output()
                .unwrap(),
        )
    };
    let out = check("ok.toml").ok();
    assert!(
        out.stdout.starts_with("config ok.toml: valid: 1 proxy"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("127.0.0.1:6123"), "{}", out.stdout);
    assert!(
        !dir.join("never.db").exists(),
        "a check opens no history file"
    );
    let out = check("unset.toml").fails(2);
    assert!(
        out.stderr.contains("line 5") && out.stderr.contains("CHECK_UNSET_PORT"),
        "{}",
        out.stderr
    );
    let out = check("bad.toml").fails(2);
    assert!(out.stderr.contains("lisen"), "{}", out.stderr);
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reset_populate_webhooks_history_and_uptime_from_the_cli() {
    let server = Server::start();
    let dir = scratch("populate");
    std::fs::write(
        dir.join("proxies.toml"),
        "[[proxy]]\nname = \"cache\"\nlisten = \"127.0.0.1:${POPULATE_PORT:-0}\"\nupstream = \"127.0.0.1:9\"\n\
         [[proxy.toxics]]\ntype = \"latency\"\nattributes = { latency = 5 }\n\
         [[proxy]]\nname = \"api\"\nprotocol = \"http\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let file = dir.join("proxies.toml");
    let populated = server.run(&["populate", file.to_str().unwrap()]).ok();
    assert!(
        populated.stdout.starts_with("Populated 2 proxies\n"),
        "{}",
        populated.stdout
    );
    assert!(
        populated.stdout.contains("api on 127.0.0.1:"),
        "{}",
        populated.stdout
    );
    assert_eq!(server.proxy("cache")["toxics"][0]["type"], "latency");
    assert_eq!(server.proxy("api")["protocol"], "http");

    // `list` shows the protocol, in a last column.
    let table = server.run(&["list"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].ends_with("PROTOCOL"), "{table}");
    assert!(
        lines[1].starts_with("api ") && lines[1].ends_with("http"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("cache ") && lines[2].ends_with("tcp"),
        "{table}"
    );

    server.run(&["toggle", "cache"]).ok();
    let reset = server.run(&["reset"]).ok();
    assert!(reset.stdout.starts_with("Reset"), "{}", reset.stdout);
    let cache = server.proxy("cache");
    assert_eq!(cache["enabled"], true);
    assert_eq!(cache["toxics"], json!([]));

    let receiver = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", receiver.local_addr().unwrap());
    let added = server
        .run(&[
            "webhook",
            "add",
            &url,
            "--secret",
            "s3cret",
            "--event",
            "incident.created",
        ])
        .ok();
    let id = added
        .stdout
        .strip_prefix("Added webhook ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{}", added.stdout))
        .to_owned();
    let listed = server.run(&["webhook", "list"]).ok().stdout;
    assert!(
        listed.contains(&id) && listed.contains(&url) && listed.contains("incident.created"),
        "{listed}"
    );
    let deliveries = server.run(&["webhook", "deliveries", &id]).ok().stdout;
    assert!(deliveries.starts_with("no deliveries yet"), "{deliveries}");
    server.run(&["webhook", "remove", &id]).ok();
    let gone = server.run(&["webhook", "deliveries", &id]).fails(1);
    assert!(gone.stderr.contains("404"), "{}", gone.stderr);
    assert_eq!(
        server.run(&["webhook", "list", "--json"]).ok().json(),
        json!([])
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let history = loop {
        let history = server.run(&["history", "--proxy", "cache"]).ok().stdout;
        if history.contains("proxy_populated") || Instant::now() > deadline {
            break history;
        }
        crate::support::pause(Duration::from_millis(100));
    };
    assert!(history.starts_with("AT "), "{history}");
    assert!(history.contains("proxy_populated"), "{history}");
    let components = server.run(&["uptime"]).ok().stdout;
    assert!(components.contains("proxy:cache"), "{components}");
    let days = server
        .run(&["uptime", "proxy:cache", "--days", "2"])
        .ok()
        .stdout;
    assert!(days.starts_with("proxy:cache\nDAY "), "{days}");
    assert_eq!(days.lines().count(), 4, "{days}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn drill_runs_takes_the_host_like_every_client_command() {
    let server = Server::start();
    // Given before the command, as toxiproxy-cli wants it.
    let before = run(&server.url(), &["drill", "runs"]).ok();
    // And after it, as -h.
    let after = Run::from(
        cli()
            .args(["drill", "runs", "-h", &server.url()])
            .output()
            .unwrap(),
    )
    .ok();
    assert_eq!(before.stdout, after.stdout);
    // A server that is not there is reported as such, not the default one asked instead.
    let port = free_port();
    let nowhere = run(&format!("127.0.0.1:{port}"), &["drill", "runs"]).fails(1);
    assert!(
        nowhere.stderr.contains(&port.to_string()),
        "{}",
        nowhere.stderr
    );
}

#[test]
fn drill_files_take_variables_and_name_a_missing_one_with_its_line() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/drills/maintenance.toml"
    );
    let checked = Run::from(
        cli()
            .env("APP_PORT", "6543")
            .env_remove("DRILL_PROXY_PORT")
            .args(["drill", "check", example])
            .output()
            .unwrap(),
    )
    .ok();
    assert!(checked.stdout.contains("valid"), "{}", checked.stdout);
    assert!(
        checked.stdout.contains("127.0.0.1:6543"),
        "{}",
        checked.stdout
    );
    let dir = scratch("drill-vars");
    let file = dir.join("unset.toml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("${APP_PORT:-5000}", "${DRILL_TEST_UNSET_APP_PORT}");
    let line = text
        .lines()
        .position(|l| l.contains("DRILL_TEST_UNSET_APP_PORT"))
        .unwrap()
        + 1;
    std::fs::write(&file, text).unwrap();
    let refused = Run::from(
        cli()
            .env_remove("DRILL_TEST_UNSET_APP_PORT")
            .args(["drill", "check", file.to_str().unwrap()])
            .output()
            .unwrap(),
    )
    .fails(2);
    assert!(
        refused.stderr.contains(&format!(
            "line {line}: environment variable DRILL_TEST_UNSET_APP_PORT is not set"
        )),
        "{}",
        refused.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn example_configs_check_and_take_their_ports_from_the_environment() {
    for file in ["downtime.toml", "standin.toml"] {
        let path = format!("{}/../../examples/{file}", env!("CARGO_MANIFEST_DIR"));
        let out = Run::from(
            cli()
                .env("PLATFORM_API_PORT", "7080")
                .env("REDIS_PROXY_PORT", "7379")
                .args(["serve", "--check", "--config", &path])
                .output()
                .unwrap(),
        )
        .ok();
        assert!(out.stdout.contains(": valid: "), "{}", out.stdout);
        assert!(
            out.stdout.contains("127.0.0.1:7080") || out.stdout.contains("127.0.0.1:7379"),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn ca_is_created_once_and_says_how_to_trust_it() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_text = dir.to_string_lossy().into_owned();
    let first = cli().args(["ca", "--ca-dir", &dir_text]).output().unwrap();
    let first = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(first.contains("was created in"), "{first}");
    for var in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "CURL_CA_BUNDLE",
        "keytool",
    ] {
        assert!(first.contains(var), "{var} missing:\n{first}");
    }
    let again = cli().args(["ca", "--ca-dir", &dir_text]).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains(" is in "));
    let pem = cli()
        .args(["ca", "--pem"])
        .env("DOWNTIME_CA_DIR", &dir)
        .output()
        .unwrap();
    let pem = String::from_utf8_lossy(&pem.stdout).into_owned();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert_eq!(
        pem,
        std::fs::read_to_string(dir.join("downtime-ca.pem")).unwrap()
    );
    // A directory that cannot be made: exit 2 naming it.
    let bad = cli()
        .args(["ca", "--ca-dir", "/proc/downtime-ca"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/proc/downtime-ca"));
}

#[test]
fn create_makes_https_stand_ins_and_forward_proxies_with_their_export_lines() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-serve-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_text = dir.to_string_lossy().into_owned();
    let s = Server::start_with(&[], &["--ca-dir", &dir_text]);
    let out = s
        .run(&["create", "--tls", "-l", "127.0.0.1:0", "payments"])
        .ok();
    assert!(
        out.stdout
            .contains("export PAYMENTS_URL=https://127.0.0.1:"),
        "{}",
        out.stdout
    );
    let view = s.proxy("payments");
    assert_eq!(view["protocol"], "http");
    assert!(
        view["tls"]["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "localhost")
    );
    let out = s
        .run(&[
            "create",
            "--forward",
            "--intercept",
            "*.stripe.com",
            "-l",
            "127.0.0.1:0",
            "egress",
        ])
        .ok();
    assert!(
        out.stdout.contains("export HTTPS_PROXY=http://127.0.0.1:"),
        "{}",
        out.stdout
    );
    let view = s.proxy("egress");
    assert_eq!(view["mode"], "forward");
    assert_eq!(view["intercept"], serde_json::json!(["*.stripe.com"]));
    // The https stand-in answers with a certificate from the server's CA.
    let listen = s.proxy("payments")["listen"].as_str().unwrap().to_owned();
    let port = listen.rsplit(':').next().unwrap();
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(dir.join("downtime-ca.pem"))
        .arg(format!("https://localhost:{port}/"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&curl.stdout).contains("maintenance"),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
}

#[test]
fn fault_add_takes_tls_faults_and_a_host_to_match() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-tls-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_text = dir.to_string_lossy().into_owned();
    let s = Server::start_with(&[], &["--ca-dir", &dir_text]);
    s.run(&["create", "--tls", "-l", "127.0.0.1:0", "auth"])
        .ok();
    let out = s
        .run(&[
            "fault",
            "add",
            "auth",
            "--type",
            "tls_alert",
            "--alert",
            "unknown_ca",
        ])
        .ok();
    assert!(out.stdout.contains("alert=unknown_ca"), "{}", out.stdout);
    let listen = s.proxy("auth")["listen"].as_str().unwrap().to_owned();
    let port = listen.rsplit(':').next().unwrap();
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(dir.join("downtime-ca.pem"))
        .arg(format!("https://localhost:{port}/"))
        .output()
        .unwrap();
    assert_eq!(curl.status.code(), Some(35));
    assert!(String::from_utf8_lossy(&curl.stderr).contains("unknown ca"));
    s.run(&["create", "--forward", "-l", "127.0.0.1:0", "egress"])
        .ok();
    let out = s
        .run(&[
            "fault",
            "add",
            "egress",
            "--type",
            "status",
            "--status",
            "503",
            "--match-host",
            "*.stripe.com",
        ])
        .ok();
    assert!(out.stdout.contains("host *.stripe.com"), "{}", out.stdout);
    assert_eq!(
        s.proxy("egress")["toxics"][0]["match"]["host"],
        "*.stripe.com"
    );
    let bad = s.run(&[
        "fault",
        "add",
        "auth",
        "-n",
        "other",
        "--type",
        "tls_alert",
        "--alert",
        "nope",
    ]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("attributes.alert"), "{}", bad.stderr);
}

/// The walkthrough's unattended check (`examples/app/selftest.sh`) broke silently when
/// `serve` indented its export lines: it runs here against this build, so it cannot again.
#[test]
fn the_example_selftest_passes_against_this_build() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/app/selftest.sh"
    );
    let dir = scratch("selftest");
    let out = std::process::Command::new("bash")
        .arg(script)
        .current_dir(&dir)
        .env("DOWNTIME", env!("CARGO_BIN_EXE_downtime"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("PASS"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
