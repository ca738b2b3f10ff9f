//! Phases, probe samples and the verdict: pure functions of the plan and the samples, so the
//! verdict logic is tested without clocks or sockets.
//!
//! Samples are not kept: a [`Tally`] folds each one, as it arrives, into counts per phase
//! and per probe, a latency histogram per phase and a bounded window of recent samples (for
//! the stop condition and the progress line), so a drill's memory does not grow with its
//! length or its probe rate.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use downtime_model::drill::{DrillPlan, Thresholds};
use serde::Serialize;

/// One probe request's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Index of the probe in the plan.
    pub probe: usize,
    /// When the request started, from the drill's start.
    #[serde(serialize_with = "as_ms")]
    pub at: Duration,
    /// Time to the full answer (or to the timeout).
    #[serde(serialize_with = "as_ms")]
    pub latency: Duration,
    /// Whether every condition held.
    pub ok: bool,
    /// Whether it failed for want of an answer within the probe's timeout.
    #[serde(default)]
    pub timed_out: bool,
    /// Why it failed.
    pub reason: Option<String>,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What part of the drill a phase is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    /// Before any fault.
    Baseline,
    /// A fault step.
    Step,
    /// After every fault is gone.
    Recovery,
}

/// A time window with its thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseWindow {
    /// `baseline`, a step name, or `recovery`.
    pub name: String,
    /// Which kind.
    pub kind: PhaseKind,
    /// Start, from the drill's start.
    pub start: Duration,
    /// End (exclusive).
    pub end: Duration,
    /// What must hold.
    pub thresholds: Thresholds,
}

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    /// It ran and met its thresholds.
    Pass,
    /// It ran and missed a threshold (or, for the baseline, the steady state).
    Fail,
    /// It ran but did not test what was planned: the server lost its faults.
    Invalid,
    /// The drill stopped before it began.
    NotRun,
}

impl PhaseStatus {
    /// The word shown in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Pass => "pass",
            PhaseStatus::Fail => "FAIL",
            PhaseStatus::Invalid => "INVALID",
            PhaseStatus::NotRun => "not run",
        }
    }
}

/// What the runner saw of one phase, beyond its samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseRun {
    /// Whether it began (for a step: whether one of its faults was injected).
    pub ran: bool,
    /// When it was cut short (stop condition, halt, signal), from the drill's start.
    pub cut_at: Option<Duration>,
    /// Why it did not test what was planned (faults the server lost).
    pub invalid: Vec<String>,
    /// Failures found by the runner rather than by thresholds (the steady state).
    pub failed: Vec<String>,
}

/// The verdict of one phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseResult {
    /// Phase name.
    pub name: String,
    /// Phase kind.
    pub kind: PhaseKind,
    /// Pass, fail, invalid or not run.
    pub status: PhaseStatus,
    /// Start in ms from the drill's start.
    pub start_ms: u64,
    /// End in ms: when it actually ended (a phase cut short ends early).
    pub end_ms: u64,
    /// The end the plan gave it.
    pub planned_end_ms: u64,
    /// Probe requests started in the window.
    pub samples: usize,
    /// Of which passed.
    pub passed: usize,
    /// Percentage passed (0 when there were none).
    pub availability: f64,
    /// 95th-percentile latency in ms.
    pub p95_ms: u64,
    /// 99th-percentile latency in ms.
    pub p99_ms: u64,
    /// Thresholds checked, as text.
    pub thresholds: Vec<String>,
    /// Whether the phase passed.
    pub pass: bool,
    /// Why it failed, one line per unmet threshold.
    pub reasons: Vec<String>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The phases of a plan: baseline, each step (offset by the baseline), recovery.
pub fn phases(plan: &DrillPlan) -> Vec<PhaseWindow> {
    let mut out = vec![PhaseWindow {
        name: "baseline".to_owned(),
        kind: PhaseKind::Baseline,
        start: Duration::ZERO,
        end: plan.baseline,
        thresholds: plan.verdict.baseline,
    }];
    for step in &plan.steps {
        let start = plan.baseline.saturating_add(step.at);
        out.push(PhaseWindow {
            name: step.name.clone(),
            kind: PhaseKind::Step,
            start,
            end: start.saturating_add(step.duration),
            thresholds: plan.step_thresholds(&step.name),
        });
    }
    let start = plan.baseline.saturating_add(plan.fault_window());
    out.push(PhaseWindow {
        name: "recovery".to_owned(),
        kind: PhaseKind::Recovery,
        start,
        end: start.saturating_add(plan.recovery),
        thresholds: plan.verdict.recovery,
    });
    out
}

/// Histogram resolution: values below `2 × 2^SUB_BITS` µs are exact, larger ones fall in
/// buckets 1/2^SUB_BITS (0.8 %) of their size wide.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Latencies are recorded in µs up to this (about 2.4 h; a probe timeout is at most 1 h).
const MAX_MICROS: u64 = (1 << 33) - 1;
/// Buckets: the exact ones, then `SUB` per power of two up to `MAX_MICROS`.
const BUCKETS: usize = (2 * SUB + (33 - SUB_BITS as u64 - 1) * SUB) as usize;

/// A latency histogram with fixed log-linear buckets (~27 KiB, allocated at the first value):
/// nearest-rank percentiles within 0.8 %, exact below 256 µs, clamped to the exact minimum
/// and maximum seen.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
}

fn bucket_of(micros: u64) -> usize {
    let v = micros.min(MAX_MICROS);
    if v < 2 * SUB {
        return v as usize;
    }
    let exponent = 63 - v.leading_zeros();
    let shift = exponent - SUB_BITS;
    let sub = (v >> shift) - SUB;
    (2 * SUB + u64::from(shift - 1) * SUB + sub) as usize
}

/// The largest value of bucket `i`.
fn bucket_top(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let j = i - 2 * SUB;
    let shift = j / SUB + 1;
    let low = (SUB + j % SUB) << shift;
    low + (1 << shift) - 1
}

impl Histogram {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
            self.min = micros;
        }
        self.counts[bucket_of(micros)] += 1;
        self.total += 1;
        self.min = self.min.min(micros);
        self.max = self.max.max(micros);
    }

    /// Number of values.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether no value was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The `p`-th percentile (0..=100), nearest-rank; zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil() as u64;
        let rank = rank.clamp(1, self.total);
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_micros(bucket_top(i).clamp(self.min, self.max));
            }
        }
        Duration::from_micros(self.max)
    }
}

/// Counts of one phase.
#[derive(Debug, Clone, Default)]
struct PhaseTally {
    samples: usize,
    passed: usize,
    latencies: Histogram,
}

/// Counts of one probe.
#[derive(Debug, Clone, Default)]
pub struct ProbeTally {
    /// Requests made.
    pub samples: usize,
    /// Of which passed.
    pub passed: usize,
    /// Failure reasons and how often each was seen (at most [`MAX_REASONS`] distinct ones).
    pub reasons: BTreeMap<String, usize>,
}

/// Distinct failure reasons kept per probe; later new ones are counted as [`OTHER_REASONS`].
pub const MAX_REASONS: usize = 64;
/// The reason under which failures past [`MAX_REASONS`] distinct ones are counted.
pub const OTHER_REASONS: &str = "(other reasons)";
/// Most recent samples kept for the stop condition and the progress line.
pub const MAX_RECENT: usize = 100_000;

/// One recent sample, without its reason.
#[derive(Debug, Clone, Copy)]
struct Recent {
    at: Duration,
    latency: Duration,
    ok: bool,
    timed_out: bool,
}

/// The answered samples of a recent window, for the progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RecentStats {
    /// Samples that passed.
    pub ok: usize,
    /// Samples that failed (timeouts included).
    pub failed: usize,
    /// Of the failed, how many got no answer within their timeout.
    pub timed_out: usize,
    /// 95th-percentile latency of the answered samples.
    pub p95: Duration,
}

/// Everything a drill needs from its samples, folded as they arrive, in bounded memory.
#[derive(Debug, Clone)]
pub struct Tally {
    windows: Vec<PhaseWindow>,
    phases: Vec<PhaseTally>,
    probes: Vec<ProbeTally>,
    /// Samples that started within the last `keep`, at most [`MAX_RECENT`] of them.
    recent: VecDeque<Recent>,
    keep: Duration,
}

impl Tally {
    /// A tally for these phases and `probes` probes, keeping recent samples for `keep`
    /// (the stop condition's window; at least 5 s for the progress line).
    pub fn new(windows: Vec<PhaseWindow>, probes: usize, keep: Duration) -> Self {
        Tally {
            phases: vec![PhaseTally::default(); windows.len()],
            windows,
            probes: vec![ProbeTally::default(); probes],
            recent: VecDeque::new(),
            keep: keep.max(Duration::from_secs(5)),
        }
    }

    /// Folds one sample in.
    pub fn add(&mut self, sample: Sample) {
        for (w, t) in self.windows.iter().zip(self.phases.iter_mut()) {
            if sample.at >= w.start && sample.at < w.end {
                t.samples += 1;
                t.passed += usize::from(sample.ok);
                t.latencies.record(sample.latency);
            }
        }
        if let Some(p) = self.probes.get_mut(sample.probe) {
            p.samples += 1;
            p.passed += usize::from(sample.ok);
            if let Some(reason) = sample.reason {
                let key = if p.reasons.contains_key(&reason) || p.reasons.len() < MAX_REASONS {
                    reason
                } else {
                    OTHER_REASONS.to_owned()
                };
                *p.reasons.entry(key).or_default() += 1;
            }
        }
        let newest = self
            .recent
            .back()
            .map_or(sample.at, |r| r.at.max(sample.at));
        let horizon = newest.saturating_sub(self.keep);
        while self
            .recent
            .front()
            .is_some_and(|r| r.at < horizon || self.recent.len() >= MAX_RECENT)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent {
            at: sample.at,
            latency: sample.latency,
            ok: sample.ok,
            timed_out: sample.timed_out,
        });
    }

    /// Percentage of passing recent samples started within `[from, to)`; `None` without
    /// samples. Exact while the window holds at most [`MAX_RECENT`] samples.
    pub fn availability(&self, from: Duration, to: Duration) -> Option<f64> {
        let (mut n, mut ok) = (0usize, 0usize);
        for r in self.recent.iter().filter(|r| r.at >= from && r.at < to) {
            n += 1;
            ok += usize::from(r.ok);
        }
        (n > 0).then(|| ok as f64 * 100.0 / n as f64)
    }

    /// Percentage of passing samples of phase `index` (its whole window); `None` without.
    pub fn phase_availability(&self, index: usize) -> Option<f64> {
        let t = self.phases.get(index)?;
        (t.samples > 0).then(|| t.passed as f64 * 100.0 / t.samples as f64)
    }

    /// Counts and 95th-percentile latency of the samples started since `since` (those that
    /// are answered; requests still under way are counted by the caller).
    pub fn recent_stats(&self, since: Duration) -> RecentStats {
        let mut latencies: Vec<Duration> = Vec::new();
        let mut stats = RecentStats::default();
        for r in self.recent.iter().filter(|r| r.at >= since) {
            latencies.push(r.latency);
            if r.ok {
                stats.ok += 1;
            } else {
                stats.failed += 1;
                stats.timed_out += usize::from(r.timed_out);
            }
        }
        latencies.sort();
        stats.p95 = percentile(&latencies, 95.0);
        stats
    }

    /// Counts of probe `index`.
    pub fn probe(&self, index: usize) -> Option<&ProbeTally> {
        self.probes.get(index)
    }

    /// Judges the phases that `include` keeps against their thresholds. A phase with no
    /// sample fails: a drill that observed nothing proves nothing.
    pub fn evaluate(&self, include: impl Fn(&PhaseWindow) -> bool) -> Vec<PhaseResult> {
        self.windows
            .iter()
            .zip(&self.phases)
            .filter(|(w, _)| include(w))
            .map(|(w, t)| judge_phase(w, t))
            .collect()
    }

    /// Judges every phase given what the runner saw of it (`runs`, by phase index): a phase
    /// that never began is `not run` (never a failure of its own), one cut short is judged
    /// on its actual window, one whose faults the server lost is `invalid`.
    pub fn evaluate_runs(&self, runs: &[PhaseRun]) -> Vec<PhaseResult> {
        self.windows
            .iter()
            .zip(&self.phases)
            .enumerate()
            .map(|(i, (w, t))| {
                let run = runs.get(i).cloned().unwrap_or(PhaseRun {
                    ran: true,
                    ..PhaseRun::default()
                });
                let mut result = judge_phase(w, t);
                if !run.ran {
                    result.status = PhaseStatus::NotRun;
                    result.pass = false;
                    result.reasons = vec!["not run: the drill stopped before it".to_owned()];
                    result.end_ms = result.start_ms;
                    return result;
                }
                if let Some(cut) = run.cut_at {
                    let cut = ms(cut).max(result.start_ms);
                    if cut < result.end_ms {
                        result.end_ms = cut;
                        // Silence in a window cut to nothing proves nothing either way.
                        if t.samples == 0 {
                            result.reasons.retain(|r| r != NO_RESULTS);
                        }
                    }
                }
                if !run.failed.is_empty() {
                    result.reasons.splice(0..0, run.failed);
                }
                if !run.invalid.is_empty() {
                    result.status = PhaseStatus::Invalid;
                    result.pass = false;
                    result.reasons.splice(0..0, run.invalid);
                    return result;
                }
                result.pass = result.reasons.is_empty();
                result.status = if result.pass {
                    PhaseStatus::Pass
                } else {
                    PhaseStatus::Fail
                };
                result
            })
            .collect()
    }
}

/// The reason of a phase without samples.
const NO_RESULTS: &str = "no probe results in this phase";

/// The `p`-th percentile (0..=100) of sorted values, nearest-rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Percentage of passing samples started within `[from, to)`; `None` without samples.
pub fn availability(samples: &[Sample], from: Duration, to: Duration) -> Option<f64> {
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .collect();
    if window.is_empty() {
        return None;
    }
    let ok = window.iter().filter(|s| s.ok).count();
    Some(ok as f64 * 100.0 / window.len() as f64)
}

/// Judges each phase against its thresholds (a [`Tally`] of `samples`, for tests and callers
/// holding samples).
pub fn evaluate(windows: &[PhaseWindow], samples: &[Sample]) -> Vec<PhaseResult> {
    let mut tally = Tally::new(windows.to_vec(), 1, Duration::ZERO);
    for s in samples {
        tally.add(s.clone());
    }
    tally.evaluate(|_| true)
}

fn judge_phase(w: &PhaseWindow, t: &PhaseTally) -> PhaseResult {
    let n = t.samples;
    let passed = t.passed;
    let avail = if n == 0 {
        0.0
    } else {
        passed as f64 * 100.0 / n as f64
    };
    let p95 = t.latencies.percentile(95.0);
    let p99 = t.latencies.percentile(99.0);
    let mut reasons = Vec::new();
    let mut thresholds = Vec::new();
    if n == 0 {
        reasons.push(NO_RESULTS.to_owned());
    }
    if let Some(min) = w.thresholds.availability {
        thresholds.push(format!("availability >= {min}%"));
        if n > 0 && avail < min {
            reasons.push(format!("availability {avail:.1}% is below {min}%"));
        }
    }
    if let Some(max) = w.thresholds.p95 {
        thresholds.push(format!("p95 <= {}ms", ms(max)));
        if n > 0 && p95 > max {
            reasons.push(format!("p95 latency {}ms is above {}ms", ms(p95), ms(max)));
        }
    }
    if let Some(max) = w.thresholds.p99 {
        thresholds.push(format!("p99 <= {}ms", ms(max)));
        if n > 0 && p99 > max {
            reasons.push(format!("p99 latency {}ms is above {}ms", ms(p99), ms(max)));
        }
    }
    let pass = reasons.is_empty();
    PhaseResult {
        name: w.name.clone(),
        kind: w.kind,
        status: if pass {
            PhaseStatus::Pass
        } else {
            PhaseStatus::Fail
        },
        start_ms: ms(w.start),
        end_ms: ms(w.end),
        planned_end_ms: ms(w.end),
        samples: n,
        passed,
        availability: (avail * 10.0).round() / 10.0,
        p95_ms: ms(p95),
        p99_ms: ms(p99),
        thresholds,
        pass,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, latency_ms: u64, ok: bool) -> Sample {
        Sample {
            probe: 0,
            at: Duration::from_millis(at_ms),
            latency: Duration::from_millis(latency_ms),
            ok,
            timed_out: false,
            reason: None,
        }
    }

    /// Issue 10: samples went through an unbounded channel into an unbounded `Vec`. A tally
    /// of a million samples (each with its own failure text) holds bounded state and still
    /// gives exact counts.
    #[test]
    fn issue_10_a_million_samples_fold_into_bounded_state() {
        let windows = vec![PhaseWindow {
            name: "baseline".into(),
            kind: PhaseKind::Baseline,
            start: Duration::ZERO,
            end: Duration::from_secs(3600),
            thresholds: Thresholds::default(),
        }];
        let mut tally = Tally::new(windows, 1, Duration::from_secs(10));
        for i in 0..1_000_000u64 {
            tally.add(Sample {
                probe: 0,
                at: Duration::from_millis(i),
                latency: Duration::from_micros(i % 5000),
                ok: i % 4 != 0,
                timed_out: false,
                reason: (i % 4 == 0).then(|| format!("took {i}ms, over the budget")),
            });
            assert!(tally.recent.len() <= MAX_RECENT);
        }
        let probe = tally.probe(0).unwrap();
        assert_eq!(probe.samples, 1_000_000);
        assert_eq!(probe.passed, 750_000);
        assert_eq!(probe.reasons.len(), MAX_REASONS + 1);
        assert_eq!(probe.reasons.values().sum::<usize>(), 250_000);
        assert_eq!(probe.reasons[OTHER_REASONS], 250_000 - MAX_REASONS);
        // The recent window kept the last 10 s (10,000 samples at one per ms).
        assert!(tally.recent.len() <= 10_001, "{}", tally.recent.len());
        assert_eq!(
            tally.availability(Duration::from_millis(990_000), Duration::from_secs(1000)),
            Some(75.0)
        );
        let result = &tally.evaluate(|_| true)[0];
        assert_eq!(result.samples, 1_000_000);
        assert_eq!(result.availability, 75.0);
        assert!((4..=5).contains(&result.p99_ms), "{result:?}");
    }

    #[test]
    fn histogram_percentiles_are_within_a_bucket_of_the_exact_ones() {
        let mut exact: Vec<Duration> = Vec::new();
        let mut h = Histogram::default();
        // From µs to an hour, on a rough geometric grid.
        let mut v: u64 = 1;
        while v < 3_600_000_000 {
            exact.push(Duration::from_micros(v));
            h.record(Duration::from_micros(v));
            v = v * 11 / 10 + 1;
        }
        exact.sort();
        for p in [0.0, 1.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0] {
            let want = percentile(&exact, p).as_micros() as f64;
            let got = h.percentile(p).as_micros() as f64;
            assert!(
                got >= want && got <= want * (1.0 + 1.0 / SUB as f64),
                "p{p}: {got} vs {want}"
            );
        }
        assert_eq!(h.len() as usize, exact.len());
        // Every bucket's top maps back to the bucket.
        for i in 0..BUCKETS {
            assert_eq!(bucket_of(bucket_top(i)), i, "bucket {i}");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        let mut one = Histogram::default();
        one.record(Duration::from_millis(300));
        assert_eq!(one.percentile(95.0), Duration::from_millis(300));
        assert_eq!(Histogram::default().percentile(99.0), Duration::ZERO);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 95.0), Duration::from_millis(95));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
        assert_eq!(percentile(&v[..1], 50.0), Duration::from_millis(1));
    }

    #[test]
    fn phases_fail_on_thresholds_and_on_silence() {
        let windows = vec![
            PhaseWindow {
                name: "baseline".into(),
                kind: PhaseKind::Baseline,
                start: Duration::ZERO,
                end: Duration::from_secs(1),
                thresholds: Thresholds {
                    availability: Some(90.0),
                    p95: Some(Duration::from_millis(100)),
                    p99: None,
                },
            },
            PhaseWindow {
                name: "outage".into(),
                kind: PhaseKind::Step,
                start: Duration::from_secs(1),
                end: Duration::from_secs(2),
                thresholds: Thresholds::default(),
            },
            PhaseWindow {
                name: "recovery".into(),
                kind: PhaseKind::Recovery,
                start: Duration::from_secs(2),
                end: Duration::from_secs(3),
                thresholds: Thresholds::default(),
            },
        ];
        let mut samples: Vec<Sample> = (0..10).map(|i| sample(i * 100, 10, true)).collect();
        samples.push(sample(1500, 900, false));
        let results = evaluate(&windows, &samples);
        assert!(results[0].pass, "{:?}", results[0]);
        assert_eq!(results[1].samples, 1);
        assert!(results[1].pass, "no thresholds: passes");
        assert!(!results[2].pass);
        assert_eq!(results[2].reasons, vec!["no probe results in this phase"]);

        samples[0].ok = false;
        samples[1].ok = false;
        samples[2].latency = Duration::from_millis(500);
        let results = evaluate(&windows, &samples);
        assert!(!results[0].pass);
        assert!(
            results[0].reasons[0].contains("availability 80.0% is below 90%"),
            "{:?}",
            results[0].reasons
        );
        assert!(
            results[0].reasons[1].contains("p95 latency 500ms"),
            "{:?}",
            results[0].reasons
        );
        assert_eq!(
            availability(&samples, Duration::ZERO, Duration::from_secs(1)),
            Some(80.0)
        );
        assert_eq!(
            availability(&samples, Duration::from_secs(5), Duration::from_secs(6)),
            None
        );
    }
}
