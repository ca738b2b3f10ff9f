//! Webhooks: JSON notifications of component and incident changes, signed with
//! HMAC-SHA256, retried with exponential backoff, with a delivery log per hook.
//!
//! A slow or broken receiver must never slow the server. So [`Webhooks::publish`] never
//! waits: each hook has its own task and a bounded queue; when the queue is full the
//! delivery is dropped, logged as `dropped` and counted. Each attempt has a timeout, and a
//! hook's task sleeps between retries without holding anything.
//!
//! # Persistence
//! With a history file (`downtime serve --db FILE`) the hook definitions (id, url, secret,
//! events, creation time) are stored in its `webhooks` table: they are loaded and started,
//! with their ids, when the server starts, written when created and deleted when deleted.
//! The store is written first, and the hook starts (or stops) only once that succeeded, so a
//! store failure answers 500 and changes nothing; creations and deletions are serialized so
//! that the limit and id checks stay true while the store is written, and each runs in its
//! own task so that a client hanging up cannot stop it half-way. The secret is stored as
//! given, since every delivery is signed with it: the file must be protected like the
//! config. Without a history file (`--db :memory:`) hooks live in memory only and do not
//! survive a restart. The delivery log is never stored: it stays in memory, bounded per
//! hook, and starts empty after a restart.
//!
//! # Targets
//! A hook may not target a link-local address (`169.254.0.0/16`, `fe80::/10`: cloud
//! metadata services live there), an unspecified address (`0.0.0.0`, `::`) or this
//! server's own control API, unless `--webhook-allow` ([`TargetPolicy::allow`]) permits it.
//! `POST /webhooks` refuses such a URL with a 400 naming `url` and why (a host name is
//! resolved for that check); every delivery checks again, after its own resolution (names
//! go through [`PolicyResolver`], so the address checked is the address connected to: a
//! name cannot be re-pointed between check and connect). In the delivery log a refused
//! target reads exactly as a closed port (`could not connect to the receiver`), so the log
//! cannot be used to map what the policy hides; the server's log says which it was.
//!
//! Routes (control API, so browsers are refused as on every control route):
//! `POST /webhooks`, `GET /webhooks`, `GET /webhooks/{id}`, `DELETE /webhooks/{id}`,
//! `GET /webhooks/{id}/deliveries`, `POST /webhooks/{id}/ping`.

mod delivery;
mod policy;
mod routes;
mod store;

pub use delivery::{Attempt, CONNECT_FAILED, Delivery, signature};
pub use policy::{AllowRule, PolicyResolver, TargetPolicy};
pub use routes::routes;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::RngExt;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::history::History;

use delivery::Job;

/// Header carrying `sha256=<hex HMAC-SHA256 of the body keyed with the hook's secret>`.
pub const SIGNATURE_HEADER: &str = "x-downtime-signature";
/// Header naming the event.
pub const EVENT_HEADER: &str = "x-downtime-event";
/// Header with the delivery id (the same on every retry of one delivery).
pub const DELIVERY_HEADER: &str = "x-downtime-delivery";

/// What a hook can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventKind {
    /// A component changed state.
    #[serde(rename = "component.updated")]
    ComponentUpdated,
    /// An incident or maintenance was opened.
    #[serde(rename = "incident.created")]
    IncidentCreated,
    /// An incident got an update.
    #[serde(rename = "incident.updated")]
    IncidentUpdated,
    /// An incident was resolved (or a maintenance completed).
    #[serde(rename = "incident.resolved")]
    IncidentResolved,
    /// A test delivery asked for through the API.
    #[serde(rename = "ping")]
    Ping,
}

impl EventKind {
    /// Every event, as subscribed to by `*`.
    pub const ALL: [EventKind; 5] = [
        EventKind::ComponentUpdated,
        EventKind::IncidentCreated,
        EventKind::IncidentUpdated,
        EventKind::IncidentResolved,
        EventKind::Ping,
    ];

    /// The event's name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ComponentUpdated => "component.updated",
            EventKind::IncidentCreated => "incident.created",
            EventKind::IncidentUpdated => "incident.updated",
            EventKind::IncidentResolved => "incident.resolved",
            EventKind::Ping => "ping",
        }
    }

    fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// The event kinds a list of subscribed names (`*` or event names) stands for; names this
/// version does not know (from a newer version's store) are ignored.
fn kinds_of(events: &[String]) -> Vec<EventKind> {
    if events.iter().any(|e| e == "*") {
        EventKind::ALL.to_vec()
    } else {
        events.iter().filter_map(|e| EventKind::parse(e)).collect()
    }
}

/// Delivery limits.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Deliveries waiting per hook before new ones are dropped.
    pub queue: usize,
    /// Time limit of one attempt (connect, send, answer).
    pub timeout: Duration,
    /// Attempts per delivery, the first included.
    pub attempts: u32,
    /// Wait after the first failed attempt; doubles after each further failure.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// Deliveries kept in each hook's log.
    pub log: usize,
    /// Most hooks at once.
    pub max_hooks: usize,
    /// Which receivers may be targeted.
    pub policy: TargetPolicy,
    /// CA files trusted for `https://` receivers besides the system's roots
    /// (`serve --extra-ca`).
    pub extra_ca: Vec<std::path::PathBuf>,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            queue: 256,
            timeout: Duration::from_secs(5),
            attempts: 5,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            log: 100,
            max_hooks: 100,
            policy: TargetPolicy::default(),
            extra_ca: Vec::new(),
        }
    }
}

impl WebhookOptions {
    /// The wait before attempt `attempt + 1` after `attempt` (1-based) failed.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.backoff_max)
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Deliveries a receiver accepted (2xx).
    pub delivered: AtomicU64,
    /// Attempts that failed (error, timeout or non-2xx), retried or not.
    pub failed_attempts: AtomicU64,
    /// Deliveries given up after the last attempt.
    pub failed: AtomicU64,
    /// Deliveries dropped because the hook's queue was full.
    pub dropped: AtomicU64,
}

/// A hook as the API shows it (never with its secret).
#[derive(Debug, Clone, Serialize)]
pub struct HookInfo {
    /// Identifier.
    pub id: String,
    /// Receiver.
    pub url: String,
    /// Subscribed events (`*` for all).
    pub events: Vec<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

struct Hook {
    info: HookInfo,
    events: Vec<EventKind>,
    tx: mpsc::Sender<Job>,
    log: Arc<Mutex<VecDeque<Delivery>>>,
    cancel: CancellationToken,
}

struct Inner {
    hooks: Mutex<BTreeMap<String, Hook>>,
    /// Where definitions are kept across restarts; `None`: in memory only.
    store: Option<History>,
    /// Held (across the store write) by every creation and deletion, one at a time, so the
    /// limit and the chosen id are still valid when the hook is added after the write. A
    /// tokio mutex because it is held across `.await`; `hooks` stays a std mutex that is
    /// never held across `.await`, so `publish` never waits for the store.
    writes: tokio::sync::Mutex<()>,
    options: WebhookOptions,
    policy: Arc<TargetPolicy>,
    /// TLS of `https://` receivers: system roots plus [`WebhookOptions::extra_ca`].
    tls: Option<rustls::ClientConfig>,
    stats: WebhookStats,
    stop: CancellationToken,
    /// The runtime the hooks were built on (the server's main one): deliveries, and the
    /// store writes of creations and deletions, run there, never on the API's own thread,
    /// so a slow receiver cannot delay a control API answer.
    runtime: Option<tokio::runtime::Handle>,
}

/// Cheap-to-clone handle on every webhook.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn random_id(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}{n:016x}")
}

impl Webhooks {
    /// No hooks yet, kept in memory only (they do not survive a restart); every hook task
    /// stops when `stop` is cancelled.
    pub fn new(options: WebhookOptions, stop: CancellationToken) -> Self {
        Webhooks::build(options, stop, None)
    }

    // `open` (hooks loaded from the history store), `create` and `remove` are in
    // `store.rs`; `enqueue` is in `delivery.rs`.

    fn build(options: WebhookOptions, stop: CancellationToken, store: Option<History>) -> Self {
        // `run` has read the same files already (for the registry), so this fails only
        // when a file changed since; the system's roots alone are then better than nothing.
        let tls = match crate::tls::client_config(&options.extra_ca) {
            Ok(config) => Some(config),
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: extra CA files not used");
                crate::tls::client_config(&[]).ok()
            }
        };
        Webhooks {
            inner: Arc::new(Inner {
                hooks: Mutex::new(BTreeMap::new()),
                store,
                writes: tokio::sync::Mutex::new(()),
                policy: Arc::new(options.policy.clone()),
                tls,
                options,
                stats: WebhookStats::default(),
                stop,
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        }
    }

    /// Delivery counters.
    pub fn stats(&self) -> &WebhookStats {
        &self.inner.stats
    }

    /// Number of hooks.
    pub fn len(&self) -> usize {
        lock(&self.inner.hooks).len()
    }

    /// Whether there is no hook.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `event` for every hook subscribed to it; never waits.
    pub fn publish(&self, event: EventKind, data: Value) {
        let hooks = lock(&self.inner.hooks);
        for hook in hooks.values().filter(|h| h.events.contains(&event)) {
            self.enqueue(hook, event, &data);
        }
    }

    fn info(&self) -> Vec<HookInfo> {
        lock(&self.inner.hooks)
            .values()
            .map(|h| h.info.clone())
            .collect()
    }
}

impl Inner {
    /// Spawns `task` on the hooks' runtime (the current one when they were built outside
    /// any).
    fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.runtime {
            Some(runtime) => runtime.spawn(task),
            None => tokio::spawn(task),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::history::HistorySettings;

    /// A history store in memory, for the tests of the submodules too.
    pub(super) async fn memory_store() -> History {
        History::memory(HistorySettings::default()).await.unwrap()
    }

    /// A valid `POST /webhooks` body for `events`, parsed.
    pub(super) fn new_hook(events: &str) -> routes::NewHook {
        let body = format!(r#"{{"url":"http://127.0.0.1:9/h","secret":"k","events":{events}}}"#);
        routes::parse_new(body.as_bytes()).unwrap()
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let o = WebhookOptions {
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..WebhookOptions::default()
        };
        let delays: Vec<u128> = (1..=6).map(|a| o.delay_after(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(o.delay_after(0).as_millis(), 100);
        assert_eq!(o.delay_after(u32::MAX), Duration::from_millis(1000));
    }
}
