//! Runs a drill against a downtime API: baseline and steady-state check, the fault timeline
//! with stop conditions, recovery, and a cleanup that always runs.
//!
//! Every fault the runner injects carries a TTL a little longer than its step, so even if the
//! runner dies the server removes them by itself. A `drill-lock` marker (a no-op toxic with
//! toxicity 0, created with the API's own duplicate check) on each touched proxy keeps two
//! drills off the same proxy.

use std::collections::{BTreeSet, HashSet};
use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use downtime_model::drill::{DrillPlan, fault_name};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::probes::{InFlight, spawn_probes};
use super::report::{Cleanup, DrillReport, Event, Outcome, ProbeSummary};
use super::timeline::{Action, describe, for_people, timeline};
use super::verdict::{self, PhaseRun, PhaseStatus, RecentStats, Sample, Tally};
use crate::history::Timestamp;
use crate::history::client::{DrillRecorder, FaultChange};

/// Name of the marker toxic that locks a proxy for one drill.
pub const LOCK_NAME: &str = "drill-lock";
/// Extra life given to injected faults beyond their step, in case the runner dies.
const TTL_MARGIN: Duration = Duration::from_secs(5);
/// How often stop conditions, halts and progress are checked.
const TICK: Duration = Duration::from_millis(250);
/// Probe samples waiting for the runner; probes wait when it is full (the runner drains it
/// continuously while it waits, so it fills only during an API call).
const SAMPLE_QUEUE: usize = 4096;
/// Samples taken from the queue at once.
const SAMPLE_BATCH: usize = 256;
/// How often the runner asks the server whether its faults are still there.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// `origin + offset`, or a century later when that does not fit (a valid plan never gets
/// near: its offsets are at most a few days).
fn deadline(origin: Instant, offset: Duration) -> Instant {
    origin
        .checked_add(offset)
        .or_else(|| origin.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(origin)
}

/// User-Agent of a drill started by hand (`downtime drill run`).
const DRILL_AGENT: &str = concat!("downtime-drill/", env!("CARGO_PKG_VERSION"));
/// User-Agent of a drill started by a `[[schedule]]`: history records it as `schedule`.
const SCHEDULE_AGENT: &str = concat!("downtime-schedule/", env!("CARGO_PKG_VERSION"));

/// A drill that could not start; nothing was injected.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// An HTTP client of the downtime API: `agent` as User-Agent, and the API token (if any)
/// on every request, never in a URL (URLs end up in error messages and logs).
fn api_client(agent: &'static str, timeout: Duration, token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token
        && let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
    {
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .user_agent(agent)
        .timeout(timeout)
        .default_headers(headers)
        .build()
        .unwrap_or_default()
}

/// A small client of the downtime API.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    /// The User-Agent sent, which tells the server who makes the changes.
    agent: &'static str,
}

impl Api {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:8474`), as a drill run by hand.
    pub fn new(base: &str) -> Self {
        Api::as_agent(base, DRILL_AGENT)
    }

    /// A client sending `agent` as its User-Agent: the server records who made each change
    /// from it (`downtime-drill/` is a drill, `downtime-schedule/` a scheduled one).
    fn as_agent(base: &str, agent: &'static str) -> Self {
        Api::with_token(base, agent, None)
    }

    /// As [`Api::as_agent`], sending `Authorization: Bearer TOKEN` when the API needs one.
    fn with_token(base: &str, agent: &'static str, token: Option<&str>) -> Self {
        let client = api_client(agent, Duration::from_secs(10), token);
        Api {
            client,
            base: base.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {path}: cannot reach {}: {e}", self.base))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(text);
            return Err(format!(
                "{method} {path}: HTTP {}: {}",
                status.as_u16(),
                detail.trim()
            ));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> Result<Value, String> {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// The halt counter; a change means `downtime halt` was called.
    async fn halts(&self) -> Option<u64> {
        self.get("/halt").await.ok()?.get("halts")?.as_u64()
    }
}

fn enc(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Live progress on stderr: one rewritten line on a terminal, plain lines otherwise.
struct Progress {
    tty: bool,
    quiet: bool,
    last_plain: Option<Instant>,
    last_phase: String,
}

impl Progress {
    fn show(
        &mut self,
        phase: &str,
        elapsed: Duration,
        total: Duration,
        tally: &Tally,
        in_flight: usize,
    ) {
        if self.quiet {
            return;
        }
        let stats = tally.recent_stats(elapsed.saturating_sub(Duration::from_secs(5)));
        let line = progress_line(phase, elapsed, total, &stats, in_flight);
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        } else {
            let due = self
                .last_plain
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
            if due || phase != self.last_phase {
                let _ = writeln!(err, "{line}");
                self.last_plain = Some(Instant::now());
            }
        }
        self.last_phase = phase.to_owned();
    }

    fn event(&mut self, text: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{text}");
    }

    fn done(&mut self) {
        if self.tty && !self.quiet {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// The progress line: answered probes of the last 5 s (passed, failed, of which timed out)
/// and the requests still under way, so a hanging app never reads as "100 % ok".
pub fn progress_line(
    phase: &str,
    elapsed: Duration,
    total: Duration,
    stats: &RecentStats,
    in_flight: usize,
) -> String {
    let answered = stats.ok + stats.failed;
    let probes = if answered == 0 {
        "probes: no answer yet (last 5s)".to_owned()
    } else {
        let rate = stats.ok as f64 * 100.0 / answered as f64;
        format!(
            "probes ok {rate:>5.1}% of {answered} (last 5s), {} failed ({} timed out)  p95 {}ms",
            stats.failed,
            stats.timed_out,
            stats.p95.as_millis()
        )
    };
    format!(
        "[{phase}] {:>5.1}s / {:.1}s  {probes}, {in_flight} in flight",
        elapsed.as_secs_f64(),
        total.as_secs_f64()
    )
}

/// A fault the runner injected and has not removed yet.
#[derive(Debug, Clone, PartialEq)]
struct Injected {
    proxy: String,
    name: String,
    /// Index of its step in the plan.
    step: usize,
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// No progress output (tests, scheduled runs).
    pub quiet: bool,
    /// Started by a schedule, not by a person: changes are recorded with actor `schedule`.
    pub scheduled: bool,
    /// CA files (PEM) probes of `https://` endpoints trust besides the system's roots
    /// (`drill run --extra-ca`, the server's `--extra-ca` for scheduled runs).
    pub extra_ca: Vec<std::path::PathBuf>,
    /// The API token, sent as `Authorization: Bearer` (`drill run --api-token`, the
    /// server's own token for scheduled runs).
    pub api_token: Option<String>,
}

struct Run<'a> {
    plan: &'a DrillPlan,
    api: Api,
    origin: Instant,
    events: Vec<Event>,
    injected: Vec<Injected>,
    locked: Vec<String>,
    created: Vec<String>,
    /// Proxies the drill locked or faulted (for the restore check).
    touched: Vec<String>,
    tally: Tally,
    /// What the runner saw of each phase (by the tally's phase index).
    phase_runs: Vec<PhaseRun>,
    rx: mpsc::Receiver<Sample>,
    in_flight: InFlight,
    last_check: Option<Instant>,
    progress: Progress,
    /// Best-effort reports to the server's history (a no-op against plain Toxiproxy).
    history: DrillRecorder,
}

impl Run<'_> {
    fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    fn log(&mut self, what: String) {
        let at = self.elapsed();
        self.log_at(at, what);
    }

    fn log_at(&mut self, at: Duration, what: String) {
        let at = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        self.progress
            .event(&format!("{:>7.1}s  {what}", at as f64 / 1000.0));
        self.events.push(Event { at_ms: at, what });
    }

    /// Folds every queued sample into the tally (and hands it to the history).
    fn drain(&mut self) {
        let mut batch = Vec::new();
        while let Ok(s) = self.rx.try_recv() {
            batch.push(s);
            if batch.len() >= SAMPLE_BATCH {
                self.absorb(&mut batch);
            }
        }
        self.absorb(&mut batch);
    }

    fn absorb(&mut self, batch: &mut Vec<Sample>) {
        if batch.is_empty() {
            return;
        }
        self.history
            .samples(batch.iter().map(|s| (s.probe, s.at, s.ok, s.latency)));
        for s in batch.drain(..) {
            self.tally.add(s);
        }
    }

    /// Sleeps until `until` while folding samples in as they arrive; `false` on interrupt.
    async fn sleep_draining(&mut self, until: Instant, interrupt: &CancellationToken) -> bool {
        let sleep = tokio::time::sleep_until(until);
        tokio::pin!(sleep);
        let mut batch = Vec::with_capacity(SAMPLE_BATCH);
        let mut open = true;
        loop {
            tokio::select! {
                () = interrupt.cancelled() => return false,
                () = &mut sleep => return true,
                got = self.rx.recv_many(&mut batch, SAMPLE_BATCH), if open => {
                    open = got > 0;
                    self.absorb(&mut batch);
                }
            }
        }
    }

    fn phase_name(&self, elapsed: Duration) -> String {
        if elapsed < self.plan.baseline {
            return "baseline".to_owned();
        }
        let offset = elapsed - self.plan.baseline;
        let active: Vec<&str> = self
            .plan
            .steps
            .iter()
            .filter(|s| s.at <= offset && offset < s.at.saturating_add(s.duration))
            .map(|s| s.name.as_str())
            .collect();
        if !active.is_empty() {
            active.join("+")
        } else if offset < self.plan.fault_window() {
            "between steps".to_owned()
        } else {
            "recovery".to_owned()
        }
    }

    /// Waits until `until`, watching for interrupts, halts and the stop condition.
    async fn wait(
        &mut self,
        until: Instant,
        interrupt: &CancellationToken,
        halts: Option<u64>,
        faults_live: bool,
    ) -> Option<(Outcome, String)> {
        loop {
            self.drain();
            let elapsed = self.elapsed();
            let phase = self.phase_name(elapsed);
            let in_flight = self.in_flight.count();
            self.progress
                .show(&phase, elapsed, self.plan.total(), &self.tally, in_flight);
            if faults_live
                && let Some(stop) = self.plan.stop
                && elapsed.saturating_sub(self.plan.baseline) >= stop.window
            {
                let from = elapsed.saturating_sub(stop.window).max(self.plan.baseline);
                if let Some(a) = self.tally.availability(from, elapsed)
                    && a < stop.availability_below
                {
                    return Some((
                        Outcome::Fail,
                        format!(
                            "stop condition in phase {phase:?}: availability {a:.1}% over the last {}s is below {}%",
                            stop.window.as_secs_f64(),
                            stop.availability_below
                        ),
                    ));
                }
            }
            let now = Instant::now();
            if now >= until {
                return None;
            }
            let next = until.min(deadline(now, TICK));
            if !self.sleep_draining(next, interrupt).await {
                return Some((Outcome::Aborted, "interrupted by a signal".to_owned()));
            }
            if next >= until {
                // On time for the next action: no network call in between.
                return None;
            }
            if self.halted_since(halts).await {
                return Some((Outcome::Aborted, "halted (downtime halt)".to_owned()));
            }
            if self.last_check.is_none_or(|t| t.elapsed() >= CHECK_EVERY) {
                self.last_check = Some(Instant::now());
                let lost = self.lost_faults().await;
                // A halt that lands between the check above and this one removes the
                // faults too: that is the halt, not a lost fault.
                if !lost.is_empty() && self.halted_since(halts).await {
                    return Some((Outcome::Aborted, "halted (downtime halt)".to_owned()));
                }
                for (fault, at, why) in lost {
                    self.lose(&fault, at, &why);
                }
            }
        }
    }

    /// Whether someone ran `downtime halt` since the server counted `before` halts.
    async fn halted_since(&self, before: Option<u64>) -> bool {
        match before {
            Some(before) => self.api.halts().await.is_some_and(|now| now != before),
            None => false,
        }
    }

    /// Asks the server whether every injected fault is still there, and returns the ones it
    /// lost (a restart, someone's reset) with when and why: each makes its step's phase
    /// invalid, as it no longer tests what the plan says.
    async fn lost_faults(&self) -> Vec<(Injected, Duration, String)> {
        let mut gone = Vec::new();
        let proxies: BTreeSet<String> = self.injected.iter().map(|f| f.proxy.clone()).collect();
        for proxy in proxies {
            let at = self.elapsed();
            let answer = self
                .api
                .get(&format!("/proxies/{}/toxics", enc(&proxy)))
                .await;
            let live: Option<HashSet<String>> = answer.as_ref().ok().map(|list| {
                list.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            });
            let lost: Vec<Injected> = self
                .injected
                .iter()
                .filter(|f| f.proxy == proxy && live.as_ref().is_none_or(|l| !l.contains(&f.name)))
                .cloned()
                .collect();
            for fault in lost {
                let why = match &answer {
                    Err(e) if !e.contains("HTTP 404") => format!("the server did not answer ({e})"),
                    _ => "the server no longer has it".to_owned(),
                };
                gone.push((fault, at, why));
            }
        }
        gone
    }

    /// Records that the server lost `fault` at `at`: the step's phase is invalid.
    fn lose(&mut self, fault: &Injected, at: Duration, why: &str) {
        self.injected.retain(|f| f != fault);
        let step = &self.plan.steps[fault.step];
        let into = at.saturating_sub(self.plan.baseline.saturating_add(step.at));
        let text = format!(
            "fault {:?} on proxy {:?} was gone at {:.1}s ({:.1}s into step {:?}): {why}; the phase did not test what was planned",
            fault.name,
            fault.proxy,
            at.as_secs_f64(),
            into.as_secs_f64(),
            step.name
        );
        if let Some(run) = self.phase_runs.get_mut(fault.step + 1)
            && run.invalid.is_empty()
        {
            run.invalid.push(text.clone());
        }
        self.history.fault_changed(FaultChange::Removed {
            proxy: fault.proxy.clone(),
            name: fault.name.clone(),
        });
        self.log_at(at, text);
    }

    async fn apply(&mut self, action: &Action) -> Result<(), String> {
        let started = self.elapsed();
        let change = match action {
            Action::Apply {
                step,
                fault,
                toxicity,
            } => {
                let s = &self.plan.steps[*step];
                let f = &s.faults[*fault];
                let name = fault_name(s, f);
                let r = &f.request;
                let ttl = s.duration.saturating_add(TTL_MARGIN);
                let mut body = json!({
                    "name": name,
                    "type": r.kind,
                    "ttl": u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                });
                if let Some(stream) = &r.stream {
                    body["stream"] = json!(stream);
                }
                if let Some(t) = toxicity.or(r.toxicity) {
                    body["toxicity"] = json!(t);
                }
                if let Some(a) = &r.attributes {
                    body["attributes"] = a.clone();
                }
                if let Some(m) = &r.matcher {
                    body["match"] = serde_json::to_value(m).unwrap_or(Value::Null);
                }
                if let Some(n) = r.first_n {
                    body["first_n"] = json!(n);
                }
                if let Some(n) = r.every_nth {
                    body["every_nth"] = json!(n);
                }
                let proxy = f.proxy.clone();
                self.api
                    .post(&format!("/proxies/{}/toxics", enc(&proxy)), body.clone())
                    .await?;
                self.injected.push(Injected {
                    proxy: proxy.clone(),
                    name,
                    step: *step,
                });
                if let Some(run) = self.phase_runs.get_mut(step + 1) {
                    run.ran = true;
                }
                FaultChange::Applied { proxy, body }
            }
            Action::SetToxicity {
                step,
                fault,
                toxicity,
            } => {
                let s = &self.plan.steps[*step];
                let f = &s.faults[*fault];
                let path = format!(
                    "/proxies/{}/toxics/{}",
                    enc(&f.proxy),
                    enc(&fault_name(s, f))
                );
                // A change restarts the server's TTL clock: give what is left of the step plus
                // the margin, so a ramped fault outlives a dead runner no longer than any other.
                let end = self
                    .plan
                    .baseline
                    .saturating_add(s.at)
                    .saturating_add(s.duration);
                let ttl = end
                    .saturating_sub(self.elapsed())
                    .saturating_add(TTL_MARGIN);
                let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                let name = fault_name(s, f);
                let mine = self
                    .injected
                    .iter()
                    .find(|i| i.proxy == f.proxy && i.name == name)
                    .cloned();
                // A fault the server already lost is not re-created: its phase is invalid.
                let Some(mine) = mine else { return Ok(()) };
                if let Err(e) = self
                    .api
                    .post(&path, json!({ "toxicity": toxicity, "ttl": ttl }))
                    .await
                {
                    if e.contains("HTTP 404") {
                        self.lose(&mine, started, "the server no longer has it");
                        return Ok(());
                    }
                    return Err(e);
                }
                FaultChange::Toxicity {
                    proxy: f.proxy.clone(),
                    name: fault_name(s, f),
                    toxicity: *toxicity,
                }
            }
            Action::Remove { step, fault } => {
                let s = &self.plan.steps[*step];
                let f = &s.faults[*fault];
                let name = fault_name(s, f);
                let path = format!("/proxies/{}/toxics/{}", enc(&f.proxy), enc(&name));
                let mine = self
                    .injected
                    .iter()
                    .find(|i| i.proxy == f.proxy && i.name == name)
                    .cloned();
                let Some(mine) = mine else { return Ok(()) };
                if let Err(e) = self.api.delete(&path).await {
                    if e.contains("HTTP 404") {
                        self.lose(&mine, started, "the server no longer has it");
                        return Ok(());
                    }
                    return Err(e);
                }
                self.injected.retain(|i| i != &mine);
                FaultChange::Removed {
                    proxy: f.proxy.clone(),
                    name,
                }
            }
        };
        // Logged at the moment the call was issued: the time the plan is judged by.
        let text = describe(self.plan, action);
        self.history.fault_changed(change);
        self.log_at(started, text);
        Ok(())
    }

    /// Removes every fault still injected (first thing on an abort, so faults never wait for
    /// in-flight probes to end).
    async fn remove_faults(&mut self, cleanup: &mut Cleanup) {
        for Injected { proxy, name, .. } in std::mem::take(&mut self.injected) {
            match self
                .api
                .delete(&format!("/proxies/{}/toxics/{}", enc(&proxy), enc(&name)))
                .await
            {
                Ok(_) => cleanup.removed_faults += 1,
                Err(e) if e.contains("HTTP 404") => {}
                Err(e) => cleanup.problems.push(e),
            }
        }
    }

    /// Removes every injected fault, lock and created proxy; never gives up early.
    async fn cleanup(&mut self, snapshot: &Value, mut cleanup: Cleanup) -> Cleanup {
        self.remove_faults(&mut cleanup).await;
        for proxy in std::mem::take(&mut self.locked) {
            if let Err(e) = self
                .api
                .delete(&format!("/proxies/{}/toxics/{LOCK_NAME}", enc(&proxy)))
                .await
                && !e.contains("HTTP 404")
            {
                cleanup.problems.push(e);
            }
        }
        let created = self.created.clone();
        for proxy in std::mem::take(&mut self.created) {
            match self.api.delete(&format!("/proxies/{}", enc(&proxy))).await {
                Ok(_) => cleanup.deleted_proxies += 1,
                Err(e) => cleanup.problems.push(e),
            }
        }
        match self.api.get("/proxies").await {
            Ok(after) => {
                let ours = ours(self.plan);
                let left = not_restored(snapshot, &after, &self.touched, &created, &ours);
                cleanup.restored = left.is_empty();
                cleanup.problems.extend(left);
            }
            Err(e) => {
                cleanup.problems.push(e);
                cleanup.restored = false;
            }
        }
        cleanup
    }
}

/// The fault names this drill may leave on a proxy: its faults and its lock.
fn ours(plan: &DrillPlan) -> HashSet<String> {
    let mut names: HashSet<String> = plan
        .steps
        .iter()
        .flat_map(|s| s.faults.iter().map(move |f| fault_name(s, f)))
        .collect();
    names.insert(LOCK_NAME.to_owned());
    names
}

/// What this drill changed and did not put back, named: a proxy it created that is still
/// there, a proxy it touched that is gone, a fault or lock of its own still on a proxy.
/// Changes made by others meanwhile (another drill's faults, a proxy created by hand) are
/// not this drill's to restore and are ignored.
pub fn not_restored(
    before: &Value,
    after: &Value,
    touched: &[String],
    created: &[String],
    ours: &HashSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for proxy in created {
        if after.get(proxy).is_some() {
            problems.push(format!("proxy {proxy:?} created by the drill still exists"));
        }
    }
    let names = |p: &Value| -> HashSet<String> {
        p.get("toxics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    for proxy in touched.iter().filter(|p| !created.contains(p)) {
        let Some(was) = before.get(proxy) else {
            continue;
        };
        let Some(now) = after.get(proxy) else {
            problems.push(format!(
                "proxy {proxy:?} is gone (it existed before the drill)"
            ));
            continue;
        };
        let had = names(was);
        let mut left: Vec<String> = names(now)
            .into_iter()
            .filter(|n| ours.contains(n) && !had.contains(n))
            .collect();
        left.sort();
        for name in left {
            problems.push(format!(
                "proxy {proxy:?}: fault {name:?} of the drill is still there"
            ));
        }
    }
    problems
}

/// Runs `plan` against the API at `base`. Setup problems (unreachable server, unknown proxy,
/// proxy locked by another drill) are returned before anything is injected.
pub async fn run(
    plan: &DrillPlan,
    base: &str,
    interrupt: CancellationToken,
    options: RunOptions,
) -> Result<DrillReport, SetupError> {
    let agent = if options.scheduled {
        SCHEDULE_AGENT
    } else {
        DRILL_AGENT
    };
    let api = Api::with_token(base, agent, options.api_token.as_deref());
    api.get("/version")
        .await
        .map_err(|e| SetupError(format!("cannot reach the downtime API: {e}")))?;
    let snapshot = api
        .get("/proxies")
        .await
        .map_err(|e| SetupError(e.to_string()))?;
    let halts = api.halts().await;
    let started_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));

    let (tx, rx) = mpsc::channel(SAMPLE_QUEUE);
    let keep = plan.stop.map_or(Duration::ZERO, |s| s.window);
    let mut run = Run {
        plan,
        api: api.clone(),
        origin: Instant::now(),
        events: Vec::new(),
        injected: Vec::new(),
        locked: Vec::new(),
        created: Vec::new(),
        touched: Vec::new(),
        tally: Tally::new(verdict::phases(plan), plan.probes.len(), keep),
        phase_runs: vec![PhaseRun::default(); verdict::phases(plan).len()],
        rx,
        in_flight: InFlight::default(),
        last_check: None,
        progress: Progress {
            tty: std::io::stderr().is_terminal(),
            quiet: options.quiet,
            last_plain: None,
            last_phase: String::new(),
        },
        history: DrillRecorder::disabled(),
    };

    // Setup: proxies of the drill, then lock every touched proxy. Undo on failure.
    let setup = async {
        for (config, toxics) in &plan.proxies {
            let mut body = serde_json::to_value(config).map_err(|e| e.to_string())?;
            body["toxics"] = serde_json::to_value(toxics).map_err(|e| e.to_string())?;
            run.api.post("/proxies", body).await?;
            run.created.push(config.name.clone());
        }
        let touched: HashSet<&str> = plan
            .steps
            .iter()
            .flat_map(|s| s.faults.iter().map(|f| f.proxy.as_str()))
            .collect();
        let lock_ttl = plan
            .total()
            .saturating_add(TTL_MARGIN)
            .saturating_add(Duration::from_secs(60));
        let mut touched: Vec<&str> = touched.into_iter().collect();
        touched.sort_unstable();
        run.touched = touched.iter().map(|p| (*p).to_owned()).collect();
        for proxy in touched {
            run.api
                .get(&format!("/proxies/{}", enc(proxy)))
                .await
                .map_err(|e| format!("proxy {proxy:?} of the drill: {e}"))?;
            let lock = json!({
                "name": LOCK_NAME, "type": "noop", "toxicity": 0,
                "ttl": u64::try_from(lock_ttl.as_millis()).unwrap_or(u64::MAX),
            });
            match run
                .api
                .post(&format!("/proxies/{}/toxics", enc(proxy)), lock)
                .await
            {
                Ok(_) => run.locked.push(proxy.to_owned()),
                Err(e) if e.contains("HTTP 409") => {
                    return Err(format!(
                        "proxy {proxy:?} is in use by another drill (it has a {LOCK_NAME} toxic)"
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        Ok::<(), String>(())
    }
    .await;
    if let Err(e) = setup {
        run.cleanup(&snapshot, Cleanup::default()).await;
        return Err(SetupError(e));
    }

    let stop_probes = CancellationToken::new();
    let tracker = TaskTracker::new();
    let probe_client = match super::probes::client(&options.extra_ca) {
        Ok(c) => c,
        Err(e) => {
            run.cleanup(&snapshot, Cleanup::default()).await;
            return Err(SetupError(e));
        }
    };
    run.origin = Instant::now();
    let probes = plan.probes.iter();
    run.history = DrillRecorder::start(
        base,
        api_client(
            run.api.agent,
            Duration::from_secs(5),
            options.api_token.as_deref(),
        ),
        &plan.name,
        plan.seed,
        probes.map(|p| (p.name.clone(), p.url.clone())).collect(),
        Timestamp::now(),
    );
    spawn_probes(
        probe_client,
        plan.probes.clone(),
        run.origin,
        stop_probes.clone(),
        &tracker,
        tx,
        &run.in_flight,
    );
    run.log(format!(
        "drill {:?} started (seed {}), baseline {}s",
        plan.name,
        plan.seed,
        plan.baseline.as_secs_f64()
    ));

    let mut outcome: Option<(Outcome, String)> = None;
    run.phase_runs[0].ran = true;
    let recovery = run.phase_runs.len() - 1;
    // Baseline, then the steady-state check.
    if let Some(stop) = run
        .wait(
            deadline(run.origin, plan.baseline),
            &interrupt,
            halts,
            false,
        )
        .await
    {
        outcome = Some(stop);
    } else {
        run.drain();
        let required = plan
            .steady_state
            .or(plan.verdict.baseline.availability)
            .unwrap_or(100.0);
        // Phase 0 is the baseline, [0, baseline).
        let seen = run.tally.phase_availability(0);
        match seen {
            Some(a) if a >= required => run.log(format!(
                "steady state met: availability {a:.1}% (required {required}%)"
            )),
            Some(a) => {
                run.phase_runs[0].failed.push(format!(
                    "steady state not met: availability {a:.1}% is below {required}%"
                ));
                outcome = Some((
                    Outcome::Fail,
                    format!(
                        "steady state not met before any fault: availability {a:.1}% is below {required}%; nothing was injected"
                    ),
                ));
            }
            None => {
                run.phase_runs[0]
                    .failed
                    .push("steady state not met: no probe answered".to_owned());
                outcome = Some((
                    Outcome::Fail,
                    "steady state not met: no probe answered during the baseline; nothing was injected".to_owned(),
                ));
            }
        }
    }

    // The fault timeline.
    if outcome.is_none() {
        let planned_all = timeline(plan);
        let mut headlines: Vec<String> = Vec::new();
        for (i, planned) in planned_all.iter().enumerate() {
            let faults_live = !run.injected.is_empty();
            if let Some(stop) = run
                .wait(
                    deadline(run.origin, planned.at),
                    &interrupt,
                    halts,
                    faults_live,
                )
                .await
            {
                outcome = Some(stop);
                break;
            }
            if let Err(e) = run.apply(&planned.action).await {
                outcome = Some((Outcome::Aborted, format!("could not change a fault: {e}")));
                break;
            }
            headlines.extend(for_people(plan, &planned.action));
            // Actions due at the same time (a step ending as the next begins) make one
            // update of the incident, so its status does not flip in between.
            if planned_all
                .get(i + 1)
                .is_none_or(|next| next.at != planned.at)
            {
                let phase = run.phase_name(planned.at);
                let text = std::mem::take(&mut headlines).join(" ");
                run.history.phase(&phase, &text);
            }
        }
    }
    // Recovery (only when the timeline ran to its end).
    if outcome.is_none() {
        run.phase_runs[recovery].ran = true;
        let end = deadline(
            run.origin,
            plan.baseline
                .saturating_add(plan.fault_window())
                .saturating_add(plan.recovery),
        );
        outcome = run.wait(end, &interrupt, halts, false).await;
    }
    let cut_short = outcome.is_some();
    let ended_at = run.elapsed();
    let mut cleanup = Cleanup::default();
    if let Some((_, reason)) = &outcome {
        let reason = reason.clone();
        run.log(format!("stopping: {reason}"));
        // Faults go at once; only then wait (up to a probe timeout) for in-flight probes.
        run.remove_faults(&mut cleanup).await;
    }
    stop_probes.cancel();
    tracker.close();
    let longest = plan
        .probes
        .iter()
        .map(|p| p.timeout)
        .max()
        .unwrap_or_default();
    // Drain while waiting: a probe task blocked on the full queue must be able to finish.
    let grace = deadline(
        Instant::now(),
        longest.saturating_add(Duration::from_secs(1)),
    );
    {
        let waited = tracker.wait();
        tokio::pin!(waited);
        let mut batch = Vec::with_capacity(SAMPLE_BATCH);
        loop {
            tokio::select! {
                () = &mut waited => break,
                () = tokio::time::sleep_until(grace) => break,
                got = run.rx.recv_many(&mut batch, SAMPLE_BATCH) => {
                    run.absorb(&mut batch);
                    if got == 0 {
                        break;
                    }
                }
            }
        }
    }
    run.drain();
    let cleanup = run.cleanup(&snapshot, cleanup).await;
    run.log(format!(
        "cleanup: {} fault(s) removed, {} proxy(ies) deleted",
        cleanup.removed_faults, cleanup.deleted_proxies
    ));
    run.progress.done();

    // Verdict: every phase, those that never began marked so, those cut short judged on
    // their actual window.
    if cut_short {
        for r in &mut run.phase_runs {
            r.cut_at = Some(ended_at);
        }
    }
    let phases = run.tally.evaluate_runs(&run.phase_runs);
    let invalid = phases.iter().find(|p| p.status == PhaseStatus::Invalid);
    let (outcome, reason) = match (outcome, invalid) {
        // A stop condition or an abort on a phase that lost its faults: say both.
        (Some((o, r)), Some(p)) => (
            o,
            Some(format!(
                "{r}; phase {:?} is invalid: {}",
                p.name, p.reasons[0]
            )),
        ),
        (Some((o, r)), None) => (o, Some(r)),
        (None, _) => match phases
            .iter()
            .find(|p| matches!(p.status, PhaseStatus::Fail | PhaseStatus::Invalid))
        {
            Some(p) if p.status == PhaseStatus::Invalid => (
                Outcome::Fail,
                Some(format!(
                    "phase {:?} is invalid: {}",
                    p.name,
                    p.reasons.join("; ")
                )),
            ),
            Some(p) => (
                Outcome::Fail,
                Some(format!("phase {:?}: {}", p.name, p.reasons.join("; "))),
            ),
            // A drill that could not put the server back as it was has not passed.
            None if !cleanup.restored => (
                Outcome::Fail,
                Some(format!(
                    "cleanup did not restore the server: {}",
                    cleanup.problems.join("; ")
                )),
            ),
            None => (Outcome::Pass, None),
        },
    };
    let probes = plan
        .probes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let counts = run.tally.probe(i).cloned().unwrap_or_default();
            let mut failures: Vec<(String, usize)> = counts.reasons.into_iter().collect();
            failures.sort_by_key(|f| std::cmp::Reverse(f.1));
            failures.truncate(5);
            ProbeSummary {
                name: p.name.clone(),
                url: p.url.clone(),
                samples: counts.samples,
                passed: counts.passed,
                failures,
            }
        })
        .collect();
    let report = DrillReport {
        drill: plan.name.clone(),
        seed: plan.seed,
        outcome,
        reason,
        started_at_ms,
        duration_ms: u64::try_from(run.elapsed().as_millis()).unwrap_or(u64::MAX),
        phases,
        probes,
        events: run.events,
        cleanup,
    };
    run.history.finished(&report).await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: progress counted only finished probes, so it read "probes ok 100.0 %"
    /// while every probe hung. Requests under way and timeouts are counted.
    #[test]
    fn issue_14_progress_counts_requests_in_flight_and_timeouts() {
        let total = Duration::from_secs(10);
        let at = Duration::from_secs(2);
        let none = RecentStats::default();
        assert_eq!(
            progress_line("baseline", at, total, &none, 12),
            "[baseline]   2.0s / 10.0s  probes: no answer yet (last 5s), 12 in flight"
        );
        let hung = RecentStats {
            ok: 3,
            failed: 9,
            timed_out: 9,
            p95: Duration::from_millis(2000),
        };
        let line = progress_line("outage", at, total, &hung, 20);
        assert!(
            line.contains("probes ok  25.0% of 12 (last 5s), 9 failed (9 timed out)"),
            "{line}"
        );
        assert!(line.ends_with("20 in flight"), "{line}");
    }
}
