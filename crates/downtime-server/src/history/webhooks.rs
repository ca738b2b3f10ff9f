//! Stored webhook subscriptions (`migrations/0002_webhooks.sql`), so that hooks survive a
//! restart of a server with a history file. Only the definitions are stored; the delivery
//! log stays in memory in [`crate::webhooks`], which owns every rule about hooks (validation,
//! limits, ids). This module only reads and writes rows.

use sqlx::{Row, SqlitePool};

use super::HistoryError;

/// One stored hook, as `POST /webhooks` created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWebhook {
    /// The id the API shows; kept across restarts so receivers and scripts can rely on it.
    pub id: String,
    /// Receiver URL.
    pub url: String,
    /// Signing key, as given: every delivery is signed with it, so it cannot be hashed.
    pub secret: String,
    /// Subscribed event names (`*` for all), stored as a JSON array of text.
    pub events: Vec<String>,
    /// Creation time, Unix milliseconds (the API shows it as RFC 3339).
    pub created_ms: i64,
}

/// Every stored hook, oldest first. A row whose `events` is not a JSON array of strings
/// (written by hand, or by a newer version) is skipped with a warning rather than failing
/// the start of the server.
pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<StoredWebhook>, HistoryError> {
    let rows = sqlx::query(
        "SELECT id, url, secret, events, created_ms FROM webhooks ORDER BY created_ms, id",
    )
    .fetch_all(pool)
    .await?;
    let mut hooks = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.try_get("id")?;
        let events: String = row.try_get("events")?;
        let Ok(events) = serde_json::from_str::<Vec<String>>(&events) else {
            tracing::warn!(webhook = %id, events = %events, "history: stored webhook has unreadable events; skipped");
            continue;
        };
        hooks.push(StoredWebhook {
            id,
            url: row.try_get("url")?,
            secret: row.try_get("secret")?,
            events,
            created_ms: row.try_get("created_ms")?,
        });
    }
    Ok(hooks)
}

/// Stores a new hook. Fails (and stores nothing) if the id is taken.
pub(super) async fn insert(pool: &SqlitePool, hook: &StoredWebhook) -> Result<(), HistoryError> {
    let events = serde_json::to_string(&hook.events)
        .map_err(|e| HistoryError::invalid("events", e.to_string()))?;
    sqlx::query(
        "INSERT INTO webhooks (id, url, secret, events, created_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&hook.id)
    .bind(&hook.url)
    .bind(&hook.secret)
    .bind(events)
    .bind(hook.created_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes a hook; `false` when no row had this id.
pub(super) async fn delete(pool: &SqlitePool, id: &str) -> Result<bool, HistoryError> {
    let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}
