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

#![allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]

mod support;

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

use support::Server;

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
}

async fn target(behaviour: Behaviour) -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                read_head(&mut stream).await;
                let answer: &[u8] = match behaviour {
                    Behaviour::Healthy => {
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
                if matches!(behaviour, Behaviour::Healthy) {
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
