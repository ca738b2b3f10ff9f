//! The history store: what happened to proxies and faults (and who did it), drills and
//! their verdicts, probe results per minute, component states per minute and per day, and
//! incidents with their timelines. The status page, the feed, webhooks and metrics read it.
//!
//! # Layout
//! - [`types`]: timestamps, days, events, actors, components, samples;
//! - [`state`]: component states derived from live faults and probe results (pure);
//! - `store`: the SQLite pool, embedded migrations and the batching writer task;
//! - `rollup`: per-day rollups, retention and the 90-day uptime query;
//! - [`incidents`]: incidents and scheduled maintenances, their validation and timeline;
//! - [`drills`]: drill runs, and the incidents they open, update and resolve;
//! - [`tasks`]: the sampler, the pruner and the fault-expiry listener;
//! - [`client`]: the drill runner's side (best-effort calls to `/history/...`).
//!
//! # Why it never slows the data plane
//! [`History::record`] (and [`History::record_probes`]) only `try_send` onto a bounded queue;
//! one writer task drains it in batches, one transaction per batch. When the queue is full
//! the event is dropped and [`History::dropped`] counts it. Reads and the rare synchronous
//! writes (incidents, drill start and end, which return ids) use the pool directly.
//!
//! # Portability
//! SQL is plain: `$N` parameters, `RETURNING`, `ON CONFLICT ... DO UPDATE`, integer times;
//! see `migrations/0001_history.sql` for what a PostgreSQL migration would change.

pub mod client;
pub mod drills;
pub mod incidents;
mod rollup;
pub mod state;
mod store;
pub mod tasks;
pub mod types;
pub(crate) mod webhooks;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

pub use drills::{DrillEnd, DrillPhase, DrillRecord, DrillStart, DrillSummary, PhaseFault};
pub use incidents::{
    Impact, Incident, IncidentFilter, IncidentKind, IncidentPatch, IncidentRequest, IncidentSource,
    IncidentStatus, IncidentUpdate, NewIncident, NewUpdate, UpdateRequest,
};
pub use rollup::PruneStats;
pub use state::{
    ComponentState, Facts, Observed, PARTIAL_DOWN_TENTHS, PROBE_FRESH_MS, PROBE_WINDOW,
    ProbeWindow, Verdict, component_state, decide, endpoint_state, fault_state, format_percent,
    impact_state, is_stand_in, no_data_pct, proxy_reason, uptime_pct,
};
pub use tasks::{HistoryTasks, spawn_tasks};
pub use types::{
    Actor, Component, ComponentKind, ComponentMinute, Day, DayStat, Event, EventKind, EventQuery,
    ProbeMinute, ProbeSample, Timestamp, endpoint_component, parse_component, proxy_component,
};

/// How the store samples, batches and forgets.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// How often the sampler records every component's state (one row per minute).
    pub sample_every: Duration,
    /// How often rollups and pruning run (also once at start).
    pub prune_every: Duration,
    /// Days of raw events, component minutes and probe minutes kept.
    pub raw_days: u32,
    /// Days of daily rollups, drills and closed incidents kept.
    pub daily_days: u32,
    /// Capacity of the write queue; past it, [`History::record`] drops and counts.
    pub queue: usize,
    /// Most queued writes per transaction.
    pub batch: usize,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            sample_every: Duration::from_secs(60),
            prune_every: Duration::from_secs(3600),
            raw_days: 30,
            daily_days: 365,
            queue: 4096,
            batch: 512,
        }
    }
}

/// Why the store failed or refused something.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The database file could not be opened or created.
    #[error("cannot open history store {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The embedded migrations could not be applied (e.g. a newer file).
    #[error("cannot migrate history store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("history store: {0}")]
    Db(#[from] sqlx::Error),
    /// A value is out of range; names the field and the value (API answers 400).
    #[error("invalid value for {field}: {detail}")]
    Invalid {
        /// Path of the field, e.g. `scheduled.end`.
        field: String,
        /// What is wrong, naming the value.
        detail: String,
    },
    /// The object does not exist (API answers 404), e.g. `incident 7 not found`.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the object's state (API answers 409).
    #[error("{0}")]
    Conflict(String),
    /// The store was shut down.
    #[error("history store is shut down")]
    Closed,
}

impl HistoryError {
    /// Shorthand for an out-of-range value.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        HistoryError::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// The HTTP status an API answers with.
    pub fn status(&self) -> u16 {
        match self {
            HistoryError::Invalid { .. } => 400,
            HistoryError::NotFound(_) => 404,
            HistoryError::Conflict(_) => 409,
            HistoryError::Closed => 503,
            HistoryError::Open { .. } | HistoryError::Migrate(_) | HistoryError::Db(_) => 500,
        }
    }
}

/// Something changed in the store; for live pages (server-sent events), feeds and webhooks.
#[derive(Debug, Clone)]
pub enum Notice {
    /// Events were written (after their transaction committed).
    Events(Arc<Vec<Event>>),
    /// An incident was created or changed; carries it with its whole timeline.
    Incident(Arc<Incident>),
    /// A drill started or ended.
    Drill(Arc<DrillSummary>),
    /// Component minutes were written (by the sampler or from probe results).
    Sampled,
}

/// One queued write.
pub(crate) enum Write {
    Event(Box<Event>),
    Probes(Vec<ProbeSample>),
    Minutes(Vec<ComponentMinute>),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// Cheap-to-clone handle on the history store.
#[derive(Clone)]
pub struct History {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    queue: mpsc::Sender<Write>,
    dropped: AtomicU64,
    failed: Arc<AtomicU64>,
    notices: broadcast::Sender<Notice>,
    settings: HistorySettings,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// The latest [`PROBE_WINDOW`] results per endpoint, oldest first: an endpoint's live
    /// state is judged on them, so it recovers with its probes, not with its minute.
    /// A std mutex: held for a few pushes, never across `.await`.
    probes: std::sync::Mutex<
        std::collections::HashMap<String, std::collections::VecDeque<(Timestamp, bool)>>,
    >,
}

impl History {
    /// Opens (creating if needed) the database file at `path` in WAL mode, applies the
    /// embedded migrations and starts the writer task.
    pub async fn open(path: &Path, settings: HistorySettings) -> Result<History, HistoryError> {
        let pool = store::open_file(path).await?;
        History::start(pool, settings).await
    }

    /// An in-memory store (tests, embedded drill servers): same schema, gone at exit.
    pub async fn memory(settings: HistorySettings) -> Result<History, HistoryError> {
        let pool = store::open_memory().await?;
        History::start(pool, settings).await
    }

    async fn start(pool: SqlitePool, settings: HistorySettings) -> Result<History, HistoryError> {
        store::migrate(&pool).await?;
        let (queue, rx) = mpsc::channel(settings.queue.max(1));
        let (notices, _) = broadcast::channel(1024);
        let failed = Arc::new(AtomicU64::new(0));
        let writer = tokio::spawn(store::writer(
            pool.clone(),
            rx,
            settings.batch.max(1),
            notices.clone(),
            failed.clone(),
        ));
        Ok(History {
            inner: Arc::new(Inner {
                pool,
                queue,
                dropped: AtomicU64::new(0),
                failed,
                notices,
                settings,
                writer: std::sync::Mutex::new(Some(writer)),
                probes: std::sync::Mutex::new(std::collections::HashMap::new()),
            }),
        })
    }

    /// The settings the store was opened with.
    pub fn settings(&self) -> &HistorySettings {
        &self.inner.settings
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    pub(crate) fn notify(&self, notice: Notice) {
        // No subscriber is fine: nobody is watching.
        let _ = self.inner.notices.send(notice);
    }

    fn enqueue(&self, write: Write) {
        if self.inner.queue.try_send(write).is_err() {
            self.count_dropped(1);
        }
    }

    /// Queues an event; never waits. Dropped (and counted) when the queue is full or closed.
    pub fn record(&self, event: Event) {
        self.enqueue(Write::Event(Box::new(event)));
    }

    /// Queues raw probe samples, rolled up per endpoint and minute by the writer; never waits.
    pub fn record_probes(&self, samples: Vec<ProbeSample>) {
        self.remember_probes(&samples);
        if !samples.is_empty() {
            self.enqueue(Write::Probes(samples));
        }
    }

    /// Queues component minutes (the sampler's output); a minute keeps its worst state.
    pub fn record_minutes(&self, minutes: Vec<ComponentMinute>) {
        if !minutes.is_empty() {
            self.enqueue(Write::Minutes(minutes));
        }
    }

    fn remember_probes(&self, samples: &[ProbeSample]) {
        let mut sorted: Vec<&ProbeSample> = samples.iter().collect();
        sorted.sort_by_key(|s| s.at);
        let mut map = self
            .inner
            .probes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in sorted {
            let window = map.entry(s.endpoint.clone()).or_default();
            // Samples of a batch may arrive after later ones: keep the window in time order.
            let at = window.partition_point(|(t, _)| *t <= s.at);
            window.insert(at, (s.at, s.ok));
            while window.len() > PROBE_WINDOW {
                window.pop_front();
            }
        }
    }

    /// The latest [`PROBE_WINDOW`] probe results of `endpoint` (probe name) since this
    /// server started; `None` when none arrived.
    pub fn probe_window(&self, endpoint: &str) -> Option<ProbeWindow> {
        let map = self
            .inner
            .probes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = map.get(endpoint)?;
        let last_at = window.back()?.0;
        let total = i64::try_from(window.len()).unwrap_or(i64::MAX);
        let ok = i64::try_from(window.iter().filter(|(_, ok)| *ok).count()).unwrap_or(0);
        Some(ProbeWindow { total, ok, last_at })
    }

    /// Adds `n` to the dropped counter (also used for expiry notices lost to lag).
    pub fn count_dropped(&self, n: u64) {
        self.inner.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Writes lost because the queue was full or closed.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Writes lost because their transaction failed (logged).
    pub fn failed(&self) -> u64 {
        self.inner.failed.load(Ordering::Relaxed)
    }

    /// Writes waiting in the queue.
    pub fn queued(&self) -> usize {
        self.inner
            .queue
            .max_capacity()
            .saturating_sub(self.inner.queue.capacity())
    }

    /// Subscribes to changes (events written, incidents, drills, samples).
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.notices.subscribe()
    }

    /// Waits until everything queued before this call is written.
    pub async fn flush(&self) -> Result<(), HistoryError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .queue
            .send(Write::Flush(tx))
            .await
            .map_err(|_| HistoryError::Closed)?;
        rx.await.map_err(|_| HistoryError::Closed)
    }

    /// Writes what is queued, stops the writer and closes the database. Later records are
    /// dropped and counted. Idempotent.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.queue.send(Write::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let writer = match self.inner.writer.lock() {
            Ok(mut w) => w.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        self.inner.pool.close().await;
    }

    /// Events, newest first.
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<Event>, HistoryError> {
        store::events(self.pool(), query).await
    }

    /// Every component seen, proxies first, by name, with its latest sampled state.
    pub async fn components(&self) -> Result<Vec<Component>, HistoryError> {
        store::components(self.pool()).await
    }

    /// Probe minutes of an endpoint (probe name) from `since`, oldest first.
    pub async fn probe_minutes(
        &self,
        endpoint: &str,
        since: Timestamp,
    ) -> Result<Vec<ProbeMinute>, HistoryError> {
        store::probe_minutes(self.pool(), endpoint, since).await
    }

    /// Writes component minutes at once, in one transaction, and rolls up their days: for
    /// generated history (tests, benchmarks) and imports. Live sampling uses
    /// [`History::record_minutes`].
    pub async fn insert_minutes(&self, minutes: &[ComponentMinute]) -> Result<(), HistoryError> {
        store::insert_minutes(self.pool(), minutes).await
    }

    /// Uptime of `component` for each of the last `days` UTC days ending today, oldest
    /// first; days without samples have `uptime_pct: None`.
    pub async fn daily_uptime(
        &self,
        component: &str,
        days: u32,
    ) -> Result<Vec<DayStat>, HistoryError> {
        rollup::daily_uptime(self.pool(), component, days, Day::today()).await
    }

    /// [`History::daily_uptime`] of every component with samples in the window, in one
    /// query (a status page with many components); components without any are absent.
    pub async fn daily_uptime_all(
        &self,
        days: u32,
    ) -> Result<std::collections::BTreeMap<String, Vec<DayStat>>, HistoryError> {
        rollup::daily_uptime_all(self.pool(), days, Day::today()).await
    }

    /// [`History::daily_uptime_all`] of the `days` days ending with `last`: a status page
    /// reads the past once a day and only today after each change.
    pub async fn daily_uptime_all_until(
        &self,
        days: u32,
        last: Day,
    ) -> Result<std::collections::BTreeMap<String, Vec<DayStat>>, HistoryError> {
        rollup::daily_uptime_all(self.pool(), days, last).await
    }

    /// Like [`History::daily_uptime`] with the last day given (tests, reports of the past).
    pub async fn daily_uptime_until(
        &self,
        component: &str,
        days: u32,
        last: Day,
    ) -> Result<Vec<DayStat>, HistoryError> {
        rollup::daily_uptime(self.pool(), component, days, last).await
    }

    /// Rolls every raw minute up into its day (normally done as minutes arrive and before
    /// pruning).
    pub async fn rollup_all(&self) -> Result<(), HistoryError> {
        rollup::rollup_before(self.pool(), i64::MAX).await
    }

    /// Applies retention as of `now`: rolls up and deletes raw rows older than `raw_days`,
    /// and deletes daily rows, drills and closed incidents older than `daily_days`.
    pub async fn prune(&self, now: Timestamp) -> Result<PruneStats, HistoryError> {
        let s = &self.inner.settings;
        rollup::prune(self.pool(), now, s.raw_days, s.daily_days).await
    }

    /// Every stored webhook, oldest first: loaded at start so hooks survive a restart.
    pub(crate) async fn webhooks(&self) -> Result<Vec<webhooks::StoredWebhook>, HistoryError> {
        webhooks::list(self.pool()).await
    }

    /// Stores a webhook created through the API (before it starts receiving deliveries).
    pub(crate) async fn insert_webhook(
        &self,
        hook: &webhooks::StoredWebhook,
    ) -> Result<(), HistoryError> {
        webhooks::insert(self.pool(), hook).await
    }

    /// Forgets a stored webhook; `false` when none had this id.
    pub(crate) async fn delete_webhook(&self, id: &str) -> Result<bool, HistoryError> {
        webhooks::delete(self.pool(), id).await
    }
}
