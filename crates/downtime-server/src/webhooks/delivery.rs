//! Delivering to one hook: the queue's jobs, the signed request, retries with backoff,
//! and the delivery log the API shows.
//!
//! Each hook has one [`worker`] task, started by `store.rs` when the hook starts; it takes
//! the jobs [`Webhooks::enqueue`] queued, one at a time, and records every attempt in the
//! hook's bounded log. Kept apart from the hook definitions so that what is sent, and how
//! failures read in the log, is in one place.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::header;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::policy::{PolicyResolver, literal_refusal};
use super::{
    DELIVERY_HEADER, EVENT_HEADER, EventKind, Hook, Inner, SIGNATURE_HEADER, Webhooks, lock,
    random_id,
};
use crate::web::clock;

/// What a delivery log says for any failure to connect, a refused target included.
pub const CONNECT_FAILED: &str = "could not connect to the receiver";

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// When it started, RFC 3339.
    pub at: String,
    /// The receiver's status code, if it answered.
    pub status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

/// One delivery (an event sent to one hook) with its attempts.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// Identifier, sent as `X-Downtime-Delivery`.
    pub id: String,
    /// Event name.
    pub event: &'static str,
    /// When it was queued, RFC 3339.
    pub created_at: String,
    /// `pending`, `retrying`, `delivered`, `failed` or `dropped`.
    pub state: &'static str,
    /// Attempts so far, oldest first.
    pub attempts: Vec<Attempt>,
}

/// One queued delivery: what a hook's task sends, and under which id.
pub(super) struct Job {
    delivery: String,
    event: EventKind,
    body: Bytes,
}

/// `sha256=<hex>` of `body` keyed with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm cannot run.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

impl Webhooks {
    pub(super) fn enqueue(&self, hook: &Hook, event: EventKind, data: &Value) {
        let delivery = random_id("dl_");
        let now = clock::rfc3339(clock::now_ms());
        let mut payload = json!({
            "meta": {
                "event": event.as_str(),
                "delivery_id": delivery,
                "webhook_id": hook.info.id,
                "created_at": now,
            }
        });
        if let (Some(map), Value::Object(extra)) = (payload.as_object_mut(), data) {
            for (k, v) in extra {
                map.insert(k.clone(), v.clone());
            }
        }
        let body = Bytes::from(serde_json::to_vec(&payload).unwrap_or_default());
        // The delivery is logged before its job is queued: the worker may run the first
        // attempt at once, and an attempt for a delivery not yet in the log would be lost.
        {
            let mut log = lock(&hook.log);
            log.push_back(Delivery {
                id: delivery.clone(),
                event: event.as_str(),
                created_at: now,
                state: "pending",
                attempts: Vec::new(),
            });
            while log.len() > self.inner.options.log.max(1) {
                log.pop_front();
            }
        }
        let job = Job {
            delivery,
            event,
            body,
        };
        if let Err(refused) = hook.tx.try_send(job) {
            let delivery = match &refused {
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => {
                    &job.delivery
                }
            };
            update_log(&hook.log, delivery, |d| d.state = "dropped");
            self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(webhook = %hook.info.id, event = event.as_str(), "webhook queue full; delivery dropped");
        }
    }
}

impl Inner {
    /// A client for one hook's receiver: no redirects, and names resolved through the
    /// policy with the URL's port.
    fn client_for(&self, port: u16) -> reqwest::Client {
        let builder = match &self.tls {
            Some(config) => reqwest::Client::builder().tls_backend_preconfigured(config.clone()),
            None => reqwest::Client::builder(),
        };
        builder
            .timeout(self.options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("downtime-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(PolicyResolver {
                policy: self.policy.clone(),
                port,
            })
            .build()
            .unwrap_or_default()
    }
}

fn update_log(log: &Mutex<VecDeque<Delivery>>, id: &str, f: impl FnOnce(&mut Delivery)) {
    let mut log = lock(log);
    if let Some(d) = log.iter_mut().rev().find(|d| d.id == id) {
        f(d);
    }
}

/// Delivers a hook's queue in order, one delivery at a time, retrying each with backoff.
pub(super) async fn worker(
    inner: Arc<Inner>,
    url: String,
    secret: Vec<u8>,
    mut rx: mpsc::Receiver<Job>,
    log: Arc<Mutex<VecDeque<Delivery>>>,
    cancel: CancellationToken,
) {
    let parsed = reqwest::Url::parse(&url).ok();
    let port = parsed
        .as_ref()
        .and_then(reqwest::Url::port_or_known_default)
        .unwrap_or(80);
    let client = inner.client_for(port);
    loop {
        let job = tokio::select! {
            () = cancel.cancelled() => return,
            job = rx.recv() => match job { Some(j) => j, None => return },
        };
        let sig = signature(&secret, &job.body);
        let attempts = inner.options.attempts.max(1);
        for attempt in 1..=attempts {
            let started_ms = clock::now_ms();
            let started = tokio::time::Instant::now();
            let refused = parsed
                .as_ref()
                .and_then(|u| literal_refusal(&inner.policy, u));
            if let Some(why) = &refused {
                tracing::warn!(url = ?url, reason = ?why, "webhook target refused");
            }
            let request = client
                .post(&url)
                .header(header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, &sig)
                .header(EVENT_HEADER, job.event.as_str())
                .header(DELIVERY_HEADER, &job.delivery)
                .body(job.body.clone())
                .send();
            let outcome = tokio::select! {
                () = cancel.cancelled() => return,
                r = request, if refused.is_none() => Some(r),
                () = std::future::ready(()), if refused.is_some() => None,
            };
            let (status, error) = match outcome {
                // A refused target reads as a closed port (see the module documentation).
                None => (None, Some(CONNECT_FAILED.to_owned())),
                Some(outcome) => match outcome {
                    Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
                    Ok(r) => (
                        Some(r.status().as_u16()),
                        Some(format!("receiver answered {}", r.status())),
                    ),
                    Err(e) if e.is_timeout() => (
                        None,
                        Some(format!("no answer within {:?}", inner.options.timeout)),
                    ),
                    Err(e) if crate::tls::certificate_problem(&e).is_some() => {
                        let why = crate::tls::certificate_problem(&e).unwrap_or_default();
                        (
                            None,
                            Some(format!(
                                "the receiver's certificate could not be verified: {why}"
                            )),
                        )
                    }
                    Err(e) if e.is_connect() => {
                        tracing::debug!(url = ?url, error = %error_chain(&e), "webhook delivery failed");
                        (None, Some(CONNECT_FAILED.to_owned()))
                    }
                    Err(e) => (None, Some(error_chain(&e))),
                },
            };
            let ok = error.is_none();
            let last = attempt == attempts;
            let record = Attempt {
                at: clock::rfc3339(started_ms),
                status,
                error,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            };
            let state = if ok {
                inner.stats.delivered.fetch_add(1, Ordering::Relaxed);
                "delivered"
            } else {
                inner.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                if last {
                    inner.stats.failed.fetch_add(1, Ordering::Relaxed);
                    "failed"
                } else {
                    "retrying"
                }
            };
            update_log(&log, &job.delivery, |d| {
                d.state = state;
                d.attempts.push(record);
            });
            if ok || last {
                break;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(inner.options.delay_after(attempt)) => {}
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
