//! The drill runner's side of the history: best-effort reports to `/history/...` on the
//! server the drill runs against.
//!
//! Nothing here may slow or fail a drill: calls are queued to one task that posts them in
//! order (so the incident opens before its updates), probe samples are batched (at most one
//! post every [`SAMPLE_EVERY`]), and the first refusal of `POST /history/drills` (plain
//! Toxiproxy answers 404) turns the recorder off for the rest of the run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use super::types::{ProbeSample, Timestamp};
use crate::drills::report::{DrillReport, Outcome};

/// Longest wait between two posts of probe samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How often the runner tells the server it is alive; the server marks a drill abandoned
/// after [`super::drills::ABANDON_AFTER`] without one.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// Most queued messages; beyond, reports are dropped (the drill goes on).
const QUEUE: usize = 1024;
/// How long the end of a drill waits for the last reports.
const FINISH_WAIT: Duration = Duration::from_secs(5);

/// A change to the faults a drill has live.
#[derive(Debug, Clone)]
pub enum FaultChange {
    /// A fault was created with this body.
    Applied {
        /// Proxy name.
        proxy: String,
        /// The toxic body sent to the API.
        body: Value,
    },
    /// A fault's toxicity changed (ramps).
    Toxicity {
        /// Proxy name.
        proxy: String,
        /// Fault name.
        name: String,
        /// New toxicity.
        toxicity: f32,
    },
    /// A fault was removed.
    Removed {
        /// Proxy name.
        proxy: String,
        /// Fault name.
        name: String,
    },
}

enum Msg {
    Phase(Value),
    Samples(Vec<ProbeSample>),
    End(Value),
}

/// Reports one drill run; cheap to clone. [`DrillRecorder::disabled`] does nothing.
#[derive(Clone)]
pub struct DrillRecorder {
    inner: Option<Arc<Recorder>>,
}

struct Recorder {
    tx: mpsc::Sender<Msg>,
    task: Mutex<Option<JoinHandle<()>>>,
    probes: Vec<String>,
    urls: Vec<String>,
    origin_ms: i64,
    faults: std::sync::Mutex<BTreeMap<(String, String), Value>>,
}

impl DrillRecorder {
    /// A recorder that reports nothing.
    pub fn disabled() -> Self {
        DrillRecorder { inner: None }
    }

    /// Starts reporting the drill `name` to the API at `base` with `client` (whose
    /// User-Agent tells the server whether a person or a schedule runs it, and which carries
    /// the API token if there is one). `probes` are the probes' (name, url) by index;
    /// `origin` is the wall-clock time of the drill's time zero, which sample offsets are
    /// added to.
    pub fn start(
        base: &str,
        client: reqwest::Client,
        name: &str,
        seed: u64,
        probes: Vec<(String, String)>,
        origin: Timestamp,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let base = base.trim_end_matches('/').to_owned();
        let start = json!({ "name": name, "seed": seed });
        let task = tokio::spawn(post_all(client, base, start, rx));
        let (names, urls) = probes.into_iter().unzip();
        DrillRecorder {
            inner: Some(Arc::new(Recorder {
                tx,
                task: Mutex::new(Some(task)),
                probes: names,
                urls,
                origin_ms: origin.millis(),
                faults: std::sync::Mutex::new(BTreeMap::new()),
            })),
        }
    }

    fn send(&self, msg: Msg) {
        if let Some(inner) = &self.inner {
            // Full or closed: this report is lost, the drill is not slowed.
            let _ = inner.tx.try_send(msg);
        }
    }

    /// Notes a change of the live faults; [`DrillRecorder::phase`] reports them.
    pub fn fault_changed(&self, change: FaultChange) {
        let Some(inner) = &self.inner else { return };
        {
            let mut faults = match inner.faults.lock() {
                Ok(f) => f,
                Err(poisoned) => poisoned.into_inner(),
            };
            match change {
                FaultChange::Applied { proxy, body } => {
                    let name = body
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    faults.insert((proxy, name), body);
                }
                FaultChange::Toxicity {
                    proxy,
                    name,
                    toxicity,
                } => {
                    if let Some(body) = faults.get_mut(&(proxy, name)) {
                        body["toxicity"] = json!(toxicity);
                    }
                }
                FaultChange::Removed { proxy, name } => {
                    faults.remove(&(proxy, name));
                }
            }
        }
    }

    /// Reports the faults live now, in phase `phase`, with an update written for people
    /// (one per instant of the timeline, so back-to-back steps make one update).
    pub fn phase(&self, phase: &str, text: &str) {
        if self.inner.is_none() {
            return;
        }
        let body = self.phase_body(phase, text);
        self.send(Msg::Phase(body));
    }

    fn live_faults(inner: &Recorder) -> Vec<Value> {
        let faults = match inner.faults.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        faults
            .iter()
            .map(|((proxy, _), body)| json!({ "proxy": proxy, "toxic": body }))
            .collect()
    }

    /// Reports probe samples: `(probe index, offset from time zero, ok, latency)`.
    pub fn samples(&self, samples: impl IntoIterator<Item = (usize, Duration, bool, Duration)>) {
        let Some(inner) = &self.inner else { return };
        let batch: Vec<ProbeSample> = samples
            .into_iter()
            .filter_map(|(probe, at, ok, latency)| {
                let at_ms = i64::try_from(at.as_millis()).unwrap_or(i64::MAX);
                Some(ProbeSample {
                    endpoint: inner.probes.get(probe)?.clone(),
                    url: inner.urls.get(probe).cloned().unwrap_or_default(),
                    at: Timestamp(inner.origin_ms.saturating_add(at_ms)),
                    ok,
                    latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
                })
            })
            .collect();
        if !batch.is_empty() {
            self.send(Msg::Samples(batch));
        }
    }

    /// Reports the verdict and the report, then waits (briefly) for every report to be
    /// posted.
    pub async fn finish(&self, outcome: &str, reason: Option<&str>, report: Value) {
        let Some(inner) = &self.inner else { return };
        let end = json!({ "outcome": outcome, "reason": reason, "report": report });
        let _ = tokio::time::timeout(FINISH_WAIT, inner.tx.send(Msg::End(end))).await;
        if let Some(mut task) = inner.task.lock().await.take()
            && tokio::time::timeout(FINISH_WAIT, &mut task).await.is_err()
        {
            task.abort();
        }
    }

    /// Reports the end of the drill with the runner's report (verdict, reason, JSON).
    pub async fn finished(&self, report: &DrillReport) {
        if self.inner.is_none() {
            return;
        }
        let outcome = match report.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Aborted => "aborted",
        };
        let json = serde_json::to_value(report).unwrap_or(Value::Null);
        self.finish(outcome, report.reason.as_deref(), json).await;
    }

    /// The phase body with the faults live now.
    fn phase_body(&self, phase: &str, text: &str) -> Value {
        let faults = self
            .inner
            .as_deref()
            .map(DrillRecorder::live_faults)
            .unwrap_or_default();
        json!({ "phase": phase, "text": text, "faults": faults })
    }
}

/// Posts everything in order; stops posting after the drill could not be registered.
async fn post_all(
    client: reqwest::Client,
    base: String,
    start: Value,
    mut rx: mpsc::Receiver<Msg>,
) {
    let post = |path: String, body: Value| {
        let request = client.post(format!("{base}{path}")).json(&body);
        async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                Ok(r) => {
                    tracing::debug!(status = r.status().as_u16(), %path, "history report refused");
                    None
                }
                Err(e) => {
                    tracing::debug!(error = %e, %path, "history report failed");
                    None
                }
            }
        }
    };
    let id = post("/history/drills".to_owned(), start)
        .await
        .and_then(|v| v.get("id").and_then(Value::as_i64));
    let Some(id) = id else {
        // Plain Toxiproxy, or an old downtime: drain and forget.
        while let Some(msg) = rx.recv().await {
            if matches!(msg, Msg::End(_)) {
                return;
            }
        }
        return;
    };
    let mut pending: Vec<ProbeSample> = Vec::new();
    let mut flush_at = tokio::time::Instant::now() + SAMPLE_EVERY;
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            _ = heartbeat.tick() => {
                post(
                    format!("/history/drills/{id}/phases"),
                    json!({ "heartbeat": true }),
                )
                .await;
                continue;
            }
            () = tokio::time::sleep_until(flush_at), if !pending.is_empty() => {
                let samples = std::mem::take(&mut pending);
                post("/history/probes".to_owned(), json!({ "samples": samples })).await;
                continue;
            }
        };
        let Some(msg) = msg else { return };
        if let Msg::Samples(s) = msg {
            if pending.is_empty() {
                flush_at = tokio::time::Instant::now() + SAMPLE_EVERY;
            }
            pending.extend(s);
            continue;
        }
        // Samples first, so a phase or the end never overtakes the minutes before it.
        if !pending.is_empty() {
            let samples = std::mem::take(&mut pending);
            post("/history/probes".to_owned(), json!({ "samples": samples })).await;
        }
        match msg {
            Msg::Phase(body) => {
                post(format!("/history/drills/{id}/phases"), body).await;
            }
            Msg::End(end) => {
                post(format!("/history/drills/{id}/end"), end).await;
                return;
            }
            Msg::Samples(_) => {}
        }
    }
}
