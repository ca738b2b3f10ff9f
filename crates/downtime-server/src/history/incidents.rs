//! Incidents and scheduled maintenances, each with a timeline of updates.
//!
//! The vocabulary is Statuspage's (statuses, impacts), so its readers and clients know it.
//! Requests arrive as lenient-typed JSON ([`IncidentRequest`], [`UpdateRequest`]) and are
//! turned into checked values ([`NewIncident`], [`IncidentPatch`], [`NewUpdate`]) whose errors
//! name the field and the value. Text is stored exactly as given: whoever shows it escapes it.
//!
//! # Layout
//! - `model`: kinds, statuses, impacts, sources, [`Incident`] and its timeline;
//! - `request`: the request bodies, their checks and limits, and the checked values;
//! - `store`: the SQL that inserts, loads and patches incidents on a given connection;
//! - `maintenance`: running maintenance windows and moves along their schedule;
//! - here: the [`History`] operations on incidents.

mod maintenance;
mod model;
mod request;
mod store;

pub use model::{
    Impact, Incident, IncidentFilter, IncidentKind, IncidentSource, IncidentStatus, IncidentUpdate,
};
pub use request::{
    IncidentPatch, IncidentRequest, MAX_BODY, MAX_COMPONENT, MAX_COMPONENTS, MAX_TITLE,
    NewIncident, NewUpdate, ScheduleRequest, UpdateRequest, check_components, check_status_kind,
};
pub(super) use store::{apply_patch, insert, load, load_many};

use super::types::Timestamp;
use super::{History, HistoryError, Notice};

impl History {
    /// Creates an incident or maintenance with its first update.
    pub async fn create_incident(&self, new: NewIncident) -> Result<Incident, HistoryError> {
        let now = Timestamp::now();
        let mut tx = super::store::begin_write(self.pool()).await?;
        let id = insert(&mut tx, &new, now).await?;
        let incident = load(&mut tx, id)
            .await?
            .ok_or_else(|| HistoryError::NotFound(format!("incident {id}")))?;
        tx.commit().await?;
        self.notify(Notice::Incident(std::sync::Arc::new(incident.clone())));
        Ok(incident)
    }

    /// One incident with its timeline.
    pub async fn incident(&self, id: i64) -> Result<Incident, HistoryError> {
        let mut conn = self.pool().acquire().await?;
        load(&mut conn, id)
            .await?
            .ok_or_else(|| HistoryError::NotFound(format!("incident {id}")))
    }

    /// Incidents newest first (by creation), each with its timeline.
    pub async fn incidents(&self, filter: &IncidentFilter) -> Result<Vec<Incident>, HistoryError> {
        let limit = i64::from(filter.limit.unwrap_or(50).clamp(1, 500));
        let open: Option<i64> = filter.open.map(i64::from);
        let mut conn = self.pool().acquire().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM incidents \
             WHERE (CAST($1 AS BIGINT) IS NULL OR ($1 = 1 AND resolved_ms IS NULL) \
                    OR ($1 = 0 AND resolved_ms IS NOT NULL)) \
               AND (CAST($2 AS TEXT) IS NULL OR kind = $2) \
               AND (CAST($3 AS BIGINT) IS NULL OR updated_ms >= $3) \
             ORDER BY created_ms DESC, id DESC LIMIT $4",
        )
        .bind(open)
        .bind(filter.kind.map(IncidentKind::as_str))
        .bind(filter.since.map(Timestamp::millis))
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        Ok(load_many(&mut conn, &ids).await?)
    }

    /// Changes an incident; a status change or a body adds an update to the timeline.
    pub async fn update_incident(
        &self,
        id: i64,
        patch: IncidentPatch,
    ) -> Result<Incident, HistoryError> {
        let mut tx = super::store::begin_write(self.pool()).await?;
        let incident = apply_patch(&mut tx, id, &patch, Timestamp::now())
            .await?
            .ok_or_else(|| HistoryError::NotFound(format!("incident {id}")))?;
        tx.commit().await?;
        self.notify(Notice::Incident(std::sync::Arc::new(incident.clone())));
        Ok(incident)
    }

    /// Adds an update (and possibly a new status) to an incident's timeline.
    pub async fn add_incident_update(
        &self,
        id: i64,
        update: NewUpdate,
    ) -> Result<(IncidentUpdate, Incident), HistoryError> {
        let patch = IncidentPatch {
            status: update.status,
            body: Some(update.body),
            ..IncidentPatch::default()
        };
        let incident = self.update_incident(id, patch).await?;
        let newest = incident
            .updates
            .first()
            .cloned()
            .ok_or_else(|| HistoryError::NotFound(format!("update of incident {id}")))?;
        Ok((newest, incident))
    }
    /// The worst impact (by the state it declares) of the open manual incidents, per
    /// component they name: what [`super::decide`] lays over the observed state.
    pub async fn incident_impacts(
        &self,
    ) -> Result<std::collections::HashMap<String, Impact>, HistoryError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.component, i.impact FROM incidents i \
             JOIN incident_components c ON c.incident_id = i.id \
             WHERE i.kind = 'incident' AND i.source = 'manual' AND i.resolved_ms IS NULL",
        )
        .fetch_all(self.pool())
        .await?;
        let mut out: std::collections::HashMap<String, Impact> = std::collections::HashMap::new();
        for (component, impact) in rows {
            let Some(impact) = Impact::parse(&impact) else {
                continue;
            };
            let worse = out
                .get(&component)
                .is_none_or(|old| super::impact_state(*old) < super::impact_state(impact));
            if worse {
                out.insert(component, impact);
            }
        }
        Ok(out)
    }
}
