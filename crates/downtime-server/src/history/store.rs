//! The SQLite pool, the embedded migrations and the writer task that drains the queue.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use tokio::sync::{broadcast, mpsc};

use super::rollup;
use super::state::{ComponentState, endpoint_state};
use super::types::{
    Actor, Component, ComponentKind, ComponentMinute, Event, EventKind, EventQuery, MINUTE_MS,
    ProbeMinute, ProbeSample, Timestamp, endpoint_component, parse_component, proxy_component,
};
use super::{HistoryError, Notice, Write};

/// The migrations in `migrations/`, compiled into the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub(super) async fn open_file(path: &Path) -> Result<SqlitePool, HistoryError> {
    protect_file(path).map_err(|e| HistoryError::Open {
        path: path.display().to_string(),
        source: sqlx::Error::Io(e),
    })?;
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL + NORMAL: durable across process crashes, and a commit costs no fsync.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(|source| HistoryError::Open {
            path: path.display().to_string(),
            source,
        })
}

/// Makes the history file readable by its owner only before SQLite opens it: it holds
/// webhook secrets. A missing file is created `0600`; an existing one (and existing
/// `-wal`/`-shm` sidecars) is narrowed to `0600`. SQLite creates new sidecars with the mode
/// of the database file, so they are `0600` too. Warns when the directory is writable by
/// everyone (anyone could then replace the file).
#[cfg(unix)]
fn protect_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(meta) = std::fs::metadata(dir)
        && meta.permissions().mode() & 0o002 != 0
    {
        tracing::warn!(
            dir = ?dir.display().to_string(),
            "the history file's directory is writable by every user: anyone could replace \
             the file; keep it in a directory only you can write"
        );
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let mut sidecars = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        sidecars.push(name.into());
    }
    for file in sidecars {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            tracing::info!(file = ?file.display().to_string(), "history file made readable by its owner only (0600)");
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn protect_file(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

pub(super) async fn open_memory() -> Result<SqlitePool, HistoryError> {
    let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
    // Every connection to `:memory:` is its own database: keep exactly one, forever.
    SqlitePoolOptions::new()
        .min_connections(1)
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
        .map_err(|source| HistoryError::Open {
            path: ":memory:".to_owned(),
            source,
        })
}

/// Starts a write transaction that takes the write lock at once. A deferred one (`BEGIN`)
/// that reads first and writes later fails with "database is locked" when another
/// connection committed in between (WAL snapshots cannot be upgraded), whatever the busy
/// timeout; `IMMEDIATE` waits for the lock instead. (PostgreSQL would use a plain `BEGIN`.)
pub(super) async fn begin_write(
    pool: &SqlitePool,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), HistoryError> {
    // Two processes opening a new file at once can race on the first migration; the loser
    // fails ("table already exists") and, on retry, finds it applied.
    let mut attempt = 0u32;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 3 => {
                attempt = attempt.saturating_add(1);
                tracing::debug!(error = %e, attempt, "history: migration failed, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Drains the queue in batches until `Close` (or every sender is gone).
pub(super) async fn writer(
    pool: SqlitePool,
    mut rx: mpsc::Receiver<Write>,
    batch: usize,
    notices: broadcast::Sender<Notice>,
    failed: Arc<AtomicU64>,
) {
    let mut buffer = Vec::with_capacity(batch);
    loop {
        if rx.recv_many(&mut buffer, batch).await == 0 {
            return;
        }
        let mut work = Batch::default();
        let mut waiting = Vec::new();
        let mut close = false;
        for write in buffer.drain(..) {
            match write {
                Write::Event(e) => work.events.push(*e),
                Write::Probes(p) => work.probes.extend(p),
                Write::Minutes(m) => work.minutes.extend(m),
                Write::Flush(tx) => waiting.push(tx),
                Write::Close(tx) => {
                    waiting.push(tx);
                    close = true;
                }
            }
        }
        if !work.is_empty() {
            let count = work.count();
            match write_batch(&pool, &mut work).await {
                Ok(()) => {
                    if !work.events.is_empty() {
                        let _ = notices.send(Notice::Events(Arc::new(work.events)));
                    }
                    if work.sampled {
                        let _ = notices.send(Notice::Sampled);
                    }
                }
                Err(e) => {
                    failed.fetch_add(count, Ordering::Relaxed);
                    tracing::warn!(error = %e, writes = count, "history: a batch could not be written");
                }
            }
        }
        for tx in waiting {
            let _ = tx.send(());
        }
        if close {
            rx.close();
            return;
        }
    }
}

#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    probes: Vec<ProbeSample>,
    minutes: Vec<ComponentMinute>,
    sampled: bool,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.probes.is_empty() && self.minutes.is_empty()
    }

    fn count(&self) -> u64 {
        let n = self
            .events
            .len()
            .saturating_add(self.probes.len())
            .saturating_add(self.minutes.len());
        u64::try_from(n).unwrap_or(u64::MAX)
    }
}

/// What one probe minute adds up to before it is merged into the stored row.
#[derive(Default)]
struct ProbeAcc {
    url: String,
    total: i64,
    ok: i64,
    latency_sum: i64,
    latency_max: i64,
}

async fn write_batch(pool: &SqlitePool, work: &mut Batch) -> Result<(), sqlx::Error> {
    let mut tx = begin_write(pool).await?;
    let now = Timestamp::now();
    // Components seen in this batch (id → description) and (component, day) to roll up.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut touched: BTreeSet<(String, i64)> = BTreeSet::new();
    let mut probe_days: BTreeSet<(String, i64)> = BTreeSet::new();

    for event in &mut work.events {
        let detail = serde_json::to_string(&event.detail).unwrap_or_else(|_| "null".to_owned());
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (at_ms, kind, actor, proxy, fault, drill_id, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(event.at.millis())
        .bind(event.kind.as_str())
        .bind(event.actor.as_str())
        .bind(event.proxy.as_deref())
        .bind(event.fault.as_deref())
        .bind(event.drill)
        .bind(detail)
        .fetch_one(&mut *tx)
        .await?;
        event.id = id;
        if let (Some(state), Some(proxy)) = (event.state, &event.proxy) {
            work.minutes.push(ComponentMinute {
                component: proxy_component(proxy),
                minute: event.at.minute(),
                state,
            });
        }
    }

    if !work.minutes.is_empty() {
        work.sampled = true;
    }
    for m in &work.minutes {
        upsert_worst_minute(&mut tx, &m.component, m.minute, m.state).await?;
        seen.entry(m.component.clone()).or_default();
        touched.insert((m.component.clone(), m.minute.div_euclid(1440)));
    }

    let mut probes: BTreeMap<(String, i64), ProbeAcc> = BTreeMap::new();
    for s in &work.probes {
        let acc = probes
            .entry((s.endpoint.clone(), s.at.minute()))
            .or_default();
        if !s.url.is_empty() {
            acc.url.clone_from(&s.url);
        }
        acc.total = acc.total.saturating_add(1);
        if s.ok {
            acc.ok = acc.ok.saturating_add(1);
        }
        let latency = i64::try_from(s.latency_ms).unwrap_or(i64::MAX);
        acc.latency_sum = acc.latency_sum.saturating_add(latency);
        acc.latency_max = acc.latency_max.max(latency);
    }
    for ((endpoint, minute), acc) in probes {
        let row = sqlx::query(
            "INSERT INTO probe_minutes (endpoint, minute, total, ok, latency_sum_ms, latency_max_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (endpoint, minute) DO UPDATE SET \
               total = probe_minutes.total + excluded.total, \
               ok = probe_minutes.ok + excluded.ok, \
               latency_sum_ms = probe_minutes.latency_sum_ms + excluded.latency_sum_ms, \
               latency_max_ms = CASE WHEN excluded.latency_max_ms > probe_minutes.latency_max_ms \
                 THEN excluded.latency_max_ms ELSE probe_minutes.latency_max_ms END \
             RETURNING total, ok",
        )
        .bind(&endpoint)
        .bind(minute)
        .bind(acc.total)
        .bind(acc.ok)
        .bind(acc.latency_sum)
        .bind(acc.latency_max)
        .fetch_one(&mut *tx)
        .await?;
        let (total, ok): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let component = endpoint_component(&endpoint);
        if let Some(state) = endpoint_state(total, ok) {
            // The whole minute so far decides, so the state is replaced, not maxed.
            sqlx::query(
                "INSERT INTO component_minutes (component, minute, state) VALUES ($1, $2, $3) \
                 ON CONFLICT (component, minute) DO UPDATE SET state = excluded.state",
            )
            .bind(&component)
            .bind(minute)
            .bind(state.code())
            .execute(&mut *tx)
            .await?;
        }
        let description = seen.entry(component.clone()).or_default();
        if !acc.url.is_empty() {
            *description = acc.url;
        }
        touched.insert((component, minute.div_euclid(1440)));
        probe_days.insert((endpoint, minute.div_euclid(1440)));
        work.sampled = true;
    }

    for (id, description) in &seen {
        upsert_component(&mut tx, id, description, now).await?;
    }
    for (component, day) in &touched {
        rollup::rollup_component_day(&mut tx, component, *day).await?;
    }
    for (endpoint, day) in &probe_days {
        rollup::rollup_probe_day(&mut tx, endpoint, *day).await?;
    }
    tx.commit().await
}

/// Keeps the worse of the stored and the new state of a minute.
async fn upsert_worst_minute(
    conn: &mut SqliteConnection,
    component: &str,
    minute: i64,
    state: ComponentState,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO component_minutes (component, minute, state) VALUES ($1, $2, $3) \
         ON CONFLICT (component, minute) DO UPDATE SET state = CASE \
           WHEN excluded.state > component_minutes.state THEN excluded.state \
           ELSE component_minutes.state END",
    )
    .bind(component)
    .bind(minute)
    .bind(state.code())
    .execute(conn)
    .await?;
    Ok(())
}

async fn upsert_component(
    conn: &mut SqliteConnection,
    id: &str,
    description: &str,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let (kind, name) = parse_component(id).unwrap_or((ComponentKind::Proxy, id));
    sqlx::query(
        "INSERT INTO components (id, kind, name, description, first_seen_ms, last_seen_ms) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms, \
           description = CASE WHEN excluded.description = '' THEN components.description \
             ELSE excluded.description END",
    )
    .bind(id)
    .bind(kind.as_str())
    .bind(name)
    .bind(description)
    .bind(now.millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// Direct write of generated or imported minutes, with their components and day rollups.
pub(super) async fn insert_minutes(
    pool: &SqlitePool,
    minutes: &[ComponentMinute],
) -> Result<(), HistoryError> {
    let mut tx = begin_write(pool).await?;
    let now = Timestamp::now();
    let mut seen = BTreeSet::new();
    let mut touched = BTreeSet::new();
    for m in minutes {
        upsert_worst_minute(&mut tx, &m.component, m.minute, m.state).await?;
        if seen.insert(m.component.as_str()) {
            upsert_component(&mut tx, &m.component, "", now).await?;
        }
        touched.insert((m.component.as_str(), m.minute.div_euclid(1440)));
    }
    for (component, day) in touched {
        rollup::rollup_component_day(&mut tx, component, day).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn events(
    pool: &SqlitePool,
    query: &EventQuery,
) -> Result<Vec<Event>, HistoryError> {
    let limit = i64::from(query.limit.unwrap_or(1000).clamp(1, 1000));
    // Optional filters as `(CAST($n AS type) IS NULL OR col = $n)`: one static statement;
    // the cast gives PostgreSQL the parameter's type, SQLite ignores it for NULL.
    let rows = sqlx::query(
        "SELECT id, at_ms, kind, actor, proxy, fault, drill_id, detail FROM events \
         WHERE (CAST($1 AS BIGINT) IS NULL OR at_ms >= $1) \
           AND (CAST($2 AS BIGINT) IS NULL OR at_ms < $2) \
           AND (CAST($3 AS TEXT) IS NULL OR proxy = $3) \
           AND (CAST($4 AS TEXT) IS NULL OR kind = $4) \
           AND (CAST($5 AS BIGINT) IS NULL OR drill_id = $5) \
         ORDER BY at_ms DESC, id DESC LIMIT $6",
    )
    .bind(query.since.map(Timestamp::millis))
    .bind(query.until.map(Timestamp::millis))
    .bind(query.proxy.as_deref())
    .bind(query.kind.map(EventKind::as_str))
    .bind(query.drill)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("kind")?;
            let actor: String = row.try_get("actor")?;
            let detail: String = row.try_get("detail")?;
            Ok(Event {
                id: row.try_get("id")?,
                at: Timestamp(row.try_get("at_ms")?),
                kind: EventKind::parse(&kind).unwrap_or(EventKind::ProxyChanged),
                actor: Actor::parse(&actor).unwrap_or(Actor::Api),
                proxy: row.try_get("proxy")?,
                fault: row.try_get("fault")?,
                drill: row.try_get("drill_id")?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                state: None,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(HistoryError::from)
}

pub(super) async fn components(pool: &SqlitePool) -> Result<Vec<Component>, HistoryError> {
    let rows = sqlx::query(
        "SELECT c.id, c.kind, c.name, c.description, c.first_seen_ms, c.last_seen_ms, \
           (SELECT m.state FROM component_minutes m WHERE m.component = c.id \
             ORDER BY m.minute DESC LIMIT 1) AS last_state \
         FROM components c ORDER BY c.kind DESC, c.name",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("kind")?;
            let last: Option<i64> = row.try_get("last_state")?;
            Ok(Component {
                id: row.try_get("id")?,
                kind: if kind == "endpoint" {
                    ComponentKind::Endpoint
                } else {
                    ComponentKind::Proxy
                },
                name: row.try_get("name")?,
                description: row.try_get("description")?,
                first_seen: Timestamp(row.try_get("first_seen_ms")?),
                last_seen: Timestamp(row.try_get("last_seen_ms")?),
                last_state: last.map(ComponentState::from_code),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(HistoryError::from)
}

pub(super) async fn probe_minutes(
    pool: &SqlitePool,
    endpoint: &str,
    since: Timestamp,
) -> Result<Vec<ProbeMinute>, HistoryError> {
    let rows = sqlx::query(
        "SELECT minute, total, ok, latency_sum_ms, latency_max_ms FROM probe_minutes \
         WHERE endpoint = $1 AND minute >= $2 ORDER BY minute",
    )
    .bind(endpoint)
    .bind(since.minute())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let minute: i64 = row.try_get("minute")?;
            let total: i64 = row.try_get("total")?;
            let sum: i64 = row.try_get("latency_sum_ms")?;
            Ok(ProbeMinute {
                endpoint: endpoint.to_owned(),
                at: Timestamp(minute.saturating_mul(MINUTE_MS)),
                total,
                ok: row.try_get("ok")?,
                latency_avg_ms: sum.checked_div(total).unwrap_or(0),
                latency_max_ms: row.try_get("latency_max_ms")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(HistoryError::from)
}
