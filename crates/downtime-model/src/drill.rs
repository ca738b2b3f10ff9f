//! Drill files: declarative outage scenarios, parsed and checked before anything runs.
//!
//! A drill file is TOML. Parsing keeps every value's position so that *every* problem
//! (unknown key, wrong type, negative duration, overlapping steps on one fault, bad fault
//! attributes) is reported at once with its line and key, and nothing is injected unless
//! the whole file is valid. The reference is `docs/drills.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::{ProxyConfig, ProxyRequest, Toxic, ToxicKind, ToxicRequest};

mod parse;
mod walker;

/// Where the drill's faults are injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTarget {
    /// A downtime (or Toxiproxy) API at this base URL.
    Url(String),
    /// A server started inside the `drill run` process.
    Embedded,
}

/// A validated drill.
#[derive(Debug, Clone)]
pub struct DrillPlan {
    /// Human name.
    pub name: String,
    /// The API to drive.
    pub server: ServerTarget,
    /// Seed for every random choice the drill makes (fault seeds derive from it).
    pub seed: u64,
    /// Observation before any fault; the steady-state check runs over it.
    pub baseline: Duration,
    /// Observation after the last fault is removed.
    pub recovery: Duration,
    /// Proxies created for the drill and deleted after it.
    pub proxies: Vec<(ProxyConfig, Vec<Toxic>)>,
    /// Requests that tell whether the app under test is healthy.
    pub probes: Vec<Probe>,
    /// Fault steps on the timeline (offsets from the end of the baseline).
    pub steps: Vec<Step>,
    /// Availability required during the baseline before anything is injected.
    pub steady_state: Option<f64>,
    /// Pass/fail thresholds per phase.
    pub verdict: Verdict,
    /// Abort early when availability collapses.
    pub stop: Option<StopCondition>,
}

/// An HTTP probe of the app under test.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Name shown in reports.
    pub name: String,
    /// Request method.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Request headers.
    pub headers: BTreeMap<String, String>,
    /// Request body.
    pub body: Option<String>,
    /// Time between two requests.
    pub interval: Duration,
    /// Per-request timeout; a hang counts as a failure after it.
    pub timeout: Duration,
    /// What a successful answer looks like.
    pub expect: Expect,
}

/// Conditions on a probe's answer; all must hold.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Accepted statuses as inclusive ranges (default 200..=299).
    pub status: Vec<(u16, u16)>,
    /// Substring the body must contain.
    pub body_contains: Option<String>,
    /// JSON pointer → expected value.
    pub json: BTreeMap<String, Value>,
    /// Latency budget.
    pub latency: Option<Duration>,
}

/// A fault window on the timeline.
#[derive(Debug, Clone)]
pub struct Step {
    /// Name (unique), used in reports and verdict overrides.
    pub name: String,
    /// Offset from the end of the baseline.
    pub at: Duration,
    /// How long the faults stay.
    pub duration: Duration,
    /// Faults applied together at `at` and removed together after `duration`.
    pub faults: Vec<FaultSpec>,
    /// Optional probability ramp of every fault of the step.
    pub ramp: Option<Ramp>,
}

/// One fault of a step.
#[derive(Debug, Clone)]
pub struct FaultSpec {
    /// Proxy to inject into.
    pub proxy: String,
    /// The toxic or HTTP fault, as the API's create body.
    pub request: ToxicRequest,
}

/// Steps a fault's probability from `from` to `to` in `steps` equal steps over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ramp {
    /// First probability.
    pub from: f32,
    /// Last probability.
    pub to: f32,
    /// Number of levels (≥ 2).
    pub steps: u32,
}

impl Ramp {
    /// The probability of level `i` (0-based) and the offset at which it starts.
    pub fn level(&self, i: u32, window: Duration) -> (f32, Duration) {
        let n = self.steps.max(2);
        let fraction = i.min(n - 1) as f32 / (n - 1) as f32;
        let p = self.from + (self.to - self.from) * fraction;
        let offset = window.checked_mul(i.min(n - 1)).unwrap_or(Duration::MAX) / n;
        (p, offset)
    }
}

/// Thresholds of one phase; absent ones are not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    /// Minimum availability in percent.
    pub availability: Option<f64>,
    /// Maximum 95th-percentile latency.
    pub p95: Option<Duration>,
    /// Maximum 99th-percentile latency.
    pub p99: Option<Duration>,
}

/// Thresholds for the baseline, every fault step (with overrides), and the recovery.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Before any fault.
    pub baseline: Thresholds,
    /// During each step unless overridden.
    pub faults: Thresholds,
    /// Per step name.
    pub steps: BTreeMap<String, Thresholds>,
    /// After the faults are removed.
    pub recovery: Thresholds,
}

/// Abort when availability over the last `window` falls below `availability_below` percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StopCondition {
    /// Sliding window.
    pub window: Duration,
    /// Threshold in percent.
    pub availability_below: f64,
}

/// A problem in a drill file: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// Dotted key path, e.g. `step[1].fault[0].type`.
    pub key: String,
    /// What is wrong, naming the bad value.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.key, self.message)
    }
}

/// The largest values a drill file accepts (documented in `docs/drills.md`).
///
/// Every duration of a drill becomes a deadline (`start + baseline + step.at + ...`) and every
/// count a loop or an allocation, so each is bounded here, at `drill check`, and the runner's
/// arithmetic on a valid plan cannot overflow: the whole planned length is at most
/// `MAX_PHASE × 4` (baseline, step start, step duration, recovery), about four days.
pub mod limits {
    use std::time::Duration;

    /// `baseline`, `recovery`, a step's `at` and `duration`, `stop.window`: 24 h.
    pub const MAX_PHASE: Duration = Duration::from_secs(86_400);
    /// A probe's `interval`, `timeout` and `expect.latency`, `verdict` `p95`/`p99`: 1 h.
    pub const MAX_PROBE: Duration = Duration::from_secs(3_600);
    /// Number of `[[probe]]` tables.
    pub const MAX_PROBES: usize = 100;
    /// Number of `[[step]]` tables.
    pub const MAX_STEPS: usize = 1_000;
    /// Number of `[[step.fault]]` tables in one step.
    pub const MAX_FAULTS_PER_STEP: usize = 100;
    /// A fault's `first_n` and `every_nth`.
    pub const MAX_COUNT: u64 = 1_000_000_000_000;
}

/// `d` as text for messages: `24h`, `1h`, `90s`, `250ms`.
fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses a duration such as `250ms`, `2s`, `1.5s`, `3m` or `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("duration must not be negative, got {text:?}"));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 500ms, 2s or 1m, got {text:?}"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=31_536_000.0 * 10.0).contains(&secs) {
        return Err(format!("duration {text:?} is out of range (0 to 10 years)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The name a step's fault gets on the server: its own, or `drill-<step>-<type>`.
pub fn fault_name(step: &Step, fault: &FaultSpec) -> String {
    fault.request.name.clone().unwrap_or_else(|| {
        format!(
            "drill-{}-{}",
            step.name,
            fault.request.kind.as_deref().unwrap_or("fault")
        )
    })
}

#[cfg(test)]
#[path = "drill_tests.rs"]
mod tests;
