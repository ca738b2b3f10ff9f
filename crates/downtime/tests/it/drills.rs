//! Drills end to end with the real binary (issue 4): `downtime drill run` as users and CI run it.
//!
//! 1. **The proof.** Each example drill (`examples/drills/{maintenance,slow,ratelimit}.toml`)
//!    runs against the example app (`examples/app/app.py`) in both modes, in front of the fake
//!    platform API, on free ports (the files' fixed ports 5000/5001/5091 are rewritten): the
//!    resilient app passes (exit 0), the naive one fails (exit 1) and the JSON report and the
//!    JUnit file name the failing fault step and why.
//! 2. **Every way a drill ends leaves the server as it was**, against a remote
//!    `downtime serve` (`--server URL`) that already holds proxies with toxics: pass, fail,
//!    stop condition, steady state not met (nothing injected), SIGINT, SIGTERM, `POST /halt`,
//!    the runner killed with SIGKILL (the faults expire by their TTL), a second drill on a
//!    locked proxy (exit 2), an invalid file (exit 2, every problem as `file:line: key:
//!    message`, nothing created) and setup errors (exit 2, partial setup undone).
//!
//! Processes (python3 apps, `downtime serve`, `downtime drill run`) are started by the test
//! and killed only through their own handle or pid. Every wait is bounded; only 127.0.0.1 is
//! bound. Timing bounds are generous but two-sided where it matters.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support;
use crate::support::free_port;

/// Start-up of a helper process (python app, `downtime serve`).
const STARTUP: Duration = Duration::from_secs(30);
/// Upper bound for one `drill run` (the drills here last at most 10 s).
const DRILL_BOUND: Duration = Duration::from_secs(60);
/// How long a drill's exit may take once it was told to stop.
const STOP_BOUND: Duration = Duration::from_secs(10);

// --- processes -----------------------------------------------------------------------

/// A child process killed (by its own handle, i.e. its pid) on drop if still running.
struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits at most `bound` for the exit; panics (after killing it) if it does not end.
    fn wait(&mut self, bound: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not exit within {bound:?}", self.what);
            }
            crate::support::pause(Duration::from_millis(20));
        }
    }

    /// Sends a signal to this process only, by pid.
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name} {}", self.pid());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh scratch directory for one scenario.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("drills-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Starts an example python script with `--port 0 --quiet` and returns it with its port,
/// read from the first stdout line `listening on http://127.0.0.1:PORT`.
fn python(dir: &Path, script: &str, args: &[&str], env: &[(&str, &str)]) -> (Proc, u16) {
    let log = std::fs::File::create(dir.join(format!("{script}.log"))).unwrap();
    let mut child = Command::new("python3")
        .arg(examples().join("app").join(script))
        .args(args)
        .args(["--port", "0", "--quiet"])
        .envs(env.iter().copied())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("python3 {script}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let proc = Proc {
        child,
        what: script.to_owned(),
    };
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Keep draining so the script never blocks on a full pipe.
        for _ in lines {}
    });
    let line = match rx.recv_timeout(STARTUP) {
        Ok(Some(Ok(line))) => line,
        other => panic!("{script} did not print its address within {STARTUP:?}: {other:?}"),
    };
    let port = line
        .strip_prefix("listening on http://127.0.0.1:")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{script}: unexpected first line {line:?}"));
    (proc, port)
}

fn downtime() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_downtime"));
    command.env_remove("TOXIPROXY_URL").stdin(Stdio::null());
    command
}

// --- a tiny HTTP client and upstream ---------------------------------------------------

/// One HTTP/1.1 request with `Connection: close`; returns the status and the body.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: drills-test\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line in {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A plain upstream app on its own threads: `200 {"ok":true}` to every request.
fn healthy_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\
                      Connection: close\r\n\r\n{\"ok\":true}\n",
                );
            });
        }
    });
    port
}

// --- a remote downtime server with a non-trivial configuration -------------------------

/// `downtime serve` on a free port, holding before any drill:
/// - `bystander`: a TCP proxy with a `latency` toxic (`slow-db`);
/// - `api`: an HTTP proxy in front of a healthy upstream, with an HTTP fault (`legacy-errors`,
///   only for `/legacy/*`) that the probes never meet. Drills inject into `api`.
struct Remote {
    _proc: Proc,
    port: u16,
    log: PathBuf,
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// `127.0.0.1:PORT` of the `api` proxy.
    api: String,
    /// `GET /proxies` before the drill.
    before: Value,
}

impl Remote {
    fn start(dir: &Path) -> Remote {
        let log = dir.join("serve.log");
        let mut command = downtime();
        // In the scratch directory: whatever the server writes (its history database)
        // stays there.
        command.current_dir(dir).env("LOG_LEVEL", "info");
        let (child, port) =
            support::spawn_serve(command, &[], &log).unwrap_or_else(|e| panic!("{e}"));
        let proc = Proc {
            child,
            what: "downtime serve".to_owned(),
        };
        Remote::populate(proc, port, log)
    }

    fn populate(proc: Proc, port: u16, log: PathBuf) -> Remote {
        let create = |path: &str, body: Value| {
            let (status, text) = http(port, "POST", path, Some(&body));
            assert!(
                status == 200 || status == 201,
                "POST {path} {body}: {status} {text}"
            );
            serde_json::from_str::<Value>(&text).unwrap()
        };
        create(
            "/proxies",
            json!({"name": "bystander", "listen": "127.0.0.1:0",
                   "upstream": format!("127.0.0.1:{}", free_port())}),
        );
        create(
            "/proxies/bystander/toxics",
            json!({"name": "slow-db", "type": "latency", "stream": "downstream",
                   "toxicity": 0.5, "attributes": {"latency": 100, "jitter": 10}}),
        );
        let api = create(
            "/proxies",
            json!({"name": "api", "protocol": "http", "listen": "127.0.0.1:0",
                   "upstream": format!("127.0.0.1:{}", healthy_upstream())}),
        );
        create(
            "/proxies/api/toxics",
            json!({"name": "legacy-errors", "type": "status",
                   "attributes": {"status": 500}, "match": {"path": "/legacy/*"}}),
        );
        let api = api["listen"].as_str().unwrap().to_owned();
        let mut remote = Remote {
            _proc: proc,
            port,
            log,
            base: format!("http://127.0.0.1:{port}"),
            api,
            before: Value::Null,
        };
        remote.before = remote.proxies();
        assert_eq!(
            remote.before["bystander"]["toxics"][0]["name"], "slow-db",
            "{}",
            remote.before
        );
        remote
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (status, text) = http(self.port, "GET", path, None);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn proxies(&self) -> Value {
        let (status, v) = self.get("/proxies");
        assert_eq!(status, 200, "{v}");
        v
    }

    fn toxic_names(&self, proxy: &str) -> Vec<String> {
        let (status, v) = self.get(&format!("/proxies/{proxy}/toxics"));
        assert_eq!(status, 200, "{v}");
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits (bounded) until `proxy` has a toxic called `name`.
    fn wait_for_toxic(&self, proxy: &str, name: &str, bound: Duration) -> Instant {
        let deadline = Instant::now() + bound;
        loop {
            if self.toxic_names(proxy).iter().any(|n| n == name) {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "{name} never appeared on {proxy} within {bound:?}: {:?}",
                self.toxic_names(proxy)
            );
            crate::support::pause(Duration::from_millis(25));
        }
    }

    /// The server's configuration equals what it was before the drill.
    fn assert_restored(&self, context: &str) {
        assert_eq!(
            self.proxies(),
            self.before,
            "{context}: GET /proxies differs from before the drill"
        );
    }
}

// --- drill files and runs ------------------------------------------------------------

/// A drill probing `GET /account` through the remote's `api` proxy (10 requests/s), with
/// one step `outage` of `duration` holding `fault` (TOML lines of a `[[step.fault]]`),
/// and `extra` appended (verdict, stop, proxies).
fn remote_drill(remote: &Remote, duration: &str, fault: &str, extra: &str) -> String {
    format!(
        r#"name = "remote drill"
seed = 7
baseline = "1s"
recovery = "1s"

[[probe]]
name = "account"
url = "http://{api}/account"
interval = "100ms"
timeout = "1s"
[probe.expect]
status = 200
json = {{ "/ok" = true }}
latency = "800ms"

[[step]]
name = "outage"
duration = "{duration}"
[[step.fault]]
proxy = "api"
{fault}

{extra}
"#,
        api = remote.api
    )
}

const MAINTENANCE: &str = "type = \"maintenance\"\nattributes = { retry_after = 1 }";

/// What one `drill run` left behind.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    report: Option<Value>,
    junit: Option<String>,
}

impl Ran {
    fn report(&self) -> &Value {
        self.report
            .as_ref()
            .unwrap_or_else(|| panic!("no JSON report; {self:?}"))
    }

    fn outcome(&self) -> &str {
        self.report()["outcome"].as_str().unwrap()
    }

    fn reason(&self) -> &str {
        self.report()["reason"].as_str().unwrap_or("")
    }

    fn phase(&self, name: &str) -> &Value {
        self.report()["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no phase {name:?} in {:#}", self.report()))
    }

    fn events(&self) -> Vec<String> {
        self.report()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["what"].as_str().unwrap().to_owned())
            .collect()
    }

    fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code,
            Some(code),
            "exit code of drill run\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
    }
}

/// Writes `text` as `drill.toml` in `dir` and starts `drill run` on it with
/// `--quiet --report r.json --junit r.xml` plus `args`.
fn spawn_drill(dir: &Path, text: &str, args: &[&str]) -> Proc {
    std::fs::write(dir.join("drill.toml"), text).unwrap();
    for f in ["r.json", "r.xml", "out.txt", "err.txt"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let child = downtime()
        .current_dir(dir)
        .args(["drill", "run", "drill.toml", "--quiet"])
        .args(["--report", "r.json", "--junit", "r.xml"])
        .args(args)
        .stdout(std::fs::File::create(dir.join("out.txt")).unwrap())
        .stderr(std::fs::File::create(dir.join("err.txt")).unwrap())
        .spawn()
        .unwrap();
    Proc {
        child,
        what: format!("drill run in {}", dir.display()),
    }
}

fn finish(dir: &Path, mut proc: Proc, bound: Duration) -> Ran {
    let status = proc.wait(bound);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    Ran {
        code: status.code(),
        stdout: read("out.txt").unwrap_or_default(),
        stderr: read("err.txt").unwrap_or_default(),
        report: read("r.json").map(|t| serde_json::from_str(&t).unwrap()),
        junit: read("r.xml"),
    }
}

fn run_drill(dir: &Path, text: &str, args: &[&str]) -> Ran {
    let proc = spawn_drill(dir, text, args);
    finish(dir, proc, DRILL_BOUND)
}

/// The `<testcase>` element of `phase` in a JUnit file.
fn junit_case<'a>(junit: &'a str, phase: &str) -> &'a str {
    let marker = format!(" name=\"{phase}\"");
    junit
        .split("<testcase")
        .find(|case| case.contains(&marker))
        .unwrap_or_else(|| panic!("no test case {phase:?} in\n{junit}"))
}

// --- 1. the proof: example drills against the example app ------------------------------

/// Runs `examples/drills/<drill>.toml` against the example app in `mode` on free ports.
fn example(drill: &str, mode: &str) {
    let dir = scratch(&format!("example-{drill}-{mode}"));
    let original =
        std::fs::read_to_string(examples().join("drills").join(format!("{drill}.toml"))).unwrap();
    // The examples take their ports from the environment, with these defaults.
    for needle in [
        "127.0.0.1:${APP_PORT:-5000}",
        "127.0.0.1:${FAKE_API_PORT:-5001}",
        "127.0.0.1:${DRILL_PROXY_PORT:-5091}",
    ] {
        assert!(
            original.contains(needle),
            "{drill}.toml no longer uses {needle}"
        );
    }
    // The proxy port is picked free and bound later by the drill: retry if it was taken.
    for attempt in 1..=3 {
        let (_api, api_port) = python(&dir, "fake_platform_api.py", &[], &[]);
        let proxy_port = free_port();
        let platform = format!("http://127.0.0.1:{proxy_port}");
        let (_app, app_port) = python(
            &dir,
            "app.py",
            &["--mode", mode],
            &[("PLATFORM_API_URL", platform.as_str())],
        );
        let text = original
            .replace("${APP_PORT:-5000}", &app_port.to_string())
            .replace("${FAKE_API_PORT:-5001}", &api_port.to_string())
            .replace("${DRILL_PROXY_PORT:-5091}", &proxy_port.to_string());
        let ran = run_drill(&dir, &text, &[]);
        if ran.code == Some(2) && attempt < 3 {
            eprintln!(
                "{drill}/{mode}: setup failed (attempt {attempt}), retrying: {}",
                ran.stderr
            );
            continue;
        }
        check_example(drill, mode, &ran);
        return;
    }
}

fn check_example(drill: &str, mode: &str, ran: &Ran) {
    let report = ran.report();
    let junit = ran
        .junit
        .as_deref()
        .unwrap_or_else(|| panic!("no JUnit file: {ran:?}"));
    assert_eq!(
        report["cleanup"]["restored"], true,
        "{:#}",
        report["cleanup"]
    );
    assert_eq!(
        report["cleanup"]["deleted_proxies"], 1,
        "{:#}",
        report["cleanup"]
    );
    assert!(
        ran.phase("baseline")["pass"] == true,
        "the baseline must pass in both modes: {:#}",
        ran.phase("baseline")
    );
    let step = match drill {
        "maintenance" => "maintenance",
        "slow" => "slow",
        _ => "rate-limited",
    };
    if mode == "resilient" {
        ran.assert_code(0);
        assert_eq!(ran.outcome(), "pass", "{:#}", report);
        assert!(report["reason"].is_null());
        assert!(!junit.contains("<failure"), "{junit}");
        assert!(junit.contains("failures=\"0\""), "{junit}");
        assert!(ran.stdout.contains(": PASS"), "{}", ran.stdout);
        return;
    }
    ran.assert_code(1);
    assert_eq!(ran.outcome(), "fail", "{:#}", report);
    // The failing phase is the fault step, and the reason says which threshold it missed.
    let phase = ran.phase(step);
    assert_eq!(phase["pass"], false, "{phase:#}");
    let reasons: Vec<&str> = phase["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let expected = if drill == "slow" {
        "p95 latency"
    } else {
        "availability"
    };
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(expected) && r.contains("is ")),
        "{drill}/naive: phase {step:?} reasons {reasons:?} should name the {expected}"
    );
    assert!(
        ran.reason().contains(&format!("phase \"{step}\"")),
        "report reason {:?} should name phase {step:?}",
        ran.reason()
    );
    let case = junit_case(junit, step);
    assert!(case.contains("<failure message=\""), "{case}");
    assert!(case.contains(expected), "{case}");
    assert!(
        !junit_case(junit, "baseline").contains("<failure"),
        "{junit}"
    );
    assert!(ran.stdout.contains(": FAIL"), "{}", ran.stdout);
}

#[test]
fn example_drills_pass_with_the_resilient_app_and_fail_with_the_naive_one() {
    // Six independent drills on their own ports, at the same time.
    let cases: Vec<(&str, &str)> = ["maintenance", "slow", "ratelimit"]
        .into_iter()
        .flat_map(|d| [(d, "resilient"), (d, "naive")])
        .collect();
    let handles: Vec<_> = cases
        .iter()
        .map(|&(drill, mode)| {
            (
                format!("{drill}/{mode}"),
                thread::Builder::new()
                    .name(format!("{drill}-{mode}"))
                    .spawn(move || example(drill, mode))
                    .unwrap(),
            )
        })
        .collect();
    let mut failed = Vec::new();
    for (name, handle) in handles {
        if let Err(panic) = handle.join() {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failed.push(format!("{name}: {message}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

// --- 2. every ending leaves the remote server as it was --------------------------------

#[test]
fn pass_restores_the_server_and_deletes_the_proxies_it_created() {
    let dir = scratch("pass");
    let remote = Remote::start(&dir);
    // The server comes from the file this time (no --server).
    let extra = format!(
        r#"
[[proxy]]
name = "drill-made"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:{}"

[verdict]
baseline = {{ availability = 95 }}
faults = {{ availability = 95, p95 = "800ms" }}
recovery = {{ availability = 95 }}
"#,
        free_port()
    );
    let text = format!(
        "server = \"{}\"\n{}",
        remote.base,
        remote_drill(
            &remote,
            "2s",
            "type = \"http_latency\"\nattributes = { latency = 50 }",
            &extra
        )
    );
    let ran = run_drill(&dir, &text, &[]);
    ran.assert_code(0);
    assert_eq!(ran.outcome(), "pass", "{:#}", ran.report());
    let events = ran.events();
    assert!(
        events
            .iter()
            .any(|e| e == "inject http_latency \"drill-outage-http_latency\" into api"),
        "{events:#?}"
    );
    assert_eq!(ran.report()["cleanup"]["deleted_proxies"], 1);
    assert_eq!(ran.report()["cleanup"]["restored"], true);
    remote.assert_restored("after a passing drill");
}

#[test]
fn fail_restores_the_server() {
    let dir = scratch("fail");
    let remote = Remote::start(&dir);
    let text = remote_drill(
        &remote,
        "2s",
        MAINTENANCE,
        "[verdict]\nfaults = { availability = 95 }\n",
    );
    let ran = run_drill(&dir, &text, &["--server", &remote.base]);
    ran.assert_code(1);
    assert_eq!(ran.outcome(), "fail");
    // The request sent at the very start of the step may still get through: the fault
    // lands a few milliseconds after its planned time.
    let reason = ran.reason();
    assert!(
        reason.starts_with("phase \"outage\": availability ") && reason.ends_with("% is below 95%"),
        "{reason}"
    );
    let availability = ran.phase("outage")["availability"].as_f64().unwrap();
    assert!(
        availability <= 10.0,
        "{availability}% through a maintenance"
    );
    let case = junit_case(ran.junit.as_deref().unwrap(), "outage");
    assert!(case.contains("<failure message=\"availability "), "{case}");
    assert!(case.contains("% is below 95%\""), "{case}");
    assert_eq!(ran.report()["cleanup"]["restored"], true);
    remote.assert_restored("after a failing drill");
}

#[test]
fn stop_condition_ends_the_drill_early_and_restores_the_server() {
    let dir = scratch("stop");
    let remote = Remote::start(&dir);
    let text = remote_drill(
        &remote,
        "6s",
        MAINTENANCE,
        "[stop]\nwindow = \"1s\"\navailability_below = 50\n",
    );
    let ran = run_drill(&dir, &text, &["--server", &remote.base]);
    ran.assert_code(1);
    assert_eq!(ran.outcome(), "fail");
    let reason = ran.reason();
    assert!(
        reason.starts_with("stop condition in phase \"outage\": availability ")
            && reason.ends_with("% over the last 1s is below 50%"),
        "{reason}"
    );
    // Planned 8 s; the condition can fire 1 s into the step (2 s into the drill).
    let took = ran.report()["duration_ms"].as_u64().unwrap();
    assert!((2000..4500).contains(&took), "stopped after {took} ms");
    // The recovery never ran: its row says so (issue 14) instead of a verdict.
    let phases: Vec<(&str, &str)> = ran.report()["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        phases[..2].iter().map(|p| p.0).collect::<Vec<_>>(),
        ["baseline", "outage"]
    );
    assert_eq!(
        phases.get(2),
        Some(&("recovery", "not_run")),
        "{:#}",
        ran.report()
    );
    assert_eq!(ran.report()["cleanup"]["removed_faults"], 1);
    remote.assert_restored("after a stop condition");
}

#[test]
fn unmet_steady_state_injects_nothing() {
    let dir = scratch("steady");
    let remote = Remote::start(&dir);
    // The app under test is down: the probe's port refuses connections.
    let down = format!("http://127.0.0.1:{}/account", free_port());
    let text = remote_drill(
        &remote,
        "2s",
        MAINTENANCE,
        "[steady_state]\navailability = 90\n",
    )
    .replace(&format!("http://{}/account", remote.api), &down);
    // Watch the proxy's toxics for the whole run: the fault would stay 2 s if injected.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (port, watching) = (remote.port, watching.clone());
        thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            let mut polls = 0;
            let deadline = Instant::now() + DRILL_BOUND;
            while watching.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                let (_, body) = http(port, "GET", "/proxies/api/toxics", None);
                let v: Value = serde_json::from_str(&body).unwrap();
                for t in v.as_array().unwrap() {
                    seen.insert(t["name"].as_str().unwrap().to_owned());
                }
                polls += 1;
                crate::support::pause(Duration::from_millis(25));
            }
            (seen, polls)
        })
    };
    let ran = run_drill(&dir, &text, &["--server", &remote.base]);
    // Keep watching past the moment the fault was planned (1 s) plus its 2 s.
    crate::support::pause(Duration::from_millis(500));
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let (seen, polls) = watcher.join().unwrap();
    ran.assert_code(1);
    assert_eq!(ran.outcome(), "fail");
    assert!(
        ran.reason().starts_with("steady state not met before any fault: availability 0.0% is below 90%; nothing was injected"),
        "{}",
        ran.reason()
    );
    assert!(
        !ran.events().iter().any(|e| e.starts_with("inject")),
        "{:#?}",
        ran.events()
    );
    assert!(polls >= 20, "only {polls} polls");
    let seen: Vec<String> = seen.into_iter().collect();
    assert_eq!(
        seen,
        ["drill-lock", "legacy-errors"],
        "toxics ever seen on api while the drill ran (the fault must never appear)"
    );
    assert_eq!(ran.report()["cleanup"]["removed_faults"], 0);
    remote.assert_restored("after an unmet steady state");
}

/// What an interrupted drill left, and how fast it reacted.
struct Interrupted {
    remote: Remote,
    ran: Ran,
    /// From telling the runner to stop to its exit.
    exit: Duration,
    /// From telling the runner to stop to its fault being gone from the server.
    fault_gone: Duration,
}

/// Starts a 6 s step that makes the app hang (5 s of latency, probes time out after 2 s),
/// waits until it is live and requests are in flight, stops the runner with `how`, and
/// watches the fault disappear.
fn interrupted(name: &str, how: impl FnOnce(&Remote, &Proc)) -> Interrupted {
    let dir = scratch(name);
    let remote = Remote::start(&dir);
    let text = remote_drill(
        &remote,
        "6s",
        "type = \"http_latency\"\nattributes = { latency = 5000 }",
        "",
    )
    .replace("timeout = \"1s\"", "timeout = \"2s\"");
    let proc = spawn_drill(&dir, &text, &["--server", &remote.base]);
    let fault = "drill-outage-http_latency";
    remote.wait_for_toxic("api", fault, Duration::from_secs(15));
    crate::support::pause(Duration::from_millis(500));
    let told = Instant::now();
    how(&remote, &proc);
    let deadline = told + STOP_BOUND;
    while remote.toxic_names("api").iter().any(|n| n == fault) {
        assert!(
            Instant::now() < deadline,
            "{fault} still there {STOP_BOUND:?} after the stop"
        );
        crate::support::pause(Duration::from_millis(20));
    }
    let fault_gone = told.elapsed();
    let ran = finish(&dir, proc, STOP_BOUND);
    let exit = told.elapsed();
    Interrupted {
        remote,
        ran,
        exit,
        fault_gone,
    }
}

fn assert_aborted_and_restored(run: &Interrupted, reason: &str) {
    let ran = &run.ran;
    ran.assert_code(1);
    // In-flight probes may take their 2 s timeout to end; the fault must not wait for them.
    assert!(
        run.fault_gone < Duration::from_millis(700),
        "fault removed {:?} after the stop",
        run.fault_gone
    );
    assert!(
        run.exit < Duration::from_secs(5),
        "exit took {:?}",
        run.exit
    );
    assert_eq!(ran.outcome(), "aborted", "{:#}", ran.report());
    assert_eq!(ran.reason(), reason);
    assert!(
        ran.stdout.contains(&format!("ABORTED ({reason})")),
        "{}",
        ran.stdout
    );
    let junit = ran.junit.as_deref().unwrap();
    assert!(junit.contains("<error message="), "{junit}");
    assert_eq!(
        run.remote.toxic_names("api"),
        ["legacy-errors"],
        "the drill's fault and lock are gone"
    );
}

#[test]
fn sigint_mid_step_removes_the_faults() {
    let run = interrupted("sigint", |_, proc| proc.signal("INT"));
    assert_aborted_and_restored(&run, "interrupted by a signal");
    assert_eq!(run.ran.report()["cleanup"]["removed_faults"], 1);
    assert_eq!(run.ran.report()["cleanup"]["restored"], true);
    run.remote.assert_restored("after SIGINT");
}

#[test]
fn sigterm_mid_step_removes_the_faults() {
    let run = interrupted("sigterm", |_, proc| proc.signal("TERM"));
    assert_aborted_and_restored(&run, "interrupted by a signal");
    assert_eq!(run.ran.report()["cleanup"]["removed_faults"], 1);
    assert_eq!(run.ran.report()["cleanup"]["restored"], true);
    run.remote.assert_restored("after SIGTERM");
}

#[test]
fn halt_mid_step_stops_the_drill_and_removes_every_fault() {
    let run = interrupted("halt", |remote, _| {
        let (status, body) = http(remote.port, "POST", "/halt", Some(&json!({})));
        assert_eq!(status, 200, "POST /halt: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["halts"], 1, "{v}");
    });
    let (remote, ran) = (&run.remote, &run.ran);
    assert_eq!(remote.get("/halt").1, json!({"halts": 1}));
    ran.assert_code(1);
    assert!(
        run.exit < Duration::from_secs(5),
        "exit took {:?}",
        run.exit
    );
    assert_eq!(ran.outcome(), "aborted", "{:#}", ran.report());
    assert_eq!(ran.reason(), "halted (downtime halt)");
    // A halt removes every toxic of every proxy, the pre-existing ones included; proxies
    // themselves stay exactly as they were.
    let mut expected = remote.before.clone();
    for proxy in expected.as_object_mut().unwrap().values_mut() {
        proxy["toxics"] = json!([]);
    }
    assert_eq!(remote.proxies(), expected);
    // The restore check looks only at what this drill changed (issue 14): its own faults
    // are gone, so the server is restored as far as this drill is concerned; the
    // pre-existing toxics were removed by the halt, not by the drill.
    assert_eq!(
        ran.report()["cleanup"]["restored"],
        true,
        "{:#}",
        ran.report()
    );
}

#[test]
fn sigkill_mid_step_faults_expire_by_their_ttl() {
    let dir = scratch("sigkill");
    let remote = Remote::start(&dir);
    // A 3 s step: its fault lives at most 3 s + 5 s of margin.
    let text = remote_drill(&remote, "3s", MAINTENANCE, "");
    let mut proc = spawn_drill(&dir, &text, &["--server", &remote.base]);
    let injected =
        remote.wait_for_toxic("api", "drill-outage-maintenance", Duration::from_secs(15));
    let (_, fault) = remote.get("/proxies/api/toxics/drill-outage-maintenance");
    assert_eq!(fault["ttl"], 8000, "{fault}");
    crate::support::pause(Duration::from_millis(200));
    proc.child.kill().unwrap();
    let status = proc.wait(STOP_BOUND);
    assert_eq!(status.code(), None, "killed by SIGKILL: {status:?}");
    // The fault outlives the step (nobody removes it) and disappears by itself.
    let deadline = injected + Duration::from_secs(15);
    let gone = loop {
        if !remote
            .toxic_names("api")
            .iter()
            .any(|n| n == "drill-outage-maintenance")
        {
            break injected.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "fault still there 15 s after injection"
        );
        crate::support::pause(Duration::from_millis(100));
    };
    assert!(
        gone >= Duration::from_secs(6) && gone <= Duration::from_secs(12),
        "fault gone {gone:?} after injection, TTL 8 s"
    );
    let log = std::fs::read_to_string(&remote.log).unwrap();
    assert!(
        log.contains("toxic expired") && log.contains("drill-outage-maintenance"),
        "server log:\n{log}"
    );
    // The drill-lock outlives the drill on purpose (total + 65 s), then expires too; removing
    // it by hand leaves the server exactly as before.
    let mut left = remote.toxic_names("api");
    left.sort();
    assert_eq!(left, ["drill-lock", "legacy-errors"]);
    let (_, lock) = remote.get("/proxies/api/toxics/drill-lock");
    assert_eq!(lock["ttl"], (5 + 65) * 1000, "{lock}");
    assert_eq!(lock["toxicity"], 0.0, "{lock}");
    let (status, _) = http(
        remote.port,
        "DELETE",
        "/proxies/api/toxics/drill-lock",
        None,
    );
    assert_eq!(status, 204);
    remote.assert_restored("after SIGKILL, the TTL and removing the lock");
}

#[test]
fn a_second_drill_on_a_locked_proxy_is_refused() {
    let dir = scratch("lock");
    let remote = Remote::start(&dir);
    let first = remote_drill(
        &remote,
        "2s",
        "type = \"http_latency\"\nattributes = { latency = 20 }",
        "",
    );
    let proc = spawn_drill(&dir, &first, &["--server", &remote.base]);
    remote.wait_for_toxic("api", "drill-lock", Duration::from_secs(15));
    let during = remote.proxies();

    // The second drill would create a proxy before locking: that is undone too.
    let second_dir = scratch("lock-second");
    let second = remote_drill(&remote, "1s", MAINTENANCE, "").replace(
        "[[probe]]",
        &format!(
            "[[proxy]]\nname = \"second-made\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:{}\"\n\n[[probe]]",
            free_port()
        ),
    );
    let started = Instant::now();
    let ran = run_drill(&second_dir, &second, &["--server", &remote.base]);
    ran.assert_code(2);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        ran.stderr
            .contains("proxy \"api\" is in use by another drill (it has a drill-lock toxic)"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.report.is_none(),
        "no report for a drill that did not start"
    );
    // Nothing of the second drill remains, and the first one's lock is untouched.
    let now = remote.proxies();
    assert!(now.get("second-made").is_none(), "{now:#}");
    // The lock's ttl_left counts down; everything else is as it was.
    let without_time_left = |toxics: &Value| {
        let mut toxics = toxics.clone();
        for toxic in toxics.as_array_mut().unwrap() {
            toxic.as_object_mut().unwrap().remove("ttl_left");
        }
        toxics
    };
    assert_eq!(
        without_time_left(&now["api"]["toxics"]),
        without_time_left(&during["api"]["toxics"])
    );

    let ran = finish(&dir, proc, DRILL_BOUND);
    ran.assert_code(0);
    remote.assert_restored("after the first drill");
}

#[test]
fn an_invalid_file_lists_every_problem_and_creates_nothing() {
    let dir = scratch("invalid");
    let remote = Remote::start(&dir);
    let text = format!(
        r#"name = "broken"
colour = "blue"
baseline = "-2s"

[[proxy]]
name = "would-be-created"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:{port}"

[[probe]]
url = "http://{api}/account"
interval = 5.5

[[step]]
name = "a"
duration = "4s"
[[step.fault]]
proxy = "api"
type = "maintenance"
name = "same"

[[step]]
name = "b"
at = "2s"
duration = "4s"
[[step.fault]]
proxy = "api"
type = "latencyy"
[[step.fault]]
proxy = "api"
type = "status"
name = "same"
"#,
        port = free_port(),
        api = remote.api
    );
    let ran = run_drill(&dir, &text, &["--server", &remote.base]);
    ran.assert_code(2);
    let expected = [
        "drill.toml:2: colour: unknown key",
        "drill.toml:3: baseline: duration must not be negative",
        "drill.toml:12: probe[0].interval: expected a duration",
        "drill.toml:28: step[1].fault[0].type: unknown fault type \"latencyy\"",
        "drill.toml:22: step \"b\": overlaps step \"a\" on the same fault \"same\" of proxy \"api\"",
    ];
    for line in expected {
        assert!(
            ran.stderr.contains(line),
            "missing {line:?} in:\n{}",
            ran.stderr
        );
    }
    assert!(
        ran.stderr
            .contains("downtime: drill file drill.toml is invalid ("),
        "{}",
        ran.stderr
    );
    assert!(ran.report.is_none() && ran.junit.is_none());
    remote.assert_restored("after an invalid file");
    assert!(remote.proxies().get("would-be-created").is_none());

    // `drill check` lists the same problems without touching any server.
    let check = downtime()
        .current_dir(&dir)
        .args(["drill", "check", "drill.toml"])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&check.stderr);
    for line in expected {
        assert!(
            stderr.contains(line),
            "drill check: missing {line:?} in:\n{stderr}"
        );
    }
}

#[test]
fn setup_errors_exit_2_and_undo_what_was_set_up() {
    let dir = scratch("setup");
    let remote = Remote::start(&dir);
    // A proxy is created, then the step names a proxy the server does not have.
    let text = remote_drill(&remote, "1s", MAINTENANCE, "")
        .replace("proxy = \"api\"", "proxy = \"missing\"")
        + &format!(
            "\n[[proxy]]\nname = \"drill-made\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:{}\"\n",
            free_port()
        );
    let ran = run_drill(&dir, &text, &["--server", &remote.base]);
    ran.assert_code(2);
    assert!(
        ran.stderr.contains(&format!(
            "step \"outage\": proxy \"missing\" does not exist on {} and is not declared in this file (the server has: api, bystander)",
            remote.base
        )),
        "{}",
        ran.stderr
    );
    remote.assert_restored("after a setup error");

    // An unreachable server: refused before anything else.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let ran = run_drill(&dir, &text, &["--server", &nowhere]);
    ran.assert_code(2);
    assert!(
        ran.stderr.contains("cannot reach the downtime API"),
        "{}",
        ran.stderr
    );
}

/// Issue 14: `drill check` passed files whose proxies the server could never have, or that
/// put an HTTP fault on a TCP proxy; they failed only once run. It now asks the server the
/// drill would drive (or knows the embedded one starts empty), and says when it could not.
#[test]
fn drill_check_resolves_proxies_against_the_server_it_would_drive() {
    let dir = scratch("check-server");
    let remote = Remote::start(&dir);
    let check = |text: &str, server: &str| {
        std::fs::write(dir.join("drill.toml"), text).unwrap();
        let out = downtime()
            .current_dir(&dir)
            .args(["drill", "check", "drill.toml", "--server", server])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let good = remote_drill(&remote, "1s", MAINTENANCE, "");
    let (code, stdout, stderr) = check(&good, &remote.base);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.ends_with(&format!("proxies: checked against {}\n", remote.base)),
        "{stdout}"
    );

    let missing = good.replace("proxy = \"api\"", "proxy = \"nope\"");
    let (code, _, stderr) = check(&missing, &remote.base);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("proxy \"nope\" does not exist on")
            && stderr.contains("(the server has: api, bystander)"),
        "{stderr}"
    );

    let on_tcp = good.replace("proxy = \"api\"", "proxy = \"bystander\"");
    let (code, _, stderr) = check(&on_tcp, &remote.base);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "step \"outage\": \"maintenance\" is an HTTP fault but proxy \"bystander\" on {} is a TCP proxy",
            remote.base
        )),
        "{stderr}"
    );
    remote.assert_restored("after drill check");

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (code, stdout, stderr) = check(&good, &nowhere);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("proxies: NOT checked (cannot reach {nowhere}")),
        "{stdout}"
    );

    // The embedded server has the file's proxies only.
    let embedded = good.replace(
        "name = \"remote drill\"",
        "name = \"remote drill\"\nserver = \"embedded\"",
    );
    std::fs::write(dir.join("drill.toml"), &embedded).unwrap();
    let out = downtime()
        .current_dir(&dir)
        .args(["drill", "check", "drill.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("step \"outage\": proxy \"api\" is not declared in this file, and the embedded server starts with no proxies"),
        "{stderr}"
    );
}

/// Issue 10: a drill whose baseline overflows every clock parsed, then panicked in the runner
/// (a scheduled one would have left its proxy locked). `drill check` now refuses it with
/// exit 2, naming the field and the maximum.
#[test]
fn issue_10_drill_check_refuses_a_huge_baseline_naming_the_field_and_the_maximum() {
    let dir = scratch("huge-baseline");
    std::fs::write(
        dir.join("drill.toml"),
        r#"baseline = 9223372036854775807

[[probe]]
url = "http://127.0.0.1:1/"

[[step]]
duration = "1s"
[[step.fault]]
proxy = "api"
type = "maintenance"
"#,
    )
    .unwrap();
    let check = downtime()
        .current_dir(&dir)
        .args(["drill", "check", "drill.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "drill.toml:1: baseline: must be at most 24h (86400 seconds), got 9223372036854775807"
        ),
        "{stderr}"
    );
}

#[test]
fn an_unwritable_report_path_is_a_setup_error_before_the_drill_runs() {
    let drill = examples().join("drills").join("maintenance.toml");
    let started = std::time::Instant::now();
    for flag in ["--report", "--junit"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_downtime"))
            .args(["drill", "run"])
            .arg(&drill)
            .args([flag, "/proc/no-such-dir/report"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains("cannot write"), "{err}");
    }
    // Refused at once: the drill (baseline 5 s at least) never started.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
