//! The drill runner in-process (issue 4): `downtime_server::drills::runner::run` drives a real
//! `downtime_server::run` on `127.0.0.1:0`, and probes hit tiny targets written here on raw
//! tokio sockets (a healthy one, one that refuses, one that never answers, one that stops
//! halfway through its body).
//!
//! What is proved:
//! - a probe target that refuses connections or hangs counts as a failed probe within the
//!   probe's timeout, and the drill still keeps its schedule and ends on time;
//! - ramp levels are applied at the planned offsets (observed from outside by polling the
//!   fault through the API, and in the report's events);
//! - reproducibility: the same file and seed inject the same faults in the same order, and
//!   (on the embedded server, seeded by the drill) hit the same requests.
//!
//! Timing bounds are generous (small CI machines) but each has a lower and an upper side so a
//! runner that stalls, or applies everything at once, fails. Every wait is bounded.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use downtime_model::drill::DrillPlan;
use downtime_server::drills::report::{DrillReport, Outcome};
use downtime_server::drills::runner::{self, RunOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::Server;

/// Upper bound for one whole drill of this file (they last 3 to 4 s).
const DRILL_BOUND: Duration = Duration::from_secs(30);

// --- helpers -------------------------------------------------------------------------

fn plan(text: &str) -> DrillPlan {
    DrillPlan::parse(text).unwrap_or_else(|problems| {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        panic!("test drill is invalid:\n{}", list.join("\n"))
    })
}

/// Runs a drill quietly with a bound on its whole duration.
async fn run(plan: &DrillPlan, base: &str) -> DrillReport {
    tokio::time::timeout(
        DRILL_BOUND,
        runner::run(
            plan,
            base,
            CancellationToken::new(),
            RunOptions {
                quiet: true,
                ..RunOptions::default()
            },
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("drill {:?} did not end within {DRILL_BOUND:?}", plan.name))
    .unwrap_or_else(|e| panic!("drill {:?} did not start: {e}", plan.name))
}

/// A probe target on its own accept loop; aborted on drop.
struct Target {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Target {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Reads one request head (bounded), so the answer comes after the request.
async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

#[derive(Clone, Copy)]
enum Behaviour {
    /// `200 OK` with a short body, then close.
    Healthy,
    /// Reads the request and never answers (the socket stays open).
    Hang,
    /// Sends the head and 5 of 100 promised body bytes, then stalls.
    HalfBody,
    /// `200 OK` with a chunked body that starts with `healthy` and never ends.
    Endless,
    /// `200 OK` after a delay between 250 and 450 ms that differs from one answer to the next.
    Slow,
}

async fn target(behaviour: Behaviour) -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let task = tokio::spawn(async move {
        loop {
            let served = served.clone();
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                read_head(&mut stream).await;
                if matches!(behaviour, Behaviour::Slow) {
                    tokio::time::sleep(Duration::from_millis(250 + (n * 37) % 200)).await;
                }
                let answer: &[u8] = match behaviour {
                    Behaviour::Healthy | Behaviour::Slow => {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
                    }
                    Behaviour::Hang => b"",
                    Behaviour::HalfBody => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello",
                    Behaviour::Endless => b"",
                };
                if matches!(behaviour, Behaviour::Endless) {
                    let head =
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nhealthy\r\n";
                    if stream.write_all(head).await.is_err() {
                        return;
                    }
                    let chunk = format!("{:x}\r\n{}\r\n", 4096, "x".repeat(4096));
                    while stream.write_all(chunk.as_bytes()).await.is_ok() {}
                    return;
                }
                let _ = stream.write_all(answer).await;
                if matches!(behaviour, Behaviour::Healthy | Behaviour::Slow) {
                    let _ = stream.shutdown().await;
                } else {
                    // Hold the connection open well past any probe timeout.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            });
        }
    });
    Target { addr, task }
}

/// A port nothing listens on: bound, read back and released.
fn refused_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/health")
}

/// A port the test holds for an upstream that is never used.
fn unused_upstream() -> String {
    refused_url()
        .trim_start_matches("http://")
        .trim_end_matches("/health")
        .to_owned()
}

fn event_names(report: &DrillReport) -> Vec<String> {
    report.events.iter().map(|e| e.what.clone()).collect()
}

fn report_json(report: &DrillReport) -> Value {
    serde_json::to_value(report).unwrap()
}

// --- probes that refuse or hang ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_and_hanging_targets_fail_within_their_timeout_and_never_stall_the_drill() {
    let server = Server::start();
    let hang = target(Behaviour::Hang).await;
    let half = target(Behaviour::HalfBody).await;
    let refused = refused_url();
    let upstream = unused_upstream();
    // Three broken probes at 10 requests/s with a 300 ms timeout, through a whole drill
    // (baseline, one step, recovery). `steady_state = 0` lets the timeline run anyway.
    let text = format!(
        r#"
name = "broken targets"
baseline = "1s"
recovery = "1s"
[[proxy]]
name = "dep"
listen = "127.0.0.1:0"
upstream = "{upstream}"
[[probe]]
name = "refused"
url = "{refused}"
interval = "100ms"
timeout = "300ms"
[[probe]]
name = "hang"
url = "{hang}"
interval = "100ms"
timeout = "300ms"
[[probe]]
name = "half-body"
url = "{half}"
interval = "100ms"
timeout = "300ms"
[[step]]
name = "latency"
duration = "1s"
[[step.fault]]
proxy = "dep"
type = "latency"
attributes = {{ latency = 10 }}
[steady_state]
availability = 0
[verdict]
faults = {{ availability = 50 }}
"#,
        hang = hang.url("/health"),
        half = half.url("/health"),
    );
    let plan = plan(&text);
    let started = Instant::now();
    let report = run(&plan, &server.base).await;
    let wall = started.elapsed();

    // The schedule held: planned 3 s; in-flight probes end within their 300 ms timeout.
    assert!(
        (2900..4500).contains(&report.duration_ms),
        "drill took {} ms for a 3 s plan",
        report.duration_ms
    );
    assert!(
        wall < Duration::from_secs(8),
        "run() returned after {wall:?}"
    );
    assert_eq!(report.outcome, Outcome::Fail, "{:#}", report_json(&report));
    let names: Vec<&str> = report.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["baseline", "latency", "recovery"]);
    let step = &report.phases[1];
    assert!(!step.pass);
    assert!(
        step.reasons
            .iter()
            .any(|r| r.contains("availability 0.0% is below 50%")),
        "{:?}",
        step.reasons
    );
    // The timeline ran although every probe failed.
    let events = event_names(&report);
    assert!(
        events.iter().any(|e| e.starts_with("inject latency")),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("remove")),
        "{events:#?}"
    );

    for probe in &report.probes {
        // About 30 requests each: a stalled schedule (one request per timeout) would
        // give at most 10.
        assert!(
            (20..=40).contains(&probe.samples),
            "probe {} sent {} requests in 3 s at 10/s",
            probe.name,
            probe.samples
        );
        assert_eq!(
            probe.passed, 0,
            "probe {} passed against a broken target",
            probe.name
        );
        let reasons: Vec<&str> = probe.failures.iter().map(|(r, _)| r.as_str()).collect();
        if probe.name == "refused" {
            assert_eq!(reasons, ["connection refused or failed"], "{}", probe.name);
        } else {
            assert!(
                reasons
                    .iter()
                    .all(|r| *r == "timed out" || r.starts_with("no answer within 300ms")),
                "probe {}: {reasons:?}",
                probe.name
            );
        }
    }
    // Hanging requests count at their timeout, not longer (and not instantly).
    for phase in &report.phases {
        assert!(
            (250..=900).contains(&phase.p99_ms),
            "phase {} p99 {} ms with a 300 ms probe timeout",
            phase.name,
            phase.p99_ms
        );
    }
    assert!(report.cleanup.restored, "{:?}", report.cleanup);
    assert_eq!(
        server.get("/proxies").await.json(),
        json!({}),
        "the drill's proxy is gone"
    );
}

// --- probe bodies --------------------------------------------------------------------

/// Issue 10: probe answers were read whole, so an answer that never ends (or a huge one)
/// was held in memory until the probe's timeout and then counted as a failure. The first
/// 64 KiB are read and judged, the rest is not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_an_endless_probe_body_is_read_up_to_its_limit_and_judged() {
    let server = Server::start();
    let endless = target(Behaviour::Endless).await;
    let upstream = unused_upstream();
    let text = format!(
        r#"
name = "endless body"
baseline = "1s"
recovery = "1s"
[[proxy]]
name = "dep"
listen = "127.0.0.1:0"
upstream = "{upstream}"
[[probe]]
name = "endless"
url = "{url}"
interval = "200ms"
timeout = "2s"
expect = {{ body_contains = "healthy" }}
[[step]]
name = "latency"
duration = "1s"
[[step.fault]]
proxy = "dep"
type = "latency"
attributes = {{ latency = 10 }}
"#,
        url = endless.url("/health"),
    );
    let report = run(&plan(&text), &server.base).await;
    assert_eq!(report.outcome, Outcome::Pass, "{:#}", report_json(&report));
    let probe = &report.probes[0];
    assert!(probe.samples >= 5, "{probe:?}");
    assert_eq!(probe.passed, probe.samples, "{probe:?}");
    // Well under the 2 s timeout: the probe stopped reading (bound: 5 × 200 ms).
    for phase in &report.phases {
        assert!(
            phase.p99_ms < 1000,
            "phase {} p99 {} ms",
            phase.name,
            phase.p99_ms
        );
    }
    assert!(report.cleanup.restored, "{:?}", report.cleanup);
}

// --- ramps -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_levels_are_applied_at_the_planned_times() {
    let server = Server::start();
    let healthy = target(Behaviour::Healthy).await;
    let upstream = unused_upstream();
    // Levels 0.2, 0.4, 0.6, 0.8, 1.0 at offsets 0, 0.4, 0.8, 1.2, 1.6 s of a 2 s step.
    let text = format!(
        r#"
name = "ramp"
baseline = "1s"
recovery = "500ms"
[[proxy]]
name = "dep"
listen = "127.0.0.1:0"
upstream = "{upstream}"
[[probe]]
url = "{url}"
interval = "100ms"
timeout = "1s"
[[step]]
name = "ramp"
duration = "2s"
ramp = {{ from = 0.2, to = 1.0, steps = 5 }}
[[step.fault]]
proxy = "dep"
type = "latency"
attributes = {{ latency = 1 }}
"#,
        url = healthy.url("/"),
    );
    let plan = plan(&text);

    // Watch the fault from outside while the drill runs: (time, toxicity) at every change.
    let base = server.base.clone();
    let stop = CancellationToken::new();
    let watcher_stop = stop.clone();
    let watcher = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let url = format!("{base}/proxies/dep/toxics/drill-ramp-latency");
        let mut seen: Vec<(Instant, f64, u64)> = Vec::new();
        let deadline = Instant::now() + DRILL_BOUND;
        while !watcher_stop.is_cancelled() && Instant::now() < deadline {
            if let Ok(resp) = client.get(&url).send().await
                && resp.status().is_success()
            {
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                if let Some(t) = v["toxicity"].as_f64()
                    && seen
                        .last()
                        .is_none_or(|(_, last, _)| (last - t).abs() > 1e-6)
                {
                    seen.push((Instant::now(), t, v["ttl"].as_u64().unwrap_or(0)));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    });
    let report = run(&plan, &server.base).await;
    stop.cancel();
    let seen = watcher.await.unwrap();

    assert_eq!(report.outcome, Outcome::Pass, "{:#}", report_json(&report));
    let levels: Vec<f64> = seen
        .iter()
        .map(|(_, t, _)| (t * 100.0).round() / 100.0)
        .collect();
    assert_eq!(
        levels,
        [0.2, 0.4, 0.6, 0.8, 1.0],
        "levels seen through the API"
    );
    let first = seen[0].0;
    for (i, (at, level, ttl)) in seen.iter().enumerate() {
        let offset = at.duration_since(first).as_millis();
        let planned = 400 * i as u128;
        // Seen by a 20 ms poller, relative to the first sighting (itself possibly late on a
        // loaded machine): not much earlier than planned, no later than 300 ms after it.
        assert!(
            offset + 150 >= planned && offset <= planned + 300,
            "level {level} seen at +{offset} ms, planned +{planned} ms ({seen:?})"
        );
        // Each change restarts the server's TTL clock, so each level carries what is left of
        // the step plus the 5 s margin: the fault never outlives its step by more than that.
        let expected = 2000 + 5000 - 400 * i as u64;
        assert!(
            *ttl <= expected && *ttl + 150 >= expected,
            "level {level}: ttl {ttl} ms, expected about {expected} ms"
        );
    }
    // The runner's own log agrees, within 150 ms of the plan (baseline 1 s).
    let events: Vec<(u64, &str)> = report
        .events
        .iter()
        .map(|e| (e.at_ms, e.what.as_str()))
        .filter(|(_, w)| w.starts_with("inject") || w.starts_with("set") || w.starts_with("remove"))
        .collect();
    let planned = [1000u64, 1400, 1800, 2200, 2600, 3000];
    assert_eq!(events.len(), planned.len(), "{events:#?}");
    for ((at, what), plan_at) in events.iter().zip(planned) {
        assert!(
            *at >= plan_at && *at <= plan_at + 150,
            "{what:?} at {at} ms, planned {plan_at} ms"
        );
    }
    assert_eq!(
        events[0].1,
        "inject latency \"drill-ramp-latency\" into dep (toxicity 0.20)"
    );
    assert_eq!(
        events[4].1,
        "set \"drill-ramp-latency\" on dep to toxicity 1.00"
    );
    assert!(report.cleanup.restored, "{:?}", report.cleanup);
}

// --- reproducibility ----------------------------------------------------------------

/// Runs `text` on an embedded server (seeded by the drill, as `drill run` does) with a
/// pre-made HTTP proxy `api` in front of a healthy target, and returns the report and the
/// proxy's request journal (which outlives the drill because the drill did not create it).
async fn run_embedded_with_journal(text: &str, upstream: SocketAddr) -> (DrillReport, Vec<Value>) {
    let plan = plan(text);
    let embedded = downtime_server::drills::embedded(plan.seed).await.unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let created = client
        .post(format!("{}/proxies", embedded.base))
        .json(&json!({
            "name": "api", "protocol": "http", "listen": "127.0.0.1:0",
            "upstream": upstream.to_string(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let listen = created.json::<Value>().await.unwrap()["listen"]
        .as_str()
        .unwrap()
        .to_owned();
    let plan = DrillPlan::parse(&text.replace("PROXY_ADDR", &listen)).unwrap();
    let report = run(&plan, &embedded.base).await;
    let journal: Vec<Value> = client
        .get(format!("{}/proxies/api/requests?limit=1000", embedded.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    embedded.shutdown().await;
    (report, journal)
}

/// For each probe tick, whether a fault answered the request: every probe request goes
/// through the proxy once and they are 200 ms apart, so the k-th journal entry is the
/// request sent at k × 200 ms.
fn hits_by_tick(journal: &[Value]) -> Vec<(u64, Option<String>)> {
    journal
        .iter()
        .zip(0u64..)
        .map(|(e, tick)| (tick, e["fault"].as_str().map(str::to_owned)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_file_and_seed_inject_the_same_faults_in_the_same_order_at_the_same_requests() {
    let healthy = target(Behaviour::Healthy).await;
    // Two steps: two faults (one a 50 % status fault) in the first, a ramped status fault in
    // the second. Probes tick every 200 ms and every change (1.1 s, 3.1 s, 4.1 s, 5.1 s)
    // falls halfway between two ticks, so each request is clearly before or after it even
    // on a loaded machine.
    let text = r#"
name = "replay"
seed = 1234
baseline = "1100ms"
recovery = "500ms"
[[probe]]
url = "http://PROXY_ADDR/account"
interval = "200ms"
timeout = "1s"
expect = { status = "200-599" }
[[step]]
name = "first"
duration = "2s"
[[step.fault]]
proxy = "api"
type = "http_latency"
attributes = { latency = 5 }
match = { path = "/nothing" }
[[step.fault]]
proxy = "api"
type = "status"
toxicity = 0.5
attributes = { status = 500 }
[[step]]
name = "second"
at = "2s"
duration = "2s"
ramp = { from = 0.3, to = 0.7, steps = 2 }
[[step.fault]]
proxy = "api"
type = "status"
attributes = { status = 503 }
"#;
    // Two runs at once, each on its own embedded server.
    let ((a, journal_a), (b, journal_b)) = tokio::join!(
        run_embedded_with_journal(text, healthy.addr),
        run_embedded_with_journal(text, healthy.addr)
    );

    // The same faults in the same order.
    let (ea, eb) = (event_names(&a), event_names(&b));
    assert_eq!(ea, eb, "events of two runs of the same file and seed");
    let changes: Vec<&String> = ea
        .iter()
        .filter(|e| e.starts_with("inject") || e.starts_with("set") || e.starts_with("remove"))
        .collect();
    assert_eq!(changes.len(), 7, "{changes:#?}");

    // At the same requests: the seeded per-proxy random draws hit the same probe ticks.
    let (ha, hb) = (hits_by_tick(&journal_a), hits_by_tick(&journal_b));
    let in_faults = |h: &[(u64, Option<String>)]| -> Vec<(u64, Option<String>)> {
        h.iter()
            .filter(|(t, _)| (6..=25).contains(t))
            .cloned()
            .collect()
    };
    let (fa, fb) = (in_faults(&ha), in_faults(&hb));
    assert_eq!(fa.len(), 20, "ticks 6..=25 are inside the steps: {ha:?}");
    assert_eq!(fa, fb, "which requests the faults answered");
    let hit = fa.iter().filter(|(_, f)| f.is_some()).count();
    assert!(
        (3..=17).contains(&hit),
        "50 % and ramped faults hit {hit} of 20 requests: {fa:?}"
    );
    // Nothing outside the steps.
    assert!(
        ha.iter()
            .filter(|(t, _)| !(6..=25).contains(t))
            .all(|(_, f)| f.is_none()),
        "{ha:?}"
    );
    assert!(a.cleanup.restored && b.cleanup.restored);
}

// --- issue 14: drills tell the truth -------------------------------------------------

/// Starts a drill in the background (the test changes the server meanwhile).
fn spawn_run(plan: &DrillPlan, base: &str) -> JoinHandle<DrillReport> {
    let (plan, base) = (plan.clone(), base.to_owned());
    tokio::spawn(async move { run(&plan, &base).await })
}

/// Polls `GET path` until `done` holds (bounded).
async fn until(server: &Server, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DRILL_BOUND;
    loop {
        let v = server.get(path).await.json();
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never satisfied the test: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn one_step_drill(probe: &str, upstream: &str, extra: &str) -> String {
    format!(
        r#"
name = "lost faults"
baseline = "1s"
recovery = "1s"
[[proxy]]
name = "dep"
listen = "127.0.0.1:0"
upstream = "{upstream}"
[[probe]]
name = "app"
url = "{probe}"
interval = "100ms"
timeout = "300ms"
[[step]]
name = "slow-dep"
duration = "3s"
[[step.fault]]
proxy = "dep"
type = "latency"
attributes = {{ latency = 10 }}
{extra}
"#
    )
}

/// Issue 14: the runner judged the fault phase *pass* although its faults were gone (the
/// server had lost them). It now checks during the phase: a lost fault makes the phase
/// invalid, and the verdict says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_fault_the_server_lost_makes_its_phase_invalid() {
    let server = Server::start();
    let app = target(Behaviour::Healthy).await;
    let plan = plan(&one_step_drill(&app.url("/"), &unused_upstream(), ""));
    let drill = spawn_run(&plan, &server.base);
    // Once the fault is live, the server loses it (as after a reset by someone else).
    until(&server, "/proxies/dep/toxics", |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|t| t["name"] == "drill-slow-dep-latency"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server
            .delete("/proxies/dep/toxics/drill-slow-dep-latency")
            .await
            .status,
        204
    );
    let report = drill.await.unwrap();
    let json = report_json(&report);
    assert_eq!(report.outcome, Outcome::Fail, "{json:#}");
    let step = &json["phases"][1];
    assert_eq!(step["status"], "invalid", "{json:#}");
    let reason = report.reason.clone().unwrap();
    assert!(
        reason.contains("phase \"slow-dep\" is invalid")
            && reason.contains("\"drill-slow-dep-latency\" on proxy \"dep\" was gone"),
        "{reason}"
    );
    // Found within about a second of the loss, not at the step's end.
    let gone_at = report
        .events
        .iter()
        .find(|e| e.what.contains("was gone"))
        .map(|e| e.at_ms)
        .unwrap();
    assert!(
        (1300..=2900).contains(&gone_at),
        "lost fault seen at {gone_at} ms"
    );
    assert_eq!(json["phases"][0]["status"], "pass");
    assert_eq!(json["phases"][2]["status"], "pass");
    assert!(report.table().contains("INVALID"), "{}", report.table());
    assert!(
        report.junit().contains("invalid: fault"),
        "{}",
        report.junit()
    );
    assert!(report.cleanup.restored, "{:?}", report.cleanup);
}

/// Issue 14: after a failed steady state the table said "baseline 0.0 % pass", marked the
/// step that never ran FAIL and "recovery pass". The baseline fails with the steady state,
/// the others are "not run".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_phases_after_a_failed_steady_state_are_not_run() {
    let server = Server::start();
    let plan = plan(&one_step_drill(&refused_url(), &unused_upstream(), ""));
    let report = run(&plan, &server.base).await;
    let json = report_json(&report);
    let statuses: Vec<&str> = json["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["fail", "not_run", "not_run"], "{json:#}");
    assert!(
        json["phases"][0]["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("steady state not met"),
        "{json:#}"
    );
    let table = report.table();
    let rows: Vec<&str> = table.lines().skip(1).take(3).collect();
    assert!(rows[0].contains("FAIL: steady state not met"), "{table}");
    assert!(
        rows[1].ends_with("not run") && rows[2].ends_with("not run"),
        "{table}"
    );
    assert!(!table.contains("pass"), "{table}");
    let junit = report.junit();
    assert_eq!(junit.matches("<skipped").count(), 2, "{junit}");
}

/// Issue 14: a drill stopped by its stop condition showed its phases' planned windows and
/// JUnit lacked the stop reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_stopped_drill_shows_actual_windows_and_junit_carries_the_stop_reason() {
    let server = Server::start();
    let hang = target(Behaviour::Hang).await;
    let extra =
        "[steady_state]\navailability = 0\n[stop]\nwindow = \"1s\"\navailability_below = 50\n";
    let plan = plan(&one_step_drill(&hang.url("/"), &unused_upstream(), extra));
    let report = run(&plan, &server.base).await;
    let json = report_json(&report);
    assert_eq!(report.outcome, Outcome::Fail, "{json:#}");
    let reason = report.reason.clone().unwrap();
    assert!(reason.starts_with("stop condition"), "{reason}");
    let step = &report.phases[1];
    assert_eq!(step.planned_end_ms, 4000);
    assert!(
        (1900..3500).contains(&step.end_ms),
        "the step ended at {} ms, planned 4000 ms",
        step.end_ms
    );
    assert_eq!(json["phases"][2]["status"], "not_run", "{json:#}");
    assert!(
        report.table().contains("cut short, planned to 4s"),
        "{}",
        report.table()
    );
    let junit = report.junit();
    assert!(
        junit.contains("name=\"run\"><failure message=\"stop condition"),
        "{junit}"
    );
}

/// Issue 14: a drill run next to other changes (another drill's faults, a proxy created by
/// hand) reported "server configuration NOT restored" naming nothing. Only what this drill
/// changed is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_restore_check_ignores_what_others_changed_meanwhile() {
    let server = Server::start();
    let app = target(Behaviour::Healthy).await;
    let upstream = unused_upstream();
    // A proxy that exists before the drill, which the drill faults.
    let shared = server
        .post(
            "/proxies",
            &json!({"name": "shared", "listen": "127.0.0.1:0", "upstream": upstream}).to_string(),
        )
        .await;
    assert_eq!(shared.status, 201);
    let text = one_step_drill(&app.url("/"), &upstream, "")
        .replace("proxy = \"dep\"\ntype", "proxy = \"shared\"\ntype");
    let plan = plan(&text);
    let drill = spawn_run(&plan, &server.base);
    until(&server, "/proxies/shared/toxics", |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|t| t["name"] == "drill-lock"))
    })
    .await;
    // Meanwhile, someone else adds a fault to the shared proxy and creates a proxy.
    server
        .toxic(
            "shared",
            json!({"name": "theirs", "type": "latency", "attributes": {"latency": 1}}),
        )
        .await;
    let other = server
        .post(
            "/proxies",
            &json!({"name": "other", "listen": "127.0.0.1:0", "upstream": upstream}).to_string(),
        )
        .await;
    assert_eq!(other.status, 201);
    let report = drill.await.unwrap();
    assert!(report.cleanup.restored, "{:?}", report.cleanup);
    assert_eq!(report.outcome, Outcome::Pass, "{:#}", report_json(&report));
    assert!(report.table().contains("server configuration restored"));
    // What is ours is checked, and named when left behind.
    let before = json!({"shared": {"toxics": []}});
    let after = json!({
        "shared": {"toxics": [{"name": "drill-slow-dep-latency"}, {"name": "theirs"}]},
        "dep": {"toxics": []},
    });
    let ours = ["drill-slow-dep-latency".to_owned(), "drill-lock".to_owned()]
        .into_iter()
        .collect();
    assert_eq!(
        runner::not_restored(&before, &after, &["shared".into()], &["dep".into()], &ours),
        [
            "proxy \"dep\" created by the drill still exists",
            "proxy \"shared\": fault \"drill-slow-dep-latency\" of the drill is still there",
        ]
    );
}

/// Issue 14: failure reasons were split per millisecond ("took 1501ms", "took 1502ms"...),
/// hiding the real top reasons. Answers over the latency budget share a band.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_latency_failures_are_bucketed_by_band() {
    let server = Server::start();
    let slow = target(Behaviour::Slow).await;
    let text = one_step_drill(
        &slow.url("/"),
        &unused_upstream(),
        "[steady_state]\navailability = 0\n",
    )
    .replace(
        "timeout = \"300ms\"",
        "timeout = \"2s\"\n[probe.expect]\nlatency = \"200ms\"",
    );
    let report = run(&plan(&text), &server.base).await;
    let probe = &report.probes[0];
    assert!(probe.samples >= 30, "{probe:?}");
    let reasons: Vec<&str> = probe.failures.iter().map(|(r, _)| r.as_str()).collect();
    assert!(
        !reasons.is_empty() && reasons.len() <= 3,
        "a few bands for answers of 250-450 ms (one reason per ms before): {reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .all(|r| *r == "took 200-300ms, over the 200ms budget"
                || *r == "took 300-400ms, over the 200ms budget"
                || *r == "took 400-800ms, over the 200ms budget"),
        "{reasons:?}"
    );
    let counted: usize = probe.failures.iter().map(|(_, n)| n).sum();
    assert_eq!(counted, probe.samples - probe.passed, "{probe:?}");
}

/// Issue 14: incident timelines read like runner internals (`inject maintenance
/// "drill-maintenance-maintenance" into ...`) and flipped Identified → Monitoring →
/// Identified between back-to-back steps. Updates are written for people, one status per
/// phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_incident_updates_are_for_people_with_one_status_per_phase() {
    let server = Server::start();
    let app = target(Behaviour::Healthy).await;
    let text = format!(
        r#"
name = "checkout-maintenance"
baseline = "1s"
recovery = "1s"
[[proxy]]
name = "payments"
protocol = "http"
listen = "127.0.0.1:0"
[[probe]]
url = "{app}"
interval = "100ms"
[[step]]
name = "maintenance"
duration = "1s"
[[step.fault]]
proxy = "payments"
type = "maintenance"
[[step]]
name = "errors"
at = "1s"
duration = "1s"
[[step.fault]]
proxy = "payments"
type = "status"
attributes = {{ status = 500 }}
"#,
        app = app.url("/")
    );
    let report = run(&plan(&text), &server.base).await;
    assert_eq!(report.outcome, Outcome::Pass, "{:#}", report_json(&report));
    let drills = server.get("/history/drills").await.json();
    let incident = drills[0]["incident"].as_i64().unwrap();
    let incident = server.get(&format!("/incidents/{incident}")).await.json();
    let updates: Vec<(String, String)> = incident["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["status"].as_str().unwrap().to_owned(),
                u["body"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let statuses: Vec<&str> = updates.iter().map(|u| u.0.as_str()).collect();
    // Newest first or oldest first: either way, no flip back to identified.
    let mut order = statuses.clone();
    if order.first() == Some(&"resolved") {
        order.reverse();
    }
    let mut seen = order.clone();
    seen.dedup();
    assert_eq!(
        seen,
        ["identified", "monitoring", "resolved"],
        "{updates:#?}"
    );
    let bodies: Vec<&str> = updates.iter().map(|u| u.1.as_str()).collect();
    assert!(
        bodies.contains(
            &"payments: maintenance answers injected by drill \"checkout-maintenance\" (step 1 of 2)."
        ),
        "{bodies:#?}"
    );
    assert!(
        bodies.iter().any(|b| b.contains(
            "payments: HTTP 500 errors injected by drill \"checkout-maintenance\" (step 2 of 2)."
        ) && b.contains("maintenance answers removed")),
        "back-to-back steps make one update: {bodies:#?}"
    );
    assert!(
        bodies
            .iter()
            .all(|b| !b.contains("drill-maintenance-maintenance")),
        "{bodies:#?}"
    );
}

/// Issue 14: a drill whose runner was killed stayed "running" for ever and its incident open.
/// Without heartbeats for `ABANDON_AFTER` the server marks it abandoned and resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_drill_whose_runner_went_silent_is_abandoned() {
    let server = Server::start();
    let started = server
        .post("/history/drills", r#"{"name": "killed"}"#)
        .await
        .json();
    let id = started["id"].as_i64().unwrap();
    let phase = json!({"phase": "outage", "text": "dep: maintenance answers injected.",
        "faults": [{"proxy": "dep", "toxic": {"name": "m", "type": "maintenance"}}]});
    let answer = server
        .post(&format!("/history/drills/{id}/phases"), &phase.to_string())
        .await
        .json();
    let incident = answer["incident"]["id"].as_i64().unwrap();
    // The runner dies here: no heartbeat, no end.
    let drill = until(&server, &format!("/history/drills/{id}"), |v| {
        v["outcome"] == "abandoned"
    })
    .await;
    assert!(
        drill["reason"]
            .as_str()
            .unwrap()
            .contains("stopped reporting"),
        "{drill:#}"
    );
    let incident = server.get(&format!("/incidents/{incident}")).await.json();
    assert_eq!(incident["status"], "resolved", "{incident:#}");
}

/// Issue 9: a drill probes an `https://` endpoint whose certificate comes from a CA the
/// run trusts (`drill run --extra-ca`); without it, every probe fails on the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_probes_reach_https_endpoints_trusting_extra_cas() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let receiver = support::HttpsReceiver::start(dir.path()).await;
    let url = format!("https://127.0.0.1:{}/health", receiver.addr.port());
    let plan = plan(&one_step_drill(&url, &unused_upstream(), ""));
    let trusted = tokio::time::timeout(
        DRILL_BOUND,
        runner::run(
            &plan,
            &server.base,
            CancellationToken::new(),
            RunOptions {
                quiet: true,
                extra_ca: vec![receiver.ca_cert.clone()],
                ..RunOptions::default()
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let json = report_json(&trusted);
    assert_eq!(trusted.outcome, Outcome::Pass, "{json:#}");
    let untrusted = run(&plan, &server.base).await;
    assert_eq!(
        untrusted.outcome,
        Outcome::Fail,
        "{:#}",
        report_json(&untrusted)
    );
}

/// Issue 9: a server with an API token runs drills that carry it (scheduled ones get the
/// server's own); without it the drill cannot even start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_drills_carry_the_api_token() {
    let server = Server::start_with(downtime_server::ServeOptions {
        api_token: Some("drill-token".to_owned()),
        grace: Duration::from_secs(1),
        ..downtime_server::ServeOptions::default()
    });
    let app = target(Behaviour::Healthy).await;
    let plan = plan(&one_step_drill(&app.url("/"), &unused_upstream(), ""));
    let with_token = tokio::time::timeout(
        DRILL_BOUND,
        runner::run(
            &plan,
            &server.base,
            CancellationToken::new(),
            RunOptions {
                quiet: true,
                api_token: Some("drill-token".to_owned()),
                ..RunOptions::default()
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        with_token.outcome,
        Outcome::Pass,
        "{:#}",
        report_json(&with_token)
    );
    let refused = runner::run(
        &plan,
        &server.base,
        CancellationToken::new(),
        RunOptions {
            quiet: true,
            ..RunOptions::default()
        },
    )
    .await;
    let Err(err) = refused else {
        panic!("a drill without the token started");
    };
    assert!(err.to_string().contains("401"), "{err}");
}
