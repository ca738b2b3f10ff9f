//! Incident storage: the SQL that inserts an incident with its components and first update,
//! loads one or many (three queries whatever their number) and applies a checked patch. Each
//! runs on the caller's connection or transaction, so [`History`](crate::history::History)
//! and the drill runner can make it part of a larger write.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::model::{
    Impact, Incident, IncidentKind, IncidentSource, IncidentStatus, IncidentUpdate,
};
use super::request::{IncidentPatch, NewIncident, check_status_kind};
use crate::history::HistoryError;
use crate::history::types::Timestamp;

pub(super) fn status_of(text: &str) -> IncidentStatus {
    IncidentStatus::parse(text).unwrap_or(IncidentStatus::Investigating)
}

pub(in crate::history) async fn insert(
    conn: &mut SqliteConnection,
    new: &NewIncident,
    now: Timestamp,
) -> Result<i64, sqlx::Error> {
    let resolved = new.status.is_closed().then_some(now.millis());
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO incidents (kind, title, status, impact, source, drill_id, \
           scheduled_start_ms, scheduled_end_ms, created_ms, updated_ms, resolved_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) RETURNING id",
    )
    .bind(new.kind.as_str())
    .bind(&new.title)
    .bind(new.status.as_str())
    .bind(new.impact.as_str())
    .bind(new.source.as_str())
    .bind(new.drill)
    .bind(new.scheduled.map(|(s, _)| s.millis()))
    .bind(new.scheduled.map(|(_, e)| e.millis()))
    .bind(now.millis())
    .bind(resolved)
    .fetch_one(&mut *conn)
    .await?;
    set_components(conn, id, &new.components).await?;
    insert_update(conn, id, now, new.status, &new.body).await?;
    Ok(id)
}

async fn set_components(
    conn: &mut SqliteConnection,
    id: i64,
    components: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM incident_components WHERE incident_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for (position, component) in components.iter().enumerate() {
        sqlx::query(
            "INSERT INTO incident_components (incident_id, position, component) \
             VALUES ($1, $2, $3)",
        )
        .bind(id)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(component)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn insert_update(
    conn: &mut SqliteConnection,
    id: i64,
    now: Timestamp,
    status: IncidentStatus,
    body: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO incident_updates (incident_id, at_ms, status, body) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(id)
    .bind(now.millis())
    .bind(status.as_str())
    .bind(body)
    .fetch_one(conn)
    .await
}

/// One incident with its components and timeline, or `None` when there is no such id.
pub(in crate::history) async fn load(
    conn: &mut SqliteConnection,
    id: i64,
) -> Result<Option<Incident>, sqlx::Error> {
    Ok(load_many(conn, &[id]).await?.pop())
}

/// `SQL (id, id, ...)` with every id bound: one statement for a whole list.
fn with_ids(sql: &str, ids: &[i64], tail: &str) -> QueryBuilder<Sqlite> {
    let mut query = QueryBuilder::new(sql);
    query.push(" (");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(") ");
    query.push(tail);
    query
}

/// The incidents with these ids, in the order given (missing ids are skipped), each with
/// its components and timeline: three queries whatever the number of incidents, so a list
/// or a status page does not pay a round trip per incident.
pub(in crate::history) async fn load_many(
    conn: &mut SqliteConnection,
    ids: &[i64],
) -> Result<Vec<Incident>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = with_ids(
        "SELECT id, kind, title, status, impact, source, drill_id, scheduled_start_ms, \
           scheduled_end_ms, created_ms, updated_ms, resolved_ms FROM incidents WHERE id IN",
        ids,
        "",
    )
    .build()
    .fetch_all(&mut *conn)
    .await?;
    let mut components: HashMap<i64, Vec<String>> = HashMap::new();
    for row in with_ids(
        "SELECT incident_id, component FROM incident_components WHERE incident_id IN",
        ids,
        "ORDER BY incident_id, position",
    )
    .build()
    .fetch_all(&mut *conn)
    .await?
    {
        components
            .entry(row.try_get("incident_id")?)
            .or_default()
            .push(row.try_get("component")?);
    }
    let mut updates: HashMap<i64, Vec<IncidentUpdate>> = HashMap::new();
    for row in with_ids(
        "SELECT id, incident_id, at_ms, status, body FROM incident_updates \
         WHERE incident_id IN",
        ids,
        "ORDER BY at_ms DESC, id DESC",
    )
    .build()
    .fetch_all(&mut *conn)
    .await?
    {
        let incident: i64 = row.try_get("incident_id")?;
        let status: String = row.try_get("status")?;
        updates.entry(incident).or_default().push(IncidentUpdate {
            id: row.try_get("id")?,
            incident,
            at: Timestamp(row.try_get("at_ms")?),
            status: status_of(&status),
            body: row.try_get("body")?,
        });
    }
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let kind: String = row.try_get("kind")?;
        let status: String = row.try_get("status")?;
        let impact: String = row.try_get("impact")?;
        let source: String = row.try_get("source")?;
        let ts = |name: &str| -> Result<Option<Timestamp>, sqlx::Error> {
            Ok(row.try_get::<Option<i64>, _>(name)?.map(Timestamp))
        };
        let incident = Incident {
            id,
            kind: if kind == "maintenance" {
                IncidentKind::Maintenance
            } else {
                IncidentKind::Incident
            },
            title: row.try_get("title")?,
            status: status_of(&status),
            impact: Impact::parse(&impact).unwrap_or(Impact::Minor),
            source: if source == "drill" {
                IncidentSource::Drill
            } else {
                IncidentSource::Manual
            },
            drill: row.try_get("drill_id")?,
            components: components.remove(&id).unwrap_or_default(),
            scheduled_start: ts("scheduled_start_ms")?,
            scheduled_end: ts("scheduled_end_ms")?,
            created_at: Timestamp(row.try_get("created_ms")?),
            updated_at: Timestamp(row.try_get("updated_ms")?),
            resolved_at: ts("resolved_ms")?,
            updates: updates.remove(&id).unwrap_or_default(),
        };
        found.insert(id, incident);
    }
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}

/// Applies a checked patch inside a transaction; returns `None` when there is no such
/// incident.
pub(in crate::history) async fn apply_patch(
    conn: &mut SqliteConnection,
    id: i64,
    patch: &IncidentPatch,
    now: Timestamp,
) -> Result<Option<Incident>, HistoryError> {
    let Some(current) = load(conn, id).await? else {
        return Ok(None);
    };
    if let Some(status) = patch.status {
        check_status_kind(status, current.kind)?;
    }
    if patch.scheduled.is_some() && current.kind != IncidentKind::Maintenance {
        return Err(HistoryError::invalid(
            "scheduled",
            "only a scheduled maintenance has a schedule (create one with \"scheduled\")",
        ));
    }
    let status = patch.status.unwrap_or(current.status);
    let resolved = if status.is_closed() {
        Some(current.resolved_at.map_or(now.millis(), Timestamp::millis))
    } else {
        None
    };
    let title = patch.title.as_deref().unwrap_or(&current.title);
    let impact = patch.impact.unwrap_or(current.impact);
    let (start, end) = match patch.scheduled {
        Some((s, e)) => (Some(s.millis()), Some(e.millis())),
        None => (
            current.scheduled_start.map(Timestamp::millis),
            current.scheduled_end.map(Timestamp::millis),
        ),
    };
    sqlx::query(
        "UPDATE incidents SET title = $2, status = $3, impact = $4, scheduled_start_ms = $5, \
           scheduled_end_ms = $6, updated_ms = $7, resolved_ms = $8 WHERE id = $1",
    )
    .bind(id)
    .bind(title)
    .bind(status.as_str())
    .bind(impact.as_str())
    .bind(start)
    .bind(end)
    .bind(now.millis())
    .bind(resolved)
    .execute(&mut *conn)
    .await?;
    if let Some(components) = &patch.components {
        set_components(conn, id, components).await?;
    }
    let status_changed = patch.status.is_some_and(|s| s != current.status);
    if status_changed || patch.body.is_some() {
        insert_update(conn, id, now, status, patch.body.as_deref().unwrap_or("")).await?;
    }
    Ok(load(conn, id).await?)
}
