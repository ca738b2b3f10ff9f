//! Cleanup after a drill and the check that it put the server back: removing the faults,
//! locks and proxies it added ([`Run::remove_faults`], [`Run::cleanup`]), then comparing the
//! proxies with the snapshot taken before the drill ([`not_restored`]).
//!
//! Its own module because cleanup always runs, after a failed setup as after a finished or
//! aborted drill, and because a drill that did not restore the server has not passed: the
//! result ([`Cleanup`]) is part of the verdict. [`not_restored`] stays reachable as
//! `drills::runner::not_restored`.

use std::collections::HashSet;

use downtime_model::drill::{DrillPlan, fault_name};
use serde_json::Value;

use super::client::enc;
use super::faults::Injected;
use super::report::Cleanup;
use super::runner::LOCK_NAME;
use super::state::Run;

impl Run<'_> {
    /// Removes every fault still injected (first thing on an abort, so faults never wait for
    /// in-flight probes to end).
    pub(super) async fn remove_faults(&mut self, cleanup: &mut Cleanup) {
        for Injected { proxy, name, .. } in std::mem::take(&mut self.injected) {
            match self
                .api
                .delete(&format!("/proxies/{}/toxics/{}", enc(&proxy), enc(&name)))
                .await
            {
                Ok(_) => cleanup.removed_faults += 1,
                Err(e) if e.contains("HTTP 404") => {}
                Err(e) => cleanup.problems.push(e),
            }
        }
    }

    /// Removes every injected fault, lock and created proxy; never gives up early.
    pub(super) async fn cleanup(&mut self, snapshot: &Value, mut cleanup: Cleanup) -> Cleanup {
        self.remove_faults(&mut cleanup).await;
        for proxy in std::mem::take(&mut self.locked) {
            if let Err(e) = self
                .api
                .delete(&format!("/proxies/{}/toxics/{LOCK_NAME}", enc(&proxy)))
                .await
                && !e.contains("HTTP 404")
            {
                cleanup.problems.push(e);
            }
        }
        let created = self.created.clone();
        for proxy in std::mem::take(&mut self.created) {
            match self.api.delete(&format!("/proxies/{}", enc(&proxy))).await {
                Ok(_) => cleanup.deleted_proxies += 1,
                Err(e) => cleanup.problems.push(e),
            }
        }
        match self.api.get("/proxies").await {
            Ok(after) => {
                let ours = ours(self.plan);
                let left = not_restored(snapshot, &after, &self.touched, &created, &ours);
                cleanup.restored = left.is_empty();
                cleanup.problems.extend(left);
            }
            Err(e) => {
                cleanup.problems.push(e);
                cleanup.restored = false;
            }
        }
        cleanup
    }
}

/// The fault names this drill may leave on a proxy: its faults and its lock.
fn ours(plan: &DrillPlan) -> HashSet<String> {
    let mut names: HashSet<String> = plan
        .steps
        .iter()
        .flat_map(|s| s.faults.iter().map(move |f| fault_name(s, f)))
        .collect();
    names.insert(LOCK_NAME.to_owned());
    names
}

/// What this drill changed and did not put back, named: a proxy it created that is still
/// there, a proxy it touched that is gone, a fault or lock of its own still on a proxy.
/// Changes made by others meanwhile (another drill's faults, a proxy created by hand) are
/// not this drill's to restore and are ignored.
pub fn not_restored(
    before: &Value,
    after: &Value,
    touched: &[String],
    created: &[String],
    ours: &HashSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for proxy in created {
        if after.get(proxy).is_some() {
            problems.push(format!("proxy {proxy:?} created by the drill still exists"));
        }
    }
    let names = |p: &Value| -> HashSet<String> {
        p.get("toxics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    for proxy in touched.iter().filter(|p| !created.contains(p)) {
        let Some(was) = before.get(proxy) else {
            continue;
        };
        let Some(now) = after.get(proxy) else {
            problems.push(format!(
                "proxy {proxy:?} is gone (it existed before the drill)"
            ));
            continue;
        };
        let had = names(was);
        let mut left: Vec<String> = names(now)
            .into_iter()
            .filter(|n| ours.contains(n) && !had.contains(n))
            .collect();
        left.sort();
        for name in left {
            problems.push(format!(
                "proxy {proxy:?}: fault {name:?} of the drill is still there"
            ));
        }
    }
    problems
}
