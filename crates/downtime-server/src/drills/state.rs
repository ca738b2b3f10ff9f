//! The state of one drill run ([`Run`]) and how it lets time pass: what it injected, locked
//! and created, the tally of probe samples and its event log; folding samples in as they
//! arrive, and the wait between timeline actions ([`Run::wait`]) that watches for
//! interrupts, halts, the stop condition and lost faults.
//!
//! Its own module because every part of a run works on this one value: the steps of
//! `runner::run`, the fault changes (`faults`) and the cleanup (`cleanup`).

use std::time::Duration;

use downtime_model::drill::DrillPlan;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::Api;
use super::faults::Injected;
use super::probes::InFlight;
use super::progress::Progress;
use super::report::{Event, Outcome};
use super::verdict::{self, PhaseRun, Sample, Tally};
use crate::history::client::DrillRecorder;

/// How often stop conditions, halts and progress are checked.
const TICK: Duration = Duration::from_millis(250);
/// Samples taken from the queue at once.
const SAMPLE_BATCH: usize = 256;
/// How often the runner asks the server whether its faults are still there.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// `origin + offset`, or a century later when that does not fit (a valid plan never gets
/// near: its offsets are at most a few days).
pub(super) fn deadline(origin: Instant, offset: Duration) -> Instant {
    origin
        .checked_add(offset)
        .or_else(|| origin.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(origin)
}

/// One run of a drill plan, from setup to report.
pub(super) struct Run<'a> {
    pub(super) plan: &'a DrillPlan,
    pub(super) api: Api,
    pub(super) origin: Instant,
    pub(super) events: Vec<Event>,
    pub(super) injected: Vec<Injected>,
    pub(super) locked: Vec<String>,
    pub(super) created: Vec<String>,
    /// Proxies the drill locked or faulted (for the restore check).
    pub(super) touched: Vec<String>,
    pub(super) tally: Tally,
    /// What the runner saw of each phase (by the tally's phase index).
    pub(super) phase_runs: Vec<PhaseRun>,
    rx: mpsc::Receiver<Sample>,
    pub(super) in_flight: InFlight,
    last_check: Option<Instant>,
    pub(super) progress: Progress,
    /// Best-effort reports to the server's history (a no-op against plain Toxiproxy).
    pub(super) history: DrillRecorder,
}

impl<'a> Run<'a> {
    /// A run of `plan` through `api` whose probe samples arrive on `rx`; nothing is set up
    /// yet and the history is not told until the probes start.
    pub(super) fn new(
        plan: &'a DrillPlan,
        api: Api,
        rx: mpsc::Receiver<Sample>,
        quiet: bool,
    ) -> Self {
        let keep = plan.stop.map_or(Duration::ZERO, |s| s.window);
        Run {
            plan,
            api,
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
            progress: Progress::new(quiet),
            history: DrillRecorder::disabled(),
        }
    }
}

impl Run<'_> {
    pub(super) fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    pub(super) fn log(&mut self, what: String) {
        let at = self.elapsed();
        self.log_at(at, what);
    }

    pub(super) fn log_at(&mut self, at: Duration, what: String) {
        let at = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        self.progress
            .event(&format!("{:>7.1}s  {what}", at as f64 / 1000.0));
        self.events.push(Event { at_ms: at, what });
    }

    /// Folds every queued sample into the tally (and hands it to the history).
    pub(super) fn drain(&mut self) {
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

    /// Waits until the probe tasks of `tracker` have ended, or `grace` at the latest, folding
    /// samples in meanwhile: a probe task blocked on the full queue must be able to finish.
    pub(super) async fn wait_for_probes(&mut self, tracker: &TaskTracker, grace: Instant) {
        let waited = tracker.wait();
        tokio::pin!(waited);
        let mut batch = Vec::with_capacity(SAMPLE_BATCH);
        loop {
            tokio::select! {
                () = &mut waited => break,
                () = tokio::time::sleep_until(grace) => break,
                got = self.rx.recv_many(&mut batch, SAMPLE_BATCH) => {
                    self.absorb(&mut batch);
                    if got == 0 {
                        break;
                    }
                }
            }
        }
    }

    pub(super) fn phase_name(&self, elapsed: Duration) -> String {
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
    pub(super) async fn wait(
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
}
