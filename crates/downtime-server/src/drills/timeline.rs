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

/// What a fault does, in words for the status page ("maintenance answers", "HTTP 500
/// errors", "3000ms of added latency").
fn fault_effect(kind: &str, attributes: Option<&serde_json::Value>) -> String {
    let attr = |key: &str| {
        attributes
            .and_then(|a| a.get(key))
            .and_then(serde_json::Value::as_u64)
    };
    match kind {
        "maintenance" => "maintenance answers".to_owned(),
        "status" => match attr("status") {
            Some(code) => format!("HTTP {code} errors"),
            None => "error answers".to_owned(),
        },
        "latency" | "http_latency" => match attr("latency") {
            Some(ms) => format!("{ms}ms of added latency"),
            None => "added latency".to_owned(),
        },
        "abort" => "aborted requests".to_owned(),
        "rate_limit" => "rate limiting".to_owned(),
        "router_timeout" => "router timeouts".to_owned(),
        "slow_body" => "slow answer bodies".to_owned(),
        "timeout" => "connection timeouts".to_owned(),
        "reset_peer" => "connection resets".to_owned(),
        "bandwidth" => match attr("rate") {
            Some(rate) => format!("bandwidth limited to {rate} KB/s"),
            None => "limited bandwidth".to_owned(),
        },
        "slow_close" => "delayed connection closes".to_owned(),
        "slicer" => "sliced packets".to_owned(),
        "limit_data" => "connections cut after a few bytes".to_owned(),
        other => format!("{other} faults"),
    }
}

/// An incident update for people, e.g. `payments: maintenance answers injected by drill
/// "checkout" (step 1 of 3)`; `None` for nothing worth telling.
pub fn for_people(plan: &DrillPlan, action: &Action) -> Option<String> {
    let (step, fault) = match action {
        Action::Apply { step, fault, .. }
        | Action::SetToxicity { step, fault, .. }
        | Action::Remove { step, fault } => (*step, *fault),
    };
    let s = plan.steps.get(step)?;
    let f = s.faults.get(fault)?;
    let effect = fault_effect(
        f.request.kind.as_deref().unwrap_or("?"),
        f.request.attributes.as_ref(),
    );
    let which = format!("step {} of {}", step + 1, plan.steps.len());
    let drill = &plan.name;
    let share = |p: f32| {
        if p < 1.0 {
            format!(" on {:.0}% of requests", f64::from(p) * 100.0)
        } else {
            String::new()
        }
    };
    Some(match action {
        Action::Apply { toxicity, .. } => {
            let p = toxicity.or(f.request.toxicity).unwrap_or(1.0);
            format!(
                "{}: {effect}{} injected by drill {drill:?} ({which}).",
                f.proxy,
                share(p)
            )
        }
        Action::SetToxicity { toxicity, .. } => {
            let share = if *toxicity < 1.0 {
                share(*toxicity)
            } else {
                " on every request".to_owned()
            };
            format!(
                "{}: {effect} now{share} (drill {drill:?}, {which}).",
                f.proxy
            )
        }
        Action::Remove { .. } => {
            let last = plan
                .steps
                .iter()
                .map(|t| t.at.saturating_add(t.duration))
                .max()
                == Some(s.at.saturating_add(s.duration));
            if last {
                format!(
                    "{}: {effect} removed; drill {drill:?} injected its last fault and watches the recovery.",
                    f.proxy
                )
            } else {
                format!(
                    "{}: {effect} removed ({which} of drill {drill:?} ended).",
                    f.proxy
                )
            }
        }
    })
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
        assert_eq!(
            for_people(&plan, &t[0].action).unwrap(),
            "p: added latency on 0% of requests injected by drill \"drill\" (step 1 of 2)."
        );
        assert_eq!(
            for_people(&plan, &t[4].action).unwrap(),
            "p: connection timeouts injected by drill \"drill\" (step 2 of 2)."
        );
        assert_eq!(
            for_people(&plan, &t[5].action).unwrap(),
            "p: connection timeouts removed; drill \"drill\" injected its last fault and watches the recovery."
        );
    }
}
