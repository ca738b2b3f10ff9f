//! The drill's timeline: every API call it will make and when, computed from the plan alone
//! (so `drill check` can show it and tests can check it without a clock).

use std::time::Duration;

use downtime_model::drill::{DrillPlan, fault_name};

/// One planned change.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create a fault (with this toxicity, if a ramp sets it).
    Apply {
        /// Step index.
        step: usize,
        /// Fault index within the step.
        fault: usize,
        /// Toxicity from a ramp, else the fault's own.
        toxicity: Option<f32>,
    },
    /// Change a live fault's toxicity (ramp level).
    SetToxicity {
        /// Step index.
        step: usize,
        /// Fault index within the step.
        fault: usize,
        /// New probability.
        toxicity: f32,
    },
    /// Remove a fault.
    Remove {
        /// Step index.
        step: usize,
        /// Fault index within the step.
        fault: usize,
    },
}

/// A planned action at an offset from the drill's start.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// When, from the drill's start (baseline included).
    pub at: Duration,
    /// What.
    pub action: Action,
}

/// Every action in time order; at equal times removals come first, so a step that ends
/// when the next begins frees its faults before the next one injects.
pub fn timeline(plan: &DrillPlan) -> Vec<Planned> {
    let mut out = Vec::new();
    for (si, step) in plan.steps.iter().enumerate() {
        let start = plan.baseline.saturating_add(step.at);
        let end = start.saturating_add(step.duration);
        for fi in 0..step.faults.len() {
            let first = step.ramp.map(|r| r.level(0, step.duration).0);
            out.push(Planned {
                at: start,
                action: Action::Apply {
                    step: si,
                    fault: fi,
                    toxicity: first,
                },
            });
            if let Some(ramp) = step.ramp {
                for level in 1..ramp.steps {
                    let (p, offset) = ramp.level(level, step.duration);
                    out.push(Planned {
                        at: start.saturating_add(offset),
                        action: Action::SetToxicity {
                            step: si,
                            fault: fi,
                            toxicity: p,
                        },
                    });
                }
            }
            out.push(Planned {
                at: end,
                action: Action::Remove {
                    step: si,
                    fault: fi,
                },
            });
        }
    }
    let rank = |a: &Action| match a {
        Action::Remove { .. } => 0,
        Action::SetToxicity { .. } => 1,
        Action::Apply { .. } => 2,
    };
    out.sort_by(|a, b| a.at.cmp(&b.at).then(rank(&a.action).cmp(&rank(&b.action))));
    out
}

/// A human description of an action, for `drill check` and progress lines.
pub fn describe(plan: &DrillPlan, action: &Action) -> String {
    let (step, fault) = match action {
        Action::Apply { step, fault, .. }
        | Action::SetToxicity { step, fault, .. }
        | Action::Remove { step, fault } => (*step, *fault),
    };
    let s = &plan.steps[step];
    let f = &s.faults[fault];
    let name = fault_name(s, f);
    let kind = f.request.kind.as_deref().unwrap_or("?");
    match action {
        Action::Apply { toxicity, .. } => match toxicity {
            Some(p) => format!("inject {kind} {name:?} into {} (toxicity {p:.2})", f.proxy),
            None => format!("inject {kind} {name:?} into {}", f.proxy),
        },
        Action::SetToxicity { toxicity, .. } => {
            format!("set {name:?} on {} to toxicity {toxicity:.2}", f.proxy)
        }
        Action::Remove { .. } => format!("remove {name:?} from {}", f.proxy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_and_order() {
        let plan = DrillPlan::parse(
            r#"
baseline = "1s"
[[probe]]
url = "http://127.0.0.1:1/"
[[step]]
name = "a"
duration = "4s"
ramp = { from = 0.0, to = 1.0, steps = 3 }
[[step.fault]]
proxy = "p"
type = "latency"
[[step]]
name = "b"
at = "4s"
duration = "1s"
[[step.fault]]
proxy = "p"
type = "timeout"
"#,
        )
        .unwrap();
        let t = timeline(&plan);
        let at: Vec<u128> = t.iter().map(|p| p.at.as_millis()).collect();
        assert_eq!(at, vec![1000, 2333, 3666, 5000, 5000, 6000]);
        assert!(matches!(t[0].action, Action::Apply { toxicity: Some(p), .. } if p == 0.0));
        assert!(matches!(t[2].action, Action::SetToxicity { toxicity, .. } if toxicity == 1.0));
        assert!(
            matches!(t[3].action, Action::Remove { step: 0, .. }),
            "removal first at 5 s"
        );
        assert!(matches!(t[4].action, Action::Apply { step: 1, .. }));
        assert_eq!(
            describe(&plan, &t[5].action),
            "remove \"drill-b-timeout\" from p"
        );
    }
}
