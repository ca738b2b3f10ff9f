//! Phases, probe samples and the verdict: pure functions of the plan and the samples, so the
//! verdict logic is tested without clocks or sockets.

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

/// The verdict of one phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseResult {
    /// Phase name.
    pub name: String,
    /// Phase kind.
    pub kind: PhaseKind,
    /// Start in ms from the drill's start.
    pub start_ms: u64,
    /// End in ms.
    pub end_ms: u64,
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

/// Judges each phase against its thresholds. A phase with no sample fails: a drill that
/// observed nothing proves nothing.
pub fn evaluate(windows: &[PhaseWindow], samples: &[Sample]) -> Vec<PhaseResult> {
    windows
        .iter()
        .map(|w| {
            let mut latencies: Vec<Duration> = samples
                .iter()
                .filter(|s| s.at >= w.start && s.at < w.end)
                .map(|s| s.latency)
                .collect();
            latencies.sort();
            let n = latencies.len();
            let passed = samples
                .iter()
                .filter(|s| s.at >= w.start && s.at < w.end && s.ok)
                .count();
            let avail = if n == 0 {
                0.0
            } else {
                passed as f64 * 100.0 / n as f64
            };
            let p95 = percentile(&latencies, 95.0);
            let p99 = percentile(&latencies, 99.0);
            let mut reasons = Vec::new();
            let mut thresholds = Vec::new();
            if n == 0 {
                reasons.push("no probe results in this phase".to_owned());
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
            PhaseResult {
                name: w.name.clone(),
                kind: w.kind,
                start_ms: ms(w.start),
                end_ms: ms(w.end),
                samples: n,
                passed,
                availability: (avail * 10.0).round() / 10.0,
                p95_ms: ms(p95),
                p99_ms: ms(p99),
                thresholds,
                pass: reasons.is_empty(),
                reasons,
            }
        })
        .collect()
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
            reason: None,
        }
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
