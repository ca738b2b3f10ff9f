//! Scheduled maintenances over time: which components are under a running window, and the
//! moves along the schedule (`scheduled` to `in_progress` to `completed`) that the sampler
//! makes. Apart from the incident operations because they follow the clock, not a request.

use std::collections::BTreeSet;

use super::model::{Incident, IncidentStatus};
use super::request::IncidentPatch;
use super::store::status_of;
use crate::history::types::Timestamp;
use crate::history::{History, HistoryError};

impl History {
    /// Component ids under a maintenance window that is in progress at `now` (scheduled
    /// window running and not completed), for the sampler and the status page.
    pub async fn maintenance_components(
        &self,
        now: Timestamp,
    ) -> Result<BTreeSet<String>, HistoryError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT c.component FROM incidents i \
             JOIN incident_components c ON c.incident_id = i.id \
             WHERE i.kind = 'maintenance' AND i.resolved_ms IS NULL \
               AND i.scheduled_start_ms <= $1 AND i.scheduled_end_ms > $1",
        )
        .bind(now.millis())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().collect())
    }
    /// Moves maintenances along their schedule as of `now`: `scheduled` becomes
    /// `in_progress` at the start, and an unfinished one becomes `completed` at the end;
    /// each move adds an update. Returns the incidents changed.
    pub async fn advance_maintenances(
        &self,
        now: Timestamp,
    ) -> Result<Vec<Incident>, HistoryError> {
        let due: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, status, scheduled_end_ms FROM incidents \
             WHERE kind = 'maintenance' AND resolved_ms IS NULL \
               AND scheduled_start_ms <= $1",
        )
        .bind(now.millis())
        .fetch_all(self.pool())
        .await?;
        let mut changed = Vec::new();
        for (id, status, end) in due {
            let status = status_of(&status);
            let (next, text) = if end <= now.millis() {
                (
                    IncidentStatus::Completed,
                    "The scheduled maintenance has been completed.",
                )
            } else if status == IncidentStatus::Scheduled {
                (
                    IncidentStatus::InProgress,
                    "The scheduled maintenance is in progress.",
                )
            } else {
                continue;
            };
            let patch = IncidentPatch {
                status: Some(next),
                body: Some(text.to_owned()),
                ..IncidentPatch::default()
            };
            changed.push(self.update_incident(id, patch).await?);
        }
        Ok(changed)
    }
}
