//! The live progress line of a drill on stderr ([`Progress`], [`progress_line`]): one
//! rewritten line on a terminal, plain lines every few seconds otherwise.
//!
//! Apart from the runner because it is output only: it reads the tally and never changes
//! the run. [`progress_line`] stays reachable as `drills::runner::progress_line`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tokio::time::Instant;

use super::verdict::{RecentStats, Tally};

/// Live progress on stderr: one rewritten line on a terminal, plain lines otherwise.
pub(super) struct Progress {
    tty: bool,
    quiet: bool,
    last_plain: Option<Instant>,
    last_phase: String,
}

impl Progress {
    /// Progress on stderr, rewritten in place when stderr is a terminal; none when `quiet`.
    pub(super) fn new(quiet: bool) -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            quiet,
            last_plain: None,
            last_phase: String::new(),
        }
    }

    pub(super) fn show(
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

    pub(super) fn event(&mut self, text: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{text}");
    }

    pub(super) fn done(&mut self) {
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
