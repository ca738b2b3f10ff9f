//! The faults a drill injects: applying, ramping and removing them as the timeline says
//! ([`Run::apply`]), and noticing when the server lost one ([`Run::lost_faults`],
//! [`Run::lose`]), which makes its step's phase invalid.
//!
//! Its own module because these are the only calls that change faults during the timeline,
//! and each sets a TTL: every injected fault lives its step plus [`TTL_MARGIN`], so even if
//! the runner dies the server removes them by itself.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use downtime_model::drill::fault_name;
use serde_json::{Value, json};

use super::client::enc;
use super::state::Run;
use super::timeline::{Action, describe};
use crate::history::client::FaultChange;

/// Extra life given to injected faults beyond their step, in case the runner dies.
pub(super) const TTL_MARGIN: Duration = Duration::from_secs(5);

/// A fault the runner injected and has not removed yet.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Injected {
    pub(super) proxy: String,
    pub(super) name: String,
    /// Index of its step in the plan.
    pub(super) step: usize,
}

impl Run<'_> {
    /// Asks the server whether every injected fault is still there, and returns the ones it
    /// lost (a restart, someone's reset) with when and why: each makes its step's phase
    /// invalid, as it no longer tests what the plan says.
    pub(super) async fn lost_faults(&self) -> Vec<(Injected, Duration, String)> {
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
    pub(super) fn lose(&mut self, fault: &Injected, at: Duration, why: &str) {
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

    /// Makes one change of the timeline on the server (apply, ramp or remove a fault) and
    /// records it: in the log at the moment the call was issued, and in the history.
    pub(super) async fn apply(&mut self, action: &Action) -> Result<(), String> {
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
}
