//! Drill reports: JSON for machines, JUnit XML for CI, a table for people.

use serde::Serialize;

use super::verdict::{PhaseResult, PhaseStatus};

/// How a drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every phase met its thresholds.
    Pass,
    /// A phase missed a threshold, the steady state was not met, or a stop condition fired.
    Fail,
    /// Interrupted (signal, halt) or a fault could not be applied; faults were removed.
    Aborted,
}

/// Something the runner did, for the report's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Milliseconds from the drill's start.
    pub at_ms: u64,
    /// What happened.
    pub what: String,
}

/// What cleanup did and whether the server ended as it began.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cleanup {
    /// Faults removed at the end (normally, on abort or on signal).
    pub removed_faults: usize,
    /// Proxies created for the drill and deleted.
    pub deleted_proxies: usize,
    /// Whether `GET /proxies` after the drill equals it before.
    pub restored: bool,
    /// Anything that could not be undone.
    pub problems: Vec<String>,
}

/// Per probe: how it fared overall.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeSummary {
    /// Probe name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// Requests sent.
    pub samples: usize,
    /// Of which passed.
    pub passed: usize,
    /// The most frequent failure reasons with their counts.
    pub failures: Vec<(String, usize)>,
}

/// The whole result of a drill.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// Drill name.
    pub drill: String,
    /// Seed used.
    pub seed: u64,
    /// Pass, fail or aborted.
    pub outcome: Outcome,
    /// Why it did not pass (first failing phase and reason, or the abort cause).
    pub reason: Option<String>,
    /// Start, Unix milliseconds.
    pub started_at_ms: u64,
    /// Real duration in ms.
    pub duration_ms: u64,
    /// Verdict per phase.
    pub phases: Vec<PhaseResult>,
    /// Per-probe summary.
    pub probes: Vec<ProbeSummary>,
    /// What the runner did and when.
    pub events: Vec<Event>,
    /// Cleanup outcome.
    pub cleanup: Cleanup,
}

impl DrillReport {
    /// Exit code for CI: 0 pass, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.outcome != Outcome::Pass)
    }

    /// A fixed-width table of the phases.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let name_w = self
            .phases
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        out.push_str(&format!(
            "{:<name_w$}  {:>9}  {:>7}  {:>13}  {:>7}  {:>7}  {}\n",
            "PHASE", "WINDOW", "SAMPLES", "AVAILABILITY", "P95", "P99", "VERDICT"
        ));
        for p in &self.phases {
            let window = match p.status {
                PhaseStatus::NotRun => "-".to_owned(),
                _ => format!("{}-{}s", secs(p.start_ms), secs(p.end_ms)),
            };
            let verdict = match p.status {
                PhaseStatus::Pass => "pass".to_owned(),
                PhaseStatus::NotRun => "not run".to_owned(),
                status => format!("{}: {}", status.as_str(), p.reasons.join("; ")),
            };
            let verdict = if p.end_ms < p.planned_end_ms && p.status != PhaseStatus::NotRun {
                format!(
                    "{verdict} (cut short, planned to {}s)",
                    secs(p.planned_end_ms)
                )
            } else {
                verdict
            };
            out.push_str(&format!(
                "{:<name_w$}  {:>9}  {:>7}  {:>12.1}%  {:>5}ms  {:>5}ms  {}\n",
                p.name, window, p.samples, p.availability, p.p95_ms, p.p99_ms, verdict
            ));
        }
        let outcome = match self.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Aborted => "ABORTED",
        };
        out.push_str(&format!("\ndrill {:?}: {outcome}", self.drill));
        if let Some(reason) = &self.reason {
            out.push_str(&format!(" ({reason})"));
        }
        out.push_str(&format!(
            "\ncleanup: {} fault(s) removed, {} proxy(ies) deleted, server configuration {}\n",
            self.cleanup.removed_faults,
            self.cleanup.deleted_proxies,
            if self.cleanup.restored {
                "restored".to_owned()
            } else if self.cleanup.problems.is_empty() {
                "NOT restored".to_owned()
            } else {
                format!("NOT restored: {}", self.cleanup.problems.join("; "))
            }
        ));
        if self.cleanup.restored {
            for p in &self.cleanup.problems {
                out.push_str(&format!("cleanup problem: {p}\n"));
            }
        }
        out
    }

    /// Why the drill did not pass when no phase says it (a stop condition, a failed cleanup):
    /// JUnit shows it as its own test case.
    fn run_reason(&self) -> Option<&str> {
        let reason = self.reason.as_deref()?;
        let told = self
            .phases
            .iter()
            .filter(|p| matches!(p.status, PhaseStatus::Fail | PhaseStatus::Invalid))
            .any(|p| reason.starts_with(&format!("phase {:?}", p.name)));
        (self.outcome != Outcome::Pass && !told).then_some(reason)
    }

    /// JUnit XML: one test case per phase (skipped when it never ran), plus a `run` case
    /// carrying the stop reason when no phase carries it.
    pub fn junit(&self) -> String {
        let run_reason = self.run_reason();
        let failures = self
            .phases
            .iter()
            .filter(|p| matches!(p.status, PhaseStatus::Fail | PhaseStatus::Invalid))
            .count()
            + usize::from(run_reason.is_some() && self.outcome == Outcome::Fail);
        let skipped = self
            .phases
            .iter()
            .filter(|p| p.status == PhaseStatus::NotRun)
            .count();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
            xml(&format!("drill: {}", self.drill)),
            self.phases.len() + usize::from(run_reason.is_some()),
            failures,
            u8::from(self.outcome == Outcome::Aborted),
            self.duration_ms as f64 / 1000.0
        ));
        for p in &self.phases {
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">\n",
                xml(&format!("drill.{}", self.drill)),
                xml(&p.name),
                p.end_ms.saturating_sub(p.start_ms) as f64 / 1000.0
            ));
            if p.status == PhaseStatus::NotRun {
                out.push_str(&format!(
                    "      <skipped message=\"{}\"/>\n",
                    xml(&p.reasons.join("; "))
                ));
            } else if !p.pass {
                let message = match p.status {
                    PhaseStatus::Invalid => format!("invalid: {}", p.reasons.join("; ")),
                    _ => p.reasons.join("; "),
                };
                out.push_str(&format!(
                    "      <failure message=\"{}\">samples={} availability={}% p95={}ms p99={}ms</failure>\n",
                    xml(&message),
                    p.samples,
                    p.availability,
                    p.p95_ms,
                    p.p99_ms
                ));
            }
            out.push_str("    </testcase>\n");
        }
        if let Some(reason) = run_reason {
            let tag = if self.outcome == Outcome::Aborted {
                "error"
            } else {
                "failure"
            };
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"run\"><{tag} message=\"{}\"/></testcase>\n",
                xml(&format!("drill.{}", self.drill)),
                xml(reason)
            ));
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
}

/// Milliseconds as seconds for the table: `2`, or `1.5` when not whole (never `0-0s` for a
/// sub-second phase).
fn secs(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        (ms / 1000).to_string()
    } else {
        format!("{:.1}", ms as f64 / 1000.0)
    }
}

/// Escapes text for XML attributes and content.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_windows_keep_sub_second_bounds() {
        assert_eq!(super::secs(0), "0");
        assert_eq!(super::secs(2000), "2");
        assert_eq!(super::secs(500), "0.5");
        assert_eq!(super::secs(1300), "1.3");
    }

    #[test]
    fn xml_escaping() {
        assert_eq!(super::xml("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
