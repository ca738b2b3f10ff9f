//! Probes of the app under test: each request is judged against the probe's conditions, and
//! a request that is refused or hangs counts as a failure within its timeout.

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
        Err(_) => Err(format!("no answer within {}ms", probe.timeout.as_millis())),
        Ok(Err(e)) => Err(e),
        Ok(Ok((status, body))) => judge(&probe.expect, status, &body, started.elapsed()),
    };
    (started.elapsed(), outcome)
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection refused or failed".to_owned()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
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
                    got.map_or_else(|| "missing".to_owned(), ToString::to_string)
                ));
            }
        }
    }
    if let Some(budget) = expect.latency
        && latency > budget
    {
        return Err(format!(
            "took {}ms, over the {}ms budget",
            latency.as_millis(),
            budget.as_millis()
        ));
    }
    Ok(())
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
) {
    for (index, probe) in probes.into_iter().enumerate() {
        let (client, stop, samples, tracker2) = (
            client.clone(),
            stop.clone(),
            samples.clone(),
            tracker.clone(),
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
                tracker2.spawn(async move {
                    let at = Instant::now().saturating_duration_since(origin);
                    let (latency, outcome) = probe_once(&client, &probe).await;
                    // Bounded queue: when the runner falls behind, this task waits with its
                    // one finished sample (the next request still starts on time).
                    let _ = samples
                        .send(Sample {
                            probe: index,
                            at,
                            latency,
                            ok: outcome.is_ok(),
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
        assert!(
            judge(&e, 200, b"", Duration::from_millis(150))
                .unwrap_err()
                .contains("budget")
        );
    }
}
