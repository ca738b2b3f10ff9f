//! Probes of the app under test: each request is judged against the probe's conditions, and
//! a request that is refused or hangs counts as a failure within its timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use downtime_model::drill::{Expect, Probe};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::verdict::Sample;

/// Most bytes of a probe's answer read and judged (`body_contains`, `json`); the rest is not
/// read (documented in `docs/drills.md`).
pub const MAX_BODY: usize = 64 * 1024;

/// The client probes are sent with: `https://` verified against the system's roots plus
/// the `extra_ca` PEM files (`serve --extra-ca`; each read now, errors name the file).
pub fn client(extra_ca: &[std::path::PathBuf]) -> Result<reqwest::Client, String> {
    crate::tls::client_builder(extra_ca)?
        .user_agent(concat!("downtime-probe/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| format!("probe client: {e}"))
}

/// Sends one probe request and judges the answer.
pub async fn probe_once(client: &reqwest::Client, probe: &Probe) -> (Duration, Result<(), String>) {
    let started = Instant::now();
    let method =
        reqwest::Method::from_bytes(probe.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = client.request(method, &probe.url).timeout(probe.timeout);
    for (k, v) in &probe.headers {
        request = request.header(k, v);
    }
    if let Some(body) = &probe.body {
        request = request.body(body.clone());
    }
    let answer = async {
        let response = request.send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let mut response = response;
        let mut body: Vec<u8> = Vec::new();
        while body.len() < MAX_BODY {
            match response.chunk().await.map_err(describe)? {
                Some(chunk) => {
                    let room = MAX_BODY - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                None => break,
            }
        }
        Ok::<_, String>((status, body))
    };
    let outcome = match tokio::time::timeout(probe.timeout, answer).await {
        Err(_) => Err(timed_out(probe.timeout)),
        Ok(Err(e)) => Err(e),
        Ok(Ok((status, body))) => judge(&probe.expect, status, &body, started.elapsed()),
    };
    (started.elapsed(), outcome)
}

/// The reason of a request that got no full answer within `timeout`.
pub fn timed_out(timeout: Duration) -> String {
    format!("no answer within {}ms", timeout.as_millis())
}

/// Whether a failure reason is a timeout (a hang), for the progress line.
pub fn is_timeout(reason: &str) -> bool {
    reason == "timed out" || reason.starts_with("no answer within")
}

/// A client error as a kind, not its text: the text names ports, addresses and byte counts
/// that differ from one request to the next and would split one cause into many reasons.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    if e.is_connect() {
        return "connection refused or failed".to_owned();
    }
    let mut io_kind = None;
    let mut source = std::error::Error::source(&e);
    let mut text = String::new();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        text = s.to_string();
        source = s.source();
    }
    match io_kind {
        Some(std::io::ErrorKind::ConnectionReset) => "connection reset".to_owned(),
        Some(std::io::ErrorKind::BrokenPipe) => "connection closed by the app".to_owned(),
        Some(std::io::ErrorKind::UnexpectedEof) => {
            "connection closed before a full answer".to_owned()
        }
        _ if e.is_body() || e.is_decode() => "answer body cut short or unreadable".to_owned(),
        _ if text.contains("incomplete") || text.contains("closed") => {
            "connection closed before a full answer".to_owned()
        }
        _ if e.is_redirect() => "too many redirects".to_owned(),
        _ => "not a valid HTTP answer".to_owned(),
    }
}

/// A latency over `budget` as a band of multiples of the budget (1-1.5x, 1.5-2x, 2-4x,
/// 4-8x, over 8x), so failures of one cause share one reason instead of one per millisecond.
pub fn latency_band(latency: Duration, budget: Duration) -> String {
    let b = budget.as_millis().max(1);
    let l = latency.as_millis();
    let edges = [(3, 2), (2, 1), (4, 1), (8, 1)];
    let mut low = b;
    for (num, den) in edges {
        let high = b * num / den;
        if l < high {
            return format!("took {low}-{high}ms, over the {b}ms budget");
        }
        low = high;
    }
    format!("took over {low}ms, over the {b}ms budget")
}

/// A JSON value for a reason: short scalars as themselves, anything else by its type (a
/// timestamp or an id in the answer would otherwise make every failure its own reason).
fn json_kind(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) => value.to_string(),
        Value::String(s) if s.chars().count() <= 32 => value.to_string(),
        Value::Number(_) => "another number".to_owned(),
        Value::String(_) => "another string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// Checks status, body and latency conditions.
pub fn judge(expect: &Expect, status: u16, body: &[u8], latency: Duration) -> Result<(), String> {
    if !expect
        .status
        .iter()
        .any(|(a, b)| (*a..=*b).contains(&status))
    {
        return Err(format!("status {status} not expected"));
    }
    if let Some(needle) = &expect.body_contains
        && !String::from_utf8_lossy(body).contains(needle.as_str())
    {
        return Err(format!("body does not contain {needle:?}"));
    }
    if !expect.json.is_empty() {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| "body is not JSON".to_owned())?;
        for (pointer, want) in &expect.json {
            let got = value.pointer(pointer);
            if got != Some(want) {
                return Err(format!(
                    "{pointer} is {} instead of {want}",
                    got.map_or_else(|| "missing".to_owned(), json_kind)
                ));
            }
        }
    }
    if let Some(budget) = expect.latency
        && latency > budget
    {
        return Err(latency_band(latency, budget));
    }
    Ok(())
}

/// How many probe requests are under way (sent, not yet judged): the progress line counts
/// them, so a hanging app shows as requests piling up, not as "no failures yet".
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Requests under way now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.clone())
    }
}

/// Counts one request under way until dropped (also when its task is cancelled).
struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs every probe at its interval from `origin` until `stop`; each request runs in its own
/// task so a hanging app never delays the schedule.
pub fn spawn_probes(
    client: reqwest::Client,
    probes: Vec<Probe>,
    origin: Instant,
    stop: CancellationToken,
    tracker: &TaskTracker,
    samples: mpsc::Sender<Sample>,
    in_flight: &InFlight,
) {
    for (index, probe) in probes.into_iter().enumerate() {
        let (client, stop, samples, tracker2, in_flight) = (
            client.clone(),
            stop.clone(),
            samples.clone(),
            tracker.clone(),
            in_flight.clone(),
        );
        tracker.spawn(async move {
            let probe = std::sync::Arc::new(probe);
            let mut tick: u32 = 0;
            loop {
                let due = probe
                    .interval
                    .checked_mul(tick)
                    .and_then(|d| origin.checked_add(d));
                let Some(due) = due else { return };
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(due) => {}
                }
                tick = tick.saturating_add(1);
                let (client, probe, samples) = (client.clone(), probe.clone(), samples.clone());
                let guard = in_flight.enter();
                tracker2.spawn(async move {
                    let at = Instant::now().saturating_duration_since(origin);
                    let (latency, outcome) = probe_once(&client, &probe).await;
                    drop(guard);
                    // Bounded queue: when the runner falls behind, this task waits with its
                    // one finished sample (the next request still starts on time).
                    let _ = samples
                        .send(Sample {
                            probe: index,
                            at,
                            latency,
                            ok: outcome.is_ok(),
                            timed_out: outcome.as_ref().err().is_some_and(|r| is_timeout(r)),
                            reason: outcome.err(),
                        })
                        .await;
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging() {
        let mut e = Expect {
            status: vec![(200, 299)],
            ..Expect::default()
        };
        assert!(judge(&e, 204, b"", Duration::ZERO).is_ok());
        assert_eq!(
            judge(&e, 503, b"", Duration::ZERO).unwrap_err(),
            "status 503 not expected"
        );
        e.body_contains = Some("ok".into());
        assert!(judge(&e, 200, b"not fine", Duration::ZERO).is_err());
        e.body_contains = None;
        e.json.insert("/degraded".into(), serde_json::json!(false));
        assert!(judge(&e, 200, br#"{"degraded": false}"#, Duration::ZERO).is_ok());
        assert!(judge(&e, 200, br#"{"degraded": true}"#, Duration::ZERO).is_err());
        assert!(judge(&e, 200, b"<html>", Duration::ZERO).is_err());
        e.json.clear();
        e.latency = Some(Duration::from_millis(100));
        assert_eq!(
            judge(&e, 200, b"", Duration::from_millis(120)).unwrap_err(),
            "took 100-150ms, over the 100ms budget"
        );
    }

    /// Issue 14: one reason per millisecond ("took 1501ms", "took 1502ms") hid the real top
    /// reasons. Latencies over the budget fall in a few bands of the budget.
    #[test]
    fn issue_14_latency_reasons_are_bands_of_the_budget() {
        let budget = Duration::from_millis(1000);
        let band = |ms| latency_band(Duration::from_millis(ms), budget);
        assert_eq!(band(1001), "took 1000-1500ms, over the 1000ms budget");
        assert_eq!(band(1499), band(1200));
        assert_eq!(band(1500), "took 1500-2000ms, over the 1000ms budget");
        assert_eq!(band(3999), "took 2000-4000ms, over the 1000ms budget");
        assert_eq!(band(7000), "took 4000-8000ms, over the 1000ms budget");
        assert_eq!(band(60_000), "took over 8000ms, over the 1000ms budget");
        let distinct: std::collections::BTreeSet<String> = (1001..3000).map(band).collect();
        assert_eq!(distinct.len(), 3, "{distinct:?}");
        assert_eq!(
            latency_band(Duration::from_millis(5), Duration::ZERO),
            "took 4-8ms, over the 1ms budget"
        );
        let mut e = Expect {
            status: vec![(200, 299)],
            ..Expect::default()
        };
        e.json.insert("/at".into(), serde_json::json!("x"));
        assert_eq!(
            judge(&e, 200, br#"{"at": 1712345678}"#, Duration::ZERO).unwrap_err(),
            "/at is another number instead of \"x\""
        );
    }
}
