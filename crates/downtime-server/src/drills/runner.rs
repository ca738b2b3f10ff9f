//! Runs a drill against a downtime API: baseline and steady-state check, the fault timeline
//! with stop conditions, recovery, and a cleanup that always runs.
//!
//! Every fault the runner injects carries a TTL a little longer than its step, so even if the
//! runner dies the server removes them by itself. A `drill-lock` marker (a no-op toxic with
//! toxicity 0, created with the API's own duplicate check) on each touched proxy keeps two
//! drills off the same proxy.
//!
//! # Layout
//! This module holds [`run`] and its steps, in the order they happen. The rest of the runner
//! lives beside it, and what is public there is re-exported here:
//! - `client`: the API client ([`Api`]) and the percent-encoding of path segments;
//! - `progress`: the live progress line on stderr ([`progress_line`]);
//! - `state`: the state of one run, folding samples in and the wait between actions;
//! - `faults`: applying, ramping and removing faults, and noticing lost ones;
//! - `cleanup`: removing what the drill added and the restore check ([`not_restored`]).

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use downtime_model::drill::DrillPlan;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::{DRILL_AGENT, SCHEDULE_AGENT, api_client, enc};
use super::faults::TTL_MARGIN;
use super::probes::spawn_probes;
use super::report::{Cleanup, DrillReport, Outcome, ProbeSummary};
use super::state::{Run, deadline};
use super::timeline::{for_people, timeline};
use super::verdict::{PhaseResult, PhaseStatus, Sample};
use crate::history::Timestamp;
use crate::history::client::DrillRecorder;

pub use super::cleanup::not_restored;
pub use super::client::Api;
pub use super::progress::progress_line;

/// Name of the marker toxic that locks a proxy for one drill.
pub const LOCK_NAME: &str = "drill-lock";
/// Probe samples waiting for the runner; probes wait when it is full (the runner drains it
/// continuously while it waits, so it fills only during an API call).
const SAMPLE_QUEUE: usize = 4096;

/// A drill that could not start; nothing was injected.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

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
    let (snapshot, halts) = connect(&api).await?;
    let started_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));

    let (tx, rx) = mpsc::channel(SAMPLE_QUEUE);
    let mut run = Run::new(plan, api, rx, options.quiet);
    // Setup: proxies of the drill, then lock every touched proxy. Undo on failure.
    if let Err(e) = run.set_up().await {
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
    run.start(base, &options, probe_client, tx, &stop_probes, &tracker);

    let mut outcome = run.baseline(&interrupt, halts).await;
    if outcome.is_none() {
        outcome = run.fault_timeline(&interrupt, halts).await;
    }
    // Recovery (only when the timeline ran to its end).
    if outcome.is_none() {
        outcome = run.recovery(&interrupt, halts).await;
    }
    let ended_at = run.elapsed();
    let cleanup = run
        .wind_down(outcome.as_ref(), &snapshot, &stop_probes, &tracker)
        .await;
    let report = run.report(outcome, ended_at, cleanup, started_at_ms);
    run.history.finished(&report).await;
    Ok(report)
}

/// Checks that the API answers and takes what setup and cleanup need from it: the proxies
/// before the drill (for the restore check) and the halt counter.
async fn connect(api: &Api) -> Result<(Value, Option<u64>), SetupError> {
    api.get("/version")
        .await
        .map_err(|e| SetupError(format!("cannot reach the downtime API: {e}")))?;
    let snapshot = api
        .get("/proxies")
        .await
        .map_err(|e| SetupError(e.to_string()))?;
    let halts = api.halts().await;
    Ok((snapshot, halts))
}

impl Run<'_> {
    /// Creates the drill's proxies, then locks every proxy its steps touch; the caller undoes
    /// what was done when this fails.
    async fn set_up(&mut self) -> Result<(), String> {
        let plan = self.plan;
        for (config, toxics) in &plan.proxies {
            let mut body = serde_json::to_value(config).map_err(|e| e.to_string())?;
            body["toxics"] = serde_json::to_value(toxics).map_err(|e| e.to_string())?;
            self.api.post("/proxies", body).await?;
            self.created.push(config.name.clone());
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
        self.touched = touched.iter().map(|p| (*p).to_owned()).collect();
        for proxy in touched {
            self.api
                .get(&format!("/proxies/{}", enc(proxy)))
                .await
                .map_err(|e| format!("proxy {proxy:?} of the drill: {e}"))?;
            let lock = json!({
                "name": LOCK_NAME, "type": "noop", "toxicity": 0,
                "ttl": u64::try_from(lock_ttl.as_millis()).unwrap_or(u64::MAX),
            });
            match self
                .api
                .post(&format!("/proxies/{}/toxics", enc(proxy)), lock)
                .await
            {
                Ok(_) => self.locked.push(proxy.to_owned()),
                Err(e) if e.contains("HTTP 409") => {
                    return Err(format!(
                        "proxy {proxy:?} is in use by another drill (it has a {LOCK_NAME} toxic)"
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Starts the drill's clock, its record in the server's history and its probes, and logs
    /// the start.
    fn start(
        &mut self,
        base: &str,
        options: &RunOptions,
        probe_client: reqwest::Client,
        tx: mpsc::Sender<Sample>,
        stop_probes: &CancellationToken,
        tracker: &TaskTracker,
    ) {
        let plan = self.plan;
        self.origin = Instant::now();
        let probes = plan.probes.iter();
        self.history = DrillRecorder::start(
            base,
            api_client(
                self.api.agent,
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
            self.origin,
            stop_probes.clone(),
            tracker,
            tx,
            &self.in_flight,
        );
        self.log(format!(
            "drill {:?} started (seed {}), baseline {}s",
            plan.name,
            plan.seed,
            plan.baseline.as_secs_f64()
        ));
    }

    /// The baseline, then the steady-state check; `Some` when the drill stops here.
    async fn baseline(
        &mut self,
        interrupt: &CancellationToken,
        halts: Option<u64>,
    ) -> Option<(Outcome, String)> {
        let plan = self.plan;
        self.phase_runs[0].ran = true;
        if let Some(stop) = self
            .wait(
                deadline(self.origin, plan.baseline),
                interrupt,
                halts,
                false,
            )
            .await
        {
            return Some(stop);
        }
        self.drain();
        let required = plan
            .steady_state
            .or(plan.verdict.baseline.availability)
            .unwrap_or(100.0);
        // Phase 0 is the baseline, [0, baseline).
        let seen = self.tally.phase_availability(0);
        match seen {
            Some(a) if a >= required => {
                self.log(format!(
                    "steady state met: availability {a:.1}% (required {required}%)"
                ));
                None
            }
            Some(a) => {
                self.phase_runs[0].failed.push(format!(
                    "steady state not met: availability {a:.1}% is below {required}%"
                ));
                Some((
                    Outcome::Fail,
                    format!(
                        "steady state not met before any fault: availability {a:.1}% is below {required}%; nothing was injected"
                    ),
                ))
            }
            None => {
                self.phase_runs[0]
                    .failed
                    .push("steady state not met: no probe answered".to_owned());
                Some((
                    Outcome::Fail,
                    "steady state not met: no probe answered during the baseline; nothing was injected".to_owned(),
                ))
            }
        }
    }

    /// The fault timeline: each action at its time, the wait before it watching the stop
    /// condition; `Some` when the drill stops before its end.
    async fn fault_timeline(
        &mut self,
        interrupt: &CancellationToken,
        halts: Option<u64>,
    ) -> Option<(Outcome, String)> {
        let plan = self.plan;
        let planned_all = timeline(plan);
        let mut headlines: Vec<String> = Vec::new();
        for (i, planned) in planned_all.iter().enumerate() {
            let faults_live = !self.injected.is_empty();
            if let Some(stop) = self
                .wait(
                    deadline(self.origin, planned.at),
                    interrupt,
                    halts,
                    faults_live,
                )
                .await
            {
                return Some(stop);
            }
            if let Err(e) = self.apply(&planned.action).await {
                return Some((Outcome::Aborted, format!("could not change a fault: {e}")));
            }
            headlines.extend(for_people(plan, &planned.action));
            // Actions due at the same time (a step ending as the next begins) make one
            // update of the incident, so its status does not flip in between.
            if planned_all
                .get(i + 1)
                .is_none_or(|next| next.at != planned.at)
            {
                let phase = self.phase_name(planned.at);
                let text = std::mem::take(&mut headlines).join(" ");
                self.history.phase(&phase, &text);
            }
        }
        None
    }

    /// The recovery phase, up to the end of the plan; `Some` when the drill stops early.
    async fn recovery(
        &mut self,
        interrupt: &CancellationToken,
        halts: Option<u64>,
    ) -> Option<(Outcome, String)> {
        let plan = self.plan;
        let recovery = self.phase_runs.len() - 1;
        self.phase_runs[recovery].ran = true;
        let end = deadline(
            self.origin,
            plan.baseline
                .saturating_add(plan.fault_window())
                .saturating_add(plan.recovery),
        );
        self.wait(end, interrupt, halts, false).await
    }

    /// Ends the drill: on a stop its faults go at once, then the probes stop (in-flight ones
    /// get up to the longest probe timeout) and the cleanup runs.
    async fn wind_down(
        &mut self,
        outcome: Option<&(Outcome, String)>,
        snapshot: &Value,
        stop_probes: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Cleanup {
        let mut cleanup = Cleanup::default();
        if let Some((_, reason)) = outcome {
            self.log(format!("stopping: {reason}"));
            // Faults go at once; only then wait (up to a probe timeout) for in-flight probes.
            self.remove_faults(&mut cleanup).await;
        }
        stop_probes.cancel();
        tracker.close();
        let longest = self
            .plan
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
        self.wait_for_probes(tracker, grace).await;
        self.drain();
        let cleanup = self.cleanup(snapshot, cleanup).await;
        self.log(format!(
            "cleanup: {} fault(s) removed, {} proxy(ies) deleted",
            cleanup.removed_faults, cleanup.deleted_proxies
        ));
        self.progress.done();
        cleanup
    }

    /// The report of the drill: its verdict, the probes' summaries and the event log.
    fn report(
        &mut self,
        outcome: Option<(Outcome, String)>,
        ended_at: Duration,
        cleanup: Cleanup,
        started_at_ms: u64,
    ) -> DrillReport {
        let (phases, outcome, reason) = self.verdict(outcome, ended_at, &cleanup);
        let probes = self.probe_summaries();
        DrillReport {
            drill: self.plan.name.clone(),
            seed: self.plan.seed,
            outcome,
            reason,
            started_at_ms,
            duration_ms: u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX),
            phases,
            probes,
            events: std::mem::take(&mut self.events),
            cleanup,
        }
    }

    /// Verdict: every phase, those that never began marked so, those cut short (the drill
    /// stopped at `ended_at`) judged on their actual window; then the outcome and its reason.
    fn verdict(
        &mut self,
        outcome: Option<(Outcome, String)>,
        ended_at: Duration,
        cleanup: &Cleanup,
    ) -> (Vec<PhaseResult>, Outcome, Option<String>) {
        if outcome.is_some() {
            for r in &mut self.phase_runs {
                r.cut_at = Some(ended_at);
            }
        }
        let phases = self.tally.evaluate_runs(&self.phase_runs);
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
        (phases, outcome, reason)
    }

    /// What each probe saw: its samples, how many passed, and its five commonest failures.
    fn probe_summaries(&self) -> Vec<ProbeSummary> {
        self.plan
            .probes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let counts = self.tally.probe(i).cloned().unwrap_or_default();
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
            .collect()
    }
}
