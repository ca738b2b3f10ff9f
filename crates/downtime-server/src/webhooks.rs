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

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use downtime_model::Error;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::ApiError;
use crate::history::webhooks::StoredWebhook;
use crate::history::{History, HistoryError};
use crate::web::clock;

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

/// What a delivery log says for any failure to connect, a refused target included.
pub const CONNECT_FAILED: &str = "could not connect to the receiver";

/// One `--webhook-allow` entry: a network (`10.0.0.0/8`, `fe80::1/128`, a bare IP) or a
/// host name as written in hook URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    /// Addresses in `ip/prefix`.
    Net {
        /// The network's address.
        ip: IpAddr,
        /// Prefix length in bits.
        prefix: u8,
    },
    /// A host name (lowercase, compared with the URL's host).
    Host(String),
}

impl std::str::FromStr for AllowRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(format!("prefix length must be 0 to {max}, got {p:?}")),
                },
            };
            return Ok(AllowRule::Net { ip, prefix });
        }
        let name_ok = prefix.is_none()
            && !addr.is_empty()
            && addr.len() <= 253
            && addr
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if name_ok {
            Ok(AllowRule::Host(addr.to_ascii_lowercase()))
        } else {
            Err(format!(
                "expected a CIDR (10.0.0.0/8), an IP or a host name, got {text:?}"
            ))
        }
    }
}

impl AllowRule {
    fn matches(&self, host: &str, ip: IpAddr) -> bool {
        match self {
            AllowRule::Host(name) => name.eq_ignore_ascii_case(host.trim_end_matches('.')),
            AllowRule::Net { ip: net, prefix } => in_net(ip, *net, *prefix),
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip.to_canonical(), net.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Which receiver addresses hooks may target; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    /// Targets permitted even though refused by default (`--webhook-allow`).
    pub allow: Vec<AllowRule>,
    /// This server's control API addresses (refused by default).
    pub own_api: Vec<SocketAddr>,
}

impl TargetPolicy {
    /// Why `addr` (reached through the URL host `host`) may not be targeted, if it may not.
    pub fn refusal(&self, host: &str, addr: SocketAddr) -> Option<String> {
        let ip = addr.ip().to_canonical();
        if self.allow.iter().any(|r| r.matches(host, ip)) {
            return None;
        }
        if ip.is_unspecified() {
            return Some(format!("{ip} is an unspecified address"));
        }
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        };
        if link_local {
            return Some(format!(
                "{ip} is a link-local address (169.254.0.0/16, fe80::/10)"
            ));
        }
        let own = self.own_api.iter().any(|api| {
            let api_ip = api.ip().to_canonical();
            api.port() == addr.port()
                && (api_ip == ip
                    || ((api_ip.is_unspecified() || api_ip.is_loopback()) && ip.is_loopback()))
        });
        if own {
            return Some(format!("{addr} is this server's own control API"));
        }
        None
    }

    /// Checks a hook URL for `POST /webhooks`: an IP host directly, a name after resolving
    /// it (a name that does not resolve now is accepted; deliveries check again).
    pub async fn check_url(&self, url: &str) -> Result<(), Error> {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return Ok(());
        };
        let port = parsed.port_or_known_default().unwrap_or(80);
        let Some(host) = parsed.host_str() else {
            return Ok(());
        };
        let addrs = match ip_host(host) {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => {
                let lookup = tokio::net::lookup_host((host, port));
                match tokio::time::timeout(Duration::from_secs(2), lookup).await {
                    Ok(Ok(addrs)) => addrs.collect(),
                    _ => Vec::new(),
                }
            }
        };
        for addr in addrs {
            if let Some(why) = self.refusal(host, addr) {
                return Err(Error::invalid(
                    "url",
                    format!(
                        "refused target: {why}; start the server with --webhook-allow to \
                         permit it, got {url:?}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Resolves hook host names for reqwest and drops the addresses the policy refuses, so that
/// what is checked is what is connected to.
pub struct PolicyResolver {
    policy: Arc<TargetPolicy>,
    port: u16,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let port = self.port;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), port)).await?;
            let allowed: Vec<SocketAddr> = found
                .filter(|addr| match policy.refusal(&host, *addr) {
                    None => true,
                    Some(why) => {
                        tracing::warn!(host = ?host, reason = ?why, "webhook target refused");
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                return Err(CONNECT_FAILED.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
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

struct Job {
    delivery: String,
    event: EventKind,
    body: Bytes,
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

/// Why creating or deleting a hook failed.
#[derive(Debug)]
enum HookError {
    /// Refused input or limit (400).
    Invalid(Error),
    /// The history store failed (500); `what` is the user-facing message, the source is
    /// logged.
    Store { what: String, source: HistoryError },
    /// The task doing the work ended without an answer (shutdown); 500.
    Interrupted(&'static str),
}

impl From<Error> for HookError {
    fn from(e: Error) -> Self {
        HookError::Invalid(e)
    }
}

impl IntoResponse for HookError {
    fn into_response(self) -> Response {
        let text = match self {
            HookError::Invalid(e) => return ApiError::from(e).into_response(),
            HookError::Store { what, source } => {
                tracing::error!(error = %source, "{what}");
                what
            }
            HookError::Interrupted(what) => {
                tracing::warn!("{what}");
                what.to_owned()
            }
        };
        crate::api::error_answer(StatusCode::INTERNAL_SERVER_ERROR, &text)
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

/// A validated `POST /webhooks` body.
struct NewHook {
    url: String,
    secret: String,
    events: Vec<String>,
}

fn parse_new(body: &[u8]) -> Result<NewHook, Error> {
    let value: serde_json::Map<String, Value> = crate::api::error::decode_object(body)?;
    for key in value.keys() {
        if !matches!(key.as_str(), "url" | "secret" | "events") {
            return Err(Error::invalid(
                key.clone(),
                "unknown field; expected url, secret or events",
            ));
        }
    }
    let url = match value.get("url") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::Null) => return Err(Error::MissingField("url")),
        Some(Value::String(_)) => return Err(Error::MissingField("url")),
        Some(other) => {
            return Err(Error::invalid(
                "url",
                format!("expected a string, got {other}"),
            ));
        }
    };
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| Error::invalid("url", format!("{e}, got {url:?}")))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => {
            return Err(Error::invalid(
                "url",
                format!("scheme must be http or https, got {other:?}"),
            ));
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) || url.len() > 2048 {
        return Err(Error::invalid(
            "url",
            format!("expected http(s)://host[:port]/path, got {url:?}"),
        ));
    }
    let secret = match value.get("secret") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err(Error::MissingField("secret"));
        }
        Some(other) => {
            return Err(Error::invalid(
                "secret",
                format!("expected a string, got {other}"),
            ));
        }
    };
    if secret.len() > 1024 {
        return Err(Error::invalid("secret", "longer than 1024 bytes"));
    }
    let events = match value.get("events") {
        None | Some(Value::Null) => vec!["*".to_owned()],
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(Error::invalid(
                    "events",
                    "must name at least one event or \"*\"",
                ));
            }
            let mut events = Vec::new();
            for (n, item) in items.iter().enumerate() {
                let field = format!("events[{n}]");
                let Value::String(name) = item else {
                    return Err(Error::invalid(
                        field,
                        format!("expected a string, got {item}"),
                    ));
                };
                if name != "*" && EventKind::parse(name).is_none() {
                    let known: Vec<&str> = EventKind::ALL.iter().map(|e| e.as_str()).collect();
                    return Err(Error::invalid(
                        field,
                        format!("unknown event {name:?}; known: *, {}", known.join(", ")),
                    ));
                }
                if !events.contains(name) {
                    events.push(name.clone());
                }
            }
            events
        }
        Some(other) => {
            return Err(Error::invalid(
                "events",
                format!("expected an array of event names, got {other}"),
            ));
        }
    };
    Ok(NewHook {
        url,
        secret,
        events,
    })
}

impl Webhooks {
    /// No hooks yet, kept in memory only (they do not survive a restart); every hook task
    /// stops when `stop` is cancelled.
    pub fn new(options: WebhookOptions, stop: CancellationToken) -> Self {
        Webhooks::build(options, stop, None)
    }

    /// Hooks kept in `store` so that they survive a restart: the stored ones start now,
    /// with their ids and creation times, and later creations and deletions are written
    /// there before they take effect. `None` is [`Webhooks::new`]. Fails when the stored
    /// hooks cannot be read, so that a server never starts silently without its hooks.
    pub async fn open(
        options: WebhookOptions,
        stop: CancellationToken,
        store: Option<History>,
    ) -> Result<Self, HistoryError> {
        let stored = match &store {
            Some(store) => store.webhooks().await?,
            None => Vec::new(),
        };
        let webhooks = Webhooks::build(options, stop, store);
        if !stored.is_empty() {
            let mut hooks = lock(&webhooks.inner.hooks);
            for hook in stored {
                let info = HookInfo {
                    id: hook.id,
                    url: hook.url,
                    events: hook.events,
                    created_at: clock::rfc3339(hook.created_ms),
                };
                webhooks.start(&mut hooks, info, hook.secret);
            }
            tracing::info!(
                webhooks = hooks.len(),
                "webhooks loaded from the history store"
            );
        }
        Ok(webhooks)
    }

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

    /// Adds a hook: checks the limit and picks a free id, stores it (when there is a
    /// store), and only then starts it. A store failure leaves nothing behind.
    async fn create(&self, new: NewHook) -> Result<HookInfo, HookError> {
        let _writing = self.inner.writes.lock().await;
        let created_ms = clock::now_ms();
        let info = {
            let hooks = lock(&self.inner.hooks);
            if hooks.len() >= self.inner.options.max_hooks {
                return Err(Error::invalid(
                    "url",
                    format!("at most {} webhooks", self.inner.options.max_hooks),
                )
                .into());
            }
            // Stored hooks keep their ids, so a new one must avoid them (64 random bits
            // make a second draw all but impossible).
            let mut id = random_id("wh_");
            while hooks.contains_key(&id) {
                id = random_id("wh_");
            }
            HookInfo {
                id,
                url: new.url,
                events: new.events,
                created_at: clock::rfc3339(created_ms),
            }
        };
        if let Some(store) = &self.inner.store {
            let row = StoredWebhook {
                id: info.id.clone(),
                url: info.url.clone(),
                secret: new.secret.clone(),
                events: info.events.clone(),
                created_ms,
            };
            store
                .insert_webhook(&row)
                .await
                .map_err(|source| HookError::Store {
                    what: "cannot save webhook to the history store; it was not created".to_owned(),
                    source,
                })?;
        }
        let mut hooks = lock(&self.inner.hooks);
        self.start(&mut hooks, info.clone(), new.secret);
        Ok(info)
    }

    /// Removes a hook from the store (when there is one), then from memory, stopping its
    /// task. `false` when there is no such hook; a store failure keeps the hook as it was,
    /// so it cannot come back after a restart once it was reported deleted.
    async fn remove(&self, id: &str) -> Result<bool, HookError> {
        let _writing = self.inner.writes.lock().await;
        if !lock(&self.inner.hooks).contains_key(id) {
            return Ok(false);
        }
        if let Some(store) = &self.inner.store {
            store
                .delete_webhook(id)
                .await
                .map_err(|source| HookError::Store {
                    what: format!("cannot delete webhook {id} from the history store; it was kept"),
                    source,
                })?;
        }
        if let Some(hook) = lock(&self.inner.hooks).remove(id) {
            hook.cancel.cancel();
        }
        Ok(true)
    }

    /// Starts a hook's delivery task and adds the hook to `hooks`.
    fn start(&self, hooks: &mut BTreeMap<String, Hook>, info: HookInfo, secret: String) {
        let events = kinds_of(&info.events);
        let (tx, rx) = mpsc::channel(self.inner.options.queue.max(1));
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let cancel = self.inner.stop.child_token();
        self.inner.spawn(worker(
            self.inner.clone(),
            info.url.clone(),
            secret.into_bytes(),
            rx,
            log.clone(),
            cancel.clone(),
        ));
        hooks.insert(
            info.id.clone(),
            Hook {
                info,
                events,
                tx,
                log,
                cancel,
            },
        );
    }

    /// Queues `event` for every hook subscribed to it; never waits.
    pub fn publish(&self, event: EventKind, data: Value) {
        let hooks = lock(&self.inner.hooks);
        for hook in hooks.values().filter(|h| h.events.contains(&event)) {
            self.enqueue(hook, event, &data);
        }
    }

    fn enqueue(&self, hook: &Hook, event: EventKind, data: &Value) {
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

/// Why a hook URL with an IP host may not be delivered to (names are checked by
/// [`PolicyResolver`]).
fn literal_refusal(policy: &TargetPolicy, url: &reqwest::Url) -> Option<String> {
    let port = url.port_or_known_default().unwrap_or(80);
    let host = url.host_str()?;
    let ip = ip_host(host)?;
    policy.refusal(host, SocketAddr::new(ip, port))
}

/// The IP of a URL host written as one (`10.0.0.1`, `[fe80::1]`).
fn ip_host(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

fn update_log(log: &Mutex<VecDeque<Delivery>>, id: &str, f: impl FnOnce(&mut Delivery)) {
    let mut log = lock(log);
    if let Some(d) = log.iter_mut().rev().find(|d| d.id == id) {
        f(d);
    }
}

/// Delivers a hook's queue in order, one delivery at a time, retrying each with backoff.
async fn worker(
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

/// The webhook routes, for any router state holding a [`Webhooks`].
pub fn routes<S>() -> Router<S>
where
    Webhooks: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(show).delete(delete))
        .route("/webhooks/{id}/deliveries", get(deliveries))
        .route("/webhooks/{id}/ping", post(ping))
}

fn not_found() -> Response {
    crate::api::error_answer(StatusCode::NOT_FOUND, "webhook not found")
}

async fn create(State(hooks): State<Webhooks>, body: Bytes) -> Response {
    let new = match parse_new(&body) {
        Ok(new) => new,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Err(e) = hooks.inner.policy.check_url(&new.url).await {
        return ApiError::from(e).into_response();
    }
    // In a task of its own: a client hanging up must not stop it between the store write
    // and starting the hook.
    let runtime = hooks.inner.clone();
    let task = runtime.spawn(async move { hooks.create(new).await });
    match task.await {
        Ok(Ok(info)) => crate::api::json(StatusCode::CREATED, &info),
        Ok(Err(e)) => e.into_response(),
        Err(_) => HookError::Interrupted("webhook creation was interrupted").into_response(),
    }
}

async fn list(State(hooks): State<Webhooks>) -> Response {
    crate::api::json(StatusCode::OK, &hooks.info())
}

async fn show(State(hooks): State<Webhooks>, Path(id): Path<String>) -> Response {
    match lock(&hooks.inner.hooks).get(&id) {
        Some(h) => crate::api::json(StatusCode::OK, &h.info),
        None => not_found(),
    }
}

async fn delete(State(hooks): State<Webhooks>, Path(id): Path<String>) -> Response {
    // In a task of its own, like `create`.
    let runtime = hooks.inner.clone();
    let task = runtime.spawn(async move { hooks.remove(&id).await });
    match task.await {
        Ok(Ok(true)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(false)) => not_found(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => HookError::Interrupted("webhook deletion was interrupted").into_response(),
    }
}

async fn deliveries(State(hooks): State<Webhooks>, Path(id): Path<String>) -> Response {
    let log = match lock(&hooks.inner.hooks).get(&id) {
        Some(h) => h.log.clone(),
        None => return not_found(),
    };
    let newest_first: Vec<Delivery> = lock(&log).iter().rev().cloned().collect();
    crate::api::json(StatusCode::OK, &newest_first)
}

async fn ping(State(hooks): State<Webhooks>, Path(id): Path<String>) -> Response {
    let guard = lock(&hooks.inner.hooks);
    let Some(hook) = guard.get(&id) else {
        return not_found();
    };
    let data = json!({ "ping": { "webhook_id": id, "url": hook.info.url } });
    hooks.enqueue(hook, EventKind::Ping, &data);
    StatusCode::ACCEPTED.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::history::HistorySettings;

    async fn memory_store() -> History {
        History::memory(HistorySettings::default()).await.unwrap()
    }

    fn new_hook(events: &str) -> NewHook {
        let body = format!(r#"{{"url":"http://127.0.0.1:9/h","secret":"k","events":{events}}}"#);
        parse_new(body.as_bytes()).unwrap()
    }

    async fn body_of(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn stored_hooks_come_back_with_their_ids_until_deleted() {
        let store = memory_store().await;
        let stop = CancellationToken::new();
        let open = || Webhooks::open(WebhookOptions::default(), stop.clone(), Some(store.clone()));
        let hooks = open().await.unwrap();
        let a = hooks.create(new_hook(r#"["ping"]"#)).await.unwrap();
        let b = hooks.create(new_hook(r#"["*"]"#)).await.unwrap();
        let rows = store.webhooks().await.unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.secret == "k"), "stored as given");

        let again = open().await.unwrap();
        let infos = again.info();
        let key = |i: &HookInfo| {
            (
                i.id.clone(),
                i.url.clone(),
                i.events.clone(),
                i.created_at.clone(),
            )
        };
        let mut want = vec![key(&a), key(&b)];
        want.sort();
        assert_eq!(infos.iter().map(key).collect::<Vec<_>>(), want);
        {
            let loaded = lock(&again.inner.hooks);
            assert_eq!(loaded[&a.id].events, [EventKind::Ping]);
            assert_eq!(loaded[&b.id].events, EventKind::ALL);
        }

        assert!(again.remove(&a.id).await.unwrap());
        assert!(!again.remove(&a.id).await.unwrap(), "gone from memory");
        let rows = store.webhooks().await.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            [b.id.as_str()]
        );
        assert_eq!(open().await.unwrap().len(), 1);
        stop.cancel();
        store.shutdown().await;
    }

    #[tokio::test]
    async fn a_store_failure_answers_500_and_changes_nothing() {
        let store = memory_store().await;
        let stop = CancellationToken::new();
        let hooks = Webhooks::open(WebhookOptions::default(), stop.clone(), Some(store.clone()))
            .await
            .unwrap();
        let kept = hooks.create(new_hook(r#"["ping"]"#)).await.unwrap();
        store.shutdown().await;

        let body = Bytes::from_static(br#"{"url":"http://127.0.0.1:9/h","secret":"k"}"#);
        let response = create(State(hooks.clone()), body).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body_of(response).await,
            json!({
                "error": "cannot save webhook to the history store; it was not created",
                "status": 500,
            })
        );
        assert_eq!(hooks.info().len(), 1, "no half-created hook");

        let response = delete(State(hooks.clone()), Path(kept.id.clone())).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let error = body_of(response).await;
        assert_eq!(
            error["error"],
            format!(
                "cannot delete webhook {} from the history store; it was kept",
                kept.id
            )
        );
        assert_eq!(hooks.info()[0].id, kept.id, "kept, as reported");
        let response = delete(State(hooks.clone()), Path("wh_nope".to_owned())).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        stop.cancel();
    }

    #[tokio::test]
    async fn without_a_store_hooks_live_in_memory() {
        let stop = CancellationToken::new();
        let hooks = Webhooks::open(WebhookOptions::default(), stop.clone(), None)
            .await
            .unwrap();
        let info = hooks.create(new_hook(r#"["ping"]"#)).await.unwrap();
        assert_eq!(hooks.len(), 1);
        let response = delete(State(hooks.clone()), Path(info.id)).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(hooks.is_empty());
        stop.cancel();
    }

    #[tokio::test]
    async fn a_refused_target_reads_as_a_closed_port_in_the_delivery_log() {
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        // Stands for this server's API: it listens, so only the policy keeps hooks off it.
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = api.local_addr().unwrap();
        let stop = CancellationToken::new();
        let options = WebhookOptions {
            attempts: 1,
            timeout: Duration::from_secs(3),
            policy: TargetPolicy {
                allow: Vec::new(),
                own_api: vec![api_addr],
            },
            ..WebhookOptions::default()
        };
        let hooks = Webhooks::open(options, stop.clone(), None).await.unwrap();
        let mut ids = Vec::new();
        for url in [
            format!("http://127.0.0.1:{}/h", closed.port()),
            "http://169.254.1.1:9/h".to_owned(),
            format!("http://127.0.0.1:{}/halt", api_addr.port()),
            format!("http://localhost:{}/halt", api_addr.port()),
        ] {
            // Straight to `create`: as if the target had changed since the API's check.
            let body = json!({"url": url, "secret": "k", "events": ["ping"]}).to_string();
            let info = hooks
                .create(parse_new(body.as_bytes()).unwrap())
                .await
                .unwrap();
            ids.push((url, info.id));
        }
        hooks.publish(EventKind::Ping, json!({}));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for (url, id) in &ids {
            let log = lock(&hooks.inner.hooks)[id].log.clone();
            let attempt = loop {
                let done = lock(&log)
                    .back()
                    .and_then(|d| (d.state == "failed").then(|| d.attempts[0].clone()));
                if let Some(a) = done {
                    break a;
                }
                assert!(tokio::time::Instant::now() < deadline, "{url}: no attempt");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(
                (attempt.status, attempt.error.as_deref()),
                (None, Some(CONNECT_FAILED)),
                "{url}"
            );
        }
        let reached = tokio::time::timeout(Duration::from_millis(300), api.accept()).await;
        assert!(reached.is_err(), "a hook reached the API address");
        stop.cancel();
    }

    #[test]
    fn allow_rules_parse_and_match() {
        let net: AllowRule = "10.0.0.0/8".parse().unwrap();
        assert!(net.matches("x", "10.200.0.1".parse().unwrap()));
        assert!(!net.matches("x", "11.0.0.1".parse().unwrap()));
        let one: AllowRule = "fe80::1".parse().unwrap();
        assert!(one.matches("x", "fe80::1".parse().unwrap()));
        assert!(!one.matches("x", "fe80::2".parse().unwrap()));
        let host: AllowRule = "Hooks.Internal".parse().unwrap();
        assert!(host.matches("hooks.internal", "169.254.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "a b", "", "x/8"] {
            assert!(bad.parse::<AllowRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
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

    #[test]
    fn bad_definitions_name_the_field() {
        let cases: [(&str, &str); 10] = [
            (r#"{"secret":"s"}"#, "missing required field: url"),
            (
                r#"{"url":"http://x/","secret":""}"#,
                "missing required field: secret",
            ),
            (
                r#"{"url":"ftp://x/","secret":"s"}"#,
                "invalid value for url: scheme must be http",
            ),
            (
                r#"{"url":"not a url","secret":"s"}"#,
                "invalid value for url:",
            ),
            (
                r#"{"url":7,"secret":"s"}"#,
                "invalid value for url: expected a string",
            ),
            (
                r#"{"url":"http://x/","secret":"s","events":[]}"#,
                "invalid value for events:",
            ),
            (
                r#"{"url":"http://x/","secret":"s","events":["nope"]}"#,
                "invalid value for events[0]: unknown event",
            ),
            (
                r#"{"url":"http://x/","secret":"s","events":"ping"}"#,
                "invalid value for events: expected an array",
            ),
            (
                r#"{"url":"http://x/","secret":"s","colour":1}"#,
                "invalid value for colour: unknown field",
            ),
            (r#"[1]"#, "bad request body"),
        ];
        for (body, want) in cases {
            let err = parse_new(body.as_bytes())
                .err()
                .unwrap_or_else(|| panic!("{body} accepted"));
            assert!(err.to_string().starts_with(want), "{body}: {err}");
            assert_eq!(err.status(), 400, "{body}");
        }
        let ok = parse_new(
            br#"{"url":"http://127.0.0.1:9/h","secret":"s","events":["ping","ping","*"]}"#,
        )
        .unwrap();
        assert_eq!(ok.events, ["ping", "*"]);
    }
}
