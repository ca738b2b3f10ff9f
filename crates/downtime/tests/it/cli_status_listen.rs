//! `downtime serve --status-listen` (and `--status-url`), run as the real binary: the status
//! page on a listener of its own with no control routes, the line announcing it, the
//! maintenance link naming it, and the refusals of bad values and taken addresses.
//!
//! Every wait is bounded: start-up by `STARTUP`, each request by `IO_TIMEOUT`, each run
//! expected to fail by `STARTUP` (then killed). Only the processes started here are
//! killed, through their own handles.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Run, STARTUP, cli, run, spawn_serve};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const BROWSER: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15";
const STATUS_LINE: &str = "downtime status page on http://";

/// A `downtime serve` started with extra flags; killed (only this child) on drop.
struct Serve {
    child: Child,
    api: String,
    log: PathBuf,
}

/// Numbers the servers of this test process, so their logs never collide.
static SERVERS: AtomicUsize = AtomicUsize::new(0);

impl Serve {
    fn start(flags: &[&str]) -> Serve {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "cli-status-listen-{}-{}.log",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut command = cli();
        command.env("LOG_LEVEL", "warn");
        let (child, port) = spawn_serve(command, flags, &log).unwrap_or_else(|e| panic!("{e}"));
        Serve {
            child,
            api: format!("127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// The address in the `downtime status page on http://ADDR/status` line.
    fn status_address(&self) -> String {
        let log = self.log();
        log.lines()
            .find_map(|line| line.strip_prefix(STATUS_LINE)?.strip_suffix("/status"))
            .unwrap_or_else(|| panic!("no status page line in the log:\n{log}"))
            .to_owned()
    }

    /// Runs a CLI command against this server's API.
    fn run(&self, args: &[&str]) -> Run {
        run(&format!("http://{}", self.api), args)
    }

    /// Creates an HTTP stand-in (no upstream, no faults: it answers its default maintenance
    /// body) and returns its address.
    fn stand_in(&self, name: &str) -> String {
        self.run(&[
            "create",
            "--protocol",
            "http",
            "--listen",
            "127.0.0.1:0",
            name,
        ])
        .ok();
        let view = self.run(&["inspect", "--json", name]).ok().json();
        view["listen"].as_str().unwrap().to_owned()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One HTTP answer, read to the end of a `Connection: close` exchange.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

/// Sends `METHOD path` (with `body`, as `user_agent`) over a fresh connection and reads the
/// whole answer; panics when there is none in time.
fn request(address: &str, method: &str, path: &str, body: &str, user_agent: &str) -> Reply {
    let what = format!("{method} {path} on {address}");
    let mut stream = TcpStream::connect(address).unwrap_or_else(|e| panic!("{what}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: {user_agent}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line {status_line:?}"));
    let mut content_type = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-type")
        {
            value.trim().clone_into(&mut content_type);
        }
    }
    let mut body = String::new();
    reader
        .read_to_string(&mut body)
        .unwrap_or_else(|e| panic!("{what}: body: {e}"));
    Reply {
        status,
        content_type,
        body,
    }
}

/// Runs `downtime serve ARGS` that is expected to exit by itself; killed (and the test
/// failed) if it still runs after `STARTUP`.
fn serve_expecting_exit(args: &[&str]) -> Run {
    let mut child = cli()
        .env("LOG_LEVEL", "warn")
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--db",
            ":memory:",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + STARTUP;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "downtime serve {args:?} did not exit; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        crate::support::pause(Duration::from_millis(25));
    }
    child.wait_with_output().unwrap().into()
}

#[test]
fn status_listen_serves_only_the_status_page_and_the_maintenance_link_names_it() {
    let server = Serve::start(&["--status-listen", "127.0.0.1:0"]);
    let status = server.status_address();
    assert_ne!(status, server.api);

    // The API line stays the first thing printed; the status line follows it.
    let log = server.log();
    let ours: Vec<&str> = log.lines().filter(|l| l.starts_with("downtime ")).collect();
    assert!(
        ours.first()
            .is_some_and(|l| l.starts_with("downtime API listening on http://127.0.0.1:")),
        "{log}"
    );
    assert_eq!(
        ours.get(1).copied(),
        Some(format!("{STATUS_LINE}{status}/status").as_str()),
        "{log}"
    );

    // The page, for a browser, on the status listener.
    let page = request(&status, "GET", "/status", "", BROWSER);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.content_type.starts_with("text/html"), "{page:?}");
    assert!(page.body.contains("</html>"));
    let summary = request(&status, "GET", "/api/v2/summary.json", "", BROWSER);
    assert_eq!(summary.status, 200, "{}", summary.body);

    // No control route there, whatever the client.
    for path in ["/proxies", "/webhooks", "/incidents"] {
        for (method, body) in [("GET", ""), ("POST", "{}")] {
            for ua in [BROWSER, "curl/8.5.0"] {
                let r = request(&status, method, path, body, ua);
                assert_eq!(r.status, 404, "{method} {path} as {ua}: {}", r.body);
            }
        }
    }
    for (method, path) in [("POST", "/reset"), ("GET", "/version"), ("GET", "/halt")] {
        let r = request(&status, method, path, "", "curl/8.5.0");
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
    }

    // The API listener serves what it did: control routes (not to browsers) and the page.
    assert_eq!(
        request(&server.api, "GET", "/proxies", "", "curl/8.5.0").status,
        200
    );
    assert_eq!(
        request(&server.api, "GET", "/proxies", "", BROWSER).status,
        403
    );
    let page = request(&server.api, "GET", "/status", "", BROWSER);
    assert_eq!(page.status, 200, "{}", page.body);

    // The default maintenance answer links to the status listener, not to the API.
    let stand_in = server.stand_in("platform-api");
    let answer = request(&stand_in, "GET", "/anything", "", "app/1.0");
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        answer.body.contains(&format!(
            "For more information, visit: http://{status}/status"
        )),
        "{}",
        answer.body
    );
    assert!(!answer.body.contains(&server.api), "{}", answer.body);
}

#[test]
fn status_url_is_the_link_when_given() {
    let url = "https://status.example.com/status";
    let server = Serve::start(&["--status-listen", "127.0.0.1:0", "--status-url", url]);
    let status = server.status_address();
    let stand_in = server.stand_in("billing");
    let answer = request(&stand_in, "GET", "/", "", "app/1.0");
    assert!(
        answer
            .body
            .contains(&format!("For more information, visit: {url}")),
        "{}",
        answer.body
    );
    let summary = request(&status, "GET", "/api/v2/summary.json", "", "curl/8.5.0");
    assert!(summary.body.contains(url), "{}", summary.body);
}

#[test]
fn bad_status_flags_exit_2_naming_the_flag_and_the_value() {
    for (flag, value) in [
        ("--status-listen", "nope"),
        ("--status-listen", "localhost:8080"),
        ("--status-listen", "0.0.0.0"),
        ("--status-listen", "127.0.0.1:70000"),
        ("--status-url", "status.example.com"),
        ("--status-url", "ftp://status.example.com/"),
    ] {
        let out = serve_expecting_exit(&[flag, value]).fails(2);
        assert!(
            out.stderr.contains(flag) && out.stderr.contains(value),
            "{flag} {value}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{flag} {value}: {}", out.stdout);
    }
}

#[test]
fn a_taken_status_address_fails_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = serve_expecting_exit(&["--status-listen", &address]).fails(1);
    assert!(
        out.stderr.contains(&format!(
            "downtime: cannot listen on {address} for the status page (--status-listen): "
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains(STATUS_LINE), "{}", out.stdout);
}
